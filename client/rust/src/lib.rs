//! Safe Rust client of **tenantcache**: the tenant lookups (user id → tenant
//! and role, host / slug / uuid → tenant) that `tenantcached` keeps in one
//! shared-memory cache per host, read without locks, system calls or
//! allocation, and invalidated by PostgreSQL at commit.
//!
//! It wraps the C library `libtenantcache` (`tenantcache.h`) and adds no
//! behaviour of its own: statuses, thread and fork rules are the header's.
//!
//! - [`Cache::open`] maps the daemon's cache file read-only; one [`Cache`]
//!   serves every thread of the process (`Cache: Send + Sync`).
//! - [`Cache::namespace`] resolves a configured namespace once.
//! - [`Cache::get`] reads shared memory only; [`Cache::lookup`] asks the
//!   daemon on a miss (it coalesces misses of every process into one query)
//!   and waits at most the given time.
//! - Both answer a [`Lookup`]: `Found(entry)`, `NotFound` (the database has no
//!   such row: a cached negative entry) or `Miss`. Anything that means "ask
//!   the database yourself" is an [`Error`] ([`Error::needs_database`]): the
//!   cache fails closed, it never answers with a value older than the
//!   daemon's `stale_after` bound.
//! - `get` and `lookup` return an [`OwnedEntry`], whose place the thread
//!   reuses for its next read once it is dropped; [`Cache::get_into`] /
//!   [`Cache::lookup_into`] read into a caller-owned [`Buffer`]. Either way
//!   a hot loop allocates nothing.
//!
//! # Resolving a request's `Host` header
//!
//! In place of a per-process `moka` cache in front of the registry query:
//!
//! ```no_run
//! use std::time::Duration;
//! use tenantcache::{Cache, Lookup, Namespace};
//!
//! /// The tenant id and code of a request's Host header, or None for an
//! /// unknown host.
//! fn tenant_of_host(
//!     cache: &Cache,
//!     by_host: &Namespace,
//!     host: &str,
//! ) -> Result<Option<(String, String)>, tenantcache::Error> {
//!     // At most 50 ms for a miss: the daemon queries PostgreSQL once for
//!     // every process that misses this host at the same time.
//!     match cache.lookup(by_host, host, Duration::from_millis(50)) {
//!         Ok(Lookup::Found(entry)) => {
//!             let code = entry.field("yacht_code").unwrap_or_default();
//!             Ok(Some((entry.tenant().to_owned(), code.to_owned())))
//!         }
//!         Ok(Lookup::NotFound) => Ok(None),
//!         // What the daemon answers when it has nothing better.
//!         Ok(Lookup::Miss) => query_registry(host),
//!         Err(e) if e.needs_database() => query_registry(host),
//!         // An invalid Host header: answer 400, never query the database.
//!         Err(e) => Err(e),
//!     }
//! }
//!
//! # fn query_registry(_: &str) -> Result<Option<(String, String)>, tenantcache::Error> { Ok(None) }
//! let cache = Cache::open(tenantcache::default_path())?;
//! let by_host = cache.namespace("tenant_by_host")?;
//! let tenant = tenant_of_host(&cache, &by_host, "Yacht-7.fleet.example.com.")?;
//! println!("{tenant:?}");
//! # Ok::<(), tenantcache::Error>(())
//! ```
//!
//! # Replacing a per-process `moka` cache
//!
//! Where a service kept `moka::sync::Cache<Uuid, Arc<UserRow>>` with a TTL
//! and called `try_get_with(id, || query_user(id))`, it keeps one [`Cache`]
//! for the process and falls back to the same query only when tenantcache
//! says so. What changes for the service: one copy per host instead of one
//! per process, misses coalesced across processes, and a revoked role gone
//! at commit instead of after the TTL.
//!
//! ```no_run
//! use std::time::Duration;
//! use tenantcache::{Cache, Lookup, Namespace};
//!
//! struct UserRow { tenant: String, role: Option<String> }
//! # fn query_user(_: &str) -> Result<Option<UserRow>, tenantcache::Error> { Ok(None) }
//!
//! fn user_row(cache: &Cache, users: &Namespace, id: &str) -> Result<Option<UserRow>, tenantcache::Error> {
//!     match cache.lookup(users, id, Duration::from_millis(50)) {
//!         Ok(Lookup::Found(e)) => Ok(Some(UserRow {
//!             tenant: e.tenant().to_owned(),
//!             role: e.field("role").map(str::to_owned),
//!         })),
//!         Ok(Lookup::NotFound) => Ok(None),
//!         Ok(Lookup::Miss) => query_user(id),
//!         Err(e) if e.needs_database() => query_user(id),
//!         Err(e) => Err(e), // ErrorKind::InvalidKey: not a user id at all
//!     }
//! }
//! # let cache = Cache::open(tenantcache::default_path())?;
//! # let users = cache.namespace("user")?;
//! # let _ = user_row(&cache, &users, "00000000-0001-4000-8000-000000000001")?;
//! # Ok::<(), tenantcache::Error>(())
//! ```
//!
//! # Linking
//!
//! `build.rs` links the library in `TENANTCACHE_LIB_DIR` when set, else the
//! one `pkg-config --libs tenantcache` names; `TENANTCACHE_STATIC=1` links
//! `libtenantcache.a` instead of the shared library.
#![deny(missing_docs)]

mod error;
mod sys;

pub use error::{Error, ErrorKind};

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::os::raw::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An open cache file (`tc_cache*`), closed when dropped.
///
/// `Cache` is `Send` and `Sync`: the header allows any number of threads to
/// use one handle at once, except closing it, which only `Drop` does (it owns
/// the handle, so no other call can run then). Share it by reference or in an
/// `Arc`.
///
/// Fork: a `Cache` opened before `fork()` keeps working in the child
/// (pre-fork servers may open it once in the parent); each process drops its
/// own copy.
pub struct Cache {
    raw: NonNull<sys::tc_cache>,
    // Tells this cache's namespaces from another cache's (see Namespace).
    id: u64,
    path: PathBuf,
}

// SAFETY: tenantcache.h, THREADS: "A tc_cache handle may be used by any number
// of threads at once, except that tc_cache_close must not run concurrently
// with any other call on the same handle." The handle is not tied to the
// thread that opened it, and tc_cache_close runs only in Drop, which has
// exclusive ownership.
unsafe impl Send for Cache {}
// SAFETY: as for Send: every method takes &self and calls a function the
// header declares thread-safe; only Drop (exclusive) closes.
unsafe impl Sync for Cache {}

static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

/// A namespace of one [`Cache`], from [`Cache::namespace`]: cheap to copy,
/// valid for that cache's whole life (also after the daemon replaced the
/// file). Given to another `Cache`, calls fail with
/// [`ErrorKind::InvalidArgument`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Namespace {
    id: sys::tc_ns,
    cache: u64,
}

/// What a namespace's keys are; the cache validates and normalises keys by
/// their kind before anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A UUID, normalised to lower case with hyphens.
    Uuid,
    /// `[a-z0-9-]{1,63}`.
    Slug,
    /// An RFC 1123 host name, lower-cased, trailing dot removed.
    Host,
    /// Text of bounded length.
    Text,
}

/// The answer of a read: `E` is the entry ([`OwnedEntry`], or an [`Entry`]
/// borrowed from a [`Buffer`]).
#[derive(Debug)]
pub enum Lookup<E> {
    /// The key has a value.
    Found(E),
    /// The database has no such row (a cached negative entry).
    NotFound,
    /// The cache does not hold the key: [`Cache::lookup`] it, or query the
    /// database.
    Miss,
}

impl<E> Lookup<E> {
    /// The entry if found.
    ///
    /// ```no_run
    /// # let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// # let users = cache.namespace("user")?;
    /// let role = cache
    ///     .get(&users, "00000000-0001-4000-8000-000000000001")?
    ///     .found()
    ///     .and_then(|e| e.field("role").map(str::to_owned));
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn found(self) -> Option<E> {
        match self {
            Lookup::Found(e) => Some(e),
            Lookup::NotFound | Lookup::Miss => None,
        }
    }

    /// True for `Miss`.
    ///
    /// ```no_run
    /// # let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// # let users = cache.namespace("user")?;
    /// if cache.get(&users, "00000000-0001-4000-8000-000000000001")?.is_miss() {
    ///     // not cached: lookup() it, or query the database
    /// }
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn is_miss(&self) -> bool {
        matches!(self, Lookup::Miss)
    }

    /// True for `NotFound`.
    ///
    /// ```no_run
    /// # let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// # let users = cache.namespace("user")?;
    /// if cache.get(&users, "00000000-0001-4000-8000-00000000ffff")?.is_not_found() {
    ///     // the database has no such user: answer 404
    /// }
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn is_not_found(&self) -> bool {
        matches!(self, Lookup::NotFound)
    }
}

impl Lookup<()> {
    // The answer of a read with `entry` in Found: the tc_value the read
    // filled (it holds a value only after TC_FOUND).
    #[inline(always)]
    fn holding<E>(self, entry: E) -> Lookup<E> {
        match self {
            Lookup::Found(()) => Lookup::Found(entry),
            Lookup::NotFound => Lookup::NotFound,
            Lookup::Miss => Lookup::Miss,
        }
    }
}

/// A found value: the tenant id and the namespace's named text fields.
///
/// Only ever seen through an [`OwnedEntry`] (from [`Cache::get`] /
/// [`Cache::lookup`]) or as `&Entry` (borrowed from a [`Buffer`]). The
/// strings it yields point into the entry itself, as the C API's do (nothing
/// more is copied). It cannot outlive its `Cache` (field names live there).
/// `Send`, not `Sync`: the header gives a value "to one thread at a time".
///
/// The borrow checker enforces both lifetimes. An entry cannot outlive its
/// cache:
///
/// ```compile_fail
/// # use tenantcache::Cache;
/// let entry = {
///     let cache = Cache::open("/run/tenantcache/cache").unwrap();
///     let users = cache.namespace("user").unwrap();
///     cache.get(&users, "00000000-0001-4000-8000-000000000001").unwrap().found()
/// }; // error: `cache` does not live long enough
/// # drop(entry);
/// ```
///
/// nor be kept across the next read into its buffer:
///
/// ```compile_fail
/// # use tenantcache::{Buffer, Cache};
/// let cache = Cache::open("/run/tenantcache/cache").unwrap();
/// let users = cache.namespace("user").unwrap();
/// let mut buf = Buffer::new();
/// let first = cache.get_into(&users, "00000000-0001-4000-8000-000000000001", &mut buf).unwrap();
/// let second = cache.get_into(&users, "00000000-0001-4000-8000-000000000002", &mut buf).unwrap();
/// drop((first, second)); // error: `buf` is borrowed mutably twice
/// ```
#[repr(transparent)]
pub struct Entry<'c> {
    // Never read from Rust: only the tc_value_* functions look inside, and
    // the C library writes only part of it.
    raw: MaybeUninit<sys::tc_value>,
    _cache: PhantomData<&'c Cache>,
}

// SAFETY: tenantcache.h: "A tc_value belongs to the caller and to one thread
// at a time"; moving it to another thread is allowed. Its raw pointer (to the
// cache's namespace table) stays valid while the Cache lives, which 'c
// ensures. Not Sync: the header does not allow two threads to read one value
// at once.
unsafe impl Send for Entry<'_> {}

/// The entry [`Cache::get`] and [`Cache::lookup`] return: an [`Entry`] in a
/// heap place of its own (a pointer to move, not 4 KiB), which it derefs to.
///
/// No allocation per read: dropping it keeps its place for the thread's
/// next `get` / `lookup` (one place per thread; a thread holding several
/// entries at once allocates the others). `Send`, not `Sync`, as [`Entry`].
///
/// ```no_run
/// use tenantcache::{Cache, OwnedEntry};
/// let cache = Cache::open(tenantcache::default_path())?;
/// let users = cache.namespace("user")?;
/// let kept: Vec<OwnedEntry<'_>> = ["00000000-0001-4000-8000-000000000001", "00000000-0001-4000-8000-000000000002"]
///     .iter()
///     .filter_map(|key| cache.get(&users, key).ok()?.found())
///     .collect();
/// for entry in &kept {
///     println!("{} {:?}", entry.tenant(), entry.field("role"));
/// }
/// # Ok::<(), tenantcache::Error>(())
/// ```
pub struct OwnedEntry<'c> {
    // Given back to SPARE by Drop, which is why it is ManuallyDrop.
    raw: ManuallyDrop<Box<MaybeUninit<sys::tc_value>>>,
    _cache: PhantomData<&'c Cache>,
}

// SAFETY: as for Entry: the tc_value moves to another thread with its owner;
// Drop there gives the place to that thread's SPARE.
unsafe impl Send for OwnedEntry<'_> {}

thread_local! {
    // The place of the last OwnedEntry dropped on this thread, for its next
    // read: a loop of get() allocates once, not per read (a 4 KiB malloc and
    // free cost about as much as the read itself).
    static SPARE: Cell<Option<Box<MaybeUninit<sys::tc_value>>>> = const { Cell::new(None) };
}

impl OwnedEntry<'_> {
    // A place for a read: the thread's spare one if it has it.
    #[inline]
    fn new() -> Self {
        let raw = SPARE
            .try_with(Cell::take)
            .ok()
            .flatten()
            .unwrap_or_else(|| Box::new(MaybeUninit::uninit()));
        OwnedEntry {
            raw: ManuallyDrop::new(raw),
            _cache: PhantomData,
        }
    }
}

impl Drop for OwnedEntry<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: Drop runs once and nothing uses self.raw after it.
        let raw = unsafe { ManuallyDrop::take(&mut self.raw) };
        // The place replaced (a thread dropping several entries) is freed,
        // and so is this one if the thread's locals are already gone.
        let _ = SPARE.try_with(move |spare| spare.replace(Some(raw)));
    }
}

impl<'c> std::ops::Deref for OwnedEntry<'c> {
    type Target = Entry<'c>;

    #[inline]
    fn deref(&self) -> &Entry<'c> {
        view(&self.raw)
    }
}

impl fmt::Debug for OwnedEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Entry::fmt(self, f)
    }
}

/// A caller-owned, reusable place for one entry (about 4 KiB, allocated once
/// by `new`). Reads with [`Cache::get_into`] and [`Cache::lookup_into`]
/// write into it and lend the entry out until the next read: a hot loop
/// allocates nothing. One per thread.
///
/// ```
/// let mut buf = tenantcache::Buffer::new();
/// # let _ = &mut buf;
/// ```
pub struct Buffer {
    raw: Box<MaybeUninit<sys::tc_value>>,
}

// SAFETY: the buffer is caller-owned memory the C library writes a tc_value
// into; a tc_value may move between threads (see Entry).
unsafe impl Send for Buffer {}

impl Buffer {
    /// A buffer for one entry (one allocation).
    ///
    /// ```
    /// let buffers: Vec<tenantcache::Buffer> = (0..4).map(|_| tenantcache::Buffer::new()).collect();
    /// assert_eq!(buffers.len(), 4);
    /// ```
    pub fn new() -> Buffer {
        Buffer {
            raw: Box::new(MaybeUninit::uninit()),
        }
    }
}

impl Default for Buffer {
    fn default() -> Buffer {
        Buffer::new()
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Buffer")
    }
}

/// This process's reads through one [`Cache`], summed over its threads
/// (`tc_stats`). The daemon adds every process's figures into its own
/// statistics ([`Cache::daemon_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Reads answered `Found`.
    pub hits: u64,
    /// Reads answered `NotFound`.
    pub negative_hits: u64,
    /// Reads answered `Miss`.
    pub misses: u64,
    /// Reads answered [`ErrorKind::Unavailable`].
    pub unavailable: u64,
}

/// What the daemon publishes in the cache file's header (`tc_info`), from
/// [`Cache::info`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Info {
    /// The daemon's process id.
    pub daemon_pid: i32,
    /// The daemon is synced with the database.
    pub synced: bool,
    /// A new file replaced the one this handle reads and it could not follow.
    pub retired: bool,
    /// Reads may return entries right now.
    pub available: bool,
    /// The global invalidation counter.
    pub epoch: u64,
    /// Time since the daemon's last heartbeat.
    pub heartbeat_age: Duration,
    /// The fail-closed bound: reads are unavailable once the heartbeat is older.
    pub stale_after: Duration,
    /// Entries not read for this long are dropped (zero: no idle timeout).
    pub idle_timeout: Duration,
    /// Slots in use.
    pub entries: u64,
    /// Slots in the file.
    pub slots: u64,
    /// Entries the daemon was configured for.
    pub capacity: u64,
    /// Size of the cache file.
    pub file_bytes: u64,
    /// Size of one slot.
    pub slot_bytes: u32,
    /// The file's layout version.
    pub layout_version: u32,
    /// When the daemon started.
    pub daemon_start: SystemTime,
    /// The daemon's control socket.
    pub control_socket: PathBuf,
}

/// The path the packaged daemon creates its cache at
/// (`TC_DEFAULT_CACHE_PATH`, `/run/tenantcache/cache`).
///
/// ```
/// assert!(tenantcache::default_path().is_absolute());
/// ```
pub fn default_path() -> &'static Path {
    // SAFETY: tc_default_cache_path returns a static NUL-terminated string.
    let s = unsafe { CStr::from_ptr(sys::tc_default_cache_path()) };
    Path::new(std::ffi::OsStr::from_bytes(s.to_bytes()))
}

/// The version of the linked libtenantcache, `"MAJOR.MINOR.PATCH"`.
///
/// ```
/// assert_eq!(tenantcache::version().split('.').count(), 3);
/// ```
pub fn version() -> &'static str {
    // SAFETY: tc_version returns a static NUL-terminated ASCII string.
    let s = unsafe { CStr::from_ptr(sys::tc_version()) };
    s.to_str().unwrap_or("?")
}

/// The cache-file layout version the linked library reads.
///
/// ```
/// assert!(tenantcache::layout_version() > 0);
/// ```
pub fn layout_version() -> u32 {
    // SAFETY: no arguments; tc_layout_version only returns a constant.
    unsafe { sys::tc_layout_version() }
}

// The header's timeouts are milliseconds in an int: round up (a timeout never
// ends early) and saturate.
fn timeout_ms(timeout: Duration) -> c_int {
    let ms = timeout.as_nanos().saturating_add(999_999) / 1_000_000;
    c_int::try_from(ms).unwrap_or(c_int::MAX)
}

// What tc_last_error_detail says about this thread's last request to the
// daemon. Read right after the call that failed, on the same thread.
fn last_detail() -> String {
    // SAFETY: never NULL; valid until this thread's next request, and copied
    // here at once.
    let s = unsafe { CStr::from_ptr(sys::tc_last_error_detail()) };
    s.to_string_lossy().into_owned()
}

// Runs `f` with `s` as a NUL-terminated C string, on the stack when it is
// short (field names are): no allocation, and only the name and its NUL are
// written, not the whole buffer. None if `s` contains a NUL byte.
#[inline]
fn with_c_str<R>(s: &str, f: impl FnOnce(*const c_char) -> R) -> Option<R> {
    const STACK: usize = 64;
    let bytes = s.as_bytes();
    if bytes.contains(&0) {
        return None;
    }
    if bytes.len() < STACK {
        let mut stack = MaybeUninit::<[u8; STACK]>::uninit();
        let p = stack.as_mut_ptr().cast::<u8>();
        // SAFETY: bytes.len() + 1 <= STACK, so the bytes and the NUL after
        // them fit; the C side reads up to the NUL only, never the
        // uninitialised rest.
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            p.add(bytes.len()).write(0);
        }
        Some(f(p.cast()))
    } else {
        let owned = CString::new(bytes).ok()?;
        Some(f(owned.as_ptr()))
    }
}

// An entry's text as &str. ASCII (ids, codes, roles, host names: nearly
// every field) is checked inline; std::str::from_utf8's general loop costs
// about 75 instructions even for a 5-byte role, as much as the rest of the
// wrapper (callgrind, bench/rust_bench.sh's hot set).
#[inline]
fn utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes)
    }
}

impl Cache {
    /// Opens the cache file at `path` read-only and maps it
    /// (`tc_cache_open`). A file the daemon is not keeping synced opens fine;
    /// reads then fail with [`ErrorKind::Unavailable`].
    ///
    /// Fails with [`Error::Io`] (the file cannot be opened or mapped, or is
    /// unsafe: writable by its group or others, in a directory others can
    /// write, or a symbolic link), [`Error::Layout`] (not a cache file, or an
    /// unknown layout), [`Error::InvalidArgument`] (a NUL byte in the path) or
    /// [`Error::OutOfMemory`].
    ///
    /// ```
    /// use std::io::ErrorKind as IoKind;
    /// use tenantcache::{Cache, Error};
    ///
    /// match Cache::open("/nonexistent/tenantcache") {
    ///     Err(Error::Io { source, .. }) => assert_eq!(source.kind(), IoKind::NotFound),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// ```
    pub fn open<P: AsRef<Path>>(path: P) -> Result<Cache, Error> {
        let path = path.as_ref();
        let c_path =
            CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidArgument {
                reason: format!("the cache path {:?} contains a NUL byte", path),
            })?;
        let mut raw: *mut sys::tc_cache = ptr::null_mut();
        // SAFETY: c_path is NUL-terminated and outlives the call; `raw` is a
        // valid place for the handle.
        let rc = unsafe { sys::tc_cache_open(c_path.as_ptr(), &mut raw) };
        if rc != 0 {
            // errno is preserved by tc_cache_open on TC_E_IO: read it first.
            let os = io::Error::last_os_error();
            return Err(match rc {
                sys::TC_E_IO => Error::Io {
                    path: path.to_path_buf(),
                    source: os,
                },
                sys::TC_E_LAYOUT => Error::Layout {
                    path: path.to_path_buf(),
                },
                sys::TC_E_NOMEM => Error::OutOfMemory,
                sys::TC_E_INVALID_ARG => Error::InvalidArgument {
                    reason: format!("tc_cache_open refused {:?}", path),
                },
                status => Error::Other { status },
            });
        }
        let raw = NonNull::new(raw).expect("tc_cache_open returned 0 without a handle");
        Ok(Cache {
            raw,
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            path: path.to_path_buf(),
        })
    }

    /// The path this cache was opened with.
    ///
    /// ```no_run
    /// let cache = tenantcache::Cache::open("/run/tenantcache/cache")?;
    /// assert_eq!(cache.path(), std::path::Path::new("/run/tenantcache/cache"));
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves a namespace name (`tc_namespace`); do it once and keep the
    /// [`Namespace`]. Fails with [`Error::NoNamespace`] when the file has no
    /// such namespace (a typo, or the daemon's config lacks it).
    ///
    /// ```no_run
    /// let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// let users = cache.namespace("user")?;
    /// # let _ = users;
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn namespace(&self, name: &str) -> Result<Namespace, Error> {
        let no_namespace = || Error::NoNamespace {
            name: name.to_string(),
        };
        let mut id: sys::tc_ns = 0;
        // SAFETY: the handle is open; the name is NUL-terminated for the
        // call's duration; `id` is a valid out place.
        let rc = with_c_str(name, |c_name| unsafe {
            sys::tc_namespace(self.raw.as_ptr(), c_name, &mut id)
        })
        .ok_or_else(no_namespace)?;
        match rc {
            0 => Ok(Namespace { id, cache: self.id }),
            sys::TC_E_NO_NAMESPACE => Err(no_namespace()),
            status => Err(Error::Other { status }),
        }
    }

    /// The name of a namespace of this cache.
    ///
    /// ```no_run
    /// let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// let users = cache.namespace("user")?;
    /// assert_eq!(cache.namespace_name(&users)?, "user");
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn namespace_name(&self, ns: &Namespace) -> Result<&str, Error> {
        let id = self.ns_id(ns)?;
        // SAFETY: the handle is open; the name it returns is owned by the
        // handle and valid until it is closed, which &self outlives.
        let name = unsafe { sys::tc_namespace_name(self.raw.as_ptr(), id) };
        if name.is_null() {
            return Err(Error::InvalidArgument {
                reason: format!("namespace id {id} was never given out"),
            });
        }
        // SAFETY: non-NULL, NUL-terminated, lives as long as the handle.
        let name = unsafe { CStr::from_ptr(name) };
        name.to_str().map_err(|_| Error::NotUtf8 {
            what: "the namespace name".to_string(),
        })
    }

    /// The key kind of a namespace in the current file.
    ///
    /// ```no_run
    /// use tenantcache::KeyKind;
    /// let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// let by_host = cache.namespace("tenant_by_host")?;
    /// assert_eq!(cache.key_kind(&by_host)?, KeyKind::Host);
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn key_kind(&self, ns: &Namespace) -> Result<KeyKind, Error> {
        let id = self.ns_id(ns)?;
        // SAFETY: the handle is open; any id is accepted.
        match unsafe { sys::tc_namespace_key_kind(self.raw.as_ptr(), id) } {
            sys::TC_KEY_UUID => Ok(KeyKind::Uuid),
            sys::TC_KEY_SLUG => Ok(KeyKind::Slug),
            sys::TC_KEY_HOST => Ok(KeyKind::Host),
            sys::TC_KEY_TEXT => Ok(KeyKind::Text),
            status => Err(self.error(status, id, b"", false)),
        }
    }

    /// Validates and normalises `key` as namespace `ns` does before a read
    /// (`tc_cache_normalize_key`): what to query the database with after a
    /// miss. Fails with [`Error::InvalidKey`] saying why.
    ///
    /// ```no_run
    /// let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// let by_host = cache.namespace("tenant_by_host")?;
    /// assert_eq!(cache.normalize_key(&by_host, "Yacht-7.Example.COM.")?, "yacht-7.example.com");
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn normalize_key(&self, ns: &Namespace, key: impl AsRef<[u8]>) -> Result<String, Error> {
        let id = self.ns_id(ns)?;
        let key = key.as_ref();
        let mut buf = [0u8; sys::TC_MAX_KEY_LEN + 1];
        let mut len = 0usize;
        let mut why: *const c_char = ptr::null();
        // SAFETY: the handle is open; key is key.len() readable bytes; buf
        // holds TC_MAX_KEY_LEN + 1 bytes as required; len and why are valid
        // out places.
        let rc = unsafe {
            sys::tc_cache_normalize_key(
                self.raw.as_ptr(),
                id,
                key.as_ptr().cast(),
                key.len(),
                buf.as_mut_ptr().cast(),
                &mut len,
                &mut why,
            )
        };
        match rc {
            0 => String::from_utf8(buf[..len].to_vec()).map_err(|_| Error::NotUtf8 {
                what: "the normalised key".to_string(),
            }),
            sys::TC_E_INVALID_KEY => Err(Error::InvalidKey {
                reason: static_reason(why),
            }),
            status => Err(self.error(status, id, key, false)),
        }
    }

    /// Looks `key` up in shared memory only (`tc_cache_get`): no lock, no
    /// system call, never blocks. The entry comes in an [`OwnedEntry`]
    /// (which reuses the thread's place of the last one dropped: no
    /// allocation in a loop); [`Cache::get_into`] reads into a [`Buffer`]
    /// instead.
    ///
    /// `Ok(Found | NotFound | Miss)`, or [`Error::Unavailable`] (query the
    /// database), [`Error::InvalidKey`], [`Error::NoNamespace`] (the daemon's
    /// new file lacks the namespace), [`Error::InvalidArgument`].
    ///
    /// ```no_run
    /// use tenantcache::{Cache, Lookup};
    /// let cache = Cache::open(tenantcache::default_path())?;
    /// let users = cache.namespace("user")?;
    /// if let Lookup::Found(entry) = cache.get(&users, "00000000-0001-4000-8000-000000000001")? {
    ///     println!("tenant {} role {:?}", entry.tenant(), entry.field("role"));
    /// }
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    #[inline]
    pub fn get(
        &self,
        ns: &Namespace,
        key: impl AsRef<[u8]>,
    ) -> Result<Lookup<OwnedEntry<'_>>, Error> {
        self.read_owned(ns, key.as_ref(), None)
    }

    /// [`Cache::get`] into a reusable [`Buffer`]. The entry borrows the
    /// buffer until its next use.
    ///
    /// ```no_run
    /// use tenantcache::{Buffer, Cache, Lookup};
    /// let cache = Cache::open(tenantcache::default_path())?;
    /// let users = cache.namespace("user")?;
    /// let mut buf = Buffer::new();
    /// for key in ["00000000-0001-4000-8000-000000000001", "00000000-0001-4000-8000-000000000002"] {
    ///     if let Lookup::Found(entry) = cache.get_into(&users, key, &mut buf)? {
    ///         println!("{key}: {}", entry.tenant());
    ///     }
    /// }
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    #[inline]
    pub fn get_into<'c, 'b>(
        &'c self,
        ns: &Namespace,
        key: impl AsRef<[u8]>,
        buf: &'b mut Buffer,
    ) -> Result<Lookup<&'b Entry<'c>>, Error> {
        self.read_into(ns, key.as_ref(), None, buf)
    }

    /// Like [`Cache::get`], and on a miss asks the daemon, waiting at most
    /// `timeout` (`tc_cache_lookup`). The daemon coalesces concurrent misses
    /// of a key from every process into one database query and answers with
    /// the value. A hit costs what `get` costs.
    ///
    /// Besides `get`'s answers: [`Error::Unavailable`] (the daemon is not
    /// running or refused the connection), [`Error::Busy`] (its fill queue is
    /// full), [`Error::Timeout`], [`Error::Daemon`] (the database query
    /// failed; `detail` is the message).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tenantcache::{Cache, Lookup};
    /// let cache = Cache::open(tenantcache::default_path())?;
    /// let users = cache.namespace("user")?;
    /// match cache.lookup(&users, "00000000-0001-4000-8000-000000000001", Duration::from_millis(100))? {
    ///     Lookup::Found(entry) => println!("role {:?}", entry.field("role")),
    ///     Lookup::NotFound => println!("no such user"),
    ///     Lookup::Miss => println!("not cached: query the database"),
    /// }
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    #[inline]
    pub fn lookup(
        &self,
        ns: &Namespace,
        key: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Lookup<OwnedEntry<'_>>, Error> {
        self.read_owned(ns, key.as_ref(), Some(timeout))
    }

    /// [`Cache::lookup`] into a reusable [`Buffer`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tenantcache::{Buffer, Cache};
    /// let cache = Cache::open(tenantcache::default_path())?;
    /// let users = cache.namespace("user")?;
    /// let mut buf = Buffer::new();
    /// let found = cache
    ///     .lookup_into(&users, "00000000-0001-4000-8000-000000000001", Duration::from_millis(100), &mut buf)?
    ///     .found();
    /// println!("{:?}", found.map(|e| e.tenant()));
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    #[inline]
    pub fn lookup_into<'c, 'b>(
        &'c self,
        ns: &Namespace,
        key: impl AsRef<[u8]>,
        timeout: Duration,
        buf: &'b mut Buffer,
    ) -> Result<Lookup<&'b Entry<'c>>, Error> {
        self.read_into(ns, key.as_ref(), Some(timeout), buf)
    }

    /// Asks the daemon to invalidate one key now, as the SQL function
    /// `tenantcache.invalidate` does at commit (`tc_cache_invalidate`).
    /// `Ok` once the daemon applied it; [`Error::Busy`] when its rate limit
    /// was reached (nothing applied), [`Error::Unavailable`],
    /// [`Error::Timeout`], [`Error::InvalidKey`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// let users = cache.namespace("user")?;
    /// cache.invalidate(&users, "00000000-0001-4000-8000-000000000001", Duration::from_secs(1))?;
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn invalidate(
        &self,
        ns: &Namespace,
        key: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let key = key.as_ref();
        let id = self.ns_id(ns)?;
        // SAFETY: the handle is open; key is key.len() readable bytes.
        let rc = unsafe {
            sys::tc_cache_invalidate(
                self.raw.as_ptr(),
                id,
                key.as_ptr().cast(),
                key.len(),
                timeout_ms(timeout),
            )
        };
        self.done(rc, id, key)
    }

    /// Asks the daemon to invalidate every entry of one tenant, in every
    /// namespace (`tc_cache_invalidate_tenant`). `tenant` is the tenant
    /// column's text; a UUID is normalised first. As [`Cache::invalidate`]
    /// otherwise; an empty or malformed id is [`Error::InvalidKey`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// cache.invalidate_tenant("00000000-0000-4000-8000-000000000007", Duration::from_secs(1))?;
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn invalidate_tenant(&self, tenant: &str, timeout: Duration) -> Result<(), Error> {
        // SAFETY: the handle is open; tenant is tenant.len() readable bytes.
        let rc = unsafe {
            sys::tc_cache_invalidate_tenant(
                self.raw.as_ptr(),
                tenant.as_ptr().cast(),
                tenant.len(),
                timeout_ms(timeout),
            )
        };
        if rc == sys::TC_E_INVALID_KEY {
            // Refused before any request: tc_last_error_detail does not
            // describe this call.
            return Err(Error::InvalidKey {
                reason: format!(
                    "tenant id {tenant:?}: empty, with a control character, or longer than an entry can hold"
                ),
            });
        }
        self.done(rc, 0, tenant.as_bytes())
    }

    /// Asks the daemon to invalidate everything (`tc_cache_flush`): every
    /// worker of the host misses afterwards. As [`Cache::invalidate`].
    ///
    /// ```no_run
    /// let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// cache.flush(std::time::Duration::from_secs(1))?;
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        // SAFETY: the handle is open.
        let rc = unsafe { sys::tc_cache_flush(self.raw.as_ptr(), timeout_ms(timeout)) };
        self.done(rc, 0, b"")
    }

    /// This process's reads through this cache, summed over its threads
    /// (`tc_cache_stats`; counted in process memory, no system call).
    ///
    /// ```no_run
    /// let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// let s = cache.stats();
    /// println!("hit rate {:.3}", s.hits as f64 / (s.hits + s.misses).max(1) as f64);
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let mut s = sys::tc_stats {
            hits: 0,
            negative_hits: 0,
            misses: 0,
            unavailable: 0,
        };
        // SAFETY: the handle is open and `s` a valid out place; with both
        // non-NULL the call cannot fail (tenantcache.h).
        let rc = unsafe { sys::tc_cache_stats(self.raw.as_ptr(), &mut s) };
        assert_eq!(rc, 0, "tc_cache_stats failed on an open handle");
        Stats {
            hits: s.hits,
            negative_hits: s.negative_hits,
            misses: s.misses,
            unavailable: s.unavailable,
        }
    }

    /// The daemon's statistics as JSON (`tc_cache_daemon_stats`; the
    /// README's "Operations" lists the keys): every process's reads, fills,
    /// invalidations, errors.
    ///
    /// ```no_run
    /// let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// let json = cache.daemon_stats(std::time::Duration::from_secs(1))?;
    /// assert!(json.starts_with('{'));
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn daemon_stats(&self, timeout: Duration) -> Result<String, Error> {
        let mut cap = 16 * 1024;
        loop {
            let mut buf = vec![0u8; cap];
            // SAFETY: the handle is open; buf holds cap writable bytes.
            let n = unsafe {
                sys::tc_cache_daemon_stats(
                    self.raw.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    cap,
                    timeout_ms(timeout),
                )
            };
            // TC_E_INVALID_ARG also means "cap is too small": grow a few times.
            if n == sys::TC_E_INVALID_ARG && cap < 1024 * 1024 {
                cap *= 4;
                continue;
            }
            if n < 0 {
                return Err(self.error(n, 0, b"", true));
            }
            buf.truncate(n as usize);
            return String::from_utf8(buf).map_err(|_| Error::NotUtf8 {
                what: "the daemon's statistics".to_string(),
            });
        }
    }

    /// What the daemon publishes in the file header (`tc_cache_info`):
    /// whether reads are available, the staleness bound, the daemon's pid.
    ///
    /// ```no_run
    /// let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// let info = cache.info();
    /// println!("synced {} available {} stale_after {:?}", info.synced, info.available, info.stale_after);
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn info(&self) -> Info {
        let mut raw = MaybeUninit::<sys::tc_info>::zeroed();
        // SAFETY: the handle is open; raw is a writable tc_info. With both
        // non-NULL the call returns 0 and fills every field.
        let rc = unsafe { sys::tc_cache_info(self.raw.as_ptr(), raw.as_mut_ptr()) };
        assert_eq!(rc, 0, "tc_cache_info failed on an open handle");
        // SAFETY: zero-initialised, then filled: every field is an integer or
        // char array, valid for any bytes.
        let raw = unsafe { raw.assume_init() };
        let socket: Vec<u8> = raw
            .control_socket
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        Info {
            daemon_pid: raw.daemon_pid,
            synced: raw.synced != 0,
            retired: raw.retired != 0,
            available: raw.available != 0,
            epoch: raw.epoch,
            heartbeat_age: Duration::from_nanos(raw.heartbeat_age_ns),
            stale_after: Duration::from_nanos(raw.stale_after_ns),
            idle_timeout: Duration::from_nanos(raw.idle_timeout_ns),
            entries: raw.entries,
            slots: raw.slots,
            capacity: raw.capacity,
            file_bytes: raw.file_bytes,
            slot_bytes: raw.slot_bytes,
            layout_version: raw.layout_version,
            daemon_start: UNIX_EPOCH + Duration::from_nanos(raw.daemon_start_unix_ns),
            control_socket: PathBuf::from(std::ffi::OsStr::from_bytes(&socket)),
        }
    }

    #[inline]
    fn ns_id(&self, ns: &Namespace) -> Result<sys::tc_ns, Error> {
        if ns.cache == self.id {
            Ok(ns.id)
        } else {
            Err(self.foreign_namespace())
        }
    }

    #[cold]
    fn foreign_namespace(&self) -> Error {
        Error::InvalidArgument {
            reason: format!(
                "the namespace belongs to another Cache than {}",
                self.path.display()
            ),
        }
    }

    // The one read path of get, get_into, lookup and lookup_into:
    // tc_cache_get, or tc_cache_lookup when a timeout is given (a miss asks
    // the daemon), into `out`. Found carries `()`; the callers put their
    // entry in. Inlined so that each caller is one C call and a compare, as
    // in C.
    #[inline(always)]
    fn read(
        &self,
        ns: &Namespace,
        key: &[u8],
        timeout: Option<Duration>,
        out: *mut sys::tc_value,
    ) -> Result<Lookup<()>, Error> {
        let id = self.ns_id(ns)?;
        // SAFETY: the handle is open; key is key.len() readable bytes; `out`
        // is a writable tc_value that the caller owns for this thread (an
        // Entry on its stack or a Buffer it lends exclusively); a lookup
        // never blocks past its timeout.
        let rc = unsafe {
            match timeout {
                None => {
                    sys::tc_cache_get(self.raw.as_ptr(), id, key.as_ptr().cast(), key.len(), out)
                }
                Some(t) => sys::tc_cache_lookup(
                    self.raw.as_ptr(),
                    id,
                    key.as_ptr().cast(),
                    key.len(),
                    timeout_ms(t),
                    out,
                ),
            }
        };
        match rc {
            sys::TC_FOUND => Ok(Lookup::Found(())),
            sys::TC_NOT_FOUND => Ok(Lookup::NotFound),
            sys::TC_MISS => Ok(Lookup::Miss),
            status => Err(self.error(status, id, key, timeout.is_some())),
        }
    }

    #[inline(always)]
    fn read_owned(
        &self,
        ns: &Namespace,
        key: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Lookup<OwnedEntry<'_>>, Error> {
        // Made before the read so that its Drop keeps the place for the next
        // read whatever the answer.
        let mut entry = OwnedEntry::new();
        let answer = self.read(ns, key, timeout, entry.raw.as_mut_ptr())?;
        Ok(answer.holding(entry))
    }

    #[inline(always)]
    fn read_into<'c, 'b>(
        &'c self,
        ns: &Namespace,
        key: &[u8],
        timeout: Option<Duration>,
        buf: &'b mut Buffer,
    ) -> Result<Lookup<&'b Entry<'c>>, Error> {
        let answer = self.read(ns, key, timeout, buf.raw.as_mut_ptr())?;
        Ok(answer.holding(view(&buf.raw)))
    }

    fn done(&self, rc: c_int, id: sys::tc_ns, key: &[u8]) -> Result<(), Error> {
        if rc == 0 {
            Ok(())
        } else {
            Err(self.error(rc, id, key, true))
        }
    }

    // An error for a failing status of a call about namespace `id` and `key`.
    // tc_last_error_detail describes the last request this thread sent, so
    // it is read only when this call may have sent one (`asked_daemon`) and
    // the status is not one the library decides before sending.
    #[cold]
    #[inline(never)]
    fn error(&self, status: c_int, id: sys::tc_ns, key: &[u8], asked_daemon: bool) -> Error {
        let detail = if asked_daemon {
            last_detail()
        } else {
            String::new()
        };
        match status {
            sys::TC_E_UNAVAILABLE => Error::Unavailable {
                detail: self.unavailable_reason().unwrap_or(detail),
            },
            sys::TC_E_BUSY => Error::Busy { detail },
            sys::TC_E_TIMEOUT => Error::Timeout { detail },
            sys::TC_E_DAEMON => Error::Daemon { detail },
            sys::TC_E_NOMEM => Error::OutOfMemory,
            sys::TC_E_INVALID_ARG => Error::InvalidArgument {
                reason: if detail.is_empty() {
                    "refused by libtenantcache".to_string()
                } else {
                    detail
                },
            },
            sys::TC_E_NO_NAMESPACE => Error::NoNamespace {
                name: self
                    .namespace_name(&Namespace { id, cache: self.id })
                    .map(str::to_owned)
                    .unwrap_or_else(|_| format!("#{id}")),
            },
            sys::TC_E_INVALID_KEY => {
                // Ask the normaliser why: it fails the same way the read did.
                let reason = match self.normalize_key(&Namespace { id, cache: self.id }, key) {
                    Err(Error::InvalidKey { reason }) => reason,
                    _ => "the key fails its namespace's key kind".to_string(),
                };
                Error::InvalidKey { reason }
            }
            status => Error::Other { status },
        }
    }
}

impl Cache {
    // Why the file itself is unavailable, from its header; None when it is
    // available (then an Unavailable came from the daemon's socket, which
    // tc_last_error_detail describes).
    fn unavailable_reason(&self) -> Option<String> {
        let info = self.info();
        if info.available {
            None
        } else if info.retired {
            Some(format!(
                "{} was replaced by a file this handle cannot follow yet",
                self.path.display()
            ))
        } else if info.heartbeat_age > info.stale_after {
            Some(format!(
                "the daemon's heartbeat (pid {}) is {} ms old, past the {} ms bound: it is stopped, hung or gone",
                info.daemon_pid,
                info.heartbeat_age.as_millis(),
                info.stale_after.as_millis()
            ))
        } else if !info.synced {
            Some(format!(
                "the daemon (pid {}) is not synced with the database (its listener is reconnecting or catching up)",
                info.daemon_pid
            ))
        } else {
            Some("the cache file is not available".to_string())
        }
    }
}

fn static_reason(why: *const c_char) -> String {
    if why.is_null() {
        return "the key fails its namespace's key kind".to_string();
    }
    // SAFETY: tc_cache_normalize_key sets *why to a static NUL-terminated
    // description.
    unsafe { CStr::from_ptr(why) }
        .to_string_lossy()
        .into_owned()
}

// A tc_value as an Entry, for a read that answered TC_FOUND (a Lookup holds
// it only then).
#[inline(always)]
fn view<'b, 'c>(raw: &'b MaybeUninit<sys::tc_value>) -> &'b Entry<'c> {
    let p: *const MaybeUninit<sys::tc_value> = raw;
    // SAFETY: Entry is repr(transparent) over MaybeUninit<tc_value> (its other
    // field is a zero-sized PhantomData), so the cast keeps size, alignment
    // and validity; the borrow is the one of the place it came from (a
    // Buffer's, borrowed exclusively by the read, or an OwnedEntry's).
    unsafe { &*p.cast::<Entry<'c>>() }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: the handle is open and dropped once; Drop has exclusive
        // access, so no other call on it is running (tc_cache_close's rule).
        unsafe { sys::tc_cache_close(self.raw.as_ptr()) }
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").field("path", &self.path).finish()
    }
}

impl<'c> Entry<'c> {
    #[inline]
    fn raw(&self) -> *const sys::tc_value {
        self.raw.as_ptr()
    }

    /// The tenant id as bytes.
    ///
    /// ```no_run
    /// # let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// # let users = cache.namespace("user")?;
    /// # let entry = cache.get(&users, "00000000-0001-4000-8000-000000000001")?.found().unwrap();
    /// assert_eq!(entry.tenant_bytes().len(), 36);
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    #[inline]
    pub fn tenant_bytes(&self) -> &[u8] {
        let mut len = 0usize;
        // SAFETY: the value holds TC_FOUND (an Entry exists only then); the
        // text lives in the value, which &self borrows.
        let p = unsafe { sys::tc_value_tenant(self.raw(), &mut len) };
        assert!(!p.is_null(), "tc_value_tenant: the entry holds no value");
        // SAFETY: p points to len bytes inside the value.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
    }

    /// The tenant id (the namespace's tenant column as text).
    ///
    /// Panics if it is not UTF-8 (a database whose encoding is not UTF-8);
    /// [`Entry::tenant_bytes`] never does.
    ///
    /// ```no_run
    /// # let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// # let users = cache.namespace("user")?;
    /// if let Some(entry) = cache.get(&users, "00000000-0001-4000-8000-000000000001")?.found() {
    ///     println!("tenant {}", entry.tenant());
    /// }
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    #[inline]
    pub fn tenant(&self) -> &str {
        utf8(self.tenant_bytes())
            .expect("tenantcache: the tenant id is not UTF-8; use tenant_bytes()")
    }

    /// The normalised key the entry was found under.
    ///
    /// ```no_run
    /// # let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// # let users = cache.namespace("user")?;
    /// let entry = cache.get(&users, "00000000-0001-4000-8000-00000000000A")?.found().unwrap();
    /// assert_eq!(entry.key(), "00000000-0001-4000-8000-00000000000a");
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn key(&self) -> &str {
        let mut len = 0usize;
        // SAFETY: as in tenant_bytes().
        let p = unsafe { sys::tc_value_key(self.raw(), &mut len) };
        assert!(!p.is_null(), "tc_value_key: the entry holds no value");
        // SAFETY: p points to len bytes inside the value.
        let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
        // Normalised keys are validated UTF-8 (text) or ASCII (other kinds).
        utf8(bytes).expect("tenantcache: a normalised key is not UTF-8")
    }

    /// A field's text by name, `Ok(None)` for SQL NULL; [`Error::NoField`]
    /// when the namespace has no such field, [`Error::NotUtf8`].
    ///
    /// ```no_run
    /// # let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// # let users = cache.namespace("user")?;
    /// # let entry = cache.get(&users, "00000000-0001-4000-8000-000000000001")?.found().unwrap();
    /// assert_eq!(entry.try_field("no_such_field").unwrap_err().kind(), tenantcache::ErrorKind::NoField);
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    #[inline]
    pub fn try_field(&self, name: &str) -> Result<Option<&str>, Error> {
        match self.field_bytes(name)? {
            None => Ok(None),
            Some(b) => utf8(b).map(Some).map_err(|_| Error::NotUtf8 {
                what: format!("field {name:?}"),
            }),
        }
    }

    /// A field's bytes by name, `Ok(None)` for SQL NULL; [`Error::NoField`]
    /// when the namespace has no such field.
    ///
    /// ```no_run
    /// # let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// # let users = cache.namespace("user")?;
    /// # let entry = cache.get(&users, "00000000-0001-4000-8000-000000000001")?.found().unwrap();
    /// let role: Option<&[u8]> = entry.field_bytes("role")?;
    /// # let _ = role;
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    #[inline]
    pub fn field_bytes(&self, name: &str) -> Result<Option<&[u8]>, Error> {
        let mut text: *const c_char = ptr::null();
        let mut len = 0usize;
        // SAFETY: the value holds TC_FOUND; the name is NUL-terminated for
        // the call; text and len are valid out places.
        let rc = with_c_str(name, |c_name| unsafe {
            sys::tc_value_get(self.raw(), c_name, &mut text, &mut len)
        })
        .unwrap_or(sys::TC_E_NO_FIELD);
        match rc {
            0 if text.is_null() => Ok(None),
            // SAFETY: text points to len bytes inside the value (&self).
            0 => Ok(Some(unsafe {
                std::slice::from_raw_parts(text.cast::<u8>(), len)
            })),
            sys::TC_E_NO_FIELD => Err(Error::NoField {
                name: name.to_string(),
            }),
            status => Err(Error::Other { status }),
        }
    }

    /// A field's text by name; `None` for SQL NULL.
    ///
    /// Panics when the namespace has no field of that name (a typo, like
    /// indexing a map with a missing key) or its text is not UTF-8;
    /// [`Entry::try_field`] returns those as errors.
    ///
    /// ```no_run
    /// # let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// # let users = cache.namespace("user")?;
    /// if let Some(entry) = cache.get(&users, "00000000-0001-4000-8000-000000000001")?.found() {
    ///     let admin = entry.field("role") == Some("owner");
    ///     # let _ = admin;
    /// }
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    #[inline]
    pub fn field(&self, name: &str) -> Option<&str> {
        match self.try_field(name) {
            Ok(v) => v,
            Err(e) => self.no_such_field(e),
        }
    }

    // field()'s panic, out of line: it formats, and the hot path does not.
    #[cold]
    #[inline(never)]
    fn no_such_field(&self, e: Error) -> ! {
        panic!(
            "{e} (fields: {:?})",
            self.fields().map(|(n, _)| n).collect::<Vec<_>>()
        )
    }

    /// The number of fields.
    ///
    /// ```no_run
    /// # let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// # let users = cache.namespace("user")?;
    /// # let entry = cache.get(&users, "00000000-0001-4000-8000-000000000001")?.found().unwrap();
    /// assert_eq!(entry.field_count(), entry.fields().count());
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn field_count(&self) -> usize {
        // SAFETY: the value holds TC_FOUND.
        unsafe { sys::tc_value_field_count(self.raw()) }
    }

    /// The fields in the namespace's order: `(name, text)`, text `None` for
    /// SQL NULL or text that is not UTF-8 ([`Entry::field_bytes`] has it).
    ///
    /// ```no_run
    /// # let cache = tenantcache::Cache::open(tenantcache::default_path())?;
    /// # let users = cache.namespace("user")?;
    /// # let entry = cache.get(&users, "00000000-0001-4000-8000-000000000001")?.found().unwrap();
    /// for (name, text) in entry.fields() {
    ///     println!("{name} = {text:?}");
    /// }
    /// # Ok::<(), tenantcache::Error>(())
    /// ```
    pub fn fields(&self) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
        (0..self.field_count()).map(move |i| {
            let mut name: *const c_char = ptr::null();
            let mut text: *const c_char = ptr::null();
            let mut len = 0usize;
            // SAFETY: the value holds TC_FOUND and i < its field count; the
            // out pointers are valid.
            let rc = unsafe { sys::tc_value_field(self.raw(), i, &mut name, &mut text, &mut len) };
            assert_eq!(
                rc,
                0,
                "tc_value_field({i}) of {} fields",
                self.field_count()
            );
            // SAFETY: field names are NUL-terminated and owned by the Cache,
            // which outlives the entry ('c).
            let name = unsafe { CStr::from_ptr(name) }.to_str().unwrap_or("?");
            let text = if text.is_null() {
                None
            } else {
                // SAFETY: text points to len bytes inside the value.
                utf8(unsafe { std::slice::from_raw_parts(text.cast::<u8>(), len) }).ok()
            };
            (name, text)
        })
    }
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Entry");
        d.field("tenant", &String::from_utf8_lossy(self.tenant_bytes()));
        d.field("key", &self.key());
        for (name, text) in self.fields() {
            d.field(name, &text);
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Send and Sync as the header promises, and no further (an Entry is
    // not Sync): a change that breaks this does not compile.
    #[test]
    fn thread_safety_is_what_the_header_promises() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Cache>();
        send_sync::<Namespace>();
        send::<Buffer>();
        send::<Entry<'static>>();
        send::<OwnedEntry<'static>>();
        send_sync::<Error>();
    }

    #[test]
    fn timeouts_round_up_to_milliseconds_and_saturate() {
        assert_eq!(timeout_ms(Duration::ZERO), 0);
        assert_eq!(timeout_ms(Duration::from_nanos(1)), 1);
        assert_eq!(timeout_ms(Duration::from_millis(250)), 250);
        assert_eq!(timeout_ms(Duration::from_secs(u64::MAX)), c_int::MAX);
    }

    // The inline ASCII check must not let anything through that from_utf8
    // refuses, nor refuse what it accepts.
    #[test]
    fn text_is_checked_as_utf8_whether_ascii_or_not() {
        for ok in [
            "",
            "crew",
            "https://yacht-1.fleet.example.com",
            "Zürich",
            "船长",
            "\u{7f}",
        ] {
            assert_eq!(utf8(ok.as_bytes()), Ok(ok));
        }
        for bad in [
            &b"\xff"[..],
            b"crew\x80",
            b"\xc3",
            b"ab\xed\xa0\x80",
            b"\xf8\x88\x80\x80\x80",
        ] {
            assert!(utf8(bad).is_err(), "{bad:?} passed as UTF-8");
            assert!(std::str::from_utf8(bad).is_err());
        }
    }

    #[test]
    fn short_and_long_names_reach_c_intact_and_nul_is_refused() {
        for s in ["role", &"x".repeat(63), &"y".repeat(64), &"z".repeat(300)] {
            // SAFETY: the pointer is NUL-terminated for the closure's duration.
            let back = with_c_str(s, |p| {
                unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string()
            });
            assert_eq!(back.as_deref(), Some(s));
        }
        assert!(with_c_str("ro\0le", |_| ()).is_none());
    }
}

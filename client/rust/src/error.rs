//! The crate's one error type: the C library's failing statuses (`TC_E_*`),
//! each with what the library or the daemon said about it.
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::raw::c_int;
use std::path::PathBuf;

use crate::sys;

/// Why a call failed. Match on [`Error::kind`] to decide what to do; the
/// variants carry what the library or the daemon said.
///
/// `Unavailable`, `Busy`, `Timeout` and `Daemon` mean "ask PostgreSQL
/// yourself this time" (the cache fails closed: it never answers with a value
/// that may be stale); `InvalidKey` means the input is not a key of the
/// namespace's kind and must not reach the database either.
///
/// ```
/// use tenantcache::{Cache, ErrorKind};
///
/// let err = Cache::open("/nonexistent/tenantcache").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Io);
/// assert!(err.to_string().contains("/nonexistent/tenantcache"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The cache cannot be trusted now (daemon stopped or not synced with
    /// the database, or its file was replaced), or the daemon's socket
    /// refused a request: query the database.
    Unavailable {
        /// Why: the heartbeat's age against the bound, "not synced", a
        /// replaced file, or why the daemon's socket could not be reached.
        detail: String,
    },
    /// The key fails its namespace's key kind (or a tenant id is malformed);
    /// `reason` says how.
    InvalidKey {
        /// How the key fails its kind.
        reason: String,
    },
    /// The cache has no namespace of that name.
    NoNamespace {
        /// The namespace asked for.
        name: String,
    },
    /// The entry has no field of that name.
    NoField {
        /// The field asked for.
        name: String,
    },
    /// A tenant id, key or field of the entry is not UTF-8 (the database's
    /// encoding is not UTF-8); `what` names it. The `*_bytes` accessors
    /// return it as bytes.
    NotUtf8 {
        /// Which text.
        what: String,
    },
    /// The daemon's fill queue is full, or its rate limit for
    /// invalidations was reached; nothing was done.
    Busy {
        /// What the daemon said, or "".
        detail: String,
    },
    /// The daemon did not answer within the timeout.
    Timeout {
        /// What the library said, or "".
        detail: String,
    },
    /// The daemon reported an error, e.g. the namespace's query failed;
    /// `detail` is its message.
    Daemon {
        /// The database's or the daemon's message.
        detail: String,
    },
    /// `path` is not a cache file, or of a layout this library does not know.
    Layout {
        /// The file refused.
        path: PathBuf,
    },
    /// The cache file could not be opened or mapped, or is unsafe (writable
    /// by others: `PermissionDenied`; a symbolic link: `ELOOP`).
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error (errno).
        source: io::Error,
    },
    /// An argument the C library refused, or a [`crate::Namespace`] of
    /// another [`crate::Cache`]; `reason` says which.
    InvalidArgument {
        /// Which argument, and why.
        reason: String,
    },
    /// The C library ran out of memory.
    OutOfMemory,
    /// A status this crate does not know (a newer libtenantcache).
    Other {
        /// The C status.
        status: i32,
    },
}

/// The kind of an [`Error`], to match on.
///
/// ```
/// use tenantcache::{Cache, ErrorKind};
///
/// match Cache::open("/nonexistent/tenantcache").map_err(|e| e.kind()) {
///     Err(ErrorKind::Io) => {} // no cache on this host: query the database
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::Unavailable`].
    Unavailable,
    /// See [`Error::InvalidKey`].
    InvalidKey,
    /// See [`Error::NoNamespace`].
    NoNamespace,
    /// See [`Error::NoField`].
    NoField,
    /// See [`Error::NotUtf8`].
    NotUtf8,
    /// See [`Error::Busy`].
    Busy,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::Daemon`].
    Daemon,
    /// See [`Error::Layout`].
    Layout,
    /// See [`Error::Io`].
    Io,
    /// See [`Error::InvalidArgument`].
    InvalidArgument,
    /// See [`Error::OutOfMemory`].
    OutOfMemory,
    /// See [`Error::Other`].
    Other,
}

impl Error {
    /// The kind of the error, to match on.
    ///
    /// ```
    /// use tenantcache::{Cache, ErrorKind};
    ///
    /// let err = Cache::open("/nonexistent/tenantcache").unwrap_err();
    /// assert!(matches!(err.kind(), ErrorKind::Io | ErrorKind::Layout));
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::InvalidKey { .. } => ErrorKind::InvalidKey,
            Error::NoNamespace { .. } => ErrorKind::NoNamespace,
            Error::NoField { .. } => ErrorKind::NoField,
            Error::NotUtf8 { .. } => ErrorKind::NotUtf8,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Daemon { .. } => ErrorKind::Daemon,
            Error::Layout { .. } => ErrorKind::Layout,
            Error::Io { .. } => ErrorKind::Io,
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::OutOfMemory => ErrorKind::OutOfMemory,
            Error::Other { .. } => ErrorKind::Other,
        }
    }

    /// True when the caller should answer this request from the database
    /// itself: the cache is unavailable, busy, timed out or its daemon's
    /// query failed. False for errors in the request (an invalid key, an
    /// unknown namespace or field) and for opening failures.
    ///
    /// ```
    /// let err = tenantcache::Cache::open("/nonexistent/tenantcache").unwrap_err();
    /// assert!(!err.needs_database());
    /// ```
    pub fn needs_database(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unavailable | ErrorKind::Busy | ErrorKind::Timeout | ErrorKind::Daemon
        )
    }

    // The C status this error stands for, if it has one.
    fn status(&self) -> Option<c_int> {
        Some(match self {
            Error::Unavailable { .. } => sys::TC_E_UNAVAILABLE,
            Error::InvalidKey { .. } => sys::TC_E_INVALID_KEY,
            Error::NoNamespace { .. } => sys::TC_E_NO_NAMESPACE,
            Error::NoField { .. } => sys::TC_E_NO_FIELD,
            Error::Busy { .. } => sys::TC_E_BUSY,
            Error::Timeout { .. } => sys::TC_E_TIMEOUT,
            Error::Daemon { .. } => sys::TC_E_DAEMON,
            Error::Layout { .. } => sys::TC_E_LAYOUT,
            Error::Io { .. } => sys::TC_E_IO,
            Error::InvalidArgument { .. } => sys::TC_E_INVALID_ARG,
            Error::OutOfMemory => sys::TC_E_NOMEM,
            Error::Other { status } => *status,
            Error::NotUtf8 { .. } => return None,
        })
    }
}

/// The C library's description of a status (`tc_strerror`).
pub(crate) fn strerror(status: c_int) -> &'static str {
    // SAFETY: tc_strerror accepts any int and returns a static, never-NULL,
    // NUL-terminated string (tenantcache.h).
    let s = unsafe { CStr::from_ptr(sys::tc_strerror(status)) };
    s.to_str().unwrap_or("unknown status")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tenantcache: ")?;
        if let Some(status) = self.status() {
            f.write_str(strerror(status))?;
        }
        let more = match self {
            Error::Unavailable { detail }
            | Error::Busy { detail }
            | Error::Timeout { detail }
            | Error::Daemon { detail } => detail.clone(),
            Error::InvalidKey { reason } | Error::InvalidArgument { reason } => reason.clone(),
            Error::NoNamespace { name } => format!("namespace {name:?}"),
            Error::NoField { name } => format!("field {name:?}"),
            Error::NotUtf8 { what } => format!("{what} is not valid UTF-8"),
            Error::Layout { path } => path.display().to_string(),
            Error::Io { path, source } => format!("{}: {source}", path.display()),
            Error::OutOfMemory => String::new(),
            Error::Other { status } => format!("status {status}"),
        };
        if !more.is_empty() {
            f.write_str(if self.status().is_some() { ": " } else { "" })?;
            f.write_str(&more)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

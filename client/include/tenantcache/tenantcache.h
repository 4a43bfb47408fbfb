/*
 * libtenantcache: read tenant lookups from the tenantcached shared-memory cache.
 *
 * MODEL
 *   tenantcached (the daemon) is the only writer of the cache file. It fills
 *   entries from PostgreSQL and invalidates them when PostgreSQL reports a
 *   committed change. This library maps the file READ-ONLY into the calling
 *   process and looks keys up without locks, system calls or allocation.
 *
 *   A lookup names a namespace (a configured query such as "user" or
 *   "tenant_by_host") and a key. Each namespace has a key kind (uuid, slug,
 *   host, text); keys are validated and normalised before anything else (see
 *   tc_cache_normalize_key), so a hostile value never reaches the cache or the
 *   database.
 *
 * FAIL CLOSED
 *   When the cache cannot be trusted, every read returns TC_E_UNAVAILABLE and
 *   the caller must ask PostgreSQL itself: the daemon is not synced with the
 *   database (its listener is disconnected or catching up), its heartbeat is
 *   older than the bound it published in the file (the daemon is dead or
 *   stopped), or the file was replaced and the handle has not moved to the
 *   new one yet. The library never returns an entry that may be staler than
 *   that bound.
 *
 * RESTARTS THAT REPLACE THE FILE
 *   A daemon restarted with another capacity, slot size or namespace set
 *   renames a new file over the path and retires the old one. An open handle
 *   follows by itself: a read that finds its file retired or unavailable
 *   looks at the path (at most every 50 ms; a few system calls, never on a
 *   hit), and maps the file it finds there if it is a different file that
 *   passes every check tc_cache_open makes. Until then reads fail closed. The
 *   old mapping is released once no thread of the process can still be
 *   reading it (each read runs in a per-thread section; the switching thread
 *   never waits for a reader and no reader ever waits or locks). A handle
 *   keeps a few KiB of bookkeeping per file it has followed, until closed.
 *   The path is made absolute at open, so a later chdir() does not matter.
 *
 * THREADS
 *   A tc_cache handle may be used by any number of threads at once, except
 *   that tc_cache_close must not run concurrently with any other call on the
 *   same handle. A tc_value belongs to the caller and to one thread at a time.
 *
 * SIGNALS, LONGJMP, CANCELLATION
 *   No tc_* function is async-signal-safe: do not call one from a signal
 *   handler that may have interrupted a tc_* call. Do not leave a tc_* call
 *   by longjmp (or siglongjmp) from a signal handler, and do not cancel a
 *   thread asynchronously while it is inside one: each read marks its thread
 *   as reading the mapped file until it returns, and a thread that never
 *   returns keeps a replaced file mapped until the handle is closed.
 *
 * FORK
 *   The mapping is shared, so a handle opened before fork() keeps working in
 *   the child (pre-fork servers may open once in the parent); so does the
 *   recency segment's attachment, which fork() inherits. Parent and child
 *   each follow a replaced file on their own. Each process closes its own
 *   copy; closing in one process does not affect the other. fork() may be
 *   called while other threads use the handle: the library's fork handlers
 *   (pthread_atfork, installed by the first tc_cache_open) let fork() wait for
 *   the short bookkeeping steps other threads may be in (never for a lookup),
 *   so the child gets a consistent handle, and may start threads and use the
 *   handle at once. fork() must not be called from a signal handler that
 *   interrupted a tc_* call, nor while another thread is in tc_cache_close
 *   of a handle the child will use.
 *
 * STATUSES
 *   Functions return an int: zero or positive is a result, negative an error
 *   (TC_E_*). tc_strerror() describes any of them. A function that fails
 *   leaves its output arguments in an unspecified state unless it says
 *   otherwise.
 *
 * VERSIONS
 *   tc_version() is the library's version. The cache file has its own layout
 *   version; a file of a layout this library does not know is refused with
 *   TC_E_LAYOUT, never guessed at.
 */
#ifndef TENANTCACHE_TENANTCACHE_H_
#define TENANTCACHE_TENANTCACHE_H_

#include <stddef.h>
#include <stdint.h>

#if defined(TENANTCACHE_BUILDING) && defined(__GNUC__)
#define TC_EXPORT __attribute__((visibility("default")))
#else
#define TC_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define TC_VERSION_MAJOR 0
#define TC_VERSION_MINOR 1
#define TC_VERSION_PATCH 0

/* Statuses. */
enum {
  TC_FOUND = 0,     /* the key has a value; the tc_value holds it */
  TC_NOT_FOUND = 1, /* cached negative entry: the database has no such row */
  TC_MISS = 2,      /* not in the cache (or being rewritten); ask the daemon */

  TC_E_UNAVAILABLE = -1,  /* cache not trustworthy now: query the database */
  TC_E_INVALID_KEY = -2,  /* the key fails its namespace's key kind */
  TC_E_NO_NAMESPACE = -3, /* no such namespace in this cache */
  TC_E_LAYOUT = -4,       /* not a cache file, or a layout this library does not know */
  TC_E_IO = -5,           /* the file could not be opened or mapped, or is unsafe; errno says why */
  TC_E_INVALID_ARG = -6,  /* a NULL or out-of-range argument */
  TC_E_NO_FIELD = -7,     /* the value has no field of that name or index */
  TC_E_NOMEM = -8,        /* out of memory */
  TC_E_BUSY = -9,         /* the daemon's fill queue is full, or a command's rate limit */
  TC_E_TIMEOUT = -10,     /* the daemon did not answer in time */
  TC_E_DAEMON = -11       /* the daemon reported an error (a failed query) */
};

/* Namespace key kinds. */
enum { TC_KEY_UUID = 1, TC_KEY_SLUG = 2, TC_KEY_HOST = 3, TC_KEY_TEXT = 4 };

/* The longest normalised key of any kind, in bytes. */
#define TC_MAX_KEY_LEN 255

/* Where the packaged daemon creates its cache file ([cache].path's default),
 * and what tenantcachectl and the bindings open when given no path. The
 * packaged unit's RuntimeDirectory= creates /run/tenantcache; its
 * PrivateDevices= hides /dev/shm, so the default is not there. */
#define TC_DEFAULT_CACHE_PATH "/run/tenantcache/cache"

typedef struct tc_cache tc_cache;

/*
 * A namespace id, from tc_namespace(). Valid for the handle it came from, for
 * the handle's whole life: it always means the same namespace name, also after
 * the handle followed a replaced file whose namespaces are ordered
 * differently. If the file the handle reads now has no namespace of that name,
 * calls given the id return TC_E_NO_NAMESPACE (and start working again if a
 * later file has it). A name the handle has not seen before gets a new id,
 * never one that meant another name.
 */
typedef uint32_t tc_ns;

/*
 * A looked-up value: the tenant id and the namespace's named text fields.
 * Allocated by the caller (on the stack is fine) and filled by tc_cache_get.
 * Its members are private; read it with the tc_value_* functions. Strings it
 * yields point into the tc_value itself (field names into the tc_cache) and
 * are NUL-terminated; they stay valid until the tc_value is reused or the
 * tc_cache is closed.
 */
typedef struct tc_value {
  const void* priv_ns;
  uint32_t priv_len;
  uint32_t priv_status;
  uint64_t priv_reserved[6];
  unsigned char priv_data[4032];
} tc_value;

/*
 * Opens the cache file at `path` read-only and maps it.
 * On success returns 0 and stores a new handle in *out; close it with
 * tc_cache_close. Fails with TC_E_INVALID_ARG (NULL argument), TC_E_IO (the
 * file cannot be opened or mapped; errno is preserved), TC_E_LAYOUT (not a
 * cache file, truncated, or of an unknown layout) or TC_E_NOMEM. A file that
 * the daemon is not keeping synced opens fine; reads then report
 * TC_E_UNAVAILABLE.
 * Files another user could have planted or could replace are refused with
 * TC_E_IO and errno EPERM: a cache file writable by its group or by others,
 * or one whose directory is writable by anyone but its owner or is owned by
 * someone other than root or the file's owner (tenantcached never creates
 * files so). A symbolic link as the last component is refused with TC_E_IO
 * and errno ELOOP.
 * The daemon's recency segment (System V shared memory, see tenantcached's
 * documentation) is attached read-write when the caller may write it and it
 * belongs to the file's owner; otherwise reads still work but do not refresh
 * entries' idle timers.
 * Thread-safe. The handle survives fork(), and follows a file the daemon
 * puts at `path` in place of this one (see RESTARTS THAT REPLACE THE FILE).
 */
TC_EXPORT int tc_cache_open(const char* path, tc_cache** out);

/* Unmaps and frees the handle. NULL is ignored. Not concurrently with other
 * calls on the same handle. Never fails. */
TC_EXPORT void tc_cache_close(tc_cache* cache);

/*
 * Resolves a namespace name to its id (see tc_ns). Returns 0 and sets *out,
 * TC_E_NO_NAMESPACE when the file the handle reads has no such namespace, or
 * TC_E_INVALID_ARG. Thread-safe; no system call, except that a name not found
 * while the file is unavailable makes the handle look for a replacement
 * first.
 */
TC_EXPORT int tc_namespace(const tc_cache* cache, const char* name, tc_ns* out);

/* The number of namespace ids the handle has given out; ids are
 * 0..count-1. Ids of namespaces the current file lacks are included (their
 * reads answer TC_E_NO_NAMESPACE); a fresh handle numbers the file's
 * namespaces in the file's order. */
TC_EXPORT uint32_t tc_namespace_count(const tc_cache* cache);

/* A namespace id's name (owned by the handle, valid until it is closed) or
 * NULL for an id the handle never gave out. */
TC_EXPORT const char* tc_namespace_name(const tc_cache* cache, tc_ns ns);

/* A namespace's key kind (TC_KEY_*) in the current file, or
 * TC_E_NO_NAMESPACE. */
TC_EXPORT int tc_namespace_key_kind(const tc_cache* cache, tc_ns ns);

/*
 * Looks `key` (`key_len` bytes, need not be NUL-terminated) up in namespace
 * `ns`, reading shared memory only: no lock, no system call, no allocation,
 * never blocks. Returns
 *   TC_FOUND          *out holds the value;
 *   TC_NOT_FOUND      the database has no such row (a cached negative entry);
 *   TC_MISS           the cache does not hold the key;
 *   TC_E_UNAVAILABLE  the cache cannot be trusted now (see FAIL CLOSED);
 *   TC_E_INVALID_KEY  the key fails the namespace's key kind;
 *   TC_E_NO_NAMESPACE no such namespace id;
 *   TC_E_INVALID_ARG  a NULL cache, key or out.
 * *out holds a value only after TC_FOUND; after any other result the
 * tc_value_* accessors report that it holds none.
 * Thread-safe; fork-safe. A read that finds the file retired or unavailable
 * may map its replacement first (see RESTARTS THAT REPLACE THE FILE): a few
 * system calls, then the read is answered from the new file.
 */
TC_EXPORT int tc_cache_get(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len, tc_value* out);

/*
 * Validates and normalises `key` as namespace `ns` would, writing the
 * normalised key and a NUL to buf (which must hold TC_MAX_KEY_LEN + 1 bytes)
 * and its length to *out_len. Returns 0, TC_E_INVALID_KEY (with *why, if not
 * NULL, set to a static description), TC_E_NO_NAMESPACE or TC_E_INVALID_ARG.
 * Thread-safe.
 */
TC_EXPORT int tc_cache_normalize_key(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len,
                                     char* buf, size_t* out_len, const char** why);

/* The tenant id of a found value (*len its length). NULL if the value does not
 * hold TC_FOUND. */
TC_EXPORT const char* tc_value_tenant(const tc_value* value, size_t* len);

/* The normalised key of a found value. NULL if the value does not hold TC_FOUND. */
TC_EXPORT const char* tc_value_key(const tc_value* value, size_t* len);

/* The number of fields of a found value (0 if it does not hold TC_FOUND). */
TC_EXPORT size_t tc_value_field_count(const tc_value* value);

/*
 * Field `index` of a found value: its name in *name and its text in *text
 * (*len bytes). A SQL NULL gives *text == NULL and *len == 0. Returns 0,
 * TC_E_NO_FIELD (index out of range, the value does not hold TC_FOUND, or
 * this field's bytes are not well formed: each field is checked when it is
 * read, never past the value's data) or TC_E_INVALID_ARG. Any output pointer
 * may be NULL.
 */
TC_EXPORT int tc_value_field(const tc_value* value, size_t index, const char** name, const char** text,
                             size_t* len);

/* Field by name; as tc_value_field. */
TC_EXPORT int tc_value_get(const tc_value* value, const char* name, const char** text, size_t* len);

/*
 * Like tc_cache_get, and on TC_MISS asks the daemon over its control socket
 * (the path is published in the cache file), waiting at most `timeout_ms`
 * milliseconds. The daemon coalesces concurrent misses for a key from every
 * process into one database query and answers with the value, so *out is
 * filled without re-reading shared memory. Returns what tc_cache_get returns
 * (a hit costs the same), or after a miss: TC_FOUND, TC_NOT_FOUND,
 * TC_E_UNAVAILABLE (the daemon is not running or its socket refused us),
 * TC_E_BUSY (its fill queue is full), TC_E_TIMEOUT (no answer in time),
 * TC_E_DAEMON (the database query failed) or TC_E_INVALID_ARG.
 * Never blocks past the timeout. Thread-safe: concurrent calls use separate
 * connections, kept for reuse. Fork-safe: a child never reuses a connection
 * of its parent; it opens its own.
 */
TC_EXPORT int tc_cache_lookup(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len,
                              int timeout_ms, tc_value* out);

/* Asks the daemon to invalidate one key, one tenant's entries, or everything
 * (as the SQL functions do, but immediately and without a transaction).
 * A tenant id is the tenant column's text as PostgreSQL prints it; a
 * uuid-shaped id (32 bare hex digits, braced, any case) is normalised to the
 * canonical lower-case hyphenated form first, as keys of kind uuid are. An
 * empty tenant id, one with a control character or invalid UTF-8, or one
 * longer than any cached entry can hold is TC_E_INVALID_KEY.
 * Returns 0 once the daemon has applied it, or TC_E_UNAVAILABLE,
 * TC_E_TIMEOUT, TC_E_INVALID_KEY, TC_E_NO_NAMESPACE, TC_E_INVALID_ARG, or
 * TC_E_BUSY: the daemon's rate limit for these commands (they make every
 * worker of the host miss) was reached and nothing was applied; retry later.
 * Thread-safe and fork-safe as tc_cache_lookup. */
TC_EXPORT int tc_cache_invalidate(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len,
                                  int timeout_ms);
TC_EXPORT int tc_cache_invalidate_tenant(const tc_cache* cache, const char* tenant, size_t tenant_len,
                                         int timeout_ms);
TC_EXPORT int tc_cache_flush(const tc_cache* cache, int timeout_ms);

/* The daemon's statistics as a JSON object (see the README, "Operations"),
 * written NUL-terminated into buf (cap bytes). Returns its length, or
 * TC_E_UNAVAILABLE, TC_E_TIMEOUT, TC_E_INVALID_ARG (also when cap is too
 * small). Thread-safe and fork-safe as tc_cache_lookup. */
TC_EXPORT int tc_cache_daemon_stats(const tc_cache* cache, char* buf, size_t cap, int timeout_ms);

/* What the daemon publishes in the file header; see tc_cache_info. */
typedef struct tc_info {
  int32_t daemon_pid;
  int32_t synced;    /* 1 while the daemon is synced with the database */
  int32_t retired;   /* 1 once a new file replaced the one the handle reads and
                        the handle could not follow it (see RESTARTS) */
  int32_t available; /* 1 when reads may return entries right now */
  uint64_t epoch;
  uint64_t heartbeat_age_ns;
  uint64_t stale_after_ns; /* the fail-closed bound */
  uint64_t idle_timeout_ns;
  uint64_t entries;  /* slots in use */
  uint64_t slots;    /* slots in the file */
  uint64_t capacity; /* entries the daemon was configured for */
  uint64_t file_bytes;
  uint32_t slot_bytes;
  uint32_t layout_version;
  uint64_t daemon_start_unix_ns;
  char control_socket[108];
} tc_info;

/* Fills *out from the header of the file the handle reads, after following a
 * replacement as tc_cache_get does. Returns 0 or TC_E_INVALID_ARG.
 * Thread-safe; reads a clock, otherwise shared memory only while available. */
TC_EXPORT int tc_cache_info(const tc_cache* cache, tc_info* out);

/* This process's reads through one handle, counted in process memory (the
 * shared file is never written on the read path) and reported to the daemon
 * with the next request the handle sends it (at most once a second) and when
 * the handle is closed. The daemon sums every process's reports into its
 * hits, negative_hits and misses; its reporting_clients counts the processes
 * that reported and are still running (an exited one's reads stay in the
 * sums). */
typedef struct tc_stats {
  uint64_t hits;          /* TC_FOUND */
  uint64_t negative_hits; /* TC_NOT_FOUND */
  uint64_t misses;        /* TC_MISS */
  uint64_t unavailable;   /* TC_E_UNAVAILABLE */
} tc_stats;

/* Sums the handle's counters over all threads. Returns 0 or TC_E_INVALID_ARG.
 * Thread-safe. (A thread's first read through a handle allocates its
 * counters; later reads do not.) */
TC_EXPORT int tc_cache_stats(const tc_cache* cache, tc_stats* out);

/* A static English description of a status. Never NULL. */
TC_EXPORT const char* tc_strerror(int status);

/* TC_DEFAULT_CACHE_PATH, for bindings that cannot read a macro. Static. */
TC_EXPORT const char* tc_default_cache_path(void);

/*
 * What the daemon (or the library) said about the last request this thread
 * sent it: the call that asked the daemon (tc_cache_lookup after a miss,
 * tc_cache_invalidate, tc_cache_invalidate_tenant, tc_cache_flush,
 * tc_cache_daemon_stats) and failed. For TC_E_DAEMON it is the database's
 * or the daemon's message, e.g. "namespace user: ERROR: permission denied
 * for table user_accounts" or the FILE:LINE of a namespace whose query does
 * not return its fields; for TC_E_UNAVAILABLE, why the daemon could not be
 * reached. "" when there is none (a hit, a success, or a status with no more
 * to say). Never NULL. The text belongs to the library and stays valid until
 * the next such call on the same thread; copy it to keep it. Thread-safe
 * (each thread has its own) and fork-safe.
 */
TC_EXPORT const char* tc_last_error_detail(void);

/* The library version, "MAJOR.MINOR.PATCH". */
TC_EXPORT const char* tc_version(void);

/* The cache-file layout version this library reads. */
TC_EXPORT uint32_t tc_layout_version(void);

#ifdef __cplusplus
}
#endif

#endif /* TENANTCACHE_TENANTCACHE_H_ */

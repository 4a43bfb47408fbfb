//! The C ABI of libtenantcache, mirrored by hand from
//! `client/include/tenantcache/tenantcache.h` (no bindgen: no registry
//! crates). Read the header for each function's contract; the safe wrappers
//! in `lib.rs` cite it in their `// SAFETY:` comments.
//!
//! The test at the end of this file compares every constant, struct size,
//! alignment and field offset here with what a C program compiled against the
//! header prints (tests/rust/abi_probe.c, built by CMake), so the two cannot
//! drift apart unnoticed. Function signatures are checked by the linker only
//! by name: a changed parameter list must be changed here too.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_void};

pub const TC_FOUND: c_int = 0;
pub const TC_NOT_FOUND: c_int = 1;
pub const TC_MISS: c_int = 2;
pub const TC_E_UNAVAILABLE: c_int = -1;
pub const TC_E_INVALID_KEY: c_int = -2;
pub const TC_E_NO_NAMESPACE: c_int = -3;
pub const TC_E_LAYOUT: c_int = -4;
pub const TC_E_IO: c_int = -5;
pub const TC_E_INVALID_ARG: c_int = -6;
pub const TC_E_NO_FIELD: c_int = -7;
pub const TC_E_NOMEM: c_int = -8;
pub const TC_E_BUSY: c_int = -9;
pub const TC_E_TIMEOUT: c_int = -10;
pub const TC_E_DAEMON: c_int = -11;

pub const TC_KEY_UUID: c_int = 1;
pub const TC_KEY_SLUG: c_int = 2;
pub const TC_KEY_HOST: c_int = 3;
pub const TC_KEY_TEXT: c_int = 4;

pub const TC_MAX_KEY_LEN: usize = 255;

/// Opaque handle (`typedef struct tc_cache tc_cache`).
#[repr(C)]
pub struct tc_cache {
    _private: [u8; 0],
}

pub type tc_ns = u32;

#[repr(C)]
pub struct tc_value {
    pub priv_ns: *const c_void,
    pub priv_len: u32,
    pub priv_status: u32,
    pub priv_reserved: [u64; 6],
    pub priv_data: [u8; 4032],
}

#[repr(C)]
pub struct tc_info {
    pub daemon_pid: i32,
    pub synced: i32,
    pub retired: i32,
    pub available: i32,
    pub epoch: u64,
    pub heartbeat_age_ns: u64,
    pub stale_after_ns: u64,
    pub idle_timeout_ns: u64,
    pub entries: u64,
    pub slots: u64,
    pub capacity: u64,
    pub file_bytes: u64,
    pub slot_bytes: u32,
    pub layout_version: u32,
    pub daemon_start_unix_ns: u64,
    pub control_socket: [c_char; 108],
}

#[repr(C)]
pub struct tc_stats {
    pub hits: u64,
    pub negative_hits: u64,
    pub misses: u64,
    pub unavailable: u64,
}

extern "C" {
    pub fn tc_cache_open(path: *const c_char, out: *mut *mut tc_cache) -> c_int;
    pub fn tc_cache_close(cache: *mut tc_cache);
    pub fn tc_namespace(cache: *const tc_cache, name: *const c_char, out: *mut tc_ns) -> c_int;
    pub fn tc_namespace_name(cache: *const tc_cache, ns: tc_ns) -> *const c_char;
    pub fn tc_namespace_key_kind(cache: *const tc_cache, ns: tc_ns) -> c_int;
    pub fn tc_cache_get(
        cache: *const tc_cache,
        ns: tc_ns,
        key: *const c_char,
        key_len: usize,
        out: *mut tc_value,
    ) -> c_int;
    pub fn tc_cache_normalize_key(
        cache: *const tc_cache,
        ns: tc_ns,
        key: *const c_char,
        key_len: usize,
        buf: *mut c_char,
        out_len: *mut usize,
        why: *mut *const c_char,
    ) -> c_int;
    pub fn tc_value_tenant(value: *const tc_value, len: *mut usize) -> *const c_char;
    pub fn tc_value_key(value: *const tc_value, len: *mut usize) -> *const c_char;
    pub fn tc_value_field_count(value: *const tc_value) -> usize;
    pub fn tc_value_field(
        value: *const tc_value,
        index: usize,
        name: *mut *const c_char,
        text: *mut *const c_char,
        len: *mut usize,
    ) -> c_int;
    pub fn tc_value_get(
        value: *const tc_value,
        name: *const c_char,
        text: *mut *const c_char,
        len: *mut usize,
    ) -> c_int;
    pub fn tc_cache_lookup(
        cache: *const tc_cache,
        ns: tc_ns,
        key: *const c_char,
        key_len: usize,
        timeout_ms: c_int,
        out: *mut tc_value,
    ) -> c_int;
    pub fn tc_cache_invalidate(
        cache: *const tc_cache,
        ns: tc_ns,
        key: *const c_char,
        key_len: usize,
        timeout_ms: c_int,
    ) -> c_int;
    pub fn tc_cache_invalidate_tenant(
        cache: *const tc_cache,
        tenant: *const c_char,
        tenant_len: usize,
        timeout_ms: c_int,
    ) -> c_int;
    pub fn tc_cache_flush(cache: *const tc_cache, timeout_ms: c_int) -> c_int;
    pub fn tc_cache_daemon_stats(
        cache: *const tc_cache,
        buf: *mut c_char,
        cap: usize,
        timeout_ms: c_int,
    ) -> c_int;
    pub fn tc_cache_info(cache: *const tc_cache, out: *mut tc_info) -> c_int;
    pub fn tc_cache_stats(cache: *const tc_cache, out: *mut tc_stats) -> c_int;
    pub fn tc_strerror(status: c_int) -> *const c_char;
    pub fn tc_default_cache_path() -> *const c_char;
    pub fn tc_last_error_detail() -> *const c_char;
    pub fn tc_version() -> *const c_char;
    pub fn tc_layout_version() -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::mem::{align_of, size_of, MaybeUninit};
    use std::ptr::addr_of;

    // The byte offset of a field, without creating a reference to
    // uninitialised memory (offset_of! is newer than rust-version).
    macro_rules! offset {
        ($t:ty, $f:ident) => {{
            let v = MaybeUninit::<$t>::uninit();
            let base = v.as_ptr();
            // SAFETY: addr_of! computes the field's address inside the
            // allocation of `v` without reading or referencing it.
            let field = unsafe { addr_of!((*base).$f) };
            field as usize - base as usize
        }};
    }

    fn rust_side() -> BTreeMap<String, i64> {
        let mut m = BTreeMap::new();
        let mut put = |name: &str, v: i64| {
            assert!(
                m.insert(name.to_string(), v).is_none(),
                "{name} listed twice"
            );
        };
        for (name, v) in [
            ("TC_FOUND", TC_FOUND),
            ("TC_NOT_FOUND", TC_NOT_FOUND),
            ("TC_MISS", TC_MISS),
            ("TC_E_UNAVAILABLE", TC_E_UNAVAILABLE),
            ("TC_E_INVALID_KEY", TC_E_INVALID_KEY),
            ("TC_E_NO_NAMESPACE", TC_E_NO_NAMESPACE),
            ("TC_E_LAYOUT", TC_E_LAYOUT),
            ("TC_E_IO", TC_E_IO),
            ("TC_E_INVALID_ARG", TC_E_INVALID_ARG),
            ("TC_E_NO_FIELD", TC_E_NO_FIELD),
            ("TC_E_NOMEM", TC_E_NOMEM),
            ("TC_E_BUSY", TC_E_BUSY),
            ("TC_E_TIMEOUT", TC_E_TIMEOUT),
            ("TC_E_DAEMON", TC_E_DAEMON),
            ("TC_KEY_UUID", TC_KEY_UUID),
            ("TC_KEY_SLUG", TC_KEY_SLUG),
            ("TC_KEY_HOST", TC_KEY_HOST),
            ("TC_KEY_TEXT", TC_KEY_TEXT),
        ] {
            put(name, i64::from(v));
        }
        put("TC_MAX_KEY_LEN", TC_MAX_KEY_LEN as i64);
        put("sizeof(tc_ns)", size_of::<tc_ns>() as i64);
        put("sizeof(tc_value)", size_of::<tc_value>() as i64);
        put("alignof(tc_value)", align_of::<tc_value>() as i64);
        put(
            "offsetof(tc_value,priv_ns)",
            offset!(tc_value, priv_ns) as i64,
        );
        put(
            "offsetof(tc_value,priv_len)",
            offset!(tc_value, priv_len) as i64,
        );
        put(
            "offsetof(tc_value,priv_status)",
            offset!(tc_value, priv_status) as i64,
        );
        put(
            "offsetof(tc_value,priv_reserved)",
            offset!(tc_value, priv_reserved) as i64,
        );
        put(
            "offsetof(tc_value,priv_data)",
            offset!(tc_value, priv_data) as i64,
        );
        put("sizeof(tc_info)", size_of::<tc_info>() as i64);
        put("alignof(tc_info)", align_of::<tc_info>() as i64);
        put(
            "offsetof(tc_info,daemon_pid)",
            offset!(tc_info, daemon_pid) as i64,
        );
        put("offsetof(tc_info,synced)", offset!(tc_info, synced) as i64);
        put(
            "offsetof(tc_info,retired)",
            offset!(tc_info, retired) as i64,
        );
        put(
            "offsetof(tc_info,available)",
            offset!(tc_info, available) as i64,
        );
        put("offsetof(tc_info,epoch)", offset!(tc_info, epoch) as i64);
        put(
            "offsetof(tc_info,heartbeat_age_ns)",
            offset!(tc_info, heartbeat_age_ns) as i64,
        );
        put(
            "offsetof(tc_info,stale_after_ns)",
            offset!(tc_info, stale_after_ns) as i64,
        );
        put(
            "offsetof(tc_info,idle_timeout_ns)",
            offset!(tc_info, idle_timeout_ns) as i64,
        );
        put(
            "offsetof(tc_info,entries)",
            offset!(tc_info, entries) as i64,
        );
        put("offsetof(tc_info,slots)", offset!(tc_info, slots) as i64);
        put(
            "offsetof(tc_info,capacity)",
            offset!(tc_info, capacity) as i64,
        );
        put(
            "offsetof(tc_info,file_bytes)",
            offset!(tc_info, file_bytes) as i64,
        );
        put(
            "offsetof(tc_info,slot_bytes)",
            offset!(tc_info, slot_bytes) as i64,
        );
        put(
            "offsetof(tc_info,layout_version)",
            offset!(tc_info, layout_version) as i64,
        );
        put(
            "offsetof(tc_info,daemon_start_unix_ns)",
            offset!(tc_info, daemon_start_unix_ns) as i64,
        );
        put(
            "offsetof(tc_info,control_socket)",
            offset!(tc_info, control_socket) as i64,
        );
        put("sizeof(tc_stats)", size_of::<tc_stats>() as i64);
        put("alignof(tc_stats)", align_of::<tc_stats>() as i64);
        put("offsetof(tc_stats,hits)", offset!(tc_stats, hits) as i64);
        put(
            "offsetof(tc_stats,negative_hits)",
            offset!(tc_stats, negative_hits) as i64,
        );
        put(
            "offsetof(tc_stats,misses)",
            offset!(tc_stats, misses) as i64,
        );
        put(
            "offsetof(tc_stats,unavailable)",
            offset!(tc_stats, unavailable) as i64,
        );
        m
    }

    /// TC_ABI_PROBE names the C program (tests/rust/abi_probe.c) that prints
    /// the header's view, one `NAME VALUE` per line; tests/rust_test.cc sets it.
    #[test]
    fn sys_module_matches_the_c_header() {
        let probe = std::env::var("TC_ABI_PROBE").expect(
            "TC_ABI_PROBE is not set: run these tests through ctest (tests/rust_test.cc), which builds \
             tests/rust/abi_probe.c against tenantcache.h and passes its path",
        );
        let out = std::process::Command::new(&probe)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {probe}: {e}"));
        assert!(out.status.success(), "{probe} failed: {out:?}");
        let mut c_side = BTreeMap::new();
        for line in String::from_utf8(out.stdout)
            .expect("probe output is UTF-8")
            .lines()
        {
            let (name, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad probe line {line:?}"));
            let value: i64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad probe value in {line:?}"));
            c_side.insert(name.to_string(), value);
        }
        let rust = rust_side();
        let differences: Vec<String> = rust
            .keys()
            .chain(c_side.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| rust.get(*k) != c_side.get(*k))
            .map(|k| {
                format!(
                    "{k}: src/sys.rs {:?}, tenantcache.h {:?}",
                    rust.get(k),
                    c_side.get(k)
                )
            })
            .collect();
        assert!(
            differences.is_empty(),
            "the sys module drifted from the header:\n{}",
            differences.join("\n")
        );
    }
}

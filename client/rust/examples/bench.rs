//! The crate's hit latency beside the C API and a per-process `HashMap`, in
//! one process, on one cache file (packaging/bench.sh runs it and puts its
//! table into bench/RESULTS.md):
//!
//!     cargo run --release --example bench -- --cache PATH [--samples N] [--c-p50-ns NS]
//!
//! PATH is a cache file written by bench/make_cache (100k users, no daemon
//! needed for hits). Random user ids over the users resident in the file are
//! read, each followed by reading the role, from:
//! - the C API called directly (`tc_cache_get` + `tc_value_get`), the floor;
//! - the crate's `get_into` (a reused `Buffer`) and `get` (a boxed entry per
//!   call), + `Entry::field`;
//! - `std::collections::HashMap` behind `std::sync::RwLock` holding the same
//!   values (what a per-process cache costs at best; `moka` is not
//!   installable here), and unlocked.
//!
//! Per-lookup p50 / p99 (the timer's own cost subtracted) and single-thread
//! throughput (the same lookups untimed), as bench/compare_bench does.
use std::collections::HashMap;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::RwLock;
use std::time::Instant;

use tenantcache::{Buffer, Cache, Lookup};

// The C API as a C caller uses it, for the baseline only: the crate's own
// declarations are private. tc_value is 4096 bytes, 8-aligned
// (tenantcache.h; the crate's ABI test pins both).
#[repr(C, align(8))]
struct RawValue([u8; 4096]);
extern "C" {
    fn tc_cache_open(path: *const c_char, out: *mut *mut c_void) -> c_int;
    fn tc_cache_close(cache: *mut c_void);
    fn tc_namespace(cache: *const c_void, name: *const c_char, out: *mut u32) -> c_int;
    fn tc_cache_get(
        cache: *const c_void,
        ns: u32,
        key: *const c_char,
        len: usize,
        out: *mut RawValue,
    ) -> c_int;
    fn tc_value_get(
        value: *const RawValue,
        name: *const c_char,
        text: *mut *const c_char,
        len: *mut usize,
    ) -> c_int;
}

struct Row {
    tenant: String,
    role: String,
}

struct Figure {
    name: &'static str,
    p50: f64,
    p99: f64,
    ops: f64,
}

fn percentile(sorted: &[f64], pct: usize) -> f64 {
    sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
}

fn timer_overhead_ns() -> f64 {
    let mut v: Vec<f64> = (0..100_000)
        .map(|_| {
            let a = Instant::now();
            let b = Instant::now();
            (b - a).as_nanos() as f64
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    percentile(&v, 50)
}

// `op` returns something derived from the value, summed into a sink that is
// printed, so that nothing is optimised away.
fn measure(
    name: &'static str,
    keys: &[String],
    overhead: f64,
    mut op: impl FnMut(&str) -> usize,
) -> Figure {
    let mut sink = 0usize;
    // A whole untimed pass first: each reader's first touch of a page of its
    // own mapping (the C baseline maps the file separately) is a page fault,
    // not a lookup.
    for k in keys {
        sink += op(k);
    }
    let mut lat = Vec::with_capacity(keys.len());
    for k in keys {
        let a = Instant::now();
        sink += op(k);
        let b = Instant::now();
        lat.push(((b - a).as_nanos() as f64 - overhead).max(0.0));
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let start = Instant::now();
    for k in keys {
        sink += op(k);
    }
    let ops = keys.len() as f64 / start.elapsed().as_secs_f64();
    if sink == 42 {
        println!("<!-- {name}: {sink} -->");
    }
    Figure {
        name,
        p50: percentile(&lat, 50),
        p99: percentile(&lat, 99),
        ops,
    }
}

fn user(n: u32) -> String {
    format!("00000000-0001-4000-8000-{n:012x}")
}

fn main() {
    let mut path = None;
    let mut samples = 200_000usize;
    let mut c_p50_ns = 0.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--cache" => path = Some(value),
            "--samples" => {
                samples = value
                    .parse()
                    .unwrap_or_else(|_| usage("--samples needs a number"))
            }
            "--c-p50-ns" => {
                c_p50_ns = value
                    .parse()
                    .unwrap_or_else(|_| usage("--c-p50-ns needs a number"))
            }
            _ => usage(&format!("unknown option {arg}")),
        }
    }
    let path = path.unwrap_or_else(|| usage("--cache is required"));

    let cache = Cache::open(&path).unwrap_or_else(|e| fail(&e));
    let users = cache.namespace("user").unwrap_or_else(|e| fail(&e));
    let c_path = std::ffi::CString::new(path.clone()).expect("no NUL in the path");
    let mut c_cache: *mut c_void = std::ptr::null_mut();
    let mut c_ns = 0u32;
    // SAFETY: NUL-terminated strings and valid out places (tc_cache_open,
    // tc_namespace in tenantcache.h).
    unsafe {
        assert_eq!(
            tc_cache_open(c_path.as_ptr(), &mut c_cache),
            0,
            "tc_cache_open {path}"
        );
        assert_eq!(
            tc_namespace(c_cache, b"user\0".as_ptr().cast(), &mut c_ns),
            0
        );
    }

    // The users resident in the file, and the same values in a HashMap.
    let mut map = HashMap::new();
    for n in 1..=100_000u32 {
        let key = user(n);
        if let Ok(Lookup::Found(e)) = cache.get(&users, &key) {
            let row = Row {
                tenant: e.tenant().to_owned(),
                role: e.field("role").unwrap_or_default().to_owned(),
            };
            map.insert(key, row);
        }
    }
    if map.is_empty() {
        fail(&format!(
            "{path} holds no users (write it with bench/make_cache)"
        ));
    }
    let resident: Vec<String> = map.keys().cloned().collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64; // xorshift64: reproducible random keys
    let keys: Vec<String> = (0..samples)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            resident[(state % resident.len() as u64) as usize].clone()
        })
        .collect();
    let locked = RwLock::new(map);

    let overhead = timer_overhead_ns();
    let mut raw = Box::new(RawValue([0; 4096]));
    let mut buf = Buffer::new();
    let figures = [
        measure(
            "tenantcache C API (`tc_cache_get` + `tc_value_get`)",
            &keys,
            overhead,
            |k| {
                let mut text: *const c_char = std::ptr::null();
                let mut len = 0usize;
                // SAFETY: an open handle, k.len() readable bytes, a caller-owned
                // tc_value; the field name is NUL-terminated.
                unsafe {
                    if tc_cache_get(c_cache, c_ns, k.as_ptr().cast(), k.len(), &mut *raw) != 0 {
                        return 0;
                    }
                    tc_value_get(&*raw, b"role\0".as_ptr().cast(), &mut text, &mut len);
                }
                len
            },
        ),
        measure(
            "crate `get_into` (reused `Buffer`) + `field`",
            &keys,
            overhead,
            |k| match cache.get_into(&users, k, &mut buf) {
                Ok(Lookup::Found(e)) => e.field("role").map_or(0, str::len),
                _ => 0,
            },
        ),
        measure(
            "crate `get` (boxed entry per call) + `field`",
            &keys,
            overhead,
            |k| match cache.get(&users, k) {
                Ok(Lookup::Found(e)) => e.field("role").map_or(0, str::len),
                _ => 0,
            },
        ),
        measure("`HashMap` + `RwLock` (per process)", &keys, overhead, |k| {
            locked
                .read()
                .unwrap()
                .get(k)
                .map_or(0, |r| r.role.len() + r.tenant.len())
        }),
        measure("`HashMap`, unlocked (per process)", &keys, overhead, {
            let map = locked.read().unwrap();
            move |k| map.get(k).map_or(0, |r| r.role.len() + r.tenant.len())
        }),
    ];
    // SAFETY: opened above, closed once, no call on it runs any more.
    unsafe { tc_cache_close(c_cache) };

    let c = &figures[0];
    println!(
        "Rust {}, release build; {samples} random keys over the {} users resident in the file; the timer's own \
         cost ({overhead:.0} ns) subtracted. One process: the C API is called directly from Rust as the floor.\n",
        rustc_version(),
        resident.len()
    );
    println!("| reader | p50 | p99 | throughput (1 thread) | p50 ratio to the C API |");
    println!("|---|---:|---:|---:|---:|");
    for f in &figures {
        println!(
            "| {} | {:.0} ns | {:.0} ns | {:.2} M/s | {:.2}× |",
            f.name,
            f.p50,
            f.p99,
            f.ops / 1e6,
            f.p50 / c.p50
        );
    }
    println!();
    for f in &figures[1..3] {
        let ratio = f.p50 / c.p50;
        println!(
            "Target {}: {} hit p50 ≤ 1.1× the C API's: {ratio:.2}×.",
            if ratio <= 1.1 { "met" } else { "**missed**" },
            f.name.split(" (").next().unwrap_or(f.name)
        );
        println!();
    }
    if c_p50_ns > 0.0 {
        println!(
            "bench/compare_bench's C figure in the same run (another process, another cache filled through the \
             daemon): p50 {c_p50_ns:.0} ns."
        );
    }
}

// The compiler's version: packaging/bench.sh passes `rustc -V` in
// TC_RUSTC_VERSION (a program cannot ask the compiler that built it).
fn rustc_version() -> String {
    std::env::var("TC_RUSTC_VERSION").unwrap_or_else(|_| "(rustc version not given)".to_string())
}

fn usage(problem: &str) -> ! {
    eprintln!("bench: {problem}\nusage: bench --cache PATH [--samples N] [--c-p50-ns NS]");
    std::process::exit(2);
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("bench: {e}");
    std::process::exit(1);
}

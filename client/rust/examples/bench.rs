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
//! - the crate's `get_into` (a reused `Buffer`) and `get` (the entry
//!   returned on the stack), + `Entry::field`;
//! - `std::collections::HashMap` behind `std::sync::RwLock` holding the same
//!   values (what a per-process cache costs at best; `moka` is not
//!   installable here), and unlocked.
//!
//! Per-lookup p50 / p99 (the timer's own cost subtracted) and single-thread
//! throughput (the same lookups untimed), as bench/compare_bench does. The
//! readers are interleaved in blocks of keys (see `measure`), so that the
//! load of the shared machine, which changes by the second, weighs on each
//! alike and the ratios to the C API compare like with like.
use std::collections::HashMap;
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
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

#[derive(Clone)]
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

// One reader under measurement: `op` returns something derived from the
// value, summed into a sink that is printed, so that nothing is optimised
// away. Monomorphic per reader, so the timed loop holds nothing but `op`.
struct Reader<F> {
    op: F,
    lat: Vec<f64>,
    untimed: std::time::Duration,
}

trait Measured {
    // Reads `keys` once, untimed (warm-up) or timed per key, into the sink.
    fn pass(&mut self, keys: &[String], timed: bool, overhead: f64) -> usize;
    // Reads `keys` once, timing only the whole block (throughput).
    fn block(&mut self, keys: &[String]) -> usize;
    fn figure(&mut self, name: &'static str, count: usize) -> Figure;
}

impl<F: FnMut(&str) -> usize> Measured for Reader<F> {
    fn pass(&mut self, keys: &[String], timed: bool, overhead: f64) -> usize {
        let mut sink = 0usize;
        for k in keys {
            if timed {
                let a = Instant::now();
                sink += (self.op)(k);
                let b = Instant::now();
                self.lat
                    .push(((b - a).as_nanos() as f64 - overhead).max(0.0));
            } else {
                sink += (self.op)(k);
            }
        }
        sink
    }

    fn block(&mut self, keys: &[String]) -> usize {
        let start = Instant::now();
        let mut sink = 0usize;
        for k in keys {
            sink += (self.op)(k);
        }
        self.untimed += start.elapsed();
        sink
    }

    // The figures of the passes so far, and a clean slate for the next set.
    fn figure(&mut self, name: &'static str, count: usize) -> Figure {
        let mut lat = std::mem::take(&mut self.lat);
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let untimed = std::mem::replace(&mut self.untimed, std::time::Duration::ZERO);
        Figure {
            name,
            p50: percentile(&lat, 50),
            p99: percentile(&lat, 99),
            ops: count as f64 / untimed.as_secs_f64(),
        }
    }
}

fn reader<F: FnMut(&str) -> usize>(op: F) -> Reader<F> {
    Reader {
        op,
        lat: Vec::new(),
        untimed: std::time::Duration::ZERO,
    }
}

// Users of the second measurement, whose entries fit in the CPU's caches.
const HOT_USERS: usize = 1000;

// Keys per block of the interleaving: small enough that a change in the
// machine's load (it is shared) hits every reader alike, large enough that
// switching readers costs nothing measurable.
const BLOCK: usize = 256;

// Measures every reader on the same keys, interleaved: the keys are cut into
// blocks, and in round b reader r reads block (b + r) mod blocks, so each
// reader reads every key once per pass, no reader reads a block right after
// another one warmed it, and the readers take turns within microseconds.
// Three passes: warm-up (each reader's first touch of a page of its own
// mapping is a page fault, not a lookup; the C baseline maps the file
// separately), per-key latency, then throughput (blocks timed whole).
fn measure(
    keys: &[String],
    overhead: f64,
    readers: &mut [(&'static str, &mut dyn Measured)],
) -> Vec<Figure> {
    let blocks: Vec<&[String]> = keys.chunks(BLOCK).collect();
    let mut sink = 0usize;
    for phase in 0..3 {
        for b in 0..blocks.len() {
            for (r, (_, reader)) in readers.iter_mut().enumerate() {
                let block = blocks[(b + r) % blocks.len()];
                sink += match phase {
                    0 => reader.pass(block, false, overhead),
                    1 => reader.pass(block, true, overhead),
                    _ => reader.block(block),
                };
            }
        }
    }
    if sink == 42 {
        println!("<!-- sink {sink} -->");
    }
    readers
        .iter_mut()
        .map(|(name, r)| r.figure(name, keys.len()))
        .collect()
}

// Copies of the cache file beside it, removed when dropped. A copy keeps
// the file's permission bits, which tc_cache_open checks.
struct Copies {
    paths: Vec<PathBuf>,
}

impl Copies {
    fn of(path: &str, n: usize) -> Copies {
        let paths: Vec<PathBuf> = (1..=n)
            .map(|i| PathBuf::from(format!("{path}.reader-{i}")))
            .collect();
        for p in &paths {
            std::fs::copy(path, p)
                .unwrap_or_else(|e| fail(&format!("copy {path} to {}: {e}", p.display())));
        }
        Copies { paths }
    }
}

impl Drop for Copies {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
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

    // Each tenantcache reader reads its own copy of the file through its own
    // mapping: interleaved readers of one file would warm the caches and page
    // tables for each other (a reader reading a block another just read sees
    // its memory in the CPU's caches), which favours whichever reader follows
    // the other.
    let copies = Copies::of(&path, 2);
    let cache = Cache::open(&path).unwrap_or_else(|e| fail(&e));
    let users = cache.namespace("user").unwrap_or_else(|e| fail(&e));
    let into_cache = Cache::open(&copies.paths[0]).unwrap_or_else(|e| fail(&e));
    let into_users = into_cache.namespace("user").unwrap_or_else(|e| fail(&e));
    let c_path =
        std::ffi::CString::new(copies.paths[1].as_os_str().as_bytes()).expect("no NUL in the path");
    let mut c_cache: *mut c_void = std::ptr::null_mut();
    let mut c_ns = 0u32;
    // SAFETY: NUL-terminated strings and valid out places (tc_cache_open,
    // tc_namespace in tenantcache.h).
    unsafe {
        assert_eq!(
            tc_cache_open(c_path.as_ptr(), &mut c_cache),
            0,
            "tc_cache_open {}",
            copies.paths[1].display()
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
    // Sorted: a HashMap's order differs from run to run, the keys must not.
    let mut resident: Vec<String> = map.keys().cloned().collect();
    resident.sort();
    let mut state = 0x9e37_79b9_7f4a_7c15u64; // xorshift64: reproducible random keys
    let mut random_keys = |over: &[String]| -> Vec<String> {
        (0..samples)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                over[(state % over.len() as u64) as usize].clone()
            })
            .collect()
    };
    let keys = random_keys(&resident);
    // The same lookups over a few users, whose entries stay in the CPU's
    // caches: what is left of a read is the code, so the difference to the C
    // API is the wrapper's own cost in nanoseconds.
    let hot_keys = random_keys(&resident[..HOT_USERS.min(resident.len())]);
    let locked = RwLock::new(map);

    let overhead = timer_overhead_ns();
    let mut raw = Box::new(RawValue([0; 4096]));
    let mut buf = Buffer::new();
    let mut c_api = reader(|k: &str| {
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
    });
    let mut get_into = reader(
        |k: &str| match into_cache.get_into(&into_users, k, &mut buf) {
            Ok(Lookup::Found(e)) => e.field("role").map_or(0, str::len),
            _ => 0,
        },
    );
    let mut get = reader(|k: &str| match cache.get(&users, k) {
        Ok(Lookup::Found(e)) => e.field("role").map_or(0, str::len),
        _ => 0,
    });
    let mut rwlock = reader(|k: &str| {
        locked
            .read()
            .unwrap()
            .get(k)
            .map_or(0, |r| r.role.len() + r.tenant.len())
    });
    // A copy: the locked reader takes the lock while this one runs, and
    // std's RwLock does not promise that a thread may hold it twice.
    let unlocked_map = locked.read().unwrap().clone();
    let mut unlocked = reader(|k: &str| {
        unlocked_map
            .get(k)
            .map_or(0, |r| r.role.len() + r.tenant.len())
    });
    let mut readers: [(&'static str, &mut dyn Measured); 5] = [
        (
            "tenantcache C API (`tc_cache_get` + `tc_value_get`)",
            &mut c_api,
        ),
        (
            "crate `get_into` (reused `Buffer`) + `field`",
            &mut get_into,
        ),
        (
            "crate `get` (entry recycled per thread) + `field`",
            &mut get,
        ),
        ("`HashMap` + `RwLock` (per process)", &mut rwlock),
        ("`HashMap`, unlocked (per process)", &mut unlocked),
    ];
    let figures = measure(&keys, overhead, &mut readers);
    let hot = measure(&hot_keys, overhead, &mut readers);
    // SAFETY: opened above, closed once, no call on it runs any more.
    unsafe { tc_cache_close(c_cache) };

    println!(
        "Rust {}, release build; {samples} random keys over the {} users resident in the file; the timer's own \
         cost ({overhead:.0} ns) subtracted. One process, the readers interleaved in blocks of {BLOCK} keys, each \
         tenantcache reader on its own copy of the file: the C API is called directly from Rust as the floor.\n",
        rustc_version(),
        resident.len()
    );
    table(&figures);
    for f in &figures[1..3] {
        let ratio = f.p50 / figures[0].p50;
        println!(
            "Target {}: {} hit p50 ≤ 1.1× the C API's: {ratio:.2}×.",
            if ratio <= 1.1 { "met" } else { "**missed**" },
            f.name.split(" (").next().unwrap_or(f.name)
        );
        println!();
    }
    println!(
        "The same over {} users, whose entries stay in the CPU's caches: the read's own code, where the \
         wrapper's cost shows most.\n",
        HOT_USERS.min(resident.len())
    );
    table(&hot);
    if c_p50_ns > 0.0 {
        println!(
            "bench/compare_bench's C figure in the same run (another process, another cache filled through the \
             daemon): p50 {c_p50_ns:.0} ns."
        );
    }
}

fn table(figures: &[Figure]) {
    let c = &figures[0];
    println!(
        "| reader | p50 | p99 | throughput (1 thread) | p50 ratio to the C API | p50 − C API p50 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for f in figures {
        println!(
            "| {} | {:.0} ns | {:.0} ns | {:.2} M/s | {:.2}× | {:+.0} ns |",
            f.name,
            f.p50,
            f.p99,
            f.ops / 1e6,
            f.p50 / c.p50,
            f.p50 - c.p50
        );
    }
    println!();
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

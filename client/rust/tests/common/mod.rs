//! What the integration tests share. tests/rust_test.cc starts PostgreSQL
//! (the fleet example: 200 users over 10 tenants) and tenantcached, then runs
//! `cargo test` with:
//!   TC_CACHE_PATH  the daemon's cache file
//!   TC_PSQL        the psql binary, TC_CONNINFO the test database
#![allow(dead_code)] // each test binary uses its own part of this module

use std::process::Command;
use std::time::{Duration, Instant};

use tenantcache::Cache;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the real daemon and PostgreSQL; run them with \
             `ctest -R rust_test` (tests/rust_test.cc starts both and sets TC_CACHE_PATH, TC_PSQL, TC_CONNINFO)"
        )
    })
}

pub fn open() -> Cache {
    Cache::open(env("TC_CACHE_PATH")).expect("open the daemon's cache file")
}

/// Runs SQL on the test database (autocommit: it has committed on return).
pub fn psql(sql: &str) {
    let out = Command::new(env("TC_PSQL"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            &env("TC_CONNINFO"),
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql -c {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `cond` until it holds or `timeout` passes; its last result.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return cond();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn user(n: u32) -> String {
    format!("00000000-0001-4000-8000-{n:012x}")
}

pub fn tenant(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// The tenant of user n in fleet.generate(200, 10).
pub fn tenant_of(n: u32) -> u32 {
    1 + (n - 1) % 10
}

/// The role of user n in fleet.generate(): owner, captain, crew, crew, guest.
pub fn role_of(n: u32) -> &'static str {
    ["owner", "captain", "crew", "crew", "guest"][(n % 5) as usize]
}

pub const WAIT: Duration = Duration::from_secs(5);
pub const FILL: Duration = Duration::from_secs(5);

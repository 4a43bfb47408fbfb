//! A stopped daemon makes the crate fail closed within the published bound.
//! Its own test binary: cargo runs test binaries one after another, so no
//! other test reads while the daemon is stopped.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tenantcache::{Error, ErrorKind, Lookup};

fn signal(pid: i32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}");
}

// Resumes the daemon however the test ends, so the harness can stop it.
struct Resume(i32);
impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

#[test]
fn daemon_stopped_is_unavailable_within_the_bound() {
    let cache = open();
    let users = cache.namespace("user").unwrap();
    let key = user(42);
    assert!(
        cache.lookup(&users, &key, FILL).unwrap().found().is_some(),
        "user 42 fills"
    );
    let info = cache.info();
    assert!(info.available && info.synced, "{info:?}");
    assert!(info.daemon_pid > 0);
    let bound = info.stale_after;

    // SIGSTOP freezes the daemon's heartbeat without letting it mark the
    // file unavailable (as a hung or killed daemon would).
    signal(info.daemon_pid, "-STOP");
    let resume = Resume(info.daemon_pid);
    let stopped = Instant::now();
    let mut last_hit = None;
    let unavailable = wait_for(bound + Duration::from_secs(3), || {
        match cache.get(&users, &key) {
            Ok(Lookup::Found(_)) => {
                last_hit = Some(stopped.elapsed());
                false
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                true
            }
            Ok(other) => panic!("user 42 while the daemon is stopped: {other:?}"),
        }
    });
    let elapsed = stopped.elapsed();
    assert!(
        unavailable,
        "still answering {elapsed:?} after SIGSTOP (bound {bound:?})"
    );
    // The heartbeat was at most one interval old at SIGSTOP: the reads fail
    // closed no later than the bound after it (plus this loop's poll).
    assert!(
        elapsed <= bound + Duration::from_millis(100),
        "unavailable only after {elapsed:?} (bound {bound:?}; last hit at {last_hit:?})"
    );
    assert!(
        last_hit.map_or(true, |t| t <= bound),
        "a hit at {last_hit:?}, past the bound {bound:?}"
    );
    assert!(err_needs_database(cache.get(&users, &key)));
    // The error says why, in the words an operator needs.
    match cache.get(&users, &key) {
        Err(Error::Unavailable { detail }) => {
            assert!(
                detail.contains("heartbeat") && detail.contains(&info.daemon_pid.to_string()),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }

    // lookup() does not wait for a daemon that cannot answer, and says so.
    let asked = Instant::now();
    let err = cache
        .lookup(&users, user(43), Duration::from_millis(500))
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{err}"
    );
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "lookup took {:?}",
        asked.elapsed()
    );
    assert!(!cache.info().available);
    assert!(cache.stats().unavailable > 0);

    // The daemon comes back, and the test binaries after this one find it
    // synced: its first heartbeat tick after SIGCONT finds its listener's
    // last heartbeat older than the bound and reconnects it (the listener is
    // "deaf" as far as it can tell). A heartbeat stamped after the resume
    // shows that tick has run; the daemon answers lookups again.
    drop(resume);
    let resumed = Instant::now();
    assert!(
        wait_for(Duration::from_secs(10), || {
            let info = cache.info();
            info.available && info.synced && info.heartbeat_age < resumed.elapsed()
        }),
        "the cache did not come back after SIGCONT: {:?}",
        cache.info()
    );
    assert!(cache.get(&users, &key).is_ok());
    assert!(
        cache
            .lookup(&users, user(44), FILL)
            .unwrap()
            .found()
            .is_some(),
        "user 44 fills after SIGCONT"
    );
}

fn err_needs_database<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    match r {
        Err(e) => e.needs_database() && e.to_string().starts_with("tenantcache: "),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

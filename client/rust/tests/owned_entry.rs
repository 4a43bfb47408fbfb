//! `Cache::get` / `Cache::lookup` entries (`OwnedEntry`) against the real
//! tenantcached and PostgreSQL (see common/mod.rs): a loop of reads allocates
//! nothing, and the place a dropped entry leaves for the thread's next read
//! is never one that a live entry still uses. Users 170-199 are this file's.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::mpsc;

use common::*;
use tenantcache::{Cache, Lookup, Namespace, OwnedEntry};

// Counts this thread's allocations (tests run on threads of their own, so
// another test's allocations are not counted).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed to System unchanged; counting touches only a
// thread-local Cell with a const initialiser and no destructor, which
// neither allocates nor can be gone while the thread runs.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// Users `range` filled through the daemon, as (key, tenant, role).
fn filled(
    cache: &Cache,
    users: &Namespace,
    range: std::ops::RangeInclusive<u32>,
) -> Vec<(String, String, &'static str)> {
    range
        .map(|n| {
            let key = user(n);
            assert!(
                cache.lookup(users, &key, FILL).unwrap().found().is_some(),
                "the daemon fills user {n}"
            );
            (key, tenant(tenant_of(n)), role_of(n))
        })
        .collect()
}

fn assert_is(entry: &OwnedEntry<'_>, (key, tenant, role): &(String, String, &'static str)) {
    assert_eq!(entry.key(), key);
    assert_eq!(entry.tenant(), tenant);
    assert_eq!(entry.field("role"), Some(*role));
}

#[test]
fn a_loop_of_gets_allocates_nothing() {
    let cache = open();
    let users = cache.namespace("user").unwrap();
    let rows = filled(&cache, &users, 170..=174);
    // Never filled: a miss.
    let absent = user(199);
    // The first read gives the thread its place (one allocation).
    drop(cache.get(&users, &rows[0].0).unwrap());

    let before = allocations();
    for i in 0..1000 {
        let row = &rows[i % rows.len()];
        match cache.get(&users, &row.0).unwrap() {
            // An idle-timeout or epoch may drop an entry: a miss is no hit,
            // and allocates nothing either.
            Lookup::Found(entry) => assert_is(&entry, row),
            Lookup::Miss => {}
            Lookup::NotFound => panic!("user {} is in the database", row.0),
        }
        assert!(cache.get(&users, &absent).unwrap().is_miss());
    }
    assert_eq!(
        allocations() - before,
        0,
        "2000 reads through Cache::get allocated: an entry's place is not reused"
    );
}

#[test]
fn entries_alive_together_keep_their_own_values() {
    let cache = open();
    let users = cache.namespace("user").unwrap();
    let rows = filled(&cache, &users, 180..=189);

    // Ten entries alive at once, read after every other read: none may share
    // its place with another (the thread keeps one spare place only).
    let held: Vec<OwnedEntry<'_>> = rows
        .iter()
        .map(|row| cache.get(&users, &row.0).unwrap().found().expect("a hit"))
        .collect();
    for (entry, row) in held.iter().zip(&rows) {
        assert_is(entry, row);
    }
    // Dropping one leaves its place for the next read, which must not be the
    // place of any entry still held.
    let mut held = held;
    let first = held.remove(0);
    drop(first);
    let again = cache
        .get(&users, &rows[0].0)
        .unwrap()
        .found()
        .expect("a hit");
    assert_is(&again, &rows[0]);
    for (entry, row) in held.iter().zip(&rows[1..]) {
        assert_is(entry, row);
    }

    // An entry sent to another thread stays intact while this thread reads
    // on, and its drop there gives its place to that thread, not this one.
    let (to_reader, from_main) = mpsc::channel::<OwnedEntry<'_>>();
    let (to_main, from_reader) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let expected = &rows[9];
        s.spawn(move || {
            let entry = from_main.recv().unwrap();
            // The main thread reads other users meanwhile.
            from_main.recv().unwrap_err();
            assert_is(&entry, expected);
            drop(entry);
            to_main.send(()).unwrap();
        });
        to_reader
            .send(
                cache
                    .get(&users, &rows[9].0)
                    .unwrap()
                    .found()
                    .expect("a hit"),
            )
            .unwrap();
        for row in rows.iter().cycle().take(50) {
            let entry = cache.get(&users, &row.0).unwrap().found().expect("a hit");
            assert_is(&entry, row);
        }
        drop(to_reader);
        from_reader.recv().unwrap();
    });
    for (entry, row) in held.iter().zip(&rows[1..]) {
        assert_is(entry, row);
    }
    assert_is(&again, &rows[0]);
}

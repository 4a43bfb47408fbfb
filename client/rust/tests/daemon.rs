//! The crate against the real tenantcached and PostgreSQL (see common/mod.rs).
//! Each test uses its own users and tenants, since they run in parallel; the
//! one that flushes everything holds EXCLUSIVE for writing, the others for
//! reading (a flush would turn their expected hits into misses).
mod common;

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use common::*;
use tenantcache::{Buffer, Cache, ErrorKind, KeyKind, Lookup};

static EXCLUSIVE: RwLock<()> = RwLock::new(());

// A failed test must not fail the others through a poisoned lock.
fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn fill_then_hit() {
    let _shared = shared();
    let cache = open();
    let users = cache.namespace("user").unwrap();
    let key = user(1);
    assert!(
        cache.get(&users, &key).unwrap().is_miss(),
        "user 1 is cached before any fill"
    );
    let before = cache.stats();

    let filled = cache
        .lookup(&users, &key, FILL)
        .unwrap()
        .found()
        .expect("the daemon fills user 1");
    assert_eq!(filled.tenant(), tenant(tenant_of(1)));
    assert_eq!(filled.field("role"), Some(role_of(1)));
    assert_eq!(filled.field("tenant_code"), Some("Y00001"));
    assert_eq!(
        filled.field("tenant_url"),
        Some("https://yacht-1.fleet.example.com")
    );
    let names: Vec<&str> = filled.fields().map(|(name, _)| name).collect();
    assert_eq!(names, ["tenant_code", "tenant_url", "role"]);

    // The fill is in shared memory: a plain get hits, also for the key in
    // another case (keys are normalised before anything else).
    let hit = cache
        .get(&users, key.to_uppercase())
        .unwrap()
        .found()
        .expect("a hit after the fill");
    assert_eq!(hit.key(), key);
    assert_eq!(hit.tenant(), filled.tenant());
    assert_eq!(hit.field("role"), filled.field("role"));

    // The same through a reused buffer.
    let mut buf = Buffer::new();
    for _ in 0..3 {
        match cache.get_into(&users, &key, &mut buf).unwrap() {
            Lookup::Found(entry) => assert_eq!(entry.tenant(), tenant(tenant_of(1))),
            other => panic!("expected a hit through the buffer, got {other:?}"),
        }
    }
    let after = cache.stats();
    assert!(after.hits >= before.hits + 4, "{before:?} -> {after:?}");
    assert!(
        after.misses > before.misses,
        "the first get counted no miss: {before:?} -> {after:?}"
    );
}

#[test]
fn host_header_resolves_its_tenant() {
    let _shared = shared();
    let cache = open();
    let by_host = cache.namespace("tenant_by_host").unwrap();
    assert_eq!(cache.key_kind(&by_host).unwrap(), KeyKind::Host);
    assert_eq!(cache.namespace_name(&by_host).unwrap(), "tenant_by_host");
    // As a Host header may arrive: another case and a trailing dot.
    let header = "YACHT-2.Fleet.Example.COM.";
    assert_eq!(
        cache.normalize_key(&by_host, header).unwrap(),
        "yacht-2.fleet.example.com"
    );
    let entry = cache
        .lookup(&by_host, header, FILL)
        .unwrap()
        .found()
        .expect("yacht-2's host resolves");
    assert_eq!(entry.tenant(), tenant(2));
    assert_eq!(entry.field("yacht_code"), Some("Y00002"));
    assert!(cache
        .lookup(&by_host, "nobody.example.com", FILL)
        .unwrap()
        .is_not_found());
}

#[test]
fn role_update_is_seen_by_the_next_read() {
    let _shared = shared();
    let cache = open();
    let users = cache.namespace("user").unwrap();
    let key = user(3);
    let entry = cache
        .lookup(&users, &key, FILL)
        .unwrap()
        .found()
        .expect("user 3 fills");
    assert_eq!(entry.field("role"), Some("crew"));
    drop(entry);

    psql(&format!(
        "UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '{key}'"
    ));
    // The commit's notification invalidates the entry within milliseconds;
    // the old role is never read again.
    assert!(
        wait_for(WAIT, || match cache.get(&users, &key).unwrap() {
            Lookup::Found(e) => {
                assert_eq!(
                    e.field("role"),
                    Some("crew"),
                    "a hit between commit and invalidation"
                );
                false
            }
            _ => true,
        }),
        "user 3's entry was not invalidated by its UPDATE"
    );
    let entry = cache
        .lookup(&users, &key, FILL)
        .unwrap()
        .found()
        .expect("user 3 refills");
    assert_eq!(entry.field("role"), Some("guest"));
}

#[test]
fn tenant_invalidation_drops_every_entry_of_the_tenant() {
    let _shared = shared();
    let cache = open();
    let users = cache.namespace("user").unwrap();
    let tenants = cache.namespace("tenant").unwrap();
    // Users 5 and 15 belong to tenant 5; user 6 to tenant 6.
    let (a, b, other) = (user(5), user(15), user(6));
    let fill_all = || {
        for key in [&a, &b, &other] {
            assert!(
                cache.lookup(&users, key, FILL).unwrap().found().is_some(),
                "{key} fills"
            );
        }
        assert!(cache
            .lookup(&tenants, tenant(5), FILL)
            .unwrap()
            .found()
            .is_some());
    };
    fill_all();

    cache
        .invalidate_tenant(&tenant(5), Duration::from_secs(2))
        .unwrap();
    // Applied before invalidate_tenant returned, in every namespace.
    assert!(cache.get(&users, &a).unwrap().is_miss());
    assert!(cache.get(&users, &b).unwrap().is_miss());
    assert!(cache.get(&tenants, tenant(5)).unwrap().is_miss());
    assert!(
        cache.get(&users, &other).unwrap().found().is_some(),
        "tenant 6's user was dropped too"
    );

    // The same from the database: a committed registry change.
    fill_all();
    psql("UPDATE fleet.fleet_registry SET tenant_url = 'https://moved-5.example.com' WHERE id = fleet.tenant_id(5)");
    assert!(
        wait_for(WAIT, || cache.get(&users, &a).unwrap().is_miss()
            && cache.get(&users, &b).unwrap().is_miss()),
        "tenant 5's users were not invalidated by the registry UPDATE"
    );
    let entry = cache.lookup(&users, &b, FILL).unwrap().found().unwrap();
    assert_eq!(
        entry.field("tenant_url"),
        Some("https://moved-5.example.com")
    );
}

#[test]
fn negative_entry_then_insert() {
    let _shared = shared();
    let cache = open();
    let users = cache.namespace("user").unwrap();
    let key = user(5000);
    assert!(
        cache.lookup(&users, &key, FILL).unwrap().is_not_found(),
        "user 5000 does not exist yet"
    );
    // Cached: a plain read answers NotFound without the database.
    assert!(cache.get(&users, &key).unwrap().is_not_found());

    psql(&format!(
        "INSERT INTO fleet.user_accounts (id, yacht_id, email, role) \
         VALUES ('{key}', fleet.tenant_id(7), 'new@fleet.example.com', 'owner')"
    ));
    assert!(
        wait_for(WAIT, || !cache.get(&users, &key).unwrap().is_not_found()),
        "the INSERT did not invalidate the negative entry"
    );
    let entry = cache
        .lookup(&users, &key, FILL)
        .unwrap()
        .found()
        .expect("the new user is found");
    assert_eq!(entry.tenant(), tenant(7));
    assert_eq!(entry.field("role"), Some("owner"));
}

#[test]
fn invalidate_key_and_flush() {
    let _exclusive = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    let cache = open();
    let users = cache.namespace("user").unwrap();
    let key = user(9);
    assert!(cache.lookup(&users, &key, FILL).unwrap().found().is_some());
    cache
        .invalidate(&users, &key, Duration::from_secs(2))
        .unwrap();
    assert!(cache.get(&users, &key).unwrap().is_miss());
    assert!(cache.lookup(&users, &key, FILL).unwrap().found().is_some());
    cache.flush(Duration::from_secs(2)).unwrap();
    assert!(cache.get(&users, &key).unwrap().is_miss());
    let json = cache.daemon_stats(Duration::from_secs(2)).unwrap();
    assert!(json.starts_with('{') && json.contains("\"hits\""), "{json}");
}

#[test]
fn threads_share_one_cache() {
    let _shared = shared();
    let cache = open();
    let users = cache.namespace("user").unwrap();
    // Scoped threads borrow the Cache (Sync); each has its own Buffer.
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let (cache, users) = (&cache, &users);
            s.spawn(move || {
                let mut buf = Buffer::new();
                for i in 0..50u32 {
                    let n = 100 + (t * 50 + i) % 40;
                    match cache.lookup_into(users, user(n), FILL, &mut buf) {
                        Ok(Lookup::Found(e)) => {
                            assert_eq!(e.tenant(), tenant(tenant_of(n)));
                            assert_eq!(e.field("role"), Some(role_of(n)));
                        }
                        other => panic!("thread {t}: user {n}: {other:?}"),
                    }
                }
            });
        }
    });
    // An Arc<Cache> moves into 'static threads (Send); each reads an
    // OwnedEntry there and returns its tenant.
    let shared = Arc::new(open());
    let handles: Vec<_> = (0..4u32)
        .map(|t| {
            let cache = Arc::clone(&shared);
            std::thread::spawn(move || {
                let users = cache.namespace("user").unwrap();
                let e = cache
                    .lookup(&users, user(150 + t), FILL)
                    .unwrap()
                    .found()
                    .unwrap();
                e.tenant().to_owned()
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), tenant(tenant_of(150 + t as u32)));
    }
}

#[test]
fn invalid_keys_are_errors_that_say_why() {
    let _shared = shared();
    let cache = open();
    let users = cache.namespace("user").unwrap();
    let by_host = cache.namespace("tenant_by_host").unwrap();
    let by_slug = cache.namespace("tenant_by_slug").unwrap();
    let long = "a".repeat(300);
    let cases: [(&tenantcache::Namespace, &[u8]); 7] = [
        (&users, b"not-a-uuid"),
        (&users, b""),
        (&users, b"00000000-0001-4000-8000-00000000000g"),
        (&by_host, b"bad host.example.com"),
        (&by_host, long.as_bytes()),
        (&by_slug, b"UPPER_and_underscore"),
        (&by_slug, b"nul\0inside"),
    ];
    for (ns, key) in cases {
        for result in [
            cache.get(ns, key).map(|_| ()),
            cache.lookup(ns, key, FILL).map(|_| ()),
            cache.invalidate(ns, key, FILL),
        ] {
            let err =
                result.expect_err(&format!("{:?} was accepted", String::from_utf8_lossy(key)));
            assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
            assert!(
                !err.needs_database(),
                "an invalid key must not reach the database"
            );
            match &err {
                tenantcache::Error::InvalidKey { reason } => assert!(!reason.is_empty()),
                other => panic!("{other:?}"),
            }
            assert!(err.to_string().starts_with("tenantcache: "), "{err}");
        }
        assert_eq!(
            cache.normalize_key(ns, key).unwrap_err().kind(),
            ErrorKind::InvalidKey
        );
    }
    assert_eq!(
        cache.invalidate_tenant("", FILL).unwrap_err().kind(),
        ErrorKind::InvalidKey,
        "an empty tenant id"
    );
    assert_eq!(
        cache
            .invalidate_tenant("tenant\nwith a newline", FILL)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidKey
    );

    let err = cache.namespace("no_such_namespace").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoNamespace);
    assert!(err.to_string().contains("no_such_namespace"), "{err}");

    // A namespace of another Cache is refused, not read as another name.
    let other = open();
    let foreign = other.namespace("tenant").unwrap();
    let err = cache.get(&foreign, user(1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("another Cache"), "{err}");

    // An unknown field is an error (or a panic from field()), never None.
    let entry = cache
        .lookup(&users, user(2), FILL)
        .unwrap()
        .found()
        .unwrap();
    let err = entry.try_field("rol").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoField);
    assert!(err.to_string().contains("rol"), "{err}");
    let panic =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry.field("rol"))).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("\"rol\"") && message.contains("role"),
        "{message}"
    );
}

#[test]
fn a_cache_file_that_is_not_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("tc-rust-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.join("not-a-cache");
    std::fs::write(&file, vec![0u8; 8192]).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = Cache::open(&file).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Layout, "{err}");
    assert!(err.to_string().contains("not-a-cache"), "{err}");

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    match Cache::open(&file).unwrap_err() {
        tenantcache::Error::Io { source, .. } => {
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{source}"
            )
        }
        other => panic!("a world-writable file: {other:?}"),
    }
    let err = Cache::open("with\0nul").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    std::fs::remove_dir_all(&dir).unwrap();
}

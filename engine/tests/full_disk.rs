//! A store on a real, small, full filesystem (issue 12, item B): a tmpfs of
//! a few MiB mounted for the test (we run as root in CI). Where `mount` is
//! not allowed the tests say so on stdout and check nothing.
//!
//! - it opens on a filesystem too small for a default preallocation;
//! - a full disk is an error from the put, never a panic or a SIGBUS;
//! - `clear()` on a full disk frees space and caching resumes;
//! - `compact()` on a full disk reclaims what it can instead of failing.

mod common;

use std::time::Duration;

use common::{free_bytes, is_full, Tmpfs};
use picocache_engine::{Limits, Options, Store};

fn value(k: u64, len: usize) -> Vec<u8> {
    let mut v = format!("value of {k}/").into_bytes();
    v.resize(len, b'x');
    v
}

/// Puts distinct keys until the disk is full; returns how many went in.
fn fill(ns: &picocache_engine::Namespace, from: u64, len: usize) -> u64 {
    let mut k = from;
    loop {
        match ns.put(&k.to_le_bytes(), &value(k, len)) {
            Ok(_) => k += 1,
            Err(e) if is_full(&e) => return k - from,
            Err(e) => panic!("put {k}: {e} (wanted ENOSPC)"),
        }
        assert!(k - from < 1_000_000, "the disk never filled");
    }
}

fn opts() -> Options {
    Options::default().background_compaction(false)
}

#[test]
fn clear_on_a_full_disk_frees_space_and_caching_resumes() {
    for mib in [8u64, 16] {
        let Some(fs) = Tmpfs::mount(mib << 10, "the full-disk behaviour") else {
            return;
        };
        let store = Store::open(fs.path(), opts()).unwrap();
        let ns = store.namespace("full", Limits::default()).unwrap();
        let n = fill(&ns, 0, 10_000);
        assert!(n > 100, "{mib} MiB: only {n} puts fit");
        // Every acknowledged value reads back; the disk is full.
        for k in 0..n {
            assert_eq!(ns.get(&k.to_le_bytes()).unwrap(), Some(value(k, 10_000)));
        }
        let free = free_bytes(fs.dir.path());
        println!("{mib} MiB tmpfs: {n} puts of 10 KB fit, then ENOSPC ({free} bytes free)");
        // Less than a growth of the index (which doubles) is left.
        assert!(free < (mib << 20) / 8, "{free} bytes left free");

        // A removal and a clear() on the full disk succeed.
        assert!(ns.remove(&0u64.to_le_bytes()).unwrap());
        ns.clear().unwrap();
        assert_eq!(ns.get(&1u64.to_le_bytes()).unwrap(), None);
        let m = fill(&ns, 1_000_000, 10_000);
        println!("{mib} MiB tmpfs: after clear(), {m} puts fit again");
        assert!(m * 10 >= n * 9, "after clear only {m} of {n} puts fit");
        for k in 1_000_000..1_000_000 + m {
            assert_eq!(ns.get(&k.to_le_bytes()).unwrap(), Some(value(k, 10_000)));
        }
        let rep = store.verify().unwrap();
        assert!(rep.is_ok(), "{:?}", rep.problems);
        drop(ns);
        drop(store);
        // It reopens on the full disk, with its entries.
        let store = Store::open(fs.path(), opts()).unwrap();
        let ns = store.namespace("full", Limits::default()).unwrap();
        assert_eq!(
            ns.get(&1_000_000u64.to_le_bytes()).unwrap(),
            Some(value(1_000_000, 10_000))
        );
    }
}

#[test]
fn compact_on_a_full_disk_reclaims_what_it_can() {
    for mib in [8u64, 16] {
        let Some(fs) = Tmpfs::mount(mib << 10, "the full-disk behaviour") else {
            return;
        };
        let store = Store::open(fs.path(), opts()).unwrap();
        let keep = store.namespace("keep", Limits::default()).unwrap();
        let short = store
            .namespace(
                "short",
                Limits {
                    ttl: Some(Duration::from_secs(1)),
                    ..Limits::default()
                },
            )
            .unwrap();
        // Every segment: half entries that stay, half that expire. Entirely
        // dead segments too: a run of expiring entries only.
        let mut kept = 0u64;
        let mut k = 0u64;
        'fill: loop {
            for (ns, n) in [(&short, 30), (&keep, 1), (&short, 1)] {
                for _ in 0..n {
                    match ns.put(&k.to_le_bytes(), &value(k, 10_000)) {
                        Ok(_) => {}
                        Err(e) if is_full(&e) => break 'fill,
                        Err(e) => panic!("{e}"),
                    }
                    if std::ptr::eq(ns, &keep) {
                        kept += 1;
                    }
                    k += 1;
                }
            }
        }
        let free_full = free_bytes(fs.dir.path());
        println!(
            "{mib} MiB tmpfs: {k} puts, {kept} without a TTL, then ENOSPC ({free_full} bytes free)"
        );
        // Expiry writes no record: the disk stays full while the entries
        // become dead.
        std::thread::sleep(Duration::from_millis(1100));
        store.compact().unwrap();
        let free = free_bytes(fs.dir.path());
        let expired = (k - kept) * 10_000;
        println!(
            "{mib} MiB tmpfs: compact() on the full disk freed {} bytes ({expired} expired)",
            free - free_full
        );
        assert!(
            (free - free_full) * 10 >= expired * 8,
            "compact() freed {} of {expired} bytes",
            free - free_full
        );
        for k in 0..k {
            if let Some(v) = keep.get(&k.to_le_bytes()).unwrap() {
                assert_eq!(v, value(k, 10_000));
            }
        }
        assert_eq!(keep.stats().unwrap().entries, kept);
        let more = fill(&keep, 1_000_000, 10_000);
        println!("{mib} MiB tmpfs: then {more} more puts fit");
        assert!(more * 10_000 * 10 >= expired * 7);
        let rep = store.verify().unwrap();
        assert!(rep.is_ok(), "{:?}", rep.problems);
    }
}

#[test]
fn a_store_opens_on_a_tiny_filesystem() {
    // The smallest index (1,024 buckets, 768 entries) is 610 KiB; segments
    // shrink to 64 KiB and preallocation to what a write needs.
    for (kib, len, at_least) in [(1024u64, 1000usize, 200u64), (2048, 1000, 700)] {
        let Some(fs) = Tmpfs::mount(kib, "the full-disk behaviour") else {
            return;
        };
        let store = Store::open(fs.path(), opts()).unwrap();
        let ns = store.namespace("tiny", Limits::default()).unwrap();
        let n = fill(&ns, 0, len);
        println!("{kib} KiB tmpfs: opened; {n} puts of {len} bytes fit");
        assert!(
            n >= at_least,
            "only {n} puts of {len} bytes fit on {kib} KiB"
        );
        for k in 0..n {
            assert_eq!(ns.get(&k.to_le_bytes()).unwrap(), Some(value(k, len)));
        }
        drop(ns);
        drop(store);
        let store = Store::open(fs.path(), opts()).unwrap();
        let rep = store.verify().unwrap();
        assert!(rep.is_ok(), "{:?}", rep.problems);
    }
}

//! A durable put must survive a power loss that loses the index's pages
//! (issue 12, item D). With `Durability::PowerLoss`, `sync()` marks the index
//! `CLEAN_SYNCED`, and an index synced clean is trusted after a reboot. A put
//! after the sync returns once its record is `fdatasync`ed; if the power then
//! fails before any page of the index is written back, the index on disk is
//! the one of the sync: it says `CLEAN_SYNCED`, with the append offset of
//! the sync. Trusting it loses the acknowledged put, and the next put
//! overwrites its bytes in the log.
//!
//! The power loss is simulated by copying the index file after `sync()` and
//! putting the copy back after the put (no page of it was written back), then
//! opening with another boot id (the machine restarted).

use std::path::Path;

use picocache_engine::{Durability, Limits, Options, Store};

fn opts(boot: u128) -> Options {
    let mut o = Options::default()
        .durability(Durability::PowerLoss)
        .background_compaction(false);
    o = o.boot_id(boot);
    o
}

fn index_of(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("index")).unwrap()
}

#[test]
fn a_durable_put_survives_a_lost_index_writeback() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(1)).unwrap();
    let ns = store.namespace("d", Limits::default()).unwrap();
    ns.put(b"k1", b"v1").unwrap();
    store.sync().unwrap();
    let synced = index_of(dir.path());
    ns.put(b"k2", b"v2").unwrap(); // acknowledged: fdatasync'ed
    drop(ns);
    drop(store);
    // The power fails: no page of the index written since the sync reached
    // the disk.
    std::fs::write(dir.path().join("index"), &synced).unwrap();

    let store = Store::open(dir.path(), opts(2)).unwrap();
    let ns = store.namespace("d", Limits::default()).unwrap();
    assert_eq!(ns.get(b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        ns.get(b"k2").unwrap().as_deref(),
        Some(&b"v2"[..]),
        "the acknowledged durable put was lost"
    );
    ns.put(b"k3", b"v3").unwrap();
    // Nothing was overwritten in the log: a rebuild from it finds all three.
    store.rebuild_index().unwrap();
    for (k, v) in [(b"k1", b"v1"), (b"k2", b"v2"), (b"k3", b"v3")] {
        assert_eq!(ns.get(k).unwrap().as_deref(), Some(&v[..]));
    }
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn a_segment_added_after_the_sync_is_not_ignored() {
    // The same loss when the puts after the sync filled the active segment
    // and started a new one (which the synced index does not know).
    let dir = tempfile::tempdir().unwrap();
    let o = |b| opts(b).segment_size(4096);
    let store = Store::open(dir.path(), o(1)).unwrap();
    let ns = store.namespace("d", Limits::default()).unwrap();
    ns.put(b"k0", b"v0").unwrap();
    store.sync().unwrap();
    let synced = index_of(dir.path());
    let big = vec![7u8; 3000];
    for k in 1u8..=3 {
        ns.put(&[k], &big).unwrap();
    }
    drop(ns);
    drop(store);
    std::fs::write(dir.path().join("index"), &synced).unwrap();

    let store = Store::open(dir.path(), o(2)).unwrap();
    let ns = store.namespace("d", Limits::default()).unwrap();
    assert_eq!(ns.get(b"k0").unwrap().as_deref(), Some(&b"v0"[..]));
    for k in 1u8..=3 {
        let got = ns.get(&[k]).unwrap();
        assert!(
            got.as_ref() == Some(&big),
            "key {k}: got {:?} bytes, the acknowledged put had 3000",
            got.map(|v| v.len())
        );
    }
}

#[test]
fn an_index_synced_clean_is_still_trusted_after_a_reboot() {
    // Nothing happened after the sync: the index is used as it is (its hit
    // counters, which the log does not hold, survive the reboot).
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(1)).unwrap();
    let ns = store.namespace("d", Limits::default()).unwrap();
    ns.put(b"k1", b"v1").unwrap();
    assert!(ns.get(b"k1").unwrap().is_some());
    store.sync().unwrap();
    drop(ns);
    drop(store);
    let store = Store::open(dir.path(), opts(2)).unwrap();
    let ns = store.namespace("d", Limits::default()).unwrap();
    assert_eq!(ns.stats().unwrap().hits, 1, "the index was rebuilt");
    assert_eq!(ns.get(b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
}

/// The other half of a lost writeback: the kernel wrote back some pages of
/// the index changed after the sync, but not its header page, which still
/// says `CLEAN_SYNCED` (found by the power-loss points of `faults.rs` once
/// the fault layer could write back part of the index). Unsynced puts
/// (`Durability::Process`) leave nothing in the log after the power loss,
/// so the log is not ahead of the clean header, and the index was trusted
/// with entries, lists and counts of a later state: `verify` failed. Now
/// leaving `CLEAN_SYNCED` is made durable before the first change after a
/// sync, so the header on disk says `MUTATING` and the index is rebuilt.
#[test]
fn a_clean_header_is_never_trusted_beside_pages_written_back_later() {
    let dir = tempfile::tempdir().unwrap();
    let io = picocache_engine::FaultIo::new(None);
    let o = |boot| {
        let mut o = opts(boot)
            .durability(Durability::Process)
            .io(std::sync::Arc::new(io.clone()));
        o = o.boot_id(boot);
        o
    };
    {
        let store = Store::open(dir.path(), o(1)).unwrap();
        let ns = store.namespace("d", Limits::default()).unwrap();
        for k in 0..20u32 {
            ns.put(&k.to_le_bytes(), &[k as u8; 50]).unwrap();
        }
        store.sync().unwrap();
        for k in 0..40u32 {
            ns.put(&k.to_le_bytes(), &[k as u8 ^ 0xFF; 60]).unwrap();
        }
        ns.remove(&3u32.to_le_bytes()).unwrap();
    }
    // Unsynced log writes lost; every index page but the first (the
    // header) written back.
    let mut first = true;
    io.power_loss_keeping(&mut |is_index, _| is_index && !std::mem::take(&mut first))
        .unwrap();
    let store = Store::open(dir.path(), opts(2)).unwrap();
    let rep = store.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    let ns = store.namespace("d", Limits::default()).unwrap();
    for k in 0..40u32 {
        let got = ns.get(&k.to_le_bytes()).unwrap();
        let synced = (k < 20).then(|| vec![k as u8; 50]);
        assert_eq!(got, synced, "key {k}");
    }
}

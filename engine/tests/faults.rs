//! I/O faults: a crash at every write and sync point of small workloads
//! followed by a simulated power loss and reboot; full disks; fork.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use picocache_engine::{Durability, Error, FaultIo, Limits, Options, Store};

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Batch(Vec<(u8, u8)>),
    Remove(u8),
    Clear,
    Sync,
    Compact,
}

/// Small: puts, batches, removes, a clear, a sync.
fn workload() -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..12u8 {
        ops.push(Op::Put(i % 7, i));
        if i % 4 == 3 {
            ops.push(Op::Batch(vec![
                (i % 5, i + 100),
                ((i + 1) % 5, i + 101),
                (9, i),
            ]));
        }
        if i % 5 == 4 {
            ops.push(Op::Remove(i % 7));
        }
        if i == 6 {
            ops.push(Op::Sync);
        }
        if i == 9 {
            ops.push(Op::Clear);
        }
    }
    ops
}

/// With 4 KiB segments and 200-byte values: segment rolls and compactions
/// (which copy live records, sync, and delete the old segment).
fn compaction_workload() -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..40u8 {
        ops.push(Op::Put(i % 13, i));
        if i % 9 == 8 {
            ops.push(Op::Remove(i % 13));
        }
        if i % 10 == 9 {
            ops.push(Op::Compact);
        }
        if i == 25 {
            ops.push(Op::Batch(vec![(1, 201), (2, 202), (14, 203)]));
        }
    }
    ops
}

type Model = HashMap<u8, u8>;

fn apply(m: &mut Model, op: &Op) {
    match op {
        Op::Put(k, v) => {
            m.insert(*k, *v);
        }
        Op::Batch(items) => {
            for (k, v) in items {
                m.insert(*k, *v);
            }
        }
        Op::Remove(k) => {
            m.remove(k);
        }
        Op::Clear => m.clear(),
        Op::Sync | Op::Compact => {}
    }
}

fn value(k: u8, v: u8) -> Vec<u8> {
    let mut b = vec![k, v, k ^ v, 0xAB];
    b.resize(200, k.wrapping_mul(31) ^ v);
    b
}

fn run(ns: &picocache_engine::Namespace, store: &Store, op: &Op) -> picocache_engine::Result<()> {
    match op {
        Op::Put(k, v) => ns.put(&[*k], &value(*k, *v)).map(|_| ()),
        Op::Batch(items) => {
            let vals: Vec<_> = items.iter().map(|(k, v)| ([*k], value(*k, *v))).collect();
            let b: Vec<(&[u8], &[u8])> = vals.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            ns.put_batch(&b).map(|_| ())
        }
        Op::Remove(k) => ns.remove(&[*k]).map(|_| ()),
        Op::Clear => ns.clear(),
        Op::Sync => store.sync(),
        Op::Compact => store.compact(),
    }
}

fn read_all(dir: &std::path::Path) -> Model {
    let mut o = Options::default().background_compaction(false);
    o = o.boot_id(0xB007 ^ rand_boot()); // a different boot: the index is not trusted
    let s = Store::open(dir, o).unwrap();
    let rep = s.verify().unwrap();
    let ns = s.namespace("f", Limits::default()).unwrap();
    let mut m = Model::new();
    for k in 0..16u8 {
        if let Some(v) = ns.get(&[k]).unwrap() {
            assert_eq!(v.len(), 200, "malformed value for {k}: {v:?}");
            assert_eq!(v, value(k, v[1]), "wrong value for {k}");
            m.insert(k, v[1]);
        }
    }
    // Lost writes leave zeros, never damage: the recovered store is sound.
    assert!(rep.is_ok(), "verify after power loss: {:?}", rep.problems);
    m
}

fn rand_boot() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Crash at every I/O operation (the countdown), then a power loss over
/// every file, then reboot. Each crash point is tried three ways: no index
/// page changed since its last `msync` reached the disk, all of them did,
/// or every other one did (the kernel writes pages back in any order); in
/// each, every unsynced log write is lost, and the third also loses the
/// files that carry no state (`lock`, `leases`, `reserve`).
fn crash_at_every_point(durability: Durability, ops: Vec<Op>, segment_size: u64) -> (u64, u64) {
    // Count the operations of a clean run.
    let total = {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultIo::new(None);
        let o = Options::default()
            .background_compaction(false)
            .segment_size(segment_size)
            .durability(durability)
            .io(Arc::new(io.clone()));
        let s = Store::open(dir.path(), o).unwrap();
        let ns = s.namespace("f", Limits::default()).unwrap();
        for op in &ops {
            run(&ns, &s, op).unwrap();
        }
        io.ops()
    };
    let mut prefixes = vec![Model::new()];
    let mut m = Model::new();
    for op in &ops {
        apply(&mut m, op);
        prefixes.push(m.clone());
    }
    let mut checked = 0;
    for (countdown, writeback) in (0..=total).flat_map(|c| (0..3).map(move |w| (c, w))) {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultIo::new(Some(countdown));
        let o = Options::default()
            .background_compaction(false)
            .segment_size(segment_size)
            .durability(durability)
            .io(Arc::new(io.clone()));
        let mut acked = 0usize;
        if let Ok(s) = Store::open(dir.path(), o) {
            if let Ok(ns) = s.namespace("f", Limits::default()) {
                for op in &ops {
                    if run(&ns, &s, op).is_err() {
                        break;
                    }
                    acked += 1;
                }
            }
        }
        io.power_loss_keeping(&mut |is_index, n| match writeback {
            0 => false,
            1 => is_index,
            _ => is_index && n % 2 == 1,
        })
        .unwrap();
        if writeback == 2 {
            for f in ["lock", "leases", "reserve"] {
                let _ = std::fs::remove_file(dir.path().join(f));
            }
        }
        let got = read_all(dir.path());
        match durability {
            Durability::PowerLoss => {
                // Every acknowledged operation survived; at most the one in
                // flight may also have.
                let ok =
                    got == prefixes[acked] || (acked < ops.len() && got == prefixes[acked + 1]);
                assert!(
                    ok,
                    "countdown {countdown}, writeback {writeback}: acked {acked}: \
                     store {got:?}, expected {:?}",
                    prefixes[acked]
                );
            }
            _ => {
                // A valid earlier state: the state after some prefix.
                assert!(
                    prefixes[..=(acked + 1).min(ops.len())].contains(&got),
                    "countdown {countdown}, writeback {writeback}: store {got:?} is no prefix state"
                );
            }
        }
        checked += 1;
    }
    (total, checked)
}

const DEFAULT_SEGMENT: u64 = 64 << 20;

#[test]
fn power_loss_at_every_point_durable() {
    let (total, checked) = crash_at_every_point(Durability::PowerLoss, workload(), DEFAULT_SEGMENT);
    println!(
        "power loss (durable): {checked} power losses (3 per crash point) over {total} I/O operations; \
         every acknowledged write survived"
    );
}

#[test]
fn power_loss_at_every_point_default() {
    let (total, checked) = crash_at_every_point(Durability::Process, workload(), DEFAULT_SEGMENT);
    println!(
        "power loss (default): {checked} power losses (3 per crash point) over {total} I/O operations; \
         each state a prefix"
    );
}

#[test]
fn power_loss_during_compaction_durable() {
    let (total, checked) = crash_at_every_point(Durability::PowerLoss, compaction_workload(), 4096);
    println!(
        "power loss with compactions (durable): {checked} power losses (3 per crash point) over {total} I/O \
         operations; every acknowledged write survived"
    );
}

#[test]
fn power_loss_during_compaction_default() {
    let (total, checked) = crash_at_every_point(Durability::Process, compaction_workload(), 4096);
    println!(
        "power loss with compactions (default): {checked} power losses (3 per crash point) over {total} I/O \
         operations; each state a prefix"
    );
}

/// A full disk: puts fail with a storage-full error, nothing stored is lost,
/// and writes work again once space returns. Uses a real small tmpfs when the
/// machine allows mounting one, the fault layer otherwise.
#[test]
fn full_disk() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("full_disk: cannot mount a tmpfs here; using the fault-injecting layer (ENOSPC)");
        let dir = tempfile::tempdir().unwrap();
        let io = FaultIo::new(None).with_enospc();
        let s = Store::open(dir.path(), Options::default().io(Arc::new(io.clone()))).unwrap();
        let ns = s.namespace("f", Limits::default()).unwrap();
        ns.put(b"a", b"1").unwrap();
        io.set_countdown(Some(0));
        let e = ns.put(b"b", b"2").unwrap_err();
        assert!(e.is_storage_full(), "{e}");
        assert_eq!(ns.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        io.set_countdown(None);
        ns.put(b"b", b"2").unwrap();
        assert_eq!(ns.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let ballast = mnt.join("ballast");
    let dir = mnt.join("store");
    let s = Store::open(
        &dir,
        Options::default()
            .segment_size(1 << 20)
            .background_compaction(false),
    )
    .unwrap();
    let ns = s.namespace("f", Limits::default()).unwrap();
    std::fs::write(&ballast, vec![1u8; 4 << 20]).unwrap();
    let big = vec![7u8; 64 << 10];
    let mut stored = Vec::new();
    let err = loop {
        let k = (stored.len() as u32).to_le_bytes();
        match ns.put(&k, &big) {
            Ok(_) => stored.push(k),
            Err(e) => break e,
        }
        assert!(stored.len() < 10_000, "the disk never filled");
    };
    assert!(
        err.is_storage_full(),
        "expected a full-disk error, got {err}"
    );
    assert!(matches!(err, Error::Io(_)));
    for k in &stored {
        assert_eq!(
            ns.get(k).unwrap().as_deref(),
            Some(&big[..]),
            "lost a stored value"
        );
    }
    assert!(s.verify().unwrap().is_ok());
    std::fs::remove_file(&ballast).unwrap();
    ns.put(b"after", b"space returned").unwrap();
    assert_eq!(
        ns.get(b"after").unwrap().as_deref(),
        Some(&b"space returned"[..])
    );
    println!(
        "full disk: {} values stored before ENOSPC, all kept; writes resumed",
        stored.len()
    );
}

/// fork(): the parent's handle fails with `Error::Forked` in the child, which
/// can open the store again and use it; the parent keeps working.
#[test]
#[allow(unsafe_code)]
fn fork_child_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    let ns = s.namespace("f", Limits::default()).unwrap();
    ns.put(b"parent", b"1").unwrap();
    // SAFETY: the child only runs Rust code of this test on the forked copy
    // of this thread's state and leaves with `_exit`, never returning into the
    // test harness; the engine's atfork handler only bumps an atomic counter.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = (|| {
            if !matches!(ns.get(b"parent"), Err(Error::Forked)) {
                return 2;
            }
            let Ok(s2) = Store::open(dir.path(), Options::default().background_compaction(false))
            else {
                return 3;
            };
            let Ok(ns2) = s2.namespace("f", Limits::default()) else {
                return 4;
            };
            if ns2.get(b"parent").ok().flatten().as_deref() != Some(&b"1"[..]) {
                return 5;
            }
            if ns2.put(b"child", b"2").is_err() {
                return 6;
            }
            0
        })();
        // SAFETY: _exit ends the child without running the parent's atexit
        // handlers or destructors (which belong to the parent).
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child we forked; `status` is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child did not exit normally");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child step failed");
    assert_eq!(ns.get(b"child").unwrap().as_deref(), Some(&b"2"[..]));
    ns.put(b"parent2", b"3").unwrap();
}

/// An evicted entry's record is dropped by compaction, but an older record
/// of the same key in a segment not yet compacted survives; a rebuild of
/// the index from the log (after a crash or reboot) then returns that older
/// value. Found by the `ops_model` fuzz target (LRU mode).
#[test]
fn rebuild_after_eviction_and_compaction_returns_no_older_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Options::default().segment_size(4096);
    o = o.compaction_interval(std::time::Duration::from_millis(5));
    let s = Store::open(dir.path(), o).unwrap();
    let lru = s.namespace("lru", Limits::maxsize(Some(2))).unwrap();
    let fill = s.namespace("fill", Limits::default()).unwrap();
    lru.put(b"k", b"old").unwrap();
    // Live filler: segment 1 stays mostly live, so it is not compacted.
    let mut i = 0u32;
    while s.stats().unwrap().segments < 2 {
        fill.put(&i.to_le_bytes(), &[1u8; 100]).unwrap();
        i += 1;
    }
    lru.put(b"k", b"new").unwrap();
    lru.put(b"j", b"j").unwrap();
    lru.put(b"m", b"evicts k").unwrap();
    lru.remove(b"j").unwrap();
    // Overwrites: segment 2 ends up mostly dead and is compacted.
    while s.stats().unwrap().segments < 3 {
        fill.put(b"same", &[2u8; 100]).unwrap();
    }
    let before = s.stats().unwrap().compactions;
    while s.stats().unwrap().compactions == before {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(lru.get(b"k").unwrap(), None);
    s.rebuild_index().unwrap();
    let got = lru.get(b"k").unwrap();
    assert!(
        got.is_none() || got.as_deref() == Some(&b"new"[..]),
        "got {:?}",
        got.map(|v| String::from_utf8_lossy(&v).into_owned())
    );
}

/// A lease held across fork(): the child's copy of the `Lease` shares the
/// parent's open file description, so dropping it in the child must not
/// release the parent's lock; and a lease the parent takes, releases and
/// takes again (its description reused from a pool) still excludes others.
#[test]
#[allow(unsafe_code)]
fn lease_survives_its_copy_dropped_in_a_forked_child() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    let ns = s.namespace("l", Limits::default()).unwrap();
    for _ in 0..3 {
        let again = ns.lease(b"k", Duration::ZERO).unwrap();
        assert!(again.is_some(), "a released lease can be taken again");
    }
    let held = ns.lease(b"k", Duration::ZERO).unwrap().expect("lease");
    // SAFETY: as in `fork_child_reopens`: the child runs only this test's
    // Rust code and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(held);
        // SAFETY: ends the child without the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child we forked; `status` is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    // Another description (another thread, as another process would) must
    // still be refused while the parent holds the lease.
    let other = std::thread::scope(|sc| {
        sc.spawn(|| ns.lease(b"k", Duration::from_millis(50)).unwrap().is_some())
            .join()
            .unwrap()
    });
    assert!(!other, "the child's drop released the parent's lease");
    drop(held);
    assert!(ns.lease(b"k", Duration::ZERO).unwrap().is_some());
}

/// `lock` and `leases` carry no state (FORMAT.md, "Files"): a workload that
/// takes leases, compacts and syncs, in two processes' worth of handles,
/// never writes a byte to them, and `reserve` holds only zeros.
#[test]
fn stateless_files_are_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let o = || {
        Options::default()
            .background_compaction(false)
            .segment_size(4096)
    };
    let a = Store::open(dir.path(), o()).unwrap();
    let b = Store::open(dir.path(), o()).unwrap();
    let (na, nb) = (
        a.namespace("f", Limits::default()).unwrap(),
        b.namespace("f", Limits::maxsize(Some(8))).unwrap(),
    );
    for i in 0..200u32 {
        let lease = na.lease(&i.to_le_bytes(), Duration::from_secs(1)).unwrap();
        assert!(lease.is_some());
        na.put(&i.to_le_bytes(), &[7; 100]).unwrap();
        nb.put(&(i % 13).to_le_bytes(), &[9; 100]).unwrap();
        drop(lease);
        if i % 50 == 49 {
            a.compact().unwrap();
            b.sync().unwrap();
        }
    }
    for f in ["lock", "leases"] {
        assert_eq!(
            std::fs::metadata(dir.path().join(f)).unwrap().len(),
            0,
            "{f}"
        );
    }
    if let Ok(r) = std::fs::read(dir.path().join("reserve")) {
        assert!(r.iter().all(|&b| b == 0), "reserve holds data");
    }
}

/// A lost, emptied or shortened `lock`, `leases` or `reserve` (what a power
/// loss may leave of files created just before it) changes nothing: the
/// store opens with every synced entry, and the reserve is allocated again.
#[test]
fn stateless_files_lost_or_emptied_change_nothing() {
    for lost in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let o = || Options::default().background_compaction(false);
        {
            let s = Store::open(dir.path(), o()).unwrap();
            let ns = s.namespace("f", Limits::default()).unwrap();
            for k in 0..50u8 {
                ns.put(&[k], &value(k, k)).unwrap();
            }
            s.sync().unwrap();
        }
        let reserve_len = std::fs::metadata(dir.path().join("reserve")).map(|m| m.len());
        for f in ["lock", "leases", "reserve"] {
            let p = dir.path().join(f);
            if lost {
                let _ = std::fs::remove_file(p);
            } else {
                std::fs::write(p, b"").unwrap();
            }
        }
        let mut opts = o();
        opts = opts.boot_id(0xB007 ^ rand_boot());
        let s = Store::open(dir.path(), opts).unwrap();
        let ns = s.namespace("f", Limits::default()).unwrap();
        for k in 0..50u8 {
            assert_eq!(ns.get(&[k]).unwrap(), Some(value(k, k)));
        }
        let lease = ns.lease(&[1], Duration::from_secs(1)).unwrap();
        assert!(lease.is_some());
        assert!(s.verify().unwrap().is_ok());
        assert_eq!(
            std::fs::metadata(dir.path().join("reserve"))
                .map(|m| m.len())
                .ok(),
            reserve_len.ok(),
            "reserve not allocated again (lost: {lost})"
        );
    }
}

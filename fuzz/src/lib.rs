//! The logic of the fuzz targets, shared with `engine/tests/fuzz_corpus.rs`,
//! which runs it over the committed corpus as an ordinary test.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use picocache_engine::{Durability, FaultIo, Limits, Options, Store};

/// A scratch directory, on tmpfs when there is one (cheaper file churn).
fn scratch_dir() -> Option<tempfile::TempDir> {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .ok()
}

fn opts() -> Options {
    Options::default()
        .background_compaction(false)
        .segment_size(8 << 10)
}

/// Opens arbitrary bytes as a store and uses it: the bytes become the first
/// log segment (behind a valid segment header unless the first byte is odd,
/// so both the header checks and the record parser are reached) and, when
/// the second byte is odd, an index file cut from the same bytes.
pub fn open_bytes(data: &[u8]) {
    let Some(dir) = scratch_dir() else { return };
    let (flags, body) = match data {
        [a, b, rest @ ..] => ((*a, *b), rest),
        _ => ((0, 0), data),
    };
    let mut seg = Vec::new();
    if flags.0 & 1 == 0 {
        seg.extend_from_slice(&picocache_engine::format::encode_segment_header(1));
    }
    seg.extend_from_slice(body);
    if std::fs::write(dir.path().join("seg-00000001.log"), &seg).is_err() {
        return;
    }
    if flags.1 & 1 == 1 {
        let cut = body.len().min(flags.1 as usize * 64);
        let _ = std::fs::write(dir.path().join("index"), &body[..cut]);
    }
    let Ok(s) = Store::open(dir.path(), opts()) else {
        return;
    };
    let _ = s.verify();
    for name in s.namespace_names().unwrap_or_default() {
        if let Ok(Some(ns)) = s.existing_namespace(&name) {
            for k in 0..8u8 {
                let _ = ns.get(&[k]);
            }
            let _ = ns.keys();
            let _ = ns.put(b"fuzz", b"value");
            if let Ok(v) = ns.get(b"fuzz") {
                assert!(
                    v.is_none() || v.as_deref() == Some(&b"value"[..]),
                    "wrong value"
                );
            }
        }
    }
    let _ = s.compact();
    let _ = s.verify();
}

/// Runs an arbitrary sequence of operations against a model, with an I/O
/// fault injected after a countdown; then simulates a power loss and a
/// reboot, and checks that every value the store returns is one that was
/// written for its key, and (durable mode) that every acknowledged write
/// survived.
pub fn ops_model(data: &[u8]) {
    let [countdown, mode, ops @ ..] = data else {
        return;
    };
    let Some(dir) = scratch_dir() else { return };
    let io = FaultIo::new((*countdown != 255).then_some(*countdown as u64 * 3));
    let durable = mode & 1 == 1;
    let o = opts()
        .durability(if durable {
            Durability::PowerLoss
        } else {
            Durability::Process
        })
        .io(Arc::new(io.clone()));
    let mut model: HashMap<u8, Vec<u8>> = HashMap::new();
    let mut ever: HashMap<u8, HashSet<Vec<u8>>> = HashMap::new();
    // Keys the failed operation may have changed (all of them for a clear).
    let mut touched: Option<HashSet<u8>> = None;
    if let Ok(s) = Store::open(dir.path(), o) {
        if let Ok(ns) = s.namespace("m", Limits::default()) {
            let mut it = ops.chunks(2);
            for (n, c) in it.by_ref().enumerate() {
                let (op, k) = (c[0] % 8, c.get(1).copied().unwrap_or(0) % 16);
                let v = vec![k, n as u8, (n >> 8) as u8];
                ever.entry(k).or_default().insert(v.clone());
                let r = match op {
                    0..=2 => ns.put(&[k], &v).map(|_| {
                        model.insert(k, v.clone());
                    }),
                    3 => ns.get(&[k]).map(|got| {
                        assert_eq!(got.as_ref(), model.get(&k), "get before any fault");
                    }),
                    4 => ns.remove(&[k]).map(|_| {
                        model.remove(&k);
                    }),
                    5 => ns.clear().map(|_| model.clear()),
                    6 => s.compact(),
                    _ => s.sync(),
                };
                if r.is_err() {
                    touched = Some(match op {
                        0..=2 | 4 => HashSet::from([k]),
                        5 => (0..16).collect(),
                        _ => HashSet::new(),
                    });
                    break;
                }
            }
        }
    }
    let _ = io.power_loss();
    let mut o = opts();
    o.boot_id = Some(0xF0F0);
    let Ok(s) = Store::open(dir.path(), o) else {
        panic!("reopen after a crash failed")
    };
    let ns = s
        .namespace("m", Limits::default())
        .expect("namespace after a crash");
    for k in 0..16u8 {
        let got = ns.get(&[k]).expect("get after a crash");
        if let Some(v) = &got {
            assert!(
                ever.get(&k).is_some_and(|e| e.contains(v)),
                "key {k}: a value never written"
            );
        }
        // Durable mode: everything acknowledged before the fault survived,
        // except keys the failed operation itself may have changed.
        let in_doubt = touched.as_ref().is_some_and(|t| t.contains(&k));
        if durable && !in_doubt {
            assert_eq!(got.as_ref(), model.get(&k), "key {k}: durable state lost");
        }
    }
}

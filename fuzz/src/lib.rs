//! The logic of the fuzz targets, shared with `engine/tests/fuzz_corpus.rs`,
//! which runs it over the committed corpus as an ordinary test.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

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

fn golden_value(k: u8) -> Vec<u8> {
    vec![k ^ 0x5A; 8 + k as usize]
}

/// The files of a small valid store (namespace "g", keys 0..16 with
/// `golden_value`, key 3 removed), built once.
fn golden() -> &'static [(String, Vec<u8>)] {
    static GOLDEN: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let dir = scratch_dir().expect("a scratch directory");
        {
            let s = Store::open(dir.path(), opts()).expect("open the golden store");
            let ns = s.namespace("g", Limits::default()).expect("namespace");
            for k in 0..16u8 {
                ns.put(&[k], &golden_value(k)).expect("put");
            }
            ns.remove(&[3]).expect("remove");
            s.sync().expect("sync");
        }
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| {
                let e = e.expect("dir entry");
                let bytes = std::fs::read(e.path()).expect("read");
                (e.file_name().to_string_lossy().into_owned(), bytes)
            })
            .collect();
        files.sort();
        files
    })
}

/// Opens arbitrary bytes as a store and uses it. The second byte picks how:
/// - `% 4 == 0`: the rest becomes the first log segment (behind a valid
///   segment header unless the first byte is odd), no index;
/// - `% 4 == 1`: the same, plus an index file cut from the same bytes;
/// - `% 4 == 2`: a small valid store whose index is patched by the rest
///   (4-byte patches: 3-byte offset, xor mask);
/// - `% 4 == 3`: the same, patching the index and the segment alternately.
///
/// Must never panic, hang or fault; on the patched stores, every value
/// returned for a known key must be the value written for that key. (Damage
/// can lose records, so a lost removal may bring a key's value back, never
/// another key's value or damaged bytes.)
pub fn open_bytes(data: &[u8]) {
    let Some(dir) = scratch_dir() else { return };
    let (flags, body) = match data {
        [a, b, rest @ ..] => ((*a, *b), rest),
        _ => ((0, 0), data),
    };
    let patched = flags.1 % 4 >= 2;
    if patched {
        let mut files = golden().to_vec();
        for (i, p) in body.chunks_exact(4).enumerate() {
            let want_seg = flags.1 % 4 == 3 && i % 2 == 1;
            let Some(f) = files.iter_mut().find(|(n, _)| {
                if want_seg {
                    n.starts_with("seg-")
                } else {
                    n == "index"
                }
            }) else {
                continue;
            };
            let off = (p[0] as usize | (p[1] as usize) << 8 | (p[2] as usize) << 16) % f.1.len();
            f.1[off] ^= p[3];
        }
        for (name, bytes) in &files {
            if std::fs::write(dir.path().join(name), bytes).is_err() {
                return;
            }
        }
    } else {
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
    }
    let Ok(s) = Store::open(dir.path(), opts()) else {
        return;
    };
    let _ = s.verify();
    if patched {
        if let Ok(Some(ns)) = s.existing_namespace("g") {
            for k in 0..16u8 {
                // Key 3 was removed, but its removal record may be the
                // damaged one (indistinguishable from a torn last write), so
                // it may come back: only ever with the value it once had.
                if let Ok(Some(v)) = ns.get(&[k]) {
                    assert_eq!(v, golden_value(k), "wrong value for key {k}");
                }
            }
        }
    }
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
            let _ = ns.remove(&[1]);
        }
    }
    let _ = s.compact();
    let _ = s.verify();
}

/// What a simulated power loss leaves of the index and the unsynced log
/// (the third byte of an `ops_model` input).
#[derive(Clone, Copy, Debug)]
struct Loss(u8);

impl Loss {
    /// Bits 0-1: which index pages changed since their last `msync` reached
    /// the disk: 0 none, 1 all, 2 and 3 a mix (picked per page by the bits
    /// of the whole input's hash).
    fn written_back(self, n: u64, seed: u64) -> bool {
        match self.0 & 3 {
            0 => false,
            1 => true,
            _ => (seed.rotate_left(n as u32 % 64) ^ n.wrapping_mul(0x9E37_79B9)) & 1 == 1,
        }
    }
    /// Bit 2: the index file is lost altogether (deleted after the crash).
    fn index_lost(self) -> bool {
        self.0 & 4 != 0
    }
    /// Bit 3: the index is stale: put back as it was after the first
    /// successful `sync` (an older index that was synced clean).
    fn index_stale(self) -> bool {
        self.0 & 8 != 0
    }
    /// Bit 4: unsynced log writes may also have reached the disk (each
    /// picked like the index pages), not only been lost.
    fn log_written_back(self) -> bool {
        self.0 & 16 != 0
    }
}

/// Runs an arbitrary sequence of operations against a model, with an I/O
/// fault injected after a countdown; then simulates a power loss (losing
/// unsynced index pages and log writes, or some of them; or the whole
/// index; or putting back a stale one) and a reboot, and checks that every
/// value the store returns is one that was written for its key, that every
/// write made durable before the crash survived (each acknowledged write in
/// `Durability::PowerLoss`, everything before a successful `sync` in
/// `Durability::Process`), and that nothing removed or cleared durably
/// comes back.
///
/// Input: `[countdown, mode, loss, ops...]`; `mode` bit 0 picks durability,
/// bit 1 an LRU namespace (size from bits 2..); `loss` is [`Loss`]; each op
/// is two bytes (operation, key).
pub fn ops_model(data: &[u8]) {
    let [countdown, mode, loss, ops @ ..] = data else {
        return;
    };
    let loss = Loss(*loss);
    let seed = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
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
    // Mode bit 1: an LRU namespace of 3 to 8 entries, else unlimited.
    let maxsize = (mode & 2 == 2).then_some(3 + (mode >> 2) as usize % 6);
    let limits = Limits::maxsize(maxsize.map(|m| m as u64));
    // What the namespace holds (with LRU eviction), most recent use first...
    let mut model: HashMap<u8, Vec<u8>> = HashMap::new();
    let mut order: Vec<u8> = Vec::new();
    let mut ever: HashMap<u8, HashSet<Vec<u8>>> = HashMap::new();
    // The last value acknowledged per key, evicted or not (gone once removed
    // or cleared).
    let mut latest: HashMap<u8, Vec<u8>> = HashMap::new();
    // Keys the failed operation may have changed (all of them for a clear).
    let mut touched: Option<HashSet<u8>> = None;
    // Durability::Process: the state at the last successful sync, and the
    // keys changed since (whose state after a power loss is either).
    let mut synced: HashMap<u8, Vec<u8>> = HashMap::new();
    let mut since_sync: HashSet<u8> = HashSet::new();
    // The index file as the first successful sync left it.
    let mut stale: Option<Vec<u8>> = None;
    if let Ok(s) = Store::open(dir.path(), o) {
        if let Ok(ns) = s.namespace("m", limits) {
            let mut it = ops.chunks(2);
            for (n, c) in it.by_ref().enumerate() {
                let (op, k) = (c[0] % 8, c.get(1).copied().unwrap_or(0) % 16);
                let v = vec![k, n as u8, (n >> 8) as u8];
                ever.entry(k).or_default().insert(v.clone());
                let r = match op {
                    0..=2 => ns.put(&[k], &v).map(|_| {
                        latest.insert(k, v.clone());
                        model.insert(k, v.clone());
                        order.retain(|x| *x != k);
                        order.insert(0, k);
                        while maxsize.is_some_and(|m| order.len() > m) {
                            if let Some(old) = order.pop() {
                                model.remove(&old);
                            }
                        }
                    }),
                    3 => ns.get(&[k]).map(|got| {
                        assert_eq!(got.as_ref(), model.get(&k), "get before any fault");
                        if got.is_some() {
                            order.retain(|x| *x != k);
                            order.insert(0, k);
                        }
                    }),
                    4 => ns.remove(&[k]).map(|_| {
                        latest.remove(&k);
                        model.remove(&k);
                        order.retain(|x| *x != k);
                    }),
                    5 => ns.clear().map(|_| {
                        latest.clear();
                        model.clear();
                        order.clear();
                    }),
                    6 => s.compact(),
                    _ => s.sync().map(|_| {
                        synced = model.clone();
                        since_sync.clear();
                        if stale.is_none() {
                            stale = std::fs::read(dir.path().join("index")).ok();
                        }
                    }),
                };
                match op {
                    0..=2 | 4 => {
                        since_sync.insert(k);
                    }
                    5 => since_sync.extend(0..16),
                    _ => {}
                }
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
    let _ = io.power_loss_keeping(&mut |is_index, n| {
        (is_index || loss.log_written_back()) && loss.written_back(n, seed)
    });
    let index = dir.path().join("index");
    if loss.index_lost() {
        let _ = std::fs::remove_file(&index);
    } else if let Some(old) = stale.as_ref().filter(|_| loss.index_stale()) {
        let _ = std::fs::write(&index, old);
    }
    let mut o = opts();
    o = o.boot_id(0xF0F0);
    let Ok(s) = Store::open(dir.path(), o) else {
        panic!("reopen after a crash failed")
    };
    // Lost or partly written-back index pages, a lost or stale index: none
    // of it may leave a store that fails its checks. (Log writes written
    // back out of order may leave holes of zeros, which verify reports.)
    if !loss.log_written_back() {
        let rep = s.verify().expect("verify after a crash");
        assert!(rep.is_ok(), "verify after a crash: {:?}", rep.problems);
    }
    let ns = s.namespace("m", limits).expect("namespace after a crash");
    if let Some(m) = maxsize {
        assert!(
            ns.stats().expect("stats").entries <= m as u64,
            "over maxsize"
        );
    }
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
            // With LRU eviction the rebuilt order may differ (recency is
            // not logged, so the rebuild may keep other entries than the
            // ones evicted before the crash), but a key holds nothing or
            // its last value: never an older one, never a removed one.
            if maxsize.is_none() {
                assert_eq!(got.as_ref(), model.get(&k), "key {k}: durable state lost");
            } else if let Some(v) = &got {
                assert_eq!(Some(v), latest.get(&k), "key {k}: not its last value");
            }
        }
        // Default mode: a key nobody changed since the last sync holds what
        // it held then (LRU namespaces: eviction may have dropped it).
        if !durable && maxsize.is_none() && !since_sync.contains(&k) {
            assert_eq!(got.as_ref(), synced.get(&k), "key {k}: synced state lost");
        }
    }
}

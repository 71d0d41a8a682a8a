//! Prototype evidence for the format-2 read path (FORMAT.md, "Version 2
//! (specified, not yet built)"): the proposed **base file** (an immutable,
//! hash-bucketed file of inline cells) built for `PICOCACHE_BENCH_N` entries
//! (default 1,000,000) of 16-byte keys and 100-byte values, read warm beside a
//! `std` `HashMap`, LMDB and a model of the version-1 read path, in one run,
//! with the same keys in the same order; and the bytes per entry of the
//! layout.
//!
//! Every reader does what a real one would: the process's index slot (a read
//! lock), the index's `retired` word before and after, the base id (the
//! generation of the base a process mapped), the probe of the mutable tail's
//! bucket array (which shadows the base), the copy of the cell out of the map
//! into a scratch buffer, the crc of the copy, the namespace and full key
//! comparison, the namespace's `CLEAR` sequence number against the base's, the
//! bucket's dead-cell word, and the hit counter. The files are real files on
//! the store's filesystem, mapped shared (4 KiB pages), written through the
//! page cache and touched once before the timed rounds.
//!
//! The rows vary one thing at a time: the checksum (crc32 or xxh3), the
//! reader's slot and hit counting (a read lock and a `fetch_add` per hit, as
//! the engine does today, or a generation word and per-thread counts), the
//! fill and bucket size, and whether each bucket's cells are stored in
//! fingerprint order so that the lines of the likely cell are prefetched
//! while the directory is read. Two "floor" rows time the memory accesses
//! alone.
//!
//! Run: `cargo run --release -p picocache-benches --bin v2_layout`
//! (`PICOCACHE_BENCH_N=100000` for a quick run; `TMPDIR` picks the
//! filesystem; `PICOCACHE_V2_PROFILE=1` runs only the version-2 reader, for
//! `perf record`).

use std::collections::HashMap;
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Instant;

use heed::types::Bytes;
use picocache_benches::{bench_n, key, lmdb, value, Rng};
use xxhash_rust::xxh3::xxh3_64_with_seed;

const ACQ: Ordering = Ordering::Acquire;
const NS: u32 = 1;
/// Timed gets per round, and rounds per reader (the median is reported).
const GETS: u64 = 2_000_000;
const ROUNDS: usize = 7;

/// The fork generation a handle checks at every operation (engine/src/sys.rs).
static FORK_GEN: AtomicU64 = AtomicU64::new(0);

/// The per-get work outside the map that a lookup of the engine does and a
/// version-2 lookup keeps: the fork check, the namespace row's name hash
/// against the handle's, and the coarse clock for the namespace's last use
/// (read at every lookup, as today, or, with `sparse`, at one lookup in
/// [`CLOCK_EVERY`] per thread: the last use has a granularity of 60 s).
#[inline]
fn fixed_work(idx: &Words, sparse: bool) -> bool {
    let read_clock = !sparse
        || CALLS.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            n % CLOCK_EVERY == 0
        });
    if read_clock {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the call.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
        let last_used = idx.w(NS_LAST_USED);
        if ts.tv_sec as u64 > last_used.load(Ordering::Relaxed) + 60 {
            last_used.fetch_max(ts.tv_sec as u64, Ordering::Relaxed);
        }
    }
    FORK_GEN.load(Ordering::Relaxed) == 0 && idx.w(NS_NAME_HASH).load(ACQ) == NAME_HASH
}

const CLOCK_EVERY: u64 = 256;

thread_local! {
    static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The directory slots among `fps` (at most 64) holding fingerprint `fp`,
/// as bits, eight slots per word compared at once.
#[inline]
fn fp_matches(fps: &[u8], fp: u8) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut bits = 0u64;
    for (c, chunk) in fps.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        let x = u64::from_le_bytes(w) ^ (fp as u64 * LO);
        let mut z = x.wrapping_sub(LO) & !x & HI;
        while z != 0 {
            let i = c * 8 + (z.trailing_zeros() / 8) as usize;
            if i < fps.len() && fps[i] == fp {
                bits |= 1 << i;
            }
            z &= z - 1;
        }
    }
    bits
}

/// How a reader holds the index it reads, and counts its hits.
enum Slot {
    /// As the engine does today: a read lock on the process's index slot
    /// for the lookup, and a `fetch_add` on the namespace row per hit (two
    /// locked instructions and one more: each waits for every earlier load,
    /// so successive lookups cannot overlap their cache misses).
    Locked(RwLock<u64>),
    /// Version 2: the slot's generation word, loaded with acquire (a plain
    /// load on x86), and hits counted per thread, added to the row with one
    /// `fetch_add` every [`HIT_BATCH`] hits.
    Free(AtomicU64),
}

const HIT_BATCH: u64 = 64;

thread_local! {
    static HITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Slot {
    #[inline]
    fn count_hit(&self, row: &AtomicU64) {
        match self {
            Slot::Locked(_) => {
                row.fetch_add(1, Ordering::Relaxed);
            }
            Slot::Free(_) => HITS.with(|c| {
                let n = c.get() + 1;
                if n == HIT_BATCH {
                    row.fetch_add(n, Ordering::Relaxed);
                    c.set(0);
                } else {
                    c.set(n);
                }
            }),
        }
    }
}

/// Asks for the line holding `b` (no fault, no effect on what is read).
#[inline]
fn prefetch(b: &u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and changes no memory;
    // SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            b as *const u8 as *const i8,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = b;
}

/// The engine's key hash (engine/src/hash.rs).
fn key_hash(ns: u32, key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, ns as u64 ^ 0x9e37_79b9_7f4a_7c15)
}

/// `h`'s bucket among `n` (Lemire's multiply-shift: any `n`, not only powers
/// of two, so the file can be sized to its contents).
fn fastrange(h: u64, n: u64) -> u64 {
    ((h as u128 * n as u128) >> 64) as u64
}

fn le16(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

// ---------------------------------------------------------------------------
// Shared maps
// ---------------------------------------------------------------------------

/// A file written whole, then mapped read-only and shared (a segment or a
/// base file: immutable once published).
fn map_ro(path: &Path, bytes: &[u8]) -> memmap2::Mmap {
    let mut f = File::create(path).expect("create");
    f.write_all(bytes).expect("write");
    drop(f);
    let f = File::open(path).expect("open");
    // SAFETY: the benchmark's own temporary file, never written, truncated or
    // shared after this point; the map is read-only.
    let m = unsafe { memmap2::MmapOptions::new().map(&f) }.expect("mmap");
    let mut sum = 0u64;
    for p in (0..m.len()).step_by(4096) {
        sum = sum.wrapping_add(m[p] as u64);
    }
    black_box(sum);
    m
}

/// A zeroed file of `words` 8-byte words mapped read-write and shared (an
/// index): every access is an atomic word, as in engine/src/index.rs.
struct Words {
    map: memmap2::MmapMut,
}

impl Words {
    fn new(path: &Path, words: usize) -> Words {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("create");
        f.set_len((words * 8) as u64).expect("set_len");
        // SAFETY: the benchmark's own temporary file, never truncated; it is
        // only ever accessed through the aligned atomic words `w` hands out.
        let map = unsafe { memmap2::MmapOptions::new().map_mut(&f) }.expect("mmap");
        let w = Words { map };
        for i in (0..words).step_by(512) {
            w.w(i).store(0, Ordering::Relaxed);
        }
        w
    }
    #[inline]
    fn w(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.map.len() / 8);
        // SAFETY: in bounds (checked above), 8-aligned (maps are page
        // aligned), and the bytes are only ever accessed as atomics.
        unsafe { &*(self.map.as_ptr().add(i * 8) as *const AtomicU64) }
    }
}

/// The part of the index a reader touches: the header words `retired` and
/// `base_id`, one namespace row (`clear_seq`, `hits`), the tail's bucket
/// array, and the base's dead-cell words (one per base bucket).
struct Index {
    words: Words,
    tail_buckets: u64,
    dead_at: usize,
}

const RETIRED: usize = 8;
const BASE_ID: usize = 9;
const NS_CLEAR_SEQ: usize = 16;
const NS_HITS: usize = 17;
const NS_NAME_HASH: usize = 18;
const NS_LAST_USED: usize = 19;
const NAME_HASH: u64 = 0x5eed;
const TAIL_AT: usize = 64;

impl Index {
    fn new(path: &Path, tail_buckets: u64, base_buckets: u64, base_id: u64) -> Index {
        let dead_at = TAIL_AT + 2 * tail_buckets as usize;
        let words = Words::new(path, dead_at + base_buckets as usize + 1);
        words.w(BASE_ID).store(base_id, Ordering::Release);
        words.w(NS_NAME_HASH).store(NAME_HASH, Ordering::Release);
        Index {
            words,
            tail_buckets,
            dead_at,
        }
    }
    #[inline]
    fn retired(&self) -> bool {
        self.words.w(RETIRED).load(ACQ) != 0
    }
    /// The tail probe: `Some(loc)` if a bucket with `h`'s tag holds a
    /// record (it would be read from the log and shadow the base).
    #[inline]
    fn tail_probe(&self, h: u64) -> Option<u64> {
        let mask = self.tail_buckets - 1;
        for step in 0..self.tail_buckets {
            let i = (h.wrapping_add(step) & mask) as usize;
            let w = self.words.w(TAIL_AT + 2 * i).load(ACQ);
            if w == 0 {
                return None;
            }
            if w >> 32 == h >> 32 {
                return Some(self.words.w(TAIL_AT + 2 * i + 1).load(ACQ));
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------
// Version 2: the base file
// ---------------------------------------------------------------------------

/// Cell header: crc (4), flags (1), klen (1), vlen (2), ns (2).
const CELL_HDR: usize = 10;
/// Bucket directory header: cell count (1), reach (1), end of cells (2).
/// The reach is how many buckets past this one hold cells whose home is this
/// one (0: all of them are here), so a lookup reads home ..= home + reach.
const DIR_HDR: usize = 4;
const BASE_HDR: usize = 4096;
/// The longest carry the builder allows (the reach is one byte).
const MAX_PROBE: u64 = 255;

/// The cell checksum: crc32 (crc32fast, as the version-1 record's), or the
/// low 32 bits of xxh3-64 (the key hash's function, seeded apart).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sum {
    Crc32,
    Xxh3,
}

impl Sum {
    #[inline]
    fn of(self, b: &[u8]) -> u32 {
        match self {
            Sum::Crc32 => crc32fast::hash(b),
            Sum::Xxh3 => xxh3_64_with_seed(b, 0x5049_434f_4345_4c4c) as u32,
        }
    }
}

fn encode_cell(sum: Sum, ns: u32, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(CELL_HDR + key.len() + value.len());
    c.extend_from_slice(&[0, 0, 0, 0, 0, key.len() as u8]);
    c.extend_from_slice(&(value.len() as u16).to_le_bytes());
    c.extend_from_slice(&(ns as u16).to_le_bytes());
    c.extend_from_slice(key);
    c.extend_from_slice(value);
    let crc = sum.of(&c[4..]);
    c[..4].copy_from_slice(&crc.to_le_bytes());
    c
}

struct Base {
    map: memmap2::Mmap,
    index: Index,
    bucket: usize,
    buckets: u64,
    sum: Sum,
    base_id: u64,
    base_seq: u64,
    fill: f64,
    /// Cells stored outside their home bucket.
    displaced: u64,
    longest: u64,
    /// With `Some((first, span))`, each bucket's own cells are stored in
    /// fingerprint order, so a cell's place is predictable from its
    /// fingerprint before the directory is read: about `first + fp * span /
    /// 256` (the base-wide means); a lookup then prefetches the lines
    /// around it, and loads its dead word, while the directory is on its way.
    predict: Option<(usize, usize)>,
    /// Bytes prefetched on each side of a predicted cell.
    window: usize,
}

impl Base {
    /// Builds a base of `n` entries in `dir`: `bucket`-byte buckets, sized so
    /// that cells and their directory slots take `fill` of the buckets.
    fn build(dir: &Path, n: u64, bucket: usize, fill: f64, sum: Sum, window: usize) -> Base {
        let predict = window > 0;
        let mut cells: Vec<(u64, u8, Vec<u8>)> = Vec::with_capacity(n as usize);
        let mut total = 0usize;
        for i in 0..n {
            let k = key(i);
            let c = encode_cell(sum, NS, &k, &value(i));
            total += c.len() + 3;
            let h = key_hash(NS, &k);
            cells.push((h, h as u8, c));
        }
        let buckets = ((total as f64 / (bucket - DIR_HDR) as f64) / fill).ceil() as u64;
        for c in cells.iter_mut() {
            c.0 = fastrange(c.0, buckets);
        }
        cells.sort_by_key(|c| c.0);
        let mut img = vec![0u8; BASE_HDR];
        img[..8].copy_from_slice(b"PICOBAS\0");
        let mut carry: std::collections::VecDeque<(u64, u8, Vec<u8>)> = Default::default();
        let (mut next, mut displaced, mut longest) = (0usize, 0u64, 0u64);
        let mut b = 0u64;
        while b < buckets || !carry.is_empty() {
            let mut own = Vec::new();
            while next < cells.len() && cells[next].0 == b {
                own.push(std::mem::take(&mut cells[next]));
                next += 1;
            }
            if predict {
                own.sort_by_key(|c| c.1);
            }
            // The bucket's own cells first (most lookups then end in the
            // home bucket), then cells carried from earlier buckets, oldest
            // home first; what does not fit is carried on.
            let mut placed: Vec<(u8, Vec<u8>)> = Vec::new();
            let mut used = DIR_HDR;
            let mut still = std::collections::VecDeque::new();
            let mut rest = Vec::new();
            for c in own {
                if used + 3 + c.2.len() <= bucket && placed.len() < 64 {
                    used += 3 + c.2.len();
                    placed.push((c.1, c.2));
                } else {
                    rest.push(c);
                }
            }
            for c in carry.drain(..).chain(rest) {
                if c.0 != b && used + 3 + c.2.len() <= bucket && placed.len() < 64 {
                    used += 3 + c.2.len();
                    displaced += 1;
                    longest = longest.max(b - c.0);
                    let home = BASE_HDR + c.0 as usize * bucket + 1;
                    img[home] = img[home].max((b - c.0) as u8);
                    placed.push((c.1, c.2));
                } else {
                    still.push_back(c);
                }
            }
            carry = still;
            let nc = placed.len();
            let mut page = vec![0u8; bucket];
            page[0] = nc as u8;
            page[2..4].copy_from_slice(&(used as u16).to_le_bytes());
            let mut off = DIR_HDR + 3 * nc;
            for (i, (fp, c)) in placed.iter().enumerate() {
                page[DIR_HDR + i] = *fp;
                page[DIR_HDR + nc + 2 * i..DIR_HDR + nc + 2 * i + 2]
                    .copy_from_slice(&(off as u16).to_le_bytes());
                page[off..off + c.len()].copy_from_slice(c);
                off += c.len();
            }
            img.extend_from_slice(&page);
            b += 1;
            assert!(b < buckets + MAX_PROBE, "overflow past the probe limit");
        }
        let stored = b;
        let base_id = 7;
        let name = format!("{bucket}-{fill}-{}-{predict}", sum == Sum::Crc32);
        let per = n as f64 / buckets as f64;
        let cell_len = (total as f64 / n as f64 - 3.0) as usize;
        let predict = predict.then(|| {
            (
                DIR_HDR + (3.0 * per) as usize,
                (per * cell_len as f64) as usize,
            )
        });
        let map = map_ro(&dir.join(format!("base-{name}")), &img);
        let index = Index::new(&dir.join(format!("index-{name}")), 1024, stored, base_id);
        Base {
            map,
            index,
            bucket,
            buckets,
            sum,
            base_id,
            base_seq: n + 1,
            fill,
            displaced,
            longest,
            predict,
            window,
        }
    }

    /// The memory floor of the layout: the home bucket's directory, then
    /// the first cell whose fingerprint matches (no lock, no checks).
    #[inline]
    fn raw(&self, ns: u32, key: &[u8], cell: bool) -> Option<usize> {
        let h = key_hash(ns, key);
        let at = BASE_HDR + fastrange(h, self.buckets) as usize * self.bucket;
        let page = &self.map[at..at + self.bucket];
        if !cell {
            return Some(black_box(page[0]) as usize);
        }
        let nc = page[0] as usize;
        let Some(i) = page[DIR_HDR..DIR_HDR + nc]
            .iter()
            .position(|&f| f == h as u8)
        else {
            return Some(0); // displaced: the floor counts the home bucket only
        };
        let off = le16(page, DIR_HDR + nc + 2 * i);
        Some(page[(off + CELL_HDR).min(self.bucket - 1)] as usize)
    }

    fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// The lookup a version-2 reader makes for a key in the base.
    #[inline]
    fn get<R>(
        &self,
        slot: &Slot,
        buf: &mut Vec<u8>,
        ns: u32,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        let guard = match slot {
            Slot::Locked(l) => *l.read().expect("slot"),
            Slot::Free(g) => g.load(ACQ),
        };
        let idx = &self.index;
        if idx.retired()
            || idx.words.w(BASE_ID).load(ACQ) != self.base_id
            || guard != 0
            || !fixed_work(&idx.words, matches!(slot, Slot::Free(_)))
        {
            return None; // a real reader reopens and looks again
        }
        let h = key_hash(ns, key);
        if idx.tail_probe(h).is_some() {
            return None; // a real reader reads the tail's record (never here)
        }
        let fp = h as u8;
        let m = &self.map[..];
        let home = fastrange(h, self.buckets) as usize;
        let mut dead_early = None;
        if let Some((first, span)) = self.predict {
            let at = BASE_HDR + home * self.bucket;
            let mid = first + fp as usize * span / 256;
            let lo = mid.saturating_sub(self.window) & !63;
            let hi = (mid + self.window + 128).min(self.bucket);
            for line in (lo..hi).step_by(64) {
                prefetch(&m[at + line]);
            }
            dead_early = Some(idx.words.w(idx.dead_at + home).load(ACQ));
        }
        let mut reach = 0;
        let mut b = home;
        while b <= home + reach {
            let at = BASE_HDR + b * self.bucket;
            let page = m.get(at..at + self.bucket)?;
            let nc = (page[0] as usize).min(64);
            let dir_end = DIR_HDR + 3 * nc;
            let mut cand = fp_matches(&page[DIR_HDR..DIR_HDR + nc], fp);
            while cand != 0 {
                let i = cand.trailing_zeros() as usize;
                cand &= cand - 1;
                let off = le16(page, DIR_HDR + nc + 2 * i);
                if off < dir_end || off + CELL_HDR > self.bucket {
                    continue;
                }
                let klen = page[off + 5] as usize;
                let vlen = le16(page, off + 6);
                let end = off + CELL_HDR + klen + vlen;
                if end > self.bucket || klen != key.len() {
                    continue;
                }
                // Copy, then trust nothing until the crc of the copy holds.
                buf.clear();
                buf.extend_from_slice(&page[off..end]);
                let crc = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if self.sum.of(&buf[4..]) != crc
                    || le16(buf, 8) != ns as usize
                    || &buf[CELL_HDR..CELL_HDR + klen] != key
                {
                    continue;
                }
                // Dead (removed, overwritten, evicted) since the base was
                // written, or cleared after it: a miss.
                let dead = match dead_early {
                    Some(w) if b == home => w,
                    _ => idx.words.w(idx.dead_at + b).load(ACQ),
                };
                if dead >> i & 1 != 0 || idx.words.w(NS_CLEAR_SEQ).load(ACQ) > self.base_seq {
                    return None;
                }
                if idx.retired() {
                    return None;
                }
                slot.count_hit(idx.words.w(NS_HITS));
                return Some(f(&buf[CELL_HDR + klen..]));
            }
            if b == home {
                reach = page[1] as usize;
            }
            b += 1;
        }
        None
    }
}

// ---------------------------------------------------------------------------
// Version 1 model: 16-byte buckets, 40-byte record headers in a log map
// ---------------------------------------------------------------------------

struct V1 {
    index: Words,
    buckets: u64,
    logs: RwLock<HashMap<u32, usize>>,
    log: Vec<memmap2::Mmap>,
    log_len: u64,
}

const V1_HDR: usize = 40;

impl V1 {
    fn build(dir: &Path, n: u64) -> V1 {
        let buckets = (n * 4 / 3 + 1).next_power_of_two().max(1024);
        let index = Words::new(&dir.join("v1-index"), 32 + 2 * buckets as usize);
        index.w(NS_NAME_HASH).store(NAME_HASH, Ordering::Release);
        let mut log = vec![0u8; 64];
        for i in 0..n {
            let (k, v) = (key(i), value(i));
            let off = log.len() as u64;
            let start = log.len();
            log.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
            log.extend_from_slice(&NS.to_le_bytes());
            log.extend_from_slice(&(k.len() as u32).to_le_bytes());
            log.extend_from_slice(&(v.len() as u32).to_le_bytes());
            log.extend_from_slice(b"PCRK");
            log.extend_from_slice(&(i + 1).to_le_bytes());
            log.extend_from_slice(&0u64.to_le_bytes());
            log.extend_from_slice(&k);
            log.extend_from_slice(&v);
            let crc = crc32fast::hash(&log[start + 4..]);
            log[start..start + 4].copy_from_slice(&crc.to_le_bytes());
            log.resize((log.len() + 7) & !7, 0);
            let h = key_hash(NS, &k);
            for step in 0..buckets {
                let p = (h.wrapping_add(step) & (buckets - 1)) as usize;
                if index.w(32 + 2 * p).load(ACQ) == 0 {
                    index
                        .w(32 + 2 * p + 1)
                        .store(1 << 32 | off, Ordering::Release);
                    index
                        .w(32 + 2 * p)
                        .store((h >> 32) << 32 | (i + 1), Ordering::Release);
                    break;
                }
            }
        }
        let log_len = log.len() as u64;
        let map = map_ro(&dir.join("seg-00000001.log"), &log);
        V1 {
            index,
            buckets,
            logs: RwLock::new([(1u32, 0usize)].into_iter().collect()),
            log: vec![map],
            log_len,
        }
    }

    /// The version-1 lookup (engine/src/read.rs): bucket, then the record.
    #[inline]
    fn get<R>(
        &self,
        slot: &Slot,
        buf: &mut Vec<u8>,
        ns: u32,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        let guard = match slot {
            Slot::Locked(l) => *l.read().expect("slot"),
            Slot::Free(g) => g.load(ACQ),
        };
        if self.index.w(RETIRED).load(ACQ) != 0 || guard != 0 || !fixed_work(&self.index, false) {
            return None;
        }
        let h = key_hash(ns, key);
        let mask = self.buckets - 1;
        for step in 0..self.buckets {
            let p = (h.wrapping_add(step) & mask) as usize;
            let w = self.index.w(32 + 2 * p).load(ACQ);
            if w == 0 {
                return None;
            }
            if w >> 32 != h >> 32 {
                continue;
            }
            let loc = self.index.w(32 + 2 * p + 1).load(ACQ);
            let Some(&m) = self.logs.read().expect("logs").get(&((loc >> 32) as u32)) else {
                continue;
            };
            let log = &self.log[m][..];
            let off = (loc & 0xffff_ffff) as usize;
            let Some(hb) = log.get(off..off + V1_HDR) else {
                continue;
            };
            let klen = u32::from_le_bytes([hb[12], hb[13], hb[14], hb[15]]) as usize;
            let vlen = u32::from_le_bytes([hb[16], hb[17], hb[18], hb[19]]) as usize;
            if hb[4] != 1 || &hb[20..24] != b"PCRK" {
                continue;
            }
            let Some(body) = log.get(off..off + V1_HDR + klen + vlen) else {
                continue;
            };
            buf.clear();
            buf.extend_from_slice(body);
            let crc = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if crc32fast::hash(&buf[4..]) != crc
                || u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) != ns
                || &buf[V1_HDR..V1_HDR + klen] != key
            {
                continue;
            }
            if self.index.w(RETIRED).load(ACQ) != 0 {
                return None;
            }
            slot.count_hit(self.index.w(NS_HITS));
            return Some(f(&buf[V1_HDR + klen..]));
        }
        None
    }
}

// ---------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------

type Reader<'a> = Box<dyn FnMut(&[u8; 16]) -> Option<usize> + 'a>;

/// Runs [`GETS`] random gets (present keys, or absent ones) through `get`,
/// each independent of the last, as in criterion's `iter`; ns per get.
fn round(n: u64, seed: u64, present: bool, get: &mut Reader<'_>) -> f64 {
    let mut r = Rng(seed);
    let mut found = 0u64;
    let t = Instant::now();
    for _ in 0..GETS {
        let i = r.below(n);
        found += black_box(get(&key(if present { i } else { n * 4 + i }))).is_some() as u64;
    }
    let ns = t.elapsed().as_nanos() as f64 / GETS as f64;
    assert_eq!(found, if present { GETS } else { 0 }, "wrong answers");
    ns
}

/// "least (median)" of a reader's rounds: the least disturbed round, and
/// the typical one, on a machine other jobs share.
fn summary(mut v: Vec<f64>) -> (f64, String) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    (v[0], format!("{:.0} ns ({:.0})", v[0], v[v.len() / 2]))
}

fn main() {
    let n = bench_n();
    let live = n * (16 + 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let locked = Slot::Locked(RwLock::new(0));
    let free = Slot::Free(AtomicU64::new(0));
    println!("{n} entries of 16-byte keys and 100-byte values (live {live} bytes)");

    if std::env::var_os("PICOCACHE_V2_PROFILE").is_some() {
        // Only the version-2 reader, for a profiler.
        let base = Base::build(dir.path(), n, 4096, 0.90, Sum::Xxh3, 256);
        let mut buf = Vec::new();
        let mut get: Reader<'_> =
            Box::new(|k: &[u8; 16]| base.get(&free, &mut buf, NS, k, |v| v.len()));
        for k in 0..10 {
            println!("{:.0} ns", round(n, k, true, &mut get));
        }
        return;
    }
    let map: HashMap<[u8; 16], Vec<u8>> = (0..n).map(|i| (key(i), value(i).to_vec())).collect();

    let ldir = tempfile::tempdir().expect("tempdir");
    let env = lmdb::open(ldir.path(), true).expect("lmdb");
    let mut w = env.write_txn().expect("txn");
    let db: heed::Database<Bytes, Bytes> = env.create_database(&mut w, None).expect("db");
    w.commit().expect("commit");
    for start in (0..n).step_by(1000) {
        let mut w = env.write_txn().expect("txn");
        for i in start..(start + 1000).min(n) {
            db.put(&mut w, &key(i), &value(i)).expect("put");
        }
        w.commit().expect("commit");
    }
    let rtxn = env.read_txn().expect("rtxn");

    let v1 = V1::build(dir.path(), n);
    let v1_bytes = v1.log_len + 16 * v1.buckets + 48 * (v1.buckets * 3 / 4);
    // (bucket bytes, fill, checksum, prefetch window: 0 = no prediction)
    let shapes = [
        (4096, 0.90, Sum::Crc32, 0),
        (4096, 0.90, Sum::Xxh3, 0),
        (4096, 0.93, Sum::Xxh3, 0),
        (2048, 0.90, Sum::Xxh3, 0),
        (4096, 0.90, Sum::Xxh3, 128),
        (4096, 0.90, Sum::Xxh3, 256),
        (4096, 0.90, Sum::Xxh3, 384),
    ];
    let bases: Vec<Base> = shapes
        .iter()
        .map(|&(bucket, fill, sum, w)| Base::build(dir.path(), n, bucket, fill, sum, w))
        .collect();
    eprintln!("built");

    let mut readers: Vec<(String, Reader<'_>)> = vec![
        (
            "HashMap".into(),
            Box::new(|k: &[u8; 16]| map.get(k).map(|v| v.len())),
        ),
        (
            "LMDB".into(),
            Box::new(|k: &[u8; 16]| db.get(&rtxn, k).expect("get").map(|v| v.len())),
        ),
        ("v1".into(), {
            let mut buf = Vec::new();
            let (v1, slot) = (&v1, &locked);
            Box::new(move |k: &[u8; 16]| v1.get(slot, &mut buf, NS, k, |v| v.len()))
        }),
    ];
    let b0 = &bases[0];
    readers.push((
        "floor: one line".into(),
        Box::new(move |k: &[u8; 16]| b0.raw(NS, k, false)),
    ));
    readers.push((
        "floor: directory, cell".into(),
        Box::new(move |k: &[u8; 16]| b0.raw(NS, k, true)),
    ));
    // (base, lock-free slot and batched hit counts)
    let runs = [
        (0, false),
        (1, false),
        (1, true),
        (2, true),
        (3, true),
        (4, true),
        (5, true),
        (6, true),
    ];
    for &(j, lock_free) in &runs {
        let mut buf = Vec::new();
        let b = &bases[j];
        let slot = if lock_free { &free } else { &locked };
        readers.push((
            format!("v2 {j} {lock_free}"),
            Box::new(move |k: &[u8; 16]| b.get(slot, &mut buf, NS, k, |v| v.len())),
        ));
    }
    // Warm every reader, then interleave the timed rounds so that the load
    // of the machine weighs on all of them alike.
    for (_, r) in readers.iter_mut() {
        round(n, 1, true, r);
    }
    let mut present = vec![Vec::new(); readers.len()];
    let mut absent = vec![Vec::new(); readers.len()];
    for k in 0..ROUNDS {
        for (j, (name, r)) in readers.iter_mut().enumerate() {
            present[j].push(round(n, 0x2545_f491_4f6c_dd1d + k as u64, true, r));
            if !name.starts_with("floor") {
                absent[j].push(round(n, 0x2545_f491_4f6c_dd1d + k as u64, false, r));
            } else {
                absent[j].push(0.0);
            }
        }
    }
    let (present, pres): (Vec<f64>, Vec<String>) = present.into_iter().map(summary).unzip();
    let (_, abs): (Vec<f64>, Vec<String>) = absent.into_iter().map(summary).unzip();
    let (hm, lm) = (present[0], present[1]);

    println!();
    println!("Gets: the least of {ROUNDS} rounds (the median in brackets); ratios from the least.");
    println!("| reader | get, present (warm) | get, absent | / HashMap | LMDB / it | bytes per entry | / live | cells displaced | longest carry |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!("| HashMap | {} | {} | 1.00x | | | | | |", pres[0], abs[0]);
    println!(
        "| LMDB | {} | {} | {:.2}x | 1.00x | | | | |",
        pres[1],
        abs[1],
        lm / hm
    );
    println!(
        "| v1 model: 16-byte bucket, then 160-byte record | {} | {} | {:.2}x | {:.2}x | {:.0} (log + index) | {:.2}x | | |",
        pres[2],
        abs[2],
        present[2] / hm,
        lm / present[2],
        v1_bytes as f64 / n as f64,
        v1_bytes as f64 / live as f64
    );
    for (j, name) in [
        "layout floor: one line of the home bucket",
        "layout floor: directory, then the cell",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "| {name} | {} | | {:.2}x | {:.2}x | | | | |",
            pres[3 + j],
            present[3 + j] / hm,
            lm / present[3 + j]
        );
    }
    for (r, &(j, lock_free)) in runs.iter().enumerate() {
        let base = &bases[j];
        // What the store holds after overwrite-all + compact, beside the base:
        // the smallest index (header, namespace and segment tables, a
        // 1,024-bucket tail and its 768 entries, the dead words) and an empty
        // active segment preallocated to its first 4 MiB step.
        let index_bytes = 4096 + 1024 * 384 + 4096 * 40 + 1024 * 16 + 768 * 48 + 8 * base.buckets;
        let total = base.file_len() + index_bytes + (4 << 20);
        let p = present[5 + r];
        println!(
            "| v2 base, {}-byte buckets, fill {:.2}, {}, {}{} | {} | {} | {:.2}x | {:.2}x | {:.1} (base {:.1}) | {:.3}x | {:.2}% | {} buckets |",
            base.bucket,
            base.fill,
            if base.sum == Sum::Crc32 { "crc32" } else { "xxh3-32" },
            match (lock_free, base.predict.is_some()) {
                (false, _) => "locked slot, fetch_add per hit",
                (true, false) => "lock-free slot, batched hit counts",
                (true, true) => "lock-free, batched, cells in fingerprint order, prefetch of the predicted lines",
            },
            if base.window > 0 {
                format!(" ±{} bytes", base.window)
            } else {
                String::new()
            },
            pres[5 + r],
            abs[5 + r],
            p / hm,
            lm / p,
            total as f64 / n as f64,
            base.file_len() as f64 / n as f64,
            total as f64 / live as f64,
            100.0 * base.displaced as f64 / n as f64,
            base.longest,
        );
    }
}

//! The engine's own format-2 base (FORMAT.md, "Version 2"), measured: a
//! base of `PICOCACHE_BENCH_N` entries (default 1,000,000) of 16-byte keys
//! and 100-byte values built by the engine's builder
//! (`picocache_engine::base::build`) into a file on the temporary
//! directory's filesystem, then read warm with the engine's lookup
//! (`Base::get`: home bucket, predicted-line prefetch, directory, cell copy,
//! checksum, namespace and key) beside a `std` `HashMap` and LMDB, in one
//! run, with the same keys in the same order; and, over the same file, the
//! prototype's probe (`v2_layout.rs`: the directory read in place, fewer
//! checks), which prices the engine's layers.
//!
//! This is the base probe alone (FORMAT.md "Reading", step 5): not the
//! index slot, the tail probe, the dead word or the hit counters of steps
//! 1 to 4 and 6 to 8, which come with build step 4. Gets run in seven
//! interleaved rounds of 2,000,000 random present (and absent) keys, after
//! one warm-up round; the least round is reported, the median beside it.
//!
//! Run: `cargo run --release -p picocache-benches --features v2 --bin v2_base`
//! (`PICOCACHE_BENCH_N=100000` for a quick run; `TMPDIR` picks the
//! filesystem).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use heed::types::Bytes;
use picocache_benches::{bench_n, key, lmdb, value, Rng};
use picocache_engine::base::build::{BaseBuilder, BaseParams, NewCell, Sizing};
use picocache_engine::base::Base;
use picocache_engine::format::v2::{base_file_name, NsRow};
use picocache_engine::RealIo;

const NS: u16 = 1;
const GETS: u64 = 2_000_000;
const ROUNDS: usize = 7;

/// The engine's key hash (engine/src/hash.rs), for the builder's order.
fn key_hash(ns: u16, key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, ns as u64 ^ 0x9e37_79b9_7f4a_7c15)
}

type Reader<'a> = Box<dyn FnMut(&[u8; 16]) -> Option<usize> + 'a>;

/// The prototype's base probe (`v2_layout.rs`, `Base::get`, without its
/// index steps) over the engine-built file, for the cost of the engine's
/// layers: the directory read in place from a plain map, the cell copied,
/// its xxh3 sum, namespace and key checked. It trusts the header and the
/// offsets (no bounds beyond the slice's), as the prototype did.
struct Proto {
    map: memmap2::Mmap,
    homes: u64,
    stored: u64,
    first: usize,
    span: usize,
}

impl Proto {
    fn open(path: &std::path::Path, h: &picocache_engine::format::v2::BaseHeader) -> Proto {
        let f = std::fs::File::open(path).expect("open");
        // SAFETY: the benchmark's own file, written whole before and never
        // written, truncated or shared afterwards; the map is read-only.
        let map = unsafe { memmap2::MmapOptions::new().map(&f) }.expect("mmap");
        Proto {
            map,
            homes: h.homes,
            stored: h.stored,
            first: h.pred_first as usize,
            span: h.pred_span as usize,
        }
    }

    #[inline]
    fn get(&self, buf: &mut Vec<u8>, ns: u16, key: &[u8]) -> Option<usize> {
        let h = key_hash(ns, key);
        let fp = h as u8;
        let home = ((h as u128 * self.homes as u128) >> 64) as usize;
        let m = &self.map[..];
        let at = 4096 + home * 4096;
        let mid = self.first + fp as usize * self.span / 256;
        for line in ((mid.saturating_sub(256) & !63)..(mid + 384).min(4096)).step_by(64) {
            prefetch(&m[at + line]);
        }
        let mut reach = 0;
        let mut b = home;
        while b <= home + reach && (b as u64) < self.stored {
            let at = 4096 + b * 4096;
            let page = m.get(at..at + 4096)?;
            let nc = (page[0] as usize).min(64);
            let dir_end = 4 + 3 * nc;
            for i in 0..nc {
                if page[4 + i] != fp {
                    continue;
                }
                let off = u16::from_le_bytes([page[4 + nc + 2 * i], page[5 + nc + 2 * i]]) as usize;
                if off < dir_end || off + 10 > 4096 {
                    continue;
                }
                let klen = page[off + 5] as usize;
                let vlen = u16::from_le_bytes([page[off + 6], page[off + 7]]) as usize;
                let end = off + 10 + klen + vlen;
                if end > 4096 || klen != key.len() || page[off + 4] != 0 {
                    continue;
                }
                buf.clear();
                buf.extend_from_slice(&page[off..end]);
                let sum = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if xxhash_rust::xxh3::xxh3_64_with_seed(&buf[4..], 0x5049_434f_5245_434b) as u32
                    != sum
                    || u16::from_le_bytes([buf[8], buf[9]]) != ns
                    || &buf[10..10 + klen] != key
                {
                    continue;
                }
                return Some(vlen);
            }
            if b == home {
                reach = page[1] as usize;
            }
            b += 1;
        }
        None
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

/// [`GETS`] random gets of present (or absent) keys; ns per get.
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

fn summary(mut v: Vec<f64>) -> (f64, String) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    (v[0], format!("{:.0} ns ({:.0})", v[0], v[v.len() / 2]))
}

fn build_base(dir: &std::path::Path, n: u64) -> (Base, f64, u64, u64) {
    let mut order: Vec<u64> = (0..n).collect();
    order.sort_by_key(|&i| key_hash(NS, &key(i)));
    let mut sizing = Sizing::default();
    for _ in 0..n {
        sizing.add(16, 100, false, false);
    }
    let path = dir.join(base_file_name(1));
    let file = std::fs::File::create(&path).expect("create");
    let row = NsRow {
        id: NS,
        name: b"bench".to_vec(),
        maxsize: u64::MAX,
        max_bytes: u64::MAX,
        ..Default::default()
    };
    let params = BaseParams {
        id: 1,
        base_seq: n,
        absorbed: 1,
        upgraded_from: 0,
    };
    let t = Instant::now();
    let mut b = BaseBuilder::new(&RealIo, &file, params, sizing, vec![row], &[]).expect("builder");
    for i in order {
        let (k, v) = (key(i), value(i));
        b.push(NewCell {
            ns: NS,
            key: &k,
            value: &v,
            expiry_ms: None,
            entry: None,
        })
        .expect("push");
    }
    let report = b.finish().expect("finish");
    let secs = t.elapsed().as_secs_f64();
    drop(file);
    let base = Base::open(&path, Some(1)).expect("open");
    // Touch every page once, as the prototype does (warm page cache and map).
    let mut buf = Vec::new();
    for i in 0..n {
        black_box(base.get(NS, &key(i), &mut buf).expect("present"));
    }
    (base, secs, report.displaced, report.longest_carry)
}

fn main() {
    let n = bench_n();
    let live = n * (16 + 100);
    println!("{n} entries of 16-byte keys and 100-byte values (live {live} bytes)");
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, build_secs, displaced, longest) = build_base(dir.path(), n);
    let h = *base.header();
    println!(
        "engine base: built in {build_secs:.2} s; {} home buckets, {} stored, {:.1} bytes per entry ({:.3}x live), {:.2}% of cells displaced, longest carry {longest} buckets",
        h.homes,
        h.stored,
        h.file_len as f64 / n as f64,
        h.file_len as f64 / live as f64,
        100.0 * displaced as f64 / n as f64,
    );

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

    let proto = Proto::open(&dir.path().join(base_file_name(1)), &h);
    let (mut buf, mut pbuf) = (Vec::new(), Vec::new());
    let mut readers: Vec<(&str, Reader<'_>)> = vec![
        (
            "HashMap",
            Box::new(|k: &[u8; 16]| map.get(k).map(|v| v.len())),
        ),
        (
            "LMDB",
            Box::new(|k: &[u8; 16]| db.get(&rtxn, k).expect("get").map(|v| v.len())),
        ),
        (
            "engine base lookup (Base::get)",
            Box::new(|k: &[u8; 16]| base.get(NS, k, &mut buf).map(|f| f.value.len())),
        ),
        (
            "the prototype's base probe, same file",
            Box::new(|k: &[u8; 16]| proto.get(&mut pbuf, NS, k)),
        ),
    ];
    for (_, r) in readers.iter_mut() {
        round(n, 1, true, r);
    }
    let mut present = vec![Vec::new(); readers.len()];
    let mut absent = vec![Vec::new(); readers.len()];
    for k in 0..ROUNDS {
        for (j, (_, r)) in readers.iter_mut().enumerate() {
            present[j].push(round(n, 0x2545_f491_4f6c_dd1d + k as u64, true, r));
            absent[j].push(round(n, 0x2545_f491_4f6c_dd1d + k as u64, false, r));
        }
    }
    let (pv, ps): (Vec<f64>, Vec<String>) = present.into_iter().map(summary).unzip();
    let (_, abs): (Vec<f64>, Vec<String>) = absent.into_iter().map(summary).unzip();
    println!();
    println!("Gets: the least of {ROUNDS} rounds (the median in brackets); ratios from the least.");
    println!("| reader | get, present (warm) | get, absent | / HashMap | LMDB / it |");
    println!("|---|---|---|---|---|");
    for (j, (name, _)) in readers.iter().enumerate() {
        println!(
            "| {name} | {} | {} | {:.2}x | {:.2}x |",
            ps[j],
            abs[j],
            pv[j] / pv[0],
            pv[1] / pv[j]
        );
    }
}

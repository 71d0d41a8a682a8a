//! Quick timing of the engine's hot paths (not a benchmark of record; see benches/).
use picocache_engine::{Limits, Options, Store};
use std::time::Instant;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default().background_compaction(false)).unwrap();
    let ns = s.namespace("bench", Limits::default()).unwrap();
    let key = |i: u32| {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[8..12].copy_from_slice(&i.wrapping_mul(2654435761).to_le_bytes());
        k
    };
    let val = [7u8; 100];
    let t = Instant::now();
    let mut batch = Vec::new();
    for i in 0..n {
        batch.push(key(i));
        if batch.len() == 1000 || i == n - 1 {
            let items: Vec<(&[u8], &[u8])> = batch.iter().map(|k| (&k[..], &val[..])).collect();
            ns.put_batch(&items).unwrap();
            batch.clear();
        }
    }
    let e = t.elapsed();
    println!("batched put: {:.0}/s", n as f64 / e.as_secs_f64());
    let t = Instant::now();
    let m = 200_000u32.min(n);
    for i in 0..m {
        ns.put(&key(n + i), &val).unwrap();
    }
    println!("single put: {:.0}/s", m as f64 / t.elapsed().as_secs_f64());
    let mut x: u64 = 88172645463325252;
    let t = Instant::now();
    let g = 1_000_000;
    let mut found = 0;
    for _ in 0..g {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = key((x % n as u64) as u32);
        if ns.get_with(&k, |v| v.len()).unwrap().is_some() {
            found += 1;
        }
    }
    println!(
        "random get: {:.0} ns (found {found})",
        t.elapsed().as_nanos() as f64 / g as f64
    );
    let t = Instant::now();
    for i in 0..g {
        ns.get_with(&key(u32::MAX - i), |v| v.len()).unwrap();
    }
    println!(
        "absent get: {:.0} ns",
        t.elapsed().as_nanos() as f64 / g as f64
    );
    s.sync().unwrap();
    drop(ns);
    drop(s);
    let t = Instant::now();
    let s = Store::open(dir.path(), Options::default().background_compaction(false)).unwrap();
    println!("open: {:?}", t.elapsed());
    println!("{:?}", s.stats().unwrap().entries);
    let t = Instant::now();
    std::fs::remove_file(dir.path().join("index")).unwrap();
    drop(s);
    let s = Store::open(dir.path(), Options::default().background_compaction(false)).unwrap();
    println!(
        "open with rebuild: {:?} ({} entries)",
        t.elapsed(),
        s.stats().unwrap().entries
    );
}

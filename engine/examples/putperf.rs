//! Profiling aid: puts only (`putperf N BATCH`).
use picocache_engine::{Limits, Options, Store};
use std::time::Instant;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000);
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default().background_compaction(false)).unwrap();
    let ns = s.namespace("bench", Limits::default()).unwrap();
    let val = [7u8; 100];
    let batch = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1usize);
    let keys: Vec<[u8; 16]> = (0..n)
        .map(|i| {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k[8..12].copy_from_slice(&i.wrapping_mul(2654435761).to_le_bytes());
            k
        })
        .collect();
    let t = Instant::now();
    for chunk in keys.chunks(batch) {
        if batch == 1 {
            ns.put(&chunk[0], &val).unwrap();
        } else {
            let items: Vec<(&[u8], &[u8])> = chunk.iter().map(|k| (&k[..], &val[..])).collect();
            ns.put_batch(&items).unwrap();
        }
    }
    println!(
        "put, batches of {batch}: {:.0}/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
}

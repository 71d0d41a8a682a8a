//! Profiling aid: one-by-one puts only.
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
    let t = Instant::now();
    for i in 0..n {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_le_bytes());
        ns.put(&k, &val).unwrap();
    }
    println!("single put: {:.0}/s", n as f64 / t.elapsed().as_secs_f64());
}

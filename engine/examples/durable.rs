//! Quick timing of durable puts, one thread and four (group commit).
use picocache_engine::{Durability, Limits, Options, Store};
use std::time::Instant;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options::default()
        .durability(Durability::PowerLoss)
        .background_compaction(false);
    let s = Store::open(dir.path(), o).unwrap();
    let ns = s.namespace("d", Limits::default()).unwrap();
    let n = 500u32;
    let t = Instant::now();
    for i in 0..n {
        ns.put(&i.to_le_bytes(), &[1u8; 100]).unwrap();
    }
    println!("1 thread: {:?} per durable put", t.elapsed() / n);
    let t = Instant::now();
    std::thread::scope(|sc| {
        for th in 0..4u32 {
            let ns = &ns;
            sc.spawn(move || {
                for i in 0..n {
                    ns.put(&(th * 100_000 + i).to_le_bytes(), &[1u8; 100])
                        .unwrap();
                }
            });
        }
    });
    println!("4 threads: {:?} per durable put", t.elapsed() / (4 * n));
}

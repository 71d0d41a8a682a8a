//! A fixed workload for counting instructions (`perf stat -e instructions:u`),
//! which a machine shared with other work does not disturb as it does
//! timings: `N` Memo calls with new arguments (mode `miss`), or `N` pairs of
//! a call with new arguments and one with the same (mode `miss_hit`), on a
//! local store in a temporary directory.
//!
//! Run: `cargo run --release -p picocache-benches --example memo_miss_probe -- miss 20000`

use std::sync::Arc;

use picocache::{LocalBackend, Memo};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "miss".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("probe::f")
        .maxsize(None)
        .backend(Arc::new(LocalBackend::open(dir.path()).unwrap()))
        .build();
    let body = |x: u64| format!("{x:0100}");
    let t = std::time::Instant::now();
    let mut sum = 0usize;
    for i in 0..n {
        sum += memo.call(i, body).len();
        if mode == "miss_hit" {
            sum += memo.call(i, body).len();
        }
    }
    let info = memo.cache_info();
    eprintln!(
        "{mode} n={n}: {:.2} us per step (wall), hits {} misses {} ({sum})",
        t.elapsed().as_secs_f64() * 1e6 / n as f64,
        info.hits,
        info.misses
    );
}

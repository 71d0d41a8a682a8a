//! Rough per-call latency of each backend: `latency URL [N]`. Prints the mean
//! time of a hit, a miss and a put over N calls (default 2000) on one
//! namespace of 1000 small entries. A measurement, not a test.

use std::time::Instant;

use picocache::Limits;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("usage: latency URL [N]");
    let n: u32 = args.get(2).map_or(2000, |s| s.parse().expect("N"));
    let b = picocache::open(url).expect("open");
    let ns = b
        .namespace("latency", Limits::maxsize(Some(1000)))
        .expect("namespace");
    ns.clear().expect("clear");
    let value = vec![7u8; 100];
    let t = Instant::now();
    for i in 0..n {
        ns.put(format!("k{}", i % 1000).as_bytes(), &value, None)
            .expect("put");
    }
    let put = t.elapsed() / n;
    let t = Instant::now();
    for i in 0..n {
        assert!(ns
            .get(format!("k{}", i % 1000).as_bytes())
            .expect("get")
            .is_some());
    }
    let hit = t.elapsed() / n;
    let t = Instant::now();
    for i in 0..n {
        assert!(ns
            .get(format!("absent{i}").as_bytes())
            .expect("get")
            .is_none());
    }
    let miss = t.elapsed() / n;
    println!(
        "{}: hit {hit:?}, miss {miss:?}, put {put:?} (mean of {n})",
        b.kind()
    );
}

//! Memoization from Rust: a `#[picocache::memoize]` function (and the plain
//! `picocache::Memo` API under it) against the `cached` crate's disk store
//! (`RedbCache`, redb-backed, the `redb_store` feature of cached 3.x) and its
//! in-memory `#[cached]`, in the same run.
//!
//! The function takes a `u64` and a `String` and returns a 100-byte `String`.
//! - `memo_hit`: a call whose result is stored (random among 10,000 stored keys);
//! - `memo_miss_store`: a call with new arguments (lookup, run, store);
//! - `seal`: sealing and checking one such value (a part of both).
//!
//! PicoCache's default durability survives a process crash without an fsync
//! per write; `cached`'s disk store fsyncs every write by default
//! (`durable(true)`), so it is measured both ways.
//!
//! Run: `cargo bench -p picocache-benches --bench memo`

use std::hint::black_box;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cached::proc_macro::cached;
use cached::{ConcurrentCached, RedbCache};
use criterion::Criterion;
use picocache::{memoize, Backend, LocalBackend, Memo};
use picocache_benches::Rng;

/// Stored keys in the hit benchmarks.
const STORED: u64 = 10_000;

fn body(i: u64, s: &str) -> String {
    let mut out = format!("{i:020}:{s}");
    while out.len() < 100 {
        out.push('#');
    }
    out
}

fn arg(i: u64) -> String {
    format!("key-{i}")
}

static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().unwrap());

/// PicoCache's local store, in a temporary directory.
fn backend() -> Arc<dyn Backend> {
    static B: LazyLock<Arc<dyn Backend>> =
        LazyLock::new(|| Arc::new(LocalBackend::open(DIR.path().join("picocache")).unwrap()));
    B.clone()
}

/// The function memoized with PicoCache's attribute.
#[memoize(backend = backend(), maxsize = None)]
fn work_pico(i: u64, s: String) -> String {
    body(i, &s)
}

/// The function memoized with `cached`'s in-memory attribute.
#[cached]
fn work_cached_mem(i: u64, s: String) -> String {
    body(i, &s)
}

/// What `#[concurrent_cached(disk = true)]` generates: look up the key's
/// string, else run and store.
fn via_redb(c: &RedbCache<String, String>, i: u64, s: String) -> String {
    let k = format!("{i}:{s}");
    if let Some(v) = c.cache_get(&k).unwrap() {
        return v;
    }
    let v = body(i, &s);
    c.cache_set(k, v.clone()).unwrap();
    v
}

fn redb_cache(name: &str, durable: bool) -> RedbCache<String, String> {
    RedbCache::builder(name)
        .disk_dir(DIR.path().join("cached"))
        .durable(durable)
        .build()
        .unwrap()
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    let memo = Memo::builder("bench::memo_plain")
        .maxsize(None)
        .backend(backend())
        .build();
    let memo_call = |i: u64, s: String| memo.call((i, s), |(i, s)| body(i, &s));
    let disk_fast = redb_cache("nosync", false);
    let disk_durable = redb_cache("durable", true);

    // Store the keys the hit benchmarks read.
    for i in 0..STORED {
        work_pico(i, arg(i));
        memo_call(i, arg(i));
        work_cached_mem(i, arg(i));
        via_redb(&disk_fast, i, arg(i));
    }
    let args: Vec<String> = (0..STORED).map(arg).collect();

    let mut g = c.benchmark_group("memo_hit");
    g.bench_function("picocache_memoize", |b| {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        b.iter(|| {
            let i = r.below(STORED);
            black_box(work_pico(i, args[i as usize].clone()))
        })
    });
    g.bench_function("picocache_memo_api", |b| {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        b.iter(|| {
            let i = r.below(STORED);
            black_box(memo_call(i, args[i as usize].clone()))
        })
    });
    g.bench_function("cached_disk_redb", |b| {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        b.iter(|| {
            let i = r.below(STORED);
            black_box(via_redb(&disk_fast, i, args[i as usize].clone()))
        })
    });
    g.bench_function("cached_memory", |b| {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        b.iter(|| {
            let i = r.below(STORED);
            black_box(work_cached_mem(i, args[i as usize].clone()))
        })
    });
    g.finish();

    // New arguments at every call.
    let mut next = 1_000_000u64;
    let mut g = c.benchmark_group("memo_miss_store");
    g.bench_function("picocache_memoize", |b| {
        b.iter(|| {
            next += 1;
            black_box(work_pico(next, arg(next)))
        })
    });
    g.bench_function("picocache_memo_api", |b| {
        b.iter(|| {
            next += 1;
            black_box(memo_call(next, arg(next)))
        })
    });
    g.bench_function("cached_disk_redb_nosync", |b| {
        b.iter(|| {
            next += 1;
            black_box(via_redb(&disk_fast, next, arg(next)))
        })
    });
    g.bench_function("cached_memory", |b| {
        b.iter(|| {
            next += 1;
            black_box(work_cached_mem(next, arg(next)))
        })
    });
    g.finish();

    // The seal every stored value carries (issue 11): what a miss+store pays
    // once (seal) and a hit read from the store pays once (open), for this
    // benchmark's key and 100-byte value.
    let secrets = picocache::Secrets::new(&[b"bench-secret"]).unwrap();
    let key = picocache::memo::encode(&(7u64, arg(7))).unwrap();
    let value = picocache::memo::encode(&body(7, &arg(7))).unwrap();
    let ns = "bench::memo_plain";
    let sealed = secrets.seal(ns, &key, &value);
    let mut g = c.benchmark_group("seal");
    g.bench_function("seal_100B", |b| {
        b.iter(|| black_box(secrets.seal(ns, black_box(&key), black_box(&value))))
    });
    g.bench_function("open_100B", |b| {
        b.iter(|| {
            black_box(
                secrets
                    .open(ns, black_box(&key), black_box(&sealed))
                    .is_ok(),
            )
        })
    });
    g.finish();

    // One fsync per stored result: fewer samples.
    let mut g = c.benchmark_group("memo_miss_store_durable");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("cached_disk_redb_durable", |b| {
        b.iter(|| {
            next += 1;
            black_box(via_redb(&disk_durable, next, arg(next)))
        })
    });
    g.finish();
    c.final_summary();
}

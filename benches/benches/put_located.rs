//! Issue 16: learning where a stored record landed, by a second lookup after
//! the put (a peek) or from the put itself (`put_located`), on 16-byte keys
//! and 100-byte values, each put a new key:
//! - `put_then_locate/engine_*`: the engine's `Namespace`;
//! - `put_then_locate/sealed_*`: a sealed local namespace through
//!   `picocache::Locate`, as the Python miss path (`put_kept`) uses it;
//! - `memo_cpu/miss_store`: a `Memo` call with new arguments (lookup, run,
//!   store), as `memo_miss_store/picocache_memo_api` in `benches/memo.rs`;
//! - `memo_cpu/miss_then_hit`: a call with new arguments, then one with the
//!   same (a hit: confirmed only if the miss kept its result in the
//!   process, else read first).
//!
//! Times are the measuring thread's time on a CPU
//! (`/proc/thread-self/schedstat`), not wall time: on a machine shared
//! with other work, time spent descheduled does not count.
//!
//! Run: `cargo bench -p picocache-benches --bench put_located`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

/// Nanoseconds this thread has spent on a CPU.
fn on_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    s.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Runs `f` `iters` times; returns the time this thread spent on a CPU.
fn cpu_time<R>(iters: u64, mut f: impl FnMut() -> R) -> Duration {
    let start = on_cpu_ns();
    for _ in 0..iters {
        black_box(f());
    }
    Duration::from_nanos(on_cpu_ns() - start)
}

use criterion::Criterion;
use picocache::{Backend, LocalBackend, Memo, SealedBackend, Secrets};
use picocache_benches::{key, value};
use picocache_engine::{Limits, Options, Store};

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let dir = tempfile::tempdir().unwrap();

    let store = Store::open(dir.path().join("engine"), Options::default()).unwrap();
    let ns = store.namespace("bench", Limits::default()).unwrap();
    let raw: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path().join("sealed")).unwrap());
    let secrets = Arc::new(Secrets::new(&[b"bench-secret"]).unwrap());
    let sealed = SealedBackend::new(raw, secrets, picocache::secret::SecretSource::Explicit);
    let sns = sealed.namespace("bench", Limits::default()).unwrap();
    let loc = sns.locate().unwrap();
    let mut next = 0u64;
    let mut new_key = || {
        next += 1;
        (key(next), value(next))
    };

    let mut g = c.benchmark_group("put_then_locate");
    g.bench_function("engine_put_then_peek", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                let (k, v) = new_key();
                ns.put_with_ttl(&k, &v, None).unwrap();
                black_box(ns.peek_located(&k, |_, at| at).unwrap())
            })
        })
    });
    g.bench_function("engine_put_located", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                let (k, v) = new_key();
                black_box(ns.put_located(&k, &v, None).unwrap())
            })
        })
    });
    g.bench_function("sealed_put_then_read_located", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                let (k, v) = new_key();
                sns.put(&k, &v, None).unwrap();
                let mut same = None;
                loc.read_located(&k, false, &mut |got, at| {
                    same = (got == v).then_some(at);
                })
                .unwrap();
                black_box(same)
            })
        })
    });
    g.bench_function("sealed_put_located", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                let (k, v) = new_key();
                black_box(loc.put_located(&k, &v, None).unwrap())
            })
        })
    });
    g.finish();

    let memo = Memo::builder("bench::put_located")
        .maxsize(None)
        .backend(Arc::new(
            LocalBackend::open(dir.path().join("memo")).unwrap(),
        ))
        .build();
    let body = |x: u64| format!("{x:0100}");
    let mut i = 0u64;
    let mut g = c.benchmark_group("memo_cpu");
    g.bench_function("miss_store", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                i += 1;
                memo.call(i, body)
            })
        })
    });
    g.bench_function("miss_then_hit", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                i += 1;
                memo.call(i, body);
                memo.call(i, body)
            })
        })
    });
    g.finish();
    c.final_summary();
}

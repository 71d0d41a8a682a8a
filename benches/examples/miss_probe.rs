//! Fixed workloads for counting instructions (`valgrind --tool=callgrind`),
//! which a machine shared with other work does not disturb as it does
//! timings. `N` steps of one mode, on a local store in a temporary
//! directory, 16-byte keys and 100-byte values, a new key at each step:
//! - `miss`: a `Memo` call with new arguments (lookup, run, store);
//! - `miss_hit`: that, then a call with the same arguments (a hit);
//! - `put_peek` / `put_located`: the engine's `Namespace::put_with_ttl`
//!   then `peek_located`, or `put_located`;
//! - `sealed_put_read` / `sealed_put_located`: a sealed local namespace's
//!   `put` then `Locate::read_located` (the Python miss path's `put_kept`
//!   before issue 16), or `Locate::put_located`.
//!
//! Run: `cargo run --release -p picocache-benches --example miss_probe -- miss 100000`
//! (under `valgrind --tool=callgrind` for the instruction count).

use std::hint::black_box;
use std::sync::Arc;

use picocache::{Backend, LocalBackend, Memo, SealedBackend, Secrets};
use picocache_benches::{key, value};
use picocache_engine::{Limits, Options, Store};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "miss".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    match mode.as_str() {
        "miss" | "miss_hit" => {
            let memo = Memo::builder("probe::f")
                .maxsize(None)
                .backend(Arc::new(LocalBackend::open(dir.path()).unwrap()))
                .build();
            let body = |x: u64| format!("{x:0100}");
            for i in 0..n {
                black_box(memo.call(i, body));
                if mode == "miss_hit" {
                    black_box(memo.call(i, body));
                }
            }
            let info = memo.cache_info();
            eprintln!("hits {} misses {}", info.hits, info.misses);
        }
        "put_peek" | "put_located" => {
            let store = Store::open(dir.path(), Options::default()).unwrap();
            let ns = store.namespace("probe", Limits::default()).unwrap();
            for i in 0..n {
                let (k, v) = (key(i), value(i));
                if mode == "put_peek" {
                    ns.put_with_ttl(&k, &v, None).unwrap();
                    black_box(ns.peek_located(&k, |_, at| at).unwrap());
                } else {
                    black_box(ns.put_located(&k, &v, None).unwrap());
                }
            }
        }
        "sealed_put_read" | "sealed_put_located" => {
            let raw: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
            let secrets = Arc::new(Secrets::new(&[b"probe-secret"]).unwrap());
            let sealed =
                SealedBackend::new(raw, secrets, picocache::secret::SecretSource::Explicit);
            let ns = sealed.namespace("probe", Limits::default()).unwrap();
            let loc = ns.locate().unwrap();
            for i in 0..n {
                let (k, v) = (key(i), value(i));
                if mode == "sealed_put_read" {
                    ns.put(&k, &v, None).unwrap();
                    let mut same = None;
                    loc.read_located(&k, false, &mut |got, at| {
                        same = (got == v).then_some(at);
                    })
                    .unwrap();
                    black_box(same);
                } else {
                    black_box(loc.put_located(&k, &v, None).unwrap());
                }
            }
        }
        other => panic!("unknown mode {other}"),
    }
    eprintln!(
        "{mode} n={n}: {:.2} us per step (wall)",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

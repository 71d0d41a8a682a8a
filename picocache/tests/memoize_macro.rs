//! `#[picocache::memoize]` on real functions, each kept in a temporary store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use picocache::{memoize, Backend, CacheInfo, LocalBackend};
use serde::{Deserialize, Serialize};

/// One temporary store for the whole test binary.
fn store() -> Arc<dyn Backend> {
    static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().unwrap());
    static BACKEND: LazyLock<Arc<dyn Backend>> =
        LazyLock::new(|| Arc::new(LocalBackend::open(DIR.path()).unwrap()));
    BACKEND.clone()
}

static SLOW_RUNS: AtomicU64 = AtomicU64::new(0);

/// Adds, slowly.
#[memoize(backend = store())]
fn add(a: u64, b: u64) -> u64 {
    SLOW_RUNS.fetch_add(1, Ordering::SeqCst);
    a + b
}

#[test]
fn caches_and_reports() {
    assert_eq!(add(1, 2), 3);
    assert_eq!(add(1, 2), 3);
    assert_eq!(add(2, 1), 3);
    assert_eq!(SLOW_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(
        add_cache().cache_info(),
        CacheInfo {
            hits: 1,
            misses: 2,
            maxsize: Some(128),
            currsize: 2
        }
    );
    // `module::function#` and a digest of its code (tests/memoize_naming.rs).
    let name = add_cache().namespace_name();
    assert!(name.starts_with("memoize_macro::add#"), "{name}");
    assert_eq!(name.len(), "memoize_macro::add#".len() + 16, "{name}");
    add_cache().cache_clear();
    assert_eq!(add_cache().cache_info().currsize, 0);
}

#[memoize(backend = store(), maxsize = None)]
fn fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    fib(n - 1) + fib(n - 2)
}

#[test]
fn recursion() {
    assert_eq!(fib(80), 23_416_728_348_467_685);
    assert_eq!(fib_cache().cache_info().currsize, 81);
    assert_eq!(fib_cache().cache_info().misses, 81);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

/// Borrowed and owned arguments, `mut` bindings, a struct result, `?`.
#[memoize(backend = store(), maxsize = 2, version = 3, name = "custom::describe")]
pub fn describe(label: &str, mut points: Vec<Point>, scale: Option<i32>) -> Result<String, String> {
    points.sort_by_key(|p| p.x);
    let s = scale.ok_or("no scale")?;
    Ok(format!(
        "{label}: {:?}",
        points.iter().map(|p| p.x * s).collect::<Vec<_>>()
    ))
}

#[test]
fn arguments_of_many_kinds() {
    let pts = vec![Point { x: 2, y: 0 }, Point { x: 1, y: 0 }];
    assert_eq!(
        describe("a", pts.clone(), Some(10)),
        Ok("a: [10, 20]".to_string())
    );
    assert_eq!(
        describe("a", pts.clone(), Some(10)),
        Ok("a: [10, 20]".to_string())
    );
    assert_eq!(describe("a", pts, None), Err("no scale".to_string()));
    assert_eq!(describe_cache().namespace_name(), "custom::describe@3");
    let info = describe_cache().cache_info();
    assert_eq!((info.hits, info.misses, info.maxsize), (1, 2, Some(2)));
}

#[memoize(backend = store(), maxsize = 0)]
fn uncached(x: u8) -> u8 {
    x
}

#[test]
fn maxsize_zero() {
    uncached(1);
    uncached(1);
    let info = uncached_cache().cache_info();
    assert_eq!((info.hits, info.misses, info.currsize), (0, 2, 0));
}

#[memoize(path = "/dev/null/not-a-store", strict)]
fn strict_broken(x: u8) -> u8 {
    x
}

#[memoize(path = "/dev/null/not-a-store")]
fn lenient_broken(x: u8) -> u8 {
    x + 1
}

#[memoize(backend = store(), strict, ttl_secs = 3600)]
fn strict_ok(x: u8) -> u8 {
    x + 2
}

#[test]
fn strict_mode_returns_result() {
    let r: picocache::Result<u8> = strict_broken(1);
    assert!(r.is_err());
    assert_eq!(lenient_broken(1), 2);
    assert_eq!(strict_ok(1).unwrap(), 3);
    assert_eq!(strict_ok(1).unwrap(), 3);
    assert_eq!(strict_ok_cache().cache_info().hits, 1);
}

#[memoize(backend = store())]
fn no_arguments() -> String {
    "constant".into()
}

#[test]
fn zero_arguments() {
    assert_eq!(no_arguments(), "constant");
    assert_eq!(no_arguments(), "constant");
    assert_eq!(no_arguments_cache().cache_info().hits, 1);
}

#[test]
fn concurrent_callers_compute_once() {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    #[memoize(backend = store())]
    fn slow(x: u32) -> u32 {
        RUNS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(300));
        x * 2
    }
    let barrier = std::sync::Barrier::new(6);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                barrier.wait();
                assert_eq!(slow(21), 42);
            });
        }
    });
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    let info = slow_cache().cache_info();
    assert_eq!((info.hits, info.misses), (5, 1));
}

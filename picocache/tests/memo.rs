//! Memoization semantics of `picocache::Memo` against real local stores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::Duration;

use picocache::{Backend, CacheInfo, Error, LocalBackend, Memo};
use picocache_engine::{FaultIo, Options};

fn backend(dir: &tempfile::TempDir) -> Arc<dyn Backend> {
    Arc::new(LocalBackend::open(dir.path()).unwrap())
}

fn info(hits: u64, misses: u64, maxsize: Option<u64>, currsize: u64) -> CacheInfo {
    CacheInfo {
        hits,
        misses,
        maxsize,
        currsize,
    }
}

#[test]
fn hits_misses_and_currsize() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::square").backend(backend(&dir)).build();
    let runs = AtomicU64::new(0);
    let square = |x: u64| {
        memo.call(x, |x| {
            runs.fetch_add(1, Ordering::SeqCst);
            x * x
        })
    };
    assert_eq!(square(3), 9);
    assert_eq!(square(3), 9);
    assert_eq!(square(4), 16);
    assert_eq!(square(3), 9);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(memo.cache_info(), info(2, 2, Some(128), 2));
}

#[test]
fn maxsize_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::lru")
        .maxsize(Some(2))
        .backend(backend(&dir))
        .build();
    let runs = AtomicU64::new(0);
    let f = |x: u32| {
        memo.call(x, |x| {
            runs.fetch_add(1, Ordering::SeqCst);
            x + 1
        })
    };
    f(1);
    f(2);
    f(1); // 1 is now the most recently used
    f(3); // evicts 2
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(memo.cache_info().currsize, 2);
    f(1);
    assert_eq!(runs.load(Ordering::SeqCst), 3, "1 was kept");
    f(2);
    assert_eq!(runs.load(Ordering::SeqCst), 4, "2 was evicted");
}

#[test]
fn maxsize_zero_caches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::zero")
        .maxsize(Some(0))
        .backend(backend(&dir))
        .build();
    let runs = AtomicU64::new(0);
    for _ in 0..3 {
        let v = memo.call(5u8, |x| {
            runs.fetch_add(1, Ordering::SeqCst);
            x as u64 * 2
        });
        assert_eq!(v, 10);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(memo.cache_info(), info(0, 3, Some(0), 0));
}

#[test]
fn unlimited_maxsize() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::unlimited")
        .maxsize(None)
        .backend(backend(&dir))
        .build();
    for i in 0..300u32 {
        memo.call(i, |i| i.to_string());
    }
    assert_eq!(memo.cache_info(), info(0, 300, None, 300));
}

#[test]
fn ttl_expires_entries() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::ttl")
        .ttl(Some(Duration::from_millis(100)))
        .backend(backend(&dir))
        .build();
    let runs = AtomicU64::new(0);
    let f = || {
        memo.call("k", |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            1u8
        })
    };
    f();
    std::thread::sleep(Duration::from_millis(300));
    f();
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the entry expired");
}

#[test]
fn version_change_invalidates() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    let v1 = Memo::builder("t::versioned")
        .version("1")
        .backend(b.clone())
        .build();
    let v2 = Memo::builder("t::versioned")
        .version("2")
        .backend(b.clone())
        .build();
    assert_ne!(v1.namespace_name(), v2.namespace_name());
    assert_eq!(v1.call(1u8, |_| "old".to_string()), "old");
    assert_eq!(v2.call(1u8, |_| "new".to_string()), "new");
    assert_eq!(v1.call(1u8, |_| -> String { unreachable!() }), "old");
    assert_eq!(v2.call(1u8, |_| -> String { unreachable!() }), "new");
}

#[test]
fn two_functions_never_share_and_clear_is_per_function() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    let double = Memo::builder("t::double").backend(b.clone()).build();
    let triple = Memo::builder("t::triple").backend(b.clone()).build();
    assert_eq!(double.call(7u64, |x| x * 2), 14);
    assert_eq!(triple.call(7u64, |x| x * 3), 21);
    assert_eq!(double.call(7u64, |x| x * 2), 14);
    assert_eq!(triple.call(7u64, |x| x * 3), 21);
    assert_eq!(double.cache_info(), info(1, 1, Some(128), 1));
    triple.cache_clear();
    assert_eq!(triple.cache_info(), info(0, 0, Some(128), 0));
    assert_eq!(double.cache_info(), info(1, 1, Some(128), 1));
    assert_eq!(double.call(7u64, |_| -> u64 { unreachable!() }), 14);
}

#[test]
fn long_names_are_shortened_distinctly() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    let base = "m::".to_string() + &"x".repeat(300);
    let a = Memo::builder(base.clone() + "a").backend(b.clone()).build();
    let c = Memo::builder(base + "c").backend(b.clone()).build();
    assert!(a.namespace_name().len() <= 232);
    assert_ne!(a.namespace_name(), c.namespace_name());
    assert_eq!(a.call(1u8, |_| 1u8), 1);
    assert_eq!(c.call(1u8, |_| 2u8), 2);
    assert_eq!(a.call(1u8, |_| 0u8), 1);
}

#[test]
fn entries_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let memo = Memo::builder("t::persist").backend(backend(&dir)).build();
        assert_eq!(memo.call((1u8, "a"), |_| vec![1u32, 2, 3]), vec![1, 2, 3]);
    }
    let memo = Memo::builder("t::persist").backend(backend(&dir)).build();
    let v: Vec<u32> = memo.call((1u8, "a"), |_| unreachable!("must be cached"));
    assert_eq!(v, vec![1, 2, 3]);
    assert_eq!(memo.cache_info().hits, 1);
}

/// Runs in a child process (see `shared_with_another_process`).
#[test]
fn child_process_helper() {
    let Ok(dir) = std::env::var("PICOCACHE_MEMO_CHILD_DIR") else {
        return;
    };
    let memo = Memo::builder("t::process").url(dir).build();
    let v: u64 = memo.call(42u64, |_| panic!("the child must read the parent's entry"));
    assert_eq!(v, 4242);
    let v: u64 = memo.call(43u64, |_| 4343);
    assert_eq!(v, 4343);
}

#[test]
fn shared_with_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::process").backend(backend(&dir)).build();
    assert_eq!(memo.call(42u64, |_| 4242u64), 4242);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_helper", "--nocapture"])
        .env("PICOCACHE_MEMO_CHILD_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    // The child's entry is visible here. cache_info counts this process's
    // calls (as lru_cache and the Python package do); the store's counters
    // hold both processes'.
    assert_eq!(memo.call(43u64, |_| 0u64), 4343);
    assert_eq!(memo.cache_info(), info(1, 1, Some(128), 2));
    let store = memo.stats().unwrap();
    assert_eq!((store.hits, store.misses), (2, 2));
}

#[test]
fn concurrent_same_arguments_compute_once() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::once").backend(backend(&dir)).build();
    let runs = AtomicU64::new(0);
    let barrier = Barrier::new(8);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                barrier.wait();
                let v = memo.call("same", |_| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Long enough that the others arrive while it runs.
                    std::thread::sleep(Duration::from_millis(300));
                    99u32
                });
                assert_eq!(v, 99);
            });
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(memo.cache_info(), info(7, 1, Some(128), 1));
}

/// Two callers that can only finish together: if the memoizer serialized
/// them, the first would wait for the second forever (here: until the guard
/// timeout, and report it).
#[test]
fn different_arguments_run_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::parallel").backend(backend(&dir)).build();
    let rendezvous = (Mutex::new(0u32), Condvar::new());
    let meet = || -> bool {
        let (m, cv) = &rendezvous;
        let mut n = m.lock().unwrap();
        *n += 1;
        cv.notify_all();
        let (n, timeout) = cv
            .wait_timeout_while(n, Duration::from_secs(30), |n| *n < 2)
            .unwrap();
        !timeout.timed_out() && *n >= 2
    };
    let results: Vec<bool> = std::thread::scope(|s| {
        let (memo, meet) = (&memo, &meet);
        let hs: Vec<_> = (0..2u32)
            .map(|i| s.spawn(move || memo.call(i, |_| meet())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results, vec![true, true], "the two calls did not overlap");
}

fn fib(memo: &Memo, runs: &AtomicU64, n: u64) -> u64 {
    memo.call(n, |n| {
        runs.fetch_add(1, Ordering::SeqCst);
        if n < 2 {
            n
        } else {
            fib(memo, runs, n - 1) + fib(memo, runs, n - 2)
        }
    })
}

#[test]
fn recursion_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::fib")
        .maxsize(None)
        .backend(backend(&dir))
        .build();
    let runs = AtomicU64::new(0);
    assert_eq!(fib(&memo, &runs, 80), 23_416_728_348_467_685);
    assert_eq!(runs.load(Ordering::SeqCst), 81);
    assert_eq!(fib(&memo, &runs, 80), 23_416_728_348_467_685);
    assert_eq!(runs.load(Ordering::SeqCst), 81);
}

#[test]
fn a_value_that_no_longer_decodes_is_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    let old = Memo::builder("t::changed").backend(b.clone()).build();
    assert_eq!(old.call(1u8, |_| 7u64), 7);
    // The function now returns a String: the old entry does not decode.
    let new = Memo::builder("t::changed").backend(b.clone()).build();
    assert_eq!(new.call(1u8, |_| "seven".to_string()), "seven");
    // The recomputed value replaced the old one.
    let again: String = new.call(1u8, |_| unreachable!());
    assert_eq!(again, "seven");
    // In strict mode the same situation is an error.
    let strict = Memo::builder("t::changed").strict(true).backend(b).build();
    let r: picocache::Result<u64> = strict.try_call(1u8, |_| 7);
    assert!(matches!(r, Err(Error::Serialization(_))), "{r:?}");
}

#[test]
fn garbage_entry_is_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    let memo = Memo::builder("t::garbage").backend(b.clone()).build();
    let ns = memo.namespace().unwrap();
    ns.put(
        &picocache::memo::encode(&5u32).unwrap(),
        b"\xff\xff\xff",
        None,
    )
    .unwrap();
    assert_eq!(memo.call(5u32, |x| vec![x]), vec![5u32]);
    assert_eq!(memo.call(5u32, |_| Vec::<u32>::new()), vec![5u32]);
}

#[test]
fn io_failure_never_breaks_the_call_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let io = FaultIo::new(None);
    let b: Arc<dyn Backend> = Arc::new(
        LocalBackend::open_with(dir.path(), Options::default().io(Arc::new(io.clone()))).unwrap(),
    );
    let memo = Memo::builder("t::io").backend(b.clone()).build();
    let strict = Memo::builder("t::io").strict(true).backend(b).build();
    memo.namespace().unwrap();
    strict.namespace().unwrap();
    io.set_countdown(Some(0));
    assert_eq!(memo.call(1u8, |_| 10u8), 10);
    let r = strict.try_call(2u8, |_| 20u8);
    assert!(io.tripped());
    assert!(r.is_err(), "strict mode reports the failed write: {r:?}");
    io.set_countdown(None);
    assert_eq!(strict.try_call(3u8, |_| 30u8).unwrap(), 30);
    assert_eq!(strict.try_call(3u8, |_| 0u8).unwrap(), 30);
}

#[test]
fn unusable_store_never_breaks_the_call_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("store");
    let memo = Memo::builder("t::bad").url(bad.to_str().unwrap()).build();
    assert_eq!(memo.call(1u8, |_| 2u8), 2);
    assert_eq!(memo.call(1u8, |_| 3u8), 3, "nothing is cached");
    let strict = Memo::builder("t::bad")
        .url(bad.to_str().unwrap())
        .strict(true)
        .build();
    assert!(strict.try_call(1u8, |_| 2u8).is_err());
    assert!(strict.try_cache_info().is_err());
}

#[test]
#[should_panic(expected = "strict mode")]
fn call_panics_in_strict_mode_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let strict = Memo::builder("t::bad")
        .url(file.join("s").to_str().unwrap())
        .strict(true)
        .build();
    strict.call(1u8, |_| 2u8);
}

#[test]
fn a_panicking_leader_lets_a_waiter_compute() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::panic").backend(backend(&dir)).build();
    let started = Barrier::new(2);
    std::thread::scope(|s| {
        let leader = s.spawn(|| {
            memo.call(1u8, |_| -> u8 {
                started.wait();
                std::thread::sleep(Duration::from_millis(200));
                panic!("leader fails");
            })
        });
        started.wait();
        let v = memo.call(1u8, |_| 5u8);
        assert_eq!(v, 5);
        assert!(leader.join().is_err());
    });
    assert_eq!(memo.call(1u8, |_| 0u8), 5);
}

#[test]
fn recursion_with_same_arguments_runs_uncached_instead_of_deadlocking() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::reentrant").backend(backend(&dir)).build();
    fn f(memo: &Memo, depth: u32) -> u32 {
        memo.call(0u8, |_| {
            if depth == 0 {
                1
            } else {
                f(memo, depth - 1) + 1
            }
        })
    }
    assert_eq!(f(&memo, 3), 4);
}

/// Runs in a child process (see `processes_compute_a_key_once`).
#[test]
fn race_child_helper() {
    let Ok(dir) = std::env::var("PICOCACHE_MEMO_RACE_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let memo = Memo::builder("t::race")
        .url(dir.join("store").to_str().unwrap())
        .build();
    let v: u64 = memo.call("race", |_| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("computed"))
            .unwrap();
        writeln!(f, "{}", std::process::id()).unwrap();
        // Long enough that the other processes ask while this one computes.
        std::thread::sleep(Duration::from_millis(1500));
        77
    });
    assert_eq!(v, 77);
}

#[test]
fn processes_compute_a_key_once() {
    let dir = tempfile::tempdir().unwrap();
    // Create the store (and namespace) first so the children race on the key only.
    Memo::builder("t::race")
        .url(dir.path().join("store").to_str().unwrap())
        .build()
        .namespace()
        .unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "race_child_helper", "--nocapture"])
                .env("PICOCACHE_MEMO_RACE_DIR", dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "child failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let computed = std::fs::read_to_string(dir.path().join("computed")).unwrap();
    assert_eq!(computed.lines().count(), 1, "computed by: {computed}");
}

#[test]
fn call_many_computes_only_the_misses_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::builder("t::many")
        .maxsize(None)
        .backend(backend(&dir))
        .build();
    let runs = AtomicU64::new(0);
    let sq = |x: u64| {
        runs.fetch_add(1, Ordering::SeqCst);
        x * x
    };
    memo.call(2u64, sq);
    assert_eq!(memo.call_many([1u64, 2, 3, 2, 1], sq), vec![1, 4, 9, 4, 1]);
    assert_eq!(runs.load(Ordering::SeqCst), 3); // 2 before, then 1 and 3
    assert_eq!(memo.call_many([3u64, 1], sq), vec![9, 1]);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(memo.call(3u64, sq), 9);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

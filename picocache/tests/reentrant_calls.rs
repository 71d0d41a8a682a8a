//! A memoized function that calls itself with the same arguments while it
//! computes them never hangs: the inner call runs like an uncached call
//! would (issue 10). Each case runs in a thread joined with a deadline, so a
//! regression fails instead of hanging.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use picocache::{memoize, Backend, LocalBackend, Memo};

/// Far below the lease timeouts used here (60 s by default, 30 s below).
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `f` in a thread; panics if it has not returned within `DEADLINE`.
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still running after {DEADLINE:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the call panicked"),
    }
}

fn temp_dir() -> &'static tempfile::TempDir {
    static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().unwrap());
    &DIR
}

fn local_store() -> Arc<dyn Backend> {
    static BACKEND: LazyLock<Arc<dyn Backend>> =
        LazyLock::new(|| Arc::new(LocalBackend::open(temp_dir().path().join("local")).unwrap()));
    BACKEND.clone()
}

fn sqlite_store() -> Arc<dyn Backend> {
    static BACKEND: LazyLock<Arc<dyn Backend>> = LazyLock::new(|| {
        let path = temp_dir().path().join("cache.sqlite");
        picocache::open(&format!("sqlite:///{}", path.display())).unwrap()
    });
    BACKEND.clone()
}

static LOCAL_DEPTH: AtomicU32 = AtomicU32::new(0);
static LOCAL_RUNS: AtomicU32 = AtomicU32::new(0);

/// Calls itself once with the same argument, then returns.
#[memoize(backend = local_store())]
fn local_once_more(x: u64) -> u64 {
    LOCAL_RUNS.fetch_add(1, Ordering::SeqCst);
    if LOCAL_DEPTH.fetch_add(1, Ordering::SeqCst) == 0 {
        local_once_more(x) + 1
    } else {
        x
    }
}

#[test]
fn local_same_arguments_reentry_runs_uncached() {
    let v = within_deadline("local re-entrant call", || local_once_more(7));
    // What the plain function returns: the inner call 7, the outer 7 + 1.
    assert_eq!(v, 8);
    assert_eq!(LOCAL_RUNS.load(Ordering::SeqCst), 2);
    // The outer result is what is stored.
    assert_eq!(local_once_more(7), 8);
    assert_eq!(LOCAL_RUNS.load(Ordering::SeqCst), 2);
}

static SQLITE_DEPTH: AtomicU32 = AtomicU32::new(0);
static SQLITE_RUNS: AtomicU32 = AtomicU32::new(0);

/// Calls itself once with the same argument, then returns.
#[memoize(backend = sqlite_store())]
fn sqlite_once_more(x: u64) -> u64 {
    SQLITE_RUNS.fetch_add(1, Ordering::SeqCst);
    if SQLITE_DEPTH.fetch_add(1, Ordering::SeqCst) == 0 {
        sqlite_once_more(x) + 1
    } else {
        x
    }
}

#[test]
fn sqlite_same_arguments_reentry_runs_uncached() {
    let v = within_deadline("SQLite re-entrant call", || sqlite_once_more(7));
    assert_eq!(v, 8);
    assert_eq!(SQLITE_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(sqlite_once_more(7), 8);
    assert_eq!(SQLITE_RUNS.load(Ordering::SeqCst), 2);
}

/// A function whose `Memo` is built at each call (so the inner call has its
/// own in-process flight table): the outer call holds the store lease on the
/// key, and the inner call must not wait for it.
fn rebuilt_memo(backend: Arc<dyn Backend>, depth: &'static AtomicU32, x: u64) -> u64 {
    let memo = Memo::builder("reentrant_calls::rebuilt")
        .backend(backend.clone())
        .lease_timeout(Duration::from_secs(30))
        .build();
    memo.call(x, |x| {
        if depth.fetch_add(1, Ordering::SeqCst) == 0 {
            rebuilt_memo(backend, depth, x) + 1
        } else {
            x
        }
    })
}

#[test]
fn local_reentry_through_another_memo_skips_its_own_lease() {
    static DEPTH: AtomicU32 = AtomicU32::new(0);
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let b = backend.clone();
    let v = within_deadline("local re-entrant call through another Memo", move || {
        rebuilt_memo(b, &DEPTH, 3)
    });
    assert_eq!(v, 4);
    assert_eq!(DEPTH.load(Ordering::SeqCst), 2);
    // The outer call stored its value last.
    assert_eq!(rebuilt_memo(backend, &DEPTH, 3), 4);
}

#[test]
fn sqlite_reentry_through_another_memo_skips_its_own_lease() {
    static DEPTH: AtomicU32 = AtomicU32::new(0);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:///{}", dir.path().join("c.sqlite").display());
    let backend = picocache::open(&url).unwrap();
    let b = backend.clone();
    let v = within_deadline("SQLite re-entrant call through another Memo", move || {
        rebuilt_memo(b, &DEPTH, 3)
    });
    assert_eq!(v, 4);
    assert_eq!(DEPTH.load(Ordering::SeqCst), 2);
    assert_eq!(rebuilt_memo(backend, &DEPTH, 3), 4);
}

//! The in-process tier of `Memo` on the local engine: a result kept in the
//! process is served only while its record is still the key's live entry.
//! Every change another handle of the store makes (another process, in real
//! use: here a second `LocalBackend` opened on the same directory, which
//! shares nothing with the first but the files) is seen at the next call:
//! an overwrite, a removal, a clear, an eviction, an expiry, a planted
//! value. Hits served from the tier count as hits, in the process and in
//! the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use picocache::memo::{encode, encode_value, namespace_name};
use picocache::{Backend, Limits, LocalBackend, Memo, SealedBackend, Secrets};

const SECRET: &[u8] = b"tier test secret";
const NAME: &str = "tier::f";

fn memo(b: &Arc<dyn Backend>, limits: Limits) -> Memo {
    Memo::builder(NAME)
        .version("1")
        .secret(SECRET)
        .maxsize(limits.maxsize)
        .ttl(limits.ttl)
        .backend(b.clone())
        .build()
}

/// The same store, opened again: another process's view of it.
fn other_handle(dir: &std::path::Path, limits: Limits) -> Arc<dyn picocache::Namespace> {
    let raw: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir).unwrap());
    let secrets = Arc::new(Secrets::new(&[SECRET]).unwrap());
    let sealed = SealedBackend::new(raw, secrets, picocache::secret::SecretSource::Explicit);
    sealed
        .namespace(&namespace_name(NAME, Some("1")), limits)
        .unwrap()
}

/// Calls `m` for `x` with a function that returns `x * 10 + generation`,
/// and says whether the function ran.
fn call(m: &Memo, x: u64, generation: &AtomicU64) -> (u64, bool) {
    let mut ran = false;
    let v = m.call(x, |x| {
        ran = true;
        x * 10 + generation.load(Ordering::SeqCst)
    });
    (v, ran)
}

#[test]
fn another_handles_changes_are_seen_at_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let m = memo(&b, Limits::maxsize(None));
    let other = other_handle(dir.path(), Limits::maxsize(None));
    let g = AtomicU64::new(0);
    let key = encode(&7u64).unwrap();

    assert_eq!(call(&m, 7, &g), (70, true));
    assert_eq!(call(&m, 7, &g), (70, false)); // read, kept in the process
    assert_eq!(call(&m, 7, &g), (70, false)); // served from the process

    // Overwritten by another handle: its value, not the kept one.
    other
        .put(&key, &encode_value(&71u64).unwrap(), None)
        .unwrap();
    assert_eq!(call(&m, 7, &g), (71, false));
    assert_eq!(call(&m, 7, &g), (71, false));

    // Removed there: computed here again.
    assert!(other.remove(&key).unwrap());
    g.store(2, Ordering::SeqCst);
    assert_eq!(call(&m, 7, &g), (72, true));
    assert_eq!(call(&m, 7, &g), (72, false));

    // Cleared there: computed again.
    other.clear().unwrap();
    g.store(3, Ordering::SeqCst);
    assert_eq!(call(&m, 7, &g), (73, true));
    assert_eq!(call(&m, 7, &g), (73, false));
}

#[test]
fn a_planted_value_behind_a_kept_one_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let m = memo(&b, Limits::maxsize(None));
    let g = AtomicU64::new(0);
    assert_eq!(call(&m, 5, &g), (50, true));
    assert_eq!(call(&m, 5, &g), (50, false)); // kept in the process
                                              // Another program writes the raw store: unsealed bytes that decode as
                                              // a u64 if anyone decoded them.
    let raw = LocalBackend::open(dir.path()).unwrap();
    let ns = raw
        .namespace(&namespace_name(NAME, Some("1")), Limits::maxsize(None))
        .unwrap();
    ns.put(
        &encode(&5u64).unwrap(),
        &encode_value(&666u64).unwrap(),
        None,
    )
    .unwrap();
    g.store(1, Ordering::SeqCst);
    assert_eq!(call(&m, 5, &g), (51, true)); // rejected: computed
    assert_eq!(call(&m, 5, &g), (51, false));
    assert_eq!(m.stats().unwrap().rejected, 1);
}

#[test]
fn evictions_and_expiry_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let m = memo(&b, Limits::maxsize(Some(2)));
    let g = AtomicU64::new(0);
    assert_eq!(call(&m, 1, &g), (10, true));
    assert_eq!(call(&m, 1, &g), (10, false)); // kept
                                              // Another handle fills the namespace: key 1 is evicted.
    let other = other_handle(dir.path(), Limits::maxsize(Some(2)));
    for k in [2u64, 3] {
        other
            .put(
                &encode(&k).unwrap(),
                &encode_value(&(k * 10)).unwrap(),
                None,
            )
            .unwrap();
    }
    g.store(1, Ordering::SeqCst);
    assert_eq!(call(&m, 1, &g), (11, true));

    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let limits = Limits {
        ttl: Some(Duration::from_millis(300)),
        ..Limits::maxsize(None)
    };
    let m = memo(&b, limits);
    let g = AtomicU64::new(0);
    assert_eq!(call(&m, 1, &g), (10, true));
    assert_eq!(call(&m, 1, &g), (10, false)); // kept
    std::thread::sleep(Duration::from_millis(400));
    g.store(1, Ordering::SeqCst);
    assert_eq!(call(&m, 1, &g), (11, true)); // expired
}

#[test]
fn hits_from_the_process_count_as_hits() {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let m = memo(&b, Limits::maxsize(None));
    let g = AtomicU64::new(0);
    for _ in 0..5 {
        call(&m, 9, &g);
    }
    let info = m.cache_info();
    assert_eq!((info.hits, info.misses, info.currsize), (4, 1, 1));
    let s = m.stats().unwrap();
    assert_eq!((s.hits, s.misses), (4, 1), "{s:?}");
    m.cache_clear();
    assert_eq!(call(&m, 9, &g), (90, true));
}

//! Adversarial tests (session 12) of `Memo`'s in-process tier on the local
//! engine, with real separate processes: the test binary runs itself again
//! (`child` below, selected by `S12_ROLE`) to overwrite, remove, clear,
//! evict, compact or plant a raw value in the store while the parent holds a
//! result in its tier. The parent must never be served a kept value whose
//! record another process replaced, and its hits from the tier must count,
//! in the process and in the store (seen from another process).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use picocache::memo::{encode, namespace_name};
use picocache::{Backend, Limits, LocalBackend, Memo, SealedBackend, Secrets};

const SECRET: &[u8] = b"session 12 secret";
const NAME: &str = "s12::f";

fn memo(dir: &Path, maxsize: Option<u64>) -> Memo {
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir).unwrap());
    Memo::builder(NAME)
        .version("1")
        .secret(SECRET)
        .maxsize(maxsize)
        .backend(b)
        .build()
}

fn sealed_ns(dir: &Path, maxsize: Option<u64>) -> Arc<dyn picocache::Namespace> {
    let raw: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir).unwrap());
    let secrets = Arc::new(Secrets::new(&[SECRET]).unwrap());
    let sealed = SealedBackend::new(raw, secrets, picocache::secret::SecretSource::Explicit);
    sealed
        .namespace(&namespace_name(NAME, Some("1")), Limits::maxsize(maxsize))
        .unwrap()
}

/// Runs this test binary again as a child process doing `role` on `dir`.
fn run_child(role: &str, dir: &Path, arg: u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--test-threads=1", "--nocapture"])
        .env("S12_ROLE", role)
        .env("S12_DIR", dir)
        .env("S12_ARG", arg.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child {role} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("S12 CHILD DONE"),
        "child {role} did not run: {text}"
    );
}

/// The child's side (a no-op when run as an ordinary test).
#[test]
fn child() {
    let Ok(role) = std::env::var("S12_ROLE") else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var("S12_DIR").unwrap());
    let arg: u64 = std::env::var("S12_ARG").unwrap().parse().unwrap();
    let key = |x: u64| encode(&x).unwrap();
    let val = |x: u64| picocache::memo::encode_value(&x).unwrap();
    match role.as_str() {
        "overwrite" => sealed_ns(&dir, None).put(&key(7), &val(arg), None).unwrap(),
        "remove" => assert!(sealed_ns(&dir, None).remove(&key(7)).unwrap()),
        "clear" => sealed_ns(&dir, None).clear().unwrap(),
        "evict" => {
            let ns = sealed_ns(&dir, Some(2));
            for k in 100..104u64 {
                ns.put(&key(k), &val(k), None).unwrap();
            }
        }
        "plant" => {
            let raw = LocalBackend::open(&dir).unwrap();
            let ns = raw
                .namespace(&namespace_name(NAME, Some("1")), Limits::maxsize(None))
                .unwrap();
            ns.put(&key(7), &val(666), None).unwrap();
        }
        "compact_and_rewrite" => {
            // Compaction moves records; then the same value is put again.
            let ns = sealed_ns(&dir, None);
            for k in 200..260u64 {
                ns.put(&key(k), &val(k), None).unwrap();
                ns.remove(&key(k)).unwrap();
            }
            let raw = LocalBackend::open(&dir).unwrap();
            raw.store().compact().unwrap();
            ns.put(&key(7), &val(arg), None).unwrap();
        }
        "memo_call" => {
            // Another process's Memo computes after a clear.
            let m = memo(&dir, None);
            m.cache_clear();
            let v = m.call(7u64, |x| x * 10 + arg);
            assert_eq!(v, 70 + arg);
        }
        "stats" => {
            let s = sealed_ns(&dir, None).stats().unwrap();
            println!("S12 STATS hits={} misses={}", s.hits, s.misses);
            assert_eq!(s.hits, arg, "{s:?}");
        }
        "writer_loop" => {
            // Overwrites key 7 with increasing values for a while.
            let ns = sealed_ns(&dir, None);
            let until = Instant::now() + Duration::from_millis(1500);
            let mut i = arg;
            while Instant::now() < until {
                ns.put(&key(7), &val(i), None).unwrap();
                i += 1;
            }
            ns.put(&key(7), &val(u64::MAX / 2), None).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
    println!("S12 CHILD DONE");
}

fn call(m: &Memo, x: u64, g: &AtomicU64) -> (u64, bool) {
    let mut ran = false;
    let v = m.call(x, |x| {
        ran = true;
        x * 10 + g.load(Ordering::SeqCst)
    });
    (v, ran)
}

#[test]
fn other_processes_changes_are_never_hidden_by_the_tier() {
    let dir = tempfile::tempdir().unwrap();
    let m = memo(dir.path(), None);
    let g = AtomicU64::new(0);
    assert_eq!(call(&m, 7, &g), (70, true));
    assert_eq!(call(&m, 7, &g), (70, false));
    assert_eq!(call(&m, 7, &g), (70, false)); // from the tier

    run_child("overwrite", dir.path(), 71);
    assert_eq!(call(&m, 7, &g), (71, false));
    assert_eq!(call(&m, 7, &g), (71, false));

    // The same bytes as the kept value, written again by another process:
    // still the right value (a new record), and still a hit.
    run_child("overwrite", dir.path(), 71);
    assert_eq!(call(&m, 7, &g), (71, false));

    run_child("remove", dir.path(), 0);
    g.store(2, Ordering::SeqCst);
    assert_eq!(call(&m, 7, &g), (72, true));
    assert_eq!(call(&m, 7, &g), (72, false));

    run_child("clear", dir.path(), 0);
    g.store(3, Ordering::SeqCst);
    assert_eq!(call(&m, 7, &g), (73, true));
    assert_eq!(call(&m, 7, &g), (73, false));

    run_child("compact_and_rewrite", dir.path(), 74);
    assert_eq!(call(&m, 7, &g), (74, false));
    assert_eq!(call(&m, 7, &g), (74, false));

    // Another process's Memo clears and computes its own value.
    run_child("memo_call", dir.path(), 5);
    g.store(9, Ordering::SeqCst);
    assert_eq!(call(&m, 7, &g), (75, false));

    run_child("plant", dir.path(), 0);
    g.store(6, Ordering::SeqCst);
    assert_eq!(call(&m, 7, &g), (76, true)); // the planted value is rejected
    assert_eq!(call(&m, 7, &g), (76, false));
}

#[test]
fn an_eviction_by_another_process_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let m = memo(dir.path(), Some(2));
    let g = AtomicU64::new(0);
    assert_eq!(call(&m, 7, &g), (70, true));
    assert_eq!(call(&m, 7, &g), (70, false));
    run_child("evict", dir.path(), 0);
    g.store(1, Ordering::SeqCst);
    assert_eq!(call(&m, 7, &g), (71, true));
    assert_eq!(call(&m, 7, &g), (71, false));
}

#[test]
fn hits_from_the_tier_are_seen_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let m = memo(dir.path(), None);
    let g = AtomicU64::new(0);
    for _ in 0..10 {
        assert_eq!(call(&m, 7, &g).0, 70);
    }
    let info = m.cache_info();
    assert_eq!((info.hits, info.misses), (9, 1));
    run_child("stats", dir.path(), 9);
}

#[test]
fn a_concurrent_writer_process_never_makes_values_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let m = memo(dir.path(), None);
    let g = AtomicU64::new(1_000);
    assert_eq!(call(&m, 7, &g), (1_070, true));
    let d = dir.path().to_path_buf();
    let child = std::thread::spawn(move || run_child("writer_loop", &d, 2_000));
    let mut last = 0;
    let mut calls = 0u64;
    while !child.is_finished() {
        let (v, ran) = call(&m, 7, &g);
        assert!(!ran, "a hit expected");
        assert!(v >= last, "went back from {last} to {v}");
        last = v;
        calls += 1;
    }
    child.join().unwrap();
    assert_eq!(call(&m, 7, &g), (u64::MAX / 2, false));
    assert_eq!(m.cache_info().hits, calls + 1);
}

// ---------------------------------------------------------------------------
// Passwords in URLs never shown by the native layer's errors or Debug.
// ---------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The error of opening `url` (or the Debug of the backend opened), which
/// must not show `secret`.
fn shown(url: &str) -> String {
    match picocache::open(url) {
        Err(e) => format!("{e} {e:?}"),
        Ok(b) => format!("{b:?}"),
    }
}

#[test]
fn a_password_with_special_characters_is_never_shown() {
    let port = free_port();
    for url in [
        format!("redis://:se/cr#etZ9@127.0.0.1:{port}/0"),
        format!("redis://user:p@ss/wordZ9@127.0.0.1:{port}/0"),
        format!("postgresql://u:se/cr@etZ9@127.0.0.1:{port}/db"),
        format!("mysql://u:se/cr#etZ9@127.0.0.1:{port}/db"),
    ] {
        let text = shown(&url);
        for piece in ["se/cr", "etZ9", "ss/wordZ9", "wordZ9"] {
            assert!(!text.contains(piece), "{url}: {text}");
        }
    }
}

/// Was a bug: a PostgreSQL URL with `?password=SECRET` that libpq's parser
/// rejects was shown whole in the error (the SQL layer redacted the user
/// information only).
#[test]
fn a_password_given_as_a_query_parameter_is_never_shown() {
    let port = free_port();
    let secret = "QpSecret9x";
    let mut leaks = Vec::new();
    for url in [
        format!("postgresql://u@127.0.0.1:{port}/db?password={secret}&bogus=1"),
        format!("postgresql://u@127.0.0.1:{port}/db?password={secret}"),
        format!("mysql://u@127.0.0.1:{port}/db?password={secret}"),
        format!("redis://127.0.0.1:{port}/0?password={secret}"),
    ] {
        let text = shown(&url);
        if text.contains(secret) {
            leaks.push(format!("{url}: {text}"));
        }
    }
    assert!(leaks.is_empty(), "{leaks:#?}");
}

#[test]
fn hits_from_the_tier_refresh_recency_for_lru_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let m = memo(dir.path(), Some(2));
    let g = AtomicU64::new(0);
    assert!(call(&m, 1, &g).1);
    assert!(call(&m, 2, &g).1);
    for _ in 0..5 {
        assert!(!call(&m, 1, &g).1); // from the tier: 1 is now the most recent
    }
    assert!(call(&m, 3, &g).1); // evicts the least recently used: 2
    g.store(1, Ordering::SeqCst);
    assert_eq!(call(&m, 1, &g), (10, false));
    assert_eq!(call(&m, 2, &g), (21, true));
    // Another process sees the same: 1 and 2 stored, 3 evicted by 2.
    let ns = sealed_ns(dir.path(), Some(2));
    assert!(ns.get(&encode(&3u64).unwrap()).unwrap().is_none());
}

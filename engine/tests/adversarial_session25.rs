//! Adversarial tests (session 25) of the engine: what earlier files
//! (stress, lock_timeout, truncated, crash, lifecycle, ...) did not try.
//!
//! - many writer processes (12) doing misses (puts of new keys, with
//!   background compaction of small segments) on one store while no process
//!   is stopped: no put may fail with `Error::Locked` (the 3 s
//!   `Options::lock_timeout`), no value may be wrong; the longest put is
//!   printed;
//! - leases: moved to and dropped on another thread, held across a
//!   `fork()` whose child drops its copy and exits, taken in a thread-local
//!   destructor, leases of two stores (and two handles of one store) in one
//!   thread;
//! - namespace names of `MAX_NAME_LEN` bytes and one more, and
//!   `MAX_NAMESPACES + 1` namespaces defined by several processes at once;
//! - symlinks planted in the store's directory (at a segment's temporary
//!   name, at `reserve`): is anything outside the store written?
//! - more maps in one process than the SIGBUS guard's table holds;
//! - the compaction lock: held by a stopped process, inherited by a fork;
//! - a namespace removed and its row reused while other handles read it;
//! - `Duration::MAX` as the lock timeout.
//!
//! Tests of bugs (their doc comments say what happened and a suggested
//! fix) were `#[ignore = "BUG: ..."]` when the round found them; all were
//! fixed in the same session and run as regression tests; `Held:` tests pass.
//!
//! Child processes are this test binary run again (`child` below, selected
//! by `E25_ROLE`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use picocache_engine::{Error, Limits, Options, Store, MAX_NAMESPACES, MAX_NAME_LEN};

mod common;

extern "C" {
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn _exit(code: i32) -> !;
}

/// Runs this test binary again as `role` with `envs`.
fn child_command(role: &str, envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["child", "--exact", "--test-threads=1", "--nocapture"])
        .env("E25_ROLE", role);
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// The lines of `out` that hold `tag`, from it on (libtest prints
/// `test child ... ` before the child's first line).
fn tagged(out: &[u8], tag: &str) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.find(tag).map(|i| l[i..].to_owned()))
        .collect()
}

/// The value `writer` stores under its `n`th key: self-describing and of
/// varied length (up to ~2 KiB).
fn value_of(writer: u64, n: u64) -> Vec<u8> {
    let mut v = format!("w{writer}/n{n}/").into_bytes();
    let len = 16 + ((n * 7919 + writer * 104_729) % 2048) as usize;
    v.resize(len, (writer as u8) ^ (n as u8));
    v
}

fn writer_opts() -> Options {
    let o = Options::default()
        .segment_size(256 << 10)
        .compaction_interval(Duration::from_millis(50));
    if std::env::var_os("E25_POWER_LOSS").is_some() {
        o.durability(picocache_engine::Durability::PowerLoss)
    } else {
        o
    }
}

/// The child's side (a no-op when run as an ordinary test).
#[test]
fn child() {
    let Ok(role) = std::env::var("E25_ROLE") else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap();
    match role.as_str() {
        // Puts new keys (each a miss) for `E25_SECS`, overwriting some and
        // reading each back; prints counts and the longest put.
        "writer" => {
            let me: u64 = var("E25_ID").parse().unwrap();
            let secs: u64 = var("E25_SECS").parse().unwrap();
            let store = Store::open(var("E25_DIR"), writer_opts()).unwrap();
            let ns = store.namespace("misses", Limits::default()).unwrap();
            let until = Instant::now() + Duration::from_secs(secs);
            let (mut puts, mut locked, mut other, mut wrong) = (0u64, 0u64, 0u64, 0u64);
            let (mut max, mut over_1s, mut over_2s) = (Duration::ZERO, 0u64, 0u64);
            let mut n = 0u64;
            while Instant::now() < until {
                // Every fourth put overwrites an earlier key (dead records
                // for the compactor).
                let k = if n % 4 == 3 { n / 2 } else { n };
                let key = format!("w{me}/k{k}");
                let v = value_of(me, n);
                let t = Instant::now();
                let r = ns.put(key.as_bytes(), &v);
                let took = t.elapsed();
                max = max.max(took);
                over_1s += u64::from(took >= Duration::from_secs(1));
                over_2s += u64::from(took >= Duration::from_secs(2));
                match r {
                    Ok(_) => {
                        puts += 1;
                        match ns.get(key.as_bytes()) {
                            Ok(Some(got)) if got == v => {}
                            Ok(None) => {}
                            _ => wrong += 1,
                        }
                    }
                    Err(Error::Locked(e)) => {
                        locked += 1;
                        eprintln!("writer {me}: Locked after {took:?}: {e}");
                    }
                    Err(e) => {
                        other += 1;
                        eprintln!("writer {me}: {e}");
                    }
                }
                n += 1;
            }
            println!(
                "E25W puts={puts} locked={locked} other={other} wrong={wrong} \
                 max_us={} over_1s={over_1s} over_2s={over_2s}",
                max.as_micros()
            );
        }
        // Defines `E25_COUNT` namespaces named `p{E25_ID}-{i}`; prints how
        // many were refused as past the limit and any other error.
        "namespaces" => {
            let me = var("E25_ID");
            let count: usize = var("E25_COUNT").parse().unwrap();
            let store = Store::open(var("E25_DIR"), Options::default()).unwrap();
            let (mut ok, mut full, mut other) = (0, 0, 0);
            for i in 0..count {
                match store.namespace(&format!("p{me}-{i}"), Limits::default()) {
                    Ok(ns) => match ns.put(b"k", me.as_bytes()) {
                        Ok(_) => ok += 1,
                        Err(Error::InvalidArgument(_)) => full += 1,
                        Err(e) => {
                            other += 1;
                            eprintln!("put: {e}");
                        }
                    },
                    Err(Error::InvalidArgument(_)) => full += 1,
                    Err(e) => {
                        other += 1;
                        eprintln!("namespace: {e}");
                    }
                }
            }
            println!("E25N ok={ok} full={full} other={other}");
        }
        // Takes the lease of `E25_KEY` in namespace "l", then forks: the
        // forked process drops its copy of the lease (and, with
        // `E25_REOPEN`, opens the store again and tries the lease itself)
        // and exits; then this process asks another process whether the
        // lease is still held, drops it, and asks again.
        "fork_lease" => {
            let dir = var("E25_DIR");
            let key = var("E25_KEY");
            let store = Store::open(&dir, Options::default()).unwrap();
            let ns = store.namespace("l", Limits::default()).unwrap();
            let lease = ns.lease(key.as_bytes(), Duration::ZERO).unwrap().unwrap();
            let reopen = std::env::var("E25_REOPEN").is_ok();
            // SAFETY: the forked process only drops the lease (which, in a
            // forked process, only compares a counter and forgets it) and
            // opens the store (allocations; this process's other thread
            // waits in libtest's channel, holding no allocator lock).
            let pid = unsafe { fork() };
            if pid == 0 {
                drop(lease);
                let mut code = 0;
                if reopen {
                    let s2 = Store::open(&dir, Options::default()).unwrap();
                    let n2 = s2.namespace("l", Limits::default()).unwrap();
                    // The parent holds it: 2 = taken anyway.
                    if n2.lease(key.as_bytes(), Duration::ZERO).unwrap().is_some() {
                        code = 2;
                    }
                }
                // SAFETY: ends the forked process without running the
                // parent's atexit handlers or destructors.
                unsafe { _exit(code) };
            }
            let mut status = 0;
            // SAFETY: waits for the process forked above.
            assert_eq!(unsafe { waitpid(pid, &mut status, 0) }, pid);
            println!("E25F child_status={status}");
            let ask = || {
                let out = child_command("try_lease", &[("E25_DIR", &dir), ("E25_KEY", &key)])
                    .output()
                    .unwrap();
                tagged(&out.stdout, "E25L").join(",")
            };
            println!("E25F held_after_child={}", ask());
            drop(lease);
            println!("E25F after_drop={}", ask());
        }
        // Opens the store `E25_HANDLES` times and reads every key through
        // each handle (each maps every segment), truncates segment 2 to
        // 4 KiB, then reads its keys through the first and the last handle.
        "many_handles" => {
            let dir = var("E25_DIR");
            let handles: usize = var("E25_HANDLES").parse().unwrap();
            let keys: u32 = var("E25_KEYS").parse().unwrap();
            let opts = || Options::default().background_compaction(false);
            let stores: Vec<Store> = (0..handles)
                .map(|_| Store::open(&dir, opts()).unwrap())
                .collect();
            let nss: Vec<_> = stores
                .iter()
                .map(|s| s.existing_namespace("f").unwrap().unwrap())
                .collect();
            for ns in &nss {
                for k in 0..keys {
                    assert!(ns.get(format!("k{k}").as_bytes()).unwrap().is_some());
                }
            }
            println!("E25H mapped");
            std::io::stdout().flush().unwrap();
            let seg = Path::new(&dir).join("seg-00000002.log");
            std::fs::OpenOptions::new()
                .write(true)
                .open(seg)
                .unwrap()
                .set_len(4096)
                .unwrap();
            for (which, ns) in [("first", &nss[0]), ("last", &nss[handles - 1])] {
                let mut misses = 0;
                for k in 0..keys {
                    if ns.get(format!("k{k}").as_bytes()).unwrap().is_none() {
                        misses += 1;
                    }
                }
                println!("E25H {which} handle read every key: {misses} misses");
                std::io::stdout().flush().unwrap();
            }
        }
        // Tries the lease of `E25_KEY` in namespace "l" without waiting.
        "try_lease" => {
            let store = Store::open(var("E25_DIR"), Options::default()).unwrap();
            let ns = store.namespace("l", Limits::default()).unwrap();
            let got = ns.lease(var("E25_KEY").as_bytes(), Duration::ZERO).unwrap();
            println!("E25L taken={}", got.is_some());
        }
        other => panic!("unknown role {other}"),
    }
    std::io::stdout().flush().unwrap();
}

// ---------------------------------------------------------------------------
// Many writer processes.
// ---------------------------------------------------------------------------

/// Held: 12 processes putting new keys (misses) as fast as they can for
/// 8 s on one store with 256 KiB segments and background compaction (every
/// process runs a compactor) on 2 shared cores: no put fails with
/// `Error::Locked` or another error, and every value read back is the one
/// put. The longest put and how many took over 1 s and 2 s are printed (the
/// writer lock is polled with `LOCK_NB`, which is not fair: a waiter may
/// lose every try to the others). With `E25_POWER_LOSS=1` the writers use
/// `Durability::PowerLoss` (fdatasync per put): held as well (32,655 puts,
/// longest 0.086 s, here).
#[test]
fn many_writer_processes_never_time_out_on_the_writer_lock() {
    let dir = tempfile::tempdir().unwrap();
    // Create the store first (so no child's open rebuilds anything).
    drop(Store::open(dir.path(), writer_opts()).unwrap());
    let procs = 12;
    let secs = "8";
    let children: Vec<_> = (0..procs)
        .map(|i| {
            child_command(
                "writer",
                &[
                    ("E25_DIR", dir.path().to_str().unwrap()),
                    ("E25_ID", &i.to_string()),
                    ("E25_SECS", secs),
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let l = tagged(&out.stdout, "E25W");
        if !out.status.success() || l.len() != 1 {
            failures.push(format!(
                "{:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        lines.extend(l);
    }
    let field = |l: &str, f: &str| -> u64 {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{f}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    let sum = |f: &str| lines.iter().map(|l| field(l, f)).sum::<u64>();
    let max_us = lines.iter().map(|l| field(l, "max_us")).max().unwrap_or(0);
    println!(
        "{procs} writer processes for {secs} s: puts={} locked={} other={} wrong={} \
         longest put {:.3} s, puts over 1 s: {}, over 2 s: {}",
        sum("puts"),
        sum("locked"),
        sum("other"),
        sum("wrong"),
        max_us as f64 / 1e6,
        sum("over_1s"),
        sum("over_2s"),
    );
    assert!(failures.is_empty(), "children failed: {failures:#?}");
    assert_eq!(sum("wrong"), 0, "wrong values read back");
    assert_eq!(sum("other"), 0, "puts failed");
    assert_eq!(sum("locked"), 0, "puts timed out on the writer lock");
    // Everything is still there and right.
    let store = Store::open(dir.path(), writer_opts()).unwrap();
    let report = store.verify().unwrap();
    println!("verify after: {report:?}");
}

// ---------------------------------------------------------------------------
// Leases.
// ---------------------------------------------------------------------------

/// Whether another process gets the lease of `key` in namespace "l" of
/// the store in `dir` right now.
fn taken_elsewhere(dir: &Path, key: &str) -> bool {
    let out = child_command(
        "try_lease",
        &[("E25_DIR", dir.to_str().unwrap()), ("E25_KEY", key)],
    )
    .output()
    .unwrap();
    let l = tagged(&out.stdout, "E25L");
    assert_eq!(l.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    l[0] == "E25L taken=true"
}

/// A lease taken on one thread and moved to another (`Lease` is `Send`),
/// which holds it while the first thread asks for the same key again: the
/// first thread gets it at once (its per-thread holder still counts the
/// moved lease as its own), so two threads hold one key's lease together.
/// Every time. Another thread, and another process, are refused as they
/// should be. Severity: low for `Memo` (which holds a lease on the stack
/// of the calling thread), but the engine's API promises that no other
/// holder "in any thread or process" gets a held lease, and a caller that
/// keeps leases in a map shared by worker threads (or an async task that
/// moves between threads) computes a key twice. Suggested fix: record the
/// taking thread's id in the `Lease`, and when one is dropped (or moved:
/// not observable) on another thread, or make `Lease: !Send` (a
/// `PhantomData<*const ()>`), which states the contract in the type.
#[test]
fn a_lease_moved_to_another_thread_still_excludes_the_thread_that_took_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let ns = store.namespace("l", Limits::default()).unwrap();
    let lease = ns.lease(b"k", Duration::ZERO).unwrap().unwrap();
    let (give, take) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let l: picocache_engine::Lease = take.recv().unwrap();
        let _ = done_rx.recv();
        drop(l);
    });
    give.send(lease).unwrap();
    let other_thread = {
        let ns = ns.clone();
        std::thread::spawn(move || ns.lease(b"k", Duration::ZERO).unwrap().is_some())
            .join()
            .unwrap()
    };
    let elsewhere = taken_elsewhere(dir.path(), "k");
    let again_here = ns.lease(b"k", Duration::ZERO).unwrap();
    println!(
        "while a moved lease is held: another thread took it: {other_thread}, another \
         process: {elsewhere}, the first thread: {}",
        again_here.is_some()
    );
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    assert!(!other_thread && !elsewhere);
    assert!(
        again_here.is_none(),
        "the thread that took the lease and gave it away took it again while held"
    );
}

/// Held: a lease moved to another thread and dropped there is released
/// (another process gets it), and the first thread's later leases work.
#[test]
fn a_lease_dropped_on_another_thread_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let ns = store.namespace("l", Limits::default()).unwrap();
    let lease = ns.lease(b"k", Duration::ZERO).unwrap().unwrap();
    let other = ns.lease(b"other", Duration::ZERO).unwrap().unwrap();
    std::thread::spawn(move || drop(lease)).join().unwrap();
    assert!(
        taken_elsewhere(dir.path(), "k"),
        "released on the other thread"
    );
    assert!(!taken_elsewhere(dir.path(), "other"), "the one kept");
    drop(other);
    assert!(taken_elsewhere(dir.path(), "other"));
    let again = ns.lease(b"k", Duration::ZERO).unwrap();
    assert!(again.is_some());
    assert!(!taken_elsewhere(dir.path(), "k"));
}

/// Runs the `fork_lease` role; its `E25F` lines.
fn fork_lease(reopen: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut envs = vec![("E25_DIR", dir.path().to_str().unwrap()), ("E25_KEY", "k")];
    if reopen {
        envs.push(("E25_REOPEN", "1"));
    }
    let out = child_command("fork_lease", &envs).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tagged(&out.stdout, "E25F")
}

/// Held: a process holding a lease forks; the forked process drops its copy
/// of the lease and exits (also after opening the store again and asking
/// for the same key, which it is refused): the parent still holds the lease
/// (another process is refused it), and releases it when it drops it.
#[test]
fn a_lease_held_across_a_fork_stays_the_parents() {
    for reopen in [false, true] {
        let l = fork_lease(reopen);
        println!("reopen={reopen}: {l:?}");
        assert_eq!(
            l,
            [
                "E25F child_status=0",
                "E25F held_after_child=E25L taken=false",
                "E25F after_drop=E25L taken=true"
            ],
            "reopen={reopen}"
        );
    }
}

thread_local! {
    static AT_EXIT: std::cell::RefCell<Option<TlsLease>> = const { std::cell::RefCell::new(None) };
}

/// Takes leases from a thread-local's destructor.
struct TlsLease {
    ns: picocache_engine::Namespace,
    report: mpsc::Sender<(bool, bool)>,
}

impl Drop for TlsLease {
    fn drop(&mut self) {
        // "held" is held by the main thread: refused. "free" is free.
        let held = self.ns.lease(b"held", Duration::from_millis(50)).unwrap();
        let free = self.ns.lease(b"free", Duration::ZERO).unwrap();
        let r = (held.is_some(), free.is_some());
        drop(free);
        // And again (a holder made outside the thread's life is reused or
        // made anew).
        let again = self.ns.lease(b"free", Duration::ZERO).unwrap();
        let _ = self.report.send((r.0, r.1 && again.is_some()));
    }
}

/// Held: leases taken in a thread-local's destructor as the thread exits
/// respect a lease another thread holds, are released when dropped there
/// (another process gets them after), and can be taken again.
#[test]
fn leases_taken_in_a_thread_local_destructor_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let ns = store.namespace("l", Limits::default()).unwrap();
    let held = ns.lease(b"held", Duration::ZERO).unwrap().unwrap();
    let (tx, rx) = mpsc::channel();
    let ns2 = ns.clone();
    std::thread::spawn(move || {
        // Taken once in the thread's life, so that the lease module's
        // thread-local exists and may be destroyed before ours.
        drop(ns2.lease(b"warm", Duration::ZERO).unwrap());
        AT_EXIT.with(|a| {
            *a.borrow_mut() = Some(TlsLease {
                ns: ns2,
                report: tx,
            })
        });
    })
    .join()
    .unwrap();
    let (got_held, got_free) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    println!("in a TLS destructor: took a held lease: {got_held}, a free one: {got_free}");
    assert!(!got_held, "a lease another thread holds was taken");
    assert!(got_free);
    assert!(
        taken_elsewhere(dir.path(), "free"),
        "released after the thread"
    );
    drop(held);
}

/// Held: one thread holding leases of one key in two stores (and the same
/// key in two namespaces of one) holds each: another process is refused
/// each, and gets each when its lease is dropped, in any order. Two handles
/// of one store (`Store::open` twice) in one thread do not share a holder:
/// the second handle's lease of a key the first holds waits for it (the
/// whole wait) and is refused, as another thread's would be (printed).
#[test]
fn leases_of_two_stores_in_one_thread_are_each_held() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sa = Store::open(a.path(), Options::default()).unwrap();
    let sb = Store::open(b.path(), Options::default()).unwrap();
    let (na, nb) = (
        sa.namespace("l", Limits::default()).unwrap(),
        sb.namespace("l", Limits::default()).unwrap(),
    );
    let la = na.lease(b"k", Duration::ZERO).unwrap().unwrap();
    let lb = nb.lease(b"k", Duration::ZERO).unwrap().unwrap();
    assert!(!taken_elsewhere(a.path(), "k") && !taken_elsewhere(b.path(), "k"));
    drop(la);
    assert!(taken_elsewhere(a.path(), "k"));
    assert!(!taken_elsewhere(b.path(), "k"));
    let la2 = na.lease(b"k", Duration::ZERO).unwrap().unwrap();
    drop(lb);
    assert!(taken_elsewhere(b.path(), "k"));
    assert!(!taken_elsewhere(a.path(), "k"));
    // A second handle of store a, in this thread.
    let sa2 = Store::open(a.path(), Options::default()).unwrap();
    let na2 = sa2.namespace("l", Limits::default()).unwrap();
    let t = Instant::now();
    let second = na2.lease(b"k", Duration::from_millis(200)).unwrap();
    println!(
        "a second handle of one store, same thread, same key: taken={} after {:?}",
        second.is_some(),
        t.elapsed()
    );
    assert!(second.is_none(), "two handles held one key");
    drop(la2);
    assert!(na2.lease(b"k", Duration::ZERO).unwrap().is_some());
}

// ---------------------------------------------------------------------------
// Namespace limits.
// ---------------------------------------------------------------------------

/// Held: a name of `MAX_NAME_LEN` bytes (ASCII, and multi-byte UTF-8 that
/// ends exactly there) is a namespace of its own that survives a reopen; one
/// byte more is `InvalidArgument`, as is the same name cut at a character
/// boundary short of the limit but with one 2-byte character past it; two
/// names that differ only in their last byte are two namespaces.
#[test]
fn names_at_and_past_the_length_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let at = "n".repeat(MAX_NAME_LEN);
    let at_other = format!("{}m", "n".repeat(MAX_NAME_LEN - 1));
    let utf8_at = "é".repeat(MAX_NAME_LEN / 2); // 232 bytes
    assert_eq!(utf8_at.len(), MAX_NAME_LEN);
    let past = "n".repeat(MAX_NAME_LEN + 1);
    let utf8_past = format!("{}é", "n".repeat(MAX_NAME_LEN - 1));
    for (name, v) in [(&at, "a"), (&at_other, "b"), (&utf8_at, "c")] {
        let ns = store.namespace(name, Limits::default()).unwrap();
        ns.put(b"k", v.as_bytes()).unwrap();
    }
    for name in [&past, &utf8_past] {
        let r = store.namespace(name, Limits::default());
        assert!(
            matches!(r, Err(Error::InvalidArgument(_))),
            "{} bytes: {r:?}",
            name.len()
        );
    }
    drop(store);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    for (name, v) in [(&at, "a"), (&at_other, "b"), (&utf8_at, "c")] {
        let ns = store.existing_namespace(name).unwrap().unwrap();
        assert_eq!(ns.get(b"k").unwrap(), Some(v.as_bytes().to_vec()), "{name}");
    }
    let mut names = store.namespace_names().unwrap();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
}

/// Held: 4 processes defining 300 namespaces each at once in one store
/// (1200, past the 1024 of `MAX_NAMESPACES`): exactly `MAX_NAMESPACES` are
/// defined, every other definition is `InvalidArgument` (no other error, no
/// panic), and every defined namespace holds the value its process put.
#[test]
fn more_than_max_namespaces_from_several_processes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), Options::default()).unwrap());
    let procs = 4;
    let each = 300;
    let children: Vec<_> = (0..procs)
        .map(|i| {
            child_command(
                "namespaces",
                &[
                    ("E25_DIR", dir.path().to_str().unwrap()),
                    ("E25_ID", &i.to_string()),
                    ("E25_COUNT", &each.to_string()),
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let (mut ok, mut full, mut other) = (0, 0, 0);
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let l = tagged(&out.stdout, "E25N");
        assert_eq!(l.len(), 1);
        let get = |f: &str| -> usize {
            l[0].split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{f}=")))
                .unwrap()
                .parse()
                .unwrap()
        };
        ok += get("ok");
        full += get("full");
        other += get("other");
    }
    println!("{procs} processes x {each} namespaces: defined {ok}, refused {full}, other {other}");
    assert_eq!(other, 0);
    assert_eq!(ok, MAX_NAMESPACES);
    assert_eq!(ok + full, procs * each);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let names = store.namespace_names().unwrap();
    assert_eq!(names.len(), MAX_NAMESPACES);
    for name in names {
        let me = name
            .trim_start_matches('p')
            .split('-')
            .next()
            .unwrap()
            .to_owned();
        let ns = store.existing_namespace(&name).unwrap().unwrap();
        assert_eq!(ns.get(b"k").unwrap(), Some(me.into_bytes()), "{name}");
    }
}

// ---------------------------------------------------------------------------
// Symlinks planted in the store's directory.
// ---------------------------------------------------------------------------

/// The store's new segments are prepared under a predictable temporary name,
/// `seg-XXXXXXXX.tmp` (`writer/append.rs`, `roll`), opened with
/// `Modes::open(tmp, true)`: `create_new` fails on a symlink planted there,
/// and the fallback opens it following the symlink with `truncate(true)`.
/// So a symlink `seg-00000002.tmp` -> any file the store's user may write
/// (outside the store) has that file truncated, preallocated and given a
/// segment header when the store rolls to segment 2, and then renamed into
/// place as `seg-00000002.log`: every later append of the store goes into
/// the outside file. Every time, at the first roll past the planted id.
/// Severity: high for a store opened with `group_access` (0770: any member
/// of the group can plant the link and make the owner's processes destroy
/// the owner's files, a classic symlink attack); for a private store, a
/// user's own mistake destroys a file. The same fallback follows symlinks
/// at `reserve` (an outside file shorter than the reserve is extended with
/// zeros), `lock` and `leases` (opened for writing, not written).
/// Suggested fix: create temporary files with `create_new` only (on
/// `AlreadyExists`, remove the name with `remove_file`, which removes a
/// symlink and not its target, and try again), or with a random suffix as
/// `index.tmp.PID.RANDOM` is; open the store's own files with
/// `O_NOFOLLOW` (`OpenOptionsExt::custom_flags(libc::O_NOFOLLOW)`).
#[test]
fn a_symlink_at_a_segments_temporary_name_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    // A store with one segment, then links at the next ids' temporary names.
    let opts = || {
        Options::default()
            .segment_size(64 << 10)
            .background_compaction(false)
    };
    drop(Store::open(&store_dir, opts()).unwrap());
    let mut victims = Vec::new();
    for id in 1..=16u32 {
        let victim = outside.path().join(format!("precious-{id}"));
        std::fs::write(&victim, format!("precious file {id}\n")).unwrap();
        std::os::unix::fs::symlink(&victim, store_dir.join(format!("seg-{id:08x}.tmp"))).unwrap();
        victims.push(victim);
    }
    let store = Store::open(&store_dir, opts()).unwrap();
    let ns = store.namespace("f", Limits::default()).unwrap();
    let value = vec![7u8; 4000];
    for i in 0..100u32 {
        ns.put(format!("k{i}").as_bytes(), &value).unwrap();
    }
    for i in 0..100u32 {
        assert_eq!(
            ns.get(format!("k{i}").as_bytes()).unwrap().as_deref(),
            Some(&value[..])
        );
    }
    let mut changed = Vec::new();
    for (i, v) in victims.iter().enumerate() {
        let now = std::fs::read(v).unwrap();
        if now != format!("precious file {}\n", i + 1).into_bytes() {
            changed.push(format!("{}: now {} bytes", v.display(), now.len()));
        }
    }
    let links: Vec<String> = std::fs::read_dir(&store_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_symlink())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    println!("outside files written: {changed:#?}\nsymlinks in the store now: {links:?}");
    assert!(
        changed.is_empty(),
        "files outside the store were overwritten: {changed:#?}"
    );
}

/// `reserve` planted as a symlink to an outside file shorter than the
/// reserve (a user's notes; a file that is not all zeros in a fresh
/// directory would make `Store::open` refuse it as foreign, but in an
/// existing store no file is checked): opening the store extends the
/// outside file with zeros to the reserve's length (256 KiB here), through
/// the symlink (`ensure_reserve`: `Modes::open(path, false)` then
/// `posix_fallocate`). Every open. Severity: low to medium (a write outside
/// the store; with `group_access`, a group member can make the owner's
/// processes pad the owner's files). Suggested fix: as for
/// `a_symlink_at_a_segments_temporary_name_is_never_written_through`
/// (`O_NOFOLLOW`; a `reserve` that is not a regular file is removed and made
/// again).
#[test]
fn a_symlink_at_the_reserve_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    drop(Store::open(&store_dir, Options::default()).unwrap());
    std::fs::remove_file(store_dir.join("reserve")).unwrap();
    let victim = outside.path().join("notes");
    std::fs::write(&victim, b"short notes\n").unwrap();
    std::os::unix::fs::symlink(&victim, store_dir.join("reserve")).unwrap();
    let store = Store::open(&store_dir, Options::default()).unwrap();
    let ns = store.namespace("f", Limits::default()).unwrap();
    ns.put(b"k", b"v").unwrap();
    drop(ns);
    drop(store);
    let now = std::fs::read(&victim).unwrap();
    println!(
        "the outside file is now {} bytes (was 12); its head: {:?}",
        now.len(),
        String::from_utf8_lossy(&now[..now.len().min(12)])
    );
    assert!(
        now == b"short notes\n",
        "the outside file was changed: {} bytes now",
        now.len()
    );
}

// ---------------------------------------------------------------------------
// The SIGBUS guard's table.
// ---------------------------------------------------------------------------

/// The SIGBUS guard (`sys.rs`, `bus_guard`) registers every map in a table
/// of 8192 slots; a map made when the table is full has no guard. A process
/// whose handles map more than 8192 segments and indexes (here one store of
/// 120 segments of 16 KiB opened 71 times, 8591 maps, every key read through each
/// handle; as many maps come from a few big stores, up to 4096 segments
/// each, opened more than once) is killed by SIGBUS when another program
/// truncates a segment one of its unguarded maps reads, instead of reading
/// a miss (which the first handle, whose maps are guarded, does). Every
/// time. Severity: low (it takes a great many maps in one process, and an
/// open file per map), but the engine promises "never SIGBUS". Suggested
/// fix: grow the table (a second level allocated on demand, published
/// before the map is used), or refuse to map without a slot (fall back to
/// `pread` for that segment, or fail the read as a miss).
#[test]
fn a_truncated_segment_never_kills_a_process_with_many_maps() {
    let dir = tempfile::tempdir().unwrap();
    let keys = 840u32;
    {
        let s = Store::open(
            dir.path(),
            Options::default()
                .segment_size(16 << 10)
                .background_compaction(false),
        )
        .unwrap();
        let ns = s.namespace("f", Limits::default()).unwrap();
        for k in 0..keys {
            ns.put(format!("k{k}").as_bytes(), &[k as u8; 2000])
                .unwrap();
        }
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count();
    let handles = 8192 / (segments + 1) + 4;
    let out = child_command(
        "many_handles",
        &[
            ("E25_DIR", dir.path().to_str().unwrap()),
            ("E25_HANDLES", &handles.to_string()),
            ("E25_KEYS", &keys.to_string()),
        ],
    )
    .output()
    .unwrap();
    let lines = tagged(&out.stdout, "E25H");
    println!(
        "{segments} segments, {handles} handles ({} maps): {:?}; {lines:#?}",
        handles * (segments + 1),
        out.status
    );
    assert!(
        out.status.success() && lines.len() == 3,
        "the process died: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Long writer-lock holds.
// ---------------------------------------------------------------------------

/// Fills namespace `name` of `store` with `n` small entries.
fn fill(store: &Store, name: &str, n: u32) {
    let ns = store.namespace(name, Limits::default()).unwrap();
    let keys: Vec<String> = (0..n).map(|i| format!("{name}/{i}")).collect();
    for chunk in keys.chunks(10_000) {
        let items: Vec<(&[u8], &[u8])> =
            chunk.iter().map(|k| (k.as_bytes(), k.as_bytes())).collect();
        ns.put_batch(&items).unwrap();
    }
}

/// While `op` runs on one handle, another handle (as another process
/// would) puts in a loop; returns (how long `op` took, the longest put,
/// puts that failed with `Error::Locked`).
fn while_other_writes(dir: &Path, op: impl FnOnce()) -> (Duration, Duration, u64) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        let writer = sc.spawn(|| {
            let s = Store::open(dir, Options::default()).unwrap();
            let ns = s.namespace("other", Limits::default()).unwrap();
            let (mut longest, mut locked, mut i) = (Duration::ZERO, 0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                match ns.put(format!("o{}", i % 1000).as_bytes(), b"v") {
                    Ok(_) => {}
                    Err(Error::Locked(_)) => locked += 1,
                    Err(e) => panic!("{e}"),
                }
                longest = longest.max(t.elapsed());
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            (longest, locked)
        });
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        op();
        let took = t.elapsed();
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (longest, locked) = writer.join().unwrap();
        (took, longest, locked)
    })
}

/// Held: clearing a namespace of 400k entries, and shrinking one of 400k
/// entries to `maxsize` 1 (new limits are enforced at once), each in one
/// hold of the writer lock, while another handle puts: the other handle's
/// puts wait the whole hold (past `Options::lock_timeout`, 3 s, they would
/// fail with `Error::Locked`), which is about 1.3 us per entry in a debug
/// build (0.5 to 1 s here): a namespace would need millions of entries for a
/// clear to lock other writers out. Printed: how long each took, and the
/// longest put meanwhile.
#[test]
fn clearing_or_shrinking_a_big_namespace_holds_the_writer_lock() {
    let dir = tempfile::tempdir().unwrap();
    let n = 400_000;
    let store = Store::open(dir.path(), Options::default().background_compaction(false)).unwrap();
    let t = Instant::now();
    fill(&store, "big", n);
    fill(&store, "big2", n);
    println!("filled 2 x {n} entries in {:.2?}", t.elapsed());
    let ns = store.existing_namespace("big").unwrap().unwrap();
    let (clear, longest, locked) = while_other_writes(dir.path(), || ns.clear().unwrap());
    println!(
        "clear of {n} entries: {clear:.3?}; the other handle's longest put {longest:.3?}, \
         Locked: {locked}"
    );
    let (shrink, longest2, locked2) = while_other_writes(dir.path(), || {
        store.namespace("big2", Limits::maxsize(Some(1))).unwrap();
    });
    println!(
        "shrink of {n} entries to 1: {shrink:.3?}; the other handle's longest put \
         {longest2:.3?}, Locked: {locked2}"
    );
    assert_eq!(
        store
            .existing_namespace("big")
            .unwrap()
            .unwrap()
            .stats()
            .unwrap()
            .entries,
        0
    );
    assert_eq!(
        store
            .existing_namespace("big2")
            .unwrap()
            .unwrap()
            .stats()
            .unwrap()
            .entries,
        1
    );
    assert_eq!(locked + locked2, 0, "puts failed with Error::Locked");
}

// ---------------------------------------------------------------------------
// The compaction lock.
// ---------------------------------------------------------------------------

/// An `F_OFD_SETLK` (or `F_OFD_GETLK`) on byte 0 of `f`.
#[allow(unsafe_code)]
fn ofd(f: &std::fs::File, cmd: libc::c_int, ty: libc::c_int) -> (bool, libc::c_short) {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero bytes are a valid `flock`; fcntl only reads and
    // writes the struct we pass, on a descriptor this test owns.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ty as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 1;
    let r = unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) };
    (r == 0, fl.l_type)
}

/// Takes the compaction lock of the store in `dir` (byte 0 of `lock`, an
/// OFD lock) as a compactor of another process would, and keeps it while
/// the file lives: a compactor stopped mid-compaction (Ctrl-Z, a debugger),
/// or a forked child that inherited a compactor's descriptor.
fn hold_compaction_lock(dir: &Path) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("lock"))
        .unwrap();
    assert!(ofd(&f, libc::F_OFD_SETLK, libc::F_WRLCK).0, "lock taken");
    f
}

/// Whether byte 0 of `dir/lock` is locked by another description.
fn compaction_locked(dir: &Path) -> bool {
    let f = std::fs::File::open(dir.join("lock")).unwrap();
    let (ok, ty) = ofd(&f, libc::F_OFD_GETLK, libc::F_RDLCK);
    ok && ty != libc::F_UNLCK as libc::c_short
}

/// A store in `dir` with 64 KiB segments, most of their records dead.
fn store_with_dead_segments(dir: &Path) -> Store {
    let s = Store::open(
        dir,
        Options::default()
            .segment_size(64 << 10)
            .background_compaction(false),
    )
    .unwrap();
    let ns = s.namespace("f", Limits::default()).unwrap();
    for round in 0..6u8 {
        for i in 0..300u32 {
            ns.put(format!("k{i}").as_bytes(), &[round; 1500]).unwrap();
        }
    }
    s
}

/// Runs `f` on a thread; its result if it ends within `limit`, else
/// `None` after calling `unblock` (and then waiting for it to end).
fn within<R: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
    unblock: impl FnOnce(),
) -> (Option<R>, Duration) {
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let r = rx.recv_timeout(limit).ok();
    let took = t0.elapsed();
    if r.is_none() {
        unblock();
    }
    h.join().unwrap();
    (r, took)
}

/// `Store::compact` (and `picocache compact`, and a repair) waits for the
/// compaction lock with no deadline (`compaction.rs`,
/// `take_compaction_lock(true)`: a loop of 1 ms sleeps), while the writer
/// lock is waited for at most `Options::lock_timeout` precisely because a
/// process stopped while holding it (Ctrl-Z, a debugger) would otherwise
/// block everyone. A compactor stopped mid-compaction (here: the lock taken
/// by another description, as that process's would be) makes `compact()`
/// wait forever. Every time. Severity: medium (a hang of an explicit
/// maintenance call; see
/// `a_put_on_a_full_disk_never_waits_forever_for_the_compaction_lock` for
/// a memoized call). Suggested fix: wait for the compaction lock at most
/// `lock_timeout` too, and fail with `Error::Locked` (the background
/// compactor already skips a round when it is taken).
#[test]
fn compact_never_waits_forever_for_a_held_compaction_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_dead_segments(dir.path());
    let held = hold_compaction_lock(dir.path());
    let s2 = store.clone();
    let (r, took) = within(
        Duration::from_secs(10),
        move || s2.compact().map_err(|e| e.to_string()),
        || drop(held),
    );
    println!("compact() behind a held compaction lock: {r:?} after {took:.2?}");
    assert!(r.is_some(), "compact() still waiting after {took:?}");
}

/// On a full disk a put compacts (`space.rs`, `retry_if_full` ->
/// `Inner::compact(true)`), waiting for the compaction lock with no
/// deadline: while another process holds it (stopped mid-compaction, or a
/// forked child that inherited a compactor's descriptor, see
/// `a_forked_child_never_keeps_the_compaction_lock`), the put, and the
/// memoized call that makes it, never returns. Every time the disk fills
/// while the lock is held. Severity: high (a memoized call hangs: the
/// project's first rule), needing a full disk and a held lock. Suggested
/// fix: as for `compact_never_waits_forever_for_a_held_compaction_lock`
/// (the put then fails with the full disk's error or `Error::Locked`, and
/// the memoizer steps aside). Needs root (a tmpfs); says so otherwise.
#[test]
fn a_put_on_a_full_disk_never_waits_forever_for_the_compaction_lock() {
    let Some(fs) = common::Tmpfs::mount(8 << 10, "a put on a full disk behind the lock") else {
        return;
    };
    let dir = fs.path();
    let store = Store::open(&dir, Options::default().background_compaction(false)).unwrap();
    let ns = store.namespace("full", Limits::default()).unwrap();
    let held = hold_compaction_lock(&dir);
    let (r, took) = within(
        Duration::from_secs(15),
        move || {
            // Puts until one fails (the disk is full).
            for k in 0u64..100_000 {
                if let Err(e) = ns.put(&k.to_le_bytes(), &[1u8; 10_000]) {
                    return (k, e.to_string());
                }
            }
            (100_000, "never full".into())
        },
        || drop(held),
    );
    println!("puts until the disk is full, the compaction lock held: {r:?} after {took:.2?}");
    // Every file closed before the tmpfs is unmounted (the closer thread
    // closes segments a moment after their maps go).
    drop(store);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        r.is_some(),
        "a put on the full disk still waiting after {took:?}"
    );
}

/// The compaction lock is an OFD lock released when its file is closed
/// (`take_compaction_lock` returns the `File`; nothing unlocks it): a
/// process that forks while its compactor (a background thread, or
/// `compact()`) holds it leaves the child a descriptor of the locked
/// description, and closing its own does not release the lock: it stays
/// held as long as the child lives (a `multiprocessing` or pre-fork server
/// worker: for good). Then every compaction of every process skips or
/// waits (see `compact_never_waits_forever_for_a_held_compaction_lock`):
/// the store grows without bound, and a full disk hangs puts. Whenever a
/// fork falls inside a compaction (the background compactor takes the lock
/// every 500 ms, for a moment even with nothing to do). Severity: high
/// with the two above. Suggested fix: unlock (`F_OFD_SETLK`, `F_UNLCK`)
/// before closing, in a guard's `Drop`, as the leases and the writer lock
/// do.
#[test]
fn a_forked_child_never_keeps_the_compaction_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_dead_segments(dir.path());
    let s2 = store.clone();
    let compactor = std::thread::spawn(move || s2.compact().unwrap());
    let t0 = Instant::now();
    while !compaction_locked(dir.path()) {
        assert!(t0.elapsed() < Duration::from_secs(10), "no compaction seen");
        std::thread::yield_now();
    }
    // SAFETY: the forked process only sleeps and exits (no allocation, no
    // lock), as a long-lived worker would, keeping what it inherited.
    let pid = unsafe { fork() };
    if pid == 0 {
        std::thread::sleep(Duration::from_secs(30));
        unsafe { _exit(0) };
    }
    compactor.join().unwrap();
    let after = compaction_locked(dir.path());
    let s3 = store.clone();
    let (r, took) = within(
        Duration::from_secs(5),
        move || s3.compact().map_err(|e| e.to_string()),
        || {
            // SAFETY: ends the child forked above, and reaps it.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                waitpid(pid, std::ptr::null_mut(), 0);
            }
        },
    );
    if r.is_some() {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    println!(
        "after a fork during compaction, the lock is held: {after}; the next compact(): \
         {r:?} after {took:.2?}"
    );
    assert!(!after, "the forked child holds the compaction lock");
    assert!(r.is_some(), "compact() waited for the child's lock");
}

// ---------------------------------------------------------------------------
// A namespace removed and its row reused while a handle reads.
// ---------------------------------------------------------------------------

/// Readers of namespace "a" (handles of their own, as other processes'
/// would be) look up key "k" while another handle removes "a", defines "b"
/// (which takes the freed row), puts "k" in "b", removes "b", defines "a"
/// and puts "k" again, in a loop. A reader must see "a"'s value or a miss,
/// never "b"'s. Returns (lookups, wrong values, the first wrong one).
fn row_reuse_race(secs: u64) -> (u64, u64, Option<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options::default().background_compaction(false);
    drop(Store::open(dir.path(), opts()).unwrap());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let path = dir.path();
    std::thread::scope(|sc| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                sc.spawn(|| {
                    let s = Store::open(path, opts()).unwrap();
                    let a = s.namespace("a", Limits::default()).unwrap();
                    let (mut n, mut wrong, mut first) = (0u64, 0u64, None);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match a.get(b"k") {
                            Ok(Some(v)) if v != b"value of a" => {
                                wrong += 1;
                                first.get_or_insert(v);
                            }
                            Ok(_) => {}
                            Err(e) => panic!("{e}"),
                        }
                        n += 1;
                    }
                    (n, wrong, first)
                })
            })
            .collect();
        let s = Store::open(path, opts()).unwrap();
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            s.remove_namespace("a").unwrap();
            let b = s.namespace("b", Limits::default()).unwrap();
            b.put(b"k", b"value of b").unwrap();
            s.remove_namespace("b").unwrap();
            let a = s.namespace("a", Limits::default()).unwrap();
            a.put(b"k", b"value of a").unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .fold((0, 0, None), |(n, w, f), (n2, w2, f2)| {
                (n + n2, w + w2, f.or(f2))
            })
    })
}

/// While a namespace is removed and its row reused by another namespace
/// in a loop (`Store::remove_namespace`, as `picocache prune` or
/// `remove_unused_namespaces` does, then a new function's namespace), 2
/// readers of the removed one (handles of their own, as other processes'
/// are) sometimes get the other namespace's value for the same key: a
/// lookup checks that its row still holds its name (`Namespace::id`: the
/// row's name hash), then looks the key up in that row; between the two,
/// the row is freed, redefined for "b", and "b" stores the key, and the
/// lookup finds "b"'s record (same row id, same key: its checks pass).
/// 0 to 4 wrong values per 3 s run of ~1.5 M lookups on 2 cores (more
/// under load). Severity: high for the engine's API (a wrong value); for
/// `Memo` low: the seal binds a value to its namespace's name, so the value
/// is rejected (a miss, counted as rejected). Needs a namespace removed
/// while another process uses it, and a new namespace taking its row and
/// storing the same key at once. Suggested fix: a seqlock on the row: read
/// its definition sequence (`nsr::DEF_SEQ`) with the name hash before the
/// lookup, and again after it; a changed row discards the result (a miss,
/// or resolve again and retry).
#[test]
fn a_reused_namespace_row_never_serves_another_namespaces_value() {
    let (mut n, mut wrong, mut first) = (0, 0, None);
    for _ in 0..3 {
        let (n2, w2, f2) = row_reuse_race(3);
        (n, wrong, first) = (n + n2, wrong + w2, first.or(f2));
        if wrong > 0 {
            break;
        }
    }
    println!(
        "{n} lookups of \"a\" while its row was reused by \"b\": {wrong} returned another \
         value (first: {:?})",
        first.map(|v| String::from_utf8_lossy(&v).into_owned())
    );
    assert_eq!(wrong, 0, "a handle of \"a\" was served \"b\"'s value");
}

// ---------------------------------------------------------------------------
// "Forever" as a timeout.
// ---------------------------------------------------------------------------

/// `Options::lock_timeout(Duration::MAX)` (the way to say "wait as long as
/// it takes", which was the behaviour before the timeout existed):
/// `sys::flock_within` computes `Instant::now() + timeout`, which overflows
/// and panics ("overflow when adding duration to instant") in every write,
/// out of `put` (and out of a memoized call on a `LocalBackend` opened with
/// these options). Every write. Severity: medium (a panic across the API
/// from a setting the docs do not forbid). Suggested fix:
/// `Instant::now().checked_add(timeout)` and no deadline when it is `None`
/// (as `core::flight::Flight::wait_for` does), or clamp the option.
#[test]
fn a_lock_timeout_of_duration_max_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let r = std::panic::catch_unwind(|| {
        let s = Store::open(
            dir.path(),
            Options::default()
                .lock_timeout(Duration::MAX)
                .background_compaction(false),
        )?;
        let ns = s.namespace("f", Limits::default())?;
        ns.put(b"k", b"v")?;
        ns.get(b"k")
    });
    println!("lock_timeout(Duration::MAX): {r:?}");
    assert!(
        matches!(r, Ok(Ok(Some(ref v))) if v == b"v"),
        "{:?}",
        r.as_ref().map_err(|p| p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())))
    );
}

//! Adversarial tests (session 24) of the Rust side: what earlier sessions
//! (adversarial_session12, memoize_naming, reentrant_calls, memo*, sealed,
//! cli) did not try.
//!
//! - `#[memoize]` identity: nested functions with one name in one module,
//!   names holding `@`, result and argument types edited outside the
//!   function's tokens, one `Memo` called with two types, and what the
//!   result layout fingerprint (`core::layout`) does and does not trace;
//! - argument encodings: `#[serde(untagged)]`, `HashMap`s, signed zeros and
//!   NaN payloads, nested options; results bincode cannot encode or decode;
//! - user code run by picocache at awkward moments: a `Deserialize` that
//!   calls a memoized function, `Serialize`/`Deserialize` that panic, a call
//!   from a thread-local's destructor, deep memoized recursion;
//! - `fork()` while another thread computes, and with pooled connections;
//! - leases: a killed holder, a panicking function, a frozen writer holding
//!   the local store's lock, on every backend where it applies;
//! - hostile stores: SQL rows swapped, truncated, retyped or their tables
//!   dropped, Redis keys of the wrong type, a store deleted under a process,
//!   namespaces past the store's limit, TTL edges, servers that never
//!   answer, malformed URLs, odd names, an unusable default store;
//! - many threads with evictions, clears and compactions at once;
//! - the CLI: writing commands on a directory that is not a store,
//!   maintenance while another process calls, closed pipes, control
//!   characters, `repair` run twice.
//!
//! Tests of bugs are `#[ignore = "BUG: ..."]` with what happens and a
//! suggested fix; tests of bugs this file found that are fixed since run as
//! `Held:` regressions (their docs name the fixing commit).
//!
//! A server that is not there fails the test under `CI=true` and skips it
//! (saying so on stderr) otherwise. Child processes are this test binary run
//! again (`child` below, selected by `S24_ROLE`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, LazyLock};
use std::time::{Duration, Instant};

use picocache::secret::SecretSource;
use picocache::{Backend, LocalBackend, Memo, SealedBackend, Secrets};
use serde::{Deserialize, Serialize};

const SECRET: &[u8] = b"adversarial session 24 secret";

// ---------------------------------------------------------------------------
// Shared helpers.
// ---------------------------------------------------------------------------

/// One temporary directory for the whole test binary (a `static` is never
/// dropped, so it lives under the target directory's `tmp`, not `/tmp`).
fn temp_root() -> &'static Path {
    static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
        tempfile::Builder::new()
            .prefix("s24-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
    });
    DIR.path()
}

/// A local store sealed with [`SECRET`] (so no per-user secret is read),
/// one for the whole binary: what the `#[memoize]` functions below use.
fn sealed_store() -> Arc<dyn Backend> {
    static B: LazyLock<Arc<dyn Backend>> = LazyLock::new(|| {
        let dir = temp_root().join("macro-store");
        std::fs::create_dir_all(&dir).unwrap();
        seal(Arc::new(LocalBackend::open(&dir).unwrap()))
    });
    B.clone()
}

fn seal(raw: Arc<dyn Backend>) -> Arc<dyn Backend> {
    let secrets = Arc::new(Secrets::new(&[SECRET]).unwrap());
    Arc::new(SealedBackend::new(raw, secrets, SecretSource::Explicit))
}

/// A name no other run of this binary uses (remote stores outlive a run).
fn unique(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "s24::{what}::{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The URL in `var`, or `None` after saying the test part is skipped.
fn server_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                !ci(),
                "{var} is not set; CI=true: every server must be there \
                 (tests/servers/start.sh, then source /tmp/picocache-servers/env.sh)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test}: {var} is not set (run `bash tests/servers/start.sh` \
                 and `source /tmp/picocache-servers/env.sh`)"
            );
            None
        }
    }
}

/// Every backend to run a probe on: `(label, url or local path)`. The local
/// engine and SQLite always; the servers when their URLs are set.
fn every_backend(test: &str) -> Vec<(&'static str, String)> {
    let dir = temp_root().join(unique("backends").replace("::", "_"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = vec![
        ("local", dir.join("local").display().to_string()),
        (
            "sqlite",
            format!("sqlite:///{}", dir.join("c.sqlite").display()),
        ),
    ];
    for (label, var) in [
        ("postgres", "PICOCACHE_POSTGRES_URL"),
        ("mysql", "PICOCACHE_MYSQL_URL"),
        ("redis", "PICOCACHE_REDIS_URL"),
    ] {
        if let Some(u) = server_url(var, test) {
            out.push((label, u));
        }
    }
    out
}

/// A `Memo` named `name` over `target` (a local path or a URL).
fn memo_on(target: &str, name: &str, lease_timeout: Duration) -> Memo {
    let b = Memo::builder(name)
        .secret(SECRET)
        .maxsize(None)
        .lease_timeout(lease_timeout);
    if target.contains("://") {
        b.url(target).build()
    } else {
        std::fs::create_dir_all(target).unwrap();
        b.backend(Arc::new(LocalBackend::open(target).unwrap()))
            .build()
    }
}

/// Runs this test binary again as `role`, with `envs`; its output.
fn child_command(role: &str, envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["child", "--exact", "--test-threads=1", "--nocapture"])
        .env("S24_ROLE", role);
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// The child's side (a no-op when run as an ordinary test).
#[test]
fn child() {
    let Ok(role) = std::env::var("S24_ROLE") else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap();
    match role.as_str() {
        // Takes the lease of key 1 and computes forever (until killed).
        "hold" => {
            let m = memo_on(&var("S24_TARGET"), &var("S24_NAME"), Duration::from_secs(5));
            m.call(1u64, |_| {
                println!("S24 COMPUTING");
                std::io::stdout().flush().unwrap();
                std::thread::sleep(Duration::from_secs(300));
                0u64
            });
        }
        "fork" => fork_probe(&var("S24_TARGET"), &var("S24_PROBE")),
        // Recursion of depth `S24_DEPTH`, memoized or plain (`S24_PLAIN`),
        // on a thread with an 8 MiB stack (a main thread's).
        "depth" => {
            let depth: u64 = var("S24_DEPTH").parse().unwrap();
            let plain = std::env::var("S24_PLAIN").is_ok();
            let target = var("S24_TARGET");
            let v = std::thread::Builder::new()
                .stack_size(8 << 20)
                .spawn(move || {
                    if plain {
                        plain_sum(depth)
                    } else {
                        let m = memo_on(&target, "s24::depth", Duration::from_secs(2));
                        memo_sum(&m, depth)
                    }
                })
                .unwrap()
                .join()
                .unwrap();
            assert_eq!(v, depth * (depth + 1) / 2);
        }
        // A memoized recursion of depth 400 whose deepest level opens a
        // file (run under `ulimit -n 256`).
        "fds_limit" => {
            let m = memo_on(&var("S24_TARGET"), "s24::fds", Duration::from_secs(2));
            let opened = std::sync::Mutex::new(String::new());
            let v = std::thread::Builder::new()
                .stack_size(64 << 20)
                .spawn_scoped_fallback(|| memo_open_at_depth(&m, 400, &opened));
            assert_eq!(v, 400);
            println!("S24 OPEN {}", opened.lock().unwrap());
        }
        // Forks after using a remote backend; parent and child then call at
        // once over the connections the child inherited.
        "fork_remote" => fork_remote_probe(&var("S24_TARGET")),
        // A memo on the default store (`.picocache` in the working
        // directory, or `$PICOCACHE_DIR`), whatever they are.
        "default_store" => {
            let m = Memo::builder(unique("default")).secret(SECRET).build();
            let t = Instant::now();
            let v = (m.call(4u64, |x| x * 3), m.call(4u64, |x| x * 3));
            println!("S24 DEFAULT {v:?} {:?}", t.elapsed());
            assert_eq!(v, (12, 12));
        }
        // A thread whose thread-local's destructor calls a memoized
        // function (a miss, then a hit) as the thread exits.
        "tls_drop" => {
            let target = var("S24_TARGET");
            std::thread::spawn(move || {
                TLS_MEMO_TARGET.with(|t| *t.borrow_mut() = Some(target.clone()));
                let m = memo_on(&target, "s24::tls", Duration::from_secs(2));
                assert_eq!(m.call(1u64, |x| x + 1), 2);
            })
            .join()
            .unwrap();
            println!("S24 TLS THREAD JOINED");
        }
        // Calls f(x) = 7x + 3 for x in 0..40 over and over until
        // `S24_STOP` exists, checking every value.
        "caller_loop" => {
            let stop = PathBuf::from(var("S24_STOP"));
            let m = memo_on(&var("S24_TARGET"), &var("S24_NAME"), Duration::from_secs(2));
            let (mut calls, mut wrong) = (0u64, 0u64);
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.exists() && Instant::now() < until {
                let x = calls % 40;
                if m.call(x, |x| 7 * x + 3) != 7 * x + 3 {
                    wrong += 1;
                }
                calls += 1;
            }
            println!("S24 LOOP calls={calls} wrong={wrong}");
        }
        other => panic!("unknown role {other}"),
    }
    println!("S24 CHILD DONE");
}

// ---------------------------------------------------------------------------
// `#[memoize]` identity.
// ---------------------------------------------------------------------------

mod nested_by_digest {
    /// `x + K` with this function's own `K`.
    pub fn plus_one(x: u64) -> u64 {
        const K: u64 = 1;
        #[picocache::memoize(backend = crate::sealed_store())]
        fn add_k(x: u64) -> u64 {
            x + K
        }
        add_k(x)
    }

    /// The same tokens as in `plus_one`, with another `K`.
    pub fn plus_thousand(x: u64) -> u64 {
        const K: u64 = 1000;
        #[picocache::memoize(backend = crate::sealed_store())]
        fn add_k(x: u64) -> u64 {
            x + K
        }
        add_k(x)
    }
}

/// Held: was a bug found by this test, fixed in 714815c (nested functions
/// are named after their enclosing functions).
/// What happened before the fix:
/// Two nested `#[memoize]` functions with the same name and the same tokens
/// in two functions of one module (each adding its own enclosing function's
/// `const K`) get the same namespace, `module::add_k#DIGEST`
/// (`module_path!()` does not name the enclosing function), so the second
/// is served the first's results: `plus_thousand(5)` returns 6, not 1005,
/// every time, in one process. Suggested fix: a process-wide registry of
/// the names each `#[memoize]` site (its `static`) claims, so that a second
/// site claiming a taken default name warns and runs uncached; or mix
/// `file!()`, `line!()` and `column!()` into the default name of a function
/// declared inside a block (not at module level).
#[test]
fn nested_functions_with_one_name_and_body_get_their_own_results() {
    assert_eq!(nested_by_digest::plus_one(5), 6);
    assert_eq!(nested_by_digest::plus_one(5), 6);
    assert_eq!(nested_by_digest::plus_thousand(5), 1005);
}

mod nested_pinned {
    pub fn doubled(x: u64) -> u64 {
        #[picocache::memoize(backend = crate::sealed_store(), version = 1)]
        fn scale(x: u64) -> u64 {
            x * 2
        }
        scale(x)
    }

    pub fn tripled(x: u64) -> u64 {
        #[picocache::memoize(backend = crate::sealed_store(), version = 1)]
        fn scale(x: u64) -> u64 {
            x * 3
        }
        scale(x)
    }
}

/// Held: was a bug found by this test, fixed in 714815c (nested functions
/// are named after their enclosing functions).
/// What happened before the fix:
/// With `version =`, two nested functions with one name in one module share
/// `module::scale@1` whatever their bodies: `tripled(5)` returns 10 (the
/// other function's `5 * 2`), not 15, every time. The same holds across
/// programs: the default store (`.picocache` in the working directory, or
/// `$PICOCACHE_DIR`) is shared by every program run there, and a pinned
/// name is only `module_path!()::fn@version`, so two programs whose crates
/// have one name (`app`, `server`, ...) and one function name
/// (`app::db::lookup@1`) share results whatever their bodies (with the
/// digest: whenever their tokens match). Suggested fix: as for
/// `nested_functions_with_one_name_and_body_get_their_own_results` (a
/// pinned name is meant to survive edits of the body, so the fix cannot be
/// the digest; a registry of claimed names per process catches it).
#[test]
fn nested_pinned_functions_with_one_name_get_their_own_results() {
    assert_eq!(nested_pinned::doubled(5), 10);
    assert_eq!(nested_pinned::tripled(5), 15);
}

mod layout {
    use serde::{Deserialize, Serialize};

    /// The result type as this build declares it (an earlier build
    /// declared `lo` first: see `OldRange`).
    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
    pub struct Range {
        pub hi: u32,
        pub lo: u32,
    }

    /// Was `u64` in an earlier build.
    pub type Count = i64;

    #[picocache::memoize(backend = crate::sealed_store())]
    pub fn range_of(x: u32) -> Range {
        Range { lo: x, hi: x + 100 }
    }

    #[picocache::memoize(backend = crate::sealed_store())]
    pub fn count_of(x: u32) -> Count {
        Count::from(x)
    }
}

/// The earlier build's `layout::Range`.
#[derive(Serialize, Deserialize)]
struct OldRange {
    lo: u32,
    hi: u32,
}

/// Held: was a bug found by this test, fixed in ebe852b (values carry a
/// fingerprint of the result type's serde layout).
/// What happened before the fix:
/// A result type edited outside the function's tokens (its struct's fields
/// reordered, or a type alias from `u64` to `i64`) keeps the default
/// `#[memoize]` name (the digest covers only the function's own tokens), and
/// bincode decodes the earlier build's bytes as the new type without an
/// error: `range_of(7)` returns `Range { hi: 7, lo: 107 }` (the fields
/// swapped) and `count_of(5)` returns -3 (zigzag of 5), every time, with no
/// warning. The earlier build is played by a `Memo` of the same name storing
/// the old type (what that build stored). The docs warn that a change in
/// code the function uses is not seen, but `core::codec` asks a value codec
/// to reject bytes another version of the program made, and the Memo docs
/// promise that a changed result type is a decoding failure (the function
/// runs). Severity: silent wrong values after an ordinary refactor.
/// Suggested fix: mix a fingerprint of the result (and argument) types into
/// the namespace name: e.g. trace the `Deserialize` impl at `Memo` build time
/// (serde-reflection's `Tracer::trace_simple_type`, field names and types
/// included) and hash the format, so a changed layout is a new namespace;
/// at the least `std::any::type_name` of `R` and `A`.
#[test]
fn an_edited_result_type_never_reads_the_old_layout() {
    let old_range = Memo::builder(layout::range_of_cache().namespace_name())
        .backend(sealed_store())
        .build();
    old_range.call(7u32, |x| OldRange { lo: x, hi: x + 100 });
    let old_count = Memo::builder(layout::count_of_cache().namespace_name())
        .backend(sealed_store())
        .build();
    old_count.call(5u32, u64::from);

    let got = (layout::range_of(7), layout::count_of(5));
    println!(
        "S24 edited result type: range_of(7) = {:?}, count_of(5) = {}",
        got.0, got.1
    );
    assert_eq!(got, (layout::Range { lo: 7, hi: 107 }, 5));
}

// ---------------------------------------------------------------------------
// Argument encodings.
// ---------------------------------------------------------------------------

/// An argument type whose variants serialize alike (`untagged`).
#[derive(Serialize, Clone, Copy, Debug)]
#[serde(untagged)]
enum Shape {
    Circle(u32),
    Square(u32),
}

fn area(s: Shape) -> u32 {
    match s {
        Shape::Circle(r) => 3 * r * r,
        Shape::Square(a) => a * a,
    }
}

/// An `#[serde(untagged)]` enum argument: `Circle(2)` and `Square(2)` are
/// both encoded as the bare `2`, so the second call is served the first's
/// result: `area(Square(2))` returns 12, not 4 (every time; the same for
/// `#[serde(skip)]` fields, `#[serde(flatten)]` and any `Serialize` that is
/// not one-to-one). `core::codec` says a codec "must not let unequal
/// arguments share bytes", but the default `Bincode` codec cannot see it.
/// Severity: a wrong value from a type the docs accept ("any type that
/// implements Serialize"). Suggested fix: document the requirement where
/// `#[memoize]` lists what arguments must be (a `Serialize` that tells
/// unequal values apart: no untagged enums, skipped or flattened fields);
/// optionally a debug-build check that decodes nothing but compares
/// `serde_json` shapes is not possible for untagged, so the docs are the fix.
#[test]
#[ignore = "BUG (documented as a limitation in 33c5ea1): #[serde(untagged)] enum arguments share keys: area(Square(2)) returns Circle(2)'s result"]
fn untagged_enum_arguments_never_share_a_result() {
    let dir = temp_root().join("untagged");
    let m = memo_on(
        &dir.display().to_string(),
        &unique("untagged"),
        Duration::from_secs(5),
    );
    assert_eq!(m.call(Shape::Circle(2), area), 12);
    let square = m.call(Shape::Square(2), area);
    println!("S24 untagged: area(Square(2)) = {square}");
    assert_eq!(square, 4);
}

/// Held: `-0.0` and `0.0` (equal as floats) are different keys, and NaNs
/// with different payloads too, so a function that tells them apart
/// (`1 / x`, the sign bit) gets its own result for each.
#[test]
fn signed_zeros_and_nan_payloads_are_different_arguments() {
    let dir = temp_root().join("floats");
    let m = memo_on(
        &dir.display().to_string(),
        &unique("floats"),
        Duration::from_secs(5),
    );
    let recip = |x: f64| (1.0 / x).to_bits();
    assert_eq!(m.call(0.0f64, recip), f64::INFINITY.to_bits());
    assert_eq!(m.call(-0.0f64, recip), f64::NEG_INFINITY.to_bits());
    let bits = |x: f64| x.to_bits();
    let nan_a = f64::from_bits(0x7ff8_0000_0000_0001);
    let nan_b = f64::from_bits(0x7ff8_0000_0000_0002);
    assert_eq!(m.call(nan_a, bits), nan_a.to_bits());
    assert_eq!(m.call(nan_b, bits), nan_b.to_bits());
    assert_eq!(m.call(nan_a, bits), nan_a.to_bits());
}

// ---------------------------------------------------------------------------
// User code run while the engine reads a value.
// ---------------------------------------------------------------------------

/// The lookup `Derived`'s `Deserialize` does: a memoized function on the
/// same store.
fn lookup_memo() -> &'static Memo {
    static M: LazyLock<Memo> = LazyLock::new(|| {
        Memo::builder(unique("lookup"))
            .backend(sealed_store())
            .build()
    });
    &M
}

/// A result whose `extra` is derived when it is read back (`#[serde(from)]`
/// style): its `Deserialize` calls a memoized function.
#[derive(Debug, PartialEq)]
struct Derived {
    raw: u64,
    extra: u64,
}

impl Serialize for Derived {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Derived {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = u64::deserialize(d)?;
        Ok(Derived {
            raw,
            extra: lookup_memo().call(raw, |r| r + 1),
        })
    }
}

/// Held: was a bug found by this test, fixed in 395f6c8 (a located hit is
/// decoded after the engine's read returns).
/// What happened before the fix:
/// A result type whose `Deserialize` calls a memoized function on the local
/// store (a `From<Raw>` that looks something up): the outer hit decodes the
/// value inside the engine's read callback (`Memo::located_hit` ->
/// `Locate::read_located` -> `engine::read::lookup_at`), which holds the
/// thread's `SCRATCH` `RefCell` borrowed (and the index `RwLock` read);
/// the inner memoized call's own lookup borrows `SCRATCH` again and panics
/// ("already borrowed"), out of the user's call. Every time, on the second
/// call (the first hit). (The index read lock taken twice on one thread can
/// also deadlock with a writer waiting in between: parking_lot's `read` is
/// not recursive.) Suggested fix: decode after the engine's callback
/// returns (copy the payload out, or take the scratch buffer out of its
/// cell with `mem::take` and drop the index guard before calling `f`).
#[test]
fn a_deserialize_that_calls_a_memoized_function_works() {
    let outer = Memo::builder(unique("derived"))
        .backend(sealed_store())
        .build();
    let first = outer.call(7u64, |x| Derived {
        raw: x * 3,
        extra: 0,
    });
    assert_eq!(first.raw, 21);
    let second = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        outer.call(7u64, |x| Derived {
            raw: x * 3,
            extra: 0,
        })
    }));
    match &second {
        Ok(v) => println!("S24 derived: second call {v:?}"),
        Err(p) => println!(
            "S24 derived: second call panicked: {:?}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or(p.downcast_ref::<&str>().copied())
        ),
    }
    assert_eq!(second.ok(), Some(Derived { raw: 21, extra: 22 }));
}

// ---------------------------------------------------------------------------
// fork().
// ---------------------------------------------------------------------------

#[allow(non_camel_case_types)]
type pid_t = i32;
extern "C" {
    fn fork() -> pid_t;
    fn waitpid(pid: pid_t, status: *mut i32, options: i32) -> pid_t;
    fn kill(pid: pid_t, sig: i32) -> i32;
    fn _exit(code: i32) -> !;
    fn flock(fd: i32, op: i32) -> i32;
}
const LOCK_EX: i32 = 2;
const LOCK_UN: i32 = 8;
const WNOHANG: i32 = 1;
const SIGKILL: i32 = 9;

/// In a child process of its own: a thread computes `f(1)`, and meanwhile
/// the main thread forks; the forked process calls `f(probe)` (1: the
/// arguments in flight in the parent's thread; 2: other arguments) and exits
/// 0 with the right value. Prints what became of it within 10 s.
fn fork_probe(target: &str, probe: &str) {
    let m = Arc::new(memo_on(target, "s24::fork", Duration::from_secs(2)));
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let m2 = m.clone();
    let computing = std::thread::spawn(move || {
        m2.call(1u64, move |x| {
            started_tx.send(()).unwrap();
            let _ = go_rx.recv();
            x * 10
        })
    });
    started.recv().unwrap();
    let arg: u64 = probe.parse().unwrap();
    // SAFETY: the forked process runs only the call below and `_exit`s.
    let pid = unsafe { fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let v = m.call(arg, |x| x * 10);
        // SAFETY: ends the forked process without running anything else.
        unsafe { _exit(if v == arg * 10 { 0 } else { 3 }) };
    }
    let forked = Instant::now();
    let deadline = forked + Duration::from_secs(10);
    let mut status = 0;
    let outcome = loop {
        // SAFETY: waits for the process forked above.
        let r = unsafe { waitpid(pid, &mut status, WNOHANG) };
        if r == pid {
            break if (status >> 8) & 0xff == 0 && status & 0x7f == 0 {
                "ok"
            } else {
                "wrong"
            };
        }
        if Instant::now() > deadline {
            // SAFETY: the process forked above, then reaped.
            unsafe {
                kill(pid, SIGKILL);
                waitpid(pid, &mut status, 0);
            }
            break "hung";
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    go.send(()).unwrap();
    assert_eq!(computing.join().unwrap(), 10);
    println!(
        "\nS24 FORK {outcome} status={status} after {:?}",
        forked.elapsed()
    );
}

fn run_fork_probe(probe: &str) -> String {
    let dir = temp_root().join(unique("fork").replace("::", "_"));
    let out = child_command(
        "fork",
        &[
            ("S24_TARGET", &dir.display().to_string()),
            ("S24_PROBE", probe),
        ],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("S24 CHILD DONE"),
        "fork probe failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("S24 FORK "))
        .unwrap_or_else(|| panic!("no outcome: {text}"))
        .to_owned();
    println!("S24 fork probe {probe}: {line}");
    line
}

/// Held: a process forked while another thread of its parent computes
/// `f(1)` gets the right value for other arguments, `f(2)`, at once.
#[test]
fn a_forked_child_computes_other_arguments() {
    assert!(run_fork_probe("2").starts_with("S24 FORK ok"));
}

/// Held: was a bug found by this test, fixed in 1f64862 (flights tagged
/// with the fork generation).
/// What happened before the fix:
/// A process forked while another thread of its parent computes `f(1)`
/// calls `f(1)`: its copy of the `Memo`'s in-flight table says a thread
/// leads `f(1)`, a thread that does not exist in the child, and
/// `Flight::wait` has no end: the child hangs forever (killed here after
/// 10 s), every time. `Flights::forget_all` exists for this, but only the
/// Python adapter calls it after a fork; the Rust `Memo` never does.
/// Severity: a hang (fork without exec in a threaded Rust program is rare,
/// but a server that forks workers after warming a cache does it).
/// Suggested fix: record the pid in `Flights` (or in each flight) and treat
/// flights of another pid as absent (`forget_all` on the first join in a new
/// process, as the engine's `check_fork` does for the store); or a
/// `pthread_atfork` child handler.
#[test]
fn a_forked_child_never_waits_for_a_thread_of_its_parent() {
    assert!(run_fork_probe("1").starts_with("S24 FORK ok"));
}

// ---------------------------------------------------------------------------
// Leases: a killed holder, a panicking function.
// ---------------------------------------------------------------------------

/// Held: a process killed (SIGKILL) while computing `f(1)` holds the key's
/// lease; another process's call of `f(1)` with `lease_timeout` 2 s returns
/// the right value within a bounded time (at most the lease timeout and a
/// margin; 30 s asserted) on every backend.
#[test]
fn a_killed_lease_holder_costs_at_most_the_lease_timeout() {
    for (label, target) in every_backend("a_killed_lease_holder_costs_at_most_the_lease_timeout") {
        let name = unique("killed");
        let mut child = child_command("hold", &[("S24_TARGET", &target), ("S24_NAME", &name)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("S24 COMPUTING") {
                    let _ = tx.send(());
                }
            }
        });
        let started = rx.recv_timeout(Duration::from_secs(30));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(started.is_ok(), "{label}: the child never computed");

        let m = memo_on(&target, &name, Duration::from_secs(2));
        let t = Instant::now();
        let v = m.call(1u64, |x| x * 10);
        let took = t.elapsed();
        println!("S24 killed holder {label}: f(1) = {v} after {took:?}");
        assert_eq!(v, 10, "{label}");
        assert!(took < Duration::from_secs(30), "{label}: {took:?}");
    }
}

/// Held: the function panicking while its call holds the key's lease (in the
/// process and in the store) leaves nothing held: the next call, in this
/// `Memo` and through another `Memo` of the same name (which takes the
/// store's lease), computes at once (lease timeout 60 s, bound 20 s), on
/// every backend.
#[test]
fn a_panicking_function_leaves_no_lease_held() {
    for (label, target) in every_backend("a_panicking_function_leaves_no_lease_held") {
        let name = unique("panics");
        let m = memo_on(&target, &name, Duration::from_secs(60));
        let other = memo_on(&target, &name, Duration::from_secs(60));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            m.call(1u64, |_| -> u64 { panic!("s24: the function fails") })
        }));
        assert!(r.is_err(), "{label}: the panic is the function's");
        let t = Instant::now();
        assert_eq!(other.call(1u64, |x| x * 10), 10, "{label}");
        assert_eq!(m.call(1u64, |x| x * 10 + 1), 10, "{label}");
        let took = t.elapsed();
        println!("S24 panicking function {label}: next calls after {took:?}");
        assert!(took < Duration::from_secs(20), "{label}: {took:?}");
    }
}

// ---------------------------------------------------------------------------
// A hostile SQL store.
// ---------------------------------------------------------------------------

/// Held: rows swapped between two keys of a namespace, a value truncated,
/// and a value copied from another namespace's row for the same key, all
/// by an UPDATE in the SQLite file behind the memoizer's back, are rejected
/// (the seal covers namespace and key): each call returns its own function's
/// value.
#[test]
fn tampered_sqlite_rows_are_never_served() {
    let dir = temp_root().join(unique("sqlite").replace("::", "_"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.sqlite");
    let url = format!("sqlite:///{}", file.display());
    let (na, nb) = (unique("sql_a"), unique("sql_b"));
    let a = memo_on(&url, &na, Duration::from_secs(5));
    let b = memo_on(&url, &nb, Duration::from_secs(5));
    for x in 1..=3u64 {
        assert_eq!(a.call(x, |x| x * 10), x * 10);
        assert_eq!(b.call(x, |x| x * 1000), x * 1000);
    }
    let db = rusqlite::Connection::open(&file).unwrap();
    let key = |x: u64| picocache::memo::encode(&x).unwrap();
    let ns_id = |name: &str| -> i64 {
        db.query_row("SELECT id FROM picocache_ns WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let (ida, idb) = (ns_id(&na), ns_id(&nb));
    let value = |ns: i64, x: u64| -> Vec<u8> {
        db.query_row(
            "SELECT v FROM picocache WHERE ns = ?1 AND k = ?2",
            rusqlite::params![ns, key(x)],
            |r| r.get(0),
        )
        .unwrap()
    };
    let set = |ns: i64, x: u64, v: &[u8]| {
        let n = db
            .execute(
                "UPDATE picocache SET v = ?1, size = ?2 WHERE ns = ?3 AND k = ?4",
                rusqlite::params![v, v.len() as i64, ns, key(x)],
            )
            .unwrap();
        assert_eq!(n, 1);
    };
    // Swap keys 1 and 2 of `a`; truncate 3 of `a`; copy `b`'s 1 into... `b`'s
    // 2 gets `a`'s 2 (another namespace, another key) and `b`'s 3 gets `a`'s
    // 3 (another namespace, the same key).
    let (a1, a2, a3, b3) = (value(ida, 1), value(ida, 2), value(ida, 3), value(idb, 3));
    set(ida, 1, &a2);
    set(ida, 2, &a1);
    set(ida, 3, &a3[..a3.len() - 1]);
    set(idb, 2, &a2);
    set(idb, 3, &a3);
    let _ = b3;
    drop(db);
    for x in 1..=3u64 {
        assert_eq!(a.call(x, |x| x * 10), x * 10, "a({x})");
        assert_eq!(b.call(x, |x| x * 1000), x * 1000, "b({x})");
    }
    let rejected = a.stats().unwrap().rejected + b.stats().unwrap().rejected;
    println!("S24 tampered sqlite: {rejected} rejected");
    assert!(rejected >= 4, "{rejected}");
}

// ---------------------------------------------------------------------------
// Servers that accept and never answer.
// ---------------------------------------------------------------------------

/// A listener that accepts connections and never answers (nor closes).
fn black_hole() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

/// Held: a memoized call whose backend URL points at a server that accepts
/// the connection and never says a word (PostgreSQL, MySQL, Redis, with
/// `connect_timeout=1&timeout=1`) returns the function's value within a
/// bounded time (30 s asserted), the first call and the next.
#[test]
fn a_server_that_never_answers_costs_a_bounded_time() {
    for scheme in [
        "postgresql://u:p@127.0.0.1:{port}/db?connect_timeout=1&timeout=1",
        "mysql://u:p@127.0.0.1:{port}/db?connect_timeout=1&timeout=1",
        "redis://127.0.0.1:{port}/0?connect_timeout=1&timeout=1",
    ] {
        let url = scheme.replace("{port}", &black_hole().to_string());
        let m = Memo::builder(unique("hole"))
            .secret(SECRET)
            .url(&url)
            .build();
        for round in 0..2 {
            let t = Instant::now();
            let v = m.call(3u64, |x| x + 1);
            let took = t.elapsed();
            println!("S24 black hole {url} call {round}: {took:?}");
            assert_eq!(v, 4);
            assert!(took < Duration::from_secs(30), "{url}: {took:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// The CLI.
// ---------------------------------------------------------------------------

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_picocache"))
        .args(args)
        .output()
        .expect("run picocache")
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// Held: the writing commands (`clear`, `clear NS`, `compact`, `repair`,
/// `prune`) on a user's directory that is not a store (a file named `index`
/// that is not one, a file named like a segment, a note), on a regular file
/// and on a path with a newline and non-UTF-8 bytes, refuse with "no
/// PicoCache store" and change nothing.
#[test]
fn writing_commands_on_a_users_directory_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index"), b"my index of recipes").unwrap();
    std::fs::write(dir.path().join("seg-00000001.log"), b"my log").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    let file = dir.path().join("notes.txt");
    use std::os::unix::ffi::OsStrExt;
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"odd\nname \xff"));
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("index"), b"x").unwrap();
    let before = snapshot(dir.path());
    for path in [dir.path(), file.as_path(), odd.as_path()] {
        for args in [
            vec!["clear"],
            vec!["clear", "some::ns"],
            vec!["compact"],
            vec!["repair"],
            vec!["prune", "--unused-for", "0s"],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_picocache"))
                .arg(args[0])
                .arg(path)
                .args(&args[1..])
                .output()
                .unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(2), "{args:?} {path:?}: {said}");
            assert!(
                said.contains("no PicoCache store"),
                "{args:?} {path:?}: {said}"
            );
            assert_eq!(
                snapshot(dir.path()),
                before,
                "{args:?} {path:?} changed files"
            );
        }
    }
}

/// Held (was a bug, found by this test and fixed in 459064e): `repair`
/// moves a file named like a segment that is not one into `damaged/`
/// ("nothing is deleted"); it did so by `rename` to `damaged/<same name>`,
/// so a second repair that found another such file under the same name
/// replaced the first one moved aside, which was lost. Now both are kept.
#[test]
fn a_second_repair_keeps_what_the_first_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = memo_on(
            &dir.path().display().to_string(),
            "s24::repair",
            Duration::from_secs(5),
        );
        m.call(1u64, |x| x + 1);
    }
    let p = dir.path().to_str().unwrap();
    let stray = dir.path().join("seg-00000077.log");
    std::fs::write(&stray, b"first stray: bytes to keep").unwrap();
    let o = cli(&["repair", p]);
    println!("S24 repair 1: {}", String::from_utf8_lossy(&o.stdout));
    std::fs::write(&stray, b"second stray").unwrap();
    let o = cli(&["repair", p]);
    println!("S24 repair 2: {}", String::from_utf8_lossy(&o.stdout));
    let kept: Vec<Vec<u8>> = snapshot(dir.path())
        .into_iter()
        .filter(|(path, _)| path.starts_with(dir.path().join("damaged")))
        .map(|(_, bytes)| bytes)
        .collect();
    println!("S24 repair: damaged/ holds {} files", kept.len());
    assert!(
        kept.iter().any(|b| b == b"first stray: bytes to keep"),
        "the first file moved aside is gone"
    );
    assert!(kept.iter().any(|b| b == b"second stray"));
}

// ---------------------------------------------------------------------------
// Arguments and results whose serde fails or panics.
// ---------------------------------------------------------------------------

/// An argument that bincode cannot encode: a `Serialize` that fails (as a
/// `#[serde(flatten)]` struct does under bincode: a map of unknown length).
#[derive(Clone, Copy, Debug)]
struct Unencodable(u64);

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("s24: cannot encode"))
    }
}

/// Held: `Memo::call` with an argument whose encoding fails runs the
/// function (a logged failure), not strict.
#[test]
fn call_with_an_unencodable_argument_runs_the_function() {
    let dir = temp_root().join("unencodable-call");
    let m = memo_on(
        &dir.display().to_string(),
        &unique("unenc"),
        Duration::from_secs(5),
    );
    assert_eq!(m.call(Unencodable(4), |u| u.0 * 2), 8);
    assert_eq!(m.call(Unencodable(4), |u| u.0 * 2 + 1), 9);
}

/// Held: was a bug found by this test, fixed in 0970b2b (an argument that
/// does not encode is computed uncached).
/// What happened before the fix:
/// `Memo::call_many` (not strict) with an argument whose encoding fails
/// panics with "picocache (strict mode): bincode: cannot encode": its key
/// loop uses `?` on `encode_key`, which returns the error whether or not
/// the memo is strict, and `call_many` panics on any error. `call` with the
/// same argument runs the function (see
/// `call_with_an_unencodable_argument_runs_the_function`). Every time. A
/// `#[serde(flatten)]` argument struct fails this way under bincode.
/// Severity: a panic in non-strict mode, out of the user's call. Suggested
/// fix: on a key that fails to encode, `self.failed(e, "encoding the
/// arguments")?` and compute that argument uncached (keep the others).
#[test]
fn call_many_with_an_unencodable_argument_runs_the_function() {
    let dir = temp_root().join("unencodable-many");
    let m = memo_on(
        &dir.display().to_string(),
        &unique("unenc"),
        Duration::from_secs(5),
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.call_many([Unencodable(1), Unencodable(2)], |u| u.0 * 2)
    }));
    if let Err(p) = &r {
        println!(
            "S24 call_many unencodable: panicked: {:?}",
            p.downcast_ref::<String>()
        );
    }
    assert_eq!(r.ok(), Some(vec![2, 4]));
}

/// A result whose `Serialize` or `Deserialize` panics when told to.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Touchy(u64);

static TOUCHY_SER_PANICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static TOUCHY_DE_PANICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Serialize for Touchy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert!(
            !TOUCHY_SER_PANICS.load(Ordering::SeqCst),
            "s24: Serialize panics"
        );
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        assert!(
            !TOUCHY_DE_PANICS.load(Ordering::SeqCst),
            "s24: Deserialize panics"
        );
        Ok(Touchy(u64::deserialize(d)?))
    }
}

/// Held: a result whose `Serialize` panics (after the function ran, while
/// the call holds its flight and lease) and whose `Deserialize` panics (on a
/// hit, inside the engine's read) propagates the panic to that call only:
/// the next calls, from this thread and from another thread, on the local
/// engine, return the right value at once (no flight or lease left held, no
/// lock left taken).
#[test]
fn a_panicking_serde_leaves_the_memo_usable() {
    let dir = temp_root().join("touchy");
    let m = memo_on(
        &dir.display().to_string(),
        &unique("touchy"),
        Duration::from_secs(60),
    );
    TOUCHY_SER_PANICS.store(true, Ordering::SeqCst);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.call(1u64, Touchy)));
    TOUCHY_SER_PANICS.store(false, Ordering::SeqCst);
    assert!(r.is_err());
    let t = Instant::now();
    assert_eq!(m.call(1u64, |x| Touchy(x + 10)), Touchy(11));
    assert_eq!(m.call(1u64, |x| Touchy(x + 20)), Touchy(11));
    TOUCHY_DE_PANICS.store(true, Ordering::SeqCst);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.call(1u64, Touchy)));
    TOUCHY_DE_PANICS.store(false, Ordering::SeqCst);
    assert!(r.is_err());
    assert_eq!(m.call(1u64, |x| Touchy(x + 30)), Touchy(11));
    let m = Arc::new(m);
    let m2 = m.clone();
    let other = std::thread::spawn(move || m2.call(1u64, |x| Touchy(x + 40)));
    assert_eq!(other.join().unwrap(), Touchy(11));
    assert_eq!(m.call(2u64, |x| Touchy(x + 10)), Touchy(12));
    let took = t.elapsed();
    println!("S24 touchy: the calls after the panics took {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

// ---------------------------------------------------------------------------
// TTL edges.
// ---------------------------------------------------------------------------

/// Held: a TTL of zero or of 1 ms is never served once past it (the value
/// computed again after 1.2 s: the engine and SQL backends count in
/// milliseconds, Redis too, and whole seconds nowhere), and a TTL of
/// `Duration::MAX` neither panics nor breaks a call, on every backend. What
/// each makes of `Duration::MAX` (cached or not) is printed.
#[test]
fn ttl_edges_never_serve_a_stale_value_nor_panic() {
    let build = |target: &str, ttl: Duration| {
        let m = Memo::builder(unique("ttl"))
            .secret(SECRET)
            .ttl(Some(ttl))
            .lease_timeout(Duration::from_secs(5));
        if target.contains("://") {
            m.url(target).build()
        } else {
            std::fs::create_dir_all(target).unwrap();
            m.backend(Arc::new(LocalBackend::open(target).unwrap()))
                .build()
        }
    };
    let mut short = Vec::new();
    for (label, target) in every_backend("ttl_edges_never_serve_a_stale_value_nor_panic") {
        for (what, ttl) in [
            ("zero", Duration::ZERO),
            ("1ms", Duration::from_millis(1)),
            ("500us", Duration::from_micros(500)),
        ] {
            let m = build(&target, ttl);
            assert_eq!(m.call(1u64, |_| 100u64), 100, "{label} {what}");
            short.push((label, what, m));
        }
        let m = build(&target, Duration::MAX);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (m.call(1u64, |_| 1u64), m.call(1u64, |_| 2u64))
        }));
        println!("S24 ttl {label} MAX: {r:?} (1, 1): cached; (1, 2): not cached");
        let (a, b) = r.unwrap_or_else(|_| panic!("{label}: ttl MAX panicked"));
        assert_eq!(a, 1, "{label}");
        assert!(b == 1 || b == 2, "{label}");
    }
    std::thread::sleep(Duration::from_millis(1200));
    for (label, what, m) in short {
        let again = m.call(1u64, |_| 200u64);
        println!("S24 ttl {label} {what}: after 1.2 s: {again}");
        assert_eq!(again, 200, "{label} ttl {what}: a value past its TTL");
    }
}

// ---------------------------------------------------------------------------
// CLI maintenance while another process calls.
// ---------------------------------------------------------------------------

/// Held: while another process calls a memoized function in a loop (and
/// checks every value), `picocache compact`, `repair`, `clear NS`, `clear`
/// and `prune --unused-for 0s` (which removes the namespace in use) run on
/// the store, several times each: the calls never return a wrong value, and
/// the commands end (success, or a clear error) within a bounded time.
#[test]
fn maintenance_while_another_process_calls_never_gives_a_wrong_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let stop = dir.path().join("stop");
    let name = unique("busy");
    // The store exists before the loop and the commands start.
    memo_on(&store.display().to_string(), &name, Duration::from_secs(2)).call(0u64, |x| 7 * x + 3);
    let target = store.display().to_string();
    let stop_s = stop.display().to_string();
    let child = child_command(
        "caller_loop",
        &[
            ("S24_TARGET", &target),
            ("S24_NAME", &name),
            ("S24_STOP", &stop_s),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let p = store.to_str().unwrap();
    let mut codes = Vec::new();
    let t = Instant::now();
    for _ in 0..3 {
        for args in [
            vec!["compact", p],
            vec!["repair", p],
            vec!["clear", p, &name],
            vec!["prune", p, "--unused-for", "0s"],
            vec!["clear", p],
            vec!["verify", p],
        ] {
            let o = cli(&args);
            codes.push((args[0], o.status.code()));
            if o.status.code() == Some(2) {
                println!("S24 busy: {args:?}: {}", String::from_utf8_lossy(&o.stderr));
            }
        }
    }
    let took = t.elapsed();
    std::fs::write(&stop, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("S24 LOOP"))
        .unwrap_or_else(|| panic!("{text}\n{}", String::from_utf8_lossy(&out.stderr)))
        .to_owned();
    println!("S24 busy: commands {codes:?} in {took:?}; {line}");
    assert!(line.contains("wrong=0"), "{line}");
    assert!(took < Duration::from_secs(40), "{took:?}");
}

// ---------------------------------------------------------------------------
// Names.
// ---------------------------------------------------------------------------

/// Held: was a bug found by this test, fixed in 714815c (a name or version
/// holding '@' is refused: the memo runs uncached).
/// What happened before the fix:
/// `Memo::builder("f@1")` and `Memo::builder("f").version("1")` (or, with
/// `#[memoize]`, `name = "app::f@1"` and `name = "app::f", version = 1`) are
/// one namespace, `f@1`: two different functions share results (`g(2)`
/// returns `f(2)`). The same for a version holding `@`. Every time.
/// Severity: low (a name with `@` is unusual), but silent. Suggested fix:
/// refuse (or escape) `@` in names and versions given to the builder.
#[test]
fn a_name_with_an_at_sign_never_meets_a_versioned_name() {
    let dir = temp_root().join("at-sign").display().to_string();
    std::fs::create_dir_all(&dir).unwrap();
    let base = unique("at");
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(&dir).unwrap());
    let f = Memo::builder(format!("{base}@1"))
        .secret(SECRET)
        .backend(b.clone())
        .build();
    let g = Memo::builder(base)
        .version("1")
        .secret(SECRET)
        .backend(b)
        .build();
    println!(
        "S24 at-sign: {:?} and {:?}",
        f.namespace_name(),
        g.namespace_name()
    );
    assert_eq!(f.call(2u64, |x| x * 10), 20);
    assert_eq!(g.call(2u64, |x| x * 1000), 2000);
}

// ---------------------------------------------------------------------------
// Hostile remote stores: tables dropped, keys of the wrong type.
// ---------------------------------------------------------------------------

/// A table name of its own (so that dropping it disturbs no one else).
fn own_table() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "s24_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs `f(1..=3)` four times with the same function, checking each value
/// and the time each round takes; returns the rounds' times.
fn rounds(m: &Memo, label: &str) -> Vec<Duration> {
    (0..4)
        .map(|_| {
            let t = Instant::now();
            for x in 1..=3u64 {
                assert_eq!(m.call(x, |x| x * 11), x * 11, "{label} f({x})");
            }
            let took = t.elapsed();
            assert!(took < Duration::from_secs(30), "{label}: {took:?}");
            took
        })
        .collect()
}

/// Held: the SQL backends' tables dropped by someone else while a memoizer
/// uses them (SQLite, PostgreSQL, MySQL; a table of its own each): every
/// call still returns the function's value, within a bounded time. Whether
/// the backend recreates its tables and caches again is printed.
#[test]
fn dropped_sql_tables_never_break_a_call() {
    let dir = temp_root().join(unique("dropped").replace("::", "_"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut targets = vec![(
        "sqlite",
        format!("sqlite:///{}", dir.join("c.sqlite").display()),
    )];
    for (label, var) in [
        ("postgres", "PICOCACHE_POSTGRES_URL"),
        ("mysql", "PICOCACHE_MYSQL_URL"),
    ] {
        if let Some(u) = server_url(var, "dropped_sql_tables_never_break_a_call") {
            targets.push((label, u));
        }
    }
    for (label, url) in targets {
        let table = own_table();
        let backend = picocache::SqlBackend::connect(&url, patient_sql(&table)).unwrap();
        let m = Memo::builder(unique("dropped"))
            .secret(SECRET)
            .backend(Arc::new(backend))
            .build();
        let before = rounds(&m, label);
        let drops: Vec<String> = ["", "_ns", "_meta", "_lease"]
            .iter()
            .map(|suffix| format!("DROP TABLE {table}{suffix}"))
            .collect();
        match label {
            "sqlite" => {
                let db = rusqlite::Connection::open(dir.join("c.sqlite")).unwrap();
                for d in &drops {
                    db.execute(d, []).unwrap();
                }
            }
            "postgres" => {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                for d in &drops {
                    c.batch_execute(d).unwrap();
                }
            }
            _ => {
                use mysql::prelude::Queryable;
                let mut c = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
                for d in &drops {
                    c.query_drop(d).unwrap();
                }
            }
        }
        let after = rounds(&m, label);
        let info = m.cache_info();
        println!(
            "S24 dropped {label}: rounds before {before:?}, after {after:?}; \
             cache_info after: {info:?}"
        );
        // Leave no table behind (in case the backend made them again).
        let drops: Vec<String> = ["", "_ns", "_meta", "_lease"]
            .iter()
            .map(|suffix| format!("DROP TABLE IF EXISTS {table}{suffix}"))
            .collect();
        match label {
            "postgres" => {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                for d in &drops {
                    c.batch_execute(d).unwrap();
                }
            }
            "mysql" => {
                use mysql::prelude::Queryable;
                let mut c = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
                for d in &drops {
                    c.query_drop(d).unwrap();
                }
            }
            _ => {}
        }
    }
}

/// The Redis backend's key of `name`'s `part` under `prefix`.
fn redis_key(prefix: &str, name: &str, part: &str) -> String {
    let mut esc = String::new();
    for ch in name.chars() {
        match ch {
            '%' => esc.push_str("%25"),
            ':' => esc.push_str("%3A"),
            '{' => esc.push_str("%7B"),
            '}' => esc.push_str("%7D"),
            c => esc.push(c),
        }
    }
    format!("{prefix}:{{{esc}}}:{part}")
}

/// Held: a namespace's Redis keys replaced by keys of the wrong type (its
/// `meta` hash by a string, its `lru` sorted set by a list, a value by a
/// hash) and then deleted while a memoizer uses it (a key prefix of its
/// own): every call still returns the function's value, within a bounded
/// time.
#[test]
fn redis_keys_of_the_wrong_type_never_break_a_call() {
    let Some(url) = server_url(
        "PICOCACHE_REDIS_URL",
        "redis_keys_of_the_wrong_type_never_break_a_call",
    ) else {
        return;
    };
    let prefix = own_table();
    let options = picocache::RedisOptions {
        prefix: prefix.clone(),
        ..Default::default()
    };
    let backend = picocache::RedisBackend::connect(&url, options).unwrap();
    let name = unique("wrongtype");
    let m = Memo::builder(name.clone())
        .secret(SECRET)
        .backend(Arc::new(backend))
        .build();
    let before = rounds(&m, "redis");
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let key1 = picocache::memo::encode(&1u64).unwrap();
    let mut v1 = redis_key(&prefix, &name, "v:").into_bytes();
    v1.extend_from_slice(&key1);
    let meta = redis_key(&prefix, &name, "meta");
    let lru = redis_key(&prefix, &name, "lru");
    let _: () = redis::cmd("DEL")
        .arg(&meta)
        .arg(&lru)
        .arg(&v1)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&meta)
        .arg("garbage")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(&lru)
        .arg("x")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&v1)
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let wrong = rounds(&m, "redis wrong types");
    let _: () = redis::cmd("DEL")
        .arg(&meta)
        .arg(&lru)
        .arg(&v1)
        .query(&mut c)
        .unwrap();
    let deleted = rounds(&m, "redis deleted");
    println!(
        "S24 redis wrong types: rounds before {before:?}, wrong types {wrong:?}, \
         deleted {deleted:?}; {:?}",
        m.cache_info()
    );
    // Leave nothing behind.
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut c)
        .unwrap();
    for k in keys {
        let _: () = redis::cmd("DEL").arg(k).query(&mut c).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Many threads, evictions, clears and compactions at once.
// ---------------------------------------------------------------------------

/// Held: 6 threads over two `Memo`s of one name on one local store (two
/// in-process tiers) call f(x) = 3x + 1 for 40 keys with `maxsize` 8 (so
/// evictions all the time), while another thread clears the namespace,
/// compacts the store and overwrites keys through a third `Memo` that
/// stores the right values, for 2 s: no call ever returns a wrong value.
/// (`S24_STORM_MODE`, a bit mask, picks the disturbances: 1 clear, 2
/// compact, 4 calls of the third `Memo`; 7 by default.) A first version of
/// this test called the third `Memo` with `for x in 0..40` (an `i32`) and
/// saw f(0) = 2: see `one_memo_called_with_two_argument_types_never_mixes_them`.
#[test]
fn threads_evictions_clears_and_compactions_never_give_a_wrong_value() {
    let dir = temp_root().join(unique("storm").replace("::", "_"));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = Arc::new(LocalBackend::open(&dir).unwrap());
    let name = unique("storm");
    let memo = |b: Arc<LocalBackend>| {
        Arc::new(
            Memo::builder(name.clone())
                .secret(SECRET)
                .maxsize(Some(8))
                .backend(b)
                .build(),
        )
    };
    let memos = [memo(raw.clone()), memo(raw.clone()), memo(raw.clone())];
    let until = Instant::now() + Duration::from_secs(2);
    let wrong = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..6u64 {
        let m = memos[(t % 2) as usize].clone();
        let (wrong, calls) = (wrong.clone(), calls.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = t * 7;
            while Instant::now() < until {
                let x = i % 40;
                let v = m.call(x, |x| 3 * x + 1);
                if v != 3 * x + 1 && wrong.fetch_add(1, Ordering::SeqCst) < 5 {
                    println!("S24 storm: f({x}) returned {v}");
                }
                calls.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        }));
    }
    let m3 = memos[2].clone();
    let store = raw.clone();
    let mode: u64 = std::env::var("S24_STORM_MODE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    threads.push(std::thread::spawn(move || {
        let mut n = 0u64;
        while Instant::now() < until {
            if mode & (1 << (n % 3)) == 0 {
                n += 1;
                continue;
            }
            match n % 3 {
                0 => m3.cache_clear(),
                1 => {
                    let _ = store.store().compact();
                }
                _ => {
                    for x in 0..40u64 {
                        m3.call(x, |x| 3 * x + 1);
                    }
                }
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    }));
    for t in threads {
        t.join().unwrap();
    }
    let (wrong, calls) = (wrong.load(Ordering::SeqCst), calls.load(Ordering::SeqCst));
    println!("S24 storm: {calls} calls, {wrong} wrong");
    assert_eq!(wrong, 0);
}

// ---------------------------------------------------------------------------
// call_many on every backend; keys and values too large.
// ---------------------------------------------------------------------------

/// Held: `call_many` with repeated arguments, some cached and some not, and
/// one entry planted unsealed by another writer, gives each argument its
/// own value in order, on every backend, then again from the cache.
#[test]
fn call_many_gives_each_argument_its_value_on_every_backend() {
    for (label, target) in every_backend("call_many_gives_each_argument_its_value_on_every_backend")
    {
        let name = unique("many");
        let m = memo_on(&target, &name, Duration::from_secs(5));
        for x in [2u64, 4] {
            assert_eq!(m.call(x, |x| x * 5), x * 5);
        }
        // Another writer plants an unsealed value for 4.
        let raw: Arc<dyn Backend> = if target.contains("://") {
            picocache::open(&target).unwrap()
        } else {
            Arc::new(LocalBackend::open(&target).unwrap())
        };
        raw.namespace(&name, picocache::Limits::maxsize(None))
            .unwrap()
            .put(
                &picocache::memo::encode(&4u64).unwrap(),
                &picocache::memo::encode(&999u64).unwrap(),
                None,
            )
            .unwrap();
        let args = [1u64, 2, 2, 3, 4, 1, 5, 4];
        let want: Vec<u64> = args.iter().map(|x| x * 5).collect();
        let ran = AtomicU64::new(0);
        let got = m.call_many(args, |x| {
            ran.fetch_add(1, Ordering::SeqCst);
            x * 5
        });
        assert_eq!(got, want, "{label}");
        let again = m.call_many(args, |x| x * 5 + 1);
        println!(
            "S24 call_many {label}: ran {} of {} (distinct misses: 1, 3, 4, 5)",
            ran.load(Ordering::SeqCst),
            args.len()
        );
        assert_eq!(again, want, "{label}: from the cache");
    }
}

/// Held: a key above the engine's 1 MiB limit and a value above Redis's
/// and SQL's default `max_value_size` (9 MiB) never break a call: the
/// function's value is returned (twice, so not cached), on every backend;
/// in strict mode the same calls fail with an error that says what is too
/// large (printed), not a panic.
#[test]
fn keys_and_values_too_large_never_break_a_call() {
    for (label, target) in every_backend("keys_and_values_too_large_never_break_a_call") {
        let name = unique("large");
        let m = memo_on(&target, &name, Duration::from_secs(5));
        let big_key = "k".repeat((1 << 20) + 10);
        for _ in 0..2 {
            assert_eq!(
                m.call(big_key.clone(), |k| k.len()),
                big_key.len(),
                "{label}"
            );
            let v = m.call(3u64, |_| vec![7u8; 9 << 20]);
            assert_eq!(v.len(), 9 << 20, "{label}");
            assert!(v.iter().all(|&b| b == 7), "{label}");
        }
        let strict = Memo::builder(unique("large-strict"))
            .secret(SECRET)
            .strict(true);
        let strict = if target.contains("://") {
            strict.url(&target).build()
        } else {
            strict
                .backend(Arc::new(LocalBackend::open(&target).unwrap()))
                .build()
        };
        let e1 = strict.try_call(big_key.clone(), |k| k.len());
        let e2 = strict.try_call(3u64, |_| vec![7u8; 9 << 20]);
        println!(
            "S24 too large {label}: big key: {:?}; big value: {:?}",
            e1.as_ref().map_err(ToString::to_string),
            e2.as_ref().map(Vec::len).map_err(ToString::to_string)
        );
    }
}

// ---------------------------------------------------------------------------
// CLI output into a closed pipe.
// ---------------------------------------------------------------------------

/// Held: every command whose output is long (`stats`, `stats --json`,
/// `verify --json`, `ls`, `ls --hex`, `prune --dry-run`), writing into a
/// pipe its reader closed at once, ends without a panic (no exit 101, no
/// "panicked" on stderr).
#[test]
fn every_command_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Backend> = seal(Arc::new(LocalBackend::open(dir.path()).unwrap()));
    for n in 0..300 {
        let ns = b
            .namespace(
                &format!("s24::pipe::{n:04}"),
                picocache::Limits::maxsize(None),
            )
            .unwrap();
        ns.put(b"k", b"v", None).unwrap();
    }
    let ns = b
        .namespace("s24::pipe::many", picocache::Limits::maxsize(None))
        .unwrap();
    for k in 0..5000u32 {
        ns.put(&k.to_le_bytes(), b"value", None).unwrap();
    }
    drop((ns, b));
    let p = dir.path().to_str().unwrap();
    for args in [
        vec!["stats", p],
        vec!["--json", "stats", p],
        vec!["--json", "verify", p],
        vec!["ls", p, "s24::pipe::many"],
        vec!["ls", "--hex", p, "s24::pipe::many"],
        vec!["prune", p, "--unused-for", "0s", "--dry-run"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_picocache"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        println!("S24 closed pipe {args:?}: {:?} {err}", out.status.code());
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Held: was a bug found by this test, fixed in ebe852b (the result type's
/// layout fingerprint: an i32 value is not read as a u64).
/// What happened before the fix:
/// A `Memo`'s `call` is generic in the argument and result types at each
/// call, and nothing ties a `Memo` (or a namespace) to one pair of types: a
/// call with `0..40` (inferred `i32`) next to calls with `u64` shares keys
/// (bincode's zigzag `i32` 0 is the varint `u64` 0, `i32` 1 is `u64` 2) and
/// reads the other's values as its own type: with f(x) = 3x + 1 cached for
/// the `i32`s 0..4, the `u64` calls f(0..4) return [2, 4, 8, 10], not
/// [1, 4, 7, 10] (`u64` 2 is `i32` 1's key, whose `i32` 4 reads as `u64`
/// 8). Every time. Found
/// by accident in `threads_evictions_clears_and_compactions_never_give_a_wrong_value`.
/// Severity: silent wrong values from an integer literal's inferred type.
/// Suggested fix: a `Memo` remembers the `TypeId`s (or `type_name`s) of
/// its first call's `A` and `R` and treats a call with others as a cache
/// failure (warn, run uncached); and, across processes, the type
/// fingerprint in the namespace suggested in
/// `an_edited_result_type_never_reads_the_old_layout`.
#[test]
fn one_memo_called_with_two_argument_types_never_mixes_them() {
    let dir = temp_root().join("two-types");
    let m = memo_on(
        &dir.display().to_string(),
        &unique("types"),
        Duration::from_secs(5),
    );
    for x in 0..4 {
        // `x` is an i32 here.
        assert_eq!(m.call(x, |x| 3 * x + 1), 3 * x + 1);
    }
    let got: Vec<u64> = (0..4u64).map(|x| m.call(x, |x| 3 * x + 1)).collect();
    println!("S24 two types: f(0..4) as u64 = {got:?}");
    assert_eq!(got, vec![1, 4, 7, 10]);
}

// ---------------------------------------------------------------------------
// Odd names and URLs.
// ---------------------------------------------------------------------------

/// Held: functions with odd names (empty, a NUL, a newline, a trailing
/// space, another case, 200 two-byte characters, 300 bytes, names that
/// differ only past the shortening) on every backend each get their own
/// value, twice (the second time from the cache where the backend can keep
/// the name). What each backend could not cache is printed (misses on the
/// second round).
#[test]
fn odd_names_never_share_values_on_any_backend() {
    let long = "x".repeat(300);
    let names = [
        String::new(),
        "\0nul".to_string(),
        "a\nb".to_string(),
        "s24 f".to_string(),
        "s24 f ".to_string(),
        "S24 F".to_string(),
        "é".repeat(200),
        format!("{long}1"),
        format!("{long}2"),
    ];
    for (label, target) in every_backend("odd_names_never_share_values_on_any_backend") {
        // The names as given (no run id): a second run on a server meets
        // the first one's values, which are the same.
        let memos: Vec<Memo> = names
            .iter()
            .map(|n| memo_on(&target, n, Duration::from_secs(5)))
            .collect();
        let mut not_cached = Vec::new();
        for round in 0..2 {
            for (i, m) in memos.iter().enumerate() {
                let i = i as u64;
                let mut ran = false;
                let v = m.call(5u64, |x| {
                    ran = true;
                    x * 100 + i
                });
                assert_eq!(v, 500 + i, "{label}: name {:?}", names[i as usize]);
                if round == 1 && ran {
                    not_cached.push(names[i as usize].escape_debug().to_string());
                }
            }
        }
        println!("S24 odd names {label}: not cached on the second round: {not_cached:?}");
    }
}

/// Held: a memoized call whose URL is malformed or unusable (no host, a bad
/// port, a bad escape, an unknown scheme, bad timeouts, a path that is a
/// regular file, a SQLite file in a missing directory) returns the
/// function's value, twice, without a panic; a regular file given as a
/// local store is left as it was.
#[test]
fn malformed_urls_never_break_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"my notes").unwrap();
    let file_s = file.display().to_string();
    let urls = [
        "redis://".to_string(),
        "redis://:@".to_string(),
        "redis://127.0.0.1:99999/0".to_string(),
        "redis://127.0.0.1:1/notadb".to_string(),
        "postgresql://%zz@127.0.0.1/db".to_string(),
        "postgresql://127.0.0.1:1/db?connect_timeout=1e309".to_string(),
        "mysql://127.0.0.1:1/db?timeout=NaN".to_string(),
        "mysql://[::1/db".to_string(),
        "sqlite://".to_string(),
        format!("sqlite:///{}/missing/dir/x.db", dir.path().display()),
        format!("sqlite:///{file_s}"),
        "nosuch://h/x".to_string(),
        file_s.clone(),
        "unix://".to_string(),
        "rediss://127.0.0.1:1/0#insecure#insecure".to_string(),
    ];
    for url in &urls {
        let m = Memo::builder(unique("badurl"))
            .secret(SECRET)
            .url(url.as_str())
            .build();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let t = Instant::now();
            let v = (m.call(2u64, |x| x + 1), m.call(2u64, |x| x + 1));
            (v, t.elapsed())
        }));
        let strict = Memo::builder(unique("badurl"))
            .secret(SECRET)
            .strict(true)
            .url(url.as_str())
            .build();
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            strict.try_call(2u64, |x| x + 1).map_err(|e| e.to_string())
        }));
        println!("S24 bad url {url:?}: {r:?}; strict: {e:?}");
        let (v, took) = r.unwrap_or_else(|_| panic!("{url}: a call panicked"));
        assert_eq!(v, (3, 3), "{url}");
        assert!(took < Duration::from_secs(30), "{url}: {took:?}");
        assert!(e.is_ok(), "{url}: try_call panicked");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"my notes");
}

// ---------------------------------------------------------------------------
// A writer frozen while holding the local store's lock.
// ---------------------------------------------------------------------------

/// A process frozen while it holds the local store's writer lock (the
/// `lock` file's `flock(LOCK_EX)`, taken for every write: a process
/// stopped by Ctrl-Z / SIGSTOP or a debugger mid-write, or a `picocache
/// compact` or `repair` suspended by Ctrl-Z) blocks every other process's
/// memoized miss for as long as it stays frozen: the store's `flock` is
/// taken blocking, with no deadline (`engine/src/txn.rs` `FlockGuard::new`,
/// `sys::flock(f, true, false)`; also at open, `recovery.rs`), so the call
/// never returns the function's value; hits still answer. Here the lock is
/// held by another open file description of this process (as a frozen
/// process would hold it): the miss was still blocked after 5 s (every
/// time), and returned as soon as the lock was released. (A real writer
/// process stopped by SIGSTOP at a random moment of a loop of 1 MiB writes
/// held it in 0 of 10 tries: the lock is held briefly, so what freezes
/// others is a process stopped inside a write, or inside a long operation
/// under the lock.) Severity: a hang
/// of the user's call caused by another process (the first rule: the cache
/// steps aside instead). Suggested fix: take the writer lock with
/// `LOCK_NB` in a bounded retry loop (a few seconds, like the lease wait)
/// and fail the write with a "store busy" error past it, which `Memo`
/// reports and steps aside from (the function's value returned, not
/// stored).
#[test]
// Fixed since: 60836ec (Options::lock_timeout); the doc above describes the bug as found.
fn a_frozen_writer_holding_the_store_lock_never_hangs_a_call() {
    use std::os::fd::AsRawFd;
    let dir = temp_root().join(unique("frozen").replace("::", "_"));
    let m = Arc::new(memo_on(
        &dir.display().to_string(),
        &unique("frozen"),
        Duration::from_secs(2),
    ));
    assert_eq!(m.call(1u64, |x| x * 10), 10);
    let lock = std::fs::File::open(dir.join("lock")).unwrap();
    // SAFETY: flock on a file this test opened.
    assert_eq!(unsafe { flock(lock.as_raw_fd(), LOCK_EX) }, 0);
    let t = Instant::now();
    assert_eq!(m.call(1u64, |x| x * 10 + 1), 10, "a hit answers");
    let hit = t.elapsed();
    let (tx, rx) = mpsc::channel();
    let m2 = m.clone();
    let miss = std::thread::spawn(move || {
        let t = Instant::now();
        let v = m2.call(2u64, |x| x * 10);
        let _ = tx.send((v, t.elapsed()));
    });
    let answer = rx.recv_timeout(Duration::from_secs(5));
    // SAFETY: as above.
    assert_eq!(unsafe { flock(lock.as_raw_fd(), LOCK_UN) }, 0);
    let late = Instant::now();
    miss.join().unwrap();
    println!(
        "S24 frozen writer: hit in {hit:?}; miss within 5 s: {answer:?}; \
         released {:?} after the lock was",
        late.elapsed()
    );
    let (v, took) = answer.expect("the miss was still blocked after 5 s");
    assert_eq!(v, 20);
    assert!(took < Duration::from_secs(5));
}

// ---------------------------------------------------------------------------
// SQLite columns of the wrong type; a store deleted under a process.
// ---------------------------------------------------------------------------

/// Held: SQLite rows whose columns hold values of another type (SQLite
/// types values, not columns: an integer or text value, text keys and key
/// hashes, a negative or text size, an expiry in the past or of text, an
/// access time at `i64::MAX`) and counters of the namespace set negative:
/// every call returns its own value, and `stats`, `cache_info` and
/// `cache_clear` answer without a panic (what they answer is printed).
#[test]
fn sqlite_columns_of_the_wrong_type_never_break_a_call() {
    let dir = temp_root().join(unique("sqltypes").replace("::", "_"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.sqlite");
    let url = format!("sqlite:///{}", file.display());
    let name = unique("sqltypes");
    let m = memo_on(&url, &name, Duration::from_secs(5));
    for x in 1..=8u64 {
        assert_eq!(m.call(x, |x| x * 9), x * 9);
    }
    let db = rusqlite::Connection::open(&file).unwrap();
    let ns: i64 = db
        .query_row(
            "SELECT id FROM picocache_ns WHERE name = ?1",
            [&name],
            |r| r.get(0),
        )
        .unwrap();
    let key = |x: u64| picocache::memo::encode(&x).unwrap();
    for (x, set) in [
        (1u64, "v = 42"),
        (2, "v = 'text value'"),
        (3, "k = 'text key'"),
        (4, "kh = 7"),
        (5, "size = -5"),
        (6, "size = 'big', expires = 'soon'"),
        (7, "expires = -1"),
        (8, "atime = 9223372036854775807"),
    ] {
        let n = db
            .execute(
                &format!("UPDATE picocache SET {set} WHERE ns = ?1 AND k = ?2"),
                rusqlite::params![ns, key(x)],
            )
            .unwrap();
        assert_eq!(n, 1, "{set}");
    }
    db.execute(
        "UPDATE picocache_ns SET entries = -3, bytes = 'lots', hits = -1 WHERE id = ?1",
        [ns],
    )
    .unwrap();
    drop(db);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let values: Vec<u64> = (1..=9u64)
            .chain(1..=9)
            .map(|x| m.call(x, |x| x * 9))
            .collect();
        let stats = m.stats().map_err(|e| e.to_string());
        let info = m.cache_info();
        m.cache_clear();
        let after: Vec<u64> = (1..=9u64).map(|x| m.call(x, |x| x * 9)).collect();
        (values, stats, info, after)
    }));
    println!("S24 sqlite wrong types: {r:?}");
    let (values, _, _, after) = r.expect("a call, stats, cache_info or cache_clear panicked");
    let want: Vec<u64> = (1..=9u64).chain(1..=9).map(|x| x * 9).collect();
    assert_eq!(values, want);
    assert_eq!(after, want[..9].to_vec());
}

/// Held: a local store deleted (`rm -rf`) while a process uses it: the
/// process's calls, cached and new, still return the function's values,
/// without a panic; the CLI then says there is no store there.
#[test]
fn a_store_deleted_under_a_process_never_breaks_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let m = memo_on(
        &store.display().to_string(),
        &unique("deleted"),
        Duration::from_secs(2),
    );
    for x in 0..20u64 {
        assert_eq!(m.call(x, |x| x + 5), x + 5);
    }
    std::fs::remove_dir_all(&store).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (0..40u64)
            .map(|x| m.call(x, |x| x + 5))
            .collect::<Vec<u64>>()
    }));
    let values = r.expect("a call panicked");
    assert_eq!(values, (0..40u64).map(|x| x + 5).collect::<Vec<_>>());
    let info = m.cache_info();
    let o = cli(&["stats", store.to_str().unwrap()]);
    println!(
        "S24 deleted store: {info:?}; stats: {:?} {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(2));
}

// ---------------------------------------------------------------------------
// Stack depth of memoized recursion.
// ---------------------------------------------------------------------------

fn plain_sum(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        n + std::hint::black_box(plain_sum(n - 1))
    }
}

fn memo_sum(m: &Memo, n: u64) -> u64 {
    m.call(n, |n| if n == 0 { 0 } else { n + memo_sum(m, n - 1) })
}

/// Whether a recursion of `depth` (memoized or plain) ends in a child.
fn depth_ends(depth: u64, plain: bool) -> bool {
    let dir = temp_root().join(unique("depth").replace("::", "_"));
    let depth_s = depth.to_string();
    let dir_s = dir.display().to_string();
    let mut envs = vec![
        ("S24_DEPTH", depth_s.as_str()),
        ("S24_TARGET", dir_s.as_str()),
    ];
    if plain {
        envs.push(("S24_PLAIN", "1"));
    }
    let out = child_command("depth", &envs).output().unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("S24 CHILD DONE")
}

/// Measures, in child processes with an 8 MiB stack, the deepest memoized
/// recursion that ends against the plain one (prints them; asserts only
/// that a memoized depth of 1000 ends). Run with `--ignored --nocapture`.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn memoized_recursion_depth() {
    let deepest = |plain: bool| {
        let mut ok = 0;
        for d in [1_000u64, 3_000, 10_000, 30_000, 100_000, 300_000] {
            if !depth_ends(d, plain) {
                break;
            }
            ok = d;
        }
        ok
    };
    let (plain, memo) = (deepest(true), deepest(false));
    println!("S24 depth: plain recursion ends at {plain}, memoized at {memo} (8 MiB stack)");
    assert!(memo >= 1_000);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A memoized recursion of depth `n` that records the open descriptors of
/// the process at its deepest level.
fn memo_depth_fds(m: &Memo, n: u64, deepest: &AtomicU64) -> u64 {
    m.call(n, |n| {
        if n == 0 {
            deepest.store(open_fds() as u64, Ordering::SeqCst);
            0
        } else {
            1 + memo_depth_fds(m, n - 1, deepest)
        }
    })
}

/// Each level of a memoized recursion on the local store holds its key's
/// lease, and each lease holds an open file description of the store's
/// `leases` file (OFD locks: one descriptor per lease held), so a recursion
/// of depth 500 holds about 500 more descriptors at its deepest level than
/// at its start (measured: 10 before, 510 at the deepest level). Under the
/// common `ulimit -n 1024`, a memoized recursion of depth ~1000 exhausts
/// the process's descriptors: the leases then fail (the cache steps aside),
/// but so does whatever the user's function opens at that depth (a file, a
/// socket): measured here under `ulimit -n 256`, the function's own
/// `File::open` at depth 400 fails with "Too many open files" (os error
/// 24), which the plain function would not. Every time. Severity: the
/// cache breaking the user's function (medium-low: deep memoized recursion).
/// Suggested fix: take nested leases on one shared descriptor per store
/// (OFD locks of different bytes on one open file description do not
/// conflict with each other, so one description per thread or per store
/// can hold many), or skip the store lease for re-entrant (nested) calls
/// on a thread already holding one for the same namespace.
#[test]
// Fixed since: dd6ee69 (leases of one thread share a descriptor); the doc above describes the bug as found.
fn deep_memoized_recursion_holds_no_descriptor_per_level() {
    let dir = temp_root().join(unique("fds").replace("::", "_"));
    let m = memo_on(
        &dir.display().to_string(),
        &unique("fds"),
        Duration::from_secs(2),
    );
    m.call(1_000_000u64, |x| x); // the store and its files opened
    let before = open_fds();
    let deepest = AtomicU64::new(0);
    let depth = 500;
    let v = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn_scoped_fallback(|| memo_depth_fds(&m, depth, &deepest));
    assert_eq!(v, depth);
    let at_depth = deepest.load(Ordering::SeqCst) as usize;
    println!(
        "S24 fds: {before} open before a memoized recursion of depth {depth}, \
         {at_depth} at its deepest level, {} after",
        open_fds()
    );
    // The user's own `File::open` at depth 400 under `ulimit -n 256`.
    let bin = std::env::current_exe().unwrap();
    let dir2 = temp_root().join(unique("fds-limit").replace("::", "_"));
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" child --exact --test-threads=1 --nocapture")
        .arg(&bin)
        .env("S24_ROLE", "fds_limit")
        .env("S24_TARGET", &dir2)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let opened = text
        .lines()
        .find_map(|l| l.split_once("S24 OPEN ").map(|(_, r)| r.to_owned()))
        .unwrap_or_else(|| format!("no answer: {text}"));
    println!("S24 fds: under ulimit -n 256, the function's File::open at depth 400: {opened}");
    assert!(at_depth < before + 50, "{before} -> {at_depth}");
    assert_eq!(opened, "ok");
}

/// A memoized recursion of depth `n` whose deepest level opens a file and
/// notes how that went.
fn memo_open_at_depth(m: &Memo, n: u64, opened: &std::sync::Mutex<String>) -> u64 {
    m.call(n, |n| {
        if n == 0 {
            *opened.lock().unwrap() = match std::fs::File::open("/proc/self/status") {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("failed: {e}"),
            };
            0
        } else {
            1 + memo_open_at_depth(m, n - 1, opened)
        }
    })
}

/// `std::thread::scope` with a stack size: runs `f` on a scoped thread with
/// the builder's stack.
trait SpawnScoped {
    fn spawn_scoped_fallback<T: Send>(self, f: impl FnOnce() -> T + Send) -> T;
}

impl SpawnScoped for std::thread::Builder {
    fn spawn_scoped_fallback<T: Send>(self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| self.spawn_scoped(s, f).unwrap().join().unwrap())
    }
}

// ---------------------------------------------------------------------------
// More: the tier and TTLs; control characters in the CLI's output.
// ---------------------------------------------------------------------------

/// Held: a value kept in the process's tier is not served past its TTL
/// (a local store, TTL 300 ms: three calls, the last two hits, then after
/// 400 ms the function runs again).
#[test]
fn the_tier_never_serves_a_value_past_its_ttl() {
    let dir = temp_root().join(unique("tierttl").replace("::", "_"));
    std::fs::create_dir_all(&dir).unwrap();
    let m = Memo::builder(unique("tierttl"))
        .secret(SECRET)
        .ttl(Some(Duration::from_millis(300)))
        .backend(Arc::new(LocalBackend::open(&dir).unwrap()))
        .build();
    assert_eq!(m.call(1u64, |_| 1u64), 1);
    assert_eq!(m.call(1u64, |_| 2u64), 1);
    assert_eq!(m.call(1u64, |_| 3u64), 1);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(m.call(1u64, |_| 4u64), 4);
}

/// `picocache stats` (table output) prints a namespace's name raw: a name
/// holding terminal control sequences (an ESC that clears the screen, an
/// OSC that sets the window title ended by a BEL, a carriage return and a
/// newline that forge table rows) reaches the terminal as is. So does
/// `picocache ls` for a Python package key with a type tag (`T`): the
/// type's name is printed raw (`keyfmt::Reader::value`, `from_utf8_lossy`
/// without escaping, where strings get `{:?}`); other keys are escaped
/// (`\x1b`), and `--json` escapes everything. (`prune`'s list of names
/// not checked: the name here is not old enough to be listed.) Every time.
/// Severity: low (a name is chosen by whoever writes the store:
/// `Memo::builder` takes any string), a terminal-injection cosmetic.
/// Suggested fix: print names in tables escaped as `ls` prints keys, and
/// escape type names in `keyfmt` (`{:?}` or `escape_default`).
#[test]
// Fixed since: outln! escapes control characters (output.rs printable).
fn control_characters_never_reach_the_terminal_raw() {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Backend> = seal(Arc::new(LocalBackend::open(dir.path()).unwrap()));
    let evil = "s24 \u{1b}[2J\u{1b}]0;title\u{7} cr\rnl\n end";
    let ns = b.namespace(evil, picocache::Limits::maxsize(None)).unwrap();
    ns.put(evil.as_bytes(), b"v", None).unwrap();
    ns.put(&picocache::memo::encode(evil).unwrap(), b"v", None)
        .unwrap();
    // A Python package key: one positional argument, a type-tagged
    // (`T`) `None` whose type name holds the sequences.
    let mut py = vec![1u8, b'A'];
    py.extend_from_slice(&1u32.to_le_bytes());
    py.push(b'T');
    py.extend_from_slice(&(evil.len() as u32).to_le_bytes());
    py.extend_from_slice(evil.as_bytes());
    py.push(b'N');
    ns.put(&py, b"v", None).unwrap();
    drop((ns, b));
    let p = dir.path().to_str().unwrap();
    let mut raw = Vec::new();
    for args in [
        vec!["stats", p],
        vec!["--json", "stats", p],
        vec!["ls", p, evil],
        vec!["--json", "ls", p, evil],
        vec!["prune", p, "--unused-for", "0s", "--dry-run"],
    ] {
        let o = cli(&args);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let shown = out.escape_debug().to_string();
        println!(
            "S24 control chars {:?}: {:?} {shown}",
            &args[..1],
            o.status.code()
        );
        // Newlines end table rows: only ESC, BEL and CR are looked for.
        if out.contains(['\u{1b}', '\u{7}', '\r']) {
            raw.push(args[0].to_string());
        }
    }
    assert!(raw.is_empty(), "raw control characters from {raw:?}");
}

/// Held: a local store holds at most 1024 namespaces, and every edit of a
/// `#[memoize]` function's body names a new one: functions opened past the
/// limit (1100 here, one entry each) still return their values, without a
/// panic. Whether the last ones cache (after the limit) is printed, with
/// the error a strict memo gets.
#[test]
fn namespaces_past_the_stores_limit_never_break_a_call() {
    let dir = temp_root().join(unique("many-ns").replace("::", "_"));
    std::fs::create_dir_all(&dir).unwrap();
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(&dir).unwrap());
    let memos: Vec<Memo> = (0..1100u64)
        .map(|i| {
            Memo::builder(format!("s24::many::{i}"))
                .secret(SECRET)
                .backend(b.clone())
                .build()
        })
        .collect();
    for (i, m) in memos.iter().enumerate() {
        let i = i as u64;
        assert_eq!(m.call(i, |x| x * 2), i * 2);
    }
    let mut cached = 0;
    for (i, m) in memos.iter().enumerate().skip(1050) {
        let i = i as u64;
        let mut ran = false;
        assert_eq!(
            m.call(i, |x| {
                ran = true;
                x * 2
            }),
            i * 2
        );
        cached += u32::from(!ran);
    }
    let strict = Memo::builder("s24::many::strict")
        .secret(SECRET)
        .strict(true)
        .backend(b)
        .build();
    let e = strict.try_call(1u64, |x| x).map_err(|e| e.to_string());
    println!(
        "S24 many namespaces: {cached} of the last 50 cached; a strict memo past the limit: {e:?}"
    );
}

// ---------------------------------------------------------------------------
// fork() with pooled connections to a server.
// ---------------------------------------------------------------------------

/// 300 calls of f(x) = 13x + 1 over `xs`; how many returned a wrong value.
fn wrong_of(m: &Memo, xs: impl Iterator<Item = u64>) -> u64 {
    xs.filter(|&x| m.call(x, |x| 13 * x + 1) != 13 * x + 1)
        .count() as u64
}

/// In a child process of its own: uses `target` (warming its connection
/// pool), forks, and both processes call at once (different and shared
/// keys) over what the child inherited. Prints the outcome.
fn fork_remote_probe(target: &str) {
    let m = memo_on(target, &unique("forkremote"), Duration::from_secs(2));
    assert_eq!(wrong_of(&m, 0..20), 0);
    // SAFETY: the forked process runs only the calls below and `_exit`s.
    let pid = unsafe { fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let wrong = wrong_of(
            &m,
            (0..300).map(|i| if i % 3 == 0 { i % 20 } else { 1000 + i }),
        );
        // SAFETY: ends the forked process without running anything else.
        unsafe { _exit(if wrong == 0 { 0 } else { 3 }) };
    }
    let t = Instant::now();
    let wrong = wrong_of(
        &m,
        (0..300).map(|i| if i % 3 == 0 { i % 20 } else { 5000 + i }),
    );
    let parent_took = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut status = 0;
    let child = loop {
        // SAFETY: waits for the process forked above.
        let r = unsafe { waitpid(pid, &mut status, WNOHANG) };
        if r == pid {
            break if status == 0 { "ok" } else { "wrong" };
        }
        if Instant::now() > deadline {
            // SAFETY: the process forked above, then reaped.
            unsafe {
                kill(pid, SIGKILL);
                waitpid(pid, &mut status, 0);
            }
            break "hung";
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "\nS24 FORKREMOTE parent_wrong={wrong} parent_took={parent_took:?} child={child} \
         child_status={status} total={:?}",
        t.elapsed()
    );
}

/// Held: a process that forks after using a PostgreSQL, MySQL or Redis
/// backend (its pool holds open connections, which the child inherits),
/// then parent and child both call at once: neither ever gets a wrong value
/// (the seal binds a value to its key, so an answer read off a shared
/// socket for the other process's command cannot pass as this one's), and
/// both end within a bounded time (40 s asserted; the times are printed).
#[test]
fn a_fork_with_pooled_connections_never_gives_a_wrong_value() {
    let mut targets = vec![];
    for (label, var) in [
        ("postgres", "PICOCACHE_POSTGRES_URL"),
        ("mysql", "PICOCACHE_MYSQL_URL"),
        ("redis", "PICOCACHE_REDIS_URL"),
    ] {
        if let Some(u) = server_url(
            var,
            "a_fork_with_pooled_connections_never_gives_a_wrong_value",
        ) {
            targets.push((label, u));
        }
    }
    for (label, url) in targets {
        let out = child_command("fork_remote", &[("S24_TARGET", &url)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.starts_with("S24 FORKREMOTE"))
            .unwrap_or_else(|| {
                panic!(
                    "{label}: no outcome: {text}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_owned();
        println!("S24 fork with pooled connections {label}: {line}");
        assert!(line.contains("parent_wrong=0"), "{label}: {line}");
        assert!(line.contains("child=ok"), "{label}: {line}");
    }
}

// ---------------------------------------------------------------------------
// Arguments that are equal but encode differently, and nested options.
// ---------------------------------------------------------------------------

/// Held: `HashMap` arguments (whose encoding follows the map's iteration
/// order, which differs between equal maps) never get another map's value:
/// equal maps built in different orders and capacities get the right value
/// (a miss when their order differs: counted and printed); and nested
/// options (`None`, `Some(None)`, `Some(Some(0))`), unit-like values and
/// empty containers each get their own value.
#[test]
fn equal_but_differently_ordered_maps_and_nested_options_get_their_own_values() {
    use std::collections::HashMap;
    let dir = temp_root().join(unique("maps").replace("::", "_"));
    let m = memo_on(
        &dir.display().to_string(),
        &unique("maps"),
        Duration::from_secs(5),
    );
    let sum = |h: HashMap<String, u64>| h.iter().map(|(k, v)| k.len() as u64 * v).sum::<u64>();
    let mut misses = 0;
    for round in 0..40u64 {
        let mut h = HashMap::with_capacity(1 + (round as usize % 7) * 16);
        let keys: Vec<String> = (0..12).map(|i| format!("k{}", "x".repeat(i))).collect();
        for i in 0..12 {
            let i = (i * 5 + round as usize) % 12;
            h.insert(keys[i].clone(), i as u64 + round % 3);
        }
        let want = sum(h.clone());
        let mut ran = false;
        let got = m.call(h, |h| {
            ran = true;
            sum(h)
        });
        assert_eq!(got, want, "round {round}");
        misses += u32::from(ran);
    }
    println!("S24 maps: 40 calls with 3 distinct maps: {misses} misses");
    let _ = misses; // see `a_hashmap_argument_is_a_hit_when_seen_before`

    let n = memo_on(
        &dir.display().to_string(),
        &unique("options"),
        Duration::from_secs(5),
    );
    let show = |o: Option<Option<u64>>| format!("{o:?}");
    for o in [None, Some(None), Some(Some(0)), Some(Some(1))] {
        assert_eq!(n.call(o, show), show(o));
    }
    for o in [None, Some(None), Some(Some(0)), Some(Some(1))] {
        assert_eq!(n.call(o, |_| "wrong".to_string()), show(o));
    }
}

/// Held: values swapped between two keys, truncated, and copied from
/// another namespace's row (same key), by UPDATEs in PostgreSQL and MySQL
/// behind the memoizer's back (a table of its own each), are rejected:
/// each call returns its own function's value.
/// SQL options for a test of what the backend stores and serves, not of
/// its deadlines: the default 1 s `timeout` is too short on a loaded
/// 2-core CI machine, where a fresh table's first statements on MariaDB
/// took longer, the store was skipped, and the test found no row to tamper
/// with (CI of stop 24).
fn patient_sql(table: &str) -> picocache::SqlOptions {
    picocache::SqlOptions {
        table: table.to_string(),
        timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

#[test]
fn tampered_postgres_and_mysql_rows_are_never_served() {
    for (label, var) in [
        ("postgres", "PICOCACHE_POSTGRES_URL"),
        ("mysql", "PICOCACHE_MYSQL_URL"),
    ] {
        let Some(url) = server_url(var, "tampered_postgres_and_mysql_rows_are_never_served") else {
            continue;
        };
        let table = own_table();
        let open = || Arc::new(picocache::SqlBackend::connect(&url, patient_sql(&table)).unwrap());
        let (na, nb) = (unique("sql_a"), unique("sql_b"));
        let a = Memo::builder(na.clone())
            .secret(SECRET)
            .backend(open())
            .build();
        let b = Memo::builder(nb.clone())
            .secret(SECRET)
            .backend(open())
            .build();
        for x in 1..=3u64 {
            assert_eq!(a.call(x, |x| x * 10), x * 10);
            assert_eq!(b.call(x, |x| x * 1000), x * 1000);
        }
        let key = |x: u64| picocache::memo::encode(&x).unwrap();
        // (ns name, x) -> the value's bytes; and setting them.
        let swaps: Vec<(&str, u64, &str, u64, bool)> = vec![
            // (target ns, x, source ns, x, truncate)
            (&na, 1, &na, 2, false),
            (&na, 2, &na, 1, false),
            (&na, 3, &na, 3, true),
            (&nb, 2, &na, 2, false),
            (&nb, 3, &na, 3, false),
        ];
        if label == "postgres" {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let get = |c: &mut postgres::Client, ns: &str, x: u64| -> Vec<u8> {
                c.query_one(
                    &format!(
                        "SELECT v FROM {table} WHERE k = $2 AND ns = \
                         (SELECT id FROM {table}_ns WHERE name = $1)"
                    ),
                    &[&ns, &key(x)],
                )
                .unwrap()
                .get(0)
            };
            let olds: Vec<Vec<u8>> = swaps.iter().map(|s| get(&mut c, s.2, s.3)).collect();
            for (s, v) in swaps.iter().zip(olds) {
                let v = if s.4 { v[..v.len() - 1].to_vec() } else { v };
                let n = c
                    .execute(
                        &format!(
                            "UPDATE {table} SET v = $3 WHERE k = $2 AND ns = \
                             (SELECT id FROM {table}_ns WHERE name = $1)"
                        ),
                        &[&s.0, &key(s.1), &v],
                    )
                    .unwrap();
                assert_eq!(n, 1);
            }
        } else {
            use mysql::prelude::Queryable;
            let mut c = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
            let id = |c: &mut mysql::Conn, ns: &str| -> i64 {
                c.exec_first(format!("SELECT id FROM {table}_ns WHERE name = ?"), (ns,))
                    .unwrap()
                    .unwrap()
            };
            let mut olds = Vec::new();
            for s in &swaps {
                let ns = id(&mut c, s.2);
                let v: Vec<u8> = c
                    .exec_first(
                        format!("SELECT v FROM {table} WHERE ns = ? AND k = ?"),
                        (ns, key(s.3)),
                    )
                    .unwrap()
                    .unwrap();
                olds.push(v);
            }
            for (s, v) in swaps.iter().zip(olds) {
                let v = if s.4 { v[..v.len() - 1].to_vec() } else { v };
                let ns = id(&mut c, s.0);
                c.exec_drop(
                    format!("UPDATE {table} SET v = ? WHERE ns = ? AND k = ?"),
                    (v, ns, key(s.1)),
                )
                .unwrap();
                assert_eq!(c.affected_rows(), 1);
            }
        }
        for x in 1..=3u64 {
            assert_eq!(a.call(x, |x| x * 10), x * 10, "{label} a({x})");
            assert_eq!(b.call(x, |x| x * 1000), x * 1000, "{label} b({x})");
        }
        let rejected = a.stats().unwrap().rejected + b.stats().unwrap().rejected;
        println!("S24 tampered {label}: {rejected} rejected");
        // Leave no table behind.
        let drops: Vec<String> = ["", "_ns", "_meta", "_lease"]
            .iter()
            .map(|suffix| format!("DROP TABLE IF EXISTS {table}{suffix}"))
            .collect();
        if label == "postgres" {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            for d in &drops {
                c.batch_execute(d).unwrap();
            }
        } else {
            use mysql::prelude::Queryable;
            let mut c = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
            for d in &drops {
                c.query_drop(d).unwrap();
            }
        }
        assert!(rejected >= 4, "{label}: {rejected}");
    }
}

/// A `HashMap` argument is never a hit: each map has its own random hasher
/// state, so two equal maps iterate (and so encode) in different orders,
/// and the key differs almost every time: 20 calls with equal maps (12
/// entries) ran the function 20 times (every run), each storing one
/// more entry, which evicts the function's useful entries under `maxsize`.
/// No warning says so. Not a wrong value, but a memoized function of a
/// `HashMap` (or `HashSet`) silently never caches. Severity: low
/// (performance, cache pollution). Suggested fix: encode map keys
/// canonically (a serializer wrapper that sorts a map's entries by their
/// encoded key bytes before writing them: `serialize_map` knows it is a
/// map), and document that sets (`serialize_seq`) must be `BTreeSet`s; or
/// at least document "use `BTreeMap`/`BTreeSet` arguments".
#[test]
#[ignore = "BUG: HashMap arguments never hit (iteration order differs between equal maps); silently"]
fn a_hashmap_argument_is_a_hit_when_seen_before() {
    use std::collections::HashMap;
    let dir = temp_root().join(unique("hashmap").replace("::", "_"));
    let m = memo_on(
        &dir.display().to_string(),
        &unique("hashmap"),
        Duration::from_secs(5),
    );
    let make = || -> HashMap<String, u64> { (0..12u64).map(|i| (format!("k{i}"), i)).collect() };
    let mut runs = 0;
    for _ in 0..20 {
        m.call(make(), |h| {
            runs += 1;
            h.values().sum::<u64>()
        });
    }
    println!("S24 hashmap: 20 calls with equal maps ran the function {runs} times");
    assert_eq!(runs, 1);
}

/// Held: a memo on the default store where that store cannot be: the
/// working directory not writable (`/proc`), `$PICOCACHE_DIR` naming a
/// user's file, or a directory of user files with a foreign `index`:
/// every call returns the function's value, and the user's files are left
/// as they were.
#[test]
fn an_unusable_default_store_never_breaks_a_call_nor_touches_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"my notes").unwrap();
    let users = dir.path().join("docs");
    std::fs::create_dir(&users).unwrap();
    std::fs::write(users.join("index"), b"my index").unwrap();
    std::fs::write(users.join("report.txt"), b"report").unwrap();
    let before = snapshot(dir.path());
    for (what, cwd, env) in [
        ("cwd /proc", PathBuf::from("/proc"), None),
        (
            "PICOCACHE_DIR a file",
            dir.path().to_path_buf(),
            Some(file.clone()),
        ),
        (
            "PICOCACHE_DIR user files",
            dir.path().to_path_buf(),
            Some(users.clone()),
        ),
    ] {
        let mut c = child_command("default_store", &[]);
        c.current_dir(&cwd).env_remove("PICOCACHE_DIR");
        if let Some(e) = &env {
            c.env("PICOCACHE_DIR", e);
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.split_once("S24 DEFAULT ").map(|(_, r)| r.to_owned()))
            .unwrap_or_default();
        println!("S24 default store, {what}: {line}");
        assert!(
            out.status.success(),
            "{what}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            snapshot(dir.path()),
            before,
            "{what} changed the user's files"
        );
    }
}

/// A result that bincode cannot encode.
#[derive(Debug, Clone, Copy, PartialEq)]
struct UnencodableResult(u64);

impl Serialize for UnencodableResult {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("s24: cannot encode the result"))
    }
}

impl<'de> Deserialize<'de> for UnencodableResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(UnencodableResult(u64::deserialize(d)?))
    }
}

/// 6 threads call a memoized function (300 ms) with the same arguments at
/// once, and its result cannot be encoded: the leader drops its flight
/// without a value (`Memo::lead` returns before `guard.complete`), so the
/// waiters try again, one of them leads and computes, fails the same way,
/// and so on: the 6 computations run one after another, ~1.8 s where the
/// plain function takes 0.3 s in parallel (measured: printed). Every time.
/// Severity: low (a result that cannot be encoded is already a logged
/// failure), but the cache makes every caller wait for all the others.
/// Suggested fix: on a failure to encode the result, fail the flight in a
/// way that tells waiters to compute on their own at once (not re-join),
/// or hand them the leader's value itself (`Flight<T>` carrying `R` where it
/// is `Clone`).
#[test]
// Fixed since: be2b66b; the doc above describes the bug as found.
fn callers_of_an_unencodable_result_compute_in_parallel() {
    let dir = temp_root().join(unique("unenc-result").replace("::", "_"));
    let m = Arc::new(memo_on(
        &dir.display().to_string(),
        &unique("unencres"),
        Duration::from_secs(5),
    ));
    let t = Instant::now();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                m.call(1u64, |x| {
                    std::thread::sleep(Duration::from_millis(300));
                    UnencodableResult(x)
                })
            })
        })
        .collect();
    for th in threads {
        assert_eq!(th.join().unwrap(), UnencodableResult(1));
    }
    let took = t.elapsed();
    println!("S24 unencodable result: 6 concurrent callers took {took:?} (one call: 300 ms)");
    assert!(took < Duration::from_millis(1200), "{took:?}");
}

/// A function returning a `serde_json::Value` (any type whose `Deserialize`
/// needs `deserialize_any`: untagged or internally tagged enums, `Value`,
/// flattened structs) never hits: bincode encodes the value but cannot
/// decode it, so every call looks up, fails to decode (a logged failure),
/// computes and stores the value again (`Memo::lead` puts after a failed
/// decode): 10 calls ran the function 10 times (every run), the store
/// counting them as hits. The values returned are right. Severity:
/// low (performance; a warning at most once a second says "decoding a
/// cached value failed", not that this type can never be cached).
/// Suggested fix: after storing, check once per `Memo` that the value
/// decodes (a round trip of the first result) and, if not, say so clearly
/// and stop storing (the type cannot be cached with this codec); document
/// the types bincode cannot decode.
#[test]
#[ignore = "BUG: a serde_json::Value result is stored on every call and never hits (bincode cannot decode it)"]
fn a_json_value_result_is_a_hit_when_seen_before() {
    let dir = temp_root().join(unique("json").replace("::", "_"));
    let m = memo_on(
        &dir.display().to_string(),
        &unique("json"),
        Duration::from_secs(5),
    );
    let mut runs = 0;
    for _ in 0..10 {
        let v = m.call(1u64, |x| {
            runs += 1;
            serde_json::json!({ "id": x, "tags": ["a", "b"] })
        });
        assert_eq!(v["id"], 1);
    }
    let store = m.stats().map(|s| (s.hits, s.misses));
    println!("S24 json value: 10 calls ran the function {runs} times; the store's (hits, misses): {store:?}");
    assert_eq!(runs, 1);
}

// ---------------------------------------------------------------------------
// The result layout fingerprint (core::layout) and what it does not trace.
// ---------------------------------------------------------------------------

/// An enum of 70 variants (69 unit ones, then `Last` with a payload of
/// type `$last`), named `Op` for serde.
macro_rules! wide_enum {
    ($name:ident, $last:ty) => {
        #[allow(dead_code)]
        #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
        #[serde(rename = "Op")]
        enum $name {
            V00,
            V01,
            V02,
            V03,
            V04,
            V05,
            V06,
            V07,
            V08,
            V09,
            V10,
            V11,
            V12,
            V13,
            V14,
            V15,
            V16,
            V17,
            V18,
            V19,
            V20,
            V21,
            V22,
            V23,
            V24,
            V25,
            V26,
            V27,
            V28,
            V29,
            V30,
            V31,
            V32,
            V33,
            V34,
            V35,
            V36,
            V37,
            V38,
            V39,
            V40,
            V41,
            V42,
            V43,
            V44,
            V45,
            V46,
            V47,
            V48,
            V49,
            V50,
            V51,
            V52,
            V53,
            V54,
            V55,
            V56,
            V57,
            V58,
            V59,
            V60,
            V61,
            V62,
            V63,
            V64,
            V65,
            V66,
            V67,
            V68,
            Last($last),
        }
    };
}

wide_enum!(OpBefore, u64);
wide_enum!(OpAfter, i64);

/// The layout fingerprint traces at most 64 combinations of enum variants
/// (`core::layout::MAX_RUNS`): in an enum of 70 variants, the payloads of
/// the last 6 are never traced, so a change of one of them (here `Last(u64)`
/// to `Last(i64)`, names unchanged) leaves the fingerprint as it was, and
/// the earlier build's value decodes as the new type: `Last(5)` stored by
/// the earlier build is returned as `Last(-3)`, every time. The same for
/// any result whose enums have more than ~64 variants in all (two enums of
/// 40). Severity: a silent wrong value, for wide enums only (an opcode,
/// error code or country enum with payloads). Suggested fix: trace every
/// variant's payload once (a run per variant, not per combination: the
/// other enums at variant 0), so the runs grow with the sum of the
/// variant counts, not their product; or, past the limit, fingerprint
/// with a marker that the layout was not fully traced and refuse to cache
/// (a warning) rather than to trust a partial trace.
#[test]
// Fixed since: 21cdbe3 (shape digest); the doc above describes the bug as found.
fn a_payload_change_in_a_wide_enum_never_reads_the_old_layout() {
    let name = unique("wide");
    let before = Memo::builder(name.clone()).backend(sealed_store()).build();
    assert_eq!(before.call(1u64, |_| OpBefore::Last(5)), OpBefore::Last(5));
    let after = Memo::builder(name).backend(sealed_store()).build();
    let got = after.call(1u64, |_| OpAfter::Last(5));
    println!("S24 wide enum: after the edit, f(1) = {got:?}");
    assert_eq!(got, OpAfter::Last(5));
}

/// Held: the layout fingerprint (ebe852b) tells apart result types that
/// bincode would decode from each other's bytes, with the same serde names:
/// fields `f32, f32, f64` then `f64, f32, f32`; variants reordered; a
/// variant's payload changed from `u32` to `i32` in a narrow enum;
/// `Option<u64>` then `u64`; `(u8, u8)` then `u16`. Each is recomputed,
/// never the old value decoded (the earlier build is a `Memo` of the same
/// name storing the old type).
#[test]
fn the_layout_fingerprint_tells_edited_result_types_apart() {
    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
    #[serde(rename = "P")]
    struct P1 {
        x: f32,
        y: f32,
        z: f64,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
    #[serde(rename = "P")]
    struct P2 {
        x: f64,
        y: f32,
        z: f32,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
    #[serde(rename = "E")]
    enum E1 {
        A(u32),
        B(u32),
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
    #[serde(rename = "E")]
    enum E2 {
        B(u32),
        A(u32),
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
    #[serde(rename = "E")]
    enum E3 {
        A(u32),
        B(i32),
    }
    fn check<Old, New>(old: Old, new: New)
    where
        Old: Serialize + serde::de::DeserializeOwned + Clone + std::fmt::Debug,
        New: Serialize + serde::de::DeserializeOwned + Clone + std::fmt::Debug + PartialEq,
    {
        let name = unique("layout");
        let before = Memo::builder(name.clone()).backend(sealed_store()).build();
        let o = old.clone();
        before.call(1u64, move |_| o);
        let after = Memo::builder(name).backend(sealed_store()).build();
        let n = new.clone();
        let got = after.call(1u64, move |_| n);
        println!("S24 layout: {old:?} then {got:?}");
        assert_eq!(got, new);
    }
    check(
        P1 {
            x: 1.0,
            y: 2.0,
            z: 3.0,
        },
        P2 {
            x: 9.0,
            y: 9.0,
            z: 9.0,
        },
    );
    check(E1::B(5), E2::A(7));
    check(E1::B(5), E3::B(-7));
    check(Some(5u64), 9u64);
    check((1u8, 2u8), 300u16);
}

mod edited_argument {
    use serde::Serialize;

    /// The argument type as this build declares it (an earlier build
    /// declared `w` first: see `RectBefore`).
    #[derive(Serialize, Clone, Copy)]
    pub struct Rect {
        pub h: u32,
        pub w: u32,
    }

    #[picocache::memoize(backend = crate::sealed_store())]
    pub fn weighted_perimeter(r: Rect) -> u32 {
        2 * r.w + r.h
    }
}

/// The earlier build's `edited_argument::Rect`.
#[derive(Serialize, Clone, Copy)]
struct RectBefore {
    w: u32,
    h: u32,
}

/// An argument type edited outside the function (its struct's fields
/// reordered) keeps the default `#[memoize]` name and every key's bytes:
/// the earlier build's `weighted_perimeter(Rect { w: 2, h: 3 })` = 7 is
/// served for this build's `Rect { h: 2, w: 3 }` (whose value is 8), every
/// time. The docs now say so ("Not seen: a change of an argument type
/// outside the function", 33c5ea1/ebe852b), but it is a silent wrong value
/// after an ordinary refactor. Severity: medium. Suggested fix: mix the
/// argument's shape into the key, recorded from its `Serialize` (struct and
/// field names, variant names, primitive kinds: a serializer that hashes
/// them as it goes, computed once per argument type for structs and per
/// variant for enums), or name the namespace after that shape.
#[test]
// Fixed since: 175ffa4 (the shape digest in the key); the doc above describes the bug as found.
fn an_edited_argument_type_never_meets_the_old_keys() {
    use edited_argument::{weighted_perimeter, weighted_perimeter_cache, Rect};
    let earlier = Memo::builder(weighted_perimeter_cache().namespace_name())
        .backend(sealed_store())
        .build();
    assert_eq!(
        earlier.call(RectBefore { w: 2, h: 3 }, |r| 2 * r.w + r.h),
        7
    );
    let got = weighted_perimeter(Rect { h: 2, w: 3 });
    println!("S24 edited argument: weighted_perimeter(Rect {{ h: 2, w: 3 }}) = {got}");
    assert_eq!(got, 8);
}

// ---------------------------------------------------------------------------
// A memoized call from a thread-local's destructor.
// ---------------------------------------------------------------------------

/// A thread-local whose destructor calls a memoized function (flushing
/// something at thread exit); it is set first, so it is destroyed after the
/// thread-locals picocache and its engine set up later (destruction runs in
/// reverse order).
struct CallsOnDrop(std::cell::RefCell<Option<String>>);

impl Drop for CallsOnDrop {
    fn drop(&mut self) {
        if let Some(target) = self.0.borrow().clone() {
            let m = memo_on(&target, "s24::tls", Duration::from_secs(2));
            let (a, b) = (m.call(2u64, |x| x + 1), m.call(1u64, |x| x + 1));
            println!("S24 TLS DROP {a} {b}");
        }
    }
}

thread_local! {
    static TLS_MEMO_TARGET: CallsOnDrop = const { CallsOnDrop(std::cell::RefCell::new(None)) };
}

impl CallsOnDrop {
    fn borrow_mut(&self) -> std::cell::RefMut<'_, Option<String>> {
        self.0.borrow_mut()
    }
}

/// A memoized function called from a thread-local's destructor as its
/// thread exits (a thread-local set before the thread's first memoized
/// call, so destroyed after picocache's own thread-locals) aborts the whole
/// process: the engine's read buffer (`SCRATCH`, `engine/src/read.rs`
/// `lookup_at`, `LocalKey::with`) is already destroyed, `with` panics
/// ("cannot access a Thread Local Storage value during or after
/// destruction"), and a panic in a thread-local destructor is "fatal
/// runtime error: thread local panicked on drop, aborting". Every time, on
/// the local engine (the child process here dies by SIGABRT). Severity:
/// medium-low (a flush at thread exit through a memoized function is
/// unusual; the outcome is an abort, not a wrong value). Suggested fix:
/// `try_with` for every thread-local on a call's path (the engine's
/// `SCRATCH`: fall back to a local buffer; `core::lease::LEASES_HELD`:
/// treat as none held and skip recording), so the call works or steps
/// aside.
#[test]
// Fixed since: 2a79001 (try_with); the doc above describes the bug as found.
fn a_memoized_call_from_a_thread_local_destructor_works() {
    let dir = temp_root().join(unique("tls").replace("::", "_"));
    let out = child_command("tls_drop", &[("S24_TARGET", &dir.display().to_string())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    println!(
        "S24 tls: status {:?}; {}; stderr: {}",
        out.status.code(),
        text.lines()
            .filter(|l| l.contains("S24"))
            .collect::<Vec<_>>()
            .join(" | "),
        err.lines()
            .filter(|l| l.contains("panicked") || l.contains("fatal") || l.contains("abort"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert!(out.status.success(), "{text}\n{err}");
    assert!(text.contains("S24 TLS DROP 3 2"), "{text}\n{err}");
}

// ---------------------------------------------------------------------------
// The layout fingerprint runs the result's Deserialize on made-up input.
// ---------------------------------------------------------------------------

/// Every argument `traced_lookup`'s function ran with.
static TRACED_LOOKUP_RAN: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

fn traced_lookup() -> &'static Memo {
    static M: LazyLock<Memo> = LazyLock::new(|| {
        Memo::builder(unique("traced-lookup"))
            .backend(sealed_store())
            .build()
    });
    &M
}

/// A result whose `Deserialize` derives a field through a memoized lookup
/// with a side effect (here: recording the argument).
#[derive(Debug, PartialEq)]
struct Enriched {
    id: u64,
    name: u64,
}

impl Serialize for Enriched {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.id.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Enriched {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = u64::deserialize(d)?;
        let name = traced_lookup().call(id, |id| {
            TRACED_LOOKUP_RAN.lock().unwrap().push(id);
            id + 1000
        });
        Ok(Enriched { id, name })
    }
}

/// To fingerprint the result type, `core::layout` drives its `Deserialize`
/// with made-up input (zeros, empty strings) once per process: a
/// `Deserialize` that derives a field through a memoized function (or
/// has any other side effect) then runs the user's function with an
/// argument the program never gave (here the lookup ran for id 0, never
/// asked for; the program only reads id 7), and stores its result. Every
/// process, at the first call. Severity: low (the user's code runs with
/// fabricated input: a wasted, possibly slow or side-effecting computation;
/// a `Deserialize` that hangs on it would hang the first call, one that
/// panics is caught but runs the panic hook, and aborts under `panic =
/// "abort"`). Suggested fix: trace without running user code where serde
/// lets (derive-generated impls ask for what they need before building
/// anything, but a hand-written one may do anything): at least document it
/// next to `#[memoize]`'s requirements ("the result's `Deserialize` must be
/// pure: it is run on made-up input"), and offer a way to give the
/// fingerprint (a `version`, or a `layout = "..."` option) instead.
#[test]
// Fixed since: 21cdbe3 (no user code on made-up input); the doc above describes the bug as found.
fn fingerprinting_never_runs_user_code_on_made_up_input() {
    let m = Memo::builder(unique("enriched"))
        .backend(sealed_store())
        .build();
    let a = m.call(7u64, |id| Enriched { id, name: 0 });
    let b = m.call(7u64, |id| Enriched { id, name: 0 });
    let ran = TRACED_LOOKUP_RAN.lock().unwrap().clone();
    println!("S24 made-up input: first {a:?}, then {b:?}; the lookup ran for {ran:?}");
    assert_eq!(b, Enriched { id: 7, name: 1007 });
    assert!(!ran.contains(&0), "the lookup ran for {ran:?}");
}

// ---------------------------------------------------------------------------
// A result whose Serialize skips fields (as JSON types do).
// ---------------------------------------------------------------------------

/// A result type written for JSON: `None` fields are left out of the
/// output (`skip_serializing_if`, ubiquitous on API types).
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct ApiReply {
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<u8>,
    code: u8,
    count: u8,
    body: Vec<u8>,
}

/// A result type whose `Serialize` leaves fields out
/// (`#[serde(skip_serializing_if = "Option::is_none")]`, common on types
/// written for JSON) is stored by bincode without them, and bincode, which
/// has no field names, decodes the shorter bytes shifted: the function
/// returns `ApiReply { note: None, code: 0, count: 5, body: [1, 7] }`, the
/// next call returns `ApiReply { note: None, code: 5, count: 2, body: [7] }`
/// (the bytes `[0, 5, 2, 1, 7]` read with `note` taking the first). Every
/// time, in one build (no edit: the layout fingerprint matches). For most
/// values the shifted read fails (a miss); for some it fits exactly and is
/// a wrong value. Severity: a silent wrong value from a common serde
/// attribute. Suggested fix: check, when a value is stored, that it decodes
/// back to the same bytes (`encode(decode(bytes)) == bytes`; once per type
/// and process would catch a type that skips fields only when it does,
/// so per store, or per store of the first N values), and refuse to store
/// (a warning) a type that fails; document that results must serialize
/// every field.
#[test]
// Fixed since: 21cdbe3 (values that do not round-trip are not stored); the doc above describes the bug as found.
fn a_result_that_skips_fields_is_never_read_back_shifted() {
    let dir = temp_root().join(unique("skip").replace("::", "_"));
    let m = memo_on(
        &dir.display().to_string(),
        &unique("skip"),
        Duration::from_secs(5),
    );
    let reply = ApiReply {
        note: None,
        code: 0,
        count: 5,
        body: vec![1, 7],
    };
    let r = reply.clone();
    assert_eq!(m.call(1u64, move |_| r), reply);
    let r = reply.clone();
    let again = m.call(1u64, move |_| r);
    println!("S24 skipped fields: stored {reply:?}, read back {again:?}");
    assert_eq!(again, reply);
}

/// Query parameters written for JSON: absent filters are left out.
#[derive(Serialize, Clone, Copy, Debug)]
struct Filters {
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u32>,
}

/// An argument struct whose optional fields are left out when `None`
/// (`skip_serializing_if`, the usual attribute on types written for JSON):
/// `Filters { min: Some(5), max: None }` and `Filters { min: None, max:
/// Some(5) }` both encode as `[1, 5]`, one key, so `count(max = 5)` is
/// served `count(min = 5)`'s result: 96 for 6 (the numbers 0..=100 at least
/// 5, then at most 5). Every time. The docs (33c5ea1) require arguments to
/// serialize unequal values to unequal output, with `#[serde(untagged)]` as
/// the example; this attribute is far more common. Severity: a silent
/// wrong value. Suggested fix: say so in the docs next to the untagged
/// example; better, encode keys with a serializer that refuses (an error:
/// the call runs uncached with a warning) a struct that serializes fewer
/// fields than it declared (`serialize_struct(name, len)` gives `len`:
/// count the `serialize_field` calls; `skip_field` is what serde calls for
/// a skipped one, so it can be told apart too).
#[test]
// Fixed since: 175ffa4 (the shape digest in the key); the doc above describes the bug as found.
fn arguments_that_skip_fields_never_share_a_result() {
    let dir = temp_root().join(unique("skipargs").replace("::", "_"));
    let m = memo_on(
        &dir.display().to_string(),
        &unique("skipargs"),
        Duration::from_secs(5),
    );
    let count = |f: Filters| {
        (0..=100u32)
            .filter(|x| f.min.is_none_or(|m| *x >= m) && f.max.is_none_or(|m| *x <= m))
            .count()
    };
    let min5 = Filters {
        min: Some(5),
        max: None,
    };
    let max5 = Filters {
        min: None,
        max: Some(5),
    };
    assert_eq!(m.call(min5, count), 96);
    let got = m.call(max5, count);
    println!("S24 skipped argument fields: count(max = 5) = {got} (want 6)");
    assert_eq!(got, 6);
}

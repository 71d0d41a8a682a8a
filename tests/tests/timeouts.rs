//! A server that accepts connections and never answers (a black hole, made
//! by `picocache_tests::fault::Proxy` in front of the real server) costs a
//! call at most the connect timeout plus the operation timeout, and then
//! the backend is skipped for its back-off window: calls fail at once, one
//! call per window tries the server again (with the same short timeouts),
//! and caching resumes by itself once the server answers again.
//!
//! Bounds under test (upper bounds only, with generous margins for a loaded
//! CI machine):
//! - first failing call: `connect_timeout + timeout` (0.5 s + 0.5 s here)
//!   plus [`MARGIN`];
//! - a call during the back-off window: [`FAST`].

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use picocache::redis::{RedisBackend, RedisOptions};
use picocache::sql::{SqlBackend, SqlOptions};
use picocache::{Backend, Error, Limits, Memo, Namespace};
use picocache_tests::fault::{host_port, Proxy};
use picocache_tests::{fresh, server_url, unique_prefix};

/// Statement and connect timeout set through the URL in these tests.
const TIMEOUT: Duration = Duration::from_millis(500);
/// Slack for scheduling on a busy machine, added to every timeout bound.
const MARGIN: Duration = Duration::from_millis(1500);
/// The bound of a call that the back-off skips (it never reaches the network).
const FAST: Duration = Duration::from_millis(200);
/// The first back-off window set in the options here.
const BACKOFF: Duration = Duration::from_millis(400);

/// `url` with `timeout` and `connect_timeout` of [`TIMEOUT`].
fn with_timeouts(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    let s = TIMEOUT.as_secs_f64();
    format!("{url}{sep}timeout={s}&connect_timeout={s}")
}

type BackingOff = Box<dyn Fn() -> bool + Send + Sync>;
type Op<'a> = (&'static str, Box<dyn Fn() -> picocache::Result<()> + 'a>);

/// Opens `url` (a server of `kind`) with a short back-off.
fn open(kind: &str, url: &str) -> picocache::Result<(Arc<dyn Backend>, BackingOff)> {
    if kind == "redis" {
        let b = RedisBackend::connect(
            url,
            RedisOptions {
                backoff: BACKOFF,
                backoff_max: BACKOFF * 2,
                ..RedisOptions::default()
            },
        )?;
        let c = b.clone();
        Ok((Arc::new(b), Box::new(move || c.is_backing_off())))
    } else {
        let b = SqlBackend::connect(
            url,
            SqlOptions {
                backoff: BACKOFF,
                backoff_max: BACKOFF * 2,
                ..SqlOptions::default()
            },
        )?;
        let c = b.clone();
        Ok((Arc::new(b), Box::new(move || c.is_backing_off())))
    }
}

fn expect_unavailable<T: std::fmt::Debug>(what: &str, r: picocache::Result<T>) {
    match r {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

/// Times `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn connect_to_black_hole(kind: &str) {
    let Some(url) = server_url(kind) else { return };
    let hole = Proxy::black_hole();
    // Default options: connect timeout 1 s, operation timeout 1 s.
    let url = hole.url_for(&url);
    let (r, took) = timed(|| picocache::open(&url).map(drop));
    expect_unavailable(&format!("{kind}: connecting to a black hole"), r);
    let bound = Duration::from_secs(2) + MARGIN;
    assert!(
        took < bound,
        "{kind}: connecting took {took:?} (bound {bound:?})"
    );
    assert!(
        hole.accepted() >= 1,
        "{kind}: the black hole saw the connection"
    );
    eprintln!("{kind}: connecting to a black hole failed after {took:?}");
}

#[test]
fn connecting_to_a_black_hole_fails_promptly() {
    for kind in ["redis", "postgresql", "mysql"] {
        connect_to_black_hole(kind);
    }
}

fn stops_answering(kind: &str) {
    let Some(url) = server_url(kind) else { return };
    let proxy = Proxy::to(&host_port(&url));
    let (b, backing_off) = open(kind, &with_timeouts(&proxy.url_for(&url))).unwrap();
    let ns = fresh(&*b, &unique_prefix("hole"), Limits::default());
    ns.put(b"k", b"v", None).unwrap();
    assert_eq!(ns.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));

    proxy.black_out();
    let bound = TIMEOUT * 2 + MARGIN;
    let (r, first) = timed(|| ns.get(b"k"));
    expect_unavailable(&format!("{kind}: first get into the black hole"), r);
    assert!(
        first < bound,
        "{kind}: first call took {first:?} (bound {bound:?})"
    );
    assert!(
        backing_off(),
        "{kind}: the backend is skipped after a timeout"
    );

    // During the window every operation fails at once.
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let ops: [Op<'_>; 5] = [
            ("get", Box::new(|| ns.get(b"k").map(drop))),
            ("put", Box::new(|| ns.put(b"k2", b"v2", None))),
            ("stats", Box::new(|| ns.stats().map(drop))),
            (
                "lease",
                Box::new(|| ns.lease(b"k", Duration::ZERO).map(drop)),
            ),
            (
                "namespace",
                Box::new(|| b.namespace("other", Limits::default()).map(drop)),
            ),
        ];
        for (what, op) in ops {
            let (r, took) = timed(op);
            expect_unavailable(&format!("{kind}: {what} during the back-off"), r);
            assert!(
                took < FAST,
                "{kind}: {what} during the back-off took {took:?}"
            );
            slowest = slowest.max(took);
        }
    }

    // After the window one call tries again, with the same short timeout;
    // calls meanwhile still fail at once.
    thread::sleep(BACKOFF * 2 + Duration::from_millis(50));
    let probe = {
        let ns: Arc<dyn Namespace> = ns.clone();
        thread::spawn(move || timed(|| ns.get(b"k")))
    };
    thread::sleep(Duration::from_millis(100));
    let (r, during_probe) = timed(|| ns.get(b"k"));
    let (probed, probe_took) = probe.join().unwrap();
    expect_unavailable(&format!("{kind}: the probe"), probed);
    assert!(probe_took < bound, "{kind}: the probe took {probe_took:?}");
    // The probe may have ended before this call started; then it is skipped
    // by the next window, fast either way.
    expect_unavailable(&format!("{kind}: a call during the probe"), r);
    assert!(
        during_probe < FAST,
        "{kind}: a call during the probe took {during_probe:?}"
    );

    // Back on its feet: the same client caches again within a window or two.
    proxy.restore();
    let t = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        match ns.put(b"after", b"3", None) {
            Ok(()) => break,
            Err(Error::Unavailable { .. }) if t.elapsed() < Duration::from_secs(15) => {
                thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("{kind} did not come back: {e}"),
        }
    }
    assert_eq!(ns.get(b"after").unwrap().as_deref(), Some(&b"3"[..]));
    assert!(!backing_off());
    eprintln!(
        "{kind}: black hole: first call {first:?}, slowest skipped call {slowest:?}, \
         probe {probe_took:?}, call during the probe {during_probe:?}; \
         back after {:?} ({tries} tries)",
        t.elapsed()
    );
}

#[test]
fn a_server_that_stops_answering_is_skipped_then_retried() {
    for kind in ["redis", "postgresql", "mysql"] {
        stops_answering(kind);
    }
}

fn memo_stays_prompt(kind: &str) {
    let Some(url) = server_url(kind) else { return };
    let proxy = Proxy::to(&host_port(&url));
    let (b, _) = open(kind, &with_timeouts(&proxy.url_for(&url))).unwrap();
    let memo = Memo::builder(unique_prefix("prompt"))
        .maxsize(Some(1000))
        .backend(b)
        .build();
    let square = |n: u64| memo.call(n, |n| n * n);
    assert_eq!(square(3), 9);
    assert_eq!(square(3), 9);
    assert_eq!(memo.cache_info().hits, 1, "{kind}: cached before the fault");

    proxy.black_out();
    let mut longest = Duration::ZERO;
    let mut rest = Duration::ZERO;
    for n in 0..50u64 {
        let (v, took) = timed(|| square(n));
        assert_eq!(v, n * n, "{kind}: the function's own value");
        if n == 0 {
            longest = took;
        } else {
            rest = rest.max(took);
        }
    }
    // A memoized call makes several store calls; the first that times out
    // starts the back-off, which the others then skip.
    let bound = TIMEOUT * 2 + MARGIN;
    assert!(
        longest < bound,
        "{kind}: first memoized call took {longest:?}"
    );
    assert!(
        rest < FAST,
        "{kind}: a memoized call during the back-off took {rest:?}"
    );
    eprintln!("{kind}: memoized calls into a black hole: first {longest:?}, then at most {rest:?}");
}

#[test]
fn memoized_calls_stay_prompt_when_the_server_hangs() {
    for kind in ["redis", "postgresql", "mysql"] {
        memo_stays_prompt(kind);
    }
}

fn slow_statement(kind: &str) {
    let Some(url) = server_url(kind) else { return };
    let table = format!("slow_{}", std::process::id());
    let b = SqlBackend::connect(
        &with_timeouts(&url),
        SqlOptions {
            table: table.clone(),
            ..SqlOptions::default()
        },
    )
    .unwrap();
    let name = unique_prefix("slow");
    let ns = fresh(&b, &name, Limits::default());
    ns.put(b"k", b"v", None).unwrap();
    // Another client holds the namespace's row lock for longer than the
    // operation timeout: the server is slow for this call, not gone.
    let lock_sql = format!("SELECT id FROM {table}_ns WHERE name = ? FOR UPDATE");
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let (release_tx, release) = std::sync::mpsc::channel::<()>();
    let holder = {
        let (url, name) = (url.clone(), name.clone());
        thread::spawn(move || {
            if url.starts_with("postgres") {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                let mut tx = c.transaction().unwrap();
                tx.query(&lock_sql.replace('?', "$1"), &[&name]).unwrap();
                locked_tx.send(()).unwrap();
                let _ = release.recv();
                tx.commit().unwrap();
            } else {
                use mysql::prelude::Queryable;
                let mut c = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
                let mut tx = c.start_transaction(mysql::TxOpts::default()).unwrap();
                let _: Vec<i64> = tx.exec(&lock_sql, (name.as_str(),)).unwrap();
                locked_tx.send(()).unwrap();
                let _ = release.recv();
                tx.commit().unwrap();
            }
        })
    };
    locked.recv().unwrap();
    let (r, took) = timed(|| ns.put(b"k", b"w", None));
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    match &r {
        Err(Error::Unavailable { .. }) => {}
        other => {
            panic!("{kind}: a lock wait past the timeout: expected Unavailable, got {other:?}")
        }
    }
    let bound = TIMEOUT + MARGIN;
    assert!(took < bound, "{kind}: the waiting put took {took:?}");
    // The operation's time is spent: as for a server that does not answer,
    // the backend is skipped for its back-off window (README, `timeout`:
    // once one operation times out the others are skipped), then tried again.
    assert!(
        b.is_backing_off(),
        "{kind}: a statement cancelled for time skips the server for a while"
    );
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match ns.put(b"k", b"x", None) {
            Ok(_) => break,
            Err(Error::Unavailable { .. }) if Instant::now() < until => {
                thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("{kind}: after the back-off: {e}"),
        }
    }
    assert_eq!(ns.get(b"k").unwrap().as_deref(), Some(&b"x"[..]));
    eprintln!("{kind}: a put behind another client's lock failed after {took:?}: {r:?}");
}

/// A statement the server cancels for time (PostgreSQL's statement or lock
/// timeout, SQLSTATE 57014 / 55P03; MySQL's lock wait timeout 1205) ends
/// its operation within the timeout, is not tried again, and skips the
/// server for the back-off window like a server that does not answer. (It
/// was an error of that statement before: the server was not skipped, and a
/// call with the table locked spent a timeout on each of its operations.)
#[test]
fn a_statement_cancelled_for_time_skips_the_server_for_a_while() {
    slow_statement("postgresql");
    slow_statement("mysql");
}

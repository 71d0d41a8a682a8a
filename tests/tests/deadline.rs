//! One deadline per operation (issue 13): a server whose every answer
//! arrives just under the timeout (`fault::Proxy::slow_down` at 0.8 x the
//! timeout) must not cost an operation one timeout per statement.
//!
//! Each backend's `timeout` bounds a whole operation (a look-up, a store, a
//! lease taken or released, a removal, `clear`, `stats`), however many
//! statements or commands it sends; opening the backend (connecting, the
//! schema) takes at most `connect_timeout + timeout`; a memoized call that
//! misses makes at most five operations (look-up, lease, the look-up again
//! after the lease, store, release),
//! and its first call one more (opening the namespace). Each measurement
//! starts on a warm connection with the backend not backing off: the link
//! is fast while a probe runs, then slowed down.
//!
//! Bounds, not speeds: [`MARGIN`] covers scheduling on a loaded machine.

use std::io::{Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use picocache::redis::{RedisBackend, RedisOptions};
use picocache::sql::{SqlBackend, SqlOptions};
use picocache::{Backend, Error, Limits, Memo, Namespace};
use picocache_tests::fault::{host_port, Proxy};
use picocache_tests::{fresh, server_url, unique_prefix, value_of};

const TIMEOUT: Duration = Duration::from_secs(2);
/// Every answer this late: under the timeout, one statement at a time.
const DELAY: Duration = Duration::from_millis(1600);
const MARGIN: Duration = Duration::from_millis(1500);
const BACKOFF: Duration = Duration::from_millis(300);

fn redis_options() -> RedisOptions {
    RedisOptions {
        timeout: TIMEOUT,
        connect_timeout: TIMEOUT,
        backoff: BACKOFF,
        backoff_max: BACKOFF,
        ..RedisOptions::default()
    }
}

fn sql_options() -> SqlOptions {
    SqlOptions {
        table: format!("deadline_{}", std::process::id()),
        timeout: TIMEOUT,
        connect_timeout: TIMEOUT,
        backoff: BACKOFF,
        backoff_max: BACKOFF,
        ..SqlOptions::default()
    }
}

fn open(kind: &str, url: &str) -> Result<Arc<dyn Backend>, Error> {
    if kind == "redis" {
        Ok(Arc::new(RedisBackend::connect(url, redis_options())?))
    } else {
        Ok(Arc::new(SqlBackend::connect(url, sql_options())?))
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

/// Forgets the Redis server's script cache (as a restart would), so that
/// the next script of each kind is answered `NOSCRIPT` first.
fn redis_script_flush(url: &str) {
    let mut s = std::net::TcpStream::connect(host_port(url)).expect("connect to Redis");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"*2\r\n$6\r\nSCRIPT\r\n$5\r\nFLUSH\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("SCRIPT FLUSH answered");
    assert!(
        buf[..n].starts_with(b"+OK"),
        "SCRIPT FLUSH: {:?}",
        &buf[..n]
    );
}

struct Run {
    kind: &'static str,
    proxy: Proxy,
    ns: Arc<dyn Namespace>,
    longest: Duration,
}

impl Run {
    /// A fast link until a probe through it succeeds (the breaker closes, a
    /// connection is idle in the pool), then answers [`DELAY`] late.
    fn slow_from_now(&self) {
        self.warm();
        self.proxy.slow_down(DELAY);
    }

    /// A fast link, and a probe through it succeeded.
    fn warm(&self) {
        self.proxy.slow_down(Duration::ZERO);
        let t = Instant::now();
        loop {
            thread::sleep(BACKOFF + Duration::from_millis(50));
            match self.ns.get(b"probe") {
                Ok(_) => break,
                Err(e) => assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "{}: the fast link never worked again: {e}",
                    self.kind
                ),
            }
        }
    }

    /// Runs `op` on a slow link: it must end within `bound` (its result,
    /// a value or a timeout, is the caller's to check).
    fn bounded<T>(&mut self, what: &str, bound: Duration, op: impl FnOnce() -> T) -> T {
        self.slow_from_now();
        let (v, took) = timed(op);
        eprintln!("{}: {what}: {took:?} (bound {bound:?})", self.kind);
        assert!(
            took < bound,
            "{}: {what} took {took:?}, more than {bound:?} with answers {DELAY:?} late \
             and a {TIMEOUT:?} timeout",
            self.kind
        );
        self.longest = self.longest.max(took);
        v
    }
}

fn ok_or_timeout<T: std::fmt::Debug>(kind: &str, what: &str, r: Result<T, Error>) {
    match r {
        Ok(_) | Err(Error::Unavailable { .. }) => {}
        Err(e) => panic!("{kind}: {what}: {e}"),
    }
}

fn answers_just_under_the_timeout(kind: &'static str) {
    let Some(url) = server_url(kind) else { return };
    let proxy = Proxy::to(&host_port(&url));
    let purl = proxy.url_for(&url);

    // Opening through the slow link: connecting and the schema together
    // end within connect_timeout + timeout, opened or not.
    proxy.slow_down(DELAY);
    let (r, took) = timed(|| open(kind, &purl));
    eprintln!("{kind}: opening the backend: {took:?} ({})", r.is_ok());
    assert!(
        took < TIMEOUT * 2 + MARGIN,
        "{kind}: opening took {took:?} with answers {DELAY:?} late"
    );
    drop(r);
    proxy.slow_down(Duration::ZERO);
    if kind == "redis" {
        redis_script_flush(&url);
    }

    let b = open(kind, &purl).unwrap_or_else(|e| panic!("{kind}: open on a fast link: {e}"));
    let ns = fresh(&*b, &unique_prefix("deadline"), Limits::default());
    for i in 0..3u64 {
        ns.put(format!("k{i}").as_bytes(), &value_of(i), None)
            .unwrap();
    }
    let mut run = Run {
        kind,
        proxy,
        ns: ns.clone(),
        longest: Duration::ZERO,
    };
    let op = TIMEOUT + MARGIN;

    // A memoized call: a first one (opening the namespace, then a miss),
    // and a miss of a function whose namespace was opened on a fast link.
    let memo = Memo::builder(unique_prefix("deadlinememo"))
        .backend(b.clone())
        .build();
    let v = run.bounded("a first memoized call", TIMEOUT * 5 + MARGIN, || {
        memo.call(3u64, |n| n * n)
    });
    assert_eq!(v, 9, "{kind}: the function's own value");
    let warm = Memo::builder(unique_prefix("deadlinewarm"))
        .backend(b.clone())
        .build();
    run.warm();
    assert_eq!(warm.call(0u64, |n| n + 1), 1, "{kind}: fast");
    warm.stats()
        .unwrap_or_else(|e| panic!("{kind}: the namespace, on a fast link: {e}"));
    let v = run.bounded("a memoized miss", TIMEOUT * 5 + MARGIN, || {
        warm.call(4u64, |n| n * n)
    });
    assert_eq!(v, 16, "{kind}: the function's own value");

    // Each operation alone.
    let r = run.bounded("get", op, || ns.get(b"k0"));
    match r {
        Ok(Some(v)) => assert_eq!(v, value_of(0), "{kind}: k0"),
        Ok(None) => panic!("{kind}: k0 read as missing"),
        Err(Error::Unavailable { .. }) => {}
        Err(e) => panic!("{kind}: get: {e}"),
    }
    let r = run.bounded("get_many", op, || ns.get_many(&[b"k1", b"k2", b"nope"]));
    ok_or_timeout(kind, "get_many", r);
    let r = run.bounded("put", op, || ns.put(b"k5", &value_of(5), None));
    ok_or_timeout(kind, "put", r);
    let r = run.bounded("put_many", op, || {
        ns.put_many(&[(b"k6", &value_of(6)), (b"k7", &value_of(7))], None)
    });
    ok_or_timeout(kind, "put_many", r);
    let lease = run.bounded("taking a lease", op, || ns.lease(b"k8", Duration::ZERO));
    if let Ok(Some(l)) = lease {
        run.bounded("releasing a lease", op, || drop(l));
    }
    let r = run.bounded("stats", op, || ns.stats());
    ok_or_timeout(kind, "stats", r);
    let r = run.bounded("remove", op, || ns.remove(b"k1"));
    ok_or_timeout(kind, "remove", r);
    let r = run.bounded("clear", op, || ns.clear());
    ok_or_timeout(kind, "clear", r);

    // Still right afterwards, on a fast link.
    run.proxy.slow_down(Duration::ZERO);
    thread::sleep(DELAY + BACKOFF * 2);
    let t = Instant::now();
    loop {
        match ns.put(b"after", b"value", None) {
            Ok(()) => break,
            Err(Error::Unavailable { .. }) if t.elapsed() < Duration::from_secs(20) => {
                thread::sleep(BACKOFF)
            }
            Err(e) => panic!("{kind}: a put after the slow link: {e}"),
        }
    }
    assert_eq!(ns.get(b"after").unwrap().as_deref(), Some(&b"value"[..]));
    eprintln!(
        "{kind}: answers {DELAY:?} late, timeout {TIMEOUT:?}: longest operation or call {:?}",
        run.longest
    );
}

// One test per server, so that the harness runs them side by side.
#[test]
fn redis_operation_ends_within_its_timeout_with_answers_just_under_it() {
    answers_just_under_the_timeout("redis");
}

#[test]
fn postgresql_operation_ends_within_its_timeout_with_answers_just_under_it() {
    answers_just_under_the_timeout("postgresql");
}

#[test]
fn mariadb_operation_ends_within_its_timeout_with_answers_just_under_it() {
    answers_just_under_the_timeout("mysql");
}

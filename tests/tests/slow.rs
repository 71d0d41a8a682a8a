//! A slow endpoint: `picocache_tests::fault::Proxy::slow_down` in front of
//! the real server delays every answer by a set time (they all arrive, in
//! order, on the same connections), besides the black hole of
//! `timeouts.rs`.
//!
//! - Answers within the timeout (100 ms late, 4 s timeout, connecting
//!   through the slow link too): the cache works as usual, values are
//!   stored and hit, the backend is never skipped. (The delays of one call's
//!   statements add up: the first call, which connects and creates the
//!   schema, makes some thirty round trips.)
//! - Answers after the timeout (800 ms late, 500 ms timeout): the call
//!   fails with `Error::Unavailable` within the timeout bound and the
//!   backend backs off; a memoized call returns the function's own value.
//!   The late answers then arrive on the connections that gave up on them:
//!   none of them may be read as the answer to a later call (every value
//!   read afterwards is the right one), and caching resumes by itself.
//!
//! Bounds, not speeds: a call takes less than twice its timeout plus
//! [`MARGIN`] (scheduling on a loaded machine).

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use picocache::redis::{RedisBackend, RedisOptions};
use picocache::sql::{SqlBackend, SqlOptions};
use picocache::{Backend, Error, Limits, Memo};
use picocache_tests::fault::{host_port, Proxy};
use picocache_tests::{fresh, server_url, unique_prefix, value_of};

const MARGIN: Duration = Duration::from_millis(1500);
/// The delay of answers that still come within [`PATIENT`].
const SLIGHTLY: Duration = Duration::from_millis(100);
/// One operation's round trips share it (issue 13): opening a namespace on
/// a new MariaDB connection makes some fifteen (1.5 s at 100 ms each), so it
/// leaves room for a loaded machine.
const PATIENT: Duration = Duration::from_secs(4);
/// The delay of answers that come after [`IMPATIENT`].
const LATE: Duration = Duration::from_millis(800);
const IMPATIENT: Duration = Duration::from_millis(500);
const BACKOFF: Duration = Duration::from_millis(400);

type BackingOff = Box<dyn Fn() -> bool + Send + Sync>;

/// Opens `url` (a server of `kind`) with `timeout` for connecting and for
/// each statement, and a short back-off.
fn open(kind: &str, url: &str, timeout: Duration) -> (Arc<dyn Backend>, BackingOff) {
    if kind == "redis" {
        let b = RedisBackend::connect(
            url,
            RedisOptions {
                timeout,
                connect_timeout: timeout,
                backoff: BACKOFF,
                backoff_max: BACKOFF * 2,
                ..RedisOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{kind}: connect through the slow proxy: {e}"));
        let c = b.clone();
        (Arc::new(b), Box::new(move || c.is_backing_off()))
    } else {
        let b = SqlBackend::connect(
            url,
            SqlOptions {
                table: format!("slow_{}", std::process::id()),
                timeout,
                connect_timeout: timeout,
                backoff: BACKOFF,
                backoff_max: BACKOFF * 2,
                ..SqlOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{kind}: connect through the slow proxy: {e}"));
        let c = b.clone();
        (Arc::new(b), Box::new(move || c.is_backing_off()))
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn slow_within_the_timeout(kind: &str) {
    let Some(url) = server_url(kind) else { return };
    let proxy = Proxy::to(&host_port(&url));
    proxy.slow_down(SLIGHTLY);
    let (b, backing_off) = open(kind, &proxy.url_for(&url), PATIENT);
    let memo = Memo::builder(unique_prefix("slowish"))
        .backend(b)
        .strict(true)
        .build();
    // The first call connects, creates the schema and the namespace: some
    // thirty statements, each answered well within its timeout, so 100 ms
    // each add up; bounded (no hang), not a speed.
    let (v, first) = timed(|| memo.call(0u64, |n| n * n));
    assert_eq!(v, 0);
    assert!(
        first < Duration::from_secs(15),
        "{kind}: the first call took {first:?}"
    );
    let bound = PATIENT * 2 + MARGIN;
    let mut longest = Duration::ZERO;
    for round in 0..2 {
        for n in 1..5u64 {
            let (v, took) = timed(|| memo.call(n, |n| n * n + round));
            assert_eq!(v, n * n, "{kind}: cached in round 0, hit in round 1");
            longest = longest.max(took);
        }
    }
    let info = memo.cache_info();
    assert_eq!(
        (info.misses, info.hits),
        (5, 4),
        "{kind}: cached through a slow link"
    );
    assert!(
        !backing_off(),
        "{kind}: a slow server within the timeout is not skipped"
    );
    eprintln!(
        "{kind}: answers {SLIGHTLY:?} late: first call (connecting) {first:?}, \
         longest call after it {longest:?}"
    );
    assert!(longest < bound, "{kind}: a call took {longest:?}");
}

// One test per server, so that the harness runs them side by side.
#[test]
fn redis_slower_than_usual_but_within_the_timeout_still_caches() {
    slow_within_the_timeout("redis");
}

#[test]
fn postgresql_slower_than_usual_but_within_the_timeout_still_caches() {
    slow_within_the_timeout("postgresql");
}

#[test]
fn mariadb_slower_than_usual_but_within_the_timeout_still_caches() {
    slow_within_the_timeout("mysql");
}

fn late_answers(kind: &str) {
    let Some(url) = server_url(kind) else { return };
    let proxy = Proxy::to(&host_port(&url));
    let (b, backing_off) = open(kind, &proxy.url_for(&url), IMPATIENT);
    let ns = fresh(&*b, &unique_prefix("late"), Limits::default());
    let keys: Vec<Vec<u8>> = (0..10).map(|i| format!("k{i}").into_bytes()).collect();
    for (i, k) in keys.iter().enumerate() {
        ns.put(k, &value_of(i as u64), None).unwrap();
    }
    let memo_name = unique_prefix("latememo");
    let memo = Memo::builder(memo_name.clone()).backend(b.clone()).build();
    assert_eq!(memo.call(7u64, |n| n + 1), 8);

    proxy.slow_down(LATE);
    let bound = IMPATIENT * 2 + MARGIN;
    let (r, first) = timed(|| ns.get(&keys[0]));
    match r {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("{kind}: an answer {LATE:?} late for a {IMPATIENT:?} timeout: {other:?}"),
    }
    assert!(first < bound, "{kind}: the late get took {first:?}");
    assert!(backing_off(), "{kind}: skipped after a timeout");
    let (v, memo_took) = timed(|| memo.call(8u64, |n| n + 1));
    assert_eq!(v, 9, "{kind}: the function's own value");
    assert!(
        memo_took < bound,
        "{kind}: a memoized call took {memo_took:?}"
    );

    // Fast again. The late answers arrive meanwhile on the connections that
    // timed out; the back-off window ends.
    proxy.slow_down(Duration::ZERO);
    thread::sleep(LATE + BACKOFF * 2 + Duration::from_millis(200));
    let t = Instant::now();
    let (mut good, mut tries) = (0, 0);
    while good < keys.len() {
        tries += 1;
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{kind}: caching did not resume ({good} right reads in a row)"
        );
        let i = good;
        match ns.get(&keys[i]) {
            Ok(Some(v)) => {
                assert_eq!(v, value_of(i as u64), "{kind}: k{i} read another answer");
                good += 1;
            }
            Ok(None) => panic!("{kind}: k{i} read as missing (another statement's answer?)"),
            Err(Error::Unavailable { .. }) => thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("{kind}: k{i}: {e}"),
        }
    }
    // Writes line up with their answers too.
    for (i, k) in keys.iter().enumerate() {
        ns.put(k, &value_of(100 + i as u64), None).unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            ns.get(k).unwrap(),
            Some(value_of(100 + i as u64)),
            "{kind}: k{i}"
        );
    }
    let strict = Memo::builder(memo_name)
        .backend(b.clone())
        .strict(true)
        .build();
    match strict.try_call(7u64, |_| 0u64) {
        Ok(v) => assert_eq!(v, 8, "{kind}: the entry stored before is a hit"),
        Err(e) => panic!("{kind}: the entry stored before: {e}"),
    }
    assert!(!backing_off());
    eprintln!(
        "{kind}: answers {LATE:?} late, timeout {IMPATIENT:?}: the get failed after {first:?}, \
         a memoized call took {memo_took:?}; every read right after ({tries} tries)"
    );
}

#[test]
fn redis_late_answers_time_out_and_never_answer_a_later_call() {
    late_answers("redis");
}

#[test]
fn postgresql_late_answers_time_out_and_never_answer_a_later_call() {
    late_answers("postgresql");
}

#[test]
fn mariadb_late_answers_time_out_and_never_answer_a_later_call() {
    late_answers("mysql");
}

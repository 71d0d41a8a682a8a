//! Servers with tight limits, each started for its test by
//! `tests/servers/instance.sh` (issue 13):
//!
//! - PostgreSQL with `max_connections=20`: [`CLIENTS`] backends (as many
//!   processes would have, each with its own pool of [`POOL`]) run
//!   [`THREADS`] cold recursive `fib(1000)` each, all at once, through
//!   `Memo` (strict: any store failure, a refused connection or a timeout,
//!   fails the test). A watcher on its own superuser connection samples
//!   `pg_stat_activity` every few ms. Bounds: the test user's connections
//!   never exceed `CLIENTS * POOL`; no call waits in the cache (lookup,
//!   lease, store, release: the gaps between marks around each call and
//!   body) longer than [`TIMEOUT`] twice plus [`MARGIN`].
//! - MariaDB with `max_allowed_packet=1M`: a 2 MiB value is not sent (the
//!   proxy in front counts the bytes), fails with `Error::TooLarge`, and the
//!   backend is not counted as down; a memoized 2 MiB result is returned;
//!   small values are stored and hit at once; 900 KiB still fits.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use picocache::sql::{SqlBackend, SqlOptions};
use picocache::{Backend, Error, Limits, Memo};
use picocache_tests::fault::{host_port, Proxy};
use picocache_tests::instance::Instance;
use picocache_tests::{fresh, unique_prefix};

const CLIENTS: usize = 4;
const THREADS: usize = 3;
const POOL: u32 = 2;
const DEPTH: u64 = 1000;
/// The statement and connect timeout of the backends here: above the
/// default (1 s), since twelve recursions of a debug build on a loaded
/// 2-core machine starve each other (a strict `Memo` fails on a timeout,
/// which a statement or a wait for a pooled connection then reached at 1 s;
/// the longest wait measured under a load of 9 was 2.3 s).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Slack for scheduling on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);

thread_local! {
    /// The last mark of this thread and the longest gap between two.
    static MARKS: Cell<(Option<Instant>, Duration)> = const { Cell::new((None, Duration::ZERO)) };
}

/// Ends the current gap of this thread (see the module docs).
fn mark() {
    MARKS.with(|m| {
        let (last, longest) = m.get();
        let now = Instant::now();
        let gap = last.map_or(Duration::ZERO, |l| now - l);
        m.set((Some(now), longest.max(gap)));
    });
}

/// fib(n) (wrapping), memoized through `memo`, marked around each call.
fn fib(memo: &Memo, n: u64) -> u64 {
    mark();
    let v = memo.call(n, |n| {
        mark();
        let v = if n < 2 {
            n
        } else {
            fib(memo, n - 1).wrapping_add(fib(memo, n - 2))
        };
        mark();
        v
    });
    mark();
    v
}

fn plain_fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.wrapping_add(b));
    }
    a
}

#[test]
fn postgresql_max_connections_20_under_cold_recursion() {
    let Some(pg) = Instance::start("postgres", &["-c", "max_connections=20"]) else {
        return;
    };
    let options = SqlOptions {
        table: format!("lim_{}", std::process::id()),
        pool_size: POOL,
        timeout: TIMEOUT,
        connect_timeout: TIMEOUT,
        ..SqlOptions::default()
    };
    let backends: Vec<Arc<dyn Backend>> = (0..CLIENTS)
        .map(|_| Arc::new(SqlBackend::connect(pg.url(), options.clone()).unwrap()) as _)
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let (most, samples) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let watcher = {
        let (done, most, samples) = (done.clone(), most.clone(), samples.clone());
        let su = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            pg.port()
        );
        thread::spawn(move || {
            let mut c = postgres::Client::connect(&su, postgres::NoTls).unwrap();
            loop {
                let stop = done.load(Ordering::SeqCst);
                let n: i64 = c
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE backend_type = 'client backend' AND usename = 'picocache'",
                        &[],
                    )
                    .unwrap()
                    .get(0);
                most.fetch_max(n as usize, Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
                if stop {
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let start = Arc::new(std::sync::Barrier::new(CLIENTS * THREADS));
    let workers: Vec<_> = (0..CLIENTS * THREADS)
        .map(|i| {
            let (backend, start) = (backends[i % CLIENTS].clone(), start.clone());
            thread::Builder::new()
                .stack_size(256 << 20)
                .spawn(move || {
                    let memo = Memo::builder(unique_prefix("fib"))
                        .backend(backend)
                        .strict(true)
                        .build();
                    start.wait();
                    let t = Instant::now();
                    assert_eq!(fib(&memo, DEPTH), plain_fib(DEPTH));
                    let took = t.elapsed();
                    assert_eq!(fib(&memo, DEPTH), plain_fib(DEPTH));
                    let info = memo.cache_info();
                    assert_eq!((info.misses, info.hits), (DEPTH + 1, DEPTH - 1));
                    (MARKS.with(|m| m.get().1), took)
                })
                .unwrap()
        })
        .collect();
    let results: Vec<(Duration, Duration)> = workers
        .into_iter()
        .map(|w| w.join().expect("a recursing thread failed"))
        .collect();
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let (most, samples) = (most.load(Ordering::SeqCst), samples.load(Ordering::SeqCst));
    let gap = results.iter().map(|r| r.0).max().unwrap();
    let slowest = results.iter().map(|r| r.1).max().unwrap();
    eprintln!(
        "postgresql max_connections=20: {CLIENTS} clients x {THREADS} threads x cold \
         fib({DEPTH}), pool {POOL} each: longest wait in the cache {gap:?}, at most {most} \
         connections of the test user ({samples} samples), slowest recursion {slowest:?}"
    );
    assert!(samples > 10 && most >= 1, "the watcher saw the clients");
    assert!(
        most <= CLIENTS * POOL as usize,
        "{most} connections for {CLIENTS} pools of {POOL}"
    );
    let bound = TIMEOUT * 2 + MARGIN;
    assert!(gap < bound, "a call waited {gap:?} in the cache");
}

#[test]
fn mariadb_small_max_allowed_packet_is_too_large_not_down() {
    let Some(my) = Instance::start("mysql", &["--max-allowed-packet=1M"]) else {
        return;
    };
    let proxy = Proxy::to(&host_port(my.url()));
    let options = SqlOptions {
        timeout: TIMEOUT,
        connect_timeout: TIMEOUT,
        ..SqlOptions::default() // max_value_size: 8 MiB, over the packet
    };
    let b = SqlBackend::connect(&proxy.url_for(my.url()), options).unwrap();
    let ns = fresh(&b, &unique_prefix("packet"), Limits::default());
    ns.put(b"small", b"v", None).unwrap();
    let before = proxy.upstream_bytes();
    let t = Instant::now();
    match ns.put(b"big", &vec![7u8; 2 << 20], None) {
        Err(e @ Error::TooLarge { .. }) => eprintln!("mariadb, 1 MiB packet: {e}"),
        other => panic!("a 2 MiB put over a 1 MiB packet: expected TooLarge, got {other:?}"),
    }
    let took = t.elapsed();
    let sent = proxy.upstream_bytes() - before;
    assert!(sent < 10_000, "{sent} bytes went to the server");
    assert!(!b.is_backing_off(), "not a reason to skip the server");
    assert_eq!(ns.get(b"small").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(ns.get(b"big").unwrap(), None);
    let fits = vec![5u8; 900 << 10];
    ns.put(b"fits", &fits, None).unwrap();
    assert_eq!(ns.get(b"fits").unwrap().map(|v| v.len()), Some(fits.len()));

    let backend: Arc<dyn Backend> = Arc::new(b.clone());
    let memo = Memo::builder(unique_prefix("packetmemo"))
        .backend(backend)
        .build();
    let runs = AtomicUsize::new(0);
    let make = |kib: usize| {
        memo.call(kib, |kib| {
            runs.fetch_add(1, Ordering::SeqCst);
            vec![kib as u8; kib << 10]
        })
    };
    for _ in 0..3 {
        assert_eq!(make(2048), vec![0u8; 2 << 20], "the result is returned");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3, "computed each time");
    assert!(!b.is_backing_off());
    for kib in 1..=10 {
        assert_eq!(make(kib).len(), kib << 10);
        assert_eq!(make(kib).len(), kib << 10);
    }
    let info = memo.cache_info();
    assert_eq!((info.hits, info.currsize), (10, 10), "small results cached");
    assert_eq!(runs.load(Ordering::SeqCst), 13);
    eprintln!("mariadb, 1 MiB packet: the refused put took {took:?}; {sent} bytes sent for it");
    assert!(took < TIMEOUT * 2 + MARGIN);
}

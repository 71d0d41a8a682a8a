//! A backend object opens at most `pool_size` connections, whatever its
//! callers do: a cold recursive memoized function of depth 300 holds 300
//! leases at its deepest, and leases are rows, not connections. Several
//! threads recurse at once through one backend, and a watcher on its own
//! connection samples the server's own view of the backend's connections
//! (PostgreSQL: `pg_stat_activity` rows with this test's
//! `application_name`; MariaDB: `information_schema.PROCESSLIST` rows, and
//! Redis: `CLIENT LIST` entries, whose client port is one the test's proxy
//! opened), every few milliseconds.
//!
//! Bound under test: at most `POOL + MARGIN` connections (a closed
//! connection may linger on the server for a moment after a new one opened).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use picocache::sql::{SqlBackend, SqlOptions};
use picocache::{Backend, Memo};
use picocache_tests::fault::{host_port, Proxy};
use picocache_tests::{server_url, unique_prefix};

const POOL: u32 = 4;
const MARGIN: usize = 2;
const THREADS: usize = 6;
const DEPTH: u64 = 300;

/// fib(n) (wrapping), memoized through `memo`, recursing cold to the bottom.
fn fib(memo: &Memo, n: u64) -> u64 {
    memo.call(n, |n| {
        if n < 2 {
            n
        } else {
            fib(memo, n - 1).wrapping_add(fib(memo, n - 2))
        }
    })
}

fn plain_fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.wrapping_add(b));
    }
    a
}

/// Runs the recursion on `THREADS` threads through `backend` while `count`
/// is sampled; the most connections seen.
fn recurse_and_watch(
    backend: Arc<dyn Backend>,
    mut count: impl FnMut() -> usize + Send + 'static,
) -> (usize, Duration) {
    let done = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (done, most) = (done.clone(), most.clone());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                most.fetch_max(count(), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(5));
            }
            most.fetch_max(count(), Ordering::SeqCst);
        })
    };
    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let backend = backend.clone();
            thread::Builder::new()
                .stack_size(256 << 20)
                .spawn(move || {
                    let memo = Memo::builder(unique_prefix("fib"))
                        .maxsize(Some(1000))
                        .backend(backend)
                        .strict(true)
                        .build();
                    let v = fib(&memo, DEPTH);
                    assert_eq!(v, plain_fib(DEPTH));
                    let info = memo.cache_info();
                    assert_eq!(info.currsize, DEPTH + 1, "every level stored");
                })
                .unwrap()
        })
        .collect();
    for w in workers {
        w.join().expect("a recursing thread failed");
    }
    let took = start.elapsed();
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    (most.load(Ordering::SeqCst), took)
}

fn options() -> SqlOptions {
    SqlOptions {
        pool_size: POOL,
        // A loaded machine runs six recursions on four connections: let a
        // statement and a wait for a pooled connection take a while.
        timeout: Duration::from_secs(5),
        ..SqlOptions::default()
    }
}

#[test]
fn postgresql_connections_stay_within_the_pool() {
    let Some(url) = server_url("postgresql") else {
        return;
    };
    let app = format!("pcconn{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let b = SqlBackend::connect(&format!("{url}{sep}application_name={app}"), options()).unwrap();
    assert_eq!(b.pool_size(), POOL as usize);
    let mut watch = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let count = move || {
        let row = watch
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .unwrap();
        row.get::<_, i64>(0) as usize
    };
    let (most, took) = recurse_and_watch(Arc::new(b), count);
    eprintln!(
        "postgresql: {THREADS} cold fib({DEPTH}) recursions in {took:?}; \
         the server saw at most {most} connections (pool {POOL})"
    );
    assert!(most >= 1, "the watcher saw the backend's connections");
    assert!(
        most <= POOL as usize + MARGIN,
        "postgresql: {most} connections for a pool of {POOL}"
    );
}

#[test]
fn mariadb_connections_stay_within_the_pool() {
    let Some(url) = server_url("mysql") else {
        return;
    };
    // Through a forwarding proxy, so that the server's PROCESSLIST tells
    // this backend's connections (their client ports) from anyone else's.
    let proxy = Arc::new(Proxy::to(&host_port(&url)));
    let b = SqlBackend::connect(&proxy.url_for(&url), options()).unwrap();
    // Over TCP as the backend (the same account sees its threads).
    let opts =
        mysql::OptsBuilder::from_opts(mysql::Opts::from_url(&url).unwrap()).prefer_socket(false);
    let mut watch = mysql::Conn::new(opts).unwrap();
    let threads_connected = Arc::new(AtomicUsize::new(0));
    let count = {
        let (proxy, threads_connected) = (proxy.clone(), threads_connected.clone());
        move || {
            let hosts: Vec<String> = watch
                .query("SELECT HOST FROM information_schema.PROCESSLIST")
                .unwrap();
            let ports = proxy.upstream_ports();
            let ours = hosts
                .iter()
                .filter_map(|h| h.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
                .filter(|p| ports.contains(p))
                .count();
            let row: Option<(String, usize)> = watch
                .query_first("SHOW STATUS LIKE 'Threads_connected'")
                .unwrap();
            if let Some((_, n)) = row {
                threads_connected.fetch_max(n, Ordering::SeqCst);
            }
            ours
        }
    };
    let (most, took) = recurse_and_watch(Arc::new(b), count);
    eprintln!(
        "mariadb: {THREADS} cold fib({DEPTH}) recursions in {took:?}; the server saw at most \
         {most} connections of this backend (pool {POOL}; Threads_connected, everyone's, at \
         most {})",
        threads_connected.load(Ordering::SeqCst)
    );
    assert!(most >= 1, "the watcher saw the backend's connections");
    assert!(
        most <= POOL as usize + MARGIN,
        "mariadb: {most} connections for a pool of {POOL}"
    );
}

/// The client ports in Redis's `CLIENT LIST`, asked over a plain socket.
fn redis_client_ports(addr: &str) -> Vec<u16> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"CLIENT LIST\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut header = String::new();
    r.read_line(&mut header).unwrap();
    let len: usize = header.trim_start_matches('$').trim().parse().unwrap();
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("addr=")))
        .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .collect()
}

#[test]
fn redis_connections_stay_within_the_pool() {
    let Some(url) = server_url("redis") else {
        return;
    };
    let server = host_port(&url);
    let proxy = Arc::new(Proxy::to(&server));
    let b = picocache::redis::RedisBackend::connect(
        &proxy.url_for(&url),
        picocache::redis::RedisOptions {
            pool_size: POOL,
            timeout: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .unwrap();
    let count = {
        let proxy = proxy.clone();
        move || {
            let ours = proxy.upstream_ports();
            redis_client_ports(&server)
                .into_iter()
                .filter(|p| ours.contains(p))
                .count()
        }
    };
    let (most, took) = recurse_and_watch(Arc::new(b), count);
    eprintln!(
        "redis: {THREADS} cold fib({DEPTH}) recursions in {took:?}; \
         the server saw at most {most} connections of this backend (pool {POOL})"
    );
    assert!(most >= 1, "the watcher saw the backend's connections");
    assert!(
        most <= POOL as usize + MARGIN,
        "redis: {most} connections for a pool of {POOL}"
    );
}

//! Every duration of `SqlOptions` and `RedisOptions` may be `Duration::MAX`
//! (read as "no limit"): it is taken as a day when the backend is opened,
//! and no deadline computed from it overflows. All of them at once, on every
//! backend: memoized calls return the function's value, and opening a
//! backend whose server is not there returns its error (before the fix,
//! `timeout`/`connect_timeout` of MAX aborted the process, and a back-off of
//! MAX panicked at the first failure: adversarial session 25,
//! `backend_options_of_duration_max_never_panic`).
//!
//! The servers are those of `tests/servers/start.sh`; a missing one fails
//! the test under `CI=true` and is skipped (said on stderr) otherwise.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use picocache::redis::{RedisBackend, RedisOptions};
use picocache::sql::{SqlBackend, SqlOptions};
use picocache::{Backend, Memo};

const SECRET: &[u8] = b"option durations secret";

fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            assert!(!ci, "{var} is not set; CI=true: every server must be there");
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: option_durations: {var} is not set (run \
                 `bash tests/servers/start.sh` and `source /tmp/picocache-servers/env.sh`)"
            );
            None
        }
    }
}

fn unique(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "optdur_{what}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn sql_max() -> SqlOptions {
    SqlOptions {
        connect_timeout: Duration::MAX,
        timeout: Duration::MAX,
        backoff: Duration::MAX,
        backoff_max: Duration::MAX,
        lease_ttl: Duration::MAX,
        ..SqlOptions::default()
    }
}

fn redis_max() -> RedisOptions {
    RedisOptions {
        prefix: format!("{}:", unique("redis")),
        connect_timeout: Duration::MAX,
        timeout: Duration::MAX,
        backoff: Duration::MAX,
        backoff_max: Duration::MAX,
        lease_ttl: Duration::MAX,
        ..RedisOptions::default()
    }
}

/// Two memoized calls of f(x) = x + 1 for x = 4 over `b`: their values and
/// how many times f ran.
fn two_calls(b: Arc<dyn Backend>) -> (u64, u64, u64) {
    let name = unique("memo");
    let memo = || {
        Memo::builder(name.clone())
            .secret(SECRET)
            .lease_timeout(Duration::MAX)
            .ttl(Some(Duration::MAX))
            .backend(b.clone())
            .build()
    };
    let runs = AtomicU64::new(0);
    let f = |x: u64| {
        runs.fetch_add(1, Ordering::SeqCst);
        x + 1
    };
    let a = memo().call(4u64, f);
    // Another `Memo` of the same function: its value comes from the backend.
    let b = memo().call(4u64, f);
    (a, b, runs.load(Ordering::SeqCst))
}

#[test]
fn every_backend_serves_calls_with_every_duration_max() {
    let dir = tempfile::Builder::new()
        .prefix("optdur-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let mut backends: Vec<(&str, Arc<dyn Backend>)> = Vec::new();
    let sqlite = format!("sqlite:///{}", dir.path().join("c.sqlite").display());
    backends.push((
        "sqlite",
        Arc::new(SqlBackend::connect(&sqlite, sql_max()).unwrap()),
    ));
    for (label, var) in [
        ("postgres", "PICOCACHE_POSTGRES_URL"),
        ("mysql", "PICOCACHE_MYSQL_URL"),
    ] {
        if let Some(url) = server_url(var) {
            let o = SqlOptions {
                table: format!(
                    "optdur_{}_{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .subsec_nanos()
                ),
                ..sql_max()
            };
            backends.push((label, Arc::new(SqlBackend::connect(&url, o).unwrap())));
        }
    }
    if let Some(url) = server_url("PICOCACHE_REDIS_URL") {
        backends.push((
            "redis",
            Arc::new(RedisBackend::connect(&url, redis_max()).unwrap()),
        ));
    }
    for (label, b) in backends {
        let got = two_calls(b);
        println!("option durations MAX: {label}: calls (value, value, runs) = {got:?}");
        assert_eq!(got, (5, 5, 1), "{label}");
    }
}

#[test]
fn opening_a_backend_whose_server_is_not_there_returns_its_error() {
    // Port 1 on the loopback: nobody listens, the connect is refused at once.
    let urls = [
        "postgresql://u:p@127.0.0.1:1/db",
        "mysql://u:p@127.0.0.1:1/db",
    ];
    for url in urls {
        let t = Instant::now();
        // Twice: the second open is a new backend (a breaker of its own).
        for _ in 0..2 {
            let r = SqlBackend::connect(url, sql_max());
            assert!(r.is_err(), "{url}: {r:?}");
        }
        println!(
            "option durations MAX: {url}: refused twice in {:?}",
            t.elapsed()
        );
    }
    let t = Instant::now();
    for _ in 0..2 {
        let r = RedisBackend::connect("redis://127.0.0.1:1/0", redis_max());
        assert!(r.is_err(), "{r:?}");
    }
    println!(
        "option durations MAX: redis://127.0.0.1:1: refused twice in {:?}",
        t.elapsed()
    );
}

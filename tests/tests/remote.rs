//! Backend-specific checks of the SQL and Redis backends: hits are not
//! written one by one, table names and key prefixes isolate caches,
//! SQLAlchemy-style URLs work, and a schema from a newer version is refused.

use std::time::Duration;

use picocache::redis::{RedisBackend, RedisOptions};
use picocache::sql::{SqlBackend, SqlOptions};
use picocache::{Backend, Error, Limits};
use picocache_tests::{fresh, server_url, unique_prefix};

/// The SQL databases to test: SQLite in a temporary directory, and the
/// servers whose URLs are set.
fn sql_urls(dir: &tempfile::TempDir) -> Vec<String> {
    let mut urls = vec![format!("sqlite:///{}", dir.path().join("c.db").display())];
    urls.extend(server_url("postgresql"));
    urls.extend(server_url("mysql"));
    urls
}

#[test]
fn hits_do_not_commit_one_transaction_each() {
    let dir = tempfile::tempdir().unwrap();
    for url in sql_urls(&dir) {
        let b = SqlBackend::connect(&url, SqlOptions::default()).unwrap();
        let ns = fresh(&b, &unique_prefix("batch"), Limits::default());
        for i in 0..10u8 {
            ns.put(&[i], &[i], None).unwrap();
        }
        let before = b.write_transactions();
        for n in 0..1000u32 {
            let k = (n % 10) as u8;
            assert_eq!(ns.get(&[k]).unwrap(), Some(vec![k]));
        }
        let writes = b.write_transactions() - before;
        // A flush every 256 hits (plus one per 250 ms of running time).
        assert!(
            writes < 100,
            "{}: {writes} write transactions for 1000 hits",
            b.kind()
        );
        let s = ns.stats().unwrap();
        assert_eq!(s.hits, 1000, "{}: every buffered hit is counted", b.kind());
        eprintln!("{}: 1000 hits cost {writes} write transactions", b.kind());
    }
}

#[test]
fn buffered_hits_are_shared_by_other_clients() {
    let dir = tempfile::tempdir().unwrap();
    for url in sql_urls(&dir) {
        let name = unique_prefix("shared");
        let one = SqlBackend::connect(&url, SqlOptions::default()).unwrap();
        let two = SqlBackend::connect(&url, SqlOptions::default()).unwrap();
        let a = fresh(&one, &name, Limits::default());
        a.put(b"k", b"v", None).unwrap();
        for _ in 0..5 {
            a.get(b"k").unwrap();
        }
        one.flush().unwrap();
        let b = two.namespace(&name, Limits::default()).unwrap();
        assert_eq!(
            b.stats().unwrap().hits,
            5,
            "{}: another client sees flushed hits",
            one.kind()
        );
        // Dropping a client flushes what it buffered.
        a.get(b"k").unwrap();
        drop(a);
        drop(one);
        assert_eq!(
            b.stats().unwrap().hits,
            6,
            "{}: a dropped client flushed its hits",
            two.kind()
        );
    }
}

#[test]
fn table_names_isolate_caches() {
    let dir = tempfile::tempdir().unwrap();
    for url in sql_urls(&dir) {
        let default = SqlBackend::connect(&url, SqlOptions::default()).unwrap();
        let other_opts = SqlOptions {
            table: "picocache_other".into(),
            ..SqlOptions::default()
        };
        let other = SqlBackend::connect(&url, other_opts).unwrap();
        let name = unique_prefix("tables");
        let a = fresh(&default, &name, Limits::default());
        let b = fresh(&other, &name, Limits::default());
        a.put(b"k", b"default", None).unwrap();
        b.put(b"k", b"other", None).unwrap();
        b.clear().unwrap();
        assert_eq!(
            a.get(b"k").unwrap().as_deref(),
            Some(&b"default"[..]),
            "{}",
            default.kind()
        );
        for bad in ["", "1abc", "drop table;", "a-b", "x\"y"] {
            let opts = SqlOptions {
                table: bad.into(),
                ..SqlOptions::default()
            };
            match SqlBackend::connect(&url, opts) {
                Err(Error::InvalidArgument(_)) => {}
                other => panic!("table {bad:?}: expected InvalidArgument, got {other:?}"),
            }
        }
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let url = format!("sqlite:///{}", path.display());
    drop(SqlBackend::connect(&url, SqlOptions::default()).unwrap());
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute("UPDATE picocache_meta SET v = 99 WHERE k = 'schema'", [])
        .unwrap();
    drop(db);
    match SqlBackend::connect(&url, SqlOptions::default()) {
        Err(Error::Backend { source, .. }) => {
            assert!(source.to_string().contains("schema version"), "{source}")
        }
        other => panic!("expected a schema version error, got {other:?}"),
    }
}

#[test]
fn sqlalchemy_urls() {
    let dir = tempfile::tempdir().unwrap();
    // sqlite:////abs is SQLAlchemy's absolute form (sqlite:///rel is relative).
    let abs = format!("sqlite:///{}", dir.path().join("sa.db").display());
    assert!(abs.starts_with("sqlite:////"));
    let b = picocache::open(&abs).unwrap();
    fresh(&*b, "x", Limits::default())
        .put(b"k", b"v", None)
        .unwrap();
    // The driver part of a SQLAlchemy URL is ignored.
    let b2 = picocache::open(&abs.replacen("sqlite:", "sqlite+pysqlite:", 1)).unwrap();
    let ns = b2.namespace("x", Limits::default()).unwrap();
    assert_eq!(
        ns.get(b"k").unwrap().as_deref(),
        Some(&b"v"[..]),
        "both forms open one file"
    );

    let mut urls = Vec::new();
    if let Some(u) = server_url("postgresql") {
        let rest = u.split_once("://").unwrap().1.to_string();
        for s in ["postgres", "postgresql+psycopg", "postgresql+psycopg2"] {
            urls.push(format!("{s}://{rest}"));
        }
    }
    if let Some(u) = server_url("mysql") {
        let rest = u.split_once("://").unwrap().1.to_string();
        for s in ["mariadb", "mysql+pymysql", "mysql+mysqldb"] {
            urls.push(format!("{s}://{rest}"));
        }
        urls.push(format!("mysql+pymysql://{rest}?charset=utf8mb4"));
    }
    for url in urls {
        let b = picocache::open(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let ns = fresh(&*b, &unique_prefix("sa"), Limits::default());
        ns.put(b"k", b"v", None).unwrap();
        assert_eq!(ns.get(b"k").unwrap().as_deref(), Some(&b"v"[..]), "{url}");
    }
}

#[test]
fn unreachable_servers_fail_promptly_as_unavailable() {
    // Nothing listens on port 1 of loopback: connecting is refused at once.
    let sql = SqlOptions {
        connect_timeout: Duration::from_millis(500),
        ..SqlOptions::default()
    };
    for url in [
        "postgresql://u:p@127.0.0.1:1/db",
        "mysql://u:p@127.0.0.1:1/db",
    ] {
        match SqlBackend::connect(url, sql.clone()) {
            Err(Error::Unavailable { .. }) => {}
            other => panic!("{url}: expected Unavailable, got {other:?}"),
        }
    }
    let opts = RedisOptions {
        connect_timeout: Duration::from_millis(500),
        ..RedisOptions::default()
    };
    match RedisBackend::connect("redis://127.0.0.1:1/0", opts) {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("redis: expected Unavailable, got {other:?}"),
    }
    match picocache::open("nosuch://x") {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("unknown scheme: {other:?}"),
    }
}

#[test]
fn redis_prefixes_isolate_caches() {
    let Some(url) = server_url("redis") else {
        return;
    };
    let a = RedisBackend::connect(&url, RedisOptions::default()).unwrap();
    let other = RedisOptions {
        prefix: unique_prefix("otherprefix"),
        ..RedisOptions::default()
    };
    let b = RedisBackend::connect(&url, other).unwrap();
    let name = unique_prefix("prefix");
    let na = fresh(&a, &name, Limits::default());
    let nb = fresh(&b, &name, Limits::default());
    na.put(b"k", b"a", None).unwrap();
    nb.put(b"k", b"b", None).unwrap();
    nb.clear().unwrap();
    assert_eq!(
        na.get(b"k").unwrap().as_deref(),
        Some(&b"a"[..]),
        "clear stays in its prefix"
    );
    assert!(a.namespace_names().unwrap().contains(&name));
}

#[test]
fn redis_lease_expires_after_its_ttl() {
    let Some(url) = server_url("redis") else {
        return;
    };
    let opts = RedisOptions {
        lease_ttl: Duration::from_millis(300),
        ..RedisOptions::default()
    };
    let b = RedisBackend::connect(&url, opts).unwrap();
    let ns = fresh(&b, &unique_prefix("leasettl"), Limits::default());
    // A holder that never releases (as a crashed client): forget the guard.
    let held = ns
        .lease(b"k", Duration::from_secs(1))
        .unwrap()
        .expect("free lease");
    std::mem::forget(held);
    let again = ns.lease(b"k", Duration::from_secs(30)).unwrap();
    assert!(
        again.is_some(),
        "an abandoned lease frees itself after lease_ttl"
    );
}

#[test]
fn redis_by_host_and_port() {
    let Some(url) = server_url("redis") else {
        return;
    };
    // redis://HOST:PORT/DB as start.sh writes it.
    let rest = url.trim_start_matches("redis://");
    let (hostport, db) = rest.split_once('/').unwrap_or((rest, "0"));
    let (host, port) = hostport.rsplit_once(':').unwrap();
    let b = RedisBackend::connect_host(
        host,
        port.parse().unwrap(),
        db.parse().unwrap(),
        None,
        RedisOptions::default(),
    )
    .unwrap();
    let ns = fresh(&b, &unique_prefix("hostport"), Limits::default());
    ns.put(b"k", b"v", None).unwrap();
    assert_eq!(ns.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    // A wrong password is refused (the test server has none, so AUTH fails).
    match RedisBackend::connect_host(
        host,
        port.parse().unwrap(),
        0,
        Some("wrong:pw"),
        RedisOptions::default(),
    ) {
        Err(_) => {}
        Ok(b) => panic!("a wrong password was accepted: {b:?}"),
    }
}

/// `rediss://`: the same backend over TLS (the test server's TLS port, a
/// self-signed certificate, hence `#insecure`); without `#insecure` the
/// certificate is verified and refused.
#[test]
fn redis_over_tls() {
    let Some(url) = server_url("redis-tls") else {
        return;
    };
    assert!(url.starts_with("rediss://"), "{url}");
    let b = RedisBackend::connect(&url, RedisOptions::default()).unwrap();
    let ns = fresh(&b, &unique_prefix("tls"), Limits::maxsize(Some(2)));
    ns.put(b"a", b"1", None).unwrap();
    ns.put(b"b", b"2", None).unwrap();
    assert_eq!(ns.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    ns.put(b"c", b"3", None).unwrap();
    assert_eq!(ns.get(b"b").unwrap(), None, "LRU eviction over TLS too");
    assert_eq!(ns.stats().unwrap().entries, 2);
    // Verified (no #insecure): the self-signed certificate is not trusted.
    let strict = url.trim_end_matches("#insecure");
    match RedisBackend::connect(strict, RedisOptions::default()) {
        Err(Error::Unavailable { .. }) | Err(Error::Backend { .. }) => {}
        Err(e) => panic!("unexpected error kind for an untrusted certificate: {e:?}"),
        Ok(b) => panic!("an untrusted certificate was accepted: {b:?}"),
    }
}

/// `unix:///path/to/redis.sock`: the same backend through the server's Unix
/// socket, sharing entries with a TCP client of the same server.
#[test]
fn redis_over_unix_socket() {
    let (Some(sock), Some(tcp)) = (server_url("redis-socket"), server_url("redis")) else {
        return;
    };
    assert!(sock.starts_with("unix://"), "{sock}");
    let prefix = unique_prefix("sock");
    let over_socket = RedisBackend::connect(
        &sock,
        RedisOptions {
            prefix: prefix.clone(),
            ..RedisOptions::default()
        },
    )
    .unwrap();
    let over_tcp = RedisBackend::connect(
        &tcp,
        RedisOptions {
            prefix,
            ..RedisOptions::default()
        },
    )
    .unwrap();
    let a = fresh(&over_socket, "n", Limits::default());
    a.put(b"k", b"via socket", None).unwrap();
    let b = over_tcp.namespace("n", Limits::default()).unwrap();
    assert_eq!(b.get(b"k").unwrap().as_deref(), Some(&b"via socket"[..]));
    assert_eq!(
        a.stats().unwrap().hits,
        1,
        "one server: the TCP client's hit counts"
    );
}

//! Values too large for the store: above `max_value_size` they are not sent
//! at all, and one larger than the server accepts (MariaDB's
//! `max_allowed_packet`) is not sent either; both fail with
//! `Error::TooLarge` (not `Unavailable`), and the backend stays in use: the
//! next call reaches the server at once.

use std::sync::Arc;
use std::time::Duration;

use mysql::prelude::Queryable;
use picocache::redis::{RedisBackend, RedisOptions};
use picocache::sql::{SqlBackend, SqlOptions};
use picocache::{Backend, Error, Limits, Memo};
use picocache_tests::fault::{host_port, Proxy};
use picocache_tests::{fresh, server_url, unique_prefix};

fn expect_too_large<T: std::fmt::Debug>(what: &str, r: picocache::Result<T>) {
    match r {
        Err(e @ Error::TooLarge { .. }) => {
            assert!(e.is_too_large());
            eprintln!("{what}: {e}");
        }
        other => panic!("{what}: expected TooLarge, got {other:?}"),
    }
}

/// Opens `url` (a server of `kind`); the backend and whether it backs off.
fn open(kind: &str, url: &str, max_value_size: usize) -> (Arc<dyn Backend>, Box<dyn Fn() -> bool>) {
    if kind == "redis" {
        let b = RedisBackend::connect(
            url,
            RedisOptions {
                max_value_size,
                ..RedisOptions::default()
            },
        )
        .unwrap();
        let c = b.clone();
        (Arc::new(b), Box::new(move || c.is_backing_off()))
    } else {
        let b = SqlBackend::connect(
            url,
            SqlOptions {
                max_value_size,
                ..SqlOptions::default()
            },
        )
        .unwrap();
        let c = b.clone();
        (Arc::new(b), Box::new(move || c.is_backing_off()))
    }
}

fn over_the_limit_is_not_sent(kind: &str) {
    let Some(url) = server_url(kind) else { return };
    let proxy = Proxy::to(&host_port(&url));
    // The limit through the URL; the options' default is larger.
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}max_value_size=100000", proxy.url_for(&url));
    let (b, backing_off) = open(kind, &url, picocache::sql::DEFAULT_MAX_VALUE_SIZE);
    let ns = fresh(&*b, &unique_prefix("big"), Limits::default());
    ns.put(b"small", b"v", None).unwrap();
    let before = proxy.upstream_bytes();
    let big = vec![7u8; 200_000];
    expect_too_large(
        &format!("{kind}: 200 kB over a 100 kB limit"),
        ns.put(b"k", &big, None),
    );
    let sent = proxy.upstream_bytes() - before;
    assert!(sent < 10_000, "{kind}: {sent} bytes went to the server");
    assert!(!backing_off(), "{kind}: not a reason to skip the server");
    assert_eq!(ns.get(b"small").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(ns.get(b"k").unwrap(), None);
    // Right at the limit (key + value) it is stored.
    let fits = vec![1u8; 100_000 - 2];
    ns.put(b"ok", &fits, None).unwrap();
    assert_eq!(ns.get(b"ok").unwrap().map(|v| v.len()), Some(fits.len()));
}

#[test]
fn values_over_max_value_size_are_not_sent() {
    for kind in ["redis", "postgresql", "mysql"] {
        over_the_limit_is_not_sent(kind);
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite:///{}?max_value_size=1000",
        dir.path().join("c.db").display()
    );
    let b = SqlBackend::connect(&url, SqlOptions::default()).unwrap();
    let ns = fresh(&b, "big", Limits::default());
    expect_too_large("sqlite", ns.put(b"k", &[0u8; 2000], None));
    ns.put(b"k", &[0u8; 10], None).unwrap();
}

#[test]
fn mariadb_max_allowed_packet_is_too_large_not_unavailable() {
    let Some(url) = server_url("mysql") else {
        return;
    };
    let mut plain = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
    let packet: u64 = plain
        .query_first("SELECT @@max_allowed_packet")
        .unwrap()
        .unwrap();
    let packet = packet as usize;
    // No limit of picocache's own: only the server's.
    let b = SqlBackend::connect(
        &url,
        SqlOptions {
            max_value_size: usize::MAX,
            timeout: Duration::from_secs(10),
            ..SqlOptions::default()
        },
    )
    .unwrap();
    let ns = fresh(&b, &unique_prefix("packet"), Limits::default());
    let over = vec![3u8; packet + 1];
    expect_too_large(
        &format!(
            "mariadb: {} bytes over max_allowed_packet {packet}",
            over.len()
        ),
        ns.put(b"k", &over, None),
    );
    assert!(!b.is_backing_off(), "mariadb: not marked down");
    let t = std::time::Instant::now();
    ns.put(b"after", b"1", None).unwrap();
    assert_eq!(ns.get(b"after").unwrap().as_deref(), Some(&b"1"[..]));
    eprintln!("mariadb: the next put and get took {:?}", t.elapsed());
    // Three quarters of the packet is stored and read back whole.
    let under = vec![5u8; packet * 3 / 4];
    ns.put(b"under", &under, None).unwrap();
    assert_eq!(
        ns.get(b"under").unwrap().map(|v| v.len()),
        Some(under.len())
    );
}

#[test]
fn memoized_too_large_results_are_returned_and_the_store_stays_up() {
    let Some(url) = server_url("postgresql") else {
        return;
    };
    let (b, backing_off) = open("postgresql", &url, 10_000);
    let memo = Memo::builder(unique_prefix("bigmemo"))
        .maxsize(Some(100))
        .backend(b)
        .build();
    let make = |n: usize| memo.call(n, |n| vec![1u8; n]);
    assert_eq!(make(50_000).len(), 50_000);
    assert_eq!(make(50_000).len(), 50_000);
    assert!(!backing_off());
    assert_eq!(make(10).len(), 10);
    assert_eq!(make(10).len(), 10);
    let info = memo.cache_info();
    assert_eq!(
        (info.hits, info.currsize),
        (1, 1),
        "the small result is cached"
    );
}

//! `Namespace::recheck`, the look again of a caller that missed and then
//! took the lease, counts a hit and never a second miss, on every backend
//! (issue 15: one computed call is one miss, in Rust and Python alike).
//! Server URLs come from the environment (`picocache_tests::server_url`).

use std::sync::Arc;

use picocache::{Backend, Limits};
use picocache_tests::{fresh, server_url, unique_prefix};

fn check(b: &dyn Backend) {
    let ns = fresh(b, &unique_prefix("recheck"), Limits::default());
    assert_eq!(ns.get(b"k").unwrap(), None); // the lookup: one miss
    assert_eq!(ns.recheck(b"k").unwrap(), None); // the look again: no count
    let s = ns.stats().unwrap();
    assert_eq!(
        (s.hits, s.misses),
        (0, 1),
        "{} after a miss and a recheck",
        b.kind()
    );
    ns.put(b"k", b"v", None).unwrap();
    assert_eq!(ns.recheck(b"k").unwrap().as_deref(), Some(&b"v"[..])); // a hit
    assert_eq!(ns.get(b"k").unwrap().as_deref(), Some(&b"v"[..])); // a hit
    let s = ns.stats().unwrap();
    assert_eq!((s.hits, s.misses), (2, 1), "{}", b.kind());
}

fn remote(kind: &str) -> Option<Arc<dyn Backend>> {
    let url = server_url(kind)?;
    Some(picocache::open(&url).unwrap_or_else(|e| panic!("{kind} at {url}: {e}")))
}

#[test]
fn recheck_local() {
    let dir = tempfile::tempdir().unwrap();
    let b = picocache::open(&format!("local://{}", dir.path().join("s").display())).unwrap();
    check(&*b);
}

#[test]
fn recheck_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let b = picocache::open(&format!("sqlite:///{}", dir.path().join("c.db").display())).unwrap();
    check(&*b);
}

#[test]
fn recheck_postgresql() {
    if let Some(b) = remote("postgresql") {
        check(&*b);
    }
}

#[test]
fn recheck_mysql() {
    if let Some(b) = remote("mysql") {
        check(&*b);
    }
}

#[test]
fn recheck_redis() {
    if let Some(b) = remote("redis") {
        check(&*b);
    }
}

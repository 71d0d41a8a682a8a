//! A server that goes away mid-run: while it is down every call fails with
//! `Error::Unavailable` (promptly: a refused connection, not a hang), and
//! once it is back the same client caches again, with no restart.
//!
//! Stops and starts the servers with `$PICOCACHE_{REDIS,POSTGRES,MYSQL}_STOP`
//! and `_START` (from `tests/servers/start.sh`); the three run one after the
//! other in one test, since a start command may start every server.

use std::process::Command;
use std::thread;
use std::time::Duration;

use picocache::{Error, Limits, Namespace};
use picocache_tests::{fresh, server_url, unique_prefix};

fn run(what: &str, cmd: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(st.success(), "{what} ({cmd}) failed: {st}");
}

fn expect_unavailable<T: std::fmt::Debug>(what: &str, r: picocache::Result<T>) {
    match r {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("{what} during the outage: expected Unavailable, got {other:?}"),
    }
}

fn outage(kind: &str, env: &str) {
    let Some(url) = server_url(kind) else { return };
    let (stop, start) = match (
        std::env::var(format!("{env}_STOP")),
        std::env::var(format!("{env}_START")),
    ) {
        (Ok(a), Ok(b)) if !a.is_empty() && !b.is_empty() => (a, b),
        _ => {
            picocache_tests::missing(&format!(
                "{kind} restart test: {env}_STOP / {env}_START not set"
            ));
            return;
        }
    };
    let b = picocache::open(&url).unwrap();
    let name = unique_prefix("restart");
    let ns = fresh(&*b, &name, Limits::maxsize(Some(100)));
    ns.put(b"before", b"1", None).unwrap();
    assert_eq!(ns.get(b"before").unwrap().as_deref(), Some(&b"1"[..]));

    run("stop", &stop);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..3 {
            expect_unavailable("get", ns.get(b"before"));
            expect_unavailable("put", ns.put(b"during", b"2", None));
            expect_unavailable("stats", ns.stats());
            expect_unavailable("lease", ns.lease(b"k", Duration::from_millis(10)));
            expect_unavailable(
                "namespace",
                b.namespace(&format!("{name}.other"), Limits::default()),
            );
        }
    }));
    // Start the server again even if the checks failed.
    run("start", &start);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }

    // The same client reconnects by itself: retry until a round trip works.
    let mut tries = 0;
    loop {
        tries += 1;
        match ns.put(b"after", b"3", None) {
            Ok(()) => break,
            Err(Error::Unavailable { .. }) if tries < 120 => {
                thread::sleep(Duration::from_millis(500))
            }
            Err(e) => panic!("{kind} did not come back: {e}"),
        }
    }
    assert_eq!(
        ns.get(b"after").unwrap().as_deref(),
        Some(&b"3"[..]),
        "caching resumed"
    );
    // The namespace keeps its limits, even where the server lost its data.
    assert_eq!(
        ns.limits().unwrap(),
        Limits::maxsize(Some(100)),
        "{kind}: limits after the restart"
    );
    assert!(
        b.namespace_names().unwrap().contains(&name),
        "{kind}: namespace listed after the restart"
    );
    let lease = ns.lease(b"k", Duration::from_secs(5)).unwrap();
    assert!(lease.is_some(), "leases work again");
    drop(lease);
    let other: std::sync::Arc<dyn Namespace> = b
        .namespace(&format!("{name}.other"), Limits::default())
        .unwrap();
    other.put(b"x", b"y", None).unwrap();
    assert_eq!(other.get(b"x").unwrap().as_deref(), Some(&b"y"[..]));
    eprintln!("{kind}: unavailable during the outage, caching again after it ({tries} tries)");
}

#[test]
fn servers_stop_and_restart() {
    outage("redis", "PICOCACHE_REDIS");
    outage("postgresql", "PICOCACHE_POSTGRES");
    outage("mysql", "PICOCACHE_MYSQL");
}

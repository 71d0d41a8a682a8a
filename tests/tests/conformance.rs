//! The conformance suite against every backend, plus several processes on
//! one namespace. Server URLs come from the environment (see
//! `picocache_tests::server_url`); an unset one skips its test loudly.

use std::process::{Command, Stdio};
use std::sync::Arc;

use picocache::{Backend, Limits};
use picocache_tests::{conformance, fresh, server_url, unique_prefix};

fn local() -> (tempfile::TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let b = picocache::open(&format!("local://{}", dir.path().join("store").display())).unwrap();
    (dir, b)
}

fn sqlite() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:///{}", dir.path().join("cache.db").display());
    (dir, url)
}

fn remote(kind: &str) -> Option<(String, Arc<dyn Backend>)> {
    let url = server_url(kind)?;
    let b = picocache::open(&url).unwrap_or_else(|e| panic!("{kind} at {url}: {e}"));
    assert_eq!(b.kind(), kind);
    Some((url, b))
}

#[test]
fn conformance_local() {
    let (_dir, b) = local();
    assert_eq!(b.kind(), "local");
    conformance(&*b, &unique_prefix("conf"));
}

#[test]
fn conformance_sqlite() {
    let (_dir, url) = sqlite();
    let b = picocache::open(&url).unwrap();
    assert_eq!(b.kind(), "sqlite");
    conformance(&*b, &unique_prefix("conf"));
}

#[test]
fn conformance_postgresql() {
    if let Some((_, b)) = remote("postgresql") {
        conformance(&*b, &unique_prefix("conf"));
    }
}

#[test]
fn conformance_mysql() {
    if let Some((_, b)) = remote("mysql") {
        conformance(&*b, &unique_prefix("conf"));
    }
}

#[test]
fn conformance_redis() {
    if let Some((_, b)) = remote("redis") {
        conformance(&*b, &unique_prefix("conf"));
    }
}

/// Several processes hammer one namespace: every value read is checked, the
/// namespace never exceeds its maxsize, and the shared counters add up to
/// what the processes did.
fn processes(url: &str, backend: &dyn Backend) {
    const PROCS: u64 = 4;
    const OPS: u64 = 400;
    let maxsize = 30u64;
    let name = unique_prefix("procs");
    let ns = fresh(backend, &name, Limits::maxsize(Some(maxsize)));
    let children: Vec<_> = (0..PROCS)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_hammer"))
                .args([
                    url,
                    &name,
                    &maxsize.to_string(),
                    "60",
                    &OPS.to_string(),
                    &(i + 1).to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn hammer")
        })
        .collect();
    let (mut gets, mut hits) = (0u64, 0u64);
    for child in children {
        let out = child.wait_with_output().expect("wait for hammer");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "a hammer process failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let nums: Vec<u64> = stdout
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(nums.len(), 3, "hammer output {stdout:?}");
        gets += nums[0];
        hits += nums[1];
    }
    assert_eq!(gets, PROCS * OPS);
    let s = ns.stats().unwrap();
    assert!(
        s.entries <= maxsize,
        "entries {} over maxsize {maxsize}",
        s.entries
    );
    assert!(s.entries > 0);
    assert_eq!(
        s.hits + s.misses,
        gets,
        "every get of every process counted once: {s:?}"
    );
    assert_eq!(
        s.hits, hits,
        "hits counted as the processes saw them: {s:?}"
    );
    eprintln!(
        "{} processes on {}: {gets} gets, {hits} hits, {s:?}",
        PROCS,
        backend.kind()
    );
}

#[test]
fn processes_local() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("local://{}", dir.path().join("store").display());
    let b = picocache::open(&url).unwrap();
    processes(&url, &*b);
}

#[test]
fn processes_sqlite() {
    let (_dir, url) = sqlite();
    let b = picocache::open(&url).unwrap();
    processes(&url, &*b);
}

#[test]
fn processes_postgresql() {
    if let Some((url, b)) = remote("postgresql") {
        processes(&url, &*b);
    }
}

#[test]
fn processes_mysql() {
    if let Some((url, b)) = remote("mysql") {
        processes(&url, &*b);
    }
}

#[test]
fn processes_redis() {
    if let Some((url, b)) = remote("redis") {
        processes(&url, &*b);
    }
}

/// Leases exclude each other across processes: holders never overlap.
fn lease_processes(url: &str) {
    const PROCS: usize = 3;
    const ROUNDS: &str = "15";
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("holders.log");
    let name = unique_prefix("leaseprocs");
    let children: Vec<_> = (0..PROCS)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_hammer"))
                .args(["lease", url, &name, log.to_str().unwrap(), ROUNDS])
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn hammer")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "lease process failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), PROCS * 15 * 2);
    for pair in lines.chunks(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            a.starts_with("enter ") && b.starts_with("exit ") && a[6..] == b[5..],
            "two processes held one lease at once: {a:?} then {b:?}"
        );
    }
}

#[test]
fn lease_processes_local() {
    let dir = tempfile::tempdir().unwrap();
    lease_processes(&format!("local://{}", dir.path().join("store").display()));
}

#[test]
fn lease_processes_sqlite() {
    let (_dir, url) = sqlite();
    lease_processes(&url);
}

#[test]
fn lease_processes_postgresql() {
    if let Some(url) = server_url("postgresql") {
        lease_processes(&url);
    }
}

#[test]
fn lease_processes_mysql() {
    if let Some(url) = server_url("mysql") {
        lease_processes(&url);
    }
}

#[test]
fn lease_processes_redis() {
    if let Some(url) = server_url("redis") {
        lease_processes(&url);
    }
}

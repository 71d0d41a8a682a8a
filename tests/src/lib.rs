//! Shared helpers of the cross-crate tests: the backend conformance suite.
//!
//! [`conformance`] runs the same checks against any [`Backend`]; the tests in
//! `tests/tests/` call it for the local engine, SQLite, PostgreSQL,
//! MySQL/MariaDB and Redis. The servers' URLs come from the environment
//! (`PICOCACHE_REDIS_URL`, `PICOCACHE_POSTGRES_URL`, `PICOCACHE_MYSQL_URL`,
//! written by `tests/servers/start.sh`); a test whose server is not
//! configured fails in CI (`CI=true`) and elsewhere prints a `SKIPPED` line
//! (uncaptured) and does nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use picocache::{Backend, Limits, Namespace};

pub mod fault;
pub mod instance;

/// The environment variable holding the URL of a server kind.
pub fn url_var(kind: &str) -> &'static str {
    match kind {
        "redis" => "PICOCACHE_REDIS_URL",
        "redis-tls" => "PICOCACHE_REDIS_TLS_URL",
        "redis-socket" => "PICOCACHE_REDIS_SOCKET_URL",
        "postgresql" => "PICOCACHE_POSTGRES_URL",
        "mysql" => "PICOCACHE_MYSQL_URL",
        other => panic!("no server kind {other}"),
    }
}

/// Whether this is a CI run (`CI=true`, as `.ci/run` sets it): there a test
/// that lacks its server fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Reports that a test cannot run (`what`: which test, and why). In CI
/// ([`in_ci`]) that is a failure: this panics. Elsewhere it writes a
/// `SKIPPED` line straight to the process's stderr, which the test
/// harness does not capture, so it shows in a passing run too.
pub fn missing(what: &str) {
    if in_ci() {
        panic!(
            "{what}; CI=true: every server must be there (tests/servers/start.sh, then \
             source /tmp/picocache-servers/env.sh)"
        );
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {what} (run `bash tests/servers/start.sh` and \
         `source /tmp/picocache-servers/env.sh`)"
    );
}

/// The URL of a server kind, or `None` after [`missing`] said the test is
/// skipped (in CI, a missing URL fails the test instead).
pub fn server_url(kind: &str) -> Option<String> {
    let var = url_var(kind);
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            missing(&format!("{kind} test: {var} is not set"));
            None
        }
    }
}

/// A prefix unique to this process and call, so runs against a persistent
/// server never see each other's namespaces.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Opens namespace `name` with `limits` and clears it.
pub fn fresh(backend: &dyn Backend, name: &str, limits: Limits) -> Arc<dyn Namespace> {
    let ns = backend
        .namespace(name, limits)
        .unwrap_or_else(|e| panic!("open {name}: {e}"));
    ns.clear().unwrap_or_else(|e| panic!("clear {name}: {e}"));
    ns
}

/// The self-checking value of key number `k` (its length varies with `k`).
pub fn value_of(k: u64) -> Vec<u8> {
    let unit = format!("<{k}:{:x}>", k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    unit.repeat(1 + (k % 7) as usize).into_bytes()
}

/// A tiny deterministic random source (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

/// One conformance check: a backend and a namespace prefix.
type Check = fn(&dyn Backend, &str);

/// Runs every conformance check against `backend`, in namespaces whose
/// names start with `prefix`. Panics on the first failure, naming it.
pub fn conformance(backend: &dyn Backend, prefix: &str) {
    let checks: &[(&str, Check)] = &[
        ("basic", check_basic),
        ("binary", check_binary),
        ("large", check_large),
        ("clear_isolated", check_clear_isolated),
        ("lru_order", check_lru_order),
        ("maxsize_zero", check_maxsize_zero),
        ("ttl", check_ttl),
        ("stats", check_stats),
        ("limits_update", check_limits_update),
        ("max_bytes", check_max_bytes),
        ("many", check_many),
        ("many_lru_order", check_many_lru_order),
        ("names", check_names),
        ("lease", check_lease),
        ("threads", check_threads),
    ];
    for (name, check) in checks {
        eprintln!("conformance[{}]: {name}", backend.kind());
        check(backend, &format!("{prefix}.{name}"));
    }
}

fn check_basic(b: &dyn Backend, p: &str) {
    let ns = fresh(b, p, Limits::default());
    assert_eq!(ns.name(), p);
    assert_eq!(ns.get(b"a").unwrap(), None, "miss on an empty namespace");
    ns.put(b"a", b"1", None).unwrap();
    assert_eq!(ns.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    ns.put(b"a", b"22", None).unwrap();
    assert_eq!(
        ns.get(b"a").unwrap().as_deref(),
        Some(&b"22"[..]),
        "overwrite"
    );
    assert_eq!(ns.stats().unwrap().entries, 1, "an overwrite is one entry");
    assert!(ns.remove(b"a").unwrap(), "remove of a present key");
    assert!(!ns.remove(b"a").unwrap(), "remove of an absent key");
    assert_eq!(ns.get(b"a").unwrap(), None, "removed");
    assert_eq!(ns.stats().unwrap().entries, 0);
    // A second handle on the same namespace sees the same entries.
    ns.put(b"b", b"x", None).unwrap();
    let again = b.namespace(p, Limits::default()).unwrap();
    assert_eq!(
        again.get(b"b").unwrap().as_deref(),
        Some(&b"x"[..]),
        "second handle"
    );
}

fn check_binary(b: &dyn Backend, p: &str) {
    let ns = fresh(b, p, Limits::default());
    let keys: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        vec![0],
        vec![0, 0, 0],
        vec![0xff, 0xfe, 0x00, 0x80],
        b"with:colons{and}braces%".to_vec(),
        "unicode \u{e9}\u{4e2d}".as_bytes().to_vec(),
        (0..=255u8).collect(),
        vec![b'?'; 3],
    ];
    for (i, k) in keys.iter().enumerate() {
        let v: Vec<u8> = if i % 2 == 0 {
            Vec::new()
        } else {
            k.iter().rev().copied().collect()
        };
        ns.put(k, &v, None).unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        let v: Vec<u8> = if i % 2 == 0 {
            Vec::new()
        } else {
            k.iter().rev().copied().collect()
        };
        assert_eq!(ns.get(k).unwrap(), Some(v), "binary key {k:?}");
    }
    assert_eq!(ns.stats().unwrap().entries, keys.len() as u64);
    // An empty value is a hit, not a miss.
    assert_eq!(ns.get(b"").unwrap(), Some(Vec::new()));
    // Keys that differ in one trailing byte are different keys.
    assert_eq!(ns.get(&[0, 0]).unwrap(), None);
}

fn check_large(b: &dyn Backend, p: &str) {
    let ns = fresh(b, p, Limits::default());
    let big: Vec<u8> = (0..(1usize << 20) + 17)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let big_key: Vec<u8> = (0..5000).map(|i| (i % 256) as u8).collect();
    ns.put(b"big", &big, None).unwrap();
    ns.put(&big_key, b"long key", None).unwrap();
    assert_eq!(
        ns.get(b"big").unwrap().as_deref(),
        Some(&big[..]),
        "1 MiB value"
    );
    assert_eq!(
        ns.get(&big_key).unwrap().as_deref(),
        Some(&b"long key"[..]),
        "5000-byte key"
    );
    assert!(
        ns.stats().unwrap().bytes >= big.len() as u64,
        "bytes counts the large value"
    );
}

fn check_clear_isolated(b: &dyn Backend, p: &str) {
    let one = fresh(b, &format!("{p}.one"), Limits::default());
    let two = fresh(b, &format!("{p}.two"), Limits::default());
    for i in 0..10 {
        one.put(&key(i), b"1", None).unwrap();
        two.put(&key(i), b"2", None).unwrap();
    }
    assert_eq!(
        one.get(&key(3)).unwrap().as_deref(),
        Some(&b"1"[..]),
        "namespaces hold their own values"
    );
    assert_eq!(two.get(&key(3)).unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(one.get(b"absent").unwrap(), None);
    one.clear().unwrap();
    let s1 = one.stats().unwrap();
    assert_eq!(
        (s1.entries, s1.hits, s1.misses, s1.evictions),
        (0, 0, 0, 0),
        "clear resets"
    );
    assert_eq!(one.get(&key(3)).unwrap(), None);
    for i in 0..10 {
        assert_eq!(
            two.get(&key(i)).unwrap().as_deref(),
            Some(&b"2"[..]),
            "clear of another namespace"
        );
    }
    let s2 = two.stats().unwrap();
    assert_eq!(s2.entries, 10);
    assert_eq!(s2.hits, 11);
}

fn check_lru_order(b: &dyn Backend, p: &str) {
    let ns = fresh(b, p, Limits::maxsize(Some(3)));
    ns.put(b"a", b"1", None).unwrap();
    ns.put(b"b", b"2", None).unwrap();
    ns.put(b"c", b"3", None).unwrap();
    assert!(
        ns.get(b"a").unwrap().is_some(),
        "a hit makes a recently used"
    );
    ns.put(b"d", b"4", None).unwrap();
    assert_eq!(
        ns.get(b"b").unwrap(),
        None,
        "b, least recently used, was evicted"
    );
    for k in [&b"a"[..], b"c", b"d"] {
        assert!(ns.get(k).unwrap().is_some(), "{k:?} kept");
    }
    let s = ns.stats().unwrap();
    assert_eq!(s.entries, 3);
    assert_eq!(s.evictions, 1);
    // Now the order is a, c, d (oldest first): two puts evict a and c.
    ns.put(b"e", b"5", None).unwrap();
    ns.put(b"f", b"6", None).unwrap();
    assert_eq!(ns.get(b"a").unwrap(), None);
    assert_eq!(ns.get(b"c").unwrap(), None);
    assert!(ns.get(b"d").unwrap().is_some());
    // An overwrite is a use too.
    ns.put(b"d", b"44", None).unwrap();
    ns.put(b"g", b"7", None).unwrap();
    assert_eq!(ns.get(b"e").unwrap(), None, "e evicted after d's overwrite");
    assert_eq!(ns.get(b"d").unwrap().as_deref(), Some(&b"44"[..]));
    // A batch over the limit keeps the newest.
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..10).map(|i| (key(i), value_of(i as u64))).collect();
    let refs: Vec<(&[u8], &[u8])> = items.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    ns.put_many(&refs, None).unwrap();
    assert_eq!(ns.stats().unwrap().entries, 3);
    for i in 7..10 {
        assert_eq!(
            ns.get(&key(i)).unwrap(),
            Some(value_of(i as u64)),
            "newest of a batch kept"
        );
    }
}

fn check_maxsize_zero(b: &dyn Backend, p: &str) {
    let ns = fresh(b, p, Limits::maxsize(Some(0)));
    ns.put(b"a", b"1", None).unwrap();
    assert_eq!(ns.get(b"a").unwrap(), None, "maxsize 0 stores nothing");
    assert_eq!(ns.stats().unwrap().entries, 0);
}

fn check_ttl(b: &dyn Backend, p: &str) {
    let ns = fresh(b, p, Limits::default());
    ns.put(b"short", b"1", Some(Duration::from_millis(150)))
        .unwrap();
    ns.put(b"long", b"2", Some(Duration::from_secs(3600)))
        .unwrap();
    ns.put(b"forever", b"3", None).unwrap();
    thread::sleep(Duration::from_millis(600));
    assert_eq!(ns.get(b"short").unwrap(), None, "expired entry is a miss");
    assert_eq!(ns.get(b"long").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(ns.get(b"forever").unwrap().as_deref(), Some(&b"3"[..]));
    let entries = ns.stats().unwrap().entries;
    assert_eq!(entries, 2, "expired entries are not counted");
    let removed = ns.remove(b"short").unwrap();
    assert!(!removed, "an expired entry is absent");

    // The namespace's default TTL, and an explicit TTL overriding it.
    let d = fresh(
        b,
        &format!("{p}.default"),
        Limits {
            ttl: Some(Duration::from_millis(150)),
            ..Limits::default()
        },
    );
    d.put(b"x", b"1", None).unwrap();
    d.put(b"y", b"2", Some(Duration::from_secs(3600))).unwrap();
    thread::sleep(Duration::from_millis(600));
    assert_eq!(d.get(b"x").unwrap(), None, "default TTL applies");
    assert_eq!(
        d.get(b"y").unwrap().as_deref(),
        Some(&b"2"[..]),
        "explicit TTL wins"
    );

    // Expired entries make room: they are not evicted live ones.
    let m = fresh(b, &format!("{p}.room"), Limits::maxsize(Some(2)));
    m.put(b"keep", b"1", None).unwrap();
    m.put(b"gone", b"2", Some(Duration::from_millis(150)))
        .unwrap();
    thread::sleep(Duration::from_millis(600));
    m.put(b"new", b"3", None).unwrap();
    let kept = m.get(b"keep").unwrap().is_some();
    assert!(kept, "a live entry outlives an expired one");
    assert!(m.get(b"new").unwrap().is_some());
}

fn check_stats(b: &dyn Backend, p: &str) {
    let ns = fresh(b, p, Limits::default());
    let s = ns.stats().unwrap();
    assert_eq!((s.entries, s.hits, s.misses, s.evictions), (0, 0, 0, 0));
    ns.get(b"a").unwrap();
    ns.get(b"b").unwrap();
    ns.put(b"a", b"1", None).unwrap();
    for _ in 0..3 {
        ns.get(b"a").unwrap();
    }
    let s = ns.stats().unwrap();
    assert_eq!((s.entries, s.hits, s.misses, s.evictions), (1, 3, 2, 0));
    assert!(s.bytes > 0);
    ns.put(b"big", &[7u8; 10_000], None).unwrap();
    let s2 = ns.stats().unwrap();
    assert!(
        s2.bytes >= s.bytes + 10_000,
        "bytes grow with values: {} then {}",
        s.bytes,
        s2.bytes
    );
    ns.remove(b"big").unwrap();
    assert!(
        ns.stats().unwrap().bytes < s2.bytes,
        "bytes shrink on remove"
    );
    // get_many counts each key.
    ns.get_many(&[b"a", b"zz", b"a"]).unwrap();
    let s3 = ns.stats().unwrap();
    assert_eq!((s3.hits, s3.misses), (5, 3));
}

fn check_limits_update(b: &dyn Backend, p: &str) {
    let first = Limits {
        maxsize: Some(10),
        max_bytes: None,
        ttl: Some(Duration::from_secs(60)),
    };
    let ns = fresh(b, p, first);
    assert_eq!(ns.limits().unwrap(), first);
    for i in 0..10 {
        ns.put(&key(i), b"v", None).unwrap();
    }
    ns.get(&key(0)).unwrap(); // key 0 is now the most recent
    let second = Limits {
        maxsize: Some(4),
        max_bytes: None,
        ttl: None,
    };
    let again = b.namespace(p, second).unwrap();
    assert_eq!(
        again.limits().unwrap(),
        second,
        "new limits replace the old"
    );
    assert_eq!(ns.limits().unwrap(), second, "every handle sees them");
    assert_eq!(
        again.stats().unwrap().entries,
        4,
        "new limits are enforced at once"
    );
    assert!(
        again.get(&key(0)).unwrap().is_some(),
        "the most recently used survives"
    );
    assert!(again.get(&key(9)).unwrap().is_some());
    assert_eq!(again.get(&key(1)).unwrap(), None);
    let unlimited = b.namespace(p, Limits::default()).unwrap();
    assert_eq!(unlimited.limits().unwrap(), Limits::default());
}

fn check_max_bytes(b: &dyn Backend, p: &str) {
    let limit = 20_000u64;
    let ns = fresh(
        b,
        p,
        Limits {
            max_bytes: Some(limit),
            ..Limits::default()
        },
    );
    for i in 0..40 {
        ns.put(&key(i), &[i as u8; 1000], None).unwrap();
        assert!(ns.stats().unwrap().bytes <= limit, "bytes within max_bytes");
    }
    let s = ns.stats().unwrap();
    assert!(s.entries < 40 && s.entries > 0, "entries {}", s.entries);
    assert!(s.evictions > 0);
    assert!(ns.get(&key(39)).unwrap().is_some(), "the newest is kept");
    assert_eq!(ns.get(&key(0)).unwrap(), None, "the oldest went first");
}

/// A `get_many` uses its keys in the order given: the last one asked for is
/// the most recently used, whatever order the server returns rows in.
fn check_many_lru_order(b: &dyn Backend, p: &str) {
    let ns = fresh(b, p, Limits::maxsize(Some(8)));
    let keys: Vec<Vec<u8>> = (0..8).map(key).collect();
    for k in &keys {
        ns.put(k, b"v", None).unwrap();
    }
    // Use them newest-written first: key 0 becomes the most recent use.
    let order: Vec<&[u8]> = keys.iter().rev().map(|k| &k[..]).collect();
    assert!(ns.get_many(&order).unwrap().iter().all(Option::is_some));
    // Four new keys evict the four least recently used: 7, 6, 5, 4.
    for i in 100..104 {
        ns.put(&key(i), b"n", None).unwrap();
    }
    for i in 0..8 {
        let want = i < 4;
        assert_eq!(
            ns.get(&key(i)).unwrap().is_some(),
            want,
            "key {i} after get_many in reverse order and four evictions"
        );
    }
}

fn check_many(b: &dyn Backend, p: &str) {
    let ns = fresh(b, p, Limits::default());
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..150).map(|i| (key(i), value_of(i as u64))).collect();
    let refs: Vec<(&[u8], &[u8])> = items.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    ns.put_many(&refs, None).unwrap();
    ns.put_many(&[], None).unwrap();
    assert_eq!(ns.stats().unwrap().entries, 150);
    let probe: Vec<Vec<u8>> = (0..300).rev().map(key).collect();
    let probe_refs: Vec<&[u8]> = probe.iter().map(|k| &k[..]).collect();
    let got = ns.get_many(&probe_refs).unwrap();
    assert_eq!(got.len(), 300);
    for (i, g) in (0..300).rev().zip(got) {
        if i < 150 {
            assert_eq!(g, Some(value_of(i as u64)), "get_many key {i}");
        } else {
            assert_eq!(g, None, "get_many absent key {i}");
        }
    }
    assert!(ns.get_many(&[]).unwrap().is_empty());
    // put_many with a TTL.
    ns.put_many(
        &[(b"t1", b"1"), (b"t2", b"2")],
        Some(Duration::from_millis(150)),
    )
    .unwrap();
    thread::sleep(Duration::from_millis(600));
    assert_eq!(ns.get_many(&[b"t1", b"t2"]).unwrap(), vec![None, None]);
}

fn check_names(b: &dyn Backend, p: &str) {
    let names = [format!("{p}.x"), format!("{p}.y:with{{odd}}%chars")];
    for n in &names {
        let ns = fresh(b, n, Limits::default());
        ns.put(b"k", n.as_bytes(), None).unwrap();
    }
    let listed = b.namespace_names().unwrap();
    for n in &names {
        assert!(listed.contains(n), "{n} listed in {listed:?}");
        let ns = b.namespace(n, Limits::default()).unwrap();
        assert_eq!(
            ns.get(b"k").unwrap().as_deref(),
            Some(n.as_bytes()),
            "odd names do not collide"
        );
    }
}

fn check_lease(b: &dyn Backend, p: &str) {
    let ns = fresh(b, p, Limits::default());
    let held = ns
        .lease(b"k", Duration::from_secs(5))
        .unwrap()
        .expect("a free lease is taken");
    // Another caller cannot take it while it is held.
    let ns2 = b.namespace(p, Limits::default()).unwrap();
    let blocked = thread::scope(|s| {
        s.spawn(|| {
            ns2.lease(b"k", Duration::from_millis(100))
                .unwrap()
                .is_none()
        })
        .join()
        .unwrap()
    });
    assert!(blocked, "a held lease is not taken by another caller");
    // Other keys are independent.
    let other = ns2.lease(b"other", Duration::from_secs(5)).unwrap();
    assert!(other.is_some(), "a lease on another key");
    drop(other);
    drop(held);
    let again = ns2.lease(b"k", Duration::from_secs(5)).unwrap();
    assert!(again.is_some(), "a released lease is taken again");
    drop(again);

    // Mutual exclusion under contention.
    let inside = AtomicBool::new(false);
    let entered = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let ns = b.namespace(p, Limits::default()).unwrap();
                for _ in 0..5 {
                    let lease = ns
                        .lease(b"hot", Duration::from_secs(30))
                        .unwrap()
                        .expect("lease within 30 s");
                    assert!(
                        !inside.swap(true, Ordering::SeqCst),
                        "two holders of one lease"
                    );
                    entered.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(3));
                    inside.store(false, Ordering::SeqCst);
                    drop(lease);
                }
            });
        }
    });
    assert_eq!(entered.load(Ordering::SeqCst), 20);
}

fn check_threads(b: &dyn Backend, p: &str) {
    let maxsize = 20u64;
    let ns = fresh(b, p, Limits::maxsize(Some(maxsize)));
    let gets = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..4u64 {
            let ns = &ns;
            let gets = &gets;
            s.spawn(move || {
                let mut rng = Rng::new(t + 1);
                for _ in 0..150 {
                    let k = rng.below(40);
                    let kb = format!("k{k}").into_bytes();
                    gets.fetch_add(1, Ordering::Relaxed);
                    match ns.get(&kb).unwrap() {
                        Some(v) => assert_eq!(v, value_of(k), "value of k{k}"),
                        None => ns.put(&kb, &value_of(k), None).unwrap(),
                    }
                }
            });
        }
    });
    let s = ns.stats().unwrap();
    assert!(
        s.entries <= maxsize,
        "entries {} over maxsize {maxsize}",
        s.entries
    );
    assert_eq!(
        s.hits + s.misses,
        gets.load(Ordering::Relaxed) as u64,
        "every get counted once"
    );
}

/// What one process of the multi-process test did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HammerReport {
    /// Gets made.
    pub gets: u64,
    /// Gets that hit.
    pub hits: u64,
    /// Puts made.
    pub puts: u64,
}

/// One client of the multi-process test: `ops` random gets over `keys` keys
/// of namespace `name`, checking every value it reads and storing the
/// missing ones (under the key's lease, as a memoizer does).
pub fn hammer(
    backend: &dyn Backend,
    name: &str,
    maxsize: u64,
    keys: u64,
    ops: u64,
    seed: u64,
) -> HammerReport {
    let ns = backend
        .namespace(name, Limits::maxsize(Some(maxsize)))
        .expect("open namespace");
    let mut rng = Rng::new(seed);
    let mut r = HammerReport::default();
    for i in 0..ops {
        let k = rng.below(keys);
        let kb = format!("k{k}").into_bytes();
        r.gets += 1;
        match ns.get(&kb).expect("get") {
            Some(v) => {
                assert_eq!(
                    v,
                    value_of(k),
                    "process {} read a wrong value for k{k}",
                    std::process::id()
                );
                r.hits += 1;
            }
            None => {
                if i % 4 == 0 {
                    let _lease = ns.lease(&kb, Duration::from_secs(10)).expect("lease");
                    ns.put(&kb, &value_of(k), None).expect("put");
                } else {
                    ns.put(&kb, &value_of(k), None).expect("put");
                }
                r.puts += 1;
            }
        }
        if i % 97 == 0 {
            let s = ns.stats().expect("stats");
            assert!(
                s.entries <= maxsize,
                "entries {} over maxsize {maxsize}",
                s.entries
            );
        }
    }
    r
}

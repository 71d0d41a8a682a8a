//! A memoized call looks again after every lease it takes, not only after
//! one it waited for: a key another caller stored and released between this
//! caller's miss and its lease is not computed again (adversarial session
//! 25, `a_key_stored_between_a_miss_and_its_lease_is_not_computed_again`,
//! there on the local store only). Here on every backend, with the counts:
//! a plain miss is one miss in the store's counters (the look again finds
//! nothing and counts nothing), and the interposed one is a hit of the call.
//!
//! The servers are those of `tests/servers/start.sh`; a missing one fails
//! the test under `CI=true` and is skipped (said on stderr) otherwise.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use picocache::redis::{RedisBackend, RedisOptions};
use picocache::sql::{SqlBackend, SqlOptions};
use picocache::{Backend, Limits, Memo, Namespace};

const SECRET: &[u8] = b"lease recheck secret";

fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            assert!(!ci, "{var} is not set; CI=true: every server must be there");
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: lease_recheck: {var} is not set (run \
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
        "lease_recheck_{what}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

type Hook = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// A backend whose namespaces run `hook` (once) just before a lease is
/// taken: between the caller's miss and its lease.
struct Interposer {
    inner: Arc<dyn Backend>,
    hook: Hook,
}

struct InterposedNs {
    inner: Arc<dyn Namespace>,
    hook: Hook,
}

impl std::fmt::Debug for Interposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interposer")
    }
}

impl std::fmt::Debug for InterposedNs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InterposedNs")
    }
}

impl Backend for Interposer {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn namespace(&self, name: &str, limits: Limits) -> picocache::Result<Arc<dyn Namespace>> {
        Ok(Arc::new(InterposedNs {
            inner: self.inner.namespace(name, limits)?,
            hook: self.hook.clone(),
        }))
    }
    fn namespace_names(&self) -> picocache::Result<Vec<String>> {
        self.inner.namespace_names()
    }
}

impl Namespace for InterposedNs {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn get(&self, key: &[u8]) -> picocache::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn recheck(&self, key: &[u8]) -> picocache::Result<Option<Vec<u8>>> {
        self.inner.recheck(key)
    }
    fn put(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> picocache::Result<()> {
        self.inner.put(key, value, ttl)
    }
    fn remove(&self, key: &[u8]) -> picocache::Result<bool> {
        self.inner.remove(key)
    }
    fn clear(&self) -> picocache::Result<()> {
        self.inner.clear()
    }
    fn stats(&self) -> picocache::Result<picocache::Stats> {
        self.inner.stats()
    }
    fn limits(&self) -> picocache::Result<Limits> {
        self.inner.limits()
    }
    fn lease(&self, key: &[u8], wait: Duration) -> picocache::Result<Option<picocache::Lease>> {
        let hook = self.hook.lock().unwrap().take();
        if let Some(h) = hook {
            h();
        }
        self.inner.lease(key, wait)
    }
}

fn memo_over(b: Arc<dyn Backend>, name: &str) -> Memo {
    Memo::builder(name)
        .secret(SECRET)
        .lease_timeout(Duration::from_secs(5))
        .backend(b)
        .build()
}

fn backends(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn Backend>)> {
    let mut out: Vec<(&'static str, Arc<dyn Backend>)> = vec![(
        "local",
        Arc::new(picocache::LocalBackend::open(dir.join("local")).unwrap()),
    )];
    let sqlite = format!("sqlite:///{}", dir.join("c.sqlite").display());
    out.push((
        "sqlite",
        Arc::new(SqlBackend::connect(&sqlite, SqlOptions::default()).unwrap()),
    ));
    for (label, var) in [
        ("postgres", "PICOCACHE_POSTGRES_URL"),
        ("mysql", "PICOCACHE_MYSQL_URL"),
    ] {
        if let Some(url) = server_url(var) {
            out.push((
                label,
                Arc::new(SqlBackend::connect(&url, SqlOptions::default()).unwrap()),
            ));
        }
    }
    if let Some(url) = server_url("PICOCACHE_REDIS_URL") {
        let o = RedisOptions {
            prefix: unique("redis"),
            ..RedisOptions::default()
        };
        out.push(("redis", Arc::new(RedisBackend::connect(&url, o).unwrap())));
    }
    out
}

#[test]
fn a_key_stored_between_a_miss_and_its_lease_is_served_on_every_backend() {
    let dir = tempfile::Builder::new()
        .prefix("lease-recheck-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    for (label, b) in backends(dir.path()) {
        let name = unique(label);
        let hook: Hook = Arc::default();
        let m = memo_over(
            Arc::new(Interposer {
                inner: b.clone(),
                hook: hook.clone(),
            }),
            &name,
        );
        let runs = AtomicU64::new(0);
        // A plain miss: the look again after the free lease finds nothing
        // and counts nothing.
        assert_eq!(
            m.call(1u64, |x| {
                runs.fetch_add(1, Ordering::SeqCst);
                x * 11
            }),
            11
        );
        let s = m.stats().unwrap();
        assert_eq!((s.hits, s.misses), (0, 1), "{label}: a plain miss");
        // Another caller stores key 2 between this caller's miss and its
        // lease.
        let other_runs = Arc::new(AtomicU64::new(0));
        let (ob, on, oruns) = (b.clone(), name.clone(), other_runs.clone());
        *hook.lock().unwrap() = Some(Box::new(move || {
            std::thread::spawn(move || {
                memo_over(ob, &on).call(2u64, |x| {
                    oruns.fetch_add(1, Ordering::SeqCst);
                    x * 11
                })
            })
            .join()
            .unwrap();
        }));
        let v = m.call(2u64, |x| {
            runs.fetch_add(1, Ordering::SeqCst);
            x * 11
        });
        let info = m.cache_info();
        println!(
            "lease recheck: {label}: value {v}; runs here {}, there {}; \
             this Memo's hits {} misses {}",
            runs.load(Ordering::SeqCst),
            other_runs.load(Ordering::SeqCst),
            info.hits,
            info.misses
        );
        assert_eq!(v, 22, "{label}");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{label}: computed again");
        assert_eq!(other_runs.load(Ordering::SeqCst), 1, "{label}");
        assert_eq!((info.hits, info.misses), (1, 1), "{label}");
    }
}

//! The Redis backend (feature `redis`).
//!
//! Layout on the server, for a namespace `NS` under the key prefix `P`
//! (default `picocache`); `NS` is escaped so that it holds no `:`, `{`, `}`:
//!
//! - `P:{NS}:meta`: a hash with the limits (`maxsize`, `max_bytes`, `ttl`
//!   in milliseconds, `-1` for none), the counters (`hits`, `misses`,
//!   `evictions`, `bytes`) and the LRU `clock`;
//! - `P:{NS}:lru`: a sorted set of the live keys scored by their last use
//!   (a stamp from the namespace's clock, so the order is exact); a key is
//!   an entry only while this set lists it: a value it does not list (the
//!   server evicted the set under `maxmemory`, so a `CLEAR` could not see
//!   the value) is deleted when read, a miss;
//! - `P:{NS}:exp`: a sorted set of the keys that expire, scored by their
//!   expiry time (server time, milliseconds);
//! - `P:{NS}:sizes`: a hash of each key's size (key + value bytes);
//! - `P:{NS}:v:KEY`: the value (a string, with `PX` when it expires);
//! - `P:{NS}:lease:KEY`: a lease (`SET NX PX` with a random token);
//! - `P:namespaces`: a set of every namespace name.
//!
//! Every operation is one Lua script, so a store and the eviction it causes
//! are one atomic step on the server, and each script first forgets the
//! entries that have expired (so `currsize` is exact). `clear` deletes only
//! its namespace's keys. The scripts address keys they build from the
//! prefix, so this backend needs a standalone server (not Redis Cluster).
//!
//! Connections come from a bounded pool (at most [`RedisOptions::pool_size`]
//! open at once); a connection that broke is dropped, and a call that failed
//! on a pooled connection is retried once on a fresh one, so the backend
//! reconnects by itself when the server comes back. Connecting times out
//! after [`RedisOptions::connect_timeout`], and every operation (all of its
//! commands, a script's `EVALSHA` and `EVAL`, a pool wait) after
//! [`RedisOptions::timeout`] in total (every socket read and write ends by
//! the operation's deadline, on the backend's own connection type,
//! `redis_conn.rs`: an answer that trickles in is cut too), with
//! [`Error::Unavailable`]; after such a failure the backend is skipped for a
//! back-off window (calls fail at once, then one call tries the server again
//! with the same timeouts). Keys plus values above [`RedisOptions::max_value_size`] are not sent
//! ([`Error::TooLarge`]).
//! `rediss://` connects with TLS (rustls, pure Rust; the system's trusted
//! certificates are read at run time by rustls-native-certs):
//! the server's certificate is checked against the system's roots unless the
//! URL ends in `#insecure`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::{Client, ConnectionLike, RedisError};

use crate::backend::{Backend, Lease, Limits, Namespace, Stats};
use crate::{Error, Result};

// The bounded pool, the back-off and the URL's timeout settings are the SQL
// backends' (`sql/guard.rs`); a build without them includes that file here.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
use crate::sql::guard;
#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
#[allow(dead_code)]
#[path = "sql/guard.rs"]
mod guard;

use guard::{BoundedPool, Breaker, Budget, Checked, TimedOut};

#[path = "redis_call.rs"]
mod call;
use call::Timed;

#[path = "redis_conn.rs"]
mod conn;
use conn::{Connector, RedisConn};

#[path = "redis_lua.rs"]
mod lua;
use lua::{escape, limit_arg, ms, Scripts};

const KIND: &str = "redis";

/// Options of a [`RedisBackend`].
///
/// A URL may override the timeouts and the value size limit with query
/// parameters: `redis://host:6379/0?timeout=0.5&connect_timeout=1&max_value_size=1048576`
/// (seconds, fractions allowed; bytes). They win over these fields.
///
/// Every duration longer than a day (`Duration::MAX` included) is taken as
/// a day.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The prefix of every key this backend touches.
    pub prefix: String,
    /// Most connections open at once (idle or in use); a call that finds
    /// them all in use waits up to [`RedisOptions::timeout`] for one.
    pub pool_size: u32,
    /// How long opening a connection may take, handshake included
    /// (default 1 s); the operation that opens it may take this much longer
    /// than [`RedisOptions::timeout`].
    pub connect_timeout: Duration,
    /// How long one operation may take in total (default 1 s): a look-up, a
    /// store, a lease taken or released, a removal, `clear`, `stats`, each
    /// with its wait for a pooled connection and all of its commands (an
    /// operation that opens a connection adds the time that took, at most
    /// [`RedisOptions::connect_timeout`]). Then the operation fails with
    /// [`Error::Unavailable`] and the backend is skipped for a back-off
    /// window. A memoized call that misses makes at most five operations
    /// (look-up, lease, a look again after the lease, store, release);
    /// once one fails, the others fail at once, so the call waits for the
    /// server at most `connect_timeout + 5 * timeout`
    /// (besides a wait for another process's lease, `lease_timeout`).
    pub timeout: Duration,
    /// The first back-off window after the server failed (default 1 s):
    /// calls fail at once with [`Error::Unavailable`] during it; then one
    /// call tries the server (with the same timeouts). Each failed try
    /// doubles the window, up to [`RedisOptions::backoff_max`].
    pub backoff: Duration,
    /// The longest back-off window (default 10 s).
    pub backoff_max: Duration,
    /// How long a lease lives if its holder never releases it (a crashed
    /// client blocks others for at most this long).
    pub lease_ttl: Duration,
    /// The largest key plus value a store sends (default 8 MiB): a larger
    /// one fails with [`Error::TooLarge`] without reaching the server.
    pub max_value_size: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "picocache".to_string(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(60),
            max_value_size: 8 << 20,
        }
    }
}

/// A cache on a Redis server.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    url: String,
    options: RedisOptions,
    pool: BoundedPool<RedisConn>,
    breaker: Breaker,
    scripts: Scripts,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.options.prefix)
            .finish()
    }
}

fn unavailable(e: impl Into<crate::BoxError>) -> Error {
    Error::Unavailable {
        backend: KIND,
        source: e.into(),
    }
}

fn convert(e: RedisError) -> Error {
    // A refused password is the server's answer (a configuration error),
    // not the server being away.
    if e.kind() == ::redis::ErrorKind::AuthenticationFailed {
        return Error::Backend {
            backend: KIND,
            source: e.into(),
        };
    }
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
    {
        unavailable(e)
    } else {
        Error::Backend {
            backend: KIND,
            source: e.into(),
        }
    }
}

/// Hides the password of a URL for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://***@{}", &url[..s], &url[a + 1..]),
        _ => url.to_string(),
    }
}

impl RedisBackend {
    /// Connects to the server at `url` (`redis://[:password@]host[:port][/db]`,
    /// `rediss://...` for TLS, `unix:///path/to/socket`,
    /// `redis+unix:///path?db=N`). Fails with
    /// [`Error::Unavailable`] if the server cannot be reached.
    pub fn connect(url: &str, options: RedisOptions) -> Result<RedisBackend> {
        if options.prefix.is_empty() {
            return Err(Error::InvalidArgument(
                "the Redis key prefix is empty".into(),
            ));
        }
        let (url, settings) = guard::take_url_settings(url)?;
        let url = url.as_str();
        let mut options = options;
        options.timeout = settings.timeout.unwrap_or(options.timeout);
        options.connect_timeout = settings.connect_timeout.unwrap_or(options.connect_timeout);
        options.max_value_size = settings.max_value_size.unwrap_or(options.max_value_size);
        // Durations past a day (`Duration::MAX` for "no limit") are a day.
        for d in [
            &mut options.timeout,
            &mut options.connect_timeout,
            &mut options.backoff,
            &mut options.backoff_max,
            &mut options.lease_ttl,
        ] {
            *d = guard::at_most_a_day(*d);
        }
        let normalized = match url.strip_prefix("unix://") {
            Some(rest) => format!("redis+unix://{rest}"),
            None => url.to_string(),
        };
        let client = Client::open(normalized.as_str())
            .map_err(|e| Error::InvalidArgument(format!("Redis URL {}: {e}", redact(url))))?;
        let backend = RedisBackend {
            inner: Arc::new(Inner {
                connector: Connector::new(client.get_connection_info().clone()),
                url: redact(url),
                pool: BoundedPool::new(KIND, options.pool_size as usize, options.timeout),
                breaker: Breaker::new(KIND, options.backoff, options.backoff_max),
                options,
                scripts: Scripts::new(),
            }),
        };
        // Check the server now, so a wrong URL fails at once.
        backend
            .inner
            .with_conn(|c| c.query::<String>(&::redis::cmd("PING")))?;
        Ok(backend)
    }

    /// Connects to `host:port`, database `db`, with an optional password
    /// (and user: `Some("user:password")` uses Redis 6 ACLs).
    pub fn connect_host(
        host: &str,
        port: u16,
        db: u32,
        password: Option<&str>,
        options: RedisOptions,
    ) -> Result<RedisBackend> {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let auth = match password {
            Some(p) => match p.split_once(':') {
                Some((user, pw)) => format!("{}:{}@", enc(user), enc(pw)),
                None => format!(":{}@", enc(p)),
            },
            None => String::new(),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Self::connect(&format!("redis://{auth}{host}:{port}/{db}"), options)
    }

    /// The options this backend was opened with (with the URL's settings).
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// Whether calls skip the server now: it failed, and its back-off window
    /// has not ended.
    pub fn is_backing_off(&self) -> bool {
        self.inner.breaker.is_down()
    }
}

impl Inner {
    fn fresh(&self) -> Result<RedisConn> {
        self.connector
            .connect(self.options.connect_timeout)
            .map_err(|e| self.convert(e, "connecting", self.options.connect_timeout))
    }

    /// [`convert`], with a timeout reported as [`TimedOut`].
    fn convert(&self, e: RedisError, what: &'static str, after: Duration) -> Error {
        if e.is_timeout() {
            return guard::unavailable(KIND, TimedOut { what, after });
        }
        convert(e)
    }

    /// Runs `f` on a pooled connection, as one operation: the wait for the
    /// connection and every command `f` sends end within
    /// [`RedisOptions::timeout`] (plus the connecting time of a new
    /// connection). On a connection failure (not a timeout) of a pooled
    /// connection, drops the idle connections and retries once on a fresh
    /// connection, within the same deadline. Fails at once while the
    /// backend is in its back-off window.
    fn with_conn<T>(&self, f: impl Fn(&mut Timed<'_>) -> ::redis::RedisResult<T>) -> Result<T> {
        let budget = Budget::new(self.options.timeout);
        self.breaker.call(|| {
            let connect = || budget.connecting(|| self.fresh());
            let mut conn = self.pool.checkout_by(budget.deadline(), connect)?;
            match f(&mut Timed::new(conn.conn(), budget.deadline())) {
                Ok(v) => {
                    self.put_back(conn);
                    Ok(v)
                }
                Err(e) => {
                    let timed_out = e.is_timeout();
                    let err = self.convert(e, "a command", self.options.timeout);
                    if !matches!(err, Error::Unavailable { .. }) {
                        self.put_back(conn);
                        return Err(err);
                    }
                    // The server went away: every idle connection is suspect.
                    let reused = conn.reused;
                    drop(conn);
                    self.pool.clear_idle();
                    if !reused || timed_out {
                        return Err(err);
                    }
                    let mut conn = self.pool.checkout_by(budget.deadline(), connect)?;
                    let v = f(&mut Timed::new(conn.conn(), budget.deadline()))
                        .map_err(|e| self.convert(e, "a command", self.options.timeout))?;
                    self.put_back(conn);
                    Ok(v)
                }
            }
        })
    }

    fn put_back(&self, mut conn: Checked<'_, RedisConn>) {
        if conn.conn().is_open() {
            conn.put_back();
        }
    }

    fn registry(&self) -> String {
        format!("{}:namespaces", self.options.prefix)
    }
}

impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn namespace(&self, name: &str, limits: Limits) -> Result<Arc<dyn Namespace>> {
        let pre = format!("{}:{{{}}}:", self.inner.options.prefix, escape(name));
        let registry = self.inner.registry();
        self.inner.with_conn(|c| {
            c.eval::<i64>(&self.inner.scripts.set_limits, 0, |cmd| {
                cmd.arg(&pre)
                    .arg(limit_arg(limits.maxsize))
                    .arg(limit_arg(limits.max_bytes))
                    .arg(limits.ttl.map_or(-1, ms))
                    .arg(&registry)
                    .arg(name);
            })
        })?;
        Ok(Arc::new(RedisNamespace {
            inner: self.inner.clone(),
            name: name.to_string(),
            pre,
            registry,
            limits,
        }))
    }

    fn namespace_names(&self) -> Result<Vec<String>> {
        let registry = self.inner.registry();
        let mut names: Vec<String> = self
            .inner
            .with_conn(|c| c.query(::redis::cmd("SMEMBERS").arg(&registry)))?;
        names.sort();
        Ok(names)
    }
}

/// A namespace of a [`RedisBackend`].
pub struct RedisNamespace {
    inner: Arc<Inner>,
    name: String,
    pre: String,
    registry: String,
    /// The limits this handle was opened with, restored if the server lost
    /// the namespace's record.
    limits: Limits,
}

impl fmt::Debug for RedisNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisNamespace")
            .field("name", &self.name)
            .finish()
    }
}

struct RedisLease {
    inner: Arc<Inner>,
    key: Vec<u8>,
    token: String,
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        let r = self.inner.with_conn(|c| {
            c.eval::<i64>(&self.inner.scripts.release, 1, |cmd| {
                cmd.arg(&self.key[..]).arg(&self.token);
            })
        });
        match r {
            Ok(_) | Err(Error::Unavailable { .. }) => {}
            Err(e) => {
                log::warn!("picocache: releasing a Redis lease failed (it expires by itself): {e}")
            }
        }
    }
}

fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = format!(
        "{}:{nanos}:{n}:{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(seed.as_bytes()))
}

impl Namespace for RedisNamespace {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_many(&[key])?.pop().flatten())
    }

    fn recheck(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.with_conn(|c| {
            c.eval(&self.inner.scripts.recheck, 0, |cmd| {
                cmd.arg(&self.pre).arg(key);
            })
        })
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let out: Vec<Option<Vec<u8>>> = self.inner.with_conn(|c| {
            c.eval(&self.inner.scripts.get, 0, |cmd| {
                cmd.arg(&self.pre);
                for k in keys {
                    cmd.arg(*k);
                }
            })
        })?;
        if out.len() != keys.len() {
            return Err(Error::Backend {
                backend: KIND,
                source: format!(
                    "GET script returned {} values for {} keys",
                    out.len(),
                    keys.len()
                )
                .into(),
            });
        }
        Ok(out)
    }

    fn put(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.put_many(&[(key, value)], ttl)
    }

    fn put_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let limit = self.inner.options.max_value_size;
        for (k, v) in items {
            let size = k.len() + v.len();
            if size > limit {
                return Err(Error::TooLarge {
                    backend: KIND,
                    size,
                    limit: Some(limit),
                    source: None,
                });
            }
        }
        self.inner.with_conn(|c| {
            c.eval::<i64>(&self.inner.scripts.put, 0, |cmd| {
                cmd.arg(&self.pre).arg(ttl.map_or(-1, ms));
                let l = &self.limits;
                cmd.arg(limit_arg(l.maxsize))
                    .arg(limit_arg(l.max_bytes))
                    .arg(l.ttl.map_or(-1, ms))
                    .arg(&self.registry)
                    .arg(&self.name);
                for (k, v) in items {
                    cmd.arg(*k).arg(*v);
                }
            })
        })?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<bool> {
        let n: i64 = self.inner.with_conn(|c| {
            c.eval(&self.inner.scripts.remove, 0, |cmd| {
                cmd.arg(&self.pre).arg(key);
            })
        })?;
        Ok(n == 1)
    }

    fn clear(&self) -> Result<()> {
        self.inner.with_conn(|c| {
            c.eval::<i64>(&self.inner.scripts.clear, 0, |cmd| {
                cmd.arg(&self.pre);
            })
        })?;
        Ok(())
    }

    fn stats(&self) -> Result<Stats> {
        let v: Vec<i64> = self.inner.with_conn(|c| {
            c.eval(&self.inner.scripts.stats, 0, |cmd| {
                cmd.arg(&self.pre);
            })
        })?;
        let at = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(Stats {
            entries: at(0),
            bytes: at(1),
            hits: at(2),
            misses: at(3),
            evictions: at(4),
            rejected: 0,
        })
    }

    fn limits(&self) -> Result<Limits> {
        let meta = format!("{}meta", self.pre);
        let v: Vec<Option<i64>> = self.inner.with_conn(|c| {
            c.query(
                ::redis::cmd("HMGET")
                    .arg(&meta)
                    .arg("maxsize")
                    .arg("max_bytes")
                    .arg("ttl"),
            )
        })?;
        let get = |i: usize| v.get(i).copied().flatten().filter(|n| *n >= 0);
        Ok(Limits {
            maxsize: get(0).map(|n| n as u64),
            max_bytes: get(1).map(|n| n as u64),
            ttl: get(2).map(|n| Duration::from_millis(n as u64)),
        })
    }

    fn lease(&self, key: &[u8], wait: Duration) -> Result<Option<Lease>> {
        let mut lkey = format!("{}lease:", self.pre).into_bytes();
        lkey.extend_from_slice(key);
        let token = token();
        let ttl = ms(self.inner.options.lease_ttl).max(1);
        let taken = crate::backend::poll(wait, || {
            let got: Option<String> = self.inner.with_conn(|c| {
                c.query(
                    ::redis::cmd("SET")
                        .arg(&lkey[..])
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl),
                )
            })?;
            Ok(got.map(|_| ()))
        })?;
        Ok(taken.map(|()| {
            Lease(Box::new(RedisLease {
                inner: self.inner.clone(),
                key: lkey,
                token,
            }))
        }))
    }
}

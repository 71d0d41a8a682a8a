//! The SQL backends: SQLite, PostgreSQL and MySQL/MariaDB (features
//! `sqlite`, `postgres`, `mysql`).
//!
//! Schema, for a table name `T` (default `picocache`, any identifier):
//!
//! - `T`: one row per entry: namespace id, a 128-bit hash of the key (the
//!   primary key is `(ns, kh)`, so keys of any length index well), the key
//!   and the value as binary, their size, the last access stamp (`atime`,
//!   microseconds) and the expiry (milliseconds since the epoch, or NULL);
//!   indexes on `(ns, atime)` (eviction) and `(ns, expires)` (expiry);
//! - `T_ns`: one row per namespace: its id (a 64-bit hash of the name), name,
//!   limits, and the counters (entries, bytes, hits, misses, evictions) that
//!   every client shares;
//! - `T_meta`: the schema version; `T_lease`: the leases (one row each).
//!
//! Every write is one transaction that first locks its namespace's row
//! (`SELECT ... FOR UPDATE`; SQLite: `BEGIN IMMEDIATE`), so the store, the
//! eviction it causes and the counters move together and concurrent clients
//! never over- or under-evict. A hit is a plain `SELECT`: its access-time
//! update and its hit count wait in memory and are written in one
//! transaction every [`FLUSH_EVERY`] hits or [`FLUSH_AFTER`], before any write
//! of the namespace, and before [`Namespace::stats`]. The LRU order is thus
//! exact within a client and approximate across clients (a hit of another
//! client counts once that client flushes).
//!
//! Leases: a row in `T_lease` that expires after [`SqlOptions::lease_ttl`]
//! (see the `lease` module): no connection is held while a lease is.
//!
//! Bounds: at most [`SqlOptions::pool_size`] connections are open at once.
//! Every operation (a look-up with the flush of buffered hits it may do, a
//! store, a lease taken or released, a removal, `clear`, `stats`, opening a
//! namespace) has one deadline, [`SqlOptions::timeout`] after it starts:
//! its wait for a pooled connection and each of its statements get what is
//! left, so it ends within the timeout however many round trips it makes
//! (one that opens a connection adds the connecting time, at most
//! [`SqlOptions::connect_timeout`]; opening the backend, which connects and
//! creates the schema, also ends within `connect_timeout + timeout`). Past
//! the deadline it fails with [`Error::Unavailable`], and the backend is
//! skipped for a back-off window (calls fail at once; one call then tries
//! again with the same timeouts). So a server that hangs, or answers each
//! statement just in time, costs one operation at most
//! `connect_timeout + timeout`, and a memoized call that misses (at most five
//! operations: look-up, lease, a look again, store, release; the others
//! fail at once after one failed) at most `connect_timeout + 5 * timeout`
//! per window.
//!
//! Round trips of a memoized miss on PostgreSQL: 10 (9 measured through a
//! slow link, `tests/tests/deadline.rs`, before the look again after a lease
//! taken at once was added): the look-up, the lease (one upsert), the look
//! again, the store (`BEGIN`, the namespace row locked, expired entries
//! deleted, the entry stored with its old size read in the same statement,
//! the counters, `COMMIT`; each batch of evictions one
//! `DELETE ... RETURNING`), the release. MySQL: 11 (it has no `RETURNING`: a store reads the old
//! size first, an eviction its victims).
//! Keys plus values above [`SqlOptions::max_value_size`] are not sent
//! ([`Error::TooLarge`]), nor is a value the server refused as too large
//! (MySQL's `max_allowed_packet`) a reason to skip the server.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::backend::{Backend, Limits, Namespace};
use crate::{Error, Result};

mod conn;
pub mod fork;
pub(crate) mod guard;
mod lease;
#[cfg(feature = "mysql")]
mod mysql;
mod namespace;
mod pool;
#[cfg(feature = "postgres")]
mod postgres;
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod url;

pub(crate) use conn::{transaction, Conn, Dialect, Driver, Retryable, Val};
pub use namespace::SqlNamespace;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod worker;

/// Hits whose access-time update is buffered before a flush.
pub const FLUSH_EVERY: usize = 256;
/// Longest time a buffered access-time update waits (checked on each call).
pub const FLUSH_AFTER: Duration = Duration::from_millis(250);
/// The default of [`SqlOptions::lease_ttl`]: how long a lease lives if its
/// holder never releases it (the name is historical: every dialect uses it).
pub const SQLITE_LEASE_TTL: Duration = Duration::from_secs(60);
/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// Options of a [`SqlBackend`].
///
/// A URL may override the timeouts and the value size limit with query
/// parameters: `?timeout=0.5&connect_timeout=1&max_value_size=1048576`
/// (seconds, fractions allowed; bytes). They are taken out of the URL before
/// it reaches the driver, and win over these fields.
///
/// Every duration longer than a day (`Duration::MAX` included) is taken as
/// a day.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// The entries table (the other tables are named after it); an
    /// identifier: ASCII letters, digits and `_`, not starting with a digit.
    pub table: String,
    /// Most connections open at once (idle or in use); a call that finds
    /// them all in use waits up to [`SqlOptions::timeout`] for one.
    pub pool_size: u32,
    /// How long opening a connection may take (default 1 s), handshake,
    /// login and session settings included; an operation that opens one may
    /// take this much longer than [`SqlOptions::timeout`]. For SQLite, the
    /// floor of the busy timeout.
    pub connect_timeout: Duration,
    /// How long one operation may take in total (default 1 s): a look-up, a
    /// store, a lease taken or released, a removal, `clear`, `stats`, each
    /// with its wait for a pooled connection and all of its statements.
    /// Then it fails with [`Error::Unavailable`] and the backend is skipped
    /// for a back-off window (see the [module docs](self)). For SQLite, a
    /// value other than the default 1 s also bounds its busy waits (another
    /// connection holding the write lock); at the default, SQLite waits up
    /// to 10 s for a lock, as `SQLiteCache` always does.
    pub timeout: Duration,
    /// The first back-off window after the server failed (default 1 s):
    /// calls fail at once with [`Error::Unavailable`] during it; then one
    /// call tries the server (with the same timeouts). Each failed try
    /// doubles the window, up to [`SqlOptions::backoff_max`].
    pub backoff: Duration,
    /// The longest back-off window (default 10 s).
    pub backoff_max: Duration,
    /// How long a lease lives if its holder never releases it (a crashed
    /// client blocks others for at most this long; default 60 s).
    pub lease_ttl: Duration,
    /// The largest key plus value a store sends (default
    /// [`DEFAULT_MAX_VALUE_SIZE`]): a larger one fails with
    /// [`Error::TooLarge`] without reaching the server.
    pub max_value_size: usize,
}

/// The default of [`SqlOptions::max_value_size`] and
/// [`RedisOptions::max_value_size`](crate::RedisOptions::max_value_size):
/// 8 MiB (MariaDB's and MySQL's default `max_allowed_packet` is 16 MiB).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 8 << 20;

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            table: "picocache".to_string(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            lease_ttl: SQLITE_LEASE_TTL,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A strictly increasing (in this process) access stamp, in microseconds.
fn stamp() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

fn key_hash(key: &[u8]) -> Vec<u8> {
    xxhash_rust::xxh3::xxh3_128(key).to_le_bytes().to_vec()
}

fn ns_id(name: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes()) as i64
}

fn opt_i64(v: Option<u64>) -> Val {
    v.map_or(Val::Null, |n| {
        Val::Int(i64::try_from(n).unwrap_or(i64::MAX))
    })
}

fn ttl_ms(d: Duration) -> i64 {
    let m = d.as_millis();
    let m = if m == 0 && !d.is_zero() { 1 } else { m };
    i64::try_from(m).unwrap_or(i64::MAX)
}

/// Checks that `name` is a plain SQL identifier.
fn validate_table(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "SQL table name {name:?} is not an identifier (ASCII letters, digits, _; at most 48)"
        )))
    }
}

/// The statements of one dialect and table.
struct Sql {
    dialect: Dialect,
    t: String,
    ns: String,
    meta: String,
    lease: String,
    for_update: &'static str,
}

/// Hits not yet written: access stamps and counters, per namespace id.
#[derive(Default)]
struct Pending {
    touches: HashMap<i64, HashMap<Vec<u8>, i64>>,
    counts: HashMap<i64, (i64, i64)>,
    n: usize,
    since: Option<Instant>,
}

impl Pending {
    fn take_ns(&mut self, id: i64) -> (HashMap<Vec<u8>, i64>, (i64, i64)) {
        let t = self.touches.remove(&id).unwrap_or_default();
        let c = self.counts.remove(&id).unwrap_or_default();
        self.n = self.n.saturating_sub(t.len());
        if self.touches.is_empty() && self.counts.is_empty() {
            self.n = 0;
            self.since = None;
        }
        (t, c)
    }
}

struct Shared {
    pool: pool::Pool,
    lease_ttl: Duration,
    max_value_size: usize,
    sql: Sql,
    table: String,
    pending: Mutex<Pending>,
    commits: std::sync::atomic::AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Never a panic out of a destructor: one during another panic's
        // unwinding (a backend dropped half made) aborts the process.
        let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.flush_all()));
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!(
                "picocache: flushing buffered hits to {} failed: {e}",
                self.kind()
            ),
            Err(_) => log::warn!(
                "picocache: flushing buffered hits to {} panicked; they are lost",
                self.kind()
            ),
        }
    }
}

/// The namespace row, locked.
struct NsRow {
    maxsize: Option<i64>,
    max_bytes: Option<i64>,
    ttl_ms: Option<i64>,
    entries: i64,
    bytes: i64,
    evicted: i64,
}

impl Shared {
    fn kind(&self) -> &'static str {
        self.sql.dialect.kind()
    }

    fn backend_err(&self, msg: String) -> Error {
        Error::Backend {
            backend: self.kind(),
            source: msg.into(),
        }
    }

    /// Runs `f` in a transaction, within one operation's budget.
    fn tx<T>(&self, f: impl FnMut(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.tx_in(&self.pool.budget(), f)
    }

    /// [`Shared::tx`] within what is left of `budget`.
    fn tx_in<T>(
        &self,
        budget: &guard::Budget,
        mut f: impl FnMut(&mut dyn Conn) -> Result<T>,
    ) -> Result<T> {
        let dialect = self.sql.dialect;
        let v = self
            .pool
            .with_conn_in(budget, |c| transaction(c, dialect, &mut f))?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(v)
    }
}

/// A cache in an SQL database: SQLite, PostgreSQL or MySQL/MariaDB.
#[derive(Clone)]
pub struct SqlBackend {
    shared: Arc<Shared>,
}

impl fmt::Debug for SqlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlBackend")
            .field("database", &self.shared.pool.driver.describe())
            .field("table", &self.shared.table)
            .finish()
    }
}

impl SqlBackend {
    /// Connects to the database `url` names and creates the tables if they
    /// are missing. URLs: `sqlite:///relative.db`, `sqlite:////abs/path.db`,
    /// `sqlite://path.db`; `postgresql://user:pw@host:port/db` (also
    /// `postgres://`, `postgresql+psycopg://`, `postgresql+psycopg2://`);
    /// `mysql://user:pw@host:port/db` (also `mariadb://`, `mysql+pymysql://`,
    /// `mysql+mysqldb://`).
    pub fn connect(url: &str, options: SqlOptions) -> Result<SqlBackend> {
        validate_table(&options.table)?;
        let (url, settings) = guard::take_url_settings(url)?;
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
        let driver = url::driver(&url, &options)?;
        let dialect = driver.dialect();
        let mut shared = Shared {
            pool: pool::Pool::new(driver, &options),
            lease_ttl: options.lease_ttl,
            max_value_size: options.max_value_size,
            sql: Sql::new(dialect, &options.table),
            table: options.table.clone(),
            pending: Mutex::new(Pending::default()),
            commits: std::sync::atomic::AtomicU64::new(0),
        };
        if shared.holds_v14_table()? {
            // picocache 1.4's table: this backend's tables go beside it.
            let table = format!("{}_v2", options.table);
            validate_table(&table)?;
            shared.sql = Sql::new(dialect, &table);
            shared.table = table;
        }
        let shared = Arc::new(shared);
        shared.ensure_schema()?;
        #[cfg(feature = "sqlite")]
        if dialect == Dialect::Sqlite {
            fork::register(&shared);
        }
        Ok(SqlBackend { shared })
    }

    /// The most connections this backend opens at once
    /// ([`SqlOptions::pool_size`]).
    pub fn pool_size(&self) -> usize {
        self.shared.pool.max()
    }

    /// Whether calls skip the server now: it failed, and its back-off window
    /// has not ended.
    pub fn is_backing_off(&self) -> bool {
        self.shared.pool.is_down()
    }

    /// Writes the buffered access-time updates and hit counts now.
    pub fn flush(&self) -> Result<()> {
        self.shared.flush_all()
    }

    /// How many write transactions this backend has committed (not counting
    /// SQLite leases): a diagnostic that shows hits are not written one by
    /// one.
    pub fn write_transactions(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }
}

impl Backend for SqlBackend {
    fn kind(&self) -> &'static str {
        self.shared.kind()
    }

    fn namespace(&self, name: &str, limits: Limits) -> Result<Arc<dyn Namespace>> {
        let s = &self.shared;
        let id = ns_id(name);
        // Buffered hits of this namespace count before the new limits evict.
        let (touches, counts) = s.pending.lock().take_ns(id);
        s.tx(|c| {
            c.exec(
                &s.sql.insert_ignore(&s.sql.ns, "id, name", 2),
                &[Val::Int(id), Val::Text(name.into())],
            )?;
            let rows = c.query(
                &format!("SELECT name FROM {} WHERE id = ?", s.sql.ns),
                &[Val::Int(id)],
            )?;
            let stored = rows
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .map(Val::bytes);
            if stored.as_deref() != Some(name.as_bytes()) {
                return Err(Error::InvalidArgument(format!(
                    "namespace {name:?} collides with namespace {:?} (same 64-bit hash)",
                    stored.map(|b| String::from_utf8_lossy(&b).into_owned())
                )));
            }
            let mut row = s.lock_ns(c, id)?;
            row.maxsize = limits.maxsize.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
            row.max_bytes = limits
                .max_bytes
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
            row.ttl_ms = limits.ttl.map(ttl_ms);
            c.exec(
                &format!(
                    "UPDATE {} SET maxsize = ?, max_bytes = ?, ttl_ms = ? WHERE id = ?",
                    s.sql.ns
                ),
                &[
                    opt_i64(limits.maxsize),
                    opt_i64(limits.max_bytes),
                    limits.ttl.map_or(Val::Null, |d| Val::Int(ttl_ms(d))),
                    Val::Int(id),
                ],
            )?;
            s.write_touches(c, id, &touches)?;
            s.purge(c, id, &mut row, now_ms())?;
            s.evict(c, id, &mut row)?;
            s.save_ns(c, id, &row, counts)
        })?;
        Ok(Arc::new(SqlNamespace {
            shared: self.shared.clone(),
            name: name.to_string(),
            id,
        }))
    }

    fn namespace_names(&self) -> Result<Vec<String>> {
        let s = &self.shared;
        let rows = s
            .pool
            .with_conn(|c| c.query(&format!("SELECT name FROM {} ORDER BY name", s.sql.ns), &[]))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .map(|v| String::from_utf8_lossy(&v.bytes()).into_owned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for ok in ["picocache", "_x", "Cache_2"] {
            assert!(validate_table(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1x", "a-b", "a b", "x;DROP", "t\"", &"x".repeat(49)] {
            assert!(validate_table(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stamps_increase() {
        let mut last = stamp();
        for _ in 0..1000 {
            let s = stamp();
            assert!(s > last);
            last = s;
        }
    }
}

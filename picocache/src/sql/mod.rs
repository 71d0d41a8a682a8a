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
//! Round trips of a memoized miss on PostgreSQL: 9 (measured through a slow
//! link, `tests/tests/deadline.rs`): the look-up, the lease (one upsert),
//! the store (`BEGIN`, the namespace row locked, expired entries deleted,
//! the entry stored with its old size read in the same statement, the
//! counters, `COMMIT`; each batch of evictions one `DELETE ... RETURNING`),
//! the release. MySQL: 10 (it has no `RETURNING`: a store reads the old
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

use crate::backend::{Backend, Lease, Limits, Namespace, Stats};
use crate::{BoxError, Error, Result};

pub(crate) mod guard;
mod lease;
#[cfg(feature = "mysql")]
mod mysql;
mod pool;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod url;
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
    /// for a back-off window (see the [module docs](self)). Not used by
    /// SQLite (a local file) but as the floor of its pool wait.
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

/// The SQL dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    fn kind(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgresql",
            Dialect::Mysql => "mysql",
        }
    }
}

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
}

impl Val {
    fn int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::Text(s) => s.parse().ok(),
            Val::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Val::Null => None,
        }
    }
    fn bytes(self) -> Vec<u8> {
        match self {
            Val::Bytes(b) => b,
            Val::Text(s) => s.into_bytes(),
            Val::Int(i) => i.to_string().into_bytes(),
            Val::Null => Vec::new(),
        }
    }
}

/// Marks an error as worth retrying the transaction (deadlock, serialization).
#[derive(Debug)]
pub(crate) struct Retryable(pub BoxError);

impl fmt::Display for Retryable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (retryable)", self.0)
    }
}

impl std::error::Error for Retryable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

fn is_retryable(e: &Error) -> bool {
    matches!(e, Error::Backend { source, .. } if source.is::<Retryable>())
}

/// One connection of a driver.
pub(crate) trait Conn: Send {
    /// Runs a statement with `?` placeholders; the rows it changed.
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64>;
    /// Runs a query with `?` placeholders; its rows.
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>>;
    /// Runs parameterless statements (DDL, BEGIN, COMMIT).
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// Whether the connection is unusable.
    fn broken(&self) -> bool;
    /// Marks the connection unusable.
    fn poison(&mut self);
    /// Sets when the current operation must have ended: each later
    /// statement waits at most the time left, and one that would start
    /// after it fails as a timeout (SQLite, a local file, ignores it).
    fn set_deadline(&mut self, _deadline: Instant) {}
}

/// Opens connections of one database.
pub(crate) trait Driver: Send + Sync {
    fn dialect(&self) -> Dialect;
    fn connect(&self) -> Result<Box<dyn Conn>>;
    /// The database's address without password, for messages.
    fn describe(&self) -> String;
}

/// Runs `f` in a transaction on `conn`, retrying a few times on deadlocks.
fn transaction<T>(
    conn: &mut dyn Conn,
    dialect: Dialect,
    mut f: impl FnMut(&mut dyn Conn) -> Result<T>,
) -> Result<T> {
    let begin = match dialect {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
        Dialect::Mysql => "START TRANSACTION",
    };
    let mut tries = 0;
    loop {
        tries += 1;
        conn.batch(begin)?;
        let r = f(conn).and_then(|v| conn.batch("COMMIT").map(|()| v));
        match r {
            Ok(v) => return Ok(v),
            Err(e) => {
                // A connection that broke or timed out is not asked to roll
                // back (that would wait for it again): closing it does.
                if conn.broken() || conn.batch("ROLLBACK").is_err() {
                    conn.poison();
                    return Err(e);
                }
                if !is_retryable(&e) || tries >= 5 {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(2 * tries));
            }
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

impl Sql {
    fn new(dialect: Dialect, table: &str) -> Sql {
        let q = |s: &str| match dialect {
            Dialect::Mysql => format!("`{s}`"),
            _ => format!("\"{s}\""),
        };
        Sql {
            dialect,
            t: q(table),
            ns: q(&format!("{table}_ns")),
            meta: q(&format!("{table}_meta")),
            lease: q(&format!("{table}_lease")),
            for_update: if dialect == Dialect::Sqlite {
                ""
            } else {
                " FOR UPDATE"
            },
        }
    }

    fn schema(&self, table: &str) -> Vec<String> {
        let Sql {
            t, ns, meta, lease, ..
        } = self;
        match self.dialect {
            Dialect::Sqlite => vec![
                format!("CREATE TABLE IF NOT EXISTS {meta} (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ns} (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, \
                     maxsize INTEGER, max_bytes INTEGER, ttl_ms INTEGER, \
                     entries INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0, \
                     hits INTEGER NOT NULL DEFAULT 0, misses INTEGER NOT NULL DEFAULT 0, \
                     evictions INTEGER NOT NULL DEFAULT 0)"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (ns INTEGER NOT NULL, kh BLOB NOT NULL, \
                     k BLOB NOT NULL, v BLOB NOT NULL, size INTEGER NOT NULL, \
                     atime INTEGER NOT NULL, expires INTEGER, PRIMARY KEY (ns, kh))"
                ),
                format!("CREATE INDEX IF NOT EXISTS \"{table}_lru\" ON {t} (ns, atime)"),
                format!("CREATE INDEX IF NOT EXISTS \"{table}_exp\" ON {t} (ns, expires)"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {lease} (name BLOB PRIMARY KEY, \
                     token TEXT NOT NULL, expires INTEGER NOT NULL)"
                ),
            ],
            Dialect::Postgres => vec![
                format!("CREATE TABLE IF NOT EXISTS {meta} (k TEXT PRIMARY KEY, v BIGINT NOT NULL)"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ns} (id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE, \
                     maxsize BIGINT, max_bytes BIGINT, ttl_ms BIGINT, \
                     entries BIGINT NOT NULL DEFAULT 0, bytes BIGINT NOT NULL DEFAULT 0, \
                     hits BIGINT NOT NULL DEFAULT 0, misses BIGINT NOT NULL DEFAULT 0, \
                     evictions BIGINT NOT NULL DEFAULT 0)"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (ns BIGINT NOT NULL, kh BYTEA NOT NULL, \
                     k BYTEA NOT NULL, v BYTEA NOT NULL, size BIGINT NOT NULL, \
                     atime BIGINT NOT NULL, expires BIGINT, PRIMARY KEY (ns, kh))"
                ),
                format!("CREATE INDEX IF NOT EXISTS \"{table}_lru\" ON {t} (ns, atime)"),
                format!("CREATE INDEX IF NOT EXISTS \"{table}_exp\" ON {t} (ns, expires)"),
                // Unlogged: a lease costs no WAL flush, and a crash (which
                // empties the table) only frees leases early.
                format!(
                    "CREATE UNLOGGED TABLE IF NOT EXISTS {lease} (name BYTEA PRIMARY KEY, \
                     token TEXT NOT NULL, expires BIGINT NOT NULL)"
                ),
            ],
            Dialect::Mysql => vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {meta} (k VARCHAR(64) NOT NULL PRIMARY KEY, \
                     v BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ns} (id BIGINT NOT NULL PRIMARY KEY, \
                     name VARCHAR(255) NOT NULL, \
                     maxsize BIGINT NULL, max_bytes BIGINT NULL, ttl_ms BIGINT NULL, \
                     entries BIGINT NOT NULL DEFAULT 0, bytes BIGINT NOT NULL DEFAULT 0, \
                     hits BIGINT NOT NULL DEFAULT 0, misses BIGINT NOT NULL DEFAULT 0, \
                     evictions BIGINT NOT NULL DEFAULT 0, UNIQUE KEY `{table}_ns_name` (name)) \
                     ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (ns BIGINT NOT NULL, kh VARBINARY(16) NOT NULL, \
                     k LONGBLOB NOT NULL, v LONGBLOB NOT NULL, size BIGINT NOT NULL, \
                     atime BIGINT NOT NULL, expires BIGINT NULL, PRIMARY KEY (ns, kh), \
                     INDEX `{table}_lru` (ns, atime), INDEX `{table}_exp` (ns, expires)) \
                     ENGINE=InnoDB"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {lease} (name VARBINARY(16) NOT NULL PRIMARY KEY, \
                     token VARCHAR(64) NOT NULL, expires BIGINT NOT NULL) ENGINE=InnoDB"
                ),
            ],
        }
    }

    fn insert_ignore(&self, table: &str, cols: &str, n: usize) -> String {
        let marks = vec!["?"; n].join(", ");
        match self.dialect {
            Dialect::Sqlite => format!("INSERT OR IGNORE INTO {table} ({cols}) VALUES ({marks})"),
            Dialect::Postgres => {
                format!("INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING")
            }
            Dialect::Mysql => format!("INSERT IGNORE INTO {table} ({cols}) VALUES ({marks})"),
        }
    }

    fn upsert_entry(&self) -> String {
        let t = &self.t;
        let cols = "(ns, kh, k, v, size, atime, expires) VALUES (?, ?, ?, ?, ?, ?, ?)";
        match self.dialect {
            Dialect::Sqlite | Dialect::Postgres => format!(
                "INSERT INTO {t} {cols} ON CONFLICT (ns, kh) DO UPDATE SET k = excluded.k, \
                 v = excluded.v, size = excluded.size, atime = excluded.atime, \
                 expires = excluded.expires"
            ),
            Dialect::Mysql => format!(
                "INSERT INTO {t} {cols} ON DUPLICATE KEY UPDATE k = VALUES(k), v = VALUES(v), \
                 size = VALUES(size), atime = VALUES(atime), expires = VALUES(expires)"
            ),
        }
    }
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
        if let Err(e) = self.flush_all() {
            log::warn!(
                "picocache: flushing buffered hits to {} failed: {e}",
                self.kind()
            );
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

    fn ensure_schema(&self) -> Result<()> {
        let stmts = self.sql.schema(&self.table);
        // Connecting and every try: one operation (connect_timeout + timeout).
        let budget = self.pool.budget();
        let mut tries = 0;
        loop {
            tries += 1;
            let r = self.pool.with_conn_in(&budget, |c| {
                self.create_tables(c, &stmts)?;
                let meta = &self.sql.meta;
                c.exec(
                    &self.sql.insert_ignore(meta, "k, v", 2),
                    &[Val::Text("schema".into()), Val::Int(SCHEMA_VERSION)],
                )?;
                let rows = c.query(
                    &format!("SELECT v FROM {meta} WHERE k = ?"),
                    &[Val::Text("schema".into())],
                )?;
                Ok(rows.first().and_then(|r| r.first()).and_then(Val::int))
            });
            match r {
                Ok(Some(v)) if v <= SCHEMA_VERSION => return Ok(()),
                Ok(v) => {
                    return Err(self.backend_err(format!(
                        "table {} has schema version {v:?}; this picocache reads version {SCHEMA_VERSION}",
                        self.table
                    )))
                }
                Err(e @ Error::Unavailable { .. }) => return Err(e),
                Err(e) if tries >= 3 => return Err(e),
                Err(e) => {
                    log::info!("picocache: creating the {} schema: {e}; trying again", self.kind());
                    std::thread::sleep(Duration::from_millis(50 * tries))
                }
            }
        }
    }

    /// Runs the `CREATE ... IF NOT EXISTS` statements. PostgreSQL's is not
    /// safe against a concurrent one (both may insert the same `pg_type`
    /// row: a unique violation), so there the statements run in one
    /// transaction holding an advisory lock of the table name: processes
    /// that start together create the schema one after the other, and
    /// quietly (no "already exists, skipping" notices).
    fn create_tables(&self, c: &mut dyn Conn, stmts: &[String]) -> Result<()> {
        if self.sql.dialect != Dialect::Postgres {
            return stmts.iter().try_for_each(|s| c.batch(s));
        }
        let key = xxhash_rust::xxh3::xxh3_64(format!("picocache schema {}", self.table).as_bytes())
            as i64;
        // One round trip: the statements hold no parameters.
        let all = format!(
            "BEGIN; SET LOCAL client_min_messages = warning; \
             SELECT pg_advisory_xact_lock({key}); {}; COMMIT",
            stmts.join("; ")
        );
        c.batch(&all).inspect_err(|_| {
            if c.broken() || c.batch("ROLLBACK").is_err() {
                c.poison();
            }
        })
    }

    fn lock_ns(&self, c: &mut dyn Conn, id: i64) -> Result<NsRow> {
        let rows = c.query(
            &format!(
                "SELECT maxsize, max_bytes, ttl_ms, entries, bytes FROM {} WHERE id = ?{}",
                self.sql.ns, self.sql.for_update
            ),
            &[Val::Int(id)],
        )?;
        let r = rows.into_iter().next().ok_or_else(|| {
            self.backend_err(format!("namespace {id} vanished from {}", self.sql.ns))
        })?;
        let g = |i: usize| r.get(i).and_then(Val::int);
        Ok(NsRow {
            maxsize: g(0),
            max_bytes: g(1),
            ttl_ms: g(2),
            entries: g(3).unwrap_or(0),
            bytes: g(4).unwrap_or(0),
            evicted: 0,
        })
    }

    fn save_ns(&self, c: &mut dyn Conn, id: i64, row: &NsRow, counts: (i64, i64)) -> Result<()> {
        c.exec(
            &format!(
                "UPDATE {} SET entries = ?, bytes = ?, evictions = evictions + ?, \
                 hits = hits + ?, misses = misses + ? WHERE id = ?",
                self.sql.ns
            ),
            &[
                Val::Int(row.entries.max(0)),
                Val::Int(row.bytes.max(0)),
                Val::Int(row.evicted),
                Val::Int(counts.0),
                Val::Int(counts.1),
                Val::Int(id),
            ],
        )?;
        Ok(())
    }

    /// Writes buffered access stamps (the namespace row is locked).
    fn write_touches(
        &self,
        c: &mut dyn Conn,
        id: i64,
        touches: &HashMap<Vec<u8>, i64>,
    ) -> Result<()> {
        // One statement per 100 keys: atime = greatest(atime, CASE kh ...).
        let greatest = if self.sql.dialect == Dialect::Sqlite {
            "MAX"
        } else {
            "GREATEST"
        };
        let mut items: Vec<_> = touches.iter().collect();
        items.sort();
        for chunk in items.chunks(100) {
            let whens = " WHEN ? THEN ?".repeat(chunk.len());
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "UPDATE {} SET atime = {greatest}(atime, CASE kh{whens} ELSE atime END) \
                 WHERE ns = ? AND kh IN ({marks})",
                self.sql.t
            );
            let mut params = Vec::with_capacity(chunk.len() * 3 + 1);
            for (kh, st) in chunk {
                params.push(Val::Bytes((*kh).clone()));
                params.push(Val::Int(**st));
            }
            params.push(Val::Int(id));
            params.extend(chunk.iter().map(|(kh, _)| Val::Bytes((*kh).clone())));
            c.exec(&sql, &params)?;
        }
        Ok(())
    }

    /// Deletes the expired entries of `id` (its row locked).
    fn purge(&self, c: &mut dyn Conn, id: i64, row: &mut NsRow, now: i64) -> Result<()> {
        let t = &self.sql.t;
        if self.sql.dialect == Dialect::Postgres {
            // One round trip: the delete reports what it deleted.
            let rows = c.query(
                &format!(
                    "WITH d AS (DELETE FROM {t} WHERE ns = ? AND expires IS NOT NULL \
                     AND expires <= ? RETURNING size) SELECT COUNT(*), {} FROM d",
                    self.sum_size()
                ),
                &[Val::Int(id), Val::Int(now)],
            )?;
            let r = rows.into_iter().next().unwrap_or_default();
            row.entries -= r.first().and_then(Val::int).unwrap_or(0);
            row.bytes -= r.get(1).and_then(Val::int).unwrap_or(0);
            return Ok(());
        }
        let rows = c.query(
            &format!(
                "SELECT COUNT(*), {} FROM {t} WHERE ns = ? AND expires IS NOT NULL AND expires <= ?",
                self.sum_size()
            ),
            &[Val::Int(id), Val::Int(now)],
        )?;
        let n = rows
            .first()
            .and_then(|r| r.first())
            .and_then(Val::int)
            .unwrap_or(0);
        if n > 0 {
            let bytes = rows
                .first()
                .and_then(|r| r.get(1))
                .and_then(Val::int)
                .unwrap_or(0);
            c.exec(
                &format!("DELETE FROM {t} WHERE ns = ? AND expires IS NOT NULL AND expires <= ?"),
                &[Val::Int(id), Val::Int(now)],
            )?;
            row.entries -= n;
            row.bytes -= bytes;
        }
        Ok(())
    }

    fn sum_size(&self) -> &'static str {
        match self.sql.dialect {
            Dialect::Sqlite => "COALESCE(SUM(size), 0)",
            Dialect::Postgres => "CAST(COALESCE(SUM(size), 0) AS BIGINT)",
            Dialect::Mysql => "CAST(COALESCE(SUM(size), 0) AS SIGNED)",
        }
    }

    /// Evicts least recently used entries of `id` until its limits hold.
    fn evict(&self, c: &mut dyn Conn, id: i64, row: &mut NsRow) -> Result<()> {
        let over = |row: &NsRow| {
            row.entries > 0
                && (row.maxsize.is_some_and(|m| row.entries > m)
                    || row.max_bytes.is_some_and(|m| row.bytes > m))
        };
        while over(row) {
            let by_count = row.maxsize.map_or(0, |m| row.entries - m).max(1);
            let batch = by_count.min(1000);
            let sizes = self.delete_oldest(c, id, batch)?;
            if sizes.is_empty() {
                // The counters drifted from the rows: recount.
                self.recount(c, id, row)?;
                if over(row) {
                    return Err(self.backend_err("eviction found no rows".into()));
                }
                break;
            }
            // `batch` is exactly what the count limit needs (or one, for
            // the bytes limit): every victim goes.
            for size in sizes {
                row.entries -= 1;
                row.bytes -= size;
                row.evicted += 1;
            }
        }
        Ok(())
    }

    /// Deletes the `n` least recently used entries of `id`; their sizes.
    /// One statement on PostgreSQL and SQLite (`DELETE ... RETURNING`),
    /// two on MySQL (which has no `RETURNING`).
    fn delete_oldest(&self, c: &mut dyn Conn, id: i64, n: i64) -> Result<Vec<i64>> {
        let t = &self.sql.t;
        let size_of = |r: Vec<Val>| r.into_iter().next().and_then(|v| v.int()).unwrap_or(0);
        if self.sql.dialect != Dialect::Mysql {
            let rows = c.query(
                &format!(
                    "DELETE FROM {t} WHERE ns = ? AND kh IN \
                     (SELECT kh FROM {t} WHERE ns = ? ORDER BY atime LIMIT ?) RETURNING size"
                ),
                &[Val::Int(id), Val::Int(id), Val::Int(n)],
            )?;
            return Ok(rows.into_iter().map(size_of).collect());
        }
        let victims = c.query(
            &format!("SELECT kh, size FROM {t} WHERE ns = ? ORDER BY atime LIMIT ?"),
            &[Val::Int(id), Val::Int(n)],
        )?;
        let mut sizes = Vec::with_capacity(victims.len());
        let mut khs = Vec::with_capacity(victims.len());
        for v in victims {
            let mut it = v.into_iter();
            khs.push(it.next().unwrap_or(Val::Null));
            sizes.push(it.next().and_then(|v| v.int()).unwrap_or(0));
        }
        for chunk in khs.chunks(100) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut params = vec![Val::Int(id)];
            params.extend(chunk.iter().cloned());
            c.exec(
                &format!("DELETE FROM {t} WHERE ns = ? AND kh IN ({marks})"),
                &params,
            )?;
        }
        Ok(sizes)
    }

    fn recount(&self, c: &mut dyn Conn, id: i64, row: &mut NsRow) -> Result<()> {
        let rows = c.query(
            &format!(
                "SELECT COUNT(*), {} FROM {} WHERE ns = ?",
                self.sum_size(),
                self.sql.t
            ),
            &[Val::Int(id)],
        )?;
        let r = rows.into_iter().next().unwrap_or_default();
        row.entries = r.first().and_then(Val::int).unwrap_or(0);
        row.bytes = r.get(1).and_then(Val::int).unwrap_or(0);
        Ok(())
    }

    /// Writes every buffered hit, one transaction per namespace.
    fn flush_all(&self) -> Result<()> {
        self.flush_all_in(&self.pool.budget())
    }

    /// [`Shared::flush_all`] within what is left of `budget`.
    fn flush_all_in(&self, budget: &guard::Budget) -> Result<()> {
        let ids: Vec<i64> = {
            let p = self.pending.lock();
            let mut ids: Vec<i64> = p.touches.keys().chain(p.counts.keys()).copied().collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        for id in ids {
            self.flush_ns(id, budget)?;
        }
        Ok(())
    }

    fn flush_ns(&self, id: i64, budget: &guard::Budget) -> Result<()> {
        let (touches, counts) = self.pending.lock().take_ns(id);
        if touches.is_empty() && counts == (0, 0) {
            return Ok(());
        }
        self.tx_in(budget, |c| {
            let row = self.lock_ns(c, id)?;
            self.write_touches(c, id, &touches)?;
            self.save_ns(c, id, &row, counts)
        })
    }

    /// Flushes the buffered hits if they are due, within what is left of
    /// `budget` (the look-up's).
    fn maybe_flush(&self, budget: &guard::Budget) {
        let due = {
            let p = self.pending.lock();
            p.n >= FLUSH_EVERY || p.since.is_some_and(|s| s.elapsed() >= FLUSH_AFTER)
        };
        if due {
            if let Err(e) = self.flush_all_in(budget) {
                log::warn!(
                    "picocache: flushing buffered hits to {} failed: {e}",
                    self.kind()
                );
            }
        }
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
        let driver = url::driver(&url, &options)?;
        let dialect = driver.dialect();
        let shared = Arc::new(Shared {
            pool: pool::Pool::new(driver, &options),
            lease_ttl: options.lease_ttl,
            max_value_size: options.max_value_size,
            sql: Sql::new(dialect, &options.table),
            table: options.table.clone(),
            pending: Mutex::new(Pending::default()),
            commits: std::sync::atomic::AtomicU64::new(0),
        });
        shared.ensure_schema()?;
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

/// A namespace of a [`SqlBackend`].
pub struct SqlNamespace {
    shared: Arc<Shared>,
    name: String,
    id: i64,
}

impl fmt::Debug for SqlNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl SqlNamespace {
    /// The values of `keys`; hits are counted, and misses if `count_misses`.
    fn fetch(&self, keys: &[&[u8]], count_misses: bool) -> Result<Vec<Option<Vec<u8>>>> {
        let s = &self.shared;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let hashes: Vec<Vec<u8>> = keys.iter().map(|k| key_hash(k)).collect();
        let now = now_ms();
        // One operation: every chunk and the flush it may cause.
        let budget = s.pool.budget();
        let mut hits = Vec::new();
        for (chunk_no, chunk) in hashes.chunks(100).enumerate() {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut params = vec![Val::Int(self.id)];
            params.extend(chunk.iter().map(|h| Val::Bytes(h.clone())));
            let rows = s.pool.with_conn_in(&budget, |c| {
                c.query(
                    &format!(
                        "SELECT kh, k, v, expires FROM {} WHERE ns = ? AND kh IN ({marks})",
                        s.sql.t
                    ),
                    &params,
                )
            })?;
            for r in rows {
                let mut it = r.into_iter();
                let kh = it.next().unwrap_or(Val::Null).bytes();
                let k = it.next().unwrap_or(Val::Null).bytes();
                let v = it.next().unwrap_or(Val::Null).bytes();
                let expires = it.next().and_then(|v| v.int());
                if expires.is_some_and(|e| e <= now) {
                    continue;
                }
                for (i, h) in chunk.iter().enumerate() {
                    let at = chunk_no * 100 + i;
                    if *h == kh && keys[at] == k.as_slice() && out[at].is_none() {
                        out[at] = Some(v.clone());
                        hits.push((at, kh.clone()));
                    }
                }
            }
        }
        // Rows come back in the server's order: stamp the hits in the order
        // of the keys asked for, so the last key asked is the most recent
        // use (as `lru_cache` would have it).
        hits.sort_unstable_by_key(|h| h.0);
        let hits: Vec<(Vec<u8>, i64)> = hits.into_iter().map(|(_, kh)| (kh, stamp())).collect();
        let misses = if count_misses {
            keys.len() - hits.len()
        } else {
            0
        };
        self.record(&hits, misses);
        s.maybe_flush(&budget);
        Ok(out)
    }

    fn record(&self, hits: &[(Vec<u8>, i64)], misses: usize) {
        let mut p = self.shared.pending.lock();
        let p = &mut *p;
        let touches = p.touches.entry(self.id).or_default();
        for (kh, st) in hits {
            if touches.insert(kh.clone(), *st).is_none() {
                p.n += 1;
            }
        }
        let c = p.counts.entry(self.id).or_default();
        c.0 += hits.len() as i64;
        c.1 += misses as i64;
        if p.since.is_none() {
            p.since = Some(Instant::now());
        }
    }
}

impl Namespace for SqlNamespace {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_many(&[key])?.pop().flatten())
    }

    fn recheck(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.fetch(&[key], false)?.pop().flatten())
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        self.fetch(keys, true)
    }

    fn put(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.put_many(&[(key, value)], ttl)
    }

    fn put_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<()> {
        let s = &self.shared;
        let id = self.id;
        for (k, v) in items {
            let size = k.len() + v.len();
            if size > s.max_value_size {
                return Err(Error::TooLarge {
                    backend: s.kind(),
                    size,
                    limit: Some(s.max_value_size),
                    source: None,
                });
            }
        }
        let (touches, counts) = s.pending.lock().take_ns(id);
        let upsert = s.sql.upsert_entry();
        let size_sql = format!("SELECT size FROM {} WHERE ns = ? AND kh = ?", s.sql.t);
        let del_sql = format!("DELETE FROM {} WHERE ns = ? AND kh = ?", s.sql.t);
        // PostgreSQL: the old size and the store in one round trip (every
        // part of a statement sees the rows as they were before it).
        let pg = s.sql.dialect == Dialect::Postgres;
        let upsert_old = format!(
            "WITH old AS (SELECT size FROM {} WHERE ns = ? AND kh = ?), \
             up AS ({upsert}) SELECT size FROM old",
            s.sql.t
        );
        s.tx(|c| {
            let mut row = s.lock_ns(c, id)?;
            s.write_touches(c, id, &touches)?;
            let now = now_ms();
            s.purge(c, id, &mut row, now)?;
            let ttl = ttl.map(ttl_ms).or(row.ttl_ms);
            if row.maxsize != Some(0) && ttl != Some(0) {
                for (k, v) in items {
                    let kh = key_hash(k);
                    let size = (k.len() + v.len()) as i64;
                    let fits = row.max_bytes.is_none_or(|m| size <= m);
                    let first = |rows: Vec<Vec<Val>>| {
                        rows.into_iter()
                            .next()
                            .and_then(|r| r.into_iter().next())
                            .and_then(|v| v.int())
                    };
                    let entry = [
                        Val::Int(id),
                        Val::Bytes(kh.clone()),
                        Val::Bytes(k.to_vec()),
                        Val::Bytes(v.to_vec()),
                        Val::Int(size),
                        Val::Int(stamp()),
                        ttl.map_or(Val::Null, |t| Val::Int(now.saturating_add(t))),
                    ];
                    let had = if pg && fits {
                        let mut params = vec![Val::Int(id), Val::Bytes(kh.clone())];
                        params.extend(entry);
                        first(c.query(&upsert_old, &params)?)
                    } else {
                        let had =
                            first(c.query(&size_sql, &[Val::Int(id), Val::Bytes(kh.clone())])?);
                        if !fits {
                            if had.is_some() {
                                c.exec(&del_sql, &[Val::Int(id), Val::Bytes(kh)])?;
                            }
                        } else {
                            c.exec(&upsert, &entry)?;
                        }
                        had
                    };
                    if let Some(sz) = had {
                        row.entries -= 1;
                        row.bytes -= sz;
                    }
                    if fits {
                        row.entries += 1;
                        row.bytes += size;
                    }
                }
                s.evict(c, id, &mut row)?;
            }
            s.save_ns(c, id, &row, counts)
        })
    }

    fn remove(&self, key: &[u8]) -> Result<bool> {
        let s = &self.shared;
        let id = self.id;
        let kh = key_hash(key);
        let (touches, counts) = s.pending.lock().take_ns(id);
        s.tx(|c| {
            let mut row = s.lock_ns(c, id)?;
            s.write_touches(c, id, &touches)?;
            s.purge(c, id, &mut row, now_ms())?;
            let params = [Val::Int(id), Val::Bytes(kh.clone())];
            let del = format!("DELETE FROM {} WHERE ns = ? AND kh = ?", s.sql.t);
            let first = |rows: Vec<Vec<Val>>| {
                rows.into_iter()
                    .next()
                    .and_then(|r| r.into_iter().next())
                    .and_then(|v| v.int())
            };
            let had = if s.sql.dialect == Dialect::Mysql {
                let sql = format!("SELECT size FROM {} WHERE ns = ? AND kh = ?", s.sql.t);
                let had = first(c.query(&sql, &params)?);
                if had.is_some() {
                    c.exec(&del, &params)?;
                }
                had
            } else {
                first(c.query(&format!("{del} RETURNING size"), &params)?)
            };
            if let Some(sz) = had {
                row.entries -= 1;
                row.bytes -= sz;
            }
            s.save_ns(c, id, &row, counts)?;
            Ok(had.is_some())
        })
    }

    fn clear(&self) -> Result<()> {
        let s = &self.shared;
        let id = self.id;
        drop(s.pending.lock().take_ns(id));
        s.tx(|c| {
            s.lock_ns(c, id)?;
            c.exec(&format!("DELETE FROM {} WHERE ns = ?", s.sql.t), &[Val::Int(id)])?;
            c.exec(
                &format!(
                    "UPDATE {} SET entries = 0, bytes = 0, hits = 0, misses = 0, evictions = 0 WHERE id = ?",
                    s.sql.ns
                ),
                &[Val::Int(id)],
            )?;
            Ok(())
        })
    }

    fn stats(&self) -> Result<Stats> {
        let s = &self.shared;
        let id = self.id;
        let (touches, counts) = s.pending.lock().take_ns(id);
        s.tx(|c| {
            let mut row = s.lock_ns(c, id)?;
            s.write_touches(c, id, &touches)?;
            s.purge(c, id, &mut row, now_ms())?;
            s.save_ns(c, id, &row, counts)?;
            let rows = c.query(
                &format!(
                    "SELECT entries, bytes, hits, misses, evictions FROM {} WHERE id = ?",
                    s.sql.ns
                ),
                &[Val::Int(id)],
            )?;
            let r = rows.into_iter().next().unwrap_or_default();
            let g = |i: usize| r.get(i).and_then(Val::int).unwrap_or(0).max(0) as u64;
            Ok(Stats {
                entries: g(0),
                bytes: g(1),
                hits: g(2),
                misses: g(3),
                evictions: g(4),
                rejected: 0,
            })
        })
    }

    fn limits(&self) -> Result<Limits> {
        let s = &self.shared;
        let rows = s.pool.with_conn(|c| {
            c.query(
                &format!(
                    "SELECT maxsize, max_bytes, ttl_ms FROM {} WHERE id = ?",
                    s.sql.ns
                ),
                &[Val::Int(self.id)],
            )
        })?;
        let r = rows.into_iter().next().unwrap_or_default();
        let g = |i: usize| r.get(i).and_then(Val::int).filter(|n| *n >= 0);
        Ok(Limits {
            maxsize: g(0).map(|n| n as u64),
            max_bytes: g(1).map(|n| n as u64),
            ttl: g(2).map(|n| Duration::from_millis(n as u64)),
        })
    }

    fn lease(&self, key: &[u8], wait: Duration) -> Result<Option<Lease>> {
        lease::take(&self.shared, self.id, key, wait)
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

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
//! - `T_meta`: the schema version; `T_lease`: the leases of SQLite.
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
//! Leases: PostgreSQL advisory locks and MySQL `GET_LOCK` held on a dedicated
//! connection (a crashed client's session ends and frees them); SQLite a row
//! in `T_lease` that expires after [`SQLITE_LEASE_TTL`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::backend::{Backend, Lease, Limits, Namespace, Stats};
use crate::{BoxError, Error, Result};

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod url;

/// Hits whose access-time update is buffered before a flush.
pub const FLUSH_EVERY: usize = 256;
/// Longest time a buffered access-time update waits (checked on each call).
pub const FLUSH_AFTER: Duration = Duration::from_millis(250);
/// How long an SQLite lease lives if its holder never releases it.
pub const SQLITE_LEASE_TTL: Duration = Duration::from_secs(60);
/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// Options of a [`SqlBackend`].
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// The entries table (the other tables are named after it); an
    /// identifier: ASCII letters, digits and `_`, not starting with a digit.
    pub table: String,
    /// Most idle connections kept in the pool.
    pub pool_size: u32,
    /// How long to wait for a connection to the server (and, for SQLite, the
    /// floor of the busy timeout).
    pub connect_timeout: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            table: "picocache".to_string(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(2),
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
}

/// Opens connections of one database.
pub(crate) trait Driver: Send + Sync {
    fn dialect(&self) -> Dialect;
    fn connect(&self) -> Result<Box<dyn Conn>>;
    /// The database's address without password, for messages.
    fn describe(&self) -> String;
}

struct Pool {
    driver: Box<dyn Driver>,
    idle: Mutex<Vec<Box<dyn Conn>>>,
    max_idle: usize,
}

impl Pool {
    fn checkout(&self) -> Result<(Box<dyn Conn>, bool)> {
        if let Some(c) = self.idle.lock().pop() {
            return Ok((c, true));
        }
        Ok((self.driver.connect()?, false))
    }

    fn checkin(&self, conn: Box<dyn Conn>) {
        if conn.broken() {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// Runs `f` on a pooled connection; if it fails because the server went
    /// away and the connection was a pooled one, drops the idle connections
    /// and runs `f` once more on a fresh connection.
    fn with_conn<T>(&self, mut f: impl FnMut(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let (mut conn, reused) = self.checkout()?;
        let r = f(conn.as_mut());
        match r {
            Err(e @ Error::Unavailable { .. }) => {
                conn.poison();
                self.idle.lock().clear();
                if !reused {
                    return Err(e);
                }
                let mut conn = self.driver.connect()?;
                let r = f(conn.as_mut());
                self.checkin(conn);
                r
            }
            r => {
                self.checkin(conn);
                r
            }
        }
    }
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
                if conn.batch("ROLLBACK").is_err() {
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
    pool: Pool,
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

    fn tx<T>(&self, mut f: impl FnMut(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let dialect = self.sql.dialect;
        let v = self.pool.with_conn(|c| transaction(c, dialect, &mut f))?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(v)
    }

    fn ensure_schema(&self) -> Result<()> {
        let stmts = self.sql.schema(&self.table);
        let mut tries = 0;
        loop {
            tries += 1;
            // Several clients may create the schema at once: a racing CREATE
            // can fail on some servers; the next try finds it made.
            let r = self.pool.with_conn(|c| {
                for s in &stmts {
                    c.batch(s)?;
                }
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
                Err(_) => std::thread::sleep(Duration::from_millis(50 * tries)),
            }
        }
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
        let t = &self.sql.t;
        let over = |row: &NsRow| {
            row.entries > 0
                && (row.maxsize.is_some_and(|m| row.entries > m)
                    || row.max_bytes.is_some_and(|m| row.bytes > m))
        };
        while over(row) {
            let by_count = row.maxsize.map_or(0, |m| row.entries - m).max(1);
            let batch = by_count.min(1000);
            let victims = c.query(
                &format!("SELECT kh, size FROM {t} WHERE ns = ? ORDER BY atime LIMIT ?"),
                &[Val::Int(id), Val::Int(batch)],
            )?;
            if victims.is_empty() {
                // The counters drifted from the rows: recount.
                self.recount(c, id, row)?;
                if over(row) {
                    return Err(self.backend_err("eviction found no rows".into()));
                }
                break;
            }
            for v in victims {
                let mut it = v.into_iter();
                let kh = it.next().unwrap_or(Val::Null).bytes();
                let size = it.next().and_then(|v| v.int()).unwrap_or(0);
                c.exec(
                    &format!("DELETE FROM {t} WHERE ns = ? AND kh = ?"),
                    &[Val::Int(id), Val::Bytes(kh)],
                )?;
                row.entries -= 1;
                row.bytes -= size;
                row.evicted += 1;
                if !over(row) {
                    break;
                }
            }
        }
        Ok(())
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
        let ids: Vec<i64> = {
            let p = self.pending.lock();
            let mut ids: Vec<i64> = p.touches.keys().chain(p.counts.keys()).copied().collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        for id in ids {
            self.flush_ns(id)?;
        }
        Ok(())
    }

    fn flush_ns(&self, id: i64) -> Result<()> {
        let (touches, counts) = self.pending.lock().take_ns(id);
        if touches.is_empty() && counts == (0, 0) {
            return Ok(());
        }
        self.tx(|c| {
            let row = self.lock_ns(c, id)?;
            self.write_touches(c, id, &touches)?;
            self.save_ns(c, id, &row, counts)
        })
    }

    fn maybe_flush(&self) {
        let due = {
            let p = self.pending.lock();
            p.n >= FLUSH_EVERY || p.since.is_some_and(|s| s.elapsed() >= FLUSH_AFTER)
        };
        if due {
            if let Err(e) = self.flush_all() {
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
        let driver = url::driver(url, &options)?;
        let dialect = driver.dialect();
        let shared = Arc::new(Shared {
            pool: Pool {
                driver,
                idle: Mutex::new(Vec::new()),
                max_idle: options.pool_size.max(1) as usize,
            },
            sql: Sql::new(dialect, &options.table),
            table: options.table.clone(),
            pending: Mutex::new(Pending::default()),
            commits: std::sync::atomic::AtomicU64::new(0),
        });
        shared.ensure_schema()?;
        Ok(SqlBackend { shared })
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
    /// One try at lease `h` on `conn`.
    fn try_lease(&self, conn: &mut dyn Conn, h: i64, token: &str) -> Result<bool> {
        let s = &self.shared;
        let dialect = s.sql.dialect;
        Ok(match dialect {
            Dialect::Postgres => {
                let r = conn.query("SELECT pg_try_advisory_lock(?)", &[Val::Int(h)])?;
                r.first().and_then(|r| r.first()).and_then(Val::int) == Some(1)
            }
            Dialect::Mysql => {
                let r = conn.query(
                    "SELECT GET_LOCK(?, 0)",
                    &[Val::Text(format!("picocache:{h:016x}"))],
                )?;
                r.first().and_then(|r| r.first()).and_then(Val::int) == Some(1)
            }
            Dialect::Sqlite => {
                let lease_t = &s.sql.lease;
                let now = now_ms();
                let name = Val::Bytes(h.to_le_bytes().to_vec());
                transaction(conn, dialect, |c| {
                    c.exec(
                        &format!("DELETE FROM {lease_t} WHERE name = ? AND expires <= ?"),
                        &[name.clone(), Val::Int(now)],
                    )?;
                    c.exec(
                        &s.sql.insert_ignore(lease_t, "name, token, expires", 3),
                        &[
                            name.clone(),
                            Val::Text(token.to_string()),
                            Val::Int(now + ttl_ms(SQLITE_LEASE_TTL)),
                        ],
                    )
                })? == 1
            }
        })
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

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let s = &self.shared;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let hashes: Vec<Vec<u8>> = keys.iter().map(|k| key_hash(k)).collect();
        let now = now_ms();
        let mut hits = Vec::new();
        for (chunk_no, chunk) in hashes.chunks(100).enumerate() {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut params = vec![Val::Int(self.id)];
            params.extend(chunk.iter().map(|h| Val::Bytes(h.clone())));
            let rows = s.pool.with_conn(|c| {
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
        let misses = keys.len() - hits.len();
        self.record(&hits, misses);
        s.maybe_flush();
        Ok(out)
    }

    fn put(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.put_many(&[(key, value)], ttl)
    }

    fn put_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<()> {
        let s = &self.shared;
        let id = self.id;
        let (touches, counts) = s.pending.lock().take_ns(id);
        let upsert = s.sql.upsert_entry();
        let size_sql = format!("SELECT size FROM {} WHERE ns = ? AND kh = ?", s.sql.t);
        let del_sql = format!("DELETE FROM {} WHERE ns = ? AND kh = ?", s.sql.t);
        s.tx(|c| {
            let mut row = s.lock_ns(c, id)?;
            s.write_touches(c, id, &touches)?;
            let now = now_ms();
            s.purge(c, id, &mut row, now)?;
            let ttl = ttl.map(ttl_ms).or(row.ttl_ms);
            if row.maxsize != Some(0) && ttl != Some(0) {
                for (k, v) in items {
                    let kh = key_hash(k);
                    let old = c.query(&size_sql, &[Val::Int(id), Val::Bytes(kh.clone())])?;
                    let had = old
                        .into_iter()
                        .next()
                        .and_then(|r| r.into_iter().next())
                        .and_then(|v| v.int());
                    if let Some(sz) = had {
                        row.entries -= 1;
                        row.bytes -= sz;
                    }
                    let size = (k.len() + v.len()) as i64;
                    if row.max_bytes.is_some_and(|m| size > m) {
                        if had.is_some() {
                            c.exec(&del_sql, &[Val::Int(id), Val::Bytes(kh)])?;
                        }
                        continue;
                    }
                    c.exec(
                        &upsert,
                        &[
                            Val::Int(id),
                            Val::Bytes(kh),
                            Val::Bytes(k.to_vec()),
                            Val::Bytes(v.to_vec()),
                            Val::Int(size),
                            Val::Int(stamp()),
                            ttl.map_or(Val::Null, |t| Val::Int(now.saturating_add(t))),
                        ],
                    )?;
                    row.entries += 1;
                    row.bytes += size;
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
            let old = c.query(
                &format!("SELECT size FROM {} WHERE ns = ? AND kh = ?", s.sql.t),
                &[Val::Int(id), Val::Bytes(kh.clone())],
            )?;
            let had = old
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .and_then(|v| v.int());
            if let Some(sz) = had {
                c.exec(
                    &format!("DELETE FROM {} WHERE ns = ? AND kh = ?", s.sql.t),
                    &[Val::Int(id), Val::Bytes(kh.clone())],
                )?;
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
        let s = &self.shared;
        let mut seed = s.table.as_bytes().to_vec();
        seed.extend_from_slice(&self.id.to_le_bytes());
        seed.extend_from_slice(key);
        let h = xxhash_rust::xxh3::xxh3_64(&seed) as i64;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        // Advisory locks live in a session: hold one connection throughout.
        let (mut conn, mut reused) = s.pool.checkout()?;
        let token = format!("{}:{:x}", std::process::id(), stamp());
        loop {
            let got = match self.try_lease(conn.as_mut(), h, &token) {
                Ok(got) => got,
                // A pooled connection from before an outage: one fresh try.
                Err(Error::Unavailable { .. }) if reused => {
                    s.pool.idle.lock().clear();
                    conn = s.pool.driver.connect()?;
                    reused = false;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if got {
                return Ok(Some(Lease(Box::new(SqlLease {
                    shared: s.clone(),
                    conn: Some(conn),
                    h,
                    token,
                }))));
            }
            let elapsed = start.elapsed();
            if elapsed >= wait {
                s.pool.checkin(conn);
                return Ok(None);
            }
            std::thread::sleep(pause.min(wait - elapsed));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

struct SqlLease {
    shared: Arc<Shared>,
    conn: Option<Box<dyn Conn>>,
    h: i64,
    token: String,
}

impl Drop for SqlLease {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let s = &self.shared;
        let r = match s.sql.dialect {
            Dialect::Postgres => conn
                .query("SELECT pg_advisory_unlock(?)", &[Val::Int(self.h)])
                .map(drop),
            Dialect::Mysql => conn
                .query(
                    "SELECT RELEASE_LOCK(?)",
                    &[Val::Text(format!("picocache:{:016x}", self.h))],
                )
                .map(drop),
            Dialect::Sqlite => conn
                .exec(
                    &format!("DELETE FROM {} WHERE name = ? AND token = ?", s.sql.lease),
                    &[
                        Val::Bytes(self.h.to_le_bytes().to_vec()),
                        Val::Text(self.token.clone()),
                    ],
                )
                .map(drop),
        };
        match r {
            Ok(()) => s.pool.checkin(conn),
            // Closing the session frees an advisory lock; an SQLite lease
            // expires by itself.
            Err(e) => log::warn!("picocache: releasing a {} lease failed: {e}", s.kind()),
        }
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

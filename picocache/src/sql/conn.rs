//! The driver layer under the SQL backend: the dialects, parameter and
//! column values, the connection and driver traits each database
//! implements (`sqlite.rs`, `postgres.rs`, `mysql.rs`), and transactions
//! retried on deadlocks.

use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{BoxError, Error, Result};

/// The SQL dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    pub(crate) fn kind(self) -> &'static str {
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
    pub(crate) fn int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::Text(s) => s.parse().ok(),
            Val::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Val::Null => None,
        }
    }
    pub(crate) fn bytes(self) -> Vec<u8> {
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
    /// A new connection; one that is given up on while its thread is still
    /// blocked counts in `lingering` (its pool's) until the thread ends.
    fn connect(&self, lingering: &Arc<AtomicUsize>) -> Result<Box<dyn Conn>>;
    /// The database's address without password, for messages.
    fn describe(&self) -> String;
}

/// Runs `f` in a transaction on `conn`, retrying a few times on deadlocks.
pub(crate) fn transaction<T>(
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

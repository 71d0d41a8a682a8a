//! SQLite through `rusqlite` (bundled), in WAL mode with a busy timeout.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, ToSql};

use super::guard::{self, TimedOut};
use super::{Conn, Dialect, Driver, Retryable, SqlOptions, Val};
use crate::{Error, Result};

const KIND: &str = "sqlite";
/// The busy timeout floor: writers of several processes queue this long.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct SqliteDriver {
    path: PathBuf,
    busy: Duration,
}

/// How long a statement waits for other writers: the operation's
/// `timeout` when one was given (not the default), else the generous
/// [`BUSY_TIMEOUT`] (at least `connect_timeout`). The pool bounds a whole
/// operation by it too, and each statement waits at most what is left.
pub(crate) fn busy_timeout(options: &SqlOptions) -> Duration {
    if options.timeout != SqlOptions::default().timeout {
        options.timeout
    } else {
        BUSY_TIMEOUT.max(options.connect_timeout)
    }
}

impl SqliteDriver {
    pub(crate) fn new(path: String, options: &SqlOptions) -> SqliteDriver {
        SqliteDriver {
            path: PathBuf::from(path),
            busy: busy_timeout(options),
        }
    }
}

fn convert(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => Error::Unavailable {
            backend: KIND,
            source: e.into(),
        },
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => Error::Backend {
            backend: KIND,
            source: Box::new(Retryable(e.into())),
        },
        _ => Error::Backend {
            backend: KIND,
            source: e.into(),
        },
    }
}

impl Driver for SqliteDriver {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn connect(&self, _lingering: &Arc<AtomicUsize>) -> Result<Box<dyn Conn>> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(convert)?;
        conn.busy_timeout(self.busy).map_err(convert)?;
        // WAL: readers never block the writer; NORMAL sync is durable
        // across process crashes (a cache may lose its last writes on power
        // loss).
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(convert)?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!(
                "picocache: SQLite {} runs in journal mode {mode}, not WAL",
                self.path.display()
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(convert)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Box::new(SqliteConn {
            conn,
            broken: false,
            busy: self.busy,
            deadline: None,
        }))
    }

    fn describe(&self) -> String {
        format!("sqlite:///{}", self.path.display())
    }
}

struct SqliteConn {
    conn: Connection,
    broken: bool,
    /// The longest wait for other writers ([`busy_timeout`]).
    busy: Duration,
    /// When the current operation must have ended.
    deadline: Option<Instant>,
}

impl SqliteConn {
    /// Runs one statement with the busy timeout cut to what is left of the
    /// operation's deadline. A statement that would start after it, or that
    /// waited for the write lock until it, fails as a timeout
    /// ([`Error::Unavailable`] with [`TimedOut`]: the back-off starts, and
    /// the transaction is not tried again).
    fn timed<T>(&mut self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let now = Instant::now();
        let allowed = match self.deadline {
            Some(d) => self.busy.min(d.saturating_duration_since(now)),
            None => self.busy,
        };
        if allowed.is_zero() {
            return Err(guard::unavailable(KIND, self.timed_out()));
        }
        self.conn.busy_timeout(allowed).map_err(convert)?;
        f(&self.conn).map_err(|e| {
            let busy = matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
            );
            // SQLite's busy handler sleeps in steps: a wait that used all
            // but a few milliseconds of what it was allowed ran out.
            if busy && now.elapsed() + Duration::from_millis(20) >= allowed {
                guard::unavailable(KIND, self.timed_out())
            } else {
                convert(e)
            }
        })
    }

    fn timed_out(&self) -> TimedOut {
        TimedOut {
            what: "waiting for the SQLite write lock",
            after: self.busy,
        }
    }
}

impl ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(*i),
            Val::Bytes(b) => ValueRef::Blob(b),
            Val::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

impl Conn for SqliteConn {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let n = self.timed(|conn| {
            conn.prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params))
        })?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>> {
        self.timed(|conn| query_rows(conn, sql, params))
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.timed(|conn| conn.execute_batch(sql))
    }

    fn broken(&self) -> bool {
        self.broken
    }

    fn poison(&mut self) {
        self.broken = true;
    }

    fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }
}

fn query_rows(conn: &Connection, sql: &str, params: &[Val]) -> rusqlite::Result<Vec<Vec<Val>>> {
    let mut st = conn.prepare_cached(sql)?;
    let cols = st.column_count();
    let mut rows = st.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut row = Vec::with_capacity(cols);
        for i in 0..cols {
            row.push(match r.get_ref(i)? {
                ValueRef::Null => Val::Null,
                ValueRef::Integer(i) => Val::Int(i),
                ValueRef::Real(f) => Val::Int(f as i64),
                ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Val::Bytes(b.to_vec()),
            });
        }
        out.push(row);
    }
    Ok(out)
}

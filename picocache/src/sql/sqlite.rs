//! SQLite through `rusqlite` (bundled), in WAL mode with a busy timeout.
//!
//! The bundled SQLite is a second copy of SQLite in a process that may also
//! use another (Python's `sqlite3` links the system's libsqlite3). Two
//! copies do not see each other's POSIX locks, and closing a descriptor in
//! one drops the other's locks: a database file written through both gets
//! corrupted. So this driver never opens, and never writes to, a database
//! file that this process also has open through a descriptor that is not
//! one of its own connections ([`other_sqlite`]): it fails with
//! [`Error::Unavailable`] ([`OtherSqlite`]) instead, and the cache steps
//! aside. A connection it opened is not closed while the other descriptor is
//! open (that would drop the other's locks): it is parked until then.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, ToSql};

use super::guard::{self, TimedOut};
use super::{Conn, Dialect, Driver, Retryable, SqlOptions, Val};
use crate::{Error, Result};

const KIND: &str = "sqlite";
/// The busy timeout floor: writers of several processes queue this long.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connection looks for another SQLite on its file before a
/// write. One scan of `/proc/self/fd` took 62 µs with 11 descriptors open
/// (more with more); a scan before each write made a miss (three or four
/// writes) take ~400 µs instead of ~150 µs.
const CHECK_EVERY: Duration = Duration::from_millis(10);

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

/// A database file this process also opens with another SQLite library.
#[derive(Debug, thiserror::Error)]
#[error(
    "this process also opens {0} with another SQLite library; the cache steps aside to \
     protect it: use a separate file for the cache"
)]
pub(crate) struct OtherSqlite(pub(crate) String);

/// An open descriptor: its number, and its file's device and inode.
type Fd = (i32, u64, u64);

/// The descriptors this process's (bundled) SQLite opened for the
/// connections of this driver, every database: found as the descriptors of
/// the database's files that appeared while a connection was opened (the
/// opens are serialized by this lock), dropped once closed.
static OWN: Mutex<Vec<Fd>> = Mutex::new(Vec::new());

/// Connections that were not closed because another SQLite had their file
/// open (a close would drop its locks); closed once it is gone.
static PARKED: Mutex<Vec<(PathBuf, Connection)>> = Mutex::new(Vec::new());

/// Held while a connection is opened or closed: the descriptors that
/// appear during an open are its own, and none of ours closes meanwhile (a
/// number closed and opened again would look like one that was open before).
static OPENING: Mutex<()> = Mutex::new(());

/// The files of the database at `path` that exist (the database, its
/// `-wal`, `-shm` and `-journal`), as (device, inode).
fn files_of(path: &Path) -> Vec<(u64, u64)> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .filter_map(|suffix| {
            let mut p = OsString::from(path.as_os_str());
            p.push(suffix);
            std::fs::metadata(&p).ok().map(|m| (m.dev(), m.ino()))
        })
        .collect()
}

/// The open descriptors of this process (of `files` only, if given); none
/// where `/proc/self/fd` cannot be read.
fn open_fds(files: Option<&[(u64, u64)]>) -> Vec<Fd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd: i32 = e.file_name().to_str()?.parse().ok()?;
        let m = std::fs::metadata(e.path()).ok()?;
        let id = (m.dev(), m.ino());
        files
            .is_none_or(|f| f.contains(&id))
            .then_some((fd, id.0, id.1))
    })
    .collect()
}

/// Set once another SQLite library is seen loaded in this process.
static ANOTHER_LOADED: AtomicBool = AtomicBool::new(false);

/// Whether another SQLite library may be loaded in this process: a mapped
/// shared object whose name says so (`libsqlite3.so`, Python's `_sqlite3` module,
/// `pysqlite3`, `apsw`), or `/proc/self/maps` cannot be read. Without one,
/// every descriptor of the database is this SQLite's (the bundled copy is
/// linked once per process; a Rust program that also opens the file with
/// `rusqlite` shares it), and nothing is refused. Once seen, remembered.
fn another_sqlite_loaded() -> bool {
    if ANOTHER_LOADED.load(Ordering::Relaxed) {
        return true;
    }
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return true;
    };
    let seen = maps.lines().any(|line| {
        let name = line.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
        // A shared object (not a database's mapped `-shm`).
        line.contains('/')
            && name.contains(".so")
            && !name.ends_with("-shm")
            && (name.contains("sqlite") || name.contains("apsw"))
    });
    if seen {
        ANOTHER_LOADED.store(true, Ordering::Relaxed);
    }
    seen
}

/// Whether this process has a file of the database at `path` open through
/// a descriptor that is not one of this driver's connections: another
/// SQLite library (Python's `sqlite3`) uses it.
pub(crate) fn other_sqlite(path: &Path) -> bool {
    let _opening = OPENING.lock();
    other_sqlite_locked(path)
}

/// [`other_sqlite`], [`OPENING`] held (a connection being opened has
/// descriptors that are not yet known as its own).
fn other_sqlite_locked(path: &Path) -> bool {
    if !another_sqlite_loaded() {
        return false;
    }
    let files = files_of(path);
    if files.is_empty() {
        return false;
    }
    let own = OWN.lock();
    open_fds(Some(&files)).iter().any(|fd| !own.contains(fd))
}

fn other_sqlite_error(path: &Path) -> Error {
    guard::unavailable(KIND, OtherSqlite(path.display().to_string()))
}

/// Closes `conn` unless another SQLite has its file open (then parks it),
/// and the parked connections whose files are free again; forgets the
/// descriptors that closed.
fn close(path: &Path, conn: Connection) {
    let _opening = OPENING.lock();
    close_locked(path, conn)
}

/// [`close`], [`OPENING`] held.
fn close_locked(path: &Path, conn: Connection) {
    let mut parked = PARKED.lock();
    parked.push((path.to_path_buf(), conn));
    let mut kept = Vec::new();
    for (p, c) in parked.drain(..) {
        if other_sqlite_locked(&p) {
            kept.push((p, c));
        } else {
            drop(c);
        }
    }
    *parked = kept;
    drop(parked);
    let mut own = OWN.lock();
    let open = open_fds(None);
    own.retain(|fd| open.contains(fd));
}

impl Driver for SqliteDriver {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn connect(&self, _lingering: &Arc<AtomicUsize>) -> Result<Box<dyn Conn>> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = self.open(flags)?;
        Ok(Box::new(SqliteConn {
            conn: Some(conn),
            path: self.path.clone(),
            broken: false,
            busy: self.busy,
            deadline: None,
            checked: None,
        }))
    }

    fn describe(&self) -> String {
        format!("sqlite:///{}", self.path.display())
    }
}

impl SqliteDriver {
    /// Opens a connection, unless another SQLite has the file open; records
    /// the descriptors it opened as this driver's own.
    fn open(&self, flags: OpenFlags) -> Result<Connection> {
        let _opening = OPENING.lock();
        if other_sqlite_locked(&self.path) {
            return Err(other_sqlite_error(&self.path));
        }
        let before = open_fds(None);
        let conn = self.configure(Connection::open_with_flags(&self.path, flags).map_err(convert));
        let files = files_of(&self.path);
        {
            let mut own = OWN.lock();
            for fd in open_fds(Some(&files)) {
                if !before.contains(&fd) && !own.contains(&fd) {
                    own.push(fd);
                }
            }
        }
        let conn = conn?;
        if other_sqlite_locked(&self.path) {
            // Opened by the other library meanwhile.
            close_locked(&self.path, conn);
            return Err(other_sqlite_error(&self.path));
        }
        Ok(conn)
    }

    /// The settings of a new connection; it has read the database (so its
    /// `-wal` and `-shm` are open).
    fn configure(&self, conn: Result<Connection>) -> Result<Connection> {
        let conn = conn?;
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
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
            .map_err(convert)?;
        Ok(conn)
    }
}

struct SqliteConn {
    /// Closed by [`close`] (or parked).
    conn: Option<Connection>,
    path: PathBuf,
    broken: bool,
    /// The longest wait for other writers ([`busy_timeout`]).
    busy: Duration,
    /// When the current operation must have ended.
    deadline: Option<Instant>,
    /// When [`other_sqlite`] last found the file free.
    checked: Option<Instant>,
}

impl Drop for SqliteConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            close(&self.path, conn);
        }
    }
}

impl SqliteConn {
    /// The connection (taken only when dropped).
    fn conn(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("an SQLite connection is taken only when dropped")
    }

    /// Fails if another SQLite has the file open: before every write
    /// transaction and every write outside one (at most every
    /// [`CHECK_EVERY`]).
    fn check_before_write(&mut self) -> Result<()> {
        if self.checked.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return Ok(());
        }
        if other_sqlite(&self.path) {
            self.checked = None;
            return Err(other_sqlite_error(&self.path));
        }
        self.checked = Some(Instant::now());
        Ok(())
    }

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
        self.conn().busy_timeout(allowed).map_err(convert)?;
        f(self.conn()).map_err(|e| {
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
        if self.conn().is_autocommit() {
            self.check_before_write()?;
        }
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
        if sql.starts_with("BEGIN") {
            self.check_before_write()?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn is_other_sqlite(r: Result<u64>) -> bool {
        matches!(r, Err(Error::Unavailable { source, .. }) if source.is::<OtherSqlite>())
    }

    /// A descriptor of the database's file that is not one of the driver's
    /// (here a plain `File`, as another SQLite library's would be) stops
    /// connects and writes; once it is closed, they work again.
    #[test]
    fn a_foreign_descriptor_of_the_database_stops_its_writes() {
        let t = Instant::now();
        let loaded = another_sqlite_loaded();
        println!("another_sqlite_loaded: {loaded} in {:?}", t.elapsed());
        // As if Python's sqlite3 were loaded.
        ANOTHER_LOADED.store(true, Ordering::Relaxed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let driver = SqliteDriver::new(path.display().to_string(), &SqlOptions::default());
        let lingering = Arc::new(AtomicUsize::new(0));
        let mut a = driver.connect(&lingering).unwrap();
        let mut b = driver.connect(&lingering).unwrap();
        a.batch("CREATE TABLE t (v INTEGER)").unwrap();
        assert_eq!(
            b.exec("INSERT INTO t VALUES (?)", &[Val::Int(1)]).unwrap(),
            1
        );
        assert!(!other_sqlite(&path));

        let t = Instant::now();
        let n = 2000;
        for _ in 0..n {
            assert!(!other_sqlite(&path));
        }
        println!(
            "other_sqlite: {:?} per check, {} descriptors open",
            t.elapsed() / n,
            open_fds(None).len()
        );

        for foreign in [path.clone(), dir.path().join("app.db-wal")] {
            let f = std::fs::File::open(&foreign).unwrap();
            assert!(other_sqlite(&path));
            std::thread::sleep(CHECK_EVERY);
            assert!(is_other_sqlite(
                a.exec("INSERT INTO t VALUES (?)", &[Val::Int(2)])
            ));
            let e = b.batch("BEGIN IMMEDIATE").unwrap_err();
            assert!(e.to_string().contains("another SQLite library"), "{e}");
            let e = driver.connect(&lingering).err().unwrap();
            assert!(e.to_string().contains("use a separate file"), "{e}");
            // A connection dropped now is parked, not closed.
            drop(driver.connect(&lingering).err());
            drop(f);
            assert!(!other_sqlite(&path));
            assert_eq!(
                a.exec("INSERT INTO t VALUES (?)", &[Val::Int(3)]).unwrap(),
                1
            );
        }
        let mut c = driver.connect(&lingering).unwrap();
        assert_eq!(
            c.query("SELECT count(*) FROM t", &[]).unwrap(),
            vec![vec![Val::Int(3)]]
        );
        drop((a, b, c));
    }
}

//! MySQL and MariaDB through the `mysql` crate (no TLS, pure-Rust zlib).
//!
//! Each connection lives on its own thread ([`Worker`]), so that its caller
//! can stop waiting: opening it (TCP connect, handshake, the session's
//! settings) waits at most the connect timeout in total, and each statement
//! at most what is left of its operation's timeout (one deadline for all
//! the statements of a look-up or a store). The socket's read and write
//! timeouts (the operation timeout) end the thread of a connection given
//! up on. A statement larger than the server's `max_allowed_packet` (read
//! once per connection) is not sent: it fails with [`Error::TooLarge`], and
//! so does one the server refuses as too large.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Opts, OptsBuilder, Params, Value};

use super::guard::{time_left, unavailable, CancelledForTime, TimedOut};
use super::worker::Worker;
use super::{url::redact, Conn, Dialect, Driver, Retryable, SqlOptions, Val};
use crate::{Error, Result};

const KIND: &str = "mysql";
/// Room left in a packet for the statement around its parameters.
const PACKET_SLACK: usize = 16 << 10;

pub(crate) struct MysqlDriver {
    opts: Opts,
    url: String,
    connect_timeout: Duration,
    timeout: Duration,
}

impl MysqlDriver {
    pub(crate) fn new(url: &str, options: &SqlOptions) -> Result<MysqlDriver> {
        let opts = Opts::from_url(url)
            .map_err(|e| Error::InvalidArgument(format!("MySQL URL {}: {e}", redact(url))))?;
        // A lock wait ends (as a retryable error) before the socket gives up.
        let lock_wait = options.timeout.as_secs().max(1);
        let opts = OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(options.connect_timeout))
            .read_timeout(Some(options.timeout))
            .write_timeout(Some(options.timeout))
            .prefer_socket(false)
            .max_allowed_packet(Some(1 << 30))
            .init(vec![format!(
                "SET SESSION innodb_lock_wait_timeout = {lock_wait}"
            )])
            .stmt_cache_size(Some(64));
        Ok(MysqlDriver {
            opts: opts.into(),
            url: redact(url),
            connect_timeout: options.connect_timeout,
            timeout: options.timeout,
        })
    }
}

/// Whether the server or the driver refused a packet as too large.
fn too_large(e: &mysql::Error) -> bool {
    match e {
        // ER_NET_PACKET_TOO_LARGE, ER_WARN_ALLOWED_PACKET_OVERFLOWED,
        // CR_NET_PACKET_TOO_LARGE.
        mysql::Error::MySqlError(m) => matches!(m.code, 1153 | 1301 | 2020),
        mysql::Error::DriverError(mysql::DriverError::PacketTooLarge) => true,
        mysql::Error::CodecError(c) => c.to_string().to_ascii_lowercase().contains("too large"),
        _ => false,
    }
}

/// [`convert`], with a socket timeout (after `after`) reported as
/// [`TimedOut`] (a fresh connection would only wait again).
fn convert_timed(e: mysql::Error, after: Duration) -> Error {
    let io = match &e {
        mysql::Error::IoError(io) => Some(io),
        mysql::Error::CodecError(c) => {
            std::error::Error::source(c).and_then(|s| s.downcast_ref::<std::io::Error>())
        }
        _ => None,
    };
    if let Some(io) = io {
        if matches!(
            io.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) {
            return unavailable(
                KIND,
                TimedOut {
                    what: "a statement",
                    after,
                },
            );
        }
    }
    convert(e)
}

fn convert(e: mysql::Error) -> Error {
    if too_large(&e) {
        return Error::TooLarge {
            backend: KIND,
            size: 0,
            limit: None,
            source: Some(e.into()),
        };
    }
    match &e {
        mysql::Error::MySqlError(m) => match m.code {
            // Deadlock: worth another try.
            1213 => Error::Backend {
                backend: KIND,
                source: Box::new(Retryable(e.into())),
            },
            // A lock wait or a statement that ran out of the operation's time
            // (innodb_lock_wait_timeout, lock_wait_timeout; MySQL's
            // max_execution_time, MariaDB's max_statement_time): its time is
            // spent, the later operations of the call skipped.
            1205 | 3024 | 1969 => Error::Unavailable {
                backend: KIND,
                source: Box::new(CancelledForTime(e.to_string())),
            },
            // Server shutdown, connection killed, too many connections, gone away, lost.
            1053 | 1927 | 1040 | 2006 | 2013 => Error::Unavailable {
                backend: KIND,
                source: e.into(),
            },
            _ => Error::Backend {
                backend: KIND,
                source: e.into(),
            },
        },
        mysql::Error::IoError(_) | mysql::Error::CodecError(_) | mysql::Error::DriverError(_) => {
            Error::Unavailable {
                backend: KIND,
                source: e.into(),
            }
        }
        _ => Error::Backend {
            backend: KIND,
            source: e.into(),
        },
    }
}

impl Driver for MysqlDriver {
    fn dialect(&self) -> Dialect {
        Dialect::Mysql
    }

    fn connect(&self, lingering: &Arc<AtomicUsize>) -> Result<Box<dyn Conn>> {
        let t = self.timeout;
        let opts = self.opts.clone();
        let worker = Worker::spawn(KIND, self.connect_timeout, lingering.clone(), move || {
            let mut conn = mysql::Conn::new(opts).map_err(|e| convert_timed(e, t))?;
            let (max_packet, version): (u64, String) = conn
                .query_first("SELECT @@max_allowed_packet, VERSION()")
                .map_err(|e| convert_timed(e, t))?
                .unwrap_or((u64::MAX, String::new()));
            if version.contains("MariaDB") {
                // MariaDB ends a statement (a long lock wait too) a little
                // before the client gives up on it: an error of that
                // statement, not an unavailable server.
                let secs = (t.as_secs_f64() * 0.9).max(0.001);
                conn.query_drop(format!("SET SESSION max_statement_time = {secs:.3}"))
                    .map_err(|e| convert_timed(e, t))?;
            }
            Ok(MyState {
                conn,
                max_packet: usize::try_from(max_packet).unwrap_or(usize::MAX),
                closed: false,
            })
        })?;
        Ok(Box::new(MysqlConn {
            worker,
            timeout: t,
            deadline: None,
            broken: false,
        }))
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// The connection, on its worker thread.
struct MyState {
    conn: mysql::Conn,
    /// The server's `max_allowed_packet`.
    max_packet: usize,
    /// The connection is unusable: the server went away, did not answer, or
    /// refused a packet as too large (it closes the connection then).
    closed: bool,
}

/// The handle callers use.
struct MysqlConn {
    worker: Worker<MyState>,
    timeout: Duration,
    /// When the current operation must have ended.
    deadline: Option<Instant>,
    broken: bool,
}

fn params(vals: &[Val]) -> Params {
    if vals.is_empty() {
        return Params::Empty;
    }
    Params::Positional(
        vals.iter()
            .map(|v| match v {
                Val::Null => Value::NULL,
                Val::Int(i) => Value::Int(*i),
                Val::Bytes(b) => Value::Bytes(b.clone()),
                Val::Text(s) => Value::Bytes(s.clone().into_bytes()),
            })
            .collect(),
    )
}

fn params_size(p: &[Val]) -> usize {
    p.iter()
        .map(|v| match v {
            Val::Bytes(b) => b.len(),
            Val::Text(s) => s.len(),
            _ => 8,
        })
        .sum()
}

fn row(r: mysql::Row) -> Vec<Val> {
    r.unwrap()
        .into_iter()
        .map(|v| match v {
            Value::NULL => Val::Null,
            Value::Int(i) => Val::Int(i),
            Value::UInt(u) => Val::Int(i64::try_from(u).unwrap_or(i64::MAX)),
            Value::Bytes(b) => Val::Bytes(b),
            Value::Float(f) => Val::Int(f as i64),
            Value::Double(f) => Val::Int(f as i64),
            other => Val::Text(other.as_sql(true)),
        })
        .collect()
}

impl MyState {
    /// [`convert_timed`], noting a connection the error leaves unusable.
    fn failed(&mut self, e: mysql::Error, timeout: Duration) -> Error {
        let e = convert_timed(e, timeout);
        if matches!(e, Error::Unavailable { .. } | Error::TooLarge { .. }) {
            self.closed = true;
        }
        e
    }

    fn exec(&mut self, sql: &str, p: &[Val], timeout: Duration) -> Result<u64> {
        let size = params_size(p);
        if size.saturating_add(sql.len() + PACKET_SLACK) > self.max_packet {
            return Err(Error::TooLarge {
                backend: KIND,
                size,
                limit: None,
                source: Some(
                    format!(
                        "the statement would exceed the server's max_allowed_packet of {} bytes",
                        self.max_packet
                    )
                    .into(),
                ),
            });
        }
        match self.conn.exec_drop(sql, params(p)) {
            Ok(()) => Ok(self.conn.affected_rows()),
            Err(e) => Err(match self.failed(e, timeout) {
                Error::TooLarge { source, .. } => Error::TooLarge {
                    backend: KIND,
                    size,
                    limit: None,
                    source,
                },
                e => e,
            }),
        }
    }
}

impl MysqlConn {
    /// Runs `f` on the worker within what is left of the operation; marks
    /// the connection broken if it did not answer in time or `f` left it
    /// unusable ([`MyState::closed`]).
    fn run<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut MyState, Duration) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let left = time_left(KIND, self.deadline, self.timeout)?;
        let timeout = self.timeout;
        let r = self.worker.run(left, move |st| {
            let r = f(st, timeout);
            (r, st.closed)
        });
        match r {
            Ok((r, closed)) => {
                self.broken |= closed;
                r
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }
}

impl Conn for MysqlConn {
    fn exec(&mut self, sql: &str, p: &[Val]) -> Result<u64> {
        let (sql, p) = (sql.to_string(), p.to_vec());
        self.run(move |st, t| st.exec(&sql, &p, t))
    }

    fn query(&mut self, sql: &str, p: &[Val]) -> Result<Vec<Vec<Val>>> {
        let (sql, p) = (sql.to_string(), p.to_vec());
        self.run(move |st, t| {
            let rows: Vec<mysql::Row> = match st.conn.exec(sql.as_str(), params(&p)) {
                Ok(rows) => rows,
                Err(e) => return Err(st.failed(e, t)),
            };
            Ok(rows.into_iter().map(row).collect())
        })
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let sql = sql.to_string();
        self.run(move |st, t| match st.conn.query_drop(sql.as_str()) {
            Ok(()) => Ok(()),
            Err(e) => Err(st.failed(e, t)),
        })
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

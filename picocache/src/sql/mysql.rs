//! MySQL and MariaDB through the `mysql` crate (no TLS, pure-Rust zlib).
//!
//! Timeouts are the socket's: the TCP connect waits at most the connect
//! timeout, every read and write (the handshake's too) at most the statement
//! timeout. A statement larger than the server's `max_allowed_packet` (read
//! once per connection) is not sent: it fails with [`Error::TooLarge`], and
//! so does one the server refuses as too large.

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Opts, OptsBuilder, Params, Value};

use super::guard::{unavailable, TimedOut};
use super::{url::redact, Conn, Dialect, Driver, Retryable, SqlOptions, Val};
use crate::{Error, Result};

const KIND: &str = "mysql";
/// Room left in a packet for the statement around its parameters.
const PACKET_SLACK: usize = 16 << 10;

pub(crate) struct MysqlDriver {
    opts: Opts,
    url: String,
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
            // Deadlock, lock wait timeout.
            1213 | 1205 => Error::Backend {
                backend: KIND,
                source: Box::new(Retryable(e.into())),
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

    fn connect(&self) -> Result<Box<dyn Conn>> {
        let t = self.timeout;
        let mut conn = mysql::Conn::new(self.opts.clone()).map_err(|e| convert_timed(e, t))?;
        let (max_packet, version): (u64, String) = conn
            .query_first("SELECT @@max_allowed_packet, VERSION()")
            .map_err(|e| convert_timed(e, t))?
            .unwrap_or((u64::MAX, String::new()));
        if version.contains("MariaDB") {
            // MariaDB ends a statement (a long lock wait too) a little before
            // the client gives up on it: an error of that statement, not an
            // unavailable server.
            let secs = (t.as_secs_f64() * 0.9).max(0.001);
            conn.query_drop(format!("SET SESSION max_statement_time = {secs:.3}"))
                .map_err(|e| convert_timed(e, t))?;
        }
        Ok(Box::new(MysqlConn {
            conn,
            timeout: t,
            max_packet: usize::try_from(max_packet).unwrap_or(usize::MAX),
            broken: false,
        }))
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

struct MysqlConn {
    conn: mysql::Conn,
    /// The server's `max_allowed_packet`.
    max_packet: usize,
    timeout: Duration,
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

impl MysqlConn {
    fn fail(&mut self, e: mysql::Error) -> Error {
        let e = convert_timed(e, self.timeout);
        // The server closes the connection after a packet too large.
        if matches!(e, Error::Unavailable { .. } | Error::TooLarge { .. }) {
            self.broken = true;
        }
        e
    }
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

impl Conn for MysqlConn {
    fn exec(&mut self, sql: &str, p: &[Val]) -> Result<u64> {
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
            Err(e) => Err(match self.fail(e) {
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

    fn query(&mut self, sql: &str, p: &[Val]) -> Result<Vec<Vec<Val>>> {
        let rows: Vec<mysql::Row> = match self.conn.exec(sql, params(p)) {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e)),
        };
        Ok(rows
            .into_iter()
            .map(|r| {
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
            })
            .collect())
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.conn.query_drop(sql).map_err(|e| self.fail(e))
    }

    fn broken(&self) -> bool {
        self.broken
    }

    fn poison(&mut self) {
        self.broken = true;
    }
}

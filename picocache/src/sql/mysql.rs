//! MySQL and MariaDB through the `mysql` crate (no TLS, pure-Rust zlib).

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Opts, OptsBuilder, Params, Value};

use super::{url::redact, Conn, Dialect, Driver, Retryable, SqlOptions, Val};
use crate::{Error, Result};

const KIND: &str = "mysql";
/// Read and write timeout of a connection.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct MysqlDriver {
    opts: Opts,
    url: String,
}

impl MysqlDriver {
    pub(crate) fn new(url: &str, options: &SqlOptions) -> Result<MysqlDriver> {
        let opts = Opts::from_url(url)
            .map_err(|e| Error::InvalidArgument(format!("MySQL URL {}: {e}", redact(url))))?;
        let opts = OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(options.connect_timeout))
            .read_timeout(Some(IO_TIMEOUT))
            .write_timeout(Some(IO_TIMEOUT))
            .prefer_socket(false)
            .stmt_cache_size(Some(64));
        Ok(MysqlDriver {
            opts: opts.into(),
            url: redact(url),
        })
    }
}

fn convert(e: mysql::Error) -> Error {
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
        let conn = mysql::Conn::new(self.opts.clone()).map_err(convert)?;
        Ok(Box::new(MysqlConn {
            conn,
            broken: false,
        }))
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

struct MysqlConn {
    conn: mysql::Conn,
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
        let e = convert(e);
        if matches!(e, Error::Unavailable { .. }) {
            self.broken = true;
        }
        e
    }
}

impl Conn for MysqlConn {
    fn exec(&mut self, sql: &str, p: &[Val]) -> Result<u64> {
        match self.conn.exec_drop(sql, params(p)) {
            Ok(()) => Ok(self.conn.affected_rows()),
            Err(e) => Err(self.fail(e)),
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

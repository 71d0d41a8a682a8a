//! PostgreSQL through the synchronous `postgres` crate (no TLS).
//!
//! Each connection lives on its own thread ([`Worker`]), since the crate's
//! client has no read timeout: connecting waits at most the connect timeout
//! and each statement at most what is left of its operation's timeout (one
//! deadline for all the statements of a look-up or a store), and the server
//! cancels a statement that runs longer than the timeout too
//! (`statement_timeout`).

use std::error::Error as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, Config, NoTls};

use super::guard::{time_left, CancelledForTime};
use super::worker::Worker;
use super::{url::redact, Conn, Dialect, Driver, Retryable, SqlOptions, Val};
use crate::{Error, Result};

const KIND: &str = "postgresql";

pub(crate) struct PgDriver {
    /// With the server-side statement timeout in the startup options.
    config: Config,
    /// Without it, for poolers that refuse startup options (PgBouncer).
    plain: Config,
    /// Set once such a pooler refused them: later connections go plain.
    pooler: Arc<AtomicBool>,
    url: String,
    connect_timeout: Duration,
    timeout: Duration,
}

impl PgDriver {
    pub(crate) fn new(url: &str, options: &SqlOptions) -> Result<PgDriver> {
        let mut config = Config::from_str(url)
            .map_err(|e| Error::InvalidArgument(format!("PostgreSQL URL {}: {e}", redact(url))))?;
        config.connect_timeout(options.connect_timeout);
        config.keepalives(true);
        // A peer that vanished (no ACKs) is given up within seconds, so the
        // thread of an abandoned connection ends.
        config.keepalives_idle(Duration::from_secs(10));
        config.tcp_user_timeout(Duration::from_secs(10).max(options.timeout.saturating_mul(4)));
        if config.get_application_name().is_none() {
            config.application_name("picocache");
        }
        // The server cancels a statement a little before the client gives
        // up on it: a slow statement on a server that answers (a long lock
        // wait) fails as an error of that statement, and only a server that
        // does not answer at all counts as unavailable.
        let plain = config.clone();
        let ms = (options.timeout.as_millis() * 9 / 10).max(1);
        let server_side = format!("-c statement_timeout={ms}");
        let opts = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {server_side}"),
            _ => server_side,
        };
        config.options(&opts);
        Ok(PgDriver {
            config,
            plain,
            pooler: Arc::new(AtomicBool::new(false)),
            url: redact(url),
            connect_timeout: options.connect_timeout,
            timeout: options.timeout,
        })
    }
}

fn convert(e: postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        {
            return Error::Backend {
                backend: KIND,
                source: Box::new(Retryable(e.into())),
            };
        }
        let c = code.code();
        if *code == SqlState::QUERY_CANCELED || *code == SqlState::LOCK_NOT_AVAILABLE {
            // The server-side statement or lock timeout (the operation's):
            // its time is spent, the later operations of the call skipped.
            return Error::Unavailable {
                backend: KIND,
                source: Box::new(CancelledForTime(format!("{db} (SQLSTATE {c})"))),
            };
        }
        if c.starts_with("54") {
            // program_limit_exceeded and the like: a value too large.
            return Error::TooLarge {
                backend: KIND,
                size: 0,
                limit: None,
                source: Some(e.into()),
            };
        }
        if c.starts_with("08") || c.starts_with("57P") || c == "53300" {
            return Error::Unavailable {
                backend: KIND,
                source: e.into(),
            };
        }
        // The server's message (the client's own Display is "db error").
        return Error::Backend {
            backend: KIND,
            source: format!("{db} (SQLSTATE {c})").into(),
        };
    }
    let msg = e.to_string();
    if msg.starts_with("error serializing") || msg.starts_with("error deserializing") {
        return Error::Backend {
            backend: KIND,
            source: e.into(),
        };
    }
    // Connecting, I/O, a closed connection, a timeout: the server is away.
    let _ = e.source();
    Error::Unavailable {
        backend: KIND,
        source: e.into(),
    }
}

impl Driver for PgDriver {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn connect(&self, lingering: &Arc<AtomicUsize>) -> Result<Box<dyn Conn>> {
        let pooler = self.pooler.clone();
        let config = if pooler.load(Ordering::Relaxed) {
            self.plain.clone()
        } else {
            self.config.clone()
        };
        let plain = self.plain.clone();
        let worker = Worker::spawn(KIND, self.connect_timeout, lingering.clone(), move || {
            let client = match config.connect(NoTls) {
                Ok(c) => c,
                // A pooler that takes no startup options: without the
                // server-side timeout (the client's still holds).
                Err(e)
                    if e.as_db_error()
                        .is_some_and(|d| d.message().contains("startup parameter")) =>
                {
                    pooler.store(true, Ordering::Relaxed);
                    plain.connect(NoTls).map_err(convert)?
                }
                Err(e) => return Err(convert(e)),
            };
            Ok(PgState { client })
        })?;
        Ok(Box::new(PgConn {
            worker,
            timeout: self.timeout,
            deadline: None,
            broken: false,
        }))
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// The connection, on its worker thread.
struct PgState {
    client: Client,
}

/// The handle callers use.
struct PgConn {
    worker: Worker<PgState>,
    timeout: Duration,
    /// When the current operation must have ended.
    deadline: Option<Instant>,
    broken: bool,
}

/// `?` placeholders to `$1, $2, ...` (the statements here hold no `?`
/// elsewhere).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => i.to_string().as_str().to_sql(ty, out),
            },
            Val::Bytes(b) => b.as_slice().to_sql(ty, out),
            Val::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// The parameters with their types: each statement is sent with them in one
/// round trip (parse, bind, execute), never prepared first, which would cost
/// one more round trip for each statement on each new connection. Integers
/// (and NULLs: every nullable parameter here is a BIGINT) are BIGINT.
fn typed(params: &[Val]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|v| {
            let ty = match v {
                Val::Null | Val::Int(_) => Type::INT8,
                Val::Bytes(_) => Type::BYTEA,
                Val::Text(_) => Type::TEXT,
            };
            (v as &(dyn ToSql + Sync), ty)
        })
        .collect()
}

impl PgState {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, postgres::Error> {
        self.client.execute_typed(&numbered(sql), &typed(params))
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, postgres::Error> {
        let rows = self.client.query_typed(&numbered(sql), &typed(params))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut row = Vec::with_capacity(r.len());
            for (i, col) in r.columns().iter().enumerate() {
                let v = match *col.type_() {
                    Type::INT8 => r.try_get::<_, Option<i64>>(i).map(|v| v.map(Val::Int)),
                    Type::INT4 => r
                        .try_get::<_, Option<i32>>(i)
                        .map(|v| v.map(|n| Val::Int(n.into()))),
                    Type::INT2 => r
                        .try_get::<_, Option<i16>>(i)
                        .map(|v| v.map(|n| Val::Int(n.into()))),
                    Type::BOOL => r
                        .try_get::<_, Option<bool>>(i)
                        .map(|v| v.map(|b| Val::Int(b.into()))),
                    Type::BYTEA => r
                        .try_get::<_, Option<Vec<u8>>>(i)
                        .map(|v| v.map(Val::Bytes)),
                    _ => r.try_get::<_, Option<String>>(i).map(|v| v.map(Val::Text)),
                }?;
                row.push(v.unwrap_or(Val::Null));
            }
            out.push(row);
        }
        Ok(out)
    }
}

impl PgConn {
    /// Runs `f` on the worker; marks the connection broken if the server
    /// went away or did not answer.
    fn run<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut PgState) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T> {
        let left = time_left(KIND, self.deadline, self.timeout)?;
        let r = self.worker.run(left, move |st| {
            let r = f(st).map_err(convert);
            (r, st.client.is_closed())
        });
        match r {
            Ok((r, closed)) => {
                if closed || matches!(r, Err(Error::Unavailable { .. })) {
                    self.broken = true;
                }
                r
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }
}

impl Conn for PgConn {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let (sql, params) = (sql.to_string(), params.to_vec());
        let size = params_size(&params);
        self.run(move |st| st.exec(&sql, &params))
            .map_err(|e| with_size(e, size))
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>> {
        let (sql, params) = (sql.to_string(), params.to_vec());
        self.run(move |st| st.query(&sql, &params))
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let sql = sql.to_string();
        self.run(move |st| st.client.batch_execute(&sql))
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

fn params_size(params: &[Val]) -> usize {
    params
        .iter()
        .map(|v| match v {
            Val::Bytes(b) => b.len(),
            Val::Text(s) => s.len(),
            _ => 8,
        })
        .sum()
}

/// Fills in the size of a [`Error::TooLarge`].
fn with_size(e: Error, size: usize) -> Error {
    match e {
        Error::TooLarge {
            backend,
            limit,
            source,
            ..
        } => Error::TooLarge {
            backend,
            size,
            limit,
            source,
        },
        e => e,
    }
}

//! PostgreSQL through the synchronous `postgres` crate (no TLS).

use std::collections::HashMap;
use std::error::Error as _;
use std::str::FromStr;

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, Config, NoTls, Statement};

use super::{url::redact, Conn, Dialect, Driver, Retryable, SqlOptions, Val};
use crate::{Error, Result};

const KIND: &str = "postgresql";

pub(crate) struct PgDriver {
    config: Config,
    url: String,
}

impl PgDriver {
    pub(crate) fn new(url: &str, options: &SqlOptions) -> Result<PgDriver> {
        let mut config = Config::from_str(url)
            .map_err(|e| Error::InvalidArgument(format!("PostgreSQL URL {}: {e}", redact(url))))?;
        config.connect_timeout(options.connect_timeout);
        config.keepalives(true);
        config.application_name("picocache");
        Ok(PgDriver {
            config,
            url: redact(url),
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
        if c.starts_with("08") || c.starts_with("57P") || c == "53300" {
            return Error::Unavailable {
                backend: KIND,
                source: e.into(),
            };
        }
        return Error::Backend {
            backend: KIND,
            source: e.into(),
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

    fn connect(&self) -> Result<Box<dyn Conn>> {
        let client = self.config.connect(NoTls).map_err(convert)?;
        Ok(Box::new(PgConn {
            client,
            stmts: HashMap::new(),
            broken: false,
        }))
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

struct PgConn {
    client: Client,
    stmts: HashMap<String, Statement>,
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

impl PgConn {
    fn prepare(&mut self, sql: &str) -> Result<Statement> {
        if let Some(st) = self.stmts.get(sql) {
            return Ok(st.clone());
        }
        let st = self
            .client
            .prepare(&numbered(sql))
            .map_err(|e| self.fail(e))?;
        self.stmts.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    fn fail(&mut self, e: postgres::Error) -> Error {
        let e = convert(e);
        if matches!(e, Error::Unavailable { .. }) || self.client.is_closed() {
            self.broken = true;
        }
        e
    }
}

impl Conn for PgConn {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let st = self.prepare(sql)?;
        let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.client.execute(&st, &p).map_err(|e| self.fail(e))
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>> {
        let st = self.prepare(sql)?;
        let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = self.client.query(&st, &p).map_err(|e| self.fail(e))?;
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
                }
                .map_err(|e| self.fail(e))?;
                row.push(v.unwrap_or(Val::Null));
            }
            out.push(row);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.client.batch_execute(sql).map_err(|e| self.fail(e))
    }

    fn broken(&self) -> bool {
        self.broken || self.client.is_closed()
    }

    fn poison(&mut self) {
        self.broken = true;
    }
}

//! The schema of the SQL backends: the statements of a dialect and table
//! (see the [module docs](super) for the tables), and creating them.

use std::time::Duration;

use super::{Conn, Dialect, Shared, Sql, Val, SCHEMA_VERSION};
use crate::{Error, Result};

impl Sql {
    pub(super) fn new(dialect: Dialect, table: &str) -> Sql {
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

    pub(super) fn schema(&self, table: &str) -> Vec<String> {
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

    pub(super) fn insert_ignore(&self, table: &str, cols: &str, n: usize) -> String {
        let marks = vec!["?"; n].join(", ");
        match self.dialect {
            Dialect::Sqlite => format!("INSERT OR IGNORE INTO {table} ({cols}) VALUES ({marks})"),
            Dialect::Postgres => {
                format!("INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING")
            }
            Dialect::Mysql => format!("INSERT IGNORE INTO {table} ({cols}) VALUES ({marks})"),
        }
    }

    pub(super) fn upsert_entry(&self) -> String {
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

/// The columns of picocache 1.4's table (the original Python package kept
/// every entry in one table of that name: `key`, `value`, `last_accessed`).
const V14_COLUMNS: [&str; 3] = ["key", "last_accessed", "value"];

impl Shared {
    /// Whether the table this backend would use is picocache 1.4's own (its
    /// columns exactly [`V14_COLUMNS`]): the backend then keeps its tables
    /// beside it, under `TABLE_v2` (README, "Coming from picocache 1.4":
    /// 1.4's entries are recomputed once; its table is left as it was, for a
    /// 1.4 process still running, and a user may drop it).
    pub(super) fn holds_v14_table(&self) -> Result<bool> {
        let sql = match self.sql.dialect {
            Dialect::Sqlite => "SELECT name FROM pragma_table_info(?)",
            Dialect::Postgres => {
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = ?"
            }
            Dialect::Mysql => {
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?"
            }
        };
        let budget = self.pool.opening_budget();
        let rows = self
            .pool
            .with_conn_in(&budget, |c| c.query(sql, &[Val::Text(self.table.clone())]))?;
        let mut cols: Vec<String> = rows
            .iter()
            .filter_map(|r| match r.first() {
                Some(Val::Text(t)) => Some(t.to_lowercase()),
                Some(Val::Bytes(b)) => Some(String::from_utf8_lossy(b).to_lowercase()),
                _ => None,
            })
            .collect();
        cols.sort();
        Ok(cols == V14_COLUMNS)
    }

    pub(super) fn ensure_schema(&self) -> Result<()> {
        let stmts = self.sql.schema(&self.table);
        // Connecting and every try: one operation (connect_timeout + timeout).
        let budget = self.pool.opening_budget();
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
    pub(super) fn create_tables(&self, c: &mut dyn Conn, stmts: &[String]) -> Result<()> {
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
}

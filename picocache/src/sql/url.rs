//! SQL URLs, SQLAlchemy style included.

use super::{Dialect, Driver, SqlOptions};
use crate::{Error, Result};

/// What a URL names, before connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// An SQLite file.
    Sqlite(String),
    /// A PostgreSQL URL the `postgres` crate reads.
    Postgres(String),
    /// A MySQL URL the `mysql` crate reads.
    Mysql(String),
}

impl Target {
    #[allow(dead_code)]
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Target::Sqlite(_) => Dialect::Sqlite,
            Target::Postgres(_) => Dialect::Postgres,
            Target::Mysql(_) => Dialect::Mysql,
        }
    }
}

/// Parses `url` into a [`Target`].
pub(crate) fn parse(url: &str) -> Result<Target> {
    let bad = |why: &str| Error::InvalidArgument(format!("SQL URL: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    let (base, _driver) = scheme.split_once('+').unwrap_or((scheme.as_str(), ""));
    match base {
        "sqlite" => {
            // SQLAlchemy: sqlite:///relative.db and sqlite:////absolute.db;
            // also sqlite://path (a path right after the scheme).
            let path = rest.strip_prefix('/').unwrap_or(rest);
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() || path == ":memory:" {
                return Err(bad(
                    "an in-memory SQLite database is not shared by anything: give a file path",
                ));
            }
            Ok(Target::Sqlite(path.to_string()))
        }
        "postgres" | "postgresql" => Ok(Target::Postgres(format!("postgresql://{rest}"))),
        "mysql" | "mariadb" => {
            // Drop the query parameters the mysql crate does not know
            // (SQLAlchemy URLs often carry ?charset=utf8mb4).
            let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("charset="))
                .collect();
            let mut u = format!("mysql://{main}");
            if !kept.is_empty() {
                u.push('?');
                u.push_str(&kept.join("&"));
            }
            Ok(Target::Mysql(u))
        }
        other => Err(bad(&format!("unknown scheme {other:?}"))),
    }
}

/// Hides the password of a URL for messages.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn redact(url: &str) -> String {
    let shown = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => {
            let cred = &url[s + 3..a];
            let user = cred.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..s], &url[a + 1..])
        }
        _ => url.to_string(),
    };
    redact_query(&shown)
}

/// `url` with the value of every password given as a query parameter
/// (`?password=...`, as libpq and the MySQL driver accept) replaced by `***`.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn redact_query(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_string();
    };
    let (head, query) = url.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _))
                if matches!(
                    k.to_ascii_lowercase().as_str(),
                    "password" | "pass" | "passwd"
                ) =>
            {
                format!("{k}=***")
            }
            _ => p.to_string(),
        })
        .collect();
    format!("{head}{}{fragment}", params.join("&"))
}

/// The driver for `url`.
pub(crate) fn driver(url: &str, options: &SqlOptions) -> Result<Box<dyn Driver>> {
    let _ = options;
    match parse(url)? {
        #[cfg(feature = "sqlite")]
        Target::Sqlite(path) => Ok(Box::new(super::sqlite::SqliteDriver::new(path, options))),
        #[cfg(feature = "postgres")]
        Target::Postgres(u) => Ok(Box::new(super::postgres::PgDriver::new(&u, options)?)),
        #[cfg(feature = "mysql")]
        Target::Mysql(u) => Ok(Box::new(super::mysql::MysqlDriver::new(&u, options)?)),
        #[allow(unreachable_patterns)]
        t => Err(Error::InvalidArgument(format!(
            "this build of picocache has no {:?} driver (enable its feature)",
            t.dialect()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = |p: &str| Target::Sqlite(p.to_string());
        assert_eq!(parse("sqlite:///cache.db").unwrap(), s("cache.db"));
        assert_eq!(
            parse("sqlite:////tmp/cache.db").unwrap(),
            s("/tmp/cache.db")
        );
        assert_eq!(parse("sqlite://cache.db").unwrap(), s("cache.db"));
        assert_eq!(
            parse("sqlite+pysqlite:///x.db?timeout=3").unwrap(),
            s("x.db")
        );
        assert!(parse("sqlite://").is_err());
        assert!(parse("sqlite:///:memory:").is_err());
        let pg = |u: &str| Target::Postgres(u.to_string());
        assert_eq!(
            parse("postgresql://u:p@h:5/db").unwrap(),
            pg("postgresql://u:p@h:5/db")
        );
        assert_eq!(parse("postgres://h/db").unwrap(), pg("postgresql://h/db"));
        assert_eq!(
            parse("postgresql+psycopg://h/db").unwrap(),
            pg("postgresql://h/db")
        );
        assert_eq!(
            parse("postgresql+psycopg2://h/db").unwrap(),
            pg("postgresql://h/db")
        );
        let my = |u: &str| Target::Mysql(u.to_string());
        assert_eq!(
            parse("mysql://u:p@h:3306/db").unwrap(),
            my("mysql://u:p@h:3306/db")
        );
        assert_eq!(
            parse("mysql+pymysql://h/db?charset=utf8mb4").unwrap(),
            my("mysql://h/db")
        );
        assert_eq!(parse("mysql+mysqldb://h/db").unwrap(), my("mysql://h/db"));
        assert_eq!(parse("mariadb://h/db").unwrap(), my("mysql://h/db"));
        assert!(parse("oracle://h/db").is_err());
    }

    #[cfg(any(feature = "postgres", feature = "mysql"))]
    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(redact("mysql://u:secret@h/db"), "mysql://u:***@h/db");
        assert_eq!(
            redact("postgresql://u@h/db?sslmode=disable&password=secret&PASS=x#f"),
            "postgresql://u:***@h/db?sslmode=disable&password=***&PASS=***#f"
        );
        assert_eq!(
            redact("mysql://h/db?passwd=secret"),
            "mysql://h/db?passwd=***"
        );
        assert_eq!(redact("mysql://h/db?user=u"), "mysql://h/db?user=u");
    }
}

//! Opening a backend from a URL.

use std::sync::Arc;

use crate::backend::Backend;
use crate::local::LocalBackend;
use crate::{Error, Result};

/// The kind of backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Redis,
    Sql,
    Local,
    Unknown,
}

fn kind_of(url: &str) -> Kind {
    let scheme = match url.find("://") {
        Some(i) => url[..i].to_ascii_lowercase(),
        None => return Kind::Local,
    };
    match scheme.as_str() {
        "redis" | "rediss" | "unix" | "redis+unix" => Kind::Redis,
        "local" | "file" => Kind::Local,
        s if s == "sqlite"
            || s.starts_with("sqlite+")
            || s == "postgres"
            || s == "postgresql"
            || s.starts_with("postgresql+")
            || s == "mysql"
            || s.starts_with("mysql+")
            || s == "mariadb"
            || s.starts_with("mariadb+") =>
        {
            Kind::Sql
        }
        _ => Kind::Unknown,
    }
}

/// Opens the backend `url` names, with default options:
///
/// - `redis://`, `rediss://`, `unix://`, `redis+unix://`: a
///   [`RedisBackend`](crate::redis::RedisBackend) (feature `redis`);
/// - `sqlite:///path` (SQLAlchemy style: `sqlite:////abs/path` or
///   `sqlite:///relative`), `sqlite://path`, `postgresql://`, `postgres://`,
///   `postgresql+psycopg://`, `postgresql+psycopg2://`, `mysql://`,
///   `mysql+pymysql://`, `mysql+mysqldb://`, `mariadb://`: a
///   [`SqlBackend`](crate::sql::SqlBackend) (features `sqlite`, `postgres`,
///   `mysql`);
/// - `local://path`, `file://path` or a plain path: a [`LocalBackend`].
pub fn open(url: &str) -> Result<Arc<dyn Backend>> {
    match kind_of(url) {
        Kind::Unknown => Err(Error::InvalidArgument(format!(
            "unknown backend URL scheme in {:?}",
            url.split("://").next().unwrap_or(url)
        ))),
        Kind::Local => {
            let path = url
                .strip_prefix("local://")
                .or_else(|| url.strip_prefix("file://"))
                .unwrap_or(url);
            if path.is_empty() {
                return Ok(Arc::new(LocalBackend::open(crate::local::default_path())?));
            }
            Ok(Arc::new(LocalBackend::open(path)?))
        }
        Kind::Redis => {
            #[cfg(feature = "redis")]
            {
                Ok(Arc::new(crate::redis::RedisBackend::connect(
                    url,
                    Default::default(),
                )?))
            }
            #[cfg(not(feature = "redis"))]
            {
                Err(Error::InvalidArgument(
                    "this build of picocache has no Redis backend (feature `redis`)".into(),
                ))
            }
        }
        Kind::Sql => {
            #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
            {
                Ok(Arc::new(crate::sql::SqlBackend::connect(
                    url,
                    Default::default(),
                )?))
            }
            #[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
            {
                Err(Error::InvalidArgument(
                    "this build of picocache has no SQL backend (features `sqlite`, `postgres`, `mysql`)"
                        .into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        for u in [
            "redis://localhost",
            "rediss://h:1",
            "unix:///tmp/r.sock",
            "redis+unix:///s",
        ] {
            assert_eq!(kind_of(u), Kind::Redis, "{u}");
        }
        for u in [
            "sqlite:///x.db",
            "sqlite://x.db",
            "postgresql://u@h/db",
            "postgres://h/db",
            "postgresql+psycopg://h/db",
            "postgresql+psycopg2://h/db",
            "mysql://h/db",
            "mysql+pymysql://h/db",
            "mysql+mysqldb://h/db",
            "mariadb://h/db",
            "MySQL://h/db",
        ] {
            assert_eq!(kind_of(u), Kind::Sql, "{u}");
        }
        for u in [
            "local:///tmp/x",
            "/tmp/x",
            "relative/dir",
            "file:///tmp/x",
            ".picocache",
        ] {
            assert_eq!(kind_of(u), Kind::Local, "{u}");
        }
        assert_eq!(kind_of("http://x"), Kind::Unknown);
    }
}

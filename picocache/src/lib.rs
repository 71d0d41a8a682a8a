//! # picocache
//!
//! Persistent memoization: a `functools.lru_cache` whose entries survive
//! restarts and are shared by every thread and process on the machine (the
//! local engine, the default) or by a whole fleet (SQL and Redis backends).
//!
//! - [`Backend`] and [`Namespace`]: the trait every store implements.
//! - [`LocalBackend`]: the embedded engine (`picocache-engine`).
//! - `RedisBackend` (feature `redis`) and `SqlBackend` (features `sqlite`,
//!   `postgres`, `mysql`): shared stores on a server.
//! - [`open()`]: a backend from a URL.
//! - [`SealedBackend`]: any backend with every value sealed with a secret
//!   ([`seal`], [`secret`]); memoizers always use one.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod backend;
pub mod core;
mod error;
pub mod keyfmt;
pub mod local;
pub mod memo;
mod open;
#[cfg(feature = "redis")]
pub mod redis;
pub mod seal;
pub mod sealed;
pub mod secret;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub mod sql;

#[cfg(feature = "redis")]
pub use self::redis::{RedisBackend, RedisOptions};
pub use backend::{Backend, Lease, Limits, Locate, Located, Namespace, Stats, Watch};
pub use error::{BoxError, Error, Result};
pub use local::LocalBackend;
pub use memo::{CacheInfo, Memo, MemoBuilder};
pub use open::open;
/// Memoizes a function persistently; see the [`memo`] module for the
/// behaviour and [its section on the attribute](memo#the-memoize-attribute)
/// for the options.
pub use picocache_macros::memoize;
pub use seal::{Rejection, Secrets};
pub use sealed::SealedBackend;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use sql::{SqlBackend, SqlOptions};

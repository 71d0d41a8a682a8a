//! # picocache
//!
//! Persistent memoization: a `functools.lru_cache` whose entries survive
//! restarts and are shared by every thread and process on the machine (the
//! local engine, the default) or by a whole fleet (SQL and Redis backends).
//!
//! - [`Backend`] and [`Namespace`]: the trait every store implements.
//! - [`LocalBackend`]: the embedded engine (`picocache-engine`).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod backend;
mod error;
pub mod local;

pub use backend::{Backend, Lease, Limits, Namespace, Stats};
pub use error::{BoxError, Error, Result};
pub use local::LocalBackend;

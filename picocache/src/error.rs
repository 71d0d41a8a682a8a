//! The error type of every backend.

use std::time::Duration;

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from PicoCache backends and memoizers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The local engine failed.
    #[error("local store: {0}")]
    Engine(#[from] picocache_engine::Error),
    /// A remote backend could not be reached or its connection broke.
    #[error("{backend} unavailable: {source}")]
    Unavailable {
        /// Which backend ("redis", "postgresql", ...).
        backend: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
    /// A remote backend answered with an error.
    #[error("{backend}: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
    /// A key or value could not be encoded or decoded.
    #[error("serialization: {0}")]
    Serialization(#[source] BoxError),
    /// An argument or URL was not valid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A stored entry failed its seal check (see [`crate::seal`]); it is
    /// never returned, and memoizers treat it as a miss.
    #[error("{}", rejected_message(namespace, reason, *remote))]
    Rejected {
        /// The namespace (function) whose entry it was.
        namespace: String,
        /// Why it was rejected.
        reason: crate::seal::Rejection,
        /// Whether the store is shared with other machines.
        remote: bool,
    },
    /// Waiting for another caller's computation timed out.
    #[error("timed out after {0:?} waiting for a lease")]
    LeaseTimeout(Duration),
}

impl From<bincode::Error> for Error {
    fn from(e: bincode::Error) -> Self {
        Error::Serialization(e)
    }
}

fn rejected_message(ns: &str, reason: &crate::seal::Rejection, remote: bool) -> String {
    let hint = match reason {
        crate::seal::Rejection::OtherSecret if remote => {
            "; every machine that shares this store needs the same PICOCACHE_SECRET"
        }
        _ => "",
    };
    format!("a stored entry of {ns} was rejected: {reason}; it is treated as a miss{hint}")
}

impl Error {
    /// Whether this is [`Error::Rejected`]: the store answered, but an entry
    /// failed its seal check (the store itself is usable).
    pub fn is_rejected(&self) -> bool {
        matches!(self, Error::Rejected { .. })
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

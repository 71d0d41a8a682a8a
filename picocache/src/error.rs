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
    /// A key plus value too large for the store: above the backend's
    /// `max_value_size` (then it was not sent), or refused by the server as
    /// too large (MySQL's `max_allowed_packet`). The store itself is usable:
    /// this is no reason to skip it.
    #[error("{}", too_large_message(backend, *size, *limit, source.as_ref()))]
    TooLarge {
        /// Which backend.
        backend: &'static str,
        /// The bytes that were to be stored (key plus value).
        size: usize,
        /// The configured limit it exceeds, if that was the reason (`None`:
        /// the server refused it).
        limit: Option<usize>,
        /// The server's error, if it refused the value.
        #[source]
        source: Option<BoxError>,
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

fn too_large_message(
    backend: &str,
    size: usize,
    limit: Option<usize>,
    source: Option<&BoxError>,
) -> String {
    match (limit, source) {
        (Some(l), _) => format!(
            "{backend}: {size} bytes is over the largest entry sent ({l} bytes, max_value_size); not stored"
        ),
        // Why the server does not take it (MySQL: its max_allowed_packet).
        (None, Some(why)) => {
            format!("{backend}: {size} bytes is more than the server accepts ({why}); not stored")
        }
        (None, None) => format!("{backend}: {size} bytes is more than the server accepts; not stored"),
    }
}

impl Error {
    /// Whether this is [`Error::TooLarge`]: the entry was too large to
    /// store, the store itself is usable.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Error::TooLarge { .. })
    }

    /// Whether this is [`Error::Rejected`]: the store answered, but an entry
    /// failed its seal check (the store itself is usable).
    pub fn is_rejected(&self) -> bool {
        matches!(self, Error::Rejected { .. })
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

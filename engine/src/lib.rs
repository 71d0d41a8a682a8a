//! # picocache-engine
//!
//! A log-structured, mmapped hash store for memoized results, shared by every
//! thread and process on a machine.
//!
//! - **One namespace per memoized function**, each with its own `maxsize`,
//!   optional byte limit and default TTL, and an LRU list kept in the index.
//! - **A log of checksummed records** (crc32 over header, key and value) in
//!   segment files, and a **hash index in an mmapped file** that maps a key to
//!   its record in one probe. The index is a cache of the log: it is validated
//!   at open and rebuilt from the log whenever it cannot be trusted.
//! - **Never a wrong value**: every lookup checks the record's crc and compares
//!   the full key; damage turns into a miss.
//! - **Many processes**: readers take no lock; writers serialize on `flock`,
//!   which the kernel releases when a writer dies. A per-key [`Lease`] lets
//!   memoizers compute a key once across processes.
//! - **Background compaction** reclaims overwritten, evicted, removed and
//!   expired records; files that may be mapped are never truncated.
//! - **Namespaces record their last use** ([`NamespaceStats::last_used`]),
//!   and [`Store::remove_unused_namespaces`] removes those nobody has used
//!   for a while (a memoized function's old versions).
//!
//! The on-disk format is specified in `FORMAT.md` at the repository root.
//!
//! # Layout of the source
//! One concern per module; each module's imports point down this list
//! (method calls between `impl` blocks of one type aside: `txn` runs
//! `recovery`'s steps before a mutation):
//!
//! - `error`, `format` (the on-disk layout), `hash`, `options` (the public
//!   value types), `io`, `sys`, `files`;
//! - `index` (the mapped index file) with `index/table.rs` (hash table, entry
//!   slots) and `index/lru.rs` (per-namespace LRU lists);
//! - `log` (listing and scanning segments) with `log/segment.rs` (segment
//!   maps, and the table of them, `Segments`);
//! - `ctx` (`WriteCtx`: the directory, options, segment maps, the index slot
//!   and name cache, group commit; the writer's only view of the store);
//! - `shared` (`Inner`: the `WriteCtx` plus the writer mutex, the lock file,
//!   the fork generation, the lease descriptions);
//! - `read` (lookups: `WriteCtx::find`, `Inner::lookup_at`, [`Located`]);
//! - `txn` (the `Writer`, which reaches only a `WriteCtx`; the writer lock,
//!   recovery before a mutation, begin and end of a mutation) with `writer`
//!   (mutations of the index), `writer/append.rs` (appends and rolls) and
//!   `writer/parts.rs` (puts of values in parts);
//! - `expiry`, `space` (full disks, the reserve file), `compaction`,
//!   `evict`, `trust`, `recovery` (opening or rebuilding the index),
//!   `verify`: each a part of the writer and the driver that runs it;
//! - `store` ([`Store`]), `namespace` ([`Namespace`], [`Lease`], [`Watch`]),
//!   `lifecycle`, `repair`: the public API.
//!
//! # Example
//! ```
//! use picocache_engine::{Limits, Options, Store};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), Options::default())?;
//! let ns = store.namespace(
//!     "my_module.slow_function",
//!     Limits { maxsize: Some(1000), max_bytes: None, ttl: Some(Duration::from_secs(3600)) },
//! )?;
//! ns.put(b"args", b"result")?;
//! assert_eq!(ns.get(b"args")?, Some(b"result".to_vec()));
//! assert_eq!(ns.get(b"other")?, None);
//! let stats = ns.stats()?;
//! assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
//! # Ok::<(), picocache_engine::Error>(())
//! ```

#![warn(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

/// Format version 2's base file (a mapped base and its lookup, and the
/// builder): crate-private, and public only with the feature `test-hooks`,
/// for the engine's tests and benchmarks; it is not an API.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod base;
#[cfg(not(feature = "test-hooks"))]
mod base;
mod closer;
mod compaction;
mod ctx;
mod error;
mod evict;
mod expiry;
mod files;
/// The on-disk layout (offsets, sizes, magic numbers, record encoding):
/// crate-private, and public only with the feature `test-hooks`, for the
/// engine's tests, the fuzzer and `FORMAT.md`'s checks; it is not an API.
/// What other crates need is re-exported at the root ([`MAX_NAME_LEN`],
/// [`MAX_NAMESPACES`]).
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod format;
#[cfg(not(feature = "test-hooks"))]
mod format;
pub(crate) mod hash;
mod index;
mod io;
mod lease;
mod lifecycle;
#[cfg_attr(not(test), allow(dead_code))]
mod locks;
mod log;
mod namespace;
mod options;
mod read;
mod recovery;
mod repair;
mod shared;
mod space;
mod store;
#[allow(unsafe_code)]
mod sys;
mod trust;
mod txn;
mod verify;
mod writer;

pub use error::{Error, Result};
pub use files::is_store;
/// The most namespaces one store holds.
pub use format::MAX_NAMESPACES;
/// The longest namespace name, in bytes.
pub use format::MAX_NAME_LEN;
pub(crate) use hash::name_hash;
pub use hash::{IdHash, IdHasher};
pub use io::{FaultIo, Io, RealIo};
pub use lease::Lease;
pub use namespace::{Confirmed, Namespace, Watch};
pub use options::{
    Durability, Limits, NamespaceStats, Options, StoreStats, VerifyReport, DEFAULT_LOCK_TIMEOUT,
};
pub use read::Located;
pub use repair::RepairReport;
pub use store::Store;
/// A counter bumped in every child process right after `fork()` (a
/// `pthread_atfork` handler): state of the parent's threads that a child
/// must not trust (in-flight computations) is tagged with it.
pub use sys::fork_generation;

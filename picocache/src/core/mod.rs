//! The memoization core that both languages use: the Rust [`Memo`] and the
//! Python package's native wrapper (`picocache/python/src/miss.rs`) are thin
//! adapters over it, so that a key computes once per process, a process
//! waits for another computing the same key, failures are reported, and
//! calls are counted by one set of rules.
//!
//! - [`flight`]: per-key in-flight deduplication inside a process, with
//!   re-entry (a thread computing a key that calls itself with the same
//!   arguments) told apart from waiting;
//! - [`lease`]: the store's per-key lease across processes, which a thread
//!   never waits for while it holds it itself;
//! - [`report`]: the failure policy: an error in strict mode, else a warning
//!   at most once a second per function, with a count of the ones left out;
//! - [`counts`]: this process's hits and misses of a function, the meaning
//!   of `cache_info()` in both languages (the store's entry count is its
//!   `currsize`);
//! - [`codec`]: the pluggable encoders of keys and values ([`codec::Bincode`]
//!   in Rust by default; the Python canonical key encoder is one);
//! - [`layout`]: digests of a value's serde layout and contents, taken from
//!   its `Serialize`, that [`codec::Bincode`] stores and checks.
//!
//! What differs by language stays with the adapter: how a warning is
//! emitted (the `log` crate, Python's `logging`) and how a thread waits.
//!
//! [`Memo`]: crate::Memo

pub mod codec;
pub mod counts;
pub mod flight;
pub mod layout;
pub mod lease;
pub mod report;

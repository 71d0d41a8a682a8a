//! This process's calls of one function: the hits and misses that
//! `cache_info()` reports in both languages, as `functools.lru_cache` counts
//! them (a call that ran the function is a miss; one answered without
//! running it, from the store, the process, or another caller computing the
//! same key, is a hit). `currsize` is not here: it is the store's entry
//! count, for every process.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Hits and misses of one function in this process.
#[derive(Debug, Default)]
pub struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Counts {
    /// Counts a call answered without running the function.
    #[inline]
    pub fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }

    /// Counts a hit when every change of these counts is serialized by a
    /// lock the caller holds (the Python adapter's GIL): a load and a
    /// store, cheaper than an atomic add on the hit path. Mixed with
    /// unserialized changes it may lose counts, never anything else.
    #[inline]
    pub fn hit_serialized(&self) {
        self.hits
            .store(self.hits.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// Counts a call that ran the function.
    #[inline]
    pub fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }

    /// Counts a call: a miss if it ran the function, else a hit if it
    /// returned a value (a failed call that did not run it counts nothing).
    pub fn call(&self, ran: bool, ok: bool) {
        if ran {
            self.miss();
        } else if ok {
            self.hit();
        }
    }

    /// (hits, misses).
    pub fn get(&self) -> (u64, u64) {
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// Back to zero (`cache_clear`).
    pub fn reset(&self) {
        self.hits.store(0, Relaxed);
        self.misses.store(0, Relaxed);
    }
}

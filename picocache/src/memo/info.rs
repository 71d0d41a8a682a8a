//! A memoized function's statistics and clearing it: [`CacheInfo`],
//! [`Memo::cache_info`], [`Memo::cache_clear`].

use serde::Serialize;

use super::Memo;
use crate::Result;

/// Statistics of a memoized function, like Python's `functools` `CacheInfo`.
///
/// `hits` and `misses` are this `Memo`'s calls in this process, counted as
/// `functools.lru_cache` and the Python package count them (a call that ran
/// the function is a miss, any other a hit); `currsize` is what the store
/// holds for the function (every process). [`Memo::cache_clear`] resets the
/// counts; [`Memo::stats`] gives the store's own counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct CacheInfo {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that ran the function.
    pub misses: u64,
    /// The most entries kept (`None`: unlimited).
    pub maxsize: Option<u64>,
    /// Entries currently held.
    pub currsize: u64,
}

impl<C> Memo<C> {
    /// The namespace's statistics as the store keeps them, with
    /// [`Stats::rejected`](crate::Stats::rejected): entries this process
    /// found failing their seal check.
    pub fn stats(&self) -> Result<crate::Stats> {
        self.namespace()?.stats()
    }

    /// The function's statistics (zeros and a log message if the store
    /// fails).
    pub fn cache_info(&self) -> CacheInfo {
        self.try_cache_info().unwrap_or_else(|e| {
            log::warn!("picocache: cache_info failed for {}: {e}", self.ns_name);
            CacheInfo {
                currsize: 0,
                ..self.counts()
            }
        })
    }

    fn counts(&self) -> CacheInfo {
        let (hits, misses) = self.counts.get();
        CacheInfo {
            hits,
            misses,
            maxsize: self.limits.maxsize,
            currsize: 0,
        }
    }

    /// The function's statistics: this process's hits and misses, the
    /// store's entries.
    pub fn try_cache_info(&self) -> Result<CacheInfo> {
        let s = self.namespace()?.stats()?;
        Ok(CacheInfo {
            currsize: s.entries,
            ..self.counts()
        })
    }

    /// Removes every entry of this function (in every process) and resets its
    /// counters; other functions' entries stay. A failure is logged.
    pub fn cache_clear(&self) {
        if let Err(e) = self.try_cache_clear() {
            log::warn!("picocache: cache_clear failed for {}: {e}", self.ns_name);
        }
    }

    /// Like [`Memo::cache_clear`], returning the failure.
    pub fn try_cache_clear(&self) -> Result<()> {
        self.counts.reset();
        self.tier.clear();
        self.namespace()?.clear()
    }
}

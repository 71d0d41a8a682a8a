//! The state every handle of one store shares ([`Inner`]): the writer's
//! context ([`WriteCtx`]: directory, options, segment maps, the index slot,
//! group commit), and what serializes writers and guards the process: the
//! in-process writer mutex, the lock file (`flock`), the fork generation,
//! the lease descriptions. The modules above it (reads, transactions, the
//! drivers of recovery, compaction, expiry, the public API) work on it;
//! the writer itself sees only the [`WriteCtx`]. Depends on `ctx`, `index`,
//! `format`, `options`.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::ctx::{WriteCtx, WriterState};
use crate::error::{Error, Result};
use crate::format::nsr;
use crate::index::IndexMap;
use crate::options::{Limits, NamespaceStats};
use crate::sys;

pub(crate) struct Inner {
    /// What the writer works through.
    pub(crate) ctx: WriteCtx,
    pub(crate) lock_file: sys::LockFile,
    pub(crate) writer: Mutex<WriterState>,
    pub(crate) fork_gen: u64,
    /// Open descriptions of `leases` not holding a lock, for reuse: opening
    /// one per lease cost more than the lock itself. (Each lease needs its
    /// own description: OFD locks of one description do not exclude each
    /// other.)
    pub(crate) lease_files: Arc<Mutex<Vec<sys::LockFile>>>,
    /// The back-off of writer-lock waits after a wait timed out (see
    /// `txn.rs`).
    pub(crate) lock_backoff: Mutex<LockBackoff>,
}

/// After a wait for the writer lock timed out (its holder stopped: Ctrl-Z,
/// a debugger, a frozen container), writes of this handle do not wait for
/// it again until `until`: they try it once and fail at once with
/// [`Error::Locked`] while it is held. The window is 1 s after the first
/// timeout and doubles (to 10 s) while waits keep timing out; a lock taken
/// ends it. Every miss of a memoizer waited the whole `lock_timeout` (twice:
/// its lease, then its store) for as long as the holder stayed stopped.
#[derive(Default)]
pub(crate) struct LockBackoff {
    pub(crate) until: Option<std::time::Instant>,
    pub(crate) window: std::time::Duration,
}

pub(crate) fn ns_stats(idx: &IndexMap, id: u32) -> NamespaceStats {
    NamespaceStats {
        name: idx
            .ns_name(id)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        entries: idx.ns_get(id, nsr::ENTRIES),
        live_bytes: idx.ns_get(id, nsr::LIVE_BYTES),
        hits: idx.ns_get(id, nsr::HITS),
        misses: idx.ns_get(id, nsr::MISSES),
        evictions: idx.ns_get(id, nsr::EVICTIONS),
        rejected: idx.ns_get(id, nsr::REJECTED),
        limits: Limits::decode(
            idx.ns_get(id, nsr::MAXSIZE),
            idx.ns_get(id, nsr::MAX_BYTES),
            idx.ns_get(id, nsr::TTL_MS),
        ),
        last_used: Some(idx.ns_get(id, nsr::LAST_USED)).filter(|&t| t != 0),
    }
}

impl Inner {
    pub(crate) fn check_fork(&self) -> Result<()> {
        if sys::fork_generation() != self.fork_gen {
            return Err(Error::Forked);
        }
        Ok(())
    }

    /// The current index, replacing a retired one first.
    pub(crate) fn current_index(&self) -> Result<Arc<IndexMap>> {
        let idx = self.ctx.index();
        if idx.retired() {
            return self.with_writer_ro(|w| Ok(w.idx.clone()));
        }
        Ok(idx)
    }
}

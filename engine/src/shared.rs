//! The state every handle of one store shares ([`Inner`]): its directory,
//! options, index, segment maps, writer and commit state. The modules above
//! it (reads, transactions, recovery, compaction, expiry, verify, the public
//! API) work on it; it depends only on `format`, `index/` and `log/`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::format::{self, hdr, nsr, RecordHeader};
use crate::hash::IdHasher;
use crate::index::IndexMap;
use crate::log::segment::Segment;
use crate::options::{Limits, NamespaceStats, Options};
use crate::sys;

/// Appends not yet made durable, for group commit.
#[derive(Default)]
pub(crate) struct CommitState {
    /// Segments with unsynced appends.
    pub(crate) pending: std::collections::BTreeSet<u32>,
    /// Appends so far (a commit number).
    pub(crate) appended: u64,
    /// Every append numbered up to this one is durable.
    pub(crate) synced: u64,
}

/// Per-process writer state (behind the in-process writer mutex).
#[derive(Default)]
pub(crate) struct WriterState {
    pub(crate) buf: Vec<u8>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) mark_clean: bool,
    /// The append may use the active segment's headroom (the records in
    /// force of a segment evicted on a full disk; see `log/append.rs`).
    pub(crate) use_headroom: bool,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) commit: Mutex<CommitState>,
    pub(crate) sync_lock: Mutex<()>,
    pub(crate) opts: Options,
    pub(crate) lock_file: File,
    pub(crate) index: RwLock<Arc<IndexMap>>,
    pub(crate) segs: RwLock<HashMap<u32, Arc<Segment>, IdHasher>>,
    pub(crate) writer: Mutex<WriterState>,
    pub(crate) fork_gen: u64,
    pub(crate) epoch_seen: AtomicU64,
    pub(crate) boot_id: (u64, u64),
    /// The store could not be opened for writing (read-only filesystem, or no
    /// permission): lookups only, the index is mapped read-only.
    pub(crate) read_only: bool,
    pub(crate) names: RwLock<HashMap<String, u32>>,
    /// Open descriptions of `leases` not holding a lock, for reuse: opening
    /// one per lease cost more than the lock itself. (Each lease needs its
    /// own description: OFD locks of one description do not exclude each
    /// other.)
    pub(crate) lease_files: Arc<Mutex<Vec<File>>>,
}

/// The error of an operation that a read-only store cannot do.
pub(crate) fn read_only_error(dir: &Path, what: &str) -> Error {
    Error::ReadOnly {
        path: dir.to_owned(),
        what: what.to_owned(),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    /// The modes of the directories and files this store creates.
    pub(crate) fn modes(&self) -> crate::files::Modes {
        crate::files::Modes::new(self.opts.group_access)
    }

    pub(crate) fn check_fork(&self) -> Result<()> {
        if sys::fork_generation() != self.fork_gen {
            return Err(Error::Forked);
        }
        Ok(())
    }

    /// The current index, replacing a retired one first.
    pub(crate) fn current_index(&self) -> Result<Arc<IndexMap>> {
        let idx = self.index.read().clone();
        if idx.retired() {
            return self.with_writer_ro(|w| Ok(w.idx.clone()));
        }
        Ok(idx)
    }

    pub(crate) fn install_index(&self, idx: Arc<IndexMap>) {
        *self.index.write() = idx;
    }

    pub(crate) fn forget_names(&self) {
        self.names.write().clear();
    }

    /// Drops maps of segments that compaction retired.
    pub(crate) fn prune_segments(&self, idx: &IndexMap) {
        let epoch = idx.hget(hdr::EPOCH);
        if self.epoch_seen.load(Ordering::Relaxed) != epoch {
            self.epoch_seen.store(epoch, Ordering::Relaxed);
            self.segs.write().retain(|&id, _| idx.seg_row(id).is_some());
        }
    }

    /// Runs `f` on segment `id`, opening or remapping it as needed.
    pub(crate) fn with_segment<R>(
        &self,
        id: u32,
        mut f: impl FnMut(&Segment) -> std::result::Result<R, ()>,
    ) -> Option<R> {
        if id == 0 {
            return None;
        }
        {
            let segs = self.segs.read();
            if let Some(s) = segs.get(&id) {
                if let Ok(r) = f(s) {
                    return Some(r);
                }
            }
        }
        // Not open yet, or its map is too short: (re)open it.
        let reserve = self.opts.segment_size.max(format::DEFAULT_SEGMENT_SIZE);
        let seg = Arc::new(Segment::open(&self.dir, id, reserve, !self.read_only).ok()?);
        let r = f(&seg).ok();
        self.segs.write().insert(id, seg);
        r
    }

    pub(crate) fn segment(&self, id: u32) -> Option<Arc<Segment>> {
        if let Some(s) = self.segs.read().get(&id) {
            return Some(s.clone());
        }
        self.with_segment(id, |_| Ok(()))?;
        self.segs.read().get(&id).cloned()
    }

    /// Reads the (unchecked) header of the record at `loc`.
    pub(crate) fn read_header(&self, loc: u64) -> Option<RecordHeader> {
        self.with_segment((loc >> 32) as u32, |s| s.read_header(loc & 0xffff_ffff))
            .flatten()
    }

    /// Reads and checks the record at `loc` into `buf`.
    pub(crate) fn read_record(&self, loc: u64, buf: &mut Vec<u8>) -> Option<RecordHeader> {
        let seg = (loc >> 32) as u32;
        let off = loc & 0xffff_ffff;
        self.with_segment(seg, |s| s.read_record(off, buf))
            .flatten()
    }
}

/// The time for last-use stamps, in Unix seconds: the coarse system clock, or
/// the test clock of [`Options::last_use_clock`].
#[inline]
pub(crate) fn use_clock(opts: &Options) -> u64 {
    match &opts.last_use_clock {
        None => crate::sys::coarse_unix_secs(),
        Some(c) => c.load(Ordering::Relaxed),
    }
}

impl Inner {
    /// [`use_clock`] of this store's options.
    #[inline]
    pub(crate) fn use_clock(&self) -> u64 {
        use_clock(&self.opts)
    }
}

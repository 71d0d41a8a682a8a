//! The writer's context ([`WriteCtx`]): the part of a store's shared state
//! that the writer ([`crate::txn::Writer`], extended by `writer.rs`,
//! `writer/append.rs`, `writer/parts.rs`, `expiry.rs`, `evict.rs`,
//! `compaction.rs`, `recovery.rs`, `verify.rs`, `lifecycle.rs`) works
//! through, and nothing else:
//!
//! - the store's configuration: directory, options, boot id, whether it is
//!   read-only (plain values);
//! - the segment maps ([`Segments`]): reading records, dropping maps;
//! - the slot holding the current index, with the namespace-name cache read
//!   from it: installing a new index, forgetting names;
//! - group commit: noting appends, syncing them;
//! - the reserve file (`space.rs`), and key lookups (`read.rs`), as methods.
//!
//! Its fields are private: the writer reaches each through a named method.
//! What serializes writers (the in-process writer mutex, the `flock`, the
//! compaction lock), the fork generation and the lease descriptions are in
//! [`crate::shared::Inner`], which the writer cannot reach.
//!
//! Depends on `format`, `options`, `files`, `io`, `index` and
//! `log/segment.rs`; everything from `read` up depends on it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::error::{Error, Result};
use crate::format;
use crate::format::v1::RecordHeader;
use crate::index::IndexMap;
use crate::io::Io;
use crate::log::segment::{Segment, Segments};
use crate::options::Options;

/// Appends not yet made durable, for group commit.
#[derive(Default)]
struct CommitState {
    /// Segments with unsynced appends.
    pending: BTreeSet<u32>,
    /// Appends so far (a commit number).
    appended: u64,
    /// Every append numbered up to this one is durable.
    synced: u64,
}

/// Per-process writer state (behind the in-process writer mutex).
#[derive(Default)]
pub(crate) struct WriterState {
    pub(crate) buf: Vec<u8>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) mark_clean: bool,
    /// The append may use the active segment's headroom (the records in
    /// force of a segment evicted on a full disk; see `writer/append.rs`).
    pub(crate) use_headroom: bool,
}

/// See the module documentation.
pub(crate) struct WriteCtx {
    dir: PathBuf,
    opts: Options,
    boot_id: (u64, u64),
    /// The store could not be opened for writing (read-only filesystem, or no
    /// permission): lookups only, the index is mapped read-only.
    read_only: bool,
    segs: Segments,
    index: RwLock<Arc<IndexMap>>,
    /// Namespace name -> row, as last resolved in the index.
    names: RwLock<HashMap<String, u32>>,
    commit: Mutex<CommitState>,
    sync_lock: Mutex<()>,
}

impl WriteCtx {
    pub(crate) fn new(
        dir: PathBuf,
        opts: Options,
        boot_id: (u64, u64),
        read_only: bool,
        index: Arc<IndexMap>,
    ) -> WriteCtx {
        let reserve = opts.segment_size.max(format::DEFAULT_SEGMENT_SIZE);
        WriteCtx {
            segs: Segments::new(&dir, reserve, !read_only),
            dir,
            opts,
            boot_id,
            read_only,
            index: RwLock::new(index),
            names: RwLock::new(HashMap::new()),
            commit: Mutex::new(CommitState::default()),
            sync_lock: Mutex::new(()),
        }
    }

    // ---- configuration ------------------------------------------------------

    /// The store's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn opts(&self) -> &Options {
        &self.opts
    }

    /// The I/O of the store's options.
    pub(crate) fn io(&self) -> &dyn Io {
        self.opts.io.as_ref()
    }

    /// The modes of the directories and files this store creates.
    pub(crate) fn modes(&self) -> crate::files::Modes {
        crate::files::Modes::new(self.opts.group_access)
    }

    /// The running kernel's boot id (or the test hook's).
    pub(crate) fn boot_id(&self) -> (u64, u64) {
        self.boot_id
    }

    pub(crate) fn read_only(&self) -> bool {
        self.read_only
    }

    /// [`use_clock`] of this store's options.
    #[inline]
    pub(crate) fn use_clock(&self) -> u64 {
        use_clock(&self.opts)
    }

    // ---- segment maps -------------------------------------------------------

    pub(crate) fn segment(&self, id: u32) -> Option<Arc<Segment>> {
        self.segs.get(id)
    }

    /// Reads the (unchecked) header of the record at `loc`.
    pub(crate) fn read_header(&self, loc: u64) -> Option<RecordHeader> {
        self.segs.read_header(loc)
    }

    /// Reads and checks the record at `loc` into `buf`.
    pub(crate) fn read_record(&self, loc: u64, buf: &mut Vec<u8>) -> Option<RecordHeader> {
        self.segs.read_record(loc, buf)
    }

    /// Drops this process's map of segment `id`.
    pub(crate) fn forget_segment(&self, id: u32) {
        self.segs.forget(id)
    }

    /// Drops maps of segments that compaction retired.
    pub(crate) fn prune_segments(&self, idx: &IndexMap) {
        self.segs.prune(idx)
    }

    // ---- the index slot -----------------------------------------------------

    /// The index this process reads (maybe retired: see
    /// `Inner::current_index`).
    pub(crate) fn index(&self) -> Arc<IndexMap> {
        self.index.read().clone()
    }

    /// [`WriteCtx::index`] without the clone, for lookups.
    pub(crate) fn index_guard(&self) -> RwLockReadGuard<'_, Arc<IndexMap>> {
        self.index.read()
    }

    /// Makes `idx` the index this process reads.
    pub(crate) fn install_index(&self, idx: Arc<IndexMap>) {
        *self.index.write() = idx;
    }

    /// The row namespace `name` had when it was last resolved.
    pub(crate) fn cached_name(&self, name: &str) -> Option<u32> {
        self.names.read().get(name).copied()
    }

    pub(crate) fn cache_name(&self, name: &str, id: u32) {
        self.names.write().insert(name.to_owned(), id);
    }

    /// Forgets every resolved name (a namespace was removed).
    pub(crate) fn forget_names(&self) {
        self.names.write().clear();
    }

    // ---- group commit -------------------------------------------------------

    /// Notes an unsynced append to segment `id`.
    pub(crate) fn note_pending(&self, id: u32) {
        self.commit.lock().pending.insert(id);
    }

    /// Counts one more commit (an append call).
    pub(crate) fn count_commit(&self) {
        self.commit.lock().appended += 1;
    }

    /// The number of the last commit.
    pub(crate) fn appended(&self) -> u64 {
        self.commit.lock().appended
    }

    /// Makes every append numbered up to `upto` durable. Callers arriving
    /// while another thread syncs wait for it and are usually covered by its
    /// fsync: several writers committing together share one.
    pub(crate) fn group_sync(&self, upto: u64) -> Result<()> {
        if self.commit.lock().synced >= upto {
            return Ok(());
        }
        let _g = self.sync_lock.lock();
        if self.commit.lock().synced >= upto {
            return Ok(());
        }
        self.sync_pending()
    }

    /// Syncs every segment with unsynced appends.
    pub(crate) fn sync_pending(&self) -> Result<()> {
        let (target, pending) = {
            let mut c = self.commit.lock();
            (c.appended, std::mem::take(&mut c.pending))
        };
        for (i, &id) in pending.iter().enumerate() {
            if let Some(seg) = self.segment(id) {
                if let Err(e) = self.opts.io.sync(&seg.file) {
                    // Whatever was not synced stays pending.
                    self.commit
                        .lock()
                        .pending
                        .extend(pending.iter().skip(i).copied());
                    return Err(e.into());
                }
            }
        }
        let mut c = self.commit.lock();
        c.synced = c.synced.max(target);
        Ok(())
    }
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

/// The time for last-use stamps, in Unix seconds: the coarse system clock, or
/// the test clock of [`Options::last_use_clock`].
#[inline]
pub(crate) fn use_clock(opts: &Options) -> u64 {
    match &opts.last_use_clock {
        None => crate::sys::coarse_unix_secs(),
        Some(c) => c.load(Ordering::Relaxed),
    }
}

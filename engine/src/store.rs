//! The public store: open, namespaces, reads, and the plumbing around the
//! writer (locks, fork detection, index replacement, segment maps).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::format::{self, ent, hdr, kind, nsr, segr, RecordHeader, REC_HEADER_LEN};
use crate::hash::{key_hash, IdHasher};
use crate::index::IndexMap;
use crate::log::segment::Segment;
use crate::options::{Durability, Limits, NamespaceStats, Options, StoreStats, VerifyReport};
use crate::sys::{self};
use crate::writer::{Writer, WriterState};

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

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) commit: Mutex<CommitState>,
    sync_lock: Mutex<()>,
    pub(crate) opts: Options,
    pub(crate) lock_file: File,
    pub(crate) index: RwLock<Arc<IndexMap>>,
    pub(crate) segs: RwLock<HashMap<u32, Arc<Segment>, IdHasher>>,
    pub(crate) writer: Mutex<WriterState>,
    fork_gen: u64,
    pub(crate) epoch_seen: AtomicU64,
    pub(crate) boot_id: (u64, u64),
    /// The store could not be opened for writing (read-only filesystem, or no
    /// permission): lookups only, the index is mapped read-only.
    pub(crate) read_only: bool,
    names: RwLock<HashMap<String, u32>>,
    /// Open descriptions of `leases` not holding a lock, for reuse: opening
    /// one per lease cost more than the lock itself. (Each lease needs its
    /// own description: OFD locks of one description do not exclude each
    /// other.)
    lease_files: Arc<Mutex<Vec<File>>>,
}

struct Background {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    fork_gen: u64,
}

impl Drop for Background {
    fn drop(&mut self) {
        if sys::fork_generation() != self.fork_gen {
            // In a forked child the thread does not exist and its locks may be
            // held forever: leave everything alone.
            return;
        }
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// A store: one directory holding a log and its index, shared by every
/// thread and process that opens it.
///
/// `Store` is cheap to clone; clones share one set of maps and one
/// background compaction thread.
///
/// # Example
/// ```
/// use picocache_engine::{Limits, Options, Store};
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path(), Options::default())?;
/// let fib = store.namespace("demo.fib", Limits::maxsize(Some(128)))?;
/// fib.put(b"10", b"55")?;
/// assert_eq!(fib.get(b"10")?.as_deref(), Some(&b"55"[..]));
/// assert_eq!(fib.stats()?.hits, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    _bg: Arc<Background>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// A handle on one namespace of a [`Store`].
#[derive(Clone, Debug)]
pub struct Namespace {
    store: Store,
    /// The namespace's row; changes if the namespace is removed (by any
    /// process) and this handle defines it again.
    pub(crate) id: Arc<AtomicU32>,
    pub(crate) name: Arc<str>,
    pub(crate) name_hash: u64,
    /// The limits to define the namespace with again if it is removed.
    pub(crate) limits: (u64, u64, u64),
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The error of an operation that a read-only store cannot do.
pub(crate) fn read_only_error(dir: &Path, what: &str) -> Error {
    Error::ReadOnly {
        path: dir.to_owned(),
        what: what.to_owned(),
    }
}

/// Whether opening a file for writing failed because the store cannot be
/// written (a read-only filesystem, or no permission).
fn is_read_only_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
    )
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn read_boot_id() -> (u64, u64) {
    match std::fs::read("/proc/sys/kernel/random/boot_id") {
        Ok(b) => {
            let h = xxhash_rust::xxh3::xxh3_128(&b);
            ((h >> 64) as u64, h as u64)
        }
        Err(_) => (0, 0),
    }
}

const NETWORK_FS: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0x517B, "smb"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x5346_414F, "afs"),
    (0x0102_1997, "9p"),
    (0x00C3_6400, "ceph"),
    (0x564C, "ncp"),
    (0x7372_7279, "coda"),
];

/// Counts a hit on entry `e` of `ns`: its hit counter, its last use (coarsely:
/// `now` is the use clock) and, in a namespace with a limit (the only kind
/// that evicts), the use clock and the entry's recency stamp. (An unlimited
/// namespace skips the stamp, a store into a third cache line of the lookup;
/// see FORMAT.md, "Hits and recency".)
#[inline]
fn count_hit(idx: &IndexMap, ns: u32, e: u32, now: u64) {
    idx.ns_add(ns, nsr::HITS, 1);
    crate::lifecycle::touch_coarse(idx, ns, now);
    if idx.ns_get(ns, nsr::MAXSIZE) == u64::MAX && idx.ns_get(ns, nsr::MAX_BYTES) == u64::MAX {
        return;
    }
    let stamp = idx.ns(ns, nsr::CLOCK).fetch_add(1, Ordering::AcqRel) + 1;
    // Last, so that no locked instruction waits for this store's cache miss.
    idx.e(e, ent::STAMP).store(stamp, Ordering::Relaxed);
}

/// Where a lookup found a key's live record: a token that
/// [`Namespace::hit_located`] checks later without reading the record again.
///
/// A record is never changed once written, and within one index lineage (the
/// index's generation word: a new one whenever the index is rebuilt from the
/// log, carried over when it is copied into a larger file) a location is
/// never reused. So while the key's entry still points at this location, the
/// record there, hence the value, is the one the lookup returned: an
/// in-process cache of decoded values may serve it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    lineage: u64,
    loc: u64,
    expire_ms: u64,
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`.
    ///
    /// # Errors
    /// [`Error::NetworkFilesystem`] on NFS/CIFS unless allowed,
    /// [`Error::Version`] for a log of another format version, [`Error::Io`].
    /// A damaged or missing index is not an error: it is rebuilt from the log.
    pub fn open(path: impl AsRef<Path>, mut opts: Options) -> Result<Store> {
        let dir = path.as_ref().to_path_buf();
        // An existing store's directory says whether it is shared: files this
        // process creates follow it, whatever this process asked for.
        let existing = crate::files::dir_is_group_shared(&dir);
        if let Some(shared) = existing {
            opts.group_access = shared;
        }
        let modes = crate::files::Modes::new(opts.group_access);
        if existing.is_none() {
            if opts.inspect_only {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no store directory at {}", dir.display()),
                )));
            }
            modes.create_dir(&dir)?;
        }
        if !opts.allow_network_filesystem {
            let t = sys::fs_type(&dir)?;
            if let Some((_, name)) = NETWORK_FS.iter().find(|(m, _)| *m == t) {
                return Err(Error::NetworkFilesystem {
                    path: dir,
                    fs_type: (*name).into(),
                });
            }
        }
        // Segments sized to a small filesystem, so that several fit.
        opts.segment_size = crate::space::segment_size_for(&dir, opts.segment_size);
        // A read-only filesystem, or a directory this process may not write:
        // the store opens read-only (lookups only).
        // Inspection opens read-only, and creates no lock file: without one
        // (no process ever opened the store to write), the directory itself
        // is locked.
        let (lock_file, read_only) = if opts.inspect_only {
            match File::open(dir.join("lock")) {
                Ok(f) => (f, true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (File::open(&dir)?, true),
                Err(e) => return Err(e.into()),
            }
        } else {
            match modes.open(&dir.join("lock"), false) {
                Ok(f) => (f, false),
                Err(e) if is_read_only_error(&e) => (File::open(dir.join("lock"))?, true),
                Err(e) => return Err(e.into()),
            }
        };
        let boot_id = match opts.boot_id {
            Some(b) => ((b >> 64) as u64, b as u64),
            None => read_boot_id(),
        };
        let fork_gen = sys::fork_generation();
        let (index, rebuilt) =
            crate::recovery::open_or_rebuild_index(&dir, &lock_file, &opts, boot_id, read_only)?;
        let inner = Arc::new(Inner {
            dir,
            commit: Mutex::new(CommitState::default()),
            sync_lock: Mutex::new(()),
            lock_file,
            index: RwLock::new(index),
            segs: RwLock::new(HashMap::default()),
            writer: Mutex::new(WriterState::default()),
            fork_gen,
            epoch_seen: AtomicU64::new(0),
            boot_id,
            read_only,
            names: RwLock::new(HashMap::new()),
            lease_files: Arc::new(Mutex::new(Vec::new())),
            opts,
        });
        // Make sure there is an active segment, and that a rebuilt index
        // honours every namespace's limits; an unknown last use (an index of
        // an earlier build) counts from now.
        let now = inner.use_clock();
        if !read_only {
            inner.with_writer(|w| {
                w.after_open(rebuilt)?;
                w.stamp_unknown_last_use(now);
                Ok(())
            })?;
            inner.ensure_reserve();
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = if inner.opts.background_compaction && !read_only {
            let weak = Arc::downgrade(&inner);
            let stop2 = stop.clone();
            let interval = inner.opts.compaction_interval;
            Some(
                std::thread::Builder::new()
                    .name("picocache-compactor".into())
                    .spawn(move || compactor_loop(weak, stop2, interval))?,
            )
        } else {
            None
        };
        let bg = Arc::new(Background {
            stop,
            thread: Mutex::new(thread),
            fork_gen,
        });
        Ok(Store { inner, _bg: bg })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// True if the store was opened read-only: its filesystem is read-only or
    /// this process may not write its directory. Lookups work (without
    /// counting hits, misses or recency); every write fails with
    /// [`Error::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Opens namespace `name`, creating it with `limits` if it does not exist;
    /// if it exists with other limits, the new limits replace them (and are
    /// enforced at once).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the name is empty or longer than
    /// [`format::MAX_NAME_LEN`] bytes, or the store already has
    /// [`format::MAX_NAMESPACES`] namespaces.
    pub fn namespace(&self, name: &str, limits: Limits) -> Result<Namespace> {
        self.inner.check_fork()?;
        if name.is_empty() || name.len() > format::MAX_NAME_LEN {
            return Err(Error::InvalidArgument(format!(
                "namespace name must be 1 to {} bytes, got {}",
                format::MAX_NAME_LEN,
                name.len()
            )));
        }
        let name_hash = crate::name_hash(name.as_bytes());
        let enc = limits.encode();
        if let Some(&id) = self.inner.names.read().get(name) {
            let idx = self.inner.index.read().clone();
            if idx.ns_get(id, nsr::NAME_HASH) == name_hash
                && (
                    idx.ns_get(id, nsr::MAXSIZE),
                    idx.ns_get(id, nsr::MAX_BYTES),
                    idx.ns_get(id, nsr::TTL_MS),
                ) == enc
            {
                if !self.inner.read_only {
                    crate::lifecycle::touch(&idx, id, self.inner.use_clock());
                }
                return Ok(Namespace {
                    store: self.clone(),
                    id: Arc::new(AtomicU32::new(id)),
                    name: name.into(),
                    name_hash,
                    limits: enc,
                });
            }
        }
        if self.inner.read_only {
            // Nothing can be defined: an existing namespace opens with the
            // limits it has.
            return self.existing_namespace(name)?.ok_or_else(|| {
                read_only_error(
                    &self.inner.dir,
                    &format!("namespace {name:?} does not exist and cannot be created"),
                )
            });
        }
        let id = self.inner.retry_if_full(false, || {
            self.inner.with_writer(|w| {
                let id = w.define_namespace(name.as_bytes(), enc)?;
                crate::lifecycle::touch(&w.idx, id, w.inner.use_clock());
                Ok(id)
            })
        })?;
        self.inner.names.write().insert(name.to_owned(), id);
        Ok(Namespace {
            store: self.clone(),
            id: Arc::new(AtomicU32::new(id)),
            name: name.into(),
            name_hash,
            limits: enc,
        })
    }

    /// Opens an existing namespace without changing its limits.
    /// `Ok(None)` if there is no namespace of that name.
    pub fn existing_namespace(&self, name: &str) -> Result<Option<Namespace>> {
        self.inner.check_fork()?;
        let idx = self.inner.current_index()?;
        let h = crate::name_hash(name.as_bytes());
        for id in 0..format::MAX_NAMESPACES as u32 {
            if idx.ns_get(id, nsr::NAME_LEN) != 0
                && idx.ns_get(id, nsr::NAME_HASH) == h
                && idx.ns_name(id).as_deref() == Some(name.as_bytes())
            {
                return Ok(Some(Namespace {
                    store: self.clone(),
                    id: Arc::new(AtomicU32::new(id)),
                    name: name.into(),
                    name_hash: h,
                    limits: (
                        idx.ns_get(id, nsr::MAXSIZE),
                        idx.ns_get(id, nsr::MAX_BYTES),
                        idx.ns_get(id, nsr::TTL_MS),
                    ),
                }));
            }
        }
        Ok(None)
    }

    /// Names of every namespace.
    pub fn namespace_names(&self) -> Result<Vec<String>> {
        self.inner.check_fork()?;
        let idx = self.inner.current_index()?;
        Ok((0..format::MAX_NAMESPACES as u32)
            .filter_map(|id| idx.ns_name(id))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect())
    }

    /// Statistics of the whole store.
    pub fn stats(&self) -> Result<StoreStats> {
        self.inner.check_fork()?;
        let idx = self.inner.current_index()?;
        let mut s = StoreStats {
            segments: 0,
            log_bytes: 0,
            dead_bytes: 0,
            index_bytes: idx.layout.file_len as u64,
            entries: idx.hget(hdr::ENTRY_COUNT),
            compactions: idx.hget(hdr::COMPACTIONS),
            namespaces: Vec::new(),
        };
        for (row, _) in idx.seg_rows() {
            s.segments += 1;
            s.log_bytes += idx.seg(row, segr::TOTAL).load(Ordering::Acquire);
            s.dead_bytes += idx.seg(row, segr::DEAD).load(Ordering::Acquire);
        }
        for id in 0..format::MAX_NAMESPACES as u32 {
            if idx.ns_get(id, nsr::NAME_LEN) != 0 {
                s.namespaces.push(ns_stats(&idx, id));
            }
        }
        Ok(s)
    }

    /// Makes everything written so far durable (fdatasync of the log, msync of
    /// the index) and marks the store clean.
    pub fn sync(&self) -> Result<()> {
        self.inner.with_writer(|w| w.sync_all())
    }

    /// Compacts now: seals the active segment and rewrites every segment that
    /// holds dead records, then retires the old files.
    pub fn compact(&self) -> Result<()> {
        self.inner.compact(true).map(|_| ())
    }

    /// Checks every index entry and every log record.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.inner.with_writer_ro(|w| w.verify())
    }

    /// Discards the index and rebuilds it from the log.
    pub fn rebuild_index(&self) -> Result<()> {
        self.inner.with_writer(|w| w.rebuild())
    }

    /// Total bytes of the store's files on disk (allocated lengths).
    pub fn disk_usage(&self) -> Result<u64> {
        let mut total = 0;
        for e in std::fs::read_dir(&self.inner.dir)? {
            let e = e?;
            total += e.metadata()?.len();
        }
        Ok(total)
    }
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

fn compactor_loop(weak: Weak<Inner>, stop: Arc<(Mutex<bool>, Condvar)>, interval: Duration) {
    loop {
        {
            let mut stopped = stop.0.lock();
            if *stopped {
                return;
            }
            stop.1.wait_for(&mut stopped, interval);
            if *stopped {
                return;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.check_fork().is_err() {
            return;
        }
        // Errors are retried at the next tick; a full disk must not kill the thread.
        let _ = inner.sweep_expired(false);
        let _ = inner.compact(false);
    }
}

/// Outcome of one lookup.
enum Found {
    Hit,
    Miss,
    Expired,
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

    /// Finds the live PUT record of `key` in `ns`: (entry, header), with the
    /// record body left in `buf`.
    pub(crate) fn find(
        &self,
        idx: &IndexMap,
        ns: u32,
        key: &[u8],
        h: u64,
        buf: &mut Vec<u8>,
    ) -> Option<(u32, RecordHeader)> {
        self.find_at(idx, ns, key, h, buf).map(|(e, rh, _)| (e, rh))
    }

    /// [`Inner::find`], also returning the record's location.
    pub(crate) fn find_at(
        &self,
        idx: &IndexMap,
        ns: u32,
        key: &[u8],
        h: u64,
        buf: &mut Vec<u8>,
    ) -> Option<(u32, RecordHeader, u64)> {
        let buckets = idx.layout.buckets;
        let tag = h >> 32;
        for step in 0..buckets {
            let pos = h.wrapping_add(step);
            let w = idx.bucket(pos).load(Ordering::Acquire);
            if w == 0 {
                return None;
            }
            if w >> 32 != tag {
                continue;
            }
            let e = (w as u32).wrapping_sub(1);
            if !idx.valid_entry(e) {
                continue;
            }
            let loc = idx.bucket_loc(pos).load(Ordering::Acquire);
            if let Some(rh) = self.read_record(loc, buf) {
                let klen = rh.klen as usize;
                if rh.kind == kind::PUT
                    && rh.ns == ns
                    && buf.get(REC_HEADER_LEN..REC_HEADER_LEN + klen) == Some(key)
                {
                    return Some((e, rh, loc));
                }
            }
        }
        None
    }

    fn lookup<R>(&self, ns: u32, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        self.lookup_at(ns, key, true, |v, _| f(v))
    }

    /// The lookup: `count` says whether it is a use (a hit or a miss counted,
    /// a hit refreshing recency) or a peek that changes nothing.
    fn lookup_at<R>(
        &self,
        ns: u32,
        key: &[u8],
        count: bool,
        f: impl FnOnce(&[u8], Located) -> R,
    ) -> Result<Option<R>> {
        self.check_fork()?;
        // A read-only store counts nothing: its index is mapped read-only.
        let count = count && !self.read_only;
        let h = key_hash(ns, key);
        SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            loop {
                let guard = self.index.read();
                let idx: &IndexMap = &guard;
                if idx.retired() {
                    drop(guard);
                    self.current_index()?;
                    continue;
                }
                self.prune_segments(idx);
                let mut hit_entry = None;
                let mut located = Located {
                    lineage: 0,
                    loc: 0,
                    expire_ms: 0,
                };
                let found = match self.find_at(idx, ns, key, h, &mut buf) {
                    Some((e, rh, loc)) => {
                        if rh.expire_ms != 0 && now_ms() >= rh.expire_ms {
                            Found::Expired
                        } else {
                            hit_entry = Some(e);
                            located = Located {
                                lineage: idx.hget(hdr::GENERATION),
                                loc,
                                expire_ms: rh.expire_ms,
                            };
                            Found::Hit
                        }
                    }
                    None => Found::Miss,
                };
                // A concurrent index replacement may have made what we read
                // stale: look again in the new index.
                if idx.retired() {
                    continue;
                }
                return Ok(match found {
                    Found::Hit => {
                        if count {
                            if let Some(e) = hit_entry {
                                count_hit(idx, ns, e, self.use_clock());
                            }
                        }
                        let klen = buf
                            .get(12..16)
                            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
                        buf.get(REC_HEADER_LEN + klen..).map(|v| f(v, located))
                    }
                    Found::Miss | Found::Expired => {
                        if count {
                            idx.ns_add(ns, nsr::MISSES, 1);
                            crate::lifecycle::touch_coarse(idx, ns, self.use_clock());
                        }
                        None
                    }
                });
            }
        })
    }

    /// Whether the record `at` names is still the live entry of its key (and
    /// unexpired); if so, counts a hit on it as a lookup would.
    fn hit_located(&self, ns: u32, name_hash: u64, key_hash: u64, at: &Located) -> Result<bool> {
        self.check_fork()?;
        if at.expire_ms != 0 && now_ms() >= at.expire_ms {
            return Ok(false);
        }
        let guard = self.index.read();
        let idx: &IndexMap = &guard;
        if idx.retired()
            || idx.hget(hdr::GENERATION) != at.lineage
            || idx.ns_get(ns, nsr::NAME_HASH) != name_hash
        {
            return Ok(false);
        }
        let tag = key_hash >> 32;
        for step in 0..idx.layout.buckets {
            let pos = key_hash.wrapping_add(step);
            let w = idx.bucket(pos).load(Ordering::Acquire);
            if w == 0 {
                return Ok(false);
            }
            if w >> 32 != tag {
                continue;
            }
            let e = (w as u32).wrapping_sub(1);
            if idx.valid_entry(e) && idx.bucket_loc(pos).load(Ordering::Acquire) == at.loc {
                if !self.read_only {
                    count_hit(idx, ns, e, self.use_clock());
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs `f` as the one writer of the store: in-process mutex, then the
    /// cross-process `flock`, then recovery if the last writer died
    /// mid-mutation, then the mutation itself.
    pub(crate) fn with_writer<R>(&self, f: impl FnMut(&mut Writer<'_>) -> Result<R>) -> Result<R> {
        self.writer_op(true, f)
    }

    /// Like [`Inner::with_writer`] for operations that only read under the lock.
    pub(crate) fn with_writer_ro<R>(
        &self,
        f: impl FnMut(&mut Writer<'_>) -> Result<R>,
    ) -> Result<R> {
        self.writer_op(false, f)
    }

    fn writer_op<R>(
        &self,
        mutating: bool,
        f: impl FnMut(&mut Writer<'_>) -> Result<R>,
    ) -> Result<R> {
        let r = self.writer_op_locked(mutating, f)?;
        if mutating && self.opts.durability == Durability::PowerLoss {
            let mine = self.commit.lock().appended;
            self.group_sync(mine)?;
        }
        Ok(r)
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

    fn writer_op_locked<R>(
        &self,
        mutating: bool,
        mut f: impl FnMut(&mut Writer<'_>) -> Result<R>,
    ) -> Result<R> {
        self.check_fork()?;
        if mutating && self.read_only {
            return Err(read_only_error(&self.dir, "it cannot be written"));
        }
        let mut st = self.writer.lock();
        let _flock = FlockGuard::new(&self.lock_file)?;
        let mut idx = self.index.read().clone();
        let mut rebuilt = false;
        loop {
            let mut w = Writer {
                inner: self,
                idx: idx.clone(),
                st: &mut st,
            };
            w.recover_if_needed()?;
            if mutating {
                w.begin();
            }
            match f(&mut w) {
                Ok(r) => {
                    if mutating {
                        w.end();
                    }
                    return Ok(r);
                }
                Err(Error::Corrupted { .. }) if !rebuilt => {
                    // The index contradicted itself: rebuild it from the log and retry.
                    w.rebuild()?;
                    w.end();
                    idx = w.idx.clone();
                    rebuilt = true;
                }
                Err(e) => {
                    if mutating && !matches!(e, Error::Corrupted { .. }) {
                        w.end();
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Compacts segments over the threshold (or with any dead bytes when
    /// `force`). Returns the number of segments retired.
    pub(crate) fn compact(&self, force: bool) -> Result<usize> {
        // One compactor at a time, across threads and processes: two
        // compactors of one segment would each copy its tombstones, and the
        // copies would multiply at every later compaction (issue 3's stress
        // test grew thousands of segments). An OFD lock on byte 0 of `lock`
        // (the kernel drops it if the holder dies); the background compactor
        // skips a round when it is taken, `Store::compact` waits.
        self.check_fork()?;
        if self.read_only {
            return Err(read_only_error(&self.dir, "it cannot be compacted"));
        }
        let Some(_lock) = self.take_compaction_lock(force)? else {
            return Ok(0);
        };
        if force {
            // Expired entries become dead space that this compaction reclaims.
            self.sweep_expired(true)?;
            // On a full disk the next segment may not fit: the sealed ones
            // are still compacted.
            match self.with_writer(|w| w.seal_if_dead()) {
                Err(e) if crate::space::is_full(&e) => {}
                r => r?,
            }
        }
        // On a full disk, a segment whose copies do not fit ends the
        // compaction without an error: what was freed stays freed, and the
        // segments left (less dead: the most dead go first) need more room.
        let full = |e: &Error| crate::space::is_full(e);
        // A compaction that was killed (or failed) is finished first, from
        // where its journal says it stopped.
        let mut done = match crate::compaction::resume_interrupted(self) {
            Ok(resumed) => usize::from(resumed),
            Err(e) if full(&e) => return Ok(0),
            Err(e) => return Err(e),
        };
        // Only segments sealed before this compaction started: the records it
        // copies land in newer segments, and chasing those would not end.
        let below = self.with_writer_ro(|w| Ok(w.idx.hget(hdr::ACTIVE_SEG)))?;
        loop {
            let Some(victim) = self.with_writer_ro(|w| Ok(w.pick_victim(force, below)))? else {
                return Ok(done);
            };
            match crate::compaction::compact_segment(self, victim) {
                Ok(()) => done += 1,
                Err(e) if full(&e) => return Ok(done),
                Err(e) => return Err(e),
            }
            if done > format::MAX_SEGMENTS {
                return Ok(done);
            }
        }
    }

    pub(crate) fn install_index(&self, idx: Arc<IndexMap>) {
        *self.index.write() = idx;
    }

    pub(crate) fn forget_names(&self) {
        self.names.write().clear();
    }
}

struct FlockGuard<'a>(&'a File);

impl<'a> FlockGuard<'a> {
    fn new(f: &'a File) -> Result<FlockGuard<'a>> {
        sys::flock(f, true, false)?;
        Ok(FlockGuard(f))
    }
}

impl Drop for FlockGuard<'_> {
    fn drop(&mut self) {
        let _ = sys::funlock(self.0);
    }
}

/// A per-key lease: while it is held, no other holder of a lease on the same
/// key (in any thread or process) gets one. The kernel releases it if the
/// holding process dies.
pub struct Lease {
    file: Option<File>,
    at: u64,
    pool: Weak<Mutex<Vec<File>>>,
    fork_gen: u64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("at", &self.at).finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(file) = self.file.take() else { return };
        // A forked child shares the description with its parent, whose lock
        // it is: the child only closes its descriptor.
        if sys::fork_generation() != self.fork_gen {
            return;
        }
        // Unlocked, the description goes back to the pool; if the unlock
        // fails, closing it releases the lock.
        if sys::ofd_unlock(&file, self.at).is_ok() {
            if let Some(pool) = self.pool.upgrade() {
                let mut p = pool.lock();
                if p.len() < 64 {
                    p.push(file);
                }
            }
        }
    }
}

impl Namespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store this namespace belongs to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Re-resolves the id if the namespace row changed (the namespace was
    /// removed, or a rebuild lost the definition).
    fn id(&self) -> Result<u32> {
        let inner = &self.store.inner;
        let id = self.id.load(Ordering::Relaxed);
        {
            let idx = inner.index.read();
            if idx.ns_get(id, nsr::NAME_HASH) == self.name_hash && !idx.retired() {
                return Ok(id);
            }
        }
        let idx = inner.current_index()?;
        if idx.ns_get(id, nsr::NAME_HASH) == self.name_hash {
            return Ok(id);
        }
        inner.forget_names();
        inner.with_writer(|w| self.row(w))
    }

    /// The value stored under `key`, or `None` (a miss: absent, expired, or
    /// unreadable). A hit refreshes the entry's LRU position.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.store.inner.lookup(self.id()?, key, |v| v.to_vec())
    }

    /// Like [`Namespace::get`], but hands the value to `f` without allocating.
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        self.store.inner.lookup(self.id()?, key, f)
    }

    /// Like [`Namespace::get_with`], also handing `f` the record's
    /// [`Located`] token.
    pub fn get_located<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8], Located) -> R,
    ) -> Result<Option<R>> {
        self.store.inner.lookup_at(self.id()?, key, true, f)
    }

    /// Like [`Namespace::get_located`], but a peek: counts neither a hit nor
    /// a miss and leaves recency alone (a memoizer calls it after its own put).
    pub fn peek_located<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8], Located) -> R,
    ) -> Result<Option<R>> {
        self.store.inner.lookup_at(self.id()?, key, false, f)
    }

    /// The hash of `key` in this namespace, for [`Namespace::hit_located`].
    pub fn key_hash(&self, key: &[u8]) -> u64 {
        key_hash(self.id.load(Ordering::Relaxed), key)
    }

    /// Whether the record that a lookup of the key with hash `key_hash`
    /// found at `at` is still the key's live, unexpired entry. If it is, the
    /// call counts a hit (recency and counters) as [`Namespace::get`] would,
    /// without copying or checking the record again; if not (the key was
    /// overwritten, removed, evicted, compacted, expired, or the index was
    /// rebuilt), it changes nothing and the caller looks the key up again.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use picocache_engine::{Limits, Options, Store};
    /// let store = Store::open(dir.path(), Options::default()).unwrap();
    /// let ns = store.namespace("f", Limits::default()).unwrap();
    /// ns.put(b"k", b"v1").unwrap();
    /// let at = ns.get_located(b"k", |_, at| at).unwrap().unwrap();
    /// assert!(ns.hit_located(ns.key_hash(b"k"), &at).unwrap());
    /// ns.put(b"k", b"v2").unwrap(); // a new record: the token is stale
    /// assert!(!ns.hit_located(ns.key_hash(b"k"), &at).unwrap());
    /// ```
    pub fn hit_located(&self, key_hash: u64, at: &Located) -> Result<bool> {
        // (A hash made under another namespace id finds nothing: a miss. If
        // the handle's row no longer holds this namespace, the answer is
        // false and the caller's full lookup re-resolves it.)
        self.store.inner.hit_located(
            self.id.load(Ordering::Relaxed),
            self.name_hash,
            key_hash,
            at,
        )
    }

    /// Stores `value` under `key` with the namespace's default TTL, then evicts
    /// least recently used entries until the limits hold. Returns false when
    /// the limits keep the entry from being stored at all (`maxsize` 0, or a
    /// record larger than `max_bytes`).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.put_with_ttl(key, value, None)
    }

    /// Like [`Namespace::put`] with an explicit TTL (`None`: the namespace's default).
    pub fn put_with_ttl(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        check_kv(key, value)?;
        let inner = &self.store.inner;
        inner
            .retry_if_full(false, || {
                inner.with_writer(|w| {
                    let id = self.used_row(w)?;
                    w.put_batch(id, &[(key, value)], ttl)
                })
            })
            .map(|n| n == 1)
    }

    /// Stores many entries under one lock and, with
    /// [`Durability::PowerLoss`], one fsync. Returns how many were stored.
    pub fn put_batch(&self, items: &[(&[u8], &[u8])]) -> Result<usize> {
        for (k, v) in items {
            check_kv(k, v)?;
        }
        let inner = &self.store.inner;
        inner.retry_if_full(false, || {
            inner.with_writer(|w| {
                let id = self.used_row(w)?;
                w.put_batch(id, items, None)
            })
        })
    }

    /// Removes `key`. Returns whether it was present.
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        let inner = &self.store.inner;
        inner.retry_if_full(true, || {
            inner.with_writer(|w| {
                let id = self.row(w)?;
                w.remove(id, key)
            })
        })
    }

    /// Removes every entry of this namespace (in every process) and resets its
    /// hit, miss, eviction and rejection counters.
    pub fn clear(&self) -> Result<()> {
        let inner = &self.store.inner;
        inner.retry_if_full(true, || {
            inner.with_writer(|w| {
                let id = self.row(w)?;
                w.clear(id)
            })
        })
    }

    /// Counts one stored entry that the layer above found failing its check
    /// (picocache's seal): [`NamespaceStats::rejected`], in every process,
    /// reset by [`Namespace::clear`].
    pub fn count_rejected(&self) -> Result<()> {
        if self.store.inner.read_only {
            return Ok(()); // nothing is counted in a read-only store
        }
        let id = self.id()?;
        self.store
            .inner
            .current_index()?
            .ns_add(id, nsr::REJECTED, 1);
        Ok(())
    }

    /// The namespace's statistics.
    ///
    /// Expired entries are not counted once swept: a namespace of at most
    /// 65,536 entries is swept here (at most once a second) when one of its
    /// entries may have expired; larger ones by the background thread.
    pub fn stats(&self) -> Result<NamespaceStats> {
        let id = self.id()?;
        let inner = &self.store.inner;
        let idx = inner.current_index()?;
        let next = idx.ns_get(id, nsr::NEXT_EXPIRY);
        if next != 0 && next <= now_ms() {
            // Best effort: stats are still returned if the sweep fails.
            let _ = inner.with_writer(|w| w.sweep_if_due(id, crate::expiry::SWEEP_INLINE_MAX));
        }
        let idx = inner.current_index()?;
        Ok(ns_stats(&idx, id))
    }

    /// Every live entry as (key, value length), most recently used first (in
    /// a namespace without limits, where hits are not ranked, most recently
    /// written first).
    pub fn keys(&self) -> Result<Vec<(Vec<u8>, usize)>> {
        if self.store.inner.read_only {
            let id = self.id()?;
            return self.store.inner.with_writer_ro(|w| Ok(w.keys(id)));
        }
        self.store.inner.with_writer(|w| {
            let id = self.row(w)?;
            Ok(w.keys(id))
        })
    }

    /// Takes the lease on `key`, waiting up to `wait`. `Ok(None)` on timeout.
    ///
    /// Memoizers take it after a miss, look again, and compute only if the
    /// key is still missing, so concurrent callers compute a key once.
    pub fn lease(&self, key: &[u8], wait: Duration) -> Result<Option<Lease>> {
        self.store.inner.check_fork()?;
        let h = key_hash(self.id.load(Ordering::Relaxed), key) ^ self.name_hash;
        let inner = &self.store.inner;
        if inner.read_only {
            return Err(read_only_error(&inner.dir, "no lease can be taken"));
        }
        let pooled = inner.lease_files.lock().pop();
        let file = match pooled {
            Some(f) => f,
            None => inner.modes().open(&inner.dir.join("leases"), false)?,
        };
        let at = h & ((1 << 40) - 1);
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            if sys::ofd_try_lock(&file, at)? {
                return Ok(Some(Lease {
                    file: Some(file),
                    at,
                    pool: Arc::downgrade(&inner.lease_files),
                    fork_gen: sys::fork_generation(),
                }));
            }
            if start.elapsed() >= wait {
                inner.lease_files.lock().push(file);
                return Ok(None);
            }
            std::thread::sleep(pause.min(wait.saturating_sub(start.elapsed())));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

fn check_kv(key: &[u8], value: &[u8]) -> Result<()> {
    if key.len() > format::MAX_KEY_LEN {
        return Err(Error::InvalidArgument(format!(
            "key of {} bytes exceeds the limit of {}",
            key.len(),
            format::MAX_KEY_LEN
        )));
    }
    if value.len() > format::MAX_VALUE_LEN {
        return Err(Error::InvalidArgument(format!(
            "value of {} bytes exceeds the limit of {}",
            value.len(),
            format::MAX_VALUE_LEN
        )));
    }
    Ok(())
}

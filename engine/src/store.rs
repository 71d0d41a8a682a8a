//! The public store: opening it (including read-only and inspect-only
//! opens), whole-store statistics and maintenance. Namespaces are in
//! `namespace.rs`, lookups in `read.rs`, the writer lock in `txn.rs`, the
//! shared state in `shared.rs`.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::compaction::compactor_loop;
use crate::ctx::{WriteCtx, WriterState};
use crate::error::{Error, Result};
use crate::format::{self, hdr, nsr, segr};
use crate::options::{Options, StoreStats, VerifyReport};
use crate::shared::{ns_stats, Inner};
use crate::sys::{self};

struct Background {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
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
        *self.stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
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
            .field("dir", &self.inner.ctx.dir())
            .finish()
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

impl Store {
    /// Opens (creating if needed) the store in directory `path`.
    ///
    /// # Errors
    /// [`Error::NetworkFilesystem`] on NFS/CIFS unless allowed,
    /// [`Error::Version`] for a log of another format version,
    /// [`Error::InvalidArgument`] for an existing directory that is not a
    /// store and holds a file under a name the store would overwrite or
    /// delete (`index`, `reserve`, `seg-XXXXXXXX.log`), [`Error::Io`].
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
        // A directory of the user's that is not a store, with a file under a
        // name the store would overwrite or delete: refused, untouched.
        if existing.is_some() && !opts.inspect_only {
            if let Some(why) = crate::files::foreign_file(&dir) {
                return Err(Error::InvalidArgument(why));
            }
        }
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
            match crate::files::open_existing(&dir.join("lock"), false) {
                Ok(f) => (f, true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (File::open(&dir)?, true),
                Err(e) => return Err(e.into()),
            }
        } else {
            match modes.open(&dir.join("lock"), false) {
                Ok(f) => (f, false),
                Err(e) if is_read_only_error(&e) => {
                    (crate::files::open_existing(&dir.join("lock"), false)?, true)
                }
                Err(e) => return Err(e.into()),
            }
        };
        let boot_id = match opts.boot_id {
            Some(b) => ((b >> 64) as u64, b as u64),
            None => read_boot_id(),
        };
        let lock_file = sys::LockFile::new(lock_file);
        let fork_gen = sys::fork_generation();
        let (index, rebuilt) =
            crate::recovery::open_or_rebuild_index(&dir, &lock_file, &opts, boot_id, read_only)?;
        let inner = Arc::new(Inner {
            ctx: WriteCtx::new(dir, opts, boot_id, read_only, index),
            lock_file,
            writer: Mutex::new(WriterState::default()),
            fork_gen,
            lease_files: Arc::new(Mutex::new(Vec::new())),
            lock_backoff: Mutex::new(Default::default()),
        });
        // Make sure there is an active segment, and that a rebuilt index
        // honours every namespace's limits; an unknown last use (an index of
        // an earlier build) counts from now.
        let now = inner.ctx.use_clock();
        if !read_only {
            // On a full disk (the active segment does not fit, after a
            // rebuild that took the room), space is freed as for a put.
            inner.retry_if_full(false, || {
                inner.with_writer(|w| {
                    w.after_open(rebuilt)?;
                    w.stamp_unknown_last_use(now);
                    Ok(())
                })
            })?;
            inner.ctx.ensure_reserve();
        }
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let thread = if inner.ctx.opts().background_compaction && !read_only {
            let weak = Arc::downgrade(&inner);
            let stop2 = stop.clone();
            let interval = inner.ctx.opts().compaction_interval;
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
        self.inner.ctx.dir()
    }

    /// True if the store was opened read-only: its filesystem is read-only or
    /// this process may not write its directory. Lookups work (without
    /// counting hits, misses or recency); every write fails with
    /// [`Error::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.inner.ctx.read_only()
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
        for e in std::fs::read_dir(self.inner.ctx.dir())? {
            let e = e?;
            total += e.metadata()?.len();
        }
        Ok(total)
    }
}

//! The public value types: open options, namespace limits, statistics and
//! the verify report.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::format;
use crate::io::{Io, RealIo};
#[cfg(doc)]
use crate::{Error, Namespace, Store};

/// How much a committed write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives the crash of any process (the data is in the OS page cache
    /// when a put returns); a power loss may lose recent writes, leaving a
    /// valid earlier state. No fsync per write. The default.
    #[default]
    Process,
    /// Survives power loss: every commit (a put, or a whole batch) is
    /// `fdatasync`ed before it returns.
    PowerLoss,
}

/// Options for [`Store::open`]: start from [`Options::default`] and set
/// what differs with the builder methods (one per option).
///
/// ```
/// use picocache_engine::{Durability, Options};
/// let o = Options::default()
///     .durability(Durability::PowerLoss)
///     .background_compaction(false);
/// assert_eq!(o.get_durability(), Durability::PowerLoss);
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) durability: Durability,
    pub(crate) segment_size: u64,
    pub(crate) background_compaction: bool,
    pub(crate) compaction_threshold: f64,
    pub(crate) compaction_interval: Duration,
    pub(crate) allow_network_filesystem: bool,
    pub(crate) io: Arc<dyn Io>,
    /// Overrides the machine's boot id (test hook).
    pub(crate) boot_id: Option<u128>,
    /// Replaces the system clock for last-use times (test hook).
    pub(crate) last_use_clock: Option<Arc<AtomicU64>>,
    pub(crate) group_access: bool,
    pub(crate) inspect_only: bool,
    pub(crate) lock_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Process,
            segment_size: format::DEFAULT_SEGMENT_SIZE,
            background_compaction: true,
            compaction_threshold: 0.5,
            compaction_interval: Duration::from_millis(500),
            allow_network_filesystem: false,
            io: Arc::new(RealIo),
            boot_id: None,
            last_use_clock: None,
            group_access: false,
            inspect_only: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

/// How long a write waits for the store's writer lock by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(3);

impl Options {
    /// How long a write (and an open that must recover the index) waits
    /// for the store's writer lock, held by another thread or process
    /// (default [`DEFAULT_LOCK_TIMEOUT`], 3 s): the lock is held for
    /// microseconds by a write, longer by an index rebuild or resize; a
    /// process stopped while holding it (Ctrl-Z, a debugger) would otherwise
    /// block every writer for as long as it stays stopped. Past it the write
    /// fails with [`Error::Locked`](crate::Error::Locked) and stores nothing,
    /// and the store's handle backs off: for 1 s (doubling to 10 s while
    /// waits keep timing out) its writes try the lock once and fail at once
    /// while it is held, instead of each waiting again; a lock taken ends
    /// the back-off. Reads never wait for it.
    /// The compaction lock is waited for as long (by
    /// [`Store::compact`](crate::Store::compact), a repair, and a write on
    /// a full disk, which then fails with its own error). A timeout too
    /// long for a deadline (`Duration::MAX`) waits as long as it takes.
    pub fn lock_timeout(mut self, wait: Duration) -> Self {
        self.lock_timeout = wait;
        self
    }
    /// Crash or power-loss durability (default [`Durability::Process`]).
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }
    /// The durability set.
    pub fn get_durability(&self) -> Durability {
        self.durability
    }
    /// The largest size of one log segment, in bytes (at least 4 KiB;
    /// default 64 MiB, and at most a sixty-fourth of the filesystem).
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes.max(4096);
        self
    }
    /// Whether this process runs a background compaction thread (default
    /// on).
    pub fn background_compaction(mut self, on: bool) -> Self {
        self.background_compaction = on;
        self
    }
    /// The dead fraction of a sealed segment at or above which it is
    /// compacted (default 0.5; clamped to 0.0..=1.0).
    pub fn compaction_threshold(mut self, fraction: f64) -> Self {
        self.compaction_threshold = if fraction.is_nan() {
            0.5
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }
    /// How often the background thread looks for work (default 500 ms).
    pub fn compaction_interval(mut self, every: Duration) -> Self {
        self.compaction_interval = every;
        self
    }
    /// The I/O layer for the writes of the log and the index (default the
    /// operating system's; tests substitute [`crate::FaultIo`]).
    pub fn io(mut self, io: Arc<dyn Io>) -> Self {
        self.io = io;
        self
    }
    /// Shares a new store with the owner's group: its directory and files
    /// get `0770`/`0660` instead of the private `0700`/`0600` (set
    /// explicitly, whatever the umask). For an existing store its directory
    /// decides: a directory with group permissions is shared, and the files
    /// any process creates in it follow; existing files keep their mode.
    pub fn group_access(mut self, on: bool) -> Self {
        self.group_access = on;
        self
    }
    /// Opens a store on NFS/CIFS/SMB anyway (default: refused with
    /// [`Error::NetworkFilesystem`]).
    pub fn allow_network_filesystem(mut self, allow: bool) -> Self {
        self.allow_network_filesystem = allow;
        self
    }
    /// Opens for inspection only (`picocache verify`, `stats`, `ls`): the
    /// store is opened read-only and nothing in its directory is ever
    /// created, rebuilt, truncated or written. An index that would need a
    /// rebuild is [`Error::NeedsRepair`] instead. Also turns background
    /// compaction off.
    pub fn inspect_only(mut self, on: bool) -> Self {
        self.inspect_only = on;
        if on {
            self.background_compaction = false;
        }
        self
    }
    /// Test hook (feature `test-hooks`): the boot id this process reports,
    /// instead of the machine's, to simulate a reboot.
    #[cfg(feature = "test-hooks")]
    pub fn boot_id(mut self, id: u128) -> Self {
        self.boot_id = Some(id);
        self
    }
    /// Test hook (feature `test-hooks`): a clock for namespaces' last-use
    /// times, in Unix seconds, read instead of the system clock (to age
    /// namespaces without waiting).
    #[cfg(feature = "test-hooks")]
    pub fn last_use_clock(mut self, clock: Arc<AtomicU64>) -> Self {
        self.last_use_clock = Some(clock);
        self
    }
}

/// Limits of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Most entries kept (`None`: unlimited; `Some(0)`: nothing is stored).
    pub maxsize: Option<u64>,
    /// Most record bytes kept (`None`: unlimited).
    pub max_bytes: Option<u64>,
    /// Default time to live of an entry (`None`: forever).
    pub ttl: Option<Duration>,
}

impl Limits {
    /// Limits with only an entry count.
    pub fn maxsize(n: Option<u64>) -> Limits {
        Limits {
            maxsize: n,
            ..Limits::default()
        }
    }
    pub(crate) fn encode(&self) -> (u64, u64, u64) {
        (
            self.maxsize.unwrap_or(u64::MAX),
            self.max_bytes.unwrap_or(u64::MAX),
            self.ttl.map_or(0, |t| {
                u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
            }),
        )
    }
    pub(crate) fn decode(maxsize: u64, max_bytes: u64, ttl_ms: u64) -> Limits {
        Limits {
            maxsize: (maxsize != u64::MAX).then_some(maxsize),
            max_bytes: (max_bytes != u64::MAX).then_some(max_bytes),
            ttl: (ttl_ms != 0).then(|| Duration::from_millis(ttl_ms)),
        }
    }
}

/// Statistics of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceStats {
    /// The namespace's name.
    pub name: String,
    /// Live entries.
    pub entries: u64,
    /// Bytes of live records (headers included).
    pub live_bytes: u64,
    /// Hits since the last clear, counted in every process.
    pub hits: u64,
    /// Misses since the last clear, counted in every process.
    pub misses: u64,
    /// Evictions since the last clear.
    pub evictions: u64,
    /// Stored entries the layer above found failing its check (picocache's
    /// seal: planted or tampered values), since the last clear, counted in
    /// every process ([`Namespace::count_rejected`]).
    pub rejected: u64,
    /// The namespace's limits.
    pub limits: Limits,
    /// When the namespace was last used, in Unix seconds: opened by a process
    /// ([`Store::namespace`]), written, or looked up; in every process. `None`
    /// if unknown. Lookups refresh it only once it is more than
    /// `LAST_USE_GRANULARITY_SECS` (a minute) old, so it may lag by
    /// that much. [`Store::remove_unused_namespaces`] goes by it.
    pub last_used: Option<u64>,
}

/// Statistics of a whole store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreStats {
    /// Log segments.
    pub segments: u64,
    /// Bytes of records written to the segments.
    pub log_bytes: u64,
    /// Bytes of those records that are no longer live.
    pub dead_bytes: u64,
    /// Size of the index file.
    pub index_bytes: u64,
    /// Live entries in all namespaces.
    pub entries: u64,
    /// Compactions completed.
    pub compactions: u64,
    /// Every namespace.
    pub namespaces: Vec<NamespaceStats>,
}

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Records read from the log.
    pub records: u64,
    /// Index entries checked.
    pub entries: u64,
    /// Every problem found; empty when the store is sound.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

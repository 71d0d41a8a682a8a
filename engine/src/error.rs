//! The engine's error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the engine.
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a
/// catch-all arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error (a full disk is `Io` with kind `StorageFull`
    /// or raw OS error `ENOSPC`).
    Io(io::Error),
    /// A file holds bytes that are not what the format allows.
    Corrupted {
        /// The damaged file.
        file: PathBuf,
        /// The byte offset within `file` of the word found wrong (or of the
        /// word a wrong value was read from, such as a link naming an entry
        /// out of range).
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// A file was written by an incompatible version of the format.
    Version {
        /// The damaged or foreign file.
        file: PathBuf,
        /// The version this build reads.
        expected: u32,
        /// The version found in the file.
        got: u32,
    },
    /// A lock could not be taken in the time allowed.
    Locked(String),
    /// An argument is out of range (a name too long, a value too large, ...).
    InvalidArgument(String),
    /// The store was opened on a network filesystem, where the mmap and lock
    /// guarantees the engine relies on do not hold.
    NetworkFilesystem {
        /// The store's directory.
        path: PathBuf,
        /// The filesystem type reported by `statfs`.
        fs_type: String,
    },
    /// The store is read-only: its filesystem is mounted read-only, or this
    /// process may not write its directory. Lookups work; puts, removals,
    /// clears, new namespaces, leases and maintenance fail with this error.
    ReadOnly {
        /// The store's directory.
        path: PathBuf,
        /// What could not be done.
        what: String,
    },
    /// A store opened for inspection only ([`crate::Options::inspect_only`])
    /// cannot be read as it is: its index is damaged, missing or stale and
    /// would have to be rebuilt from the log. Nothing was changed; run
    /// `picocache repair` (or [`crate::Store::repair`]).
    NeedsRepair {
        /// The store's directory.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// This handle was opened before a `fork()` and used in the child.
    ///
    /// Open the store again in the child process; the parent's handle keeps
    /// working in the parent.
    Forked,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Corrupted { file, offset, what } => {
                write!(f, "corrupted store file {} at offset {offset}: {what}", file.display())
            }
            Error::Version { file, expected, got } => write!(
                f,
                "{} has format version {got}, this build reads version {expected}",
                file.display()
            ),
            Error::Locked(what) => write!(f, "lock not acquired: {what}"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::NetworkFilesystem { path, fs_type } => write!(
                f,
                "{} is on a network filesystem ({fs_type}); the store needs a local filesystem \
                 for its shared memory map and locks (set Options::allow_network_filesystem \
                 to override at your own risk)",
                path.display()
            ),
            Error::ReadOnly { path, what } => write!(
                f,
                "the store at {} is read-only (a read-only filesystem, or no permission to \
                 write it): {what}; lookups still work",
                path.display()
            ),
            Error::NeedsRepair { path, what } => write!(
                f,
                "the store at {p} needs repair: {what}; nothing was changed; run \
                 `picocache repair {p}` to rebuild it",
                p = path.display()
            ),
            Error::Forked => write!(
                f,
                "store handle used in a child process after fork(); open the store again in the child"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl Error {
    /// True when the error means the disk (or quota) is full.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Io(e) => {
                e.raw_os_error() == Some(libc::ENOSPC)
                    || e.raw_os_error() == Some(libc::EDQUOT)
                    || e.kind() == io::ErrorKind::StorageFull
            }
            _ => false,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

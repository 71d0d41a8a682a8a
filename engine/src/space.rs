//! Living on a small or full filesystem (FORMAT.md, "Full disk").
//!
//! - Segments are sized to the filesystem: at most a sixty-fourth of it (not
//!   below [`crate::format::MIN_SEGMENT_SIZE`]), so that a small disk holds
//!   many and compaction can free them one at a time.
//! - Preallocation shrinks to what fits: when the usual 4 MiB step does not
//!   fit, only the bytes the write needs are allocated.
//! - A `reserve` file (a sixty-fourth of the filesystem, at most
//!   [`crate::format::MAX_RESERVE`]) is kept allocated while there is room.
//!   When a write fails for lack of space, the store deletes it, which leaves
//!   room for the new segment compaction needs and the copies of a segment,
//!   compacts (most dead segments first), and tries the write once more.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::ctx::WriteCtx;
use crate::error::{Error, Result};
use crate::io::Io;
use crate::shared::Inner;

use crate::format::{MAX_RESERVE, MIN_SEGMENT_SIZE};

/// The name of the reserve file in the store's directory.
pub(crate) const RESERVE_FILE: &str = "reserve";

/// Whether `e` says the filesystem is full.
pub(crate) fn is_full(e: &Error) -> bool {
    match e {
        Error::Io(e) => io_is_full(e),
        _ => false,
    }
}

/// Whether an I/O error says the filesystem is full.
pub(crate) fn io_is_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
        || e.raw_os_error() == Some(libc::EDQUOT)
        || e.kind() == io::ErrorKind::StorageFull
}

/// The segment size to use in `dir`: `want`, or a sixty-fourth of the
/// filesystem if that is smaller (not below [`MIN_SEGMENT_SIZE`]).
pub(crate) fn segment_size_for(dir: &Path, want: u64) -> u64 {
    match crate::sys::fs_space(dir) {
        Ok((total, _)) if total > 0 => {
            let cap = (total / 64 / 4096 * 4096).max(MIN_SEGMENT_SIZE);
            want.min(cap)
        }
        _ => want,
    }
}

/// The size of the reserve file in `dir`: a sixty-fourth of the filesystem,
/// at most [`MAX_RESERVE`].
fn reserve_len(dir: &Path) -> u64 {
    match crate::sys::fs_space(dir) {
        Ok((total, _)) if total > 0 => (total / 64 / 4096 * 4096).clamp(4096, MAX_RESERVE),
        _ => MAX_RESERVE,
    }
}

/// Allocates `file` from `from` to `want` bytes; if that does not fit, to
/// `need` bytes only. Returns the length allocated.
pub(crate) fn allocate_fitting(
    io: &dyn Io,
    file: &File,
    from: u64,
    want: u64,
    need: u64,
) -> io::Result<u64> {
    match io.allocate(file, from, want.saturating_sub(from)) {
        Ok(()) => Ok(want),
        Err(e) if io_is_full(&e) && need < want => {
            io.allocate(file, from, need.saturating_sub(from))?;
            Ok(need)
        }
        Err(e) => Err(e),
    }
}

/// Deletes the reserve file of the store in `dir`; whether there was one.
pub(crate) fn release_reserve_in(dir: &Path) -> bool {
    std::fs::remove_file(dir.join(RESERVE_FILE)).is_ok()
}

impl WriteCtx {
    /// Creates the reserve file if it is missing or short (a crash while it
    /// was being allocated; best effort: on a full disk there is none until
    /// space is freed). It holds only zeros: its size is all that counts.
    pub(crate) fn ensure_reserve(&self) {
        let path = self.dir().join(RESERVE_FILE);
        let len = reserve_len(self.dir());
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= len) {
            return;
        }
        let made = self.modes().open(&path, false).and_then(|f| {
            crate::sys::preallocate(&f, 0, len)?;
            f.sync_all()
        });
        if made.is_err() {
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Deletes the reserve file, freeing its space for the store's own use.
    pub(crate) fn release_reserve(&self) -> bool {
        release_reserve_in(self.dir())
    }
}

impl Inner {
    /// Runs `op`; if it fails because the filesystem is full, frees what
    /// space compaction can and runs it once more. The reserve file is
    /// deleted first, so that compaction has room for a new segment and the
    /// copies of one segment; it is re-created before `op` runs again, or,
    /// if `op` frees space itself (a removal, a clear), after it.
    pub(crate) fn retry_if_full<R>(
        &self,
        frees_space: bool,
        mut op: impl FnMut() -> Result<R>,
    ) -> Result<R> {
        match op() {
            Err(e) if is_full(&e) => {
                // Maps of retired segments keep their blocks allocated.
                self.ctx.prune_segments(&self.ctx.index());
                self.ctx.release_reserve();
                let compacted = self.compact(true);
                if !frees_space {
                    self.ctx.ensure_reserve();
                }
                if let Err(Error::Locked(_)) = compacted {
                    // Another compactor (maybe a stopped process) held the
                    // compaction lock past the lock timeout: evicting needs
                    // it too. The write steps aside with its own error.
                    self.ctx.ensure_reserve();
                    return Err(e);
                }
                let r = compacted.and_then(|_| op());
                // Still full: every segment holds live entries, and there is
                // no room to copy them. Evict the oldest segments.
                let r = self.evict_until(r, &mut op);
                self.ctx.ensure_reserve();
                r
            }
            r => r,
        }
    }
}

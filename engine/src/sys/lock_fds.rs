//! The descriptors the engine holds locks through (the `lock` file's
//! `flock`, the compaction lock's and the leases' OFD locks), so that a
//! forked child lets go of them.
//!
//! `flock` and OFD locks belong to the open file description, which a
//! forked child shares: while a child lives, a lock its parent held stays
//! held after the parent dies (killed mid-write or mid-lease), for as long
//! as the child lives. The at-fork child handler therefore points every
//! registered descriptor at `/dev/null` (`dup3`, async-signal-safe): the
//! child no longer refers to the parent's descriptions, and its `File`
//! objects keep a valid descriptor of their number (closing it alone would
//! let the child's later `close` hit a reused number). The child's handles
//! reopen their files after a fork (fork generation checks), so they never
//! lock through these.
//!
//! The registry is a fixed table of atomic slots (lock-free: the child
//! handler runs in a freshly forked, single-threaded process). A descriptor
//! is cleared from its slot before it is closed, so a slot never names a
//! closed number at a fork. A full table leaves a descriptor unregistered:
//! that descriptor's lock may outlive a killed parent while a child lives,
//! as before.

use std::fs::File;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

const SLOTS: usize = 1024;

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: AtomicI32 = AtomicI32::new(-1);
static FDS: [AtomicI32; SLOTS] = [EMPTY; SLOTS];
/// A descriptor of `/dev/null` (close-on-exec), opened at the first
/// registration and kept for the process's life.
static DEVNULL: AtomicI32 = AtomicI32::new(-1);

fn devnull() -> i32 {
    let fd = DEVNULL.load(Ordering::Acquire);
    if fd >= 0 {
        return fd;
    }
    // SAFETY: `open` takes a NUL-terminated constant string and flags; it
    // touches no memory of ours.
    let new = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if new < 0 {
        return -1;
    }
    match DEVNULL.compare_exchange(-1, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => new,
        Err(other) => {
            // SAFETY: `new` is a descriptor this function just opened and
            // nothing else knows of.
            unsafe { libc::close(new) };
            other
        }
    }
}

/// A file the engine locks through, registered so that a forked child lets
/// go of its description (see the module's documentation).
pub(crate) struct LockFile {
    file: File,
    slot: Option<usize>,
}

impl LockFile {
    /// Registers `file` (unregistered if `/dev/null` cannot be opened or the
    /// table is full).
    pub(crate) fn new(file: File) -> LockFile {
        // The child handler is registered with the fork generation's.
        super::fork_generation();
        let fd = file.as_raw_fd();
        let slot = if devnull() >= 0 {
            FDS.iter().position(|s| {
                s.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
        } else {
            None
        };
        LockFile { file, slot }
    }
}

impl Deref for LockFile {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Cleared before `file` closes (fields drop after this).
        if let Some(s) = self.slot {
            FDS[s].store(-1, Ordering::Release);
        }
    }
}

/// In a freshly forked child: every registered descriptor now refers to
/// `/dev/null`. Async-signal-safe (atomic loads and `dup3`).
pub(super) fn release_in_child() {
    let null = DEVNULL.load(Ordering::Acquire);
    if null < 0 {
        return;
    }
    for s in &FDS {
        let fd = s.load(Ordering::Acquire);
        if fd >= 0 && fd != null {
            // SAFETY: `dup3` takes integers; `fd` is a descriptor of a live
            // `LockFile` of the parent (its slot is cleared before it is
            // closed), so it names the lock file's description, which this
            // replaces with `/dev/null` in this process only; the child's
            // `LockFile` keeps a valid descriptor of the same number.
            unsafe { libc::dup3(null, fd, libc::O_CLOEXEC) };
        }
    }
}

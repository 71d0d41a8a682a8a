//! The engine's only `unsafe` code: shared memory maps, file locks,
//! preallocation, filesystem type checks and the fork hook.
//!
//! Everything else in the crate is safe Rust over the small API below. The
//! soundness argument for the maps as a whole is in `FORMAT.md` ("Why the map
//! is sound"); each block here states its local invariant.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use memmap2::{MmapOptions, MmapRaw};

/// A shared (`MAP_SHARED`) map of a file, accessed only through atomics and
/// bounds-checked copies, never through references to plain bytes.
pub(crate) struct SharedMap {
    map: MmapRaw,
    len: usize,
}

impl SharedMap {
    /// Maps `len` bytes of `file` read-write.
    ///
    /// The caller must have checked that the file is at least `len` bytes
    /// long; the engine never truncates its files, so it stays that long.
    pub(crate) fn map_rw(file: &File, len: usize) -> io::Result<SharedMap> {
        let map = MmapOptions::new().len(len).map_raw(file)?;
        Ok(SharedMap { map, len })
    }

    /// Maps `len` bytes of `file` read-only. `len` may exceed the file's
    /// current length (a reservation for growth); callers only touch bytes
    /// below the length they checked with `fstat`.
    pub(crate) fn map_ro(file: &File, len: usize) -> io::Result<SharedMap> {
        let map = MmapOptions::new().len(len).map_raw_read_only(file)?;
        Ok(SharedMap { map, len })
    }

    /// The mapped length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The 8-byte word at `off` as an atomic.
    ///
    /// # Panics
    /// If `off` is not 8-aligned or the word is out of the map: callers derive
    /// offsets from a layout validated at open, so this is a bug, not bad data.
    #[inline]
    pub(crate) fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off.checked_add(8).is_some_and(|end| end <= self.len),
            "word offset {off} outside a map of {} bytes",
            self.len
        );
        // SAFETY: the map is page-aligned and `off` is a multiple of 8, so the
        // pointer is aligned for AtomicU64; the assert keeps all 8 bytes inside
        // the mapping, which lives as long as `self` (the returned reference
        // borrows `self`). The file is never truncated while mapped (FORMAT.md),
        // so the pages stay backed. Other processes access the same word only
        // through atomic instructions as well, so there is no data race.
        unsafe { &*(self.map.as_mut_ptr().add(off) as *const AtomicU64) }
    }

    /// Copies `dst.len()` bytes starting at `off` out of the map.
    /// Returns false (copying nothing) when the range is outside the map.
    #[inline]
    pub(crate) fn copy_out(&self, off: usize, dst: &mut [u8]) -> bool {
        let Some(end) = off.checked_add(dst.len()) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        // SAFETY: `off..end` is inside the mapping (checked above) and the
        // caller has checked that it is also below the file's length, so every
        // page is backed. The source is shared memory that, by the protocol in
        // FORMAT.md, no process writes once a record is published; a hostile or
        // buggy writer could still race, which is why every copied record is
        // verified by its crc32 before any byte of it is trusted. `dst` is a
        // distinct, exclusively borrowed Rust buffer, so the ranges don't overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(off), dst.as_mut_ptr(), dst.len());
        }
        true
    }

    /// Copies `src` into the map at `off` (used only while building a new,
    /// not yet published index file). Returns false when out of range.
    pub(crate) fn copy_in(&self, off: usize, src: &[u8]) -> bool {
        let Some(end) = off.checked_add(src.len()) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        // SAFETY: in range (checked above); the map is writable (map_rw) and
        // the destination file is private to this writer until it is renamed
        // into place, so no other thread or process reads these bytes yet.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.map.as_mut_ptr().add(off), src.len());
        }
        true
    }

    /// `msync(MS_SYNC)` of the whole map.
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.map.flush()
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `flock(LOCK_EX)` (or `LOCK_SH`), retried on `EINTR`. The kernel releases the
/// lock when the last descriptor of the open file description closes, which
/// includes the death of its process.
pub(crate) fn flock(file: &File, exclusive: bool, nonblocking: bool) -> io::Result<bool> {
    let mut op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    if nonblocking {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock takes a file descriptor we own (borrowed from `file`,
        // which outlives the call) and an integer; it touches no memory of ours.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        match cvt(r) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Releases a `flock`.
pub(crate) fn funlock(file: &File) -> io::Result<()> {
    // SAFETY: as in `flock`.
    cvt(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) }).map(|_| ())
}

/// Allocates blocks for `off..off+len` (extending the file if needed), so later
/// page faults on that range can never fail for lack of space (no SIGBUS on a
/// full disk).
pub(crate) fn preallocate(file: &File, off: u64, len: u64) -> io::Result<()> {
    let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "preallocation range too large",
        ));
    };
    loop {
        // SAFETY: posix_fallocate takes a descriptor we own and two integers.
        let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), o, l) };
        match r {
            0 => return Ok(()),
            libc::EINTR => continue,
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Tries to take an open-file-description write lock on byte `at` of `file`.
/// Returns Ok(false) when another description holds it. OFD locks belong to the
/// open file description, so two descriptions in one process exclude each
/// other (as threads must), and the kernel drops them when the holder dies.
pub(crate) fn ofd_try_lock(file: &File, at: u64) -> io::Result<bool> {
    let Ok(start) = libc::off_t::try_from(at) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "lock offset too large",
        ));
    };
    // SAFETY: `libc::flock` is a plain C struct for which all-zero bytes are valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = 1;
    fl.l_pid = 0;
    loop {
        // SAFETY: F_OFD_SETLK reads the struct we pass by pointer, which lives
        // on our stack for the whole call; the descriptor is ours.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        match cvt(r) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Releases an OFD lock taken by [`ofd_try_lock`] on byte `at` of `file`.
pub(crate) fn ofd_unlock(file: &File, at: u64) -> io::Result<()> {
    let Ok(start) = libc::off_t::try_from(at) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "lock offset too large",
        ));
    };
    // SAFETY: `libc::flock` is a plain C struct for which all-zero bytes are valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_UNLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = 1;
    fl.l_pid = 0;
    loop {
        // SAFETY: as in `ofd_try_lock`: the struct lives on our stack for the
        // whole call; the descriptor is ours.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        match cvt(r) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The filesystem type of `path`, as `statfs` reports it.
pub(crate) fn fs_type(path: &Path) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: all-zero bytes are a valid `statfs` struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string and `st` a struct we own; statfs
    // writes only into `st`.
    cvt(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok(st.f_type as i64)
}

/// The size of the filesystem holding `path` and the bytes free on it for
/// an unprivileged process (`statfs`: `f_blocks` and `f_bavail` blocks of
/// `f_frsize` bytes).
pub(crate) fn fs_space(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: all-zero bytes are a valid `statfs` struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string and `st` a struct we own; statfs
    // writes only into `st`.
    cvt(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let (blocks, avail, bsize) = (st.f_blocks as u64, st.f_bavail as u64, st.f_frsize as u64);
    Ok((blocks.saturating_mul(bsize), avail.saturating_mul(bsize)))
}

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// A counter bumped in every child process right after `fork()`.
pub(crate) fn fork_generation() -> u64 {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only increments a static atomic,
        // which is async-signal-safe and valid in a freshly forked child.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Unix time in whole seconds from `CLOCK_REALTIME_COARSE` (the time of the
/// last timer tick: a few milliseconds behind, read from the vDSO without a
/// system call, cheap enough for the lookup path). 0 if the clock fails.
pub(crate) fn coarse_unix_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the
    // call, and the clock id is a constant the kernel knows.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if r != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0)
}

//! The engine's only `unsafe` code: shared memory maps, file locks,
//! preallocation, filesystem type checks, the fork hook, the SIGBUS guard
//! for segments truncated by another program, and the futex and slot calls
//! under lock words (`words`).
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
    /// The slot of this map in the SIGBUS guard's table.
    guard: usize,
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        bus_guard::unregister(self.guard);
    }
}

/// Registers `map` with the SIGBUS guard; an error (the map is undone) if
/// the guard's table has no slot left: a map without a guard could kill the
/// process.
fn guard(map: &MmapRaw, len: usize, writable: bool) -> io::Result<usize> {
    bus_guard::register(map.as_ptr() as usize, len, writable).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            "no room left in the SIGBUS guard's table of maps (too many maps in this process)",
        )
    })
}

impl SharedMap {
    /// Maps `len` bytes of `file` read-write.
    ///
    /// The caller must have checked that the file is at least `len` bytes
    /// long; the engine never truncates its files, so it stays that long.
    /// The map is registered with the SIGBUS guard (or refused with an
    /// error if its table is full): if another program
    /// truncates the file, a touched page past the new end becomes a private
    /// zero page (reads see zeros, writes go nowhere) and [`faulted`] turns
    /// true, which the index treats as "retired: rebuild".
    ///
    /// [`faulted`]: SharedMap::faulted
    pub(crate) fn map_rw(file: &File, len: usize) -> io::Result<SharedMap> {
        bus_guard::install();
        let map = MmapOptions::new().len(len).map_raw(file)?;
        let guard = guard(&map, len, true)?;
        Ok(SharedMap { map, len, guard })
    }

    /// Maps `len` bytes of `file` read-only. `len` may exceed the file's
    /// current length (a reservation for growth); callers only touch bytes
    /// below the length they checked with `fstat`. The map is registered
    /// with the SIGBUS guard (or refused with an error if its table is
    /// full): if another program truncates the file below a
    /// page a reader touches, the page reads as zeros (a miss) instead of
    /// killing the process.
    pub(crate) fn map_ro(file: &File, len: usize) -> io::Result<SharedMap> {
        bus_guard::install();
        let map = MmapOptions::new().len(len).map_raw_read_only(file)?;
        let guard = guard(&map, len, false)?;
        Ok(SharedMap { map, len, guard })
    }

    /// True once a page of this map was found missing (the file was
    /// truncated by another program) and replaced by a zero page: what the
    /// map reads is no longer the file.
    pub(crate) fn faulted(&self) -> bool {
        bus_guard::faulted(self.guard)
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
        // borrows `self`). The engine never truncates a mapped file
        // (FORMAT.md); if another program does, the SIGBUS guard puts a
        // private zero page in place of a lost page (same address, same
        // alignment), so the reference stays valid. Other processes access the same word only
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
        // page is backed (if another program truncated the file since, the
        // SIGBUS guard of read-only maps makes the lost pages read as zeros). The source is shared memory that, by the protocol in
        // FORMAT.md, no process writes once a record is published; a hostile or
        // buggy writer could still race, which is why every copied record is
        // verified by its crc32 before any byte of it is trusted. `dst` is a
        // distinct, exclusively borrowed Rust buffer, so the ranges don't overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(off), dst.as_mut_ptr(), dst.len());
        }
        true
    }

    /// Asks the CPU to fetch the cache lines of `off..off + len` (clamped to
    /// the map) into the cache: a hint that reads nothing and never faults
    /// (the base lookup's prefetch of a cell's predicted place, FORMAT.md
    /// "Reading", step 5). A no-op off x86_64.
    #[inline]
    pub(crate) fn prefetch(&self, off: usize, len: usize) {
        let end = off.saturating_add(len).min(self.len);
        let mut at = off & !63;
        while at < end {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `at < end <= self.len`, so the pointer stays inside the
            // mapping (`add` is in bounds). A prefetch instruction is a hint:
            // it never faults (not even on a page the SIGBUS guard would
            // replace), reads nothing into the program and writes nothing;
            // SSE is part of the x86_64 baseline.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    self.map.as_ptr().add(at) as *const i8,
                );
            }
            at += 64;
        }
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

    /// `msync(MS_SYNC)` of `len` bytes at `off` (page-aligned).
    pub(crate) fn flush_range(&self, off: usize, len: usize) -> io::Result<()> {
        self.map
            .flush_range(off, len.min(self.len.saturating_sub(off)))
    }
}

/// The system calls under lock words (`crate::locks`): futex waits and
/// wakes, and the liveness query of a process slot.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod words;

/// Forked children and signals for the engine's own tests.
#[cfg(test)]
pub(crate) mod proc;

/// Accesses to a file that another program truncated while it is mapped.
///
/// The engine never truncates a mapped file, but another program may (an
/// editor, `truncate`, a disk cleaner): an access to a page beyond the new
/// end of the file raises SIGBUS, which would kill the process. The guard's
/// SIGBUS handler checks whether the faulting address lies in one of the
/// registered maps (segments, read-only; the index, read-write); if so it
/// maps a private zero page over that page (`mmap(MAP_FIXED |
/// MAP_ANONYMOUS)`, a system call, safe in a signal handler on Linux, with
/// the map's protection), marks the map faulted and returns, so the faulting
/// access resumes on zeros. In a segment, zeros fail the record's checks: a
/// miss, and `verify` reports the missing records. A faulted index is
/// treated as retired: the next operation reopens `index`, finds it too
/// short and rebuilds it from the log. Any other SIGBUS goes to the previous
/// handler (Rust's stack-overflow handler, Python's faulthandler, or the
/// default action). Every new map checks that the guard is still the
/// SIGBUS handler and, if another was installed since (a late
/// `faulthandler.enable()`), installs the guard again in front of it; a
/// handler installed after the last map was made shadows the guard until
/// the next map.
mod bus_guard;

/// The descriptors the engine locks through, let go of in a forked child.
mod lock_fds;
pub(crate) use lock_fds::LockFile;

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

/// Takes an exclusive `flock` of `file`, waiting at most `timeout` for
/// another holder; whether it was taken. Tries without blocking, yields,
/// then sleeps between tries (20 us, doubling to 1 ms): a blocking `flock`
/// cannot be given a deadline. A timeout too long to have a deadline
/// (`Duration::MAX`: "as long as it takes") waits for as long as needed.
pub(crate) fn flock_within(file: &File, timeout: std::time::Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now().checked_add(timeout);
    let mut pause = std::time::Duration::from_micros(20);
    let mut tries = 0u32;
    loop {
        if flock(file, true, true)? {
            return Ok(true);
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => return Ok(false),
            },
            None => pause,
        };
        if tries < 64 {
            tries += 1;
            std::thread::yield_now();
        } else {
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(std::time::Duration::from_millis(1));
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
    lock_fds::release_in_child();
}

/// A counter bumped in every child process right after `fork()`.
pub fn fork_generation() -> u64 {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only increments a static atomic
        // and points registered lock descriptors at `/dev/null` (atomic
        // loads and `dup3`), which is async-signal-safe and valid in a
        // freshly forked child.
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

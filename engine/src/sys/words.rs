//! The system calls under lock words (`crate::locks`, FORMAT.md "Lock
//! words"): waiting on a word in a shared map until it changes (a futex),
//! waking its waiters, and asking whether a process slot's byte lock is
//! still held (its holder alive).
//!
//! The words themselves are plain integers read and written with atomic
//! instructions through [`SharedMap::u64_at`]: no pointer is ever stored in
//! a shared map or read from one, so bytes another program writes there can
//! make a lock look held or free, never make this process touch other
//! memory.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The address of the low 32 bits of `word` (the futex): the lock state
/// lives there.
fn low_half(word: &AtomicU64) -> *const u32 {
    let p = word.as_ptr().cast::<u32>().cast_const();
    if cfg!(target_endian = "big") {
        // SAFETY: `word` is 8 bytes, so `p + 1` (4 bytes in) stays inside it.
        unsafe { p.add(1) }
    } else {
        p
    }
}

/// Sleeps while the low 32 bits of `word` equal `expected`, at most
/// `timeout`; returns when woken, when the word changed (at once), at the
/// timeout, or on a signal. The caller checks the word again in every case.
///
/// A shared (not `FUTEX_PRIVATE`) futex: on a `MAP_SHARED` file map the
/// kernel keys it by the file and offset, so waiters and wakers in other
/// processes meet.
pub(crate) fn futex_wait(word: &AtomicU64, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the futex address is inside `word`, a live, 4-aligned atomic
    // (the kernel only reads it, atomically); `ts` is a valid timespec on
    // our stack for the whole call; the other arguments are ignored by
    // FUTEX_WAIT. An error (EAGAIN: the word changed; ETIMEDOUT; EINTR) is
    // one of the returns the caller handles by looking at the word again.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            low_half(word),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every thread (of any process) sleeping in [`futex_wait`] on
/// `word`.
pub(crate) fn futex_wake_all(word: &AtomicU64) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE only uses the address as a key
    // and the count.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            low_half(word),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Whether an open file description other than `file`'s holds a write
/// lock on byte `at` of the file (`F_OFD_GETLK`): a process slot whose
/// holder is alive. Locks held through `file` itself do not count.
pub(crate) fn ofd_held_elsewhere(file: &File, at: u64) -> io::Result<bool> {
    let Ok(start) = libc::off_t::try_from(at) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "lock offset too large",
        ));
    };
    // SAFETY: `libc::flock` is a plain C struct for which all-zero bytes are
    // valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = 1;
    loop {
        // SAFETY: F_OFD_GETLK reads and writes the struct we pass by
        // pointer, which lives on our stack for the whole call; the
        // descriptor is ours.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(fl.l_type != libc::F_UNLCK as libc::c_short);
    }
}

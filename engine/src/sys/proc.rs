//! Processes for the engine's own tests (compiled in tests only): a forked
//! child running a closure, signals, and reaping; so that the tests of
//! cross-process protocols (`crate::locks`) need no `unsafe` of their own.

/// Forks; the child runs `child` and exits with its code (never returning
/// here, running none of the parent's destructors). The child's pid.
///
/// The child should keep to what is safe after a `fork` of a
/// multi-threaded process: glibc keeps `malloc` usable; it must not print
/// (the test harness's output lock may be held by another thread).
pub(crate) fn fork_then(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: `fork` has no memory preconditions; in the child, only this
    // thread exists, and it runs `child` and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = child();
        // SAFETY: ends the child without unwinding into the parent's frames.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Sends `sig` to the child `pid`.
pub(crate) fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: `kill` takes two integers.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Waits for the child `pid` to end; its exit code (`None` if a signal
/// ended it).
pub(crate) fn reap(pid: libc::pid_t) -> Option<i32> {
    let mut st = 0;
    // SAFETY: `st` is a writable int on our stack for the whole call.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st))
}

/// Stops this process (`SIGSTOP`) until it is continued or killed.
pub(crate) fn stop_self() {
    // SAFETY: `raise` takes an integer.
    unsafe { libc::raise(libc::SIGSTOP) };
}

/// Waits for signals forever (until one kills this process).
pub(crate) fn pause_forever() -> ! {
    loop {
        // SAFETY: `pause` takes nothing.
        unsafe { libc::pause() };
    }
}

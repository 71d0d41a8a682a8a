//! The SIGBUS guard's table of maps and its handler (see the module
//! documentation in `sys.rs`).
//!
//! The table grows without a lock: a first level of [`SLOTS`] slots is
//! static; further levels of [`SLOTS`] slots each are allocated on demand,
//! filled, and then published with one release store of their pointer, so
//! the handler (which only loads atomics: async-signal-safe) sees a level
//! whole or not at all. Levels are never freed (a freed slot is reused), so
//! a pointer the handler loaded stays valid. A process with more maps than
//! [`LEVELS`] levels hold (a million; Linux allows 65,530 maps per process
//! unless `vm.max_map_count` is raised) gets no slot, and the map is
//! refused rather than made without a guard.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

/// Slots per level.
const SLOTS: usize = 8192;
/// Levels, the static first one included.
const LEVELS: usize = 128;

/// One registered map: `start` is 0 when the slot is free, `usize::MAX`
/// while it is being filled.
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    /// Whether the map is writable (its zero pages must be too).
    writable: AtomicBool,
    /// Whether a page of the map was replaced by a zero page.
    faulted: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            writable: AtomicBool::new(false),
            faulted: AtomicBool::new(false),
        }
    }
}

static FIRST: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Levels 1.., each a leaked `Box<[Slot]>` of `SLOTS` slots, or null.
static MORE: [AtomicPtr<Slot>; LEVELS - 1] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; LEVELS - 1];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();

/// Level `l`, if it has been published.
fn level(l: usize) -> Option<&'static [Slot]> {
    if l == 0 {
        return Some(&FIRST);
    }
    let p = MORE.get(l - 1)?.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null pointer in `MORE` comes from `Box::into_raw` of a
    // `Box<[Slot]>` of exactly `SLOTS` slots, initialized before the
    // release store that published it (our acquire load pairs with it), and
    // never freed: the slice is valid for the rest of the process. Slots are
    // only accessed through atomics.
    Some(unsafe { std::slice::from_raw_parts(p, SLOTS) })
}

/// Level `l` (1..), allocated and published if it is not yet.
fn level_or_make(l: usize) -> Option<&'static [Slot]> {
    if let Some(s) = level(l) {
        return Some(s);
    }
    let cell = MORE.get(l - 1)?;
    let fresh: Box<[Slot]> = (0..SLOTS).map(|_| Slot::new()).collect();
    let p = Box::into_raw(fresh) as *mut Slot;
    let published =
        cell.compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire);
    if published.is_err() {
        // Another thread published this level first: ours was never seen.
        // SAFETY: `p` is the pointer of the box made above, of `SLOTS`
        // slots, not published (the exchange failed), so nobody else holds
        // it; rebuilding the box frees it once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, SLOTS)) });
    }
    level(l)
}

/// The slot of global number `slot` (registered: its level exists).
fn slot_at(slot: usize) -> Option<&'static Slot> {
    level(slot / SLOTS).map(|l| &l[slot % SLOTS])
}

/// The handler that was installed before ours (the last time ours was
/// installed): a leaked `sigaction`, or null. A new one is leaked each time
/// another program's handler is found in front of ours (rare: once per
/// `faulthandler.enable()` or `signal.signal(SIGBUS, ...)`), so a pointer
/// the handler loaded stays valid.
static PREV: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
/// Serializes [`install`]'s check and re-installation (not the handler).
static INSTALLING: Mutex<()> = Mutex::new(());
/// Set while a SIGBUS is handed to the previous handler: a handler that
/// puts ours back and raises the signal again (Python's faulthandler,
/// when ours was installed after it and then it after ours) would
/// otherwise be handed the signal again, forever.
static CHAINING: AtomicBool = AtomicBool::new(false);

/// Installs the guard's handler unless it is the current SIGBUS handler,
/// saving the one it replaces (to hand it the faults outside our maps).
/// Called whenever a map is made: a handler installed since (Python's
/// `faulthandler.enable()`, `signal.signal(SIGBUS, ...)`) is put behind
/// ours again. One installed after the last map was made still shadows
/// ours until the next map.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
    });
    let _serial = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_sigbus;
    // SAFETY: all-zero bytes are a valid sigaction; sigemptyset and
    // sigaction only write into structs we own. The previous action is
    // saved (leaked, never freed: the handler may read it at any time)
    // before ours is installed.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
            return;
        }
        if old.sa_sigaction == handler as usize {
            return;
        }
        PREV.store(Box::into_raw(Box::new(old)), Ordering::Release);
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = handler as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        libc::sigemptyset(&mut new.sa_mask);
        libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut());
    }
}

/// Registers a map; its slot, or `None` if every level is full (the caller
/// then refuses the map).
pub(crate) fn register(start: usize, len: usize, writable: bool) -> Option<usize> {
    for l in 0..LEVELS {
        let slots = level_or_make(l)?;
        for (i, s) in slots.iter().enumerate() {
            if s.start.load(Ordering::Relaxed) != 0 {
                continue;
            }
            if s.start
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                s.writable.store(writable, Ordering::Release);
                s.faulted.store(false, Ordering::Release);
                s.len.store(len, Ordering::Release);
                s.start.store(start, Ordering::Release);
                return Some(l * SLOTS + i);
            }
        }
    }
    None
}

/// Whether the map in `slot` had a page replaced.
pub(crate) fn faulted(slot: usize) -> bool {
    slot_at(slot).is_some_and(|s| s.faulted.load(Ordering::Acquire))
}

pub(crate) fn unregister(slot: usize) {
    if let Some(s) = slot_at(slot) {
        s.len.store(0, Ordering::Release);
        s.start.store(0, Ordering::Release);
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    // Only atomic loads (of the levels' pointers and of the slots) and one
    // system call: async-signal-safe. A level not yet published holds no
    // map (a map is used only after its registration returned).
    for slots in (0..LEVELS).map_while(level) {
        for s in slots {
            let start = s.start.load(Ordering::Acquire);
            if start == 0 || start == usize::MAX {
                continue;
            }
            let len = s.len.load(Ordering::Acquire);
            if addr < start || addr - start >= len {
                continue;
            }
            let at = addr & !(page - 1);
            let prot = if s.writable.load(Ordering::Acquire) {
                libc::PROT_READ | libc::PROT_WRITE
            } else {
                libc::PROT_READ
            };
            s.faulted.store(true, Ordering::Release);
            // SAFETY: `at..at + page` lies inside a live map of ours
            // (registered until the map is dropped, and a map is not dropped
            // while anyone accesses it: accesses borrow it). Replacing the
            // page with a private zero page of the same protection changes
            // only what that map reads and where its writes go (nowhere
            // shared: the file has no such page any more); every pointer and
            // reference into it stays valid and aligned. mmap is a plain
            // system call, async-signal-safe on Linux.
            let r = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if r != libc::MAP_FAILED {
                return;
            }
        }
    }
    chain(sig, info, ctx);
}

/// Hands a SIGBUS that is not ours to the previous handler, or restores
/// the default action (the faulting instruction then faults again and
/// the process dies as it would have).
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let p = PREV.load(Ordering::Acquire);
    // SAFETY: a non-null `PREV` is a leaked, never freed sigaction, written
    // before the release store that published it.
    let prev = (!p.is_null()).then(|| unsafe { *p });
    let again = CHAINING.swap(true, Ordering::AcqRel);
    match prev {
        Some(p) if !again && p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN => {
            if p.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed with
                // SA_SIGINFO, so it has this signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(p.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: a handler installed without SA_SIGINFO takes
                // the signal number only.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(p.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // SAFETY: resetting a signal's action to the default.
            unsafe {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
            }
        }
    }
    if !again {
        CHAINING.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More maps than one level holds are all registered, in a second
    /// level published on demand, found by number, and freed slots reused.
    #[test]
    fn the_table_grows_past_its_first_level() {
        // Fake addresses far from any real map (never faulted here).
        let base = 1usize << 46;
        let slots: Vec<usize> = (0..SLOTS + 100)
            .map(|i| register(base + i * 4096, 4096, false).expect("a slot"))
            .collect();
        assert!(slots.iter().any(|&s| s >= SLOTS), "a second level used");
        let mut sorted = slots.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), slots.len(), "every slot distinct");
        for &s in &slots {
            assert!(!faulted(s));
            let at = slot_at(s).unwrap().start.load(Ordering::Acquire);
            assert!((base..base + (SLOTS + 100) * 4096).contains(&at));
        }
        for &s in &slots {
            unregister(s);
        }
        let again = register(base, 4096, false).unwrap();
        assert!(again < SLOTS, "a freed slot of the first level reused");
        unregister(again);
    }
}

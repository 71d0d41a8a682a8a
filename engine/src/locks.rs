//! Lock words: locks shared by every process of a store, kept in a shared
//! map, that cost an atomic instruction each way when uncontended and are
//! handed over when their holder dies (FORMAT.md, "Lock words"; build step
//! 2b of format version 2, not yet used by the engine).
//!
//! **Why not POSIX robust mutexes.** A `PTHREAD_MUTEX_ROBUST` mutex keeps
//! the links of its holder's robust list *inside the mutex*, and the C
//! library's unlock writes through them: glibc 2.36's
//! `pthread_mutex_unlock` stores the mutex's `__prev` pointer at the
//! address its `__next` names. In a shared file, whoever can write the file
//! (another program of the user, the group with `group_access`) chooses
//! both, and so chooses what the unlocking process writes where in its own
//! memory. FORMAT.md promises that bytes written into the store's files
//! cause misses, never an out-of-bounds access; so no pointer is ever kept
//! in a shared map.
//!
//! **Process slots.** Each process using a store's lock words claims a
//! *slot*: an `F_OFD_SETLK` write lock on one byte of the lock file, held
//! for as long as it uses the words (one system call per slot tried, when
//! it first needs the words; the kernel releases it when the process dies,
//! `kill -9` included). On claiming slot `s` it bumps `s`'s *generation* in
//! the slot table, a word per slot in the map. `(s, generation)` names the
//! claim, and so the process, until the slot is claimed again.
//!
//! **A word** (8 bytes) is 0 when free; when held, its high 32 bits are the
//! holder's slot, bits 2 to 31 its generation, and bits 0 and 1 the state
//! (1: held, 2: held, with waiters). Taking a free word is one
//! compare-and-swap; releasing it one more (and a `futex` wake if someone
//! waits). A waiter sleeps on the word's low half (`futex`, shared between
//! processes by the file and offset), in slices: after a slice in which the
//! word did not change it checks that the holder lives: its slot is in
//! range, the slot's generation is the word's, and another open file
//! description holds the slot's byte (`F_OFD_GETLK`). If not, the holder
//! died: the waiter swaps the word to itself and gets [`Taken::OwnerDied`]
//! (what it protected may be half changed: it recovers before going on).
//!
//! Bytes of any value in a word or a slot's generation make a lock look
//! free, held by a live holder (a bounded wait, then `None`), or held by a
//! dead one (taken over, then recovered): never a hang past the caller's
//! timeout, never a memory access outside the map.
//!
//! A word is not re-entrant (the holder is a process, not a thread): the
//! engine takes a process-local lock in front of each.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sys::words::{futex_wait, futex_wake_all, ofd_held_elsewhere};
use crate::sys::{fork_generation, ofd_try_lock, SharedMap};

/// How many process slots a store has: at most this many processes use its
/// lock words at once (a process that finds none free gets an error and
/// the caller steps aside).
pub(crate) const SLOTS: u32 = 1024;

/// The bytes of the slot table (a generation word per slot).
pub(crate) const SLOT_TABLE_LEN: usize = SLOTS as usize * 8;

/// The bytes of one word: a cache line, so that no two words (and no other
/// data) share one.
pub(crate) const WORD: usize = 64;

const FREE: u64 = 0;
const HELD: u64 = 1;
const WAITERS: u64 = 2;
const STATE: u64 = 3;
const GEN_MASK: u32 = (1 << 30) - 1;

/// How long a waiter sleeps before it checks that the holder lives.
const SLICE: Duration = Duration::from_millis(10);

/// How a lock word was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Its last holder released it.
    Clean,
    /// Its last holder died holding it (or its bytes named no live
    /// holder): what it protected may be half changed.
    OwnerDied,
}

/// A store's lock words: the slot table at `table` in `map`, the words
/// anywhere else in it, and the lock file whose bytes `0..SLOTS` are the
/// slots.
pub(crate) struct LockWords<'a> {
    map: &'a SharedMap,
    table: usize,
}

/// This process's claim of a slot: the open file description holding its
/// byte lock (released when dropped, or by the kernel when the process
/// dies).
pub(crate) struct Slot {
    file: File,
    slot: u32,
    gen: u32,
    /// The fork generation that claimed it: a forked child claims its own.
    forked: u64,
}

impl Slot {
    /// Claims a free slot of the lock file at `path` and bumps its
    /// generation in `words`' slot table.
    pub(crate) fn claim(words: &LockWords<'_>, path: &Path) -> io::Result<Slot> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let start = std::process::id() % SLOTS;
        for i in 0..SLOTS {
            let slot = (start + i) % SLOTS;
            if !ofd_try_lock(&file, u64::from(slot))? {
                continue;
            }
            let g = words.gen_word(slot);
            let mut old = g.load(Ordering::Acquire);
            let gen = loop {
                let next = ((old as u32 & GEN_MASK) % GEN_MASK) + 1; // 1..=GEN_MASK
                match g.compare_exchange(old, u64::from(next), Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => break next,
                    Err(now) => old = now,
                }
            };
            return Ok(Slot {
                file,
                slot,
                gen,
                forked: fork_generation(),
            });
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("all {SLOTS} process slots of the store's lock words are in use"),
        ))
    }

    /// Whether this claim was made by this process (not inherited across a
    /// `fork`: a child claims a slot of its own).
    pub(crate) fn is_current(&self) -> bool {
        self.forked == fork_generation()
    }

    /// The word's value while this process holds it, with `state`.
    fn held(&self, state: u64) -> u64 {
        (u64::from(self.slot) << 32) | (u64::from(self.gen) << 2) | state
    }
}

impl<'a> LockWords<'a> {
    /// The lock words of `map`, whose slot table is at `table` (8-aligned,
    /// [`SLOT_TABLE_LEN`] bytes inside the map).
    pub(crate) fn new(map: &'a SharedMap, table: usize) -> io::Result<LockWords<'a>> {
        if table % 8 != 0
            || table
                .checked_add(SLOT_TABLE_LEN)
                .is_none_or(|e| e > map.len())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a slot table at {table} outside a map of {} bytes",
                    map.len()
                ),
            ));
        }
        Ok(LockWords { map, table })
    }

    fn gen_word(&self, slot: u32) -> &AtomicU64 {
        self.map.u64_at(self.table + slot as usize * 8)
    }

    /// The word at `off`: 64-aligned, inside the map, outside the table.
    fn word(&self, off: usize) -> io::Result<&AtomicU64> {
        let in_table = off < self.table + SLOT_TABLE_LEN && self.table < off + WORD;
        if off % WORD != 0 || off.checked_add(WORD).is_none_or(|e| e > self.map.len()) || in_table {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a lock word at {off}: not a word of this map"),
            ));
        }
        Ok(self.map.u64_at(off))
    }

    /// Sets the word at `off` free, whatever it held: only while no process
    /// uses it (when the file is made, or under `flock` after a reboot).
    pub(crate) fn init(&self, off: usize) -> io::Result<()> {
        self.word(off)?.store(FREE, Ordering::Release);
        Ok(())
    }

    /// Whether the holder named by `cur` (a held word's value) lives.
    fn alive(&self, cur: u64, me: &Slot) -> io::Result<bool> {
        let slot = (cur >> 32) as u32;
        let gen = (cur as u32) >> 2;
        if slot >= SLOTS || gen == 0 {
            return Ok(false);
        }
        if slot == me.slot {
            return Ok(gen == me.gen); // this process, or a dead one before it
        }
        if self.gen_word(slot).load(Ordering::Acquire) != u64::from(gen) {
            return Ok(false); // the slot was claimed again since
        }
        ofd_held_elsewhere(&me.file, u64::from(slot))
    }

    /// Takes the word at `off` for `me`, waiting at most `timeout`: `None`
    /// if a live holder still had it then (a stopped process, a long
    /// operation, or bytes naming a live process).
    pub(crate) fn lock_within(
        &self,
        off: usize,
        me: &Slot,
        timeout: Duration,
    ) -> io::Result<Option<Taken>> {
        let w = self.word(off)?;
        // The uncontended case: one compare-and-swap, no clock.
        if w.compare_exchange(FREE, me.held(HELD), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(Some(Taken::Clean));
        }
        let start = Instant::now();
        let deadline = start + timeout;
        // A caller that will not wait a slice checks the holder at once.
        let mut check_at = if timeout < SLICE {
            start
        } else {
            start + SLICE
        };
        // The holder seen since `check_at` was set.
        let mut watched = None;
        let mut spins = 0u32;
        let mut slept = false;
        loop {
            let cur = w.load(Ordering::Acquire);
            if cur == FREE {
                // One that slept keeps the waiters mark: others may sleep.
                let mine = me.held(if slept { WAITERS } else { HELD });
                if w.compare_exchange(FREE, mine, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(Some(Taken::Clean));
                }
                continue;
            }
            let now = Instant::now();
            let holder = cur & !STATE;
            if watched != Some(holder) {
                if watched.is_some() {
                    check_at = now + SLICE; // another holder: it gets a slice
                }
                watched = Some(holder);
            }
            if now >= check_at {
                check_at = now + SLICE;
                if !self.alive(cur, me)? {
                    // The dead holder's waiters stay waiters of ours.
                    let mine = me.held(if cur & STATE == HELD { HELD } else { WAITERS });
                    if w.compare_exchange(cur, mine, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Ok(Some(Taken::OwnerDied));
                    }
                    continue;
                }
            }
            if now >= deadline {
                return Ok(None);
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
                continue;
            }
            if cur & STATE != WAITERS {
                let want = holder | WAITERS;
                if w.compare_exchange(cur, want, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
            }
            let nap = deadline.min(check_at).saturating_duration_since(now);
            futex_wait(
                w,
                (holder | WAITERS) as u32,
                nap.max(Duration::from_micros(50)),
            );
            slept = true;
        }
    }

    /// Takes the word at `off` for `me` if it is free (or its holder is
    /// dead): `None` if a live holder has it.
    pub(crate) fn try_lock(&self, off: usize, me: &Slot) -> io::Result<Option<Taken>> {
        self.lock_within(off, me, Duration::ZERO)
    }

    /// Releases the word at `off`, which `me` holds (an error, changing
    /// nothing, if it does not).
    pub(crate) fn unlock(&self, off: usize, me: &Slot) -> io::Result<()> {
        let w = self.word(off)?;
        let mut cur = w.load(Ordering::Relaxed);
        loop {
            if cur & !STATE != me.held(0) || cur & STATE == FREE {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "released a lock word this process does not hold",
                ));
            }
            match w.compare_exchange(cur, FREE, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur & STATE == WAITERS {
            futex_wake_all(w);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

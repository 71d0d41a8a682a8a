//! Lock words against real threads and processes: exclusion, hand-over
//! when a holder exits or is killed, a stopped holder, slots claimed again,
//! and words of every kind of garbage.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{LockWords, Slot, Taken, SLOTS, SLOT_TABLE_LEN, WORD};
use crate::sys::proc::{fork_then, pause_forever, reap, signal, stop_self};
use crate::sys::SharedMap;

/// A store-like pair: a map holding the slot table then `n` words, and the
/// lock file.
struct Fixture {
    _dir: tempfile::TempDir,
    map: SharedMap,
    lock: PathBuf,
}

fn fixture(n: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let len = SLOT_TABLE_LEN + n * WORD;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("index"))
        .unwrap();
    f.set_len(len as u64).unwrap();
    let map = SharedMap::map_rw(&f, len).unwrap();
    let lock = dir.path().join("lock");
    std::fs::write(&lock, b"").unwrap();
    Fixture {
        _dir: dir,
        map,
        lock,
    }
}

impl Fixture {
    fn words(&self) -> LockWords<'_> {
        LockWords::new(&self.map, 0).unwrap()
    }
    fn slot(&self) -> Slot {
        Slot::claim(&self.words(), &self.lock).unwrap()
    }
}

/// The offset of word `i`.
fn at(i: usize) -> usize {
    SLOT_TABLE_LEN + i * WORD
}

/// Forks a child that claims a slot, takes word `off`, says so through a
/// pipe, then runs `then` and exits. Its pid.
fn child_holding(fx: &Fixture, off: usize, then: fn()) -> libc::pid_t {
    let (mut rx, mut tx) = std::io::pipe().unwrap();
    let pid = fork_then(|| {
        let words = fx.words();
        let ok = Slot::claim(&words, &fx.lock)
            .ok()
            .and_then(|me| {
                let t = words.try_lock(off, &me).ok().flatten();
                std::mem::forget(me); // its descriptor lives until the child ends
                t
            })
            .is_some();
        let _ = tx.write_all(&[u8::from(ok)]);
        then();
        0
    });
    drop(tx);
    let mut b = [0u8];
    rx.read_exact(&mut b).unwrap();
    assert_eq!(b[0], 1, "the child took the word");
    pid
}

#[test]
fn a_word_excludes_other_threads_and_is_handed_over_on_release() {
    let fx = fixture(2);
    let (w, me) = (fx.words(), fx.slot());
    assert_eq!(w.try_lock(at(0), &me).unwrap(), Some(Taken::Clean));
    assert_eq!(w.try_lock(at(1), &me).unwrap(), Some(Taken::Clean));
    std::thread::scope(|s| {
        s.spawn(|| {
            // Another thread of this process: held by a live holder.
            assert_eq!(w.try_lock(at(0), &me).unwrap(), None);
            let t = Instant::now();
            assert_eq!(
                w.lock_within(at(0), &me, Duration::from_millis(120))
                    .unwrap(),
                None
            );
            assert!(t.elapsed() >= Duration::from_millis(100));
        });
    });
    w.unlock(at(0), &me).unwrap();
    w.unlock(at(1), &me).unwrap();
    // Released twice: an error, and the word stays free.
    assert!(w.unlock(at(0), &me).is_err());
    assert_eq!(fx.map.u64_at(at(0)).load(Ordering::Relaxed), 0);
    std::thread::scope(|s| {
        assert_eq!(w.try_lock(at(0), &me).unwrap(), Some(Taken::Clean));
        let waiter = s.spawn(|| {
            let t = Instant::now();
            let r = w.lock_within(at(0), &me, Duration::from_secs(30)).unwrap();
            w.unlock(at(0), &me).unwrap();
            (r, t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(150));
        w.unlock(at(0), &me).unwrap();
        let (r, waited) = waiter.join().unwrap();
        assert_eq!(r, Some(Taken::Clean));
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
    });
}

#[test]
fn another_processs_word_is_not_released_by_this_one() {
    let fx = fixture(1);
    let (w, me) = (fx.words(), fx.slot());
    let pid = child_holding(&fx, at(0), || pause_forever());
    let before = fx.map.u64_at(at(0)).load(Ordering::Relaxed);
    assert!(w.unlock(at(0), &me).is_err());
    assert_eq!(fx.map.u64_at(at(0)).load(Ordering::Relaxed), before);
    assert_eq!(w.try_lock(at(0), &me).unwrap(), None);
    signal(pid, libc::SIGKILL);
    reap(pid);
}

#[test]
fn a_process_that_exits_holding_a_word_hands_it_over_as_owner_died() {
    let fx = fixture(3);
    let (w, me) = (fx.words(), fx.slot());
    let pid = child_holding(&fx, at(1), || {});
    reap(pid);
    assert_eq!(w.try_lock(at(1), &me).unwrap(), Some(Taken::OwnerDied));
    w.unlock(at(1), &me).unwrap();
    assert_eq!(w.try_lock(at(1), &me).unwrap(), Some(Taken::Clean));
    w.unlock(at(1), &me).unwrap();
    for i in [0, 2] {
        assert_eq!(fx.map.u64_at(at(i)).load(Ordering::Relaxed), 0, "word {i}");
    }
}

#[test]
fn a_stopped_holder_bounds_the_wait_and_its_kill_hands_the_word_over() {
    let fx = fixture(1);
    let (w, me) = (fx.words(), fx.slot());
    let pid = child_holding(&fx, at(0), stop_self);
    let t = Instant::now();
    assert_eq!(
        w.lock_within(at(0), &me, Duration::from_millis(300))
            .unwrap(),
        None
    );
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(290), "{waited:?}");
    signal(pid, libc::SIGKILL);
    reap(pid);
    let t = Instant::now();
    assert_eq!(
        w.lock_within(at(0), &me, Duration::from_secs(30)).unwrap(),
        Some(Taken::OwnerDied)
    );
    println!("taken over {:?} after the holder's death", t.elapsed());
    w.unlock(at(0), &me).unwrap();
}

#[test]
fn waiters_blocked_on_a_killed_holder_are_handed_the_word_one_at_a_time() {
    let fx = fixture(1);
    let w = fx.words();
    let pid = child_holding(&fx, at(0), || pause_forever());
    let me = fx.slot();
    let inside = std::sync::atomic::AtomicU32::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let r = w.lock_within(at(0), &me, Duration::from_secs(30)).unwrap();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                std::thread::sleep(Duration::from_millis(5));
                inside.fetch_sub(1, Ordering::SeqCst);
                w.unlock(at(0), &me).unwrap();
                results.lock().unwrap().push(r);
            });
        }
        std::thread::sleep(Duration::from_millis(100));
        signal(pid, libc::SIGKILL);
    });
    reap(pid);
    let r = results.into_inner().unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(
        r.iter().filter(|t| **t == Some(Taken::OwnerDied)).count(),
        1,
        "{r:?}"
    );
    assert_eq!(r.iter().filter(|t| **t == Some(Taken::Clean)).count(), 3);
}

#[test]
fn a_dead_holders_slot_claimed_again_does_not_keep_its_word() {
    let fx = fixture(1);
    let w = fx.words();
    let pid = child_holding(&fx, at(0), || {});
    reap(pid);
    let held = fx.map.u64_at(at(0)).load(Ordering::Relaxed);
    let dead_slot = (held >> 32) as u32;
    // Claim slots until the dead child's is taken again (by this process):
    // its generation moves on, so the word names nobody.
    let mut mine = Vec::new();
    while !mine.iter().any(|s: &Slot| s.slot == dead_slot) {
        mine.push(fx.slot());
        assert!(mine.len() <= SLOTS as usize);
    }
    let other = mine
        .iter()
        .find(|s| s.slot != dead_slot)
        .unwrap_or(&mine[0]);
    assert_eq!(w.try_lock(at(0), other).unwrap(), Some(Taken::OwnerDied));
    w.unlock(at(0), other).unwrap();
}

/// Many processes, each with several threads, increment a counter in the
/// map with a plain load and store under the word: the final count is
/// exact only if no two ever held it at once.
#[test]
fn processes_and_threads_exclude_each_other() {
    const PROCS: usize = 4;
    const THREADS: usize = 3;
    const ROUNDS: u64 = 2_000;
    let fx = fixture(2);
    let counter = at(1);
    let mut pids = Vec::new();
    for _ in 0..PROCS {
        let pid = fork_then(|| {
            let words = fx.words();
            match Slot::claim(&words, &fx.lock) {
                Ok(me) => {
                    let ok = std::sync::atomic::AtomicBool::new(true);
                    std::thread::scope(|s| {
                        for _ in 0..THREADS {
                            s.spawn(|| {
                                for _ in 0..ROUNDS {
                                    let t = words.lock_within(at(0), &me, Duration::from_secs(60));
                                    if !matches!(t, Ok(Some(Taken::Clean))) {
                                        ok.store(false, Ordering::SeqCst);
                                        return;
                                    }
                                    let c = fx.map.u64_at(counter);
                                    let v = c.load(Ordering::Relaxed);
                                    std::hint::spin_loop();
                                    c.store(v + 1, Ordering::Relaxed);
                                    if words.unlock(at(0), &me).is_err() {
                                        ok.store(false, Ordering::SeqCst);
                                    }
                                }
                            });
                        }
                    });
                    i32::from(!ok.load(Ordering::SeqCst))
                }
                Err(_) => 2,
            }
        });
        pids.push(pid);
    }
    for pid in pids {
        assert_eq!(reap(pid), Some(0), "child {pid}");
    }
    assert_eq!(
        fx.map.u64_at(counter).load(Ordering::Relaxed),
        PROCS as u64 * THREADS as u64 * ROUNDS
    );
    assert_eq!(fx.map.u64_at(at(0)).load(Ordering::Relaxed), 0);
}

/// Words holding any bytes: each is taken (its bytes name no live holder)
/// or waited for at most the timeout (they name a live one), never longer,
/// and the words and slot generations around it are untouched.
#[test]
fn words_of_garbage_are_taken_over_or_waited_for_within_the_timeout() {
    let fx = fixture(3);
    let (w, me) = (fx.words(), fx.slot());
    let live_pid = child_holding(&fx, at(2), || pause_forever());
    let live = fx.map.u64_at(at(2)).load(Ordering::Relaxed);
    let ours = me.held(1);
    let cases: Vec<(u64, Option<Taken>)> = vec![
        (u64::MAX, Some(Taken::OwnerDied)), // slot out of range
        (0x0000_0001_0000_0000, Some(Taken::OwnerDied)), // generation 0
        (3, Some(Taken::OwnerDied)),        // state 3, slot 0 gen 0
        (
            (u64::from(SLOTS - 1) << 32) | (7 << 2) | 1,
            Some(Taken::OwnerDied),
        ), // unclaimed slot
        (live ^ (1 << 2), Some(Taken::OwnerDied)), // a live slot, old generation
        (live, None),                       // a live holder (the child)
        (live | 2, None),                   // ... with waiters
        (ours, None),                       // this process (not re-entrant)
    ];
    let gens: Vec<u64> = (0..SLOTS)
        .map(|s| w.gen_word(s).load(Ordering::Relaxed))
        .collect();
    for (bytes, want) in cases {
        fx.map.u64_at(at(1)).store(bytes, Ordering::Relaxed);
        let t = Instant::now();
        let got = w
            .lock_within(at(1), &me, Duration::from_millis(150))
            .unwrap();
        let took = t.elapsed();
        assert_eq!(got, want, "bytes {bytes:#x}");
        assert!(took < Duration::from_secs(10), "bytes {bytes:#x}: {took:?}");
        if got.is_some() {
            w.unlock(at(1), &me).unwrap();
        }
        assert_eq!(fx.map.u64_at(at(0)).load(Ordering::Relaxed), 0);
        assert_eq!(fx.map.u64_at(at(2)).load(Ordering::Relaxed), live);
    }
    let after: Vec<u64> = (0..SLOTS)
        .map(|s| w.gen_word(s).load(Ordering::Relaxed))
        .collect();
    assert_eq!(gens, after);
    signal(live_pid, libc::SIGKILL);
    reap(live_pid);
}

#[test]
fn words_outside_the_map_in_the_table_or_misaligned_are_errors() {
    let fx = fixture(1);
    let (w, me) = (fx.words(), fx.slot());
    for off in [
        0,
        8,
        SLOT_TABLE_LEN - WORD,
        at(0) + 8,
        at(1),
        usize::MAX - 10,
    ] {
        assert!(w.try_lock(off, &me).is_err(), "{off}");
        assert!(w.unlock(off, &me).is_err(), "{off}");
    }
    assert!(LockWords::new(&fx.map, 4).is_err());
    assert!(LockWords::new(&fx.map, WORD * 2).is_err());
}

#[test]
fn a_slot_inherited_across_fork_is_not_the_childs_and_init_frees_a_word() {
    let fx = fixture(1);
    let (w, me) = (fx.words(), fx.slot());
    assert!(me.is_current());
    let pid = fork_then(|| i32::from(me.is_current()));
    assert_eq!(
        reap(pid),
        Some(0),
        "the child saw the parent's slot as its own"
    );
    fx.map.u64_at(at(0)).store(u64::MAX, Ordering::Relaxed);
    w.init(at(0)).unwrap();
    assert_eq!(w.try_lock(at(0), &me).unwrap(), Some(Taken::Clean));
    w.unlock(at(0), &me).unwrap();
}

/// The uncontended cost of a take and release (printed, not asserted:
/// `cargo test --release -p picocache-engine --lib locks::tests::cost --
/// --nocapture`).
#[test]
fn cost_of_an_uncontended_take_and_release() {
    let fx = fixture(1);
    let (w, me) = (fx.words(), fx.slot());
    let n = 200_000u32;
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            assert_eq!(w.try_lock(at(0), &me).unwrap(), Some(Taken::Clean));
            w.unlock(at(0), &me).unwrap();
        }
        best = best.min(t.elapsed());
    }
    println!(
        "lock word: take + release {:.1} ns (least of 5 rounds of {n})",
        best.as_nanos() as f64 / f64::from(n)
    );
}

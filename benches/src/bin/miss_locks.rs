//! Prototype (issues 16 and 17): what the locking of a memoized miss costs
//! with version 1's system calls, and with lock words in a shared map.
//!
//! A Python miss on a `LocalCache` today makes five system calls around its
//! one `pwrite`: the key's lease (`fcntl(F_OFD_SETLK)` on a byte of
//! `leases`, then its release) and the writer lock (`flock` on `lock`, then
//! its release). This measures, per miss, in one run:
//!
//! - `v1`: lease by `F_OFD_SETLK`, writer by `flock`, a 128-byte `pwrite`;
//! - `words`: lease and writer as robust process-shared mutexes in a
//!   `MAP_SHARED` file (glibc's robust futexes: no system call when
//!   uncontended; a holder that dies is reported to the next locker with
//!   `EOWNERDEAD`, as the kernel releases an `fcntl`/`flock` lock), the same
//!   `pwrite`;
//! - `words + map`: the words, the record copied through a shared map of
//!   the preallocated segment instead of `pwrite`;
//!
//! each round appending to a fresh, preallocated (`fallocate`d) segment, so
//! every page is touched for the first time, as in a store's active segment;
//! - each without the `pwrite` (the locks alone), and the `pwrite` alone.
//!
//! `cargo run --release -p picocache-benches --bin miss_locks` (least of 7
//! rounds of 200,000 misses). Then `two processes`: the same, with a forked
//! child doing the same on the same files at the same time (contention).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::Instant;

const N: u64 = 200_000;
const ROUNDS: usize = 7;
const SLOTS: u64 = 4096;

mod shm {
    //! Robust, process-shared pthread mutexes in a shared file map: the one
    //! unsafe part of this prototype.
    #![allow(unsafe_code)]

    use std::fs::File;
    use std::os::unix::io::AsRawFd;

    /// A map of `n` mutexes.
    pub struct Mutexes {
        base: *mut libc::pthread_mutex_t,
        n: usize,
        len: usize,
    }

    impl Mutexes {
        /// Maps `file` (sized here) and initialises its `n` mutexes.
        pub fn new(file: &File, n: usize) -> Mutexes {
            let len = n * std::mem::size_of::<libc::pthread_mutex_t>();
            file.set_len(len as u64).expect("set_len");
            // SAFETY: maps `len` bytes of a file this process just sized,
            // shared and read-write; the pointer is checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert!(p != libc::MAP_FAILED, "mmap");
            let base = p as *mut libc::pthread_mutex_t;
            // SAFETY: `attr` is initialised before use and destroyed after;
            // each mutex lies inside the map (i < n), is initialised once,
            // before any other process or thread uses this map (the child
            // of the two-process run is forked after `new`).
            unsafe {
                let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
                assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
                assert_eq!(
                    libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
                    0
                );
                assert_eq!(
                    libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST),
                    0
                );
                for i in 0..n {
                    assert_eq!(libc::pthread_mutex_init(base.add(i), &attr), 0);
                }
                libc::pthread_mutexattr_destroy(&mut attr);
            }
            Mutexes { base, n, len }
        }

        fn at(&self, i: usize) -> *mut libc::pthread_mutex_t {
            assert!(i < self.n);
            // SAFETY: i < n: inside the map.
            unsafe { self.base.add(i) }
        }

        /// Locks mutex `i`, waiting; a dead holder's lock is taken over
        /// (made consistent), as the kernel hands over a dead `flock`.
        pub fn lock(&self, i: usize) {
            // SAFETY: an initialised mutex inside the live map.
            let r = unsafe { libc::pthread_mutex_lock(self.at(i)) };
            if r == libc::EOWNERDEAD {
                // SAFETY: this thread holds the mutex (EOWNERDEAD).
                unsafe { libc::pthread_mutex_consistent(self.at(i)) };
            } else {
                assert_eq!(r, 0, "lock");
            }
        }

        /// Tries mutex `i` without waiting.
        pub fn try_lock(&self, i: usize) -> bool {
            // SAFETY: as in `lock`.
            let r = unsafe { libc::pthread_mutex_trylock(self.at(i)) };
            if r == libc::EOWNERDEAD {
                // SAFETY: as in `lock`.
                unsafe { libc::pthread_mutex_consistent(self.at(i)) };
                return true;
            }
            r == 0
        }

        /// Unlocks mutex `i` (held by this thread).
        pub fn unlock(&self, i: usize) {
            // SAFETY: as in `lock`; this thread holds it.
            let r = unsafe { libc::pthread_mutex_unlock(self.at(i)) };
            assert_eq!(r, 0, "unlock");
        }
    }

    impl Drop for Mutexes {
        fn drop(&mut self) {
            // SAFETY: unmaps the map made in `new`, no longer used.
            unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
        }
    }

    /// `flock(fd, op)`.
    pub fn flock(f: &File, op: libc::c_int) {
        // SAFETY: a plain system call on a live descriptor.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), op) }, 0);
    }

    /// An open-file-description lock of byte `at` (`F_WRLCK`, or `F_UNLCK`
    /// with `lock` false), without waiting; whether it was taken.
    pub fn ofd(f: &File, at: u64, lock: bool) -> bool {
        // SAFETY: a zeroed `flock` struct is valid; fcntl reads it only.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = if lock { libc::F_WRLCK } else { libc::F_UNLCK } as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = at as i64;
        fl.l_len = 1;
        // SAFETY: as above.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) == 0 }
    }

    /// A writable shared map of the first `len` bytes of `file`.
    pub struct Map {
        base: *mut u8,
        len: usize,
    }

    impl Map {
        /// Maps `len` bytes of `file` (already that long), shared.
        pub fn new(file: &File, len: usize) -> Map {
            // SAFETY: as in `Mutexes::new`.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert!(p != libc::MAP_FAILED, "mmap");
            Map {
                base: p as *mut u8,
                len,
            }
        }

        /// Copies `b` to offset `at` of the map (the way an append through
        /// the map would write a record).
        pub fn write(&self, at: usize, b: &[u8]) {
            assert!(at + b.len() <= self.len);
            // SAFETY: the range is inside the live map (checked); the file
            // is this benchmark's own, preallocated, never truncated.
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.base.add(at), b.len()) };
        }
    }

    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: unmaps the map made in `new`, no longer used.
            unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
        }
    }

    /// `fallocate` of the whole file (blocks allocated: a write through the
    /// map cannot find the disk full).
    pub fn preallocate(f: &File, len: u64) {
        // SAFETY: a plain system call on a live descriptor.
        assert_eq!(
            unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as i64) },
            0
        );
    }

    /// `fork()`: Some(0) in the child, the child's pid in the parent.
    pub fn fork() -> i32 {
        // SAFETY: the parent is single-threaded here; the child only runs
        // the same loops and exits.
        unsafe { libc::fork() }
    }

    /// Waits for child `pid`.
    pub fn wait(pid: i32) {
        let mut st = 0;
        // SAFETY: a plain system call.
        unsafe { libc::waitpid(pid, &mut st, 0) };
    }
}

struct Files {
    dir: tempfile::TempDir,
    lock: File,
    leases: File,
    words: shm::Mutexes,
}

/// A fresh, preallocated segment for one round (every append touches new
/// pages, as appends to a store's active segment do), and its map.
fn segment(f: &Files, tag: u64) -> (File, shm::Map) {
    let path = f
        .dir
        .path()
        .join(format!("seg-{}-{tag}", std::process::id()));
    let seg = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("open");
    let len = N * 128;
    seg.set_len(len).expect("set_len");
    shm::preallocate(&seg, len);
    std::fs::remove_file(&path).expect("unlink");
    let map = shm::Map::new(&seg, len as usize);
    (seg, map)
}

fn files() -> Files {
    let dir = tempfile::tempdir_in(std::env::var("PICOCACHE_BENCH_DIR").unwrap_or(".".into()))
        .expect("tempdir");
    let open = |n: &str| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join(n))
            .expect("open")
    };
    let (lock, leases) = (open("lock"), open("leases"));
    let words = shm::Mutexes::new(&open("words"), 1 + SLOTS as usize);
    Files {
        dir,
        lock,
        leases,
        words,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    V1,
    Words,
    /// The words, and the record copied through a shared map of the
    /// (preallocated) segment instead of `pwrite`.
    WordsMap,
}

fn misses(f: &Files, way: Way, write: bool, seed: u64) -> f64 {
    let rec = [7u8; 128];
    let mut h = seed | 1;
    let (seg, map) = segment(f, seed);
    let t = Instant::now();
    for i in 0..N {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        let slot = h % SLOTS;
        match way {
            Way::V1 => {
                while !shm::ofd(&f.leases, slot, true) {}
                shm::flock(&f.lock, libc::LOCK_EX);
            }
            Way::Words | Way::WordsMap => {
                while !f.words.try_lock(1 + slot as usize) {}
                f.words.lock(0);
            }
        }
        let at = i * 128;
        if write && way == Way::WordsMap {
            map.write(at as usize, &rec);
        } else if write {
            seg.write_all_at(&rec, at).expect("pwrite");
        }
        match way {
            Way::V1 => {
                shm::flock(&f.lock, libc::LOCK_UN);
                shm::ofd(&f.leases, slot, false);
            }
            Way::Words | Way::WordsMap => {
                f.words.unlock(0);
                f.words.unlock(1 + slot as usize);
            }
        }
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

fn pwrites(f: &Files) -> f64 {
    let rec = [7u8; 128];
    let (seg, _map) = segment(f, 0);
    let t = Instant::now();
    for i in 0..N {
        seg.write_all_at(&rec, i * 128).expect("pwrite");
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

fn least(mut run: impl FnMut() -> f64) -> f64 {
    (0..ROUNDS).map(|_| run()).fold(f64::MAX, f64::min)
}

fn table(f: &Files, label: &str) {
    println!("{label} (ns per miss, least of {ROUNDS} rounds of {N}):");
    let v1 = least(|| misses(f, Way::V1, true, 1));
    let words = least(|| misses(f, Way::Words, true, 1));
    let words_map = least(|| misses(f, Way::WordsMap, true, 1));
    let v1_locks = least(|| misses(f, Way::V1, false, 1));
    let words_locks = least(|| misses(f, Way::Words, false, 1));
    let pw = least(|| pwrites(f));
    println!("  v1 (ofd lease + flock + pwrite)     {v1:8.0}");
    println!("  words (robust mutexes + pwrite)     {words:8.0}");
    println!("  words + write through the map       {words_map:8.0}");
    println!("  v1 locks alone                      {v1_locks:8.0}");
    println!("  words locks alone                   {words_locks:8.0}");
    println!("  pwrite alone                        {pw:8.0}");
    println!(
        "  saved per miss: {:.0} ns ({:.2}x the locked miss)",
        v1 - words,
        v1 / words
    );
}

fn main() {
    let f = files();
    table(&f, "one process");
    // Two processes on the same files at once: the child runs the same
    // rounds (contended locks: waits where one holds what the other wants).
    let pid = shm::fork();
    if pid == 0 {
        for way in [Way::V1, Way::Words, Way::WordsMap] {
            for _ in 0..ROUNDS {
                misses(&f, way, true, 2);
            }
        }
        std::process::exit(0);
    }
    println!("two processes (this one measured; the child does the same):");
    for way in [Way::V1, Way::Words, Way::WordsMap] {
        let t = least(|| misses(&f, way, true, 1));
        let name = match way {
            Way::V1 => "v1",
            Way::Words => "words",
            Way::WordsMap => "words + map",
        };
        println!("  {name:34}  {t:8.0}");
    }
    shm::wait(pid);
}

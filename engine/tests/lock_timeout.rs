//! A process stopped while holding the store's writer lock (Ctrl-Z, a
//! debugger, mid-write) no longer blocks every other writer for as long as
//! it stays stopped: a write waits at most `Options::lock_timeout` and fails
//! with `Error::Locked`, storing nothing; reads go on; once the lock is
//! free, writes work again. (A write waited forever before: a blocking
//! `flock` with no deadline.) The holder here is another open file
//! description of the `lock` file, as another process's would be.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use picocache_engine::{Error, Limits, Options, Store};

#[allow(unsafe_code)]
fn flock(f: &std::fs::File, op: libc::c_int) {
    // SAFETY: flock on a descriptor this test owns; no memory is passed.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), op) }, 0);
}

#[test]
fn a_write_waits_for_a_held_writer_lock_at_most_the_lock_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        Options::default()
            .background_compaction(false)
            .lock_timeout(Duration::from_millis(300))
    };
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("f", Limits::default()).unwrap();
    ns.put(b"a", b"1").unwrap();
    let holder = std::fs::File::open(dir.path().join("lock")).unwrap();
    flock(&holder, libc::LOCK_EX);
    let t = Instant::now();
    let r = ns.put(b"b", b"2");
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::Locked(_))), "{r:?}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(ns.get(b"a").unwrap(), Some(b"1".to_vec()), "reads go on");
    assert_eq!(ns.get(b"b").unwrap(), None, "nothing stored");
    flock(&holder, libc::LOCK_UN);
    ns.put(b"b", b"2").unwrap();
    assert_eq!(ns.get(b"b").unwrap(), Some(b"2".to_vec()));
    println!("a write behind a held writer lock failed after {took:?}");
}

#[test]
fn writers_that_contend_for_the_lock_all_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default().background_compaction(false)).unwrap();
    let ns = s.namespace("f", Limits::default()).unwrap();
    std::thread::scope(|sc| {
        for t in 0..4u32 {
            let ns = ns.clone();
            sc.spawn(move || {
                let s2 = Store::open(ns.store().path(), Options::default()).unwrap();
                let ns2 = s2.namespace("f", Limits::default()).unwrap();
                for i in 0..500u32 {
                    let k = format!("{t}/{i}");
                    ns2.put(k.as_bytes(), k.as_bytes()).unwrap();
                }
            });
        }
    });
    for t in 0..4u32 {
        for i in 0..500u32 {
            let k = format!("{t}/{i}");
            assert_eq!(ns.get(k.as_bytes()).unwrap(), Some(k.clone().into_bytes()));
        }
    }
}

/// `Options::lock_timeout(Duration::MAX)` means "wait as long as it
/// takes": a write behind a held writer lock, and `compact()` behind a
/// held compaction lock, wait for the holder and then succeed (the
/// deadline `now + MAX` overflowed and panicked in every write). A TTL too
/// long to count in milliseconds never expires (it was truncated: this
/// one to 384 ms).
#[test]
fn a_lock_timeout_too_long_for_a_deadline_waits_as_long_as_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .background_compaction(false)
        .lock_timeout(Duration::MAX);
    let s = Store::open(dir.path(), opts).unwrap();
    let ns = s.namespace("f", Limits::default()).unwrap();
    ns.put(b"a", b"1").unwrap();

    let holder = std::fs::File::open(dir.path().join("lock")).unwrap();
    flock(&holder, libc::LOCK_EX);
    let (t, took) = std::thread::scope(|sc| {
        let t = Instant::now();
        let w = sc.spawn(|| ns.put(b"b", b"2"));
        std::thread::sleep(Duration::from_millis(300));
        flock(&holder, libc::LOCK_UN);
        (w.join().unwrap(), t.elapsed())
    });
    assert!(matches!(t, Ok(true)), "{t:?}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert_eq!(ns.get(b"b").unwrap(), Some(b"2".to_vec()));
    println!("a write behind a writer lock held 300 ms, lock_timeout MAX: {took:?}");

    let holder = ofd_write_lock(&dir.path().join("lock"));
    let (c, took) = std::thread::scope(|sc| {
        let t = Instant::now();
        let c = sc.spawn(|| s.compact());
        std::thread::sleep(Duration::from_millis(300));
        drop(holder);
        (c.join().unwrap(), t.elapsed())
    });
    assert!(c.is_ok(), "{c:?}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    println!("compact() behind a compaction lock held 300 ms, lock_timeout MAX: {took:?}");

    // 2^64 + 384 ms.
    let ttl = Duration::from_secs(18_446_744_073_709_552);
    ns.put_with_ttl(b"t", b"3", Some(ttl)).unwrap();
    let limited = s
        .namespace(
            "g",
            Limits {
                ttl: Some(ttl),
                ..Limits::default()
            },
        )
        .unwrap();
    limited.put(b"t", b"4").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ns.get(b"t").unwrap(), Some(b"3".to_vec()), "expired");
    assert_eq!(limited.get(b"t").unwrap(), Some(b"4".to_vec()), "expired");
}

/// An OFD write lock on byte 0 of `path` (the compaction lock), held while
/// the returned file is open.
#[allow(unsafe_code)]
fn ofd_write_lock(path: &std::path::Path) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: all-zero bytes are a valid `flock`; fcntl only reads the
    // struct we pass, on a descriptor this test owns.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_len = 1;
    assert_eq!(
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) },
        0
    );
    f
}

/// After a write's wait for a held writer lock timed out (its holder
/// stopped), the handle's next writes do not each wait the whole
/// `lock_timeout` again (adversarial round 25: every miss of a memoizer
/// waited it twice, 6 s, for as long as the holder stayed stopped): within
/// a back-off window (1 s, doubling) they try the lock once and fail at
/// once with `Error::Locked`; reads go on; a lock that is free is taken at
/// once, and ends the back-off.
#[test]
fn writes_after_a_lock_timeout_back_off_instead_of_each_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .background_compaction(false)
        .lock_timeout(Duration::from_millis(300));
    let s = Store::open(dir.path(), opts).unwrap();
    let ns = s.namespace("f", Limits::default()).unwrap();
    ns.put(b"a", b"1").unwrap();
    let holder = std::fs::File::open(dir.path().join("lock")).unwrap();
    flock(&holder, libc::LOCK_EX);
    let t = Instant::now();
    assert!(matches!(ns.put(b"b", b"2"), Err(Error::Locked(_))));
    let first = t.elapsed();
    assert!(first >= Duration::from_millis(300), "{first:?}");
    let t = Instant::now();
    for i in 0..5u32 {
        let r = ns.put(&i.to_le_bytes(), b"x");
        assert!(matches!(r, Err(Error::Locked(_))), "{r:?}");
    }
    let next5 = t.elapsed();
    assert_eq!(ns.get(b"a").unwrap(), Some(b"1".to_vec()), "reads go on");
    flock(&holder, libc::LOCK_UN);
    let t = Instant::now();
    ns.put(b"b", b"2").unwrap();
    let freed = t.elapsed();
    assert_eq!(ns.get(b"b").unwrap(), Some(b"2".to_vec()));
    // Held again: the back-off ended with the lock taken, so a write waits.
    flock(&holder, libc::LOCK_EX);
    let t = Instant::now();
    assert!(matches!(ns.put(b"c", b"3"), Err(Error::Locked(_))));
    let again = t.elapsed();
    flock(&holder, libc::LOCK_UN);
    println!(
        "first write behind a held lock failed after {first:?}; the next 5 took {next5:?}; \
         the write after it was freed {freed:?}; held again, a write waited {again:?}"
    );
    assert!(next5 < Duration::from_millis(300), "{next5:?}");
    assert!(again >= Duration::from_millis(300), "{again:?}");
}

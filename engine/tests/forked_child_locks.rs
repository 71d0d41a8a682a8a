//! A process killed while it holds a lease or the writer lock lets go of
//! it at once, even while a child it forked lives on (adversarial round 25:
//! the child inherited the descriptors of `leases` and `lock`, whose OFD
//! locks and `flock` belong to the open file description, so the lock
//! outlived the killed holder for as long as the child lived). The engine's
//! at-fork child handler points the child's descriptors of locked files at
//! `/dev/null`.
//!
//! Child processes are this test binary run again (`child` below, selected
//! by `FCL_ROLE`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use picocache_engine::{Limits, Options, Store};

extern "C" {
    fn fork() -> i32;
    fn _exit(code: i32) -> !;
    fn kill(pid: i32, sig: i32) -> i32;
}

const SIGKILL: i32 = 9;

/// Runs this test binary again as `role`.
fn child_command(role: &str, dir: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["child", "--exact", "--test-threads=1", "--nocapture"])
        .env("FCL_ROLE", role)
        .env("FCL_DIR", dir);
    c
}

#[test]
fn child() {
    let Ok(role) = std::env::var("FCL_ROLE") else {
        return;
    };
    let dir = std::env::var("FCL_DIR").unwrap();
    let store = Store::open(&dir, Options::default()).unwrap();
    let ns = store.namespace("l", Limits::default()).unwrap();
    // Held for the process's life.
    let mut _lease = None;
    match role.as_str() {
        "lease" => _lease = Some(ns.lease(b"k", Duration::ZERO).unwrap().unwrap()),
        "writer" => {
            let ns = ns.clone();
            std::thread::spawn(move || {
                let big = vec![7u8; 8 << 20];
                for i in 0u64.. {
                    let _ = ns.put(&(i % 4).to_le_bytes(), &big);
                }
            });
        }
        _ => panic!("role {role}"),
    }
    // SAFETY: the forked process uses the store (allocations; glibc keeps
    // malloc usable after a fork) and sleeps, then ends without running
    // the parent's destructors.
    let pid = unsafe { fork() };
    if pid == 0 {
        // A worker that uses the cache (its handles are reopened) and lives on.
        if let Ok(s) = Store::open(&dir, Options::default()) {
            if let Ok(n) = s.namespace("other", Limits::default()) {
                let _ = n.put(b"x", b"y");
            }
        }
        std::thread::sleep(Duration::from_secs(30));
        // SAFETY: ends the forked process without running the parent's
        // atexit handlers or destructors.
        unsafe { _exit(0) };
    }
    println!("FCL child {pid}");
    std::thread::sleep(Duration::from_secs(30));
}

/// Whether `lock` of `dir` is `flock`ed by anyone.
fn writer_lock_held(dir: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir.join("lock")).unwrap();
    extern "C" {
        fn flock(fd: i32, op: i32) -> i32;
    }
    // SAFETY: flock takes a descriptor `f` owns and an integer.
    let taken = unsafe { flock(f.as_raw_fd(), 2 | 4) } == 0; // LOCK_EX | LOCK_NB
    !taken
}

fn killed_holder(role: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let d = dir.to_str().unwrap();
    drop(Store::open(&dir, Options::default()).unwrap());
    let mut holder = child_command(role, d)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut grandchild = 0;
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if let Some(p) = line.split("FCL child ").nth(1) {
            grandchild = p.trim().parse::<i32>().unwrap();
            break;
        }
        line.clear();
    }
    assert!(grandchild > 0, "no child: {line}");
    if role == "writer" {
        let until = Instant::now() + Duration::from_secs(20);
        while !writer_lock_held(&dir) {
            assert!(Instant::now() < until, "never saw the writer lock held");
        }
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    let t0 = Instant::now();
    let store = Store::open(&dir, Options::default()).unwrap();
    let ns = store.namespace("l", Limits::default()).unwrap();
    let took = if role == "lease" {
        let l = ns.lease(b"k", Duration::from_secs(5)).unwrap();
        assert!(l.is_some(), "the killed holder's lease stayed held");
        t0.elapsed()
    } else {
        ns.put(b"after", b"kill").unwrap();
        t0.elapsed()
    };
    let child_alive = std::path::Path::new(&format!("/proc/{grandchild}")).exists();
    println!("{role}: taken {took:?} after the holder was killed (its forked child alive: {child_alive})");
    // SAFETY: kill takes two integers; the grandchild is ours to end.
    unsafe { kill(grandchild, SIGKILL) };
    assert!(child_alive, "the forked child ended early");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_killed_lease_holder_with_a_forked_child_alive_lets_go() {
    killed_holder("lease");
}

#[test]
fn a_killed_writer_with_a_forked_child_alive_lets_go_of_the_writer_lock() {
    killed_holder("writer");
}

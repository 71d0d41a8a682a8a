//! A store on read-only media, or in a directory this process may not write
//! (issue 12, item C): it opens read-only, serves hits, and every write
//! fails with `Error::ReadOnly`, without a crash (its index is mapped
//! read-only, so a stray store to it would be a SIGSEGV) and without losing
//! anything. Needs root for `mount`; otherwise the test says so on stdout.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use picocache_engine::{Error, Limits, Options, Store};

const CHILD_ENV: &str = "PICOCACHE_READ_ONLY_CHILD_DIR";

/// Serializes the two tests that fork: a child forked by one (it runs
/// `mount` or a test binary) briefly inherits the other's store files and
/// writable maps, and the read-only remount then fails with EBUSY.
static FORKS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(cmd: &mut Command) -> bool {
    cmd.status().is_ok_and(|s| s.success())
}

fn is_read_only(e: &Error) -> bool {
    matches!(e, Error::ReadOnly { .. })
}

/// Fills `dir` with a store: namespace "ro", keys 0..200.
fn build(dir: &Path) {
    let store = Store::open(dir, Options::default()).unwrap();
    let ns = store.namespace("ro", Limits::maxsize(Some(1000))).unwrap();
    for k in 0u32..200 {
        ns.put(&k.to_le_bytes(), format!("value {k}").as_bytes())
            .unwrap();
    }
    store.sync().unwrap();
}

/// Opens `dir`, which this process cannot write, and checks everything a
/// read-only store does. Returns the number of hits served.
fn check_read_only(dir: &Path) -> u32 {
    let store = Store::open(dir, Options::default()).unwrap();
    assert!(store.is_read_only());
    // An existing namespace opens, whatever limits are asked for.
    let ns = store.namespace("ro", Limits::maxsize(Some(5))).unwrap();
    assert_eq!(ns.stats().unwrap().limits.maxsize, Some(1000));
    let mut hits = 0;
    for round in 0..3 {
        for k in 0u32..200 {
            let v = ns.get(&k.to_le_bytes()).unwrap();
            assert_eq!(v, Some(format!("value {k}").into_bytes()), "key {k}");
            hits += 1;
            if round == 2 {
                let at = ns
                    .get_located(&k.to_le_bytes(), |_, at| at)
                    .unwrap()
                    .unwrap();
                assert!(ns.hit_located(ns.key_hash(&k.to_le_bytes()), &at).unwrap());
            }
        }
    }
    assert_eq!(ns.get(&999u32.to_le_bytes()).unwrap(), None);
    assert_eq!(ns.keys().unwrap().len(), 200);
    ns.count_rejected().unwrap();
    // Every write: a clear error, nothing changed.
    let e = ns.put(b"new", b"value").unwrap_err();
    assert!(is_read_only(&e), "{e}");
    println!("a put on a read-only store: {e}");
    assert!(is_read_only(&ns.put_batch(&[(b"a", b"b")]).unwrap_err()));
    assert!(is_read_only(&ns.remove(&1u32.to_le_bytes()).unwrap_err()));
    assert!(is_read_only(&ns.clear().unwrap_err()));
    assert!(is_read_only(
        &ns.lease(b"k", Duration::ZERO).map(|_| ()).unwrap_err()
    ));
    assert!(is_read_only(
        &store.namespace("other", Limits::default()).unwrap_err()
    ));
    assert!(is_read_only(&store.compact().unwrap_err()));
    assert!(is_read_only(&store.sync().unwrap_err()));
    assert!(is_read_only(&store.rebuild_index().unwrap_err()));
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(store.stats().unwrap().entries, 200);
    assert_eq!(
        ns.get(&1u32.to_le_bytes()).unwrap(),
        Some(b"value 1".to_vec())
    );
    hits
}

#[test]
fn read_only_filesystem() {
    let _serial = FORKS.lock().unwrap_or_else(|e| e.into_inner());
    let mnt = tempfile::tempdir().unwrap();
    if !run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(mnt.path()))
    {
        println!("SKIPPED: cannot mount a tmpfs (not root?): read-only media NOT tested");
        return;
    }
    let dir = mnt.path().join("store");
    build(&dir);
    let remounted = run(Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(mnt.path()));
    let r = std::panic::catch_unwind(|| {
        assert!(remounted, "remount read-only failed");
        check_read_only(&dir)
    });
    run(Command::new("umount").arg(mnt.path()));
    let hits = r.unwrap();
    println!("read-only tmpfs: {hits} hits served, every write refused");
}

/// The unprivileged reader. Runs only when re-executed by
/// `directory_without_write_permission` with the env var set.
#[test]
fn read_only_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let hits = check_read_only(Path::new(&dir));
    println!("CHILD OK {hits}");
}

#[test]
fn directory_without_write_permission() {
    let _serial = FORKS.lock().unwrap_or_else(|e| e.into_inner());
    // A store readable, not writable, by user `nobody` (65534); the check
    // runs in a child process with that uid (root could write anyway).
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("store");
    build(&dir);
    let exe = std::env::current_exe().unwrap();
    let readable = run(Command::new("chmod").arg("-R").arg("a+rX").arg(base.path()));
    let out = Command::new(&exe)
        .args([
            "--exact",
            "read_only_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &dir)
        .uid(65534)
        .gid(65534)
        .output();
    let out = match out {
        Ok(o) if readable => o,
        _ => {
            println!("SKIPPED: cannot run a child as uid 65534: no-permission case NOT tested");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && stdout.is_empty() {
        // The test binary itself is not reachable by `nobody`.
        println!(
            "SKIPPED: uid 65534 cannot run the test binary ({}): no-permission case NOT tested",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    assert!(
        out.status.success() && stdout.contains("CHILD OK"),
        "child: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "directory without write permission (uid 65534): {}",
        stdout.lines().find(|l| l.contains("CHILD OK")).unwrap()
    );
}

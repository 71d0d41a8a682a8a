//! A SIGBUS handler installed after the engine's guard (Python's
//! `faulthandler.enable()` or `signal.signal(SIGBUS, ...)` after a first
//! store was used) does not shadow the guard for maps made afterwards
//! (adversarial round 25: it did, and an index truncated by another
//! program killed the process, or made it spin on the faulting read). Each
//! new map puts the guard in front again, chaining to the newer handler for
//! the faults outside its maps. The reader runs in a child process, so a
//! SIGBUS shows as the child's death.

use std::process::Command;

use picocache_engine::{Limits, Options, Store};

const CHILD_ENV: &str = "PICOCACHE_SIGBUS_LATER_CHILD";
const KEYS: u32 = 2000;

fn value(k: u32) -> Vec<u8> {
    vec![(k % 251) as u8; 1000]
}

/// What an application's late SIGBUS handler does with a fault: here, end
/// the process with status 7 (faulthandler would print and die).
extern "C" fn foreign(_sig: libc::c_int) {
    // SAFETY: `_exit` is async-signal-safe.
    unsafe { libc::_exit(7) };
}

/// Runs only when re-executed by the test below, with a directory in its
/// environment.
#[test]
fn sigbus_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    let opts = || Options::default().background_compaction(false);
    // A first store: the guard is installed now.
    let first = Store::open(dir.join("first"), opts()).unwrap();
    first
        .namespace("w", Limits::default())
        .unwrap()
        .put(b"k", b"v")
        .unwrap();
    // Then the application installs its own SIGBUS handler.
    // SAFETY: all-zero bytes are a valid sigaction; sigaction reads the
    // struct we own; `foreign` only calls `_exit`.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = foreign as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()), 0);
    }
    let store = Store::open(dir.join("s"), opts()).unwrap();
    let ns = store.namespace("t", Limits::default()).unwrap();
    for k in 0..KEYS {
        ns.put(&k.to_le_bytes(), &value(k)).unwrap();
    }
    let ok = Command::new("truncate")
        .args(["-s", "4096"])
        .arg(dir.join("s").join("index"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut hits = 0;
    for _ in 0..2 {
        for k in 0..KEYS {
            if let Some(v) = ns.get(&k.to_le_bytes()).unwrap() {
                assert_eq!(v, value(k), "key {k}");
                hits += 1;
            }
        }
    }
    println!(
        "CHILD OK: {hits} of {} lookups hit after the index was cut",
        2 * KEYS
    );
    // A SIGBUS that is not the guard's still reaches the application's
    // handler (status 7).
    // SAFETY: `raise` takes an integer.
    unsafe { libc::raise(libc::SIGBUS) };
    println!("CHILD raise returned");
}

#[test]
fn a_sigbus_handler_installed_after_the_guard_does_not_shadow_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigbus_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| {
        l.split_once("CHILD OK")
            .map(|(_, r)| format!("CHILD OK{r}"))
    });
    println!("{line:?}, then {:?}", out.status);
    assert!(
        line == Some(format!(
            "CHILD OK: {0} of {0} lookups hit after the index was cut",
            2 * KEYS
        )),
        "the process died ({:?}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "the application's handler not chained to"
    );
}

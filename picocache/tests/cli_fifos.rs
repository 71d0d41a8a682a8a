//! A FIFO at any of a store's file names never hangs a `picocache` command:
//! every command (stats, verify, ls, compact, clear, prune, repair) ends
//! within a generous bound, without a panic, for a FIFO planted as the
//! index, the lock, the leases file, a segment, a segment's temporary name
//! and the reserve file. (The CLI opens no store file of its own:
//! every open goes through the engine's `Store::open` and `is_store`; this
//! checks it stays so. Adversarial session 25's
//! `fifos_in_a_store_never_hang_the_cli_or_a_call` checks stats, verify
//! and repair on the index and a segment.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a command may take before it counts as hung (a bound, not a
/// speed: each takes milliseconds).
const HANG: Duration = Duration::from_secs(20);

fn small_store(dir: &Path) {
    let opts = picocache_engine::Options::default()
        .segment_size(64 << 10)
        .background_compaction(false);
    let s = picocache_engine::Store::open(dir, opts).unwrap();
    let ns = s
        .namespace("f", picocache_engine::Limits::default())
        .unwrap();
    for i in 0..40u32 {
        ns.put(format!("k{i}").as_bytes(), &[7u8; 3000]).unwrap();
    }
}

/// Runs `picocache args`; its exit code (None: killed by a signal), or
/// `Err` if it ran past [`HANG`] (then killed).
fn run(args: &[&str]) -> Result<Option<i32>, Duration> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_picocache"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Ok(st.code());
        }
        if t.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            return Err(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_fifo_at_any_store_file_name_never_hangs_a_command() {
    let root = tempfile::Builder::new()
        .prefix("cli-fifos-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let names = [
        "index",
        "lock",
        "leases",
        "seg-00000063.log",
        "seg-00000064.tmp",
        "reserve",
    ];
    let commands: [&[&str]; 7] = [
        &["stats"],
        &["verify"],
        &["ls", "f"],
        &["compact"],
        &["clear", "f"],
        &["prune", "--unused-for", "30d"],
        &["repair"],
    ];
    let mut bad = Vec::new();
    let mut longest = Duration::ZERO;
    for name in names {
        let store = root.path().join(name.replace('.', "_"));
        small_store(&store);
        let at = store.join(name);
        let _ = std::fs::remove_file(&at);
        let made = Command::new("mkfifo").arg(&at).status().unwrap();
        assert!(made.success(), "mkfifo {}", at.display());
        let mut codes = Vec::new();
        for cmd in commands {
            let mut args = vec![cmd[0], store.to_str().unwrap()];
            args.extend_from_slice(&cmd[1..]);
            let t = Instant::now();
            let r = run(&args);
            longest = longest.max(t.elapsed());
            match r {
                Ok(Some(code)) if code != 101 => codes.push(format!("{} {code}", cmd[0])),
                other => bad.push(format!("a FIFO as {name}: {}: {other:?}", cmd[0])),
            }
        }
        println!("a FIFO as {name}: exit codes: {}", codes.join(", "));
    }
    println!("longest command: {longest:?}");
    assert!(bad.is_empty(), "hung, panicked or killed: {bad:#?}");
}

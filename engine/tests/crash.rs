//! kill -9 in a loop (sled's pattern): a real writer process is killed with
//! SIGKILL at random moments, in the middle of batches and compactions; the
//! store is then reopened and checked against what the writer acknowledged.
//!
//! Cycles: `PICOCACHE_KILL_CYCLES` (default 200).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use picocache_engine::{Limits, Options, Store};

const KEYS: u64 = 300;
const CHILD_ENV: &str = "PICOCACHE_CRASH_CHILD_DIR";

fn opts() -> Options {
    let mut o = Options::default().segment_size(16 << 10);
    o = o.compaction_interval(Duration::from_millis(5));
    o = o.compaction_threshold(0.3);
    o
}

fn val(key: u64, n: u64) -> Vec<u8> {
    let mut v = format!("k{key}:n{n}:").into_bytes();
    v.resize(20 + (n % 50) as usize, b'x');
    v
}

/// The writer. Runs only when re-executed by `kill9_loop` with the env var set.
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var("PICOCACHE_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open(&dir, opts()).unwrap();
    let ns = store.namespace("crash", Limits::default()).unwrap();
    let mut out = std::io::stdout().lock();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut n = seed * 1_000_000;
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    loop {
        n += 1;
        match rnd() % 100 {
            0..=54 => {
                let k = rnd() % KEYS;
                writeln!(out, "B P {k} {n}").unwrap();
                out.flush().unwrap();
                ns.put(&k.to_le_bytes(), &val(k, n)).unwrap();
                writeln!(out, "A P {k} {n}").unwrap();
            }
            55..=74 => {
                // A batch: all in flight, then all acknowledged.
                let ks: Vec<u64> = (0..1 + rnd() % 30).map(|_| rnd() % KEYS).collect();
                let mut seen = std::collections::HashSet::new();
                let ks: Vec<u64> = ks.into_iter().filter(|k| seen.insert(*k)).collect();
                for (i, k) in ks.iter().enumerate() {
                    writeln!(out, "B P {k} {}", n + i as u64).unwrap();
                }
                out.flush().unwrap();
                let kb: Vec<_> = ks.iter().map(|k| k.to_le_bytes()).collect();
                let vb: Vec<_> = ks
                    .iter()
                    .enumerate()
                    .map(|(i, k)| val(*k, n + i as u64))
                    .collect();
                let items: Vec<(&[u8], &[u8])> =
                    kb.iter().zip(&vb).map(|(k, v)| (&k[..], &v[..])).collect();
                ns.put_batch(&items).unwrap();
                for (i, k) in ks.iter().enumerate() {
                    writeln!(out, "A P {k} {}", n + i as u64).unwrap();
                }
                n += ks.len() as u64;
            }
            75..=86 => {
                let k = rnd() % KEYS;
                writeln!(out, "B R {k} 0").unwrap();
                out.flush().unwrap();
                ns.remove(&k.to_le_bytes()).unwrap();
                writeln!(out, "A R {k} 0").unwrap();
            }
            87..=88 => {
                writeln!(out, "B C 0 0").unwrap();
                out.flush().unwrap();
                store.compact().unwrap();
                writeln!(out, "A C 0 0").unwrap();
            }
            _ => {
                // Reads are checked in the child too.
                let k = rnd() % KEYS;
                if let Some(v) = ns.get(&k.to_le_bytes()).unwrap() {
                    assert!(
                        v.starts_with(format!("k{k}:").as_bytes()),
                        "wrong value for {k}"
                    );
                }
            }
        }
        out.flush().unwrap();
    }
}

/// What a key may hold after a kill: its last acknowledged state, or the
/// state an in-flight operation would give it.
#[derive(Default, Clone, Debug)]
struct Expect {
    acked: Option<u64>,
    inflight: Vec<Option<u64>>,
}

#[test]
fn kill9_loop() {
    let cycles: u64 = std::env::var("PICOCACHE_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut state: HashMap<u64, Option<u64>> = HashMap::new();
    let mut rng = 0x1234_5678_9abc_def1u64;
    let (mut acked_total, mut mid_batch, mut mid_compaction) = (0u64, 0u64, 0u64);
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("PICOCACHE_CRASH_SEED", (cycle + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if l.ends_with("READY") {
                    let _ = ready_tx.send(());
                } else if l.starts_with("B ") || l.starts_with("A ") {
                    lines.push(l);
                }
            }
            lines
        });
        // Kill at a random moment once the child has opened the store (and
        // sometimes while it is still opening or recovering it).
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if rng % 8 != 0 {
            ready_rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("cycle {cycle}: the writer never opened the store"));
        }
        std::thread::sleep(Duration::from_micros(rng % 40_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();

        // Replay the child's log over the known state.
        let mut exp: HashMap<u64, Expect> = state
            .iter()
            .map(|(k, v)| {
                (
                    *k,
                    Expect {
                        acked: *v,
                        inflight: vec![],
                    },
                )
            })
            .collect();
        let mut compacting = false;
        for l in &lines {
            let p: Vec<&str> = l.split(' ').collect();
            if p[1] == "C" {
                compacting = p[0] == "B";
                continue;
            }
            let (k, n): (u64, u64) = (p[2].parse().unwrap(), p[3].parse().unwrap());
            let new = if p[1] == "P" { Some(n) } else { None };
            let e = exp.entry(k).or_default();
            if p[0] == "B" {
                e.inflight.push(new);
            } else {
                e.acked = new;
                e.inflight.retain(|x| *x != new);
                acked_total += 1;
            }
        }
        if exp.values().filter(|e| !e.inflight.is_empty()).count() > 1 {
            mid_batch += 1;
        }
        if compacting {
            mid_compaction += 1;
        }

        // Reopen and check.
        let store = Store::open(dir.path(), opts()).unwrap();
        let rep = store.verify().unwrap();
        assert!(rep.is_ok(), "cycle {cycle}: verify: {:?}", rep.problems);
        let ns = store.namespace("crash", Limits::default()).unwrap();
        state.clear();
        for k in 0..KEYS {
            let got = ns.get(&k.to_le_bytes()).unwrap();
            let e = exp.get(&k).cloned().unwrap_or_default();
            let got_n = got.as_ref().map(|v| {
                let s = String::from_utf8_lossy(v).into_owned();
                let n: u64 = s.split(':').nth(1).unwrap()[1..].parse().unwrap();
                assert_eq!(v, &val(k, n), "cycle {cycle}: key {k}: malformed value");
                n
            });
            assert!(
                got_n == e.acked || e.inflight.contains(&got_n),
                "cycle {cycle}: key {k}: store has {got_n:?}, acknowledged {:?}, in flight {:?}",
                e.acked,
                e.inflight
            );
            state.insert(k, got_n);
        }
    }
    println!(
        "kill -9 cycles survived: {cycles}; acknowledged operations checked: {acked_total}; \
         kills with several operations in flight: {mid_batch}; kills during a compaction: \
         {mid_compaction}"
    );
    assert!(
        mid_compaction > 0 || cycles < 50,
        "no kill ever hit a compaction"
    );
}

const LEASE_CHILD_ENV: &str = "PICOCACHE_LEASE_CHILD_DIR";

/// Holds a lease until killed. Runs only when re-executed by
/// `lease_dies_with_its_holder`.
#[test]
fn lease_child_entry() {
    let Ok(dir) = std::env::var(LEASE_CHILD_ENV) else {
        return;
    };
    let store = Store::open(&dir, opts()).unwrap();
    let ns = store.namespace("lease", Limits::default()).unwrap();
    let lease = ns.lease(b"k", Duration::from_secs(30)).unwrap();
    assert!(lease.is_some(), "the child could not take the lease");
    println!("HELD");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A process killed with SIGKILL while holding a lease does not block the
/// others: the kernel drops its lock.
#[test]
fn lease_dies_with_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let ns = store.namespace("lease", Limits::default()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lease_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LEASE_CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.ends_with("HELD"))),
        "the child never took the lease"
    );
    assert!(
        ns.lease(b"k", Duration::ZERO).unwrap().is_none(),
        "the lease is held by the child"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let lease = ns.lease(b"k", Duration::from_secs(30)).unwrap();
    assert!(lease.is_some(), "the dead child's lease was never released");
}

//! Many processes on one store: each hammers it with puts, gets, removes,
//! clears and compactions on overlapping keys. Every value describes itself
//! (key, writer, counter, checksum), so every read is checked; each process
//! also owns some keys whose final contents must match what it acknowledged.
//!
//! Processes: `PICOCACHE_STRESS_PROCS` (default 4); operations per process:
//! `PICOCACHE_STRESS_OPS` (default 10000).

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use picocache_engine::{Limits, Options, Store};

const CHILD_ENV: &str = "PICOCACHE_STRESS_CHILD_DIR";
const SHARED_KEYS: u64 = 200;
const OWN_KEYS: u64 = 50;

fn opts() -> Options {
    let mut o = Options::default().segment_size(64 << 10);
    o = o.compaction_interval(Duration::from_millis(20));
    o
}

fn encode(key: u64, writer: u64, n: u64) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(&writer.to_le_bytes());
    v.extend_from_slice(&n.to_le_bytes());
    v.resize(24 + (n % 64) as usize, (key ^ n) as u8);
    let sum = xsum(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

fn xsum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x1000_0000_01b3)
    })
}

/// Checks a value read for `key`; returns (writer, n).
fn check(key: u64, v: &[u8]) -> (u64, u64) {
    assert!(v.len() >= 32, "short value for key {key}");
    let (body, sum) = v.split_at(v.len() - 8);
    assert_eq!(
        u64::from_le_bytes(sum.try_into().unwrap()),
        xsum(body),
        "checksum of key {key}"
    );
    let k = u64::from_le_bytes(body[0..8].try_into().unwrap());
    assert_eq!(k, key, "value of key {k} returned for key {key}");
    let w = u64::from_le_bytes(body[8..16].try_into().unwrap());
    let n = u64::from_le_bytes(body[16..24].try_into().unwrap());
    assert_eq!(v, encode(key, w, n), "malformed value");
    (w, n)
}

#[test]
fn stress_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let me: u64 = std::env::var("PICOCACHE_STRESS_ID")
        .unwrap()
        .parse()
        .unwrap();
    let ops: u64 = std::env::var("PICOCACHE_STRESS_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let store = Store::open(&dir, opts()).unwrap();
    let shared = store
        .namespace("shared", Limits::maxsize(Some(150)))
        .unwrap();
    let scratch = store.namespace("scratch", Limits::default()).unwrap();
    let own = store
        .namespace(&format!("own{me}"), Limits::default())
        .unwrap();
    let mut mine: HashMap<u64, Option<u64>> = HashMap::new();
    let mut x = (me + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut reads, mut hits) = (0u64, 0u64);
    for n in 0..ops {
        let k = rnd() % SHARED_KEYS;
        match rnd() % 100 {
            0..=29 => {
                shared.put(&k.to_le_bytes(), &encode(k, me, n)).unwrap();
            }
            30..=69 => {
                reads += 1;
                if let Some(v) = shared.get(&k.to_le_bytes()).unwrap() {
                    check(k, &v);
                    hits += 1;
                }
            }
            70..=74 => {
                shared.remove(&k.to_le_bytes()).unwrap();
            }
            75..=84 => {
                let ok = rnd() % OWN_KEYS;
                if rnd() % 5 == 0 {
                    own.remove(&ok.to_le_bytes()).unwrap();
                    mine.insert(ok, None);
                } else {
                    own.put(&ok.to_le_bytes(), &encode(ok, me, n)).unwrap();
                    mine.insert(ok, Some(n));
                }
            }
            85..=94 => {
                if rnd() % 10 == 0 {
                    scratch.clear().unwrap();
                } else {
                    scratch.put(&k.to_le_bytes(), &encode(k, me, n)).unwrap();
                    if let Some(v) = scratch.get(&k.to_le_bytes()).unwrap() {
                        check(k, &v);
                    }
                }
            }
            95..=97 => {
                let batch: Vec<_> = (0..20)
                    .map(|i| ((k + i) % SHARED_KEYS, encode((k + i) % SHARED_KEYS, me, n)))
                    .collect();
                let keys: Vec<_> = batch.iter().map(|(k, _)| k.to_le_bytes()).collect();
                let items: Vec<(&[u8], &[u8])> = keys
                    .iter()
                    .zip(&batch)
                    .map(|(k, (_, v))| (&k[..], &v[..]))
                    .collect();
                shared.put_batch(&items).unwrap();
            }
            _ => store.compact().unwrap(),
        }
    }
    // Report what this process acknowledged for its own keys.
    let report: Vec<String> = mine
        .iter()
        .map(|(k, v)| format!("{k} {}", v.map_or("-".to_string(), |n| n.to_string())))
        .collect();
    std::fs::write(format!("{dir}/report-{me}"), report.join("\n")).unwrap();
    std::fs::write(format!("{dir}/counts-{me}"), format!("{reads} {hits}")).unwrap();
}

#[test]
fn many_processes_hammer_one_store() {
    let procs: u64 = std::env::var("PICOCACHE_STRESS_PROCS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let ops: u64 = std::env::var("PICOCACHE_STRESS_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..procs)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "stress_child_entry",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, dir.path())
                .env("PICOCACHE_STRESS_ID", i.to_string())
                .env("PICOCACHE_STRESS_OPS", ops.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    // Meanwhile this process reads and checks too.
    let store = Store::open(dir.path(), opts()).unwrap();
    let shared = store
        .namespace("shared", Limits::maxsize(Some(150)))
        .unwrap();
    let mut parent_reads = 0;
    let mut children = children;
    loop {
        for k in 0..SHARED_KEYS {
            if let Some(v) = shared.get(&k.to_le_bytes()).unwrap() {
                check(k, &v);
            }
            parent_reads += 1;
        }
        if children.iter_mut().all(|c| c.try_wait().unwrap().is_some()) {
            break;
        }
    }
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a child process failed");
    }
    let rep = store.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    // Compaction keeps up: a few hundred live entries fit in a few segments
    // (concurrent compactors once grew this store to 4096 segments).
    let st = store.stats().unwrap();
    assert!(
        st.segments < 100,
        "{} segments for {} entries",
        st.segments,
        st.entries
    );
    assert!(shared.stats().unwrap().entries <= 150);
    for i in 0..procs {
        let own = store
            .namespace(&format!("own{i}"), Limits::default())
            .unwrap();
        let report = std::fs::read_to_string(dir.path().join(format!("report-{i}"))).unwrap();
        for line in report.lines() {
            let (k, v) = line.split_once(' ').unwrap();
            let k: u64 = k.parse().unwrap();
            let got = own.get(&k.to_le_bytes()).unwrap();
            match v {
                "-" => assert_eq!(got, None, "process {i} key {k} should be removed"),
                n => {
                    let got = got.unwrap_or_else(|| panic!("process {i} key {k} lost"));
                    assert_eq!(
                        check(k, &got),
                        (i, n.parse().unwrap()),
                        "process {i} key {k}"
                    );
                }
            }
        }
    }
    let (mut reads, mut hits) = (0u64, 0u64);
    for i in 0..procs {
        let c = std::fs::read_to_string(dir.path().join(format!("counts-{i}"))).unwrap();
        let (r, h) = c.split_once(' ').unwrap();
        reads += r.parse::<u64>().unwrap();
        hits += h.parse::<u64>().unwrap();
    }
    println!(
        "stress: {procs} processes x {ops} operations (puts, batches, gets, removes, clears, \
         compactions) = {} operations, {reads} checked reads by the writers ({hits} hits), \
         {parent_reads} checked reads by the parent, {} compactions; no wrong value, no error",
        procs * ops,
        store.stats().unwrap().compactions
    );
}

//! The committed version-1 store (issue 17, FORMAT.md "Upgrade from version
//! 1", "The fixture"): `tests/fixtures/v1/store/` holds the `index` and log
//! segments of a store written by a version-1 build, and
//! `tests/fixtures/v1/manifest.txt` what that build answered for every key
//! it ever wrote there. The files are never regenerated once version 2
//! exists: they are what a user's version-1 store looks like, and the
//! upgrade must keep every entry of the manifest.
//!
//! What the store holds (64 KiB segments, so there are many):
//! - `plain` (no limits): 300 keys of 0-300 bytes, a third of them
//!   overwritten three times, 20 removed; an empty key, an empty value, a
//!   100 KiB value;
//! - `lru` (`maxsize` 80): 150 keys, some read again in between, so the
//!   evictions follow recency;
//! - `ttl-long` (a TTL of ten years) and `ttl-short` (one second, expired
//!   when the manifest was taken);
//! - `gone` (removed with `remove_namespace`) and `reused`, made after it
//!   (its row freed by the removal);
//! - `cleared`: 40 keys, a `CLEAR`, then 5 keys;
//! - one damaged record: a byte of the value of `plain`'s key `p299` (its
//!   only record) flipped after the manifest's store was written;
//! - an interrupted compaction: a child compacting the store was killed with
//!   SIGKILL until the index's journal held an unfinished compaction.
//!
//! `the_v1_fixture_opens_with_every_entry` opens a copy and checks every
//! line of the manifest. To write the fixture again (version 1 only):
//! `PICOCACHE_WRITE_V1_FIXTURE=1 cargo test -p picocache-engine --test
//! v1_fixture -- --ignored --exact write_the_v1_fixture`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use picocache_engine::format::hdr;
use picocache_engine::{Limits, Options, Store};

const CHILD_ENV: &str = "PICOCACHE_V1_FIXTURE_COMPACT";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn opts() -> Options {
    Options::default()
        .segment_size(64 << 10)
        .background_compaction(false)
}

/// Copies the store files (`index`, `seg-*.log`) of `from` into `to`.
fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name == "index" || name.starts_with("seg-") {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// `len:xxh3` of a value, or `-` for none.
fn digest(v: Option<&[u8]>) -> String {
    match v {
        Some(v) => format!("{}:{:016x}", v.len(), xxhash_rust::xxh3::xxh3_64(v)),
        None => "-".into(),
    }
}

fn value(tag: &str, i: u64, version: u64) -> Vec<u8> {
    let mut v = format!("{tag}/{i}/v{version}/").into_bytes();
    let len = (i * 37 + version * 11) % 300;
    v.resize(v.len().max(len as usize), b'a' + (i % 26) as u8);
    v
}

fn index_word(dir: &Path, off: usize) -> u64 {
    let b = std::fs::read(dir.join("index")).unwrap();
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Every (namespace, key) the writer wrote, for the manifest.
type Universe = BTreeMap<String, Vec<Vec<u8>>>;

fn write_contents(dir: &Path) -> Universe {
    let s = Store::open(dir, opts()).unwrap();
    let mut u = Universe::new();
    let mut note = |ns: &str, k: &[u8]| {
        let keys = u.entry(ns.to_string()).or_default();
        if !keys.iter().any(|x| x == k) {
            keys.push(k.to_vec());
        }
    };
    let plain = s.namespace("plain", Limits::default()).unwrap();
    for version in 0..4 {
        for i in 0..300u64 {
            if version > 0 && i % 3 != 0 {
                continue;
            }
            let k = format!("p{i}");
            plain
                .put(k.as_bytes(), &value("plain", i, version))
                .unwrap();
            note("plain", k.as_bytes());
        }
    }
    for i in 100..120u64 {
        plain.remove(format!("p{i}").as_bytes()).unwrap();
    }
    plain.put(b"", b"the empty key").unwrap();
    plain.put(b"empty value", b"").unwrap();
    plain.put(b"large", &vec![7u8; 100 << 10]).unwrap();
    for k in [&b""[..], b"empty value", b"large", b"never written"] {
        note("plain", k);
    }
    let lru = s.namespace("lru", Limits::maxsize(Some(80))).unwrap();
    for i in 0..150u64 {
        let k = format!("l{i}");
        lru.put(k.as_bytes(), &value("lru", i, 0)).unwrap();
        note("lru", k.as_bytes());
        if i % 10 == 9 {
            for j in 0..5u64 {
                let _ = lru.get(format!("l{j}").as_bytes()).unwrap();
            }
        }
    }
    let ttl = |secs: u64| Limits {
        ttl: Some(Duration::from_secs(secs)),
        ..Limits::default()
    };
    let long = s.namespace("ttl-long", ttl(10 * 365 * 86_400)).unwrap();
    let short = s.namespace("ttl-short", ttl(1)).unwrap();
    for i in 0..50u64 {
        let k = format!("t{i}");
        long.put(k.as_bytes(), &value("ttl-long", i, 0)).unwrap();
        note("ttl-long", k.as_bytes());
        if i < 20 {
            short.put(k.as_bytes(), &value("ttl-short", i, 0)).unwrap();
            note("ttl-short", k.as_bytes());
        }
    }
    let gone = s.namespace("gone", Limits::default()).unwrap();
    for i in 0..30u64 {
        let k = format!("g{i}");
        gone.put(k.as_bytes(), &value("gone", i, 0)).unwrap();
        note("gone", k.as_bytes());
    }
    drop(gone);
    s.remove_namespace("gone").unwrap();
    let reused = s.namespace("reused", Limits::default()).unwrap();
    for i in 0..30u64 {
        let k = format!("g{i}");
        reused.put(k.as_bytes(), &value("reused", i, 0)).unwrap();
        note("reused", k.as_bytes());
    }
    let cleared = s.namespace("cleared", Limits::default()).unwrap();
    for i in 0..40u64 {
        let k = format!("c{i}");
        cleared.put(k.as_bytes(), &value("cleared", i, 0)).unwrap();
        note("cleared", k.as_bytes());
    }
    cleared.clear().unwrap();
    for i in 0..5u64 {
        cleared
            .put(format!("c{i}").as_bytes(), &value("cleared", i, 1))
            .unwrap();
    }
    s.sync().unwrap();
    u
}

/// Flips a byte of the value of `p299`'s only record.
fn damage_one_record(dir: &Path) {
    let needle = value("plain", 299, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("seg-")
        {
            continue;
        }
        let mut b = std::fs::read(&path).unwrap();
        if let Some(at) = b.windows(needle.len()).position(|w| w == needle) {
            b[at + needle.len() - 1] ^= 0x40;
            std::fs::write(&path, &b).unwrap();
            return;
        }
    }
    panic!("p299's record not found");
}

/// The manifest: what a version-1 build answers for every key of `u` in a
/// copy of the store in `dir`.
fn manifest(dir: &Path, u: &Universe) -> String {
    let tmp = tempfile::tempdir().unwrap();
    copy_store(dir, tmp.path());
    let s = Store::open(tmp.path(), opts()).unwrap();
    let mut out = String::from("# namespace\tkey (hex)\tlen:xxh3 of the value, or - for none\n");
    for (name, keys) in u {
        let Some(ns) = s.existing_namespace(name).unwrap() else {
            writeln!(out, "{name}\t*\t-").unwrap();
            continue;
        };
        for k in keys {
            let got = ns.get(k).unwrap();
            writeln!(out, "{name}\t{}\t{}", hex(k), digest(got.as_deref())).unwrap();
        }
    }
    out
}

/// The compacting child: compacts the store in `$CHILD_ENV` until killed.
#[test]
fn v1_fixture_compacting_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let s = Store::open(&dir, opts()).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    loop {
        s.compact().unwrap();
    }
}

/// Leaves an unfinished compaction in `dir`'s journal: a child compacts a
/// copy and is killed after a growing delay, until one kill interrupts it.
fn interrupt_a_compaction(dir: &Path) {
    let exe = std::env::current_exe().unwrap();
    for attempt in 0..400u64 {
        let work = tempfile::tempdir().unwrap();
        copy_store(dir, work.path());
        let mut child = Command::new(&exe)
            .args(["--exact", "v1_fixture_compacting_child", "--nocapture"])
            .args(["--test-threads=1", "--include-ignored"])
            .env(CHILD_ENV, work.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.any(|l| l.is_ok_and(|l| l.ends_with("READY"))));
        std::thread::sleep(Duration::from_micros(200 + attempt * 150));
        child.kill().unwrap();
        child.wait().unwrap();
        if index_word(work.path(), hdr::CMP_VICTIM) != 0 {
            for e in std::fs::read_dir(dir).unwrap() {
                let name = e.unwrap().file_name().into_string().unwrap();
                if name == "index" || name.starts_with("seg-") {
                    std::fs::remove_file(dir.join(name)).unwrap();
                }
            }
            copy_store(work.path(), dir);
            println!("compaction interrupted after {attempt} attempts");
            return;
        }
    }
    panic!("no kill interrupted a compaction");
}

#[test]
#[ignore = "writes the committed fixture; version 1 only (see the module docs)"]
fn write_the_v1_fixture() {
    if std::env::var("PICOCACHE_WRITE_V1_FIXTURE").is_err() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let u = write_contents(work.path());
    std::thread::sleep(Duration::from_millis(1500)); // ttl-short expires
    interrupt_a_compaction(work.path());
    damage_one_record(work.path());
    let m = manifest(work.path(), &u);
    let out = fixture();
    let _ = std::fs::remove_dir_all(&out);
    copy_store(work.path(), &out.join("store"));
    std::fs::write(out.join("manifest.txt"), m).unwrap();
}

#[test]
fn the_v1_fixture_opens_with_every_entry() {
    let fx = fixture();
    let want = std::fs::read_to_string(fx.join("manifest.txt")).unwrap();
    assert_ne!(
        index_word(&fx.join("store"), hdr::CMP_VICTIM),
        0,
        "the fixture's index holds an unfinished compaction"
    );
    // As opened on this machine, and after a reboot (another boot id: the
    // committed index was written on another machine's boot).
    for o in [opts(), opts().boot_id(0x5eed_0b00_7000_0001)] {
        check_against(&want, o);
    }
}

fn check_against(want: &str, o: Options) {
    let tmp = tempfile::tempdir().unwrap();
    copy_store(&fixture().join("store"), tmp.path());
    let s = Store::open(tmp.path(), o).unwrap();
    let (mut present, mut absent) = (0, 0);
    for line in want.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        let [name, key, digest_want] = f[..] else {
            panic!("manifest line {line:?}")
        };
        let ns = s.existing_namespace(name).unwrap();
        if key == "*" {
            assert!(ns.is_none(), "{name} was removed");
            continue;
        }
        let ns = ns.unwrap_or_else(|| panic!("namespace {name} is missing"));
        let k: Vec<u8> = (0..key.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&key[i..i + 2], 16).unwrap())
            .collect();
        let got = ns.get(&k).unwrap();
        assert_eq!(digest(got.as_deref()), digest_want, "{name} {key}");
        match got {
            Some(_) => present += 1,
            None => absent += 1,
        }
    }
    println!("v1 fixture: {present} entries present, {absent} absent as the manifest says");
    assert!(present > 300 && absent > 100, "{present} {absent}");
    let rep = s.verify().unwrap();
    println!("verify: {} records, {:?}", rep.records, rep.problems);
}

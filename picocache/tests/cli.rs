//! The `picocache` command, run as a real process against real stores.
#![cfg(feature = "cli")]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use picocache::{Backend, LocalBackend, Memo};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_picocache"))
        .args(args)
        .output()
        .expect("run picocache")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("valid JSON")
}

/// A store with two memoized functions: `cli::square` (3 entries, 1 hit)
/// and `cli::big` (one large entry).
fn populated(dir: &Path) {
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir).unwrap());
    let square = Memo::builder("cli::square").backend(b.clone()).build();
    for x in [1u32, 2, 3, 1] {
        square.call(x, |x| x * x);
    }
    let big = Memo::builder("cli::big").backend(b).build();
    big.call("payload", |_| "Z".repeat(5000));
}

fn p(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

#[test]
fn missing_store_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    for cmd in ["stats", "verify", "compact", "clear"] {
        let o = run(&[cmd, p(&missing)]);
        assert_eq!(o.status.code(), Some(2), "{cmd}");
        assert!(
            stderr(&o).contains("no PicoCache store at"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    assert!(!missing.exists(), "a store was created");
    // An empty directory is not a store either, and stays empty.
    let o = run(&["stats", p(dir.path())]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let o = run(&["ls", p(&missing), "ns"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn stats_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let o = run(&["stats", p(dir.path())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("NAMESPACE"), "{text}");
    assert!(text.contains("dead space"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("cli::square"))
        .expect("a row for cli::square");
    let cols: Vec<&str> = line.split_whitespace().collect();
    // name, entries, bytes (2 words), hits, misses, evictions, rejected,
    // maxsize, ttl
    assert_eq!(cols[1], "3", "{line}");
    assert_eq!(&cols[4..7], ["1", "3", "0"], "{line}");

    let v = json(&run(&["--json", "stats", p(dir.path())]));
    assert_eq!(v["entries"], 4);
    let ns = v["namespaces"].as_array().unwrap();
    let sq = ns.iter().find(|n| n["name"] == "cli::square").unwrap();
    assert_eq!(
        (&sq["entries"], &sq["hits"], &sq["misses"], &sq["maxsize"]),
        (&3.into(), &1.into(), &3.into(), &128.into())
    );
    let big = ns.iter().find(|n| n["name"] == "cli::big").unwrap();
    assert!(big["bytes"].as_u64().unwrap() > 5000);
    assert!(v["log_bytes"].as_u64().unwrap() >= v["dead_bytes"].as_u64().unwrap());
}

#[test]
fn ls_shows_keys_and_value_sizes() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let v = json(&run(&["ls", p(dir.path()), "cli::big", "--json"]));
    assert_eq!(v["total"], 1);
    let key = &v["keys"][0];
    let expected = picocache::memo::encode("payload").unwrap();
    assert_eq!(
        key["key_hex"],
        expected
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    // The bincode bytes, then the 8-byte shape digest of a str (its kind).
    assert_eq!(
        key["key"],
        "\\x07payload\\x0f\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
    );
    // The stored bytes: the value and its seal.
    let value_len = picocache::memo::encode_value(&"Z".repeat(5000))
        .unwrap()
        .len();
    assert_eq!(key["value_bytes"], value_len + picocache::seal::OVERHEAD);

    let o = run(&["ls", p(dir.path()), "cli::square"]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains("KEY") && text.contains("(3 keys)"), "{text}");
    let o = run(&["ls", p(dir.path()), "cli::square", "--hex", "--limit", "1"]);
    let text = stdout(&o);
    let row = text.lines().nth(1).unwrap();
    // A key of a u32 argument: its bincode byte, then its shape (kind 9).
    assert!(
        ["01090", "02090", "03090"]
            .iter()
            .any(|k| row.starts_with(k)),
        "{text}"
    );
    assert!(text.contains("(1 of 3 keys shown)"), "{text}");

    let o = run(&["ls", p(dir.path()), "no::such"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no namespace \"no::such\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn clear_one_namespace_or_all() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let v = json(&run(&["clear", p(dir.path()), "cli::square", "--json"]));
    assert_eq!(v["cleared"][0]["entries_removed"], 3);
    let s = json(&run(&["stats", "--json", p(dir.path())]));
    let count = |name: &str| {
        s["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()["entries"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((count("cli::square"), count("cli::big")), (0, 1));
    // The memoizer sees it too.
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let big = Memo::builder("cli::big").backend(b.clone()).build();
    assert_eq!(big.cache_info().currsize, 1);
    drop((big, b));

    let o = run(&["clear", p(dir.path())]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("cleared cli::big: 1 entries removed"));
    let s = json(&run(&["stats", "--json", p(dir.path())]));
    assert_eq!(s["entries"], 0);

    let o = run(&["clear", p(dir.path()), "no::such"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn verify_sound_then_damaged() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let o = run(&["verify", p(dir.path())]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("ok: "), "{}", stdout(&o));
    let v = json(&run(&["verify", "--json", p(dir.path())]));
    assert_eq!(v["ok"], true);
    assert!(v["records"].as_u64().unwrap() >= 4);

    // Flip a byte inside the big value in the log.
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w.iter().all(|&b| b == b'Z'))
        .expect("the value is in the log");
    bytes[at + 10] = b'Y';
    std::fs::write(&seg, &bytes).unwrap();

    let o = run(&["verify", p(dir.path())]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("problem"), "{}", stdout(&o));
    let o = run(&["verify", "--json", p(dir.path())]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(!v["problems"].as_array().unwrap().is_empty());
}

#[test]
fn repair_mends_a_damaged_store() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    // Flip a byte inside the big value in the log, and add a stray file.
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w.iter().all(|&b| b == b'Z'))
        .expect("the value is in the log");
    bytes[at + 10] = b'Y';
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::write(dir.path().join("seg-000000ff.log"), b"junk").unwrap();
    assert_eq!(run(&["verify", p(dir.path())]).status.code(), Some(1));

    let o = run(&["repair", p(dir.path())]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("3 problem(s) found"), "{out}"); // entry, record, stray file
    assert!(out.contains("moved aside: "), "{out}");
    // The damaged record was the last one of the active segment: after the
    // rebuild it lies past the append offset, a torn tail the next append
    // overwrites, so no segment needs rewriting.
    assert!(out.contains("index rebuilt from the log"), "{out}");
    assert!(out.contains("is sound"), "{out}");
    assert!(dir.path().join("damaged/seg-000000ff.log").exists());
    let o = run(&["verify", p(dir.path())]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v = json(&run(&["repair", "--json", p(dir.path())]));
    assert_eq!(v["ok"], true);
    assert_eq!(v["problems_before"].as_array().unwrap().len(), 0);
    // The undamaged entries are still there.
    let v = json(&run(&["stats", "--json", p(dir.path())]));
    let square = v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"].as_str().unwrap().starts_with("cli::square"))
        .unwrap();
    assert_eq!(square["entries"], 3);
    // No store: an error, nothing created.
    let missing = dir.path().join("nothing-here");
    assert_eq!(run(&["repair", p(&missing)]).status.code(), Some(2));
    assert!(!missing.exists());
}

#[test]
fn compact_keeps_live_entries() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
        let m = Memo::builder("cli::churn")
            .maxsize(Some(10))
            .backend(b)
            .build();
        for i in 0..500u32 {
            m.call(i, |i| vec![i; 50]);
        }
    }
    let before = json(&run(&["stats", "--json", p(dir.path())]));
    assert!(before["dead_bytes"].as_u64().unwrap() > 0);
    let v = json(&run(&["compact", "--json", p(dir.path())]));
    assert!(
        v["dead_bytes_after"].as_u64().unwrap() < v["dead_bytes_before"].as_u64().unwrap(),
        "{v}"
    );
    assert_eq!(v["entries"], 10);
    let o = run(&["compact", p(dir.path())]);
    assert!(stdout(&o).starts_with("compacted "), "{}", stdout(&o));
    assert!(
        !stderr(&o).contains('\r') && !stderr(&o).contains("compacting"),
        "no progress output when stderr is not a terminal: {}",
        stderr(&o)
    );
    let o = run(&["verify", p(dir.path())]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let m = Memo::builder("cli::churn")
        .maxsize(Some(10))
        .backend(b)
        .build();
    assert_eq!(m.call(499u32, |_| Vec::<u32>::new()), vec![499u32; 50]);
}

#[test]
fn usage_errors() {
    let o = run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["--help"]);
    assert!(o.status.success());
    for cmd in ["stats", "verify", "compact", "clear", "ls", "prune"] {
        assert!(stdout(&o).contains(cmd), "{cmd} in help");
    }
}

/// A store with `cli::old` last used 40 days ago (written through the
/// engine's test clock) and `cli::fresh` used now.
fn aged(dir: &Path) -> u64 {
    use picocache_engine::{Limits, Options, Store};
    use std::sync::atomic::AtomicU64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let long_ago = now - 40 * 86_400;
    let mut o = Options::default().background_compaction(false);
    o = o.last_use_clock(Arc::new(AtomicU64::new(long_ago)));
    {
        let s = Store::open(dir, o).unwrap();
        let old = s.namespace("cli::old", Limits::default()).unwrap();
        old.put(b"k1", b"old value").unwrap();
        old.put(b"k2", b"old value").unwrap();
    }
    let s = Store::open(dir, Options::default().background_compaction(false)).unwrap();
    s.namespace("cli::fresh", Limits::default())
        .unwrap()
        .put(b"k", b"fresh value")
        .unwrap();
    long_ago
}

#[test]
fn stats_show_last_use_and_prune_removes_unused_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let long_ago = aged(dir.path());

    let text = stdout(&run(&["stats", p(dir.path())]));
    assert!(text.contains("LAST USED"), "{text}");
    let row = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .to_string()
    };
    assert!(row(&text, "cli::old").ends_with(" 40d"), "{text}");
    let fresh = row(&text, "cli::fresh");
    assert!(fresh.ends_with('s') || fresh.ends_with("1m"), "{text}");
    let v = json(&run(&["stats", "--json", p(dir.path())]));
    let last_used = |v: &serde_json::Value, name: &str| {
        v["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["last_used"].as_u64().unwrap())
    };
    assert_eq!(last_used(&v, "cli::old"), Some(long_ago));
    assert!(last_used(&v, "cli::fresh").unwrap() > long_ago + 39 * 86_400);
    // Looking is not using.
    let again = json(&run(&["stats", "--json", p(dir.path())]));
    assert_eq!(last_used(&again, "cli::old"), Some(long_ago));

    // A dry run lists, and removes nothing.
    let o = run(&["prune", p(dir.path()), "--unused-for", "30d", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("would remove cli::old: 2 entries"), "{text}");
    assert!(!text.contains("cli::fresh"), "{text}");
    let v = json(&run(&["stats", "--json", p(dir.path())]));
    assert!(last_used(&v, "cli::old").is_some());

    // Nothing is unused for 41 days.
    let v = json(&run(&[
        "prune",
        "--json",
        p(dir.path()),
        "--unused-for",
        "41d",
    ]));
    assert_eq!(v["removed"].as_array().unwrap().len(), 0);

    let v = json(&run(&[
        "prune",
        "--json",
        p(dir.path()),
        "--unused-for",
        "720h",
    ]));
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["unused_for_secs"], 30 * 86_400);
    let removed = v["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{v}");
    assert_eq!(
        (
            &removed[0]["name"],
            &removed[0]["entries"],
            &removed[0]["last_used"]
        ),
        (&"cli::old".into(), &2.into(), &long_ago.into())
    );
    let v = json(&run(&["stats", "--json", p(dir.path())]));
    assert_eq!(last_used(&v, "cli::old"), None, "gone from stats");
    assert_eq!(v["entries"], 1);
    let o = run(&["ls", p(dir.path()), "cli::old"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["ls", p(dir.path()), "cli::fresh"]);
    assert!(stdout(&o).contains("(1 keys)"), "{}", stdout(&o));

    // Text output; compaction then reclaims the space.
    let o = run(&["prune", p(dir.path()), "--unused-for", "90m"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("no namespace"), "{}", stdout(&o));
    let v = json(&run(&["compact", "--json", p(dir.path())]));
    assert_eq!(v["dead_bytes_after"], 0, "{v}");
    assert_eq!(v["entries"], 1);
    let o = run(&["verify", p(dir.path())]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn prune_text_output_and_bad_durations() {
    let dir = tempfile::tempdir().unwrap();
    aged(dir.path());
    let o = run(&["prune", p(dir.path()), "--unused-for", "3600s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("removed cli::old: 2 entries") && text.contains("last used 40d ago"),
        "{text}"
    );
    assert!(
        text.contains("1 namespace(s) unused for 1h removed"),
        "{text}"
    );
    for bad in ["30", "30x", "d", "-1d", ""] {
        let o = run(&["prune", p(dir.path()), "--unused-for", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
    }
    let o = run(&["prune", p(dir.path())]);
    assert_eq!(o.status.code(), Some(2), "--unused-for is required");
    let missing = dir.path().join("nothing-here");
    let o = run(&["prune", p(&missing), "--unused-for", "1d"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!missing.exists());
}

#[test]
fn stats_show_rejected_entries() {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let m = Memo::builder("cli::sealed")
        .secret("s")
        .backend(b.clone())
        .build();
    assert_eq!(m.call(2u32, |x| x + 1), 3);
    // Planted without a seal, under the key the memoizer reads.
    let raw = b
        .namespace("cli::sealed", picocache::Limits::default())
        .unwrap();
    raw.put(
        &picocache::memo::encode(&2u32).unwrap(),
        &picocache::memo::encode(&99u32).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(m.call(2u32, |x| x + 1), 3);
    let v = json(&run(&["--json", "stats", p(dir.path())]));
    let ns = v["namespaces"].as_array().unwrap();
    let n = ns.iter().find(|n| n["name"] == "cli::sealed").unwrap();
    assert_eq!(n["rejected"], 1, "{n}");
    let o = run(&["stats", p(dir.path())]);
    assert!(stdout(&o).contains("REJECTED"), "{}", stdout(&o));
}

/// `picocache ls DIR NS | head -1`: the closed pipe ends the command
/// quietly (it panicked with "failed printing to stdout: Broken pipe").
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let m = Memo::builder("cli::many").maxsize(None).backend(b).build();
    for i in 0..20_000u32 {
        m.call(i, |x| x);
    }
    for json in [false, true] {
        let mut args = vec!["ls", p(dir.path()), "cli::many"];
        if json {
            args.insert(0, "--json");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_picocache"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reader is dropped here: the pipe is closed.
        let out = child.wait_with_output().unwrap();
        assert!(!first.is_empty());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}

/// `picocache ls` shows a Python key as the call it encodes (it showed
/// `\x01A\x02\x00...`).
#[test]
fn ls_shows_python_calls() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open(dir.path()).unwrap();
    let ns = b.namespace("py.f", picocache::Limits::default()).unwrap();
    // f(7, "a", b=None), as the Python package encodes it.
    let mut k = b"\x01A".to_vec();
    k.extend(2u32.to_le_bytes());
    k.push(b'i');
    k.extend(7i64.to_le_bytes());
    k.push(b's');
    k.extend(1u32.to_le_bytes());
    k.push(b'a');
    k.push(b'K');
    k.extend(1u32.to_le_bytes());
    k.extend(1u32.to_le_bytes());
    k.push(b'b');
    k.push(b'N');
    ns.put(&k, b"v", None).unwrap();
    let o = run(&["ls", p(dir.path()), "py.f"]);
    assert!(stdout(&o).contains("(7, \"a\", b=None)"), "{}", stdout(&o));
    let v = json(&run(&["--json", "ls", p(dir.path()), "py.f"]));
    assert_eq!(v["keys"][0]["call"], "(7, \"a\", b=None)");
}

/// Every file under `dir` (recursively) with its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                out.push((path.clone(), b"<dir>".to_vec()));
                todo.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Runs `verify`, `stats` and `ls` on a damaged store in `dir` and checks
/// that each fails, names `picocache repair`, and changes nothing.
fn inspection_changes_nothing(dir: &Path) {
    let before = snapshot(dir);
    for args in [
        vec!["verify", p(dir)],
        vec!["verify", "--json", p(dir)],
        vec!["stats", p(dir)],
        vec!["stats", "--json", p(dir)],
        vec!["ls", p(dir), "cli::square"],
    ] {
        let o = run(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?}: {}", stdout(&o));
        let said = format!("{}{}", stdout(&o), stderr(&o));
        assert!(said.contains("picocache repair"), "{args:?}: {said}");
        assert!(!said.contains("is sound"), "{args:?}: {said}");
        assert_eq!(snapshot(dir), before, "{args:?} changed the store");
    }
    assert_eq!(run(&["verify", p(dir)]).status.code(), Some(1));
    assert_eq!(run(&["stats", p(dir)]).status.code(), Some(2));
}

#[test]
fn inspecting_a_store_with_a_garbage_index_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let index = dir.path().join("index");
    let len = std::fs::metadata(&index).unwrap().len() as usize;
    std::fs::write(&index, vec![0xA5u8; len]).unwrap();
    inspection_changes_nothing(dir.path());
    // Repair still mends it.
    let o = run(&["repair", p(dir.path())]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(run(&["verify", p(dir.path())]).status.code(), Some(0));
}

/// Runs `verify`, `stats`, `ls` and `prune` on `dir`, which holds files
/// with a store's names but not its magic, and checks that each says there
/// is no store there and changes nothing (a foreign file named `index` is
/// not taken for a damaged index: `repair` or `prune` would rewrite it).
fn refused_as_no_store(dir: &Path) {
    let before = snapshot(dir);
    for args in [
        vec!["verify", p(dir)],
        vec!["stats", "--json", p(dir)],
        vec!["ls", p(dir), "cli::square"],
        vec!["prune", p(dir), "--unused-for", "1d", "--dry-run"],
        vec!["prune", p(dir), "--unused-for", "1d"],
    ] {
        let o = run(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?}: {}", stdout(&o));
        let said = format!("{}{}", stdout(&o), stderr(&o));
        assert!(said.contains("no PicoCache store"), "{args:?}: {said}");
        assert_eq!(snapshot(dir), before, "{args:?} changed the directory");
    }
}

#[test]
fn inspecting_a_garbage_directory_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index"), b"not an index at all").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    refused_as_no_store(dir.path());
    // A short garbage index with a garbage segment and no lock file.
    std::fs::write(dir.path().join("seg-00000001.log"), vec![7u8; 300]).unwrap();
    refused_as_no_store(dir.path());
    // No index, only a segment.
    std::fs::remove_file(dir.path().join("index")).unwrap();
    refused_as_no_store(dir.path());
}

#[test]
fn inspecting_a_sound_store_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let before = snapshot(dir.path());
    for args in [
        vec!["verify", p(dir.path())],
        vec!["stats", p(dir.path())],
        vec!["ls", p(dir.path()), "cli::big"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(snapshot(dir.path()), before, "{args:?} changed the store");
    }
}

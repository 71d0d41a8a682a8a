//! `picocache`: inspect and maintain a local PicoCache store.
//!
//! ```text
//! picocache stats PATH            every namespace: entries, bytes, hits, misses, evictions,
//!                                 rejected (failed seal checks), last use
//! picocache verify PATH           check every record and index entry (exit 1 if unsound)
//! picocache compact PATH          compact now
//! picocache repair PATH           move non-segment files aside, rebuild the index, rewrite
//!                                 damaged segments (exit 1 if problems remain)
//! picocache clear PATH [NAMESPACE]
//! picocache ls PATH NAMESPACE     keys (the Python calls they encode, else escaped bytes,
//!                                 or --hex) and value sizes
//! picocache prune PATH --unused-for DURATION [--dry-run]
//!                                 remove namespaces unused for DURATION (30d, 12h, 90m, 3600s)
//! ```
//!
//! A namespace's last use is when a process last opened it, wrote to it or
//! looked a key up in it (lookups refresh it at most once a minute); `stats`
//! shows it as an age (`LAST USED`, e.g. `3d`; `unknown` if never recorded) and
//! in `--json` as `last_used`, Unix seconds (`null` if unknown). Every edit of
//! a memoized function names a new namespace (the name carries a digest of the
//! code), so the old ones stop being used: `prune` removes them, entries and
//! all; `compact` (or the background compaction of any process using the
//! store) then reclaims their space. Inspecting a store (`stats`, `ls`,
//! `verify`) does not count as a use, and never changes a file: a store whose
//! index would have to be rebuilt is reported (`verify` exits 1, the others
//! 2) with a message to run `picocache repair`.
//!
//! Human-readable tables by default; `--json` prints one JSON document.
//! Exit status: 0 success, 1 `verify` found problems, 2 an error (no store at
//! PATH, a damaged store that cannot be opened, an unknown namespace, usage).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use picocache_engine::{Options, Store};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "picocache",
    version,
    about = "Inspect and maintain a PicoCache local store"
)]
struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every namespace with entries, bytes, hits, misses and evictions, and
    /// the store's log, dead space and index sizes.
    Stats {
        /// The store's directory.
        path: PathBuf,
    },
    /// Checks every log record and index entry; exit status 1 if the store
    /// is not sound.
    Verify {
        /// The store's directory.
        path: PathBuf,
    },
    /// Compacts now: rewrites segments that hold dead records.
    Compact {
        /// The store's directory.
        path: PathBuf,
    },
    /// Repairs a damaged store: moves files that are not valid segments
    /// into `damaged/`, rebuilds the index from the log and rewrites every
    /// segment with damaged stretches (what they held is lost; nothing else
    /// is). Exit status 1 if problems remain.
    Repair {
        /// The store's directory.
        path: PathBuf,
    },
    /// Removes every entry of one namespace, or of all of them.
    Clear {
        /// The store's directory.
        path: PathBuf,
        /// The namespace to clear (default: every namespace).
        namespace: Option<String>,
    },
    /// Lists a namespace's keys and value sizes, in the order of the store's
    /// LRU list (newest first; recent hits may not have moved a key yet).
    Ls {
        /// The store's directory.
        path: PathBuf,
        /// The namespace.
        namespace: String,
        /// Show keys in hex instead of escaped text.
        #[arg(long)]
        hex: bool,
        /// Show at most this many keys.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Removes every namespace (its entries and its name) not used for a
    /// given time: opened, written or looked up by any process. `compact`
    /// then reclaims their space.
    Prune {
        /// The store's directory.
        path: PathBuf,
        /// Remove namespaces whose last use is longer ago than this: a
        /// number with a unit, `s`, `m`, `h`, `d` or `w` (`30d`, `12h`,
        /// `90m`, `3600s`).
        #[arg(long, value_parser = parse_duration)]
        unused_for: Duration,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Parses `30d`, `12h`, `90m`, `3600s`, `2w`.
/// `println!` that ends the program quietly (exit 0, as `head` expects)
/// when stdout is closed, instead of panicking on a broken pipe.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        if let Err(e) = writeln!(o, $($t)*) {
            stdout_failed(e);
        }
    }};
}

/// Stdout is gone: a closed pipe (`picocache ls | head`) ends the program
/// without a message; any other error is reported.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("picocache: cannot write the output: {e}");
    std::process::exit(1);
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30d, 12h, 90m or 3600s"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "" => return Err(format!("{text:?} needs a unit: s, m, h, d or w (e.g. 30d)")),
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use s, m, h, d or w, e.g. 30d)"
            ))
        }
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long ago `t` (Unix seconds) was: `45s`, `12m`, `5h`, `3d`; `unknown`
/// for `None`.
fn age(t: Option<u64>, now: u64) -> String {
    let Some(t) = t else {
        return "unknown".to_string();
    };
    let d = now.saturating_sub(t);
    match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m", d / 60),
        3600..86_400 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86_400),
    }
}

/// `2592000s` -> `30d`, as the user would write it.
fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= n && s % n == 0 {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// A failure that ends the command with exit status 2.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let result = match cli.cmd {
        Cmd::Stats { path } => stats(&path, json),
        Cmd::Verify { path } => verify(&path, json),
        Cmd::Compact { path } => compact(&path, json),
        Cmd::Repair { path } => repair(&path, json),
        Cmd::Clear { path, namespace } => clear(&path, namespace.as_deref(), json),
        Cmd::Ls {
            path,
            namespace,
            hex,
            limit,
        } => ls(&path, &namespace, hex, limit, json),
        Cmd::Prune {
            path,
            unused_for,
            dry_run,
        } => prune(&path, unused_for, dry_run, json),
    };
    match result {
        Ok(code) => code,
        Err(Failure(msg)) => {
            eprintln!("picocache: error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// True if `path` is a directory that holds a store (an index or a log
/// segment). Checked before opening, because opening creates a store.
fn is_store(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name == "index" || (name.starts_with("seg-") && name.ends_with(".log"))
    })
}

/// Opens an existing store (never creates one).
fn open(path: &Path) -> Result<Store, Failure> {
    if !is_store(path) {
        return Err(Failure(format!("no PicoCache store at {}", path.display())));
    }
    Store::open(path, Options::default().background_compaction(false)).map_err(|e| {
        Failure(format!(
            "cannot open the store at {} (damaged?): {e}",
            path.display()
        ))
    })
}

/// Opens an existing store for inspection (`stats`, `ls`, `verify`): never
/// creates, rebuilds or writes any file; a store that would need a rebuild is
/// an error that says to run `picocache repair`.
fn open_inspect(path: &Path) -> Result<Store, Failure> {
    if !is_store(path) {
        return Err(Failure(format!("no PicoCache store at {}", path.display())));
    }
    Store::open(path, Options::default().inspect_only(true)).map_err(|e| match e {
        picocache_engine::Error::NeedsRepair { .. } => Failure(e.to_string()),
        e => Failure(format!(
            "cannot open the store at {} (damaged? run `picocache repair {}`): {e}",
            path.display(),
            path.display()
        )),
    })
}

fn namespace(store: &Store, name: &str) -> Result<picocache_engine::Namespace, Failure> {
    store.existing_namespace(name)?.ok_or_else(|| {
        Failure(format!(
            "no namespace {name:?} in {} (see `picocache stats`)",
            store.path().display()
        ))
    })
}

fn print_json(v: &serde_json::Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// `1536` -> `1.5 KiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints rows as a table with left-aligned first column and right-aligned
/// numbers.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i == 0 {
                s.push_str(&format!("{c:<w$}"));
            } else {
                s.push_str(&format!("  {c:>w$}"));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn limit_text(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |n| n.to_string())
}

fn stats(path: &Path, json: bool) -> Result<ExitCode, Failure> {
    let store = open_inspect(path)?;
    let s = store.stats()?;
    let disk = store.disk_usage()?;
    if json {
        let namespaces: Vec<_> = s
            .namespaces
            .iter()
            .map(|n| {
                json!({
                    "name": n.name,
                    "entries": n.entries,
                    "bytes": n.live_bytes,
                    "hits": n.hits,
                    "misses": n.misses,
                    "evictions": n.evictions,
                    "rejected": n.rejected,
                    "maxsize": n.limits.maxsize,
                    "max_bytes": n.limits.max_bytes,
                    "ttl_ms": n.limits.ttl.map(|t| t.as_millis() as u64),
                    "last_used": n.last_used,
                })
            })
            .collect();
        print_json(&json!({
            "path": path.display().to_string(),
            "segments": s.segments,
            "log_bytes": s.log_bytes,
            "dead_bytes": s.dead_bytes,
            "index_bytes": s.index_bytes,
            "disk_bytes": disk,
            "entries": s.entries,
            "compactions": s.compactions,
            "namespaces": namespaces,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let dead_pct = if s.log_bytes > 0 {
        s.dead_bytes as f64 * 100.0 / s.log_bytes as f64
    } else {
        0.0
    };
    outln!("store      {}", path.display());
    outln!(
        "log        {} in {} segment(s); dead space {} ({dead_pct:.0}%)",
        human_bytes(s.log_bytes),
        s.segments,
        human_bytes(s.dead_bytes)
    );
    outln!(
        "index      {}; on disk {}",
        human_bytes(s.index_bytes),
        human_bytes(disk)
    );
    outln!(
        "entries    {} in {} namespace(s); {} compaction(s)",
        s.entries,
        s.namespaces.len(),
        s.compactions
    );
    outln!();
    let now = unix_now();
    let rows: Vec<Vec<String>> = s
        .namespaces
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.entries.to_string(),
                human_bytes(n.live_bytes),
                n.hits.to_string(),
                n.misses.to_string(),
                n.evictions.to_string(),
                n.rejected.to_string(),
                limit_text(n.limits.maxsize),
                n.limits
                    .ttl
                    .map_or_else(|| "-".to_string(), |t| format!("{t:?}")),
                age(n.last_used, now),
            ]
        })
        .collect();
    if rows.is_empty() {
        outln!("(no namespaces)");
    } else {
        print_table(
            &[
                "NAMESPACE",
                "ENTRIES",
                "BYTES",
                "HITS",
                "MISSES",
                "EVICTIONS",
                "REJECTED",
                "MAXSIZE",
                "TTL",
                "LAST USED",
            ],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(path: &Path, json: bool) -> Result<ExitCode, Failure> {
    let report = match open_inspect(path) {
        Ok(store) => store.verify(),
        Err(f) if is_store(path) => {
            // A store that cannot even be opened is not sound.
            report_problems(path, 0, 0, &[f.0], json);
            return Ok(ExitCode::from(1));
        }
        Err(f) => return Err(f),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            report_problems(path, 0, 0, &[format!("verification failed: {e}")], json);
            return Ok(ExitCode::from(1));
        }
    };
    report_problems(path, report.records, report.entries, &report.problems, json);
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn report_problems(path: &Path, records: u64, entries: u64, problems: &[String], json: bool) {
    if json {
        print_json(&json!({
            "path": path.display().to_string(),
            "ok": problems.is_empty(),
            "records": records,
            "entries": entries,
            "problems": problems,
        }));
        return;
    }
    if problems.is_empty() {
        outln!(
            "ok: {} is sound ({records} records, {entries} index entries checked)",
            path.display()
        );
    } else {
        outln!(
            "{} problem(s) in {} ({records} records, {entries} index entries checked):",
            problems.len(),
            path.display()
        );
        for p in problems {
            outln!("  - {p}");
        }
    }
}

/// A spinner on stderr while `f` runs, if stderr is a terminal.
fn with_spinner<T>(what: &str, f: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return f();
    }
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let what = what.to_owned();
    let t = std::thread::spawn(move || {
        let frames = ['|', '/', '-', '\\'];
        let start = std::time::Instant::now();
        let mut i = 0;
        while !d2.load(Ordering::Acquire) {
            eprint!(
                "\r{what} {} {:.1}s",
                frames[i % frames.len()],
                start.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
            i += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        eprint!("\r{}\r", " ".repeat(what.len() + 12));
        let _ = std::io::stderr().flush();
    });
    let r = f();
    done.store(true, Ordering::Release);
    let _ = t.join();
    r
}

fn compact(path: &Path, json: bool) -> Result<ExitCode, Failure> {
    let store = open(path)?;
    let before = store.stats()?;
    let disk_before = store.disk_usage()?;
    with_spinner("compacting", || store.compact())?;
    let after = store.stats()?;
    let disk_after = store.disk_usage()?;
    if json {
        print_json(&json!({
            "path": path.display().to_string(),
            "log_bytes_before": before.log_bytes,
            "log_bytes_after": after.log_bytes,
            "dead_bytes_before": before.dead_bytes,
            "dead_bytes_after": after.dead_bytes,
            "disk_bytes_before": disk_before,
            "disk_bytes_after": disk_after,
            "entries": after.entries,
        }));
    } else {
        outln!(
            "compacted {}: log {} -> {}, dead space {} -> {}, on disk {} -> {}",
            path.display(),
            human_bytes(before.log_bytes),
            human_bytes(after.log_bytes),
            human_bytes(before.dead_bytes),
            human_bytes(after.dead_bytes),
            human_bytes(disk_before),
            human_bytes(disk_after)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn repair(path: &Path, json: bool) -> Result<ExitCode, Failure> {
    let store = open(path)?;
    let rep = with_spinner("repairing", || store.repair())?;
    if json {
        print_json(&json!({
            "path": path.display().to_string(),
            "ok": rep.problems_after.is_empty(),
            "problems_before": rep.problems_before,
            "moved_aside": rep.moved_aside.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "segments_rewritten": rep.segments_rewritten,
            "problems_after": rep.problems_after,
        }));
    } else {
        outln!(
            "{}: {} problem(s) found",
            path.display(),
            rep.problems_before.len()
        );
        for p in &rep.problems_before {
            outln!("  - {p}");
        }
        for p in &rep.moved_aside {
            outln!("moved aside: {}", p.display());
        }
        outln!(
            "index rebuilt from the log; {} damaged segment(s) rewritten",
            rep.segments_rewritten
        );
        if rep.problems_after.is_empty() {
            outln!("ok: {} is sound", path.display());
        } else {
            outln!("{} problem(s) remain:", rep.problems_after.len());
            for p in &rep.problems_after {
                outln!("  - {p}");
            }
        }
    }
    Ok(if rep.problems_after.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn clear(path: &Path, name: Option<&str>, json: bool) -> Result<ExitCode, Failure> {
    let store = open(path)?;
    let targets = match name {
        Some(n) => vec![namespace(&store, n)?],
        None => {
            let mut all = Vec::new();
            for n in store.namespace_names()? {
                all.extend(store.existing_namespace(&n)?);
            }
            all
        }
    };
    let mut cleared = Vec::new();
    for ns in targets {
        let entries = ns.stats()?.entries;
        ns.clear()?;
        cleared.push((ns.name().to_owned(), entries));
    }
    if json {
        let v: Vec<_> = cleared
            .iter()
            .map(|(n, e)| json!({"name": n, "entries_removed": e}))
            .collect();
        print_json(&json!({ "path": path.display().to_string(), "cleared": v }));
    } else if cleared.is_empty() {
        outln!("nothing to clear: {} has no namespaces", path.display());
    } else {
        for (n, e) in &cleared {
            outln!("cleared {n}: {e} entries removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A key's bytes as text: printable ASCII as is, everything else escaped
/// (`\x00`).
fn escaped(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn ls(
    path: &Path,
    name: &str,
    as_hex: bool,
    limit: Option<usize>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let store = open_inspect(path)?;
    let ns = namespace(&store, name)?;
    let mut keys = ns.keys()?;
    let total = keys.len();
    if let Some(l) = limit {
        keys.truncate(l);
    }
    if json {
        let v: Vec<_> = keys
            .iter()
            .map(|(k, n)| {
                json!({
                    "key": escaped(k),
                    "call": picocache::keyfmt::python_call(k),
                    "key_hex": hex(k),
                    "value_bytes": n,
                })
            })
            .collect();
        print_json(&json!({ "namespace": name, "total": total, "keys": v }));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|(k, n)| {
            let key = if as_hex {
                hex(k)
            } else {
                // The call a Python key encodes; other keys escaped.
                picocache::keyfmt::display(k)
            };
            vec![key, n.to_string()]
        })
        .collect();
    print_table(&["KEY", "VALUE BYTES"], &rows);
    if rows.len() < total {
        outln!("({} of {total} keys shown)", rows.len());
    } else {
        outln!("({total} keys)");
    }
    Ok(ExitCode::SUCCESS)
}

fn prune(
    path: &Path,
    unused_for: Duration,
    dry_run: bool,
    json: bool,
) -> Result<ExitCode, Failure> {
    let store = open(path)?;
    let found = if dry_run {
        store.unused_namespaces(unused_for)?
    } else {
        store.remove_unused_namespaces(unused_for)?
    };
    let now = unix_now();
    if json {
        let v: Vec<_> = found
            .iter()
            .map(|n| {
                json!({
                    "name": n.name,
                    "entries": n.entries,
                    "bytes": n.live_bytes,
                    "last_used": n.last_used,
                })
            })
            .collect();
        print_json(&json!({
            "path": path.display().to_string(),
            "unused_for_secs": unused_for.as_secs(),
            "dry_run": dry_run,
            "removed": v,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for n in &found {
        outln!(
            "{verb} {}: {} entries, {}, last used {} ago",
            n.name,
            n.entries,
            human_bytes(n.live_bytes),
            age(n.last_used, now)
        );
    }
    let span = duration_text(unused_for);
    if found.is_empty() {
        outln!("no namespace of {} unused for {span}", path.display());
    } else if !dry_run {
        outln!(
            "{} namespace(s) unused for {span} removed; `picocache compact {}` reclaims their space now",
            found.len(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! The subcommands: `stats`, `verify`, `compact`, `repair`, `clear`, `ls`
//! and `prune`. Each returns the exit status, or a [`Failure`] (status 2).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use crate::output::{
    age, duration_text, escaped, hex, human_bytes, limit_text, print_json, print_table, unix_now,
    with_spinner,
};
use crate::{namespace, open, open_inspect, Failure};
use picocache_engine::is_store;

pub(crate) fn stats(path: &Path, json: bool) -> Result<ExitCode, Failure> {
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

pub(crate) fn verify(path: &Path, json: bool) -> Result<ExitCode, Failure> {
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

pub(crate) fn report_problems(
    path: &Path,
    records: u64,
    entries: u64,
    problems: &[String],
    json: bool,
) {
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

pub(crate) fn compact(path: &Path, json: bool) -> Result<ExitCode, Failure> {
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

pub(crate) fn repair(path: &Path, json: bool) -> Result<ExitCode, Failure> {
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

pub(crate) fn clear(path: &Path, name: Option<&str>, json: bool) -> Result<ExitCode, Failure> {
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

pub(crate) fn ls(
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

pub(crate) fn prune(
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

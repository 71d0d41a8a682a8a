//! How `picocache` prints: lines that end quietly on a closed pipe, tables,
//! JSON, sizes, ages and durations, and a progress spinner for long steps.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `println!` that ends the program quietly (exit 0, as `head` expects)
/// when stdout is closed, instead of panicking on a broken pipe.
macro_rules! outln {
    () => {
        outln!("")
    };
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let text = $crate::output::printable(&format!($($t)*));
        let mut o = std::io::stdout().lock();
        if let Err(e) = writeln!(o, "{text}") {
            $crate::output::stdout_failed(e);
        }
    }};
}

/// `text` with its control characters but newlines escaped (`\u{1b}`): a
/// namespace's name, a key's type name or a path comes from whoever wrote
/// the store, and an ESC, a BEL or a carriage return printed raw would
/// drive the terminal (clear it, set its title, forge table rows).
pub(crate) fn printable(text: &str) -> String {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Stdout is gone: a closed pipe (`picocache ls | head`) ends the program
/// without a message; any other error is reported.
pub(crate) fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("picocache: cannot write the output: {e}");
    std::process::exit(1);
}

/// Parses `30d`, `12h`, `90m`, `3600s`, `2w`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
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
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long ago `t` (Unix seconds) was: `45s`, `12m`, `5h`, `3d`; `unknown`
/// for `None`.
pub(crate) fn age(t: Option<u64>, now: u64) -> String {
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
pub(crate) fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= n && s % n == 0 {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

pub(crate) fn print_json(v: &serde_json::Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// `1536` -> `1.5 KiB`.
pub(crate) fn human_bytes(n: u64) -> String {
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
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
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

pub(crate) fn limit_text(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// A spinner on stderr while `f` runs, if stderr is a terminal.
pub(crate) fn with_spinner<T>(what: &str, f: impl FnOnce() -> T) -> T {
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

/// A key's bytes as text: printable ASCII as is, everything else escaped
/// (`\x00`).
pub(crate) fn escaped(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

pub(crate) fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

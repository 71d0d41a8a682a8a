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

#[macro_use]
mod output;
mod commands;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use picocache_engine::{Options, Store};

use commands::{clear, compact, ls, prune, repair, stats, verify};
use output::parse_duration;

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

/// A failure that ends the command with exit status 2.
pub(crate) struct Failure(pub(crate) String);

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

/// Opens an existing store (never creates one).
pub(crate) fn open(path: &Path) -> Result<Store, Failure> {
    if !picocache_engine::is_store(path) {
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
pub(crate) fn open_inspect(path: &Path) -> Result<Store, Failure> {
    if !picocache_engine::is_store(path) {
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

pub(crate) fn namespace(store: &Store, name: &str) -> Result<picocache_engine::Namespace, Failure> {
    store.existing_namespace(name)?.ok_or_else(|| {
        Failure(format!(
            "no namespace {name:?} in {} (see `picocache stats`)",
            store.path().display()
        ))
    })
}

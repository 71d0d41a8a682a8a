//! Many clients that start at once on an empty database all create the
//! schema (PostgreSQL's `CREATE TABLE IF NOT EXISTS` races: two sessions may
//! both insert the table's row type, a unique violation on
//! `pg_type_typname_nsp_index`): every one connects at its first try (no
//! retry, no warning, no "already exists" notice: nothing logged at info
//! or above), and the tables work.

use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use picocache::sql::{SqlBackend, SqlOptions};
use picocache::{Backend, Limits};
use picocache_tests::server_url;

/// Messages at info or above logged by picocache or the `postgres` crate
/// (which logs the server's notices at info).
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Recorder;

impl log::Log for Recorder {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
            && (m.target().starts_with("picocache") || m.target().starts_with("postgres"))
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            WARNINGS
                .lock()
                .unwrap()
                .push(format!("{}: {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

const CLIENTS: usize = 16;

fn race(kind: &str) {
    let Some(url) = server_url(kind) else { return };
    for round in 0..3 {
        let table = format!("race_{}_{round}_{}", std::process::id(), kind.len());
        let start = Arc::new(Barrier::new(CLIENTS));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (url, table, start) = (url.clone(), table.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    SqlBackend::connect(
                        &url,
                        SqlOptions {
                            table,
                            timeout: std::time::Duration::from_secs(10),
                            ..SqlOptions::default()
                        },
                    )
                })
            })
            .collect();
        let backends: Vec<SqlBackend> = clients
            .into_iter()
            .map(|c| {
                c.join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{kind}: connect: {e}"))
            })
            .collect();
        let ns = backends[0].namespace("n", Limits::default()).unwrap();
        ns.put(b"k", b"v", None).unwrap();
        let other = backends[CLIENTS - 1]
            .namespace("n", Limits::default())
            .unwrap();
        assert_eq!(other.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }
}

#[test]
fn clients_that_start_together_all_create_the_schema() {
    let _ = log::set_logger(&Recorder);
    log::set_max_level(log::LevelFilter::Info);
    race("postgresql");
    race("mysql");
    let w = WARNINGS.lock().unwrap();
    assert!(w.is_empty(), "logged: {w:?}");
}

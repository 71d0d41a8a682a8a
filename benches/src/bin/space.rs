//! Space after overwriting every key once and compacting, for the engine and
//! its peers: `PICOCACHE_BENCH_N` entries (default 1,000,000) of 16-byte keys
//! and 100-byte values are written twice (the second time with new values),
//! then each store reclaims what it can, and the files are measured against
//! the live data (keys + values).
//!
//! Run: `cargo run --release -p picocache-benches --bin space`

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use heed::types::Bytes;
use picocache_benches::{bench_n, key, lmdb, value};
use picocache_engine::{Limits, Options, Store};
use redb::TableDefinition;

const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("t");
const BATCH: u64 = 1000;

/// (apparent bytes, allocated bytes) of every file under `dir`.
fn usage(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        let m = e.metadata().expect("metadata");
        if m.is_dir() {
            let (a, b) = usage(&e.path());
            total.0 += a;
            total.1 += b;
        } else {
            total.0 += m.len();
            total.1 += m.blocks() * 512;
        }
    }
    total
}

fn batches(n: u64, round: u64, mut f: impl FnMut(&[([u8; 16], [u8; 100])])) {
    for start in (0..n).step_by(BATCH as usize) {
        let kv: Vec<_> = (start..(start + BATCH).min(n))
            .map(|i| (key(i), value(i + round)))
            .collect();
        f(&kv);
    }
}

fn row(name: &str, how: &str, live: u64, before: (u64, u64), after: (u64, u64), secs: f64) {
    println!(
        "| {name:<10} | {how:<34} | {:>12} | {:>12} | {:>12} | {:>6.2}x | {:>6.2}x | {secs:>6.1} |",
        before.0,
        after.0,
        after.1,
        after.0 as f64 / live as f64,
        after.1 as f64 / live as f64
    );
}

fn main() {
    let n = bench_n();
    let live = n * (16 + 100);
    println!("{n} entries, live key+value bytes {live}; every key written twice, then compacted");
    println!(
        "| store      | reclaim step                       | bytes before | bytes after  | allocated    | after/live | alloc/live | secs |"
    );
    println!("|------------|------------------------------------|--------------|--------------|--------------|--------|--------|--------|");

    {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        let s =
            Store::open(dir.path(), Options::default().background_compaction(false)).expect("open");
        let ns = s.namespace("bench", Limits::default()).expect("namespace");
        for round in 0..2 {
            batches(n, round, |kv| {
                let items: Vec<(&[u8], &[u8])> = kv.iter().map(|(k, v)| (&k[..], &v[..])).collect();
                ns.put_batch(&items).expect("put_batch");
            });
        }
        s.sync().expect("sync");
        let before = usage(dir.path());
        s.compact().expect("compact");
        s.sync().expect("sync");
        let after = usage(dir.path());
        let st = s.stats().expect("stats");
        row(
            "picocache",
            "Store::compact",
            live,
            before,
            after,
            t.elapsed().as_secs_f64(),
        );
        eprintln!("picocache: {st:?}");
    }
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        let mut db = redb::Database::create(dir.path().join("db.redb")).expect("redb");
        for round in 0..2 {
            batches(n, round, |kv| {
                let mut w = db.begin_write().expect("write");
                w.set_durability(redb::Durability::None)
                    .expect("durability");
                {
                    let mut tab = w.open_table(T).expect("table");
                    for (k, v) in kv {
                        tab.insert(&k[..], &v[..]).expect("insert");
                    }
                }
                w.commit().expect("commit");
            });
        }
        db.begin_write().expect("write").commit().expect("commit");
        let before = usage(dir.path());
        db.compact().expect("compact");
        let after = usage(dir.path());
        row(
            "redb",
            "Database::compact",
            live,
            before,
            after,
            t.elapsed().as_secs_f64(),
        );
    }
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        let env = lmdb::open(dir.path(), true).expect("lmdb");
        let mut w = env.write_txn().expect("write");
        let db: heed::Database<Bytes, Bytes> = env.create_database(&mut w, None).expect("db");
        w.commit().expect("commit");
        for round in 0..2 {
            batches(n, round, |kv| {
                let mut w = env.write_txn().expect("write");
                for (k, v) in kv {
                    db.put(&mut w, k, v).expect("put");
                }
                w.commit().expect("commit");
            });
        }
        env.force_sync().expect("sync");
        let before = usage(dir.path());
        // LMDB has no in-place compaction: its free pages are reused by later
        // writes; a compacting copy is its way to shrink.
        let copy = tempfile::tempdir().expect("tempdir");
        env.copy_to_file(
            copy.path().join("data.mdb"),
            heed::CompactionOption::Enabled,
        )
        .expect("copy");
        let after = usage(copy.path());
        row(
            "lmdb",
            "none in place; compacting copy",
            live,
            before,
            after,
            t.elapsed().as_secs_f64(),
        );
    }
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        let sq = rusqlite::Connection::open(dir.path().join("db.sqlite")).expect("sqlite");
        sq.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
             CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
        )
        .expect("schema");
        for round in 0..2 {
            batches(n, round, |kv| {
                let tx = sq.unchecked_transaction().expect("tx");
                {
                    let mut st = tx
                        .prepare_cached("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")
                        .expect("prep");
                    for (k, v) in kv {
                        st.execute((&k[..], &v[..])).expect("insert");
                    }
                }
                tx.commit().expect("commit");
            });
        }
        let before = usage(dir.path());
        sq.execute_batch(
            "PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .expect("vacuum");
        let after = usage(dir.path());
        row(
            "sqlite",
            "VACUUM + wal_checkpoint(TRUNCATE)",
            live,
            before,
            after,
            t.elapsed().as_secs_f64(),
        );
    }
}

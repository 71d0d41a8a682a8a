//! The engine against redb, LMDB (heed), SQLite (rusqlite, WAL) and
//! `std::collections::HashMap`, on the same workload in the same run:
//! `PICOCACHE_BENCH_N` entries (default 1,000,000) of 16-byte keys and
//! 100-byte values.
//!
//! Run: `cargo bench -p picocache-benches --bench engine`
//! (quick: `PICOCACHE_BENCH_N=100000 cargo bench -p picocache-benches --bench engine`).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use heed::types::Bytes;
use picocache_benches::{bench_n, key, lmdb, value, Rng};
use picocache_engine::{Durability, Limits, Options, Store};
use redb::{ReadableDatabase, TableDefinition};

const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("t");
const BATCH: u64 = 1000;

struct Stores {
    _dirs: Vec<tempfile::TempDir>,
    _pico: Store,
    pico_ns: picocache_engine::Namespace,
    redb: redb::Database,
    lmdb: heed::Env,
    lmdb_db: heed::Database<Bytes, Bytes>,
    sqlite: rusqlite::Connection,
    map: HashMap<[u8; 16], Vec<u8>>,
}

fn pico_opts() -> Options {
    Options::default().background_compaction(false)
}

fn load(n: u64) -> Stores {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let t = Instant::now();
    let pico = Store::open(dirs[0].path(), pico_opts()).unwrap();
    let pico_ns = pico.namespace("bench", Limits::default()).unwrap();
    for start in (0..n).step_by(BATCH as usize) {
        let ks: Vec<_> = (start..(start + BATCH).min(n))
            .map(|i| (key(i), value(i)))
            .collect();
        let items: Vec<(&[u8], &[u8])> = ks.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        pico_ns.put_batch(&items).unwrap();
    }
    eprintln!("load picocache: {:?}", t.elapsed());

    let t = Instant::now();
    let redb = redb::Database::create(dirs[1].path().join("db.redb")).unwrap();
    for start in (0..n).step_by(BATCH as usize) {
        let mut w = redb.begin_write().unwrap();
        w.set_durability(redb::Durability::None).unwrap();
        {
            let mut tab = w.open_table(T).unwrap();
            for i in start..(start + BATCH).min(n) {
                tab.insert(&key(i)[..], &value(i)[..]).unwrap();
            }
        }
        w.commit().unwrap();
    }
    eprintln!("load redb: {:?}", t.elapsed());

    let t = Instant::now();
    let lmdb = lmdb::open(dirs[2].path(), true).unwrap();
    let mut w = lmdb.write_txn().unwrap();
    let lmdb_db: heed::Database<Bytes, Bytes> = lmdb.create_database(&mut w, None).unwrap();
    w.commit().unwrap();
    for start in (0..n).step_by(BATCH as usize) {
        let mut w = lmdb.write_txn().unwrap();
        for i in start..(start + BATCH).min(n) {
            lmdb_db.put(&mut w, &key(i), &value(i)).unwrap();
        }
        w.commit().unwrap();
    }
    eprintln!("load lmdb: {:?}", t.elapsed());

    let t = Instant::now();
    let sqlite = rusqlite::Connection::open(dirs[3].path().join("db.sqlite")).unwrap();
    sqlite
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
             CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
    for start in (0..n).step_by(BATCH as usize) {
        let tx = sqlite.unchecked_transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")
                .unwrap();
            for i in start..(start + BATCH).min(n) {
                st.execute((&key(i)[..], &value(i)[..])).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    eprintln!("load sqlite: {:?}", t.elapsed());

    let map = (0..n).map(|i| (key(i), value(i).to_vec())).collect();
    Stores {
        _dirs: dirs,
        _pico: pico,
        pico_ns,
        redb,
        lmdb,
        lmdb_db,
        sqlite,
        map,
    }
}

fn gets(c: &mut Criterion, s: &Stores, n: u64, present: bool) {
    let name = if present { "get_present" } else { "get_absent" };
    let pick = |r: &mut Rng| {
        if present {
            r.below(n)
        } else {
            n * 4 + r.below(n)
        }
    };
    let mut g = c.benchmark_group(name);
    g.bench_function("picocache", |b| {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        b.iter(|| black_box(s.pico_ns.get_with(&key(pick(&mut r)), |v| v.len()).unwrap()))
    });
    g.bench_function("hashmap", |b| {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        b.iter(|| black_box(s.map.get(&key(pick(&mut r))).map(|v| v.len())))
    });
    g.bench_function("lmdb", |b| {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let rtxn = s.lmdb.read_txn().unwrap();
        b.iter(|| {
            black_box(
                s.lmdb_db
                    .get(&rtxn, &key(pick(&mut r)))
                    .unwrap()
                    .map(|v| v.len()),
            )
        })
    });
    g.bench_function("redb", |b| {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let rtxn = s.redb.begin_read().unwrap();
        let tab = rtxn.open_table(T).unwrap();
        b.iter(|| {
            black_box(
                tab.get(&key(pick(&mut r))[..])
                    .unwrap()
                    .map(|v| v.value().len()),
            )
        })
    });
    g.bench_function("sqlite", |b| {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let mut st = s
            .sqlite
            .prepare_cached("SELECT length(v) FROM kv WHERE k = ?1")
            .unwrap();
        b.iter(|| {
            let k = key(pick(&mut r));
            black_box(st.query_row([&k[..]], |row| row.get::<_, i64>(0)).ok())
        })
    });
    g.finish();
}

fn puts(c: &mut Criterion, s: &mut Stores, n: u64) {
    // One by one, no fsync. New keys above the loaded range.
    let mut g = c.benchmark_group("put_one_nosync");
    let mut next = 10 * n;
    g.bench_function("picocache", |b| {
        b.iter(|| {
            next += 1;
            s.pico_ns.put(&key(next), &value(next)).unwrap()
        })
    });
    g.bench_function("hashmap", |b| {
        b.iter(|| {
            next += 1;
            s.map.insert(key(next), value(next).to_vec())
        })
    });
    g.bench_function("lmdb", |b| {
        b.iter(|| {
            next += 1;
            let mut w = s.lmdb.write_txn().unwrap();
            s.lmdb_db.put(&mut w, &key(next), &value(next)).unwrap();
            w.commit().unwrap()
        })
    });
    g.bench_function("redb", |b| {
        b.iter(|| {
            next += 1;
            let mut w = s.redb.begin_write().unwrap();
            w.set_durability(redb::Durability::None).unwrap();
            w.open_table(T)
                .unwrap()
                .insert(&key(next)[..], &value(next)[..])
                .unwrap();
            w.commit().unwrap()
        })
    });
    g.bench_function("sqlite", |b| {
        let mut st = s
            .sqlite
            .prepare_cached("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")
            .unwrap();
        b.iter(|| {
            next += 1;
            st.execute((&key(next)[..], &value(next)[..])).unwrap()
        })
    });
    g.finish();

    // Batches of 1000 in one commit, no fsync; throughput in entries.
    let mut g = c.benchmark_group("put_batch1000_nosync");
    g.throughput(criterion::Throughput::Elements(BATCH));
    g.bench_function("picocache", |b| {
        b.iter_batched(
            || {
                next += BATCH;
                (next..next + BATCH)
                    .map(|i| (key(i), value(i)))
                    .collect::<Vec<_>>()
            },
            |kv| {
                let items: Vec<(&[u8], &[u8])> = kv.iter().map(|(k, v)| (&k[..], &v[..])).collect();
                s.pico_ns.put_batch(&items).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("hashmap", |b| {
        b.iter(|| {
            next += BATCH;
            for i in next..next + BATCH {
                s.map.insert(key(i), value(i).to_vec());
            }
        })
    });
    g.bench_function("lmdb", |b| {
        b.iter(|| {
            next += BATCH;
            let mut w = s.lmdb.write_txn().unwrap();
            for i in next..next + BATCH {
                s.lmdb_db.put(&mut w, &key(i), &value(i)).unwrap();
            }
            w.commit().unwrap()
        })
    });
    g.bench_function("redb", |b| {
        b.iter(|| {
            next += BATCH;
            let mut w = s.redb.begin_write().unwrap();
            w.set_durability(redb::Durability::None).unwrap();
            {
                let mut t = w.open_table(T).unwrap();
                for i in next..next + BATCH {
                    t.insert(&key(i)[..], &value(i)[..]).unwrap();
                }
            }
            w.commit().unwrap()
        })
    });
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            next += BATCH;
            let tx = s.sqlite.unchecked_transaction().unwrap();
            {
                let mut st = tx
                    .prepare_cached("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")
                    .unwrap();
                for i in next..next + BATCH {
                    st.execute((&key(i)[..], &value(i)[..])).unwrap();
                }
            }
            tx.commit().unwrap()
        })
    });
    g.finish();
}

/// One put per durable commit (fsync), in small fresh stores: one writer,
/// and (picocache, LMDB) four threads committing together.
fn durable(c: &mut Criterion) {
    let mut g = c.benchmark_group("put_durable");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let dir = tempfile::tempdir().unwrap();
    let pico = Store::open(
        dir.path().join("p"),
        pico_opts().durability(Durability::PowerLoss),
    )
    .unwrap();
    let ns = pico.namespace("d", Limits::default()).unwrap();
    let mut next = 0u64;
    g.bench_function("picocache", |b| {
        b.iter(|| {
            next += 1;
            ns.put(&key(next), &value(next)).unwrap()
        })
    });
    std::fs::create_dir(dir.path().join("l")).unwrap();
    let env = lmdb::open(&dir.path().join("l"), false).unwrap();
    let mut w = env.write_txn().unwrap();
    let db: heed::Database<Bytes, Bytes> = env.create_database(&mut w, None).unwrap();
    w.commit().unwrap();
    g.bench_function("lmdb", |b| {
        b.iter(|| {
            next += 1;
            let mut w = env.write_txn().unwrap();
            db.put(&mut w, &key(next), &value(next)).unwrap();
            w.commit().unwrap()
        })
    });
    let rdb = redb::Database::create(dir.path().join("r.redb")).unwrap();
    g.bench_function("redb", |b| {
        b.iter(|| {
            next += 1;
            let w = rdb.begin_write().unwrap();
            w.open_table(T)
                .unwrap()
                .insert(&key(next)[..], &value(next)[..])
                .unwrap();
            w.commit().unwrap()
        })
    });
    let sq = rusqlite::Connection::open(dir.path().join("s.sqlite")).unwrap();
    sq.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
    )
    .unwrap();
    g.bench_function("sqlite", |b| {
        let mut st = sq
            .prepare_cached("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")
            .unwrap();
        b.iter(|| {
            next += 1;
            st.execute((&key(next)[..], &value(next)[..])).unwrap()
        })
    });
    // Four writer threads, each put its own durable commit: time per put.
    g.bench_function("picocache_4_threads", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(4);
            let base = next;
            next += 4 * per;
            let t = Instant::now();
            std::thread::scope(|sc| {
                for th in 0..4 {
                    let ns = &ns;
                    sc.spawn(move || {
                        for i in 0..per {
                            let k = base + th * per + i;
                            ns.put(&key(k), &value(k)).unwrap();
                        }
                    });
                }
            });
            t.elapsed()
        })
    });
    g.bench_function("lmdb_4_threads", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(4);
            let base = next;
            next += 4 * per;
            let t = Instant::now();
            std::thread::scope(|sc| {
                for th in 0..4 {
                    let (env, db) = (&env, &db);
                    sc.spawn(move || {
                        for i in 0..per {
                            let k = base + th * per + i;
                            let mut w = env.write_txn().unwrap();
                            db.put(&mut w, &key(k), &value(k)).unwrap();
                            w.commit().unwrap();
                        }
                    });
                }
            });
            t.elapsed()
        })
    });
    g.finish();
}

/// Open of a cleanly closed store of `n` entries, then one read (so that a
/// lazy open pays for what it deferred): picocache after `sync` and drop, the
/// others after their own clean close.
fn open(c: &mut Criterion, n: u64) {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    {
        let s = Store::open(dirs[0].path(), pico_opts()).unwrap();
        let ns = s.namespace("bench", Limits::default()).unwrap();
        for start in (0..n).step_by(BATCH as usize) {
            let ks: Vec<_> = (start..(start + BATCH).min(n))
                .map(|i| (key(i), value(i)))
                .collect();
            let items: Vec<(&[u8], &[u8])> = ks.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            ns.put_batch(&items).unwrap();
        }
        s.sync().unwrap();
    }
    let redb_path = dirs[1].path().join("db.redb");
    {
        let db = redb::Database::create(&redb_path).unwrap();
        for start in (0..n).step_by(BATCH as usize) {
            let mut w = db.begin_write().unwrap();
            w.set_durability(redb::Durability::None).unwrap();
            {
                let mut tab = w.open_table(T).unwrap();
                for i in start..(start + BATCH).min(n) {
                    tab.insert(&key(i)[..], &value(i)[..]).unwrap();
                }
            }
            w.commit().unwrap();
        }
        let w = db.begin_write().unwrap();
        w.commit().unwrap(); // one durable commit: a clean close
    }
    {
        let env = lmdb::open(dirs[2].path(), false).unwrap();
        let mut w = env.write_txn().unwrap();
        let db: heed::Database<Bytes, Bytes> = env.create_database(&mut w, None).unwrap();
        w.commit().unwrap();
        for start in (0..n).step_by(BATCH as usize) {
            let mut w = env.write_txn().unwrap();
            for i in start..(start + BATCH).min(n) {
                db.put(&mut w, &key(i), &value(i)).unwrap();
            }
            w.commit().unwrap();
        }
        env.prepare_for_closing().wait();
    }
    let sqlite_path = dirs[3].path().join("db.sqlite");
    {
        let sq = rusqlite::Connection::open(&sqlite_path).unwrap();
        sq.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
             CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        for start in (0..n).step_by(BATCH as usize) {
            let tx = sq.unchecked_transaction().unwrap();
            {
                let mut st = tx
                    .prepare_cached("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")
                    .unwrap();
                for i in start..(start + BATCH).min(n) {
                    st.execute((&key(i)[..], &value(i)[..])).unwrap();
                }
            }
            tx.commit().unwrap();
        }
    }
    let probe = key(n / 2);
    let mut g = c.benchmark_group("open_clean");
    g.sample_size(10);
    g.bench_function("picocache", |b| {
        b.iter(|| {
            let s = Store::open(dirs[0].path(), pico_opts()).unwrap();
            let ns = s.namespace("bench", Limits::default()).unwrap();
            black_box(ns.get_with(&probe, |v| v.len()).unwrap().unwrap())
        })
    });
    g.bench_function("redb", |b| {
        b.iter(|| {
            let db = redb::Database::open(&redb_path).unwrap();
            let r = db.begin_read().unwrap();
            let t = r.open_table(T).unwrap();
            black_box(t.get(&probe[..]).unwrap().unwrap().value().len())
        })
    });
    g.bench_function("lmdb", |b| {
        b.iter(|| {
            let env = lmdb::open(dirs[2].path(), false).unwrap();
            let len = {
                let r = env.read_txn().unwrap();
                let db: heed::Database<Bytes, Bytes> =
                    env.open_database(&r, None).unwrap().unwrap();
                db.get(&r, &probe).unwrap().unwrap().len()
            };
            env.prepare_for_closing().wait();
            black_box(len)
        })
    });
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            let sq = rusqlite::Connection::open(&sqlite_path).unwrap();
            let len: i64 = sq
                .query_row("SELECT length(v) FROM kv WHERE k = ?1", [&probe[..]], |r| {
                    r.get(0)
                })
                .unwrap();
            black_box(len)
        })
    });
    g.finish();
}

fn main() {
    let n = bench_n();
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    open(&mut c, n);
    let mut s = load(n);
    gets(&mut c, &s, n, true);
    gets(&mut c, &s, n, false);
    puts(&mut c, &mut s, n);
    drop(s);
    durable(&mut c);
    c.final_summary();
}

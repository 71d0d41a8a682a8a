//! Every backend against a model `lru_cache`: random sequences of gets,
//! puts, removes and clears on a namespace with a small maxsize give the
//! same results, entry counts and counters as the model.

use std::sync::Arc;

use picocache::{Backend, Limits, Namespace};
use picocache_tests::{fresh, unique_prefix};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Get(u8),
    Put(u8, u8),
    Remove(u8),
    GetMany(Vec<u8>),
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..8u8).prop_map(Op::Get),
        4 => (0..8u8, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => (0..8u8).prop_map(Op::Remove),
        1 => prop::collection::vec(0..8u8, 0..4).prop_map(Op::GetMany),
        1 => Just(Op::Clear),
    ]
}

/// The model: keys most recently used last.
#[derive(Default)]
struct Model {
    order: Vec<(u8, u8)>,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl Model {
    fn get(&mut self, k: u8) -> Option<u8> {
        match self.order.iter().position(|e| e.0 == k) {
            Some(i) => {
                let e = self.order.remove(i);
                self.order.push(e);
                self.hits += 1;
                Some(e.1)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }
    fn put(&mut self, k: u8, v: u8, maxsize: usize) {
        self.order.retain(|e| e.0 != k);
        self.order.push((k, v));
        while self.order.len() > maxsize {
            self.order.remove(0);
            self.evictions += 1;
        }
    }
}

const MAXSIZE: usize = 4;

fn key(k: u8) -> Vec<u8> {
    vec![b'k', k]
}

fn run(ns: &dyn Namespace, ops: &[Op]) -> Result<(), TestCaseError> {
    ns.clear().unwrap();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Get(k) => {
                let got = ns.get(&key(*k)).unwrap();
                prop_assert_eq!(got, m.get(*k).map(|v| vec![v]), "get {}", k);
            }
            Op::Put(k, v) => {
                ns.put(&key(*k), &[*v], None).unwrap();
                m.put(*k, *v, MAXSIZE);
            }
            Op::Remove(k) => {
                let had = m.order.iter().any(|e| e.0 == *k);
                m.order.retain(|e| e.0 != *k);
                prop_assert_eq!(ns.remove(&key(*k)).unwrap(), had, "remove {}", k);
            }
            Op::GetMany(ks) => {
                let keys: Vec<Vec<u8>> = ks.iter().map(|k| key(*k)).collect();
                let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                let got = ns.get_many(&refs).unwrap();
                let want: Vec<Option<Vec<u8>>> =
                    ks.iter().map(|k| m.get(*k).map(|v| vec![v])).collect();
                prop_assert_eq!(got, want, "get_many {:?}", ks);
            }
            Op::Clear => {
                ns.clear().unwrap();
                m = Model::default();
            }
        }
    }
    let s = ns.stats().unwrap();
    prop_assert_eq!(s.entries, m.order.len() as u64, "entries");
    prop_assert_eq!(
        (s.hits, s.misses, s.evictions),
        (m.hits, m.misses, m.evictions),
        "counters"
    );
    Ok(())
}

fn check(backend: Arc<dyn Backend>, cases: u32) {
    let ns = fresh(
        &*backend,
        &unique_prefix("model"),
        Limits::maxsize(Some(MAXSIZE as u64)),
    );
    let config = ProptestConfig {
        cases,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in prop::collection::vec(op(), 1..60))| {
        run(&*ns, &ops)?;
    });
}

fn server(var: &str) -> Option<Arc<dyn Backend>> {
    let kind = match var {
        "PICOCACHE_REDIS_URL" => "redis",
        "PICOCACHE_POSTGRES_URL" => "postgresql",
        _ => "mysql",
    };
    let url = picocache_tests::server_url(kind)?;
    Some(picocache::open(&url).unwrap())
}

#[test]
fn model_local() {
    let dir = tempfile::tempdir().unwrap();
    check(
        picocache::open(&format!("local://{}", dir.path().display())).unwrap(),
        64,
    );
}

#[test]
fn model_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check(
        picocache::open(&format!("sqlite:///{}/m.db", dir.path().display())).unwrap(),
        48,
    );
}

#[test]
fn model_redis() {
    if let Some(b) = server("PICOCACHE_REDIS_URL") {
        check(b, 48);
    }
}

#[test]
fn model_postgresql() {
    if let Some(b) = server("PICOCACHE_POSTGRES_URL") {
        check(b, 24);
    }
}

#[test]
fn model_mysql() {
    if let Some(b) = server("PICOCACHE_MYSQL_URL") {
        check(b, 24);
    }
}

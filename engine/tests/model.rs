//! A proptest state machine: the engine against a model of `functools.lru_cache`
//! (a map plus a recency list per namespace), over put, get, remove, clear,
//! reopen, compaction and index rebuilds, checking every value and eviction,
//! and the `Located` tokens that `put_located` returns: each confirms (by
//! `hit_located` or a `Watch`, counted as a hit) exactly while the model
//! holds the value it stored.

use std::collections::HashMap;

use picocache_engine::{Limits, Located, Namespace, Options, Store};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8, u16),
    Get(u8, u8),
    /// A memoized call: get, and on a miss put (what `lru_cache` does).
    Call(u8, u8),
    Remove(u8, u8),
    /// Confirms the token of the key's last `put_located`, if any.
    Confirm(u8, u8),
    Clear(u8),
    Reopen,
    Compact,
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2u8, 0..12u8, any::<u16>()).prop_map(|(n, k, v)| Op::Put(n, k, v)),
        6 => (0..2u8, 0..12u8).prop_map(|(n, k)| Op::Get(n, k)),
        8 => (0..2u8, 0..12u8).prop_map(|(n, k)| Op::Call(n, k)),
        1 => (0..2u8, 0..12u8).prop_map(|(n, k)| Op::Remove(n, k)),
        4 => (0..2u8, 0..12u8).prop_map(|(n, k)| Op::Confirm(n, k)),
        1 => (0..2u8).prop_map(Op::Clear),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
        1 => Just(Op::Rebuild),
    ]
}

/// One namespace of the model: most recent last.
#[derive(Default, Debug)]
struct ModelNs {
    order: Vec<u8>,
    values: HashMap<u8, Vec<u8>>,
    hits: u64,
    misses: u64,
}

impl ModelNs {
    fn touch(&mut self, k: u8) {
        self.order.retain(|&x| x != k);
        self.order.push(k);
    }
    fn put(&mut self, k: u8, v: Vec<u8>, maxsize: usize) -> Vec<u8> {
        self.values.insert(k, v);
        self.touch(k);
        let mut evicted = Vec::new();
        while self.order.len() > maxsize {
            let victim = self.order.remove(0);
            self.values.remove(&victim);
            evicted.push(victim);
        }
        evicted
    }
}

fn value(k: u8, v: u16) -> Vec<u8> {
    // Values of several lengths, self-describing.
    let mut out = vec![k, (v & 0xff) as u8, (v >> 8) as u8];
    // Up to ~900 bytes, so the 4 KiB segments roll often.
    out.resize(3 + (v as usize % 60) * 15, k ^ 0x5a);
    out
}

/// Tokens of `put_located` per namespace and key, each with whether it
/// must confirm (its record is the key's live entry in the model) or must
/// not (stale). A live token whose fate the model cannot tell (after a
/// compaction, which may or may not move the record) is dropped.
type Tokens = [HashMap<u8, (Located, bool)>; 2];

fn stale(tokens: &mut HashMap<u8, (Located, bool)>, keys: impl IntoIterator<Item = u8>) {
    for k in keys {
        if let Some(t) = tokens.get_mut(&k) {
            t.1 = false;
        }
    }
}

/// Puts `val` under key `k` of `ns`, by `put_located` when `located` (its
/// token, checked against a peek's, is kept), else by `put`; mirrored in
/// the model, whose evictions make tokens stale.
fn put(
    ns: &Namespace,
    m: &mut ModelNs,
    tokens: &mut HashMap<u8, (Located, bool)>,
    k: u8,
    val: Vec<u8>,
    maxsize: usize,
    located: bool,
) {
    stale(tokens, [k]);
    if located {
        let at = ns.put_located(&[k], &val, None).unwrap().expect("stored");
        let peeked = ns.peek_located(&[k], |v, at| (v.to_vec(), at)).unwrap();
        assert_eq!(peeked, Some((val.clone(), at)), "put_located token of {k}");
        tokens.insert(k, (at, true));
    } else {
        ns.put(&[k], &val).unwrap();
    }
    let evicted = m.put(k, val, maxsize);
    stale(tokens, evicted);
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        Options::default()
            .background_compaction(false)
            .segment_size(4096),
    )
    .unwrap()
}

fn run(ops: Vec<Op>, maxsizes: [usize; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let limits = |i: usize| Limits::maxsize(Some(maxsizes[i] as u64));
    let mut model: [ModelNs; 2] = Default::default();
    // Every value ever written per key: after an index rebuild, anything the
    // store returns must be the latest value written for that key.
    let mut latest: [HashMap<u8, Vec<u8>>; 2] = Default::default();
    let mut tokens: Tokens = Default::default();
    for op in ops {
        let nss: Vec<_> = (0..2)
            .map(|i| store.namespace(&format!("ns{i}"), limits(i)).unwrap())
            .collect();
        match op {
            Op::Put(n, k, v) => {
                let (n, val) = (n as usize, value(k, v));
                let located = v % 2 == 0;
                let (m, t) = (&mut model[n], &mut tokens[n]);
                put(&nss[n], m, t, k, val.clone(), maxsizes[n], located);
                latest[n].insert(k, val);
            }
            Op::Get(n, k) | Op::Call(n, k) => {
                let n = n as usize;
                let got = nss[n].get(&[k]).unwrap();
                let want = model[n].values.get(&k).cloned();
                assert_eq!(got, want, "get ns{n} key {k}");
                if want.is_some() {
                    model[n].touch(k);
                    model[n].hits += 1;
                } else {
                    model[n].misses += 1;
                    if matches!(op, Op::Call(..)) {
                        // A memoizer's miss: stored, located.
                        let val = value(k, k as u16 * 31);
                        let (m, t) = (&mut model[n], &mut tokens[n]);
                        put(&nss[n], m, t, k, val.clone(), maxsizes[n], true);
                        latest[n].insert(k, val);
                    }
                }
            }
            Op::Remove(n, k) => {
                let n = n as usize;
                let was = nss[n].remove(&[k]).unwrap();
                assert_eq!(was, model[n].values.remove(&k).is_some());
                model[n].order.retain(|&x| x != k);
                latest[n].remove(&k);
                stale(&mut tokens[n], [k]);
            }
            Op::Confirm(n, k) => {
                let n = n as usize;
                if let Some(&(at, live)) = tokens[n].get(&k) {
                    // By key, or by a watch (on the current index).
                    let got = if k % 2 == 0 {
                        nss[n].hit_located(nss[n].key_hash(&[k]), &at).unwrap()
                    } else {
                        nss[n].watch().unwrap().hit(&at)
                    };
                    assert_eq!(got, live, "token of ns{n} key {k}");
                    if live {
                        model[n].touch(k);
                        model[n].hits += 1;
                    }
                }
            }
            Op::Clear(n) => {
                let n = n as usize;
                nss[n].clear().unwrap();
                model[n] = ModelNs::default();
                latest[n].clear();
                stale(&mut tokens[n], 0..12);
            }
            Op::Reopen => {
                drop(nss);
                drop(store);
                store = open(dir.path());
                for t in &mut tokens {
                    t.retain(|_, (_, live)| !*live);
                }
                continue;
            }
            Op::Compact => {
                store.compact().unwrap();
                for t in &mut tokens {
                    t.retain(|_, (_, live)| !*live);
                }
            }
            Op::Rebuild => {
                drop(nss);
                drop(store);
                std::fs::remove_file(dir.path().join("index")).unwrap();
                store = open(dir.path());
                // A new lineage: no token confirms.
                for t in &mut tokens {
                    stale(t, 0..12);
                }
                // Recency is not logged, so after a rebuild the order is the
                // order of the puts, and entries evicted earlier may return.
                // Re-sync the model with what the store holds, checking that
                // each value is the latest one written for its key.
                for n in 0..2 {
                    let ns = store.namespace(&format!("ns{n}"), limits(n)).unwrap();
                    let keys = ns.keys().unwrap();
                    assert!(keys.len() <= maxsizes[n]);
                    let mut m = ModelNs::default();
                    for (k, _) in keys.iter().rev() {
                        let k = k[0];
                        let v = ns.get(&[k]).unwrap().expect("listed key readable");
                        assert_eq!(Some(&v), latest[n].get(&k), "rebuilt value of key {k}");
                        m.values.insert(k, v);
                        m.order.push(k);
                    }
                    // The gets above were hits that moved keys: mirror them.
                    let st = ns.stats().unwrap();
                    m.hits = st.hits;
                    m.misses = st.misses;
                    model[n] = m;
                }
                continue;
            }
        }
        for n in 0..2 {
            let st = nss[n].stats().unwrap();
            assert_eq!(
                st.entries as usize,
                model[n].values.len(),
                "entries of ns{n}"
            );
        }
    }
    // Final: contents equal, in every namespace.
    for (n, m) in model.iter().enumerate() {
        let ns = store.namespace(&format!("ns{n}"), limits(n)).unwrap();
        let listed: Vec<u8> = ns.keys().unwrap().iter().map(|(k, _)| k[0]).collect();
        let mru_first: Vec<u8> = m.order.iter().rev().copied().collect();
        assert_eq!(listed, mru_first, "keys() of ns{n}, most recent first");
        for k in 0..12u8 {
            assert_eq!(
                ns.get(&[k]).unwrap(),
                m.values.get(&k).cloned(),
                "final ns{n} {k}"
            );
        }
    }
    let rep = store.verify().unwrap();
    assert!(rep.is_ok(), "{rep:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_lru_model(ops in prop::collection::vec(op(), 1..160), a in 1usize..6, b in 1usize..13) {
        run(ops, [a, b]);
    }
}

/// The eviction order is exactly `functools.lru_cache`'s on a long random
/// sequence of memoized calls within one process.
#[test]
fn eviction_order_matches_lru_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ns = store.namespace("f", Limits::maxsize(Some(8))).unwrap();
    let mut model = ModelNs::default();
    let mut x: u64 = 0x1234_5678;
    let (mut hits, mut misses) = (0, 0);
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = (x % 24) as u8;
        match ns.get(&[k]).unwrap() {
            Some(v) => {
                assert_eq!(Some(&v), model.values.get(&k));
                model.touch(k);
                hits += 1;
            }
            None => {
                assert!(
                    !model.values.contains_key(&k),
                    "engine missed key {k} that lru_cache holds"
                );
                ns.put(&[k], &[k]).unwrap();
                model.put(k, vec![k], 8);
                misses += 1;
            }
        }
    }
    let st = ns.stats().unwrap();
    assert_eq!((st.hits, st.misses, st.entries), (hits, misses, 8));
    assert_eq!(st.evictions, misses - 8);
}

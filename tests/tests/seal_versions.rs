//! The seal's versions on every backend (issue 18): new entries are sealed
//! with keyed BLAKE3 (format byte 0xA8) and every tampering with one is a
//! miss; entries sealed with HMAC-SHA256 before (0xA7) still read; a value
//! put in parts reads back as the joined value. Local engine and SQLite
//! always, Redis, PostgreSQL and MySQL/MariaDB when their servers are up
//! (`bash tests/servers/start.sh`, then `source /tmp/picocache-servers/env.sh`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use picocache::memo::{encode, namespace_name};
use picocache::redis::{RedisBackend, RedisOptions};
use picocache::secret::SecretSource;
use picocache::sql::{SqlBackend, SqlOptions};
use picocache::{Backend, Limits, LocalBackend, Memo, SealedBackend, Secrets};
use picocache_tests::{server_url, unique_prefix};

fn stores(dir: &tempfile::TempDir) -> Vec<Arc<dyn Backend>> {
    let mut out: Vec<Arc<dyn Backend>> = vec![
        Arc::new(LocalBackend::open(dir.path().join("local")).unwrap()),
        Arc::new(
            SqlBackend::connect(
                &format!("sqlite:///{}", dir.path().join("c.db").display()),
                SqlOptions::default(),
            )
            .unwrap(),
        ),
    ];
    for kind in ["postgresql", "mysql"] {
        if let Some(url) = server_url(kind) {
            out.push(Arc::new(
                SqlBackend::connect(&url, SqlOptions::default()).unwrap(),
            ));
        }
    }
    if let Some(url) = server_url("redis") {
        let o = RedisOptions {
            prefix: unique_prefix("sealv"),
            ..RedisOptions::default()
        };
        out.push(Arc::new(RedisBackend::connect(&url, o).unwrap()));
    }
    out
}

/// A memoized `double` under a name of its own (persistent servers).
struct Double {
    name: String,
    memo: Memo,
    runs: AtomicU64,
}

impl Double {
    fn new(b: &Arc<dyn Backend>) -> Double {
        let name = unique_prefix("seal-versions");
        let memo = Memo::builder(&name)
            .version("1")
            .secrets([b"s1".to_vec()])
            .backend(b.clone())
            .build();
        Double {
            name,
            memo,
            runs: AtomicU64::new(0),
        }
    }

    fn call(&self, x: u64) -> u64 {
        self.memo.call(x, |x| {
            self.runs.fetch_add(1, Ordering::SeqCst);
            x * 2
        })
    }

    fn raw(&self, b: &Arc<dyn Backend>) -> Arc<dyn picocache::Namespace> {
        b.namespace(&namespace_name(&self.name, Some("1")), Limits::default())
            .unwrap()
    }

    fn ns_name(&self) -> String {
        namespace_name(&self.name, Some("1"))
    }
}

#[test]
fn version_1_entries_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Secrets::new(&[b"s1"]).unwrap();
    for b in stores(&dir) {
        let d = Double::new(&b);
        let key = encode(&21u64).unwrap();
        // What picocache before issue 18 stored (a value the function never
        // returns, to tell a read from a run).
        // Its value: the bincode bytes alone (as a key's before the shape
        // digest that now ends a key).
        let mut old_value = encode(&4242u64).unwrap();
        old_value.truncate(old_value.len() - 8);
        let v1 = secrets.seal_v1(&d.ns_name(), &key, &old_value);
        assert_eq!(v1[0], picocache::seal::FORMAT_V1);
        d.raw(&b).put(&key, &v1, None).unwrap();
        assert_eq!(d.call(21), 4242, "{}", b.kind());
        assert_eq!(d.runs.load(Ordering::SeqCst), 0, "{}", b.kind());
        assert_eq!(d.memo.stats().unwrap().rejected, 0, "{}", b.kind());
        // A version 1 entry with a flipped byte is a miss, and is replaced
        // by a version 2 one.
        let mut bad = v1.clone();
        *bad.last_mut().unwrap() ^= 1;
        d.raw(&b).put(&key, &bad, None).unwrap();
        assert_eq!(d.call(21), 42, "{}", b.kind());
        assert_eq!(d.runs.load(Ordering::SeqCst), 1, "{}", b.kind());
        let now = d.raw(&b).get(&key).unwrap().unwrap();
        assert_eq!(now[0], picocache::seal::FORMAT, "{}", b.kind());
    }
}

#[test]
fn version_2_entries_and_every_tampering_with_them() {
    let dir = tempfile::tempdir().unwrap();
    for b in stores(&dir) {
        let d = Double::new(&b);
        assert_eq!(d.call(7), 14);
        let key = encode(&7u64).unwrap();
        let good = d.raw(&b).get(&key).unwrap().unwrap();
        assert_eq!(good[0], 0xA8, "{}", b.kind());
        let mut runs = 1;
        let mut tampered: Vec<Vec<u8>> = (0..good.len())
            .map(|i| {
                let mut bad = good.clone();
                bad[i] ^= 0x40;
                bad
            })
            .collect();
        // Relabelled as version 1; one byte short; one more.
        let mut v1 = good.clone();
        v1[0] = 0xA7;
        tampered.push(v1);
        tampered.push(good[..good.len() - 1].to_vec());
        tampered.push([&good[..], &[0]].concat());
        for bad in tampered {
            d.raw(&b).put(&key, &bad, None).unwrap();
            assert_eq!(d.call(7), 14, "{}", b.kind());
            runs += 1;
            assert_eq!(d.runs.load(Ordering::SeqCst), runs, "{}", b.kind());
        }
        // The good entry hits again.
        d.raw(&b).put(&key, &good, None).unwrap();
        assert_eq!(d.call(7), 14);
        assert_eq!(d.runs.load(Ordering::SeqCst), runs, "{}", b.kind());
    }
}

#[test]
fn values_put_in_parts_read_back_joined() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..700_001u32).map(|i| (i * 13 + 5) as u8).collect();
    for b in stores(&dir) {
        let secrets = Arc::new(Secrets::new(&[b"s1"]).unwrap());
        let sealed = SealedBackend::new(b.clone(), secrets, SecretSource::Explicit);
        let ns = sealed
            .namespace(&unique_prefix("parts"), Limits::default())
            .unwrap();
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![],
            vec![b""],
            vec![b"one"],
            vec![&big],
            vec![b"\x00PCOOB1\n", b"", &big[..65_536], &big[65_536..]],
            big.chunks(77_777).collect(),
        ];
        for (i, parts) in cases.iter().enumerate() {
            let key = format!("k{i}");
            ns.put_parts(key.as_bytes(), parts, None).unwrap();
            assert_eq!(
                ns.get(key.as_bytes()).unwrap().unwrap(),
                parts.concat(),
                "{} case {i}",
                b.kind()
            );
            // Stored as the seal's head, then the joined value.
            let raw = b.namespace(ns.name(), Limits::default()).unwrap();
            let stored = raw.get(key.as_bytes()).unwrap().unwrap();
            assert_eq!(
                stored.len(),
                picocache::seal::OVERHEAD + parts.concat().len()
            );
            assert_eq!(stored[0], 0xA8);
        }
    }
}

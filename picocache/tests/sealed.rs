//! Sealed entries through `Memo`, on real local and SQLite stores: a value
//! planted with the raw backend (not through picocache) is never decoded,
//! whatever its bytes; the function's own result is returned and replaces
//! it; the rejection is counted; strict mode reports it; a rotation reads
//! the old secret's entries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use picocache::memo::{encode, namespace_name};
use picocache::seal::Rejection;
use picocache::{Backend, Error, Limits, LocalBackend, Memo, SqlBackend, SqlOptions};

fn stores(dir: &tempfile::TempDir) -> Vec<Arc<dyn Backend>> {
    vec![
        Arc::new(LocalBackend::open(dir.path().join("local")).unwrap()),
        Arc::new(
            SqlBackend::connect(
                &format!("sqlite:///{}", dir.path().join("c.db").display()),
                SqlOptions::default(),
            )
            .unwrap(),
        ),
    ]
}

fn memo(b: &Arc<dyn Backend>, secrets: &[&str], strict: bool) -> Memo {
    Memo::builder("sealed::double")
        .version("1")
        .secrets(secrets.iter().map(|s| s.as_bytes().to_vec()))
        .strict(strict)
        .backend(b.clone())
        .build()
}

/// Writes `bytes` under the key of `double(x)` with the raw backend.
fn plant(b: &Arc<dyn Backend>, x: u64, bytes: &[u8]) {
    let ns = b
        .namespace(
            &namespace_name("sealed::double", Some("1")),
            Limits::default(),
        )
        .unwrap();
    ns.put(&encode(&x).unwrap(), bytes, None).unwrap();
}

fn raw(b: &Arc<dyn Backend>, x: u64) -> Option<Vec<u8>> {
    let ns = b
        .namespace(
            &namespace_name("sealed::double", Some("1")),
            Limits::default(),
        )
        .unwrap();
    ns.get(&encode(&x).unwrap()).unwrap()
}

#[test]
fn planted_values_are_never_decoded_and_get_replaced() {
    let dir = tempfile::tempdir().unwrap();
    for b in stores(&dir) {
        let runs = AtomicU64::new(0);
        let m = memo(&b, &["s1"], false);
        let double = |x: u64| {
            m.call(x, |x| {
                runs.fetch_add(1, Ordering::SeqCst);
                x * 2
            })
        };
        // A well-formed bincode u64 the application never computed.
        plant(&b, 21, &encode(&999u64).unwrap());
        assert_eq!(double(21), 42, "{}", b.kind());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(m.stats().unwrap().rejected, 1, "{}", b.kind());
        // Replaced by a sealed entry: the next call hits.
        assert_eq!(double(21), 42);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{}", b.kind());
        // Every flipped byte of the sealed entry is a miss, never a value.
        let good = raw(&b, 21).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x55;
            plant(&b, 21, &bad);
            assert_eq!(double(21), 42, "{} byte {i}", b.kind());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1 + good.len() as u64);
        // Moving a valid entry to another key is caught too.
        plant(&b, 22, &good);
        assert_eq!(double(22), 44, "{}", b.kind());
    }
}

#[test]
fn strict_mode_reports_the_rejection() {
    let dir = tempfile::tempdir().unwrap();
    for b in stores(&dir) {
        let m = memo(&b, &["s1"], true);
        plant(&b, 5, &encode(&1u64).unwrap());
        match m.try_call(5u64, |x| x * 2) {
            Err(Error::Rejected { reason, .. }) => assert_eq!(reason, Rejection::Unsigned),
            other => panic!("{}: expected Rejected, got {other:?}", b.kind()),
        }
    }
}

#[test]
fn another_secret_is_a_miss_and_a_rotation_reads_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    for b in stores(&dir) {
        let runs = AtomicU64::new(0);
        let call = |m: &Memo, x: u64| {
            m.call(x, |x| {
                runs.fetch_add(1, Ordering::SeqCst);
                x * 2
            })
        };
        let old = memo(&b, &["old"], false);
        assert_eq!(call(&old, 1), 2);
        assert_eq!(call(&old, 2), 4);
        // A machine with another secret: a miss, with the reason.
        let other = memo(&b, &["other"], true);
        match other.try_call(1u64, |x| x * 2) {
            Err(Error::Rejected { reason, .. }) => assert_eq!(reason, Rejection::OtherSecret),
            r => panic!("{}: expected Rejected, got {r:?}", b.kind()),
        }
        // Rotated: new first, old still accepted.
        let rotated = memo(&b, &["new", "old"], false);
        assert_eq!(call(&rotated, 2), 4);
        assert_eq!(runs.load(Ordering::SeqCst), 2, "{}", b.kind());
        assert_eq!(other.stats().unwrap().rejected, 1, "{}", b.kind());
        // The local engine counts for every process and handle; the other
        // backends count in the handle that saw it.
        let expected = u64::from(b.kind() == "local");
        assert_eq!(rotated.stats().unwrap().rejected, expected, "{}", b.kind());
    }
}

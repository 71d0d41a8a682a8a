//! `Options::inspect_only`: a store opened for inspection never changes a
//! file; an index that would need a rebuild is `Error::NeedsRepair`.

use std::path::Path;

use picocache_engine::{Error, Limits, Options, Store};

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    v.sort();
    v
}

fn inspect(dir: &Path) -> picocache_engine::Result<Store> {
    Store::open(dir, Options::default().inspect_only(true))
}

#[test]
fn a_sound_store_is_read_without_a_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let ns = store.namespace("n", Limits::maxsize(Some(10))).unwrap();
        ns.put(b"k", b"v").unwrap();
        store.sync().unwrap();
    }
    let before = snapshot(dir.path());
    let store = inspect(dir.path()).unwrap();
    assert!(store.is_read_only());
    assert_eq!(store.stats().unwrap().entries, 1);
    assert!(store.verify().unwrap().is_ok());
    let ns = store.existing_namespace("n").unwrap().unwrap();
    assert_eq!(ns.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(ns.keys().unwrap().len(), 1);
    assert!(matches!(ns.put(b"a", b"b"), Err(Error::ReadOnly { .. })));
    drop((ns, store));
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_garbage_index_needs_repair_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let ns = store.namespace("n", Limits::maxsize(Some(10))).unwrap();
        ns.put(b"k", b"v").unwrap();
    }
    let len = std::fs::metadata(dir.path().join("index")).unwrap().len();
    std::fs::write(dir.path().join("index"), vec![0x5Au8; len as usize]).unwrap();
    let before = snapshot(dir.path());
    let e = inspect(dir.path()).unwrap_err();
    assert!(matches!(e, Error::NeedsRepair { .. }), "{e}");
    assert!(e.to_string().contains("picocache repair"), "{e}");
    assert_eq!(snapshot(dir.path()), before);
    // A garbage directory without a lock file: nothing is created.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("index"), b"garbage").unwrap();
    let before = snapshot(other.path());
    assert!(matches!(
        inspect(other.path()),
        Err(Error::NeedsRepair { .. })
    ));
    assert_eq!(snapshot(other.path()), before);
    // A missing directory is not created.
    let missing = other.path().join("missing");
    assert!(inspect(&missing).is_err());
    assert!(!missing.exists());
}

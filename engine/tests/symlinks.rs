//! Symbolic links planted at a store's file names (by a member of the group
//! of a store with `group_access`, or by mistake) are never written
//! through: the file a link points to keeps its bytes, whatever the store
//! does; the store either works around the link (a temporary name, the
//! reserve: the link is removed) or fails with an error naming it.
//! (Before: a link at `seg-XXXXXXXX.tmp` had its target truncated and
//! turned into a segment at the next roll, and one at `reserve` had its
//! target padded with zeros at every open: `adversarial_session25.rs`.)

use std::path::Path;

use picocache_engine::{Limits, Options, Store};

fn opts() -> Options {
    Options::default()
        .segment_size(64 << 10)
        .background_compaction(false)
}

fn fill(store: &Store, n: u32) {
    let ns = store.namespace("f", Limits::default()).unwrap();
    let value = vec![7u8; 4000];
    for i in 0..n {
        ns.put(format!("k{i}").as_bytes(), &value).unwrap();
    }
}

/// Every regular file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_link_at_a_segment_name_to_another_stores_segment_is_never_written() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let sa = Store::open(&a, opts()).unwrap();
    fill(&sa, 40);
    drop(sa);
    let before = snapshot(&a);
    drop(Store::open(&b, opts()).unwrap());
    // Links at ids past b's own, to each of a's segments.
    let mut planted = 0;
    for (name, _) in &before {
        if let Some(id) = name
            .strip_prefix("seg-")
            .and_then(|r| r.strip_suffix(".log"))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
        {
            let link = b.join(format!("seg-{:08x}.log", id + 100));
            std::os::unix::fs::symlink(a.join(name), link).unwrap();
            planted += 1;
        }
    }
    assert!(planted >= 2, "{before:?}");
    match Store::open(&b, opts()) {
        Ok(sb) => {
            fill(&sb, 60);
            let ns = sb.namespace("f", Limits::default()).unwrap();
            ns.remove(b"k3").unwrap();
            sb.compact().unwrap();
            println!("b opened with the links");
        }
        Err(e) => {
            let msg = e.to_string();
            println!("b refused: {msg}");
            assert!(msg.contains("symbolic link"), "{msg}");
        }
    }
    assert!(
        snapshot(&a) == before,
        "a's files changed through b's links"
    );
}

#[test]
fn a_link_at_the_lock_or_the_index_is_refused_or_replaced_never_written() {
    for name in ["lock", "index", "leases"] {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("s");
        let s = Store::open(&dir, opts()).unwrap();
        fill(&s, 5);
        drop(s);
        let victim = root.path().join("victim");
        let bytes = vec![0xabu8; 100_000];
        std::fs::write(&victim, &bytes).unwrap();
        let _ = std::fs::remove_file(dir.join(name)); // (leases is made at the first lease)
        std::os::unix::fs::symlink(&victim, dir.join(name)).unwrap();
        match Store::open(&dir, opts()) {
            Ok(s) => {
                fill(&s, 30);
                let ns = s.namespace("f", Limits::default()).unwrap();
                let _ = ns.lease(b"k1", std::time::Duration::ZERO);
                assert_eq!(ns.get(b"k1").unwrap().map(|v| v.len()), Some(4000));
                println!("{name}: opened");
            }
            Err(e) => {
                let msg = e.to_string();
                println!("{name}: refused: {msg}");
                assert!(msg.contains("symbolic link"), "{name}: {msg}");
            }
        }
        assert!(
            std::fs::read(&victim).unwrap() == bytes,
            "{name}: the link's target was written"
        );
    }
}

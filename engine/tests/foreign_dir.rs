//! A directory of the user's is never taken over: opening a store in an
//! existing directory that is not a store and holds a file under a name the
//! store writes or deletes (`index`, `reserve`, `seg-XXXXXXXX.log`) fails
//! with `Error::InvalidArgument` and leaves every file as it was. (It
//! overwrote a user's `index` with a fresh index before.) A store's own
//! damaged index is still rebuilt from its log.

use picocache_engine::{Error, Limits, Options, Store};

fn opts() -> Options {
    Options::default().background_compaction(false)
}

#[test]
fn a_users_file_under_a_stores_name_is_refused_and_kept() {
    for name in ["index", "reserve", "seg-00000001.log"] {
        let dir = tempfile::tempdir().unwrap();
        let mine = format!("my precious notes, kept in a file named {name}\n");
        std::fs::write(dir.path().join(name), &mine).unwrap();
        std::fs::write(dir.path().join("other.txt"), b"more").unwrap();
        let got = Store::open(dir.path(), opts());
        match got {
            Err(Error::InvalidArgument(why)) => {
                assert!(
                    why.contains(name) && why.contains("not a PicoCache store"),
                    "{why}"
                )
            }
            Err(e) => panic!("{name}: {e}"),
            Ok(_) => panic!("{name}: a user's directory was opened as a store"),
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join(name)).unwrap(),
            mine
        );
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![name.to_string(), "other.txt".to_string()];
        want.sort();
        assert_eq!(left, want, "{name}: nothing created");
    }
}

#[test]
fn a_directory_with_other_files_becomes_a_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("f", Limits::default()).unwrap();
    ns.put(b"k", b"v").unwrap();
    drop((ns, s));
    assert_eq!(
        std::fs::read(dir.path().join("notes.txt")).unwrap(),
        b"mine"
    );
}

#[test]
fn a_stores_damaged_index_is_rebuilt_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        let ns = s.namespace("f", Limits::default()).unwrap();
        ns.put(b"k", b"v").unwrap();
        s.sync().unwrap();
    }
    std::fs::write(dir.path().join("index"), b"garbage where the index was").unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("f", Limits::default()).unwrap();
    assert_eq!(ns.get(b"k").unwrap(), Some(b"v".to_vec()));
}

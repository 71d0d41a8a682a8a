//! `Locate::put_located` (issue 16) through a sealed local namespace, as
//! memoizers use it: the value is sealed and stored, and the token returned
//! is the sealed record's: it confirms (by `confirm_located` and a `Watch`),
//! it equals the token a `read_located` of the key gives, which unseals the
//! value; it goes stale when the key is overwritten. `None` when the limits
//! keep the value out.

use std::sync::Arc;

use picocache::secret::SecretSource;
use picocache::{Backend, Limits, LocalBackend, Locate, Located, SealedBackend, Secrets};

fn sealed(dir: &std::path::Path) -> (Arc<dyn Backend>, SealedBackend) {
    let raw: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir).unwrap());
    let secrets = Arc::new(Secrets::new(&[b"put_located secret"]).unwrap());
    let sealed = SealedBackend::new(raw.clone(), secrets, SecretSource::Explicit);
    (raw, sealed)
}

/// The value and token a peek of `key` finds.
fn read(loc: &dyn Locate, key: &[u8]) -> Option<(Vec<u8>, Located)> {
    let mut got = None;
    loc.read_located(key, false, &mut |v, at| got = Some((v.to_vec(), at)))
        .unwrap();
    got
}

#[test]
fn the_token_of_a_sealed_put_confirms_and_reads_back_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, sealed) = sealed(dir.path());
    let ns = sealed.namespace("f", Limits::default()).unwrap();
    let loc = ns.locate().expect("a local namespace locates its records");

    let at = loc.put_located(b"k", b"value", None).unwrap().unwrap();
    assert_eq!(at.key_hash(), loc.key_hash(b"k"));
    assert_eq!(read(loc, b"k"), Some((b"value".to_vec(), at)));
    assert!(loc.confirm_located(&at).unwrap());
    assert!(loc.watch().unwrap().hit(&at));
    assert_eq!(ns.get(b"k").unwrap().unwrap(), b"value");
    // What is stored is the sealed value.
    let stored = raw
        .namespace("f", Limits::default())
        .unwrap()
        .get(b"k")
        .unwrap()
        .unwrap();
    assert_eq!(stored.len(), picocache::seal::OVERHEAD + b"value".len());
    assert_eq!(&stored[picocache::seal::OVERHEAD..], b"value");
    // Two confirmations and two gets (sealed, raw): four hits; the put and
    // the peek none.
    let st = ns.stats().unwrap();
    assert_eq!((st.hits, st.misses), (4, 0));

    // By parts, with a TTL.
    let parts = loc
        .put_parts_located(
            b"p",
            &[b"in ", b"parts"],
            Some(std::time::Duration::from_secs(60)),
        )
        .unwrap()
        .unwrap();
    assert_eq!(read(loc, b"p"), Some((b"in parts".to_vec(), parts)));
    assert!(loc.confirm_located(&parts).unwrap());

    // Overwritten (by a plain put): stale; the new token confirms.
    ns.put(b"k", b"other", None).unwrap();
    assert!(!loc.confirm_located(&at).unwrap());
    assert!(!loc.watch().unwrap().hit(&at));
    let again = loc.put_located(b"k", b"value", None).unwrap().unwrap();
    assert_ne!(again, at);
    assert_eq!(read(loc, b"k"), Some((b"value".to_vec(), again)));
    // Removed: stale.
    assert!(ns.remove(b"k").unwrap());
    assert!(!loc.confirm_located(&again).unwrap());
}

#[test]
fn none_when_the_limits_keep_the_value_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_, sealed) = sealed(dir.path());
    let zero = sealed.namespace("zero", Limits::maxsize(Some(0))).unwrap();
    let loc = zero.locate().unwrap();
    assert_eq!(loc.put_located(b"k", b"v", None).unwrap(), None);
    assert_eq!(read(loc, b"k"), None);
    let small = Limits {
        max_bytes: Some(128),
        ..Limits::default()
    };
    let small = sealed.namespace("small", small).unwrap();
    let loc = small.locate().unwrap();
    assert_eq!(loc.put_located(b"k", &[0; 500], None).unwrap(), None);
    assert!(loc.put_located(b"k", b"fits", None).unwrap().is_some());
}

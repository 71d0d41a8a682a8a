//! A `Memo` with a codec of its own (`picocache::core::codec`): keys and
//! values of a type without serde, stored as the codec makes them; bytes the
//! codec does not accept are a miss, never a wrong value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use picocache::core::codec::{KeyCodec, ValueCodec};
use picocache::{Backend, Error, LocalBackend, Memo};

/// A path-like key and a text value, as their UTF-8 bytes (no serde).
#[derive(Debug, Clone, PartialEq)]
struct Path(String);
#[derive(Debug, Clone, PartialEq)]
struct Text(String);

#[derive(Debug)]
struct Utf8;

impl KeyCodec<Path> for Utf8 {
    type Error = Error;
    fn encode_key(&self, p: &Path) -> Result<Vec<u8>, Error> {
        Ok(p.0.as_bytes().to_vec())
    }
}

impl ValueCodec<Text> for Utf8 {
    type Error = Error;
    fn encode_value(&self, t: &Text) -> Result<Vec<u8>, Error> {
        Ok(t.0.as_bytes().to_vec())
    }
    fn decode_value(&self, b: &[u8]) -> Result<Text, Error> {
        String::from_utf8(b.to_vec())
            .map(Text)
            .map_err(|e| Error::InvalidArgument(format!("not UTF-8: {e}")))
    }
}

#[test]
fn a_memo_with_its_own_codec_stores_what_the_codec_makes() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let memo = Memo::builder("t::codec")
        .backend(backend)
        .codec(Utf8)
        .build();
    let runs = AtomicU64::new(0);
    let read = |p: &str| {
        memo.call(Path(p.into()), |p| {
            runs.fetch_add(1, Ordering::SeqCst);
            Text(format!("contents of {}", p.0))
        })
    };
    assert_eq!(read("/a"), Text("contents of /a".into()));
    assert_eq!(read("/a"), Text("contents of /a".into()));
    assert_eq!(read("/b"), Text("contents of /b".into()));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let info = memo.cache_info();
    assert_eq!((info.hits, info.misses, info.currsize), (1, 2, 2));
    // The store holds the codec's bytes under the codec's key.
    let ns = memo.namespace().unwrap();
    assert_eq!(
        ns.get(b"/a").unwrap().as_deref(),
        Some(&b"contents of /a"[..])
    );

    // Bytes the codec rejects (another program's, say) are a miss: the
    // function runs, and its value replaces them.
    ns.put(b"/c", &[0xff, 0xfe], None).unwrap();
    assert_eq!(read("/c"), Text("contents of /c".into()));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(
        ns.get(b"/c").unwrap().as_deref(),
        Some(&b"contents of /c"[..])
    );
}

#[test]
fn the_default_codec_is_bincode_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    let memo = Memo::builder("t::default").backend(backend).build();
    assert_eq!(memo.call((2u32, "x"), |(n, s)| s.repeat(n as usize)), "xx");
    let key = picocache::memo::encode(&(2u32, "x")).unwrap();
    let stored = memo.namespace().unwrap().get(&key).unwrap().unwrap();
    assert_eq!(picocache::memo::decode::<String>(&stored).unwrap(), "xx");
}

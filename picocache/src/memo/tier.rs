//! The in-process tier: results a [`Memo`](super::Memo) read from a store
//! that locates its records ([`Locate`], the local engine), kept in the
//! process as their encoded bytes, each with the token of the record it
//! came from.
//!
//! An entry is served only after the store confirms that its record is still
//! the key's live entry ([`Locate::confirm_located`], which also counts the
//! hit and refreshes recency in the shared index, as a read would). So a
//! value changed, removed, evicted, expired or cleared by any process is
//! never served from here, and a hit skips the copy of the record and the
//! check of its seal (made once, when the entry was read). The tier is
//! bounded: each shard starts over when it holds too many entries or bytes
//! (cheap, and hot keys come back at their next hit).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use picocache_engine::IdHasher;

use crate::backend::Located;

/// Shards of the tier (by key hash).
const SHARDS: usize = 16;
/// Most entries a shard holds before it starts over.
const SHARD_ENTRIES: usize = 4096;
/// Most key and value bytes a shard holds before it starts over.
const SHARD_BYTES: usize = 1 << 20;
/// Values larger than this are not kept (they would crowd out the rest).
const MAX_VALUE: usize = 64 << 10;

struct Entry {
    key: Box<[u8]>,
    at: Located,
    value: Arc<[u8]>,
}

#[derive(Default)]
struct Shard {
    /// By the store's key hash (xxh3 already: hashed as itself).
    map: HashMap<u64, Entry, IdHasher>,
    bytes: usize,
}

/// Encoded results by key, with the tokens of their records.
pub(super) struct Tier {
    shards: [Mutex<Shard>; SHARDS],
}

impl Tier {
    pub(super) fn new() -> Self {
        Tier {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
        }
    }

    fn shard(&self, h: u64) -> &Mutex<Shard> {
        &self.shards[(h >> 59) as usize % SHARDS]
    }

    /// The token and bytes kept for `key` (whose hash is `h`), unconfirmed.
    pub(super) fn get(&self, h: u64, key: &[u8]) -> Option<(Located, Arc<[u8]>)> {
        let shard = self.shard(h).lock();
        let e = shard.map.get(&h)?;
        (*e.key == *key).then(|| (e.at, e.value.clone()))
    }

    /// Keeps `value`, read for `key` from the record `at`.
    pub(super) fn insert(&self, key: &[u8], at: Located, value: &[u8]) {
        if value.len() > MAX_VALUE {
            return;
        }
        let bytes = key.len() + value.len() + 64;
        let h = at.key_hash();
        let mut shard = self.shard(h).lock();
        if shard.map.len() >= SHARD_ENTRIES || shard.bytes + bytes > SHARD_BYTES {
            shard.map.clear();
            shard.bytes = 0;
        }
        let entry = Entry {
            key: key.into(),
            at,
            value: value.into(),
        };
        shard.bytes += bytes;
        if let Some(old) = shard.map.insert(h, entry) {
            shard.bytes -= old.key.len() + old.value.len() + 64;
        }
    }

    /// Forgets the entry of the key whose hash is `h`.
    pub(super) fn remove(&self, h: u64) {
        let mut shard = self.shard(h).lock();
        if let Some(old) = shard.map.remove(&h) {
            shard.bytes -= old.key.len() + old.value.len() + 64;
        }
    }

    /// Forgets everything.
    pub(super) fn clear(&self) {
        for s in &self.shards {
            let mut s = s.lock();
            s.map.clear();
            s.bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn located(store: &picocache_engine::Namespace, key: &[u8]) -> Located {
        let at = store.get_located(key, |_, at| at).unwrap().unwrap();
        Located::engine(store.key_hash(key), at)
    }

    #[test]
    fn keeps_by_key_and_starts_over_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = picocache_engine::Store::open(dir.path(), picocache_engine::Options::default())
            .unwrap();
        let ns = store
            .namespace("t", picocache_engine::Limits::default())
            .unwrap();
        ns.put(b"k", b"v").unwrap();
        let tier = Tier::new();
        let at = located(&ns, b"k");
        tier.insert(b"k", at, b"v");
        let (_, v) = tier.get(at.key_hash(), b"k").unwrap();
        assert_eq!(&*v, b"v");
        // Another key with the same hash is not this entry.
        assert!(tier.get(at.key_hash(), b"other").is_none());
        tier.insert(b"k", at, &vec![0u8; MAX_VALUE + 1]); // too large: not kept
        assert_eq!(&*tier.get(at.key_hash(), b"k").unwrap().1, b"v");
        tier.remove(at.key_hash());
        assert!(tier.get(at.key_hash(), b"k").is_none());
        // A shard full of entries starts over instead of growing.
        for i in 0..(SHARD_ENTRIES * SHARDS * 2) as u32 {
            let key = i.to_le_bytes();
            ns.put(&key, b"x").unwrap();
            tier.insert(&key, located(&ns, &key), b"x");
        }
        let held: usize = tier.shards.iter().map(|s| s.lock().map.len()).sum();
        assert!(held <= SHARD_ENTRIES * SHARDS, "{held}");
        tier.clear();
        assert!(tier.shards.iter().all(|s| s.lock().map.is_empty()));
    }
}

//! Hashes: the index's key and namespace-name hashes, and the pass-through
//! hasher for maps keyed by hashes or small ids.

/// The key hash used by the index: xxh3 of the key, seeded by the namespace.
#[inline]
pub(crate) fn key_hash(ns: u32, key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, ns as u64 ^ 0x9e37_79b9_7f4a_7c15)
}

/// A `BuildHasher` for keys that are already hashes or small integers
/// (segment ids, xxh3 key hashes): they are hashed as themselves.
pub type IdHasher = std::hash::BuildHasherDefault<IdHash>;

/// The pass-through hasher behind [`IdHasher`]: `write_u32` and `write_u64`
/// keep the value as it is; other bytes are folded in.
#[derive(Default)]
pub struct IdHash(u64);

impl std::hash::Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ *b as u64;
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = n as u64;
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// xxh3 of a namespace name (stored in the index to check a row cheaply).
pub(crate) fn name_hash(name: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name)
}

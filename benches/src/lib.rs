//! Shared workload definitions for the benchmarks: deterministic keys and
//! values, so every store in a comparison sees the same bytes.

/// Key `i` (16 bytes).
pub fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    k
}

/// Value for key `i` (100 bytes).
pub fn value(i: u64) -> [u8; 100] {
    let mut v = [0u8; 100];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(j as u8);
    }
    v
}

/// A xorshift generator of key numbers below `n`.
pub struct Rng(pub u64);

impl Rng {
    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Entries in the engine benchmarks (`PICOCACHE_BENCH_N`, default 1,000,000).
pub fn bench_n() -> u64 {
    std::env::var("PICOCACHE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

#[allow(unsafe_code)]
pub mod lmdb {
    //! Opening LMDB (through heed), the one unsafe step of the benchmarks.

    use std::path::Path;

    /// Opens an LMDB environment at `path` with a 16 GiB map; `nosync` skips
    /// the fsync at each commit (LMDB's `MDB_NOSYNC`).
    pub fn open(path: &Path, nosync: bool) -> heed::Result<heed::Env> {
        let mut o = heed::EnvOpenOptions::new();
        o.map_size(16 << 30).max_dbs(1);
        if nosync {
            // SAFETY: MDB_NOSYNC only drops durability after an OS crash; the
            // benchmark never relies on it.
            unsafe {
                o.flags(heed::EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: heed requires that the environment is not opened twice in one
        // process and that its files are not modified by others while mapped;
        // each benchmark opens a fresh temporary directory exactly once.
        unsafe { o.open(path) }
    }
}

//! Typed access to the mmapped index file; its hash table and entry slots
//! are in [`table`], its per-namespace LRU lists in [`lru`].

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::format::{self, ent, hdr, nsr, segr, IndexLayout, LAST_USE_GRANULARITY_SECS};
use crate::sys::SharedMap;

pub(crate) mod lru;
pub(crate) mod table;

const R: Ordering = Ordering::Relaxed;
const ACQ: Ordering = Ordering::Acquire;
const REL: Ordering = Ordering::Release;

/// "No entry" in links and list heads (entries are stored as index + 1).
pub(crate) const NIL: u32 = u32::MAX;

/// An open index file.
pub(crate) struct IndexMap {
    pub(crate) map: SharedMap,
    pub(crate) layout: IndexLayout,
    pub(crate) path: PathBuf,
    /// (Last: the mapping is dropped first; see `closer`.)
    file: crate::closer::Closing,
}

fn header_crc(map: &SharedMap) -> u32 {
    let mut b = [0u8; 64];
    map.copy_out(0, &mut b);
    let mut h = crc32fast::Hasher::new();
    h.update(&b[0..12]);
    h.update(&b[16..64]);
    h.finalize()
}

/// Why an index file cannot be used (it is then rebuilt from the log).
#[derive(Debug)]
pub(crate) enum IndexProblem {
    Missing,
    Invalid(String),
    Io(io::Error),
}

impl IndexMap {
    /// Opens and validates `path`. Any problem means "rebuild".
    pub(crate) fn open(path: &Path) -> std::result::Result<IndexMap, IndexProblem> {
        IndexMap::open_mode(path, true)
    }

    /// Like [`IndexMap::open`]; `writable: false` maps the file read-only
    /// (a read-only store: no word of it may then be stored to).
    pub(crate) fn open_mode(
        path: &Path,
        writable: bool,
    ) -> std::result::Result<IndexMap, IndexProblem> {
        let map = |file: &File, len: usize| {
            if writable {
                SharedMap::map_rw(file, len)
            } else {
                SharedMap::map_ro(file, len)
            }
        };
        let file = match crate::files::open_existing(path, writable) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(IndexProblem::Missing),
            Err(e) => return Err(IndexProblem::Io(e)),
        };
        let len = file.metadata().map_err(IndexProblem::Io)?.len();
        if len < format::IDX_HEADER_LEN as u64 {
            return Err(IndexProblem::Invalid(format!(
                "index file is only {len} bytes"
            )));
        }
        let head = map(&file, format::IDX_HEADER_LEN).map_err(IndexProblem::Io)?;
        let mut magic = [0u8; 8];
        head.copy_out(hdr::MAGIC, &mut magic);
        if magic != format::INDEX_MAGIC {
            return Err(IndexProblem::Invalid("bad index magic".into()));
        }
        let w0 = head.u64_at(hdr::VERSION & !7).load(R);
        let version = (w0 & 0xffff_ffff) as u32;
        let crc = (w0 >> 32) as u32;
        if version != format::INDEX_VERSION {
            return Err(IndexProblem::Invalid(format!("index version {version}")));
        }
        if crc != header_crc(&head) {
            return Err(IndexProblem::Invalid("bad index header checksum".into()));
        }
        let buckets = head.u64_at(hdr::BUCKETS).load(R);
        let Some(layout) = IndexLayout::new(buckets) else {
            return Err(IndexProblem::Invalid(format!("bad bucket count {buckets}")));
        };
        if head.u64_at(hdr::ENTRIES).load(R) != layout.entries
            || head.u64_at(hdr::FILE_LEN).load(R) != layout.file_len as u64
        {
            return Err(IndexProblem::Invalid(
                "index header disagrees with its layout".into(),
            ));
        }
        if len < layout.file_len as u64 {
            return Err(IndexProblem::Invalid(format!(
                "index file is {len} bytes, its header says {}",
                layout.file_len
            )));
        }
        drop(head);
        let map = map(&file, layout.file_len).map_err(IndexProblem::Io)?;
        Ok(IndexMap {
            map,
            layout,
            path: path.to_owned(),
            file: crate::closer::Closing::new(file),
        })
    }

    /// Creates a new, empty index at `path` (which must not be in use), sized
    /// for `buckets` buckets, with blocks preallocated; `io` is told of the
    /// new file (nothing of it is durable until its first [`flush`]).
    ///
    /// [`flush`]: IndexMap::flush
    pub(crate) fn create(
        path: &Path,
        buckets: u64,
        generation: u64,
        modes: crate::files::Modes,
        io: &dyn crate::io::Io,
    ) -> Result<IndexMap> {
        let layout = IndexLayout::new(buckets)
            .ok_or_else(|| Error::InvalidArgument(format!("bad bucket count {buckets}")))?;
        let file = modes.open(path, true)?;
        crate::sys::preallocate(&file, 0, layout.file_len as u64)?;
        // Zeros written through the page cache: the map's first touch of each
        // page is then a minor fault, instead of a fault that converts an
        // unwritten extent (several times slower, and most of the cost of
        // growing a large index).
        let zeros = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < layout.file_len as u64 {
            let n = (layout.file_len as u64 - off).min(zeros.len() as u64) as usize;
            std::os::unix::fs::FileExt::write_all_at(&file, &zeros[..n], off)?;
            off += n as u64;
        }
        io.index_created(&file)?;
        let map = SharedMap::map_rw(&file, layout.file_len)?;
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&format::INDEX_MAGIC);
        b[8..12].copy_from_slice(&format::INDEX_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&generation.to_le_bytes());
        b[24..32].copy_from_slice(&buckets.to_le_bytes());
        b[32..40].copy_from_slice(&layout.entries.to_le_bytes());
        b[40..48].copy_from_slice(&(layout.file_len as u64).to_le_bytes());
        map.copy_in(0, &b);
        let crc = header_crc(&map);
        map.copy_in(hdr::CRC, &crc.to_le_bytes());
        let idx = IndexMap {
            map,
            layout,
            path: path.to_owned(),
            file: crate::closer::Closing::new(file),
        };
        for i in 0..format::MAX_NAMESPACES as u32 {
            idx.ns_set(i, nsr::LRU_HEAD, NIL as u64);
            idx.ns_set(i, nsr::LRU_TAIL, NIL as u64);
        }
        Ok(idx)
    }

    // ---- header ------------------------------------------------------------

    #[inline]
    /// `msync` of the whole map, then the I/O layer is told (the fault
    /// layer keeps these bytes as what survives a power loss).
    pub(crate) fn flush(&self, io: &dyn crate::io::Io) -> io::Result<()> {
        self.map.flush()?;
        io.index_flushed(&self.file)
    }

    /// `msync` of the header page only (its state word), then the I/O
    /// layer is told.
    pub(crate) fn flush_header(&self, io: &dyn crate::io::Io) -> io::Result<()> {
        self.map.flush_range(0, format::IDX_HEADER_LEN)?;
        io.index_range_flushed(&self.file, 0, format::IDX_HEADER_LEN as u64)
    }

    pub(crate) fn h(&self, off: usize) -> &AtomicU64 {
        self.map.u64_at(off)
    }
    #[inline]
    pub(crate) fn hget(&self, off: usize) -> u64 {
        self.h(off).load(ACQ)
    }
    #[inline]
    pub(crate) fn hset(&self, off: usize, v: u64) {
        self.h(off).store(v, REL)
    }
    /// Whether this index was replaced (another one is in place), or its
    /// map lost pages to a truncation by another program (it must then be
    /// rebuilt: see `sys::SharedMap::faulted`).
    pub(crate) fn retired(&self) -> bool {
        self.hget(hdr::RETIRED) != 0 || self.map.faulted()
    }

    // ---- namespaces --------------------------------------------------------

    #[inline]
    pub(crate) fn ns(&self, id: u32, field: usize) -> &AtomicU64 {
        debug_assert!((id as usize) < format::MAX_NAMESPACES);
        let id = (id as usize).min(format::MAX_NAMESPACES - 1);
        self.map
            .u64_at(self.layout.ns_off + id * format::NS_ROW_LEN + field)
    }
    #[inline]
    pub(crate) fn ns_get(&self, id: u32, field: usize) -> u64 {
        self.ns(id, field).load(ACQ)
    }
    #[inline]
    pub(crate) fn ns_set(&self, id: u32, field: usize, v: u64) {
        self.ns(id, field).store(v, REL)
    }
    /// Empties a namespace row's contents: its counters, expiry marks and
    /// LRU list (the name, limits, `CLEAR` and definition seqs and last use
    /// are the caller's).
    pub(crate) fn ns_reset_contents(&self, id: u32) {
        for f in [
            nsr::ENTRIES,
            nsr::LIVE_BYTES,
            nsr::EVICTIONS,
            nsr::HITS,
            nsr::MISSES,
            nsr::REJECTED,
            nsr::NEXT_EXPIRY,
            nsr::LAST_SWEEP,
        ] {
            self.ns_set(id, f, 0);
        }
        self.ns_set(id, nsr::LRU_HEAD, NIL as u64);
        self.ns_set(id, nsr::LRU_TAIL, NIL as u64);
    }
    pub(crate) fn ns_add(&self, id: u32, field: usize, d: u64) {
        self.ns(id, field).fetch_add(d, Ordering::AcqRel);
    }
    pub(crate) fn ns_sub(&self, id: u32, field: usize, d: u64) {
        let a = self.ns(id, field);
        a.store(a.load(ACQ).saturating_sub(d), REL);
    }

    /// The name stored in a namespace row (None for a free or damaged row).
    /// The name of namespace row `id`, as [`IndexMap::ns_set_name`] wrote
    /// it: read word by word through atomics, and returned only if its
    /// length and hash words are the same before and after and the bytes
    /// hash to them, so a name being rewritten by a writer at the same time
    /// is never returned half old, half new (the read is retried). `None`
    /// for a free row, or a row whose name and hash disagree (damage).
    pub(crate) fn ns_name(&self, id: u32) -> Option<Vec<u8>> {
        let base = self.layout.ns_off + id as usize * format::NS_ROW_LEN + nsr::NAME;
        for _ in 0..64 {
            let len = self.ns_get(id, nsr::NAME_LEN) as usize;
            let hash = self.ns_get(id, nsr::NAME_HASH);
            if len == 0 || len > format::MAX_NAME_LEN {
                return None;
            }
            let mut b = Vec::with_capacity(len.next_multiple_of(8));
            for i in 0..len.div_ceil(8) {
                let w = self.map.u64_at(base + i * 8).load(ACQ);
                b.extend_from_slice(&w.to_le_bytes());
            }
            b.truncate(len);
            if self.ns_get(id, nsr::NAME_HASH) == hash
                && self.ns_get(id, nsr::NAME_LEN) as usize == len
                && crate::name_hash(&b) == hash
            {
                return Some(b);
            }
            std::thread::yield_now();
        }
        None
    }

    /// Writes a namespace name (writer only): the bytes, then the hash,
    /// then the length, each word through an atomic store, since other
    /// processes may read the row at the same time ([`IndexMap::ns_name`]
    /// returns a name only when all three agree).
    pub(crate) fn ns_set_name(&self, id: u32, name: &[u8]) {
        let base = self.layout.ns_off + id as usize * format::NS_ROW_LEN + nsr::NAME;
        let mut padded = [0u8; format::MAX_NAME_LEN];
        padded[..name.len()].copy_from_slice(name);
        for (i, chunk) in padded.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.map
                .u64_at(base + i * 8)
                .store(u64::from_le_bytes(w), REL);
        }
        self.ns_set(id, nsr::NAME_HASH, crate::name_hash(name));
        self.ns_set(id, nsr::NAME_LEN, name.len() as u64);
    }

    // ---- segments ----------------------------------------------------------

    pub(crate) fn seg(&self, row: usize, field: usize) -> &AtomicU64 {
        let row = row.min(format::MAX_SEGMENTS - 1);
        self.map
            .u64_at(self.layout.seg_off + row * format::SEG_ROW_LEN + field)
    }

    /// The row holding segment `id`, if any.
    pub(crate) fn seg_row(&self, id: u32) -> Option<usize> {
        let row = id as usize % format::MAX_SEGMENTS;
        (id != 0 && self.seg(row, segr::ID).load(ACQ) == id as u64).then_some(row)
    }

    /// All (row, id) pairs in use.
    pub(crate) fn seg_rows(&self) -> Vec<(usize, u32)> {
        (0..format::MAX_SEGMENTS)
            .filter_map(|r| {
                let id = self.seg(r, segr::ID).load(R);
                (id != 0 && id <= u32::MAX as u64).then_some((r, id as u32))
            })
            .collect()
    }

    // ---- buckets and entries ----------------------------------------------

    #[inline]
    pub(crate) fn bucket(&self, i: u64) -> &AtomicU64 {
        let i = i & (self.layout.buckets - 1);
        self.map
            .u64_at(self.layout.bucket_off + i as usize * format::BUCKET_LEN)
    }

    /// The location word of bucket `i`.
    #[inline]
    pub(crate) fn bucket_loc(&self, i: u64) -> &AtomicU64 {
        let i = i & (self.layout.buckets - 1);
        self.map
            .u64_at(self.layout.bucket_off + i as usize * format::BUCKET_LEN + 8)
    }

    /// Entry field; `e` must be below the entry capacity (callers check).
    #[inline]
    pub(crate) fn e(&self, e: u32, field: usize) -> &AtomicU64 {
        let e = (e as u64).min(self.layout.entries - 1) as usize;
        self.map
            .u64_at(self.layout.entry_off + e * format::ENTRY_LEN + field)
    }
    #[inline]
    pub(crate) fn eget(&self, e: u32, field: usize) -> u64 {
        self.e(e, field).load(ACQ)
    }
    #[inline]
    pub(crate) fn eset(&self, e: u32, field: usize, v: u64) {
        self.e(e, field).store(v, REL)
    }
    pub(crate) fn valid_entry(&self, e: u32) -> bool {
        (e as u64) < self.layout.entries
    }

    pub(crate) fn links(&self, e: u32) -> (u32, u32) {
        let w = self.eget(e, ent::LINKS);
        (
            (w as u32).wrapping_sub(1),
            ((w >> 32) as u32).wrapping_sub(1),
        )
    }
    pub(crate) fn set_links(&self, e: u32, prev: u32, next: u32) {
        let w = (prev.wrapping_add(1) as u64) | ((next.wrapping_add(1) as u64) << 32);
        self.eset(e, ent::LINKS, w);
    }
    pub(crate) fn ns_size(&self, e: u32) -> (u32, u32) {
        let w = self.eget(e, ent::NS_SIZE);
        (w as u32, (w >> 32) as u32)
    }
}

pub(crate) fn buckets_for(entries: u64) -> u64 {
    (entries.saturating_mul(4) / 3 + 1)
        .next_power_of_two()
        .max(format::MIN_BUCKETS)
}

pub(crate) fn tmp_index_path(dir: &Path) -> std::path::PathBuf {
    dir.join(format!(
        "index.tmp.{}.{:x}",
        std::process::id(),
        random_generation()
    ))
}

pub(crate) fn random_generation() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    xxhash_rust::xxh3::xxh3_64(
        &[t.to_le_bytes(), (std::process::id() as u64).to_le_bytes()].concat(),
    )
}

/// A word of the index, named by where it is: what an error about a
/// contradiction in the index points at.
#[derive(Clone, Copy, Debug)]
pub(crate) enum At {
    /// A header word (its offset).
    Header(usize),
    /// A field of a namespace row.
    Ns(u32, usize),
    /// A field of an entry.
    Entry(u32, usize),
    /// A bucket (any position: it wraps like [`IndexMap::bucket`]).
    Bucket(u64),
}

impl IndexMap {
    /// The byte offset in the index file of the word `at`.
    pub(crate) fn offset_of(&self, at: At) -> u64 {
        let l = &self.layout;
        (match at {
            At::Header(off) => off,
            At::Ns(id, f) => {
                l.ns_off + (id as usize).min(format::MAX_NAMESPACES - 1) * format::NS_ROW_LEN + f
            }
            At::Entry(e, f) => {
                l.entry_off
                    + (e as u64).min(l.entries.saturating_sub(1)) as usize * format::ENTRY_LEN
                    + f
            }
            At::Bucket(i) => l.bucket_off + (i & (l.buckets - 1)) as usize * format::BUCKET_LEN,
        }) as u64
    }
}

/// An error for an index that contradicts itself (the writer then rebuilds
/// it): `at` is the word found wrong (or the one a wrong value came from).
pub(crate) fn corrupt(idx: &IndexMap, at: At, what: impl Into<String>) -> Error {
    Error::Corrupted {
        file: idx.path.clone(),
        offset: idx.offset_of(at),
        what: what.into(),
    }
}

/// `e` if it is an entry number in range; else an error pointing at `from`,
/// the word it was read from.
pub(crate) fn check_e(idx: &IndexMap, e: u32, from: At) -> Result<u32> {
    if idx.valid_entry(e) {
        Ok(e)
    } else {
        Err(corrupt(idx, from, format!("entry number {e} out of range")))
    }
}

/// Records a use of namespace `ns` at `now` (an open, a definition, a put).
pub(crate) fn touch(idx: &IndexMap, ns: u32, now: u64) {
    idx.ns(ns, nsr::LAST_USED).fetch_max(now, Ordering::AcqRel);
}

/// Records a use by a lookup: a load of the last use, and a store only when
/// it is more than [`LAST_USE_GRANULARITY_SECS`] behind `now`, so that hits
/// do not write to the namespace row.
#[inline]
pub(crate) fn touch_coarse(idx: &IndexMap, ns: u32, now: u64) {
    let w = idx.ns(ns, nsr::LAST_USED);
    if now
        > w.load(Ordering::Relaxed)
            .saturating_add(LAST_USE_GRANULARITY_SECS)
    {
        w.fetch_max(now, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Error::Corrupted` names the word that is wrong: a namespace's LRU
    /// head that names no entry is at 4096 (header) + row * 384 + 64
    /// (FORMAT.md, "Namespace row"); an entry's links at the entry array's
    /// offset + entry * 48 + 32. (The offset was always 0 before.)
    #[test]
    fn corrupted_gives_the_offset_of_the_wrong_word() {
        let dir = tempfile::tempdir().unwrap();
        let idx = IndexMap::create(
            &dir.path().join("index"),
            buckets_for(16),
            1,
            crate::files::Modes::new(false),
            &crate::io::RealIo,
        )
        .unwrap();
        let offset = |r: Result<()>| match r {
            Err(Error::Corrupted { offset, .. }) => offset,
            other => panic!("{other:?}"),
        };
        idx.ns_set(7, nsr::LRU_HEAD, 999_999);
        let got = offset(lru::lru_push_head(&idx, 7, 0));
        assert_eq!(got, 4096 + 7 * 384 + 64);
        // Entry 3 claims a predecessor out of range.
        idx.set_links(3, 999_999, NIL);
        let got = offset(lru::lru_unlink(&idx, 7, 3));
        assert_eq!(got, (idx.layout.entry_off + 3 * 48 + 32) as u64);
    }

    /// A reader never sees a name half rewritten: one thread renames a row
    /// back and forth between a long and a short name while another reads
    /// it (the bytes of the long name with the short length read as "aaa"
    /// before the reads were checked).
    #[test]
    fn ns_name_is_read_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let idx = IndexMap::create(
            &dir.path().join("index"),
            buckets_for(16),
            1,
            crate::files::Modes::new(false),
            &crate::io::RealIo,
        )
        .unwrap();
        let long = vec![b'a'; 100];
        let short = b"bcd".to_vec();
        idx.ns_set_name(5, &long);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (mut reads, mut torn) = (0u64, 0u64);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..200_000 {
                    idx.ns_set_name(5, if i % 2 == 0 { &short } else { &long });
                }
                stop.store(true, Ordering::Release);
            });
            while !stop.load(Ordering::Acquire) {
                if let Some(n) = idx.ns_name(5) {
                    reads += 1;
                    if n != long && n != short {
                        torn += 1;
                    }
                }
            }
        });
        assert_eq!(torn, 0, "{torn} torn names in {reads} reads");
    }
}

//! A base file, mapped read-only (FORMAT.md, "Version 2", "Base file",
//! "Reading", step 5): its header checks and the lookup of a key's cell.
//! The builder is in `base/build.rs`.
//!
//! A base is immutable once published, but its bytes are not trusted: every
//! offset and length read from a bucket is bounded by the bucket, every cell
//! is copied out of the map and checked by its checksum, namespace and full
//! key before any of it is used, and a heap record by its own checksum. A
//! damaged cell is a miss, never a wrong value; a damaged header is
//! [`Error::Corrupted`] at open. What a lookup does not check (the index's
//! dead bit, the namespace's `CLEAR` sequence number, the expiry against the
//! clock) is the caller's, as FORMAT.md's step 6 says.

// Wired into the store by build step 4 (index version 3 and the lookup).
#![cfg_attr(not(test), allow(dead_code))]

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::v2::{
    bh, bucket_offset, cell_len_from_head, cf, decode_cell, decode_heap_record,
    decode_lru_sections, decode_ns_section, fingerprint, fp_matches, heap_record_len, home_of,
    slot_offset, BaseHeader, CellBody, DirHead, HeaderFault, LruSection, NsRow, BASE_HEADER_LEN,
    BASE_VERSION, BUCKET_LEN, CELL_HDR, DIR_HDR, MAX_CELLS, PREFETCH_AFTER, PREFETCH_BEFORE,
    SLOT_LEN,
};
use crate::hash::key_hash;
use crate::sys::SharedMap;

pub mod build;

/// A mapped base file.
pub struct Base {
    /// (Before `_file`: the mapping goes first.)
    map: SharedMap,
    _file: File,
    header: BaseHeader,
    path: PathBuf,
}

impl std::fmt::Debug for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Base")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish()
    }
}

/// A cell found by [`Base::get`]: where its value lies in the caller's
/// buffer, and its optional fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The value's bytes in the buffer passed to the lookup.
    pub value: Range<usize>,
    /// Expiry, Unix ms.
    pub expiry_ms: Option<u64>,
    /// LRU ordinal (a cell of a namespace with limits).
    pub entry: Option<u32>,
    /// The stored bucket holding the cell.
    pub bucket: u64,
    /// The cell's slot in it (its bit in the bucket's dead word).
    pub slot: usize,
    /// Whether key and value came from the heap.
    pub heap: bool,
}

fn corrupted(path: &Path, offset: u64, what: impl Into<String>) -> Error {
    Error::Corrupted {
        file: path.to_owned(),
        offset,
        what: what.into(),
    }
}

/// Where a candidate cell lies.
#[derive(Clone, Copy)]
struct Slot {
    bucket: u64,
    slot: usize,
    /// The cell's offset in the file.
    at: usize,
    /// The most bytes it may take (to the bucket's `end`).
    max_len: usize,
}

/// Makes `buf` `len` bytes long, without zeroing bytes it already had
/// (the caller overwrites all of them).
#[inline]
fn set_len(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    } else {
        buf.truncate(len);
    }
}

impl Base {
    /// Opens and maps the base at `path`, checking its header: magic,
    /// checksum, version, layout, `id` (when `id` is given: the id its file
    /// name says) and that the file is at least `file_len` long.
    pub fn open(path: &Path, id: Option<u64>) -> Result<Base> {
        let file = crate::files::open_existing(path, false)?;
        let len = file.metadata()?.len();
        if len < BASE_HEADER_LEN as u64 {
            return Err(corrupted(path, len, "base file shorter than its header"));
        }
        let mut hb = [0u8; BASE_HEADER_LEN];
        file.read_exact_at(&mut hb, 0)?;
        let header = match BaseHeader::check(&hb) {
            Ok(h) => h,
            Err(HeaderFault::Bad(what, at)) => return Err(corrupted(path, at as u64, what)),
            Err(HeaderFault::Version(got)) => {
                return Err(Error::Version {
                    file: path.to_owned(),
                    expected: BASE_VERSION,
                    got,
                })
            }
        };
        if id.is_some_and(|id| id != header.id) {
            return Err(corrupted(
                path,
                bh::ID as u64,
                "base id differs from its file name",
            ));
        }
        if len < header.file_len {
            return Err(corrupted(path, len, "base file shorter than its file_len"));
        }
        let Ok(map_len) = usize::try_from(header.file_len) else {
            return Err(corrupted(
                path,
                bh::FILE_LEN as u64,
                "base too large to map",
            ));
        };
        let map = SharedMap::map_ro(&file, map_len)?;
        Ok(Base {
            map,
            _file: file,
            header,
            path: path.to_owned(),
        })
    }

    /// The checked header.
    pub fn header(&self) -> &BaseHeader {
        &self.header
    }

    /// True once a page of the map was lost to a foreign truncation (it
    /// then reads as zeros: misses).
    pub fn faulted(&self) -> bool {
        self.map.faulted()
    }

    /// Looks `key` of namespace `ns` up; see [`Base::get_hashed`].
    #[inline]
    pub fn get(&self, ns: u16, key: &[u8], buf: &mut Vec<u8>) -> Option<Found> {
        self.get_hashed(key_hash(ns as u32, key), ns, key, buf)
    }

    /// Looks up the cell of `key` in namespace `ns`, whose key hash is `h`
    /// (`hash::key_hash(ns, key)`). On a hit `buf` holds the checked cell
    /// (or heap record) and [`Found::value`] says where its value is. A
    /// cell that fails a check is skipped: damage is a miss.
    #[inline]
    pub fn get_hashed(&self, h: u64, ns: u16, key: &[u8], buf: &mut Vec<u8>) -> Option<Found> {
        let hd = &self.header;
        let fp = fingerprint(h);
        let home = home_of(h, hd.homes);
        // The cell's predicted place: fetch its lines while the directory
        // is on its way (FORMAT.md, "Reading", step 5).
        let mid = hd.pred_first as usize + fp as usize * hd.pred_span as usize / 256;
        let lo = mid.saturating_sub(PREFETCH_BEFORE);
        let hi = (mid + PREFETCH_AFTER).min(BUCKET_LEN);
        let at = bucket_offset(home) as usize;
        self.map.prefetch(at + lo, hi.saturating_sub(lo));
        let mut last = home;
        let mut b = home;
        while b <= last && b < hd.stored {
            let (found, reach) = self.probe_bucket(b, fp, ns, key, buf);
            if found.is_some() {
                return found;
            }
            if b == home {
                last = home + reach;
            }
            b += 1;
        }
        None
    }

    /// The slots of bucket `b` whose fingerprint is `fp`, each checked in
    /// full against `ns` and `key`; and the bucket's `reach`.
    ///
    /// The directory's second line (slots past 20) is read only when a
    /// candidate's offset lies in it: an absent key, most often without a
    /// candidate, then costs one line of the bucket.
    #[inline]
    fn probe_bucket(
        &self,
        b: u64,
        fp: u8,
        ns: u16,
        key: &[u8],
        buf: &mut Vec<u8>,
    ) -> (Option<Found>, u64) {
        const LINE: usize = 64;
        let at = bucket_offset(b) as usize;
        let mut dir = [0u8; DIR_HDR + SLOT_LEN * MAX_CELLS];
        if !self.map.copy_out(at, &mut dir[..LINE]) {
            return (None, 0);
        }
        let d = DirHead::parse(&dir);
        let dir_end = d.dir_end();
        let mut whole = dir_end <= LINE;
        if DIR_HDR + d.n > LINE {
            if !self.map.copy_out(at + LINE, &mut dir[LINE..dir_end]) {
                return (None, d.reach);
            }
            whole = true;
        }
        let mut cand = fp_matches(&dir[DIR_HDR..DIR_HDR + d.n], fp);
        while cand != 0 {
            let slot = cand.trailing_zeros() as usize;
            cand &= cand - 1;
            if !whole && DIR_HDR + d.n + 2 * slot + 2 > LINE {
                if !self.map.copy_out(at + LINE, &mut dir[LINE..dir_end]) {
                    return (None, d.reach);
                }
                whole = true;
            }
            let off = slot_offset(&dir, d.n, slot);
            if off < dir_end || off + CELL_HDR > d.end {
                continue;
            }
            let cell = Slot {
                bucket: b,
                slot,
                at: at + off,
                max_len: d.end - off,
            };
            if let Some(found) = self.check_cell(cell, ns, key, buf) {
                return (Some(found), d.reach);
            }
        }
        (None, d.reach)
    }

    /// Copies the cell of `c` out and checks it against `ns` and `key`.
    #[inline]
    fn check_cell(&self, c: Slot, ns: u16, key: &[u8], buf: &mut Vec<u8>) -> Option<Found> {
        let mut head = [0u8; CELL_HDR];
        if !self.map.copy_out(c.at, &mut head) {
            return None;
        }
        let len = cell_len_from_head(&head)?;
        // (An inline cell of another key length cannot match: skip it
        // before the copy. Only a hint: the checksum decides.)
        let inline_klen = head[4] & cf::HEAP == 0 && head[5] as usize != key.len();
        if len > c.max_len || inline_klen {
            return None;
        }
        set_len(buf, len);
        if !self.map.copy_out(c.at, buf) {
            return None;
        }
        let cell = decode_cell(buf)?;
        if cell.ns != ns {
            return None;
        }
        let mut found = Found {
            value: 0..0,
            expiry_ms: cell.expiry_ms,
            entry: cell.entry,
            bucket: c.bucket,
            slot: c.slot,
            heap: false,
        };
        match cell.body {
            CellBody::Inline { key: k, value } => {
                if k != key {
                    return None;
                }
                found.value = len - value.len()..len;
            }
            CellBody::Heap { off, klen, vlen } => {
                if klen as usize != key.len() {
                    return None;
                }
                let v = self.read_heap(off, key, vlen as usize, buf)?;
                found.value = v;
                found.heap = true;
            }
        }
        Some(found)
    }

    /// Reads and checks the heap record at `off` (from the heap's start)
    /// into `buf`; the value's range in it if its key is `key`.
    fn read_heap(
        &self,
        off: u64,
        key: &[u8],
        vlen: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Range<usize>> {
        let len = heap_record_len(key.len(), vlen);
        let end = off.checked_add(len as u64)?;
        if end > self.header.heap_len {
            return None;
        }
        set_len(buf, len);
        if !self
            .map
            .copy_out((self.header.heap_off + off) as usize, buf)
        {
            return None;
        }
        let (k, _) = decode_heap_record(buf, key.len())?;
        (k == key).then_some(len - vlen..len)
    }

    /// Reads and checks the namespace section.
    pub fn namespaces(&self) -> Result<Vec<NsRow>> {
        let (off, len) = (self.header.ns_off, self.header.ns_len);
        let b = self.section(off, len)?;
        decode_ns_section(&b).ok_or_else(|| corrupted(&self.path, off, "damaged namespace section"))
    }

    /// Reads and checks the LRU sections.
    pub fn lru_sections(&self) -> Result<Vec<LruSection>> {
        let off = self.header.lru_off;
        let b = self.section(off, self.header.file_len - off)?;
        decode_lru_sections(&b, self.header.lru_cells)
            .ok_or_else(|| corrupted(&self.path, off, "damaged LRU sections"))
    }

    fn section(&self, off: u64, len: u64) -> Result<Vec<u8>> {
        let mut b = vec![
            0u8;
            usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(self.map.len())
        ];
        if b.len() as u64 != len || !self.map.copy_out(off as usize, &mut b) {
            return Err(corrupted(&self.path, off, "section outside the base"));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests;

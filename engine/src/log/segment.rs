//! A mapped log segment ([`Segment`]), and the store's table of open
//! segment maps ([`Segments`]). Depends on `format`, `hash`, `sys` and (to
//! prune maps of retired segments) `index`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::format::v1::{self, RecordHeader, REC_HEADER_LEN};
use crate::format::{self, hdr};
use crate::hash::IdHasher;
use crate::index::IndexMap;
use crate::sys::SharedMap;

/// A mapped log segment.
pub(crate) struct Segment {
    /// (Before `file`: fields drop in order, and the mapping must be gone
    /// before the closer thread's close is the file's last reference.)
    pub(crate) map: SharedMap,
    pub(crate) file: crate::closer::Closing,
    /// A length the file is known to have reached (it never shrinks).
    pub(crate) known_len: AtomicU64,
}

impl Segment {
    pub(crate) fn open(
        dir: &Path,
        id: u32,
        reserve: u64,
        writable: bool,
    ) -> std::io::Result<Segment> {
        let path = dir.join(format::segment_file_name(id));
        let file = crate::files::open_existing(&path, writable)?;
        let len = file.metadata()?.len();
        let map_len = len.max(reserve).div_ceil(4096) * 4096;
        let map = SharedMap::map_ro(&file, map_len as usize)?;
        Ok(Segment {
            map,
            file: crate::closer::Closing::new(file),
            known_len: AtomicU64::new(len),
        })
    }

    /// True if bytes below `end` are inside the file (so the map may touch them).
    /// `Err(())` means the file is long enough but the map is too short.
    fn ensure(&self, end: u64) -> std::result::Result<bool, ()> {
        if end <= self.known_len.load(Ordering::Acquire) {
            return Ok(true);
        }
        let Ok(meta) = self.file.metadata() else {
            return Ok(false);
        };
        let len = meta.len();
        self.known_len.fetch_max(len, Ordering::AcqRel);
        if end > len {
            return Ok(false);
        }
        if end > self.map.len() as u64 {
            return Err(());
        }
        Ok(true)
    }

    /// Reads the header of the record at `off`, unchecked by its crc (a
    /// damaged header can only make an expiry sweep keep or drop an entry,
    /// never return a value). `Err(())`: remap needed.
    pub(crate) fn read_header(&self, off: u64) -> std::result::Result<Option<RecordHeader>, ()> {
        if off < format::SEG_HEADER_LEN || off % 8 != 0 {
            return Ok(None);
        }
        if !self.ensure(off + REC_HEADER_LEN as u64)? {
            return Ok(None);
        }
        let mut hb = [0u8; REC_HEADER_LEN];
        if !self.map.copy_out(off as usize, &mut hb) {
            return Ok(None);
        }
        Ok(RecordHeader::parse(&hb))
    }

    /// Copies the record at `off` into `buf` (header + key + value) and checks
    /// it. `Err(())`: remap needed.
    pub(crate) fn read_record(
        &self,
        off: u64,
        buf: &mut Vec<u8>,
    ) -> std::result::Result<Option<RecordHeader>, ()> {
        if off < format::SEG_HEADER_LEN || off % 8 != 0 {
            return Ok(None);
        }
        if !self.ensure(off + REC_HEADER_LEN as u64)? {
            return Ok(None);
        }
        let mut hb = [0u8; REC_HEADER_LEN];
        if !self.map.copy_out(off as usize, &mut hb) {
            return Ok(None);
        }
        let Some(h) = RecordHeader::parse(&hb) else {
            return Ok(None);
        };
        let n = h.body_len();
        if !self.ensure(off + n as u64)? {
            return Ok(None);
        }
        buf.clear();
        buf.resize(n, 0);
        if !self.map.copy_out(off as usize, buf) || !v1::record_crc_ok(&h, buf) {
            return Ok(None);
        }
        Ok(Some(h))
    }
}

/// The store's table of open segment maps (one per process), opened on
/// first use and dropped when compaction retires a segment.
pub(crate) struct Segments {
    dir: PathBuf,
    /// The least length each segment is mapped with (so that appends do not
    /// need a new map at once).
    reserve: u64,
    writable: bool,
    maps: RwLock<HashMap<u32, Arc<Segment>, IdHasher>>,
    /// The index epoch (`hdr::EPOCH`) the table was last pruned at.
    epoch_seen: AtomicU64,
}

impl Segments {
    pub(crate) fn new(dir: &Path, reserve: u64, writable: bool) -> Segments {
        Segments {
            dir: dir.to_owned(),
            reserve,
            writable,
            maps: RwLock::new(HashMap::default()),
            epoch_seen: AtomicU64::new(0),
        }
    }

    /// Runs `f` on segment `id`, opening or remapping it as needed.
    pub(crate) fn with_segment<R>(
        &self,
        id: u32,
        mut f: impl FnMut(&Segment) -> std::result::Result<R, ()>,
    ) -> Option<R> {
        if id == 0 {
            return None;
        }
        {
            let maps = self.maps.read();
            if let Some(s) = maps.get(&id) {
                if let Ok(r) = f(s) {
                    return Some(r);
                }
            }
        }
        // Not open yet, or its map is too short: (re)open it.
        let seg = Arc::new(Segment::open(&self.dir, id, self.reserve, self.writable).ok()?);
        let r = f(&seg).ok();
        self.maps.write().insert(id, seg);
        r
    }

    /// Segment `id`, opened if needed.
    pub(crate) fn get(&self, id: u32) -> Option<Arc<Segment>> {
        if let Some(s) = self.maps.read().get(&id) {
            return Some(s.clone());
        }
        self.with_segment(id, |_| Ok(()))?;
        self.maps.read().get(&id).cloned()
    }

    /// Reads the (unchecked) header of the record at `loc`.
    pub(crate) fn read_header(&self, loc: u64) -> Option<RecordHeader> {
        self.with_segment((loc >> 32) as u32, |s| s.read_header(loc & 0xffff_ffff))
            .flatten()
    }

    /// Reads and checks the record at `loc` into `buf`.
    pub(crate) fn read_record(&self, loc: u64, buf: &mut Vec<u8>) -> Option<RecordHeader> {
        let seg = (loc >> 32) as u32;
        let off = loc & 0xffff_ffff;
        self.with_segment(seg, |s| s.read_record(off, buf))
            .flatten()
    }

    /// Drops the map of segment `id` (retired, or evicted for a rebuild), so
    /// that its blocks are freed once no other process maps it.
    pub(crate) fn forget(&self, id: u32) {
        self.maps.write().remove(&id);
    }

    /// Drops maps of segments that compaction retired: those `idx` no longer
    /// has a row for, once its epoch moved.
    pub(crate) fn prune(&self, idx: &IndexMap) {
        let epoch = idx.hget(hdr::EPOCH);
        if self.epoch_seen.load(Ordering::Relaxed) != epoch {
            self.epoch_seen.store(epoch, Ordering::Relaxed);
            self.maps.write().retain(|&id, _| idx.seg_row(id).is_some());
        }
    }
}

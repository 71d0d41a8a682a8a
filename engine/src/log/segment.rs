//! A mapped log segment, and the store's table of open segment maps.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::format::{self, RecordHeader, REC_HEADER_LEN};
use crate::sys::SharedMap;

/// A mapped log segment.
pub(crate) struct Segment {
    pub(crate) file: File,
    pub(crate) map: SharedMap,
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
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        let len = file.metadata()?.len();
        let map_len = len.max(reserve).div_ceil(4096) * 4096;
        let map = SharedMap::map_ro(&file, map_len as usize)?;
        Ok(Segment {
            file,
            map,
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
        if !self.map.copy_out(off as usize, buf) || !format::record_crc_ok(&h, buf) {
            return Ok(None);
        }
        Ok(Some(h))
    }
}

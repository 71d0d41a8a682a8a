//! The log: segment files of checksummed records (FORMAT.md, "Segments"):
//! listing, reading and scanning them here, their maps in [`segment`].
//! Appends are the writer's (`writer/append.rs`).

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::v1::{self, RecordHeader, REC_HEADER_LEN};
use crate::format::{self, SegHeaderCheck, SEG_HEADER_LEN};
use crate::io::Io;

pub(crate) mod segment;

/// One scanned record.
pub(crate) struct Scanned {
    pub(crate) off: u64,
    pub(crate) h: RecordHeader,
}

/// Scans the records of a segment image (`data` starts at the file's byte 0).
/// Damaged stretches are skipped by resynchronising on the next valid record.
/// Returns the records, the end of the last valid record, and the damage found.
pub(crate) fn scan_segment(data: &[u8]) -> (Vec<Scanned>, u64, Vec<(u64, String)>) {
    let mut out = Vec::new();
    let mut damage = Vec::new();
    let mut off = SEG_HEADER_LEN as usize;
    let mut end = SEG_HEADER_LEN;
    let mut bad_since: Option<usize> = None;
    while off + REC_HEADER_LEN <= data.len() {
        let mut hb = [0u8; REC_HEADER_LEN];
        hb.copy_from_slice(&data[off..off + REC_HEADER_LEN]);
        let parsed = RecordHeader::parse(&hb).filter(|h| {
            let n = h.body_len();
            off + n <= data.len() && v1::record_crc_ok(h, &data[off..off + n])
        });
        match parsed {
            Some(h) => {
                if let Some(b) = bad_since.take() {
                    damage.push((b as u64, format!("{} unreadable bytes", off - b)));
                }
                out.push(Scanned { off: off as u64, h });
                off += h.size() as usize;
                end = off as u64;
            }
            None => {
                if bad_since.is_none() && hb != [0u8; REC_HEADER_LEN] {
                    bad_since = Some(off);
                }
                off += 8;
            }
        }
    }
    if let Some(b) = bad_since {
        // Trailing garbage after the last record: a torn write, or damage.
        damage.push((
            b as u64,
            "unreadable bytes after the last record".to_string(),
        ));
    }
    (out, end.min(data.len() as u64), damage)
}

/// Reads a segment file: Ok(Some((id, bytes))) or Ok(None) if it is not a
/// valid segment. Version mismatches are errors.
pub(crate) fn read_segment(io: &dyn Io, path: &Path, id: u32) -> Result<Option<Vec<u8>>> {
    let file = crate::files::open_existing(path, false)?;
    let len = file.metadata()?.len();
    if len < SEG_HEADER_LEN || len > u32::MAX as u64 {
        return Ok(None);
    }
    let mut data = vec![0u8; len as usize];
    io.read_at(&file, &mut data, 0)?;
    let mut hb = [0u8; SEG_HEADER_LEN as usize];
    hb.copy_from_slice(&data[..SEG_HEADER_LEN as usize]);
    match format::check_segment_header(&hb) {
        SegHeaderCheck::Ok(hid) if hid == id => Ok(Some(data)),
        SegHeaderCheck::Ok(_) | SegHeaderCheck::Bad(_) => Ok(None),
        SegHeaderCheck::Version(got) => Err(Error::Version {
            file: path.to_owned(),
            expected: format::SEG_VERSION,
            got,
        }),
    }
}

pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(id) = e
            .file_name()
            .to_str()
            .and_then(format::parse_segment_file_name)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Writes zeros over `from..to` and syncs them.
pub(crate) fn zero_fill(io: &dyn Io, file: &File, from: u64, to: u64) -> Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut off = from;
    while off < to {
        let n = (to - off).min(zeros.len() as u64);
        io.write_at(file, &zeros[..n as usize], off)?;
        off += n;
    }
    io.sync(file)?;
    Ok(())
}

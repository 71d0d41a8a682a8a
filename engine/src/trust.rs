//! Whether an index that was synced clean before a restart still describes
//! the log (FORMAT.md, "Recovery").
//!
//! `Store::sync` marks the index `CLEAN_SYNCED`, and such an index is
//! trusted after a reboot. But a mutation after the sync changes the log
//! and the index pages in the page cache; with `Durability::PowerLoss` its
//! records are `fdatasync`ed before it is acknowledged, its index pages are
//! not. If the power fails before they are written back, the index on disk
//! is the one of the sync, still `CLEAN_SYNCED`, and trusting it would lose
//! the acknowledged records and append over them. So before an index is
//! trusted across a reboot, the log is checked for anything written after
//! the index's state: a valid record at the active segment's append offset,
//! a segment file the index does not know, or a segment it knows whose file
//! is gone (compacted since). Any of these means "rebuild from the log".

use std::path::Path;

use crate::error::Result;
use crate::format::v1::{self, RecordHeader, REC_HEADER_LEN};
use crate::format::{self, hdr};
use crate::index::IndexMap;
use crate::io::Io;

/// True if the log holds something the index does not describe. Checked
/// only for an index trusted across a reboot (the same boot's page cache
/// always holds the index's latest state).
pub(crate) fn log_is_ahead(dir: &Path, idx: &IndexMap, io: &dyn Io) -> Result<bool> {
    let files = crate::log::list_segments(dir)?;
    if files.iter().any(|&id| idx.seg_row(id).is_none()) {
        return Ok(true);
    }
    if idx.seg_rows().iter().any(|&(_, id)| !files.contains(&id)) {
        return Ok(true);
    }
    let active = idx.hget(hdr::ACTIVE_SEG);
    let off = idx.hget(hdr::ACTIVE_OFF);
    if active == 0 || active > u32::MAX as u64 {
        return Ok(false);
    }
    let Ok(file) =
        crate::files::open_existing(&dir.join(format::segment_file_name(active as u32)), false)
    else {
        return Ok(true);
    };
    let len = file.metadata()?.len();
    if off + REC_HEADER_LEN as u64 > len {
        return Ok(false);
    }
    let mut hb = [0u8; REC_HEADER_LEN];
    io.read_at(&file, &mut hb, off)?;
    let Some(h) = RecordHeader::parse(&hb) else {
        return Ok(false);
    };
    let n = h.body_len() as u64;
    if off + n > len {
        return Ok(false);
    }
    let mut body = vec![0u8; n as usize];
    io.read_at(&file, &mut body, off)?;
    Ok(v1::record_crc_ok(&h, &body))
}

//! Appending to the log under the writer lock: the active segment, rolling
//! to a new one, appends with preallocation, syncs and dead-byte accounting.

use std::fs::File;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::format::{self, hdr, kind, segr, SEG_HEADER_LEN};
use crate::index::{corrupt, At};
use crate::log::zero_fill;
use crate::options::Durability;
use crate::txn::Writer;

const PREALLOC_CHUNK: u64 = 4 << 20;

/// A record given in parts up to this size is joined and written at once;
/// a larger one is written part by part, without the copy.
const JOIN_PARTS_UP_TO: u64 = 64 << 10;

/// Allocated room that ordinary appends leave past the active segment's
/// append offset: when a write would need it, it allocates more or fails
/// with `ENOSPC`. Only the records in force of a segment evicted on a full
/// disk (a namespace's definition and last `CLEAR`, about 300 bytes each)
/// may be written into it ([`WriterState::use_headroom`]), so that evicting
/// the oldest segment never needs a block the filesystem no longer has
/// (FORMAT.md, "Full disk").
///
/// [`WriterState::use_headroom`]: crate::ctx::WriterState
pub(crate) const HEADROOM: u64 = 4096;

/// What [`Writer::append_from`] writes: encoded records in a buffer, or one
/// record as its head and its value's parts.
#[derive(Clone, Copy)]
enum Records<'a> {
    Buf(&'a [u8]),
    Parts {
        head: &'a [u8],
        parts: &'a [&'a [u8]],
        seq: u64,
    },
}

impl Writer<'_> {
    pub(crate) fn ensure_active_segment(&mut self) -> Result<()> {
        let id = self.idx.hget(hdr::ACTIVE_SEG) as u32;
        if id == 0 || self.idx.seg_row(id).is_none() || self.ctx.segment(id).is_none() {
            self.roll(0)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one.
    pub(crate) fn roll(&mut self, min_len: u64) -> Result<()> {
        let idx = self.idx.clone();
        if let Some(row) = idx.seg_row(idx.hget(hdr::ACTIVE_SEG) as u32) {
            idx.seg(row, segr::STATE).store(2, Ordering::Release);
        }
        let mut id = idx.hget(hdr::NEXT_SEG_ID).max(1);
        for _ in 0..=format::MAX_SEGMENTS {
            if id > u32::MAX as u64 {
                return Err(Error::InvalidArgument("segment ids exhausted".into()));
            }
            let row = id as usize % format::MAX_SEGMENTS;
            if idx.seg(row, segr::ID).load(Ordering::Acquire) != 0 {
                id += 1;
                continue;
            }
            let path = self.ctx.dir().join(format::segment_file_name(id as u32));
            if path.exists() {
                id += 1;
                continue;
            }
            // The segment is prepared under a temporary name and renamed into
            // place complete, so a crash never leaves a headerless segment.
            // Only the lock holder uses the temporary name.
            let tmp = self.ctx.dir().join(format!("seg-{:08x}.tmp", id as u32));
            let file = self.ctx.modes().open(&tmp, true)?;
            let io = &self.ctx.opts().io;
            let init =
                (min_len + SEG_HEADER_LEN).max(PREALLOC_CHUNK.min(self.ctx.opts().segment_size));
            // On a full filesystem, only what the first records need, and
            // the headroom.
            let need = format::align8(min_len + SEG_HEADER_LEN).max(4096) + HEADROOM;
            let init = init.max(need);
            let r = crate::space::allocate_fitting(io.as_ref(), &file, 0, init, need.min(init))
                .and_then(|len| {
                    io.write_at(&file, &format::encode_segment_header(id as u32), 0)?;
                    io.sync(&file)?;
                    Ok(len)
                });
            let r = r.map_err(Error::from).and_then(|len| {
                if self.ctx.opts().durability == Durability::PowerLoss {
                    zero_fill(io.as_ref(), &file, SEG_HEADER_LEN, len)?;
                }
                Ok(())
            });
            let r = r
                .and_then(|_| std::fs::rename(&tmp, &path).map_err(Error::from))
                .and_then(|_| {
                    if self.ctx.opts().durability == Durability::PowerLoss {
                        File::open(self.ctx.dir()).and_then(|d| d.sync_all())?;
                    }
                    Ok(())
                });
            if let Err(e) = r {
                drop(file);
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            idx.hset(hdr::NEXT_SEG_ID, id + 1);
            idx.seg(row, segr::TOTAL)
                .store(SEG_HEADER_LEN, Ordering::Release);
            idx.seg(row, segr::DEAD).store(0, Ordering::Release);
            idx.seg(row, segr::MIN_PUT).store(0, Ordering::Release);
            idx.seg(row, segr::STATE).store(1, Ordering::Release);
            idx.seg(row, segr::ID).store(id, Ordering::Release);
            idx.hset(hdr::ACTIVE_OFF, SEG_HEADER_LEN);
            idx.hset(hdr::ACTIVE_SEG, id);
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "the store has {} segments, the most it can track; compact it",
            format::MAX_SEGMENTS
        )))
    }

    /// Appends the records in `st.buf` (of the given padded sizes) to the log.
    /// Returns their locations.
    pub(crate) fn append(&mut self, sizes: &[u64]) -> Result<Vec<u64>> {
        let buf = std::mem::take(&mut self.st.buf);
        let r = self.append_from(sizes, Records::Buf(&buf));
        self.st.buf = buf;
        r
    }

    /// Appends one PUT record (sequence number `seq`, padded size `size`)
    /// made of `head` (its header and key: [`format::v1::encode_record_head`])
    /// and the value's `parts`, written one after the other without being
    /// joined first. Returns its location.
    pub(crate) fn append_parts(
        &mut self,
        head: &[u8],
        parts: &[&[u8]],
        size: u64,
        seq: u64,
    ) -> Result<u64> {
        let locs = self.append_from(&[size], Records::Parts { head, parts, seq })?;
        Ok(locs[0])
    }

    fn append_from(&mut self, sizes: &[u64], recs: Records<'_>) -> Result<Vec<u64>> {
        let mut locs = Vec::with_capacity(sizes.len());
        let seg_size = self.ctx.opts().segment_size;
        let headroom = if self.st.use_headroom { 0 } else { HEADROOM };
        let mut i = 0;
        let mut pos = 0usize;
        let r = (|| {
            while i < sizes.len() {
                self.ensure_active_segment()?;
                let seg_id = self.idx.hget(hdr::ACTIVE_SEG) as u32;
                let off = self.idx.hget(hdr::ACTIVE_OFF);
                let seg = self.ctx.segment(seg_id).ok_or_else(|| {
                    corrupt(
                        &self.idx,
                        At::Header(hdr::ACTIVE_SEG),
                        format!("active segment {seg_id} is missing"),
                    )
                })?;
                // Records in force of an evicted segment may go past the
                // segment size, into the headroom allocated beyond it.
                let limit = if headroom == 0 {
                    seg_size.max(seg.file.metadata()?.len())
                } else {
                    seg_size
                };
                let mut run = 0;
                let mut bytes = 0u64;
                while i + run < sizes.len() && off + bytes + sizes[i + run] <= limit {
                    bytes += sizes[i + run];
                    run += 1;
                }
                if run == 0 {
                    if off == SEG_HEADER_LEN {
                        run = 1; // an oversized record gets a segment of its own
                        bytes = sizes[i];
                    } else {
                        self.roll(sizes[i])?;
                        continue;
                    }
                }
                if off + bytes > u32::MAX as u64 {
                    return Err(Error::InvalidArgument("record too large".into()));
                }
                let io = &self.ctx.opts().io;
                let need = off + bytes + headroom;
                if need > seg.known_len.load(Ordering::Acquire) {
                    let len = seg.file.metadata()?.len();
                    if need > len {
                        let target = (off + bytes).div_ceil(PREALLOC_CHUNK) * PREALLOC_CHUNK;
                        let target = target.min(seg_size.max(off + bytes)).max(need);
                        // On a full filesystem, only what this write needs
                        // (and the headroom).
                        let target = crate::space::allocate_fitting(
                            io.as_ref(),
                            &seg.file,
                            len,
                            target,
                            need,
                        )?;
                        if self.ctx.opts().durability == Durability::PowerLoss {
                            // fallocate leaves "unwritten" extents: the first
                            // write into each turns fdatasync into a journal
                            // commit. Zeroing the range once makes later
                            // commits plain data flushes.
                            zero_fill(io.as_ref(), &seg.file, len, target)?;
                        }
                        seg.known_len.fetch_max(target, Ordering::AcqRel);
                    } else {
                        seg.known_len.fetch_max(len, Ordering::AcqRel);
                    }
                }
                // The segment's lowest PUT sequence number covers these
                // records before they are written (a crash in between leaves
                // it lower than needed, never higher).
                let mut min_put = u64::MAX;
                match recs {
                    Records::Buf(buf) => {
                        let mut p = pos;
                        for s in &sizes[i..i + run] {
                            if buf[p + 4] == kind::PUT {
                                let mut w = [0u8; 8];
                                w.copy_from_slice(&buf[p + 24..p + 32]);
                                min_put = min_put.min(u64::from_le_bytes(w));
                            }
                            p += *s as usize;
                        }
                    }
                    Records::Parts { seq, .. } => min_put = seq,
                }
                let row = self.idx.seg_row(seg_id);
                if let (Some(row), true) = (row, min_put != u64::MAX) {
                    let cur = self.idx.seg(row, segr::MIN_PUT).load(Ordering::Acquire);
                    if cur == 0 || min_put < cur {
                        self.idx
                            .seg(row, segr::MIN_PUT)
                            .store(min_put, Ordering::Release);
                    }
                }
                match recs {
                    Records::Buf(buf) => {
                        io.write_at(&seg.file, &buf[pos..pos + bytes as usize], off)?
                    }
                    Records::Parts { head, parts, .. } if bytes <= JOIN_PARTS_UP_TO => {
                        // One small record: joined, one write (a write is a
                        // system call of a few microseconds; the copy of a
                        // small value costs less).
                        let mut buf = Vec::with_capacity(bytes as usize);
                        buf.extend_from_slice(head);
                        for p in parts {
                            buf.extend_from_slice(p);
                        }
                        buf.resize(bytes as usize, 0);
                        io.write_at(&seg.file, &buf, off)?
                    }
                    Records::Parts { head, parts, .. } => {
                        // One record (`sizes` has one): its head, its
                        // parts, its padding, each written where it goes.
                        let mut o = off;
                        for p in std::iter::once(head).chain(parts.iter().copied()) {
                            if !p.is_empty() {
                                io.write_at(&seg.file, p, o)?;
                                o += p.len() as u64;
                            }
                        }
                        let pad = (off + bytes - o) as usize;
                        if pad > 0 {
                            io.write_at(&seg.file, &[0u8; 8][..pad], o)?;
                        }
                    }
                }
                let mut o = off;
                for s in &sizes[i..i + run] {
                    locs.push(((seg_id as u64) << 32) | o);
                    o += s;
                }
                self.idx.hset(hdr::ACTIVE_OFF, off + bytes);
                if let Some(row) = row {
                    self.idx
                        .seg(row, segr::TOTAL)
                        .store(off + bytes, Ordering::Release);
                }
                self.ctx.note_pending(seg_id);
                i += run;
                pos += bytes as usize;
            }
            // Durable commits are synced by `WriteCtx::group_sync` after the
            // writer lock is released, so that concurrent writers share fsyncs.
            self.ctx.count_commit();
            Ok(())
        })();
        r.map(|_| locs)
    }

    /// Allocates the active segment's headroom again (after the records in
    /// force of an evicted segment used it): called in the lock hold that
    /// deleted the evicted segment, so its room is there.
    pub(crate) fn restore_headroom(&mut self) -> Result<()> {
        let id = self.idx.hget(hdr::ACTIVE_SEG) as u32;
        let Some(seg) = self.ctx.segment(id) else {
            return Ok(());
        };
        let need = self.idx.hget(hdr::ACTIVE_OFF) + HEADROOM;
        let len = seg.file.metadata()?.len();
        if need > len {
            let io = &self.ctx.opts().io;
            io.allocate(&seg.file, len, need - len)?;
            if self.ctx.opts().durability == Durability::PowerLoss {
                zero_fill(io.as_ref(), &seg.file, len, need)?;
            }
            seg.known_len.fetch_max(need, Ordering::AcqRel);
        }
        Ok(())
    }

    pub(crate) fn sync_log(&mut self) -> Result<()> {
        self.ctx.sync_pending()
    }

    pub(crate) fn sync_all(&mut self) -> Result<()> {
        self.sync_log()?;
        self.idx.flush(self.ctx.io())?;
        self.st.mark_clean = true;
        Ok(())
    }

    pub(crate) fn next_seq(&self) -> u64 {
        let s = self.idx.hget(hdr::NEXT_SEQ).max(1);
        self.idx.hset(hdr::NEXT_SEQ, s + 1);
        s
    }

    pub(crate) fn mark_dead(&self, loc: u64, size: u64) {
        if let Some(row) = self.idx.seg_row((loc >> 32) as u32) {
            self.idx
                .seg(row, segr::DEAD)
                .fetch_add(size, Ordering::AcqRel);
        }
    }
}

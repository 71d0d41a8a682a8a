//! `Store::verify`: checks every index entry and every log record, under the
//! writer lock, without changing anything.

use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::format::v1::REC_HEADER_LEN;
use crate::format::{self, ent, hdr, kind, nsr, segr};
use crate::hash::key_hash;
use crate::index::NIL;
use crate::log::{list_segments, read_segment, scan_segment};
use crate::txn::Writer;

impl Writer<'_> {
    // ---- verify -------------------------------------------------------------

    pub(crate) fn verify(&mut self) -> Result<crate::VerifyReport> {
        let idx = self.idx.clone();
        let mut rep = crate::VerifyReport::default();
        let mut total = 0u64;
        let mut seen = std::collections::HashSet::new();
        for ns in 0..format::MAX_NAMESPACES as u32 {
            if idx.ns_get(ns, nsr::NAME_LEN) == 0 {
                continue;
            }
            let Some(name) = idx.ns_name(ns) else {
                rep.problems.push(format!(
                    "namespace row {ns}: its name does not match its hash"
                ));
                continue;
            };
            let name = String::from_utf8_lossy(&name).into_owned();
            if !seen.insert(name.clone()) {
                rep.problems
                    .push(format!("namespace {name}: defined in two rows"));
            }
            let (mut count, mut bytes) = (0u64, 0u64);
            let mut prev = NIL;
            let mut cur = idx.ns_get(ns, nsr::LRU_HEAD) as u32;
            let mut steps = 0u64;
            while cur != NIL {
                steps += 1;
                if steps > idx.layout.entries || !idx.valid_entry(cur) {
                    rep.problems
                        .push(format!("namespace {name}: LRU list is broken"));
                    break;
                }
                let (p, n) = idx.links(cur);
                if p != prev {
                    rep.problems.push(format!(
                        "namespace {name}: entry {cur} has a wrong back link"
                    ));
                }
                let (ens, size) = idx.ns_size(cur);
                let loc = idx.eget(cur, ent::LOC);
                rep.entries += 1;
                match self.ctx.read_record(loc, &mut self.st.scratch) {
                    Some(h) if h.kind == kind::PUT && h.ns == ns && ens == ns && h.size() == size as u64 => {
                        let key = &self.st.scratch[REC_HEADER_LEN..REC_HEADER_LEN + h.klen as usize];
                        let hash = key_hash(ns, key);
                        if hash != idx.eget(cur, ent::HASH) {
                            rep.problems.push(format!("namespace {name}: entry {cur} has a wrong hash"));
                        } else if self.ctx.find(&idx, ns, key, hash, &mut Vec::new()).map(|f| f.0)
                            != Some(cur)
                        {
                            rep.problems.push(format!("namespace {name}: entry {cur} is not reachable by its key"));
                        }
                    }
                    _ => rep.problems.push(format!(
                        "namespace {name}: entry {cur} points at a missing or damaged record (segment {}, offset {})",
                        loc >> 32,
                        loc & 0xffff_ffff
                    )),
                }
                count += 1;
                bytes += size as u64;
                prev = cur;
                cur = n;
            }
            if count != idx.ns_get(ns, nsr::ENTRIES) || bytes != idx.ns_get(ns, nsr::LIVE_BYTES) {
                rep.problems.push(format!(
                    "namespace {name}: counts say {} entries / {} bytes, the list holds {count} / {bytes}",
                    idx.ns_get(ns, nsr::ENTRIES),
                    idx.ns_get(ns, nsr::LIVE_BYTES)
                ));
            }
            total += count;
        }
        if total != idx.hget(hdr::ENTRY_COUNT) {
            rep.problems.push(format!(
                "index counts {} entries, the namespaces hold {total}",
                idx.hget(hdr::ENTRY_COUNT)
            ));
        }
        for id in list_segments(self.ctx.dir())? {
            let path = self.ctx.dir().join(format::segment_file_name(id));
            match read_segment(self.ctx.io(), &path, id) {
                Ok(Some(data)) => {
                    let (recs, _, damage) = scan_segment(&data);
                    rep.records += recs.len() as u64;
                    // The row's lowest PUT seq may be lower than the truth
                    // (a crash between the row update and the write), never
                    // higher: compaction would drop tombstones still needed.
                    let min_put = recs
                        .iter()
                        .filter(|r| r.h.kind == kind::PUT)
                        .map(|r| r.h.seq)
                        .min();
                    if let (Some(row), Some(m)) = (idx.seg_row(id), min_put) {
                        let noted = idx.seg(row, segr::MIN_PUT).load(Ordering::Acquire);
                        if noted == 0 || noted > m {
                            rep.problems.push(format!(
                                "segment {id}: the index notes {noted} as its lowest PUT seq, it holds {m}"
                            ));
                        }
                    }
                    let active = idx.hget(hdr::ACTIVE_SEG) == id as u64;
                    for (off, what) in damage {
                        // Bytes past the append point of the active segment are
                        // a torn tail that the next write overwrites.
                        if active && off >= idx.hget(hdr::ACTIVE_OFF) {
                            continue;
                        }
                        rep.problems
                            .push(format!("{}: offset {off}: {what}", path.display()));
                    }
                }
                Ok(None) => rep
                    .problems
                    .push(format!("{}: not a valid segment", path.display())),
                Err(e) => rep.problems.push(format!("{}: {e}", path.display())),
            }
        }
        for (_, id) in idx.seg_rows() {
            if !self.ctx.dir().join(format::segment_file_name(id)).exists() {
                rep.problems.push(format!(
                    "segment {id} is in the index but its file is missing"
                ));
            }
        }
        Ok(rep)
    }
}

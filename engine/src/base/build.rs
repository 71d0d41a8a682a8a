//! The base builder (FORMAT.md, "Base file", "Bucket"): from a stream of
//! cells in key-hash order to the complete bytes of a base file, written
//! through the engine's [`Io`] (so a test can fail any write), header last.
//! Syncing and renaming the file into place are the merge's job.
//!
//! Buckets are laid out as the cells arrive: a bucket is final once every
//! cell whose home is at most it has arrived (the home is monotone in the
//! key hash), and it is written once no cell of an earlier home waits to be
//! carried (its `reach` is then final too), so at most [`MAX_REACH`] + 1
//! buckets are held in memory. Heap records are held in memory until the
//! buckets are written (the heap follows them, and their number is known
//! only at the end).

use std::collections::{HashMap, VecDeque};
use std::fs::File;

use crate::error::{Error, Result};
use crate::format::v2::{
    bucket_offset, cell_len, cell_loc, encode_bucket, encode_cell, encode_heap_record,
    encode_lru_sections, encode_ns_section, fingerprint, heap_record_len, home_of, is_inline,
    BaseHeader, LruSection, NsRow, BUCKET_LEN, DIR_HDR, FILL_PERCENT, MAX_BUCKETS, MAX_CELLS,
    MAX_REACH, SLOT_LEN,
};
use crate::format::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::hash::key_hash;
use crate::io::Io;

/// Buckets written per `write_at`.
const WRITE_BATCH: usize = 64;

/// What a base's header says about where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BaseParams {
    /// The base id (the last base's + 1).
    pub id: u64,
    /// Every record with `seq <= base_seq` is reflected in the base.
    pub base_seq: u64,
    /// The highest segment id whose records are all reflected in it.
    pub absorbed: u64,
    /// 1 when written by the upgrade from version 1.
    pub upgraded_from: u32,
}

/// The totals the builder sizes the home buckets from: every cell the
/// stream will hold, counted with [`Sizing::add`] beforehand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sizing {
    /// Cells.
    pub cells: u64,
    /// Bytes of the cells and their directory slots.
    pub slot_bytes: u64,
}

impl Sizing {
    /// Counts one entry.
    pub fn add(&mut self, klen: usize, vlen: usize, entry: bool, expiry: bool) {
        self.cells += 1;
        self.slot_bytes += (SLOT_LEN + cell_len(klen, vlen, entry, expiry)) as u64;
    }

    /// The home buckets `H`: enough that cells and slots take
    /// [`FILL_PERCENT`] of the bucket bytes after the directory header, and
    /// that no bucket needs more than that percentage of [`MAX_CELLS`]
    /// cells (small cells); at least one.
    pub fn homes(&self) -> u64 {
        let room = (BUCKET_LEN - DIR_HDR) as u64 * FILL_PERCENT;
        let by_bytes = (self.slot_bytes * 100).div_ceil(room);
        let by_count = (self.cells * 100).div_ceil(MAX_CELLS as u64 * FILL_PERCENT);
        by_bytes.max(by_count).max(1)
    }
}

/// One entry of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewCell<'a> {
    /// The namespace row (one of the rows given to [`BaseBuilder::new`]).
    pub ns: u16,
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// Expiry, Unix ms.
    pub expiry_ms: Option<u64>,
    /// The LRU ordinal, for a cell of a namespace with limits: its place in
    /// the LRU sections, counted over all of them.
    pub entry: Option<u32>,
}

/// What a build produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildReport {
    /// The header written.
    pub header: BaseHeader,
    /// Cells stored outside their home bucket.
    pub displaced: u64,
    /// The longest carry, in buckets.
    pub longest_carry: u64,
}

/// A cell waiting for its bucket.
struct Pending {
    home: u64,
    fp: u8,
    cell: Vec<u8>,
    entry: Option<u32>,
}

/// Builds a base file; see the module documentation.
pub struct BaseBuilder<'a> {
    io: &'a dyn Io,
    file: &'a File,
    params: BaseParams,
    homes: u64,
    rows: Vec<NsRow>,
    row_of: HashMap<u16, usize>,
    /// For each LRU section: its namespace and its first ordinal.
    lru_plan: Vec<(u16, u32)>,
    /// Each ordinal's location, once its cell is placed; and whether a
    /// cell with it was pushed.
    lru_locs: Vec<u32>,
    lru_claimed: Vec<bool>,
    last_hash: Option<u64>,
    /// The next bucket to lay out, and the cells whose home it is.
    next: u64,
    own: Vec<Pending>,
    carry: VecDeque<Pending>,
    /// Laid-out buckets not yet written (their `reach` may still grow),
    /// from bucket `first_pending`.
    pending: VecDeque<Vec<u8>>,
    first_pending: u64,
    /// Bytes of buckets ready to write, from bucket `out_at`.
    out: Vec<u8>,
    out_at: u64,
    heap: Vec<u8>,
    cells: u64,
    cell_bytes: u64,
    displaced: u64,
    longest: u64,
}

fn invalid(what: impl Into<String>) -> Error {
    Error::InvalidArgument(what.into())
}

impl<'a> BaseBuilder<'a> {
    /// A builder writing into `file` (empty, private to the caller) through
    /// `io`. `rows` are the namespace section's rows (their `entries` and
    /// `bytes` are counted by the builder); `lru` lists, for each namespace
    /// with limits, its namespace and its number of `ENTRY` cells, in the
    /// order of the sections (ordinals are counted over all of them).
    pub fn new(
        io: &'a dyn Io,
        file: &'a File,
        params: BaseParams,
        sizing: Sizing,
        mut rows: Vec<NsRow>,
        lru: &[(u16, u32)],
    ) -> Result<BaseBuilder<'a>> {
        let homes = sizing.homes();
        if homes > MAX_BUCKETS - MAX_REACH {
            return Err(invalid(format!("a base of {homes} buckets is too large")));
        }
        let mut row_of = HashMap::new();
        for (i, r) in rows.iter_mut().enumerate() {
            (r.entries, r.bytes) = (0, 0);
            if row_of.insert(r.id, i).is_some() {
                return Err(invalid(format!("namespace row {} given twice", r.id)));
            }
        }
        let mut lru_plan = Vec::with_capacity(lru.len());
        let mut total = 0u64;
        for &(ns, n) in lru {
            lru_plan.push((ns, total as u32));
            total += n as u64;
        }
        if total > u32::MAX as u64 {
            return Err(invalid("too many LRU entries"));
        }
        Ok(BaseBuilder {
            io,
            file,
            params,
            homes,
            rows,
            row_of,
            lru_plan,
            lru_locs: vec![0; total as usize],
            lru_claimed: vec![false; total as usize],
            last_hash: None,
            next: 0,
            own: Vec::new(),
            carry: VecDeque::new(),
            pending: VecDeque::new(),
            first_pending: 0,
            out: Vec::new(),
            out_at: 0,
            heap: Vec::new(),
            cells: 0,
            cell_bytes: 0,
            displaced: 0,
            longest: 0,
        })
    }

    /// The home buckets this base has.
    pub fn homes(&self) -> u64 {
        self.homes
    }

    /// Adds the next cell. Cells must come in non-decreasing order of their
    /// key hash (`hash::key_hash(ns, key)`), each key once. After an error
    /// the builder (and its file) must be dropped.
    pub fn push(&mut self, c: NewCell<'_>) -> Result<()> {
        if c.key.len() > MAX_KEY_LEN || c.value.len() > MAX_VALUE_LEN {
            return Err(invalid("key or value too long"));
        }
        let Some(&row) = self.row_of.get(&c.ns) else {
            return Err(invalid(format!("cell of namespace {} without a row", c.ns)));
        };
        let h = key_hash(c.ns as u32, c.key);
        if self.last_hash.is_some_and(|l| h < l) {
            return Err(invalid("cells out of key-hash order"));
        }
        self.last_hash = Some(h);
        if let Some(e) = c.entry {
            let s = self.lru_plan.partition_point(|&(_, first)| first <= e);
            let owner = s.checked_sub(1).map(|s| self.lru_plan[s].0);
            match self.lru_claimed.get_mut(e as usize) {
                Some(claimed) if !*claimed && owner == Some(c.ns) => *claimed = true,
                _ => return Err(invalid(format!("bad or repeated LRU ordinal {e}"))),
            }
        }
        let r = &mut self.rows[row];
        r.entries += 1;
        r.bytes += (c.key.len() + c.value.len()) as u64;
        let mut cell = Vec::new();
        let inline = is_inline(
            c.key.len(),
            c.value.len(),
            c.entry.is_some(),
            c.expiry_ms.is_some(),
        );
        let heap_off = (!inline).then(|| {
            let off = self.heap.len() as u64;
            self.heap
                .reserve(heap_record_len(c.key.len(), c.value.len()));
            encode_heap_record(&mut self.heap, c.key, c.value);
            off
        });
        encode_cell(
            &mut cell,
            c.ns,
            c.entry,
            c.expiry_ms,
            c.key,
            c.value,
            heap_off,
        );
        self.cells += 1;
        self.cell_bytes += cell.len() as u64;
        let home = home_of(h, self.homes);
        while self.next < home {
            self.lay_out()?;
        }
        self.own.push(Pending {
            home,
            fp: fingerprint(h),
            cell,
            entry: c.entry,
        });
        Ok(())
    }

    /// Lays out bucket `next` from its own cells and the carried ones.
    fn lay_out(&mut self) -> Result<()> {
        let b = self.next;
        if b >= MAX_BUCKETS {
            return Err(invalid("a base needs more buckets than a location holds"));
        }
        let mut own = std::mem::take(&mut self.own);
        own.sort_by_key(|c| c.fp);
        let mut placed: Vec<Pending> = Vec::new();
        let mut used = DIR_HDR;
        let fits = |placed: &Vec<Pending>, used: usize, c: &Pending| {
            placed.len() < MAX_CELLS && used + SLOT_LEN + c.cell.len() <= BUCKET_LEN
        };
        let mut rest = Vec::new();
        for c in own {
            if fits(&placed, used, &c) {
                used += SLOT_LEN + c.cell.len();
                placed.push(c);
            } else {
                rest.push(c);
            }
        }
        let mut still = VecDeque::new();
        for c in self.carry.drain(..).chain(rest) {
            if c.home != b && fits(&placed, used, &c) {
                used += SLOT_LEN + c.cell.len();
                let dist = b - c.home;
                self.displaced += 1;
                self.longest = self.longest.max(dist);
                // The home is still pending: a carried cell's home is never
                // written before the cell is placed.
                let i = c.home.checked_sub(self.first_pending);
                if let Some(page) = i.and_then(|i| self.pending.get_mut(i as usize)) {
                    page[1] = page[1].max(dist as u8);
                }
                placed.push(c);
            } else {
                if b - c.home >= MAX_REACH {
                    return Err(invalid(
                        "a cell would be carried beyond 255 buckets (sizing too small)",
                    ));
                }
                still.push_back(c);
            }
        }
        self.carry = still;
        for (slot, c) in placed.iter().enumerate() {
            if let Some(e) = c.entry {
                self.lru_locs[e as usize] = cell_loc(b, slot);
            }
        }
        let cells: Vec<(u8, &[u8])> = placed.iter().map(|c| (c.fp, &c.cell[..])).collect();
        let page = encode_bucket(&cells, 0).ok_or_else(|| invalid("bucket overflow"))?;
        self.pending.push_back(page);
        self.next += 1;
        // Buckets no waiting cell has as its home are final.
        let oldest = self.carry.front().map_or(u64::MAX, |c| c.home);
        while self.first_pending < oldest.min(self.next) {
            let Some(page) = self.pending.pop_front() else {
                break;
            };
            if self.out.is_empty() {
                self.out_at = self.first_pending;
            }
            self.out.extend_from_slice(&page);
            self.first_pending += 1;
            if self.out.len() >= WRITE_BATCH * BUCKET_LEN {
                self.write_out()?;
            }
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.io
                .write_at(self.file, &self.out, bucket_offset(self.out_at))?;
            self.out.clear();
        }
        Ok(())
    }

    /// Lays out and writes what is left, then the heap, the sections and,
    /// last, the header. The file then holds the whole base (not synced).
    pub fn finish(mut self) -> Result<BuildReport> {
        while self.next < self.homes || !self.own.is_empty() || !self.carry.is_empty() {
            self.lay_out()?;
        }
        self.write_out()?;
        let stored = self.next;
        let heap_off = bucket_offset(stored);
        let heap_len = self.heap.len() as u64;
        if heap_len > 0 {
            self.io.write_at(self.file, &self.heap, heap_off)?;
        }
        let ns = encode_ns_section(&self.rows);
        let ns_off = heap_off + heap_len;
        self.io.write_at(self.file, &ns, ns_off)?;
        let mut sections = Vec::with_capacity(self.lru_plan.len());
        for (i, &(ns, first)) in self.lru_plan.iter().enumerate() {
            let end = self
                .lru_plan
                .get(i + 1)
                .map_or(self.lru_locs.len(), |s| s.1 as usize);
            let locs = self.lru_locs[first as usize..end].to_vec();
            if self.lru_claimed[first as usize..end].contains(&false) {
                return Err(invalid(format!(
                    "an LRU ordinal of namespace {ns} has no cell"
                )));
            }
            sections.push(LruSection { ns, locs });
        }
        let lru = encode_lru_sections(&sections);
        let lru_off = ns_off + ns.len() as u64;
        self.io.write_at(self.file, &lru, lru_off)?;
        let homes = self.homes;
        let header = BaseHeader {
            id: self.params.id,
            base_seq: self.params.base_seq,
            absorbed: self.params.absorbed,
            homes,
            stored,
            cells: self.cells,
            heap_off,
            heap_len,
            ns_off,
            ns_len: ns.len() as u64,
            lru_off,
            lru_cells: self.lru_locs.len() as u64,
            file_len: lru_off + lru.len() as u64,
            upgraded_from: self.params.upgraded_from,
            pred_first: (DIR_HDR as u64 + SLOT_LEN as u64 * self.cells / homes)
                .min(BUCKET_LEN as u64) as u32,
            pred_span: (self.cell_bytes / homes).min(BUCKET_LEN as u64) as u32,
        };
        self.io.write_at(self.file, &header.encode(), 0)?;
        Ok(BuildReport {
            header,
            displaced: self.displaced,
            longest_carry: self.longest,
        })
    }
}

//! Recovery: opening the index or rebuilding it from the log when it cannot
//! be trusted (a writer died mid-mutation, damage, a reboot), and the
//! writer's recovery steps.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::ctx::now_ms;
use crate::error::{Error, Result};
use crate::format::v1::REC_HEADER_LEN;
use crate::format::{self, hdr, kind, nsr, segr, SEG_HEADER_LEN};
use crate::hash::key_hash;
use crate::index::table::add_entry;
use crate::index::{buckets_for, random_generation, tmp_index_path, IndexMap, IndexProblem};
use crate::log::{list_segments, read_segment, scan_segment, zero_fill};
use crate::options::Options;
use crate::txn::Writer;

// ---------------------------------------------------------------------------
// Open and rebuild
// ---------------------------------------------------------------------------

/// Opens the index, or rebuilds it from the log when it cannot be trusted.
/// Returns the index and whether it was rebuilt.
pub(crate) fn open_or_rebuild_index(
    dir: &Path,
    lock_file: &File,
    opts: &Options,
    boot: (u64, u64),
    read_only: bool,
) -> Result<(Arc<IndexMap>, bool)> {
    if !crate::sys::flock_within(lock_file, opts.lock_timeout)? {
        return Err(crate::txn::locked(opts.lock_timeout));
    }
    let r = (|| {
        let path = dir.join("index");
        // An index trusted across a reboot must not be behind the log.
        let trusted = |idx: &IndexMap| -> Result<bool> {
            if needs_rebuild(idx, boot) {
                return Ok(false);
            }
            let behind = crosses_reboot(idx, boot)
                && crate::trust::log_is_ahead(dir, idx, opts.io.as_ref())?;
            Ok(!behind)
        };
        if read_only {
            return match IndexMap::open_mode(&path, false) {
                Ok(idx) if trusted(&idx)? => Ok((Arc::new(idx), false)),
                Err(IndexProblem::Io(e)) => Err(Error::Io(e)),
                Ok(_) if opts.inspect_only => Err(Error::NeedsRepair {
                    path: dir.to_owned(),
                    what: "its index is stale (a writer died mid-write, or it predates a reboot)"
                        .into(),
                }),
                Err(IndexProblem::Missing) if opts.inspect_only => Err(Error::NeedsRepair {
                    path: dir.to_owned(),
                    what: "its index is missing".into(),
                }),
                Err(IndexProblem::Invalid(why)) if opts.inspect_only => Err(Error::NeedsRepair {
                    path: dir.to_owned(),
                    what: format!("its index is damaged ({why})"),
                }),
                _ => Err(crate::ctx::read_only_error(
                    dir,
                    "its index must be rebuilt from the log, which needs write access",
                )),
            };
        }
        match IndexMap::open(&path) {
            Ok(idx) if trusted(&idx)? => Ok((Arc::new(idx), false)),
            Ok(old) => {
                let new = rebuild_index(dir, opts, Some(&old), boot, &|_| {})?;
                old.hset(hdr::RETIRED, 1);
                Ok((Arc::new(new), true))
            }
            Err(IndexProblem::Io(e)) => Err(Error::Io(e)),
            Err(IndexProblem::Missing | IndexProblem::Invalid(_)) => Ok((
                Arc::new(rebuild_index(dir, opts, None, boot, &|_| {})?),
                true,
            )),
        }
    })();
    let _ = crate::sys::funlock(lock_file);
    r
}

/// Whether `idx` was last written in another boot (and is trusted because it
/// was synced clean).
fn crosses_reboot(idx: &IndexMap, boot: (u64, u64)) -> bool {
    boot != (0, 0) && (idx.hget(hdr::BOOT_ID), idx.hget(hdr::BOOT_ID + 8)) != boot
}

fn needs_rebuild(idx: &IndexMap, boot: (u64, u64)) -> bool {
    if idx.retired() {
        return true;
    }
    let state = idx.hget(hdr::STATE);
    if state & format::STATE_MUTATING != 0 {
        return true; // a writer died mid-mutation
    }
    // Words the writer relies on must be in range; damage means rebuild.
    let cap = idx.layout.entries;
    let active = idx.hget(hdr::ACTIVE_SEG);
    let off = idx.hget(hdr::ACTIVE_OFF);
    if idx.hget(hdr::ENTRY_HWM) > cap
        || idx.hget(hdr::FREE_HEAD) > cap
        || idx.hget(hdr::ENTRY_COUNT) > cap
        || active > u32::MAX as u64
        || (active != 0 && (off < SEG_HEADER_LEN || off > u32::MAX as u64 || off % 8 != 0))
    {
        return true;
    }
    let stored = (idx.hget(hdr::BOOT_ID), idx.hget(hdr::BOOT_ID + 8));
    // After a reboot the index pages may not all have reached the disk: trust
    // it only if it was synced clean.
    boot != (0, 0) && stored != boot && state & format::STATE_CLEAN_SYNCED == 0
}

/// A key while rebuilding, hashed by its precomputed index hash.
#[derive(PartialEq, Eq)]
struct RebuildKey {
    h: u64,
    ns: u32,
    key: Box<[u8]>,
}

impl std::hash::Hash for RebuildKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.h);
    }
}

/// A namespace definition found in the log: (seq, name, limits).
type NsDef = (u64, Vec<u8>, (u64, u64, u64));

/// The latest state of one key found while scanning the log.
struct Latest {
    seq: u64,
    loc: u64,
    size: u32,
    expire_ms: u64,
    put: bool,
}

/// At most this many segments are evicted to make room for one rebuild.
const MAX_REBUILD_EVICTIONS: usize = 64;

/// Builds a new index from the log and renames it into place. `old`, if
/// readable, donates its hit/miss/eviction counters.
///
/// On a full disk (no room for the new file), the reserve file is deleted
/// and the rebuild tried again; then the oldest segments are evicted one at
/// a time ([`crate::evict::evict_oldest_before_rebuild`]), each followed by
/// another try, while an eviction frees space. `forget` is told of every
/// evicted segment (the caller drops its map of it, so that its blocks are
/// freed). FORMAT.md, "Full disk".
pub(crate) fn rebuild_index(
    dir: &Path,
    opts: &Options,
    old: Option<&IndexMap>,
    boot: (u64, u64),
    forget: &dyn Fn(u32),
) -> Result<IndexMap> {
    let mut released = false;
    let mut evicted = 0;
    loop {
        let e = match rebuild_once(dir, opts, old, boot) {
            Err(e) if crate::space::is_full(&e) => e,
            r => return r,
        };
        if !released {
            released = true;
            if crate::space::release_reserve_in(dir) {
                continue;
            }
        }
        if evicted >= MAX_REBUILD_EVICTIONS {
            return Err(e);
        }
        let free = |d: &Path| crate::sys::fs_space(d).map_or(0, |(_, f)| f);
        let before = free(dir);
        match crate::evict::evict_oldest_before_rebuild(dir, opts, old, boot)? {
            Some(id) => forget(id),
            None => return Err(e),
        }
        evicted += 1;
        // Another process that maps the evicted segment keeps its blocks
        // until it lets go (at its next operation): evicting more would
        // free nothing now. The next writer tries again.
        if free(dir) <= before {
            return Err(e);
        }
    }
}

/// One attempt of [`rebuild_index`].
fn rebuild_once(
    dir: &Path,
    opts: &Options,
    old: Option<&IndexMap>,
    boot: (u64, u64),
) -> Result<IndexMap> {
    // Temporaries of writers that died (we hold the writer lock, so no live
    // writer is using one).
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with("seg-") && name.ends_with(".tmp")) || name.starts_with("index.tmp.") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let ids = list_segments(dir)?;
    let log_bytes: u64 = ids
        .iter()
        .filter_map(|id| std::fs::metadata(dir.join(format::segment_file_name(*id))).ok())
        .map(|m| m.len())
        .sum();
    let mut keys: HashMap<RebuildKey, Latest, crate::hash::IdHasher> =
        HashMap::with_capacity_and_hasher((log_bytes / 160) as usize, Default::default());
    let mut defs: HashMap<u32, NsDef> = HashMap::new();
    // Removals (NAMESPACE records with an empty value): row -> latest seq.
    let mut removals: HashMap<u32, u64> = HashMap::new();
    let mut clears: HashMap<u32, u64> = HashMap::new();
    let mut segs: Vec<(u32, u64, u64)> = Vec::new();
    let mut max_seq = 0u64;
    // A compaction chunk interrupted by a crash: its copies are discarded
    // (and zeroed before the new index is installed), so it is done again.
    let journal = crate::compaction::Journal::for_rebuild(old, boot, &ids);
    let mut discard: Vec<(std::path::PathBuf, u64, u64)> = Vec::new();
    for &id in &ids {
        let path = dir.join(format::segment_file_name(id));
        let Some(data) = read_segment(opts.io.as_ref(), &path, id)? else {
            continue;
        };
        let (mut recs, mut end, _damage) = scan_segment(&data);
        if let Some(cut) = journal.and_then(|j| j.cut(id)) {
            // Their sequence numbers stay used.
            max_seq = recs.iter().map(|r| r.h.seq).fold(max_seq, u64::max);
            recs.retain(|r| r.off < cut);
            if end > cut {
                discard.push((path.clone(), cut, end));
                end = cut;
            }
        }
        // The victim's records before the journal's `done` were dealt with
        // by committed chunks: what had to survive of them was copied (a live
        // PUT under a fresh seq, a tombstone, the CLEAR and NAMESPACE in
        // force) and the rest dropped, and the compaction that the carried
        // journal resumes unlinks the victim without looking at them again.
        // So they count here only for `next_seq` and the lowest PUT seq: a
        // PUT that a chunk dropped without a tombstone (an evicted key, no
        // older PUT elsewhere) would otherwise come back as an entry pointing
        // into the victim, dangling once it is unlinked.
        let settled = journal.filter(|j| j.victim == id).map_or(0, |j| j.done);
        let mut min_put = 0u64;
        for r in recs {
            let h = r.h;
            max_seq = max_seq.max(h.seq);
            if h.kind == kind::PUT && (min_put == 0 || h.seq < min_put) {
                min_put = h.seq;
            }
            if r.off < settled {
                continue;
            }
            let body = &data[r.off as usize..r.off as usize + h.body_len()];
            let key = &body[REC_HEADER_LEN..REC_HEADER_LEN + h.klen as usize];
            match h.kind {
                kind::PUT | kind::REMOVE => {
                    let k = RebuildKey {
                        h: key_hash(h.ns, key),
                        ns: h.ns,
                        key: key.into(),
                    };
                    // On a tie (a dead PUT and the tombstone compaction made
                    // of it, after a crash mid-compaction) the tombstone wins.
                    let newer = keys.get(&k).is_none_or(|l| {
                        l.seq < h.seq || (l.seq == h.seq && h.kind == kind::REMOVE)
                    });
                    if newer {
                        keys.insert(
                            k,
                            Latest {
                                seq: h.seq,
                                loc: ((id as u64) << 32) | r.off,
                                size: h.size() as u32,
                                expire_ms: h.expire_ms,
                                put: h.kind == kind::PUT,
                            },
                        );
                    }
                }
                kind::CLEAR => {
                    let c = clears.entry(h.ns).or_insert(0);
                    *c = (*c).max(h.seq);
                }
                kind::NAMESPACE => {
                    let valid_name = !key.is_empty() && key.len() <= format::MAX_NAME_LEN;
                    let limits = format::decode_limits(&body[REC_HEADER_LEN + h.klen as usize..]);
                    if let (true, Some(l), true) =
                        (valid_name, limits, (h.ns as usize) < format::MAX_NAMESPACES)
                    {
                        if defs.get(&h.ns).is_none_or(|d| d.0 < h.seq) {
                            defs.insert(h.ns, (h.seq, key.to_vec(), l));
                        }
                    } else if valid_name && h.vlen == 0 && (h.ns as usize) < format::MAX_NAMESPACES
                    {
                        let r = removals.entry(h.ns).or_insert(0);
                        *r = (*r).max(h.seq);
                    }
                }
                _ => {}
            }
        }
        segs.push((id, end, min_put));
    }
    // A removal newer than a row's latest definition leaves the row free.
    removals.retain(|ns, seq| defs.get(ns).is_none_or(|d| d.0 < *seq));
    defs.retain(|ns, _| !removals.contains_key(ns));
    // A name defined in two rows (a writer that no longer found its row, the
    // index being damaged, defined the name again in another): the newest
    // definition is the namespace, the older row's records belong to none.
    let mut newest: HashMap<Vec<u8>, (u64, u32)> = HashMap::new();
    for (&ns, (seq, name, _)) in &defs {
        let e = newest.entry(name.clone()).or_insert((*seq, ns));
        if *seq > e.0 {
            *e = (*seq, ns);
        }
    }
    defs.retain(|ns, (_, name, _)| newest.get(name).is_some_and(|&(_, n)| n == *ns));
    let now = now_ms();
    let mut live: Vec<(u32, u64, Latest)> = keys
        .into_iter()
        .filter(|(k, l)| {
            l.put
                && defs.contains_key(&k.ns)
                && l.seq > clears.get(&k.ns).copied().unwrap_or(0)
                && (l.expire_ms == 0 || l.expire_ms > now)
        })
        .map(|(k, l)| (k.ns, k.h, l))
        .collect();
    // Only the newest entries that fit each namespace's limits, so that the
    // new index never shows a namespace over them, not even until the first
    // writer enforces them.
    live.sort_unstable_by_key(|(_, _, l)| std::cmp::Reverse(l.seq));
    let mut room: HashMap<u32, (u64, u64)> = HashMap::new();
    live.retain(|(ns, _, l)| {
        let Some((_, _, (maxsize, max_bytes, _))) = defs.get(ns) else {
            return false;
        };
        let used = room.entry(*ns).or_insert((0, 0));
        if used.0 < *maxsize && used.1 + l.size as u64 <= *max_bytes {
            *used = (used.0 + 1, used.1 + l.size as u64);
            true
        } else {
            used.0 = u64::MAX; // full: everything older goes too
            false
        }
    });
    live.reverse();

    let tmp = tmp_index_path(dir);
    let idx = IndexMap::create(
        &tmp,
        buckets_for(live.len() as u64 + live.len() as u64 / 4 + 16),
        random_generation(),
        crate::files::Modes::new(opts.group_access),
        opts.io.as_ref(),
    )
    .inspect_err(|_| {
        // A full disk: whatever was allocated of it goes.
        let _ = std::fs::remove_file(&tmp);
    })?;
    let build = (|| {
        idx.hset(hdr::NEXT_SEQ, max_seq + 1);
        idx.hset(hdr::BOOT_ID, boot.0);
        idx.hset(hdr::BOOT_ID + 8, boot.1);
        let next_id = ids.iter().copied().max().unwrap_or(0) as u64 + 1;
        idx.hset(hdr::NEXT_SEG_ID, next_id);
        // Every row's last CLEAR, free rows' too: a namespace that takes a
        // free row keeps it, so records of the row's earlier namespaces stay
        // shadowed (FORMAT.md, "Removing a namespace").
        for (&ns, &c) in &clears {
            if (ns as usize) < format::MAX_NAMESPACES {
                idx.ns_set(ns, nsr::CLEAR_SEQ, c);
            }
        }
        for (&ns, &seq) in &removals {
            idx.ns_set(ns, nsr::DEF_SEQ, seq);
        }
        let use_now = crate::ctx::use_clock(opts);
        for (&ns, (seq, name, (m, b, t))) in &defs {
            idx.ns_set_name(ns, name);
            idx.ns_set(ns, nsr::MAXSIZE, *m);
            idx.ns_set(ns, nsr::MAX_BYTES, *b);
            idx.ns_set(ns, nsr::TTL_MS, *t);
            idx.ns_set(ns, nsr::DEF_SEQ, *seq);
            idx.ns_set(ns, nsr::CLEAR_SEQ, clears.get(&ns).copied().unwrap_or(0));
            idx.ns_set(ns, nsr::CLOCK, max_seq + 1);
            idx.ns_set(ns, nsr::LAST_USED, use_now);
            if let Some(old) = old {
                if old.ns_name(ns).as_deref() == Some(name.as_slice()) {
                    for f in [nsr::HITS, nsr::MISSES, nsr::EVICTIONS, nsr::REJECTED] {
                        idx.ns_set(ns, f, old.ns_get(ns, f));
                    }
                    let used = old.ns_get(ns, nsr::LAST_USED);
                    if used != 0 {
                        idx.ns_set(ns, nsr::LAST_USED, used);
                    }
                }
            }
        }
        idx.hset(hdr::NS_COUNT, defs.len() as u64);
        let mut seg_live: HashMap<u32, u64> = HashMap::new();
        for (ns, h, l) in &live {
            if l.expire_ms != 0 {
                let next = idx.ns_get(*ns, nsr::NEXT_EXPIRY);
                if next == 0 || l.expire_ms < next {
                    idx.ns_set(*ns, nsr::NEXT_EXPIRY, l.expire_ms);
                }
            }
            add_entry(&idx, *ns, *h, l.loc, l.size, l.seq, l.seq)?;
            *seg_live.entry((l.loc >> 32) as u32).or_insert(0) += l.size as u64;
        }
        let active = segs.last().map(|s| s.0);
        for &(id, end, min_put) in &segs {
            let row = id as usize % format::MAX_SEGMENTS;
            if idx.seg(row, segr::ID).load(Ordering::Acquire) != 0 {
                continue; // two live segments on one row: cannot happen unless ids were forged
            }
            let total = end.max(SEG_HEADER_LEN);
            let live = seg_live.get(&id).copied().unwrap_or(0);
            idx.seg(row, segr::TOTAL).store(total, Ordering::Release);
            idx.seg(row, segr::DEAD).store(
                total.saturating_sub(SEG_HEADER_LEN + live),
                Ordering::Release,
            );
            idx.seg(row, segr::MIN_PUT)
                .store(min_put, Ordering::Release);
            idx.seg(row, segr::STATE)
                .store(if Some(id) == active { 1 } else { 2 }, Ordering::Release);
            idx.seg(row, segr::ID).store(id as u64, Ordering::Release);
        }
        if let Some((id, end, _)) = segs.last() {
            idx.hset(hdr::ACTIVE_SEG, *id as u64);
            idx.hset(hdr::ACTIVE_OFF, format::align8((*end).max(SEG_HEADER_LEN)));
        }
        if let Some(j) = journal {
            j.carry_into(&idx);
        }
        for (path, from, to) in &discard {
            let file = crate::files::open_existing(path, true)?;
            zero_fill(opts.io.as_ref(), &file, *from, *to)?;
        }
        Ok(())
    })();
    if let Err(e) = build {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dir.join("index"))?;
    Ok(idx)
}

impl Writer<'_> {
    /// Rebuilds the index from the log and installs it.
    pub(crate) fn rebuild(&mut self) -> Result<()> {
        if self.ctx.read_only() {
            return Err(crate::ctx::read_only_error(
                self.ctx.dir(),
                "its index must be rebuilt from the log, which needs write access",
            ));
        }
        let ctx = self.ctx;
        let new = Arc::new(rebuild_index(
            ctx.dir(),
            ctx.opts(),
            Some(&self.idx),
            ctx.boot_id(),
            &|id| ctx.forget_segment(id),
        )?);
        self.idx.hset(hdr::RETIRED, 1);
        self.idx = new;
        self.ctx.install_index(self.idx.clone());
        // Deleted to make room for the new index, if the disk was full.
        self.ctx.ensure_reserve();
        self.begin()?;
        self.enforce_all()?;
        self.ensure_active_segment()
    }

    pub(crate) fn after_open(&mut self, rebuilt: bool) -> Result<()> {
        if rebuilt {
            self.enforce_all()?;
        }
        self.ensure_active_segment()
    }

    fn enforce_all(&mut self) -> Result<()> {
        for ns in 0..format::MAX_NAMESPACES as u32 {
            if self.idx.ns_get(ns, nsr::NAME_LEN) != 0 {
                self.enforce(ns)?;
            }
        }
        Ok(())
    }

    pub(crate) fn recover_if_needed(&mut self) -> Result<()> {
        if self.idx.retired() {
            match IndexMap::open_mode(&self.ctx.dir().join("index"), !self.ctx.read_only()) {
                Ok(m) if !m.retired() => {
                    // The index that replaced ours. If a writer died while
                    // mutating it, it is the one the rebuild below replaces
                    // (its journal, its counters), not ours, whose words
                    // stopped counting when it was retired.
                    let mutating = m.hget(hdr::STATE) & format::STATE_MUTATING != 0;
                    self.idx = Arc::new(m);
                    if !mutating {
                        self.ctx.install_index(self.idx.clone());
                    }
                }
                // No usable index: rebuilt with ours as the old one, whose
                // journal `Journal::for_rebuild` ignores (it is retired).
                _ => return self.rebuild(),
            }
        }
        if needs_rebuild(&self.idx, self.ctx.boot_id()) {
            return self.rebuild();
        }
        Ok(())
    }
}

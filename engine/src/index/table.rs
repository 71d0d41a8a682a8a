//! The index's hash table and entry slots: bucket probing, entry allocation
//! and the free list (FORMAT.md, "Index file").

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::format::{ent, hdr, nsr};
use crate::index::lru::lru_push_head;
use crate::index::{check_e, corrupt, At, IndexMap, NIL};

pub(crate) fn bucket_insert(idx: &IndexMap, h: u64, e: u32, loc: u64) -> Result<()> {
    for step in 0..idx.layout.buckets {
        let pos = h.wrapping_add(step);
        let b = idx.bucket(pos);
        if b.load(Ordering::Acquire) == 0 {
            idx.bucket_loc(pos).store(loc, Ordering::Release);
            b.store(((h >> 32) << 32) | (e as u64 + 1), Ordering::Release);
            return Ok(());
        }
    }
    Err(corrupt(idx, At::Bucket(h), "bucket table full"))
}

/// The bucket position holding entry `e` (whose hash is `h`).
fn bucket_of(idx: &IndexMap, h: u64, e: u32) -> Result<u64> {
    let mask = idx.layout.buckets - 1;
    for step in 0..idx.layout.buckets {
        let p = h.wrapping_add(step) & mask;
        let w = idx.bucket(p).load(Ordering::Acquire);
        if w == 0 {
            break;
        }
        if (w as u32).wrapping_sub(1) == e {
            return Ok(p);
        }
    }
    Err(corrupt(
        idx,
        At::Entry(e, ent::HASH),
        "entry missing from the bucket table",
    ))
}

/// Points entry `e` (and its bucket) at a new record.
pub(crate) fn set_loc(idx: &IndexMap, e: u32, loc: u64) -> Result<()> {
    let p = bucket_of(idx, idx.eget(e, ent::HASH), e)?;
    idx.eset(e, ent::LOC, loc);
    idx.bucket_loc(p).store(loc, Ordering::Release);
    Ok(())
}

pub(crate) fn bucket_remove(idx: &IndexMap, h: u64, e: u32) -> Result<()> {
    let mask = idx.layout.buckets - 1;
    let mut i = bucket_of(idx, h, e)?;
    // Backward-shift deletion keeps probe sequences gap-free without tombstones.
    let mut j = i;
    for _ in 0..idx.layout.buckets {
        j = (j + 1) & mask;
        let w = idx.bucket(j).load(Ordering::Acquire);
        if w == 0 {
            break;
        }
        let ej = check_e(idx, (w as u32).wrapping_sub(1), At::Bucket(j))?;
        let k = idx.eget(ej, ent::HASH) & mask;
        let stays = if i <= j {
            i < k && k <= j
        } else {
            i < k || k <= j
        };
        if !stays {
            idx.bucket_loc(i)
                .store(idx.bucket_loc(j).load(Ordering::Acquire), Ordering::Release);
            idx.bucket(i).store(w, Ordering::Release);
            i = j;
        }
    }
    idx.bucket(i).store(0, Ordering::Release);
    Ok(())
}

fn alloc_entry(idx: &IndexMap) -> Result<Option<u32>> {
    let free = idx.hget(hdr::FREE_HEAD);
    if free != 0 {
        let e = check_e(idx, (free - 1) as u32, At::Header(hdr::FREE_HEAD))?;
        let (_, next) = idx.links(e);
        idx.hset(
            hdr::FREE_HEAD,
            if next == NIL { 0 } else { next as u64 + 1 },
        );
        return Ok(Some(e));
    }
    let hwm = idx.hget(hdr::ENTRY_HWM);
    if hwm < idx.layout.entries {
        idx.hset(hdr::ENTRY_HWM, hwm + 1);
        return Ok(Some(hwm as u32));
    }
    Ok(None)
}

pub(crate) fn free_entry(idx: &IndexMap, e: u32) {
    idx.eset(e, ent::LOC, 0);
    idx.eset(e, ent::HASH, 0);
    idx.eset(e, ent::STAMP, 0);
    let free = idx.hget(hdr::FREE_HEAD);
    idx.set_links(e, NIL, if free == 0 { NIL } else { (free - 1) as u32 });
    idx.hset(hdr::FREE_HEAD, e as u64 + 1);
}

/// Adds a new entry at the head of its namespace's list (index builders).
/// Returns its number.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_entry(
    idx: &IndexMap,
    ns: u32,
    h: u64,
    loc: u64,
    size: u32,
    stamp: u64,
    list_stamp: u64,
) -> Result<u32> {
    let Some(e) = alloc_entry(idx)? else {
        return Err(Error::InvalidArgument("index sized too small".into()));
    };
    idx.eset(e, ent::HASH, h);
    idx.eset(e, ent::LOC, loc);
    idx.eset(e, ent::NS_SIZE, ns as u64 | ((size as u64) << 32));
    idx.eset(e, ent::STAMP, stamp);
    idx.eset(e, ent::LIST_STAMP, list_stamp);
    bucket_insert(idx, h, e, loc)?;
    lru_push_head(idx, ns, e)?;
    idx.ns_add(ns, nsr::ENTRIES, 1);
    idx.ns_add(ns, nsr::LIVE_BYTES, size as u64);
    idx.hset(hdr::ENTRY_COUNT, idx.hget(hdr::ENTRY_COUNT) + 1);
    Ok(e)
}

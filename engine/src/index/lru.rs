//! The per-namespace LRU lists threaded through the index's entries.

use crate::error::Result;
use crate::format::{ent, nsr};
use crate::index::{check_e, corrupt, At};
use crate::index::{IndexMap, NIL};

pub(crate) fn lru_push_head(idx: &IndexMap, ns: u32, e: u32) -> Result<()> {
    let head = idx.ns_get(ns, nsr::LRU_HEAD) as u32;
    idx.set_links(e, NIL, head);
    if head != NIL {
        let (_, hn) = idx.links(check_e(idx, head, At::Ns(ns, nsr::LRU_HEAD))?);
        idx.set_links(head, e, hn);
    } else {
        idx.ns_set(ns, nsr::LRU_TAIL, e as u64);
    }
    idx.ns_set(ns, nsr::LRU_HEAD, e as u64);
    Ok(())
}

pub(crate) fn lru_unlink(idx: &IndexMap, ns: u32, e: u32) -> Result<()> {
    let (p, n) = idx.links(e);
    if p != NIL {
        let (pp, _) = idx.links(check_e(idx, p, At::Entry(e, ent::LINKS))?);
        idx.set_links(p, pp, n);
    } else if idx.ns_get(ns, nsr::LRU_HEAD) as u32 == e {
        idx.ns_set(ns, nsr::LRU_HEAD, n as u64);
    } else {
        return Err(corrupt(
            idx,
            At::Entry(e, ent::LINKS),
            "LRU list: entry without predecessor is not the head",
        ));
    }
    if n != NIL {
        let (_, nn) = idx.links(check_e(idx, n, At::Entry(e, ent::LINKS))?);
        idx.set_links(n, p, nn);
    } else if idx.ns_get(ns, nsr::LRU_TAIL) as u32 == e {
        idx.ns_set(ns, nsr::LRU_TAIL, p as u64);
    } else {
        return Err(corrupt(
            idx,
            At::Entry(e, ent::LINKS),
            "LRU list: entry without successor is not the tail",
        ));
    }
    idx.set_links(e, NIL, NIL);
    Ok(())
}

/// Inserts `e` so that list stamps stay descending from the head, walking at
/// most 64 steps (past that the position is approximate; see FORMAT.md).
pub(crate) fn lru_insert_sorted(idx: &IndexMap, ns: u32, e: u32, stamp: u64) -> Result<()> {
    let mut prev = NIL;
    let mut cur = idx.ns_get(ns, nsr::LRU_HEAD) as u32;
    let mut steps = 0;
    let mut from = At::Ns(ns, nsr::LRU_HEAD);
    while cur != NIL && steps < 64 && idx.eget(check_e(idx, cur, from)?, ent::LIST_STAMP) > stamp {
        from = At::Entry(cur, ent::LINKS);
        prev = cur;
        cur = idx.links(cur).1;
        steps += 1;
    }
    if prev == NIL {
        return lru_push_head(idx, ns, e);
    }
    idx.set_links(e, prev, cur);
    let (pp, _) = idx.links(prev);
    idx.set_links(prev, pp, e);
    if cur != NIL {
        let (_, cn) = idx.links(check_e(idx, cur, from)?);
        idx.set_links(cur, e, cn);
    } else {
        idx.ns_set(ns, nsr::LRU_TAIL, e as u64);
    }
    Ok(())
}

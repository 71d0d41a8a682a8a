//! Namespace lifecycle: when each namespace was last used, and removing
//! namespaces. FORMAT.md, "Last use" and "Removing a namespace", specifies
//! both.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::Result;
use crate::format::v1;
use crate::format::{self, hdr, kind, nsr};
use crate::index::touch;
use crate::namespace::Namespace;
use crate::options::NamespaceStats;
use crate::shared::ns_stats;
use crate::store::Store;
use crate::txn::Writer;

impl Writer<'_> {
    /// The row of namespace `name`, if it exists.
    pub(crate) fn find_namespace(&self, name: &[u8]) -> Option<u32> {
        let h = crate::name_hash(name);
        (0..format::MAX_NAMESPACES as u32).find(|&id| {
            self.idx.ns_get(id, nsr::NAME_LEN) != 0
                && self.idx.ns_get(id, nsr::NAME_HASH) == h
                && self.idx.ns_name(id).as_deref() == Some(name)
        })
    }

    /// Sets the last use of every namespace whose last use is unknown (0: an
    /// index written by an earlier build) to `now`.
    pub(crate) fn stamp_unknown_last_use(&self, now: u64) {
        for id in 0..format::MAX_NAMESPACES as u32 {
            if self.idx.ns_get(id, nsr::NAME_LEN) != 0 && self.idx.ns_get(id, nsr::LAST_USED) == 0 {
                touch(&self.idx, id, now);
            }
        }
    }

    /// Removes the namespace in row `id`: a `CLEAR` (which drops its entries),
    /// then a `NAMESPACE` record with an empty value, then the row is freed.
    pub(crate) fn remove_namespace(&mut self, id: u32) -> Result<()> {
        let Some(name) = self.idx.ns_name(id) else {
            return Ok(());
        };
        self.clear(id)?;
        let seq = self.next_seq();
        self.st.buf.clear();
        v1::encode_record(&mut self.st.buf, kind::NAMESPACE, id, seq, 0, &name, &[]);
        self.append(&[v1::record_size(name.len(), 0)])?;
        let idx = self.idx.clone();
        // The row reads as free first; CLEAR_SEQ stays (see FORMAT.md).
        idx.ns_set(id, nsr::NAME_LEN, 0);
        idx.ns_set_name(id, &[]);
        idx.ns_set(id, nsr::NAME_HASH, 0);
        idx.ns_reset_contents(id);
        idx.ns_set(id, nsr::LAST_USED, 0);
        idx.ns_set(id, nsr::DEF_SEQ, seq);
        idx.hset(hdr::NS_COUNT, idx.hget(hdr::NS_COUNT).saturating_sub(1));
        self.ctx.forget_names();
        Ok(())
    }
}

impl Namespace {
    /// The namespace's row, checked under the writer lock: the handle's row
    /// if it still holds the namespace, else the namespace's row, defining
    /// the namespace again (with the handle's limits) if it was removed.
    pub(crate) fn row(&self, w: &mut Writer<'_>) -> Result<u32> {
        let id = self.id.load(Ordering::Relaxed);
        if w.idx.ns_get(id, nsr::NAME_LEN) != 0
            && w.idx.ns_get(id, nsr::NAME_HASH) == self.name_hash
        {
            return Ok(id);
        }
        let id = match w.find_namespace(self.name.as_bytes()) {
            Some(id) => id,
            None => w.define_namespace(self.name.as_bytes(), self.limits)?,
        };
        self.id.store(id, Ordering::Relaxed);
        Ok(id)
    }

    /// [`Namespace::row`] for a use (a put): also records the use.
    pub(crate) fn used_row(&self, w: &mut Writer<'_>) -> Result<u32> {
        let id = self.row(w)?;
        touch(&w.idx, id, w.ctx.use_clock());
        Ok(id)
    }
}

impl Store {
    /// Removes namespace `name`, in every process: its entries (their space
    /// is reclaimed by compaction) and its row, so that it no longer appears
    /// in [`Store::stats`] or [`Store::namespace_names`]. Returns its
    /// statistics as they were, or `None` if there is no such namespace.
    ///
    /// Handles on it that other threads or processes hold stay valid: the
    /// next lookup or put through one defines the namespace again, empty.
    pub fn remove_namespace(&self, name: &str) -> Result<Option<NamespaceStats>> {
        self.inner.check_fork()?;
        self.inner.with_writer(|w| {
            let Some(id) = w.find_namespace(name.as_bytes()) else {
                return Ok(None);
            };
            let stats = ns_stats(&w.idx, id);
            w.remove_namespace(id)?;
            Ok(Some(stats))
        })
    }

    /// The namespaces whose last use ([`NamespaceStats::last_used`]) is more
    /// than `unused_for` ago. A namespace whose last use is unknown is never
    /// one of them.
    pub fn unused_namespaces(&self, unused_for: Duration) -> Result<Vec<NamespaceStats>> {
        let cutoff = self.unused_cutoff(unused_for);
        Ok(self
            .stats()?
            .namespaces
            .into_iter()
            .filter(|n| n.last_used.is_some_and(|t| t < cutoff))
            .collect())
    }

    /// Removes every namespace whose last use is more than `unused_for` ago
    /// (see [`Store::unused_namespaces`]), as [`Store::remove_namespace`]
    /// does; each one's last use is checked again under the writer lock, just
    /// before its removal. Returns the statistics of those removed.
    pub fn remove_unused_namespaces(&self, unused_for: Duration) -> Result<Vec<NamespaceStats>> {
        let cutoff = self.unused_cutoff(unused_for);
        let mut removed = Vec::new();
        for candidate in self.unused_namespaces(unused_for)? {
            let gone = self.inner.with_writer(|w| {
                let Some(id) = w.find_namespace(candidate.name.as_bytes()) else {
                    return Ok(None);
                };
                let used = w.idx.ns_get(id, nsr::LAST_USED);
                if used == 0 || used >= cutoff {
                    return Ok(None); // used meanwhile
                }
                let stats = ns_stats(&w.idx, id);
                w.remove_namespace(id)?;
                Ok(Some(stats))
            })?;
            removed.extend(gone);
        }
        Ok(removed)
    }

    /// The last-use time before which a namespace is unused for `unused_for`.
    fn unused_cutoff(&self, unused_for: Duration) -> u64 {
        self.inner
            .ctx
            .use_clock()
            .saturating_sub(unused_for.as_secs())
    }
}

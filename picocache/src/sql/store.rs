//! The namespace row and the entries under it: locking the row, writing
//! the buffered hits, deleting expired entries, evicting, the counters.

use std::collections::HashMap;

use super::guard::Budget;
use super::{Conn, Dialect, NsRow, Shared, Val, FLUSH_AFTER, FLUSH_EVERY};
use crate::Result;

impl Shared {
    pub(super) fn lock_ns(&self, c: &mut dyn Conn, id: i64) -> Result<NsRow> {
        let rows = c.query(
            &format!(
                "SELECT maxsize, max_bytes, ttl_ms, entries, bytes FROM {} WHERE id = ?{}",
                self.sql.ns, self.sql.for_update
            ),
            &[Val::Int(id)],
        )?;
        let r = rows.into_iter().next().ok_or_else(|| {
            self.backend_err(format!("namespace {id} vanished from {}", self.sql.ns))
        })?;
        let g = |i: usize| r.get(i).and_then(Val::int);
        Ok(NsRow {
            maxsize: g(0),
            max_bytes: g(1),
            ttl_ms: g(2),
            entries: g(3).unwrap_or(0),
            bytes: g(4).unwrap_or(0),
            evicted: 0,
        })
    }

    pub(super) fn save_ns(
        &self,
        c: &mut dyn Conn,
        id: i64,
        row: &NsRow,
        counts: (i64, i64),
    ) -> Result<()> {
        c.exec(
            &format!(
                "UPDATE {} SET entries = ?, bytes = ?, evictions = evictions + ?, \
                 hits = hits + ?, misses = misses + ? WHERE id = ?",
                self.sql.ns
            ),
            &[
                Val::Int(row.entries.max(0)),
                Val::Int(row.bytes.max(0)),
                Val::Int(row.evicted),
                Val::Int(counts.0),
                Val::Int(counts.1),
                Val::Int(id),
            ],
        )?;
        Ok(())
    }

    /// Writes buffered access stamps (the namespace row is locked).
    pub(super) fn write_touches(
        &self,
        c: &mut dyn Conn,
        id: i64,
        touches: &HashMap<Vec<u8>, i64>,
    ) -> Result<()> {
        // One statement per 100 keys: atime = greatest(atime, CASE kh ...).
        let greatest = if self.sql.dialect == Dialect::Sqlite {
            "MAX"
        } else {
            "GREATEST"
        };
        let mut items: Vec<_> = touches.iter().collect();
        items.sort();
        for chunk in items.chunks(100) {
            let whens = " WHEN ? THEN ?".repeat(chunk.len());
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "UPDATE {} SET atime = {greatest}(atime, CASE kh{whens} ELSE atime END) \
                 WHERE ns = ? AND kh IN ({marks})",
                self.sql.t
            );
            let mut params = Vec::with_capacity(chunk.len() * 3 + 1);
            for (kh, st) in chunk {
                params.push(Val::Bytes((*kh).clone()));
                params.push(Val::Int(**st));
            }
            params.push(Val::Int(id));
            params.extend(chunk.iter().map(|(kh, _)| Val::Bytes((*kh).clone())));
            c.exec(&sql, &params)?;
        }
        Ok(())
    }

    /// Deletes the expired entries of `id` (its row locked).
    pub(super) fn purge(&self, c: &mut dyn Conn, id: i64, row: &mut NsRow, now: i64) -> Result<()> {
        let t = &self.sql.t;
        if self.sql.dialect == Dialect::Postgres {
            // One round trip: the delete reports what it deleted.
            let rows = c.query(
                &format!(
                    "WITH d AS (DELETE FROM {t} WHERE ns = ? AND expires IS NOT NULL \
                     AND expires <= ? RETURNING size) SELECT COUNT(*), {} FROM d",
                    self.sum_size()
                ),
                &[Val::Int(id), Val::Int(now)],
            )?;
            let r = rows.into_iter().next().unwrap_or_default();
            row.entries -= r.first().and_then(Val::int).unwrap_or(0);
            row.bytes -= r.get(1).and_then(Val::int).unwrap_or(0);
            return Ok(());
        }
        let rows = c.query(
            &format!(
                "SELECT COUNT(*), {} FROM {t} WHERE ns = ? AND expires IS NOT NULL AND expires <= ?",
                self.sum_size()
            ),
            &[Val::Int(id), Val::Int(now)],
        )?;
        let n = rows
            .first()
            .and_then(|r| r.first())
            .and_then(Val::int)
            .unwrap_or(0);
        if n > 0 {
            let bytes = rows
                .first()
                .and_then(|r| r.get(1))
                .and_then(Val::int)
                .unwrap_or(0);
            c.exec(
                &format!("DELETE FROM {t} WHERE ns = ? AND expires IS NOT NULL AND expires <= ?"),
                &[Val::Int(id), Val::Int(now)],
            )?;
            row.entries -= n;
            row.bytes -= bytes;
        }
        Ok(())
    }

    pub(super) fn sum_size(&self) -> &'static str {
        match self.sql.dialect {
            Dialect::Sqlite => "COALESCE(SUM(size), 0)",
            Dialect::Postgres => "CAST(COALESCE(SUM(size), 0) AS BIGINT)",
            Dialect::Mysql => "CAST(COALESCE(SUM(size), 0) AS SIGNED)",
        }
    }

    /// Evicts least recently used entries of `id` until its limits hold.
    pub(super) fn evict(&self, c: &mut dyn Conn, id: i64, row: &mut NsRow) -> Result<()> {
        let over = |row: &NsRow| {
            row.entries > 0
                && (row.maxsize.is_some_and(|m| row.entries > m)
                    || row.max_bytes.is_some_and(|m| row.bytes > m))
        };
        while over(row) {
            let by_count = row.maxsize.map_or(0, |m| row.entries - m).max(1);
            let batch = by_count.min(1000);
            let sizes = self.delete_oldest(c, id, batch)?;
            if sizes.is_empty() {
                // The counters drifted from the rows: recount.
                self.recount(c, id, row)?;
                if over(row) {
                    return Err(self.backend_err("eviction found no rows".into()));
                }
                break;
            }
            // `batch` is exactly what the count limit needs (or one, for
            // the bytes limit): every victim goes.
            for size in sizes {
                row.entries -= 1;
                row.bytes -= size;
                row.evicted += 1;
            }
        }
        Ok(())
    }

    /// Deletes the `n` least recently used entries of `id`; their sizes.
    /// One statement on PostgreSQL and SQLite (`DELETE ... RETURNING`),
    /// two on MySQL (which has no `RETURNING`).
    pub(super) fn delete_oldest(&self, c: &mut dyn Conn, id: i64, n: i64) -> Result<Vec<i64>> {
        let t = &self.sql.t;
        let size_of = |r: Vec<Val>| r.into_iter().next().and_then(|v| v.int()).unwrap_or(0);
        if self.sql.dialect != Dialect::Mysql {
            let rows = c.query(
                &format!(
                    "DELETE FROM {t} WHERE ns = ? AND kh IN \
                     (SELECT kh FROM {t} WHERE ns = ? ORDER BY atime LIMIT ?) RETURNING size"
                ),
                &[Val::Int(id), Val::Int(id), Val::Int(n)],
            )?;
            return Ok(rows.into_iter().map(size_of).collect());
        }
        let victims = c.query(
            &format!("SELECT kh, size FROM {t} WHERE ns = ? ORDER BY atime LIMIT ?"),
            &[Val::Int(id), Val::Int(n)],
        )?;
        let mut sizes = Vec::with_capacity(victims.len());
        let mut khs = Vec::with_capacity(victims.len());
        for v in victims {
            let mut it = v.into_iter();
            khs.push(it.next().unwrap_or(Val::Null));
            sizes.push(it.next().and_then(|v| v.int()).unwrap_or(0));
        }
        for chunk in khs.chunks(100) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut params = vec![Val::Int(id)];
            params.extend(chunk.iter().cloned());
            c.exec(
                &format!("DELETE FROM {t} WHERE ns = ? AND kh IN ({marks})"),
                &params,
            )?;
        }
        Ok(sizes)
    }

    pub(super) fn recount(&self, c: &mut dyn Conn, id: i64, row: &mut NsRow) -> Result<()> {
        let rows = c.query(
            &format!(
                "SELECT COUNT(*), {} FROM {} WHERE ns = ?",
                self.sum_size(),
                self.sql.t
            ),
            &[Val::Int(id)],
        )?;
        let r = rows.into_iter().next().unwrap_or_default();
        row.entries = r.first().and_then(Val::int).unwrap_or(0);
        row.bytes = r.get(1).and_then(Val::int).unwrap_or(0);
        Ok(())
    }

    /// Writes every buffered hit, one transaction per namespace.
    pub(super) fn flush_all(&self) -> Result<()> {
        self.flush_all_in(&self.pool.budget())
    }

    /// [`Shared::flush_all`] within what is left of `budget`.
    pub(super) fn flush_all_in(&self, budget: &Budget) -> Result<()> {
        let ids: Vec<i64> = {
            let p = self.pending.lock();
            let mut ids: Vec<i64> = p.touches.keys().chain(p.counts.keys()).copied().collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        for id in ids {
            self.flush_ns(id, budget)?;
        }
        Ok(())
    }

    pub(super) fn flush_ns(&self, id: i64, budget: &Budget) -> Result<()> {
        let (touches, counts) = self.pending.lock().take_ns(id);
        if touches.is_empty() && counts == (0, 0) {
            return Ok(());
        }
        self.tx_in(budget, |c| {
            let row = self.lock_ns(c, id)?;
            self.write_touches(c, id, &touches)?;
            self.save_ns(c, id, &row, counts)
        })
    }

    /// Flushes the buffered hits if they are due, within what is left of
    /// `budget` (the look-up's).
    pub(super) fn maybe_flush(&self, budget: &Budget) {
        let due = {
            let p = self.pending.lock();
            p.n >= FLUSH_EVERY || p.since.is_some_and(|s| s.elapsed() >= FLUSH_AFTER)
        };
        if due {
            if let Err(e) = self.flush_all_in(budget) {
                log::warn!(
                    "picocache: flushing buffered hits to {} failed: {e}",
                    self.kind()
                );
            }
        }
    }
}

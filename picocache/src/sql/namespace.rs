//! A namespace of an SQL backend: look-ups (plain `SELECT`s, their hits
//! buffered), stores, removal, `clear`, `stats`, leases.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{key_hash, lease, now_ms, stamp, ttl_ms, Dialect, Shared, Val};
use crate::backend::{Lease, Limits, Namespace, Stats};
use crate::{Error, Result};

/// A namespace of a [`SqlBackend`].
pub struct SqlNamespace {
    pub(super) shared: Arc<Shared>,
    pub(super) name: String,
    pub(super) id: i64,
}

impl fmt::Debug for SqlNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl SqlNamespace {
    /// The values of `keys`; hits are counted, and misses if `count_misses`.
    fn fetch(&self, keys: &[&[u8]], count_misses: bool) -> Result<Vec<Option<Vec<u8>>>> {
        let s = &self.shared;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let hashes: Vec<Vec<u8>> = keys.iter().map(|k| key_hash(k)).collect();
        let now = now_ms();
        // One operation: every chunk and the flush it may cause.
        let budget = s.pool.budget();
        let mut hits = Vec::new();
        for (chunk_no, chunk) in hashes.chunks(100).enumerate() {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut params = vec![Val::Int(self.id)];
            params.extend(chunk.iter().map(|h| Val::Bytes(h.clone())));
            let rows = s.pool.with_conn_in(&budget, |c| {
                c.query(
                    &format!(
                        "SELECT kh, k, v, expires FROM {} WHERE ns = ? AND kh IN ({marks})",
                        s.sql.t
                    ),
                    &params,
                )
            })?;
            for r in rows {
                let mut it = r.into_iter();
                let kh = it.next().unwrap_or(Val::Null).bytes();
                let k = it.next().unwrap_or(Val::Null).bytes();
                let v = it.next().unwrap_or(Val::Null).bytes();
                let expires = it.next().and_then(|v| v.int());
                if expires.is_some_and(|e| e <= now) {
                    continue;
                }
                for (i, h) in chunk.iter().enumerate() {
                    let at = chunk_no * 100 + i;
                    if *h == kh && keys[at] == k.as_slice() && out[at].is_none() {
                        out[at] = Some(v.clone());
                        hits.push((at, kh.clone()));
                    }
                }
            }
        }
        // Rows come back in the server's order: stamp the hits in the order
        // of the keys asked for, so the last key asked is the most recent
        // use (as `lru_cache` would have it).
        hits.sort_unstable_by_key(|h| h.0);
        let hits: Vec<(Vec<u8>, i64)> = hits.into_iter().map(|(_, kh)| (kh, stamp())).collect();
        let misses = if count_misses {
            keys.len() - hits.len()
        } else {
            0
        };
        self.record(&hits, misses);
        s.maybe_flush(&budget);
        Ok(out)
    }

    fn record(&self, hits: &[(Vec<u8>, i64)], misses: usize) {
        let mut p = self.shared.pending.lock();
        let p = &mut *p;
        let touches = p.touches.entry(self.id).or_default();
        for (kh, st) in hits {
            if touches.insert(kh.clone(), *st).is_none() {
                p.n += 1;
            }
        }
        let c = p.counts.entry(self.id).or_default();
        c.0 += hits.len() as i64;
        c.1 += misses as i64;
        if p.since.is_none() {
            p.since = Some(Instant::now());
        }
    }
}

impl Namespace for SqlNamespace {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_many(&[key])?.pop().flatten())
    }

    fn recheck(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.fetch(&[key], false)?.pop().flatten())
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        self.fetch(keys, true)
    }

    fn put(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.put_many(&[(key, value)], ttl)
    }

    fn put_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<()> {
        let s = &self.shared;
        let id = self.id;
        for (k, v) in items {
            let size = k.len() + v.len();
            if size > s.max_value_size {
                return Err(Error::TooLarge {
                    backend: s.kind(),
                    size,
                    limit: Some(s.max_value_size),
                    source: None,
                });
            }
        }
        let (touches, counts) = s.pending.lock().take_ns(id);
        let upsert = s.sql.upsert_entry();
        let size_sql = format!("SELECT size FROM {} WHERE ns = ? AND kh = ?", s.sql.t);
        let del_sql = format!("DELETE FROM {} WHERE ns = ? AND kh = ?", s.sql.t);
        // PostgreSQL: the old size and the store in one round trip (every
        // part of a statement sees the rows as they were before it).
        let pg = s.sql.dialect == Dialect::Postgres;
        let upsert_old = format!(
            "WITH old AS (SELECT size FROM {} WHERE ns = ? AND kh = ?), \
             up AS ({upsert}) SELECT size FROM old",
            s.sql.t
        );
        s.tx(|c| {
            let mut row = s.lock_ns(c, id)?;
            s.write_touches(c, id, &touches)?;
            let now = now_ms();
            s.purge(c, id, &mut row, now)?;
            let ttl = ttl.map(ttl_ms).or(row.ttl_ms);
            if row.maxsize != Some(0) && ttl != Some(0) {
                for (k, v) in items {
                    let kh = key_hash(k);
                    let size = (k.len() + v.len()) as i64;
                    let fits = row.max_bytes.is_none_or(|m| size <= m);
                    let first = |rows: Vec<Vec<Val>>| {
                        rows.into_iter()
                            .next()
                            .and_then(|r| r.into_iter().next())
                            .and_then(|v| v.int())
                    };
                    let entry = [
                        Val::Int(id),
                        Val::Bytes(kh.clone()),
                        Val::Bytes(k.to_vec()),
                        Val::Bytes(v.to_vec()),
                        Val::Int(size),
                        Val::Int(stamp()),
                        ttl.map_or(Val::Null, |t| Val::Int(now.saturating_add(t))),
                    ];
                    let had = if pg && fits {
                        let mut params = vec![Val::Int(id), Val::Bytes(kh.clone())];
                        params.extend(entry);
                        first(c.query(&upsert_old, &params)?)
                    } else {
                        let had =
                            first(c.query(&size_sql, &[Val::Int(id), Val::Bytes(kh.clone())])?);
                        if !fits {
                            if had.is_some() {
                                c.exec(&del_sql, &[Val::Int(id), Val::Bytes(kh)])?;
                            }
                        } else {
                            c.exec(&upsert, &entry)?;
                        }
                        had
                    };
                    if let Some(sz) = had {
                        row.entries -= 1;
                        row.bytes -= sz;
                    }
                    if fits {
                        row.entries += 1;
                        row.bytes += size;
                    }
                }
                s.evict(c, id, &mut row)?;
            }
            s.save_ns(c, id, &row, counts)
        })
    }

    fn remove(&self, key: &[u8]) -> Result<bool> {
        let s = &self.shared;
        let id = self.id;
        let kh = key_hash(key);
        let (touches, counts) = s.pending.lock().take_ns(id);
        s.tx(|c| {
            let mut row = s.lock_ns(c, id)?;
            s.write_touches(c, id, &touches)?;
            s.purge(c, id, &mut row, now_ms())?;
            let params = [Val::Int(id), Val::Bytes(kh.clone())];
            let del = format!("DELETE FROM {} WHERE ns = ? AND kh = ?", s.sql.t);
            let first = |rows: Vec<Vec<Val>>| {
                rows.into_iter()
                    .next()
                    .and_then(|r| r.into_iter().next())
                    .and_then(|v| v.int())
            };
            let had = if s.sql.dialect == Dialect::Mysql {
                let sql = format!("SELECT size FROM {} WHERE ns = ? AND kh = ?", s.sql.t);
                let had = first(c.query(&sql, &params)?);
                if had.is_some() {
                    c.exec(&del, &params)?;
                }
                had
            } else {
                first(c.query(&format!("{del} RETURNING size"), &params)?)
            };
            if let Some(sz) = had {
                row.entries -= 1;
                row.bytes -= sz;
            }
            s.save_ns(c, id, &row, counts)?;
            Ok(had.is_some())
        })
    }

    fn clear(&self) -> Result<()> {
        let s = &self.shared;
        let id = self.id;
        drop(s.pending.lock().take_ns(id));
        s.tx(|c| {
            s.lock_ns(c, id)?;
            c.exec(&format!("DELETE FROM {} WHERE ns = ?", s.sql.t), &[Val::Int(id)])?;
            c.exec(
                &format!(
                    "UPDATE {} SET entries = 0, bytes = 0, hits = 0, misses = 0, evictions = 0 WHERE id = ?",
                    s.sql.ns
                ),
                &[Val::Int(id)],
            )?;
            Ok(())
        })
    }

    fn stats(&self) -> Result<Stats> {
        let s = &self.shared;
        let id = self.id;
        let (touches, counts) = s.pending.lock().take_ns(id);
        s.tx(|c| {
            let mut row = s.lock_ns(c, id)?;
            s.write_touches(c, id, &touches)?;
            s.purge(c, id, &mut row, now_ms())?;
            s.save_ns(c, id, &row, counts)?;
            let rows = c.query(
                &format!(
                    "SELECT entries, bytes, hits, misses, evictions FROM {} WHERE id = ?",
                    s.sql.ns
                ),
                &[Val::Int(id)],
            )?;
            let r = rows.into_iter().next().unwrap_or_default();
            let g = |i: usize| r.get(i).and_then(Val::int).unwrap_or(0).max(0) as u64;
            Ok(Stats {
                entries: g(0),
                bytes: g(1),
                hits: g(2),
                misses: g(3),
                evictions: g(4),
                rejected: 0,
            })
        })
    }

    fn limits(&self) -> Result<Limits> {
        let s = &self.shared;
        let rows = s.pool.with_conn(|c| {
            c.query(
                &format!(
                    "SELECT maxsize, max_bytes, ttl_ms FROM {} WHERE id = ?",
                    s.sql.ns
                ),
                &[Val::Int(self.id)],
            )
        })?;
        let r = rows.into_iter().next().unwrap_or_default();
        let g = |i: usize| r.get(i).and_then(Val::int).filter(|n| *n >= 0);
        Ok(Limits {
            maxsize: g(0).map(|n| n as u64),
            max_bytes: g(1).map(|n| n as u64),
            ttl: g(2).map(|n| Duration::from_millis(n as u64)),
        })
    }

    fn lease(&self, key: &[u8], wait: Duration) -> Result<Option<Lease>> {
        lease::take(&self.shared, self.id, key, wait)
    }
}

//! Leases of the SQL backends: one row per held lease in `T_lease` (name, a
//! random token, an expiry in milliseconds since the epoch), on every
//! dialect.
//!
//! Taking a lease is one statement on a pooled connection, and so is
//! releasing it: no connection is held while the lease is (a deep cold
//! recursion holds as many leases as it is deep, and still uses at most one
//! connection at a time). A lease whose holder crashed expires after
//! [`SqlOptions::lease_ttl`](super::SqlOptions::lease_ttl): the next taker
//! overwrites the row. Expired rows nobody takes again are deleted now and
//! then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::guard::Budget;
use super::{now_ms, ttl_ms, Dialect, Shared, Val};
use crate::backend::Lease;
use crate::{Error, Result};

/// Takes of a lease between two sweeps of expired rows.
const SWEEP_EVERY: u64 = 256;

fn token() -> String {
    let mut raw = [0u8; 12];
    if getrandom::fill(&mut raw).is_err() {
        let fallback = format!("{}:{}", std::process::id(), super::stamp());
        raw.copy_from_slice(&xxhash_rust::xxh3::xxh3_128(fallback.as_bytes()).to_le_bytes()[..12]);
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of the lease of `key` in namespace `ns`: 8 bytes of a hash of
/// the table, the namespace and the key (two keys that share it share a
/// lease: one computes after the other, nothing worse).
fn name(shared: &Shared, ns: i64, key: &[u8]) -> Vec<u8> {
    let mut seed = shared.table.as_bytes().to_vec();
    seed.extend_from_slice(&ns.to_le_bytes());
    seed.extend_from_slice(key);
    xxhash_rust::xxh3::xxh3_64(&seed).to_le_bytes().to_vec()
}

/// One try, within `budget`: whether the lease `name` is now held with
/// `token`. One statement on every dialect.
fn try_take(shared: &Shared, budget: &Budget, name: &[u8], token: &str) -> Result<bool> {
    let t = &shared.sql.lease;
    let now = now_ms();
    let expires = now.saturating_add(ttl_ms(shared.lease_ttl));
    let params = [
        Val::Bytes(name.to_vec()),
        Val::Text(token.to_string()),
        Val::Int(expires),
        Val::Int(now),
    ];
    shared
        .pool
        .with_conn_in(budget, |c| match shared.sql.dialect {
            Dialect::Sqlite | Dialect::Postgres => {
                // An expired row is taken over; a live one stays.
                let n = c.exec(
                    &format!(
                        "INSERT INTO {t} (name, token, expires) VALUES (?, ?, ?) \
                     ON CONFLICT (name) DO UPDATE SET token = excluded.token, \
                     expires = excluded.expires WHERE {t}.expires <= ?"
                    ),
                    &params,
                )?;
                Ok(n == 1)
            }
            Dialect::Mysql => {
                // Without CLIENT_FOUND_ROWS (this driver does not set it), an
                // upsert reports 1 row for an insert, 2 for a row it changed
                // (an expired lease taken over) and 0 for a row left as it was
                // (a live lease): taken if any.
                let n = c.exec(
                    &format!(
                        "INSERT INTO {t} (name, token, expires) VALUES (?, ?, ?) \
                     ON DUPLICATE KEY UPDATE \
                     token = IF(expires <= ?, VALUES(token), token), \
                     expires = IF(expires <= ?, VALUES(expires), expires)"
                    ),
                    &[
                        params[0].clone(),
                        params[1].clone(),
                        params[2].clone(),
                        params[3].clone(),
                        params[3].clone(),
                    ],
                )?;
                Ok(n >= 1)
            }
        })
}

/// Deletes expired lease rows, now and then, within what is left of the
/// take's `budget`.
fn maybe_sweep(shared: &Shared, budget: &Budget) {
    static TAKES: AtomicU64 = AtomicU64::new(0);
    if TAKES.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY != SWEEP_EVERY - 1 {
        return;
    }
    if budget.left().is_zero() {
        return;
    }
    let r = shared.pool.with_conn_in(budget, |c| {
        c.exec(
            &format!("DELETE FROM {} WHERE expires <= ?", shared.sql.lease),
            &[Val::Int(now_ms())],
        )
    });
    if let Err(e) = r {
        log::debug!("picocache: sweeping expired leases failed: {e}");
    }
}

/// Takes the lease of `key` in namespace `ns`, trying for up to `wait`; each
/// try is one operation (within the timeout), so this ends within `wait`
/// plus the timeout.
pub(super) fn take(
    shared: &Arc<Shared>,
    ns: i64,
    key: &[u8],
    wait: Duration,
) -> Result<Option<Lease>> {
    let name = name(shared, ns, key);
    let token = token();
    let mut budget = shared.pool.budget();
    let taken = crate::backend::poll(wait, || {
        budget = shared.pool.budget();
        try_take(shared, &budget, &name, &token).map(|t| t.then_some(()))
    })?;
    Ok(taken.map(|()| {
        maybe_sweep(shared, &budget);
        Lease(Box::new(SqlLease {
            shared: shared.clone(),
            name,
            token,
        }))
    }))
}

struct SqlLease {
    shared: Arc<Shared>,
    name: Vec<u8>,
    token: String,
}

impl Drop for SqlLease {
    fn drop(&mut self) {
        let s = &self.shared;
        let r = s.pool.with_conn(|c| {
            c.exec(
                &format!("DELETE FROM {} WHERE name = ? AND token = ?", s.sql.lease),
                &[Val::Bytes(self.name.clone()), Val::Text(self.token.clone())],
            )
        });
        match r {
            Ok(_) => {}
            // The server is away: the lease expires by itself.
            Err(Error::Unavailable { .. }) => {}
            Err(e) => log::warn!(
                "picocache: releasing a {} lease failed (it expires by itself): {e}",
                s.kind()
            ),
        }
    }
}

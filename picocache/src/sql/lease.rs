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
//!
//! SQLite: the database is a file on this machine, so its leases say who
//! holds them (the token starts with the boot id, the pid namespace, the pid
//! and the process's start time; see [`holder`]): a taker that finds a lease
//! whose holder, on this boot and in this pid namespace, is no longer
//! running takes it over at once, as a `LocalCache` does (it waited
//! `lease_ttl`, 60 s by default, after a SIGKILL).

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

/// Who this process is, as a lease token of SQLite says it: boot id, pid
/// namespace, pid and start time (Linux's `/proc`); None where they cannot
/// be read.
fn holder() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let pid = std::process::id();
    let start = start_time(pid)?;
    Some(format!("{}/{}/{pid}/{start}/", boot.trim(), ns.display()))
}

/// The start time (in clock ticks after boot) of process `pid`, from
/// `/proc/PID/stat`; None if there is no such process, or it has ended and
/// only waits to be reaped (a zombie, state `Z`, or `X`): a holder killed
/// but not yet waited for by its parent holds nothing any more.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields 3 (state) and 22; the command name (field 2) may hold spaces
    // and parentheses.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the lease token `held` names a process of this boot and pid
/// namespace that is no longer running (so its lease can be taken now).
fn holder_is_gone(held: &str) -> bool {
    let Some(me) = holder() else { return false };
    let mut mine = me.splitn(5, '/');
    let mut theirs = held.splitn(5, '/');
    let (Some(boot), Some(ns)) = (mine.next(), mine.next()) else {
        return false;
    };
    if theirs.next() != Some(boot) || theirs.next() != Some(ns) {
        return false;
    }
    let (Some(Ok(pid)), Some(Ok(start))) = (
        theirs.next().map(str::parse::<u32>),
        theirs.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    start_time(pid) != Some(start)
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
                if n == 1 || shared.sql.dialect != Dialect::Sqlite {
                    return Ok(n == 1);
                }
                // SQLite: a live row of a holder that is gone is taken over.
                let rows = c.query(
                    &format!("SELECT token FROM {t} WHERE name = ?"),
                    &params[..1],
                )?;
                let held = match rows.first().and_then(|r| r.first()) {
                    Some(Val::Text(held)) if holder_is_gone(held) => held.clone(),
                    _ => return Ok(false),
                };
                let n = c.exec(
                    &format!("UPDATE {t} SET token = ?, expires = ? WHERE name = ? AND token = ?"),
                    &[
                        params[1].clone(),
                        params[2].clone(),
                        params[0].clone(),
                        Val::Text(held),
                    ],
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
    let token = match shared.sql.dialect {
        Dialect::Sqlite => holder().unwrap_or_default() + &token(),
        _ => token(),
    };
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

#[cfg(test)]
mod tests {
    use super::{holder, holder_is_gone};

    #[test]
    fn a_holder_is_gone_only_when_this_boot_and_namespace_say_so() {
        let Some(me) = holder() else {
            eprintln!("SKIPPED: /proc cannot say who this process is");
            return;
        };
        assert!(!holder_is_gone(&(me.clone() + "token")), "this process");
        // A child that has exited: same boot and namespace, gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = super::start_time(pid);
        child.wait().unwrap();
        let parts: Vec<&str> = me.splitn(5, '/').collect();
        let dead = format!(
            "{}/{}/{pid}/{}/token",
            parts[0],
            parts[1],
            start.unwrap_or(1)
        );
        assert!(holder_is_gone(&dead), "{dead}");
        // Another boot, another pid namespace, or a random token: not known.
        let other_boot = format!("00000000-0000/{}/{pid}/1/token", parts[1]);
        assert!(!holder_is_gone(&other_boot));
        let other_ns = format!("{}/pid:[1]/{pid}/1/token", parts[0]);
        assert!(!holder_is_gone(&other_ns));
        assert!(!holder_is_gone("0123456789abcdef01234567"));
    }

    /// A holder that was killed but not yet reaped by its parent (a
    /// zombie) holds nothing: its lease is taken at once, not after
    /// `lease_timeout` (adversarial round 25 waited the whole timeout).
    #[test]
    fn a_zombie_holder_is_gone() {
        let Some(me) = holder() else {
            eprintln!("SKIPPED: /proc cannot say who this process is");
            return;
        };
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = super::start_time(pid).expect("a running child");
        let parts: Vec<&str> = me.splitn(5, '/').collect();
        let token = format!("{}/{}/{pid}/{start}/token", parts[0], parts[1]);
        assert!(!holder_is_gone(&token), "a running holder");
        child.kill().unwrap();
        // Not reaped: wait for the kernel to make it a zombie.
        let zombie = (0..500).any(|_| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let z = stat
                .rsplit_once(") ")
                .is_some_and(|(_, r)| r.starts_with('Z'));
            if !z {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            z
        });
        assert!(zombie, "the child never became a zombie");
        assert!(holder_is_gone(&token), "a zombie holder");
        child.wait().unwrap();
    }
}

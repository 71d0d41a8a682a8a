//! The connection pool of one [`SqlBackend`](super::SqlBackend): at most
//! `pool_size` connections, reconnection after an outage, and the back-off
//! of [`guard::Breaker`].

use super::guard::{self, BoundedPool, Breaker, Budget};
use super::{Conn, Driver};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

pub(crate) struct Pool {
    pub(crate) driver: Box<dyn Driver>,
    conns: BoundedPool<Box<dyn Conn>>,
    breaker: Breaker,
    /// The budget of one operation ([`SqlOptions::timeout`](super::SqlOptions::timeout);
    /// SQLite's busy timeout if longer).
    op_timeout: Duration,
    /// [`SqlOptions::connect_timeout`](super::SqlOptions::connect_timeout).
    connect_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(driver: Box<dyn Driver>, options: &super::SqlOptions) -> Pool {
        let kind = driver.dialect().kind();
        // SQLite's statements wait for other writers up to the busy
        // timeout; a wait for a pooled connection may be as long.
        let wait = match driver.dialect() {
            #[cfg(feature = "sqlite")]
            super::Dialect::Sqlite => options.timeout.max(super::sqlite::busy_timeout(options)),
            _ => options.timeout,
        };
        let conns = BoundedPool::new(kind, options.pool_size as usize, wait)
            .sharing_lingering(lingering_for(&driver.describe()));
        Pool {
            driver,
            conns,
            breaker: Breaker::new(kind, options.backoff, options.backoff_max),
            op_timeout: wait,
            connect_timeout: options.connect_timeout,
        }
    }

    /// The most connections open at once.
    pub(crate) fn max(&self) -> usize {
        self.conns.max()
    }

    /// Stops new operations and waits, until `until` at the latest, for the
    /// running ones (see `fork.rs`); whether they all ended.
    pub(crate) fn quiesce(&self, until: std::time::Instant) -> bool {
        self.conns.quiesce(until)
    }

    /// Ends a [`Pool::quiesce`].
    pub(crate) fn resume(&self) {
        self.conns.resume()
    }

    /// Whether calls skip the server now (its back-off window).
    pub(crate) fn is_down(&self) -> bool {
        self.breaker.is_down()
    }

    /// A budget for one operation, starting now.
    pub(crate) fn budget(&self) -> Budget {
        Budget::new(self.op_timeout)
    }

    /// A budget for opening the backend: the connect and the schema
    /// together within `connect_timeout + timeout`.
    pub(crate) fn opening_budget(&self) -> Budget {
        Budget::with_connect(self.op_timeout.saturating_add(self.connect_timeout))
    }

    /// [`Pool::with_conn_in`] with a budget of its own.
    pub(crate) fn with_conn<T>(&self, f: impl FnMut(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.with_conn_in(&self.budget(), f)
    }

    /// Runs `f` on a pooled connection, every statement of it within what
    /// is left of `budget` (a connection opened on the way adds its
    /// connecting time once). If `f` fails because the server went away
    /// (not a timeout) on a connection that was idle in the pool, closes
    /// the idle connections and runs `f` once more on a fresh connection.
    /// Fails at once while the backend is in its back-off window.
    pub(crate) fn with_conn_in<T>(
        &self,
        budget: &Budget,
        mut f: impl FnMut(&mut dyn Conn) -> Result<T>,
    ) -> Result<T> {
        self.breaker.call(|| {
            let connect = || budget.connecting(|| self.driver.connect(self.conns.lingering()));
            let mut c = self.conns.checkout_by(budget.deadline(), connect)?;
            c.conn().set_deadline(budget.deadline());
            let r = f(c.conn().as_mut());
            match r {
                Err(e @ Error::Unavailable { .. }) => {
                    let reused = c.reused;
                    drop(c);
                    self.conns.clear_idle();
                    if !reused || guard::is_timeout(&e) {
                        return Err(e);
                    }
                    let mut c = self.conns.checkout_by(budget.deadline(), connect)?;
                    c.conn().set_deadline(budget.deadline());
                    let r = f(c.conn().as_mut());
                    self.checkin(c);
                    r
                }
                r => {
                    self.checkin(c);
                    r
                }
            }
        })
    }

    fn checkin(&self, c: guard::Checked<'_, Box<dyn Conn>>) {
        let mut c = c;
        if !c.conn().broken() {
            c.put_back();
        }
    }
}

/// The count of abandoned connections still open to one server (by its
/// description), shared by every pool of this process to it: a store opened
/// again after a failure (a new pool) counts what the old one left behind.
fn lingering_for(server: &str) -> Arc<AtomicUsize> {
    static BY_SERVER: OnceLock<Mutex<HashMap<String, Arc<AtomicUsize>>>> = OnceLock::new();
    BY_SERVER
        .get_or_init(Default::default)
        .lock()
        .entry(server.to_owned())
        .or_default()
        .clone()
}

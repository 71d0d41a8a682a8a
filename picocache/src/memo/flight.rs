//! In-process deduplication: concurrent calls of one [`Memo`] with the same
//! arguments compute once; the others wait for the computing caller (the
//! leader) and read its result.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::ThreadId;

use parking_lot::{Condvar, Mutex};

use super::{Memo, SHARDS};

/// How an in-process computation ended.
#[derive(Clone)]
pub(super) enum Outcome {
    /// The encoded result.
    Value(Arc<Vec<u8>>),
    /// The computing caller panicked or failed; waiters try again.
    Failed,
}

/// One in-process computation of a key, which other callers wait for.
pub(super) struct Flight {
    owner: ThreadId,
    outcome: Mutex<Option<Outcome>>,
    cv: Condvar,
}

impl Flight {
    pub(super) fn wait(&self) -> Outcome {
        let mut o = self.outcome.lock();
        loop {
            if let Some(o) = &*o {
                return o.clone();
            }
            self.cv.wait(&mut o);
        }
    }
}

pub(super) type Shard = Mutex<HashMap<Vec<u8>, Arc<Flight>>>;

/// The leader's hold on a flight: completing it (or dropping it, on a panic)
/// removes it from the map and wakes the waiters.
pub(super) struct FlightGuard<'a> {
    shard: &'a Shard,
    key: &'a [u8],
    flight: Arc<Flight>,
    done: bool,
}

impl FlightGuard<'_> {
    pub(super) fn complete(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        self.shard.lock().remove(self.key);
        *self.flight.outcome.lock() = Some(outcome);
        self.flight.cv.notify_all();
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.finish(Outcome::Failed);
    }
}

pub(super) enum Role<'a> {
    Leader(FlightGuard<'a>),
    Waiter(Arc<Flight>),
    /// This thread is already computing the key (the function calls itself
    /// with the same arguments): run without the cache.
    Reentrant,
}

impl Memo {
    /// Joins the in-process computation of `key`, or starts one.
    pub(super) fn join<'a>(&'a self, key: &'a [u8]) -> Role<'a> {
        let h = xxhash_rust::xxh3::xxh3_64(key) as usize;
        let shard = &self.flights[h % SHARDS];
        let mut map = shard.lock();
        if let Some(f) = map.get(key) {
            if f.owner == std::thread::current().id() {
                return Role::Reentrant;
            }
            return Role::Waiter(f.clone());
        }
        let flight = Arc::new(Flight {
            owner: std::thread::current().id(),
            outcome: Mutex::new(None),
            cv: Condvar::new(),
        });
        map.insert(key.to_vec(), flight.clone());
        Role::Leader(FlightGuard {
            shard,
            key,
            flight,
            done: false,
        })
    }
}

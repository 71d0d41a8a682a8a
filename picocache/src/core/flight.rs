//! In-process deduplication: concurrent calls with the same key compute
//! once; the others wait for the computing caller (the leader) and take its
//! result. A call from the leader itself is re-entry (the function calls
//! itself with the same arguments): waiting would never end, so it is told
//! apart and runs uncached, as `functools.lru_cache` does.
//!
//! A flight is tagged with the process's fork generation
//! ([`picocache_engine::fork_generation`]): in a child forked while a
//! thread of its parent computed, that thread does not exist, so a flight
//! of an earlier generation is treated as absent (the child computes).
//! (A fork while another thread held one of the table's locks for the few
//! instructions it does would still leave the child that lock held: the
//! Python adapter forks holding them; Rust programs rarely fork threads.)
//!
//! A caller is a thread ([`Flights::join`]: it waits by blocking) or a task
//! of an event loop ([`Flights::join_task`]: many on one thread; it waits
//! by [`Flight::when_done`], a callback the leader runs as it finishes).

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::ThreadId;

use parking_lot::{Condvar, Mutex};

const SHARDS: usize = 16;

type Shard<T> = Mutex<HashMap<Vec<u8>, Arc<Flight<T>>>>;

/// The computations in flight, by key. `T` is what a leader hands to its
/// waiters (the encoded result in Rust, the result object in Python).
pub struct Flights<T> {
    shards: Arc<[Shard<T>]>,
}

impl<T: Clone> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl<T> std::fmt::Debug for Flights<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: usize = self.shards.iter().map(|s| s.lock().len()).sum();
        f.debug_struct("Flights").field("in_flight", &n).finish()
    }
}

/// Who leads a flight: a thread, or a task of an event loop running on a
/// thread.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Owner {
    Thread(ThreadId),
    Task(u64, ThreadId),
}

impl Owner {
    /// Whether a join by `self` of a flight `leader` leads is re-entry:
    /// waiting would never end. The same owner; or a thread and a task of
    /// the event loop it runs, either way round (a thread that blocks
    /// waits for a task its own loop can no longer run; a task awaits a
    /// thread that is itself running the task's loop).
    fn reenters(self, leader: Owner) -> bool {
        match (self, leader) {
            (Owner::Thread(a), Owner::Task(_, b)) | (Owner::Task(_, a), Owner::Thread(b)) => a == b,
            _ => self == leader,
        }
    }
}

/// A callback run when a flight finishes ([`Flight::when_done`]).
type Callback = Box<dyn FnOnce() + Send>;

/// One in-process computation of a key, which other callers wait for.
pub struct Flight<T> {
    owner: Owner,
    /// The fork generation of the process that started it.
    gen: u64,
    state: Mutex<FlightState<T>>,
    cv: Condvar,
}

struct FlightState<T> {
    /// `None` while in flight; then the leader's result, or `None` if it
    /// failed.
    outcome: Option<Option<T>>,
    /// Run once the outcome is set.
    callbacks: Vec<Callback>,
}

impl<T: Clone> Flight<T> {
    /// Waits for the leader: its result, or `None` if it failed (raised,
    /// panicked): the waiter then tries again, maybe leading.
    pub fn wait(&self) -> Option<T> {
        let mut st = self.state.lock();
        loop {
            if let Some(o) = &st.outcome {
                return o.clone();
            }
            self.cv.wait(&mut st);
        }
    }

    /// [`Flight::wait`] for at most `d`: `None` if the leader is still
    /// computing then (a caller that must look for signals between waits).
    pub fn wait_for(&self, d: std::time::Duration) -> Option<Option<T>> {
        let Some(deadline) = std::time::Instant::now().checked_add(d) else {
            return Some(self.wait()); // (a wait too long to have an end)
        };
        let mut st = self.state.lock();
        loop {
            if let Some(o) = &st.outcome {
                return Some(o.clone());
            }
            if self.cv.wait_until(&mut st, deadline).timed_out() {
                return st.outcome.clone();
            }
        }
    }

    /// The outcome without waiting: `None` while the leader computes, else
    /// what [`Flight::wait`] returns.
    pub fn outcome(&self) -> Option<Option<T>> {
        self.state.lock().outcome.clone()
    }

    /// Runs `f` once the leader finishes (completes or fails): at once, in
    /// this thread, if it has; else in the leader's thread as it finishes,
    /// after the outcome is set and no lock of the table is held. For a
    /// waiter that must not block (an event loop's task): `f` wakes it,
    /// and it reads [`Flight::outcome`].
    pub fn when_done(&self, f: impl FnOnce() + Send + 'static) {
        let mut st = self.state.lock();
        if st.outcome.is_none() {
            st.callbacks.push(Box::new(f));
            return;
        }
        drop(st);
        f();
    }
}

/// What a caller is to do with a key.
pub enum Role<T> {
    /// Compute, then [`FlightGuard::complete`] (dropping the guard fails the
    /// flight: the waiters try again).
    Leader(FlightGuard<T>),
    /// Wait for the leader ([`Flight::wait`]).
    Waiter(Arc<Flight<T>>),
    /// This thread is computing the key already: run without the cache.
    Reentrant,
}

impl<T: Clone> Flights<T> {
    /// Joins the computation of `key`, or starts one, as this thread.
    pub fn join(&self, key: &[u8]) -> Role<T> {
        self.join_as(key, Owner::Thread(std::thread::current().id()))
    }

    /// Joins the computation of `key`, or starts one, as the event loop's
    /// task `task` (an id unique among the tasks alive) on this thread:
    /// re-entry is this task's own computation, or this thread's (which
    /// runs the loop); another task of the same thread waits (with
    /// [`Flight::when_done`], not [`Flight::wait`], which would block its
    /// event loop and the leader with it). A thread that joins a flight a
    /// task of its own loop leads is re-entry too.
    pub fn join_task(&self, key: &[u8], task: u64) -> Role<T> {
        self.join_as(key, Owner::Task(task, std::thread::current().id()))
    }

    fn join_as(&self, key: &[u8], me: Owner) -> Role<T> {
        let shard = xxhash_rust::xxh3::xxh3_64(key) as usize % self.shards.len();
        let gen = picocache_engine::fork_generation();
        let mut map = self.shards[shard].lock();
        // (A flight of an earlier generation was started before a fork by a
        // thread this process does not have: replaced.)
        if let Some(f) = map.get(key).filter(|f| f.gen == gen) {
            if me.reenters(f.owner) {
                return Role::Reentrant;
            }
            return Role::Waiter(f.clone());
        }
        let flight = Arc::new(Flight {
            owner: me,
            gen,
            state: Mutex::new(FlightState {
                outcome: None,
                callbacks: Vec::new(),
            }),
            cv: Condvar::new(),
        });
        map.insert(key.to_vec(), flight.clone());
        Role::Leader(FlightGuard {
            shards: self.shards.clone(),
            shard,
            key: key.to_vec(),
            flight,
            done: false,
        })
    }

    /// Forgets every computation (after a fork: the threads computing them
    /// do not exist in the child). Callers must make sure no lock of the
    /// table was held at the fork (the Python adapter takes them only while
    /// holding the GIL, which the forking thread holds).
    pub fn forget_all(&self) {
        for s in self.shards.iter() {
            s.lock().clear();
        }
    }
}

/// The leader's hold on a flight: completing it (or dropping it, on a
/// failure or a panic) removes it from the table and wakes the waiters.
pub struct FlightGuard<T> {
    shards: Arc<[Shard<T>]>,
    shard: usize,
    key: Vec<u8>,
    flight: Arc<Flight<T>>,
    done: bool,
}

impl<T> FlightGuard<T> {
    /// Hands `value` to the waiters.
    pub fn complete(mut self, value: T) {
        self.finish(Some(value));
    }

    fn finish(&mut self, outcome: Option<T>) {
        if self.done {
            return;
        }
        self.done = true;
        {
            let mut map = self.shards[self.shard].lock();
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
        }
        let callbacks = {
            let mut st = self.flight.state.lock();
            st.outcome = Some(outcome);
            std::mem::take(&mut st.callbacks)
        };
        self.flight.cv.notify_all();
        for f in callbacks {
            f();
        }
    }
}

impl<T> Drop for FlightGuard<T> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_thread_waits_and_takes_the_leaders_value() {
        let f: Arc<Flights<u32>> = Arc::default();
        let Role::Leader(g) = f.join(b"k") else {
            panic!("first caller leads")
        };
        assert!(
            matches!(f.join(b"k"), Role::Reentrant),
            "same thread: re-entry"
        );
        let f2 = f.clone();
        let t = std::thread::spawn(move || match f2.join(b"k") {
            Role::Waiter(w) => w.wait(),
            _ => panic!("second thread waits"),
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        g.complete(7);
        assert_eq!(t.join().unwrap(), Some(7));
        assert!(
            matches!(f.join(b"k"), Role::Leader(_)),
            "done: the key leads again"
        );
    }

    #[test]
    fn tasks_of_one_thread_wait_for_each_other_by_callback() {
        let f: Arc<Flights<u32>> = Arc::default();
        let Role::Leader(g) = f.join_task(b"k", 1) else {
            panic!("first task leads")
        };
        assert!(matches!(f.join_task(b"k", 1), Role::Reentrant));
        let Role::Waiter(w) = f.join_task(b"k", 2) else {
            panic!("another task of the same thread waits")
        };
        let f2 = f.clone();
        let (joined, has_joined) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let role = f2.join(b"k");
            joined.send(()).unwrap();
            match role {
                Role::Waiter(w2) => w2.wait(),
                _ => panic!("so does another thread"),
            }
        });
        has_joined.recv().unwrap();
        assert_eq!(w.outcome(), None);
        assert_eq!(w.wait_for(std::time::Duration::from_millis(10)), None);
        let woken = Arc::new(Mutex::new(Vec::new()));
        let w_ = woken.clone();
        w.when_done(move || w_.lock().push("before"));
        assert!(woken.lock().is_empty(), "not run while in flight");
        g.complete(5);
        assert_eq!(*woken.lock(), ["before"], "run as the leader finished");
        assert_eq!(
            (w.outcome(), thread.join().unwrap()),
            (Some(Some(5)), Some(5))
        );
        assert_eq!(w.wait_for(std::time::Duration::ZERO), Some(Some(5)));
        let w_ = woken.clone();
        w.when_done(move || w_.lock().push("after"));
        assert_eq!(*woken.lock(), ["before", "after"], "done: run at once");
    }

    #[test]
    fn a_thread_and_a_task_of_its_own_loop_reenter_each_other() {
        let f: Arc<Flights<u32>> = Arc::default();
        let Role::Leader(g) = f.join_task(b"k", 1) else {
            panic!()
        };
        assert!(
            matches!(f.join(b"k"), Role::Reentrant),
            "a blocking wait here would stop the loop that runs the leader"
        );
        let f2 = f.clone();
        let other = std::thread::spawn(move || matches!(f2.join(b"k"), Role::Waiter(_)));
        assert!(other.join().unwrap(), "another thread waits");
        drop(g);
        let Role::Leader(g) = f.join(b"j") else {
            panic!()
        };
        assert!(matches!(f.join_task(b"j", 7), Role::Reentrant));
        let f2 = f.clone();
        let other = std::thread::spawn(move || matches!(f2.join_task(b"j", 8), Role::Waiter(_)));
        assert!(
            other.join().unwrap(),
            "a task of another thread's loop waits"
        );
        drop(g);
    }

    #[test]
    fn a_failed_leader_wakes_its_callbacks_too() {
        let f: Flights<u32> = Flights::default();
        let Role::Leader(g) = f.join_task(b"k", 1) else {
            panic!()
        };
        let Role::Waiter(w) = f.join_task(b"k", 2) else {
            panic!()
        };
        let woken = Arc::new(Mutex::new(0));
        let w_ = woken.clone();
        w.when_done(move || *w_.lock() += 1);
        drop(g);
        assert_eq!((*woken.lock(), w.outcome()), (1, Some(None)));
        assert!(
            matches!(f.join_task(b"k", 2), Role::Leader(_)),
            "then leads"
        );
    }

    #[test]
    fn a_dropped_leader_fails_its_waiters() {
        let f: Arc<Flights<u32>> = Arc::default();
        let Role::Leader(g) = f.join(b"k") else {
            panic!()
        };
        let f2 = f.clone();
        let t = std::thread::spawn(move || match f2.join(b"k") {
            Role::Waiter(w) => w.wait(),
            _ => panic!("second thread waits"),
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(g);
        assert_eq!(t.join().unwrap(), None);
    }

    #[test]
    fn forgetting_all_leaves_a_finishing_leader_harmless() {
        let f: Flights<u32> = Flights::default();
        let Role::Leader(old) = f.join(b"k") else {
            panic!()
        };
        f.forget_all();
        let Role::Leader(new) = f.join(b"k") else {
            panic!("forgotten: leads again")
        };
        old.complete(1); // must not remove the new flight
        let f_ref = &f;
        let t = std::thread::scope(|s| {
            s.spawn(move || matches!(f_ref.join(b"k"), Role::Waiter(_)))
                .join()
        });
        assert!(t.unwrap(), "the new flight is still in the table");
        new.complete(2);
    }
}

//! A connection on its own thread, so that a caller can stop waiting for it.
//!
//! The `postgres` crate's blocking client has no read timeout: a server that
//! accepts a connection and never answers would block its caller for as long
//! as the socket lives. A [`Worker`] owns such a connection on a thread of
//! its own; each operation is sent to it, and the caller waits at most its
//! timeout for the answer. If none comes, the caller fails with
//! [`TimedOut`] and abandons the connection: its thread ends when the
//! blocked operation does (the socket closes, or TCP's keepalive or user
//! timeout gives up on it). Until then the server still holds the
//! connection: an abandoned thread is counted in its pool's `lingering`
//! count, which keeps its place in the pool (the pool opens no connection
//! in its stead), so the server does not see more connections from a pool
//! than its size while it is slow. Not forever: a connection the server
//! keeps open and silent (a stuck backend behind a proxy ACKs TCP, so no
//! keepalive fires) would hold its place for good and the pool would never
//! serve again although the server answers new connections; so a place is
//! given back [`LINGER`] after the abandon (the thread, still blocked,
//! stays counted in [`MAX_STUCK`]). At most [`MAX_STUCK`] abandoned threads
//! exist at once in the process; while that many are stuck, new
//! connections fail at once instead of starting more: a server that stops
//! answering sees at most a pool's size plus [`MAX_STUCK`] connections of
//! a process.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::guard::{unavailable, TimedOut};
use crate::Result;

/// Most abandoned (stuck) connection threads at once, per process.
pub(crate) const MAX_STUCK: usize = 16;

static STUCK: AtomicUsize = AtomicUsize::new(0);

/// How long an abandoned connection keeps its place in its pool (if its
/// thread has not ended before).
pub(crate) const LINGER: Duration = Duration::from_secs(10);

/// One abandoned connection's place in its pool's lingering count, given
/// back once: when its thread ends or after [`LINGER`], whichever is first.
struct Place {
    lingering: Arc<AtomicUsize>,
    held: AtomicBool,
}

impl Place {
    fn give_back(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

const RUNNING: u8 = 0;
const ABANDONED: u8 = 1;
const EXITED: u8 = 2;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Too many connection threads are stuck on servers that do not answer.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} connections are still waiting for a server that stopped answering; not opening another"
)]
struct TooManyStuck(usize);

/// The thread ended (a panic in the client library).
#[derive(Debug, thiserror::Error)]
#[error("the connection's thread ended")]
struct Gone;

/// Marks the thread's end; un-counts it from [`STUCK`] and gives its place
/// in the pool back if it was abandoned.
struct Exit(Arc<AtomicU8>, Arc<Place>);

impl Drop for Exit {
    fn drop(&mut self) {
        if self
            .0
            .compare_exchange(RUNNING, EXITED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            STUCK.fetch_sub(1, Ordering::AcqRel);
            self.1.give_back();
        }
    }
}

/// A connection of type `S` living on its own thread.
pub(crate) struct Worker<S> {
    backend: &'static str,
    jobs: Option<mpsc::Sender<Job<S>>>,
    state: Arc<AtomicU8>,
    /// This connection's place in its pool's count of abandoned
    /// connections still open.
    place: Arc<Place>,
}

impl<S: 'static> Worker<S> {
    /// Starts a thread that opens the connection with `open`, waiting at
    /// most `timeout` for it. If it is abandoned, it counts in `lingering`
    /// (its pool's) until its thread ends.
    pub(crate) fn spawn(
        backend: &'static str,
        timeout: Duration,
        lingering: Arc<AtomicUsize>,
        open: impl FnOnce() -> Result<S> + Send + 'static,
    ) -> Result<Worker<S>> {
        let stuck = STUCK.load(Ordering::Acquire);
        if stuck >= MAX_STUCK {
            return Err(unavailable(backend, TooManyStuck(stuck)));
        }
        let (jobs, queue) = mpsc::channel::<Job<S>>();
        let (opened_tx, opened) = mpsc::sync_channel::<Result<()>>(1);
        let state = Arc::new(AtomicU8::new(RUNNING));
        let place = Arc::new(Place {
            lingering,
            held: AtomicBool::new(false),
        });
        let exit = Exit(state.clone(), place.clone());
        std::thread::Builder::new()
            .name(format!("picocache-{backend}"))
            .spawn(move || {
                let _exit = exit;
                let mut conn = match open() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                if opened_tx.send(Ok(())).is_err() {
                    return;
                }
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| unavailable(backend, e))?;
        let mut w = Worker {
            backend,
            jobs: Some(jobs),
            state,
            place,
        };
        match opened.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(w),
            Ok(Err(e)) => Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                w.abandon();
                Err(unavailable(
                    backend,
                    TimedOut {
                        what: "connecting",
                        after: timeout,
                    },
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(unavailable(backend, Gone)),
        }
    }

    /// Runs `f` on the connection, waiting at most `timeout` for it. On a
    /// timeout the connection is abandoned: every later call fails.
    pub(crate) fn run<T: Send + 'static>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut S) -> T + Send + 'static,
    ) -> Result<T> {
        let Some(jobs) = &self.jobs else {
            return Err(unavailable(self.backend, Gone));
        };
        let (done, answer) = mpsc::sync_channel(1);
        let job: Job<S> = Box::new(move |conn| {
            let _ = done.send(f(conn));
        });
        if jobs.send(job).is_err() {
            self.jobs = None;
            return Err(unavailable(self.backend, Gone));
        }
        match answer.recv_timeout(timeout) {
            Ok(v) => Ok(v),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.abandon();
                Err(unavailable(
                    self.backend,
                    TimedOut {
                        what: "a statement",
                        after: timeout,
                    },
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.jobs = None;
                Err(unavailable(self.backend, Gone))
            }
        }
    }

    /// Gives the thread up: it ends once its blocked operation does.
    fn abandon(&mut self) {
        self.jobs = None;
        STUCK.fetch_add(1, Ordering::AcqRel);
        self.place.lingering.fetch_add(1, Ordering::AcqRel);
        self.place.held.store(true, Ordering::Release);
        if self
            .state
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // It had ended already.
            STUCK.fetch_sub(1, Ordering::AcqRel);
            self.place.give_back();
            return;
        }
        // The place comes back after LINGER even if the thread stays blocked.
        let place = self.place.clone();
        let _ = std::thread::Builder::new()
            .name("picocache-linger".into())
            .spawn(move || {
                std::thread::sleep(LINGER);
                place.give_back();
            });
    }
}

/// Connection threads abandoned and still blocked, in this process.
#[allow(dead_code)]
pub(crate) fn stuck() -> usize {
    STUCK.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (up to 5 s) until `n` is zero.
    fn settles(n: &AtomicUsize) -> bool {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while n.load(Ordering::Acquire) != 0 {
            if std::time::Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn answers_and_timeouts() {
        let lingering = Arc::new(AtomicUsize::new(0));
        let mut w = Worker::spawn("test", Duration::from_secs(5), lingering.clone(), || {
            Ok(41u32)
        })
        .unwrap();
        assert_eq!(w.run(Duration::from_secs(5), |n| *n + 1).unwrap(), 42);
        let (release, wait) = mpsc::channel::<()>();
        let start = std::time::Instant::now();
        let r = w.run(Duration::from_millis(50), move |_| {
            let _ = wait.recv();
        });
        assert!(r.is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(w.run(Duration::from_secs(1), |_| ()).is_err(), "abandoned");
        // The abandoned connection keeps its place in the pool while its
        // thread is blocked.
        assert_eq!(lingering.load(Ordering::Acquire), 1);
        drop(w);
        assert_eq!(lingering.load(Ordering::Acquire), 1, "still blocked");
        drop(release); // the blocked job returns; the thread ends
        assert!(settles(&lingering), "its place is given back when it ends");
        let slow = Worker::spawn("test", Duration::from_millis(50), lingering.clone(), || {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        });
        assert!(slow.is_err());
        assert_eq!(
            lingering.load(Ordering::Acquire),
            1,
            "a connect still running"
        );
        assert!(settles(&lingering));
    }

    #[test]
    fn a_connection_that_never_answers_gives_its_place_back_after_linger() {
        let lingering = Arc::new(AtomicUsize::new(0));
        let mut w = Worker::spawn("test", Duration::from_secs(5), lingering.clone(), || {
            Ok(0u32)
        })
        .unwrap();
        let (release, wait) = mpsc::channel::<()>();
        assert!(w
            .run(Duration::from_millis(50), move |_| {
                let _ = wait.recv();
            })
            .is_err());
        let at = std::time::Instant::now();
        assert_eq!(lingering.load(Ordering::Acquire), 1, "its place is kept");
        assert!(stuck() >= 1);
        while lingering.load(Ordering::Acquire) != 0 {
            assert!(at.elapsed() < LINGER * 2, "never given back");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(at.elapsed() >= LINGER - Duration::from_millis(100));
        assert!(stuck() >= 1, "the blocked thread still counts as stuck");
        drop(release); // the thread ends: nothing is given back twice
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(lingering.load(Ordering::Acquire), 0);
    }
}

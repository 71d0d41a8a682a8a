//! What keeps a remote backend from blocking its callers: a bounded
//! connection pool, a back-off after failures, and the timeout settings a URL
//! may carry. Shared by the SQL backends and the Redis backend (which
//! includes this file as its own module).
//!
//! - [`BoundedPool`] (`guard/bounded.rs`): at most `max` connections open at
//!   once (idle or in use); a caller that finds them all in use waits at
//!   most the operation timeout for one, then fails with [`PoolBusy`] (an
//!   [`Error::Unavailable`] that does not count as a server failure).
//! - [`Breaker`]: after an operation fails with [`Error::Unavailable`] (the
//!   server refused, broke the connection or did not answer in time), every
//!   call fails at once with [`Down`] for a back-off window; when it ends,
//!   one call (and only one, with the same short timeouts) tries the server
//!   again: success closes the breaker, a failure doubles the window (up to
//!   a maximum).
//! - [`UrlSettings`]: `timeout=`, `connect_timeout=` (seconds, fractions
//!   allowed) and `max_value_size=` (bytes) taken out of a URL's query.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::{Error, Result};

#[path = "guard/bounded.rs"]
mod bounded;
pub(crate) use bounded::{BoundedPool, Checked};

/// The longest time a duration option means: a day, as long as a URL's
/// `timeout=` and `connect_timeout=` may be. A longer setting (such as
/// `Duration::MAX` for "no limit") is taken as a day when a backend is
/// opened ([`at_most_a_day`]), so every deadline computed from it can be
/// represented (an `Instant` past its range panics when added to).
pub(crate) const LONGEST: Duration = Duration::from_secs(86_400);

/// `d`, or a day if longer (see [`LONGEST`]).
pub(crate) fn at_most_a_day(d: Duration) -> Duration {
    d.min(LONGEST)
}

/// `from + d`, never a panic: past the range of `Instant`, `from` plus
/// a day (or `from` itself: an operation then fails at once as a timeout,
/// never waits without end).
pub(crate) fn later(from: Instant, d: Duration) -> Instant {
    from.checked_add(d)
        .or_else(|| from.checked_add(d.min(LONGEST)))
        .unwrap_or(from)
}

/// The time one operation (a look-up, a store, a lease taken or released,
/// ...) has left: every statement or command of it waits at most what is
/// left, so the operation ends within its timeout in total, however many
/// round trips it makes. Opening a connection on the way adds the time that
/// took (at most the connect timeout) once.
#[derive(Debug)]
pub(crate) struct Budget {
    deadline: std::cell::Cell<Instant>,
    /// Whether opening a connection adds its time (else the budget counts
    /// the connect timeout in already).
    connect_extends: bool,
}

impl Budget {
    /// A budget of `timeout` from now.
    pub(crate) fn new(timeout: Duration) -> Budget {
        Budget {
            deadline: std::cell::Cell::new(later(Instant::now(), timeout)),
            connect_extends: true,
        }
    }

    /// A budget of `total` from now that connecting on the way does not
    /// extend (opening a backend: `connect_timeout + timeout` for the
    /// connect and the schema together).
    pub(crate) fn with_connect(total: Duration) -> Budget {
        Budget {
            deadline: std::cell::Cell::new(later(Instant::now(), total)),
            connect_extends: false,
        }
    }

    /// When the operation must have ended.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline.get()
    }

    /// The time left (zero once the deadline has passed).
    pub(crate) fn left(&self) -> Duration {
        self.deadline
            .get()
            .saturating_duration_since(Instant::now())
    }

    /// Moves the deadline by `by` (the time a new connection took to open).
    pub(crate) fn extend(&self, by: Duration) {
        self.deadline.set(later(self.deadline.get(), by));
    }

    /// Runs `connect` and extends the deadline by the time it took.
    pub(crate) fn connecting<T>(&self, connect: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let r = connect();
        if self.connect_extends {
            self.extend(t.elapsed());
        }
        r
    }
}

/// An operation that got no answer in time.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {after:?} ({what})")]
pub(crate) struct TimedOut {
    /// What timed out ("connecting", "a query").
    pub(crate) what: &'static str,
    /// The timeout.
    pub(crate) after: Duration,
}

/// A statement the server cancelled for time: its statement or lock timeout
/// (set from the operation's `timeout`) ran out, or a lock wait did. The
/// operation's time is spent: a timeout, as [`TimedOut`] (the backend is
/// skipped for its back-off window, and the statement is not tried again on
/// a fresh connection).
#[derive(Debug, thiserror::Error)]
#[error("the server cancelled a statement for time: {0}")]
pub(crate) struct CancelledForTime(pub(crate) String);

/// Every connection of the pool stayed in use while a caller waited.
#[derive(Debug, thiserror::Error)]
#[error("all {max} pooled connections stayed in use for {waited:?}")]
pub(crate) struct PoolBusy {
    /// Connections open.
    pub(crate) max: usize,
    /// How long the caller waited.
    pub(crate) waited: Duration,
}

/// The backend is skipped after a failure.
#[derive(Debug, thiserror::Error)]
#[error("{}", down_message(*retry_in, cause))]
pub(crate) struct Down {
    /// Until the next try (zero: another caller is trying now).
    pub(crate) retry_in: Duration,
    /// The failure that started the back-off.
    pub(crate) cause: String,
}

fn down_message(retry_in: Duration, cause: &str) -> String {
    if retry_in.is_zero() {
        format!("skipped while another call tries it again (after: {cause})")
    } else {
        format!("skipped for another {retry_in:?} (after: {cause})")
    }
}

/// An [`Error::Unavailable`] of `backend` with `source`.
pub(crate) fn unavailable(
    backend: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Unavailable {
        backend,
        source: Box::new(source),
    }
}

/// What is left of an operation's time: until `deadline` when one is set,
/// else the whole `timeout`. When nothing is left, the error that says so; the
/// operation was not sent, so the connection stays usable.
pub(crate) fn time_left(
    backend: &'static str,
    deadline: Option<Instant>,
    timeout: Duration,
) -> Result<Duration> {
    let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
    if left.is_zero() {
        return Err(unavailable(
            backend,
            TimedOut {
                what: "an operation",
                after: timeout,
            },
        ));
    }
    Ok(left)
}

/// Whether `e` is the server's fault (so the back-off starts): an
/// [`Error::Unavailable`] other than a busy pool or the back-off itself.
fn is_server_failure(e: &Error) -> bool {
    match e {
        Error::Unavailable { source, .. } => !source.is::<PoolBusy>() && !source.is::<Down>(),
        _ => false,
    }
}

/// Whether `e` is a timeout (retrying on a fresh connection would only wait
/// again).
pub(crate) fn is_timeout(e: &Error) -> bool {
    match e {
        Error::Unavailable { source, .. } => {
            source.is::<TimedOut>()
                || source.is::<CancelledForTime>()
                || source.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    )
                })
        }
        _ => false,
    }
}

#[derive(Default)]
struct BreakerState {
    /// While set, calls fail at once until this instant.
    until: Option<Instant>,
    /// Failures in a row (sets the window).
    failures: u32,
    /// A call is trying the server after a window.
    probing: bool,
    cause: String,
}

/// The back-off of one backend object; see the [module docs](self).
pub(crate) struct Breaker {
    backend: &'static str,
    first: Duration,
    max: Duration,
    state: Mutex<BreakerState>,
}

/// Clears the probing mark even if the probe panics.
struct Probe<'a>(Option<&'a Breaker>);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.0 {
            b.state.lock().probing = false;
        }
    }
}

impl Breaker {
    /// A closed breaker whose first window is `first`, doubling up to `max`.
    pub(crate) fn new(backend: &'static str, first: Duration, max: Duration) -> Breaker {
        Breaker {
            backend,
            first,
            max: max.max(first),
            state: Mutex::new(BreakerState::default()),
        }
    }

    /// Runs `f` unless the backend is in its back-off window (then fails at
    /// once with [`Down`]), and records how it went.
    pub(crate) fn call<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let probe = Probe(self.admit()?);
        let r = f();
        let mut s = self.state.lock();
        match &r {
            // A call that started before an earlier failure tripped the
            // breaker does not lengthen the window.
            Err(e) if is_server_failure(e) && (probe.0.is_some() || s.until.is_none()) => {
                s.failures = s.failures.saturating_add(1);
                let window = self
                    .first
                    .saturating_mul(1 << (s.failures - 1).min(20))
                    .min(self.max);
                s.until = Some(later(Instant::now(), window));
                s.cause = e.to_string();
                log::warn!(
                    "picocache: {} unavailable ({e}); calls skip it for {window:?}",
                    self.backend
                );
            }
            // The probe never reached the server (every pooled connection
            // was busy): the next call tries again.
            Err(Error::Unavailable { source, .. }) if source.is::<PoolBusy>() => {}
            // The server answered: a probe closes the breaker.
            _ if probe.0.is_some() => {
                s.until = None;
                s.failures = 0;
            }
            _ => {}
        }
        drop(s);
        drop(probe);
        r
    }

    /// `Ok(Some(self))` if this call is the probe after a window, `Ok(None)`
    /// if the breaker is closed, `Err` while calls are skipped.
    fn admit(&self) -> Result<Option<&Breaker>> {
        let mut s = self.state.lock();
        let Some(until) = s.until else {
            return Ok(None);
        };
        let now = Instant::now();
        if now < until || s.probing {
            return Err(unavailable(
                self.backend,
                Down {
                    retry_in: until.saturating_duration_since(now),
                    cause: s.cause.clone(),
                },
            ));
        }
        s.probing = true;
        Ok(Some(self))
    }

    /// Whether calls are being skipped now.
    pub(crate) fn is_down(&self) -> bool {
        self.state.lock().until.is_some()
    }
}

/// Settings a URL may carry in its query string.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct UrlSettings {
    /// `timeout=SECONDS`.
    pub(crate) timeout: Option<Duration>,
    /// `connect_timeout=SECONDS`.
    pub(crate) connect_timeout: Option<Duration>,
    /// `max_value_size=BYTES`.
    pub(crate) max_value_size: Option<usize>,
}

fn seconds(name: &str, v: &str) -> Result<Duration> {
    let s: f64 = v.parse().map_err(|_| {
        Error::InvalidArgument(format!(
            "URL parameter {name}={v:?} is not a number of seconds"
        ))
    })?;
    if !(s.is_finite() && s > 0.0 && s <= 86_400.0) {
        return Err(Error::InvalidArgument(format!(
            "URL parameter {name}={v:?}: give a number of seconds above 0 (at most a day)"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Takes `timeout`, `connect_timeout` and `max_value_size` out of `url`'s
/// query string; the URL without them, and their values.
pub(crate) fn take_url_settings(url: &str) -> Result<(String, UrlSettings)> {
    let (main, fragment) = match url.find('#') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let Some((base, query)) = main.split_once('?') else {
        return Ok((url.to_string(), UrlSettings::default()));
    };
    let mut out = UrlSettings::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "timeout" => out.timeout = Some(seconds(k, v)?),
            "connect_timeout" => out.connect_timeout = Some(seconds(k, v)?),
            "max_value_size" => {
                out.max_value_size = Some(v.parse().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "URL parameter max_value_size={v:?} is not a number of bytes"
                    ))
                })?)
            }
            _ => kept.push(pair),
        }
    }
    let mut u = base.to_string();
    if !kept.is_empty() {
        u.push('?');
        u.push_str(&kept.join("&"));
    }
    u.push_str(fragment);
    Ok((u, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn url_settings() {
        let (u, s) =
            take_url_settings("redis://h:1/0?timeout=0.5&connect_timeout=2#insecure").unwrap();
        assert_eq!(u, "redis://h:1/0#insecure");
        assert_eq!(s.timeout, Some(Duration::from_millis(500)));
        assert_eq!(s.connect_timeout, Some(Duration::from_secs(2)));
        let (u, s) =
            take_url_settings("mysql://u:p@h/db?charset=utf8mb4&max_value_size=1000&x=1").unwrap();
        assert_eq!(u, "mysql://u:p@h/db?charset=utf8mb4&x=1");
        assert_eq!(s.max_value_size, Some(1000));
        let (u, s) = take_url_settings("postgresql://h/db").unwrap();
        assert_eq!(
            (u.as_str(), s),
            ("postgresql://h/db", UrlSettings::default())
        );
        assert!(take_url_settings("redis://h?timeout=0").is_err());
        assert!(take_url_settings("redis://h?timeout=abc").is_err());
        assert!(take_url_settings("redis://h?max_value_size=-1").is_err());
    }

    #[test]
    fn breaker_skips_then_probes_once() {
        let b = Breaker::new(
            "test",
            Duration::from_millis(50),
            Duration::from_millis(200),
        );
        let fail = || -> Result<()> {
            Err(unavailable(
                "test",
                TimedOut {
                    what: "a query",
                    after: Duration::from_millis(1),
                },
            ))
        };
        assert!(b.call(fail).is_err());
        assert!(b.is_down());
        // Skipped: `f` does not run.
        let r = b.call(|| -> Result<()> { panic!("ran during the window") });
        assert!(matches!(r, Err(Error::Unavailable { source, .. }) if source.is::<Down>()));
        std::thread::sleep(Duration::from_millis(60));
        // The probe runs, fails: a longer window.
        assert!(b.call(fail).is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.call(|| Ok(())).is_err(), "window doubled to 100 ms");
        std::thread::sleep(Duration::from_millis(60));
        b.call(|| Ok(())).unwrap();
        assert!(!b.is_down());
    }

    #[test]
    fn durations_of_duration_max_never_panic() {
        assert_eq!(at_most_a_day(Duration::MAX), LONGEST);
        assert_eq!(
            at_most_a_day(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        let now = Instant::now();
        assert!(later(now, Duration::MAX) >= now + LONGEST);
        let budget = Budget::new(Duration::MAX);
        budget.extend(Duration::MAX);
        assert!(budget.left() >= LONGEST - Duration::from_secs(1));
        assert!(Budget::with_connect(Duration::MAX).left() > Duration::ZERO);
        // A back-off of MAX: the first failure opens a window, no panic.
        let b = Breaker::new("test", Duration::MAX, Duration::MAX);
        let r = b.call(|| -> Result<()> {
            Err(unavailable(
                "test",
                TimedOut {
                    what: "a query",
                    after: Duration::from_millis(1),
                },
            ))
        });
        assert!(r.is_err());
        assert!(b.is_down());
        assert!(b.call(|| Ok(())).is_err(), "skipped during the window");
        let pool: BoundedPool<u32> = BoundedPool::new("test", 1, Duration::MAX);
        let a = pool.checkout(|| Ok(1)).unwrap();
        let busy = pool.checkout_by(Instant::now() + Duration::from_millis(10), || Ok(2));
        assert!(busy.is_err(), "the earlier deadline bounds the wait");
        drop(a);
    }

    #[test]
    fn pool_is_bounded() {
        let pool: BoundedPool<u32> = BoundedPool::new("test", 2, Duration::from_millis(20));
        let a = pool.checkout(|| Ok(1)).unwrap();
        let b = pool.checkout(|| Ok(2)).unwrap();
        let busy = pool.checkout(|| Ok(3));
        assert!(matches!(busy, Err(Error::Unavailable { source, .. }) if source.is::<PoolBusy>()));
        a.put_back();
        let mut c = pool.checkout(|| Ok(4)).unwrap();
        assert_eq!((*c.conn(), c.reused), (1, true));
        drop(b); // closed: frees its place
        let d = pool.checkout(|| Ok(5)).unwrap();
        assert!(!d.reused);
    }

    #[test]
    fn lingering_connections_keep_their_places() {
        let pool: BoundedPool<u32> = BoundedPool::new("test", 2, Duration::from_millis(20));
        let a = pool.checkout(|| Ok(1)).unwrap();
        // `a` timed out: closed on our side, its thread still blocked.
        pool.lingering().fetch_add(1, Ordering::AcqRel);
        drop(a);
        let b = pool.checkout(|| Ok(2)).unwrap();
        let busy = pool.checkout(|| Ok(3));
        assert!(matches!(busy, Err(Error::Unavailable { source, .. }) if source.is::<PoolBusy>()));
        pool.lingering().fetch_sub(1, Ordering::AcqRel); // its thread ended
        let c = pool.checkout(|| Ok(4)).unwrap();
        assert!(!c.reused);
        drop((b, c));
    }

    #[test]
    fn a_quiesced_pool_waits_for_its_connections_and_lends_none() {
        let pool: BoundedPool<u32> = BoundedPool::new("test", 2, Duration::from_millis(20));
        let a = pool.checkout(|| Ok(1)).unwrap();
        let soon = || Instant::now() + Duration::from_millis(20);
        assert!(!pool.quiesce(soon()), "a connection is out");
        let busy = pool.checkout(|| Ok(2));
        assert!(matches!(busy, Err(Error::Unavailable { source, .. }) if source.is::<PoolBusy>()));
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                a.put_back();
            });
            assert!(pool.quiesce(Instant::now() + Duration::from_secs(10)));
        });
        // Two quiesces (two forks at once): lending resumes after both end.
        pool.resume();
        assert!(pool.checkout(|| Ok(3)).is_err(), "one fork still going");
        pool.resume();
        let mut c = pool.checkout(|| Ok(3)).unwrap();
        assert_eq!((*c.conn(), c.reused), (1, true));
    }
}

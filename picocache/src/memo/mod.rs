//! Memoization: the plain API underneath [`#[memoize]`](crate::memoize).
//!
//! A [`Memo`] is the cache of one function. It keeps the function's results
//! in one namespace of a [`Backend`] (by default the local store at
//! [`local::default_path()`](crate::local::default_path)), so they survive
//! restarts and are shared by every thread and process that uses the store.
//!
//! ```
//! use picocache::{LocalBackend, Memo};
//! use std::sync::Arc;
//!
//! let dir = tempfile::tempdir()?;
//! let memo = Memo::builder("docs::add")
//!     .maxsize(Some(1000))
//!     .backend(Arc::new(LocalBackend::open(dir.path())?))
//!     .build();
//! let add = |a: u64, b: u64| memo.call((a, b), |(a, b)| a + b);
//! assert_eq!(add(2, 3), 5); // computed
//! assert_eq!(add(2, 3), 5); // read from the store
//! let info = memo.cache_info();
//! assert_eq!((info.hits, info.misses, info.currsize), (1, 1, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The `#[memoize]` attribute
//!
//! [`#[picocache::memoize]`](crate::memoize) turns a function into one that
//! calls a `Memo` kept in a `static`:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # std::env::set_var("PICOCACHE_DIR", dir.path());
//! #[picocache::memoize(maxsize = 1000, ttl_secs = 3600, version = "2")]
//! fn fib(n: u64) -> u64 {
//!     if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
//! }
//!
//! assert_eq!(fib(80), 23_416_728_348_467_685);
//! // `fib_cache()` is generated next to `fib`: the function's `&'static Memo`.
//! let info = fib_cache().cache_info();
//! assert_eq!((info.misses, info.currsize), (81, 81));
//! fib_cache().cache_clear();
//! # Ok(()) }
//! ```
//!
//! Options (all optional):
//!
//! | option | meaning |
//! |---|---|
//! | `maxsize = 256` | most entries; `maxsize = None`: unlimited; `maxsize = 0`: no caching. Default 128 |
//! | `ttl_secs = 60`, `ttl_ms = 500` | time to live of an entry |
//! | `version = "2"` (or `2`) | pins the identity (no code digest); changing it starts from an empty cache |
//! | `name = "app::f"` | identity instead of `module_path!()::f#DIGEST` |
//! | `path = "/var/cache/app"` | a local store path or any backend URL ([`crate::open()`]) instead of the default store |
//! | `backend = expr` | an `Arc<dyn picocache::Backend>` expression (evaluated once, on first call) |
//! | `strict` | cache failures are errors: the function returns `picocache::Result<T>` |
//! | `lease_timeout_secs = 60` | how long to wait for another process computing the same arguments |
//!
//! Each argument must be a plain name (`x: T` or `mut x: T`) of a type that
//! implements `serde::Serialize` (references such as `&str` or `&[T]` are
//! fine) and serializes unequal values to unequal output: the key is that
//! output, so a `#[serde(untagged)]` enum whose variants hold alike data
//! (`Circle(2)` and `Square(2)` are both `2`), a `#[serde(skip)]` field the
//! result depends on, or a hand-written `Serialize` that leaves something
//! out makes two calls share one result, and nothing can tell such a
//! `Serialize` from a correct one (wrap the argument in a type whose
//! `Serialize` tells them apart, or use [`MemoBuilder::codec`]). The
//! return type must implement `Serialize + DeserializeOwned`. The
//! macro rejects, with a compile error that says why: `self` arguments
//! (methods), argument patterns, `impl Trait` arguments or results, type or
//! const generics (every instantiation would share one cache: use `Memo`
//! with a name per type), `async fn`, `const fn`, a missing return type, and
//! unknown or conflicting options. It generates a free function
//! `NAME_cache()` next to the function, so use it on free functions (at
//! module level or inside a function body), not inside `impl` blocks.
//!
//! # Keys, values and identity
//!
//! The key of a call is its arguments encoded with serde + bincode; the value
//! is the result encoded the same way after `0xfe` and an 8-byte digest
//! of the value's serde layout (the default codec,
//! [`Bincode`](crate::core::codec::Bincode); [`MemoBuilder::codec`] plugs in
//! another, for types without serde or another format). The function's identity is the
//! namespace name, so two functions never share entries and
//! [`Memo::cache_clear`] clears only its own function. A `Memo` is named by
//! the name given to [`Memo::builder`], plus `@version` if a version is set.
//! `#[memoize]` names the function:
//!
//! - `module_path!()::function#DIGEST` by default, where `DIGEST` is 16 hex
//!   digits of xxh3-64 over the tokens of the function's signature and body
//!   (comments, whitespace, line numbers and doc comments do not count). The
//!   digest is the same in every compilation on every machine, and a changed
//!   body or signature is a new namespace: it never serves the results of
//!   the code it replaced. Only the function's own tokens count: a change in
//!   a function or constant it uses is not seen (give a `version` and change
//!   it when results depend on such code);
//!
//!   Each value also carries a digest of its serde layout, taken from its
//!   `Serialize` ([`crate::core::layout`]: struct, field and variant names in
//!   order, primitive kinds), checked on every read, so a result type edited
//!   outside the function (fields reordered, an alias from `u64` to `i64`, a
//!   variant's payload retyped) is a decoding failure, and the
//!   function runs, not the old bytes decoded as a wrong value. Not seen: a
//!   change of an argument type outside the function (its fields reordered:
//!   old keys then mean other arguments), and a result type whose layout is
//!   unchanged but whose meaning changed (a unit from seconds to
//!   milliseconds): give a `version` and change it then. A result whose bytes
//!   do not decode back to it (`skip_serializing_if`, `serde_json::Value`) is
//!   not stored (a warning). Values stored before any digest are read as is;
//! - `module_path!()::function@VERSION` with `version = ...`: no digest, the
//!   version pins the identity, so entries survive edits of the body until
//!   the version changes;
//! - `NAME` (then `@VERSION`) with `name = "NAME"`: the given name replaces
//!   the identity, and every function given that name shares entries.
//!
//! A function declared inside a function body is named after the enclosing
//! functions too (`app::outer::f#DIGEST`), read from `std::any::type_name`
//! of a type the macro declares next to it. Two functions of one name left
//! with one default name (in two blocks of one function) are told apart in
//! the process: the first to be called claims the name, the other runs
//! uncached with a logged warning (give it a `name`). A name or version
//! holding `@` (which separates the version) is refused: a compile error in
//! `#[memoize]`, and a `Memo` that runs its function uncached with a logged
//! warning (an error in strict mode) from [`Memo::builder`].
//!
//! Names longer than the 232 bytes a namespace name may have are shortened,
//! with a hash of the full name appended. A changed body or `version` starts
//! from an empty namespace; the old one's entries stay until it is cleared
//! (`picocache clear PATH NAMESPACE`) or removed once unused for a while
//! (`picocache prune --unused-for`).
//!
//! # Concurrency
//!
//! Concurrent calls with the same arguments compute once: in this process
//! the first caller computes while the others wait for it and then read the
//! stored result (counted as hits); across processes a caller that missed
//! takes the key's lease ([`Namespace::lease`]) and looks again before
//! computing (another process may have stored the value since the miss), and
//! a caller that finds the lease taken waits for it (up to
//! [`MemoBuilder::lease_timeout`]) before it looks again. No lock is held
//! while the function runs, so calls with different arguments run in
//! parallel, and a recursive memoized function (fib) works.
//!
//! A call with the arguments its own thread is computing (the function calls
//! itself with the same arguments, directly or through another `Memo` of the
//! same namespace) runs the function uncached, as the plain function would:
//! it waits neither for its own in-process computation nor for the store
//! lease its outer call holds. A recursion that ends returns its value; one
//! that does not overflows the stack, like the plain function. Not
//! detected: a computation that waits for *another* thread calling the
//! function with the same arguments (that thread waits for the computation,
//! which waits for it: a deadlock), or for another process doing so (it
//! waits until [`MemoBuilder::lease_timeout`], then computes).
//!
//! # Failures
//!
//! A cache failure (an I/O error, a store that cannot be opened, an entry that
//! no longer decodes because the result type changed) never breaks a call:
//! the function runs and its value is returned, and the failure is logged
//! with the `log` crate (at most once a second per function). In **strict
//! mode** ([`MemoBuilder::strict`]) a failure is an error instead:
//! [`Memo::try_call`] returns it (the `#[memoize(strict)]` function returns
//! `Result<T, picocache::Error>`), and [`Memo::call`] panics with it.
//!
//! # Sealed entries
//!
//! Every value a `Memo` stores is sealed with a secret (a keyed BLAKE3 MAC over the
//! namespace, the key and the value; see [`crate::seal`]), whatever the
//! backend, and checked before it is decoded. An entry that fails the check
//! (planted, tampered with, unsigned, or sealed with another secret) is
//! never decoded: it is a miss, the function runs and its result replaces
//! the entry, and the failure is logged and counted in
//! [`Stats::rejected`](crate::Stats::rejected); in strict mode it is an
//! [`Error::Rejected`]. The secret is [`MemoBuilder::secret`], else
//! `PICOCACHE_SECRET`, else a per-user secret file ([`crate::secret`]).

mod batch;
mod builder;
mod encoding;
mod identity;
mod info;
mod lease;
mod source;
mod tier;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use self::builder::MemoBuilder;
pub use self::encoding::{decode, encode, encode_value};
#[doc(hidden)]
pub use self::identity::macro_name as __macro_name;
pub use self::identity::namespace_name;
pub use self::info::CacheInfo;
use self::lease::Lease;
pub use self::source::default_backend;
use self::source::{backend_for_url, Source};
use self::tier::Tier;
use crate::backend::{Backend, Limits, Locate, Namespace};
use crate::core::codec::{Bincode, MemoCodec, ValueCodec};
use crate::core::counts::Counts;
use crate::core::flight::{FlightGuard, Flights, Role};
use crate::core::report::{Reporter, Verdict};
use crate::sealed::SealedBackend;
use crate::{Error, Result};

/// How long a failure to open the store is remembered before trying again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct OpenState {
    failed_at: Option<Instant>,
    last_error: String,
}

/// The cache of one memoized function. See the [module docs](self).
///
/// A `Memo` is `Send + Sync`; keep one per function (the macro keeps it in a
/// `static`) so that concurrent callers share its in-flight table. `C` is
/// its codec of keys and values ([`crate::core::codec`]; [`Bincode`] unless
/// [`MemoBuilder::codec`] chose another).
pub struct Memo<C = Bincode> {
    ns_name: String,
    /// Why this `Memo` may not cache (a name it may not have): every call
    /// runs the function, with a logged warning.
    refused: Option<String>,
    limits: Limits,
    strict: bool,
    lease_timeout: Duration,
    source: Source,
    secrets: Option<Vec<Vec<u8>>>,
    ns: OnceLock<Arc<dyn Namespace>>,
    open_state: Mutex<OpenState>,
    /// This process's computations in flight (the encoded results).
    flights: Flights<Arc<Vec<u8>>>,
    /// Results read from a store that locates its records, kept in the
    /// process (see [`tier`]).
    tier: Tier,
    warned: Reporter,
    /// Whether a result that cannot be encoded was reported.
    unencodable: AtomicBool,
    /// This process's hits and misses.
    counts: Counts,
    /// Keys and values to bytes and back.
    codec: C,
}

impl<C> fmt::Debug for Memo<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("namespace", &self.ns_name)
            .field("limits", &self.limits)
            .field("strict", &self.strict)
            .field("source", &self.source)
            .finish()
    }
}

impl Memo {
    /// Options for the memoizer of the function called `name` (by convention
    /// `concat!(module_path!(), "::", "function")`; `#[memoize]` appends
    /// `#` and a digest of the function's code unless a version is given,
    /// see the [module docs](self#keys-values-and-identity)). Defaults:
    /// maxsize 128, no TTL, no version, not strict, the default local store.
    pub fn builder(name: impl Into<String>) -> MemoBuilder {
        MemoBuilder {
            name: name.into(),
            version: None,
            limits: Limits::maxsize(Some(128)),
            strict: false,
            lease_timeout: Duration::from_secs(60),
            source: Source::Default,
            secrets: None,
            codec: Bincode,
            site: None,
        }
    }
}

impl<C> Memo<C> {
    /// The namespace the entries are kept in.
    pub fn namespace_name(&self) -> &str {
        &self.ns_name
    }

    /// The most entries kept (`None`: unlimited).
    pub fn maxsize(&self) -> Option<u64> {
        self.limits.maxsize
    }

    /// Whether cache failures are errors.
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// The namespace, opened on first use. A failure to open is remembered
    /// for a second, so a broken store does not cost an open per call.
    pub fn namespace(&self) -> Result<&Arc<dyn Namespace>> {
        if let Some(ns) = self.ns.get() {
            return Ok(ns);
        }
        let mut st = self.open_state.lock();
        if let Some(ns) = self.ns.get() {
            return Ok(ns);
        }
        if let Some(at) = st.failed_at {
            if at.elapsed() < REOPEN_AFTER {
                return Err(Error::Unavailable {
                    backend: "picocache",
                    source: format!(
                        "opening the store of {} failed (retrying shortly): {}",
                        self.ns_name, st.last_error
                    )
                    .into(),
                });
            }
        }
        let opened = match &self.source {
            Source::Default => default_backend(),
            Source::Url(url) => backend_for_url(url),
            Source::Backend(b) => Ok(b.clone()),
        }
        .and_then(|b| self.sealed(b))
        .and_then(|b| b.namespace(&self.ns_name, self.limits));
        match opened {
            Ok(ns) => {
                st.failed_at = None;
                Ok(self.ns.get_or_init(|| ns))
            }
            Err(e) => {
                st.failed_at = Some(Instant::now());
                st.last_error = e.to_string();
                Err(e)
            }
        }
    }

    /// `b`, sealing its values (unless it does already).
    fn sealed(&self, b: Arc<dyn Backend>) -> Result<Arc<dyn Backend>> {
        if b.is_sealed() {
            return Ok(b);
        }
        let (secrets, source) = crate::secret::resolve(self.secrets.as_deref())?;
        Ok(Arc::new(SealedBackend::new(b, secrets, source)))
    }

    /// Handles a cache failure: an error in strict mode, else a log message
    /// (at most one a second, with a count of the ones left out).
    pub(crate) fn failed(&self, e: Error, what: &str) -> Result<()> {
        match self.warned.verdict(self.strict) {
            Verdict::Raise => return Err(e),
            Verdict::Quiet => {}
            Verdict::Warn { suppressed: 0 } => log::warn!(
                "picocache: {what} failed for {}: {e}; the function's own result is used",
                self.ns_name
            ),
            Verdict::Warn { suppressed } => log::warn!(
                "picocache: {what} failed for {}: {e} ({suppressed} similar failures not logged); \
                 the function's own result is used",
                self.ns_name
            ),
        }
        Ok(())
    }

    /// Reports why this `Memo` may not cache, if it may not (an error in
    /// strict mode, else a logged warning).
    pub(crate) fn check_refused(&self) -> Result<()> {
        match &self.refused {
            Some(why) => self.failed(Error::InvalidArgument(why.clone()), "naming the cache"),
            None => Ok(()),
        }
    }

    /// `f(args)`, from the cache when `args` were seen before.
    ///
    /// Never fails: a cache failure is logged and `f` runs. In strict mode it
    /// panics on a cache failure instead; use [`Memo::try_call`] there.
    ///
    /// # Panics
    /// In strict mode, when the cache fails.
    pub fn call<A, R, F>(&self, args: A, f: F) -> R
    where
        C: MemoCodec<A, R>,
        F: FnOnce(A) -> R,
    {
        match self.try_call(args, f) {
            Ok(r) => r,
            Err(e) => panic!("picocache (strict mode): {e}"),
        }
    }

    /// `f(args)`, from the cache when `args` were seen before. Returns an
    /// error only in strict mode, when the cache fails (the function's value
    /// is then lost; it has run if the failure came after the lookup).
    pub fn try_call<A, R, F>(&self, args: A, f: F) -> Result<R>
    where
        C: MemoCodec<A, R>,
        F: FnOnce(A) -> R,
    {
        let mut ran = false;
        let r = self.call_counted(args, |a| {
            ran = true;
            f(a)
        });
        self.count(ran, r.is_ok());
        r
    }

    /// Counts a call: a miss if it ran the function, else a hit (if it
    /// returned a value).
    pub(crate) fn count(&self, ran: bool, ok: bool) {
        self.counts.call(ran, ok);
    }

    fn call_counted<A, R, F>(&self, args: A, f: F) -> Result<R>
    where
        C: MemoCodec<A, R>,
        F: FnOnce(A) -> R,
    {
        if self.refused.is_some() {
            self.check_refused()?;
            return Ok(f(args));
        }
        let key = match self.codec.encode_key(&args) {
            Ok(k) => k,
            Err(e) => {
                self.failed(e, "encoding the arguments")?;
                return Ok(f(args));
            }
        };
        let ns = match self.namespace() {
            Ok(ns) => ns,
            Err(e) => {
                self.failed(e, "opening the cache")?;
                return Ok(f(args));
            }
        };
        if self.limits.maxsize == Some(0) {
            // Nothing is cached; the lookup counts the miss.
            if let Err(e) = ns.get(&key) {
                self.failed(e, "reading the cache")?;
            }
            return Ok(f(args));
        }
        if let Some(loc) = ns.locate() {
            // Errors here are met again, and reported, on the way below.
            if let Ok(Some(r)) = self.located_hit(loc, &key) {
                return Ok(r);
            }
        }
        loop {
            let flight = match self.flights.join(&key) {
                Role::Leader(guard) => return self.lead(ns.as_ref(), &key, guard, args, f),
                Role::Waiter(flight) => flight,
                Role::Reentrant => return Ok(f(args)),
            };
            let Some(bytes) = flight.wait() else {
                // The computing caller failed (its function panicked, or its
                // result cannot be encoded): compute side by side with the
                // other waiters, not one after another as each leads, and
                // store the result if it encodes (the leader said if not).
                let r = f(args);
                if let Ok(b) = self.codec.encode_value(&r) {
                    if let Err(e) = ns.put(&key, &b, None) {
                        self.failed(e, "storing the result")?;
                    }
                }
                return Ok(r);
            };
            // Read the stored result, as a hit.
            match ns.get(&key) {
                Ok(Some(v)) => match self.codec.decode_value(&v) {
                    Ok(r) => return Ok(r),
                    Err(e) => self.failed(e, "decoding a cached value")?,
                },
                Ok(None) => {}
                Err(e) => self.failed(e, "reading the cache")?,
            }
            // Not stored (evicted already, or the store failed): use the
            // value the computing caller handed over, else try again.
            if let Ok(r) = self.codec.decode_value(&bytes) {
                return Ok(r);
            }
        }
    }

    /// A hit on a store that locates its records: the result kept in the
    /// process if its record is still the key's live entry, else read in
    /// place (a peek, counted as a hit once found). `Ok(None)`: not found
    /// (nothing counted: the lookup that follows counts the miss).
    fn located_hit<R>(&self, loc: &dyn Locate, key: &[u8]) -> Result<Option<R>>
    where
        C: ValueCodec<R, Error = Error>,
    {
        let h = loc.key_hash(key);
        if let Some((at, bytes)) = self.tier.get(h, key) {
            if loc.confirm_located(&at)? {
                if let Ok(r) = self.codec.decode_value(&bytes) {
                    return Ok(Some(r));
                }
            }
            self.tier.remove(h);
        }
        // Copied out and decoded after the engine's read returns: a
        // `Deserialize` may call a memoized function (on this store too),
        // which must not find the engine's read state taken.
        let mut found = None;
        loc.read_located(key, false, &mut |bytes, at| {
            found = Some((bytes.to_vec(), at));
        })?;
        let Some((bytes, at)) = found else {
            return Ok(None);
        };
        let Ok(r) = self.codec.decode_value(&bytes) else {
            return Ok(None);
        };
        self.tier.insert(key, at, &bytes);
        Ok(loc.confirm_located(&at)?.then_some(r))
    }

    /// The leader's part: look up, take the lease, compute, store.
    fn lead<A, R, F>(
        &self,
        ns: &dyn Namespace,
        key: &[u8],
        guard: FlightGuard<Arc<Vec<u8>>>,
        args: A,
        f: F,
    ) -> Result<R>
    where
        C: ValueCodec<R, Error = Error>,
        F: FnOnce(A) -> R,
    {
        let mut usable = true;
        match ns.get(key) {
            Ok(Some(bytes)) => match self.codec.decode_value(&bytes) {
                Ok(r) => {
                    guard.complete(Arc::new(bytes));
                    return Ok(r);
                }
                Err(e) => self.failed(e, "decoding a cached value")?,
            },
            Ok(None) => {}
            Err(e) if e.is_rejected() => {
                // The store works; the function's result replaces the entry.
                self.failed(e, "checking a cached entry")?;
            }
            Err(e) => {
                self.failed(e, "reading the cache")?;
                usable = false;
            }
        }
        let lease = if usable {
            self.lease(ns, key)?
        } else {
            Lease::None
        };
        let lease = match lease {
            Lease::Found(r, bytes) => {
                guard.complete(Arc::new(bytes));
                return Ok(r);
            }
            Lease::Held(l) => Some(l),
            Lease::None => None,
        };
        let r = f(args);
        let bytes = match self.codec.encode_value(&r) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                drop(lease);
                // (Said once per function: a result type that cannot be
                // cached fails the same way on every call.)
                if self.strict || !self.unencodable.swap(true, Ordering::Relaxed) {
                    self.failed(e, "encoding the result")?;
                }
                return Ok(r);
            }
        };
        let stored = if usable {
            ns.put(key, &bytes, None)
        } else {
            Ok(())
        };
        drop(lease);
        guard.complete(bytes);
        if let Err(e) = stored {
            self.failed(e, "storing the result")?;
        }
        Ok(r)
    }
}

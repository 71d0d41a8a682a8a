//! [`MemoBuilder`]: the options of a [`Memo`], and building it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

use super::source::Source;
use super::tier::Tier;
use super::{identity, namespace_name, Memo, OpenState};
use crate::backend::{Backend, Limits};
use crate::core::codec::Bincode;

/// Options of a [`Memo`]; made by [`Memo::builder`]. `C` is the codec of
/// keys and values ([`MemoBuilder::codec`]).
#[derive(Debug)]
#[must_use]
pub struct MemoBuilder<C = Bincode> {
    pub(super) name: String,
    pub(super) version: Option<String>,
    pub(super) limits: Limits,
    pub(super) strict: bool,
    pub(super) lease_timeout: Duration,
    pub(super) source: Source,
    pub(super) secrets: Option<Vec<Vec<u8>>>,
    pub(super) codec: C,
    /// The `#[memoize]` function that builds it (the address of its
    /// `static`), which claims the name in this process.
    pub(super) site: Option<usize>,
}

impl<C> MemoBuilder<C> {
    /// How keys and values become bytes and back (default [`Bincode`]); any
    /// [`KeyCodec`](crate::core::codec::KeyCodec) of the arguments and
    /// [`ValueCodec`](crate::core::codec::ValueCodec) of the results whose
    /// errors are [`crate::Error`]. Two `Memo`s of one namespace must use
    /// one codec.
    pub fn codec<C2>(self, codec: C2) -> MemoBuilder<C2> {
        MemoBuilder {
            name: self.name,
            version: self.version,
            limits: self.limits,
            strict: self.strict,
            lease_timeout: self.lease_timeout,
            source: self.source,
            secrets: self.secrets,
            codec,
            site: self.site,
        }
    }

    /// The most entries kept, least recently used evicted first (`None`:
    /// unlimited; `Some(0)`: nothing is cached, every call is a miss). The
    /// default is 128, like `functools.lru_cache`.
    pub fn maxsize(mut self, maxsize: Option<u64>) -> Self {
        self.limits.maxsize = maxsize;
        self
    }

    /// The most bytes kept (where the backend supports it; `None`: unlimited,
    /// the default).
    pub fn max_bytes(mut self, max_bytes: Option<u64>) -> Self {
        self.limits.max_bytes = max_bytes;
        self
    }

    /// How long an entry lives (`None`: until evicted, the default).
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.limits.ttl = ttl;
        self
    }

    /// A version: changing it makes the function start from an empty cache
    /// (use it when the function's meaning or result type changes).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Replaces the function's name (the identity its entries are kept under).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Strict mode: cache failures are errors instead of log messages.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// How long a caller waits for another process computing the same key
    /// before computing it too (default 60 s).
    pub fn lease_timeout(mut self, wait: Duration) -> Self {
        self.lease_timeout = wait;
        self
    }

    /// The secret that seals stored values (see [`crate::seal`]); by default
    /// `PICOCACHE_SECRET`, else the per-user secret file
    /// ([`crate::secret`]).
    pub fn secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.secrets = Some(vec![secret.into()]);
        self
    }

    /// Several secrets, for a rotation: the first seals, every one checks
    /// (entries sealed with an old secret still read).
    pub fn secrets<S: Into<Vec<u8>>>(mut self, secrets: impl IntoIterator<Item = S>) -> Self {
        self.secrets = Some(secrets.into_iter().map(Into::into).collect());
        self
    }

    /// Keeps the entries in `backend` (sealed unless it is a
    /// [`SealedBackend`](crate::SealedBackend) already).
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.source = Source::Backend(backend);
        self
    }

    /// Keeps the entries in the backend `url` names (a local path, or any URL
    /// [`crate::open()`] accepts). The backend is opened on first use and
    /// shared by every `Memo` of this process that names the same URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.source = Source::Url(url.into());
        self
    }

    /// Keeps the entries in the process-wide default local store (the
    /// default).
    pub fn default_backend(mut self) -> Self {
        self.source = Source::Default;
        self
    }

    /// For `#[memoize]`: the function building it claims its name in this
    /// process (see `identity`); `site` is the address of its `static`.
    #[doc(hidden)]
    pub fn __site(mut self, site: usize) -> Self {
        self.site = Some(site);
        self
    }

    /// The memoizer. Nothing is opened until the first call.
    ///
    /// A name or version holding `@` (which separates the version) is
    /// refused: the `Memo` then runs the function uncached, with a logged
    /// warning on calls (an error in strict mode).
    pub fn build(self) -> Memo<C> {
        let ns_name = namespace_name(&self.name, self.version.as_deref());
        let refused = identity::refusal(&self.name, self.version.as_deref())
            .or_else(|| self.site.and_then(|site| identity::claim(&ns_name, site)));
        Memo {
            ns_name,
            refused,
            limits: self.limits,
            strict: self.strict,
            lease_timeout: self.lease_timeout,
            source: self.source,
            secrets: self.secrets,
            ns: OnceLock::new(),
            open_state: Mutex::new(OpenState::default()),
            flights: Default::default(),
            tier: Tier::new(),
            warned: Default::default(),
            unencodable: Default::default(),
            counts: Default::default(),
            codec: self.codec,
        }
    }
}

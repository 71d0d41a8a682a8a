//! Where a [`Memo`](super::Memo) keeps its entries: the process-wide default
//! store, a backend opened by URL and shared in the process, or a backend
//! given by the caller.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::backend::Backend;
use crate::local::LocalBackend;
use crate::Result;

/// Where a [`Memo`] keeps its entries.
pub(super) enum Source {
    /// The process-wide local store at the default path.
    Default,
    /// A backend URL or a local path (see [`crate::open()`]), opened once per
    /// process and shared by every `Memo` that names it.
    Url(String),
    /// A backend given by the caller.
    Backend(Arc<dyn Backend>),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("Default"),
            Source::Url(u) => write!(f, "Url({u:?})"),
            Source::Backend(b) => write!(f, "Backend({})", b.kind()),
        }
    }
}

/// Backends opened by URL (and the default one), shared in this process.
fn shared_backends() -> &'static Mutex<HashMap<String, Arc<dyn Backend>>> {
    static BACKENDS: OnceLock<Mutex<HashMap<String, Arc<dyn Backend>>>> = OnceLock::new();
    BACKENDS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The process-wide default backend: the local store at
/// [`local::default_path()`](crate::local::default_path), opened on first use
/// and shared by every [`Memo`] that does not name another backend.
pub fn default_backend() -> Result<Arc<dyn Backend>> {
    let path = crate::local::default_path();
    let key = format!("local://{}", path.display());
    let mut map = shared_backends().lock();
    if let Some(b) = map.get(&key) {
        return Ok(b.clone());
    }
    let b: Arc<dyn Backend> = Arc::new(LocalBackend::open(&path)?);
    map.insert(key, b.clone());
    Ok(b)
}

pub(super) fn backend_for_url(url: &str) -> Result<Arc<dyn Backend>> {
    let mut map = shared_backends().lock();
    if let Some(b) = map.get(url) {
        return Ok(b.clone());
    }
    let b = crate::open(url)?;
    map.insert(url.to_owned(), b.clone());
    Ok(b)
}

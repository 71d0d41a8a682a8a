//! `Sealer`: the seal of `picocache::seal` for the backends the Python
//! package implements itself (Django's cache, an SQLAlchemy Engine), so their
//! entries are sealed and checked exactly as the native backends' are.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use picocache::secret::SecretSource;
use picocache::Secrets;

use crate::{to_py, CacheRejected};

/// Seals values for a store and checks them (`secrets`: the first seals, all
/// check; None: `PICOCACHE_SECRET`, else the per-user secret file).
#[pyclass(module = "picocache._native", frozen)]
pub(crate) struct Sealer {
    secrets: Arc<Secrets>,
    remote: bool,
}

#[pymethods]
impl Sealer {
    #[new]
    #[pyo3(signature = (secrets=None, remote=true))]
    fn new(py: Python<'_>, secrets: Option<Vec<Vec<u8>>>, remote: bool) -> PyResult<Self> {
        let (secrets, _source): (Arc<Secrets>, SecretSource) = py
            .allow_threads(|| picocache::secret::resolve(secrets.as_deref()))
            .map_err(to_py)?;
        Ok(Sealer { secrets, remote })
    }

    /// `value` sealed for `key` of namespace `ns`.
    fn seal<'py>(
        &self,
        py: Python<'py>,
        ns: &str,
        key: &[u8],
        value: &[u8],
    ) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.secrets.seal(ns, key, value))
    }

    /// The value inside `stored`; raises `CacheRejected` if it is not
    /// sealed for `key` of `ns` with one of the secrets (the caller counts
    /// rejections, per function).
    fn open<'py>(
        &self,
        py: Python<'py>,
        ns: &str,
        key: &[u8],
        stored: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        match self.secrets.open(ns, key, stored) {
            Ok(v) => Ok(PyBytes::new(py, v)),
            Err(reason) => {
                let e = picocache::Error::Rejected {
                    namespace: ns.to_owned(),
                    reason,
                    remote: self.remote,
                };
                Err(CacheRejected::new_err(e.to_string()))
            }
        }
    }

    /// The signing secret's id (hex; safe to show).
    #[getter]
    fn signing_id(&self) -> String {
        self.secrets.signing_id()
    }
}

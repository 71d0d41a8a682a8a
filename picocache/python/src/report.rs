//! The failure policy's warning rate (`picocache::core::report`) for the
//! Python package: `_FunctionState.failed` asks [`Reporter::warn_now`]
//! whether to log a failure, as the Rust `Memo` asks the same core.

use picocache::core::report::{self, Verdict};
use pyo3::prelude::*;

/// The warning state of one function (one warning a second at most).
#[pyclass(module = "picocache._native", frozen)]
pub(crate) struct Reporter(report::Reporter);

#[pymethods]
impl Reporter {
    #[new]
    fn new() -> Self {
        Reporter(Default::default())
    }

    /// For a failure now (of a function that is not strict): the count of
    /// failures left out since the last warning if this one is to be
    /// logged, else None.
    fn warn_now(&self) -> Option<u64> {
        match self.0.verdict(false) {
            Verdict::Warn { suppressed } => Some(suppressed),
            Verdict::Quiet | Verdict::Raise => None,
        }
    }
}

//! The failure policy: a cache failure is an error for a strict function;
//! for any other it is a warning, at most one a second per function (with a
//! count of the ones left out in the next), and the function's own result
//! is used. The adapters emit the warning (Rust: the `log` crate; Python:
//! the `picocache` logger) and keep their once-only notices (a result too
//! large to store, a read-only store) on top.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The least time between two warnings of one function.
pub const WARN_EVERY: Duration = Duration::from_secs(1);

/// What to do with one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Strict: return (raise) the error.
    Raise,
    /// Warn now; `suppressed` failures were left out since the last warning.
    Warn {
        /// Failures not warned about since the last warning.
        suppressed: u64,
    },
    /// Left out (a warning was given less than [`WARN_EVERY`] ago).
    Quiet,
}

/// The warning state of one function.
#[derive(Debug, Default)]
pub struct Reporter {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Reporter {
    /// The verdict on a failure now.
    pub fn verdict(&self, strict: bool) -> Verdict {
        if strict {
            return Verdict::Raise;
        }
        let mut st = self.state.lock();
        let now = Instant::now();
        if st.0.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            st.1 += 1;
            return Verdict::Quiet;
        }
        st.0 = Some(now);
        Verdict::Warn {
            suppressed: std::mem::take(&mut st.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_a_second_with_the_count_of_the_rest() {
        let r = Reporter::default();
        assert_eq!(r.verdict(true), Verdict::Raise);
        assert_eq!(r.verdict(false), Verdict::Warn { suppressed: 0 });
        assert_eq!(r.verdict(false), Verdict::Quiet);
        assert_eq!(r.verdict(false), Verdict::Quiet);
        r.state.lock().0 = Some(Instant::now() - WARN_EVERY);
        assert_eq!(r.verdict(false), Verdict::Warn { suppressed: 2 });
    }
}

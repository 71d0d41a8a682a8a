//! The `#[memoize]` attribute macro of PicoCache (work in progress).

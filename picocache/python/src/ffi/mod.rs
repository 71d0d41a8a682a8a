//! The crate's `unsafe` code, and nothing else: what the safe PyO3 API does
//! not offer. Each block carries its `// SAFETY:` argument.
//!
//! - [`vcall`]: the vectorcall protocol for the cached function's wrapper;
//! - [`buffer`]: reading an object's bytes in place through the buffer
//!   protocol (an array argument's content digest).
//!
//! Both need the interpreter's own structures, which the stable ABI hides:
//! the `abi3` build leaves this module out.

#![allow(unsafe_code)]

pub(crate) mod buffer;
pub(crate) mod vcall;

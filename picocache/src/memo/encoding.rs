//! The default codec's bytes, for tools and tests that read or plant a
//! [`Memo`](crate::Memo)'s entries.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::codec::{Bincode, KeyCodec, ValueCodec};
use crate::Result;

/// Encodes arguments the way a [`Memo`](crate::Memo) with the default codec makes its
/// keys ([`Bincode`]: variable-length integers); a stored result is this
/// after a digest of its layout ([`encode_value`]).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    Bincode.encode_key(value)
}

/// Encodes a result the way a [`Memo`](crate::Memo) with the default codec stores it:
/// after the digest of its layout ([`Bincode`]); an error if its bytes
/// do not decode back to it.
pub fn encode_value<T: Serialize + DeserializeOwned>(value: &T) -> Result<Vec<u8>> {
    Bincode.encode_value(value)
}

/// Decodes a value stored by a [`Memo`](crate::Memo) with the default codec; every byte
/// must be used.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Bincode.decode_value(bytes)
}

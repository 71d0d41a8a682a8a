//! Codecs: how a memoizer turns a call's arguments into the key's bytes and
//! its result into the value's bytes and back. Pluggable parts of the core:
//! the Rust [`Memo`](crate::Memo) takes any [`KeyCodec`] + [`ValueCodec`]
//! ([`Bincode`] by default, [`MemoBuilder::codec`](crate::MemoBuilder::codec)
//! for another); the Python package's canonical key encoder is a
//! [`KeyCodec`] of a call's argument objects (`picocache/python/src/keys.rs`),
//! and its values go through the user's `value_serializer` (pickle by
//! default).
//!
//! A codec must be deterministic (equal arguments, equal bytes, in every
//! process and on every machine that shares the store) and must not let
//! unequal arguments share bytes. A value codec's `decode_value` must reject
//! bytes it did not make (a stored value is checked by its seal before it is
//! decoded, so these are bytes of another version of the program, not of an
//! attacker).

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes arguments of type `A` into key bytes.
pub trait KeyCodec<A: ?Sized> {
    /// What a failed encoding returns.
    type Error;

    /// The key bytes of `args`.
    fn encode_key(&self, args: &A) -> Result<Vec<u8>, Self::Error>;
}

/// Encodes results of type `V` into value bytes, and back.
pub trait ValueCodec<V> {
    /// What a failed encoding or decoding returns.
    type Error;

    /// The stored bytes of `value`.
    fn encode_value(&self, value: &V) -> Result<Vec<u8>, Self::Error>;

    /// The value `bytes` encode; every byte must be used.
    fn decode_value(&self, bytes: &[u8]) -> Result<V, Self::Error>;
}

/// serde + bincode with variable-length integers: the Rust default, for keys
/// and values of any `Serialize` (and `DeserializeOwned`) type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bincode;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

impl<A: Serialize + ?Sized> KeyCodec<A> for Bincode {
    type Error = crate::Error;

    fn encode_key(&self, args: &A) -> crate::Result<Vec<u8>> {
        Ok(options().serialize(args)?)
    }
}

/// The first byte of a value that carries its type's layout fingerprint
/// (never the first byte of a value stored before: see [`Bincode`]).
const LAYOUT_MARK: u8 = 0xff;
/// The mark and the fingerprint.
const LAYOUT_LEN: usize = 9;

/// Values are `0xff`, the 8-byte fingerprint of the result type's serde
/// layout ([`super::layout`]: struct and field names in order, primitive
/// kinds, enum variants), then the bincode bytes: bytes of another layout
/// (a field reordered, `u64` become `i64`, a variant added) are rejected as
/// a decoding failure, not decoded as a wrong value. Bytes that do not start
/// with the mark are a value stored before the fingerprint (or planted with
/// [`crate::memo::encode`]), decoded as they are; one that starts with it
/// but carries another fingerprint is rejected (a result type whose
/// encoding starts with `0xff`, a `u8` 255, is then computed again once).
impl<V: Serialize + DeserializeOwned> ValueCodec<V> for Bincode {
    type Error = crate::Error;

    fn encode_value(&self, value: &V) -> crate::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(LAYOUT_LEN + 8);
        out.push(LAYOUT_MARK);
        out.extend_from_slice(&super::layout::fingerprint::<V>().to_le_bytes());
        options().serialize_into(&mut out, value)?;
        Ok(out)
    }

    fn decode_value(&self, bytes: &[u8]) -> crate::Result<V> {
        let body = match bytes {
            [LAYOUT_MARK, rest @ ..] if rest.len() >= LAYOUT_LEN - 1 => {
                let (fp, body) = rest.split_at(LAYOUT_LEN - 1);
                if fp != super::layout::fingerprint::<V>().to_le_bytes() {
                    return Err(crate::Error::Serialization(
                        format!(
                            "the value was stored for another layout of {} \
                             (the type changed since)",
                            std::any::type_name::<V>()
                        )
                        .into(),
                    ));
                }
                body
            }
            _ => bytes,
        };
        Ok(options()
            .with_limit(body.len() as u64)
            .reject_trailing_bytes()
            .deserialize(body)?)
    }
}

/// A codec whose errors are [`crate::Error`]: what [`Memo`](crate::Memo)
/// needs for arguments `A` and results `R`.
pub trait MemoCodec<A: ?Sized, R>:
    KeyCodec<A, Error = crate::Error> + ValueCodec<R, Error = crate::Error>
{
}

impl<A: ?Sized, R, C> MemoCodec<A, R> for C where
    C: KeyCodec<A, Error = crate::Error> + ValueCodec<R, Error = crate::Error>
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bincode_round_trips_and_rejects_trailing_bytes() {
        let c = Bincode;
        let b = c.encode_value(&(1u32, "x".to_string())).unwrap();
        let back: (u32, String) = c.decode_value(&b).unwrap();
        assert_eq!(back, (1, "x".to_string()));
        let mut longer = b.clone();
        longer.push(0);
        assert!(ValueCodec::<(u32, String)>::decode_value(&c, &longer).is_err());
        assert_eq!(
            c.encode_key(&(1u32, "x")).unwrap(),
            b[LAYOUT_LEN..],
            "a key is the same encoding, without the layout"
        );
        // Stored before the layout fingerprint: read as it is.
        let legacy: (u32, String) = c.decode_value(&b[LAYOUT_LEN..]).unwrap();
        assert_eq!(legacy, (1, "x".to_string()));
        // Another layout: rejected.
        assert!(ValueCodec::<(i32, String)>::decode_value(&c, &b).is_err());
        assert!(ValueCodec::<(u32, String)>::decode_value(&c, &b).is_ok());
    }
}

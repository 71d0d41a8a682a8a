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

/// Keys are the bincode bytes of the arguments, then the 8-byte shape digest
/// of the arguments ([`super::layout`]: struct, field and variant names in
/// order, primitive kinds). bincode records no names, so without it two
/// argument values of one struct that leave out different fields
/// (`skip_serializing_if`: `Filters { min: Some(5) }` and `Filters { max:
/// Some(5) }` both encode as `[1, 5]`) shared a key, and so did an argument
/// struct's old and reordered layouts: a wrong value either way.
impl<A: Serialize + ?Sized> KeyCodec<A> for Bincode {
    type Error = crate::Error;

    fn encode_key(&self, args: &A) -> crate::Result<Vec<u8>> {
        let mut key = options().serialize(args)?;
        let shape = super::layout::digest(args)
            .map_err(|e| serialization(e.to_string()))?
            .shape;
        key.extend_from_slice(&shape.to_le_bytes());
        Ok(key)
    }
}

/// The first byte of a value that carries the digest of its shape
/// ([`super::layout`]).
const SHAPE_MARK: u8 = 0xfe;
/// The first byte of a value stored with the traced layout fingerprint of
/// ebe852b (no longer made): rejected, so computed again once.
const OLD_LAYOUT_MARK: u8 = 0xff;
/// The mark and the digest.
const LAYOUT_LEN: usize = 9;

fn serialization(msg: String) -> crate::Error {
    crate::Error::Serialization(msg.into())
}

/// The value `body` decodes to; every byte must be used.
fn decode_body<V: DeserializeOwned>(body: &[u8]) -> crate::Result<V> {
    Ok(options()
        .with_limit(body.len() as u64)
        .reject_trailing_bytes()
        .deserialize(body)?)
}

/// Values are `0xfe`, the 8-byte shape digest of the value
/// ([`super::layout`]: struct, field and variant names in order, primitive
/// kinds, from the value's own `Serialize`), then the bincode bytes. A value
/// read back must have the shape it was stored with: bytes of another
/// layout of the result type (a field reordered, `u64` become `i64`, a
/// variant's payload retyped) are rejected as a decoding failure, not
/// decoded as a wrong value.
///
/// A value is stored only if its bytes decode back to it (the same value
/// digest: every name, kind and primitive value, the elements of maps and
/// sequences in any order, as a `HashMap` decoded back has another): a `Serialize` that leaves fields out (`skip_serializing_if`) or
/// a `Deserialize` that needs a self-describing format (`serde_json::Value`,
/// untagged or internally tagged enums, flattened structs) is an encoding
/// failure, so the function's value is used and nothing is stored.
///
/// Bytes that start with neither mark are a value stored before any
/// fingerprint (or planted with [`crate::memo::encode`]), decoded as they
/// are; bytes that start with `0xff` were stored with the earlier layout
/// fingerprint and are rejected (computed again once).
impl<V: Serialize + DeserializeOwned> ValueCodec<V> for Bincode {
    type Error = crate::Error;

    fn encode_value(&self, value: &V) -> crate::Result<Vec<u8>> {
        let d = super::layout::digest(value).map_err(|e| serialization(e.to_string()))?;
        let mut out = Vec::with_capacity(LAYOUT_LEN + 8);
        out.push(SHAPE_MARK);
        out.extend_from_slice(&d.shape.to_le_bytes());
        options().serialize_into(&mut out, value)?;
        let body = &out[LAYOUT_LEN..];
        let refused = |why: String| {
            serialization(format!(
                "a {} cannot be cached with bincode: {why} (results must serialize \
                 every field, and bincode is not self-describing); not stored",
                std::any::type_name::<V>()
            ))
        };
        let back: V = decode_body(body).map_err(|e| refused(format!("it does not decode: {e}")))?;
        let d2 = super::layout::digest(&back).map_err(|e| serialization(e.to_string()))?;
        if d2 != d {
            return Err(refused("its bytes decode to another value".into()));
        }
        Ok(out)
    }

    fn decode_value(&self, bytes: &[u8]) -> crate::Result<V> {
        match bytes {
            [SHAPE_MARK, rest @ ..] if rest.len() >= LAYOUT_LEN - 1 => {
                let (fp, body) = rest.split_at(LAYOUT_LEN - 1);
                let v: V = decode_body(body)?;
                let d = super::layout::digest(&v).map_err(|e| serialization(e.to_string()))?;
                if fp != d.shape.to_le_bytes() {
                    return Err(serialization(format!(
                        "the value was stored for another layout of {} \
                         (the type changed since)",
                        std::any::type_name::<V>()
                    )));
                }
                Ok(v)
            }
            [OLD_LAYOUT_MARK, rest @ ..] if rest.len() >= LAYOUT_LEN - 1 => Err(serialization(
                "the value was stored with an earlier layout fingerprint".into(),
            )),
            _ => decode_body(bytes),
        }
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
        let key = c.encode_key(&(1u32, "x")).unwrap();
        let (args, shape) = key.split_at(key.len() - 8);
        assert_eq!(
            args,
            &b[LAYOUT_LEN..],
            "a key is the same encoding, then the shape"
        );
        assert_eq!(shape, &b[1..LAYOUT_LEN], "the value's shape, as the key's");
        // Stored before the layout fingerprint: read as it is.
        let legacy: (u32, String) = c.decode_value(&b[LAYOUT_LEN..]).unwrap();
        assert_eq!(legacy, (1, "x".to_string()));
        // Another layout: rejected.
        assert!(ValueCodec::<(i32, String)>::decode_value(&c, &b).is_err());
        assert!(ValueCodec::<(u32, String)>::decode_value(&c, &b).is_ok());
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Skips {
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<u8>,
        code: u8,
        body: Vec<u8>,
    }

    #[test]
    fn a_value_that_does_not_decode_back_is_refused_a_hash_map_is_not() {
        let c = Bincode;
        let skips = Skips {
            note: None,
            code: 0,
            body: vec![1, 7],
        };
        assert!(c.encode_value(&skips).is_err(), "read back shifted");
        let with_note = Skips {
            note: Some(1),
            ..skips
        };
        assert!(c.encode_value(&with_note).is_ok());
        let m: std::collections::HashMap<String, u32> =
            (0..100).map(|i| (i.to_string(), i)).collect();
        let b = c.encode_value(&m).unwrap();
        let back: std::collections::HashMap<String, u32> = c.decode_value(&b).unwrap();
        assert_eq!(back, m);
    }
}

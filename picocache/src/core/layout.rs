//! Digests of a value's serde layout and contents, which the [`Bincode`]
//! value codec uses so that bincode (which records no names) never reads
//! bytes as a wrong value:
//!
//! - the **shape** digest of a stored value (struct, field, enum and
//!   variant names in order, the kind of every primitive: `u64` is not
//!   `i64`) is stored with it; a value read back must have the same shape,
//!   so bytes of another layout of the result type (fields reordered, an
//!   alias from `u64` to `i64`, a variant's payload retyped, variants
//!   reordered) are rejected, not decoded as wrong values;
//! - the **value** digest (the shape and every primitive's value) tells,
//!   when a value is stored, whether its bytes decode back to it (a
//!   `Serialize` that leaves fields out, as `skip_serializing_if` does, is
//!   read back shifted; a `Deserialize` that needs a self-describing format,
//!   such as `serde_json::Value`'s, fails).
//!
//! Both are computed by driving the value's own `Serialize` (which encoding
//! runs anyway) with a serializer that hashes what it is given: no user
//! code runs on made-up input, and every variant the value holds is
//! covered, however many variants its enums have. The elements of sequences
//! and maps are combined in no order (a `HashMap` or `HashSet` decoded back
//! iterates in another order); structs, tuples and variants in order.
//!
//! [`Bincode`]: super::codec::Bincode

use std::fmt;

use serde::ser::{self, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A value's shape and contents digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// Names and primitive kinds, no primitive values.
    pub shape: u64,
    /// The shape and every primitive's value.
    pub value: u64,
}

/// The digests of `v` (an error if its `Serialize` fails).
pub fn digest<T: Serialize + ?Sized>(v: &T) -> Result<Digest, Error> {
    v.serialize(Hasher)
}

/// A `Serialize` that failed.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Error(msg.to_string())
    }
}

/// Combines two 64-bit words (a folded multiply, as wyhash's: fast, and
/// enough to tell values apart by accident, not against an adversary: the
/// stored bytes are sealed).
fn mix(a: u64, b: u64) -> u64 {
    const P0: u64 = 0xa076_1d64_78bd_642f;
    const P1: u64 = 0xe703_7ed1_a0b4_28db;
    let m = u128::from(a ^ P0) * u128::from(b ^ P1);
    (m as u64) ^ ((m >> 64) as u64)
}

/// A digest of `bytes` under `seed`.
fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    if bytes.len() > 64 {
        return xxh3_64_with_seed(bytes, seed);
    }
    let mut h = mix(seed, bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = mix(h, u64::from_le_bytes(c.try_into().unwrap_or_default()));
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(h, u64::from_le_bytes(last))
}

/// The digest of a kind and its names (`parts`), with `n` (an index or a
/// length).
fn head(kind: u64, parts: &[&str], n: u64) -> u64 {
    parts
        .iter()
        .fold(mix(kind, n), |h, p| hash_bytes(h, p.as_bytes()))
}

fn leaf(kind: u64, x: u64) -> Digest {
    Digest {
        shape: kind,
        value: mix(kind, x),
    }
}

fn leaf_bytes(kind: u64, bytes: &[u8]) -> Digest {
    Digest {
        shape: kind,
        value: hash_bytes(kind, bytes),
    }
}

/// The kinds of serde's data model.
mod kind {
    pub const BOOL: u64 = 1;
    pub const I8: u64 = 2;
    pub const I16: u64 = 3;
    pub const I32: u64 = 4;
    pub const I64: u64 = 5;
    pub const I128: u64 = 6;
    pub const U8: u64 = 7;
    pub const U16: u64 = 8;
    pub const U32: u64 = 9;
    pub const U64: u64 = 10;
    pub const U128: u64 = 11;
    pub const F32: u64 = 12;
    pub const F64: u64 = 13;
    pub const CHAR: u64 = 14;
    pub const STR: u64 = 15;
    pub const BYTES: u64 = 16;
    pub const NONE: u64 = 17;
    pub const SOME: u64 = 18;
    pub const UNIT: u64 = 19;
    pub const UNIT_STRUCT: u64 = 20;
    pub const UNIT_VARIANT: u64 = 21;
    pub const NEWTYPE: u64 = 22;
    pub const NEWTYPE_VARIANT: u64 = 23;
    pub const SEQ: u64 = 24;
    pub const TUPLE: u64 = 25;
    pub const TUPLE_STRUCT: u64 = 26;
    pub const TUPLE_VARIANT: u64 = 27;
    pub const MAP: u64 = 28;
    pub const STRUCT: u64 = 29;
    pub const STRUCT_VARIANT: u64 = 30;
    pub const NO_KEY: u64 = 31;
}

/// A node with a header (its kind and names) and children.
struct Node {
    head: u64,
    shape: u64,
    value: u64,
    count: u64,
    ordered: bool,
    /// A map's key waiting for its value.
    key: Option<Digest>,
}

impl Node {
    fn new(head: u64, ordered: bool) -> Self {
        Node {
            head,
            shape: if ordered { head } else { 0 },
            value: if ordered { head } else { 0 },
            count: 0,
            ordered,
            key: None,
        }
    }

    fn add(&mut self, d: Digest) {
        self.count += 1;
        if self.ordered {
            self.shape = mix(self.shape, d.shape);
            self.value = mix(self.value, d.value);
        } else {
            self.shape = self.shape.wrapping_add(mix(self.head, d.shape));
            self.value = self.value.wrapping_add(mix(self.head, d.value));
        }
    }

    fn field<T: Serialize + ?Sized>(&mut self, name: &str, v: &T) -> Result<(), Error> {
        let d = digest(v)?;
        let n = hash_bytes(0, name.as_bytes());
        self.add(Digest {
            shape: mix(n, d.shape),
            value: mix(n, d.value),
        });
        Ok(())
    }

    fn end(self) -> Result<Digest, Error> {
        Ok(Digest {
            shape: mix(mix(self.head, self.shape), self.count),
            value: mix(mix(self.head, self.value), self.count),
        })
    }
}

struct Hasher;

macro_rules! primitives {
    ($($method:ident $t:ty, $k:ident, $conv:expr;)*) => {$(
        fn $method(self, v: $t) -> Result<Digest, Error> {
            Ok(leaf(kind::$k, $conv(v)))
        }
    )*};
}

impl ser::Serializer for Hasher {
    type Ok = Digest;
    type Error = Error;
    type SerializeSeq = Node;
    type SerializeTuple = Node;
    type SerializeTupleStruct = Node;
    type SerializeTupleVariant = Node;
    type SerializeMap = Node;
    type SerializeStruct = Node;
    type SerializeStructVariant = Node;

    primitives! {
        serialize_i8 i8, I8, |v: i8| v as u64;
        serialize_i16 i16, I16, |v: i16| v as u64;
        serialize_i32 i32, I32, |v: i32| v as u64;
        serialize_i64 i64, I64, |v: i64| v as u64;
        serialize_i128 i128, I128, |v: i128| mix(v as u64, (v >> 64) as u64);
        serialize_u8 u8, U8, u64::from;
        serialize_u16 u16, U16, u64::from;
        serialize_u32 u32, U32, u64::from;
        serialize_u64 u64, U64, |v: u64| v;
        serialize_u128 u128, U128, |v: u128| mix(v as u64, (v >> 64) as u64);
        serialize_f32 f32, F32, |v: f32| u64::from(v.to_bits());
        serialize_f64 f64, F64, f64::to_bits;
    }

    fn serialize_bool(self, v: bool) -> Result<Digest, Error> {
        Ok(leaf(kind::BOOL, u64::from(v)))
    }
    fn serialize_char(self, v: char) -> Result<Digest, Error> {
        Ok(leaf(kind::CHAR, u64::from(v)))
    }
    fn serialize_str(self, v: &str) -> Result<Digest, Error> {
        Ok(leaf_bytes(kind::STR, v.as_bytes()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Digest, Error> {
        Ok(leaf_bytes(kind::BYTES, v))
    }
    fn serialize_none(self) -> Result<Digest, Error> {
        Ok(leaf(kind::NONE, 0))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Digest, Error> {
        let mut n = Node::new(kind::SOME, true);
        n.add(digest(v)?);
        n.end()
    }
    fn serialize_unit(self) -> Result<Digest, Error> {
        Ok(leaf(kind::UNIT, 0))
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<Digest, Error> {
        Ok(leaf(head(kind::UNIT_STRUCT, &[name], 0), 0))
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<Digest, Error> {
        Ok(leaf(
            head(kind::UNIT_VARIANT, &[name, variant], index.into()),
            0,
        ))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<Digest, Error> {
        let mut n = Node::new(head(kind::NEWTYPE, &[name], 0), true);
        n.add(digest(v)?);
        n.end()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Digest, Error> {
        let mut n = Node::new(
            head(kind::NEWTYPE_VARIANT, &[name, variant], index.into()),
            true,
        );
        n.add(digest(v)?);
        n.end()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Node, Error> {
        Ok(Node::new(kind::SEQ, false))
    }
    fn serialize_tuple(self, len: usize) -> Result<Node, Error> {
        Ok(Node::new(mix(kind::TUPLE, len as u64), true))
    }
    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<Node, Error> {
        Ok(Node::new(
            head(kind::TUPLE_STRUCT, &[name], len as u64),
            true,
        ))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Node, Error> {
        let h = head(kind::TUPLE_VARIANT, &[name, variant], index.into());
        Ok(Node::new(mix(h, len as u64), true))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Node, Error> {
        Ok(Node::new(kind::MAP, false))
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Node, Error> {
        Ok(Node::new(head(kind::STRUCT, &[name], 0), true))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Node, Error> {
        let h = head(kind::STRUCT_VARIANT, &[name, variant], index.into());
        Ok(Node::new(h, true))
    }
    fn is_human_readable(&self) -> bool {
        false // as bincode
    }
}

impl ser::SerializeSeq for Node {
    type Ok = Digest;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.add(digest(v)?);
        Ok(())
    }
    fn end(self) -> Result<Digest, Error> {
        Node::end(self)
    }
}

macro_rules! ordered {
    ($($tr:ident $method:ident;)*) => {$(
        impl ser::$tr for Node {
            type Ok = Digest;
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                self.add(digest(v)?);
                Ok(())
            }
            fn end(self) -> Result<Digest, Error> {
                Node::end(self)
            }
        }
    )*};
}

ordered! {
    SerializeTuple serialize_element;
    SerializeTupleStruct serialize_field;
    SerializeTupleVariant serialize_field;
}

impl ser::SerializeMap for Node {
    type Ok = Digest;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Error> {
        self.key = Some(digest(k)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        let k = self.key.take().unwrap_or(leaf(kind::NO_KEY, 0));
        let v = digest(v)?;
        self.add(Digest {
            shape: mix(k.shape, v.shape),
            value: mix(k.value, v.value),
        });
        Ok(())
    }
    fn end(self) -> Result<Digest, Error> {
        Node::end(self)
    }
}

macro_rules! fields {
    ($($tr:ident;)*) => {$(
        impl ser::$tr for Node {
            type Ok = Digest;
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                name: &'static str,
                v: &T,
            ) -> Result<(), Error> {
                self.field(name, v)
            }
            fn end(self) -> Result<Digest, Error> {
                Node::end(self)
            }
        }
    )*};
}

fields! {
    SerializeStruct;
    SerializeStructVariant;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::HashMap;

    #[derive(Serialize)]
    struct A {
        lo: u32,
        hi: u32,
    }
    #[derive(Serialize)]
    #[serde(rename = "A")]
    struct B {
        hi: u32,
        lo: u32,
    }
    #[derive(Serialize)]
    enum E {
        One(u8),
        Two { x: Vec<String>, y: Option<Box<E>> },
    }

    #[test]
    fn names_order_and_kinds_are_in_the_shape_values_in_the_value() {
        let d = |v: &dyn Erased| v.d();
        assert_ne!(
            d(&A { lo: 1, hi: 2 }).shape,
            d(&B { hi: 2, lo: 1 }).shape,
            "fields reordered"
        );
        assert_ne!(d(&5u64).shape, d(&5i64).shape);
        assert_eq!(d(&5u64).shape, d(&6u64).shape);
        assert_ne!(d(&5u64).value, d(&6u64).value);
        let two = E::Two {
            x: vec!["a".into()],
            y: Some(Box::new(E::One(1))),
        };
        assert_ne!(d(&two).shape, d(&E::One(1)).shape);
        // Maps and sequences in no order.
        let m1: HashMap<u32, String> = (0..50).map(|i| (i, i.to_string())).collect();
        let m2: HashMap<u32, String> = (0..50).rev().map(|i| (i, i.to_string())).collect();
        assert_eq!(d(&m1), d(&m2));
        assert_ne!(d(&vec![1u8, 2]).value, d(&vec![1u8]).value);
        // Fixed: the same digest in every build.
        assert_eq!(d(&(1u8, "x")), d(&(1u8, "x".to_string())));
    }

    /// `digest` through a trait object (the test's values have many types).
    trait Erased {
        fn d(&self) -> Digest;
    }
    impl<T: Serialize> Erased for T {
        fn d(&self) -> Digest {
            digest(self).unwrap()
        }
    }
}

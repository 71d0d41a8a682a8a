//! A fingerprint of a type's serde layout, which the [`Bincode`] value codec
//! stores with each value so that bytes of another layout of the result
//! type (fields reordered, a type alias from `u64` to `i64`, a variant
//! added) are rejected, not decoded as wrong values: bincode itself records
//! no names, and would decode them without an error.
//!
//! The layout is traced by driving the type's `Deserialize` with a
//! deserializer that records what it asks for: struct, enum and variant
//! names, field names in order, and the kind of every primitive, one element
//! of each sequence and map, every variant of each enum (up to
//! [`MAX_RUNS`] traces), to a depth of [`MAX_DEPTH`]. The same code gives the
//! same trace in every build; a `Deserialize` written by hand is traced as
//! far as it lets itself be (an error it returns ends the trace, which is
//! still deterministic).
//!
//! The type's `Deserialize` is run on made-up input (zeros, empty strings,
//! one element per sequence) once per process; a panic there is caught and
//! ends the trace. A fingerprint is computed once per type and process, and found again by
//! the type's `std::any::type_name`: two types of one name (two versions of
//! one crate in a build) share the first one's fingerprint, so their values
//! are told apart only as bincode tells them (as before fingerprints).
//! Argument types are not fingerprinted (only `Serialize` is asked of them).
//!
//! [`Bincode`]: super::codec::Bincode

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Write as _};
use std::panic::AssertUnwindSafe;
use std::sync::LazyLock;

use parking_lot::RwLock;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

/// Deepest nesting traced (a recursive type stops here).
const MAX_DEPTH: u32 = 24;
/// Most traces of one type (one per combination of enum variants).
const MAX_RUNS: usize = 64;

/// The fingerprint of `T`'s layout: xxh3-64 of its traces. Computed once
/// per type and process.
pub fn fingerprint<T: DeserializeOwned>() -> u64 {
    thread_local! {
        static LAST: Cell<(usize, usize, u64)> = const { Cell::new((0, 0, 0)) };
    }
    thread_local! {
        static TRACING: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    }
    static ALL: LazyLock<RwLock<HashMap<&'static str, u64>>> = LazyLock::new(Default::default);
    let name = std::any::type_name::<T>();
    let id = (name.as_ptr() as usize, name.len());
    let last = LAST.with(Cell::get);
    if (last.0, last.1) == id {
        return last.2;
    }
    let found = ALL.read().get(name).copied();
    let fp = match found {
        Some(fp) => fp,
        None => {
            // A `Deserialize` that (through a memoized call) asks for its
            // own type's fingerprint while it is traced gets one no value
            // of the type will carry (its values are then computed again).
            if TRACING.with(|t| t.borrow().contains(&name)) {
                return 0;
            }
            TRACING.with(|t| t.borrow_mut().push(name));
            let traced = std::panic::catch_unwind(AssertUnwindSafe(trace::<T>));
            TRACING.with(|t| t.borrow_mut().retain(|n| *n != name));
            // (A `Deserialize` that panics on made-up input: its panic is
            // part of the trace, not the caller's.)
            let text = traced.unwrap_or_else(|_| "!panicked".to_owned());
            let fp = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
            ALL.write().insert(name, fp);
            fp
        }
    };
    LAST.with(|l| l.set((id.0, id.1, fp)));
    fp
}

/// The traces of `T`, one per combination of enum variants, in a fixed
/// order.
pub fn trace<T: DeserializeOwned>() -> String {
    let mut out = String::new();
    let mut queue: VecDeque<Vec<u32>> = VecDeque::from([Vec::new()]);
    let mut runs = 0;
    while let Some(choices) = queue.pop_front() {
        runs += 1;
        let mut t = Tracer {
            out: String::new(),
            depth: 0,
            choices,
            enums: Vec::new(),
        };
        if let Err(e) = T::deserialize(&mut t) {
            let _ = write!(t.out, "!{e}");
        }
        out.push_str(&t.out);
        out.push('\n');
        // The other variants of each enum met past the given choices.
        for j in t.choices.len()..t.enums.len() {
            for v in 1..t.enums[j] {
                if runs + queue.len() >= MAX_RUNS {
                    break;
                }
                let mut c = t.choices.clone();
                c.resize(j, 0);
                c.push(v);
                queue.push_back(c);
            }
        }
    }
    out
}

struct Tracer {
    out: String,
    depth: u32,
    /// The variant to take at the n-th enum met (0 past the end).
    choices: Vec<u32>,
    /// The variant counts of the enums met, in order.
    enums: Vec<u32>,
}

#[derive(Debug)]
struct Stop(String);

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Stop(msg.to_string())
    }
}

type R<T> = Result<T, Stop>;

impl Tracer {
    fn mark(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push(' ');
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Stop("deep".into()));
        }
        Ok(())
    }

    /// `visitor` fed a sequence of `n` traced elements.
    fn seq<'de, V: Visitor<'de>>(&mut self, n: usize, visitor: V) -> R<V::Value> {
        self.enter()?;
        let v = visitor.visit_seq(Seq { t: self, left: n })?;
        self.depth -= 1;
        self.mark(")");
        Ok(v)
    }
}

struct Seq<'a> {
    t: &'a mut Tracer,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Seq<'_> {
    type Error = Stop;
    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> R<Option<S::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.t).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Seq<'_> {
    type Error = Stop;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.t).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> R<V::Value> {
        seed.deserialize(&mut *self.t)
    }
}

struct Enum<'a> {
    t: &'a mut Tracer,
    variant: u32,
}

impl<'de> de::EnumAccess<'de> for Enum<'_> {
    type Error = Stop;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> R<(V::Value, Self)> {
        let v = seed.deserialize(self.variant.into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for Enum<'_> {
    type Error = Stop;
    fn unit_variant(self) -> R<()> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> R<T::Value> {
        seed.deserialize(&mut *self.t)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> R<V::Value> {
        self.t.mark(&format!("tuple{len}("));
        self.t.seq(len, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> R<V::Value> {
        self.t.mark(&format!("{{{}}}(", fields.join(",")));
        self.t.seq(fields.len(), visitor)
    }
}

macro_rules! primitives {
    ($($method:ident $visit:ident $value:expr;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
            self.mark(stringify!($method));
            visitor.$visit($value)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Tracer {
    type Error = Stop;

    primitives! {
        deserialize_bool visit_bool false;
        deserialize_i8 visit_i8 0;
        deserialize_i16 visit_i16 0;
        deserialize_i32 visit_i32 0;
        deserialize_i64 visit_i64 0;
        deserialize_i128 visit_i128 0;
        deserialize_u8 visit_u8 0;
        deserialize_u16 visit_u16 0;
        deserialize_u32 visit_u32 0;
        deserialize_u64 visit_u64 0;
        deserialize_u128 visit_u128 0;
        deserialize_f32 visit_f32 0.0;
        deserialize_f64 visit_f64 0.0;
        deserialize_char visit_char 'a';
        deserialize_str visit_str "";
        deserialize_string visit_str "";
        deserialize_bytes visit_bytes &[];
        deserialize_byte_buf visit_bytes &[];
        deserialize_identifier visit_u64 0;
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.mark("unit");
        visitor.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(Stop("any".into()))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.mark("option(");
        self.enter()?;
        let v = visitor.visit_some(&mut *self)?;
        self.depth -= 1;
        self.mark(")");
        Ok(v)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, v: V) -> R<V::Value> {
        self.mark(&format!("unit_struct:{name}"));
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> R<V::Value> {
        self.mark(&format!("newtype:{name}("));
        self.enter()?;
        let v = visitor.visit_newtype_struct(&mut *self)?;
        self.depth -= 1;
        self.mark(")");
        Ok(v)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.mark("seq(");
        self.seq(1, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> R<V::Value> {
        self.mark(&format!("tuple{len}("));
        self.seq(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> R<V::Value> {
        self.mark(&format!("tuple_struct:{name}:{len}("));
        self.seq(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.mark("map(");
        self.enter()?;
        let v = visitor.visit_map(Seq { t: self, left: 1 })?;
        self.depth -= 1;
        self.mark(")");
        Ok(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> R<V::Value> {
        self.mark(&format!("struct:{name}{{{}}}(", fields.join(",")));
        self.seq(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> R<V::Value> {
        let n = self.enums.len();
        let variant = self.choices.get(n).copied().unwrap_or(0);
        self.enums.push(variants.len() as u32);
        self.mark(&format!("enum:{name}{{{}}}#{variant}(", variants.join(",")));
        self.enter()?;
        let v = visitor.visit_enum(Enum { t: self, variant })?;
        self.depth -= 1;
        self.mark(")");
        Ok(v)
    }

    fn is_human_readable(&self) -> bool {
        false // as bincode
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct A {
        lo: u32,
        hi: u32,
    }
    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct B {
        hi: u32,
        lo: u32,
    }
    #[allow(dead_code)]
    #[derive(Deserialize)]
    enum E {
        One(u8),
        Two { x: Vec<String>, y: Option<Box<E>> },
    }
    #[allow(dead_code)]
    #[derive(Deserialize)]
    enum E2 {
        One(u8),
        Two {
            x: Vec<String>,
            y: Option<Box<E2>>,
            z: bool,
        },
    }
    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct List(u32, Option<Box<List>>);

    /// A `Deserialize` that panics on any input.
    struct Touchy;
    impl<'de> Deserialize<'de> for Touchy {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            panic!("layout test: Deserialize panics (expected)")
        }
    }

    #[test]
    fn field_order_primitives_and_variants_count() {
        assert_ne!(fingerprint::<A>(), fingerprint::<B>());
        assert_ne!(fingerprint::<u64>(), fingerprint::<i64>());
        assert_eq!(fingerprint::<u64>(), fingerprint::<u64>());
        assert_ne!(
            trace::<E>().replace("E2", "E"),
            trace::<E2>().replace("E2", "E")
        );
        assert!(trace::<E>().contains("x,y"), "{}", trace::<E>());
        assert!(trace::<List>().contains("!deep"), "{}", trace::<List>());
        assert_eq!(
            trace::<(u8, String)>(),
            "tuple2( deserialize_u8 deserialize_string ) \n"
        );
        assert_eq!(fingerprint::<Touchy>(), fingerprint::<Touchy>());
        // Fixed: the same trace in every build.
        assert_eq!(
            fingerprint::<(u8, String)>(),
            xxhash_rust::xxh3::xxh3_64(b"tuple2( deserialize_u8 deserialize_string ) \n")
        );
    }
}

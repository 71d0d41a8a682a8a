//! Keys as text, for people (`picocache ls`).
//!
//! The Python package encodes a call's arguments canonically (its encoder is
//! in `picocache/python/src/lib.rs`): a version byte `0x01`, then `A`, the
//! positional arguments, and optionally `K` with the keyword arguments
//! sorted by name. Each value is a tag byte and its payload; lengths and
//! counts are `u32` little-endian:
//!
//! | tag | value |
//! |---|---|
//! | `N` | None |
//! | `i` | int (also bool, and integral floats), `i64` LE |
//! | `J` | a big int: length, two's complement LE bytes |
//! | `f` | float, `f64` bits LE |
//! | `s` / `S` | str: length, UTF-8 (`S`: with lone surrogates) |
//! | `y` | bytes or bytearray: length, bytes |
//! | `(` / `[` | tuple / list: count, values |
//! | `{` | dict: count, key and value pairs |
//! | `<` | set or frozenset: count, values |
//! | `T` | a type tag (`typed=True`): length, `module.qualname`, then the value |
//! | `U` | a type tag of a user's class: its stand-in value, then the value |
//! | `R` | an object's stand-in (its reduction, or `__picocache_key__()`): a value |
//!
//! A key of over 64 KiB is stored as `0xff H` and its BLAKE2b digest, and a
//! `key_serializer`'s as `0xfe U` and its bytes: those, the Rust API's
//! bincode keys and anything that does not parse are shown escaped.

use std::fmt::Write as _;

/// `key` as the call it encodes (`(1, 'a', b=2)`), if it is a Python
/// package key that parses to the end; else `None`.
pub fn python_call(key: &[u8]) -> Option<String> {
    let mut r = Reader { b: key, at: 0 };
    if r.byte()? != 1 || r.byte()? != b'A' {
        return None;
    }
    let n = r.len()?;
    let mut parts = Vec::new();
    for _ in 0..n {
        parts.push(r.value(0)?);
    }
    if r.at < key.len() {
        if r.byte()? != b'K' {
            return None;
        }
        for _ in 0..r.len()? {
            let name = r.take_len()?;
            let name = std::str::from_utf8(name).ok()?.to_owned();
            parts.push(format!("{name}={}", r.value(0)?));
        }
    }
    (r.at == key.len()).then(|| format!("({})", parts.join(", ")))
}

/// `key` for a person: the call it encodes, else its bytes escaped.
pub fn display(key: &[u8]) -> String {
    python_call(key).unwrap_or_else(|| key.escape_ascii().to_string())
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

/// Deepest nesting shown (the encoder's own limit is 64).
const MAX_DEPTH: usize = 70;
/// Most elements of one container shown before `...`.
const MAX_SHOWN: usize = 20;

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.b.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn len(&mut self) -> Option<usize> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn take_len(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn seq(&mut self, depth: usize, open: &str, close: &str, pairs: bool) -> Option<String> {
        let n = self.len()?;
        let mut s = String::from(open);
        for i in 0..n {
            let item = if pairs {
                let k = self.value(depth + 1)?;
                format!("{k}: {}", self.value(depth + 1)?)
            } else {
                self.value(depth + 1)?
            };
            if i < MAX_SHOWN {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(&item);
            } else if i == MAX_SHOWN {
                s.push_str(", ...");
            }
        }
        if open == "(" && n == 1 {
            s.push(',');
        }
        s.push_str(close);
        Some(s)
    }

    fn value(&mut self, depth: usize) -> Option<String> {
        if depth > MAX_DEPTH {
            return None;
        }
        Some(match self.byte()? {
            b'N' => "None".to_owned(),
            b'i' => {
                let b = self.take(8)?;
                i64::from_le_bytes(b.try_into().ok()?).to_string()
            }
            b'J' if self
                .b
                .get(self.at..self.at + 4)
                .is_some_and(|n| n[0] <= 16 && n[1..] == [0; 3]) =>
            {
                // Up to 128 bits: in decimal.
                let b = self.take_len()?;
                let fill = if b.last().is_some_and(|x| x & 0x80 != 0) {
                    0xff
                } else {
                    0
                };
                let mut w = [fill; 16];
                w[..b.len()].copy_from_slice(b);
                i128::from_le_bytes(w).to_string()
            }
            b'J' => {
                let b = self.take_len()?;
                let mut hex = String::from("int(0x");
                for x in b.iter().rev() {
                    let _ = write!(hex, "{x:02x}");
                }
                hex.push_str(", two's complement)");
                hex
            }
            b'f' => {
                let b = self.take(8)?;
                let x = f64::from_bits(u64::from_le_bytes(b.try_into().ok()?));
                if x.is_nan() {
                    "nan".to_owned()
                } else if x.is_infinite() {
                    if x > 0.0 { "inf" } else { "-inf" }.to_owned()
                } else {
                    format!("{x:?}")
                }
            }
            b's' | b'S' => format!("{:?}", String::from_utf8_lossy(self.take_len()?)),
            b'y' => format!("b\"{}\"", self.take_len()?.escape_ascii()),
            b'(' => self.seq(depth, "(", ")", false)?,
            b'[' => self.seq(depth, "[", "]", false)?,
            b'{' => self.seq(depth, "{", "}", true)?,
            b'<' => self.seq(depth, "{", "}", false)?,
            b'T' => {
                let t = String::from_utf8_lossy(self.take_len()?).into_owned();
                format!("{t}({})", self.value(depth + 1)?)
            }
            b'U' => {
                let t = self.value(depth + 1)?;
                format!("<type {t}>({})", self.value(depth + 1)?)
            }
            b'R' => format!("<{}>", self.value(depth + 1)?),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn i(x: i64) -> Vec<u8> {
        [&b"i"[..], &x.to_le_bytes()].concat()
    }

    fn s(x: &str) -> Vec<u8> {
        [&b"s"[..], &(x.len() as u32).to_le_bytes(), x.as_bytes()].concat()
    }

    #[test]
    fn calls_render_as_python() {
        let k = key(&[b"\x01A", &2u32.to_le_bytes(), &i(1), &s("a")]);
        assert_eq!(python_call(&k).as_deref(), Some("(1, \"a\")"));
        let k = key(&[
            b"\x01A",
            &0u32.to_le_bytes(),
            b"K",
            &1u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            b"b",
            b"(",
            &1u32.to_le_bytes(),
            b"N",
        ]);
        assert_eq!(python_call(&k).as_deref(), Some("(b=(None,))"));
    }

    #[test]
    fn big_ints() {
        let k = key(&[
            b"\x01A",
            &1u32.to_le_bytes(),
            b"J",
            &2u32.to_le_bytes(),
            &[0x00, 0x80],
        ]);
        assert_eq!(python_call(&k).as_deref(), Some("(-32768)"));
        let k = key(&[
            b"\x01A",
            &1u32.to_le_bytes(),
            b"J",
            &2u32.to_le_bytes(),
            &[0xff, 0x7f],
        ]);
        assert_eq!(python_call(&k).as_deref(), Some("(32767)"));
    }

    #[test]
    fn anything_else_is_escaped_never_a_panic() {
        assert_eq!(display(b"\x07payload"), "\\x07payload");
        assert!(python_call(b"\x01A\xff\xff\xff\xff").is_none());
        // Every prefix and every single-byte change of a valid key parses
        // or is refused, without panicking.
        let k = key(&[b"\x01A", &2u32.to_le_bytes(), &i(-5), &s("hé")]);
        for n in 0..k.len() {
            let _ = python_call(&k[..n]);
            for b in [0u8, 1, b'(', b'{', 0xff] {
                let mut m = k.clone();
                m[n] = b;
                let _ = display(&m);
            }
        }
    }
}

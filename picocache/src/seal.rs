//! Sealed values: every value a memoizer stores carries a MAC, checked
//! before a byte of it is handed to a deserializer.
//!
//! Anyone who can write to a cache's store (a Redis or SQL account, a
//! writable store directory) could otherwise plant bytes under a function's
//! key: a pickle that runs code when it is loaded, or a value the
//! application never computed. A sealed value is
//!
//! ```text
//! 0        1            5                          21
//! +--------+------------+--------------------------+----------------
//! | format | secret id  | tag (16 bytes)           | value bytes ...
//! +--------+------------+--------------------------+----------------
//! ```
//!
//! - format: `0xA8`, sealed version 2 (keyed BLAKE3), what every new value
//!   is sealed with; `0xA7`, sealed version 1 (HMAC-SHA256, before issue
//!   18), still checked and read. A value that starts with neither (written
//!   by picocache 1.x, or planted) is rejected.
//! - secret id: the first 4 bytes of HMAC-SHA256(secret, "picocache secret
//!   id v1") (both versions); it picks the secret to check with (rotation)
//!   and tells "signed with a secret this process does not hold" from
//!   "tampered". It reveals nothing usable about the secret.
//! - tag: over `m` = format byte ‖ secret id ‖ len(namespace) as u32 LE ‖
//!   namespace ‖ len(key) as u32 LE ‖ key ‖ value, its first 16 bytes (128
//!   bits against forgery):
//!   - version 2: BLAKE3 in keyed mode (a MAC; the `blake3` crate) with the
//!     32-byte key `blake3::derive_key("picocache seal v2 keyed BLAKE3",
//!     secret)`;
//!   - version 1: HMAC-SHA256(secret, m) (RustCrypto `hmac`, `sha2`;
//!     truncation as RFC 2104 allows).
//!
//! The tag binds the value to its namespace (the function's identity) and
//! its key (the call's arguments), so a valid entry cannot be moved to
//! another function or another call either; the format byte is inside it,
//! so a tag made for one version never checks as the other. Checking
//! compares in constant time (`subtle`; `hmac`'s `verify_truncated_left`).
//! Keyed BLAKE3 runs at about 4 GB/s on one core here against HMAC-SHA256's
//! 1.4 (100 MB: 25 ms against 70; BENCHMARKS.md, issue 18).
//!
//! A value may be sealed in parts ([`Secrets::seal_head`]): the tag of the
//! parts' concatenation, with no copy of them (a large value goes to the
//! store as the seal's head followed by its parts).

use std::fmt;

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The format byte of a sealed value: version 2 (keyed BLAKE3), what
/// [`Secrets::seal`] writes.
pub const FORMAT: u8 = 0xA8;
/// The format byte of a version 1 seal (HMAC-SHA256): no longer written,
/// still checked and read.
pub const FORMAT_V1: u8 = 0xA7;
/// Bytes a seal adds in front of a value (both versions).
pub const OVERHEAD: usize = 1 + 4 + TAG_LEN;
const TAG_LEN: usize = 16;
const ID_LABEL: &[u8] = b"picocache secret id v1";
/// The context of the version 2 key derivation (`blake3::derive_key`).
const V2_CONTEXT: &str = "picocache seal v2 keyed BLAKE3";

/// Why a stored value was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// No seal: written by picocache 1.x or another program, or planted.
    Unsigned,
    /// Sealed with a secret this process does not hold.
    OtherSecret,
    /// Sealed with one of our secrets, but the bytes do not match the tag:
    /// changed after it was written, or moved from another key.
    Tampered,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rejection::Unsigned => "not signed (planted, or written by another program)",
            Rejection::OtherSecret => {
                "signed with another secret (machines that share a store need the same \
                 PICOCACHE_SECRET)"
            }
            Rejection::Tampered => "its signature does not match (tampered with)",
        })
    }
}

/// One secret, keyed once (cloning a keyed hasher skips the key schedule).
#[derive(Clone)]
struct Key {
    id: [u8; 4],
    /// Version 1 (checking only).
    mac: HmacSha256,
    /// Version 2.
    b3: blake3::Hasher,
}

/// The secrets a memoizer seals and checks with: the first seals, every one
/// checks (so entries sealed before a rotation still read).
#[derive(Clone)]
pub struct Secrets {
    keys: Vec<Key>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets themselves.
        let ids: Vec<String> = self.keys.iter().map(|k| hex(&k.id)).collect();
        f.debug_struct("Secrets").field("ids", &ids).finish()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Secrets {
    /// Secrets from raw bytes, the signing one first. `None` if the list is
    /// empty or a secret is empty.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Option<Secrets> {
        if secrets.is_empty() || secrets.iter().any(|s| s.as_ref().is_empty()) {
            return None;
        }
        let keys = secrets
            .iter()
            .map(|s| {
                let mac =
                    HmacSha256::new_from_slice(s.as_ref()).expect("HMAC takes any key length");
                let mut m = mac.clone();
                m.update(ID_LABEL);
                let full = m.finalize().into_bytes();
                let b3 = blake3::Hasher::new_keyed(&blake3::derive_key(V2_CONTEXT, s.as_ref()));
                Key {
                    id: [full[0], full[1], full[2], full[3]],
                    mac,
                    b3,
                }
            })
            .collect();
        Some(Secrets { keys })
    }

    /// The id of the signing secret, in hex (safe to show).
    pub fn signing_id(&self) -> String {
        hex(&self.keys[0].id)
    }

    /// The version 1 tag (HMAC-SHA256) of `value` for key `k` of `ns`.
    fn tag_v1(key: &Key, ns: &str, k: &[u8], value: &[u8]) -> HmacSha256 {
        let mut m = key.mac.clone();
        m.update(&[FORMAT_V1]);
        m.update(&key.id);
        m.update(&(ns.len() as u32).to_le_bytes());
        m.update(ns.as_bytes());
        m.update(&(k.len() as u32).to_le_bytes());
        m.update(k);
        m.update(value);
        m
    }

    /// The version 2 tag (keyed BLAKE3) of the concatenation of `parts` for
    /// key `k` of `ns`.
    fn tag_v2(key: &Key, ns: &str, k: &[u8], parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut m = key.b3.clone();
        m.update(&[FORMAT]);
        m.update(&key.id);
        m.update(&(ns.len() as u32).to_le_bytes());
        m.update(ns.as_bytes());
        m.update(&(k.len() as u32).to_le_bytes());
        m.update(k);
        for p in parts {
            m.update(p);
        }
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&m.finalize().as_bytes()[..TAG_LEN]);
        tag
    }

    /// The seal's head (the first [`OVERHEAD`] bytes of the sealed value)
    /// for the concatenation of `parts`, stored under key `k` of namespace
    /// `ns`: the sealed value is this head followed by the parts.
    pub fn seal_head(&self, ns: &str, k: &[u8], parts: &[&[u8]]) -> [u8; OVERHEAD] {
        let key = &self.keys[0];
        let tag = Self::tag_v2(key, ns, k, parts);
        let mut out = [0u8; OVERHEAD];
        out[0] = FORMAT;
        out[1..5].copy_from_slice(&key.id);
        out[5..].copy_from_slice(&tag);
        out
    }

    /// `value` sealed for key `k` of namespace `ns`.
    pub fn seal(&self, ns: &str, k: &[u8], value: &[u8]) -> Vec<u8> {
        let head = self.seal_head(ns, k, &[value]);
        let mut out = Vec::with_capacity(OVERHEAD + value.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(value);
        out
    }

    /// A version 1 seal (HMAC-SHA256), as picocache wrote before issue 18:
    /// for tests of stores written then.
    #[doc(hidden)]
    pub fn seal_v1(&self, ns: &str, k: &[u8], value: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let tag = Self::tag_v1(key, ns, k, value).finalize().into_bytes();
        let mut out = Vec::with_capacity(OVERHEAD + value.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&tag[..TAG_LEN]);
        out.extend_from_slice(value);
        out
    }

    /// The value inside `stored`, if it is sealed (version 2 or 1) for key
    /// `k` of namespace `ns` with one of these secrets.
    pub fn open<'a>(&self, ns: &str, k: &[u8], stored: &'a [u8]) -> Result<&'a [u8], Rejection> {
        if stored.len() < OVERHEAD || (stored[0] != FORMAT && stored[0] != FORMAT_V1) {
            return Err(Rejection::Unsigned);
        }
        let (id, tag, value) = (&stored[1..5], &stored[5..OVERHEAD], &stored[OVERHEAD..]);
        let mut known = false;
        for key in self.keys.iter().filter(|key| key.id == id) {
            known = true;
            let ok = if stored[0] == FORMAT {
                bool::from(Self::tag_v2(key, ns, k, &[value]).ct_eq(tag))
            } else {
                Self::tag_v1(key, ns, k, value)
                    .verify_truncated_left(tag)
                    .is_ok()
            };
            if ok {
                return Ok(value);
            }
        }
        Err(if known {
            Rejection::Tampered
        } else {
            Rejection::OtherSecret
        })
    }
}

/// The value part of a sealed value, unchecked (for comparing with bytes
/// this process just stored; never for decoding).
pub fn payload(stored: &[u8]) -> Option<&[u8]> {
    (stored.len() >= OVERHEAD && (stored[0] == FORMAT || stored[0] == FORMAT_V1))
        .then(|| &stored[OVERHEAD..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_rejection() {
        let s = Secrets::new(&[b"one"]).unwrap();
        let sealed = s.seal("ns", b"k", b"value");
        assert_eq!(sealed.len(), OVERHEAD + 5);
        assert_eq!(s.open("ns", b"k", &sealed), Ok(&b"value"[..]));
        // Bound to the namespace and the key.
        assert_eq!(s.open("other", b"k", &sealed), Err(Rejection::Tampered));
        assert_eq!(s.open("ns", b"k2", &sealed), Err(Rejection::Tampered));
        // Every single flipped bit is caught.
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(s.open("ns", b"k", &bad).is_err(), "bit {i}");
        }
        // Truncated, empty, unsigned.
        assert_eq!(
            s.open("ns", b"k", &sealed[..OVERHEAD - 1]),
            Err(Rejection::Unsigned)
        );
        assert_eq!(s.open("ns", b"k", b""), Err(Rejection::Unsigned));
        assert_eq!(
            s.open("ns", b"k", b"\x80\x04K\x01."),
            Err(Rejection::Unsigned)
        );
        // Another secret.
        let other = Secrets::new(&[b"two"]).unwrap();
        assert_eq!(other.open("ns", b"k", &sealed), Err(Rejection::OtherSecret));
    }

    #[test]
    fn rotation_reads_old_and_seals_new() {
        let old = Secrets::new(&[b"old"]).unwrap();
        let rotated = Secrets::new(&[&b"new"[..], &b"old"[..]]).unwrap();
        let by_old = old.seal("ns", b"k", b"v");
        assert_eq!(rotated.open("ns", b"k", &by_old), Ok(&b"v"[..]));
        let by_new = rotated.seal("ns", b"k", b"v");
        assert_eq!(old.open("ns", b"k", &by_new), Err(Rejection::OtherSecret));
        assert_ne!(rotated.signing_id(), old.signing_id());
    }

    #[test]
    fn new_values_are_sealed_with_keyed_blake3() {
        let s = Secrets::new(&[b"one"]).unwrap();
        let sealed = s.seal("ns", b"k", b"value");
        assert_eq!(sealed[0], FORMAT);
        assert_eq!(FORMAT, 0xA8);
        // The tag is keyed BLAKE3 over the documented message.
        let key = blake3::derive_key(V2_CONTEXT, b"one");
        let mut m = blake3::Hasher::new_keyed(&key);
        m.update(&[FORMAT]);
        m.update(&sealed[1..5]);
        m.update(&2u32.to_le_bytes());
        m.update(b"ns");
        m.update(&1u32.to_le_bytes());
        m.update(b"k");
        m.update(b"value");
        assert_eq!(&sealed[5..OVERHEAD], &m.finalize().as_bytes()[..TAG_LEN]);
        // Without the key, the plain hash is no tag.
        let mut plain = blake3::Hasher::new();
        plain.update(&sealed[..5]);
        assert_ne!(
            &sealed[5..OVERHEAD],
            &plain.finalize().as_bytes()[..TAG_LEN]
        );
    }

    #[test]
    fn version_1_seals_still_read_and_versions_do_not_mix() {
        let s = Secrets::new(&[b"one"]).unwrap();
        let v1 = s.seal_v1("ns", b"k", b"value");
        assert_eq!(v1[0], FORMAT_V1);
        assert_eq!(s.open("ns", b"k", &v1), Ok(&b"value"[..]));
        assert_eq!(payload(&v1), Some(&b"value"[..]));
        assert_eq!(s.open("ns", b"k2", &v1), Err(Rejection::Tampered));
        for i in 0..v1.len() * 8 {
            let mut bad = v1.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(s.open("ns", b"k", &bad).is_err(), "bit {i}");
        }
        // A version 1 tag relabelled as version 2, and the reverse, fail.
        let mut relabelled = v1.clone();
        relabelled[0] = FORMAT;
        assert_eq!(s.open("ns", b"k", &relabelled), Err(Rejection::Tampered));
        let mut v2 = s.seal("ns", b"k", b"value");
        v2[0] = FORMAT_V1;
        assert_eq!(s.open("ns", b"k", &v2), Err(Rejection::Tampered));
        // Another format byte is unsigned.
        let mut other = s.seal("ns", b"k", b"value");
        other[0] = 0xA9;
        assert_eq!(s.open("ns", b"k", &other), Err(Rejection::Unsigned));
    }

    #[test]
    fn sealed_in_parts_is_sealed_whole() {
        let s = Secrets::new(&[b"one"]).unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![],
            vec![b""],
            vec![b"", b""],
            vec![b"x"],
            vec![&big],
            vec![b"head", &big[..65_536], b"", &big[65_536..], b"tail"],
            big.chunks(1000).collect(),
        ];
        for parts in cases {
            let whole: Vec<u8> = parts.concat();
            let head = s.seal_head("ns", b"k", &parts);
            assert_eq!(head.to_vec(), s.seal("ns", b"k", &whole)[..OVERHEAD]);
            let mut stored = head.to_vec();
            stored.extend_from_slice(&whole);
            assert_eq!(s.open("ns", b"k", &stored), Ok(&whole[..]));
            if !whole.is_empty() {
                let mut bad = stored.clone();
                let at = OVERHEAD + whole.len() / 2;
                bad[at] ^= 0x40;
                assert_eq!(s.open("ns", b"k", &bad), Err(Rejection::Tampered));
                // One byte short, or one more.
                assert_eq!(
                    s.open("ns", b"k", &stored[..stored.len() - 1]),
                    Err(Rejection::Tampered)
                );
            }
            let mut longer = stored.clone();
            longer.push(0);
            assert_eq!(s.open("ns", b"k", &longer), Err(Rejection::Tampered));
        }
    }

    #[test]
    fn empty_secrets_are_refused() {
        assert!(Secrets::new::<&[u8]>(&[]).is_none());
        assert!(Secrets::new(&[&b""[..]]).is_none());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secrets::new(&[b"hunter2-secret"]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

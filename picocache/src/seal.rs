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
//! | 0xA7   | secret id  | tag (16 bytes)           | value bytes ...
//! +--------+------------+--------------------------+----------------
//! ```
//!
//! - `0xA7`: the format byte (sealed, version 1). A value that does not
//!   start with it (written by picocache 1.x, or planted) is rejected.
//! - secret id: the first 4 bytes of HMAC-SHA256(secret, "picocache secret
//!   id v1"); it picks the secret to check with (rotation) and tells "signed
//!   with a secret this process does not hold" from "tampered". It reveals
//!   nothing usable about the secret.
//! - tag: HMAC-SHA256(secret, format byte ‖ secret id ‖ len(namespace) as
//!   u32 LE ‖ namespace ‖ len(key) as u32 LE ‖ key ‖ value), its first 16
//!   bytes (truncation as RFC 2104 allows; 128 bits against forgery).
//!
//! The tag binds the value to its namespace (the function's identity) and
//! its key (the call's arguments), so a valid entry cannot be moved to
//! another function or another call either. Checking compares in constant
//! time (the `hmac` crate's `verify_truncated_left`).

use std::fmt;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The format byte of a sealed value.
pub const FORMAT: u8 = 0xA7;
/// Bytes a seal adds in front of a value.
pub const OVERHEAD: usize = 1 + 4 + TAG_LEN;
const TAG_LEN: usize = 16;
const ID_LABEL: &[u8] = b"picocache secret id v1";

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

/// One secret, keyed once (cloning a keyed HMAC skips the key schedule).
#[derive(Clone)]
struct Key {
    id: [u8; 4],
    mac: HmacSha256,
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
                Key {
                    id: [full[0], full[1], full[2], full[3]],
                    mac,
                }
            })
            .collect();
        Some(Secrets { keys })
    }

    /// The id of the signing secret, in hex (safe to show).
    pub fn signing_id(&self) -> String {
        hex(&self.keys[0].id)
    }

    fn tag(key: &Key, ns: &str, k: &[u8], value: &[u8]) -> HmacSha256 {
        let mut m = key.mac.clone();
        m.update(&[FORMAT]);
        m.update(&key.id);
        m.update(&(ns.len() as u32).to_le_bytes());
        m.update(ns.as_bytes());
        m.update(&(k.len() as u32).to_le_bytes());
        m.update(k);
        m.update(value);
        m
    }

    /// `value` sealed for key `k` of namespace `ns`.
    pub fn seal(&self, ns: &str, k: &[u8], value: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let tag = Self::tag(key, ns, k, value).finalize().into_bytes();
        let mut out = Vec::with_capacity(OVERHEAD + value.len());
        out.push(FORMAT);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&tag[..TAG_LEN]);
        out.extend_from_slice(value);
        out
    }

    /// The value inside `stored`, if it is sealed for key `k` of namespace
    /// `ns` with one of these secrets.
    pub fn open<'a>(&self, ns: &str, k: &[u8], stored: &'a [u8]) -> Result<&'a [u8], Rejection> {
        if stored.len() < OVERHEAD || stored[0] != FORMAT {
            return Err(Rejection::Unsigned);
        }
        let (id, tag, value) = (&stored[1..5], &stored[5..OVERHEAD], &stored[OVERHEAD..]);
        let mut known = false;
        for key in self.keys.iter().filter(|key| key.id == id) {
            known = true;
            if Self::tag(key, ns, k, value)
                .verify_truncated_left(tag)
                .is_ok()
            {
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
    (stored.len() >= OVERHEAD && stored[0] == FORMAT).then(|| &stored[OVERHEAD..])
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

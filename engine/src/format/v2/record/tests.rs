//! Log version 2's records: round trips, every truncation and every flipped
//! byte (never a wrong record, never a panic), and the scan's
//! resynchronisation against the records written.

use proptest::prelude::*;

use super::*;

fn one(kind: u8, ns: u16, base: u64, seq: u64, exp: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_record(&mut v, kind, ns, base, seq, exp, key, value);
    v
}

#[test]
fn the_benchmarks_record_has_a_12_byte_header() {
    let r = one(kind::PUT, 3, 1000, 101_000, 0, &[1; 16], &[2; 100]);
    assert_eq!(r.len(), 128, "12 + 16 + 100");
    assert_eq!(r[4], KIND_MARK | kind::PUT);
    let with_expiry = one(
        kind::PUT,
        3,
        1000,
        101_000,
        1_767_225_600_000,
        &[1; 16],
        &[2; 100],
    );
    assert_eq!(with_expiry.len(), 128 + 6);
    assert_eq!(with_expiry[4], KIND_MARK | HAS_EXPIRY | kind::PUT);
}

#[test]
fn golden_bytes() {
    // FORMAT.md's diagram, byte by byte: kind PUT, ns 0x0102, klen 1,
    // vlen 2, seq - base = -1 (zigzag 1), no expiry, key "k", value "vv".
    let r = one(kind::PUT, 0x0102, 10, 9, 0, b"k", b"vv");
    assert_eq!(&r[4..], &[0xA1, 0x02, 0x01, 1, 2, 1, b'k', b'v', b'v']);
    let sum = xxh3_64_with_seed(&r[4..], REC_SEED) as u32;
    assert_eq!(r[..4], sum.to_le_bytes());
}

#[test]
fn segment_header_round_trip_and_rejections() {
    let h = encode_segment_header(7, 1 << 40);
    assert_eq!(check_segment_header(&h), Some((7, 1 << 40)));
    assert_eq!(
        check_segment_header(&crate::format::encode_segment_header(7)),
        None
    );
    for i in 0..h.len() {
        let mut d = h;
        d[i] ^= 0x10;
        assert_eq!(check_segment_header(&d), None, "byte {i}");
    }
}

#[test]
fn overlong_and_overflowing_varints_are_refused() {
    let mut at = 0;
    assert_eq!(get_varint(&[0x80, 0x00], &mut at, 3), None);
    assert_eq!(get_varint(&[0xff; 10], &mut at, 10), None);
    let mut max = Vec::new();
    put_varint(&mut max, u64::MAX);
    assert_eq!(get_varint(&max, &mut at, 10), Some(u64::MAX));
    let mut over = max.clone();
    over[9] = 0x02;
    let mut at = 0;
    assert_eq!(get_varint(&over, &mut at, 10), None);
}

#[test]
fn a_length_over_the_limit_is_refused_before_the_bytes_are_read() {
    let mut r = Vec::new();
    r.extend_from_slice(&[0, 0, 0, 0, KIND_MARK | kind::PUT, 0, 0]);
    put_varint(&mut r, 1);
    put_varint(&mut r, (MAX_VALUE_LEN + 1) as u64);
    put_varint(&mut r, 0);
    assert_eq!(parse_record(&r, 0), Parsed::Bad);
}

#[test]
fn zeros_are_no_record_and_are_skipped_fast() {
    assert_eq!(parse_record(&[0; 64], 0), Parsed::Bad);
    let mut log = vec![0u8; 1 << 20];
    let r = one(kind::PUT, 1, 0, 5, 0, b"key", b"value");
    let at = log.len() - 1000;
    log[at..at + r.len()].copy_from_slice(&r);
    let (found, end) = scan(&log, 0);
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].0, found[0].1.key), (at, &b"key"[..]));
    assert_eq!(end, at + r.len());
}

prop_compose! {
    fn a_record()(
        kind in 1u8..=4,
        ns in any::<u16>(),
        delta in -1000i64..1_000_000,
        exp in prop_oneof![Just(0u64), 1u64..u64::MAX],
        key in proptest::collection::vec(any::<u8>(), 0..40),
        value in proptest::collection::vec(any::<u8>(), 0..300),
    ) -> (u8, u16, i64, u64, Vec<u8>, Vec<u8>) {
        (kind, ns, delta, exp, key, value)
    }
}

proptest! {
    #[test]
    fn round_trip_and_parts(r in a_record(), base in 0u64..u64::MAX / 2, split in 0usize..300) {
        let (kind, ns, delta, exp, key, value) = r;
        let seq = base.wrapping_add(delta as u64);
        let whole = one(kind, ns, base, seq, exp, &key, &value);
        let mut head = Vec::new();
        let cut = split.min(value.len());
        encode_record_head(&mut head, kind, ns, base, seq, exp, &key, &[&value[..cut], &value[cut..]]);
        head.extend_from_slice(&value);
        prop_assert_eq!(&head, &whole);
        let Parsed::Record(got) = parse_record(&whole, base) else {
            return Err(TestCaseError::fail("not parsed"));
        };
        prop_assert_eq!((got.kind, got.ns, got.seq, got.expire_ms), (kind, ns, seq, exp));
        prop_assert_eq!((got.key, got.value, got.len), (&key[..], &value[..], whole.len()));
        // Every truncation is Short (or Bad), never a record.
        for n in 0..whole.len() {
            prop_assert!(!matches!(parse_record(&whole[..n], base), Parsed::Record(_)), "cut at {}", n);
        }
    }

    #[test]
    fn a_flipped_byte_is_never_another_record(r in a_record(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (kind, ns, delta, exp, key, value) = r;
        let whole = one(kind, ns, 100, 100u64.wrapping_add(delta as u64), exp, &key, &value);
        let mut d = whole.clone();
        let i = at.index(d.len());
        d[i] ^= 1 << bit;
        prop_assert!(!matches!(parse_record(&d, 100), Parsed::Record(_)));
    }

    /// A log of records, damaged in places: the scan yields every record
    /// not touched by the damage, at its offset, and nothing else.
    #[test]
    fn the_scan_resynchronises_after_damage(
        recs in proptest::collection::vec(a_record(), 1..30),
        hits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        tail in 0usize..200,
    ) {
        let base = 1 << 20;
        let mut log = Vec::new();
        let mut spans = Vec::new();
        for (kind, ns, delta, exp, key, value) in &recs {
            let start = log.len();
            encode_record(&mut log, *kind, *ns, base, base.wrapping_add(*delta as u64), *exp, key, value);
            spans.push((start, log.len()));
        }
        log.resize(log.len() + tail, 0);
        let mut touched = vec![false; spans.len()];
        for (i, x) in &hits {
            let p = i.index(log.len());
            log[p] ^= x;
            for (j, (s, e)) in spans.iter().enumerate() {
                if (*s..*e).contains(&p) {
                    touched[j] = true;
                }
            }
        }
        let (found, _) = scan(&log, base);
        let mut want: Vec<usize> = spans.iter().zip(&touched).filter(|(_, t)| !**t).map(|(s, _)| s.0).collect();
        // A record the damage made unreadable may hide the start of the next
        // one only if a false record was found across them; every record
        // the scan yields must be one that was written, at its offset.
        let got: Vec<usize> = found.iter().map(|(o, _)| *o).collect();
        for (o, r) in &found {
            let j = spans.iter().position(|s| s.0 == *o);
            prop_assert!(j.is_some(), "a record at {} that was never written", o);
            let (kind, ns, delta, exp, key, value) = &recs[j.unwrap()];
            prop_assert_eq!((r.kind, r.ns, r.expire_ms), (*kind, *ns, *exp));
            prop_assert_eq!(r.seq, base.wrapping_add(*delta as u64));
            prop_assert_eq!((r.key, r.value), (&key[..], &value[..]));
        }
        want.retain(|o| !got.contains(o));
        prop_assert!(want.is_empty(), "intact records not found at {:?}", want);
    }
}

//! Hostile and damaged files: a small store's files truncated at every byte
//! offset and with a bit flipped at every offset (every offset of the log
//! segments; of the index, its header page and every nonzero word, which is
//! every byte the index's meaning depends on). Each damaged copy is opened
//! fresh and used: no panic, no hang, no wrong value; damage is a miss or a
//! clean error, and `verify` reports damaged records.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use picocache_engine::format::v1;
use picocache_engine::{format, Error, Limits, Options, Store};

fn opts() -> Options {
    // Small segments keep each damaged copy small (segments are preallocated).
    Options::default()
        .background_compaction(false)
        .segment_size(64 << 10)
}

fn val(k: u8) -> Vec<u8> {
    vec![k; 10 + k as usize]
}

fn build(dir: &Path) {
    let s = Store::open(dir, opts()).unwrap();
    let ns = s.namespace("d", Limits::maxsize(Some(50))).unwrap();
    let other = s.namespace("other", Limits::default()).unwrap();
    for k in 0..24u8 {
        ns.put(&[k], &val(k)).unwrap();
    }
    ns.remove(&[3]).unwrap();
    other.put(b"x", b"y").unwrap();
    other.clear().unwrap();
    ns.put(&[5], &val(5)).unwrap();
    s.sync().unwrap();
}

/// The indices of the 4 KiB pages of `bytes` that hold a nonzero byte.
fn nonzero_pages(bytes: &[u8]) -> Vec<usize> {
    (0..bytes.len().div_ceil(4096))
        .filter(|&i| bytes[i * 4096..((i + 1) * 4096).min(bytes.len())] != ZERO_PAGE[..])
        .collect()
}

const ZERO_PAGE: [u8; 4096] = [0; 4096];

/// Writes `bytes` to `path` as a sparse file: only `pages` (which must cover
/// every nonzero byte) are written. The store's files are mostly
/// preallocated zeros, and copying them whole for every case would dominate
/// the run time.
fn write_sparse(path: &Path, bytes: &[u8], pages: &[usize]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(bytes.len() as u64).unwrap();
    for &i in pages {
        if i * 4096 < bytes.len() {
            let page = &bytes[i * 4096..((i + 1) * 4096).min(bytes.len())];
            f.write_all_at(page, (i * 4096) as u64).unwrap();
        }
    }
}

/// Opens a damaged copy and uses it. Returns whether opening or `verify`
/// reported the damage.
fn exercise(dir: &Path) -> bool {
    let s = match Store::open(dir, opts()) {
        Ok(s) => s,
        // A clean refusal is fine (e.g. a segment header that now claims
        // another format version); a panic or hang is not.
        Err(Error::Version { .. } | Error::Corrupted { .. } | Error::Io(_)) => return true,
        Err(e) => panic!("unexpected error kind: {e}"),
    };
    let ns = match s.namespace("d", Limits::maxsize(Some(50))) {
        Ok(ns) => ns,
        Err(_) => return true,
    };
    for k in 0..24u8 {
        if let Ok(Some(v)) = ns.get(&[k]) {
            assert!(k != 3, "removed key 3 came back");
            assert_eq!(v, val(k), "wrong value for key {k}");
        }
    }
    let problems = s.verify().map(|r| !r.is_ok()).unwrap_or(true);
    // The store stays usable for writes.
    if ns.put(b"new", b"value").is_ok() {
        assert_eq!(ns.get(b"new").unwrap().as_deref(), Some(&b"value"[..]));
    }
    for k in 0..24u8 {
        if let Ok(Some(v)) = ns.get(&[k]) {
            assert_eq!(v, val(k), "wrong value for key {k} after a put");
        }
    }
    problems
}

/// Offsets to damage in one file.
fn offsets_of(name: &str, bytes: &[u8]) -> Vec<usize> {
    if name != "index" {
        // Every byte up to the end of the data and a little past it (the rest
        // is preallocated zeros).
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        return (0..(end + 64).min(bytes.len())).collect();
    }
    // The header page, plus every byte of every nonzero word.
    let mut offs: Vec<usize> = (0..4096.min(bytes.len())).collect();
    for (w, chunk) in bytes.chunks(8).enumerate().skip(512) {
        if chunk.iter().any(|&b| b != 0) {
            offs.extend(w * 8..w * 8 + chunk.len());
        }
    }
    offs
}

/// The byte ranges of a segment image covered by a record checksum (or by
/// the segment header): a single flipped bit there must be reported.
fn checked_ranges(seg: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    out.push(0..format::SEG_HEADER_LEN as usize);
    let mut off = format::SEG_HEADER_LEN as usize;
    while off + v1::REC_HEADER_LEN <= seg.len() {
        let hb: [u8; v1::REC_HEADER_LEN] = seg[off..off + v1::REC_HEADER_LEN].try_into().unwrap();
        let Some(h) = v1::RecordHeader::parse(&hb) else {
            break;
        };
        out.push(off..off + h.body_len());
        off += h.size() as usize;
    }
    out
}

enum Damage {
    Flip(usize, u8),
    Cut(usize),
}

#[test]
fn bit_flips_and_truncations_at_every_offset() {
    let golden = tempfile::tempdir().unwrap();
    build(golden.path());
    let mut files: Vec<(String, Vec<u8>, Vec<usize>)> = std::fs::read_dir(golden.path())
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).unwrap();
            let pages = nonzero_pages(&bytes);
            (name, bytes, pages)
        })
        .collect();
    files.sort();
    let damaged_files: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].0 == "index" || files[i].0.starts_with("seg-"))
        .collect();
    assert_eq!(damaged_files.len(), 2, "expected one segment and the index");
    // Every case: (file, damage, must it be reported?).
    let mut cases: Vec<(usize, Damage, bool)> = Vec::new();
    for &f in &damaged_files {
        let (name, bytes, _) = &files[f];
        let is_seg = name.starts_with("seg-");
        let checked = if is_seg {
            checked_ranges(bytes)
        } else {
            Vec::new()
        };
        let data_end = checked.last().map_or(0, |r| r.end);
        for (i, off) in offsets_of(name, bytes).into_iter().enumerate() {
            let must = checked.iter().any(|r| r.contains(&off));
            cases.push((f, Damage::Flip(off, 1 << (i % 8)), must));
        }
        // Truncations: every offset of the segment's data; for the index,
        // every offset of the header page and a stride beyond (all
        // shorter-than-expected lengths are the same case to the code).
        let cuts: Vec<usize> = if is_seg {
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            (0..end + 64)
                .chain((end + 64..bytes.len()).step_by(4093))
                .collect()
        } else {
            (0..4096).chain((4096..bytes.len()).step_by(4093)).collect()
        };
        for cut in cuts {
            // Cutting the segment's records loses the live key 5 (written
            // last): the index then points past the end, which verify reports.
            cases.push((f, Damage::Cut(cut), is_seg && cut < data_end));
        }
    }
    let next = AtomicUsize::new(0);
    let (flips, cuts, detected) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    // A tmpfs when there is one: the cases are file churn, much cheaper there.
    let base = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some((f, damage, must)) = cases.get(n) else {
                    break;
                };
                let dir = base.path().join(n.to_string());
                std::fs::create_dir(&dir).unwrap();
                for (i, (name, bytes, pages)) in files.iter().enumerate() {
                    if i != *f {
                        write_sparse(&dir.join(name), bytes, pages);
                    }
                }
                let (name, bytes, pages) = &files[*f];
                let what = match damage {
                    Damage::Flip(off, bit) => {
                        let mut d = bytes.clone();
                        d[*off] ^= bit;
                        let mut pages = pages.clone();
                        pages.push(off / 4096);
                        write_sparse(&dir.join(name), &d, &pages);
                        flips.fetch_add(1, Ordering::Relaxed);
                        format!("{name}: bit {bit:#x} flipped at offset {off}")
                    }
                    Damage::Cut(len) => {
                        write_sparse(&dir.join(name), &bytes[..*len], pages);
                        cuts.fetch_add(1, Ordering::Relaxed);
                        format!("{name}: truncated to {len} bytes")
                    }
                };
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(&dir)));
                let reported = r.unwrap_or_else(|_| panic!("{what}: panicked (see above)"));
                assert!(
                    reported || !must,
                    "{what}: damage not reported by open or verify"
                );
                if reported {
                    detected.fetch_add(1, Ordering::Relaxed);
                }
                std::fs::remove_dir_all(&dir).unwrap();
            });
        }
    });
    let (flips, cuts) = (flips.into_inner(), cuts.into_inner());
    println!(
        "damage: {} files, {flips} bit flips and {cuts} truncations = {} damaged stores opened \
         and used ({} reported by open or verify); no panic, no wrong value",
        damaged_files.len(),
        flips + cuts,
        detected.into_inner()
    );
    assert!(flips > 1000);
}

/// A flipped bit in a record's value is caught by the record's crc: the key
/// becomes a miss and `verify` names the damage.
#[test]
fn damaged_record_is_a_miss_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let seg = dir.path().join("seg-00000001.log");
    let mut b = std::fs::read(&seg).unwrap();
    // Find key 7's value bytes (ten-plus sevens) and damage one.
    let pos = b
        .windows(17)
        .position(|w| w.iter().all(|&x| x == 7))
        .unwrap();
    b[pos + 3] ^= 0x40;
    std::fs::write(&seg, &b).unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("d", Limits::maxsize(Some(50))).unwrap();
    assert_eq!(ns.get(&[7]).unwrap(), None);
    assert_eq!(ns.get(&[8]).unwrap(), Some(val(8)));
    let rep = s.verify().unwrap();
    assert!(!rep.is_ok());
    assert!(
        rep.problems.iter().any(|p| p.contains("seg-00000001.log")),
        "{:?}",
        rep.problems
    );
}

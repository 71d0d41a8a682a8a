//! Repairing a damaged store (FORMAT.md, "Repair"): what `picocache repair`
//! runs.
//!
//! Damage never yields a wrong value (every record is checked), but it stays
//! in the files: `verify` keeps reporting it and a damaged stretch of a
//! segment is skipped at every rebuild. A repair, under the compaction lock:
//!
//! 1. moves aside, into `damaged/` in the store's directory, every file named
//!    like a segment that is not one (a bad header, another segment's id):
//!    the log is read without them anyway, and nothing is deleted (a name
//!    taken there by an earlier repair gets a suffix `.1`, `.2`, ...; a
//!    `damaged` that is not a real directory, such as a symbolic link, is an
//!    error naming it, and nothing is moved through it);
//! 2. rebuilds the index from the log, and finishes a compaction that the
//!    journal says was interrupted;
//! 3. compacts every segment holding damaged stretches (the active one is
//!    sealed first), whatever its dead fraction: its valid records that are
//!    still needed are copied, the file with the damage is removed;
//! 4. verifies again.
//!
//! Records inside a damaged stretch are lost (they were unreadable already):
//! a key whose record was there is a miss.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::{self, hdr, SegHeaderCheck, SEG_HEADER_LEN};
use crate::log::{list_segments, scan_segment};
use crate::shared::Inner;
use crate::store::Store;

/// What [`Store::repair`] found and did.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct RepairReport {
    /// The problems [`Store::verify`] reported before the repair.
    pub problems_before: Vec<String>,
    /// Files moved into the `damaged/` directory (their new paths).
    pub moved_aside: Vec<PathBuf>,
    /// Segments rewritten without their damaged stretches.
    pub segments_rewritten: u64,
    /// The problems [`Store::verify`] reports after the repair (none, unless
    /// the store is damaged in a way a repair cannot mend).
    pub problems_after: Vec<String>,
}

impl Store {
    /// Repairs a damaged store: moves files that are not valid segments
    /// aside (into `damaged/`), rebuilds the index from the log, and
    /// rewrites every segment with damaged stretches. See the module
    /// documentation of `repair.rs` and FORMAT.md, "Repair".
    ///
    /// # Errors
    /// [`Error::ReadOnly`] on a read-only store, [`Error::Io`].
    pub fn repair(&self) -> Result<RepairReport> {
        let inner = &self.inner;
        inner.check_fork()?;
        if inner.ctx.read_only() {
            return Err(crate::ctx::read_only_error(
                inner.ctx.dir(),
                "it cannot be repaired",
            ));
        }
        let _lock = inner.compaction_lock()?;
        let mut rep = RepairReport {
            problems_before: self.verify()?.problems,
            ..RepairReport::default()
        };
        rep.moved_aside = move_aside_invalid(inner)?;
        inner.with_writer(|w| w.rebuild())?;
        // A compaction that was interrupted is finished first: its journal
        // would be overwritten by the compactions below.
        crate::compaction::resume_interrupted(inner)?;
        for id in damaged_segments(inner)? {
            inner.with_writer(|w| {
                if w.idx.hget(hdr::ACTIVE_SEG) == id as u64 {
                    w.roll(0)?;
                }
                Ok(())
            })?;
            crate::compaction::compact_segment(inner, id)?;
            rep.segments_rewritten += 1;
        }
        rep.problems_after = self.verify()?.problems;
        Ok(rep)
    }
}

/// Moves files named like segments that are not valid segments into
/// `damaged/`. Returns their new paths.
fn move_aside_invalid(inner: &Inner) -> Result<Vec<PathBuf>> {
    let mut moved = Vec::new();
    for id in list_segments(inner.ctx.dir())? {
        let path = inner.ctx.dir().join(format::segment_file_name(id));
        let mut head = [0u8; SEG_HEADER_LEN as usize];
        let valid = crate::files::open_existing(&path, false)
            .and_then(|f| {
                inner.ctx.io().read_at(&f, &mut head, 0)?;
                Ok(matches!(format::check_segment_header(&head), SegHeaderCheck::Ok(h) if h == id))
            })
            .unwrap_or(false);
        if valid {
            continue;
        }
        let aside = inner.ctx.dir().join("damaged");
        aside_dir(inner, &aside)?;
        let to = free_name(&aside, &format::segment_file_name(id))?;
        std::fs::rename(&path, &to).map_err(Error::from)?;
        moved.push(to);
    }
    Ok(moved)
}

/// Makes sure `aside` (the store's `damaged/`) is a real directory,
/// creating it if nothing is there. Anything else at that name (a symbolic
/// link, even to a directory; a file) is an error naming it, and nothing is
/// moved: files moved through a link would leave the store (into another
/// store's directory, a user's), and `create_dir` would set the mode of the
/// directory the link points to.
fn aside_dir(inner: &Inner, aside: &std::path::Path) -> Result<()> {
    match std::fs::symlink_metadata(aside) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(m) => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a directory: a repair moves files that are not \
                 segments into the store's own directory of that name, never \
                 through a link; move it away and repair again",
                aside.display(),
                if m.file_type().is_symlink() {
                    "a symbolic link"
                } else {
                    "another kind of file"
                }
            ),
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            inner.ctx.modes().create_dir(aside).map_err(Error::from)
        }
        Err(e) => Err(Error::from(e)),
    }
}

/// `dir/name` if nothing is there, else the first of `dir/name.1`,
/// `dir/name.2`, ... that is free: a file an earlier repair moved aside is
/// never renamed over. (Repairs run under the compaction lock, one at a
/// time, and nothing else writes into `damaged/`.)
fn free_name(dir: &std::path::Path, name: &str) -> Result<PathBuf> {
    for n in 0u64.. {
        let to = match n {
            0 => dir.join(name),
            n => dir.join(format!("{name}.{n}")),
        };
        match std::fs::symlink_metadata(&to) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(to),
            Err(e) => return Err(Error::from(e)),
            Ok(_) => {}
        }
    }
    unreachable!("a free name among 2^64")
}

/// Segments with damaged stretches (not counting the active segment's torn
/// tail past its append offset, which the next append overwrites).
fn damaged_segments(inner: &Inner) -> Result<Vec<u32>> {
    let (active, off) =
        inner.with_writer_ro(|w| Ok((w.idx.hget(hdr::ACTIVE_SEG), w.idx.hget(hdr::ACTIVE_OFF))))?;
    let mut out = Vec::new();
    for id in list_segments(inner.ctx.dir())? {
        let path = inner.ctx.dir().join(format::segment_file_name(id));
        let Some(data) = crate::log::read_segment(inner.ctx.io(), &path, id)? else {
            continue;
        };
        let (_, _, damage) = scan_segment(&data);
        if damage
            .iter()
            .any(|(at, _)| id as u64 != active || *at < off)
        {
            out.push(id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::{Options, Store};
    use std::path::Path;

    fn opts() -> Options {
        Options::default()
            .segment_size(64 << 10)
            .background_compaction(false)
    }

    /// Every file under `dir` (links not followed) with its contents.
    fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                out.extend(snapshot(&e.path()));
            } else if t.is_symlink() {
                let to = std::fs::read_link(e.path()).unwrap();
                out.push((e.path(), to.into_os_string().into_encoded_bytes()));
            } else {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
        out.sort();
        out
    }

    /// A `damaged` that is a link (to a directory outside the store, or
    /// dangling) or a plain file: the repair fails with an error naming it,
    /// the stray file stays where it was, and nothing outside the store
    /// changes (not even the outside directory's mode). With the link
    /// replaced by a directory, the repair moves the stray into it.
    #[test]
    fn a_damaged_that_is_not_a_directory_is_refused_and_nothing_moves() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::write(outside.join("notes"), b"mine").unwrap();
        let dir = root.path().join("store");
        let store = Store::open(&dir, opts()).unwrap();
        let stray = dir.join("seg-00000063.log");
        let aside = dir.join("damaged");
        type Plant = fn(&Path, &Path);
        let plants: [(&str, Plant); 3] = [
            ("a link to a directory", |out, at| {
                std::os::unix::fs::symlink(out, at).unwrap()
            }),
            ("a dangling link", |out, at| {
                std::os::unix::fs::symlink(out.join("nowhere"), at).unwrap()
            }),
            ("a file", |_, at| std::fs::write(at, b"a file").unwrap()),
        ];
        for (what, plant) in plants {
            plant(&outside, &aside);
            std::fs::write(&stray, b"not a segment at all").unwrap();
            let before = snapshot(root.path());
            let mode = std::fs::metadata(&outside).unwrap().permissions().mode();
            let err = store.repair().unwrap_err().to_string();
            println!("damaged is {what}: {err}");
            assert!(
                err.contains("damaged") && err.contains("not a directory"),
                "{err}"
            );
            assert_eq!(snapshot(root.path()), before, "{what}: something moved");
            assert_eq!(
                std::fs::metadata(&outside).unwrap().permissions().mode(),
                mode,
                "{what}"
            );
            assert!(!outside.join("nowhere").exists(), "{what}");
            std::fs::remove_file(&aside).unwrap();
        }
        let rep = store.repair().unwrap();
        assert_eq!(rep.moved_aside, vec![aside.join("seg-00000063.log")]);
        assert!(std::fs::symlink_metadata(&aside).unwrap().is_dir());
        assert!(rep.problems_after.is_empty(), "{:?}", rep.problems_after);
    }
}

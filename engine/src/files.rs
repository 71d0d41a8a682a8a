//! Creating the store's directory and files with the store's permissions.
//!
//! A store is private to its owner by default: the directory is created
//! `0700` and every file `0600`, whatever the process's umask (a umask of
//! `002` would otherwise make them group-writable, and anyone who can write
//! the store can make it evict or deny service). With
//! [`Options::group_access`](crate::Options::group_access) they are `0770`
//! and `0660`, set explicitly so a restrictive umask does not undo the
//! sharing. The mode is applied only to what this process creates: opening
//! an existing store never changes its permissions, and the files it creates
//! there follow the directory (shared if it has group permissions), so a
//! process that did not ask for sharing cannot lock the group out.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Whether `dir` is a directory that holds a store: an `index` file or a
/// log segment (`seg-XXXXXXXX.log`) that starts with its magic. For tools
/// that must not create a store where none is (opening one creates it, and
/// would take over a foreign file named `index`).
pub fn is_store(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let starts_with = |path: &Path, magic: &[u8; 8]| {
        let mut head = [0u8; 8];
        open_existing(path, false)
            .and_then(|mut f| io::Read::read_exact(&mut f, &mut head))
            .is_ok_and(|_| head == *magic)
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name == "index" {
            starts_with(&e.path(), &crate::format::INDEX_MAGIC)
        } else {
            crate::format::parse_segment_file_name(&name).is_some()
                && starts_with(&e.path(), &crate::format::SEG_MAGIC)
        }
    })
}

/// Why the existing directory `dir` must not be made a store: a file in it
/// under a name the store writes or deletes (`index`, `reserve`, a log
/// segment's `seg-XXXXXXXX.log`) holds bytes no store wrote, and `dir` is
/// not a store ([`is_store`]), so opening it would overwrite or delete a
/// user's file. None if `dir` is a store, or holds nothing a store would
/// take over. (A store's own damaged index is not foreign: its log says
/// the directory is a store, and the index is rebuilt from it.)
pub(crate) fn foreign_file(dir: &Path) -> Option<String> {
    if head(&dir.join("index")).is_some_and(|h| h == crate::format::INDEX_MAGIC) || is_store(dir) {
        return None;
    }
    let entries = std::fs::read_dir(dir).ok()?;
    entries.flatten().find_map(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let path = e.path();
        let ours = if name == "index" {
            head(&path).is_none_or(|h| partly(&h, &crate::format::INDEX_MAGIC))
        } else if crate::format::parse_segment_file_name(&name).is_some() {
            head(&path).is_none_or(|h| partly(&h, &crate::format::SEG_MAGIC))
        } else if name == crate::space::RESERVE_FILE {
            only_zeros(&path)
        } else {
            true
        };
        (!ours).then(|| {
            format!(
                "{} is not a PicoCache store, and its file {name} is not a store's:                  opening a store there would overwrite or delete it (use an empty or                  new directory)",
                dir.display()
            )
        })
    })
}

/// The first 8 bytes of the regular file `path` (zeros past its end), or
/// None if it is not a regular file that can be read.
fn head(path: &Path) -> Option<[u8; 8]> {
    let mut f = open_existing(path, false).ok()?;
    let mut h = [0u8; 8];
    let mut got = 0;
    while got < h.len() {
        match io::Read::read(&mut f, &mut h[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(h)
}

/// Whether `head` is what a store's file starting with `magic` may hold:
/// the magic, or a beginning of it followed by zeros (a file whose header
/// was not yet written when its writer died).
fn partly(head: &[u8; 8], magic: &[u8; 8]) -> bool {
    (0..=8).any(|k| head[..k] == magic[..k] && head[k..].iter().all(|&b| b == 0))
}

/// Whether the file at `path` holds only zeros (a reserve file's bytes);
/// false for one that cannot be read, or larger than a reserve can be.
fn only_zeros(path: &Path) -> bool {
    let Ok(mut f) = open_existing(path, false) else {
        return false;
    };
    if !f
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() <= 2 * crate::format::MAX_RESERVE)
    {
        return false;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match io::Read::read(&mut f, &mut buf) {
            Ok(0) => return true,
            Ok(n) if buf[..n].iter().all(|&b| b == 0) => {}
            Ok(_) => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Whether an existing store directory is shared with its group (it has
/// group permissions); `None` if it does not exist.
pub(crate) fn dir_is_group_shared(dir: &Path) -> Option<bool> {
    let meta = std::fs::metadata(dir).ok()?;
    Some(meta.is_dir() && meta.permissions().mode() & 0o070 != 0)
}

/// The modes of a store's directory and files.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Modes {
    dir: u32,
    file: u32,
}

impl Modes {
    /// Private (`0700`/`0600`), or shared with the owner's group
    /// (`0770`/`0660`).
    pub(crate) fn new(group_access: bool) -> Modes {
        if group_access {
            Modes {
                dir: 0o770,
                file: 0o660,
            }
        } else {
            Modes {
                dir: 0o700,
                file: 0o600,
            }
        }
    }

    /// Creates `dir` (and missing parents) with the store's mode; a
    /// directory another process created meanwhile is fine.
    pub(crate) fn create_dir(&self, dir: &Path) -> io::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(self.dir)
            .create(dir)?;
        std::fs::set_permissions(dir, Permissions::from_mode(self.dir))
    }

    /// Opens `path` for reading and writing, creating it with the store's
    /// file mode if it does not exist.
    ///
    /// Never through a symbolic link, and never anything but a regular
    /// file: a link planted at one of the store's names (a group member of a
    /// store with `group_access`, or a mistake) would otherwise have the
    /// store write, pad or truncate the file it points to. With `truncate`
    /// (a temporary name whose contents are discarded anyway), whatever is
    /// at the name is removed first (a link is removed, not its target) and
    /// the file made anew; otherwise a link or a non-regular file at the
    /// name is an error naming it.
    pub(crate) fn open(&self, path: &Path, truncate: bool) -> io::Result<File> {
        if truncate {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(self.file)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => {
                f.set_permissions(Permissions::from_mode(self.file))?;
                Ok(f)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !truncate => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(path)
                    .map_err(|e| not_regular(path, e))?;
                if !f.metadata()?.is_file() {
                    return Err(not_regular(
                        path,
                        io::Error::from(io::ErrorKind::InvalidInput),
                    ));
                }
                Ok(f)
            }
            Err(e) => Err(not_regular(path, e)),
        }
    }
}

/// Opens an existing file of the store: for reading, and for writing if
/// `writable` (then never through a symbolic link, see [`Modes::open`]).
/// Only a regular file: anything else at a store's name (a FIFO, whose
/// open or read would wait forever for a writer; a device; a directory) is
/// an error naming it, and the open never waits (`O_NONBLOCK`).
pub(crate) fn open_existing(path: &Path, writable: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(writable);
    o.custom_flags(if writable {
        libc::O_NOFOLLOW | libc::O_NONBLOCK
    } else {
        libc::O_NONBLOCK
    });
    let f = o.open(path).map_err(|e| not_regular(path, e))?;
    if !f.metadata()?.is_file() {
        return Err(not_regular(
            path,
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    }
    Ok(f)
}

/// `e`, explained when it says `path` is a symbolic link (`ELOOP` from
/// `O_NOFOLLOW`) or another kind of file than a regular one.
fn not_regular(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) || e.kind() == io::ErrorKind::InvalidInput {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link or not a regular file: a store's files are \
                 regular files, and the store never writes through a link",
                path.display()
            ),
        )
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::is_store;

    #[test]
    fn a_store_is_told_from_other_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_store(dir.path()), "empty");
        assert!(!is_store(&dir.path().join("missing")), "missing");
        std::fs::write(dir.path().join("seg-xyz.log"), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        assert!(!is_store(dir.path()), "no store file names");
        std::fs::write(dir.path().join("index"), b"a user's own file").unwrap();
        std::fs::write(dir.path().join("seg-00000001.log"), b"PICOSEX\0 not ours").unwrap();
        assert!(!is_store(dir.path()), "store names, foreign bytes");
        let store = dir.path().join("s");
        drop(crate::Store::open(&store, crate::Options::default()).unwrap());
        assert!(is_store(&store));
        std::fs::remove_file(store.join("index")).unwrap();
        assert!(
            is_store(&store),
            "the log alone is a store (the index is rebuilt)"
        );
    }

    #[test]
    fn a_users_files_under_a_stores_names_are_foreign() {
        use super::foreign_file;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(foreign_file(d), None, "empty");
        std::fs::write(d.join("notes.txt"), b"mine").unwrap();
        std::fs::write(d.join("lock"), b"x").unwrap();
        assert_eq!(foreign_file(d), None, "names a store does not take over");
        std::fs::write(d.join("reserve"), vec![0u8; 8192]).unwrap();
        std::fs::write(d.join("index"), b"PICO\0\0\0\0").unwrap();
        std::fs::write(d.join("seg-00000001.log"), b"").unwrap();
        assert_eq!(
            foreign_file(d),
            None,
            "a store's files before their headers"
        );
        for (name, bytes) in [
            ("index", &b"my precious notes"[..]),
            ("reserve", &b"\0\0\0\0\0\0\0\0\0\0\x01"[..]),
            ("seg-00000002.log", &b"PICOSEX\0"[..]),
        ] {
            let e = tempfile::tempdir().unwrap();
            std::fs::write(e.path().join(name), bytes).unwrap();
            let why = foreign_file(e.path()).expect(name);
            assert!(why.contains(name), "{why}");
        }
    }
}

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
        File::open(path)
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
    /// file mode if it does not exist (`truncate`: an existing file is
    /// emptied).
    pub(crate) fn open(&self, path: &Path, truncate: bool) -> io::Result<File> {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(self.file)
            .open(path)
        {
            Ok(f) => {
                f.set_permissions(Permissions::from_mode(self.file))?;
                Ok(f)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
                .read(true)
                .write(true)
                .truncate(truncate)
                .open(path),
            Err(e) => Err(e),
        }
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
}

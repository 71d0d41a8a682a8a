//! Where the sealing secret comes from.
//!
//! In order: the secrets a caller passes (`secret=` in Python,
//! [`MemoBuilder::secret`](crate::MemoBuilder::secret)); else the
//! `PICOCACHE_SECRET` environment variable (one secret, or several separated
//! by whitespace: the first seals, all check); else a random secret made
//! once per user and kept in `$PICOCACHE_SECRET_FILE`, or
//! `$XDG_CONFIG_HOME/picocache/secret`, or `~/.config/picocache/secret`
//! (mode 0600). So one machine works with no setup; machines that share a
//! Redis or SQL store need one `PICOCACHE_SECRET`, and are told so when
//! their entries fail each other's check.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::seal::Secrets;
use crate::{Error, Result};

/// The environment variable that holds the secret(s).
pub const ENV: &str = "PICOCACHE_SECRET";
/// The environment variable that names the per-user secret file.
pub const FILE_ENV: &str = "PICOCACHE_SECRET_FILE";

/// Where a memoizer's secrets came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Passed by the caller.
    Explicit,
    /// `PICOCACHE_SECRET`.
    Env,
    /// The per-user secret file at this path.
    UserFile(PathBuf),
}

/// The caller's secrets if any, else the environment's, else the per-user
/// file's (created if missing).
pub fn resolve(explicit: Option<&[Vec<u8>]>) -> Result<(Arc<Secrets>, SecretSource)> {
    if let Some(list) = explicit {
        let s = Secrets::new(list).ok_or_else(|| {
            Error::InvalidArgument("a secret must be non-empty (and at least one given)".into())
        })?;
        return Ok((Arc::new(s), SecretSource::Explicit));
    }
    if let Some(v) = std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        let v = v.into_encoded_bytes();
        let list: Vec<&[u8]> = v
            .split(|b| b.is_ascii_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        let s = Secrets::new(&list)
            .ok_or_else(|| Error::InvalidArgument(format!("{ENV} holds only whitespace")))?;
        return Ok((Arc::new(s), SecretSource::Env));
    }
    let path = user_file()?;
    // One read per path and process.
    // The lock is never held across the file's I/O: a fork by another
    // thread meanwhile would leave it held in the child, for good.
    static LOADED: Mutex<Vec<(PathBuf, Arc<Secrets>)>> = Mutex::new(Vec::new());
    let find = |loaded: &[(PathBuf, Arc<Secrets>)]| {
        loaded
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, s)| s.clone())
    };
    if let Some(s) = find(&LOADED.lock()) {
        return Ok((s, SecretSource::UserFile(path)));
    }
    let secret = load_or_create(&path)?;
    let s = Arc::new(Secrets::new(&[secret]).expect("a non-empty secret"));
    let mut loaded = LOADED.lock();
    let s = match find(&loaded) {
        Some(theirs) => theirs, // another thread read it meanwhile
        None => {
            loaded.push((path.clone(), s.clone()));
            s
        }
    };
    drop(loaded);
    Ok((s, SecretSource::UserFile(path)))
}

fn user_file() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(FILE_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no secret to sign cache entries with: set {ENV} (or {FILE_ENV}, or HOME)"
            ))
        })?;
    Ok(config.join("picocache").join("secret"))
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::InvalidArgument(format!(
        "the secret file {}: {what}: {e} (set {ENV} to use another secret)",
        path.display()
    ))
}

/// Reads the secret at `path`, creating it (32 random bytes, hex, mode
/// 0600) if there is none; two processes creating it at once agree on one.
pub fn load_or_create(path: &Path) -> Result<Vec<u8>> {
    match read(path) {
        Ok(s) => return Ok(s),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path, "cannot be read", e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(path, "its directory cannot be created", e))?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| {
        io_err(
            path,
            "no randomness to create it",
            std::io::Error::other(e.to_string()),
        )
    })?;
    let text: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(
        ".secret.{}.{}.tmp",
        std::process::id(),
        &text[..16]
    ));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, "cannot be created", e));
    }
    // A hard link never replaces: if another process won, use its secret.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(path, "cannot be created", e)),
    }
    read(path).map_err(|e| io_err(path, "cannot be read", e))
}

/// The effective user id of this process: the owner of `/proc/self`
/// (proc(5)); `None` where there is no `/proc`.
fn effective_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = fs::metadata(path)?;
    // Whoever can read the secret can forge entries; whoever can write it
    // (or owns it) can replace it.
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            ErrorKind::PermissionDenied,
            "others can read or write it (chmod 600 it)",
        ));
    }
    if effective_uid().is_some_and(|me| me != meta.uid()) {
        return Err(std::io::Error::new(
            ErrorKind::PermissionDenied,
            "another user owns it",
        ));
    }
    let text = fs::read(path)?;
    let s = text.trim_ascii();
    if s.is_empty() {
        return Err(std::io::Error::new(ErrorKind::InvalidData, "it is empty"));
    }
    Ok(s.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg").join("secret");
        let a = load_or_create(&path).unwrap();
        assert_eq!(a.len(), 64);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&path).unwrap(), a);
    }

    #[test]
    fn racing_creators_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let got: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(&path).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(got.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn a_file_others_can_read_or_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, "abc").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("others can read or write"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("others can read or write"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_or_create(&path).unwrap(), b"abc");
    }
}

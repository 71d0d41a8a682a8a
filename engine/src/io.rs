//! The layer all of the engine's log writes go through.
//!
//! [`RealIo`] is the default. [`FaultIo`] is for tests and fuzzing: it fails
//! every operation after a countdown (like redb's fuzz backend) and can
//! simulate a power loss by discarding everything written since the last sync,
//! in the log and in the index (whose pages are written through a shared map:
//! the engine tells the layer when it `msync`s them).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use parking_lot::Mutex;

/// The file operations the engine's writer performs on log segments.
///
/// Reads of published records go through the shared map instead; recovery
/// reads go through [`Io::read_at`].
pub trait Io: Send + Sync + std::fmt::Debug {
    /// Writes all of `buf` at `off`.
    fn write_at(&self, file: &File, buf: &[u8], off: u64) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `off`.
    fn read_at(&self, file: &File, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// `fdatasync`.
    fn sync(&self, file: &File) -> io::Result<()>;
    /// Allocates blocks so that the file is at least `off + len` bytes long.
    fn allocate(&self, file: &File, off: u64, len: u64) -> io::Result<()>;
    /// Called after the index map of `file` was written back (`msync`):
    /// its bytes are now durable. The default does nothing; [`FaultIo`]
    /// remembers them as what the index holds after a power loss.
    fn index_flushed(&self, file: &File) -> io::Result<()> {
        let _ = file;
        Ok(())
    }
}

/// The operating system's file I/O.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealIo;

impl Io for RealIo {
    fn write_at(&self, file: &File, buf: &[u8], off: u64) -> io::Result<()> {
        file.write_all_at(buf, off)
    }
    fn read_at(&self, file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
        file.read_exact_at(buf, off)
    }
    fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    fn allocate(&self, file: &File, off: u64, len: u64) -> io::Result<()> {
        crate::sys::preallocate(file, off, len)
    }
}

#[derive(Debug, Default)]
struct FaultState {
    /// Operations left before every operation fails; `None` = never.
    countdown: Option<u64>,
    /// Operations performed so far.
    ops: u64,
    /// Writes not yet made durable by a sync of their file: (file, offset, len).
    unsynced: Vec<(Arc<File>, u64, usize)>,
    /// Set once the countdown ran out.
    tripped: bool,
    /// Report `ENOSPC` instead of a generic error.
    enospc: bool,
    /// Index files as they were at their last `msync`: what a power loss
    /// leaves of them (no page written since reached the disk).
    index_flushed: Vec<(Arc<File>, Vec<u8>)>,
}

/// A fault-injecting [`Io`] for tests: after `countdown` operations every
/// operation fails, and [`FaultIo::power_loss`] zeroes every write that no sync
/// has made durable.
#[derive(Debug, Clone, Default)]
pub struct FaultIo {
    state: Arc<Mutex<FaultState>>,
}

impl FaultIo {
    /// A layer that fails every operation after `countdown` successful ones
    /// (`None`: never fails).
    pub fn new(countdown: Option<u64>) -> FaultIo {
        let io = FaultIo::default();
        io.state.lock().countdown = countdown;
        io
    }

    /// Makes failures report `ENOSPC` (a full disk) instead of `EIO`.
    pub fn with_enospc(self) -> FaultIo {
        self.state.lock().enospc = true;
        self
    }

    /// Resets the countdown (`None`: stop failing).
    pub fn set_countdown(&self, countdown: Option<u64>) {
        let mut s = self.state.lock();
        s.countdown = countdown;
        s.tripped = false;
    }

    /// Operations performed so far (successful or not).
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// True once an operation has been failed.
    pub fn tripped(&self) -> bool {
        self.state.lock().tripped
    }

    /// Simulates a power loss: every byte of the log written since the last
    /// sync of its file is overwritten with zeros (what a fresh preallocated
    /// block reads as), and every index file that was `msync`ed is put back
    /// as it was then (the worst case: none of the pages changed since was
    /// written back). Call it after dropping the store, then open the store
    /// with another boot id.
    pub fn power_loss(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        for (file, off, len) in s.unsynced.drain(..) {
            file.write_all_at(&vec![0u8; len], off)?;
        }
        for (file, bytes) in s.index_flushed.drain(..) {
            file.write_all_at(&bytes, 0)?;
        }
        Ok(())
    }

    fn step(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        s.ops += 1;
        if let Some(c) = s.countdown.as_mut() {
            if *c == 0 {
                s.tripped = true;
                return Err(if s.enospc {
                    io::Error::from_raw_os_error(libc::ENOSPC)
                } else {
                    io::Error::other("injected I/O fault")
                });
            }
            *c -= 1;
        }
        Ok(())
    }
}

fn same_file(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

impl Io for FaultIo {
    fn write_at(&self, file: &File, buf: &[u8], off: u64) -> io::Result<()> {
        self.step()?;
        file.write_all_at(buf, off)?;
        let clone = Arc::new(file.try_clone()?);
        self.state.lock().unsynced.push((clone, off, buf.len()));
        Ok(())
    }
    fn read_at(&self, file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
        file.read_exact_at(buf, off)
    }
    fn sync(&self, file: &File) -> io::Result<()> {
        self.step()?;
        file.sync_data()?;
        self.state
            .lock()
            .unsynced
            .retain(|(f, _, _)| !same_file(f, file));
        Ok(())
    }
    fn allocate(&self, file: &File, off: u64, len: u64) -> io::Result<()> {
        self.step()?;
        crate::sys::preallocate(file, off, len)
    }
    fn index_flushed(&self, file: &File) -> io::Result<()> {
        let len = file.metadata()?.len();
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)?;
        let clone = Arc::new(file.try_clone()?);
        let mut s = self.state.lock();
        s.index_flushed.retain(|(f, _)| !same_file(f, file));
        s.index_flushed.push((clone, bytes));
        Ok(())
    }
}

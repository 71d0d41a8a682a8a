//! The layer all of the engine's writes of state go through.
//!
//! [`RealIo`] is the default. [`FaultIo`] is for tests and fuzzing: it fails
//! every operation after a countdown (like redb's fuzz backend) and can
//! simulate a power loss by discarding everything written since the last sync,
//! in the log and in the index (whose pages are written through a shared map:
//! the engine tells the layer when it creates an index file and when it
//! `msync`s one), or any part of it ([`FaultIo::power_loss_keeping`]).
//!
//! The store's other files carry no state a power loss could lose: `lock`
//! and `leases` are empty (only the kernel's locks on them matter, and those
//! end with the processes that hold them, power loss or not), and `reserve`
//! holds only zeros (its allocated size is what counts; a lost or shortened
//! one is recreated). See FORMAT.md, "Files".

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
    /// Called after `len` bytes at `off` of the index map of `file` were
    /// written back (`msync` of a range). The default does nothing;
    /// [`FaultIo`] updates that range of what survives a power loss.
    fn index_range_flushed(&self, file: &File, off: u64, len: u64) -> io::Result<()> {
        let _ = (file, off, len);
        Ok(())
    }
    /// Called when a new index file was created (filled with zeros, not yet
    /// synced). The default does nothing; [`FaultIo`] remembers it as all
    /// zeros until its first `msync`, which is what a power loss before
    /// then may leave of it.
    fn index_created(&self, file: &File) -> io::Result<()> {
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
        self.power_loss_keeping(&mut |_, _| false)
    }

    /// Simulates a power loss in which the system wrote back some of what
    /// was not synced (the kernel writes dirty pages back whenever it
    /// likes, in any order). `written_back(is_index, n)` is asked, for each
    /// unsynced log write (`is_index` false) and then for each 4 KiB page of
    /// each index file that differs from its image at the last `msync`
    /// (`true`), numbered from 1 in a fixed order, whether that write or
    /// page reached the disk; what did not is zeroed (log) or put back as it
    /// was at the last `msync` (index). Returning `false` throughout is
    /// [`FaultIo::power_loss`].
    pub fn power_loss_keeping(
        &self,
        written_back: &mut dyn FnMut(bool, u64) -> bool,
    ) -> io::Result<()> {
        let mut s = self.state.lock();
        let mut n = 0u64;
        for (file, off, len) in s.unsynced.drain(..) {
            n += 1;
            if !written_back(false, n) {
                file.write_all_at(&vec![0u8; len], off)?;
            }
        }
        const PAGE: usize = 4096;
        for (file, flushed) in s.index_flushed.drain(..) {
            let len = file.metadata()?.len() as usize;
            let mut live = vec![0u8; len];
            file.read_exact_at(&mut live, 0)?;
            for (i, old) in flushed.chunks(PAGE).enumerate() {
                let at = i * PAGE;
                let now = live.get(at..(at + old.len()).min(len)).unwrap_or(&[]);
                if now == old {
                    continue;
                }
                n += 1;
                if !written_back(true, n) {
                    file.write_all_at(old, at as u64)?;
                }
            }
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
    fn index_range_flushed(&self, file: &File, off: u64, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        let Some((_, image)) = s.index_flushed.iter_mut().find(|(f, _)| same_file(f, file)) else {
            // Not created through this layer: its bytes count as durable.
            return Ok(());
        };
        let end = (off + len).min(image.len() as u64) as usize;
        let off = (off as usize).min(end);
        file.read_exact_at(&mut image[off..end], off as u64)
    }
    fn index_created(&self, file: &File) -> io::Result<()> {
        let len = file.metadata()?.len();
        let clone = Arc::new(file.try_clone()?);
        let mut s = self.state.lock();
        s.index_flushed.retain(|(f, _)| !same_file(f, file));
        s.index_flushed.push((clone, vec![0u8; len as usize]));
        Ok(())
    }
}

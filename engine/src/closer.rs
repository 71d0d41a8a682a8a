//! Files closed off the caller's thread.
//!
//! The last close of a file that was unlinked while open (an index retired
//! by a resize or a rebuild, a segment that compaction emptied) frees its
//! blocks, and on some file systems that is slow: on ext4 mounted with
//! `discard` it waits for the device to trim them, measured here at 0.4 to
//! 500 ms for a 600 KB index (BENCHMARKS.md, issue 16). The last holder of
//! such a file is often a reader, a hit that found its token stale, and a
//! hit must not pay that. So an index or a segment closes its file through
//! [`Closing`], which hands the file to one background thread per process.

use std::fs::File;
use std::ops::Deref;
use std::sync::mpsc::{channel, Sender};

use parking_lot::Mutex;

/// A file that is closed by the closer thread when dropped.
#[derive(Debug)]
pub(crate) struct Closing(Option<File>);

impl Closing {
    pub(crate) fn new(f: File) -> Closing {
        Closing(Some(f))
    }
}

impl Deref for Closing {
    type Target = File;

    // The file is there from `new` until `drop` takes it, so this never
    // panics (`ManuallyDrop::take` would need `unsafe` for the same).
    #[allow(clippy::expect_used)]
    fn deref(&self) -> &File {
        self.0
            .as_ref()
            .expect("a Closing holds its file until dropped")
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            close_later(f);
        }
    }
}

/// The closer thread's queue, and the fork generation it was made in (a
/// forked child has no such thread: it starts its own).
static CLOSER: Mutex<Option<(u64, Sender<File>)>> = Mutex::new(None);

/// Closes `f` on the closer thread; here if that thread cannot be had (it
/// cannot be started, or another thread is handing over a file just now:
/// never waits for the queue's lock, which a fork may have left held).
fn close_later(f: File) {
    let gen = crate::sys::fork_generation();
    let Some(mut closer) = CLOSER.try_lock() else {
        drop(f);
        return;
    };
    if !matches!(&*closer, Some((g, _)) if *g == gen) {
        *closer = start().map(|tx| (gen, tx));
    }
    let f = match &*closer {
        Some((_, tx)) => match tx.send(f) {
            Ok(()) => return,
            Err(back) => back.0, // the thread is gone: close here
        },
        None => f,
    };
    *closer = None;
    drop(closer);
    drop(f);
}

fn start() -> Option<Sender<File>> {
    let (tx, rx) = channel::<File>();
    std::thread::Builder::new()
        .name("picocache-closer".into())
        .spawn(move || {
            for f in rx {
                drop(f);
            }
        })
        .ok()?;
    Some(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_dropped_file_is_closed_on_the_closer_thread() {
        // A socket pair: the peer reads end-of-file once our end is closed.
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let fd: std::os::fd::OwnedFd = ours.into();
        let c = Closing::new(File::from(fd));
        (&*c).write_all(b"x").unwrap();
        drop(c);
        let mut got = Vec::new();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"x", "closed (end of file), after what was written");
        let closer = CLOSER.lock();
        assert!(
            closer.is_some(),
            "the closer thread was started and took the file"
        );
    }
}

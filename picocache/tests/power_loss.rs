//! A power loss under the memoization layer on the local engine (issue 12,
//! item 1, through `LocalBackend`, the backend of Python's `LocalCache`):
//! with `Durability::PowerLoss`, every result a call stored before the power
//! failed is served after the reboot, none recomputed, none wrong, whatever
//! part of the index reached the disk. The power loss is the engine's fault
//! layer (`FaultIo`): unsynced log writes lost, and the index pages changed
//! since the last `msync` lost, kept, or kept all but the header.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use picocache::{Backend, LocalBackend, Memo};
use picocache_engine::{Durability, FaultIo, Options};

fn value(x: u32) -> Vec<u32> {
    vec![x, x * 7, x ^ 0xABCD]
}

#[test]
fn results_stored_before_a_power_loss_are_served_after_it() {
    for writeback in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultIo::new(None);
        {
            let b = LocalBackend::open_with(
                dir.path(),
                Options::default()
                    .durability(Durability::PowerLoss)
                    .background_compaction(false)
                    .io(Arc::new(io.clone())),
            )
            .unwrap();
            let store = b.store().clone();
            let b: Arc<dyn Backend> = Arc::new(b);
            let memo = Memo::builder("t::power").backend(b).build();
            for x in 0..50u32 {
                assert_eq!(memo.call(x, value), value(x));
            }
            store.sync().unwrap();
            for x in 50..100u32 {
                assert_eq!(memo.call(x, value), value(x));
            }
        }
        let mut first = true;
        io.power_loss_keeping(&mut |is_index, _| match writeback {
            0 => false,
            1 => is_index,
            _ => is_index && !std::mem::take(&mut first),
        })
        .unwrap();
        let b: Arc<dyn Backend> = Arc::new(
            LocalBackend::open_with(
                dir.path(),
                Options::default()
                    .background_compaction(false)
                    .boot_id(0xB007_u128 << 64 | writeback as u128),
            )
            .unwrap(),
        );
        let memo = Memo::builder("t::power").backend(b).build();
        let runs = AtomicU64::new(0);
        for x in 0..100u32 {
            let got = memo.call(x, |x| {
                runs.fetch_add(1, Ordering::Relaxed);
                value(x)
            });
            assert_eq!(got, value(x), "writeback {writeback}: {x}");
        }
        let runs = runs.load(Ordering::Relaxed);
        println!(
            "writeback {writeback}: 100 results stored, {runs} recomputed after the power loss"
        );
        assert_eq!(runs, 0, "writeback {writeback}: durable results lost");
    }
}

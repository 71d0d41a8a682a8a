//! Quick start: memoize a slow function persistently.
//!
//! ```text
//! cargo run -p picocache --example quickstart   # about 1 s: computes
//! cargo run -p picocache --example quickstart   # instant: read from the store
//! picocache stats .picocache                    # what is in the store
//! ```
//!
//! The store is `$PICOCACHE_DIR`, or `.picocache` in the working directory.

use std::time::{Duration, Instant};

/// A slow function. `#[picocache::memoize]` keeps its results in the local
/// store, so they survive the process and are shared with other processes.
#[picocache::memoize(maxsize = 1000)]
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(1));
    x * x
}

fn main() {
    let start = Instant::now();
    let y = slow_square(12);
    println!("slow_square(12) = {y} in {:.3?}", start.elapsed());
    // The generated `slow_square_cache()` gives the function's cache.
    println!("{:?}", slow_square_cache().cache_info());
    println!(
        "entries are kept in namespace {:?} of {}",
        slow_square_cache().namespace_name(),
        picocache::local::default_path().display()
    );
}

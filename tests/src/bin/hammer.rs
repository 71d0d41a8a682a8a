//! A client process of the multi-process tests.
//!
//! - `hammer URL NAMESPACE MAXSIZE KEYS OPS SEED`: random gets and puts (see
//!   `picocache_tests::hammer`); prints `gets hits puts`.
//! - `hammer lease URL NAMESPACE FILE ROUNDS`: takes the lease on one key
//!   ROUNDS times, appending `enter PID` and `exit PID` lines to FILE while
//!   it holds it; the parent checks that no two holders overlap.
//!
//! Exits non-zero (a panic) when it reads a wrong value or a call fails.

use std::io::Write;
use std::time::Duration;

fn lease(args: &[String]) {
    let backend = picocache::open(&args[2]).expect("open backend");
    let ns = backend
        .namespace(&args[3], picocache::Limits::default())
        .expect("namespace");
    let rounds: u32 = args[5].parse().expect("rounds");
    let pid = std::process::id();
    for _ in 0..rounds {
        let lease = ns
            .lease(b"the-key", Duration::from_secs(60))
            .expect("lease")
            .expect("lease within 60 s");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&args[4])
            .expect("log file");
        f.write_all(format!("enter {pid}\n").as_bytes())
            .expect("write");
        std::thread::sleep(Duration::from_millis(2));
        f.write_all(format!("exit {pid}\n").as_bytes())
            .expect("write");
        drop(f);
        drop(lease);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 6 && args[1] == "lease" {
        lease(&args);
        return;
    }
    if args.len() != 7 {
        eprintln!("usage: hammer URL NAMESPACE MAXSIZE KEYS OPS SEED | hammer lease URL NAMESPACE FILE ROUNDS");
        std::process::exit(2);
    }
    let n = |i: usize| args[i].parse::<u64>().expect("a number");
    let backend = picocache::open(&args[1]).expect("open backend");
    let r = picocache_tests::hammer(&*backend, &args[2], n(3), n(4), n(5), n(6));
    // Dropping the backend writes buffered hit counts (SQL).
    drop(backend);
    println!("{} {} {}", r.gets, r.hits, r.puts);
}

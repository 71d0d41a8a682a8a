//! One client of the multi-process test: `hammer URL NAMESPACE MAXSIZE KEYS OPS SEED`.
//! Prints `gets hits puts` and exits 0, or panics (non-zero exit) when it reads
//! a wrong value or a call fails.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: hammer URL NAMESPACE MAXSIZE KEYS OPS SEED");
        std::process::exit(2);
    }
    let n = |i: usize| args[i].parse::<u64>().expect("a number");
    let backend = picocache::open(&args[1]).expect("open backend");
    let r = picocache_tests::hammer(&*backend, &args[2], n(3), n(4), n(5), n(6));
    // Dropping the backend writes buffered hit counts (SQL).
    drop(backend);
    println!("{} {} {}", r.gets, r.hits, r.puts);
}

#[picocache::memoize(ttl_secs = 1, ttl_ms = 1000)]
fn f(x: u32) -> u32 {
    x
}

fn main() {
    f(1);
}

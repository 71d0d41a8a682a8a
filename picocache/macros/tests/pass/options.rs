//! Every option compiles.

#[picocache::memoize(
    maxsize = 256,
    ttl_secs = 60,
    version = "2",
    name = "pass::f",
    path = "target/ui-pass-store",
    lease_timeout_secs = 5
)]
pub fn f(x: u32, label: &str) -> String {
    format!("{label}{x}")
}

#[picocache::memoize(maxsize = None, ttl_ms = 10, version = 7, strict)]
fn g<'a>(mut x: u32, _s: &'a str) -> Vec<u32> {
    x += 1;
    vec![x]
}

fn main() {
    let _ = f;
    let _ = g;
    let _: &'static picocache::Memo = f_cache();
    let _ = g_cache().maxsize();
}

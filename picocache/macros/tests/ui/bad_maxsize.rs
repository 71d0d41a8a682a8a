#[picocache::memoize(maxsize = "many")]
fn f(x: u32) -> u32 {
    x
}

fn main() {
    f(1);
}

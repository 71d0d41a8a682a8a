#[picocache::memoize]
fn f(x: impl serde::Serialize) -> u32 {
    let _ = x;
    1
}

fn main() {
    f(1);
}

// '@' separates the version: "f@1" would be both the name "f@1" and the
// name "f" with version 1.
#[picocache::memoize(name = "app::f@1")]
fn f(x: u32) -> u32 {
    x
}

#[picocache::memoize(version = "1@2")]
fn g(x: u32) -> u32 {
    x
}

fn main() {
    f(1);
    g(1);
}

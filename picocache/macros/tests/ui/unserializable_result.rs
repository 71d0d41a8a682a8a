struct Opaque;

#[picocache::memoize]
fn f(x: u32) -> Opaque {
    let _ = x;
    Opaque
}

fn main() {
    f(1);
}

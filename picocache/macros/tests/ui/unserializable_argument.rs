struct Opaque;

#[picocache::memoize]
fn f(x: Opaque) -> u32 {
    let _ = x;
    1
}

fn main() {
    f(Opaque);
}

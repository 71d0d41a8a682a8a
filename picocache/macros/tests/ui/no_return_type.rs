#[picocache::memoize]
fn f(x: u32) {
    println!("{x}");
}

fn main() {
    f(1);
}

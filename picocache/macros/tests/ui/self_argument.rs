struct S;

impl S {
    #[picocache::memoize]
    fn f(&self, x: u32) -> u32 {
        x
    }
}

fn main() {
    S.f(1);
}

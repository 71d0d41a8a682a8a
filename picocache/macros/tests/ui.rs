//! Compile errors for misuse of `#[memoize]` (trybuild; the expected messages
//! are the checked-in `.stderr` files next to each case).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/pass/*.rs");
}

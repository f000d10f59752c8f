//! Misuse of `#[client]` is a compile error that points at the user's token.
//! Each file under `tests/ui/` is one mistake; its `.stderr` pins the message.
//! Regenerate after an intended change with `TRYBUILD=overwrite cargo test --test ui`.

#[test]
fn compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui-pass/*.rs");
}

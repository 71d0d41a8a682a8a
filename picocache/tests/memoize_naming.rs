//! What names a `#[memoize]` function (issue 10): by default its module,
//! its name and a digest of its code, so a changed body never serves the old
//! body's results; `version` pins the identity instead; `name` replaces it.

use std::sync::{Arc, LazyLock};

use picocache::{Backend, LocalBackend};

/// One temporary store for the whole test binary.
fn store() -> Arc<dyn Backend> {
    static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().unwrap());
    static BACKEND: LazyLock<Arc<dyn Backend>> =
        LazyLock::new(|| Arc::new(LocalBackend::open(DIR.path()).unwrap()));
    BACKEND.clone()
}

mod plain {
    #[picocache::memoize(backend = super::store())]
    pub fn scale(x: u64, by: u64) -> u64 {
        const LIMIT: u64 = 100;
        let y = x * by + 1;
        if y > LIMIT {
            y - 100
        } else {
            y
        }
    }
}

/// The same tokens as `plain::scale`, written differently, with comments
/// (kept as written: rustfmt skips it).
#[rustfmt::skip]
mod reformatted {
    /// A doc comment does not count.
    #[picocache::memoize(backend = super::store())]
    pub fn scale(
        x: u64,
        by: u64, // nor do comments
    ) -> u64 {
        /* nor block comments */
        /// nor doc comments in the body
        const LIMIT: u64 = 100;
        let y = x*by+1;
        if y > LIMIT { y - 100 } else { y }
    }
}

/// `plain::scale` with one token changed.
mod edited {
    #[picocache::memoize(backend = super::store())]
    pub fn scale(x: u64, by: u64) -> u64 {
        const LIMIT: u64 = 100;
        let y = x * by + 2;
        if y > LIMIT {
            y - 100
        } else {
            y
        }
    }
}

/// `plain::scale` with its signature changed (the result type).
mod retyped {
    #[picocache::memoize(backend = super::store())]
    pub fn scale(x: u64, by: u64) -> u32 {
        const LIMIT: u64 = 100;
        let y = x * by + 1;
        if y > LIMIT {
            (y - 100) as u32
        } else {
            y as u32
        }
    }
}

mod pinned {
    #[picocache::memoize(backend = super::store(), version = 2)]
    pub fn scale(x: u64, by: u64) -> u64 {
        x * by
    }
}

mod named {
    #[picocache::memoize(backend = super::store(), name = "app::scale")]
    pub fn scale(x: u64, by: u64) -> u64 {
        x * by
    }
}

/// The name's `(prefix, digest)`, checking the digest's form.
fn split(name: &str) -> (&str, &str) {
    let (prefix, digest) = name.split_once('#').expect("a digest");
    assert_eq!(digest.len(), 16, "{name}");
    assert!(
        digest
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{name}"
    );
    (prefix, digest)
}

#[test]
fn the_default_name_is_module_function_and_code_digest() {
    let (prefix, _) = split(plain::scale_cache().namespace_name());
    assert_eq!(prefix, "memoize_naming::plain::scale");
}

#[test]
fn comments_whitespace_and_doc_comments_do_not_change_the_digest() {
    let (_, a) = split(plain::scale_cache().namespace_name());
    let (prefix, b) = split(reformatted::scale_cache().namespace_name());
    assert_eq!(prefix, "memoize_naming::reformatted::scale");
    assert_eq!(a, b);
}

#[test]
fn a_changed_body_or_signature_changes_the_digest() {
    let (_, a) = split(plain::scale_cache().namespace_name());
    let (_, edited) = split(edited::scale_cache().namespace_name());
    let (_, retyped) = split(retyped::scale_cache().namespace_name());
    assert_ne!(a, edited);
    assert_ne!(a, retyped);
    assert_ne!(edited, retyped);
}

#[test]
fn the_digest_is_stable() {
    // Recorded from this implementation: a digest that changes between
    // compilers, machines or releases would orphan every user's entries.
    let (_, d) = split(plain::scale_cache().namespace_name());
    assert_eq!(d, GOLDEN);
}

const GOLDEN: &str = "f155d360d97d4d5f";

#[test]
fn a_version_pins_the_identity_without_a_digest() {
    assert_eq!(
        pinned::scale_cache().namespace_name(),
        "memoize_naming::pinned::scale@2"
    );
}

#[test]
fn a_name_replaces_the_identity() {
    assert_eq!(named::scale_cache().namespace_name(), "app::scale");
}

#[test]
fn the_functions_still_compute_and_cache() {
    assert_eq!(plain::scale(3, 4), 13);
    assert_eq!(reformatted::scale(3, 4), 13);
    assert_eq!(edited::scale(3, 4), 14);
    assert_eq!(retyped::scale(50, 3), 51);
    assert_eq!(plain::scale(3, 4), 13);
    let info = plain::scale_cache().cache_info();
    assert_eq!((info.hits, info.misses), (1, 1));
}

/// Nested functions of one name in one module (session 24).
mod nested {
    pub fn first(x: u64) -> (u64, &'static str) {
        #[picocache::memoize(backend = crate::store(), version = 1)]
        fn g(x: u64) -> u64 {
            x + 1
        }
        (g(x), g_cache().namespace_name())
    }

    pub fn second(x: u64) -> (u64, &'static str) {
        #[picocache::memoize(backend = crate::store(), version = 1)]
        fn g(x: u64) -> u64 {
            x + 2
        }
        (g(x), g_cache().namespace_name())
    }

    /// Two functions of one name in two blocks of one function: one path.
    pub fn blocks(x: u64) -> [(u64, &'static str); 2] {
        let a = {
            #[picocache::memoize(backend = crate::store(), version = 1)]
            fn h(x: u64) -> u64 {
                x + 10
            }
            (h(x), h_cache().namespace_name())
        };
        let b = {
            #[picocache::memoize(backend = crate::store(), version = 1)]
            fn h(x: u64) -> u64 {
                x + 20
            }
            (h(x), h_cache().namespace_name())
        };
        [a, b]
    }
}

#[test]
fn a_nested_function_is_named_after_its_enclosing_function() {
    for _ in 0..2 {
        assert_eq!(nested::first(5), (6, "memoize_naming::nested::first::g@1"));
        assert_eq!(
            nested::second(5),
            (7, "memoize_naming::nested::second::g@1")
        );
    }
}

#[test]
fn a_second_function_claiming_a_name_runs_uncached() {
    for _ in 0..3 {
        let [(a, na), (b, nb)] = nested::blocks(1);
        assert_eq!((a, b), (11, 21));
        assert_eq!(na, nb, "one scope, one name: the second is refused");
    }
}

#[test]
fn a_name_holding_an_at_sign_runs_uncached() {
    let f = picocache::Memo::builder("memoize_naming::at@1")
        .backend(store())
        .build();
    let g = picocache::Memo::builder("memoize_naming::at")
        .version("1")
        .backend(store())
        .build();
    assert_eq!(f.call(2u64, |x| x * 10), 20);
    assert_eq!(g.call(2u64, |x| x * 1000), 2000);
    assert_eq!(g.call(2u64, |x| x * 1000), 2000);
    assert_eq!(f.call(2u64, |x| x * 10), 20);
    assert_eq!(f.cache_info().hits, 0, "refused: never cached");
    let strict = picocache::Memo::builder("memoize_naming::at@2")
        .strict(true)
        .backend(store())
        .build();
    let e = strict.try_call(1u64, |x| x).unwrap_err();
    assert!(e.to_string().contains("'@'"), "{e}");
}

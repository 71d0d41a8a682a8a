//! What a [`Memo`](super::Memo) may be named, and the names `#[memoize]`
//! gives: the scope a function is declared in, and a per-process registry
//! of the names the macro's functions claim.
//!
//! - A name or version holding `@` is refused: `@` separates the version
//!   (`f@1` would otherwise be both the name `f@1` and the name `f` with
//!   version `1`). A refused `Memo` runs its function uncached, with a
//!   logged warning (an error in strict mode): it never shares entries.
//! - `#[memoize]` names a function by the path of the scope it is declared
//!   in: `module_path!()` for a function at module level (the name it has
//!   always had), and the module path plus the enclosing functions for one
//!   declared inside a function body (`app::outer::f#DIGEST`), so two nested
//!   functions of one name in two functions of one module never meet. The
//!   path is read from `std::any::type_name` of a type the macro declares
//!   next to the function: the same in every build of the same code.
//! - Two nested functions of one name in two blocks of *one* function still
//!   have one path. Each `#[memoize]` function (its `static`) claims its
//!   default name in this process on first use; a second function claiming
//!   a name another has claimed is refused (runs uncached, with a warning
//!   that says to give it a `name`). A `name = ...` given explicitly is not
//!   claimed: every function given that name shares entries, as documented.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// The longest namespace name the stores accept.
const MAX_NAME_LEN: usize = picocache_engine::MAX_NAME_LEN;

/// The namespace name of a function: `name`, plus `@version`; shortened with
/// a hash of the whole name when longer than a namespace name may be.
pub fn namespace_name(name: &str, version: Option<&str>) -> String {
    let full = match version {
        Some(v) => format!("{name}@{v}"),
        None => name.to_owned(),
    };
    if full.len() <= MAX_NAME_LEN {
        return full;
    }
    let hash = format!("~{:016x}", xxhash_rust::xxh3::xxh3_64(full.as_bytes()));
    let mut cut = MAX_NAME_LEN - hash.len();
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{hash}", &full[..cut])
}

/// Why a `Memo` named `name` (with `version`) may not cache, if it may not.
pub(super) fn refusal(name: &str, version: Option<&str>) -> Option<String> {
    if name.contains('@') {
        return Some(format!(
            "the name {name:?} holds '@', which separates a version: \
             give the version with `version` (MemoBuilder::version) instead"
        ));
    }
    if version.is_some_and(|v| v.contains('@')) {
        return Some(format!(
            "the version {:?} of {name:?} holds '@'; use a version without it",
            version.unwrap_or_default()
        ));
    }
    None
}

/// Claims `ns_name` for the `#[memoize]` function whose `static` is at
/// address `site`: `None` if it is this site's (or free), else why not.
pub(super) fn claim(ns_name: &str, site: usize) -> Option<String> {
    static CLAIMED: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Default::default);
    let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    let owner = *claimed.entry(ns_name.to_owned()).or_insert(site);
    (owner != site).then(|| {
        format!(
            "another #[memoize] function of this process has the same name {ns_name:?} \
             (two nested functions of one name in one function?): this one runs \
             uncached; give it a `name = \"...\"` of its own"
        )
    })
}

/// The default name `#[memoize]` gives a function: `leaf` (`f#DIGEST` or
/// `f`) after the path of the scope it is declared in. `site_type` is
/// `type_name` of the type the macro declares in the function's accessor
/// `accessor` (`f_cache`); `module` is `module_path!()`.
#[doc(hidden)]
pub fn macro_name(site_type: &str, module: &str, accessor: &str, leaf: &str) -> String {
    let scope = site_type
        .strip_suffix("::__PicocacheSite")
        .and_then(|s| s.strip_suffix(accessor))
        .and_then(|s| s.strip_suffix("::"))
        .unwrap_or(module);
    format!("{scope}::{leaf}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_at_sign_is_refused_in_names_and_versions() {
        assert!(refusal("f@1", None).is_some());
        assert!(refusal("f", Some("1@2")).is_some());
        assert!(refusal("app::f#0123", Some("2")).is_none());
    }

    #[test]
    fn a_second_site_cannot_claim_a_name() {
        assert_eq!(claim("identity-test::f", 1), None);
        assert_eq!(claim("identity-test::f", 1), None);
        assert!(claim("identity-test::f", 2).is_some());
        assert_eq!(claim("identity-test::g", 2), None);
    }

    #[test]
    fn the_scope_is_the_module_or_the_enclosing_function() {
        assert_eq!(
            macro_name("c::m::f_cache::__PicocacheSite", "c::m", "f_cache", "f#1"),
            "c::m::f#1"
        );
        assert_eq!(
            macro_name(
                "c::m::outer::f_cache::__PicocacheSite",
                "c::m",
                "f_cache",
                "f"
            ),
            "c::m::outer::f"
        );
        assert_eq!(macro_name("odd", "c::m", "f_cache", "f"), "c::m::f");
    }
}

//! The `#[memoize]` attribute macro of PicoCache. Use it through the
//! `picocache` crate (`#[picocache::memoize]`), which documents it.
//!
//! The macro is a thin front end: it checks the function and its options and
//! generates a wrapper that calls `picocache::Memo`, where every behaviour
//! lives.

use darling::ast::NestedMeta;
use darling::FromMeta;
use proc_macro::TokenStream;
use proc_macro2::{Delimiter, Spacing, Span, TokenStream as TokenStream2, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Error, Expr, FnArg, GenericParam, ItemFn, Lit, Pat, ReturnType, Type};

/// `maxsize = 256`, `maxsize = None` (unlimited) or `maxsize = 0`.
#[derive(Debug, Clone, Copy)]
struct MaxSize(Option<u64>);

impl FromMeta for MaxSize {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        match expr {
            Expr::Lit(l) => Self::from_value(&l.lit),
            Expr::Path(p) if p.path.is_ident("None") => Ok(MaxSize(None)),
            Expr::Group(g) => Self::from_expr(&g.expr),
            _ => Err(darling::Error::custom(
                "expected an entry count (`maxsize = 256`) or `maxsize = None` for unlimited",
            )
            .with_span(expr)),
        }
    }

    fn from_value(lit: &Lit) -> darling::Result<Self> {
        match lit {
            Lit::Int(i) => Ok(MaxSize(Some(i.base10_parse::<u64>()?))),
            _ => Err(darling::Error::custom(
                "expected an entry count (`maxsize = 256`) or `maxsize = None` for unlimited",
            )
            .with_span(lit)),
        }
    }
}

/// `version = "2"` or `version = 2`.
#[derive(Debug, Clone)]
struct Version(String);

impl FromMeta for Version {
    fn from_value(lit: &Lit) -> darling::Result<Self> {
        match lit {
            Lit::Str(s) => Ok(Version(s.value())),
            Lit::Int(i) => Ok(Version(i.base10_digits().to_owned())),
            _ => Err(
                darling::Error::custom("expected `version = \"2\"` or `version = 2`")
                    .with_span(lit),
            ),
        }
    }
}

/// The options of `#[memoize(...)]`.
#[derive(Debug, Default, FromMeta)]
struct Options {
    /// Most entries (default 128; `None`: unlimited; 0: no caching).
    maxsize: Option<MaxSize>,
    /// Time to live in seconds.
    ttl_secs: Option<u64>,
    /// Time to live in milliseconds.
    ttl_ms: Option<u64>,
    /// Pins the identity (no code digest); invalidates old entries when
    /// changed.
    version: Option<Version>,
    /// Replaces `module_path!()::function#digest` as the identity.
    name: Option<String>,
    /// A local store path or backend URL.
    path: Option<String>,
    /// An expression giving an `Arc<dyn picocache::Backend>`.
    backend: Option<Expr>,
    /// Cache failures are errors: the function returns `picocache::Result<T>`.
    #[darling(default)]
    strict: bool,
    /// Seconds to wait for another process computing the same arguments.
    lease_timeout_secs: Option<u64>,
}

/// Memoizes a function persistently. See `picocache::memoize` and the
/// `picocache::memo` module docs for the options.
///
/// # Identity
///
/// The function's entries are kept in a namespace named after it:
///
/// - by default `module_path!()::function#DIGEST`, where `DIGEST` is 16 hex
///   digits of xxh3-64 over the tokens of the function's signature and body
///   (comments, whitespace, line numbers and doc comments do not count). A
///   changed body or signature is a new namespace, so it never serves the
///   old code's results; the old namespace stays until removed
///   (`picocache prune --unused-for`). Only the function's own tokens count:
///   a change in a function or constant it uses is not seen, so give a
///   `version` (and change it) when results depend on such code. (A changed
///   serde layout of the result type is seen: each value carries its
///   fingerprint; a changed argument type is not.);
/// - with `version = V`: `module_path!()::function@V`, with no digest. The
///   version pins the identity: entries survive edits of the body until the
///   version changes;
/// - with `name = "N"`: `N` (then `@V` if a version is given). Every function
///   given that name shares entries. Neither may hold `@`.
///
/// `module_path!()` stands for the path of the scope: for a function
/// declared in a function body, the module path and the enclosing functions
/// (read at run time from `std::any::type_name` of a type declared in the
/// accessor). A default name is claimed in the process by the first
/// function to use it; another function with the same default name (one
/// name in two blocks of one function) runs uncached, with a warning.
#[proc_macro_attribute]
pub fn memoize(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.clone().into()) {
        Ok(ts) => ts.into(),
        Err(e) => {
            // Keep the function so that its callers do not add errors of
            // their own, and show ours.
            let mut out: TokenStream2 = e;
            out.extend(TokenStream2::from(item));
            out.into()
        }
    }
}

fn expand(attr: TokenStream2, item: TokenStream2) -> Result<TokenStream2, TokenStream2> {
    let metas = NestedMeta::parse_meta_list(attr).map_err(|e| e.to_compile_error())?;
    let opts = Options::from_list(&metas).map_err(|e| e.write_errors())?;
    let func: ItemFn = syn::parse2(item).map_err(|e| e.to_compile_error())?;
    check(&func, &opts).map_err(|e| e.to_compile_error())?;
    Ok(generate(&func, &opts))
}

/// Rejects what the wrapper cannot support, with a message that says why.
fn check(func: &ItemFn, opts: &Options) -> Result<(), Error> {
    let sig = &func.sig;
    let mut errors: Option<Error> = None;
    let mut push = |e: Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    if let Some(a) = &sig.asyncness {
        push(Error::new(
            a.span(),
            "#[memoize] does not support async fn: memoize a synchronous function, \
             or use picocache::Memo from inside the async code",
        ));
    }
    if let Some(c) = &sig.constness {
        push(Error::new(c.span(), "#[memoize] cannot memoize a const fn"));
    }
    if let Some(v) = &sig.variadic {
        push(Error::new(
            v.span(),
            "#[memoize] does not support variadic functions",
        ));
    }
    for g in &sig.generics.params {
        match g {
            GenericParam::Lifetime(_) => {}
            GenericParam::Type(_) | GenericParam::Const(_) => push(Error::new(
                g.span(),
                "#[memoize] does not support generic functions (every instantiation would \
                 share one cache); use picocache::Memo with a name per type instead",
            )),
        }
    }
    if let ReturnType::Default = sig.output {
        push(Error::new(
            sig.ident.span(),
            "#[memoize] needs a function that returns a value: add a return type \
             (`-> T` with T: Serialize + DeserializeOwned)",
        ));
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        if let Type::ImplTrait(_) = **ty {
            push(Error::new(
                ty.span(),
                "#[memoize] cannot store an `impl Trait` result: return a concrete type",
            ));
        }
    }
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(r) => push(Error::new(
                r.span(),
                "#[memoize] does not support methods (`self` arguments): memoize a free \
                 function that takes the fields it needs",
            )),
            FnArg::Typed(pt) => {
                match &*pt.pat {
                    Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {}
                    p => push(Error::new(
                        p.span(),
                        "#[memoize] needs each argument to be a plain name (`x: T` or \
                         `mut x: T`), not a pattern",
                    )),
                }
                if let Type::ImplTrait(_) = &*pt.ty {
                    push(Error::new(
                        pt.ty.span(),
                        "#[memoize] does not support `impl Trait` arguments: use a concrete \
                         type that implements Serialize",
                    ));
                }
            }
        }
    }
    if opts.ttl_secs.is_some() && opts.ttl_ms.is_some() {
        push(Error::new(
            Span::call_site(),
            "give `ttl_secs` or `ttl_ms`, not both",
        ));
    }
    if opts.name.as_deref().is_some_and(|n| n.contains('@')) {
        push(Error::new(
            Span::call_site(),
            "a `name` must not hold '@', which separates the version: give `version = ...`",
        ));
    }
    if opts.version.as_ref().is_some_and(|v| v.0.contains('@')) {
        push(Error::new(
            Span::call_site(),
            "a `version` must not hold '@', which separates it from the name",
        ));
    }
    if opts.path.is_some() && opts.backend.is_some() {
        push(Error::new(
            Span::call_site(),
            "give `path` or `backend`, not both",
        ));
    }
    match errors {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn generate(func: &ItemFn, opts: &Options) -> TokenStream2 {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    let ident = &sig.ident;
    let accessor = format_ident!("{}_cache", ident);
    let ret = match &sig.output {
        ReturnType::Type(_, ty) => ty.as_ref().clone(),
        ReturnType::Default => syn::parse_quote!(()),
    };

    let mut names = Vec::new();
    let mut pats = Vec::new();
    for arg in &sig.inputs {
        if let FnArg::Typed(pt) = arg {
            if let Pat::Ident(pi) = &*pt.pat {
                let name = &pi.ident;
                names.push(quote!(#name));
                let m = &pi.mutability;
                pats.push(quote!(#m #name));
            }
        }
    }

    // The default names start with the path of the scope the function is
    // declared in (its module, and its enclosing functions if nested), read
    // from the `type_name` of a type declared in the accessor; the function
    // claims the name in this process (`.__site`).
    let accessor_s = accessor.to_string();
    let scoped = |leaf: String| {
        quote!(::picocache::memo::__macro_name(
            ::std::any::type_name::<__PicocacheSite>(),
            ::std::module_path!(),
            #accessor_s,
            #leaf,
        ))
    };
    let name = match (&opts.name, &opts.version) {
        (Some(n), _) => quote!(#n),
        // The version pins the identity: entries survive edits of the body.
        (None, Some(_)) => scoped(ident.to_string()),
        // The code names the function: a changed body is a new namespace.
        (None, None) => scoped(format!("{ident}#{:016x}", code_digest(sig, block))),
    };
    let mut builder = quote!(::picocache::Memo::builder(#name));
    if opts.name.is_none() {
        builder.extend(quote!(.__site(::std::ptr::addr_of!(MEMO) as usize)));
    }
    if let Some(MaxSize(m)) = opts.maxsize {
        let m = match m {
            Some(n) => quote!(::std::option::Option::Some(#n)),
            None => quote!(::std::option::Option::None),
        };
        builder.extend(quote!(.maxsize(#m)));
    }
    if let Some(s) = opts.ttl_secs {
        builder.extend(
            quote!(.ttl(::std::option::Option::Some(::std::time::Duration::from_secs(#s)))),
        );
    }
    if let Some(ms) = opts.ttl_ms {
        builder.extend(
            quote!(.ttl(::std::option::Option::Some(::std::time::Duration::from_millis(#ms)))),
        );
    }
    if let Some(Version(v)) = &opts.version {
        builder.extend(quote!(.version(#v)));
    }
    if let Some(p) = &opts.path {
        builder.extend(quote!(.url(#p)));
    }
    if let Some(b) = &opts.backend {
        builder.extend(quote_spanned!(b.span()=> .backend(#b)));
    }
    if opts.strict {
        builder.extend(quote!(.strict(true)));
    }
    if let Some(s) = opts.lease_timeout_secs {
        builder.extend(quote!(.lease_timeout(::std::time::Duration::from_secs(#s))));
    }

    let mut outer_sig = sig.clone();
    // The wrapper's arguments are plain bindings; `mut` belongs to the body.
    for arg in outer_sig.inputs.iter_mut() {
        if let FnArg::Typed(pt) = arg {
            if let Pat::Ident(pi) = &mut *pt.pat {
                pi.mutability = None;
            }
        }
    }
    let call = if opts.strict {
        outer_sig.output = syn::parse_quote!(-> ::picocache::Result<#ret>);
        quote!(try_call)
    } else {
        quote!(call)
    };
    let doc = format!(
        "The cache of [`{ident}`] (a [`picocache::Memo`]): `cache_info()`, `cache_clear()`."
    );

    quote! {
        #(#attrs)*
        #vis #outer_sig {
            #accessor().#call((#(#names,)*), move |(#(#pats,)*)| -> #ret #block)
        }

        #[doc = #doc]
        #[allow(dead_code)]
        #vis fn #accessor() -> &'static ::picocache::Memo {
            /// Names the scope the function is declared in (`type_name`).
            #[allow(dead_code)]
            struct __PicocacheSite;
            static MEMO: ::std::sync::LazyLock<::picocache::Memo> =
                ::std::sync::LazyLock::new(|| #builder.build());
            &MEMO
        }
    }
}

/// The digest of a function's code that its default identity carries:
/// xxh3-64 (a fixed algorithm, the same on every machine and compilation) of
/// a canonical text of the tokens of its signature and body.
///
/// Tokens, not source text: comments, whitespace and line numbers do not
/// count; `#[doc = ...]` attributes (doc comments) inside the body are left
/// out too, and the function's own attributes (its doc comment) are not part
/// of the signature, nor is a trailing comma after the last argument. Other
/// tokens count even where they do not change the meaning (a trailing comma
/// in a call's arguments, `1_000` against `1000`): such an edit costs a new
/// namespace, never a wrong value. Whether two punctuation characters are
/// written together (`&&` against `& &`) counts, as it can change the
/// meaning.
fn code_digest(sig: &syn::Signature, block: &syn::Block) -> u64 {
    // A trailing comma after the last argument means nothing (and rustfmt
    // adds one when it puts the arguments on lines of their own).
    let mut sig = sig.clone();
    sig.inputs.pop_punct();
    let mut text = String::new();
    canonical(quote!(#sig), &mut text);
    text.push('\n');
    canonical(quote!(#block), &mut text);
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// Appends a canonical text of `tokens` to `out`: each token's own text and
/// a separator, groups in their delimiters, doc attributes left out.
fn canonical(tokens: TokenStream2, out: &mut String) {
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tts.len() {
        if let Some(len) = doc_attribute_len(&tts[i..]) {
            i += len;
            continue;
        }
        match &tts[i] {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::None => ("\u{1}", "\u{2}"),
                };
                out.push_str(open);
                out.push(' ');
                canonical(g.stream(), out);
                out.push_str(close);
                out.push(' ');
            }
            TokenTree::Ident(id) => {
                out.push_str(&id.to_string());
                out.push(' ');
            }
            TokenTree::Punct(p) => {
                out.push(p.as_char());
                if p.spacing() == Spacing::Alone {
                    out.push(' ');
                }
            }
            TokenTree::Literal(l) => {
                out.push_str(&l.to_string());
                out.push(' ');
            }
        }
        i += 1;
    }
}

/// The number of tokens of the `#[doc = ...]` or `#![doc = ...]` attribute
/// (a doc comment) that `tts` starts with, if it starts with one.
fn doc_attribute_len(tts: &[TokenTree]) -> Option<usize> {
    let TokenTree::Punct(hash) = tts.first()? else {
        return None;
    };
    if hash.as_char() != '#' {
        return None;
    }
    let mut at = 1;
    if let Some(TokenTree::Punct(bang)) = tts.get(at) {
        if bang.as_char() == '!' {
            at += 1;
        }
    }
    let TokenTree::Group(g) = tts.get(at)? else {
        return None;
    };
    if g.delimiter() != Delimiter::Bracket {
        return None;
    }
    let mut inner = g.stream().into_iter();
    let is_doc = matches!(inner.next(), Some(TokenTree::Ident(id)) if id == "doc")
        && matches!(inner.next(), Some(TokenTree::Punct(p)) if p.as_char() == '=');
    is_doc.then_some(at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(f: &ItemFn) -> String {
        let mut sig = f.sig.clone();
        sig.inputs.pop_punct();
        let block = &f.block;
        let mut text = String::new();
        canonical(quote!(#sig), &mut text);
        text.push('\n');
        canonical(quote!(#block), &mut text);
        text
    }

    #[test]
    fn the_canonical_text_is_tokens_without_comments_or_doc() {
        let a: ItemFn = syn::parse_quote! {
            /// Doc.
            fn f(a: &u8, b: u8,) -> bool {
                /// Inner doc.
                const K: u8 = 1; // comment
                *a&&b > K
            }
        };
        let b: ItemFn = syn::parse_str(
            "fn f(a: &u8, b: u8) -> bool { /* c */ const K: u8 = 1;\n\n *a && b>K }",
        )
        .unwrap();
        assert_eq!(
            text_of(&a),
            "fn f ( a : & u8 , b : u8 ) -> bool \n{ const K : u8 = 1 ; * a && b > K } "
        );
        assert_eq!(text_of(&a), text_of(&b));
        assert_eq!(code_digest(&a.sig, &a.block), code_digest(&b.sig, &b.block));
        // Fixed across machines and compilations: xxh3-64 of the text.
        assert_eq!(
            code_digest(&a.sig, &a.block),
            xxhash_rust::xxh3::xxh3_64(text_of(&a).as_bytes())
        );
    }

    #[test]
    fn joined_punctuation_counts() {
        let and: ItemFn = syn::parse_quote!(
            fn f(a: bool, b: bool) -> bool {
                a && b
            }
        );
        let amp: ItemFn = syn::parse_quote!(
            fn f(a: bool, b: bool) -> bool {
                a & &b
            }
        );
        assert_ne!(
            code_digest(&and.sig, &and.block),
            code_digest(&amp.sig, &amp.block)
        );
    }
}

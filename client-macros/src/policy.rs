//! Part of the model: the policy attributes (`#[timeout]`, `#[retry]`,
//! `#[circuit_breaker]`, `#[rate_limit]`, `#[bulkhead]`, `#[hedge]`,
//! `#[log]`), parsed and checked at
//! compile time against the one policy schema (`courier_spec::KEYS`), each
//! mistake reported at its token. The runtime checks config values against
//! the same table, so the two can never disagree.

use courier_spec::{Key, KeyInfo, Kind, Overrides, Raw, Value};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::meta::ParseNestedMeta;
use syn::parse::Parse as _;
use syn::{Attribute, Ident, LitInt, LitStr};

/// Whether `name` is a policy attribute.
pub(crate) fn is_policy_attr(name: &str) -> bool {
    courier_spec::section(name).is_some()
}

/// The policy attributes, for error messages: `timeout, retry, …`.
pub(crate) fn policy_attr_names() -> String {
    let names: Vec<&str> = courier_spec::SECTIONS.iter().map(|s| s.name).collect();
    names.join(", ")
}

/// The policy attributes of one level (the trait, or a method).
#[derive(Default)]
pub(crate) struct Policies {
    level: Overrides,
    /// Each attribute given, by section name, to point errors at it.
    given: Vec<(&'static str, Attribute)>,
}

impl Policies {
    /// The attribute of `section` at this level, unless it says `disabled`.
    pub(crate) fn enabled_attr(&self, section: &str) -> Option<&Attribute> {
        let (_, attr) = self.given.iter().find(|(s, _)| *s == section)?;
        let switch = courier_spec::section(section)?.switch?;
        (self.level.get(switch) != Some(Value::Switch(false))).then_some(attr)
    }

    /// The checks of the trait level, the one every method inherits: a
    /// rate limit there must name its rate.
    pub(crate) fn check_client_level(&self) -> syn::Result<()> {
        courier_spec::check_client_level(&self.level).map_err(|e| {
            match self.enabled_attr("rate_limit") {
                Some(attr) => syn::Error::new_spanned(attr, e),
                None => syn::Error::new(Span::call_site(), e),
            }
        })
    }

    /// Parses `attr` if it is a policy attribute; `Ok(false)` if it is not.
    pub(crate) fn parse(&mut self, attr: &Attribute, name: &str) -> syn::Result<bool> {
        let Some(section) = courier_spec::section(name) else {
            return Ok(false);
        };
        if self.given.iter().any(|(s, _)| *s == section.name) {
            return Err(syn::Error::new_spanned(
                attr,
                format!("`#[{name}]` is given twice"),
            ));
        }
        self.given.push((section.name, attr.clone()));
        if let Some(key) = section.single {
            let info = key.info();
            let lit: LitStr = attr.parse_args().map_err(|_| {
                syn::Error::new_spanned(
                    attr,
                    format!("expected a duration: #[{name}({})]", info.kind.example()),
                )
            })?;
            let value = courier_spec::check(info, &Raw::Text(&lit.value()))
                .map_err(|e| syn::Error::new_spanned(&lit, with_subject(name, e)))?;
            self.level.set(key, value);
            return Ok(true);
        }
        self.parse_keys(attr, name, section.switch)?;
        Ok(true)
    }

    /// `#[name(disabled)]` or `#[name(key = value, …)]`.
    fn parse_keys(&mut self, attr: &Attribute, name: &str, switch: Option<Key>) -> syn::Result<()> {
        let valid = courier_spec::key_names(name);
        if matches!(attr.meta, syn::Meta::Path(_)) {
            return Err(syn::Error::new_spanned(
                attr,
                format!(
                    "expected `#[{name}(disabled)]` or keys: #[{name}({} = …)]",
                    valid.replace(", ", " = …, ")
                ),
            ));
        }
        let mut disabled_at = None;
        let mut named: Vec<Key> = Vec::new();
        attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            if key == "disabled" && switch.is_some() {
                disabled_at = Some(meta.path.clone());
                return Ok(());
            }
            let Some(info) = courier_spec::key(name, &key) else {
                let disabled = if switch.is_some() {
                    ", or `disabled`"
                } else {
                    ""
                };
                return Err(meta.error(format!(
                    "unknown key `{key}` in #[{name}]; valid keys: {valid}{disabled}"
                )));
            };
            if named.contains(&info.key) {
                return Err(meta.error(format!("`{key}` is given twice")));
            }
            named.push(info.key);
            let value = value(&meta, info)?;
            self.level.set(info.key, value);
            Ok(())
        })?;
        if let Some(path) = &disabled_at
            && !named.is_empty()
        {
            return Err(syn::Error::new_spanned(
                path,
                format!("`disabled` turns #[{name}] off: it takes no other keys"),
            ));
        }
        if let Some(switch) = switch {
            self.level.set(switch, Value::Switch(disabled_at.is_none()));
        }
        courier_spec::check_level(&self.level)
            .map_err(|e| syn::Error::new_spanned(attr, format!("in #[{name}]: {e}")))?;
        Ok(())
    }

    /// The runtime's `Overrides` constant for this level.
    pub(crate) fn to_tokens(&self) -> TokenStream {
        let p = quote!(::courier::__private::spec);
        let mut out = quote!(#p::Overrides::NONE);
        for info in courier_spec::KEYS {
            let Some(value) = self.level.get(info.key) else {
                continue;
            };
            let key = Ident::new(info.variant, Span::call_site());
            let value = match value {
                Value::Switch(on) => quote!(#p::Value::Switch(#on)),
                Value::Duration(d) => {
                    let nanos = d.as_nanos() as u64;
                    quote!(#p::Value::Duration(::core::time::Duration::from_nanos(#nanos)))
                }
                Value::Count(n) => quote!(#p::Value::Count(#n)),
                Value::Rate(n) => quote!(#p::Value::Rate(#n)),
                Value::Codes(set) => {
                    let codes = set.codes();
                    quote!(#p::Value::Codes(#p::StatusSet::from_codes(&[#(#codes),*])))
                }
                Value::Choice(i) => quote!(#p::Value::Choice(#i)),
                Value::Backoff(a, b) => {
                    let (a, b) = (a.as_nanos() as u64, b.as_nanos() as u64);
                    quote!(#p::Value::Backoff(
                        ::core::time::Duration::from_nanos(#a),
                        ::core::time::Duration::from_nanos(#b),
                    ))
                }
            };
            out = quote!(#out.with(#p::Key::#key, #value));
        }
        out
    }
}

/// Reads `= value` for `info` and checks it against the schema; errors point
/// at the value.
fn value(meta: &ParseNestedMeta<'_>, info: &KeyInfo) -> syn::Result<Value> {
    let input = meta.value()?;
    let key = info.name;
    let expected = |what: &str| {
        syn::Error::new(
            input.span(),
            format!("`{key}` is {what}: {key} = {}", info.kind.example()),
        )
    };
    let (raw, span): (Raw<'_>, Span);
    let text;
    match info.kind {
        Kind::Switch => return Err(expected("not a key")),
        Kind::Duration { .. } | Kind::Backoff | Kind::Choice(_) => {
            let what = match info.kind {
                Kind::Backoff => "a back-off range",
                Kind::Choice(_) => "one of a few words",
                _ => "a duration",
            };
            let lit: LitStr = input.parse().map_err(|_| expected(what))?;
            text = lit.value();
            span = lit.span();
            raw = Raw::Text(&text);
        }
        Kind::Count { .. } | Kind::Rate => {
            let what = if info.kind == Kind::Rate {
                "a percentage"
            } else {
                "a number"
            };
            let lit: LitInt = input.parse().map_err(|_| expected(what))?;
            let n: i128 = lit.base10_parse()?;
            span = lit.span();
            raw = Raw::Int(n);
        }
        Kind::Size { .. } => {
            if input.peek(LitStr) {
                let lit: LitStr = input.parse()?;
                text = lit.value();
                span = lit.span();
                raw = Raw::Text(&text);
            } else {
                let lit: LitInt = input.parse().map_err(|_| expected("a size"))?;
                span = lit.span();
                raw = Raw::Int(lit.base10_parse()?);
            }
        }
        Kind::Codes => {
            let content;
            syn::bracketed!(content in input);
            let list = content.parse_terminated(LitInt::parse, syn::Token![,])?;
            let mut codes = Vec::new();
            for lit in &list {
                let code: i128 = lit.base10_parse()?;
                if !(100..600).contains(&code) {
                    return Err(syn::Error::new_spanned(
                        lit,
                        format!("{code} is not an HTTP status (100 to 599)"),
                    ));
                }
                codes.push(code);
            }
            span = list.first().map_or_else(Span::call_site, LitInt::span);
            raw = Raw::Ints(codes);
        }
    }
    courier_spec::check(info, &raw).map_err(|e| syn::Error::new(span, with_subject(key, e)))
}

/// The schema's messages about a value are predicates ("must be …"); give
/// them the key as their subject.
fn with_subject(key: &str, message: String) -> String {
    if message.starts_with("must") || message.starts_with("is ") {
        format!("`{key}` {message}")
    } else {
        message
    }
}

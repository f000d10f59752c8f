//! Part of the model: the policy attributes (`#[timeout]`, `#[retry]`,
//! `#[circuit_breaker]`, `#[bulkhead]`, `#[hedge]`), parsed and range-checked
//! at compile time, each mistake reported at its token.
//!
//! The ranges match the runtime's checks of config values
//! (`courier_core::config`).

use proc_macro2::TokenStream;
use quote::quote;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, LitInt, LitStr};

/// The policy attributes, for error messages.
pub(crate) const POLICY_ATTRS: &[&str] =
    &["timeout", "retry", "circuit_breaker", "bulkhead", "hedge"];

/// What a key's value must be.
#[derive(Clone, Copy)]
enum Kind {
    /// A duration string; `nonzero` refuses `"0s"`.
    Duration { nonzero: bool },
    /// An integer in `min..=max`, stored as `u32`.
    Count { min: u64, max: u64 },
    /// A percentage 1–100, stored as `u8`.
    Rate,
    /// `[429, 503]`: HTTP statuses.
    Codes,
    /// `"50ms..1s"`
    Backoff,
}

const RETRY_KEYS: &[(&str, Kind)] = &[
    ("max_attempts", Kind::Count { min: 1, max: 10 }),
    ("backoff", Kind::Backoff),
    ("on", Kind::Codes),
    ("attempt_timeout", Kind::Duration { nonzero: true }),
];

const CIRCUIT_KEYS: &[(&str, Kind)] = &[
    (
        "window",
        Kind::Count {
            min: 1,
            max: 10_000,
        },
    ),
    (
        "min_calls",
        Kind::Count {
            min: 1,
            max: u32::MAX as u64,
        },
    ),
    ("failure_rate", Kind::Rate),
    ("slow_call", Kind::Duration { nonzero: true }),
    ("slow_call_rate", Kind::Rate),
    ("open_for", Kind::Duration { nonzero: true }),
    (
        "half_open_calls",
        Kind::Count {
            min: 1,
            max: 10_000,
        },
    ),
];

const BULKHEAD_KEYS: &[(&str, Kind)] = &[
    (
        "max_concurrent",
        Kind::Count {
            min: 1,
            max: (u32::MAX >> 3) as u64,
        },
    ),
    ("max_wait", Kind::Duration { nonzero: false }),
];

const HEDGE_KEYS: &[(&str, Kind)] = &[
    ("delay", Kind::Duration { nonzero: false }),
    ("max_extra", Kind::Count { min: 1, max: 10 }),
];

/// A checked value.
enum Value {
    Nanos(u64),
    Count(u32),
    Rate(u8),
    Codes(Vec<u16>),
    Backoff(u64, u64),
}

/// One policy attribute: `disabled`, or some keys.
#[derive(Default)]
pub(crate) struct Section {
    disabled: bool,
    keys: Vec<(&'static str, Value)>,
}

impl Section {
    /// `#[…(disabled)]`
    pub(crate) fn is_disabled(&self) -> bool {
        self.disabled
    }
}

/// The policy attributes of one level (the trait, or a method).
#[derive(Default)]
pub(crate) struct Policies {
    timeout: Option<u64>,
    pub(crate) retry: Option<(Section, Attribute)>,
    circuit: Option<Section>,
    bulkhead: Option<Section>,
    pub(crate) hedge: Option<(Section, Attribute)>,
}

impl Policies {
    /// Parses `attr` if it is a policy attribute; `Ok(false)` if it is not.
    pub(crate) fn parse(&mut self, attr: &Attribute, name: &str) -> syn::Result<bool> {
        let twice = || syn::Error::new_spanned(attr, format!("`#[{name}]` is given twice"));
        match name {
            "timeout" => {
                if self.timeout.is_some() {
                    return Err(twice());
                }
                let lit: LitStr = attr.parse_args().map_err(|_| {
                    syn::Error::new_spanned(attr, "expected a duration: #[timeout(\"300ms\")]")
                })?;
                self.timeout = Some(duration(&lit, true)?);
            }
            "retry" => {
                if self.retry.is_some() {
                    return Err(twice());
                }
                self.retry = Some((section(attr, name, RETRY_KEYS)?, attr.clone()));
            }
            "circuit_breaker" => {
                if self.circuit.is_some() {
                    return Err(twice());
                }
                self.circuit = Some(section(attr, name, CIRCUIT_KEYS)?);
            }
            "bulkhead" => {
                if self.bulkhead.is_some() {
                    return Err(twice());
                }
                self.bulkhead = Some(section(attr, name, BULKHEAD_KEYS)?);
            }
            "hedge" => {
                if self.hedge.is_some() {
                    return Err(twice());
                }
                self.hedge = Some((section(attr, name, HEDGE_KEYS)?, attr.clone()));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The runtime's `Overrides` value for this level, every field spelt
    /// out (a struct update would trip clippy's `needless_update` in the
    /// user's crate when every key is given).
    pub(crate) fn to_tokens(&self) -> TokenStream {
        let p = quote!(::courier::__private);
        let timeout = match self.timeout {
            Some(nanos) => quote!(::core::option::Option::Some(#p::Duration::from_nanos(#nanos))),
            None => quote!(::core::option::Option::None),
        };
        let sections = [
            (
                "retry",
                "RetryOverrides",
                RETRY_KEYS,
                self.retry.as_ref().map(|(s, _)| s),
            ),
            (
                "circuit",
                "CircuitOverrides",
                CIRCUIT_KEYS,
                self.circuit.as_ref(),
            ),
            (
                "bulkhead",
                "BulkheadOverrides",
                BULKHEAD_KEYS,
                self.bulkhead.as_ref(),
            ),
            (
                "hedge",
                "HedgeOverrides",
                HEDGE_KEYS,
                self.hedge.as_ref().map(|(s, _)| s),
            ),
        ];
        let fields = sections.map(|(field, ty, keys, section)| {
            let field = quote::format_ident!("{}", field);
            let ty = quote::format_ident!("{}", ty);
            let Some(section) = section else {
                return quote!(#field: #p::Overrides::NONE.#field);
            };
            let enabled = !section.disabled;
            let keys = keys.iter().map(|(key, _)| {
                let value = section.keys.iter().find(|(k, _)| k == key).map(|(_, v)| v);
                let key = quote::format_ident!("{}", key);
                let value = match value {
                    None => return quote!(#key: ::core::option::Option::None),
                    Some(Value::Nanos(n)) => quote!(#p::Duration::from_nanos(#n)),
                    Some(Value::Count(n)) => quote!(#n),
                    Some(Value::Rate(n)) => quote!(#n),
                    Some(Value::Codes(codes)) => quote!(#p::StatusSet::from_codes(&[#(#codes),*])),
                    Some(Value::Backoff(a, b)) => {
                        quote!((#p::Duration::from_nanos(#a), #p::Duration::from_nanos(#b)))
                    }
                };
                quote!(#key: ::core::option::Option::Some(#value))
            });
            quote! {
                #field: #p::#ty {
                    enabled: ::core::option::Option::Some(#enabled),
                    #(#keys,)*
                }
            }
        });
        quote!(#p::Overrides { timeout: #timeout, #(#fields,)* })
    }
}

/// `#[name(disabled)]` or `#[name(key = value, …)]`.
fn section(attr: &Attribute, name: &str, keys: &[(&'static str, Kind)]) -> syn::Result<Section> {
    let mut out = Section::default();
    let valid: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    if matches!(attr.meta, syn::Meta::Path(_)) {
        return Err(syn::Error::new_spanned(
            attr,
            format!(
                "expected `#[{name}(disabled)]` or keys: #[{name}({} = …)]",
                valid.join(" = …, ")
            ),
        ));
    }
    let mut disabled_at = None;
    attr.parse_nested_meta(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        if key == "disabled" {
            disabled_at = Some(meta.path.clone());
            out.disabled = true;
            return Ok(());
        }
        let Some((key, kind)) = keys.iter().find(|(k, _)| *k == key) else {
            return Err(meta.error(format!(
                "unknown key `{key}` in #[{name}]; valid keys: {}, or `disabled`",
                valid.join(", ")
            )));
        };
        if out.keys.iter().any(|(k, _)| k == key) {
            return Err(meta.error(format!("`{key}` is given twice")));
        }
        out.keys.push((key, value(&meta, key, *kind)?));
        Ok(())
    })?;
    if let Some(path) = disabled_at
        && !out.keys.is_empty()
    {
        return Err(syn::Error::new_spanned(
            path,
            format!("`disabled` turns #[{name}] off: it takes no other keys"),
        ));
    }
    Ok(out)
}

fn value(meta: &ParseNestedMeta<'_>, key: &str, kind: Kind) -> syn::Result<Value> {
    let input = meta.value()?;
    let expected = |what: &'static str| {
        let example = match kind {
            Kind::Duration { .. } => "\"300ms\"",
            Kind::Backoff => "\"50ms..1s\"",
            Kind::Count { .. } => "3",
            Kind::Rate => "50",
            Kind::Codes => "[429, 503]",
        };
        move |e: syn::Error| {
            syn::Error::new(e.span(), format!("`{key}` is {what}: {key} = {example}"))
        }
    };
    match kind {
        Kind::Duration { nonzero } => {
            let lit: LitStr = input.parse().map_err(expected("a duration"))?;
            Ok(Value::Nanos(duration(&lit, nonzero)?))
        }
        Kind::Backoff => {
            let lit: LitStr = input.parse().map_err(expected("a back-off range"))?;
            let text = lit.value();
            let Some((a, b)) = text.split_once("..") else {
                return Err(syn::Error::new_spanned(
                    &lit,
                    format!("`{key}` is a range: \"50ms..1s\""),
                ));
            };
            let (a, b) = (parse_nanos(&lit, a)?, parse_nanos(&lit, b)?);
            if a > b {
                return Err(syn::Error::new_spanned(
                    &lit,
                    "the back-off range goes from the shorter to the longer: \"50ms..1s\"",
                ));
            }
            Ok(Value::Backoff(a, b))
        }
        Kind::Count { min, max } => {
            let lit: LitInt = input.parse().map_err(expected("a number"))?;
            let n: u64 = lit.base10_parse()?;
            if !(min..=max).contains(&n) {
                return Err(syn::Error::new_spanned(
                    &lit,
                    format!("`{key}` must be from {min} to {max}, not {n}"),
                ));
            }
            Ok(Value::Count(n as u32))
        }
        Kind::Rate => {
            let lit: LitInt = input.parse().map_err(expected("a percentage"))?;
            let n: u64 = lit.base10_parse()?;
            if !(1..=100).contains(&n) {
                return Err(syn::Error::new_spanned(
                    &lit,
                    format!("`{key}` is a percentage from 1 to 100, not {n}"),
                ));
            }
            Ok(Value::Rate(n as u8))
        }
        Kind::Codes => {
            let content;
            syn::bracketed!(content in input);
            let _ = &expected;
            let list = content.parse_terminated(LitInt::parse, syn::Token![,])?;
            let mut codes = Vec::new();
            for lit in list {
                let code: u16 = lit.base10_parse()?;
                if !(100..600).contains(&code) {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        format!("{code} is not an HTTP status (100 to 599)"),
                    ));
                }
                codes.push(code);
            }
            Ok(Value::Codes(codes))
        }
    }
}

use syn::parse::Parse as _;

fn parse_nanos(lit: &LitStr, text: &str) -> syn::Result<u64> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        syn::Error::new_spanned(
            lit,
            format!(
                "`{}` is not a duration like \"300ms\" or \"2s\" ({e})",
                text.trim()
            ),
        )
    })?;
    u64::try_from(d.as_nanos())
        .map_err(|_| syn::Error::new_spanned(lit, "the duration is too long"))
}

fn duration(lit: &LitStr, nonzero: bool) -> syn::Result<u64> {
    let nanos = parse_nanos(lit, &lit.value())?;
    if nonzero && nanos == 0 {
        return Err(syn::Error::new_spanned(
            lit,
            "the duration must be more than 0",
        ));
    }
    Ok(nanos)
}

//! Parse and validate: the annotated trait becomes a plain [`ClientModel`].
//!
//! Every check lives here, and every mistake is reported at the token that
//! caused it; mistakes are collected (as serde_derive does) so the user sees
//! all of them at once. [`crate::expand`] only ever sees a valid model.

use crate::policy::{Policies, is_policy_attr, policy_attr_names};
use courier_spec::Verb;
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;

use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, PathArguments, ReturnType,
    Signature, TraitItem, TraitItemFn, Type, TypePath,
};

/// Attributes courier reads on a method, for error messages.
fn method_attrs() -> String {
    let verbs: Vec<&str> = Verb::ALL.iter().map(|v| v.attribute()).collect();
    format!(
        "{}, idempotent, auth(none), codec(Type), {}",
        verbs.join(", "),
        policy_attr_names()
    )
}

/// Attributes courier reads on a parameter, for error messages.
const PARAM_ATTRS: &str = "#[query], #[query(\"name\")], #[query(format = \"csv\")], \
                           #[query(map)], #[header(\"Name\")], #[body], #[form], #[multipart], \
                           #[multipart(\"name\")], #[path(\"name\")]";

/// Attributes of Rust itself that may sit on a trait or method and are kept.
const PASSTHROUGH: &[&str] = &[
    "doc",
    "cfg",
    "cfg_attr",
    "allow",
    "warn",
    "deny",
    "forbid",
    "expect",
    "deprecated",
    "must_use",
];

/// Collects errors so that all of them are reported together.
#[derive(Default)]
struct Errors(Option<syn::Error>, usize);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        self.1 += 1;
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn at(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }
}

/// A valid client trait.
pub(crate) struct ClientModel {
    /// The logical service name.
    pub(crate) name: String,
    /// The default base URL.
    pub(crate) url: Option<String>,
    /// The trait with courier's attributes removed.
    pub(crate) item: ItemTrait,
    /// The trait-level policy attributes.
    pub(crate) policy: Policies,
    /// The methods courier implements, in declaration order.
    pub(crate) methods: Vec<MethodModel>,
}

/// One method courier implements.
pub(crate) struct MethodModel {
    /// The signature with courier's parameter attributes removed.
    pub(crate) sig: Signature,
    /// `#[cfg]`-like attributes to repeat on the trait implementation.
    pub(crate) cfg_attrs: Vec<Attribute>,
    /// Rust's own attributes of the method (docs, `cfg`, lints,
    /// `deprecated`), repeated on the client's inherent method.
    pub(crate) kept_attrs: Vec<Attribute>,
    pub(crate) verb: Verb,
    /// Client prefix and method template, e.g. `/api/v1/users/{id}`.
    pub(crate) full_path: String,
    pub(crate) pieces: Vec<Piece>,
    pub(crate) params: Vec<Param>,
    /// The decoder type for the return value.
    pub(crate) decoder: TokenStream,
    pub(crate) idempotent: bool,
    /// False for `#[auth(none)]`: the client's credentials are not sent.
    pub(crate) auth: bool,
    /// The method-level policy attributes.
    pub(crate) policy: Policies,
    /// The codec type of the `#[body]` and of a decoded return value.
    pub(crate) codec: TokenStream,
    /// False with a streamed body: never retried, hedged, or given to a
    /// fallback (the body is gone).
    pub(crate) replayable: bool,
}

/// A piece of a path template.
pub(crate) enum Piece {
    Literal(String),
    Param {
        name: String,
        /// The placeholder is a whole segment (`/{id}/`).
        whole_segment: bool,
    },
    /// A segment made of several placeholders (and maybe dots) starts:
    /// once it is complete, the runtime checks it is not a dot segment.
    SegmentStart,
    /// The end of such a segment; `params` names its placeholders.
    SegmentEnd {
        params: String,
    },
}

/// A parameter and what it becomes in the request.
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    pub(crate) kind: ParamKind,
}

/// Where a parameter goes.
pub(crate) enum ParamKind {
    /// Fills the placeholder of this name.
    Path(String),
    Query {
        name: String,
        shape: Shape,
        /// A sequence written as one `name=a,b` pair.
        csv: bool,
    },
    /// A `Serialize` value whose fields are the query pairs.
    QueryMap {
        /// The parameter's name, for errors.
        name: String,
        /// `Option<T>`: nothing when `None`.
        optional: bool,
        /// `outer.inner` (false) or `outer[inner]` (true).
        brackets: bool,
        csv: bool,
    },
    Header {
        /// Lower-case, checked header name.
        name: String,
        optional: bool,
    },
    Body,
    /// A `BodyStream` body, read once.
    StreamBody,
    Form,
    /// A part (or parts) of a `multipart/form-data` body.
    Multipart {
        name: String,
        shape: Shape,
        /// The parts are `StreamPart`s, moved into the body and read once.
        streamed: bool,
    },
}

/// How a query value is written.
#[derive(Clone, Copy)]
pub(crate) enum Shape {
    /// `name=value`
    One,
    /// left out when `None`
    Optional,
    /// `name=a&name=b`
    Repeated,
    /// left out when `None`, repeated when `Some`
    OptionalRepeated,
}

// ===== the client =====

impl ClientModel {
    /// Parses and validates; on failure returns every error and the trait
    /// cleaned of courier's attributes (so the fallback expansion adds no
    /// second error).
    pub(crate) fn parse(
        args: TokenStream,
        mut item: ItemTrait,
    ) -> Result<ClientModel, Box<(syn::Error, ItemTrait)>> {
        let mut errors = Errors::default();
        let args = ClientArgs::parse(args, &mut errors);
        let prefix = match &args.path {
            Some(lit) => check_prefix(lit, &mut errors),
            None => String::new(),
        };

        if let Some(param) = item.generics.params.first() {
            errors.at(param, "a client trait cannot be generic");
        }
        if let Some(unsafety) = &item.unsafety {
            errors.at(unsafety, "a client trait cannot be `unsafe`");
        }
        let mut policy = Policies::default();
        let mut codec = None;
        item.attrs
            .retain(|attr| keep_trait_attr(attr, &mut policy, &mut codec, &mut errors));
        if let Err(e) = policy.check_client_level() {
            errors.push(e);
        }

        let mut methods = Vec::new();
        for trait_item in &mut item.items {
            match trait_item {
                TraitItem::Fn(method) => {
                    if let Some(model) =
                        MethodModel::parse(method, &prefix, codec.as_ref(), &mut errors)
                    {
                        methods.push(model);
                    }
                }
                other => errors.at(
                    &*other,
                    "a client trait holds only methods: an associated type or constant \
                     cannot be sent over HTTP",
                ),
            }
        }

        match errors.0 {
            Some(e) => Err(Box::new((e, item))),
            None => Ok(ClientModel {
                name: args.name.map(|n| n.value()).unwrap_or_default(),
                url: args.url.map(|u| u.value()),
                item,
                policy,
                methods,
            }),
        }
    }
}

/// `#[client(name = "…", path = "…", url = "…")]`
struct ClientArgs {
    name: Option<LitStr>,
    path: Option<LitStr>,
    url: Option<LitStr>,
}

impl ClientArgs {
    fn parse(args: TokenStream, errors: &mut Errors) -> ClientArgs {
        let mut out = ClientArgs {
            name: None,
            path: None,
            url: None,
        };
        let parser = syn::meta::parser(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(Ident::to_string)
                .unwrap_or_default();
            let slot = match key.as_str() {
                "name" => &mut out.name,
                "path" => &mut out.path,
                "url" => &mut out.url,
                _ => {
                    return Err(meta.error(
                        "unknown #[client] argument; expected `name = \"…\"`, `path = \"…\"` \
                         or `url = \"…\"`",
                    ));
                }
            };
            if slot.is_some() {
                return Err(meta.error(format!("`{key}` is given twice")));
            }
            *slot = Some(meta.value()?.parse::<LitStr>()?);
            Ok(())
        });
        if let Err(e) = syn::parse::Parser::parse2(parser, args) {
            errors.push(e);
            return out;
        }
        match &out.name {
            None => errors.push(syn::Error::new(
                Span::call_site(),
                "#[client] needs the service's logical name: #[client(name = \"user-service\")]",
            )),
            Some(name) => {
                let value = name.value();
                let ok = !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !ok {
                    errors.at(
                        name,
                        "the service name must be non-empty and use only ASCII letters, digits, \
                         `-`, `_` and `.` (it is a discovery key and a config key)",
                    );
                }
            }
        }
        if let Some(url) = &out.url {
            let value = url.value();
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                errors.at(url, "`url` must be an absolute http:// or https:// URL");
            }
        }
        out
    }
}

fn attr_name(attr: &Attribute) -> Option<String> {
    attr.path().get_ident().map(Ident::to_string)
}

/// Reads the trait-level policy attributes; keeps Rust's own attributes
/// and any path attribute (`#[tracing::…]`); rejects an unknown single-word
/// attribute, which is most likely a typo.
fn keep_trait_attr(
    attr: &Attribute,
    policy: &mut Policies,
    codec: &mut Option<syn::Path>,
    errors: &mut Errors,
) -> bool {
    match attr_name(attr) {
        Some(name) if PASSTHROUGH.contains(&name.as_str()) => true,
        None => true,
        Some(name) if name == "codec" => {
            parse_codec(attr, codec, errors);
            false
        }
        Some(name) if is_policy_attr(&name) => {
            if let Err(e) = policy.parse(attr, &name) {
                errors.push(e);
            }
            false
        }
        Some(name) => {
            let hint = if Verb::from_attribute(&name).is_some()
                || matches!(name.as_str(), "idempotent" | "auth")
            {
                "; it belongs on a method"
            } else {
                ""
            };
            errors.at(
                attr,
                format!(
                    "unknown attribute `#[{name}]` on a client trait{hint}; courier accepts \
                     codec(Type), {}, and Rust's own ({}) are kept",
                    policy_attr_names(),
                    PASSTHROUGH.join(", ")
                ),
            );
            false
        }
    }
}

// ===== methods =====

impl MethodModel {
    /// Parses one trait method and strips courier's attributes from it.
    /// `None` for a provided method that courier leaves alone, or on error.
    fn parse(
        method: &mut TraitItemFn,
        prefix: &str,
        trait_codec: Option<&syn::Path>,
        errors: &mut Errors,
    ) -> Option<MethodModel> {
        let before = errors.1;
        let mut codec_attr: Option<(Attribute, syn::Path)> = None;
        let mut verb: Option<(Verb, LitStr, String)> = None;
        let mut idempotent = false;
        let mut auth_none = false;
        let mut policy = Policies::default();
        let mut cfg_attrs = Vec::new();
        let mut courier_attr_seen = false;

        method.attrs.retain(|attr| {
            let Some(name) = attr_name(attr) else {
                return true;
            };
            if let Some(v) = Verb::from_attribute(&name) {
                courier_attr_seen = true;
                match attr.parse_args::<LitStr>() {
                    Ok(lit) => {
                        if let Some((_, _, first)) = &verb {
                            errors.at(
                                attr,
                                format!("a method has one verb, and `#[{first}]` is already given"),
                            );
                        } else {
                            verb = Some((v, lit, name));
                        }
                    }
                    Err(_) => errors.at(
                        attr,
                        format!("expected a path template: #[{name}(\"/users/{{id}}\")]"),
                    ),
                }
                return false;
            }
            match name.as_str() {
                "idempotent" => {
                    courier_attr_seen = true;
                    if let Err(e) = attr.meta.require_path_only() {
                        errors.push(e);
                    }
                    idempotent = true;
                    false
                }
                "codec" => {
                    courier_attr_seen = true;
                    let mut path = codec_attr.as_ref().map(|(_, p)| p.clone());
                    let was_set = path.is_some();
                    parse_codec(attr, &mut path, errors);
                    if let (false, Some(path)) = (was_set, path) {
                        codec_attr = Some((attr.clone(), path));
                    }
                    false
                }
                "auth" => {
                    courier_attr_seen = true;
                    match parse_auth(attr) {
                        Err(e) => errors.push(e),
                        Ok(()) if auth_none => {
                            errors.at(attr, "`#[auth(none)]` is given twice");
                        }
                        Ok(()) => auth_none = true,
                    }
                    false
                }
                n if is_policy_attr(n) => {
                    courier_attr_seen = true;
                    if let Err(e) = policy.parse(attr, n) {
                        errors.push(e);
                    }
                    false
                }
                "cfg" | "cfg_attr" => {
                    cfg_attrs.push(attr.clone());
                    true
                }
                n if PASSTHROUGH.contains(&n) => true,
                _ => {
                    courier_attr_seen = true;
                    errors.at(
                        attr,
                        format!(
                            "unknown attribute `#[{name}]` on a client method; courier accepts \
                             {}, and Rust's own ({}) are kept",
                            method_attrs(),
                            PASSTHROUGH.join(", ")
                        ),
                    );
                    false
                }
            }
        });

        let Some((verb, template, _)) = verb else {
            if method.default.is_some() && !courier_attr_seen {
                // A provided method (a helper written in terms of the others):
                // courier leaves it to the trait.
                return None;
            }
            if errors.1 == before {
                // (A typo such as `#[gett]` was reported already.)
                errors.at(
                    &method.sig.ident,
                    format!(
                        "`{}` has no HTTP verb: add one of #[get(\"/path\")], #[post(…)], \
                         #[put(…)], #[patch(…)], #[delete(…)] or #[head(…)]",
                        method.sig.ident
                    ),
                );
            }
            strip_param_attrs(&mut method.sig);
            return None;
        };

        if let Some(body) = &method.default {
            errors.at(
                body,
                "a client method has no body: courier generates it from the attributes",
            );
        }
        check_signature(&method.sig, errors);
        if matches!(verb, Verb::Post | Verb::Patch) && !idempotent {
            check_no_replay(&policy, verb.as_str(), errors);
        }

        let pieces = match parse_template(&template.value()) {
            Ok(pieces) => pieces,
            Err(message) => {
                errors.at(&template, message);
                // Without the placeholders, checking the parameters against
                // them would only add noise.
                strip_param_attrs(&mut method.sig);
                return None;
            }
        };
        let codec = match codec_attr.as_ref().map(|(_, p)| p).or(trait_codec) {
            Some(path) => quote_spanned!(path.span()=> #path),
            None => quote!(::courier::__private::Json),
        };
        let params = parse_params(&mut method.sig, &pieces, &template, errors);
        let mut decodes = false;
        let decoder = return_decoder(&method.sig, verb, &codec, &mut decodes, errors);
        let replayable = !params.iter().any(|p| {
            matches!(
                p.kind,
                ParamKind::StreamBody | ParamKind::Multipart { streamed: true, .. }
            )
        });
        if !replayable {
            for what in ["retry", "hedge"] {
                if let Some(attr) = policy.enabled_attr(what) {
                    errors.at(
                        attr,
                        format!(
                            "`#[{what}]` on a method with a streamed body: the stream is read \
                             once as it is sent, so the request cannot be sent again (such a \
                             method is never retried or hedged)"
                        ),
                    );
                }
            }
        }
        if let Some((attr, _)) = &codec_attr {
            let encodes = params.iter().any(|p| matches!(p.kind, ParamKind::Body));
            if !encodes && !decodes && decoder.is_some() {
                errors.at(
                    attr,
                    "`#[codec]` has nothing to do here: the method has no `#[body]`, and its \
                     return value is not decoded (`()`, `String` and `Bytes` are the body as it \
                     is)",
                );
            }
        }

        if errors.1 > before {
            return None;
        }
        Some(MethodModel {
            sig: method.sig.clone(),
            cfg_attrs,
            kept_attrs: method
                .attrs
                .iter()
                .filter(|a| attr_name(a).is_some_and(|n| PASSTHROUGH.contains(&n.as_str())))
                .cloned()
                .collect(),
            verb,
            full_path: format!("{prefix}{}", template.value()),
            pieces: mark_composite_segments(with_prefix(prefix, pieces)),
            params,
            decoder: decoder.unwrap_or_default(),
            idempotent,
            auth: !auth_none,
            policy,
            codec,
            replayable,
        })
    }
}

/// `#[auth(none)]`, the one form: the method is a public endpoint, sent
/// without the client's credentials.
fn parse_auth(attr: &Attribute) -> syn::Result<()> {
    let expected = "expected `#[auth(none)]`: the only per-method auth setting turns the \
                    client's credentials off for a public endpoint (credentials themselves are \
                    set with `.auth(…)` on the builder)";
    match &attr.meta {
        syn::Meta::List(list) => {
            let ident: Ident = syn::parse2(list.tokens.clone())
                .map_err(|_| syn::Error::new_spanned(&list.tokens, expected))?;
            if ident == "none" {
                Ok(())
            } else {
                Err(syn::Error::new_spanned(ident, expected))
            }
        }
        other => Err(syn::Error::new_spanned(other, expected)),
    }
}

/// `#[codec(path::To::Type)]`, once.
fn parse_codec(attr: &Attribute, codec: &mut Option<syn::Path>, errors: &mut Errors) {
    match attr.parse_args::<syn::Path>() {
        Ok(_) if codec.is_some() => errors.at(attr, "`#[codec]` is given twice"),
        Ok(path) => *codec = Some(path),
        Err(_) => errors.at(
            attr,
            "expected a codec type: `#[codec(courier::codec::Text)]` (Json, Form, Text, Binary, \
             MessagePack, or your own type implementing `courier::codec::Codec`)",
        ),
    }
}

/// A method-level `#[retry]` or `#[hedge]` on a write that is not
/// `#[idempotent]` would replay it.
fn check_no_replay(policy: &Policies, verb: &str, errors: &mut Errors) {
    for what in ["retry", "hedge"] {
        if let Some(attr) = policy.enabled_attr(what) {
            errors.at(
                attr,
                format!(
                    "`#[{what}]` on a {verb} would replay a write that may already have been \
                     applied, and a replayed write can duplicate it; mark the method \
                     `#[idempotent]` if repeating it is safe (an idempotency key, say)"
                ),
            );
        }
    }
}

fn with_prefix(prefix: &str, mut pieces: Vec<Piece>) -> Vec<Piece> {
    if prefix.is_empty() {
        return pieces;
    }
    match pieces.first_mut() {
        Some(Piece::Literal(first)) => first.insert_str(0, prefix),
        _ => pieces.insert(0, Piece::Literal(prefix.to_owned())),
    }
    pieces
}

/// Wraps every segment that only its placeholders' values decide (several
/// placeholders, `{dir}{name}`, or placeholders and dots, `{name}.`) in
/// `SegmentStart`/`SegmentEnd`, so the runtime checks the finished segment:
/// `(".", ".")` must not make `..`, whatever each value is alone. A segment
/// with any other literal character can never be a dot segment, and a lone
/// placeholder is checked on its own.
fn mark_composite_segments(pieces: Vec<Piece>) -> Vec<Piece> {
    // Split literals so that every `/` is a piece of its own.
    let mut items = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Literal(text) => {
                let mut rest = text.as_str();
                while let Some(i) = rest.find('/') {
                    if i > 0 {
                        items.push(Piece::Literal(rest[..i].to_owned()));
                    }
                    items.push(Piece::Literal("/".to_owned()));
                    rest = &rest[i + 1..];
                }
                if !rest.is_empty() {
                    items.push(Piece::Literal(rest.to_owned()));
                }
            }
            other => items.push(other),
        }
    }
    let mut out: Vec<Piece> = Vec::new();
    let mut segment: Vec<Piece> = Vec::new();
    let flush = |segment: &mut Vec<Piece>, out: &mut Vec<Piece>| {
        let params: Vec<&str> = segment
            .iter()
            .filter_map(|p| match p {
                Piece::Param { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let only_dots = segment.iter().all(|p| match p {
            Piece::Literal(text) => text
                .replace("%2e", ".")
                .replace("%2E", ".")
                .chars()
                .all(|c| c == '.'),
            _ => true,
        });
        let composite = !params.is_empty() && segment.len() > 1 && only_dots;
        if composite {
            let params = params.join("`, `");
            out.push(Piece::SegmentStart);
            out.append(segment);
            out.push(Piece::SegmentEnd { params });
        } else {
            out.append(segment);
        }
    };
    for item in items {
        if matches!(&item, Piece::Literal(t) if t == "/") {
            flush(&mut segment, &mut out);
            out.push(item);
        } else {
            segment.push(item);
        }
    }
    flush(&mut segment, &mut out);
    // Join adjacent literals back: one push per literal run at run time.
    let mut joined: Vec<Piece> = Vec::with_capacity(out.len());
    for piece in out {
        match (joined.last_mut(), piece) {
            (Some(Piece::Literal(last)), Piece::Literal(next)) => last.push_str(&next),
            (_, piece) => joined.push(piece),
        }
    }
    joined
}

/// `async fn name(&self, …) -> …`, nothing else.
fn check_signature(sig: &Signature, errors: &mut Errors) {
    if sig.ident == "builder" {
        errors.at(
            &sig.ident,
            "a client method cannot be named `builder`: the generated client's \
             `builder()` starts building it",
        );
    }
    if sig.asyncness.is_none() {
        errors.at(
            sig.fn_token,
            format!("a client method must be `async fn {}(&self, …)`", sig.ident),
        );
    }
    if let Some(c) = &sig.constness {
        errors.at(c, "a client method cannot be `const`");
    }
    if !matches!(sig.safety, syn::Safety::Default) {
        errors.at(sig.fn_token, "a client method cannot be `unsafe` or `safe`");
    }
    if let Some(abi) = &sig.abi {
        errors.at(abi, "a client method cannot have an ABI");
    }
    if let Some(v) = &sig.variadic {
        errors.at(v, "a client method cannot be variadic");
    }
    for param in &sig.generics.params {
        if !matches!(param, syn::GenericParam::Lifetime(_)) {
            errors.at(
                param,
                "a client method cannot have type or const parameters: the trait must stay \
                 usable as `dyn Trait`",
            );
        }
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r))
            if matches!(r.kind, syn::ReceiverKind::Reference(_, _, None))
                && r.mutability.is_none() => {}
        Some(FnArg::Receiver(r)) => errors.at(
            r,
            format!(
                "a client method takes `&self`: `async fn {}(&self, …)`",
                sig.ident
            ),
        ),
        _ => errors.at(
            &sig.ident,
            format!(
                "a client method takes `&self`: `async fn {}(&self, …)`",
                sig.ident
            ),
        ),
    }
}

// ===== path templates =====

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%".contains(c)
}

/// Splits a template into literals and placeholders, refusing what would make
/// a malformed or ambiguous URL.
fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    if !template.is_empty() && !template.starts_with('/') {
        return Err(format!("the path `{template}` must start with `/`"));
    }
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut names: Vec<String> = Vec::new();
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => {
                let rest = &template[i + 1..];
                let Some(end) = rest.find('}') else {
                    return Err(format!("unclosed `{{` in the path `{template}`"));
                };
                let name = &rest[..end];
                if name.is_empty() {
                    return Err(format!(
                        "empty placeholder `{{}}` in the path `{template}`: name it after a \
                         parameter, like `{{id}}`"
                    ));
                }
                if !is_ident(name) {
                    return Err(format!(
                        "placeholder `{{{name}}}` must be a parameter name (letters, digits, `_`)"
                    ));
                }
                if names.iter().any(|n| n == name) {
                    return Err(format!(
                        "placeholder `{{{name}}}` appears twice in the path"
                    ));
                }
                names.push(name.to_owned());
                let after = &rest[end + 1..];
                let whole_segment =
                    literal.ends_with('/') && (after.is_empty() || after.starts_with('/'));
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Param {
                    name: name.to_owned(),
                    whole_segment,
                });
                for _ in 0..=name.len() {
                    chars.next();
                }
            }
            '}' => return Err(format!("unmatched `}}` in the path `{template}`")),
            '?' => {
                return Err(
                    "a path cannot hold a query string: add #[query] parameters instead".to_owned(),
                );
            }
            '#' => return Err("a path cannot hold a fragment (`#`)".to_owned()),
            '%' => {
                let hex: String = template[i + 1..].chars().take(2).collect();
                if hex.len() != 2 || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                    return Err(format!(
                        "`%` in the path `{template}` must start an escape like `%20`"
                    ));
                }
                literal.push(c);
            }
            c if is_path_char(c) => literal.push(c),
            c => {
                return Err(format!(
                    "{c:?} cannot appear in a URL path; percent-encode it or pass it as a \
                     parameter"
                ));
            }
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    // Literal dot segments (a placeholder stands for an unknown, non-dot
    // part here; segments that placeholders decide are checked at run time).
    let shape: String = pieces
        .iter()
        .map(|piece| match piece {
            Piece::Literal(text) => text.as_str(),
            _ => "{}",
        })
        .collect();
    if shape.split('/').any(|seg| {
        let seg = seg.replace("%2e", ".").replace("%2E", ".");
        seg == "." || seg == ".."
    }) {
        return Err(format!(
            "the path `{template}` has a `.` or `..` segment (also when written `%2e`)"
        ));
    }
    Ok(pieces)
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The client `path` prefix: a literal path without placeholders, stored
/// without a trailing slash.
fn check_prefix(lit: &LitStr, errors: &mut Errors) -> String {
    let value = lit.value();
    match parse_template(&value) {
        Ok(pieces) if pieces.iter().any(|p| matches!(p, Piece::Param { .. })) => {
            errors.at(lit, "the client `path` prefix cannot have placeholders");
            String::new()
        }
        Ok(_) => value.trim_end_matches('/').to_owned(),
        Err(message) => {
            errors.at(lit, message);
            String::new()
        }
    }
}

// ===== parameters =====

/// Removes every attribute courier would read (or reject) from the
/// parameters, for a method whose parameters are not checked further.
fn strip_param_attrs(sig: &mut Signature) {
    for input in &mut sig.inputs {
        if let FnArg::Typed(pt) = input {
            pt.attrs
                .retain(|a| attr_name(a).is_none_or(|n| PASSTHROUGH.contains(&n.as_str())));
        }
    }
}

fn parse_params(
    sig: &mut Signature,
    pieces: &[Piece],
    template: &LitStr,
    errors: &mut Errors,
) -> Vec<Param> {
    let mut params = Vec::new();
    let mut body: Option<(Ident, bool)> = None;
    for input in sig.inputs.iter_mut() {
        let FnArg::Typed(pt) = input else { continue };
        let ident = match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => pi.ident.clone(),
            other => {
                errors.at(other, "a client method parameter must be a plain name");
                continue;
            }
        };
        let mut kind: Option<ParamKind> = None;
        let mut kind_attr: Option<Attribute> = None;
        let mut attrs_error = false;
        let ty = (*pt.ty).clone();
        pt.attrs.retain(|attr| {
            let name = attr_name(attr).unwrap_or_default();
            let parsed = match name.as_str() {
                "query" => query_kind(attr, &ident, &ty),
                "header" => attr
                    .parse_args::<LitStr>()
                    .map_err(|_| {
                        syn::Error::new_spanned(
                            attr,
                            "expected the header's name: #[header(\"X-Request-Id\")]",
                        )
                    })
                    .and_then(|lit| {
                        let value = lit.value();
                        if value.is_empty() || !value.chars().all(is_token_char) {
                            return Err(syn::Error::new_spanned(
                                &lit,
                                format!("`{value}` is not a valid header name"),
                            ));
                        }
                        Ok(ParamKind::Header {
                            name: value.to_ascii_lowercase(),
                            optional: option_inner(&ty).is_some(),
                        })
                    }),
                "body" => attr.meta.require_path_only().and_then(|_| body_kind(&ty)),
                "form" => attr.meta.require_path_only().map(|_| ParamKind::Form),
                "multipart" => multipart_kind(attr, &ident, &ty),
                "path" => optional_name(attr, &ident).map(ParamKind::Path),
                _ if PASSTHROUGH.contains(&name.as_str()) => return true,
                _ => Err(syn::Error::new_spanned(
                    attr,
                    format!("unknown parameter attribute; courier accepts {PARAM_ATTRS}"),
                )),
            };
            match parsed {
                Ok(_) if kind.is_some() => {
                    errors.at(
                        attr,
                        "a parameter goes to one place: it already has an attribute",
                    );
                    attrs_error = true;
                }
                Ok(k) => {
                    kind = Some(k);
                    kind_attr = Some(attr.clone());
                }
                Err(e) => {
                    errors.push(e);
                    attrs_error = true;
                }
            }
            false
        });
        if attrs_error {
            continue;
        }
        let kind = match kind {
            Some(kind) => kind,
            None => {
                let name = ident.to_string();
                let name = name.strip_prefix("r#").unwrap_or(&name).to_owned();
                if placeholder_names(pieces).any(|p| p == name) {
                    ParamKind::Path(name)
                } else {
                    errors.at(
                        &ident,
                        format!(
                            "parameter `{name}` is used nowhere: name a `{{{name}}}` placeholder \
                             in the path, or mark it {PARAM_ATTRS}"
                        ),
                    );
                    continue;
                }
            }
        };
        match &kind {
            ParamKind::Body
            | ParamKind::StreamBody
            | ParamKind::Form
            | ParamKind::Multipart { .. } => {
                let multipart = matches!(kind, ParamKind::Multipart { .. });
                if let Some((first, first_multipart)) = &body
                    && !(multipart && *first_multipart)
                {
                    errors.at(
                        kind_attr
                            .as_ref()
                            .map_or_else(|| ident.to_token_stream(), ToTokens::to_token_stream),
                        format!(
                            "a request has at most one body, and `{first}` is already the body"
                        ),
                    );
                } else if body.is_none() {
                    body = Some((ident.clone(), multipart));
                }
            }
            ParamKind::Path(name) => {
                if !placeholder_names(pieces).any(|p| p == name) {
                    errors.at(
                        kind_attr
                            .as_ref()
                            .map_or_else(|| ident.to_token_stream(), ToTokens::to_token_stream),
                        format!("the path has no `{{{name}}}` placeholder"),
                    );
                }
                if option_inner(&ty).is_some() {
                    errors.at(
                        &ty,
                        "a path parameter cannot be optional: the path needs a value",
                    );
                }
            }
            _ => {}
        }
        params.push(Param { ident, ty, kind });
    }
    for name in placeholder_names(pieces) {
        let used = params
            .iter()
            .filter(|p| matches!(&p.kind, ParamKind::Path(n) if n == name))
            .count();
        if used == 0 {
            errors.at(
                template,
                format!("placeholder `{{{name}}}` has no parameter: add `{name}: …` to the method"),
            );
        } else if used > 1 {
            errors.at(
                template,
                format!("placeholder `{{{name}}}` is filled by two parameters"),
            );
        }
    }
    params
}

fn placeholder_names(pieces: &[Piece]) -> impl Iterator<Item = &str> {
    pieces.iter().filter_map(|p| match p {
        Piece::Param { name, .. } => Some(name.as_str()),
        _ => None,
    })
}

/// What `#[query(…)]` says, each with its token for errors.
#[derive(Default)]
struct QueryArgs {
    name: Option<LitStr>,
    map: Option<Ident>,
    /// `nested = "brackets"` (true) or `"dots"`.
    nested: Option<(bool, LitStr)>,
    /// `format = "csv"` (true) or `"multi"`.
    format: Option<(bool, LitStr)>,
}

/// Parses `#[query]`, `#[query("name")]`, `#[query("name", format = "csv")]`,
/// `#[query(map)]`, `#[query(map, nested = "brackets", format = "csv")]`.
fn query_args(attr: &Attribute) -> syn::Result<QueryArgs> {
    let mut args = QueryArgs::default();
    if let syn::Meta::Path(_) = attr.meta {
        return Ok(args);
    }
    attr.parse_args_with(|input: syn::parse::ParseStream<'_>| {
        let mut first = true;
        while !input.is_empty() {
            if input.peek(LitStr) {
                let lit: LitStr = input.parse()?;
                if !first {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        "the name comes first: #[query(\"name\", format = \"csv\")]",
                    ));
                }
                if lit.value().is_empty() {
                    return Err(syn::Error::new_spanned(lit, "the name cannot be empty"));
                }
                args.name = Some(lit);
            } else {
                let key: Ident = input.parse()?;
                let seen = match key.to_string().as_str() {
                    "map" => args.map.is_some(),
                    "nested" => args.nested.is_some(),
                    "format" => args.format.is_some(),
                    _ => false,
                };
                if seen {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("`{key}` is given twice"),
                    ));
                }
                match key.to_string().as_str() {
                    "map" => args.map = Some(key),
                    "nested" => {
                        input.parse::<syn::Token![=]>()?;
                        let lit: LitStr = input.parse()?;
                        let brackets = match lit.value().as_str() {
                            "dots" => false,
                            "brackets" => true,
                            other => {
                                return Err(syn::Error::new_spanned(
                                    &lit,
                                    format!(
                                        "`nested` is \"dots\" (outer.inner=…) or \"brackets\" \
                                         (outer[inner]=…), not \"{other}\""
                                    ),
                                ));
                            }
                        };
                        args.nested = Some((brackets, lit));
                    }
                    "format" => {
                        input.parse::<syn::Token![=]>()?;
                        let lit: LitStr = input.parse()?;
                        let csv = match lit.value().as_str() {
                            "multi" => false,
                            "csv" => true,
                            other => {
                                return Err(syn::Error::new_spanned(
                                    &lit,
                                    format!(
                                        "`format` is \"multi\" (name=a&name=b) or \"csv\" \
                                         (name=a,b), not \"{other}\""
                                    ),
                                ));
                            }
                        };
                        args.format = Some((csv, lit));
                    }
                    other => {
                        return Err(syn::Error::new(
                            key.span(),
                            format!(
                                "unknown #[query] argument `{other}`; expected a name (\"q\"), \
                                 `map`, `nested = \"dots\"|\"brackets\"` or \
                                 `format = \"multi\"|\"csv\"`"
                            ),
                        ));
                    }
                }
            }
            first = false;
            if !input.is_empty() {
                input.parse::<syn::Token![,]>()?;
            }
        }
        Ok(())
    })?;
    Ok(args)
}

/// `#[query(…)]` on a parameter of type `ty`: a pair (or pairs) of its own
/// name, or a query map.
fn query_kind(attr: &Attribute, ident: &Ident, ty: &Type) -> syn::Result<ParamKind> {
    let args = query_args(attr)?;
    let own = ident.to_string();
    let own = own.strip_prefix("r#").unwrap_or(&own).to_owned();
    let csv = args.format.as_ref().is_some_and(|(csv, _)| *csv);
    if args.map.is_some() {
        if let Some(name) = &args.name {
            return Err(syn::Error::new_spanned(
                name,
                "a query map's fields name its pairs: drop the name",
            ));
        }
        let inner = option_inner(ty).unwrap_or(ty);
        if is_sequence(inner) || is_scalar(inner) {
            return Err(syn::Error::new_spanned(
                ty,
                format!(
                    "a query map is a struct or a map whose fields are the pairs, and `{own}` \
                     is {}: use #[query] (with format = \"csv\" to join a sequence)",
                    if is_sequence(inner) {
                        "a sequence"
                    } else {
                        "a single value"
                    }
                ),
            ));
        }
        return Ok(ParamKind::QueryMap {
            name: own,
            optional: option_inner(ty).is_some(),
            brackets: args.nested.is_some_and(|(brackets, _)| brackets),
            csv,
        });
    }
    if let Some((_, lit)) = &args.nested {
        return Err(syn::Error::new_spanned(
            lit,
            "`nested` names a query map's nested fields: #[query(map, nested = \"brackets\")]",
        ));
    }
    let shape = query_shape(ty);
    if let Some((true, lit)) = &args.format
        && matches!(shape, Shape::One | Shape::Optional)
    {
        return Err(syn::Error::new_spanned(
            lit,
            format!(
                "`format = \"csv\"` joins a sequence's items, and `{own}` is not a sequence \
                 (Vec<T>, [T; N], &[T]); for a struct whose fields are the pairs, use \
                 #[query(map)]"
            ),
        ));
    }
    Ok(ParamKind::Query {
        name: args.name.map_or(own, |lit| lit.value()),
        shape,
        csv,
    })
}

/// `#[query]` / `#[query("name")]`: the given name, or the parameter's own.
fn optional_name(attr: &Attribute, ident: &Ident) -> syn::Result<String> {
    match &attr.meta {
        syn::Meta::Path(_) => {
            let name = ident.to_string();
            Ok(name.strip_prefix("r#").unwrap_or(&name).to_owned())
        }
        _ => {
            let lit = attr.parse_args::<LitStr>()?;
            if lit.value().is_empty() {
                return Err(syn::Error::new_spanned(lit, "the name cannot be empty"));
            }
            Ok(lit.value())
        }
    }
}

/// A `#[body]`: a `BodyStream` by value is a streamed body; by reference
/// it cannot be (the stream is read as it is sent).
fn body_kind(ty: &Type) -> syn::Result<ParamKind> {
    let is_stream = |ty: &Type| {
        matches!(peel_group(ty), Type::Path(TypePath { qself: None, path, .. })
            if path.segments.last().is_some_and(|s| s.ident == "BodyStream"))
    };
    match peel_group(ty) {
        Type::Reference(r) if is_stream(&r.elem) => Err(syn::Error::new_spanned(
            ty,
            "a streamed body is given by value (`body: BodyStream`): it is read as it is sent",
        )),
        t if is_stream(t) => Ok(ParamKind::StreamBody),
        _ => Ok(ParamKind::Body),
    }
}

/// `#[multipart]` or `#[multipart("name")]`; bytes must be wrapped in a
/// `Part` (a `Vec<u8>` would be one text part per byte).
fn multipart_kind(attr: &Attribute, ident: &Ident, ty: &Type) -> syn::Result<ParamKind> {
    let name = optional_name(attr, ident)?;
    let shape = query_shape(ty);
    let seq = match shape {
        Shape::Repeated => Some(peel(ty)),
        Shape::OptionalRepeated => option_inner(ty).map(peel),
        _ => None,
    };
    let item = seq.and_then(|seq| match seq {
        Type::Slice(s) => Some(&*s.elem),
        Type::Array(a) => Some(&*a.elem),
        other => generic_arg(other, "Vec"),
    });
    let one = match shape {
        Shape::One => Some(ty),
        Shape::Optional => option_inner(ty),
        _ => item,
    };
    let streamed = one.is_some_and(|t| {
        matches!(peel_group(t), Type::Path(TypePath { qself: None, path, .. })
            if path.segments.last().is_some_and(|s| s.ident == "StreamPart"))
    });
    if item.is_some_and(|item| matches!(peel(item), Type::Path(p) if p.path.is_ident("u8"))) {
        return Err(syn::Error::new_spanned(
            ty,
            "bytes are one part: wrap them in `courier::multipart::Part::bytes(…)` (a sequence \
             is one part per item)",
        ));
    }
    Ok(ParamKind::Multipart {
        name,
        shape,
        streamed,
    })
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Strips references and groups.
fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Reference(r) => peel(&r.elem),
        Type::Group(g) => peel(&g.elem),
        Type::Paren(p) => peel(&p.elem),
        other => other,
    }
}

/// The single type argument of `Name<T>` when the last path segment is
/// `name`.
fn generic_arg<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(TypePath {
        qself: None, path, ..
    }) = peel(ty)
    else {
        return None;
    };
    let last = path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    let first = types.next()?;
    types.next().is_none().then_some(first)
}

fn option_inner(ty: &Type) -> Option<&Type> {
    generic_arg(ty, "Option")
}

/// A type that is one value, never a struct: strings and primitives.
fn is_scalar(ty: &Type) -> bool {
    const SCALARS: &[&str] = &[
        "str", "String", "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16",
        "i32", "i64", "i128", "isize", "f32", "f64",
    ];
    match peel(ty) {
        Type::Path(TypePath {
            qself: None, path, ..
        }) => path
            .segments
            .last()
            .is_some_and(|s| s.arguments.is_none() && SCALARS.iter().any(|n| s.ident == n)),
        Type::Tuple(t) => t.elems.is_empty(),
        _ => false,
    }
}

fn is_sequence(ty: &Type) -> bool {
    matches!(peel(ty), Type::Slice(_) | Type::Array(_)) || generic_arg(ty, "Vec").is_some()
}

fn query_shape(ty: &Type) -> Shape {
    match option_inner(ty) {
        Some(inner) if is_sequence(inner) => Shape::OptionalRepeated,
        Some(_) => Shape::Optional,
        None if is_sequence(ty) => Shape::Repeated,
        None => Shape::One,
    }
}

// ===== return types =====

/// Picks the decoder from the written return type `Result<T, E>`.
fn return_decoder(
    sig: &Signature,
    verb: Verb,
    codec: &TokenStream,
    decodes: &mut bool,
    errors: &mut Errors,
) -> Option<TokenStream> {
    let expected = "a client method returns `Result<T, E>`, where T is `()`, `String`, \
                    `bytes::Bytes`, `courier::BodyStream`, `Option<T>`, `courier::Response<T>` or \
                    a deserializable type, and E is `courier::Error` or implements \
                    `From<courier::Error>`";
    let ReturnType::Type(_, ty) = &sig.output else {
        errors.at(&sig.ident, format!("missing return type: {expected}"));
        return None;
    };
    let ok = match peel_group(ty) {
        Type::Path(TypePath {
            qself: None, path, ..
        }) if path.segments.last().is_some_and(|s| s.ident == "Result") => {
            let last = path.segments.last()?;
            match &last.arguments {
                PathArguments::AngleBracketed(args) => match args.args.first() {
                    Some(GenericArgument::Type(t)) if args.args.len() <= 2 => t,
                    _ => {
                        errors.at(ty, expected);
                        return None;
                    }
                },
                _ => {
                    errors.at(ty, expected);
                    return None;
                }
            }
        }
        _ => {
            errors.at(ty, format!("unsupported return type: {expected}"));
            return None;
        }
    };
    let decoder = decoder_for(ok, codec, decodes, errors, 0)?;
    if verb == Verb::Head && !is_unit(ok) && generic_arg(ok, "Response").is_none_or(|t| !is_unit(t))
    {
        errors.at(
            ok,
            "a HEAD response has no body: return `()` or `courier::Response<()>`",
        );
        return None;
    }
    Some(decoder)
}

fn peel_group(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => peel_group(&g.elem),
        Type::Paren(p) => peel_group(&p.elem),
        other => other,
    }
}

fn is_unit(ty: &Type) -> bool {
    matches!(peel_group(ty), Type::Tuple(t) if t.elems.is_empty())
}

fn decoder_for(
    ty: &Type,
    codec: &TokenStream,
    decodes: &mut bool,
    errors: &mut Errors,
    depth: u8,
) -> Option<TokenStream> {
    let span = ty.span();
    let ty = peel_group(ty);
    if is_unit(ty) {
        return Some(quote_spanned!(span=> ::courier::__private::Unit));
    }
    match ty {
        Type::Path(TypePath {
            qself: None, path, ..
        }) => {
            let last = path.segments.last()?;
            let plain = matches!(last.arguments, PathArguments::None);
            if plain && last.ident == "String" {
                return Some(quote_spanned!(span=> ::courier::__private::Utf8));
            }
            if plain && last.ident == "Bytes" {
                return Some(quote_spanned!(span=> ::courier::__private::RawBytes));
            }
            if plain && last.ident == "BodyStream" {
                return Some(quote_spanned!(span=> ::courier::__private::Streamed));
            }
            if let Some(inner) = generic_arg(ty, "Option") {
                if generic_arg(inner, "Option").is_some() {
                    errors.at(ty, "`Option<Option<T>>` is not a supported return type");
                    return None;
                }
                let inner = decoder_for(inner, codec, decodes, errors, depth + 1)?;
                return Some(quote_spanned!(span=> ::courier::__private::Opt<#inner>));
            }
            if let Some(inner) = generic_arg(ty, "Response") {
                if depth > 0 {
                    errors.at(
                        ty,
                        "`courier::Response<T>` must be the outermost success type",
                    );
                    return None;
                }
                let inner = decoder_for(inner, codec, decodes, errors, depth + 1)?;
                return Some(quote_spanned!(span=> ::courier::__private::Resp<#inner>));
            }
            *decodes = true;
            Some(quote_spanned!(span=> ::courier::__private::Decoded<#codec, #ty>))
        }
        Type::Tuple(_) | Type::Array(_) => {
            *decodes = true;
            Some(quote_spanned!(span=> ::courier::__private::Decoded<#codec, #ty>))
        }
        Type::Reference(_) => {
            errors.at(
                ty,
                "a client method returns owned data: use `String` for `&str`, or an owned type",
            );
            None
        }
        _ => {
            errors.at(ty, "unsupported success type: use `()`, `String`, `bytes::Bytes`, `courier::BodyStream`, `Option<T>`, `courier::Response<T>` or a deserializable type");
            None
        }
    }
}

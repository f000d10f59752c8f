//! The static description of a client that `#[client]` emits
//! ([`ClientDef`], [`MethodDef`], [`Verb`]) and the one policy schema
//! ([`KEYS`]: every key's kind, limits and default) that the macro, the
//! config and [`crate::policy`] share.
//!
//! Both live in the small `courier-spec` crate, which the proc-macro crate
//! can depend on without building the runtime (reqwest, tokio); this module
//! re-exports it. Departure from the design's single `spec.rs`: the macro
//! needs the schema at compile time, and a proc-macro cannot depend on the
//! runtime crate without building all of it for the host.

pub use courier_spec::{
    ClientDef, KEYS, Key, KeyInfo, Kind, MAX_DURATION, MethodDef, Overrides, SECTIONS, Section,
    StatusSet, Value, Verb,
};

pub(crate) use courier_spec::{Raw, check, check_level, key, key_names, section};

/// The `http::Method` of a verb.
pub(crate) fn method_of(verb: Verb) -> http::Method {
    match verb {
        Verb::Get => http::Method::GET,
        Verb::Post => http::Method::POST,
        Verb::Put => http::Method::PUT,
        Verb::Patch => http::Method::PATCH,
        Verb::Delete => http::Method::DELETE,
        Verb::Head => http::Method::HEAD,
        // A verb added to the schema later: its name is a valid method.
        other => http::Method::from_bytes(other.as_str().as_bytes()).unwrap_or_default(),
    }
}

//! Query maps: a `Serialize` value (`#[query(map)] filter: &Filter`)
//! flattened into query pairs, Spring's `@SpringQueryMap` without its
//! holes (nested objects, records, sequences).
//!
//! The value is serialized to a `serde_json::Value` first, then walked:
//!
//! - a struct's (or map's) fields are pairs named after the field (serde's
//!   name, so `#[serde(rename)]` and `rename_all` apply), in the order of
//!   their names (sorted, so the URL is the same whatever serde_json's
//!   features);
//! - `None` (and anything serializing to null, `f64::NAN` included) is
//!   left out;
//! - a nested struct or map names its fields `outer.inner` ([`Nesting::Dots`],
//!   Spring's binding) or `outer[inner]` ([`Nesting::Brackets`], Rails' and
//!   qs's), to any depth;
//! - a sequence of scalars repeats its name (`tag=a&tag=b`), or with
//!   `format = "csv"` is one pair (`tag=a,b`; a comma inside an item is
//!   percent-encoded, so the items stay apart); an empty sequence is left
//!   out;
//! - a unit enum variant is its serde name; strings, numbers and booleans
//!   are their text.
//!
//! What has no query form is an error naming the key, and nothing is sent:
//! a top-level value that is not a struct or map, and a sequence holding
//! structs or sequences.
//!
//! Why through `serde_json::Value` and not a `Serializer` of our own: the
//! walk above is a dozen lines over a value; a serializer is several
//! hundred over serde's 30 methods, for a call that already pays for an
//! allocated URL. serde_qs (brackets, indexed sequences `a[0]=`) and
//! serde_html_form (flat, repeated sequences) each do one of the shapes
//! asked for, and neither the dotted one Spring binds.

use serde::Serialize;
use serde_json::Value;

use crate::Error;

/// How a nested struct's fields are named in a query map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// `outer.inner=…`: what Spring binds to nested objects.
    Dots,
    /// `outer[inner]=…`: what Rails, PHP and qs parse.
    Brackets,
}

/// How a sequence's items are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `name=a&name=b`.
    Multi,
    /// `name=a,b`.
    Csv,
}

/// One pair's value: one text, or the items of a csv sequence (joined by
/// literal commas, each item percent-encoded on its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Text {
    One(String),
    Joined(Vec<String>),
}

/// The pairs `value` flattens to, in order.
///
/// # Errors
/// [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest) naming
/// the parameter and the key that has no query form.
pub(crate) fn pairs<T: Serialize + ?Sized>(
    param: &str,
    value: &T,
    nesting: Nesting,
    format: Format,
) -> Result<Vec<(String, Text)>, Error> {
    let value = serde_json::to_value(value).map_err(|e| {
        Error::invalid_request(format!("query map `{param}` does not serialize")).with_source(e)
    })?;
    let Value::Object(fields) = value else {
        return Err(Error::invalid_request(format!(
            "query map `{param}` must serialize to a struct or a map, not {}",
            kind(&value)
        )));
    };
    let mut out = Vec::new();
    for (name, field) in sorted(&fields) {
        flatten(param, name.clone(), field, nesting, format, &mut out)?;
    }
    Ok(out)
}

fn flatten(
    param: &str,
    key: String,
    value: &Value,
    nesting: Nesting,
    format: Format,
    out: &mut Vec<(String, Text)>,
) -> Result<(), Error> {
    match value {
        Value::Null => {}
        Value::Object(fields) => {
            for (name, field) in sorted(fields) {
                let inner = match nesting {
                    Nesting::Dots => format!("{key}.{name}"),
                    Nesting::Brackets => format!("{key}[{name}]"),
                };
                flatten(param, inner, field, nesting, format, out)?;
            }
        }
        Value::Array(items) => {
            let mut texts = Vec::with_capacity(items.len());
            for item in items {
                match scalar(item) {
                    Some(text) => texts.push(text),
                    None if item.is_null() => {}
                    None => {
                        return Err(Error::invalid_request(format!(
                            "query map `{param}`: `{key}` is a sequence holding {}, which has \
                             no query form (only sequences of strings, numbers, booleans or \
                             unit enum variants do)",
                            kind(item)
                        )));
                    }
                }
            }
            match format {
                Format::Multi => out.extend(texts.into_iter().map(|t| (key.clone(), Text::One(t)))),
                Format::Csv if texts.is_empty() => {}
                Format::Csv => out.push((key, Text::Joined(texts))),
            }
        }
        scalar_value => {
            if let Some(text) = scalar(scalar_value) {
                out.push((key, Text::One(text)));
            }
        }
    }
    Ok(())
}

/// A map's fields by name: the same order whether or not some crate in
/// the build turned on serde_json's `preserve_order`.
fn sorted(fields: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut fields: Vec<_> = fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    fields
}

/// The text of a string, number or boolean.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a struct",
    }
}

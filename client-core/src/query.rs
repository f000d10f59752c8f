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
//! - a sequence of scalars repeats its name (`tag=a&tag=b`; with brackets,
//!   `tag[]=a&tag[]=b`, since Rails and PHP keep only the last of repeated
//!   plain keys), or with `format = "csv"` is one pair (`tag=a,b`; a comma
//!   inside an item is percent-encoded, so the items stay apart); an empty
//!   sequence, and a null item, are left out;
//! - a unit enum variant is its serde name; strings, numbers and booleans
//!   are their text. A variant with data is a nested field
//!   (`sort: By("name")` → `sort.By=name`), as serde writes it;
//! - a top-level null (an `Option` the macro could not see) adds nothing.
//!
//! Numbers are written as serde_json writes them: integers exactly,
//! floats in JSON's form (`1.0`, `1e300`, never `NaN` or infinities, which
//! become null and are left out), and an `f32` widened to `f64` first
//! (`0.1f32` → `0.10000000149011612`). For an exact decimal, use a string
//! or an `f64`.
//!
//! What has no query form is an error naming the key, and nothing is sent:
//! a top-level value that is not a struct or map, a sequence holding
//! structs or sequences, an empty field name, a bracket in a field name
//! under brackets, and two fields that come out as the same key
//! (`"page.size"` beside `page: { size }`), which a server would read as a
//! list.
//!
//! Why through `serde_json::Value` and not a `Serializer` of our own: the
//! walk above is a dozen lines over a value; a serializer is several
//! hundred over serde's 30 methods, for a call that already pays for an
//! allocated URL. serde_qs (brackets, indexed sequences `a[0]=`) and
//! serde_html_form (flat, repeated sequences) each do one of the shapes
//! asked for, and neither the dotted one Spring binds.

use std::collections::BTreeSet;

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
        Error::invalid_request(format!("query map `{param}` does not serialize: {e}"))
            .with_source(e)
    })?;
    let fields = match value {
        Value::Object(fields) => fields,
        // What the macro could not see was an `Option` (an alias, a
        // generic): `None` adds nothing, as an `Option<_>` parameter does.
        Value::Null => return Ok(Vec::new()),
        other => {
            return Err(Error::invalid_request(format!(
                "query map `{param}` must serialize to a struct or a map, not {}",
                kind(&other)
            )));
        }
    };
    let mut walk = Walk {
        param,
        nesting,
        format,
        out: Vec::new(),
        written: BTreeSet::new(),
    };
    for (name, field) in sorted(&fields) {
        walk.name(None, name)?;
        walk.flatten(name.clone(), field)?;
    }
    Ok(walk.out)
}

/// The walk over one map's value.
struct Walk<'p> {
    param: &'p str,
    nesting: Nesting,
    format: Format,
    out: Vec<(String, Text)>,
    /// Every key written so far: two fields that come out as one key
    /// (`"page.size"` beside `page: { size }`) would be read as a list.
    written: BTreeSet<String>,
}

impl Walk<'_> {
    fn refuse(&self, why: String) -> Error {
        Error::invalid_request(format!("query map `{}`: {why}", self.param))
    }

    /// Checks a field's name: not empty, and no brackets in brackets mode
    /// (`a[]` is a list to Rails, `b]c` breaks the nesting).
    fn name(&self, parent: Option<&str>, name: &str) -> Result<(), Error> {
        let at = || parent.map_or_else(String::new, |p| format!(" in `{p}`"));
        if name.is_empty() {
            return Err(self.refuse(format!("a field{} has an empty name", at())));
        }
        if self.nesting == Nesting::Brackets && name.contains(['[', ']']) {
            return Err(self.refuse(format!(
                "the field `{name}`{} has a bracket in its name, which nested = \"brackets\" \
                 would misread",
                at()
            )));
        }
        Ok(())
    }

    /// Records `key` as written by one field, or refuses it if another
    /// field already wrote it.
    fn claim(&mut self, key: &str) -> Result<(), Error> {
        if !self.written.insert(key.to_owned()) {
            return Err(self.refuse(format!(
                "two fields come out as the key `{key}`, which the server would read as one list"
            )));
        }
        Ok(())
    }

    fn flatten(&mut self, key: String, value: &Value) -> Result<(), Error> {
        match value {
            Value::Null => Ok(()),
            Value::Object(fields) => {
                for (name, field) in sorted(fields) {
                    self.name(Some(&key), name)?;
                    let inner = match self.nesting {
                        Nesting::Dots => format!("{key}.{name}"),
                        Nesting::Brackets => format!("{key}[{name}]"),
                    };
                    self.flatten(inner, field)?;
                }
                Ok(())
            }
            Value::Array(items) => {
                let mut texts = Vec::with_capacity(items.len());
                for item in items {
                    match scalar(item) {
                        Some(text) => texts.push(text),
                        None if item.is_null() => {}
                        None => {
                            return Err(self.refuse(format!(
                                "`{key}` is a sequence holding {}, which has no query form \
                                 (only sequences of strings, numbers, booleans or unit enum \
                                 variants do)",
                                kind(item)
                            )));
                        }
                    }
                }
                if texts.is_empty() {
                    return Ok(());
                }
                // Rails, Rack and PHP keep only the last of repeated plain
                // keys; `key[]` is their list. (A csv pair is one value,
                // for a server that splits it: no brackets.)
                let key = match (self.nesting, self.format) {
                    (Nesting::Brackets, Format::Multi) => format!("{key}[]"),
                    _ => key,
                };
                self.claim(&key)?;
                match self.format {
                    Format::Csv => self.out.push((key, Text::Joined(texts))),
                    Format::Multi => self
                        .out
                        .extend(texts.into_iter().map(|t| (key.clone(), Text::One(t)))),
                }
                Ok(())
            }
            scalar_value => {
                if let Some(text) = scalar(scalar_value) {
                    self.claim(&key)?;
                    self.out.push((key, Text::One(text)));
                }
                Ok(())
            }
        }
    }
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

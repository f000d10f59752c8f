//! Tuning policies without recompiling: a TOML file (or string) whose
//! sections override the attributes, client by client and method by method.
//!
//! ```toml
//! [clients.user-service]          # the `name` of #[client]
//! timeout = "2s"
//! retry.max_attempts = 4
//! circuit_breaker.failure_rate = 25
//!
//! [clients.user-service.methods.get]
//! timeout = "300ms"
//! retry.disabled = true
//! ```
//!
//! Keys, at both levels, are those of the attributes, read against the same
//! schema ([`crate::spec::KEYS`]): `timeout`; `retry.{disabled, max_attempts,
//! backoff, attempt_timeout, on}`; `circuit_breaker.{disabled, window,
//! min_calls, failure_rate, slow_call, slow_call_rate, open_for,
//! half_open_calls}`; `rate_limit.{disabled, per_second, burst, max_wait}`;
//! `bulkhead.{disabled, max_concurrent, max_wait}`;
//! `hedge.{disabled, delay, max_extra}`; `log.{level, body_limit}`;
//! `compress.{disabled, min_size}`.
//! Durations are written as in the attributes (`"300ms"`, `"2s"`,
//! `"1m 30s"`, at most a day), a back-off as `"50ms..1s"`, a log level as
//! `"basic"`.
//!
//! Precedence (see [`crate::policy`]): config method level, method
//! attribute, config client level, trait attribute, built-in default.
//!
//! A malformed value or an unknown key is an error naming the key, its line
//! and the source (file path); a section for another client is fine (one file
//! can serve many clients), but a method the client does not have is an
//! error when the client is built, since a misspelt method name would
//! otherwise silently configure nothing.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::spec::{self, Kind, Overrides, Raw, Value};
use crate::{Error, ErrorKind};

/// Policy overrides read from TOML; give it to a client with
/// [`ClientBuilder::config`](crate::ClientBuilder::config).
#[derive(Debug, Clone, Default)]
pub struct Config {
    source: String,
    clients: BTreeMap<String, ClientConfig>,
}

/// One client's section.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientConfig {
    pub(crate) overrides: Overrides,
    pub(crate) methods: BTreeMap<String, Overrides>,
}

impl Config {
    /// Parses a TOML string.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming the key and line of the first problem.
    pub fn from_toml_str(toml: &str) -> Result<Config, Error> {
        Config::parse(toml, "config string")
    }

    /// Reads and parses a TOML file.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the file cannot be read, or naming the
    /// file, key and line of the first problem.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Config, Error> {
        let path = path.as_ref();
        let source = format!("config file `{}`", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorKind::Config, format!("{source}: cannot be read")).with_source(e)
        })?;
        Config::parse(&text, &source)
    }

    fn parse(text: &str, source: &str) -> Result<Config, Error> {
        let document = DeTable::parse(text).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("{source}: {}", e.to_string().trim_end()),
            )
        })?;
        let reader = Reader { text, source };
        let mut clients = BTreeMap::new();
        for (key, value) in document.get_ref().iter() {
            if key.get_ref().as_ref() != "clients" {
                return Err(reader.fail(
                    key.span(),
                    key.get_ref(),
                    "unknown top-level table: courier reads `[clients.<name>]` sections",
                ));
            }
            for (name, section) in reader.table(value, "clients")? {
                let at = format!("clients.{}", name.get_ref());
                let (overrides, methods) = reader.section(section, &at, true)?;
                let mut by_method = BTreeMap::new();
                if let Some(methods) = methods {
                    for (method, section) in reader.table(methods, &format!("{at}.methods"))? {
                        let at = format!("{at}.methods.{}", method.get_ref());
                        let (overrides, _) = reader.section(section, &at, false)?;
                        by_method.insert(method.get_ref().to_string(), overrides);
                    }
                }
                clients.insert(
                    name.get_ref().to_string(),
                    ClientConfig {
                        overrides,
                        methods: by_method,
                    },
                );
            }
        }
        Ok(Config {
            source: source.to_owned(),
            clients,
        })
    }

    /// Where this config came from, for error messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn client(&self, name: &str) -> Option<&ClientConfig> {
        self.clients.get(name)
    }
}

// ===== reading the document against the schema =====

type Entry<'d, 'i> = (
    &'d Spanned<std::borrow::Cow<'i, str>>,
    &'d Spanned<DeValue<'i>>,
);

/// The text (for line numbers) and its name (for messages).
struct Reader<'t> {
    text: &'t str,
    source: &'t str,
}

impl Reader<'_> {
    /// An error at `span`: `<source>: `<at>` (line n): <problem>`.
    fn fail(&self, span: std::ops::Range<usize>, at: &str, problem: &str) -> Error {
        let start = span.start.min(self.text.len());
        let line = self.text[..start].matches('\n').count() + 1;
        Error::new(
            ErrorKind::Config,
            format!("{}: `{at}` (line {line}): {problem}", self.source),
        )
    }

    fn table<'d, 'i>(
        &self,
        value: &'d Spanned<DeValue<'i>>,
        at: &str,
    ) -> Result<impl Iterator<Item = Entry<'d, 'i>>, Error> {
        match value.get_ref() {
            DeValue::Table(table) => Ok(table.iter()),
            other => Err(self.fail(
                value.span(),
                at,
                &format!("expected a table, found a {}", other.type_str()),
            )),
        }
    }

    /// A client's (or a method's) section: its policy level, and its
    /// `methods` table when `methods_allowed`.
    fn section<'d, 'i>(
        &self,
        value: &'d Spanned<DeValue<'i>>,
        at: &str,
        methods_allowed: bool,
    ) -> Result<(Overrides, Option<&'d Spanned<DeValue<'i>>>), Error> {
        let mut level = Overrides::NONE;
        let mut methods = None;
        for (key, value) in self.table(value, at)? {
            let name = key.get_ref().as_ref();
            let here = format!("{at}.{name}");
            if name == "methods" {
                if !methods_allowed {
                    return Err(self.fail(key.span(), &here, "methods do not nest"));
                }
                methods = Some(value);
                continue;
            }
            let Some(section) = spec::section(name) else {
                let sections: Vec<&str> = spec::SECTIONS.iter().map(|s| s.name).collect();
                return Err(self.fail(
                    key.span(),
                    &here,
                    &format!(
                        "unknown key; valid keys: {}{}",
                        sections.join(", "),
                        if methods_allowed { ", methods" } else { "" }
                    ),
                ));
            };
            if let Some(single) = section.single {
                let checked = self.value(single.info(), value, &here)?;
                level.set(single, checked);
                continue;
            }
            let mut any_key = false;
            let mut disabled = None;
            for (key, value) in self.table(value, &here)? {
                let name = key.get_ref().as_ref();
                let there = format!("{here}.{name}");
                if name == "disabled" && section.switch.is_some() {
                    match value.get_ref() {
                        DeValue::Boolean(b) => disabled = Some(*b),
                        _ => return Err(self.fail(value.span(), &there, "expected true or false")),
                    }
                    continue;
                }
                let Some(info) = spec::key(section.name, name) else {
                    return Err(self.fail(
                        key.span(),
                        &there,
                        &format!(
                            "unknown key; valid keys: {}, disabled",
                            spec::key_names(section.name)
                        ),
                    ));
                };
                let checked = self.value(info, value, &there)?;
                level.set(info.key, checked);
                any_key = true;
            }
            if let Some(switch) = section.switch {
                match disabled {
                    Some(d) => level.set(switch, Value::Switch(!d)),
                    None if any_key => level.set(switch, Value::Switch(true)),
                    None => {}
                }
            }
            spec::check_level(&level).map_err(|e| self.fail(value.span(), &here, &e))?;
        }
        Ok((level, methods))
    }

    /// One value, checked against its key's kind and range.
    fn value(
        &self,
        info: &spec::KeyInfo,
        value: &Spanned<DeValue<'_>>,
        at: &str,
    ) -> Result<Value, Error> {
        let ints;
        let raw = match value.get_ref() {
            DeValue::String(s) => Raw::Text(s),
            DeValue::Integer(n) => Raw::Int(int(n).unwrap_or(i128::MAX)),
            DeValue::Boolean(b) => Raw::Bool(*b),
            DeValue::Array(items) if info.kind == Kind::Codes => {
                ints = items
                    .iter()
                    .map(|item| match item.get_ref() {
                        DeValue::Integer(n) => Ok(int(n).unwrap_or(i128::MAX)),
                        other => Err(self.fail(
                            item.span(),
                            at,
                            &format!("expected a status number, found a {}", other.type_str()),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Raw::Ints(ints)
            }
            other => {
                return Err(self.fail(
                    value.span(),
                    at,
                    &format!(
                        "expected a value like {}, found a {}",
                        info.kind.example(),
                        other.type_str()
                    ),
                ));
            }
        };
        spec::check(info, &raw).map_err(|e| self.fail(value.span(), at, &e))
    }
}

fn int(n: &toml::de::DeInteger<'_>) -> Option<i128> {
    i128::from_str_radix(n.as_str(), n.radix()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Key, StatusSet};
    use std::time::Duration;

    const FILE: &str = r#"
        [clients.user-service]
        timeout = "2s"
        retry.max_attempts = 4
        retry.on = [503]
        circuit_breaker.disabled = true

        [clients.user-service.methods.get]
        timeout = "300ms"
        retry.disabled = true
        circuit_breaker.window = 50
        bulkhead.max_concurrent = 3

        [clients.other]
        retry.backoff = "10ms..20ms"
    "#;

    fn parsed() -> Config {
        Config::from_toml_str(FILE).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sections_become_levels() {
        let config = parsed();
        let client = config.client("user-service").cloned().unwrap_or_default();
        let level = &client.overrides;
        let ms = |n| Some(Value::Duration(Duration::from_millis(n)));
        assert_eq!(level.get(Key::Timeout), ms(2000));
        assert_eq!(level.get(Key::RetryMaxAttempts), Some(Value::Count(4)));
        assert_eq!(level.get(Key::RetryEnabled), Some(Value::Switch(true)));
        assert_eq!(
            level.get(Key::RetryOn),
            Some(Value::Codes(StatusSet::from_codes(&[503])))
        );
        assert_eq!(level.get(Key::CircuitEnabled), Some(Value::Switch(false)));
        let get = client.methods.get("get").copied().unwrap_or_default();
        assert_eq!(get.get(Key::Timeout), ms(300));
        assert_eq!(get.get(Key::RetryEnabled), Some(Value::Switch(false)));
        assert_eq!(
            get.get(Key::CircuitEnabled),
            Some(Value::Switch(true)),
            "naming a key turns it on"
        );
        assert_eq!(get.get(Key::CircuitWindow), Some(Value::Count(50)));
        assert_eq!(get.get(Key::BulkheadEnabled), Some(Value::Switch(true)));
        let other = config.client("other").cloned().unwrap_or_default();
        assert_eq!(
            other.overrides.get(Key::RetryBackoff),
            Some(Value::Backoff(
                Duration::from_millis(10),
                Duration::from_millis(20)
            ))
        );
    }

    fn error(toml: &str) -> String {
        Config::from_toml_str(toml)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("accepted: {toml}"))
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_source() {
        let e = error("[clients.a]\nretry.max_attempt = 3");
        assert!(
            e.contains("max_attempt") && e.contains("config string"),
            "{e}"
        );
        assert!(e.contains("line 2"), "{e}");
        let e = error("[clients.a]\ntimeout = \"fast\"");
        assert!(e.contains("timeout") && e.contains("fast"), "{e}");
        let e = error("[clients.a]\ncircuit_breaker.failure_rate = 0");
        assert!(e.contains("clients.a.circuit_breaker.failure_rate"), "{e}");
        let e = error("[clients.a.methods.get]\nretry.max_attempts = 11");
        assert!(
            e.contains("clients.a.methods.get.retry.max_attempts"),
            "{e}"
        );
        let e = error("[clients.a]\nretry.backoff = \"1s..10ms\"");
        assert!(e.contains("backoff"), "{e}");
        let e = error("[clients.a]\nretry.on = [42]");
        assert!(e.contains("42"), "{e}");
        let e = error("[client.a]\ntimeout = \"1s\"");
        assert!(e.contains("client"), "{e}");
        let e = error("[clients.a]\ntimeout = \"0s\"");
        assert!(e.contains("clients.a.timeout"), "{e}");
        let e = error("[clients.a]\n\nretry.attempt_timeout = \"300000h\"");
        assert!(
            e.contains("clients.a.retry.attempt_timeout") && e.contains("at most 24h"),
            "{e}"
        );
        assert!(e.contains("line 3"), "{e}");
        let e = error("[clients.a.methods.get]\ncircuit_breaker = { window = 4, min_calls = 10 }");
        assert!(e.contains("min_calls") && e.contains("window"), "{e}");
        let e = error("[clients.a]\nretry.max_attempts = \"3\"");
        assert!(e.contains("expected a number"), "{e}");
        let e =
            error("[clients.a]\nretry.max_attempts = 99999999999999999999999999999999999999999");
        assert!(e.contains("max_attempts"), "{e}");
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let e = Config::from_toml_file("/nonexistent/courier.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("/nonexistent/courier.toml"), "{e}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// TOML-looking lines: real keys and sections with odd values.
        fn line() -> impl Strategy<Value = String> {
            let key = prop::sample::select(vec![
                "timeout",
                "retry.max_attempts",
                "retry.backoff",
                "retry.on",
                "retry.disabled",
                "circuit_breaker.window",
                "circuit_breaker.min_calls",
                "bulkhead.max_wait",
                "hedge.delay",
                "nope",
                "methods",
            ]);
            let value = prop::sample::select(vec![
                "\"300ms\"",
                "\"0s\"",
                "\"99999999999h\"",
                "3",
                "-1",
                "0",
                "99999999999999999999",
                "[503, 42]",
                "[]",
                "true",
                "\"1s..10ms\"",
                "\"a..b\"",
                "{}",
                "1.5",
            ]);
            prop_oneof![
                (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
                prop::sample::select(vec![
                    "[clients.a]",
                    "[clients.a.methods.get]",
                    "[clients.a.methods.get.methods.x]",
                    "[other]",
                    "[clients]",
                ])
                .prop_map(str::to_owned),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any text is a config or a Config error; never a panic.
            #[test]
            fn any_text_parses_or_fails_with_a_config_error(text in any::<String>()) {
                if let Err(e) = Config::from_toml_str(&text) {
                    prop_assert_eq!(e.kind(), ErrorKind::Config);
                }
            }

            /// Plausible files: every error names the source and a key or
            /// the TOML problem, and every accepted value is in range.
            #[test]
            fn plausible_files_parse_or_name_the_problem(lines in prop::collection::vec(line(), 0..8)) {
                let text = lines.join("\n");
                match Config::from_toml_str(&text) {
                    Err(e) => {
                        prop_assert_eq!(e.kind(), ErrorKind::Config);
                        prop_assert!(e.to_string().contains("config string"));
                    }
                    Ok(config) => {
                        for client in config.clients.values() {
                            let levels = std::iter::once(&client.overrides).chain(client.methods.values());
                            for level in levels {
                                if let Some(Value::Count(n)) = level.get(crate::spec::Key::RetryMaxAttempts) {
                                    prop_assert!((1..=10).contains(&n));
                                }
                                if let Some(Value::Duration(d)) = level.get(crate::spec::Key::Timeout) {
                                    prop_assert!(!d.is_zero() && d <= crate::spec::MAX_DURATION);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

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
//! Keys, at both levels: `timeout`; `retry.{disabled, max_attempts, backoff,
//! attempt_timeout, on}`; `circuit_breaker.{disabled, window, min_calls,
//! failure_rate, slow_call, slow_call_rate, open_for, half_open_calls}`;
//! `bulkhead.{disabled, max_concurrent, max_wait}`; `hedge.{disabled, delay,
//! max_extra}`. Durations are written as in the attributes (`"300ms"`,
//! `"2s"`, `"1m 30s"`), a back-off as `"50ms..1s"`.
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
use std::time::Duration;

use serde::Deserialize;

use crate::policy::{
    BulkheadOverrides, CircuitOverrides, HedgeOverrides, Overrides, RetryOverrides, StatusSet,
    circuit, limits,
};
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

    fn parse(toml: &str, source: &str) -> Result<Config, Error> {
        let file: FileSection = toml::from_str(toml).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("{source}: {}", e.to_string().trim_end()),
            )
        })?;
        let mut clients = BTreeMap::new();
        for (name, section) in file.clients {
            let at = format!("clients.{name}");
            let fail = |at: &str, KeyError(key, problem): KeyError| {
                Error::new(
                    ErrorKind::Config,
                    format!("{source}: `{at}.{key}`: {problem}"),
                )
            };
            let overrides = section.to_overrides().map_err(|e| fail(&at, e))?;
            let mut methods = BTreeMap::new();
            for (method, section) in section.methods.unwrap_or_default() {
                let at = format!("{at}.methods.{method}");
                if section.methods.is_some() {
                    let e = KeyError("methods", "methods do not nest".into());
                    return Err(fail(&at, e));
                }
                let overrides = section.to_overrides().map_err(|e| fail(&at, e))?;
                methods.insert(method, overrides);
            }
            clients.insert(name, ClientConfig { overrides, methods });
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

// ===== the file's shape =====

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSection {
    #[serde(default)]
    clients: BTreeMap<String, Section>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Section {
    timeout: Option<Dur>,
    retry: Option<RetrySection>,
    circuit_breaker: Option<CircuitSection>,
    bulkhead: Option<BulkheadSection>,
    hedge: Option<HedgeSection>,
    methods: Option<BTreeMap<String, Section>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySection {
    disabled: Option<bool>,
    max_attempts: Option<u32>,
    backoff: Option<Backoff>,
    attempt_timeout: Option<Dur>,
    on: Option<Vec<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CircuitSection {
    disabled: Option<bool>,
    window: Option<u32>,
    min_calls: Option<u32>,
    failure_rate: Option<u8>,
    slow_call: Option<Dur>,
    slow_call_rate: Option<u8>,
    open_for: Option<Dur>,
    half_open_calls: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkheadSection {
    disabled: Option<bool>,
    max_concurrent: Option<u32>,
    max_wait: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HedgeSection {
    disabled: Option<bool>,
    delay: Option<Dur>,
    max_extra: Option<u32>,
}

/// A duration written as text, `"300ms"`.
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// A back-off range, `"50ms..1s"`.
struct Backoff(Duration, Duration);

impl<'de> Deserialize<'de> for Backoff {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_backoff(&text)
            .map(|(a, b)| Backoff(a, b))
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `"300ms"`, `"2s"`, `"1m 30s"` (humantime's format).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like \"300ms\" or \"2s\" ({e})"))
}

/// Parses `"50ms..1s"`.
pub(crate) fn parse_backoff(text: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("`{text}` is not a back-off range like \"50ms..1s\""))?;
    let (a, b) = (parse_duration(a)?, parse_duration(b)?);
    if a > b {
        return Err(format!(
            "back-off `{text}` must go from the shorter to the longer"
        ));
    }
    Ok((a, b))
}

/// A problem with one key: `(key, what is wrong)`.
struct KeyError(&'static str, String);

fn rate(key: &'static str, v: Option<u8>) -> Result<Option<u8>, KeyError> {
    match v {
        Some(r) if !limits::RATE.contains(&r) => Err(KeyError(
            key,
            format!("{r} is not a percentage from 1 to 100"),
        )),
        v => Ok(v),
    }
}

fn at_least_one(key: &'static str, v: Option<u32>, max: u32) -> Result<Option<u32>, KeyError> {
    match v {
        Some(n) if n == 0 || n > max => Err(KeyError(key, format!("{n} is not from 1 to {max}"))),
        v => Ok(v),
    }
}

fn positive(key: &'static str, v: &Option<Dur>) -> Result<Option<Duration>, KeyError> {
    match v {
        Some(Dur(d)) if d.is_zero() => Err(KeyError(key, "must be more than 0".into())),
        v => Ok(v.as_ref().map(|d| d.0)),
    }
}

/// `Some(false)` for `disabled = true`; `Some(true)` when any key is set.
fn enabled(disabled: Option<bool>, any_key: bool) -> Option<bool> {
    match disabled {
        Some(d) => Some(!d),
        None => any_key.then_some(true),
    }
}

impl Section {
    /// Checks every value's range and turns the section into a level.
    fn to_overrides(&self) -> Result<Overrides, KeyError> {
        let mut o = Overrides::NONE;
        o.timeout = positive("timeout", &self.timeout)?;
        if let Some(r) = &self.retry {
            let max_attempts = r.max_attempts;
            if let Some(n) = max_attempts
                && !limits::MAX_ATTEMPTS.contains(&n)
            {
                return Err(KeyError(
                    "retry.max_attempts",
                    format!("{n} is not from 1 to 10"),
                ));
            }
            let on = match &r.on {
                Some(codes) => {
                    if let Some(bad) = codes.iter().find(|c| !(100..600).contains(*c)) {
                        return Err(KeyError("retry.on", format!("{bad} is not an HTTP status")));
                    }
                    Some(StatusSet::from_codes(codes))
                }
                None => None,
            };
            let keys = RetryOverrides {
                enabled: None,
                max_attempts,
                backoff: r.backoff.as_ref().map(|b| (b.0, b.1)),
                on,
                attempt_timeout: positive("retry.attempt_timeout", &r.attempt_timeout)?,
            };
            o.retry = RetryOverrides {
                enabled: enabled(r.disabled, keys != RetryOverrides::default()),
                ..keys
            };
        }
        if let Some(c) = &self.circuit_breaker {
            let keys = CircuitOverrides {
                enabled: None,
                window: at_least_one("circuit_breaker.window", c.window, circuit::MAX_WINDOW)?,
                min_calls: at_least_one("circuit_breaker.min_calls", c.min_calls, u32::MAX)?,
                failure_rate: rate("circuit_breaker.failure_rate", c.failure_rate)?,
                slow_call: positive("circuit_breaker.slow_call", &c.slow_call)?,
                slow_call_rate: rate("circuit_breaker.slow_call_rate", c.slow_call_rate)?,
                open_for: positive("circuit_breaker.open_for", &c.open_for)?,
                half_open_calls: at_least_one(
                    "circuit_breaker.half_open_calls",
                    c.half_open_calls,
                    circuit::MAX_WINDOW,
                )?,
            };
            o.circuit = CircuitOverrides {
                enabled: enabled(c.disabled, keys != CircuitOverrides::default()),
                ..keys
            };
        }
        if let Some(b) = &self.bulkhead {
            let keys = BulkheadOverrides {
                enabled: None,
                max_concurrent: at_least_one(
                    "bulkhead.max_concurrent",
                    b.max_concurrent,
                    u32::MAX >> 3,
                )?,
                max_wait: b.max_wait.as_ref().map(|d| d.0),
            };
            o.bulkhead = BulkheadOverrides {
                enabled: enabled(b.disabled, keys != BulkheadOverrides::default()),
                ..keys
            };
        }
        if let Some(h) = &self.hedge {
            let keys = HedgeOverrides {
                enabled: None,
                delay: h.delay.as_ref().map(|d| d.0),
                max_extra: at_least_one("hedge.max_extra", h.max_extra, 10)?,
            };
            o.hedge = HedgeOverrides {
                enabled: enabled(h.disabled, keys != HedgeOverrides::default()),
                ..keys
            };
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(client.overrides.timeout, Some(Duration::from_secs(2)));
        assert_eq!(client.overrides.retry.max_attempts, Some(4));
        assert_eq!(client.overrides.retry.enabled, Some(true));
        assert_eq!(
            client.overrides.retry.on,
            Some(StatusSet::from_codes(&[503]))
        );
        assert_eq!(client.overrides.circuit.enabled, Some(false));
        let get = client.methods.get("get").copied().unwrap_or_default();
        assert_eq!(get.timeout, Some(Duration::from_millis(300)));
        assert_eq!(get.retry.enabled, Some(false));
        assert_eq!(get.circuit.enabled, Some(true), "naming a key turns it on");
        assert_eq!(get.circuit.window, Some(50));
        assert_eq!(get.bulkhead.enabled, Some(true));
        let other = config.client("other").cloned().unwrap_or_default();
        assert_eq!(
            other.overrides.retry.backoff,
            Some((Duration::from_millis(10), Duration::from_millis(20)))
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
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let e = Config::from_toml_file("/nonexistent/courier.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("/nonexistent/courier.toml"), "{e}");
    }
}

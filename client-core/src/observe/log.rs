//! HTTP logs, Feign's logger levels, per client and method (the `log`
//! policy: `#[log(level = "basic")]`, or `log.level` in config), written
//! through `tracing` at INFO with target `courier::http`.
//!
//! | level | each attempt logs |
//! |---|---|
//! | `none` (default) | nothing |
//! | `basic` | one line: verb, path template, status (or error), time |
//! | `headers` | the request line with the path and its query (values masked) and the request headers, then the response line and headers |
//! | `full` | the same with the bodies, cut at `body_limit` bytes (4 KiB) |
//!
//! What is never logged: the value of a header marked sensitive or whose
//! name says it carries a secret (`authorization`, `cookie`, names with
//! `token`, `secret`, `api-key`…), shown as `[redacted]`; and the values of
//! query parameters, shown as `[redacted]` after their names.

use std::fmt::Write as _;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::Error;
use crate::request::is_secret_header;

/// What the HTTP log shows of each attempt (Feign's logger levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[non_exhaustive]
pub enum LogLevel {
    /// Nothing.
    #[default]
    None,
    /// One line per attempt: verb, path template, status, time.
    Basic,
    /// Also the request and response headers (secrets masked).
    Headers,
    /// Also the bodies, cut at the body limit.
    Full,
}

impl LogLevel {
    /// The level of a schema choice (`courier_spec::LOG_LEVELS`).
    pub(crate) fn from_index(index: u8) -> LogLevel {
        match index {
            1 => LogLevel::Basic,
            2 => LogLevel::Headers,
            3 => LogLevel::Full,
            _ => LogLevel::None,
        }
    }
}

/// A method's HTTP log settings, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPolicy {
    /// What is logged.
    pub level: LogLevel,
    /// How many bytes of a body `full` logs.
    pub body_limit: u32,
}

impl LogPolicy {
    /// Whether anything is logged.
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        self.level != LogLevel::None
    }
}

/// The call a log line belongs to.
pub(crate) struct Line<'a> {
    pub(crate) client: &'static str,
    pub(crate) method: &'static str,
    pub(crate) verb: &'static str,
    pub(crate) template: &'static str,
    pub(crate) policy: &'a LogPolicy,
}

const REDACTED: &str = "[redacted]";

/// The request about to be sent (levels `headers` and `full`).
pub(crate) fn request(line: &Line<'_>, url: &str, headers: &HeaderMap, body: Option<&[u8]>) {
    if line.policy.level < LogLevel::Headers {
        return;
    }
    let mut text = format!("---> {} {}", line.verb, masked_path(url));
    write_headers(&mut text, headers);
    if line.policy.level == LogLevel::Full
        && let Some(body) = body
    {
        write_body(&mut text, body, line.policy.body_limit);
    }
    tracing::info!(
        target: "courier::http",
        client = line.client,
        method = line.method,
        "{text}"
    );
}

/// The answer of an attempt.
pub(crate) fn response(
    line: &Line<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    elapsed: Duration,
) {
    let mut text = format!(
        "<--- {} {} {} ({:.1} ms)",
        status.as_u16(),
        line.verb,
        line.template,
        elapsed.as_secs_f64() * 1e3
    );
    if line.policy.level >= LogLevel::Headers {
        write_headers(&mut text, headers);
    }
    if line.policy.level == LogLevel::Full {
        write_body(&mut text, body, line.policy.body_limit);
    }
    tracing::info!(
        target: "courier::http",
        client = line.client,
        method = line.method,
        "{text}"
    );
}

/// An attempt that got no answer (or whose answer could not be read).
pub(crate) fn failed(line: &Line<'_>, error: &Error, elapsed: Duration) {
    tracing::info!(
        target: "courier::http",
        client = line.client,
        method = line.method,
        "<--- ERROR {} {} {:?} ({:.1} ms)",
        line.verb,
        line.template,
        error.kind(),
        elapsed.as_secs_f64() * 1e3
    );
}

/// The URL's path with its query's values masked, without scheme and host.
fn masked_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    let path = path.split('#').next().unwrap_or(path);
    let Some((path, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let mut out = format!("{path}?");
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let _ = write!(out, "{name}={REDACTED}");
    }
    out
}

fn write_headers(text: &mut String, headers: &HeaderMap) {
    for (name, value) in headers {
        let shown = if value.is_sensitive() || is_secret_header(name) {
            REDACTED.into()
        } else {
            String::from_utf8_lossy(value.as_bytes())
        };
        let _ = write!(text, "\n{name}: {shown}");
    }
}

fn write_body(text: &mut String, body: &[u8], limit: u32) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let shown = &body[..body.len().min(limit)];
    let _ = write!(text, "\n\n{}", String::from_utf8_lossy(shown));
    if body.len() > limit {
        let _ = write!(text, "… ({} bytes in all)", body.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_masked_and_names_kept() {
        assert_eq!(
            masked_path("http://h:1/api/users?token=s3cret&page=2"),
            "/api/users?token=[redacted]&page=[redacted]"
        );
        assert_eq!(masked_path("http://h/a/b"), "/a/b");
        assert_eq!(masked_path("http://h"), "/");
    }

    #[test]
    fn secret_headers_are_masked() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            http::HeaderValue::from_static("Bearer s3cret"),
        );
        headers.insert("x-api-key", http::HeaderValue::from_static("k3y"));
        headers.insert("x-trace", http::HeaderValue::from_static("visible"));
        let mut text = String::new();
        write_headers(&mut text, &headers);
        assert!(!text.contains("s3cret") && !text.contains("k3y"), "{text}");
        assert!(text.contains("x-trace: visible"), "{text}");
    }
}

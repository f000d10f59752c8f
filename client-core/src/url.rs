//! Percent-encoding of path segments and query pairs, and base URL checks.
//!
//! This is the only module that encodes. Both path segments and query names
//! and values keep only RFC 3986's *unreserved* characters
//! (`A-Z a-z 0-9 - . _ ~`) and percent-encode every other byte of their UTF-8
//! form. That is stricter than the RFC needs (`:` or `@` could stay in a
//! segment), but it is never ambiguous: a `/` in a value is `%2F` and cannot
//! add a segment, a `?` or `#` cannot start a query or fragment, a `+` in a
//! query value is `%2B` and cannot be read as a space, and a space is `%20`.

use std::fmt::{self, Write as _};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::Error;

/// Everything but RFC 3986's unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Appends `value` to `out`, percent-encoded as one URL component.
pub(crate) fn push_encoded(out: &mut String, value: &str) {
    for chunk in utf8_percent_encode(value, COMPONENT) {
        out.push_str(chunk);
    }
}

/// A `fmt::Write` that percent-encodes what is written into a `String`, so a
/// `Display` value is encoded without an intermediate `String`.
pub(crate) struct EncodingWriter<'a>(pub(crate) &'a mut String);

impl fmt::Write for EncodingWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_encoded(self.0, s);
        Ok(())
    }
}

/// Appends the `Display` form of `value`, percent-encoded, to `out`.
pub(crate) fn push_display_encoded(out: &mut String, value: &(impl fmt::Display + ?Sized)) {
    // Writing into a String cannot fail; a `Display` impl that returns an
    // error anyway leaves what it wrote so far, which is still encoded.
    let _ = write!(EncodingWriter(out), "{value}");
}

/// Checks a base URL and returns it without a trailing slash, ready for a
/// path that starts with `/` to be appended.
pub(crate) fn normalize_base_url(raw: &str) -> Result<String, Error> {
    let url = url::Url::parse(raw.trim()).map_err(|e| {
        Error::builder(format!("base url `{}` is not a valid URL", raw.trim())).with_source(e)
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::builder(format!(
            "base url `{raw}` must use http or https, not `{}`",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::builder(format!("base url `{raw}` has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs; refuse them and do not echo them.
        return Err(Error::builder(
            "base url must not carry credentials (user:password@); \
             send them with `default_header` or an interceptor",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::builder(format!(
            "base url `{}` must not have a query or fragment",
            url.origin().ascii_serialization()
        )));
    }
    #[cfg(not(feature = "rustls"))]
    if url.scheme() == "https" {
        return Err(Error::builder(format!(
            "base url `{raw}` is https, but courier was built without TLS: \
             enable its `rustls` feature, or pass an `http_client` that has TLS"
        )));
    }
    let mut s: String = url.into();
    while s.ends_with('/') {
        s.pop();
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &str) -> String {
        let mut s = String::new();
        push_encoded(&mut s, v);
        s
    }

    #[test]
    fn encodes_everything_but_unreserved() {
        assert_eq!(enc("a/b"), "a%2Fb");
        assert_eq!(enc("a b"), "a%20b");
        assert_eq!(enc("?#&=+%"), "%3F%23%26%3D%2B%25");
        assert_eq!(enc("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(enc("é"), "%C3%A9");
        assert_eq!(enc(".."), "..");
    }

    #[test]
    fn display_values_are_encoded_as_written() {
        let mut s = String::from("/x/");
        push_display_encoded(&mut s, &format_args!("{}/{}", 1, "a b"));
        assert_eq!(s, "/x/1%2Fa%20b");
    }

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080/").ok().as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            normalize_base_url("http://gw.local/users-api/")
                .ok()
                .as_deref(),
            Some("http://gw.local/users-api")
        );
        for bad in [
            "not a url",
            "ftp://x",
            "http://u:p@x",
            "http://x/?a=1",
            "/relative",
        ] {
            let err = normalize_base_url(bad).err().map(|e| e.to_string());
            assert!(err.is_some(), "{bad} accepted");
        }
        let creds = normalize_base_url("http://u:hunter2@x")
            .err()
            .map(|e| e.to_string());
        assert!(!creds.unwrap_or_default().contains("hunter2"));
    }
}

//! Percent-encoding of path segments and query pairs, base URL checks, and
//! the request URL built on a base parsed once ([`Origin`]).
//!
//! This is the only module that encodes. Both path segments and query names
//! and values keep only RFC 3986's *unreserved* characters
//! (`A-Z a-z 0-9 - . _ ~`) and percent-encode every other byte of their UTF-8
//! form. That is stricter than the RFC needs (`:` or `@` could stay in a
//! segment), but it is never ambiguous: a `/` in a value is `%2F` and cannot
//! add a segment, a `?` or `#` cannot start a query or fragment, a `+` in a
//! query value is `%2B` and cannot be read as a space, and a space is `%20`.

use std::fmt::{self, Write as _};
use std::sync::{Mutex, PoisonError};

use http::HeaderValue;
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

/// The scheme and authority of a client's base URL, parsed once into a
/// [`url::Url`], so that a request URL starting with them needs only its
/// path and query parsed: what reqwest's transport takes.
///
/// `Url::parse` of a whole URL spends most of its time on the host (IDNA
/// processing, then the IPv4 check): measured at ~5 % of the client's CPU
/// per call with perf on the overhead benchmark's GET, at concurrency 64,
/// more than all of courier's policies. The host never changes between the
/// calls of a client with a fixed base URL, so it is parsed when the client
/// is built. A URL that does not start with the origin (a redirect to
/// another host), or whose rest is not plain printable ASCII, is parsed
/// whole: the result is the same either way, which
/// `tests::an_origin_builds_what_a_whole_parse_builds` checks on arbitrary
/// paths and queries.
///
/// An `http://` origin also keeps its `Host` header value, made once: see
/// [`Origin::host_for`].
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    /// `scheme://authority/`: the origin with an empty path.
    url: url::Url,
    /// The length of `scheme://authority`, as URL texts start.
    len: usize,
    /// `host[:port]` for an `http://` origin: what hyper-util would write.
    host: Option<HeaderValue>,
}

impl Origin {
    /// The origin of a normalised base URL (see [`normalize_base_url`]);
    /// `None` when it is not one (then every URL is parsed whole).
    pub(crate) fn parse(base: &str) -> Option<Origin> {
        let mut url = url::Url::parse(base).ok()?;
        if url.cannot_be_a_base() || url.query().is_some() || url.fragment().is_some() {
            return None;
        }
        url.set_path("/");
        let len = url[..url::Position::BeforePath].len();
        // The base's text must start exactly as the parsed origin prints
        // (a normalised base does: it is the parser's own output).
        let printed = url.as_str().as_bytes().get(..len);
        if base.as_bytes().get(..len) != printed {
            return None;
        }
        let host = host_header(&url);
        Some(Origin { url, len, host })
    }

    /// The `Host` header of a request to `url`, made once, when `url` is on
    /// this origin and the origin is plain `http://`; else `None`, and
    /// hyper-util writes it as it always does.
    ///
    /// hyper-util sets `Host` on every HTTP/1 request that has none: it
    /// formats `host:port` into a new string and checks it as a header
    /// value, about 2,300 instructions and an allocation per request
    /// (callgrind, the overhead benchmark's GET), for a value that never
    /// changes between the calls to one origin. It keeps a `Host` that is
    /// already there, so this one, the same text, is what goes out.
    /// Only `http://`: over `https://` the connection may turn out HTTP/2,
    /// where hyper-util sends `:authority` and no `Host`.
    pub(crate) fn host_for(&self, url: &url::Url) -> Option<&HeaderValue> {
        let host = self.host.as_ref()?;
        let same = url.scheme() == "http"
            && url.host_str() == self.url.host_str()
            && url.port() == self.url.port();
        same.then_some(host)
    }

    /// `text` as a [`url::Url`], the same as `url::Url::parse(text)`.
    pub(crate) fn url(&self, text: &str) -> Result<url::Url, url::ParseError> {
        let rest = match text.as_bytes().split_at_checked(self.len) {
            Some((head, rest)) if head == &self.url.as_str().as_bytes()[..self.len] => rest,
            _ => return url::Url::parse(text),
        };
        // Only a path that starts with `/`, and plain printable ASCII: no
        // fragment, no backslash (a slash to the parser), no space, tab,
        // newline or control character (the whole-URL parser trims or drops
        // some of them), so the setters below see what the parser would.
        // The url crate keeps offsets as `u32`: its setters panic on a URL
        // of 4 GiB or more where its parser returns a value or an error.
        let plain = text.len() < u32::MAX as usize
            && rest.first() == Some(&b'/')
            && rest
                .iter()
                .all(|&b| b.is_ascii_graphic() && b != b'#' && b != b'\\');
        if !plain {
            return url::Url::parse(text);
        }
        // `rest` is ASCII, so every index in it is a char boundary.
        let rest = &text[self.len..];
        let mut url = self.url.clone();
        match rest.split_once('?') {
            None => url.set_path(rest),
            Some((path, query)) => {
                url.set_path(path);
                url.set_query(Some(query));
            }
        }
        Ok(url)
    }
}

/// `host[:port]` of an `http://` URL, as hyper-util writes `Host`: the host
/// as the URL prints it (an IPv6 address in brackets, a name in punycode)
/// and the port only when it is not the scheme's default (the url crate
/// drops a default port, so `port()` is `None` exactly then).
fn host_header(url: &url::Url) -> Option<HeaderValue> {
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    let text = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    host_value(text)
}

/// How many distinct `Host` texts are kept as static strings, for the life
/// of the process (see [`host_value`]): at most this many short strings.
const STATIC_HOSTS: usize = 256;

/// The `Host` texts made static so far.
static HOSTS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// `text` as a `Host` value, `None` if it is not a header value.
///
/// A value made from a `String` is reference-counted: each clone and drop
/// is an atomic read-modify-write on a count shared by every thread, and a
/// request's headers are cloned three times on the way through reqwest
/// (once by courier, twice by reqwest itself: about six such operations
/// per call, each some 20 cycles where a plain instruction takes about
/// one). A static value is
/// copied instead. So the text is made static, once per distinct text
/// (the first `STATIC_HOSTS` of them: a client's base URL, the instances
/// discovery found), and looked up when another client or instance has the
/// same one; past that bound, values are reference-counted again, so
/// instances that come and go for months cannot grow the process.
pub(crate) fn host_value(text: String) -> Option<HeaderValue> {
    let value = HeaderValue::try_from(text.as_str()).ok()?;
    // `from_static` takes visible ASCII only (and panics on the rest).
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(value);
    }
    let mut hosts = HOSTS.lock().unwrap_or_else(PoisonError::into_inner);
    let kept = match hosts.iter().find(|kept| ***kept == *text) {
        Some(kept) => *kept,
        None if hosts.len() < STATIC_HOSTS => {
            let kept: &'static str = Box::leak(text.into_boxed_str());
            hosts.push(kept);
            kept
        }
        None => return Some(value),
    };
    Some(HeaderValue::from_static(kept))
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
    fn an_origin_builds_request_urls_from_its_base() {
        let base = normalize_base_url("http://GW.local:80/users-api/").unwrap_or_default();
        let origin = Origin::parse(&base).map(|o| o.len);
        assert_eq!(origin, Some("http://gw.local".len()));
        let origin = Origin::parse(&base);
        let url = |text: &str| {
            origin
                .as_ref()
                .and_then(|o| o.url(text).ok())
                .map(String::from)
        };
        let full = format!("{base}/users/7?a=1&b=%20");
        assert_eq!(
            url(&full).as_deref(),
            Some("http://gw.local/users-api/users/7?a=1&b=%20")
        );
        // Another origin, and texts the fast path leaves to the parser.
        assert_eq!(
            url("http://other:81/x").as_deref(),
            Some("http://other:81/x")
        );
        assert_eq!(
            url("http://gw.local/a b").as_deref(),
            Some("http://gw.local/a%20b")
        );
        assert_eq!(
            url("http://gw.local/a#f").as_deref(),
            Some("http://gw.local/a#f")
        );
        assert_eq!(
            url("http://gw.local\\a").as_deref(),
            Some("http://gw.local/a")
        );
        assert_eq!(
            url("http://gw.local.evil/a").as_deref(),
            Some("http://gw.local.evil/a")
        );
        assert_eq!(
            url("http://gw.local/a/../b").as_deref(),
            Some("http://gw.local/b")
        );
        assert_eq!(
            url("http://gw.local//x").as_deref(),
            Some("http://gw.local//x")
        );
        assert!(origin.as_ref().is_some_and(|o| o.url("not a url").is_err()));
        // Not a normalised base: no origin, never a wrong one.
        assert!(Origin::parse("http://GW.local/").is_none());
        assert!(Origin::parse("nope").is_none());
    }

    /// The `Host` a request on an origin gets is hyper-util's text for it
    /// (host as printed, port unless the default), only for `http://` and
    /// only on the origin.
    #[test]
    fn a_request_on_an_http_origin_gets_the_origins_host() {
        let host = |base: &str, url: &str| {
            let base = normalize_base_url(base).unwrap_or_default();
            let origin = Origin::parse(&base)?;
            let url = url::Url::parse(url).ok()?;
            origin
                .host_for(&url)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        };
        let cases = [
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/x",
                Some("127.0.0.1:8080"),
            ),
            (
                "http://GW.local:80/api",
                "http://gw.local/api/x?q=1",
                Some("gw.local"),
            ),
            (
                "http://[::1]:9000",
                "http://[::1]:9000/x",
                Some("[::1]:9000"),
            ),
            (
                "http://bücher.example",
                "http://xn--bcher-kva.example/",
                Some("xn--bcher-kva.example"),
            ),
            ("http://h:81", "http://h:82/x", None),
            ("http://h", "http://other/x", None),
            ("http://h", "https://h/x", None),
            ("https://h", "https://h/x", None),
        ];
        for (base, url, want) in cases {
            assert_eq!(host(base, url).as_deref(), want, "{url} on {base}");
        }
    }

    /// Host values: the same text gives the same value, kept static at
    /// most `STATIC_HOSTS` times over however many distinct texts; a text
    /// that is no header value is refused; one with bytes past ASCII (no
    /// host prints so, but a value may hold them) is a value, not a panic.
    #[test]
    fn host_values_are_interned_up_to_a_bound_and_never_panic() {
        let value = |text: &str| host_value(text.to_owned());
        assert_eq!(value("gw.local:8080"), value("gw.local:8080"));
        assert_eq!(
            value("gw.local:8080").as_ref().map(HeaderValue::as_bytes),
            Some(&b"gw.local:8080"[..])
        );
        assert_eq!(value("bad\nhost"), None);
        assert_eq!(value("a\u{0}b"), None);
        let high = value("h\u{e9}st");
        assert_eq!(high.map(|v| v.as_bytes().len()), Some(5));
        for n in 0..STATIC_HOSTS + 50 {
            let text = format!("10.0.{}.{}:80", n / 256, n % 256);
            let made = value(&text);
            assert_eq!(
                made.as_ref().map(HeaderValue::as_bytes),
                Some(text.as_bytes())
            );
        }
        let kept = HOSTS.lock().map_or(usize::MAX, |hosts| hosts.len());
        assert!(kept <= STATIC_HOSTS, "{kept} static host texts");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Whatever follows a base (path, query, odd characters, dot
        /// segments, escapes), the URL built on the origin is the one
        /// `Url::parse` makes of the whole text, or both fail.
        #[test]
        fn an_origin_builds_what_a_whole_parse_builds(
            base in proptest::sample::select(vec![
                "http://127.0.0.1:8080",
                "http://gw.local/users-api",
                "https://xn--bcher-kva.example:8443/a%20b",
                "http://[::1]:9000",
                "http://h",
            ]),
            rest in "[/a-zA-Z0-9.%?#&=+:@!$'()*,;~_ \\\\\t\n\x00\x7f-]{0,24}|/[./]{0,6}[a-z]{0,3}[./?]{0,4}",
        ) {
            let origin = Origin::parse(base);
            proptest::prop_assert!(origin.is_some(), "{base} has an origin");
            let text = format!("{base}{rest}");
            let ours = origin.map(|o| o.url(&text).map(String::from));
            let whole = url::Url::parse(&text).map(String::from);
            proptest::prop_assert_eq!(ours, Some(whole), "{:?}", text);
        }
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

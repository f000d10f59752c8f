//! The [`RequestParts`] that each call fills from its arguments (the static
//! description of a client and its methods is in [`crate::spec`]).
//!
//! The macro has already checked the path template and split it into literal
//! pieces and placeholders; a call appends the pieces in order, encoding each
//! parameter through `url.rs`, then the query pairs, headers and body.
//! Every check on a value happens here, before anything is sent.

use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use serde::Serialize;

use crate::Error;
use crate::codec::Encoder;
use crate::url::{push_display_encoded, push_encoded};

/// A request being assembled from a call's arguments.
///
/// What a `#[query]` parameter's value (or each item of a sequence) must
/// be: written with `Display`. A struct whose fields are the pairs is a
/// query map instead (`#[query(map)]`), which the compile error says.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a query value: it does not implement `Display`",
    label = "a `#[query]` value is written with `Display`",
    note = "for a struct whose fields are the query pairs, mark the parameter `#[query(map)]` \
            (it needs `serde::Serialize`)"
)]
pub trait QueryValue: fmt::Display {}

impl<T: fmt::Display + ?Sized> QueryValue for T {}

/// Generated code appends the path pieces first, then query pairs, headers
/// and the body; every value is checked as it is added, so an invalid
/// argument fails the call before anything is sent.
pub struct RequestParts {
    /// The base URL, the path, then `?` and the query: the whole URL, built
    /// in one buffer so that sending needs no second copy.
    url: String,
    /// Where the path starts in `url` (the base URL's length).
    base_end: usize,
    /// Where the query starts in `url` (its length while there is no query).
    path_end: usize,
    /// The call's headers, in order. A list rather than a `HeaderMap`: a call
    /// has few, and this struct is part of every call's future (96 bytes for
    /// an empty map against 24 for an empty list).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Option<Bytes>,
    /// A streamed body (`#[body] BodyStream`), taken by the one request
    /// that sends it. Boxed: `None` costs every other call 8 bytes.
    pub(crate) stream: Option<Box<std::sync::Mutex<Option<crate::stream::BodyStream>>>>,
    /// How long a streamed response body may stall between chunks (the
    /// method's `timeout`; set only for a `BodyStream` return value).
    pub(crate) stream_idle: std::time::Duration,
}

impl RequestParts {
    /// An empty request to `base` (no trailing slash), with room for
    /// `capacity` more bytes of path and query.
    pub(crate) fn new(base: &str, capacity: usize) -> Self {
        let mut url = String::with_capacity(base.len() + capacity);
        url.push_str(base);
        RequestParts {
            base_end: url.len(),
            path_end: url.len(),
            url,
            headers: Vec::new(),
            body: None,
            stream: None,
            stream_idle: std::time::Duration::ZERO,
        }
    }

    /// The URL path as built so far, without the base URL or the query.
    pub fn path(&self) -> &str {
        &self.url[self.base_end..self.path_end]
    }

    /// The path and the query string, as they are appended to the base URL.
    pub fn path_and_query(&self) -> &str {
        &self.url[self.base_end..]
    }

    /// The whole URL: base, path and query.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Appends a literal piece of the path template (checked by the macro).
    pub fn push_literal(&mut self, piece: &str) {
        debug_assert_eq!(self.path_end, self.url.len(), "path after query");
        self.url.push_str(piece);
        self.path_end = self.url.len();
    }

    /// Appends a path parameter, percent-encoded as (part of) one segment.
    ///
    /// When the placeholder is a whole segment (`/users/{id}`), an empty
    /// value, `.` or `..` would change which resource the path names; they
    /// are refused.
    ///
    /// # Errors
    /// An [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest)
    /// naming the parameter.
    pub fn push_path_param(
        &mut self,
        name: &'static str,
        value: &(impl fmt::Display + ?Sized),
        whole_segment: bool,
    ) -> Result<(), Error> {
        let start = self.url.len();
        push_display_encoded(&mut self.url, value);
        self.path_end = self.url.len();
        if whole_segment {
            let written = &self.url[start..];
            let problem = match written {
                "" => Some("is empty"),
                "." | ".." => Some("is a dot segment (`.` or `..`)"),
                _ => None,
            };
            if let Some(problem) = problem {
                let shown = written.to_owned();
                self.url.truncate(start);
                self.path_end = start;
                return Err(Error::invalid_request(format!(
                    "path parameter `{name}` {problem}: `{shown}` cannot be a path segment"
                )));
            }
        }
        Ok(())
    }

    /// Where the next path segment starts: see [`check_segment`](Self::check_segment).
    #[inline]
    pub fn segment_start(&self) -> usize {
        self.url.len()
    }

    /// Checks the segment written since `start` (several placeholders, and
    /// maybe dots, such as `{dir}{name}` or `{name}.`): once complete, it
    /// must not be empty, `.` or `..`, whatever each value was alone.
    /// `params` names the placeholders for the error.
    ///
    /// # Errors
    /// An [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest)
    /// naming the parameters.
    pub fn check_segment(&mut self, start: usize, params: &'static str) -> Result<(), Error> {
        let segment = self.url.get(start..self.path_end).unwrap_or_default();
        let dots = segment.replace("%2e", ".").replace("%2E", ".");
        if matches!(dots.as_str(), "" | "." | "..") {
            let shown = segment.to_owned();
            self.url.truncate(start);
            self.path_end = start;
            return Err(Error::invalid_request(format!(
                "path parameters `{params}` together make the segment `{shown}`, which would \
                 change which resource the path names"
            )));
        }
        Ok(())
    }

    /// Appends one `name=value` query pair, both percent-encoded.
    pub fn push_query(&mut self, name: &str, value: &(impl QueryValue + ?Sized)) {
        let sep = if self.path_end == self.url.len() {
            '?'
        } else {
            '&'
        };
        self.url.push(sep);
        push_encoded(&mut self.url, name);
        self.url.push('=');
        push_display_encoded(&mut self.url, value);
    }

    /// Appends one `name=a,b,c` query pair: each item percent-encoded (a
    /// comma inside one too), joined by literal commas (`format = "csv"`).
    /// Nothing when there is no item.
    pub fn push_query_csv<I>(&mut self, name: &str, items: I)
    where
        I: IntoIterator,
        I::Item: fmt::Display,
    {
        let mut items = items.into_iter();
        let Some(first) = items.next() else {
            return;
        };
        self.push_query(name, &first);
        for item in items {
            self.url.push(',');
            push_display_encoded(&mut self.url, &item);
        }
    }

    /// Appends the pairs a query map flattens to (`#[query(map)]`); see
    /// [`crate::query`].
    ///
    /// # Errors
    /// An [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest)
    /// naming `param` and the key with no query form; nothing is appended
    /// then.
    pub fn push_query_map<T: Serialize + ?Sized>(
        &mut self,
        param: &str,
        value: &T,
        nesting: crate::query::Nesting,
        format: crate::query::Format,
    ) -> Result<(), Error> {
        for (name, text) in crate::query::pairs(param, value, nesting, format)? {
            match text {
                crate::query::Text::One(text) => self.push_query(&name, &text),
                crate::query::Text::Joined(items) => self.push_query_csv(&name, items),
            }
        }
        Ok(())
    }

    /// Adds a header; the value is checked for characters HTTP forbids.
    ///
    /// # Errors
    /// An [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest)
    /// naming the header when the value holds CR, LF, NUL or another control
    /// character. The value itself is not repeated in the error.
    pub fn push_header(
        &mut self,
        name: HeaderName,
        value: &(impl fmt::Display + ?Sized),
    ) -> Result<(), Error> {
        let value = header_value(&name, value.to_string())?;
        if name == CONTENT_TYPE {
            // The caller's media type wins over a body's default (a codec's,
            // a stream's), whichever parameter came first.
            self.headers
                .retain(|(existing, _)| *existing != CONTENT_TYPE);
        }
        self.headers.push((name, value));
        Ok(())
    }

    /// Sets the body to `value` written by the codec `C` (a `#[body]`:
    /// JSON unless `#[codec(…)]` names another; a `#[form]`: [`Form`]),
    /// with `C`'s `Content-Type`.
    ///
    /// [`Form`]: crate::codec::Form
    ///
    /// # Errors
    /// An [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest)
    /// naming the type and the codec when the value has no form in it (a
    /// nested struct in a form, say); nothing is set then.
    #[inline]
    pub fn set_body_with<C: Encoder<T>, T: ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        const {
            assert!(
                crate::codec::is_header_text(C::CONTENT_TYPE),
                "a codec's CONTENT_TYPE must be a valid header value (visible ASCII)"
            );
        }
        let body = crate::codec::encode::<C, T>(value)?;
        self.set_body(body, C::CONTENT_TYPE);
        Ok(())
    }

    /// Sets the body to the `multipart/form-data` encoding of `parts`
    /// (`#[multipart]` parameters), with its `Content-Type` and boundary.
    ///
    /// # Errors
    /// Only if the content type were not a valid header value, which a
    /// boundary of letters and digits cannot cause.
    #[doc(hidden)]
    pub fn set_multipart(&mut self, parts: crate::multipart::MultipartBody) -> Result<(), Error> {
        let (body, content_type) = parts.encode();
        let content_type = header_value(&CONTENT_TYPE, content_type)?;
        // Only this type carries the boundary the parts are split by.
        self.headers
            .retain(|(existing, _)| *existing != CONTENT_TYPE);
        self.headers.push((CONTENT_TYPE, content_type));
        match body {
            crate::multipart::Encoded::Whole(body) => self.body = Some(body),
            crate::multipart::Encoded::Stream(stream) => self.set_stream_body(stream),
        }
        Ok(())
    }

    /// Sets the body to `stream`, read once as it is sent (chunked, or
    /// with `Content-Length` when the stream declares its length), with
    /// `content-type: application/octet-stream` unless a header parameter
    /// set one.
    pub fn set_stream_body(&mut self, stream: crate::stream::BodyStream) {
        if !self.headers.iter().any(|(name, _)| name == CONTENT_TYPE) {
            self.headers.push((
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ));
        }
        self.stream = Some(Box::new(std::sync::Mutex::new(Some(stream))));
    }

    /// Takes the streamed body; `None` once taken (or when there is none).
    pub(crate) fn take_stream(&self) -> Option<crate::stream::BodyStream> {
        let cell = self.stream.as_ref()?;
        // A poisoned lock still holds the stream (or its absence).
        let mut slot = cell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.take()
    }

    /// Compresses the body with gzip (`#[compress]`) when it has at least
    /// `min_size` bytes, its content type is not one that is compressed
    /// already (images, audio, video, archives), no `Content-Encoding` was
    /// set (never twice), and gzip makes it smaller; then says so in
    /// `Content-Encoding`. Done once per call: every attempt sends the same
    /// compressed bytes.
    pub(crate) fn compress_body(&mut self, min_size: u32) {
        let Some(body) = &self.body else {
            return;
        };
        let min = usize::try_from(min_size).unwrap_or(usize::MAX);
        if body.len() < min
            || self.headers.iter().any(|(name, value)| {
                name == CONTENT_ENCODING || (name == CONTENT_TYPE && is_compressed_type(value))
            })
        {
            return;
        }
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        // Writing into a Vec cannot fail.
        if std::io::Write::write_all(&mut encoder, body).is_err() {
            return;
        }
        match encoder.finish() {
            Ok(gzipped) if gzipped.len() < body.len() => {
                self.body = Some(Bytes::from(gzipped));
                self.headers
                    .push((CONTENT_ENCODING, HeaderValue::from_static("gzip")));
            }
            _ => {}
        }
    }

    /// Sets the body and its default `Content-Type`, which a
    /// `#[header("Content-Type")]` of the caller's replaces.
    fn set_body(&mut self, body: Bytes, content_type: &'static str) {
        if !self.headers.iter().any(|(name, _)| name == CONTENT_TYPE) {
            self.headers
                .push((CONTENT_TYPE, HeaderValue::from_static(content_type)));
        }
        self.body = Some(body);
    }
}

impl fmt::Debug for RequestParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestParts")
            .field("path", &self.path())
            .field("headers", &self.headers)
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish()
    }
}

/// Whether a content type is one that is compressed already, so gzip would
/// only cost time.
fn is_compressed_type(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    (essence.starts_with("image/") && essence != "image/svg+xml")
        || essence.starts_with("audio/")
        || essence.starts_with("video/")
        || matches!(
            essence.as_str(),
            "application/gzip"
                | "application/x-gzip"
                | "application/zip"
                | "application/zstd"
                | "application/x-bzip2"
                | "application/x-7z-compressed"
                | "application/x-xz"
        )
}

/// Checks a header value and marks it sensitive when the header's name says
/// it carries a secret, so that `Debug` of a header map never prints it.
pub(crate) fn header_value(name: &HeaderName, value: String) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::try_from(value).map_err(|_| {
        Error::invalid_request(format!(
            "header `{name}` has a value with a forbidden character (CR, LF, NUL or another \
             control character)"
        ))
    })?;
    if is_secret_header(name) {
        value.set_sensitive(true);
    }
    Ok(value)
}

/// Headers whose values are secrets: never logged, never in `Debug`.
pub(crate) fn is_secret_header(name: &HeaderName) -> bool {
    use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
    if [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, SET_COOKIE].contains(name) {
        return true;
    }
    let name = name.as_str();
    [
        "token", "secret", "api-key", "apikey", "password", "session",
    ]
    .iter()
    .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_params_are_one_segment_and_dot_segments_refused() {
        let mut r = RequestParts::new("http://h", 0);
        r.push_literal("/files/");
        assert!(r.push_path_param("name", "a/b c?#", true).is_ok());
        assert_eq!(r.path(), "/files/a%2Fb%20c%3F%23");

        for bad in ["", ".", ".."] {
            let mut r = RequestParts::new("http://h", 0);
            r.push_literal("/files/");
            let err = r.push_path_param("name", bad, true).err();
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("`name`"), "{bad:?}: {msg}");
        }

        // Part of a segment: `..` is harmless there (`/v..json`).
        let mut r = RequestParts::new("http://h", 0);
        r.push_literal("/v");
        assert!(r.push_path_param("ext", "..", false).is_ok());
    }

    /// The defect: `/files/{dir}{name}` with `(".", ".")` sent `GET /`
    /// (the URL parser resolved `/files/..`); each value alone was fine.
    #[test]
    fn adjacent_placeholders_cannot_make_a_dot_segment_together() {
        for (a, b) in [(".", "."), ("", "."), ("", ""), (".", "")] {
            let mut r = RequestParts::new("http://h", 0);
            r.push_literal("/files/");
            let start = r.segment_start();
            assert!(r.push_path_param("dir", a, false).is_ok());
            assert!(r.push_path_param("name", b, false).is_ok());
            let err = r.check_segment(start, "dir`, `name").err();
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("`dir`, `name`"), "{a:?}{b:?}: {msg}");
        }
        let mut r = RequestParts::new("http://h", 0);
        r.push_literal("/files/");
        let start = r.segment_start();
        assert!(r.push_path_param("dir", "..", false).is_ok());
        assert!(r.push_path_param("name", "x", false).is_ok());
        assert!(
            r.check_segment(start, "dir`, `name").is_ok(),
            "`..x` is a name"
        );
        assert_eq!(r.path(), "/files/..x");
    }

    #[test]
    fn query_pairs_are_joined_and_encoded() {
        let mut r = RequestParts::new("http://h", 0);
        r.push_literal("/search");
        r.push_query("q", "a b&c=d");
        r.push_query("tag", &7);
        assert_eq!(r.path_and_query(), "/search?q=a%20b%26c%3Dd&tag=7");
        assert_eq!(r.path(), "/search");
    }

    #[test]
    fn header_values_with_line_breaks_are_refused_without_echoing_them() {
        let mut r = RequestParts::new("http://h", 0);
        for bad in ["a\r\nX-Evil: 1", "a\nb", "a\0b"] {
            let err = r.push_header(HeaderName::from_static("x-key"), bad).err();
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("`x-key`"), "{msg}");
            assert!(!msg.contains("Evil"), "{msg}");
        }
        assert!(r.headers.is_empty());
    }

    #[test]
    fn secret_headers_are_hidden_from_debug() {
        let mut r = RequestParts::new("http://h", 0);
        assert!(
            r.push_header(HeaderName::from_static("authorization"), "Bearer hunter2")
                .is_ok()
        );
        assert!(
            r.push_header(HeaderName::from_static("x-api-key"), "hunter3")
                .is_ok()
        );
        let shown = format!("{r:?}");
        assert!(!shown.contains("hunter"), "{shown}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn decode(s: &str) -> String {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any value of a whole-segment parameter is refused (empty,
            /// `.`, `..`) or becomes exactly one segment that decodes back
            /// to the value, and that the URL parser leaves alone.
            #[test]
            fn a_path_parameter_is_one_segment_that_decodes_to_itself(value in any::<String>()) {
                let mut r = RequestParts::new("http://h", 0);
                r.push_literal("/files/");
                match r.push_path_param("name", &value, true) {
                    Err(e) => {
                        prop_assert!(matches!(value.as_str(), "" | "." | ".."));
                        prop_assert!(e.to_string().contains("`name`"));
                    }
                    Ok(()) => {
                        let segment = &r.path()["/files/".len()..];
                        prop_assert!(!segment.contains(['/', '?', '#']));
                        prop_assert_eq!(decode(segment), value);
                        let parsed = url::Url::parse(r.url());
                        prop_assert_eq!(parsed.map(|u| u.path().to_owned()).ok(), Some(r.path().to_owned()));
                    }
                }
            }

            /// Two adjacent parameters (`/{dir}{name}`): the finished
            /// segment is never a dot segment the parser would resolve.
            #[test]
            fn adjacent_parameters_never_make_a_dot_segment(a in "[.a%/]{0,3}", b in "[.a%/]{0,3}") {
                let mut r = RequestParts::new("http://h", 0);
                r.push_literal("/files/");
                let start = r.segment_start();
                prop_assert!(r.push_path_param("dir", &a, false).is_ok());
                prop_assert!(r.push_path_param("name", &b, false).is_ok());
                let joined = format!("{a}{b}");
                match r.check_segment(start, "dir`, `name") {
                    Err(_) => prop_assert!(matches!(joined.as_str(), "" | "." | "..")),
                    Ok(()) => {
                        let parsed = url::Url::parse(r.url()).map(|u| u.path().to_owned());
                        prop_assert_eq!(parsed.ok(), Some(r.path().to_owned()));
                        prop_assert_eq!(decode(&r.path()["/files/".len()..]), joined);
                    }
                }
            }

            /// A csv pair's items come back one by one, whatever commas,
            /// spaces or other bytes they hold: the joining commas are the
            /// only literal ones.
            #[test]
            fn csv_items_split_back_exactly(items in prop::collection::vec(any::<String>(), 1..5)) {
                let mut r = RequestParts::new("http://h", 0);
                r.push_literal("/s");
                r.push_query_csv("ids", &items);
                let query = r.path_and_query().split_once('?').map(|(_, q)| q.to_owned());
                let value = query.as_deref().and_then(|q| q.strip_prefix("ids=")).unwrap_or_default();
                let back: Vec<String> = value.split(',').map(decode).collect();
                prop_assert_eq!(back, items);
            }

            /// Any map of names to lists flattens to exactly its pairs
            /// (lists repeated, empty lists left out), in name order, and
            /// they survive the URL; an empty name is refused whole.
            #[test]
            fn a_query_map_of_lists_flattens_to_its_pairs(
                map in prop::collection::btree_map(any::<String>(), prop::collection::vec(any::<String>(), 0..3), 0..4)
            ) {
                let mut r = RequestParts::new("http://h", 0);
                r.push_literal("/s");
                let pushed = r.push_query_map("f", &map, crate::query::Nesting::Dots, crate::query::Format::Multi);
                if map.contains_key("") {
                    // An empty name has no query form: refused, nothing written.
                    prop_assert!(pushed.is_err_and(|e| e.to_string().contains("empty name")));
                    prop_assert_eq!(r.path_and_query(), "/s");
                    return Ok(());
                }
                prop_assert!(pushed.is_ok());
                let expected: Vec<(String, String)> = map
                    .iter()
                    .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                    .collect();
                let back: Vec<(String, String)> = url::Url::parse(r.url())
                    .map(|u| u.query_pairs().into_owned().collect())
                    .unwrap_or_default();
                prop_assert_eq!(back, expected);
            }

            /// Any name and value survive the query string exactly.
            #[test]
            fn query_pairs_decode_to_what_was_given(pairs in prop::collection::vec((any::<String>(), any::<String>()), 0..4)) {
                let mut r = RequestParts::new("http://h", 0);
                r.push_literal("/search");
                for (name, value) in &pairs {
                    r.push_query(name, value);
                }
                let parsed = url::Url::parse(r.url()).ok();
                let back: Vec<(String, String)> = parsed
                    .map(|u| u.query_pairs().into_owned().collect())
                    .unwrap_or_default();
                prop_assert_eq!(back, pairs);
                prop_assert_eq!(r.path(), "/search");
            }

            /// Any header value is kept byte for byte, or refused without
            /// being echoed, and never carries a line break or NUL.
            #[test]
            fn header_values_are_kept_exactly_or_refused(value in any::<String>()) {
                let mut r = RequestParts::new("http://h", 0);
                let name = HeaderName::from_static("x-key");
                match r.push_header(name, &value) {
                    Ok(()) => {
                        let (_, kept) = &r.headers[0];
                        prop_assert_eq!(kept.as_bytes(), value.as_bytes());
                        prop_assert!(!value.contains(['\r', '\n', '\0']));
                    }
                    Err(e) => {
                        let shown = e.to_string();
                        prop_assert!(shown.contains("`x-key`"));
                        prop_assert!(value.chars().any(|c| c.is_control() && c != '\t'));
                        if value.len() > 3 && !value.chars().all(char::is_control) {
                            prop_assert!(!shown.contains(value.as_str()));
                        }
                    }
                }
            }
        }
    }
}

//! Wire formats ([`Codec`]s), and turning a response into a method's return
//! value.
//!
//! ## Codecs
//!
//! A codec is a type naming a media type ([`Codec::CONTENT_TYPE`], sent as
//! `Content-Type` with a `#[body]` and as `Accept` for a decoded return
//! value) and saying which values it writes ([`Encoder<T>`]) and reads
//! ([`Decoder<T>`]). It is chosen at compile time with `#[codec(Type)]` on
//! the trait (every method) or on a method (that method wins); JSON when
//! none is named. A body or return type the codec cannot handle is a
//! compile error at the parameter or return type.
//!
//! | codec             | media type                          | writes                | reads            |
//! |-------------------|-------------------------------------|-----------------------|------------------|
//! | [`Json`]          | `application/json`                  | `T: Serialize`        | `T: Deserialize` |
//! | [`Form`]          | `application/x-www-form-urlencoded` | `T: Serialize`        | `T: Deserialize` |
//! | [`Text`]          | `text/plain; charset=utf-8`         | `T: Display`          | `T: FromStr`     |
//! | [`Binary`]        | `application/octet-stream`          | `T: AsRef<[u8]>`      | `Bytes`, `Vec<u8>` |
//! | `MessagePack`     | `application/msgpack` (feature `msgpack`) | `T: Serialize`  | `T: Deserialize` |
//!
//! Your own format plugs in the same way: a unit type implementing
//! [`Codec`] and [`Encoder`]/[`Decoder`] for the types it handles (for
//! protobuf, `impl<T: prost::Message> Encoder<T> for Proto`), named in
//! `#[codec(…)]`:
//!
//! ```
//! use bytes::Bytes;
//! use courier::BoxError;
//! use courier::codec::{Codec, Decoder, Encoder};
//!
//! /// Comma-separated numbers, `text/csv`.
//! struct Csv;
//!
//! impl Codec for Csv {
//!     const CONTENT_TYPE: &'static str = "text/csv";
//! }
//!
//! impl Encoder<Vec<u32>> for Csv {
//!     fn encode(value: &Vec<u32>) -> Result<Bytes, BoxError> {
//!         let line: Vec<String> = value.iter().map(u32::to_string).collect();
//!         Ok(Bytes::from(line.join(",")))
//!     }
//! }
//!
//! impl Decoder<Vec<u32>> for Csv {
//!     fn decode(body: &Bytes) -> Result<Vec<u32>, BoxError> {
//!         let text = std::str::from_utf8(body)?;
//!         Ok(text.split(',').map(str::parse).collect::<Result<_, _>>()?)
//!     }
//! }
//!
//! #[courier::client(name = "stats")]
//! trait Stats {
//!     #[post("/sum")]
//!     #[codec(Csv)]
//!     async fn running_sums(&self, #[body] values: Vec<u32>) -> Result<Vec<u32>, courier::Error>;
//! }
//! ```
//!
//! `()`, `String` and `bytes::Bytes` return values are the body as it is,
//! whatever the codec (dropped, UTF-8 text, raw bytes); `#[form]` is always
//! a form. An encoding error fails the call before anything is sent, as
//! [`ErrorKind::InvalidRequest`] naming the type and the codec; a decoding
//! error is [`ErrorKind::Decode`], naming the type and the codec and
//! keeping a snippet of the body.
//!
//! ## Decoders of return values
//!
//! The macro picks a decoder from the written return type, at compile time:
//!
//! | return type            | decoder               | body                         |
//! |------------------------|-----------------------|------------------------------|
//! | `()`                   | [`Unit`]              | read and dropped             |
//! | `String`               | [`Utf8`]              | UTF-8 text                   |
//! | `bytes::Bytes`         | [`RawBytes`]          | as received                  |
//! | `Option<T>`            | [`Opt<D>`]            | 404 → `None`, else `Some(D)` |
//! | `courier::Response<T>` | [`Resp<D>`]           | status + headers + `D`       |
//! | `courier::BodyStream`  | [`Streamed`]          | read later, as it arrives    |
//! | any other `T`          | [`Decoded<C, T>`]     | through the codec `C`        |
//!
//! A decoder is a type, not a value, so choosing one costs nothing at run
//! time. Request bodies are encoded in [`crate::request::RequestParts`].

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::stream::BodyStream;
use crate::{BoxError, Error, ErrorKind};

/// A wire format: its media type. What it writes and reads is said by
/// [`Encoder`] and [`Decoder`] implementations.
///
/// The media type must be a valid header value (visible ASCII): a client
/// using a codec whose type is not fails to build, rather than every call
/// failing at run time.
///
/// ```compile_fail,E0080
/// use bytes::Bytes;
/// use courier::codec::{Codec, Decoder};
/// use courier::{BoxError, Error, client};
///
/// struct Latin;
///
/// impl Codec for Latin {
///     const CONTENT_TYPE: &'static str = "text/plain; charset=\"latin-é\"";
/// }
///
/// impl Decoder<u64> for Latin {
///     fn decode(body: &Bytes) -> Result<u64, BoxError> {
///         Ok(std::str::from_utf8(body)?.parse()?)
///     }
/// }
///
/// #[client(name = "numbers")]
/// trait Numbers {
///     #[get("/n")]
///     #[codec(Latin)]
///     async fn n(&self) -> Result<u64, Error>;
/// }
///
/// async fn call(numbers: &NumbersClient) -> Result<u64, Error> {
///     numbers.n().await // error[E0080]: a codec's CONTENT_TYPE must be a valid header value
/// }
/// # fn main() {
/// #     let runtime = tokio::runtime::Builder::new_current_thread().build();
/// #     let numbers = NumbersClient::builder().base_url("http://127.0.0.1:9").build();
/// #     if let (Ok(runtime), Ok(numbers)) = (runtime, numbers) {
/// #         let _ = runtime.block_on(call(&numbers));
/// #     }
/// # }
/// ```
pub trait Codec: 'static {
    /// The media type: `Content-Type` of the bodies it encodes, `Accept` of
    /// the calls whose answer it decodes.
    const CONTENT_TYPE: &'static str;

    /// How errors name the format (`"JSON"`); the media type unless set.
    const NAME: &'static str = Self::CONTENT_TYPE;
}

/// A codec that can write a `T` as a request body.
#[diagnostic::on_unimplemented(
    message = "the codec `{Self}` cannot encode `{T}`",
    label = "the `#[body]` this codec writes",
    note = "name a codec that writes `{T}` in `#[codec(…)]` (JSON, the default, writes any `serde::Serialize`), or implement `courier::codec::Encoder<{T}>` for `{Self}`"
)]
pub trait Encoder<T: ?Sized>: Codec {
    /// The body's bytes.
    ///
    /// # Errors
    /// When the value has no form in this format; courier turns it into an
    /// [`ErrorKind::InvalidRequest`] naming the type and the codec, and sends
    /// nothing.
    fn encode(value: &T) -> Result<Bytes, BoxError>;
}

/// A codec that can read a `T` from a response body.
#[diagnostic::on_unimplemented(
    message = "the codec `{Self}` cannot decode `{T}`",
    label = "the return value this codec reads",
    note = "name a codec that reads `{T}` in `#[codec(…)]` (JSON, the default, reads any `serde::de::DeserializeOwned`), or implement `courier::codec::Decoder<{T}>` for `{Self}`"
)]
pub trait Decoder<T>: Codec {
    /// The value the body holds.
    ///
    /// # Errors
    /// When the body is not a `T` in this format; courier turns it into an
    /// [`ErrorKind::Decode`] naming the type and the codec, with a snippet
    /// of the body.
    fn decode(body: &Bytes) -> Result<T, BoxError>;
}

/// JSON via serde: the default codec.
#[derive(Debug, Clone, Copy)]
pub struct Json;

impl Codec for Json {
    const CONTENT_TYPE: &'static str = "application/json";
    const NAME: &'static str = "JSON";
}

impl<T: Serialize + ?Sized> Encoder<T> for Json {
    #[inline]
    fn encode(value: &T) -> Result<Bytes, BoxError> {
        Ok(Bytes::from(serde_json::to_vec(value)?))
    }
}

impl<T: DeserializeOwned> Decoder<T> for Json {
    #[inline]
    fn decode(body: &Bytes) -> Result<T, BoxError> {
        Ok(serde_json::from_slice(body)?)
    }
}

/// `application/x-www-form-urlencoded` via serde: flat structs and maps.
/// (`#[form]` on a parameter always uses it.)
#[derive(Debug, Clone, Copy)]
pub struct Form;

impl Codec for Form {
    const CONTENT_TYPE: &'static str = "application/x-www-form-urlencoded";
    const NAME: &'static str = "application/x-www-form-urlencoded";
}

impl<T: Serialize + ?Sized> Encoder<T> for Form {
    fn encode(value: &T) -> Result<Bytes, BoxError> {
        Ok(Bytes::from(serde_urlencoded::to_string(value)?))
    }
}

impl<T: DeserializeOwned> Decoder<T> for Form {
    fn decode(body: &Bytes) -> Result<T, BoxError> {
        Ok(serde_urlencoded::from_bytes(body)?)
    }
}

/// Plain UTF-8 text: writes anything `Display`, reads anything `FromStr`
/// (a number, an id, an enum with its own parser) from the whole body, one
/// trailing line ending aside.
#[derive(Debug, Clone, Copy)]
pub struct Text;

impl Codec for Text {
    const CONTENT_TYPE: &'static str = "text/plain; charset=utf-8";
    const NAME: &'static str = "text";
}

impl<T: fmt::Display + ?Sized> Encoder<T> for Text {
    fn encode(value: &T) -> Result<Bytes, BoxError> {
        Ok(Bytes::from(value.to_string()))
    }
}

impl<T: FromStr> Decoder<T> for Text
where
    T::Err: fmt::Display,
{
    fn decode(body: &Bytes) -> Result<T, BoxError> {
        let text = std::str::from_utf8(body)?;
        // One line ending, as `echo` and most text answers add, is not part
        // of the value.
        let text = text
            .strip_suffix('\n')
            .map_or(text, |t| t.strip_suffix('\r').unwrap_or(t));
        text.parse()
            .map_err(|e: T::Err| BoxError::from(e.to_string()))
    }
}

/// Raw bytes, `application/octet-stream`.
#[derive(Debug, Clone, Copy)]
pub struct Binary;

impl Codec for Binary {
    const CONTENT_TYPE: &'static str = "application/octet-stream";
    const NAME: &'static str = "bytes";
}

impl<T: AsRef<[u8]> + ?Sized> Encoder<T> for Binary {
    fn encode(value: &T) -> Result<Bytes, BoxError> {
        Ok(Bytes::copy_from_slice(value.as_ref()))
    }
}

impl Decoder<Bytes> for Binary {
    fn decode(body: &Bytes) -> Result<Bytes, BoxError> {
        Ok(body.clone())
    }
}

impl Decoder<Vec<u8>> for Binary {
    fn decode(body: &Bytes) -> Result<Vec<u8>, BoxError> {
        Ok(body.to_vec())
    }
}

/// MessagePack via `rmp-serde` (feature `msgpack`): structs as maps, so a
/// field added on one side does not shift the others.
#[cfg(feature = "msgpack")]
#[derive(Debug, Clone, Copy)]
pub struct MessagePack;

#[cfg(feature = "msgpack")]
impl Codec for MessagePack {
    const CONTENT_TYPE: &'static str = "application/msgpack";
    const NAME: &'static str = "MessagePack";
}

#[cfg(feature = "msgpack")]
impl<T: Serialize + ?Sized> Encoder<T> for MessagePack {
    fn encode(value: &T) -> Result<Bytes, BoxError> {
        Ok(Bytes::from(rmp_serde::to_vec_named(value)?))
    }
}

#[cfg(feature = "msgpack")]
impl<T: DeserializeOwned> Decoder<T> for MessagePack {
    fn decode(body: &Bytes) -> Result<T, BoxError> {
        Ok(rmp_serde::from_slice(body)?)
    }
}

/// Encodes a request body with `C`, naming the type and the codec when it
/// cannot.
pub(crate) fn encode<C: Encoder<T>, T: ?Sized>(value: &T) -> Result<Bytes, Error> {
    C::encode(value).map_err(|e| {
        Error::invalid_request(format!(
            "the body ({}) could not be encoded as {}: {}",
            std::any::type_name::<T>().trim_start_matches('&'),
            C::NAME,
            bounded(&*e)
        ))
        .with_source(e)
    })
}

/// A codec's own error, as a message line: at most about 160 characters
/// (its start and its end, where serde says the line and column), since a
/// decoder may quote the whole value it could not read, and a body can be
/// megabytes (or hold a token). The whole error stays in `source()`.
fn bounded(e: &(dyn std::error::Error + 'static)) -> String {
    const HEAD: usize = 100;
    const TAIL: usize = 40;
    let text = e.to_string();
    let chars = text.chars().count();
    if chars <= HEAD + TAIL + 20 {
        return text;
    }
    let head: String = text.chars().take(HEAD).collect();
    let tail: String = text.chars().skip(chars - TAIL).collect();
    format!(
        "{head}… ({} characters left out) …{tail}",
        chars - HEAD - TAIL
    )
}

/// Whether `s` can be a header value as it is: visible ASCII, spaces and
/// tabs, what `HeaderValue::from_static` accepts. Checked at compile time
/// for every codec's media type.
pub(crate) const fn is_header_text(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b == b' ' || b == b'\t' || (b >= 0x21 && b < 0x7f)) {
            return false;
        }
        i += 1;
    }
    true
}

/// Decodes a successful response into a method's return type.
///
/// Implemented by the marker types of this module; generated code names one
/// per method. Not meant to be implemented outside courier.
pub trait Decode: 'static {
    /// What the method returns on success.
    type Output: Send;

    /// Whether a `404 Not Found` is a value (`Option<T>` → `None`) rather
    /// than an error.
    const NOT_FOUND_IS_VALUE: bool = false;

    /// The `accept` header to send, if this decoder wants one.
    const ACCEPT: Option<&'static str> = None;

    /// Whether it reads any body, whatever the status (`()`, `Bytes`,
    /// `String`).
    const ANY_BODY: bool = false;

    /// Whether a redirect that is not followed is a value (a
    /// `Response<()>` shows the 3xx and its `Location`) rather than an
    /// error.
    const REDIRECT_IS_VALUE: bool = false;

    /// Builds the value from a response whose status is a success (or a 404
    /// when [`Self::NOT_FOUND_IS_VALUE`]). `headers` may be taken.
    ///
    /// # Errors
    /// An error of kind [`ErrorKind::Decode`] when the body is not what the
    /// return type needs; the caller adds the status and a body snippet.
    fn decode(
        status: StatusCode,
        headers: &mut HeaderMap,
        body: &Bytes,
    ) -> Result<Self::Output, Error>;

    /// Whether a success hands the body over unread, as a [`BodyStream`]
    /// ([`decode_stream`](Self::decode_stream) is called instead of
    /// [`decode`](Self::decode)).
    const STREAM: bool = false;

    /// Builds the value from a success whose body is read later, for a
    /// decoder with [`Self::STREAM`].
    ///
    /// # Errors
    /// From a decoder that does not stream: never called for one.
    fn decode_stream(
        _status: StatusCode,
        _headers: &mut HeaderMap,
        _body: BodyStream,
    ) -> Result<Self::Output, Error> {
        Err(Error::new(
            ErrorKind::Decode,
            "this return type reads the whole body, not a stream",
        ))
    }
}

/// Hands the body over as a [`BodyStream`], read as it arrives.
pub struct Streamed;

impl Decode for Streamed {
    type Output = BodyStream;
    const STREAM: bool = true;

    fn decode(_: StatusCode, _: &mut HeaderMap, body: &Bytes) -> Result<BodyStream, Error> {
        // Not reached for a success (`decode_stream` is); kept whole for
        // completeness.
        Ok(BodyStream::from_chunks([body.clone()]))
    }

    fn decode_stream(
        _: StatusCode,
        _: &mut HeaderMap,
        body: BodyStream,
    ) -> Result<BodyStream, Error> {
        Ok(body)
    }
}

/// Decodes the body into `T` with the codec `C` (`Decoded<Json, User>` for
/// a method returning `User`).
pub struct Decoded<C, T>(PhantomData<fn() -> (C, T)>);

impl<C: Decoder<T>, T: Send + 'static> Decode for Decoded<C, T> {
    type Output = T;
    const ACCEPT: Option<&'static str> = {
        assert!(
            is_header_text(C::CONTENT_TYPE),
            "a codec's CONTENT_TYPE must be a valid header value (visible ASCII)"
        );
        Some(C::CONTENT_TYPE)
    };

    #[inline]
    fn decode(_: StatusCode, _: &mut HeaderMap, body: &Bytes) -> Result<T, Error> {
        C::decode(body).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!(
                    "expected {} for `{}`: {}",
                    C::NAME,
                    std::any::type_name::<T>(),
                    bounded(&*e)
                ),
            )
            .with_source(e)
        })
    }
}

/// Returns the body as UTF-8 text.
pub struct Utf8;

impl Decode for Utf8 {
    type Output = String;
    const ANY_BODY: bool = true;

    fn decode(_: StatusCode, _: &mut HeaderMap, body: &Bytes) -> Result<String, Error> {
        String::from_utf8(body.to_vec()).map_err(|e| {
            Error::new(ErrorKind::Decode, "expected UTF-8 text for `String`").with_source(e)
        })
    }
}

/// Returns the body as received.
pub struct RawBytes;

impl Decode for RawBytes {
    type Output = Bytes;
    const ANY_BODY: bool = true;

    fn decode(_: StatusCode, _: &mut HeaderMap, body: &Bytes) -> Result<Bytes, Error> {
        Ok(body.clone())
    }
}

/// Ignores the body.
pub struct Unit;

impl Decode for Unit {
    type Output = ();
    const ANY_BODY: bool = true;

    fn decode(_: StatusCode, _: &mut HeaderMap, _: &Bytes) -> Result<(), Error> {
        Ok(())
    }
}

/// `404 Not Found` becomes `None`; any success is `Some` of the inner decoder.
pub struct Opt<D>(PhantomData<fn() -> D>);

impl<D: Decode> Decode for Opt<D> {
    type Output = Option<D::Output>;
    const NOT_FOUND_IS_VALUE: bool = true;
    const ACCEPT: Option<&'static str> = D::ACCEPT;

    fn decode(
        status: StatusCode,
        headers: &mut HeaderMap,
        body: &Bytes,
    ) -> Result<Self::Output, Error> {
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        D::decode(status, headers, body).map(Some)
    }

    const STREAM: bool = D::STREAM;

    fn decode_stream(
        status: StatusCode,
        headers: &mut HeaderMap,
        body: BodyStream,
    ) -> Result<Self::Output, Error> {
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        D::decode_stream(status, headers, body).map(Some)
    }
}

/// Keeps the status and headers next to the decoded body.
pub struct Resp<D>(PhantomData<fn() -> D>);

impl<D: Decode> Decode for Resp<D> {
    type Output = Response<D::Output>;
    const NOT_FOUND_IS_VALUE: bool = D::NOT_FOUND_IS_VALUE;
    const ACCEPT: Option<&'static str> = D::ACCEPT;
    const REDIRECT_IS_VALUE: bool = D::ANY_BODY;

    fn decode(
        status: StatusCode,
        headers: &mut HeaderMap,
        body: &Bytes,
    ) -> Result<Self::Output, Error> {
        let body = D::decode(status, headers, body)?;
        Ok(Response {
            status,
            headers: std::mem::take(headers),
            body,
        })
    }

    const STREAM: bool = D::STREAM;

    fn decode_stream(
        status: StatusCode,
        headers: &mut HeaderMap,
        body: BodyStream,
    ) -> Result<Self::Output, Error> {
        let body = D::decode_stream(status, headers, body)?;
        Ok(Response {
            status,
            headers: std::mem::take(headers),
            body,
        })
    }
}

/// A decoded body with the status and headers it came with: return
/// `Result<courier::Response<T>, Error>` from a client method to see them.
///
/// ```
/// # #[derive(serde::Deserialize)] struct User { id: u64 }
/// fn etag(resp: &courier::Response<User>) -> Option<&str> {
///     resp.headers().get("etag")?.to_str().ok()
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Response<T> {
    status: StatusCode,
    headers: HeaderMap,
    body: T,
}

impl<T> Response<T> {
    /// Builds a response by hand, e.g. in a fake or a fallback.
    pub fn new(status: StatusCode, headers: HeaderMap, body: T) -> Self {
        Response {
            status,
            headers,
            body,
        }
    }

    /// The status the service answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The decoded body.
    pub fn body(&self) -> &T {
        &self.body
    }

    /// Takes the decoded body, dropping status and headers.
    pub fn into_body(self) -> T {
        self.body
    }

    /// Splits into status, headers and body.
    pub fn into_parts(self) -> (StatusCode, HeaderMap, T) {
        (self.status, self.headers, self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type JsonOf<T> = Decoded<Json, T>;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct User {
        id: u64,
        name: String,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any body decodes or fails as a decode error naming the type;
        /// text decodes exactly when the body is UTF-8; bytes always.
        #[test]
        fn any_body_decodes_or_is_a_decode_error(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let body = Bytes::from(body);
            let mut headers = HeaderMap::new();
            match JsonOf::<User>::decode(StatusCode::OK, &mut headers, &body) {
                Ok(user) => prop_assert_eq!(serde_json::from_slice::<User>(&body).ok(), Some(user)),
                Err(e) => {
                    prop_assert_eq!(e.kind(), ErrorKind::Decode);
                    prop_assert!(e.to_string().contains("User"));
                }
            }
            let text = Utf8::decode(StatusCode::OK, &mut headers, &body);
            prop_assert_eq!(text.is_ok(), std::str::from_utf8(&body).is_ok());
            prop_assert_eq!(RawBytes::decode(StatusCode::OK, &mut headers, &body).ok(), Some(body.clone()));
            let absent = Opt::<JsonOf<User>>::decode(StatusCode::NOT_FOUND, &mut headers, &body);
            prop_assert!(matches!(absent, Ok(None)));
        }

        /// The compile-time check of a codec's media type accepts exactly
        /// what a header value may hold, so `from_static` never panics.
        #[test]
        fn the_media_type_check_agrees_with_header_values(text in any::<String>()) {
            let accepted = is_header_text(&text);
            prop_assert_eq!(accepted, !text.is_empty() && http::HeaderValue::from_str(&text).is_ok()
                && text.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)));
        }

        /// A codec's error in a message line is bounded, and keeps its end
        /// (where serde says the line and column).
        #[test]
        fn a_codec_error_in_a_message_is_bounded(text in ".{0,400}") {
            let e = std::io::Error::other(text.clone());
            let shown = bounded(&e);
            prop_assert!(shown.chars().count() <= 200, "{}", shown);
            let tail: String = text.chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            prop_assert!(shown.ends_with(&tail));
        }

        /// Well-formed JSON of the type always decodes.
        #[test]
        fn valid_json_always_decodes(id in any::<u64>(), name in any::<String>()) {
            let body = Bytes::from(serde_json::json!({ "id": id, "name": name }).to_string());
            let decoded = JsonOf::<User>::decode(StatusCode::OK, &mut HeaderMap::new(), &body);
            prop_assert_eq!(decoded.ok(), Some(User { id, name }));
        }
    }
}

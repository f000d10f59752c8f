//! Turning a response into a method's return value.
//!
//! The macro picks a decoder from the written return type, at compile time:
//!
//! | return type            | decoder               | body                         |
//! |------------------------|-----------------------|------------------------------|
//! | `()`                   | [`Unit`]              | read and dropped             |
//! | `String`               | [`Text`]              | UTF-8 text                   |
//! | `bytes::Bytes`         | [`RawBytes`]          | as received                  |
//! | `Option<T>`            | [`Opt<D>`]            | 404 → `None`, else `Some(D)` |
//! | `courier::Response<T>` | [`Resp<D>`]           | status + headers + `D`       |
//! | any other `T`          | [`Json<T>`]           | JSON via serde               |
//!
//! A decoder is a type, not a value, so choosing one costs nothing at run
//! time. Request bodies are encoded in [`crate::request::RequestParts`].

use std::marker::PhantomData;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::{Error, ErrorKind};

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
}

/// Decodes a JSON body into `T`.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T: DeserializeOwned + Send + 'static> Decode for Json<T> {
    type Output = T;
    const ACCEPT: Option<&'static str> = Some("application/json");

    fn decode(_: StatusCode, _: &mut HeaderMap, body: &Bytes) -> Result<T, Error> {
        serde_json::from_slice(body).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("expected JSON for `{}`: {e}", std::any::type_name::<T>()),
            )
            .with_source(e)
        })
    }
}

/// Returns the body as UTF-8 text.
pub struct Text;

impl Decode for Text {
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
            match Json::<User>::decode(StatusCode::OK, &mut headers, &body) {
                Ok(user) => prop_assert_eq!(serde_json::from_slice::<User>(&body).ok(), Some(user)),
                Err(e) => {
                    prop_assert_eq!(e.kind(), ErrorKind::Decode);
                    prop_assert!(e.to_string().contains("User"));
                }
            }
            let text = Text::decode(StatusCode::OK, &mut headers, &body);
            prop_assert_eq!(text.is_ok(), std::str::from_utf8(&body).is_ok());
            prop_assert_eq!(RawBytes::decode(StatusCode::OK, &mut headers, &body).ok(), Some(body.clone()));
            let absent = Opt::<Json<User>>::decode(StatusCode::NOT_FOUND, &mut headers, &body);
            prop_assert!(matches!(absent, Ok(None)));
        }

        /// Well-formed JSON of the type always decodes.
        #[test]
        fn valid_json_always_decodes(id in any::<u64>(), name in any::<String>()) {
            let body = Bytes::from(serde_json::json!({ "id": id, "name": name }).to_string());
            let decoded = Json::<User>::decode(StatusCode::OK, &mut HeaderMap::new(), &body);
            prop_assert_eq!(decoded.ok(), Some(User { id, name }));
        }
    }
}

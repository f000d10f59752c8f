//! `multipart/form-data` request bodies: `#[multipart]` parameters.
//!
//! Each `#[multipart]` parameter is one part named after it (or
//! `#[multipart("name")]`), in the order of the parameters:
//!
//! | parameter type                    | becomes                                         |
//! |-----------------------------------|-------------------------------------------------|
//! | [`Part`]                          | that part (a file: bytes or a path, with a file name and content type) |
//! | [`StreamPart`]                    | a part read from a stream as the body is sent (read once: the method is never retried) |
//! | anything `Display` (`&str`, numbers) | a text field                                 |
//! | `Option<…>`                       | left out when `None`                            |
//! | `Vec<…>`, `&[…]`, `[…; N]`        | one part per item, all under the same name      |
//!
//! ```
//! use courier::multipart::Part;
//! use courier::{Error, client};
//!
//! #[courier::client(name = "documents")]
//! trait Documents {
//!     #[post("/documents")]
//!     async fn upload(
//!         &self,
//!         #[multipart] title: &str,
//!         #[multipart("file")] files: Vec<Part>,
//!     ) -> Result<(), Error>;
//! }
//!
//! # async fn send(docs: &DocumentsClient) -> Result<(), Error> {
//! let scan = Part::bytes(vec![0x25, 0x50, 0x44, 0x46])
//!     .file_name("scan.pdf")
//!     .content_type("application/pdf");
//! let notes = Part::file("notes.txt").await?; // file name and type from the path
//! docs.upload("Q3 report", vec![scan, notes]).await
//! # }
//! ```
//!
//! Without a `StreamPart`, the body is assembled once per call, before
//! anything is sent, so every attempt of a retried or hedged call sends the
//! same bytes; a file part
//! read from a path is read then (`Part::file` reads it when awaited).
//! Names and file names are escaped as the HTML standard's form encoding
//! does (`"` → `%22`, CR → `%0D`, LF → `%0A`), and `\` → `%5C`, which a
//! reader honouring quoted-pairs would otherwise take as an escape. A
//! name, file name or content type that cannot be written into a part's
//! headers (a NUL, another control character) fails the call with an
//! [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest) naming
//! the part; nothing is sent.
//!
//! Hand-written rather than a crate: the encoder is some forty lines, and
//! the crates that write multipart bodies are tied to their HTTP client
//! (reqwest's would bind the hyper transport to reqwest) or to blocking
//! I/O (`common-multipart-rfc7578`). The content type of a file read from
//! a path is guessed with `mime_guess`.

use std::fmt;
use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};

use crate::Error;
use crate::stream::BodyStream;

/// One part of a `multipart/form-data` body: a file or a text value, with
/// an optional file name and content type. Its name is the parameter's.
#[derive(Clone)]
pub struct Part {
    body: Bytes,
    file_name: Option<String>,
    content_type: Option<String>,
}

impl Part {
    /// A part holding these bytes (no file name, no content type: set them
    /// with [`file_name`](Self::file_name) and
    /// [`content_type`](Self::content_type)).
    pub fn bytes(body: impl Into<Bytes>) -> Part {
        Part {
            body: body.into(),
            file_name: None,
            content_type: None,
        }
    }

    /// A text part.
    pub fn text(text: impl Into<String>) -> Part {
        Part::bytes(Bytes::from(text.into()))
    }

    /// A file part read from `path`: its file name is the path's last
    /// component, its content type guessed from the extension
    /// (`application/octet-stream` when unknown).
    ///
    /// # Errors
    /// An [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest)
    /// naming the path when it cannot be read.
    pub async fn file(path: impl AsRef<Path>) -> Result<Part, Error> {
        let path = path.as_ref();
        let body = tokio::fs::read(path).await.map_err(|e| {
            Error::invalid_request(format!(
                "the multipart file `{}` could not be read: {e}",
                path.display()
            ))
            .with_source(e)
        })?;
        let guessed = mime_guess::from_path(path).first_or_octet_stream();
        Ok(Part {
            body: Bytes::from(body),
            file_name: path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned()),
            content_type: Some(guessed.essence_str().to_owned()),
        })
    }

    /// Sets the file name sent in the part's `Content-Disposition`.
    #[must_use]
    pub fn file_name(mut self, name: impl Into<String>) -> Part {
        self.file_name = Some(name.into());
        self
    }

    /// Sets the part's `Content-Type` (`image/png`, say). Checked when the
    /// call is made.
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> Part {
        self.content_type = Some(content_type.into());
        self
    }

    /// The part's bytes.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part")
            .field("len", &self.body.len())
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// What a `#[multipart]` value can be: a [`Part`], or a text field written
/// with `Display`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a multipart part",
    label = "a `#[multipart]` value is a `courier::multipart::Part` or a `Display` text field",
    note = "wrap bytes in `Part::bytes(…)`, or read a file with `Part::file(path).await?`"
)]
pub trait PartValue {
    /// Appends this value as a part named `name`.
    #[doc(hidden)]
    fn append_to(&self, name: &str, body: &mut MultipartBody) -> Result<(), Error>;
}

impl PartValue for Part {
    fn append_to(&self, name: &str, body: &mut MultipartBody) -> Result<(), Error> {
        let head = head(
            name,
            self.file_name.as_deref(),
            self.content_type.as_deref(),
        )?;
        // `Bytes` shares the part's buffer: a large file is not copied.
        body.parts.push((head, Content::Bytes(self.body.clone())));
        Ok(())
    }
}

impl<T: fmt::Display + ?Sized> PartValue for T {
    fn append_to(&self, name: &str, body: &mut MultipartBody) -> Result<(), Error> {
        body.push(name, self.to_string().as_bytes(), None, None)
    }
}

/// The parts of one call's body, gathered before it is encoded (generated
/// code fills it; not API).
#[doc(hidden)]
#[derive(Default)]
pub struct MultipartBody {
    /// Each part's header block and body, in order.
    parts: Vec<(String, Content)>,
}

/// A part's content: bytes, or a stream read as the body is sent.
enum Content {
    Bytes(Bytes),
    Stream(BodyStream),
}

/// A part whose content is a stream, read as the body is sent
/// (`#[multipart] file: StreamPart`): for a file too large to hold. Such a
/// body is read once, so the method is never retried or hedged (a
/// method-level `#[retry]` or `#[hedge]` is a compile error) and has no
/// fallback.
///
/// ```
/// use bytes::Bytes;
/// use courier::BodyStream;
/// use courier::multipart::StreamPart;
///
/// let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("…"))]);
/// let part = StreamPart::new(BodyStream::from_stream(chunks))
///     .file_name("dump.bin")
///     .content_type("application/octet-stream");
/// # let _ = part;
/// ```
pub struct StreamPart {
    body: BodyStream,
    file_name: Option<String>,
    content_type: Option<String>,
}

impl StreamPart {
    /// A part read from `body`.
    pub fn new(body: BodyStream) -> StreamPart {
        StreamPart {
            body,
            file_name: None,
            content_type: None,
        }
    }

    /// Sets the file name sent in the part's `Content-Disposition`.
    #[must_use]
    pub fn file_name(mut self, name: impl Into<String>) -> StreamPart {
        self.file_name = Some(name.into());
        self
    }

    /// Sets the part's `Content-Type`. Checked when the call is made.
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> StreamPart {
        self.content_type = Some(content_type.into());
        self
    }
}

impl fmt::Debug for StreamPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamPart")
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl MultipartBody {
    /// An empty body.
    pub fn new() -> Self {
        MultipartBody::default()
    }

    /// Appends `value` as a part named `name`.
    ///
    /// # Errors
    /// When the name, file name or content type cannot be written into the
    /// part's headers.
    #[inline]
    pub fn append(&mut self, name: &str, value: &(impl PartValue + ?Sized)) -> Result<(), Error> {
        value.append_to(name, self)
    }

    /// Appends a streamed part named `name`.
    ///
    /// # Errors
    /// As [`append`](Self::append).
    pub fn append_stream(&mut self, name: &str, part: StreamPart) -> Result<(), Error> {
        let head = head(
            name,
            part.file_name.as_deref(),
            part.content_type.as_deref(),
        )?;
        self.parts.push((head, Content::Stream(part.body)));
        Ok(())
    }

    fn push(
        &mut self,
        name: &str,
        body: &[u8],
        file_name: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<(), Error> {
        let head = head(name, file_name, content_type)?;
        self.parts
            .push((head, Content::Bytes(Bytes::copy_from_slice(body))));
        Ok(())
    }

    /// Encodes the parts with a fresh boundary that occurs in none of them
    /// (in none of the whole ones: a streamed part cannot be searched, and
    /// 24 random characters only collide on purpose, which a sender that
    /// cannot see the boundary cannot do); returns the body, whole or as a
    /// stream when a part is one, and its `Content-Type`.
    pub(crate) fn encode(self) -> (Encoded, String) {
        let boundary = loop {
            let boundary = random_boundary();
            let finder = memchr::memmem::Finder::new(boundary.as_bytes());
            if !self.parts.iter().any(|(head, content)| {
                head.contains(&boundary)
                    || matches!(content, Content::Bytes(body) if finder.find(body).is_some())
            }) {
                break boundary;
            }
        };
        let content_type = format!("multipart/form-data; boundary={boundary}");
        if self
            .parts
            .iter()
            .any(|(_, content)| matches!(content, Content::Stream(_)))
        {
            return (Encoded::Stream(stream(self.parts, boundary)), content_type);
        }
        let size: usize = self
            .parts
            .iter()
            .map(|(head, content)| {
                let len = match content {
                    Content::Bytes(body) => body.len(),
                    Content::Stream(_) => 0,
                };
                boundary.len() + head.len() + len + 10
            })
            .sum::<usize>()
            + boundary.len()
            + 6;
        let mut out = BytesMut::with_capacity(size);
        for (head, content) in &self.parts {
            out.put_slice(&delimiter(&boundary, head));
            if let Content::Bytes(body) = content {
                out.put_slice(body);
            }
            out.put_slice(b"\r\n");
        }
        out.put_slice(&closing(&boundary));
        (Encoded::Whole(out.freeze()), content_type)
    }
}

/// An encoded multipart body.
pub(crate) enum Encoded {
    Whole(Bytes),
    Stream(BodyStream),
}

/// `--boundary CRLF head CRLF`: what precedes a part's content.
fn delimiter(boundary: &str, head: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(boundary.len() + head.len() + 6);
    out.put_slice(b"--");
    out.put_slice(boundary.as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(head.as_bytes());
    out.put_slice(b"\r\n");
    out.freeze()
}

/// `--boundary-- CRLF`: the end of the body.
fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("--{boundary}--\r\n"))
}

/// The body as a stream: each part's delimiter and content in turn, a
/// streamed part's chunks as they come.
fn stream(parts: Vec<(String, Content)>, boundary: String) -> BodyStream {
    use futures_util::StreamExt as _;
    let closing = closing(&boundary);
    let pieces = parts.into_iter().map(move |(head, content)| {
        let before = futures_util::stream::iter([Ok(delimiter(&boundary, &head))]);
        let after = futures_util::stream::iter([Ok(Bytes::from_static(b"\r\n"))]);
        match content {
            Content::Bytes(body) => before
                .chain(futures_util::stream::iter([Ok(body)]))
                .chain(after)
                .boxed(),
            Content::Stream(body) => before.chain(body).chain(after).boxed(),
        }
    });
    let all = futures_util::stream::iter(pieces)
        .flatten()
        .chain(futures_util::stream::iter([Ok::<_, Error>(closing)]));
    BodyStream::from_stream(all)
}

/// A part's header block, its names escaped.
fn head(name: &str, file_name: Option<&str>, content_type: Option<&str>) -> Result<String, Error> {
    let mut head = String::with_capacity(64 + name.len());
    head.push_str("Content-Disposition: form-data; name=\"");
    push_quoted(&mut head, name, "name", name)?;
    head.push('"');
    if let Some(file_name) = file_name {
        head.push_str("; filename=\"");
        push_quoted(&mut head, file_name, "file name", name)?;
        head.push('"');
    }
    head.push_str("\r\n");
    if let Some(content_type) = content_type {
        if content_type.is_empty()
            || content_type
                .chars()
                .any(|c| c.is_control() || !c.is_ascii())
        {
            return Err(Error::invalid_request(format!(
                "multipart part `{name}` has an invalid content type (empty, or a control \
                 or non-ASCII character)"
            )));
        }
        head.push_str("Content-Type: ");
        head.push_str(content_type);
        head.push_str("\r\n");
    }
    Ok(head)
}

/// `courier-` and 24 letters and digits no one outside can predict.
///
/// Not `fastrand`: its generator can be predicted from its output, and a
/// boundary is seen by whoever receives the body. Someone who supplies a
/// streamed part (an upload a proxy passes on) and saw earlier boundaries
/// could then write the next one into the part and forge parts. Each
/// boundary is instead SipHash, keyed once per process by the standard
/// library from the OS's randomness (`RandomState`), of a counter: a keyed
/// PRF, without a new dependency for `getrandom`.
fn random_boundary() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let key = KEY.get_or_init(std::collections::hash_map::RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut boundary = String::with_capacity(32);
    boundary.push_str("courier-");
    for half in 0..2u8 {
        let mut hasher = key.build_hasher();
        hasher.write_u64(n);
        hasher.write_u8(half);
        let mut bits = hasher.finish();
        // 12 characters from 64 bits (the last of them carry little: 64
        // bits are 10.7 characters' worth); the 24 carry 128 bits.
        for _ in 0..12 {
            boundary.push(char::from(ALPHABET[(bits % 62) as usize]));
            bits /= 62;
        }
    }
    boundary
}

/// Writes `value` inside a quoted `Content-Disposition` parameter as the
/// HTML standard's form encoding does: `"` as `%22`, CR as `%0D`, LF as
/// `%0A`, and a backslash as `%5C`; a NUL or another control character is
/// refused, naming `part`.
fn push_quoted(out: &mut String, value: &str, what: &str, part: &str) -> Result<(), Error> {
    for c in value.chars() {
        match c {
            '"' => out.push_str("%22"),
            // Readers that honour quoted-pairs (multer) would take `\"` as an
            // escaped quote and lose the rest of the name.
            '\\' => out.push_str("%5C"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c if c.is_control() => {
                return Err(Error::invalid_request(format!(
                    "multipart part `{}` has a {what} with a control character",
                    part.escape_debug()
                )));
            }
            c => out.push(c),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(body: MultipartBody) -> (Bytes, String) {
        match body.encode() {
            (Encoded::Whole(bytes), content_type) => (bytes, content_type),
            (Encoded::Stream(_), _) => panic!("no part streams"),
        }
    }

    /// Splits an encoded body back into (headers, body) per part, by the
    /// boundary in the content type.
    fn split(body: &[u8], content_type: &str) -> Vec<(String, Vec<u8>)> {
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap_or_default();
        let delimiter = format!("--{boundary}");
        let text = body.to_vec();
        let mut parts = Vec::new();
        let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
        let starts: Vec<usize> = finder.find_iter(&text).collect();
        for pair in starts.windows(2) {
            let chunk = &text[pair[0] + delimiter.len() + 2..pair[1] - 2];
            let split_at = memchr::memmem::find(chunk, b"\r\n\r\n").unwrap_or(0);
            let head = String::from_utf8_lossy(&chunk[..split_at]).into_owned();
            parts.push((head, chunk[split_at + 4..].to_vec()));
        }
        let last = starts.last().copied().unwrap_or(0);
        assert_eq!(&text[last + delimiter.len()..], b"--\r\n");
        parts
    }

    #[test]
    fn boundaries_differ_and_are_letters_and_digits() {
        let boundaries: std::collections::HashSet<String> =
            (0..1000).map(|_| random_boundary()).collect();
        assert_eq!(boundaries.len(), 1000);
        for boundary in &boundaries {
            let random = boundary.strip_prefix("courier-").unwrap_or_default();
            assert_eq!(random.len(), 24, "{boundary}");
            assert!(
                random.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{boundary}"
            );
        }
    }

    #[test]
    fn names_are_escaped_and_control_characters_refused() {
        let mut body = MultipartBody::new();
        let part = Part::bytes("x").file_name("a\"b\r\nc.txt");
        assert!(body.append("we\"ird", &part).is_ok());
        let (bytes, content_type) = whole(body);
        let parts = split(&bytes, &content_type);
        assert_eq!(
            parts[0].0,
            "Content-Disposition: form-data; name=\"we%22ird\"; filename=\"a%22b%0D%0Ac.txt\""
        );

        let mut body = MultipartBody::new();
        let err = body.append("f\0", "x").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("`f\\0`") && e.contains("control")));
        let bad = Part::bytes("x").content_type("text/plain\r\nX-Evil: 1");
        let err = body.append("f", &bad).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("`f`") && e.contains("content type")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any parts, whatever bytes they hold (a boundary look-alike, CRLFs,
        /// dashes), come back exactly, in order.
        #[test]
        fn any_parts_split_back_exactly(
            parts in prop::collection::vec(
                ("[a-z]{1,8}", prop::collection::vec(any::<u8>(), 0..64), prop::option::of("[a-z.]{1,8}")),
                0..5,
            )
        ) {
            let mut body = MultipartBody::new();
            for (name, bytes, file_name) in &parts {
                let mut part = Part::bytes(bytes.clone());
                if let Some(file_name) = file_name {
                    part = part.file_name(file_name.clone());
                }
                prop_assert!(body.append(name, &part).is_ok());
            }
            let (encoded, content_type) = whole(body);
            let back = split(&encoded, &content_type);
            prop_assert_eq!(back.len(), parts.len());
            for ((head, bytes), (name, sent, file_name)) in back.iter().zip(&parts) {
                prop_assert_eq!(bytes, sent);
                let mut expected = format!("Content-Disposition: form-data; name=\"{name}\"");
                if let Some(file_name) = file_name {
                    expected.push_str(&format!("; filename=\"{file_name}\""));
                }
                prop_assert_eq!(head, &expected);
            }
        }
    }
}

//! Request bodies of [`Agent::on_request`](crate::Agent::on_request): streamed, size-limited,
//! with helpers for small bodies (bytes, text, JSON) and a `multipart/form-data` reader.
//!
//! An agent receives an [`HttpRequest`] (`http::Request<RequestBody>`). The body is not read
//! before the hook runs: it arrives as an [`http_body::Body`] that the hook reads at its own pace,
//! so a large upload can go to disk chunk by chunk and is never held in memory whole.
//!
//! * Small bodies: [`RequestExt::bytes`], [`RequestExt::text`], [`RequestExt::json`].
//! * Uploads: [`RequestExt::multipart`] → [`Multipart`] → [`Field::chunk`].
//! * Anything else: the body itself (`req.body_mut().frame()`, `http_body_util::BodyStream`, …).
//!
//! Every body is bounded by its limit: [`Limits::max_request_body`](crate::Limits::max_request_body)
//! (1 MiB) unless [`Agent::max_request_body`](crate::Agent::max_request_body) says otherwise for the
//! request (per agent or per route). A request whose `Content-Length` announces more is answered
//! `413` before the agent sees it (and before any of its body is read); a body without a length
//! (chunked) fails with [`RequestError::TooLarge`] as soon as its bytes pass the limit.
//!
//! Errors are [`RequestError`]s. Returned from `on_request` with `?` (they convert into
//! [`BoxError`]) they are answered with their own status (`400`, `413`, `415`) and message
//! instead of `500`, and are not reported to [`Agent::on_error`](crate::Agent::on_error):
//!
//! ```
//! use agentwire::{Agent, Body, BoxError, Context, HttpRequest, RequestExt};
//! use agentwire::body::response;
//! use http::Response;
//!
//! #[derive(serde::Deserialize)]
//! struct NewTodo { title: String }
//!
//! struct Todos;
//!
//! impl Agent for Todos {
//!     type State = serde_json::Value;
//!
//!     async fn on_request(&mut self, _cx: &mut Context<Self>, mut req: HttpRequest)
//!         -> Result<Response<Body>, BoxError> {
//!         // `{"title": 1}` or a body that is not JSON: `400 invalid JSON body: …`
//!         let todo: NewTodo = req.json().await?;
//!         Ok(response::json(&serde_json::json!({ "created": todo.title })))
//!     }
//! }
//! ```

use crate::agent::BoxError;
use crate::body::{response, Body};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

/// The request an agent's [`on_request`](crate::Agent::on_request) receives.
pub type HttpRequest = Request<RequestBody>;

/// A request body: the client's bytes as they arrive, bounded by a size limit.
///
/// It is an [`http_body::Body`] (`Data = Bytes`, `Error = RequestError`). Reading past the
/// limit yields [`RequestError::TooLarge`]; so does the first read when the body announces
/// (`Content-Length`) more than the limit.
pub struct RequestBody {
    inner: Option<UnsyncBoxBody<Bytes, BoxError>>,
    limit: u64,
    read: u64,
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("limit", &self.limit)
            .field("read", &self.read)
            .field("done", &self.inner.is_none())
            .finish()
    }
}

impl RequestBody {
    /// Wraps any body (e.g. hyper's `Incoming`), failing once more than `limit` bytes came.
    pub fn new<B>(body: B, limit: u64) -> Self
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let body = body
            .map_frame(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
            .map_err(Into::into);
        Self {
            inner: Some(UnsyncBoxBody::new(body)),
            limit,
            read: 0,
        }
    }

    /// A body with no bytes.
    pub fn empty() -> Self {
        Self {
            inner: None,
            limit: 0,
            read: 0,
        }
    }

    /// A complete body (for calling an agent's `on_request` directly, e.g. in tests); its
    /// limit is its length.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        let len = b.len() as u64;
        Self::new(http_body_util::Full::new(b), len)
    }

    /// The most bytes this body may carry.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reads the whole body (at most [`limit`](Self::limit) bytes).
    pub async fn bytes(self) -> Result<Bytes, RequestError> {
        let mut body = self;
        let mut out = BytesMut::new();
        let mut single: Option<Bytes> = None;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                // One chunk is returned as is (no copy); more are joined.
                match single.take() {
                    None if out.is_empty() => single = Some(data),
                    None => out.extend_from_slice(&data),
                    Some(prev) => {
                        let announced = body.size_hint().lower().min(body.limit);
                        out.reserve(prev.len() + data.len() + announced as usize);
                        out.extend_from_slice(&prev);
                        out.extend_from_slice(&data);
                    }
                }
            }
        }
        Ok(single.unwrap_or_else(|| out.freeze()))
    }

    /// Reads the whole body as UTF-8 text.
    pub async fn text(self) -> Result<String, RequestError> {
        let b = self.bytes().await?;
        String::from_utf8(b.to_vec()).map_err(|_| RequestError::Utf8)
    }

    /// Reads the whole body and deserialises it from JSON.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, RequestError> {
        let b = self.bytes().await?;
        serde_json::from_slice(&b).map_err(RequestError::Json)
    }
}

impl Default for RequestBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for RequestBody {
    fn from(b: Bytes) -> Self {
        Self::from_bytes(b)
    }
}

impl From<String> for RequestBody {
    fn from(s: String) -> Self {
        Self::from_bytes(s)
    }
}

impl From<&'static str> for RequestBody {
    fn from(s: &'static str) -> Self {
        Self::from_bytes(Bytes::from_static(s.as_bytes()))
    }
}

impl From<Vec<u8>> for RequestBody {
    fn from(v: Vec<u8>) -> Self {
        Self::from_bytes(v)
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = RequestError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestError>>> {
        let limit = self.limit;
        let room = limit.saturating_sub(self.read);
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if inner.size_hint().lower() > room {
            // More announced than allowed: fail before reading any of it.
            self.inner = None;
            return Poll::Ready(Some(Err(RequestError::TooLarge { limit })));
        }
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.inner = None;
                Poll::Ready(Some(Err(RequestError::Read(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.read += d.len() as u64;
                    if self.read > limit {
                        self.inner = None;
                        return Poll::Ready(Some(Err(RequestError::TooLarge { limit })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// A request that could not be read or understood. As an error of `on_request` it is answered
/// with [`status`](Self::status) and its message as plain text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The body (or its announced length) is larger than the limit: `413`.
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Reading the body failed (the client went away, or broke the framing): `400`.
    #[error("reading the request body failed: {0}")]
    Read(BoxError),
    /// The body is not valid UTF-8: `400`.
    #[error("request body is not UTF-8")]
    Utf8,
    /// The body is not the expected JSON: `400`.
    #[error("invalid JSON body: {0}")]
    Json(serde_json::Error),
    /// [`RequestExt::multipart`] on a request whose `Content-Type` is not
    /// `multipart/form-data` with a boundary: `415`.
    #[error("expected a multipart/form-data body with a boundary")]
    NotMultipart,
    /// The multipart body is malformed: `400`.
    #[error("malformed multipart body: {0}")]
    Multipart(String),
    /// A required form field is missing: `400`.
    #[error("form field {0:?} is missing")]
    MissingField(String),
    /// A form field is larger than its limit ([`MultipartLimits`]): `413`.
    #[error("form field {name:?} larger than {limit} bytes")]
    FieldTooLarge {
        /// The field's name.
        name: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// More form fields than [`MultipartLimits::max_fields`]: `413`.
    #[error("more than {0} form fields")]
    TooManyFields(usize),
}

impl RequestError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::TooLarge { .. }
            | RequestError::FieldTooLarge { .. }
            | RequestError::TooManyFields(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::NotMultipart => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            // the client stopped sending (Limits::request_body_timeout)
            RequestError::Read(e) if e.is::<crate::BodyTimeout>() => StatusCode::REQUEST_TIMEOUT,
            RequestError::Read(_)
            | RequestError::Utf8
            | RequestError::Json(_)
            | RequestError::Multipart(_)
            | RequestError::MissingField(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The plain-text response for this error.
    pub fn to_response(&self) -> Response<Body> {
        response::text(self.status(), self.to_string())
    }
}

/// Body helpers on [`HttpRequest`]. Each takes the body out of the request (leaving an empty
/// one), so the method, URI and headers stay available.
pub trait RequestExt {
    /// Takes the body out of the request.
    fn take_body(&mut self) -> RequestBody;

    /// Reads the whole body ([`RequestBody::bytes`]).
    fn bytes(&mut self) -> impl Future<Output = Result<Bytes, RequestError>> + Send {
        self.take_body().bytes()
    }

    /// Reads the whole body as UTF-8 text.
    fn text(&mut self) -> impl Future<Output = Result<String, RequestError>> + Send {
        self.take_body().text()
    }

    /// Reads the whole body as JSON; a body that does not parse into `T` is a `400`.
    fn json<T: DeserializeOwned>(
        &mut self,
    ) -> impl Future<Output = Result<T, RequestError>> + Send {
        self.take_body().json()
    }

    /// A `multipart/form-data` reader over the streamed body, with the default
    /// [`MultipartLimits`] (change them with [`Multipart::with_limits`]).
    fn multipart(&mut self) -> Result<Multipart, RequestError>;
}

impl RequestExt for HttpRequest {
    fn take_body(&mut self) -> RequestBody {
        std::mem::take(self.body_mut())
    }

    fn multipart(&mut self) -> Result<Multipart, RequestError> {
        let body = self.take_body();
        Multipart::new(self.headers(), body)
    }
}

// ===== multipart =====

/// Limits of a [`Multipart`] reader, on top of the body's own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MultipartLimits {
    /// Most fields (parts) in the form. Default 100.
    pub max_fields: usize,
    /// Largest field without a file name (a text field). Default 64 KiB.
    pub max_field_bytes: u64,
    /// Largest file field (one with a `filename`). Default: unlimited here, i.e. bounded by
    /// the body limit.
    pub max_file_bytes: u64,
    /// Most bytes read while looking for the next part's headers (boundary, headers, any
    /// preamble): the multipart parser holds them in memory until the headers end. Default
    /// 64 KiB.
    pub max_part_head_bytes: u64,
}

impl Default for MultipartLimits {
    fn default() -> Self {
        Self {
            max_fields: 100,
            max_field_bytes: 64 << 10,
            max_file_bytes: u64::MAX,
            max_part_head_bytes: 64 << 10,
        }
    }
}

impl MultipartLimits {
    /// Sets [`max_fields`](Self::max_fields).
    pub fn with_max_fields(mut self, n: usize) -> Self {
        self.max_fields = n;
        self
    }

    /// Sets [`max_field_bytes`](Self::max_field_bytes).
    pub fn with_max_field_bytes(mut self, n: u64) -> Self {
        self.max_field_bytes = n;
        self
    }

    /// Sets [`max_file_bytes`](Self::max_file_bytes).
    pub fn with_max_file_bytes(mut self, n: u64) -> Self {
        self.max_file_bytes = n;
        self
    }

    /// Sets [`max_part_head_bytes`](Self::max_part_head_bytes).
    pub fn with_max_part_head_bytes(mut self, n: u64) -> Self {
        self.max_part_head_bytes = n;
        self
    }
}

/// A `multipart/form-data` reader on a streamed [`RequestBody`] (parsing by the `multer`
/// crate). Fields come one at a time, in order; a field's data is read chunk by chunk, so
/// a file can go to disk without being held in memory.
///
/// ```
/// # use agentwire::{RequestExt, HttpRequest, RequestError};
/// # async fn upload(mut req: HttpRequest) -> Result<(String, usize), RequestError> {
/// let mut form = req.multipart()?; // 415 unless multipart/form-data
/// let file = form.field("file").await?; // 400 if there is no field `file`
/// let filename = file.file_name().unwrap_or_default().to_owned();
/// let content = file.bytes().await?; // or `file.chunk()` in a loop, for large files
/// # Ok((filename, content.len()))
/// # }
/// ```
pub struct Multipart {
    inner: multer::Multipart<'static>,
    current: Option<Field>,
    limits: MultipartLimits,
    fields: usize,
    pulled: Arc<AtomicU64>,
}

impl fmt::Debug for Multipart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Multipart")
            .field("limits", &self.limits)
            .field("fields", &self.fields)
            .finish()
    }
}

impl Multipart {
    /// A reader for `body`, whose boundary is taken from the `Content-Type` in `headers`.
    pub fn new(headers: &HeaderMap, body: RequestBody) -> Result<Self, RequestError> {
        let boundary = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| multer::parse_boundary(ct).ok())
            .ok_or(RequestError::NotMultipart)?;
        let pulled = Arc::new(AtomicU64::new(0));
        let counter = pulled.clone();
        let stream = http_body_util::BodyDataStream::new(body).inspect(move |r| {
            if let Ok(b) = r {
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
        });
        Ok(Self {
            inner: multer::Multipart::new(stream, boundary),
            current: None,
            limits: MultipartLimits::default(),
            fields: 0,
            pulled,
        })
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: MultipartLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The next field, or `None` after the last. What is left of the previous field is
    /// skipped (read and dropped).
    pub async fn next_field(&mut self) -> Result<Option<&mut Field>, RequestError> {
        if let Some(mut prev) = self.current.take() {
            while prev.inner.chunk().await.map_err(multer_error)?.is_some() {}
        }
        let start = self.pulled.load(Ordering::Relaxed);
        let max_head = self.limits.max_part_head_bytes;
        let field = {
            let pulled = &self.pulled;
            let mut next = std::pin::pin!(self.inner.next_field());
            // The parser buffers what it reads until the part's headers end: bound it.
            std::future::poll_fn(|cx| match next.as_mut().poll(cx) {
                Poll::Pending
                    if pulled.load(Ordering::Relaxed).saturating_sub(start) > max_head =>
                {
                    Poll::Ready(Err(RequestError::Multipart(format!(
                        "part headers longer than {max_head} bytes"
                    ))))
                }
                Poll::Pending => Poll::Pending,
                Poll::Ready(r) => Poll::Ready(r.map_err(multer_error)),
            })
            .await?
        };
        let Some(field) = field else {
            return Ok(None);
        };
        self.fields += 1;
        if self.fields > self.limits.max_fields {
            return Err(RequestError::TooManyFields(self.limits.max_fields));
        }
        let limit = if field.file_name().is_some() {
            self.limits.max_file_bytes
        } else {
            self.limits.max_field_bytes
        };
        Ok(Some(self.current.insert(Field {
            inner: field,
            limit,
            read: 0,
        })))
    }

    /// The first field named `name` (the ones before it are skipped); a
    /// [`RequestError::MissingField`] (`400`) if there is none.
    pub async fn field(&mut self, name: &str) -> Result<&mut Field, RequestError> {
        loop {
            match self.next_field().await? {
                Some(f) if f.name() == Some(name) => break,
                Some(_) => {}
                None => return Err(RequestError::MissingField(name.to_owned())),
            }
        }
        Ok(self
            .current
            .as_mut()
            .expect("the field found is the current one"))
    }
}

fn multer_error(e: multer::Error) -> RequestError {
    match e {
        multer::Error::StreamReadFailed(inner) => match inner.downcast::<RequestError>() {
            Ok(e) => *e,
            Err(inner) => RequestError::Read(inner),
        },
        multer::Error::FieldSizeExceeded { limit, field_name } => RequestError::FieldTooLarge {
            name: field_name.unwrap_or_default(),
            limit,
        },
        multer::Error::StreamSizeExceeded { limit } => RequestError::TooLarge { limit },
        multer::Error::NoMultipart | multer::Error::NoBoundary => RequestError::NotMultipart,
        other => RequestError::Multipart(other.to_string()),
    }
}

/// One field of a [`Multipart`] form.
pub struct Field {
    inner: multer::Field<'static>,
    limit: u64,
    read: u64,
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Field")
            .field("name", &self.name())
            .field("file_name", &self.file_name())
            .field("read", &self.read)
            .finish()
    }
}

impl Field {
    /// The field's name (`name` of its `Content-Disposition`).
    pub fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    /// The file name, for a file field (`filename` of its `Content-Disposition`), as the
    /// client sent it: do not use it as a path without checking it.
    pub fn file_name(&self) -> Option<&str> {
        self.inner.file_name()
    }

    /// The field's `Content-Type`, if it has one.
    pub fn content_type(&self) -> Option<&str> {
        self.inner.content_type().map(|m| m.as_ref())
    }

    /// The field's headers.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The next chunk of the field's data, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, RequestError> {
        let Some(c) = self.inner.chunk().await.map_err(multer_error)? else {
            return Ok(None);
        };
        self.read += c.len() as u64;
        if self.read > self.limit {
            return Err(RequestError::FieldTooLarge {
                name: self.name().unwrap_or_default().to_owned(),
                limit: self.limit,
            });
        }
        Ok(Some(c))
    }

    /// The rest of the field's data, in memory (bounded by the field's limit).
    pub async fn bytes(&mut self) -> Result<Bytes, RequestError> {
        let mut out = BytesMut::new();
        while let Some(c) = self.chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out.freeze())
    }

    /// The rest of the field's data as UTF-8 text.
    pub async fn text(&mut self) -> Result<String, RequestError> {
        let b = self.bytes().await?;
        String::from_utf8(b.to_vec()).map_err(|_| RequestError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn form(body: &'static str) -> (HeaderMap, RequestBody) {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=XX"),
        );
        (
            h,
            RequestBody::new(http_body_util::Full::new(Bytes::from(body)), 1 << 20),
        )
    }

    #[tokio::test]
    async fn body_over_the_limit_fails_before_it_is_read() {
        let body = RequestBody::new(http_body_util::Full::new(Bytes::from(vec![0u8; 10])), 9);
        assert!(matches!(
            body.bytes().await,
            Err(RequestError::TooLarge { limit: 9 })
        ));
        let body = RequestBody::new(http_body_util::Full::new(Bytes::from(vec![0u8; 9])), 9);
        assert_eq!(body.bytes().await.unwrap().len(), 9);
    }

    #[tokio::test]
    async fn json_errors_are_400() {
        let e = RequestBody::from("{\"a\":")
            .json::<serde_json::Value>()
            .await;
        let e = e.unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.to_string().starts_with("invalid JSON body"), "{e}");
    }

    #[tokio::test]
    async fn reads_fields_and_enforces_field_limits() {
        let (h, b) = form(
            "--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
             --XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
             Content-Type: text/plain\r\n\r\nfile body\r\n--XX--\r\n",
        );
        let mut m = Multipart::new(&h, b).unwrap();
        let f = m.field("file").await.unwrap();
        assert_eq!(f.file_name(), Some("a.txt"));
        assert_eq!(f.content_type(), Some("text/plain"));
        assert_eq!(f.text().await.unwrap(), "file body");
        assert!(m.next_field().await.unwrap().is_none());

        let (h, b) = form(
            "--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XX--\r\n",
        );
        let mut m = Multipart::new(&h, b)
            .unwrap()
            .with_limits(MultipartLimits::default().with_max_field_bytes(4));
        let e = m.field("note").await.unwrap().bytes().await.unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn malformed_and_missing_are_400_and_wrong_type_is_415() {
        let (h, b) = form("--XX\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nno end");
        let mut m = Multipart::new(&h, b).unwrap();
        let e = match m.field("file").await {
            Ok(f) => f.bytes().await.unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");

        let (h, b) =
            form("--XX\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--XX--\r\n");
        let e = Multipart::new(&h, b)
            .unwrap()
            .field("file")
            .await
            .unwrap_err();
        assert!(matches!(e, RequestError::MissingField(_)));

        let e = Multipart::new(&HeaderMap::new(), RequestBody::empty()).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}

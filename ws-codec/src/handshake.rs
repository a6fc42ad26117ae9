//! The opening handshake (RFC 6455 §4): server side from [`http::request::Parts`] or raw bytes,
//! client side request building and response verification. No IO: bytes in, bytes or `http`
//! values out; bytes read past the HTTP head are reported so they can go to the
//! [`Connection`](crate::Connection).

use crate::error::HandshakeError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use sha1::{Digest, Sha1};
use std::fmt;

/// The GUID appended to the client key (RFC 6455 §1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest HTTP head accepted by [`parse_request`] / [`ClientHandshake::parse_response`].
///
/// 8 KiB, like common servers' default, because a handshake has no business being larger and
/// the head is buffered whole before parsing.
pub const MAX_HEAD_LEN: usize = 8 * 1024;

/// A suggested header-array size for [`parse_request`]: 32 headers.
pub const MAX_HEADERS: usize = 32;

/// `Sec-WebSocket-Accept` for a client key: base64 of SHA-1(key ++ GUID), 28 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AcceptKey([u8; 28]);

impl AcceptKey {
    /// The key as text.
    pub fn as_str(&self) -> &str {
        // base64 output is ASCII
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for AcceptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AcceptKey({})", self.as_str())
    }
}

impl fmt::Display for AcceptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Computes `Sec-WebSocket-Accept` from the client's `Sec-WebSocket-Key` (as sent, base64).
pub fn accept_key(client_key: &[u8]) -> AcceptKey {
    let mut h = Sha1::new();
    h.update(client_key);
    h.update(GUID.as_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 28];
    // 20 bytes encode to exactly 28 base64 characters
    let n = B64.encode_slice(digest, &mut out).unwrap_or(0);
    debug_assert_eq!(n, 28);
    AcceptKey(out)
}

/// `true` if a comma-separated header (any of its lines) contains `token`, case-insensitively.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The comma-separated tokens of a header, all lines.
fn tokens(headers: &HeaderMap, name: HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

// ===== server =====

/// A valid upgrade request, ready to be accepted or rejected.
#[derive(Debug, Clone)]
pub struct Upgrade {
    key: HeaderValue,
    protocols: Vec<String>,
    extensions: Vec<String>,
    uri: Uri,
}

/// How to accept an [`Upgrade`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Accept {
    /// The subprotocol to select; must be one the client offered.
    pub protocol: Option<String>,
    /// Extra headers for the 101 response.
    pub headers: HeaderMap,
    /// permessage-deflate parameters to accept (from
    /// [`Upgrade::negotiate_deflate`]); written as `Sec-WebSocket-Extensions`.
    #[cfg(feature = "deflate")]
    pub deflate: Option<crate::deflate::Negotiated>,
}

impl Accept {
    /// Accepts permessage-deflate with these parameters (give the same to
    /// [`Config::with_deflate`](crate::Config::with_deflate)).
    #[cfg(feature = "deflate")]
    pub fn with_deflate(mut self, n: crate::deflate::Negotiated) -> Self {
        self.deflate = Some(n);
        self
    }

    /// Selects a subprotocol.
    pub fn with_protocol(mut self, p: impl Into<String>) -> Self {
        self.protocol = Some(p.into());
        self
    }
}

/// Checks a parsed upgrade request (RFC 6455 §4.2.1): `GET`, HTTP/1.1 or later, `Host`,
/// `Upgrade: websocket`, `Connection: upgrade`, a 16-byte `Sec-WebSocket-Key`,
/// `Sec-WebSocket-Version: 13`. The error's [`status`](HandshakeError::status) is the HTTP
/// status to answer with; see also [`reject`].
pub fn from_parts(req: &http::request::Parts) -> Result<Upgrade, HandshakeError> {
    if req.method != Method::GET {
        return Err(HandshakeError::Method);
    }
    if req.version < Version::HTTP_11 {
        return Err(HandshakeError::Version);
    }
    let h = &req.headers;
    if !h.contains_key(header::HOST) {
        return Err(HandshakeError::Header("host"));
    }
    if !has_token(h, header::UPGRADE, "websocket") {
        return Err(HandshakeError::Header("upgrade"));
    }
    if !has_token(h, header::CONNECTION, "upgrade") {
        return Err(HandshakeError::Header("connection"));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(HandshakeError::WsVersion);
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::Header("sec-websocket-key"))?;
    let mut raw = [0u8; 18];
    match B64.decode_slice(key.as_bytes().trim_ascii(), &mut raw) {
        Ok(16) => {}
        _ => return Err(HandshakeError::Header("sec-websocket-key")),
    }
    Ok(Upgrade {
        key: key.clone(),
        protocols: tokens(h, header::SEC_WEBSOCKET_PROTOCOL),
        extensions: tokens(h, header::SEC_WEBSOCKET_EXTENSIONS),
        uri: req.uri.clone(),
    })
}

/// A head parse as `Some(head length)`, `None` (read more) or the error; a head still
/// incomplete after [`MAX_HEAD_LEN`] bytes, or with too many headers, is too large.
fn head_status(
    parsed: httparse::Result<usize>,
    buffered: usize,
) -> Result<Option<usize>, HandshakeError> {
    match parsed {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buffered > MAX_HEAD_LEN => Err(HandshakeError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HandshakeError::TooLarge),
        Err(e) => Err(HandshakeError::Http(e.to_string())),
    }
}

/// Parses an upgrade request from raw bytes with `httparse` into the caller's header array
/// (its length bounds the header count; [`MAX_HEADERS`] is a good size).
///
/// `Ok(None)`: the head is incomplete, read more (and call again with the whole buffer).
/// `Ok(Some((upgrade, n)))`: the head is `buf[..n]`; `buf[n..]` are the first WebSocket bytes.
/// A head longer than [`MAX_HEAD_LEN`] or with too many headers is
/// [`HandshakeError::TooLarge`].
pub fn parse_request<'b>(
    buf: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Result<Option<(Upgrade, usize)>, HandshakeError> {
    let mut req = httparse::Request::new(headers);
    let Some(n) = head_status(req.parse(buf), buf.len())? else {
        return Ok(None);
    };
    if n > MAX_HEAD_LEN {
        return Err(HandshakeError::TooLarge);
    }
    let mut b = Request::builder()
        .method(req.method.unwrap_or("GET"))
        .uri(req.path.unwrap_or("/"))
        .version(if req.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        });
    for h in req.headers.iter() {
        b = b.header(h.name, h.value);
    }
    let (parts, ()) = b
        .body(())
        .map_err(|e| HandshakeError::Http(e.to_string()))?
        .into_parts();
    Ok(Some((from_parts(&parts)?, n)))
}

impl Upgrade {
    /// The subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> impl Iterator<Item = &str> {
        self.protocols.iter().map(String::as_str)
    }

    /// The extensions the client offered, one element per item (`name; param; param=value`),
    /// in the client's order.
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        self.extensions.iter().map(String::as_str)
    }

    /// The permessage-deflate parameters to accept under `policy`, or `None` when the client
    /// offered none acceptable (see [`DeflateConfig::negotiate`](crate::deflate::DeflateConfig::negotiate)).
    #[cfg(feature = "deflate")]
    pub fn negotiate_deflate(
        &self,
        policy: &crate::deflate::DeflateConfig,
    ) -> Option<crate::deflate::Negotiated> {
        policy.negotiate(self.extensions())
    }

    /// The request target.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The first protocol in the client's preference order that `supported` contains.
    pub fn select_protocol<'a>(&self, supported: &[&'a str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .find_map(|p| supported.iter().copied().find(|s| s == p))
    }

    /// The `101 Switching Protocols` response. A protocol in `opts` that the client did not
    /// offer is not sent (RFC 6455 §4.2.2 forbids selecting one that was not offered).
    pub fn accept(&self, opts: Accept) -> Response<()> {
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        let key = accept_key(self.key.as_bytes().trim_ascii());
        if let Ok(v) = HeaderValue::from_str(key.as_str()) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(p) = opts
            .protocol
            .filter(|p| self.protocols.iter().any(|o| o == p))
        {
            if let Ok(v) = HeaderValue::from_str(&p) {
                h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
        #[cfg(feature = "deflate")]
        if let Some(n) = opts.deflate {
            h.insert(header::SEC_WEBSOCKET_EXTENSIONS, n.response_header());
        }
        h.extend(opts.headers);
        res
    }

    /// A refusal with `status` (e.g. 403 after an auth check).
    pub fn reject(&self, status: StatusCode) -> Response<()> {
        reject_with(status)
    }
}

fn reject_with(status: StatusCode) -> Response<()> {
    let mut res = Response::new(());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    if status == StatusCode::UPGRADE_REQUIRED {
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        res.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    res
}

/// The response to send for a failed request: the error's status, plus
/// `Sec-WebSocket-Version: 13` for a wrong version (RFC 6455 §4.4).
pub fn reject(err: &HandshakeError) -> Response<()> {
    reject_with(err.status())
}

/// Writes an HTTP/1.1 response head (status line, headers, blank line) to `dst`.
pub fn encode_response(res: &Response<()>, dst: &mut BytesMut) {
    let s = res.status();
    dst.put_slice(b"HTTP/1.1 ");
    dst.put_slice(s.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(s.canonical_reason().unwrap_or("").as_bytes());
    dst.put_slice(b"\r\n");
    encode_headers(res.headers(), dst);
}

fn encode_headers(h: &HeaderMap, dst: &mut BytesMut) {
    for (name, value) in h {
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    dst.put_slice(b"\r\n");
}

// ===== client =====

/// Options for [`ClientHandshake::new`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// Extra request headers (e.g. `Authorization`, `Origin`).
    pub headers: HeaderMap,
    /// permessage-deflate to offer.
    #[cfg(feature = "deflate")]
    pub deflate: Option<crate::deflate::DeflateConfig>,
}

impl ClientOptions {
    /// Adds a subprotocol to offer.
    pub fn with_protocol(mut self, p: impl Into<String>) -> Self {
        self.protocols.push(p.into());
        self
    }

    /// Offers permessage-deflate with this policy.
    #[cfg(feature = "deflate")]
    pub fn with_deflate(mut self, policy: crate::deflate::DeflateConfig) -> Self {
        self.deflate = Some(policy);
        self
    }

    /// Adds a request header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

/// A verified `101` response.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Accepted {
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
    /// The response head.
    pub response: Response<()>,
    /// The permessage-deflate parameters the server accepted; give them to
    /// [`Config::with_deflate`](crate::Config::with_deflate).
    #[cfg(feature = "deflate")]
    pub deflate: Option<crate::deflate::Negotiated>,
}

/// The client side of the handshake: holds the key it sent so the response can be verified.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    accept: AcceptKey,
    protocols: Vec<String>,
    #[cfg(feature = "deflate")]
    deflate: Option<crate::deflate::DeflateConfig>,
}

impl ClientHandshake {
    /// Builds the upgrade request for a `ws://` / `wss://` URI with a fresh random key.
    pub fn new(uri: &Uri, opts: ClientOptions) -> Result<(Self, Request<()>), HandshakeError> {
        let default_port = match uri.scheme_str() {
            Some("ws") | Some("http") => 80,
            Some("wss") | Some("https") => 443,
            _ => return Err(HandshakeError::Uri),
        };
        let auth = uri.authority().ok_or(HandshakeError::Uri)?;
        let host = match auth.port_u16() {
            Some(p) if p != default_port => format!("{}:{p}", auth.host()),
            _ => auth.host().to_owned(),
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut raw = [0u8; 16];
        let mut src = crate::connection::send_masks();
        raw[..8].copy_from_slice(&src.next_u64().to_ne_bytes());
        raw[8..].copy_from_slice(&src.next_u64().to_ne_bytes());
        let key = B64.encode(raw);
        let mut b = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, host)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_KEY, key.as_str())
            .header(header::SEC_WEBSOCKET_VERSION, "13");
        if !opts.protocols.is_empty() {
            b = b.header(header::SEC_WEBSOCKET_PROTOCOL, opts.protocols.join(", "));
        }
        #[cfg(feature = "deflate")]
        if let Some(d) = &opts.deflate {
            b = b.header(header::SEC_WEBSOCKET_EXTENSIONS, d.offer());
        }
        let mut req = b.body(()).map_err(|_| HandshakeError::Uri)?;
        req.headers_mut().extend(opts.headers);
        Ok((
            ClientHandshake {
                accept: accept_key(key.as_bytes()),
                protocols: opts.protocols,
                #[cfg(feature = "deflate")]
                deflate: opts.deflate,
            },
            req,
        ))
    }

    /// Writes a request head built by [`new`](Self::new) as HTTP/1.1 bytes.
    pub fn encode_request(req: &Request<()>, dst: &mut BytesMut) {
        dst.put_slice(req.method().as_str().as_bytes());
        dst.put_u8(b' ');
        dst.put_slice(
            req.uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
        );
        dst.put_slice(b" HTTP/1.1\r\n");
        encode_headers(req.headers(), dst);
    }

    /// Parses and verifies the response from raw bytes. `Ok(None)`: read more. On success,
    /// `buf[n..]` are the first WebSocket bytes and belong to the connection.
    pub fn parse_response(&self, buf: &[u8]) -> Result<Option<(Accepted, usize)>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let Some(n) = head_status(res.parse(buf), buf.len())? else {
            return Ok(None);
        };
        let mut b = Response::builder().status(res.code.unwrap_or(0));
        for h in res.headers.iter() {
            b = b.header(h.name, h.value);
        }
        let response = b
            .body(())
            .map_err(|e| HandshakeError::Http(e.to_string()))?;
        let (parts, ()) = response.into_parts();
        let acc = self.verify_response(&parts)?;
        Ok(Some((acc, n)))
    }

    /// Verifies a response head obtained elsewhere (e.g. from hyper): status 101, `Upgrade`,
    /// `Connection`, `Sec-WebSocket-Accept`, and that any selected protocol was offered and no
    /// extension was selected.
    pub fn verify_response(&self, res: &http::response::Parts) -> Result<Accepted, HandshakeError> {
        if res.status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(HandshakeError::Status(res.status.as_u16()));
        }
        let h = &res.headers;
        if !has_token(h, header::UPGRADE, "websocket") {
            return Err(HandshakeError::Header("upgrade"));
        }
        if !has_token(h, header::CONNECTION, "upgrade") {
            return Err(HandshakeError::Header("connection"));
        }
        match h.get(header::SEC_WEBSOCKET_ACCEPT) {
            Some(v) if v.as_bytes().trim_ascii() == self.accept.as_str().as_bytes() => {}
            Some(_) => return Err(HandshakeError::AcceptMismatch),
            None => return Err(HandshakeError::Header("sec-websocket-accept")),
        }
        let protocol = match h.get(header::SEC_WEBSOCKET_PROTOCOL) {
            None => None,
            Some(v) => {
                let p = v.to_str().map_err(|_| HandshakeError::Protocol)?.trim();
                if !self.protocols.iter().any(|o| o == p) {
                    return Err(HandshakeError::Protocol);
                }
                Some(p.to_owned())
            }
        };
        let extensions = tokens(h, header::SEC_WEBSOCKET_EXTENSIONS);
        #[cfg(feature = "deflate")]
        let deflate = match &self.deflate {
            Some(d) => d.accept_response(extensions.iter().map(String::as_str))?,
            None if !extensions.is_empty() => return Err(HandshakeError::Extension),
            None => None,
        };
        #[cfg(not(feature = "deflate"))]
        if !extensions.is_empty() {
            return Err(HandshakeError::Extension);
        }
        let mut response = Response::new(());
        *response.status_mut() = res.status;
        *response.headers_mut() = res.headers.clone();
        Ok(Accepted {
            protocol,
            response,
            #[cfg(feature = "deflate")]
            deflate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_sample_accept_key() {
        // RFC 6455 §1.3
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ==").as_str(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parse_rfc_sample_request_with_leftover() {
        let mut buf = SAMPLE.to_vec();
        buf.extend_from_slice(&[0x81, 0x80]);
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (up, n) = parse_request(&buf, &mut h).unwrap().unwrap();
        assert_eq!(n, SAMPLE.len());
        assert_eq!(&buf[n..], &[0x81, 0x80]);
        assert_eq!(up.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
        assert_eq!(up.select_protocol(&["superchat", "chat"]), Some("chat"));
        assert_eq!(up.uri().path(), "/chat");
        let res = up.accept(Accept::default().with_protocol("chat"));
        assert_eq!(res.status(), 101);
        assert_eq!(
            res.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(res.headers()["sec-websocket-protocol"], "chat");
        let mut out = BytesMut::new();
        encode_response(&res, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(out.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn partial_and_too_large() {
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert!(parse_request(&SAMPLE[..40], &mut h).unwrap().is_none());
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_LEN + 10, b'a');
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert_eq!(
            parse_request(&big, &mut h).unwrap_err(),
            HandshakeError::TooLarge
        );
        let mut h = [httparse::EMPTY_HEADER; 3];
        let e = parse_request(SAMPLE, &mut h).unwrap_err();
        assert_eq!(e, HandshakeError::TooLarge);
        assert_eq!(reject(&e).status(), 431);
    }

    fn check(req: &str) -> Result<Upgrade, HandshakeError> {
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        parse_request(req.as_bytes(), &mut h).map(|r| r.unwrap().0)
    }

    #[test]
    fn rejections_with_status() {
        let ok = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert!(check(ok).is_ok());
        let e = check(&ok.replace("GET", "POST")).unwrap_err();
        assert_eq!(e.status(), 405);
        let e = check(&ok.replace("Version: 13", "Version: 8")).unwrap_err();
        assert_eq!(e, HandshakeError::WsVersion);
        let r = reject(&e);
        assert_eq!(r.status(), 426);
        assert_eq!(r.headers()["sec-websocket-version"], "13");
        assert_eq!(
            check(&ok.replace("HTTP/1.1", "HTTP/1.0"))
                .unwrap_err()
                .status(),
            505
        );
        assert_eq!(
            check(&ok.replace("Upgrade: WebSocket", "Upgrade: h2c")).unwrap_err(),
            HandshakeError::Header("upgrade")
        );
        assert_eq!(
            check(&ok.replace("keep-alive, Upgrade", "close")).unwrap_err(),
            HandshakeError::Header("connection")
        );
        assert_eq!(
            check(&ok.replace("Host: a\r\n", "")).unwrap_err(),
            HandshakeError::Header("host")
        );
        assert_eq!(
            check(&ok.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="))
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn client_round_trip() {
        let uri: Uri = "ws://example.com:9001/runCase?case=1&agent=x"
            .parse()
            .unwrap();
        let (hs, req) =
            ClientHandshake::new(&uri, ClientOptions::default().with_protocol("chat")).unwrap();
        let mut wire = BytesMut::new();
        ClientHandshake::encode_request(&req, &mut wire);
        assert!(wire.starts_with(b"GET /runCase?case=1&agent=x HTTP/1.1\r\n"));
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (up, _) = parse_request(&wire, &mut h).unwrap().unwrap();
        assert_eq!(up.uri().query(), Some("case=1&agent=x"));
        let res = up.accept(Accept::default().with_protocol("chat"));
        let mut out = BytesMut::new();
        encode_response(&res, &mut out);
        out.extend_from_slice(b"\x81\x00");
        let (acc, n) = hs.parse_response(&out).unwrap().unwrap();
        assert_eq!(acc.protocol.as_deref(), Some("chat"));
        assert_eq!(&out[n..], b"\x81\x00");
        assert!(hs.parse_response(&out[..n - 1]).unwrap().is_none());
        // a different client's key does not verify
        let (other, _) =
            ClientHandshake::new(&uri, ClientOptions::default().with_protocol("chat")).unwrap();
        assert_eq!(
            other.parse_response(&out).unwrap_err(),
            HandshakeError::AcceptMismatch
        );
    }

    #[test]
    fn client_rejects_bad_responses() {
        let uri: Uri = "ws://h/".parse().unwrap();
        let (hs, _) = ClientHandshake::new(&uri, ClientOptions::default()).unwrap();
        let r = b"HTTP/1.1 403 Forbidden\r\n\r\n";
        assert_eq!(
            hs.parse_response(r).unwrap_err(),
            HandshakeError::Status(403)
        );
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            hs.accept
        );
        assert!(hs.parse_response(format!("{good}\r\n").as_bytes()).is_ok());
        let with_proto = format!("{good}Sec-WebSocket-Protocol: chat\r\n\r\n");
        assert_eq!(
            hs.parse_response(with_proto.as_bytes()).unwrap_err(),
            HandshakeError::Protocol
        );
        let with_ext = format!("{good}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
        assert_eq!(
            hs.parse_response(with_ext.as_bytes()).unwrap_err(),
            HandshakeError::Extension
        );
        assert_eq!(
            ClientHandshake::new(&"http2://x/".parse().unwrap(), ClientOptions::default())
                .unwrap_err(),
            HandshakeError::Uri
        );
    }
}

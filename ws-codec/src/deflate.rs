//! permessage-deflate (RFC 7692): negotiation and per-message compression (feature `deflate`).
//!
//! The extension compresses each message with DEFLATE (raw, no zlib header), marks the first
//! frame with RSV1 and strips the 4-byte `00 00 ff ff` tail a sync flush leaves. With *context
//! takeover* (the default) the compressor keeps its sliding window between messages, so a
//! stream of similar JSON frames compresses far better than each frame alone; with
//! `*_no_context_takeover` each message starts afresh.
//!
//! # Negotiation
//!
//! Server: [`Upgrade::negotiate_deflate`](crate::handshake::Upgrade::negotiate_deflate) picks the
//! first acceptable offer (offers with unknown, duplicate or invalid parameters are declined, as
//! RFC 7692 §5 requires) and returns the [`Negotiated`] parameters; put them in
//! [`Accept::with_deflate`](crate::handshake::Accept::with_deflate) (the response header) and
//! [`Config::with_deflate`](crate::Config::with_deflate) (the connection).
//!
//! Client: [`ClientOptions::with_deflate`](crate::handshake::ClientOptions::with_deflate) sends
//! the offer; [`Accepted::deflate`](crate::handshake::Accepted::deflate) holds what the server
//! accepted (a malformed acceptance fails the handshake with
//! `HandshakeError::Extension`); give it to
//! [`Config::with_deflate`](crate::Config::with_deflate).
//!
//! ```
//! use agentwire_ws::deflate::DeflateConfig;
//! use agentwire_ws::handshake::{self, Accept};
//! use agentwire_ws::Config;
//!
//! let req = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
//! Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
//! Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
//! let mut headers = [httparse::EMPTY_HEADER; handshake::MAX_HEADERS];
//! let (upgrade, _) = handshake::parse_request(req, &mut headers).unwrap().unwrap();
//! let pmd = upgrade.negotiate_deflate(&DeflateConfig::default()).expect("offer accepted");
//! let response = upgrade.accept(Accept::default().with_deflate(pmd));
//! assert_eq!(response.headers()["sec-websocket-extensions"], "permessage-deflate");
//! let config = Config::default().with_deflate(Some(pmd));
//! # let _ = config;
//! ```
//!
//! # Limits
//!
//! | setting | default | effect |
//! |---|---|---|
//! | [`Config::max_message`](crate::Config::max_message) | 16 MiB | bound on a message's *inflated* size, checked while inflating: a decompression bomb closes with 1009 once the output passes it, never buffering more (in [`FragmentMode::Stream`](crate::FragmentMode::Stream) it bounds each frame's inflated output) |
//! | [`DeflateConfig::threshold`] | 64 bytes | smaller messages are sent uncompressed |
//! | [`DeflateConfig::level`] | 6 | zlib level (0–9) |
//! | window bits | 15 | negotiable 9–15; a peer that asks for an 8-bit window for our direction gets uncompressed messages (zlib cannot produce 8-bit windows), which RFC 7692 allows |
//!
//! Memory: the compressor (about 270 KiB at 15 window bits, level 6) and the decompressor
//! (about 40 KiB) are allocated on the first message that needs them, not at connection
//! start; a connection that only ever sends small messages never allocates a compressor.
//!
//! Backend: `flate2` on `zlib-rs`, a pure-Rust zlib port (zlib-ng speed, no C toolchain)
//! that, unlike `miniz_oxide`, supports the window sizes RFC 7692 negotiates.

use crate::error::HandshakeError;
use crate::frame::Role;
use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use http::HeaderValue;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The extension token.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The tail a sync flush leaves, stripped from (and re-appended to) every message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What this side offers (client) or accepts (server).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Server: reset our compressor after every message (saves the peer's and our memory
    /// between messages, costs ratio). Client: ask the server to do so.
    ///
    /// The default is `false` (context takeover: best ratio for streams of similar messages).
    pub server_no_context_takeover: bool,
    /// Client: reset our compressor after every message. Server: ask the client to do so
    /// (RFC 7692 lets the server require it even when not offered).
    ///
    /// The default is `false`.
    pub client_no_context_takeover: bool,
    /// Largest window (9–15 bits) the server compresses with. Server: our cap. Client: the
    /// cap we ask for (offered only when below 15).
    ///
    /// The default is 15 (32 KiB window).
    pub server_max_window_bits: u8,
    /// Largest window (9–15 bits) the client compresses with. Client: our cap, offered.
    /// Server: the cap we ask for when the client says it supports the parameter.
    ///
    /// The default is 15.
    pub client_max_window_bits: u8,
    /// Messages shorter than this are sent uncompressed (compression would not pay for its
    /// CPU and the 1–5 bytes of framing it adds to tiny payloads). Messages streamed with
    /// `send_fragment` are always compressed (their size is unknown at the first chunk).
    ///
    /// The default is 64 bytes.
    pub threshold: usize,
    /// zlib compression level 0–9 (values above 9 are treated as 9).
    ///
    /// The default is 6, zlib's and the browsers' default.
    pub level: u32,
    /// Frees the compressor after this long without a compressed message sent (always
    /// possible: the peer's window is not affected by ours starting afresh), and the
    /// decompressor after this long without one received when the peer resets its context
    /// after every message (with the peer's context takeover the decompressor must keep its
    /// window). `None` keeps them for the connection's life.
    ///
    /// The default is 10 s: an idle connection holds no compression memory.
    pub release_after: Option<Duration>,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            threshold: 64,
            level: 6,
            release_after: Some(Duration::from_secs(10)),
        }
    }
}

impl DeflateConfig {
    /// Sets [`server_no_context_takeover`](Self::server_no_context_takeover).
    pub fn with_server_no_context_takeover(mut self, v: bool) -> Self {
        self.server_no_context_takeover = v;
        self
    }
    /// Sets [`client_no_context_takeover`](Self::client_no_context_takeover).
    pub fn with_client_no_context_takeover(mut self, v: bool) -> Self {
        self.client_no_context_takeover = v;
        self
    }
    /// Sets [`server_max_window_bits`](Self::server_max_window_bits) (clamped to 9–15).
    pub fn with_server_max_window_bits(mut self, v: u8) -> Self {
        self.server_max_window_bits = v.clamp(9, 15);
        self
    }
    /// Sets [`client_max_window_bits`](Self::client_max_window_bits) (clamped to 9–15).
    pub fn with_client_max_window_bits(mut self, v: u8) -> Self {
        self.client_max_window_bits = v.clamp(9, 15);
        self
    }
    /// Sets [`release_after`](Self::release_after).
    pub fn with_release_after(mut self, v: Option<Duration>) -> Self {
        self.release_after = v;
        self
    }

    /// Sets [`threshold`](Self::threshold).
    pub fn with_threshold(mut self, v: usize) -> Self {
        self.threshold = v;
        self
    }
    /// Sets [`level`](Self::level).
    pub fn with_level(mut self, v: u32) -> Self {
        self.level = v.min(9);
        self
    }

    /// The client's offer, the value of `Sec-WebSocket-Extensions`. It always carries a bare
    /// `client_max_window_bits` (or one with our cap) so the server may restrict our window.
    pub fn offer(&self) -> String {
        let mut s = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        let sb = self.server_max_window_bits.clamp(9, 15);
        if sb < 15 {
            let _ = write!(s, "; server_max_window_bits={sb}");
        }
        let cb = self.client_max_window_bits.clamp(9, 15);
        if cb < 15 {
            let _ = write!(s, "; client_max_window_bits={cb}");
        } else {
            s.push_str("; client_max_window_bits");
        }
        s
    }

    /// Server side: the first acceptable offer among the `Sec-WebSocket-Extensions` elements
    /// (in the client's order), or `None` to decline. Offers of other extensions and offers
    /// with unknown, duplicate or invalid parameters are skipped.
    pub fn negotiate<'a>(&self, offers: impl IntoIterator<Item = &'a str>) -> Option<Negotiated> {
        offers.into_iter().find_map(|o| {
            let p = parse_element(o)?.ok()?;
            let server_bits = p
                .server_bits
                .map_or(self.server_max_window_bits, |n| {
                    n.min(self.server_max_window_bits)
                })
                .clamp(8, 15);
            let (client_bits, client_bits_in_response) = match p.client_bits {
                // the client cannot be restricted: it compresses with up to 15 bits
                None => (15, false),
                Some(offered) => {
                    let b = offered.unwrap_or(15).min(self.client_max_window_bits);
                    (b, b < 15)
                }
            };
            Some(Negotiated {
                server_no_context_takeover: p.server_nct || self.server_no_context_takeover,
                client_no_context_takeover: p.client_nct || self.client_no_context_takeover,
                server_max_window_bits: server_bits,
                client_max_window_bits: client_bits,
                server_bits_in_response: p.server_bits.is_some() || server_bits < 15,
                client_bits_in_response,
                threshold: self.threshold,
                level: self.level.min(9),
                release_after: self.release_after,
            })
        })
    }

    /// Client side: checks the server's acceptance (the response's extension elements) against
    /// this offer. `Err` when it names another extension, more than one, or has unknown,
    /// duplicate or invalid parameters ([`HandshakeError::Extension`]: the client must then fail
    /// the connection).
    pub fn accept_response<'a>(
        &self,
        elements: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<Negotiated>, HandshakeError> {
        let mut found = None;
        for e in elements {
            if found.is_some() {
                return Err(HandshakeError::Extension); // a second extension (or permessage-deflate twice)
            }
            let p = parse_element(e)
                .and_then(Result::ok)
                .ok_or(HandshakeError::Extension)?;
            found = Some(p);
        }
        let Some(p) = found else { return Ok(None) };
        let client_bits = match p.client_bits {
            None => self.client_max_window_bits,
            Some(None) => return Err(HandshakeError::Extension), // a response must give the value
            Some(Some(n)) => n.min(self.client_max_window_bits),
        };
        let server_bits = p.server_bits.unwrap_or(15);
        if self.server_max_window_bits < 15 && server_bits > self.server_max_window_bits {
            return Err(HandshakeError::Extension);
        }
        Ok(Some(Negotiated {
            server_no_context_takeover: p.server_nct,
            client_no_context_takeover: p.client_nct || self.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
            server_bits_in_response: p.server_bits.is_some(),
            client_bits_in_response: p.client_bits.is_some(),
            threshold: self.threshold,
            level: self.level.min(9),
            release_after: self.release_after,
        }))
    }
}

/// The parameters both sides agreed on, plus this side's compression policy. Give it to
/// [`Config::with_deflate`](crate::Config::with_deflate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Negotiated {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The server's compression window (8–15 bits).
    pub server_max_window_bits: u8,
    /// The client's compression window (8–15 bits).
    pub client_max_window_bits: u8,
    server_bits_in_response: bool,
    client_bits_in_response: bool,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
    /// zlib level.
    pub level: u32,
    /// Idle time after which compression state is freed (see
    /// [`DeflateConfig::release_after`]).
    pub release_after: Option<Duration>,
}

impl Negotiated {
    /// The server's `Sec-WebSocket-Extensions` response value.
    pub fn response(&self) -> String {
        let mut s = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_bits_in_response {
            let _ = write!(
                s,
                "; server_max_window_bits={}",
                self.server_max_window_bits
            );
        }
        if self.client_bits_in_response {
            let _ = write!(
                s,
                "; client_max_window_bits={}",
                self.client_max_window_bits
            );
        }
        s
    }

    /// [`response`](Self::response) as a header value.
    pub fn response_header(&self) -> HeaderValue {
        // Invariant: the string is built from ASCII tokens and digits only.
        HeaderValue::from_str(&self.response()).expect("ASCII extension parameters")
    }
}

/// A parsed `permessage-deflate` element.
#[derive(Debug, Default)]
struct Params {
    server_nct: bool,
    client_nct: bool,
    server_bits: Option<u8>,
    /// `Some(None)`: present without a value (offers only).
    client_bits: Option<Option<u8>>,
}

/// `None`: another extension. `Some(Err)`: permessage-deflate with unknown, duplicate or
/// invalid parameters.
fn parse_element(element: &str) -> Option<Result<Params, ()>> {
    let mut parts = element.split(';');
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case(EXTENSION_NAME) {
        return None;
    }
    let mut p = Params::default();
    let mut seen = [false; 4];
    for param in parts {
        let (k, v) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let (i, ok) = match k.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => {
                p.server_nct = true;
                (0, v.is_none())
            }
            "client_no_context_takeover" => {
                p.client_nct = true;
                (1, v.is_none())
            }
            "server_max_window_bits" => {
                p.server_bits = v.and_then(window_bits);
                (2, p.server_bits.is_some())
            }
            "client_max_window_bits" => match v {
                None => {
                    p.client_bits = Some(None);
                    (3, true)
                }
                Some(v) => {
                    let b = window_bits(v);
                    p.client_bits = Some(b);
                    (3, b.is_some())
                }
            },
            _ => return Some(Err(())),
        };
        if !ok || seen[i] {
            return Some(Err(()));
        }
        seen[i] = true;
    }
    Some(Ok(p))
}

/// A token or a quoted string (RFC 7230 §3.2.6) without escapes, which no valid value needs.
fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').filter(|s| !s.contains(['"', '\\'])),
        None => Some(v),
    }
}

/// `8`..=`15`, digits only, no leading zero (RFC 7692 §7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = v.parse().ok()?;
    (8..=15).contains(&n).then_some(n)
}

/// Why an inflation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// The output passed the limit (a decompression bomb or just a big message): 1009.
    TooLarge,
    /// Not valid DEFLATE data: 1007.
    Corrupt,
}

/// Per-connection compression state.
#[derive(Debug)]
pub(crate) struct Codec {
    compress: Option<Box<Compress>>,
    decompress: Option<Box<Decompress>>,
    /// Our window bits; `None` when the peer asked for 8 bits (we then never compress).
    send_bits: Option<u8>,
    reset_send: bool,
    reset_recv: bool,
    threshold: usize,
    level: u32,
    /// The peer's message held a final DEFLATE block; the rest of it is ignored.
    recv_ended: bool,
    /// Compressed bytes of the current message so far.
    recv_len: usize,
    release_after: Option<Duration>,
    /// Compressed traffic since the last idle check.
    used: bool,
    /// The next idle check (set at the first check).
    check_at: Option<Instant>,
}

impl Codec {
    pub(crate) fn new(n: &Negotiated, role: Role) -> Self {
        let (send_bits, reset_send, reset_recv) = match role {
            Role::Server => (
                n.server_max_window_bits,
                n.server_no_context_takeover,
                n.client_no_context_takeover,
            ),
            Role::Client => (
                n.client_max_window_bits,
                n.client_no_context_takeover,
                n.server_no_context_takeover,
            ),
        };
        Codec {
            compress: None,
            decompress: None,
            send_bits: (send_bits >= 9).then_some(send_bits.min(15)),
            reset_send,
            reset_recv,
            threshold: n.threshold,
            level: n.level,
            recv_ended: false,
            recv_len: 0,
            release_after: n.release_after,
            used: false,
            check_at: None,
        }
    }

    /// When the idle check is due (`base`: a recent instant of the connection, used before
    /// the first check), if anything could be freed.
    pub(crate) fn release_deadline(&self, base: Instant) -> Option<Instant> {
        let after = self.release_after?;
        let holds = self.compress.is_some() || (self.reset_recv && self.decompress.is_some());
        holds.then(|| self.check_at.unwrap_or(base + after))
    }

    /// The idle check: frees what an idle connection need not hold (see
    /// [`DeflateConfig::release_after`]); with traffic since the last check, checks again later.
    pub(crate) fn handle_timeout(&mut self, now: Instant, base: Instant) {
        let Some(after) = self.release_after else {
            return;
        };
        match self.release_deadline(base) {
            Some(due) if now >= due => {}
            _ => return,
        }
        if std::mem::take(&mut self.used) {
            self.check_at = Some(now + after);
            return;
        }
        self.compress = None;
        // between messages only, and only when the peer starts afresh with each message
        if self.reset_recv && self.recv_len == 0 {
            self.decompress = None;
        }
        self.check_at = None;
    }

    /// (compressor, decompressor) allocated.
    pub(crate) fn holds(&self) -> (bool, bool) {
        (self.compress.is_some(), self.decompress.is_some())
    }

    /// Whether our messages compress independently of the ones before (no context takeover
    /// for our direction): then a message's compressed form depends only on its bytes and
    /// these parameters (window bits, level), and can be shared between connections.
    pub(crate) fn standalone(&self) -> Option<(u8, u32)> {
        let bits = self.send_bits?;
        self.reset_send.then_some((bits, self.level))
    }

    /// Whether a whole message of `len` bytes is to be compressed.
    pub(crate) fn compresses(&self, len: usize) -> bool {
        self.send_bits.is_some() && len >= self.threshold
    }

    /// Whether streamed messages are compressed.
    pub(crate) fn compresses_streams(&self) -> bool {
        self.send_bits.is_some()
    }

    /// Compresses one message (`fin`) or one chunk of a streamed message; `None` only if the
    /// compressor failed, in which case it is reset and the data must go uncompressed.
    pub(crate) fn compress(&mut self, input: &[u8], fin: bool) -> Option<Bytes> {
        let bits = self.send_bits?;
        let level = Compression::new(self.level);
        self.used = true;
        let c = self
            .compress
            .get_or_insert_with(|| Box::new(Compress::new_with_window_bits(level, false, bits)));
        let out = deflate_chunk(c, input, fin)?;
        if fin && self.reset_send {
            c.reset();
        }
        Some(out)
    }

    /// Inflates one frame of a compressed message, appending to `out`, which may not grow
    /// past `limit` bytes (checked while inflating: at most `limit + 1` bytes are ever held).
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        fin: bool,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        self.used = true;
        let d = self
            .decompress
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        let mut r = Ok(());
        self.recv_len += input.len();
        if !self.recv_ended {
            r = feed(d, input, limit, out, &mut self.recv_ended);
            // An entirely empty compressed message (some senders emit one for an empty
            // message instead of the RFC's single 0x00) is the empty message: the tail alone
            // is not DEFLATE data, so it is not fed.
            if r.is_ok() && fin && !self.recv_ended && self.recv_len > 0 {
                r = feed(d, &TAIL, limit, out, &mut self.recv_ended);
            }
        }
        if fin || r.is_err() {
            if self.reset_recv || self.recv_ended || r.is_err() {
                d.reset(false);
            }
            self.recv_ended = false;
            self.recv_len = 0;
        }
        r
    }
}

/// Compresses `input` with `c` and a sync flush; at the end of a message (`fin`) strips the
/// 4-byte tail. `None` if the compressor failed (it is reset).
fn deflate_chunk(c: &mut Compress, input: &[u8], fin: bool) -> Option<Bytes> {
    let mut out: Vec<u8> = Vec::with_capacity(input.len() / 2 + 64);
    let start = c.total_in();
    loop {
        if out.capacity() - out.len() < 16 {
            out.reserve(out.capacity().max(256));
        }
        let done = (c.total_in() - start) as usize;
        if c.compress_vec(&input[done..], &mut out, FlushCompress::Sync)
            .is_err()
        {
            c.reset();
            return None;
        }
        let consumed = (c.total_in() - start) as usize == input.len();
        if consumed && out.len() < out.capacity() {
            break;
        }
    }
    if fin {
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - 4);
        } else if out.is_empty() {
            // nothing new since the last flush (an empty message): the peer appends the
            // tail, which needs the header bits of an empty stored block before it
            out.push(0x00);
        }
    }
    Some(Bytes::from(out))
}

/// The compressed form of a whole message for a connection that resets its compressor after
/// every message, with `bits` window bits at `level` (see [`PreparedMessage`](crate::PreparedMessage)).
pub(crate) fn compress_standalone(input: &[u8], bits: u8, level: u32) -> Option<Bytes> {
    let mut c = Compress::new_with_window_bits(Compression::new(level), false, bits);
    deflate_chunk(&mut c, input, true)
}

fn feed(
    d: &mut Decompress,
    input: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
    ended: &mut bool,
) -> Result<(), InflateError> {
    let mut pos = 0;
    loop {
        if out.len() > limit {
            return Err(InflateError::TooLarge);
        }
        if out.len() == out.capacity() {
            // grow geometrically, starting near the compressed size times four, never past
            // one byte over the limit (that byte is how an overflow is detected)
            let grow = out
                .capacity()
                .max((input.len() - pos).saturating_mul(4))
                .clamp(1024, 1 << 20);
            let room = (limit + 1 - out.len()).min(grow);
            out.reserve_exact(room);
        }
        let (in0, out0) = (d.total_in(), d.total_out());
        let st = d
            .decompress_vec(&input[pos..], out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        let used = (d.total_in() - in0) as usize;
        pos += used;
        if st == Status::StreamEnd {
            *ended = true;
            return if out.len() > limit {
                Err(InflateError::TooLarge)
            } else {
                Ok(())
            };
        }
        let spare = out.len() < out.capacity();
        if pos == input.len() && spare {
            return Ok(());
        }
        if used == 0 && d.total_out() == out0 && spare {
            return Err(InflateError::Corrupt); // no progress with input and room left
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> DeflateConfig {
        DeflateConfig::default()
    }

    #[test]
    fn parses_and_rejects_parameters() {
        assert!(parse_element("x-webkit-deflate-frame").is_none());
        let p =
            parse_element("permessage-deflate; client_max_window_bits; server_max_window_bits=10")
                .unwrap()
                .unwrap();
        assert_eq!(p.client_bits, Some(None));
        assert_eq!(p.server_bits, Some(10));
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert_eq!(parse_element(bad).map(|r| r.is_err()), Some(true), "{bad}");
        }
        let q = parse_element("permessage-deflate; client_max_window_bits=\"12\"").unwrap();
        assert_eq!(q.unwrap().client_bits, Some(Some(12)));
    }

    #[test]
    fn server_takes_the_first_valid_offer() {
        let n = server()
            .negotiate([
                "permessage-deflate; bogus",
                "permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
                "permessage-deflate",
            ])
            .unwrap();
        assert_eq!(n.server_max_window_bits, 10);
        assert!(n.client_no_context_takeover);
        assert_eq!(
            n.response(),
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10"
        );
        assert!(server().negotiate(["x-other"]).is_none());
        // the server restricts the client only when the client said it can be restricted
        let strict = server().with_client_max_window_bits(10);
        assert_eq!(
            strict.negotiate(["permessage-deflate"]).unwrap().response(),
            "permessage-deflate"
        );
        assert_eq!(
            strict
                .negotiate(["permessage-deflate; client_max_window_bits"])
                .unwrap()
                .response(),
            "permessage-deflate; client_max_window_bits=10"
        );
    }

    #[test]
    fn client_checks_the_response() {
        let c = DeflateConfig::default();
        assert_eq!(c.offer(), "permessage-deflate; client_max_window_bits");
        assert_eq!(c.accept_response([]), Ok(None));
        let n = c
            .accept_response(["permessage-deflate; server_no_context_takeover"])
            .unwrap()
            .unwrap();
        assert!(n.server_no_context_takeover);
        assert!(c
            .accept_response(["permessage-deflate", "permessage-deflate"])
            .is_err());
        assert!(c.accept_response(["x-other"]).is_err());
        assert!(c
            .accept_response(["permessage-deflate; client_max_window_bits"])
            .is_err());
        let asked = DeflateConfig::default().with_server_max_window_bits(10);
        assert!(asked
            .accept_response(["permessage-deflate; server_max_window_bits=12"])
            .is_err());
    }

    fn pair(a: &Negotiated) -> (Codec, Codec) {
        (Codec::new(a, Role::Server), Codec::new(a, Role::Client))
    }

    #[test]
    fn round_trip_with_and_without_context_takeover() {
        for nct in [false, true] {
            let cfg = DeflateConfig::default()
                .with_server_no_context_takeover(nct)
                .with_threshold(0);
            let n = cfg.negotiate(["permessage-deflate"]).unwrap();
            let (mut s, mut c) = pair(&n);
            let msg = br#"{"type":"cf_agent_state","state":{"count":1,"items":["a","b","c"]}}"#;
            let mut sizes = vec![];
            for _ in 0..3 {
                let z = s.compress(msg, true).unwrap();
                sizes.push(z.len());
                let mut out = vec![];
                c.inflate(&z, true, 1 << 20, &mut out).unwrap();
                assert_eq!(out, msg);
            }
            if nct {
                assert!(sizes.iter().all(|&n| n == sizes[0]), "{sizes:?}");
            } else {
                assert!(sizes[1] < sizes[0] / 2, "{sizes:?}");
            }
        }
    }

    #[test]
    fn empty_message_is_the_rfc_single_zero_byte() {
        let n = server().negotiate(["permessage-deflate"]).unwrap();
        let (mut s, mut c) = pair(&n);
        let z = s.compress(b"", true).unwrap();
        assert_eq!(&z[..], &[0x00]);
        let mut out = vec![];
        c.inflate(&z, true, 10, &mut out).unwrap();
        assert!(out.is_empty());
        // an entirely empty compressed payload is taken as the empty message
        let mut out = vec![];
        c.inflate(&[], true, 10, &mut out).unwrap();
        assert!(out.is_empty());
        // and after other messages, when the compressor has nothing to flush
        for m in [&b"hello"[..], b"", b"", b"again"] {
            let z = s.compress(m, true).unwrap();
            let mut out = vec![];
            c.inflate(&z, true, 10, &mut out).unwrap();
            assert_eq!(out, m);
        }
    }

    #[test]
    fn rfc_7692_example_hello() {
        // RFC 7692 §7.2.3.1: "Hello" compressed, tail removed
        let n = server().negotiate(["permessage-deflate"]).unwrap();
        let mut c = Codec::new(&n, Role::Client);
        let mut out = vec![];
        c.inflate(
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            true,
            100,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.2: the same message again with context takeover, sharing the window
        let mut out = vec![];
        c.inflate(&[0xf2, 0x00, 0x11, 0x00, 0x00], true, 100, &mut out)
            .unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let n = DeflateConfig::default()
            .with_threshold(0)
            .negotiate(["permessage-deflate"])
            .unwrap();
        let (mut s, mut c) = pair(&n);
        let z = s.compress(&vec![0u8; 8 << 20], true).unwrap();
        assert!(z.len() < 16 * 1024, "{}", z.len());
        let mut out = vec![];
        assert_eq!(
            c.inflate(&z, true, 1 << 20, &mut out),
            Err(InflateError::TooLarge)
        );
        assert!(out.capacity() <= (1 << 20) + 1, "{}", out.capacity());
        assert_eq!(
            c.inflate(&[0xff, 0xff, 0xff], true, 100, &mut vec![]),
            Err(InflateError::Corrupt)
        );
    }
}

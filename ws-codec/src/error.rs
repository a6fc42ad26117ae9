//! Errors, one small type per layer.

use crate::close::CloseCode;

/// A frame header that no endpoint may send (RFC 6455 §5.2, §5.5). `Copy`, cheap to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Opcodes 0x3–0x7 and 0xB–0xF are reserved.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with more than 125 payload bytes.
    #[error("control frame payload longer than 125 bytes")]
    ControlTooLong,
    /// A 64-bit length with its most significant bit set.
    #[error("payload length has its most significant bit set")]
    LengthOverflow,
}

/// A violation by the peer. Each maps to the close code the connection sends
/// ([`close_code`](Self::close_code)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A malformed frame header.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// RSV bits set without an extension that defines them.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// A client sent an unmasked frame (RFC 6455 §5.1).
    #[error("unmasked frame from a client")]
    UnmaskedFrame,
    /// A server sent a masked frame (RFC 6455 §5.1).
    #[error("masked frame from a server")]
    MaskedFrame,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is in progress.
    #[error("new message while a fragmented message is in progress")]
    ExpectedContinuation,
    /// Text (or a close reason) that is not valid UTF-8.
    #[error("invalid utf-8 in text")]
    InvalidUtf8,
    /// A frame payload above `Config::max_frame_payload`.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The declared payload length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message above `Config::max_message`.
    #[error("message of at least {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// The message length so far, including the frame that crossed the limit.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A compressed message that is not valid DEFLATE data (permessage-deflate).
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// A Close frame with a one-byte payload.
    #[error("close frame with a one-byte payload")]
    ClosePayloadTooShort,
    /// A Close frame carrying a code that may not be sent.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
}

impl ProtocolError {
    /// The close code sent to the peer for this violation (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => {
                CloseCode::TOO_BIG
            }
            _ => CloseCode::PROTOCOL,
        }
    }
}

/// Why a connection ended abnormally; carried by [`Event::Closed`](crate::Event::Closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer violated the protocol; the close frame with [`ProtocolError::close_code`] was
    /// queued before this was reported.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The peer did not answer our Close frame within `Config::close_timeout`.
    #[error("close handshake timed out")]
    CloseTimeout,
    /// The peer sent nothing within `Config::pong_timeout` after a heartbeat ping.
    #[error("no pong within the pong timeout")]
    PongTimeout,
    /// The transport ended (see [`Connection::handle_eof`](crate::Connection::handle_eof))
    /// before the close handshake finished.
    #[error("connection reset without a close handshake")]
    Reset,
}

/// A misuse of the sending API; nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A Close frame was already sent or the connection is closed.
    #[error("connection is closing or closed")]
    Closed,
    /// A ping payload or close reason that does not fit a control frame (125 bytes).
    #[error("control frame payload longer than 125 bytes")]
    ControlPayloadTooLong,
    /// Queuing would exceed `Config::max_outbound_buffered`.
    #[error("outbound buffer full ({outbound} bytes queued)")]
    BufferFull {
        /// Bytes queued when the send was refused.
        outbound: usize,
    },
    /// A close code that may not be sent (1005, 1006, 1015, out-of-range values).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A whole message was sent while a streamed one is in progress, or `send_fragment`
    /// continued a message of the other kind.
    #[error("a streamed message is in progress")]
    MessageInProgress,
    /// A streamed continuation with no message in progress.
    #[error("no streamed message in progress")]
    NoMessageInProgress,
}

/// A failed opening handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Malformed HTTP.
    #[error("malformed http: {0}")]
    Http(String),
    /// The head is larger than allowed, or has more headers than the buffer given.
    #[error("http head too large")]
    TooLarge,
    /// Not a GET (or extended CONNECT) request.
    #[error("method not allowed")]
    Method,
    /// Not HTTP/1.1 or later.
    #[error("unsupported http version")]
    Version,
    /// A required header is missing or has the wrong value.
    #[error("missing or invalid header {0}")]
    Header(&'static str),
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported websocket version")]
    WsVersion,
    /// The response status is not 101.
    #[error("unexpected status {0}")]
    Status(u16),
    /// `Sec-WebSocket-Accept` does not match our key.
    #[error("sec-websocket-accept does not match")]
    AcceptMismatch,
    /// The server selected a subprotocol we did not offer.
    #[error("server selected a subprotocol that was not offered")]
    Protocol,
    /// The server selected an extension we did not offer, or accepted permessage-deflate
    /// with invalid parameters.
    #[error("server selected an extension that was not offered or with invalid parameters")]
    Extension,
    /// The URI is not a `ws://` or `wss://` URI with a host.
    #[error("invalid websocket uri")]
    Uri,
}

impl HandshakeError {
    /// The HTTP status a server should answer with when a request fails this way.
    pub fn status(&self) -> http::StatusCode {
        match self {
            HandshakeError::Method => http::StatusCode::METHOD_NOT_ALLOWED,
            HandshakeError::WsVersion => http::StatusCode::UPGRADE_REQUIRED,
            HandshakeError::TooLarge => http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HandshakeError::Version => http::StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

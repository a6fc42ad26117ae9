//! Sans-IO RFC 6455 WebSocket: frames, connection machine, handshake.
//!
//! The crate never touches a socket or a clock: bytes and `now` go in, events, frames to write
//! and the next deadline come out. The same [`Connection`] drives a blocking `std::net` server,
//! a tokio task or a fuzzer; see `examples/echo_std.rs` and `examples/echo_tokio.rs`.
//!
//! # Quick start
//!
//! A client and a server machine talking through plain buffers:
//!
//! ```
//! use agentwire_ws::{CloseCode, Config, Connection, Event, Role};
//! use bytes::BytesMut;
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let mut client = Connection::new(Role::Client, Config::default(), now);
//! let mut server = Connection::new(Role::Server, Config::default(), now);
//!
//! client.send_text("hello").unwrap();
//! let mut wire = BytesMut::new();
//! while let Some(t) = client.poll_transmit() {
//!     t.write_to(&mut wire); // a real driver writes `t.head` and `t.payload` to the socket
//! }
//! server.handle_input(now, &mut wire);
//! match server.poll_event() {
//!     Some(Event::Text(text)) => assert_eq!(text.as_str(), "hello"),
//!     other => panic!("unexpected {other:?}"),
//! }
//!
//! // a normal close is an event, never an error
//! server.close(now, CloseCode::NORMAL, "bye").unwrap();
//! let mut wire = BytesMut::new();
//! while let Some(t) = server.poll_transmit() { t.write_to(&mut wire); }
//! client.handle_input(now, &mut wire);
//! assert!(matches!(client.poll_event(), Some(Event::CloseReceived { code: Some(CloseCode::NORMAL), .. })));
//! assert!(matches!(client.poll_event(), Some(Event::Closed { clean: true, error: None, .. })));
//! ```
//!
//! # Driving the machine
//!
//! | kind | methods |
//! |---|---|
//! | input | [`Connection::handle_input`]`(now, &mut BytesMut)` (or [`Connection::handle_input_with`], lending single-frame messages as slices), [`Connection::handle_timeout`]`(now)`, [`Connection::handle_eof`]`(now)` |
//! | commands | [`send_text`](Connection::send_text), [`send_binary`](Connection::send_binary), [`send_fragment`](Connection::send_fragment), [`send_ping`](Connection::send_ping), [`send_pong`](Connection::send_pong), [`close`](Connection::close) |
//! | output | [`poll_transmit`](Connection::poll_transmit) / [`poll_transmit_into`](Connection::poll_transmit_into), [`poll_timeout`](Connection::poll_timeout), [`poll_event`](Connection::poll_event) (or [`poll_messages`](Connection::poll_messages) for runs of small messages) |
//! | getters | [`state`](Connection::state), [`outbound_bytes`](Connection::outbound_bytes), [`stats`](Connection::stats) |
//!
//! Poll order: after every input or command, drain `poll_transmit` (write header and payload,
//! vectored if you can), then read `poll_timeout` and wait for input or that instant. Drain
//! `poll_event` whenever convenient; sending while handling events means draining
//! `poll_transmit` again. [`Event::Closed`] is the last event; drain `poll_transmit` once more
//! (it may hold the Close frame) and drop the transport. Peer violations never return errors:
//! the Close frame with the right code (1002, 1007, 1009) is queued and `Closed` carries the
//! [`ConnectionError`]. A peer's Close or violation takes effect when the events before it have
//! been polled, so messages that arrived just before it can still be answered (Autobahn 3.*,
//! 4.*, 5.15 expect those echoes).
//!
//! The opening handshake is in [`handshake`]: [`handshake::parse_request`] /
//! [`handshake::from_parts`] then [`handshake::Upgrade::accept`] on a server,
//! [`handshake::ClientHandshake`] on a client. Bytes read past the HTTP head start the
//! connection's input buffer.
//!
//! # Limits and defaults
//!
//! | setting | default | on excess |
//! |---|---|---|
//! | [`Config::max_frame_payload`] | 16 MiB | close 1009, checked on the declared length before buffering |
//! | [`Config::max_message`] | 16 MiB | close 1009 (reassembly mode) |
//! | [`Config::max_outbound_buffered`] | 32 MiB | [`SendError::BufferFull`] |
//! | [`Config::close_timeout`] | 5 s | `Closed { clean: false, error: CloseTimeout }` |
//! | [`Config::ping_interval`] | off | — |
//! | [`Config::pong_timeout`] | 20 s | `Closed { error: PongTimeout }` |
//! | [`Config::auto_pong`] | on | at most 64 unsent pongs, oldest dropped |
//! | [`Config::fragments`] | reassemble | — |
//! | [`handshake::MAX_HEAD_LEN`] | 8 KiB | [`HandshakeError::TooLarge`] (431) |
//! | inflated message (feature `deflate`) | `max_message` | close 1009, checked while inflating |
//!
//!
//! # permessage-deflate
//!
//! With the feature `deflate`, the [`deflate`] module negotiates RFC 7692 in both handshake
//! roles and the connection compresses and inflates messages (bounded by
//! [`Config::max_message`] while inflating). Without it, RSV bits are a violation (1002) and a
//! server's acceptance of an extension fails the client handshake.

//!
//! # Driving it over tokio
//!
//! With the feature `tokio`, [`stream::WebSocketStream`] drives the machine over any
//! `AsyncRead + AsyncWrite` in either role (a `TcpStream`, an upgraded hyper connection, a TLS
//! stream): named phases for input, events, transmits and timers, or `next()` for all of them,
//! a write-progress deadline, and cloneable [`stream::WsSender`]s with a bounded queue. The
//! `agentwire` runtime's server sockets and its Rust `AgentClient` both run on it.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod close;
pub mod config;
pub mod connection;
#[cfg(feature = "deflate")]
pub mod deflate;
#[cfg(not(feature = "deflate"))]
#[path = "nodeflate/mod.rs"]
mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod stream;

#[doc(hidden)]
pub mod fuzz;

pub use agentwire_utf8::{NotUtf8, Utf8Bytes};
pub use close::CloseCode;
pub use config::{Config, FragmentMode};
pub use connection::{
    ConnState, Connection, DataKind, Event, EventRef, Initiator, Messages, MessagesIter,
    PreparedMessage, Role, Stats, Transmit,
};
pub use error::{ConnectionError, FrameError, HandshakeError, ProtocolError, SendError};
pub use frame::{FrameHeader, HeaderBytes, OpCode, MAX_HEADER_LEN};
pub use mask::apply_mask;

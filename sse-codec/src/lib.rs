//! Sans-IO, zero-copy Server-Sent Events codec.
//!
//! - [`Decoder`]: the WHATWG HTML "interpret an event stream" algorithm over chunks of any
//!   size: one leading BOM stripped; CR, LF and CRLF line ends (also a CR ending one chunk and
//!   its LF starting the next); comments; `event`, `data`, `id`, `retry`; invalid UTF-8
//!   replaced with U+FFFD. Single-line fields are views of the input ([`Utf8Bytes`] over
//!   `Bytes`), nothing is scanned twice, and every buffer is bounded ([`Limits`]).
//! - [`OutEvent`] and the `encode_*` functions: what a server writes, validated so that no
//!   input produces a malformed frame or a panic.
//! - [`EventSource`]: the browser's reconnection policy (`Last-Event-ID`, `retry:`, 204 stops,
//!   capped backoff with jitter) as a state machine with time passed in.
//! - Feature `tokio-util`: [`codec::SseCodec`] for `FramedRead` / `FramedWrite`.
//! - Feature `json`: [`OutEvent::encode_json`].
//! - Feature `http-body`: [`body::SseBody`], a `Stream` of events as an `http_body::Body`
//!   with keep-alive comments, for hyper, axum and tower servers
//!   (`examples/axum_tokens.rs`: an axum endpoint streaming tokens, resumable with
//!   `Last-Event-ID`).
//! - Feature `client`: [`client::EventStream`], a `Stream` of events over hyper's client that
//!   reconnects by the [`EventSource`] policy.
//!
//! The core (decoder, encoder, `EventSource`) does no IO and needs no runtime; only the
//! `http-body` and `client` adapters use tokio.
//!
//! # Quick start
//!
//! ```
//! use agentwire_sse::{Decoder, EventId, OutEvent};
//! use bytes::BytesMut;
//!
//! // Server side: encode.
//! let id = EventId::new("1").unwrap();
//! let mut wire = BytesMut::new();
//! OutEvent::new("{\"token\":\"hello\"}").id(&id).encode(&mut wire);
//!
//! // Client side: decode, here split in the middle of a line.
//! let mut decoder = Decoder::new();
//! let (a, b) = wire.split_at(10);
//! decoder.handle_input_slice(a);
//! assert!(decoder.poll_event().is_none());
//! decoder.handle_input_slice(b);
//! let event = decoder.poll_event().unwrap().unwrap();
//! assert_eq!(event.data(), "{\"token\":\"hello\"}");
//! assert_eq!(event.last_event_id(), "1");
//! ```
//!
//! # Driving the decoder
//!
//! One Sans-IO vocabulary across the agentwire codecs (this decoder, [`EventSource`], the
//! WebSocket `Connection`, the Agents protocol `CallTable`): `handle_input` /
//! `handle_timeout(now, ..)` / `handle_eof` put things in, `poll_event` / `poll_transmit` /
//! `poll_timeout` take things out, `now` comes first where time matters, and errors come out
//! of `poll_event`, never out of `handle_*`.
//!
//! Here: [`Decoder::handle_input`] (`Bytes`, no copy) or [`Decoder::handle_input_slice`]
//! (copied) → [`Decoder::poll_event`] until `None` → repeat; at the end of a body,
//! [`Decoder::handle_eof`]. `Some(Err(_))` reports a limit; the decoder has already recovered
//! and the next call goes on. [`Decoder::poll_events`] drains a whole read as one batch
//! ([`Events`]), sharing one reference to it among its events: the fastest owned path.
//!
//! # Limits
//!
//! | limit | default | on excess |
//! |---|---|---|
//! | line length ([`Limits::max_line`]) | 2 MiB | [`DecodeError::LineTooLong`]; the line and the rest of its event are dropped |
//! | event size ([`Limits::max_event`]) | 8 MiB | [`DecodeError::EventTooLarge`]; the rest of the event is dropped |
//!
//! Memory held by a decoder is at most one line plus one event beyond the chunks the caller
//! has fed and not yet drained.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "http-body")]
pub mod body;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "tokio-util")]
pub mod codec;
mod decode;
mod encode;
mod eventsource;
#[doc(hidden)]
pub mod fuzz;
mod scan;

pub use agentwire_utf8::{NotUtf8, Utf8Bytes};
pub use decode::{DecodeError, Decoder, Event, EventRef, Events, Iter, Limits};
pub use encode::{
    encode_comment, encode_keep_alive, encode_retry, EventId, EventName, InvalidField, OutEvent,
};
pub use eventsource::{
    is_event_stream, ConnectRequest, ErrorReason, EventSource, ReadyState, ReconnectPolicy,
    SourceEvent,
};

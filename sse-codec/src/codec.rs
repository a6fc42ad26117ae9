//! `tokio_util::codec` adapters (feature `tokio-util`).
//!
//! ```
//! # async fn demo(body: impl tokio::io::AsyncRead + Unpin) {
//! use agentwire_sse::codec::SseCodec;
//! use futures_util::StreamExt;
//! let mut events = tokio_util::codec::FramedRead::new(body, SseCodec::new());
//! while let Some(event) = events.next().await {
//!     println!("{:?}", event);
//! }
//! # }
//! ```

use crate::decode::{DecodeError, Decoder, Event};
use crate::encode::OutEvent;
use bytes::BytesMut;
use std::fmt;

/// A [`Decoder`] as a `tokio_util` codec: `FramedRead::new(io, SseCodec::new())` is a
/// `Stream` of events. Encoding writes [`OutEvent`]s, so `FramedWrite` works too.
#[derive(Debug, Default)]
pub struct SseCodec {
    decoder: Decoder,
}

impl SseCodec {
    /// A codec with a default [`Decoder`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec around the given decoder (for its limits, or a saved last event ID).
    pub fn with_decoder(decoder: Decoder) -> Self {
        Self { decoder }
    }

    /// The decoder, e.g. for [`Decoder::last_event_id`] after the stream ended.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }
}

/// Error of [`SseCodec`]: a limit of the decoder, or IO.
#[derive(Debug)]
#[non_exhaustive]
pub enum CodecError {
    /// A decoder limit was exceeded (the stream can go on).
    Decode(DecodeError),
    /// Reading or writing failed.
    Io(std::io::Error),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => e.fmt(f),
            Self::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Decode(e) => Some(e),
            Self::Io(e) => Some(e),
        }
    }
}

impl From<std::io::Error> for CodecError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl tokio_util::codec::Decoder for SseCodec {
    type Item = Event;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Event>, CodecError> {
        if !src.is_empty() {
            self.decoder.handle_input(src.split().freeze());
        }
        self.decoder
            .poll_event()
            .transpose()
            .map_err(CodecError::Decode)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Event>, CodecError> {
        match self.decode(src)? {
            Some(event) => Ok(Some(event)),
            None => {
                self.decoder.handle_eof();
                Ok(None)
            }
        }
    }
}

impl tokio_util::codec::Encoder<OutEvent<'_>> for SseCodec {
    type Error = CodecError;

    fn encode(&mut self, event: OutEvent<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        event.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::{Decoder as _, Encoder as _};

    #[test]
    fn decodes_across_calls_and_encodes() {
        let mut codec = SseCodec::new();
        let mut buf = BytesMut::from(&b"data: a\n\ndata: b"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().data(), "a");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"\n\n");
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().data(), "b");
        buf.extend_from_slice(b"data: cut");
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());

        let mut out = BytesMut::new();
        codec.encode(OutEvent::new("x"), &mut out).unwrap();
        assert_eq!(&out[..], b"data: x\n\n");
    }
}

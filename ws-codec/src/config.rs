//! Connection settings; every limit has a documented default.

use std::time::Duration;

/// How received fragmented messages are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FragmentMode {
    /// Reassemble fragments into one [`Event::Text`](crate::Event::Text) /
    /// [`Event::Binary`](crate::Event::Binary), bounded by `max_message`.
    #[default]
    Reassemble,
    /// Deliver each data frame as an [`Event::Fragment`](crate::Event::Fragment) as soon as it
    /// is complete, without buffering the message; `max_message` does not apply (each frame is
    /// still bounded by `max_frame_payload`). Text fragments are still validated incrementally:
    /// a chunk may end inside a code point, whose bytes then start the next chunk's validation.
    Stream,
}

/// Settings of a [`Connection`](crate::Connection).
///
/// Build with [`Config::default`] and the `with_*` setters (the struct is `#[non_exhaustive]`
/// so that fields such as a future permessage-deflate setting can be added).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest accepted frame payload, checked on the declared length before any buffering.
    ///
    /// The default is 16 MiB. It equals `max_message` because most messages are one frame and
    /// a lower frame cap would only reject messages the message cap allows; lower it when peers
    /// are known to fragment.
    pub max_frame_payload: usize,
    /// Largest accepted message (all fragments together) in [`FragmentMode::Reassemble`].
    ///
    /// The default is 16 MiB. Stricter than tungstenite's 64 MiB because a server holds one
    /// reassembly buffer per connection and 64 MiB × many peers is a denial of service; 16 MiB
    /// is still above the largest Autobahn case (9.1.6).
    pub max_message: usize,
    /// Most bytes (headers + payloads) that may wait in the send queue; sends beyond it fail
    /// with [`SendError::BufferFull`](crate::SendError::BufferFull). Control replies (pong,
    /// close) are never refused and are bounded separately (one pending pong, one close).
    ///
    /// The default is 32 MiB: room for an echo of a maximum-size message while another is
    /// queued, so a slow reader is detected instead of buffered without bound.
    pub max_outbound_buffered: usize,
    /// Answer pings with pongs automatically (one pong per ping; if more than 64 replies are
    /// waiting to be sent, the oldest are dropped, as RFC 6455 §5.5.3 allows).
    ///
    /// The default is `true` because the RFC requires the reply.
    pub auto_pong: bool,
    /// How long to wait for the peer's Close after sending ours.
    ///
    /// The default is 5 s: long enough for a loaded peer, short enough that a dead one does not
    /// hold the connection.
    pub close_timeout: Duration,
    /// Send a ping when nothing has been received for this long.
    ///
    /// The default is `None` (no heartbeat) because unsolicited pings change what the peer sees
    /// (conformance suites flag them); servers facing the internet should set it (e.g. 30 s).
    pub ping_interval: Option<Duration>,
    /// After a heartbeat ping, close the connection as dead if nothing arrives within this.
    ///
    /// The default is 20 s, a little less than common 30 s idle timeouts of proxies.
    pub pong_timeout: Duration,
    /// How fragmented messages are delivered.
    ///
    /// The default is [`FragmentMode::Reassemble`], the safe, bounded form.
    pub fragments: FragmentMode,
    /// permessage-deflate parameters from the handshake (feature `deflate`); `None` sends and
    /// accepts only uncompressed messages.
    ///
    /// The default is `None`: compression exists only when both handshake sides agreed on it.
    #[cfg(feature = "deflate")]
    pub deflate: Option<crate::deflate::Negotiated>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_payload: 16 << 20,
            max_message: 16 << 20,
            max_outbound_buffered: 32 << 20,
            auto_pong: true,
            close_timeout: Duration::from_secs(5),
            ping_interval: None,
            pong_timeout: Duration::from_secs(20),
            fragments: FragmentMode::Reassemble,
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }
}

impl Config {
    /// Sets [`max_frame_payload`](Self::max_frame_payload).
    pub fn with_max_frame_payload(mut self, v: usize) -> Self {
        self.max_frame_payload = v;
        self
    }
    /// Sets [`max_message`](Self::max_message).
    pub fn with_max_message(mut self, v: usize) -> Self {
        self.max_message = v;
        self
    }
    /// Sets [`max_outbound_buffered`](Self::max_outbound_buffered).
    pub fn with_max_outbound_buffered(mut self, v: usize) -> Self {
        self.max_outbound_buffered = v;
        self
    }
    /// Sets [`auto_pong`](Self::auto_pong).
    pub fn with_auto_pong(mut self, v: bool) -> Self {
        self.auto_pong = v;
        self
    }
    /// Sets [`close_timeout`](Self::close_timeout).
    pub fn with_close_timeout(mut self, v: Duration) -> Self {
        self.close_timeout = v;
        self
    }
    /// Sets [`ping_interval`](Self::ping_interval).
    pub fn with_ping_interval(mut self, v: Option<Duration>) -> Self {
        self.ping_interval = v;
        self
    }
    /// Sets [`pong_timeout`](Self::pong_timeout).
    pub fn with_pong_timeout(mut self, v: Duration) -> Self {
        self.pong_timeout = v;
        self
    }
    /// Sets [`fragments`](Self::fragments).
    pub fn with_fragments(mut self, v: FragmentMode) -> Self {
        self.fragments = v;
        self
    }
    /// Sets [`deflate`](Self::deflate).
    #[cfg(feature = "deflate")]
    pub fn with_deflate(mut self, v: Option<crate::deflate::Negotiated>) -> Self {
        self.deflate = v;
        self
    }
}

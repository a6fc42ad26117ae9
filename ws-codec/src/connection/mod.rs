//! The connection state machine (RFC 6455 §5–§7), one type for both roles.

mod recv;
mod send;
pub use send::COALESCE_BELOW;
pub(crate) mod utf8;

use crate::close::CloseCode;
use crate::config::Config;
use crate::error::{ConnectionError, SendError};
use crate::frame::HeaderBytes;
use crate::Utf8Bytes;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::Instant;

pub use crate::frame::Role;
use recv::Recv;
use send::SendQueue;

/// Who started the end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// This side, through [`Connection::close`].
    Local,
    /// The peer, with a Close frame or by dropping the transport.
    Remote,
    /// The machine itself: a protocol violation by the peer or a heartbeat timeout.
    Library,
}

/// Text or binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}

/// Something that happened on the connection; drain with [`Connection::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A complete text message, validated UTF-8. A single-frame message points into the read
    /// buffer (no copy).
    Text(Utf8Bytes),
    /// A complete binary message. A single-frame message points into the read buffer.
    Binary(Bytes),
    /// One data frame of a message, only in [`FragmentMode::Stream`](crate::FragmentMode::Stream).
    /// Text chunks are validated incrementally, but a chunk may end inside a code point (hence
    /// `Bytes`, not `Utf8Bytes`); the message as a whole is valid once `fin` is seen.
    Fragment {
        /// The message's kind (from its first frame).
        kind: DataKind,
        /// The frame's payload.
        chunk: Bytes,
        /// `true` on the message's last frame.
        fin: bool,
    },
    /// A ping; if `auto_pong` is on, the pong is already queued.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's Close frame (code `None` when its payload was empty). If this side had not
    /// sent a Close yet, the reply echoing the code is already queued.
    CloseReceived {
        /// The status code, if any.
        code: Option<CloseCode>,
        /// The reason, validated UTF-8.
        reason: Utf8Bytes,
    },
    /// The last event: the connection is over. Drain [`Connection::poll_transmit`] once more
    /// (it may hold a Close frame), then drop the transport — a server at once; a client
    /// preferably after the server closed TCP (RFC 6455 §7.1.1).
    Closed {
        /// Who started the close.
        initiator: Initiator,
        /// `true` when Close frames went both ways.
        clean: bool,
        /// Why, when the end was abnormal.
        error: Option<ConnectionError>,
    },
}

/// An event as seen by [`Connection::handle_input_with`]: unfragmented messages borrowed
/// from the read buffer, everything else owned.
#[derive(Debug)]
#[non_exhaustive]
pub enum EventRef<'a> {
    /// A complete single-frame text message, validated, borrowed from the read buffer.
    Text(&'a str),
    /// A complete single-frame binary message, borrowed from the read buffer.
    Binary(&'a [u8]),
    /// Any other event (including fragmented messages, reassembled), as
    /// [`poll_event`](Connection::poll_event) would return it.
    Owned(Event),
}

/// A run of small messages from [`Connection::poll_messages`], sharing two buffers.
#[derive(Debug, Clone)]
pub struct Messages {
    batch: recv::Batch,
}

impl Messages {
    /// The number of messages.
    pub fn len(&self) -> usize {
        self.batch.list.len() - self.batch.next
    }

    /// `true` if there are none (never for a batch from `poll_messages`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th message, borrowed: [`EventRef::Text`] or [`EventRef::Binary`].
    pub fn get(&self, i: usize) -> Option<EventRef<'_>> {
        let &(kind, start, end) = self.batch.list.get(self.batch.next + i)?;
        Some(self.view(kind, start, end))
    }

    /// The messages, borrowed: [`EventRef::Text`] or [`EventRef::Binary`].
    pub fn iter(&self) -> MessagesIter<'_> {
        MessagesIter {
            messages: self,
            entries: self.batch.list[self.batch.next..].iter(),
        }
    }

    #[inline]
    fn view(&self, kind: DataKind, start: usize, end: usize) -> EventRef<'_> {
        match kind {
            DataKind::Text => EventRef::Text(self.batch.text.get(start..end).unwrap_or("")),
            DataKind::Binary => EventRef::Binary(self.batch.binary.get(start..end).unwrap_or(&[])),
        }
    }
}

/// The messages of a [`Messages`] run, borrowed.
#[derive(Debug, Clone)]
pub struct MessagesIter<'a> {
    messages: &'a Messages,
    entries: std::slice::Iter<'a, (DataKind, usize, usize)>,
}

impl<'a> Iterator for MessagesIter<'a> {
    type Item = EventRef<'a>;
    #[inline]
    fn next(&mut self) -> Option<EventRef<'a>> {
        let &(kind, start, end) = self.entries.next()?;
        Some(self.messages.view(kind, start, end))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for MessagesIter<'_> {}

impl<'a> IntoIterator for &'a Messages {
    type Item = EventRef<'a>;
    type IntoIter = MessagesIter<'a>;
    fn into_iter(self) -> MessagesIter<'a> {
        self.iter()
    }
}

impl IntoIterator for Messages {
    type Item = Event;
    type IntoIter = std::vec::IntoIter<Event>;
    fn into_iter(mut self) -> Self::IntoIter {
        let events: Vec<Event> = std::iter::from_fn(|| self.batch.next_event()).collect();
        events.into_iter()
    }
}

/// Bytes to write: one frame's header and payload apart (for `write_vectored`, and so a
/// server can send one payload to many connections without copying), or — with an empty
/// `head` — several small frames already encoded together in `payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The encoded frame header; empty when `payload` holds whole frames.
    pub head: HeaderBytes,
    /// The payload. In the server role, a payload of at least
    /// [`COALESCE_BELOW`] bytes is the `Bytes` given to the
    /// send call, never copied; smaller frames are encoded together into one buffer (one write
    /// and one reference count for many frames). In the client role payloads are masked with a
    /// fresh key per frame (RFC 6455 §5.3), so the caller's bytes cannot be sent as they are:
    /// small frames are masked into that shared buffer, larger ones into a buffer of their own
    /// (or, with `poll_transmit_into`, straight into the driver's buffer).
    pub payload: Bytes,
}

impl Transmit {
    /// Header plus payload length.
    pub fn len(&self) -> usize {
        self.head.len() + self.payload.len()
    }

    /// `true` only for a transmit with nothing to write (`poll_transmit` never returns one).
    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.payload.is_empty()
    }

    /// Appends header and payload to `dst` (for transports without vectored writes).
    pub fn write_to(&self, dst: &mut BytesMut) {
        dst.extend_from_slice(&self.head);
        dst.extend_from_slice(&self.payload);
    }
}

/// The connection's state as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnState {
    /// Messages flow both ways.
    Open,
    /// This side sent a Close and waits for the peer's (at most `close_timeout`).
    CloseSent,
    /// Over; [`Event::Closed`] has been queued.
    Closed,
}

impl ConnState {
    /// `true` once the connection is over.
    pub fn is_closed(self) -> bool {
        self == ConnState::Closed
    }
}

/// Counters since the connection was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Complete frames received.
    pub frames_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Frames handed out by `poll_transmit`.
    pub frames_sent: u64,
    /// Header and payload bytes handed out by `poll_transmit`.
    pub bytes_sent: u64,
}

/// An entry of the event queue: an event, or a state change that waits for the events before
/// it to be polled.
#[derive(Debug)]
enum Pending {
    Event(Event),
    /// Small messages copied out of the read buffer together.
    Batch(Box<recv::Batch>),
    Fail(crate::error::ProtocolError),
    /// The peer's code and reason (the reason is echoed with the code).
    PeerClose(Option<CloseCode>, Bytes),
}

/// The internal state (RFC 6455 §7):
///
/// ```text
///            close() ──────────────► CloseSent ── peer Close ──► Closed (clean, Local)
///   Open ───┤                            └──── close_timeout ──► Closed (unclean)
///            peer Close (reply queued) ─────────────────────────► Closed (clean, Remote)
///            violation (close frame queued), pong timeout, EOF ─► Closed (unclean)
/// ```
#[derive(Debug, Clone, Copy)]
enum State {
    Open,
    CloseSent { deadline: Instant },
    Closed,
}

/// A WebSocket connection after the opening handshake, as a Sans-IO state machine.
///
/// Methods by kind (see the crate docs, "Driving the machine"):
/// - input: [`handle_input`](Self::handle_input) (or the borrowing
///   [`handle_input_with`](Self::handle_input_with)), [`handle_timeout`](Self::handle_timeout),
///   [`handle_eof`](Self::handle_eof);
/// - commands: [`send_text`](Self::send_text), [`send_binary`](Self::send_binary),
///   [`send_fragment`](Self::send_fragment), [`send_ping`](Self::send_ping),
///   [`send_pong`](Self::send_pong), [`close`](Self::close);
/// - output: [`poll_transmit`](Self::poll_transmit) (or
///   [`poll_transmit_into`](Self::poll_transmit_into)), [`poll_timeout`](Self::poll_timeout),
///   [`poll_event`](Self::poll_event);
/// - getters: [`state`](Self::state), [`role`](Self::role),
///   [`outbound_bytes`](Self::outbound_bytes), [`stats`](Self::stats).
///
/// After any input or command: drain `poll_transmit`, then read `poll_timeout`. Drain
/// `poll_event` whenever convenient; commands issued while handling events mean draining
/// `poll_transmit` again.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    state: State,
    recv: Recv,
    send: SendQueue,
    events: VecDeque<Pending>,
    /// Last time a frame header or payload arrived (heartbeat base).
    last_rx: Instant,
    /// Set while a heartbeat ping waits for any sign of life.
    pong_deadline: Option<Instant>,
    stats: Stats,
    /// permessage-deflate state, when negotiated (always `None` without the `deflate` feature).
    deflate: Option<Box<crate::deflate::Codec>>,
    /// The message being streamed with `send_fragment` is compressed.
    send_compressed: bool,
}

/// RSV1: the permessage-deflate bit (RFC 7692 §6).
pub(crate) const RSV1: u8 = 0b100;

impl Connection {
    /// A machine for a connection whose opening handshake has completed at `now`.
    pub fn new(role: Role, config: Config, now: Instant) -> Self {
        Connection {
            role,
            send: SendQueue::new(role),
            recv: Recv::default(),
            state: State::Open,
            events: VecDeque::new(),
            last_rx: now,
            pong_deadline: None,
            stats: Stats::default(),
            #[cfg(feature = "deflate")]
            deflate: config
                .deflate
                .as_ref()
                .map(|n| Box::new(crate::deflate::Codec::new(n, role))),
            #[cfg(not(feature = "deflate"))]
            deflate: None,
            send_compressed: false,
            config,
        }
    }

    // ===== getters =====

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The state.
    pub fn state(&self) -> ConnState {
        match self.state {
            State::Open => ConnState::Open,
            State::CloseSent { .. } => ConnState::CloseSent,
            State::Closed => ConnState::Closed,
        }
    }

    /// Bytes of data frames waiting in the send queue (the backpressure measure compared with
    /// `max_outbound_buffered`).
    pub fn outbound_bytes(&self) -> usize {
        self.send.queued_bytes
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    // ===== input =====

    /// Consumes every complete frame at the front of `src` (payloads are split off with
    /// `split_to` and frozen, so events point into this buffer without copying). A partial
    /// frame's header is consumed and remembered, its payload left in `src` until complete
    /// (unmasked, and for text UTF-8-checked, as it arrives); `src` gets up to 256 KiB of spare
    /// capacity for the next read, never the whole declared length up front.
    ///
    /// Never fails: a peer violation queues the Close frame with the mapped code and surfaces
    /// as [`Event::Closed`] with an error. After `Closed`, input is ignored and left in `src`.
    pub fn handle_input(&mut self, now: Instant, src: &mut BytesMut) {
        self.handle_input_impl(now, src);
    }

    /// Like [`handle_input`](Self::handle_input) followed by draining
    /// [`poll_event`](Self::poll_event), but (in [`FragmentMode::Reassemble`](crate::FragmentMode))
    /// single-frame messages are lent to `f` as slices of
    /// `src` (unmasked in place) instead of being split off as `Bytes`: no reference count and
    /// no event queue per message. For consumers that parse or forward a message and do not
    /// keep it. `f` gets the connection too, so it can send replies; events arrive in wire
    /// order, with earlier queued events first.
    pub fn handle_input_with<F>(&mut self, now: Instant, src: &mut BytesMut, mut f: F)
    where
        F: FnMut(&mut Connection, EventRef<'_>),
    {
        loop {
            while let Some(ev) = self.poll_event() {
                f(self, EventRef::Owned(ev));
            }
            if matches!(self.state, State::Closed) || self.recv.stopped {
                return;
            }
            if self.step_borrowed(now, src, &mut f).is_some() {
                continue;
            }
            if !self.step(now, src) {
                while let Some(ev) = self.poll_event() {
                    f(self, EventRef::Owned(ev));
                }
                return;
            }
        }
    }

    /// Fires due timers: close timeout, pong timeout, heartbeat ping. Idempotent; early calls
    /// do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = &mut self.deflate {
            d.handle_timeout(now, self.last_rx);
        }
        match self.state {
            State::Closed => return,
            State::CloseSent { deadline } if now >= deadline => {
                self.finish(Initiator::Local, false, Some(ConnectionError::CloseTimeout));
                return;
            }
            _ => {}
        }
        if let Some(d) = self.pong_deadline {
            if now >= d {
                self.finish(
                    Initiator::Library,
                    false,
                    Some(ConnectionError::PongTimeout),
                );
            }
            return;
        }
        if let (State::Open, Some(iv)) = (self.state, self.config.ping_interval) {
            if now >= self.last_rx + iv {
                self.send.heartbeat_ping();
                self.pong_deadline = Some(now + self.config.pong_timeout);
            }
        }
    }

    /// Tells the machine the transport reached end of file (or failed). Ends the connection as
    /// unclean with [`ConnectionError::Reset`] unless it was already over.
    pub fn handle_eof(&mut self, _now: Instant) {
        if !matches!(self.state, State::Closed) {
            self.finish(Initiator::Remote, false, Some(ConnectionError::Reset));
        }
    }

    // ===== output =====

    /// The next event. A peer's Close or a violation takes effect (state change, Close frame
    /// queued) when the events before it have been polled, so messages that arrived before it
    /// can still be answered.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            if let Some(Pending::Batch(b)) = self.events.front_mut() {
                let ev = b.next_event();
                if b.is_done() {
                    self.events.pop_front();
                }
                match ev {
                    Some(ev) => return Some(ev),
                    None => continue,
                }
            }
            match self.events.pop_front()? {
                Pending::Event(e) => return Some(e),
                Pending::Batch(_) => {}
                Pending::Fail(e) => self.fail_now(e),
                Pending::PeerClose(code, reason) => self.peer_close_now(code, &reason),
            }
        }
    }

    /// Output, in batches: the next run of small messages (payloads up to 1 KiB, complete
    /// single frames) that arrived one after the other, or `None` when the next event is not
    /// such a run (then [`poll_event`](Self::poll_event) has it).
    ///
    /// A run's payloads were copied out of the read buffer together (unmasked on the way):
    /// texts into one string, binaries into one buffer, so a burst of small messages costs no
    /// reference count per message. Iterate it by reference for borrowed views
    /// ([`EventRef::Text`] / [`EventRef::Binary`]) or by value for owned events.
    ///
    /// ```
    /// use agentwire_ws::{Config, Connection, EventRef, Role};
    /// use bytes::BytesMut;
    /// use std::time::Instant;
    ///
    /// let now = Instant::now();
    /// let mut client = Connection::new(Role::Client, Config::default(), now);
    /// let mut server = Connection::new(Role::Server, Config::default(), now);
    /// for word in ["one", "two", "three"] {
    ///     client.send_text(word).unwrap();
    /// }
    /// let mut wire = BytesMut::new();
    /// client.poll_transmit_into(&mut wire);
    /// server.handle_input(now, &mut wire);
    /// let mut got = Vec::new();
    /// while let Some(batch) = server.poll_messages() {
    ///     for m in &batch {
    ///         if let EventRef::Text(t) = m {
    ///             got.push(t.to_owned());
    ///         }
    ///     }
    /// }
    /// assert_eq!(got, ["one", "two", "three"]);
    /// assert!(server.poll_event().is_none());
    /// ```
    pub fn poll_messages(&mut self) -> Option<Messages> {
        if !matches!(self.events.front(), Some(Pending::Batch(_))) {
            return None;
        }
        match self.events.pop_front() {
            Some(Pending::Batch(b)) if !b.is_done() => Some(Messages { batch: *b }),
            _ => None,
        }
    }

    /// The next frame to write. Control replies (pong, heartbeat ping) go before queued data;
    /// the Close frame goes last and nothing follows it.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.send.pop()?;
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += t.len() as u64;
        Some(t)
    }

    /// Appends every pending frame to `dst`, in [`poll_transmit`](Self::poll_transmit) order,
    /// and returns the number of bytes appended: for drivers that gather writes into one
    /// buffer anyway. Cheaper than `poll_transmit` for bursts of small frames (their shared
    /// buffer is copied and reused rather than handed out), but large server payloads are
    /// copied too; use `poll_transmit` to write those without copying.
    pub fn poll_transmit_into(&mut self, dst: &mut BytesMut) -> usize {
        let (frames, bytes) = self.send.drain_into(dst);
        self.stats.frames_sent += frames;
        self.stats.bytes_sent += bytes as u64;
        bytes
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let protocol = match self.state {
            State::Closed => return None,
            State::CloseSent { deadline } => {
                Some(self.pong_deadline.map_or(deadline, |p| p.min(deadline)))
            }
            State::Open => self
                .pong_deadline
                .or_else(|| self.config.ping_interval.map(|iv| self.last_rx + iv)),
        };
        // permessage-deflate: freeing idle compression state
        let release = self
            .deflate
            .as_ref()
            .and_then(|d| d.release_deadline(self.last_rx));
        match (protocol, release) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ===== commands =====

    /// Queues a text message (one frame; compressed when permessage-deflate was negotiated
    /// and the text is at least the threshold long).
    pub fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), SendError> {
        self.send_message(crate::OpCode::Text, text.into().into_bytes())
    }

    /// Queues a binary message (one frame). In the server role a payload of at least
    /// [`COALESCE_BELOW`] bytes is handed back by `poll_transmit` as is, so one payload can be
    /// sent to many connections without copying (unless permessage-deflate compresses it).
    pub fn send_binary(&mut self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.send_message(crate::OpCode::Binary, data.into())
    }

    /// Whether permessage-deflate currently holds a compressor (about 270 KiB at 15 window
    /// bits), e.g. for memory diagnostics; freed after
    /// [`DeflateConfig::release_after`](crate::deflate::DeflateConfig::release_after).
    pub fn holds_compressor(&self) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.holds().0)
    }

    /// Whether permessage-deflate currently holds a decompressor (about 40 KiB).
    pub fn holds_decompressor(&self) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.holds().1)
    }

    /// Queues a message prepared once for many connections: with permessage-deflate and no
    /// context takeover for this side, its compressed form is made once per parameter set
    /// (window bits, level) and shared by every connection that sends it; otherwise it is
    /// sent as [`send_text`](Self::send_text) / [`send_binary`](Self::send_binary) would.
    pub fn send_prepared(&mut self, msg: &PreparedMessage) -> Result<(), SendError> {
        if let Some(d) = &self.deflate {
            if let (true, Some((bits, level))) = (d.compresses(msg.payload.len()), d.standalone()) {
                self.check_open()?;
                self.send
                    .check_data(msg.payload.len(), self.config.max_outbound_buffered)?;
                if let Some(z) = msg.compressed(bits, level) {
                    self.send.push_data(msg.opcode, z, RSV1);
                    return Ok(());
                }
            }
        }
        self.send_message(msg.opcode, msg.payload.clone())
    }

    fn send_message(&mut self, opcode: crate::OpCode, payload: Bytes) -> Result<(), SendError> {
        self.check_open()?;
        self.send
            .check_data(payload.len(), self.config.max_outbound_buffered)?;
        let (payload, rsv) = match &mut self.deflate {
            Some(d) if d.compresses(payload.len()) => match d.compress(&payload, true) {
                Some(z) => (z, RSV1),
                None => (payload, 0),
            },
            _ => (payload, 0),
        };
        self.send.push_data(opcode, payload, rsv);
        Ok(())
    }

    /// Queues one frame of a streamed message: the first call starts a message of `kind`, later
    /// calls must use the same kind, `fin` ends it. For text, the chunks together must be UTF-8
    /// (a chunk may split a code point). Whole-message sends are refused while one is streaming.
    /// With permessage-deflate, streamed messages are compressed chunk by chunk (each chunk is
    /// flushed, so the peer can inflate it at once).
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        chunk: Bytes,
        fin: bool,
    ) -> Result<(), SendError> {
        self.check_open()?;
        let (opcode, first) =
            self.send
                .check_fragment(kind, chunk.len(), self.config.max_outbound_buffered)?;
        if first {
            self.send_compressed = self
                .deflate
                .as_ref()
                .is_some_and(|d| d.compresses_streams());
        }
        let mut rsv = 0;
        let mut chunk = chunk;
        if self.send_compressed {
            if let Some(d) = &mut self.deflate {
                match d.compress(&chunk, fin) {
                    Some(z) => chunk = z,
                    // the compressor failed and was reset: the message cannot continue
                    // compressed, so it ends here as the peer will see it
                    None => return Err(SendError::Closed),
                }
            }
            if first {
                rsv = RSV1;
            }
        }
        self.send.push_fragment(kind, opcode, chunk, fin, rsv);
        Ok(())
    }

    /// Queues a ping (payload at most 125 bytes).
    pub fn send_ping(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.check_open()?;
        self.send.control(crate::OpCode::Ping, payload)
    }

    /// Queues an unsolicited pong (a unidirectional heartbeat, RFC 6455 §5.5.3).
    pub fn send_pong(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.check_open()?;
        self.send.control(crate::OpCode::Pong, payload)
    }

    /// Starts the closing handshake: queues a Close frame and waits at most `close_timeout`
    /// (from `now`) for the peer's. `reason` is at most 123 bytes.
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.check_open()?;
        if !code.is_valid_on_wire() {
            return Err(SendError::InvalidCloseCode(code.0));
        }
        if reason.len() > 123 {
            return Err(SendError::ControlPayloadTooLong);
        }
        self.send.close(Some(code), reason.as_bytes());
        self.state = State::CloseSent {
            deadline: now + self.config.close_timeout,
        };
        Ok(())
    }

    fn check_open(&self) -> Result<(), SendError> {
        match self.state {
            State::Open => Ok(()),
            _ => Err(SendError::Closed),
        }
    }

    /// Ends the connection: queues the terminal event and stops the timers.
    fn finish(&mut self, initiator: Initiator, clean: bool, error: Option<ConnectionError>) {
        self.state = State::Closed;
        self.pong_deadline = None;
        self.recv.reset();
        self.events.push_back(Pending::Event(Event::Closed {
            initiator,
            clean,
            error,
        }));
    }
}

/// The random source used for masking keys, for the handshake's client key.
pub(crate) fn send_masks() -> send::MaskSource {
    send::MaskSource::new()
}

/// A message to be sent to many connections ([`Connection::send_prepared`]): the payload is
/// shared, and where permessage-deflate runs without context takeover for the sending side,
/// so is its compressed form — compressed once per distinct (window bits, level), not once
/// per connection. Cheap to clone (reference counted); `Send + Sync`.
#[derive(Debug, Clone)]
pub struct PreparedMessage {
    opcode: crate::OpCode,
    payload: Bytes,
    /// Compressed forms by (window bits, level).
    compressed: std::sync::Arc<std::sync::Mutex<Vec<(u8, u32, Bytes)>>>,
}

impl PreparedMessage {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::new(crate::OpCode::Text, text.into().into_bytes())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::new(crate::OpCode::Binary, data.into())
    }

    fn new(opcode: crate::OpCode, payload: Bytes) -> Self {
        Self {
            opcode,
            payload,
            compressed: Default::default(),
        }
    }

    /// The uncompressed payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        self.opcode == crate::OpCode::Text
    }

    /// How many compressed forms were made so far (one per parameter set that needed one).
    pub fn compressed_forms(&self) -> usize {
        self.compressed.lock().map_or(0, |v| v.len())
    }

    fn compressed(&self, bits: u8, level: u32) -> Option<Bytes> {
        let mut forms = self.compressed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, z)) = forms.iter().find(|(b, l, _)| (*b, *l) == (bits, level)) {
            return Some(z.clone());
        }
        let z = crate::deflate::compress_standalone(&self.payload, bits, level)?;
        forms.push((bits, level, z.clone()));
        Some(z)
    }
}

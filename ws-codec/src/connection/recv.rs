//! The receive side: header checks, payload extraction, reassembly, control frames.

use super::utf8::Utf8Validator;
use super::{Connection, DataKind, Event, Initiator, Pending, Role, State};
use crate::close::CloseCode;
use crate::config::FragmentMode;
use crate::error::{ConnectionError, ProtocolError};
use crate::frame::{FrameHeader, OpCode};
use crate::mask::apply_mask;
use crate::Utf8Bytes;
use bytes::{Buf, Bytes, BytesMut};
use std::time::Instant;

/// Spare capacity reserved ahead of a partial frame's payload: 256 KiB, or as much as is
/// already buffered when that is more (geometric growth), never more than the frame needs.
const RESERVE_STEP: usize = 256 * 1024;

/// Largest payload a run of small messages copies out of the read buffer (see
/// `Connection::small_run`): 1 KiB, where copying costs about what a reference count per
/// message costs; larger payloads are split off the read buffer without copying.
pub(super) const SMALL_MESSAGE: usize = 1024;

/// A run of small single-frame messages, copied out of the read buffer together: texts in
/// one string, binaries in one buffer. Handed out message by message by `poll_event`, or
/// whole by `poll_messages`.
#[derive(Debug, Clone)]
pub(super) struct Batch {
    pub(super) text: Utf8Bytes,
    pub(super) binary: Bytes,
    /// Kind and range (in `text` or `binary`) of each message.
    pub(super) list: Vec<(DataKind, usize, usize)>,
    /// Messages before this one were handed out.
    pub(super) next: usize,
}

impl Batch {
    /// The next message as an owned event (sharing the run's buffers).
    pub(super) fn next_event(&mut self) -> Option<Event> {
        let &(kind, start, end) = self.list.get(self.next)?;
        self.next += 1;
        Some(match kind {
            DataKind::Text => Event::Text(self.text.slice(start, end).unwrap_or_default()),
            DataKind::Binary => Event::Binary(self.binary.slice(start..end)),
        })
    }

    pub(super) fn is_done(&self) -> bool {
        self.next >= self.list.len()
    }
}

/// A message being reassembled.
#[derive(Debug)]
enum Partial {
    Text(String),
    Binary(BytesMut),
    /// `FragmentMode::Stream`: only the kind is kept.
    Streaming,
}

#[derive(Debug)]
struct Message {
    kind: DataKind,
    len: u64,
    buf: Partial,
    /// permessage-deflate: the first frame had RSV1.
    compressed: bool,
    /// Inflated bytes so far (compressed messages).
    inflated: usize,
}

#[derive(Debug, Default)]
pub(super) struct Recv {
    /// The header of a frame whose payload has not fully arrived (never parsed twice).
    header: Option<FrameHeader>,
    message: Option<Message>,
    utf8: Utf8Validator,
    /// Set once a Close or a violation was parsed: later input is not looked at.
    pub(super) stopped: bool,
    /// The payload of a frame that did not arrive in one piece, moved out of the input as
    /// it arrives (unmasked, and for text checked, on the way). Unallocated otherwise.
    partial: Vec<u8>,
    /// A frame's payload is being collected in `partial`.
    collecting: bool,
    /// Fail-fast UTF-8 check of a partial text frame (state after the bytes in `partial`).
    early: Option<Utf8Validator>,
}

impl Recv {
    pub(super) fn reset(&mut self) {
        self.header = None;
        self.message = None;
        self.utf8.reset();
        self.partial = Vec::new();
        self.collecting = false;
        self.early = None;
    }
}

impl Connection {
    pub(super) fn handle_input_impl(&mut self, now: Instant, src: &mut BytesMut) {
        loop {
            self.small_run(now, src);
            if !self.step(now, src) {
                return;
            }
        }
    }

    /// The run of complete, unfragmented, uncompressed small data frames at the front of
    /// `src`: each payload is copied out (unmasked on the way) into one text or one binary
    /// buffer for the whole run, and the run is queued as one [`Batch`]. A run costs one
    /// allocation per buffer and no reference count per message, where splitting each payload
    /// off the read buffer costs two atomic operations per message. Any other frame ends the
    /// run and goes through [`step`](Self::step).
    fn small_run(&mut self, now: Instant, src: &mut BytesMut) {
        if self.recv.header.is_some()
            || self.recv.message.is_some()
            || self.recv.stopped
            || self.config.fragments != FragmentMode::Reassemble
            || matches!(self.state, State::Closed)
        {
            return;
        }
        let mut pos = 0;
        let mut text = String::new();
        let mut binary: Vec<u8> = Vec::new();
        let mut scratch = [0u8; SMALL_MESSAGE];
        let mut list = Vec::new();
        let mut invalid = None;
        while let Ok(Some((h, n))) = FrameHeader::decode(&src[pos..]) {
            if !h.fin
                || h.rsv != 0
                || !matches!(h.opcode, OpCode::Text | OpCode::Binary)
                || h.len > SMALL_MESSAGE as u64
            {
                break;
            }
            let len = h.len as usize;
            if src.len() - pos - n < len || self.check_header(&h).is_err() {
                break;
            }
            let payload = &src[pos + n..pos + n + len];
            if h.opcode == OpCode::Text {
                // Unmasked and validated in a scratch buffer, then appended: the run's text
                // is built from `str`s, never validated twice.
                let piece = &mut scratch[..len];
                piece.copy_from_slice(payload);
                if let Some(key) = h.mask {
                    apply_mask(piece, key, 0);
                }
                let Ok(piece) = simdutf8::basic::from_utf8(piece) else {
                    invalid = Some(n + len);
                    break;
                };
                if text.capacity() == 0 {
                    text.reserve(src.len() - pos);
                }
                let start = text.len();
                text.push_str(piece);
                list.push((DataKind::Text, start, start + len));
            } else {
                if binary.capacity() == 0 {
                    binary.reserve(src.len() - pos);
                }
                let start = binary.len();
                binary.extend_from_slice(payload);
                if let Some(key) = h.mask {
                    apply_mask(&mut binary[start..], key, 0);
                }
                list.push((DataKind::Binary, start, start + len));
            }
            pos += n + len;
            self.stats.frames_received += 1;
            self.stats.bytes_received += len as u64;
        }
        if pos > 0 {
            self.alive(now);
            src.advance(pos);
            self.events.push_back(Pending::Batch(Box::new(Batch {
                text: Utf8Bytes::from(text),
                binary: Bytes::from(binary),
                list,
                next: 0,
            })));
        }
        if let Some(skip) = invalid {
            self.alive(now);
            src.advance(skip);
            self.fail(ProtocolError::InvalidUtf8);
        }
    }

    /// Processes at most one frame (or the header of one); `false` when no further progress
    /// is possible with the bytes in `src`.
    pub(super) fn step(&mut self, now: Instant, src: &mut BytesMut) -> bool {
        if matches!(self.state, State::Closed) || self.recv.stopped {
            return false;
        }
        let hdr = match self.recv.header {
            Some(h) => h,
            None => match FrameHeader::decode(src) {
                Ok(None) => return false,
                Err(e) => {
                    self.fail(e.into());
                    return false;
                }
                Ok(Some((h, n))) => {
                    self.alive(now);
                    if let Err(e) = self.check_header(&h) {
                        self.fail(e);
                        return false;
                    }
                    src.advance(n);
                    self.recv.header = Some(h);
                    h
                }
            },
        };
        // `check_header` bounded the length by `max_frame_payload` (a usize)
        let len = hdr.len as usize;
        if self.recv.collecting || src.len() < len {
            // A frame that does not arrive in one piece gets a buffer of its own, so the
            // input buffer stays small and reusable instead of growing (and being copied
            // whenever an earlier message still holds it).
            return self.collect(now, hdr, src);
        }
        self.recv.header = None;
        self.alive(now);
        let mut payload = src.split_to(len);
        if let Some(key) = hdr.mask {
            apply_mask(&mut payload, key, 0);
        }
        self.stats.frames_received += 1;
        self.stats.bytes_received += len as u64;
        self.on_frame(hdr, payload);
        true
    }

    /// The borrowed fast path of `handle_input_with`: a complete, unfragmented data frame at the
    /// front of `src` is unmasked in place, validated and handed to `f` as a slice, then
    /// skipped. `None`: the frame needs the general path (control, fragment, partial, error).
    pub(super) fn step_borrowed<F>(
        &mut self,
        now: Instant,
        src: &mut BytesMut,
        f: &mut F,
    ) -> Option<()>
    where
        F: FnMut(&mut Connection, super::EventRef<'_>),
    {
        if self.recv.header.is_some()
            || self.recv.message.is_some()
            || self.config.fragments != FragmentMode::Reassemble
        {
            return None;
        }
        let (h, n) = FrameHeader::decode(src).ok()??;
        if !h.fin
            || h.rsv != 0
            || !matches!(h.opcode, OpCode::Text | OpCode::Binary)
            || self.check_header(&h).is_err()
        {
            return None;
        }
        let len = h.len as usize;
        if src.len() - n < len {
            return None;
        }
        self.alive(now);
        self.stats.frames_received += 1;
        self.stats.bytes_received += len as u64;
        let payload = &mut src[n..n + len];
        if let Some(key) = h.mask {
            apply_mask(payload, key, 0);
        }
        if h.opcode == OpCode::Text {
            match simdutf8::basic::from_utf8(payload) {
                Ok(text) => f(self, super::EventRef::Text(text)),
                Err(_) => {
                    src.advance(n + len);
                    self.fail(ProtocolError::InvalidUtf8);
                    return Some(());
                }
            }
        } else {
            f(self, super::EventRef::Binary(payload));
        }
        src.advance(n + len);
        Some(())
    }

    /// Moves the bytes of a frame that did not arrive in one piece from `src` into its own
    /// buffer, unmasking them on the way; hands the frame on once complete. The buffer grows
    /// as bytes arrive, never more than 256 KiB (or twice what arrived) ahead of them, so a
    /// 10-byte header cannot buy a 16 MiB allocation; growth is geometric, so a large frame
    /// costs O(n) copying in total.
    fn collect(&mut self, now: Instant, hdr: FrameHeader, src: &mut BytesMut) -> bool {
        let len = hdr.len as usize;
        self.recv.collecting = true;
        let have = self.recv.partial.len();
        let take = (len - have).min(src.len());
        if take > 0 {
            self.alive(now);
            let buf = &mut self.recv.partial;
            if buf.capacity() - have < take {
                let grown = (2 * buf.capacity()).max(RESERVE_STEP).max(have + take);
                buf.reserve_exact(grown.min(len) - have);
            }
            buf.extend_from_slice(&src[..take]);
            src.advance(take);
            if let Some(key) = hdr.mask {
                apply_mask(&mut buf[have..], key, have);
            }
            if let Err(e) = self.early_check(&hdr, have) {
                self.fail(e);
                return false;
            }
        }
        if self.recv.partial.len() < len {
            return false;
        }
        self.recv.header = None;
        self.recv.collecting = false;
        self.recv.early = None;
        let payload = BytesMut::from(Bytes::from(std::mem::take(&mut self.recv.partial)));
        self.stats.frames_received += 1;
        self.stats.bytes_received += len as u64;
        self.on_frame(hdr, payload);
        true
    }

    /// A partial frame grew (its new bytes start at `start` of the frame buffer, unmasked):
    /// for text, check them so invalid UTF-8 fails at once instead of after the whole frame
    /// (RFC 6455 §8.1, Autobahn 6.4.*). The complete frame is still validated once more when
    /// it is turned into a `Utf8Bytes`, the one validation that builds the value.
    fn early_check(&mut self, hdr: &FrameHeader, start: usize) -> Result<(), ProtocolError> {
        // compressed text is checked after inflating, frame by frame
        let text = match hdr.opcode {
            OpCode::Text => hdr.rsv & super::RSV1 == 0,
            OpCode::Continuation => self
                .recv
                .message
                .as_ref()
                .is_some_and(|m| m.kind == DataKind::Text && !m.compressed),
            _ => false,
        };
        if text {
            let carried = &self.recv.utf8;
            let opcode = hdr.opcode;
            let v = self.recv.early.get_or_insert_with(|| {
                if opcode == OpCode::Continuation {
                    carried.clone()
                } else {
                    Utf8Validator::default()
                }
            });
            v.feed(&self.recv.partial[start..], false, None)
                .map_err(|()| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    fn alive(&mut self, now: Instant) {
        self.last_rx = now;
        self.pong_deadline = None;
    }

    /// RSV bits: only RSV1, only on the first frame of a message, only with permessage-deflate
    /// negotiated (RFC 7692 §6); anything else is a violation.
    fn check_rsv(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        let allowed = if self.deflate.is_some() && matches!(h.opcode, OpCode::Text | OpCode::Binary)
        {
            super::RSV1
        } else {
            0
        };
        if h.rsv & !allowed != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        Ok(())
    }

    /// Everything that can be checked before the payload is buffered.
    fn check_header(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        self.check_rsv(h)?;
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if h.opcode.is_control() {
            return Ok(()); // FIN and length checked by the frame decoder
        }
        match (h.opcode, &self.recv.message) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        let max = self.config.max_frame_payload;
        if h.len > max as u64 {
            return Err(ProtocolError::FrameTooLarge { len: h.len, max });
        }
        if self.config.fragments == FragmentMode::Reassemble {
            let so_far = self.recv.message.as_ref().map_or(0, |m| m.len);
            let total = so_far + h.len;
            let max = self.config.max_message;
            if total > max as u64 {
                return Err(ProtocolError::MessageTooLarge { len: total, max });
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, hdr: FrameHeader, payload: BytesMut) {
        match hdr.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if let Err(e) = self.on_data(hdr, payload.freeze()) {
                    self.fail(e);
                }
            }
            OpCode::Ping => {
                let p = payload.freeze();
                if self.config.auto_pong && matches!(self.state, State::Open) {
                    self.send.auto_pong(p.clone());
                }
                self.events.push_back(Pending::Event(Event::Ping(p)));
            }
            OpCode::Pong => self
                .events
                .push_back(Pending::Event(Event::Pong(payload.freeze()))),
            OpCode::Close => {
                if let Err(e) = self.on_close(payload.freeze()) {
                    self.fail(e);
                }
            }
        }
    }

    /// Inflates one frame of a compressed message (bounded by `max_message`: per message when
    /// reassembling, per frame when streaming).
    fn inflate(&mut self, payload: &[u8], fin: bool) -> Result<Bytes, ProtocolError> {
        let max = self.config.max_message;
        let so_far = match (self.config.fragments, &self.recv.message) {
            (FragmentMode::Reassemble, Some(m)) => m.inflated,
            _ => 0,
        };
        let limit = max.saturating_sub(so_far);
        let Some(d) = &mut self.deflate else {
            return Err(ProtocolError::ReservedBits);
        };
        let mut out = Vec::new();
        match d.inflate(payload, fin, limit, &mut out) {
            Ok(()) => {}
            Err(crate::deflate::InflateError::TooLarge) => {
                return Err(ProtocolError::MessageTooLarge {
                    len: (so_far + out.len()) as u64,
                    max,
                })
            }
            Err(crate::deflate::InflateError::Corrupt) => {
                return Err(ProtocolError::InvalidCompressedData)
            }
        }
        if let Some(m) = &mut self.recv.message {
            m.inflated += out.len();
        }
        Ok(Bytes::from(out))
    }

    fn on_data(&mut self, hdr: FrameHeader, payload: Bytes) -> Result<(), ProtocolError> {
        let (kind, compressed) = match hdr.opcode {
            OpCode::Text => (DataKind::Text, hdr.rsv & super::RSV1 != 0),
            OpCode::Binary => (DataKind::Binary, hdr.rsv & super::RSV1 != 0),
            _ => self
                .recv
                .message
                .as_ref()
                .map_or((DataKind::Binary, false), |m| (m.kind, m.compressed)),
        };
        let fin = hdr.fin;
        let payload = if compressed {
            self.inflate(&payload, fin)?
        } else {
            payload
        };
        if self.config.fragments == FragmentMode::Stream {
            if kind == DataKind::Text {
                self.recv
                    .utf8
                    .feed(&payload, fin, None)
                    .map_err(|()| ProtocolError::InvalidUtf8)?;
            }
            self.recv.message = if fin {
                None
            } else {
                Some(Message {
                    kind,
                    len: 0,
                    buf: Partial::Streaming,
                    compressed,
                    inflated: 0,
                })
            };
            self.events.push_back(Pending::Event(Event::Fragment {
                kind,
                chunk: payload,
                fin,
            }));
            return Ok(());
        }
        // Reassemble: a single-frame message is handed out without copying.
        if fin && self.recv.message.is_none() {
            let ev = match kind {
                DataKind::Text => Event::Text(
                    Utf8Bytes::try_from_bytes(payload).map_err(|_| ProtocolError::InvalidUtf8)?,
                ),
                DataKind::Binary => Event::Binary(payload),
            };
            self.events.push_back(Pending::Event(ev));
            return Ok(());
        }
        let inflated = if compressed { payload.len() } else { 0 };
        let msg = self.recv.message.get_or_insert_with(|| Message {
            kind,
            len: 0,
            buf: match kind {
                DataKind::Text => Partial::Text(String::new()),
                DataKind::Binary => Partial::Binary(BytesMut::new()),
            },
            compressed,
            inflated,
        });
        msg.len += payload.len() as u64;
        match &mut msg.buf {
            Partial::Text(s) => self
                .recv
                .utf8
                .feed(&payload, fin, Some(s))
                .map_err(|()| ProtocolError::InvalidUtf8)?,
            Partial::Binary(b) => b.extend_from_slice(&payload),
            Partial::Streaming => {}
        }
        if fin {
            if let Some(m) = self.recv.message.take() {
                let ev = match m.buf {
                    Partial::Text(s) => Event::Text(Utf8Bytes::from(s)),
                    Partial::Binary(b) => Event::Binary(b.freeze()),
                    Partial::Streaming => return Ok(()),
                };
                self.events.push_back(Pending::Event(ev));
            }
        }
        Ok(())
    }

    /// RFC 6455 §5.5.1 and §7.
    fn on_close(&mut self, payload: Bytes) -> Result<(), ProtocolError> {
        let (code, reason) = match payload.len() {
            0 => (None, Utf8Bytes::new()),
            1 => return Err(ProtocolError::ClosePayloadTooShort),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_valid_on_wire() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = Utf8Bytes::try_from_bytes(payload.slice(2..))
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                (Some(code), reason)
            }
        };
        let echo = reason.as_bytes().clone();
        self.events
            .push_back(Pending::Event(Event::CloseReceived { code, reason }));
        self.events.push_back(Pending::PeerClose(code, echo));
        self.recv.stopped = true;
        Ok(())
    }

    /// Completes the closing handshake after the peer's Close (RFC 6455 §7): runs when the
    /// events before it have been polled, so replies to them still go out before our Close.
    /// The answering Close carries the peer's code and reason (as browsers and the Workers
    /// runtime answer), or nothing when the peer sent no code.
    pub(super) fn peer_close_now(&mut self, code: Option<CloseCode>, reason: &[u8]) {
        match self.state {
            State::Open => {
                self.send.close(code, reason);
                self.finish(Initiator::Remote, true, None);
            }
            State::CloseSent { .. } => self.finish(Initiator::Local, true, None),
            State::Closed => {}
        }
    }

    /// Records a violation; input stops here. The connection fails when the events before it
    /// have been polled (so echoes of earlier messages can still be sent).
    pub(super) fn fail(&mut self, e: ProtocolError) {
        self.events.push_back(Pending::Fail(e));
        self.recv.stopped = true;
    }

    /// Fails the connection (RFC 6455 §7.1.7): queues a Close with the violation's code (unless
    /// one was sent already) and ends with an error.
    pub(super) fn fail_now(&mut self, e: ProtocolError) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.send.close(Some(e.close_code()), b"");
        self.finish(
            Initiator::Library,
            false,
            Some(ConnectionError::Protocol(e)),
        );
    }
}

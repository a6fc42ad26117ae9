//! The send side: frame building, client masking, coalescing of small frames, the bounded
//! queue.

use super::{DataKind, Role, Transmit};
use crate::close::CloseCode;
use crate::error::SendError;
use crate::frame::{FrameHeader, HeaderBytes, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::mask::apply_mask;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};

/// Unpredictable masking keys without a `rand` dependency: SipHash (a keyed PRF) under a key
/// std draws from the OS, applied to a counter; each output gives two keys.
#[derive(Debug)]
pub(crate) struct MaskSource {
    key: RandomState,
    counter: u64,
    spare: Option<u32>,
}

impl MaskSource {
    pub(crate) fn new() -> Self {
        MaskSource {
            key: RandomState::new(),
            counter: 0,
            spare: None,
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut h = self.key.build_hasher();
        h.write_u64(self.counter);
        self.counter = self.counter.wrapping_add(1);
        h.finish()
    }

    fn next_key(&mut self) -> [u8; 4] {
        if let Some(k) = self.spare.take() {
            return k.to_ne_bytes();
        }
        let v = self.next_u64();
        self.spare = Some((v >> 32) as u32);
        (v as u32).to_ne_bytes()
    }
}

/// Payloads shorter than this are copied next to their header into a shared buffer (one
/// `Transmit` for many small frames, masked there in the client role); longer ones are kept as
/// the caller's `Bytes`: handed out as they are in the server role, never copied, and masked
/// while copied once (into the driver's buffer or their own) in the client role. 1 KiB: below
/// it, copying is cheaper than a separate write and a reference count per frame.
pub const COALESCE_BELOW: usize = 1024;

/// Allocation unit of the buffer small frames are encoded into, once a burst outgrows
/// [`FIRST_CHUNK`].
const TAIL_CHUNK: usize = 64 * 1024;

/// First allocation of that buffer for a burst. After the queue is drained through
/// `poll_transmit` the buffer's spare room is given back, so an idle connection holds no send
/// buffer: 4 KiB per burst instead of 64 KiB per connection kept forever.
const FIRST_CHUNK: usize = 4 * 1024;

/// Most automatic pongs kept unsent (each at most 131 bytes): 64, so that a burst of pings is
/// answered one for one (as peers and Autobahn 2.10 expect) while a ping flood cannot grow the
/// queue without bound.
pub(crate) const MAX_PENDING_PONGS: usize = 64;

/// A queued frame: a transmit, whose payload is still to be masked with `mask` (a large
/// client-role payload, kept as the caller's `Bytes` until it is written: masked while copied
/// into the driver's buffer by `poll_transmit_into`, or into a buffer of its own by
/// `poll_transmit`, so it is copied once either way).
#[derive(Debug)]
struct Queued {
    t: Transmit,
    mask: Option<[u8; 4]>,
}

impl Queued {
    fn write_to(self, dst: &mut BytesMut) {
        dst.extend_from_slice(&self.t.head);
        let start = dst.len();
        dst.extend_from_slice(&self.t.payload);
        if let Some(k) = self.mask {
            apply_mask(&mut dst[start..], k, 0);
        }
    }

    fn into_transmit(self) -> Transmit {
        let Some(k) = self.mask else {
            return self.t;
        };
        let mut owned = BytesMut::from(&self.t.payload[..]);
        apply_mask(&mut owned, k, 0);
        Transmit {
            head: self.t.head,
            payload: owned.freeze(),
        }
    }
}

#[derive(Debug)]
pub(super) struct SendQueue {
    role: Role,
    masks: MaskSource,
    /// Transmits ready to go, in order; `tail` follows them.
    queue: VecDeque<Queued>,
    /// Encoded frames after the last queued transmit, not yet split off.
    tail: BytesMut,
    /// Bytes in `queue` and `tail`.
    pub(super) queued_bytes: usize,
    /// Replies to pings not yet sent, at most `MAX_PENDING_PONGS` (the oldest are dropped
    /// beyond: RFC 6455 §5.5.3 allows answering only the most recent ping).
    pongs: VecDeque<Transmit>,
    /// A heartbeat ping.
    ping: Option<Transmit>,
    /// Our Close frame; goes out after everything queued before it, and nothing after it.
    close: Option<Transmit>,
    close_sent: bool,
    /// Kind of the message being streamed with `fragment`, if any.
    streaming: Option<DataKind>,
}

impl SendQueue {
    pub(super) fn new(role: Role) -> Self {
        SendQueue {
            role,
            masks: MaskSource::new(),
            queue: VecDeque::new(),
            tail: BytesMut::new(),
            queued_bytes: 0,
            pongs: VecDeque::new(),
            ping: None,
            close: None,
            close_sent: false,
            streaming: None,
        }
    }

    /// A standalone frame (control replies): masked into its own buffer in the client role.
    fn frame(&mut self, fin: bool, opcode: OpCode, payload: Bytes) -> Transmit {
        let len = payload.len() as u64;
        match self.role {
            Role::Server => Transmit {
                head: FrameHeader {
                    fin,
                    rsv: 0,
                    opcode,
                    mask: None,
                    len,
                }
                .to_bytes(),
                payload,
            },
            Role::Client => {
                let key = self.masks.next_key();
                let mut owned = BytesMut::from(&payload[..]);
                apply_mask(&mut owned, key, 0);
                Transmit {
                    head: FrameHeader {
                        fin,
                        rsv: 0,
                        opcode,
                        mask: Some(key),
                        len,
                    }
                    .to_bytes(),
                    payload: owned.freeze(),
                }
            }
        }
    }

    /// Queues a frame in order: encoded into `tail` when it is small, else as a transmit of
    /// the caller's payload (masked when written, in the client role).
    fn push(&mut self, fin: bool, rsv: u8, opcode: OpCode, payload: Bytes) {
        let len = payload.len();
        if len >= COALESCE_BELOW {
            self.flush_tail();
            let mask = (self.role == Role::Client).then(|| self.masks.next_key());
            let t = Transmit {
                head: FrameHeader {
                    fin,
                    rsv,
                    opcode,
                    mask,
                    len: len as u64,
                }
                .to_bytes(),
                payload,
            };
            self.queued_bytes += t.len();
            self.queue.push_back(Queued { t, mask });
            return;
        }
        let mask = (self.role == Role::Client).then(|| self.masks.next_key());
        let h = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            len: len as u64,
        };
        let mut hb = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut hb);
        let need = n + len;
        // Room for the whole 14-byte header array: copying a fixed size is a few moves, a
        // variable-length copy is a call.
        let room = need + MAX_HEADER_LEN;
        if self.tail.capacity() - self.tail.len() < room {
            if self.tail.is_empty() {
                self.tail = BytesMut::with_capacity(room.max(FIRST_CHUNK));
            } else {
                self.tail.reserve(room.max(TAIL_CHUNK));
            }
        }
        let at = self.tail.len();
        self.tail.extend_from_slice(&hb);
        self.tail.truncate(at + n);
        let start = self.tail.len();
        self.tail.extend_from_slice(&payload);
        if let Some(k) = mask {
            apply_mask(&mut self.tail[start..], k, 0);
        }
        self.queued_bytes += need;
    }

    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            let payload = self.tail.split().freeze();
            self.queue.push_back(Queued {
                t: Transmit {
                    head: HeaderBytes::EMPTY,
                    payload,
                },
                mask: None,
            });
        }
    }

    fn check_room(&self, payload: usize, max: usize) -> Result<(), SendError> {
        if self.queued_bytes + payload + MAX_HEADER_LEN > max {
            return Err(SendError::BufferFull {
                outbound: self.queued_bytes,
            });
        }
        Ok(())
    }

    /// Checks that a whole message of `len` bytes may be queued (before it is compressed:
    /// a refused message must not have entered the compressor's window).
    pub(super) fn check_data(&self, len: usize, max: usize) -> Result<(), SendError> {
        if self.streaming.is_some() {
            return Err(SendError::MessageInProgress);
        }
        self.check_room(len, max)
    }

    /// Queues a whole message checked by `check_data`.
    pub(super) fn push_data(&mut self, opcode: OpCode, payload: Bytes, rsv: u8) {
        self.push(true, rsv, opcode, payload);
    }

    /// The opcode of the next frame of a streamed message of `kind`, after checking that a
    /// chunk of `len` bytes may be queued; `Ok((opcode, first))`.
    pub(super) fn check_fragment(
        &self,
        kind: DataKind,
        len: usize,
        max: usize,
    ) -> Result<(OpCode, bool), SendError> {
        let r = match self.streaming {
            None => match kind {
                DataKind::Text => (OpCode::Text, true),
                DataKind::Binary => (OpCode::Binary, true),
            },
            Some(k) if k == kind => (OpCode::Continuation, false),
            Some(_) => return Err(SendError::MessageInProgress),
        };
        self.check_room(len, max)?;
        Ok(r)
    }

    /// Queues a frame of a streamed message checked by `check_fragment`.
    pub(super) fn push_fragment(
        &mut self,
        kind: DataKind,
        opcode: OpCode,
        chunk: Bytes,
        fin: bool,
        rsv: u8,
    ) {
        self.push(fin, rsv, opcode, chunk);
        self.streaming = if fin { None } else { Some(kind) };
    }

    /// User pings and pongs: queued in order with data, not refused by the limit (at most 131
    /// bytes each; the caller decides how many).
    pub(super) fn control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), SendError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlPayloadTooLong);
        }
        self.push(true, 0, opcode, payload);
        Ok(())
    }

    /// Queues the automatic reply to a ping, dropping the oldest unsent one past the cap.
    pub(super) fn auto_pong(&mut self, payload: Bytes) {
        if self.close.is_none() && !self.close_sent {
            if self.pongs.len() == MAX_PENDING_PONGS {
                self.pongs.pop_front();
            }
            let t = self.frame(true, OpCode::Pong, payload);
            self.pongs.push_back(t);
        }
    }

    pub(super) fn heartbeat_ping(&mut self) {
        let payload = Bytes::copy_from_slice(&self.masks.next_u64().to_be_bytes());
        self.ping = Some(self.frame(true, OpCode::Ping, payload));
    }

    /// Queues our Close frame (code and reason already validated). Idempotent.
    pub(super) fn close(&mut self, code: Option<CloseCode>, reason: &[u8]) {
        if self.close.is_some() || self.close_sent {
            return;
        }
        let mut p = BytesMut::with_capacity(2 + reason.len());
        if let Some(c) = code {
            p.put_u16(c.0);
            p.extend_from_slice(reason);
        }
        self.close = Some(self.frame(true, OpCode::Close, p.freeze()));
    }

    /// Appends everything sendable to `dst` in `pop` order; returns (frames, bytes). The small
    /// frame buffer is copied and cleared, not split, so it is reused without allocating.
    pub(super) fn drain_into(&mut self, dst: &mut BytesMut) -> (u64, usize) {
        if self.close_sent {
            return (0, 0);
        }
        // The common case: only small frames, all in `tail`.
        if self.queue.is_empty()
            && self.pongs.is_empty()
            && self.ping.is_none()
            && self.close.is_none()
        {
            let n = self.tail.len();
            if n > 0 {
                dst.extend_from_slice(&self.tail);
                self.tail.clear();
            }
            self.queued_bytes = 0;
            return (u64::from(n > 0), n);
        }
        let start = dst.len();
        let mut frames = 0;
        for t in self.pongs.drain(..).chain(self.ping.take()) {
            t.write_to(dst);
            frames += 1;
        }
        for q in self.queue.drain(..) {
            q.write_to(dst);
            frames += 1;
        }
        if !self.tail.is_empty() {
            dst.extend_from_slice(&self.tail);
            self.tail.clear();
            frames += 1;
        }
        self.queued_bytes = 0;
        if let Some(t) = self.close.take() {
            t.write_to(dst);
            frames += 1;
            self.close_sent = true;
        }
        (frames, dst.len() - start)
    }

    pub(super) fn pop(&mut self) -> Option<Transmit> {
        if self.close_sent {
            return None;
        }
        if let Some(t) = self.pongs.pop_front() {
            return Some(t);
        }
        if let Some(t) = self.ping.take() {
            return Some(t);
        }
        if self.queue.is_empty() {
            self.flush_tail();
            // Everything queued is now in transmits: drop the spare room of the small-frame
            // buffer so an idle connection keeps none (the next burst starts a new one).
            if self.tail.capacity() > 0 {
                self.tail = BytesMut::new();
            }
        }
        if let Some(q) = self.queue.pop_front() {
            self.queued_bytes -= q.t.len();
            return Some(q.into_transmit());
        }
        let t = self.close.take()?;
        self.close_sent = true;
        Some(t)
    }
}

//! The `ws` bench's workloads and the decode arms shared with `ws_count` (instruction counts
//! under callgrind measure exactly what the bench times). Decode arms get the wire through
//! [`READ`]-byte reads and return the payload bytes delivered.

use agentwire_ws::{apply_mask, Config, Connection, Event, EventRef, FrameHeader, OpCode, Role};
use bytes::BytesMut;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Bytes per simulated socket read (and per in-memory IO read).
pub const READ: usize = 64 * 1024;

/// A stream of equal frames, as wire bytes and as the payload each frame carries.
#[derive(Debug)]
pub struct Workload {
    /// The bench id.
    pub name: &'static str,
    /// Frames on the wire.
    pub frames: usize,
    /// Text frames (else binary).
    pub text: bool,
    /// Masked frames (written by a client, read by a server).
    pub masked: bool,
    /// The payload of every frame.
    pub payload: Vec<u8>,
    /// The encoded frames.
    pub wire: Vec<u8>,
}

/// The masking key of frame `i` (fixed, so every arm sees the same bytes).
pub fn key(i: usize) -> [u8; 4] {
    ((i as u32).wrapping_mul(0x9E37_79B9) | 1).to_le_bytes()
}

/// `frames` frames of `size` bytes each.
pub fn workload(
    name: &'static str,
    frames: usize,
    size: usize,
    text: bool,
    masked: bool,
) -> Workload {
    let payload: Vec<u8> = if text {
        b"agentwire token stream chunk 0123456789"
            .iter()
            .cycle()
            .take(size)
            .copied()
            .collect()
    } else {
        (0..size)
            .map(|i| (i.wrapping_mul(131) >> 3) as u8)
            .collect()
    };
    let mut wire = Vec::with_capacity(frames * (size + 14));
    for i in 0..frames {
        let mask = masked.then(|| key(i));
        let h = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: if text { OpCode::Text } else { OpCode::Binary },
            mask,
            len: size as u64,
        };
        wire.extend_from_slice(&h.to_bytes());
        let start = wire.len();
        wire.extend_from_slice(&payload);
        if let Some(k) = mask {
            apply_mask(&mut wire[start..], k, 0);
        }
    }
    Workload {
        name,
        frames,
        text,
        masked,
        payload,
        wire,
    }
}

/// The workloads of the `ws` bench.
pub fn workloads() -> Vec<Workload> {
    vec![
        workload("a_text32_masked", 100_000, 32, true, true),
        workload("b_bin1k_masked", 10_000, 1024, false, true),
        workload("b_bin64k_masked", 160, 64 * 1024, false, true),
        workload("b_bin1m_masked", 10, 1 << 20, false, true),
        workload("c_text32_unmasked", 100_000, 32, true, false),
    ]
}

/// Reader role for the workload: masked frames are read by a server.
pub fn reader(w: &Workload) -> Role {
    if w.masked {
        Role::Server
    } else {
        Role::Client
    }
}

// ===== in-memory IO for the IO-coupled peers =====

/// In-memory IO for the peers that read from or write to a stream: reads come in `READ`
/// pieces; writes are kept (writer) or dropped (reader).
#[derive(Debug)]
pub struct MemIo<'a> {
    data: &'a [u8],
    pos: usize,
    out: Option<&'a mut Vec<u8>>,
}

impl<'a> MemIo<'a> {
    /// A reader of `data`.
    pub fn reader(data: &'a [u8]) -> Self {
        MemIo {
            data,
            pos: 0,
            out: None,
        }
    }
    /// A writer appending to `out`.
    pub fn writer(out: &'a mut Vec<u8>) -> Self {
        MemIo {
            data: &[],
            pos: 0,
            out: Some(out),
        }
    }
}

impl Read for MemIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.data.len() - self.pos).min(buf.len()).min(READ);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for MemIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(o) = self.out.as_mut() {
            o.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl tokio::io::AsyncRead for MemIo<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = (self.data.len() - self.pos).min(buf.remaining()).min(READ);
        let pos = self.pos;
        buf.put_slice(&self.data[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for MemIo<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.write(buf))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// An `agentwire-ws` connection reading the workload's wire bytes, with limits above its
/// largest message (the decode arms of every agentwire API start from it).
pub fn agentwire_reader(w: &Workload) -> Connection {
    let config = Config::default()
        .with_max_frame_payload(2 << 20)
        .with_max_message(2 << 20);
    Connection::new(reader(w), config, std::time::Instant::now())
}

/// The main owned API: `handle_input`, then runs of small messages with `poll_messages`
/// (one batch per run, no reference count per message) and everything else with
/// `poll_event`.
pub fn dec_agentwire(w: &Workload) -> usize {
    let mut conn = agentwire_reader(w);
    let now = std::time::Instant::now();
    let mut buf = BytesMut::with_capacity(READ);
    let mut got = 0;
    for chunk in w.wire.chunks(READ) {
        buf.extend_from_slice(chunk);
        conn.handle_input(now, &mut buf);
        loop {
            if let Some(batch) = conn.poll_messages() {
                for m in &batch {
                    match m {
                        EventRef::Text(t) => got += black_box(t).len(),
                        EventRef::Binary(b) => got += black_box(b).len(),
                        _ => {}
                    }
                }
                continue;
            }
            match conn.poll_event() {
                Some(Event::Text(t)) => got += black_box(t).len(),
                Some(Event::Binary(b)) => got += black_box(b).len(),
                Some(_) => {}
                None => break,
            }
        }
    }
    got
}

/// tungstenite over [`MemIo`], one `read` per message.
pub fn dec_tungstenite(w: &Workload) -> usize {
    use tungstenite::protocol::{Role as TRole, WebSocket, WebSocketConfig};
    let role = if w.masked {
        TRole::Server
    } else {
        TRole::Client
    };
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let mut ws = WebSocket::from_raw_socket(MemIo::reader(&w.wire), role, Some(cfg));
    let mut got = 0;
    for _ in 0..w.frames {
        match ws.read().expect("tungstenite read") {
            tungstenite::Message::Text(t) => got += black_box(t).len(),
            tungstenite::Message::Binary(b) => got += black_box(b).len(),
            _ => {}
        }
    }
    got
}

/// soketto's frame codec over the same reads: headers decoded, payload unmasked in place,
/// text validated.
pub fn dec_soketto(w: &Workload) -> usize {
    use soketto::base::{Codec, OpCode as SOp};
    use soketto::Parsing;
    let mut codec = Codec::new();
    codec.set_max_data_size(64 << 20);
    let mut buf: Vec<u8> = Vec::with_capacity(2 * READ);
    let mut got = 0;
    for chunk in w.wire.chunks(READ) {
        buf.extend_from_slice(chunk);
        let mut pos = 0;
        while let Parsing::Done { value: h, offset } =
            codec.decode_header(&buf[pos..]).expect("soketto header")
        {
            let len = h.payload_len();
            if buf.len() - pos - offset < len {
                break;
            }
            let p = &mut buf[pos + offset..pos + offset + len];
            Codec::apply_mask(&h, p);
            if h.opcode() == SOp::Text {
                assert!(std::str::from_utf8(p).is_ok());
            }
            got += black_box(&*p).len();
            pos += offset + len;
        }
        buf.drain(..pos);
    }
    got
}

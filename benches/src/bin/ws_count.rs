//! One WebSocket decode arm over 100,000 masked 32-byte text frames (the `ws` bench's workload
//! `a`, in 64 KiB reads), once: for instruction counts under `valgrind --tool=callgrind`. The
//! arm `none` builds the wire only; subtract its count.
//!
//! ```sh
//! cargo build --release -p agentwire-benches --bin ws_count
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/ws_count agentwire
//! ```

use agentwire_ws::{apply_mask, Config, Connection, Event, EventRef, FrameHeader, OpCode, Role};
use bytes::BytesMut;
use std::hint::black_box;
use std::io::Read;

const READ: usize = 64 * 1024;
const FRAMES: usize = 100_000;

fn wire() -> (Vec<u8>, usize) {
    let payload: Vec<u8> = b"agentwire token stream chunk 0123456789"
        .iter()
        .cycle()
        .take(32)
        .copied()
        .collect();
    let mut wire = Vec::new();
    for i in 0..FRAMES {
        let key = ((i as u32).wrapping_mul(0x9E37_79B9) | 1).to_le_bytes();
        let h = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Text,
            mask: Some(key),
            len: 32,
        };
        wire.extend_from_slice(&h.to_bytes());
        let start = wire.len();
        wire.extend_from_slice(&payload);
        apply_mask(&mut wire[start..], key, 0);
    }
    (wire, FRAMES * payload.len())
}

fn agentwire(wire: &[u8]) -> usize {
    let now = std::time::Instant::now();
    let mut conn = Connection::new(Role::Server, Config::default(), now);
    let mut buf = BytesMut::with_capacity(READ);
    let mut got = 0;
    for chunk in wire.chunks(READ) {
        buf.extend_from_slice(chunk);
        conn.handle_input(now, &mut buf);
        loop {
            if let Some(batch) = conn.poll_messages() {
                for m in &batch {
                    if let EventRef::Text(t) = m {
                        got += black_box(t).len();
                    }
                }
                continue;
            }
            match conn.poll_event() {
                Some(Event::Text(t)) => got += black_box(t).len(),
                Some(_) => {}
                None => break,
            }
        }
    }
    got
}

struct MemIo<'a>(&'a [u8]);

impl Read for MemIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(READ);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

impl std::io::Write for MemIo<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn tungstenite(wire: &[u8]) -> usize {
    use tungstenite::protocol::{Role as TRole, WebSocket};
    let mut ws = WebSocket::from_raw_socket(MemIo(wire), TRole::Server, None);
    let mut got = 0;
    for _ in 0..FRAMES {
        if let tungstenite::Message::Text(t) = ws.read().expect("tungstenite read") {
            got += black_box(t).len();
        }
    }
    got
}

fn soketto(wire: &[u8]) -> usize {
    use soketto::base::{Codec, OpCode as SOp};
    use soketto::Parsing;
    let codec = Codec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(2 * READ);
    let mut got = 0;
    for chunk in wire.chunks(READ) {
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

fn main() {
    let arm = std::env::args().nth(1).unwrap_or_default();
    let (wire, total) = wire();
    let got = match arm.as_str() {
        "agentwire" => agentwire(&wire),
        "tungstenite" => tungstenite(&wire),
        "soketto" => soketto(&wire),
        "none" => total,
        _ => {
            eprintln!("usage: ws_count agentwire|tungstenite|soketto|none");
            std::process::exit(2);
        }
    };
    assert_eq!(got, total, "{arm}");
    println!("{arm}: {got} payload bytes");
}

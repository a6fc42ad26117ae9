#![allow(missing_docs)] // criterion_group! generates undocumented items
//! WebSocket decode and encode: agentwire-ws against tungstenite, fastwebsockets, soketto and
//! tokio-websockets
//! (arms of the same run), the minimum-work floor and memcpy.
//!
//! Decode arms get the wire bytes through 64 KiB "reads" (a copy into the arm's buffer, as a
//! socket read would be) and must produce every message: payload unmasked, text validated.
//! Encode arms produce the full wire (header + payload, masked with a fresh key per frame
//! when the writer is a client) into one output buffer.
//!
//! ```sh
//! cargo bench -p agentwire-benches --bench ws -- --warm-up-time 1 --measurement-time 3
//! ```

use agentwire_benches::ws::{
    agentwire_reader, dec_agentwire, dec_soketto, dec_tungstenite, key, workloads, MemIo, Workload,
    READ,
};
use agentwire_ws::{apply_mask, Config, Connection, Event, EventRef, FrameHeader, OpCode, Role};
use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

// ===== decode arms: each returns the number of payload bytes delivered =====

/// One owned event per message: `handle_input` + `poll_event`.
fn dec_agentwire_event(w: &Workload) -> usize {
    let mut conn = agentwire_reader(w);
    let now = std::time::Instant::now();
    let mut buf = BytesMut::with_capacity(READ);
    let mut got = 0;
    for chunk in w.wire.chunks(READ) {
        buf.extend_from_slice(chunk);
        conn.handle_input(now, &mut buf);
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Text(t) => got += black_box(t).len(),
                Event::Binary(b) => got += black_box(b).len(),
                _ => {}
            }
        }
    }
    got
}

/// `Connection::handle_input_with`: single-frame messages lent as slices of the read buffer
/// (no `Bytes`, no reference count per message); same checks as the owned path.
fn dec_agentwire_borrowed(w: &Workload) -> usize {
    let mut conn = agentwire_reader(w);
    let now = std::time::Instant::now();
    let mut buf = BytesMut::with_capacity(READ);
    let mut got = 0;
    for chunk in w.wire.chunks(READ) {
        buf.extend_from_slice(chunk);
        conn.handle_input_with(now, &mut buf, |_, ev| match ev {
            EventRef::Text(t) => got += black_box(t).len(),
            EventRef::Binary(b) => got += black_box(b).len(),
            EventRef::Owned(Event::Text(t)) => got += black_box(t).len(),
            EventRef::Owned(Event::Binary(b)) => got += black_box(b).len(),
            _ => {}
        });
    }
    got
}

/// agentwire's frame layer (`FrameHeader::decode` + `apply_mask` + UTF-8 check in place), the
/// layer soketto's codec arm measures.
fn dec_agentwire_frame(w: &Workload) -> usize {
    let mut buf: Vec<u8> = Vec::with_capacity(2 * READ);
    let mut got = 0;
    for chunk in w.wire.chunks(READ) {
        buf.extend_from_slice(chunk);
        let mut pos = 0;
        while let Ok(Some((h, n))) = FrameHeader::decode(&buf[pos..]) {
            let len = h.len as usize;
            if buf.len() - pos - n < len {
                break;
            }
            let p = &mut buf[pos + n..pos + n + len];
            if let Some(k) = h.mask {
                apply_mask(p, k, 0);
            }
            if h.opcode == OpCode::Text {
                assert!(std::str::from_utf8(p).is_ok());
            }
            got += black_box(&*p).len();
            pos += n + len;
        }
        buf.drain(..pos);
    }
    got
}

/// The minimum work: copy in, walk headers, unmask word-wise, validate text.
fn dec_floor(w: &Workload) -> usize {
    let mut buf: Vec<u8> = Vec::with_capacity(2 * READ);
    let mut got = 0;
    for chunk in w.wire.chunks(READ) {
        buf.extend_from_slice(chunk);
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            if rest.len() < 2 {
                break;
            }
            let masked = rest[1] & 0x80 != 0;
            let (len, mut hl) = match rest[1] & 0x7f {
                126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 if rest.len() >= 10 => (
                    u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                l => (l as usize, 2),
            };
            if masked {
                hl += 4;
            }
            if rest.len() < hl + len {
                break;
            }
            let text = rest[0] & 0x0f == 1;
            let k = if masked {
                [rest[hl - 4], rest[hl - 3], rest[hl - 2], rest[hl - 1]]
            } else {
                [0; 4]
            };
            let p = &mut buf[pos + hl..pos + hl + len];
            if masked {
                apply_mask(p, k, 0);
            }
            if text {
                assert!(std::str::from_utf8(p).is_ok());
            }
            got += black_box(&*p).len();
            pos += hl + len;
        }
        buf.drain(..pos);
    }
    got
}

fn dec_fastwebsockets(rt: &tokio::runtime::Runtime, w: &Workload) -> usize {
    let role = if w.masked {
        fastwebsockets::Role::Server
    } else {
        fastwebsockets::Role::Client
    };
    rt.block_on(async {
        let mut ws = fastwebsockets::WebSocket::after_handshake(MemIo::reader(&w.wire), role);
        ws.set_max_message_size(64 << 20);
        ws.set_auto_close(false);
        let mut ws = fastwebsockets::FragmentCollector::new(ws);
        let mut got = 0;
        for _ in 0..w.frames {
            let f = ws.read_frame().await.expect("fastwebsockets read");
            got += black_box(&f.payload[..]).len();
        }
        got
    })
}

fn dec_tokio_websockets(rt: &tokio::runtime::Runtime, w: &Workload) -> usize {
    use futures::StreamExt;
    let limits = tokio_websockets::Limits::default().max_payload_len(Some(64 << 20));
    rt.block_on(async {
        let io = MemIo::reader(&w.wire);
        let mut ws = if w.masked {
            tokio_websockets::ServerBuilder::new()
                .limits(limits)
                .serve(io)
        } else {
            tokio_websockets::ClientBuilder::new()
                .limits(limits)
                .take_over(io)
        };
        let mut got = 0;
        for _ in 0..w.frames {
            let m = ws
                .next()
                .await
                .expect("a message")
                .expect("tokio-websockets read");
            got += black_box(m.as_payload()).len();
        }
        got
    })
}

fn memcpy(w: &Workload, out: &mut Vec<u8>) -> usize {
    out.clear();
    out.extend_from_slice(&w.wire);
    black_box(out.len())
}

// ===== encode arms: each writes the whole wire into `out` =====

/// How the encode arm drains the connection.
#[derive(Clone, Copy)]
enum Drain {
    /// `poll_transmit_into` after every `n` sends (1: a write per message; 64: an event loop
    /// that answers a burst of events, then writes).
    Into(usize),
    /// `poll_transmit` after every send, each `Transmit` appended to the output.
    Transmit,
}

/// Connection-level encode.
fn enc_agentwire(w: &Workload, payload: &Bytes, out: &mut BytesMut, drain: Drain) -> usize {
    out.clear();
    let role = if w.masked { Role::Client } else { Role::Server };
    let config = Config::default().with_max_outbound_buffered(usize::MAX);
    let mut conn = Connection::new(role, config, std::time::Instant::now());
    let text = agentwire_ws::Utf8Bytes::try_from_bytes(payload.clone()).ok();
    for i in 0..w.frames {
        match (&text, w.text) {
            (Some(t), true) => conn.send_text(t.clone()).unwrap(),
            _ => conn.send_binary(payload.clone()).unwrap(),
        }
        match drain {
            Drain::Into(n) if (i + 1) % n == 0 || i + 1 == w.frames => {
                conn.poll_transmit_into(out);
            }
            Drain::Into(_) => {}
            Drain::Transmit => {
                while let Some(t) = conn.poll_transmit() {
                    t.write_to(out);
                }
            }
        }
    }
    out.len()
}

fn enc_agentwire_frame(w: &Workload, out: &mut Vec<u8>) -> usize {
    out.clear();
    for i in 0..w.frames {
        let mask = w.masked.then(|| key(i));
        let h = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: if w.text { OpCode::Text } else { OpCode::Binary },
            mask,
            len: w.payload.len() as u64,
        };
        let mut hb = [0u8; agentwire_ws::MAX_HEADER_LEN];
        let n = h.encode(&mut hb);
        out.extend_from_slice(&hb[..n]);
        let start = out.len();
        out.extend_from_slice(&w.payload);
        if let Some(k) = mask {
            apply_mask(&mut out[start..], k, 0);
        }
    }
    out.len()
}

fn enc_tungstenite(w: &Workload, payload: &Bytes, out: &mut Vec<u8>) -> usize {
    use tungstenite::protocol::frame::coding::{Data, OpCode as TOp};
    use tungstenite::protocol::frame::Frame;
    out.clear();
    let op = TOp::Data(if w.text { Data::Text } else { Data::Binary });
    for i in 0..w.frames {
        let mut f = Frame::message(payload.clone(), op, true);
        if w.masked {
            f.header_mut().mask = Some(key(i));
        }
        f.format(out).unwrap();
    }
    out.len()
}

fn enc_fastwebsockets(rt: &tokio::runtime::Runtime, w: &Workload, out: &mut Vec<u8>) -> usize {
    use fastwebsockets::{Frame, Payload};
    out.clear();
    let role = if w.masked {
        fastwebsockets::Role::Client
    } else {
        fastwebsockets::Role::Server
    };
    let mut ws = fastwebsockets::WebSocket::after_handshake(MemIo::writer(out), role);
    rt.block_on(async {
        for _ in 0..w.frames {
            let f = if w.text {
                Frame::text(Payload::Borrowed(&w.payload))
            } else {
                Frame::binary(Payload::Borrowed(&w.payload))
            };
            ws.write_frame(f).await.unwrap();
        }
        ws.flush().await.unwrap();
    });
    drop(ws);
    out.len()
}

fn enc_tokio_websockets(
    rt: &tokio::runtime::Runtime,
    w: &Workload,
    payload: &Bytes,
    out: &mut Vec<u8>,
) -> usize {
    use futures::SinkExt;
    use tokio_websockets::Message;
    out.clear();
    rt.block_on(async {
        let io = MemIo::writer(out);
        let mut ws = if w.masked {
            tokio_websockets::ClientBuilder::new().take_over(io)
        } else {
            tokio_websockets::ServerBuilder::new().serve(io)
        };
        for _ in 0..w.frames {
            let m = if w.text {
                Message::text(payload.clone())
            } else {
                Message::binary(payload.clone())
            };
            ws.feed(m).await.unwrap();
        }
        ws.flush().await.unwrap();
    });
    out.len()
}

fn enc_soketto(w: &Workload, out: &mut Vec<u8>) -> usize {
    use soketto::base::{Codec, Header, OpCode as SOp};
    out.clear();
    let mut codec = Codec::new();
    for i in 0..w.frames {
        let mut h = Header::new(if w.text { SOp::Text } else { SOp::Binary });
        h.set_payload_len(w.payload.len());
        if w.masked {
            h.set_masked(true);
            h.set_mask(u32::from_be_bytes(key(i)));
        }
        out.extend_from_slice(codec.encode_header(&h));
        let start = out.len();
        out.extend_from_slice(&w.payload);
        Codec::apply_mask(&h, &mut out[start..]);
    }
    out.len()
}

fn bench(c: &mut Criterion) {
    let rt = rt();
    for w in workloads() {
        let payload_total = w.frames * w.payload.len();
        // every decode arm must deliver every payload byte
        assert_eq!(dec_agentwire(&w), payload_total);
        assert_eq!(dec_agentwire_event(&w), payload_total);
        assert_eq!(dec_floor(&w), payload_total);
        assert_eq!(dec_agentwire_frame(&w), payload_total);
        assert_eq!(dec_agentwire_borrowed(&w), payload_total);
        assert_eq!(dec_tungstenite(&w), payload_total);
        assert_eq!(dec_fastwebsockets(&rt, &w), payload_total);
        assert_eq!(dec_soketto(&w), payload_total);
        assert_eq!(dec_tokio_websockets(&rt, &w), payload_total);
        let mut g = c.benchmark_group(format!("ws_decode/{}", w.name));
        g.throughput(Throughput::Bytes(w.wire.len() as u64));
        g.sample_size(10);
        let mut scratch = Vec::with_capacity(w.wire.len());
        g.bench_function(BenchmarkId::from_parameter("agentwire"), |b| {
            b.iter(|| dec_agentwire(&w))
        });
        g.bench_function(BenchmarkId::from_parameter("agentwire-event"), |b| {
            b.iter(|| dec_agentwire_event(&w))
        });
        g.bench_function(BenchmarkId::from_parameter("agentwire-borrowed"), |b| {
            b.iter(|| dec_agentwire_borrowed(&w))
        });
        g.bench_function(BenchmarkId::from_parameter("agentwire-frame"), |b| {
            b.iter(|| dec_agentwire_frame(&w))
        });
        g.bench_function(BenchmarkId::from_parameter("floor"), |b| {
            b.iter(|| dec_floor(&w))
        });
        g.bench_function(BenchmarkId::from_parameter("tungstenite"), |b| {
            b.iter(|| dec_tungstenite(&w))
        });
        g.bench_function(BenchmarkId::from_parameter("fastwebsockets"), |b| {
            b.iter(|| dec_fastwebsockets(&rt, &w))
        });
        g.bench_function(BenchmarkId::from_parameter("soketto"), |b| {
            b.iter(|| dec_soketto(&w))
        });
        g.bench_function(BenchmarkId::from_parameter("tokio-websockets"), |b| {
            b.iter(|| dec_tokio_websockets(&rt, &w))
        });
        g.bench_function(BenchmarkId::from_parameter("memcpy"), |b| {
            b.iter(|| memcpy(&w, &mut scratch))
        });
        g.finish();

        let payload = Bytes::from(w.payload.clone());
        let mut out = Vec::with_capacity(w.wire.len() + 64);
        let mut bout = BytesMut::with_capacity(w.wire.len() + 64);
        // encoders agree on the wire length (and with the workload when keys are equal)
        assert_eq!(enc_agentwire_frame(&w, &mut out), w.wire.len());
        assert_eq!(out, w.wire);
        for d in [Drain::Into(1), Drain::Into(64), Drain::Transmit] {
            assert_eq!(enc_agentwire(&w, &payload, &mut bout, d), w.wire.len());
        }
        assert_eq!(enc_tungstenite(&w, &payload, &mut out), w.wire.len());
        assert_eq!(enc_soketto(&w, &mut out), w.wire.len());
        assert_eq!(out, w.wire);
        assert_eq!(
            enc_tokio_websockets(&rt, &w, &payload, &mut out),
            w.wire.len()
        );
        let mut g = c.benchmark_group(format!("ws_encode/{}", w.name));
        g.throughput(Throughput::Bytes(w.wire.len() as u64));
        g.sample_size(10);
        g.bench_function(BenchmarkId::from_parameter("agentwire"), |b| {
            b.iter(|| enc_agentwire(&w, &payload, &mut bout, Drain::Into(1)))
        });
        g.bench_function(BenchmarkId::from_parameter("agentwire-batch64"), |b| {
            b.iter(|| enc_agentwire(&w, &payload, &mut bout, Drain::Into(64)))
        });
        g.bench_function(BenchmarkId::from_parameter("agentwire-transmit"), |b| {
            b.iter(|| enc_agentwire(&w, &payload, &mut bout, Drain::Transmit))
        });
        g.bench_function(BenchmarkId::from_parameter("agentwire-frame"), |b| {
            b.iter(|| enc_agentwire_frame(&w, &mut out))
        });
        g.bench_function(BenchmarkId::from_parameter("tungstenite"), |b| {
            b.iter(|| enc_tungstenite(&w, &payload, &mut out))
        });
        g.bench_function(BenchmarkId::from_parameter("fastwebsockets"), |b| {
            b.iter(|| enc_fastwebsockets(&rt, &w, &mut out))
        });
        g.bench_function(BenchmarkId::from_parameter("soketto"), |b| {
            b.iter(|| enc_soketto(&w, &mut out))
        });
        g.bench_function(BenchmarkId::from_parameter("tokio-websockets"), |b| {
            b.iter(|| enc_tokio_websockets(&rt, &w, &payload, &mut out))
        });
        g.bench_function(BenchmarkId::from_parameter("memcpy"), |b| {
            b.iter(|| memcpy(&w, &mut scratch))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

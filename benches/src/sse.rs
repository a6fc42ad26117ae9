//! SSE workloads and the machine's floor for them.

use crate::Rng;
use bytes::Bytes;
use futures::StreamExt;
use std::convert::Infallible;
use std::hint::black_box;

/// One event to encode, and what a decoder must produce for it.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `event:` value.
    pub event: Option<String>,
    /// `id:` value.
    pub id: Option<String>,
    /// The data (lines joined with LF).
    pub data: String,
    /// A comment line written before the event.
    pub comment: Option<String>,
}

/// A workload: the events, their wire form, and the wire cut into chunks as reads would.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Short name used in bench ids.
    pub name: &'static str,
    /// The events.
    pub specs: Vec<Spec>,
    /// The encoded stream.
    pub wire: Bytes,
    /// `wire` cut into reads.
    pub chunks: Vec<Bytes>,
    /// Sum of the data lengths (what every decoder must count).
    pub data_bytes: usize,
}

/// Writes `specs` with LF line ends (the reference wire form).
pub fn reference_encode(specs: &[Spec]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in specs {
        if let Some(c) = &s.comment {
            out.extend_from_slice(format!(": {c}\n").as_bytes());
        }
        if let Some(e) = &s.event {
            out.extend_from_slice(format!("event: {e}\n").as_bytes());
        }
        if let Some(i) = &s.id {
            out.extend_from_slice(format!("id: {i}\n").as_bytes());
        }
        for line in s.data.split('\n') {
            out.extend_from_slice(format!("data: {line}\n").as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// How the wire is cut into reads.
#[derive(Debug, Clone, Copy)]
pub enum Chunking {
    /// Reads of a fixed size.
    Fixed(usize),
    /// Reads of a random size in `1..=max` (fixed seed).
    Random(usize),
}

fn build(name: &'static str, specs: Vec<Spec>, chunking: Chunking) -> Workload {
    let wire = Bytes::from(reference_encode(&specs));
    let mut chunks = Vec::new();
    let mut rng = Rng::new(0x5EED);
    let mut pos = 0;
    while pos < wire.len() {
        let n = match chunking {
            Chunking::Fixed(n) => n,
            Chunking::Random(max) => rng.range(1, max),
        };
        let end = (pos + n).min(wire.len());
        chunks.push(wire.slice(pos..end));
        pos = end;
    }
    let data_bytes = specs.iter().map(|s| s.data.len()).sum();
    Workload {
        name,
        specs,
        wire,
        chunks,
        data_bytes,
    }
}

/// 100,000 `data: {"token":"hello"}` events (an LLM token stream).
pub fn tokens(chunking: Chunking) -> Workload {
    let specs = (0..100_000)
        .map(|_| Spec {
            event: None,
            id: None,
            data: r#"{"token":"hello"}"#.to_owned(),
            comment: None,
        })
        .collect();
    build("tokens100k", specs, chunking)
}

/// 64 events of 64 KiB data in 80-character lines.
pub fn big(chunking: Chunking) -> Workload {
    let mut rng = Rng::new(64);
    let specs = (0..64)
        .map(|_| {
            let mut data = String::with_capacity(65536);
            while data.len() + 81 <= 65536 {
                if !data.is_empty() {
                    data.push('\n');
                }
                for _ in 0..80 {
                    data.push((b' ' + (rng.next_u64() % 94) as u8 + 1) as char);
                }
            }
            Spec {
                event: None,
                id: None,
                data,
                comment: None,
            }
        })
        .collect();
    build("64k_lines80", specs, chunking)
}

/// 50,000 events: `event:` on every 2nd, `id:` on every 3rd, a comment before every 4th,
/// 1–3 data lines, some non-ASCII text.
pub fn mixed(chunking: Chunking) -> Workload {
    let mut rng = Rng::new(50);
    let words = [
        "alpha",
        "beta",
        "gamma",
        "délta",
        "ε-psilon",
        "zeta",
        "数据",
        "🙂 ok",
    ];
    let specs = (0..50_000)
        .map(|i| {
            let lines = rng.range(1, 3);
            let data = (0..lines)
                .map(|_| {
                    (0..rng.range(2, 20))
                        .map(|_| words[rng.range(0, words.len() - 1)])
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n");
            Spec {
                event: (i % 2 == 0).then(|| "update".to_owned()),
                id: (i % 3 == 0).then(|| i.to_string()),
                data,
                comment: (i % 4 == 0).then(|| "keep-alive".to_owned()),
            }
        })
        .collect();
    build("mixed50k", specs, chunking)
}

/// The machine's floor for decoding: a `memchr` walk over every line plus one UTF-8
/// validation per read, counting events and data bytes without building anything
/// (LF line ends only, no field storage). Returns `(events, data bytes)`.
#[derive(Debug, Default)]
pub struct Floor {
    carry: Vec<u8>,
    data_len: usize,
    has_data: bool,
    /// Events seen.
    pub events: usize,
    /// Data bytes seen.
    pub data_bytes: usize,
}

impl Floor {
    fn line(&mut self, line: &[u8]) {
        if line.is_empty() {
            if self.has_data {
                self.events += 1;
                self.data_bytes += self.data_len - 1;
            }
            self.data_len = 0;
            self.has_data = false;
        } else if line[0] != b':' && line.starts_with(b"data") {
            let v = &line[4..];
            let v = v.strip_prefix(b":").unwrap_or(v);
            let v = v.strip_prefix(b" ").unwrap_or(v);
            self.data_len += v.len() + 1;
            self.has_data = true;
        }
    }

    /// Feeds one read.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        if !self.carry.is_empty() {
            let Some(i) = memchr::memchr(b'\n', rest) else {
                self.carry.extend_from_slice(rest);
                return;
            };
            self.carry.extend_from_slice(&rest[..i]);
            let carry = std::mem::take(&mut self.carry);
            assert!(simdutf8::basic::from_utf8(&carry).is_ok());
            self.line(&carry);
            self.carry = carry;
            self.carry.clear();
            rest = &rest[i + 1..];
        }
        let complete = memchr::memrchr(b'\n', rest).map_or(0, |i| i + 1);
        assert!(simdutf8::basic::from_utf8(&rest[..complete]).is_ok());
        let mut pos = 0;
        while let Some(i) = memchr::memchr(b'\n', &rest[pos..complete]) {
            self.line(&rest[pos..pos + i]);
            pos += i + 1;
        }
        self.carry.extend_from_slice(&rest[complete..]);
    }
}

/// The machine's floor for encoding: the bytes copied into place with the data split on LF.
pub fn floor_encode(specs: &[Spec], out: &mut Vec<u8>) {
    for s in specs {
        if let Some(c) = &s.comment {
            out.extend_from_slice(b": ");
            out.extend_from_slice(c.as_bytes());
            out.push(b'\n');
        }
        if let Some(e) = &s.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(e.as_bytes());
            out.push(b'\n');
        }
        if let Some(i) = &s.id {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(i.as_bytes());
            out.push(b'\n');
        }
        let d = s.data.as_bytes();
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &d[start..]) {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&d[start..start + i]);
            out.push(b'\n');
            start += i + 1;
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&d[start..]);
        out.extend_from_slice(b"\n\n");
    }
}

// ===== decode arms shared by the `sse` bench and `sse_count` =====

/// Events and data bytes an arm delivered.
pub type Counts = (usize, usize);

/// The main owned API: `handle_input(Bytes)` + `poll_events`, one batch per read whose
/// events share one reference to it.
pub fn ours_batch(chunks: &[Bytes]) -> Counts {
    let mut d = agentwire_sse::Decoder::new();
    let (mut n, mut bytes) = (0, 0);
    for c in chunks {
        d.handle_input(c.clone());
        while let Some(batch) = d.poll_events() {
            for e in &batch.expect("within limits") {
                n += 1;
                bytes += black_box(e.data).len();
            }
        }
    }
    (n, bytes)
}

/// The floor: [`Floor`] over the same reads.
pub fn floor(chunks: &[Bytes]) -> Counts {
    let mut f = Floor::default();
    for c in chunks {
        f.feed(c);
    }
    (f.events, f.data_bytes)
}

/// The reads as a `Stream` of `Bytes`, for the stream-based peers.
pub fn byte_stream(
    chunks: &[Bytes],
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + '_ {
    futures::stream::iter(chunks.iter().cloned().map(Ok))
}

/// sse-stream's `SseByteStream` over the reads.
pub fn sse_stream(chunks: &[Bytes]) -> Counts {
    let mut s = sse_stream::SseByteStream::new(byte_stream(chunks));
    let (mut n, mut bytes) = (0, 0);
    futures::executor::block_on(async {
        while let Some(ev) = s.next().await {
            if let Some(d) = ev.expect("event").data {
                n += 1;
                bytes += d.len();
            }
        }
    });
    (n, bytes)
}

#![allow(missing_docs)] // criterion_group! generates undocumented items
//! SSE decode and encode: agentwire-sse against the peers and the machine's floor, as arms of
//! the same criterion run. Every arm must produce each event's data in its own type; counts
//! and data bytes are checked against the workload before timing.

use agentwire_benches::sse::{
    self, byte_stream, floor, ours_batch, sse_stream, Chunking, Counts, Spec, Workload,
};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;
use std::convert::Infallible;
use std::hint::black_box;

/// One owned `Event` per call: `handle_input(Bytes)` + `poll_event`.
fn ours_event(chunks: &[Bytes]) -> Counts {
    let mut d = agentwire_sse::Decoder::new();
    let (mut n, mut bytes) = (0, 0);
    for c in chunks {
        d.handle_input(c.clone());
        while let Some(e) = d.poll_event() {
            n += 1;
            bytes += black_box(e.expect("within limits").data).len();
        }
    }
    (n, bytes)
}

fn ours_feed_copy(chunks: &[Bytes]) -> Counts {
    let mut d = agentwire_sse::Decoder::new();
    let (mut n, mut bytes) = (0, 0);
    for c in chunks {
        d.handle_input_slice(c);
        while let Some(batch) = d.poll_events() {
            for e in &batch.expect("within limits") {
                n += 1;
                bytes += black_box(e.data).len();
            }
        }
    }
    (n, bytes)
}

fn ours_borrowed(chunks: &[Bytes]) -> Counts {
    let mut d = agentwire_sse::Decoder::new();
    let (mut n, mut bytes) = (0, 0);
    for c in chunks {
        d.handle_input(c.clone());
        while let Some(e) = d.poll_event_ref() {
            n += 1;
            bytes += black_box(e.expect("within limits").data).len();
        }
    }
    (n, bytes)
}

fn sseer(chunks: &[Bytes]) -> Counts {
    let mut s = sseer::EventStream::new(byte_stream(chunks));
    let (mut n, mut bytes) = (0, 0);
    futures::executor::block_on(async {
        while let Some(ev) = s.next().await {
            n += 1;
            bytes += black_box(ev.expect("event").data).len();
        }
    });
    (n, bytes)
}

fn eventsource_stream(chunks: &[Bytes]) -> Counts {
    use eventsource_stream::Eventsource;
    let mut s = byte_stream(chunks).eventsource();
    let (mut n, mut bytes) = (0, 0);
    futures::executor::block_on(async {
        while let Some(ev) = s.next().await {
            n += 1;
            bytes += ev.expect("event").data.len();
        }
    });
    (n, bytes)
}

type DecodeArm = (&'static str, fn(&[Bytes]) -> Counts);

const DECODE_ARMS: &[DecodeArm] = &[
    ("floor", floor),
    ("agentwire", ours_batch),
    ("agentwire-event", ours_event),
    ("agentwire-ref", ours_borrowed),
    ("agentwire-copy", ours_feed_copy),
    ("sse-stream", sse_stream),
    ("sseer", sseer),
    ("eventsource-stream", eventsource_stream),
];

fn decode(c: &mut Criterion) {
    let workloads: Vec<(String, Workload)> = vec![
        (
            "a_tokens100k".into(),
            sse::tokens(Chunking::Fixed(16 * 1024)),
        ),
        ("b_64k_lines80".into(), sse::big(Chunking::Fixed(16 * 1024))),
        (
            "c_tokens100k_rand1-4096".into(),
            sse::tokens(Chunking::Random(4096)),
        ),
        (
            "c_64k_lines80_rand1-4096".into(),
            sse::big(Chunking::Random(4096)),
        ),
        ("d_mixed50k".into(), sse::mixed(Chunking::Fixed(16 * 1024))),
    ];
    for (name, w) in &workloads {
        let mut g = c.benchmark_group(format!("sse_decode/{name}"));
        g.throughput(Throughput::Bytes(w.wire.len() as u64));
        for (arm, f) in DECODE_ARMS {
            assert_eq!(
                f(&w.chunks),
                (w.specs.len(), w.data_bytes),
                "{arm} on {name}"
            );
            g.bench_function(BenchmarkId::from_parameter(arm), |b| {
                b.iter(|| black_box(f(black_box(&w.chunks))))
            });
        }
        g.finish();
    }
}

fn ours_encode(specs: &[Spec], out: &mut BytesMut) {
    use agentwire_sse::{encode_comment, EventId, EventName, OutEvent};
    for s in specs {
        if let Some(c) = &s.comment {
            encode_comment(c, out);
        }
        let name = s
            .event
            .as_ref()
            .map(|e| EventName::new(e.clone()).expect("valid"));
        let id =
            s.id.as_ref()
                .map(|i| EventId::new(i.clone()).expect("valid"));
        let mut ev = OutEvent::new(&s.data);
        if let Some(n) = &name {
            ev = ev.event(n);
        }
        if let Some(i) = &id {
            ev = ev.id(i);
        }
        ev.encode(out);
    }
}

fn sse_stream_encode(specs: &[Spec], out: &mut BytesMut) {
    for s in specs {
        if let Some(c) = &s.comment {
            // No comment API: written by hand, as for the floor.
            out.extend_from_slice(b": ");
            out.extend_from_slice(c.as_bytes());
            out.extend_from_slice(b"\n");
        }
        let mut e = sse_stream::Sse::default().data(s.data.clone());
        if let Some(ev) = &s.event {
            e = e.event(ev.clone());
        }
        if let Some(id) = &s.id {
            e = e.id(id.clone());
        }
        out.extend_from_slice(&e.encode().expect("encode"));
    }
}

fn axum_encode(specs: &[Spec], out: &mut BytesMut) {
    use axum::response::sse::{Event, Sse};
    use axum::response::IntoResponse;
    let events = specs.iter().flat_map(|s| {
        let comment = s.comment.as_ref().map(|c| Event::default().comment(c));
        let mut e = Event::default().data(&s.data);
        if let Some(ev) = &s.event {
            e = e.event(ev);
        }
        if let Some(id) = &s.id {
            e = e.id(id);
        }
        comment
            .into_iter()
            .chain(std::iter::once(e))
            .map(Ok::<_, Infallible>)
    });
    let events: Vec<_> = events.collect();
    let body = Sse::new(futures::stream::iter(events))
        .into_response()
        .into_body();
    let mut body = body.into_data_stream();
    futures::executor::block_on(async {
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.expect("frame"));
        }
    });
}

fn floor_encode(specs: &[Spec], out: &mut BytesMut) {
    let mut v = std::mem::take(out).into();
    sse::floor_encode(specs, &mut v);
    *out = BytesMut::from(&v[..]);
}

type EncodeArm = (&'static str, fn(&[Spec], &mut BytesMut));

const ENCODE_ARMS: &[EncodeArm] = &[
    ("floor", floor_encode),
    ("agentwire", ours_encode),
    ("sse-stream", sse_stream_encode),
    ("axum", axum_encode),
];

fn encode(c: &mut Criterion) {
    let workloads = [
        ("a_tokens100k", sse::tokens(Chunking::Fixed(16 * 1024))),
        ("b_64k_lines80", sse::big(Chunking::Fixed(16 * 1024))),
        ("d_mixed50k", sse::mixed(Chunking::Fixed(16 * 1024))),
    ];
    for (name, w) in &workloads {
        let mut g = c.benchmark_group(format!("sse_encode/{name}"));
        g.throughput(Throughput::Bytes(w.wire.len() as u64));
        for (arm, f) in ENCODE_ARMS {
            let mut out = BytesMut::new();
            f(&w.specs, &mut out);
            // Every arm's output must decode to the workload's events.
            let mut d = agentwire_sse::Decoder::new();
            d.handle_input_slice(&out);
            let mut n = 0;
            while let Some(e) = d.poll_event() {
                let e = e.expect("within limits");
                assert_eq!(e.data(), w.specs[n].data, "{arm} on {name}");
                n += 1;
            }
            assert_eq!(n, w.specs.len(), "{arm} on {name}");
            g.bench_function(BenchmarkId::from_parameter(arm), |b| {
                b.iter(|| {
                    let mut out = BytesMut::with_capacity(w.wire.len() + 64);
                    f(black_box(&w.specs), &mut out);
                    black_box(out.len())
                })
            });
        }
        g.finish();
    }
}

/// Why `Utf8Bytes::as_str` skips re-validation (the workspace's one `unsafe` block): the cost
/// of a checked view on every access, for payload sizes seen in agent traffic.
fn utf8_view(c: &mut Criterion) {
    for size in [32usize, 1024, 64 * 1024] {
        // "token é " is 9 bytes; the payload is the whole repetitions closest to `size`.
        let text: String = "token é ".repeat(size / 9 + 1);
        let text = agentwire_sse::Utf8Bytes::from(text);
        let mut g = c.benchmark_group(format!("utf8_view/{size}B"));
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function("as_str (unchecked)", |b| {
            b.iter(|| black_box(black_box(&text).as_str().len()))
        });
        g.bench_function("std::str::from_utf8", |b| {
            b.iter(|| black_box(std::str::from_utf8(black_box(&text).as_bytes()).map(str::len)))
        });
        g.bench_function("simdutf8", |b| {
            b.iter(|| {
                black_box(simdutf8::basic::from_utf8(black_box(&text).as_bytes()).map(str::len))
            })
        });
        g.finish();
    }
}

criterion_group!(benches, decode, encode, utf8_view);
criterion_main!(benches);

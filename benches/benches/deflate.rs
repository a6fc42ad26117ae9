#![allow(missing_docs)] // criterion_group! generates undocumented items
//! permessage-deflate: a client/server echo of typical agent JSON (1 KiB and 64 KiB state
//! frames, each a small change of the one before, as `cf_agent_state` broadcasts are) through
//! two `agentwire-ws` machines, with context takeover, without it, and uncompressed; the floor
//! arm is the bare zlib work the echo cannot avoid (compress + inflate in both directions with
//! the same backend and level). Before timing it prints the compression ratios and the memory
//! a compressed connection holds (RSS growth over 500 connection pairs, each having echoed one
//! compressed message).

use agentwire_benches::Rng;
use agentwire_ws::deflate::{DeflateConfig, Negotiated};
use agentwire_ws::{Config, Connection, Event, Role};
use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::time::Instant;

/// `n` JSON state frames of about `size` bytes: a chat transcript that grows by a message or
/// has a counter changed between frames.
fn frames(size: usize, n: usize) -> Vec<Bytes> {
    let mut rng = Rng::new(7);
    let words = [
        "agent",
        "tool",
        "weather",
        "Lisbon",
        "result",
        "stream",
        "token",
        "the",
        "of",
        "and",
        "sunny",
        "call",
        "state",
        "user",
        "assistant",
        "degrees",
        "forecast",
        "tomorrow",
    ];
    let mut msgs: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut count = 0u64;
    while out.len() < n {
        count += 1;
        let text: Vec<&str> = (0..rng.range(5, 20))
            .map(|_| words[rng.range(0, words.len() - 1)])
            .collect();
        msgs.push(format!(
            r#"{{"id":"{:016x}","role":"{}","text":"{}"}}"#,
            rng.next_u64(),
            if count % 2 == 0 { "assistant" } else { "user" },
            text.join(" ")
        ));
        let mut body = String::new();
        for m in msgs.iter().rev() {
            if body.len() + m.len() + 64 > size {
                break;
            }
            if !body.is_empty() {
                body.push(',');
            }
            body.push_str(m);
        }
        if body.len() + 200 < size && msgs.len() < 10_000 {
            continue; // keep growing the transcript until a frame is full
        }
        out.push(Bytes::from(format!(
            r#"{{"type":"cf_agent_state","state":{{"count":{count},"messages":[{body}]}}}}"#
        )));
    }
    out
}

fn negotiated(nct: bool) -> Negotiated {
    DeflateConfig::default()
        .with_threshold(0)
        .with_server_no_context_takeover(nct)
        .with_client_no_context_takeover(nct)
        .negotiate(["permessage-deflate"])
        .expect("offer accepted")
}

struct Pair {
    client: Connection,
    server: Connection,
    wire: BytesMut,
    now: Instant,
}

impl Pair {
    fn new(deflate: Option<Negotiated>) -> Pair {
        let now = Instant::now();
        let cfg = Config::default().with_deflate(deflate);
        Pair {
            client: Connection::new(Role::Client, cfg.clone(), now),
            server: Connection::new(Role::Server, cfg, now),
            wire: BytesMut::with_capacity(1 << 20),
            now,
        }
    }

    /// Client sends `msg`, the server echoes it, the client receives it; returns the wire
    /// bytes of both directions.
    fn echo(&mut self, msg: &Bytes) -> usize {
        self.client.send_binary(msg.clone()).unwrap();
        let up = self.client.poll_transmit_into(&mut self.wire);
        self.server.handle_input(self.now, &mut self.wire);
        while let Some(ev) = self.server.poll_event() {
            if let Event::Binary(b) = ev {
                self.server.send_binary(b).unwrap();
            }
        }
        let down = self.server.poll_transmit_into(&mut self.wire);
        self.client.handle_input(self.now, &mut self.wire);
        match self.client.poll_event() {
            Some(Event::Binary(b)) => assert_eq!(b.len(), msg.len()),
            other => panic!("no echo: {other:?}"),
        }
        up + down
    }
}

/// The bare zlib work of one echo: compress and inflate, both directions.
struct Floor {
    c: [Compress; 2],
    d: [Decompress; 2],
    z: Vec<u8>,
    out: Vec<u8>,
}

impl Floor {
    fn new() -> Floor {
        let c = || Compress::new_with_window_bits(Compression::new(6), false, 15);
        Floor {
            c: [c(), c()],
            d: [Decompress::new(false), Decompress::new(false)],
            z: Vec::with_capacity(1 << 20),
            out: Vec::with_capacity(1 << 20),
        }
    }

    fn echo(&mut self, msg: &[u8]) -> usize {
        let mut total = 0;
        for i in 0..2 {
            self.z.clear();
            self.z.reserve(msg.len() + 64);
            let c = &mut self.c[i];
            let before = c.total_in();
            while ((c.total_in() - before) as usize) < msg.len()
                || self.z.len() == self.z.capacity()
            {
                let done = (c.total_in() - before) as usize;
                if self.z.len() == self.z.capacity() {
                    self.z.reserve(4096);
                }
                c.compress_vec(&msg[done..], &mut self.z, FlushCompress::Sync)
                    .unwrap();
            }
            self.out.clear();
            self.out.reserve(msg.len() + 64);
            self.d[i]
                .decompress_vec(&self.z, &mut self.out, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(self.out.len(), msg.len());
            total += self.z.len();
        }
        total
    }
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// RSS growth per connection pair after each echoed one compressed 1 KiB message.
fn memory_per_pair(deflate: Option<Negotiated>, msg: &Bytes) -> usize {
    const N: usize = 500;
    let before = rss_bytes();
    let mut pairs: Vec<Pair> = (0..N).map(|_| Pair::new(deflate)).collect();
    for p in &mut pairs {
        p.echo(msg);
        p.wire = BytesMut::new();
    }
    let after = rss_bytes();
    black_box(&pairs);
    after.saturating_sub(before) / N
}

fn bench(c: &mut Criterion) {
    let one_k = frames(1024, 200);
    let mem_plain = memory_per_pair(None, &one_k[0]);
    let mem_takeover = memory_per_pair(Some(negotiated(false)), &one_k[0]);
    let mem_nct = memory_per_pair(Some(negotiated(true)), &one_k[0]);
    println!(
        "memory per connection pair after one echo (RSS / 500): uncompressed {} KiB, \
         deflate with takeover {} KiB, without takeover {} KiB",
        mem_plain / 1024,
        mem_takeover / 1024,
        mem_nct / 1024
    );
    for (name, size, n) in [("state-1k", 1024, 200), ("state-64k", 64 * 1024, 20)] {
        let msgs = frames(size, n);
        let raw: usize = msgs.iter().map(|m| m.len()).sum::<usize>() * 2;
        let mut g = c.benchmark_group(format!("ws_deflate_echo/{name}"));
        g.throughput(Throughput::Bytes(raw as u64));
        g.sample_size(10);
        for (arm, deflate) in [
            ("uncompressed", None),
            ("deflate-takeover", Some(negotiated(false))),
            ("deflate-no-takeover", Some(negotiated(true))),
        ] {
            let wire: usize = {
                let mut p = Pair::new(deflate);
                msgs.iter().map(|m| p.echo(m)).sum()
            };
            println!(
                "{name} {arm}: {} messages of {} B on average, wire/raw = {:.3}",
                msgs.len(),
                raw / 2 / msgs.len(),
                wire as f64 / raw as f64
            );
            g.bench_function(BenchmarkId::from_parameter(arm), |b| {
                b.iter_batched_ref(
                    || Pair::new(deflate),
                    |p| msgs.iter().map(|m| p.echo(m)).sum::<usize>(),
                    criterion::BatchSize::LargeInput,
                )
            });
        }
        g.bench_function(BenchmarkId::from_parameter("zlib-floor"), |b| {
            b.iter_batched_ref(
                Floor::new,
                |f| msgs.iter().map(|m| f.echo(m)).sum::<usize>(),
                criterion::BatchSize::LargeInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Agents protocol: parse + classify + re-encode of the typical frames, with a
//! `serde_json::Value` round trip as the baseline arm.
//!
//! * `rpc_request`: a call as the reference client sends it → classify → reply encoded.
//! * `state_1k` / `state_64k`: a client `setState` → classify → broadcast frame built once.
//! * `relay_64k_x100`: one 64 KiB state update relayed to 100 connections.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use agentwire_protocol::{classify, ClientMessage, Inbound, RpcResponse, StateFrame};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;

const RPC: &str =
    r#"{"args":[2,3],"id":"3f6c0e2a-5b7d-4c1e-9f3a-2d8b6e4c1a90","method":"add","type":"rpc"}"#;

/// A `{"state":S,"type":"cf_agent_state"}` frame of about `size` bytes with a realistic state
/// (an object holding an array of small records).
fn state_frame(size: usize) -> String {
    let mut items = Vec::new();
    let mut len = 0;
    let mut i = 0u64;
    while len < size {
        let item = serde_json::json!({
            "id": i,
            "title": format!("item number {i}"),
            "done": i % 3 == 0,
            "tags": ["a", "b"],
            "score": (i as f64) * 1.25,
        });
        len += serde_json::to_string(&item).unwrap().len() + 1;
        items.push(item);
        i += 1;
    }
    let state = serde_json::json!({ "count": i, "items": items, "owner": "golden" });
    format!(
        r#"{{"state":{},"type":"cf_agent_state"}}"#,
        serde_json::to_string(&state).unwrap()
    )
}

fn ours(frame: &str) -> usize {
    match classify(frame) {
        Inbound::Protocol(ClientMessage::State { state }) => {
            StateFrame::from_raw_json(&state).as_str().len()
        }
        Inbound::Protocol(ClientMessage::Rpc(req)) => {
            let (a, b): (i64, i64) = req.args_as().unwrap();
            RpcResponse::done(req.id().clone(), &(a + b))
                .unwrap()
                .encode()
                .len()
        }
        _ => 0,
    }
}

/// Baseline: what a straightforward implementation does (parse to a tree, check, rebuild).
fn baseline(frame: &str) -> usize {
    let Ok(v) = serde_json::from_str::<Value>(frame) else {
        return 0;
    };
    let Some(obj) = v.as_object() else { return 0 };
    match obj.get("type").and_then(Value::as_str) {
        Some("cf_agent_state") if obj.contains_key("state") => {
            let state = serde_json::to_string(&obj["state"]).unwrap();
            format!(r#"{{"state":{state},"type":"cf_agent_state"}}"#).len()
        }
        Some("rpc") => {
            let args = obj["args"].as_array().unwrap();
            let sum = args[0].as_i64().unwrap() + args[1].as_i64().unwrap();
            let id = serde_json::to_string(&obj["id"]).unwrap();
            format!(r#"{{"done":true,"id":{id},"result":{sum},"success":true,"type":"rpc"}}"#).len()
        }
        _ => 0,
    }
}

fn frames(c: &mut Criterion) {
    let cases = [
        ("rpc_request", RPC.to_owned()),
        ("state_1k", state_frame(1024)),
        ("state_64k", state_frame(64 * 1024)),
    ];
    for (name, frame) in &cases {
        let mut g = c.benchmark_group(format!("protocol/{name}"));
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_with_input(BenchmarkId::new("agentwire", frame.len()), frame, |b, f| {
            b.iter(|| ours(black_box(f)))
        });
        g.bench_with_input(
            BenchmarkId::new("serde_json_value", frame.len()),
            frame,
            |b, f| b.iter(|| baseline(black_box(f))),
        );
        g.finish();
    }
}

fn relay(c: &mut Criterion) {
    let frame = state_frame(64 * 1024);
    let mut g = c.benchmark_group("protocol/relay_64k_x100");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("agentwire_state_frame", |b| {
        b.iter(|| {
            let Inbound::Protocol(ClientMessage::State { state }) = classify(black_box(&frame))
            else {
                unreachable!()
            };
            let once = StateFrame::from_raw_json(&state);
            let sends: Vec<_> = (0..100).map(|_| once.to_utf8_bytes()).collect();
            sends.len()
        })
    });
    g.bench_function("serde_json_value_per_connection", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_str(black_box(&frame)).unwrap();
            let sends: Vec<String> = (0..100)
                .map(|_| {
                    format!(
                        r#"{{"state":{},"type":"cf_agent_state"}}"#,
                        serde_json::to_string(&v["state"]).unwrap()
                    )
                })
                .collect();
            sends.len()
        })
    });
    g.finish();
}

criterion_group!(benches, frames, relay);
criterion_main!(benches);

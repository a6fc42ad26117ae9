//! Loading and checking the SSE vectors.
#![allow(dead_code)]

use agentwire_sse::Decoder;
use serde_json::Value;
use std::sync::OnceLock;

/// One vector.
pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) chunks: Vec<Vec<u8>>,
    pub(crate) events: Vec<(String, String, String)>,
    /// `Some(None)`: the vector expects no valid retry; `None`: not checked.
    pub(crate) retry: Option<Option<u64>>,
    pub(crate) last_event_id_header: Option<String>,
}

fn base64(s: &str) -> Vec<u8> {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = table.iter().position(|&t| t == c).expect("base64 digit") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn bytes_of(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Object(o) if o.contains_key("base64") => base64(o["base64"].as_str().unwrap()),
        Value::Object(o) if o.contains_key("repeat") => o["repeat"]
            .as_str()
            .unwrap()
            .repeat(o["count"].as_u64().unwrap() as usize)
            .into_bytes(),
        other => panic!("unknown chunk {other}"),
    }
}

fn string_of(v: &Value) -> String {
    String::from_utf8(bytes_of(v)).unwrap()
}

pub(crate) fn vectors() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sse-vectors.json"
        );
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        doc["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let exp = &c["expected"];
                Case {
                    name: c["name"].as_str().unwrap().to_owned(),
                    chunks: c["chunks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(bytes_of)
                        .collect(),
                    events: exp["events"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| {
                            (
                                string_of(&e["type"]),
                                string_of(&e["data"]),
                                string_of(&e["lastEventId"]),
                            )
                        })
                        .collect(),
                    retry: exp.get("retry").map(|r| r.as_u64()),
                    last_event_id_header: exp
                        .get("lastEventIdHeader")
                        .filter(|v| !v.is_null())
                        .map(string_of),
                }
            })
            .collect()
    })
}

/// Decodes `chunks` in order with `poll_event`; returns the events, the final Last-Event-ID
/// and retry.
pub(crate) fn decode_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<(String, String, String)>, String, Option<u64>) {
    decode_chunks_with(chunks, false)
}

/// Like [`decode_chunks`], with the batch API (`poll_events`) when `batch` is set.
pub(crate) fn decode_chunks_with<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    batch: bool,
) -> (Vec<(String, String, String)>, String, Option<u64>) {
    let mut d = Decoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        d.handle_input(bytes::Bytes::copy_from_slice(chunk));
        if batch {
            while let Some(b) = d.poll_events() {
                let b = b.expect("no limit is hit by the vectors");
                assert!(!b.is_empty());
                for e in &b {
                    events.push((
                        e.event_type.to_owned(),
                        e.data.to_owned(),
                        e.last_event_id.to_owned(),
                    ));
                }
            }
            continue;
        }
        while let Some(e) = d.poll_event() {
            let e = e.expect("no limit is hit by the vectors");
            events.push((
                e.event_type().to_owned(),
                e.data().to_owned(),
                e.last_event_id().to_owned(),
            ));
        }
    }
    d.handle_eof();
    let retry = d.retry().map(|r| r.as_millis() as u64);
    (events, d.last_event_id().to_string(), retry)
}

fn check(case: &Case, how: &str, got: (Vec<(String, String, String)>, String, Option<u64>)) {
    let (events, last_id, retry) = got;
    assert!(
        events == case.events,
        "{} ({how}): events differ\n got: {:?}\nwant: {:?}",
        case.name,
        events
            .iter()
            .map(|e| (&e.0, e.1.len(), &e.2))
            .collect::<Vec<_>>(),
        case.events
            .iter()
            .map(|e| (&e.0, e.1.len(), &e.2))
            .collect::<Vec<_>>()
    );
    if let Some(want) = &case.last_event_id_header {
        // HTTP strips spaces and tabs around a header value.
        assert_eq!(
            last_id.trim_matches([' ', '\t']),
            want,
            "{} ({how}): Last-Event-ID",
            case.name
        );
    }
    if let Some(want) = case.retry {
        assert_eq!(retry, want, "{} ({how}): retry", case.name);
    }
}

pub(crate) fn check_vector(name: &str) {
    let case = vectors().iter().find(|c| c.name == name).expect("vector");
    check(
        case,
        "as written",
        decode_chunks(case.chunks.iter().map(Vec::as_slice)),
    );
    let input: Vec<u8> = case.chunks.concat();
    check(case, "one byte at a time", decode_chunks(input.chunks(1)));
    let points: Vec<usize> = if input.len() <= 4096 {
        (0..=input.len()).collect()
    } else {
        // Every point near the start and end, every line boundary ±2, and a stride.
        let mut p: Vec<usize> = (0..64).chain(input.len() - 64..=input.len()).collect();
        for (i, b) in input.iter().enumerate() {
            if *b == b'\n' || *b == b'\r' {
                p.extend(i.saturating_sub(2)..(i + 3).min(input.len() + 1));
            }
        }
        p.extend((0..input.len()).step_by(input.len() / 61 + 1));
        p.sort_unstable();
        p.dedup();
        p.truncate(4096);
        p
    };
    for split in points {
        let (a, b) = input.split_at(split);
        check(case, &format!("split at {split}"), decode_chunks([a, b]));
        check(
            case,
            &format!("batches, split at {split}"),
            decode_chunks_with([a, b], true),
        );
    }
}

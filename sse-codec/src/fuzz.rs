//! Invariant checks shared by the fuzz targets (`fuzz/`) and the corpus replay test.
//! Not part of the public API.

use crate::{Decoder, EventId, EventName, Limits, OutEvent};
use bytes::BytesMut;

/// Everything a decoder produced, for comparing two runs.
type Outcome = (
    Vec<Result<(String, String, String), crate::DecodeError>>,
    String,
    Option<std::time::Duration>,
);

fn run(input: &[u8], limits: Limits, cuts: &[usize]) -> Outcome {
    run_with(input, limits, cuts, Api::Owned)
}

/// Which output API a run drains the decoder with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `poll_event`.
    Owned,
    /// `poll_event_ref`.
    Borrowed,
    /// `poll_events`, each batch both borrowed and owned.
    Batch,
}

/// Decodes `input` fed in pieces ending at `cuts`, with the given output API.
fn run_with(input: &[u8], limits: Limits, cuts: &[usize], api: Api) -> Outcome {
    let mut d = Decoder::with_limits(limits);
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(start, input.len());
        d.handle_input_slice(&input[start..cut]);
        start = cut;
        if api == Api::Batch {
            drain_batches(&mut d, &mut out);
        } else {
            drain_events(&mut d, &mut out, api);
        }
        // Memory stays bounded: at most one incomplete line is held once drained (or the
        // first two bytes of a possible BOM, when the line limit is tinier than that).
        let bound = limits.max_line.max(2);
        assert!(d.buffered() <= bound, "buffered {} > {bound}", d.buffered());
    }
    d.handle_eof();
    (out, d.last_event_id().to_string(), d.retry())
}

type Got = Vec<Result<(String, String, String), crate::DecodeError>>;

/// Drains `poll_events`, checking each batch's borrowed and owned views agree.
fn drain_batches(d: &mut Decoder, out: &mut Got) {
    loop {
        match d.poll_events() {
            Some(Ok(batch)) => {
                assert!(!batch.is_empty());
                let owned: Vec<_> = batch.clone().into_iter().collect();
                assert_eq!(owned.len(), batch.len());
                for (e, o) in batch.iter().zip(&owned) {
                    assert_eq!((e.event_type, e.data), (o.event_type(), o.data()));
                    assert_eq!(e.last_event_id, o.last_event_id());
                    out.push(Ok((
                        e.event_type.to_owned(),
                        e.data.to_owned(),
                        e.last_event_id.to_owned(),
                    )));
                }
            }
            Some(Err(e)) => out.push(Err(e)),
            None => break,
        }
    }
}

/// Drains `poll_event` or `poll_event_ref`.
fn drain_events(d: &mut Decoder, out: &mut Got, api: Api) {
    loop {
        let next = if api == Api::Borrowed {
            d.poll_event_ref().map(|e| {
                e.map(|e| {
                    (
                        e.event_type.to_owned(),
                        e.data.to_owned(),
                        e.last_event_id.to_owned(),
                    )
                })
            })
        } else {
            d.poll_event().map(|e| {
                e.map(|e| {
                    (
                        e.event_type().to_owned(),
                        e.data().to_owned(),
                        e.last_event_id().to_owned(),
                    )
                })
            })
        };
        match next {
            Some(e) => out.push(e),
            None => break,
        }
    }
}

/// Decodes `data` (after a 3-byte header choosing limits and a chunk size) whole and in
/// chunks: no panic, identical results, bounded memory.
pub fn decode(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let limits = Limits::default()
        .max_line(usize::from(data[0]) * 4 + 1)
        .max_event(usize::from(data[1]) * 8 + 1);
    let step = usize::from(data[2]) % 17 + 1;
    let input = &data[3..];
    let whole = run(input, limits, &[]);
    let cuts: Vec<usize> = (step..input.len()).step_by(step).collect();
    assert_eq!(whole, run(input, limits, &cuts), "chunked by {step}");
    assert_eq!(
        whole,
        run_with(input, limits, &cuts, Api::Borrowed),
        "borrowed, chunked by {step}"
    );
    assert_eq!(
        whole,
        run_with(input, limits, &cuts, Api::Batch),
        "batches, chunked by {step}"
    );
    assert_eq!(
        whole,
        run_with(input, limits, &[], Api::Batch),
        "batches, whole"
    );
    let bytewise: Vec<usize> = (1..input.len()).collect();
    assert_eq!(whole, run(input, limits, &bytewise), "one byte at a time");
    // Default limits must agree with the slicing-free path too.
    let _ = run(input, Limits::default(), &cuts);
}

/// Builds events from `data`, encodes them, decodes the bytes in chunks and checks that the
/// same events come back.
pub fn roundtrip(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut wire = BytesMut::new();
    let mut expected = Vec::new();
    let mut last_id = String::new();
    // Events are separated by U+001E; inside one, U+001F separates data, type and id.
    for spec in text.split('\u{1e}') {
        let mut parts = spec.split('\u{1f}');
        let body = parts.next().unwrap_or("");
        let name = parts.next().map(|n| EventName::new(n.to_owned()));
        let id = parts.next().map(|i| EventId::new(i.to_owned()));
        let mut ev = OutEvent::new(body);
        let mut ty = "message".to_owned();
        match &name {
            Some(Ok(n)) => {
                ev = ev.event(n);
                if !n.as_str().is_empty() {
                    ty = n.as_str().to_owned();
                }
            }
            Some(Err(_)) => {
                let n = spec.split('\u{1f}').nth(1).unwrap_or("");
                assert!(
                    n.contains(['\r', '\n', '\0']),
                    "rejected a valid name {n:?}"
                );
            }
            None => {}
        }
        match &id {
            Some(Ok(i)) => {
                ev = ev.id(i);
                last_id = i.as_str().to_owned();
            }
            Some(Err(_)) => {
                let i = spec.split('\u{1f}').nth(2).unwrap_or("");
                assert!(i.contains(['\r', '\n', '\0']), "rejected a valid id {i:?}");
            }
            None => {}
        }
        ev.encode(&mut wire);
        let data = body.replace("\r\n", "\n").replace('\r', "\n");
        expected.push(Ok((ty, data, last_id.clone())));
    }
    let limits = Limits::default();
    let step = data.first().map_or(1, |b| usize::from(*b) % 13 + 1);
    let cuts: Vec<usize> = (step..wire.len()).step_by(step).collect();
    let (events, _, _) = run(&wire, limits, &cuts);
    assert_eq!(
        events,
        expected,
        "wire: {:?}",
        String::from_utf8_lossy(&wire)
    );
}

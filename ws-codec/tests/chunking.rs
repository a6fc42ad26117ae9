//! The same events under any chunking of the input.

use agentwire_ws::{Config, Connection, DataKind, Event, EventRef, FragmentMode, Role, Utf8Bytes};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use std::time::Instant;

#[derive(Debug, Clone)]
enum Op {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Fragmented(Vec<Vec<u8>>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        "\\PC{0,40}".prop_map(Op::Text),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Op::Binary),
        proptest::collection::vec(any::<u8>(), 0..125).prop_map(Op::Ping),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..4)
            .prop_map(Op::Fragmented),
    ]
}

/// Wire bytes a client produces for the ops (plus a final close).
fn wire(ops: &[Op]) -> BytesMut {
    let now = Instant::now();
    let mut c = Connection::new(Role::Client, Config::default(), now);
    for o in ops {
        match o {
            Op::Text(s) => c.send_text(s.clone()).unwrap(),
            Op::Binary(b) => c.send_binary(b.clone()).unwrap(),
            Op::Ping(b) => c.send_ping(Bytes::from(b.clone())).unwrap(),
            Op::Fragmented(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    c.send_fragment(
                        DataKind::Binary,
                        Bytes::from(p.clone()),
                        i + 1 == parts.len(),
                    )
                    .unwrap();
                }
            }
        }
    }
    c.close(now, agentwire_ws::CloseCode::NORMAL, "end")
        .unwrap();
    let mut w = BytesMut::new();
    while let Some(t) = c.poll_transmit() {
        t.write_to(&mut w);
    }
    w
}

fn feed(data: &[u8], cuts: &[usize], mode: FragmentMode) -> (Vec<Event>, Vec<u8>) {
    let now = Instant::now();
    let mut s = Connection::new(Role::Server, Config::default().with_fragments(mode), now);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut last = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    points.push(data.len());
    for p in points {
        buf.extend_from_slice(&data[last..p]);
        last = p;
        s.handle_input(now, &mut buf);
        events.extend(std::iter::from_fn(|| s.poll_event()));
    }
    let mut out = Vec::new();
    while let Some(t) = s.poll_transmit() {
        out.extend_from_slice(&t.head);
        out.extend_from_slice(&t.payload);
    }
    (events, out)
}

/// Like `feed`, through the borrowing `handle_input_with`, borrowed events turned into owned
/// ones for comparison.
fn feed_with(data: &[u8], cuts: &[usize], mode: FragmentMode) -> (Vec<Event>, Vec<u8>) {
    let now = Instant::now();
    let mut s = Connection::new(Role::Server, Config::default().with_fragments(mode), now);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut last = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    points.push(data.len());
    for p in points {
        buf.extend_from_slice(&data[last..p]);
        last = p;
        s.handle_input_with(now, &mut buf, |_, ev| {
            events.push(match ev {
                EventRef::Text(t) => Event::Text(Utf8Bytes::from(t.to_owned())),
                EventRef::Binary(b) => Event::Binary(Bytes::copy_from_slice(b)),
                EventRef::Owned(e) => e,
                _ => unreachable!(),
            })
        });
    }
    let mut out = Vec::new();
    while let Some(t) = s.poll_transmit() {
        out.extend_from_slice(&t.head);
        out.extend_from_slice(&t.payload);
    }
    (events, out)
}

proptest! {
    #[test]
    fn same_events_under_any_chunking(ops in proptest::collection::vec(op(), 0..8),
                                      cuts in proptest::collection::vec(any::<usize>(), 0..20)) {
        let w = wire(&ops);
        for mode in [FragmentMode::Reassemble, FragmentMode::Stream] {
            let whole = feed(&w, &[], mode);
            let chunked = feed(&w, &cuts, mode);
            prop_assert_eq!(&whole, &chunked);
            // and byte by byte
            let all: Vec<usize> = (0..w.len()).collect();
            prop_assert_eq!(&whole, &feed(&w, &all, mode));
            // the borrowing path sees the same events
            prop_assert_eq!(&whole, &feed_with(&w, &cuts, mode));
        }
        // the reassembled events are the messages sent
        let (events, _) = feed(&w, &cuts, FragmentMode::Reassemble);
        let mut it = events.iter();
        for o in &ops {
            let e = it.next().unwrap();
            match o {
                Op::Text(s) => prop_assert_eq!(e, &Event::Text(s.clone().into())),
                Op::Binary(b) => prop_assert_eq!(e, &Event::Binary(Bytes::from(b.clone()))),
                Op::Ping(b) => prop_assert_eq!(e, &Event::Ping(Bytes::from(b.clone()))),
                Op::Fragmented(parts) => prop_assert_eq!(e, &Event::Binary(Bytes::from(parts.concat()))),
            }
        }
        let close_received = matches!(it.next(), Some(Event::CloseReceived { .. }));
        prop_assert!(close_received);
        let closed_clean = matches!(it.next(), Some(Event::Closed { clean: true, .. }));
        prop_assert!(closed_clean);
        prop_assert!(it.next().is_none());
    }

    #[test]
    fn arbitrary_input_any_chunking(data in proptest::collection::vec(any::<u8>(), 0..200),
                                    cuts in proptest::collection::vec(any::<usize>(), 0..10)) {
        let whole = feed(&data, &[], FragmentMode::Reassemble);
        prop_assert_eq!(&whole, &feed(&data, &cuts, FragmentMode::Reassemble));
        prop_assert_eq!(&whole, &feed_with(&data, &cuts, FragmentMode::Reassemble));
        // nothing after Closed
        if let Some(i) = whole.0.iter().position(|e| matches!(e, Event::Closed { .. })) {
            prop_assert_eq!(i + 1, whole.0.len());
        }
    }
}

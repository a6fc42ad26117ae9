//! Any valid event sequence survives encode → decode unchanged under any chunking.

use agentwire_sse::{Decoder, EventId, EventName, OutEvent};
use bytes::BytesMut;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Ev {
    name: Option<String>,
    id: Option<String>,
    data: String,
}

fn field() -> impl Strategy<Value = String> {
    // Anything but CR, LF and NUL, including spaces, colons and non-ASCII.
    "[^\r\n\u{0}]{0,12}"
}

fn event() -> impl Strategy<Value = Ev> {
    (
        proptest::option::of(field()),
        proptest::option::of(field()),
        // Data may hold any line breaks.
        "(?s).{0,40}",
    )
        .prop_map(|(name, id, data)| Ev { name, id, data })
}

proptest! {
    #[test]
    fn encode_decode_round_trip(
        events in proptest::collection::vec(event(), 0..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut wire = BytesMut::new();
        let mut want = Vec::new();
        let mut last_id = String::new();
        for ev in &events {
            let name = ev.name.clone().map(|n| EventName::new(n).unwrap());
            let id = ev.id.clone().map(|i| EventId::new(i).unwrap());
            let mut out = OutEvent::new(&ev.data);
            if let Some(n) = &name { out = out.event(n); }
            if let Some(i) = &id { out = out.id(i); last_id = i.as_str().to_owned(); }
            out.encode(&mut wire);
            let ty = match &ev.name { Some(n) if !n.is_empty() => n.clone(), _ => "message".into() };
            let data = ev.data.replace("\r\n", "\n").replace('\r', "\n");
            want.push((ty, data, last_id.clone()));
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut d = Decoder::new();
        let mut got = Vec::new();
        let mut start = 0;
        for p in points.into_iter().chain(std::iter::once(wire.len())) {
            d.handle_input_slice(&wire[start..p]);
            start = p;
            while let Some(e) = d.poll_event() {
                let e = e.unwrap();
                got.push((e.event_type().to_owned(), e.data().to_owned(), e.last_event_id().to_owned()));
            }
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn decoder_never_panics_and_chunking_does_not_matter(
        input in proptest::collection::vec(prop_oneof![
            Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '), Just(0xEF), Just(0xBB), Just(0xBF),
            Just(0xE2), Just(0x82), Just(0xAC), Just(0xFF), Just(0u8),
            Just(b'd'), Just(b'a'), Just(b't'), Just(b'i'), Just(b'e'), Just(b'r'), Just(b'y'),
            any::<u8>(),
        ], 0..200),
        header in proptest::collection::vec(any::<u8>(), 3),
    ) {
        let mut data = header;
        data.extend_from_slice(&input);
        agentwire_sse::fuzz::decode(&data);
    }
}

//! permessage-deflate end to end through the real handshake and both connection machines:
//! negotiation, RSV1 on the wire, context takeover, fragments, thresholds, the bomb limit and
//! the violations (RSV1 where it may not be, corrupt data).
#![cfg(feature = "deflate")]

use agentwire_ws::deflate::{DeflateConfig, Negotiated};
use agentwire_ws::handshake::{self, Accept, ClientHandshake, ClientOptions};
use agentwire_ws::{
    CloseCode, Config, Connection, ConnectionError, DataKind, Event, FragmentMode, FrameHeader,
    OpCode, ProtocolError, Role,
};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use std::time::Instant;

/// The client's handshake state and the server's view of its request.
fn request(opts: ClientOptions) -> (ClientHandshake, handshake::Upgrade) {
    let uri: http::Uri = "ws://example.com/chat".parse().unwrap();
    let (hs, req) = ClientHandshake::new(&uri, opts).unwrap();
    let mut wire = BytesMut::new();
    ClientHandshake::encode_request(&req, &mut wire);
    let mut headers = [httparse::EMPTY_HEADER; handshake::MAX_HEADERS];
    let (upgrade, _) = handshake::parse_request(&wire, &mut headers)
        .unwrap()
        .unwrap();
    (hs, upgrade)
}

/// Runs the opening handshake with these policies; returns what each side negotiated.
fn negotiate(
    client: DeflateConfig,
    server: &DeflateConfig,
) -> (Option<Negotiated>, Option<Negotiated>) {
    let (hs, upgrade) = request(ClientOptions::default().with_deflate(client));
    let accepted = upgrade.negotiate_deflate(server);
    let mut accept = Accept::default();
    if let Some(n) = accepted {
        accept = accept.with_deflate(n);
    }
    let mut res = BytesMut::new();
    handshake::encode_response(&upgrade.accept(accept), &mut res);
    let (acc, _) = hs.parse_response(&res).unwrap().unwrap();
    (acc.deflate, accepted)
}

struct Pair {
    now: Instant,
    client: Connection,
    server: Connection,
}

impl Pair {
    fn new(client: DeflateConfig, server: DeflateConfig, sc: Config) -> Pair {
        let (c, s) = negotiate(client, &server);
        let now = Instant::now();
        Pair {
            now,
            client: Connection::new(Role::Client, Config::default().with_deflate(c), now),
            server: Connection::new(Role::Server, sc.with_deflate(s), now),
        }
    }

    /// Everything the client has queued, as wire bytes.
    fn client_wire(&mut self) -> BytesMut {
        let mut w = BytesMut::new();
        while let Some(t) = self.client.poll_transmit() {
            t.write_to(&mut w);
        }
        w
    }

    fn server_wire(&mut self) -> BytesMut {
        let mut w = BytesMut::new();
        while let Some(t) = self.server.poll_transmit() {
            t.write_to(&mut w);
        }
        w
    }

    fn deliver_to_server(&mut self) -> Vec<Event> {
        let mut w = self.client_wire();
        self.server.handle_input(self.now, &mut w);
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }
}

/// The headers of the frames in `wire`.
fn frames(mut wire: &[u8]) -> Vec<FrameHeader> {
    let mut out = Vec::new();
    while let Ok(Some((h, n))) = FrameHeader::decode(wire) {
        out.push(h);
        wire = &wire[n + h.len as usize..];
    }
    out
}

fn state_json(i: usize) -> String {
    format!(
        r#"{{"type":"cf_agent_state","state":{{"count":{i},"messages":[{{"role":"user","text":"hello agent number {i}"}},{{"role":"assistant","text":"the weather in Lisbon is sunny, 21 degrees"}}]}}}}"#
    )
}

#[test]
fn negotiation_in_both_roles() {
    let (c, s) = negotiate(DeflateConfig::default(), &DeflateConfig::default());
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!(s.response(), "permessage-deflate");
    assert_eq!(
        (c.server_max_window_bits, c.client_max_window_bits),
        (15, 15)
    );
    assert!(!c.server_no_context_takeover && !c.client_no_context_takeover);

    let (c, s) = negotiate(
        DeflateConfig::default()
            .with_client_no_context_takeover(true)
            .with_server_max_window_bits(10),
        &DeflateConfig::default().with_client_max_window_bits(12),
    );
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!(
        s.response(),
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
    );
    assert_eq!(
        (c.server_max_window_bits, c.client_max_window_bits),
        (10, 12)
    );
    assert!(c.client_no_context_takeover);
}

#[test]
fn a_server_accepting_an_unoffered_extension_fails_the_client() {
    let (hs, upgrade) = request(ClientOptions::default());
    // no offer in the request: the server's policy finds nothing to accept
    assert!(upgrade
        .negotiate_deflate(&DeflateConfig::default())
        .is_none());
    let n = DeflateConfig::default()
        .negotiate(["permessage-deflate"])
        .unwrap();
    let mut res = BytesMut::new();
    handshake::encode_response(&upgrade.accept(Accept::default().with_deflate(n)), &mut res);
    assert_eq!(
        hs.parse_response(&res).unwrap_err(),
        agentwire_ws::HandshakeError::Extension
    );
}

#[test]
fn messages_are_compressed_with_rsv1_and_context_takeover_pays() {
    for nct in [false, true] {
        let server = DeflateConfig::default().with_server_no_context_takeover(nct);
        let mut p = Pair::new(DeflateConfig::default(), server, Config::default());
        let mut sizes = Vec::new();
        for i in 0..20 {
            let msg = state_json(i);
            p.server.send_text(msg.clone()).unwrap();
            let wire = p.server_wire();
            let hs = frames(&wire);
            assert_eq!(hs.len(), 1);
            assert_eq!(hs[0].rsv, 0b100, "RSV1 on a compressed message");
            sizes.push(hs[0].len as usize);
            let mut w = wire;
            p.client.handle_input(p.now, &mut w);
            match p.client.poll_event() {
                Some(Event::Text(t)) => assert_eq!(t.as_str(), msg),
                other => panic!("{other:?}"),
            }
            // and the other way
            p.client
                .send_binary(Bytes::from(msg.clone().into_bytes()))
                .unwrap();
            match p.deliver_to_server().as_slice() {
                [Event::Binary(b)] => assert_eq!(&b[..], msg.as_bytes()),
                other => panic!("{other:?}"),
            }
        }
        let raw = state_json(19).len();
        let last = *sizes.last().unwrap();
        if nct {
            assert!(last * 10 > raw * 5, "no takeover: {last} of {raw}");
        } else {
            assert!(last * 4 < raw, "takeover: {last} of {raw} ({sizes:?})");
        }
    }
}

#[test]
fn small_messages_stay_uncompressed_under_the_threshold() {
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default().with_threshold(100),
        Config::default(),
    );
    p.server.send_text("tiny").unwrap();
    p.server.send_text("x".repeat(100)).unwrap();
    let wire = p.server_wire();
    let rsv: Vec<u8> = frames(&wire).iter().map(|h| h.rsv).collect();
    assert_eq!(rsv, [0, 0b100]);
    let mut w = wire;
    p.client.handle_input(p.now, &mut w);
    let evs: Vec<Event> = std::iter::from_fn(|| p.client.poll_event()).collect();
    assert!(
        matches!(&evs[..], [Event::Text(a), Event::Text(b)] if a.as_str() == "tiny" && b.len() == 100)
    );
}

#[test]
fn streamed_messages_are_compressed_per_chunk_and_reassembled() {
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default(),
    );
    let text = "añ€😀 streaming tokens ".repeat(50);
    let bytes = text.as_bytes();
    // chunks that split code points
    let cuts = [0, 7, 300, 301, bytes.len()];
    for w in cuts.windows(2) {
        let fin = w[1] == bytes.len();
        p.client
            .send_fragment(
                DataKind::Text,
                Bytes::copy_from_slice(&bytes[w[0]..w[1]]),
                fin,
            )
            .unwrap();
    }
    let wire = p.client_wire();
    let rsv: Vec<u8> = frames(&wire).iter().map(|h| h.rsv).collect();
    assert_eq!(rsv, [0b100, 0, 0, 0], "RSV1 on the first frame only");
    let mut w = wire;
    p.server.handle_input(p.now, &mut w);
    match p.server.poll_event() {
        Some(Event::Text(t)) => assert_eq!(t.as_str(), text),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stream_mode_inflates_each_frame() {
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default().with_fragments(FragmentMode::Stream),
    );
    let parts = ["first part, ", "second part, ", "third"];
    for (i, s) in parts.iter().enumerate() {
        p.client
            .send_fragment(DataKind::Binary, Bytes::from_static(s.as_bytes()), i == 2)
            .unwrap();
    }
    let evs = p.deliver_to_server();
    let got: Vec<(Vec<u8>, bool)> = evs
        .into_iter()
        .map(|e| match e {
            Event::Fragment { chunk, fin, .. } => (chunk.to_vec(), fin),
            other => panic!("{other:?}"),
        })
        .collect();
    let want: Vec<(Vec<u8>, bool)> = parts
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_bytes().to_vec(), i == 2))
        .collect();
    assert_eq!(got, want);
}

fn closed_with(evs: &[Event]) -> Option<ConnectionError> {
    evs.iter().find_map(|e| match e {
        Event::Closed { error, .. } => error.clone(),
        _ => None,
    })
}

/// The close code of the first Close frame in `wire` (server to client, unmasked).
fn close_code(wire: &[u8]) -> Option<u16> {
    let mut rest = wire;
    while let Ok(Some((h, n))) = FrameHeader::decode(rest) {
        if h.opcode == OpCode::Close {
            return Some(u16::from_be_bytes([rest[n], rest[n + 1]]));
        }
        rest = &rest[n + h.len as usize..];
    }
    None
}

#[test]
fn a_decompression_bomb_closes_with_1009_at_the_limit() {
    let limit = 1 << 20;
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default().with_max_message(limit),
    );
    // 24 MiB of zeros compress to about 24 KiB: well under every wire limit
    p.client
        .send_binary(Bytes::from(vec![0u8; 24 << 20]))
        .unwrap();
    let mut wire = p.client_wire();
    assert!(wire.len() < 64 * 1024, "{}", wire.len());
    p.server.handle_input(p.now, &mut wire);
    let evs: Vec<Event> = std::iter::from_fn(|| p.server.poll_event()).collect();
    assert!(
        matches!(
            closed_with(&evs),
            Some(ConnectionError::Protocol(ProtocolError::MessageTooLarge { max, .. })) if max == limit
        ),
        "{evs:?}"
    );
    assert_eq!(close_code(&p.server_wire()), Some(CloseCode::TOO_BIG.0));

    // the same bomb split over fragments is bounded per message, not per frame
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default().with_max_message(limit),
    );
    for i in 0..8 {
        p.client
            .send_fragment(DataKind::Binary, Bytes::from(vec![0u8; 256 << 10]), i == 7)
            .unwrap();
    }
    let evs = p.deliver_to_server();
    assert!(
        matches!(
            closed_with(&evs),
            Some(ConnectionError::Protocol(
                ProtocolError::MessageTooLarge { .. }
            ))
        ),
        "{evs:?}"
    );
}

/// A masked client frame with the given first byte and payload.
fn raw_frame(b0: u8, payload: &[u8]) -> BytesMut {
    let mut w = BytesMut::new();
    let h = FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 7,
        opcode: OpCode::from_u8(b0 & 0xf).unwrap(),
        mask: Some([1, 2, 3, 4]),
        len: payload.len() as u64,
    };
    w.extend_from_slice(&h.to_bytes());
    let mut p = payload.to_vec();
    agentwire_ws::apply_mask(&mut p, [1, 2, 3, 4], 0);
    w.extend_from_slice(&p);
    w
}

fn server_gets(p: &mut Pair, mut wire: BytesMut) -> (Vec<Event>, Option<u16>) {
    p.server.handle_input(p.now, &mut wire);
    let evs: Vec<Event> = std::iter::from_fn(|| p.server.poll_event()).collect();
    let code = close_code(&p.server_wire());
    (evs, code)
}

#[test]
fn violations_get_the_right_close_codes() {
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]; // RFC 7692 §7.2.3.1

    // the RFC's example frame is accepted
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default(),
    );
    let (evs, _) = server_gets(&mut p, raw_frame(0xC1, &hello));
    assert!(
        matches!(&evs[..], [Event::Text(t)] if t.as_str() == "Hello"),
        "{evs:?}"
    );

    // RSV1 on a continuation frame: 1002
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default(),
    );
    let mut w = raw_frame(0x41, &hello[..3]);
    w.extend_from_slice(&raw_frame(0xC0, &hello[3..]));
    let (_, code) = server_gets(&mut p, w);
    assert_eq!(code, Some(1002));

    // RSV1 on a control frame: 1002
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default(),
    );
    let (_, code) = server_gets(&mut p, raw_frame(0xC9, b""));
    assert_eq!(code, Some(1002));

    // RSV1 without the extension negotiated: 1002
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default(),
    );
    p.server = Connection::new(Role::Server, Config::default(), p.now);
    let (_, code) = server_gets(&mut p, raw_frame(0xC1, &hello));
    assert_eq!(code, Some(1002));

    // not DEFLATE data: 1007
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default(),
    );
    let (evs, code) = server_gets(&mut p, raw_frame(0xC2, &[0xff, 0xff, 0xff, 0xff]));
    assert_eq!(code, Some(1007), "{evs:?}");

    // compressed text that inflates to invalid UTF-8: 1007
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default(),
    );
    let n = DeflateConfig::default()
        .with_threshold(0)
        .negotiate(["permessage-deflate"])
        .unwrap();
    let mut other = Connection::new(Role::Client, Config::default().with_deflate(Some(n)), p.now);
    other
        .send_binary(Bytes::from_static(&[0xff, 0xfe, 0xfd]))
        .unwrap();
    let mut w = BytesMut::new();
    while let Some(t) = other.poll_transmit() {
        t.write_to(&mut w);
    }
    w[0] = (w[0] & 0xf0) | 0x1; // relabel the binary frame as text
    let (_, code) = server_gets(&mut p, w);
    assert_eq!(code, Some(1007));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any sequence of messages, each whole or in chunks, with or without context takeover,
    /// arrives intact under any input chunking.
    #[test]
    fn round_trip(
        msgs in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..3000), 1usize..4, any::<bool>()), 1..12),
        nct in any::<bool>(),
        split in 1usize..97,
    ) {
        let cfg = DeflateConfig::default().with_client_no_context_takeover(nct).with_threshold(if nct { 0 } else { 16 });
        let mut p = Pair::new(cfg, DeflateConfig::default(), Config::default());
        for (m, parts, repeat) in &msgs {
            let data: Vec<u8> = if *repeat { m.iter().cycle().take(m.len() * 3).copied().collect() } else { m.clone() };
            if *parts == 1 {
                p.client.send_binary(Bytes::from(data)).unwrap();
            } else {
                let step = data.len() / parts + 1;
                let chunks: Vec<&[u8]> = data.chunks(step).collect();
                if chunks.is_empty() {
                    p.client.send_fragment(DataKind::Binary, Bytes::new(), true).unwrap();
                }
                for (i, c) in chunks.iter().enumerate() {
                    p.client.send_fragment(DataKind::Binary, Bytes::copy_from_slice(c), i + 1 == chunks.len()).unwrap();
                }
            }
        }
        let wire = p.client_wire();
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for piece in wire.chunks(split) {
            buf.extend_from_slice(piece);
            p.server.handle_input(p.now, &mut buf);
            while let Some(e) = p.server.poll_event() {
                match e {
                    Event::Binary(b) => got.push(b.to_vec()),
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
        let want: Vec<Vec<u8>> = msgs.iter().map(|(m, _, repeat)| if *repeat { m.iter().cycle().take(m.len() * 3).copied().collect() } else { m.clone() }).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn idle_compression_state_is_freed() {
    use std::time::Duration;
    let t = Duration::from_secs(10);
    // the server asks the client to reset its context: our decompressor may go too
    let server_cfg = DeflateConfig::default()
        .with_threshold(0)
        .with_client_no_context_takeover(true)
        .with_release_after(Some(t));
    let mut p = Pair::new(DeflateConfig::default(), server_cfg, Config::default());
    let t0 = p.now;
    p.server.send_text(state_json(1)).unwrap();
    p.client.send_text(state_json(2)).unwrap();
    let mut w = p.server_wire();
    p.client.handle_input(t0, &mut w);
    assert!(matches!(p.client.poll_event(), Some(Event::Text(_))));
    assert!(matches!(p.deliver_to_server()[0], Event::Text(_)));
    assert!(p.server.holds_compressor() && p.server.holds_decompressor());

    // the first check finds recent traffic and looks again later
    let due = p.server.poll_timeout().expect("a release deadline");
    assert!(due <= t0 + t);
    p.server.handle_timeout(due);
    assert!(p.server.holds_compressor());
    // nothing since: freed at the next check
    let due = p.server.poll_timeout().expect("another check");
    p.server.handle_timeout(due);
    assert!(!p.server.holds_compressor() && !p.server.holds_decompressor());
    assert_eq!(p.server.poll_timeout(), None);

    // and compression goes on afterwards, in both directions
    p.server.send_text(state_json(3)).unwrap();
    let mut w = p.server_wire();
    p.client.handle_input(due, &mut w);
    match p.client.poll_event() {
        Some(Event::Text(t)) => assert_eq!(t.as_str(), state_json(3)),
        other => panic!("{other:?}"),
    }
    p.client.send_text(state_json(4)).unwrap();
    match &p.deliver_to_server()[0] {
        Event::Text(t) => assert_eq!(t.as_str(), state_json(4)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn decompressor_is_kept_under_the_peers_context_takeover() {
    let cfg = DeflateConfig::default()
        .with_threshold(0)
        .with_release_after(Some(std::time::Duration::from_secs(1)));
    let mut p = Pair::new(DeflateConfig::default(), cfg, Config::default());
    p.client.send_text(state_json(1)).unwrap();
    p.deliver_to_server();
    p.server.send_text(state_json(1)).unwrap();
    let _ = p.server_wire();
    for _ in 0..3 {
        if let Some(due) = p.server.poll_timeout() {
            p.server.handle_timeout(due);
        }
    }
    assert!(!p.server.holds_compressor());
    assert!(
        p.server.holds_decompressor(),
        "the client's window refers to it"
    );
    // the next message may refer to the previous one: still understood
    p.client.send_text(state_json(1)).unwrap();
    match &p.deliver_to_server()[0] {
        Event::Text(t) => assert_eq!(t.as_str(), state_json(1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_prepared_message_is_compressed_once_for_all_connections() {
    use agentwire_ws::PreparedMessage;
    let no_takeover = DeflateConfig::default()
        .with_threshold(0)
        .with_server_no_context_takeover(true);
    let mut pairs: Vec<Pair> = (0..5)
        .map(|_| {
            Pair::new(
                DeflateConfig::default(),
                no_takeover.clone(),
                Config::default(),
            )
        })
        .collect();
    let msg = PreparedMessage::text(state_json(7));
    for p in &mut pairs {
        p.server.send_prepared(&msg).unwrap();
        let mut w = p.server_wire();
        assert_eq!(frames(&w)[0].rsv & 0b100, 0b100, "compressed on the wire");
        p.client.handle_input(p.now, &mut w);
        match p.client.poll_event() {
            Some(Event::Text(t)) => assert_eq!(t.as_str(), state_json(7)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(msg.compressed_forms(), 1);
    assert!(pairs.iter().all(|p| !p.server.holds_compressor()));

    // with context takeover each connection compresses it itself (its window), no sharing
    let mut p = Pair::new(
        DeflateConfig::default(),
        DeflateConfig::default().with_threshold(0),
        Config::default(),
    );
    let msg = PreparedMessage::text(state_json(8));
    for _ in 0..2 {
        p.server.send_prepared(&msg).unwrap();
        let mut w = p.server_wire();
        p.client.handle_input(p.now, &mut w);
        match p.client.poll_event() {
            Some(Event::Text(t)) => assert_eq!(t.as_str(), state_json(8)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(msg.compressed_forms(), 0);
}

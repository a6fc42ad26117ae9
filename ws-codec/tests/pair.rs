//! In-memory client/server pair with a virtual clock.

use agentwire_ws::{
    CloseCode, Config, ConnState, Connection, ConnectionError, DataKind, Event, FragmentMode,
    Initiator, ProtocolError, Role, SendError,
};
use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};

struct Pair {
    now: Instant,
    client: Connection,
    server: Connection,
    to_server: BytesMut,
    to_client: BytesMut,
}

impl Pair {
    fn new(cc: Config, sc: Config) -> Pair {
        let now = Instant::now();
        Pair {
            now,
            client: Connection::new(Role::Client, cc, now),
            server: Connection::new(Role::Server, sc, now),
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
        }
    }

    fn default() -> Pair {
        Pair::new(Config::default(), Config::default())
    }

    /// Moves bytes both ways until nothing moves; returns the events of (client, server).
    fn run(&mut self) -> (Vec<Event>, Vec<Event>) {
        let (mut ce, mut se) = (Vec::new(), Vec::new());
        loop {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                t.write_to(&mut self.to_server);
                moved = true;
            }
            while let Some(t) = self.server.poll_transmit() {
                t.write_to(&mut self.to_client);
                moved = true;
            }
            self.server.handle_input(self.now, &mut self.to_server);
            self.client.handle_input(self.now, &mut self.to_client);
            while let Some(e) = self.client.poll_event() {
                ce.push(e);
                moved = true;
            }
            while let Some(e) = self.server.poll_event() {
                se.push(e);
                moved = true;
            }
            if !moved {
                return (ce, se);
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }
}

fn closed(initiator: Initiator, clean: bool, error: Option<ConnectionError>) -> Event {
    Event::Closed {
        initiator,
        clean,
        error,
    }
}

#[test]
fn messages_both_ways() {
    let mut p = Pair::default();
    p.client.send_text("hi server").unwrap();
    p.server
        .send_binary(Bytes::from_static(b"\x00\x01"))
        .unwrap();
    let (c, s) = p.run();
    assert_eq!(s, vec![Event::Text("hi server".into())]);
    assert_eq!(c, vec![Event::Binary(Bytes::from_static(b"\x00\x01"))]);
}

#[test]
fn server_payload_is_not_copied() {
    let mut p = Pair::default();
    let shared = Bytes::from(vec![7u8; 4000]);
    p.server.send_binary(shared.clone()).unwrap();
    let t = p.server.poll_transmit().unwrap();
    assert_eq!(t.payload.as_ptr(), shared.as_ptr());
    assert_eq!(&*t.head, &[0x82, 126, 0x0f, 0xa0]);
}

#[test]
fn small_frames_coalesce_in_order_around_large_ones() {
    let mut p = Pair::default();
    let big = Bytes::from(vec![1u8; 2000]);
    p.server.send_text("a").unwrap();
    p.server.send_text("b").unwrap();
    p.server.send_binary(big.clone()).unwrap();
    p.server.send_text("c").unwrap();
    let ts: Vec<_> = std::iter::from_fn(|| p.server.poll_transmit()).collect();
    assert_eq!(ts.len(), 3);
    assert!(ts[0].head.is_empty());
    assert_eq!(&ts[0].payload[..], b"\x81\x01a\x81\x01b");
    assert_eq!(ts[1].payload.as_ptr(), big.as_ptr());
    assert_eq!(&ts[2].payload[..], b"\x81\x01c");
    assert_eq!(p.server.outbound_bytes(), 0);
}

#[test]
fn client_frames_are_masked_with_fresh_keys() {
    let mut p = Pair::default();
    p.client.send_binary(Bytes::from_static(b"abcd")).unwrap();
    p.client.send_binary(Bytes::from_static(b"abcd")).unwrap();
    let t = p.client.poll_transmit().unwrap();
    let (a, n) = agentwire_ws::FrameHeader::decode(&t.payload)
        .unwrap()
        .unwrap();
    let (b, _) = agentwire_ws::FrameHeader::decode(&t.payload[n + 4..])
        .unwrap()
        .unwrap();
    assert!(a.mask.is_some() && b.mask.is_some());
    assert_ne!(a.mask, b.mask, "two frames with the same key");
    assert_ne!(&t.payload[n..n + 4], b"abcd", "payload sent unmasked");
}

#[test]
fn close_from_client() {
    let mut p = Pair::default();
    p.client.close(p.now, CloseCode::NORMAL, "done").unwrap();
    assert_eq!(p.client.state(), ConnState::CloseSent);
    assert_eq!(p.client.send_text("late"), Err(SendError::Closed));
    let (c, s) = p.run();
    assert_eq!(
        s,
        vec![
            Event::CloseReceived {
                code: Some(CloseCode::NORMAL),
                reason: "done".into()
            },
            closed(Initiator::Remote, true, None)
        ]
    );
    assert_eq!(
        c,
        vec![
            Event::CloseReceived {
                code: Some(CloseCode::NORMAL),
                reason: "done".into()
            },
            closed(Initiator::Local, true, None)
        ]
    );
    assert!(p.client.state().is_closed() && p.server.state().is_closed());
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn close_from_server_with_pending_data_first() {
    let mut p = Pair::default();
    p.server.send_text("last words").unwrap();
    p.server.close(p.now, CloseCode::GOING_AWAY, "").unwrap();
    let (c, s) = p.run();
    assert_eq!(c[0], Event::Text("last words".into()));
    assert_eq!(
        c[1],
        Event::CloseReceived {
            code: Some(CloseCode::GOING_AWAY),
            reason: "".into()
        }
    );
    assert_eq!(c[2], closed(Initiator::Remote, true, None));
    assert_eq!(s[1], closed(Initiator::Local, true, None));
}

#[test]
fn simultaneous_close() {
    let mut p = Pair::default();
    p.client.close(p.now, CloseCode::NORMAL, "").unwrap();
    p.server.close(p.now, CloseCode::NORMAL, "").unwrap();
    let (c, s) = p.run();
    assert_eq!(c.last(), Some(&closed(Initiator::Local, true, None)));
    assert_eq!(s.last(), Some(&closed(Initiator::Local, true, None)));
}

#[test]
fn close_timeout() {
    let mut p = Pair::new(
        Config::default().with_close_timeout(Duration::from_secs(2)),
        Config::default(),
    );
    p.client.close(p.now, CloseCode::NORMAL, "").unwrap();
    // the close frame is sent but the peer never answers
    while p.client.poll_transmit().is_some() {}
    assert_eq!(
        p.client.poll_timeout(),
        Some(p.now + Duration::from_secs(2))
    );
    p.advance(Duration::from_millis(1999));
    assert_eq!(p.client.poll_event(), None);
    p.advance(Duration::from_millis(1));
    assert_eq!(
        p.client.poll_event(),
        Some(closed(
            Initiator::Local,
            false,
            Some(ConnectionError::CloseTimeout)
        ))
    );
    assert_eq!(p.client.poll_event(), None);
    p.advance(Duration::from_secs(10)); // idempotent
    assert_eq!(p.client.poll_event(), None);
}

#[test]
fn heartbeat_keeps_a_live_peer_and_detects_a_dead_one() {
    let cfg = Config::default()
        .with_ping_interval(Some(Duration::from_secs(30)))
        .with_pong_timeout(Duration::from_secs(10));
    let mut p = Pair::new(Config::default(), cfg);
    assert_eq!(
        p.server.poll_timeout(),
        Some(p.now + Duration::from_secs(30))
    );
    p.advance(Duration::from_secs(30));
    let (c, s) = p.run(); // ping goes out, client auto-pongs
    assert!(matches!(c.as_slice(), [Event::Ping(b)] if b.len() == 8));
    assert!(matches!(s.as_slice(), [Event::Pong(b)] if b.len() == 8));
    assert_eq!(
        p.server.poll_timeout(),
        Some(p.now + Duration::from_secs(30))
    );
    // now the client goes silent: nothing is delivered to it any more
    p.advance(Duration::from_secs(30));
    assert!(p.server.poll_transmit().is_some()); // the ping, dropped on the floor
    assert_eq!(
        p.server.poll_timeout(),
        Some(p.now + Duration::from_secs(10))
    );
    p.advance(Duration::from_secs(10));
    assert_eq!(
        p.server.poll_event(),
        Some(closed(
            Initiator::Library,
            false,
            Some(ConnectionError::PongTimeout)
        ))
    );
}

#[test]
fn fragmented_text_with_ping_between() {
    let mut p = Pair::default();
    let euro = "€".as_bytes();
    p.client
        .send_fragment(DataKind::Text, Bytes::from_static(b"a"), false)
        .unwrap();
    p.client
        .send_fragment(DataKind::Text, Bytes::copy_from_slice(&euro[..1]), false)
        .unwrap();
    p.client.send_ping(Bytes::from_static(b"p")).unwrap();
    assert_eq!(
        p.client.send_text("not now"),
        Err(SendError::MessageInProgress),
        "whole message during a streamed one"
    );
    p.client
        .send_fragment(DataKind::Text, Bytes::copy_from_slice(&euro[1..]), true)
        .unwrap();
    let (c, s) = p.run();
    assert_eq!(
        s,
        vec![
            Event::Ping(Bytes::from_static(b"p")),
            Event::Text("a€".into())
        ]
    );
    assert_eq!(c, vec![Event::Pong(Bytes::from_static(b"p"))]);
}

#[test]
fn stream_mode_delivers_fragments() {
    let mut p = Pair::new(
        Config::default(),
        Config::default().with_fragments(FragmentMode::Stream),
    );
    p.client
        .send_fragment(DataKind::Binary, Bytes::from_static(b"one"), false)
        .unwrap();
    p.client
        .send_fragment(DataKind::Binary, Bytes::from_static(b"two"), true)
        .unwrap();
    let (_, s) = p.run();
    assert_eq!(
        s,
        vec![
            Event::Fragment {
                kind: DataKind::Binary,
                chunk: Bytes::from_static(b"one"),
                fin: false
            },
            Event::Fragment {
                kind: DataKind::Binary,
                chunk: Bytes::from_static(b"two"),
                fin: true
            },
        ]
    );
}

#[test]
fn message_limit_closes_with_1009() {
    let mut p = Pair::new(Config::default(), Config::default().with_max_message(10));
    p.client
        .send_fragment(DataKind::Binary, Bytes::from_static(b"123456"), false)
        .unwrap();
    p.client
        .send_fragment(DataKind::Binary, Bytes::from_static(b"789012"), true)
        .unwrap();
    let (c, s) = p.run();
    assert_eq!(
        s,
        vec![closed(
            Initiator::Library,
            false,
            Some(ConnectionError::Protocol(ProtocolError::MessageTooLarge {
                len: 12,
                max: 10
            }))
        )]
    );
    assert_eq!(
        c[0],
        Event::CloseReceived {
            code: Some(CloseCode::TOO_BIG),
            reason: "".into()
        }
    );
}

#[test]
fn frame_limit_checked_before_payload_arrives() {
    let mut server = Connection::new(
        Role::Server,
        Config::default().with_max_frame_payload(1000),
        Instant::now(),
    );
    // header of a masked 1 GiB binary frame, no payload
    let mut buf = BytesMut::from(&[0x82u8, 0xFF, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4][..]);
    server.handle_input(Instant::now(), &mut buf);
    assert!(matches!(
        server.poll_event(),
        Some(Event::Closed {
            error: Some(ConnectionError::Protocol(
                ProtocolError::FrameTooLarge { .. }
            )),
            ..
        })
    ));
    assert!(buf.capacity() < 4096, "buffer grew for a rejected frame");
    let t = server.poll_transmit().unwrap();
    assert_eq!(&t.payload[..], &1009u16.to_be_bytes());
}

#[test]
fn outbound_limit() {
    let mut p = Pair::new(
        Config::default(),
        Config::default().with_max_outbound_buffered(100),
    );
    p.server.send_binary(Bytes::from(vec![0; 80])).unwrap();
    assert_eq!(p.server.outbound_bytes(), 82);
    // refused: 82 queued + 20 + a header of up to 14 bytes could exceed 100
    assert_eq!(
        p.server.send_binary(Bytes::from(vec![0; 20])),
        Err(SendError::BufferFull { outbound: 82 })
    );
    p.server.poll_transmit().unwrap();
    assert_eq!(p.server.outbound_bytes(), 0);
    p.server.send_binary(Bytes::from(vec![0; 20])).unwrap();
}

fn server_fed(bytes: &[u8]) -> Vec<Event> {
    let mut s = Connection::new(Role::Server, Config::default(), Instant::now());
    let mut buf = BytesMut::from(bytes);
    s.handle_input(Instant::now(), &mut buf);
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn close_code_sent(bytes: &[u8]) -> u16 {
    let mut s = Connection::new(Role::Server, Config::default(), Instant::now());
    let mut buf = BytesMut::from(bytes);
    s.handle_input(Instant::now(), &mut buf);
    assert_eq!(
        s.poll_transmit(),
        None,
        "the close waits for the events before it"
    );
    while s.poll_event().is_some() {}
    let t = s.poll_transmit().expect("a close frame");
    assert_eq!(t.head[0], 0x88);
    u16::from_be_bytes([t.payload[0], t.payload[1]])
}

#[test]
fn violations_map_to_close_codes() {
    // unmasked frame to a server
    assert_eq!(close_code_sent(&[0x81, 0x00]), 1002);
    // RSV1 without deflate
    assert_eq!(close_code_sent(&[0xC1, 0x80, 0, 0, 0, 0]), 1002);
    // reserved opcode
    assert_eq!(close_code_sent(&[0x83, 0x80, 0, 0, 0, 0]), 1002);
    // continuation without a message
    assert_eq!(close_code_sent(&[0x80, 0x80, 0, 0, 0, 0]), 1002);
    // new message during a fragmented one
    assert_eq!(
        close_code_sent(&[0x01, 0x80, 0, 0, 0, 0, 0x81, 0x80, 0, 0, 0, 0]),
        1002
    );
    // invalid UTF-8 (mask key 0 keeps the payload as is)
    assert_eq!(close_code_sent(&[0x81, 0x82, 0, 0, 0, 0, 0xc0, 0xaf]), 1007);
    // close with a one-byte payload, invalid code, invalid reason
    assert_eq!(close_code_sent(&[0x88, 0x81, 0, 0, 0, 0, 3]), 1002);
    assert_eq!(close_code_sent(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xed]), 1002); // 1005
    assert_eq!(
        close_code_sent(&[0x88, 0x84, 0, 0, 0, 0, 0x03, 0xe8, 0xc0, 0xaf]),
        1007
    );
    // a fragmented ping
    assert_eq!(close_code_sent(&[0x09, 0x80, 0, 0, 0, 0]), 1002);
}

#[test]
fn close_echoes_code_and_no_event_after_closed() {
    let ev = server_fed(&[0x88, 0x82, 0, 0, 0, 0, 0x0b, 0xb8, 0x81, 0x80, 0, 0, 0, 0]);
    assert_eq!(
        ev,
        vec![
            Event::CloseReceived {
                code: Some(CloseCode(3000)),
                reason: "".into()
            },
            closed(Initiator::Remote, true, None)
        ]
    );
}

#[test]
fn eof_before_close_is_unclean() {
    let mut p = Pair::default();
    p.server.handle_eof(p.now);
    assert_eq!(
        p.server.poll_event(),
        Some(closed(
            Initiator::Remote,
            false,
            Some(ConnectionError::Reset)
        ))
    );
    assert_eq!(p.server.send_text("x"), Err(SendError::Closed));
}

#[test]
fn partial_header_then_payload_in_pieces() {
    let frame = [
        0x81u8, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut s = Connection::new(Role::Server, Config::default(), Instant::now());
    let mut buf = BytesMut::new();
    for b in frame {
        buf.extend_from_slice(&[b]);
        s.handle_input(Instant::now(), &mut buf);
    }
    assert_eq!(s.poll_event(), Some(Event::Text("Hello".into())));
    assert!(buf.is_empty());
}

#[test]
fn close_validation_on_our_side() {
    let mut p = Pair::default();
    assert_eq!(
        p.client.close(p.now, CloseCode(1005), ""),
        Err(SendError::InvalidCloseCode(1005))
    );
    assert_eq!(
        p.client.close(p.now, CloseCode::NORMAL, &"x".repeat(124)),
        Err(SendError::ControlPayloadTooLong)
    );
    assert_eq!(
        p.client.send_ping(Bytes::from(vec![0; 126])),
        Err(SendError::ControlPayloadTooLong)
    );
    assert_eq!(p.client.state(), ConnState::Open);
}

#[test]
fn every_ping_is_answered_up_to_a_cap() {
    let mut p = Pair::default();
    for i in 0..10u8 {
        p.client.send_ping(Bytes::from(vec![i])).unwrap();
    }
    let (c, _) = p.run();
    let pongs: Vec<_> = c
        .iter()
        .filter_map(|e| {
            if let Event::Pong(b) = e {
                Some(b[0])
            } else {
                None
            }
        })
        .collect();
    assert_eq!(pongs, (0..10).collect::<Vec<u8>>());
    // a flood of 1000 pings while the server never drains: at most 64 pongs kept, the latest
    let mut server = Connection::new(Role::Server, Config::default(), p.now);
    let mut wire = BytesMut::new();
    for i in 0..1000u16 {
        wire.extend_from_slice(&[0x89, 0x82, 0, 0, 0, 0]);
        wire.extend_from_slice(&i.to_be_bytes());
    }
    server.handle_input(p.now, &mut wire);
    let sent: Vec<_> = std::iter::from_fn(|| server.poll_transmit()).collect();
    assert_eq!(sent.len(), 64);
    assert_eq!(&sent[63].payload[..], &999u16.to_be_bytes());
}

#[test]
fn messages_before_a_violation_can_still_be_echoed() {
    let mut s = Connection::new(Role::Server, Config::default(), Instant::now());
    // "hi", then a frame with RSV2 set
    let mut buf =
        BytesMut::from(&[0x81u8, 0x82, 0, 0, 0, 0, b'h', b'i', 0xA1, 0x80, 0, 0, 0, 0][..]);
    s.handle_input(Instant::now(), &mut buf);
    assert_eq!(s.poll_event(), Some(Event::Text("hi".into())));
    s.send_text("hi").unwrap();
    assert!(matches!(
        s.poll_event(),
        Some(Event::Closed {
            initiator: Initiator::Library,
            ..
        })
    ));
    assert_eq!(s.poll_event(), None);
    let frames: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert_eq!(frames.len(), 2);
    assert_eq!(&frames[0].payload[..], b"\x81\x02hi");
    assert_eq!(&frames[1].payload[..], &1002u16.to_be_bytes());
}

#[test]
fn invalid_utf8_fails_before_the_frame_is_complete() {
    let mut s = Connection::new(Role::Server, Config::default(), Instant::now());
    // a 100-byte text frame; the first 4 payload bytes already hold an invalid sequence
    let mut buf = BytesMut::from(&[0x81u8, 0xFE, 0x00, 100, 1, 2, 3, 4][..]);
    let mut bad = *b"ok\xc0\xaf";
    agentwire_ws::apply_mask(&mut bad, [1, 2, 3, 4], 0);
    buf.extend_from_slice(&bad);
    s.handle_input(Instant::now(), &mut buf);
    assert!(matches!(
        s.poll_event(),
        Some(Event::Closed {
            error: Some(ConnectionError::Protocol(ProtocolError::InvalidUtf8)),
            ..
        })
    ));
}

#[test]
fn partial_frames_unmask_once() {
    // a masked 300-byte text frame fed in 7-byte pieces decodes to the original text
    let text: String = "añb€c😀".repeat(20);
    let mut c = Connection::new(Role::Client, Config::default(), Instant::now());
    c.send_text(text.clone()).unwrap();
    let mut wire = BytesMut::new();
    c.poll_transmit().unwrap().write_to(&mut wire);
    let mut s = Connection::new(Role::Server, Config::default(), Instant::now());
    let mut buf = BytesMut::new();
    for piece in wire.chunks(7) {
        buf.extend_from_slice(piece);
        s.handle_input(Instant::now(), &mut buf);
    }
    assert_eq!(s.poll_event(), Some(Event::Text(text.into())));
}

#[test]
fn poll_transmit_into_matches_poll_transmit() {
    let build = || {
        let mut s = Connection::new(Role::Server, Config::default(), Instant::now());
        s.send_text("a").unwrap();
        s.send_binary(Bytes::from(vec![9u8; 3000])).unwrap();
        s.send_ping(Bytes::from_static(b"p")).unwrap();
        s.send_text("b").unwrap();
        s.close(Instant::now(), CloseCode::NORMAL, "x").unwrap();
        s
    };
    let mut a = build();
    let mut one = BytesMut::new();
    while let Some(t) = a.poll_transmit() {
        t.write_to(&mut one);
    }
    let mut b = build();
    let mut all = BytesMut::new();
    assert_eq!(b.poll_transmit_into(&mut all), all.len());
    assert_eq!(one, all);
    assert_eq!(b.outbound_bytes(), 0);
    assert_eq!(
        b.poll_transmit_into(&mut all),
        0,
        "nothing after the close frame"
    );
    assert_eq!(a.stats().bytes_sent, b.stats().bytes_sent);
}

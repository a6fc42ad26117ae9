//! Fuzz entry points (used by `fuzz/fuzz_targets/ws_*.rs` and replayed by
//! `tests/fuzz_corpus.rs`). Each asserts invariants and panics on a violation.

use crate::handshake::{self, Accept, ClientHandshake, ClientOptions};
use crate::{
    apply_mask, Config, Connection, Event, EventRef, FragmentMode, FrameHeader, Role, Utf8Bytes,
};
use bytes::Bytes;
use bytes::BytesMut;
use std::time::{Duration, Instant};

/// Frame header decode/encode round trip and masking against the byte-wise definition.
pub fn frame(data: &[u8]) {
    if let Ok(Some((h, n))) = FrameHeader::decode(data) {
        assert!(n <= data.len() && n >= 2);
        let enc = h.to_bytes();
        assert_eq!(enc.len(), h.encoded_len());
        let (back, m) = FrameHeader::decode(&enc).unwrap().unwrap();
        assert_eq!(back, h);
        assert_eq!(m, enc.len());
        assert!(m <= n, "the encoder is never longer than the input form");
        if m == n {
            assert_eq!(&enc[..], &data[..n]);
        }
    }
    if data.len() >= 5 {
        let key = [data[0], data[1], data[2], data[3]];
        let off = usize::from(data[4]);
        let mut fast = data[5..].to_vec();
        apply_mask(&mut fast, key, off);
        for (i, b) in fast.iter().enumerate() {
            assert_eq!(*b, data[5 + i] ^ key[(i + off) & 3]);
        }
    }
}

/// Runs a machine over `input` in chunks of `chunk` bytes, echoing messages; returns the
/// events and the bytes it wrote.
fn run(role: Role, config: Config, input: &[u8], chunk: usize) -> (Vec<Event>, Vec<Vec<u8>>) {
    let t0 = Instant::now();
    let mut conn = Connection::new(role, config, t0);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut wire = Vec::new();
    let mut closed = false;
    for (i, piece) in input.chunks(chunk.max(1)).enumerate() {
        buf.extend_from_slice(piece);
        let before = buf.len();
        let now = t0 + Duration::from_millis(i as u64);
        conn.handle_input(now, &mut buf);
        assert!(buf.len() <= before, "input grew");
        while let Some(ev) = conn.poll_event() {
            assert!(!closed, "event after Closed: {ev:?}");
            match &ev {
                Event::Text(t) => {
                    assert!(std::str::from_utf8(t.as_bytes()).is_ok());
                    let _ = conn.send_text(t.clone());
                }
                Event::Binary(b) => {
                    let _ = conn.send_binary(b.clone());
                }
                Event::Closed { .. } => closed = true,
                _ => {}
            }
            events.push(ev);
        }
        while let Some(t) = conn.poll_transmit() {
            assert!(!t.is_empty());
            wire.extend_from_slice(&t.head);
            wire.extend_from_slice(&t.payload);
        }
        if let Some(d) = conn.poll_timeout() {
            assert!(d >= t0);
        }
    }
    conn.handle_timeout(t0 + Duration::from_secs(3600));
    conn.handle_eof(t0 + Duration::from_secs(3600));
    let mut after_eof = 0;
    while let Some(ev) = conn.poll_event() {
        assert!(!closed, "event after Closed: {ev:?}");
        if matches!(ev, Event::Closed { .. }) {
            closed = true;
        }
        after_eof += 1;
        events.push(ev);
    }
    assert!(closed, "eof must end the connection");
    assert!(after_eof <= 3);
    while conn.poll_transmit().is_some() {}
    (events, split_frames(&wire))
}

/// Splits what a machine wrote into frames (header + payload bytes each); every byte written
/// must belong to a well-formed frame.
fn split_frames(mut wire: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while !wire.is_empty() {
        let (h, n) = FrameHeader::decode(wire)
            .expect("we wrote a bad header")
            .expect("we wrote a partial header");
        let end = n + h.len as usize;
        assert!(end <= wire.len(), "we wrote a partial frame");
        frames.push(wire[..end].to_vec());
        wire = &wire[end..];
    }
    frames
}

/// The events of `handle_input` over `input` in chunks, drained with `poll_messages` first
/// (each batch checked against its owned form) and `poll_event` for the rest.
fn run_batches(role: Role, config: Config, input: &[u8], chunk: usize) -> Vec<Event> {
    let t0 = Instant::now();
    let mut conn = Connection::new(role, config, t0);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        conn.handle_input(t0, &mut buf);
        loop {
            if let Some(batch) = conn.poll_messages() {
                assert!(!batch.is_empty());
                let owned: Vec<Event> = batch.clone().into_iter().collect();
                assert_eq!(owned.len(), batch.len());
                for (m, o) in batch.iter().zip(&owned) {
                    match (m, o) {
                        (EventRef::Text(t), Event::Text(u)) => assert_eq!(t, u.as_str()),
                        (EventRef::Binary(b), Event::Binary(c)) => assert_eq!(b, &c[..]),
                        other => panic!("batch views differ: {other:?}"),
                    }
                }
                events.extend(owned);
                continue;
            }
            match conn.poll_event() {
                Some(ev) => events.push(ev),
                None => break,
            }
        }
    }
    events
}

/// The events of `handle_input_with` over `input` in chunks, borrowed ones made owned.
fn run_with(role: Role, config: Config, input: &[u8], chunk: usize) -> Vec<Event> {
    let t0 = Instant::now();
    let mut conn = Connection::new(role, config, t0);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        let before = buf.len();
        conn.handle_input_with(t0, &mut buf, |_, ev| {
            events.push(match ev {
                EventRef::Text(t) => Event::Text(Utf8Bytes::from(t.to_owned())),
                EventRef::Binary(b) => Event::Binary(Bytes::copy_from_slice(b)),
                EventRef::Owned(e) => e,
            })
        });
        assert!(buf.len() <= before, "input grew");
    }
    events
}

fn config(sel: u8) -> Config {
    let mut c = Config::default();
    if sel & 1 != 0 {
        c = c.with_fragments(FragmentMode::Stream);
    }
    if sel & 2 != 0 {
        c = c.with_max_frame_payload(64).with_max_message(100);
    }
    c
}

fn machine(role: Role, data: &[u8]) {
    machine_with(role, data, config);
}

fn machine_with(role: Role, data: &[u8], config: fn(u8) -> Config) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(sel >> 2) + 1;
    let (e1, o1) = run(role, config(sel), input, input.len().max(1));
    let (e2, o2) = run(role, config(sel), input, chunk);
    // the same events under another chunking; the same frames written (compared as a multiset:
    // pongs may overtake queued data differently); client output differs by masks
    let strip = |e: Vec<Event>| -> Vec<Event> {
        e.into_iter()
            .filter(|e| !matches!(e, Event::Closed { .. }))
            .collect()
    };
    let e3 = run_with(role, config(sel), input, chunk);
    let e4 = run_batches(role, config(sel), input, chunk);
    let e1 = strip(e1);
    assert_eq!(e1, strip(e2));
    assert_eq!(e1, strip(e3), "borrowing path differs");
    assert_eq!(e1, strip(e4), "batch path differs");
    if role == Role::Server {
        // auto pongs depend on chunking (at most 64 wait unsent; older ones are dropped)
        let no_pongs =
            |o: Vec<Vec<u8>>| -> Vec<Vec<u8>> { o.into_iter().filter(|f| f[0] != 0x8A).collect() };
        let (mut o1, mut o2) = (no_pongs(o1), no_pongs(o2));
        o1.sort();
        o2.sort();
        assert_eq!(o1, o2);
    }
}

/// The server-role machine over arbitrary input (first byte: config and chunk size).
pub fn server(data: &[u8]) {
    machine(Role::Server, data);
}

/// The client-role machine over arbitrary input (first byte: config and chunk size).
pub fn client(data: &[u8]) {
    machine(Role::Client, data);
}

/// permessage-deflate settings: bit 0 stream mode, bit 1 tiny limits (bombs), bit 2 no context
/// takeover (both directions), bit 3 a 9-bit window for what we send.
#[cfg(feature = "deflate")]
fn deflate_config(sel: u8) -> Config {
    use crate::deflate::DeflateConfig;
    let nct = sel & 4 != 0;
    let mut policy = DeflateConfig::default()
        .with_threshold(0)
        .with_server_no_context_takeover(nct)
        .with_client_no_context_takeover(nct);
    if sel & 8 != 0 {
        policy = policy
            .with_server_max_window_bits(9)
            .with_client_max_window_bits(9);
    }
    let n = policy.negotiate(["permessage-deflate; client_max_window_bits"]);
    assert!(n.is_some());
    config(sel & 3).with_deflate(n)
}

/// The server-role machine with permessage-deflate negotiated, over arbitrary input (first
/// byte: settings and chunk size): compressed messages are inflated within the limits and
/// echoed compressed, identically under any chunking.
#[cfg(feature = "deflate")]
pub fn deflate_server(data: &[u8]) {
    machine_with(Role::Server, data, deflate_config);
}

/// The client-role machine with permessage-deflate negotiated.
#[cfg(feature = "deflate")]
pub fn deflate_client(data: &[u8]) {
    machine_with(Role::Client, data, deflate_config);
}

/// Both handshake parsers over arbitrary input.
pub fn handshake(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; handshake::MAX_HEADERS];
    if let Ok(Some((up, n))) = handshake::parse_request(data, &mut headers) {
        assert!(n <= data.len());
        let proto = up.protocols().next().map(str::to_owned);
        let res = up.accept(Accept::default());
        assert_eq!(res.status(), 101);
        if let Some(p) = proto {
            let res = up.accept(Accept::default().with_protocol(p.clone()));
            assert_eq!(
                res.headers()[http::header::SEC_WEBSOCKET_PROTOCOL]
                    .to_str()
                    .ok(),
                Some(p.as_str())
            );
        }
        let mut out = BytesMut::new();
        handshake::encode_response(&res, &mut out);
        #[cfg(feature = "deflate")]
        {
            // whatever a client offered, what the server accepts is valid for a client that
            // offered permessage-deflate with the defaults
            use crate::deflate::DeflateConfig;
            for policy in [
                DeflateConfig::default(),
                DeflateConfig::default()
                    .with_client_no_context_takeover(true)
                    .with_client_max_window_bits(10)
                    .with_server_max_window_bits(12),
            ] {
                if let Some(n) = up.negotiate_deflate(&policy) {
                    let resp = n.response();
                    let back = DeflateConfig::default().accept_response([resp.as_str()]);
                    assert!(matches!(back, Ok(Some(_))), "{resp} refused: {back:?}");
                }
            }
        }
    }
    let uri: http::Uri = "ws://example.com/".parse().unwrap();
    #[allow(unused_mut)]
    let mut options = vec![ClientOptions::default()];
    #[cfg(feature = "deflate")]
    options.push(ClientOptions::default().with_deflate(crate::deflate::DeflateConfig::default()));
    for opts in options {
        if let Ok((hs, _)) = ClientHandshake::new(&uri, opts) {
            if let Ok(Some((_, n))) = hs.parse_response(data) {
                assert!(n <= data.len());
            }
        }
    }
}

/// Sends `msg` from `from` to `to` over a wire of bytes; `to` must receive exactly `msg`.
#[cfg(feature = "deflate")]
fn relay(from: &mut Connection, to: &mut Connection, msg: &Bytes, now: Instant) {
    from.send_binary(msg.clone()).unwrap();
    let mut wire = BytesMut::new();
    while let Some(t) = from.poll_transmit() {
        t.write_to(&mut wire);
    }
    to.handle_input(now, &mut wire);
    match to.poll_event() {
        Some(Event::Binary(b)) => assert_eq!(&b, msg, "another message arrived"),
        other => panic!("{other:?}"),
    }
}

/// permessage-deflate with the idle-release timer firing between messages: a client sends
/// the messages cut from `data` (a length byte, then that many bytes, repeated), the server
/// echoes them, and both sides free their compression state whenever they may. Every message
/// must arrive intact both ways, whatever is freed when — in particular the decompressor must
/// survive where the peer keeps its context. First byte: bit 0 client, bit 1 server no
/// context takeover; bit 2 a 9-bit window; the rest picks how often the timer fires.
#[cfg(feature = "deflate")]
pub fn deflate_release(data: &[u8]) {
    use crate::deflate::DeflateConfig;
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let every = usize::from(sel >> 3) % 4 + 1;
    let mut policy = DeflateConfig::default()
        .with_threshold(0)
        .with_client_no_context_takeover(sel & 1 != 0)
        .with_server_no_context_takeover(sel & 2 != 0)
        .with_release_after(Some(Duration::from_millis(1)));
    if sel & 4 != 0 {
        policy = policy
            .with_server_max_window_bits(9)
            .with_client_max_window_bits(9);
    }
    let offer = ["permessage-deflate; client_max_window_bits"];
    let Some(n) = policy.negotiate(offer) else {
        return;
    };
    // the client keeps its compression state (as a peer that never frees it would): where it
    // keeps its context, the server must keep the window its messages refer to
    let Some(peer) = policy.clone().with_release_after(None).negotiate(offer) else {
        return;
    };
    let t0 = Instant::now();
    let mut client = Connection::new(Role::Client, Config::default().with_deflate(Some(peer)), t0);
    let mut server = Connection::new(Role::Server, Config::default().with_deflate(Some(n)), t0);
    let mut now = t0;
    let mut i = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let msg = Bytes::copy_from_slice(&tail[..take]);
        rest = &tail[take..];
        // the message to the server, then its echo back
        relay(&mut client, &mut server, &msg, now);
        relay(&mut server, &mut client, &msg, now);
        i += 1;
        if i % every == 0 {
            // idle long enough: the first check notes the traffic, the next frees
            for _ in 0..2 {
                now += Duration::from_millis(2);
                for c in [&mut client, &mut server] {
                    if c.poll_timeout().is_some_and(|d| d <= now) {
                        c.handle_timeout(now);
                    }
                }
            }
            assert!(!server.holds_compressor());
        }
    }
}

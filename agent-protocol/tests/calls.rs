//! The Sans-IO call table.

use agentwire_protocol::{
    classify_server, CallEvent, CallOptions, CallTable, ProtocolError, RawJson, RpcResponse,
    ServerInbound, ServerMessage,
};
use std::time::{Duration, Instant};

fn args(s: &str) -> RawJson {
    RawJson::from_string(s.to_owned()).unwrap()
}

/// One response in, its one event out.
fn respond(t: &mut CallTable, r: RpcResponse) -> CallEvent {
    t.handle_input(r);
    let ev = t.poll_event().expect("one event per response");
    assert!(t.poll_event().is_none());
    ev
}

fn drain(t: &mut CallTable) -> Vec<CallEvent> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

fn lost(t: &mut CallTable) -> Vec<CallEvent> {
    t.handle_eof();
    drain(t)
}

fn timeout(t: &mut CallTable, now: Instant) -> Vec<CallEvent> {
    t.handle_timeout(now);
    drain(t)
}

fn response(frame: &str) -> RpcResponse {
    match classify_server(frame) {
        ServerInbound::Protocol(ServerMessage::Rpc(r)) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn regular_call_completes() {
    let now = Instant::now();
    let mut t = CallTable::new();
    let req = t
        .start("add", args("[2,3]"), CallOptions::regular(), now)
        .unwrap();
    assert_eq!(req.id(), "1");
    assert_eq!(
        req.to_json(),
        r#"{"args":[2,3],"id":"1","method":"add","type":"rpc"}"#
    );
    assert!(t.contains("1"));
    assert_eq!(t.is_streaming("1"), Some(false));
    let ev = respond(
        &mut t,
        response(r#"{"done":true,"id":"1","result":5,"success":true,"type":"rpc"}"#),
    );
    assert_eq!(
        ev,
        CallEvent::Completed {
            id: "1".into(),
            method: "add".into(),
            result: Some(args("5"))
        }
    );
    assert!(t.is_empty());
    // a second reply for the same id is unknown now
    let ev = respond(&mut t, RpcResponse::done_void("1"));
    assert_eq!(ev, CallEvent::UnknownId { id: "1".into() });
}

#[test]
fn void_result_has_no_value() {
    let mut t = CallTable::new();
    let req = t
        .start(
            "nothing",
            args("[]"),
            CallOptions::regular(),
            Instant::now(),
        )
        .unwrap();
    let ev = respond(&mut t, RpcResponse::done_void(req.id().clone()));
    assert!(
        matches!(ev, CallEvent::Completed { result: None, .. }),
        "{ev:?}"
    );
}

#[test]
fn streaming_chunks_then_done() {
    let mut t = CallTable::with_id_prefix("c-");
    let req = t
        .start(
            "countdown",
            args("[3]"),
            CallOptions::streaming(),
            Instant::now(),
        )
        .unwrap();
    assert_eq!(req.id(), "c-1");
    assert_eq!(
        t.poll_timeout(),
        None,
        "streaming calls have no default timeout"
    );
    let mut chunks = Vec::new();
    for n in [3, 2, 1] {
        match respond(&mut t, RpcResponse::chunk("c-1", &n).unwrap()) {
            CallEvent::Chunk { result, .. } => chunks.push(result.unwrap().get().to_owned()),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.len(), 1);
    }
    assert_eq!(chunks, ["3", "2", "1"]);
    let ev = respond(&mut t, RpcResponse::done("c-1", "liftoff").unwrap());
    assert!(
        matches!(ev, CallEvent::Completed { ref result, .. } if result.as_ref().unwrap().get() == "\"liftoff\"")
    );
    assert!(t.is_empty());
}

#[test]
fn streaming_error_after_chunk_fails() {
    let mut t = CallTable::new();
    let req = t
        .start(
            "streamFail",
            args("[]"),
            CallOptions::streaming(),
            Instant::now(),
        )
        .unwrap();
    let id = req.id().clone();
    assert!(matches!(
        respond(&mut t, RpcResponse::chunk(id.clone(), "partial").unwrap()),
        CallEvent::Chunk { .. }
    ));
    let ev = respond(&mut t, RpcResponse::error(id.clone(), "stream exploded"));
    assert_eq!(
        ev,
        CallEvent::Failed {
            id,
            method: "streamFail".into(),
            error: "stream exploded".into()
        }
    );
    assert!(t.is_empty());
}

#[test]
fn connection_lost_rejects_everything_in_order() {
    let now = Instant::now();
    let mut t = CallTable::new();
    for m in ["a", "b", "c", "d", "e"] {
        t.start(m, args("[]"), CallOptions::regular(), now).unwrap();
    }
    respond(&mut t, RpcResponse::done_void("3"));
    let failed = lost(&mut t);
    let got: Vec<(String, String, String)> = failed
        .into_iter()
        .map(|e| match e {
            CallEvent::Failed { id, method, error } => (id.into_string(), method, error),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "1".to_owned(),
                "a".to_owned(),
                "Connection closed".to_owned()
            ),
            ("2".into(), "b".into(), "Connection closed".into()),
            ("4".into(), "d".into(), "Connection closed".into()),
            ("5".into(), "e".into(), "Connection closed".into()),
        ]
    );
    assert!(t.is_empty());
    assert!(lost(&mut t).is_empty());
}

#[test]
fn timeouts() {
    let t0 = Instant::now();
    let mut t = CallTable::new();
    t.start("slow", args("[]"), CallOptions::regular(), t0)
        .unwrap();
    t.start(
        "quick",
        args("[]"),
        CallOptions::regular().with_timeout(Some(Duration::from_millis(250))),
        t0,
    )
    .unwrap();
    t.start("stream", args("[]"), CallOptions::streaming(), t0)
        .unwrap();
    assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_millis(250)));
    assert!(timeout(&mut t, t0 + Duration::from_millis(249)).is_empty());
    let ev = timeout(&mut t, t0 + Duration::from_millis(250));
    assert_eq!(
        ev,
        [CallEvent::Failed {
            id: "2".into(),
            method: "quick".into(),
            error: "RPC call to quick timed out after 250ms".into()
        }]
    );
    assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    let ev = timeout(&mut t, t0 + Duration::from_secs(31));
    assert!(
        matches!(&ev[..], [CallEvent::Failed { error, .. }] if error == "RPC call to slow timed out after 30000ms")
    );
    assert_eq!(t.len(), 1, "the streaming call never times out by default");
}

#[test]
fn ids_and_errors() {
    let now = Instant::now();
    let mut t = CallTable::new();
    t.start_with_id("2", "x", args("[]"), CallOptions::regular(), now)
        .unwrap();
    assert_eq!(
        t.start_with_id("2", "x", args("[]"), CallOptions::regular(), now),
        Err(ProtocolError::DuplicateCallId("2".into()))
    );
    // generated ids skip ids already in use
    assert_eq!(
        t.start("a", args("[]"), CallOptions::regular(), now)
            .unwrap()
            .id(),
        "1"
    );
    assert_eq!(
        t.start("b", args("[]"), CallOptions::regular(), now)
            .unwrap()
            .id(),
        "3"
    );
    assert_eq!(
        t.start("c", args("{}"), CallOptions::regular(), now),
        Err(ProtocolError::ArgsNotArray)
    );
    assert_eq!(t.len(), 3);
    assert!(t.cancel("3"));
    assert!(!t.cancel("3"));
    assert_eq!(
        ProtocolError::ArgsNotArray.to_string(),
        "rpc args must be a json array"
    );
}

#[test]
fn close_and_reconnect_policy() {
    use agentwire_protocol::{is_terminal_close, reconnect_delay};
    for code in [1008, 4000, 4001, 4999] {
        assert!(is_terminal_close(code), "{code}");
    }
    for code in [1000, 1001, 1011, 1012, 1007, 3999, 5000] {
        assert!(!is_terminal_close(code), "{code}");
    }
    let ms: Vec<u128> = (0..8).map(|n| reconnect_delay(n).as_millis()).collect();
    assert_eq!(ms, [0, 3000, 3900, 5070, 6591, 8568, 10_000, 10_000]);
    assert_eq!(reconnect_delay(u32::MAX), Duration::from_secs(10));
}

//! Every frame of the golden transcript (recorded against the reference server) parses and
//! re-encodes to an equal JSON value.

use agentwire_protocol::{
    classify, classify_server, ClientMessage, Inbound, RpcResponse, ServerInbound, ServerMessage,
    StateFrame,
};
use serde_json::Value;

const TRANSCRIPT: &str = include_str!("fixtures/golden-transcript.jsonl");

struct Frame {
    conn: String,
    dir: String,
    data: String,
}

fn frames() -> Vec<Frame> {
    let mut out = Vec::new();
    for (i, line) in TRANSCRIPT.lines().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {i}: {e}"));
        if v.get("meta").is_some() {
            continue;
        }
        let dir = v["dir"].as_str().unwrap().to_owned();
        if dir != "send" && dir != "recv" {
            continue;
        }
        out.push(Frame {
            conn: v["conn"].as_str().unwrap().to_owned(),
            dir,
            data: v["data"].as_str().unwrap().to_owned(),
        });
    }
    out
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn transcript_has_the_expected_size() {
    let f = frames();
    assert_eq!(f.iter().filter(|f| f.dir == "send").count(), 32);
    assert_eq!(f.iter().filter(|f| f.dir == "recv").count(), 86);
}

#[test]
fn every_client_frame_classifies_and_round_trips() {
    let mut protocol = 0;
    let mut application = Vec::new();
    for f in frames().iter().filter(|f| f.dir == "send") {
        match classify(&f.data) {
            Inbound::Protocol(msg) => {
                protocol += 1;
                let encoded = msg.encode();
                assert_eq!(json(&encoded), json(&f.data), "{}", f.data);
                // AgentClient frames are written byte for byte like the reference client.
                if !f.conn.starts_with("raw") {
                    assert_eq!(encoded, f.data.as_str());
                }
                // Re-classifying the encoding gives the same message.
                assert_eq!(classify(&encoded), Inbound::Protocol(msg));
            }
            Inbound::Application(text) => {
                assert_eq!(text, f.data);
                application.push(text.to_owned());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(protocol, 30);
    assert_eq!(
        application,
        [
            "hello agent",
            r#"{"type":"rpc","id":7,"method":"add","args":[1,1]}"#
        ]
    );
}

#[test]
fn every_server_frame_classifies_and_round_trips() {
    let mut protocol = 0;
    let mut byte_exact = 0;
    let mut application = Vec::new();
    for f in frames().iter().filter(|f| f.dir == "recv") {
        match classify_server(&f.data) {
            ServerInbound::Protocol(msg) => {
                protocol += 1;
                let encoded = msg.encode();
                assert_eq!(json(&encoded), json(&f.data), "{}", f.data);
                assert_eq!(
                    classify_server(&encoded),
                    ServerInbound::Protocol(msg.clone())
                );
                if encoded == f.data.as_str() {
                    byte_exact += 1;
                } else {
                    // Only the connect-sequence state frame uses the other key order.
                    assert!(
                        f.data.starts_with(r#"{"type":"cf_agent_state","state":"#),
                        "{}",
                        f.data
                    );
                }
            }
            ServerInbound::Application(text) => {
                let v = json(text);
                let ty = v["type"].as_str().unwrap();
                assert!(ty == "shout" || ty == "echo", "{text}");
                application.push(text.to_owned());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(application.len(), 5);
    assert_eq!(protocol, 81);
    assert_eq!(byte_exact, 81 - 13);
}

#[test]
fn server_frames_decode_to_the_right_variants() {
    let get = |s: &str| match classify_server(s) {
        ServerInbound::Protocol(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        get(
            r#"{"type":"cf_agent_identity","name":"golden","agent":"counter-agent","stateFollows":true}"#
        ),
        ServerMessage::identity("golden", "counter-agent", true)
    );
    let void = get(r#"{"done":true,"id":"void-1","success":true,"type":"rpc"}"#);
    assert_eq!(void, ServerMessage::Rpc(RpcResponse::done_void("void-1")));
    let chunk = get(r#"{"done":false,"id":"<uuid-6>","result":3,"success":true,"type":"rpc"}"#);
    assert_eq!(
        chunk,
        ServerMessage::Rpc(RpcResponse::chunk("<uuid-6>", &3).unwrap())
    );
    let err = get(
        r#"{"error":"Method notExposed is not callable","id":"<uuid-10>","success":false,"type":"rpc"}"#,
    );
    assert_eq!(
        err,
        ServerMessage::Rpc(RpcResponse::method_not_callable("<uuid-10>", "notExposed"))
    );
    assert_eq!(
        get(r#"{"type":"cf_agent_state_error","error":"Connection is readonly"}"#),
        ServerMessage::state_error_readonly()
    );
    assert_eq!(
        get(r#"{"type":"cf_agent_state_error","error":"State update rejected"}"#),
        ServerMessage::state_error_rejected()
    );
    assert_eq!(
        get(
            r#"{"mcp":{"prompts":[],"resources":[],"servers":{},"tools":[]},"type":"cf_agent_mcp_servers"}"#
        ),
        ServerMessage::empty_mcp_servers()
    );
}

#[test]
fn relayed_state_frames_match_the_broadcasts_byte_for_byte() {
    // A's setState({count:41}) reaches B as exactly the frame a StateFrame builds.
    let sent = r#"{"state":{"count":41},"type":"cf_agent_state"}"#;
    let Inbound::Protocol(ClientMessage::State { state }) = classify(sent) else {
        panic!()
    };
    let frame = StateFrame::from_raw_json(&state);
    let received = frames()
        .into_iter()
        .find(|f| f.conn == "B" && f.data.contains("41"))
        .unwrap();
    assert_eq!(frame.as_str(), received.data);
    assert_eq!(frame.state_json(), r#"{"count":41}"#);
}

#[test]
fn connect_sequence_matches_the_reference() {
    use agentwire_protocol::{connect_sequence, EMPTY_MCP_SERVERS_FRAME};
    let all = frames();
    let raw1: Vec<&str> = all
        .iter()
        .filter(|f| f.conn == "raw1" && f.dir == "recv")
        .map(|f| f.data.as_str())
        .collect();
    let state = StateFrame::from_serialize(&serde_json::json!({"count": 0})).unwrap();
    let ours = connect_sequence("golden", "counter-agent", Some(&state), None);
    assert_eq!(ours.len(), raw1.len());
    for (a, b) in ours.iter().zip(&raw1) {
        assert_eq!(json(a), json(b));
    }
    assert_eq!(ours[0], raw1[0]);
    assert_eq!(ours[1], raw1[1]);
    assert_eq!(ours[2], raw1[2]);
    assert_eq!(raw1[2], EMPTY_MCP_SERVERS_FRAME);
    // without a state, no stateFollows and no state frame
    let bare = connect_sequence("golden", "counter-agent", None, None);
    assert_eq!(
        bare[0],
        r#"{"type":"cf_agent_identity","name":"golden","agent":"counter-agent"}"#
    );
    assert_eq!(bare.len(), 2);
}

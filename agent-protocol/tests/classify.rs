//! Classification table (spec §3) and wire shapes (spec §4).

use agentwire_protocol::{
    classify, classify_server, ClientMessage, Inbound, McpServer, McpServerState, McpServers,
    RawJson, RpcRequest, RpcResponse, ServerInbound, ServerMessage, StateFrame,
};

fn is_protocol(text: &str) -> bool {
    match classify(text) {
        Inbound::Protocol(_) => true,
        Inbound::Application(t) => {
            assert!(
                std::ptr::eq(t, text),
                "application text must be the frame itself"
            );
            false
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn classification_table() {
    let table: &[(&str, bool)] = &[
        // state updates: type + a `state` key, whatever its value
        (r#"{"state":{"count":41},"type":"cf_agent_state"}"#, true),
        (r#"{"type":"cf_agent_state","state":null}"#, true),
        (r#"{"type":"cf_agent_state","state":[1,"x"]}"#, true),
        (r#"{"type":"cf_agent_state"}"#, false),
        (r#"{"type":"cf_agent_state","State":1}"#, false),
        (r#"{"type":"CF_AGENT_STATE","state":1}"#, false),
        // rpc: string id, string method, array args
        (
            r#"{"args":[2,3],"id":"u","method":"add","type":"rpc"}"#,
            true,
        ),
        (r#"{"type":"rpc","id":"","method":"","args":[]}"#, true),
        (
            r#"{"type":"rpc","id":7,"method":"add","args":[1,1]}"#,
            false,
        ),
        (r#"{"type":"rpc","id":"x","method":"add"}"#, false),
        (
            r#"{"type":"rpc","id":"x","method":"add","args":null}"#,
            false,
        ),
        (
            r#"{"type":"rpc","id":"x","method":"add","args":{"0":1}}"#,
            false,
        ),
        (
            r#"{"type":"rpc","id":"x","method":"add","args":"[]"}"#,
            false,
        ),
        (r#"{"type":"rpc","id":"x","method":1,"args":[]}"#, false),
        (r#"{"type":"rpc","id":null,"method":"m","args":[]}"#, false),
        (r#"{"type":"rpc","method":"m","args":[]}"#, false),
        (r#"{"id":"x","method":"m","args":[]}"#, false),
        // not JSON / not an object
        ("hello agent", false),
        ("", false),
        ("{", false),
        (
            r#"{"type":"rpc","id":"x","method":"m","args":[]} trailing"#,
            false,
        ),
        (r#"[{"type":"cf_agent_state","state":1}]"#, false),
        ("null", false),
        ("42", false),
        (r#""cf_agent_state""#, false),
        // unknown types pass through
        (r#"{"type":"shout","payload":{}}"#, false),
        (r#"{"type":"cf_agent_use_chat_request","id":"x"}"#, false),
        (
            r#"{"type":"cf_agent_identity","name":"a","agent":"b"}"#,
            false,
        ),
        (r#"{"type":"cf_agent_mcp_servers","mcp":{}}"#, false),
        (r#"{"type":1,"state":1}"#, false),
        // JSON.parse semantics: whitespace, escapes, last duplicate wins
        (
            " \t\r\n{ \"type\" : \"cf_agent_state\" , \"state\" : 1 } \n",
            true,
        ),
        (
            r#"{"typ\u0065":"\u0072pc","id":"a\"b","method":"m","args":[]}"#,
            true,
        ),
        (
            r#"{"type":"rpc","type":"x","id":"a","method":"m","args":[]}"#,
            false,
        ),
        (
            r#"{"type":"x","type":"rpc","id":"a","method":"m","args":[]}"#,
            true,
        ),
        (
            r#"{"type":"rpc","id":"a","method":"m","args":[],"args":1}"#,
            false,
        ),
        // an unpaired surrogate in an ignored key does not hide the call
        (
            r#"{"\ud800":1,"type":"rpc","id":"a","method":"m","args":[]}"#,
            true,
        ),
        // a byte-order mark is not JSON whitespace
        ("\u{feff}{\"type\":\"cf_agent_state\",\"state\":1}", false),
    ];
    for (text, protocol) in table {
        assert_eq!(is_protocol(text), *protocol, "{text}");
    }
}

#[test]
fn deep_payloads_are_not_limited_by_recursion() {
    let depth = 10_000;
    let state = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let frame = format!(r#"{{"type":"cf_agent_state","state":{state}}}"#);
    let Inbound::Protocol(ClientMessage::State { state: got }) = classify(&frame) else {
        panic!("deeply nested state must still be a state update")
    };
    assert_eq!(got.get(), state);
}

#[test]
fn rpc_fields_are_decoded() {
    let Inbound::Protocol(ClientMessage::Rpc(req)) =
        classify(r#"{"type":"rpc","id":"a\"b","method":"m\u00e9","args":[1, {"x":[true]}]}"#)
    else {
        panic!()
    };
    assert_eq!(req.id(), "a\"b");
    assert_eq!(req.method(), "mé");
    assert_eq!(req.args().get(), r#"[1, {"x":[true]}]"#);
    let (n, obj): (u8, serde_json::Value) = req.args_as().unwrap();
    assert_eq!(n, 1);
    assert_eq!(obj, serde_json::json!({"x":[true]}));
    assert_eq!(
        req.to_json(),
        r#"{"args":[1, {"x":[true]}],"id":"a\"b","method":"mé","type":"rpc"}"#
    );
}

#[test]
fn request_constructors_check_args() {
    let ok = RpcRequest::from_serialize("1", "add", &(2, 3)).unwrap();
    assert_eq!(
        ok.to_json(),
        r#"{"args":[2,3],"id":"1","method":"add","type":"rpc"}"#
    );
    assert!(RpcRequest::from_serialize("1", "add", &5).is_err());
    assert!(RpcRequest::new("1", "m", RawJson::from_string("{}".into()).unwrap()).is_err());
    let v = RpcRequest::from_values("1", "m", &[serde_json::json!("a"), serde_json::json!(null)]);
    assert_eq!(v.args_values().unwrap().len(), 2);
    assert_eq!(
        ClientMessage::from(v).to_json(),
        r#"{"args":["a",null],"id":"1","method":"m","type":"rpc"}"#
    );
}

#[test]
fn response_wire_shapes() {
    let cases = [
        (
            RpcResponse::done("i", &5).unwrap(),
            r#"{"done":true,"id":"i","result":5,"success":true,"type":"rpc"}"#,
        ),
        (
            RpcResponse::done_void("i"),
            r#"{"done":true,"id":"i","success":true,"type":"rpc"}"#,
        ),
        (
            RpcResponse::done("i", &()).unwrap(),
            r#"{"done":true,"id":"i","result":null,"success":true,"type":"rpc"}"#,
        ),
        (
            RpcResponse::chunk("i", &3).unwrap(),
            r#"{"done":false,"id":"i","result":3,"success":true,"type":"rpc"}"#,
        ),
        (
            RpcResponse::error("i", "kaboom"),
            r#"{"error":"kaboom","id":"i","success":false,"type":"rpc"}"#,
        ),
        (
            RpcResponse::method_does_not_exist("i", "noSuchMethod"),
            r#"{"error":"Method noSuchMethod does not exist","id":"i","success":false,"type":"rpc"}"#,
        ),
        (
            RpcResponse::method_not_callable("i", "setState"),
            r#"{"error":"Method setState is not callable","id":"i","success":false,"type":"rpc"}"#,
        ),
        (
            RpcResponse::error("i", agentwire_protocol::texts::CONNECTION_READONLY),
            r#"{"error":"Connection is readonly","id":"i","success":false,"type":"rpc"}"#,
        ),
    ];
    for (resp, wire) in cases {
        assert_eq!(resp.encode(), wire);
        assert_eq!(ServerMessage::from(resp.clone()).encode(), wire);
        assert_eq!(
            classify_server(wire),
            ServerInbound::Protocol(ServerMessage::Rpc(resp))
        );
    }
    assert!(!RpcResponse::chunk("i", &1).unwrap().is_terminal());
    assert!(RpcResponse::done_void("i").is_terminal());
    assert!(RpcResponse::error("i", "x").is_terminal());
}

#[test]
fn server_message_wire_shapes() {
    let cases = [
        (
            ServerMessage::identity("golden", "counter-agent", true),
            r#"{"type":"cf_agent_identity","name":"golden","agent":"counter-agent","stateFollows":true}"#,
        ),
        (
            ServerMessage::identity("hello%20world", "counter-agent", false),
            r#"{"type":"cf_agent_identity","name":"hello%20world","agent":"counter-agent"}"#,
        ),
        (
            ServerMessage::State {
                state: RawJson::from_string(r#"{"count":0}"#.into()).unwrap(),
            },
            r#"{"state":{"count":0},"type":"cf_agent_state"}"#,
        ),
        (
            ServerMessage::state_error_readonly(),
            r#"{"type":"cf_agent_state_error","error":"Connection is readonly"}"#,
        ),
        (
            ServerMessage::state_error_rejected(),
            r#"{"type":"cf_agent_state_error","error":"State update rejected"}"#,
        ),
        (
            ServerMessage::empty_mcp_servers(),
            r#"{"mcp":{"prompts":[],"resources":[],"servers":{},"tools":[]},"type":"cf_agent_mcp_servers"}"#,
        ),
    ];
    for (msg, wire) in cases {
        assert_eq!(msg.encode(), wire);
        assert_eq!(classify_server(wire), ServerInbound::Protocol(msg));
    }
}

#[test]
fn mcp_servers_full_shape() {
    let mut mcp = McpServers::default();
    mcp.servers.insert(
        "s1".into(),
        McpServer {
            name: "docs".into(),
            server_url: "https://mcp.example/sse".into(),
            auth_url: None,
            state: McpServerState::Ready,
            error: None,
            instructions: Some("be nice".into()),
            capabilities: Some(RawJson::from(serde_json::json!({"tools":{}}))),
        },
    );
    mcp.tools.push(RawJson::from(
        serde_json::json!({"name":"search","serverId":"s1"}),
    ));
    let msg = ServerMessage::McpServers { mcp };
    let wire = msg.encode();
    let v: serde_json::Value = serde_json::from_str(&wire).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type":"cf_agent_mcp_servers","mcp":{
            "prompts":[],"resources":[],"tools":[{"name":"search","serverId":"s1"}],
            "servers":{"s1":{"name":"docs","server_url":"https://mcp.example/sse","auth_url":null,
                "state":"ready","error":null,"instructions":"be nice","capabilities":{"tools":{}}}}}})
    );
    assert_eq!(classify_server(&wire), ServerInbound::Protocol(msg));
    for s in [
        "authenticating",
        "connecting",
        "connected",
        "discovering",
        "ready",
        "failed",
        "not-connected",
        "other",
    ] {
        assert_eq!(McpServerState::parse(s).as_str(), s);
    }
    assert_eq!(
        McpServerState::parse("not-connected"),
        McpServerState::NotConnected
    );
}

#[test]
fn server_side_classification_leniency_and_rejections() {
    // success frame without `done`: the legacy form resolves the call
    let Some(ServerMessage::Rpc(RpcResponse::Done { result, .. })) =
        classify_server(r#"{"id":"x","result":1,"success":true,"type":"rpc"}"#)
            .protocol()
            .cloned()
    else {
        panic!()
    };
    assert_eq!(result.unwrap().get(), "1");
    // error without text
    assert_eq!(
        classify_server(r#"{"id":"x","success":false,"type":"rpc"}"#),
        ServerInbound::Protocol(ServerMessage::Rpc(RpcResponse::error("x", "")))
    );
    for text in [
        "not json",
        r#"{"type":"shout","payload":{}}"#,
        r#"{"type":"rpc","id":1,"success":true}"#,
        r#"{"type":"rpc","id":"x"}"#,
        r#"{"type":"cf_agent_identity","name":"x"}"#,
        r#"{"type":"cf_agent_identity","name":"x","agent":"y","stateFollows":"yes"}"#,
        r#"{"type":"cf_agent_state"}"#,
        r#"{"type":"cf_agent_mcp_servers","mcp":[]}"#,
        r#"{"type":"cf_agent_session","phase":"idle"}"#,
    ] {
        assert_eq!(
            classify_server(text),
            ServerInbound::Application(text),
            "{text}"
        );
    }
}

#[test]
fn state_frame_is_built_once_and_shared() {
    let frame = StateFrame::from_serialize(&serde_json::json!({"count": 42})).unwrap();
    assert_eq!(
        frame.as_str(),
        r#"{"state":{"count":42},"type":"cf_agent_state"}"#
    );
    let a = frame.to_utf8_bytes();
    let b = frame.to_utf8_bytes();
    assert_eq!(
        a.as_bytes().as_ptr(),
        b.as_bytes().as_ptr(),
        "clones share one buffer"
    );
    assert_eq!(frame.state_json(), r#"{"count":42}"#);
    let raw = RawJson::from_string("\"s\"".into()).unwrap();
    assert_eq!(
        StateFrame::from_raw_json(&raw).as_str(),
        r#"{"state":"s","type":"cf_agent_state"}"#
    );
}

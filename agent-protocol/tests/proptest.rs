//! Property tests: encode → classify round trips, and classification never panics.

use agentwire_protocol::{
    classify, classify_server, ClientMessage, Inbound, RawJson, RpcRequest, RpcResponse,
    ServerInbound, ServerMessage, StateFrame,
};
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e15f64..1e15).prop_map(Value::from),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn raw(v: &Value) -> RawJson {
    RawJson::from(v)
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        json_value().prop_map(|v| ClientMessage::State { state: raw(&v) }),
        (".*", ".*", prop::collection::vec(json_value(), 0..5))
            .prop_map(|(id, m, args)| ClientMessage::Rpc(RpcRequest::from_values(id, m, &args))),
    ]
}

fn rpc_response() -> impl Strategy<Value = RpcResponse> {
    let result = || prop::option::of(json_value().prop_map(|v| raw(&v)));
    prop_oneof![
        (".*", result()).prop_map(|(id, result)| RpcResponse::Chunk {
            id: id.into(),
            result
        }),
        (".*", result()).prop_map(|(id, result)| RpcResponse::Done {
            id: id.into(),
            result
        }),
        (".*", ".*").prop_map(|(id, e)| RpcResponse::error(id, e)),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (".*", ".*", any::<bool>()).prop_map(|(n, a, f)| ServerMessage::identity(n, a, f)),
        json_value().prop_map(|v| ServerMessage::State { state: raw(&v) }),
        ".*".prop_map(|e| ServerMessage::StateError { error: e }),
        Just(ServerMessage::empty_mcp_servers()),
        rpc_response().prop_map(ServerMessage::Rpc),
    ]
}

proptest! {
    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        let wire = msg.encode();
        prop_assert_eq!(classify(&wire), Inbound::Protocol(msg.clone()));
        // and the JSON value is what the message says
        let v: Value = serde_json::from_str(&wire).unwrap();
        match &msg {
            ClientMessage::State { state } => {
                prop_assert_eq!(&v["type"], "cf_agent_state");
                prop_assert_eq!(&v["state"], &state.to_value().unwrap());
                let frame = StateFrame::from_raw_json(state);
                prop_assert_eq!(frame.as_str(), wire.as_str());
            }
            ClientMessage::Rpc(req) => {
                prop_assert_eq!(&v["type"], "rpc");
                prop_assert_eq!(v["id"].as_str().unwrap(), req.id().as_str());
                prop_assert_eq!(v["method"].as_str().unwrap(), req.method());
                prop_assert!(v["args"].is_array());
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn server_messages_round_trip(msg in server_message()) {
        let wire = msg.encode();
        prop_assert_eq!(classify_server(&wire), ServerInbound::Protocol(msg.clone()));
        let v: Value = serde_json::from_str(&wire).unwrap();
        prop_assert_eq!(v["type"].as_str().unwrap(), msg.type_name());
        if let ServerMessage::Rpc(r) = &msg {
            let obj = v.as_object().unwrap();
            match r {
                RpcResponse::Error { .. } => {
                    prop_assert!(!obj.contains_key("result") && !obj.contains_key("done"));
                    prop_assert_eq!(&v["success"], false);
                }
                RpcResponse::Chunk { result, .. } | RpcResponse::Done { result, .. } => {
                    prop_assert_eq!(obj.contains_key("result"), result.is_some());
                    prop_assert_eq!(&v["done"], r.is_terminal());
                    prop_assert_eq!(&v["success"], true);
                }
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".*") {
        agentwire_protocol::fuzz::classify(text.as_bytes());
    }

    #[test]
    fn arbitrary_objects_follow_the_spec_rules(
        ty in prop_oneof![Just("rpc".to_owned()), Just("cf_agent_state".to_owned()), ".*"],
        fields in prop::collection::btree_map(
            prop_oneof![Just("id".to_owned()), Just("method".to_owned()), Just("args".to_owned()), Just("state".to_owned()), ".*"],
            json_value(), 0..5),
    ) {
        let mut obj: serde_json::Map<String, Value> = fields.into_iter().collect();
        obj.insert("type".into(), Value::String(ty.clone()));
        let text = serde_json::to_string(&obj).unwrap();
        let expected = match ty.as_str() {
            "cf_agent_state" => obj.contains_key("state"),
            "rpc" => obj.get("id").is_some_and(Value::is_string)
                && obj.get("method").is_some_and(Value::is_string)
                && obj.get("args").is_some_and(Value::is_array),
            _ => false,
        };
        prop_assert_eq!(matches!(classify(&text), Inbound::Protocol(_)), expected, "{}", text);
        agentwire_protocol::fuzz::classify(text.as_bytes());
    }
}

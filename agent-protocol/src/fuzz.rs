//! Fuzzing entry points (shared by the `protocol_classify` fuzz target and the corpus replay
//! test). Not part of the public API.

use crate::{
    camel_case_to_kebab_case, classify as classify_text, classify_server, connection_id,
    parse_agent_path, split_target, CallTable, ClientMessage, Inbound, ServerInbound, StateFrame,
};
use std::time::Instant;

/// Runs every parser on `data` and checks the invariants; panics on a violation.
pub fn classify_input(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_client(text);
    check_server(text);
    check_routing(text);
}

/// Alias kept for the fuzz target.
pub fn classify(data: &[u8]) {
    classify_input(data);
}

/// An independent oracle: the spec's rules applied to a `serde_json::Value` tree.
fn oracle_is_protocol(text: &str) -> Option<bool> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let Some(obj) = value.as_object() else {
        return Some(false);
    };
    let ty = obj.get("type").and_then(|t| t.as_str());
    Some(match ty {
        Some("cf_agent_state") => obj.contains_key("state"),
        Some("rpc") => {
            obj.get("id").is_some_and(|v| v.is_string())
                && obj.get("method").is_some_and(|v| v.is_string())
                && obj.get("args").is_some_and(|v| v.is_array())
        }
        _ => false,
    })
}

fn check_client(text: &str) {
    let inbound = classify_text(text);
    if let Some(expected) = oracle_is_protocol(text) {
        assert_eq!(
            expected,
            matches!(inbound, Inbound::Protocol(_)),
            "classification disagrees with the spec rules for {text:?}"
        );
    }
    match inbound {
        Inbound::Application(t) => assert!(std::ptr::eq(t, text)),
        Inbound::Protocol(msg) => {
            let encoded = msg.encode();
            let again = classify_text(encoded.as_str());
            assert_eq!(
                again,
                Inbound::Protocol(msg.clone()),
                "re-encoding changed {text:?}"
            );
            if let ClientMessage::State { state } = &msg {
                let frame = StateFrame::from_raw_json(state);
                assert_eq!(frame.state_json(), state.get());
                assert_eq!(
                    classify_text(frame.as_str()),
                    Inbound::Protocol(msg.clone()),
                    "state frame does not classify back"
                );
            }
            if let ClientMessage::Rpc(req) = &msg {
                assert!(req.args().is_array());
            }
        }
    }
}

fn check_server(text: &str) {
    match classify_server(text) {
        ServerInbound::Application(t) => assert!(std::ptr::eq(t, text)),
        ServerInbound::Protocol(msg) => {
            let encoded = msg.encode();
            assert_eq!(
                classify_server(encoded.as_str()),
                ServerInbound::Protocol(msg.clone()),
                "re-encoding changed {text:?}"
            );
            if let crate::ServerMessage::Rpc(resp) = msg {
                let mut calls = CallTable::new();
                let now = Instant::now();
                let _ = calls.start_with_id(
                    resp.id().clone(),
                    "m",
                    crate::RawJson::from(serde_json::Value::Array(Vec::new())),
                    crate::CallOptions::regular(),
                    now,
                );
                let terminal = resp.is_terminal();
                calls.handle_input(resp);
                assert!(calls.poll_event().is_some());
                assert!(calls.poll_event().is_none());
                assert_eq!(calls.is_empty(), terminal);
                calls.handle_eof();
                let failed = std::iter::from_fn(|| calls.poll_event()).count();
                assert_eq!(failed, usize::from(!terminal));
            }
        }
    }
}

fn check_routing(text: &str) {
    let (path, query) = split_target(text);
    if let Some(p) = parse_agent_path(path, "agents") {
        assert!(!p.namespace.is_empty() && !p.instance.is_empty());
        assert!(p.rest.iter().all(|s| !s.is_empty()));
    }
    let _ = parse_agent_path(path, "api/agents");
    if let Some(q) = query {
        let _ = connection_id(q);
    }
    let kebab = camel_case_to_kebab_case(text);
    assert!(
        !kebab.bytes().any(|b| b.is_ascii_uppercase()),
        "kebab-case output {kebab:?} has an ascii upper-case letter"
    );
}

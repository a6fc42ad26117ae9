//! The Cloudflare Agents wire protocol: typed messages, classification, routing.
//!
//! This crate speaks the JSON protocol of the unmodified Cloudflare `AgentClient` /
//! `useAgent` (npm `agents` 0.32) over WebSocket text frames, exactly as the reference server
//! puts it on the wire. It does no I/O: the runtime (and Rust clients) feed it frame text and
//! send what it encodes.
//!
//! # Quick start
//!
//! ```
//! use agentwire_protocol::{classify, ClientMessage, Inbound, RpcResponse, StateFrame};
//!
//! // A frame from a client: a call.
//! let frame = r#"{"args":[2,3],"id":"3f6c","method":"add","type":"rpc"}"#;
//! let Inbound::Protocol(ClientMessage::Rpc(call)) = classify(frame) else { panic!() };
//! let (a, b): (i64, i64) = call.args_as().unwrap();
//! let reply = RpcResponse::done(call.id().clone(), &(a + b)).unwrap();
//! assert_eq!(
//!     reply.encode(),
//!     r#"{"done":true,"id":"3f6c","result":5,"success":true,"type":"rpc"}"#
//! );
//!
//! // A client's setState: relay it to every other connection, serialised once.
//! let frame = r#"{"state":{"count":41},"type":"cf_agent_state"}"#;
//! let Inbound::Protocol(ClientMessage::State { state }) = classify(frame) else { panic!() };
//! let broadcast = StateFrame::from_raw_json(&state);
//! assert_eq!(broadcast.as_str(), frame);
//! let _for_each_connection = broadcast.to_utf8_bytes(); // a reference-count increment
//!
//! // Anything else belongs to the application's onMessage, untouched.
//! assert_eq!(classify("hello agent"), Inbound::Application("hello agent"));
//! let numeric_id = r#"{"type":"rpc","id":7,"method":"add","args":[1,1]}"#;
//! assert_eq!(classify(numeric_id), Inbound::Application(numeric_id));
//! ```
//!
//! # Messages
//!
//! [`ClientMessage`] (client → server: [`ClientMessage::State`], [`ClientMessage::Rpc`]) and
//! [`ServerMessage`] (server → client: identity with `stateFollows`, state, state error, MCP
//! servers, [`RpcResponse`]). Payloads the protocol only relays (state, RPC arguments and
//! results) are [`RawJson`]: validated JSON text, never re-parsed unless asked for.
//!
//! Every message has `to_json()` / `encode()`; `encode` returns
//! [`Utf8Bytes`] for a WebSocket text frame without another copy.
//! Keys are written in the order the reference implementation writes them, and key presence
//! follows it exactly: a void RPC result has no `result` key, error replies have neither
//! `result` nor `done`, `stateFollows` appears only when `true`.
//!
//! # Classification
//!
//! [`classify`] decides, for a text frame received by the server, whether it is a protocol
//! frame ([`Inbound::Protocol`]) or application data for `onMessage`
//! ([`Inbound::Application`], the text itself). It never fails: malformed JSON, non-objects,
//! unknown `type`s and almost-protocol frames (`rpc` with a numeric `id` or without `args`)
//! are application data, as upstream. [`classify_server`] is the client-side counterpart.
//! Binary frames are always application data and never reach this crate.
//!
//! # State broadcast
//!
//! [`StateFrame`] holds a complete `{"state":…,"type":"cf_agent_state"}` frame, built once
//! from raw JSON ([`StateFrame::from_raw`]) or a serialisable value
//! ([`StateFrame::from_serialize`]) and cloned (cheaply) per connection.
//! [`connect_sequence`] gives the identity → state → MCP frames a connection receives first.
//!
//! # Routing
//!
//! [`parse_agent_path`] matches `/{prefix}/{namespace}/{instance}[/{rest}]` with the upstream
//! rules (prefix may contain `/`, empty segments dropped, instance name raw, extra path passed
//! through), [`camel_case_to_kebab_case`] maps class names to namespaces
//! (`MyHTTPAgent` → `my-h-t-t-p-agent`), [`connection_id`] reads the `_pk` connection id
//! and [`split_target`] splits a request target (an empty `?` counts as no query).
//!
//! # Call table
//!
//! [`CallTable`] is the Sans-IO client side of RPC: id allocation, chunks, completion, errors,
//! timeouts, and rejection of every pending call when the connection is lost.
//! [`is_terminal_close`] and [`reconnect_delay`] give the reference client's close and
//! reconnect policy.
//!
//! # Exact texts
//!
//! | where | text | item |
//! | --- | --- | --- |
//! | `rpc` error, unknown method | `Method {method} does not exist` | [`texts::method_does_not_exist`] |
//! | `rpc` error, method not callable | `Method {method} is not callable` | [`texts::method_not_callable`] |
//! | `cf_agent_state_error`, `rpc` error | `Connection is readonly` | [`texts::CONNECTION_READONLY`] |
//! | `cf_agent_state_error` | `State update rejected` | [`texts::STATE_UPDATE_REJECTED`] |
//! | `rpc` error, non-`Error` thrown | `Unknown error occurred` | [`texts::UNKNOWN_ERROR`] |
//! | client rejection on close | `Connection closed` | [`texts::CONNECTION_CLOSED`] |
//! | client timeout | `RPC call to {method} timed out after {ms}ms` | [`texts::rpc_timed_out`] |
//! | HTTP 400, unknown namespace | `Invalid request` | [`texts::INVALID_REQUEST`] |
//! | HTTP 404, no handler | `Not implemented` | [`texts::NOT_IMPLEMENTED`] |
//!
//! Errors of this crate's own constructors ([`ProtocolError`]) are lowercase and never go on
//! the wire.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod calls;
mod classify;
mod error;
mod message;
mod raw;
mod routing;
mod session;
mod state;
pub mod texts;

#[doc(hidden)]
pub mod fuzz;

pub use calls::{
    is_terminal_close, reconnect_delay, CallEvent, CallOptions, CallTable, DEFAULT_CALL_TIMEOUT,
};
pub use classify::{classify, classify_server, Inbound, ServerInbound};
pub use error::ProtocolError;
pub use message::{
    types, ClientMessage, McpServer, McpServerState, McpServers, RpcId, RpcRequest, RpcResponse,
    ServerMessage,
};
pub use raw::RawJson;
pub use routing::{
    camel_case_to_kebab_case, connection_id, form_decode, parse_agent_path, query_param,
    split_target, AgentPath, CONNECTION_ID_PARAM, DEFAULT_PREFIX,
};
pub use session::{
    connect_state_frame, encode_chunk, encode_reply, CallOutcome, ServerSession, SessionEvent,
    SessionOptions,
};
pub use state::{connect_sequence, StateFrame, EMPTY_MCP_SERVERS_FRAME};

/// Re-exported so that users can name the encoded-frame type without another dependency.
pub use agentwire_utf8::Utf8Bytes;

//! [`ServerSession`]: the server side of one protocol connection.

use crate::message::{RpcId, RpcResponse, ServerMessage};
use crate::raw::RawJson;
use crate::{classify, ClientMessage, Inbound};
use agentwire_utf8::Utf8Bytes;
use serde_json::value::RawValue;
use std::collections::VecDeque;

/// How a connection takes part in the protocol (decided when it connects; changeable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Its state updates are refused (`cf_agent_state_error` `Connection is readonly`).
    pub readonly: bool,
    /// It receives protocol frames (identity, state, MCP servers); `false`: none at all.
    pub protocol_messages: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            readonly: false,
            protocol_messages: true,
        }
    }
}

impl SessionOptions {
    /// Options with these flags.
    pub fn new(readonly: bool, protocol_messages: bool) -> Self {
        Self {
            readonly,
            protocol_messages,
        }
    }
}

/// What an inbound frame asks of the server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// An RPC call; answer with [`ServerSession::reply`] (stream chunks first with
    /// [`ServerSession::chunk`]). Its arguments are the elements of the `args` array, each as
    /// the JSON text the client sent.
    Call {
        /// The call id, echoed in every frame of the answer.
        id: RpcId,
        /// The method name.
        method: String,
        /// The arguments.
        args: Vec<RawJson>,
    },
    /// A client's `cf_agent_state` from a connection that is not readonly: validate, persist,
    /// broadcast, or refuse with [`ServerSession::state_rejected`].
    StateUpdate {
        /// The proposed state, as sent.
        state: RawJson,
    },
    /// A text frame that is not a protocol message.
    Message(Utf8Bytes),
}

/// The outcome of a call, as [`ServerSession::reply`] encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallOutcome {
    /// Success, with the result's JSON text (`None`: no `result` key).
    Done(Option<RawJson>),
    /// No such method (a member of the reference's base class is reported "not callable"
    /// instead, as the reference does).
    NoSuchMethod,
    /// The method exists but is not callable.
    NotCallable,
    /// The call failed with this message.
    Failed(String),
}

/// The server side of one protocol connection, Sans-IO: the counterpart of
/// [`CallTable`](crate::CallTable).
///
/// Text frames go in ([`handle_text`](Self::handle_text)); session events
/// ([`poll_event`](ServerSession::poll_event): a call, a state update, an application
/// message) and frames to send ([`poll_transmit`](ServerSession::poll_transmit)) come out. The
/// session owns the connect sequence, the classification of inbound frames, the encoding of
/// replies, errors and stream chunks, and the readonly and no-protocol rules; the server
/// around it formats nothing.
///
/// ```
/// use agentwire_protocol::{CallOutcome, RawJson, ServerSession, SessionEvent, SessionOptions};
///
/// let mut s = ServerSession::new(SessionOptions::default());
/// let state = RawJson::from_string(r#"{"count":0}"#.into()).unwrap();
/// s.connect("room", "counter-agent", Some(&state));
/// assert_eq!(s.poll_transmit().unwrap(), r#"{"type":"cf_agent_identity","name":"room","agent":"counter-agent","stateFollows":true}"#);
/// assert_eq!(s.poll_transmit().unwrap(), r#"{"type":"cf_agent_state","state":{"count":0}}"#);
/// assert!(s.poll_transmit().unwrap().contains("cf_agent_mcp_servers"));
///
/// s.handle_text(r#"{"type":"rpc","id":"1","method":"add","args":[1,2]}"#.into());
/// let Some(SessionEvent::Call { id, method, args }) = s.poll_event() else { panic!() };
/// assert_eq!((method.as_str(), args.len()), ("add", 2));
/// s.reply(id, &method, CallOutcome::Done(Some(RawJson::from_string("3".into()).unwrap())));
/// let reply: serde_json::Value = serde_json::from_str(&s.poll_transmit().unwrap()).unwrap();
/// assert_eq!(reply, serde_json::json!({"type":"rpc","id":"1","success":true,"result":3,"done":true}));
/// ```
#[derive(Debug, Default)]
pub struct ServerSession {
    opts: SessionOptions,
    events: VecDeque<SessionEvent>,
    transmits: VecDeque<Utf8Bytes>,
}

impl ServerSession {
    /// A session with these options.
    pub fn new(opts: SessionOptions) -> Self {
        Self {
            opts,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        }
    }

    /// The options.
    pub fn options(&self) -> SessionOptions {
        self.opts
    }

    /// Changes the options (e.g. a connection made readonly later).
    pub fn set_options(&mut self, opts: SessionOptions) {
        self.opts = opts;
    }

    /// Queues the connect sequence: identity (`name`, `agent` namespace), the state if there
    /// is one, and the empty MCP servers frame — nothing for a no-protocol connection.
    pub fn connect(&mut self, name: &str, agent: &str, state: Option<&RawJson>) {
        if !self.opts.protocol_messages {
            return;
        }
        self.transmits
            .push_back(ServerMessage::identity(name, agent, state.is_some()).encode());
        if let Some(state) = state {
            self.transmits
                .push_back(connect_state_frame(state.as_raw()));
        }
        self.transmits
            .push_back(Utf8Bytes::from_static(crate::EMPTY_MCP_SERVERS_FRAME));
    }

    /// Queues the error frame for connection tags that break the limits; the server then
    /// closes with `1011` (as the reference's session setup does).
    pub fn invalid_tags(&mut self) {
        self.transmits.push_back(Utf8Bytes::from_static(
            r#"{"error":"invalid connection tags"}"#,
        ));
    }

    /// Classifies one inbound text frame. A readonly connection's state update is answered
    /// here (no event); a call whose `args` are not an array of JSON values is answered with
    /// an error (no event: a call never runs with arguments it did not get).
    pub fn handle_text(&mut self, text: Utf8Bytes) {
        let ev = match classify(&text) {
            Inbound::Protocol(ClientMessage::State { state }) => {
                if self.opts.readonly {
                    self.transmits
                        .push_back(ServerMessage::state_error_readonly().encode());
                    return;
                }
                SessionEvent::StateUpdate { state }
            }
            Inbound::Protocol(ClientMessage::Rpc(req)) => {
                let (id, method, args) = req.into_parts();
                match split_args(&args) {
                    Ok(args) => SessionEvent::Call { id, method, args },
                    Err(e) => {
                        self.reply(
                            id,
                            &method,
                            CallOutcome::Failed(format!("Invalid arguments: {e}")),
                        );
                        return;
                    }
                }
            }
            _ => SessionEvent::Message(text.clone()),
        };
        self.events.push_back(ev);
    }

    /// The next session event.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// The next frame to send on this connection.
    pub fn poll_transmit(&mut self) -> Option<Utf8Bytes> {
        self.transmits.pop_front()
    }

    /// Queues the final frame of a call.
    pub fn reply(&mut self, id: RpcId, method: &str, outcome: CallOutcome) {
        self.transmits.push_back(encode_reply(id, method, outcome));
    }

    /// Queues one stream chunk (`done:false`) of a call.
    pub fn chunk(&mut self, id: RpcId, chunk: Option<RawJson>) {
        self.transmits
            .push_back(RpcResponse::Chunk { id, result: chunk }.encode());
    }

    /// Queues `cf_agent_state_error` `State update rejected` (a state update that failed
    /// validation or could not be stored).
    pub fn state_rejected(&mut self) {
        self.transmits
            .push_back(ServerMessage::state_error_rejected().encode());
    }
}

/// The final frame of a call (for answers sent without the session at hand, e.g. from
/// another task): see [`ServerSession::reply`].
pub fn encode_reply(id: RpcId, method: &str, outcome: CallOutcome) -> Utf8Bytes {
    match outcome {
        CallOutcome::Done(result) => RpcResponse::Done { id, result },
        // A name of the reference base class (`setState`, `onConnect`, `toString`, …) exists
        // there as a function that is not callable, so the reference answers "not callable".
        CallOutcome::NoSuchMethod if crate::texts::is_reference_agent_member(method) => {
            RpcResponse::method_not_callable(id, method)
        }
        CallOutcome::NoSuchMethod => RpcResponse::method_does_not_exist(id, method),
        CallOutcome::NotCallable => RpcResponse::method_not_callable(id, method),
        CallOutcome::Failed(msg) => RpcResponse::error(id, msg),
    }
    .encode()
}

/// A stream chunk frame (see [`ServerSession::chunk`]).
pub fn encode_chunk(id: RpcId, chunk: Option<RawJson>) -> Utf8Bytes {
    RpcResponse::Chunk { id, result: chunk }.encode()
}

/// `{"type":"cf_agent_state","state":…}`: the state frame of the connect sequence (the
/// reference server's key order there differs from its broadcasts, see
/// [`StateFrame`](crate::StateFrame)).
pub fn connect_state_frame(state: &RawValue) -> Utf8Bytes {
    connect_state_text(state.get())
}

pub(crate) fn connect_state_text(json: &str) -> Utf8Bytes {
    const HEAD: &str = "{\"type\":\"cf_agent_state\",\"state\":";
    let mut s = String::with_capacity(HEAD.len() + json.len() + 1);
    s.push_str(HEAD);
    s.push_str(json);
    s.push('}');
    Utf8Bytes::from(s)
}

/// Splits a call's `args` array into its elements, kept as JSON text.
fn split_args(args: &RawJson) -> Result<Vec<RawJson>, serde_json::Error> {
    let items: Vec<Box<RawValue>> = serde_json::from_str(args.get())?;
    Ok(items.into_iter().map(RawJson::from_raw).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> RawJson {
        RawJson::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn no_protocol_connections_get_no_connect_frames() {
        let mut s = ServerSession::new(SessionOptions::new(false, false));
        s.connect("n", "a", Some(&raw("1")));
        assert!(s.poll_transmit().is_none());
        let mut s = ServerSession::new(SessionOptions::default());
        s.connect("n", "a", None);
        assert_eq!(
            s.poll_transmit().unwrap(),
            r#"{"type":"cf_agent_identity","name":"n","agent":"a"}"#
        );
        assert_eq!(s.poll_transmit().unwrap(), crate::EMPTY_MCP_SERVERS_FRAME);
        assert!(s.poll_transmit().is_none());
    }

    #[test]
    fn readonly_state_updates_are_answered_not_delivered() {
        let mut s = ServerSession::new(SessionOptions::new(true, true));
        s.handle_text(r#"{"type":"cf_agent_state","state":{"a":1}}"#.into());
        assert!(s.poll_event().is_none());
        assert_eq!(
            s.poll_transmit().unwrap(),
            ServerMessage::state_error_readonly().encode()
        );
        s.set_options(SessionOptions::default());
        s.handle_text(r#"{"type":"cf_agent_state","state":{"a":1}}"#.into());
        assert_eq!(
            s.poll_event(),
            Some(SessionEvent::StateUpdate {
                state: raw(r#"{"a":1}"#)
            })
        );
    }

    #[test]
    fn frames_are_classified_in_order() {
        let mut s = ServerSession::new(SessionOptions::default());
        s.handle_text("hello".into());
        s.handle_text(r#"{"type":"rpc","id":"x","method":"m","args":[1,"two",{"3":[]}]}"#.into());
        assert_eq!(s.poll_event(), Some(SessionEvent::Message("hello".into())));
        let Some(SessionEvent::Call { id, method, args }) = s.poll_event() else {
            panic!("not a call")
        };
        assert_eq!((id.as_ref(), method.as_str()), ("x", "m"));
        let args: Vec<&str> = args.iter().map(|a| a.get()).collect();
        assert_eq!(args, ["1", "\"two\"", "{\"3\":[]}"]);
        s.chunk(id.clone(), Some(raw("1")));
        s.reply(id.clone(), "m", CallOutcome::Failed("no".into()));
        s.reply(id.clone(), "setState", CallOutcome::NoSuchMethod);
        s.reply(id, "zzz", CallOutcome::NoSuchMethod);
        let out: Vec<Utf8Bytes> = std::iter::from_fn(|| s.poll_transmit()).collect();
        let json = |t: &Utf8Bytes| serde_json::from_str::<serde_json::Value>(t).unwrap();
        assert_eq!(
            json(&out[0]),
            serde_json::json!({"type":"rpc","id":"x","success":true,"result":1,"done":false})
        );
        assert_eq!(
            json(&out[1]),
            serde_json::json!({"type":"rpc","id":"x","success":false,"error":"no"})
        );
        assert!(out[2].contains("is not callable"), "{out:?}");
        assert!(out[3].contains("does not exist"), "{out:?}");
    }
}

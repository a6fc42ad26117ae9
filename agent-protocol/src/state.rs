//! [`StateFrame`]: a state broadcast serialised once, sent to any number of connections.

use crate::raw::RawJson;
use agentwire_utf8::Utf8Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

const HEAD: &str = "{\"state\":";
const TAIL: &str = ",\"type\":\"cf_agent_state\"}";

/// A complete `{"state":S,"type":"cf_agent_state"}` frame, encoded once.
///
/// Cloning is a reference-count increment, so relaying one state update to N connections costs
/// one serialisation and N clones. The key order is the one the reference server uses for
/// broadcasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFrame {
    frame: Utf8Bytes,
}

impl StateFrame {
    /// Builds the frame around already-encoded state JSON (for example the `state` of a
    /// [`ClientMessage::State`](crate::ClientMessage::State) being relayed). No parsing.
    pub fn from_raw(state: &RawValue) -> Self {
        let json = state.get();
        let mut frame = String::with_capacity(HEAD.len() + json.len() + TAIL.len());
        frame.push_str(HEAD);
        frame.push_str(json);
        frame.push_str(TAIL);
        Self {
            frame: Utf8Bytes::from(frame),
        }
    }

    /// Builds the frame around a [`RawJson`].
    pub fn from_raw_json(state: &RawJson) -> Self {
        Self::from_raw(state.as_raw())
    }

    /// Serialises `state` straight into the frame (one pass, no intermediate string).
    pub fn from_serialize<T: Serialize + ?Sized>(state: &T) -> Result<Self, serde_json::Error> {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(HEAD.as_bytes());
        serde_json::to_writer(&mut buf, state)?;
        buf.extend_from_slice(TAIL.as_bytes());
        // serde_json writes UTF-8 only.
        let frame = String::from_utf8(buf).map_err(|_| {
            <serde_json::Error as serde::ser::Error>::custom("serialiser produced invalid utf-8")
        })?;
        Ok(Self {
            frame: Utf8Bytes::from(frame),
        })
    }

    /// The state JSON inside the frame.
    pub fn state_json(&self) -> &str {
        let s = self.frame.as_str();
        &s[HEAD.len()..s.len() - TAIL.len()]
    }

    /// The whole frame text.
    pub fn as_str(&self) -> &str {
        self.frame.as_str()
    }

    /// The whole frame, shared.
    pub fn as_utf8_bytes(&self) -> &Utf8Bytes {
        &self.frame
    }

    /// The whole frame (cheap clone of the shared buffer).
    pub fn to_utf8_bytes(&self) -> Utf8Bytes {
        self.frame.clone()
    }

    /// Gives back the frame.
    pub fn into_utf8_bytes(self) -> Utf8Bytes {
        self.frame
    }
}

impl From<StateFrame> for Utf8Bytes {
    fn from(f: StateFrame) -> Self {
        f.frame
    }
}

/// The empty `cf_agent_mcp_servers` frame, byte for byte as the reference server sends it.
pub const EMPTY_MCP_SERVERS_FRAME: &str = r#"{"mcp":{"prompts":[],"resources":[],"servers":{},"tools":[]},"type":"cf_agent_mcp_servers"}"#;

/// The protocol frames of the connect sequence, in order: identity (with `stateFollows: true`
/// exactly when `state` is given), the state frame if any, then the MCP servers frame (`None`:
/// the empty form). The runtime sends them before anything else on the connection and before
/// handling any inbound frame; connections that opted out of protocol messages get none.
///
/// ```
/// use agentwire_protocol::{connect_sequence, StateFrame};
/// let state = StateFrame::from_serialize(&serde_json::json!({"count": 0})).unwrap();
/// let frames = connect_sequence("golden", "counter-agent", Some(&state), None);
/// assert_eq!(frames.len(), 3);
/// assert_eq!(
///     frames[0],
///     r#"{"type":"cf_agent_identity","name":"golden","agent":"counter-agent","stateFollows":true}"#
/// );
/// assert_eq!(connect_sequence("golden", "counter-agent", None, None).len(), 2);
/// ```
pub fn connect_sequence(
    name: &str,
    agent: &str,
    state: Option<&StateFrame>,
    mcp: Option<&crate::McpServers>,
) -> Vec<Utf8Bytes> {
    let mut frames = Vec::with_capacity(3);
    frames.push(crate::ServerMessage::identity(name, agent, state.is_some()).encode());
    if let Some(state) = state {
        // the connect-time form (`type` first), not the broadcast form
        frames.push(crate::session::connect_state_text(state.state_json()));
    }
    frames.push(match mcp {
        None => Utf8Bytes::from_static(EMPTY_MCP_SERVERS_FRAME),
        Some(mcp) => crate::ServerMessage::McpServers { mcp: mcp.clone() }.encode(),
    });
    frames
}

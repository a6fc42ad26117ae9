//! Typed protocol messages, both directions, and their wire encoding.

use crate::error::ProtocolError;
use crate::raw::RawJson;
use agentwire_utf8::Utf8Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;

/// The `type` of every frame this crate knows, as it appears on the wire.
pub mod types {
    /// `cf_agent_identity` (server → client, connect sequence).
    pub const IDENTITY: &str = "cf_agent_identity";
    /// `cf_agent_state` (both directions).
    pub const STATE: &str = "cf_agent_state";
    /// `cf_agent_state_error` (server → client).
    pub const STATE_ERROR: &str = "cf_agent_state_error";
    /// `cf_agent_mcp_servers` (server → client).
    pub const MCP_SERVERS: &str = "cf_agent_mcp_servers";
    /// `rpc` (requests client → server, responses server → client).
    pub const RPC: &str = "rpc";
}

/// The correlation id of an RPC call (a string on the wire; the reference client uses UUID v4).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RpcId(String);

impl RpcId {
    /// Wraps an id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id text.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Gives back the id text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for RpcId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for RpcId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for RpcId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RpcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RpcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for RpcId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for RpcId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl PartialEq<str> for RpcId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RpcId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Serialize for RpcId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RpcId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

/// An `rpc` request (client → server):
/// `{"args":[…],"id":"…","method":"…","type":"rpc"}`.
///
/// `args` is always a JSON array (checked by every constructor and by
/// [`classify`](crate::classify)); it is kept as text until the method's handler asks for typed
/// arguments with [`args_as`](Self::args_as).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcRequest {
    id: RpcId,
    method: String,
    args: RawJson,
}

impl RpcRequest {
    /// A request whose `args` are already JSON text; fails unless `args` is an array.
    pub fn new(
        id: impl Into<RpcId>,
        method: impl Into<String>,
        args: RawJson,
    ) -> Result<Self, ProtocolError> {
        if !args.is_array() {
            return Err(ProtocolError::ArgsNotArray);
        }
        Ok(Self {
            id: id.into(),
            method: method.into(),
            args,
        })
    }

    /// A request from positional JSON values.
    pub fn from_values(
        id: impl Into<RpcId>,
        method: impl Into<String>,
        args: &[serde_json::Value],
    ) -> Self {
        let args = RawJson::from(serde_json::Value::Array(args.to_vec()));
        Self {
            id: id.into(),
            method: method.into(),
            args,
        }
    }

    /// A request whose `args` are the serialisation of `args`, which must serialise to an
    /// array (a tuple, a `Vec`, a slice…).
    pub fn from_serialize<T: Serialize + ?Sized>(
        id: impl Into<RpcId>,
        method: impl Into<String>,
        args: &T,
    ) -> Result<Self, ProtocolError> {
        let args = RawJson::from_serialize(args).map_err(|e| ProtocolError::Json(e.to_string()))?;
        Self::new(id, method, args)
    }

    /// Built by the classifier, which has already checked that `args` is an array.
    pub(crate) fn from_parts_unchecked(id: RpcId, method: String, args: RawJson) -> Self {
        Self { id, method, args }
    }

    /// The call id.
    pub fn id(&self) -> &RpcId {
        &self.id
    }

    /// The method name.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The positional arguments, as the JSON text of an array.
    pub fn args(&self) -> &RawJson {
        &self.args
    }

    /// Parses the arguments into a typed value: a tuple such as `(i64, i64)` for `[2,3]`, a
    /// `Vec<T>`, or any type that deserialises from a JSON array.
    pub fn args_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.args.deserialize()
    }

    /// The arguments as a vector of [`serde_json::Value`]s.
    pub fn args_values(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        self.args.deserialize()
    }

    /// Splits into `(id, method, args)`.
    pub fn into_parts(self) -> (RpcId, String, RawJson) {
        (self.id, self.method, self.args)
    }

    /// The wire text, in the key order the reference client uses.
    pub fn to_json(&self) -> String {
        to_json(&RpcRequestWire {
            args: &self.args,
            id: &self.id,
            method: &self.method,
            ty: types::RPC,
        })
    }
}

/// An `rpc` response (server → client).
///
/// | variant | wire |
/// | --- | --- |
/// | `Chunk` | `{"done":false,"id":…,"result":…,"success":true,"type":"rpc"}` |
/// | `Done` | `{"done":true,"id":…,"result":…,"success":true,"type":"rpc"}` |
/// | `Error` | `{"error":…,"id":…,"success":false,"type":"rpc"}` |
///
/// `result: None` means *no `result` key* (a method that returned nothing, a stream ended
/// without a value); the reference client then resolves with `undefined`. This is different
/// from `Some(null)`. Error frames never carry `result` or `done`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcResponse {
    /// One chunk of a streaming call (`done:false`); more frames follow.
    Chunk {
        /// Call id.
        id: RpcId,
        /// The chunk (absent key when `None`).
        result: Option<RawJson>,
    },
    /// Successful completion (`done:true`); terminal.
    Done {
        /// Call id.
        id: RpcId,
        /// The result (absent key when `None`).
        result: Option<RawJson>,
    },
    /// Failure (`success:false`); terminal.
    Error {
        /// Call id.
        id: RpcId,
        /// The error message (see [`texts`](crate::texts) for the fixed ones).
        error: String,
    },
}

impl RpcResponse {
    /// A successful completion with `result` serialised.
    pub fn done<T: Serialize + ?Sized>(
        id: impl Into<RpcId>,
        result: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::Done {
            id: id.into(),
            result: Some(RawJson::from_serialize(result)?),
        })
    }

    /// A successful completion without a `result` key (a void method).
    pub fn done_void(id: impl Into<RpcId>) -> Self {
        Self::Done {
            id: id.into(),
            result: None,
        }
    }

    /// A streaming chunk with `result` serialised.
    pub fn chunk<T: Serialize + ?Sized>(
        id: impl Into<RpcId>,
        result: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::Chunk {
            id: id.into(),
            result: Some(RawJson::from_serialize(result)?),
        })
    }

    /// A failure with `error` as the message.
    pub fn error(id: impl Into<RpcId>, error: impl Into<String>) -> Self {
        Self::Error {
            id: id.into(),
            error: error.into(),
        }
    }

    /// `Method {method} does not exist`.
    pub fn method_does_not_exist(id: impl Into<RpcId>, method: &str) -> Self {
        Self::error(id, crate::texts::method_does_not_exist(method))
    }

    /// `Method {method} is not callable`.
    pub fn method_not_callable(id: impl Into<RpcId>, method: &str) -> Self {
        Self::error(id, crate::texts::method_not_callable(method))
    }

    /// The call id.
    pub fn id(&self) -> &RpcId {
        match self {
            Self::Chunk { id, .. } | Self::Done { id, .. } | Self::Error { id, .. } => id,
        }
    }

    /// Whether this frame ends the call (`Done` or `Error`).
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Chunk { .. })
    }

    /// The wire text, in the key order the reference server uses.
    pub fn to_json(&self) -> String {
        match self {
            Self::Chunk { id, result } | Self::Done { id, result } => to_json(&RpcSuccessWire {
                done: matches!(self, Self::Done { .. }),
                id,
                result: result.as_ref(),
                success: true,
                ty: types::RPC,
            }),
            Self::Error { id, error } => to_json(&RpcErrorWire {
                error,
                id,
                success: false,
                ty: types::RPC,
            }),
        }
    }

    /// The wire frame.
    pub fn encode(&self) -> Utf8Bytes {
        Utf8Bytes::from(self.to_json())
    }
}

/// A frame the client sends that the server handles itself (everything else goes to the
/// application's `onMessage`; see [`classify`](crate::classify)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientMessage {
    /// `{"state":S,"type":"cf_agent_state"}`: the client's `setState(S)`.
    State {
        /// The proposed state, any JSON value.
        state: RawJson,
    },
    /// `{"args":[…],"id":…,"method":…,"type":"rpc"}`.
    Rpc(RpcRequest),
}

impl ClientMessage {
    /// The wire text, byte for byte as the reference client writes it.
    pub fn to_json(&self) -> String {
        match self {
            Self::State { state } => to_json(&StateWire {
                state,
                ty: types::STATE,
            }),
            Self::Rpc(req) => req.to_json(),
        }
    }

    /// The wire frame.
    pub fn encode(&self) -> Utf8Bytes {
        Utf8Bytes::from(self.to_json())
    }
}

impl From<RpcRequest> for ClientMessage {
    fn from(req: RpcRequest) -> Self {
        Self::Rpc(req)
    }
}

/// A frame the server sends as part of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMessage {
    /// `{"type":"cf_agent_identity","name":…,"agent":…[,"stateFollows":true]}`.
    Identity {
        /// Instance name exactly as routed (not percent-decoded).
        name: String,
        /// Kebab-case class name ([`camel_case_to_kebab_case`](crate::camel_case_to_kebab_case)).
        agent: String,
        /// `true` iff a `cf_agent_state` frame follows immediately. `false` omits the key
        /// (the reference server never sends `"stateFollows":false`).
        state_follows: bool,
    },
    /// `{"state":S,"type":"cf_agent_state"}`. To send one state to many connections build a
    /// [`StateFrame`](crate::StateFrame) once instead.
    State {
        /// The full agent state.
        state: RawJson,
    },
    /// `{"type":"cf_agent_state_error","error":…}`, only to the connection whose update was
    /// refused. See [`texts::CONNECTION_READONLY`](crate::texts::CONNECTION_READONLY) and
    /// [`texts::STATE_UPDATE_REJECTED`](crate::texts::STATE_UPDATE_REJECTED).
    StateError {
        /// The reason.
        error: String,
    },
    /// `{"mcp":{…},"type":"cf_agent_mcp_servers"}`.
    McpServers {
        /// The MCP client connections of the agent.
        mcp: McpServers,
    },
    /// An RPC response.
    Rpc(RpcResponse),
}

impl ServerMessage {
    /// An identity frame.
    pub fn identity(
        name: impl Into<String>,
        agent: impl Into<String>,
        state_follows: bool,
    ) -> Self {
        Self::Identity {
            name: name.into(),
            agent: agent.into(),
            state_follows,
        }
    }

    /// `cf_agent_state_error` with `Connection is readonly`.
    pub fn state_error_readonly() -> Self {
        Self::StateError {
            error: crate::texts::CONNECTION_READONLY.to_owned(),
        }
    }

    /// `cf_agent_state_error` with `State update rejected`.
    pub fn state_error_rejected() -> Self {
        Self::StateError {
            error: crate::texts::STATE_UPDATE_REJECTED.to_owned(),
        }
    }

    /// `cf_agent_mcp_servers` with no servers (what a runtime without MCP client support sends).
    pub fn empty_mcp_servers() -> Self {
        Self::McpServers {
            mcp: McpServers::default(),
        }
    }

    /// The wire `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Identity { .. } => types::IDENTITY,
            Self::State { .. } => types::STATE,
            Self::StateError { .. } => types::STATE_ERROR,
            Self::McpServers { .. } => types::MCP_SERVERS,
            Self::Rpc(_) => types::RPC,
        }
    }

    /// The wire text, with the key order of the reference server.
    pub fn to_json(&self) -> String {
        match self {
            Self::Identity {
                name,
                agent,
                state_follows,
            } => to_json(&IdentityWire {
                ty: types::IDENTITY,
                name,
                agent,
                state_follows: state_follows.then_some(true),
            }),
            Self::State { state } => to_json(&StateWire {
                state,
                ty: types::STATE,
            }),
            Self::StateError { error } => to_json(&StateErrorWire {
                ty: types::STATE_ERROR,
                error,
            }),
            Self::McpServers { mcp } => to_json(&McpWire {
                mcp,
                ty: types::MCP_SERVERS,
            }),
            Self::Rpc(resp) => resp.to_json(),
        }
    }

    /// The wire frame, ready for a WebSocket text message without another copy.
    pub fn encode(&self) -> Utf8Bytes {
        Utf8Bytes::from(self.to_json())
    }
}

impl From<RpcResponse> for ServerMessage {
    fn from(resp: RpcResponse) -> Self {
        Self::Rpc(resp)
    }
}

/// The `mcp` object of `cf_agent_mcp_servers`. `Default` is the empty form
/// `{"prompts":[],"resources":[],"servers":{},"tools":[]}`.
///
/// MCP descriptors and capabilities are relayed as [`RawJson`], byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct McpServers {
    /// MCP prompt descriptors, each extended with `serverId`.
    #[serde(default)]
    pub prompts: Vec<RawJson>,
    /// MCP resource descriptors, each extended with `serverId`.
    #[serde(default)]
    pub resources: Vec<RawJson>,
    /// Server id → connection.
    #[serde(default)]
    pub servers: BTreeMap<String, McpServer>,
    /// MCP tool descriptors, each extended with `serverId`.
    #[serde(default)]
    pub tools: Vec<RawJson>,
}

/// One MCP server connection of the agent. `None` fields are sent as `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpServer {
    /// Display name.
    pub name: String,
    /// Server URL.
    pub server_url: String,
    /// OAuth authorisation URL while authenticating.
    #[serde(default)]
    pub auth_url: Option<String>,
    /// Connection state.
    pub state: McpServerState,
    /// Last error.
    #[serde(default)]
    pub error: Option<String>,
    /// Server instructions.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Server capabilities.
    #[serde(default)]
    pub capabilities: Option<RawJson>,
}

/// `state` of an [`McpServer`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum McpServerState {
    /// `authenticating`
    Authenticating,
    /// `connecting`
    Connecting,
    /// `connected`
    Connected,
    /// `discovering`
    Discovering,
    /// `ready`
    Ready,
    /// `failed`
    Failed,
    /// `not-connected`
    NotConnected,
    /// Any other value, kept verbatim.
    Other(String),
}

impl McpServerState {
    /// The wire text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Authenticating => "authenticating",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Discovering => "discovering",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::NotConnected => "not-connected",
            Self::Other(s) => s,
        }
    }

    /// Parses the wire text (never fails: unknown values become [`Other`](Self::Other)).
    pub fn parse(s: &str) -> Self {
        match s {
            "authenticating" => Self::Authenticating,
            "connecting" => Self::Connecting,
            "connected" => Self::Connected,
            "discovering" => Self::Discovering,
            "ready" => Self::Ready,
            "failed" => Self::Failed,
            "not-connected" => Self::NotConnected,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl Serialize for McpServerState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for McpServerState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(Self::parse(&s))
    }
}

// ---- wire shapes (field order = key order on the wire) ----

#[derive(Serialize)]
struct RpcRequestWire<'a> {
    args: &'a RawJson,
    id: &'a RpcId,
    method: &'a str,
    #[serde(rename = "type")]
    ty: &'static str,
}

#[derive(Serialize)]
struct RpcSuccessWire<'a> {
    done: bool,
    id: &'a RpcId,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawJson>,
    success: bool,
    #[serde(rename = "type")]
    ty: &'static str,
}

#[derive(Serialize)]
struct RpcErrorWire<'a> {
    error: &'a str,
    id: &'a RpcId,
    success: bool,
    #[serde(rename = "type")]
    ty: &'static str,
}

#[derive(Serialize)]
struct StateWire<'a> {
    state: &'a RawJson,
    #[serde(rename = "type")]
    ty: &'static str,
}

#[derive(Serialize)]
struct IdentityWire<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    name: &'a str,
    agent: &'a str,
    #[serde(rename = "stateFollows", skip_serializing_if = "Option::is_none")]
    state_follows: Option<bool>,
}

#[derive(Serialize)]
struct StateErrorWire<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    error: &'a str,
}

#[derive(Serialize)]
struct McpWire<'a> {
    mcp: &'a McpServers,
    #[serde(rename = "type")]
    ty: &'static str,
}

/// Serialises one of the wire shapes above. They hold only strings, booleans, raw JSON text and
/// `serde_json::Value`s with string keys, which always serialise; the fallback is unreachable.
fn to_json<T: Serialize>(wire: &T) -> String {
    serde_json::to_string(wire).unwrap_or_default()
}

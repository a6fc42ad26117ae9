//! Classification of inbound text frames: protocol frame or application data.

use crate::message::{
    types, ClientMessage, McpServers, RpcId, RpcRequest, RpcResponse, ServerMessage,
};
use crate::raw::RawJson;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// What the server does with one inbound text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inbound<'a> {
    /// A state update or an RPC call, handled by the runtime.
    Protocol(ClientMessage),
    /// Everything else, for the application's `onMessage`, untouched: the frame text itself.
    Application(&'a str),
}

impl<'a> Inbound<'a> {
    /// The protocol message, if this is one.
    pub fn protocol(&self) -> Option<&ClientMessage> {
        match self {
            Self::Protocol(m) => Some(m),
            Self::Application(_) => None,
        }
    }

    /// The application text, if this is application data.
    pub fn application(&self) -> Option<&'a str> {
        match self {
            Self::Protocol(_) => None,
            Self::Application(t) => Some(t),
        }
    }
}

/// What a client does with one inbound text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerInbound<'a> {
    /// A protocol frame.
    Protocol(ServerMessage),
    /// Anything else (application broadcasts, unknown `type`s, non-JSON text, malformed
    /// protocol frames): the reference client ignores it; a Rust client may hand it to the
    /// application.
    Application(&'a str),
}

impl<'a> ServerInbound<'a> {
    /// The protocol message, if this is one.
    pub fn protocol(&self) -> Option<&ServerMessage> {
        match self {
            Self::Protocol(m) => Some(m),
            Self::Application(_) => None,
        }
    }

    /// The application text, if this is not a protocol frame.
    pub fn application(&self) -> Option<&'a str> {
        match self {
            Self::Protocol(_) => None,
            Self::Application(t) => Some(t),
        }
    }
}

/// Classifies a text frame received by the server, exactly as the reference server does.
///
/// 1. Not valid JSON, or not a JSON object → [`Inbound::Application`].
/// 2. `type` is the string `"cf_agent_state"` and the object has a `state` key (any value,
///    `null` included) → [`ClientMessage::State`].
/// 3. `type` is `"rpc"`, `id` and `method` are strings and `args` is an array →
///    [`ClientMessage::Rpc`].
/// 4. Anything else (numeric `id`, missing `args`, unknown `type`, …) →
///    [`Inbound::Application`].
///
/// Duplicate keys resolve like `JSON.parse`: the last one wins. Never fails and never panics.
///
/// One known difference: an `rpc` frame whose `id` or `method` contains an unpaired UTF-16
/// surrogate escape (`"\ud800"`) cannot be represented as a Rust string and is classified as
/// application data (the reference server would treat it as a call).
pub fn classify(text: &str) -> Inbound<'_> {
    match decode_client(text) {
        Some(msg) => Inbound::Protocol(msg),
        None => Inbound::Application(text),
    }
}

/// Classifies a text frame received by a client (the counterpart of [`classify`] for Rust
/// clients). Protocol frames are recognised by `type` and must have the shapes the reference
/// server sends; everything else is [`ServerInbound::Application`]. Never panics.
///
/// Leniency, as in the reference client: an `rpc` frame with `success:true` and no `done` key
/// is read as [`RpcResponse::Done`]; an error frame without a string `error` gets the JSON text
/// of its `error` value (or `""` when absent) as message.
pub fn classify_server(text: &str) -> ServerInbound<'_> {
    match decode_server(text) {
        Some(msg) => ServerInbound::Protocol(msg),
        None => ServerInbound::Application(text),
    }
}

fn decode_client(text: &str) -> Option<ClientMessage> {
    let f = Fields::parse(text)?;
    let ty = f.ty?;
    if str_eq(ty, types::STATE) {
        let state = f.state?;
        return Some(ClientMessage::State {
            state: RawJson::from_raw_ref(state),
        });
    }
    if str_eq(ty, types::RPC) {
        let id = json_str(f.id?)?;
        let method = json_str(f.method?)?;
        let args = f.args?;
        if !args.get().starts_with('[') {
            return None;
        }
        return Some(ClientMessage::Rpc(RpcRequest::from_parts_unchecked(
            RpcId::new(id.into_owned()),
            method.into_owned(),
            RawJson::from_raw_ref(args),
        )));
    }
    None
}

fn decode_server(text: &str) -> Option<ServerMessage> {
    let f = Fields::parse(text)?;
    let ty = json_str(f.ty?)?;
    match ty.as_ref() {
        types::IDENTITY => {
            let name = json_str(f.name?)?.into_owned();
            let agent = json_str(f.agent?)?.into_owned();
            let state_follows = match f.state_follows {
                None => false,
                Some(v) => json_bool(v)?,
            };
            Some(ServerMessage::Identity {
                name,
                agent,
                state_follows,
            })
        }
        types::STATE => Some(ServerMessage::State {
            state: RawJson::from_raw_ref(f.state?),
        }),
        types::STATE_ERROR => Some(ServerMessage::StateError {
            error: json_str(f.error?)?.into_owned(),
        }),
        types::MCP_SERVERS => {
            let mcp = f.mcp?;
            if !mcp.get().starts_with('{') {
                return None;
            }
            let mcp: McpServers = serde_json::from_str(mcp.get()).ok()?;
            Some(ServerMessage::McpServers { mcp })
        }
        types::RPC => {
            let id = RpcId::new(json_str(f.id?)?.into_owned());
            let success = json_bool(f.success?)?;
            if !success {
                let error = match f.error {
                    None => String::new(),
                    Some(e) => match json_str(e) {
                        Some(s) => s.into_owned(),
                        None => e.get().to_owned(),
                    },
                };
                return Some(ServerMessage::Rpc(RpcResponse::Error { id, error }));
            }
            let result = f.result.map(RawJson::from_raw_ref);
            let done = match f.done {
                None => true,
                Some(v) => json_bool(v)?,
            };
            Some(ServerMessage::Rpc(if done {
                RpcResponse::Done { id, result }
            } else {
                RpcResponse::Chunk { id, result }
            }))
        }
        _ => None,
    }
}

/// Whether `raw` is a JSON string equal to `expected`.
fn str_eq(raw: &RawValue, expected: &str) -> bool {
    let text = raw.get();
    // Fast path: the unescaped form.
    if text.len() == expected.len() + 2
        && text.starts_with('"')
        && text.ends_with('"')
        && &text[1..text.len() - 1] == expected
    {
        return true;
    }
    text.contains('\\') && json_str(raw).is_some_and(|s| s == expected)
}

/// The string value of `raw`, or `None` when it is not a (representable) JSON string.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<CowStr<'_>>(raw.get())
        .ok()
        .map(|s| s.0)
}

fn json_bool(raw: &RawValue) -> Option<bool> {
    match raw.get() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// The top-level keys the protocol looks at, each as raw JSON; later duplicates overwrite
/// earlier ones (`JSON.parse` semantics).
#[derive(Default)]
struct Fields<'a> {
    ty: Option<&'a RawValue>,
    state: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    method: Option<&'a RawValue>,
    args: Option<&'a RawValue>,
    name: Option<&'a RawValue>,
    agent: Option<&'a RawValue>,
    state_follows: Option<&'a RawValue>,
    error: Option<&'a RawValue>,
    mcp: Option<&'a RawValue>,
    done: Option<&'a RawValue>,
    result: Option<&'a RawValue>,
    success: Option<&'a RawValue>,
}

impl<'a> Fields<'a> {
    /// `None` when `text` is not exactly one JSON object.
    fn parse(text: &'a str) -> Option<Self> {
        // Cheap rejection of the common non-JSON case; JSON allows only these four
        // whitespace bytes before the value.
        let first = text
            .bytes()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
        if first != b'{' {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = de.deserialize_map(FieldsVisitor).ok()?;
        de.end().ok()?;
        Some(fields)
    }
}

#[derive(Clone, Copy)]
enum Key {
    Type,
    State,
    Id,
    Method,
    Args,
    Name,
    Agent,
    StateFollows,
    Error,
    Mcp,
    Done,
    Result,
    Success,
    Other,
}

impl Key {
    fn from_bytes(b: &[u8]) -> Self {
        match b {
            b"type" => Self::Type,
            b"state" => Self::State,
            b"id" => Self::Id,
            b"method" => Self::Method,
            b"args" => Self::Args,
            b"name" => Self::Name,
            b"agent" => Self::Agent,
            b"stateFollows" => Self::StateFollows,
            b"error" => Self::Error,
            b"mcp" => Self::Mcp,
            b"done" => Self::Done,
            b"result" => Self::Result,
            b"success" => Self::Success,
            _ => Self::Other,
        }
    }
}

/// Reads a key as bytes: serde_json then accepts escapes of unpaired surrogates (WTF-8), which
/// `JSON.parse` accepts too; such keys are never one the protocol looks at.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_bytes(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Key, E> {
        Ok(Key::from_bytes(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key::from_bytes(v.as_bytes()))
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let slot = match key {
                Key::Type => &mut f.ty,
                Key::State => &mut f.state,
                Key::Id => &mut f.id,
                Key::Method => &mut f.method,
                Key::Args => &mut f.args,
                Key::Name => &mut f.name,
                Key::Agent => &mut f.agent,
                Key::StateFollows => &mut f.state_follows,
                Key::Error => &mut f.error,
                Key::Mcp => &mut f.mcp,
                Key::Done => &mut f.done,
                Key::Result => &mut f.result,
                Key::Success => &mut f.success,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<&'de RawValue>()?);
        }
        Ok(f)
    }
}

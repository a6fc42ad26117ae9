//! `ChatRoom`: a chat room with join / leave notices and presence built from per-connection
//! state, at `/agents/chat-room/{room}?username=NAME`.
//!
//! The WebSocket speaks JSON text frames (no protocol frames: the room has no agent state).
//! On connect the new member gets `{"type":"history","messages":[…]}` (the room's last
//! [`HISTORY`] messages, kept in the instance's SQLite database) and the member list
//! `{"type":"presence","users":[{"id","user","joinedAt"}…]}` (ordered by arrival); the others
//! get only the change, `{"type":"join","id":…,"user":NAME,"joinedAt":MS,"timestamp":MS}`
//! (so a join costs one small frame per member, not the whole list). A member sends either
//! plain text or `{"type":"message","text":…}`; everyone, the sender included, gets
//! `{"type":"message","user":NAME,"text":…,"timestamp":MS}`. `ping` is answered `pong`. When a
//! member leaves the others get `{"type":"leave","id":…,"user":NAME,"timestamp":MS}`.

use crate::{Agent, BoxError, Connection, Context, Message, Reject};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Messages kept per room and sent to a member who joins.
pub const HISTORY: usize = 50;
/// Longest accepted message text, in characters (longer texts are cut).
pub const MAX_TEXT: usize = 2000;
/// Longest user name, in characters.
pub const MAX_NAME: usize = 40;

/// The chat room agent (no agent state; members live in their connections' state).
#[derive(Debug, Default)]
pub struct ChatRoom;

impl ChatRoom {
    /// A fresh agent value.
    pub fn new() -> Self {
        Self
    }
}

/// One chat message, as sent to clients and kept in the history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// The author's name.
    pub user: String,
    /// The text.
    pub text: String,
    /// When the server received it (milliseconds since the Unix epoch).
    pub timestamp: u64,
}

#[derive(Serialize)]
struct Presence {
    id: String,
    user: String,
    #[serde(rename = "joinedAt")]
    joined_at: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn username(conn: &Connection) -> String {
    let q = conn.uri().query().unwrap_or("");
    let name = crate::protocol::query_param(q, "username")
        .or_else(|| crate::protocol::query_param(q, "name"))
        .map(|v| v.trim().chars().take(MAX_NAME).collect::<String>())
        .unwrap_or_default();
    if name.is_empty() {
        "Anonymous".to_owned()
    } else {
        name
    }
}

fn member_name(conn: &Connection) -> Option<String> {
    conn.state()
        .get("username")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn ensure_table(cx: &Context<ChatRoom>) -> rusqlite::Result<()> {
    cx.sql().execute_batch(
        "CREATE TABLE IF NOT EXISTS chat_messages (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             user TEXT NOT NULL,
             text TEXT NOT NULL,
             timestamp INTEGER NOT NULL
         )",
    )
}

fn history(cx: &Context<ChatRoom>) -> rusqlite::Result<Vec<ChatMessage>> {
    let mut stmt = cx
        .sql()
        .prepare("SELECT user, text, timestamp FROM chat_messages ORDER BY id DESC LIMIT ?1")?;
    let mut rows = stmt
        .query_map([HISTORY as i64], |r| {
            Ok(ChatMessage {
                user: r.get(0)?,
                text: r.get(1)?,
                timestamp: r.get::<_, i64>(2)? as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.reverse();
    Ok(rows)
}

fn presence(cx: &Context<ChatRoom>) -> Value {
    let mut users: Vec<Presence> = cx
        .connections()
        .filter_map(|c| {
            let st = c.state();
            Some(Presence {
                id: c.id().to_owned(),
                user: st.get("username")?.as_str()?.to_owned(),
                joined_at: st.get("joinedAt").and_then(Value::as_u64).unwrap_or(0),
            })
        })
        .collect();
    users.sort_by(|a, b| a.joined_at.cmp(&b.joined_at).then(a.id.cmp(&b.id)));
    json!({"type": "presence", "users": users})
}

impl Agent for ChatRoom {
    type State = Value;

    async fn on_start(&mut self, cx: &mut Context<Self>) -> Result<(), BoxError> {
        ensure_table(cx)?;
        Ok(())
    }

    fn connection_protocol_messages(&self, _: &Connection, _: &http::request::Parts) -> bool {
        false
    }

    async fn on_connect(
        &mut self,
        cx: &mut Context<Self>,
        conn: &Connection,
        _req: &http::request::Parts,
    ) -> Result<(), Reject> {
        let user = username(conn);
        let now = now_ms();
        conn.set_state(json!({"username": user, "joinedAt": now}));
        let messages = history(cx).unwrap_or_default();
        let _ = conn.send(json!({"type": "history", "messages": messages}).to_string());
        let _ = conn.send(presence(cx).to_string());
        let join = json!({"type": "join", "id": conn.id(), "user": user, "joinedAt": now, "timestamp": now});
        cx.broadcast(join.to_string(), &[conn.id()]);
        Ok(())
    }

    async fn on_message(
        &mut self,
        cx: &mut Context<Self>,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), BoxError> {
        let Message::Text(t) = msg else {
            return Ok(()); // binary frames are ignored
        };
        let raw = t.as_str();
        if raw == "ping" {
            conn.send("pong")?;
            return Ok(());
        }
        let text = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(o)) => match o.get("text").and_then(Value::as_str) {
                Some(s) if o.get("type").and_then(Value::as_str) == Some("message") => s.to_owned(),
                _ => {
                    let err = json!({"type": "error", "error": "expected {\"type\":\"message\",\"text\":…}"});
                    conn.send(err.to_string())?;
                    return Ok(());
                }
            },
            _ => raw.to_owned(),
        };
        let text: String = text.trim().chars().take(MAX_TEXT).collect();
        if text.is_empty() {
            return Ok(());
        }
        let user = member_name(conn).unwrap_or_else(|| "Anonymous".to_owned());
        let m = ChatMessage {
            user,
            text,
            timestamp: now_ms(),
        };
        cx.sql().execute(
            "INSERT INTO chat_messages (user, text, timestamp) VALUES (?1, ?2, ?3)",
            rusqlite::params![m.user, m.text, m.timestamp as i64],
        )?;
        cx.sql().execute(
            "DELETE FROM chat_messages WHERE id <= (SELECT MAX(id) FROM chat_messages) - ?1",
            [HISTORY as i64],
        )?;
        let frame =
            json!({"type": "message", "user": m.user, "text": m.text, "timestamp": m.timestamp});
        cx.broadcast(frame.to_string(), &[]);
        Ok(())
    }

    async fn on_close(
        &mut self,
        cx: &mut Context<Self>,
        conn: &Connection,
        _code: u16,
        _reason: &str,
        _clean: bool,
    ) -> Result<(), BoxError> {
        // The closed connection is already gone from `cx.connections()`.
        if let Some(user) = member_name(conn) {
            let leave =
                json!({"type": "leave", "id": conn.id(), "user": user, "timestamp": now_ms()});
            cx.broadcast(leave.to_string(), &[]);
        }
        Ok(())
    }
}

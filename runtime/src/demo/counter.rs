//! `CounterAgent`, the test agent of the interop suite (`examples/counter.rs` serves it
//! alone, `agentwire serve` with the other demo agents), at `/agents/counter-agent/{name}`.
//!
//! State `{"count":0}`, writable by clients; callables `increment`, `add`, `echo`, `nothing`,
//! `fail`, `countdown` (streaming), `streamFail`, `disconnect`, `shout` (broadcast), `whoami`,
//! `memo`, `setConnState` and `notExposed`; query flags `?readonly=1`, `?protocol=0` and
//! `?tag=`; HTTP `…/status` (JSON) and `…/sse` (five ticks, resumable with `Last-Event-ID`).

use crate::body::response;
use crate::{
    Agent, BoxError, Call, Connection, Context, HttpRequest, Message, Reply, RpcError, StateSource,
};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Number, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The agent's state. `count` must be a number: anything else fails to deserialise, which
/// rejects the update.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CounterState {
    /// The count (any JSON number; integers stay integers).
    pub count: Number,
}

/// The test contract agent. Its fields are in memory only: they are fresh after every
/// (re)start.
#[derive(Debug, Default)]
pub struct CounterAgent {
    started_at: u64,
    memo_calls: u64,
}

impl CounterAgent {
    /// A fresh agent value (what the server's factory returns for every instance).
    pub fn new() -> Self {
        Self::default()
    }
}

// Frames and bodies are structs so that keys come out in the reference server's order.
#[derive(Serialize)]
struct Typed<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
struct Shout {
    #[serde(rename = "type")]
    ty: &'static str,
    payload: Value,
}

#[derive(Serialize)]
struct Tick<'a> {
    i: u32,
    count: &'a Number,
}

#[derive(Serialize)]
struct WhoAmI {
    id: String,
    tags: Vec<String>,
    readonly: bool,
    protocol: bool,
    state: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Memo {
    started_at: u64,
    in_memory_calls: u64,
}

#[derive(Serialize)]
struct Status<'a> {
    ok: bool,
    agent: &'a str,
    name: &'a str,
    state: Option<&'a CounterState>,
    connections: usize,
    method: &'a str,
}

fn query_flag(conn: &Connection, key: &str) -> Option<String> {
    crate::protocol::query_param(conn.uri().query().unwrap_or(""), key).map(|v| v.into_owned())
}

/// JavaScript-like `a + b` for JSON numbers: integers stay integers.
fn add(a: &Number, b: &Number) -> Number {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        if let Some(s) = x.checked_add(y) {
            return Number::from(s);
        }
    }
    let s = a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
    Number::from_f64(s).unwrap_or_else(|| Number::from(0))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Agent for CounterAgent {
    type State = CounterState;

    fn initial_state(&self) -> Option<CounterState> {
        Some(CounterState {
            count: Number::from(0),
        })
    }

    // Clients may write the state (the type already requires a numeric `count`).
    fn validate_state(_next: &CounterState, _source: StateSource<'_>) -> Result<(), String> {
        Ok(())
    }

    async fn on_start(&mut self, _cx: &mut Context<Self>) -> Result<(), BoxError> {
        self.started_at = now_ms();
        self.memo_calls = 0;
        Ok(())
    }

    fn connection_readonly(&self, conn: &Connection, _req: &http::request::Parts) -> bool {
        query_flag(conn, "readonly").as_deref() == Some("1")
    }

    fn connection_protocol_messages(&self, conn: &Connection, _: &http::request::Parts) -> bool {
        query_flag(conn, "protocol").as_deref() != Some("0")
    }

    fn connection_tags(&self, conn: &Connection, _req: &http::request::Parts) -> Vec<String> {
        query_flag(conn, "tag").into_iter().collect()
    }

    async fn on_message(
        &mut self,
        _cx: &mut Context<Self>,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), BoxError> {
        match msg {
            Message::Text(t) => {
                let echo = Typed {
                    ty: "echo",
                    data: t.as_str(),
                };
                conn.send(serde_json::to_string(&echo)?)?
            }
            Message::Binary(b) => conn.send(b)?,
        }
        Ok(())
    }

    async fn on_call(&mut self, cx: &mut Context<Self>, call: Call) -> Result<Reply, RpcError> {
        match call.method() {
            "increment" => {
                let by: Number = call.arg_or(0, Number::from(1))?;
                let count = add(
                    &cx.state().map_or(Number::from(0), |s| s.count.clone()),
                    &by,
                );
                cx.set_state(CounterState {
                    count: count.clone(),
                })?;
                Reply::json(&count)
            }
            "add" => Reply::json(&add(&call.arg(0)?, &call.arg(1)?)),
            "echo" => Reply::json(&call.arg::<Value>(0)?),
            "nothing" => Ok(Reply::void()),
            "fail" => Err(RpcError::new(call.arg_or(0, "boom".to_owned())?)),
            "countdown" => {
                let stream = call.stream();
                for i in (1..=call.arg_or(0, 3i64)?).rev() {
                    stream.send(&i)?;
                }
                Reply::json("liftoff")
            }
            "streamFail" => {
                call.stream().send("partial")?;
                Err(RpcError::new("stream exploded"))
            }
            "disconnect" => {
                let code: u16 = call.arg_or(0, 1012)?;
                let reason: String = call.arg_or(1, String::new())?;
                let conn = call.connection().clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    conn.close(code, &reason);
                });
                Reply::json(&json!({"closing": true, "code": code}))
            }
            "shout" => {
                let payload: Value = call.arg(0)?;
                let exclude_self: bool = call.arg_or(1, false)?;
                let msg = serde_json::to_string(&Shout {
                    ty: "shout",
                    payload,
                })?;
                let me = [call.connection().id()];
                cx.broadcast(msg, if exclude_self { &me[..] } else { &[] });
                Reply::json(&cx.connections().count())
            }
            "whoami" => {
                let c = call.connection();
                Reply::json(&WhoAmI {
                    id: c.id().to_owned(),
                    tags: c.tags().to_vec(),
                    readonly: c.readonly(),
                    protocol: c.protocol_messages(),
                    state: c.state(),
                })
            }
            "memo" => {
                self.memo_calls += 1;
                Reply::json(&Memo {
                    started_at: self.started_at,
                    in_memory_calls: self.memo_calls,
                })
            }
            "setConnState" => {
                let v: Value = call.arg(0)?;
                call.connection().set_state(v.clone());
                Reply::json(&v)
            }
            "notExposed" => Err(RpcError::NotCallable),
            _ => Err(RpcError::NoSuchMethod),
        }
    }

    async fn on_request(
        &mut self,
        cx: &mut Context<Self>,
        req: HttpRequest,
    ) -> Result<Response<crate::Body>, BoxError> {
        let path = req.uri().path();
        if path.ends_with("/status") {
            return Ok(response::json(&Status {
                ok: true,
                agent: cx.agent_namespace(),
                name: cx.name(),
                state: cx.state(),
                connections: cx.connections().count(),
                method: req.method().as_str(),
            }));
        }
        if path.ends_with("/sse") {
            // A fresh run streams ticks 1..5 then `done`; a client resuming with
            // `Last-Event-ID` gets the ticks it missed from the persisted log, then `done`.
            let resuming = crate::sse::last_event_id(req.headers()).is_some();
            if !resuming {
                cx.sse_reset("ticks")?;
            }
            let resp = cx.sse_subscribe("ticks", req.headers())?;
            if !resuming {
                let count = cx.state().map_or(Number::from(0), |s| s.count.clone());
                for i in 1..=5 {
                    let data = serde_json::to_string(&Tick { i, count: &count })?;
                    cx.sse_publish("ticks", Some("tick"), &data)?;
                }
            }
            cx.sse_send_unlogged("ticks", Some("done"), "bye");
            cx.sse_end("ticks");
            return Ok(resp);
        }
        Ok(response::text(StatusCode::NOT_FOUND, "Not found"))
    }
}

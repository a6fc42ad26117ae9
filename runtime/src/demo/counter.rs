//! `CounterAgent`, the test agent of the interop suite (`examples/counter.rs` serves it
//! alone, `agentwire serve` with the other demo agents), at `/agents/counter-agent/{name}`.
//!
//! State `{"count":0}`, writable by clients; callables `increment`, `add`, `echo`, `nothing`,
//! `fail`, `countdown` (streaming), `slow(ms)` (answers `ms` after waiting that long, without
//! holding the instance), `streamFail`, `disconnect`, `shout` (broadcast), `whoami`,
//! `memo`, `setConnState`, `scheduleIncrement(seconds, by)` (a persisted schedule that runs
//! `increment(by)`), `schedules` and `notExposed`; query flags `?readonly=1`, `?protocol=0` and
//! `?tag=`; HTTP `…/status` (JSON) and `…/sse` (five ticks then `done`, on every request:
//! like the reference's, this route does not resume and ignores `Last-Event-ID`).
//!
//! The state is any JSON object whose `count` is a number, kept as its JSON text
//! ([`CounterState`]): other fields, of any size up to the server's limits and any content
//! `JSON.parse` accepts, are persisted and broadcast intact.

use crate::body::response;
use crate::protocol::RawJson;
use crate::{
    Agent, BoxError, Call, Connection, Context, HttpRequest, Message, Reply, RpcError, StateSource,
};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Number, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The agent's state: a JSON object whose `count` is a number, with any other fields, kept as
/// the JSON text it was set with (so nothing is lost or reformatted: lone surrogate escapes,
/// big integers and deep nesting survive). Anything else fails to deserialise, which rejects
/// the update, as the reference's `validateStateChange` does.
#[derive(Debug, Clone)]
pub struct CounterState {
    raw: RawJson,
    count: Number,
}

impl CounterState {
    /// `{"count":count}`.
    pub fn new(count: Number) -> Self {
        let raw =
            RawJson::from_serialize(&CountOnly { count: &count }).expect("a number serialises");
        Self { raw, count }
    }

    /// The count (any JSON number; integers stay integers).
    pub fn count(&self) -> &Number {
        &self.count
    }

    /// The whole state as its JSON text.
    pub fn raw(&self) -> &RawJson {
        &self.raw
    }
}

#[derive(Serialize, Deserialize)]
struct CountOnly<N> {
    count: N,
}

impl Serialize for CounterState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CounterState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = <RawJson as Deserialize>::deserialize(deserializer)?;
        // An object (serde would also read a struct from an array) with a numeric `count`;
        // the other fields are skipped without being turned into Rust values.
        if !raw.get().starts_with('{') {
            return Err(D::Error::custom("the state must be an object"));
        }
        let CountOnly { count } = raw
            .deserialize::<CountOnly<Number>>()
            .map_err(|e| D::Error::custom(format!("`count` must be a number: {e}")))?;
        Ok(Self { raw, count })
    }
}

/// Most steps of `countdown(n)` (inputs are bounded: a hook's loop runs on the instance).
pub const MAX_COUNTDOWN: i64 = 10_000;

/// Longest wait of `slow(ms)` (a minute).
pub const MAX_SLOW_MS: u64 = 60_000;

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
    payload: RawJson,
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

/// JavaScript-like `a + b` for JSON numbers: integers stay integers; a sum that overflows to
/// an infinity is `None` (JavaScript's `JSON.stringify` writes `Infinity` as `null`).
fn add(a: &Number, b: &Number) -> Option<Number> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        if let Some(s) = x.checked_add(y) {
            return Some(Number::from(s));
        }
    }
    js_number(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))
}

/// A JavaScript number as `JSON.stringify` writes it: integral values below 2^53 without a
/// fraction (`2`, not `2.0`; `-0` as `0`), infinities as `None` (`null`).
fn js_number(x: f64) -> Option<Number> {
    const SAFE: f64 = 9_007_199_254_740_992.0; // 2^53
    if x.fract() == 0.0 && x.abs() <= SAFE {
        // exact: integral and within ±2^53
        return Some(Number::from(x as i64));
    }
    Number::from_f64(x)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Agent for CounterAgent {
    type State = CounterState;

    fn initial_state(&self) -> Option<CounterState> {
        Some(CounterState::new(Number::from(0)))
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
                let current = cx.state().map_or(Number::from(0), |s| s.count.clone());
                // `setState({count: count + by})`: the new state has only `count`.
                let count = add(&current, &by)
                    .ok_or_else(|| RpcError::new("State update rejected: count is not finite"))?;
                cx.set_state(CounterState::new(count.clone()))?;
                Reply::json(&count)
            }
            "add" => Reply::json(&add(&call.arg(0)?, &call.arg(1)?)),
            // The argument as it came, or no `result` at all when there was none.
            "echo" => Ok(call
                .raw_arg(0)
                .cloned()
                .map_or_else(Reply::void, Reply::raw)),
            "nothing" => Ok(Reply::void()),
            "fail" => Err(RpcError::new(call.arg_or(0, "boom".to_owned())?)),
            "countdown" => {
                let n: i64 = call.arg_or(0, 3)?;
                if !(0..=MAX_COUNTDOWN).contains(&n) {
                    return Err(RpcError::new(format!(
                        "countdown takes 0 to {MAX_COUNTDOWN} steps"
                    )));
                }
                let stream = call.stream();
                for i in (1..=n).rev() {
                    // fails once the caller is gone, which ends the loop
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
                let payload = call.raw_arg(0).cloned().unwrap_or_else(RawJson::null);
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
            "scheduleIncrement" => {
                // increment(by) in `seconds` (fractions allowed), as a persisted schedule
                let seconds: f64 = call.arg_or(0, 1.0)?;
                let by: Number = call.arg_or(1, Number::from(1))?;
                if !(0.0..=365.0 * 86_400.0).contains(&seconds) {
                    return Err(RpcError::new("seconds must be between 0 and one year"));
                }
                let when = crate::When::delay(Duration::from_secs_f64(seconds));
                let s = cx.schedule(when, "increment", &by).map_err(RpcError::new)?;
                Reply::json(&s.id)
            }
            "schedules" => Reply::json(&cx.schedules().map_err(RpcError::new)?),
            // Waits `ms` milliseconds as an upstream call would, without holding the instance:
            // the reply is deferred and sent by a task, while other events go on.
            "slow" => {
                let ms: u64 = call.arg_or(0, 1000)?;
                if ms > MAX_SLOW_MS {
                    return Err(RpcError::new(format!("slow takes 0 to {MAX_SLOW_MS} ms")));
                }
                let reply = call.defer();
                cx.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    reply.finish(Reply::json(&ms));
                })?;
                Ok(Reply::deferred())
            }
            "notExposed" => Err(RpcError::NotCallable),
            _ => Err(RpcError::NoSuchMethod),
        }
    }

    async fn on_schedule(
        &mut self,
        cx: &mut Context<Self>,
        schedule: crate::Schedule,
    ) -> Result<(), BoxError> {
        match schedule.method.as_str() {
            "increment" => {
                let by: Number = schedule.payload_as()?;
                let current = cx.state().map_or(Number::from(0), |s| s.count.clone());
                let count = add(&current, &by).ok_or("count is not finite")?;
                // persisted, then broadcast to every connection, as the callable does
                cx.set_state(CounterState::new(count))?;
                Ok(())
            }
            other => Err(format!("no scheduled method {other}").into()),
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
            // Five ticks, then `done`, on every request. Like the reference's, this route does
            // not resume: `Last-Event-ID` is ignored (resuming is a feature of routes that opt
            // in, as the TaskRunner's does with `Context::sse_subscribe`).
            let (resp, tx) = crate::sse::response();
            let count = cx.state().map_or(Number::from(0), |s| s.count.clone());
            for i in 1..=5u32 {
                let data = serde_json::to_string(&Tick { i, count: &count })?;
                let _ = tx.send_event(Some(u64::from(i)), Some("tick"), &data);
            }
            let _ = tx.send_event(None, Some("done"), "bye");
            return Ok(resp);
        }
        Ok(response::text(StatusCode::NOT_FOUND, "Not found"))
    }
}

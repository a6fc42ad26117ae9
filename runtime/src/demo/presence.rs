//! `Presence`: how many tabs are connected, and a paced streaming call, at
//! `/agents/presence/{name}`.
//!
//! Every demo page keeps one socket here. Whenever one opens or closes, every socket gets
//! `{"type":"presence","connections":N}` (plain JSON text: the agent has no state and sends no
//! protocol frames). Callable `countdown(n, ms)` streams `n, n-1, …, 1` as RPC chunks
//! `ms` apart, then the result `"liftoff"` (`n` at most [`MAX_COUNTDOWN`], `ms` at most
//! [`MAX_STEP_MS`]). Like every hook it runs inside the instance, one event at a time, so
//! the instance is busy meanwhile: presence updates of other tabs wait for it (the model of
//! a Durable Object, made visible).

use crate::{Agent, Call, Connection, Context, Reject, Reply, RpcError};
use serde_json::{json, Value};
use std::time::Duration;

/// Largest `n` of `countdown`.
pub const MAX_COUNTDOWN: i64 = 20;
/// Longest pause between two chunks of `countdown`, in milliseconds.
pub const MAX_STEP_MS: u64 = 1000;

/// The presence agent (no state).
#[derive(Debug, Default)]
pub struct Presence;

impl Presence {
    /// A fresh agent value.
    pub fn new() -> Self {
        Self
    }
}

fn announce(cx: &Context<Presence>) {
    let n = cx.connections().count();
    cx.broadcast(
        json!({"type": "presence", "connections": n}).to_string(),
        &[],
    );
}

impl Agent for Presence {
    type State = Value;

    fn connection_protocol_messages(&self, _: &Connection, _: &http::request::Parts) -> bool {
        false
    }

    async fn on_connect(
        &mut self,
        cx: &mut Context<Self>,
        _conn: &Connection,
        _req: &http::request::Parts,
    ) -> Result<(), Reject> {
        announce(cx);
        Ok(())
    }

    async fn on_call(&mut self, _cx: &mut Context<Self>, call: Call) -> Result<Reply, RpcError> {
        match call.method() {
            "countdown" => {
                let n: i64 = call.arg_or(0, 5)?;
                let ms: u64 = call.arg_or(1, 300)?;
                if !(0..=MAX_COUNTDOWN).contains(&n) || ms > MAX_STEP_MS {
                    return Err(RpcError::new(format!(
                        "countdown(n, ms) takes n ≤ {MAX_COUNTDOWN} and ms ≤ {MAX_STEP_MS}"
                    )));
                }
                let stream = call.stream();
                for i in (1..=n).rev() {
                    stream.send(&i)?;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Reply::json("liftoff")
            }
            _ => Err(RpcError::NoSuchMethod),
        }
    }

    async fn on_close(
        &mut self,
        cx: &mut Context<Self>,
        _conn: &Connection,
        _code: u16,
        _reason: &str,
        _clean: bool,
    ) -> Result<(), crate::BoxError> {
        // The closed connection is already gone from `cx.connections()`.
        announce(cx);
        Ok(())
    }
}

//! `TaskRunner`: tasks over REST, their output over SSE, at `/agents/task-runner/{name}/tasks`.
//!
//! * `POST …/tasks` with a JSON body `{"prompt":"…"}` (or the prompt as plain text) starts a
//!   task in the background and answers `201`
//!   `{"id":N,"status":"running","tokens":K,"events":"…/tasks/N/events"}`.
//! * `GET …/tasks` lists the tasks; `GET …/tasks/{id}` answers
//!   `{"id","prompt","status":"running"|"done"|"interrupted","tokens","emitted","output","createdAt"}`.
//! * `GET …/tasks/{id}/events` streams the output as SSE: one `token` event per token, with
//!   ids `1..=K` and data `{"token":"…"}`, then a `done` event (no id) and the end of the
//!   response. The tokens produced so far are replayed from the task's persisted log (after
//!   `Last-Event-ID: n` only those after `n`), then new ones follow live as they are produced;
//!   when nothing is missing of a finished task (`n >= K`) the answer is `204`, which stops
//!   `EventSource` and `agentwire tail` from reconnecting.
//!
//! The work is real background work of the instance: a task is an interval schedule
//! ([`Context::schedule_every`], every [`TaskRunner::token_delay`]) that asks a simulated
//! upstream for the next token — as a model streaming its answer would produce it — and
//! appends it to the task's SSE log, committed before it is sent. The log is also the task's
//! progress, so a token is never produced twice. A `kill -9` loses nothing that was produced:
//! after the restart the schedule runs again and the task continues where it was; a running
//! task whose schedule is gone is marked `interrupted`, never silently lost.

use crate::body::response;
use crate::sse;
use crate::{Agent, Body, BoxError, Context, HttpRequest, RequestExt, Schedule};
use http::{Method, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest prompt kept, in characters (longer prompts are cut).
pub const MAX_PROMPT: usize = 300;
/// Tasks kept per instance (older ones are deleted when a new one is created).
pub const MAX_TASKS: usize = 1000;
/// The default time between two tokens.
pub const DEFAULT_TOKEN_DELAY: Duration = Duration::from_millis(60);

/// The task runner agent (no agent state; tasks live in the instance's SQLite database).
#[derive(Debug, Clone)]
pub struct TaskRunner {
    delay: Duration,
}

impl Default for TaskRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskRunner {
    /// A runner producing one token every [`DEFAULT_TOKEN_DELAY`].
    pub fn new() -> Self {
        Self::with_token_delay(DEFAULT_TOKEN_DELAY)
    }

    /// A runner producing one token every `delay` (at least 1 ms).
    pub fn with_token_delay(delay: Duration) -> Self {
        Self {
            delay: delay.max(Duration::from_millis(1)),
        }
    }

    /// The time between two tokens.
    pub fn token_delay(&self) -> Duration {
        self.delay
    }
}

/// The output of task `id` for `prompt`, token by token (concatenated, they form the text).
pub fn task_tokens(id: u64, prompt: &str) -> Vec<String> {
    let words = prompt.split_whitespace().count();
    let text = format!(
        "Task {id} received the prompt \"{prompt}\" ({words} word{s}). No model runs on this \
         server, so the answer is generated deterministically, one token at a time, to show \
         the streaming path: every token is a Server-Sent Event with an id, and a client that \
         reconnects with Last-Event-ID receives only the tokens it missed, then the end.",
        s = if words == 1 { "" } else { "s" },
    );
    text.split_whitespace()
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            }
        })
        .collect()
}

struct Task {
    id: u64,
    prompt: String,
    created_ms: u64,
    status: String,
    schedule: Option<String>,
    tokens: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskStatus<'a> {
    id: u64,
    prompt: &'a str,
    status: &'a str,
    tokens: usize,
    emitted: usize,
    output: String,
    created_at: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn error(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = response::json(&json!({ "error": msg }));
    *r.status_mut() = status;
    r
}

fn ensure_table(cx: &Context<TaskRunner>) -> rusqlite::Result<()> {
    cx.sql().execute_batch(
        "CREATE TABLE IF NOT EXISTS demo_task_runs (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             prompt TEXT NOT NULL,
             created_ms INTEGER NOT NULL,
             status TEXT NOT NULL,
             schedule_id TEXT
         )",
    )
}

/// The SSE stream (and log) of a task's output.
fn stream_of(id: u64) -> String {
    format!("task-{id}")
}

fn load(cx: &Context<TaskRunner>, id: u64) -> rusqlite::Result<Option<Task>> {
    let mut stmt = cx.sql().prepare(
        "SELECT prompt, created_ms, status, schedule_id FROM demo_task_runs WHERE id = ?1",
    )?;
    let mut rows = stmt.query([id as i64])?;
    Ok(match rows.next()? {
        Some(r) => {
            let prompt: String = r.get(0)?;
            Some(Task {
                id,
                tokens: task_tokens(id, &prompt),
                prompt,
                created_ms: r.get::<_, i64>(1)? as u64,
                status: r.get(2)?,
                schedule: r.get(3)?,
            })
        }
        None => None,
    })
}

fn set_status(cx: &Context<TaskRunner>, id: u64, status: &str) -> rusqlite::Result<()> {
    cx.sql().execute(
        "UPDATE demo_task_runs SET status = ?2 WHERE id = ?1",
        rusqlite::params![id as i64, status],
    )?;
    Ok(())
}

/// Tokens produced so far: the task's persisted log is its progress.
fn emitted(cx: &Context<TaskRunner>, task: &Task) -> Result<usize, BoxError> {
    Ok((cx.sse_last_id(&stream_of(task.id))? as usize).min(task.tokens.len()))
}

fn status_of<'a>(cx: &Context<TaskRunner>, task: &'a Task) -> Result<TaskStatus<'a>, BoxError> {
    let emitted = emitted(cx, task)?;
    Ok(TaskStatus {
        id: task.id,
        prompt: &task.prompt,
        status: &task.status,
        tokens: task.tokens.len(),
        emitted,
        output: task.tokens[..emitted].concat(),
        created_at: task.created_ms,
    })
}

/// The simulated upstream: the next token of the task's answer, as a model would stream it.
fn upstream_next(task: &Task, index: usize) -> Option<&str> {
    task.tokens.get(index).map(String::as_str)
}

/// One step of a running task: the next token, appended to its log (committed) and sent to
/// live subscribers; at the end, `done` and the schedule cancelled.
fn step(cx: &mut Context<TaskRunner>, id: u64) -> Result<(), BoxError> {
    let Some(task) = load(cx, id)? else {
        return Ok(()); // forgotten (MAX_TASKS): the caller cancels the schedule
    };
    let stream = stream_of(id);
    let next = emitted(cx, &task)?;
    if task.status == "running" {
        if let Some(token) = upstream_next(&task, next) {
            let data = json!({ "token": token }).to_string();
            cx.sse_publish(&stream, Some("token"), &data)?;
        }
    }
    if task.status != "running" || next + 1 >= task.tokens.len() {
        if task.status == "running" {
            set_status(cx, id, "done")?;
        }
        if let Some(s) = &task.schedule {
            cx.cancel_schedule(s)?;
        }
        let done = json!({ "id": id, "tokens": task.tokens.len() }).to_string();
        cx.sse_send_unlogged(&stream, Some("done"), &done);
        cx.sse_end(&stream);
    }
    Ok(())
}

fn prompt_of(body: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8")?;
    let prompt = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => match o.get("prompt") {
            Some(Value::String(p)) => p.clone(),
            _ => return Err("expected {\"prompt\":\"…\"}"),
        },
        Ok(Value::String(p)) => p,
        _ => text.to_owned(),
    };
    let prompt: String = prompt
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_PROMPT)
        .collect();
    if prompt.is_empty() {
        return Err("the prompt is empty");
    }
    Ok(prompt)
}

impl Agent for TaskRunner {
    type State = Value;

    async fn on_start(&mut self, cx: &mut Context<Self>) -> Result<(), BoxError> {
        ensure_table(cx)?;
        // a running task whose schedule is gone cannot continue: say so
        let live: Vec<String> = cx.schedules()?.into_iter().map(|s| s.id).collect();
        let orphans: Vec<(i64, Option<String>)> = {
            let mut stmt = cx
                .sql()
                .prepare("SELECT id, schedule_id FROM demo_task_runs WHERE status = 'running'")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (id, sched) in orphans {
            if !sched.is_some_and(|s| live.contains(&s)) {
                tracing::warn!(task = id, "task interrupted: its schedule is gone");
                set_status(cx, id as u64, "interrupted")?;
            }
        }
        Ok(())
    }

    async fn on_schedule(&mut self, cx: &mut Context<Self>, s: Schedule) -> Result<(), BoxError> {
        match s.method.as_str() {
            "taskStep" => {
                let id: u64 = s.payload_as()?;
                if load(cx, id)?.is_none() {
                    cx.cancel_schedule(&s.id)?;
                    return Ok(());
                }
                step(cx, id)
            }
            other => Err(format!("no scheduled method {other}").into()),
        }
    }

    async fn on_request(
        &mut self,
        cx: &mut Context<Self>,
        mut req: HttpRequest,
    ) -> Result<Response<Body>, BoxError> {
        // The segments after `/{prefix}/{namespace}/{name}`.
        let path = req.uri().path().to_owned();
        let rest = super::rest_of(&path, cx.agent_namespace());
        let method = req.method().clone();
        match rest.as_slice() {
            ["tasks"] if method == Method::POST => {
                let body = req.bytes().await?; // at most `Limits::max_request_body`, else 413
                let prompt = match prompt_of(&body) {
                    Ok(p) => p,
                    Err(e) => return Ok(error(StatusCode::BAD_REQUEST, e)),
                };
                cx.sql().execute(
                    "INSERT INTO demo_task_runs (prompt, created_ms, status) VALUES (?1, ?2, 'running')",
                    rusqlite::params![prompt, now_ms() as i64],
                )?;
                let id = cx.sql().last_insert_rowid() as u64;
                // the work: one token per interval, in the background, surviving restarts
                let sched = cx.schedule_every(self.delay, "taskStep", &id)?;
                cx.sql().execute(
                    "UPDATE demo_task_runs SET schedule_id = ?2 WHERE id = ?1",
                    rusqlite::params![id as i64, sched.id],
                )?;
                // bounded storage: the oldest tasks beyond MAX_TASKS are forgotten (a running
                // one among them stops at its next step)
                let old = id as i64 - MAX_TASKS as i64;
                if old > 0 {
                    cx.sql()
                        .execute("DELETE FROM demo_task_runs WHERE id <= ?1", [old])?;
                    cx.sse_reset(&stream_of(old as u64))?;
                }
                let tokens = task_tokens(id, &prompt).len();
                let mut r = response::json(&json!({
                    "id": id,
                    "status": "running",
                    "tokens": tokens,
                    "events": format!("{}/{id}/events", path.trim_end_matches('/')),
                }));
                *r.status_mut() = StatusCode::CREATED;
                Ok(r)
            }
            ["tasks"] if method == Method::GET => {
                let ids: Vec<u64> = {
                    let mut stmt = cx
                        .sql()
                        .prepare("SELECT id FROM demo_task_runs ORDER BY id DESC LIMIT 100")?;
                    let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
                    rows.map(|r| r.map(|v| v as u64))
                        .collect::<rusqlite::Result<_>>()?
                };
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(t) = load(cx, id)? {
                        out.push(json!({"id": t.id, "prompt": t.prompt, "status": t.status}));
                    }
                }
                Ok(response::json(&out))
            }
            ["tasks", id, tail @ ..] if method == Method::GET && tail.len() <= 1 => {
                let task = match id.parse::<u64>() {
                    Ok(n) => load(cx, n)?,
                    Err(_) => None,
                };
                let Some(task) = task else {
                    return Ok(error(StatusCode::NOT_FOUND, "no such task"));
                };
                match tail {
                    [] => Ok(response::json(&status_of(cx, &task)?)),
                    ["events"] => {
                        let after = sse::last_event_id(req.headers()).unwrap_or(0);
                        let finished = task.status != "running";
                        let stream = stream_of(task.id);
                        if finished && after >= cx.sse_last_id(&stream)? {
                            let mut r = Response::new(Body::empty());
                            *r.status_mut() = StatusCode::NO_CONTENT;
                            return Ok(r);
                        }
                        // what was produced (from the log), then live tokens as they come
                        let resp = cx.sse_subscribe_after(&stream, after)?;
                        if finished {
                            let done = json!({ "id": task.id, "tokens": task.tokens.len() });
                            cx.sse_send_unlogged(&stream, Some("done"), &done.to_string());
                            cx.sse_end(&stream);
                        }
                        Ok(resp)
                    }
                    _ => Ok(error(StatusCode::NOT_FOUND, "not found")),
                }
            }
            ["tasks", ..] => Ok(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")),
            _ => Ok(error(StatusCode::NOT_FOUND, "not found")),
        }
    }
}

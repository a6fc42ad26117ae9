//! `TaskRunner`: tasks over REST, their output over SSE, at `/agents/task-runner/{name}/tasks`.
//!
//! * `POST …/tasks` with a JSON body `{"prompt":"…"}` (or the prompt as plain text) answers
//!   `201` `{"id":N,"status":"running","tokens":K,"events":"…/tasks/N/events"}`.
//! * `GET …/tasks` lists the tasks; `GET …/tasks/{id}` answers
//!   `{"id","prompt","status":"running"|"done","tokens","emitted","output","createdAt"}`.
//! * `GET …/tasks/{id}/events` streams the output as SSE: one `token` event per token, with
//!   ids `1..=K` and data `{"token":"…"}`, then a `done` event (no id) and the end of the
//!   response. With `Last-Event-ID: n` only the tokens after `n` are sent, then `done`; when
//!   nothing is missing (`n >= K`) the answer is `204`, which stops `EventSource` and
//!   `agentwire tail` from reconnecting.
//!
//! No model runs here: a task's output is derived deterministically from its id and prompt,
//! and token `i` is produced [`TaskRunner::token_delay`] × `i` after the task was created.
//! The task (prompt, creation time, token count) is kept in the instance's SQLite database,
//! so status and output survive restarts; what is streaming is the path that matters.

use crate::body::response;
use crate::sse;
use crate::{Agent, Body, BoxError, Context, HttpRequest, RequestExt};
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
    tokens: Vec<String>,
}

impl Task {
    /// Tokens produced by `now_ms`.
    fn emitted(&self, now_ms: u64, delay: Duration) -> usize {
        let elapsed = now_ms.saturating_sub(self.created_ms);
        let n = elapsed / (delay.as_millis() as u64).max(1);
        (n as usize).min(self.tokens.len())
    }
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
        "CREATE TABLE IF NOT EXISTS demo_tasks (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             prompt TEXT NOT NULL,
             created_ms INTEGER NOT NULL
         )",
    )
}

fn load(cx: &Context<TaskRunner>, id: u64) -> rusqlite::Result<Option<Task>> {
    let mut stmt = cx
        .sql()
        .prepare("SELECT prompt, created_ms FROM demo_tasks WHERE id = ?1")?;
    let mut rows = stmt.query([id as i64])?;
    Ok(match rows.next()? {
        Some(r) => {
            let prompt: String = r.get(0)?;
            Some(Task {
                id,
                tokens: task_tokens(id, &prompt),
                prompt,
                created_ms: r.get::<_, i64>(1)? as u64,
            })
        }
        None => None,
    })
}

fn status_of(task: &Task, delay: Duration) -> TaskStatus<'_> {
    let emitted = task.emitted(now_ms(), delay);
    TaskStatus {
        id: task.id,
        prompt: &task.prompt,
        status: if emitted == task.tokens.len() {
            "done"
        } else {
            "running"
        },
        tokens: task.tokens.len(),
        emitted,
        output: task.tokens[..emitted].concat(),
        created_at: task.created_ms,
    }
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

/// Streams `task`'s tokens after `after`, each at its production time, then `done`.
async fn stream(tx: sse::SseSender, task: Task, after: usize, delay: Duration) {
    let step = delay.as_millis() as u64;
    for (i, token) in task.tokens.iter().enumerate().skip(after) {
        let at = task.created_ms + step * (i as u64 + 1);
        let now = now_ms();
        if at > now {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(at - now)) => {}
                _ = tx.closed() => return,
            }
        }
        let data = json!({ "token": token }).to_string();
        if tx
            .send_event(Some(i as u64 + 1), Some("token"), &data)
            .is_err()
        {
            return;
        }
    }
    let done = json!({ "id": task.id, "tokens": task.tokens.len() }).to_string();
    let _ = tx.send_event(None, Some("done"), &done);
}

impl Agent for TaskRunner {
    type State = Value;

    async fn on_start(&mut self, cx: &mut Context<Self>) -> Result<(), BoxError> {
        ensure_table(cx)?;
        Ok(())
    }

    async fn on_request(
        &mut self,
        cx: &mut Context<Self>,
        mut req: HttpRequest,
    ) -> Result<Response<Body>, BoxError> {
        // The segments after `/{prefix}/{namespace}/{name}`.
        let path = req.uri().path().to_owned();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let rest: &[&str] = match segs.iter().position(|s| *s == cx.agent_namespace()) {
            Some(p) if segs.len() >= p + 2 => &segs[p + 2..],
            _ => &[],
        };
        let method = req.method().clone();
        match rest {
            ["tasks"] if method == Method::POST => {
                let body = req.bytes().await?; // at most `Limits::max_request_body`, else 413
                let prompt = match prompt_of(&body) {
                    Ok(p) => p,
                    Err(e) => return Ok(error(StatusCode::BAD_REQUEST, e)),
                };
                cx.sql().execute(
                    "INSERT INTO demo_tasks (prompt, created_ms) VALUES (?1, ?2)",
                    rusqlite::params![prompt, now_ms() as i64],
                )?;
                let id = cx.sql().last_insert_rowid() as u64;
                // bounded storage: the oldest tasks beyond MAX_TASKS are forgotten
                cx.sql().execute(
                    "DELETE FROM demo_tasks WHERE id <= ?1",
                    [id as i64 - MAX_TASKS as i64],
                )?;
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
                        .prepare("SELECT id FROM demo_tasks ORDER BY id DESC LIMIT 100")?;
                    let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
                    rows.map(|r| r.map(|v| v as u64))
                        .collect::<rusqlite::Result<_>>()?
                };
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(t) = load(cx, id)? {
                        let s = status_of(&t, self.delay);
                        out.push(json!({"id": s.id, "prompt": s.prompt, "status": s.status}));
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
                    [] => Ok(response::json(&status_of(&task, self.delay))),
                    ["events"] => {
                        let after = sse::last_event_id(req.headers()).unwrap_or(0) as usize;
                        if after >= task.tokens.len() {
                            let mut r = Response::new(Body::empty());
                            *r.status_mut() = StatusCode::NO_CONTENT;
                            return Ok(r);
                        }
                        let (resp, tx) = sse::response();
                        tokio::spawn(stream(tx, task, after, self.delay));
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

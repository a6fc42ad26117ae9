//! The client's background task: connect, drive the `agentwire-ws` machine, correlate calls
//! in the `agentwire-protocol` call table, reconnect.

use super::transport::Socket;
use super::url::{random_u64, Target};
use super::{
    lock, Backoff, CallError, ClientEvent, CloseCause, CloseInfo, Cmd, Identity, Outgoing,
    Responder, Shared, StateUpdate, Status, StreamMsg, UpdateSource, WsConfig,
};
use crate::Message;
use agentwire_protocol::{
    classify_server, is_terminal_close, CallEvent, CallOptions, CallTable, ClientMessage, RawJson,
    RpcId, ServerInbound, ServerMessage,
};
use agentwire_ws::handshake::{ClientHandshake, ClientOptions};
use agentwire_ws::stream::WebSocketStream;
use agentwire_ws::{CloseCode, ConnState, Connection as Ws, Event, Role};
use bytes::BytesMut;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::Instrument;

/// What the task needs from the builder.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) target: Target,
    pub(crate) headers: http::HeaderMap,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) connect_timeout: Duration,
    pub(crate) ws: WsConfig,
    #[cfg(feature = "deflate")]
    pub(crate) deflate: Option<crate::DeflateConfig>,
}

/// A transmitted call.
#[derive(Debug)]
struct Pending {
    reply: Responder,
    timeout: Option<Duration>,
}

/// How one connection ended.
#[derive(Debug)]
enum End {
    /// The application closed the client.
    Client { code: u16, reason: String },
    /// The socket closed or dropped.
    Dropped { code: u16, reason: String },
}

#[derive(Debug)]
pub(crate) struct Driver {
    shared: Arc<Shared>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    settings: Arc<Settings>,
    calls: CallTable,
    pending: HashMap<RpcId, Pending>,
    buffer: VecDeque<Outgoing>,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        cmds: mpsc::UnboundedReceiver<Cmd>,
        settings: Settings,
    ) -> Self {
        // Call ids unique across reconnects and clients: a random prefix, then a counter.
        let prefix = format!("{:012x}-", random_u64() & 0xffff_ffff_ffff);
        Self {
            shared,
            cmds,
            settings: Arc::new(settings),
            calls: CallTable::with_id_prefix(prefix),
            pending: HashMap::new(),
            buffer: VecDeque::new(),
        }
    }

    pub(crate) async fn run(self) {
        let span = tracing::debug_span!("agent_client", url = %self.shared.url);
        self.run_inner().instrument(span).await
    }

    fn set_status(&self, status: Status) {
        self.shared.status.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
    }

    async fn run_inner(mut self) {
        let mut failures: u32 = 0;
        let mut last = (CloseCode::ABNORMAL.0, String::new());
        let info = 'client: loop {
            self.set_status(Status::Connecting);
            tracing::debug!(attempt = failures + 1, "connecting");
            let settings = self.settings.clone();
            let attempt = tokio::time::timeout(settings.connect_timeout, connect(&settings));
            tokio::pin!(attempt);
            let result = loop {
                let deadline = self.buffer_deadline();
                tokio::select! {
                    r = &mut attempt => break r,
                    cmd = self.cmds.recv() => if let Some((code, reason)) = self.offline(cmd) {
                        break 'client self.stop(code, reason, CloseCause::Client);
                    },
                    _ = sleep_until(deadline) => self.expire_buffered(Instant::now()),
                }
            };
            match result {
                Ok(Ok((sock, leftover, config))) => {
                    let opened = Instant::now();
                    let end = self.connection(sock, leftover, config).await;
                    if self
                        .settings
                        .backoff
                        .as_ref()
                        .is_some_and(|b| opened.elapsed() >= b.min_uptime)
                    {
                        failures = 0;
                    }
                    match end {
                        End::Client { code, reason } => {
                            break 'client self.stop(code, reason, CloseCause::Client);
                        }
                        End::Dropped { code, reason } => {
                            tracing::debug!(code, %reason, "connection closed");
                            // Calls already sent cannot be answered any more.
                            self.calls.handle_eof();
                            while let Some(ev) = self.calls.poll_event() {
                                self.fail(ev, |_| CallError::ConnectionClosed);
                            }
                            let terminal = is_terminal_close(code);
                            let reconnect = !terminal && self.settings.backoff.is_some();
                            // Not ready any more by the time anyone hears of the drop.
                            self.set_status(Status::Connecting);
                            self.shared.emit(ClientEvent::Disconnected {
                                code,
                                reason: reason.clone(),
                                reconnect,
                            });
                            if terminal {
                                break 'client self.stop(code, reason, CloseCause::Terminal);
                            }
                            last = (code, reason);
                        }
                    }
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "connection attempt failed"),
                Err(_) => tracing::debug!("connection attempt timed out"),
            }
            failures = failures.saturating_add(1);
            let Some(backoff) = &self.settings.backoff else {
                break 'client self.stop(last.0, last.1, CloseCause::GaveUp);
            };
            if backoff.max_retries.is_some_and(|max| failures > max) {
                break 'client self.stop(last.0, last.1, CloseCause::GaveUp);
            }
            let wait = backoff.delay(failures);
            tracing::debug!(wait_ms = wait.as_millis() as u64, "reconnecting");
            let at = Instant::now() + wait;
            self.set_status(Status::Connecting);
            loop {
                let deadline = self.buffer_deadline();
                tokio::select! {
                    _ = sleep_until(Some(at)) => break,
                    cmd = self.cmds.recv() => if let Some((code, reason)) = self.offline(cmd) {
                        break 'client self.stop(code, reason, CloseCause::Client);
                    },
                    _ = sleep_until(deadline) => self.expire_buffered(Instant::now()),
                }
            }
        };
        self.set_status(Status::Closed(info));
    }

    /// Ends the client: every call still pending or buffered fails, later commands are refused.
    fn stop(&mut self, code: u16, reason: String, cause: CloseCause) -> CloseInfo {
        self.calls.handle_eof();
        while let Some(ev) = self.calls.poll_event() {
            self.fail(ev, |_| CallError::ConnectionClosed);
        }
        for (_, p) in self.pending.drain() {
            p.reply.finish(Err(CallError::ConnectionClosed));
        }
        self.cmds.close();
        while let Ok(cmd) = self.cmds.try_recv() {
            if let Cmd::Out(Outgoing::Call { reply, .. }) = cmd {
                reply.finish(Err(CallError::ConnectionClosed));
            }
        }
        for out in self.buffer.drain(..) {
            if let Outgoing::Call { reply, .. } = out {
                reply.finish(Err(CallError::ConnectionClosed));
            }
        }
        tracing::debug!(code, %reason, ?cause, "client closed");
        CloseInfo {
            code,
            reason,
            cause,
        }
    }

    /// A command while there is no socket: buffered, or `Some` when the client should close.
    fn offline(&mut self, cmd: Option<Cmd>) -> Option<(u16, String)> {
        match cmd {
            None => Some((CloseCode::NORMAL.0, String::new())),
            Some(Cmd::Close { code, reason }) => Some((code, reason)),
            Some(Cmd::Out(out)) => {
                self.buffer.push_back(out);
                None
            }
        }
    }

    /// The earliest deadline of a buffered call.
    fn buffer_deadline(&self) -> Option<Instant> {
        self.buffer
            .iter()
            .filter_map(|o| match o {
                Outgoing::Call {
                    timeout: Some(t),
                    created,
                    ..
                } => created.checked_add(*t),
                _ => None,
            })
            .min()
    }

    /// Fails the buffered calls whose timeout passed.
    fn expire_buffered(&mut self, now: Instant) {
        let mut keep = VecDeque::with_capacity(self.buffer.len());
        for out in self.buffer.drain(..) {
            match out {
                Outgoing::Call {
                    method,
                    timeout: Some(t),
                    created,
                    reply,
                    ..
                } if created.checked_add(t).is_some_and(|d| d <= now) => {
                    reply.finish(Err(CallError::TimedOut { method, after: t }));
                }
                other => keep.push_back(other),
            }
        }
        self.buffer = keep;
    }

    /// Routes a terminal call event to its caller.
    fn fail(&mut self, ev: CallEvent, error: impl Fn(&str) -> CallError) {
        if let CallEvent::Failed { id, error: e, .. } = ev {
            if let Some(p) = self.pending.remove(&id) {
                p.reply.finish(Err(error(&e)));
            }
        }
    }

    /// Sends `out`, or buffers it when the socket cannot take it.
    fn transmit(&mut self, ws: &mut Ws, out: Outgoing) {
        if ws.state() != ConnState::Open {
            self.buffer.push_back(out);
            return;
        }
        match out {
            Outgoing::Call {
                method,
                args,
                timeout,
                created,
                reply,
            } => {
                let streaming = matches!(reply, Responder::Stream(_));
                let options = CallOptions { streaming, timeout };
                let req = match self
                    .calls
                    .start(method.clone(), args.clone(), options, created)
                {
                    Ok(req) => req,
                    Err(e) => {
                        reply.finish(Err(CallError::Json(e.to_string())));
                        return;
                    }
                };
                let id = req.id().clone();
                match ws.send_text(ClientMessage::Rpc(req).encode()) {
                    Ok(()) => {
                        self.pending.insert(id, Pending { reply, timeout });
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "call not sent; kept for the next connection");
                        self.calls.cancel(&id);
                        self.buffer.push_back(Outgoing::Call {
                            method,
                            args,
                            timeout,
                            created,
                            reply,
                        });
                    }
                }
            }
            Outgoing::Frame(msg) => {
                let r = match &msg {
                    Message::Text(t) => ws.send_text(t.clone()),
                    Message::Binary(b) => ws.send_binary(b.clone()),
                };
                if let Err(e) = r {
                    tracing::debug!(error = %e, "message not sent; kept for the next connection");
                    self.buffer.push_back(Outgoing::Frame(msg));
                }
            }
        }
    }

    /// Runs one open connection until it ends, on the shared driver
    /// ([`WebSocketStream`](agentwire_ws::stream::WebSocketStream)).
    async fn connection(&mut self, sock: Socket, rbuf: BytesMut, config: WsConfig) -> End {
        let mut ws = WebSocketStream::new(sock, Role::Client, config);
        self.set_status(Status::Open);
        self.shared.emit(ClientEvent::Open);
        tracing::debug!("open");
        // What was sent while disconnected goes first, in order.
        for out in std::mem::take(&mut self.buffer) {
            self.transmit(ws.connection(), out);
        }
        let mut ws = ws.with_leftover(&rbuf);
        drop(rbuf);
        let mut awaiting_state = false;
        let mut received_close: Option<(u16, String)> = None;
        let mut client_close: Option<(u16, String)> = None;
        loop {
            // events
            let mut finished = false;
            while let Some(ev) = ws.poll_event() {
                match ev {
                    Event::Text(text) => self.on_text(text, &mut awaiting_state),
                    Event::Binary(data) => self
                        .shared
                        .emit(ClientEvent::Message(Message::Binary(data))),
                    Event::CloseReceived { code, reason } => {
                        received_close = Some((
                            code.map_or(CloseCode::NO_STATUS.0, |c| c.0),
                            reason.as_str().to_owned(),
                        ));
                    }
                    Event::Closed { .. } => finished = true,
                    _ => {}
                }
            }
            // transmits (a failed write ends the connection: collect its Closed event)
            if ws.flush().await.is_err() && !finished {
                continue;
            }
            if finished {
                return match client_close {
                    Some((code, reason)) => End::Client { code, reason },
                    None => {
                        let (code, reason) =
                            received_close.unwrap_or((CloseCode::ABNORMAL.0, String::new()));
                        End::Dropped { code, reason }
                    }
                };
            }
            // input and the socket's timers, commands, the calls' timers
            let deadline = self.calls.poll_timeout();
            tokio::select! {
                () = ws.read() => {}
                cmd = self.cmds.recv(), if client_close.is_none() => match cmd {
                    Some(Cmd::Close { code, reason }) => {
                        client_close = Some(close(&mut ws, code, reason));
                    }
                    None => {
                        client_close = Some(close(&mut ws, CloseCode::NORMAL.0, String::new()));
                    }
                    Some(Cmd::Out(out)) => self.transmit(ws.connection(), out),
                },
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    self.calls.handle_timeout(now);
                    while let Some(ev) = self.calls.poll_event() {
                        let after = match &ev {
                            CallEvent::Failed { id, .. } => {
                                self.pending.get(id).and_then(|p| p.timeout).unwrap_or_default()
                            }
                            _ => Duration::ZERO,
                        };
                        let method = match &ev {
                            CallEvent::Failed { method, .. } => method.clone(),
                            _ => String::new(),
                        };
                        self.fail(ev, |_| CallError::TimedOut {
                            method: method.clone(),
                            after,
                        });
                    }
                }
            }
        }
    }

    /// One text frame from the server.
    fn on_text(&mut self, text: agentwire_ws::Utf8Bytes, awaiting_state: &mut bool) {
        match classify_server(text.as_str()) {
            ServerInbound::Protocol(msg) => match msg {
                ServerMessage::Identity {
                    name,
                    agent,
                    state_follows,
                } => {
                    let identity = Identity { name, agent };
                    *lock(&self.shared.identity) = Some(identity.clone());
                    self.shared.emit(ClientEvent::Identity(identity));
                    if state_follows {
                        *awaiting_state = true;
                    } else {
                        self.set_status(Status::Ready);
                    }
                }
                ServerMessage::State { state } => {
                    match state.to_value() {
                        Ok(state) => {
                            let update = StateUpdate {
                                state,
                                source: UpdateSource::Server,
                            };
                            self.shared.state.send_replace(Some(update.clone()));
                            self.shared.emit(ClientEvent::State(update));
                        }
                        Err(e) => tracing::warn!(error = %e, "state frame not parsed"),
                    }
                    if std::mem::take(awaiting_state) {
                        self.set_status(Status::Ready);
                    }
                }
                ServerMessage::StateError { error } => {
                    self.shared.emit(ClientEvent::StateError(error));
                }
                ServerMessage::McpServers { mcp } => {
                    *lock(&self.shared.mcp) = Some(mcp.clone());
                    self.shared.emit(ClientEvent::McpServers(mcp));
                }
                ServerMessage::Rpc(resp) => self.on_response(resp),
                _ => {}
            },
            ServerInbound::Application(_) => {
                self.shared
                    .emit(ClientEvent::Message(Message::Text(text.clone())));
            }
            _ => {}
        }
    }

    fn on_response(&mut self, resp: agentwire_protocol::RpcResponse) {
        self.calls.handle_input(resp);
        let Some(ev) = self.calls.poll_event() else {
            return;
        };
        match ev {
            CallEvent::Chunk { id, result } => {
                if let Some(Pending {
                    reply: Responder::Stream(tx),
                    ..
                }) = self.pending.get(&id)
                {
                    match value(result) {
                        Ok(v) => {
                            let _ = tx.send(StreamMsg::Chunk(v));
                        }
                        Err(e) => tracing::warn!(error = %e, "chunk not parsed"),
                    }
                }
            }
            CallEvent::Completed { id, result, .. } => {
                if let Some(p) = self.pending.remove(&id) {
                    p.reply.finish(value(result));
                }
            }
            ev @ CallEvent::Failed { .. } => self.fail(ev, |e| CallError::Remote(e.to_owned())),
            CallEvent::UnknownId { id } => tracing::debug!(%id, "reply to an unknown call"),
            _ => {}
        }
    }
}

/// Starts the close handshake; an invalid code becomes `1000`.
fn close(ws: &mut WebSocketStream<Socket>, code: u16, reason: String) -> (u16, String) {
    let code = CloseCode(code).or_normal().0;
    let reason = agentwire_ws::close::close_reason(&reason).to_owned();
    if ws.close(CloseCode(code), &reason).is_err() {
        // Already closing: the connection ends on its own.
        ws.abort();
    }
    (code, reason)
}

fn value(result: Option<RawJson>) -> Result<Value, CallError> {
    match result {
        None => Ok(Value::Null),
        Some(raw) => raw.to_value().map_err(|e| CallError::Json(e.to_string())),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Opens the TCP connection and completes the WebSocket handshake; returns the socket, the
/// bytes read past the `101` and the settings of this connection (with what was negotiated).
async fn connect(settings: &Settings) -> std::io::Result<(Socket, BytesMut, WsConfig)> {
    let mut opts = ClientOptions::default();
    for (name, value) in &settings.headers {
        opts = opts.with_header(name.clone(), value.clone());
    }
    #[cfg(feature = "deflate")]
    if let Some(d) = &settings.deflate {
        opts = opts.with_deflate(d.clone());
    }
    let (hs, req) =
        ClientHandshake::new(&settings.target.uri, opts).map_err(std::io::Error::other)?;
    let mut sock = super::transport::connect(&settings.target).await?;
    let mut head = BytesMut::new();
    ClientHandshake::encode_request(&req, &mut head);
    sock.write_all(&head).await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some((accepted, n)) = hs.parse_response(&buf).map_err(std::io::Error::other)? {
            let leftover = buf.split_off(n);
            #[cfg(feature = "deflate")]
            let config = settings.ws.clone().with_deflate(accepted.deflate);
            #[cfg(not(feature = "deflate"))]
            let config = {
                let _ = accepted;
                settings.ws.clone()
            };
            return Ok((sock, leftover, config));
        }
        if sock.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

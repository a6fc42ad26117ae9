//! The server: routing, WebSocket upgrades, HTTP, `serve`, graceful shutdown.

use crate::agent::{Agent, BoxError};
use crate::body::{response, Body};
use crate::connection::Connection;
use crate::instance::{Class, ClassImpl, Cmd, Env, Registry};
use crate::store::Storage;
use crate::Limits;
use agentwire_protocol::{
    camel_case_to_kebab_case, connection_id, parse_agent_path, query_param, split_target, texts,
    DEFAULT_PREFIX,
};
use agentwire_ws::handshake;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify};

type Fallback = Arc<
    dyn Fn(Request<Bytes>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// Builds a [`Server`].
pub struct ServerBuilder {
    prefix: String,
    classes: HashMap<String, Arc<dyn Class>>,
    storage: Storage,
    limits: Limits,
    fallback: Option<Fallback>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("prefix", &self.prefix)
            .field("classes", &self.classes.keys().collect::<Vec<_>>())
            .field("storage", &self.storage)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The agent server: a cheap-to-clone handle, a `tower::Service` over `http::Request`, and
/// [`serve`](Self::serve) for a plain TCP listener.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    classes: HashMap<String, Arc<dyn Class>>,
    env: Env,
    fallback: Option<Fallback>,
    shutdown: watch::Sender<bool>,
    next_key: AtomicU64,
    tasks: Arc<TaskCount>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("prefix", &self.inner.prefix)
            .field("classes", &self.inner.classes.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Default)]
struct TaskCount {
    n: AtomicUsize,
    zero: Notify,
}

struct TaskGuard(Arc<TaskCount>);

impl TaskCount {
    fn enter(self: &Arc<Self>) -> TaskGuard {
        self.n.fetch_add(1, Ordering::SeqCst);
        TaskGuard(self.clone())
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            classes: HashMap::new(),
            storage: Storage::memory(),
            limits: Limits::default(),
            fallback: None,
        }
    }
}

impl ServerBuilder {
    /// Registers an agent class under `class_name` (routed at `/{prefix}/{kebab(class_name)}/…`
    /// and reported in the identity frame); `factory` makes the value of each instance from
    /// its name. Panics if two classes map to the same namespace.
    pub fn agent<A, F>(mut self, class_name: &str, factory: F) -> Self
    where
        A: Agent,
        F: Fn(&str) -> A + Send + Sync + 'static,
    {
        let namespace = camel_case_to_kebab_case(class_name);
        let class = ClassImpl::<A, F> {
            namespace: namespace.clone(),
            factory: Arc::new(factory),
            _agent: std::marker::PhantomData,
        };
        let previous = self.classes.insert(namespace.clone(), Arc::new(class));
        assert!(
            previous.is_none(),
            "two agent classes map to the namespace {namespace}"
        );
        self
    }

    /// The URL prefix (default `agents`; may contain `/`, e.g. `api/agents`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where instances persist their data (default: [`Storage::memory`]).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Limits and timeouts (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The handler for requests that are not agent requests (default: `404 Not found`).
    pub fn fallback<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Request<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        self.fallback = Some(Arc::new(move |req| Box::pin(f(req))));
        self
    }

    /// Finishes the server.
    pub fn build(self) -> Server {
        let (shutdown, _) = watch::channel(false);
        Server {
            inner: Arc::new(Inner {
                prefix: self.prefix,
                classes: self.classes,
                env: Env {
                    storage: self.storage,
                    limits: self.limits,
                    registry: Registry::default(),
                },
                fallback: self.fallback,
                shutdown,
                next_key: AtomicU64::new(1),
                tasks: Arc::new(TaskCount::default()),
            }),
        }
    }
}

impl Server {
    /// A builder.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Delivers `cmd` to the instance, starting it if needed; returns its queue. An instance
    /// that exits (idle, no connections) between lookup and delivery is started again.
    async fn deliver(
        &self,
        class: &Arc<dyn Class>,
        name: &str,
        mut cmd: Cmd,
    ) -> Option<mpsc::Sender<Cmd>> {
        let key = (class.namespace().to_owned(), name.to_owned());
        for _ in 0..8 {
            let tx = {
                let mut map = self.inner.env.registry.lock();
                let tx = match map.get(&key) {
                    Some(tx) if !tx.is_closed() => tx.clone(),
                    _ => {
                        let tx = class.spawn(name, self.inner.env.clone());
                        map.insert(key.clone(), tx.clone());
                        tx
                    }
                };
                // Under the registry lock an idle instance cannot decide to exit meanwhile.
                match tx.try_send(cmd) {
                    Ok(()) => return Some(tx),
                    Err(mpsc::error::TrySendError::Full(c)) => {
                        crate::metrics::instance_queue_full();
                        cmd = c;
                        tx
                    }
                    Err(mpsc::error::TrySendError::Closed(c)) => {
                        cmd = c;
                        map.remove(&key);
                        continue;
                    }
                }
            };
            // A full queue: wait for room outside the lock (the instance is busy, not exiting;
            // if it exits anyway the send fails and the loop starts it again).
            match tx.send(cmd).await {
                Ok(()) => return Some(tx),
                Err(e) => cmd = e.0,
            }
        }
        None
    }

    /// Handles one request: agent upgrade, agent HTTP request, or the fallback.
    pub async fn handle<B>(&self, mut req: Request<B>) -> Response<Body>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let (path, query) = split_target(&target);
        let Some(route) = parse_agent_path(path, &self.inner.prefix) else {
            let req = match collect(req, self.inner.env.limits.max_request_body).await {
                Ok(r) => r,
                Err(resp) => return resp,
            };
            return match &self.inner.fallback {
                Some(f) => f(req).await,
                None => response::not_found(),
            };
        };
        let Some(class) = self.inner.classes.get(route.namespace.as_ref()).cloned() else {
            return response::text(StatusCode::BAD_REQUEST, texts::INVALID_REQUEST);
        };
        let name = route.instance.into_owned();
        let is_upgrade = req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
        if is_upgrade {
            let on_upgrade = hyper::upgrade::on(&mut req);
            let (parts, _body) = req.into_parts();
            return self.upgrade(parts, query, class, &name, on_upgrade).await;
        }
        let req = match collect(req, self.inner.env.limits.max_request_body).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let (reply, rx) = oneshot::channel();
        let req = Box::new(req);
        if self
            .deliver(&class, &name, Cmd::Request { req, reply })
            .await
            .is_none()
        {
            return unavailable();
        }
        rx.await.unwrap_or_else(|_| unavailable())
    }

    async fn upgrade(
        &self,
        parts: http::request::Parts,
        query: Option<&str>,
        class: Arc<dyn Class>,
        name: &str,
        on_upgrade: hyper::upgrade::OnUpgrade,
    ) -> Response<Body> {
        let upgrade = match handshake::from_parts(&parts) {
            Ok(u) => u,
            Err(e) => {
                tracing::info!(error = %e, "websocket handshake refused");
                return handshake::reject(&e).map(|()| Body::empty());
            }
        };
        let query = query.unwrap_or("");
        if query_param(query, "__agents_transport").is_some_and(|t| t == "capnweb") {
            return response::text(StatusCode::BAD_REQUEST, "Unsupported transport");
        }
        if *self.inner.shutdown.borrow() {
            return unavailable();
        }
        let id = connection_id(query).map_or_else(random_id, |c| c.into_owned());
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let (conn, out_rx) = Connection::new(
            key,
            id,
            parts.uri.clone(),
            self.inner.env.limits.max_queued_bytes,
        );
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Connect {
            conn: conn.clone(),
            parts: Arc::new(parts),
            reply,
        };
        let Some(tx) = self.deliver(&class, name, cmd).await else {
            tracing::warn!(agent = class.namespace(), name, "instance unavailable");
            return unavailable();
        };
        match rx.await {
            Ok(None) => {}
            Ok(Some(resp)) => {
                tracing::info!(
                    status = resp.status().as_u16(),
                    "websocket refused by the agent"
                );
                return resp;
            }
            Err(_) => return unavailable(),
        }
        let guard = self.inner.tasks.enter();
        #[allow(unused_mut)]
        let mut limits = self.inner.env.limits.clone();
        #[allow(unused_mut)]
        let mut accept = handshake::Accept::default();
        #[cfg(feature = "deflate")]
        if let Some(n) = limits
            .deflate
            .as_ref()
            .and_then(|p| upgrade.negotiate_deflate(p))
        {
            accept = accept.with_deflate(n);
            limits.ws = limits.ws.with_deflate(Some(n));
        }
        let shutdown = self.inner.shutdown.subscribe();
        let span = tracing::info_span!("ws", agent = class.namespace(), name, id = conn.id());
        let fut = tracing::Instrument::instrument(
            async move {
                let _guard = guard;
                match on_upgrade.await {
                    Ok(upgraded) => {
                        // Own the TCP stream when hyper hands it over (no extra layer, and an
                        // idle socket holds no read buffer); bytes hyper read past the request
                        // head start the WebSocket input.
                        let (io, initial) = match upgraded.downcast::<TokioIo<TcpStream>>() {
                            Ok(parts) => (
                                crate::ws::Transport::Tcp(parts.io.into_inner()),
                                parts.read_buf,
                            ),
                            Err(upgraded) => (
                                crate::ws::Transport::Other(TokioIo::new(upgraded)),
                                Bytes::new(),
                            ),
                        };
                        crate::ws::drive(io, initial, conn, out_rx, tx, limits, shutdown).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "upgrade failed");
                        conn.mark_closed();
                        let _ = tx
                            .send(Cmd::Close {
                                conn,
                                code: 1006,
                                reason: String::new(),
                                clean: false,
                            })
                            .await;
                    }
                }
            },
            span,
        );
        tokio::spawn(fut);
        upgrade.accept(accept).map(|()| Body::empty())
    }

    /// Serves HTTP/1.1 (with upgrades) on `listener` until the process ends.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        self.serve_with_shutdown(listener, std::future::pending())
            .await
    }

    /// Serves until `signal` resolves, then shuts down gracefully: stops accepting, closes
    /// every WebSocket with `1001`, ends live SSE responses, lets HTTP connections finish their
    /// current request, and waits for all of it up to [`Limits::shutdown_grace`]. (State is
    /// committed before it is broadcast, so there is nothing left to flush.)
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                r = listener.accept() => match r {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        self.spawn_http(stream, peer);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        drop(listener);
        self.shutdown().await;
        Ok(())
    }

    /// Starts the graceful shutdown (see [`serve_with_shutdown`](Self::serve_with_shutdown))
    /// and waits for it.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        // End live SSE responses (their HTTP connections can then close).
        let instances: Vec<_> = self.inner.env.registry.lock().values().cloned().collect();
        for tx in instances {
            let _ = tx.send(Cmd::Shutdown).await;
        }
        let tasks = self.inner.tasks.clone();
        let wait = async move {
            loop {
                let notified = tasks.zero.notified();
                if tasks.n.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(self.inner.env.limits.shutdown_grace, wait).await;
    }

    fn spawn_http(&self, stream: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let server = self.clone();
        let guard = self.inner.tasks.enter();
        let mut shutdown = self.inner.shutdown.subscribe();
        let span = tracing::info_span!("http", %peer);
        let task = async move {
            let _guard = guard;
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let server = server.clone();
                let span =
                    tracing::info_span!("request", method = %req.method(), path = req.uri().path());
                let fut = async move {
                    let resp = server.handle(req).await;
                    tracing::debug!(status = resp.status().as_u16(), "response");
                    Ok::<_, Infallible>(resp)
                };
                tracing::Instrument::instrument(fut, span)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "http connection error");
                    }
                    return;
                }
                _ = shutdown.wait_for(|s| *s) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }

    /// Diagnostics of a running instance (`None` if it was never used).
    pub async fn instance_info(
        &self,
        class_name: &str,
        name: &str,
    ) -> Option<crate::instance::InstanceInfo> {
        let key = (camel_case_to_kebab_case(class_name), name.to_owned());
        let tx = self.inner.env.registry.lock().get(&key)?.clone();
        let (reply, rx) = oneshot::channel();
        tx.send(Cmd::Stats { reply }).await.ok()?;
        rx.await.ok()
    }
}

fn unavailable() -> Response<Body> {
    response::text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
}

async fn collect<B>(req: Request<B>, limit: usize) -> Result<Request<Bytes>, Response<Body>>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(Request::from_parts(parts, c.to_bytes())),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() {
                Err(response::text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Payload Too Large",
                ))
            } else {
                Err(response::text(StatusCode::BAD_REQUEST, "Bad Request"))
            }
        }
    }
}

/// A 21-character random id (for connections without `_pk`), like upstream's nanoid.
fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8; 64] = b"useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict";
    let s = std::collections::hash_map::RandomState::new();
    let mut out = String::with_capacity(21);
    let mut seed = 0u64;
    for i in 0..21 {
        if i % 8 == 0 {
            let mut h = s.build_hasher();
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            seed = h.finish();
        }
        out.push(char::from(ALPHABET[(seed & 63) as usize]));
        seed >>= 6;
    }
    out
}

impl<B> tower_service::Service<Request<B>> for Server
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let server = self.clone();
        Box::pin(async move { Ok(server.handle(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_look_like_nanoids() {
        let a = random_id();
        let b = random_id();
        assert_eq!(a.len(), 21);
        assert_ne!(a, b);
    }
}

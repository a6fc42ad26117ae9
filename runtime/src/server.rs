//! The server: routing, WebSocket upgrades, HTTP, `serve`, graceful shutdown.

use crate::accept::{self, Admit, Slot};
use crate::agent::{Agent, BoxError};
use crate::body::{response, Body};
use crate::connection::Connection;
use crate::handle::{AgentHandle, HandleError};
use crate::instance::{Class, ClassImpl, Cmd, Env, Registry};
use crate::origin::{self, OriginPolicy, Verdict};
use crate::request::RequestBody;
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

/// The answer to a WebSocket upgrade that the hosting server cannot hand over.
const NO_UPGRADE: &str = "WebSocket upgrade unavailable: the HTTP server hosting this service \
    does not support connection upgrades (serve it with hyper's `with_upgrades()` or axum::serve)";

type Authorize = Arc<
    dyn Fn(AgentRequest) -> Pin<Box<dyn Future<Output = Result<(), Response<Body>>> + Send>>
        + Send
        + Sync,
>;

/// What [`ServerBuilder::authorize`] decides on: an agent request (HTTP or WebSocket upgrade)
/// before anything of its instance is started or created.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentRequest {
    /// The agent class's URL namespace (`counter-agent`).
    pub namespace: String,
    /// The instance name, as routed.
    pub name: String,
    /// Whether this is a WebSocket upgrade.
    pub upgrade: bool,
    /// The request method.
    pub method: http::Method,
    /// The request URI (with its query, e.g. a `?token=`).
    pub uri: http::Uri,
    /// The request headers (e.g. `Authorization`, `Cookie`).
    pub headers: http::HeaderMap,
}

impl AgentRequest {
    /// The value of query parameter `key`, percent-decoded.
    pub fn query(&self, key: &str) -> Option<String> {
        query_param(self.uri.query().unwrap_or(""), key).map(|v| v.into_owned())
    }

    /// The token of an `Authorization: Bearer …` header.
    pub fn bearer_token(&self) -> Option<&str> {
        let v = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

type Fallback = Arc<
    dyn Fn(Request<Bytes>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// Builds a [`Server`].
pub struct ServerBuilder {
    agent_runtime: Option<tokio::runtime::Handle>,
    authorize: Option<Authorize>,
    prefix: String,
    classes: HashMap<String, Arc<dyn Class>>,
    storage: Storage,
    limits: Limits,
    fallback: Option<Fallback>,
    origins: OriginPolicy,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("prefix", &self.prefix)
            .field("classes", &self.classes.keys().collect::<Vec<_>>())
            .field("storage", &self.storage)
            .field("limits", &self.limits)
            .field("origins", &self.origins)
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
    authorize: Option<Authorize>,
    prefix: String,
    classes: HashMap<String, Arc<dyn Class>>,
    env: Env,
    fallback: Option<Fallback>,
    origins: OriginPolicy,
    shutdown: watch::Sender<bool>,
    next_key: AtomicU64,
    tasks: Arc<TaskCount>,
    conns: Arc<accept::Conns>,
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
            agent_runtime: None,
            authorize: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            classes: HashMap::new(),
            storage: Storage::memory(),
            limits: Limits::default(),
            fallback: None,
            origins: OriginPolicy::default(),
        }
    }
}

impl ServerBuilder {
    /// Registers an agent class under `class_name` (routed at `/{prefix}/{kebab(class_name)}/…`
    /// and reported in the identity frame); `factory` makes the value of each instance from
    /// its name. Panics if two classes map to the same namespace.
    pub fn agent<A, F>(self, class_name: &str, factory: F) -> Self
    where
        A: Agent,
        F: Fn(&str) -> A + Send + Sync + 'static,
    {
        self.agent_with_props(class_name, None, factory)
    }

    /// [`agent`](Self::agent) with props: every instance of the class starts with them
    /// ([`Context::props`](crate::Context::props), read in [`Agent::on_start`]), unless it was
    /// started through [`AgentHandle::start`](crate::AgentHandle::start) with its own.
    pub fn agent_with_props<A, F>(
        mut self,
        class_name: &str,
        props: impl Into<Option<serde_json::Value>>,
        factory: F,
    ) -> Self
    where
        A: Agent,
        F: Fn(&str) -> A + Send + Sync + 'static,
    {
        let namespace = camel_case_to_kebab_case(class_name);
        let class = ClassImpl::<A, F> {
            namespace: namespace.clone(),
            factory: Arc::new(factory),
            props: props.into().map(Arc::new),
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

    /// Runs the agent instances (their hooks) on this runtime instead of the one serving
    /// sockets and HTTP. Hooks should never block a thread (use `spawn_blocking` for CPU-heavy
    /// work); where one might, a separate runtime keeps the server's sockets, HTTP and timers
    /// going meanwhile: tokio drives I/O from one idle worker at a time, so a hook that blocks
    /// a worker of the serving runtime can stall I/O for every connection until it returns.
    /// `agentwire serve` runs its agents on a runtime of their own.
    pub fn agent_runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.agent_runtime = Some(handle);
        self
    }

    /// Decides whether an agent request (HTTP or WebSocket upgrade) may proceed, before its
    /// instance is started and before anything is created on disk: `Err(response)` answers
    /// the request with that response instead (e.g. `401`, `403`, or `404` for names that may
    /// not exist). Use it for authentication (a token in a header or the query) and to
    /// limit which instance names exist. Runs for every agent request; unknown namespaces
    /// are answered `400` before it.
    ///
    /// ```
    /// # use agentwire::{Server, body::response};
    /// # use http::StatusCode;
    /// let server = Server::builder()
    ///     .authorize(|req| async move {
    ///         let token = req.bearer_token().map(str::to_owned).or_else(|| req.query("token"));
    ///         if token.as_deref() == Some("let-me-in") && req.name.len() <= 64 {
    ///             Ok(())
    ///         } else {
    ///             Err(response::text(StatusCode::UNAUTHORIZED, "Unauthorized"))
    ///         }
    ///     })
    ///     .build();
    /// ```
    pub fn authorize<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(AgentRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Response<Body>>> + Send + 'static,
    {
        self.authorize = Some(Arc::new(move |req| Box::pin(f(req))));
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

    /// The browser origins (`scheme://host[:port]`, or `*` for any) allowed to reach the
    /// server from other sites. One policy for every request the server handles:
    ///
    /// * WebSocket upgrades and `POST`/`PUT`/`PATCH`/`DELETE` requests whose `Origin` is
    ///   neither listed nor the request's own (`Origin` naming the `Host` it was sent to) are
    ///   refused with `403`. Requests without `Origin` (non-browser clients) pass. This holds
    ///   with no origins listed too: by default only same-origin pages and non-browser clients
    ///   can change state.
    /// * A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from a
    ///   listed origin is answered `204` by the server with `Access-Control-Allow-Origin` (the
    ///   origin), `-Methods`, `-Headers` (those requested) and `-Max-Age: 600`. Other
    ///   `OPTIONS` requests, preflights from unlisted origins included, go to the agent
    ///   ([`Agent::on_request`]), which may answer them itself.
    /// * Replies to a listed origin get `Access-Control-Allow-Origin` (unless the agent set
    ///   one); once any origin is listed, every reply gets `Vary: Origin`.
    ///
    /// Calls add to the list.
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let more = OriginPolicy::new(origins);
        self.origins.extend(more);
        self
    }

    /// Finishes the server.
    pub fn build(self) -> Server {
        let scheduler = match self.storage.dir() {
            Some(dir) => crate::schedule::Scheduler::persisted(dir).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot open the schedule index; schedules will not survive a restart");
                crate::schedule::Scheduler::memory()
            }),
            None => crate::schedule::Scheduler::memory(),
        };
        let (shutdown, _) = watch::channel(false);
        let classes = Arc::new(crate::instance::Classes {
            by_namespace: self.classes.clone(),
        });
        Server {
            inner: Arc::new(Inner {
                authorize: self.authorize,
                prefix: self.prefix,
                classes: self.classes,
                env: Env {
                    storage: self.storage,
                    limits: self.limits,
                    registry: Registry::default(),
                    awake: Default::default(),
                    scheduler,
                    agent_runtime: self.agent_runtime,
                    classes,
                },
                fallback: self.fallback,
                origins: self.origins,
                shutdown,
                next_key: AtomicU64::new(1),
                tasks: Arc::new(TaskCount::default()),
                conns: Arc::new(accept::Conns::default()),
            }),
        }
    }
}

impl Server {
    /// A builder.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    async fn deliver(
        &self,
        class: &Arc<dyn Class>,
        name: &str,
        cmd: Cmd,
    ) -> Option<mpsc::Sender<Cmd>> {
        crate::instance::deliver(&self.inner.env, class, name, cmd).await
    }

    /// A handle on the instance `name` of the class registered for the agent type `A` (the
    /// reference's `getAgentByName`); fails when no class, or several, of that type are
    /// registered (then see [`agent_in`](Self::agent_in)). Nothing starts until the handle is
    /// used.
    pub fn agent<A: Agent>(&self, name: &str) -> Result<AgentHandle<A>, HandleError> {
        AgentHandle::lookup(&self.inner.env, None, name)
    }

    /// [`agent`](Self::agent) for the class registered as `class_name` (for an agent type
    /// registered more than once).
    pub fn agent_in<A: Agent>(
        &self,
        class_name: &str,
        name: &str,
    ) -> Result<AgentHandle<A>, HandleError> {
        let ns = camel_case_to_kebab_case(class_name);
        AgentHandle::lookup(&self.inner.env, Some(&ns), name)
    }

    /// Handles one request: the origin policy (see [`ServerBuilder::allowed_origins`]), then
    /// an agent upgrade, agent HTTP request, or the fallback.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let verdict = self.inner.origins.verdict(req.headers(), req.uri());
        let allowed = match verdict {
            Verdict::Allowed(origin) => {
                if origin::is_preflight(req.method(), req.headers()) {
                    return origin::preflight(origin, req.headers());
                }
                Some(origin)
            }
            Verdict::Foreign if origin::state_changing(req.method()) || is_upgrade(&req) => {
                tracing::info!(
                    origin = ?req.headers().get(header::ORIGIN),
                    method = %req.method(),
                    "request from a foreign origin refused"
                );
                return origin::forbidden();
            }
            Verdict::NoOrigin | Verdict::SameOrigin | Verdict::Foreign => None,
        };
        #[allow(unused_mut)]
        let mut resp = self.route(req).await;
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.inner.env.storage.postgres_store() {
            // a forwarded response already names the node that ran the instance
            if let Ok(v) = http::HeaderValue::from_str(pg.node.id()) {
                resp.headers_mut().entry(crate::forward::NODE).or_insert(v);
            }
        }
        if self.inner.origins.is_listing() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            origin::decorate(&mut resp, allowed);
        }
        resp
    }

    async fn route<B>(&self, mut req: Request<B>) -> Response<Body>
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
        // Cluster storage: a call forwarded by another node (its handle's instance is ours).
        #[cfg(feature = "postgres")]
        if path == crate::forward::CALL_PATH && req.method() == http::Method::POST {
            if let Some(pg) = self.inner.env.storage.postgres_store() {
                return crate::forward::serve_call(pg, &self.inner.env, req).await;
            }
        }
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
        let upgrade = is_upgrade(&req);
        if let Some(authorize) = &self.inner.authorize {
            let ar = AgentRequest {
                namespace: class.namespace().to_owned(),
                name: name.clone(),
                upgrade,
                method: req.method().clone(),
                uri: req.uri().clone(),
                headers: req.headers().clone(),
            };
            if let Err(resp) = authorize(ar).await {
                return resp;
            }
        }
        // Cluster storage: an instance another node owns is served there.
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.inner.env.storage.postgres_store() {
            req = match crate::forward::route(pg, class.namespace(), &name, req).await {
                Ok(resp) => return resp,
                Err(req) => req,
            };
        }
        if upgrade {
            // Without hyper's upgrade extension the socket can never be handed over: answering
            // `101` would leave the client with a dead connection.
            let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>()
            else {
                tracing::warn!("websocket upgrade without hyper's upgrade extension");
                return response::text(StatusCode::INTERNAL_SERVER_ERROR, NO_UPGRADE);
            };
            let (parts, _body) = req.into_parts();
            return self.upgrade(parts, query, class, &name, on_upgrade).await;
        }
        let (parts, body) = req.into_parts();
        let limit = class
            .max_request_body(&parts)
            .unwrap_or(self.inner.env.limits.max_request_body as u64);
        if announced_length(&parts.headers).is_some_and(|n| n > limit) {
            // Refused before the instance is involved and before any of the body is read.
            return too_large();
        }
        let req = Request::from_parts(parts, RequestBody::new(body, limit));
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
            Arc::from(name),
        );
        // The socket's place under the connection cap goes with the WebSocket.
        let slot = parts.extensions.get::<Slot>().cloned();
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
                if let Some(slot) = &slot {
                    slot.upgraded();
                }
                let _slot = slot;
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
                                error: None,
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
    ///
    /// Admission: at most [`Limits::max_connections`] sockets are open; at the cap the oldest
    /// idle HTTP connection is closed to make room, and with none idle a new client gets `503`
    /// at once (never a hang). Failing accepts (such as `EMFILE`) are logged, shed an idle
    /// connection and are retried.
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        self.serve_inner(listener, signal, None).await
    }

    /// [`serve`](Self::serve) over TLS (feature `tls`): HTTPS and `wss://`. Each connection's
    /// handshake runs in its own task, bounded by [`Limits::request_head_timeout`]; the
    /// connection cap counts TLS connections as any other. `config` is a rustls server
    /// configuration, e.g. from [`crate::tls::server_config_from_pem`] (which offers ALPN
    /// `http/1.1`).
    #[cfg(feature = "tls")]
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<()> {
        self.serve_tls_with_shutdown(listener, config, std::future::pending())
            .await
    }

    /// [`serve_with_shutdown`](Self::serve_with_shutdown) over TLS (feature `tls`); see
    /// [`serve_tls`](Self::serve_tls).
    #[cfg(feature = "tls")]
    pub async fn serve_tls_with_shutdown(
        self,
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        signal: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        self.serve_inner(listener, signal, Some(acceptor)).await
    }

    async fn serve_inner(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send,
        tls: Option<Acceptor>,
    ) -> std::io::Result<()> {
        let limits = &self.inner.env.limits;
        let cap = limits.connections_cap();
        self.start_schedules();
        tracing::debug!(max_connections = cap, "serving");
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                r = listener.accept() => match r {
                    Ok((stream, peer)) => match self.inner.conns.admit(cap) {
                        Admit::Serve(slot) => {
                            let _ = stream.set_nodelay(true);
                            self.spawn_http(stream, tls.clone(), peer, slot);
                        }
                        Admit::Refuse(slot) => {
                            tracing::warn!(%peer, open = self.inner.conns.open(), cap, "connection cap reached; answering 503");
                            tokio::spawn(accept::refuse(stream, slot));
                        }
                        Admit::Drop => drop(stream),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, open = self.inner.conns.open(), "accept failed");
                        self.inner.conns.shed_oldest_idle();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        drop(listener);
        self.shutdown().await;
        Ok(())
    }

    /// Starts the schedule timer (see [`schedule`](crate::schedule)): instances are woken
    /// when their schedules come due, including those that came due while the server was
    /// down. [`serve`](Self::serve) does this itself; call it when the server is mounted in
    /// another stack (axum, tower) instead. Needs a tokio runtime; idempotent.
    pub fn start_schedules(&self) {
        let scheduler = self.inner.env.scheduler.clone();
        if !scheduler.start_once() {
            return;
        }
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.inner.env.storage.postgres_store() {
            // lease renewals, and the schedules of instances no node has awake
            pg.start();
            tokio::spawn(crate::schedule::poll_cluster(
                Arc::downgrade(pg),
                Arc::downgrade(&scheduler),
            ));
        }
        let server = self.clone();
        tokio::spawn(scheduler.run(move |ns, name| {
            let server = server.clone();
            async move {
                let Some(class) = server.inner.classes.get(&ns).cloned() else {
                    // a class no longer registered: forget its schedules' index entry
                    return server.inner.env.scheduler.set(&ns, &name, None).is_ok();
                };
                server.deliver(&class, &name, Cmd::Alarm).await.is_some()
            }
        }));
    }

    /// Instances with pending schedules.
    pub fn scheduled_instances(&self) -> usize {
        self.inner.env.scheduler.pending()
    }

    /// Open sockets of [`serve`](Self::serve) (HTTP connections and WebSockets).
    pub fn open_connections(&self) -> usize {
        self.inner.conns.open()
    }

    /// Starts the graceful shutdown (see [`serve_with_shutdown`](Self::serve_with_shutdown))
    /// and waits for it.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        // Cluster storage: nothing more is written from here; the leases go back at once
        // (writes still in flight are refused and their output dropped) so that other nodes
        // take over without waiting for them to expire.
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.inner.env.storage.postgres_store() {
            pg.release_all().await;
        }
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

    fn spawn_http(
        &self,
        stream: TcpStream,
        tls: Option<Acceptor>,
        peer: std::net::SocketAddr,
        slot: Slot,
    ) {
        let server = self.clone();
        let guard = self.inner.tasks.enter();
        let limits = &self.inner.env.limits;
        let head_timeout = limits.request_head_timeout;
        let span = tracing::info_span!("http", %peer);
        let task = async move {
            let _guard = guard;
            match tls {
                // Plain connections are served as `TokioIo<TcpStream>`, the type a WebSocket
                // upgrade downcasts to in order to own the socket.
                None => {
                    server
                        .serve_connection(TokioIo::new(stream), peer, slot)
                        .await
                }
                #[cfg(feature = "tls")]
                Some(acceptor) => {
                    match tokio::time::timeout(head_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => server.serve_connection(TokioIo::new(tls), peer, slot).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                }
                #[cfg(not(feature = "tls"))]
                Some(never) => {
                    let _ = head_timeout;
                    match never {}
                }
            }
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }

    /// Serves one HTTP/1.1 connection (with upgrades) until it ends, the server shuts down,
    /// it idles past the keep-alive timeout or the connection cap sheds it.
    async fn serve_connection<S>(self, io: TokioIo<S>, peer: std::net::SocketAddr, slot: Slot)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let server = self;
        let mut shutdown = server.inner.shutdown.subscribe();
        let limits = &server.inner.env.limits;
        let (keep_alive, body_timeout) = (limits.keep_alive_timeout, limits.request_body_timeout);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.request_head_timeout)
            .max_buf_size(limits.max_request_head.max(8192));
        let ctl = slot.ctl().clone();
        let svc_slot = slot.clone();
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let server = server.clone();
            let busy = svc_slot.request();
            let slot = svc_slot.clone();
            let span =
                tracing::info_span!("request", method = %req.method(), path = req.uri().path());
            let fut = async move {
                let mut req = req.map(|b| accept::Progress::new(b, body_timeout));
                // an upgraded socket keeps its place under the cap
                req.extensions_mut().insert(slot);
                let resp = server.handle(req).await;
                tracing::debug!(status = resp.status().as_u16(), "response");
                Ok::<_, Infallible>(resp.map(|inner| accept::Tracked {
                    inner,
                    _busy: Some(busy),
                }))
            };
            tracing::Instrument::instrument(fut, span)
        });
        let conn = builder.serve_connection(io, svc).with_upgrades();
        tokio::pin!(conn);
        slot.mark_idle();
        let mut closing = false;
        loop {
            let idle = !closing && slot.is_idle();
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "http connection error");
                    }
                    return;
                }
                _ = shutdown.wait_for(|s| *s), if !closing => closing = true,
                _ = ctl.shed.notified(), if !closing => closing = true,
                _ = tokio::time::sleep(keep_alive), if idle => {
                    tracing::debug!(%peer, "closing an idle connection");
                    closing = true;
                }
                _ = ctl.changed.notified() => {}
            }
            if closing {
                break;
            }
        }
        conn.as_mut().graceful_shutdown();
        // an idle or half-sent connection closes at once; a request in progress finishes
        let grace = if slot.is_idle() {
            Duration::from_secs(1)
        } else {
            Duration::MAX
        };
        let _ = tokio::time::timeout(grace, conn).await;
    }

    /// Deletes an instance's data: a running instance closes its sockets (code `4004`, so
    /// that reference clients stop reconnecting) and SSE responses and ends; then its
    /// database files (or memory database) are removed. The next request for the name starts
    /// a fresh instance. Returns `false` for an unknown class.
    pub async fn delete_instance(
        &self,
        class_name: &str,
        name: &str,
    ) -> Result<bool, crate::StoreError> {
        let namespace = camel_case_to_kebab_case(class_name);
        if !self.inner.classes.contains_key(&namespace) {
            return Ok(false);
        }
        let key = (namespace.clone(), name.to_owned());
        for _ in 0..8 {
            let tx = {
                let map = self.inner.env.registry.lock();
                match map.get(&key) {
                    Some(tx) if !tx.is_closed() => tx.clone(),
                    // Not running: nothing can start it while the registry is locked.
                    _ => {
                        self.inner.env.storage.delete(&namespace, name)?;
                        return Ok(true);
                    }
                }
            };
            let (reply, rx) = oneshot::channel();
            if tx.send(Cmd::Delete { reply }).await.is_ok() {
                if let Ok(r) = rx.await {
                    r?;
                    return Ok(true);
                }
            }
            // it ended meanwhile: look again
        }
        Err(crate::StoreError::Io(std::io::Error::other(
            "the instance kept restarting while being deleted",
        )))
    }

    /// Instances awake (holding their database), at most [`Limits::max_open_instances`].
    pub fn awake_instances(&self) -> usize {
        self.inner.env.awake.len()
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

/// The TLS acceptor of `serve_tls` (a placeholder type without the feature `tls`).
#[cfg(feature = "tls")]
type Acceptor = tokio_rustls::TlsAcceptor;
#[cfg(not(feature = "tls"))]
type Acceptor = std::convert::Infallible;

pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// The `Content-Length` of a request, if it has a valid one.
fn announced_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn too_large() -> Response<Body> {
    response::text(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large")
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
    if announced_length(&parts.headers).is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(Request::from_parts(parts, c.to_bytes())),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() {
                Err(too_large())
            } else if e.is::<crate::BodyTimeout>() {
                Err(response::text(
                    StatusCode::REQUEST_TIMEOUT,
                    "Request Timeout",
                ))
            } else {
                Err(response::text(StatusCode::BAD_REQUEST, "Bad Request"))
            }
        }
    }
}

/// A 21-character random id (for connections without `_pk`), like upstream's nanoid.
pub(crate) fn random_id() -> String {
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

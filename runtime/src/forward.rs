//! Cluster routing: requests for an instance that another node owns are forwarded to it
//! (see [`cluster`](crate::cluster#routing)).

use crate::accept::Slot;
use crate::agent::RpcError;
use crate::body::{response, Body};
use crate::cluster::{Pg, Route};
use crate::connection::{Message, Out};
use crate::handle::HandleError;
use crate::instance::Env;
use agentwire_protocol::RawJson;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// The header a forwarded request carries, and its response too: the forwarding node's id.
/// Such a request is served where it lands, never forwarded again.
pub(crate) const FORWARDED_BY: &str = "x-agentwire-forwarded-by";
/// The response header naming the node that ran the instance.
pub(crate) const NODE: &str = "x-agentwire-node";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Forwards the request to the instance's owner, or gives it back to be served here (this
/// node holds the lease, nobody validly does, or the owner's lease ran out while it did not
/// answer).
pub(crate) async fn route<B>(
    pg: &Arc<Pg>,
    ns: &str,
    name: &str,
    req: Request<B>,
) -> Result<Response<Body>, Request<B>>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if req.headers().contains_key(FORWARDED_BY) {
        return Err(req);
    }
    let deadline = Owner::deadline(pg);
    let mut req = req;
    loop {
        let (owner, tcp) = match Owner::reach(pg, ns, name, deadline).await {
            Owner::Here => return Err(req),
            Owner::Gone(_) => return Ok(unavailable()),
            Owner::Reached { owner, tcp } => (owner, tcp),
        };
        tracing::debug!(owner, "forwarding");
        match send(pg, ns, name, &owner, tcp, req).await {
            Sent::Done(mut resp) => {
                if let Ok(v) = HeaderValue::from_str(pg.node.id()) {
                    resp.headers_mut().insert(FORWARDED_BY, v);
                }
                return Ok(resp);
            }
            Sent::Again(r) => req = r,
        }
    }
}

/// Where the owner of an instance is, as far as a request that wants it can tell.
enum Owner {
    /// Serve it here: this node holds the lease, or nobody validly does.
    Here,
    /// The owner, with a new connection to it.
    Reached { owner: String, tcp: TcpStream },
    /// The owner cannot be reached and keeps its lease past the deadline (`None`), or the
    /// lookup failed.
    Gone(Option<crate::cluster::ClusterError>),
}

impl Owner {
    /// How long a request waits at most for a silent owner: twice its lease time and 5 s.
    fn deadline(pg: &Pg) -> tokio::time::Instant {
        tokio::time::Instant::now() + pg.node.lease_ttl * 2 + Duration::from_secs(5)
    }

    /// Looks the owner up and connects to it; an owner that does not accept (dead) or does
    /// not advertise an address is waited out until its lease ends.
    async fn reach(pg: &Pg, ns: &str, name: &str, deadline: tokio::time::Instant) -> Owner {
        loop {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(
                    namespace = ns,
                    name,
                    "owner unreachable and its lease still held"
                );
                return Owner::Gone(None);
            }
            let (owner, address, expires_in) = match pg.route(ns, name).await {
                Ok(Route::Local) => return Owner::Here,
                Ok(Route::Remote {
                    owner,
                    address,
                    expires_in,
                }) => (owner, address, expires_in),
                Err(e) => {
                    tracing::error!(error = %e, "cannot look up the instance's owner");
                    return Owner::Gone(Some(e));
                }
            };
            let wait = expires_in.min(pg.node.lease_ttl / 3) + Duration::from_millis(50);
            let Some(address) = address else {
                tokio::time::sleep(wait).await;
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&address)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    return Owner::Reached { owner, tcp };
                }
                Ok(Err(e)) => {
                    tracing::info!(owner, address, error = %e, "owner unreachable; waiting for its lease");
                }
                Err(_) => {
                    tracing::info!(
                        owner,
                        address,
                        "owner does not accept; waiting for its lease"
                    );
                }
            }
            tokio::time::sleep(wait).await;
        }
    }
}

enum Sent<B> {
    Done(Response<Body>),
    /// The owner's lease ran out before it answered, and the request can still be served
    /// here.
    Again(Request<B>),
}

/// Whether a request carries no body (so it can be sent again).
fn bodiless<B>(req: &Request<B>) -> bool {
    !req.headers().contains_key(header::TRANSFER_ENCODING)
        && req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

async fn send<B>(
    pg: &Arc<Pg>,
    ns: &str,
    name: &str,
    owner: &str,
    tcp: TcpStream,
    mut req: Request<B>,
) -> Sent<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let upgrade = crate::server::is_upgrade(&req);
    let client_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let slot = req.extensions().get::<Slot>().cloned();
    let mut head = Request::builder()
        .method(req.method().clone())
        .uri(req.uri().clone())
        .version(http::Version::HTTP_11);
    for (k, v) in req.headers() {
        if !upgrade && (k == header::CONNECTION || k.as_str() == "keep-alive") {
            continue;
        }
        head = head.header(k, v);
    }
    head = head.header(
        FORWARDED_BY,
        HeaderValue::from_str(pg.node.id()).unwrap_or(HeaderValue::from_static("?")),
    );
    let answer = if bodiless(&req) {
        let Ok(fwd) = head.body(http_body_util::Empty::<Bytes>::new()) else {
            return Sent::Done(unavailable());
        };
        // Kept until the owner answers: if the owner's lease runs out first (a frozen or
        // partitioned owner), the request is served here instead.
        tokio::select! {
            r = exchange(tcp, fwd) => r,
            () = lease_gone(pg, ns, name, owner) => {
                tracing::info!(owner, "the owner's lease ran out before it answered");
                if let Some(u) = client_upgrade {
                    req.extensions_mut().insert(u);
                }
                return Sent::Again(req);
            }
        }
    } else {
        let (_, body) = req.into_parts();
        let Ok(fwd) = head.body(body) else {
            return Sent::Done(unavailable());
        };
        exchange(tcp, fwd).await
    };
    let mut resp = match answer {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(owner, error = %e, "forwarding failed");
            return Sent::Done(unavailable());
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            return Sent::Done(unavailable());
        };
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            // the tunnel keeps the client socket's place under the connection cap
            if let Some(s) = &slot {
                s.upgraded();
            }
            let _slot = slot;
            if let (Ok(c), Ok(u)) = (client.await, upstream.await) {
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
            }
        });
        let (parts, _) = resp.into_parts();
        return Sent::Done(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, mut incoming) = resp.into_parts();
    for h in [header::CONNECTION, header::TRANSFER_ENCODING] {
        parts.headers.remove(h);
    }
    parts.headers.remove("keep-alive");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(frame) = incoming.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                if tx.send(data).await.is_err() {
                    break;
                }
            }
        }
    });
    Sent::Done(Response::from_parts(parts, Body::channel(rx, None)))
}

/// Sends `req` on a new HTTP/1.1 connection and waits for the response head.
async fn exchange<B>(
    tcp: TcpStream,
    req: Request<B>,
) -> Result<Response<hyper::body::Incoming>, hyper::Error>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender.send_request(req).await
}

/// Returns once `owner` no longer holds a valid lease of the instance.
async fn lease_gone(pg: &Arc<Pg>, ns: &str, name: &str, owner: &str) {
    loop {
        tokio::time::sleep(pg.node.lease_ttl / 3).await;
        match pg.route(ns, name).await {
            Ok(Route::Remote { owner: o, .. }) if o == owner => {}
            Ok(_) => return,
            Err(_) => {}
        }
    }
}

fn unavailable() -> Response<Body> {
    let mut r = response::text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// The path of calls forwarded between nodes ([`AgentHandle::call`](crate::AgentHandle::call)
/// on a node that does not own the instance). Only nodes of the cluster may use it: the
/// caller presents its node id and the token it registered in PostgreSQL.
pub(crate) const CALL_PATH: &str = "/_agentwire/call";
/// The header with the forwarding node's token.
const TOKEN: &str = "x-agentwire-token";

type Terminal = Option<Result<Option<RawJson>, HandleError>>;

/// Calls a method of an instance that another node owns, there; passes each frame of the call
/// to `on_frame` until it says the call is over. `None`: the instance is this node's to run
/// (held here, or free): call it locally.
pub(crate) async fn remote_call(
    pg: &Arc<Pg>,
    ns: &str,
    name: &str,
    method: &str,
    args: &[RawJson],
    on_frame: &mut (dyn FnMut(&str) -> Terminal + Send),
) -> Terminal {
    let body = call_body(ns, name, method, args);
    let deadline = Owner::deadline(pg);
    loop {
        let (owner, tcp) = match Owner::reach(pg, ns, name, deadline).await {
            Owner::Here => return None,
            Owner::Gone(None) => return Some(Err(HandleError::Unavailable)),
            Owner::Gone(Some(e)) => return Some(Err(crate::StoreError::from(e).into())),
            Owner::Reached { owner, tcp } => (owner, tcp),
        };
        let Ok(req) = Request::post(CALL_PATH)
            .header(header::HOST, "agentwire")
            .header(header::CONTENT_TYPE, "application/json")
            .header(FORWARDED_BY, pg.node.id())
            .header(TOKEN, pg.token())
            .body(http_body_util::Full::new(Bytes::from(body.clone())))
        else {
            return Some(Err(HandleError::Unavailable));
        };
        tracing::debug!(owner, method, "calling on the owner");
        let resp = tokio::select! {
            r = exchange(tcp, req) => r,
            // a frozen owner: once its lease is gone the call runs where it is owned next
            () = lease_gone(pg, ns, name, &owner) => continue,
        };
        let resp = match resp {
            Ok(r) if r.status() == StatusCode::OK => r,
            Ok(r) => {
                tracing::info!(
                    owner,
                    status = r.status().as_u16(),
                    "forwarded call refused"
                );
                return Some(Err(HandleError::Unavailable));
            }
            Err(e) => {
                tracing::info!(owner, error = %e, "forwarded call failed");
                return Some(Err(HandleError::Unavailable));
            }
        };
        let mut decoder = agentwire_sse::Decoder::new();
        let mut incoming = resp.into_body();
        while let Some(frame) = incoming.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            decoder.handle_input(data);
            while let Some(ev) = decoder.poll_event() {
                if let Ok(ev) = ev {
                    if let Some(r) = on_frame(ev.data()) {
                        return Some(r);
                    }
                }
            }
        }
        return Some(Err(RpcError::new(
            agentwire_protocol::texts::CONNECTION_CLOSED,
        )
        .into()));
    }
}

fn call_body(ns: &str, name: &str, method: &str, args: &[RawJson]) -> String {
    let s = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "\"\"".to_owned());
    let args: Vec<&str> = args.iter().map(RawJson::get).collect();
    format!(
        "{{\"namespace\":{},\"name\":{},\"method\":{},\"args\":[{}]}}",
        s(ns),
        s(name),
        s(method),
        args.join(",")
    )
}

#[derive(serde::Deserialize)]
struct CallRequest {
    namespace: String,
    name: String,
    method: String,
    args: Vec<Box<serde_json::value::RawValue>>,
}

/// Runs a call forwarded by another node of the cluster (see [`remote_call`]) on the local
/// instance; streams the frames of the call as SSE events until its reply.
pub(crate) async fn serve_call<B>(pg: &Arc<Pg>, env: &Env, req: Request<B>) -> Response<Body>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let credentials = {
        let header = |k: &str| {
            req.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (header(FORWARDED_BY), header(TOKEN))
    };
    let peer = match credentials {
        (Some(n), Some(t)) if pg.verify_peer(&n, &t).await => n,
        _ => return response::text(StatusCode::FORBIDDEN, "Forbidden"),
    };
    let limit = env.limits.max_request_body;
    let body = match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return response::text(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large"),
    };
    let Ok(call) = serde_json::from_slice::<CallRequest>(&body) else {
        return response::text(StatusCode::BAD_REQUEST, "Bad Request");
    };
    let Some(class) = env.classes.by_namespace.get(&call.namespace).cloned() else {
        return response::not_found();
    };
    let args: Result<Vec<RawJson>, _> = call
        .args
        .iter()
        .map(|a| RawJson::from_string(a.get().to_owned()))
        .collect();
    let Ok(args) = args else {
        return response::text(StatusCode::BAD_REQUEST, "Bad Request");
    };
    tracing::debug!(peer, method = %call.method, "call forwarded by a node");
    let name: Arc<str> = Arc::from(call.name);
    let Ok((conn, mut out)) =
        crate::handle::start_detached_call(env, &class, &name, call.method, args).await
    else {
        return unavailable();
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        while let Some(o) = out.recv().await {
            let text = match o {
                Out::Msg(Message::Text(t)) => t,
                Out::Close(..) => break,
                Out::Msg(Message::Binary(_)) | Out::Shared(_) => continue,
            };
            let done = crate::handle::interpret(&text, &mut |_| {}).is_some();
            if tx
                .send(crate::sse::encode(None, None, &text))
                .await
                .is_err()
            {
                break;
            }
            // consumed only once the caller's connection took it: a slow caller fills the
            // call's bounded queue, which then ends the call
            conn.dequeued(text.len());
            if done {
                break;
            }
        }
    });
    let mut resp = Response::new(Body::channel(rx, None));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp
}

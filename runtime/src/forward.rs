//! Cluster routing: requests for an instance that another node owns are forwarded to it
//! (see [`cluster`](crate::cluster#routing)).

use crate::accept::Slot;
use crate::body::{response, Body};
use crate::cluster::{Pg, Route};
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
    if req.headers().contains_key(FORWARDED_BY) || pg.holds(ns, name) {
        return Err(req);
    }
    let ttl = pg.node.lease_ttl;
    let deadline = tokio::time::Instant::now() + ttl * 2 + Duration::from_secs(5);
    let mut req = req;
    loop {
        if tokio::time::Instant::now() > deadline {
            tracing::warn!(
                namespace = ns,
                name,
                "owner unreachable and its lease still held"
            );
            return Ok(unavailable());
        }
        let (owner, address, expires_in) = match pg.route(ns, name).await {
            Ok(Route::Local) => return Err(req),
            Ok(Route::Remote {
                owner,
                address,
                expires_in,
            }) => (owner, address, expires_in),
            Err(e) => {
                tracing::error!(error = %e, "cannot look up the instance's owner");
                return Ok(unavailable());
            }
        };
        let wait = expires_in.min(ttl / 3) + Duration::from_millis(50);
        let Some(address) = address else {
            // an owner that does not advertise an address: its lease has to run out
            tokio::time::sleep(wait).await;
            continue;
        };
        let tcp = match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&address))
            .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                tracing::info!(owner, address, error = %e, "owner unreachable; waiting for its lease");
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(_) => {
                tracing::info!(
                    owner,
                    address,
                    "owner does not accept; waiting for its lease"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tracing::debug!(owner, address, "forwarding");
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

//! Connection admission: the connection cap, shedding of idle HTTP connections, the answer
//! given when the cap is reached, keep-alive and request-body progress deadlines.
//!
//! Every accepted socket holds a [`Slot`] until it is closed — through its HTTP connection and,
//! after an upgrade, its WebSocket — so the cap counts file descriptors, not requests. An HTTP
//! connection with no request in flight is *idle*: it is listed (oldest first) so that, at the
//! cap, the oldest idle one is closed to make room before a new client is refused, and it is
//! closed anyway after [`Limits::keep_alive_timeout`](crate::Limits::keep_alive_timeout).

use http_body::{Body as HttpBody, Frame, SizeHint};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Sockets over the cap that still get a `503` (beyond it they are closed at once).
const REFUSE_RESERVE: usize = 64;

/// The accepted sockets of a server.
#[derive(Debug, Default)]
pub(crate) struct Conns {
    open: AtomicUsize,
    next: AtomicU64,
    /// Idle HTTP connections by accept order.
    idle: Mutex<BTreeMap<u64, Arc<Ctl>>>,
}

/// What the serve loop does with a new socket.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Serve it.
    Serve(Slot),
    /// Answer `503` and close it.
    Refuse(Slot),
    /// Close it at once.
    Drop,
}

impl Conns {
    /// Open sockets.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admits a new socket under `cap`: below it, served; at it, the oldest idle HTTP
    /// connection is asked to close and the new one is served; with none idle, refused.
    pub(crate) fn admit(self: &Arc<Self>, cap: usize) -> Admit {
        let open = self.open.load(Ordering::Relaxed);
        if open >= cap && !self.shed_oldest_idle() {
            if open >= cap + REFUSE_RESERVE {
                return Admit::Drop;
            }
            return Admit::Refuse(self.slot());
        }
        Admit::Serve(self.slot())
    }

    fn slot(self: &Arc<Self>) -> Slot {
        self.open.fetch_add(1, Ordering::Relaxed);
        Slot(Arc::new(SlotInner {
            conns: self.clone(),
            seq: self.next.fetch_add(1, Ordering::Relaxed),
            ctl: Arc::new(Ctl::default()),
        }))
    }

    /// Asks the oldest idle HTTP connection to close; `false` when none is idle.
    pub(crate) fn shed_oldest_idle(&self) -> bool {
        let oldest = lock(&self.idle).pop_first();
        match oldest {
            Some((_, ctl)) => {
                ctl.shed.notify_one();
                tracing::debug!("closing the oldest idle connection to make room");
                true
            }
            None => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Per-connection signals.
#[derive(Debug, Default)]
pub(crate) struct Ctl {
    /// The connection is asked to close (it was idle when the cap was reached).
    pub(crate) shed: Notify,
    /// Requests in flight changed.
    pub(crate) changed: Notify,
    in_flight: AtomicUsize,
    /// The socket became a WebSocket: never idle, never shed.
    upgraded: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct SlotInner {
    conns: Arc<Conns>,
    seq: u64,
    ctl: Arc<Ctl>,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        lock(&self.conns.idle).remove(&self.seq);
        self.conns.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One accepted socket's place under the cap, held until the socket is closed (cloned into
/// the WebSocket task on upgrade).
#[derive(Debug, Clone)]
pub(crate) struct Slot(Arc<SlotInner>);

impl Slot {
    pub(crate) fn ctl(&self) -> &Arc<Ctl> {
        &self.0.ctl
    }

    /// Whether no request is in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.0.ctl.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Lists the connection as idle (it may be shed).
    pub(crate) fn mark_idle(&self) {
        let mut idle = lock(&self.0.conns.idle);
        if !self.0.ctl.upgraded.load(Ordering::Relaxed) {
            idle.insert(self.0.seq, self.0.ctl.clone());
        }
    }

    /// The socket is now a WebSocket: it stays counted but is never shed as idle.
    pub(crate) fn upgraded(&self) {
        let mut idle = lock(&self.0.conns.idle);
        self.0.ctl.upgraded.store(true, Ordering::Relaxed);
        idle.remove(&self.0.seq);
    }

    /// A request started: the connection is not idle until the guard's response body ends.
    pub(crate) fn request(&self) -> Busy {
        self.0.ctl.in_flight.fetch_add(1, Ordering::Relaxed);
        lock(&self.0.conns.idle).remove(&self.0.seq);
        Busy(self.clone())
    }
}

/// A request in flight; dropped with its response body.
#[derive(Debug)]
pub(crate) struct Busy(Slot);

impl Drop for Busy {
    fn drop(&mut self) {
        let ctl = &self.0 .0.ctl;
        if ctl.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.mark_idle();
            ctl.changed.notify_one();
        }
    }
}

/// A response body that keeps its request counted as in flight until it ends or is dropped
/// (so a connection streaming SSE is not idle).
#[derive(Debug)]
pub(crate) struct Tracked<B> {
    pub(crate) inner: B,
    pub(crate) _busy: Option<Busy>,
}

impl<B: HttpBody + Unpin> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            self._busy = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body no frame of which arrived within the timeout.
#[derive(Debug, thiserror::Error)]
#[error("request body timed out: no data for {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body that fails with [`BodyTimeout`] when no data arrives for `timeout` while it
/// is being read (a client that announced a body and stalls cannot hold the request forever).
#[derive(Debug)]
pub(crate) struct Progress<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Progress<B> {
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: None,
        }
    }
}

impl<B> HttpBody for Progress<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<crate::BoxError>,
{
    type Data = B::Data;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.sleep = None;
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Answers a refused socket with `503` (after reading what the client sent, so that the
/// answer is not lost to a reset) and closes it; bounded by a short deadline.
pub(crate) async fn refuse(mut stream: TcpStream, slot: Slot) {
    const BODY: &str = "Server at capacity, retry later\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        // let the client read the answer before the socket goes
        let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
    })
    .await;
    drop(slot);
}

/// The process's soft limit on open files, where the platform tells it (Linux:
/// `/proc/self/limits`).
pub(crate) fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

/// The default bound on awake instances: a sixteenth of the open-files limit, 16 to 1,024.
pub(crate) fn default_max_open_instances() -> usize {
    open_files_limit().map_or(256, |n| (n / 16).clamp(16, 1024))
}

/// The default connection cap: the open-files limit less what instance databases (3 files
/// each) and the process itself need; at least 64. Without a known limit, 10,000.
pub(crate) fn default_max_connections(max_open_instances: usize) -> usize {
    match open_files_limit() {
        Some(n) => n
            .saturating_sub(max_open_instances.saturating_mul(3))
            .saturating_sub(64)
            .max(64),
        None => 10_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_sheds_idle_then_refuses_then_drops() {
        let conns = Arc::new(Conns::default());
        let a = match conns.admit(2) {
            Admit::Serve(s) => s,
            other => panic!("{other:?}"),
        };
        let b = match conns.admit(2) {
            Admit::Serve(s) => s,
            other => panic!("{other:?}"),
        };
        let busy = b.request();
        a.mark_idle();
        // at the cap with `a` idle: `a` is asked to close, the new one is served
        let c = match conns.admit(2) {
            Admit::Serve(s) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(conns.open(), 3);
        // nothing idle any more: refused
        let refused: Vec<_> = (0..REFUSE_RESERVE - 1)
            .map(|_| match conns.admit(2) {
                Admit::Refuse(s) => s,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(matches!(conns.admit(2), Admit::Drop));
        drop(refused);
        drop(busy);
        assert!(b.is_idle());
        drop((a, b, c));
        assert_eq!(conns.open(), 0);
    }

    #[test]
    fn reads_the_open_files_limit() {
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }
}

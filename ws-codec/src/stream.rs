//! [`WebSocketStream`]: the [`Connection`] machine driven over a tokio byte stream (feature
//! `tokio`), in either role.
//!
//! The driver is shaped like quinn's `ConnectionDriver`, in named phases that a caller can
//! also run one by one inside its own `select!` loop:
//!
//! * **input** — [`read`](WebSocketStream::read): wait for bytes (or the machine's next
//!   deadline), feed them to [`Connection::handle_input`];
//! * **events** — [`poll_event`](WebSocketStream::poll_event): messages, pings, the peer's
//!   Close, the end;
//! * **transmits** — [`flush`](WebSocketStream::flush): everything queued (`send_*`, control
//!   frames, Close) as vectored writes of header and payload slices, no copies; each write
//!   must make progress within the write deadline;
//! * **timers** — inside [`read`](WebSocketStream::read): heartbeat pings, pong and close
//!   timeouts ([`Connection::handle_timeout`]).
//!
//! [`next`](WebSocketStream::next) runs the phases in order until there is an event: the
//! whole driver in one call. Sending is through the machine ([`send_text`](WebSocketStream::send_text),
//! [`send_prepared`](WebSocketStream::send_prepared), [`close`](WebSocketStream::close)),
//! bounded by [`Config::max_outbound_buffered`](crate::Config::max_outbound_buffered) (a
//! full buffer refuses with [`SendError::BufferFull`]), or from other tasks through a
//! cloneable [`WsSender`] ([`sender`](WebSocketStream::sender)), whose queue is bounded in
//! bytes ([`DEFAULT_QUEUE_BYTES`]) and taken in by [`read`](WebSocketStream::read) /
//! [`next`](WebSocketStream::next).
//!
//! An idle stream holds no read buffer: while nothing is buffered it reads into a stack buffer
//! and keeps only what arrived.
//!
//! ```
//! use agentwire_ws::stream::WebSocketStream;
//! use agentwire_ws::{Config, Event, Role};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // two ends of an in-memory pipe (a TCP stream or an upgraded HTTP connection in practice,
//! // after the handshake)
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let mut server = WebSocketStream::new(a, Role::Server, Config::default());
//! let mut client = WebSocketStream::new(b, Role::Client, Config::default());
//! client.send_text("hello").unwrap();
//! client.flush().await.unwrap();
//! match server.next().await {
//!     Some(Event::Text(t)) => assert_eq!(t.as_str(), "hello"),
//!     other => panic!("{other:?}"),
//! }
//! # }
//! ```

use crate::close::close_reason;
use crate::{CloseCode, Config, Connection, Event, PreparedMessage, Role, SendError, Utf8Bytes};
use bytes::{Bytes, BytesMut};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

/// Default bound of the queue of [`WsSender`]s, in payload bytes.
pub const DEFAULT_QUEUE_BYTES: usize = 16 << 20;

/// A message queued by a [`WsSender`].
#[derive(Debug)]
enum Queued {
    Text(Utf8Bytes),
    Binary(Bytes),
    Prepared(PreparedMessage),
    Close(CloseCode, String),
}

impl Queued {
    fn len(&self) -> usize {
        match self {
            Queued::Text(t) => t.len(),
            Queued::Binary(b) => b.len(),
            Queued::Prepared(p) => p.payload().len(),
            Queued::Close(..) => 0,
        }
    }
}

/// Why a [`WsSender`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The stream is gone (dropped, or its connection ended).
    #[error("websocket stream gone")]
    Closed,
    /// The queue holds its bound of bytes already (a peer that does not read, or a sender
    /// faster than the socket); nothing was queued.
    #[error("websocket send queue full")]
    Full,
}

/// A cloneable, `Send` handle that queues messages for a [`WebSocketStream`] from any task;
/// the stream sends them, in order, from its [`read`](WebSocketStream::read) phase. The queue
/// is bounded in payload bytes ([`WebSocketStream::with_queue_limit`]).
#[derive(Debug, Clone)]
pub struct WsSender {
    tx: mpsc::UnboundedSender<Queued>,
    queued: Arc<AtomicUsize>,
    max: usize,
}

impl WsSender {
    fn push(&self, msg: Queued) -> Result<(), QueueError> {
        let len = msg.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max && len > 0 {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(QueueError::Full);
        }
        self.tx.send(msg).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            QueueError::Closed
        })
    }

    /// Queues a text message.
    pub fn send_text(&self, text: impl Into<Utf8Bytes>) -> Result<(), QueueError> {
        self.push(Queued::Text(text.into()))
    }

    /// Queues a binary message.
    pub fn send_binary(&self, data: impl Into<Bytes>) -> Result<(), QueueError> {
        self.push(Queued::Binary(data.into()))
    }

    /// Queues a message prepared once for many connections.
    pub fn send_prepared(&self, msg: &PreparedMessage) -> Result<(), QueueError> {
        self.push(Queued::Prepared(msg.clone()))
    }

    /// Queues the start of the closing handshake (after the messages queued before it).
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), QueueError> {
        self.push(Queued::Close(code, reason.to_owned()))
    }

    /// Whether the stream is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Default deadline for a write to make progress (a peer that stopped reading).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// Frames gathered into one vectored write at most.
const MAX_IOV: usize = 64;

/// Bytes read at once while idle (into a stack buffer).
const IDLE_READ: usize = 4 * 1024;

/// Spare capacity reserved for a read into the buffer.
const READ_CHUNK: usize = 8 * 1024;

/// A WebSocket over `IO` (after the opening handshake): the Sans-IO [`Connection`] plus its
/// socket, read buffer and deadlines. See the [module docs](self).
#[derive(Debug)]
pub struct WebSocketStream<IO> {
    io: IO,
    ws: Connection,
    rbuf: BytesMut,
    write_timeout: Duration,
    /// A write failed or timed out: nothing more is written.
    io_dead: bool,
    /// The transport ended (EOF or error) or the machine finished.
    done: bool,
    bytes_in: u64,
    bytes_out: u64,
    queue: Option<Queue>,
    queue_limit: usize,
}

#[derive(Debug)]
struct Queue {
    tx: mpsc::UnboundedSender<Queued>,
    rx: mpsc::UnboundedReceiver<Queued>,
    queued: Arc<AtomicUsize>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> WebSocketStream<IO> {
    /// A stream over `io` whose handshake is done, in `role`.
    pub fn new(io: IO, role: Role, config: Config) -> Self {
        Self::from_connection(io, Connection::new(role, config, Instant::now()))
    }

    /// A stream around a machine built by the caller (e.g. with permessage-deflate
    /// negotiated by the handshake).
    pub fn from_connection(io: IO, ws: Connection) -> Self {
        Self {
            io,
            ws,
            rbuf: BytesMut::new(),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            io_dead: false,
            done: false,
            bytes_in: 0,
            bytes_out: 0,
            queue: None,
            queue_limit: DEFAULT_QUEUE_BYTES,
        }
    }

    /// The bound, in payload bytes, of what [`WsSender`]s may have queued
    /// ([`DEFAULT_QUEUE_BYTES`]); set it before the first [`sender`](Self::sender).
    pub fn with_queue_limit(mut self, bytes: usize) -> Self {
        self.queue_limit = bytes;
        self
    }

    /// A cloneable sender for other tasks (all senders share one queue).
    pub fn sender(&mut self) -> WsSender {
        let limit = self.queue_limit;
        let q = self.queue.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            Queue {
                tx,
                rx,
                queued: Arc::new(AtomicUsize::new(0)),
            }
        });
        WsSender {
            tx: q.tx.clone(),
            queued: q.queued.clone(),
            max: limit,
        }
    }

    /// Moves what senders queued into the machine (at most 256 messages at once).
    fn take_queued(&mut self, first: Option<Queued>) {
        let Some(q) = self.queue.as_mut() else { return };
        let mut next = first.or_else(|| q.rx.try_recv().ok());
        let mut n = 0;
        while let Some(msg) = next.take() {
            q.queued.fetch_sub(msg.len(), Ordering::AcqRel);
            let r = match msg {
                Queued::Text(t) => self.ws.send_text(t),
                Queued::Binary(b) => self.ws.send_binary(b),
                Queued::Prepared(p) => self.ws.send_prepared(&p),
                Queued::Close(code, reason) => {
                    self.ws
                        .close(Instant::now(), code.or_normal(), close_reason(&reason))
                }
            };
            if let Err(SendError::BufferFull { .. }) = r {
                let _ = self
                    .ws
                    .close(Instant::now(), CloseCode::POLICY, "send queue full");
            }
            n += 1;
            if n < 256 {
                next = q.rx.try_recv().ok();
            }
        }
    }

    /// Bytes that arrived with the handshake (after the request or response head): handled
    /// as if just read.
    pub fn with_leftover(mut self, leftover: &[u8]) -> Self {
        if !leftover.is_empty() {
            self.rbuf.extend_from_slice(leftover);
            self.ws.handle_input(Instant::now(), &mut self.rbuf);
            if self.rbuf.is_empty() {
                self.rbuf = BytesMut::new();
            }
        }
        self
    }

    /// How long one write may make no progress before the transport is given up
    /// ([`DEFAULT_WRITE_TIMEOUT`]).
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The machine (state, counters, and every sending call).
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.ws
    }

    /// The transport.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Bytes read from and written to the transport so far.
    pub fn wire_bytes(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }

    /// Queues a text message (sent by the next [`flush`](Self::flush)).
    pub fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), SendError> {
        self.ws.send_text(text)
    }

    /// Queues a binary message.
    pub fn send_binary(&mut self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.ws.send_binary(data)
    }

    /// Queues a message prepared once for many connections.
    pub fn send_prepared(&mut self, msg: &PreparedMessage) -> Result<(), SendError> {
        self.ws.send_prepared(msg)
    }

    /// Starts the closing handshake (the reason is cut to 123 bytes at a character
    /// boundary; a code that may not be sent becomes `1000`).
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.ws
            .close(Instant::now(), code.or_normal(), close_reason(reason))
    }

    /// Events phase: the next event the machine has, without I/O.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.ws.poll_event();
        if matches!(ev, Some(Event::Closed { .. })) {
            self.done = true;
        }
        ev
    }

    /// Whether the connection is over (its `Closed` event was returned).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Transmits phase: writes every pending frame, header and payload as slices of vectored
    /// writes. A write that makes no progress within the write timeout fails with
    /// `TimedOut`; after any failure the transport is given up (the machine sees the end
    /// and reports `Closed`) and later calls write nothing.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.io_dead {
            return Ok(());
        }
        let r = self.write_pending().await;
        if r.is_err() {
            self.io_dead = true;
            self.ws.handle_eof(Instant::now());
        }
        r
    }

    async fn write_pending(&mut self) -> io::Result<()> {
        let mut frames = Vec::new();
        loop {
            frames.clear();
            while frames.len() < MAX_IOV {
                match self.ws.poll_transmit() {
                    Some(t) => frames.push(t),
                    None => break,
                }
            }
            if frames.is_empty() {
                return Ok(());
            }
            let mut slices: Vec<IoSlice<'_>> = frames
                .iter()
                .flat_map(|t| [IoSlice::new(&t.head), IoSlice::new(&t.payload)])
                .filter(|s| !s.is_empty())
                .collect();
            let mut bufs = &mut slices[..];
            while !bufs.is_empty() {
                let n = tokio::time::timeout(self.write_timeout, self.io.write_vectored(bufs))
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                self.bytes_out += n as u64;
                IoSlice::advance_slices(&mut bufs, n);
            }
            tokio::time::timeout(self.write_timeout, self.io.flush())
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        }
    }

    /// Gives the transport up at once, writing nothing more (e.g. for a peer that stopped
    /// reading): the machine sees the end and reports `Closed`.
    pub fn abort(&mut self) {
        self.io_dead = true;
        self.ws.handle_eof(Instant::now());
    }

    /// Input and timers phases: waits for bytes from the transport or the machine's next
    /// deadline, and hands either to the machine. Cancel-safe (nothing read is lost when the
    /// future is dropped), so it can sit in a `select!` beside the caller's own queues.
    pub async fn read(&mut self) {
        if self.done {
            return std::future::pending().await;
        }
        let deadline = self.ws.poll_timeout();
        let open = self.ws.state() == crate::ConnState::Open;
        let queue = &mut self.queue;
        let queued = async move {
            match queue.as_mut() {
                Some(q) if open => q.rx.recv().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(first) = queued => self.take_queued(Some(first)),
            r = read_some(&mut self.io, &mut self.rbuf) => match r {
                Ok(0) | Err(_) => self.ws.handle_eof(Instant::now()),
                Ok(n) => {
                    self.bytes_in += n as u64;
                    self.ws.handle_input(Instant::now(), &mut self.rbuf);
                    if self.rbuf.is_empty() {
                        // idle: hold no buffer (payloads handed out keep their part alive)
                        self.rbuf = BytesMut::new();
                    }
                }
            },
            _ = sleep_until(deadline) => self.ws.handle_timeout(Instant::now()),
        }
    }

    /// The whole driver: the next event, writing what is pending and reading as needed;
    /// `None` after the `Closed` event. A failed write ends the connection (its `Closed`
    /// event reports the error).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.poll_event() {
                if self.done {
                    // the end: what is pending (our answer to the peer's Close) goes first
                    let _ = self.flush().await;
                }
                return Some(ev);
            }
            if self.done {
                return None;
            }
            let _ = self.flush().await;
            if self.ws.state() == crate::ConnState::Closed {
                continue; // a failed write ended it: collect the Closed event
            }
            self.read().await;
        }
    }

    /// After the end: shuts the transport's write side down (bounded by the write timeout)
    /// and returns it.
    pub async fn shutdown(mut self) -> IO {
        if !self.io_dead {
            let _ = self.flush().await;
            let _ = tokio::time::timeout(self.write_timeout, self.io.shutdown()).await;
        }
        self.io
    }
}

/// Reads what is available. With nothing buffered, into a stack buffer (an idle stream keeps
/// no heap buffer while it waits); mid-frame, straight into `buf` (which `handle_input`
/// reserved for the rest of the frame).
async fn read_some<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.is_empty() {
        poll_fn(|cx| {
            let mut stack = [0u8; IDLE_READ];
            let mut rb = ReadBuf::new(&mut stack);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    buf.extend_from_slice(rb.filled());
                    Poll::Ready(Ok(rb.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    } else {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        tokio::io::AsyncReadExt::read_buf(io, buf).await
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 16);
        (
            WebSocketStream::new(a, Role::Server, Config::default()),
            WebSocketStream::new(b, Role::Client, Config::default()),
        )
    }

    #[tokio::test]
    async fn messages_both_ways_then_a_clean_close() {
        let (mut s, mut c) = pair();
        c.send_text("ping").unwrap();
        c.send_binary(vec![1u8, 2, 3]).unwrap();
        c.flush().await.unwrap();
        assert!(matches!(s.next().await, Some(Event::Text(t)) if t.as_str() == "ping"));
        assert!(matches!(s.next().await, Some(Event::Binary(b)) if b[..] == [1, 2, 3]));
        let big = "x".repeat(200_000);
        s.send_text(big.clone()).unwrap();
        s.close(CloseCode::NORMAL, "bye").unwrap();
        let server = tokio::spawn(async move {
            let mut evs = Vec::new();
            while let Some(ev) = s.next().await {
                evs.push(ev);
            }
            evs
        });
        let mut got_big = false;
        let mut clean = None;
        while let Some(ev) = c.next().await {
            match ev {
                Event::Text(t) => got_big = t.as_str() == big,
                Event::Closed { clean: cl, .. } => clean = Some(cl),
                _ => {}
            }
        }
        assert!(got_big);
        assert_eq!(clean, Some(true));
        let evs = server.await.unwrap();
        assert!(
            matches!(evs.last(), Some(Event::Closed { clean: true, .. })),
            "{evs:?}"
        );
        assert!(c.is_done());
        assert!(c.next().await.is_none());
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_fails_the_write_deadline() {
        let (a, _b) = tokio::io::duplex(1024);
        let mut s = WebSocketStream::new(a, Role::Server, Config::default())
            .with_write_timeout(Duration::from_millis(50));
        s.send_binary(vec![0u8; 64 * 1024]).unwrap();
        let e = s.flush().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // the machine saw the end: the next event is Closed, unclean
        assert!(matches!(
            s.next().await,
            Some(Event::Closed { clean: false, .. })
        ));
    }

    #[tokio::test]
    async fn protocol_violations_close_with_their_code() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut s = WebSocketStream::new(a, Role::Server, Config::default());
        // masked frame with the reserved opcode 3
        b.write_all(&[0x83, 0x80, 1, 2, 3, 4]).await.unwrap();
        let mut close_code = None;
        while let Some(ev) = s.next().await {
            if let Event::Closed {
                error: Some(crate::ConnectionError::Protocol(p)),
                ..
            } = ev
            {
                close_code = Some(p.close_code());
            }
            // the peer never answers the Close: drop our end of the pipe to end it
            if !s.is_done() && s.connection().state() != crate::ConnState::Open {
                drop(std::mem::replace(&mut b, tokio::io::duplex(1).0));
            }
        }
        assert_eq!(close_code, Some(CloseCode::PROTOCOL));
    }

    #[tokio::test]
    async fn leftover_input_is_handled_first() {
        let (a, _b) = tokio::io::duplex(1024);
        // an unmasked client frame would be a violation: mask a text frame "hi" by hand
        let mask = [9u8, 8, 7, 6];
        let payload: Vec<u8> = b"hi"
            .iter()
            .zip(mask.iter().cycle())
            .map(|(p, m)| p ^ m)
            .collect();
        let mut frame = vec![0x81, 0x82];
        frame.extend_from_slice(&mask);
        frame.extend_from_slice(&payload);
        let mut s = WebSocketStream::new(a, Role::Server, Config::default()).with_leftover(&frame);
        assert!(matches!(s.poll_event(), Some(Event::Text(t)) if t.as_str() == "hi"));
    }

    #[tokio::test]
    async fn senders_queue_from_other_tasks_within_their_bound() {
        tokio::time::timeout(Duration::from_secs(10), senders_queue())
            .await
            .unwrap();
    }

    async fn senders_queue() {
        let (s, mut c) = pair();
        let mut s = s.with_queue_limit(16);
        let tx = s.sender();
        let tx2 = tx.clone();
        assert_eq!(tx.send_binary(vec![0u8; 17]), Err(QueueError::Full));
        tokio::spawn(async move {
            tx2.send_text("from a task").unwrap();
            tx2.close(CloseCode::NORMAL, "done").unwrap();
        });
        let server = tokio::spawn(async move { while s.next().await.is_some() {} });
        let mut got = Vec::new();
        while let Some(ev) = c.next().await {
            match ev {
                Event::Text(t) => got.push(t.as_str().to_owned()),
                Event::CloseReceived { code, .. } => got.push(format!("{:?}", code.map(|c| c.0))),
                _ => {}
            }
        }
        assert_eq!(got, ["from a task", "Some(1000)"]);
        server.await.unwrap();
        assert!(tx.is_closed());
        assert_eq!(tx.send_text("late"), Err(QueueError::Closed));
    }
}

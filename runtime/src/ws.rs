//! The socket driver: one task per WebSocket drives the `agentwire-ws` machine.
//!
//! read → `handle_input` → events → the instance's queue; the connection's outbound queue →
//! `send_*`; `poll_transmit` → vectored writes; `poll_timeout` → timer. The instance is never
//! awaited for anything but queue space, and the instance never waits for a socket.

use crate::connection::{Connection, Message, Out};
use crate::instance::Cmd;
use agentwire_ws::{CloseCode, Connection as Ws, Event, Role};
use bytes::BytesMut;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// Bytes reserved for a read when the buffer has less room than that.
const READ_CHUNK: usize = 8 * 1024;

/// The upgraded connection: the TCP stream itself when hyper hands it over (then an idle
/// socket waits for readiness without holding a buffer), or hyper's upgraded I/O otherwise.
#[derive(Debug)]
pub(crate) enum Transport {
    Tcp(TcpStream),
    Other(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>),
}

impl Transport {
    /// Reads what is available into `buf`, allocating only once data is ready (TCP).
    async fn read_some(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Transport::Tcp(s) => loop {
                s.readable().await?;
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(READ_CHUNK);
                }
                match s.try_read_buf(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    r => return r,
                }
            },
            Transport::Other(io) => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(READ_CHUNK);
                }
                io.read_buf(buf).await
            }
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Transport::Other(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Other(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Tcp(s) => s.is_write_vectored(),
            Transport::Other(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Frames gathered into one vectored write at most.
const MAX_IOV: usize = 64;

pub(crate) async fn drive(
    mut io: Transport,
    initial: bytes::Bytes,
    conn: Connection,
    mut out_rx: mpsc::UnboundedReceiver<Out>,
    instance: mpsc::Sender<Cmd>,
    limits: crate::Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let (_open, opened) = (crate::metrics::ws_opened(), Instant::now());
    tracing::info!("websocket open");
    let mut ws = Ws::new(Role::Server, limits.ws, Instant::now());
    // A copy: `initial` is a view of hyper's whole read buffer, which it would keep alive.
    let mut rbuf = BytesMut::from(&initial[..]);
    drop(initial);
    let mut received_close: Option<(u16, String)> = None;
    let mut protocol_error: Option<crate::SocketError> = None;
    let mut sent_close: Option<(u16, String)> = None;
    let mut out_open = true;
    // Set when a write failed, timed out or was abandoned: nothing more is written.
    let mut io_dead = false;
    // The connect frames (identity, [state], MCP servers) were queued by the instance before
    // the upgrade was answered; they are written with everything else, as fast as the socket
    // takes them. Input that came with the upgrade request is handled like any later read.
    if !rbuf.is_empty() {
        ws.handle_input(Instant::now(), &mut rbuf);
    }
    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        let _ = ws.close(
            Instant::now(),
            CloseCode::GOING_AWAY,
            "server shutting down",
        );
    }
    loop {
        // 1. events → the instance
        let mut finished = None;
        while let Some(ev) = ws.poll_event() {
            match ev {
                Event::Text(text) => {
                    crate::metrics::message_in(text.len());
                    let cmd = Cmd::Text {
                        conn: conn.clone(),
                        text,
                    };
                    if instance.send(cmd).await.is_err() {
                        let _ = ws.close(Instant::now(), CloseCode::GOING_AWAY, "agent gone");
                    }
                }
                Event::Binary(data) => {
                    crate::metrics::message_in(data.len());
                    let cmd = Cmd::Binary {
                        conn: conn.clone(),
                        data,
                    };
                    if instance.send(cmd).await.is_err() {
                        let _ = ws.close(Instant::now(), CloseCode::GOING_AWAY, "agent gone");
                    }
                }
                Event::CloseReceived { code, reason } => {
                    received_close = Some((
                        code.map_or(CloseCode::NO_STATUS.0, |c| c.0),
                        reason.as_str().to_owned(),
                    ));
                }
                Event::Closed { clean, error, .. } => {
                    if let Some(e) = &error {
                        tracing::debug!(id = conn.id(), error = %e, "websocket closed abnormally");
                    }
                    if let Some(agentwire_ws::ConnectionError::Protocol(e)) = &error {
                        protocol_error = Some(crate::SocketError {
                            code: e.close_code(),
                            message: e.to_string(),
                        });
                    }
                    finished = Some(clean);
                }
                _ => {}
            }
        }
        // 2. outbound messages queued meanwhile (after the events, so that a Close that came
        //    in with the last read has taken effect: nothing is sent after a peer's Close),
        //    then transmit
        if out_open && finished.is_none() {
            drain_out(&mut ws, &conn, &mut out_rx, None, &mut sent_close);
        }
        let written = if io_dead {
            Ok(())
        } else {
            tokio::select! {
            r = write_pending(&mut ws, &mut io, limits.ws_write_timeout) => r,
            // a connection whose queue overflowed: stop writing, free everything
            _ = conn.inner.abort.notified() => {
                tracing::info!(id = conn.id(), "closing a connection that stopped reading (1008)");
                sent_close.get_or_insert((CloseCode::POLICY.0, "send queue full".into()));
                Err(std::io::Error::other("send queue overflowed"))
            }
            }
        };
        if let Err(e) = written {
            io_dead = true;
            if e.kind() == std::io::ErrorKind::TimedOut {
                tracing::info!(
                    id = conn.id(),
                    "aborting a connection whose writes made no progress"
                );
            }
            ws.handle_eof(Instant::now());
            if finished.is_none() {
                continue; // collect the Closed event
            }
        }
        if let Some(clean) = finished {
            conn.mark_closed();
            let (code, reason) = received_close
                .or(sent_close)
                .unwrap_or((CloseCode::ABNORMAL.0, String::new()));
            let ms = opened.elapsed().as_millis() as u64;
            tracing::info!(code, reason, clean, duration_ms = ms, "websocket closed");
            crate::metrics::ws_closed(code);
            let _ = instance
                .send(Cmd::Close {
                    conn: conn.clone(),
                    code,
                    reason,
                    clean,
                    error: protocol_error.take(),
                })
                .await;
            if !io_dead {
                let _ = tokio::time::timeout(limits.ws_write_timeout, io.shutdown()).await;
            }
            return;
        }
        // 3. wait for input, output, a deadline or shutdown
        if rbuf.is_empty() {
            // Let go of the read buffer while idle (message payloads handed out keep their
            // part of it alive on their own): an idle socket holds no buffer.
            rbuf = BytesMut::new();
        }
        let deadline = ws.poll_timeout();
        tokio::select! {
            biased;
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                let _ = ws.close(Instant::now(), CloseCode::GOING_AWAY, "server shutting down");
                sent_close.get_or_insert((CloseCode::GOING_AWAY.0, "server shutting down".into()));
            }
            // Input first: a peer's Close that is already here is seen before messages queued
            // for it meanwhile (which then go nowhere, as with the reference server); outbound
            // messages are still drained after every read (step 2), so a busy reader cannot
            // starve them.
            r = io.read_some(&mut rbuf) => {
                match r {
                    Ok(0) | Err(_) => ws.handle_eof(Instant::now()),
                    Ok(n) => {
                        crate::metrics::wire_in(n);
                        ws.handle_input(Instant::now(), &mut rbuf);
                    }
                }
            }
            out = out_rx.recv(), if out_open => match out {
                Some(first) => drain_out(&mut ws, &conn, &mut out_rx, Some(first), &mut sent_close),
                None => out_open = false,
            },
            _ = sleep_until(deadline) => ws.handle_timeout(Instant::now()),
        }
    }
}

/// Applies `first` and then whatever else is queued (at most 256 messages per call).
fn drain_out(
    ws: &mut Ws,
    conn: &Connection,
    out_rx: &mut mpsc::UnboundedReceiver<Out>,
    first: Option<Out>,
    sent_close: &mut Option<(u16, String)>,
) {
    let mut next = first.or_else(|| out_rx.try_recv().ok());
    let mut n = 0;
    while let Some(out) = next.take() {
        apply(ws, conn, out, sent_close);
        n += 1;
        if n < 256 {
            next = out_rx.try_recv().ok();
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn apply(ws: &mut Ws, conn: &Connection, out: Out, sent_close: &mut Option<(u16, String)>) {
    match out {
        Out::Msg(msg) => {
            crate::metrics::message_out(&msg);
            let r = match msg {
                Message::Text(t) => {
                    conn.dequeued(t.len());
                    ws.send_text(t)
                }
                Message::Binary(b) => {
                    conn.dequeued(b.len());
                    ws.send_binary(b)
                }
            };
            if let Err(agentwire_ws::SendError::BufferFull { .. }) = r {
                crate::metrics::connection_overflow();
                tracing::warn!(id = conn.id(), "send buffer full; closing the connection");
                let _ = ws.close(Instant::now(), CloseCode::POLICY, "send queue full");
            }
        }
        Out::Shared(msg) => {
            crate::metrics::message_out_len(msg.payload().len());
            conn.dequeued(msg.payload().len());
            if let Err(agentwire_ws::SendError::BufferFull { .. }) = ws.send_prepared(&msg) {
                let _ = ws.close(Instant::now(), CloseCode::POLICY, "send queue full");
            }
        }
        Out::Close(code, reason) => {
            let reason = truncate(&reason, 123);
            let code = if code.is_valid_on_wire() {
                code
            } else {
                CloseCode::NORMAL
            };
            if ws.close(Instant::now(), code, reason).is_ok() {
                sent_close.get_or_insert((code.0, reason.to_owned()));
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes every pending frame, header and payload as separate slices of one vectored write.
///
/// Each write must make progress within `timeout` (a peer that stopped reading fills the
/// socket buffers and then never takes more): otherwise `TimedOut`, and the socket is dropped.
async fn write_pending(
    ws: &mut Ws,
    io: &mut Transport,
    timeout: std::time::Duration,
) -> std::io::Result<()> {
    let mut frames = Vec::new();
    loop {
        frames.clear();
        while frames.len() < MAX_IOV {
            match ws.poll_transmit() {
                Some(t) => frames.push(t),
                None => break,
            }
        }
        if frames.is_empty() {
            return Ok(());
        }
        // header and payload of every frame as slices of one vectored write, no copies
        let mut slices: Vec<IoSlice<'_>> = frames
            .iter()
            .flat_map(|t| [IoSlice::new(&t.head), IoSlice::new(&t.payload)])
            .filter(|s| !s.is_empty())
            .collect();
        let mut bufs = &mut slices[..];
        while !bufs.is_empty() {
            let n = tokio::time::timeout(timeout, io.write_vectored(bufs))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            crate::metrics::wire_out(n);
            IoSlice::advance_slices(&mut bufs, n);
        }
        tokio::time::timeout(timeout, io.flush())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
}

//! The socket task: one per WebSocket, on the shared driver
//! ([`agentwire_ws::stream::WebSocketStream`]).
//!
//! driver input → events → the instance's queue; the connection's outbound queue → the
//! driver's `send_*` → its transmits (vectored writes with the write deadline); its timers
//! inside the read phase. The instance is never awaited for anything but queue space, and
//! the instance never waits for a socket.

use crate::connection::{Connection, Message, Out};
use crate::instance::Cmd;
use agentwire_ws::stream::WebSocketStream;
use agentwire_ws::{CloseCode, Connection as Ws, Event, Role};
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// The upgraded connection: the TCP stream itself when hyper hands it over (then an idle
/// socket waits for readiness without holding a buffer), or hyper's upgraded I/O otherwise.
#[derive(Debug)]
pub(crate) enum Transport {
    Tcp(TcpStream),
    Other(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>),
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

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

/// The socket task: the `agentwire-ws` driver ([`WebSocketStream`]) between the socket, the
/// instance's queue and the connection's outbound queue.
pub(crate) async fn drive(
    io: Transport,
    initial: bytes::Bytes,
    conn: Connection,
    mut out_rx: mpsc::UnboundedReceiver<Out>,
    instance: mpsc::Sender<Cmd>,
    limits: crate::Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let (_open, opened) = (crate::metrics::ws_opened(), Instant::now());
    tracing::info!("websocket open");
    let machine = Ws::new(Role::Server, limits.ws, Instant::now());
    // Input that came with the upgrade request is handled like any later read (copied:
    // `initial` is a view of hyper's whole read buffer, which it would keep alive).
    let mut ws = WebSocketStream::from_connection(io, machine)
        .with_write_timeout(limits.ws_write_timeout)
        .with_leftover(&initial);
    drop(initial);
    let mut wire = Wire::default();
    wire.count(&ws);
    let mut received_close: Option<(u16, String)> = None;
    let mut sent_close: Option<(u16, String)> = None;
    let mut protocol_error: Option<crate::SocketError> = None;
    let mut out_open = true;
    // Set when a write failed, timed out or was abandoned: nothing more is written.
    let mut io_dead = false;
    // The connect frames (identity, [state], MCP servers) were queued by the instance before
    // the upgrade was answered; they are written with everything else, as fast as the socket
    // takes them.
    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        let _ = ws.close(CloseCode::GOING_AWAY, "server shutting down");
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
                        let _ = ws.close(CloseCode::GOING_AWAY, "agent gone");
                    }
                }
                Event::Binary(data) => {
                    crate::metrics::message_in(data.len());
                    let cmd = Cmd::Binary {
                        conn: conn.clone(),
                        data,
                    };
                    if instance.send(cmd).await.is_err() {
                        let _ = ws.close(CloseCode::GOING_AWAY, "agent gone");
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
                r = ws.flush() => r,
                // a connection whose queue overflowed: stop writing, free everything
                _ = conn.inner.abort.notified() => {
                    tracing::info!(id = conn.id(), "closing a connection that stopped reading (1008)");
                    sent_close.get_or_insert((CloseCode::POLICY.0, "send queue full".into()));
                    ws.abort();
                    Err(std::io::Error::other("send queue overflowed"))
                }
            }
        };
        wire.count(&ws);
        if let Err(e) = written {
            io_dead = true;
            if e.kind() == std::io::ErrorKind::TimedOut {
                tracing::info!(
                    id = conn.id(),
                    "aborting a connection whose writes made no progress"
                );
            }
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
            ws.shutdown().await;
            return;
        }
        // 3. wait for input, output, a deadline or shutdown
        tokio::select! {
            biased;
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                let _ = ws.close(CloseCode::GOING_AWAY, "server shutting down");
                sent_close.get_or_insert((CloseCode::GOING_AWAY.0, "server shutting down".into()));
            }
            // Input (and the machine's timers) first: a peer's Close that is already here is
            // seen before messages queued for it meanwhile (which then go nowhere, as with the
            // reference server); outbound messages are still drained after every read (step
            // 2), so a busy reader cannot starve them.
            () = ws.read() => wire.count(&ws),
            out = out_rx.recv(), if out_open => match out {
                Some(first) => drain_out(&mut ws, &conn, &mut out_rx, Some(first), &mut sent_close),
                None => out_open = false,
            },
        }
    }
}

/// Wire byte counters already reported to the metrics.
#[derive(Default)]
struct Wire {
    bytes_in: u64,
    bytes_out: u64,
}

impl Wire {
    fn count(&mut self, ws: &Stream) {
        let (i, o) = ws.wire_bytes();
        if i > self.bytes_in {
            crate::metrics::wire_in((i - self.bytes_in) as usize);
            self.bytes_in = i;
        }
        if o > self.bytes_out {
            crate::metrics::wire_out((o - self.bytes_out) as usize);
            self.bytes_out = o;
        }
    }
}

type Stream = WebSocketStream<Transport>;

/// Applies `first` and then whatever else is queued (at most 256 messages per call).
fn drain_out(
    ws: &mut Stream,
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

fn apply(ws: &mut Stream, conn: &Connection, out: Out, sent_close: &mut Option<(u16, String)>) {
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
                let _ = ws.close(CloseCode::POLICY, "send queue full");
            }
        }
        Out::Shared(msg) => {
            crate::metrics::message_out_len(msg.payload().len());
            conn.dequeued(msg.payload().len());
            if let Err(agentwire_ws::SendError::BufferFull { .. }) = ws.send_prepared(&msg) {
                let _ = ws.close(CloseCode::POLICY, "send queue full");
            }
        }
        Out::Close(code, reason) => {
            // (what `close` sends, recorded as sent)
            let (code, reason) = (code.or_normal(), agentwire_ws::close::close_reason(&reason));
            if ws.close(code, reason).is_ok() {
                sent_close.get_or_insert((code.0, reason.to_owned()));
            }
        }
    }
}

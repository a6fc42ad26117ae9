//! Process-wide metrics in the Prometheus / OpenMetrics text format.
//!
//! Every [`Server`](crate::Server) of the process counts into one set of metrics (as with the
//! default registry of other Prometheus clients); [`encode`] renders them for a scrape, and
//! [`snapshot`] reads the main figures. `agentwire serve` serves them at `/metrics` of
//! `--metrics-addr` (or of its own address with `--metrics`).
//!
//! | metric | type | what |
//! | --- | --- | --- |
//! | `agentwire_websockets` | gauge | open WebSocket connections |
//! | `agentwire_websockets_opened_total` | counter | WebSocket connections accepted |
//! | `agentwire_websocket_closes_total{code}` | counter | closed connections by close code (`1006`: no close frame) |
//! | `agentwire_instances{state="live"\|"hibernated"}` | gauge | agent instances in memory / evicted with open sockets or not yet started |
//! | `agentwire_messages_total{direction="in"\|"out"}` | counter | WebSocket messages |
//! | `agentwire_message_bytes_total{direction}` | counter | their payload bytes (uncompressed) |
//! | `agentwire_wire_bytes_total{direction}` | counter | bytes on the sockets (frame headers included, after compression) |
//! | `agentwire_rpc_duration_seconds` | histogram | time in `on_call`, from dispatch to the reply being queued |
//! | `agentwire_queue_overflows_total{queue="connection"\|"sse"}` | counter | connections closed with `1008` for a full send queue; SSE subscribers dropped |
//! | `agentwire_instance_queue_full_total` | counter | events that waited for room in a full instance queue |
//! | `agentwire_sqlite_write_duration_seconds` | histogram | state saves and SSE appends, commit included |
//! | `agentwire_postgres_write_duration_seconds` | histogram | fenced image writes to PostgreSQL (cluster storage), round trip included |
//! | `agentwire_leases_total{event="acquired"\|"released"\|"lost"\|"fenced"}` | counter | instance leases taken, given back, found gone at renewal, and writes or loads refused for a stale epoch |
//!
//! The compression ratio of outbound traffic is
//! `agentwire_wire_bytes_total{direction="out"} / agentwire_message_bytes_total{direction="out"}`
//! (frame headers included, so slightly above 1 without compression).
//!
//! The instrumentation costs a few relaxed atomic additions per message; metrics are
//! collected whether or not anything scrapes them.

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Instant;

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = [(&'static str, &'static str); 1];

struct Metrics {
    registry: Registry,
    websockets: Gauge,
    opened: Counter,
    closes: Family<[(&'static str, u16); 1], Counter>,
    live: Gauge,
    hibernated: Gauge,
    msgs_in: Counter,
    msgs_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    wire_in: Counter,
    wire_out: Counter,
    rpc: Histogram,
    overflow_conn: Counter,
    overflow_sse: Counter,
    instance_full: Counter,
    sqlite_write: Histogram,
    // registered (and scraped) either way; written only by cluster storage
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pg_write: Histogram,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    leases: Family<Labels, Counter>,
}

static M: LazyLock<Metrics> = LazyLock::new(|| {
    let mut r = Registry::with_prefix("agentwire");
    let websockets = Gauge::default();
    r.register(
        "websockets",
        "Open WebSocket connections",
        websockets.clone(),
    );
    let opened = Counter::default();
    r.register(
        "websockets_opened",
        "WebSocket connections accepted",
        opened.clone(),
    );
    let closes = Family::<[(&'static str, u16); 1], Counter>::default();
    r.register(
        "websocket_closes",
        "Closed WebSocket connections by close code",
        closes.clone(),
    );
    let instances = Family::<Labels, Gauge>::default();
    r.register(
        "instances",
        "Agent instances: live (in memory) or hibernated (evicted, or not started yet)",
        instances.clone(),
    );
    let messages = Family::<Labels, Counter>::default();
    r.register("messages", "WebSocket messages", messages.clone());
    let bytes = Family::<Labels, Counter>::default();
    r.register(
        "message_bytes",
        "WebSocket message payload bytes (uncompressed)",
        bytes.clone(),
    );
    let wire = Family::<Labels, Counter>::default();
    r.register(
        "wire_bytes",
        "Bytes read from and written to WebSocket connections",
        wire.clone(),
    );
    let rpc = Histogram::new(exponential_buckets(0.0001, 4.0, 10));
    r.register(
        "rpc_duration_seconds",
        "Time in on_call, from dispatch to the reply being queued",
        rpc.clone(),
    );
    let overflows = Family::<Labels, Counter>::default();
    r.register(
        "queue_overflows",
        "Connections closed for a full send queue, SSE subscribers dropped",
        overflows.clone(),
    );
    let instance_full = Counter::default();
    r.register(
        "instance_queue_full",
        "Events that waited for room in a full instance queue",
        instance_full.clone(),
    );
    let sqlite_write = Histogram::new(exponential_buckets(0.00005, 3.0, 10));
    r.register(
        "sqlite_write_duration_seconds",
        "SQLite state saves and SSE appends, commit included",
        sqlite_write.clone(),
    );
    let pg_write = Histogram::new(exponential_buckets(0.0001, 3.0, 10));
    r.register(
        "postgres_write_duration_seconds",
        "Fenced image writes to PostgreSQL, round trip included",
        pg_write.clone(),
    );
    let leases = Family::<Labels, Counter>::default();
    r.register(
        "leases",
        "Instance leases acquired, released, lost, and stale-epoch writes refused",
        leases.clone(),
    );
    let dir = |d| [("direction", d)];
    Metrics {
        websockets,
        opened,
        closes,
        live: instances.get_or_create_owned(&[("state", "live")]),
        hibernated: instances.get_or_create_owned(&[("state", "hibernated")]),
        msgs_in: messages.get_or_create_owned(&dir("in")),
        msgs_out: messages.get_or_create_owned(&dir("out")),
        bytes_in: bytes.get_or_create_owned(&dir("in")),
        bytes_out: bytes.get_or_create_owned(&dir("out")),
        wire_in: wire.get_or_create_owned(&dir("in")),
        wire_out: wire.get_or_create_owned(&dir("out")),
        rpc,
        overflow_conn: overflows.get_or_create_owned(&[("queue", "connection")]),
        overflow_sse: overflows.get_or_create_owned(&[("queue", "sse")]),
        instance_full,
        sqlite_write,
        pg_write,
        leases,
        registry: r,
    }
});

/// Appends the metrics, OpenMetrics text (ending with `# EOF`), to `out`.
pub fn encode(out: &mut String) {
    // Writing into a `String` cannot fail.
    let _ = text::encode(out, &M.registry);
}

/// The main figures, as read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// Open WebSocket connections.
    pub websockets: i64,
    /// Instances in memory.
    pub instances_live: i64,
    /// Instances evicted (or not started yet) whose task is still there.
    pub instances_hibernated: i64,
    /// WebSocket messages received.
    pub messages_in: u64,
    /// WebSocket messages sent.
    pub messages_out: u64,
    /// Payload bytes of the messages received (uncompressed).
    pub message_bytes_in: u64,
    /// Payload bytes of the messages sent (uncompressed).
    pub message_bytes_out: u64,
    /// Bytes read from WebSocket connections.
    pub wire_bytes_in: u64,
    /// Bytes written to WebSocket connections (compressed, frame headers included).
    pub wire_bytes_out: u64,
}

/// Reads the main figures.
pub fn snapshot() -> Snapshot {
    let m = &*M;
    Snapshot {
        websockets: m.websockets.get(),
        instances_live: m.live.get(),
        instances_hibernated: m.hibernated.get(),
        messages_in: m.msgs_in.get(),
        messages_out: m.msgs_out.get(),
        message_bytes_in: m.bytes_in.get(),
        message_bytes_out: m.bytes_out.get(),
        wire_bytes_in: m.wire_in.get(),
        wire_bytes_out: m.wire_out.get(),
    }
}

// ----- the runtime's one-line hooks -----

/// An open WebSocket, counted until dropped.
pub(crate) struct OpenSocket(());

pub(crate) fn ws_opened() -> OpenSocket {
    M.opened.inc();
    M.websockets.inc();
    OpenSocket(())
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        M.websockets.dec();
    }
}

pub(crate) fn ws_closed(code: u16) {
    M.closes.get_or_create(&[("code", code)]).inc();
}

pub(crate) fn message_in(len: usize) {
    M.msgs_in.inc();
    M.bytes_in.inc_by(len as u64);
}

pub(crate) fn message_out(msg: &crate::Message) {
    let len = match msg {
        crate::Message::Text(t) => t.len(),
        crate::Message::Binary(b) => b.len(),
    };
    message_out_len(len);
}

pub(crate) fn message_out_len(len: usize) {
    M.msgs_out.inc();
    M.bytes_out.inc_by(len as u64);
}

pub(crate) fn wire_in(n: usize) {
    M.wire_in.inc_by(n as u64);
}

pub(crate) fn wire_out(n: usize) {
    M.wire_out.inc_by(n as u64);
}

pub(crate) fn connection_overflow() {
    M.overflow_conn.inc();
}

pub(crate) fn sse_overflow() {
    M.overflow_sse.inc();
}

pub(crate) fn instance_queue_full() {
    M.instance_full.inc();
}

/// Starts a timing for [`rpc_done`] or [`sqlite_write_done`].
pub(crate) fn start() -> Instant {
    Instant::now()
}

pub(crate) fn rpc_done(start: Instant) {
    M.rpc.observe(start.elapsed().as_secs_f64());
}

#[cfg(feature = "postgres")]
pub(crate) fn pg_write_done(start: Instant) {
    M.pg_write.observe(start.elapsed().as_secs_f64());
}

#[cfg(feature = "postgres")]
pub(crate) fn lease_event(event: &'static str) {
    M.leases.get_or_create(&[("event", event)]).inc();
}

pub(crate) fn sqlite_write_done(start: Instant) {
    M.sqlite_write.observe(start.elapsed().as_secs_f64());
}

/// Where an instance task is: counted in `agentwire_instances` until dropped.
#[derive(Debug, Default)]
pub(crate) struct InstanceGauge(Option<bool>);

impl InstanceGauge {
    /// Records whether the instance is live (its agent in memory) now.
    pub(crate) fn set(&mut self, live: bool) {
        if self.0 == Some(live) {
            return;
        }
        self.leave();
        if live { &M.live } else { &M.hibernated }.inc();
        self.0 = Some(live);
    }

    fn leave(&mut self) {
        match self.0.take() {
            Some(true) => M.live.dec(),
            Some(false) => M.hibernated.dec(),
            None => 0,
        };
    }
}

impl Drop for InstanceGauge {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family_in_openmetrics_text() {
        let mut g = InstanceGauge::default();
        g.set(true);
        let before = snapshot();
        message_out(&crate::Message::Binary(bytes::Bytes::from_static(&[0; 10])));
        wire_out(4);
        let after = snapshot();
        // Other tests of the process count too: compare differences, at least.
        assert!(after.messages_out > before.messages_out);
        assert!(after.message_bytes_out >= before.message_bytes_out + 10);
        assert!(after.instances_live >= 1);
        let mut s = String::new();
        encode(&mut s);
        for name in [
            "agentwire_websockets ",
            "agentwire_instances{state=\"live\"}",
            "agentwire_messages_total{direction=\"out\"}",
            "agentwire_wire_bytes_total{direction=\"out\"}",
            "agentwire_rpc_duration_seconds_bucket",
            "agentwire_queue_overflows_total{queue=\"connection\"}",
            "agentwire_sqlite_write_duration_seconds_count",
        ] {
            assert!(s.contains(name), "{name} missing from\n{s}");
        }
        assert!(s.ends_with("# EOF\n"));
    }
}

//! The `agentwire` command.
//!
//! ```sh
//! agentwire                   # = agentwire serve
//! agentwire serve [--addr 127.0.0.1:8787] [--data ./agentwire-data] [--no-deflate]
//!                 [--metrics-addr 127.0.0.1:9090] [--metrics] [--log-format text|json]
//!                 [--idle-timeout 10s] [--max-message 1MiB] …   # every `Limits` field
//!                 [--tls-cert cert.pem --tls-key key.pem]       # HTTPS and wss://
//!                             # the demo agents and their page at http://127.0.0.1:8787/
//! agentwire tail <url> [--ca-cert ca.pem]   # follow an SSE stream (http:// or https://): one
//!                             # JSON line per event, resumes with Last-Event-ID
//! ```
//!
//! Every flag of `serve` also reads an `AGENTWIRE_*` environment variable (`--idle-timeout`:
//! `AGENTWIRE_IDLE_TIMEOUT`); `agentwire serve --help` lists them. Logs go to stderr, filtered
//! by `RUST_LOG` (default `info`: connections, warnings and errors).

use agentwire::body::{response, Body};
use agentwire::{Limits, Storage};
use agentwire_sse::ReconnectPolicy;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use http::{header, HeaderValue, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An agent server speaking the Cloudflare Agents protocol over WebSocket and SSE.
///
/// Without a subcommand, runs `serve` (with the flags given).
#[derive(Debug, Parser)]
#[command(name = "agentwire", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Args)]
struct LogArgs {
    /// Log format on stderr (the filter is RUST_LOG, default `info`).
    #[arg(long, env = "AGENTWIRE_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo agents (CounterAgent, ChatRoom, TaskRunner, Presence) and their page at `/`.
    ///
    /// WebSocket messages are compressed (permessage-deflate) with clients that offer it, as
    /// browsers do, unless --no-deflate. `/healthz` and `/readyz` answer on the same address
    /// (and on --metrics-addr). Stops on Ctrl-C or SIGTERM: /readyz turns 503, WebSockets are
    /// closed with 1001, requests finish (up to --shutdown-grace).
    Serve(Box<ServeArgs>),
    /// Follow a Server-Sent Events stream, printing each event as a JSON line.
    ///
    /// Lines are {"type":…,"data":…,"lastEventId":…}; reconnects with Last-Event-ID after the
    /// server's retry: time and stops when the server answers 204.
    Tail(TailArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines with the span fields (peer, agent, name, id).
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "AGENTWIRE_ADDR", default_value = "127.0.0.1:8787")]
    addr: String,
    /// Directory of the SQLite files (one per instance); created if missing.
    #[arg(long, env = "AGENTWIRE_DATA", default_value = "./agentwire-data")]
    data: PathBuf,
    /// Do not compress WebSocket messages.
    #[arg(long, env = "AGENTWIRE_NO_DEFLATE")]
    no_deflate: bool,
    /// Also listen on this address for /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "AGENTWIRE_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// Serve /metrics on --addr too.
    #[arg(long, env = "AGENTWIRE_METRICS")]
    metrics: bool,
    /// An origin (scheme://host[:port], or `*` for any) whose pages may open WebSockets and
    /// send POST/PUT/PATCH/DELETE requests, and whose CORS preflights are answered; others get
    /// 403 (requests without Origin and same-origin ones pass). Repeatable, or comma-separated.
    #[arg(
        long,
        env = "AGENTWIRE_ALLOW_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    allow_origin: Vec<String>,
    /// Worker threads of the runtime the agent instances run on, apart from the one serving
    /// sockets and HTTP (a hook that blocks a thread then cannot stall I/O); 0 runs them on the
    /// serving runtime. [default: the number of CPUs]
    #[arg(long, env = "AGENTWIRE_AGENT_THREADS", value_name = "N")]
    agent_threads: Option<usize>,
    /// Serve HTTPS and wss:// with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(
        long,
        env = "AGENTWIRE_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "AGENTWIRE_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Run as a node of a cluster: agent instances live in this PostgreSQL database
    /// (postgres://user:password@host:port/db), each served by the node holding its lease;
    /// requests for instances other nodes own are forwarded to them. --data then only holds
    /// uploaded files.
    #[arg(long, env = "AGENTWIRE_CLUSTER", value_name = "URL")]
    cluster: Option<String>,
    /// This node's id in the cluster: unique per running node (a restarted node may keep its
    /// id). [default: node-<advertised address>]
    #[arg(
        long,
        env = "AGENTWIRE_NODE_ID",
        value_name = "ID",
        requires = "cluster"
    )]
    node_id: Option<String>,
    /// Where the other nodes reach this one (host:port) to forward requests.
    /// [default: the address listened on]
    #[arg(
        long,
        env = "AGENTWIRE_ADVERTISE",
        value_name = "HOST:PORT",
        requires = "cluster"
    )]
    advertise: Option<String>,
    /// How long an instance's lease lasts without renewal: the longest the instances of a
    /// dead node stay unavailable. Renewed every third of it.
    #[arg(
        long,
        env = "AGENTWIRE_LEASE_TTL",
        value_name = "DURATION",
        default_value = "10s"
    )]
    lease_ttl: Dur,
    /// PostgreSQL connections of this node's pool.
    #[arg(
        long,
        env = "AGENTWIRE_PG_POOL",
        value_name = "N",
        default_value_t = 16
    )]
    pg_pool: usize,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Debug, Args)]
struct TailArgs {
    /// The stream's URL (http://host:port/path or https://…).
    url: String,
    /// Trust the certificates of this PEM file (a private CA, a self-signed server) for
    /// https:// instead of the built-in Mozilla roots.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
}

/// A byte count: `1048576`, `64KiB`, `16MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size(usize);

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: usize = n.parse().map_err(|_| format!("not a size: {s:?}"))?;
        let mul: usize = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            u => return Err(format!("unknown size unit {u:?} (use KiB, MiB, GiB)")),
        };
        n.checked_mul(mul)
            .map(Size)
            .ok_or_else(|| format!("too large: {s:?}"))
    }
}

/// A duration: `10s`, `250ms`, `1m 30s` (humantime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dur(Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s)
            .map(Dur)
            .map_err(|e| format!("{e} (e.g. 10s, 250ms)"))
    }
}

/// A duration or `off` (no wait / never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MaybeDur(Option<Duration>);

impl FromStr for MaybeDur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "none" | "never" => Ok(MaybeDur(None)),
            s => Ok(MaybeDur(Some(s.parse::<Dur>()?.0))),
        }
    }
}

/// The flags for [`Limits`]: one line per setting (flag and `AGENTWIRE_*` variable from the
/// field name, value type, help text, and how it lands in `Limits`). Unset flags keep the
/// library's defaults.
macro_rules! limit_args {
    ($( $field:ident : $ty:ty, $env:literal, $help:literal, |$l:ident, $v:ident| $apply:expr; )*) => {
        /// Limits and timeouts; unset ones keep `Limits::default()`.
        #[derive(Debug, Default, Args)]
        #[command(next_help_heading = "Limits (unset: the library's defaults)")]
        struct LimitArgs {
            $(
                #[arg(long, env = $env, help = $help)]
                $field: Option<$ty>,
            )*
        }

        impl LimitArgs {
            fn apply(&self, limits: &mut Limits) {
                $(
                    if let Some($v) = self.$field {
                        let $l = &mut *limits;
                        $apply;
                    }
                )*
            }
        }
    };
}

limit_args! {
    max_queued_bytes: Size, "AGENTWIRE_MAX_QUEUED_BYTES",
        "Outbound bytes a connection may have queued before it is closed with 1008 [default: 16MiB]",
        |l, v| l.max_queued_bytes = v.0;
    instance_queue: usize, "AGENTWIRE_INSTANCE_QUEUE",
        "Events an instance may have queued before senders wait [default: 1024]",
        |l, v| l.instance_queue = v;
    max_request_body: Size, "AGENTWIRE_MAX_REQUEST_BODY",
        "Largest accepted HTTP request body, else 413 [default: 1MiB]",
        |l, v| l.max_request_body = v.0;
    idle_timeout: MaybeDur, "AGENTWIRE_IDLE_TIMEOUT",
        "Idle time after which an instance hibernates, or `off` [default: 10s]",
        |l, v| l.idle_timeout = v.0;
    max_message: Size, "AGENTWIRE_MAX_MESSAGE",
        "Largest WebSocket message (inflated), else close 1009 [default: 1MiB]",
        |l, v| l.ws.max_message = v.0;
    max_frame_payload: Size, "AGENTWIRE_MAX_FRAME_PAYLOAD",
        "Largest WebSocket frame payload, else close 1009 [default: 1MiB]",
        |l, v| l.ws.max_frame_payload = v.0;
    max_outbound_buffered: Size, "AGENTWIRE_MAX_OUTBOUND_BUFFERED",
        "Encoded bytes a WebSocket may buffer for the socket, else close 1008 [default: agentwire-ws's]",
        |l, v| l.ws.max_outbound_buffered = v.0;
    close_timeout: Dur, "AGENTWIRE_CLOSE_TIMEOUT",
        "How long a WebSocket waits for the peer's Close [default: agentwire-ws's]",
        |l, v| l.ws.close_timeout = v.0;
    ping_interval: MaybeDur, "AGENTWIRE_PING_INTERVAL",
        "Ping idle WebSockets this often, or `off` [default: agentwire-ws's]",
        |l, v| l.ws.ping_interval = v.0;
    pong_timeout: Dur, "AGENTWIRE_PONG_TIMEOUT",
        "How long to wait for a Pong before closing [default: agentwire-ws's]",
        |l, v| l.ws.pong_timeout = v.0;
    max_tags: usize, "AGENTWIRE_MAX_TAGS",
        "Most tags per connection, the id included [default: 10]",
        |l, v| l.max_tags = v;
    sse_log_len: usize, "AGENTWIRE_SSE_LOG_LEN",
        "Events kept per SSE stream log [default: 1000]",
        |l, v| l.sse_log_len = v;
    max_instance_tasks: usize, "AGENTWIRE_MAX_INSTANCE_TASKS",
        "Most background tasks (deferred calls in flight) per agent instance [default: 1024]",
        |l, v| l.max_instance_tasks = v;
    shutdown_grace: Dur, "AGENTWIRE_SHUTDOWN_GRACE",
        "How long a graceful shutdown waits for sockets and requests [default: 5s]",
        |l, v| l.shutdown_grace = v.0;
    request_head_timeout: Dur, "AGENTWIRE_REQUEST_HEAD_TIMEOUT",
        "Longest time to receive a request head, else the connection is closed [default: 20s]",
        |l, v| l.request_head_timeout = v.0;
    max_request_head: Size, "AGENTWIRE_MAX_REQUEST_HEAD",
        "Largest request head (request line and headers), else 431; at least 8KiB [default: 16KiB]",
        |l, v| l.max_request_head = v.0;
    request_body_timeout: Dur, "AGENTWIRE_REQUEST_BODY_TIMEOUT",
        "Longest wait for more of a request body being read, else 408 [default: 20s]",
        |l, v| l.request_body_timeout = v.0;
    keep_alive_timeout: Dur, "AGENTWIRE_KEEP_ALIVE_TIMEOUT",
        "An HTTP connection without a request is closed after this long [default: 20s]",
        |l, v| l.keep_alive_timeout = v.0;
    ws_write_timeout: Dur, "AGENTWIRE_WS_WRITE_TIMEOUT",
        "A WebSocket whose writes make no progress this long is dropped [default: 20s]",
        |l, v| l.ws_write_timeout = v.0;
    max_connections: usize, "AGENTWIRE_MAX_CONNECTIONS",
        "Most open sockets; idle HTTP connections are shed, then 503 [default: from the open-files limit]",
        |l, v| l.max_connections = Some(v);
    max_open_instances: usize, "AGENTWIRE_MAX_OPEN_INSTANCES",
        "Most instances awake (each holds its database) [default: open-files limit / 16, 16 to 1024]",
        |l, v| l.max_open_instances = Some(v);
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    // Panics outside agent hooks (which are caught and logged by the runtime) reach the log too.
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string);
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(location, "panic: {payload}");
    }));
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// `/healthz` (the process answers), `/readyz` (503 once shutting down) and, if `metrics`,
/// `/metrics`; `None` for other paths.
fn ops(req: &Request<Bytes>, ready: &AtomicBool, metrics: bool) -> Option<Response<Body>> {
    Some(match req.uri().path() {
        "/healthz" => response::text(StatusCode::OK, "ok\n"),
        "/readyz" if ready.load(Ordering::SeqCst) => response::text(StatusCode::OK, "ready\n"),
        "/readyz" => response::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        "/metrics" if metrics => {
            let mut text = String::new();
            agentwire::metrics::encode(&mut text);
            let mut r = Response::new(Body::from(text));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(agentwire::metrics::CONTENT_TYPE),
            );
            r
        }
        _ => return None,
    })
}

fn limits(args: &ServeArgs) -> Limits {
    #[allow(unused_mut)]
    let mut limits = Limits::default();
    #[cfg(feature = "deflate")]
    if !args.no_deflate {
        limits.deflate = Some(agentwire::server_deflate());
    }
    args.limits.apply(&mut limits);
    limits
}

async fn serve(args: ServeArgs) -> ExitCode {
    let data = &args.data;
    if let Err(e) = std::fs::create_dir_all(data) {
        tracing::error!("cannot create the data directory {}: {e}", data.display());
        return ExitCode::FAILURE;
    }
    let limits = limits(&args);
    tracing::debug!(?limits, "limits");
    let ready = Arc::new(AtomicBool::new(true));
    let (r, metrics) = (ready.clone(), args.metrics);
    let threads = args
        .agent_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let agents = if threads > 0 {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("agentwire-agents")
            .enable_all()
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::error!("cannot start the agents' runtime: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let listener = match tokio::net::TcpListener::bind(&args.addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let local = listener
        .local_addr()
        .map_or_else(|_| args.addr.clone(), |a| a.to_string());
    let storage = match &args.cluster {
        None => Storage::sqlite(data),
        Some(url) => {
            let advertise = args.advertise.clone().unwrap_or_else(|| local.clone());
            let id = args
                .node_id
                .clone()
                .unwrap_or_else(|| format!("node-{advertise}"));
            let node = agentwire::cluster::Node::new(id.clone())
                .advertise(advertise.clone())
                .lease_ttl(args.lease_ttl.0)
                .pool_size(args.pg_pool);
            let storage = match Storage::postgres_node(url, node) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("--cluster: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = storage.connect().await {
                tracing::error!("--cluster: cannot use the PostgreSQL database: {e}");
                return ExitCode::FAILURE;
            }
            tracing::info!(
                node = %id,
                advertise = %advertise,
                lease_ttl = ?args.lease_ttl.0,
                "cluster node"
            );
            storage
        }
    };
    let mut builder =
        agentwire::demo::builder(storage, limits, agentwire::demo::tasks::TaskRunner::new())
            .allowed_origins(args.allow_origin.clone())
            .fallback(move |req| {
                let r = r.clone();
                async move { ops(&req, &r, metrics).unwrap_or_else(|| agentwire::demo::page(&req)) }
            });
    if let Some(rt) = &agents {
        builder = builder.agent_runtime(rt.handle().clone());
    }
    let server = builder.build();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match agentwire::tls::server_config_from_pem(cert, key) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::error!("cannot load the TLS certificate: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let (ops_done, ops_stop) = tokio::sync::oneshot::channel::<()>();
    let ops_task = match args.metrics_addr {
        Some(addr) => {
            let ops_listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("cannot listen on {addr} (--metrics-addr): {e}");
                    return ExitCode::FAILURE;
                }
            };
            let r = ready.clone();
            let ops_server = agentwire::Server::builder()
                .fallback(move |req| {
                    let r = r.clone();
                    async move { ops(&req, &r, true).unwrap_or_else(response::not_found) }
                })
                .build();
            tracing::info!(
                "metrics at http://{}/metrics",
                ops_listener.local_addr().unwrap_or(addr)
            );
            let stop = async {
                let _ = ops_stop.await;
            };
            Some(tokio::spawn(
                ops_server.serve_with_shutdown(ops_listener, stop),
            ))
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        deflate = !args.no_deflate,
        "demo at {scheme}://{local}/ (data in {})",
        data.display()
    );
    let signal = async move {
        stop_signal().await;
        ready.store(false, Ordering::SeqCst);
        tracing::info!("shutting down");
    };
    let res = match tls {
        Some(config) => {
            server
                .serve_tls_with_shutdown(listener, config, signal)
                .await
        }
        None => server.serve_with_shutdown(listener, signal).await,
    };
    let _ = ops_done.send(());
    if let Some(t) = ops_task {
        let _ = t.await;
    }
    if let Some(rt) = agents {
        // a runtime is dropped outside async code
        let _ =
            tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(1))).await;
    }
    match res {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn tail(args: &TailArgs) -> ExitCode {
    let mut out = std::io::stdout();
    let tls = match &args.ca_cert {
        None => agentwire::tls::client_config(),
        Some(path) => {
            let mut roots = agentwire::tls::rustls::RootCertStore::empty();
            let added = agentwire::tls::certs_from_pem(path)
                .map(|certs| roots.add_parsable_certificates(certs).0);
            match added {
                Ok(n) if n > 0 => agentwire::tls::client_config_with_roots(roots),
                Ok(_) => {
                    tracing::error!("{}: no usable certificate", path.display());
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let run = agentwire::tail::tail_with_tls(&args.url, ReconnectPolicy::default(), tls, &mut out);
    tokio::select! {
        res = run => match res {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None | Some(Command::Serve(_)) => {
            let args = match cli.command {
                Some(Command::Serve(args)) => *args,
                _ => cli.serve,
            };
            init_logging(args.log.log_format);
            serve(args).await
        }
        Some(Command::Tail(args)) => {
            init_logging(args.log.log_format);
            tail(&args).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("agentwire").chain(args.iter().copied()))
    }

    fn serve_args(cli: Cli) -> ServeArgs {
        match cli.command {
            None => cli.serve,
            Some(Command::Serve(a)) => *a,
            Some(Command::Tail(_)) => panic!("tail"),
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_is_serve_with_its_flags() {
        let a = serve_args(parse(&["--addr", "0.0.0.0:1", "--no-deflate"]).unwrap());
        assert_eq!(a.addr, "0.0.0.0:1");
        assert!(a.no_deflate);
        let a = serve_args(parse(&["serve", "--data", "/tmp/x"]).unwrap());
        assert_eq!(a.data, PathBuf::from("/tmp/x"));
        assert_eq!(a.addr, "127.0.0.1:8787");
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn limit_flags_land_in_limits() {
        let a = serve_args(
            parse(&[
                "serve",
                "--max-queued-bytes",
                "2MiB",
                "--idle-timeout",
                "off",
                "--max-message",
                "65536",
                "--shutdown-grace",
                "1s 500ms",
                "--keep-alive-timeout",
                "750ms",
                "--max-connections",
                "100",
                "--allow-origin",
                "https://a.example,https://b.example",
                "--ping-interval",
                "20s",
                "--max-tags",
                "3",
            ])
            .unwrap(),
        );
        let l = limits(&a);
        let d = Limits::default();
        assert_eq!(l.max_queued_bytes, 2 << 20);
        assert_eq!(l.idle_timeout, None);
        assert_eq!(l.ws.max_message, 65536);
        assert_eq!(l.ws.max_frame_payload, d.ws.max_frame_payload);
        assert_eq!(l.shutdown_grace, Duration::from_millis(1500));
        assert_eq!(l.keep_alive_timeout, Duration::from_millis(750));
        assert_eq!(l.max_connections, Some(100));
        assert_eq!(l.max_open_instances, d.max_open_instances);
        assert_eq!(a.allow_origin, ["https://a.example", "https://b.example"]);
        assert_eq!(l.ws.ping_interval, Some(Duration::from_secs(20)));
        assert_eq!(l.max_tags, 3);
        assert_eq!(l.instance_queue, d.instance_queue);
        #[cfg(feature = "deflate")]
        assert!(l.deflate.is_some());
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let e = parse(&["serve", "--idle-timeout", "soon"]).unwrap_err();
        assert!(e.to_string().contains("--idle-timeout"), "{e}");
        let e = parse(&["--max-message", "12 parsecs"]).unwrap_err();
        assert!(e.to_string().contains("--max-message"), "{e}");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!("1024".parse::<Size>(), Ok(Size(1024)));
        assert_eq!("64KiB".parse::<Size>(), Ok(Size(64 << 10)));
        assert_eq!("16 MiB".parse::<Size>(), Ok(Size(16 << 20)));
        assert_eq!("2MB".parse::<Size>(), Ok(Size(2_000_000)));
        assert!("MiB".parse::<Size>().is_err());
        assert!("99999999999999999999GiB".parse::<Size>().is_err());
    }

    #[test]
    fn tail_takes_a_url() {
        match parse(&["tail", "http://x/y"]).unwrap().command {
            Some(Command::Tail(t)) => assert_eq!(t.url, "http://x/y"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["tail"]).is_err());
        assert!(parse(&["tail", "--log-format", "json", "http://x/y"]).is_ok());
        let a = serve_args(parse(&["--log-format", "json"]).unwrap());
        assert!(matches!(a.log.log_format, LogFormat::Json));
    }
}

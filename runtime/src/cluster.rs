//! PostgreSQL storage and the cluster: one owner per instance, anywhere in a fleet of nodes.
//!
//! [`Storage::postgres`](crate::Storage::postgres) keeps every instance's data in one
//! PostgreSQL table, `agentwire_instances`, one row per instance:
//!
//! | column | what |
//! |---|---|
//! | `namespace`, `name` | the instance (primary key) |
//! | `owner`, `epoch`, `expires_at` | its lease: the node that serves it, a fencing token raised by every acquisition, and when the lease ends unless renewed |
//! | `image` | the instance's SQLite database (state, SSE logs, schedules, the agent's own tables), as SQLite serializes it |
//! | `version`, `updated_at` | how many images were written, and when the last one was |
//! | `next_due_ms` | the instance's next due schedule, for the nodes' schedule timers |
//!
//! and the nodes in `agentwire_nodes` (`node_id`, `address`, `incarnation`, `heartbeat`).
//! Nodes create both tables themselves.
//!
//! # Ownership
//!
//! A node serves an instance only while it holds the instance's lease. Waking an instance
//! acquires it in one statement (`INSERT … ON CONFLICT DO UPDATE … WHERE the lease is free,
//! expired or ours`), which raises the epoch and reads the image. The node renews its leases
//! every third of [`Node::lease_ttl`] in one statement; a lease it finds gone (taken over after
//! it expired, e.g. while the process was frozen) makes the instance close its sockets with
//! `1012` (service restart: clients reconnect and reach the new owner) and drop its memory
//! without writing; so does every instance of a node that could not renew its leases before
//! they run out (cut off from PostgreSQL: it stops serving reads too). The lease is released
//! when the instance hibernates without connections (it ends then, one idle timeout after its
//! last socket closed), when it is deleted, and when the server shuts down. An instance that
//! hibernates with open sockets keeps its lease.
//!
//! # Writes are fenced, and durable before anything is acknowledged
//!
//! The instance runs on a private in-memory SQLite database loaded from the image: hooks read
//! and write it through [`Context::sql`](crate::Context::sql) as usual. After each event
//! (a message, call, request, alarm, handle operation) that committed anything, the whole
//! image is written with
//! `UPDATE … WHERE owner = me AND epoch = my epoch AND expires_at > now()`: a node whose epoch
//! is stale — paused, partitioned, or restarted — is refused and can never overwrite a newer
//! owner's data. Until that write returns, everything the event produced is held back (an
//! *output gate*): RPC replies, state broadcasts, messages to sockets, SSE events, HTTP
//! responses and handle results. So an acknowledged write is in PostgreSQL, and a refused one
//! is never seen by anyone: its output is dropped and the sockets are closed with `1012`.
//!
//! Consistency: linearizable per instance (one owner at a time, writes ordered by the lease
//! row's lock). Cost: one PostgreSQL round trip per event that wrote, carrying the whole image
//! (about 20 KiB for a small agent; PostgreSQL compresses it), and none for events that only
//! read. Agents with large databases pay for their size on every write; see the README's
//! scaling notes for what would change that (shipping SQLite page or change sets instead).
//!
//! # Routing
//!
//! Any node accepts any request. A request for an instance whose valid lease another node holds
//! is forwarded (HTTP, and WebSocket upgrades as a byte tunnel) to that node's advertised
//! address, found in `agentwire_nodes`. If the owner does not answer (dead or frozen), the
//! request waits for its lease to expire — at most [`Node::lease_ttl`] — and the instance
//! starts here. A forwarded request is never forwarded again. Responses carry
//! `x-agentwire-node`: the node that ran the instance (and `x-agentwire-forwarded-by` when
//! another node forwarded them).
//!
//! [`AgentHandle::call`](crate::AgentHandle::call) and
//! [`call_streaming`](crate::AgentHandle::call_streaming) on a node that does not own the
//! instance run on the owner the same way, over `POST /_agentwire/call` (chunks streamed back).
//! Only nodes may use that path: the caller presents its node id and the random token its
//! process registered in `agentwire_nodes`, which the owner checks there. The other handle
//! operations act on instances this node can own, and answer
//! [`HandleError::Unavailable`](crate::HandleError::Unavailable) for one owned elsewhere.
//!
//! # Connections
//!
//! A socket lives on the node that owns its instance (through a forwarding tunnel if it
//! arrived elsewhere); its metadata (id, tags, per-connection state) stays with it in memory,
//! hibernation included, because an instance with open sockets keeps its lease. When the node
//! goes away so do its sockets, and clients reconnect to the next owner.

use crate::instance::Cmd;
use deadpool_postgres::{Pool, PoolConfig, Runtime, Timeouts};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// This node's identity in a cluster (see [`Storage::postgres_node`](crate::Storage::postgres_node)).
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) id: String,
    pub(crate) advertise: Option<String>,
    pub(crate) lease_ttl: Duration,
    pub(crate) pool_size: usize,
}

/// The default lease time.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

impl Default for Node {
    /// A random id, no advertised address (instances owned by other nodes are not forwarded
    /// to), a 10 s lease, 16 pooled connections.
    fn default() -> Self {
        Self::new(format!("node-{:016x}", random_u64()))
    }
}

impl Node {
    /// A node with this id (unique in the cluster; a restarted node may reuse its id).
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            advertise: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            pool_size: 16,
        }
    }

    /// The `host:port` where other nodes reach this one to forward requests.
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise = Some(addr.into());
        self
    }

    /// How long a lease lasts without renewal (default 10 s, at least 1 s): the longest an
    /// instance of a dead node stays unavailable. Renewed every third of it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Pooled PostgreSQL connections of this node (default 16).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A cluster storage error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The PostgreSQL URL could not be used.
    #[error("PostgreSQL configuration: {0}")]
    Config(String),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Another node holds the instance's lease.
    #[error("{namespace}/{name} is owned by node {owner}")]
    OwnedElsewhere {
        /// The namespace.
        namespace: String,
        /// The instance name.
        name: String,
        /// The owner's node id.
        owner: String,
    },
    /// This node's lease of the instance is gone (expired, or taken over with a newer epoch):
    /// the write was refused.
    #[error("lease of {namespace}/{name} at epoch {epoch} is no longer held; write refused")]
    Fenced {
        /// The namespace.
        namespace: String,
        /// The instance name.
        name: String,
        /// The stale epoch.
        epoch: i64,
    },
}

type Key = (String, String);

/// Where a request for an instance goes.
#[derive(Debug)]
pub(crate) enum Route {
    /// Serve it here (this node holds the lease, or nobody validly does).
    Local,
    /// Another node holds a valid lease: forward to its address; the lease ends in this long.
    Remote {
        owner: String,
        address: Option<String>,
        expires_in: Duration,
    },
}

/// The PostgreSQL side of [`Storage::postgres`](crate::Storage::postgres).
pub(crate) struct Pg {
    pool: Pool,
    pub(crate) node: Node,
    incarnation: i64,
    ready: tokio::sync::OnceCell<()>,
    /// The leases this process holds: epoch and the instance's queue.
    held: Mutex<HashMap<Key, (i64, mpsc::WeakSender<Cmd>)>>,
    started: std::sync::atomic::AtomicBool,
    /// This process's secret, registered with the node: other nodes present theirs with the
    /// calls they forward (see [`verify_peer`](Self::verify_peer)).
    token: String,
    /// Peers' (node id, token) pairs found in `agentwire_nodes`.
    peers: Mutex<std::collections::HashSet<(String, String)>>,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("node", &self.node)
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agentwire_nodes (
    node_id text PRIMARY KEY,
    address text,
    incarnation bigint NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE agentwire_nodes ADD COLUMN IF NOT EXISTS token text;
CREATE TABLE IF NOT EXISTS agentwire_instances (
    namespace text NOT NULL,
    name text NOT NULL,
    owner text,
    epoch bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT now(),
    image bytea,
    version bigint NOT NULL DEFAULT 0,
    next_due_ms bigint,
    updated_at timestamptz,
    PRIMARY KEY (namespace, name)
) WITH (fillfactor = 80);
CREATE INDEX IF NOT EXISTS agentwire_instances_owner ON agentwire_instances (owner);
CREATE INDEX IF NOT EXISTS agentwire_instances_due ON agentwire_instances (next_due_ms)
    WHERE next_due_ms IS NOT NULL;
";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Pg {
    pub(crate) fn new(url: &str, node: Node) -> Result<Self, ClusterError> {
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some(url.to_owned());
        let mut pool = PoolConfig::new(node.pool_size);
        pool.timeouts = Timeouts {
            wait: Some(Duration::from_secs(10)),
            create: Some(Duration::from_secs(5)),
            recycle: Some(Duration::from_secs(5)),
        };
        cfg.pool = Some(pool);
        cfg.manager = Some(deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        });
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1), tokio_postgres::NoTls)
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(Self {
            pool,
            node,
            incarnation: (random_u64() >> 1) as i64,
            ready: tokio::sync::OnceCell::new(),
            held: Mutex::new(HashMap::new()),
            started: std::sync::atomic::AtomicBool::new(false),
            token: format!("{:016x}{:016x}", random_u64(), random_u64()),
            peers: Mutex::new(std::collections::HashSet::new()),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ClusterError> {
        self.ready
            .get_or_try_init(|| async {
                let mut c = self.pool.get().await?;
                // One node creates the tables at a time (concurrent CREATE … IF NOT EXISTS can
                // collide in the catalog).
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock(7406190516)", &[])
                    .await?;
                tx.batch_execute(SCHEMA).await?;
                tx.commit().await?;
                Ok::<(), ClusterError>(())
            })
            .await?;
        Ok(self.pool.get().await?)
    }

    /// Checks the database and registers the node (address, heartbeat).
    pub(crate) async fn connect(&self) -> Result<(), ClusterError> {
        self.heartbeat().await
    }

    async fn heartbeat(&self) -> Result<(), ClusterError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO agentwire_nodes (node_id, address, incarnation, heartbeat, token)
                 VALUES ($1, $2, $3, now(), $4)
                 ON CONFLICT (node_id) DO UPDATE SET address = excluded.address,
                     incarnation = excluded.incarnation, heartbeat = now(),
                     token = excluded.token",
            )
            .await?;
        c.execute(
            &st,
            &[
                &self.node.id,
                &self.node.advertise,
                &self.incarnation,
                &self.token,
            ],
        )
        .await?;
        Ok(())
    }

    /// This process's token, for calls it forwards.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Whether `token` is the registered token of node `node_id` (a node of this cluster,
    /// i.e. one with access to its database).
    pub(crate) async fn verify_peer(&self, node_id: &str, token: &str) -> bool {
        let key = (node_id.to_owned(), token.to_owned());
        if lock(&self.peers).contains(&key) {
            return true;
        }
        let found = async {
            let c = self.client().await?;
            let row = c
                .query_opt(
                    "SELECT 1 FROM agentwire_nodes WHERE node_id = $1 AND token = $2",
                    &[&node_id, &token],
                )
                .await?;
            Ok::<bool, ClusterError>(row.is_some())
        }
        .await
        .unwrap_or(false);
        if found {
            lock(&self.peers).insert(key);
        }
        found
    }

    /// Whether this process holds the instance's lease.
    pub(crate) fn holds(&self, ns: &str, name: &str) -> bool {
        lock(&self.held).contains_key(&(ns.to_owned(), name.to_owned()))
    }

    /// Acquires the instance's lease (raising its epoch) and reads its image.
    pub(crate) async fn acquire(
        &self,
        ns: &str,
        name: &str,
        tx: mpsc::WeakSender<Cmd>,
    ) -> Result<(i64, Option<Vec<u8>>), ClusterError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO agentwire_instances AS i (namespace, name, owner, epoch, expires_at)
                 VALUES ($1, $2, $3, 1, now() + make_interval(secs => $4))
                 ON CONFLICT (namespace, name) DO UPDATE
                     SET owner = excluded.owner, epoch = i.epoch + 1,
                         expires_at = excluded.expires_at
                     WHERE i.owner IS NULL OR i.expires_at <= now() OR i.owner = excluded.owner
                 RETURNING epoch, image",
            )
            .await?;
        let row = c
            .query_opt(
                &st,
                &[&ns, &name, &self.node.id, &secs(self.node.lease_ttl)],
            )
            .await?;
        match row {
            Some(r) => {
                let epoch: i64 = r.get(0);
                let image: Option<Vec<u8>> = r.get(1);
                lock(&self.held).insert((ns.to_owned(), name.to_owned()), (epoch, tx));
                tracing::debug!(epoch, "lease acquired");
                crate::metrics::lease_event("acquired");
                Ok((epoch, image))
            }
            None => {
                let owner = match self.route(ns, name).await? {
                    Route::Remote { owner, .. } => owner,
                    Route::Local => "(released meanwhile)".to_owned(),
                };
                Err(ClusterError::OwnedElsewhere {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                    owner,
                })
            }
        }
    }

    /// Reads the image under a lease this process holds (a wake after hibernation).
    pub(crate) async fn load(
        &self,
        ns: &str,
        name: &str,
        epoch: i64,
    ) -> Result<Option<Vec<u8>>, ClusterError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT image FROM agentwire_instances
                 WHERE namespace = $1 AND name = $2 AND owner = $3 AND epoch = $4
                     AND expires_at > now()",
            )
            .await?;
        match c
            .query_opt(&st, &[&ns, &name, &self.node.id, &epoch])
            .await?
        {
            Some(r) => Ok(r.get(0)),
            None => Err(self.fenced(ns, name, epoch)),
        }
    }

    fn fenced(&self, ns: &str, name: &str, epoch: i64) -> ClusterError {
        crate::metrics::lease_event("fenced");
        ClusterError::Fenced {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            epoch,
        }
    }

    /// Writes the image (and next due time) if the lease at `epoch` is still this node's and
    /// valid; renews it too.
    pub(crate) async fn write(
        &self,
        ns: &str,
        name: &str,
        epoch: i64,
        image: &[u8],
        next_due_ms: Option<i64>,
    ) -> Result<(), ClusterError> {
        let t = crate::metrics::start();
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "UPDATE agentwire_instances
                 SET image = $5, version = version + 1, next_due_ms = $6, updated_at = now(),
                     expires_at = greatest(expires_at, now() + make_interval(secs => $7))
                 WHERE namespace = $1 AND name = $2 AND owner = $3 AND epoch = $4
                     AND expires_at > now()",
            )
            .await?;
        let n = c
            .execute(
                &st,
                &[
                    &ns,
                    &name,
                    &self.node.id,
                    &epoch,
                    &image,
                    &next_due_ms,
                    &secs(self.node.lease_ttl),
                ],
            )
            .await?;
        crate::metrics::pg_write_done(t);
        if n == 1 {
            Ok(())
        } else {
            tracing::warn!(epoch, "write refused: the lease is no longer ours");
            Err(self.fenced(ns, name, epoch))
        }
    }

    /// Releases the lease at `epoch` (nothing if it moved on).
    pub(crate) async fn release(&self, ns: &str, name: &str, epoch: i64) {
        self.forget(ns, name, epoch);
        let r = async {
            let c = self.client().await?;
            let st = c
                .prepare_cached(
                    "UPDATE agentwire_instances SET owner = NULL, expires_at = now()
                     WHERE namespace = $1 AND name = $2 AND owner = $3 AND epoch = $4",
                )
                .await?;
            c.execute(&st, &[&ns, &name, &self.node.id, &epoch]).await?;
            Ok::<(), ClusterError>(())
        }
        .await;
        match r {
            Ok(()) => {
                tracing::debug!(epoch, "lease released");
                crate::metrics::lease_event("released");
            }
            Err(e) => tracing::warn!(error = %e, "lease not released; it expires by itself"),
        }
    }

    /// Forgets a lease locally (lost or released).
    pub(crate) fn forget(&self, ns: &str, name: &str, epoch: i64) {
        let mut held = lock(&self.held);
        let key = (ns.to_owned(), name.to_owned());
        if held.get(&key).is_some_and(|(e, _)| *e == epoch) {
            held.remove(&key);
        }
    }

    /// Deletes the instance's row under the lease at `epoch`.
    pub(crate) async fn delete(
        &self,
        ns: &str,
        name: &str,
        epoch: i64,
    ) -> Result<(), ClusterError> {
        self.forget(ns, name, epoch);
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM agentwire_instances
                 WHERE namespace = $1 AND name = $2 AND owner = $3 AND epoch = $4",
                &[&ns, &name, &self.node.id, &epoch],
            )
            .await?;
        if n == 1 {
            Ok(())
        } else {
            Err(self.fenced(ns, name, epoch))
        }
    }

    /// Where a request for the instance goes.
    pub(crate) async fn route(&self, ns: &str, name: &str) -> Result<Route, ClusterError> {
        if self.holds(ns, name) {
            return Ok(Route::Local);
        }
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT i.owner, n.address,
                     greatest(0, extract(epoch FROM (i.expires_at - now())))::float8
                 FROM agentwire_instances i LEFT JOIN agentwire_nodes n ON n.node_id = i.owner
                 WHERE i.namespace = $1 AND i.name = $2",
            )
            .await?;
        let Some(row) = c.query_opt(&st, &[&ns, &name]).await? else {
            return Ok(Route::Local);
        };
        let owner: Option<String> = row.get(0);
        let address: Option<String> = row.get(1);
        let left: f64 = row.get(2);
        match owner {
            Some(owner) if owner != self.node.id && left > 0.0 => Ok(Route::Remote {
                owner,
                address,
                expires_in: Duration::from_secs_f64(left),
            }),
            _ => Ok(Route::Local),
        }
    }

    /// Renews every lease this process holds; tells instances whose lease is gone.
    async fn renew(&self) -> Result<(), ClusterError> {
        // An instance that ended without giving its lease back (its task is gone) gives it
        // back now instead of having it renewed.
        let orphans: Vec<(Key, i64)> = lock(&self.held)
            .iter()
            .filter(|(_, (_, tx))| tx.upgrade().is_none())
            .map(|(k, (e, _))| (k.clone(), *e))
            .collect();
        for ((ns, name), epoch) in orphans {
            self.release(&ns, &name, epoch).await;
        }
        let held: Vec<(Key, i64)> = lock(&self.held)
            .iter()
            .map(|(k, (e, _))| (k.clone(), *e))
            .collect();
        self.heartbeat().await?;
        if held.is_empty() {
            return Ok(());
        }
        // Every valid lease under this node id, in one statement through the owner index
        // (leases a previous run of this node left behind are renewed too: requests for them
        // are routed here and re-acquire them).
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "UPDATE agentwire_instances SET expires_at = now() + make_interval(secs => $2)
                 WHERE owner = $1 AND expires_at > now()
                 RETURNING namespace, name, epoch",
            )
            .await?;
        let rows = c
            .query(&st, &[&self.node.id, &secs(self.node.lease_ttl)])
            .await?;
        let mut renewed: HashMap<Key, i64> = HashMap::with_capacity(rows.len());
        for r in rows {
            renewed.insert((r.get(0), r.get(1)), r.get(2));
        }
        for (key, epoch) in held {
            if renewed.get(&key) != Some(&epoch) {
                let tx = {
                    let mut h = lock(&self.held);
                    match h.get(&key) {
                        Some((e, tx)) if *e == epoch => {
                            let tx = tx.clone();
                            h.remove(&key);
                            Some(tx)
                        }
                        _ => None, // released or re-acquired meanwhile
                    }
                };
                if let Some(tx) = tx.and_then(|t| t.upgrade()) {
                    tracing::warn!(namespace = %key.0, name = %key.1, epoch, "lease lost");
                    crate::metrics::lease_event("lost");
                    // not awaited here: a busy instance's full queue must not hold up renewals
                    tokio::spawn(async move {
                        let _ = tx.send(Cmd::LeaseLost { epoch }).await;
                    });
                }
            }
        }
        Ok(())
    }

    /// Renews leases and the node's heartbeat every third of the lease time, until the
    /// process ends. Started once.
    pub(crate) fn start(self: &Arc<Self>) {
        if self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let me = Arc::downgrade(self);
        let ttl = self.node.lease_ttl;
        let every = ttl / 3;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // When the last renewal that succeeded was sent: every lease renewed then lasts
            // until at least this plus the lease time by PostgreSQL's clock too.
            let mut renewed = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(pg) = me.upgrade() else { return };
                let sent = tokio::time::Instant::now();
                match tokio::time::timeout(every, pg.renew()).await {
                    Ok(Ok(())) => renewed = sent,
                    Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
                    Err(_) => tracing::warn!("lease renewal timed out"),
                }
                // Cut off from PostgreSQL: before the leases can run out (the next tick would
                // be too late) the instances stop serving here, reads included, as other
                // nodes may own them next.
                if renewed.elapsed() + every >= ttl {
                    pg.give_up_all();
                }
            }
        });
    }

    /// Tells every instance holding a lease that it is lost (this node could not renew).
    fn give_up_all(&self) {
        let held: Vec<(Key, (i64, mpsc::WeakSender<Cmd>))> = lock(&self.held).drain().collect();
        for ((ns, name), (epoch, tx)) in held {
            tracing::warn!(namespace = %ns, name = %name, epoch, "lease expired without renewal");
            crate::metrics::lease_event("lost");
            if let Some(tx) = tx.upgrade() {
                tokio::spawn(async move {
                    let _ = tx.send(Cmd::LeaseLost { epoch }).await;
                });
            }
        }
    }

    /// Instances with a schedule due by `now_ms` that no live node owns (or this one does).
    pub(crate) async fn due(&self, now_ms: i64) -> Result<Vec<(Key, u64)>, ClusterError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT namespace, name, next_due_ms FROM agentwire_instances
                 WHERE next_due_ms <= $1
                     AND (owner IS NULL OR expires_at <= now() OR owner = $2)
                 ORDER BY next_due_ms LIMIT 256",
            )
            .await?;
        let rows = c.query(&st, &[&now_ms, &self.node.id]).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let due: i64 = r.get(2);
                ((r.get(0), r.get(1)), due.max(0) as u64)
            })
            .collect())
    }

    /// Releases every lease this process holds (graceful shutdown).
    pub(crate) async fn release_all(&self) {
        let held: Vec<(Key, i64)> = lock(&self.held)
            .iter()
            .map(|(k, (e, _))| (k.clone(), *e))
            .collect();
        for ((ns, name), epoch) in held {
            self.release(&ns, &name, epoch).await;
        }
    }
}

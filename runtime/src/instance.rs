//! One actor task per agent instance: events one at a time, in arrival order.

use crate::agent::{
    encode_reply, AfterHook, Agent, BoxError, Call, CallSlot, Context, Loaded, Reject, RpcError,
    StateSource,
};
use crate::body::{response, Body};
use crate::connection::{Connection, Message};
use crate::store::Storage;
use crate::Limits;
use agentwire_protocol::{
    RawJson, ServerMessage, ServerSession, SessionEvent, SessionOptions, Utf8Bytes,
};
use bytes::Bytes;
use http::{Response, StatusCode};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// An event for an instance.
#[derive(Debug)]
pub(crate) enum Cmd {
    Connect {
        conn: Connection,
        parts: Arc<http::request::Parts>,
        reply: oneshot::Sender<Option<Response<Body>>>,
    },
    Text {
        conn: Connection,
        text: Utf8Bytes,
    },
    Binary {
        conn: Connection,
        data: Bytes,
    },
    Close {
        conn: Connection,
        code: u16,
        reason: String,
        clean: bool,
        /// The peer broke the WebSocket protocol (reported to `on_error` first).
        error: Option<crate::SocketError>,
    },
    /// Start the instance (with these props) unless it is awake; answers whether it started.
    Start {
        props: Option<serde_json::Value>,
        reply: oneshot::Sender<Result<bool, ()>>,
    },
    Request {
        req: Box<crate::HttpRequest>,
        reply: oneshot::Sender<Response<Body>>,
    },
    Stats {
        reply: oneshot::Sender<InstanceInfo>,
    },
    /// The server is shutting down: end the live SSE responses.
    Shutdown,
    /// Too many instances are awake: hibernate now if possible (see `Limits::max_open_instances`).
    Hibernate,
    /// A schedule of the instance may be due: run what is.
    Alarm,
    /// Delete the instance: close its sockets and SSE responses, remove its data, end.
    Delete {
        reply: oneshot::Sender<Result<(), crate::StoreError>>,
    },
    /// Run a closure with the agent and its context ([`AgentHandle::with`](crate::AgentHandle::with)).
    With(WithFn),
    /// An RPC through a handle, answered on a detached connection.
    Call {
        method: String,
        args: Vec<RawJson>,
        conn: Connection,
    },
    /// The lease at this epoch is gone (cluster storage): close the sockets with `1012`, drop
    /// everything unwritten, end.
    #[cfg(feature = "postgres")]
    LeaseLost {
        epoch: i64,
    },
}

/// A closure run inside an instance; its argument is the instance's [`Actor`], as `Any`
/// (see [`scope`]).
pub(crate) struct WithFn(pub(crate) Box<WithBody>);

type WithBody = dyn FnOnce(&mut dyn std::any::Any) + Send;

impl std::fmt::Debug for WithFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WithFn")
    }
}

/// The agent value and context of the instance given to a [`WithFn`] (`None`: not an
/// instance of `A`, or its agent is not started).
pub(crate) fn scope<A: Agent>(any: &mut dyn std::any::Any) -> Option<(&mut A, &mut Context<A>)> {
    let actor = any.downcast_mut::<Actor<A>>()?;
    Some((actor.agent.as_mut()?, &mut actor.cx))
}

/// The registered classes, by namespace.
#[derive(Default)]
pub(crate) struct Classes {
    pub(crate) by_namespace: HashMap<String, Arc<dyn Class>>,
}

impl std::fmt::Debug for Classes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_namespace.keys()).finish()
    }
}

/// Delivers `cmd` to the instance, starting it if needed; returns its queue. An instance
/// that exits (idle, no connections) between lookup and delivery is started again.
pub(crate) async fn deliver(
    env: &Env,
    class: &Arc<dyn Class>,
    name: &str,
    mut cmd: Cmd,
) -> Option<mpsc::Sender<Cmd>> {
    let key = (class.namespace().to_owned(), name.to_owned());
    for _ in 0..8 {
        let tx = {
            let mut map = env.registry.lock();
            let tx = match map.get(&key) {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => {
                    let tx = class.spawn(name, env.clone());
                    map.insert(key.clone(), tx.clone());
                    tx
                }
            };
            // Under the registry lock an idle instance cannot decide to exit meanwhile.
            match tx.try_send(cmd) {
                Ok(()) => return Some(tx),
                Err(mpsc::error::TrySendError::Full(c)) => {
                    crate::metrics::instance_queue_full();
                    cmd = c;
                    tx
                }
                Err(mpsc::error::TrySendError::Closed(c)) => {
                    cmd = c;
                    map.remove(&key);
                    continue;
                }
            }
        };
        // A full queue: wait for room outside the lock (the instance is busy, not exiting;
        // if it exits anyway the send fails and the loop starts it again).
        match tx.send(cmd).await {
            Ok(()) => return Some(tx),
            Err(e) => cmd = e.0,
        }
    }
    None
}

/// What an instance holds (diagnostics; see [`Server::instance_info`](crate::Server::instance_info)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceInfo {
    /// Whether the agent value is in memory (`false`: never started, or hibernating).
    pub awake: bool,
    /// Open connections.
    pub connections: usize,
    /// How many times the instance started (first start and every wake from hibernation).
    pub starts: u64,
}

/// A registered agent class, with its type erased.
pub(crate) trait Class: Send + Sync {
    fn namespace(&self) -> &str;
    fn spawn(&self, name: &str, env: Env) -> mpsc::Sender<Cmd>;
    fn max_request_body(&self, req: &http::request::Parts) -> Option<u64>;
    /// The `TypeId` of the agent type.
    fn agent_type(&self) -> std::any::TypeId;
}

#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub(crate) storage: Storage,
    pub(crate) limits: Limits,
    pub(crate) registry: Registry,
    pub(crate) awake: Awake,
    pub(crate) scheduler: Arc<crate::schedule::Scheduler>,
    /// Where instances run (`ServerBuilder::agent_runtime`); `None`: the caller's runtime.
    pub(crate) agent_runtime: Option<tokio::runtime::Handle>,
    /// Every class of the server (for handles).
    pub(crate) classes: Arc<Classes>,
}

impl Env {
    /// Whether instances hold their output until their writes are durable (cluster storage).
    pub(crate) fn gated(&self) -> bool {
        #[cfg(feature = "postgres")]
        if self.storage.postgres_store().is_some() {
            return true;
        }
        false
    }
}

/// The awake instances (those holding their database) and when each last handled an event;
/// bounded by `Limits::max_open_instances`: waking one more asks the least recently active
/// one to hibernate.
#[derive(Debug, Clone, Default)]
pub(crate) struct Awake(Arc<AwakeInner>);

#[derive(Debug, Default)]
struct AwakeInner {
    /// One permit per instance that may be awake.
    sem: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
    clock: std::sync::atomic::AtomicU64,
    set: Mutex<HashMap<u64, AwakeEntry>>,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct AwakeEntry {
    last: Arc<std::sync::atomic::AtomicU64>,
    tx: mpsc::WeakSender<Cmd>,
}

/// An instance's place in [`Awake`]: its id and activity clock.
#[derive(Debug)]
pub(crate) struct AwakeTicket {
    id: u64,
    last: Arc<std::sync::atomic::AtomicU64>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// No instance could be hibernated to make room within the wait: the server is at
/// `Limits::max_open_instances` with every awake instance busy (`503`).
#[derive(Debug, thiserror::Error)]
#[error("too many agent instances awake; try again later")]
pub(crate) struct Busy;

impl Awake {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, AwakeEntry>> {
        self.0.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a waking instance, waiting for a place when `max` are awake already (the
    /// least recently active one is asked to hibernate to make room); fails when none frees
    /// up within 10 s.
    async fn wake(&self, tx: mpsc::WeakSender<Cmd>, max: usize) -> Result<AwakeTicket, Busy> {
        use std::sync::atomic::Ordering::Relaxed;
        let sem = self
            .0
            .sem
            .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(max.max(1))))
            .clone();
        let permit = match sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.ask_one_to_hibernate(max);
                let wait = tokio::time::timeout(Duration::from_secs(10), sem.acquire_owned());
                match wait.await {
                    Ok(Ok(p)) => p,
                    _ => return Err(Busy),
                }
            }
        };
        let id = self.0.next_id.fetch_add(1, Relaxed);
        let last = Arc::new(std::sync::atomic::AtomicU64::new(
            self.0.clock.fetch_add(1, Relaxed),
        ));
        self.lock().insert(
            id,
            AwakeEntry {
                last: last.clone(),
                tx,
            },
        );
        Ok(AwakeTicket {
            id,
            last,
            _permit: permit,
        })
    }

    /// Asks the least recently active awake instance to hibernate.
    fn ask_one_to_hibernate(&self, max: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut set = self.lock();
        let victim = set
            .iter()
            .min_by_key(|(_, e)| e.last.load(Relaxed))
            .map(|(id, e)| (*id, e.tx.clone()));
        if let Some((vid, vtx)) = victim {
            match vtx.upgrade() {
                Some(tx) => {
                    let _ = tx.try_send(Cmd::Hibernate);
                    // not asked again while it gets to it
                    if let Some(e) = set.get(&vid) {
                        e.last.store(u64::MAX, Relaxed);
                    }
                }
                None => {
                    set.remove(&vid);
                }
            }
            tracing::debug!(
                awake = set.len(),
                max,
                "too many instances awake; hibernating the least recently active"
            );
        }
    }

    fn touch(&self, t: &AwakeTicket) {
        use std::sync::atomic::Ordering::Relaxed;
        if t.last.load(Relaxed) != u64::MAX {
            t.last.store(self.0.clock.fetch_add(1, Relaxed), Relaxed);
        }
    }

    fn sleep(&self, t: AwakeTicket) {
        self.lock().remove(&t.id);
    }

    /// How many instances are awake.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The running instances by (namespace, name).
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry(Arc<Mutex<Instances>>);

/// Instance queues by (namespace, name).
pub(crate) type Instances = HashMap<(String, String), mpsc::Sender<Cmd>>;

impl Registry {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Instances> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct ClassImpl<A, F> {
    pub(crate) namespace: String,
    pub(crate) factory: Arc<F>,
    pub(crate) props: Option<Arc<serde_json::Value>>,
    pub(crate) _agent: std::marker::PhantomData<fn() -> A>,
}

impl<A, F> Class for ClassImpl<A, F>
where
    A: Agent,
    F: Fn(&str) -> A + Send + Sync + 'static,
{
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn max_request_body(&self, req: &http::request::Parts) -> Option<u64> {
        A::max_request_body(req)
    }

    fn agent_type(&self) -> std::any::TypeId {
        std::any::TypeId::of::<A>()
    }

    fn spawn(&self, name: &str, env: Env) -> mpsc::Sender<Cmd> {
        let (tx, rx) = mpsc::channel(env.limits.instance_queue.max(1));
        let factory = self.factory.clone();
        let span = tracing::info_span!("agent", agent = %self.namespace, name = %name);
        let cx = Context::<A> {
            name: Arc::from(name),
            namespace: Arc::from(self.namespace.as_str()),
            conns: BTreeMap::new(),
            store: None,
            state: None,
            current: None,
            changed: VecDeque::new(),
            sse: HashMap::new(),
            sse_log_len: env.limits.sse_log_len,
            scheduler: env.scheduler.clone(),
            tasks: tokio::task::JoinSet::new(),
            gate: env
                .gated()
                .then(|| Arc::new(crate::connection::Gate::default())),
            env: env.clone(),
            props: self.props.clone(),
        };
        let runtime = env.agent_runtime.clone();
        let actor = Actor {
            me: tx.downgrade(),
            #[cfg(feature = "postgres")]
            lease: None,
            awake: None,
            deleted: false,
            starts: 0,
            agent: None,
            cx,
            factory: Box::new(move |n: &str| factory(n)),
            env,
        };
        let fut = actor.run(rx).instrument(span);
        match runtime {
            Some(rt) => drop(rt.spawn(fut)),
            None => drop(tokio::spawn(fut)),
        }
        tx
    }
}

struct Actor<A: Agent> {
    me: mpsc::WeakSender<Cmd>,
    /// The epoch of the lease this instance holds (cluster storage).
    #[cfg(feature = "postgres")]
    lease: Option<i64>,
    awake: Option<AwakeTicket>,
    deleted: bool,
    starts: u64,
    agent: Option<A>,
    cx: Context<A>,
    factory: Box<dyn Fn(&str) -> A + Send + Sync>,
    env: Env,
}

impl<A: Agent> Actor<A> {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut gauge = crate::metrics::InstanceGauge::default();
        loop {
            gauge.set(self.agent.is_some());
            let idle = self.env.limits.idle_timeout.filter(|_| {
                self.agent.is_some() || (self.cx.conns.is_empty() && self.cx.sse.is_empty())
            });
            let tasks = !self.cx.tasks.is_empty();
            let cmd = tokio::select! {
                cmd = rx.recv() => cmd,
                Some(done) = self.cx.tasks.join_next(), if tasks => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!("a task of the instance panicked");
                        }
                    }
                    continue;
                }
                _ = sleep_for(idle), if idle.is_some() => {
                    if self.agent.is_some() {
                        self.maybe_hibernate();
                        // Cluster storage: an instance without sockets ends when it hibernates,
                        // giving its lease back, so that any node may wake it next.
                        if self.cx.gate.is_some() && self.agent.is_none() && self.try_exit(&mut rx) {
                            break;
                        }
                    } else if self.try_exit(&mut rx) {
                        break;
                    }
                    continue;
                }
            };
            let Some(cmd) = cmd else { break };
            if let Some(g) = &self.cx.gate {
                g.close();
            }
            self.handle(cmd).await;
            if !self.deleted {
                self.notify_state_changes().await;
            }
            self.commit().await;
            if self.deleted {
                rx.close();
                break;
            }
        }
        if let Some(t) = self.awake.take() {
            self.env.awake.sleep(t);
        }
        #[cfg(feature = "postgres")]
        if let (Some(pg), Some(epoch)) = (self.env.storage.postgres_store(), self.lease.take()) {
            pg.release(&self.cx.namespace, &self.cx.name, epoch).await;
        }
    }

    /// Cluster storage: writes the database image if the event committed anything (fenced by
    /// the lease's epoch), then releases the event's held output; a refused write loses the
    /// lease instead. Without cluster storage there is nothing to do (SQLite commits are
    /// durable when they return).
    async fn commit(&mut self) {
        let Some(gate) = self.cx.gate.clone() else {
            return;
        };
        #[cfg(feature = "postgres")]
        if let (Some(pg), Some(epoch)) = (self.env.storage.postgres_store().cloned(), self.lease) {
            let pending = match &self.cx.store {
                Some(store) if store.take_dirty() => {
                    let next = crate::schedule::earliest(&store.db)
                        .ok()
                        .flatten()
                        .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
                    Some(store.image().map(|img| (img, next)))
                }
                _ => None,
            };
            let result = match pending {
                None => Ok(()),
                Some(Err(e)) => Err(e),
                Some(Ok((image, next))) => {
                    let (ns, name) = (self.cx.namespace.clone(), self.cx.name.clone());
                    let mut r = pg.write(&ns, &name, epoch, &image, next).await;
                    // a lost connection is retried (briefly); a refusal is final
                    let mut tries = 0;
                    while matches!(
                        r,
                        Err(crate::cluster::ClusterError::Pool(_)
                            | crate::cluster::ClusterError::Postgres(_))
                    ) && tries < 3
                    {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100 << tries)).await;
                        r = pg.write(&ns, &name, epoch, &image, next).await;
                    }
                    r.map_err(crate::StoreError::from)
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "the event's writes could not be stored; dropping its output");
                gate.discard();
                self.lose_lease("agent storage lost its lease");
                return;
            }
        }
        gate.open();
    }

    /// The lease is gone (or the instance's writes cannot be stored): close every socket
    /// with `1012` so that clients reconnect to the new owner, drop the agent, its database
    /// copy and tasks, and end without writing.
    #[cfg(feature = "postgres")]
    fn lose_lease(&mut self, reason: &str) {
        if let Some(g) = &self.cx.gate {
            g.discard();
        }
        for c in self.cx.conns.values() {
            c.close_now(agentwire_ws::CloseCode::SERVICE_RESTART, reason);
        }
        self.cx.changed.clear();
        if let (Some(pg), Some(epoch)) = (self.env.storage.postgres_store(), self.lease.take()) {
            pg.forget(&self.cx.namespace, &self.cx.name, epoch);
        }
        self.end_now();
    }

    /// An evicted instance without connections leaves the registry and ends (its data is in
    /// storage; the next event starts a new one). Decided under the registry lock, through
    /// which every first event of an instance is delivered, and only with an empty queue.
    fn try_exit(&mut self, rx: &mut mpsc::Receiver<Cmd>) -> bool {
        if !self.cx.conns.is_empty() || !self.cx.sse.is_empty() || !self.cx.tasks.is_empty() {
            return false;
        }
        let mut map = self.env.registry.lock();
        if !rx.is_empty() {
            return false;
        }
        let key = (self.cx.namespace.to_string(), self.cx.name.to_string());
        let mine = match (map.get(&key), self.me.upgrade()) {
            (Some(tx), Some(me)) => tx.same_channel(&me),
            _ => false,
        };
        if mine {
            map.remove(&key);
        }
        rx.close();
        tracing::debug!("instance ended");
        true
    }

    /// Drops the agent value, its loaded state and the database handle; connections stay.
    fn maybe_hibernate(&mut self) {
        for subs in self.cx.sse.values_mut() {
            subs.retain(|s| !s.is_closed());
        }
        self.cx.sse.retain(|_, v| !v.is_empty());
        if !self.cx.sse.is_empty() || !self.cx.tasks.is_empty() {
            return; // live SSE responses and running tasks keep the instance awake
        }
        tracing::debug!(connections = self.cx.conns.len(), "hibernating");
        self.agent = None;
        self.cx.state = None;
        self.cx.store = None;
        if let Some(t) = self.awake.take() {
            self.env.awake.sleep(t);
        }
    }

    /// Closes every socket (`4004`, so that reference clients stop reconnecting) and SSE
    /// response, drops the agent and its database, removes the stored data and leaves the
    /// registry; the next event for the name starts a fresh instance.
    fn delete(&mut self) -> Result<(), crate::StoreError> {
        for c in self.cx.conns.values() {
            c.close(agentwire_ws::CloseCode(4004), "agent instance deleted");
        }
        self.end_now();
        self.env
            .scheduler
            .set(&self.cx.namespace, &self.cx.name, None)?;
        self.env.storage.delete(&self.cx.namespace, &self.cx.name)
    }

    /// Ends the instance at once (its sockets were told): drops the connections, SSE
    /// responses, tasks, the agent and its database, gives up its awake place and leaves the
    /// registry; the next event for the name starts a fresh instance.
    fn end_now(&mut self) {
        self.cx.conns.clear();
        self.cx.sse.clear();
        self.cx.tasks.abort_all();
        self.agent = None;
        self.cx.state = None;
        self.cx.store = None;
        if let Some(t) = self.awake.take() {
            self.env.awake.sleep(t);
        }
        let key = (self.cx.namespace.to_string(), self.cx.name.to_string());
        let mut map = self.env.registry.lock();
        if let (Some(tx), Some(me)) = (map.get(&key), self.me.upgrade()) {
            if tx.same_channel(&me) {
                map.remove(&key);
            }
        }
        self.deleted = true;
    }

    /// [`delete`](Self::delete), and the instance's row under its lease (cluster storage).
    async fn delete_everywhere(&mut self) -> Result<(), crate::StoreError> {
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.env.storage.postgres_store().cloned() {
            let epoch = match self.lease.take() {
                Some(e) => e,
                None => {
                    pg.acquire(&self.cx.namespace, &self.cx.name, self.me.clone())
                        .await?
                        .0
                }
            };
            pg.delete(&self.cx.namespace, &self.cx.name, epoch).await?;
        }
        self.delete()
    }

    /// The instance's database: its SQLite file, or (cluster storage) its image, read under
    /// its lease (acquired first if this instance does not hold it).
    async fn open_store(&mut self) -> Result<crate::store::InstanceStore, BoxError> {
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.env.storage.postgres_store().cloned() {
            let (ns, name) = (self.cx.namespace.clone(), self.cx.name.clone());
            let image = match self.lease {
                Some(epoch) => match pg.load(&ns, &name, epoch).await {
                    Ok(img) => img,
                    Err(e @ crate::cluster::ClusterError::Fenced { .. }) => {
                        self.lose_lease("agent instance moved to another node");
                        return Err(e.into());
                    }
                    Err(e) => return Err(e.into()),
                },
                None => {
                    let (epoch, img) = pg.acquire(&ns, &name, self.me.clone()).await?;
                    self.lease = Some(epoch);
                    img
                }
            };
            return Ok(crate::store::InstanceStore::from_image(image)?);
        }
        Ok(self.env.storage.open(&self.cx.namespace, &self.cx.name)?)
    }

    /// Starts (or wakes) the instance: open storage, load state, announce MCP servers to the
    /// sockets that stayed open, then `on_start`.
    async fn wake(&mut self) -> Result<(), BoxError> {
        if self.agent.is_some() {
            return Ok(());
        }
        if self.awake.is_none() {
            let ticket = self
                .env
                .awake
                .wake(self.me.clone(), self.env.limits.open_instances_cap())
                .await?;
            self.awake = Some(ticket);
        }
        let store = self.open_store().await?;
        let mut agent = (self.factory)(&self.cx.name);
        self.starts += 1;
        let from_store = match store.load_state()? {
            Some(json) => {
                let raw = RawJson::from_string(json)?;
                match raw.deserialize::<A::State>() {
                    Ok(value) => Some(loaded(value, raw)),
                    Err(e) => {
                        tracing::error!(error = %e, "stored state does not fit the agent's state type; using the initial state");
                        None
                    }
                }
            }
            None => None,
        };
        let loaded = match from_store {
            Some(l) => Some(l),
            None => match agent.initial_state() {
                Some(s) => {
                    let raw = RawJson::from_serialize(&s)?;
                    store.save_state(raw.get())?;
                    Some(loaded(s, raw))
                }
                None => None,
            },
        };
        self.cx.store = Some(store);
        self.cx.state = loaded;
        self.cx
            .broadcast_protocol(&ServerMessage::empty_mcp_servers().encode());
        self.cx.current = None;
        if let Err(e) = agent.on_start(&mut self.cx).await {
            agent.on_error(&mut self.cx, None, &e).await;
        }
        // the server's index of due schedules follows the instance's rows
        self.cx.sync_schedule_index();
        self.agent = Some(agent);
        Ok(())
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Stats { reply } => {
                let _ = reply.send(InstanceInfo {
                    awake: self.agent.is_some(),
                    connections: self.cx.conns.len(),
                    starts: self.starts,
                });
            }
            Cmd::Shutdown => self.cx.sse.clear(),
            Cmd::Hibernate => {
                if self.agent.is_some() {
                    self.maybe_hibernate();
                }
            }
            Cmd::Delete { reply } => {
                let r = self.delete_everywhere().await;
                let _ = reply.send(r);
            }
            #[cfg(feature = "postgres")]
            Cmd::LeaseLost { epoch } => {
                if self.lease == Some(epoch) {
                    self.lose_lease("agent instance moved to another node");
                }
            }
            Cmd::Start { props, reply } => {
                let asleep = self.agent.is_none();
                if asleep {
                    if let Some(p) = props {
                        self.cx.props = Some(Arc::new(p));
                    }
                }
                let r = match self.wake().await {
                    Ok(()) => Ok(asleep),
                    Err(e) => {
                        tracing::warn!(error = %e, "agent instance not started");
                        Err(())
                    }
                };
                let _ = reply.send(r);
            }
            cmd => {
                if let Some(t) = &self.awake {
                    self.env.awake.touch(t);
                }
                self.handle_event(cmd).await
            }
        }
    }

    async fn handle_event(&mut self, cmd: Cmd) {
        if let Err(e) = self.wake().await {
            let (status, text, code) = if moved(&e) {
                tracing::info!(error = %e, "agent instance not started here");
                (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable", 1012)
            } else if e.is::<Busy>() {
                tracing::warn!(error = %e, "agent instance not started");
                (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable", 1013)
            } else {
                tracing::error!(error = %e, "agent instance failed to start");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    1011,
                )
            };
            match cmd {
                Cmd::Connect { reply, .. } => {
                    let _ = reply.send(Some(response::text(status, text)));
                }
                Cmd::Request { reply, .. } => {
                    let _ = reply.send(response::text(status, text));
                }
                Cmd::Text { conn, .. } | Cmd::Binary { conn, .. } => {
                    conn.close(code, "agent failed to start");
                }
                Cmd::Close { conn, .. } => {
                    self.cx.conns.remove(&conn.key());
                }
                Cmd::Call { conn, .. } => conn.close(code, "agent failed to start"),
                Cmd::Start { .. } => {}
                // dropping the closure tells the handle
                Cmd::With(_) => {}
                Cmd::Stats { .. }
                | Cmd::Shutdown
                | Cmd::Hibernate
                | Cmd::Alarm
                | Cmd::Delete { .. } => {}
                #[cfg(feature = "postgres")]
                Cmd::LeaseLost { .. } => {}
            }
            return;
        }
        let cmd = match cmd {
            Cmd::With(f) => {
                let me: &mut dyn std::any::Any = self;
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (f.0)(me)));
                if r.is_err() {
                    self.reset_after_panic();
                }
                return;
            }
            cmd => cmd,
        };
        let Some(agent) = self.agent.as_mut() else {
            return;
        };
        let cx = &mut self.cx;
        // A panicking hook fails its event (error reply, 500, refused connection) and resets the
        // agent value, as a crashed Durable Object is; sockets and stored data are kept.
        let mut panicked = false;
        match cmd {
            Cmd::Connect { conn, parts, reply } => {
                if let Some(g) = &cx.gate {
                    conn.set_gate(g);
                }
                let key = conn.key();
                let outcome = match guard(connect(agent, cx, &self.env.limits, conn, &parts)).await
                {
                    Ok(o) => o,
                    Err(()) => {
                        panicked = true;
                        if let Some(c) = cx.conns.remove(&key) {
                            c.mark_closed();
                        }
                        Some(internal_error())
                    }
                };
                let _ = reply.send(outcome);
            }
            Cmd::Text { conn, text } => {
                if !cx.conns.contains_key(&conn.key()) {
                    return; // closed meanwhile
                }
                // The session classifies the frame (answering what the protocol answers by
                // itself: a readonly connection's state update, malformed call arguments).
                let mut session = session_of(&conn);
                session.handle_text(text);
                flush(&mut session, &conn);
                match session.poll_event() {
                    None => {}
                    Some(SessionEvent::StateUpdate { state }) => {
                        client_state(agent, cx, &conn, state, &mut session).await;
                        flush(&mut session, &conn);
                    }
                    Some(SessionEvent::Call { id, method, args }) => {
                        panicked = run_call(agent, cx, id, method, args, conn, false).await;
                    }
                    Some(SessionEvent::Message(text)) => {
                        cx.current = Some(conn.clone());
                        let r = guard(agent.on_message(cx, &conn, Message::Text(text))).await;
                        cx.current = None;
                        match r {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => agent.on_error(cx, Some(&conn), &e).await,
                            Err(()) => panicked = true,
                        }
                    }
                    Some(_) => {}
                }
            }
            Cmd::Binary { conn, data } => {
                if !cx.conns.contains_key(&conn.key()) {
                    return;
                }
                cx.current = Some(conn.clone());
                let r = guard(agent.on_message(cx, &conn, Message::Binary(data))).await;
                cx.current = None;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => agent.on_error(cx, Some(&conn), &e).await,
                    Err(()) => panicked = true,
                }
            }
            Cmd::Close {
                conn,
                code,
                reason,
                clean,
                error,
            } => {
                conn.mark_closed();
                if cx.conns.remove(&conn.key()).is_none() {
                    return; // never accepted
                }
                if let Some(e) = error {
                    let e: BoxError = Box::new(e);
                    agent.on_error(cx, Some(&conn), &e).await;
                }
                match guard(agent.on_close(cx, &conn, code, &reason, clean)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => agent.on_error(cx, Some(&conn), &e).await,
                    Err(()) => panicked = true,
                }
            }
            Cmd::Alarm => {
                if run_schedules(agent, cx).await.is_err() {
                    panicked = true;
                }
            }
            Cmd::Request { req, reply } => {
                cx.current = None;
                let resp = match guard(agent.on_request(cx, *req)).await {
                    Ok(Ok(r)) => r,
                    // A request the client got wrong (bad JSON, too large, …): its own status.
                    Ok(Err(e)) if e.is::<crate::RequestError>() => {
                        tracing::debug!(error = %e, "request refused");
                        e.downcast_ref::<crate::RequestError>()
                            .map_or_else(internal_error, |e| e.to_response())
                    }
                    Ok(Err(e)) => {
                        agent.on_error(cx, None, &e).await;
                        internal_error()
                    }
                    Err(()) => {
                        panicked = true;
                        internal_error()
                    }
                };
                cx.after_commit(move || {
                    let _ = reply.send(resp);
                });
            }
            Cmd::Call { method, args, conn } => {
                if let Some(g) = &cx.gate {
                    conn.set_gate(g);
                }
                let id = agentwire_protocol::RpcId::from("handle");
                panicked = run_call(agent, cx, id, method, args, conn, true).await;
            }
            Cmd::Stats { .. }
            | Cmd::Shutdown
            | Cmd::Hibernate
            | Cmd::Delete { .. }
            | Cmd::Start { .. }
            | Cmd::With(_) => {}
            #[cfg(feature = "postgres")]
            Cmd::LeaseLost { .. } => {}
        }
        if panicked {
            self.reset_after_panic();
        }
    }

    fn reset_after_panic(&mut self) {
        tracing::error!("an agent hook panicked; the agent will start again on the next event");
        self.agent = None;
        self.cx.state = None;
        self.cx.store = None;
        self.cx.changed.clear();
        self.cx.current = None;
    }

    async fn notify_state_changes(&mut self) {
        let Some(agent) = self.agent.as_mut() else {
            return;
        };
        while let Some(source) = self.cx.changed.pop_front() {
            let Some(state) = self.cx.state.as_ref().map(|l| l.value.clone()) else {
                break;
            };
            if let Err(e) = agent
                .on_state_update(&mut self.cx, &state, source.as_ref())
                .await
            {
                agent.on_error(&mut self.cx, source.as_ref(), &e).await;
            }
        }
    }
}

async fn sleep_for(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Runs `on_call` and sends its reply, unless the hook deferred it (then the [`Deferred`]
/// responder sends it, or the hook's error if it failed after deferring). Returns whether the
/// hook panicked.
///
/// [`Deferred`]: crate::Deferred
pub(crate) async fn run_call<A: Agent>(
    agent: &mut A,
    cx: &mut Context<A>,
    id: agentwire_protocol::RpcId,
    method: String,
    args: Vec<RawJson>,
    conn: Connection,
    from_handle: bool,
) -> bool {
    let slot = Arc::new(CallSlot::new());
    let call = Call {
        id: id.clone(),
        method: method.clone(),
        args,
        conn: conn.clone(),
        slot: slot.clone(),
        from_handle,
    };
    cx.current = (!from_handle).then(|| conn.clone());
    let t = crate::metrics::start();
    let mut panicked = false;
    let res = guard(agent.on_call(cx, call)).await.unwrap_or_else(|()| {
        panicked = true;
        Err(RpcError::new("Internal error"))
    });
    cx.current = None;
    let res = match slot.hook_returned(res.is_err()) {
        AfterHook::Send => res,
        AfterHook::Dropped => Err(RpcError::new(crate::agent::CALL_DROPPED)),
        AfterHook::Nothing => return panicked,
    };
    let _ = conn.send_text(encode_reply(id, &method, res));
    crate::metrics::rpc_done(t);
    panicked
}

/// Whether waking failed because another node owns the instance (clients should retry: the
/// next attempt is forwarded to the owner).
fn moved(e: &BoxError) -> bool {
    #[cfg(feature = "postgres")]
    {
        use crate::cluster::ClusterError;
        let cluster = e.downcast_ref::<ClusterError>().or_else(|| {
            match e.downcast_ref::<crate::StoreError>() {
                Some(crate::StoreError::Cluster(c)) => Some(c),
                _ => None,
            }
        });
        if matches!(
            cluster,
            Some(ClusterError::OwnedElsewhere { .. } | ClusterError::Fenced { .. })
        ) {
            return true;
        }
    }
    let _ = e;
    false
}

fn internal_error() -> Response<Body> {
    response::text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

/// Runs a hook future, turning a panic into `Err(())` (the panic itself is reported by the
/// panic hook as usual).
async fn guard<F: Future>(f: F) -> Result<F::Output, ()> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    })
    .await
}

fn loaded<S>(value: S, raw: RawJson) -> Loaded<S> {
    Loaded { value, raw }
}

/// The connect sequence: flags, tags, identity → state → MCP servers, register, `on_connect`.
/// `None` means accepted (`101`); `Some` is the HTTP answer instead.
async fn connect<A: Agent>(
    agent: &mut A,
    cx: &mut Context<A>,
    limits: &Limits,
    conn: Connection,
    parts: &http::request::Parts,
) -> Option<Response<Body>> {
    conn.set_readonly(agent.connection_readonly(&conn, parts));
    conn.set_protocol_messages(agent.connection_protocol_messages(&conn, parts));
    let mut tags = vec![conn.id().to_owned()];
    for t in agent.connection_tags(&conn, parts) {
        if t != conn.id() && !tags.contains(&t) {
            tags.push(t);
        }
    }
    if tags.len() > limits.max_tags || tags.iter().any(|t| t.is_empty() || t.chars().count() > 256)
    {
        tracing::warn!(id = conn.id(), "invalid connection tags");
        let mut session = session_of(&conn);
        session.invalid_tags();
        flush(&mut session, &conn);
        conn.close(
            agentwire_ws::CloseCode::INTERNAL,
            "Uncaught exception during session setup",
        );
        return None;
    }
    conn.set_tags(tags);
    let mut session = session_of(&conn);
    session.connect(&cx.name, &cx.namespace, cx.state.as_ref().map(|s| &s.raw));
    flush(&mut session, &conn);
    cx.conns.insert(conn.key(), conn.clone());
    cx.current = Some(conn.clone());
    let r = agent.on_connect(cx, &conn, parts).await;
    cx.current = None;
    match r {
        Ok(()) => None,
        Err(Reject::Close(code, reason)) => {
            conn.close(code, &reason);
            None
        }
        Err(Reject::Http(resp)) => {
            cx.conns.remove(&conn.key());
            conn.mark_closed();
            Some(resp)
        }
    }
}

/// The protocol session of a connection, with its current flags.
fn session_of(conn: &Connection) -> ServerSession {
    ServerSession::new(SessionOptions::new(
        conn.readonly(),
        conn.protocol_messages(),
    ))
}

/// Sends what the session queued for the connection.
fn flush(session: &mut ServerSession, conn: &Connection) {
    while let Some(frame) = session.poll_transmit() {
        let _ = conn.send_text(frame);
    }
}

/// A client's `cf_agent_state` (the session refused it already for a readonly connection):
/// validate → persist → broadcast to the others.
async fn client_state<A: Agent>(
    agent: &mut A,
    cx: &mut Context<A>,
    conn: &Connection,
    state: RawJson,
    session: &mut ServerSession,
) {
    let value = match state.deserialize::<A::State>() {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(id = conn.id(), error = %e, "client state update rejected");
            session.state_rejected();
            return;
        }
    };
    if let Err(e) = A::validate_state(&value, StateSource::Client(conn)) {
        tracing::info!(id = conn.id(), error = %e, "client state update rejected");
        session.state_rejected();
        return;
    }
    // What is stored and broadcast is the validated value, re-encoded: fields the state type
    // does not know are not carried along (a `RawJson` state keeps the client's text as is).
    let raw = match RawJson::from_serialize(&value) {
        Ok(raw) => raw,
        Err(e) => {
            tracing::info!(id = conn.id(), error = %e, "client state update rejected");
            session.state_rejected();
            return;
        }
    };
    drop(state);
    if let Err(e) = cx.commit_state(value, raw, Some(conn)) {
        let e: BoxError = Box::new(e);
        agent.on_error(cx, Some(conn), &e).await;
        session.state_rejected();
    }
}

/// Runs the instance's due schedules one by one (see [`crate::schedule`]), then writes its
/// next due time to the server's index. `Err` when a hook panicked (the agent is reset).
async fn run_schedules<A: Agent>(agent: &mut A, cx: &mut Context<A>) -> Result<(), ()> {
    let now = crate::schedule::now_ms();
    let due = match cx.store.as_ref().map(|s| crate::schedule::due(&s.db, now)) {
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            let e: BoxError = Box::new(e);
            agent.on_error(cx, None, &e).await;
            return Ok(());
        }
        None => Vec::new(),
    };
    let mut result = Ok(());
    for s in due {
        cx.current = None;
        tracing::debug!(id = %s.id, method = %s.method, "schedule due");
        match guard(agent.on_schedule(cx, s.clone())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => agent.on_error(cx, None, &e).await,
            Err(()) => {
                tracing::error!(id = %s.id, method = %s.method, "a schedule's hook panicked");
                result = Err(());
            }
        }
        // the hook may have cancelled it itself
        if let Some(store) = &cx.store {
            if let Err(e) = crate::schedule::finish(&store.db, &s, crate::schedule::now_ms()) {
                let e: BoxError = Box::new(e);
                agent.on_error(cx, None, &e).await;
            }
        }
        if result.is_err() {
            break;
        }
    }
    cx.sync_schedule_index();
    result
}

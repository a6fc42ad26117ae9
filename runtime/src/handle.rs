//! [`AgentHandle`]: reaching an instance from outside its hooks (the reference's
//! `getAgentByName`).

use crate::agent::{split_args, Agent, Context, RpcError, StateError};
use crate::connection::{Connection, Message, Out};
use crate::instance::{deliver, Class, Cmd, Env};
use crate::store::StoreError;
use agentwire_protocol::{classify_server, RawJson, RpcResponse, ServerInbound, ServerMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Why an [`AgentHandle`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// No class of this agent type is registered with the server.
    #[error("no agent class of type {0} is registered")]
    NotRegistered(&'static str),
    /// Several classes of this agent type are registered: name one with
    /// [`Server::agent_in`](crate::Server::agent_in).
    #[error("several agent classes of type {0} are registered; name the class")]
    Ambiguous(&'static str),
    /// The instance could not be reached: it failed to start, was deleted while the
    /// operation was queued, the server is at its awake-instance bound, or it shut down.
    #[error("the agent instance is unavailable")]
    Unavailable,
    /// The closure of [`AgentHandle::with`] (or a hook it ran) panicked.
    #[error("the operation panicked inside the instance")]
    Panicked,
    /// The called method failed (as a client's promise would reject).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The state change was refused.
    #[error(transparent)]
    State(#[from] StateError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A schedule could not be made (bad cron expression, zero interval, storage).
    #[error(transparent)]
    Schedule(#[from] crate::ScheduleError),
}

/// A cloneable, `Send` handle on one agent instance, usable from any task: call a method,
/// read or change the state, broadcast, send to a connection, publish to an SSE stream, or
/// run a closure inside the instance. Get one with [`Server::agent`](crate::Server::agent) or
/// [`Context::agent`] (another instance), or [`Context::handle`] (this one, for tasks of
/// [`Context::spawn`]).
///
/// Every operation is an event in the instance's queue, handled in order with its other
/// events (so state changes stay serialised, and are persisted before they are broadcast and
/// before the operation returns); it starts the instance or wakes it from hibernation as a
/// client's event would.
///
/// A hook must not await an operation on its own instance (the instance would wait for
/// itself): inside a hook use the [`Context`]; from a hook, await handles of other instances
/// only where no cycle of instances awaiting each other can form (or do it in a task of
/// [`Context::spawn`]).
pub struct AgentHandle<A: Agent> {
    env: Env,
    class: Arc<dyn Class>,
    name: Arc<str>,
    _agent: PhantomData<fn() -> A>,
}

impl<A: Agent> Clone for AgentHandle<A> {
    fn clone(&self) -> Self {
        Self {
            env: self.env.clone(),
            class: self.class.clone(),
            name: self.name.clone(),
            _agent: PhantomData,
        }
    }
}

impl<A: Agent> fmt::Debug for AgentHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentHandle")
            .field("namespace", &self.class.namespace())
            .field("name", &self.name)
            .finish()
    }
}

/// Keys of the detached connections of handle calls (never those of sockets, which count up
/// from 1).
static NEXT_DETACHED: AtomicU64 = AtomicU64::new(1 << 63);

/// Starts an RPC on a detached connection of the instance (on this node); returns the
/// connection and what the call sends it — chunks, the reply, and what the method sends "its"
/// connection — to be read until the reply (and `dequeued` as it is consumed). A `Close`
/// means the instance could not start or was deleted.
pub(crate) async fn start_detached_call(
    env: &Env,
    class: &Arc<dyn Class>,
    name: &Arc<str>,
    method: String,
    args: Vec<RawJson>,
) -> Result<(Connection, tokio::sync::mpsc::UnboundedReceiver<Out>), HandleError> {
    let key = NEXT_DETACHED.fetch_add(1, Ordering::Relaxed);
    let (conn, out) = Connection::new(
        key,
        String::new(),
        http::Uri::from_static("/"),
        env.limits.max_queued_bytes,
        name.clone(),
    );
    let cmd = Cmd::Call {
        method,
        args,
        conn: conn.clone(),
    };
    match deliver(env, class, name, cmd).await {
        Some(_) => Ok((conn, out)),
        None => Err(HandleError::Unavailable),
    }
}

/// What a frame of a detached call means to its caller: `Some` once the call is over (its
/// result or error); chunks go to `on_chunk`; other frames (what the method sent "its"
/// connection) are skipped.
pub(crate) fn interpret(
    text: &str,
    on_chunk: &mut (impl FnMut(Option<RawJson>) + ?Sized),
) -> Option<Result<Option<RawJson>, HandleError>> {
    match classify_server(text) {
        ServerInbound::Protocol(ServerMessage::Rpc(r)) => match r {
            RpcResponse::Chunk { result, .. } => {
                on_chunk(result);
                None
            }
            RpcResponse::Done { result, .. } => Some(Ok(result)),
            RpcResponse::Error { error, .. } => Some(Err(RpcError::Failed(error).into())),
            _ => None,
        },
        _ => None,
    }
}

impl<A: Agent> AgentHandle<A> {
    /// The handle of the instance `name` of the class registered for `A` (under `namespace`,
    /// or the only one of that type).
    pub(crate) fn lookup(
        env: &Env,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Self, HandleError> {
        let ty = std::any::type_name::<A>();
        let class = match namespace {
            Some(ns) => env
                .classes
                .by_namespace
                .get(ns)
                .filter(|c| c.agent_type() == std::any::TypeId::of::<A>())
                .cloned()
                .ok_or(HandleError::NotRegistered(ty))?,
            None => {
                let mut found = env
                    .classes
                    .by_namespace
                    .values()
                    .filter(|c| c.agent_type() == std::any::TypeId::of::<A>());
                let first = found.next().ok_or(HandleError::NotRegistered(ty))?;
                if found.next().is_some() {
                    return Err(HandleError::Ambiguous(ty));
                }
                first.clone()
            }
        };
        Ok(Self {
            env: env.clone(),
            class,
            name: Arc::from(name),
            _agent: PhantomData,
        })
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL namespace of the class (`counter-agent`).
    pub fn agent_namespace(&self) -> &str {
        self.class.namespace()
    }

    async fn send(&self, cmd: Cmd) -> Result<(), HandleError> {
        match deliver(&self.env, &self.class, &self.name, cmd).await {
            Some(_) => Ok(()),
            None => Err(HandleError::Unavailable),
        }
    }

    /// Runs `f` inside the instance, between its other events, with the agent value and its
    /// context; returns what `f` returns. State changes made in `f` are persisted and
    /// broadcast before this returns (then [`Agent::on_state_update`] runs).
    pub async fn with<R, F>(&self, f: F) -> Result<R, HandleError>
    where
        F: FnOnce(&mut A, &mut Context<A>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run = crate::instance::WithFn(Box::new(move |scope: &mut dyn Any| {
            if let Some((agent, cx)) = crate::instance::scope::<A>(scope) {
                let r = f(agent, cx);
                // the result, like any output of the instance, follows its durable writes
                cx.after_commit(move || {
                    let _ = tx.send(r);
                });
            }
        }));
        self.send(Cmd::With(run)).await?;
        // a dropped sender: the closure panicked, or the instance could not start
        rx.await.map_err(|_| HandleError::Unavailable)
    }

    /// Starts the instance with `props` ([`Context::props`], for [`Agent::on_start`]) unless
    /// it is awake already; returns whether it started now (`false`: it was running and the
    /// props were not used).
    pub async fn start(&self, props: Option<serde_json::Value>) -> Result<bool, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Start { props, reply }).await?;
        rx.await
            .map_err(|_| HandleError::Unavailable)?
            .map_err(|()| HandleError::Unavailable)
    }

    /// Schedules a call of [`Agent::on_schedule`](crate::Agent::on_schedule) on the instance,
    /// as [`Context::schedule`] (persisted before this returns; see [`crate::schedule`]).
    pub async fn schedule<T>(
        &self,
        when: crate::When,
        method: &str,
        payload: &T,
    ) -> Result<crate::Schedule, HandleError>
    where
        T: serde::Serialize + ?Sized,
    {
        let payload = RawJson::from_serialize(payload).map_err(crate::ScheduleError::from)?;
        let method = method.to_owned();
        Ok(self
            .with(move |_, cx| cx.schedule(when, &method, &payload))
            .await??)
    }

    /// Cancels a schedule of the instance, as [`Context::cancel_schedule`].
    pub async fn cancel_schedule(&self, id: &str) -> Result<bool, HandleError> {
        let id = id.to_owned();
        Ok(self.with(move |_, cx| cx.cancel_schedule(&id)).await??)
    }

    /// The instance's pending schedules, as [`Context::schedules`].
    pub async fn schedules(&self) -> Result<Vec<crate::Schedule>, HandleError> {
        Ok(self.with(|_, cx| cx.schedules()).await??)
    }

    /// The current state (`None` when the agent has none).
    pub async fn state(&self) -> Result<Option<A::State>, HandleError> {
        self.with(|_, cx| cx.state().cloned()).await
    }

    /// Sets the state, as [`Context::set_state`] (validated, persisted, then broadcast).
    pub async fn set_state(&self, state: A::State) -> Result<(), HandleError> {
        self.with(move |_, cx| cx.set_state(state)).await??;
        Ok(())
    }

    /// Sets the state to a function of the previous one, as [`Context::update_state`].
    pub async fn update_state<F>(&self, f: F) -> Result<(), HandleError>
    where
        F: FnOnce(Option<&A::State>) -> A::State + Send + 'static,
    {
        self.with(move |_, cx| cx.update_state(f)).await??;
        Ok(())
    }

    /// Sends `msg` to every connection whose id is not in `without`, as
    /// [`Context::broadcast`]; returns how many it was sent to.
    pub async fn broadcast(
        &self,
        msg: impl Into<Message>,
        without: &[&str],
    ) -> Result<usize, HandleError> {
        let msg = msg.into();
        let without: Vec<String> = without.iter().map(|s| (*s).to_owned()).collect();
        self.with(move |_, cx| {
            let without: Vec<&str> = without.iter().map(String::as_str).collect();
            cx.broadcast(msg, &without)
        })
        .await
    }

    /// Sends `msg` to every open connection with the id `id`; returns how many it was sent to
    /// (`0`: no such connection).
    pub async fn send_to(&self, id: &str, msg: impl Into<Message>) -> Result<usize, HandleError> {
        let msg = msg.into();
        let id = id.to_owned();
        self.with(move |_, cx| {
            cx.connections()
                .filter(|c| c.id() == id)
                .filter(|c| c.send(msg.clone()).is_ok())
                .count()
        })
        .await
    }

    /// Publishes an event to an SSE stream of the instance, as [`Context::sse_publish`];
    /// returns its id.
    pub async fn sse_publish(
        &self,
        stream: &str,
        event: Option<&str>,
        data: &str,
    ) -> Result<u64, HandleError> {
        let (stream, event, data) = (stream.to_owned(), event.map(str::to_owned), data.to_owned());
        Ok(self
            .with(move |_, cx| cx.sse_publish(&stream, event.as_deref(), &data))
            .await??)
    }

    /// Calls a method as an RPC without a client connection ([`Call::from_handle`] is `true`;
    /// its connection is detached). `args` serialises to the argument array (a tuple, a
    /// `Vec`, `()` for none, or a `serde_json::Value` array). Returns the result's JSON text
    /// (`None`: the method returned no result); streamed chunks are passed to `on_chunk` in
    /// order. A deferred call is awaited until its responder finishes. With cluster storage, a
    /// call of an instance another node owns runs there (see [`cluster`](crate::cluster)).
    ///
    /// [`Call::from_handle`]: crate::Call::from_handle
    pub async fn call_streaming<T, F>(
        &self,
        method: &str,
        args: &T,
        mut on_chunk: F,
    ) -> Result<Option<RawJson>, HandleError>
    where
        T: Serialize + ?Sized,
        F: FnMut(Option<RawJson>) + Send,
    {
        let args = RawJson::from_serialize(args).map_err(RpcError::from)?;
        let args = if args.get() == "null" {
            Vec::new()
        } else {
            split_args(&args)
                .map_err(|e| RpcError::new(format!("the arguments must be an array: {e}")))?
        };
        // Cluster storage: an instance another node owns is called there.
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.env.storage.postgres_store() {
            if let Some(r) = crate::forward::remote_call(
                pg,
                self.class.namespace(),
                &self.name,
                method,
                &args,
                &mut |text: &str| interpret(text, &mut on_chunk),
            )
            .await
            {
                return r;
            }
        }
        let (conn, mut out) =
            start_detached_call(&self.env, &self.class, &self.name, method.to_owned(), args)
                .await?;
        while let Some(o) = out.recv().await {
            let text = match o {
                Out::Msg(Message::Text(t)) => t,
                Out::Shared(_) | Out::Msg(Message::Binary(_)) => continue,
                Out::Close(..) => return Err(HandleError::Unavailable),
            };
            conn.dequeued(text.len());
            if let Some(r) = interpret(&text, &mut on_chunk) {
                return r;
            }
        }
        Err(RpcError::new(agentwire_protocol::texts::CONNECTION_CLOSED).into())
    }

    /// [`call_streaming`](Self::call_streaming) without chunks, deserialising the result
    /// (no result reads as `null`).
    pub async fn call<R, T>(&self, method: &str, args: &T) -> Result<R, HandleError>
    where
        R: DeserializeOwned,
        T: Serialize + ?Sized,
    {
        let raw = self.call_streaming(method, args, |_| {}).await?;
        let parsed = match raw {
            Some(raw) => raw.deserialize(),
            None => serde_json::from_str("null"),
        };
        Ok(parsed.map_err(RpcError::from)?)
    }
}

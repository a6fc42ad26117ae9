//! Schedules: an instance asks to be called back later — after a delay, at a date, on a cron
//! expression or every interval — and the call happens even if the instance hibernated or
//! the server restarted meanwhile.
//!
//! * [`Context::schedule`](crate::Context::schedule),
//!   [`Context::schedule_every`](crate::Context::schedule_every),
//!   [`Context::cancel_schedule`](crate::Context::cancel_schedule) and
//!   [`Context::schedules`](crate::Context::schedules); a due schedule runs
//!   [`Agent::on_schedule`](crate::Agent::on_schedule) with its method name and payload.
//! * Persistence: each schedule is a row of the instance's own database (`cf_agents_schedules`),
//!   committed before `schedule` returns. The server keeps an index of each instance's next due
//!   time (in memory, and with [`Storage::sqlite`](crate::Storage::sqlite) in
//!   `schedules.sqlite` beside the instances' directories), so it wakes hibernated instances
//!   itself and, after a restart, finds the instances whose schedules came due while it was
//!   down — no client needs to come by.
//!
//! # Guarantees
//!
//! * **At least once**: a schedule's row is removed (or, for cron and intervals, moved to its
//!   next time) only after `on_schedule` returned. A crash while it runs runs it again after the
//!   restart: use the schedule's stable [`id`](Schedule::id) to make the work idempotent.
//! * **Missed runs run once**: schedules that came due while the server was down run once at
//!   start; an interval or cron schedule then continues from the current time (it does not
//!   replay every missed occurrence).
//! * **Failures do not block**: an `on_schedule` error (or panic) is reported to
//!   [`Agent::on_error`](crate::Agent::on_error); a one-shot schedule is then removed, a
//!   repeating one moves on to its next time; the other due schedules run regardless.
//! * **Ordering**: due schedules of an instance run one at a time, in due order, as events of
//!   the instance (serialised with its messages, calls and requests). Lateness is the time the
//!   instance needs to get to the event; the timer itself has millisecond resolution.
//! * The index is written *before* the schedule's row (a crash in between at worst wakes the
//!   instance once for nothing), and corrected after every run.

use crate::store::StoreError;
use agentwire_protocol::RawJson;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// When a schedule runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum When {
    /// Once, this long from now.
    Delay(Duration),
    /// Once, at this time.
    At(SystemTime),
    /// On every match of this cron expression (5 fields, or 6 with seconds first; UTC).
    Cron(String),
    /// Every interval, the first time one interval from now.
    Every(Duration),
}

impl When {
    /// Once, `d` from now.
    pub fn delay(d: Duration) -> Self {
        When::Delay(d)
    }

    /// Once, at `t`.
    pub fn at(t: SystemTime) -> Self {
        When::At(t)
    }

    /// On a cron expression such as `"*/5 * * * *"` (UTC).
    pub fn cron(expr: impl Into<String>) -> Self {
        When::Cron(expr.into())
    }
}

/// A refused or failed schedule operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression does not parse (or never matches).
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron {
        /// The expression.
        expr: String,
        /// Why.
        reason: String,
    },
    /// An interval of zero.
    #[error("a schedule interval must be at least 1 ms")]
    ZeroInterval,
    /// The payload could not be serialised.
    #[error("schedule payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// Storage failed; nothing was scheduled.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ScheduleError {
    fn from(e: rusqlite::Error) -> Self {
        ScheduleError::Store(StoreError::from(e))
    }
}

/// A pending schedule, as [`Context::schedules`](crate::Context::schedules) lists it and
/// [`Agent::on_schedule`](crate::Agent::on_schedule) receives it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Schedule {
    /// Stable for the schedule's life (use it for idempotence).
    pub id: String,
    /// The method name given when scheduling (the reference's `callback`).
    pub method: String,
    /// The payload given when scheduling, as JSON.
    pub payload: RawJson,
    /// `"delayed"`, `"scheduled"` (a date), `"cron"` or `"interval"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The cron expression, for `"cron"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The interval in milliseconds, for `"interval"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// When it runs next (Unix milliseconds).
    pub time: u64,
}

impl Schedule {
    /// The payload deserialised.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.payload.deserialize()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn parse_cron(expr: &str) -> Result<croner::Cron, ScheduleError> {
    let err = |reason: String| ScheduleError::Cron {
        expr: expr.to_owned(),
        reason,
    };
    let fields = expr.split_whitespace().count();
    let cron = croner::parser::CronParser::builder()
        .seconds(if fields == 6 {
            croner::parser::Seconds::Required
        } else {
            croner::parser::Seconds::Disallowed
        })
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| err(e.to_string()))?;
    Ok(cron)
}

/// The next match of `expr` strictly after `after_ms`.
fn next_cron(expr: &str, after_ms: u64) -> Result<u64, ScheduleError> {
    let cron = parse_cron(expr)?;
    let after =
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(after_ms as i64).unwrap_or_default();
    let next = cron
        .find_next_occurrence(&after, false)
        .map_err(|e| ScheduleError::Cron {
            expr: expr.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(next.timestamp_millis().max(0) as u64)
}

// ===== the instance's rows =====

pub(crate) fn ensure_table(db: &rusqlite::Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS cf_agents_schedules (
             id TEXT PRIMARY KEY NOT NULL,
             method TEXT NOT NULL,
             payload TEXT NOT NULL,
             kind TEXT NOT NULL,
             cron TEXT,
             interval_ms INTEGER,
             next_ms INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS cf_agents_schedules_next ON cf_agents_schedules (next_ms);",
    )
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Schedule> {
    let payload: String = r.get(2)?;
    let kind: String = r.get(3)?;
    Ok(Schedule {
        id: r.get(0)?,
        method: r.get(1)?,
        payload: RawJson::from_string(payload).unwrap_or_else(|_| RawJson::null()),
        kind: match kind.as_str() {
            "scheduled" => "scheduled",
            "cron" => "cron",
            "interval" => "interval",
            _ => "delayed",
        },
        cron: r.get(4)?,
        interval_ms: r.get::<_, Option<i64>>(5)?.map(|v| v.max(0) as u64),
        time: r.get::<_, i64>(6)?.max(0) as u64,
    })
}

const COLUMNS: &str = "id, method, payload, kind, cron, interval_ms, next_ms";

/// Makes a new schedule (not yet stored).
pub(crate) fn new_schedule(
    when: When,
    method: &str,
    payload: RawJson,
    now: u64,
) -> Result<Schedule, ScheduleError> {
    let (kind, cron, interval_ms, time) = match when {
        When::Delay(d) => ("delayed", None, None, now + d.as_millis() as u64),
        When::At(t) => ("scheduled", None, None, to_ms(t)),
        When::Cron(expr) => {
            let next = next_cron(&expr, now)?;
            ("cron", Some(expr), None, next)
        }
        When::Every(d) => {
            let ms = d.as_millis() as u64;
            if ms == 0 {
                return Err(ScheduleError::ZeroInterval);
            }
            ("interval", None, Some(ms), now + ms)
        }
    };
    Ok(Schedule {
        id: crate::server::random_id(),
        method: method.to_owned(),
        payload,
        kind,
        cron,
        interval_ms,
        time,
    })
}

pub(crate) fn insert(db: &rusqlite::Connection, s: &Schedule) -> rusqlite::Result<()> {
    db.execute(
        &format!("INSERT INTO cf_agents_schedules ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            s.id,
            s.method,
            s.payload.get(),
            s.kind,
            s.cron,
            s.interval_ms.map(|v| v as i64),
            s.time as i64
        ],
    )?;
    Ok(())
}

pub(crate) fn delete(db: &rusqlite::Connection, id: &str) -> rusqlite::Result<bool> {
    Ok(db.execute("DELETE FROM cf_agents_schedules WHERE id = ?1", [id])? > 0)
}

pub(crate) fn list(db: &rusqlite::Connection) -> rusqlite::Result<Vec<Schedule>> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM cf_agents_schedules ORDER BY next_ms, id"
    ))?;
    let rows = stmt.query_map([], row)?;
    rows.collect()
}

pub(crate) fn due(db: &rusqlite::Connection, now: u64) -> rusqlite::Result<Vec<Schedule>> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM cf_agents_schedules WHERE next_ms <= ?1 ORDER BY next_ms, id"
    ))?;
    let rows = stmt.query_map([now as i64], row)?;
    rows.collect()
}

pub(crate) fn earliest(db: &rusqlite::Connection) -> rusqlite::Result<Option<u64>> {
    let v: Option<i64> = db
        .query_row("SELECT MIN(next_ms) FROM cf_agents_schedules", [], |r| {
            r.get(0)
        })
        .optional()?
        .flatten();
    Ok(v.map(|v| v.max(0) as u64))
}

/// After a run at `now`: a one-shot schedule goes, a repeating one moves to its next time
/// after `now` (missed occurrences are not replayed).
pub(crate) fn finish(db: &rusqlite::Connection, s: &Schedule, now: u64) -> rusqlite::Result<()> {
    let next = match (s.kind, &s.cron, s.interval_ms) {
        ("interval", _, Some(ms)) => Some(now + ms.max(1)),
        ("cron", Some(expr), _) => next_cron(expr, now).ok(),
        _ => None,
    };
    match next {
        Some(n) => {
            db.execute(
                "UPDATE cf_agents_schedules SET next_ms = ?2 WHERE id = ?1",
                params![s.id, n as i64],
            )?;
        }
        None => {
            delete(db, &s.id)?;
        }
    }
    Ok(())
}

// ===== the server's index =====

type Key = (String, String);

/// Each instance's next due time, for waking instances and for finding them after a restart.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    index: Mutex<Index>,
    pub(crate) changed: Notify,
    persist: Option<Mutex<rusqlite::Connection>>,
    started: AtomicBool,
}

#[derive(Debug, Default)]
struct Index {
    by_due: BTreeSet<(u64, Key)>,
    by_key: HashMap<Key, u64>,
}

impl Index {
    fn set(&mut self, key: Key, next: Option<u64>) {
        if let Some(old) = self.by_key.remove(&key) {
            self.by_due.remove(&(old, key.clone()));
        }
        if let Some(n) = next {
            self.by_due.insert((n, key.clone()));
            self.by_key.insert(key, n);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scheduler {
    /// An index kept in memory only (in-memory storage).
    pub(crate) fn memory() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An index persisted in `dir/schedules.sqlite` and loaded from it.
    pub(crate) fn persisted(dir: &Path) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = rusqlite::Connection::open(dir.join("schedules.sqlite"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS due (
                 namespace TEXT NOT NULL, name TEXT NOT NULL, next_ms INTEGER NOT NULL,
                 PRIMARY KEY (namespace, name))",
        )?;
        let mut index = Index::default();
        {
            let mut stmt = db.prepare("SELECT namespace, name, next_ms FROM due")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for r in rows {
                let (ns, name, next) = r?;
                index.set((ns, name), Some(next.max(0) as u64));
            }
        }
        Ok(Arc::new(Self {
            index: Mutex::new(index),
            changed: Notify::new(),
            persist: Some(Mutex::new(db)),
            started: AtomicBool::new(false),
        }))
    }

    /// Sets the instance's next due time (`None`: nothing scheduled).
    pub(crate) fn set(&self, ns: &str, name: &str, next: Option<u64>) -> Result<(), StoreError> {
        let key = (ns.to_owned(), name.to_owned());
        let unchanged = lock(&self.index).by_key.get(&key).copied() == next;
        if unchanged {
            return Ok(());
        }
        if let Some(db) = &self.persist {
            let db = lock(db);
            match next {
                Some(n) => db.execute(
                    "INSERT INTO due (namespace, name, next_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (namespace, name) DO UPDATE SET next_ms = excluded.next_ms",
                    params![ns, name, n as i64],
                )?,
                None => db.execute(
                    "DELETE FROM due WHERE namespace = ?1 AND name = ?2",
                    params![ns, name],
                )?,
            };
        }
        lock(&self.index).set(key, next);
        self.changed.notify_one();
        Ok(())
    }

    /// Lowers the instance's next due time to `at` if that is earlier (before a new
    /// schedule's row is committed).
    pub(crate) fn lower(&self, ns: &str, name: &str, at: u64) -> Result<(), StoreError> {
        let current = lock(&self.index)
            .by_key
            .get(&(ns.to_owned(), name.to_owned()))
            .copied();
        if current.is_some_and(|c| c <= at) {
            return Ok(());
        }
        self.set(ns, name, Some(at))
    }

    /// Instances whose next due time is at or before `now`, removed from the index (each
    /// writes its new next time after its run); and the earliest time still pending.
    fn take_due(&self, now: u64) -> (Vec<Key>, Option<u64>) {
        let mut index = lock(&self.index);
        let mut out = Vec::new();
        while let Some((t, key)) = index.by_due.first().cloned() {
            if t > now {
                break;
            }
            index.by_due.pop_first();
            index.by_key.remove(&key);
            out.push(key);
        }
        let next = index.by_due.first().map(|(t, _)| *t);
        (out, next)
    }

    /// Instances with schedules (for diagnostics and tests).
    pub(crate) fn pending(&self) -> usize {
        lock(&self.index).by_key.len()
    }

    /// Marks the timer as running; `false` if it already was.
    pub(crate) fn start_once(&self) -> bool {
        !self.started.swap(true, Ordering::SeqCst)
    }

    /// The timer: wakes each instance when its next schedule is due. `deliver` hands the
    /// instance an alarm; on failure the instance is retried a second later.
    pub(crate) async fn run<F, Fut>(self: Arc<Self>, deliver: F)
    where
        F: Fn(String, String) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        loop {
            let notified = self.changed.notified();
            let now = now_ms();
            let (due, next) = self.take_due(now);
            for (ns, name) in due {
                if !deliver(ns.clone(), name.clone()).await {
                    let _ = self.lower(&ns, &name, now_ms() + 1000);
                }
            }
            let due_now = lock(&self.index)
                .by_due
                .first()
                .is_some_and(|(t, _)| *t <= now_ms());
            if !due_now {
                let wait = next.map_or(Duration::from_secs(3600), |n| {
                    Duration::from_millis(n.saturating_sub(now_ms()))
                });
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Cluster storage: every second, asks PostgreSQL for instances with a schedule due soon
/// that no live node owns (their owner died, or they ended) and puts them in this node's
/// index, whose timer wakes them (acquiring their lease; if another node gets there first
/// its wake is the one that runs them). Instances awake on a node are in its own index.
#[cfg(feature = "postgres")]
pub(crate) async fn poll_cluster(
    pg: std::sync::Weak<crate::cluster::Pg>,
    scheduler: std::sync::Weak<Scheduler>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(pg), Some(scheduler)) = (pg.upgrade(), scheduler.upgrade()) else {
            return;
        };
        let soon = i64::try_from(now_ms() + 1000).unwrap_or(i64::MAX);
        match pg.due(soon).await {
            Ok(due) => {
                for ((ns, name), at) in due {
                    let _ = scheduler.lower(&ns, &name, at);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read due schedules from PostgreSQL"),
        }
    }
}

impl FromStr for When {
    type Err = ScheduleError;

    /// A cron expression (checked).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_cron(s)?;
        Ok(When::Cron(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_parses_and_moves_on() {
        let t0 = 1_800_000_000_000; // 2027-01-15T08:00:00Z
        let next = next_cron("*/5 * * * *", t0).unwrap();
        assert!(next > t0 && next - t0 <= 5 * 60_000);
        assert_eq!(next % 60_000, 0);
        let s = next_cron("*/10 * * * * *", t0).unwrap();
        assert!(s > t0 && s - t0 <= 10_000);
        for bad in ["", "* * *", "61 * * * *", "*/0 * * * *", "nonsense"] {
            assert!(
                matches!(next_cron(bad, t0), Err(ScheduleError::Cron { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn index_orders_instances_by_due_time() {
        let s = Scheduler::default();
        s.set("a", "1", Some(30)).unwrap();
        s.set("a", "2", Some(10)).unwrap();
        s.lower("a", "1", 20).unwrap();
        s.lower("a", "2", 50).unwrap(); // later: unchanged
        let (due, next) = s.take_due(25);
        assert_eq!(due, [("a".into(), "2".into()), ("a".into(), "1".into())]);
        assert_eq!(next, None);
        s.set("b", "x", Some(5)).unwrap();
        s.set("b", "x", None).unwrap();
        assert_eq!(s.pending(), 0);
    }
}

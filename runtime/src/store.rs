//! Persistence: one SQLite database per agent instance (like a Durable Object's storage).
//!
//! [`Storage::sqlite`] keeps a file per instance under a data directory
//! (`{dir}/{namespace}/{instance}.sqlite`, the instance name percent-encoded);
//! [`Storage::memory`] gives every instance a private in-memory database, for tests. Either way
//! the agent reaches its own database through [`Context::sql`](crate::Context::sql), and the
//! runtime keeps its own tables in it (`cf_agents_state`, `cf_agents_sse`).
//!
//! Every write is a committed transaction before the call returns (WAL journal,
//! `synchronous=NORMAL`: durable against a process crash such as `kill -9`; use
//! [`Storage::sqlite_full_sync`] for durability against power loss too).

use rusqlite::{params, Connection as Db, OpenFlags, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

/// Where instances keep their data.
#[derive(Debug, Clone)]
pub struct Storage {
    kind: Arc<Kind>,
}

#[derive(Debug)]
enum Kind {
    Memory(Memory),
    Sqlite {
        dir: PathBuf,
        full_sync: bool,
    },
    #[cfg(feature = "postgres")]
    Postgres(Arc<crate::cluster::Pg>),
}

/// In-memory databases live as long as the `Storage`: each is a named shared-cache memory
/// database held open by a keeper connection, so an instance that is evicted or ends finds
/// its data again.
#[derive(Debug)]
struct Memory {
    uid: u64,
    dbs: Mutex<HashMap<(String, String), (u64, Db)>>,
}

/// A storage error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be created.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The instance's database is not open (used outside a hook of a started instance).
    #[error("the instance's storage is not open")]
    Closed,
    /// PostgreSQL storage failed, or this node no longer owns the instance.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl Storage {
    /// An in-memory database per instance, kept as long as this `Storage` (and its clones)
    /// exist; nothing survives the process. For tests and examples.
    pub fn memory() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            kind: Arc::new(Kind::Memory(Memory {
                uid: NEXT.fetch_add(1, Ordering::Relaxed),
                dbs: Mutex::new(HashMap::new()),
            })),
        }
    }

    /// One SQLite file per instance under `dir` (created on demand).
    pub fn sqlite(dir: impl Into<PathBuf>) -> Self {
        Self {
            kind: Arc::new(Kind::Sqlite {
                dir: dir.into(),
                full_sync: false,
            }),
        }
    }

    /// Like [`sqlite`](Self::sqlite) with `synchronous=FULL`: every commit is fsynced.
    pub fn sqlite_full_sync(dir: impl Into<PathBuf>) -> Self {
        Self {
            kind: Arc::new(Kind::Sqlite {
                dir: dir.into(),
                full_sync: true,
            }),
        }
    }

    /// Every instance's data in PostgreSQL (see [`cluster`](crate::cluster)): one row per
    /// instance holding its lease and its SQLite database image, written (fenced by the
    /// lease's epoch) before anything an event produced is acknowledged. This node gets a
    /// random id and forwards nothing; use [`postgres_node`](Self::postgres_node) in a
    /// cluster. Connects on first use (tables are created then); `url` is a libpq-style URL,
    /// `postgres://user:password@host:port/database`.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres(url: &str) -> Result<Self, StoreError> {
        Self::postgres_node(url, crate::cluster::Node::default())
    }

    /// [`postgres`](Self::postgres) as the cluster node `node`: its id owns leases, and other
    /// nodes forward requests for its instances to its advertised address.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres_node(url: &str, node: crate::cluster::Node) -> Result<Self, StoreError> {
        Ok(Self {
            kind: Arc::new(Kind::Postgres(Arc::new(crate::cluster::Pg::new(
                url, node,
            )?))),
        })
    }

    /// Checks that the storage can be used: for PostgreSQL, connects, creates the tables if
    /// missing and registers this node; nothing to do for SQLite and memory storage (their
    /// databases open per instance).
    pub async fn connect(&self) -> Result<(), StoreError> {
        #[cfg(feature = "postgres")]
        if let Kind::Postgres(pg) = &*self.kind {
            pg.connect().await?;
        }
        Ok(())
    }

    /// The PostgreSQL side, if this is PostgreSQL storage.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres_store(&self) -> Option<&Arc<crate::cluster::Pg>> {
        match &*self.kind {
            Kind::Postgres(pg) => Some(pg),
            _ => None,
        }
    }

    /// The data directory, if this is file storage.
    pub fn dir(&self) -> Option<&Path> {
        match &*self.kind {
            Kind::Memory(_) => None,
            Kind::Sqlite { dir, .. } => Some(dir),
            #[cfg(feature = "postgres")]
            Kind::Postgres(_) => None,
        }
    }

    /// Removes an instance's stored data (its database and WAL files, or its memory
    /// database). Nothing stored is not an error.
    pub(crate) fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        match &*self.kind {
            Kind::Memory(mem) => {
                let mut dbs = mem.dbs.lock().unwrap_or_else(|e| e.into_inner());
                dbs.remove(&(namespace.to_owned(), name.to_owned()));
            }
            Kind::Sqlite { dir, .. } => {
                let base = dir
                    .join(file_name(namespace))
                    .join(format!("{}.sqlite", file_name(name)));
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = base.clone().into_os_string();
                    p.push(suffix);
                    match std::fs::remove_file(&p) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
            }
            // the instance deletes its row under its lease
            #[cfg(feature = "postgres")]
            Kind::Postgres(_) => {}
        }
        Ok(())
    }

    pub(crate) fn open(&self, namespace: &str, name: &str) -> Result<InstanceStore, StoreError> {
        let db = match &*self.kind {
            Kind::Memory(mem) => {
                let mut dbs = mem.dbs.lock().unwrap_or_else(|e| e.into_inner());
                let next = dbs.len() as u64 + 1;
                let key = (namespace.to_owned(), name.to_owned());
                let uri = |id: u64| {
                    format!(
                        "file:agentwire-{}-{}-{id}?mode=memory&cache=shared",
                        std::process::id(),
                        mem.uid
                    )
                };
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_URI
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let id = match dbs.get(&key) {
                    Some((id, _)) => *id,
                    None => {
                        let keeper = Db::open_with_flags(uri(next), flags)?;
                        dbs.insert(key, (next, keeper));
                        next
                    }
                };
                Db::open_with_flags(uri(id), flags)?
            }
            Kind::Sqlite { dir, full_sync } => {
                let dir = dir.join(file_name(namespace));
                std::fs::create_dir_all(&dir)?;
                let db = Db::open(dir.join(format!("{}.sqlite", file_name(name))))?;
                db.pragma_update(None, "journal_mode", "WAL")?;
                db.pragma_update(
                    None,
                    "synchronous",
                    if *full_sync { "FULL" } else { "NORMAL" },
                )?;
                db.busy_timeout(std::time::Duration::from_secs(5))?;
                db
            }
            #[cfg(feature = "postgres")]
            Kind::Postgres(_) => return InstanceStore::from_image(None),
        };
        InstanceStore::prepare(db)
    }
}

impl InstanceStore {
    fn prepare(db: Db) -> Result<InstanceStore, StoreError> {
        crate::schedule::ensure_table(&db)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS cf_agents_state (id TEXT PRIMARY KEY NOT NULL, state TEXT);
             CREATE TABLE IF NOT EXISTS cf_agents_sse (stream TEXT NOT NULL, id INTEGER NOT NULL,
                 event TEXT, data TEXT NOT NULL, PRIMARY KEY (stream, id));",
        )?;
        Ok(InstanceStore {
            db,
            #[cfg(feature = "postgres")]
            dirty: None,
        })
    }

    /// A private in-memory database loaded from `image` (empty: a new one), with a commit
    /// hook that marks it dirty (cluster storage).
    #[cfg(feature = "postgres")]
    pub(crate) fn from_image(image: Option<Vec<u8>>) -> Result<InstanceStore, StoreError> {
        let mut db = Db::open_in_memory()?;
        match image {
            Some(img) if !img.is_empty() => {
                let len = img.len();
                db.deserialize_read_exact(rusqlite::MAIN_DB, &img[..], len, false)?;
            }
            _ => {
                // small pages: a small agent's image is a few KiB, not tens
                db.pragma_update(None, "page_size", 1024)?;
            }
        }
        let dirty = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = dirty.clone();
        db.commit_hook(Some(move || {
            flag.store(true, Ordering::Relaxed);
            false
        }))?;
        let mut store = Self::prepare(db)?;
        store.dirty = Some(dirty);
        Ok(store)
    }

    /// Whether anything was committed since the last call (cluster storage).
    #[cfg(feature = "postgres")]
    pub(crate) fn take_dirty(&self) -> bool {
        self.dirty
            .as_ref()
            .is_some_and(|d| d.swap(false, Ordering::Relaxed))
    }

    /// The database as SQLite serializes it.
    #[cfg(feature = "postgres")]
    pub(crate) fn image(&self) -> Result<Vec<u8>, StoreError> {
        Ok(self.db.serialize(rusqlite::MAIN_DB)?.to_vec())
    }
}

/// A file name for a namespace or instance name: percent-encoding of everything except
/// `[A-Za-z0-9_-]`, and a stable hash suffix instead of the tail when it gets long.
pub(crate) fn file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    if out.len() > 160 {
        // FNV-1a: stable across builds, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.truncate(140);
        while !out.is_char_boundary(out.len()) {
            out.pop();
        }
        out.push_str(&format!("~{h:016x}"));
    }
    out
}

/// One instance's open database.
#[derive(Debug)]
pub(crate) struct InstanceStore {
    pub(crate) db: Db,
    /// Set by every commit (cluster storage: the image is written after the event).
    #[cfg(feature = "postgres")]
    dirty: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// One stored SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event id (increasing per stream, starting at 1).
    pub id: u64,
    /// The event type, if any.
    pub event: Option<String>,
    /// The data.
    pub data: String,
}

impl InstanceStore {
    pub(crate) fn load_state(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT state FROM cf_agents_state WHERE id = 'STATE'",
                [],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    pub(crate) fn save_state(&self, json: &str) -> Result<(), StoreError> {
        let t = crate::metrics::start();
        self.db.execute(
            "INSERT INTO cf_agents_state (id, state) VALUES ('STATE', ?1)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state",
            params![json],
        )?;
        crate::metrics::sqlite_write_done(t);
        Ok(())
    }

    pub(crate) fn sse_append(
        &self,
        stream: &str,
        event: Option<&str>,
        data: &str,
        keep: usize,
    ) -> Result<u64, StoreError> {
        let t = crate::metrics::start();
        let tx = self.db.unchecked_transaction()?;
        let last: i64 = tx.query_row(
            "SELECT COALESCE(MAX(id), 0) FROM cf_agents_sse WHERE stream = ?1",
            params![stream],
            |r| r.get(0),
        )?;
        let id = last + 1;
        tx.execute(
            "INSERT INTO cf_agents_sse (stream, id, event, data) VALUES (?1, ?2, ?3, ?4)",
            params![stream, id, event, data],
        )?;
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM cf_agents_sse WHERE stream = ?1 AND id <= ?2",
            params![stream, id - keep],
        )?;
        tx.commit()?;
        crate::metrics::sqlite_write_done(t);
        Ok(u64::try_from(id).unwrap_or(0))
    }

    pub(crate) fn sse_since(
        &self,
        stream: &str,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let mut stmt = self.db.prepare_cached(
            "SELECT id, event, data FROM cf_agents_sse WHERE stream = ?1 AND id > ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![stream, after], |r| {
            Ok(StoredEvent {
                id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                event: r.get(1)?,
                data: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn sse_last_id(&self, stream: &str) -> Result<u64, StoreError> {
        let last: i64 = self.db.query_row(
            "SELECT COALESCE(MAX(id), 0) FROM cf_agents_sse WHERE stream = ?1",
            params![stream],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(last).unwrap_or(0))
    }

    pub(crate) fn sse_reset(&self, stream: &str) -> Result<(), StoreError> {
        self.db.execute(
            "DELETE FROM cf_agents_sse WHERE stream = ?1",
            params![stream],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("golden"), "golden");
        assert_eq!(file_name("hello world/.."), "hello%20world%2F%2E%2E");
        assert_ne!(file_name("a b"), file_name("a%20b"));
        let long = "x".repeat(400);
        let f = file_name(&long);
        assert!(f.len() < 200);
        assert_ne!(f, file_name(&"x".repeat(401)));
    }

    #[test]
    fn memory_storage_outlives_instance_handles() {
        let storage = Storage::memory();
        storage.open("ns", "a").unwrap().save_state("1").unwrap();
        storage.open("ns", "b").unwrap().save_state("2").unwrap();
        assert_eq!(
            storage
                .open("ns", "a")
                .unwrap()
                .load_state()
                .unwrap()
                .as_deref(),
            Some("1")
        );
        assert_eq!(
            storage
                .open("ns", "b")
                .unwrap()
                .load_state()
                .unwrap()
                .as_deref(),
            Some("2")
        );
        // another Storage is another world
        assert_eq!(
            Storage::memory()
                .open("ns", "a")
                .unwrap()
                .load_state()
                .unwrap(),
            None
        );
    }

    #[test]
    fn state_and_sse_log_round_trip() {
        let s = Storage::memory().open("ns", "n").unwrap();
        assert_eq!(s.load_state().unwrap(), None);
        s.save_state("{\"count\":1}").unwrap();
        s.save_state("{\"count\":2}").unwrap();
        assert_eq!(s.load_state().unwrap().as_deref(), Some("{\"count\":2}"));
        for i in 0..5 {
            assert_eq!(
                s.sse_append("t", Some("tick"), &i.to_string(), 3).unwrap(),
                i + 1
            );
        }
        let kept: Vec<u64> = s.sse_since("t", 0).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(kept, vec![3, 4, 5]);
        assert_eq!(s.sse_since("t", 4).unwrap()[0].data, "4");
        s.sse_reset("t").unwrap();
        assert!(s.sse_since("t", 0).unwrap().is_empty());
    }
}

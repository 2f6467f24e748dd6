//! The embedded store: two SQLite files in WAL mode. The store's own file holds tweets (each
//! distinct author object once, see `Tweets`), users and settings; beside it, `<store>-ledger`
//! holds accounts, keys, credits, the request ledger, idempotency and rate limits, attached to
//! every connection as `ledger` (queries name tables without a schema). Charges commit to the
//! ledger alone, so readers of pages keep their page caches: SQLite drops a connection's whole
//! cache of a file whenever that file changed.
//!
//! Reads run on the calling task. A page is an indexed read of at most a few dozen rows that takes
//! microseconds, and in WAL mode readers never wait for the writer, so handing it to a blocking
//! thread would cost more than the read. Each concurrent reader takes a read-only connection from
//! a small pool (it grows to the concurrency there is; the runtime's worker count bounds it).
//! Writes go through one writer connection on tokio's blocking pool, batched in transactions.

mod accounts;
mod changes;
mod ledger;
mod migrations;
mod recycle;
mod transfer;
mod wal_sync;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use xgate_model::{TweetId, TweetRecord, UserId};
use xgate_store::journal::{self, ChargeJournal, OpenError, Opened};
use xgate_store::sortable::{from_column, to_column};
use xgate_store::{
    PageInfo, Store, StoreError, StoreResult, StoredTweet, UpsertSummary, UserSummary,
};

pub use changes::POLL as CHANGES_POLL;
pub use migrations::LATEST as SCHEMA_VERSION;
pub use migrations::LEDGER_LATEST as LEDGER_SCHEMA_VERSION;

/// Idle read connections kept for reuse; more are opened under load and closed after.
const IDLE_READERS: usize = 16;
/// The page cache all readers of the tweets file share out, in bytes, unless the store is told
/// otherwise ([`SqliteStore::with_read_cache`]): hot pages are then served from memory instead of
/// read (and copied) from the OS at every request. Each reader connection has its own cache; a
/// pool holds about one reader per thread that runs requests, so each gets its share of this (see
/// [`reader_cache_kib`]). Counted in the server's memory budget.
pub const READ_CACHE_BYTES: usize = 48 * 1024 * 1024;
/// The writer's page cache of the tweets file, in KiB, while serving: it writes little there.
const WRITER_CACHE_KIB: i64 = 8 * 1024;
/// The tweets file's page size, in bytes: a tweet's JSON is a few KiB, and 16 KiB pages hold
/// several rows each instead of one row and a lot of slack per 4 KiB page.
const PAGE_SIZE: u64 = 16384;
/// The writer's page cache of the tweets file during a bulk load, in KiB: a load touches B-tree
/// pages all over the file, and a larger cache keeps them from being read and written again.
const BULK_WRITER_CACHE_KIB: i64 = 64 * 1024;
/// The ledger's page size: a commit of charges writes a few small pages, not a few of 16 KiB.
const LEDGER_PAGE_SIZE: i64 = 4096;

// No `LIMIT ?`: SQLite re-prepares a statement whenever a LIMIT parameter is bound again (the
// planner may use its value), which would cost a parse per page. The reader steps through as
// many rows as it needs and stops.
const PAGE_SQL: &str = "SELECT tweet_id, json FROM tweets \
     WHERE user_id = ?1 AND has_media = 1 ORDER BY tweet_id DESC";
const PAGE_AFTER_SQL: &str = "SELECT tweet_id, json FROM tweets \
     WHERE user_id = ?1 AND has_media = 1 AND tweet_id < ?2 ORDER BY tweet_id DESC";
/// A row's author, read apart ([`Tweets`]), once for each run of rows by one author, not joined to
/// every row.
const AUTHOR_SQL: &str = "SELECT json FROM authors WHERE id = ?1";
/// A page's ids alone: read from the timeline index, no table row touched.
const IDS_SQL: &str = "SELECT tweet_id FROM tweets \
     WHERE user_id = ?1 AND has_media = 1 ORDER BY tweet_id DESC";
const IDS_AFTER_SQL: &str = "SELECT tweet_id FROM tweets \
     WHERE user_id = ?1 AND has_media = 1 AND tweet_id < ?2 ORDER BY tweet_id DESC";

/// Checkpoint the WAL every this many pages (256 MiB) during a bulk load, not every 1,000.
const BULK_CHECKPOINT_PAGES: i64 = 16 * 1024;

/// When a commit of charges ([`AccountStore::record`]) returns, against the sync of the ledger's
/// log: what a served store promises of a charge whose response has left. Every other write of
/// the store (top-ups, keys, accounts) returns only once it is on disk, in either mode.
///
/// [`AccountStore::record`]: xgate_store::accounts::AccountStore::record
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LedgerSync {
    /// Once the commit is in the ledger's log, written to the operating system, and the log's
    /// sync has begun: the sync runs while the commit's responses leave. A crash of xgate loses
    /// no charge (what it wrote is the OS's); a power cut or a crash of the OS can lose the
    /// charges committed since the running sync began (the last millisecond or so), in the
    /// callers' favour. Balances and the ledger stay consistent either way.
    #[default]
    Background,
    /// Once a sync that began after the commit has returned: each charge is on disk before its
    /// response leaves. A request's work is the same; the core idles while commits wait on the
    /// disk, which costs throughput (docs/BILLING.md, "Guarantees").
    BeforeResponse,
}

/// How a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Synced before the commit returns; commits of charges as [`LedgerSync`] says.
    Synced,
    /// Not synced at each commit. A crash of the process loses nothing; a power cut may lose the
    /// last commits, never corrupt the store. For loads that can simply be run again (ingest is
    /// an idempotent upsert).
    Relaxed,
    /// Neither journaled nor synced: a crash can leave the file corrupt. Only for a file that is
    /// not a store yet: a load into a new store builds it under another name ([`NewFile`]).
    Unprotected,
}

/// A load into a store that did not exist: the file is built as `<store>.partial` and moved into
/// place when the load finishes ([`Store::finish_load`]). Each page is then written once, with no
/// rollback journal and no sync per commit, and an interrupted load leaves no store behind.
#[derive(Debug)]
struct NewFile {
    /// The store's path, where the file goes when the load finishes.
    target: PathBuf,
    /// Where the file is built.
    partial: PathBuf,
    /// The partial file, open and locked (`flock`, exclusive) for the whole load, so that two
    /// loads cannot build the same file. SQLite's own locks are `fcntl` locks, which this does
    /// not touch; it is closed only after SQLite's connections to the file.
    lock: Arc<std::fs::File>,
    /// Gives the pages of tweets written so far back to the kernel after each batch.
    recycler: recycle::Recycler,
}

/// The embedded SQLite store.
pub struct SqliteStore {
    /// The store's path.
    path: PathBuf,
    /// Where the store's main file is now: `path`, or elsewhere while a new store is loaded.
    file: PathBuf,
    readers: Mutex<Vec<Connection>>,
    writer: Arc<Mutex<Connection>>,
    /// A bulk load switched the store to a rollback journal: back to WAL at the end.
    restore_wal: bool,
    /// A load into a new store that has not finished.
    new_file: Mutex<Option<NewFile>>,
    /// When the tweets file last changed, for caches of pages.
    changes: Arc<changes::Changes>,
    /// What all readers' page caches of the tweets file add up to, in KiB.
    read_cache_kib: i64,
    /// Syncs the ledger's log after the writer's commits, for a store whose commits are synced
    /// (the writer's ledger is then `synchronous=NORMAL`: see [`wal_sync`]).
    ledger_sync: Option<wal_sync::WalSync>,
    /// Whether a commit of charges waits for its sync.
    charges: LedgerSync,
    /// The charge journal, held open by a store that serves charges with it
    /// ([`SqliteStore::with_charge_journal`]).
    journal: Option<Arc<ChargeJournal>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(new) = lock(&self.new_file).take() {
            // Unfinished: the load is abandoned, and the store does not come into being.
            tracing::warn!(
                store = %new.target.display(),
                "the load into a new store did not finish; nothing was stored"
            );
            if let Err(e) = std::fs::remove_file(&new.partial) {
                tracing::warn!(file = %new.partial.display(), error = %e, "could not remove");
            }
            return;
        }
        if self.restore_wal {
            let writer = lock(&self.writer);
            if let Err(e) = writer.pragma_update(Some(MAIN), "journal_mode", "WAL") {
                // The next open switches to WAL anyway.
                tracing::warn!(error = %e, "could not return the store to WAL mode");
            }
        }
    }
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and migrating its schema as needed. Every
    /// commit is synced to disk before it returns.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path, Durability::Synced)
    }

    /// Opens the store for a bulk load (`xgate ingest`), trading the sync of each commit for
    /// throughput; see [`Durability::Relaxed`].
    pub fn open_for_bulk_load(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path, Durability::Relaxed)
    }

    /// Opens the store for a bulk load that the caller finishes with [`Store::finish_load`]. An
    /// existing store is opened as by [`Self::open_for_bulk_load`]. A store that does not exist
    /// yet is built as `<path>.partial`, without a rollback journal or syncs, and comes into
    /// place only when the load finishes: dropped unfinished (or after a crash), the load leaves
    /// no store, and the next load starts over.
    pub fn open_for_new_load(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref();
        let exists = path.try_exists().map_err(|e| open_error(path, e))?;
        if exists {
            return Self::open_for_bulk_load(path);
        }
        let partial = Self::partial_path(path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)
            .map_err(|e| open_error(&partial, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Unavailable(format!(
                    "another load is building the store {} (in {})",
                    path.display(),
                    partial.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(open_error(&partial, e)),
        }
        // What an interrupted load left is of no use: start over.
        file.set_len(0).map_err(|e| open_error(&partial, e))?;
        let mut store =
            Self::open_file(path.to_path_buf(), partial.clone(), Durability::Unprotected)?;
        let file = Arc::new(file);
        let recycler = recycle::Recycler::start(Arc::clone(&file), PAGE_SIZE)
            .map_err(|e| open_error(&partial, e))?;
        store.new_file = Mutex::new(Some(NewFile {
            target: path.to_path_buf(),
            partial,
            lock: file,
            recycler,
        }));
        Ok(store)
    }

    /// Where a new store is built during its first load: the store's path with `.partial`
    /// appended.
    pub fn partial_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    }

    fn open_with(path: impl AsRef<Path>, durability: Durability) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.try_exists().map_err(|e| open_error(&path, e))? {
            Self::refuse_while_built(&path)?;
        }
        Self::open_file(path.clone(), path, durability)
    }

    /// A store that a load is building ([`Self::open_for_new_load`]) does not exist yet: opening
    /// its path would make another, empty one, which the load could then not replace.
    fn refuse_while_built(path: &Path) -> StoreResult<()> {
        let partial = Self::partial_path(path);
        // A partial file nobody holds is what an interrupted load left: ignored. (Closing this
        // descriptor drops the POSIX locks this process holds on the file; only a load in this
        // same process could hold any, and it has no other connection to share the file with.)
        let Ok(file) = std::fs::File::open(&partial) else {
            return Ok(());
        };
        match file.try_lock_shared() {
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
                "a load is building the store {} (in {}); open it once the load has finished",
                path.display(),
                partial.display()
            ))),
            Ok(()) | Err(std::fs::TryLockError::Error(_)) => Ok(()),
        }
    }

    /// Opens the store at `path` whose main file is at `file` (the same but for a new store's
    /// first load).
    fn open_file(path: PathBuf, file: PathBuf, durability: Durability) -> StoreResult<Self> {
        let ledger = Self::ledger_path(&path);
        let mut writer = Connection::open(&file).map_err(|e| open_error(&path, e))?;
        configure(&writer).map_err(|e| open_error(&path, e))?;
        // Page sizes take effect only on a new, empty file, and must precede the switch to WAL.
        let setup = |w: &Connection| -> rusqlite::Result<()> {
            w.pragma_update(Some(MAIN), "page_size", PAGE_SIZE)?;
            let journal = match durability {
                Durability::Unprotected => "OFF",
                Durability::Synced | Durability::Relaxed => "WAL",
            };
            w.pragma_update(Some(MAIN), "journal_mode", journal)?;
            attach_ledger(w, &ledger)?;
            w.pragma_update(Some(LEDGER), "page_size", LEDGER_PAGE_SIZE)?;
            w.pragma_update(Some(LEDGER), "journal_mode", "WAL")?;
            let (cache, synchronous) = match durability {
                Durability::Synced => (WRITER_CACHE_KIB, "FULL"),
                Durability::Relaxed => (BULK_WRITER_CACHE_KIB, "NORMAL"),
                Durability::Unprotected => (BULK_WRITER_CACHE_KIB, "OFF"),
            };
            w.pragma_update(Some(MAIN), "cache_size", -cache)?;
            // Only the tweets file: the ledger is synced at every commit, always.
            w.pragma_update(Some(MAIN), "synchronous", synchronous)?;
            if durability != Durability::Synced {
                w.pragma_update(None, "wal_autocheckpoint", BULK_CHECKPOINT_PAGES)?;
            }
            Ok(())
        };
        setup(&writer).map_err(|e| open_error(&path, e))?;
        migrations::migrate(&mut writer).map_err(|e| open_error(&path, e))?;
        // A load into a store that no other connection has open writes each page once, with a
        // rollback journal, instead of twice (WAL, then checkpoint). SQLite keeps WAL when other
        // connections are open; WAL comes back when this store is dropped.
        let restore_wal = durability == Durability::Relaxed && {
            let switched = writer.query_row("PRAGMA main.journal_mode=DELETE", [], |row| {
                row.get::<_, String>(0)
            });
            match switched {
                Ok(mode) => mode.eq_ignore_ascii_case("delete"),
                Err(e) if is_busy(&e) => false,
                Err(e) => return Err(open_error(&path, e)),
            }
        };
        let ledger_sync = match durability {
            Durability::Synced => {
                let sync =
                    wal_sync::WalSync::start(&writer, ledger).map_err(|e| open_error(&path, e))?;
                Some(sync)
            }
            Durability::Relaxed | Durability::Unprotected => None,
        };
        Ok(SqliteStore {
            path,
            file,
            readers: Mutex::new(Vec::new()),
            writer: Arc::new(Mutex::new(writer)),
            restore_wal,
            new_file: Mutex::new(None),
            changes: Arc::default(),
            read_cache_kib: kib(READ_CACHE_BYTES),
            ledger_sync,
            charges: LedgerSync::default(),
            journal: None,
        })
        .and_then(|store| {
            if durability == Durability::Synced {
                // Charges a process that died had answered but not recorded: into the ledger
                // before anything else reads it. A process serving the store holds its journal,
                // and records them itself.
                let journal = Self::journal_path(&store.path);
                if journal.try_exists().map_err(|e| open_error(&journal, e))? {
                    match store.open_journal() {
                        Ok(_) | Err(OpenError::Busy(_)) => {}
                        Err(OpenError::Store(e)) => return Err(e),
                    }
                }
            }
            Ok(store)
        })
    }

    /// The same store, keeping its charge journal open: a charge the server's meter writes there
    /// is answered before it is recorded (`xgate_store::journal`). If another process holds the
    /// journal (a second server on the same files), the store keeps none, and its charges are
    /// recorded before they are answered. Call it before the store is used.
    pub fn with_charge_journal(mut self) -> StoreResult<Self> {
        match self.open_journal() {
            Ok(journal) => self.journal = Some(Arc::new(journal)),
            Err(OpenError::Busy(path)) => tracing::warn!(
                journal = %path.display(),
                "another process holds the charge journal: charges are recorded before they \
                 are answered"
            ),
            Err(OpenError::Store(e)) => return Err(e),
        }
        Ok(self)
    }

    /// Where the store's charge journal lives: the store's path with `-charges` appended.
    pub fn journal_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push("-charges");
        PathBuf::from(name)
    }

    /// Opens the charge journal (made if there is none), records what it holds beyond the
    /// store's mark, and moves the mark past it, synced to disk before this returns.
    fn open_journal(&self) -> Result<ChargeJournal, OpenError> {
        let path = Self::journal_path(&self.path);
        let mut conn = lock(&self.writer);
        let mark = accounts::journal_mark(&conn).map_err(store_error)?;
        let Opened { journal, unfolded } =
            ChargeJournal::open(&path, mark, journal::DEFAULT_SLOTS)?;
        // A journal without entries taking the place of one the store named that is gone.
        let replaced = mark.is_some_and(|mark| mark.id != journal.id());
        if replaced {
            tracing::warn!(
                journal = %path.display(),
                "the charge journal the store named is gone, and this one, holding no entry, \
                 takes its place: charges a server that did not stop cleanly had answered and not \
                 recorded, if any, went with the old one"
            );
        }
        if mark.is_none() || replaced || !unfolded.is_empty() {
            if !unfolded.is_empty() {
                tracing::warn!(
                    journal = %path.display(),
                    charges = unfolded.len(),
                    "recording the charges a stopped server answered but had not recorded"
                );
            }
            // Synced by SQLite itself, as every commit is when the ledger's log has no thread of
            // its own: this runs before anything is served.
            let synced = self.ledger_sync.is_some();
            if synced {
                conn.pragma_update(Some(LEDGER), "synchronous", "FULL")
                    .map_err(store_error)?;
            }
            let recorded = accounts::record_unfolded(&mut conn, &unfolded, &journal);
            if synced {
                conn.pragma_update(Some(LEDGER), "synchronous", "NORMAL")
                    .map_err(store_error)?;
            }
            recorded.map_err(store_error)?;
        }
        journal.folded(journal.next());
        Ok(journal)
    }

    /// The same store with its commits of charges ended as `mode` says (by default
    /// [`LedgerSync::Background`]). Call it before the store is used.
    pub fn with_ledger_sync(mut self, mode: LedgerSync) -> Self {
        self.charges = mode;
        self
    }

    /// The same store with `bytes` of page cache shared by its readers instead of
    /// [`READ_CACHE_BYTES`] (at least 1 MiB): a server that keeps rendered pages itself gives
    /// them less. Takes effect for readers opened after; call it before the store is used.
    pub fn with_read_cache(mut self, bytes: usize) -> Self {
        self.read_cache_kib = kib(bytes).max(1024);
        lock(&self.readers).clear();
        self
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the store's ledger file lives: the store's path with `-ledger` appended.
    pub fn ledger_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push("-ledger");
        PathBuf::from(name)
    }

    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let pooled = lock(&self.readers).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => self.open_reader().map_err(store_error)?,
        };
        let out = f(&conn).map_err(store_error);
        let mut idle = lock(&self.readers);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    fn open_reader(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.file, flags)?;
        configure(&conn)?;
        attach_ledger(&conn, &Self::ledger_path(&self.path))?;
        conn.pragma_update(
            Some(MAIN),
            "cache_size",
            -reader_cache_kib(self.read_cache_kib),
        )?;
        Ok(conn)
    }

    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let writer = Arc::clone(&self.writer);
        let out = tokio::task::spawn_blocking(move || f(&mut lock(&writer)).map_err(store_error))
            .await
            .map_err(|e| StoreError::Backend(format!("store writer task failed: {e}")))??;
        // Whatever `f` wrote to the ledger is on disk before this returns.
        if let Some(sync) = &self.ledger_sync {
            sync.synced().await?;
        }
        Ok(out)
    }

    /// [`SqliteStore::write`] for a commit of charges: `f` runs on this thread if the writer is
    /// free (a commit of charges without its sync is a few hundred microseconds of work, less than
    /// handing it to another thread and back costs), on the blocking pool otherwise. Its sync is
    /// waited for or only started as the store's [`LedgerSync`] says.
    pub(crate) async fn write_here<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let Some(sync) = &self.ledger_sync else {
            return self.write(f).await;
        };
        match self.try_write_here(f) {
            Ok(out) => {
                let out = out?;
                self.charges.after_commit(sync).await?;
                Ok(out)
            }
            Err(f) => self.write(f).await,
        }
    }

    /// Runs `f` on the writer connection on this thread, unless another thread holds it: then
    /// `f` comes back.
    fn try_write_here<T, F: FnOnce(&mut Connection) -> rusqlite::Result<T>>(
        &self,
        f: F,
    ) -> Result<StoreResult<T>, F> {
        let mut conn = match self.writer.try_lock() {
            Ok(conn) => conn,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(f),
        };
        Ok(f(&mut conn).map_err(store_error))
    }
}

pub(crate) const MAIN: &str = "main";
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// The schema name the ledger file is attached under.
pub(crate) const LEDGER: &str = "ledger";

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // Room for every statement a connection runs often (the ledger's alone has seven), so none
    // is evicted and prepared again.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Every commit is synced (the writer's commits of charges by the store's own thread instead:
    // see `wal_sync`). Writes are batched (tweets by the thousand, charges by group commit), so
    // the syncs are few.
    conn.pragma_update(Some(MAIN), "synchronous", "FULL")
}

/// Attaches the ledger file at `ledger` (the store's path with `-ledger` appended) as `ledger`
/// (created if missing; with the connection's own flags, so read-only for a reader), synced at
/// every commit.
fn attach_ledger(conn: &Connection, ledger: &Path) -> rusqlite::Result<()> {
    let ledger = ledger
        .to_str()
        .ok_or_else(|| rusqlite::Error::InvalidPath(ledger.to_path_buf()))?;
    conn.execute(&format!("ATTACH DATABASE ?1 AS {LEDGER}"), [ledger])?;
    conn.pragma_update(Some(LEDGER), "synchronous", "FULL")
}

/// Each reader connection's share of `total` KiB: there are about as many readers at once as
/// threads that can run requests, which the CPUs this process may use bound.
fn reader_cache_kib(total: i64) -> i64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    total / i64::try_from(threads).unwrap_or(1).max(1)
}

/// `bytes` in KiB, as SQLite's `cache_size` takes them.
fn kib(bytes: usize) -> i64 {
    i64::try_from(bytes / 1024).unwrap_or(i64::MAX)
}

/// A poisoned lock only means another thread panicked while holding it; a connection or a list of
/// idle connections is still sound, so carry on with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn open_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
}

fn store_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Steps through `user`'s media tweets, newest first, older than `before` if given, handing each
/// row (`tweet_id`, `json`) to `each` until it returns `false` or the timeline ends.
fn page_rows(
    conn: &Connection,
    user: UserId,
    before: Option<TweetId>,
    mut each: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<bool>,
) -> rusqlite::Result<()> {
    let user = to_column(user.get());
    let mut statement;
    let mut rows = match before {
        None => {
            statement = conn.prepare_cached(PAGE_SQL)?;
            statement.query(params![user])?
        }
        Some(before) => {
            statement = conn.prepare_cached(PAGE_AFTER_SQL)?;
            statement.query(params![user, to_column(before.get())])?
        }
    };
    while let Some(row) = rows.next()? {
        if !each(row)? {
            break;
        }
    }
    Ok(())
}

/// A page's row as a tweet: its id (column 0) and its text (column 1, see [`Tweets`]).
fn stored_tweet(row: &rusqlite::Row<'_>, tweets: &mut Tweets<'_>) -> rusqlite::Result<StoredTweet> {
    let mut json = Vec::new();
    tweets.write(row, 1, &mut json)?;
    Ok(StoredTweet {
        tweet_id: TweetId(from_column(row.get(0)?)),
        json: String::from_utf8(json).map_err(|e| damaged(1, e))?,
    })
}

/// A tweet as its row's `json` holds it since migration 6: the author's row in `authors` and the
/// byte offset where the author's text goes back in, as two varints (postcard), then the tweet's
/// text without the author object; a BLOB. A row written before holds the whole tweet as TEXT.
fn put_apart(author_id: i64, text: &str, author: std::ops::Range<usize>, out: &mut Vec<u8>) {
    let mut header = [0u8; 20];
    let header = postcard::to_slice(&(author_id, author.start as u64), &mut header)
        .expect("two varints fit in 20 bytes");
    out.clear();
    out.extend_from_slice(header);
    out.extend_from_slice(&text.as_bytes()[..author.start]);
    out.extend_from_slice(&text.as_bytes()[author.end..]);
}

/// Puts stored tweets back together, to the byte: a row's `json` as it is when it holds the whole
/// tweet (TEXT), or with its author's text put back in ([`put_apart`]). The author is read once
/// for each run of rows that share it (a user's page is usually one author's).
pub(crate) struct Tweets<'c> {
    conn: &'c Connection,
    /// Whose text `author` holds.
    author_id: Option<i64>,
    author: Vec<u8>,
}

impl<'c> Tweets<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Tweets {
            conn,
            author_id: None,
            author: Vec::new(),
        }
    }

    /// Appends the tweet whose `json` is `row`'s column `column` to `out`. Stored text was checked
    /// at ingest: its bytes are copied, with no UTF-8 pass again. A row that does not hold
    /// together (a header that does not read, an offset past its text, an author that is not
    /// there) is an error, never a panic.
    pub(crate) fn write(
        &mut self,
        row: &rusqlite::Row<'_>,
        column: usize,
        out: &mut Vec<u8>,
    ) -> rusqlite::Result<()> {
        let parts = match row.get_ref(column)? {
            ValueRef::Text(whole) => {
                out.extend_from_slice(whole);
                return Ok(());
            }
            ValueRef::Blob(parts) => parts,
            other => {
                return Err(damaged(
                    column,
                    format!("a tweet stored as {}", other.data_type()),
                ));
            }
        };
        let ((author_id, at), rest) = postcard::take_from_bytes::<(i64, u64)>(parts)
            .map_err(|e| damaged(column, format!("a stored tweet's header: {e}")))?;
        let (head, tail) = usize::try_from(at)
            .ok()
            .and_then(|at| rest.split_at_checked(at))
            .ok_or_else(|| {
                damaged(
                    column,
                    format!(
                        "the author's place {at} is past the row's {} bytes",
                        rest.len()
                    ),
                )
            })?;
        if self.author_id != Some(author_id) {
            self.author_id = None;
            let author = &mut self.author;
            let found = self
                .conn
                .prepare_cached(AUTHOR_SQL)?
                .query_row([author_id], |row| {
                    author.clear();
                    author.extend_from_slice(row.get_ref(0)?.as_bytes()?);
                    Ok(())
                })
                .optional()?;
            if found.is_none() {
                return Err(damaged(
                    column,
                    format!("the row's author {author_id} is not in the store"),
                ));
            }
            self.author_id = Some(author_id);
        }
        out.reserve(rest.len() + self.author.len());
        out.extend_from_slice(head);
        out.extend_from_slice(&self.author);
        out.extend_from_slice(tail);
        Ok(())
    }
}

/// A stored value that cannot be what the schema says it is.
fn damaged(
    column: usize,
    why: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, why.into())
}

fn upsert(conn: &mut Connection, tweets: &mut [TweetRecord]) -> rusqlite::Result<UpsertSummary> {
    // Grouped by user, a user's tweets land next to each other in the table (a page then reads a
    // few adjacent table pages), and both indexes take runs of neighbouring keys. Newest first,
    // as pages read them: the rows a page reads then have consecutive rowids in reading order,
    // and SQLite moves its table cursor from one to the next with one step instead of a seek
    // from the root. Stable, so of two versions of one tweet in a batch the later still wins.
    tweets.sort_by_key(|t| (t.user_id, std::cmp::Reverse(t.tweet_id)));
    // The write lock from the start (waiting for it as long as the busy timeout allows): the
    // batch reads `authors` before it writes, and a read transaction cannot become a write one
    // once another connection has committed.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut summary = UpsertSummary::default();
    {
        let mut put_tweet = tx.prepare_cached(
            "INSERT INTO tweets (tweet_id, user_id, has_media, json) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tweet_id) DO UPDATE SET
                 user_id = excluded.user_id,
                 has_media = excluded.has_media,
                 json = excluded.json
             WHERE tweets.json IS NOT excluded.json",
        )?;
        let mut authors = Authors::new(&tx)?;
        // Each tweet as its row holds it, one buffer for all.
        let mut stored = Vec::new();
        // The last tweet's author object and its row: sorted by user, a batch holds runs of
        // tweets with the same author object, and each run asks the table once.
        let mut last: Option<(&str, i64)> = None;
        // Only the newest profile of each author in the batch can matter.
        let mut profiles: HashMap<UserId, &TweetRecord> = HashMap::new();
        for t in tweets.iter() {
            let author = t.user_json();
            let author_id = match last {
                Some((text, id)) if text == author => id,
                _ => authors.id(author)?,
            };
            last = Some((author, author_id));
            put_apart(author_id, &t.json, t.user_span.clone(), &mut stored);
            let changed = put_tweet.execute(params![
                to_column(t.tweet_id.get()),
                to_column(t.user_id.get()),
                t.has_media,
                stored,
            ])?;
            if changed == 0 {
                summary.unchanged += 1;
            } else {
                summary.written += 1;
            }
            let newest = profiles.entry(t.user_id).or_insert(t);
            if t.tweet_id > newest.tweet_id {
                *newest = t;
            }
        }
        let mut put_user = tx.prepare_cached(
            "INSERT INTO users (user_id, username, json, profile_tweet_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_id) DO UPDATE SET
                 username = excluded.username,
                 json = excluded.json,
                 profile_tweet_id = excluded.profile_tweet_id
             WHERE excluded.profile_tweet_id >= users.profile_tweet_id
               AND users.json IS NOT excluded.json",
        )?;
        for t in profiles.values() {
            put_user.execute(params![
                to_column(t.user_id.get()),
                t.username,
                t.user_json(),
                to_column(t.tweet_id.get()),
            ])?;
        }
    }
    tx.commit()?;
    Ok(summary)
}

/// The `authors` table as a load writes it: each distinct author object once, found again by its
/// digest.
struct Authors<'t> {
    find: rusqlite::CachedStatement<'t>,
    add: rusqlite::CachedStatement<'t>,
}

impl<'t> Authors<'t> {
    fn new(tx: &'t Connection) -> rusqlite::Result<Self> {
        Ok(Authors {
            find: tx.prepare_cached("SELECT id, json FROM authors WHERE digest = ?1")?,
            add: tx.prepare_cached("INSERT INTO authors (digest, json) VALUES (?1, ?2)")?,
        })
    }

    /// The row holding the author object `json`, added if there is none.
    fn id(&mut self, json: &str) -> rusqlite::Result<i64> {
        let digest = author_digest(json);
        let mut rows = self.find.query([digest])?;
        let mut found = None;
        while let Some(row) = rows.next()? {
            if row.get_ref(1)?.as_bytes()? == json.as_bytes() {
                found = Some(row.get(0)?);
                break;
            }
        }
        drop(rows);
        match found {
            Some(id) => Ok(id),
            None => self.add.insert(params![digest, json]),
        }
    }
}

/// The `digest` column of an author object: the first 8 bytes of its SHA-256. Texts that share a
/// digest are told apart by their bytes; a cryptographic hash keeps a crafted input from putting
/// many authors under one digest.
fn author_digest(json: &str) -> i64 {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(json.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    i64::from_le_bytes(first)
}

#[async_trait]
impl Store for SqliteStore {
    async fn media_page(
        &self,
        user: UserId,
        before: Option<TweetId>,
        limit: usize,
    ) -> StoreResult<Vec<StoredTweet>> {
        self.read(|conn| {
            let mut page = Vec::new();
            let mut tweets = Tweets::new(conn);
            page_rows(conn, user, before, |row| {
                if page.len() == limit {
                    return Ok(false);
                }
                page.push(stored_tweet(row, &mut tweets)?);
                Ok(true)
            })?;
            Ok(page)
        })
    }

    async fn media_page_into(
        &self,
        user: UserId,
        before: Option<TweetId>,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> StoreResult<PageInfo> {
        self.read(|conn| {
            // One row of look-ahead tells whether another page exists; its JSON is not read.
            let mut info = PageInfo::default();
            let mut tweets = Tweets::new(conn);
            page_rows(conn, user, before, |row| {
                if info.count == limit {
                    info.more = true;
                    return Ok(false);
                }
                if info.count > 0 {
                    out.push(b',');
                }
                tweets.write(row, 1, out)?;
                info.last = Some(TweetId(from_column(row.get(0)?)));
                info.count += 1;
                Ok(true)
            })?;
            Ok(info)
        })
    }

    async fn media_ids(
        &self,
        user: UserId,
        before: Option<TweetId>,
        limit: usize,
    ) -> StoreResult<Vec<TweetId>> {
        let user = to_column(user.get());
        self.read(|conn| {
            let mut statement;
            let mut rows = match before {
                None => {
                    statement = conn.prepare_cached(IDS_SQL)?;
                    statement.query(params![user])?
                }
                Some(before) => {
                    statement = conn.prepare_cached(IDS_AFTER_SQL)?;
                    statement.query(params![user, to_column(before.get())])?
                }
            };
            let mut ids = Vec::new();
            while ids.len() < limit
                && let Some(row) = rows.next()?
            {
                ids.push(TweetId(from_column(row.get(0)?)));
            }
            Ok(ids)
        })
    }

    async fn sync_state(&self, user: UserId) -> StoreResult<Option<Vec<u8>>> {
        self.read(|conn| {
            conn.prepare_cached("SELECT state FROM upstream_sync WHERE user_id = ?1")?
                .query_row([to_column(user.get())], |row| row.get(0))
                .optional()
        })
    }

    async fn put_sync_state(&self, user: UserId, state: Vec<u8>) -> StoreResult<()> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO upstream_sync (user_id, state) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET state = excluded.state",
            )?
            .execute(params![to_column(user.get()), state])
            .map(|_| ())
        })
        .await
    }

    async fn user_exists(&self, user: UserId) -> StoreResult<bool> {
        self.read(|conn| {
            conn.prepare_cached("SELECT 1 FROM users WHERE user_id = ?1")?
                .query_row([to_column(user.get())], |_| Ok(()))
                .optional()
                .map(|found| found.is_some())
        })
    }

    async fn upsert_tweets(&self, tweets: Vec<TweetRecord>) -> StoreResult<UpsertSummary> {
        let mut tweets = tweets;
        let out = self.write(move |conn| upsert(conn, &mut tweets)).await;
        self.changes.bump();
        if let Some(new) = lock(&self.new_file).as_ref() {
            new.recycler.nudge();
        }
        out
    }

    async fn setting_or_insert(&self, key: &str, value: Vec<u8>) -> StoreResult<Vec<u8>> {
        let key = key.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![key, value],
            )?;
            let stored =
                tx.query_row("SELECT value FROM settings WHERE key = ?1", [&key], |row| {
                    row.get(0)
                })?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn users(&self, limit: usize) -> StoreResult<Vec<UserSummary>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT u.user_id, u.username,
                        (SELECT count(*) FROM tweets t
                          WHERE t.user_id = u.user_id AND t.has_media = 1)
                   FROM users u ORDER BY u.user_id LIMIT ?1",
            )?
            .query_map([limit], |row| {
                Ok(UserSummary {
                    user_id: UserId(from_column(row.get(0)?)),
                    username: row.get(1)?,
                    media_tweets: row.get(2)?,
                })
            })?
            .collect()
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
    }

    fn pages_version(&self) -> Option<u64> {
        self.changes.version(&self.writer)
    }

    async fn finish_load(&self) -> StoreResult<()> {
        let Some(new) = lock(&self.new_file).take() else {
            return Ok(());
        };
        lock(&self.readers).clear();
        let writer = Arc::clone(&self.writer);
        let out = tokio::task::spawn_blocking(move || new.finish(&writer))
            .await
            .map_err(|e| StoreError::Backend(format!("finishing the load failed: {e}")))?;
        self.changes.bump();
        out
    }
}

impl NewFile {
    /// Closes the file, syncs it, and moves it to the store's path, which must still be free.
    fn finish(self, writer: &Mutex<Connection>) -> StoreResult<()> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Backend(format!("{what} {}: {e}", self.partial.display()))
        };
        // The store is done with: its writer is closed (a journal mode of OFF is not kept in the
        // file; the next open switches it to WAL) and replaced by one that holds nothing.
        let closed = Connection::open_in_memory().map_err(store_error)?;
        let conn = std::mem::replace(&mut *lock(writer), closed);
        conn.close().map_err(|(_, e)| fail("closing", &e))?;
        self.lock.sync_all().map_err(|e| fail("syncing", &e))?;
        // On disk now, the tweets' pages need not stay in memory.
        self.recycler.finish();
        // A link, unlike a rename, never replaces a store that appeared at the path meanwhile.
        match std::fs::hard_link(&self.partial, &self.target) {
            Ok(()) => {
                std::fs::remove_file(&self.partial).map_err(|e| fail("removing", &e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Backend(format!(
                    "{} was created while the load ran; the loaded store is kept as {}",
                    self.target.display(),
                    self.partial.display()
                )));
            }
            // A file system without hard links: a rename, after a last look at the path.
            Err(_) if !self.target.exists() => {
                std::fs::rename(&self.partial, &self.target).map_err(|e| fail("moving", &e))?;
            }
            Err(e) => return Err(fail("moving", &e)),
        }
        let dir = match self.target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| fail("syncing the directory of", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pages_version_moves_with_tweets_and_not_with_charges() {
        use xgate_store::accounts::AccountStore;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("version.db");
        let store = SqliteStore::open(&path).unwrap();
        let start = store
            .pages_version()
            .expect("an SQLite store tells its version");
        store
            .upsert_tweets(vec![xgate_model::sample::record(1, 11, true)])
            .await
            .unwrap();
        let stored = store.pages_version().unwrap();
        assert!(stored > start, "a write through the store moves it at once");
        // The ledger is another file: credits and charges leave pages as they were.
        let account = store.ensure_account("reader", 0).await.unwrap();
        store.add_credits(account.id, 10, "test", 0).await.unwrap();
        tokio::time::sleep(changes::POLL * 4).await;
        assert_eq!(store.pages_version(), Some(stored));
        // Another connection's write (another process, to SQLite) is seen by the watcher.
        let other = SqliteStore::open(&path).unwrap();
        other
            .upsert_tweets(vec![xgate_model::sample::record(2, 11, true)])
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.pages_version() == Some(stored) {
            assert!(
                std::time::Instant::now() < deadline,
                "another connection's write went unseen"
            );
            tokio::time::sleep(changes::POLL / 5).await;
        }
    }

    #[test]
    fn a_page_at_any_depth_is_one_index_seek() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("plan.db")).unwrap();
        let plan = store
            .read(|conn| {
                let sql = format!("EXPLAIN QUERY PLAN {PAGE_AFTER_SQL}");
                conn.prepare(&sql)?
                    .query_map(params![1, 2], |row| row.get::<_, String>(3))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH tweets USING INDEX tweets_media_timeline (user_id=? AND tweet_id<?)"],
            "the page query must seek the media index, not scan or sort"
        );
    }

    #[test]
    fn the_page_query_is_prepared_once_whatever_it_is_bound_to() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("prepare.db")).unwrap();
        let reprepared = store
            .read(|conn| {
                let mut statement = conn.prepare(PAGE_AFTER_SQL)?;
                for user in 1..=5 {
                    statement.query(params![user, 1000])?.next()?;
                }
                Ok(statement.get_status(rusqlite::StatementStatus::RePrepare))
            })
            .unwrap();
        assert_eq!(reprepared, 0, "each new binding re-prepared the page query");
    }

    #[test]
    fn a_page_reads_rows_in_the_order_they_were_stored() {
        // Rowids follow a page's reading order (newest first), so SQLite steps from one row to
        // the next instead of seeking each from the root of the table.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("order.db")).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut batch: Vec<TweetRecord> = [9, 2, 7, 4, 1, 8]
            .into_iter()
            .map(|i| xgate_model::sample::record(i, 11, true))
            .collect();
        batch.extend((1..=3).map(|i| xgate_model::sample::record(100 + i, 12, true)));
        rt.block_on(store.upsert_tweets(batch)).unwrap();
        let rowids: Vec<i64> = store
            .read(|conn| {
                conn.prepare("SELECT id FROM tweets WHERE user_id = ?1 ORDER BY tweet_id DESC")?
                    .query_map([to_column(11)], |row| row.get(0))?
                    .collect()
            })
            .unwrap();
        assert_eq!(rowids.len(), 6);
        assert!(
            rowids.windows(2).all(|w| w[1] == w[0] + 1),
            "newest first, the rows are consecutive and ascending: {rowids:?}"
        );
    }

    /// A tweet of `user` whose author object has `followers` (its profile at some moment), with
    /// `pad` bytes of an unknown field ahead of everything, which moves the author in the text.
    fn tweet_as_seen(tweet_id: u64, user: u64, followers: i64, pad: usize) -> TweetRecord {
        let mut tweet = xgate_model::sample::tweet(tweet_id, user, true);
        tweet.user.follower_count = Some(followers);
        let json = serde_json::to_string(&tweet).unwrap();
        let json = json.replacen('{', &format!("{{\"x_pad\":\"{}\",", "é".repeat(pad)), 1);
        TweetRecord::from_json(&json).unwrap()
    }

    /// Every media tweet of `user` as `media_page` and `media_page_into` serve them, newest first.
    fn served(store: &SqliteStore, rt: &tokio::runtime::Runtime, user: u64) -> Vec<String> {
        let page = rt
            .block_on(store.media_page(UserId(user), None, 1000))
            .unwrap();
        let mut out = b"[".to_vec();
        rt.block_on(store.media_page_into(UserId(user), None, 1000, &mut out))
            .unwrap();
        out.push(b']');
        let texts: Vec<String> = page.into_iter().map(|t| t.json).collect();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("[{}]", texts.join(","))
        );
        texts
    }

    fn count(store: &SqliteStore, table: &str) -> i64 {
        store
            .read(|c| c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)))
            .unwrap()
    }

    #[test]
    fn each_author_object_is_stored_once_and_every_tweet_served_as_it_came() {
        let (_dir, path, rt) = scratch("authors.db");
        let store = SqliteStore::open(&path).unwrap();
        // Two profiles of user 11, alternating from one tweet to the next, and user 12's one.
        let mut batch: Vec<TweetRecord> = (1..=8)
            .map(|i| tweet_as_seen(i, 11, 100 + (i % 2) as i64, i as usize))
            .collect();
        batch.push(tweet_as_seen(50, 12, 7, 0));
        rt.block_on(store.upsert_tweets(batch.clone())).unwrap();
        assert_eq!(count(&store, "authors"), 3);
        let newest_first: Vec<String> = batch[..8].iter().rev().map(|t| t.json.clone()).collect();
        assert_eq!(served(&store, &rt, 11), newest_first);
        assert_eq!(served(&store, &rt, 12), [batch[8].json.clone()]);

        // Loaded again, in another batch: nothing changes, no author is added.
        let again = rt.block_on(store.upsert_tweets(batch.clone())).unwrap();
        assert_eq!((again.written, again.unchanged), (0, 9));
        assert_eq!(count(&store, "authors"), 3);
        // A third profile for one tweet: that tweet alone changes.
        let changed = tweet_as_seen(3, 11, 999, 3);
        let summary = rt
            .block_on(store.upsert_tweets(vec![changed.clone()]))
            .unwrap();
        assert_eq!((summary.written, summary.unchanged), (1, 0));
        assert_eq!(count(&store, "authors"), 4);
        let mut expected = newest_first;
        expected[5] = changed.json;
        assert_eq!(served(&store, &rt, 11), expected);
    }

    #[test]
    fn two_loads_at_once_share_authors_and_both_finish() {
        // Each load's transaction looks its authors up before it writes: it must hold the write
        // lock from its start, or a commit of the other between the two fails it (SQLite cannot
        // move a read transaction's snapshot forward into a write).
        let (_dir, path, rt) = scratch("two.db");
        let first = Arc::new(SqliteStore::open(&path).unwrap());
        let second = Arc::new(SqliteStore::open(&path).unwrap());
        let loads = [first, second].map(|store| {
            rt.spawn(async move {
                for round in 0..30u64 {
                    let batch: Vec<TweetRecord> = (0..20)
                        .map(|i| tweet_as_seen(round * 100 + i, 1 + i % 3, (round % 4) as i64, 0))
                        .collect();
                    store.upsert_tweets(batch).await?;
                }
                Ok::<_, StoreError>(())
            })
        });
        for load in loads {
            rt.block_on(load).unwrap().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        // Of each round's 20 tweets, 7 are user 1's, 7 user 2's and 6 user 3's.
        for (user, tweets) in [(1, 210), (2, 210), (3, 180)] {
            assert_eq!(served(&store, &rt, user).len(), tweets, "user {user}");
        }
    }

    #[test]
    fn rows_stored_whole_before_authors_were_kept_apart_are_served_and_rewritten() {
        let (_dir, path, rt) = scratch("whole.db");
        let store = SqliteStore::open(&path).unwrap();
        let old = tweet_as_seen(5, 11, 1, 2);
        // A row as schema versions before 6 wrote it: the whole tweet, no author row.
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO tweets (tweet_id, user_id, has_media, json) VALUES (?1, ?2, 1, ?3)",
                params![to_column(5), to_column(11), old.json],
            )
            .unwrap();
        rt.block_on(store.upsert_tweets(vec![tweet_as_seen(6, 11, 1, 0)]))
            .unwrap();
        let newer = tweet_as_seen(6, 11, 1, 0).json;
        assert_eq!(served(&store, &rt, 11), [newer.clone(), old.json.clone()]);
        // Loaded again, the old row takes the new layout; what is served stays the same.
        let summary = rt.block_on(store.upsert_tweets(vec![old.clone()])).unwrap();
        assert_eq!(summary.written, 1);
        assert_eq!(count(&store, "authors"), 1);
        let whole: i64 = store
            .read(|c| {
                c.query_row(
                    "SELECT count(*) FROM tweets WHERE typeof(json) = 'text'",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert_eq!(whole, 0);
        assert_eq!(served(&store, &rt, 11), [newer, old.json]);
    }

    #[test]
    fn a_row_that_does_not_hold_together_is_an_error_not_a_panic() {
        let apart = |author_id: i64, text: &str, author: std::ops::Range<usize>| {
            let mut out = Vec::new();
            put_apart(author_id, text, author, &mut out);
            rusqlite::types::Value::Blob(out)
        };
        for (damage, json) in [
            (
                "a header that does not read",
                rusqlite::types::Value::Blob(vec![0xff; 3]),
            ),
            ("an author past the text", {
                let mut row = postcard::to_allocvec(&(1i64, 50u64)).unwrap();
                row.extend_from_slice(b"{}");
                rusqlite::types::Value::Blob(row)
            }),
            (
                "an author that is not there",
                apart(424_242, "{\"user\":{}}", 8..10),
            ),
        ] {
            let (_dir, path, rt) = scratch("damaged.db");
            let store = SqliteStore::open(&path).unwrap();
            rt.block_on(store.upsert_tweets(tweets_of(11, 1..=3)))
                .unwrap();
            Connection::open(&path)
                .unwrap()
                .execute(
                    "UPDATE tweets SET json = ?1 WHERE tweet_id = ?2",
                    params![json, to_column(2)],
                )
                .unwrap();
            let error = rt
                .block_on(store.media_page(UserId(11), None, 10))
                .unwrap_err();
            assert!(
                error.to_string().contains("tweet") || error.to_string().contains("author"),
                "{damage}: {error}"
            );
            let mut out = Vec::new();
            assert!(
                rt.block_on(store.media_page_into(UserId(11), None, 10, &mut out))
                    .is_err(),
                "{damage}"
            );
            // The rows around it are still served.
            let before = rt
                .block_on(store.media_page(UserId(11), Some(TweetId(2)), 10))
                .unwrap();
            assert_eq!(before.len(), 1, "{damage}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn whatever_the_authors_every_tweet_is_served_as_last_stored(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u64..40, 0i64..3, 0usize..5), 1..30),
                1..4,
            ),
        ) {
            let (_dir, path, rt) = scratch("property.db");
            let store = SqliteStore::open(&path).unwrap();
            let mut last: std::collections::BTreeMap<u64, (u64, String)> = Default::default();
            for batch in &batches {
                let records: Vec<TweetRecord> = batch
                    .iter()
                    .map(|&(id, followers, pad)| tweet_as_seen(id, 1 + id % 3, followers, pad))
                    .collect();
                for r in &records {
                    last.insert(r.tweet_id.get(), (r.user_id.get(), r.json.clone()));
                }
                rt.block_on(store.upsert_tweets(records)).unwrap();
            }
            for user in 1..4 {
                let expected: Vec<String> = last
                    .iter()
                    .rev()
                    .filter(|(_, (u, _))| *u == user)
                    .map(|(_, (_, json))| json.clone())
                    .collect();
                proptest::prop_assert_eq!(served(&store, &rt, user), expected);
            }
            // One row for each distinct author object, however often it came.
            let distinct: std::collections::HashSet<(u64, i64)> = batches
                .iter()
                .flatten()
                .map(|&(id, followers, _)| (1 + id % 3, followers))
                .collect();
            proptest::prop_assert_eq!(count(&store, "authors") as usize, distinct.len());
        }
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reopen.db");
        let rt = tokio::runtime::Runtime::new().unwrap();
        {
            let store = SqliteStore::open(&path).unwrap();
            let rec = xgate_model::sample::record(1, 2, true);
            rt.block_on(store.upsert_tweets(vec![rec])).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert!(rt.block_on(store.user_exists(UserId(2))).unwrap());
        let version: usize = store
            .read(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_bulk_load_leaves_the_store_in_wal_mode_and_its_data_visible() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bulk.db");
        drop(SqliteStore::open(&path).unwrap());
        let rt = tokio::runtime::Runtime::new().unwrap();
        {
            let bulk = SqliteStore::open_for_bulk_load(&path).unwrap();
            assert!(bulk.restore_wal, "nobody else has the store open");
            let batch = (1..=50)
                .map(|i| xgate_model::sample::record(i, 3, true))
                .collect();
            rt.block_on(bulk.upsert_tweets(batch)).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let mode: String = store
            .read(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(mode, "wal");
        let page = rt.block_on(store.media_page(UserId(3), None, 100)).unwrap();
        assert_eq!(page.len(), 50);
        // With the store open elsewhere, a bulk load keeps WAL so readers are never blocked.
        let beside = SqliteStore::open_for_bulk_load(&path).unwrap();
        assert!(!beside.restore_wal);
    }

    #[test]
    fn charges_leave_the_tweets_file_and_its_readers_caches_alone() {
        use xgate_store::accounts::{AccountStore, NewKey, RequestId, RequestRecord};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("apart.db")).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let account = rt.block_on(store.ensure_account("a", 0)).unwrap();
        rt.block_on(store.add_credits(account.id, 10, "test", 0))
            .unwrap();
        let key = rt
            .block_on(store.insert_key(
                account.id,
                NewKey {
                    hash: [7; 32],
                    prefix: "xg_live_7".into(),
                    label: None,
                },
                0,
            ))
            .unwrap();
        // `data_version` of a file changes, for a connection, when another connection committed
        // to that file; SQLite drops the connection's page cache of that file then.
        let reader = store.open_reader().unwrap();
        let version = |schema: &str| -> i64 {
            reader
                .pragma_query_value(Some(schema), "data_version", |r| r.get(0))
                .unwrap()
        };
        let (tweets, ledger) = (version(MAIN), version(LEDGER));
        let charge = RequestRecord {
            request_id: RequestId::Given("r-1".into()),
            account: account.id,
            key: key.id,
            at_ms: 1,
            endpoint: "POST /user/medias/continuation".into(),
            status: 200,
            cost: 1,
            latency_us: 5,
            idempotency: None,
        };
        rt.block_on(store.record(vec![charge], "2026-11")).unwrap();
        assert_ne!(version(LEDGER), ledger, "the charge is in the ledger file");
        assert_eq!(version(MAIN), tweets, "a charge changed the tweets file");
        rt.block_on(store.upsert_tweets(vec![xgate_model::sample::record(1, 2, true)]))
            .unwrap();
        assert_ne!(version(MAIN), tweets, "a tweet is in the tweets file");
    }

    /// A directory for a test's store (kept while the first value lives), the store's path in
    /// it, and a runtime to drive the store's async calls.
    fn scratch(name: &str) -> (tempfile::TempDir, PathBuf, tokio::runtime::Runtime) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        (dir, path, tokio::runtime::Runtime::new().unwrap())
    }

    fn tweets_of(user: u64, ids: std::ops::RangeInclusive<u64>) -> Vec<TweetRecord> {
        ids.map(|i| xgate_model::sample::record(i, user, true))
            .collect()
    }

    #[test]
    fn a_new_store_comes_into_place_only_when_its_load_finishes() {
        let (_dir, path, rt) = scratch("new.db");
        let partial = SqliteStore::partial_path(&path);
        {
            let load = SqliteStore::open_for_new_load(&path).unwrap();
            rt.block_on(load.upsert_tweets(tweets_of(4, 1..=30)))
                .unwrap();
            rt.block_on(load.upsert_tweets(tweets_of(4, 31..=60)))
                .unwrap();
            assert!(!path.exists(), "no store before the load finishes");
            assert!(partial.exists());
            rt.block_on(load.finish_load()).unwrap();
            assert!(path.exists());
            assert!(!partial.exists(), "the partial file is moved, not copied");
        }
        let store = SqliteStore::open(&path).unwrap();
        let page = rt.block_on(store.media_page(UserId(4), None, 100)).unwrap();
        assert_eq!(page.len(), 60);
        let (mode, check): (String, String) = store
            .read(|c| {
                Ok((
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!((mode.as_str(), check.as_str()), ("wal", "ok"));
    }

    /// The pages a load gives back to the kernel are the leaf pages of `tweets`, as SQLite's own
    /// account of the file (`dbstat`) has them, and no others; the loaded store is whole.
    #[test]
    fn a_new_store_gives_back_its_tweet_pages_and_keeps_the_rest() {
        let (_dir, path, rt) = scratch("new.db");
        let load = SqliteStore::open_for_new_load(&path).unwrap();
        // Many authors, so that `authors` spans leaf pages of its own.
        let users = 1..=400u64;
        for batch in 0..4u64 {
            let tweets = users
                .clone()
                .flat_map(|user| {
                    tweets_of(user, user * 100 + batch * 5..=user * 100 + batch * 5 + 4)
                })
                .collect();
            rt.block_on(load.upsert_tweets(tweets)).unwrap();
        }
        let leaves = |name: &str| -> Vec<u64> {
            load.read(|c| {
                c.prepare(
                    "SELECT pageno FROM dbstat('main') WHERE name = ?1 AND pagetype = 'leaf'
                     ORDER BY pageno",
                )?
                .query_map([name], |r| r.get(0))?
                .collect()
            })
            .unwrap()
        };
        let (tweets, authors, timeline) = (
            leaves("tweets"),
            leaves("authors"),
            leaves("tweets_media_timeline"),
        );
        assert!(tweets.len() > 100 && authors.len() > 2 && timeline.len() > 2);
        let pages: u64 = load
            .read(|c| c.query_row("PRAGMA main.page_count", [], |r| r.get(0)))
            .unwrap();
        let file = Arc::clone(&lock(&load.new_file).as_ref().unwrap().lock);
        let given: Vec<u64> = recycle::tweet_leaves(&file, PAGE_SIZE, 1..pages + 1)
            .into_iter()
            .flat_map(|range| (range.start / PAGE_SIZE + 1)..=(range.end / PAGE_SIZE))
            .collect();
        assert_eq!(given, tweets);

        rt.block_on(load.finish_load()).unwrap();
        let store = SqliteStore::open(&path).unwrap();
        for user in users {
            let page = rt
                .block_on(store.media_page(UserId(user), None, 100))
                .unwrap();
            assert_eq!(page.len(), 20, "user {user}");
        }
        let check: String = store
            .read(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn an_unfinished_load_into_a_new_store_leaves_no_store() {
        let (_dir, path, rt) = scratch("new.db");
        let load = SqliteStore::open_for_new_load(&path).unwrap();
        rt.block_on(load.upsert_tweets(tweets_of(4, 1..=30)))
            .unwrap();
        drop(load);
        assert!(!path.exists());
        assert!(!SqliteStore::partial_path(&path).exists());
        // The path is free for a store, as if the load had never run.
        let store = SqliteStore::open(&path).unwrap();
        assert!(!rt.block_on(store.user_exists(UserId(4))).unwrap());
    }

    #[test]
    fn a_load_into_a_new_store_starts_over_from_what_a_crash_left() {
        let (_dir, path, rt) = scratch("new.db");
        let partial = SqliteStore::partial_path(&path);
        std::fs::write(&partial, vec![0xA5; 100_000]).unwrap();
        let load = SqliteStore::open_for_new_load(&path).unwrap();
        rt.block_on(load.upsert_tweets(tweets_of(5, 1..=10)))
            .unwrap();
        rt.block_on(load.finish_load()).unwrap();
        drop(load);
        let store = SqliteStore::open(&path).unwrap();
        let page = rt.block_on(store.media_page(UserId(5), None, 100)).unwrap();
        assert_eq!(page.len(), 10);
    }

    #[test]
    fn two_loads_cannot_build_one_new_store() {
        let (_dir, path, rt) = scratch("new.db");
        let first = SqliteStore::open_for_new_load(&path).unwrap();
        let err = SqliteStore::open_for_new_load(&path)
            .err()
            .expect("the second load must be refused");
        assert!(err.to_string().contains("another load"), "{err}");
        rt.block_on(first.upsert_tweets(tweets_of(6, 1..=5)))
            .unwrap();
        rt.block_on(first.finish_load()).unwrap();
        drop(first);
        // Now the store exists: a load goes into it, beside nothing.
        let second = SqliteStore::open_for_new_load(&path).unwrap();
        rt.block_on(second.upsert_tweets(tweets_of(6, 6..=8)))
            .unwrap();
        assert!(!SqliteStore::partial_path(&path).exists());
        drop(second);
        let store = SqliteStore::open(&path).unwrap();
        let page = rt.block_on(store.media_page(UserId(6), None, 100)).unwrap();
        assert_eq!(
            page.len(),
            8,
            "a load into an existing store is stored as it goes"
        );
    }

    #[test]
    fn a_finished_load_never_replaces_a_store_that_appeared_meanwhile() {
        let (_dir, path, rt) = scratch("new.db");
        let load = SqliteStore::open_for_new_load(&path).unwrap();
        rt.block_on(load.upsert_tweets(tweets_of(7, 1..=5)))
            .unwrap();
        let err = SqliteStore::open(&path).err().expect("refused while built");
        assert!(err.to_string().contains("a load is building"), "{err}");
        assert!(!path.exists());
        // Made some other way (or raced past that check): the load's file does not replace it.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE mine (x)").unwrap();
        }
        let err = rt.block_on(load.finish_load()).unwrap_err();
        assert!(err.to_string().contains("was created while"), "{err}");
        drop(load);
        let conn = Connection::open(&path).unwrap();
        let mine: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'mine'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(mine, 1, "the file made meanwhile is untouched");
        assert!(
            SqliteStore::partial_path(&path).exists(),
            "the loaded file is kept for its owner to move"
        );
    }

    #[test]
    fn a_store_without_its_ledger_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alone.db");
        drop(SqliteStore::open(&path).unwrap());
        std::fs::remove_file(SqliteStore::ledger_path(&path)).unwrap();
        let err = SqliteStore::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("ledger file"), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = SqliteStore::open(&path).err().expect("must refuse");
        assert!(
            err.to_string().contains("newer than this xgate knows"),
            "{err}"
        );
    }
}

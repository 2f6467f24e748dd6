//! The ledger's write-ahead log, synced and checkpointed on a thread of its own.
//!
//! With `synchronous=FULL`, SQLite syncs the log inside every commit, so whichever thread commits
//! waits for the disk. The writer connection's ledger runs with `synchronous=NORMAL` instead, and
//! after each commit this thread `fdatasync`s the log: the commit is durable, as with `FULL`, once
//! a sync that began after it has returned. A commit of charges, which is a little CPU work and a
//! few page writes without the sync, can then run on the caller's own thread (see
//! `SqliteStore::write_here`) rather than be handed to a blocking thread and back.
//!
//! A caller either waits for that sync ([`WalSync::synced`]: every write of the store, and a
//! commit of charges under [`LedgerSync::BeforeResponse`]) or only starts it
//! ([`WalSync::sync_started`]: a commit of charges under [`LedgerSync::Background`], whose
//! responses then leave as the sync runs).
//!
//! Checkpoints of the ledger move here too, on a connection of this thread's own: the writer's
//! automatic ones would sync the log and the database file inside a commit. The tweets' file
//! keeps SQLite's automatic checkpoints.

use std::fs::File;
use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::hooks::Wal;
use tokio::sync::watch;
use xgate_store::{StoreError, StoreResult};

use crate::{LEDGER, LedgerSync, MAIN};

/// Commits between two checkpoints of the ledger: a commit of charges writes about four pages of
/// log, so this checkpoints about as often as SQLite's default of 1,000 pages would.
const CHECKPOINT_EVERY: u64 = 256;
/// Pages of the tweets file's log that start a checkpoint: SQLite's default.
const TWEETS_CHECKPOINT_PAGES: c_int = 1000;

/// Syncs one write-ahead log on request.
pub(crate) struct WalSync {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// How far the log is known to be on disk.
    synced: watch::Sender<Synced>,
    /// Held by a test to keep the sync thread from syncing.
    #[cfg(test)]
    hold: Mutex<()>,
}

#[derive(Default)]
struct State {
    /// Commits made so far (each one's number is the count after it).
    commits: u64,
    /// The newest commit a sync has been asked for.
    requested: u64,
    /// A commit the ledger is checkpointed after, once it is synced (0: none is due).
    checkpoint: u64,
    stop: bool,
}

#[derive(Clone, Default)]
struct Synced {
    /// Every commit up to this number is on disk.
    upto: u64,
    /// A sync failed: what the log holds since is unknown, and stays so for this process.
    failed: Option<Arc<str>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WalSync {
    /// Takes over syncing and checkpointing the log of the ledger at `ledger`, attached to
    /// `writer` as [`LEDGER`].
    pub(crate) fn start(writer: &Connection, ledger: PathBuf) -> std::io::Result<WalSync> {
        let checkpointer = Connection::open(&ledger).map_err(std::io::Error::other)?;
        writer
            .pragma_update(Some(LEDGER), "synchronous", "NORMAL")
            .map_err(std::io::Error::other)?;
        writer.wal_hook(Some(checkpoint_tweets_only));
        let mut wal = ledger.into_os_string();
        wal.push("-wal");
        Self::spawn(PathBuf::from(wal), checkpointer)
    }

    /// Starts the thread that syncs `wal` (opened at the first sync: SQLite creates it with the
    /// first write) and checkpoints it through `checkpointer`.
    fn spawn(wal: PathBuf, checkpointer: Connection) -> std::io::Result<WalSync> {
        let (synced, _) = watch::channel(Synced::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            synced,
            #[cfg(test)]
            hold: Mutex::new(()),
        });
        let thread = std::thread::Builder::new()
            .name("xgate-ledger-sync".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run(&shared, &wal, &checkpointer);
                    }));
                    if ran.is_err() {
                        // Nothing would answer the commits waiting: they fail instead.
                        shared.synced.send_modify(|s| {
                            s.failed = Some("the ledger's sync thread panicked".into());
                        });
                    }
                }
            })?;
        Ok(WalSync {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits until everything committed to the ledger so far is on disk. Call it after a commit.
    pub(crate) async fn synced(&self) -> StoreResult<()> {
        let (commit, _) = self.request();
        self.wait(commit).await
    }

    /// Starts the sync of everything committed to the ledger so far and returns, unless a sync
    /// has failed (an error then, as from [`WalSync::synced`]). Call it after a commit.
    ///
    /// Every [`CHECKPOINT_EVERY`]th commit waits for its sync all the same, and for the
    /// checkpoint that follows it: a checkpoint copies the log only up to where it stood when it
    /// began, so with commits going on meanwhile the log would never start over and would grow
    /// without end.
    pub(crate) async fn sync_started(&self) -> StoreResult<()> {
        let (commit, checkpoint) = self.request();
        if checkpoint {
            return self.wait(commit).await;
        }
        match &self.shared.synced.borrow().failed {
            Some(e) => Err(sync_failed(e)),
            None => Ok(()),
        }
    }

    /// Counts a commit and asks for a sync that covers it: its number, and whether a checkpoint
    /// follows its sync.
    fn request(&self) -> (u64, bool) {
        let (commit, checkpoint) = {
            let mut state = lock(&self.shared.state);
            state.commits += 1;
            state.requested = state.commits;
            let checkpoint = state.commits.is_multiple_of(CHECKPOINT_EVERY);
            if checkpoint {
                state.checkpoint = state.commits;
            }
            (state.commits, checkpoint)
        };
        self.shared.wake.notify_one();
        (commit, checkpoint)
    }

    /// Waits until `commit` is on disk.
    async fn wait(&self, commit: u64) -> StoreResult<()> {
        let mut synced = self.shared.synced.subscribe();
        let state = synced
            .wait_for(|s| s.upto >= commit || s.failed.is_some())
            .await
            .map_err(|_| StoreError::Unavailable("the ledger's sync thread stopped".into()))?;
        match &state.failed {
            Some(e) => Err(sync_failed(e)),
            None => Ok(()),
        }
    }
}

fn sync_failed(error: &str) -> StoreError {
    StoreError::Backend(format!("syncing the ledger's log failed: {error}"))
}

impl LedgerSync {
    /// Ends a commit of charges on `sync` as this mode says.
    pub(crate) async fn after_commit(self, sync: &WalSync) -> StoreResult<()> {
        match self {
            LedgerSync::Background => sync.sync_started().await,
            LedgerSync::BeforeResponse => sync.synced().await,
        }
    }
}

impl Drop for WalSync {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer's hook after each commit in WAL mode, in place of SQLite's automatic checkpoints:
/// the tweets' file is checkpointed as SQLite would, the ledger is left to [`run`].
fn checkpoint_tweets_only(wal: &Wal, pages: c_int) -> rusqlite::Result<()> {
    if wal.name().to_bytes() == MAIN.as_bytes()
        && pages >= TWEETS_CHECKPOINT_PAGES
        && let Err(e) = wal.checkpoint()
    {
        // As SQLite's own hook: a checkpoint that cannot run now is tried after a later commit.
        tracing::debug!(error = %e, "checkpoint of the tweets' log did not run");
    }
    Ok(())
}

/// The sync thread: waits for a request, syncs, publishes how far the log is on disk; after the
/// sync of a commit that a checkpoint is due after, checkpoints the ledger first.
fn run(shared: &Shared, wal: &Path, checkpointer: &Connection) {
    let mut file: Option<File> = None;
    loop {
        let (target, checkpoint) = {
            let mut state = lock(&shared.state);
            while state.requested <= shared.synced.borrow().upto && !state.stop {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.requested <= shared.synced.borrow().upto {
                return;
            }
            let checkpoint = state.checkpoint != 0 && state.checkpoint <= state.requested;
            if checkpoint {
                state.checkpoint = 0;
            }
            (state.requested, checkpoint)
        };
        #[cfg(test)]
        let held = lock(&shared.hold);
        let outcome = match &file {
            Some(f) => f.sync_data(),
            None => File::options()
                .read(true)
                .write(true)
                .open(wal)
                .and_then(|f| f.sync_data().map(|()| f))
                .map(|f| file = Some(f)),
        };
        #[cfg(test)]
        drop(held);
        if outcome.is_ok() && checkpoint {
            checkpoint_ledger(checkpointer);
        }
        shared.synced.send_modify(|s| match outcome {
            Ok(()) => s.upto = s.upto.max(target),
            Err(e) => {
                tracing::error!(error = %e, log = %wal.display(), "syncing the ledger's log failed");
                s.failed = Some(e.to_string().into());
            }
        });
        if shared.synced.borrow().failed.is_some() {
            return;
        }
    }
}

/// Copies the log's pages into the ledger's file. Run before the commits just synced are
/// answered, so that the writer's next commit finds the whole log copied and starts it over
/// from its beginning, as it would after one of SQLite's own checkpoints. Passive: it copies what
/// no reader still needs, and never waits for anyone.
fn checkpoint_ledger(checkpointer: &Connection) {
    match checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    }) {
        Ok((log, copied)) => tracing::debug!(log, copied, "ledger's log checkpointed"),
        Err(e) => tracing::warn!(error = %e, "checkpoint of the ledger's log did not run"),
    }
}

#[cfg(test)]
#[allow(
    clippy::await_holding_lock,
    reason = "tests hold the sync thread's `hold` lock across their awaits, to keep syncs from running"
)]
mod tests {
    use xgate_store::accounts::{AccountStore, KeyId, RequestId, RequestRecord};

    use super::*;
    use crate::SqliteStore;

    fn charge(n: usize, account: xgate_store::accounts::AccountId) -> RequestRecord {
        RequestRecord {
            request_id: RequestId::Given(format!("charge-{n}")),
            account,
            key: KeyId(0),
            at_ms: 0,
            endpoint: "POST /user/medias".into(),
            status: 200,
            cost: 1,
            latency_us: 1,
            idempotency: None,
        }
    }

    /// A store whose commits of charges end as `mode` says.
    fn open(path: &Path, mode: LedgerSync) -> SqliteStore {
        SqliteStore::open(path).unwrap().with_ledger_sync(mode)
    }

    const MODES: [LedgerSync; 2] = [LedgerSync::Background, LedgerSync::BeforeResponse];

    #[tokio::test]
    async fn the_ledgers_log_is_checkpointed_while_charges_commit_one_by_one() {
        for mode in MODES {
            log_checkpointed_while_charges_commit(mode).await;
        }
    }

    async fn log_checkpointed_while_charges_commit(mode: LedgerSync) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.db");
        let store = open(&path, mode);
        let account = store.ensure_account("a", 0).await.unwrap();
        store
            .add_credits(account.id, 10_000, "test", 0)
            .await
            .unwrap();
        let commits = 6 * CHECKPOINT_EVERY as usize;
        for n in 0..commits {
            store
                .record(vec![charge(n, account.id)], "1970-01")
                .await
                .unwrap();
        }
        // Each commit writes a few pages of log: without checkpoints the log would hold them all
        // (about 6 × 256 × 4 pages of 4 KiB). Checkpointed every 256 commits, it starts over.
        let wal = std::fs::metadata(format!("{}-ledger-wal", path.display()))
            .unwrap()
            .len();
        let unchecked = (commits * 4 * 4096) as u64;
        assert!(
            wal < unchecked / 2,
            "{mode:?}: log of {wal} bytes after {commits} commits"
        );
        let audit = store.audit(account.id).await.unwrap();
        assert_eq!(
            (audit.paid, audit.balance),
            (commits as i64, 10_000 - commits as i64)
        );
        assert!(audit.balanced(), "{audit:?}");
    }

    #[tokio::test]
    async fn a_charge_whose_log_cannot_be_synced_is_not_reported_recorded() {
        for mode in MODES {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("lost.db");
            let store = open(&path, mode);
            let account = store.ensure_account("a", 0).await.unwrap();
            store.add_credits(account.id, 10, "test", 0).await.unwrap();
            // The sync thread has the log open now; a new one, as after a restart, finds it gone.
            drop(store);
            let store = open(&path, mode);
            std::fs::remove_file(format!("{}-ledger-wal", path.display())).unwrap();
            let first = store.record(vec![charge(1, account.id)], "1970-01").await;
            match mode {
                // Answered before its sync ran: the failure is found after.
                LedgerSync::Background => {
                    let topped_up = store.add_credits(account.id, 10, "test", 0).await;
                    assert!(topped_up.is_err(), "{topped_up:?}");
                }
                LedgerSync::BeforeResponse => assert!(first.is_err(), "{first:?}"),
            }
            // Once a sync failed, what is on disk is unknown: no later commit is reported durable.
            let second = store.record(vec![charge(2, account.id)], "1970-01").await;
            assert!(second.is_err(), "{mode:?}: {second:?}");
        }
    }

    /// A sync thread for a new database in `dir`, and a connection that keeps its log.
    fn sync_of(dir: &Path) -> (Connection, WalSync) {
        let db = dir.join("s.db");
        let conn = Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute("CREATE TABLE t (x)", []).unwrap();
        let sync = WalSync::spawn(
            PathBuf::from(format!("{}-wal", db.display())),
            Connection::open(&db).unwrap(),
        )
        .unwrap();
        (conn, sync)
    }

    /// Whether `wait` is still waiting after a moment: while the test holds the sync thread, a
    /// wait for a sync cannot end, however long it is given.
    async fn still_waiting<F: Future>(wait: std::pin::Pin<&mut F>) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(50), wait)
            .await
            .is_err()
    }

    /// `commit`'s outcome, which must come without a sync (the test holds them).
    async fn answered<T>(commit: impl Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(30), commit)
            .await
            .expect("answered without waiting for a sync")
    }

    #[tokio::test]
    async fn a_commit_in_the_background_is_answered_before_its_sync_and_synced_after() {
        let dir = tempfile::tempdir().unwrap();
        let (_conn, sync) = sync_of(dir.path());
        let held = lock(&sync.shared.hold);
        answered(sync.sync_started()).await.unwrap();
        assert_eq!(sync.shared.synced.borrow().upto, 0, "no sync has run");
        // A commit that waits for its sync waits while syncs are held.
        let mut waited = std::pin::pin!(sync.synced());
        assert!(still_waiting(waited.as_mut()).await);
        drop(held);
        waited.await.unwrap();
        assert!(sync.shared.synced.borrow().upto >= 2);
    }

    #[tokio::test]
    async fn a_charge_waits_for_its_sync_only_when_synced_before_its_response() {
        for mode in MODES {
            let dir = tempfile::tempdir().unwrap();
            let store = open(&dir.path().join("w.db"), mode);
            let account = store.ensure_account("a", 0).await.unwrap();
            store.add_credits(account.id, 10, "test", 0).await.unwrap();
            let sync = store.ledger_sync.as_ref().unwrap();
            let held = lock(&sync.shared.hold);
            let mut charged = std::pin::pin!(store.record(vec![charge(1, account.id)], "1970-01"));
            let early = match mode {
                LedgerSync::Background => Some(answered(charged.as_mut()).await),
                LedgerSync::BeforeResponse => {
                    assert!(still_waiting(charged.as_mut()).await);
                    None
                }
            };
            drop(held);
            let outcome = match early {
                Some(outcome) => outcome,
                None => charged.await,
            };
            assert!(
                matches!(outcome, Ok(ref done) if done.len() == 1),
                "{outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn every_checkpointed_commit_in_the_background_waits_for_its_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (_conn, sync) = sync_of(dir.path());
        let held = lock(&sync.shared.hold);
        for _ in 1..CHECKPOINT_EVERY {
            answered(sync.sync_started()).await.unwrap();
        }
        let mut checkpointed = std::pin::pin!(sync.sync_started());
        assert!(still_waiting(checkpointed.as_mut()).await);
        drop(held);
        checkpointed.await.unwrap();
        assert!(sync.shared.synced.borrow().upto >= CHECKPOINT_EVERY);
        // The next commit starts a new count: it is answered at once again.
        let held = lock(&sync.shared.hold);
        answered(sync.sync_started()).await.unwrap();
        drop(held);
    }

    #[tokio::test]
    async fn a_sync_covers_every_commit_made_before_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let (_conn, sync) = sync_of(dir.path());
        // Many waiters at once, all polled before any is answered: each is answered, by
        // whichever sync covers its commit, and none waits forever.
        let mut waits: Vec<_> = (0..64).map(|_| Some(Box::pin(sync.synced()))).collect();
        let all = std::future::poll_fn(|cx| {
            let mut pending = false;
            for slot in &mut waits {
                if let Some(wait) = slot {
                    match wait.as_mut().poll(cx) {
                        std::task::Poll::Ready(outcome) => {
                            outcome.unwrap();
                            *slot = None;
                        }
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(30), all)
            .await
            .expect("every waiter is answered");
        assert_eq!(lock(&sync.shared.state).commits, 64);
        assert!(sync.shared.synced.borrow().upto >= 64);
    }

    #[test]
    fn the_writers_hook_checkpoints_the_tweets_file_and_leaves_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("main.db")).unwrap();
        let ledger = dir.path().join("main.db-ledger");
        conn.execute(
            &format!("ATTACH DATABASE '{}' AS {LEDGER}", ledger.display()),
            [],
        )
        .unwrap();
        for schema in [MAIN, LEDGER] {
            // Small pages: SQLite's 1,000 pages of log are reached with a few hundred KiB.
            conn.pragma_update(Some(schema), "page_size", 512).unwrap();
            conn.pragma_update(Some(schema), "journal_mode", "WAL")
                .unwrap();
            conn.execute(&format!("CREATE TABLE {schema}.t (x BLOB)"), [])
                .unwrap();
        }
        conn.wal_hook(Some(checkpoint_tweets_only));
        let row = vec![7u8; 400];
        for _ in 0..3000 {
            for schema in [MAIN, LEDGER] {
                conn.execute(&format!("INSERT INTO {schema}.t VALUES (?1)"), [&row])
                    .unwrap();
            }
        }
        let size = |file: &str| std::fs::metadata(dir.path().join(file)).unwrap().len();
        // Each insert writes a page or two: 3,000 of them outgrow 1,000 pages several times over.
        assert!(size("main.db-wal") < 1200 * 536, "{}", size("main.db-wal"));
        assert!(
            size("main.db-ledger-wal") > 3000 * 536,
            "{}",
            size("main.db-ledger-wal")
        );
    }
}

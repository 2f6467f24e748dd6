//! The embedded store: one SQLite file in WAL mode.
//!
//! Reads run on the calling task. A page is an indexed read of at most a few dozen rows that takes
//! microseconds, and in WAL mode readers never wait for the writer, so handing it to a blocking
//! thread would cost more than the read. Each concurrent reader takes a read-only connection from
//! a small pool (it grows to the concurrency there is; the runtime's worker count bounds it).
//! Writes go through one writer connection on tokio's blocking pool, batched in transactions.

mod accounts;
mod migrations;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use xgate_model::{TweetId, TweetRecord, UserId};
use xgate_store::sortable::{from_column, to_column};
use xgate_store::{Store, StoreError, StoreResult, StoredTweet, UpsertSummary, UserSummary};

pub use migrations::LATEST as SCHEMA_VERSION;

/// Idle read connections kept for reuse; more are opened under load and closed after.
const IDLE_READERS: usize = 16;
/// The writer's page cache, in KiB (negative `cache_size` counts KiB).
const WRITER_CACHE_KIB: i64 = -64 * 1024;

const PAGE_SQL: &str = "SELECT tweet_id, json FROM tweets \
     WHERE user_id = ?1 AND has_media = 1 ORDER BY tweet_id DESC LIMIT ?2";
const PAGE_AFTER_SQL: &str = "SELECT tweet_id, json FROM tweets \
     WHERE user_id = ?1 AND has_media = 1 AND tweet_id < ?2 ORDER BY tweet_id DESC LIMIT ?3";

/// The embedded SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    writer: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and migrating its schema as needed.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let mut writer = Connection::open(&path).map_err(|e| open_error(&path, e))?;
        configure(&writer).map_err(|e| open_error(&path, e))?;
        // A tweet's JSON is a few KiB: 16 KiB pages hold several rows each instead of one row
        // and a lot of slack per 4 KiB page. Takes effect only on a new, empty file, and must
        // precede the switch to WAL.
        writer
            .pragma_update(None, "page_size", 16384)
            .map_err(|e| open_error(&path, e))?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| open_error(&path, e))?;
        // The writer touches B-tree pages all over the file during a bulk load; a larger cache
        // keeps them from being read and written again and again.
        writer
            .pragma_update(None, "cache_size", WRITER_CACHE_KIB)
            .map_err(|e| open_error(&path, e))?;
        migrations::migrate(&mut writer).map_err(|e| open_error(&path, e))?;
        Ok(SqliteStore {
            path,
            readers: Mutex::new(Vec::new()),
            writer: Arc::new(Mutex::new(writer)),
        })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
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
        let conn = Connection::open_with_flags(&self.path, flags)?;
        configure(&conn)?;
        Ok(conn)
    }

    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || f(&mut lock(&writer)).map_err(store_error))
            .await
            .map_err(|e| StoreError::Backend(format!("store writer task failed: {e}")))?
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // A charge is on disk before its response leaves: every commit is synced. Writes are batched
    // (tweets by the thousand, charges by group commit), so the syncs are few.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// A poisoned lock only means another thread panicked while holding it; a connection or a list of
/// idle connections is still sound, so carry on with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
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

fn stored_tweet(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredTweet> {
    Ok(StoredTweet {
        tweet_id: TweetId(from_column(row.get(0)?)),
        json: row.get(1)?,
    })
}

fn upsert(conn: &mut Connection, tweets: &mut [TweetRecord]) -> rusqlite::Result<UpsertSummary> {
    // In key order, each B-tree page is visited once per batch rather than once per row. Stable,
    // so of two versions of one tweet in a batch the later still wins.
    tweets.sort_by_key(|t| t.tweet_id);
    let tx = conn.transaction()?;
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
        // Only the newest profile of each author in the batch can matter.
        let mut profiles: HashMap<UserId, &TweetRecord> = HashMap::new();
        for t in tweets.iter() {
            let changed = put_tweet.execute(params![
                to_column(t.tweet_id.get()),
                to_column(t.user_id.get()),
                t.has_media,
                t.json,
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
                t.user_json,
                to_column(t.tweet_id.get()),
            ])?;
        }
    }
    tx.commit()?;
    Ok(summary)
}

#[async_trait]
impl Store for SqliteStore {
    async fn media_page(
        &self,
        user: UserId,
        before: Option<TweetId>,
        limit: usize,
    ) -> StoreResult<Vec<StoredTweet>> {
        let user = to_column(user.get());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| match before {
            None => conn
                .prepare_cached(PAGE_SQL)?
                .query_map(params![user, limit], stored_tweet)?
                .collect(),
            Some(before) => conn
                .prepare_cached(PAGE_AFTER_SQL)?
                .query_map(params![user, to_column(before.get()), limit], stored_tweet)?
                .collect(),
        })
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
        self.write(move |conn| upsert(conn, &mut tweets)).await
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_at_any_depth_is_one_index_seek() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("plan.db")).unwrap();
        let plan = store
            .read(|conn| {
                let sql = format!("EXPLAIN QUERY PLAN {PAGE_AFTER_SQL}");
                conn.prepare(&sql)?
                    .query_map(params![1, 2, 3], |row| row.get::<_, String>(3))?
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

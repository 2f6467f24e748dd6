//! The PostgreSQL store: the same [`Store`] and [`AccountStore`] as the embedded one, for
//! several stateless xgate nodes sharing one database.
//!
//! Connections come from a pool with short timeouts, so a database that cannot be reached makes
//! requests fail fast ([`StoreError::Unavailable`], a 503) and the pool reconnects by itself when
//! it is back. The SQL keeps to what PostgreSQL-compatible distributed engines also accept; see
//! `docs/SCALING.md`.

mod accounts;
mod migrations;
mod transfer;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Timeouts};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use xgate_model::{TweetId, TweetRecord, UserId};
use xgate_store::sortable::{from_column, to_column};
use xgate_store::{
    PageInfo, Store, StoreError, StoreResult, StoredTweet, UpsertSummary, UserSummary,
};

pub use migrations::LATEST;

/// How long a request waits for a connection, or for one to be made, before it is a 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections per node.
const POOL_SIZE: usize = 16;

/// Whether `db` names a PostgreSQL database rather than an SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A PostgreSQL database as an xgate store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`, with any libpq-style parameters such
    /// as `options=-c search_path=...`) and brings the schema up to date.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let store = Self::connect_without_migrating(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without touching the schema (for `xgate migrate`, which reports what it does).
    pub fn connect_without_migrating(url: &str) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("the database URL does not parse: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("xgate");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(CONNECT_TIMEOUT),
                create: Some(CONNECT_TIMEOUT),
                recycle: Some(CONNECT_TIMEOUT),
            })
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(PostgresStore { pool })
    }

    /// Applies the migrations this build has and the database lacks; returns the version before.
    /// Nodes starting together wait on an advisory lock: one applies, the others find it done.
    pub async fn migrate(&self) -> StoreResult<usize> {
        let mut client = self.client().await?;
        let found = migrations::migrate(&mut client).await.map_err(db_error)?;
        if found > LATEST {
            return Err(StoreError::Backend(format!(
                "the database has schema version {found}, newer than this xgate knows ({LATEST}); \
                 upgrade xgate"
            )));
        }
        Ok(found)
    }

    pub(crate) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => db_error(e),
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

/// A database error as a store error: lost connections, timeouts and conflicts that a retry
/// may clear are `Unavailable`; the rest are `Backend`.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    let retryable = match e.code() {
        None => true,
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
        }
    };
    if retryable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

const PAGE_SQL: &str = "SELECT tweet_id, json FROM tweets
     WHERE user_id = $1 AND has_media ORDER BY tweet_id DESC LIMIT $2";
const PAGE_AFTER_SQL: &str = "SELECT tweet_id, json FROM tweets
     WHERE user_id = $1 AND has_media AND tweet_id < $3 ORDER BY tweet_id DESC LIMIT $2";
const IDS_SQL: &str = "SELECT tweet_id FROM tweets
     WHERE user_id = $1 AND has_media ORDER BY tweet_id DESC LIMIT $2";
const IDS_AFTER_SQL: &str = "SELECT tweet_id FROM tweets
     WHERE user_id = $1 AND has_media AND tweet_id < $3 ORDER BY tweet_id DESC LIMIT $2";

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// The row a prepared per-user lookup finds, if any.
    async fn row_by_user(
        &self,
        sql: &str,
        user: UserId,
    ) -> StoreResult<Option<tokio_postgres::Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(db_error)?;
        client
            .query_opt(&statement, &[&to_column(user.get())])
            .await
            .map_err(db_error)
    }

    async fn page_rows(
        &self,
        sql: (&str, &str),
        user: UserId,
        before: Option<TweetId>,
        rows: usize,
    ) -> StoreResult<Vec<tokio_postgres::Row>> {
        let client = self.client().await?;
        let user = to_column(user.get());
        let result = match before {
            None => {
                let statement = client.prepare_cached(sql.0).await.map_err(db_error)?;
                client.query(&statement, &[&user, &limit(rows)]).await
            }
            Some(before) => {
                let statement = client.prepare_cached(sql.1).await.map_err(db_error)?;
                let before = to_column(before.get());
                client
                    .query(&statement, &[&user, &limit(rows), &before])
                    .await
            }
        };
        result.map_err(db_error)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn media_page(
        &self,
        user: UserId,
        before: Option<TweetId>,
        limit: usize,
    ) -> StoreResult<Vec<StoredTweet>> {
        let rows = self
            .page_rows((PAGE_SQL, PAGE_AFTER_SQL), user, before, limit)
            .await?;
        Ok(rows
            .iter()
            .map(|row| StoredTweet {
                tweet_id: TweetId(from_column(row.get(0))),
                json: row.get(1),
            })
            .collect())
    }

    async fn media_page_into(
        &self,
        user: UserId,
        before: Option<TweetId>,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> StoreResult<PageInfo> {
        let rows = self
            .page_rows((PAGE_SQL, PAGE_AFTER_SQL), user, before, limit + 1)
            .await?;
        let mut info = PageInfo {
            more: rows.len() > limit,
            ..PageInfo::default()
        };
        for row in rows.iter().take(limit) {
            if info.count > 0 {
                out.push(b',');
            }
            out.extend_from_slice(row.get::<_, &str>(1).as_bytes());
            info.last = Some(TweetId(from_column(row.get(0))));
            info.count += 1;
        }
        Ok(info)
    }

    async fn media_ids(
        &self,
        user: UserId,
        before: Option<TweetId>,
        limit: usize,
    ) -> StoreResult<Vec<TweetId>> {
        let rows = self
            .page_rows((IDS_SQL, IDS_AFTER_SQL), user, before, limit)
            .await?;
        Ok(rows
            .iter()
            .map(|row| TweetId(from_column(row.get(0))))
            .collect())
    }

    async fn sync_state(&self, user: UserId) -> StoreResult<Option<Vec<u8>>> {
        let row = self
            .row_by_user("SELECT state FROM upstream_sync WHERE user_id = $1", user)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn put_sync_state(&self, user: UserId, state: Vec<u8>) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO upstream_sync (user_id, state) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO UPDATE SET state = excluded.state",
                &[&to_column(user.get()), &state],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn user_exists(&self, user: UserId) -> StoreResult<bool> {
        let row = self
            .row_by_user("SELECT 1 FROM users WHERE user_id = $1", user)
            .await?;
        Ok(row.is_some())
    }

    async fn upsert_tweets(&self, tweets: Vec<TweetRecord>) -> StoreResult<UpsertSummary> {
        if tweets.is_empty() {
            return Ok(UpsertSummary::default());
        }
        // One row per tweet id (the later version wins, as it would row by row), and the newest
        // profile of each author.
        let mut latest: HashMap<TweetId, usize> = HashMap::with_capacity(tweets.len());
        for (i, t) in tweets.iter().enumerate() {
            latest.insert(t.tweet_id, i);
        }
        let mut kept: Vec<&TweetRecord> = latest.values().map(|&i| &tweets[i]).collect();
        kept.sort_by_key(|t| (t.user_id, t.tweet_id));
        let mut profiles: HashMap<UserId, &TweetRecord> = HashMap::new();
        for t in &kept {
            let newest = profiles.entry(t.user_id).or_insert(t);
            if t.tweet_id > newest.tweet_id {
                *newest = t;
            }
        }
        let ids: Vec<i64> = kept.iter().map(|t| to_column(t.tweet_id.get())).collect();
        let users: Vec<i64> = kept.iter().map(|t| to_column(t.user_id.get())).collect();
        let media: Vec<bool> = kept.iter().map(|t| t.has_media).collect();
        let json: Vec<&str> = kept.iter().map(|t| t.json.as_str()).collect();
        let profile_users: Vec<i64> = profiles.keys().map(|u| to_column(u.get())).collect();
        let names: Vec<Option<&str>> = profiles.values().map(|t| t.username.as_deref()).collect();
        let profile_json: Vec<&str> = profiles.values().map(|t| t.user_json()).collect();
        let profile_tweets: Vec<i64> = profiles
            .values()
            .map(|t| to_column(t.tweet_id.get()))
            .collect();

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let written = tx
            .execute(
                "INSERT INTO tweets (tweet_id, user_id, has_media, json)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::boolean[], $4::text[])
                 ON CONFLICT (tweet_id) DO UPDATE SET
                     user_id = excluded.user_id,
                     has_media = excluded.has_media,
                     json = excluded.json
                 WHERE tweets.json IS DISTINCT FROM excluded.json",
                &[&ids, &users, &media, &json],
            )
            .await
            .map_err(db_error)?;
        tx.execute(
            "INSERT INTO users (user_id, username, json, profile_tweet_id)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[])
             ON CONFLICT (user_id) DO UPDATE SET
                 username = excluded.username,
                 json = excluded.json,
                 profile_tweet_id = excluded.profile_tweet_id
             WHERE excluded.profile_tweet_id >= users.profile_tweet_id
               AND users.json IS DISTINCT FROM excluded.json",
            &[&profile_users, &names, &profile_json, &profile_tweets],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        // Repeats of a tweet inside the batch count as unchanged, as they would row by row.
        Ok(UpsertSummary {
            written,
            unchanged: tweets.len() as u64 - written,
        })
    }

    async fn setting_or_insert(&self, key: &str, value: Vec<u8>) -> StoreResult<Vec<u8>> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_one("SELECT value FROM settings WHERE key = $1", &[&key])
            .await
            .map_err(db_error)?;
        Ok(row.get(0))
    }

    async fn users(&self, limit: usize) -> StoreResult<Vec<UserSummary>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT u.user_id, u.username,
                        (SELECT count(*) FROM tweets t WHERE t.user_id = u.user_id AND t.has_media)
                   FROM users u ORDER BY u.user_id LIMIT $1",
                &[&self::limit(limit)],
            )
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|row| UserSummary {
                user_id: UserId(from_column(row.get(0))),
                username: row.get(1),
                media_tweets: row.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(db_error)?;
        Ok(())
    }
}

/// For tests of this crate and of others: fresh, empty schemas in a real PostgreSQL.
pub mod testing {
    use std::io::Write as _;
    use std::sync::Once;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use tokio_postgres::NoTls;

    /// The database tests use: `XGATE_TEST_POSTGRES`, by default the CI machines' one.
    pub fn base_url() -> String {
        std::env::var("XGATE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// The URL of a new, empty schema of the test database (connections made with it use only
    /// that schema). `None` when the database cannot be reached outside CI, said once on
    /// standard error; under CI (`CI` set) that is a failure, never a skip.
    pub async fn fresh_database(tag: &str) -> Option<String> {
        let base = base_url();
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&base, NoTls),
        )
        .await;
        let (client, connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return unreachable(&base, &e.to_string()),
            Err(_) => return unreachable(&base, "timed out"),
        };
        tokio::spawn(connection);
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let schema = format!(
            "xgate_{tag}_{}_{nanos:x}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap_or_else(|e| panic!("creating schema {schema}: {e}"));
        let separator = if base.contains('?') { '&' } else { '?' };
        Some(format!(
            "{base}{separator}options=-c%20search_path%3D{schema}"
        ))
    }

    fn unreachable(base: &str, why: &str) -> Option<String> {
        if std::env::var_os("CI").is_some() {
            panic!("PostgreSQL at {base} is required under CI and cannot be reached: {why}");
        }
        static SAID: Once = Once::new();
        SAID.call_once(|| {
            // Straight to the process's stderr, past the test harness's capture.
            let _ = writeln!(
                std::io::stderr(),
                "xgate: PostgreSQL not reachable at {base} ({why}): the PostgreSQL tests are \
                 SKIPPED here (set XGATE_TEST_POSTGRES to run them)"
            );
        });
        None
    }
}

//! [`Transfer`] on SQLite.

use async_trait::async_trait;
use rusqlite::params;
use xgate_model::{TweetId, TweetRecord};
use xgate_store::StoreResult;
use xgate_store::sortable::{from_column, to_column};
use xgate_store::transfer::{
    AccountRow, AccountsDump, Counts, GrantRow, IdempotencyRow, KeyRow, RequestRow, Transfer,
};

use crate::{SqliteStore, Tweets, damaged, ledger};

fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl Transfer for SqliteStore {
    async fn tweets_after(
        &self,
        after: Option<TweetId>,
        limit: usize,
    ) -> StoreResult<Vec<TweetRecord>> {
        self.read(|conn| {
            let mut statement;
            let mut rows = match after {
                None => {
                    statement =
                        conn.prepare_cached("SELECT json FROM tweets ORDER BY tweet_id LIMIT ?1")?;
                    statement.query(params![sql_limit(limit)])?
                }
                Some(after) => {
                    statement = conn.prepare_cached(
                        "SELECT json FROM tweets WHERE tweet_id > ?1 ORDER BY tweet_id LIMIT ?2",
                    )?;
                    statement.query(params![to_column(after.get()), sql_limit(limit)])?
                }
            };
            let mut texts = Tweets::new(conn);
            let mut tweets = Vec::new();
            let mut json = Vec::new();
            while let Some(row) = rows.next()? {
                json.clear();
                texts.write(row, 0, &mut json)?;
                let text = std::str::from_utf8(&json).map_err(|e| damaged(0, e))?;
                tweets.push(TweetRecord::from_json(text).map_err(|e| damaged(0, e))?);
            }
            Ok(tweets)
        })
    }

    async fn last_tweet_id(&self) -> StoreResult<Option<TweetId>> {
        self.read(|conn| {
            conn.query_row("SELECT max(tweet_id) FROM tweets", [], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .map(|id| id.map(|id| TweetId(from_column(id))))
        })
    }

    async fn dump_accounts(&self) -> StoreResult<AccountsDump> {
        self.read(|conn| {
            let accounts = conn
                .prepare(
                    "SELECT id, name, balance, free_allowance, free_used, free_period, rate_limit,
                            created_ms FROM accounts ORDER BY id",
                )?
                .query_map([], |r| {
                    Ok(AccountRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        balance: r.get(2)?,
                        free_allowance: r.get(3)?,
                        free_used: r.get(4)?,
                        free_period: r.get(5)?,
                        rate_limit: r.get(6)?,
                        created_ms: r.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let grants = conn
                .prepare(
                    "SELECT id, account_id, amount, note, at_ms FROM credit_grants ORDER BY id",
                )?
                .query_map([], |r| {
                    Ok(GrantRow {
                        id: r.get(0)?,
                        account_id: r.get(1)?,
                        amount: r.get(2)?,
                        note: r.get(3)?,
                        at_ms: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let keys = conn
                .prepare(
                    "SELECT id, account_id, hash, prefix, label, created_ms, last_used_ms,
                            revoked_ms FROM api_keys ORDER BY id",
                )?
                .query_map([], |r| {
                    Ok(KeyRow {
                        id: r.get(0)?,
                        account_id: r.get(1)?,
                        hash: r.get(2)?,
                        prefix: r.get(3)?,
                        label: r.get(4)?,
                        created_ms: r.get(5)?,
                        last_used_ms: r.get(6)?,
                        revoked_ms: r.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let idempotency = conn
                .prepare(
                    "SELECT account_id, key, request_hash, status, body, request_id, created_ms
                       FROM idempotency",
                )?
                .query_map([], |r| {
                    Ok(IdempotencyRow {
                        account_id: r.get(0)?,
                        key: r.get(1)?,
                        request_hash: r.get(2)?,
                        status: r.get(3)?,
                        body: r.get(4)?,
                        request_id: r.get(5)?,
                        created_ms: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let settings = conn
                .prepare("SELECT key, value FROM settings ORDER BY key")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(AccountsDump {
                accounts,
                grants,
                keys,
                idempotency,
                settings,
            })
        })
    }

    async fn load_accounts(&self, dump: AccountsDump) -> StoreResult<()> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            for a in &dump.accounts {
                tx.execute(
                    "INSERT INTO accounts (id, name, balance, free_allowance, free_used,
                                           free_period, rate_limit, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                    params![
                        a.id,
                        a.name,
                        a.balance,
                        a.free_allowance,
                        a.free_used,
                        a.free_period,
                        a.rate_limit,
                        a.created_ms
                    ],
                )?;
            }
            for g in &dump.grants {
                tx.execute(
                    "INSERT INTO credit_grants (id, account_id, amount, note, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    params![g.id, g.account_id, g.amount, g.note, g.at_ms],
                )?;
            }
            for k in &dump.keys {
                tx.execute(
                    "INSERT INTO api_keys (id, account_id, hash, prefix, label, created_ms,
                                           last_used_ms, revoked_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                    params![
                        k.id,
                        k.account_id,
                        k.hash,
                        k.prefix,
                        k.label,
                        k.created_ms,
                        k.last_used_ms,
                        k.revoked_ms
                    ],
                )?;
            }
            for i in &dump.idempotency {
                tx.execute(
                    "INSERT INTO idempotency (account_id, key, request_hash, status, body,
                                              request_id, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                    params![
                        i.account_id,
                        i.key,
                        i.request_hash,
                        i.status,
                        i.body,
                        i.request_id,
                        i.created_ms
                    ],
                )?;
            }
            for (key, value) in &dump.settings {
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )?;
            }
            tx.commit()
        })
        .await
    }

    async fn requests_after(&self, after: i64, limit: usize) -> StoreResult<Vec<RequestRow>> {
        self.read(|conn| ledger::rows_after(conn, after, limit))
    }

    async fn load_requests(&self, rows: Vec<RequestRow>) -> StoreResult<()> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            ledger::load(&tx, &rows)?;
            tx.commit()
        })
        .await
    }

    async fn counts(&self) -> StoreResult<Counts> {
        self.read(|conn| {
            // One read transaction, so the figures describe the same moment.
            conn.execute_batch("BEGIN")?;
            let counts = (|| {
                let (requests, paid, last_seq) = ledger::totals(conn)?;
                conn.query_row(
                    "SELECT (SELECT count(*) FROM tweets), (SELECT count(*) FROM users),
                            (SELECT count(*) FROM accounts), (SELECT count(*) FROM credit_grants),
                            (SELECT count(*) FROM api_keys),
                            (SELECT coalesce(sum(balance), 0) FROM accounts)",
                    [],
                    |r| {
                        let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                        Ok(Counts {
                            tweets: n(0)?,
                            users: n(1)?,
                            accounts: n(2)?,
                            grants: n(3)?,
                            keys: n(4)?,
                            requests,
                            balances: r.get(5)?,
                            paid,
                            last_seq,
                        })
                    },
                )
            })();
            conn.execute_batch("COMMIT")?;
            counts
        })
    }
}

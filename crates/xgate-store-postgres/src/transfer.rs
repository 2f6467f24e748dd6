//! [`Transfer`] on PostgreSQL. Rows are written with their ids; the identity sequences are then
//! moved past them, so new rows do not collide.

use async_trait::async_trait;
use xgate_model::{TweetId, TweetRecord};
use xgate_store::sortable::{from_column, to_column};
use xgate_store::transfer::{
    AccountRow, AccountsDump, Counts, GrantRow, IdempotencyRow, KeyRow, RequestRow, Transfer,
};
use xgate_store::{StoreError, StoreResult};

use crate::{PostgresStore, db_error};

/// Moves each identity sequence past the largest id its table holds.
const RESET_SEQUENCES: &str = "
    SELECT setval(pg_get_serial_sequence('accounts', 'id'),
                  coalesce((SELECT max(id) FROM accounts), 0) + 1, false);
    SELECT setval(pg_get_serial_sequence('credit_grants', 'id'),
                  coalesce((SELECT max(id) FROM credit_grants), 0) + 1, false);
    SELECT setval(pg_get_serial_sequence('api_keys', 'id'),
                  coalesce((SELECT max(id) FROM api_keys), 0) + 1, false);
    SELECT setval(pg_get_serial_sequence('requests', 'seq'),
                  coalesce((SELECT max(seq) FROM requests), 0) + 1, false);
";

#[async_trait]
impl Transfer for PostgresStore {
    async fn tweets_after(
        &self,
        after: Option<TweetId>,
        limit: usize,
    ) -> StoreResult<Vec<TweetRecord>> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows =
            match after {
                None => {
                    client
                        .query(
                            "SELECT json FROM tweets ORDER BY tweet_id LIMIT $1",
                            &[&limit],
                        )
                        .await
                }
                Some(after) => client
                    .query(
                        "SELECT json FROM tweets WHERE tweet_id > $1 ORDER BY tweet_id LIMIT $2",
                        &[&to_column(after.get()), &limit],
                    )
                    .await,
            }
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                TweetRecord::from_json(row.get(0)).map_err(|e| StoreError::Backend(e.to_string()))
            })
            .collect()
    }

    async fn last_tweet_id(&self) -> StoreResult<Option<TweetId>> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT max(tweet_id) FROM tweets", &[])
            .await
            .map_err(db_error)?;
        Ok(row
            .get::<_, Option<i64>>(0)
            .map(|id| TweetId(from_column(id))))
    }

    async fn dump_accounts(&self) -> StoreResult<AccountsDump> {
        let client = self.client().await?;
        let query = |sql: &'static str| {
            let client = &client;
            async move { client.query(sql, &[]).await.map_err(db_error) }
        };
        let accounts = query(
            "SELECT id, name, balance, free_allowance, free_used, free_period, rate_limit,
                    created_ms FROM accounts ORDER BY id",
        )
        .await?
        .iter()
        .map(|r| AccountRow {
            id: r.get(0),
            name: r.get(1),
            balance: r.get(2),
            free_allowance: r.get(3),
            free_used: r.get(4),
            free_period: r.get(5),
            rate_limit: r.get(6),
            created_ms: r.get(7),
        })
        .collect();
        let grants =
            query("SELECT id, account_id, amount, note, at_ms FROM credit_grants ORDER BY id")
                .await?
                .iter()
                .map(|r| GrantRow {
                    id: r.get(0),
                    account_id: r.get(1),
                    amount: r.get(2),
                    note: r.get(3),
                    at_ms: r.get(4),
                })
                .collect();
        let keys = query(
            "SELECT id, account_id, hash, prefix, label, created_ms, last_used_ms, revoked_ms
               FROM api_keys ORDER BY id",
        )
        .await?
        .iter()
        .map(|r| KeyRow {
            id: r.get(0),
            account_id: r.get(1),
            hash: r.get(2),
            prefix: r.get(3),
            label: r.get(4),
            created_ms: r.get(5),
            last_used_ms: r.get(6),
            revoked_ms: r.get(7),
        })
        .collect();
        let idempotency = query(
            "SELECT account_id, key, request_hash, status, body, request_id, created_ms
               FROM idempotency",
        )
        .await?
        .iter()
        .map(|r| IdempotencyRow {
            account_id: r.get(0),
            key: r.get(1),
            request_hash: r.get(2),
            status: i64::from(r.get::<_, i32>(3)),
            body: r.get(4),
            request_id: r.get(5),
            created_ms: r.get(6),
        })
        .collect();
        let settings = query("SELECT key, value FROM settings ORDER BY key")
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(AccountsDump {
            accounts,
            grants,
            keys,
            idempotency,
            settings,
        })
    }

    async fn load_accounts(&self, dump: AccountsDump) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        for a in &dump.accounts {
            tx.execute(
                "INSERT INTO accounts (id, name, balance, free_allowance, free_used, free_period,
                                       rate_limit, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    &a.id,
                    &a.name,
                    &a.balance,
                    &a.free_allowance,
                    &a.free_used,
                    &a.free_period,
                    &a.rate_limit,
                    &a.created_ms,
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for g in &dump.grants {
            tx.execute(
                "INSERT INTO credit_grants (id, account_id, amount, note, at_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&g.id, &g.account_id, &g.amount, &g.note, &g.at_ms],
            )
            .await
            .map_err(db_error)?;
        }
        for k in &dump.keys {
            tx.execute(
                "INSERT INTO api_keys (id, account_id, hash, prefix, label, created_ms,
                                       last_used_ms, revoked_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    &k.id,
                    &k.account_id,
                    &k.hash,
                    &k.prefix,
                    &k.label,
                    &k.created_ms,
                    &k.last_used_ms,
                    &k.revoked_ms,
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for i in &dump.idempotency {
            let status = i32::try_from(i.status).unwrap_or(0);
            tx.execute(
                "INSERT INTO idempotency (account_id, key, request_hash, status, body, request_id,
                                          created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &i.account_id,
                    &i.key,
                    &i.request_hash,
                    &status,
                    &i.body,
                    &i.request_id,
                    &i.created_ms,
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for (key, value) in &dump.settings {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[key, value],
            )
            .await
            .map_err(db_error)?;
        }
        tx.batch_execute(RESET_SEQUENCES).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn requests_after(&self, after: i64, limit: usize) -> StoreResult<Vec<RequestRow>> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT seq, request_id, account_id, key_id, at_ms, endpoint, status, cost, paid,
                        free, latency_us
                   FROM requests WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &limit],
            )
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| RequestRow {
                seq: r.get(0),
                request_id: r.get(1),
                account_id: r.get(2),
                key_id: r.get(3),
                at_ms: r.get(4),
                endpoint: r.get(5),
                status: i64::from(r.get::<_, i32>(6)),
                cost: r.get(7),
                paid: r.get(8),
                free: r.get(9),
                latency_us: r.get(10),
            })
            .collect())
    }

    async fn load_requests(&self, rows: Vec<RequestRow>) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let column = |f: fn(&RequestRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        let text = |f: fn(&RequestRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
        let status: Vec<i32> = rows
            .iter()
            .map(|r| i32::try_from(r.status).unwrap_or(0))
            .collect();
        tx.execute(
            "INSERT INTO requests (seq, request_id, account_id, key_id, at_ms, endpoint, status,
                                   cost, paid, free, latency_us)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[],
                                  $5::bigint[], $6::text[], $7::int[], $8::bigint[],
                                  $9::bigint[], $10::bigint[], $11::bigint[])
             ON CONFLICT DO NOTHING",
            &[
                &column(|r| r.seq),
                &text(|r| &r.request_id),
                &column(|r| r.account_id),
                &column(|r| r.key_id),
                &column(|r| r.at_ms),
                &text(|r| &r.endpoint),
                &status,
                &column(|r| r.cost),
                &column(|r| r.paid),
                &column(|r| r.free),
                &column(|r| r.latency_us),
            ],
        )
        .await
        .map_err(db_error)?;
        tx.batch_execute(RESET_SEQUENCES).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn counts(&self) -> StoreResult<Counts> {
        let client = self.client().await?;
        let r = client
            .query_one(
                "SELECT (SELECT count(*) FROM tweets), (SELECT count(*) FROM users),
                        (SELECT count(*) FROM accounts), (SELECT count(*) FROM credit_grants),
                        (SELECT count(*) FROM api_keys), (SELECT count(*) FROM requests),
                        (SELECT coalesce(sum(balance), 0)::bigint FROM accounts),
                        (SELECT coalesce(sum(paid), 0)::bigint FROM requests),
                        (SELECT coalesce(max(seq), 0) FROM requests)",
                &[],
            )
            .await
            .map_err(db_error)?;
        let n = |i| r.get::<_, i64>(i).max(0) as u64;
        Ok(Counts {
            tweets: n(0),
            users: n(1),
            accounts: n(2),
            grants: n(3),
            keys: n(4),
            requests: n(5),
            balances: r.get(6),
            paid: r.get(7),
            last_seq: r.get(8),
        })
    }
}

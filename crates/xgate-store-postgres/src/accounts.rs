//! [`AccountStore`] on PostgreSQL. A charge batch locks the rows of the accounts it charges
//! (`SELECT ... FOR UPDATE`, in id order so two nodes' batches cannot deadlock) for the length of
//! its one transaction, not of any request: nodes charging one account take turns per commit,
//! and the balance check and the ledger row are atomic across all of them.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use tokio_postgres::Row;
use xgate_store::accounts::{
    Account, AccountId, AccountStore, AccountTerms, Audit, KeyAuth, KeyId, KeyInfo, KeySelector,
    NewKey, RateTaken, Recorded, RequestRecord, StoredResponse, UsageDay, UsageRow,
};
use xgate_store::{StoreError, StoreResult};

use crate::{PostgresStore, db_error};

const ACCOUNT_COLUMNS: &str =
    "id, name, balance, free_allowance, free_used, free_period, rate_limit, created_ms";
const KEY_COLUMNS: &str = "k.id, a.name, k.prefix, k.label, k.created_ms, k.last_used_ms, \
                           k.revoked_ms";

fn account_row(row: &Row) -> Account {
    Account {
        id: AccountId(row.get(0)),
        name: row.get(1),
        balance: row.get(2),
        free_allowance: row.get(3),
        free_used: row.get(4),
        free_period: row.get(5),
        rate_limit: row
            .get::<_, Option<i64>>(6)
            .and_then(|r| u32::try_from(r).ok()),
        created_ms: row.get(7),
    }
}

fn key_row(row: &Row) -> KeyInfo {
    KeyInfo {
        id: KeyId(row.get(0)),
        account: row.get(1),
        prefix: row.get(2),
        label: row.get(3),
        created_ms: row.get(4),
        last_used_ms: row.get(5),
        revoked_ms: row.get(6),
    }
}

fn missing_account(id: AccountId) -> StoreError {
    StoreError::Backend(format!("no account with id {}", id.0))
}

async fn account_by_id(
    client: &impl deadpool_postgres::GenericClient,
    id: AccountId,
) -> StoreResult<Option<Account>> {
    let row = client
        .query_opt(
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"),
            &[&id.0],
        )
        .await
        .map_err(db_error)?;
    Ok(row.as_ref().map(account_row))
}

async fn account_by_name(
    client: &impl deadpool_postgres::GenericClient,
    name: &str,
) -> StoreResult<Option<Account>> {
    let row = client
        .query_opt(
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"),
            &[&name],
        )
        .await
        .map_err(db_error)?;
    Ok(row.as_ref().map(account_row))
}

async fn key_by_id(
    client: &impl deadpool_postgres::GenericClient,
    id: KeyId,
) -> StoreResult<Option<KeyInfo>> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id
                  WHERE k.id = $1"
            ),
            &[&id.0],
        )
        .await
        .map_err(db_error)?;
    Ok(row.as_ref().map(key_row))
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn ensure_account(&self, name: &str, now_ms: i64) -> StoreResult<Account> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO accounts (name, created_ms) VALUES ($1, $2)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &now_ms],
            )
            .await
            .map_err(db_error)?;
        account_by_name(&client, name)
            .await?
            .ok_or_else(|| StoreError::Backend(format!("the account {name:?} is gone")))
    }

    async fn account_by_name(&self, name: &str) -> StoreResult<Option<Account>> {
        let client = self.client().await?;
        account_by_name(&client, name).await
    }

    async fn account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        let client = self.client().await?;
        account_by_id(&client, id).await
    }

    async fn add_credits(
        &self,
        id: AccountId,
        amount: i64,
        note: &str,
        now_ms: i64,
    ) -> StoreResult<Account> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let changed = tx
            .execute(
                "UPDATE accounts SET balance = balance + $2 WHERE id = $1",
                &[&id.0, &amount],
            )
            .await
            .map_err(db_error)?;
        if changed == 0 {
            return Err(missing_account(id));
        }
        tx.execute(
            "INSERT INTO credit_grants (account_id, amount, note, at_ms) VALUES ($1, $2, $3, $4)",
            &[&id.0, &amount, &note, &now_ms],
        )
        .await
        .map_err(db_error)?;
        let account = account_by_id(&tx, id)
            .await?
            .ok_or_else(|| missing_account(id))?;
        tx.commit().await.map_err(db_error)?;
        Ok(account)
    }

    async fn set_terms(&self, id: AccountId, terms: AccountTerms) -> StoreResult<Account> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        if let Some(allowance) = terms.free_allowance {
            tx.execute(
                "UPDATE accounts SET free_allowance = $2 WHERE id = $1",
                &[&id.0, &allowance],
            )
            .await
            .map_err(db_error)?;
        }
        if let Some(limit) = terms.rate_limit {
            let limit = limit.map(i64::from);
            tx.execute(
                "UPDATE accounts SET rate_limit = $2 WHERE id = $1",
                &[&id.0, &limit],
            )
            .await
            .map_err(db_error)?;
        }
        let account = account_by_id(&tx, id)
            .await?
            .ok_or_else(|| missing_account(id))?;
        tx.commit().await.map_err(db_error)?;
        Ok(account)
    }

    async fn insert_key(
        &self,
        account: AccountId,
        key: NewKey,
        now_ms: i64,
    ) -> StoreResult<KeyInfo> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO api_keys (account_id, hash, prefix, label, created_ms)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&account.0, &&key.hash[..], &key.prefix, &key.label, &now_ms],
            )
            .await
            .map_err(db_error)?;
        key_by_id(&client, KeyId(row.get(0)))
            .await?
            .ok_or_else(|| StoreError::Backend("the new key is gone".into()))
    }

    async fn key_by_hash(&self, hash: [u8; 32]) -> StoreResult<Option<KeyAuth>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT k.id, k.account_id, k.revoked_ms, a.rate_limit
                   FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.hash = $1",
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&statement, &[&&hash[..]])
            .await
            .map_err(db_error)?;
        Ok(row.map(|row| KeyAuth {
            key_id: KeyId(row.get(0)),
            account_id: AccountId(row.get(1)),
            revoked: row.get::<_, Option<i64>>(2).is_some(),
            rate_limit: row
                .get::<_, Option<i64>>(3)
                .and_then(|r| u32::try_from(r).ok()),
        }))
    }

    async fn list_keys(&self) -> StoreResult<Vec<KeyInfo>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id
                      ORDER BY a.name, k.id"
                ),
                &[],
            )
            .await
            .map_err(db_error)?;
        Ok(rows.iter().map(key_row).collect())
    }

    async fn revoke_key(&self, key: KeySelector, now_ms: i64) -> StoreResult<Option<KeyInfo>> {
        let client = self.client().await?;
        let row =
            match key {
                KeySelector::Id(id) => client
                    .query_opt(
                        "UPDATE api_keys SET revoked_ms = coalesce(revoked_ms, $2) WHERE id = $1
                     RETURNING id",
                        &[&id.0, &now_ms],
                    )
                    .await,
                KeySelector::Hash(hash) => client
                    .query_opt(
                        "UPDATE api_keys SET revoked_ms = coalesce(revoked_ms, $2) WHERE hash = $1
                     RETURNING id",
                        &[&&hash[..], &now_ms],
                    )
                    .await,
            }
            .map_err(db_error)?;
        match row {
            Some(row) => key_by_id(&client, KeyId(row.get(0))).await,
            None => Ok(None),
        }
    }

    async fn record(&self, batch: Vec<RequestRecord>, month: &str) -> StoreResult<Vec<Recorded>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let mut ids: Vec<i64> = batch.iter().map(|r| r.account.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let rows = tx
            .query(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1) ORDER BY id
                     FOR UPDATE"
                ),
                &[&ids],
            )
            .await
            .map_err(db_error)?;
        let mut accounts: HashMap<AccountId, Account> =
            rows.iter().map(account_row).map(|a| (a.id, a)).collect();
        // Request ids already in the ledger (a batch recorded before): those are duplicates.
        let texts: Vec<Cow<'_, str>> = batch.iter().map(|r| r.request_id.text()).collect();
        let request_ids: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let known: HashSet<String> = tx
            .query(
                "SELECT request_id FROM requests WHERE request_id = ANY($1)",
                &[&request_ids],
            )
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| row.get(0))
            .collect();

        // The money rule, request by request, in order; then every ledger row in one statement.
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut charged: Vec<(&RequestRecord, i64, i64)> = Vec::with_capacity(batch.len());
        let mut seen: HashSet<&str> = HashSet::new();
        let mut last_used: HashMap<KeyId, i64> = HashMap::new();
        for (rec, &id) in batch.iter().zip(&request_ids) {
            // Recorded before, or charged earlier in this batch. A refused request's id stays
            // unused: the same id again is refused or charged on its own merits.
            if known.contains(id) || seen.contains(id) {
                outcomes.push(Recorded::Duplicate);
                continue;
            }
            let account = accounts
                .get_mut(&rec.account)
                .ok_or_else(|| missing_account(rec.account))?;
            let split = match account.split(rec.cost, month) {
                Ok(split) => split,
                Err(refused) => {
                    outcomes.push(refused);
                    continue;
                }
            };
            seen.insert(id);
            outcomes.push(account.apply(split, month));
            charged.push((rec, split.paid, split.free));
            let used = last_used.entry(rec.key).or_insert(rec.at_ms);
            *used = (*used).max(rec.at_ms);
        }
        if !charged.is_empty() {
            let column = |f: fn(&(&RequestRecord, i64, i64)) -> i64| {
                charged.iter().map(f).collect::<Vec<i64>>()
            };
            let texts: Vec<Cow<'_, str>> = charged.iter().map(|c| c.0.request_id.text()).collect();
            let ids: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
            let endpoints: Vec<&str> = charged.iter().map(|c| c.0.endpoint.as_ref()).collect();
            let statuses: Vec<i32> = charged.iter().map(|c| i32::from(c.0.status)).collect();
            tx.execute(
                "INSERT INTO requests (request_id, account_id, key_id, at_ms, endpoint, status,
                                       cost, paid, free, latency_us)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[],
                                      $5::text[], $6::int[], $7::bigint[], $8::bigint[],
                                      $9::bigint[], $10::bigint[])",
                &[
                    &ids,
                    &column(|c| c.0.account.0),
                    &column(|c| c.0.key.0),
                    &column(|c| c.0.at_ms),
                    &endpoints,
                    &statuses,
                    &column(|c| c.0.cost),
                    &column(|c| c.1),
                    &column(|c| c.2),
                    &column(|c| c.0.latency_us),
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for (rec, _, _) in &charged {
            let Some(kept) = &rec.idempotency else {
                continue;
            };
            let (key, response) = &**kept;
            let status = i32::from(response.status);
            tx.execute(
                "INSERT INTO idempotency
                     (account_id, key, request_hash, status, body, request_id, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (account_id, key) DO UPDATE SET
                     request_hash = excluded.request_hash, status = excluded.status,
                     body = excluded.body, request_id = excluded.request_id,
                     created_ms = excluded.created_ms",
                &[
                    &rec.account.0,
                    key,
                    &&response.request_hash[..],
                    &status,
                    &response.body,
                    &response.request_id,
                    &response.created_ms,
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for account in accounts.values() {
            tx.execute(
                "UPDATE accounts SET balance = $2, free_used = $3, free_period = $4 WHERE id = $1",
                &[
                    &account.id.0,
                    &account.balance,
                    &account.free_used,
                    &account.free_period,
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for (key, at) in last_used {
            // At most once a minute per key, as on SQLite.
            tx.execute(
                "UPDATE api_keys SET last_used_ms = $2::bigint
                  WHERE id = $1 AND coalesce(last_used_ms, 0) < $2::bigint - 60000",
                &[&key.0, &at],
            )
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(outcomes)
    }

    async fn idempotent_response(
        &self,
        account: AccountId,
        key: &str,
        not_before_ms: i64,
    ) -> StoreResult<Option<StoredResponse>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT request_hash, status, body, request_id, created_ms FROM idempotency
                  WHERE account_id = $1 AND key = $2 AND created_ms >= $3",
                &[&account.0, &key, &not_before_ms],
            )
            .await
            .map_err(db_error)?;
        Ok(row.map(|row| {
            let hash: Vec<u8> = row.get(0);
            StoredResponse {
                request_hash: hash.try_into().unwrap_or([0; 32]),
                status: u16::try_from(row.get::<_, i32>(1)).unwrap_or(0),
                body: row.get(2),
                request_id: row.get(3),
                created_ms: row.get(4),
            }
        }))
    }

    async fn expire_idempotency(&self, before_ms: i64) -> StoreResult<u64> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM idempotency WHERE created_ms < $1",
                &[&before_ms],
            )
            .await
            .map_err(db_error)
    }

    async fn usage(
        &self,
        account: AccountId,
        since_ms: i64,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<UsageRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, request_id, at_ms, endpoint, status, cost, paid, free, latency_us
                   FROM requests
                  WHERE account_id = $1 AND seq < $2 AND at_ms >= $3
                  ORDER BY seq DESC LIMIT $4",
                &[
                    &account.0,
                    &before_seq.unwrap_or(i64::MAX),
                    &since_ms,
                    &limit,
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|row| UsageRow {
                seq: row.get(0),
                request_id: row.get(1),
                at_ms: row.get(2),
                endpoint: row.get(3),
                status: u16::try_from(row.get::<_, i32>(4)).unwrap_or(0),
                cost: row.get(5),
                paid: row.get(6),
                free: row.get(7),
                latency_us: row.get(8),
            })
            .collect())
    }

    async fn usage_by_day(&self, account: AccountId, since_ms: i64) -> StoreResult<Vec<UsageDay>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT to_char(to_timestamp(at_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
                        count(*),
                        count(*) FILTER (WHERE status BETWEEN 200 AND 299),
                        coalesce(sum(paid + free), 0)::bigint
                   FROM requests WHERE account_id = $1 AND at_ms >= $2
                  GROUP BY day ORDER BY day DESC",
                &[&account.0, &since_ms],
            )
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|row| UsageDay {
                day: row.get(0),
                requests: row.get(1),
                succeeded: row.get(2),
                credits: row.get(3),
            })
            .collect())
    }

    async fn audit(&self, account: AccountId) -> StoreResult<Audit> {
        let client = self.client().await?;
        // One statement: the three figures describe the same snapshot.
        let row = client
            .query_one(
                "SELECT (SELECT balance FROM accounts WHERE id = $1),
                        (SELECT coalesce(sum(amount), 0)::bigint FROM credit_grants
                          WHERE account_id = $1),
                        (SELECT coalesce(sum(paid), 0)::bigint FROM requests WHERE account_id = $1),
                        (SELECT count(*) FROM requests
                          WHERE account_id = $1 AND paid + free > 0
                            AND status NOT BETWEEN 200 AND 299)",
                &[&account.0],
            )
            .await
            .map_err(db_error)?;
        Ok(Audit {
            balance: row
                .get::<_, Option<i64>>(0)
                .ok_or_else(|| missing_account(account))?,
            credits_added: row.get(1),
            paid: row.get(2),
            charged_failures: row.get(3),
        })
    }

    async fn take_rate(
        &self,
        account: AccountId,
        now_ms: i64,
        interval_ms: i64,
        tolerance_ms: i64,
    ) -> StoreResult<RateTaken> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO rate_limits AS r (account_id, tat_ms) VALUES ($1, $2::bigint + $3::bigint)
                 ON CONFLICT (account_id) DO UPDATE
                    SET tat_ms = greatest(r.tat_ms, $2::bigint) + $3::bigint
                  WHERE greatest(r.tat_ms, $2::bigint) - $2::bigint <= $4::bigint
                 RETURNING tat_ms",
            )
            .await
            .map_err(db_error)?;
        let taken = client
            .query_opt(
                &statement,
                &[&account.0, &now_ms, &interval_ms, &tolerance_ms],
            )
            .await
            .map_err(db_error)?;
        if let Some(row) = taken {
            return Ok(RateTaken {
                allowed: true,
                tat_ms: row.get(0),
            });
        }
        let row = client
            .query_one(
                "SELECT tat_ms FROM rate_limits WHERE account_id = $1",
                &[&account.0],
            )
            .await
            .map_err(db_error)?;
        Ok(RateTaken {
            allowed: false,
            tat_ms: row.get(0),
        })
    }
}

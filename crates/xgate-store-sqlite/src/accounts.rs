//! [`AccountStore`] on SQLite. Every write is one transaction on the single writer connection,
//! so the read-check-write of a charge cannot interleave with another.

use std::collections::hash_map::Entry as Slot;
use std::sync::Arc;

use async_trait::async_trait;
use foldhash::HashMap;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use xgate_store::accounts::RequestId as Id;
use xgate_store::accounts::{
    Account, AccountId, AccountStore, AccountTerms, Audit, KeyAuth, KeyId, KeyInfo, KeySelector,
    NewKey, RateTaken, Recorded, RequestRecord, Split, StoredResponse, UsageDay, UsageRow,
};
use xgate_store::journal::{ChargeJournal, Mark};
use xgate_store::{StoreError, StoreResult};

use crate::SqliteStore;
use crate::ledger::{self, Entry, RequestId};

const ACCOUNT_COLUMNS: &str =
    "id, name, balance, free_allowance, free_used, free_period, rate_limit, created_ms";
const KEY_COLUMNS: &str = "k.id, a.name, k.prefix, k.label, k.created_ms, k.last_used_ms, \
                           k.revoked_ms";

fn account_row(row: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: AccountId(row.get(0)?),
        name: row.get(1)?,
        balance: row.get(2)?,
        free_allowance: row.get(3)?,
        free_used: row.get(4)?,
        free_period: row.get(5)?,
        rate_limit: row.get(6)?,
        created_ms: row.get(7)?,
    })
}

fn key_row(row: &Row<'_>) -> rusqlite::Result<KeyInfo> {
    Ok(KeyInfo {
        id: KeyId(row.get(0)?),
        account: row.get(1)?,
        prefix: row.get(2)?,
        label: row.get(3)?,
        created_ms: row.get(4)?,
        last_used_ms: row.get(5)?,
        revoked_ms: row.get(6)?,
    })
}

fn account_by_id(conn: &Connection, id: AccountId) -> rusqlite::Result<Option<Account>> {
    conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"
    ))?
    .query_row([id.0], account_row)
    .optional()
}

fn key_by_id(conn: &Connection, id: KeyId) -> rusqlite::Result<Option<KeyInfo>> {
    conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id
          WHERE k.id = ?1"
    ))?
    .query_row([id.0], key_row)
    .optional()
}

fn missing_account(id: AccountId) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTFOUND),
        Some(format!("no account with id {}", id.0)),
    )
}

fn immediate(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// Applies one batch of request records; see [`AccountStore::record`].
///
/// Ids minted by this process ([`Id::Minted`]) are unique by construction and are written
/// without a look at the ids before them: claiming them in `request_ids` cost a charge 2.8k
/// instructions and 4–5 of a commit's 10 WAL frames (docs/BENCHMARKS.md). Every other id is
/// claimed there. The batch is first written as if every such id in it were new, claimed in a
/// few multi-row `INSERT`s; an id that `ON CONFLICT` skipped (recorded before, or twice in the
/// batch), or a refused request with an id of its own (a retry of one recorded before is a
/// duplicate, not a refusal), rolls that attempt back, and the batch is written again a request
/// at a time, so the duplicate is found and charged nothing.
///
/// `mark`, when given, is written in the same transaction: the charge journal's entries before
/// it are then in the ledger (`xgate_store::journal`).
pub(crate) fn record_batch(
    conn: &mut Connection,
    batch: &[RequestRecord],
    month: &str,
    mark: Option<Mark>,
) -> rusqlite::Result<Vec<Recorded>> {
    match record_new(conn, batch, month, mark)? {
        Some(outcomes) => Ok(outcomes),
        None => record_row_by_row(conn, batch, month, mark),
    }
}

/// The store's mark of its charge journal, if it has one.
pub(crate) fn journal_mark(conn: &Connection) -> rusqlite::Result<Option<Mark>> {
    conn.query_row(
        "SELECT journal, folded FROM charge_journal WHERE only = 1",
        [],
        |row| {
            let id: Vec<u8> = row.get(0)?;
            let folded: i64 = row.get(1)?;
            Ok((id, folded))
        },
    )
    .optional()?
    .map(|(id, folded)| {
        let id = <[u8; 16]>::try_from(id.as_slice()).map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                Type::Blob,
                "a journal id of 16 bytes".into(),
            )
        })?;
        let folded = u64::try_from(folded).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, Type::Integer, Box::new(e))
        })?;
        Ok(Mark { id, folded })
    })
    .transpose()
}

/// Records the charge journal's entries `unfolded` (numbered, in order) a month's run at a time,
/// each run's transaction moving `journal`'s mark past its last entry, so that a crash between two
/// runs records neither twice. Each entry's free allowance is that of the month it was served in.
/// With nothing to record, the mark (a new journal's) is written alone.
pub(crate) fn record_unfolded(
    conn: &mut Connection,
    unfolded: &[(u64, RequestRecord)],
    journal: &ChargeJournal,
) -> rusqlite::Result<()> {
    if unfolded.is_empty() {
        let tx = immediate(conn)?;
        write_mark(&tx, Some(journal.mark(journal.next())))?;
        return tx.commit();
    }
    for run in unfolded.chunk_by(|(_, a), (_, b)| month_of(a.at_ms) == month_of(b.at_ms)) {
        let records: Vec<RequestRecord> = run.iter().map(|(_, record)| record.clone()).collect();
        let after = run.last().map_or(0, |(n, _)| n + 1);
        let month = month_of(records[0].at_ms);
        let outcomes = record_batch(conn, &records, &month, Some(journal.mark(after)))?;
        let refused = outcomes
            .iter()
            .filter(|outcome| !matches!(outcome, Recorded::Done { .. }))
            .count();
        if refused > 0 {
            tracing::warn!(
                refused,
                "charges answered by a stopped server that their accounts could not cover: \
                 served uncharged"
            );
        }
    }
    Ok(())
}

/// The UTC month of `ms`, `YYYY-MM`, as free allowances are counted.
fn month_of(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m")
        .to_string()
}

fn write_mark(tx: &Connection, mark: Option<Mark>) -> rusqlite::Result<()> {
    let Some(mark) = mark else {
        return Ok(());
    };
    let folded = i64::try_from(mark.folded)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached(
        "INSERT INTO charge_journal (only, journal, folded) VALUES (1, ?1, ?2)
         ON CONFLICT (only) DO UPDATE SET journal = excluded.journal, folded = excluded.folded",
    )?
    .execute(params![&mark.id[..], folded])?;
    Ok(())
}

/// Records `batch` in one transaction with its request ids claimed in multi-row `INSERT`s;
/// `None`, with nothing written, if any of its request ids was already in the ledger.
fn record_new(
    conn: &mut Connection,
    batch: &[RequestRecord],
    month: &str,
    mark: Option<Mark>,
) -> rusqlite::Result<Option<Vec<Recorded>>> {
    let tx = immediate(conn)?;
    let mut books = Books::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut rows = Vec::with_capacity(batch.len());
    for rec in batch {
        let account = books.account(&tx, rec.account)?;
        match account.split(rec.cost, month) {
            Ok(split) => {
                outcomes.push(account.apply(split, month));
                rows.push((rec, split, ledger_id(&rec.request_id)));
            }
            // A refused request with an id of its own may be a retry of one recorded before,
            // which is a duplicate rather than a refusal: the row-by-row pass tells.
            Err(_) if matches!(rec.request_id, Id::Given(_)) => return Ok(None),
            Err(refused) => outcomes.push(refused),
        }
    }
    let given: Vec<RequestId<'_>> = rows
        .iter()
        .filter(|(rec, _, _)| matches!(rec.request_id, Id::Given(_)))
        .map(|(_, _, id)| *id)
        .collect();
    if ledger::claim_ids(&tx, &given)? < given.len() {
        // Dropping the transaction rolls it back.
        return Ok(None);
    }
    for (rec, _, _) in &rows {
        books.recorded(&tx, rec)?;
    }
    write_rows(&tx, &rows)?;
    books.write(&tx)?;
    write_mark(&tx, mark)?;
    tx.commit()?;
    Ok(Some(outcomes))
}

/// Records `batch` a request at a time, so that a request id already recorded is found,
/// answered [`Recorded::Duplicate`] and charged nothing.
fn record_row_by_row(
    conn: &mut Connection,
    batch: &[RequestRecord],
    month: &str,
    mark: Option<Mark>,
) -> rusqlite::Result<Vec<Recorded>> {
    let tx = immediate(conn)?;
    let mut books = Books::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut rows = Vec::with_capacity(batch.len());
    for rec in batch {
        // A request recorded before is a duplicate whatever its account holds now; an id is
        // claimed only once its charge is certain, so a refused request can come back.
        let id = ledger_id(&rec.request_id);
        let given = matches!(rec.request_id, Id::Given(_));
        if given && ledger::is_claimed(&tx, &id)? {
            outcomes.push(Recorded::Duplicate);
            continue;
        }
        let account = books.account(&tx, rec.account)?;
        let split = match account.split(rec.cost, month) {
            Ok(split) => split,
            Err(refused) => {
                outcomes.push(refused);
                continue;
            }
        };
        if given {
            ledger::claim_ids(&tx, &[id])?;
        }
        outcomes.push(account.apply(split, month));
        books.recorded(&tx, rec)?;
        rows.push((rec, split, id));
    }
    write_rows(&tx, &rows)?;
    books.write(&tx)?;
    write_mark(&tx, mark)?;
    tx.commit()?;
    Ok(outcomes)
}

/// A record's id as the ledger keeps it.
fn ledger_id(id: &Id) -> RequestId<'_> {
    match id {
        Id::Minted(minted) => RequestId::Uuid(minted.bytes()),
        Id::Given(text) => RequestId::of(text),
    }
}

/// A request to write to the ledger: its record, its split of the charge, its id.
type LedgerRow<'a> = (&'a RequestRecord, Split, RequestId<'a>);

/// Writes the ledger rows of `rows`, numbered on from the ledger's last `seq`: a chunk for each
/// account, its requests in the batch's order.
fn write_rows(tx: &Connection, rows: &[LedgerRow<'_>]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut seq = ledger::last_seq(tx)?;
    let mut order: Vec<&LedgerRow<'_>> = rows.iter().collect();
    // Stable: an account's requests keep their order. Usually one account, already sorted.
    order.sort_by_key(|(rec, _, _)| rec.account);
    for group in order.chunk_by(|(a, _, _), (b, _, _)| a.account == b.account) {
        let entries: Vec<Entry<'_>> = group
            .iter()
            .map(|(rec, split, id)| {
                seq += 1;
                Entry {
                    seq,
                    id: *id,
                    key_id: rec.key.0,
                    at_ms: rec.at_ms,
                    endpoint: &rec.endpoint,
                    status: i64::from(rec.status),
                    cost: rec.cost,
                    paid: split.paid,
                    free: split.free,
                    latency_us: rec.latency_us,
                }
            })
            .collect();
        ledger::write_chunk(tx, group[0].0.account.0, &entries)?;
    }
    Ok(())
}

/// The accounts a batch touches, as its charges leave them, and when each key was last used;
/// by this store's own ids, so hashed with a fast hash, not SipHash.
#[derive(Default)]
struct Books {
    accounts: HashMap<AccountId, Account>,
    last_used: HashMap<KeyId, i64>,
}

impl Books {
    /// The account as the batch has left it so far, read from the store the first time.
    fn account(&mut self, tx: &Connection, id: AccountId) -> rusqlite::Result<&mut Account> {
        Ok(match self.accounts.entry(id) {
            Slot::Occupied(entry) => entry.into_mut(),
            Slot::Vacant(entry) => {
                entry.insert(account_by_id(tx, id)?.ok_or_else(|| missing_account(id))?)
            }
        })
    }

    /// What goes with a request's ledger row: its response kept for its `Idempotency-Key`, and
    /// its key's last use.
    fn recorded(&mut self, tx: &Connection, rec: &RequestRecord) -> rusqlite::Result<()> {
        if let Some(kept) = &rec.idempotency {
            let (key, response) = &**kept;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO idempotency
                     (account_id, key, request_hash, status, body, request_id, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                rec.account.0,
                key,
                &response.request_hash[..],
                response.status,
                response.body,
                response.request_id,
                response.created_ms,
            ])?;
        }
        let used = self.last_used.entry(rec.key).or_insert(rec.at_ms);
        *used = (*used).max(rec.at_ms);
        Ok(())
    }

    /// Writes the accounts' balances and the keys' last use.
    fn write(self, tx: &Connection) -> rusqlite::Result<()> {
        let mut update = tx.prepare_cached(
            "UPDATE accounts SET balance = ?2, free_used = ?3, free_period = ?4 WHERE id = ?1",
        )?;
        for account in self.accounts.values() {
            update.execute(params![
                account.id.0,
                account.balance,
                account.free_used,
                account.free_period
            ])?;
        }
        let mut touch = tx.prepare_cached(
            // At most once a minute per key: `last used` is for people, and rewriting the keys'
            // page in every commit would cost the hot path a page write.
            "UPDATE api_keys SET last_used_ms = ?2
              WHERE id = ?1 AND coalesce(last_used_ms, 0) < ?2 - 60000",
        )?;
        for (key, at) in self.last_used {
            touch.execute(params![key.0, at])?;
        }
        Ok(())
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn ensure_account(&self, name: &str, now_ms: i64) -> StoreResult<Account> {
        let name = name.to_owned();
        self.write(move |conn| {
            let tx = immediate(conn)?;
            tx.execute(
                "INSERT INTO accounts (name, created_ms) VALUES (?1, ?2)
                 ON CONFLICT (name) DO NOTHING",
                params![name, now_ms],
            )?;
            let account = tx.query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?1"),
                [&name],
                account_row,
            )?;
            tx.commit()?;
            Ok(account)
        })
        .await
    }

    async fn account_by_name(&self, name: &str) -> StoreResult<Option<Account>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?1"
            ))?
            .query_row([name], account_row)
            .optional()
        })
    }

    async fn account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        self.read(|conn| account_by_id(conn, id))
    }

    async fn add_credits(
        &self,
        id: AccountId,
        amount: i64,
        note: &str,
        now_ms: i64,
    ) -> StoreResult<Account> {
        let note = note.to_owned();
        self.write(move |conn| {
            let tx = immediate(conn)?;
            tx.execute(
                "INSERT INTO credit_grants (account_id, amount, note, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![id.0, amount, note, now_ms],
            )?;
            let changed = tx.execute(
                "UPDATE accounts SET balance = balance + ?2 WHERE id = ?1",
                params![id.0, amount],
            )?;
            if changed == 0 {
                return Err(missing_account(id));
            }
            let account = account_by_id(&tx, id)?.ok_or_else(|| missing_account(id))?;
            tx.commit()?;
            Ok(account)
        })
        .await
    }

    async fn set_terms(&self, id: AccountId, terms: AccountTerms) -> StoreResult<Account> {
        self.write(move |conn| {
            let tx = immediate(conn)?;
            if let Some(allowance) = terms.free_allowance {
                tx.execute(
                    "UPDATE accounts SET free_allowance = ?2 WHERE id = ?1",
                    params![id.0, allowance],
                )?;
            }
            if let Some(limit) = terms.rate_limit {
                tx.execute(
                    "UPDATE accounts SET rate_limit = ?2 WHERE id = ?1",
                    params![id.0, limit],
                )?;
            }
            let account = account_by_id(&tx, id)?.ok_or_else(|| missing_account(id))?;
            tx.commit()?;
            Ok(account)
        })
        .await
    }

    async fn insert_key(
        &self,
        account: AccountId,
        key: NewKey,
        now_ms: i64,
    ) -> StoreResult<KeyInfo> {
        self.write(move |conn| {
            let tx = immediate(conn)?;
            tx.execute(
                "INSERT INTO api_keys (account_id, hash, prefix, label, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![account.0, &key.hash[..], key.prefix, key.label, now_ms],
            )?;
            let info = key_by_id(&tx, KeyId(tx.last_insert_rowid()))?
                .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            tx.commit()?;
            Ok(info)
        })
        .await
    }

    async fn key_by_hash(&self, hash: [u8; 32]) -> StoreResult<Option<KeyAuth>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT k.id, k.account_id, k.revoked_ms, a.rate_limit
                   FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.hash = ?1",
            )?
            .query_row([&hash[..]], |row| {
                Ok(KeyAuth {
                    key_id: KeyId(row.get(0)?),
                    account_id: AccountId(row.get(1)?),
                    revoked: row.get::<_, Option<i64>>(2)?.is_some(),
                    rate_limit: row.get(3)?,
                })
            })
            .optional()
        })
    }

    async fn list_keys(&self) -> StoreResult<Vec<KeyInfo>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id
                  ORDER BY a.name, k.id"
            ))?
            .query_map([], key_row)?
            .collect()
        })
    }

    async fn revoke_key(&self, key: KeySelector, now_ms: i64) -> StoreResult<Option<KeyInfo>> {
        self.write(move |conn| {
            let tx = immediate(conn)?;
            let id: Option<i64> = match key {
                KeySelector::Id(id) => tx
                    .query_row("SELECT id FROM api_keys WHERE id = ?1", [id.0], |r| {
                        r.get(0)
                    })
                    .optional()?,
                KeySelector::Hash(hash) => tx
                    .query_row(
                        "SELECT id FROM api_keys WHERE hash = ?1",
                        [&hash[..]],
                        |r| r.get(0),
                    )
                    .optional()?,
            };
            let Some(id) = id else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE api_keys SET revoked_ms = coalesce(revoked_ms, ?2) WHERE id = ?1",
                params![id, now_ms],
            )?;
            let info = key_by_id(&tx, KeyId(id))?;
            tx.commit()?;
            Ok(info)
        })
        .await
    }

    async fn record(&self, batch: Vec<RequestRecord>, month: &str) -> StoreResult<Vec<Recorded>> {
        let month = month.to_owned();
        self.write_here(move |conn| record_batch(conn, &batch, &month, None))
            .await
    }

    fn charge_journal(&self) -> Option<Arc<ChargeJournal>> {
        self.journal.clone()
    }

    async fn record_folding(
        &self,
        batch: Vec<RequestRecord>,
        month: &str,
        folded: u64,
    ) -> StoreResult<Vec<Recorded>> {
        let Some(journal) = &self.journal else {
            return Err(StoreError::Backend(
                "this store has no charge journal open".into(),
            ));
        };
        let mark = journal.mark(folded);
        let month = month.to_owned();
        self.write_here(move |conn| record_batch(conn, &batch, &month, Some(mark)))
            .await
    }

    async fn idempotent_response(
        &self,
        account: AccountId,
        key: &str,
        not_before_ms: i64,
    ) -> StoreResult<Option<StoredResponse>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT request_hash, status, body, request_id, created_ms FROM idempotency
                  WHERE account_id = ?1 AND key = ?2 AND created_ms >= ?3",
            )?
            .query_row(params![account.0, key, not_before_ms], |row| {
                let hash: Vec<u8> = row.get(0)?;
                Ok(StoredResponse {
                    request_hash: hash.try_into().unwrap_or([0; 32]),
                    status: row.get(1)?,
                    body: row.get(2)?,
                    request_id: row.get(3)?,
                    created_ms: row.get(4)?,
                })
            })
            .optional()
        })
    }

    async fn expire_idempotency(&self, before_ms: i64) -> StoreResult<u64> {
        self.write(move |conn| {
            conn.execute("DELETE FROM idempotency WHERE created_ms < ?1", [before_ms])
                .map(|n| n as u64)
        })
        .await
    }

    async fn usage(
        &self,
        account: AccountId,
        since_ms: i64,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<UsageRow>> {
        self.read(|conn| {
            ledger::usage(
                conn,
                account.0,
                since_ms,
                before_seq.unwrap_or(i64::MAX),
                limit,
            )
        })
    }

    async fn usage_by_day(&self, account: AccountId, since_ms: i64) -> StoreResult<Vec<UsageDay>> {
        self.read(|conn| ledger::usage_by_day(conn, account.0, since_ms))
    }

    async fn audit(&self, account: AccountId) -> StoreResult<Audit> {
        self.read(|conn| {
            // One read transaction, so the three figures describe the same moment.
            conn.execute_batch("BEGIN")?;
            let audit = ledger::audit(conn, account.0);
            conn.execute_batch("COMMIT")?;
            audit
        })
    }

    async fn take_rate(
        &self,
        account: AccountId,
        now_ms: i64,
        interval_ms: i64,
        tolerance_ms: i64,
    ) -> StoreResult<RateTaken> {
        self.write(move |conn| {
            let taken: Option<i64> = conn
                .prepare_cached(
                    "INSERT INTO rate_limits AS r (account_id, tat_ms) VALUES (?1, ?2 + ?3)
                     ON CONFLICT (account_id) DO UPDATE SET tat_ms = max(r.tat_ms, ?2) + ?3
                      WHERE max(r.tat_ms, ?2) - ?2 <= ?4
                     RETURNING tat_ms",
                )?
                .query_row(params![account.0, now_ms, interval_ms, tolerance_ms], |r| {
                    r.get(0)
                })
                .optional()?;
            match taken {
                Some(tat_ms) => Ok(RateTaken {
                    allowed: true,
                    tat_ms,
                }),
                None => conn
                    .query_row(
                        "SELECT tat_ms FROM rate_limits WHERE account_id = ?1",
                        [account.0],
                        |r| r.get(0),
                    )
                    .map(|tat_ms| RateTaken {
                        allowed: false,
                        tat_ms,
                    }),
            }
        })
        .await
    }
}

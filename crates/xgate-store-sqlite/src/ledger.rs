//! The request log and ledger on SQLite, packed: one row ("a chunk") per account and commit,
//! holding that commit's requests of the account in `seq` order, encoded compactly.
//!
//! A row per request wrote three B-trees a charge (the table, its unique request id, its index by
//! account): 8.7k of SQLite's instructions a row and 12 of a commit's 14 WAL frames, at 150 bytes
//! a request (docs/BENCHMARKS.md, "The ledger packed"). A chunk is one row of one B-tree and an
//! entry in its index by account, about 27 bytes a request. Request ids that did not come from
//! this process's generator (a test's, a copy's) also go in a B-tree of their own,
//! `request_ids`, which makes "such an id is recorded at most once" hold across commits and
//! processes; ids the serving process minted are unique by construction
//! (`xgate_store::accounts::MintedId`) and are written to their chunk only.
//!
//! `request_chunks.seq` is the `seq` of a chunk's first request, `last_seq` its last. Chunks'
//! ranges never overlap and rise with `seq`, so the ledger's last `seq` is the last chunk's
//! `last_seq`: a commit numbers its requests from there, an account's run after another's.
//!
//! A chunk's `records` is a format byte ([`FORMAT`]) and then a [`Chunk`] in postcard's wire
//! format (integers as varints): stable, documented, and read back without copying its strings.

use std::borrow::Cow;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, params};
use serde::{Deserialize, Serialize};
use xgate_store::accounts::{Audit, UsageDay, UsageRow};
use xgate_store::transfer::RequestRow;

/// The first byte of every chunk: the version of the layout that follows.
const FORMAT: u8 = 1;
/// Requests a chunk holds at most when rows are loaded (a copy, a migration); a commit's chunk
/// holds what the commit has of its account.
const LOAD_CHUNK: usize = 256;

/// One ledger row, whatever it is read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    pub seq: i64,
    pub id: RequestId<'a>,
    pub key_id: i64,
    pub at_ms: i64,
    pub endpoint: &'a str,
    pub status: i64,
    pub cost: i64,
    pub paid: i64,
    pub free: i64,
    pub latency_us: i64,
}

impl Entry<'_> {
    pub fn usage_row(&self) -> UsageRow {
        UsageRow {
            seq: self.seq,
            request_id: self.id.text().into_owned(),
            at_ms: self.at_ms,
            endpoint: self.endpoint.to_owned(),
            status: u16::try_from(self.status).unwrap_or(0),
            cost: self.cost,
            paid: self.paid,
            free: self.free,
            latency_us: self.latency_us,
        }
    }

    pub fn request_row(&self, account_id: i64) -> RequestRow {
        RequestRow {
            seq: self.seq,
            request_id: self.id.text().into_owned(),
            account_id,
            key_id: self.key_id,
            at_ms: self.at_ms,
            endpoint: self.endpoint.to_owned(),
            status: self.status,
            cost: self.cost,
            paid: self.paid,
            free: self.free,
            latency_us: self.latency_us,
        }
    }

    fn succeeded(&self) -> bool {
        (200..=299).contains(&self.status)
    }
}

/// A chunk as stored after its format byte.
#[derive(Serialize, Deserialize)]
struct Chunk<'a> {
    /// Every request's `at_ms` is stored as its difference from this (the first request's).
    base_ms: i64,
    /// The endpoints the chunk's requests name, each once.
    #[serde(borrow)]
    endpoints: Vec<&'a str>,
    #[serde(borrow)]
    records: Vec<Packed<'a>>,
}

#[derive(Serialize, Deserialize)]
struct Packed<'a> {
    /// `seq` less the previous request's (the first request's: less the chunk's `seq`).
    seq_step: u64,
    #[serde(borrow)]
    id: RequestId<'a>,
    key_id: i64,
    at_ms: i64,
    /// Index into the chunk's `endpoints`.
    endpoint: u32,
    status: i64,
    cost: i64,
    paid: i64,
    free: i64,
    latency_us: i64,
}

/// A request id: this server's own are UUIDs, kept as their 16 bytes; any other text as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RequestId<'a> {
    Uuid([u8; 16]),
    Text(&'a str),
}

impl<'a> RequestId<'a> {
    /// The compact form of `text`: a UUID only when it is spelt as this server spells one
    /// (lowercase, hyphenated), so that it reads back as the same text.
    pub fn of(text: &'a str) -> RequestId<'a> {
        if text.len() == uuid::fmt::Hyphenated::LENGTH
            && let Ok(id) = uuid::Uuid::try_parse(text)
        {
            let mut spelt = [0; uuid::fmt::Hyphenated::LENGTH];
            if id.hyphenated().encode_lower(&mut spelt).as_bytes() == text.as_bytes() {
                return RequestId::Uuid(id.into_bytes());
            }
        }
        RequestId::Text(text)
    }

    pub fn text(self) -> Cow<'a, str> {
        match self {
            RequestId::Uuid(bytes) => {
                Cow::Owned(uuid::Uuid::from_bytes(bytes).hyphenated().to_string())
            }
            RequestId::Text(text) => Cow::Borrowed(text),
        }
    }
}

/// As `request_ids.id` holds it: a UUID's 16 bytes as a BLOB, other ids as TEXT. SQLite never
/// takes a BLOB and a TEXT value for equal, so the two kinds cannot collide.
impl ToSql for RequestId<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            RequestId::Uuid(bytes) => ValueRef::Blob(bytes),
            RequestId::Text(text) => ValueRef::Text(text.as_bytes()),
        }))
    }
}

/// Why a chunk could not be written or read.
#[derive(Debug, thiserror::Error)]
enum ChunkError {
    #[error("a ledger chunk in an unknown format ({0})")]
    Format(u8),
    #[error("a ledger chunk names endpoint {0}, which it does not hold")]
    Endpoint(usize),
    #[error("ledger requests not in seq order")]
    Order,
    #[error("a ledger chunk that does not decode: {0}")]
    Postcard(#[from] postcard::Error),
}

fn unreadable(error: ChunkError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(error))
}

fn unwritable(error: ChunkError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(error))
}

/// Encodes `entries` (in `seq` order, the first at `first_seq`) as a chunk's `records`.
pub(crate) fn encode(first_seq: i64, entries: &[Entry<'_>]) -> rusqlite::Result<Vec<u8>> {
    let base_ms = entries.first().map_or(0, |e| e.at_ms);
    let mut endpoints: Vec<&str> = Vec::new();
    let mut records = Vec::with_capacity(entries.len());
    let mut previous = first_seq;
    for entry in entries {
        let endpoint = match endpoints.iter().position(|e| *e == entry.endpoint) {
            Some(index) => index,
            None => {
                endpoints.push(entry.endpoint);
                endpoints.len() - 1
            }
        };
        records.push(Packed {
            seq_step: entry
                .seq
                .checked_sub(previous)
                .and_then(|step| u64::try_from(step).ok())
                .ok_or_else(|| unwritable(ChunkError::Order))?,
            id: entry.id,
            key_id: entry.key_id,
            at_ms: entry.at_ms.wrapping_sub(base_ms),
            endpoint: u32::try_from(endpoint)
                .map_err(|_| unwritable(ChunkError::Endpoint(endpoint)))?,
            status: entry.status,
            cost: entry.cost,
            paid: entry.paid,
            free: entry.free,
            latency_us: entry.latency_us,
        });
        previous = entry.seq;
    }
    let chunk = Chunk {
        base_ms,
        endpoints,
        records,
    };
    let mut bytes = Vec::with_capacity(16 + 40 * entries.len());
    bytes.push(FORMAT);
    postcard::to_extend(&chunk, bytes).map_err(|e| unwritable(e.into()))
}

/// The requests of a chunk whose first `seq` is `first_seq`, in `seq` order.
pub(crate) fn decode(first_seq: i64, records: &[u8]) -> rusqlite::Result<Vec<Entry<'_>>> {
    let Some((&format, payload)) = records.split_first() else {
        return Err(unreadable(ChunkError::Format(0)));
    };
    if format != FORMAT {
        return Err(unreadable(ChunkError::Format(format)));
    }
    let chunk: Chunk<'_> = postcard::from_bytes(payload).map_err(|e| unreadable(e.into()))?;
    let mut seq = first_seq;
    chunk
        .records
        .into_iter()
        .map(|p| {
            seq = seq.wrapping_add_unsigned(p.seq_step);
            let endpoint = chunk
                .endpoints
                .get(p.endpoint as usize)
                .copied()
                .ok_or_else(|| unreadable(ChunkError::Endpoint(p.endpoint as usize)))?;
            Ok(Entry {
                seq,
                id: p.id,
                key_id: p.key_id,
                at_ms: p.at_ms.wrapping_add(chunk.base_ms),
                endpoint,
                status: p.status,
                cost: p.cost,
                paid: p.paid,
                free: p.free,
                latency_us: p.latency_us,
            })
        })
        .collect()
}

/// The `seq` of the ledger's last request (0 when it has none).
pub(crate) fn last_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT last_seq FROM request_chunks ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

/// Writes one chunk of `account`'s `entries`, numbered already and in `seq` order, all above
/// the ledger's last `seq`. Their request ids must have been claimed ([`claim_ids`]).
pub(crate) fn write_chunk(
    conn: &Connection,
    account: i64,
    entries: &[Entry<'_>],
) -> rusqlite::Result<()> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    let records = encode(first.seq, entries)?;
    conn.prepare_cached(
        "INSERT INTO request_chunks (seq, account_id, last_seq, records) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![first.seq, account, last.seq, records])?;
    Ok(())
}

/// Row counts of the multi-row `INSERT`s that claim request ids, largest first: a commit's ids
/// go in as few statements as these allow, each prepared once.
const CLAIM_ROWS: [usize; 4] = [64, 16, 4, 1];

fn claim_sql(rows: usize) -> String {
    let values: Vec<String> = (1..=rows).map(|i| format!("(?{i})")).collect();
    format!(
        "INSERT INTO request_ids (id) VALUES {} ON CONFLICT (id) DO NOTHING",
        values.join(", ")
    )
}

static CLAIM_SQL: std::sync::LazyLock<[String; CLAIM_ROWS.len()]> =
    std::sync::LazyLock::new(|| CLAIM_ROWS.map(claim_sql));

/// Whether `id` is taken already.
pub(crate) fn is_claimed(conn: &Connection, id: &RequestId<'_>) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM request_ids WHERE id = ?1")?
        .exists([id])
}

/// Records `ids` as taken; returns how many were new (fewer than `ids.len()` when one was
/// recorded before, or appears twice).
pub(crate) fn claim_ids(conn: &Connection, ids: &[RequestId<'_>]) -> rusqlite::Result<usize> {
    let mut claimed = 0;
    let mut rest = ids;
    for (&size, sql) in CLAIM_ROWS.iter().zip(CLAIM_SQL.iter()) {
        while rest.len() >= size {
            let (chunk, after) = rest.split_at(size);
            let mut insert = conn.prepare_cached(sql)?;
            for (i, id) in chunk.iter().enumerate() {
                insert.raw_bind_parameter(i + 1, id)?;
            }
            claimed += insert.raw_execute()?;
            rest = after;
        }
    }
    Ok(claimed)
}

/// Writes ledger rows that carry their own `seq` (a copy, a migration), in `seq` order: runs of
/// one account's rows become chunks. Rows at or below the ledger's last `seq`, and rows whose
/// request id is already recorded, are skipped.
pub(crate) fn load(conn: &Connection, rows: &[RequestRow]) -> rusqlite::Result<()> {
    let mut last = last_seq(conn)?;
    let mut run: Vec<Entry<'_>> = Vec::new();
    let mut run_account = None;
    for row in rows {
        let id = RequestId::of(&row.request_id);
        if row.seq <= last || claim_ids(conn, &[id])? == 0 {
            continue;
        }
        if run_account != Some(row.account_id) || run.len() >= LOAD_CHUNK {
            if let Some(account) = run_account {
                write_chunk(conn, account, &run)?;
            }
            run.clear();
            run_account = Some(row.account_id);
        }
        run.push(Entry {
            seq: row.seq,
            id,
            key_id: row.key_id,
            at_ms: row.at_ms,
            endpoint: &row.endpoint,
            status: row.status,
            cost: row.cost,
            paid: row.paid,
            free: row.free,
            latency_us: row.latency_us,
        });
        last = row.seq;
    }
    if let Some(account) = run_account {
        write_chunk(conn, account, &run)?;
    }
    Ok(())
}

/// Calls `each` with every chunk of `account` (`seq` below `before_seq`), newest first, until it
/// answers `false`.
fn account_chunks(
    conn: &Connection,
    account: i64,
    before_seq: i64,
    mut each: impl FnMut(Vec<Entry<'_>>) -> bool,
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "SELECT seq, records FROM request_chunks
          WHERE account_id = ?1 AND seq < ?2 ORDER BY seq DESC",
    )?;
    let mut rows = statement.query(params![account, before_seq])?;
    while let Some(row) = rows.next()? {
        let first: i64 = row.get(0)?;
        let records = row.get_ref(1)?.as_blob()?;
        if !each(decode(first, records)?) {
            break;
        }
    }
    Ok(())
}

/// The request log of `account`, newest first, from `since_ms`, before `before_seq`.
pub(crate) fn usage(
    conn: &Connection,
    account: i64,
    since_ms: i64,
    before_seq: i64,
    limit: usize,
) -> rusqlite::Result<Vec<UsageRow>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    account_chunks(conn, account, before_seq, |entries| {
        for entry in entries.iter().rev() {
            if entry.seq < before_seq && entry.at_ms >= since_ms {
                out.push(entry.usage_row());
                if out.len() == limit {
                    return false;
                }
            }
        }
        true
    })?;
    Ok(out)
}

/// The request log of `account` from `since_ms`, summed by UTC day, newest first.
pub(crate) fn usage_by_day(
    conn: &Connection,
    account: i64,
    since_ms: i64,
) -> rusqlite::Result<Vec<UsageDay>> {
    let mut days: std::collections::BTreeMap<i64, UsageDay> = std::collections::BTreeMap::new();
    account_chunks(conn, account, i64::MAX, |entries| {
        for entry in entries.iter().filter(|e| e.at_ms >= since_ms) {
            let day_number = entry.at_ms.div_euclid(86_400_000);
            let day = days.entry(day_number).or_insert_with(|| UsageDay {
                day: day_text(entry.at_ms),
                requests: 0,
                succeeded: 0,
                credits: 0,
            });
            day.requests += 1;
            day.succeeded += i64::from(entry.succeeded());
            day.credits += entry.paid + entry.free;
        }
        true
    })?;
    Ok(days.into_values().rev().collect())
}

/// `YYYY-MM-DD` of the UTC day `at_ms` falls in.
fn day_text(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// What `account`'s ledger rows add up to: credits paid, and charges of failed requests.
pub(crate) fn audit_rows(conn: &Connection, account: i64) -> rusqlite::Result<(i64, i64)> {
    let (mut paid, mut charged_failures) = (0, 0);
    account_chunks(conn, account, i64::MAX, |entries| {
        for entry in &entries {
            paid += entry.paid;
            charged_failures += i64::from(entry.paid + entry.free > 0 && !entry.succeeded());
        }
        true
    })?;
    Ok((paid, charged_failures))
}

/// Up to `limit` ledger rows with `seq` above `after`, in order, with their accounts. Chunks do
/// not overlap, so only the last one starting at or below `after` can hold rows above it: the
/// scan starts there, on the rowid, rather than at the ledger's first chunk.
pub(crate) fn rows_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<RequestRow>> {
    let mut out = Vec::new();
    let mut statement = conn.prepare_cached(
        "SELECT seq, account_id, records FROM request_chunks
          WHERE seq >= coalesce((SELECT max(seq) FROM request_chunks WHERE seq <= ?1), ?1)
          ORDER BY seq",
    )?;
    let mut rows = statement.query([after])?;
    while out.len() < limit
        && let Some(row) = rows.next()?
    {
        let (first, account): (i64, i64) = (row.get(0)?, row.get(1)?);
        for entry in decode(first, row.get_ref(2)?.as_blob()?)? {
            if entry.seq > after && out.len() < limit {
                out.push(entry.request_row(account));
            }
        }
    }
    Ok(out)
}

/// The whole ledger's row count, credits paid, and last `seq`.
pub(crate) fn totals(conn: &Connection) -> rusqlite::Result<(u64, i64, i64)> {
    let (mut count, mut paid) = (0, 0);
    let mut statement = conn.prepare_cached("SELECT seq, records FROM request_chunks")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        for entry in decode(row.get(0)?, row.get_ref(1)?.as_blob()?)? {
            count += 1;
            paid += entry.paid;
        }
    }
    Ok((count, paid, last_seq(conn)?))
}

/// The books of `account` in one read transaction, so the three figures describe one moment.
pub(crate) fn audit(conn: &Connection, account: i64) -> rusqlite::Result<Audit> {
    let balance = conn.query_row(
        "SELECT balance FROM accounts WHERE id = ?1",
        [account],
        |r| r.get(0),
    )?;
    let credits_added = conn.query_row(
        "SELECT coalesce(sum(amount), 0) FROM credit_grants WHERE account_id = ?1",
        [account],
        |r| r.get(0),
    )?;
    let (paid, charged_failures) = audit_rows(conn, account)?;
    Ok(Audit {
        balance,
        credits_added,
        paid,
        charged_failures,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A request id of any spelling, an endpoint, and the numbers of an entry.
    type Row = (u64, String, String, [i64; 8]);

    fn row_strategy() -> impl Strategy<Value = Row> {
        let id = prop_oneof![
            any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).hyphenated().to_string()),
            any::<u128>().prop_map(|n| {
                uuid::Uuid::from_u128(n)
                    .hyphenated()
                    .to_string()
                    .to_uppercase()
            }),
            any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).simple().to_string()),
            ".{0,40}",
        ];
        let endpoint = prop_oneof![
            Just("POST /user/medias/continuation".to_owned()),
            Just("GET /user/medias".to_owned()),
            ".{0,30}",
        ];
        (1..1_000u64, id, endpoint, any::<[i64; 8]>())
    }

    fn entry(seq: i64, (_, id, endpoint, n): &Row) -> Entry<'_> {
        Entry {
            seq,
            id: RequestId::of(id),
            key_id: n[0],
            at_ms: n[1],
            endpoint,
            status: n[2],
            cost: n[3],
            paid: n[4],
            free: n[5],
            latency_us: n[6],
        }
    }

    proptest! {
        /// Whatever a chunk holds (ids of any spelling, numbers at their extremes, gaps in seq),
        /// it reads back as written.
        #[test]
        fn a_chunk_reads_back_as_written(
            first in -1_000_000i64..1_000_000,
            rows in prop::collection::vec(row_strategy(), 1..80),
        ) {
            let mut seq = first;
            let entries: Vec<Entry<'_>> = rows
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    if i > 0 {
                        seq += row.0 as i64;
                    }
                    entry(seq, row)
                })
                .collect();
            let bytes = encode(first, &entries).unwrap();
            prop_assert_eq!(decode(first, &bytes).unwrap(), entries);
            for (written, row) in decode(first, &bytes).unwrap().iter().zip(&rows) {
                prop_assert_eq!(written.id.text(), row.1.as_str());
            }
        }

        /// A damaged chunk is an error, never a panic.
        #[test]
        fn any_bytes_decode_to_rows_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(1, &bytes);
        }
    }

    #[test]
    fn a_server_made_id_takes_its_16_bytes_and_any_other_spelling_stays_text() {
        let id = "019ae9a4-5c9d-7b3e-9a41-0c2f7d5e8b10";
        assert!(matches!(RequestId::of(id), RequestId::Uuid(_)));
        assert_eq!(RequestId::of(id).text(), id);
        for other in [
            "019AE9A4-5C9D-7B3E-9A41-0C2F7D5E8B10",
            "019ae9a45c9d7b3e9a410c2f7d5e8b10",
            "{019ae9a4-5c9d-7b3e-9a41-0c2f7d5e8b10}",
            "r-1",
            "",
        ] {
            assert_eq!(RequestId::of(other), RequestId::Text(other));
        }
    }

    #[test]
    fn a_chunk_of_an_unknown_format_is_refused() {
        let entry = Entry {
            seq: 1,
            id: RequestId::Text("r-1"),
            key_id: 1,
            at_ms: 2,
            endpoint: "GET /x",
            status: 200,
            cost: 1,
            paid: 1,
            free: 0,
            latency_us: 3,
        };
        let mut bytes = encode(1, std::slice::from_ref(&entry)).unwrap();
        assert_eq!(decode(1, &bytes).unwrap(), [entry]);
        bytes[0] = FORMAT + 1;
        assert!(decode(1, &bytes).is_err());
        assert!(decode(1, &[]).is_err());
    }
}

//! The embedded store's schemas: the tweets file's and the ledger file's, one migration a step,
//! each tracked in its file's `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};
use xgate_store::transfer::RequestRow;

use crate::{LEDGER, ledger};

/// Each entry moves the schema from version `i` to `i + 1`. Never edit a released entry: add one.
const MIGRATIONS: &[&str] = &[
    // 1: tweets with the columns the media timeline reads, users, settings.
    "
    -- Rows are stored in arrival order (the rowid), so bulk loads append to the table instead of
    -- rewriting pages all over it; only the narrow indexes take random inserts.
    -- tweet_id and user_id hold ids through xgate_store::sortable (order-preserving i64).
    CREATE TABLE tweets (
        id        INTEGER PRIMARY KEY,
        tweet_id  INTEGER NOT NULL UNIQUE,
        user_id   INTEGER NOT NULL,
        has_media INTEGER NOT NULL,
        json      TEXT NOT NULL
    );
    -- Each user's media tweets in id order, and nothing else: any page at any depth is one seek
    -- here plus a row lookup per tweet.
    CREATE INDEX tweets_media_timeline ON tweets (user_id, tweet_id) WHERE has_media = 1;

    -- The newest copy of each author's profile seen in a tweet.
    CREATE TABLE users (
        user_id          INTEGER PRIMARY KEY,
        username         TEXT,
        json             TEXT NOT NULL,
        profile_tweet_id INTEGER NOT NULL
    );

    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;
    ",
    // 2: accounts, keys, credits and the request ledger.
    "
    CREATE TABLE accounts (
        id             INTEGER PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        -- Purchased credits left: always the sum of credit_grants minus the sum of requests.paid.
        balance        INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
        free_allowance INTEGER NOT NULL DEFAULT 0 CHECK (free_allowance >= 0),
        free_used      INTEGER NOT NULL DEFAULT 0 CHECK (free_used >= 0),
        free_period    TEXT NOT NULL DEFAULT '',
        rate_limit     INTEGER CHECK (rate_limit > 0),
        created_ms     INTEGER NOT NULL
    );

    CREATE TABLE credit_grants (
        id         INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        amount     INTEGER NOT NULL CHECK (amount > 0),
        note       TEXT NOT NULL,
        at_ms      INTEGER NOT NULL
    );
    CREATE INDEX credit_grants_by_account ON credit_grants (account_id);

    -- Keys are stored as SHA-256 hashes only; prefix is for people to recognise a key.
    CREATE TABLE api_keys (
        id           INTEGER PRIMARY KEY,
        account_id   INTEGER NOT NULL REFERENCES accounts (id),
        hash         BLOB NOT NULL UNIQUE,
        prefix       TEXT NOT NULL,
        label        TEXT,
        created_ms   INTEGER NOT NULL,
        last_used_ms INTEGER,
        revoked_ms   INTEGER
    );

    -- The request log and ledger: a row per recorded request; cost > 0 rows are charges.
    CREATE TABLE requests (
        seq        INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        key_id     INTEGER NOT NULL REFERENCES api_keys (id),
        at_ms      INTEGER NOT NULL,
        endpoint   TEXT NOT NULL,
        status     INTEGER NOT NULL,
        cost       INTEGER NOT NULL CHECK (cost >= 0),
        paid       INTEGER NOT NULL CHECK (paid >= 0),
        free       INTEGER NOT NULL CHECK (free >= 0),
        latency_us INTEGER NOT NULL
    );
    CREATE INDEX requests_by_account ON requests (account_id, seq);

    CREATE TABLE idempotency (
        account_id   INTEGER NOT NULL REFERENCES accounts (id),
        key          TEXT NOT NULL,
        request_hash BLOB NOT NULL,
        status       INTEGER NOT NULL,
        body         BLOB NOT NULL,
        request_id   TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        PRIMARY KEY (account_id, key)
    );
    CREATE INDEX idempotency_by_age ON idempotency (created_ms);
    ",
    // 3: the read-through cache's notes per user (what was fetched upstream, and when).
    "
    CREATE TABLE upstream_sync (
        user_id INTEGER PRIMARY KEY,
        state   BLOB NOT NULL
    );
    ",
    // 4: rate limits shared by processes on one store (GCRA state per account).
    "
    CREATE TABLE rate_limits (
        account_id INTEGER PRIMARY KEY REFERENCES accounts (id),
        tat_ms     INTEGER NOT NULL
    );
    ",
    // 5: the tables of steps 2 and 4 go, now that the ledger file holds them (ledger step 2).
    // Children before parents, so no foreign key is ever left dangling.
    "
    DROP TABLE main.rate_limits;
    DROP TABLE main.idempotency;
    DROP TABLE main.requests;
    DROP TABLE main.api_keys;
    DROP TABLE main.credit_grants;
    DROP TABLE main.accounts;
    ",
    // 6: each distinct author object stored once. A tweet's row written since holds in `json`,
    // as a BLOB, the author's row here and where the author's text goes back in, then the tweet's
    // text without it (see `put_apart`); a row written before keeps the whole tweet as TEXT.
    // Pages put the two back together, to the byte.
    "
    CREATE TABLE authors (
        id     INTEGER PRIMARY KEY,
        -- The first 8 bytes of the SHA-256 of json, to find a text again.
        digest INTEGER NOT NULL,
        json   TEXT NOT NULL
    );
    CREATE INDEX authors_by_digest ON authors (digest);
    ",
];

/// The ledger file's schema, one migration a step, tracked in its own `user_version`: the tables
/// of accounts, keys, credits, the request ledger, idempotency and rate limits. They live in a
/// file of their own (attached as `ledger`) so that the commits of charges never touch the tweets
/// file: SQLite drops a connection's whole page cache when its file changed, and readers of pages
/// keep theirs.
const LEDGER_MIGRATIONS: &[LedgerStep] = &[
    // 1: the tables of main's migrations 2 and 4, unchanged.
    LedgerStep::Sql(
        "
    CREATE TABLE ledger.accounts (
        id             INTEGER PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        -- Purchased credits left: always the sum of credit_grants minus the sum of requests.paid.
        balance        INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
        free_allowance INTEGER NOT NULL DEFAULT 0 CHECK (free_allowance >= 0),
        free_used      INTEGER NOT NULL DEFAULT 0 CHECK (free_used >= 0),
        free_period    TEXT NOT NULL DEFAULT '',
        rate_limit     INTEGER CHECK (rate_limit > 0),
        created_ms     INTEGER NOT NULL
    );

    CREATE TABLE ledger.credit_grants (
        id         INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        amount     INTEGER NOT NULL CHECK (amount > 0),
        note       TEXT NOT NULL,
        at_ms      INTEGER NOT NULL
    );
    CREATE INDEX ledger.credit_grants_by_account ON credit_grants (account_id);

    -- Keys are stored as SHA-256 hashes only; prefix is for people to recognise a key.
    CREATE TABLE ledger.api_keys (
        id           INTEGER PRIMARY KEY,
        account_id   INTEGER NOT NULL REFERENCES accounts (id),
        hash         BLOB NOT NULL UNIQUE,
        prefix       TEXT NOT NULL,
        label        TEXT,
        created_ms   INTEGER NOT NULL,
        last_used_ms INTEGER,
        revoked_ms   INTEGER
    );

    -- The request log and ledger: a row per recorded request; cost > 0 rows are charges.
    CREATE TABLE ledger.requests (
        seq        INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        key_id     INTEGER NOT NULL REFERENCES api_keys (id),
        at_ms      INTEGER NOT NULL,
        endpoint   TEXT NOT NULL,
        status     INTEGER NOT NULL,
        cost       INTEGER NOT NULL CHECK (cost >= 0),
        paid       INTEGER NOT NULL CHECK (paid >= 0),
        free       INTEGER NOT NULL CHECK (free >= 0),
        latency_us INTEGER NOT NULL
    );
    CREATE INDEX ledger.requests_by_account ON requests (account_id, seq);

    CREATE TABLE ledger.idempotency (
        account_id   INTEGER NOT NULL REFERENCES accounts (id),
        key          TEXT NOT NULL,
        request_hash BLOB NOT NULL,
        status       INTEGER NOT NULL,
        body         BLOB NOT NULL,
        request_id   TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        PRIMARY KEY (account_id, key)
    );
    CREATE INDEX ledger.idempotency_by_age ON idempotency (created_ms);

    CREATE TABLE ledger.rate_limits (
        account_id INTEGER PRIMARY KEY REFERENCES accounts (id),
        tat_ms     INTEGER NOT NULL
    );
    ",
    ),
    // 2: what main held of these tables (stores of main's versions 2 to 4) copied in.
    LedgerStep::Sql(
        "
    INSERT INTO ledger.accounts SELECT * FROM main.accounts;
    INSERT INTO ledger.credit_grants SELECT * FROM main.credit_grants;
    INSERT INTO ledger.api_keys SELECT * FROM main.api_keys;
    INSERT INTO ledger.requests SELECT * FROM main.requests;
    INSERT INTO ledger.idempotency SELECT * FROM main.idempotency;
    INSERT INTO ledger.rate_limits SELECT * FROM main.rate_limits;
    ",
    ),
    // 3: the request ledger without foreign keys. Its account_id and key_id name rows of
    // accounts and api_keys, which are never deleted, and every row is written with the ids of
    // a key just read from those tables; checking both parents (two B-tree seeks a row) was an
    // eighth of a charge's write on a small ledger and a quarter on one of millions of rows
    // (docs/BENCHMARKS.md). The other tables keep theirs. The index by
    // account names the account only: an index entry ends with the rowid, which is seq, so it
    // orders an account's rows by seq as before, one number shorter.
    LedgerStep::Sql(
        "
    CREATE TABLE ledger.requests_new (
        seq        INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        account_id INTEGER NOT NULL,
        key_id     INTEGER NOT NULL,
        at_ms      INTEGER NOT NULL,
        endpoint   TEXT NOT NULL,
        status     INTEGER NOT NULL,
        cost       INTEGER NOT NULL CHECK (cost >= 0),
        paid       INTEGER NOT NULL CHECK (paid >= 0),
        free       INTEGER NOT NULL CHECK (free >= 0),
        latency_us INTEGER NOT NULL
    );
    INSERT INTO ledger.requests_new SELECT * FROM ledger.requests ORDER BY seq;
    DROP TABLE ledger.requests;
    ALTER TABLE ledger.requests_new RENAME TO requests;
    CREATE INDEX ledger.requests_by_account ON requests (account_id);
    ",
    ),
    // 4: the request ledger packed, a row per account and commit (crate::ledger): one B-tree of
    // chunks and its index by account, and the request ids in a B-tree of their own, instead of
    // three B-trees written a row per request. Every row moves, with its seq, in seq order.
    LedgerStep::SqlThen(
        "
    CREATE TABLE ledger.request_chunks (
        -- The seq of the chunk's first request; last_seq, of its last. Chunks never overlap.
        seq        INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL,
        last_seq   INTEGER NOT NULL CHECK (last_seq >= seq),
        records    BLOB NOT NULL
    );
    -- An entry ends with the rowid (seq): an account's chunks in seq order.
    CREATE INDEX ledger.request_chunks_by_account ON request_chunks (account_id);
    -- Every request id recorded: a UUID as its 16 bytes (a BLOB), any other id as TEXT.
    CREATE TABLE ledger.request_ids (id NOT NULL PRIMARY KEY) WITHOUT ROWID;
    ",
        pack_requests,
    ),
    // 5: the charge journal's mark (xgate_store::journal): the journal's id and the number of
    // its first entry not yet in the ledger, moved in the transaction that records entries.
    LedgerStep::Sql(
        "
    CREATE TABLE ledger.charge_journal (
        only    INTEGER PRIMARY KEY CHECK (only = 1),
        journal BLOB NOT NULL CHECK (length(journal) = 16),
        folded  INTEGER NOT NULL CHECK (folded >= 0)
    );
    ",
    ),
];

/// A step of the ledger file's schema.
enum LedgerStep {
    Sql(&'static str),
    /// SQL, then rows moved by code.
    SqlThen(&'static str, fn(&Connection) -> rusqlite::Result<()>),
}

impl LedgerStep {
    fn apply(&self, conn: &Connection) -> rusqlite::Result<()> {
        match self {
            LedgerStep::Sql(sql) => conn.execute_batch(sql),
            LedgerStep::SqlThen(sql, then) => {
                conn.execute_batch(sql)?;
                then(conn)
            }
        }
    }
}

/// The columns of `ledger.requests` (before step 4) as [`request_row`] reads them.
const REQUEST_COLUMNS: &str =
    "seq, request_id, account_id, key_id, at_ms, endpoint, status, cost, paid, free, latency_us";

fn request_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RequestRow> {
    Ok(RequestRow {
        seq: r.get(0)?,
        request_id: r.get(1)?,
        account_id: r.get(2)?,
        key_id: r.get(3)?,
        at_ms: r.get(4)?,
        endpoint: r.get(5)?,
        status: r.get(6)?,
        cost: r.get(7)?,
        paid: r.get(8)?,
        free: r.get(9)?,
        latency_us: r.get(10)?,
    })
}

/// Ledger step 4's move: the rows of `ledger.requests`, in seq order, into chunks of each
/// account's runs; then the table goes.
fn pack_requests(conn: &Connection) -> rusqlite::Result<()> {
    const PAGE: i64 = 10_000;
    let mut after = i64::MIN;
    loop {
        let rows: Vec<RequestRow> = conn
            .prepare_cached(&format!(
                "SELECT {REQUEST_COLUMNS} FROM ledger.requests
                  WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?
            .query_map([after, PAGE], request_row)?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        ledger::load(conn, &rows)?;
    }
    conn.execute_batch("DROP TABLE ledger.requests")
}

/// The main version whose store has the ledger's tables in main, ready to move.
const BEFORE_MOVE: usize = 4;

/// The main schema version this build writes.
pub const LATEST: usize = MIGRATIONS.len();
/// The ledger schema version this build writes.
pub const LEDGER_LATEST: usize = LEDGER_MIGRATIONS.len();

/// Brings both files' schemas up to [`LATEST`] and [`LEDGER_LATEST`]; the ledger must be attached
/// as `ledger`. Each step runs in an immediate transaction, so two processes opening a store at once
/// cannot both apply it.
///
/// Moving the ledger's tables out of an older store takes two commits, because in WAL mode a
/// transaction over two files is atomic per file only: the first copies the tables into the
/// ledger (and marks it so), the second drops main's copies. A crash between the two leaves both
/// copies and the mark, and the next open finishes with the second.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (main, ledger) = versions(&tx)?;
    if main > BEFORE_MOVE && ledger == 0 {
        return Err(refusal(
            "the store's ledger file (accounts, keys, credits and charges) is missing or empty; \
             restore it beside the store, named as the store with -ledger appended"
                .into(),
        ));
    }
    let main = run(&tx, &MIGRATIONS[..BEFORE_MOVE], main)?;
    // A store past the move has no copy in main: ledger step 2 is then a mark only.
    let moved = main > BEFORE_MOVE;
    for (done, step) in LEDGER_MIGRATIONS.iter().enumerate().skip(ledger) {
        if !(done == 1 && moved) {
            step.apply(&tx)?;
        }
        tx.pragma_update(Some(LEDGER), "user_version", done + 1)?;
    }
    tx.commit()?;

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (main, _) = versions(&tx)?;
    run(&tx, MIGRATIONS, main)?;
    tx.commit()
}

/// Applies main's `steps` past version `current`; returns main's version after.
fn run(tx: &Connection, steps: &[&str], current: usize) -> rusqlite::Result<usize> {
    for (done, step) in steps.iter().enumerate().skip(current) {
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", done + 1)?;
    }
    Ok(current.max(steps.len()))
}

/// Main's and the ledger's schema versions; a version newer than this build knows is refused.
fn versions(conn: &Connection) -> rusqlite::Result<(usize, usize)> {
    let main: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let ledger: usize = conn.pragma_query_value(Some(LEDGER), "user_version", |row| row.get(0))?;
    if main > LATEST || ledger > LEDGER_LATEST {
        return Err(refusal(format!(
            "the store has schema version {main}.{ledger}, newer than this xgate knows \
             ({LATEST}.{LEDGER_LATEST}); upgrade xgate"
        )));
    }
    Ok((main, ledger))
}

fn refusal(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
        Some(message),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The tables main held before the ledger file.
    const MOVED: [&str; 6] = [
        "accounts",
        "credit_grants",
        "api_keys",
        "requests",
        "idempotency",
        "rate_limits",
    ];
    /// The ledger file's tables now: `requests` packed into the last two.
    const LEDGER_TABLES: [&str; 8] = [
        "accounts",
        "api_keys",
        "charge_journal",
        "credit_grants",
        "idempotency",
        "rate_limits",
        "request_chunks",
        "request_ids",
    ];

    /// A store as xgate wrote it before the ledger file: main at step 4 with a row in each of
    /// the ledger's tables.
    fn older_store(path: &Path) {
        let conn = Connection::open(path).unwrap();
        for (done, step) in MIGRATIONS[..BEFORE_MOVE].iter().enumerate() {
            conn.execute_batch(step).unwrap();
            conn.pragma_update(None, "user_version", done + 1).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO accounts (id, name, balance, created_ms) VALUES (1, 'a', 7, 0);
             INSERT INTO credit_grants (account_id, amount, note, at_ms) VALUES (1, 10, 'n', 0);
             INSERT INTO api_keys (id, account_id, hash, prefix, created_ms)
                 VALUES (1, 1, x'01', 'xg_live_1', 0);
             INSERT INTO requests (request_id, account_id, key_id, at_ms, endpoint, status, cost,
                                   paid, free, latency_us)
                 VALUES ('r-1', 1, 1, 0, 'POST /x', 200, 3, 3, 0, 9);
             INSERT INTO idempotency VALUES (1, 'k', x'02', 200, x'03', 'r-1', 0);
             INSERT INTO rate_limits VALUES (1, 5);",
        )
        .unwrap();
    }

    fn attached(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        crate::configure(&conn).unwrap();
        crate::attach_ledger(&conn, &crate::SqliteStore::ledger_path(path)).unwrap();
        conn
    }

    fn tables(conn: &Connection, schema: &str) -> Vec<String> {
        conn.prepare(&format!(
            "SELECT name FROM {schema}.sqlite_master WHERE type = 'table' ORDER BY name"
        ))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    fn assert_moved(conn: &Connection) {
        assert_eq!(versions(conn).unwrap(), (LATEST, LEDGER_LATEST));
        let main = tables(conn, "main");
        for table in MOVED {
            assert!(
                !main.contains(&table.to_owned()),
                "{table} is still in main"
            );
        }
        // The journal's mark came after the move: nothing of it was in main.
        for table in LEDGER_TABLES.iter().filter(|t| **t != "charge_journal") {
            let rows: i64 = conn
                .query_row(&format!("SELECT count(*) FROM ledger.{table}"), [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(rows, 1, "ledger.{table}");
        }
        let balance: i64 = conn
            .query_row("SELECT balance FROM accounts WHERE name = 'a'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(balance, 7);
        let rows = ledger::rows_after(conn, 0, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].request_id.as_str(),
                rows[0].paid,
                rows[0].latency_us
            ),
            ("r-1", 3, 9)
        );
    }

    #[test]
    fn an_older_store_moves_its_ledger_into_the_ledger_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        older_store(&path);
        let mut conn = attached(&path);
        migrate(&mut conn).unwrap();
        assert_moved(&conn);
        // Opening again changes nothing.
        migrate(&mut conn).unwrap();
        assert_moved(&conn);
    }

    #[test]
    fn a_move_cut_between_its_two_commits_finishes_without_copying_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.db");
        older_store(&path);
        let mut conn = attached(&path);
        // The first commit of the move happened (the ledger holds the rows and says so), the
        // second did not (main still has its copies).
        for (done, step) in LEDGER_MIGRATIONS.iter().enumerate() {
            step.apply(&conn).unwrap();
            conn.pragma_update(Some(LEDGER), "user_version", done + 1)
                .unwrap();
        }
        assert!(tables(&conn, "main").contains(&"requests".to_owned()));
        migrate(&mut conn).unwrap();
        assert_moved(&conn);
    }

    #[test]
    fn the_request_ledger_is_packed_and_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        let conn = attached(&path);
        for (done, step) in MIGRATIONS.iter().enumerate() {
            conn.execute_batch(step).unwrap();
            conn.pragma_update(None, "user_version", done + 1).unwrap();
        }
        // A ledger as builds before the packed one left it, at version 2 (whose step 2 is only a
        // mark in a store made after the move): two accounts' rows interleaved, a UUID among the
        // ids, a gap in seq.
        LEDGER_MIGRATIONS[0].apply(&conn).unwrap();
        conn.pragma_update(Some(LEDGER), "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO accounts (id, name, balance, created_ms) VALUES (1, 'a', 7, 0);
             INSERT INTO accounts (id, name, balance, created_ms) VALUES (2, 'b', 7, 0);
             INSERT INTO api_keys (id, account_id, hash, prefix, created_ms)
                 VALUES (1, 1, x'01', 'xg_live_1', 0);
             INSERT INTO api_keys (id, account_id, hash, prefix, created_ms)
                 VALUES (2, 2, x'02', 'xg_live_2', 0);
             INSERT INTO requests VALUES (5, 'r-5', 1, 1, 10, 'POST /x', 200, 1, 1, 0, 9);
             INSERT INTO requests VALUES (6, 'r-6', 1, 1, 11, 'POST /x', 200, 2, 1, 1, 8);
             INSERT INTO requests VALUES (7, '019ae9a4-5c9d-7b3e-9a41-0c2f7d5e8b10', 2, 2, 12,
                                          'POST /x', 200, 1, 1, 0, 7);
             INSERT INTO requests VALUES (9, 'r-9', 1, 1, 20, 'GET /y', 404, 0, 0, 0, 3);",
        )
        .unwrap();
        let before: Vec<RequestRow> = conn
            .prepare(&format!(
                "SELECT {REQUEST_COLUMNS} FROM ledger.requests ORDER BY seq"
            ))
            .unwrap()
            .query_map([], request_row)
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(before.len(), 4);

        let mut conn = conn;
        migrate(&mut conn).unwrap();
        assert_eq!(versions(&conn).unwrap(), (LATEST, LEDGER_LATEST));
        assert!(!tables(&conn, "ledger").contains(&"requests".to_owned()));
        assert_eq!(ledger::rows_after(&conn, 0, 100).unwrap(), before);
        // Runs of one account's rows: (5, 6), (7), (9).
        let chunks: Vec<(i64, i64, i64)> = conn
            .prepare("SELECT seq, last_seq, account_id FROM ledger.request_chunks ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(chunks, [(5, 6, 1), (7, 7, 2), (9, 9, 1)]);
        // The usage log's query: an account's chunks by seq, newest first, straight from the
        // index, with no sort.
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT seq, records FROM request_chunks
                  WHERE account_id = 1 AND seq < 100 ORDER BY seq DESC",
            )
            .unwrap()
            .query_map([], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            plan,
            [
                "SEARCH request_chunks USING INDEX request_chunks_by_account \
                 (account_id=? AND rowid<?)"
            ]
        );
        // Numbering goes on from the last row, and every request id is still taken.
        assert_eq!(ledger::last_seq(&conn).unwrap(), 9);
        for id in ["r-5", "r-9", "019ae9a4-5c9d-7b3e-9a41-0c2f7d5e8b10"] {
            let id = ledger::RequestId::of(id);
            assert_eq!(ledger::claim_ids(&conn, &[id]).unwrap(), 0, "{id:?}");
        }
        assert_eq!(
            ledger::claim_ids(&conn, &[ledger::RequestId::of("r-new")]).unwrap(),
            1
        );
    }

    #[test]
    fn a_new_store_has_the_ledger_tables_in_the_ledger_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = attached(&dir.path().join("new.db"));
        migrate(&mut conn).unwrap();
        assert_eq!(versions(&conn).unwrap(), (LATEST, LEDGER_LATEST));
        assert_eq!(tables(&conn, "ledger"), LEDGER_TABLES);
        assert_eq!(
            tables(&conn, "main"),
            ["authors", "settings", "tweets", "upstream_sync", "users"]
        );
    }
}

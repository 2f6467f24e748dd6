//! The embedded store's schemas: the tweets file's and the ledger file's, one migration a step,
//! each tracked in its file's `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

use crate::LEDGER;

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
];

/// The ledger file's schema, one migration a step, tracked in its own `user_version`: the tables
/// of accounts, keys, credits, the request ledger, idempotency and rate limits. They live in a
/// file of their own (attached as `ledger`) so that the commits of charges never touch the tweets
/// file: SQLite drops a connection's whole page cache when its file changed, and readers of pages
/// keep theirs.
const LEDGER_MIGRATIONS: &[&str] = &[
    // 1: the tables of main's migrations 2 and 4, unchanged.
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
    // 2: what main held of these tables (stores of main's versions 2 to 4) copied in.
    "
    INSERT INTO ledger.accounts SELECT * FROM main.accounts;
    INSERT INTO ledger.credit_grants SELECT * FROM main.credit_grants;
    INSERT INTO ledger.api_keys SELECT * FROM main.api_keys;
    INSERT INTO ledger.requests SELECT * FROM main.requests;
    INSERT INTO ledger.idempotency SELECT * FROM main.idempotency;
    INSERT INTO ledger.rate_limits SELECT * FROM main.rate_limits;
    ",
    // 3: the request ledger without foreign keys. Its account_id and key_id name rows of
    // accounts and api_keys, which are never deleted, and every row is written with the ids of
    // a key just read from those tables; checking both parents (two B-tree seeks a row) was an
    // eighth of a charge's write on a small ledger and a quarter on one of millions of rows
    // (docs/BENCHMARKS.md). The other tables keep theirs. The index by
    // account names the account only: an index entry ends with the rowid, which is seq, so it
    // orders an account's rows by seq as before, one number shorter.
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
];

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
            tx.execute_batch(step)?;
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

    const MOVED: [&str; 6] = [
        "accounts",
        "credit_grants",
        "api_keys",
        "requests",
        "idempotency",
        "rate_limits",
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
            conn.execute_batch(step).unwrap();
            conn.pragma_update(Some(LEDGER), "user_version", done + 1)
                .unwrap();
        }
        assert!(tables(&conn, "main").contains(&"requests".to_owned()));
        migrate(&mut conn).unwrap();
        assert_moved(&conn);
    }

    #[test]
    fn the_request_ledger_loses_its_foreign_keys_and_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        let conn = attached(&path);
        for (done, step) in MIGRATIONS.iter().enumerate() {
            conn.execute_batch(step).unwrap();
            conn.pragma_update(None, "user_version", done + 1).unwrap();
        }
        // A ledger as the last build left it: version 2 (whose step 2 is only a mark in a store
        // made after the move), its requests with their foreign keys.
        conn.execute_batch(LEDGER_MIGRATIONS[0]).unwrap();
        conn.pragma_update(Some(LEDGER), "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO accounts (id, name, balance, created_ms) VALUES (1, 'a', 7, 0);
             INSERT INTO api_keys (id, account_id, hash, prefix, created_ms)
                 VALUES (1, 1, x'01', 'xg_live_1', 0);
             INSERT INTO requests VALUES (5, 'r-5', 1, 1, 10, 'POST /x', 200, 1, 1, 0, 9);
             INSERT INTO requests VALUES (9, 'r-9', 1, 1, 20, 'GET /y', 404, 0, 0, 0, 3);",
        )
        .unwrap();
        let foreign_keys = |conn: &Connection| -> i64 {
            conn.query_row(
                "SELECT count(*) FROM pragma_foreign_key_list('requests', 'ledger')",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(foreign_keys(&conn), 2);
        let rows = |conn: &Connection| -> Vec<(i64, String, i64, i64, String, i64)> {
            conn.prepare(
                "SELECT seq, request_id, account_id, at_ms, endpoint, status
                   FROM ledger.requests ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
        };
        let before = rows(&conn);

        let mut conn = conn;
        migrate(&mut conn).unwrap();
        assert_eq!(versions(&conn).unwrap(), (LATEST, LEDGER_LATEST));
        assert_eq!(foreign_keys(&conn), 0);
        assert_eq!(rows(&conn), before);
        // The usage log's query: an account's rows by seq, newest first, straight from the
        // index, with no sort.
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT seq, request_id FROM ledger.requests
                  WHERE account_id = 1 AND seq < 100 AND at_ms >= 0 ORDER BY seq DESC LIMIT 10",
            )
            .unwrap()
            .query_map([], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH ledger.requests USING INDEX requests_by_account (account_id=? AND rowid<?)"]
        );
        // The rowid goes on from the last row, and a request id is still unique.
        conn.execute(
            "INSERT INTO ledger.requests (request_id, account_id, key_id, at_ms, endpoint, status,
                                          cost, paid, free, latency_us)
             VALUES ('r-new', 1, 1, 30, 'POST /x', 200, 1, 1, 0, 5)",
            [],
        )
        .unwrap();
        let last: i64 = conn
            .query_row("SELECT max(seq) FROM ledger.requests", [], |r| r.get(0))
            .unwrap();
        assert_eq!(last, 10);
        assert!(
            conn.execute(
                "INSERT INTO ledger.requests (request_id, account_id, key_id, at_ms, endpoint,
                                              status, cost, paid, free, latency_us)
                 VALUES ('r-5', 1, 1, 40, 'POST /x', 200, 1, 1, 0, 5)",
                [],
            )
            .is_err()
        );
    }

    #[test]
    fn a_new_store_has_the_ledger_tables_in_the_ledger_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = attached(&dir.path().join("new.db"));
        migrate(&mut conn).unwrap();
        assert_eq!(versions(&conn).unwrap(), (LATEST, LEDGER_LATEST));
        let mut ledger = tables(&conn, "ledger");
        ledger.sort();
        let mut moved = MOVED.map(str::to_owned).to_vec();
        moved.sort();
        assert_eq!(ledger, moved);
        assert_eq!(
            tables(&conn, "main"),
            ["settings", "tweets", "upstream_sync", "users"]
        );
    }
}

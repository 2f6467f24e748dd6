//! The embedded store's schema, one migration a step, tracked in `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

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
];

/// The schema version this build writes.
pub const LATEST: usize = MIGRATIONS.len();

/// Brings the schema up to [`LATEST`]. Runs in one immediate transaction, so two processes opening
/// a new store at once cannot both apply a step.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: usize = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > LATEST {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
            Some(format!(
                "the store has schema version {current}, newer than this xgate knows ({LATEST}); \
                 upgrade xgate"
            )),
        ));
    }
    for (done, step) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", done + 1)?;
    }
    tx.commit()
}

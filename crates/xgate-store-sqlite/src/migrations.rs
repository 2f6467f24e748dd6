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

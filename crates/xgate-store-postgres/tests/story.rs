//! The storage story against the machine's real PostgreSQL, each test in a schema of its own.
//!
//! The database is `XGATE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`).
//! When it cannot be reached, the tests fail under CI (`CI` set) and are skipped elsewhere, with
//! a line on standard error saying so.

use std::sync::Arc;

use xgate_store_postgres::PostgresStore;
use xgate_store_postgres::testing::fresh_database;

async fn fresh_store() -> Option<Arc<PostgresStore>> {
    let url = fresh_database("story").await?;
    Some(Arc::new(PostgresStore::connect(&url).await.unwrap()))
}

xgate_store::story_tests!(optional fresh_store);

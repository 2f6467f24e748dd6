//! The storage story against a real SQLite file.

use std::sync::Arc;

use xgate_store_sqlite::SqliteStore;

async fn fresh_store() -> Arc<SqliteStore> {
    // The directory must outlive the store; a test process is short, so leaking it is fine and
    // the OS temp cleaner takes it later.
    let dir = tempfile::tempdir().unwrap().keep();
    Arc::new(SqliteStore::open(dir.join("story.db")).unwrap())
}

xgate_store::story_tests!(fresh_store);

//! Telling caches of pages that the tweets file changed ([`Store::pages_version`]).
//!
//! Writes of tweets through the store bump the version once they have committed. Writes by
//! anything else (`xgate ingest` into a store being served, a second server on the same file) are
//! seen by a watcher thread that asks the store's writer connection every [`POLL`] whether
//! another connection committed to the file since it last asked (`PRAGMA data_version`, which
//! leaves out the asking connection's own commits, already counted). The watcher starts with the
//! first question, so a store that never serves pages never starts one, and it ends once the store
//! is dropped. Charges go to the ledger file, which is not looked at: they leave cached pages
//! alone.
//!
//! [`Store::pages_version`]: xgate_store::Store::pages_version

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rusqlite::Connection;

use crate::lock;

/// How often the watcher asks: the longest a write by another process goes unseen by caches.
pub const POLL: Duration = Duration::from_millis(50);

/// The version of the tweets file's contents, as far as pages go.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    version: AtomicU64,
    /// Whether the watcher runs, once it was asked to.
    watching: OnceLock<bool>,
}

impl Changes {
    /// Marks the file changed: call after a write to it has committed (or failed: a spare bump
    /// costs only cached pages).
    pub(crate) fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// The current version, starting the watcher on the store's `writer` on first use. `None`
    /// when the watcher could not start: without it, writes by others would go unseen.
    pub(crate) fn version(self: &Arc<Self>, writer: &Arc<Mutex<Connection>>) -> Option<u64> {
        let watching = *self.watching.get_or_init(|| match watch(writer, Arc::downgrade(self)) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the store for changes; pages will not be cached");
                false
            }
        });
        watching.then(|| self.version.load(Ordering::Acquire))
    }
}

/// Starts the watcher. Its first look at the file is taken here, before any version is handed
/// out, so that no commit falls between the two. It holds the store's parts weakly, and ends when
/// they are gone.
fn watch(writer: &Arc<Mutex<Connection>>, changes: Weak<Changes>) -> std::io::Result<()> {
    let mut seen = data_version(&lock(writer)).map_err(std::io::Error::other)?;
    let writer = Arc::downgrade(writer);
    std::thread::Builder::new()
        .name("xgate-store-watch".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(POLL);
                let (Some(changes), Some(writer)) = (changes.upgrade(), writer.upgrade()) else {
                    return;
                };
                let now = data_version(&lock(&writer));
                drop(writer);
                match now {
                    Ok(now) => {
                        if failing || now != seen {
                            changes.bump();
                        }
                        seen = now;
                        failing = false;
                    }
                    Err(e) => {
                        // Unsure what changed: nothing cached is kept while this lasts.
                        if !failing {
                            tracing::warn!(error = %e, "could not check the store for changes");
                        }
                        failing = true;
                        changes.bump();
                    }
                }
            }
        })
        .map(drop)
}

/// Changes whenever another connection committed to the file since this one last asked.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA main.data_version", [], |row| row.get(0))
}

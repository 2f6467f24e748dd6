//! `--db`: an SQLite file, or a PostgreSQL URL (`postgres://...`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use xgate_store::Backend;
use xgate_store_postgres::{PostgresStore, is_postgres_url};
use xgate_store_sqlite::{LedgerSync, SqliteStore};

/// What the store is for: a bulk load may open an SQLite file in its faster way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Serve,
    /// A load whose every commit is kept as it is made (so an interrupted one can go on).
    BulkLoad,
    /// A load that the caller ends with `finish_load`: a new SQLite store is built aside and
    /// comes into place then, whole.
    Load,
}

/// Opens (and migrates) the store `db` names.
pub async fn open(db: &Path, usage: Use) -> anyhow::Result<Arc<dyn Backend>> {
    let name = db.to_string_lossy();
    if is_postgres_url(&name) {
        let store = PostgresStore::connect(&name)
            .await
            .with_context(|| format!("connecting to the database {}", redact(&name)))?;
        return Ok(Arc::new(store));
    }
    let store = match usage {
        Use::Serve => SqliteStore::open(db),
        Use::BulkLoad => SqliteStore::open_for_bulk_load(db),
        Use::Load => SqliteStore::open_for_new_load(db),
    }
    .with_context(|| format!("opening the store {}", db.display()))?;
    Ok(Arc::new(store))
}

/// `--ledger-sync`: what a charged response waits for on an SQLite store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LedgerSyncArg {
    /// The charge written to the charge journal; committed and synced after.
    Journal,
    /// The charge committed, its sync begun.
    Background,
    /// The charge committed and synced.
    BeforeResponse,
}

/// What a charged response waits for on an SQLite store when `--ledger-sync` is not given: the
/// journal, which a crash of the process does not lose either, and which spares every response
/// the wait for a commit (docs/BILLING.md, "Guarantees"; docs/BENCHMARKS.md).
pub const DEFAULT_LEDGER_SYNC: LedgerSyncArg = LedgerSyncArg::Journal;

impl From<LedgerSyncArg> for LedgerSync {
    fn from(arg: LedgerSyncArg) -> LedgerSync {
        match arg {
            // The journal's commits are the background's: no response waits for them.
            LedgerSyncArg::Background | LedgerSyncArg::Journal => LedgerSync::Background,
            LedgerSyncArg::BeforeResponse => LedgerSync::BeforeResponse,
        }
    }
}

/// Opens (and migrates) the store `db` names, to serve it: an SQLite store's readers get
/// `read_cache` bytes of page cache, and its charges are answered as `ledger_sync` says
/// ([`DEFAULT_LEDGER_SYNC`] when `None`; refused on PostgreSQL, whose own settings decide). A
/// server that charges nothing (`charging` false) keeps no charge journal.
pub async fn open_to_serve(
    db: &Path,
    read_cache: usize,
    ledger_sync: Option<LedgerSyncArg>,
    charging: bool,
) -> anyhow::Result<Arc<dyn Backend>> {
    if is_postgres_url(&db.to_string_lossy()) {
        if ledger_sync.is_some() {
            bail!(
                "--ledger-sync is for an SQLite store; on PostgreSQL, the database's \
                 synchronous_commit decides when a charge is on disk"
            );
        }
        return open(db, Use::Serve).await;
    }
    let ledger_sync = ledger_sync.unwrap_or(DEFAULT_LEDGER_SYNC);
    let mut store = SqliteStore::open(db)
        .with_context(|| format!("opening the store {}", db.display()))?
        .with_read_cache(read_cache)
        .with_ledger_sync(ledger_sync.into());
    if ledger_sync == LedgerSyncArg::Journal && charging {
        store = store.with_charge_journal().with_context(|| {
            format!(
                "opening the charge journal of {} (`--ledger-sync background` serves \
                 without one)",
                db.display()
            )
        })?;
    }
    Ok(Arc::new(store))
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The store: an SQLite file, or a PostgreSQL URL (postgres://...) [default: xgate.db]
    #[arg(long, env = "XGATE_DB")]
    db: Option<PathBuf>,
}

/// `xgate migrate`: applies the migrations the store lacks and says which. On PostgreSQL, nodes
/// starting at the same moment wait for each other (an advisory lock), so running it first is
/// optional; it makes upgrades explicit.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let db = crate::db_path(args.db, crate::DEFAULT_DB);
    let name = db.to_string_lossy();
    if is_postgres_url(&name) {
        let store = PostgresStore::connect_without_migrating(&name)?;
        let found = store
            .migrate()
            .await
            .with_context(|| format!("migrating {}", redact(&name)))?;
        let latest = xgate_store_postgres::LATEST;
        println!(
            "{}: schema version {latest} ({})",
            redact(&name),
            if found == latest {
                "already up to date".to_owned()
            } else {
                format!("was {found}")
            }
        );
    } else {
        SqliteStore::open(&db).with_context(|| format!("migrating {}", db.display()))?;
        println!(
            "{}: schema version {}, ledger {} (up to date)",
            db.display(),
            xgate_store_sqlite::SCHEMA_VERSION,
            xgate_store_sqlite::LEDGER_SCHEMA_VERSION
        );
    }
    Ok(())
}

/// A database URL fit for messages: any password replaced.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("xgate.db"), "xgate.db");
    }
}

//! `xgate ingest`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use xgate_ingest::formats;
use xgate_ingest::{Source, ingest};
use xgate_store_sqlite::SqliteStore;

use crate::{DEFAULT_DB, EXIT_REJECTED, db_path};

/// Rejections printed one by one; past this, only counted.
const PRINTED_REJECTIONS: u64 = 100;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The store: an SQLite file, created and migrated when absent [default: xgate.db]
    #[arg(long, env = "XGATE_DB")]
    db: Option<PathBuf>,
    /// Files to load: tweets in the API's format one a line (JSONL), saved API responses, or X API
    /// v2 response pages.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The files' format; `auto` tells it from each file's first bytes.
    #[arg(long, default_value = "auto", value_parser = ["auto", "jsonl", "api-responses", "x-api-v2"])]
    format: String,
}

pub async fn run(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let db = db_path(args.db, DEFAULT_DB);
    let store = Arc::new(
        SqliteStore::open_for_bulk_load(&db)
            .with_context(|| format!("opening the store {}", db.display()))?,
    );
    let sources = args.files.into_iter().map(Source::File).collect();
    let mut shown = 0;
    let started = std::time::Instant::now();
    let format = formats::by_name(&args.format);
    let report = ingest(store, format, sources, |rejection| {
        shown += 1;
        if shown <= PRINTED_REJECTIONS {
            eprintln!("xgate: rejected {rejection}");
        }
    })
    .await
    .context("writing to the store")?;
    let seconds = started.elapsed().as_secs_f64();
    if report.rejected > PRINTED_REJECTIONS {
        eprintln!(
            "xgate: ... {} more rejections not shown",
            report.rejected - PRINTED_REJECTIONS
        );
    }
    println!(
        "{} sources, {} tweets read in {seconds:.1}s: {} stored new or changed, {} unchanged, \
         {} without media; {} rejected",
        report.sources,
        report.read,
        report.stored.written,
        report.stored.unchanged,
        report.without_media,
        report.rejected,
    );
    Ok(if report.rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REJECTED)
    })
}

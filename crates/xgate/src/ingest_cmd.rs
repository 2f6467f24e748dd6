//! `xgate ingest`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::stores::{self, Use};
use anyhow::Context;
use clap::Args;
use xgate_ingest::formats;
use xgate_ingest::{IngestReport, Source, ingest_with_progress};

use crate::{DEFAULT_DB, EXIT_REJECTED, db_path};

/// Rejections printed one by one; past this, only counted.
const PRINTED_REJECTIONS: u64 = 100;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The store: an SQLite file, created and migrated when absent, or a PostgreSQL URL
    /// (postgres://...) [default: xgate.db]
    #[arg(long, env = "XGATE_DB")]
    db: Option<PathBuf>,
    /// Files to load: tweets in the API's format one a line (JSONL), saved API responses, X API
    /// v2 response pages, X account archives (the .zip or its folder), or saved X web timeline
    /// (GraphQL) responses.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Exit 0 even when some input was rejected (the rejections are still reported).
    #[arg(long)]
    keep_going: bool,
    /// The files' format; `auto` tells it from each file's first bytes.
    #[arg(long, default_value = "auto", value_parser = ["auto", "jsonl", "api-responses", "x-api-v2", "x-archive", "x-graphql"])]
    format: String,
}

pub async fn run(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let db = db_path(args.db, DEFAULT_DB);
    let store = stores::open(&db, Use::Load).await?;
    let sources = args.files.into_iter().map(Source::File).collect();
    let mut shown = 0;
    let started = std::time::Instant::now();
    let format = formats::by_name(&args.format);
    let progress = Progress::new();
    let report = ingest_with_progress(
        store.clone(),
        format,
        sources,
        |rejection| {
            shown += 1;
            if shown <= PRINTED_REJECTIONS {
                progress.println(&format!("xgate: rejected {rejection}"));
            }
        },
        |so_far| progress.update(so_far),
    )
    .await
    .context("writing to the store")?;
    store
        .finish_load()
        .await
        .with_context(|| format!("finishing the load into {}", db.display()))?;
    progress.finish();
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
    Ok(if report.rejected == 0 || args.keep_going {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REJECTED)
    })
}

/// Progress on standard error: a live line with tweets/s on a terminal, a plain line every
/// few seconds otherwise (logs, CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: std::time::Instant,
    last_line: std::cell::Cell<std::time::Instant>,
}

/// How often a plain progress line is written when standard error is not a terminal.
const PLAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar.set_message("reading");
            bar
        });
        let now = std::time::Instant::now();
        Progress {
            bar,
            started: now,
            last_line: std::cell::Cell::new(now),
        }
    }

    fn update(&self, so_far: &IngestReport) {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let text = format!(
            "{} tweets read ({:.0} tweets/s), {} stored new or changed, {} rejected",
            so_far.read,
            so_far.read as f64 / seconds,
            so_far.stored.written,
            so_far.rejected
        );
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None if self.last_line.get().elapsed() >= PLAIN_EVERY => {
                eprintln!("xgate: ingest: {text}");
                self.last_line.set(std::time::Instant::now());
            }
            None => {}
        }
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

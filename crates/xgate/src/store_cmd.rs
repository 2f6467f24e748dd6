//! `xgate store copy`: a whole store to another, e.g. an embedded file to PostgreSQL.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use xgate_store::transfer::Counts;

use crate::stores::{self, Use, redact};

/// Ledger rows and tweets per step of a copy.
const PAGE: usize = 5_000;

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy everything (tweets, users, accounts, keys, credits, the ledger, the token secret)
    /// into another store, e.g. `--from xgate.db --to postgres://...`. Run it again after an
    /// interruption: it goes on where it stopped. The counts of both are compared at the end.
    Copy {
        /// The store to copy: an SQLite file or a PostgreSQL URL.
        #[arg(long)]
        from: PathBuf,
        /// The store to fill (created and migrated when absent); best empty.
        #[arg(long)]
        to: PathBuf,
    },
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    match args.command {
        StoreCommand::Copy { from, to } => copy(from, to).await,
    }
}

async fn copy(from: PathBuf, to: PathBuf) -> anyhow::Result<()> {
    let source = stores::open(&from, Use::Serve).await?;
    let target = stores::open(&to, Use::BulkLoad).await?;
    let want = source.counts().await.context("counting the source")?;
    let progress = Progress::new(want.requests + want.tweets);

    // Accounts, keys, grants, idempotent responses and settings (the token secret among them):
    // small, in one go; rows already there are kept.
    let dump = source.dump_accounts().await.context("reading accounts")?;
    target
        .load_accounts(dump)
        .await
        .context("writing accounts")?;

    let mut after = target.counts().await?.last_seq;
    loop {
        let rows = source.requests_after(after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        let n = rows.len() as u64;
        target
            .load_requests(rows)
            .await
            .context("writing the ledger")?;
        progress.advance(n, "ledger rows");
    }

    let mut after = target.last_tweet_id().await?;
    loop {
        let tweets = source.tweets_after(after, PAGE).await?;
        let Some(last) = tweets.last() else { break };
        after = Some(last.tweet_id);
        let n = tweets.len() as u64;
        target
            .upsert_tweets(tweets)
            .await
            .context("writing tweets")?;
        progress.advance(n, "tweets");
    }
    progress.finish();

    let got = target.counts().await.context("counting the copy")?;
    report(&from, &to, &want, &got);
    if !same(&want, &got) {
        bail!("the copy's counts differ from the source's (see above); run the copy again");
    }
    Ok(())
}

fn same(a: &Counts, b: &Counts) -> bool {
    (
        a.tweets, a.users, a.accounts, a.grants, a.keys, a.requests, a.balances, a.paid,
    ) == (
        b.tweets, b.users, b.accounts, b.grants, b.keys, b.requests, b.balances, b.paid,
    )
}

fn report(from: &Path, to: &Path, a: &Counts, b: &Counts) {
    let rows = [
        ("tweets", a.tweets as i64, b.tweets as i64),
        ("users", a.users as i64, b.users as i64),
        ("accounts", a.accounts as i64, b.accounts as i64),
        ("credit grants", a.grants as i64, b.grants as i64),
        ("keys", a.keys as i64, b.keys as i64),
        ("ledger rows", a.requests as i64, b.requests as i64),
        ("credits left", a.balances, b.balances),
        ("credits paid", a.paid, b.paid),
    ];
    println!("{:<14} {:>12} {:>12}", "", "source", "copy");
    for (what, source, copy) in rows {
        let mark = if source == copy { "" } else { "  DIFFERS" };
        println!("{what:<14} {source:>12} {copy:>12}{mark}");
    }
    println!(
        "copied {} to {}",
        redact(&from.to_string_lossy()),
        redact(&to.to_string_lossy())
    );
}

/// A bar on a terminal, a line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    done: std::cell::Cell<u64>,
    total: u64,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} rows ({per_sec}, {eta} left) {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            done: std::cell::Cell::new(0),
            total,
            last_line: std::cell::Cell::new(Instant::now()),
        }
    }

    fn advance(&self, n: u64, what: &'static str) {
        self.done.set(self.done.get() + n);
        match &self.bar {
            Some(bar) => {
                bar.inc(n);
                bar.set_message(what);
            }
            None if self.last_line.get().elapsed() >= Duration::from_secs(5) => {
                self.last_line.set(Instant::now());
                eprintln!(
                    "xgate: copied {} of {} rows ({what})",
                    self.done.get(),
                    self.total
                );
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

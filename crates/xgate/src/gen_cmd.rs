//! `xgate gen`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use xgate_ingest::reshape;
use xgate_ingest::synth::{self, MAX_USERS, SynthConfig};

#[derive(Debug, Args)]
pub struct GenArgs {
    /// How many users.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_USERS))]
    users: u64,
    /// The index of the first user; runs with different ranges make different users.
    #[arg(long, default_value_t = 0)]
    first_user: u64,
    /// Media tweets per user.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    per_user: u64,
    /// The same seed always gives the same tweets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write [default: standard output]; a folder for `x-archive`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The shape to write: tweets in the API's format one a line, X API v2 pages one a line, or
    /// an X account archive folder (one user's tweets: `--users 1`).
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "x-api-v2", "x-archive"])]
    format: String,
}

pub fn run(args: GenArgs) -> anyhow::Result<()> {
    let config = SynthConfig {
        users: args.users,
        first_user: args.first_user,
        per_user: args.per_user,
        seed: args.seed,
    };
    if args.format == "x-archive" {
        anyhow::ensure!(
            args.users == 1,
            "an X archive holds one user's tweets: use --users 1"
        );
        let dir = args
            .out
            .context("an X archive is a folder: name it with --out")?;
        let written = reshape::write_archive(synth::tweets(config), &dir)
            .with_context(|| format!("writing the archive {}", dir.display()))?;
        eprintln!(
            "xgate: wrote an X archive of {written} tweets to {}",
            dir.display()
        );
        return Ok(());
    }
    let (mut out, name): (Box<dyn Write>, String) = match &args.out {
        Some(path) => (
            Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?),
            path.display().to_string(),
        ),
        None => (Box::new(std::io::stdout().lock()), "standard output".into()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, &mut out);
    let written = match args.format.as_str() {
        "x-api-v2" => reshape::write_v2_pages(synth::tweets(config), &mut out),
        _ => synth::write_jsonl(config, &mut out),
    }
    .with_context(|| format!("writing {name}"))?;
    out.flush().with_context(|| format!("writing {name}"))?;
    eprintln!(
        "xgate: wrote {written} tweets of {} users to {name}",
        args.users
    );
    Ok(())
}

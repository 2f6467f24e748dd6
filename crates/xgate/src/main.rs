//! `xgate`: the command line. Each subcommand is a thin layer over the library crates.

mod accounts_cmd;
mod demo;
mod gen_cmd;
mod ingest_cmd;
mod pull_cmd;
mod serve;
mod store_cmd;
mod stores;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc serves the process's Rust allocations: a request allocates and frees some forty
/// blocks (headers, buffers, parsed parameters), and jemalloc's per-thread caches answer most of
/// them on a short path where glibc's often took its slow one (`_int_free`, `malloc_consolidate`).
/// Counted under load, a charged request runs 9% fewer instructions and an unbilled one 13% fewer,
/// for about 3 MiB more at the peak (docs/BENCHMARKS.md, "The allocator"). SQLite keeps to the C
/// library's allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, which it reads when it starts (`_RJEM_MALLOC_CONF` in the environment
/// still applies over them). Each thread caches from 256 to 1,024 freed blocks of every small
/// size instead of 20 to 200: the requests a group commit answers together allocate and free
/// their blocks in one burst (a hundred 8 KiB read buffers among them), which with the default
/// caches went through the arena and its page allocator at every commit. Counted under load, a
/// charged request runs 1.3k fewer instructions, most of jemalloc's slow paths
/// (docs/BENCHMARKS.md, "The allocator's caches").
#[cfg(not(target_env = "msvc"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static ALLOCATOR_OPTIONS: &[u8; 57] = b"tcache_nslots_small_min:256,tcache_nslots_small_max:1024\0";

/// Self-hosted X (Twitter) data API server.
#[derive(Debug, Parser)]
#[command(name = "xgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API over HTTP.
    Serve(serve::ServeArgs),
    /// Load tweets into the store, from any format `docs/FORMATS.md` lists.
    Ingest(ingest_cmd::IngestArgs),
    /// Write deterministic synthetic media tweets: JSONL, X API v2 pages or an X archive.
    Gen(gen_cmd::GenArgs),
    /// Create, list and revoke API keys.
    Keys(accounts_cmd::KeysArgs),
    /// Add and show an account's credits.
    Credits(accounts_cmd::CreditsArgs),
    /// Set an account's free allowance and rate limit.
    Accounts(accounts_cmd::AccountsArgs),
    /// An account's request log and a per-day summary.
    Usage(accounts_cmd::UsageArgs),
    /// Bring the store's schema up to date (every command does it too; this one says what it did).
    Migrate(stores::MigrateArgs),
    /// Move a whole store to another (`xgate store copy --from xgate.db --to postgres://...`).
    Store(store_cmd::StoreArgs),
    /// Download a user's whole media timeline from any server of this API, as JSONL.
    Pull(pull_cmd::PullArgs),
}

/// The store used when none is named.
pub const DEFAULT_DB: &str = "xgate.db";

/// Exit code of `xgate ingest` when some input was rejected (the rest was stored).
pub const EXIT_REJECTED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Ingest(args) => ingest_cmd::run(args).await,
            Command::Gen(args) => gen_cmd::run(args).map(|()| ExitCode::SUCCESS),
            Command::Keys(args) => accounts_cmd::keys(args).await.map(|()| ExitCode::SUCCESS),
            Command::Credits(args) => accounts_cmd::credits(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Accounts(args) => accounts_cmd::accounts(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Usage(args) => accounts_cmd::usage(args).await.map(|()| ExitCode::SUCCESS),
            Command::Migrate(args) => stores::migrate(args).await.map(|()| ExitCode::SUCCESS),
            Command::Store(args) => store_cmd::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Pull(args) => pull_cmd::run(args).await.map(|()| ExitCode::SUCCESS),
        }
    });
    outcome.unwrap_or_else(|e| fail(&e))
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("xgate: error: {e:#}");
    ExitCode::FAILURE
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// `--db` as given, else `XGATE_DB`, else `fallback`.
fn db_path(db: Option<PathBuf>, fallback: &str) -> PathBuf {
    db.unwrap_or_else(|| PathBuf::from(fallback))
}

//! `xgate serve`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use xgate_billing::Prices;
use xgate_server::{
    AppState, Billing, BillingConfig, DEFAULT_PAGE_CACHE_BYTES, ServerConfig, router,
};
use xgate_upstream::config::LiveConfig;
use xgate_upstream::metrics::Metrics;
use xgate_upstream::{Live, Upstreams};

use crate::stores;
use crate::{DEFAULT_DB, db_path, demo};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The store: an SQLite file, created and migrated when absent, or a PostgreSQL URL
    /// (postgres://...) [default: xgate.db, or xgate-demo.db with --demo]
    #[arg(long, env = "XGATE_DB")]
    db: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, env = "XGATE_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// The largest page size (`limit`) a request may ask for.
    #[arg(long, env = "XGATE_MAX_LIMIT", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_limit: u32,
    /// Load demo data (the seed user and generated users), make a demo key, and print how to
    /// query it.
    #[arg(long)]
    demo: bool,
    /// Serve without API keys or credits: every data request is free and anonymous.
    #[arg(long, env = "XGATE_NO_BILLING")]
    no_billing: bool,
    /// Requests per minute per account, unless the account has its own limit [default: none]
    #[arg(long, env = "XGATE_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit: Option<u32>,
    /// An endpoint's price in credits, `'METHOD /path=N'` (repeatable; default 1 each).
    #[arg(long = "price", env = "XGATE_PRICES", value_delimiter = ';')]
    prices: Vec<String>,
    /// MiB of rendered pages kept in memory and answered again without reading the store, until
    /// its tweets change; 0 turns the cache off. Only with an SQLite store (docs/ARCHITECTURE.md).
    #[arg(long, env = "XGATE_PAGE_CACHE_MIB", default_value_t = (DEFAULT_PAGE_CACHE_BYTES >> 20) as u32,
          value_parser = clap::value_parser!(u32).range(0..=65536))]
    page_cache_mib: u32,
    /// A TOML file of live upstreams and cache settings (docs/UPSTREAMS.md). Without it (and
    /// without XGATE_UPSTREAM) the store alone is served.
    #[arg(long, env = "XGATE_CONFIG")]
    config: Option<PathBuf>,
    /// What a charged response waits for (docs/BILLING.md, "Guarantees"): `journal`, its charge
    /// written to the store's charge journal, which a crash of xgate does not lose, and committed
    /// and synced after, so no response waits on the ledger; `background`, its charge committed
    /// and the sync begun, running as it leaves; `before-response`, its charge committed and
    /// synced (the core idles while it waits). Only with an SQLite store; on PostgreSQL, the
    /// database's `synchronous_commit` decides [default: journal]
    #[arg(long, env = "XGATE_LEDGER_SYNC", value_enum)]
    ledger_sync: Option<stores::LedgerSyncArg>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let fallback = if args.demo { demo::DEMO_DB } else { DEFAULT_DB };
    let db = db_path(args.db, fallback);
    let page_cache = (args.page_cache_mib as usize) << 20;
    let store = stores::open_to_serve(
        &db,
        sqlite_read_cache(page_cache),
        args.ledger_sync,
        !args.no_billing,
    )
    .await?;
    if args.demo {
        demo::load(store.clone()).await?;
    }
    let config = ServerConfig {
        max_limit: args.max_limit,
        default_limit: ServerConfig::default().default_limit.min(args.max_limit),
        page_cache_bytes: page_cache,
        ..ServerConfig::default()
    };
    let state = if args.no_billing {
        AppState::new(store.clone(), config).await?
    } else {
        let billing = BillingConfig {
            prices: Prices::parse(args.prices.iter().map(String::as_str))?,
            default_rate_limit: args.rate_limit.and_then(NonZeroU32::new),
            // Nodes sharing a database share each account's limit.
            shared_rate_limits: xgate_store_postgres::is_postgres_url(&db.to_string_lossy()),
        };
        AppState::metered(
            store.clone(),
            config,
            Billing::start(store.clone(), billing),
        )
        .await?
    };
    let live = LiveConfig::load(args.config.as_deref(), |name| std::env::var(name).ok())?;
    let upstream_names = live.as_ref().map(|config| {
        config
            .upstreams
            .iter()
            .map(|u| u.name())
            .collect::<Vec<_>>()
            .join(", ")
    });
    let state = match live {
        Some(config) => {
            let metrics = Arc::new(Metrics::default());
            let upstreams = Upstreams::from_config(&config, metrics.clone())
                .map_err(|e| anyhow::anyhow!("upstream configuration: {e}"))?;
            let live = Live::new(store.clone(), upstreams, config.cache.clone(), metrics);
            state.with_live(Arc::new(live))
        }
        None => state,
    };
    let demo_key = match args.demo && !args.no_billing {
        true => Some(demo::key(&*store).await?),
        false => None,
    };
    let listener = TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    // The first line of stdout says where to connect; scripts and tests read it. A closed
    // stdout must not stop the server, so write errors are ignored.
    let mut banner = format!(
        "xgate {} listening on http://{addr}\nstore: {}\n",
        env!("CARGO_PKG_VERSION"),
        stores::redact(&db.to_string_lossy())
    );
    if let Some(names) = &upstream_names {
        banner.push_str(&format!("live data from: {names}\n"));
    }
    if args.demo {
        banner.push_str(&demo::guide(&state, reachable(addr), demo_key.as_deref()).await?);
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    tracing::info!(%addr, db = %stores::redact(&db.to_string_lossy()), upstreams = ?upstream_names, "serving");
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // The request log of the last requests is written in the background: let it land.
    if let Some(billing) = state.billing() {
        billing.meter().flush().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The memory a server gives to pages of the tweets file, rendered or not: the cache of rendered
/// pages takes its share, and SQLite's readers get the rest, at least [`MIN_SQLITE_READ_CACHE`].
const PAGE_MEMORY: usize = xgate_store_sqlite::READ_CACHE_BYTES;
/// Enough for the timeline index's inner pages and recent rows of a large store.
const MIN_SQLITE_READ_CACHE: usize = 16 << 20;

/// SQLite's readers' page cache beside a cache of `page_cache` bytes of rendered pages: with the
/// default 32 MiB, 16 MiB; with none, all of [`PAGE_MEMORY`] (48 MiB).
fn sqlite_read_cache(page_cache: usize) -> usize {
    PAGE_MEMORY
        .saturating_sub(page_cache)
        .max(MIN_SQLITE_READ_CACHE)
}

/// An address a local client can use: a wildcard bind is reached through loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// Resolves on Ctrl-C or SIGTERM; the server then finishes the requests in flight and exits.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

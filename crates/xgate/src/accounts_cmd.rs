//! `xgate keys`, `xgate credits`, `xgate accounts` and `xgate usage`: running a paid API.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use xgate_billing::{clock, keys};
use xgate_server::billing::routes::parse_since;
use xgate_store::Backend;
use xgate_store::accounts::{Account, AccountTerms, KeyId, KeyInfo, KeySelector};

use crate::stores::{self, Use};
use crate::{DEFAULT_DB, db_path};

#[derive(Debug, Args)]
pub struct DbArg {
    /// The store: an SQLite file, or a PostgreSQL URL (postgres://...) [default: xgate.db]
    #[arg(long, env = "XGATE_DB", global = true)]
    db: Option<PathBuf>,
}

impl DbArg {
    async fn open(&self) -> anyhow::Result<Arc<dyn Backend>> {
        stores::open(&db_path(self.db.clone(), DEFAULT_DB), Use::Serve).await
    }
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key (and its account, if new); the key is printed once, as the last line.
    Create {
        /// The account the key spends from; created if it does not exist.
        #[arg(long)]
        account: String,
        /// Credits to add to the account (1 credit = $0.01).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
        credits: i64,
        /// A label for the key, to recognise it in listings.
        #[arg(long)]
        name: Option<String>,
    },
    /// List every key: never the key itself.
    List,
    /// Revoke a key, by the key itself or by its id; running servers refuse it within a second.
    Revoke {
        /// The key (`xg_live_...`) or its id from `xgate keys list`.
        key_or_id: String,
    },
}

#[derive(Debug, Args)]
pub struct CreditsArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(subcommand)]
    command: CreditsCommand,
}

#[derive(Debug, Subcommand)]
enum CreditsCommand {
    /// Add purchased credits to an account.
    Add {
        #[arg(long)]
        account: String,
        /// How many (1 credit = $0.01).
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        credits: i64,
        /// What the credits are for, kept in the books.
        #[arg(long, default_value = "added by the operator")]
        note: String,
    },
    /// Show an account's balance and books.
    Show {
        #[arg(long)]
        account: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AccountsArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(subcommand)]
    command: AccountsCommand,
}

#[derive(Debug, Subcommand)]
enum AccountsCommand {
    /// Set an account's monthly free allowance or its own rate limit.
    Set {
        #[arg(long)]
        account: String,
        /// Free credits each calendar month (UTC), spent before purchased ones.
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
        free_allowance: Option<i64>,
        /// Requests per minute for this account, or `default` for the server's.
        #[arg(long)]
        rate_limit: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[command(flatten)]
    db: DbArg,
    #[arg(long)]
    account: String,
    /// Only requests from this day (`2026-11-01`) or time (RFC 3339) on.
    #[arg(long)]
    since: Option<String>,
    /// Requests to list, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

async fn account(store: &dyn Backend, name: &str) -> anyhow::Result<Account> {
    match store.account_by_name(name).await? {
        Some(account) => Ok(account),
        None => bail!("no account named {name:?}"),
    }
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn print_keys(keys: &[KeyInfo]) {
    println!(
        "{:>5}  {:<16} {:<16} {:<14} {:<19}  {:<19}  revoked",
        "id", "account", "key", "label", "created (UTC)", "last used"
    );
    for k in keys {
        println!(
            "{:>5}  {:<16} {:<16} {:<14} {:<19}  {:<19}  {}",
            k.id.0,
            k.account,
            format!("{}…", k.prefix),
            k.label.as_deref().unwrap_or("-"),
            when(Some(k.created_ms)),
            when(k.last_used_ms),
            when(k.revoked_ms),
        );
    }
}

/// Creates a key for `account` (made if new) with `credits` added; returns the key.
pub async fn create_key(
    store: &dyn Backend,
    account: &str,
    credits: i64,
    label: Option<String>,
) -> anyhow::Result<(Account, KeyInfo, String)> {
    let now = clock::now_ms();
    let mut acct = store.ensure_account(account, now).await?;
    if credits > 0 {
        acct = store
            .add_credits(acct.id, credits, "with a new key", now)
            .await?;
    }
    let (key, stored) = keys::generate(label);
    let info = store.insert_key(acct.id, stored, now).await?;
    Ok((acct, info, key))
}

pub async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let store = args.db.open().await?;
    match args.command {
        KeysCommand::Create {
            account,
            credits,
            name,
        } => {
            let (acct, info, key) = create_key(&*store, &account, credits, name).await?;
            println!(
                "account {}: {} credits, key id {} ({}…)",
                acct.name, acct.balance, info.id.0, info.prefix
            );
            println!("The key below is shown this once; xgate keeps only its hash.");
            println!("{key}");
        }
        KeysCommand::List => print_keys(&store.list_keys().await?),
        KeysCommand::Revoke { key_or_id } => {
            let selector = if key_or_id.starts_with(keys::PREFIX) {
                KeySelector::Hash(keys::hash(key_or_id.trim()))
            } else {
                let id = key_or_id
                    .trim()
                    .parse()
                    .with_context(|| format!("{key_or_id:?} is neither a key nor a key id"))?;
                KeySelector::Id(KeyId(id))
            };
            match store.revoke_key(selector, clock::now_ms()).await? {
                Some(info) => {
                    println!("revoked:");
                    print_keys(&[info]);
                }
                None => bail!("no such key"),
            }
        }
    }
    Ok(())
}

pub async fn credits(args: CreditsArgs) -> anyhow::Result<()> {
    let store = args.db.open().await?;
    match args.command {
        CreditsCommand::Add {
            account: name,
            credits,
            note,
        } => {
            let acct = account(&*store, &name).await?;
            let acct = store
                .add_credits(acct.id, credits, &note, clock::now_ms())
                .await?;
            println!("account {}: balance {} credits", acct.name, acct.balance);
        }
        CreditsCommand::Show {
            account: name,
            json,
        } => {
            let acct = account(&*store, &name).await?;
            let audit = store.audit(acct.id).await?;
            let month = clock::month();
            if json {
                let value = serde_json::json!({
                    "account": acct.name,
                    "balance": acct.balance,
                    "credits_added": audit.credits_added,
                    "charged": audit.paid,
                    "charged_failures": audit.charged_failures,
                    "balanced": audit.balanced(),
                    "free_allowance": acct.free_allowance,
                    "free_remaining": acct.free_left(&month),
                    "rate_limit_per_minute": acct.rate_limit,
                });
                println!("{value}");
            } else {
                println!("account:        {}", acct.name);
                println!(
                    "balance:        {} credits (${:.2})",
                    acct.balance,
                    acct.balance as f64 / 100.0
                );
                println!("credits added:  {}", audit.credits_added);
                println!("charged:        {}", audit.paid);
                println!(
                    "free allowance: {} a month, {} left in {month}",
                    acct.free_allowance,
                    acct.free_left(&month)
                );
                match acct.rate_limit {
                    Some(limit) => println!("rate limit:     {limit} requests a minute"),
                    None => println!("rate limit:     the server's default"),
                }
                println!(
                    "books:          {}",
                    if audit.balanced() && audit.charged_failures == 0 {
                        "balanced (balance = credits added - charged)"
                    } else {
                        "NOT BALANCED"
                    }
                );
            }
        }
    }
    Ok(())
}

pub async fn accounts(args: AccountsArgs) -> anyhow::Result<()> {
    let store = args.db.open().await?;
    match args.command {
        AccountsCommand::Set {
            account: name,
            free_allowance,
            rate_limit,
        } => {
            let rate_limit = match rate_limit.as_deref() {
                None => None,
                Some("default") => Some(None),
                Some(n) => Some(Some(
                    n.parse::<u32>().ok().filter(|n| *n > 0).with_context(|| {
                        format!("--rate-limit takes a number above 0 or `default`, got {n:?}")
                    })?,
                )),
            };
            let acct = account(&*store, &name).await?;
            let acct = store
                .set_terms(
                    acct.id,
                    AccountTerms {
                        free_allowance,
                        rate_limit,
                    },
                )
                .await?;
            println!(
                "account {}: free allowance {} a month, rate limit {}",
                acct.name,
                acct.free_allowance,
                acct.rate_limit.map_or_else(
                    || "the server's default".into(),
                    |l| format!("{l} a minute")
                )
            );
        }
    }
    Ok(())
}

pub async fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let store = args.db.open().await?;
    let acct = account(&*store, &args.account).await?;
    let since = match &args.since {
        Some(text) => parse_since(text).with_context(|| {
            format!("--since takes a day (2026-11-01) or an RFC 3339 time, got {text:?}")
        })?,
        None => 0,
    };
    println!(
        "{:<10} {:>9} {:>9} {:>8}",
        "day (UTC)", "requests", "succeeded", "credits"
    );
    for day in store.usage_by_day(acct.id, since).await? {
        println!(
            "{:<10} {:>9} {:>9} {:>8}",
            day.day, day.requests, day.succeeded, day.credits
        );
    }
    println!();
    println!(
        "{:<19}  {:<36}  {:<32} {:>6} {:>5} {:>10}",
        "time (UTC)", "request id", "endpoint", "status", "cost", "latency ms"
    );
    for row in store.usage(acct.id, since, None, args.limit).await? {
        println!(
            "{:<19}  {:<36}  {:<32} {:>6} {:>5} {:>10.2}",
            when(Some(row.at_ms)),
            row.request_id,
            row.endpoint,
            row.status,
            row.paid + row.free,
            row.latency_us as f64 / 1000.0
        );
    }
    Ok(())
}

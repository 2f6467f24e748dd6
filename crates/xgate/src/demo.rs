//! `xgate serve --demo`: demo data and a guide to querying it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use xgate_billing::clock;
use xgate_ingest::formats::jsonl::Jsonl;
use xgate_ingest::synth::{self, SynthConfig};
use xgate_ingest::{Source, ingest};
use xgate_server::AppState;
use xgate_store::accounts::KeySelector;

use crate::accounts_cmd;
use xgate_store::{Backend, Store};

/// The demo's store, unless `--db` names another.
pub const DEMO_DB: &str = "xgate-demo.db";

/// The seed user's media tweets, built into the binary.
const SEED_JSONL: &[u8] = include_bytes!("../../../fixtures/seed/seed-user-96479162-medias.jsonl");
const SEED_USER: u64 = 96479162;

const GENERATED: SynthConfig = SynthConfig {
    users: 4,
    first_user: 0,
    per_user: 250,
    seed: 2026,
};

/// Stores the demo data. Loading is an upsert, so restarting the demo changes nothing.
pub async fn load(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let mut generated = Vec::new();
    synth::write_jsonl(GENERATED, &mut generated)?;
    let sources = vec![
        Source::Bytes {
            name: "seed".into(),
            data: SEED_JSONL.to_vec(),
        },
        Source::Bytes {
            name: "generated".into(),
            data: generated,
        },
    ];
    let mut rejected = Vec::new();
    ingest(store, Some(&Jsonl), sources, |r| {
        rejected.push(r.to_string())
    })
    .await?;
    anyhow::ensure!(rejected.is_empty(), "demo data was rejected: {rejected:?}");
    Ok(())
}

/// The demo account's name.
pub const DEMO_ACCOUNT: &str = "demo";
/// The demo account is topped up to this many credits at each start.
const DEMO_CREDITS: i64 = 1000;

/// A fresh key of the demo account, which is topped up to [`DEMO_CREDITS`]. Keys of earlier demo
/// runs are revoked: each was printed once, and none should linger.
pub async fn key(store: &dyn Backend) -> anyhow::Result<String> {
    let now = clock::now_ms();
    let account = store.ensure_account(DEMO_ACCOUNT, now).await?;
    for old in store.list_keys().await? {
        if old.account == DEMO_ACCOUNT && old.revoked_ms.is_none() {
            store.revoke_key(KeySelector::Id(old.id), now).await?;
        }
    }
    let top_up = DEMO_CREDITS - account.balance;
    let (_, _, key) =
        accounts_cmd::create_key(store, DEMO_ACCOUNT, top_up.max(0), Some("demo".into())).await?;
    Ok(key)
}

/// The demo users and curl lines that work as printed.
pub async fn guide(
    state: &AppState,
    addr: SocketAddr,
    key: Option<&str>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let store = state.store();
    let users = store.users(20).await?;
    writeln!(out)?;
    writeln!(out, "Demo users:")?;
    writeln!(
        out,
        "  {:<22} {:<24} {:>12}",
        "user_id", "username", "media tweets"
    )?;
    for user in &users {
        let name = user
            .username
            .as_deref()
            .map_or_else(String::new, |n| format!("@{n}"));
        writeln!(
            out,
            "  {:<22} {:<24} {:>12}",
            user.user_id, name, user.media_tweets
        )?;
    }

    // A generated user with a big id and many pages, for the continuation example.
    let paged = synth::user_id(1);
    let first = store.media_page(paged, None, 10).await?;
    let last = first.last().map(|t| t.tweet_id);
    let base = format!("http://{addr}");
    let auth = key.map_or_else(String::new, |k| format!(" -H 'Authorization: Bearer {k}'"));
    writeln!(out)?;
    if let Some(key) = key {
        writeln!(
            out,
            "Demo API key (account {DEMO_ACCOUNT}, {DEMO_CREDITS} credits): {key}"
        )?;
        writeln!(out)?;
    }
    writeln!(out, "Try it:")?;
    writeln!(
        out,
        "  curl -s{auth} '{base}/user/medias?user_id={SEED_USER}&limit=2'"
    )?;
    if let Some(last) = last {
        let token = state.tokens().issue(paged, last);
        writeln!(
            out,
            "  curl -s{auth} -X POST {base}/user/medias/continuation -H 'Content-Type: application/json' \
             -d '{{\"user_id\": \"{paged}\", \"continuation_token\": \"{token}\", \"limit\": 10}}'"
        )?;
    }
    if key.is_some() {
        writeln!(out, "  curl -s{auth} {base}/v1/credits")?;
    }
    writeln!(out, "  curl -s {base}/openapi.json")?;
    writeln!(out)?;
    writeln!(out, "API reference in a browser: {base}/docs")?;
    writeln!(out, "MCP endpoint for agents: {base}/mcp")?;
    writeln!(out)?;
    Ok(out)
}

//! `xgate pull`: a user's whole media timeline from any server speaking this API (xgate, or the
//! service it is compatible with), written as JSONL that `xgate ingest` reads.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

/// 5xx answers and transport errors are retried this many times, backing off from 0.5 s.
const RETRIES: u32 = 5;
/// A 429 without `Retry-After` waits this long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// 429s in a row before giving up.
const MAX_RATE_LIMITED: u32 = 30;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The server's base URL, e.g. https://xgate.example.com.
    #[arg(long)]
    server: String,
    /// The API key (sent as `Authorization: Bearer`); not needed by open servers.
    #[arg(long, env = "XGATE_KEY", hide_env_values = true)]
    key: Option<String>,
    /// The user whose media tweets to download.
    #[arg(long)]
    user: String,
    /// Where to write the tweets, one JSON object a line [default: standard output].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Go on from where an interrupted pull into the same `--out` stopped (kept in OUT.state).
    #[arg(long, requires = "out")]
    resume: bool,
    /// Tweets per page.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    limit: u32,
}

/// What a pull into a file has done, kept beside it so it can resume.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct State {
    user: String,
    /// The token of the next page; `None` before the first page and after the last.
    token: Option<String>,
    pages: u64,
    tweets: u64,
    /// Bytes of the output that hold whole pages: a resumed pull cuts anything after them (a
    /// page half written when the pull was stopped) before it goes on.
    bytes: u64,
    done: bool,
}

#[derive(Deserialize)]
struct Page {
    results: Vec<Box<RawValue>>,
    continuation_token: Option<String>,
}

/// Why paging stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Timeline,
    EmptyPage,
    RepeatedToken,
}

pub async fn run(args: PullArgs) -> anyhow::Result<()> {
    let state_path = args.out.as_ref().map(|out| state_path(out));
    let mut state = match (&state_path, args.resume) {
        (Some(path), true) if path.exists() => {
            let state: State = serde_json::from_slice(
                &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("{} is not a pull's state", path.display()))?;
            if state.user != args.user {
                bail!(
                    "{} belongs to a pull of user {}, not {}",
                    path.display(),
                    state.user,
                    args.user
                );
            }
            state
        }
        _ => State {
            user: args.user.clone(),
            ..State::default()
        },
    };
    if state.done {
        eprintln!(
            "xgate: the pull of user {} is already complete ({} tweets)",
            state.user, state.tweets
        );
        return Ok(());
    }
    let resuming = state.pages > 0;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(!resuming)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            if resuming {
                file.set_len(state.bytes)?;
            }
            let file = OpenOptions::new()
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            Box::new(BufWriter::new(file))
        }
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let base = args.server.trim_end_matches('/').to_owned();
    let progress = Progress::new();
    let mut seen: HashSet<String> = state.token.iter().cloned().collect();
    let started = Instant::now();
    let end = loop {
        let body = match &state.token {
            None => json!({"user_id": args.user, "limit": args.limit}),
            Some(token) => {
                json!({"user_id": args.user, "continuation_token": token, "limit": args.limit})
            }
        };
        let path = if state.token.is_some() {
            "/user/medias/continuation"
        } else {
            "/user/medias"
        };
        let page = fetch(
            &client,
            &format!("{base}{path}"),
            args.key.as_deref(),
            &body,
        )
        .await?;
        if page.results.is_empty() {
            break End::EmptyPage;
        }
        for tweet in &page.results {
            out.write_all(tweet.get().as_bytes())?;
            out.write_all(b"\n")?;
            state.bytes += tweet.get().len() as u64 + 1;
        }
        out.flush()?;
        state.pages += 1;
        state.tweets += page.results.len() as u64;
        state.token = page.continuation_token.filter(|t| !t.is_empty());
        let end = match &state.token {
            None => Some(End::Timeline),
            Some(token) if !seen.insert(token.clone()) => Some(End::RepeatedToken),
            Some(_) => None,
        };
        if end.is_some() {
            state.token = None;
        }
        state.done = end.is_some();
        if let Some(path) = &state_path {
            save(path, &state)?;
        }
        progress.update(&state);
        if let Some(end) = end {
            break end;
        }
    };
    progress.finish();
    if let Some(path) = &state_path {
        state.done = true;
        save(path, &state)?;
    }
    let why = match end {
        End::Timeline => "the end of the timeline",
        End::EmptyPage => "an empty page",
        End::RepeatedToken => "a token seen before (the server went round in a circle)",
    };
    eprintln!(
        "xgate: pulled {} tweets in {} pages of user {} from {} to {} in {:.1}s; stopped at {why}",
        state.tweets,
        state.pages,
        args.user,
        base,
        args.out
            .as_ref()
            .map_or("standard output".into(), |p| p.display().to_string()),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn state_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".state");
    PathBuf::from(name)
}

/// Writes the state next to the output, atomically (a new file renamed over the old).
fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    let tmp = path.with_extension("state.tmp");
    let mut file = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(state)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One page: 429s waited out as `Retry-After` says, 5xx and transport errors retried with
/// backoff, any other error explained.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &serde_json::Value,
) -> anyhow::Result<Page> {
    let mut failures = 0;
    let mut limited = 0;
    loop {
        let mut request = client.post(url).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let wait = match request.send().await {
            Ok(response) if response.status().is_success() => {
                let bytes = response.bytes().await?;
                return serde_json::from_slice(&bytes).with_context(|| {
                    format!("{url} answered 200 with something other than a page")
                });
            }
            Ok(response) if response.status().as_u16() == 429 => {
                limited += 1;
                if limited > MAX_RATE_LIMITED {
                    bail!("{url}: still rate limited after {MAX_RATE_LIMITED} waits");
                }
                let wait = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs);
                eprintln!(
                    "xgate: rate limited; waiting {}s as the server asks",
                    wait.as_secs()
                );
                wait
            }
            Ok(response) if response.status().is_server_error() && failures < RETRIES => {
                failures += 1;
                backoff(failures)
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let detail = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("detail").cloned())
                    .map_or(text, |d| d.to_string());
                bail!("{url} answered {status}: {detail}");
            }
            Err(e) if failures < RETRIES => {
                failures += 1;
                eprintln!("xgate: {e}; retrying");
                backoff(failures)
            }
            Err(e) => return Err(e).context(format!("calling {url}")),
        };
        tokio::time::sleep(wait).await;
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500 * 2u64.pow(failures.saturating_sub(1)))
}

/// A spinner on a terminal, a line every 5 s otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            last_line: std::cell::Cell::new(Instant::now()),
        }
    }

    fn update(&self, state: &State) {
        let line = format!("{} tweets, {} pages", state.tweets, state.pages);
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None if self.last_line.get().elapsed() >= Duration::from_secs(5) => {
                self.last_line.set(Instant::now());
                eprintln!("xgate: {line}");
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

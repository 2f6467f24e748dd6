//! The benchmark harness: `cargo run --release -p xgate-bench`.
//!
//! On a fresh machine it builds xgate, generates a 1,000,000-tweet JSONL file (`xgate gen`),
//! ingests it, starts servers pinned to CPU 0, drives them with wrk pinned to CPU 1, and prints
//! one table: the ceiling (a minimal axum server answering a fixed body the size of a real page),
//! xgate's charged continuation endpoint, the same without billing, a page at depth 0 and at depth
//! 100,000 of a 200,000-tweet timeline, ingest throughput, the store's size, and each server's
//! peak memory and core time a request. `docs/BENCHMARKS.md` records its output.

mod wrk;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::{Parser, Subcommand};
use serde_json::json;
use xgate_server::{AppState, ServerConfig};
use xgate_store::Store;
use xgate_store_sqlite::SqliteStore;

#[derive(Debug, Parser)]
#[command(name = "xgate-bench", about = "Benchmark xgate against a ceiling")]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Seconds of load per case.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections for the throughput cases: each case runs at every count given, and
    /// its throughput is the best of them (a server that waits on disk syncs needs more requests
    /// in flight to keep its core busy than one that does not).
    #[arg(long, value_delimiter = ',', default_values_t = [32, 64, 128])]
    connections: Vec<u32>,
    /// Rounds of the ingest and of the throughput cases. Each round runs every throughput case
    /// once at every connection count, the cases one after another, so that a shared machine's
    /// changes of speed fall on all of them alike; a row shows its median round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Users with `--per-user` media tweets each.
    #[arg(long, default_value_t = 800)]
    users: u64,
    #[arg(long, default_value_t = 1000)]
    per_user: u64,
    /// Media tweets of the one deep user (depth is measured at half of it).
    #[arg(long, default_value_t = 200_000)]
    deep: u64,
    /// Keep the data here (and reuse it when present) instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Use this xgate binary instead of building one.
    #[arg(long)]
    xgate: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// (internal) The ceiling: answer every request with the bytes of FILE.
    #[command(hide = true)]
    Ceiling { body: PathBuf, bind: String },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Sub::Ceiling { body, bind }) = &cli.command {
        return ceiling(body, bind);
    }
    run(&cli)
}

/// The ceiling server: axum, one route, one pre-built body, nothing else.
fn ceiling(body: &Path, bind: &str) -> anyhow::Result<()> {
    let bytes = axum::body::Bytes::from(std::fs::read(body)?);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let app = axum::Router::new().fallback(move || {
            let bytes = bytes.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    bytes,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind(bind).await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// How to pin a process to a CPU, if this machine allows it.
struct Pinning {
    server: Vec<String>,
    load: Vec<String>,
    note: String,
}

fn pinning() -> Pinning {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if cpus >= 2 && taskset {
        let pin = |cpu: &str| vec!["taskset".to_owned(), "-c".to_owned(), cpu.to_owned()];
        Pinning {
            server: pin("0"),
            load: pin("1"),
            note: format!("server on CPU 0, wrk on CPU 1 (taskset), of {cpus} CPUs"),
        }
    } else {
        Pinning {
            server: vec![],
            load: vec![],
            note: format!(
                "not pinned ({cpus} CPUs, taskset {})",
                if taskset { "present" } else { "absent" }
            ),
        }
    }
}

fn command(pin: &[String], program: &Path) -> Command {
    match pin.split_first() {
        Some((taskset, args)) => {
            let mut c = Command::new(taskset);
            c.args(args).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A server process, stopped when dropped.
struct Server {
    child: Child,
    base: String,
    /// Kept open: a server must not find its stdout closed.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    /// Starts `cmd`, whose first line of output names its address.
    fn start(mut cmd: Command) -> anyhow::Result<Server> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let mut first = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        stdout.read_line(&mut first)?;
        let base = first
            .trim()
            .rsplit_once("listening on ")
            .map(|(_, url)| url.to_owned())
            .with_context(|| format!("unexpected first line {first:?}"))?;
        Ok(Server {
            child,
            base,
            _stdout: stdout,
        })
    }

    /// Core time the server has used so far, in seconds: user and system, all its threads,
    /// ended ones included (`utime` and `stime` from `/proc`).
    fn cpu_seconds(&self, ticks_per_second: f64) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        Some(cpu_ticks(&stat)? as f64 / ticks_per_second)
    }

    /// Runs `load` against this server and notes what the server spent meanwhile.
    fn measure(
        &self,
        ticks_per_second: f64,
        load: impl FnOnce() -> anyhow::Result<wrk::Report>,
    ) -> anyhow::Result<Run> {
        let before = self.cpu_seconds(ticks_per_second);
        let started = Instant::now();
        let report = load()?;
        let wall = started.elapsed().as_secs_f64();
        let cpu = before
            .zip(self.cpu_seconds(ticks_per_second))
            .map(|(before, after)| Cpu {
                seconds: after - before,
                wall,
            });
        Ok(Run {
            report,
            rss_mib: self.peak_rss_mib(),
            cpu,
            hit_rate: None,
        })
    }

    /// Peak resident memory so far, in MiB (`VmHWM`).
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One blocking HTTP/1.1 request, for setting up (not for measuring).
fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let addr: SocketAddr = base.trim_start_matches("http://").parse()?;
    let mut stream = TcpStream::connect(addr)?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked responses are not expected here"
    );
    Ok((status, response[split + 4..].to_vec()))
}

fn xgate_binary(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(path) = &cli.xgate {
        return Ok(path.clone());
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "xgate",
            "--bin",
            "xgate",
        ])
        .status()
        .context("running cargo to build xgate")?;
    ensure!(status.success(), "building xgate failed");
    let me = std::env::current_exe()?;
    Ok(me.with_file_name("xgate"))
}

fn ensure_wrk() -> anyhow::Result<()> {
    if Command::new("wrk").arg("-v").output().is_ok() {
        return Ok(());
    }
    eprintln!("wrk is missing; installing it with apt-get");
    let ok = Command::new("sh")
        .args(["-c", "apt-get update -qq && apt-get install -y -qq wrk"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok || Command::new("wrk").arg("-v").output().is_err() {
        bail!("this harness drives load with wrk: install it (apt-get install wrk) and run again");
    }
    Ok(())
}

/// One run of a case against one server.
#[derive(Debug, Clone, Copy)]
struct Run {
    report: wrk::Report,
    /// The server's peak memory.
    rss_mib: Option<f64>,
    /// The server's core time during the load.
    cpu: Option<Cpu>,
    /// The share of page requests its cache of rendered pages answered, over the server's life.
    hit_rate: Option<f64>,
}

/// Core time a server used during a run, and how long the run took.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cpu {
    seconds: f64,
    wall: f64,
}

impl Cpu {
    /// Core microseconds a request, over `requests`.
    fn per_request_us(&self, requests: u64) -> f64 {
        self.seconds * 1e6 / requests.max(1) as f64
    }

    /// How busy the server kept one core: 1.0 when its threads ran all the time.
    fn busy(&self) -> f64 {
        self.seconds / self.wall
    }
}

/// A line in the table: one case at one connection count, over its rounds.
struct Row {
    case: String,
    connections: u32,
    /// The median round's report.
    report: wrk::Report,
    /// The median round's core time.
    cpu: Option<Cpu>,
    /// Requests per second of every round, in the order they ran.
    rounds: Vec<f64>,
    /// The highest peak over the rounds.
    rss_mib: Option<f64>,
    /// The median round's page cache hit rate.
    hit_rate: Option<f64>,
}

impl Row {
    /// The row of `runs` (one or more rounds).
    fn of_rounds(case: &str, connections: u32, runs: &[Run]) -> Row {
        let median = median_by(runs, |run| run.report.requests_per_second);
        Row {
            case: case.into(),
            connections,
            report: median.report,
            cpu: median.cpu,
            rounds: runs.iter().map(|r| r.report.requests_per_second).collect(),
            rss_mib: runs.iter().filter_map(|r| r.rss_mib).reduce(f64::max),
            hit_rate: median.hit_rate,
        }
    }

    /// Core microseconds a request in the median round.
    fn core_us(&self) -> Option<f64> {
        self.cpu.map(|cpu| cpu.per_request_us(self.report.requests))
    }
}

/// `utime + stime` of a `/proc/PID/stat` line, in clock ticks. The fields are counted from the
/// end of the command's name, which stands in parentheses and may hold spaces and parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the line; the first after the name is field 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// The clock ticks a second that `/proc` counts CPU time in (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The item of `items` with the median `key` (the upper one of an even count).
fn median_by<T: Copy>(items: &[T], key: impl Fn(&T) -> f64) -> T {
    let mut sorted = items.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted[sorted.len() / 2]
}

/// The median of `values` (the upper one of an even count).
fn median(values: &[f64]) -> f64 {
    median_by(values, |v| *v)
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    ensure_wrk()?;
    let xgate = xgate_binary(cli)?;
    let pin = pinning();
    let temp;
    let dir = match &cli.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempdir()?;
            temp.clone()
        }
    };
    let _cleanup = cli.dir.is_none().then(|| Cleanup(dir.clone()));
    let jsonl = dir.join("tweets.jsonl");
    let db = dir.join("bench.db");
    let total = cli.users * cli.per_user + cli.deep;

    // Data: `users` users, then one deep user, in one JSONL file.
    if !jsonl.exists() {
        eprintln!("generating {total} tweets into {}", jsonl.display());
        let mut out = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&jsonl)?;
        for (users, first, per_user, seed) in
            [(cli.users, 0, cli.per_user, 1), (1, cli.users, cli.deep, 2)]
        {
            let status = Command::new(&xgate)
                .args([
                    "gen",
                    "--users",
                    &users.to_string(),
                    "--first-user",
                    &first.to_string(),
                ])
                .args([
                    "--per-user",
                    &per_user.to_string(),
                    "--seed",
                    &seed.to_string(),
                ])
                .stdout(out.try_clone()?)
                .stderr(Stdio::null())
                .status()?;
            ensure!(status.success(), "xgate gen failed");
        }
        out.flush()?;
    }
    let jsonl_mib = std::fs::metadata(&jsonl)?.len() as f64 / (1 << 20) as f64;

    // Each round ingests into a new store; the last one's store is served below.
    let mut ingests = Vec::new();
    for round in 1..=cli.rounds {
        for suffix in [
            "",
            "-wal",
            "-shm",
            "-ledger",
            "-ledger-wal",
            "-ledger-shm",
            "-charges",
            ".partial",
        ] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        // The generator's output, or the last round's store, may still be on its way to disk:
        // flush it first, so that the ingest is not timed while the kernel writes back 2.3 GB.
        if let Err(e) = Command::new("sync").status() {
            eprintln!("sync did not run ({e}); the ingest may share the disk with pending writes");
        }
        eprintln!("ingesting, round {round}");
        let started = Instant::now();
        let out = Command::new(&xgate)
            .args(["ingest", "--db"])
            .arg(&db)
            .arg(&jsonl)
            .output()?;
        ingests.push(started.elapsed().as_secs_f64());
        ensure!(
            out.status.success(),
            "xgate ingest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store_mib = ["", "-wal", "-ledger", "-ledger-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum::<u64>() as f64
        / (1 << 20) as f64;

    let key_out = Command::new(&xgate)
        .args([
            "keys",
            "create",
            "--account",
            "bench",
            "--credits",
            "1000000000000",
            "--db",
        ])
        .arg(&db)
        .output()?;
    ensure!(key_out.status.success(), "xgate keys create failed");
    let key = String::from_utf8(key_out.stdout)?
        .lines()
        .last()
        .context("no key")?
        .to_owned();

    // Requests: continuation tokens of many users at several depths; the deep user's pages.
    let runtime = tokio::runtime::Runtime::new()?;
    let deep_user = xgate_ingest::synth::user_id(cli.users);
    let (continuations, deep_token) = runtime.block_on(async {
        let store = Arc::new(SqliteStore::open(&db)?);
        let state = AppState::new(store.clone(), ServerConfig::default()).await?;
        let mut bodies = Vec::new();
        for index in 0..cli.users.min(200) {
            let user = xgate_ingest::synth::user_id(index);
            let page = store.media_page(user, None, 500).await?;
            for at in [10usize, 50, 120, 250, 400] {
                if let Some(t) = page.get(at - 1) {
                    let token = state.tokens().issue(user, t.tweet_id);
                    bodies.push(
                        json!({"user_id": user.get(), "continuation_token": token, "limit": 10})
                            .to_string(),
                    );
                }
            }
        }
        let depth = (cli.deep / 2) as usize;
        let deep = store.media_page(deep_user, None, depth).await?;
        let last = deep.last().context("the deep user has tweets")?;
        ensure!(
            deep.len() == depth,
            "the deep user has {} tweets",
            deep.len()
        );
        let token = state.tokens().issue(deep_user, last.tweet_id);
        anyhow::Ok((bodies, token))
    })?;
    drop(runtime);

    let seconds = cli.seconds;
    ensure!(
        !cli.connections.is_empty() && !cli.connections.contains(&0),
        "--connections needs one or more counts above 0"
    );
    let continuation: Vec<wrk::Request> = continuations
        .iter()
        .map(|body| wrk::Request {
            method: "POST",
            path: "/user/medias/continuation".into(),
            body: Some(body.clone()),
        })
        .collect();
    let script = dir.join("continuation.lua");
    wrk::script(&script, &continuation, &[("X-API-Key", &key)])?;

    let serve = |extra: &[&str]| -> anyhow::Result<Server> {
        let mut cmd = command(&pin.server, &xgate);
        cmd.args(["serve", "--db"])
            .arg(&db)
            .args(["--bind", &format!("127.0.0.1:{}", free_port()?)]);
        cmd.args(extra);
        Server::start(cmd)
    };
    let mut rows = Vec::new();

    // A real page, for the ceiling's body.
    let sample = {
        let server = serve(&["--no-billing"])?;
        let (status, body) = http(
            &server.base,
            "POST",
            "/user/medias/continuation",
            &[],
            &continuations[0],
        )?;
        ensure!(status == 200, "a sample page answered {status}");
        body
    };
    let body_file = dir.join("page.json");
    std::fs::write(&body_file, &sample)?;

    // Each throughput case at each connection count, against a fresh server process.
    let ceiling_case = format!("{CEILING}: axum, fixed {} KB body", sample.len() / 1000);
    let start_ceiling = || -> anyhow::Result<Server> {
        let mut cmd = command(&pin.server, &std::env::current_exe()?);
        cmd.arg("ceiling")
            .arg(&body_file)
            .arg(format!("127.0.0.1:{}", free_port()?));
        Server::start(cmd)
    };
    let cases: [(&str, &dyn Fn() -> anyhow::Result<Server>); 6] = [
        (&ceiling_case, &start_ceiling),
        (CHARGED, &|| serve(&[])),
        (BILLING_OFF, &|| serve(&["--no-billing"])),
        (CHARGED_SYNCED, &|| serve(&SYNC_BEFORE_RESPONSE)),
        (CHARGED_COMMITTED, &|| serve(&COMMIT_BEFORE_RESPONSE)),
        (CHARGED_UNCACHED, &|| serve(&NO_PAGE_CACHE)),
    ];
    // Every round runs each case at each connection count, the cases side by side.
    let ticks = ticks_per_second();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); cases.len() * cli.connections.len()];
    for round in 1..=cli.rounds {
        for (c, &connections) in cli.connections.iter().enumerate() {
            for (k, (case, start)) in cases.iter().enumerate() {
                eprintln!("{case}, {connections} connections, round {round}");
                let server = start()?;
                let mut run = server.measure(ticks, || {
                    wrk::run(&pin.load, &server.base, &script, seconds, connections)
                })?;
                run.hit_rate = page_cache_hit_rate(&server.base);
                ensure!(
                    run.report.non_2xx == 0,
                    "{case}: {} answers were not 2xx",
                    run.report.non_2xx
                );
                runs[k * cli.connections.len() + c].push(run);
            }
        }
    }
    for (k, (case, _)) in cases.iter().enumerate() {
        for (c, &connections) in cli.connections.iter().enumerate() {
            let runs = &runs[k * cli.connections.len() + c];
            rows.push(Row::of_rounds(case, connections, runs));
        }
    }

    // Depth: the same user's first page and its page at depth deep/2, a few connections.
    // The store's read is what depth costs, so pages are read from it every time. The two run
    // side by side in rounds, as the throughput cases do, so that a slow spell of the machine
    // falls on both alike; each row is its median round.
    let depth = cli.deep / 2;
    {
        let server = serve(&[&["--no-billing"][..], &NO_PAGE_CACHE].concat())?;
        let cases = [
            (format!("page at depth 0 of {} tweets", cli.deep), "depth-0.lua", wrk::Request {
                method: "POST",
                path: "/user/medias".into(),
                body: Some(json!({"user_id": deep_user.get(), "limit": 10}).to_string()),
            }),
            (format!("page at depth {depth}"), "depth-deep.lua", wrk::Request {
                method: "POST",
                path: "/user/medias/continuation".into(),
                body: Some(json!({"user_id": deep_user.get(), "continuation_token": deep_token, "limit": 10}).to_string()),
            }),
        ];
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); cases.len()];
        for round in 1..=cli.rounds {
            for (k, (case, script, request)) in cases.iter().enumerate() {
                eprintln!("{case}, round {round}");
                let path = dir.join(script);
                wrk::script(&path, std::slice::from_ref(request), &[])?;
                let run = server.measure(ticks, || {
                    wrk::run(&pin.load, &server.base, &path, seconds, DEPTH_CONNECTIONS)
                })?;
                ensure!(
                    run.report.non_2xx == 0,
                    "{case}: {} answers were not 2xx",
                    run.report.non_2xx
                );
                runs[k].push(run);
            }
        }
        for ((case, _, _), runs) in cases.iter().zip(&runs) {
            rows.push(Row::of_rounds(case, DEPTH_CONNECTIONS, runs));
        }
    }

    print_report(cli, &pin, total, jsonl_mib, &ingests, store_mib, &rows);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    cli: &Cli,
    pin: &Pinning,
    total: u64,
    jsonl_mib: f64,
    ingests: &[f64],
    store_mib: f64,
    rows: &[Row],
) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!();
    println!(
        "xgate benchmark: {cpu}; {}; wrk 1 thread, {} s per case, {} rounds (each row: the median round)",
        pin.note, cli.seconds, cli.rounds
    );
    println!(
        "store: {total} tweets ({} users x {}, 1 user x {})",
        cli.users, cli.per_user, cli.deep
    );
    println!();
    println!(
        "| case | connections | req/s | p50 ms | p99 ms | server core µs a request | server core busy | server peak RSS MiB | page cache hits | rounds, req/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    for row in rows {
        let rounds: Vec<String> = row.rounds.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
            row.case,
            row.connections,
            row.report.requests_per_second,
            row.report.p50_ms,
            row.report.p99_ms,
            or_dash(row.core_us().map(|us| format!("{us:.1}"))),
            or_dash(row.cpu.map(|cpu| format!("{:.0}%", cpu.busy() * 100.0))),
            or_dash(row.rss_mib.map(|m| format!("{m:.1}"))),
            or_dash(row.hit_rate.map(|h| format!("{:.1}%", h * 100.0))),
            rounds.join(" / ")
        );
    }
    let ingest_seconds = median(ingests);
    let rate = total as f64 / ingest_seconds;
    let each: Vec<String> = ingests.iter().map(|s| format!("{s:.1}")).collect();
    println!();
    println!(
        "ingest: {total} tweets ({jsonl_mib:.0} MiB of JSONL) in {ingest_seconds:.1} s (median; rounds {} s) = {rate:.0} tweets/s; store {store_mib:.0} MiB",
        each.join(" / ")
    );
    let [ceiling, billed, unbilled, synced, committed, uncached] = [
        CEILING,
        CHARGED,
        BILLING_OFF,
        CHARGED_SYNCED,
        CHARGED_COMMITTED,
        CHARGED_UNCACHED,
    ]
    .map(|case| best(rows, case).expect("every case ran"));
    let depth_rows = &rows[rows.len() - 2..];
    let (shallow, deep) = (depth_rows[0].report, depth_rows[1].report);
    let peak = rows
        .iter()
        .filter(|r| !r.case.starts_with(CEILING))
        .filter_map(|r| r.rss_mib)
        .fold(0.0, f64::max);
    println!();
    println!("throughput (best median over the connection counts):");
    for row in [ceiling, billed, unbilled, synced, committed, uncached] {
        let core = row
            .core_us()
            .zip(row.cpu)
            .map_or_else(String::new, |(us, cpu)| {
                format!(
                    "; {us:.1} µs of the server's core a request, the core {:.0}% busy",
                    cpu.busy() * 100.0
                )
            });
        println!(
            "  {}: {:.0} req/s at {} connections{core}",
            row.case, row.report.requests_per_second, row.connections
        );
    }
    if let Some((charged, off)) = billed.core_us().zip(unbilled.core_us()) {
        println!(
            "  billing's core time a request: {:.1} µs (billing off / charged in core time: {:.2})",
            charged - off,
            off / charged
        );
    }
    println!(
        "  charged / billing off with each charge synced before its response: {:.2}",
        synced.report.requests_per_second / unbilled.report.requests_per_second
    );
    println!(
        "  charged / billing off with each charge committed before its response: {:.2}",
        committed.report.requests_per_second / unbilled.report.requests_per_second
    );
    println!(
        "  charged / ceiling with every page read from the store (page cache off): {:.2}",
        uncached.report.requests_per_second / ceiling.report.requests_per_second
    );
    let (ceiling, billed, unbilled) = (ceiling.report, billed.report, unbilled.report);
    println!();
    println!("| budget | measured | target | |");
    println!("|---|---|---|---|");
    let check = |name: &str, shown: String, target: &str, ok: bool| {
        println!(
            "| {name} | {shown} | {target} | {} |",
            if ok { "met" } else { "MISSED" }
        );
    };
    let r = billed.requests_per_second / ceiling.requests_per_second;
    check(
        "charged / ceiling (best req/s)",
        format!("{r:.2}"),
        ">= 0.50",
        r >= 0.5,
    );
    let r = billed.requests_per_second / unbilled.requests_per_second;
    check(
        "charged / billing off (best req/s)",
        format!("{r:.2}"),
        ">= 0.80",
        r >= 0.8,
    );
    let r = deep.p50_ms / shallow.p50_ms;
    check(
        "deep / shallow (p50 latency)",
        format!("{r:.2}"),
        "<= 1.5",
        r <= 1.5,
    );
    check(
        "ingest (tweets/s)",
        format!("{rate:.0}"),
        ">= 100000",
        rate >= 100_000.0,
    );
    check(
        "server peak RSS (MiB)",
        format!("{peak:.1}"),
        "<= 100 MB (95.4 MiB)",
        peak <= 95.4,
    );
}

/// The share of page requests the server at `base` answered from its cache of rendered pages,
/// from its `/metrics`; `None` where there are no such counters (the ceiling) or no requests.
fn page_cache_hit_rate(base: &str) -> Option<f64> {
    let (status, body) = http(base, "GET", "/metrics", &[], "").ok()?;
    if status != 200 {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    let count = |result: &str| -> Option<f64> {
        let name = format!("xgate_page_cache_requests_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&name))
            .and_then(|n| n.trim().parse().ok())
    };
    let (hits, misses) = (count("hit").unwrap_or(0.0), count("miss").unwrap_or(0.0));
    (hits + misses > 0.0).then(|| hits / (hits + misses))
}

/// A case's throughput: its row with the most requests per second, over the connection counts.
fn best<'a>(rows: &'a [Row], case: &str) -> Option<&'a Row> {
    rows.iter()
        .filter(|r| r.case.starts_with(case))
        .max_by(|a, b| {
            a.report
                .requests_per_second
                .total_cmp(&b.report.requests_per_second)
        })
}

/// The start of the ceiling case's name.
const CEILING: &str = "ceiling";
/// Charged, as `xgate serve` charges by default.
const CHARGED: &str = "xgate continuation, charged";
const BILLING_OFF: &str = "xgate continuation, billing off";
/// Charged, every page read from the store. Its name must not start with [`CHARGED`].
const CHARGED_UNCACHED: &str = "xgate continuation, page cache off, charged";
/// Charged, each charge synced before its response leaves. Nor must this one's.
const CHARGED_SYNCED: &str = "xgate continuation, each charge synced before its response";
const SYNC_BEFORE_RESPONSE: [&str; 2] = ["--ledger-sync", "before-response"];
/// Charged, each charge committed before its response leaves, its sync begun (the default until
/// the charge journal took its place). Nor must this one's name start with [`CHARGED`].
const CHARGED_COMMITTED: &str = "xgate continuation, each charge committed before its response";
const COMMIT_BEFORE_RESPONSE: [&str; 2] = ["--ledger-sync", "background"];
const NO_PAGE_CACHE: [&str; 2] = ["--page-cache-mib", "0"];
/// Connections for the depth cases: few, so that latency is the page's own cost.
const DEPTH_CONNECTIONS: u32 = 4;

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("xgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes the temporary data directory at the end.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(requests_per_second: f64) -> wrk::Report {
        wrk::Report {
            requests_per_second,
            p50_ms: 1.0,
            p99_ms: 2.0,
            non_2xx: 0,
            requests: 1,
        }
    }

    fn run(requests_per_second: f64, rss_mib: Option<f64>, cpu: Option<Cpu>) -> Run {
        Run {
            report: report(requests_per_second),
            rss_mib,
            cpu,
            hit_rate: None,
        }
    }

    fn row(case: &str, connections: u32, requests_per_second: f64) -> Row {
        Row::of_rounds(case, connections, &[run(requests_per_second, None, None)])
    }

    #[test]
    fn a_row_is_its_median_round_and_its_highest_peak() {
        let cpu = |seconds| {
            Some(Cpu {
                seconds,
                wall: 10.0,
            })
        };
        let runs = [
            run(30_000.0, Some(60.0), cpu(9.0)),
            run(10_000.0, Some(70.0), cpu(8.0)),
            run(20_000.0, None, cpu(9.5)),
        ];
        let row = Row::of_rounds(CHARGED, 64, &runs);
        assert_eq!(row.report.requests_per_second, 20_000.0);
        assert_eq!(row.cpu, cpu(9.5), "the median round's core time");
        assert_eq!(row.rounds, [30_000.0, 10_000.0, 20_000.0]);
        assert_eq!(row.rss_mib, Some(70.0));
        assert_eq!(median(&[9.0, 12.0, 10.0]), 10.0);
        assert_eq!(median(&[4.0]), 4.0);
    }

    #[test]
    fn a_case_s_throughput_is_its_best_rate_over_the_connection_counts() {
        let rows = [
            row(CHARGED, 32, 20_000.0),
            row(CHARGED, 128, 26_000.0),
            row(CHARGED, 64, 25_000.0),
            row(BILLING_OFF, 32, 35_000.0),
            row(BILLING_OFF, 128, 34_000.0),
        ];
        let charged = best(&rows, CHARGED).unwrap();
        assert_eq!(charged.connections, 128);
        assert_eq!(best(&rows, BILLING_OFF).unwrap().connections, 32);
        assert!(best(&rows, CEILING).is_none());
    }

    #[test]
    fn no_case_is_found_under_another_s_name() {
        let names = [
            CHARGED,
            BILLING_OFF,
            CHARGED_UNCACHED,
            CHARGED_SYNCED,
            CHARGED_COMMITTED,
        ];
        for a in names {
            for b in names.iter().filter(|&&b| b != a) {
                assert!(!a.starts_with(b), "{a:?} starts with {b:?}");
            }
        }
    }

    #[test]
    fn core_time_is_counted_per_request_and_against_the_wall_clock() {
        let cpu = Cpu {
            seconds: 4.5,
            wall: 5.0,
        };
        assert!((cpu.per_request_us(150_000) - 30.0).abs() < 1e-9);
        assert!((cpu.busy() - 0.9).abs() < 1e-9);
        let mut row = row(CHARGED, 64, 30_000.0);
        row.report.requests = 150_000;
        row.cpu = Some(cpu);
        assert_eq!(row.core_us().map(f64::round), Some(30.0));
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name_whatever_it_holds() {
        // proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 900 0 3 0 1234 567 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(line), Some(1234 + 567));
        assert_eq!(cpu_ticks("4242 (cut short) S 1 2"), None);
        assert_eq!(cpu_ticks("no name here"), None);
        // This very process's line reads too.
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(cpu_ticks(&own).is_some(), "{own}");
    }
}

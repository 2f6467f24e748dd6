//! The real `xgate` binary: its commands, and `xgate serve` on a free port, over real HTTP.

mod billing;
mod docs;
mod ingest;
mod mcp;
mod postgres;
mod pull;
mod serve;
mod upstream;

use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use serde_json::Value;

pub const XGATE: &str = env!("CARGO_BIN_EXE_xgate");
pub const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/seed/seed-user-96479162-medias.jsonl"
);
pub const SEED_RESPONSE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/seed/seed-example-response.json"
);

/// Runs an `xgate` command to completion.
pub fn xgate(args: &[&str]) -> Output {
    Command::new(XGATE)
        .args(args)
        .env_remove("XGATE_DB")
        .env_remove("XGATE_BIND")
        .output()
        .expect("xgate runs")
}

/// Runs an `xgate` command that must succeed; returns its standard output.
pub fn xgate_ok(args: &[&str]) -> String {
    let out = xgate(args);
    assert!(
        out.status.success(),
        "xgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `xgate keys create`, returning the key (the last line of its output).
pub fn create_key(db: &Path, account: &str, credits: u64) -> String {
    let out = xgate_ok(&[
        "keys",
        "create",
        "--db",
        db.to_str().unwrap(),
        "--account",
        account,
        "--credits",
        &credits.to_string(),
    ]);
    out.lines().last().unwrap().to_owned()
}

/// `xgate credits show --json`.
pub fn books(db: &Path, account: &str) -> Value {
    let out = xgate_ok(&[
        "credits",
        "show",
        "--json",
        "--db",
        db.to_str().unwrap(),
        "--account",
        account,
    ]);
    serde_json::from_str(&out).unwrap()
}

/// A running `xgate serve`, stopped when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub stdout: Lines<BufReader<ChildStdout>>,
    pub log: PathBuf,
}

impl Server {
    /// Starts `xgate serve --db DIR/xgate.db --bind 127.0.0.1:0 EXTRA...` in `dir`, its log in
    /// `DIR/server.log`.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(dir, extra, &[])
    }

    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let db = dir.join("xgate.db");
        Self::start_on(dir, db.to_str().unwrap(), extra, env)
    }

    /// Starts `xgate serve --db DB`: a file, or a PostgreSQL URL; its log in `DIR/server.log`.
    pub fn start_on(dir: &Path, db: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let log = dir.join("server.log");
        let mut child = Command::new(XGATE)
            .args(["serve", "--bind", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("XGATE_DB")
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("xgate serve starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        // The server binds before it prints, so once this line is read it accepts connections.
        let first = stdout.next().expect("a first line").unwrap();
        let base = first
            .split_once("listening on ")
            .map(|(_, url)| url.to_owned())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"));
        Server {
            child,
            base,
            stdout,
            log,
        }
    }

    /// Sends SIGTERM and returns whether the server exited cleanly.
    pub fn stop(mut self) -> bool {
        self.signal("-TERM");
        self.child.wait().unwrap().success()
    }

    /// Sends SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    fn signal(&mut self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

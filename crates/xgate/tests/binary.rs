//! The real `xgate` binary: generate, ingest, serve on a free port, and talk HTTP to it.

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use serde_json::{Value, json};

const XGATE: &str = env!("CARGO_BIN_EXE_xgate");
const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/seed/seed-user-96479162-medias.jsonl"
);
const SEED_RESPONSE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/seed/seed-example-response.json"
);

fn xgate(args: &[&str]) -> Output {
    Command::new(XGATE)
        .args(args)
        .env_remove("XGATE_DB")
        .env_remove("XGATE_BIND")
        .output()
        .expect("xgate runs")
}

/// A running `xgate serve`, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    base: String,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let db = dir.join("xgate.db");
        let mut child = Command::new(XGATE)
            .args(["serve", "--bind", "127.0.0.1:0", "--db"])
            .arg(&db)
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
        }
    }

    /// Sends SIGTERM and returns whether the server exited cleanly.
    fn stop(mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap().success()
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

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn generate_ingest_serve_page_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("gen.jsonl");
    let db = dir.path().join("xgate.db");
    let db = db.to_str().unwrap();

    let out = xgate(&[
        "gen",
        "--users",
        "2",
        "--per-user",
        "25",
        "--seed",
        "9",
        "--out",
        generated.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = xgate(&["ingest", "--db", db, generated.to_str().unwrap(), SEED]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("57 tweets read"), "{summary}");

    // A bad line is reported with its place; the good lines around it are stored.
    let bad = dir.path().join("bad.jsonl");
    let good = std::fs::read_to_string(SEED).unwrap();
    let first_line = good.lines().next().unwrap();
    std::fs::write(&bad, format!("{first_line}\n{{oops\n")).unwrap();
    let out = xgate(&["ingest", "--db", db, bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:2", bad.display())), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 unchanged"));

    let server = Server::start(dir.path(), &[]);
    let base = server.base.clone();
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);

    // The seed user's page is the seed example's results, value for value.
    let (status, page) = post(&base, "/user/medias", json!({"user_id": 96479162})).await;
    assert_eq!(status, 200);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(SEED_RESPONSE).unwrap()).unwrap();
    assert_eq!(page["results"], expected["results"]);

    // Page through a generated user with a big id, given as a string.
    let user = "1300000000001000003";
    let (_, first) = post(&base, "/user/medias", json!({"user_id": user, "limit": 20})).await;
    let token = first["continuation_token"].as_str().unwrap().to_owned();
    let (status, second) = post(
        &base,
        "/user/medias/continuation",
        json!({"user_id": user, "continuation_token": token}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(second["results"].as_array().unwrap().len(), 5);
    assert_eq!(second["continuation_token"], Value::Null);

    let (status, error) = post(
        &base,
        "/user/medias/continuation",
        json!({"user_id": 1, "continuation_token": token}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(error["detail"][0]["type"], "value_error.continuation_token");

    assert!(server.stop(), "graceful shutdown exits 0");

    // After a restart, the token issued before it still works.
    let server = Server::start(dir.path(), &[]);
    let (status, again) = post(
        &server.base,
        "/user/medias/continuation",
        json!({"user_id": user, "continuation_token": token}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again, second);
    assert!(server.stop());
}

#[tokio::test]
async fn the_demo_prints_curl_lines_that_work_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--demo"]);
    let mut curls = Vec::new();
    for line in server.stdout.by_ref() {
        let line = line.unwrap();
        if line.trim_start().starts_with("curl ") {
            curls.push(line.trim().to_owned());
        }
        if line.contains("/openapi.json") {
            break;
        }
    }
    assert_eq!(curls.len(), 3, "{curls:?}");
    for curl in &curls {
        let out = Command::new("sh")
            .arg("-c")
            .arg(curl)
            .output()
            .expect("sh and curl are installed");
        assert!(
            out.status.success(),
            "{curl}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let body: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{curl}: {e}"));
        if curl.contains("/user/medias") {
            let results = body["results"].as_array().unwrap();
            assert!(!results.is_empty(), "{curl}");
        } else {
            assert!(body["paths"].is_object());
        }
    }
    // The continuation example continues a real timeline: it returns the second page.
    let continuation = curls.iter().find(|c| c.contains("continuation")).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(continuation)
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["results"].as_array().unwrap().len(), 10);
    assert!(server.terminate());
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let out = xgate(&["gen", "--users", "0", "--per-user", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--users"));
    let out = xgate(&["ingest", "--db", "/nonexistent-dir/x.db", "x.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("opening the store"));
}

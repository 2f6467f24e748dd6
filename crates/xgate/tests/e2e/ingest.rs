//! Ingest from the command line: the archive and timeline formats, memory on a large archive,
//! and tweets served at once by a server that runs meanwhile.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::{Server, create_key, xgate, xgate_ok};

fn fixture(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(path)
        .to_str()
        .unwrap()
        .to_owned()
}

/// Runs `xgate ARGS` with its output discarded; returns whether it succeeded and its peak
/// resident set in KiB, as the kernel accounts it for that one process.
#[expect(clippy::zombie_processes, reason = "the child is reaped by wait4")]
fn peak_rss_kib(args: &[&str]) -> (bool, i64) {
    let child = Command::new(crate::XGATE)
        .args(args)
        .env_remove("XGATE_DB")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("xgate runs");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data, all-zero valid; `wait4` reaps our own child, whose `Child`
    // is then never waited on again.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, usage.ru_maxrss)
}

#[test]
fn a_large_archive_is_ingested_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let db = dir.path().join("x.db");
    xgate_ok(&[
        "gen",
        "--users",
        "1",
        "--per-user",
        "130000",
        "--format",
        "x-archive",
        "--out",
        archive.to_str().unwrap(),
    ]);
    let size = std::fs::metadata(archive.join("data/tweets.js"))
        .unwrap()
        .len();
    let bound_kib = 200 * 1024;
    assert!(
        size > 250 << 20,
        "the archive ({size} bytes) is larger than the memory bound"
    );
    let (ok, peak) = peak_rss_kib(&[
        "ingest",
        "--db",
        db.to_str().unwrap(),
        archive.to_str().unwrap(),
    ]);
    assert!(ok, "ingest failed");
    assert!(
        peak < bound_kib,
        "peak RSS {peak} KiB over {bound_kib} KiB for a {size}-byte tweets.js"
    );
}

/// A load into a new store is whole or nothing: killed midway (here with one batch written and
/// the rest of its input not yet come), it leaves no store, and the next load builds it whole.
#[test]
fn a_load_into_a_new_store_killed_midway_leaves_no_store() {
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let partial = dir.path().join("x.db.partial");
    // More tweets than one batch of the load (16,384).
    let lines = xgate_ok(&["gen", "--users", "1", "--per-user", "20000"]);
    let fifo = dir.path().join("feed.jsonl");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut load = Command::new(crate::XGATE)
        .args(["ingest", "--format", "jsonl", "--db"])
        .args([&db, &fifo])
        .env_remove("XGATE_DB")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut feed = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    feed.write_all(lines.as_bytes()).unwrap();
    // The feed stays open: the load has read everything and waits for more.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 1 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the load wrote nothing into {}",
            partial.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    load.kill().unwrap();
    load.wait().unwrap();
    drop(feed);
    assert!(!db.exists(), "a killed load into a new store left a store");

    let file = dir.path().join("tweets.jsonl");
    std::fs::write(&file, &lines).unwrap();
    let out = xgate_ok(&[
        "ingest",
        "--db",
        db.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(
        out.contains("20000 tweets read") && out.contains("20000 stored new or changed"),
        "every tweet is new to the store: {out}"
    );
    assert!(
        !partial.exists(),
        "the next load replaced what the killed one left"
    );
}

async fn page(base: &str, key: &str, user: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}/user/medias"))
        .bearer_auth(key)
        .json(&json!({"user_id": user, "limit": 20}))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn archives_and_timelines_ingested_while_serving_are_served_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("xgate.db");
    let key = create_key(&db, "reader", 100);
    let server = Server::start(dir.path(), &[]);

    let (status, body) = page(&server.base, &key, "1400000000000000042").await;
    assert_eq!(
        (status, &body["detail"]),
        (404, &json!("user not found")),
        "{body}"
    );

    let out = xgate(&[
        "ingest",
        "--db",
        db.to_str().unwrap(),
        &fixture("x-archive"),
        &fixture("x-graphql/user-media.json"),
        &fixture("x-graphql/user-tweets.json"),
    ]);
    // One tweet of the archive and one of the timeline are refused: exit 3, the rest stored.
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("data/tweets.js[7]: no created_at"),
        "{stderr}"
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("3 sources, 15 tweets read"), "{summary}");

    let (status, body) = page(&server.base, &key, "1400000000000000042").await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tweet_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 11, "{ids:?}");
    assert_eq!(ids[0], "1790000000000000404");
    assert_eq!(ids[10], "250000000000000009");
    let (status, body) = page(&server.base, &key, "1300000000001000007").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    assert!(server.stop());
}

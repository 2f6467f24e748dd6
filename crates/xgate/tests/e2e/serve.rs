//! Serving: generate, ingest, serve, page, restart; the demo; bad arguments.

use std::process::Command;

use serde_json::{Value, json};

use crate::{SEED, SEED_RESPONSE, Server, create_key, xgate};

async fn post(base: &str, key: &str, path: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
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
    // JSONL and a saved API response, each told apart by its first bytes; the response holds the
    // seed tweets again, so they are found unchanged.
    let out = xgate(&[
        "ingest",
        "--db",
        db,
        generated.to_str().unwrap(),
        SEED,
        SEED_RESPONSE,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("64 tweets read"), "{summary}");
    assert!(
        summary.contains("57 stored new or changed, 7 unchanged"),
        "{summary}"
    );

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
    let out = xgate(&["ingest", "--keep-going", "--db", db, bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "--keep-going exits 0");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}:2", bad.display())));

    let key = create_key(std::path::Path::new(db), "test", 100);
    let server = Server::start(dir.path(), &[]);
    let base = server.base.clone();
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);

    // The seed user's page is the seed example's results, value for value.
    let (status, page) = post(&base, &key, "/user/medias", json!({"user_id": 96479162})).await;
    assert_eq!(status, 200);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(SEED_RESPONSE).unwrap()).unwrap();
    assert_eq!(page["results"], expected["results"]);

    // Page through a generated user with a big id, given as a string.
    let user = "1300000000001000003";
    let (_, first) = post(
        &base,
        &key,
        "/user/medias",
        json!({"user_id": user, "limit": 20}),
    )
    .await;
    let token = first["continuation_token"].as_str().unwrap().to_owned();
    let (status, second) = post(
        &base,
        &key,
        "/user/medias/continuation",
        json!({"user_id": user, "continuation_token": token}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(second["results"].as_array().unwrap().len(), 5);
    assert_eq!(second["continuation_token"], Value::Null);

    let (status, error) = post(
        &base,
        &key,
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
        &key,
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
    assert_eq!(curls.len(), 4, "{curls:?}");
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
        } else if curl.contains("/v1/credits") {
            assert_eq!(body["account"], "demo", "{curl}");
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
    assert!(server.stop());
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let out = xgate(&["gen", "--users", "0", "--per-user", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--users"));
    let out = xgate(&["ingest", "--db", "/nonexistent-dir/x.db", "x.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("opening the store"));
    let out = xgate(&["serve", "--ledger-sync", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("before-response"));
    // PostgreSQL decides for itself when a commit is on disk: refused before connecting.
    let out = xgate(&[
        "serve",
        "--db",
        "postgres://127.0.0.1:1/none",
        "--ledger-sync",
        "background",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("synchronous_commit"));
    // A charge journal beside the store that is none: refused, and left as it was, by a server
    // asked for the journal and by one that uses it by default.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let journal = dir.path().join("x.db-charges");
    std::fs::write(&journal, b"not a journal").unwrap();
    let db = db.to_str().unwrap();
    for options in [&["--ledger-sync", "journal"][..], &[]] {
        let out = xgate(&[&["serve", "--db", db][..], options].concat());
        assert_eq!(out.status.code(), Some(1), "{options:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("not a charge journal"),
            "{options:?}: {stderr}"
        );
        assert_eq!(std::fs::read(&journal).unwrap(), b"not a journal");
    }
}

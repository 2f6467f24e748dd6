//! `xgate pull` against a real `xgate serve`, and against a misbehaving server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

use crate::{Server, create_key, xgate, xgate_ok};

/// The server's own pages, one tweet a line: what a pull must write.
async fn expected(base: &str, key: &str, user: &str) -> (Vec<String>, Vec<String>) {
    let client = reqwest::Client::new();
    let mut lines = Vec::new();
    let mut tokens = Vec::new();
    let mut body = json!({"user_id": user, "limit": 20});
    let mut path = "/user/medias";
    loop {
        let page: Value = client
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for tweet in page["results"].as_array().unwrap() {
            lines.push(serde_json::to_string(tweet).unwrap());
        }
        match page["continuation_token"].as_str() {
            Some(token) => {
                tokens.push(token.to_owned());
                body = json!({"user_id": user, "continuation_token": token, "limit": 20});
                path = "/user/medias/continuation";
            }
            None => return (lines, tokens),
        }
    }
}

fn parsed(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_whole_timeline_is_pulled_and_an_interrupted_pull_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("xgate.db");
    let generated = dir.path().join("gen.jsonl");
    xgate_ok(&[
        "gen",
        "--users",
        "1",
        "--per-user",
        "95",
        "--out",
        generated.to_str().unwrap(),
    ]);
    xgate_ok(&[
        "ingest",
        "--db",
        db.to_str().unwrap(),
        generated.to_str().unwrap(),
    ]);
    let key = create_key(&db, "puller", 1_000);
    let server = Server::start(dir.path(), &[]);
    let user = "100000";
    let (want, tokens) = expected(&server.base, &key, user).await;
    assert_eq!(want.len(), 95);

    let out = dir.path().join("pulled.jsonl");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "pull",
            "--server",
            &server.base,
            "--key",
            &key,
            "--user",
            user,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        xgate(&args.iter().map(|s| &**s).collect::<Vec<_>>())
    };
    let done = run(&[]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let summary = String::from_utf8_lossy(&done.stderr);
    assert!(summary.contains("pulled 95 tweets in 5 pages"), "{summary}");
    assert!(summary.contains("the end of the timeline"), "{summary}");
    let got: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(parsed(&got), parsed(&want));
    // The file is what `xgate ingest` reads.
    let again = dir.path().join("again.db");
    let ingested = xgate_ok(&[
        "ingest",
        "--db",
        again.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(ingested.contains("95 tweets read"), "{ingested}");

    // As if stopped after two pages, in the middle of writing the third.
    let two_pages: String = want[..40].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&out, format!("{two_pages}{{\"tweet_id\": \"12")).unwrap();
    let state = json!({
        "user": user, "token": tokens[1], "pages": 2, "tweets": 40,
        "bytes": two_pages.len(), "done": false
    });
    let state_path = dir.path().join("pulled.jsonl.state");
    std::fs::write(&state_path, state.to_string()).unwrap();
    let resumed = run(&["--resume"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let got: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        parsed(&got),
        parsed(&want),
        "the cut page is replaced, nothing repeats"
    );
    let finished = run(&["--resume"]);
    assert!(String::from_utf8_lossy(&finished.stderr).contains("already complete"));

    // A bad key is a clear error.
    let bad = xgate(&[
        "pull",
        "--server",
        &server.base,
        "--key",
        "xg_live_nope",
        "--user",
        user,
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(server.stop());
}

/// A server that rate-limits, fails once, then goes round in a circle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out_errors_retried_and_a_repeated_token_ends_the_pull() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let tweet = serde_json::to_value(xgate_model::sample::tweet(5, 7, true)).unwrap();
    let handler = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let tweet = tweet.clone();
        async move {
            match n {
                0 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "{}").into_response(),
                1 => (StatusCode::BAD_GATEWAY, "{}").into_response(),
                _ => axum::Json(json!({"results": [tweet], "continuation_token": "same"}))
                    .into_response(),
            }
        }
    };
    let app = Router::new()
        .route("/user/medias", post(handler.clone()))
        .route("/user/medias/continuation", post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.jsonl");
    let base2 = base.clone();
    let out2 = out.clone();
    let done = tokio::task::spawn_blocking(move || {
        xgate(&[
            "pull",
            "--server",
            &base2,
            "--user",
            "7",
            "--out",
            out2.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert!(stderr.contains("rate limited; waiting 1s"), "{stderr}");
    assert!(stderr.contains("a token seen before"), "{stderr}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "429, 502, page, the same token again"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);
}

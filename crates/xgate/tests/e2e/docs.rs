//! `/docs` in a real headless browser (Debian's chromium): the page renders every operation of
//! `/openapi.json`, with nothing fetched from elsewhere. Under CI a missing browser fails this
//! test; elsewhere it is skipped, and says so on standard error.

use std::io::Write as _;
use std::process::Command;

use serde_json::Value;

use crate::Server;

fn browser() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new("which")
                .arg(b)
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "a headless browser is required under CI (apt-get install chromium)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "xgate: no chromium here: the /docs browser test is SKIPPED (apt-get install chromium)"
        );
    }
    found
}

#[tokio::test]
async fn the_docs_page_renders_every_operation_in_a_browser() {
    let Some(browser) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let doc: Value = client
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                ids.push(id.to_owned());
            }
        }
    }
    assert!(ids.len() >= 7, "{ids:?}");
    let home = client
        .get(&server.base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("href=\"/docs\""), "{home}");

    let url = format!("{}/docs", server.base);
    let profile = dir.path().join("browser-profile");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--virtual-time-budget=10000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--dump-dom", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-ready=\"true\""),
        "the page did not load the document: {dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in &ids {
        assert!(
            dom.contains(&format!("data-operation-id=\"{id}\"")),
            "{id} is not on the page"
        );
    }
    assert!(server.stop());
}

//! `/mcp` with a real MCP client: the official Python SDK (`pip install mcp`). Under CI a missing
//! SDK fails this test; elsewhere it is skipped, and says so on standard error.

use std::io::Write as _;
use std::process::Command;

use serde_json::{Value, json};

use crate::{SEED, Server, books, create_key, xgate_ok};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.py");

fn sdk_present() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import mcp.client.streamable_http"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "the MCP Python SDK is required under CI (python3 -m pip install mcp)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "xgate: the MCP Python SDK is not installed: the MCP client test is SKIPPED here \
             (python3 -m pip install mcp)"
        );
    }
    found
}

#[tokio::test]
async fn an_agent_pages_a_user_through_the_mcp_tools_and_pays_as_for_rest() {
    if !sdk_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("xgate.db");
    xgate_ok(&["ingest", "--db", db.to_str().unwrap(), SEED]);
    let key = create_key(&db, "agent", 100);
    let server = Server::start(dir.path(), &[]);

    let base = server.base.clone();
    let key2 = key.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([CLIENT, &base, &key2, "96479162", "3"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["server"], "xgate");
    assert_eq!(report["protocol"], "2025-11-25");
    assert_eq!(
        report["tools"],
        json!(["user_medias", "user_medias_continuation"])
    );
    assert_eq!(
        report["required"]["user_medias_continuation"],
        json!(["continuation_token", "user_id"])
    );

    // The same tweets, in the same order, as the REST API pages them.
    let rest: Value = reqwest::Client::new()
        .post(format!("{}/user/medias", server.base))
        .bearer_auth(&key)
        .json(&json!({"user_id": "96479162", "limit": 20}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rest_ids: Vec<&Value> = rest["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["tweet_id"])
        .collect();
    let mcp_ids: Vec<&Value> = report["ids"].as_array().unwrap().iter().collect();
    assert_eq!(mcp_ids, rest_ids);
    assert_eq!(report["pages"], 3, "7 tweets, 3 a page");
    assert_eq!(report["costs"], json!([1, 1, 1]));
    assert_eq!(report["forged_is_error"], true);
    assert!(
        report["forged_text"]
            .as_str()
            .unwrap()
            .contains("continuation_token"),
        "{report}"
    );
    assert!(server.stop());

    // Three data calls and one REST call charged; the handshake, the tool list and the failed
    // call were free.
    let books = books(&db, "agent");
    assert_eq!(books["balance"], 100 - 4, "{books}");
}

#[tokio::test]
async fn mcp_needs_the_same_key_as_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let res = client
        .post(format!("{}/mcp", server.base))
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let key = create_key(&dir.path().join("xgate.db"), "a", 0);
    let res = client
        .post(format!("{}/mcp", server.base))
        .bearer_auth(&key)
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["result"]["tools"].as_array().unwrap().len(), 2);
    // A notification is accepted with no body; an unknown method is a JSON-RPC error.
    let res = client
        .post(format!("{}/mcp", server.base))
        .bearer_auth(&key)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let res: Value = client
        .post(format!("{}/mcp", server.base))
        .bearer_auth(&key)
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "server/discover"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["error"]["code"], -32601);
    assert!(server.stop());
}

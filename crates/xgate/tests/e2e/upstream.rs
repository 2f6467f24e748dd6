//! Live data between two real `xgate serve` processes: one serves its store, the other has no
//! data and uses the first as its relay upstream, configured by environment variables alone.

use serde_json::{Value, json};

use crate::{SEED, Server, create_key, xgate_ok};

async fn page(base: &str, key: Option<&str>, body: Value) -> (u16, String, Value) {
    let path = if body.get("continuation_token").is_some() {
        "/user/medias/continuation"
    } else {
        "/user/medias"
    };
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let res = request.send().await.unwrap();
    let status = res.status().as_u16();
    let cache = res
        .headers()
        .get("x-cache")
        .map_or(String::new(), |v| v.to_str().unwrap().to_owned());
    (status, cache, res.json().await.unwrap())
}

fn ids(page: &Value) -> Vec<String> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tweet_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_xgate_with_no_data_serves_another_as_its_relay() {
    let origin_dir = tempfile::tempdir().unwrap();
    let origin_db = origin_dir.path().join("xgate.db");
    xgate_ok(&["ingest", "--db", origin_db.to_str().unwrap(), SEED]);
    let origin = Server::start(origin_dir.path(), &["--no-billing"]);
    // Charging nothing, it keeps no charge journal.
    assert!(!origin_dir.path().join("xgate.db-charges").exists());

    let dir = tempfile::tempdir().unwrap();
    let key = create_key(&dir.path().join("xgate.db"), "buyer", 100);
    let mut front = Server::start_with_env(
        dir.path(),
        &[],
        &[
            ("XGATE_UPSTREAM", "relay"),
            ("XGATE_RELAY_BASE_URL", &origin.base),
            (
                "XGATE_RELAY_HEADERS",
                "X-Origin-Key: not-checked-by-the-origin",
            ),
        ],
    );
    let banner = front.stdout.next().unwrap().unwrap();
    assert!(banner.starts_with("store: "), "{banner}");
    let banner = front.stdout.next().unwrap().unwrap();
    assert_eq!(banner, "live data from: relay");

    let user = "96479162";
    let (status, cache, first) = page(
        &front.base,
        Some(&key),
        json!({"user_id": user, "limit": 3}),
    )
    .await;
    assert_eq!((status, cache.as_str()), (200, "miss"), "{first}");
    let (_, _, direct) = page(&origin.base, None, json!({"user_id": user, "limit": 3})).await;
    assert_eq!(ids(&first), ids(&direct));
    assert_ne!(
        first["continuation_token"], direct["continuation_token"],
        "tokens are each server's own"
    );

    // Every page through the relay, as the origin serves them.
    let mut seen = ids(&first);
    let mut token = first["continuation_token"].clone();
    while let Some(t) = token.as_str() {
        let (status, _, next) = page(
            &front.base,
            Some(&key),
            json!({"user_id": user, "continuation_token": t, "limit": 3}),
        )
        .await;
        assert_eq!(status, 200, "{next}");
        seen.extend(ids(&next));
        token = next["continuation_token"].clone();
    }
    let (_, _, all) = page(&origin.base, None, json!({"user_id": user, "limit": 20})).await;
    assert_eq!(seen, ids(&all));

    let (status, cache, again) = page(
        &front.base,
        Some(&key),
        json!({"user_id": user, "limit": 3}),
    )
    .await;
    assert_eq!((status, cache.as_str()), (200, "hit"));
    assert_eq!(ids(&again), ids(&first));
    let (status, _, unknown) =
        page(&front.base, Some(&key), json!({"user_id": "5", "limit": 3})).await;
    assert_eq!(status, 404, "{unknown}");

    let client = reqwest::Client::new();
    let health: Value = client
        .get(format!("{}/healthz", front.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["upstreams"][0]["name"], "relay");
    assert_eq!(health["upstreams"][0]["breaker"], "closed");
    let metrics = client
        .get(format!("{}/metrics", front.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("xgate_upstream_calls_total{upstream=\"relay\",outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("outcome=\"not_found\""), "{metrics}");
    assert!(
        metrics.contains("xgate_cache_requests_total{endpoint=\"/user/medias\",result=\"hit\"} 1"),
        "{metrics}"
    );
    // The relay header's value is a secret: it is in no log line.
    assert!(front.stop());
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(!log.contains("not-checked-by-the-origin"), "{log}");
    assert!(origin.stop());
}

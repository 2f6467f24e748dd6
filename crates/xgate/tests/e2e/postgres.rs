//! Several nodes on one PostgreSQL: two real `xgate serve` processes sharing the machine's
//! database (a fresh schema per test). Under CI a missing PostgreSQL fails these tests; elsewhere
//! they are skipped, and say so on standard error.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xgate_store_postgres::testing::fresh_database;

use crate::{SEED, Server, books, create_key, xgate, xgate_ok};

async fn post(base: &str, key: &str, body: Value) -> (u16, Value) {
    let path = if body.get("continuation_token").is_some() {
        "/user/medias/continuation"
    } else {
        "/user/medias"
    };
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
async fn two_nodes_on_one_database_behave_as_one_service() {
    let Some(db) = fresh_database("nodes").await else {
        return;
    };
    xgate_ok(&["migrate", "--db", &db]);
    xgate_ok(&["ingest", "--db", &db, SEED]);
    let credits = 40;
    let key = create_key(Path::new(&db), "shared", credits);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let nodes: Vec<Server> = dirs
        .iter()
        .map(|d| Server::start_on(d.path(), &db, &[], &[]))
        .collect();

    // An ingest from anywhere, while the nodes run, is served by both at once.
    let late = tempfile::tempdir().unwrap();
    let generated = late.path().join("late.jsonl");
    xgate_ok(&[
        "gen",
        "--users",
        "1",
        "--first-user",
        "6",
        "--per-user",
        "5",
        "--out",
        generated.to_str().unwrap(),
    ]);
    xgate_ok(&["ingest", "--db", &db, generated.to_str().unwrap()]);
    for node in &nodes {
        let (status, page) = post(&node.base, &key, json!({"user_id": "147514", "limit": 5})).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["results"].as_array().unwrap().len(), 5);
    }

    // A token from one node works on the other.
    let user = "96479162";
    let (status, first) = post(&nodes[0].base, &key, json!({"user_id": user, "limit": 3})).await;
    assert_eq!(status, 200, "{first}");
    let token = first["continuation_token"].as_str().unwrap();
    let next = json!({"user_id": user, "continuation_token": token, "limit": 3});
    let (status, on_b) = post(&nodes[1].base, &key, next.clone()).await;
    assert_eq!(status, 200, "{on_b}");
    let (_, on_a) = post(&nodes[0].base, &key, next).await;
    assert_eq!(on_a["results"], on_b["results"]);

    // The rest of the credits, raced for by 200 requests over both nodes: exactly that many
    // succeed, the others are 402, and the books balance.
    let left = credits as usize - 5;
    let requests: Vec<_> = (0..200)
        .map(|i| {
            let base = nodes[i % 2].base.clone();
            let key = key.clone();
            tokio::spawn(async move {
                post(&base, &key, json!({"user_id": user, "limit": 1}))
                    .await
                    .0
            })
        })
        .collect();
    let mut ok = 0;
    for request in requests {
        match request.await.unwrap() {
            200 => ok += 1,
            402 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, left);
    let books = books(Path::new(&db), "shared");
    assert_eq!(books["balance"], 0, "{books}");
    assert_eq!(books["balanced"], true, "{books}");

    // One rate limit per account across the nodes: 5 a minute, 10 requests alternating.
    let limited = create_key(Path::new(&db), "limited", 100);
    xgate_ok(&[
        "accounts",
        "set",
        "--db",
        &db,
        "--account",
        "limited",
        "--rate-limit",
        "5",
    ]);
    let mut statuses = Vec::new();
    for i in 0..10 {
        let node = &nodes[i % 2];
        statuses.push(post(&node.base, &limited, json!({"user_id": user})).await.0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );

    // A key revoked with the CLI stops on both nodes.
    let other = create_key(Path::new(&db), "other", 100);
    for node in &nodes {
        assert_eq!(
            post(&node.base, &other, json!({"user_id": user})).await.0,
            200
        );
    }
    let out = xgate(&["keys", "revoke", "--db", &db, &other]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked = Instant::now();
    for node in &nodes {
        loop {
            let (status, _) = post(&node.base, &other, json!({"user_id": user})).await;
            if status == 401 {
                break;
            }
            assert!(
                revoked.elapsed() < Duration::from_secs(10),
                "still {status} after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for node in nodes {
        assert!(node.stop());
    }
}

#[test]
fn a_database_that_cannot_be_reached_is_an_error_that_hides_its_password() {
    // Nothing listens on port 1.
    let out = xgate(&[
        "keys",
        "list",
        "--db",
        "postgres://xgate:secret-password@127.0.0.1:1/none",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connecting to the database"), "{stderr}");
    assert!(!stderr.contains("secret-password"), "{stderr}");
}

/// A TCP relay to PostgreSQL that can be cut (every connection dropped, new ones refused) and
/// restored, standing for a database that goes away and comes back.
struct Cable {
    port: u16,
    up: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl Cable {
    async fn to(target: &str) -> Cable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let target = target.to_owned();
        let (up2, generation2) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let born = generation2.load(Ordering::SeqCst);
                let generation = generation2.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let cut = async {
                        while generation.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut => {}
                    }
                });
            }
        });
        Cable {
            port,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

// Multi-threaded: starting the node blocks one thread while the cable must carry its traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answers_503_while_its_database_is_away_charges_nothing_and_recovers() {
    let Some(db) = fresh_database("away").await else {
        return;
    };
    xgate_ok(&["ingest", "--db", &db, SEED]);
    let key = create_key(Path::new(&db), "buyer", 100);
    let cable = Cable::to("127.0.0.1:5432").await;
    let via_cable = db.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", cable.port), 1);
    assert_ne!(
        via_cable, db,
        "the test database is expected at 127.0.0.1:5432"
    );
    let dir = tempfile::tempdir().unwrap();
    let node = Server::start_on(dir.path(), &via_cable, &[], &[]);
    let page = json!({"user_id": "96479162", "limit": 2});
    assert_eq!(post(&node.base, &key, page.clone()).await.0, 200);

    cable.cut();
    // The relayed connections notice within 20 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, body) = post(&node.base, &key, page.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "store_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "not fast: {:?}",
        started.elapsed()
    );

    cable.restore();
    let back = Instant::now();
    loop {
        let (status, _) = post(&node.base, &key, page.clone()).await;
        if status == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "not recovered: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(node.stop());
    let books = books(Path::new(&db), "buyer");
    assert_eq!(books["balanced"], true, "{books}");
    assert_eq!(
        books["balance"], 98,
        "only the two 200s were charged: {books}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_moves_to_postgres_whole_and_keeps_working() {
    let Some(db) = fresh_database("copy").await else {
        return;
    };
    // An embedded store in use: tweets, an account with a key, charges in its ledger.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("xgate.db");
    let file = file.to_str().unwrap();
    let generated = dir.path().join("gen.jsonl");
    xgate_ok(&[
        "gen",
        "--users",
        "3",
        "--per-user",
        "400",
        "--out",
        generated.to_str().unwrap(),
    ]);
    xgate_ok(&["ingest", "--db", file, SEED, generated.to_str().unwrap()]);
    let key = create_key(Path::new(file), "mover", 50);
    let node = Server::start(dir.path(), &[]);
    let user = "96479162";
    let (status, first) = post(&node.base, &key, json!({"user_id": user, "limit": 2})).await;
    assert_eq!(status, 200);
    for _ in 0..4 {
        assert_eq!(
            post(&node.base, &key, json!({"user_id": user})).await.0,
            200
        );
    }
    assert!(node.stop());

    let out = xgate_ok(&["store", "copy", "--from", file, "--to", &db]);
    assert!(out.contains("ledger rows"), "{out}");
    assert!(!out.contains("DIFFERS"), "{out}");
    // Again: nothing left to do, and still the same.
    let again = xgate_ok(&["store", "copy", "--from", file, "--to", &db]);
    assert_eq!(again, out);

    // The moved store serves the same key, the same credits, and tokens issued before the move.
    let pg_dir = tempfile::tempdir().unwrap();
    let moved = Server::start_on(pg_dir.path(), &db, &[], &[]);
    let token = first["continuation_token"].as_str().unwrap();
    let (status, next) = post(
        &moved.base,
        &key,
        json!({"user_id": user, "continuation_token": token, "limit": 2}),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    assert!(moved.stop());
    let books = books(Path::new(&db), "mover");
    assert_eq!(books["balance"], 50 - 5 - 1, "{books}");
    assert_eq!(books["balanced"], true, "{books}");
}

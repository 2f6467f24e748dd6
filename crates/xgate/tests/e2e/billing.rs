//! Running a paid API with the real binary: keys made by the CLI, money under concurrency, a
//! crash mid-load, revocation across processes, and keys never kept or logged in clear.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{SEED, Server, books, create_key, xgate_ok};

fn seeded_store(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("xgate.db");
    xgate_ok(&["ingest", "--db", db.to_str().unwrap(), SEED]);
    db
}

async fn page(client: &reqwest::Client, base: &str, key: &str) -> (u16, Value) {
    let res = client
        .post(format!("{base}/user/medias"))
        .header("x-api-key", key)
        .json(&json!({"user_id": 96479162, "limit": 2}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn n_credits_buy_exactly_n_successes_however_many_ask_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let key = create_key(&db, "buyer", 30);
    let server = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (client, base, key) = (client.clone(), server.base.clone(), key.clone());
        tasks.spawn(async move { page(&client, &base, &key).await });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (200, _) => ok += 1,
            (402, body) => {
                assert_eq!(body["code"], "insufficient_credits");
                refused += 1;
            }
            (status, body) => panic!("unexpected {status}: {body}"),
        }
    }
    assert_eq!((ok, refused), (30, 170));
    assert!(server.stop());
    let ledger = books(&db, "buyer");
    assert_eq!(ledger["balance"], 0);
    assert_eq!(ledger["charged"], 30);
    assert_eq!(ledger["balanced"], true);
    // Every request is in the log, the refused ones too (a clean stop writes the last of it).
    let usage = crate::xgate_ok(&["usage", "--db", db.to_str().unwrap(), "--account", "buyer"]);
    let today = first_summary_row(&usage);
    assert!(
        today.split_whitespace().collect::<Vec<_>>()[1..] == ["200", "30", "30"],
        "per-day summary: {usage}"
    );
}

#[tokio::test]
async fn a_crash_mid_load_leaves_the_books_balanced() {
    // Charges answered from the charge journal (the default), committed before their responses
    // leave and synced as they leave, and synced before.
    for options in [
        &[][..],
        &["--ledger-sync", "background"],
        &["--ledger-sync", "before-response"],
    ] {
        crash_mid_load(options).await;
    }
}

async fn crash_mid_load(options: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let key = create_key(&db, "crash", 1_000_000);
    let server = Server::start(dir.path(), options);
    let client = reqwest::Client::new();
    let successes = Arc::new(AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, base, key, successes) = (
            client.clone(),
            server.base.clone(),
            key.clone(),
            successes.clone(),
        );
        load.spawn(async move {
            // Bounded: stops at the first failed connection (the kill), or after 5,000 requests.
            for _ in 0..5_000 {
                let sent = client
                    .post(format!("{base}/user/medias"))
                    .bearer_auth(&key)
                    .json(&json!({"user_id": 96479162, "limit": 3}))
                    .send()
                    .await;
                let Ok(res) = sent else { return };
                if res.status() == 200 && res.bytes().await.is_ok() {
                    successes.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    // Kill the server once it has answered a few hundred requests, with more in flight.
    while successes.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    while load.join_next().await.is_some() {}
    let seen = successes.load(Ordering::SeqCst) as i64;

    let ledger = books(&db, "crash");
    assert_eq!(ledger["balanced"], true, "{ledger}");
    assert_eq!(ledger["charged_failures"], 0, "{ledger}");
    let charged = ledger["charged"].as_i64().unwrap();
    // Every success a client received was charged; at most the requests in flight at the kill
    // (8 connections) were charged without their response arriving.
    assert!(
        charged >= seen && charged <= seen + 8,
        "{options:?}: charged {charged}, seen {seen}"
    );

    // The restarted server serves and charges on from the same books.
    let server = Server::start(dir.path(), options);
    assert_eq!(page(&client, &server.base, &key).await.0, 200);
    assert!(server.stop());
    let after = books(&db, "crash");
    assert_eq!(after["charged"].as_i64().unwrap(), charged + 1);
    assert_eq!(after["balanced"], true);
}

const JOURNAL: &[&str] = &["--ledger-sync", "journal"];

/// A write transaction on the store's ledger, as another process would hold one: nothing can
/// commit to the ledger until it is rolled back.
fn hold_ledger(db: &Path) -> rusqlite::Connection {
    let ledger =
        rusqlite::Connection::open(xgate_store_sqlite::SqliteStore::ledger_path(db)).unwrap();
    ledger.execute_batch("BEGIN IMMEDIATE").unwrap();
    ledger
}

#[tokio::test]
async fn charges_answered_while_the_ledger_is_held_survive_a_kill() {
    // Another process holds the ledger's write lock, so the server can commit nothing: every
    // response below is answered from the charge journal alone (as a server charges by default).
    // Killed, the server leaves those charges in the journal only; the next process to open the
    // store records each once.
    const REQUESTS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let key = create_key(&db, "held", 1_000);
    let server = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let ledger = hold_ledger(&db);

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        let (client, base, key) = (client.clone(), server.base.clone(), key.clone());
        tasks.spawn(async move { page(&client, &base, &key).await });
    }
    while let Some(done) = tasks.join_next().await {
        let (status, body) = done.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let during = ledger
        .query_row("SELECT count(*) FROM request_chunks", [], |row| {
            row.get::<_, i64>(0)
        })
        .unwrap();
    assert_eq!(during, 0, "nothing was committed while the lock was held");
    server.kill();
    ledger.execute_batch("ROLLBACK").unwrap();
    drop(ledger);

    let books_after = books(&db, "held");
    assert_eq!(books_after["charged"], REQUESTS, "{books_after}");
    assert_eq!(books_after["balance"], 1_000 - REQUESTS, "{books_after}");
    assert_eq!(books_after["balanced"], true);

    // Recorded once: a new server and the CLI find the same books, and charge on from them.
    let server = Server::start(dir.path(), &[]);
    assert_eq!(page(&client, &server.base, &key).await.0, 200);
    assert!(server.stop());
    assert_eq!(books(&db, "held")["charged"], REQUESTS + 1);
}

#[tokio::test]
async fn two_servers_on_one_store_charge_every_success_once() {
    // The first holds the charge journal; the second finds it held, says so, and commits each
    // charge before its response leaves. Both charge the same account at once.
    const EACH: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let key = create_key(&db, "shared", 1_000);
    let first = Server::start(dir.path(), &[]);
    let second_dir = tempfile::tempdir().unwrap();
    let second = Server::start_on(second_dir.path(), db.to_str().unwrap(), &[], &[]);
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for base in [&first.base, &second.base] {
        for _ in 0..EACH {
            let (client, base, key) = (client.clone(), base.clone(), key.clone());
            tasks.spawn(async move { page(&client, &base, &key).await });
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (status, body) = done.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let second_log = second.log.clone();
    assert!(second.stop());
    assert!(first.stop());

    let log = std::fs::read_to_string(second_log).unwrap();
    assert!(
        log.contains("another process holds the charge journal"),
        "{log}"
    );
    let books = books(&db, "shared");
    assert_eq!(books["charged"], 2 * EACH, "{books}");
    assert_eq!(books["balance"], 1_000 - 2 * EACH, "{books}");
    assert_eq!(books["balanced"], true);
}

#[tokio::test]
async fn a_store_whose_charge_journal_was_deleted_serves_on_with_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let key = create_key(&db, "journal-gone", 10);
    let client = reqwest::Client::new();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(page(&client, &server.base, &key).await.0, 200);
    assert!(server.stop());
    std::fs::remove_file(dir.path().join("xgate.db-charges")).unwrap();

    // Served again, with a new journal, said once: the next start finds it the store's own.
    for (start, missing) in [(2, true), (3, false)] {
        let server = Server::start(dir.path(), &[]);
        assert_eq!(page(&client, &server.base, &key).await.0, 200);
        let log = server.log.clone();
        assert!(server.stop());
        let log = std::fs::read_to_string(log).unwrap();
        assert_eq!(
            log.contains("charge journal the store named is gone"),
            missing,
            "start {start}: {log}"
        );
        assert!(dir.path().join("xgate.db-charges").exists());
    }
    let books = books(&db, "journal-gone");
    assert_eq!(books["charged"], 3, "{books}");
    assert_eq!(books["balanced"], true);
}

#[tokio::test]
async fn charges_answered_while_the_ledger_is_held_are_recorded_once_it_is_free() {
    // Held longer than the writer's busy timeout (5 s), so that its commit fails and it must
    // record the answered charges again later, in this process.
    const REQUESTS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let key = create_key(&db, "retried", 100);
    let server = Server::start(dir.path(), JOURNAL);
    let client = reqwest::Client::new();
    let ledger = hold_ledger(&db);
    for _ in 0..REQUESTS {
        assert_eq!(page(&client, &server.base, &key).await.0, 200);
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    ledger.execute_batch("ROLLBACK").unwrap();
    drop(ledger);

    // The running server holds the journal: what the CLI reads is what the server recorded.
    let mut charged = 0;
    for _ in 0..200 {
        charged = books(&db, "retried")["charged"].as_u64().unwrap();
        if charged == REQUESTS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(charged, REQUESTS as u64);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(log.contains("recording charges failed"), "{log}");
    assert!(server.stop());
    let after = books(&db, "retried");
    assert_eq!(after["charged"], REQUESTS, "{after}");
    assert_eq!(after["balanced"], true);
}

#[tokio::test]
async fn an_account_s_own_endpoints_count_every_charge_answered_from_the_journal() {
    // Answered from the journal, a charge is recorded by a later commit; what `/v1/credits` and
    // `/v1/usage` read from the store must count it all the same, at once.
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let key = create_key(&db, "reader", 100);
    let server = Server::start(dir.path(), JOURNAL);
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("{}{path}", server.base))
            .bearer_auth(&key)
            .send()
    };
    let charge = || async {
        let res = client
            .post(format!("{}/user/medias", server.base))
            .bearer_auth(&key)
            .json(&json!({"user_id": 96479162, "limit": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.headers()["x-credits-remaining"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    // Each endpoint read straight after a charge of its own, so that neither finds the store
    // brought up to date by the other.
    for n in [1, 3, 5] {
        assert_eq!(charge().await, (100 - n).to_string());
        let credits: Value = get("/v1/credits").await.unwrap().json().await.unwrap();
        assert_eq!(
            credits["remaining"],
            100 - n,
            "after {n} charges: {credits}"
        );

        assert_eq!(charge().await, (99 - n).to_string());
        let usage: Value = get("/v1/usage").await.unwrap().json().await.unwrap();
        let charged = usage["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["cost"] == 1)
            .count();
        assert_eq!(charged, n as usize + 1, "after {} charges: {usage}", n + 1);
    }
    assert!(server.stop());
}

#[tokio::test]
async fn a_key_revoked_by_the_cli_stops_on_a_running_server_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let key = create_key(&db, "revoked", 10);
    let server = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    assert_eq!(page(&client, &server.base, &key).await.0, 200);
    xgate_ok(&["keys", "revoke", "--db", db.to_str().unwrap(), &key]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = page(&client, &server.base, &key).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "invalid_api_key");
    let listing = xgate_ok(&["keys", "list", "--db", db.to_str().unwrap()]);
    assert!(listing.contains("revoked"), "{listing}");
    assert!(server.stop());
}

#[tokio::test]
async fn keys_are_never_kept_or_logged_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let key = create_key(&db, "secret", 10);
    let server = Server::start_with_env(dir.path(), &[], &[("RUST_LOG", "trace")]);
    let client = reqwest::Client::new();
    assert_eq!(page(&client, &server.base, &key).await.0, 200);
    let res = client
        .get(format!("{}/v1/credits", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A wrong key near the real one, so failure paths log too.
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    let wrong = format!("{}{last}", &key[..key.len() - 1]);
    assert_eq!(page(&client, &server.base, &wrong).await.0, 401);
    let log_path = server.log.clone();
    assert!(server.stop());

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("serving"), "the log was written: {log}");
    let secret = &key["xg_live_".len()..];
    assert!(!log.contains(secret), "the key appears in the server log");
    let mut scanned = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // The store, its ledger, and their WAL and shared-memory files.
        if name.starts_with("xgate.db") {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "the key is stored in clear in {name}");
            scanned.push(name);
        }
    }
    assert!(scanned.contains(&"xgate.db".to_owned()), "{scanned:?}");
    assert!(
        scanned.contains(&"xgate.db-ledger".to_owned()),
        "{scanned:?}"
    );
    let listing = xgate_ok(&["keys", "list", "--db", db.to_str().unwrap()]);
    assert!(!listing.contains(secret));
    assert!(
        listing.contains(&key[..14]),
        "listed by its prefix: {listing}"
    );
}

/// The first summary row of `xgate usage` (today's, the newest).
fn first_summary_row(usage: &str) -> String {
    usage.lines().nth(1).unwrap_or_default().to_owned()
}

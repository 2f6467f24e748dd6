//! The ingest pipeline into a real SQLite store.

use std::io::Write;
use std::sync::Arc;

use xgate_ingest::formats::jsonl::Jsonl;
use xgate_ingest::synth::{self, SynthConfig};
use xgate_ingest::{IngestReport, Rejection, Source, ingest};
use xgate_model::UserId;
use xgate_store::{Store, UpsertSummary};
use xgate_store_sqlite::SqliteStore;

async fn run(store: &Arc<SqliteStore>, sources: Vec<Source>) -> (IngestReport, Vec<Rejection>) {
    let mut rejected = Vec::new();
    let report = ingest(store.clone(), Some(&Jsonl), sources, |r| {
        rejected.push(r.clone())
    })
    .await
    .unwrap();
    (report, rejected)
}

#[tokio::test]
async fn good_lines_are_stored_around_bad_ones_and_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("i.db")).unwrap());
    let path = dir.path().join("mixed.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    let config = SynthConfig {
        users: 2,
        first_user: 0,
        per_user: 5000,
        seed: 1,
    };
    let tweets: Vec<_> = synth::tweets(config).collect();
    for (i, tweet) in tweets.iter().enumerate() {
        writeln!(file, "{}", serde_json::to_string(tweet).unwrap()).unwrap();
        if i == 4000 {
            writeln!(file, "{{\"tweet_id\": \"1\"").unwrap();
        }
    }
    let plain = serde_json::to_string(&xgate_model::sample::tweet(5, 77, false)).unwrap();
    writeln!(file, "{plain}").unwrap();
    drop(file);
    let missing = dir.path().join("missing.jsonl");

    let sources = vec![Source::File(path.clone()), Source::File(missing.clone())];
    let (report, rejected) = run(&store, sources).await;
    assert_eq!(report.read, 10_001);
    assert_eq!(
        report.stored,
        UpsertSummary {
            written: 10_001,
            unchanged: 0
        }
    );
    assert_eq!(report.without_media, 1);
    assert_eq!(report.rejected, 2);
    assert_eq!(rejected[0].place, format!("{}:4002", path.display()));
    assert!(rejected[0].reason.contains("EOF"), "{}", rejected[0].reason);
    assert_eq!(rejected[1].place, missing.display().to_string());

    let user = synth::user_id(1);
    let page = store.media_page(user, None, 20_000).await.unwrap();
    assert_eq!(page.len(), 5000);
    assert!(store.user_exists(UserId(77)).await.unwrap());

    let (again, _) = run(&store, vec![Source::File(path)]).await;
    assert_eq!(
        again.stored,
        UpsertSummary {
            written: 0,
            unchanged: 10_001
        }
    );
    assert_eq!(store.media_page(user, None, 20_000).await.unwrap(), page);
}

#[tokio::test]
async fn formats_are_told_apart_and_the_same_tweet_from_two_formats_is_one_tweet() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("f.db")).unwrap());
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/seed");
    let unknown = dir.path().join("unknown.json");
    std::fs::write(&unknown, r#"{"errors": [{"title": "Not Found"}]}"#).unwrap();
    let sources = vec![
        Source::File(format!("{fixtures}/seed-user-96479162-medias.jsonl").into()),
        Source::File(format!("{fixtures}/seed-example-response.json").into()),
        Source::File(format!("{fixtures}/../x-api-v2/user-tweets-page.json").into()),
        Source::File(unknown.clone()),
    ];
    let mut rejected = Vec::new();
    let report = ingest(store.clone(), None, sources, |r| rejected.push(r.clone()))
        .await
        .unwrap();
    assert_eq!(report.read, 18);
    assert_eq!(report.without_media, 1);
    assert_eq!(
        report.stored,
        UpsertSummary {
            written: 11,
            unchanged: 7
        }
    );
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].place, unknown.display().to_string());
    assert!(
        rejected[0].reason.contains("--format"),
        "{}",
        rejected[0].reason
    );
    let page = store.media_page(UserId(96479162), None, 20).await.unwrap();
    assert_eq!(page.len(), 7);
    let v2_user = UserId(1300000000001000003);
    let ids: Vec<u64> = store
        .media_page(v2_user, None, 20)
        .await
        .unwrap()
        .iter()
        .map(|t| t.tweet_id.get())
        .collect();
    assert_eq!(
        ids,
        [
            1790000000000000003,
            1790000000000000002,
            1790000000000000001
        ]
    );
}

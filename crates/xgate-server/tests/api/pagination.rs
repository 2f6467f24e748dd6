//! For any timeline and any limit, the pages put together are the timeline: in order, with no
//! duplicates and no gaps, also when newer tweets arrive between page requests.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use proptest::prelude::*;
use serde_json::{Value, json};
use xgate_model::TweetRecord;
use xgate_model::sample::record;

use crate::{TestApp, ids};

const USER: u64 = 42;

/// Pages through the whole timeline; after each page, stores the next batch of `arrivals`.
async fn page_all(app: &TestApp, limit: usize, mut arrivals: Vec<Vec<TweetRecord>>) -> Vec<String> {
    let (status, mut page) = app
        .post(
            "/user/medias",
            &json!({"user_id": USER, "limit": limit}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut seen = Vec::new();
    loop {
        let got = ids(&page);
        assert!(got.len() <= limit);
        seen.extend(got.clone());
        let Value::String(token) = page["continuation_token"].clone() else {
            break;
        };
        assert_eq!(got.len(), limit, "only the last page may be short");
        if let Some(batch) = arrivals.pop() {
            app.store.upsert_tweets(batch).await.unwrap();
        }
        let body = json!({"user_id": USER, "continuation_token": token, "limit": limit});
        let (status, next) = app
            .post("/user/medias/continuation", &body.to_string())
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !ids(&next).is_empty(),
            "a token never leads to an empty page"
        );
        page = next;
    }
    seen
}

fn timeline() -> impl Strategy<Value = Vec<(u64, bool)>> {
    prop::collection::btree_map(any::<u64>(), prop::bool::weighted(0.8), 0..60)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pages_concatenate_to_the_timeline(
        tweets in timeline(),
        limit in 1usize..=20,
        arrivals in prop::collection::vec(1usize..4, 0..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Newer tweets arrive above everything already stored.
            let top = tweets.iter().map(|&(id, _)| id).max().unwrap_or(0);
            let mut next_id = top.saturating_add(1);
            let mut batches = Vec::new();
            for n in arrivals {
                let mut batch = Vec::new();
                for _ in 0..n {
                    if next_id < u64::MAX {
                        batch.push(record(next_id, USER, true));
                        next_id += 1;
                    }
                }
                batches.push(batch);
            }
            // The user must exist even when none of their tweets has media.
            let mut stored: Vec<TweetRecord> = tweets.iter().map(|&(id, media)| record(id, USER, media)).collect();
            stored.push(record(0, USER, false));
            let stored_ids: BTreeSet<u64> = stored.iter().map(|r| r.tweet_id.get()).collect();
            prop_assume!(stored_ids.len() == stored.len());
            let app = TestApp::new(stored).await;

            let expected: Vec<String> = tweets
                .iter()
                .rev()
                .filter(|&&(id, media)| media && id != 0)
                .map(|&(id, _)| id.to_string())
                .collect();
            let seen = page_all(&app, limit, batches).await;
            prop_assert_eq!(seen, expected);
            Ok(())
        })?;
    }
}

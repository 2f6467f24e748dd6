//! The storage story: what every backend must do, as async checks over a fresh, empty store.
//!
//! A backend's test file runs all of them with [`story_tests!`](crate::story_tests), naming an
//! async function that returns a new empty store.

use xgate_model::sample::record;
use xgate_model::{TweetId, TweetRecord, UserId};

use crate::{Store, UpsertSummary};

/// One test per case of the story, each on a store made by `$make().await`.
#[macro_export]
macro_rules! story_tests {
    ($make:path) => {
        $crate::story_tests!(@cases $make;
            empty_store_knows_no_one,
            pages_are_newest_first_and_media_only,
            keyset_pages_continue_after_the_cursor,
            upsert_is_idempotent,
            upsert_replaces_a_changed_tweet,
            json_comes_back_as_stored,
            ids_at_the_extremes_are_exact,
            the_newest_profile_wins,
            users_are_listed_with_media_counts,
            a_setting_keeps_its_first_value,
            ping_answers
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store = $make().await;
                $crate::story::$case(&*store).await;
            }
        )*
    };
}

fn ids(page: &[crate::StoredTweet]) -> Vec<u64> {
    page.iter().map(|t| t.tweet_id.get()).collect()
}

pub async fn empty_store_knows_no_one(store: &dyn Store) {
    assert!(!store.user_exists(UserId(1)).await.unwrap());
    assert!(
        store
            .media_page(UserId(1), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.users(10).await.unwrap().is_empty());
}

pub async fn pages_are_newest_first_and_media_only(store: &dyn Store) {
    let batch = vec![
        record(10, 1, true),
        record(30, 1, true),
        record(20, 1, false),
        record(40, 2, true),
        record(25, 1, true),
    ];
    store.upsert_tweets(batch).await.unwrap();
    let page = store.media_page(UserId(1), None, 10).await.unwrap();
    assert_eq!(ids(&page), [30, 25, 10]);
    assert!(store.user_exists(UserId(1)).await.unwrap());
    assert!(store.user_exists(UserId(2)).await.unwrap());
    assert!(!store.user_exists(UserId(3)).await.unwrap());
}

pub async fn keyset_pages_continue_after_the_cursor(store: &dyn Store) {
    store
        .upsert_tweets((1..=9).map(|i| record(i * 100, 7, true)).collect())
        .await
        .unwrap();
    let first = store.media_page(UserId(7), None, 4).await.unwrap();
    assert_eq!(ids(&first), [900, 800, 700, 600]);
    let second = store
        .media_page(UserId(7), Some(TweetId(600)), 4)
        .await
        .unwrap();
    assert_eq!(ids(&second), [500, 400, 300, 200]);
    // A cursor that is no stored tweet still marks a position.
    let between = store
        .media_page(UserId(7), Some(TweetId(250)), 4)
        .await
        .unwrap();
    assert_eq!(ids(&between), [200, 100]);
    let past_the_end = store
        .media_page(UserId(7), Some(TweetId(100)), 4)
        .await
        .unwrap();
    assert!(past_the_end.is_empty());
}

pub async fn upsert_is_idempotent(store: &dyn Store) {
    let batch: Vec<TweetRecord> = (1..=5).map(|i| record(i, 3, i % 2 == 0)).collect();
    let first = store.upsert_tweets(batch.clone()).await.unwrap();
    assert_eq!(
        first,
        UpsertSummary {
            written: 5,
            unchanged: 0
        }
    );
    let before = store.media_page(UserId(3), None, 20).await.unwrap();
    let second = store.upsert_tweets(batch).await.unwrap();
    assert_eq!(
        second,
        UpsertSummary {
            written: 0,
            unchanged: 5
        }
    );
    assert_eq!(store.media_page(UserId(3), None, 20).await.unwrap(), before);
}

pub async fn upsert_replaces_a_changed_tweet(store: &dyn Store) {
    store.upsert_tweets(vec![record(5, 3, true)]).await.unwrap();
    // The same tweet again, now without media: it leaves the media timeline.
    let summary = store
        .upsert_tweets(vec![record(5, 3, false)])
        .await
        .unwrap();
    assert_eq!(
        summary,
        UpsertSummary {
            written: 1,
            unchanged: 0
        }
    );
    assert!(
        store
            .media_page(UserId(3), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.user_exists(UserId(3)).await.unwrap());
}

pub async fn json_comes_back_as_stored(store: &dyn Store) {
    let mut rec = record(77, 4, true);
    // Unusual but valid JSON text: spacing, escapes and unknown fields are kept as they are.
    rec.json = rec
        .json
        .replacen('{', "{ \"x_unknown\" : [1, 2.50, \"\\u00e9\"] ,", 1);
    let rec = TweetRecord::from_json(&rec.json).unwrap();
    store.upsert_tweets(vec![rec.clone()]).await.unwrap();
    let page = store.media_page(UserId(4), None, 1).await.unwrap();
    assert_eq!(page[0].json, rec.json);
}

pub async fn ids_at_the_extremes_are_exact(store: &dyn Store) {
    let top = u64::MAX;
    let above_f64 = (1u64 << 53) + 1;
    store
        .upsert_tweets(vec![
            record(top, top, true),
            record(top - 1, top, true),
            record(above_f64, top, true),
            record(0, top, true),
            record(1, above_f64, true),
        ])
        .await
        .unwrap();
    let page = store.media_page(UserId(top), None, 10).await.unwrap();
    assert_eq!(ids(&page), [top, top - 1, above_f64, 0]);
    let after = store
        .media_page(UserId(top), Some(TweetId(top)), 10)
        .await
        .unwrap();
    assert_eq!(ids(&after), [top - 1, above_f64, 0]);
    assert!(store.user_exists(UserId(above_f64)).await.unwrap());
    assert!(!store.user_exists(UserId(above_f64 - 1)).await.unwrap());
}

pub async fn the_newest_profile_wins(store: &dyn Store) {
    let renamed = |tweet_id: u64, name: &str| {
        let mut tweet = xgate_model::sample::tweet(tweet_id, 9, true);
        tweet.user.username = Some(name.into());
        TweetRecord::from_json(&serde_json::to_string(&tweet).unwrap()).unwrap()
    };
    store
        .upsert_tweets(vec![renamed(20, "new"), renamed(10, "old")])
        .await
        .unwrap();
    store
        .upsert_tweets(vec![renamed(5, "older")])
        .await
        .unwrap();
    let users = store.users(10).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].username.as_deref(), Some("new"));
    store
        .upsert_tweets(vec![renamed(30, "newest")])
        .await
        .unwrap();
    let users = store.users(10).await.unwrap();
    assert_eq!(users[0].username.as_deref(), Some("newest"));
}

pub async fn users_are_listed_with_media_counts(store: &dyn Store) {
    store
        .upsert_tweets(vec![
            record(1, 200, true),
            record(2, 200, true),
            record(3, 200, false),
            record(4, 100, false),
        ])
        .await
        .unwrap();
    let users = store.users(10).await.unwrap();
    let counts: Vec<(u64, u64)> = users
        .iter()
        .map(|u| (u.user_id.get(), u.media_tweets))
        .collect();
    assert_eq!(counts, [(100, 0), (200, 2)]);
    assert_eq!(store.users(1).await.unwrap().len(), 1);
}

pub async fn a_setting_keeps_its_first_value(store: &dyn Store) {
    let first = store.setting_or_insert("k", b"one".to_vec()).await.unwrap();
    assert_eq!(first, b"one");
    let second = store.setting_or_insert("k", b"two".to_vec()).await.unwrap();
    assert_eq!(second, b"one");
    let other = store.setting_or_insert("j", vec![0, 255]).await.unwrap();
    assert_eq!(other, [0, 255]);
}

pub async fn ping_answers(store: &dyn Store) {
    store.ping().await.unwrap();
}

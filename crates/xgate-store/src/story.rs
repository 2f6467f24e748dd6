//! The storage story: what every backend must do, as async checks over a fresh, empty store.
//!
//! A backend's test file runs all of them with [`story_tests!`](crate::story_tests), naming an
//! async function that returns a new empty store.

use std::collections::HashSet;

use xgate_model::sample::record;
use xgate_model::{TweetId, TweetRecord, UserId};

use crate::accounts::{
    Account, AccountStore, AccountTerms, KeyId, KeySelector, MintedId, NewKey, Recorded, RequestId,
    RequestRecord, StoredResponse,
};
use crate::{Store, UpsertSummary};

/// One test per case of the story, each on a store made by `$make().await`.
#[macro_export]
macro_rules! story_tests {
    // `$make` returns `Option<store>`: `None` skips (a backend whose server is not here).
    (optional $make:path) => {
        $crate::story_tests!(@list $make; optional_cases);
    };
    ($make:path) => {
        $crate::story_tests!(@list $make; cases);
    };
    (@list $make:path; $kind:ident) => {
        $crate::story_tests!(@$kind $make;
            empty_store_knows_no_one,
            pages_are_newest_first_and_media_only,
            keyset_pages_continue_after_the_cursor,
            a_page_written_in_place_is_the_page_read,
            upsert_is_idempotent,
            upsert_replaces_a_changed_tweet,
            json_comes_back_as_stored,
            each_tweet_keeps_the_author_it_came_with,
            ids_at_the_extremes_are_exact,
            the_newest_profile_wins,
            users_are_listed_with_media_counts,
            a_setting_keeps_its_first_value,
            media_ids_are_the_pages_ids,
            sync_state_is_kept_per_user,
            ping_answers,
            accounts_are_created_once,
            charges_keep_the_books,
            a_recorded_request_is_a_duplicate_even_when_the_account_cannot_pay,
            large_batches_are_recorded_row_for_row_and_a_replayed_id_once,
            the_free_allowance_is_spent_first_and_renews_monthly,
            keys_are_found_by_hash_and_revoked_once,
            idempotent_responses_are_kept_with_their_charge,
            usage_pages_newest_first_and_sums_by_day,
            the_rate_limit_is_a_burst_then_one_per_interval
        );
    };
    (@optional_cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                if let Some(store) = $make().await {
                    $crate::story::$case(&*store).await;
                }
            }
        )*
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

pub async fn a_page_written_in_place_is_the_page_read(store: &dyn Store) {
    store
        .upsert_tweets((1..=7).map(|i| record(i * 10, 8, i != 3)).collect())
        .await
        .unwrap();
    for (before, limit) in [
        (None, 3),
        (None, 6),
        (None, 7),
        (Some(TweetId(50)), 2),
        (Some(TweetId(20)), 5),
        (Some(TweetId(10)), 5),
    ] {
        let read = store
            .media_page(UserId(8), before, limit + 1)
            .await
            .unwrap();
        let mut out = b"[".to_vec();
        let info = store
            .media_page_into(UserId(8), before, limit, &mut out)
            .await
            .unwrap();
        let shown = &read[..read.len().min(limit)];
        let joined: Vec<&str> = shown.iter().map(|t| t.json.as_str()).collect();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("[{}", joined.join(",")),
            "{before:?} {limit}"
        );
        assert_eq!(info.count, shown.len());
        assert_eq!(info.last, shown.last().map(|t| t.tweet_id));
        assert_eq!(info.more, read.len() > limit, "{before:?} {limit}");
    }
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

pub async fn each_tweet_keeps_the_author_it_came_with(store: &dyn Store) {
    // One user's tweets seen at three moments: the profile differs from one to the next, and a
    // field ahead of the author moves where it lies in the text.
    let seen = |tweet_id: u64, followers: i64| {
        let mut tweet = xgate_model::sample::tweet(tweet_id, 6, true);
        tweet.user.follower_count = Some(followers);
        let json = serde_json::to_string(&tweet).unwrap();
        let json = json.replacen(
            '{',
            &format!("{{\"x_seen\":\"{}\",", "·".repeat(followers as usize)),
            1,
        );
        TweetRecord::from_json(&json).unwrap()
    };
    let batch: Vec<TweetRecord> = (1..=9).map(|i| seen(i, (i % 3) as i64)).collect();
    store.upsert_tweets(batch.clone()).await.unwrap();
    store.upsert_tweets(vec![seen(10, 1)]).await.unwrap();
    let page = store.media_page(UserId(6), None, 20).await.unwrap();
    let mut expected: Vec<String> = batch.into_iter().map(|t| t.json).collect();
    expected.push(seen(10, 1).json);
    expected.reverse();
    let served: Vec<String> = page.into_iter().map(|t| t.json).collect();
    assert_eq!(served, expected);
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

pub async fn media_ids_are_the_pages_ids(store: &dyn Store) {
    let user = UserId(u64::MAX - 3);
    let tweets: Vec<TweetRecord> = (1..=30u64)
        .map(|i| record(u64::MAX - 30 + i, user.get(), i % 4 != 0))
        .collect();
    store.upsert_tweets(tweets).await.unwrap();
    let mut before = None;
    loop {
        let page = store.media_page(user, before, 7).await.unwrap();
        let ids = store.media_ids(user, before, 7).await.unwrap();
        assert_eq!(ids, page.iter().map(|t| t.tweet_id).collect::<Vec<_>>());
        match page.last() {
            Some(last) => before = Some(last.tweet_id),
            None => break,
        }
    }
    assert_eq!(store.media_ids(user, None, 100).await.unwrap().len(), 23);
    assert!(
        store
            .media_ids(UserId(5), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn sync_state_is_kept_per_user(store: &dyn Store) {
    assert_eq!(store.sync_state(UserId(1)).await.unwrap(), None);
    store
        .put_sync_state(UserId(1), b"one".to_vec())
        .await
        .unwrap();
    store
        .put_sync_state(UserId(u64::MAX), b"max".to_vec())
        .await
        .unwrap();
    store
        .put_sync_state(UserId(1), b"uno".to_vec())
        .await
        .unwrap();
    assert_eq!(
        store.sync_state(UserId(1)).await.unwrap().as_deref(),
        Some(&b"uno"[..])
    );
    assert_eq!(
        store.sync_state(UserId(u64::MAX)).await.unwrap().as_deref(),
        Some(&b"max"[..])
    );
    assert_eq!(store.sync_state(UserId(2)).await.unwrap(), None);
}

pub async fn ping_answers(store: &dyn Store) {
    store.ping().await.unwrap();
}

const DAY_MS: i64 = 24 * 3600 * 1000;
/// 2026-11-26T00:00:00Z.
const NOW_MS: i64 = 1_795_651_200_000;

fn request(
    id: &str,
    account: &crate::accounts::Account,
    key: KeyId,
    status: u16,
    cost: i64,
) -> RequestRecord {
    RequestRecord {
        request_id: RequestId::Given(id.to_owned()),
        account: account.id,
        key,
        at_ms: NOW_MS,
        endpoint: "POST /user/medias".into(),
        status,
        cost,
        latency_us: 100,
        idempotency: None,
    }
}

fn new_key(byte: u8) -> NewKey {
    NewKey {
        hash: [byte; 32],
        prefix: format!("xg_live_{byte}"),
        label: Some("test".into()),
    }
}

/// A new account named `name` with one key (made by [`new_key`] from `byte`), and the key's id.
async fn account_with_key(store: &dyn AccountStore, name: &str, byte: u8) -> (Account, KeyId) {
    let acct = store.ensure_account(name, NOW_MS).await.unwrap();
    let key = store
        .insert_key(acct.id, new_key(byte), NOW_MS)
        .await
        .unwrap()
        .id;
    (acct, key)
}

pub async fn accounts_are_created_once(store: &dyn AccountStore) {
    let a = store.ensure_account("acme", NOW_MS).await.unwrap();
    let again = store.ensure_account("acme", NOW_MS + 5).await.unwrap();
    assert_eq!(a, again);
    assert_eq!(a.balance, 0);
    assert_eq!(
        store.account_by_name("acme").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.account(a.id).await.unwrap(), Some(a));
    assert_eq!(store.account_by_name("nobody").await.unwrap(), None);
}

pub async fn charges_keep_the_books(store: &dyn AccountStore) {
    let (acct, key) = account_with_key(store, "acme", 1).await;
    let acct = store.add_credits(acct.id, 3, "test", NOW_MS).await.unwrap();
    assert_eq!(acct.balance, 3);
    let outcomes = store
        .record(
            vec![
                request("r1", &acct, key, 200, 2),
                request("r2", &acct, key, 404, 0),
                request("r3", &acct, key, 200, 2),
                request("r1", &acct, key, 200, 1),
                request("r4", &acct, key, 200, 1),
            ],
            "2026-11",
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            Recorded::Done {
                paid: 2,
                free: 0,
                balance: 1,
                free_left: 0
            },
            Recorded::Done {
                paid: 0,
                free: 0,
                balance: 1,
                free_left: 0
            },
            Recorded::Insufficient {
                balance: 1,
                free_left: 0
            },
            Recorded::Duplicate,
            Recorded::Done {
                paid: 1,
                free: 0,
                balance: 0,
                free_left: 0
            },
        ]
    );
    let audit = store.audit(acct.id).await.unwrap();
    assert_eq!(
        (
            audit.balance,
            audit.credits_added,
            audit.paid,
            audit.charged_failures
        ),
        (0, 3, 3, 0)
    );
    assert!(audit.balanced());
    store
        .add_credits(acct.id, 10, "top-up", NOW_MS)
        .await
        .unwrap();
    assert!(store.audit(acct.id).await.unwrap().balanced());
    assert_eq!(store.account(acct.id).await.unwrap().unwrap().balance, 10);
}

/// A request id recorded before is answered `Duplicate` whatever the account holds now: a retry
/// of a charged request is never refused for want of credits it already paid.
pub async fn a_recorded_request_is_a_duplicate_even_when_the_account_cannot_pay(
    store: &dyn AccountStore,
) {
    let (acct, key) = account_with_key(store, "acme", 1).await;
    let acct = store.add_credits(acct.id, 1, "test", NOW_MS).await.unwrap();
    let first = store
        .record(vec![request("r1", &acct, key, 200, 1)], "2026-11")
        .await
        .unwrap();
    assert!(
        matches!(first[..], [Recorded::Done { balance: 0, .. }]),
        "{first:?}"
    );
    // Alone, and in a batch beside charges the account cannot cover: the refused r2, twice,
    // stays unused, so its second request is refused too rather than taken for a duplicate.
    let refused = Recorded::Insufficient {
        balance: 0,
        free_left: 0,
    };
    for (batch, expected) in [
        (vec!["r1"], vec![Recorded::Duplicate]),
        (
            vec!["r2", "r1", "r2"],
            vec![refused, Recorded::Duplicate, refused],
        ),
    ] {
        let batch = batch
            .into_iter()
            .map(|id| request(id, &acct, key, 200, 1))
            .collect();
        assert_eq!(store.record(batch, "2026-11").await.unwrap(), expected);
    }
    // Nothing refused was recorded: with credits, r2 is charged once.
    store
        .add_credits(acct.id, 1, "top-up", NOW_MS)
        .await
        .unwrap();
    let later = store
        .record(vec![request("r2", &acct, key, 200, 1)], "2026-11")
        .await
        .unwrap();
    assert!(
        matches!(later[..], [Recorded::Done { balance: 0, .. }]),
        "{later:?}"
    );
    let audit = store.audit(acct.id).await.unwrap();
    assert_eq!((audit.paid, audit.balance), (2, 0));
    assert!(audit.balanced());
}

/// Batches longer than any one statement a backend writes them with (SQLite: 64 rows), with free
/// and paid credits, logged failures, refusals, and request ids met before (in an earlier batch,
/// or twice in one): every row lands as recorded, and a replayed id is charged once.
pub async fn large_batches_are_recorded_row_for_row_and_a_replayed_id_once(
    store: &dyn AccountStore,
) {
    let (acct, key) = account_with_key(store, "bulk", 7).await;
    let terms = AccountTerms {
        free_allowance: Some(50),
        rate_limit: None,
    };
    store.set_terms(acct.id, terms).await.unwrap();
    let acct = store
        .add_credits(acct.id, 80, "test", NOW_MS)
        .await
        .unwrap();
    // Every third request fails and is only logged; the others cost 1 or 2.
    let varied = |name: &str, i: i64| {
        let (status, cost) = match i % 3 {
            0 => (500, 0),
            1 => (200, 1),
            _ => (200, 2),
        };
        RequestRecord {
            at_ms: NOW_MS + i,
            latency_us: 1000 + i,
            endpoint: format!("POST /endpoint/{}", i % 5).into(),
            ..request(&format!("{name}{i}"), &acct, key, status, cost)
        }
    };
    let mut books = Books {
        balance: 80,
        free_left: 50,
        seen: HashSet::new(),
    };

    // 150 requests costing 150 credits against 130: the last ones are refused.
    let first: Vec<RequestRecord> = (0..150).map(|i| varied("b", i)).collect();
    let expected = books.outcomes(&first);
    assert!(
        expected
            .iter()
            .any(|o| matches!(o, Recorded::Insufficient { .. }))
    );
    assert_eq!(
        store.record(first.clone(), "2026-11").await.unwrap(),
        expected
    );
    let kept: Vec<(&RequestRecord, &Recorded)> = first
        .iter()
        .zip(&expected)
        .filter(|(_, o)| matches!(o, Recorded::Done { .. }))
        .collect();
    let log = store.usage(acct.id, 0, None, 1000).await.unwrap();
    assert_eq!(log.len(), kept.len());
    for (row, (rec, outcome)) in log.iter().rev().zip(&kept) {
        let Recorded::Done { paid, free, .. } = outcome else {
            unreachable!("only charges were kept")
        };
        let written = (
            row.request_id.as_str(),
            row.at_ms,
            row.endpoint.as_str(),
            row.status,
            (row.cost, row.paid, row.free),
            row.latency_us,
        );
        let id = rec.request_id.text();
        let sent = (
            id.as_ref(),
            rec.at_ms,
            rec.endpoint.as_ref(),
            rec.status,
            (rec.cost, *paid, *free),
            rec.latency_us,
        );
        assert_eq!(written, sent);
    }

    // 120 new requests, with an id of the first batch among them and one of their own again.
    store
        .add_credits(acct.id, 400, "top-up", NOW_MS)
        .await
        .unwrap();
    books.balance += 400;
    let mut second: Vec<RequestRecord> = (0..120).map(|i| varied("n", i)).collect();
    second.insert(60, varied("b", 7));
    second.push(varied("n", 5));
    let expected = books.outcomes(&second);
    assert_eq!(expected[60], Recorded::Duplicate);
    assert_eq!(expected[121], Recorded::Duplicate);
    assert_eq!(store.record(second, "2026-11").await.unwrap(), expected);
    let log = store.usage(acct.id, 0, None, 1000).await.unwrap();
    assert_eq!(log.len(), kept.len() + 120);

    // Ids this process minted are recorded like any other, and read back as their text.
    let third: Vec<RequestRecord> = (0..40)
        .map(|i| RequestRecord {
            request_id: RequestId::Minted(MintedId::new()),
            ..varied("m", i)
        })
        .collect();
    let expected = books.outcomes(&third);
    assert_eq!(
        store.record(third.clone(), "2026-11").await.unwrap(),
        expected
    );
    let minted: Vec<String> = third
        .iter()
        .zip(&expected)
        .filter(|(_, o)| matches!(o, Recorded::Done { .. }))
        .map(|(r, _)| r.request_id.text().into_owned())
        .collect();
    assert!(minted.len() > 20, "most of them fit the balance");
    let log = store.usage(acct.id, 0, None, minted.len()).await.unwrap();
    let logged: Vec<String> = log.into_iter().rev().map(|r| r.request_id).collect();
    assert_eq!(logged, minted);

    let audit = store.audit(acct.id).await.unwrap();
    assert_eq!((audit.balance, audit.charged_failures), (books.balance, 0));
    assert!(audit.balanced());
}

/// An account's books kept by hand: free allowance first, then purchased credits; a request id
/// seen before is a duplicate; a charge the account cannot cover is refused.
struct Books {
    balance: i64,
    free_left: i64,
    seen: HashSet<RequestId>,
}

impl Books {
    fn outcomes(&mut self, batch: &[RequestRecord]) -> Vec<Recorded> {
        batch.iter().map(|r| self.outcome(r)).collect()
    }

    fn outcome(&mut self, r: &RequestRecord) -> Recorded {
        if self.seen.contains(&r.request_id) {
            return Recorded::Duplicate;
        }
        let free = r.cost.min(self.free_left);
        let paid = r.cost - free;
        if paid > self.balance {
            return Recorded::Insufficient {
                balance: self.balance,
                free_left: self.free_left,
            };
        }
        self.seen.insert(r.request_id.clone());
        self.balance -= paid;
        self.free_left -= free;
        Recorded::Done {
            paid,
            free,
            balance: self.balance,
            free_left: self.free_left,
        }
    }
}

pub async fn the_free_allowance_is_spent_first_and_renews_monthly(store: &dyn AccountStore) {
    let (acct, key) = account_with_key(store, "free", 2).await;
    let terms = AccountTerms {
        free_allowance: Some(2),
        rate_limit: Some(Some(60)),
    };
    let acct = store.set_terms(acct.id, terms).await.unwrap();
    assert_eq!(acct.rate_limit, Some(60));
    let acct = store.add_credits(acct.id, 1, "test", NOW_MS).await.unwrap();
    let november = store
        .record(
            vec![
                request("a", &acct, key, 200, 1),
                request("b", &acct, key, 200, 2),
                request("c", &acct, key, 200, 1),
            ],
            "2026-11",
        )
        .await
        .unwrap();
    assert_eq!(
        november,
        [
            Recorded::Done {
                paid: 0,
                free: 1,
                balance: 1,
                free_left: 1
            },
            Recorded::Done {
                paid: 1,
                free: 1,
                balance: 0,
                free_left: 0
            },
            Recorded::Insufficient {
                balance: 0,
                free_left: 0
            },
        ]
    );
    let december = store
        .record(vec![request("d", &acct, key, 200, 1)], "2026-12")
        .await
        .unwrap();
    assert_eq!(
        december,
        [Recorded::Done {
            paid: 0,
            free: 1,
            balance: 0,
            free_left: 1
        }]
    );
    let acct = store.account(acct.id).await.unwrap().unwrap();
    assert_eq!(acct.free_left("2026-12"), 1);
    assert_eq!(acct.free_left("2027-01"), 2);
    assert!(store.audit(acct.id).await.unwrap().balanced());
    let reset = store
        .set_terms(
            acct.id,
            AccountTerms {
                free_allowance: None,
                rate_limit: Some(None),
            },
        )
        .await
        .unwrap();
    assert_eq!((reset.rate_limit, reset.free_allowance), (None, 2));
}

pub async fn keys_are_found_by_hash_and_revoked_once(store: &dyn AccountStore) {
    let acct = store.ensure_account("keys", NOW_MS).await.unwrap();
    let info = store.insert_key(acct.id, new_key(3), NOW_MS).await.unwrap();
    assert_eq!(info.account, "keys");
    assert_eq!(info.revoked_ms, None);
    let auth = store.key_by_hash([3; 32]).await.unwrap().unwrap();
    assert_eq!(
        (auth.key_id, auth.account_id, auth.revoked),
        (info.id, acct.id, false)
    );
    assert_eq!(store.key_by_hash([4; 32]).await.unwrap(), None);

    let revoked = store
        .revoke_key(KeySelector::Hash([3; 32]), NOW_MS + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_ms, Some(NOW_MS + 1));
    let again = store
        .revoke_key(KeySelector::Id(info.id), NOW_MS + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_ms,
        Some(NOW_MS + 1),
        "the first revocation stands"
    );
    assert!(store.key_by_hash([3; 32]).await.unwrap().unwrap().revoked);
    assert_eq!(
        store
            .revoke_key(KeySelector::Id(KeyId(999)), NOW_MS)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.list_keys().await.unwrap(), [again]);
}

pub async fn idempotent_responses_are_kept_with_their_charge(store: &dyn AccountStore) {
    let (acct, key) = account_with_key(store, "idem", 5).await;
    let acct = store.add_credits(acct.id, 1, "test", NOW_MS).await.unwrap();
    let response = StoredResponse {
        request_hash: [9; 32],
        status: 200,
        body: b"{\"results\":[]}".to_vec(),
        request_id: "i1".into(),
        created_ms: NOW_MS,
    };
    let mut charged = request("i1", &acct, key, 200, 1);
    charged.idempotency = Some(Box::new(("retry-1".into(), response.clone())));
    let mut refused = request("i2", &acct, key, 200, 1);
    refused.idempotency = Some(Box::new((
        "retry-2".into(),
        StoredResponse {
            request_id: "i2".into(),
            ..response.clone()
        },
    )));
    store
        .record(vec![charged, refused], "2026-11")
        .await
        .unwrap();
    let kept = store
        .idempotent_response(acct.id, "retry-1", NOW_MS - DAY_MS)
        .await
        .unwrap();
    assert_eq!(kept, Some(response));
    assert_eq!(
        store
            .idempotent_response(acct.id, "retry-2", NOW_MS - DAY_MS)
            .await
            .unwrap(),
        None,
        "a refused charge keeps no response"
    );
    assert_eq!(
        store
            .idempotent_response(acct.id, "retry-1", NOW_MS + 1)
            .await
            .unwrap(),
        None,
        "too old"
    );
    assert_eq!(store.expire_idempotency(NOW_MS + 1).await.unwrap(), 1);
    assert_eq!(
        store
            .idempotent_response(acct.id, "retry-1", 0)
            .await
            .unwrap(),
        None
    );
}

pub async fn usage_pages_newest_first_and_sums_by_day(store: &dyn AccountStore) {
    let (acct, key) = account_with_key(store, "usage", 6).await;
    let acct = store
        .add_credits(acct.id, 100, "test", NOW_MS)
        .await
        .unwrap();
    let batch: Vec<RequestRecord> = (0..5)
        .map(|i| RequestRecord {
            at_ms: NOW_MS - (4 - i) * DAY_MS / 2,
            ..request(
                &format!("u{i}"),
                &acct,
                key,
                if i == 2 { 422 } else { 200 },
                if i == 2 { 0 } else { 1 },
            )
        })
        .collect();
    store.record(batch, "2026-11").await.unwrap();
    let first = store.usage(acct.id, 0, None, 2).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["u4", "u3"]);
    let rest = store
        .usage(acct.id, 0, Some(first[1].seq), 10)
        .await
        .unwrap();
    let ids: Vec<&str> = rest.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["u2", "u1", "u0"]);
    assert_eq!(rest[0].status, 422);
    let recent = store
        .usage(acct.id, NOW_MS - DAY_MS / 2, None, 10)
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
    let days = store.usage_by_day(acct.id, 0).await.unwrap();
    let summary: Vec<(i64, i64, i64)> = days
        .iter()
        .map(|d| (d.requests, d.succeeded, d.credits))
        .collect();
    assert_eq!(days[0].day, "2026-11-26");
    assert_eq!(summary, [(1, 1, 1), (2, 1, 1), (2, 2, 2)]);
}

pub async fn the_rate_limit_is_a_burst_then_one_per_interval(store: &dyn AccountStore) {
    let account = store.ensure_account("limited", NOW_MS).await.unwrap();
    let other = store.ensure_account("other", NOW_MS).await.unwrap();
    // 3 a minute: one every 20 s, a burst of 3.
    let (interval, tolerance) = (20_000, 40_000);
    let take = |id, at| store.take_rate(id, at, interval, tolerance);
    for i in 0..3 {
        let taken = take(account.id, NOW_MS).await.unwrap();
        assert!(taken.allowed, "request {i} of the burst");
        assert_eq!(taken.tat_ms, NOW_MS + 20_000 * (i + 1));
    }
    let refused = take(account.id, NOW_MS + 1_000).await.unwrap();
    assert_eq!(
        refused,
        crate::accounts::RateTaken {
            allowed: false,
            tat_ms: NOW_MS + 60_000
        },
        "a refusal is not counted"
    );
    assert!(
        take(other.id, NOW_MS).await.unwrap().allowed,
        "each account its own"
    );
    assert!(
        take(account.id, NOW_MS + 20_000).await.unwrap().allowed,
        "one interval later"
    );
    assert!(!take(account.id, NOW_MS + 20_000).await.unwrap().allowed);
}

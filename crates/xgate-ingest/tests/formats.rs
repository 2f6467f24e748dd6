//! The X archive, GraphQL timeline and X API v2 formats against their fixtures: the tweets each fixture
//! becomes (golden snapshots, reviewed by hand), rules checked field by field, damaged inputs,
//! and idempotency in a real SQLite store.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use xgate_ingest::formats::x_api_v2::XApiV2;
use xgate_ingest::formats::x_archive::XArchive;
use xgate_ingest::formats::x_graphql::XGraphql;
use xgate_ingest::formats::{self, Format, Item};
use xgate_ingest::{IngestReport, Rejection, Source, ingest};
use xgate_model::{TweetId, UserId};
use xgate_store::{Store, UpsertSummary};
use xgate_store_sqlite::SqliteStore;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(path)
}

fn read(format: &dyn Format, path: &Path, origin: &str) -> Vec<Item> {
    let mut items = Vec::new();
    format.read_path(path, origin, &mut |item| items.push(item));
    items
}

fn tweets(items: &[Item]) -> Vec<Value> {
    items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .map(|r| serde_json::from_str(&r.json).unwrap())
        .collect()
}

fn rejections(items: &[Item]) -> Vec<&Rejection> {
    items.iter().filter_map(|i| i.as_ref().err()).collect()
}

/// Every item, in order: a tweet as pretty JSON, or a rejection as one line.
fn golden(items: &[Item]) -> String {
    let mut out = String::new();
    for item in items {
        match item {
            Ok(record) => {
                let value: Value = serde_json::from_str(&record.json).unwrap();
                out += &serde_json::to_string_pretty(&value).unwrap();
            }
            Err(rejection) => out += &format!("rejected {rejection}"),
        }
        out.push('\n');
    }
    out
}

fn by_id(tweets: &[Value], id: &str) -> Value {
    tweets
        .iter()
        .find(|t| t["tweet_id"] == id)
        .unwrap_or_else(|| panic!("no tweet {id}"))
        .clone()
}

fn video_order(tweet: &Value) -> Vec<(Value, String)> {
    tweet["video_url"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["bitrate"].clone(),
                v["content_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The fixture archive folder packed as a zip, the way X ships it.
fn zip_of(folder: &Path, to: &Path) {
    let mut zip = zip::ZipWriter::new(File::create(to).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut names: Vec<_> = std::fs::read_dir(folder.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    zip.start_file("Your archive.html", options).unwrap();
    zip.write_all(b"<html>open me</html>").unwrap();
    for name in names {
        zip.start_file(format!("data/{name}"), options).unwrap();
        let mut text = Vec::new();
        File::open(folder.join("data").join(&name))
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
        zip.write_all(&text).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn the_archive_folder_becomes_these_tweets() {
    let items = read(&XArchive, &fixture("x-archive"), "archive");
    insta::assert_snapshot!("x_archive", golden(&items));
}

#[test]
fn archive_tweets_follow_the_mapping_rules() {
    let items = read(&XArchive, &fixture("x-archive"), "archive");
    let tweets = tweets(&items);
    assert_eq!(tweets.len(), 8, "eight good tweets of nine");

    // The author, from account.js, profile.js and verified.js; what the archive lacks is null.
    let user = &tweets[0]["user"];
    assert_eq!(user["user_id"], "1400000000000000042");
    assert_eq!(user["username"], "river_otter");
    assert_eq!(user["name"], "River Otter");
    assert_eq!(user["creation_date"], "Sun Mar 02 10:11:12 +0000 2014");
    assert_eq!(user["timestamp"], 1393755072);
    assert_eq!(user["location"], "Lyon, France");
    assert_eq!(user["external_url"], "https://t.co/Rv3rOtTer1");
    assert_eq!(user["is_verified"], false);
    assert_eq!(user["follower_count"], Value::Null);
    assert_eq!(
        user["profile_banner_url"],
        "https://pbs.twimg.com/profile_banners/1400000000000000042/1700000000"
    );

    // Multi-photo, numbers from strings, ids exact beyond 2^53.
    let photos = by_id(&tweets, "1790000000000000001");
    assert_eq!(
        photos["media_url"],
        serde_json::json!([
            "https://pbs.twimg.com/media/GNdawnOne.jpg",
            "https://pbs.twimg.com/media/GNdawnTwo.jpg"
        ])
    );
    assert_eq!(photos["favorite_count"], 42);
    assert_eq!(photos["video_url"], Value::Null);
    let media = &photos["extended_entities"]["media"];
    assert_eq!(media[1]["media_key"], "3_1790000000000000102");
    assert_eq!(media[1]["id_str"], "1790000000000000102");
    assert_eq!(media[0]["indices"], serde_json::json!([22, 45]));
    assert_eq!(media[0]["sizes"]["large"]["w"], 2048);
    assert_eq!(
        photos["expanded_url"],
        "https://x.com/river_otter/status/1790000000000000001/photo/1"
    );

    // Video with HLS and MP4: MP4 by bitrate, highest first, then HLS; a reply.
    let video = by_id(&tweets, "1790000000000000002");
    assert_eq!(
        video_order(&video),
        [
            (Value::from(2176000), "video/mp4".to_owned()),
            (Value::from(832000), "video/mp4".to_owned()),
            (Value::from(256000), "video/mp4".to_owned()),
            (Value::Null, "application/x-mpegURL".to_owned()),
        ]
    );
    assert_eq!(video["in_reply_to_status_id"], "1789999999999999000");
    assert_eq!(
        video["media_url"][0],
        "https://pbs.twimg.com/ext_tw_video_thumb/1790000000000000201/pu/img/Weir.jpg"
    );

    // A GIF: its thumbnail, no video_url.
    let gif = by_id(&tweets, "1790000000000000003");
    assert_eq!(gif["video_url"], Value::Null);
    assert_eq!(gif["extended_entities"]["media"][0]["type"], "animated_gif");
    assert_eq!(
        gif["extended_entities"]["media"][0]["media_key"],
        "16_1790000000000000301"
    );

    // A retweet, kept as the account's "RT @" tweet with the retweeted photo.
    let retweet = by_id(&tweets, "1790000000000000004");
    assert_eq!(retweet["retweet"], true);
    assert_eq!(retweet["retweet_tweet_id"], Value::Null);
    assert_eq!(
        retweet["media_url"][0],
        "https://pbs.twimg.com/media/GNheron.jpg"
    );

    // A long post: its whole text from note-tweet.js (and not the other note of that second).
    let long = by_id(&tweets, "1790000000000000005");
    let text = long["text"].as_str().unwrap();
    assert!(text.ends_with("more in the next days."), "{text}");
    assert!(text.starts_with("A long post about the river"), "{text}");

    // Without media: kept, flagged.
    let plain = items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .find(|r| r.tweet_id == TweetId(1790000000000000006))
        .unwrap();
    assert!(!plain.has_media);

    // Withheld in some countries: still the account's tweet, kept.
    assert_eq!(
        by_id(&tweets, "1790000000000000007")["media_url"][0],
        "https://pbs.twimg.com/media/GNdam.jpg"
    );

    // The second part file, wrapper-less and with only an http media address.
    let old = by_id(&tweets, "250000000000000009");
    assert_eq!(old["text"], "First otter I ever saw http://t.co/OlD0009");
    assert_eq!(
        old["media_url"][0],
        "https://pbs.twimg.com/media/A3oldOtter.jpg"
    );
    assert_eq!(old["creation_date"], "Sun Sep 23 14:02:11 +0000 2012");

    // The tweet without a date is refused with its place.
    let rejected = rejections(&items);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].place, "archive:data/tweets.js[7]");
    assert_eq!(rejected[0].reason, "no created_at");
}

#[test]
fn a_zipped_archive_reads_as_its_folder_does() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("twitter-2024-05-20.zip");
    zip_of(&fixture("x-archive"), &zip);
    let start = std::fs::read(&zip).unwrap();
    assert_eq!(formats::detect(&start).map(|f| f.name()), Some("x-archive"));
    let from_zip = read(&XArchive, &zip, "archive");
    let from_folder = read(&XArchive, &fixture("x-archive"), "archive");
    assert_eq!(tweets(&from_zip), tweets(&from_folder));
    assert_eq!(rejections(&from_zip).len(), 1);
}

#[test]
fn a_cut_zip_keeps_the_tweets_before_the_cut_and_says_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("archive.zip");
    zip_of(&fixture("x-archive"), &zip);
    let whole = std::fs::read(&zip).unwrap();
    let full = tweets(&read(&XArchive, &zip, "archive")).len();
    // Cut inside the tweets.js entry, the last big one.
    let cut = dir.path().join("cut.zip");
    std::fs::write(&cut, &whole[..whole.len() * 3 / 4]).unwrap();

    let items = read(&XArchive, &cut, "cut.zip");
    let kept = tweets(&items);
    assert!(
        !kept.is_empty() && kept.len() < full,
        "kept {} of {full}",
        kept.len()
    );
    assert_eq!(kept[0]["user"]["username"], "river_otter");
    let rejected = rejections(&items);
    let last = rejected.last().unwrap();
    assert!(last.place.starts_with("cut.zip"), "{last}");
    assert!(
        last.reason.contains("reading stopped") || last.reason.contains("damaged"),
        "{last}"
    );
}

#[test]
fn a_cut_tweets_file_keeps_what_came_before_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for name in ["account.js", "profile.js"] {
        std::fs::copy(fixture("x-archive/data").join(name), data.join(name)).unwrap();
    }
    let text = std::fs::read_to_string(fixture("x-archive/data/tweets.js")).unwrap();
    let at = text.find("1790000000000000003").unwrap();
    std::fs::write(data.join("tweets.js"), &text[..at]).unwrap();

    let items = read(&XArchive, dir.path(), "mine");
    let ids: Vec<Value> = tweets(&items)
        .iter()
        .map(|t| t["tweet_id"].clone())
        .collect();
    assert_eq!(ids, ["1790000000000000001", "1790000000000000002"]);
    let rejected = rejections(&items);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].place, "mine:data/tweets.js");
    assert!(
        rejected[0]
            .reason
            .starts_with("reading stopped after 2 elements: EOF"),
        "{}",
        rejected[0].reason
    );
}

#[test]
fn an_archive_without_its_account_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("x-archive/data/tweets.js"),
        dir.path().join("tweets.js"),
    )
    .unwrap();
    let items = read(&XArchive, dir.path(), "bare");
    assert_eq!(items.len(), 1);
    let rejected = rejections(&items);
    assert_eq!(rejected[0].place, "bare");
    assert!(
        rejected[0].reason.contains("account.js"),
        "{}",
        rejected[0].reason
    );
}

#[test]
fn the_x_api_v2_page_becomes_these_tweets() {
    let items = read(
        &XApiV2,
        &fixture("x-api-v2/user-tweets-page.json"),
        "v2.json",
    );
    insta::assert_snapshot!("x_api_v2", golden(&items));
}

#[test]
fn graphql_responses_become_these_tweets() {
    let media = read(
        &XGraphql,
        &fixture("x-graphql/user-media.json"),
        "user-media.json",
    );
    insta::assert_snapshot!("x_graphql_user_media", golden(&media));
    let more = read(
        &XGraphql,
        &fixture("x-graphql/user-media-more.jsonl"),
        "user-media-more.jsonl",
    );
    insta::assert_snapshot!("x_graphql_user_media_more", golden(&more));
    let timeline = read(
        &XGraphql,
        &fixture("x-graphql/user-tweets.json"),
        "user-tweets.json",
    );
    insta::assert_snapshot!("x_graphql_user_tweets", golden(&timeline));
}

#[test]
fn graphql_tweets_follow_the_mapping_rules() {
    let media = tweets(&read(&XGraphql, &fixture("x-graphql/user-media.json"), "m"));
    let more = tweets(&read(
        &XGraphql,
        &fixture("x-graphql/user-media-more.jsonl"),
        "m",
    ));
    // Module items, from TimelineAddEntries and from TimelineAddToModule; cursors skipped.
    let ids: Vec<&Value> = media.iter().chain(&more).map(|t| &t["tweet_id"]).collect();
    assert_eq!(
        ids,
        [
            "1790000000000000201",
            "1790000000000000202",
            "1790000000000000203"
        ]
    );
    let photos = &media[0];
    assert_eq!(photos["views"], 1234);
    assert_eq!(photos["reply_count"], 4);
    assert_eq!(photos["quote_count"], 2);
    assert_eq!(photos["conversation_id"], "1790000000000000201");
    assert_eq!(
        photos["extended_entities"]["media"][0]["ext_alt_text"],
        "Two grey herons standing in shallow water at sunrise"
    );
    let user = &photos["user"];
    assert_eq!(user["user_id"], "1300000000001000007");
    assert_eq!(user["username"], "quiet_heron");
    assert_eq!(user["follower_count"], 220853);
    assert_eq!(user["following_count"], 311);
    assert_eq!(user["number_of_tweets"], 4100);
    assert_eq!(user["is_blue_verified"], true);
    assert_eq!(user["external_url"], "https://heron.example");
    assert_eq!(user["category"], "Photographer");
    assert_eq!(user["creation_date"], "Thu Oct 17 04:04:58 +0000 2013");
    let video = &media[1];
    assert_eq!(
        video_order(video),
        [
            (Value::from(2176000), "video/mp4".to_owned()),
            (Value::from(832000), "video/mp4".to_owned()),
            (Value::from(256000), "video/mp4".to_owned()),
            (Value::Null, "application/x-mpegURL".to_owned()),
        ]
    );
    assert_eq!(video["video_view_count"], 987);
    assert_eq!(more[0]["video_url"], Value::Null);

    let items = read(&XGraphql, &fixture("x-graphql/user-tweets.json"), "t.json");
    let timeline = tweets(&items);
    let ids: Vec<&str> = timeline
        .iter()
        .map(|t| t["tweet_id"].as_str().unwrap())
        .collect();
    // Pinned first; the tombstone and the unavailable tweet are skipped.
    assert_eq!(
        ids,
        [
            "1790000000000000401",
            "1790000000000000402",
            "1790000000000000403",
            "1790000000000000404",
            "1790000000000000407"
        ]
    );
    let quote = &timeline[0];
    assert_eq!(quote["quoted_status_id"], "1780000000000000000");
    // The newer user shape: name and dates under `core`, picture under `avatar`.
    assert_eq!(quote["user"]["username"], "river_otter");
    assert_eq!(
        quote["user"]["creation_date"],
        "Sun Mar 02 10:11:12 +0000 2014"
    );
    assert_eq!(
        quote["user"]["profile_pic_url"],
        "https://pbs.twimg.com/profile_images/1400000000000000500/Otter_normal.jpg"
    );
    assert_eq!(quote["user"]["location"], "Lyon, France");
    assert_eq!(quote["user"]["is_private"], false);

    let retweet = &timeline[1];
    assert_eq!(retweet["retweet"], true);
    assert_eq!(retweet["retweet_tweet_id"], "1790000000000000202");
    assert_eq!(video_order(retweet)[0].0, 2176000);
    assert_eq!(retweet["views"], Value::Null);

    let long = &timeline[2];
    assert!(
        long["text"]
            .as_str()
            .unwrap()
            .ends_with("more in the next days.")
    );
    assert_eq!(
        timeline[3]["media_url"][0],
        "https://pbs.twimg.com/media/GNdam.jpg"
    );
    assert_eq!(timeline[4]["in_reply_to_status_id"], "1790000000000000401");
    assert_eq!(timeline[4]["media_url"], serde_json::json!([]));

    let rejected = rejections(&items);
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].place,
        "t.json:response[0].instructions[2].entries[6]"
    );
    assert!(
        rejected[0].reason.contains("author"),
        "{}",
        rejected[0].reason
    );
}

#[test]
fn a_cut_graphql_file_keeps_the_responses_before_the_cut() {
    let whole = std::fs::read_to_string(fixture("x-graphql/user-media-more.jsonl")).unwrap();
    let first = std::fs::read_to_string(fixture("x-graphql/user-media.json")).unwrap();
    let text = format!("{first}{}", &whole[..whole.len() / 2]);
    let mut items = Vec::new();
    XGraphql.read(&mut text.as_bytes(), "cut.json", &mut |i| items.push(i));
    assert_eq!(tweets(&items).len(), 2);
    let rejected = rejections(&items);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].place, "cut.json:response[1]");
    assert!(
        rejected[0].reason.contains("reading stopped"),
        "{}",
        rejected[0].reason
    );
}

async fn ingest_all(
    store: &Arc<SqliteStore>,
    sources: Vec<Source>,
) -> (IngestReport, Vec<Rejection>) {
    let mut rejected = Vec::new();
    let report = ingest(store.clone(), None, sources, |r| rejected.push(r.clone()))
        .await
        .unwrap();
    (report, rejected)
}

#[tokio::test]
async fn archives_and_timelines_are_detected_stored_once_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("a.db")).unwrap());
    let zip = dir.path().join("archive.zip");
    zip_of(&fixture("x-archive"), &zip);
    let sources = vec![
        Source::File(fixture("x-archive")),
        Source::File(fixture("x-graphql/user-media.json")),
        Source::File(fixture("x-graphql/user-media-more.jsonl")),
        Source::File(fixture("x-graphql/user-tweets.json")),
    ];
    let (report, rejected) = ingest_all(&store, sources.clone()).await;
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(report.read, 8 + 3 + 5);
    // A retweet is a tweet of its own; the retweeted tweet inside it is not stored apart.
    assert_eq!(report.stored.written, 16);
    assert_eq!(report.without_media, 2);

    let otter = UserId(1400000000000000042);
    let ids: Vec<u64> = store
        .media_page(otter, None, 20)
        .await
        .unwrap()
        .iter()
        .map(|t| t.tweet_id.get())
        .collect();
    assert_eq!(
        ids,
        [
            1790000000000000404,
            1790000000000000403,
            1790000000000000402,
            1790000000000000401,
            1790000000000000007,
            1790000000000000005,
            1790000000000000004,
            1790000000000000003,
            1790000000000000002,
            1790000000000000001,
            250000000000000009,
        ]
    );

    // Again, and the zip of the same archive: nothing changes.
    let mut again = sources;
    again.push(Source::File(zip));
    let (report, _) = ingest_all(&store, again).await;
    assert_eq!(
        report.stored,
        UpsertSummary {
            written: 0,
            unchanged: 16 + 8
        }
    );
}

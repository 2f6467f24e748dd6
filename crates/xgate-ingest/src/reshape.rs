//! Tweets in the API's format written back out in the shapes of other sources: an X account
//! archive and X API v2 pages. `xgate gen` uses them to make large inputs of those formats for
//! benchmarks and memory tests; tests use them to check that reading a shape back gives the
//! tweet that was written.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::{Map, Value, json};
use xgate_model::Tweet;

/// Tweets per X API v2 page, as `max_results=100` gives.
pub const V2_PAGE: usize = 100;

/// A tweet as the archive's `tweets.js` holds it: `{"tweet": {...}}`, every number a string, and
/// no author.
pub fn archive_tweet(tweet: &Tweet) -> Value {
    let mut legacy = Map::new();
    let id = tweet.tweet_id.to_string();
    legacy.insert("id_str".into(), json!(id));
    legacy.insert("id".into(), json!(id));
    legacy.insert("created_at".into(), json!(tweet.creation_date));
    legacy.insert("full_text".into(), json!(tweet.text));
    if let Some(lang) = &tweet.language {
        legacy.insert("lang".into(), json!(lang));
    }
    for (key, value) in [
        ("favorite_count", tweet.favorite_count),
        ("retweet_count", tweet.retweet_count),
    ] {
        legacy.insert(key.into(), json!(value.unwrap_or(0).to_string()));
    }
    if let Some(reply) = tweet.in_reply_to_status_id {
        legacy.insert("in_reply_to_status_id_str".into(), json!(reply.to_string()));
        legacy.insert("in_reply_to_status_id".into(), json!(reply.to_string()));
    }
    let mut entities = json!({"hashtags": [], "symbols": [], "user_mentions": [], "urls": []});
    if let Some(extended) = &tweet.extended_entities {
        let mut media = serde_json::to_value(&extended.media).expect("media serialize");
        strings(&mut media);
        entities["media"] = json!([media[0].clone()]);
        legacy.insert("extended_entities".into(), json!({ "media": media }));
    }
    legacy.insert("entities".into(), entities);
    json!({ "tweet": legacy })
}

/// Every number as a string, as the archive writes them.
fn strings(value: &mut Value) {
    match value {
        Value::Number(n) => *value = Value::String(n.to_string()),
        Value::Array(items) => items.iter_mut().for_each(strings),
        Value::Object(object) => object.values_mut().for_each(strings),
        _ => {}
    }
}

/// Writes an archive folder (`data/account.js`, `data/profile.js`, `data/tweets.js`) for
/// `tweets`, which must all be one user's. Returns how many tweets were written.
pub fn write_archive(tweets: impl Iterator<Item = Tweet>, dir: &Path) -> io::Result<u64> {
    let data = dir.join("data");
    fs::create_dir_all(&data)?;
    let mut out = BufWriter::with_capacity(1 << 20, File::create(data.join("tweets.js"))?);
    out.write_all(b"window.YTD.tweets.part0 = [")?;
    let mut written = 0;
    let mut author = None;
    for tweet in tweets {
        if author.is_none() {
            author = Some(tweet.user.clone());
        } else if author.as_ref().map(|u| u.user_id) != Some(tweet.user.user_id) {
            return Err(io::Error::other("an archive holds one user's tweets"));
        }
        out.write_all(if written == 0 { b"\n  " } else { b",\n  " })?;
        serde_json::to_writer(&mut out, &archive_tweet(&tweet))?;
        written += 1;
    }
    out.write_all(b"\n]\n")?;
    out.flush()?;
    let Some(user) = author else {
        return Ok(0);
    };
    let created = user
        .timestamp
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0));
    let account = json!([{ "account": {
        "username": user.username,
        "accountId": user.user_id.to_string(),
        "createdAt": created.map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
        "accountDisplayName": user.name,
    }}]);
    let profile = json!([{ "profile": {
        "description": {
            "bio": user.description.clone().unwrap_or_default(),
            "website": user.external_url.clone().unwrap_or_default(),
            "location": user.location.clone().unwrap_or_default(),
        },
        "avatarMediaUrl": user.profile_pic_url,
    }}]);
    for (name, value) in [("account", account), ("profile", profile)] {
        let text = serde_json::to_string_pretty(&value)?;
        fs::write(
            data.join(format!("{name}.js")),
            format!("window.YTD.{name}.part0 = {text}\n"),
        )?;
    }
    Ok(written)
}

/// One X API v2 page of `tweets`, with the media and authors in `includes`.
pub fn v2_page(tweets: &[Tweet]) -> Value {
    let mut data = Vec::new();
    let mut media = Vec::new();
    let mut users: Vec<Value> = Vec::new();
    for tweet in tweets {
        let author = tweet.user.user_id.to_string();
        let mut keys = Vec::new();
        for m in tweet.extended_entities.iter().flat_map(|e| &e.media) {
            let key = m.media_key.clone().unwrap_or_default();
            keys.push(json!(key));
            let mut item = json!({"media_key": key, "type": m.kind});
            if m.kind == "photo" {
                item["url"] = json!(m.media_url_https);
            } else {
                item["preview_image_url"] = json!(m.media_url_https);
            }
            if let Some(info) = m.other.get("original_info") {
                item["width"] = info["width"].clone();
                item["height"] = info["height"].clone();
            }
            if let Some(info) = m.other.get("video_info") {
                let variants: Vec<Value> = info["variants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| {
                        let mut out = json!({"content_type": v["content_type"], "url": v["url"]});
                        if let Some(b) = v.get("bitrate") {
                            out["bit_rate"] = b.clone();
                        }
                        out
                    })
                    .collect();
                item["variants"] = json!(variants);
                if let Some(ms) = info.get("duration_millis") {
                    item["duration_ms"] = ms.clone();
                }
            }
            media.push(item);
        }
        let mut references = Vec::new();
        if let Some(reply) = tweet.in_reply_to_status_id {
            references.push(json!({"type": "replied_to", "id": reply.to_string()}));
        }
        let created = chrono::DateTime::from_timestamp(tweet.timestamp, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
        let mut item = json!({
            "id": tweet.tweet_id.to_string(),
            "text": tweet.text,
            "created_at": created,
            "author_id": author,
            "conversation_id": tweet.conversation_id.map(|c| c.to_string()),
            "lang": tweet.language,
            "public_metrics": {
                "retweet_count": tweet.retweet_count,
                "reply_count": tweet.reply_count,
                "like_count": tweet.favorite_count,
                "quote_count": tweet.quote_count,
            },
            "attachments": {"media_keys": keys},
        });
        if !references.is_empty() {
            item["referenced_tweets"] = json!(references);
        }
        data.push(item);
        if !users.iter().any(|u| u["id"] == author) {
            let u = &tweet.user;
            users.push(json!({
                "id": author,
                "name": u.name,
                "username": u.username,
                "created_at": u.timestamp
                    .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
                "description": u.description,
                "location": u.location,
                "profile_image_url": u.profile_pic_url,
                "protected": u.is_private,
                "verified": u.is_verified,
                "public_metrics": {
                    "followers_count": u.follower_count,
                    "following_count": u.following_count,
                    "tweet_count": u.number_of_tweets,
                    "like_count": u.favourites_count,
                },
            }));
        }
    }
    json!({
        "data": data,
        "includes": {"media": media, "users": users},
        "meta": {"result_count": tweets.len()},
    })
}

/// Writes `tweets` as X API v2 pages of [`V2_PAGE`], one a line. Returns how many tweets.
pub fn write_v2_pages(tweets: impl Iterator<Item = Tweet>, out: &mut dyn Write) -> io::Result<u64> {
    let mut page = Vec::with_capacity(V2_PAGE);
    let mut written = 0;
    let flush = |page: &mut Vec<Tweet>, out: &mut dyn Write| -> io::Result<()> {
        if !page.is_empty() {
            serde_json::to_writer(&mut *out, &v2_page(page))?;
            out.write_all(b"\n")?;
            page.clear();
        }
        Ok(())
    };
    for tweet in tweets {
        page.push(tweet);
        written += 1;
        if page.len() == V2_PAGE {
            flush(&mut page, out)?;
        }
    }
    flush(&mut page, out)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::formats::Format;
    use crate::formats::x_api_v2::XApiV2;
    use crate::synth::{self, SynthConfig};

    fn read_back(format: &dyn Format, path: &Path) -> Vec<Tweet> {
        let mut out = Vec::new();
        format.read_path(path, "t", &mut |item| {
            let record = item.unwrap();
            out.push(serde_json::from_str(&record.json).unwrap());
        });
        out
    }

    /// What both shapes carry of a tweet: everything the timeline shows but the author's
    /// counts and the media's extra fields.
    fn essentials(t: &Tweet) -> impl PartialEq + std::fmt::Debug {
        (
            t.tweet_id,
            t.creation_date.clone(),
            t.timestamp,
            t.text.clone(),
            t.media_url.clone(),
            t.video_url.clone(),
            t.in_reply_to_status_id,
            t.favorite_count,
            t.retweet_count,
            t.user.user_id,
            t.user.username.clone(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// A synthetic user's tweets written as an archive and as v2 pages read back as the same
        /// tweets.
        #[test]
        fn tweets_survive_the_archive_and_v2_shapes(seed in 0u64..1_000, first in 0u64..64) {
            let config = SynthConfig { users: 1, first_user: first, per_user: 30, seed };
            let written: Vec<Tweet> = synth::tweets(config).collect();
            let dir = tempfile::tempdir().unwrap();
            write_archive(written.clone().into_iter(), dir.path()).unwrap();
            let archive = read_back(&crate::formats::x_archive::XArchive, dir.path());
            let v2_file = dir.path().join("v2.jsonl");
            let mut out = File::create(&v2_file).unwrap();
            write_v2_pages(written.clone().into_iter(), &mut out).unwrap();
            let v2 = read_back(&XApiV2, &v2_file);
            let want: Vec<_> = written.iter().map(essentials).collect();
            prop_assert_eq!(&archive.iter().map(essentials).collect::<Vec<_>>(), &want);
            prop_assert_eq!(&v2.iter().map(essentials).collect::<Vec<_>>(), &want);
            // The archive keeps each media object whole.
            for (a, w) in archive.iter().zip(&written) {
                prop_assert_eq!(&a.extended_entities, &w.extended_entities);
            }
        }
    }
}

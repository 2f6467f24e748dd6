//! X web timeline responses: the GraphQL `UserMedia` and `UserTweets` JSON that the web app
//! receives, as scrapers and browser exporters save it (one response per file, one per line, or
//! several in a row).
//!
//! Tweets sit in the timeline's `instructions[]`: `TimelineAddEntries` entries that are a tweet
//! (`TimelineTimelineItem`) or a module of tweets (`TimelineTimelineModule`, the media grid), and
//! `TimelineAddToModule` items. Each is a `tweet_results.result` with `legacy` (a v1.1 tweet),
//! `core.user_results.result` (its author), `views` and `note_tweet`. Cursor entries and
//! tombstones (deleted, withheld or otherwise unavailable tweets) have no tweet and are skipped.
//! The mapping rules are in `docs/FORMATS.md`.

use std::io::BufRead;

use serde_json::Value;
use xgate_model::time::legacy_date;
use xgate_model::{Tweet, TweetId, TweetRecord, User, UserId};

use super::legacy::{self, Context, bool_of, int_of, str_of};
use super::{Format, Item};
use crate::Rejection;

/// A stream of GraphQL timeline responses.
pub struct XGraphql;

impl Format for XGraphql {
    fn name(&self) -> &'static str {
        "x-graphql"
    }

    fn read(&self, input: &mut dyn BufRead, origin: &str, emit: &mut dyn FnMut(Item)) {
        let responses = serde_json::Deserializer::from_reader(input).into_iter::<Value>();
        for (index, response) in responses.enumerate() {
            let response = match response {
                Ok(response) => response,
                Err(e) => {
                    emit(Err(Rejection {
                        place: format!("{origin}:response[{index}]"),
                        reason: format!("not JSON, reading stopped: {e}"),
                    }));
                    return;
                }
            };
            let Some(instructions) = find_instructions(&response) else {
                emit(Err(Rejection {
                    place: format!("{origin}:response[{index}]"),
                    reason: "no timeline instructions (not a UserMedia or UserTweets response)"
                        .into(),
                }));
                continue;
            };
            for (path, result) in timeline_tweets(instructions) {
                let item = match map_result(result) {
                    Ok(Some(tweet)) => serde_json::to_string(&tweet)
                        .map_err(|e| e.to_string())
                        .and_then(|json| {
                            TweetRecord::from_json_string(json).map_err(|e| e.to_string())
                        }),
                    Ok(None) => continue,
                    Err(reason) => Err(reason),
                };
                emit(item.map_err(|reason| Rejection {
                    place: format!("{origin}:response[{index}].{path}"),
                    reason,
                }));
            }
        }
    }
}

/// The timeline's `instructions`, wherever the response's version puts them
/// (`data.user.result.timeline_v2.timeline`, `data.user.result.timeline.timeline`, ...).
fn find_instructions(value: &Value) -> Option<&Vec<Value>> {
    match value {
        Value::Object(object) => {
            if let Some(Value::Array(instructions)) = object.get("instructions") {
                return Some(instructions);
            }
            object.values().find_map(find_instructions)
        }
        _ => None,
    }
}

/// Every `tweet_results.result` of the instructions, in timeline order, with where it is.
fn timeline_tweets(instructions: &[Value]) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for (i, instruction) in instructions.iter().enumerate() {
        let at = format!("instructions[{i}]");
        for (j, entry) in list(instruction, "entries").iter().enumerate() {
            entry_tweets(entry, format!("{at}.entries[{j}]"), &mut out);
        }
        // A pinned tweet comes as one `entry`.
        if let Some(entry) = instruction.get("entry") {
            entry_tweets(entry, format!("{at}.entry"), &mut out);
        }
        for (k, item) in list(instruction, "moduleItems").iter().enumerate() {
            if let Some(result) = item.get("item").and_then(tweet_result) {
                out.push((format!("{at}.moduleItems[{k}]"), result));
            }
        }
    }
    out
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The tweets of one entry: a timeline item, or each item of a module. Cursors have none.
fn entry_tweets<'a>(entry: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    let Some(content) = entry.get("content") else {
        return;
    };
    if let Some(result) = tweet_result(content) {
        out.push((at.clone(), result));
    }
    for (k, item) in list(content, "items").iter().enumerate() {
        if let Some(result) = item.get("item").and_then(tweet_result) {
            out.push((format!("{at}.content.items[{k}]"), result));
        }
    }
}

/// `itemContent.tweet_results.result` of an entry's content or a module item.
fn tweet_result(content: &Value) -> Option<&Value> {
    let item = content
        .get("itemContent")
        .or_else(|| content.get("content"))?;
    item.get("tweet_results")
        .or_else(|| item.get("tweetResult"))?
        .get("result")
}

/// The tweet a result becomes; `None` for what holds no tweet (a tombstone, an unavailable
/// tweet).
fn map_result(result: &Value) -> Result<Option<Tweet>, String> {
    let result = unwrap_visibility(result);
    match result.get("__typename").and_then(Value::as_str) {
        Some("Tweet") | None => {}
        // TweetTombstone, TweetUnavailable: deleted, withheld, or hidden from the viewer.
        Some(_) => return Ok(None),
    }
    let Some(tweet) = result.get("legacy") else {
        return if result.get("tombstone").is_some() {
            Ok(None)
        } else {
            Err("no legacy tweet object".into())
        };
    };
    let id: Option<TweetId> = result
        .get("rest_id")
        .and_then(Value::as_str)
        .and_then(|id| id.parse().ok());
    let author = result
        .pointer("/core/user_results/result")
        .ok_or("no core.user_results.result (the author)")?;
    let user = map_user(unwrap_visibility(author))?;
    let retweeted = tweet
        .pointer("/retweeted_status_result/result")
        .or_else(|| result.pointer("/retweeted_status_result/result"))
        .map(unwrap_visibility)
        .and_then(|original| {
            let id = original.get("rest_id")?.as_str()?.parse().ok()?;
            Some((id, original.get("legacy")?))
        });
    let context = Context {
        id,
        views: result.pointer("/views/count").and_then(legacy::int),
        long_text: result
            .pointer("/note_tweet/note_tweet_results/result/text")
            .and_then(Value::as_str)
            .map(str::to_owned),
        retweeted,
    };
    legacy::map_tweet(tweet, user, context).map(Some)
}

/// `TweetWithVisibilityResults` (a tweet with limited actions or withheld somewhere) wraps the
/// tweet in `tweet`.
fn unwrap_visibility(result: &Value) -> &Value {
    match result.get("__typename").and_then(Value::as_str) {
        Some("TweetWithVisibilityResults") => result.get("tweet").unwrap_or(result),
        _ => result,
    }
}

/// The author from `user_results.result`: `legacy` (v1.1 user), with the newer `core`,
/// `avatar`, `location`, `privacy` and `verification` objects where a response has moved fields
/// there.
fn map_user(user: &Value) -> Result<User, String> {
    let user_id: UserId = user
        .get("rest_id")
        .and_then(Value::as_str)
        .ok_or("the author has no rest_id")?
        .parse()
        .map_err(|e| format!("author rest_id: {e}"))?;
    let empty = Value::Null;
    let old = user.get("legacy").unwrap_or(&empty);
    let core = user.get("core").unwrap_or(&empty);
    let text = |key: &str, newer: Option<&Value>| {
        str_of(old, key)
            .or_else(|| newer.and_then(Value::as_str).map(str::to_owned))
            .filter(|s| !s.is_empty())
    };
    let created = text("created_at", core.get("created_at"))
        .map(|c| legacy::seconds(&c))
        .transpose()?;
    let flag = |key: &str, newer: Option<&Value>| {
        bool_of(old, key).or_else(|| newer.and_then(Value::as_bool))
    };
    Ok(User {
        creation_date: created.and_then(legacy_date),
        user_id,
        username: text("screen_name", core.get("screen_name")),
        name: text("name", core.get("name")),
        follower_count: int_of(old, "followers_count"),
        following_count: int_of(old, "friends_count"),
        favourites_count: int_of(old, "favourites_count"),
        is_private: flag("protected", user.pointer("/privacy/protected")),
        is_verified: flag("verified", user.pointer("/verification/verified")),
        is_blue_verified: bool_of(user, "is_blue_verified"),
        location: text("location", user.pointer("/location/location")),
        profile_pic_url: text("profile_image_url_https", user.pointer("/avatar/image_url")),
        profile_banner_url: text("profile_banner_url", None),
        description: text("description", None),
        external_url: old
            .pointer("/entities/url/urls/0/expanded_url")
            .and_then(Value::as_str)
            .map(str::to_owned),
        number_of_tweets: int_of(old, "statuses_count"),
        bot: None,
        timestamp: created,
        has_nft_avatar: bool_of(user, "has_nft_avatar"),
        category: user.pointer("/professional/category/0/name").cloned(),
        default_profile: bool_of(old, "default_profile"),
        default_profile_image: bool_of(old, "default_profile_image"),
    })
}

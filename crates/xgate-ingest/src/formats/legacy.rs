//! X's v1.1 tweet objects (the "legacy" tweet), as the account archive and the web timeline's
//! GraphQL responses carry them, mapped onto the API's tweet format. The rules are in
//! `docs/FORMATS.md`.
//!
//! The archive writes every number as a string (`"favorite_count": "5"`, `"bitrate": "832000"`);
//! GraphQL writes numbers. Both read the same here, and media objects come out with numbers.

use chrono::DateTime;
use serde_json::Value;
use xgate_model::time::legacy_date;
use xgate_model::{ExtendedEntities, MediaEntity, Tweet, TweetId, User, VideoVariant};

/// What the legacy object does not say itself, from around it.
#[derive(Debug, Default)]
pub struct Context<'a> {
    /// The tweet's id when the object has none (GraphQL puts it in `rest_id`).
    pub id: Option<TweetId>,
    /// `views.count` (GraphQL).
    pub views: Option<i64>,
    /// The whole text of a long post (`note_tweet`).
    pub long_text: Option<String>,
    /// The retweeted tweet's id and legacy object (GraphQL `retweeted_status_result`).
    pub retweeted: Option<(TweetId, &'a Value)>,
}

/// The tweet `legacy` becomes, written by `user`.
pub fn map_tweet(legacy: &Value, user: User, context: Context<'_>) -> Result<Tweet, String> {
    let tweet_id = context
        .id
        .or_else(|| id_of(legacy, "id_str", "id"))
        .ok_or("no id_str")?;
    let created = legacy
        .get("created_at")
        .and_then(Value::as_str)
        .ok_or("no created_at")?;
    let timestamp = seconds(created)?;
    let embedded = legacy.get("retweeted_status");
    let retweeted_id = context
        .retweeted
        .map(|(id, _)| id)
        .or_else(|| embedded.and_then(|r| id_of(r, "id_str", "id")));
    // A retweet whose own object lists no media shows the retweeted tweet's.
    let media_values = media_of(legacy)
        .or_else(|| {
            context
                .retweeted
                .and_then(|(_, original)| media_of(original))
        })
        .or_else(|| embedded.and_then(media_of))
        .unwrap_or(&[]);
    let media = media_values
        .iter()
        .enumerate()
        .map(|(at, m)| media_entity(m).map_err(|e| format!("media[{at}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let video = media.iter().find(|m| m.kind == "video");
    let text = context.long_text.or_else(|| {
        legacy
            .get("full_text")
            .or_else(|| legacy.get("text"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    // The archive keeps a retweet as the account's own tweet, `RT @author: ...`, without the
    // retweeted tweet.
    let retweet = retweeted_id.is_some() || text.as_deref().is_some_and(|t| t.starts_with("RT @"));
    Ok(Tweet {
        tweet_id,
        creation_date: legacy_date(timestamp).ok_or("created_at out of range")?,
        text,
        media_url: Some(media.iter().filter_map(media_url).collect()),
        video_url: video.map(video_variants),
        user,
        language: str_of(legacy, "lang"),
        favorite_count: int_of(legacy, "favorite_count"),
        retweet_count: int_of(legacy, "retweet_count"),
        reply_count: int_of(legacy, "reply_count"),
        quote_count: int_of(legacy, "quote_count"),
        retweet: Some(retweet),
        views: context.views,
        timestamp,
        video_view_count: video
            .and_then(|v| v.other.get("mediaStats"))
            .and_then(|s| s.get("viewCount"))
            .and_then(int),
        in_reply_to_status_id: id_of(legacy, "in_reply_to_status_id_str", "in_reply_to_status_id"),
        quoted_status_id: id_of(legacy, "quoted_status_id_str", "quoted_status_id"),
        binding_values: None,
        expanded_url: media
            .first()
            .and_then(|m| m.other.get("expanded_url"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        retweet_tweet_id: retweeted_id,
        extended_entities: (!media.is_empty()).then_some(ExtendedEntities { media }),
        conversation_id: id_of(legacy, "conversation_id_str", "conversation_id"),
        retweet_status: None,
    })
}

/// The legacy date (`Mon May 13 08:15:30 +0000 2024`) as Unix seconds.
pub fn seconds(legacy: &str) -> Result<i64, String> {
    DateTime::parse_from_str(legacy, "%a %b %d %H:%M:%S %z %Y")
        .map(|t| t.timestamp())
        .map_err(|e| format!("created_at {legacy:?}: {e}"))
}

/// An ISO 8601 date (`2024-05-13T08:15:30.000Z`) as Unix seconds.
pub fn iso_seconds(iso: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(iso)
        .map(|t| t.timestamp())
        .map_err(|e| format!("date {iso:?}: {e}"))
}

/// A number, or a string of one.
pub fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub fn int_of(object: &Value, key: &str) -> Option<i64> {
    object.get(key).and_then(int)
}

pub fn str_of(object: &Value, key: &str) -> Option<String> {
    object.get(key).and_then(Value::as_str).map(str::to_owned)
}

pub fn bool_of(object: &Value, key: &str) -> Option<bool> {
    match object.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// An id from its string field, or else from its number field (exact only below 2^53 in
/// JSON written by JavaScript, hence the string first).
pub fn id_of(object: &Value, string_key: &str, number_key: &str) -> Option<TweetId> {
    match object.get(string_key) {
        Some(Value::String(s)) => s.parse().ok(),
        _ => object.get(number_key).and_then(Value::as_u64).map(TweetId),
    }
}

fn media_of(legacy: &Value) -> Option<&[Value]> {
    ["extended_entities", "entities"]
        .iter()
        .filter_map(|key| legacy.get(key)?.get("media")?.as_array())
        .find(|media| !media.is_empty())
        .map(Vec::as_slice)
}

/// Fields of media objects that hold numbers (or arrays of numbers) and that the archive writes
/// as strings.
const NUMERIC: &[&str] = &[
    "indices",
    "w",
    "h",
    "width",
    "height",
    "x",
    "y",
    "aspect_ratio",
    "duration_millis",
    "bitrate",
    "viewCount",
];

/// A media object as delivered, with numbers as numbers and a `media_key` (X's `3_`, `7_`,
/// `16_` prefix for photos, videos, GIFs, and the media id) where the source has none.
fn media_entity(media: &Value) -> Result<MediaEntity, String> {
    let mut media = media.clone();
    numbers(&mut media);
    let object = media.as_object_mut().ok_or("not an object")?;
    if !object.contains_key("media_key") {
        let prefix = match object.get("type").and_then(Value::as_str) {
            Some("photo") => Some(3),
            Some("video") => Some(7),
            Some("animated_gif") => Some(16),
            _ => None,
        };
        if let (Some(prefix), Some(id)) = (prefix, object.get("id_str").and_then(Value::as_str)) {
            let key = format!("{prefix}_{id}");
            object.insert("media_key".into(), Value::String(key));
        }
    }
    if !object.contains_key("media_url_https") {
        // Old objects have only the http address; the https one is the same path.
        if let Some(http) = object.get("media_url").and_then(Value::as_str) {
            let https = http.replacen("http://", "https://", 1);
            object.insert("media_url_https".into(), Value::String(https));
        }
    }
    serde_json::from_value(media).map_err(|e| e.to_string())
}

fn numbers(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, field) in object.iter_mut() {
                if NUMERIC.contains(&key.as_str()) {
                    to_number(field);
                } else {
                    numbers(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(numbers),
        _ => {}
    }
}

fn to_number(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Ok(n) = s.parse::<u64>() {
                *value = Value::from(n);
            } else if let Ok(n) = s.parse::<i64>() {
                *value = Value::from(n);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(to_number),
        _ => {}
    }
}

/// One entry of `media_url`: the photo, or a video's or GIF's thumbnail.
fn media_url(media: &MediaEntity) -> Option<String> {
    media.media_url_https.clone().or_else(|| {
        media
            .other
            .get("media_url")
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

fn video_variants(video: &MediaEntity) -> Vec<VideoVariant> {
    let variants = video
        .other
        .get("video_info")
        .and_then(|info| info.get("variants"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut out: Vec<VideoVariant> = variants
        .iter()
        .filter_map(|v| {
            Some(VideoVariant {
                bitrate: v
                    .get("bitrate")
                    .and_then(int)
                    .and_then(|b| b.try_into().ok()),
                content_type: v.get("content_type")?.as_str()?.to_owned(),
                url: v.get("url")?.as_str()?.to_owned(),
            })
        })
        .collect();
    VideoVariant::sort_for_video_url(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use xgate_model::UserId;

    use super::*;

    fn user() -> User {
        serde_json::from_value(json!({"user_id": "7"})).unwrap()
    }

    #[test]
    fn archive_numbers_become_numbers_and_ids_stay_strings() {
        let legacy = json!({
            "id_str": "1790000000000000001",
            "created_at": "Mon May 13 08:15:30 +0000 2024",
            "full_text": "x",
            "favorite_count": "5",
            "extended_entities": {"media": [{
                "id_str": "1790000000000000101",
                "type": "video",
                "media_url_https": "https://pbs.twimg.com/v.jpg",
                "indices": ["0", "23"],
                "sizes": {"large": {"w": "1280", "h": "720", "resize": "fit"}},
                "video_info": {
                    "aspect_ratio": ["16", "9"],
                    "duration_millis": "14000",
                    "variants": [
                        {"bitrate": "832000", "content_type": "video/mp4", "url": "a"},
                        {"content_type": "application/x-mpegURL", "url": "b"},
                        {"bitrate": "2176000", "content_type": "video/mp4", "url": "c"}
                    ]
                }
            }]}
        });
        let tweet = map_tweet(&legacy, user(), Context::default()).unwrap();
        assert_eq!(tweet.favorite_count, Some(5));
        assert_eq!(tweet.timestamp, 1715588130);
        assert_eq!(tweet.user.user_id, UserId(7));
        let media = &tweet.extended_entities.as_ref().unwrap().media[0];
        assert_eq!(media.media_key.as_deref(), Some("7_1790000000000000101"));
        assert_eq!(media.other["id_str"], "1790000000000000101");
        assert_eq!(media.other["indices"], json!([0, 23]));
        assert_eq!(
            media.other["sizes"]["large"],
            json!({"w": 1280, "h": 720, "resize": "fit"})
        );
        assert_eq!(media.other["video_info"]["aspect_ratio"], json!([16, 9]));
        assert_eq!(media.other["video_info"]["duration_millis"], 14000);
        let urls: Vec<&str> = tweet
            .video_url
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.url.as_str())
            .collect();
        assert_eq!(urls, ["c", "a", "b"]);
    }

    #[test]
    fn a_bad_date_or_a_missing_id_is_explained() {
        let no_id = json!({"created_at": "Mon May 13 08:15:30 +0000 2024"});
        assert_eq!(
            map_tweet(&no_id, user(), Context::default()).unwrap_err(),
            "no id_str"
        );
        let bad_date = json!({"id_str": "1", "created_at": "yesterday"});
        let err = map_tweet(&bad_date, user(), Context::default()).unwrap_err();
        assert!(err.contains("yesterday"), "{err}");
    }
}

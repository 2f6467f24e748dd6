//! X API v2 responses: `{"data": [...], "includes": {"media": [...], "users": [...]}, "meta": ...}`,
//! e.g. pages of `GET /2/users/:id/tweets` with `expansions=attachments.media_keys,author_id`.
//!
//! [`map_page`] turns one page into tweets in the API's format; the mapping rules are in
//! `docs/FORMATS.md`.

use std::collections::HashMap;
use std::io::BufRead;

use chrono::DateTime;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use xgate_model::time::legacy_date;
use xgate_model::{
    ExtendedEntities, MediaEntity, Tweet, TweetId, TweetRecord, User, UserId, VideoVariant,
};

use super::{Format, Item};
use crate::Rejection;

/// A stream of X API v2 response pages.
pub struct XApiV2;

impl Format for XApiV2 {
    fn name(&self) -> &'static str {
        "x-api-v2"
    }

    fn read(&self, input: &mut dyn BufRead, origin: &str, emit: &mut dyn FnMut(Item)) {
        let pages = serde_json::Deserializer::from_reader(input).into_iter::<Page>();
        for (index, page) in pages.enumerate() {
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    let how = if e.is_data() {
                        "not an X API v2 response"
                    } else {
                        "not JSON, reading stopped"
                    };
                    emit(Err(Rejection {
                        place: format!("{origin}:page[{index}]"),
                        reason: format!("{how}: {e}"),
                    }));
                    if e.is_data() {
                        continue;
                    }
                    return;
                }
            };
            for (at, tweet) in map_page(&page).into_iter().enumerate() {
                let place = || format!("{origin}:page[{index}].data[{at}]");
                let item = tweet
                    .and_then(|t| serde_json::to_string(&t).map_err(|e| e.to_string()))
                    .and_then(|json| {
                        TweetRecord::from_json_string(json).map_err(|e| e.to_string())
                    });
                emit(item.map_err(|reason| Rejection {
                    place: place(),
                    reason,
                }));
            }
        }
    }
}

/// One response page. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    #[serde(default)]
    pub data: Vec<V2Tweet>,
    #[serde(default)]
    pub includes: Includes,
}

#[derive(Debug, Default, Deserialize)]
pub struct Includes {
    #[serde(default)]
    pub media: Vec<V2Media>,
    #[serde(default)]
    pub users: Vec<V2User>,
}

#[derive(Debug, Deserialize)]
pub struct V2Tweet {
    pub id: String,
    pub text: Option<String>,
    pub created_at: Option<String>,
    pub author_id: Option<String>,
    pub conversation_id: Option<String>,
    pub lang: Option<String>,
    #[serde(default)]
    pub public_metrics: Metrics,
    pub attachments: Option<Attachments>,
    #[serde(default)]
    pub referenced_tweets: Vec<Reference>,
    pub note_tweet: Option<NoteTweet>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Metrics {
    pub retweet_count: Option<i64>,
    pub reply_count: Option<i64>,
    pub like_count: Option<i64>,
    pub quote_count: Option<i64>,
    pub impression_count: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct Attachments {
    #[serde(default)]
    pub media_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Reference {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct NoteTweet {
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct V2Media {
    pub media_key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: Option<String>,
    pub preview_image_url: Option<String>,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub duration_ms: Option<u64>,
    pub alt_text: Option<String>,
    #[serde(default)]
    pub variants: Vec<V2Variant>,
    pub public_metrics: Option<MediaMetrics>,
}

#[derive(Debug, Deserialize)]
pub struct MediaMetrics {
    pub view_count: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct V2Variant {
    pub bit_rate: Option<u64>,
    pub content_type: String,
    pub url: String,
}

#[derive(Debug, Deserialize)]
pub struct V2User {
    pub id: String,
    pub name: Option<String>,
    pub username: Option<String>,
    pub created_at: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub profile_image_url: Option<String>,
    pub protected: Option<bool>,
    pub verified: Option<bool>,
    pub verified_type: Option<String>,
    pub url: Option<String>,
    pub entities: Option<Value>,
    #[serde(default)]
    pub public_metrics: UserMetrics,
}

#[derive(Debug, Default, Deserialize)]
pub struct UserMetrics {
    pub followers_count: Option<i64>,
    pub following_count: Option<i64>,
    pub tweet_count: Option<i64>,
    pub like_count: Option<i64>,
}

/// Every tweet of a page in the API's format, or why one cannot be.
pub fn map_page(page: &Page) -> Vec<Result<Tweet, String>> {
    let media: HashMap<&str, &V2Media> = page
        .includes
        .media
        .iter()
        .map(|m| (m.media_key.as_str(), m))
        .collect();
    let users: HashMap<&str, &V2User> = page
        .includes
        .users
        .iter()
        .map(|u| (u.id.as_str(), u))
        .collect();
    page.data
        .iter()
        .map(|tweet| map_tweet(tweet, &media, &users))
        .collect()
}

/// ISO 8601 (`2024-05-13T08:15:30.000Z`) as Unix seconds.
fn seconds(iso: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(iso)
        .map(|t| t.timestamp())
        .map_err(|e| format!("created_at {iso:?}: {e}"))
}

fn map_tweet(
    tweet: &V2Tweet,
    media: &HashMap<&str, &V2Media>,
    users: &HashMap<&str, &V2User>,
) -> Result<Tweet, String> {
    let id: TweetId = tweet
        .id
        .parse()
        .map_err(|e| format!("id {:?}: {e}", tweet.id))?;
    let created = tweet
        .created_at
        .as_deref()
        .ok_or("no created_at (request tweet.fields=created_at)")?;
    let timestamp = seconds(created)?;
    let author_id = tweet
        .author_id
        .as_deref()
        .ok_or("no author_id (request expansions=author_id)")?;
    let author = users
        .get(author_id)
        .ok_or_else(|| format!("author {author_id} is not in includes.users"))?;
    let user = map_user(author)?;
    let username = user.username.clone().unwrap_or_default();

    let keys = tweet
        .attachments
        .as_ref()
        .map_or(&[][..], |a| &a.media_keys);
    let items: Vec<&V2Media> = keys
        .iter()
        .map(|key| {
            media
                .get(key.as_str())
                .copied()
                .ok_or_else(|| format!("media {key} is not in includes.media"))
        })
        .collect::<Result<_, _>>()?;
    let path = match items.first().map(|m| m.kind.as_str()) {
        Some("photo") => "photo",
        _ => "video",
    };
    let status_url = format!("https://twitter.com/{username}/status/{id}");
    let expanded_url = (!items.is_empty()).then(|| format!("{status_url}/{path}/1"));
    let entities: Vec<MediaEntity> = items
        .iter()
        .map(|m| media_entity(m, expanded_url.as_deref().unwrap_or("")))
        .collect();
    let video = items.iter().find(|m| m.kind == "video");
    let reference = |kind: &str| {
        tweet
            .referenced_tweets
            .iter()
            .find(|r| r.kind == kind)
            .and_then(|r| r.id.parse::<TweetId>().ok())
    };
    let text = tweet
        .note_tweet
        .as_ref()
        .and_then(|n| n.text.clone())
        .or_else(|| tweet.text.clone());
    Ok(Tweet {
        tweet_id: id,
        creation_date: legacy_date(timestamp).ok_or("created_at out of range")?,
        text,
        media_url: Some(
            items
                .iter()
                .filter_map(|m| m.url.clone().or_else(|| m.preview_image_url.clone()))
                .collect(),
        ),
        video_url: video.map(|v| sorted_variants(&v.variants)),
        user,
        language: tweet.lang.clone(),
        favorite_count: tweet.public_metrics.like_count,
        retweet_count: tweet.public_metrics.retweet_count,
        reply_count: tweet.public_metrics.reply_count,
        quote_count: tweet.public_metrics.quote_count,
        retweet: Some(reference("retweeted").is_some()),
        views: tweet.public_metrics.impression_count,
        timestamp,
        video_view_count: video
            .and_then(|v| v.public_metrics.as_ref())
            .and_then(|m| m.view_count),
        in_reply_to_status_id: reference("replied_to"),
        quoted_status_id: reference("quoted"),
        binding_values: None,
        expanded_url,
        retweet_tweet_id: reference("retweeted"),
        extended_entities: (!entities.is_empty()).then_some(ExtendedEntities { media: entities }),
        conversation_id: tweet
            .conversation_id
            .as_deref()
            .and_then(|c| c.parse().ok()),
        retweet_status: None,
    })
}

fn map_user(user: &V2User) -> Result<User, String> {
    let user_id: UserId = user
        .id
        .parse()
        .map_err(|e| format!("user id {:?}: {e}", user.id))?;
    let created = user.created_at.as_deref().map(seconds).transpose()?;
    // The profile's link, expanded when X gives the expansion.
    let external_url = user
        .entities
        .as_ref()
        .and_then(|e| e.pointer("/url/urls/0/expanded_url"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| user.url.clone().filter(|u| !u.is_empty()));
    Ok(User {
        creation_date: created.and_then(legacy_date),
        user_id,
        username: user.username.clone(),
        name: user.name.clone(),
        follower_count: user.public_metrics.followers_count,
        following_count: user.public_metrics.following_count,
        favourites_count: user.public_metrics.like_count,
        is_private: user.protected,
        is_verified: user.verified,
        is_blue_verified: user.verified_type.as_deref().map(|t| t == "blue"),
        location: user.location.clone(),
        profile_pic_url: user.profile_image_url.clone(),
        profile_banner_url: None,
        description: user.description.clone(),
        external_url,
        number_of_tweets: user.public_metrics.tweet_count,
        bot: None,
        timestamp: created,
        has_nft_avatar: None,
        category: None,
        default_profile: None,
        default_profile_image: None,
    })
}

/// A v1.1-style media object from a v2 one: `bit_rate` becomes `bitrate`, `alt_text`
/// `ext_alt_text`, size `original_info`.
fn media_entity(media: &V2Media, expanded_url: &str) -> MediaEntity {
    let mut other = Map::new();
    let id = media.media_key.split_once('_').map_or("", |(_, id)| id);
    other.insert("id_str".into(), json!(id));
    other.insert("expanded_url".into(), json!(expanded_url));
    if let (Some(width), Some(height)) = (media.width, media.height) {
        other.insert(
            "original_info".into(),
            json!({"width": width, "height": height}),
        );
    }
    if let Some(alt) = &media.alt_text {
        other.insert("ext_alt_text".into(), json!(alt));
    }
    if !media.variants.is_empty() {
        let variants: Vec<Value> = media
            .variants
            .iter()
            .map(|v| match v.bit_rate {
                Some(bitrate) => {
                    json!({"bitrate": bitrate, "content_type": v.content_type, "url": v.url})
                }
                None => json!({"content_type": v.content_type, "url": v.url}),
            })
            .collect();
        let mut info = json!({ "variants": variants });
        if let Some(ms) = media.duration_ms {
            info["duration_millis"] = json!(ms);
        }
        other.insert("video_info".into(), info);
    }
    MediaEntity {
        media_key: Some(media.media_key.clone()),
        kind: media.kind.clone(),
        media_url_https: media
            .url
            .clone()
            .or_else(|| media.preview_image_url.clone()),
        other,
    }
}

/// The contract's `video_url`: MP4 variants by bitrate, highest first, then the others (HLS).
fn sorted_variants(variants: &[V2Variant]) -> Vec<VideoVariant> {
    let mut out: Vec<VideoVariant> = variants
        .iter()
        .map(|v| VideoVariant {
            bitrate: v.bit_rate,
            content_type: v.content_type.clone(),
            url: v.url.clone(),
        })
        .collect();
    VideoVariant::sort_for_video_url(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = include_str!("../../../../fixtures/x-api-v2/user-tweets-page.json");

    fn tweets() -> Vec<Tweet> {
        let page: Page = serde_json::from_str(PAGE).unwrap();
        map_page(&page).into_iter().map(Result::unwrap).collect()
    }

    #[test]
    fn a_multi_photo_tweet_keeps_every_photo_and_its_alt_text() {
        let t = &tweets()[0];
        assert_eq!(t.tweet_id, TweetId(1790000000000000001));
        assert_eq!(t.creation_date, "Mon May 13 08:15:30 +0000 2024");
        assert_eq!(t.timestamp, 1715588130);
        assert_eq!(
            t.media_url.as_deref().unwrap(),
            [
                "https://pbs.twimg.com/media/HarborOne.jpg",
                "https://pbs.twimg.com/media/HarborTwo.jpg"
            ]
        );
        assert_eq!(t.video_url, None);
        let media = &t.extended_entities.as_ref().unwrap().media;
        assert_eq!(media.len(), 2);
        assert_eq!(media[0].kind, "photo");
        assert_eq!(media[0].media_key.as_deref(), Some("3_1790000000000000101"));
        assert_eq!(media[0].other["ext_alt_text"], "Boats at dawn");
        assert_eq!(
            media[0].other["original_info"],
            json!({"width": 2048, "height": 1536})
        );
        assert_eq!(media[0].other["id_str"], "1790000000000000101");
        assert_eq!(
            (t.favorite_count, t.retweet_count, t.views),
            (Some(42), Some(3), Some(1234))
        );
        assert_eq!(
            t.expanded_url.as_deref(),
            Some("https://twitter.com/quiet_otter_1/status/1790000000000000001/photo/1")
        );
        assert_eq!(t.user.user_id, UserId(1300000000001000003));
        assert_eq!(
            t.user.creation_date.as_deref(),
            Some("Thu Oct 17 04:04:58 +0000 2013")
        );
        assert_eq!(t.user.is_blue_verified, Some(true));
        assert_eq!(
            t.user.external_url.as_deref(),
            Some("https://otter.example")
        );
        assert_eq!(
            (t.user.follower_count, t.user.number_of_tweets),
            (Some(220853), Some(4100))
        );
    }

    #[test]
    fn a_video_lists_its_variants_highest_mp4_first_and_its_views() {
        let t = &tweets()[1];
        let variants = t.video_url.as_ref().unwrap();
        let order: Vec<(Option<u64>, &str)> = variants
            .iter()
            .map(|v| (v.bitrate, v.content_type.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                (Some(2176000), "video/mp4"),
                (Some(832000), "video/mp4"),
                (None, "application/x-mpegURL")
            ]
        );
        assert_eq!(
            t.media_url.as_deref().unwrap(),
            ["https://pbs.twimg.com/ext_tw_video_thumb/1790000000000000201/pu/img/Clip.jpg"]
        );
        assert_eq!(t.video_view_count, Some(987));
        assert_eq!(t.in_reply_to_status_id, Some(TweetId(1789999999999999000)));
        let info = &t.extended_entities.as_ref().unwrap().media[0].other["video_info"];
        assert_eq!(
            info["variants"][1]["bitrate"], 832000,
            "bit_rate becomes bitrate"
        );
        assert_eq!(info["duration_millis"], 14000);
    }

    #[test]
    fn a_gif_has_its_thumbnail_and_no_video_url_and_a_quote_its_quoted_id() {
        let t = &tweets()[2];
        assert_eq!(t.video_url, None);
        assert_eq!(
            t.media_url.as_deref().unwrap(),
            ["https://pbs.twimg.com/tweet_video_thumb/Gif.jpg"]
        );
        assert_eq!(
            t.extended_entities.as_ref().unwrap().media[0].kind,
            "animated_gif"
        );
        assert_eq!(t.quoted_status_id, Some(TweetId(1780000000000000000)));
    }

    #[test]
    fn a_tweet_without_media_is_kept_without_media() {
        let t = &tweets()[3];
        assert_eq!(t.media_url.as_deref(), Some(&[][..]));
        assert!(t.extended_entities.is_none());
        let record = TweetRecord::from_json(&serde_json::to_string(t).unwrap()).unwrap();
        assert!(!record.has_media);
    }

    #[test]
    fn missing_expansions_are_explained_and_the_other_tweets_kept() {
        let mut page: Value = serde_json::from_str(PAGE).unwrap();
        page["includes"]["media"].as_array_mut().unwrap().remove(3);
        page["data"][0]
            .as_object_mut()
            .unwrap()
            .remove("created_at");
        let mut items = Vec::new();
        XApiV2.read(&mut page.to_string().as_bytes(), "v2.json", &mut |i| {
            items.push(i)
        });
        let errors: Vec<(String, String)> = items
            .iter()
            .filter_map(|i| i.as_ref().err())
            .map(|r| (r.place.clone(), r.reason.clone()))
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, "v2.json:page[0].data[0]");
        assert!(errors[0].1.contains("created_at"));
        assert_eq!(errors[1].0, "v2.json:page[0].data[2]");
        assert!(errors[1].1.contains("16_1790000000000000301"));
        assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 2);
    }
}

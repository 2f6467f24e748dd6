//! Synthetic media tweets in the contract's format: deterministic for a seed, shaped like real
//! ones (single and multi-photo posts, videos with several variants, GIFs, replies), with real
//! snowflake ids above 2^53 whose embedded time matches `creation_date` and `timestamp`.

use std::io::{self, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};
use xgate_model::time::legacy_date;
use xgate_model::{ExtendedEntities, MediaEntity, Tweet, TweetId, User, UserId, VideoVariant};

/// X's snowflake epoch, in Unix milliseconds.
const TWITTER_EPOCH_MS: u64 = 1_288_834_974_657;
/// 2015-01-01, where synthetic timelines start.
const START_MS: u64 = 1_420_070_400_000;
/// Synthetic timelines span about ten years, however many tweets they hold.
const SPAN_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
/// Users above this index could share tweet ids (the index fills the snowflake's low 22 bits).
pub const MAX_USERS: u64 = 1 << 22;

const ADJECTIVES: &[&str] = &[
    "quiet", "amber", "rapid", "lunar", "misty", "bold", "clever", "golden", "silver", "wild",
];
const NOUNS: &[&str] = &[
    "heron", "falcon", "otter", "maple", "harbor", "comet", "canyon", "lynx", "willow", "delta",
];
const WORDS: &[&str] = &[
    "sunset", "over", "the", "harbor", "today", "new", "release", "look", "at", "this", "city",
    "lights", "morning", "run", "coffee", "first", "snow", "trail", "build", "ship", "weekend",
    "garden", "update", "from", "studio", "demo", "of", "our", "latest", "work",
];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthConfig {
    pub users: u64,
    /// The index of the first user, so separate runs can make separate users.
    pub first_user: u64,
    pub per_user: u64,
    pub seed: u64,
}

/// The id of the `index`-th synthetic user: even indexes get small ids, odd ones ids above 2^53
/// (as accounts made since 2022 have), so both kinds are always exercised.
pub fn user_id(index: u64) -> UserId {
    if index.is_multiple_of(2) {
        UserId(100_000 + index * 7_919)
    } else {
        UserId(1_300_000_000_000_000_000 + index * 1_000_003)
    }
}

/// Every synthetic tweet, user by user, each user's oldest first.
pub fn tweets(config: SynthConfig) -> impl Iterator<Item = Tweet> {
    let end = config.first_user.saturating_add(config.users);
    assert!(end <= MAX_USERS, "user indexes stay below {MAX_USERS}");
    (config.first_user..end).flat_map(move |index| UserTimeline::new(config, index))
}

/// Writes [`tweets`] as JSONL; returns how many were written.
pub fn write_jsonl(config: SynthConfig, out: &mut dyn Write) -> io::Result<u64> {
    let mut written = 0;
    for tweet in tweets(config) {
        serde_json::to_writer(&mut *out, &tweet)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    Ok(written)
}

struct UserTimeline {
    rng: ChaCha8Rng,
    user: User,
    index: u64,
    left: u64,
    mean_step_ms: u64,
    now_ms: u64,
    previous: Option<TweetId>,
}

impl UserTimeline {
    fn new(config: SynthConfig, index: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(index);
        let user = profile(&mut rng, index);
        UserTimeline {
            now_ms: START_MS + rng.random_range(0..30 * 24 * 3600 * 1000),
            mean_step_ms: (SPAN_MS / config.per_user.max(1)).max(2_000),
            rng,
            user,
            index,
            left: config.per_user,
            previous: None,
        }
    }
}

impl Iterator for UserTimeline {
    type Item = Tweet;

    fn next(&mut self) -> Option<Tweet> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.now_ms += self.rng.random_range(1_000..=2 * self.mean_step_ms);
        let id = TweetId(((self.now_ms - TWITTER_EPOCH_MS) << 22) | self.index);
        let tweet = media_tweet(&mut self.rng, id, self.now_ms, &self.user, self.previous);
        self.previous = Some(id);
        Some(tweet)
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, words: &[&'a str]) -> &'a str {
    words[rng.random_range(0..words.len())]
}

fn short_code(rng: &mut ChaCha8Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn profile(rng: &mut ChaCha8Rng, index: u64) -> User {
    let username = format!("{}_{}_{index}", pick(rng, ADJECTIVES), pick(rng, NOUNS));
    let created = 1_230_000_000 + rng.random_range(0..400_000_000);
    User {
        creation_date: legacy_date(created),
        user_id: user_id(index),
        name: Some(username.replace('_', " ")),
        username: Some(username),
        follower_count: Some(rng.random_range(0..2_000_000)),
        following_count: Some(rng.random_range(0..5_000)),
        favourites_count: Some(rng.random_range(0..100_000)),
        is_private: None,
        is_verified: Some(false),
        is_blue_verified: Some(rng.random_bool(0.3)),
        location: Some("Earth".into()),
        profile_pic_url: Some(format!(
            "https://pbs.twimg.com/profile_images/{}/{}_normal.jpg",
            rng.random_range(1_000_000_000_000_000_000u64..1_800_000_000_000_000_000),
            short_code(rng, 8)
        )),
        profile_banner_url: None,
        description: Some("Synthetic account generated by xgate gen".into()),
        external_url: None,
        number_of_tweets: Some(rng.random_range(100..50_000)),
        bot: Some(false),
        timestamp: Some(created),
        has_nft_avatar: Some(false),
        category: None,
        default_profile: None,
        default_profile_image: None,
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Photo,
    Video,
    Gif,
}

fn media_tweet(
    rng: &mut ChaCha8Rng,
    id: TweetId,
    ms: u64,
    user: &User,
    previous: Option<TweetId>,
) -> Tweet {
    let seconds = (ms / 1000) as i64;
    let (kind, count) = match rng.random_range(0..100) {
        0..55 => (Kind::Photo, 1),
        55..70 => (Kind::Photo, rng.random_range(2..=4)),
        70..88 => (Kind::Video, 1),
        _ => (Kind::Gif, 1),
    };
    let reply_to = previous.filter(|_| rng.random_bool(0.15));
    let username = user.username.clone().unwrap_or_default();
    let link = format!("https://t.co/{}", short_code(rng, 10));
    let words = rng.random_range(3..16);
    let mut text: Vec<&str> = (0..words).map(|_| pick(rng, WORDS)).collect();
    let mention = reply_to.map(|_| format!("@{username}"));
    if let Some(mention) = &mention {
        text.insert(0, mention);
    }
    let text = format!("{} {link}", text.join(" "));
    let media_path = format!(
        "https://twitter.com/{username}/status/{id}/{}/1",
        if matches!(kind, Kind::Photo) {
            "photo"
        } else {
            "video"
        }
    );
    let offset = text.chars().count() - link.chars().count();
    let media: Vec<MediaEntity> = (0..count)
        .map(|i| media_entity(rng, kind, id, i, &link, &media_path, offset))
        .collect();
    let video_url = match kind {
        Kind::Video => media[0].other.get("video_info").map(video_variants),
        Kind::Photo | Kind::Gif => None,
    };
    Tweet {
        tweet_id: id,
        creation_date: legacy_date(seconds).expect("synthetic dates are in range"),
        text: Some(text),
        media_url: Some(
            media
                .iter()
                .filter_map(|m| m.media_url_https.clone())
                .collect(),
        ),
        video_url,
        user: user.clone(),
        language: Some("en".into()),
        favorite_count: Some(rng.random_range(0..5_000)),
        retweet_count: Some(rng.random_range(0..500)),
        reply_count: Some(rng.random_range(0..200)),
        quote_count: Some(rng.random_range(0..50)),
        retweet: Some(false),
        views: None,
        timestamp: seconds,
        video_view_count: matches!(kind, Kind::Video).then(|| rng.random_range(0..1_000_000)),
        in_reply_to_status_id: reply_to,
        quoted_status_id: None,
        binding_values: None,
        expanded_url: Some(media_path),
        retweet_tweet_id: None,
        extended_entities: Some(ExtendedEntities { media }),
        conversation_id: Some(reply_to.unwrap_or(id)),
        retweet_status: None,
    }
}

fn media_entity(
    rng: &mut ChaCha8Rng,
    kind: Kind,
    tweet: TweetId,
    position: u64,
    link: &str,
    expanded: &str,
    offset: usize,
) -> MediaEntity {
    let media_id = tweet
        .get()
        .saturating_sub(rng.random_range(1..1_000_000) << 22)
        + position;
    let code = short_code(rng, 15);
    let (w, h) = *[(1200u32, 675u32), (1080, 1080), (1080, 1350), (2048, 1536)]
        .get(rng.random_range(0..4))
        .expect("in range");
    let (prefix, type_name, url) = match kind {
        Kind::Photo => (
            "3",
            "photo",
            format!("https://pbs.twimg.com/media/{code}.jpg"),
        ),
        Kind::Video => (
            "7",
            "video",
            format!("https://pbs.twimg.com/ext_tw_video_thumb/{media_id}/pu/img/{code}.jpg"),
        ),
        Kind::Gif => (
            "16",
            "animated_gif",
            format!("https://pbs.twimg.com/tweet_video_thumb/{code}.jpg"),
        ),
    };
    let fit = |max: u32| {
        let scale = f64::from(max) / f64::from(w.max(h));
        let scale = scale.min(1.0);
        json!({"h": (f64::from(h) * scale) as u32, "w": (f64::from(w) * scale) as u32, "resize": "fit"})
    };
    let mut other = Map::new();
    other.insert(
        "display_url".into(),
        json!(format!("pic.twitter.com/{}", &link[13..])),
    );
    other.insert("expanded_url".into(), json!(expanded));
    other.insert("id_str".into(), json!(media_id.to_string()));
    other.insert("indices".into(), json!([offset, offset + link.len()]));
    other.insert("url".into(), json!(link));
    other.insert(
        "ext_media_availability".into(),
        json!({"status": "Available"}),
    );
    other.insert(
        "sizes".into(),
        json!({
            "large": fit(2048), "medium": fit(1200), "small": fit(680),
            "thumb": {"h": 150, "w": 150, "resize": "crop"}
        }),
    );
    other.insert("original_info".into(), json!({"height": h, "width": w}));
    match kind {
        Kind::Photo => {
            if rng.random_bool(0.2) {
                other.insert("ext_alt_text".into(), json!("A synthetic photo"));
            }
        }
        Kind::Video => {
            let base = format!("https://video.twimg.com/ext_tw_video/{media_id}/pu");
            // X lists variants in no particular order; the HLS playlist usually comes first.
            other.insert(
                "video_info".into(),
                json!({
                    "aspect_ratio": [16, 9],
                    "duration_millis": rng.random_range(2_000..140_000),
                    "variants": [
                        {"content_type": "application/x-mpegURL", "url": format!("{base}/pl/{code}.m3u8?tag=12")},
                        {"bitrate": 832000, "content_type": "video/mp4", "url": format!("{base}/vid/640x360/{code}.mp4?tag=12")},
                        {"bitrate": 2176000, "content_type": "video/mp4", "url": format!("{base}/vid/1280x720/{code}.mp4?tag=12")},
                        {"bitrate": 256000, "content_type": "video/mp4", "url": format!("{base}/vid/480x270/{code}.mp4?tag=12")},
                    ]
                }),
            );
        }
        Kind::Gif => {
            other.insert(
                "video_info".into(),
                json!({
                    "aspect_ratio": [4, 3],
                    "variants": [{"bitrate": 0, "content_type": "video/mp4",
                                  "url": format!("https://video.twimg.com/tweet_video/{code}.mp4")}]
                }),
            );
        }
    }
    MediaEntity {
        media_key: Some(format!("{prefix}_{media_id}")),
        kind: type_name.into(),
        media_url_https: Some(url),
        other,
    }
}

/// The contract's `video_url`: MP4 variants by bitrate, highest first, then the others (HLS).
pub fn video_variants(video_info: &Value) -> Vec<VideoVariant> {
    let mut variants: Vec<VideoVariant> = video_info["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect();
    VideoVariant::sort_for_video_url(&mut variants);
    variants
}

#[cfg(test)]
mod tests {
    use super::*;
    use xgate_model::TweetRecord;

    fn config() -> SynthConfig {
        SynthConfig {
            users: 3,
            first_user: 0,
            per_user: 200,
            seed: 7,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_jsonl(config(), &mut a).unwrap();
        write_jsonl(config(), &mut b).unwrap();
        assert_eq!(a, b);
        let mut c = Vec::new();
        write_jsonl(
            SynthConfig {
                seed: 8,
                ..config()
            },
            &mut c,
        )
        .unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn tweets_are_valid_records_with_consistent_ids_and_times() {
        let mut seen = std::collections::HashSet::new();
        let mut kinds = std::collections::BTreeMap::new();
        let mut replies = 0;
        for tweet in tweets(config()) {
            let json = serde_json::to_string(&tweet).unwrap();
            let rec = TweetRecord::from_json(&json).unwrap();
            assert!(rec.has_media);
            assert!(seen.insert(rec.tweet_id), "ids are unique");
            assert!(rec.tweet_id.get() > 1 << 53);
            let ms = (rec.tweet_id.get() >> 22) + TWITTER_EPOCH_MS;
            assert_eq!(
                tweet.timestamp,
                (ms / 1000) as i64,
                "the id's time is the tweet's"
            );
            assert_eq!(legacy_date(tweet.timestamp).unwrap(), tweet.creation_date);
            let media = &tweet.extended_entities.as_ref().unwrap().media;
            assert_eq!(tweet.media_url.as_ref().unwrap().len(), media.len());
            let key = format!("{}x{}", media[0].kind, media.len());
            *kinds.entry(key).or_insert(0) += 1;
            replies += usize::from(tweet.in_reply_to_status_id.is_some());
            match media[0].kind.as_str() {
                "video" => {
                    let variants = tweet.video_url.as_ref().unwrap();
                    assert_eq!(variants[0].bitrate, Some(2_176_000), "highest MP4 first");
                    assert_eq!(
                        variants.last().unwrap().content_type,
                        "application/x-mpegURL"
                    );
                }
                _ => assert!(tweet.video_url.is_none()),
            }
        }
        assert!(replies > 0);
        for kind in ["photox1", "videox1", "animated_gifx1"] {
            assert!(kinds.contains_key(kind), "{kind} in {kinds:?}");
        }
        assert!(
            kinds
                .keys()
                .any(|k| k.starts_with("photox") && k != "photox1")
        );
    }

    #[test]
    fn first_user_shifts_the_users_and_keeps_each_users_tweets() {
        let all: Vec<Tweet> = tweets(config()).collect();
        let later: Vec<Tweet> = tweets(SynthConfig {
            users: 2,
            first_user: 1,
            ..config()
        })
        .collect();
        assert_eq!(later, all[200..]);
    }

    #[test]
    fn users_alternate_small_and_big_ids() {
        assert!(user_id(0).get() < 1 << 53);
        assert!(user_id(1).get() > 1 << 53);
        let ids: Vec<u64> = tweets(config()).map(|t| t.user.user_id.get()).collect();
        assert!(ids.iter().any(|&id| id > 1 << 53));
    }
}

//! The contract's tweet object (contract §3), as typed Rust.
//!
//! The server never round-trips stored tweets through these types: it serves the stored JSON
//! bytes as delivered. These types document the format (they generate the OpenAPI schemas), build
//! synthetic tweets, and let tests check that what is served conforms.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::ids::{TweetId, UserId};

/// One media tweet, in the field order of the original API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!(crate::examples::seed_response()["results"][0]))]
pub struct Tweet {
    /// The tweet id, a string of digits.
    #[schema(value_type = String, example = "1517995317697916928")]
    pub tweet_id: TweetId,
    /// `%a %b %d %H:%M:%S +0000 %Y`, always UTC, e.g. `Sat Apr 23 22:34:21 +0000 2022`.
    pub creation_date: String,
    pub text: Option<String>,
    /// One URL per media item: the photo, or the thumbnail of a video or GIF.
    pub media_url: Option<Vec<String>>,
    /// For a video, its variants, highest-bitrate MP4 first; null for photos and GIFs.
    pub video_url: Option<Vec<VideoVariant>>,
    pub user: User,
    pub language: Option<String>,
    pub favorite_count: Option<i64>,
    pub retweet_count: Option<i64>,
    pub reply_count: Option<i64>,
    pub quote_count: Option<i64>,
    pub retweet: Option<bool>,
    pub views: Option<i64>,
    /// Unix seconds of `creation_date`.
    pub timestamp: i64,
    pub video_view_count: Option<i64>,
    #[schema(value_type = Option<String>)]
    pub in_reply_to_status_id: Option<TweetId>,
    #[schema(value_type = Option<String>)]
    pub quoted_status_id: Option<TweetId>,
    /// Card data (polls, link cards) as X delivers it.
    #[schema(value_type = Option<Object>)]
    pub binding_values: Option<Value>,
    pub expanded_url: Option<String>,
    #[schema(value_type = Option<String>)]
    pub retweet_tweet_id: Option<TweetId>,
    pub extended_entities: Option<ExtendedEntities>,
    #[schema(value_type = Option<String>)]
    pub conversation_id: Option<TweetId>,
    /// The retweeted tweet, in this same format, for a retweet.
    #[schema(value_type = Option<Object>)]
    pub retweet_status: Option<Value>,
}

/// The author of a tweet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub creation_date: Option<String>,
    #[schema(value_type = String, example = "96479162")]
    pub user_id: UserId,
    pub username: Option<String>,
    pub name: Option<String>,
    pub follower_count: Option<i64>,
    pub following_count: Option<i64>,
    pub favourites_count: Option<i64>,
    pub is_private: Option<bool>,
    pub is_verified: Option<bool>,
    pub is_blue_verified: Option<bool>,
    pub location: Option<String>,
    pub profile_pic_url: Option<String>,
    pub profile_banner_url: Option<String>,
    pub description: Option<String>,
    pub external_url: Option<String>,
    pub number_of_tweets: Option<i64>,
    pub bot: Option<bool>,
    pub timestamp: Option<i64>,
    pub has_nft_avatar: Option<bool>,
    pub category: Option<Value>,
    pub default_profile: Option<bool>,
    pub default_profile_image: Option<bool>,
}

/// One playable rendition of a video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VideoVariant {
    /// Bits per second; absent for adaptive (HLS) playlists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u64>,
    pub content_type: String,
    pub url: String,
}

impl VideoVariant {
    /// Puts variants in the contract's order for `video_url`: MP4 by bitrate, highest first, then
    /// the others (HLS playlists).
    pub fn sort_for_video_url(variants: &mut [VideoVariant]) {
        variants.sort_by_key(|v| {
            (
                v.content_type != "video/mp4",
                std::cmp::Reverse(v.bitrate.unwrap_or(0)),
            )
        });
    }
}

/// X's v1.1 `extended_entities`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExtendedEntities {
    pub media: Vec<MediaEntity>,
}

/// An X v1.1 media object, kept as delivered: the fields below are the common ones, and any other
/// field (`features`, `ext_media_availability`, `ext_alt_text`, ...) survives storage unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MediaEntity {
    pub media_key: Option<String>,
    /// `photo`, `video` or `animated_gif`.
    #[serde(rename = "type")]
    pub kind: String,
    pub media_url_https: Option<String>,
    /// Every other field of the media object, as delivered.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_url_order_is_mp4_by_bitrate_then_the_rest() {
        let variant = |bitrate: Option<u64>, content_type: &str| VideoVariant {
            bitrate,
            content_type: content_type.into(),
            url: format!("{content_type}/{bitrate:?}"),
        };
        let mut variants = vec![
            variant(None, "application/x-mpegURL"),
            variant(Some(832_000), "video/mp4"),
            variant(Some(2_176_000), "video/mp4"),
            variant(Some(256_000), "video/mp4"),
        ];
        VideoVariant::sort_for_video_url(&mut variants);
        let order: Vec<Option<u64>> = variants.iter().map(|v| v.bitrate).collect();
        assert_eq!(order, [Some(2_176_000), Some(832_000), Some(256_000), None]);
    }
}

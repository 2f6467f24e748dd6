//! Small tweets in the contract's format, for tests and examples.

use crate::record::TweetRecord;
use crate::tweet::{ExtendedEntities, MediaEntity, Tweet, User};
use crate::{TweetId, UserId};

/// A short tweet by `user`: with one photo when `media`, without any otherwise.
pub fn tweet(tweet_id: u64, user_id: u64, media: bool) -> Tweet {
    let photo = format!("https://pbs.twimg.com/media/{tweet_id}.jpg");
    Tweet {
        tweet_id: TweetId(tweet_id),
        creation_date: "Sat Apr 23 22:34:21 +0000 2022".into(),
        text: Some(format!("tweet {tweet_id}")),
        media_url: media.then(|| vec![photo.clone()]),
        video_url: None,
        user: user(user_id),
        language: Some("en".into()),
        favorite_count: Some(0),
        retweet_count: Some(0),
        reply_count: Some(0),
        quote_count: Some(0),
        retweet: Some(false),
        views: None,
        timestamp: 1650753261,
        video_view_count: None,
        in_reply_to_status_id: None,
        quoted_status_id: None,
        binding_values: None,
        expanded_url: None,
        retweet_tweet_id: None,
        extended_entities: media.then(|| ExtendedEntities {
            media: vec![MediaEntity {
                media_key: Some(format!("3_{tweet_id}")),
                kind: "photo".into(),
                media_url_https: Some(photo),
                other: Default::default(),
            }],
        }),
        conversation_id: Some(TweetId(tweet_id)),
        retweet_status: None,
    }
}

/// A profile for `user_id`.
pub fn user(user_id: u64) -> User {
    User {
        creation_date: Some("Sun Dec 13 03:52:21 +0000 2009".into()),
        user_id: UserId(user_id),
        username: Some(format!("user{user_id}")),
        name: Some(format!("User {user_id}")),
        follower_count: Some(1),
        following_count: Some(1),
        favourites_count: Some(0),
        is_private: None,
        is_verified: Some(false),
        is_blue_verified: Some(false),
        location: None,
        profile_pic_url: None,
        profile_banner_url: None,
        description: None,
        external_url: None,
        number_of_tweets: Some(1),
        bot: Some(false),
        timestamp: Some(1260676341),
        has_nft_avatar: Some(false),
        category: None,
        default_profile: None,
        default_profile_image: None,
    }
}

/// [`tweet`] as a record ready to store.
pub fn record(tweet_id: u64, user_id: u64, media: bool) -> TweetRecord {
    let json = serde_json::to_string(&tweet(tweet_id, user_id, media)).expect("serialisable");
    TweetRecord::from_json(&json).expect("a sample tweet is well formed")
}

//! A tweet checked against the contract's format and ready to store.
//!
//! Checking borrows from the text and skips over every value it does not need, so it costs a
//! quick scan of the text (`outline`) and one pass of the JSON parser; the text itself is what
//! gets stored and served.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny};
use serde_json::value::RawValue;

use crate::ids::{TweetId, UserId};
use crate::outline::outline;

/// A tweet in the contract's format, with the columns storage indexes pulled out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TweetRecord {
    pub tweet_id: TweetId,
    pub user_id: UserId,
    /// At least one photo, video or GIF: the tweet belongs on the media timeline.
    pub has_media: bool,
    /// The tweet object as delivered, one JSON object.
    pub json: String,
    /// Where the author object (`user` of the tweet) lies in `json`; see [`TweetRecord::user_json`].
    pub user_span: Range<usize>,
    /// The author's handle, when the tweet carries one.
    pub username: Option<String>,
}

impl TweetRecord {
    /// The author object as delivered, a slice of the tweet's JSON.
    pub fn user_json(&self) -> &str {
        &self.json[self.user_span.clone()]
    }
}

/// `text` without the whitespace between JSON tokens. Strings are copied as they are.
fn compacted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            out.push(c);
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The position of `part`, a slice borrowed from `whole`, within it.
fn span_of(whole: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// Why a text is not a tweet in the contract's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(String);

impl TweetRecord {
    /// Checks one JSON object in the contract's tweet format and keeps its text.
    ///
    /// Whitespace between tokens is dropped (a pretty-printed tweet is stored compact); everything
    /// else, numbers and escapes included, is kept to the byte.
    pub fn from_json(text: &str) -> Result<Self, RecordError> {
        Self::check(Cow::Borrowed(text.trim()))
    }

    /// [`TweetRecord::from_json`] for a text the caller owns, such as a line just read: a compact
    /// tweet keeps it as its `json`, where a borrowed text is copied.
    pub fn from_json_string(mut text: String) -> Result<Self, RecordError> {
        text.truncate(text.trim_end().len());
        let blank = text.len() - text.trim_start().len();
        text.drain(..blank);
        Self::check(Cow::Owned(text))
    }

    /// Checks `text`, already trimmed, and keeps it as the record's `json` (compacted, if it
    /// has whitespace between tokens).
    fn check(text: Cow<'_, str>) -> Result<Self, RecordError> {
        if !text.starts_with('{') {
            return Err(RecordError("a tweet is a JSON object".into()));
        }
        let mut found = outline(text.as_bytes());
        let json = if found.layout {
            let json = compacted(&text);
            found = outline(json.as_bytes());
            Cow::Owned(json)
        } else {
            text
        };
        let shape: TweetShape<'_> =
            serde_json::from_str(&json).map_err(|e| RecordError(e.to_string()))?;
        let user_span = match found.user {
            Some(span) => span,
            // A key the scan does not see, such as `"\u0075ser"`: the parser finds the value.
            None => {
                let field: UserField<'_> =
                    serde_json::from_str(&json).map_err(|e| RecordError(e.to_string()))?;
                span_of(&json, field.user.get())
            }
        };
        if !json[user_span.clone()].starts_with('{') {
            return Err(RecordError("user: an author is a JSON object".into()));
        }
        let listed_urls = shape.media_url.is_some_and(|urls| urls.0 > 0);
        let entities = shape
            .extended_entities
            .and_then(|e| e.media)
            .is_some_and(|media| media.0 > 0);
        Ok(TweetRecord {
            tweet_id: shape.tweet_id.0,
            user_id: shape.user.user_id.0,
            has_media: listed_urls || entities,
            username: shape.user.username.map(Cow::into_owned),
            json: json.into_owned(),
            user_span,
        })
    }
}

/// The fields every tweet must carry. Those typed `IgnoredAny` must be there but may hold anything
/// (the original API writes `null` freely); the others are checked as far as storage relies on them.
#[derive(Deserialize)]
struct TweetShape<'a> {
    tweet_id: TweetIdText,
    #[serde(rename = "creation_date")]
    _creation_date: IgnoredAny,
    #[serde(rename = "text")]
    _text: IgnoredAny,
    #[serde(deserialize_with = "nullable")]
    media_url: Option<Count<StrItem>>,
    #[serde(rename = "video_url")]
    _video_url: IgnoredAny,
    #[serde(borrow)]
    user: UserShape<'a>,
    #[serde(rename = "timestamp")]
    _timestamp: i64,
    #[serde(deserialize_with = "nullable")]
    extended_entities: Option<Entities>,
}

#[derive(Deserialize)]
struct Entities {
    #[serde(default)]
    media: Option<Count<IgnoredAny>>,
}

#[derive(Deserialize)]
struct UserShape<'a> {
    user_id: UserIdText,
    #[serde(default, borrow)]
    username: Option<Cow<'a, str>>,
}

/// The author object alone, where [`outline`] did not find it.
#[derive(Deserialize)]
struct UserField<'a> {
    #[serde(borrow)]
    user: &'a RawValue,
}

/// A field that must be present, though it may be `null`. (With `deserialize_with`, serde
/// reports a missing field instead of taking it as `None`.)
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

/// The length of an array whose items are checked with `T` and then dropped.
struct Count<T>(usize, std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Count<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Items<T> {
            type Value = Count<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Count<T>, A::Error> {
                let mut n = 0;
                while seq.next_element::<T>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n, std::marker::PhantomData))
            }
        }
        deserializer.deserialize_seq(Items(std::marker::PhantomData))
    }
}

/// An array item that must be a string (`media_url` entries).
struct StrItem;

impl<'de> Deserialize<'de> for StrItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = StrItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<StrItem, E> {
                Ok(StrItem)
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Ids in the stored format are strings of digits only: a JSON number would be rounded by
/// JavaScript clients, so it is rejected at the door rather than served.
macro_rules! strict_id {
    ($name:ident, $id:ident, $what:literal) => {
        struct $name($id);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!($what, " as a string of digits"))
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse::<$id>()
                            .map($name)
                            .map_err(|e| E::custom(format_args!(concat!($what, ": {}"), e)))
                    }
                }
                deserializer.deserialize_str(V)
            }
        }
    };
}

strict_id!(TweetIdText, TweetId, "tweet_id");
strict_id!(UserIdText, UserId, "user.user_id");

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../../fixtures/seed/seed-user-96479162-medias.jsonl");

    fn seed_line() -> serde_json::Value {
        serde_json::from_str(SEED.lines().next().unwrap()).unwrap()
    }

    fn check(value: &serde_json::Value) -> Result<TweetRecord, RecordError> {
        TweetRecord::from_json(&value.to_string())
    }

    #[test]
    fn the_seed_tweets_are_records_kept_verbatim() {
        for line in SEED.lines() {
            let rec = TweetRecord::from_json(line).unwrap();
            assert_eq!(rec.json, line);
            let user: serde_json::Value = serde_json::from_str(rec.user_json()).unwrap();
            assert_eq!(user["username"], "omarmhaimdat");
            assert_eq!(rec.user_id, UserId(96479162));
            assert_eq!(rec.username.as_deref(), Some("omarmhaimdat"));
            assert!(rec.has_media);
        }
    }

    #[test]
    fn every_contract_field_checked_here_is_required() {
        for field in [
            "tweet_id",
            "creation_date",
            "text",
            "media_url",
            "video_url",
            "user",
            "timestamp",
            "extended_entities",
        ] {
            let mut tweet = seed_line();
            tweet.as_object_mut().unwrap().remove(field);
            let err = check(&tweet).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn ids_must_be_strings_of_digits() {
        let mut tweet = seed_line();
        tweet["tweet_id"] = serde_json::json!(1517995317697916928u64);
        assert!(check(&tweet).unwrap_err().to_string().contains("tweet_id"));
        let mut tweet = seed_line();
        tweet["user"]["user_id"] = serde_json::json!("96479162x");
        assert!(
            check(&tweet)
                .unwrap_err()
                .to_string()
                .contains("user.user_id")
        );
    }

    #[test]
    fn media_comes_from_urls_or_entities() {
        let mut tweet = seed_line();
        tweet["media_url"] = serde_json::Value::Null;
        assert!(check(&tweet).unwrap().has_media, "entities alone");
        tweet["extended_entities"] = serde_json::Value::Null;
        assert!(!check(&tweet).unwrap().has_media);
        tweet["media_url"] = serde_json::json!([]);
        assert!(!check(&tweet).unwrap().has_media);
        tweet["media_url"] = serde_json::json!(["https://pbs.twimg.com/media/x.jpg"]);
        assert!(check(&tweet).unwrap().has_media, "urls alone");
        tweet["media_url"] = serde_json::json!([1]);
        assert!(check(&tweet).is_err(), "a URL is a string");
    }

    #[test]
    fn a_pretty_printed_tweet_is_stored_compact_and_otherwise_unchanged() {
        let line = SEED.lines().next().unwrap();
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        // serde_json::Value sorts keys; compare values, and check the text has no layout left.
        let rec = TweetRecord::from_json(&pretty).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&rec.json).unwrap(),
            value
        );
        assert!(!rec.json.contains('\n'));
        assert!(
            rec.json.contains("\"text\":\"Sometimes you know"),
            "spaces in strings stay"
        );
        let odd = r#"{ "tweet_id" : "1", "creation_date":"a \" b", "text" : "x\\" , "media_url": null,
            "video_url": null, "user": {"user_id": "2"}, "timestamp": 1500, "x_score": 1.50e3, "extended_entities": null }"#;
        let rec = TweetRecord::from_json(odd).unwrap();
        assert_eq!(
            rec.json,
            r#"{"tweet_id":"1","creation_date":"a \" b","text":"x\\","media_url":null,"video_url":null,"user":{"user_id":"2"},"timestamp":1500,"x_score":1.50e3,"extended_entities":null}"#
        );
        assert_eq!(rec.user_json(), r#"{"user_id":"2"}"#);
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "user|[ -~\\t\\n\"\\\\é]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("user|[ a-z\"]{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An object with the top-level key `user` (an object) among others, which may hold `user`
    /// keys and values of their own deeper down.
    fn tweet_like() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let user = prop::collection::btree_map("user|[ a-z\"]{0,6}", json_value(), 0..4);
        let others = prop::collection::btree_map("users?|[ a-z\"]{0,6}", json_value(), 0..6);
        (user, others, any::<bool>()).prop_map(|(user, others, user_first)| {
            let user = (
                "user".to_owned(),
                serde_json::Value::Object(user.into_iter().collect()),
            );
            let others = others.into_iter().filter(|(k, _)| k != "user");
            let entries: Vec<_> = if user_first {
                std::iter::once(user).chain(others).collect()
            } else {
                others.chain(std::iter::once(user)).collect()
            };
            serde_json::Value::Object(entries.into_iter().collect())
        })
    }

    proptest::proptest! {
        #[test]
        fn compacting_drops_layout_and_nothing_else(value in json_value()) {
            let compact_text = serde_json::to_string(&value).unwrap();
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            proptest::prop_assert!(!outline(compact_text.as_bytes()).layout);
            proptest::prop_assert_eq!(compacted(&pretty), compact_text);
        }

        #[test]
        fn the_scan_finds_the_author_where_the_parser_does(value in tweet_like()) {
            for text in [
                serde_json::to_string(&value).unwrap(),
                serde_json::to_string_pretty(&value).unwrap(),
            ] {
                let field: UserField<'_> = serde_json::from_str(&text).unwrap();
                let found = outline(text.as_bytes());
                proptest::prop_assert_eq!(found.user, Some(span_of(&text, field.user.get())));
            }
        }

        #[test]
        fn a_text_handed_over_reads_as_the_same_text_borrowed(
            line in 0..SEED.lines().count(),
            before in "[ \t\r\n]{0,3}",
            after in "[ \t\r\n]{0,3}",
            pretty in proptest::prelude::any::<bool>(),
            cut in 0usize..40,
        ) {
            let value: serde_json::Value =
                serde_json::from_str(SEED.lines().nth(line).unwrap()).unwrap();
            let mut body = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            // Cut short, most texts are no tweet at all.
            let mut end = body.len() - cut;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
            let text = format!("{before}{body}{after}");
            let borrowed = TweetRecord::from_json(&text);
            proptest::prop_assert_eq!(cut == 0, borrowed.is_ok());
            proptest::prop_assert_eq!(TweetRecord::from_json_string(text), borrowed);
        }

        #[test]
        fn the_scan_finds_no_author_where_there_is_none(value in json_value()) {
            let text = serde_json::to_string(&serde_json::json!({"x": value})).unwrap();
            proptest::prop_assert_eq!(outline(text.as_bytes()).user, None);
        }
    }

    #[test]
    fn an_author_under_an_escaped_key_is_found_by_the_parser() {
        let line = SEED.lines().next().unwrap();
        let escaped = line.replacen("\"user\":", "\"\\u0075ser\":", 1);
        assert_ne!(escaped, line);
        let rec = TweetRecord::from_json(&escaped).unwrap();
        let user: serde_json::Value = serde_json::from_str(rec.user_json()).unwrap();
        assert_eq!(user["username"], "omarmhaimdat");
        assert_eq!(rec.user_id, UserId(96479162));
    }

    #[test]
    fn an_author_is_an_object() {
        let mut tweet = seed_line();
        tweet["user"] = serde_json::json!(["96479162", "omarmhaimdat"]);
        let err = check(&tweet).unwrap_err().to_string();
        assert!(err.contains("user"), "{err}");
        tweet["user"] = serde_json::json!("96479162");
        assert!(check(&tweet).is_err());
    }

    #[test]
    fn what_is_not_one_json_object_is_refused() {
        for bad in ["", "[]", "null", "{", "{} {}", "\"tweet\""] {
            assert!(TweetRecord::from_json(bad).is_err(), "{bad:?}");
        }
    }
}

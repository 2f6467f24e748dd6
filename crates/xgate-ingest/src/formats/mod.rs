//! Input formats. Each is one module that turns a byte stream into tweets in the contract's
//! format, or into rejections that say where and why.

pub mod jsonl;
pub mod responses;
pub mod x_api_v2;

use std::io::BufRead;

use xgate_model::TweetRecord;

use crate::Rejection;

/// One input's yield: a tweet ready to store, or why a part of the input was refused.
pub type Item = Result<TweetRecord, Rejection>;

/// An input format.
pub trait Format: Send + Sync {
    /// Its name, as `--format` spells it.
    fn name(&self) -> &'static str;

    /// Reads `input` to its end, handing each tweet or rejection to `emit` in input order.
    /// `origin` names the input in rejections (a file name).
    fn read(&self, input: &mut dyn BufRead, origin: &str, emit: &mut dyn FnMut(Item));
}

/// Every format, by name.
pub fn all() -> [&'static dyn Format; 3] {
    [&jsonl::Jsonl, &responses::ApiResponses, &x_api_v2::XApiV2]
}

/// The format called `name`, as `--format` spells it.
pub fn by_name(name: &str) -> Option<&'static dyn Format> {
    all().into_iter().find(|f| f.name() == name)
}

/// The format of an input, from its first bytes: the top-level keys of its first JSON object
/// (`results`: saved API responses; `tweet_id`: tweets, one a line; `data` with `includes` or
/// `meta`, or `data` alone: X API v2 pages). `None` when none shows.
pub fn detect(start: &[u8]) -> Option<&'static dyn Format> {
    let keys = first_object_keys(start);
    if keys.iter().any(|k| k == "results") {
        Some(&responses::ApiResponses)
    } else if keys.iter().any(|k| k == "tweet_id") {
        Some(&jsonl::Jsonl)
    } else if keys.iter().any(|k| k == "data") {
        Some(&x_api_v2::XApiV2)
    } else {
        None
    }
}

/// The keys of the first JSON object in `start`, as far as `start` goes (it may cut the object).
fn first_object_keys(start: &[u8]) -> Vec<String> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

    struct Keys<'a>(&'a mut Vec<String>);
    impl<'de> Visitor<'de> for Keys<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                self.0.push(key);
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let mut keys = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(start);
    // A cut object ends in an error; the keys read before it are what counts.
    let _ = de.deserialize_map(Keys(&mut keys));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_the_first_objects_keys() {
        let name = |text: &str| detect(text.as_bytes()).map(|f| f.name());
        assert_eq!(
            name(r#"{"results": [{"tweet_id": "1"}], "continuation_token": null}"#),
            Some("api-responses")
        );
        assert_eq!(
            name("{\n  \"results\": [\n    {\"tweet_id\": \"1\", \"text\": \"cut her"),
            Some("api-responses")
        );
        assert_eq!(
            name(r#"{"tweet_id": "1", "creation_date": "x"}"#),
            Some("jsonl")
        );
        assert_eq!(
            name("  \n{\"user\": {}, \"tweet_id\": \"7\""),
            Some("jsonl")
        );
        assert_eq!(
            name(r#"{"data": [], "meta": {"result_count": 0}}"#),
            Some("x-api-v2")
        );
        assert_eq!(name(r#"{"errors": []}"#), None);
        assert_eq!(name("window.YTD.tweets.part0 = ["), None);
        assert_eq!(name(""), None);
        assert_eq!(by_name("jsonl").map(|f| f.name()), Some("jsonl"));
        assert!(by_name("xml").is_none());
    }
}

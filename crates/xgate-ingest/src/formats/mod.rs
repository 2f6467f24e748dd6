//! Input formats. Each is one module that turns a byte stream into tweets in the contract's
//! format, or into rejections that say where and why.

pub mod jsonl;
mod legacy;
pub mod responses;
pub mod x_api_v2;
pub mod x_archive;
pub mod x_graphql;

use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

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

    /// Reads the file (or folder) at `path`; by default, the file as one stream.
    fn read_path(&self, path: &Path, origin: &str, emit: &mut dyn FnMut(Item)) {
        match File::open(path) {
            Ok(file) => self.read(&mut BufReader::with_capacity(1 << 16, file), origin, emit),
            Err(e) => emit(Err(Rejection::whole(origin, format!("cannot open: {e}")))),
        }
    }
}

/// Every format, by name.
pub fn all() -> [&'static dyn Format; 5] {
    [
        &jsonl::Jsonl,
        &responses::ApiResponses,
        &x_api_v2::XApiV2,
        &x_archive::XArchive,
        &x_graphql::XGraphql,
    ]
}

/// The format called `name`, as `--format` spells it.
pub fn by_name(name: &str) -> Option<&'static dyn Format> {
    all().into_iter().find(|f| f.name() == name)
}

/// The format of the file or folder at `path`: a folder is an X archive; a file is told by its
/// first bytes ([`detect`]).
pub fn detect_path(path: &Path) -> Result<&'static dyn Format, String> {
    if path.is_dir() {
        return Ok(&x_archive::XArchive);
    }
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut input = BufReader::with_capacity(1 << 16, file);
    let start = input.fill_buf().map_err(|e| format!("read error: {e}"))?;
    detect(start).ok_or_else(unknown)
}

/// Why a format could not be told.
pub(crate) fn unknown() -> String {
    let known: Vec<&str> = all().iter().map(|f| f.name()).collect();
    format!(
        "cannot tell the format from the first bytes; name it with --format ({})",
        known.join(", ")
    )
}

/// The format of an input, from its first bytes: a zip file or a `window.YTD.` script is an X
/// archive; otherwise the top-level keys of the first JSON object tell (`results`: saved API
/// responses; `tweet_id`: tweets, one a line; `data` holding an array: X API v2 pages; `data`
/// holding an object: GraphQL timeline responses). `None` when none shows.
pub fn detect(start: &[u8]) -> Option<&'static dyn Format> {
    let text = start.strip_prefix("\u{feff}".as_bytes()).unwrap_or(start);
    let text = text.trim_ascii_start();
    if start.starts_with(b"PK\x03\x04") || text.starts_with(b"window.YTD.") {
        return Some(&x_archive::XArchive);
    }
    let (keys, data) = first_object_keys(start);
    if keys.iter().any(|k| k == "results") {
        Some(&responses::ApiResponses)
    } else if keys.iter().any(|k| k == "tweet_id") {
        Some(&jsonl::Jsonl)
    } else if data == Some(Shape::Object) {
        Some(&x_graphql::XGraphql)
    } else if keys.iter().any(|k| k == "data") {
        Some(&x_api_v2::XApiV2)
    } else {
        None
    }
}

/// What a value opens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Object,
    Other,
}

/// The keys of the first JSON object in `start`, as far as `start` goes (it may cut the object),
/// and the shape of its `data` member.
fn first_object_keys(start: &[u8]) -> (Vec<String>, Option<Shape>) {
    use serde::de::{DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, Visitor};

    struct Keys<'a> {
        keys: &'a mut Vec<String>,
        data: &'a Cell<Option<Shape>>,
    }
    impl<'de> Visitor<'de> for Keys<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                let data = key == "data";
                self.keys.push(key);
                if data {
                    map.next_value_seed(ShapeOf(self.data))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }

    /// Notes the shape as soon as the value opens: the rest may be cut off.
    struct ShapeOf<'a>(&'a Cell<Option<Shape>>);
    impl<'de> DeserializeSeed<'de> for ShapeOf<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for ShapeOf<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.0.set(Some(Shape::Object));
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            self.0.set(Some(Shape::Other));
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            self.0.set(Some(Shape::Other));
            Ok(())
        }
    }

    let mut keys = Vec::new();
    let data = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(start);
    // A cut object ends in an error; the keys read before it are what counts.
    let _ = de.deserialize_map(Keys {
        keys: &mut keys,
        data: &data,
    });
    (keys, data.get())
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
        assert_eq!(
            name(r#"{"data": {"user": {"result": {"timeline_v2": {"timeline": {"instr"#),
            Some("x-graphql")
        );
        assert_eq!(name("window.YTD.tweets.part0 = ["), Some("x-archive"));
        assert_eq!(
            name("\u{feff}window.YTD.tweet.part0 = ["),
            Some("x-archive")
        );
        assert_eq!(name("PK\x03\x04\x14\0"), Some("x-archive"));
        assert_eq!(name(r#"{"errors": []}"#), None);
        assert_eq!(name("window.foo = ["), None);
        assert_eq!(name(""), None);
        assert_eq!(by_name("jsonl").map(|f| f.name()), Some("jsonl"));
        assert!(by_name("xml").is_none());
    }
}

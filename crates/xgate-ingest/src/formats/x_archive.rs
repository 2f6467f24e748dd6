//! The X account archive ("Download an archive of your data"): a `.zip`, or the folder it unpacks
//! to, whose `data/` holds `window.YTD.<name>.partN = [...]` files: `tweets.js` (older archives:
//! `tweet.js`; large ones add `tweets-part1.js`, ...), `account.js`, `profile.js`, and
//! optionally `note-tweet.js` (long posts) and `verified.js`.
//!
//! Tweets in the archive carry no author: every one is the account's, and the author object is
//! made from `account.js`, `profile.js` and `verified.js` (counts the archive does not have are
//! null). Tweet files are read one element at a time, so memory stays flat whatever their size;
//! the small files are read first. The mapping rules are in `docs/FORMATS.md`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::de::{DeserializeSeed, Deserializer as _, SeqAccess, Visitor};
use serde_json::Value;
use xgate_model::time::legacy_date;
use xgate_model::{TweetRecord, User, UserId};

use super::legacy::{self, Context, bool_of, iso_seconds, str_of};
use super::{Format, Item};
use crate::Rejection;

/// An X account archive, as a `.zip` file or a folder.
pub struct XArchive;

impl Format for XArchive {
    fn name(&self) -> &'static str {
        "x-archive"
    }

    fn read(&self, _input: &mut dyn BufRead, origin: &str, emit: &mut dyn FnMut(Item)) {
        emit(Err(Rejection::whole(
            origin,
            "an X archive is read from its .zip file or its folder",
        )));
    }

    fn read_path(&self, path: &Path, origin: &str, emit: &mut dyn FnMut(Item)) {
        match Source::open(path) {
            Ok(mut source) => read_archive(&mut source, origin, emit),
            Err(reason) => emit(Err(Rejection::whole(origin, reason))),
        }
    }
}

/// What a file of the archive holds, told by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Account,
    Profile,
    Verified,
    NoteTweets,
    /// `tweets.js` (0), `tweets-part1.js` (1), ...
    Tweets(u32),
}

impl Part {
    fn of(entry: &str) -> Option<Part> {
        let file = entry.rsplit(['/', '\\']).next()?;
        let stem = file.strip_suffix(".js")?;
        Some(match stem {
            "account" => Part::Account,
            "profile" => Part::Profile,
            "verified" => Part::Verified,
            "note-tweet" => Part::NoteTweets,
            "tweets" | "tweet" => Part::Tweets(0),
            _ => {
                let n = stem
                    .strip_prefix("tweets-part")
                    .or_else(|| stem.strip_prefix("tweet-part"))?;
                Part::Tweets(n.parse().ok()?)
            }
        })
    }

    fn is_tweets(self) -> bool {
        matches!(self, Part::Tweets(_))
    }
}

/// Where the archive's files are.
enum Source {
    /// An unpacked archive: the `data` folder. `only` names the one tweets file given alone.
    Folder {
        data: PathBuf,
        only: Option<PathBuf>,
    },
    /// A zip file whose directory (at its end) reads.
    Zip(Box<zip::ZipArchive<BufReader<File>>>),
    /// A zip file without a readable directory (a cut download): its files are read one after
    /// another from the front, as far as they go.
    DamagedZip { path: PathBuf, why: String },
}

impl Source {
    fn open(path: &Path) -> Result<Source, String> {
        if path.is_dir() {
            let data = path.join("data");
            let data = if data.is_dir() { data } else { path.to_owned() };
            return Ok(Source::Folder { data, only: None });
        }
        let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut magic = [0u8; 4];
        let zip = file.read_exact(&mut magic).is_ok() && &magic == b"PK\x03\x04";
        if !zip {
            // One `window.YTD.tweets` file: the account's files are expected beside it.
            let data = path.parent().unwrap_or(Path::new(".")).to_owned();
            return Ok(Source::Folder {
                data,
                only: Some(path.to_owned()),
            });
        }
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        match zip::ZipArchive::new(BufReader::new(file)) {
            Ok(archive) => Ok(Source::Zip(Box::new(archive))),
            Err(e) => Ok(Source::DamagedZip {
                path: path.to_owned(),
                why: e.to_string(),
            }),
        }
    }

    /// Calls `each` with every file for which `wanted` holds, in the order of their parts (in
    /// stored order for a damaged zip). `Err` says where the archive itself could not be read.
    fn visit(
        &mut self,
        wanted: impl Fn(Part) -> bool,
        each: &mut dyn FnMut(&str, Part, &mut dyn Read),
    ) -> Result<(), String> {
        match self {
            Source::Folder { data, only } => {
                let mut files: Vec<(Part, PathBuf)> = std::fs::read_dir(&*data)
                    .map_err(|e| format!("cannot list {}: {e}", data.display()))?
                    .filter_map(|entry| {
                        let path = entry.ok()?.path();
                        let part = Part::of(&path.file_name()?.to_string_lossy())?;
                        let lone = only
                            .as_ref()
                            .is_some_and(|o| part.is_tweets() && *o != path);
                        (wanted(part) && !lone).then_some((part, path))
                    })
                    .collect();
                if let Some(only) = only.as_ref().filter(|_| wanted(Part::Tweets(0)))
                    && !files.iter().any(|(_, p)| p == only)
                {
                    files.push((Part::Tweets(0), only.clone()));
                }
                files.sort();
                for (part, path) in files {
                    let name = format!(
                        "data/{}",
                        path.file_name().unwrap_or_default().to_string_lossy()
                    );
                    let mut file =
                        File::open(&path).map_err(|e| format!("{name}: cannot open: {e}"))?;
                    each(&name, part, &mut file);
                }
                Ok(())
            }
            Source::Zip(archive) => {
                let mut files: Vec<(Part, String)> = archive
                    .file_names()
                    .filter_map(|name| {
                        let name = name.ok()?;
                        Some((Part::of(&name)?, name.into_owned()))
                    })
                    .filter(|(part, _)| wanted(*part))
                    .collect();
                files.sort();
                for (part, name) in files {
                    let mut file = archive.by_name(&name).map_err(|e| format!("{name}: {e}"))?;
                    each(&name, part, &mut file);
                }
                Ok(())
            }
            Source::DamagedZip { path, why } => {
                let file = File::open(&*path).map_err(|e| format!("cannot open: {e}"))?;
                let mut input = BufReader::new(file);
                loop {
                    match zip::read::read_zipfile_from_stream(&mut input) {
                        Ok(Some(mut file)) => {
                            let name = file.name().map(|n| n.into_owned()).unwrap_or_default();
                            if let Some(part) = Part::of(&name).filter(|p| wanted(*p)) {
                                each(&name, part, &mut file);
                            }
                        }
                        Ok(None) => return Ok(()),
                        Err(e) => {
                            return Err(format!(
                                "the zip file is damaged ({why}); read as far as it goes, to: {e}"
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// What the small files say.
#[derive(Default)]
struct Owner {
    account: Option<Value>,
    profile: Option<Value>,
    verified: Option<bool>,
    /// Long posts by their creation second.
    notes: HashMap<i64, Vec<String>>,
}

fn read_archive(source: &mut Source, origin: &str, emit: &mut dyn FnMut(Item)) {
    let mut owner = Owner::default();
    let small = source.visit(|p| !p.is_tweets(), &mut |name, part, input| {
        let stopped = each_element(input, |index, element| {
            let field = |key: &str| element.get(key).cloned();
            match part {
                Part::Account if index == 0 => owner.account = field("account"),
                Part::Profile if index == 0 => owner.profile = field("profile"),
                Part::Verified if index == 0 => {
                    owner.verified = element.get("verified").and_then(|v| bool_of(v, "verified"));
                }
                Part::NoteTweets => {
                    let note = element.get("noteTweet").unwrap_or(&element);
                    let at = note
                        .get("createdAt")
                        .and_then(Value::as_str)
                        .map(iso_seconds);
                    let text = note.pointer("/core/text").and_then(Value::as_str);
                    if let (Some(Ok(at)), Some(text)) = (at, text) {
                        owner.notes.entry(at).or_default().push(text.to_owned());
                    }
                }
                _ => {}
            }
        });
        if let Err(stop) = stopped {
            emit(Err(Rejection::whole(&format!("{origin}:{name}"), stop)));
        }
    });
    if let Err(reason) = small {
        emit(Err(Rejection::whole(origin, reason)));
    }
    let user = match owner.user() {
        Ok(user) => user,
        Err(reason) => {
            emit(Err(Rejection::whole(origin, reason)));
            return;
        }
    };
    let tweets = source.visit(Part::is_tweets, &mut |name, _, input| {
        let stopped = each_element(input, |index, element| {
            let tweet = element.get("tweet").unwrap_or(&element);
            let context = Context {
                long_text: owner.long_text(tweet),
                ..Context::default()
            };
            let item = legacy::map_tweet(tweet, user.clone(), context)
                .and_then(|t| serde_json::to_string(&t).map_err(|e| e.to_string()))
                .and_then(|json| TweetRecord::from_json(&json).map_err(|e| e.to_string()));
            emit(item.map_err(|reason| Rejection {
                place: format!("{origin}:{name}[{index}]"),
                reason,
            }));
        });
        if let Err(stop) = stopped {
            emit(Err(Rejection::whole(&format!("{origin}:{name}"), stop)));
        }
    });
    if let Err(reason) = tweets {
        emit(Err(Rejection::whole(origin, reason)));
    }
}

impl Owner {
    /// The author of every tweet of the archive.
    fn user(&self) -> Result<User, String> {
        let account = self
            .account
            .as_ref()
            .ok_or("no data/account.js: the archive's author is unknown")?;
        let user_id: UserId = account
            .get("accountId")
            .and_then(Value::as_str)
            .ok_or("data/account.js has no accountId")?
            .parse()
            .map_err(|e| format!("data/account.js: accountId: {e}"))?;
        let created = account
            .get("createdAt")
            .and_then(Value::as_str)
            .map(iso_seconds)
            .transpose()
            .map_err(|e| format!("data/account.js: {e}"))?;
        let profile = self.profile.as_ref();
        let about = |key: &str| {
            profile
                .and_then(|p| p.get("description"))
                .and_then(|d| str_of(d, key))
                .filter(|s| !s.is_empty())
        };
        let image = |key: &str| {
            profile
                .and_then(|p| str_of(p, key))
                .filter(|s| !s.is_empty())
        };
        Ok(User {
            creation_date: created.and_then(legacy_date),
            user_id,
            username: str_of(account, "username"),
            name: str_of(account, "accountDisplayName"),
            follower_count: None,
            following_count: None,
            favourites_count: None,
            is_private: None,
            is_verified: self.verified,
            is_blue_verified: None,
            location: about("location"),
            profile_pic_url: image("avatarMediaUrl"),
            profile_banner_url: image("headerMediaUrl"),
            description: about("bio"),
            external_url: about("website"),
            number_of_tweets: None,
            bot: None,
            timestamp: created,
            has_nft_avatar: None,
            category: None,
            default_profile: None,
            default_profile_image: None,
        })
    }

    /// The whole text of a long post: a note created in the same second (give or take one)
    /// whose text starts as the tweet's shortened text does.
    fn long_text(&self, tweet: &Value) -> Option<String> {
        if self.notes.is_empty() {
            return None;
        }
        let at = legacy::seconds(tweet.get("created_at")?.as_str()?).ok()?;
        let text = tweet
            .get("full_text")
            .or_else(|| tweet.get("text"))?
            .as_str()?;
        let start = opening(text);
        if start.is_empty() {
            return None;
        }
        (at - 1..=at + 1)
            .filter_map(|second| self.notes.get(&second))
            .flatten()
            .find(|note| note.len() > text.len() && note.starts_with(&start))
            .cloned()
    }
}

/// The first 40 characters of a tweet's own words: without a trailing link or ellipsis, with
/// the HTML escapes of v1.1 text undone.
fn opening(text: &str) -> String {
    let mut text = text.trim_end();
    loop {
        let before = text;
        if let Some(at) = text.rfind(" https://t.co/")
            && !text[at + 1..].contains(char::is_whitespace)
        {
            text = text[..at].trim_end();
        }
        text = text.trim_end_matches('…').trim_end();
        if text == before {
            break;
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    text.chars().take(40).collect()
}

/// Calls `each` with each element of a `window.YTD.<name>.partN = [ ... ]` file in turn, holding
/// one at a time. `Err` says where reading stopped and why (cut or broken JSON).
fn each_element(input: &mut dyn Read, mut each: impl FnMut(usize, Value)) -> Result<(), String> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    skip_assignment(&mut input)?;
    let mut count = 0;
    let mut de = serde_json::Deserializer::from_reader(input);
    de.deserialize_seq(Elements {
        each: &mut each,
        count: &mut count,
    })
    .map_err(|e| {
        format!(
            "reading stopped after {count} element{}: {e}",
            if count == 1 { "" } else { "s" }
        )
    })
}

/// Reads past `window.YTD.<name>.partN =`.
fn skip_assignment(input: &mut impl BufRead) -> Result<(), String> {
    let mut head = Vec::new();
    input
        .take(512)
        .read_until(b'=', &mut head)
        .map_err(|e| format!("read error: {e}"))?;
    let head = String::from_utf8_lossy(&head);
    let head = head.trim_start_matches('\u{feff}').trim_start();
    if head.starts_with("window.YTD.") && head.ends_with('=') {
        Ok(())
    } else {
        Err("not an archive data file (it should start with `window.YTD.<name>.part0 = [`)".into())
    }
}

struct Elements<'a, F> {
    each: &'a mut F,
    count: &'a mut usize,
}

impl<'de, F: FnMut(usize, Value)> Visitor<'de> for Elements<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(element) = seq.next_element_seed(ValueSeed)? {
            (self.each)(*self.count, element);
            *self.count += 1;
        }
        Ok(())
    }
}

/// Any JSON value: an element that is not a tweet is refused on its own, not the whole file.
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(de)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tell_the_parts() {
        assert_eq!(Part::of("data/tweets.js"), Some(Part::Tweets(0)));
        assert_eq!(Part::of("data/tweet.js"), Some(Part::Tweets(0)));
        assert_eq!(
            Part::of("twitter-2024/data/tweets-part2.js"),
            Some(Part::Tweets(2))
        );
        assert_eq!(Part::of("data/account.js"), Some(Part::Account));
        assert_eq!(Part::of("data/note-tweet.js"), Some(Part::NoteTweets));
        assert_eq!(Part::of("data/deleted-tweets.js"), None);
        assert_eq!(Part::of("data/tweets_media/1-a.jpg"), None);
        assert_eq!(Part::of("data/tweets-partx.js"), None);
    }

    #[test]
    fn elements_are_handed_over_one_by_one_and_a_cut_says_where() {
        let text = "window.YTD.tweets.part0 = [ {\"a\": 1}, {\"a\": 2}, {\"a\": ";
        let mut seen = Vec::new();
        let err =
            each_element(&mut text.as_bytes(), |i, v| seen.push((i, v["a"].clone()))).unwrap_err();
        assert_eq!(seen, [(0, Value::from(1)), (1, Value::from(2))]);
        assert!(
            err.starts_with("reading stopped after 2 elements: EOF"),
            "{err}"
        );

        let err = each_element(&mut &b"[{\"a\": 1}]"[..], |_, _| {}).unwrap_err();
        assert!(err.contains("window.YTD"), "{err}");
    }

    #[test]
    fn the_opening_of_a_shortened_post_drops_its_link_and_ellipsis() {
        assert_eq!(
            opening("Long thoughts &amp; more… https://t.co/AbC123"),
            "Long thoughts & more"
        );
        assert_eq!(opening("short"), "short");
    }
}

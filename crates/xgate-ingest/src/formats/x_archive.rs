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
            let Ok(element) = element else {
                return;
            };
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
            let item = element
                .and_then(|element| {
                    let tweet = element.get("tweet").unwrap_or(&element);
                    let context = Context {
                        long_text: owner.long_text(tweet),
                        ..Context::default()
                    };
                    legacy::map_tweet(tweet, user.clone(), context)
                })
                .and_then(|t| serde_json::to_string(&t).map_err(|e| e.to_string()))
                .and_then(|json| TweetRecord::from_json_string(json).map_err(|e| e.to_string()));
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
/// one at a time. An element that is not JSON is handed over as an error of its own; `Err` says
/// where reading stopped and why (a cut file).
fn each_element(
    input: &mut dyn Read,
    mut each: impl FnMut(usize, Result<Value, String>),
) -> Result<(), String> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    skip_assignment(&mut input)?;
    let mut elements = ArrayElements::open(input)?;
    let mut count = 0;
    loop {
        match elements.next() {
            Ok(Some(bytes)) => {
                each(
                    count,
                    serde_json::from_slice(bytes).map_err(|e| e.to_string()),
                );
                count += 1;
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                let s = if count == 1 { "" } else { "s" };
                return Err(format!("reading stopped after {count} element{s}: {e}"));
            }
        }
    }
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

/// The elements of a JSON array read from a stream, one at a time, as their bytes. It follows
/// strings and nesting only to find where each element ends; serde_json parses each element
/// from its slice, which is several times faster than parsing from a reader, and a broken
/// element costs only itself.
struct ArrayElements<R> {
    input: R,
    element: Vec<u8>,
    /// Bytes read so far, for error messages.
    offset: u64,
    ended: bool,
}

impl<R: BufRead> ArrayElements<R> {
    /// Reads up to and including the array's `[`.
    fn open(mut input: R) -> Result<Self, String> {
        let mut offset = 0;
        loop {
            let buf = input.fill_buf().map_err(|e| format!("read error: {e}"))?;
            let Some(&first) = buf.first() else {
                return Err("EOF before the array".into());
            };
            if first.is_ascii_whitespace() {
                input.consume(1);
                offset += 1;
                continue;
            }
            if first != b'[' {
                return Err(format!("expected `[` at byte {offset}"));
            }
            input.consume(1);
            return Ok(ArrayElements {
                input,
                element: Vec::new(),
                offset: offset + 1,
                ended: false,
            });
        }
    }

    /// The next element's bytes; `None` after the closing `]`.
    fn next(&mut self) -> Result<Option<&[u8]>, String> {
        if self.ended {
            return Ok(None);
        }
        // Between elements: white space and one comma.
        let mut comma = false;
        loop {
            let buf = self.fill()?;
            let Some(&b) = buf.first() else {
                return Err(format!(
                    "EOF at byte {}, before the array's `]`",
                    self.offset
                ));
            };
            match b {
                b']' => {
                    self.advance(1);
                    self.ended = true;
                    return Ok(None);
                }
                b',' if !comma => comma = true,
                b if b.is_ascii_whitespace() => {}
                _ => break,
            }
            self.advance(1);
        }
        self.element.clear();
        let start = self.offset;
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            let buf = self
                .input
                .fill_buf()
                .map_err(|e| format!("read error: {e}"))?;
            if buf.is_empty() {
                return Err(format!(
                    "EOF inside the element that starts at byte {start}"
                ));
            }
            let mut end = None;
            let mut i = 0;
            while i < buf.len() {
                let b = buf[i];
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    } else {
                        // Jump to the next quote or backslash.
                        i = memchr::memchr2(b'"', b'\\', &buf[i..]).map_or(buf.len(), |at| i + at);
                        continue;
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' if depth > 0 => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(i + 1);
                                break;
                            }
                        }
                        // A bare number, `true`, `null`, ... ends where a separator starts.
                        b',' | b']' | b'}' if depth == 0 => {
                            end = Some(i);
                            break;
                        }
                        b if depth == 0 && b.is_ascii_whitespace() => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                i += 1;
            }
            let taken = end.unwrap_or(buf.len());
            self.element.extend_from_slice(&buf[..taken]);
            self.advance(taken);
            if end.is_some() {
                return Ok(Some(&self.element));
            }
        }
    }

    fn fill(&mut self) -> Result<&[u8], String> {
        self.input
            .fill_buf()
            .map_err(|e| format!("read error: {e}"))
    }

    fn advance(&mut self, n: usize) {
        self.input.consume(n);
        self.offset += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
        let err = each_element(&mut text.as_bytes(), |i, v| {
            seen.push((i, v.unwrap()["a"].clone()))
        })
        .unwrap_err();
        assert_eq!(seen, [(0, Value::from(1)), (1, Value::from(2))]);
        assert!(
            err.starts_with("reading stopped after 2 elements: EOF"),
            "{err}"
        );

        let err = each_element(&mut &b"[{\"a\": 1}]"[..], |_, _| {}).unwrap_err();
        assert!(err.contains("window.YTD"), "{err}");
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            // Floats that print and parse back exactly.
            (-4000i32..4000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
            // Quotes, backslashes, brackets and commas inside strings must not end an element.
            "[a-z\\\\\"{}\\[\\],: é😀\n]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map("[a-z\"\\\\]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the elements, their layout and where the reads fall, the elements come out
        /// whole and in order; a file cut anywhere gives a prefix of them, then an error.
        #[test]
        fn array_elements_are_split_exactly(
            elements in prop::collection::vec(json(), 0..8),
            pretty in any::<bool>(),
            chunk in 1usize..64,
            cut in any::<prop::sample::Index>(),
        ) {
            let array = Value::from(elements.clone());
            let text = if pretty {
                serde_json::to_string_pretty(&array).unwrap()
            } else {
                serde_json::to_string(&array).unwrap()
            };
            let file = format!("window.YTD.tweets.part0 = {text}");
            let read = |bytes: &[u8]| {
                let mut got = Vec::new();
                let mut input = std::io::BufReader::with_capacity(chunk, bytes);
                let end = each_element(&mut input, |_, v| got.push(v.unwrap()));
                (got, end)
            };
            let (got, end) = read(file.as_bytes());
            prop_assert_eq!(end, Ok(()));
            prop_assert_eq!(&got, &elements);

            let at = cut.index(file.len());
            let (got, end) = read(&file.as_bytes()[..at]);
            prop_assert!(end.is_err());
            prop_assert!(got.len() <= elements.len());
            prop_assert_eq!(&got[..], &elements[..got.len()]);
        }
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

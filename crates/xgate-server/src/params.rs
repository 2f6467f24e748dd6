//! Page requests, parsed at the edge.
//!
//! Each of the four endpoints takes `user_id`, `limit` and (for the continuation endpoints)
//! `continuation_token`, from a JSON body or from the query string. This module turns either into
//! a [`PageRequest`] or into a 422 that lists every problem at once, with pydantic v1's messages,
//! as the FastAPI service it replaces does. Type rules follow pydantic v1's coercions where they
//! are safe: an integer may come as a JSON number or as a string of digits; `null` for `limit`
//! means the default.

use std::borrow::Cow;
use std::fmt;
use std::num::IntErrorKind;

use axum::body::to_bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use http_body_util::LengthLimitError;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use xgate_model::wire::{LocItem, ValidationError};
use xgate_model::{TweetId, UserId};

use crate::AppState;
use crate::error::{ApiError, issue};

/// A validated request for one page of a user's media timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub user: UserId,
    /// Continue after this tweet; `None` for the first page.
    pub after: Option<TweetId>,
    pub limit: usize,
}

/// A page request from a JSON body. `CONTINUATION` says whether a token is required.
pub struct BodyPage<const CONTINUATION: bool>(pub PageRequest);

/// A page request from the query string. `CONTINUATION` says whether a token is required.
pub struct QueryPage<const CONTINUATION: bool>(pub PageRequest);

impl<const CONTINUATION: bool> FromRequest<AppState> for BodyPage<CONTINUATION> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        // The server's body limit is applied here, not by axum's `DefaultBodyLimit` layer, which
        // would cost every request an insertion into its extensions (the data routes go without
        // it; docs/BENCHMARKS.md).
        let body = to_bytes(req.into_body(), state.config().body_limit)
            .await
            .map_err(|e| {
                if over_limit(&e) {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(format!("Failed to buffer the request body: {e}"))
                }
            })?;
        let fields = body_fields(&body).map_err(|e| ApiError::Validation(vec![e]))?;
        validate(fields, "body", CONTINUATION, state).map(BodyPage)
    }
}

/// Whether reading a body failed because it went over the limit.
fn over_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

impl<const CONTINUATION: bool> FromRequestParts<AppState> for QueryPage<CONTINUATION> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        validate(query_fields(query), "query", CONTINUATION, state).map(QueryPage)
    }
}

/// A field's value as it arrived.
enum Raw<'a> {
    Json(&'a RawValue),
    Text(Cow<'a, str>),
}

/// The fields a page request reads; all others are ignored. A repeated field keeps its last value,
/// as Python's `json` module and Starlette's query parser do.
#[derive(Default)]
struct Fields<'a> {
    user_id: Option<Raw<'a>>,
    continuation_token: Option<Raw<'a>>,
    limit: Option<Raw<'a>>,
}

impl<'a> Fields<'a> {
    fn set(&mut self, key: &str, value: Raw<'a>) {
        match key {
            "user_id" => self.user_id = Some(value),
            "continuation_token" => self.continuation_token = Some(value),
            "limit" => self.limit = Some(value),
            _ => {}
        }
    }
}

fn query_fields(query: &str) -> Fields<'_> {
    let mut fields = Fields::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        fields.set(&key, Raw::Text(value));
    }
    fields
}

/// Reads the body as a JSON object. An empty body counts as `{}`, so its problems are reported
/// field by field.
fn body_fields(body: &[u8]) -> Result<Fields<'_>, ValidationError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let (line, column) = line_and_column(body, e.valid_up_to());
        issue::json_decode(e.valid_up_to(), "invalid UTF-8 in body", line, column)
    })?;
    if text.trim().is_empty() {
        return Ok(Fields::default());
    }
    // What nearly every request sends, a well-formed object, is read in one pass. Anything else
    // takes the two below, which tell malformed JSON from JSON that is not an object and word the
    // problem as FastAPI does; a body the one pass reads, they read to the same fields.
    if text.trim_start().starts_with('{') {
        let mut de = serde_json::Deserializer::from_str(text);
        if let Ok(fields) = de.deserialize_map(FieldsVisitor)
            && de.end().is_ok()
        {
            return Ok(fields);
        }
    }
    fields_of_any_json(text)
}

/// [`body_fields`] for any text, in two passes: the whole as JSON, then the object's fields.
fn fields_of_any_json(text: &str) -> Result<Fields<'_>, ValidationError> {
    let value: &RawValue = serde_json::from_str(text).map_err(|e| decode_issue(text, &e))?;
    if !value.get().starts_with('{') {
        return Err(issue::not_a_dict(vec!["body".into()]));
    }
    let mut de = serde_json::Deserializer::from_str(value.get());
    de.deserialize_map(FieldsVisitor)
        .map_err(|e| decode_issue(text, &e))
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            fields.set(&key, Raw::Json(value));
        }
        Ok(fields)
    }
}

fn decode_issue(text: &str, e: &serde_json::Error) -> ValidationError {
    let (line, column) = (e.line(), e.column());
    // serde_json points at the offending byte, or at the last byte read when the text ended early;
    // FastAPI's offset is where the problem starts, which for a cut body is its end.
    let offset = if e.is_eof() {
        text.len()
    } else {
        offset_of(text.as_bytes(), line, column)
    };
    // serde_json appends " at line L column C"; the position is in `loc` and `ctx` already.
    let full = e.to_string();
    let msg = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(msg, _)| msg);
    issue::json_decode(offset, msg, line, column)
}

/// The byte offset of a 1-based line and column (serde_json counts columns in bytes).
fn offset_of(text: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive(|&b| b == b'\n')
        .take(line.saturating_sub(1))
        .map(<[u8]>::len)
        .sum();
    (line_start + column.saturating_sub(1)).min(text.len())
}

fn line_and_column(text: &[u8], offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, offset - line_start + 1)
}

/// An integer field's value, wide enough that out-of-range values are still ordered correctly.
enum Int {
    Null,
    Value(i128),
    Invalid,
}

fn int_of(raw: &Raw<'_>) -> Int {
    match raw {
        Raw::Text(text) => int_of_text(text),
        Raw::Json(value) => {
            let text = value.get();
            match text.as_bytes().first() {
                Some(b'n') => Int::Null,
                Some(b'"') => match serde_json::from_str::<Cow<'_, str>>(text) {
                    Ok(s) => int_of_text(&s),
                    Err(_) => Int::Invalid,
                },
                Some(b'-' | b'0'..=b'9') => int_of_number(text),
                _ => Int::Invalid,
            }
        }
    }
}

/// A JSON number: an integer of any size, or a float with no fractional part (`10.0`).
fn int_of_number(text: &str) -> Int {
    // What nearly every request sends: a few plain digits, read directly (18 digits cannot
    // overflow a u64). The rest as text or as a float, below.
    if (1..=18).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
        let n = text
            .bytes()
            .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'));
        return Int::Value(n.into());
    }
    if !text.contains(['.', 'e', 'E']) {
        return int_of_text(text);
    }
    match text.parse::<f64>() {
        // `as` saturates, which keeps far-out values out of range rather than wrapping them.
        Ok(f) if f.is_finite() && f.fract() == 0.0 => Int::Value(f as i128),
        _ => Int::Invalid,
    }
}

/// An integer written as text: optional surrounding whitespace and sign, then digits (Python's
/// `int()` minus its rarer spellings).
fn int_of_text(text: &str) -> Int {
    let text = text.trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Int::Invalid;
    }
    match text.parse::<i128>() {
        Ok(n) => Int::Value(n),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => Int::Value(i128::MAX),
        Err(e) if *e.kind() == IntErrorKind::NegOverflow => Int::Value(i128::MIN),
        Err(_) => Int::Invalid,
    }
}

fn validate(
    fields: Fields<'_>,
    source: &'static str,
    continuation: bool,
    state: &AppState,
) -> Result<PageRequest, ApiError> {
    let loc = |field: &'static str| vec![LocItem::from(source), LocItem::from(field)];
    let mut problems = Vec::new();

    let user = match fields.user_id.as_ref().map(int_of) {
        None => Err(issue::missing(loc("user_id"))),
        Some(Int::Null) => Err(issue::none_not_allowed(loc("user_id"))),
        Some(Int::Invalid) => Err(issue::not_an_integer(loc("user_id"))),
        Some(Int::Value(n)) if n < 0 => Err(issue::below(loc("user_id"), 0)),
        Some(Int::Value(n)) => u64::try_from(n)
            .map(UserId)
            .map_err(|_| issue::above(loc("user_id"), u64::MAX)),
    };
    let user = user.map_err(|e| problems.push(e)).ok();

    let mut after = None;
    if continuation {
        let token = match &fields.continuation_token {
            None => Err(issue::missing(loc("continuation_token"))),
            Some(Raw::Text(text)) => Ok(Cow::Borrowed(text.as_ref())),
            Some(Raw::Json(value)) => match value.get().as_bytes().first() {
                Some(b'n') => Err(issue::none_not_allowed(loc("continuation_token"))),
                Some(b'"') => serde_json::from_str::<Cow<'_, str>>(value.get())
                    .map_err(|_| issue::not_a_string(loc("continuation_token"))),
                _ => Err(issue::not_a_string(loc("continuation_token"))),
            },
        };
        let checked = token.and_then(|token| {
            state
                .tokens()
                .verify(&token, user)
                .map_err(|_| issue::bad_token(loc("continuation_token")))
        });
        match checked {
            Ok(tweet) => after = Some(tweet),
            Err(e) => problems.push(e),
        }
    }

    let max = state.config().max_limit;
    let limit = match fields.limit.as_ref().map(int_of) {
        None | Some(Int::Null) => Ok(state.config().default_limit),
        Some(Int::Invalid) => Err(issue::not_an_integer(loc("limit"))),
        Some(Int::Value(n)) if n < 1 => Err(issue::below(loc("limit"), 1)),
        Some(Int::Value(n)) if n > i128::from(max) => Err(issue::above(loc("limit"), max)),
        Some(Int::Value(n)) => Ok(u32::try_from(n).expect("within 1..=max")),
    };
    let limit = limit.map_err(|e| problems.push(e)).ok();

    match (user, limit) {
        (Some(user), Some(limit)) if problems.is_empty() => Ok(PageRequest {
            user,
            after,
            limit: limit as usize,
        }),
        _ => Err(ApiError::Validation(problems)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A field's value as the tests compare it: where it came from and its text.
    fn seen(raw: &Option<Raw<'_>>) -> Option<(bool, String)> {
        raw.as_ref().map(|raw| match raw {
            Raw::Json(value) => (true, value.get().to_owned()),
            Raw::Text(text) => (false, text.to_string()),
        })
    }

    type Seen = Result<[Option<(bool, String)>; 3], ValidationError>;

    fn seen_fields(fields: Result<Fields<'_>, ValidationError>) -> Seen {
        fields.map(|f| {
            [
                seen(&f.user_id),
                seen(&f.continuation_token),
                seen(&f.limit),
            ]
        })
    }

    /// Bodies made of the pieces JSON objects and their mistakes are made of.
    fn bodies() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("{"),
            Just("}"),
            Just("["),
            Just("]"),
            Just(":"),
            Just(","),
            Just(" "),
            Just("\n"),
            Just("\"user_id\""),
            Just("\"limit\""),
            Just("\"continuation_token\""),
            Just("\"other\""),
            Just("\"u\\u00e9\\n\""),
            Just("\"\\x\""),
            Just("12"),
            Just("-3"),
            Just("10.0"),
            Just("1e400"),
            Just("null"),
            Just("true"),
            Just("\"12\""),
            Just("\u{a0}"),
            Just("x"),
        ];
        let pieces = prop::collection::vec(piece, 0..24).prop_map(|p| p.concat());
        let field = (
            prop_oneof![
                Just("user_id"),
                Just("limit"),
                Just("continuation_token"),
                Just("extra")
            ],
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                "[a-z0-9 ]{0,8}".prop_map(|s| format!("{s:?}")),
                Just("null".to_owned()),
                Just("{\"a\": [1, {\"b\": null}]}".to_owned()),
            ],
        );
        let object = prop::collection::vec(field, 0..5).prop_map(|fields| {
            let inner: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("\"{k}\": {v}"))
                .collect();
            format!("{{{}}}", inner.join(", "))
        });
        let padded = (object, "[ \t\n]{0,2}", "[ \t\n]{0,2}")
            .prop_map(|(object, before, after)| format!("{before}{object}{after}"));
        prop_oneof![pieces, padded]
    }

    proptest! {
        /// The one pass over an object gives what the two passes give, fields or problem.
        #[test]
        fn one_pass_reads_as_two_do(body in bodies()) {
            let text = body.as_str();
            let two_passes = if text.trim().is_empty() {
                Ok(Fields::default())
            } else {
                fields_of_any_json(text)
            };
            prop_assert_eq!(
                seen_fields(body_fields(text.as_bytes())),
                seen_fields(two_passes)
            );
        }
    }

    /// An [`Int`] as the tests compare it.
    fn int(value: Int) -> Option<Option<i128>> {
        match value {
            Int::Null => Some(None),
            Int::Value(n) => Some(Some(n)),
            Int::Invalid => None,
        }
    }

    proptest! {
        /// Plain digits read as a number give what they give read as text, up to and past the
        /// length the direct reading takes.
        #[test]
        fn digits_read_as_text_does(digits in "[0-9]{1,24}") {
            prop_assert_eq!(int(int_of_number(&digits)), int(int_of_text(&digits)));
        }
    }

    #[test]
    fn a_repeated_field_keeps_its_last_value_either_way() {
        let body = r#"{"limit": 1, "user_id": 5, "limit": "7"}"#;
        let expected: Seen = Ok([
            Some((true, "5".to_owned())),
            None,
            Some((true, "\"7\"".to_owned())),
        ]);
        assert_eq!(seen_fields(body_fields(body.as_bytes())), expected);
        assert_eq!(seen_fields(fields_of_any_json(body)), expected);
    }

    #[test]
    fn offsets_follow_lines() {
        let text = b"{\n  \"a\": x\n}";
        assert_eq!(offset_of(text, 2, 8), 9);
        assert_eq!(line_and_column(text, 9), (2, 8));
        assert_eq!(offset_of(text, 1, 1), 0);
        assert_eq!(offset_of(text, 9, 9), text.len());
    }

    #[test]
    fn integers_in_their_spellings() {
        let value = |raw: Raw<'_>| match int_of(&raw) {
            Int::Value(n) => Some(n),
            Int::Null | Int::Invalid => None,
        };
        let json = |t: &'static str| Raw::Json(serde_json::from_str(t).unwrap());
        let text = |t: &'static str| Raw::Text(Cow::Borrowed(t));
        assert_eq!(value(json("12")), Some(12));
        assert_eq!(value(json("\" 12 \"")), Some(12));
        assert_eq!(value(json("12.0")), Some(12));
        assert_eq!(value(json("-3")), Some(-3));
        assert_eq!(value(json("1e2")), Some(100));
        assert_eq!(value(json("18446744073709551615")), Some(u64::MAX.into()));
        assert_eq!(value(json("1e400")), None);
        assert_eq!(
            value(json("99999999999999999999999999999999999999999")),
            Some(i128::MAX)
        );
        assert_eq!(value(json("12.5")), None);
        assert_eq!(value(json("true")), None);
        assert_eq!(value(json("[1]")), None);
        assert_eq!(value(json("\"12a\"")), None);
        assert_eq!(value(text("+7")), Some(7));
        assert_eq!(value(text("")), None);
        assert_eq!(value(text("--7")), None);
        assert!(matches!(int_of(&json("null")), Int::Null));
    }
}

//! Saved API responses: `{"results": [tweet, ...], "continuation_token": ...}`, as clients of this
//! API (and of the service it is compatible with) write them: one response per file, pretty
//! printed or not, or one per line, or several one after another.

use std::io::BufRead;

use serde::Deserialize;
use serde_json::value::RawValue;
use xgate_model::TweetRecord;

use super::{Format, Item};
use crate::Rejection;

/// A stream of API responses; each tweet of each `results` list is one record.
pub struct ApiResponses;

/// The part of a response that matters; `continuation_token` and anything else are ignored.
#[derive(Deserialize)]
struct Response {
    results: Vec<Box<RawValue>>,
}

impl Format for ApiResponses {
    fn name(&self) -> &'static str {
        "api-responses"
    }

    fn read(&self, input: &mut dyn BufRead, origin: &str, emit: &mut dyn FnMut(Item)) {
        // One response at a time: memory holds a page, never the whole file.
        let values = serde_json::Deserializer::from_reader(input).into_iter::<Box<RawValue>>();
        for (index, value) in values.enumerate() {
            let place = |path: &str| Rejection {
                place: format!("{origin}:response[{index}]{path}"),
                reason: String::new(),
            };
            let value = match value {
                Ok(value) => value,
                Err(e) => {
                    // Cut or broken JSON: what came before is stored; reading stops here.
                    emit(Err(Rejection {
                        reason: format!("not JSON, reading stopped: {e}"),
                        ..place("")
                    }));
                    return;
                }
            };
            let response: Response = match serde_json::from_str(value.get()) {
                Ok(response) => response,
                Err(e) => {
                    emit(Err(Rejection {
                        reason: format!("not an API response: {e}"),
                        ..place("")
                    }));
                    continue;
                }
            };
            for (at, tweet) in response.results.iter().enumerate() {
                emit(TweetRecord::from_json(tweet.get()).map_err(|e| Rejection {
                    reason: e.to_string(),
                    ..place(&format!(".results[{at}]"))
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xgate_model::examples::SEED_RESPONSE_JSON;

    fn read(text: &str) -> Vec<Item> {
        let mut items = Vec::new();
        ApiResponses.read(&mut text.as_bytes(), "r.json", &mut |item| items.push(item));
        items
    }

    #[test]
    fn the_seed_example_response_is_seven_tweets_kept_verbatim() {
        let items = read(SEED_RESPONSE_JSON);
        assert_eq!(items.len(), 7);
        let seed: serde_json::Value = serde_json::from_str(SEED_RESPONSE_JSON).unwrap();
        for (item, expected) in items.iter().zip(seed["results"].as_array().unwrap()) {
            let record = item.as_ref().unwrap();
            let stored: serde_json::Value = serde_json::from_str(&record.json).unwrap();
            assert_eq!(&stored, expected);
        }
    }

    #[test]
    fn responses_one_per_line_or_back_to_back() {
        let compact: serde_json::Value = serde_json::from_str(SEED_RESPONSE_JSON).unwrap();
        let line = compact.to_string();
        assert_eq!(read(&format!("{line}\n{line}\n")).len(), 14);
        assert_eq!(
            read(&format!("{SEED_RESPONSE_JSON}{SEED_RESPONSE_JSON}")).len(),
            14
        );
        assert_eq!(
            read(r#"{"results": [], "continuation_token": null}"#).len(),
            0
        );
    }

    #[test]
    fn a_bad_tweet_is_named_by_its_path_and_a_cut_file_stops_with_what_came_before() {
        let mut value: serde_json::Value = serde_json::from_str(SEED_RESPONSE_JSON).unwrap();
        value["results"][2]["tweet_id"] = serde_json::json!(5);
        let text = format!("{value}\n{}", &SEED_RESPONSE_JSON[..200]);
        let items = read(&text);
        assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 6);
        let places: Vec<&str> = items
            .iter()
            .filter_map(|i| i.as_ref().err())
            .map(|r| r.place.as_str())
            .collect();
        assert_eq!(
            places,
            ["r.json:response[0].results[2]", "r.json:response[1]"]
        );
        let cut = items.last().unwrap().as_ref().unwrap_err();
        assert!(cut.reason.contains("reading stopped"), "{}", cut.reason);
    }

    #[test]
    fn something_else_is_refused() {
        let items = read(r#"{"data": []} [1, 2]"#);
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(|i| i.is_err()));
    }
}

//! JSONL: one tweet in the contract's format per line, as served by the API and written by
//! `xgate gen`.

use std::io::BufRead;

use xgate_model::TweetRecord;

use super::{Format, Item};
use crate::Rejection;

/// One tweet object a line. Blank lines are skipped; a bad line is rejected with its number.
pub struct Jsonl;

impl Format for Jsonl {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn read(&self, input: &mut dyn BufRead, origin: &str, emit: &mut dyn FnMut(Item)) {
        let mut number = 0u64;
        loop {
            // Each line is read into a buffer of its own, which a good line's record keeps as
            // its text, uncopied. Empty, it takes the line's size on its first extension.
            let mut line = Vec::new();
            number += 1;
            match read_line(input, &mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    emit(Err(Rejection::new(
                        origin,
                        number,
                        format!("read error: {e}"),
                    )));
                    return;
                }
            }
            let item = match String::from_utf8(line) {
                Err(e) => Err(format!(
                    "not UTF-8 (byte {})",
                    e.utf8_error().valid_up_to() + 1
                )),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => TweetRecord::from_json_string(text).map_err(|e| e.to_string()),
            };
            emit(item.map_err(|reason| Rejection::new(origin, number, reason)));
        }
    }
}

/// Appends the input up to its next newline (included) to `line`, as `BufRead::read_until`
/// does, with the memchr crate's vectorised search: a tweet is a line of kilobytes, and the
/// standard library's search goes a word at a time.
fn read_line(input: &mut dyn BufRead, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let (end, used) = match memchr::memchr(b'\n', available) {
            Some(newline) => (true, newline + 1),
            None => (available.is_empty(), available.len()),
        };
        line.extend_from_slice(&available[..used]);
        input.consume(used);
        read += used;
        if end {
            return Ok(read);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8]) -> Vec<Item> {
        let mut items = Vec::new();
        Jsonl.read(&mut &text[..], "t.jsonl", &mut |item| items.push(item));
        items
    }

    #[test]
    fn good_lines_pass_and_bad_ones_say_where() {
        let good = serde_json::to_string(&xgate_model::sample::tweet(1, 2, true)).unwrap();
        let text = format!("{good}\n\n{{\"tweet_id\": 1}}\nnot json\n{good}\r\n");
        let mut input = text.into_bytes();
        input.extend_from_slice(b"\xff\n");
        let items = read(&input);
        let places: Vec<String> = items
            .iter()
            .map(|item| match item {
                Ok(rec) => format!("ok {}", rec.tweet_id),
                Err(r) => r.place.clone(),
            })
            .collect();
        assert_eq!(
            places,
            ["ok 1", "t.jsonl:3", "t.jsonl:4", "ok 1", "t.jsonl:6"]
        );
        let Err(missing) = &items[1] else { panic!() };
        assert!(missing.reason.contains("tweet_id"), "{}", missing.reason);
    }

    #[test]
    fn a_last_line_without_newline_counts() {
        let good = serde_json::to_string(&xgate_model::sample::tweet(9, 2, false)).unwrap();
        let items = read(good.as_bytes());
        assert_eq!(items.len(), 1);
        assert!(items[0].is_ok());
    }

    proptest::proptest! {
        #[test]
        fn lines_are_read_as_read_until_reads_them(
            text in proptest::collection::vec(proptest::sample::select(b"ab\n{}".to_vec()), 0..200),
            capacity in 1usize..16,
        ) {
            use std::io::BufReader;
            let (mut ours, mut std_lines) = (Vec::new(), Vec::new());
            let mut input = BufReader::with_capacity(capacity, &text[..]);
            let mut expected = BufReader::with_capacity(capacity, &text[..]);
            loop {
                let (mut line, mut reference) = (Vec::new(), Vec::new());
                let n = read_line(&mut input, &mut line).unwrap();
                let m = expected.read_until(b'\n', &mut reference).unwrap();
                proptest::prop_assert_eq!(n, m);
                if n == 0 {
                    break;
                }
                ours.push(line);
                std_lines.push(reference);
            }
            proptest::prop_assert_eq!(ours, std_lines);
        }
    }
}

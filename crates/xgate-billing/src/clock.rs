//! Wall-clock time as billing counts it: Unix milliseconds, and UTC months for free allowances.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

/// Now, in Unix milliseconds (read on every charged request: straight from the system clock,
/// without a calendar date made and taken apart again).
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        // A clock set before 1970 counts back, as timestamps before the epoch do.
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The current UTC month, `YYYY-MM`.
pub fn month() -> Arc<str> {
    month_at(now_ms())
}

/// The UTC month of `ms` (Unix milliseconds), `YYYY-MM`. Asked on every charged request, so each
/// thread keeps the month of the UTC day it last asked about (a month begins only with a day)
/// instead of formatting a date each time, and hands out a shared copy of it rather than a new
/// string.
fn month_at(ms: i64) -> Arc<str> {
    const DAY_MS: i64 = 86_400_000;
    thread_local! {
        static LAST: RefCell<(i64, Arc<str>)> = RefCell::new((i64::MIN, Arc::from("")));
    }
    let day = ms.div_euclid(DAY_MS);
    LAST.with_borrow_mut(|(last_day, month)| {
        if *last_day != day {
            let at = DateTime::<Utc>::from_timestamp_millis(day * DAY_MS).unwrap_or_default();
            *month = Arc::from(at.format("%Y-%m").to_string());
            *last_day = day;
        }
        Arc::clone(month)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn now_is_the_system_clock_in_milliseconds() {
        let before = Utc::now().timestamp_millis();
        let now = now_ms();
        let after = Utc::now().timestamp_millis();
        assert!((before..=after).contains(&now), "{before} {now} {after}");
    }

    #[test]
    fn the_month_turns_with_the_utc_day_and_back() {
        assert_eq!(&*month_at(at("2026-01-31T23:59:59.999Z")), "2026-01");
        assert_eq!(&*month_at(at("2026-02-01T00:00:00Z")), "2026-02");
        assert_eq!(&*month_at(at("2026-02-01T23:00:00+01:00")), "2026-02");
        assert_eq!(&*month_at(at("2026-02-01T00:30:00+01:00")), "2026-01");
        assert_eq!(&*month_at(at("1969-12-31T23:59:59Z")), "1969-12");
        assert_eq!(&*month_at(at("1970-01-01T00:00:00Z")), "1970-01");
    }
}

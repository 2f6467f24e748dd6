//! Wall-clock time as billing counts it: Unix milliseconds, and UTC months for free allowances.

use std::cell::RefCell;

use chrono::{DateTime, Utc};

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The current UTC month, `YYYY-MM`.
pub fn month() -> String {
    month_at(Utc::now())
}

/// The UTC month of `at`, `YYYY-MM`. Asked on every charged request, so each thread keeps the
/// month of the UTC day it last asked about (a month begins only with a day) instead of
/// formatting a date each time.
fn month_at(at: DateTime<Utc>) -> String {
    thread_local! {
        static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let day = at.timestamp().div_euclid(86_400);
    LAST.with_borrow_mut(|(last_day, month)| {
        if *last_day != day {
            *month = at.format("%Y-%m").to_string();
            *last_day = day;
        }
        month.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn the_month_turns_with_the_utc_day_and_back() {
        assert_eq!(month_at(at("2026-01-31T23:59:59.999Z")), "2026-01");
        assert_eq!(month_at(at("2026-02-01T00:00:00Z")), "2026-02");
        assert_eq!(month_at(at("2026-02-01T23:00:00+01:00")), "2026-02");
        assert_eq!(month_at(at("2026-02-01T00:30:00+01:00")), "2026-01");
        assert_eq!(month_at(at("1969-12-31T23:59:59Z")), "1969-12");
        assert_eq!(month_at(at("1970-01-01T00:00:00Z")), "1970-01");
    }
}

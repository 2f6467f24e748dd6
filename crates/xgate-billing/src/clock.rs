//! Wall-clock time as billing counts it: Unix milliseconds, and UTC months for free allowances.

use chrono::Utc;

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The current UTC month, `YYYY-MM`.
pub fn month() -> String {
    Utc::now().format("%Y-%m").to_string()
}

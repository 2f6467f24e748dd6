//! The tweet format's dates.

use chrono::DateTime;

/// The legacy date of the tweet format, `Sat Apr 23 22:34:21 +0000 2022`, for Unix seconds.
/// `None` outside the range dates can take.
pub fn legacy_date(unix_seconds: i64) -> Option<String> {
    DateTime::from_timestamp(unix_seconds, 0)
        .map(|t| t.format("%a %b %d %H:%M:%S +0000 %Y").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_seed() {
        assert_eq!(
            legacy_date(1650753261).as_deref(),
            Some("Sat Apr 23 22:34:21 +0000 2022")
        );
        assert_eq!(
            legacy_date(1260676341).as_deref(),
            Some("Sun Dec 13 03:52:21 +0000 2009")
        );
    }
}

//! X ids as `u64` newtypes.
//!
//! X ids exceed 2^53, so on the wire they are JSON strings of digits (a JavaScript client would
//! round a JSON number). Inside xgate they are plain `u64`s, exact end to end.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Why a text is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an id is a string of decimal digits")]
    NotDigits,
    #[error("an id is at most 18446744073709551615")]
    TooLarge,
}

/// Parses the canonical text of an id: ASCII digits only, no sign, no spaces, at most `u64::MAX`.
pub fn parse_id_digits(text: &str) -> Result<u64, IdError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdError::NotDigits);
    }
    text.parse::<u64>().map_err(|_| IdError::TooLarge)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        pub struct $name(pub u64);

        impl $name {
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_id_digits(s).map($name)
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                $name(value)
            }
        }

        /// Serialised as a JSON string of digits, as the contract's tweet format has it.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0)
            }
        }

        /// Accepts the canonical string of digits and, leniently, a non-negative JSON integer.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(IdVisitor).map($name)
            }
        }
    };
}

id_type!(
    /// An X user id.
    UserId
);
id_type!(
    /// An X tweet (post) id. Ids are time-ordered: a larger id is a newer tweet.
    TweetId
);

struct IdVisitor;

impl de::Visitor<'_> for IdVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an id as a string of digits")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_id_digits(v).map_err(|e| E::custom(format_args!("{e}, got {v:?}")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_beyond_two_to_the_53_are_exact() {
        let big = "18446744073709551615";
        let id: TweetId = serde_json::from_str(&format!("\"{big}\"")).unwrap();
        assert_eq!(id.get(), u64::MAX);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{big}\""));
        let just_above = (1u64 << 53) + 1;
        let id: UserId = serde_json::from_str(&just_above.to_string()).unwrap();
        assert_eq!(id.get(), just_above);
    }

    #[test]
    fn rejects_what_is_not_an_id() {
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1e3",
            "0x10",
            "18446744073709551616",
        ] {
            assert!(bad.parse::<UserId>().is_err(), "{bad:?} parsed");
        }
        assert!(serde_json::from_str::<TweetId>("-1").is_err());
        assert!(serde_json::from_str::<TweetId>("1.5").is_err());
        assert!(serde_json::from_str::<TweetId>("null").is_err());
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(n in any::<u64>()) {
            prop_assert_eq!(n.to_string().parse::<TweetId>().unwrap(), TweetId(n));
            let json = serde_json::to_string(&UserId(n)).unwrap();
            prop_assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), UserId(n));
        }
    }
}

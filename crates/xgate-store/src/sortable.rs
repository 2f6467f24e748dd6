//! Ids as signed 64-bit integers that sort like the ids.
//!
//! SQL databases have no unsigned 64-bit integer, and X ids use all 64 bits. Flipping the top bit
//! maps `0..=u64::MAX` onto `i64::MIN..=i64::MAX` one to one and in order, so an id column stays a
//! plain integer that indexes, compares and sorts like the id itself.

const TOP_BIT: u64 = 1 << 63;

/// The column value of an id.
pub const fn to_column(id: u64) -> i64 {
    (id ^ TOP_BIT) as i64
}

/// The id of a column value.
pub const fn from_column(value: i64) -> u64 {
    (value as u64) ^ TOP_BIT
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ends_map_to_ends() {
        assert_eq!(to_column(0), i64::MIN);
        assert_eq!(to_column(u64::MAX), i64::MAX);
    }

    proptest! {
        #[test]
        fn round_trips(id in any::<u64>()) {
            prop_assert_eq!(from_column(to_column(id)), id);
        }

        #[test]
        fn keeps_order(a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(a.cmp(&b), to_column(a).cmp(&to_column(b)));
        }
    }
}

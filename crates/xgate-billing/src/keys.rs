//! API keys: `xg_live_` and the base58 of 24 random bytes followed by a 4-byte checksum.
//!
//! 192 random bits make a key unguessable; the checksum lets xgate (and secret scanners) tell a
//! key from a typo or a random string without a lookup. A key is shown once, when made; xgate
//! keeps only its SHA-256 hash and a short prefix for people to recognise it by.

use rand::RngCore;
use sha2::{Digest, Sha256};
use xgate_store::accounts::NewKey;

/// Every key starts with this.
pub const PREFIX: &str = "xg_live_";
const RANDOM_LEN: usize = 24;
const CHECK_LEN: usize = 4;
/// Characters of the key kept for display, after [`PREFIX`].
const SHOWN: usize = 6;

/// Why a presented key was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("not an xgate key")]
    NotAKey,
}

/// A new key: the text to hand over once, and what to store.
pub fn generate(label: Option<String>) -> (String, NewKey) {
    let mut bytes = [0u8; RANDOM_LEN + CHECK_LEN];
    rand::rng().fill_bytes(&mut bytes[..RANDOM_LEN]);
    let check = checksum(&bytes[..RANDOM_LEN]);
    bytes[RANDOM_LEN..].copy_from_slice(&check);
    let key = format!("{PREFIX}{}", bs58::encode(bytes).into_string());
    let stored = NewKey {
        hash: hash(&key),
        prefix: key[..PREFIX.len() + SHOWN].to_owned(),
        label,
    };
    (key, stored)
}

/// The stored hash of a presented key, if it is well formed.
pub fn parse(presented: &str) -> Result<[u8; 32], KeyFormatError> {
    let body = presented
        .strip_prefix(PREFIX)
        .ok_or(KeyFormatError::NotAKey)?;
    // 28 bytes are at most 39 base58 characters; a longer text is refused before decoding.
    if body.len() > 40 {
        return Err(KeyFormatError::NotAKey);
    }
    let bytes = bs58::decode(body)
        .into_vec()
        .map_err(|_| KeyFormatError::NotAKey)?;
    if bytes.len() != RANDOM_LEN + CHECK_LEN
        || checksum(&bytes[..RANDOM_LEN]) != bytes[RANDOM_LEN..]
    {
        return Err(KeyFormatError::NotAKey);
    }
    Ok(hash(presented))
}

/// The SHA-256 of a key's text: what the store keeps.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn checksum(random: &[u8]) -> [u8; CHECK_LEN] {
    let digest = Sha256::digest([b"xgate-key-check:".as_slice(), random].concat());
    digest[..CHECK_LEN].try_into().expect("4 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_new_key_parses_to_its_stored_hash() {
        let (key, stored) = generate(Some("ci".into()));
        assert!(key.starts_with(PREFIX));
        assert!(key.len() >= PREFIX.len() + 32, "at least 128 bits: {key}");
        assert_eq!(parse(&key), Ok(stored.hash));
        assert!(key.starts_with(&stored.prefix));
        assert_eq!(stored.prefix.len(), PREFIX.len() + SHOWN);
        assert_ne!(generate(None).0, key);
    }

    proptest! {
        #[test]
        fn any_changed_character_breaks_the_checksum(at in 8usize..40, with in "[1-9A-HJ-NP-Za-km-z]") {
            let (key, _) = generate(None);
            prop_assume!(at < key.len());
            let mut changed = key.clone().into_bytes();
            prop_assume!(changed[at] != with.as_bytes()[0]);
            changed[at] = with.as_bytes()[0];
            let changed = String::from_utf8(changed).unwrap();
            prop_assert_eq!(parse(&changed), Err(KeyFormatError::NotAKey));
        }

        #[test]
        fn random_text_is_not_a_key(text in ".{0,60}") {
            prop_assert!(parse(&text).is_err());
        }
    }
}

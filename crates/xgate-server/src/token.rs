//! Continuation tokens: signed, opaque positions in a user's media timeline.
//!
//! A token names the last tweet a page returned, never an offset, so the next page is a keyset
//! read that costs the same at any depth, and tweets arriving at the top of the timeline while a
//! client pages cause neither duplicates nor gaps.
//!
//! Layout before encoding (33 bytes, base64url without padding: 44 characters):
//!
//! ```text
//! version (1) | user id (8, big-endian) | last tweet id (8, big-endian) | tag (16)
//! ```
//!
//! The tag is HMAC-SHA256 under the store's token secret, over a domain label and the first 17
//! bytes, truncated to 128 bits. The user id inside binds a token to its user; the version byte
//! leaves room for other kinds of position (an upstream cursor, say) without breaking old tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use xgate_model::{TweetId, UserId};

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"xgate/user-medias/continuation";
const PAYLOAD_LEN: usize = 1 + 8 + 8;
const TAG_LEN: usize = 16;
const TOKEN_LEN: usize = PAYLOAD_LEN + TAG_LEN;
/// Length of a token's text; anything else is rejected before decoding.
const TEXT_LEN: usize = (TOKEN_LEN * 4).div_ceil(3);

/// The length of a fresh token secret, in bytes.
pub const SECRET_LEN: usize = 32;

/// Why a token was refused. Clients see one message for all of them: a token is opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    OtherUser,
}

/// Issues and checks continuation tokens under one secret.
#[derive(Clone)]
pub struct TokenCodec {
    /// Keyed once; each use clones the keyed state instead of re-hashing the key.
    mac: HmacSha256,
}

impl std::fmt::Debug for TokenCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCodec { .. }")
    }
}

impl TokenCodec {
    pub fn new(secret: &[u8]) -> Self {
        let mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
        TokenCodec { mac }
    }

    /// A token for the page of `user`'s timeline that follows tweet `last`.
    pub fn issue(&self, user: UserId, last: TweetId) -> String {
        let mut bytes = [0u8; TOKEN_LEN];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&user.get().to_be_bytes());
        bytes[9..PAYLOAD_LEN].copy_from_slice(&last.get().to_be_bytes());
        let tag = self.tag(&bytes[..PAYLOAD_LEN]).finalize().into_bytes();
        bytes[PAYLOAD_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The tweet a token continues after, if the token is genuine and was issued for `user`.
    /// With `user` unknown (the request's user id was itself invalid), only genuineness is checked.
    pub fn verify(&self, token: &str, user: Option<UserId>) -> Result<TweetId, TokenError> {
        if token.len() != TEXT_LEN {
            return Err(TokenError::Malformed);
        }
        let mut bytes = [0u8; TOKEN_LEN];
        match URL_SAFE_NO_PAD.decode_slice(token, &mut bytes) {
            Ok(TOKEN_LEN) => {}
            _ => return Err(TokenError::Malformed),
        }
        // Re-encoding must give the same text: base64 leaves unused low bits in the last
        // character, and a token is valid in exactly one spelling.
        if bytes[0] != VERSION || URL_SAFE_NO_PAD.encode(bytes) != token {
            return Err(TokenError::Malformed);
        }
        self.tag(&bytes[..PAYLOAD_LEN])
            .verify_truncated_left(&bytes[PAYLOAD_LEN..])
            .map_err(|_| TokenError::BadSignature)?;
        let word = |range: std::ops::Range<usize>| {
            u64::from_be_bytes(bytes[range].try_into().expect("8 bytes"))
        };
        if user.is_some_and(|user| user.get() != word(1..9)) {
            return Err(TokenError::OtherUser);
        }
        Ok(TweetId(word(9..PAYLOAD_LEN)))
    }

    fn tag(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codec() -> TokenCodec {
        TokenCodec::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_token_is_url_safe_and_of_fixed_length() {
        let token = codec().issue(UserId(u64::MAX), TweetId(u64::MAX));
        assert_eq!(token.len(), TEXT_LEN);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn another_secret_does_not_verify() {
        let token = codec().issue(UserId(1), TweetId(2));
        let other = TokenCodec::new(b"another secret");
        assert_eq!(
            other.verify(&token, Some(UserId(1))),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn the_seed_token_of_the_original_service_is_refused() {
        let seed = "DAABCgABFu-OJkw___gKAAIVmAq8iZYgAggAAwAAAAIAAA";
        assert!(codec().verify(seed, Some(UserId(96479162))).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(user in any::<u64>(), last in any::<u64>()) {
            let c = codec();
            let token = c.issue(UserId(user), TweetId(last));
            prop_assert_eq!(c.verify(&token, Some(UserId(user))), Ok(TweetId(last)));
            prop_assert_eq!(c.verify(&token, None), Ok(TweetId(last)));
        }

        #[test]
        fn is_bound_to_its_user(user in any::<u64>(), other in any::<u64>(), last in any::<u64>()) {
            prop_assume!(user != other);
            let c = codec();
            let token = c.issue(UserId(user), TweetId(last));
            prop_assert_eq!(c.verify(&token, Some(UserId(other))), Err(TokenError::OtherUser));
        }

        #[test]
        fn any_changed_character_is_refused(
            user in any::<u64>(),
            last in any::<u64>(),
            at in 0..TEXT_LEN,
            with in proptest::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.".to_vec()
            ),
        ) {
            let c = codec();
            let token = c.issue(UserId(user), TweetId(last));
            let mut bytes = token.clone().into_bytes();
            prop_assume!(bytes[at] != with);
            bytes[at] = with;
            let tampered = String::from_utf8(bytes).unwrap();
            prop_assert!(c.verify(&tampered, Some(UserId(user))).is_err());
        }

        #[test]
        fn truncated_or_extended_tokens_are_refused(user in any::<u64>(), cut in 0..TEXT_LEN) {
            let c = codec();
            let token = c.issue(UserId(user), TweetId(7));
            prop_assert!(c.verify(&token[..cut], Some(UserId(user))).is_err());
            let extended = format!("{token}A");
            prop_assert!(c.verify(&extended, Some(UserId(user))).is_err());
        }

        #[test]
        fn random_text_is_refused(text in ".{0,80}") {
            prop_assert!(codec().verify(&text, None).is_err());
        }
    }
}

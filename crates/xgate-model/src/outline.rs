//! One pass over a tweet's text before the parser runs: whether whitespace stands between tokens
//! anywhere (the text is then stored compacted), and where the value of the top-level `"user"`
//! key lies (the author object, stored as delivered, is then parsed once, with the tweet).
//!
//! The text is read 64 bytes at a time as bit masks, one bit a byte: quotes, backslashes,
//! whitespace and brackets. Which bytes lie inside strings follows from the unescaped quotes by a
//! running XOR, so the bytes of strings, most of a tweet, are never looked at one by one; only
//! brackets and string starts are, and only until the author object has closed. The pass does
//! not validate: on text that is not JSON its answer means nothing, and the parser that runs next
//! refuses such text anyway.

use std::ops::Range;

/// What [`outline`] finds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Outline {
    /// Whitespace between tokens somewhere.
    pub layout: bool,
    /// The bytes of the top-level `"user"` value, when it is an object or an array and its key is
    /// written without escapes.
    pub user: Option<Range<usize>>,
}

/// The bytes of one 64-byte block that matter here; bit `i` stands for byte `i`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Masks {
    quote: u64,
    backslash: u64,
    /// Bytes up to 0x20. Outside strings, valid JSON has only whitespace there.
    space: u64,
    /// `{` and `[`.
    open: u64,
    /// `}` and `]`.
    close: u64,
}

const BLOCK: usize = 64;
/// What the last, short block is filled up with: a byte in none of the masks.
const FILLER: u8 = b'0';

pub(crate) fn outline(bytes: &[u8]) -> Outline {
    let mut out = Outline::default();
    // Carried from one block to the next: whether its first byte is escaped, and whether it
    // starts inside a string (all ones) or not (zero).
    let (mut escape_carry, mut string_carry) = (0u64, 0u64);
    let mut depth = 0usize;
    let mut user_open: Option<usize> = None;
    for (n, chunk) in bytes.chunks(BLOCK).enumerate() {
        let masks = match <&[u8; BLOCK]>::try_from(chunk) {
            Ok(block) => classify(block),
            Err(_) => {
                let mut block = [FILLER; BLOCK];
                block[..chunk.len()].copy_from_slice(chunk);
                classify(&block)
            }
        };
        let quotes = masks.quote & !escapes(masks.backslash, &mut escape_carry);
        // Bit i: byte i is inside a string, its opening quote included and its closing one not.
        let in_string = prefix_xor(quotes) ^ string_carry;
        string_carry = ((in_string as i64) >> 63) as u64;
        if masks.space & !in_string != 0 {
            out.layout = true;
        }
        if out.user.is_some() {
            continue;
        }
        let base = n * BLOCK;
        let mut events = ((masks.open | masks.close) & !in_string) | (quotes & in_string);
        while events != 0 {
            let at = base + events.trailing_zeros() as usize;
            events &= events - 1;
            match bytes[at] {
                b'"' => {
                    if depth == 1
                        && user_open.is_none()
                        && bytes.get(at + 1..at + 6) == Some(b"user\"")
                    {
                        user_open = value_after_key(bytes, at + 6);
                    }
                }
                b'{' | b'[' => depth += 1,
                _ => {
                    depth = depth.saturating_sub(1);
                    if depth == 1
                        && let Some(start) = user_open.take()
                    {
                        out.user = Some(start..at + 1);
                        break;
                    }
                }
            }
        }
    }
    out
}

/// Where the value of a key whose string ends before `at` starts, if it is an object or an array:
/// past the `:` and any layout. `None` when no `:` follows (the string was a value, not a key).
fn value_after_key(bytes: &[u8], at: usize) -> Option<usize> {
    let mut rest = bytes
        .iter()
        .enumerate()
        .skip(at)
        .filter(|(_, b)| !is_space(**b));
    match rest.next() {
        Some((_, b':')) => {}
        _ => return None,
    }
    match rest.next() {
        Some((start, b'{' | b'[')) => Some(start),
        _ => None,
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// Bit i set: the XOR of bits 0 to i of `x`.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The bytes of a block that a backslash escapes. `carry` says whether the block's first byte is
/// escaped by the previous block's last, and is set for the next block.
fn escapes(backslash: u64, carry: &mut u64) -> u64 {
    if backslash == 0 && *carry == 0 {
        return 0;
    }
    let mut escaped = *carry;
    // A backslash that is itself escaped escapes nothing.
    let mut escaping = backslash & !escaped;
    *carry = 0;
    while escaping != 0 {
        let i = escaping.trailing_zeros();
        escaping &= escaping - 1;
        if i == 63 {
            *carry = 1;
        } else {
            let next = 1u64 << (i + 1);
            escaped |= next;
            escaping &= !next;
        }
    }
    escaped
}

/// [`Masks`] with SSE2, which every x86_64 processor has: sixteen bytes a step.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn classify(block: &[u8; BLOCK]) -> Masks {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let mut masks = Masks::default();
    // SAFETY: the target has SSE2 (the `cfg` above), which is all these intrinsics need; each
    // load reads the 16 bytes of one `lane` and has no alignment requirement.
    unsafe {
        let bits = |v: __m128i| _mm_movemask_epi8(v) as u16 as u64;
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let space = _mm_set1_epi8(0x20);
        // `{` and `[` differ only in the bit 0x20, as do `}` and `]`.
        let open = _mm_set1_epi8(b'{' as i8);
        let close = _mm_set1_epi8(b'}' as i8);
        for (i, lane) in block.chunks_exact(16).enumerate() {
            let v = _mm_loadu_si128(lane.as_ptr().cast::<__m128i>());
            let folded = _mm_or_si128(v, space);
            let shift = 16 * i;
            masks.quote |= bits(_mm_cmpeq_epi8(v, quote)) << shift;
            masks.backslash |= bits(_mm_cmpeq_epi8(v, backslash)) << shift;
            // v <= 0x20, unsigned: max(v, 0x20) is 0x20.
            masks.space |= bits(_mm_cmpeq_epi8(_mm_max_epu8(v, space), space)) << shift;
            masks.open |= bits(_mm_cmpeq_epi8(folded, open)) << shift;
            masks.close |= bits(_mm_cmpeq_epi8(folded, close)) << shift;
        }
    }
    masks
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn classify(block: &[u8; BLOCK]) -> Masks {
    classify_bytes(block)
}

/// [`Masks`] a byte at a time: elsewhere than on x86_64, and the reference the SSE2 version is
/// tested against.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn classify_bytes(block: &[u8; BLOCK]) -> Masks {
    let mut masks = Masks::default();
    for (i, &b) in block.iter().enumerate() {
        let bit = 1u64 << i;
        match b {
            b'"' => masks.quote |= bit,
            b'\\' => masks.backslash |= bit,
            b'{' | b'[' => masks.open |= bit,
            b'}' | b']' => masks.close |= bit,
            0..=0x20 => masks.space |= bit,
            _ => {}
        }
    }
    masks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefix_xor_marks_what_lies_between_pairs() {
        assert_eq!(prefix_xor(0b1000_0010), 0b0111_1110);
        assert_eq!(prefix_xor(1 << 63), 1 << 63);
        assert_eq!(prefix_xor(1), u64::MAX);
    }

    #[test]
    fn escapes_follow_runs_of_backslashes_across_blocks() {
        let mut carry = 0;
        // `\\\"` at bytes 0-3: the second backslash and the quote are escaped.
        assert_eq!(escapes(0b0111, &mut carry), 0b1010);
        assert_eq!(carry, 0);
        // A backslash at the last byte escapes the next block's first.
        assert_eq!(escapes(1 << 63, &mut carry), 0);
        assert_eq!(carry, 1);
        // That first byte is a backslash: escaped, so it escapes nothing.
        assert_eq!(escapes(0b01, &mut carry), 0b01);
        assert_eq!(carry, 0);
    }

    #[test]
    fn strings_and_brackets_across_block_edges() {
        // Every offset puts the key, the object and the escaped quote on a different side of a
        // block's edge.
        for pad in 0..150 {
            let filler = "x".repeat(pad);
            let text = format!(
                r#"{{"a":"{filler}\\\"user\":{{","b":[{{"user":1}}],"user":{{"id":"}}","c":[1]}},"z":"{filler} "}}"#
            );
            let start = text.rfind(r#""user":{"#).unwrap() + 7;
            let end = text.rfind(r#"]}"#).unwrap() + 2;
            assert_eq!(
                outline(text.as_bytes()),
                Outline {
                    layout: false,
                    user: Some(start..end)
                },
                "{text}"
            );
            let spaced = text.replacen(r#","z""#, r#", "z""#, 1);
            assert!(outline(spaced.as_bytes()).layout, "{spaced}");
        }
    }

    proptest! {
        #[test]
        fn sse2_and_bytewise_masks_agree(block in prop::array::uniform32(any::<u8>()), more in prop::array::uniform32(prop::sample::select(b"\"\\{}[] \n\t\r\x00\x1f!Z~\x7f\x80\xff".to_vec()))) {
            let mut whole = [0u8; BLOCK];
            whole[..32].copy_from_slice(&block);
            whole[32..].copy_from_slice(&more);
            prop_assert_eq!(classify(&whole), classify_bytes(&whole));
            whole.reverse();
            prop_assert_eq!(classify(&whole), classify_bytes(&whole));
        }
    }
}

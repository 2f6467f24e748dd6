//! Input formats. Each is one module that turns a byte stream into tweets in the contract's
//! format, or into rejections that say where and why.

pub mod jsonl;

use std::io::BufRead;

use xgate_model::TweetRecord;

use crate::Rejection;

/// One input's yield: a tweet ready to store, or why a part of the input was refused.
pub type Item = Result<TweetRecord, Rejection>;

/// An input format.
pub trait Format: Send + Sync {
    /// Its name, as `--format` spells it.
    fn name(&self) -> &'static str;

    /// Reads `input` to its end, handing each tweet or rejection to `emit` in input order.
    /// `origin` names the input in rejections (a file name).
    fn read(&self, input: &mut dyn BufRead, origin: &str, emit: &mut dyn FnMut(Item));
}

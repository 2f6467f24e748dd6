//! The wire model of xgate: ids, the contract's tweet format, and the HTTP API's requests,
//! responses and error bodies.

pub mod examples;
pub mod ids;
mod outline;
pub mod record;
pub mod sample;
pub mod time;
pub mod tweet;
pub mod wire;

pub use ids::{TweetId, UserId};
pub use record::{RecordError, TweetRecord};
pub use tweet::{ExtendedEntities, MediaEntity, Tweet, User, VideoVariant};

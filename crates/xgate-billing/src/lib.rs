//! The business half of xgate: API keys, prices, credits reserved before a request and charged
//! after it, and per-account rate limits. HTTP-free; the server wires it into requests.

pub mod clock;
pub mod keys;
pub mod meter;
pub mod prices;
pub mod rate_limit;

pub use meter::{Meter, Refusal, Reservation};
pub use prices::Prices;
pub use rate_limit::{Decision, RateLimits, Window};

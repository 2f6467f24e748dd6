//! A circuit breaker per upstream: after `failures` failed calls in a row it opens, and calls
//! are not made for `cooldown`; then one trial call is let through (half-open), whose outcome
//! closes the breaker or opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the breaker lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// No calls until the cooldown ends.
    Open,
    /// One trial call is out.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    in_a_row: u32,
    open_until: Option<Instant>,
    trial_out: bool,
}

impl Breaker {
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Breaker {
            failures: failures.max(1),
            cooldown,
            inner: Mutex::new(Inner {
                in_a_row: 0,
                open_until: None,
                trial_out: false,
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a call may be made at `now`; `Err` says how long until one may.
    pub fn allow(&self, now: Instant) -> Result<(), Duration> {
        let mut inner = self.inner();
        match inner.open_until {
            None => Ok(()),
            Some(until) if now < until => Err(until - now),
            Some(_) if inner.trial_out => Err(self.cooldown),
            Some(_) => {
                inner.trial_out = true;
                Ok(())
            }
        }
    }

    /// A call succeeded: the breaker closes.
    pub fn success(&self) {
        let mut inner = self.inner();
        inner.in_a_row = 0;
        inner.open_until = None;
        inner.trial_out = false;
    }

    /// A call failed at `now`: a failed trial, or too many failures in a row, open the breaker.
    pub fn failure(&self, now: Instant) {
        let mut inner = self.inner();
        inner.in_a_row = inner.in_a_row.saturating_add(1);
        if inner.trial_out || inner.in_a_row >= self.failures {
            inner.open_until = Some(now + self.cooldown);
            inner.trial_out = false;
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        let inner = self.inner();
        match inner.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) if inner.trial_out => BreakerState::HalfOpen,
            // The cooldown is over: the next call is the trial.
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_and_closes_after_a_good_trial() {
        let breaker = Breaker::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        for _ in 0..2 {
            breaker.allow(t0).unwrap();
            breaker.failure(t0);
        }
        breaker.success();
        for _ in 0..2 {
            breaker.failure(t0);
        }
        assert_eq!(
            breaker.state(t0),
            BreakerState::Closed,
            "a success resets the count"
        );
        breaker.failure(t0);
        assert_eq!(breaker.state(t0), BreakerState::Open);
        assert_eq!(
            breaker.allow(t0 + Duration::from_secs(10)),
            Err(Duration::from_secs(20))
        );

        let later = t0 + Duration::from_secs(31);
        assert_eq!(breaker.allow(later), Ok(()), "one trial");
        assert!(breaker.allow(later).is_err(), "and only one");
        breaker.failure(later);
        assert_eq!(
            breaker.state(later),
            BreakerState::Open,
            "a failed trial opens it again"
        );

        let much_later = later + Duration::from_secs(31);
        assert_eq!(breaker.allow(much_later), Ok(()));
        breaker.success();
        assert_eq!(breaker.state(much_later), BreakerState::Closed);
        assert_eq!(breaker.allow(much_later), Ok(()));
    }
}

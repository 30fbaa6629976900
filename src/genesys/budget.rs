//! [`RateBudget`]: the client-side request budget shared by every REST call of one
//! [`crate::genesys::GenesysClient`] (and its clones), so that a start-up over 10,000 agents or a
//! reconnect storm never meets an HTTP 429.
//!
//! Genesys Cloud allows `client.credentials.token.rate.per.minute` = **300** requests per token
//! per minute (protocol reference §8). The budget guarantees **at most N requests in any
//! window of 60 s** (N = `GENESYS_RATE_LIMIT`, default 300) while still allowing a burst.
//!
//! # Why the quota is N·5/6 per minute with a burst of N/6
//!
//! The budget is a GCRA (generic cell rate algorithm, the `governor` crate): with an emission
//! interval `T` and a burst `b`, the `k`-th request (from 0) conforms no earlier than
//! `(k − b + 1)·T` after the first. So a window of length `W` holds at most `b + ⌊W/T⌋`
//! requests when both ends are closed, `b + ⌈W/T⌉ − 1` when half-open (a fixed-window server
//! counter). With `b = max(1, ⌊N/6⌋)` and `r = N − b` requests per `W` (`T = W/r`), a closed
//! 60 s window holds at most `b + r = N`, a half-open one `N − 1`. A fresh client can send `b`
//! requests at once (50 with the default), then one every `60 s / r` (every 240 ms with the
//! default, 250 per minute sustained). For `N = 1` the rate is one per window (`r = 1`), which
//! keeps every half-open window at one request.
//!
//! Every attempt counts, retries (after 5xx, 401 or 429) included, because the server counts
//! them; the token endpoint (`POST /oauth/token`) does not (it is on the login host and not
//! under this limit).
//!
//! # Locking and fairness
//!
//! The GCRA state is one atomic word updated by compare-and-swap: no lock exists, so none can
//! be held across the HTTP call. A refused caller sleeps (on the tokio timer) until the
//! earliest instant a request conforms and tries again; callers are not served strictly in
//! arrival order, but the total rate holds whatever the order.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The platform limit per token and minute (protocol reference §8), the default of
/// `GENESYS_RATE_LIMIT`.
pub const GENESYS_REQUESTS_PER_MINUTE: NonZeroU32 = NonZeroU32::new(300).unwrap();

/// At most `limit` requests in any `window` (60 s in production), with a burst of
/// `max(1, limit/6)` (see the module doc for the proof).
///
/// Owned by a client's shared state; callers go through [`RateBudget::acquire`].
#[derive(Debug)]
pub struct RateBudget {
    limiter: DefaultDirectRateLimiter,
    limit: NonZeroU32,
    window: Duration,
    burst: NonZeroU32,
    /// Total time callers spent waiting, in nanoseconds.
    waited_ns: AtomicU64,
    /// Calls to [`RateBudget::acquire`] that had to wait.
    waits: AtomicU64,
}

impl RateBudget {
    /// `limit` requests per minute: the production budget (`GENESYS_RATE_LIMIT`).
    pub fn per_minute(limit: NonZeroU32) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// At most `limit` requests in any `window`; tests use windows of a second or less.
    /// A zero `window` is treated as one nanosecond.
    pub fn new(limit: NonZeroU32, window: Duration) -> Self {
        let window = window.max(Duration::from_nanos(1));
        let burst = NonZeroU32::new((limit.get() / 6).max(1)).unwrap_or(NonZeroU32::MIN);
        let rate = (limit.get() - burst.get()).max(1);
        let period = (window / rate).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("the period is at least 1 ns")
            .allow_burst(burst);
        RateBudget {
            limiter: RateLimiter::direct(quota),
            limit,
            window,
            burst,
            waited_ns: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        }
    }

    /// The guaranteed ceiling: at most this many requests in any [`RateBudget::window`].
    pub fn limit(&self) -> NonZeroU32 {
        self.limit
    }

    /// The window of [`RateBudget::limit`] (60 s in production).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Requests that may go out at once on a fresh budget: `max(1, limit/6)`.
    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// Waits until one more request fits in the budget and takes it. Returns how long this
    /// call waited (zero when the budget had room). Holds no lock while waiting or after.
    pub async fn acquire(&self) -> Duration {
        let mut started: Option<Instant> = None;
        loop {
            match self.limiter.check() {
                Ok(()) => break,
                Err(not_until) => {
                    started.get_or_insert_with(Instant::now);
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    // A zero wait means "conforms now": check again at once.
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        let Some(started) = started else {
            return Duration::ZERO;
        };
        let waited = started.elapsed();
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.waited_ns.fetch_add(
            waited.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        waited
    }

    /// Total time callers have waited for the budget so far (for metrics and benchmarks).
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_ns.load(Ordering::Relaxed))
    }

    /// How many [`RateBudget::acquire`] calls had to wait so far.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_splits_the_limit_into_burst_and_rate() {
        let default = RateBudget::per_minute(GENESYS_REQUESTS_PER_MINUTE);
        assert_eq!(default.burst().get(), 50);
        assert_eq!(default.limit().get(), 300);
        let tiny = RateBudget::new(NonZeroU32::new(3).unwrap(), Duration::from_secs(1));
        assert_eq!(tiny.burst().get(), 1);
        let one = RateBudget::new(NonZeroU32::MIN, Duration::from_secs(1));
        assert_eq!(one.burst().get(), 1);
    }

    #[tokio::test]
    async fn the_burst_goes_out_at_once_then_callers_wait() {
        let budget = RateBudget::new(NonZeroU32::new(12).unwrap(), Duration::from_secs(60));
        for _ in 0..2 {
            assert_eq!(budget.acquire().await, Duration::ZERO);
        }
        assert_eq!(budget.waits(), 0);
        // The third request must wait one emission interval (60 s / 10): don't wait it out.
        let third = tokio::time::timeout(Duration::from_millis(50), budget.acquire()).await;
        assert!(third.is_err(), "a third request fit into a burst of 2");
    }
}

//! Retry timing shared by the Genesys client and the Slack webhook: capped exponential backoff
//! with full jitter for server errors and network failures, and the waits that a rate-limited
//! (HTTP 429) answer asks for.
//!
//! Sources: Genesys `shared/genesys-cloud-protocol.md` §8 (order of the 429 fallbacks:
//! `Retry-After`, then `[N]` in the ErrorBody message, then `inin-ratelimit-reset`, then backoff)
//! and Slack `shared/alerting.md` §1 and §4.10 (429 + `Retry-After` in seconds; 5xx and timeouts
//! get exponential backoff with full jitter).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// How often and how long to retry.
///
/// `Default` suits production; tests build one with millisecond delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts for server errors (5xx), timeouts and connection errors, counting the
    /// first one (default 5). `1` means no retry.
    pub max_attempts: u32,
    /// Ceiling of the first backoff; doubles on every retry (default 500 ms).
    pub base_delay: Duration,
    /// Cap of one backoff delay (default 30 s).
    pub max_delay: Duration,
    /// Retries after HTTP 429 before giving up, independent of `max_attempts` (default 10).
    pub max_rate_limit_retries: u32,
    /// Longest rate-limit wait we accept; a server asking for more ends the call with a
    /// rate-limited error instead of sleeping (default 5 minutes).
    pub max_rate_limit_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_rate_limit_retries: 10,
            max_rate_limit_wait: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Short delays for tests: 3 attempts, 10 ms base, 50 ms cap, 5 rate-limit retries of at
    /// most 10 s each.
    pub fn fast() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_rate_limit_retries: 5,
            max_rate_limit_wait: Duration::from_secs(10),
        }
    }

    /// The ceiling of the delay before retry number `retry` (0 for the first retry):
    /// `min(max_delay, base_delay * 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// A full-jitter backoff: uniformly random in `[0, ceiling(retry)]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }
}

/// The `Retry-After` header as a wait: either delta-seconds (`"5"`, the form Slack and most
/// APIs send) or an HTTP date (RFC 7231; a date in the past gives zero). `None` when absent or
/// unreadable.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = DateTime::parse_from_rfc2822(raw).ok()?.with_timezone(&Utc);
    Some((at - Utc::now()).to_std().unwrap_or_default())
}

/// The Genesys `inin-ratelimit-reset` header (seconds until the rate-limit window resets;
/// protocol reference §8) as a wait.
pub fn ratelimit_reset(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get("inin-ratelimit-reset")?.to_str().ok()?.trim();
    let secs = raw.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The `N` of the Genesys 429 message `"Rate limit exceeded the maximum. Retry the request in
/// [N] seconds"` (protocol reference §8) as a wait: the first bracketed number in `message`.
pub fn bracketed_seconds(message: &str) -> Option<Duration> {
    let start = message.find('[')?;
    let rest = &message[start + 1..];
    let end = rest.find(']')?;
    let secs = rest[..end].trim().parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn ceiling_doubles_and_caps() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
        assert_eq!(p.ceiling(1), Duration::from_millis(200));
        assert_eq!(p.ceiling(3), Duration::from_millis(800));
        assert_eq!(p.ceiling(4), Duration::from_millis(1000));
        assert_eq!(p.ceiling(200), Duration::from_millis(1000));
        for retry in 0..10 {
            assert!(p.backoff(retry) <= p.ceiling(retry));
        }
    }

    #[test]
    fn rate_limit_hints() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        h.insert("inin-ratelimit-reset", HeaderValue::from_static("7"));
        assert_eq!(ratelimit_reset(&h), Some(Duration::from_secs(7)));
        assert_eq!(
            bracketed_seconds("Rate limit exceeded the maximum. Retry the request in [2] seconds"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(bracketed_seconds("Rate limit exceeded"), None);
        assert_eq!(bracketed_seconds("in [%s] seconds"), None);
    }
}

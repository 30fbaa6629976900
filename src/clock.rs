//! Genesys time: the local clock corrected by the offset of the Genesys Cloud server clock
//! (protocol reference §10: "measure the server clock offset once, apply it exactly once").
//!
//! Time in state comes from Genesys's own timestamps (`modifiedDate`, `startTime`). Comparing
//! them with the local clock would turn any skew of the host into wrong durations, idle
//! alerts firing early or late, or "future" timestamps. So:
//!
//! - [`measure_offset`] reads `GET /api/v2/date` (the quickest of three answers) and returns
//!   *Genesys minus local*;
//! - [`Clock::set_offset`] stores it, and [`Clock::now`] is the local UTC time plus that offset,
//!   i.e. "now" on the Genesys clock;
//! - callers compare Genesys timestamps with [`Clock::now`] and **never shift stored
//!   timestamps** (they are already Genesys time): the offset is applied exactly once, at the
//!   comparison, never to the data as well.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use tracing::info;

use crate::genesys::{GenesysClient, GenesysError};

/// A cheap, cloneable handle on the Genesys clock: clones share one offset.
///
/// The offset (Genesys minus local, in milliseconds) lives in an `Arc<AtomicI64>`, so reading
/// the clock takes no lock, and a new measurement (after a reconnect, say) is seen by every
/// holder at once.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// A clock with a zero offset (Genesys time = local time until measured).
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock with a known offset (Genesys minus local).
    pub fn with_offset(offset: TimeDelta) -> Self {
        let clock = Self::new();
        clock.set_offset(offset);
        clock
    }

    /// The current instant on the Genesys clock: local UTC now plus [`Clock::offset`],
    /// millisecond precision.
    pub fn now(&self) -> DateTime<Utc> {
        self.at(Utc::now())
    }

    /// A local UTC instant already read (a frame's receipt, say) on the Genesys clock: plus
    /// [`Clock::offset`], millisecond precision. `clock.at(Utc::now())` is [`Clock::now`].
    pub fn at(&self, local: DateTime<Utc>) -> DateTime<Utc> {
        let at = local.checked_add_signed(self.offset()).unwrap_or(local);
        crate::domain::truncate_to_millis(at)
    }

    /// Genesys minus local (positive when the Genesys clock is ahead), milliseconds.
    pub fn offset(&self) -> TimeDelta {
        TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Replaces the offset (Genesys minus local), truncated to milliseconds; seen by every
    /// clone. Replaces, never adds: setting the same measurement twice is harmless.
    pub fn set_offset(&self, offset: TimeDelta) {
        self.offset_ms
            .store(offset.num_milliseconds(), Ordering::Relaxed);
    }
}

/// How many `GET /api/v2/date` requests one offset measurement makes ([`measure_offset`]).
pub const OFFSET_SAMPLES: usize = 3;

/// Measures the Genesys server clock offset (Genesys minus local, milliseconds) with
/// `GET /api/v2/date` → `{"currentDate": "<RFC 3339>"}` (protocol reference §10).
///
/// The server's reading is compared with the **midpoint** of the request that got it (local
/// send time plus half the round trip of that one HTTP attempt; the token request, rate-budget
/// waits and retries are excluded), assuming symmetric network delays: the error is at most
/// half the round trip plus the server's millisecond rounding. [`OFFSET_SAMPLES`] requests are
/// made and the one with the shortest round trip is kept (as NTP does), so one answer delayed
/// on a busy host or network does not skew every deadline. The result is meant to be stored
/// with [`Clock::set_offset`], once; it must not also be added to stored timestamps.
///
/// Errors: the first failed request's error (each request is retried by the client first).
pub async fn measure_offset(client: &GenesysClient) -> Result<TimeDelta, GenesysError> {
    let mut best: Option<(DateTime<Utc>, DateTime<Utc>, std::time::Duration)> = None;
    for _ in 0..OFFSET_SAMPLES {
        let sample = client.server_date_timed().await?;
        if best.is_none_or(|b| sample.2 < b.2) {
            best = Some(sample);
        }
    }
    let (server, sent, round_trip) = best.expect("OFFSET_SAMPLES is not zero");
    let half = TimeDelta::from_std(round_trip / 2).unwrap_or(TimeDelta::zero());
    let offset = server - (sent + half);
    let offset = TimeDelta::milliseconds(offset.num_milliseconds());
    info!(
        offset_ms = offset.num_milliseconds(),
        round_trip_ms = round_trip.as_millis() as u64,
        "measured the Genesys Cloud clock offset"
    );
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;
    use crate::domain::format_timestamp;
    use crate::genesys::test_server::{Reply, TestServer, test_client, token_reply};

    #[test]
    fn clones_share_the_offset_and_now_is_shifted() {
        let clock = Clock::new();
        let other = clock.clone();
        assert_eq!(other.offset(), TimeDelta::zero());
        clock.set_offset(TimeDelta::milliseconds(-90_500));
        assert_eq!(other.offset(), TimeDelta::milliseconds(-90_500));
        let before = Utc::now();
        let genesys_now = other.now();
        let after = Utc::now();
        let shift = TimeDelta::milliseconds(-90_500);
        assert!(genesys_now >= crate::domain::truncate_to_millis(before + shift));
        assert!(genesys_now <= after + shift);
        clock.set_offset(TimeDelta::milliseconds(-90_500));
        assert_eq!(other.offset(), shift, "setting twice does not add up");
        assert_eq!(
            Clock::with_offset(TimeDelta::seconds(3)).offset(),
            TimeDelta::seconds(3)
        );
        // Sub-millisecond parts are dropped.
        clock.set_offset(TimeDelta::microseconds(1_999));
        assert_eq!(clock.offset(), TimeDelta::milliseconds(1));
    }

    /// A server whose clock is `skew` ahead of ours and whose answer takes `delay` on the way
    /// back. It stamps the date as of the middle of a symmetric round trip (`delay/2` after it
    /// got the request), so the right estimate is `skew`: using the send time instead would be
    /// off by `+delay/2`, using the receive time by `-delay/2`.
    async fn skewed_server(skew: TimeDelta, delay: Duration) -> TestServer {
        TestServer::start(move |r| {
            if let Some(reply) = token_reply(r) {
                return reply;
            }
            assert_eq!(r.path, "/api/v2/date");
            let half = TimeDelta::from_std(delay / 2).unwrap();
            let stamp = Utc::now() + skew + half;
            Reply::json(200, json!({"currentDate": format_timestamp(stamp)})).delay(delay)
        })
        .await
    }

    #[tokio::test]
    async fn the_offset_is_measured_against_the_midpoint_of_the_request() {
        let delay = Duration::from_millis(600);
        for skew in [TimeDelta::seconds(90), TimeDelta::milliseconds(-45_250)] {
            let server = skewed_server(skew, delay).await;
            let client = test_client(&server);
            let started = Instant::now();
            let offset = measure_offset(&client).await.unwrap();
            let elapsed = started.elapsed();
            let error = (offset - skew).num_milliseconds().abs();
            // The midpoint makes the error small; the naive readings would be 300 ms off. The
            // slack covers scheduling delays on a loaded machine, not the method.
            assert!(
                error < 150,
                "skew {skew}: measured {offset} (error {error} ms)"
            );
            assert!(
                elapsed >= delay,
                "the answer came back before the server's delay"
            );
            let clock = Clock::new();
            clock.set_offset(offset);
            let lag = (clock.now() - (Utc::now() + skew)).num_milliseconds().abs();
            assert!(lag < 200, "clock.now() is Genesys time: {lag} ms off");
        }
    }

    #[tokio::test]
    async fn an_answer_held_up_on_its_way_back_is_outvoted_by_a_quick_one() {
        // The first answer is stamped at once and then held up for a second (a busy host):
        // alone it would put the midpoint 500 ms late and the offset 500 ms low.
        let skew = TimeDelta::seconds(-20);
        let dates = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = dates.clone();
        let server = TestServer::start(move |r| {
            if let Some(reply) = token_reply(r) {
                return reply;
            }
            let reply = Reply::json(
                200,
                json!({"currentDate": format_timestamp(Utc::now() + skew)}),
            );
            match seen.fetch_add(1, Ordering::SeqCst) {
                0 => reply.delay(Duration::from_secs(1)),
                _ => reply,
            }
        })
        .await;
        let offset = measure_offset(&test_client(&server)).await.unwrap();
        let error = (offset - skew).num_milliseconds().abs();
        assert!(error < 250, "measured {offset} for a skew of {skew}");
        assert_eq!(dates.load(Ordering::SeqCst), OFFSET_SAMPLES);
    }

    #[tokio::test]
    async fn the_token_request_is_not_part_of_the_round_trip() {
        // A slow token endpoint (1 s) before a fast date: a round trip counting the token
        // request would put the midpoint 500 ms late and the offset 500 ms low.
        let skew = TimeDelta::seconds(30);
        let server = TestServer::start(move |r| match token_reply(r) {
            Some(reply) => reply.delay(Duration::from_secs(1)),
            None => Reply::json(
                200,
                json!({"currentDate": format_timestamp(Utc::now() + skew)}),
            ),
        })
        .await;
        let offset = measure_offset(&test_client(&server)).await.unwrap();
        let error = (offset - skew).num_milliseconds().abs();
        assert!(error < 250, "measured {offset} for a skew of {skew}");
    }
}

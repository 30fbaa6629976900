//! Chaos mode: faults fired at random (seeded) or on a fixed schedule, so a client is tested
//! against the failure modes of reference §3, §8 and §9 in combination.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One kind of fault chaos mode can fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChaosFault {
    /// Every socket's TCP connection is dropped without a close frame (the client sees 1006,
    /// §9.2). Channels and subscriptions stay.
    DropSockets,
    /// `v2.system.socket_closing` to every socket; still-open ones are closed after
    /// [`super::SimConfig::socket_closing_grace`] (§3).
    SocketClosing,
    /// Every issued token answers 401 from now on (§9.4).
    RevokeTokens,
    /// The next 1–3 `/api/` requests answer 429 with `Retry-After: 1` and `[1]` in the
    /// message (§8).
    RateLimit,
    /// The next 1–2 `/api/` requests answer 500, 502, 503 or 504 (§8).
    ServerError,
    /// One socket (chosen at random) holds its outgoing frames for 100–1,500 ms, then sends
    /// them in order.
    DelayDeliveries,
    /// One socket sends each of its next 1–5 event frames twice (§9.3).
    DuplicateDeliveries,
    /// One socket swaps 1–3 pairs of adjacent event frames (a held frame is released after
    /// 500 ms if no next frame comes). Genesys promises no order across topics; within one
    /// user this makes timestamps arrive out of order.
    ReorderDeliveries,
    /// One channel (chosen at random) expires early: `HEAD` → 404, socket closed with a close
    /// frame (§3).
    ExpireChannel,
    /// One connected channel gets `v2.system.no_longer_subscribed.<id>`, then its socket is
    /// closed and the channel dropped (semantics UNVERIFIED, §3).
    NoLongerSubscribed,
}

impl ChaosFault {
    /// Every kind, in declaration order.
    pub const ALL: [ChaosFault; 10] = [
        ChaosFault::DropSockets,
        ChaosFault::SocketClosing,
        ChaosFault::RevokeTokens,
        ChaosFault::RateLimit,
        ChaosFault::ServerError,
        ChaosFault::DelayDeliveries,
        ChaosFault::DuplicateDeliveries,
        ChaosFault::ReorderDeliveries,
        ChaosFault::ExpireChannel,
        ChaosFault::NoLongerSubscribed,
    ];
}

/// Random chaos: a fault every `mean_interval` on average (uniformly 0.5–1.5× it, wall
/// clock), its kind drawn uniformly from `kinds`, all from an RNG seeded with `seed` (the
/// same seed gives the same sequence of kinds and intervals; which socket is hit also depends
/// on what is connected at that moment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosConfig {
    /// Seed of the chaos RNG.
    pub seed: u64,
    /// Mean wall-clock time between faults (must not be zero).
    pub mean_interval: Duration,
    /// Enabled kinds (must not be empty). Default: all of [`ChaosFault::ALL`].
    pub kinds: BTreeSet<ChaosFault>,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            seed: 1,
            mean_interval: Duration::from_secs(5),
            kinds: ChaosFault::ALL.into_iter().collect(),
        }
    }
}

//! An embedded Genesys Cloud simulator: the login host, the REST API host and the streaming
//! host on one loopback address, speaking the shapes of `shared/genesys-cloud-protocol.md` over
//! real HTTP and WebSocket. The demo runs against it, and the tests script it.
//!
//! # Layout
//! - [`Simulator`] and [`SimConfig`] (this file): start, inspect, script, inject faults.
//! - `core`: the one task that owns all state; everything else talks to it by message.
//! - `world`: users, queues, presence definitions, and the autopilot that plays agents' shifts.
//! - `http`: the poem routes (`/oauth/token`, `/api/v2/...`, `/channels/{id}`).
//! - `ws`: socket tasks and the notification frames.
//! - `faults`: injected HTTP failures and `ErrorBody`s.
//! - `truth`: the ground truth of every generated transition ([`Simulator::ground_truth`],
//!   [`idle_episodes`]).
//! - `analytics`: `POST /api/v2/analytics/users/details/query`, built from the ground truth.
//! - `chaos`: random (seeded) or scheduled faults ([`Simulator::start_chaos`]).
//! - `shift`: the compressed shift with unambiguous idle episodes ([`Simulator::run_shift`]).
//! - `firehose`: back-pressured bulk transitions for benchmarks ([`Simulator::firehose`]).
//!
//! # Served paths (all on [`Simulator::base_url`])
//! - `POST /oauth/token`: client credentials with HTTP Basic; 401 `invalid_client` otherwise.
//! - `GET /api/v2/date`; `POST|GET /api/v2/notifications/channels`;
//!   `HEAD /api/v2/notifications/channels/{id}`;
//!   `GET|PUT|POST|DELETE /api/v2/notifications/channels/{id}/subscriptions`;
//!   `GET /api/v2/users?state=&divisionId=…` (`divisionId` is a simulator extension: the
//!   SDKs' `getUsers` has no such parameter); `GET /api/v2/users/{id}/routingstatus`;
//!   `GET /api/v2/users/{id}/presences/purecloud`;
//!   `GET /api/v2/users/presences/purecloud/bulk?id=a,b` (at most 50 ids);
//!   `GET /api/v2/presence/definitions`;
//!   `POST /api/v2/analytics/users/details/query` (built from the ground truth; 400 for a
//!   malformed or too long interval, an unknown dimension or `pageSize` > 100; short pages
//!   and an approximate `totalHits` as the real API, reference §7);
//!   `GET /api/v2/presencedefinitions`;
//!   `GET /api/v2/routing/queues/{id}/members?pageSize=&pageNumber=&expand=routingStatus`
//!   (at most 100 a page, no `total`/`pageCount`, `nextUri` absent on the last page). Every `/api/` path needs a bearer token it issued.
//! - `GET /channels/{id}`: the channel's WebSocket (no token needed: the URI is the capability).
//!
//! # Invariants
//! - No lock guards the state: the core task owns it, handlers and sockets send it jobs.
//! - Timestamps are always the simulated clock's now (real UTC + [`SimConfig::clock_skew`]) or
//!   the explicit instant a test gives; `speed` only compresses how long the autopilot holds
//!   each state.
//! - Every presence and routing change goes through the core's `emit_all`, which records it in
//!   the ground truth ([`Simulator::ground_truth`]) before sending it.

#![warn(missing_docs)]

mod analytics;
mod chaos;
mod core;
mod faults;
mod firehose;
mod http;
mod shift;
mod truth;
mod world;
mod ws;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::core::CoreHandle;
use self::world::{Change, resolve_presence};
use crate::domain::normalize_routing_status;

pub use self::analytics::{
    DEFAULT_USER_DETAILS_PAGE_SIZE, MAX_INTERVAL_FILTERED, MAX_INTERVAL_UNFILTERED,
    MAX_USER_DETAILS_PAGE_SIZE,
};
pub use self::chaos::{ChaosConfig, ChaosFault};
pub use self::core::{MAX_CHANNELS, MAX_TOPICS_PER_CHANNEL};
pub use self::faults::FaultSpec;
pub use self::firehose::{FirehoseHandle, FirehoseReport};
pub use self::http::{
    DEFAULT_QUEUE_MEMBERS_PAGE_SIZE, DEFAULT_USERS_PAGE_SIZE, MAX_QUEUE_MEMBERS_PAGE_SIZE,
    MAX_USERS_PAGE_SIZE,
};
pub use self::shift::{ShiftConfig, ShiftHandle, ShiftSummary};
pub use self::truth::{GroundTruthTransition, IdleEpisode, TransitionKind, idle_episodes};
pub use self::world::{
    AVAILABLE_ID, COACHING_ID, ESCAPE_TEST_NAME, HOME_DIVISION_ID, LUNCH_ID, OFFLINE_ID,
    ON_QUEUE_ID,
};

/// How the simulator behaves. Every field has a default ([`SimConfig::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Number of synthetic agents created at start (default 50). Ids are GUID-like, lowercase and
    /// deterministic for a `seed`; names are `Agent 0001`, … except the second agent, named
    /// [`ESCAPE_TEST_NAME`] (`Pat & Sam <QA>`).
    pub agents: usize,
    /// Autopilot time compression: a simulated holding time of `t` lasts `t / speed` of wall
    /// clock (default 1.0). Timestamps are always real wall-clock instants. "Idler" agents
    /// (every fifth, starting with the second, [`ESCAPE_TEST_NAME`]) start IDLE and hold it for
    /// 150–330 s of wall clock whatever the speed, and often do so again later, so a 2-minute
    /// idle alert fires within the first minutes of a demo (and shows the escaping name).
    pub speed: f64,
    /// Interval between `{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}`
    /// frames on every socket (default 30 s).
    pub heartbeat_interval: Duration,
    /// Whether agents move by themselves (default `true`). Off: every agent starts ON_QUEUE and
    /// IDLE at start time and nothing changes unless a test scripts it.
    pub autopilot: bool,
    /// Seed of the RNG behind agent ids and the autopilot (default 42).
    pub seed: u64,
    /// The OAuth client id accepted by `POST /oauth/token` (default `sim-client-id`).
    pub client_id: String,
    /// The OAuth client secret accepted by `POST /oauth/token` (default `sim-client-secret`).
    pub client_secret: String,
    /// Lifetime of issued tokens, reported as `expires_in` in whole seconds and enforced
    /// (default 86,399 s).
    pub token_lifetime: Duration,
    /// "Best effort" expands: when `n > 0`, every n-th user (1-based position in the org) comes
    /// back from `GET /api/v2/users` without `presence` and `routingStatus` even when expanded,
    /// so the client must fetch them one by one (default 0: always expanded).
    pub omit_expand_every: usize,
    /// When `true`, `GET /api/v2/presence/definitions` answers 404 so the client falls back to
    /// the legacy `GET /api/v2/presencedefinitions` (default `false`).
    pub presence_definitions_404: bool,
    /// After `v2.system.socket_closing`, sockets still open after this long are closed by the
    /// server (default 60 s, as Genesys).
    pub socket_closing_grace: Duration,
    /// Number of routing queues (default 3). Queue ids are GUID-like, lowercase and
    /// deterministic for a `seed` (listed by [`Simulator::queue_ids`]); agent `i` (creation
    /// order, users added later included) is a member of queue `i % queues`. 0: no queues.
    pub queues: usize,
    /// Offset of the simulated clock from real UTC (default zero). Every timestamp the
    /// simulator generates (event `modifiedDate`/`startTime`, snapshot values, channel
    /// `expires`, analytics records, `GET /api/v2/date` `currentDate`) is real UTC plus this,
    /// so a positive skew makes Genesys look ahead of the client's clock (reference §10: the
    /// client measures the offset once with `GET /api/v2/date`).
    pub clock_skew: chrono::TimeDelta,
    /// Analytics lag of `POST /api/v2/analytics/users/details/query` (default 0): records that
    /// began less than this long ago (simulated clock) are not visible yet, and the record
    /// before such a hidden one still looks open. The real lag is UNVERIFIED (reference §7).
    pub analytics_latency: Duration,
    /// Lifetime of a notification channel (default 24 h, reference §3). `expires` = creation
    /// (simulated clock) + this; when it passes, the channel is dropped (`HEAD` → 404) and its
    /// socket closed with a close frame. Resubscribing does not move `expires` (whether it
    /// does in Genesys is UNVERIFIED).
    pub channel_ttl: Duration,
    /// Most channels per OAuth client (default [`MAX_CHANNELS`], 20, reference §3). Creating
    /// one more evicts the oldest channel without a connected socket, else the oldest; a
    /// connected victim first gets `v2.system.no_longer_subscribed.<id>` (reason
    /// `another_channel_subscribed`; semantics UNVERIFIED), then a close frame.
    pub max_channels: usize,
    /// Division ids handed out round-robin: agent `i` (creation order, users added later
    /// included) is in `division_ids[i % len]` (default empty: everyone in
    /// [`HOME_DIVISION_ID`]). Shown as `division.id` by `GET /api/v2/users`, which filters on
    /// the repeatable `divisionId` query parameter.
    pub division_ids: Vec<String>,
    /// Requests allowed per bearer token in fixed 60-s windows (each window starts at the
    /// token's first request after the previous one ended), `/api/` paths only (default
    /// `None`: unlimited; Genesys's org default is 300, reference §8). Over the limit: 429
    /// `ErrorBody` (code `too.many.requests.retry.after`, message `Rate limit exceeded the
    /// maximum. Retry the request in [N] seconds`) with `Retry-After: N` (whether Genesys
    /// sends it is UNVERIFIED). Every `/api/` answer then carries `inin-ratelimit-count`,
    /// `inin-ratelimit-allowed` and `inin-ratelimit-reset` (N, seconds until the window
    /// resets, at least 1).
    pub rate_limit_per_minute: Option<u32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            agents: 50,
            speed: 1.0,
            heartbeat_interval: Duration::from_secs(30),
            autopilot: true,
            seed: 42,
            client_id: "sim-client-id".into(),
            client_secret: "sim-client-secret".into(),
            token_lifetime: Duration::from_secs(86_399),
            omit_expand_every: 0,
            presence_definitions_404: false,
            socket_closing_grace: Duration::from_secs(60),
            queues: 3,
            clock_skew: chrono::TimeDelta::zero(),
            analytics_latency: Duration::ZERO,
            channel_ttl: Duration::from_secs(24 * 3600),
            max_channels: MAX_CHANNELS,
            division_ids: Vec::new(),
            rate_limit_per_minute: None,
        }
    }
}

impl SimConfig {
    /// Checks the values [`Simulator::start`] cannot honour.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.speed.is_finite() && self.speed > 0.0,
            "simulator speed must be a positive number, not {}",
            self.speed
        );
        anyhow::ensure!(
            !self.heartbeat_interval.is_zero(),
            "simulator heartbeat interval must not be zero"
        );
        anyhow::ensure!(
            !self.token_lifetime.is_zero(),
            "simulator token lifetime must not be zero"
        );
        anyhow::ensure!(
            !self.channel_ttl.is_zero(),
            "simulator channel lifetime must not be zero"
        );
        anyhow::ensure!(
            self.max_channels > 0,
            "simulator channel limit must be at least 1"
        );
        anyhow::ensure!(
            !self.client_id.is_empty(),
            "simulator client id must not be empty"
        );
        Ok(())
    }
}

/// The current state of one simulated user, as the simulator knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSnapshot {
    /// Lowercase GUID-like id.
    pub id: String,
    /// Display name (`Agent 0001`).
    pub name: String,
    /// Presence definition id (a system one, or an org one such as [`LUNCH_ID`]).
    pub presence_definition_id: String,
    /// System presence in the notification spelling (`ON_QUEUE`).
    pub system_presence: String,
    /// `en_US` label of the presence definition (`On Queue`, `Lunch`).
    pub presence_label: String,
    /// When the presence was set (`modifiedDate`).
    pub presence_modified: DateTime<Utc>,
    /// `OFF_QUEUE`, `IDLE`, `INTERACTING`, `NOT_RESPONDING` or `COMMUNICATING`.
    pub routing_status: String,
    /// When the routing status began (`startTime`).
    pub routing_start: DateTime<Utc>,
    /// Active contact-center calls (what `conversationsummary` reports).
    pub active_conversations: u32,
}

/// One notification channel as the simulator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    /// `streaming-0-…`.
    pub id: String,
    /// Topics subscribed (a combined topic counts once).
    pub topics: usize,
    /// Sockets connected now (0 or 1: one socket per channel).
    pub connected_sockets: usize,
    /// Sockets accepted on this channel since it was created.
    pub socket_connects: u64,
    /// `expires` as served (simulated clock, UTC): creation + [`SimConfig::channel_ttl`].
    pub expires: DateTime<Utc>,
    /// `None` while live; how it ended otherwise (only in [`Simulator::channel_history`]).
    pub ended: Option<ChannelEnd>,
}

/// How a channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelEnd {
    /// [`Simulator::delete_channel`] (there is no documented REST DELETE of a channel).
    Deleted,
    /// Evicted by the creation of a channel over [`SimConfig::max_channels`].
    Evicted,
    /// Its [`SimConfig::channel_ttl`] ran out (or chaos expired it early).
    Expired,
    /// Dropped by [`Simulator::send_no_longer_subscribed`] (or chaos).
    NoLongerSubscribed,
}

/// A running simulator. Dropping it stops the server and closes every socket; prefer
/// [`Simulator::shutdown`] to wait for that.
pub struct Simulator {
    core: CoreHandle,
    addr: SocketAddr,
    client_id: String,
    client_secret: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Binds `listen` (port 0 picks a free port) and starts serving.
    ///
    /// Refuses a configuration it cannot honour (speed not a positive number, zero heartbeat
    /// interval or token lifetime, empty client id).
    pub async fn start(listen: SocketAddr, cfg: SimConfig) -> anyhow::Result<Simulator> {
        cfg.validate()?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot bind the simulator to {listen}"))?;
        let addr = reachable(listener.local_addr()?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let client_id = cfg.client_id.clone();
        let client_secret = cfg.client_secret.clone();
        let (core, core_task) = self::core::spawn(cfg, format!("ws://{addr}"), shutdown_rx.clone());
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener)?;
        let app = http::routes(core.clone());
        let mut stop = shutdown_rx;
        let server_task = tokio::spawn(async move {
            let signal = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            if let Err(err) = poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(app, signal, Some(Duration::from_secs(2)))
                .await
            {
                tracing::warn!(cause = %err, "simulator server failed");
            }
        });
        tracing::info!(%addr, "Genesys Cloud simulator listening");
        Ok(Simulator {
            core,
            addr,
            client_id,
            client_secret,
            shutdown,
            tasks: vec![core_task, server_task],
        })
    }

    /// `http://127.0.0.1:PORT`: the login host and the API host (append `/oauth/token`,
    /// `/api/v2/...`). `connectUri`s point to `ws://127.0.0.1:PORT/channels/<id>`. When bound to
    /// an unspecified address (`0.0.0.0`, `::`), the URLs use the loopback address instead.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address (loopback in place of an unspecified one), as used in the URLs.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The accepted OAuth client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The accepted OAuth client secret.
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// Stops the server, closes every socket with a close frame and waits for the tasks.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Inspect
    // -----------------------------------------------------------------------------------------

    /// Ids of every user, in creation order (the order of `GET /api/v2/users`).
    pub async fn agent_ids(&self) -> anyhow::Result<Vec<String>> {
        self.core
            .call(|c| c.world.agents.iter().map(|a| a.id.clone()).collect())
            .await
    }

    /// Current state of one user (`None` if unknown; ids compare case-insensitively).
    pub async fn user(&self, id: &str) -> anyhow::Result<Option<UserSnapshot>> {
        let id = id.to_string();
        self.core
            .call(move |c| {
                let i = c.world.index_of(&id)?;
                let a = &c.world.agents[i];
                Some(UserSnapshot {
                    id: a.id.clone(),
                    name: a.name.clone(),
                    presence_definition_id: a.presence_id.clone(),
                    system_presence: a.presence_system.clone(),
                    presence_label: world::presence_def_by_id(&a.presence_id)
                        .map_or_else(String::new, |d| d.label.to_string()),
                    presence_modified: a.presence_modified,
                    routing_status: a.routing.clone(),
                    routing_start: a.routing_start,
                    active_conversations: a.active_conversations,
                })
            })
            .await
    }

    /// Ids of every routing queue, in order (queue `k` holds agents `k`, `k + queues`, …
    /// unless [`Simulator::set_queue_members`] changed it).
    pub async fn queue_ids(&self) -> anyhow::Result<Vec<String>> {
        self.core
            .call(|c| c.queues.iter().map(|q| q.id.clone()).collect())
            .await
    }

    /// Member user ids of a queue, in listing order (`None` if the queue is unknown; ids
    /// compare case-insensitively).
    pub async fn queue_members(&self, queue_id: &str) -> anyhow::Result<Option<Vec<String>>> {
        let queue_id = queue_id.to_string();
        self.core
            .call(move |c| {
                c.queue_index(&queue_id)
                    .map(|q| c.queues[q].members.clone())
            })
            .await
    }

    /// `POST /oauth/token` requests received, whatever their outcome.
    pub async fn token_requests(&self) -> anyhow::Result<u64> {
        self.core.call(|c| c.token_requests).await
    }

    /// The bearer tokens issued and not revoked (tests check that none is ever logged).
    pub async fn issued_tokens(&self) -> anyhow::Result<Vec<String>> {
        self.core.call(|c| c.live_tokens()).await
    }

    /// Every live channel, oldest first (`ended` is `None`).
    pub async fn channels(&self) -> anyhow::Result<Vec<ChannelInfo>> {
        self.core
            .call(|c| {
                c.channels
                    .iter()
                    .map(|ch| c.channel_info(ch, None))
                    .collect()
            })
            .await
    }

    /// Every channel that ended (in ending order, with how), then every live one.
    pub async fn channel_history(&self) -> anyhow::Result<Vec<ChannelInfo>> {
        self.core
            .call(|c| {
                let mut all = c.ended_channels.clone();
                all.extend(c.channels.iter().map(|ch| c.channel_info(ch, None)));
                all
            })
            .await
    }

    /// Sends `v2.system.no_longer_subscribed.<id>` (reason `another_channel_subscribed`) to
    /// every connected socket, then closes each with a close frame and drops its channel
    /// (`HEAD` → 404). Channels without a socket stay. What Genesys does after this notice is
    /// UNVERIFIED (reference §3).
    pub async fn send_no_longer_subscribed(&self) -> anyhow::Result<()> {
        self.core.call(|c| c.send_no_longer_subscribed()).await
    }

    /// Requests received (including faulted and refused ones) whose method equals `method`
    /// (case-insensitive; `*` for any) and whose path starts with `path_prefix` (no query).
    /// WebSocket connects count as `GET /channels/<id>`.
    pub async fn request_count(&self, method: &str, path_prefix: &str) -> anyhow::Result<u64> {
        let (method, prefix) = (method.to_string(), path_prefix.to_string());
        self.core
            .call(move |c| c.request_count(&method, &prefix))
            .await
    }

    /// The simulated clock now: real UTC plus the skew ([`SimConfig::clock_skew`],
    /// [`Simulator::set_clock_skew`]).
    pub async fn now(&self) -> anyhow::Result<DateTime<Utc>> {
        self.core.call(|c| c.now()).await
    }

    /// Changes the skew of the simulated clock at run time (real UTC + `skew`). Timestamps
    /// generated earlier keep their values; a negative skew can make later timestamps earlier
    /// than earlier ones, as a real clock step would (scripted changes still get strictly
    /// increasing timestamps per user).
    pub async fn set_clock_skew(&self, skew: chrono::TimeDelta) -> anyhow::Result<()> {
        self.core.call(move |c| c.clock_skew = skew).await
    }

    /// Changes [`SimConfig::analytics_latency`] at run time.
    pub async fn set_analytics_latency(&self, latency: Duration) -> anyhow::Result<()> {
        self.core
            .call(move |c| c.cfg.analytics_latency = latency)
            .await
    }

    /// Every presence and routing transition generated so far, in generation order: first the
    /// initial state of every user (`initial: true`, two entries per user), then each change
    /// with its Genesys timestamp (simulated clock, UTC, ms) and whether it reached a socket.
    /// Injected events ([`Simulator::inject_routing_event`]) are not transitions and are not
    /// listed; `conversationsummary` changes are not listed either.
    pub async fn ground_truth(&self) -> anyhow::Result<Vec<GroundTruthTransition>> {
        self.core.call(|c| c.truth.clone()).await
    }

    /// Frames dropped because a socket's outgoing queue was full (a consumer far too slow).
    pub async fn dropped_frames(&self) -> anyhow::Result<u64> {
        self.core.call(|c| c.dropped_frames).await
    }

    // -----------------------------------------------------------------------------------------
    // Script the world
    // -----------------------------------------------------------------------------------------

    /// Sets a routing status (`IDLE`, `INTERACTING`, … any spelling) as of now and notifies.
    /// Changes in quick succession get strictly increasing `startTime`s (1 ms apart at least).
    pub async fn set_routing_status(&self, user: &str, status: &str) -> anyhow::Result<()> {
        let (user, status) = (user.to_string(), normalize_routing_status(status));
        self.core
            .call(move |c| {
                let i = c.world.index_of(&user).context("unknown user")?;
                let now = c.now();
                let change = c.world.set_routing_now(i, &status, now);
                c.emit_all(change.into_iter().collect());
                Ok(())
            })
            .await?
    }

    /// Sets a routing status with an explicit (possibly past) `startTime` and notifies.
    pub async fn set_routing_status_at(
        &self,
        user: &str,
        status: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let (user, status) = (user.to_string(), normalize_routing_status(status));
        self.core
            .call(move |c| {
                let i = c.world.index_of(&user).context("unknown user")?;
                let change = c.world.set_routing(i, &status, at);
                c.emit_all(change.into_iter().collect());
                Ok(())
            })
            .await?
    }

    /// Sets a presence as of now and notifies. `presence` is a presence definition id (e.g.
    /// [`LUNCH_ID`]) or a system presence in any spelling (`ON_QUEUE`, `On Queue`, `Break`),
    /// which selects its System definition. Changes in quick succession get strictly
    /// increasing `modifiedDate`s.
    pub async fn set_presence(&self, user: &str, presence: &str) -> anyhow::Result<()> {
        let def =
            resolve_presence(presence).with_context(|| format!("unknown presence {presence:?}"))?;
        let user = user.to_string();
        self.core
            .call(move |c| {
                let i = c.world.index_of(&user).context("unknown user")?;
                let now = c.now();
                let change = c.world.set_presence_now(i, def.id, now);
                c.emit_all(change.into_iter().collect());
                Ok(())
            })
            .await?
    }

    /// Like [`Simulator::set_presence`] with an explicit (possibly past) `modifiedDate`.
    pub async fn set_presence_at(
        &self,
        user: &str,
        presence: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let def =
            resolve_presence(presence).with_context(|| format!("unknown presence {presence:?}"))?;
        let user = user.to_string();
        self.core
            .call(move |c| {
                let i = c.world.index_of(&user).context("unknown user")?;
                let change = c.world.set_presence(i, def.id, at);
                c.emit_all(change.into_iter().collect());
                Ok(())
            })
            .await?
    }

    /// Sets the number of active contact-center calls and sends `conversationsummary`.
    pub async fn set_active_conversations(&self, user: &str, active: u32) -> anyhow::Result<()> {
        let user = user.to_string();
        self.core
            .call(move |c| {
                let i = c.world.index_of(&user).context("unknown user")?;
                let change = c.world.set_conversations(i, active);
                c.emit_all(change.into_iter().collect());
                Ok(())
            })
            .await?
    }

    /// Sends a `routingStatus` notification without changing the world (out-of-order and
    /// stale-event tests). The user must exist.
    pub async fn inject_routing_event(
        &self,
        user: &str,
        status: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let (user, status) = (user.to_string(), normalize_routing_status(status));
        self.inject(user, move |id| Change::Routing {
            user: id,
            status,
            start: at,
        })
        .await
    }

    /// Sends a `presence` notification without changing the world. `presence` as in
    /// [`Simulator::set_presence`].
    pub async fn inject_presence_event(
        &self,
        user: &str,
        presence: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let def =
            resolve_presence(presence).with_context(|| format!("unknown presence {presence:?}"))?;
        self.inject(user.to_string(), move |id| Change::Presence {
            user: id,
            definition_id: def.id.to_string(),
            system: def.system.to_string(),
            modified: at,
        })
        .await
    }

    async fn inject<F>(&self, user: String, make: F) -> anyhow::Result<()>
    where
        F: FnOnce(String) -> Change + Send + 'static,
    {
        self.core
            .call(move |c| {
                let i = c.world.index_of(&user).context("unknown user")?;
                let change = make(c.world.agents[i].id.clone());
                c.emit(&change);
                Ok(())
            })
            .await?
    }

    /// Adds a user (ON_QUEUE and IDLE as of now; moved by the autopilot if it is on) and
    /// returns its id. No notification is sent.
    pub async fn add_user(&self, name: &str) -> anyhow::Result<String> {
        let name = name.to_string();
        self.core.call(move |c| c.add_user(name, None)).await
    }

    /// Like [`Simulator::add_user`], in division `division_id` (stored lowercase).
    pub async fn add_user_in_division(
        &self,
        name: &str,
        division_id: &str,
    ) -> anyhow::Result<String> {
        let (name, division) = (name.to_string(), division_id.to_string());
        self.core
            .call(move |c| c.add_user(name, Some(division)))
            .await
    }

    /// Deactivates a user: from now on `GET /api/v2/users` lists it only with
    /// `state=inactive` or `state=any` (with `"state":"inactive"`), the per-user endpoints
    /// (`…/routingstatus`, `…/presences/purecloud`, bulk presences) still answer for it, and
    /// the autopilot stops moving it. No notification is sent. Fails for an unknown user.
    pub async fn deactivate_user(&self, id: &str) -> anyhow::Result<()> {
        let id = id.to_string();
        self.core
            .call(move |c| {
                let i = c.world.index_of(&id).context("unknown user")?;
                c.world.agents[i].active = false;
                Ok(())
            })
            .await?
    }

    /// Replaces the members of a queue (user ids, any case, stored lowercase; duplicates
    /// dropped). Fails if the queue is unknown. Ids of unknown users are kept but never listed
    /// by `GET …/members`, which only lists users of the org. Sockets subscribed to
    /// `v2.routing.queues.<id>.users` (reference §4) get `joined: false` for every member
    /// removed, then `joined: true` for every member added; unchanged members get nothing.
    pub async fn set_queue_members(
        &self,
        queue_id: &str,
        users: Vec<String>,
    ) -> anyhow::Result<()> {
        let queue_id = queue_id.to_string();
        self.core
            .call(move |c| {
                let q = c.queue_index(&queue_id).context("unknown queue")?;
                c.set_queue_members(q, users);
                Ok(())
            })
            .await?
    }

    /// Adds one member at the end of a queue (no-op and no event if already a member) and
    /// sends `joined: true` on `v2.routing.queues.<id>.users`. Fails if the queue is unknown.
    pub async fn add_queue_member(&self, queue_id: &str, user: &str) -> anyhow::Result<()> {
        let (queue_id, user) = (queue_id.to_string(), user.trim().to_ascii_lowercase());
        self.core
            .call(move |c| {
                let q = c.queue_index(&queue_id).context("unknown queue")?;
                let mut members = c.queues[q].members.clone();
                members.push(user);
                c.set_queue_members(q, members);
                Ok(())
            })
            .await?
    }

    /// Removes one member from a queue (no-op and no event if not a member) and sends
    /// `joined: false` on `v2.routing.queues.<id>.users`. Fails if the queue is unknown.
    pub async fn remove_queue_member(&self, queue_id: &str, user: &str) -> anyhow::Result<()> {
        let (queue_id, user) = (queue_id.to_string(), user.trim().to_ascii_lowercase());
        self.core
            .call(move |c| {
                let q = c.queue_index(&queue_id).context("unknown queue")?;
                let mut members = c.queues[q].members.clone();
                members.retain(|m| *m != user);
                c.set_queue_members(q, members);
                Ok(())
            })
            .await?
    }

    /// Starts a compressed shift (see [`ShiftConfig`]): the autopilot is turned off, any
    /// earlier shift is cancelled, and every chosen agent goes ON_QUEUE + IDLE, then cycles
    /// through INTERACTING / NOT_RESPONDING / off-queue presences (Break, Meeting, Lunch, with
    /// OFF_QUEUE; sometimes AVAILABLE on its own) and back to IDLE, finally OFFLINE + OFF_QUEUE
    /// once `duration` has passed. Every routing IDLE episode lasts exactly (in Genesys
    /// timestamps) either less than `idle_threshold - margin` or more than
    /// `idle_threshold + margin`, so with [`idle_episodes`] on the ground truth a test knows
    /// exactly which episodes must raise an idle alert.
    pub async fn start_shift(&self, cfg: ShiftConfig) -> anyhow::Result<ShiftHandle> {
        cfg.validate()?;
        self.core.call(move |c| c.start_shift(cfg)).await
    }

    /// [`Simulator::start_shift`], then waits until the shift is over.
    pub async fn run_shift(&self, cfg: ShiftConfig) -> anyhow::Result<ShiftSummary> {
        self.start_shift(cfg).await?.finished().await
    }

    /// Firehose for benchmarks: `per_agent` scripted transitions for every active agent
    /// (round-robin; mostly routing INTERACTING/IDLE, every fifth a presence change
    /// AVAILABLE/ON_QUEUE; timestamps now, strictly increasing per user), each recorded in the
    /// ground truth and handed to every listening socket **awaiting back-pressure**: no frame
    /// is dropped, so a slow consumer slows the firehose down instead. Turn the autopilot off
    /// for clean numbers. Runs in its own task; see [`Simulator::firehose`] to wait for it.
    pub fn start_firehose(&self, per_agent: usize) -> FirehoseHandle {
        firehose::spawn(self.core.clone(), per_agent)
    }

    /// [`Simulator::start_firehose`], then waits until every frame was handed to its sockets.
    pub async fn firehose(&self, per_agent: usize) -> anyhow::Result<FirehoseReport> {
        self.start_firehose(per_agent).finished().await
    }

    /// Turns the autopilot on or off at run time.
    pub async fn set_autopilot(&self, on: bool) -> anyhow::Result<()> {
        self.core.call(move |c| c.set_autopilot(on)).await
    }

    // -----------------------------------------------------------------------------------------
    // Faults
    // -----------------------------------------------------------------------------------------

    /// While on, every event frame (not heartbeats or pongs) is sent twice.
    pub async fn duplicate_deliveries(&self, on: bool) -> anyhow::Result<()> {
        self.core.call(move |c| c.duplicate = on).await
    }

    /// Sends `text` as a text frame to every connected socket (malformed-frame tests).
    pub async fn send_raw_frame(&self, text: &str) -> anyhow::Result<()> {
        let text = text.to_string();
        self.core.call(move |c| c.broadcast_all(&text)).await
    }

    /// Closes every socket's TCP connection without a close frame (the client sees an abnormal
    /// closure, 1006). Channels and subscriptions stay.
    pub async fn drop_sockets(&self) -> anyhow::Result<()> {
        self.core.call(|c| c.drop_sockets()).await
    }

    /// Sends `v2.system.socket_closing` to every socket; sockets still open after
    /// [`SimConfig::socket_closing_grace`] are closed by the server.
    pub async fn send_socket_closing(&self) -> anyhow::Result<()> {
        self.core.call(|c| c.send_socket_closing()).await
    }

    /// While on, nothing is sent on any socket (no heartbeats, pongs or events; events are
    /// lost) but sockets stay open. The sockets also stop reading, so not even the automatic
    /// answer to an RFC 6455 ping goes out: the connection looks black-holed. Frames the client
    /// sent meanwhile are read when silence ends.
    pub async fn set_silent(&self, on: bool) -> anyhow::Result<()> {
        self.core.call(move |c| c.set_silent(on)).await
    }

    /// Deletes a channel: `HEAD` answers 404 and its socket is closed with a close frame.
    /// `false` if unknown. (Genesys documents no REST DELETE of a channel; a client that leaves
    /// one deletes its subscriptions and closes its socket.)
    pub async fn delete_channel(&self, id: &str) -> anyhow::Result<bool> {
        let id = id.to_string();
        self.core.call(move |c| c.delete_channel(&id)).await
    }

    /// The next `count` requests with this method (`*` for any) and path prefix answer
    /// `status`. A 429 carries `Retry-After: N` and the message `Rate limit exceeded the
    /// maximum. Retry the request in [N] seconds` (code `too.many.requests.retry.after`) when
    /// `retry_after_secs` is `Some(N)`, neither otherwise; other statuses carry an `ErrorBody`.
    pub async fn fail_next(
        &self,
        method: &str,
        path_prefix: &str,
        status: u16,
        retry_after_secs: Option<u64>,
        count: u32,
    ) -> anyhow::Result<()> {
        self.fail_next_with(FaultSpec {
            method: method.to_string(),
            path_prefix: path_prefix.to_string(),
            status,
            retry_after_header: retry_after_secs,
            retry_after_in_message: retry_after_secs,
            count,
        })
        .await
    }

    /// Like [`Simulator::fail_next`] with full control (e.g. `[N]` in the message but no
    /// `Retry-After` header). Rules apply in the order they were added.
    pub async fn fail_next_with(&self, spec: FaultSpec) -> anyhow::Result<()> {
        self.core.call(move |c| c.faults.push(spec)).await
    }

    /// Forgets every pending fault rule.
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.core.call(|c| c.faults.clear()).await
    }

    /// Switches [`SimConfig::presence_definitions_404`] at run time.
    pub async fn set_presence_definitions_404(&self, on: bool) -> anyhow::Result<()> {
        self.core
            .call(move |c| c.cfg.presence_definitions_404 = on)
            .await
    }

    /// Changes [`SimConfig::omit_expand_every`] at run time (0: every user fully expanded).
    pub async fn set_omit_expand_every(&self, every: usize) -> anyhow::Result<()> {
        self.core
            .call(move |c| c.cfg.omit_expand_every = every)
            .await
    }

    /// From now on, topics about these users (or queues: `v2.routing.queues.<id>.users`) are
    /// refused as if the OAuth client lacked a permission (reference §3): with
    /// `ignoreErrors=true`, `PUT|POST …/subscriptions` answers 200 and lists them with
    /// `"state":"Rejected"` and `"rejectionReason": reason`, and nothing is delivered for
    /// them; without it the whole request is a 403 `ErrorBody` (code `missing.permissions`,
    /// an invented but plausible code) and nothing changes. Topics already subscribed stay
    /// until the next subscription call. Ids compare case-insensitively; calls accumulate.
    pub async fn reject_topics(&self, ids: Vec<String>, reason: &str) -> anyhow::Result<()> {
        let reason = reason.to_string();
        self.core
            .call(move |c| {
                for id in ids {
                    c.rejected_ids
                        .insert(id.trim().to_ascii_lowercase(), reason.clone());
                }
            })
            .await
    }

    /// Changes [`SimConfig::rate_limit_per_minute`] at run time (current windows keep their
    /// counts).
    pub async fn set_rate_limit(&self, per_minute: Option<u32>) -> anyhow::Result<()> {
        self.core
            .call(move |c| c.cfg.rate_limit_per_minute = per_minute)
            .await
    }

    /// 429s answered so far because of [`SimConfig::rate_limit_per_minute`] (injected faults
    /// not included).
    pub async fn rate_limited_requests(&self) -> anyhow::Result<u64> {
        self.core.call(|c| c.rate_limited).await
    }

    /// Starts random chaos (see [`ChaosConfig`] and [`ChaosFault`] for what each fault
    /// does), replacing any chaos already running. Refuses a zero `mean_interval` or an empty
    /// `kinds`.
    pub async fn start_chaos(&self, cfg: ChaosConfig) -> anyhow::Result<()> {
        anyhow::ensure!(
            !cfg.mean_interval.is_zero(),
            "chaos mean interval must not be zero"
        );
        anyhow::ensure!(!cfg.kinds.is_empty(), "chaos needs at least one fault kind");
        self.core.call(move |c| c.start_chaos(cfg)).await
    }

    /// Deterministic chaos: fires each `(offset, fault)` at `offset` (wall clock) from now,
    /// replacing any chaos already running. Choices inside a fault (which socket or channel,
    /// how many 429s) come from an RNG seeded with `seed`.
    pub async fn start_chaos_schedule(
        &self,
        seed: u64,
        schedule: Vec<(Duration, ChaosFault)>,
    ) -> anyhow::Result<()> {
        self.core
            .call(move |c| c.start_chaos_schedule(seed, schedule))
            .await
    }

    /// Stops chaos: no further fault fires (pending scheduled ones are void). Effects already
    /// in place stay (queued 429s/5xx, held or reordered frames, revoked tokens); use
    /// [`Simulator::clear_faults`] to drop pending HTTP faults.
    pub async fn stop_chaos(&self) -> anyhow::Result<()> {
        self.core.call(|c| c.stop_chaos()).await
    }

    /// Chaos faults fired so far, per kind (a fault that found nothing to hit, e.g. no socket
    /// connected, still counts). Kinds never fired are absent.
    pub async fn chaos_stats(&self) -> anyhow::Result<std::collections::BTreeMap<ChaosFault, u64>> {
        self.core.call(|c| c.chaos_stats.clone()).await
    }

    /// Every token issued so far answers 401 from now on (new ones can be requested).
    pub async fn revoke_tokens(&self) -> anyhow::Result<()> {
        self.core.call(|c| c.revoke_tokens()).await
    }
}

/// The address clients can reach: loopback in place of an unspecified bind address.
fn reachable(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, bound.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, bound.port()).into(),
        _ => bound,
    }
}

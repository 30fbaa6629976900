//! The core task: the single owner of the simulator's state.
//!
//! HTTP handlers, sockets and the control API never share memory with it: they send a job (a
//! closure run on the core task against `&mut Core`) over an mpsc channel and get the result
//! back on a oneshot. Timers (autopilot steps, heartbeats, forced socket closes) live in a heap
//! inside the same loop, so every change happens in one place and in one order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::chaos::{ChaosConfig, ChaosFault};
use super::faults::{FaultSpec, Faults, Reply};
use super::truth::{GroundTruthTransition, TransitionKind};
use super::world::{Change, Queue, World, build_queues, guid};
use super::ws::{self, Outgoing};
use super::{ChannelEnd, ChannelInfo, SimConfig};
use crate::domain::format_timestamp;

/// Genesys allows this many topics per channel (protocol reference §3).
pub const MAX_TOPICS_PER_CHANNEL: usize = 1000;
/// Genesys allows this many channels per OAuth client (reference §3: "20 channels per
/// user+application"); a 21st evicts an old one. The default of [`SimConfig::max_channels`].
pub const MAX_CHANNELS: usize = 20;
/// A combined topic may be at most this long.
pub const MAX_TOPIC_LEN: usize = 200;

/// Capacity of each socket's outgoing queue; frames beyond it are dropped (and counted), as a
/// slow consumer would lose them.
pub const SOCKET_QUEUE_CAPACITY: usize = 65_536;

type Job = Box<dyn FnOnce(&mut Core) + Send>;

/// A cloneable handle to the core task.
#[derive(Clone)]
pub struct CoreHandle {
    tx: mpsc::Sender<Job>,
}

impl CoreHandle {
    /// Runs `f` on the core task and returns its result.
    pub async fn call<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Core) -> R + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |core: &mut Core| {
                let _ = reply_tx.send(f(core));
            }))
            .await
            .map_err(|_| anyhow::anyhow!("the simulator has shut down"))?;
        reply_rx
            .await
            .map_err(|_| anyhow::anyhow!("the simulator has shut down"))
    }

    /// Runs `f` on the core task without waiting for it.
    pub async fn cast<F>(&self, f: F)
    where
        F: FnOnce(&mut Core) + Send + 'static,
    {
        let _ = self.tx.send(Box::new(f)).await;
    }
}

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Send a heartbeat to every socket.
    Heartbeat,
    /// Move agent `.0` along its shift, if the autopilot generation `.1` is still current.
    Autopilot(usize, u64),
    /// Close socket `.0` if it is still open (end of the socket_closing grace).
    ForceClose(u64),
    /// Channel with serial `.0` reaches its `expires`.
    ExpireChannel(u64),
    /// Random chaos step, if chaos generation `.0` is still current.
    Chaos(u64),
    /// Scheduled chaos fault, if chaos generation `.0` is still current.
    ChaosAt(u64, ChaosFault),
    /// Release the frame socket `.0` holds back (chaos reorder), if any.
    ReleaseHeld(u64),
    /// Next step of shift slot `.1`, if shift generation `.0` is still current.
    Shift(u64, usize),
}

/// Bit flags of the per-user topics a channel listens to.
pub const PRESENCE: u8 = 1;
pub const ROUTING: u8 = 2;
pub const SUMMARY: u8 = 4;

/// One notification channel.
pub struct ChannelState {
    pub id: String,
    /// Creation order, from 1 (timers refer to channels by it).
    pub serial: u64,
    pub expires: DateTime<Utc>,
    /// Topics as subscribed (combined topics count once).
    pub topics: Vec<String>,
    /// Lowercase user id → topic bits, derived from `topics`.
    pub interest: HashMap<String, u8>,
    /// Lowercase ids of the queues whose `v2.routing.queues.<id>.users` topic is subscribed.
    pub queue_interest: HashSet<String>,
    /// The socket currently connected, if any.
    pub socket: Option<u64>,
    /// Sockets accepted on this channel so far.
    pub connects: u64,
    /// Topics refused with `ignoreErrors=true` by the last subscription call, with the
    /// rejection reason (listed as `Rejected`, never delivered).
    pub rejected: Vec<(String, String)>,
}

impl ChannelState {
    /// The subscription listing: permitted topics (`None`), then rejected ones with reasons.
    pub fn listing(&self) -> Vec<(String, Option<String>)> {
        self.topics
            .iter()
            .map(|t| (t.clone(), None))
            .chain(
                self.rejected
                    .iter()
                    .map(|(t, r)| (t.clone(), Some(r.clone()))),
            )
            .collect()
    }

    fn recompute_interest(&mut self) {
        self.interest.clear();
        self.queue_interest.clear();
        for topic in &self.topics {
            if let Some((user, bits)) = parse_user_topic(topic) {
                *self.interest.entry(user).or_default() |= bits;
            } else if let Some(queue) = topic_subject(topic) {
                self.queue_interest.insert(queue);
            }
        }
    }
}

/// `v2.users.<id>.presence` or the combined `v2.users.<id>?presence&routingStatus&…` → the
/// lowercase user id and the topic bits it asks for.
pub fn parse_user_topic(topic: &str) -> Option<(String, u8)> {
    let rest = topic.strip_prefix("v2.users.")?;
    let (id, parts): (&str, Vec<&str>) = if let Some((id, query)) = rest.split_once('?') {
        (id, query.split('&').collect())
    } else {
        let (id, suffix) = rest.rsplit_once('.')?;
        (id, vec![suffix])
    };
    if id.is_empty() || id.contains('.') {
        return None;
    }
    let mut bits = 0;
    for part in parts {
        bits |= match part {
            "presence" => PRESENCE,
            "routingStatus" => ROUTING,
            "conversationsummary" => SUMMARY,
            _ => 0,
        };
    }
    Some((id.to_ascii_lowercase(), bits))
}

/// The lowercase user or queue id a topic is about (`v2.users.<id>…`,
/// `v2.routing.queues.<id>.users`).
pub fn topic_subject(topic: &str) -> Option<String> {
    if let Some((user, _)) = parse_user_topic(topic) {
        return Some(user);
    }
    let queue = topic
        .strip_prefix("v2.routing.queues.")?
        .strip_suffix(".users")?;
    (!queue.is_empty() && !queue.contains('.')).then(|| queue.to_ascii_lowercase())
}

struct SocketState {
    channel_id: String,
    tx: mpsc::Sender<Outgoing>,
    /// Chaos: the next this-many event frames are sent twice.
    duplicate_next: u32,
    /// Chaos: this many adjacent pairs of event frames still to swap.
    reorder_next: u32,
    /// Chaos: an event frame held back to go out after the next one (with its ground-truth
    /// index, marked delivered when it is released).
    held: Option<(String, Option<usize>)>,
}

/// The simulator's whole state; only the core task touches it.
pub struct Core {
    pub cfg: SimConfig,
    pub world: World,
    /// Routing queues and their members (`GET /api/v2/routing/queues/{id}/members`).
    pub queues: Vec<Queue>,
    /// `ws://127.0.0.1:PORT`, the base of every `connectUri`.
    pub ws_base: String,
    /// Issued, unrevoked tokens and their expiry.
    tokens: HashMap<String, Instant>,
    pub token_requests: u64,
    /// Live channels in creation order.
    pub channels: Vec<ChannelState>,
    /// Channels that ended (deleted, evicted, expired, no longer subscribed), in ending order.
    pub ended_channels: Vec<ChannelInfo>,
    next_channel_serial: u64,
    sockets: HashMap<u64, SocketState>,
    next_socket_id: u64,
    /// (method, path) → requests received.
    requests: HashMap<(String, String), u64>,
    pub faults: Faults,
    pub duplicate: bool,
    silent: bool,
    /// Frames dropped because a socket queue was full.
    pub dropped_frames: u64,
    autopilot: bool,
    autopilot_generation: u64,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_seq: u64,
    /// Non-deterministic ids (tokens, channels, correlation ids).
    id_rng: StdRng,
    /// Lowercase user or queue id → rejection reason of its topics
    /// ([`super::Simulator::reject_topics`]).
    pub rejected_ids: HashMap<String, String>,
    /// Token → (start of its current 60-s window, requests in it).
    rate_windows: HashMap<String, (Instant, u32)>,
    /// 429s answered because of [`SimConfig::rate_limit_per_minute`].
    pub rate_limited: u64,
    /// Bumped by every chaos start and stop, so stale chaos timers do nothing.
    chaos_generation: u64,
    /// The running random chaos, if any.
    chaos: Option<ChaosConfig>,
    chaos_rng: StdRng,
    /// Chaos faults fired so far, per kind.
    pub chaos_stats: std::collections::BTreeMap<ChaosFault, u64>,
    /// The compressed shift in progress, if any.
    pub(super) shift: Option<super::shift::ShiftState>,
    /// Bumped by every shift start, so stale shift timers do nothing.
    pub(super) shift_generation: u64,
    /// Offset of the simulated clock from real UTC ([`Core::now`]).
    pub clock_skew: chrono::TimeDelta,
    /// Every presence and routing transition generated, in order.
    pub truth: Vec<GroundTruthTransition>,
}

impl Core {
    fn new(cfg: SimConfig, ws_base: String) -> Core {
        let now = Utc::now() + cfg.clock_skew;
        let world = World::new(
            cfg.agents,
            StdRng::seed_from_u64(cfg.seed),
            cfg.speed,
            cfg.autopilot,
            now,
        );
        let queues = build_queues(cfg.queues, cfg.seed, &world.agents);
        let cfg_skew = cfg.clock_skew;
        let mut core = Core {
            autopilot: false,
            queues,
            cfg,
            world,
            ws_base,
            tokens: HashMap::new(),
            token_requests: 0,
            channels: Vec::new(),
            ended_channels: Vec::new(),
            next_channel_serial: 1,
            sockets: HashMap::new(),
            next_socket_id: 1,
            requests: HashMap::new(),
            faults: Faults::default(),
            duplicate: false,
            silent: false,
            dropped_frames: 0,
            autopilot_generation: 0,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            id_rng: StdRng::from_os_rng(),
            clock_skew: cfg_skew,
            truth: Vec::new(),
            rejected_ids: HashMap::new(),
            rate_windows: HashMap::new(),
            rate_limited: 0,
            chaos_generation: 0,
            chaos: None,
            chaos_rng: StdRng::seed_from_u64(0),
            chaos_stats: std::collections::BTreeMap::new(),
            shift: None,
            shift_generation: 0,
        };
        let divisions = core.cfg.division_ids.clone();
        for i in 0..core.world.agents.len() {
            if !divisions.is_empty() {
                core.world.agents[i].division_id =
                    divisions[i % divisions.len()].to_ascii_lowercase();
            }
            core.record_initial(i);
        }
        let heartbeat = core.cfg.heartbeat_interval;
        core.schedule(heartbeat, Timer::Heartbeat);
        if core.cfg.autopilot {
            core.set_autopilot(true);
        }
        core
    }

    fn schedule(&mut self, after: Duration, timer: Timer) {
        self.timer_seq += 1;
        let now = Instant::now();
        // A duration too large to add means "never" in practice: a century.
        let at = now
            .checked_add(after)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        self.timers.push(Reverse((at, self.timer_seq, timer)));
    }

    /// Schedules shift slot `slot` at an absolute instant.
    pub(super) fn schedule_shift(&mut self, at: Instant, generation: u64, slot: usize) {
        self.timer_seq += 1;
        self.timers.push(Reverse((
            at,
            self.timer_seq,
            Timer::Shift(generation, slot),
        )));
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Heartbeat => {
                    let frame = ws::heartbeat_frame();
                    self.broadcast_all(&frame);
                    let every = self.cfg.heartbeat_interval.max(Duration::from_millis(10));
                    self.schedule(every, Timer::Heartbeat);
                }
                Timer::Autopilot(i, generation) => {
                    if generation != self.autopilot_generation || i >= self.world.agents.len() {
                        continue;
                    }
                    if !self.world.agents[i].active {
                        continue;
                    }
                    let now = self.now();
                    let (changes, hold) = self.world.autopilot_step(i, now);
                    self.emit_all(changes);
                    self.schedule(hold, Timer::Autopilot(i, generation));
                }
                Timer::ForceClose(socket_id) => {
                    self.close_socket(socket_id, Outgoing::close("socket closing"));
                }
                Timer::Chaos(generation) => {
                    if generation != self.chaos_generation {
                        continue;
                    }
                    let Some(cfg) = self.chaos.clone() else {
                        continue;
                    };
                    let kinds: Vec<ChaosFault> = cfg.kinds.iter().copied().collect();
                    if !kinds.is_empty() {
                        let fault = kinds[self.chaos_rng.random_range(0..kinds.len())];
                        self.fire_chaos(fault);
                    }
                    self.schedule_chaos(&cfg);
                }
                Timer::ChaosAt(generation, fault) => {
                    if generation == self.chaos_generation {
                        self.fire_chaos(fault);
                    }
                }
                Timer::ReleaseHeld(socket_id) => self.release_held(socket_id),
                Timer::Shift(generation, slot) => self.shift_step(generation, slot),
                Timer::ExpireChannel(serial) => {
                    if let Some(i) = self.channels.iter().position(|c| c.serial == serial) {
                        self.end_channel(i, ChannelEnd::Expired);
                    }
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Autopilot
    // -----------------------------------------------------------------------------------------

    /// Turns the autopilot on (every agent gets a fresh timer) or off (pending steps are void).
    pub fn set_autopilot(&mut self, on: bool) {
        self.autopilot_generation += 1;
        self.autopilot = on;
        if on {
            for i in 0..self.world.agents.len() {
                self.schedule_agent(i);
            }
        }
    }

    fn schedule_agent(&mut self, i: usize) {
        let hold = self.world.first_hold(i);
        let generation = self.autopilot_generation;
        self.schedule(hold, Timer::Autopilot(i, generation));
    }

    /// Index of a queue by id (case-insensitive).
    pub fn queue_index(&self, id: &str) -> Option<usize> {
        self.queues
            .iter()
            .position(|q| q.id.eq_ignore_ascii_case(id.trim()))
    }

    /// Adds a user (ON_QUEUE, IDLE, now; a member of queue `index % queues`; in `division`,
    /// else the configured division of its index, else the home one) and returns its id.
    pub fn add_user(&mut self, name: String, division: Option<String>) -> String {
        let now = self.now();
        let i = self.world.add_user(name, now);
        let divisions = &self.cfg.division_ids;
        if let Some(division) = division {
            self.world.agents[i].division_id = division.trim().to_ascii_lowercase();
        } else if !divisions.is_empty() {
            self.world.agents[i].division_id = divisions[i % divisions.len()].to_ascii_lowercase();
        }
        self.record_initial(i);
        let n = self.queues.len();
        if n > 0 {
            let id = self.world.agents[i].id.clone();
            self.queues[i % n].members.push(id);
        }
        if self.autopilot {
            self.schedule_agent(i);
        }
        self.world.agents[i].id.clone()
    }

    // -----------------------------------------------------------------------------------------
    // HTTP admission: counting, injected faults, bearer tokens
    // -----------------------------------------------------------------------------------------

    /// Counts the request, then answers it with an injected fault, a 401 or a 429 if needed
    /// (`Err`); `Ok(headers)` lets the real handler run and adds the headers to its answer
    /// (the `inin-ratelimit-*` headers when a rate limit is configured).
    pub fn admit(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
    ) -> Result<Vec<(String, String)>, Reply> {
        *self
            .requests
            .entry((method.to_ascii_uppercase(), path.to_string()))
            .or_default() += 1;
        if path == "/oauth/token" && method.eq_ignore_ascii_case("POST") {
            self.token_requests += 1;
        }
        if let Some(reply) = self.faults.take(method, path) {
            tracing::debug!(
                method,
                path,
                status = reply.status,
                "simulator: injected fault"
            );
            return Err(reply);
        }
        if !path.starts_with("/api/") {
            return Ok(Vec::new());
        }
        if !self.token_is_valid(bearer) {
            return Err(Reply::unauthorized());
        }
        match (self.cfg.rate_limit_per_minute, bearer) {
            (Some(allowed), Some(token)) => self.rate_limit(token, allowed),
            _ => Ok(Vec::new()),
        }
    }

    /// Fixed 60-s windows per token, starting at the token's first request (reference §8).
    fn rate_limit(&mut self, token: &str, allowed: u32) -> Result<Vec<(String, String)>, Reply> {
        const WINDOW: Duration = Duration::from_secs(60);
        let now = Instant::now();
        let window = self
            .rate_windows
            .entry(token.to_string())
            .or_insert((now, 0));
        if now.duration_since(window.0) >= WINDOW {
            *window = (now, 0);
        }
        window.1 = window.1.saturating_add(1);
        let count = window.1;
        let reset = (WINDOW.saturating_sub(now.duration_since(window.0)))
            .as_secs_f64()
            .ceil()
            .max(1.0) as u64;
        let mut headers = vec![
            (
                "inin-ratelimit-count".to_string(),
                count.min(allowed).to_string(),
            ),
            ("inin-ratelimit-allowed".to_string(), allowed.to_string()),
            ("inin-ratelimit-reset".to_string(), reset.to_string()),
        ];
        if count <= allowed {
            return Ok(headers);
        }
        self.rate_limited += 1;
        let mut reply = Reply::error(
            429,
            "too.many.requests.retry.after",
            &format!("Rate limit exceeded the maximum. Retry the request in [{reset}] seconds"),
        );
        headers.push(("Retry-After".to_string(), reset.to_string()));
        reply.headers = headers;
        Err(reply)
    }

    fn token_is_valid(&self, bearer: Option<&str>) -> bool {
        bearer
            .and_then(|t| self.tokens.get(t))
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    /// Requests received whose method matches (`*` for any) and whose path starts with
    /// `path_prefix`.
    pub fn request_count(&self, method: &str, path_prefix: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((m, p), _)| {
                (method == "*" || m.eq_ignore_ascii_case(method)) && p.starts_with(path_prefix)
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// Issues a bearer token valid for `token_lifetime`.
    pub fn issue_token(&mut self) -> String {
        let now = Instant::now();
        self.tokens.retain(|_, expiry| *expiry > now);
        let token = Alphanumeric.sample_string(&mut self.id_rng, 64);
        let expiry = now
            .checked_add(self.cfg.token_lifetime)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        self.tokens.insert(token.clone(), expiry);
        token
    }

    /// Issued, unrevoked tokens (tests check that none of them is ever logged).
    pub fn live_tokens(&self) -> Vec<String> {
        self.tokens.keys().cloned().collect()
    }

    /// Every issued token answers 401 from now on.
    pub fn revoke_tokens(&mut self) {
        self.tokens.clear();
    }

    // -----------------------------------------------------------------------------------------
    // Channels and subscriptions
    // -----------------------------------------------------------------------------------------

    /// Creates a channel (evicting an old one past [`SimConfig::max_channels`]) and returns
    /// its index. The victim is the oldest channel without a connected socket, else the
    /// oldest; a connected victim first gets `v2.system.no_longer_subscribed.<id>`.
    pub fn create_channel(&mut self) -> usize {
        while !self.channels.is_empty() && self.channels.len() >= self.cfg.max_channels.max(1) {
            let victim = self
                .channels
                .iter()
                .position(|c| c.socket.is_none())
                .unwrap_or(0);
            self.end_channel(victim, ChannelEnd::Evicted);
        }
        let suffix: String = Alphanumeric
            .sample_string(&mut self.id_rng, 26)
            .to_ascii_lowercase();
        let serial = self.next_channel_serial;
        self.next_channel_serial += 1;
        let ttl = self.cfg.channel_ttl;
        let expires = crate::domain::truncate_to_millis(
            self.now()
                + chrono::TimeDelta::from_std(ttl).unwrap_or(chrono::TimeDelta::days(36_500)),
        );
        self.channels.push(ChannelState {
            id: format!("streaming-0-{suffix}"),
            serial,
            expires,
            topics: Vec::new(),
            interest: HashMap::new(),
            queue_interest: HashSet::new(),
            socket: None,
            connects: 0,
            rejected: Vec::new(),
        });
        self.schedule(ttl, Timer::ExpireChannel(serial));
        self.channels.len() - 1
    }

    pub fn channel_index(&self, id: &str) -> Option<usize> {
        self.channels.iter().position(|c| c.id == id)
    }

    /// Removes a channel and closes its socket; `false` if it did not exist.
    pub fn delete_channel(&mut self, id: &str) -> bool {
        let Some(i) = self.channel_index(id) else {
            return false;
        };
        self.end_channel(i, ChannelEnd::Deleted);
        true
    }

    /// What [`super::Simulator::channels`] reports about a channel.
    pub fn channel_info(&self, ch: &ChannelState, ended: Option<ChannelEnd>) -> ChannelInfo {
        ChannelInfo {
            id: ch.id.clone(),
            topics: ch.topics.len(),
            connected_sockets: usize::from(ch.socket.is_some() && ended.is_none()),
            socket_connects: ch.connects,
            expires: ch.expires,
            ended,
        }
    }

    /// Ends channel `i`: it disappears (HEAD answers 404) and its socket is closed with a close
    /// frame. Evicted and no-longer-subscribed channels' sockets first get
    /// `v2.system.no_longer_subscribed.<id>` (reason `another_channel_subscribed`).
    pub fn end_channel(&mut self, i: usize, how: ChannelEnd) {
        let channel = self.channels.remove(i);
        let info = self.channel_info(&channel, Some(how));
        self.ended_channels.push(info);
        let Some(socket_id) = channel.socket else {
            return;
        };
        let reason = match how {
            ChannelEnd::Evicted | ChannelEnd::NoLongerSubscribed => {
                let correlation = guid(&mut self.id_rng);
                let frame = ws::no_longer_subscribed_frame(
                    &channel.id,
                    "another_channel_subscribed",
                    &correlation,
                );
                self.send(socket_id, frame);
                "no longer subscribed"
            }
            ChannelEnd::Expired => "channel expired",
            ChannelEnd::Deleted => "channel deleted",
        };
        self.close_socket(socket_id, Outgoing::close(reason));
    }

    /// Sends `v2.system.no_longer_subscribed.<id>` to every connected socket, closes them and
    /// drops their channels. Channels without a socket stay.
    pub fn send_no_longer_subscribed(&mut self) {
        while let Some(i) = self.channels.iter().position(|c| c.socket.is_some()) {
            self.end_channel(i, ChannelEnd::NoLongerSubscribed);
        }
    }

    /// Replaces (`replace`) or extends a channel's topics. Refuses to go over
    /// [`MAX_TOPICS_PER_CHANNEL`]. Returns the topics with their states: `None` for
    /// `Permitted`, `Some(reason)` for `Rejected` (malformed topics, and topics of ids given to
    /// [`super::Simulator::reject_topics`], when `ignore_errors`; without it either kind fails
    /// the whole request: 400 or 403).
    pub fn subscribe(
        &mut self,
        channel: usize,
        topics: Vec<String>,
        replace: bool,
        ignore_errors: bool,
    ) -> Result<Vec<(String, Option<String>)>, Reply> {
        let mut accepted = Vec::new();
        let mut rejected: Vec<(String, String)> = Vec::new();
        for topic in topics {
            let valid = topic.starts_with("v2.")
                && topic.len() <= MAX_TOPIC_LEN
                && (!topic.starts_with("v2.users.") || parse_user_topic(&topic).is_some());
            if !valid {
                if ignore_errors {
                    rejected.push((topic, "Invalid topic".into()));
                    continue;
                }
                return Err(Reply::bad_request(&format!("Invalid topic {topic}")));
            }
            if let Some(reason) = topic_subject(&topic).and_then(|id| self.rejected_ids.get(&id)) {
                if ignore_errors {
                    rejected.push((topic, reason.clone()));
                    continue;
                }
                return Err(Reply::error(
                    403,
                    "missing.permissions",
                    &format!("Unable to subscribe to {topic}: {reason}"),
                ));
            }
            accepted.push(topic);
        }
        let state = &mut self.channels[channel];
        let mut next: Vec<String> = if replace {
            Vec::new()
        } else {
            state.topics.clone()
        };
        for topic in accepted {
            if !next.contains(&topic) {
                next.push(topic);
            }
        }
        if next.len() > MAX_TOPICS_PER_CHANNEL {
            return Err(Reply::bad_request(&format!(
                "A channel may have at most {MAX_TOPICS_PER_CHANNEL} topics; this request would make it {}",
                next.len()
            )));
        }
        state.topics = next;
        state.rejected = rejected;
        state.recompute_interest();
        Ok(state.listing())
    }

    /// Removes every topic of a channel.
    pub fn unsubscribe_all(&mut self, channel: usize) {
        let state = &mut self.channels[channel];
        state.topics.clear();
        state.rejected.clear();
        state.interest.clear();
        state.queue_interest.clear();
    }

    // -----------------------------------------------------------------------------------------
    // Sockets
    // -----------------------------------------------------------------------------------------

    /// Registers a socket on a channel, closing the one already there (one socket per channel).
    /// `None` if the channel does not exist.
    pub fn socket_opened(&mut self, channel_id: &str, tx: mpsc::Sender<Outgoing>) -> Option<u64> {
        let i = self.channel_index(channel_id)?;
        let socket_id = self.next_socket_id;
        self.next_socket_id += 1;
        let previous = self.channels[i].socket.replace(socket_id);
        self.channels[i].connects += 1;
        if let Some(old) = previous {
            tracing::debug!(channel_id, "simulator: second socket replaces the first");
            self.close_socket(old, Outgoing::close("another socket connected"));
        }
        if self.silent {
            let _ = tx.try_send(Outgoing::Pause(true));
        }
        self.sockets.insert(
            socket_id,
            SocketState {
                channel_id: channel_id.to_string(),
                tx,
                duplicate_next: 0,
                reorder_next: 0,
                held: None,
            },
        );
        Some(socket_id)
    }

    /// A socket went away (either side closed it).
    pub fn socket_closed(&mut self, socket_id: u64) {
        if let Some(state) = self.sockets.remove(&socket_id) {
            if let Some(i) = self.channel_index(&state.channel_id) {
                if self.channels[i].socket == Some(socket_id) {
                    self.channels[i].socket = None;
                }
            }
        }
    }

    /// A text frame from a client: `{"message":"ping"}` gets a pong (unless silent).
    pub fn socket_text(&mut self, socket_id: u64, text: &str) {
        let is_ping = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .is_some_and(|v| v.get("message").and_then(|m| m.as_str()) == Some("ping"));
        if is_ping && !self.silent {
            self.send(socket_id, ws::pong_frame());
        }
    }

    /// Queues a text frame on a socket; `false` if the socket is gone or its queue is full.
    fn send(&mut self, socket_id: u64, frame: String) -> bool {
        let Some(socket) = self.sockets.get(&socket_id) else {
            return false;
        };
        if socket.tx.try_send(Outgoing::Text(frame)).is_err() {
            self.dropped_frames += 1;
            return false;
        }
        true
    }

    fn close_socket(&mut self, socket_id: u64, how: Outgoing) {
        if let Some(socket) = self.sockets.remove(&socket_id) {
            let _ = socket.tx.try_send(how);
            if let Some(i) = self.channel_index(&socket.channel_id) {
                if self.channels[i].socket == Some(socket_id) {
                    self.channels[i].socket = None;
                }
            }
        }
    }

    fn socket_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.sockets.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Sends a frame to every connected socket (unless silent).
    pub fn broadcast_all(&mut self, frame: &str) {
        if self.silent {
            return;
        }
        for id in self.socket_ids() {
            self.send(id, frame.to_string());
        }
    }

    /// While silent, nothing is written to any socket and no socket reads its client's frames
    /// (so no pong of any kind goes out); events are lost.
    pub fn set_silent(&mut self, on: bool) {
        if self.silent == on {
            return;
        }
        self.silent = on;
        for socket in self.sockets.values() {
            let _ = socket.tx.try_send(Outgoing::Pause(on));
        }
    }

    /// Closes every socket's TCP connection without a close frame.
    pub fn drop_sockets(&mut self) {
        for id in self.socket_ids() {
            self.close_socket(id, Outgoing::Drop);
        }
    }

    /// Sends `v2.system.socket_closing` to every socket and closes each one after the grace
    /// period if it is still open.
    pub fn send_socket_closing(&mut self) {
        let grace = self.cfg.socket_closing_grace;
        for id in self.socket_ids() {
            let channel_id = self.sockets[&id].channel_id.clone();
            let frame =
                ws::socket_closing_frame(&channel_id, &self.cfg.client_id, &guid(&mut self.id_rng));
            self.send(id, frame);
            self.schedule(grace, Timer::ForceClose(id));
        }
    }

    /// Closes every socket with a close frame (shutdown).
    fn close_all(&mut self) {
        for id in self.socket_ids() {
            self.close_socket(id, Outgoing::close("simulator shutting down"));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Events
    // -----------------------------------------------------------------------------------------

    /// The simulated clock: real UTC plus [`Core::clock_skew`]. Every timestamp the simulator
    /// generates comes from it.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_skew
    }

    /// Records the current presence and routing status of agent `i` as its initial state.
    fn record_initial(&mut self, i: usize) {
        let a = &self.world.agents[i];
        let presence = (
            TransitionKind::Presence,
            a.presence_system.clone(),
            Some(a.presence_id.clone()),
            a.presence_modified,
        );
        let routing = (
            TransitionKind::Routing,
            a.routing.clone(),
            None,
            a.routing_start,
        );
        let user = a.id.to_ascii_lowercase();
        for (kind, value, def, at) in [presence, routing] {
            self.record(&user, kind, value, def, at, true);
        }
    }

    fn record(
        &mut self,
        user: &str,
        kind: TransitionKind,
        value: String,
        presence_definition_id: Option<String>,
        at: DateTime<Utc>,
        initial: bool,
    ) -> usize {
        let seq = self.truth.len();
        self.truth.push(GroundTruthTransition {
            seq: seq as u64,
            user_id: user.to_ascii_lowercase(),
            kind,
            value,
            presence_definition_id,
            at,
            initial,
            delivered: false,
        });
        seq
    }

    /// Records a world change in the ground truth (presence and routing only) and returns its
    /// index there.
    fn record_change(&mut self, change: &Change) -> Option<usize> {
        match change {
            Change::Presence {
                user,
                definition_id,
                system,
                modified,
            } => Some(self.record(
                user,
                TransitionKind::Presence,
                system.clone(),
                Some(definition_id.clone()),
                *modified,
                false,
            )),
            Change::Routing {
                user,
                status,
                start,
            } => Some(self.record(
                user,
                TransitionKind::Routing,
                status.clone(),
                None,
                *start,
                false,
            )),
            _ => None,
        }
    }

    /// Records each world change in the ground truth, then broadcasts it to the sockets of the
    /// channels subscribed to it.
    pub fn emit_all(&mut self, changes: Vec<Change>) {
        for change in changes {
            let index = self.record_change(&change);
            let delivered = self.emit_recorded(&change, index);
            if let Some(index) = index {
                self.truth[index].delivered |= delivered;
            }
        }
    }

    /// Sends one notification to every socket whose channel listens to its user and topic;
    /// `true` if at least one socket queue took it. Not recorded in the ground truth (injected
    /// events go through here directly).
    pub fn emit(&mut self, change: &Change) -> bool {
        self.emit_recorded(change, None)
    }

    /// Records a firehose change and returns its frame, the queues of the sockets listening
    /// (none while silent) and its ground-truth index, marked delivered if any socket listens.
    pub fn record_firehose(
        &mut self,
        change: &Change,
    ) -> (String, Vec<mpsc::Sender<Outgoing>>, usize) {
        let index = self.record_change(change).unwrap_or_default();
        let targets: Vec<mpsc::Sender<Outgoing>> = if self.silent {
            Vec::new()
        } else {
            self.targets(change)
                .into_iter()
                .filter_map(|id| self.sockets.get(&id).map(|s| s.tx.clone()))
                .collect()
        };
        self.truth[index].delivered = !targets.is_empty();
        let correlation = guid(&mut self.id_rng);
        (ws::event_frame(change, &correlation), targets, index)
    }

    /// [`Core::emit`] for a change recorded at `truth_index` in the ground truth.
    fn emit_recorded(&mut self, change: &Change, truth_index: Option<usize>) -> bool {
        if self.silent {
            return false;
        }
        let targets = self.targets(change);
        if targets.is_empty() {
            return false;
        }
        let correlation = guid(&mut self.id_rng);
        let frame = ws::event_frame(change, &correlation);
        let mut delivered = false;
        for id in targets {
            delivered |= self.send_event(id, &frame, truth_index);
        }
        delivered
    }

    /// Queues an event frame on a socket, applying the global duplicate switch and the
    /// socket's chaos (duplicate, reorder). `true` if it was queued now.
    fn send_event(&mut self, socket_id: u64, frame: &str, truth_index: Option<usize>) -> bool {
        let Some(socket) = self.sockets.get_mut(&socket_id) else {
            return false;
        };
        let twice = self.duplicate || socket.duplicate_next > 0;
        socket.duplicate_next = socket.duplicate_next.saturating_sub(1);
        if socket.held.is_none() && socket.reorder_next > 0 {
            socket.reorder_next -= 1;
            socket.held = Some((frame.to_string(), truth_index));
            self.schedule(Duration::from_millis(500), Timer::ReleaseHeld(socket_id));
            return false;
        }
        let held = socket.held.take();
        let sent = self.send(socket_id, frame.to_string());
        if twice {
            self.send(socket_id, frame.to_string());
        }
        if let Some((held, index)) = held {
            if self.send(socket_id, held) {
                if let Some(index) = index {
                    self.truth[index].delivered = true;
                }
            }
        }
        sent
    }

    /// Sends the frame a socket holds back, if any (end of a chaos reorder with no next frame).
    fn release_held(&mut self, socket_id: u64) {
        let held = self
            .sockets
            .get_mut(&socket_id)
            .and_then(|socket| socket.held.take());
        if let Some((frame, index)) = held {
            if self.send(socket_id, frame) {
                if let Some(index) = index {
                    self.truth[index].delivered = true;
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Chaos
    // -----------------------------------------------------------------------------------------

    /// Starts random chaos (replacing any chaos running).
    pub fn start_chaos(&mut self, cfg: ChaosConfig) {
        self.chaos_generation += 1;
        self.chaos_rng = StdRng::seed_from_u64(cfg.seed);
        self.schedule_chaos(&cfg);
        self.chaos = Some(cfg);
    }

    /// Starts scheduled chaos (replacing any chaos running): each fault fires at its offset
    /// from now. Choices inside a fault (which socket) come from an RNG seeded with `seed`.
    pub fn start_chaos_schedule(&mut self, seed: u64, schedule: Vec<(Duration, ChaosFault)>) {
        self.chaos_generation += 1;
        self.chaos = None;
        self.chaos_rng = StdRng::seed_from_u64(seed);
        let generation = self.chaos_generation;
        for (offset, fault) in schedule {
            self.schedule(offset, Timer::ChaosAt(generation, fault));
        }
    }

    /// Stops chaos; pending scheduled faults are void. Faults already fired stay in effect
    /// (queued 429s, held frames, revoked tokens).
    pub fn stop_chaos(&mut self) {
        self.chaos_generation += 1;
        self.chaos = None;
    }

    fn schedule_chaos(&mut self, cfg: &ChaosConfig) {
        let factor: f64 = self.chaos_rng.random_range(0.5..1.5);
        let after = cfg
            .mean_interval
            .mul_f64(factor)
            .max(Duration::from_millis(1));
        self.schedule(after, Timer::Chaos(self.chaos_generation));
    }

    fn random_socket(&mut self) -> Option<u64> {
        let ids = self.socket_ids();
        (!ids.is_empty()).then(|| ids[self.chaos_rng.random_range(0..ids.len())])
    }

    /// Fires one chaos fault now and counts it (even when it found nothing to hit).
    pub fn fire_chaos(&mut self, fault: ChaosFault) {
        tracing::debug!(?fault, "simulator: chaos");
        *self.chaos_stats.entry(fault).or_default() += 1;
        match fault {
            ChaosFault::DropSockets => self.drop_sockets(),
            ChaosFault::SocketClosing => self.send_socket_closing(),
            ChaosFault::RevokeTokens => self.revoke_tokens(),
            ChaosFault::RateLimit => {
                let count = self.chaos_rng.random_range(1..=3);
                self.faults.push(FaultSpec {
                    method: "*".into(),
                    path_prefix: "/api/".into(),
                    status: 429,
                    retry_after_header: Some(1),
                    retry_after_in_message: Some(1),
                    count,
                });
            }
            ChaosFault::ServerError => {
                let status = [500, 502, 503, 504][self.chaos_rng.random_range(0..4)];
                let count = self.chaos_rng.random_range(1..=2);
                self.faults.push(FaultSpec {
                    method: "*".into(),
                    path_prefix: "/api/".into(),
                    status,
                    retry_after_header: None,
                    retry_after_in_message: None,
                    count,
                });
            }
            ChaosFault::DelayDeliveries => {
                let pause = Duration::from_millis(self.chaos_rng.random_range(100..=1500));
                if let Some(id) = self.random_socket() {
                    let _ = self.sockets[&id].tx.try_send(Outgoing::Hold(pause));
                }
            }
            ChaosFault::DuplicateDeliveries => {
                let n = self.chaos_rng.random_range(1..=5);
                if let Some(id) = self.random_socket() {
                    if let Some(socket) = self.sockets.get_mut(&id) {
                        socket.duplicate_next += n;
                    }
                }
            }
            ChaosFault::ReorderDeliveries => {
                let n = self.chaos_rng.random_range(1..=3);
                if let Some(id) = self.random_socket() {
                    if let Some(socket) = self.sockets.get_mut(&id) {
                        socket.reorder_next += n;
                    }
                }
            }
            ChaosFault::ExpireChannel => {
                if !self.channels.is_empty() {
                    let i = self.chaos_rng.random_range(0..self.channels.len());
                    self.end_channel(i, ChannelEnd::Expired);
                }
            }
            ChaosFault::NoLongerSubscribed => {
                let connected: Vec<usize> = (0..self.channels.len())
                    .filter(|i| self.channels[*i].socket.is_some())
                    .collect();
                if !connected.is_empty() {
                    let i = connected[self.chaos_rng.random_range(0..connected.len())];
                    self.end_channel(i, ChannelEnd::NoLongerSubscribed);
                }
            }
        }
    }

    /// The sockets whose channel listens to this change's user and topic (or queue).
    fn targets(&self, change: &Change) -> Vec<u64> {
        let (user, bit) = match change {
            Change::Presence { user, .. } => (user, PRESENCE),
            Change::Routing { user, .. } => (user, ROUTING),
            Change::Conversations { user, .. } => (user, SUMMARY),
            Change::QueueMembership { queue, .. } => {
                let queue = queue.to_ascii_lowercase();
                return self
                    .channels
                    .iter()
                    .filter(|c| c.queue_interest.contains(&queue))
                    .filter_map(|c| c.socket)
                    .collect();
            }
        };
        let user = user.to_ascii_lowercase();
        self.channels
            .iter()
            .filter(|c| c.interest.get(&user).is_some_and(|bits| bits & bit != 0))
            .filter_map(|c| c.socket)
            .collect()
    }

    /// Replaces the members of queue `q` (ids lowercased, duplicates dropped, order kept) and
    /// emits `joined: false` for each member gone, then `joined: true` for each new one.
    pub fn set_queue_members(&mut self, q: usize, users: Vec<String>) {
        let mut members: Vec<String> = Vec::with_capacity(users.len());
        for user in users {
            let user = user.trim().to_ascii_lowercase();
            if !members.contains(&user) {
                members.push(user);
            }
        }
        let queue = self.queues[q].id.clone();
        let old = std::mem::replace(&mut self.queues[q].members, members);
        let new = &self.queues[q].members;
        let mut changes: Vec<Change> = old
            .iter()
            .filter(|u| !new.contains(u))
            .map(|u| Change::QueueMembership {
                queue: queue.clone(),
                user: u.clone(),
                joined: false,
            })
            .collect();
        changes.extend(
            new.iter()
                .filter(|u| !old.contains(u))
                .map(|u| Change::QueueMembership {
                    queue: queue.clone(),
                    user: u.clone(),
                    joined: true,
                }),
        );
        self.emit_all(changes);
    }

    /// `expires` of a channel as served (RFC 3339 UTC, milliseconds).
    pub fn channel_expires(&self, i: usize) -> String {
        format_timestamp(self.channels[i].expires)
    }
}

/// Spawns the core task. It stops when `shutdown` flips to `true` or its sender is dropped,
/// closing every socket on the way out.
pub fn spawn(
    cfg: SimConfig,
    ws_base: String,
    mut shutdown: watch::Receiver<bool>,
) -> (CoreHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Job>(1024);
    let handle = CoreHandle { tx };
    let join = tokio::spawn(async move {
        let mut core = Core::new(cfg, ws_base);
        loop {
            let next = core.timers.peek().map(|Reverse((at, _, _))| *at);
            let sleep = tokio::time::sleep_until(
                next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                job = rx.recv() => match job {
                    Some(job) => job(&mut core),
                    None => break,
                },
                _ = sleep => core.fire_due_timers(),
            }
        }
        core.close_all();
        tracing::debug!("simulator core stopped");
    });
    (handle, join)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_topics_parse() {
        assert_eq!(
            parse_user_topic("v2.users.ABC?presence&routingStatus&conversationsummary"),
            Some(("abc".into(), PRESENCE | ROUTING | SUMMARY))
        );
        assert_eq!(
            parse_user_topic("v2.users.abc.routingStatus"),
            Some(("abc".into(), ROUTING))
        );
        assert_eq!(
            parse_user_topic("v2.users.abc.activity"),
            Some(("abc".into(), 0))
        );
        assert_eq!(parse_user_topic("v2.users..presence"), None);
        assert_eq!(parse_user_topic("v2.routing.queues.q.users"), None);
    }
}

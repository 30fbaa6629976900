//! The connection actor: one per notification channel (at most 1,000 topics each). It owns the
//! channel and its WebSocket, keeps the socket alive, and fans user events out to the agent
//! actors.
//!
//! Protocol (reference §3, §9): create the channel (`POST /api/v2/notifications/channels`),
//! subscribe (`PUT …/subscriptions`, one combined topic per user), connect to `connectUri`. Send
//! `{"message":"ping"}` every ping interval; if nothing at all arrives for the silence timeout,
//! close and reconnect. On `v2.system.socket_closing`, connect a new socket to the same
//! `connectUri` and then drop the old one. After any other loss, `HEAD` the channel: 200 means
//! reconnect to the same `connectUri` (subscriptions belong to the channel), 404 means create a
//! new channel and subscribe again.
//!
//! Network work (REST calls, the WebSocket handshake, the read loop) runs in tasks that report
//! back by message, so the actor's mailbox never waits on the network.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::Instrument;

use crate::actors::Credit;
use crate::actors::agent::AgentMsg;
use crate::actors::supervisor::SupervisorMsg;
use crate::domain::{UserId, parse_timestamp};
use crate::genesys::{GenesysClient, GenesysError};
use crate::health::{ConnectionStatus, RejectedTopic};
use crate::metrics;
use crate::notification::{Frame, parse_frame_at};
use crate::presence::PresenceCatalog;
use crate::protocol::{Channel, PING_FRAME, user_topic};

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Messages of the connection actor.
pub enum ConnectionMsg {
    /// (Re)establish the channel and socket: reuse the channel if it still exists.
    Establish,
    /// Internal: a channel is subscribed and a socket is open.
    Established(Box<Established>),
    /// Internal: establishing failed; `fatal` for `invalid_client`.
    EstablishFailed { error: String, fatal: bool },
    /// Internal: a user event read from the socket, with its back-pressure credit.
    Event(Frame, Option<Credit>),
    /// Internal: the socket of `generation` ended.
    SocketEnded { generation: u64, end: SocketEnd },
    /// Internal: `v2.system.socket_closing` arrived on the socket of `generation`.
    SocketClosing { generation: u64 },
    /// An agent actor was restarted: route this user's events to the new one.
    AgentRestarted(UserId, ActorRef<AgentMsg>),
    /// Internal: the channel of `channel_id` nears its expiry: replace it (make before break).
    Rollover { channel_id: String },
    /// The monitored users of this channel changed (membership re-listing, queue joins and
    /// leaves): route to `agents` from now on and replace the channel's subscriptions by the
    /// new topic list (`PUT …/subscriptions`), then tell the supervisor (`Resubscribed`).
    SetUsers {
        users: Vec<UserId>,
        agents: HashMap<UserId, ActorRef<AgentMsg>>,
        extra_topics: Vec<String>,
    },
    /// Internal: a subscription change finished (`Ok` holds the rejected topics).
    Resubscribed {
        channel_id: String,
        topics: Vec<String>,
        result: Result<Vec<RejectedTopic>, String>,
    },
    /// Internal: retry a failed subscription change.
    Resubscribe,
    /// The presence definitions were refreshed: label events with this catalog from now on.
    Catalog(Arc<PresenceCatalog>),
    /// This connection's status for `/readyz`.
    Status(RpcReplyPort<ConnectionStatus>),
    /// Close the socket with a normal closure (1000) and stop reconnecting; replies when closed.
    Close(RpcReplyPort<()>),
}

/// Why a socket ended: a short bounded `label` (the `reason` label of the reconnect metric) and
/// a human `detail` for the log.
#[derive(Debug, Clone)]
pub struct SocketEnd {
    /// `silence`, `closed`, `error`, `no_longer_subscribed`, `token_revoked`, `channel_gone`,
    /// `stopped`.
    pub label: &'static str,
    pub detail: String,
}

impl SocketEnd {
    /// The channel itself is gone (or lost its subscriptions): create a new one.
    fn channel_lost(&self) -> bool {
        matches!(self.label, "no_longer_subscribed" | "channel_gone")
    }
}

/// How to (re)establish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// After a loss (or at start): reuse the channel if `HEAD` says it exists, else create one.
    Reconnect,
    /// `socket_closing`: a new socket to the same `connectUri`, no resubscribe.
    SameChannel,
    /// Rollover before expiry: always a new channel, subscribed, then connected.
    NewChannel,
}

/// A subscribed channel with an open socket.
pub struct Established {
    channel: Channel,
    socket: WsStream,
    mode: Mode,
    /// True when the channel was created (and subscribed) by this establish.
    new_channel: bool,
    /// The topics subscribed (when `new_channel`) and those Genesys rejected.
    topics: Vec<String>,
    rejected: Vec<RejectedTopic>,
}

/// Start-up arguments.
#[derive(Clone)]
pub struct ConnectionArgs {
    /// Position among the connection actors (`connection-<index>`).
    pub index: usize,
    pub client: GenesysClient,
    /// The users whose topics this channel carries (at most 1,000 topics with `extra_topics`).
    pub users: Vec<UserId>,
    /// Topics besides the per-user ones (the queue-membership topics
    /// `v2.routing.queues.<id>.users` of `GENESYS_QUEUE_IDS`, on one channel).
    pub extra_topics: Vec<String>,
    /// Where each user's events go.
    pub agents: HashMap<UserId, ActorRef<AgentMsg>>,
    pub catalog: Arc<PresenceCatalog>,
    /// Back-pressure: one permit per transition in flight to the database.
    pub credits: Arc<Semaphore>,
    pub ping_interval: Duration,
    pub silence_timeout: Duration,
    pub supervisor: ActorRef<SupervisorMsg>,
    /// Genesys time, for the future-timestamp check, conversation observations and the
    /// rollover schedule (`expires` is Genesys time).
    pub clock: crate::clock::Clock,
}

/// Counters the socket task updates and the actor reads for `/readyz`.
#[derive(Debug, Default)]
pub struct SocketStats {
    /// Unix milliseconds of the last message of any kind; 0 before the first.
    last_message_ms: AtomicI64,
    /// Frames that could not be used.
    malformed: AtomicU64,
    /// User events forwarded.
    events: AtomicU64,
    /// Genesys timestamp (Unix milliseconds) of the newest presence or routing event read; 0
    /// before the first. Frames queued behind it at Genesys (or held back by our own
    /// back-pressure) are newer, so a gap starts no later than this.
    last_event_ms: AtomicI64,
}

/// The connection actor.
pub struct ConnectionActor;

/// What the connection actor owns.
pub struct ConnectionState {
    args: ConnectionArgs,
    topics: Vec<String>,
    channel: Option<Channel>,
    expires: Option<DateTime<Utc>>,
    generation: u64,
    connected: bool,
    subscribed: bool,
    establishing: bool,
    closing: bool,
    ever_connected: bool,
    reconnects: u32,
    failures: u32,
    stop_socket: Option<oneshot::Sender<()>>,
    /// Who asked for a graceful close; answered when the socket has ended.
    close_reply: Option<RpcReplyPort<()>>,
    stats: Arc<SocketStats>,
    unknown_users: u64,
    /// The topics the channel is subscribed to (what Genesys last accepted a PUT of).
    subscribed_topics: Vec<String>,
    /// A subscription change is in flight.
    resubscribing: bool,
    rejected: Vec<RejectedTopic>,
    /// Rejected topics already logged (each is logged once).
    logged_rejections: std::collections::HashSet<String>,
    rollover_at: Option<DateTime<Utc>>,
    channel_replacements: u32,
    /// The stream of this channel is incomplete from this instant (local UTC: the last message
    /// of a socket that was lost) until a socket is open again; reported to the supervisor,
    /// which backfills the gap.
    gap_from: Option<DateTime<Utc>>,
    /// A channel was lost (404, `no_longer_subscribed`): the next new channel replaces it.
    channel_lost: bool,
    /// Presence definition ids reported unknown to the supervisor (once each per catalog).
    unknown_definitions: std::collections::HashSet<String>,
}

/// The topics of a channel: one combined topic per user, then the extra topics.
fn topics_for(users: &[UserId], extra: &[String]) -> Vec<String> {
    users
        .iter()
        .map(|u| user_topic(u.as_str()))
        .chain(extra.iter().cloned())
        .collect()
}

/// When to replace a channel ahead of its expiry: one 24th of its remaining life before it
/// (about 23 h into a 24-hour channel, reference §3), but with at least a quarter of that life
/// or a minute, whichever is less, to spare (short-lived channels: simulator, tests), and never
/// less than one second from now.
fn rollover_delay(expires: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let left = (expires - now).to_std().unwrap_or(Duration::ZERO);
    let spare = (left / 24).max((left / 4).min(Duration::from_secs(60)));
    left.saturating_sub(spare).max(Duration::from_secs(1))
}

/// Leaves a channel we no longer use: deletes its subscriptions
/// (`DELETE /api/v2/notifications/channels/{id}/subscriptions`; there is no documented DELETE of
/// the channel itself), so it carries nothing and Genesys evicts it first (a channel without a
/// connection goes first, reference §3) or lets it expire. A failure is logged only.
fn leave_channel(client: GenesysClient, channel_id: String) {
    tokio::spawn(async move {
        match client.delete_subscriptions(&channel_id).await {
            Ok(()) => tracing::info!(%channel_id, "left the old channel (subscriptions deleted)"),
            Err(e) => {
                tracing::debug!(%channel_id, error = %e, "could not delete the old channel's subscriptions")
            }
        }
    });
}

/// The topics a subscription answer marked `Rejected`, with their reasons.
fn rejected_of(outcome: crate::genesys::SubscribeOutcome) -> Vec<RejectedTopic> {
    outcome
        .rejected
        .into_iter()
        .map(|(topic, reason)| RejectedTopic { topic, reason })
        .collect()
}

fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(1 << failures.min(7));
    let capped = base.min(Duration::from_secs(30));
    let jitter = rand::random_range(0.5..1.0);
    capped.mul_f64(jitter)
}

/// Why a channel could not be established.
#[derive(Debug, thiserror::Error)]
enum EstablishError {
    #[error(transparent)]
    Genesys(#[from] GenesysError),
    #[error("{0}")]
    Socket(String),
}

async fn establish(
    client: GenesysClient,
    channel: Option<Channel>,
    topics: Vec<String>,
    mode: Mode,
) -> Result<Established, EstablishError> {
    let reuse = match (&channel, mode) {
        (Some(_), Mode::SameChannel) => true,
        (Some(c), Mode::Reconnect) => client.channel_exists(&c.id).await?,
        _ => false,
    };
    let (channel, new_channel, rejected) = match channel {
        Some(c) if reuse => (c, false, Vec::new()),
        _ => {
            let c = client.create_channel().await?;
            let outcome = client.put_subscriptions(&c.id, &topics).await?;
            (c, true, rejected_of(outcome))
        }
    };
    let (socket, _response) = tokio_tungstenite::connect_async(channel.connect_uri.as_str())
        .await
        .map_err(|e| {
            EstablishError::Socket(format!(
                "WebSocket connect to channel {} failed: {e}",
                channel.id
            ))
        })?;
    Ok(Established {
        channel,
        socket,
        mode,
        new_channel,
        topics,
        rejected,
    })
}

impl ConnectionState {
    fn name(&self) -> String {
        format!("connection-{}", self.args.index)
    }

    fn start_establish(&mut self, myself: &ActorRef<ConnectionMsg>, mode: Mode) {
        if self.establishing || self.closing {
            return;
        }
        self.establishing = true;
        let client = self.args.client.clone();
        let channel = self.channel.clone();
        let topics = self.topics.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let msg = match establish(client, channel, topics, mode).await {
                Ok(done) => ConnectionMsg::Established(Box::new(done)),
                Err(e) => ConnectionMsg::EstablishFailed {
                    fatal: matches!(&e, EstablishError::Genesys(g) if g.is_fatal()),
                    error: e.to_string(),
                },
            };
            let _ = myself.cast(msg);
        });
    }

    /// Tracks the connected flag and the channel/topic gauges together.
    fn set_connected(&mut self, connected: bool) {
        if self.connected != connected {
            metrics::channel_connected(connected, self.topics.len());
        }
        self.connected = connected;
    }

    fn status(&self) -> ConnectionStatus {
        let last = self.stats.last_message_ms.load(Ordering::Relaxed);
        ConnectionStatus {
            name: self.name(),
            channel_id: self.channel.as_ref().map(|c| c.id.clone()),
            connected: self.connected,
            subscribed: self.subscribed,
            topics: self.topics.len(),
            last_message_age_seconds: (last > 0)
                .then(|| (Utc::now().timestamp_millis() - last).max(0) as f64 / 1000.0),
            reconnects: self.reconnects,
            events: self.stats.events.load(Ordering::Relaxed),
            malformed_messages: self.stats.malformed.load(Ordering::Relaxed),
            unknown_user_events: self.unknown_users,
            expires: self.expires,
            rollover_at: self.rollover_at,
            rejected_topics: self.rejected.clone(),
            channel_replacements: self.channel_replacements,
        }
    }

    /// Keeps the rejected topics for `/readyz` and logs each newly rejected one once.
    fn set_rejected(&mut self, rejected: Vec<RejectedTopic>) {
        for r in &rejected {
            if self.logged_rejections.insert(r.topic.clone()) {
                tracing::warn!(connection = %self.name(), topic = %r.topic, reason = %r.reason,
                    "topic rejected by Genesys; the other topics keep working");
            }
        }
        self.rejected = rejected;
    }

    /// Replaces the channel's subscriptions by the current topic list, in a task, unless one
    /// change is already in flight or the channel is not established yet (establishing
    /// subscribes the current list, and `Established` catches up with changes made meanwhile).
    fn start_resubscribe(&mut self, myself: &ActorRef<ConnectionMsg>) {
        if self.resubscribing || self.establishing || self.closing || !self.subscribed {
            return;
        }
        let Some(channel) = &self.channel else {
            return;
        };
        if self.subscribed_topics == self.topics {
            return;
        }
        self.resubscribing = true;
        let client = self.args.client.clone();
        let channel_id = channel.id.clone();
        let topics = self.topics.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = client
                .put_subscriptions(&channel_id, &topics)
                .await
                .map(rejected_of)
                .map_err(|e| e.to_string());
            let _ = myself.cast(ConnectionMsg::Resubscribed {
                channel_id,
                topics,
                result,
            });
        });
    }

    fn route(&mut self, frame: Frame, credit: Option<Credit>) {
        let (user, msg) = match frame {
            Frame::Presence(user, mut update) => {
                if let Some(id) = update.definition_id.as_deref() {
                    if !self.args.catalog.knows(id)
                        && self.unknown_definitions.insert(id.to_string())
                    {
                        let _ = self
                            .args
                            .supervisor
                            .cast(SupervisorMsg::UnknownDefinition(id.to_string()));
                    }
                }
                update.label = Some(
                    self.args
                        .catalog
                        .label(update.definition_id.as_deref(), &update.system),
                );
                let msg =
                    AgentMsg::Presence(Box::new(update), crate::domain::Source::Stream, credit);
                (user, msg)
            }
            Frame::Routing(user, update) => (
                user,
                AgentMsg::Routing(update, crate::domain::Source::Stream, credit),
            ),
            Frame::Conversations(user, active) => (
                user,
                AgentMsg::Conversations {
                    active,
                    observed_at: self.args.clock.now(),
                },
            ),
            Frame::QueueMembership {
                queue_id,
                user,
                joined,
            } => {
                self.stats.events.fetch_add(1, Ordering::Relaxed);
                let _ = self.args.supervisor.cast(SupervisorMsg::QueueMember {
                    queue_id,
                    user,
                    joined,
                });
                return;
            }
            _ => return,
        };
        match self.args.agents.get(&user) {
            Some(agent) => {
                self.stats.events.fetch_add(1, Ordering::Relaxed);
                let _ = agent.cast(msg);
            }
            None => {
                self.unknown_users += 1;
                metrics::unknown_user_event();
                tracing::debug!(user_id = %user, "event for a user outside the monitored set dropped");
            }
        }
    }
}

/// The read loop of one socket. Ends (and reports why) on close, error, silence, a channel-gone
/// notice, or a stop request (which sends a normal closure first).
#[allow(clippy::too_many_arguments)]
async fn run_socket(
    socket: WsStream,
    generation: u64,
    myself: ActorRef<ConnectionMsg>,
    credits: Arc<Semaphore>,
    stats: Arc<SocketStats>,
    ping_interval: Duration,
    silence_timeout: Duration,
    clock: crate::clock::Clock,
    mut stop: oneshot::Receiver<()>,
) {
    let (mut tx, mut rx) = socket.split();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    let mut last_rx = tokio::time::Instant::now();
    let ended = |label: &'static str, detail: String| SocketEnd { label, detail };
    let end: SocketEnd = loop {
        tokio::select! {
            _ = &mut stop => {
                let frame = CloseFrame { code: CloseCode::Normal, reason: "agent-monitor stopping".into() };
                let _ = tx.send(Message::Close(Some(frame))).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = rx.next().await {}
                }).await;
                break ended("stopped", "closed by agent-monitor".into());
            }
            _ = ping.tick() => {
                if let Err(e) = tx.send(Message::Text(PING_FRAME.into())).await {
                    break ended("error", format!("ping failed: {e}"));
                }
            }
            _ = tokio::time::sleep_until(last_rx + silence_timeout) => {
                break ended("silence", format!("nothing received for {}s", silence_timeout.as_secs_f64()));
            }
            next = rx.next() => {
                let message = match next {
                    None => break ended("closed", "socket closed".into()),
                    Some(Err(e)) => break ended("error", format!("socket error: {e}")),
                    Some(Ok(message)) => message,
                };
                last_rx = tokio::time::Instant::now();
                // One read of the wall clock per frame: its receipt, also the "now" of the
                // future-timestamp check.
                let received = Utc::now();
                stats.last_message_ms.store(received.timestamp_millis(), Ordering::Relaxed);
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(frame) => break ended("closed", format!("closed by Genesys: {frame:?}")),
                    Message::Binary(_) => {
                        stats.malformed.fetch_add(1, Ordering::Relaxed);
                        metrics::malformed();
                        tracing::warn!(generation, "binary frame skipped");
                        continue;
                    }
                    _ => continue,
                };
                let frame = match parse_frame_at(text.as_str(), clock.at(received)) {
                    Ok(frame) => frame,
                    Err(e) => {
                        stats.malformed.fetch_add(1, Ordering::Relaxed);
                        metrics::malformed();
                        tracing::warn!(generation, error = %e, "malformed notification skipped");
                        continue;
                    }
                };
                metrics::notification(frame.kind());
                match frame {
                    Frame::Heartbeat | Frame::Pong => {}
                    Frame::SocketClosing(_) => {
                        tracing::info!(generation, "socket_closing: opening a new socket");
                        let _ = myself.cast(ConnectionMsg::SocketClosing { generation });
                    }
                    Frame::NoLongerSubscribed(body) => {
                        break ended(
                            "no_longer_subscribed",
                            format!("v2.system.no_longer_subscribed ({})", body.reason.unwrap_or_default()),
                        );
                    }
                    Frame::TokenRevoked(_) => break ended("token_revoked", "v2.system.token_revoked".into()),
                    Frame::ChannelGone => break ended("channel_gone", "channel gone ({\"result\":\"404\"})".into()),
                    Frame::Other(topic) => tracing::debug!(topic, "unhandled topic"),
                    frame @ (Frame::Presence(..) | Frame::Routing(..)) => {
                        let at = match &frame {
                            Frame::Presence(_, p) => p.timestamp,
                            Frame::Routing(_, r) => r.timestamp,
                            _ => unreachable!("matched above"),
                        };
                        stats.last_event_ms.fetch_max(at.timestamp_millis(), Ordering::Relaxed);
                        // Back-pressure: wait for room in the write pipeline before reading on.
                        let permit = tokio::select! {
                            permit = credits.clone().acquire_owned() => permit.ok().map(Credit::new),
                            _ = &mut stop => break ended("stopped", "closed by agent-monitor".into()),
                        };
                        if myself.cast(ConnectionMsg::Event(frame, permit)).is_err() {
                            break ended("stopped", "connection actor gone".into());
                        }
                    }
                    frame @ (Frame::Conversations(..) | Frame::QueueMembership { .. }) => {
                        if myself.cast(ConnectionMsg::Event(frame, None)).is_err() {
                            break ended("stopped", "connection actor gone".into());
                        }
                    }
                }
            }
        }
    };
    let _ = myself.cast(ConnectionMsg::SocketEnded { generation, end });
}

impl Actor for ConnectionActor {
    type Msg = ConnectionMsg;
    type State = ConnectionState;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ConnectionMsg>,
        args: ConnectionArgs,
    ) -> Result<ConnectionState, ActorProcessingErr> {
        let topics = topics_for(&args.users, &args.extra_topics);
        Ok(ConnectionState {
            args,
            topics,
            channel: None,
            expires: None,
            generation: 0,
            connected: false,
            subscribed: false,
            establishing: false,
            closing: false,
            ever_connected: false,
            reconnects: 0,
            failures: 0,
            stop_socket: None,
            close_reply: None,
            stats: Arc::new(SocketStats::default()),
            unknown_users: 0,
            subscribed_topics: Vec::new(),
            resubscribing: false,
            rejected: Vec::new(),
            logged_rejections: Default::default(),
            rollover_at: None,
            channel_replacements: 0,
            gap_from: None,
            channel_lost: false,
            unknown_definitions: Default::default(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<ConnectionMsg>,
        state: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        state.start_establish(&myself, Mode::Reconnect);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ConnectionMsg>,
        message: ConnectionMsg,
        state: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        let span = tracing::info_span!(
            "connection",
            connection = state.args.index,
            channel_id = tracing::field::Empty
        );
        if let Some(channel) = &state.channel {
            span.record("channel_id", channel.id.as_str());
        }
        // A span per message (user or channel id on every line), kept light: no allocation
        // beyond the span itself.
        async move {
        match message {
            ConnectionMsg::Establish => state.start_establish(&myself, Mode::Reconnect),
            ConnectionMsg::Established(done) => {
                let Established {
                    channel,
                    socket,
                    mode,
                    new_channel,
                    topics,
                    rejected,
                } = *done;
                state.establishing = false;
                if state.closing {
                    let mut socket = socket;
                    let _ = socket.close(None).await;
                    if new_channel {
                        leave_channel(state.args.client.clone(), channel.id.clone());
                    }
                    return Ok(());
                }
                state.failures = 0;
                let previous = state.channel.take();
                if new_channel {
                    tracing::info!(connection = %state.name(), channel_id = %channel.id, topics = topics.len(), ?mode, "channel created and subscribed");
                    if let Some(old) = previous.filter(|old| old.id != channel.id) {
                        // The socket on the old channel is dropped below (make before break);
                        // then leave the old channel so it holds nothing.
                        leave_channel(state.args.client.clone(), old.id);
                        state.channel_replacements += 1;
                    } else if state.channel_lost {
                        state.channel_replacements += 1;
                    }
                    state.channel_lost = false;
                    state.subscribed_topics = topics;
                    state.set_rejected(rejected);
                    let now = state.args.clock.now();
                    state.expires = channel
                        .expires
                        .as_deref()
                        .and_then(|e| parse_timestamp(e).ok());
                    state.rollover_at = None;
                    if let Some(expires) = state.expires {
                        let delay = rollover_delay(expires, now);
                        state.rollover_at = chrono::TimeDelta::from_std(delay).ok().map(|d| now + d);
                        let channel_id = channel.id.clone();
                        myself.send_after(delay, move || ConnectionMsg::Rollover { channel_id });
                    }

                }
                state.channel = Some(channel);
                state.subscribed = true;
                state.set_connected(true);
                state.generation += 1;
                // Make before break: the new socket is open, now drop the old one.
                if let Some(old) = state.stop_socket.take() {
                    let _ = old.send(());
                }
                let (stop_tx, stop_rx) = oneshot::channel();
                state.stop_socket = Some(stop_tx);
                state
                    .stats
                    .last_message_ms
                    .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
                let reader = tokio::spawn(run_socket(
                    socket,
                    state.generation,
                    myself.clone(),
                    state.args.credits.clone(),
                    state.stats.clone(),
                    state.args.ping_interval,
                    state.args.silence_timeout,
                    state.args.clock.clone(),
                    stop_rx,
                ));
                // Watch the read task: if it ever panics, its socket is gone and must be
                // replaced like any other lost socket (a dead reader must not look connected).
                let watcher = myself.clone();
                let generation = state.generation;
                tokio::spawn(async move {
                    if let Err(e) = reader.await {
                        if e.is_panic() {
                            tracing::error!(generation, "socket reader panicked; reconnecting");
                            let _ = watcher.cast(ConnectionMsg::SocketEnded {
                                generation,
                                end: SocketEnd {
                                    label: "error",
                                    detail: "socket reader panicked".into(),
                                },
                            });
                        }
                    }
                });
                let gap_from = state.gap_from.take();
                let reconnected = state.ever_connected && gap_from.is_some();
                state.ever_connected = true;
                let cause = match (mode, new_channel) {
                    (Mode::SameChannel, _) => "socket_closing",
                    (_, true) => "channel_replaced",
                    (_, false) => "reconnect",
                };
                let _ = state.args.supervisor.cast(SupervisorMsg::ConnectionUp {
                    index: state.args.index,
                    reconnected,
                    gap_from,
                    cause,
                });
                // Users changed while the channel was being established.
                state.start_resubscribe(&myself);
            }
            ConnectionMsg::EstablishFailed { error, fatal } => {
                state.establishing = false;
                if fatal {
                    let _ = state.args.supervisor.cast(SupervisorMsg::Fatal(error));
                    return Ok(());
                }
                state.failures += 1;
                let delay = backoff(state.failures);
                tracing::warn!(connection = %state.name(), %error, retry_in_ms = delay.as_millis() as u64, "could not establish the channel");
                myself.send_after(delay, || ConnectionMsg::Establish);
            }
            ConnectionMsg::Event(frame, credit) => state.route(frame, credit),
            ConnectionMsg::SocketEnded { generation, end } => {
                if generation != state.generation {
                    return Ok(()); // an old socket we already replaced
                }
                state.set_connected(false);
                state.stop_socket = None;
                if state.closing {
                    if let Some(reply) = state.close_reply.take() {
                        let _ = reply.send(());
                    }
                    return Ok(());
                }
                state.reconnects += 1;
                metrics::reconnect(end.label);
                let _ = state.args.supervisor.cast(SupervisorMsg::ConnectionDown {
                    index: state.args.index,
                });
                tracing::warn!(connection = %state.name(), reason = end.label, detail = %end.detail, "socket ended; reconnecting");
                // The stream was complete up to the last message this socket read.
                let last = state.stats.last_message_ms.load(Ordering::Relaxed);
                let mut last = DateTime::from_timestamp_millis(last).unwrap_or_else(Utc::now);
                // Events can wait in the socket long after Genesys stamped them (its queue, our
                // back-pressure): the gap starts no later than the newest event read, in local
                // time.
                let event = state.stats.last_event_ms.load(Ordering::Relaxed);
                if let Some(event) = DateTime::from_timestamp_millis(event).filter(|_| event > 0) {
                    last = last.min(event - state.args.clock.offset());
                }
                state.gap_from = Some(state.gap_from.map_or(last, |g| g.min(last)));
                if end.channel_lost() {
                    state.channel = None;
                    state.subscribed = false;
                    state.channel_lost = true;
                    state.subscribed_topics.clear();
                }
                state.start_establish(&myself, Mode::Reconnect);
            }
            ConnectionMsg::SocketClosing { generation } => {
                if generation == state.generation {
                    // Frames still queued on the old socket when Genesys closes it (or when
                    // the new socket kicks it) are lost: from now until the new socket is
                    // open is a (short) gap to backfill.
                    let now = Utc::now();
                    state.gap_from = Some(state.gap_from.map_or(now, |g| g.min(now)));
                    state.start_establish(&myself, Mode::SameChannel);
                }
            }
            ConnectionMsg::Rollover { channel_id } => {
                let current = state.channel.as_ref().is_some_and(|c| c.id == channel_id);
                if !current || state.closing {
                    return Ok(()); // replaced meanwhile
                }
                if state.establishing {
                    myself.send_after(Duration::from_secs(1), move || ConnectionMsg::Rollover { channel_id });
                    return Ok(());
                }
                // Backfilled from here once the new channel is up, in case anything fell
                // between the two sockets.
                let now = Utc::now();
                state.gap_from = Some(state.gap_from.map_or(now, |g| g.min(now)));
                tracing::info!(connection = %state.name(), %channel_id, expires = ?state.expires, "channel nears expiry: replacing it");
                state.start_establish(&myself, Mode::NewChannel);
            }
            ConnectionMsg::SetUsers {
                users,
                agents,
                extra_topics,
            } => {
                state.args.users = users;
                state.args.agents = agents;
                state.args.extra_topics = extra_topics;
                let topics = topics_for(&state.args.users, &state.args.extra_topics);
                if topics.len() != state.topics.len() {
                    metrics::channel_topics_changed(state.connected, state.topics.len(), topics.len());
                }
                state.topics = topics;
                state.start_resubscribe(&myself);
            }
            ConnectionMsg::Resubscribed {
                channel_id,
                topics,
                result,
            } => {
                state.resubscribing = false;
                let current = state.channel.as_ref().is_some_and(|c| c.id == channel_id);
                match result {
                    Ok(rejected) if current => {
                        tracing::info!(connection = %state.name(), topics = topics.len(), "subscriptions replaced");
                        state.subscribed_topics = topics;
                        state.set_rejected(rejected);
                        let _ = state.args.supervisor.cast(SupervisorMsg::Resubscribed {
                            index: state.args.index,
                        });
                        state.start_resubscribe(&myself);
                    }
                    Ok(_) => {} // that channel was replaced; the new one has the new list
                    Err(error) => {
                        state.failures += 1;
                        let delay = backoff(state.failures);
                        tracing::warn!(connection = %state.name(), %error, retry_in_ms = delay.as_millis() as u64, "could not change the subscriptions");
                        myself.send_after(delay, || ConnectionMsg::Resubscribe);
                    }
                }
            }
            ConnectionMsg::Resubscribe => state.start_resubscribe(&myself),
            ConnectionMsg::Catalog(catalog) => {
                state.args.catalog = catalog;
                state.unknown_definitions.clear();
            }
            ConnectionMsg::AgentRestarted(user, agent) => {
                state.args.agents.insert(user, agent);
            }
            ConnectionMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            ConnectionMsg::Close(reply) => {
                state.closing = true;
                state.set_connected(false);
                match state.stop_socket.take() {
                    Some(stop) => {
                        let _ = stop.send(());
                        state.close_reply = Some(reply);
                    }
                    None => {
                        let _ = reply.send(());
                    }
                }
            }
        }
        Ok(())
        }
        .instrument(span)
        .await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConnectionMsg>,
        state: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(stop) = state.stop_socket.take() {
            let _ = stop.send(());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn rollover_comes_an_hour_before_a_day_long_expiry_and_early_enough_for_short_ones() {
        let now = at("2024-05-01T10:00:00Z");
        let day = rollover_delay(now + chrono::TimeDelta::hours(24), now);
        assert_eq!(day, Duration::from_secs(23 * 3600));
        let short = rollover_delay(now + chrono::TimeDelta::seconds(12), now);
        assert_eq!(short, Duration::from_secs(9));
        let past = rollover_delay(now - chrono::TimeDelta::seconds(5), now);
        assert_eq!(past, Duration::from_secs(1));
    }

    #[test]
    fn topics_are_one_combined_topic_per_user_then_the_extra_ones() {
        let users = vec![UserId::parse("U1").unwrap()];
        let topics = topics_for(&users, &["v2.routing.queues.q1.users".to_string()]);
        assert_eq!(
            topics,
            vec![
                "v2.users.u1?presence&routingStatus&conversationsummary".to_string(),
                "v2.routing.queues.q1.users".to_string()
            ]
        );
    }
}

#![warn(missing_docs)]
//! The Slack actor: delivers alerts to every configured destination (Slack incoming webhooks
//! and generic JSON webhooks) and reports each alert's outcome to the persistence actor as
//! `PersistMsg::AlertOutcome` (and `PersistMsg::DeadLetter` when it fails for good).
//!
//! Model: `shared/alerting.md` §4.8–4.12.
//!
//! - **One queue per destination**, each paced by its own token bucket (burst 3, then one
//!   message per second). A destination's queue is serial: one POST in flight at a time.
//! - **Nothing blocks the handler**: a POST runs in a spawned task that reports back with
//!   [`SlackMsg::Sent`]; pacing waits, 429 pauses and retry backoffs are `send_after` timers
//!   ([`SlackMsg::Wake`]). So `/readyz` status requests and other destinations never wait.
//! - **Grouping**: alerts of the same rule and destination (and the same kind, firing or
//!   resolved) arriving within `group_wait` share one message ([`SlackMsg::GroupDue`]); every
//!   alert still gets its own outcome.
//! - **Retries**: 429 pauses the destination for `Retry-After` (the message stays at the head);
//!   5xx, timeouts and connection errors back off exponentially with jitter, bounded by
//!   `max_attempts` and `max_retry_time`. Before every send the head message is checked: a
//!   firing alert whose episode has ended ([`SlackMsg::EpisodeEnded`], or a resolved alert of the
//!   same episode received) is dropped (`DeliveryStatus::Dropped`); the resolved message, if
//!   any, is delivered in its place.
//! - **Permanent errors**, by Slack's body string first: payload errors get one text-only retry,
//!   then a dead letter; destination errors (`channel_is_archived`, `no_service`, …) disable the
//!   destination, dead-letter its backlog and show in `/readyz`; other refusals dead-letter the
//!   message.
//! - **Silences and quiet hours**: an alert with `muted` set, or matching an active silence
//!   (read from the database, cached for `silence_cache`), is recorded `suppressed`, not sent.
//!   A silence created while messages it matches wait (group, queue, retry; firing and
//!   resolved) is sent here as [`SlackMsg::Silenced`]: those messages are dropped and recorded
//!   `suppressed` the same way, and a message that was in flight is checked again before any
//!   retry.
//! - **Repeats coalesce**: a firing alert of an episode that already has a firing message
//!   waiting (grouped or queued, not in flight) takes that message's place; the older one is
//!   recorded `dropped` (`superseded by a newer message of this episode`). However short the
//!   repeat interval and however long the destination is paused, an episode has at most one
//!   firing message waiting per destination.
//!
//! Webhook URLs are credentials: never logged, never in outcomes or dead letters.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::Rng;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::actors::persistence::PersistMsg;
use crate::config::{DEFAULT_DESTINATION, DeliveryConfig, DestinationKind};
use crate::domain::{Alert, AlertKind, AlertOutcome, DeadLetter, DeliveryStatus, Silence};
use crate::health::DestinationStatus;
use crate::slack::{Answer, Endpoint, group_message, group_text_only, webhook_body};

/// Messages of the Slack actor.
// `Alert(Alert)` is the agent actors' contract; boxing it would change every sender.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum SlackMsg {
    /// Deliver one alert; the outcome goes to the persistence actor as `PersistMsg::AlertOutcome`.
    Alert(Alert),
    /// An episode ended: a firing message of it still waiting (grouping, pacing or a retry) no
    /// longer matters and is dropped.
    EpisodeEnded {
        /// `<rule>:<user_id>:<episode start in ms>`.
        episode_key: String,
    },
    /// A silence was just created (`POST /api/v1/silences`): alerts it matches that are still
    /// waiting (grouped, queued or due for a retry; firing and resolved) are dropped and
    /// recorded `suppressed` (`silenced: <comment>`), and the silence applies to new alerts at
    /// once.
    Silenced(Silence),
    /// The status of every destination, for `/readyz`.
    Status(ractor::RpcReplyPort<Vec<DestinationStatus>>),
    /// Internal: the `group_wait` of a group is over: queue its message.
    GroupDue {
        /// Destination name.
        destination: String,
        /// Group id.
        group: u64,
    },
    /// Internal: look at a destination's queue again (pacing, a pause or a backoff is over).
    Wake {
        /// Destination name.
        destination: String,
    },
    /// Internal: the POST of a destination's in-flight message finished.
    Sent {
        /// Destination name.
        destination: String,
        /// How it ended.
        answer: Answer,
    },
}

/// The Slack actor (ractor). Spawn it with [`SlackArgs`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SlackActor;

/// Arguments of [`SlackActor`].
#[derive(Debug, Clone)]
pub struct SlackArgs {
    /// Destinations (none: alerts are only logged, outcome `not_configured`), pacing, retries,
    /// grouping.
    pub config: DeliveryConfig,
    /// Where outcomes and dead letters go.
    pub persistence: ActorRef<PersistMsg>,
    /// Where active silences are read (`db::alerting::active_silences`); `None`: no silences.
    pub db: Option<sea_orm::DatabaseConnection>,
}

/// State of [`SlackActor`].
pub struct SlackState {
    config: DeliveryConfig,
    report: Reporter,
    db: Option<sea_orm::DatabaseConnection>,
    destinations: BTreeMap<String, Destination>,
    /// Episodes known to have ended, with when we learnt it (pruned after an hour).
    ended: HashMap<String, Instant>,
    /// Episodes with a delivered firing message, with when (pruned after a day): a resolved
    /// message goes out only for these (or in place of a firing still waiting).
    fired_delivered: HashMap<String, Instant>,
    /// Active silences and when they were read.
    silences: Option<(Instant, Vec<Silence>)>,
    next_group: u64,
}

/// One destination's queue and health.
impl Destination {
    /// Whether a firing message of `episode_key` is still waiting here (group, queue, in flight).
    /// The groups and queue are scanned only if [`Destination::maybe_firing`] names the episode.
    fn has_firing(&self, episode_key: &str) -> bool {
        let firing =
            |a: &Alert| a.episode_key == episode_key && matches!(a.kind, AlertKind::Firing { .. });
        (self.maybe_firing.contains(episode_key)
            && (self.groups.iter().any(|g| g.alerts.iter().any(firing))
                || self.queue.iter().any(|m| m.alerts.iter().any(firing))))
            || self
                .in_flight
                .as_ref()
                .is_some_and(|m| m.alerts.iter().any(firing))
    }
}

struct Destination {
    name: String,
    kind: DestinationKind,
    endpoint: Endpoint,
    enabled: bool,
    disabled_reason: Option<String>,
    /// Groups still inside their `group_wait`.
    groups: Vec<Group>,
    queue: VecDeque<Message>,
    /// Episode keys that may have a firing alert waiting in `groups` or `queue`: a superset
    /// (every firing alert queued adds its key; a scan that finds none removes it; see
    /// [`Destination::prune_maybe_firing`]). It lets each new alert skip the scan of everything
    /// waiting, which made a burst of N alerts cost N² comparisons once a backlog formed
    /// (`BENCHMARKS.md`, figure 3).
    maybe_firing: HashSet<String>,
    /// Size of `maybe_firing` at its last rebuild.
    maybe_firing_rebuilt: usize,
    in_flight: Option<Message>,
    pacer: Pacer,
    /// Paused by a 429 until then.
    paused_until: Option<(Instant, DateTime<Utc>)>,
    /// A `Wake` is scheduled for then.
    wake_at: Option<Instant>,
    delivered: u64,
    failed: u64,
}

struct Group {
    id: u64,
    rule: String,
    resolved: bool,
    alerts: Vec<Alert>,
}

/// One message of a destination: one alert, or a group of one rule.
struct Message {
    alerts: Vec<Alert>,
    /// Slack refused the blocks once: send the text only.
    text_only: bool,
    /// HTTP requests made.
    attempts: u32,
    /// 5xx / transport failures so far.
    failures: u32,
    first_attempt: Option<(Instant, DateTime<Utc>)>,
    not_before: Option<Instant>,
    /// The last payload sent (for the dead letter's hash).
    payload: Option<Value>,
}

impl Message {
    fn new(alerts: Vec<Alert>) -> Self {
        Message {
            alerts,
            text_only: false,
            attempts: 0,
            failures: 0,
            first_attempt: None,
            not_before: None,
            payload: None,
        }
    }
}

/// Sends outcomes and dead letters to the persistence actor.
struct Reporter {
    persistence: ActorRef<PersistMsg>,
}

impl Reporter {
    fn outcome(&self, alert: &Alert, status: DeliveryStatus, error: Option<String>, attempts: u32) {
        let outcome = AlertOutcome {
            alert_key: alert.alert_key.clone(),
            status,
            error,
            attempts,
            finished_at: Utc::now(),
        };
        if let Err(e) = self.persistence.cast(PersistMsg::AlertOutcome(outcome)) {
            warn!(alert_key = %alert.alert_key, error = %e,
                  "could not report an alert outcome to the persistence actor");
        }
    }

    /// `msg` will be tried again: its alerts stay `pending`, but the attempts made so far and
    /// the last error are recorded now, so `/api/v1/alerts` shows a message being retried as
    /// such rather than as never attempted.
    fn retrying(&self, msg: &Message, error: &str) {
        for alert in &msg.alerts {
            self.outcome(
                alert,
                DeliveryStatus::Pending,
                Some(error.to_string()),
                msg.attempts,
            );
        }
    }

    /// Every alert of `msg` failed for good: `Failed` outcomes and dead letters.
    fn fail(&self, destination: &str, msg: &Message, error: &str) {
        let now = Utc::now();
        let first = msg.first_attempt.map_or(now, |(_, at)| at);
        let hash = msg.payload.as_ref().map(payload_hash).unwrap_or_default();
        for alert in &msg.alerts {
            crate::metrics::alert_failed(error);
            crate::metrics::delivery_dequeued(1);
            self.outcome(
                alert,
                DeliveryStatus::Failed,
                Some(error.to_string()),
                msg.attempts,
            );
            let letter = DeadLetter {
                alert_key: alert.alert_key.clone(),
                destination: destination.to_string(),
                error: error.to_string(),
                attempts: msg.attempts,
                first_attempt_at: first,
                last_attempt_at: now,
                payload_hash: hash.clone(),
            };
            if let Err(e) = self.persistence.cast(PersistMsg::DeadLetter(letter)) {
                warn!(alert_key = %alert.alert_key, error = %e,
                      "could not report a dead letter to the persistence actor");
            }
        }
    }
}

/// A fingerprint of a payload (std hasher, hex), to spot identical dead letters.
fn payload_hash(payload: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    payload.to_string().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

impl Actor for SlackActor {
    type Msg = SlackMsg;
    type State = SlackState;
    type Arguments = SlackArgs;

    /// Builds one HTTP client per destination; fails only if one cannot be built (a TLS setup
    /// problem).
    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SlackArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut destinations = BTreeMap::new();
        for d in &args.config.destinations {
            let endpoint = Endpoint::new(d.url.clone(), d.kind, args.config.timeout)?;
            info!(destination = %d.name, kind = d.kind.as_str(), "alert destination ready");
            destinations.insert(
                d.name.clone(),
                Destination {
                    name: d.name.clone(),
                    kind: d.kind,
                    endpoint,
                    enabled: true,
                    disabled_reason: None,
                    groups: Vec::new(),
                    queue: VecDeque::new(),
                    maybe_firing: HashSet::new(),
                    maybe_firing_rebuilt: 0,
                    in_flight: None,
                    pacer: Pacer::new(args.config.burst.max(1), args.config.send_interval),
                    paused_until: None,
                    wake_at: None,
                    delivered: 0,
                    failed: 0,
                },
            );
        }
        if destinations.is_empty() {
            info!("no alert destination configured: alerts are logged and stored only");
        }
        Ok(SlackState {
            config: args.config,
            report: Reporter {
                persistence: args.persistence,
            },
            db: args.db,
            destinations,
            ended: HashMap::new(),
            fired_delivered: HashMap::new(),
            silences: None,
            next_group: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SlackMsg::Alert(alert) => state.accept(&myself, alert).await,
            SlackMsg::EpisodeEnded { episode_key } => state.episode_ended(episode_key),
            SlackMsg::Silenced(silence) => state.silenced(&myself, silence),
            SlackMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            SlackMsg::GroupDue { destination, group } => {
                if let Some(dest) = state.destinations.get_mut(&destination) {
                    if let Some(i) = dest.groups.iter().position(|g| g.id == group) {
                        let group = dest.groups.remove(i);
                        dest.queue.push_back(Message::new(group.alerts));
                    }
                }
                state.pump(&myself, &destination);
            }
            SlackMsg::Wake { destination } => {
                if let Some(dest) = state.destinations.get_mut(&destination) {
                    if dest.wake_at.is_some_and(|w| w <= Instant::now()) {
                        dest.wake_at = None;
                    }
                }
                state.pump(&myself, &destination);
            }
            SlackMsg::Sent {
                destination,
                answer,
            } => {
                state.sent(&destination, answer);
                state.pump(&myself, &destination);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for dest in state.destinations.values() {
            let waiting = dest.depth();
            // The queues die with the actor: they leave the gauge too.
            crate::metrics::delivery_dequeued(waiting);
            if waiting > 0 {
                warn!(destination = %dest.name, waiting,
                      "stopping with alert messages not delivered");
            }
        }
        Ok(())
    }
}

impl Destination {
    /// The firing alert of `episode_key` waiting in a group or the queue (not in flight: that
    /// one is being sent), if any.
    fn waiting_firing_mut(&mut self, episode_key: &str) -> Option<&mut Alert> {
        if !self.maybe_firing.contains(episode_key) {
            return None;
        }
        let firing = |a: &&mut Alert| {
            a.episode_key == episode_key && matches!(a.kind, AlertKind::Firing { .. })
        };
        let in_groups = self.groups.iter_mut().flat_map(|g| g.alerts.iter_mut());
        let in_queue = self.queue.iter_mut().flat_map(|m| m.alerts.iter_mut());
        let found = in_groups.chain(in_queue).find(firing);
        if found.is_none() {
            self.maybe_firing.remove(episode_key);
        }
        found
    }

    /// Notes that a firing alert of `alert`'s episode now waits in `groups` or `queue`.
    fn firing_queued(&mut self, alert: &Alert) {
        if matches!(alert.kind, AlertKind::Firing { .. }) && !alert.episode_key.is_empty() {
            self.maybe_firing.insert(alert.episode_key.clone());
        }
    }

    /// Keeps [`Destination::maybe_firing`] bounded, in O(1) per call but for a rare rebuild:
    /// emptied when nothing waits or is in flight; rebuilt from what waits (and is in flight)
    /// once it has grown past twice its size at the last rebuild (plus 1,024), so a long
    /// backlog drops the keys of alerts since sent or dropped, at a cost spread over the alerts
    /// that grew it.
    fn prune_maybe_firing(&mut self) {
        // In flight counts as waiting here: a failed send puts the message back in the queue.
        if self.queue.is_empty() && self.groups.is_empty() && self.in_flight.is_none() {
            self.maybe_firing.clear();
            self.maybe_firing_rebuilt = 0;
            return;
        }
        if self.maybe_firing.len() <= 2 * self.maybe_firing_rebuilt + 1024 {
            return;
        }
        self.maybe_firing = self
            .groups
            .iter()
            .flat_map(|g| g.alerts.iter())
            .chain(self.queue.iter().flat_map(|m| m.alerts.iter()))
            .chain(self.in_flight.iter().flat_map(|m| m.alerts.iter()))
            .filter(|a| matches!(a.kind, AlertKind::Firing { .. }) && !a.episode_key.is_empty())
            .map(|a| a.episode_key.clone())
            .collect();
        self.maybe_firing_rebuilt = self.maybe_firing.len();
    }

    /// Alerts waiting or in flight.
    fn depth(&self) -> usize {
        self.groups.iter().map(|g| g.alerts.len()).sum::<usize>()
            + self.queue.iter().map(|m| m.alerts.len()).sum::<usize>()
            + self.in_flight.as_ref().map_or(0, |m| m.alerts.len())
    }

    /// Makes sure a `Wake` comes at or before `at`.
    fn wake(&mut self, myself: &ActorRef<SlackMsg>, at: Instant) {
        let now = Instant::now();
        if self.wake_at.is_some_and(|w| w > now && w <= at) {
            return;
        }
        self.wake_at = Some(at);
        let destination = self.name.clone();
        myself.send_after(at.saturating_duration_since(now), move || SlackMsg::Wake {
            destination,
        });
    }
}

impl SlackState {
    /// Records, suppresses or queues one alert.
    async fn accept(&mut self, myself: &ActorRef<SlackMsg>, alert: Alert) {
        if let Some(reason) = &alert.muted {
            info!(alert_key = %alert.alert_key, reason = %reason, "alert muted: recorded, not sent");
            self.report
                .outcome(&alert, DeliveryStatus::Suppressed, Some(reason.clone()), 0);
            return;
        }
        if let Some(silence) = self.silence_for(&alert).await {
            info!(alert_key = %alert.alert_key, silence = silence.id, "alert silenced: recorded, not sent");
            self.report.outcome(
                &alert,
                DeliveryStatus::Suppressed,
                Some(format!("silenced: {}", silence.comment)),
                0,
            );
            return;
        }
        if matches!(alert.kind, AlertKind::Resolved { .. }) && !alert.episode_key.is_empty() {
            let ep = alert.episode_key.clone();
            let firing_waiting = self.destinations.values().any(|d| d.has_firing(&ep));
            if !firing_waiting && self.fired_delivered.remove(&ep).is_none() {
                info!(alert_key = %alert.alert_key, "resolved message not sent: no firing message of this episode was delivered");
                self.report.outcome(
                    &alert,
                    DeliveryStatus::Dropped,
                    Some("no firing message of this episode was delivered".into()),
                    0,
                );
                return;
            }
            self.episode_ended(ep);
        }
        let name = alert
            .destination
            .clone()
            .unwrap_or_else(|| DEFAULT_DESTINATION.to_string());
        let Some(dest) = self.destinations.get_mut(&name) else {
            info!(alert_key = %alert.alert_key, destination = %name, user_id = %alert.user_id,
                  user_name = alert.user_name.as_deref().unwrap_or(""), state = %alert.state,
                  since = %alert.since, held_s = alert.held_for().as_secs(),
                  kind = alert.kind.as_str(),
                  "alert (destination not configured: logged and stored only)");
            self.report
                .outcome(&alert, DeliveryStatus::NotConfigured, None, 0);
            return;
        };
        crate::metrics::delivery_queued();
        if !dest.enabled {
            let reason = dest.disabled_reason.clone().unwrap_or_default();
            dest.failed += 1;
            let mut msg = Message::new(vec![alert]);
            msg.payload = Some(payload(dest, &msg, self.config.group_max_listed));
            self.report
                .fail(&name, &msg, &format!("destination disabled: {reason}"));
            return;
        }
        if matches!(alert.kind, AlertKind::Firing { .. }) && !alert.episode_key.is_empty() {
            if let Some(slot) = dest.waiting_firing_mut(&alert.episode_key) {
                let older = std::mem::replace(slot, alert);
                info!(alert_key = %older.alert_key, newer = %slot.alert_key, destination = %name,
                      "firing message superseded by a newer one of its episode before delivery");
                // The newer alert took the older one's place in the queue depth.
                self.report.outcome(
                    &older,
                    DeliveryStatus::Dropped,
                    Some("superseded by a newer message of this episode".into()),
                    0,
                );
                self.pump(myself, &name);
                return;
            }
        }
        dest.firing_queued(&alert);
        if self.config.group_wait.is_zero() {
            dest.queue.push_back(Message::new(vec![alert]));
            self.pump(myself, &name);
            return;
        }
        let resolved = matches!(alert.kind, AlertKind::Resolved { .. });
        match dest
            .groups
            .iter_mut()
            .find(|g| g.rule == alert.rule && g.resolved == resolved)
        {
            Some(group) => group.alerts.push(alert),
            None => {
                self.next_group += 1;
                let id = self.next_group;
                dest.groups.push(Group {
                    id,
                    rule: alert.rule.clone(),
                    resolved,
                    alerts: vec![alert],
                });
                let destination = name.clone();
                myself.send_after(self.config.group_wait, move || SlackMsg::GroupDue {
                    destination,
                    group: id,
                });
            }
        }
    }

    /// The active silence matching `alert`, if any (silences are re-read at most every
    /// `silence_cache`; a read error is logged and counts as no silence).
    async fn silence_for(&mut self, alert: &Alert) -> Option<Silence> {
        let db = self.db.as_ref()?;
        let fresh = self
            .silences
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < self.config.silence_cache);
        if !fresh {
            match crate::db::alerting::active_silences(db, Utc::now()).await {
                Ok(list) => self.silences = Some((Instant::now(), list)),
                Err(e) => {
                    warn!(error = %crate::db::describe(&e),
                          "could not read silences: alerts are delivered unsilenced");
                    self.silences = Some((Instant::now(), Vec::new()));
                }
            }
        }
        let now = Utc::now();
        self.silences
            .as_ref()
            .and_then(|(_, list)| list.iter().find(|s| s.matches(alert, now)).cloned())
    }

    /// A new silence: from now on it applies to new alerts (added to the cached list) and to
    /// the alerts already waiting, firing and resolved, which are dropped here and recorded
    /// `suppressed`.
    fn silenced(&mut self, myself: &ActorRef<SlackMsg>, silence: Silence) {
        match &mut self.silences {
            Some((_, list)) => {
                list.retain(|s| s.id != silence.id);
                list.push(silence.clone());
            }
            // Not read yet: hold this one, already stale, so the next alert reads them all.
            None => {
                let now = Instant::now();
                let stale = now.checked_sub(self.config.silence_cache).unwrap_or(now);
                self.silences = Some((stale, vec![silence.clone()]));
            }
        }
        let now = Utc::now();
        // Resolved messages too: one queued behind a firing message the silence drops would
        // otherwise announce the end of an episode nobody was told about.
        let matches = |a: &Alert| silence.matches(a, now);
        let names: Vec<String> = self.destinations.keys().cloned().collect();
        for name in names {
            let dest = self.destinations.get_mut(&name).expect("listed above");
            let mut silenced: Vec<(Alert, u32)> = Vec::new();
            for group in &mut dest.groups {
                let (hit, kept): (Vec<Alert>, Vec<Alert>) = std::mem::take(&mut group.alerts)
                    .into_iter()
                    .partition(matches);
                group.alerts = kept;
                silenced.extend(hit.into_iter().map(|a| (a, 0)));
            }
            for msg in &mut dest.queue {
                let (hit, kept): (Vec<Alert>, Vec<Alert>) = std::mem::take(&mut msg.alerts)
                    .into_iter()
                    .partition(matches);
                if !hit.is_empty() {
                    // The payload changes with the alerts: the text-only downgrade starts over.
                    msg.text_only = false;
                }
                msg.alerts = kept;
                silenced.extend(hit.into_iter().map(|a| (a, msg.attempts)));
            }
            dest.groups.retain(|g| !g.alerts.is_empty());
            dest.queue.retain(|m| !m.alerts.is_empty());
            for (alert, attempts) in &silenced {
                info!(alert_key = %alert.alert_key, destination = %name, silence = silence.id,
                      "alert silenced while waiting for delivery: recorded, not sent");
                crate::metrics::delivery_dequeued(1);
                self.report.outcome(
                    alert,
                    DeliveryStatus::Suppressed,
                    Some(format!("silenced: {}", silence.comment)),
                    *attempts,
                );
            }
            // A message in flight is checked again before a retry (see `pump`).
            self.pump(myself, &name);
        }
    }

    fn episode_ended(&mut self, episode_key: String) {
        let now = Instant::now();
        if self.ended.len() > 10_000 {
            self.ended
                .retain(|_, at| now.duration_since(*at) < Duration::from_secs(3600));
        }
        self.ended.insert(episode_key, now);
    }

    fn status(&self) -> Vec<DestinationStatus> {
        let now = Instant::now();
        self.destinations
            .values()
            .map(|d| DestinationStatus {
                name: d.name.clone(),
                kind: d.kind.as_str().into(),
                enabled: d.enabled,
                disabled_reason: d.disabled_reason.clone(),
                queue_depth: d.depth(),
                paused_until: d
                    .paused_until
                    .filter(|(at, _)| *at > now)
                    .map(|(_, utc)| utc),
                delivered: d.delivered,
                failed: d.failed,
            })
            .collect()
    }

    /// Sends the head of a destination's queue if nothing is in flight and pacing, pauses and
    /// backoffs allow; otherwise schedules a `Wake`. Firing alerts of ended episodes are dropped
    /// from the head first.
    fn pump(&mut self, myself: &ActorRef<SlackMsg>, name: &str) {
        let Some(dest) = self.destinations.get_mut(name) else {
            return;
        };
        dest.prune_maybe_firing();
        loop {
            if !dest.enabled || dest.in_flight.is_some() {
                return;
            }
            let Some(head) = dest.queue.front_mut() else {
                return;
            };
            // A silence created since the message was queued (a retry of a message that was
            // in flight when `Silenced` came): recorded suppressed, not sent.
            if let Some((_, silences)) = &self.silences {
                let now = Utc::now();
                let (silenced, live): (Vec<Alert>, Vec<Alert>) = std::mem::take(&mut head.alerts)
                    .into_iter()
                    .partition(|a| silences.iter().any(|s| s.matches(a, now)));
                head.alerts = live;
                for alert in &silenced {
                    let comment = silences
                        .iter()
                        .find(|s| s.matches(alert, now))
                        .map_or("", |s| s.comment.as_str());
                    info!(alert_key = %alert.alert_key, destination = %dest.name,
                          "alert silenced while waiting for delivery: recorded, not sent");
                    crate::metrics::delivery_dequeued(1);
                    self.report.outcome(
                        alert,
                        DeliveryStatus::Suppressed,
                        Some(format!("silenced: {comment}")),
                        head.attempts,
                    );
                }
                if !silenced.is_empty() {
                    head.text_only = false;
                    if head.alerts.is_empty() {
                        dest.queue.pop_front();
                        continue;
                    }
                }
            }
            let (stale, live): (Vec<Alert>, Vec<Alert>) =
                std::mem::take(&mut head.alerts).into_iter().partition(|a| {
                    matches!(a.kind, AlertKind::Firing { .. })
                        && self.ended.contains_key(&a.episode_key)
                });
            head.alerts = live;
            for alert in &stale {
                info!(alert_key = %alert.alert_key, destination = %dest.name,
                      "episode ended before delivery: firing alert dropped");
                crate::metrics::delivery_dequeued(1);
                self.report.outcome(
                    alert,
                    DeliveryStatus::Dropped,
                    Some("episode ended before delivery".into()),
                    head.attempts,
                );
            }
            if !stale.is_empty() {
                // The payload changes with the alerts: the text-only downgrade starts over.
                head.text_only = false;
                // The firing message becomes the resolved one: resolved alerts of the same
                // episodes waiting further back (queue or group) take its place.
                let head_empty = head.alerts.is_empty();
                let resolved = take_resolved(dest, &stale);
                if head_empty {
                    dest.queue.pop_front();
                    if !resolved.is_empty() {
                        dest.queue.push_front(Message::new(resolved));
                    }
                    continue;
                }
                if !resolved.is_empty() {
                    dest.queue.insert(1, Message::new(resolved));
                }
            }
            let Some(head) = dest.queue.front() else {
                return;
            };
            let now = Instant::now();
            if let Some((until, _)) = dest.paused_until {
                if until > now {
                    dest.wake(myself, until);
                    return;
                }
                dest.paused_until = None;
            }
            if let Some(at) = head.not_before.filter(|at| *at > now) {
                dest.wake(myself, at);
                return;
            }
            if let Err(wait) = dest.pacer.try_take(now) {
                dest.wake(myself, now + wait);
                return;
            }
            let mut msg = dest.queue.pop_front().expect("the head exists");
            let payload = payload(dest, &msg, self.config.group_max_listed);
            msg.attempts += 1;
            msg.not_before = None;
            msg.first_attempt.get_or_insert((now, Utc::now()));
            msg.payload = Some(payload.clone());
            let endpoint = dest.endpoint.clone();
            let reply = myself.clone();
            let destination = dest.name.clone();
            tokio::spawn(async move {
                let answer = endpoint.post_once(&payload).await;
                let _ = reply.cast(SlackMsg::Sent {
                    destination,
                    answer,
                });
            });
            dest.in_flight = Some(msg);
            return;
        }
    }

    /// Handles the answer to the in-flight message of a destination.
    fn sent(&mut self, name: &str, answer: Answer) {
        let config = &self.config;
        let Some(dest) = self.destinations.get_mut(name) else {
            return;
        };
        let Some(mut msg) = dest.in_flight.take() else {
            return;
        };
        let now = Instant::now();
        let elapsed = msg
            .first_attempt
            .map_or(Duration::ZERO, |(at, _)| now.duration_since(at));
        match answer {
            Answer::Delivered => {
                info!(destination = %dest.name, alerts = msg.alerts.len(), attempts = msg.attempts,
                      "alert message delivered");
                dest.delivered += 1;
                let now_delivered = Instant::now();
                if self.fired_delivered.len() > 100_000 {
                    self.fired_delivered.retain(|_, at| {
                        now_delivered.duration_since(*at) < Duration::from_secs(86_400)
                    });
                }
                for alert in &msg.alerts {
                    if matches!(alert.kind, AlertKind::Firing { .. })
                        && !alert.episode_key.is_empty()
                    {
                        self.fired_delivered
                            .insert(alert.episode_key.clone(), now_delivered);
                    }
                    crate::metrics::alert_delivered();
                    crate::metrics::delivery_dequeued(1);
                    self.report
                        .outcome(alert, DeliveryStatus::Delivered, None, msg.attempts);
                }
            }
            Answer::RateLimited(wait) => {
                crate::metrics::rate_limited("slack");
                let wait = wait.unwrap_or(config.default_retry_after);
                if elapsed + wait > config.max_retry_time {
                    warn!(destination = %dest.name, wait_ms = wait.as_millis() as u64,
                          "rate limited past the retry time budget: giving up on the message");
                    dest.failed += 1;
                    self.report.fail(&dest.name, &msg, "rate_limited");
                } else {
                    warn!(destination = %dest.name, wait_ms = wait.as_millis() as u64,
                          "rate limited (429): pausing this destination");
                    dest.paused_until = Some((now + wait, Utc::now() + wait));
                    self.report.retrying(&msg, "rate_limited");
                    dest.queue.push_front(msg);
                }
            }
            Answer::Retryable(error) => {
                msg.failures += 1;
                let delay = backoff(config, msg.failures - 1);
                if msg.failures >= config.max_attempts.max(1)
                    || elapsed + delay > config.max_retry_time
                {
                    warn!(destination = %dest.name, attempts = msg.attempts, error = %error,
                          "alert delivery failed: retries exhausted");
                    dest.failed += 1;
                    self.report.fail(&dest.name, &msg, &error);
                } else {
                    warn!(destination = %dest.name, attempts = msg.attempts, error = %error,
                          delay_ms = delay.as_millis() as u64, "alert delivery failed: retrying");
                    msg.not_before = Some(now + delay);
                    self.report.retrying(&msg, &error);
                    dest.queue.push_front(msg);
                }
            }
            Answer::Payload(error) if !msg.text_only && dest.kind == DestinationKind::Slack => {
                warn!(destination = %dest.name, error = %error,
                      "Slack refused the blocks: retrying once as text only");
                msg.text_only = true;
                self.report.retrying(&msg, &error);
                dest.queue.push_front(msg);
            }
            Answer::Payload(error) | Answer::Permanent(error) => {
                warn!(destination = %dest.name, attempts = msg.attempts, error = %error,
                      "alert message refused for good: dead-lettered");
                dest.failed += 1;
                self.report.fail(&dest.name, &msg, &error);
            }
            Answer::Destination(error) => {
                error!(destination = %dest.name, kind = dest.kind.as_str(), error = %error,
                       "alert destination disabled: the webhook no longer accepts messages \
                        (fix or replace it and restart); its queued alerts are dead-lettered");
                dest.enabled = false;
                dest.disabled_reason = Some(error.clone());
                dest.paused_until = None;
                let mut backlog: Vec<Message> = std::iter::once(msg)
                    .chain(dest.queue.drain(..))
                    .chain(dest.groups.drain(..).map(|g| Message::new(g.alerts)))
                    .collect();
                for m in &mut backlog {
                    if m.payload.is_none() {
                        m.payload = Some(payload(dest, m, config.group_max_listed));
                    }
                }
                for m in &backlog {
                    dest.failed += 1;
                    self.report.fail(&dest.name, m, &error);
                }
            }
        }
    }
}

/// Takes the resolved alerts of `stale`'s episodes out of `dest`'s queue (after its head) and
/// groups; emptied messages and groups disappear (a group's `GroupDue` then finds nothing).
fn take_resolved(dest: &mut Destination, stale: &[Alert]) -> Vec<Alert> {
    let is_match = |a: &Alert| {
        matches!(a.kind, AlertKind::Resolved { .. })
            && stale.iter().any(|s| s.episode_key == a.episode_key)
    };
    let mut taken = Vec::new();
    for msg in dest.queue.iter_mut().skip(1) {
        let (matched, kept): (Vec<Alert>, Vec<Alert>) = std::mem::take(&mut msg.alerts)
            .into_iter()
            .partition(is_match);
        msg.alerts = kept;
        taken.extend(matched);
    }
    for group in &mut dest.groups {
        let (matched, kept): (Vec<Alert>, Vec<Alert>) = std::mem::take(&mut group.alerts)
            .into_iter()
            .partition(is_match);
        group.alerts = kept;
        taken.extend(matched);
    }
    let mut index = 0;
    dest.queue.retain(|m| {
        index += 1;
        index == 1 || !m.alerts.is_empty()
    });
    dest.groups.retain(|g| !g.alerts.is_empty());
    taken
}

/// What `msg` sends to `dest`: Block Kit (or text only after a payload refusal) for Slack, the
/// documented JSON for a generic webhook.
fn payload(dest: &Destination, msg: &Message, max_listed: usize) -> Value {
    match dest.kind {
        DestinationKind::Slack if msg.text_only => group_text_only(&msg.alerts),
        DestinationKind::Slack => group_message(&msg.alerts, max_listed),
        DestinationKind::Webhook => webhook_body(&dest.name, &msg.alerts),
    }
}

/// Exponential backoff with jitter: uniformly in `[c/2, c]` where
/// `c = min(max_backoff, base_backoff × 2^retry)`.
fn backoff(config: &DeliveryConfig, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    let ceiling = config
        .base_backoff
        .checked_mul(factor)
        .unwrap_or(config.max_backoff)
        .min(config.max_backoff);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

/// A token bucket: `capacity` sends at once, then one per `every`. Never sleeps: says how long
/// to wait instead.
struct Pacer {
    capacity: f64,
    tokens: f64,
    every: Duration,
    updated: Instant,
}

impl Pacer {
    fn new(capacity: u32, every: Duration) -> Self {
        Pacer {
            capacity: f64::from(capacity),
            tokens: f64::from(capacity),
            every,
            updated: Instant::now(),
        }
    }

    /// Uses a send if one is available, else says how long until one is.
    fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.every.is_zero() {
            return Ok(());
        }
        let refill = now.duration_since(self.updated).as_secs_f64() / self.every.as_secs_f64();
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.every.mul_f64(1.0 - self.tokens))
        }
    }
}

#[cfg(test)]
mod tests;

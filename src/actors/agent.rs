//! The agent actor: one per monitored user. It holds the agent's presence, routing status and
//! active-conversation count, decides which events change the current state, evaluates the
//! alert rules against it (`crate::rules`: one episode per rule, Normal → Pending → Firing →
//! Resolved), keeps one deadline (at the shared [`Deadlines`] scheduler) for the earliest
//! episode deadline, and raises alert messages (firing, repeats, resolved) to the Slack and
//! persistence actors. Its episode log is persisted after every change, so a restart neither
//! repeats nor forgets an alert.
//!
//! Ordering rule: an event older than the one held for the same dimension is stored (history is
//! complete) but does not change the current state. An exact repeat of the event held (same
//! dimension, timestamp and value) is a duplicate delivery and is dropped here; the database's
//! unique key catches the rest.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::Instrument;

use crate::actors::Credit;
use crate::actors::deadline::Deadlines;
use crate::actors::persistence::PersistMsg;
use crate::actors::slack::SlackMsg;
use crate::backfill::GapUpdate;
use crate::domain::{
    AgentCurrent, Alert, AlertKind, IdleInputs, Kind, PresenceState, RoutingState, Source,
    Transition, UserId,
};
use crate::metrics;
use crate::notification::{PresenceUpdate, RoutingUpdate};
use crate::rules::{AgentEpisodes, AgentView, EpisodeAction, RuleAction, RuleSet};

/// How long a new agent actor waits for both presence and routing status before judging the
/// rules on whatever it knows.
const INCOMPLETE_STATE_GRACE: Duration = Duration::from_secs(30);

/// The longest delay a deadline is armed with (about 30 years): further is never.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// When the agent became idle by the built-in `idle` rule's definition (its matcher, the one
/// definition of "idle"), whatever rules are in force: the `idle_since` of `GET /api/v1/agents`.
fn idle_since(view: &AgentView) -> Option<DateTime<Utc>> {
    static IDLE: std::sync::LazyLock<RuleSet> =
        std::sync::LazyLock::new(|| RuleSet::builtin_idle(Duration::from_secs(60)));
    IDLE.rules()
        .first()
        .and_then(|rule| rule.matcher.evaluate(view))
}

/// The name of the built-in rule.
pub const IDLE_RULE: &str = crate::rules::BUILTIN_IDLE_RULE;

/// Messages of the agent actor.
#[derive(Debug)]
pub enum AgentMsg {
    /// A presence change (from the stream or the snapshot). The credit is released once the
    /// transition is committed (or at once if nothing is stored).
    Presence(PresenceUpdate, Source, Option<Credit>),
    /// A routing-status change.
    Routing(RoutingUpdate, Source, Option<Credit>),
    /// Transitions recovered for a gap (`source = backfill`), oldest first. Each is stored and
    /// applied like a stream event, but the rules are judged **once**, on the state after the
    /// last one: an agent whose idle episode began in the gap and still lasts is alerted from
    /// its Genesys start time (at once if the threshold has passed), one who has since resumed
    /// work is not alerted at all.
    Backfill(Vec<GapUpdate>),
    /// The active-conversation count from `conversationsummary`, observed at the given instant.
    Conversations {
        active: u32,
        observed_at: DateTime<Utc>,
    },
    /// A newer display name (from a user listing).
    Rename(String),
    /// The persistence or Slack actor was restarted: use these from now on.
    Peers(Peers),
    /// The rules were reloaded: evaluate the new ones from now on.
    Rules(Arc<RuleSet>),
    /// The queues the agent is a member of (ids, any case), as last listed: queue-scoped rules
    /// are re-evaluated when the set changes.
    Queues(Vec<String>),
    /// Internal, from the shared deadline scheduler ([`Deadlines`]): the earliest episode
    /// deadline armed with timer `generation` has passed (stale unless it is the current
    /// generation).
    Deadline { generation: u64 },
    /// The agent's current state (tests, debugging).
    Get(RpcReplyPort<AgentCurrent>),
}

/// The actors (and the scheduler) an agent talks to.
#[derive(Debug, Clone)]
pub struct Peers {
    pub persistence: ActorRef<PersistMsg>,
    pub slack: ActorRef<SlackMsg>,
    /// The shared deadline scheduler, which sends [`AgentMsg::Deadline`]; the supervisor's one
    /// for the process's lifetime (it is not restarted, see [`crate::actors::deadline`]).
    pub deadlines: Deadlines,
}

/// Start-up arguments.
#[derive(Debug, Clone)]
pub struct AgentArgs {
    pub user_id: UserId,
    pub user_name: Option<String>,
    /// The agent's division id (rule scopes), if known.
    pub division_id: Option<String>,
    /// The queues the agent is a member of (rule scopes), as listed at start; empty when no
    /// rule is scoped by queue.
    pub queue_ids: Vec<String>,
    /// The rules in force.
    pub rules: Arc<RuleSet>,
    /// The persisted episode log (JSON of [`AgentEpisodes`]) to resume, if any.
    pub episodes: Option<String>,
    pub peers: Peers,
    /// Genesys time: rule deadlines are Genesys timestamps, so "now" is read from here (the
    /// measured offset applied once, `crate::clock`).
    pub clock: crate::clock::Clock,
}

/// The agent actor (stateless handler; state in [`AgentState`]).
pub struct AgentActor;

/// What one agent actor owns.
#[derive(Debug)]
pub struct AgentState {
    user_id: UserId,
    user_name: Option<String>,
    division_id: Option<String>,
    /// Lowercase, sorted, no repeats (see [`normalize_queue_ids`]).
    queue_ids: Vec<String>,
    rules: Arc<RuleSet>,
    peers: Peers,
    inputs: IdleInputs,
    presence_label: Option<String>,
    episodes: AgentEpisodes,
    /// The episode log as last sent to the persistence actor.
    persisted: String,
    /// The deadline armed at the scheduler (Genesys time), if any.
    timer: Option<DateTime<Utc>>,
    /// The generation of the deadline armed (or last armed); bumped at every change, so a
    /// `Deadline` of an earlier one is ignored.
    generation: u64,
    /// When this actor started (see [`INCOMPLETE_STATE_GRACE`]).
    started: std::time::Instant,
    clock: crate::clock::Clock,
}

/// What to do with an incoming event for one dimension.
#[derive(Debug, PartialEq)]
enum Disposition {
    /// Newer than what we hold: store it and make it current.
    Current,
    /// Older than what we hold: store it, keep the current state.
    Stale,
    /// The very event we hold, delivered again.
    Duplicate,
    /// Another value at the very instant of the one we hold: the history's key (user, kind,
    /// timestamp) can keep only one, so the first is kept and this one is counted as malformed,
    /// which keeps the current state and the history consistent.
    Conflict,
}

fn disposition<T: PartialEq>(
    held: Option<(DateTime<Utc>, T)>,
    incoming: (DateTime<Utc>, T),
) -> Disposition {
    match held {
        None => Disposition::Current,
        Some((at, value)) if at == incoming.0 && value == incoming.1 => Disposition::Duplicate,
        Some((at, _)) if at == incoming.0 => Disposition::Conflict,
        Some((at, _)) if incoming.0 < at => Disposition::Stale,
        Some(_) => Disposition::Current,
    }
}

/// Queue ids trimmed, lowercase, sorted and without repeats, so a membership listed in another
/// order is not a change.
pub fn normalize_queue_ids(ids: Vec<String>) -> Vec<String> {
    let mut ids: Vec<String> = ids
        .into_iter()
        .map(|q| q.trim().to_ascii_lowercase())
        .filter(|q| !q.is_empty())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

impl AgentState {
    fn transition(
        &self,
        kind: Kind,
        state: String,
        previous: Option<String>,
        label: Option<String>,
        definition_id: Option<String>,
        at: DateTime<Utc>,
        source: Source,
    ) -> Transition {
        Transition {
            user_id: self.user_id.clone(),
            user_name: self.user_name.clone(),
            kind,
            state,
            previous_state: previous,
            org_presence: label,
            presence_definition_id: definition_id,
            event_timestamp: at,
            ingested_at: Utc::now(),
            source,
        }
    }

    fn current(&self) -> AgentCurrent {
        AgentCurrent {
            user_id: self.user_id.clone(),
            user_name: self.user_name.clone(),
            presence: self.inputs.presence.as_ref().map(|p| p.system.clone()),
            org_presence: self.presence_label.clone(),
            presence_since: self.inputs.presence.as_ref().map(|p| p.since),
            routing_status: self.inputs.routing.as_ref().map(|r| r.status.clone()),
            routing_since: self.inputs.routing.as_ref().map(|r| r.since),
            active_conversations: self.inputs.active_conversations,
            idle_since: idle_since(&self.view()),
            updated_at: Utc::now(),
        }
    }

    fn publish_current(&self) {
        let _ = self
            .peers
            .persistence
            .cast(PersistMsg::Agent(self.current()));
    }

    fn view(&self) -> AgentView {
        AgentView {
            user_id: self.user_id.clone(),
            presence: self.inputs.presence.clone(),
            routing: self.inputs.routing.clone(),
            active_conversations: self.inputs.active_conversations,
            conversations_changed_at: self.inputs.conversations_changed_at,
            queue_ids: self.queue_ids.clone(),
            division_id: self.division_id.clone(),
        }
    }

    /// A short description of what the agent is in, for alert messages.
    fn describe(&self) -> String {
        let routing = self
            .inputs
            .routing
            .as_ref()
            .map(|r| format!("routing {}", r.status));
        let presence = self
            .inputs
            .presence
            .as_ref()
            .map(|p| match &self.presence_label {
                Some(label) if !label.eq_ignore_ascii_case(&p.system.replace('_', " ")) => {
                    format!("presence {} ({label})", p.system)
                }
                _ => format!("presence {}", p.system),
            });
        match (routing, presence) {
            (Some(r), Some(p)) => format!("{r}, {p}"),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => "unknown".to_string(),
        }
    }

    /// After a state change Genesys timestamped `changed_at`: feed the rules, act, re-arm the
    /// timer, persist the episode log.
    fn evaluate(&mut self, myself: &ActorRef<AgentMsg>, changed_at: DateTime<Utc>) {
        let now = self.clock.now();
        // Right after a (re)start the snapshot brings presence and routing one after the
        // other: judging the rules on half a state would end (or start) episodes wrongly, so
        // wait for both (bounded, for a user Genesys never gives one of them for).
        let incomplete = self.inputs.presence.is_none() || self.inputs.routing.is_none();
        if incomplete && self.started.elapsed() < INCOMPLETE_STATE_GRACE {
            return;
        }
        let view = self.view();
        let actions = self
            .episodes
            .on_agent_change_at(&self.rules, now, &view, changed_at);
        self.after(myself, actions, now);
    }

    fn after(&mut self, myself: &ActorRef<AgentMsg>, actions: Vec<RuleAction>, now: DateTime<Utc>) {
        for action in actions {
            self.act(action, now);
        }
        self.arm(myself, now);
        self.persist_episodes();
    }

    fn persist_episodes(&mut self) {
        let json = match serde_json::to_string(&self.episodes) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(user_id = %self.user_id, error = %e, "episode log not serializable");
                return;
            }
        };
        if json != self.persisted {
            let _ = self
                .peers
                .persistence
                .cast(PersistMsg::Episodes(self.user_id.clone(), json.clone()));
            self.persisted = json;
        }
    }

    /// Keeps one deadline at the earliest episode deadline (re-armed only when it moves), at
    /// the shared scheduler. The Genesys-time deadline becomes a monotonic instant here, from
    /// `now` (Genesys time, as the delay `send_after` would have slept).
    fn arm(&mut self, myself: &ActorRef<AgentMsg>, now: DateTime<Utc>) {
        let next = self.episodes.next_deadline();
        if self.timer == next {
            return;
        }
        self.generation += 1;
        self.timer = next;
        match next {
            Some(at) => {
                // Capped: a deadline saturated at the end of time must not overflow `Instant`.
                let delay = (at - now)
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(FAR_FUTURE);
                let instant = tokio::time::Instant::now() + delay;
                self.peers.deadlines.arm(myself, instant, self.generation);
            }
            None => self.peers.deadlines.cancel(myself),
        }
    }

    fn act(&mut self, RuleAction { rule, action }: RuleAction, mut now: DateTime<Utc>) {
        let Some(rule) = self.rules.get(&rule).cloned() else {
            return;
        };
        let (episode_start, kind, send) = match action {
            EpisodeAction::Fire {
                episode_start,
                repeat,
                send,
            } => (episode_start, AlertKind::Firing { repeat }, send),
            EpisodeAction::Resolve {
                episode_start,
                duration,
                send,
                ended_at,
            } => {
                now = ended_at;
                let episode_key = Alert::episode_key(&rule.name, &self.user_id, episode_start);
                let _ = self
                    .peers
                    .slack
                    .cast(SlackMsg::EpisodeEnded { episode_key });
                if !send {
                    return;
                }
                (episode_start, AlertKind::Resolved { duration }, send)
            }
        };
        let episode_key = Alert::episode_key(&rule.name, &self.user_id, episode_start);
        let alert = Alert {
            alert_key: Alert::message_key(&episode_key, kind),
            episode_key,
            rule: rule.name.clone(),
            severity: rule.severity.as_str().to_string(),
            destination: rule.destination.clone(),
            kind,
            user_id: self.user_id.clone(),
            user_name: self.user_name.clone(),
            state: self.describe(),
            since: episode_start,
            threshold: rule.threshold,
            fired_at: now,
            muted: (!send).then(|| "quiet hours".to_string()),
        };
        tracing::info!(user_id = %self.user_id, rule = %alert.rule, kind = alert.kind.as_str(),
            state = %alert.state, since = %alert.since, muted = alert.muted.is_some(), "alert");
        if matches!(kind, AlertKind::Firing { .. }) {
            metrics::alert_fired(&alert.rule);
        }
        // Persistence first: the record exists before Slack reports its outcome.
        let _ = self
            .peers
            .persistence
            .cast(PersistMsg::AlertFired(alert.clone()));
        if self.peers.slack.cast(SlackMsg::Alert(alert)).is_ok() {
            metrics::delivery_queued();
        }
    }

    fn conflict(&self, kind: &str, value: &str, at: DateTime<Utc>) {
        metrics::malformed();
        tracing::warn!(user_id = %self.user_id, kind, value, at = %at,
            "a second, different value at the same instant as the current one; kept the first");
    }

    /// Applies a presence event; `judge` runs the rules on a change of the current state
    /// (false inside a backfill batch, judged once at its end). Returns whether the current
    /// state changed.
    fn on_presence(
        &mut self,
        myself: &ActorRef<AgentMsg>,
        update: PresenceUpdate,
        source: Source,
        credit: Option<Credit>,
        judge: bool,
    ) -> bool {
        let held = self
            .inputs
            .presence
            .as_ref()
            .map(|p| (p.since, (p.system.clone(), p.definition_id.clone())));
        let incoming = (
            update.timestamp,
            (update.system.clone(), update.definition_id.clone()),
        );
        match disposition(held, incoming) {
            Disposition::Duplicate => {
                drop(credit);
                false
            }
            Disposition::Conflict => {
                self.conflict("presence", &update.system, update.timestamp);
                false
            }
            Disposition::Stale => {
                let row = self.transition(
                    Kind::Presence,
                    update.system,
                    None,
                    update.label,
                    update.definition_id,
                    update.timestamp,
                    source,
                );
                let _ = self
                    .peers
                    .persistence
                    .cast(PersistMsg::Transition(row, credit));
                false
            }
            Disposition::Current => {
                let previous = self.inputs.presence.as_ref().map(|p| p.system.clone());
                let row = self.transition(
                    Kind::Presence,
                    update.system.clone(),
                    previous.clone(),
                    update.label.clone(),
                    update.definition_id.clone(),
                    update.timestamp,
                    source,
                );
                let _ = self
                    .peers
                    .persistence
                    .cast(PersistMsg::Transition(row, credit));
                metrics::agent_state("presence", previous.as_deref(), &update.system);
                self.presence_label = update.label.clone();
                self.inputs.presence = Some(PresenceState {
                    system: update.system,
                    definition_id: update.definition_id,
                    label: update.label,
                    since: update.timestamp,
                });
                if judge {
                    self.evaluate(myself, update.timestamp);
                    self.publish_current();
                }
                true
            }
        }
    }

    /// Applies a routing-status event; see [`AgentState::on_presence`].
    fn on_routing(
        &mut self,
        myself: &ActorRef<AgentMsg>,
        update: RoutingUpdate,
        source: Source,
        credit: Option<Credit>,
        judge: bool,
    ) -> bool {
        let held = self
            .inputs
            .routing
            .as_ref()
            .map(|r| (r.since, r.status.clone()));
        match disposition(held, (update.timestamp, update.status.clone())) {
            Disposition::Duplicate => {
                drop(credit);
                false
            }
            Disposition::Conflict => {
                self.conflict("routing", &update.status, update.timestamp);
                false
            }
            Disposition::Stale => {
                let row = self.transition(
                    Kind::Routing,
                    update.status,
                    None,
                    None,
                    None,
                    update.timestamp,
                    source,
                );
                let _ = self
                    .peers
                    .persistence
                    .cast(PersistMsg::Transition(row, credit));
                false
            }
            Disposition::Current => {
                let previous = self.inputs.routing.as_ref().map(|r| r.status.clone());
                let row = self.transition(
                    Kind::Routing,
                    update.status.clone(),
                    previous.clone(),
                    None,
                    None,
                    update.timestamp,
                    source,
                );
                let _ = self
                    .peers
                    .persistence
                    .cast(PersistMsg::Transition(row, credit));
                metrics::agent_state("routing", previous.as_deref(), &update.status);
                self.inputs.routing = Some(RoutingState {
                    status: update.status,
                    since: update.timestamp,
                });
                if judge {
                    self.evaluate(myself, update.timestamp);
                    self.publish_current();
                }
                true
            }
        }
    }
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<AgentState, ActorProcessingErr> {
        let (episodes, persisted) = match args.episodes {
            Some(json) => match serde_json::from_str::<AgentEpisodes>(&json) {
                Ok(episodes) => (episodes, json),
                Err(e) => {
                    tracing::warn!(user_id = %args.user_id, error = %e, "persisted episode log unreadable; starting afresh");
                    (AgentEpisodes::new(), String::new())
                }
            },
            None => (AgentEpisodes::new(), String::new()),
        };
        Ok(AgentState {
            user_id: args.user_id,
            user_name: args.user_name,
            division_id: args.division_id,
            queue_ids: normalize_queue_ids(args.queue_ids),
            rules: args.rules,
            peers: args.peers,
            inputs: IdleInputs::default(),
            presence_label: None,
            episodes,
            persisted,
            timer: None,
            generation: 0,
            started: std::time::Instant::now(),
            clock: args.clock.clone(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<AgentMsg>,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        // A resumed episode log may hold a due repeat: keep its schedule.
        state.arm(&myself, state.clock.now());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        let span = tracing::info_span!("agent", user_id = %state.user_id);
        // A span per message (the user id on every line), kept light: no allocation beyond
        // the span itself.
        async move {
            match message {
                AgentMsg::Presence(update, source, credit) => {
                    state.on_presence(&myself, update, source, credit, true);
                }
                AgentMsg::Routing(update, source, credit) => {
                    state.on_routing(&myself, update, source, credit, true);
                }
                AgentMsg::Backfill(mut updates) => {
                    updates.sort_by_key(GapUpdate::timestamp);
                    let mut changed_at = None;
                    for update in updates {
                        let at = update.timestamp();
                        let changed = match update {
                            GapUpdate::Presence(p) => {
                                state.on_presence(&myself, p, Source::Backfill, None, false)
                            }
                            GapUpdate::Routing(r) => {
                                state.on_routing(&myself, r, Source::Backfill, None, false)
                            }
                        };
                        if changed {
                            changed_at = Some(at);
                        }
                    }
                    if let Some(at) = changed_at {
                        state.evaluate(&myself, at);
                        state.publish_current();
                    }
                }
                AgentMsg::Conversations {
                    active,
                    observed_at,
                } => {
                    if active != state.inputs.active_conversations {
                        state.inputs.active_conversations = active;
                        state.inputs.conversations_changed_at = Some(observed_at);
                        state.evaluate(&myself, observed_at);
                        state.publish_current();
                    }
                }
                AgentMsg::Rename(name) => {
                    if state.user_name.as_deref() != Some(name.as_str()) {
                        state.user_name = Some(name);
                    }
                }
                AgentMsg::Peers(peers) => state.peers = peers,
                AgentMsg::Rules(rules) => {
                    state.rules = rules;
                    state.evaluate(&myself, state.clock.now());
                }
                AgentMsg::Queues(queue_ids) => {
                    let queue_ids = normalize_queue_ids(queue_ids);
                    if queue_ids != state.queue_ids {
                        tracing::debug!(queues = ?queue_ids, "queue membership changed");
                        state.queue_ids = queue_ids;
                        state.evaluate(&myself, state.clock.now());
                    }
                }
                AgentMsg::Deadline { generation } => {
                    if generation == state.generation {
                        state.timer = None;
                        let now = state.clock.now();
                        let actions = state.episodes.on_tick(&state.rules, now);
                        state.after(&myself, actions, now);
                    }
                }
                AgentMsg::Get(reply) => {
                    let _ = reply.send(state.current());
                }
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn post_stop(
        &self,
        myself: ActorRef<AgentMsg>,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if state.timer.take().is_some() {
            state.peers.deadlines.cancel(&myself);
        }
        if let Some(presence) = &state.inputs.presence {
            metrics::agent_gone("presence", &presence.system);
        }
        if let Some(routing) = &state.inputs.routing {
            metrics::agent_gone("routing", &routing.status);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        crate::domain::parse_timestamp(s).unwrap()
    }

    #[test]
    fn dispositions() {
        let a = t("2024-05-01T10:00:00Z");
        let b = t("2024-05-01T10:00:01Z");
        assert_eq!(disposition::<&str>(None, (a, "IDLE")), Disposition::Current);
        assert_eq!(
            disposition(Some((a, "IDLE")), (a, "IDLE")),
            Disposition::Duplicate
        );
        assert_eq!(
            disposition(Some((b, "IDLE")), (a, "INTERACTING")),
            Disposition::Stale
        );
        assert_eq!(
            disposition(Some((a, "IDLE")), (b, "INTERACTING")),
            Disposition::Current
        );
        // Same instant, different value: the first is kept.
        assert_eq!(
            disposition(Some((a, "IDLE")), (a, "INTERACTING")),
            Disposition::Conflict
        );
    }
}

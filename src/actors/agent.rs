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

/// The longest an agent's rules wait for the backfill of a stream gap ([`AgentMsg::Hold`]):
/// past it (the analytics query failing, say) the rules are judged on what is known, and a
/// backfill that lands later is judged as it comes.
pub const GAP_HOLD_LIMIT: Duration = Duration::from_secs(60);

/// The name of the built-in rule.
pub const IDLE_RULE: &str = crate::rules::BUILTIN_IDLE_RULE;

/// Messages of the agent actor.
#[derive(Debug)]
pub enum AgentMsg {
    /// A presence change (from the stream or the snapshot). The credit is released once the
    /// transition is committed (or at once if nothing is stored). Boxed: it is the largest
    /// payload by far (88 bytes), and every agent's message loop holds a message-sized slot
    /// twice for its whole life (`BENCHMARKS.md`, figure 4); a test pins the size.
    Presence(Box<PresenceUpdate>, Source, Option<Credit>),
    /// A routing-status change.
    Routing(RoutingUpdate, Source, Option<Credit>),
    /// The stream of this agent's channel has a gap (its socket was lost, or the service
    /// starts after a downtime) that a backfill will fill: from now until that backfill
    /// arrives, the rules are not judged and no deadline fires, because the gap may hold the
    /// end of an episode. Every change received meanwhile is stored and applied to the
    /// current state as usual, and kept to be replayed. `at` is the Genesys time (UTC) the
    /// hold began; a second hold while held moves it later. Released by a
    /// [`AgentMsg::Backfill`] whose `until` is at or after `at`, or after
    /// [`GAP_HOLD_LIMIT`].
    Hold { at: DateTime<Utc> },
    /// Transitions recovered for a gap (`source = backfill`) of the interval that ends at
    /// `until` (Genesys time, UTC), in any order; may be empty (the gap held none for this
    /// agent). Each is stored and applied like a stream event.
    ///
    /// - **Held** (see [`AgentMsg::Hold`]) and `until` at or after the hold: the hold is
    ///   released by replaying, in Genesys time order, every change received since it began
    ///   together with these, through the rules as they would have run had the stream been
    ///   whole: an episode that ended in the gap before its threshold is not alerted, one
    ///   that passed it is alerted (late, once, and its firing is sent even if it has since
    ///   ended), one still running is alerted from its Genesys start.
    /// - **Not held**: the rules are judged **once**, on the state after the last one: an
    ///   agent whose idle episode began in the gap and still lasts is alerted from its Genesys
    ///   start time (at once if the threshold has passed), one who has since resumed work is
    ///   not alerted at all.
    Backfill {
        updates: Vec<GapUpdate>,
        until: DateTime<Utc>,
    },
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
    /// Start held ([`AgentMsg::Hold`]): the service starts after a downtime that a backfill
    /// will fill, so a resumed episode must not fire before it is known whether it ended.
    pub held: bool,
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
    /// The current state; the org presence label is `inputs.presence`'s (one copy).
    inputs: IdleInputs,
    episodes: AgentEpisodes,
    /// A hash of the episode log as last sent to the persistence actor (a hash, not a copy:
    /// memory per agent, `BENCHMARKS.md` figure 4).
    persisted: u64,
    /// The deadline armed at the scheduler (Genesys time), if any.
    timer: Option<DateTime<Utc>>,
    /// The generation of the deadline armed (or last armed); bumped at every change, so a
    /// `Deadline` of an earlier one is ignored.
    generation: u64,
    /// When this actor started (see [`INCOMPLETE_STATE_GRACE`]).
    started: std::time::Instant,
    clock: crate::clock::Clock,
    /// Set while a stream gap waits for its backfill ([`AgentMsg::Hold`]); boxed, so an agent
    /// not held pays one pointer for it.
    hold: Option<Box<Hold>>,
    /// Hold at start ([`AgentArgs::held`]), until `post_start`.
    held: bool,
    /// Episodes (rule, start) whose firing was raised late, by the replay of a hold: news of
    /// the past that is sent even if the episode ends while the message waits its turn.
    late: Vec<(String, DateTime<Utc>)>,
}

/// What an agent keeps while held: the state the rules last judged, and every change since,
/// to replay in Genesys time order once the gap is filled.
#[derive(Debug)]
struct Hold {
    /// When the hold began (Genesys time, UTC); a backfill up to here or later releases it.
    at: DateTime<Utc>,
    /// When the hold gives up waiting (`at` of the first hold + [`GAP_HOLD_LIMIT`]).
    limit: DateTime<Utc>,
    /// The inputs as the rules last saw them (the episodes are not touched while held).
    inputs: IdleInputs,
    /// Every change received since (stream, snapshot, backfill), in arrival order.
    changes: Vec<HeldChange>,
}

/// One change kept for the replay of a hold.
#[derive(Debug, Clone)]
enum HeldChange {
    Presence(PresenceUpdate),
    Routing(RoutingUpdate),
    Conversations {
        active: u32,
        observed_at: DateTime<Utc>,
    },
}

impl HeldChange {
    /// The Genesys instant of the change (UTC).
    fn at(&self) -> DateTime<Utc> {
        match self {
            HeldChange::Presence(p) => p.timestamp,
            HeldChange::Routing(r) => r.timestamp,
            HeldChange::Conversations { observed_at, .. } => *observed_at,
        }
    }

    /// Applies the change to `inputs` by the live ordering rule (only a newer state replaces
    /// the one held); whether the inputs changed.
    fn apply(&self, inputs: &mut IdleInputs) -> bool {
        match self {
            HeldChange::Presence(p) => {
                if inputs
                    .presence
                    .as_ref()
                    .is_some_and(|h| p.timestamp <= h.since)
                {
                    return false;
                }
                inputs.presence = Some(PresenceState {
                    system: p.system.clone(),
                    definition_id: p.definition_id.clone(),
                    label: p.label.clone(),
                    since: p.timestamp,
                });
                true
            }
            HeldChange::Routing(r) => {
                if inputs
                    .routing
                    .as_ref()
                    .is_some_and(|h| r.timestamp <= h.since)
                {
                    return false;
                }
                inputs.routing = Some(RoutingState {
                    status: r.status.clone(),
                    since: r.timestamp,
                });
                true
            }
            HeldChange::Conversations {
                active,
                observed_at,
            } => {
                if *active == inputs.active_conversations
                    || inputs
                        .conversations_changed_at
                        .is_some_and(|c| *observed_at < c)
                {
                    return false;
                }
                inputs.active_conversations = *active;
                inputs.conversations_changed_at = Some(*observed_at);
                true
            }
        }
    }
}

/// Of the actions of a replay, keeps every first fire and resolve but only the last repeat of
/// each episode: repeats whose times passed during the gap are one message, not a burst.
fn collapse_repeats(actions: Vec<RuleAction>) -> Vec<RuleAction> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<RuleAction> = actions
        .into_iter()
        .rev()
        .filter(|a| match &a.action {
            EpisodeAction::Fire {
                episode_start,
                repeat,
                ..
            } if *repeat > 0 => seen.insert((a.rule.clone(), *episode_start)),
            _ => true,
        })
        .collect();
    kept.reverse();
    kept
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

/// A hash of an episode log's JSON, to tell whether it changed since it was last persisted.
fn hash_of(json: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    json.hash(&mut hasher);
    hasher.finish()
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
            org_presence: self.inputs.presence.as_ref().and_then(|p| p.label.clone()),
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
        self.view_of(&self.inputs)
    }

    /// What the rules see of this agent with the given inputs.
    fn view_of(&self, inputs: &IdleInputs) -> AgentView {
        AgentView {
            user_id: self.user_id.clone(),
            presence: inputs.presence.clone(),
            routing: inputs.routing.clone(),
            active_conversations: inputs.active_conversations,
            conversations_changed_at: inputs.conversations_changed_at,
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
        let presence = self.inputs.presence.as_ref().map(|p| match &p.label {
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
        if self.hold.is_some() {
            // Judged when the gap is filled (the replay in `release`).
            return;
        }
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
        // An episode whose firing and end are learnt at once (the replay of a gap): the
        // firing is still sent, so its end must not withdraw it from the Slack queue.
        let fired: std::collections::HashSet<(String, DateTime<Utc>)> = actions
            .iter()
            .filter_map(|a| match &a.action {
                EpisodeAction::Fire { episode_start, .. } => Some((a.rule.clone(), *episode_start)),
                EpisodeAction::Resolve { .. } => None,
            })
            .collect();
        for action in actions {
            let withdraw = match &action.action {
                EpisodeAction::Resolve { episode_start, .. } => {
                    let key = (action.rule.clone(), *episode_start);
                    let late = self.late.iter().position(|k| *k == key);
                    if let Some(i) = late {
                        self.late.swap_remove(i);
                    }
                    late.is_none() && !fired.contains(&key)
                }
                EpisodeAction::Fire { .. } => false,
            };
            self.act(action, now, withdraw);
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
        let hash = hash_of(&json);
        if hash != self.persisted {
            let _ = self
                .peers
                .persistence
                .cast(PersistMsg::Episodes(self.user_id.clone(), json));
            self.persisted = hash;
        }
    }

    /// Keeps one deadline at the earliest episode deadline (re-armed only when it moves), at
    /// the shared scheduler. The Genesys-time deadline becomes a monotonic instant here, from
    /// `now` (Genesys time, as the delay `send_after` would have slept).
    fn arm(&mut self, myself: &ActorRef<AgentMsg>, now: DateTime<Utc>) {
        let next = match &self.hold {
            Some(hold) => Some(hold.limit),
            None => self.episodes.next_deadline(),
        };
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

    /// Raises one rule action; `withdraw`: on an episode end, tell the Slack actor to drop
    /// (or replace by the resolved message) a firing of it still waiting.
    fn act(
        &mut self,
        RuleAction { rule, action }: RuleAction,
        mut now: DateTime<Utc>,
        withdraw: bool,
    ) {
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
                if withdraw {
                    let episode_key = Alert::episode_key(&rule.name, &self.user_id, episode_start);
                    let _ = self
                        .peers
                        .slack
                        .cast(SlackMsg::EpisodeEnded { episode_key });
                }
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
        // The Slack actor counts it in the delivery queue gauge if it queues it.
        let _ = self.peers.slack.cast(SlackMsg::Alert(alert));
    }

    /// Starts (or extends) a hold at `at` (Genesys time): see [`AgentMsg::Hold`].
    fn hold(&mut self, myself: &ActorRef<AgentMsg>, at: DateTime<Utc>) {
        match &mut self.hold {
            Some(hold) => hold.at = hold.at.max(at),
            None => {
                let limit = self.clock.now()
                    + chrono::TimeDelta::from_std(GAP_HOLD_LIMIT).unwrap_or_default();
                self.hold = Some(Box::new(Hold {
                    at,
                    limit,
                    inputs: self.inputs.clone(),
                    changes: Vec::new(),
                }));
                metrics::agents_held(1);
                tracing::debug!(%at, "held until the gap is backfilled");
            }
        }
        self.arm(myself, self.clock.now());
    }

    /// Ends the hold: replays every change kept (with the backfill's, already among them) in
    /// Genesys time order through the rules, each judged at its own instant, from the inputs
    /// the rules last saw; then judges the current state at `now` like any change.
    fn release(&mut self, myself: &ActorRef<AgentMsg>) {
        let Some(hold) = self.hold.take() else {
            return;
        };
        let Hold {
            mut inputs,
            mut changes,
            ..
        } = *hold;
        metrics::agents_held(-1);
        let now = self.clock.now();
        changes.sort_by_key(HeldChange::at);
        let mut actions = Vec::new();
        let mut last = None;
        for change in &changes {
            if !change.apply(&mut inputs) {
                continue;
            }
            last = Some(change.at().min(now));
            // Half a state is not judged (see `evaluate`); the final judgement covers it.
            if inputs.presence.is_none() || inputs.routing.is_none() {
                continue;
            }
            let at = change.at().min(now);
            let view = self.view_of(&inputs);
            actions.extend(self.episodes.on_agent_change_at(&self.rules, at, &view, at));
        }
        actions.extend(self.episodes.on_tick(&self.rules, now));
        let actions = collapse_repeats(actions);
        tracing::debug!(changes = changes.len(), actions = actions.len(),
            episodes = ?self.episodes, "released: replayed the changes kept while held");
        // Firings raised now are late (by the time the gap took to fill): they are sent even
        // if their episode ends before the message's turn comes.
        let episodes = &self.episodes;
        self.late
            .retain(|(rule, _)| episodes.get(rule).is_some_and(|e| e.is_firing()));
        for action in &actions {
            if let EpisodeAction::Fire {
                episode_start,
                repeat: 0,
                ..
            } = action.action
            {
                self.late.push((action.rule.clone(), episode_start));
            }
        }
        self.after(myself, actions, now);
        self.evaluate(myself, last.unwrap_or(now));
        self.publish_current();
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
        if let Some(hold) = &mut self.hold {
            hold.changes.push(HeldChange::Presence(update.clone()));
        }
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
        if let Some(hold) = &mut self.hold {
            hold.changes.push(HeldChange::Routing(update.clone()));
        }
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

    /// Handles one message (see [`AgentMsg`]).
    fn handle(&mut self, myself: &ActorRef<AgentMsg>, message: AgentMsg) {
        match message {
            AgentMsg::Presence(update, source, credit) => {
                self.on_presence(myself, *update, source, credit, true);
            }
            AgentMsg::Routing(update, source, credit) => {
                self.on_routing(myself, update, source, credit, true);
            }
            AgentMsg::Hold { at } => self.hold(myself, at),
            AgentMsg::Backfill { mut updates, until } => {
                updates.sort_by_key(GapUpdate::timestamp);
                let mut changed_at = None;
                for update in updates {
                    let at = update.timestamp();
                    let changed = match update {
                        GapUpdate::Presence(p) => {
                            self.on_presence(myself, p, Source::Backfill, None, false)
                        }
                        GapUpdate::Routing(r) => {
                            self.on_routing(myself, r, Source::Backfill, None, false)
                        }
                    };
                    if changed {
                        changed_at = Some(at);
                    }
                }
                match &self.hold {
                    Some(hold) if until >= hold.at => self.release(myself),
                    Some(_) => {}
                    None => {
                        if let Some(at) = changed_at {
                            self.evaluate(myself, at);
                            self.publish_current();
                        }
                    }
                }
            }
            AgentMsg::Conversations {
                active,
                observed_at,
            } => {
                if let Some(hold) = &mut self.hold {
                    hold.changes.push(HeldChange::Conversations {
                        active,
                        observed_at,
                    });
                }
                if active != self.inputs.active_conversations {
                    self.inputs.active_conversations = active;
                    self.inputs.conversations_changed_at = Some(observed_at);
                    self.evaluate(myself, observed_at);
                    self.publish_current();
                }
            }
            AgentMsg::Rename(name) => {
                if self.user_name.as_deref() != Some(name.as_str()) {
                    self.user_name = Some(name);
                }
            }
            AgentMsg::Peers(peers) => self.peers = peers,
            AgentMsg::Rules(rules) => {
                self.rules = rules;
                self.evaluate(myself, self.clock.now());
            }
            AgentMsg::Queues(queue_ids) => {
                let queue_ids = normalize_queue_ids(queue_ids);
                if queue_ids != self.queue_ids {
                    tracing::debug!(queues = ?queue_ids, "queue membership changed");
                    self.queue_ids = queue_ids;
                    self.evaluate(myself, self.clock.now());
                }
            }
            AgentMsg::Deadline { generation } => {
                if generation == self.generation {
                    self.timer = None;
                    let now = self.clock.now();
                    if let Some(hold) = &self.hold {
                        if now >= hold.limit {
                            tracing::warn!(hold_since = %hold.at,
                                "the stream gap was not backfilled in time; judging the rules on what is known");
                            self.release(myself);
                        } else {
                            self.arm(myself, now);
                        }
                        return;
                    }
                    let actions = self.episodes.on_tick(&self.rules, now);
                    self.after(myself, actions, now);
                }
            }
            AgentMsg::Get(reply) => {
                let _ = reply.send(self.current());
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
                Ok(episodes) => (episodes, hash_of(&json)),
                Err(e) => {
                    tracing::warn!(user_id = %args.user_id, error = %e, "persisted episode log unreadable; starting afresh");
                    (AgentEpisodes::new(), hash_of(""))
                }
            },
            None => (AgentEpisodes::new(), hash_of("")),
        };
        Ok(AgentState {
            user_id: args.user_id,
            user_name: args.user_name,
            division_id: args.division_id,
            queue_ids: normalize_queue_ids(args.queue_ids),
            rules: args.rules,
            peers: args.peers,
            inputs: IdleInputs::default(),
            episodes,
            persisted,
            timer: None,
            generation: 0,
            started: std::time::Instant::now(),
            hold: None,
            held: args.held,
            late: Vec::new(),
            clock: args.clock.clone(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<AgentMsg>,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if std::mem::take(&mut state.held) {
            state.hold(&myself, state.clock.now());
        }
        // A resumed episode log may hold a due repeat: keep its schedule (after the start
        // backfill, when the start is held).
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
        // A span per message (the user id on every line), entered around a plain call:
        // nothing in the handling awaits, so this future holds only its arguments, not a
        // second copy of the message and the span (it is allocated once per agent and lives
        // as long as it: memory per agent, `BENCHMARKS.md` figure 4).
        span.in_scope(|| state.handle(&myself, message));
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<AgentMsg>,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if state.timer.take().is_some() {
            state.peers.deadlines.cancel(&myself);
        }
        if state.hold.take().is_some() {
            metrics::agents_held(-1);
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

    /// Every agent's message loop holds two message-sized slots for its life (ractor's frame
    /// and ours): a large variant costs every agent twice (`BENCHMARKS.md`, figure 4).
    #[test]
    fn an_agent_message_stays_small() {
        assert!(
            std::mem::size_of::<AgentMsg>() <= 64,
            "AgentMsg grew to {} bytes: box the new large variant's payload",
            std::mem::size_of::<AgentMsg>()
        );
    }

    #[test]
    fn a_replay_keeps_only_the_last_repeat_of_an_episode() {
        let start = t("2024-05-01T10:00:00Z");
        let fire = |repeat| RuleAction {
            rule: "idle".into(),
            action: EpisodeAction::Fire {
                episode_start: start,
                repeat,
                send: true,
            },
        };
        let kept = collapse_repeats(vec![fire(0), fire(1), fire(2), fire(3)]);
        assert_eq!(kept, vec![fire(0), fire(3)]);
    }

    #[test]
    fn held_changes_apply_only_when_newer() {
        let mut inputs = IdleInputs::default();
        let routing = |status: &str, at| {
            HeldChange::Routing(RoutingUpdate {
                status: status.into(),
                timestamp: t(at),
            })
        };
        assert!(routing("IDLE", "2024-05-01T10:00:00Z").apply(&mut inputs));
        assert!(!routing("IDLE", "2024-05-01T10:00:00Z").apply(&mut inputs));
        assert!(!routing("INTERACTING", "2024-05-01T09:00:00Z").apply(&mut inputs));
        assert!(routing("INTERACTING", "2024-05-01T10:00:04Z").apply(&mut inputs));
        assert_eq!(inputs.routing.as_ref().unwrap().status, "INTERACTING");
        let conversations = |active, at| HeldChange::Conversations {
            active,
            observed_at: t(at),
        };
        assert!(conversations(1, "2024-05-01T10:00:05Z").apply(&mut inputs));
        assert!(!conversations(0, "2024-05-01T10:00:04Z").apply(&mut inputs));
        assert_eq!(inputs.active_conversations, 1);
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

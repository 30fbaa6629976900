//! The agent actor: one per monitored user. It holds the agent's presence, routing status and
//! active-conversation count, decides which events change the current state, keeps its own idle
//! deadline, and raises one alert per idle episode.
//!
//! Ordering rule: an event older than the one held for the same dimension is stored (history is
//! complete) but does not change the current state. An exact repeat of the event held (same
//! dimension, timestamp and value) is a duplicate delivery and is dropped here; the database's
//! unique key catches the rest.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::Instrument;

use crate::actors::Credit;
use crate::actors::persistence::PersistMsg;
use crate::actors::slack::SlackMsg;
use crate::domain::{
    AgentCurrent, Alert, IdleEpisode, IdleInputs, Kind, PresenceState, RoutingState, Source,
    Transition, UserId,
};
use crate::notification::{PresenceUpdate, RoutingUpdate};

/// The name of the built-in rule.
pub const IDLE_RULE: &str = "idle";

/// Messages of the agent actor.
#[derive(Debug)]
pub enum AgentMsg {
    /// A presence change (from the stream or the snapshot). The credit is released once the
    /// transition is committed (or at once if nothing is stored).
    Presence(PresenceUpdate, Source, Option<Credit>),
    /// A routing-status change.
    Routing(RoutingUpdate, Source, Option<Credit>),
    /// The active-conversation count from `conversationsummary`, observed at the given instant.
    Conversations {
        active: u32,
        observed_at: DateTime<Utc>,
    },
    /// A newer display name (from a user listing).
    Rename(String),
    /// The persistence or Slack actor was restarted: use these from now on.
    Peers(Peers),
    /// Internal: the idle deadline of episode `generation` has passed.
    IdleDeadline { generation: u64 },
    /// The agent's current state (tests, debugging).
    Get(RpcReplyPort<AgentCurrent>),
}

/// The actors an agent talks to.
#[derive(Debug, Clone)]
pub struct Peers {
    pub persistence: ActorRef<PersistMsg>,
    pub slack: ActorRef<SlackMsg>,
}

/// Start-up arguments.
#[derive(Debug, Clone)]
pub struct AgentArgs {
    pub user_id: UserId,
    pub user_name: Option<String>,
    /// Alert when idle for this long.
    pub idle_threshold: Duration,
    pub peers: Peers,
}

/// The agent actor (stateless handler; state in [`AgentState`]).
pub struct AgentActor;

/// An idle episode in progress.
#[derive(Debug)]
struct Episode {
    since: DateTime<Utc>,
    reason: String,
    alerted: bool,
    generation: u64,
    timer: Option<JoinHandle<Result<(), ractor::MessagingErr<AgentMsg>>>>,
}

/// What one agent actor owns.
#[derive(Debug)]
pub struct AgentState {
    user_id: UserId,
    user_name: Option<String>,
    threshold: Duration,
    peers: Peers,
    inputs: IdleInputs,
    presence_label: Option<String>,
    episode: Option<Episode>,
    next_generation: u64,
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
}

fn disposition<T: PartialEq>(
    held: Option<(DateTime<Utc>, T)>,
    incoming: (DateTime<Utc>, T),
) -> Disposition {
    match held {
        None => Disposition::Current,
        Some((at, value)) if at == incoming.0 && value == incoming.1 => Disposition::Duplicate,
        Some((at, _)) if incoming.0 < at => Disposition::Stale,
        Some(_) => Disposition::Current,
    }
}

impl AgentState {
    fn transition(
        &self,
        kind: Kind,
        state: String,
        previous: Option<String>,
        label: Option<String>,
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
            idle_since: self.episode.as_ref().map(|e| e.since),
            updated_at: Utc::now(),
        }
    }

    fn publish_current(&self) {
        let _ = self
            .peers
            .persistence
            .cast(PersistMsg::Agent(self.current()));
    }

    /// Starts, keeps or ends the idle episode after a state change.
    fn reevaluate(&mut self, myself: &ActorRef<AgentMsg>) {
        match (self.inputs.idle_episode(), self.episode.as_ref()) {
            (Some(IdleEpisode { since, reason }), None) => {
                let generation = self.next_generation;
                self.next_generation += 1;
                // Timestamps in the future are treated as now.
                let now = Utc::now();
                let start = since.min(now);
                let deadline = start
                    + chrono::Duration::from_std(self.threshold).unwrap_or(chrono::TimeDelta::MAX);
                let delay = (deadline - now).to_std().unwrap_or(Duration::ZERO);
                let timer = myself.send_after(delay, move || AgentMsg::IdleDeadline { generation });
                tracing::debug!(user_id = %self.user_id, since = %since, delay_ms = delay.as_millis() as u64, "idle episode started");
                self.episode = Some(Episode {
                    since,
                    reason,
                    alerted: false,
                    generation,
                    timer: Some(timer),
                });
            }
            (None, Some(_)) => {
                if let Some(episode) = self.episode.take() {
                    if let Some(timer) = episode.timer {
                        timer.abort();
                    }
                    tracing::debug!(user_id = %self.user_id, alerted = episode.alerted, "idle episode ended");
                }
            }
            _ => {}
        }
    }

    fn fire(&mut self, generation: u64) {
        let Some(episode) = self.episode.as_mut() else {
            return;
        };
        if episode.generation != generation || episode.alerted {
            return; // a stale timer, or already alerted for this episode
        }
        episode.alerted = true;
        episode.timer = None;
        let alert = Alert {
            alert_key: format!(
                "{IDLE_RULE}:{}:{}",
                self.user_id,
                episode.since.timestamp_millis()
            ),
            rule: IDLE_RULE.to_string(),
            user_id: self.user_id.clone(),
            user_name: self.user_name.clone(),
            state: episode.reason.clone(),
            since: episode.since,
            threshold: self.threshold,
            fired_at: Utc::now(),
        };
        tracing::info!(user_id = %self.user_id, state = %alert.state, since = %alert.since, "idle alert");
        // Persistence first: the record exists before Slack reports its outcome.
        let _ = self
            .peers
            .persistence
            .cast(PersistMsg::AlertFired(alert.clone()));
        let _ = self.peers.slack.cast(SlackMsg::Alert(alert));
    }

    fn on_presence(
        &mut self,
        myself: &ActorRef<AgentMsg>,
        update: PresenceUpdate,
        source: Source,
        credit: Option<Credit>,
    ) {
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
            Disposition::Duplicate => drop(credit),
            Disposition::Stale => {
                let row = self.transition(
                    Kind::Presence,
                    update.system,
                    None,
                    update.label,
                    update.timestamp,
                    source,
                );
                let _ = self
                    .peers
                    .persistence
                    .cast(PersistMsg::Transition(row, credit));
            }
            Disposition::Current => {
                let previous = self.inputs.presence.as_ref().map(|p| p.system.clone());
                let row = self.transition(
                    Kind::Presence,
                    update.system.clone(),
                    previous,
                    update.label.clone(),
                    update.timestamp,
                    source,
                );
                let _ = self
                    .peers
                    .persistence
                    .cast(PersistMsg::Transition(row, credit));
                self.presence_label = update.label.clone();
                self.inputs.presence = Some(PresenceState {
                    system: update.system,
                    definition_id: update.definition_id,
                    label: update.label,
                    since: update.timestamp,
                });
                self.reevaluate(myself);
                self.publish_current();
            }
        }
    }

    fn on_routing(
        &mut self,
        myself: &ActorRef<AgentMsg>,
        update: RoutingUpdate,
        source: Source,
        credit: Option<Credit>,
    ) {
        let held = self
            .inputs
            .routing
            .as_ref()
            .map(|r| (r.since, r.status.clone()));
        match disposition(held, (update.timestamp, update.status.clone())) {
            Disposition::Duplicate => drop(credit),
            Disposition::Stale => {
                let row = self.transition(
                    Kind::Routing,
                    update.status,
                    None,
                    None,
                    update.timestamp,
                    source,
                );
                let _ = self
                    .peers
                    .persistence
                    .cast(PersistMsg::Transition(row, credit));
            }
            Disposition::Current => {
                let previous = self.inputs.routing.as_ref().map(|r| r.status.clone());
                let row = self.transition(
                    Kind::Routing,
                    update.status.clone(),
                    previous,
                    None,
                    update.timestamp,
                    source,
                );
                let _ = self
                    .peers
                    .persistence
                    .cast(PersistMsg::Transition(row, credit));
                self.inputs.routing = Some(RoutingState {
                    status: update.status,
                    since: update.timestamp,
                });
                self.reevaluate(myself);
                self.publish_current();
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
        Ok(AgentState {
            user_id: args.user_id,
            user_name: args.user_name,
            threshold: args.idle_threshold,
            peers: args.peers,
            inputs: IdleInputs::default(),
            presence_label: None,
            episode: None,
            next_generation: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        let span = tracing::info_span!("agent", user_id = %state.user_id);
        // A span per message (user or channel id on every line), kept light: no allocation
        // beyond the span itself.
        async move {
            match message {
                AgentMsg::Presence(update, source, credit) => {
                    state.on_presence(&myself, update, source, credit)
                }
                AgentMsg::Routing(update, source, credit) => {
                    state.on_routing(&myself, update, source, credit)
                }
                AgentMsg::Conversations {
                    active,
                    observed_at,
                } => {
                    if active != state.inputs.active_conversations {
                        state.inputs.active_conversations = active;
                        state.inputs.conversations_changed_at = Some(observed_at);
                        state.reevaluate(&myself);
                        state.publish_current();
                    }
                }
                AgentMsg::Rename(name) => {
                    if state.user_name.as_deref() != Some(name.as_str()) {
                        state.user_name = Some(name);
                    }
                }
                AgentMsg::Peers(peers) => state.peers = peers,
                AgentMsg::IdleDeadline { generation } => state.fire(generation),
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
        _myself: ActorRef<AgentMsg>,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.episode.as_mut().and_then(|e| e.timer.take()) {
            timer.abort();
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
        // Same instant, different value: keep the newer arrival as current; the store dedupes.
        assert_eq!(
            disposition(Some((a, "IDLE")), (a, "INTERACTING")),
            Disposition::Current
        );
    }
}

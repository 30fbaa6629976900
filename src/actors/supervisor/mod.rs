//! The root supervisor. It starts the persistence and Slack actors, lists the monitored users,
//! starts one agent actor per user and one connection actor per notification channel (at most
//! `topics_per_channel` users each), takes the snapshot of current states once every channel is
//! subscribed (and again after every reconnect), keeps each agent told which queues it is a
//! member of when a rule is scoped by queue (listed at bootstrap, on every snapshot and after a
//! rules reload), restarts failed children with backoff, and
//! answers `/readyz` with its view of them. See `actors.md` for the tree and the strategy.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tokio::sync::{Semaphore, mpsc};

use crate::actors::Credit;
use crate::actors::agent::{AgentActor, AgentArgs, AgentMsg, Peers};
use crate::actors::connection::{ConnectionActor, ConnectionArgs, ConnectionMsg};
use crate::actors::deadline::Deadlines;
use crate::actors::membership::{Listing, Scope, assign, diff, list_monitored};
use crate::actors::persistence::{PersistMsg, PersistenceActor, PersistenceArgs};
use crate::actors::retention::{RetentionActor, RetentionArgs, RetentionMsg};
use crate::actors::slack::{SlackActor, SlackArgs, SlackMsg};
use crate::clock::Clock;
use crate::config::{DeliveryConfig, PersistenceConfig, RetentionConfig};
use crate::domain::{Source, UserId};
use crate::genesys::{GenesysClient, GenesysError};
use crate::health::{
    ActorStatus, BackfillRun, ConnectionStatus, HealthReport, ReloadOutcome, RulesInForce,
};
use crate::metrics;
use crate::notification::updates_from_user;
use crate::presence::PresenceCatalog;
use crate::protocol::{PresenceDefinition, User};
use crate::rules::RuleSet;

mod gaps;
pub use gaps::{CHECKPOINT_INTERVAL, GapRequest, MAX_START_GAP};

/// Messages of the supervisor.
pub enum SupervisorMsg {
    /// List presence definitions and users, then start agents and connections.
    Bootstrap,
    /// Internal: the result of the bootstrap listing (presence definitions, users, and the
    /// members of the queues the rules name).
    Bootstrapped(Result<(Vec<PresenceDefinition>, Vec<User>, QueueMembership), GenesysError>),
    /// List the members of the queues the rules in force name (after a rules reload); with no
    /// queue-scoped rule, clears every agent's queues without any call.
    RefreshQueues,
    /// Internal: queue members were listed (bootstrap, snapshot, refresh): give each agent its
    /// queue ids.
    QueuesListed(QueueMembership),
    /// A connection actor has its channel subscribed and a socket open. `gap_from` (local UTC)
    /// is set when its stream was incomplete since then (a lost socket, a replaced channel):
    /// the gap is backfilled, labelled `cause`.
    ConnectionUp {
        index: usize,
        reconnected: bool,
        gap_from: Option<chrono::DateTime<chrono::Utc>>,
        cause: &'static str,
    },
    /// A connection lost its socket (the stream of its users is incomplete until it is up).
    ConnectionDown { index: usize },
    /// A connection replaced its subscriptions after a membership change: snapshot the users.
    Resubscribed { index: usize },
    /// `v2.routing.queues.<id>.users`: a user joined or left a queue.
    QueueMember {
        queue_id: String,
        user: UserId,
        joined: bool,
    },
    /// Re-list the monitored users (timer every `MEMBERSHIP_REFRESH`, queue joins and leaves).
    Relist,
    /// Internal: the result of a re-listing.
    Relisted(Result<Listing, GenesysError>),
    /// Internal: run the next queued gap backfill, if none is running.
    Backfill,
    /// Internal: a gap backfill finished.
    BackfillDone(BackfillRun, Option<GapRequest>),
    /// Internal: timer: record up to when the stream is complete (`stream_state`).
    Checkpoint,
    /// Internal: the checkpoint task found the stream complete up to this Genesys instant
    /// (`None`: not complete now).
    CheckpointAt(Option<chrono::DateTime<chrono::Utc>>),
    /// Measure the clock offset to Genesys (`GET /api/v2/date`): at start, then hourly.
    MeasureClock,
    /// Internal: the measured offset (Genesys minus local).
    ClockMeasured(Result<chrono::TimeDelta, GenesysError>),
    /// Re-read the presence definitions (hourly, and when an event names an unknown
    /// definition id, at most once a minute).
    RefreshDefinitions,
    /// Internal: the presence definitions were listed.
    DefinitionsListed(Result<Vec<PresenceDefinition>, GenesysError>),
    /// A connection saw a presence definition id the catalog does not know.
    UnknownDefinition(String),
    /// Take a snapshot of every user's current state (after subscribing).
    Snapshot,
    /// Internal: a snapshot finished (users fed, or the error).
    SnapshotDone(Result<usize, String>),
    /// Internal: restart a failed child after its backoff.
    Restart(Child),
    /// A fatal error (e.g. `invalid_client`): the service must stop.
    Fatal(String),
    /// The readiness report.
    Health(RpcReplyPort<HealthReport>),
    /// The agent actor of a user (tests, debugging).
    Agent(UserId, RpcReplyPort<Option<ActorRef<AgentMsg>>>),
    /// Re-read `RULES_FILE` (SIGHUP, `POST /api/v1/rules/reload`): valid rules replace the ones
    /// in force in every agent; an invalid file is refused with every problem and the running
    /// rules stay. Replies with the outcome.
    ReloadRules(RpcReplyPort<ReloadOutcome>),
    /// The rules in force, where they came from and the last reload.
    Rules(RpcReplyPort<RulesInForce>),
    /// A silence was created (`POST /api/v1/silences`): passed on to the Slack actor
    /// ([`SlackMsg::Silenced`]), which drops the waiting messages it matches, firing and
    /// resolved.
    Silenced(crate::domain::Silence),
    /// The retention actor, if `RETENTION_DAYS` is set (tests, debugging).
    Retention(RpcReplyPort<Option<ActorRef<RetentionMsg>>>),
    /// Graceful stop: close every socket with a normal closure, wait until every accepted
    /// transition is committed (bounded by `deadline`), then reply with the number of accepted
    /// transitions that are **not** committed (0: everything is). The persistence actor is told
    /// the same deadline ([`PersistMsg::StopBy`]), so nothing is committed after it and the
    /// count stays true.
    Shutdown {
        deadline: Duration,
        reply: RpcReplyPort<usize>,
    },
}

/// Queue membership as listed from Genesys for the queue ids the rules name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueMembership {
    /// The queue ids asked for (lowercase, sorted: [`RuleSet::queue_ids`]).
    pub queue_ids: Vec<String>,
    /// Each member user and the queues (of `queue_ids`) it is a member of.
    pub by_user: HashMap<UserId, Vec<String>>,
    /// Queues that could not be read (403, 404) with the error: treated as having no members.
    pub unreadable: Vec<(String, String)>,
}

/// Lists the members of every queue in `queue_ids` (one queue after the other), with no call at
/// all when it is empty. A queue answering 403 or 404 goes to
/// [`QueueMembership::unreadable`] and counts as empty; any other error fails the whole
/// listing, to be retried like the rest of the bootstrap or snapshot.
pub async fn fetch_queue_membership(
    client: &GenesysClient,
    queue_ids: Vec<String>,
) -> Result<QueueMembership, GenesysError> {
    let mut membership = QueueMembership {
        queue_ids,
        ..QueueMembership::default()
    };
    for queue in &membership.queue_ids {
        match client.queue_members(queue).await {
            Ok(members) => {
                for member in members {
                    let Ok(user) = UserId::parse(&member) else {
                        continue;
                    };
                    let queues = membership.by_user.entry(user).or_default();
                    if !queues.contains(queue) {
                        queues.push(queue.clone());
                    }
                }
            }
            Err(
                e @ GenesysError::Api {
                    status: 403 | 404, ..
                },
            ) => {
                membership.unreadable.push((queue.clone(), e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(membership)
}

/// How often the clock offset and the presence definitions are refreshed.
pub const HOURLY: Duration = Duration::from_secs(3600);

/// The least time between two presence-definition refreshes asked by unknown ids.
pub const DEFINITIONS_MIN_INTERVAL: Duration = Duration::from_secs(60);

/// Which child an actor is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Child {
    Persistence,
    Slack,
    Retention,
    Connection(usize),
    Agent(UserId),
}

impl Child {
    fn name(&self) -> String {
        match self {
            Child::Persistence => "persistence".into(),
            Child::Slack => "slack".into(),
            Child::Retention => "retention".into(),
            Child::Connection(i) => format!("connection-{i}"),
            Child::Agent(u) => format!("agent-{u}"),
        }
    }
}

/// Start-up arguments of the supervisor.
pub struct SupervisorArgs {
    pub client: GenesysClient,
    pub db: sea_orm::DatabaseConnection,
    pub persistence: PersistenceConfig,
    /// Alert destinations and delivery tuning (the Slack actor's).
    pub delivery: DeliveryConfig,
    /// The alert rules in force at start.
    pub rules: Arc<RuleSet>,
    /// Where the rules came from (`RULES_FILE`), re-read on reload; `None` = the built-in rule.
    pub rules_path: Option<PathBuf>,
    pub ping_interval: Duration,
    pub silence_timeout: Duration,
    pub topics_per_channel: usize,
    /// Deletion of old rows (`None`: keep everything, no retention actor).
    pub retention: Option<RetentionConfig>,
    /// `GENESYS_QUEUE_IDS` / `GENESYS_DIVISION_IDS`: which users are monitored.
    pub scope: Scope,
    /// How often the monitored users are re-listed (`MEMBERSHIP_REFRESH`, default 10 min).
    pub membership_refresh: Duration,
    /// Subtracted from the start of every gap before it is backfilled (`BACKFILL_MARGIN`).
    pub backfill_margin: Duration,
    /// Genesys time (local clock plus the measured offset), shared with the agents.
    pub clock: Clock,
    /// Where a fatal error is reported (the process exits with it).
    pub fatal: mpsc::UnboundedSender<String>,
}

/// Restart bookkeeping of one child.
#[derive(Debug, Clone, Default)]
struct ChildInfo {
    restarts: u32,
    last_error: Option<String>,
    running: bool,
}

/// What the supervisor owns.
pub struct SupervisorState {
    args: SupervisorArgs,
    credits: Arc<Semaphore>,
    catalog: Arc<PresenceCatalog>,
    persistence: Option<ActorRef<PersistMsg>>,
    slack: Option<ActorRef<SlackMsg>>,
    /// The one deadline scheduler of every agent (a task that cannot fail: never restarted).
    deadlines: Deadlines,
    retention: Option<ActorRef<RetentionMsg>>,
    connections: Vec<Option<ActorRef<ConnectionMsg>>>,
    connection_users: Vec<Vec<UserId>>,
    connection_up: Vec<bool>,
    user_connection: HashMap<UserId, usize>,
    user_names: HashMap<UserId, Option<String>>,
    user_divisions: HashMap<UserId, Option<String>>,
    /// Queue ids of each member user, as last listed (handed to agents as they start).
    user_queues: HashMap<UserId, Vec<String>>,
    /// Queues already reported as unreadable (logged once while they stay so).
    unreadable_queues: HashSet<String>,
    /// Episode logs read from the database at bootstrap, handed to agents as they start.
    saved_episodes: HashMap<UserId, String>,
    /// Agent actors stopped because their user left the monitored set, by actor id: when one
    /// has terminated (so it sends nothing more), its rows are deleted (`PersistMsg::Forget`).
    retiring: HashMap<ractor::ActorId, UserId>,
    /// Clean-ups (`Forget`, `KeepOnly`) not yet handed to the persistence actor because it was
    /// restarting; sent, in order, when it is back.
    unsent_cleanup: Vec<PersistMsg>,
    rules: Arc<RuleSet>,
    last_reload: Option<ReloadOutcome>,
    agents: HashMap<UserId, ActorRef<AgentMsg>>,
    by_id: HashMap<ActorId, Child>,
    info: HashMap<Child, ChildInfo>,
    bootstrapped: bool,
    bootstrap_failures: u32,
    bootstrap_error: Option<String>,
    snapshot_running: bool,
    snapshot_again: bool,
    last_snapshot: Option<Result<usize, String>>,
    shutting_down: bool,
    /// Up to when the stream was complete when the service last ran (read at bootstrap).
    saved_complete_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Every connection was up at least once (the start backfill is queued then).
    stream_started: bool,
    backfills: std::collections::VecDeque<GapRequest>,
    backfill_running: bool,
    /// The queue's head failed and waits for its retry until then: a gap queued meanwhile
    /// does not cut the backoff short.
    backfill_retry_at: Option<tokio::time::Instant>,
    last_backfill: Option<BackfillRun>,
    checkpoint_running: bool,
    relisting: bool,
    relist_again: bool,
    /// The last re-listing found no user at all while some were monitored: the next one must
    /// confirm it before every agent is dropped (a transient empty page is not a mass
    /// deactivation).
    empty_listing_seen: bool,
    /// The users of every connection that carry the extra (queue) topics: channel 0.
    extra_topics: Vec<String>,
    clock_measured: bool,
    /// Connections whose actor failed: their stream is incomplete since then (local UTC).
    pending_gaps: HashMap<usize, chrono::DateTime<chrono::Utc>>,
    definitions_refreshing: bool,
    /// The last refresh asked by an unknown definition id (at most one a minute).
    unknown_refreshed: Option<std::time::Instant>,
    unknown_refresh_scheduled: bool,
}

fn restart_delay(restarts: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << restarts.min(8))
        .min(Duration::from_secs(30))
}

impl SupervisorState {
    fn peers(&self) -> Option<Peers> {
        Some(Peers {
            persistence: self.persistence.clone()?,
            slack: self.slack.clone()?,
            deadlines: self.deadlines.clone(),
        })
    }

    fn track(&mut self, cell: &ActorCell, child: Child) {
        self.by_id.insert(cell.get_id(), child.clone());
        self.info.entry(child).or_default().running = true;
    }

    async fn spawn_persistence(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let args = PersistenceArgs {
            db: self.args.db.clone(),
            config: self.args.persistence,
        };
        let (actor, _) =
            Actor::spawn_linked(None, PersistenceActor, args, myself.get_cell()).await?;
        self.track(&actor.get_cell(), Child::Persistence);
        self.persistence = Some(actor);
        for message in std::mem::take(&mut self.unsent_cleanup) {
            self.cleanup(message);
        }
        Ok(())
    }

    /// Hands a clean-up of the `agents` rows (`Forget`, `KeepOnly`) to the
    /// persistence actor, or keeps it until the actor is back if it is restarting.
    fn cleanup(&mut self, message: PersistMsg) {
        let message = match &self.persistence {
            Some(persistence) => match persistence.cast(message) {
                Ok(()) => return,
                Err(ractor::MessagingErr::SendErr(message)) => message,
                Err(_) => return,
            },
            None => message,
        };
        self.unsent_cleanup.push(message);
    }

    async fn spawn_slack(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let persistence = self
            .persistence
            .clone()
            .ok_or("persistence actor is not running")?;
        let args = SlackArgs {
            config: self.args.delivery.clone(),
            persistence,
            db: Some(self.args.db.clone()),
        };
        let (actor, _) = Actor::spawn_linked(None, SlackActor, args, myself.get_cell()).await?;
        self.track(&actor.get_cell(), Child::Slack);
        self.slack = Some(actor);
        Ok(())
    }

    async fn spawn_retention(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(config) = self.args.retention else {
            return Ok(());
        };
        let args = RetentionArgs {
            db: self.args.db.clone(),
            config,
        };
        let (actor, _) = Actor::spawn_linked(None, RetentionActor, args, myself.get_cell()).await?;
        self.track(&actor.get_cell(), Child::Retention);
        self.retention = Some(actor);
        Ok(())
    }

    async fn spawn_agent(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        user: &UserId,
    ) -> Result<(), ActorProcessingErr> {
        let peers = self
            .peers()
            .ok_or("persistence or slack actor is not running")?;
        let args = AgentArgs {
            user_id: user.clone(),
            user_name: self.user_names.get(user).cloned().flatten(),
            division_id: self.user_divisions.get(user).cloned().flatten(),
            queue_ids: self.user_queues.get(user).cloned().unwrap_or_default(),
            rules: self.rules.clone(),
            episodes: self.saved_episodes.remove(user),
            peers,
            clock: self.args.clock.clone(),
            // Started after a downtime the start backfill will fill: hold the rules until then.
            held: !self.stream_started && self.saved_complete_until.is_some(),
        };
        let (actor, _) = Actor::spawn_linked(None, AgentActor, args, myself.get_cell()).await?;
        self.by_id
            .insert(actor.get_id(), Child::Agent(user.clone()));
        self.agents.insert(user.clone(), actor);
        Ok(())
    }

    async fn spawn_connection(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        index: usize,
    ) -> Result<(), ActorProcessingErr> {
        let users = self.connection_users[index].clone();
        let agents = users
            .iter()
            .filter_map(|u| Some((u.clone(), self.agents.get(u)?.clone())))
            .collect();
        let args = ConnectionArgs {
            index,
            client: self.args.client.clone(),
            users,
            extra_topics: self.extra_topics_of(index),
            clock: self.args.clock.clone(),
            agents,
            catalog: self.catalog.clone(),
            credits: self.credits.clone(),
            ping_interval: self.args.ping_interval,
            silence_timeout: self.args.silence_timeout,
            supervisor: myself.clone(),
        };
        let (actor, _) =
            Actor::spawn_linked(None, ConnectionActor, args, myself.get_cell()).await?;
        self.track(&actor.get_cell(), Child::Connection(index));
        self.connection_up[index] = false;
        self.connections[index] = Some(actor);
        Ok(())
    }

    /// The extra topics of connection `index`: the queue-membership topics ride on the first
    /// connection.
    fn extra_topics_of(&self, index: usize) -> Vec<String> {
        if index == 0 {
            self.extra_topics.clone()
        } else {
            Vec::new()
        }
    }

    /// The queue-membership topics (`v2.routing.queues.<id>.users`) of the scope's queues and of
    /// the queues the rules in force name, sorted, without repeats.
    fn queue_topics(&self) -> Vec<String> {
        let mut queues: Vec<String> = self
            .args
            .scope
            .queue_ids
            .iter()
            .cloned()
            .chain(self.rules.queue_ids())
            .collect();
        queues.sort();
        queues.dedup();
        queues
            .iter()
            .map(|q| crate::protocol::queue_users_topic(q))
            .collect()
    }

    /// After a rules reload: the queue topics follow the queues the rules now name (on
    /// connection 0, which keeps its users). Topics that would not fit beside its users
    /// (1,000 per channel) are not added: a warning says so, and membership changes of those
    /// queues are still picked up by the snapshot and the periodic listing.
    fn refresh_queue_topics(&mut self) {
        let topics = self.queue_topics();
        if topics == self.extra_topics {
            return;
        }
        let users = self.connection_users.first().map_or(0, Vec::len);
        if users + topics.len() > self.args.topics_per_channel.max(1) {
            tracing::warn!(
                queues = topics.len(),
                "the queue-membership topics of the reloaded rules do not fit on the first channel; \
                 their joins and leaves are seen at the next listing"
            );
            return;
        }
        self.extra_topics = topics;
        if let (Some(Some(conn)), Some(users)) =
            (self.connections.first(), self.connection_users.first())
        {
            let agents = users
                .iter()
                .filter_map(|u| Some((u.clone(), self.agents.get(u)?.clone())))
                .collect();
            let _ = conn.cast(ConnectionMsg::SetUsers {
                users: users.clone(),
                agents,
                extra_topics: self.extra_topics.clone(),
            });
        }
    }

    /// How many users connection `index` may carry (1,000 topics per channel, reference §3).
    fn capacity_of(&self, index: usize) -> usize {
        let per_channel = self.args.topics_per_channel.max(1);
        if index == 0 {
            per_channel.saturating_sub(self.extra_topics.len()).max(1)
        } else {
            per_channel
        }
    }

    /// Connections with users (an emptied connection is retired).
    fn live_connections(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.connection_users.len()).filter(|i| !self.connection_users[*i].is_empty())
    }

    fn all_up(&self) -> bool {
        self.live_connections().all(|i| self.connection_up[i])
    }

    /// Periodic work once the stream is up: completeness checkpoints, membership re-listing,
    /// hourly clock offset and presence definitions.
    fn start_timers(&mut self, myself: &ActorRef<SupervisorMsg>) {
        myself.send_interval(CHECKPOINT_INTERVAL, || SupervisorMsg::Checkpoint);
        myself.send_interval(self.args.membership_refresh, || SupervisorMsg::Relist);
        myself.send_interval(HOURLY, || SupervisorMsg::MeasureClock);
        myself.send_interval(HOURLY, || SupervisorMsg::RefreshDefinitions);
    }

    /// The refs of the connections that carry users; `None` for one that is restarting.
    fn live_connection_refs(&self) -> Vec<Option<ActorRef<ConnectionMsg>>> {
        self.live_connections()
            .map(|i| self.connections[i].clone())
            .collect()
    }

    /// Re-lists the monitored users in a task ([`SupervisorMsg::Relisted`]).
    fn start_relist(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if !self.bootstrapped || self.shutting_down {
            return;
        }
        if self.relisting {
            self.relist_again = true;
            return;
        }
        self.relisting = true;
        let client = self.args.client.clone();
        let scope = self.args.scope.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = list_monitored(&client, &scope).await;
            let _ = myself.cast(SupervisorMsg::Relisted(result));
        });
    }

    /// Applies a re-listing: new users get an agent actor and a topic on a channel with room
    /// (or a new channel), users no longer listed are unsubscribed and their agent actors
    /// stopped; channels left empty are closed and left.
    async fn apply_listing(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        listing: Listing,
    ) -> Result<(), ActorProcessingErr> {
        // Every monitored user, an agent waiting for its restart included.
        let current: HashSet<UserId> = self.user_names.keys().cloned().collect();
        let mut listed = Vec::with_capacity(listing.users.len());
        for user in &listing.users {
            let Ok(id) = UserId::parse(&user.id) else {
                continue;
            };
            self.user_divisions
                .insert(id.clone(), user.division.as_ref().map(|d| d.id.clone()));
            self.user_names.insert(id.clone(), user.name.clone());
            listed.push(id);
        }
        let change = diff(&current, &listed);
        if change.added.is_empty() && change.removed.is_empty() {
            return Ok(());
        }
        tracing::info!(
            added = change.added.len(),
            removed = change.removed.len(),
            "monitored users changed"
        );
        for user in &change.removed {
            self.user_connection.remove(user);
            self.user_names.remove(user);
            self.user_divisions.remove(user);
            if let Some(agent) = self.agents.remove(user) {
                // Forget it first, so its stop is not taken for a failure to restart.
                self.by_id.remove(&agent.get_id());
                self.info.remove(&Child::Agent(user.clone()));
                // Its rows are deleted once it has stopped (`handle_supervisor_evt`), so no
                // update it sends before then brings them back.
                self.retiring.insert(agent.get_id(), user.clone());
                agent.stop(Some("no longer monitored".into()));
            }
        }
        for user in &change.added {
            self.spawn_agent(myself, user).await?;
        }
        let caps: Vec<usize> = (0..self.connection_users.len() + change.added.len())
            .map(|i| self.capacity_of(i))
            .collect();
        let per_channel = self.args.topics_per_channel.max(1);
        let mut channels = std::mem::take(&mut self.connection_users);
        let changed = assign(
            &mut channels,
            |i| caps.get(i).copied().unwrap_or(per_channel),
            per_channel,
            &change,
        );
        self.connection_users = channels;
        for (index, users) in self.connection_users.iter().enumerate() {
            for user in users {
                self.user_connection.insert(user.clone(), index);
            }
        }
        for index in changed {
            if index >= self.connections.len() {
                self.connections.resize(index + 1, None);
                self.connection_up.resize(index + 1, false);
            }
            let users = self.connection_users[index].clone();
            match self.connections[index].clone() {
                None if users.is_empty() => {}
                None => self.spawn_connection(myself, index).await?,
                Some(conn) if users.is_empty() => {
                    // Retire it: close the socket, leave the channel, stop the actor.
                    self.by_id.remove(&conn.get_id());
                    self.info.remove(&Child::Connection(index));
                    self.connections[index] = None;
                    self.connection_up[index] = false;
                    tokio::spawn(async move {
                        let _ = ractor::call_t!(conn, ConnectionMsg::Close, 3000);
                        conn.stop(Some("no users left".into()));
                    });
                }
                Some(conn) => {
                    let agents = users
                        .iter()
                        .filter_map(|u| Some((u.clone(), self.agents.get(u)?.clone())))
                        .collect();
                    let _ = conn.cast(ConnectionMsg::SetUsers {
                        users,
                        agents,
                        extra_topics: self.extra_topics_of(index),
                    });
                }
            }
        }
        Ok(())
    }

    fn start_snapshot(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if self.snapshot_running {
            self.snapshot_again = true;
            return;
        }
        self.snapshot_running = true;
        let client = self.args.client.clone();
        let agents = self.agents.clone();
        let catalog = self.catalog.clone();
        let credits = self.credits.clone();
        let clock = self.args.clock.clone();
        let myself = myself.clone();
        let queue_ids = self.rules.queue_ids();
        tokio::spawn(async move {
            let result = async {
                // Membership may have changed while no one looked: list it again with the
                // states (no call when no rule is scoped by queue).
                if !queue_ids.is_empty() {
                    let membership = fetch_queue_membership(&client, queue_ids)
                        .await
                        .map_err(|e| e.to_string())?;
                    let _ = myself.cast(SupervisorMsg::QueuesListed(membership));
                }
                match client.list_active_users().await {
                    Ok(users) => {
                        Ok(feed_snapshot(&clock, &users, &agents, &catalog, &credits).await)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            .await;
            let _ = myself.cast(SupervisorMsg::SnapshotDone(result));
        });
    }

    /// Lists the members of the queues the rules in force name, in a task (never in a
    /// handler); the result comes back as [`SupervisorMsg::QueuesListed`]. Without any
    /// queue-scoped rule, applies an empty membership at once, without a call.
    fn refresh_queues(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let queue_ids = self.rules.queue_ids();
        if queue_ids.is_empty() {
            self.apply_queues(myself, QueueMembership::default());
            return;
        }
        let client = self.args.client.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            match fetch_queue_membership(&client, queue_ids).await {
                Ok(membership) => {
                    let _ = me.cast(SupervisorMsg::QueuesListed(membership));
                }
                Err(e) if e.is_fatal() => {
                    let _ = me.cast(SupervisorMsg::Fatal(e.to_string()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing queue members failed; retrying");
                    me.send_after(Duration::from_secs(5), || SupervisorMsg::RefreshQueues);
                }
            }
        });
    }

    /// Keeps a listed membership and sends each agent whose queues changed its new queue ids.
    /// A listing made for other queue ids than the rules in force now name (the rules were
    /// reloaded meanwhile) is applied, then listed again.
    fn apply_queues(&mut self, myself: &ActorRef<SupervisorMsg>, membership: QueueMembership) {
        for (queue, error) in &membership.unreadable {
            if self.unreadable_queues.insert(queue.clone()) {
                tracing::warn!(queue_id = %queue, %error,
                    "queue members cannot be read: the queue counts as having no members");
            }
        }
        self.unreadable_queues
            .retain(|q| membership.unreadable.iter().any(|(u, _)| u == q));
        if membership.queue_ids != self.rules.queue_ids() {
            let _ = myself.cast(SupervisorMsg::RefreshQueues);
        }
        let previous = std::mem::replace(&mut self.user_queues, membership.by_user);
        for (user, agent) in &self.agents {
            let now = self.user_queues.get(user);
            if now != previous.get(user) {
                let _ = agent.cast(AgentMsg::Queues(now.cloned().unwrap_or_default()));
            }
        }
        tracing::debug!(
            queues = membership.queue_ids.len(),
            members = self.user_queues.len(),
            "queue membership applied"
        );
    }

    async fn on_bootstrapped(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        definitions: Vec<PresenceDefinition>,
        users: Vec<User>,
        queues: QueueMembership,
    ) -> Result<(), ActorProcessingErr> {
        // Before any agent starts, so each starts with its queues.
        self.apply_queues(myself, queues);
        self.catalog = Arc::new(PresenceCatalog::from_definitions(&definitions));
        match crate::db::alerting::load_episodes(&self.args.db).await {
            Ok(saved) => {
                if !saved.is_empty() {
                    tracing::info!(agents = saved.len(), "resuming persisted alert episodes");
                }
                self.saved_episodes = saved;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read persisted alert episodes; starting afresh")
            }
        }
        match crate::db::stream_complete_until(&self.args.db).await {
            Ok(saved) => self.saved_complete_until = saved,
            Err(e) => {
                tracing::error!(error = %e, "could not read up to when the stream was complete; no start backfill")
            }
        }
        let mut ids = Vec::with_capacity(users.len());
        for user in &users {
            match UserId::parse(&user.id) {
                Ok(id) => {
                    self.user_divisions
                        .insert(id.clone(), user.division.as_ref().map(|d| d.id.clone()));
                    if self
                        .user_names
                        .insert(id.clone(), user.name.clone())
                        .is_none()
                    {
                        ids.push(id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "user with an unusable id skipped"),
            }
        }
        tracing::info!(
            users = ids.len(),
            presence_definitions = self.catalog.len(),
            "monitored users listed"
        );
        // Rows of users monitored by an earlier run (or before a restart with another scope)
        // would be listed as current: delete them, history and alerts kept.
        self.cleanup(PersistMsg::KeepOnly(ids.clone()));
        for id in &ids {
            self.spawn_agent(myself, id).await?;
        }
        self.extra_topics = self.queue_topics();
        let per_channel = self.args.topics_per_channel.max(1);
        let first = self.capacity_of(0).min(ids.len());
        let (head, rest) = ids.split_at(first);
        self.connection_users = std::iter::once(head.to_vec())
            .filter(|c| !c.is_empty())
            .chain(rest.chunks(per_channel).map(|c| c.to_vec()))
            .collect();
        for (index, chunk) in self.connection_users.iter().enumerate() {
            for user in chunk {
                self.user_connection.insert(user.clone(), index);
            }
        }
        let n = self.connection_users.len();
        self.connections = vec![None; n];
        self.connection_up = vec![false; n];
        for index in 0..n {
            self.spawn_connection(myself, index).await?;
        }
        self.bootstrapped = true;
        Ok(())
    }
}

/// Feeds every listed user's presence and routing status to its agent actor as `bootstrap`
/// transitions, taking a back-pressure credit for each. Returns the users fed.
async fn feed_snapshot(
    clock: &Clock,
    users: &[User],
    agents: &HashMap<UserId, ActorRef<AgentMsg>>,
    catalog: &PresenceCatalog,
    credits: &Arc<Semaphore>,
) -> usize {
    let mut fed = 0;
    for user in users {
        let Ok(id) = UserId::parse(&user.id) else {
            continue;
        };
        let Some(agent) = agents.get(&id) else {
            continue;
        };
        if let Some(name) = &user.name {
            let _ = agent.cast(AgentMsg::Rename(name.clone()));
        }
        let (presence, routing) = updates_from_user(user, clock.now());
        match presence {
            Ok(mut update) => {
                update.label = Some(catalog.label(update.definition_id.as_deref(), &update.system));
                let credit = credits.clone().acquire_owned().await.ok().map(Credit::new);
                let _ = agent.cast(AgentMsg::Presence(
                    Box::new(update),
                    Source::Bootstrap,
                    credit,
                ));
            }
            Err(e) => tracing::warn!(user_id = %id, error = %e, "snapshot: presence unusable"),
        }
        match routing {
            Ok(update) => {
                let credit = credits.clone().acquire_owned().await.ok().map(Credit::new);
                let _ = agent.cast(AgentMsg::Routing(update, Source::Bootstrap, credit));
            }
            Err(e) => {
                tracing::warn!(user_id = %id, error = %e, "snapshot: routing status unusable")
            }
        }
        fed += 1;
    }
    fed
}

/// The root supervisor.
pub struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let rules_in_force = args.rules.clone();
        let credits = Arc::new(Semaphore::new(args.persistence.max_in_flight.max(1)));
        Ok(SupervisorState {
            args,
            credits,
            catalog: Arc::new(PresenceCatalog::default()),
            persistence: None,
            slack: None,
            deadlines: Deadlines::spawn(),
            retention: None,
            connections: Vec::new(),
            connection_users: Vec::new(),
            connection_up: Vec::new(),
            user_connection: HashMap::new(),
            user_names: HashMap::new(),
            user_divisions: HashMap::new(),
            user_queues: HashMap::new(),
            unreadable_queues: HashSet::new(),
            saved_episodes: HashMap::new(),
            retiring: HashMap::new(),
            unsent_cleanup: Vec::new(),
            rules: rules_in_force,
            last_reload: None,
            agents: HashMap::new(),
            by_id: HashMap::new(),
            info: HashMap::new(),
            bootstrapped: false,
            bootstrap_failures: 0,
            bootstrap_error: None,
            snapshot_running: false,
            snapshot_again: false,
            last_snapshot: None,
            shutting_down: false,
            saved_complete_until: None,
            stream_started: false,
            backfills: Default::default(),
            backfill_running: false,
            backfill_retry_at: None,
            last_backfill: None,
            checkpoint_running: false,
            relisting: false,
            relist_again: false,
            empty_listing_seen: false,
            extra_topics: Vec::new(),
            clock_measured: false,
            pending_gaps: HashMap::new(),
            definitions_refreshing: false,
            unknown_refreshed: None,
            unknown_refresh_scheduled: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.spawn_persistence(&myself).await?;
        state.spawn_slack(&myself).await?;
        state.spawn_retention(&myself).await?;
        myself.cast(SupervisorMsg::MeasureClock)?;
        myself.cast(SupervisorMsg::Bootstrap)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Bootstrap => {
                let client = state.args.client.clone();
                let me = myself.clone();
                let queue_ids = state.rules.queue_ids();
                let scope = state.args.scope.clone();
                tokio::spawn(async move {
                    let result = async {
                        let definitions = client.presence_definitions().await?;
                        let listing = list_monitored(&client, &scope).await?;
                        for (queue, error) in &listing.scope_queues.unreadable {
                            tracing::warn!(queue_id = %queue, %error,
                                "GENESYS_QUEUE_IDS: queue members cannot be read; the queue counts as empty");
                        }
                        let queues = fetch_queue_membership(&client, queue_ids).await?;
                        Ok((definitions, listing.users, queues))
                    }
                    .await;
                    let _ = me.cast(SupervisorMsg::Bootstrapped(result));
                });
            }
            SupervisorMsg::Bootstrapped(Ok((definitions, users, queues))) => {
                if state.bootstrapped || state.shutting_down {
                    return Ok(());
                }
                state.bootstrap_error = None;
                state
                    .on_bootstrapped(&myself, definitions, users, queues)
                    .await?;
                if state.connections.is_empty() {
                    tracing::warn!("no active users to monitor");
                }
            }
            SupervisorMsg::Bootstrapped(Err(error)) => {
                if error.is_fatal() {
                    let _ = state.args.fatal.send(error.to_string());
                    return Ok(());
                }
                state.bootstrap_failures += 1;
                let delay = restart_delay(state.bootstrap_failures);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "listing monitored users failed");
                state.bootstrap_error = Some(error.to_string());
                myself.send_after(delay, || SupervisorMsg::Bootstrap);
            }
            SupervisorMsg::ConnectionUp {
                index,
                reconnected,
                gap_from,
                cause,
            } => {
                if let Some(up) = state.connection_up.get_mut(index) {
                    *up = true;
                }
                let gap_from = state.on_connection_gap(&myself, index, gap_from, cause);
                let all_up = state.all_up();
                if reconnected || gap_from.is_some() || state.last_snapshot.is_some() {
                    // A reconnect or a restarted connection: events sent while no socket
                    // listened are gone, so re-take the snapshot (the backfill recovers the
                    // transitions in between).
                    state.start_snapshot(&myself);
                } else if all_up && !state.snapshot_running {
                    tracing::info!(
                        channels = state.connections.len(),
                        "every channel subscribed; taking the snapshot"
                    );
                    state.start_snapshot(&myself);
                }
                if all_up && !state.stream_started {
                    state.stream_started = true;
                    state.start_timers(&myself);
                    state.queue_start_backfill(&myself);
                }
            }
            SupervisorMsg::ConnectionDown { index } => {
                if let Some(up) = state.connection_up.get_mut(index) {
                    *up = false;
                }
                state.hold(index);
            }
            SupervisorMsg::Resubscribed { index } => {
                tracing::debug!(
                    connection = index,
                    "subscriptions changed; snapshot for new users"
                );
                state.start_snapshot(&myself);
            }
            SupervisorMsg::QueueMember {
                queue_id,
                user,
                joined,
            } => {
                tracing::info!(%queue_id, user_id = %user, joined, "queue membership changed");
                if state.args.scope.queue_ids.contains(&queue_id) {
                    state.start_relist(&myself);
                }
                if state.rules.queue_ids().contains(&queue_id) {
                    let queues = state.user_queues.entry(user.clone()).or_default();
                    let had = queues.contains(&queue_id);
                    if joined && !had {
                        queues.push(queue_id);
                    } else if !joined && had {
                        queues.retain(|q| *q != queue_id);
                    }
                    if joined != had {
                        let queues = queues.clone();
                        if let Some(agent) = state.agents.get(&user) {
                            let _ = agent.cast(AgentMsg::Queues(queues));
                        }
                    }
                }
            }
            SupervisorMsg::Relist => state.start_relist(&myself),
            SupervisorMsg::Relisted(result) => {
                state.relisting = false;
                match result {
                    Ok(listing)
                        if !state.shutting_down
                            && listing.users.is_empty()
                            && !state.agents.is_empty()
                            && !state.empty_listing_seen =>
                    {
                        state.empty_listing_seen = true;
                        tracing::warn!(
                            monitored = state.agents.len(),
                            "re-listing found no user at all; listing again before dropping every agent"
                        );
                        myself.send_after(Duration::from_secs(5), || SupervisorMsg::Relist);
                    }
                    Ok(listing) if !state.shutting_down => {
                        state.empty_listing_seen = false;
                        state.apply_listing(&myself, listing).await?;
                    }
                    Ok(_) => {}
                    Err(e) if e.is_fatal() => {
                        let _ = state.args.fatal.send(e.to_string());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "re-listing monitored users failed; retrying in 30 s");
                        myself.send_after(Duration::from_secs(30), || SupervisorMsg::Relist);
                    }
                }
                if std::mem::take(&mut state.relist_again) {
                    state.start_relist(&myself);
                }
            }
            SupervisorMsg::Backfill => state.start_backfill(&myself),
            SupervisorMsg::BackfillDone(run, retry) => state.on_backfill_done(&myself, run, retry),
            SupervisorMsg::Checkpoint => state.start_checkpoint(&myself),
            SupervisorMsg::CheckpointAt(at) => state.on_checkpoint_at(at),
            SupervisorMsg::MeasureClock => {
                let client = state.args.client.clone();
                let me = myself.clone();
                tokio::spawn(async move {
                    let result = crate::clock::measure_offset(&client).await;
                    let _ = me.cast(SupervisorMsg::ClockMeasured(result));
                });
            }
            SupervisorMsg::ClockMeasured(Ok(offset)) => {
                let previous = state.args.clock.offset();
                state.args.clock.set_offset(offset);
                state.clock_measured = true;
                metrics::clock_offset(offset);
                if (offset - previous).abs() > chrono::TimeDelta::milliseconds(500) {
                    tracing::info!(
                        offset_ms = offset.num_milliseconds(),
                        "clock offset to Genesys measured (Genesys minus local)"
                    );
                }
            }
            SupervisorMsg::ClockMeasured(Err(e)) if e.is_fatal() => {
                // Rejected credentials: the service stops with this error; no retry to announce.
                let _ = state.args.fatal.send(e.to_string());
            }
            SupervisorMsg::ClockMeasured(Err(e)) => {
                tracing::warn!(error = %e, "measuring the clock offset failed; retrying in 60 s");
                myself.send_after(Duration::from_secs(60), || SupervisorMsg::MeasureClock);
            }
            SupervisorMsg::RefreshDefinitions => {
                if state.definitions_refreshing || !state.bootstrapped {
                    return Ok(());
                }
                state.definitions_refreshing = true;
                let client = state.args.client.clone();
                let me = myself.clone();
                tokio::spawn(async move {
                    let result = client.presence_definitions().await;
                    let _ = me.cast(SupervisorMsg::DefinitionsListed(result));
                });
            }
            SupervisorMsg::DefinitionsListed(result) => {
                state.definitions_refreshing = false;
                state.unknown_refresh_scheduled = false;
                match result {
                    Ok(definitions) => {
                        let catalog = Arc::new(PresenceCatalog::from_definitions(&definitions));
                        if *catalog != *state.catalog {
                            tracing::info!(
                                presence_definitions = catalog.len(),
                                "presence definitions changed"
                            );
                            state.catalog = catalog.clone();
                            for conn in state.connections.iter().flatten() {
                                let _ = conn.cast(ConnectionMsg::Catalog(catalog.clone()));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "refreshing presence definitions failed; keeping the ones known")
                    }
                }
            }
            SupervisorMsg::UnknownDefinition(id) => {
                // At most one refresh a minute for unknown ids; one arriving sooner is
                // picked up by a refresh scheduled for when the minute is over.
                let wait = state.unknown_refreshed.map_or(Duration::ZERO, |at| {
                    DEFINITIONS_MIN_INTERVAL.saturating_sub(at.elapsed())
                });
                if wait.is_zero() {
                    tracing::info!(definition_id = %id, "unknown presence definition: refreshing the definitions");
                    state.unknown_refreshed = Some(std::time::Instant::now());
                    let _ = myself.cast(SupervisorMsg::RefreshDefinitions);
                } else if !state.unknown_refresh_scheduled {
                    state.unknown_refresh_scheduled = true;
                    myself.send_after(wait, move || SupervisorMsg::UnknownDefinition(id));
                }
            }
            SupervisorMsg::Snapshot => state.start_snapshot(&myself),
            SupervisorMsg::RefreshQueues => {
                // Before the bootstrap, its own listing takes the rules in force into account.
                if state.bootstrapped && !state.shutting_down {
                    state.refresh_queues(&myself);
                }
            }
            SupervisorMsg::QueuesListed(membership) => {
                if !state.shutting_down {
                    state.apply_queues(&myself, membership);
                }
            }
            SupervisorMsg::SnapshotDone(result) => {
                state.snapshot_running = false;
                match &result {
                    Ok(n) => tracing::info!(users = n, "snapshot applied"),
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot failed; retrying");
                        myself.send_after(Duration::from_secs(5), || SupervisorMsg::Snapshot);
                    }
                }
                state.last_snapshot = Some(result);
                if std::mem::take(&mut state.snapshot_again) {
                    state.start_snapshot(&myself);
                }
            }
            SupervisorMsg::Restart(child) => {
                if state.shutting_down {
                    return Ok(());
                }
                if let Child::Agent(user) = &child {
                    if !state.user_names.contains_key(user) {
                        // It left the monitored set while waiting for its restart.
                        state.cleanup(PersistMsg::Forget(vec![user.clone()]));
                        return Ok(());
                    }
                    if state.agents.contains_key(user) {
                        // Listed again meanwhile: a new agent already runs.
                        return Ok(());
                    }
                }
                let result = match &child {
                    Child::Persistence => state.spawn_persistence(&myself).await,
                    Child::Slack => state.spawn_slack(&myself).await,
                    Child::Retention => state.spawn_retention(&myself).await,
                    Child::Connection(index) => state.spawn_connection(&myself, *index).await,
                    Child::Agent(user) => state.spawn_agent(&myself, user).await,
                };
                if let Err(e) = result {
                    tracing::error!(child = %child.name(), error = %e, "restart failed; retrying");
                    let delay = restart_delay(state.info.get(&child).map_or(1, |i| i.restarts));
                    myself.send_after(delay, move || SupervisorMsg::Restart(child));
                    return Ok(());
                }
                match &child {
                    Child::Persistence | Child::Slack => {
                        if let Some(peers) = state.peers() {
                            for agent in state.agents.values() {
                                let _ = agent.cast(AgentMsg::Peers(peers.clone()));
                            }
                        }
                        if child == Child::Persistence {
                            // The Slack actor holds the old persistence reference: restart it too.
                            if let Some(slack) = state.slack.take() {
                                slack.stop(Some("persistence restarted".into()));
                            }
                        }
                    }
                    Child::Agent(user) => {
                        let agent = state.agents.get(user).cloned();
                        let conn = state
                            .user_connection
                            .get(user)
                            .and_then(|i| state.connections[*i].clone());
                        if let (Some(agent), Some(conn)) = (agent, conn) {
                            let _ = conn.cast(ConnectionMsg::AgentRestarted(user.clone(), agent));
                        }
                        state.start_snapshot(&myself);
                    }
                    Child::Connection(_) | Child::Retention => {}
                }
            }
            SupervisorMsg::Fatal(error) => {
                tracing::error!(%error, "fatal error");
                let _ = state.args.fatal.send(error);
            }
            SupervisorMsg::Health(reply) => {
                let connections: Vec<_> = state.connections.iter().flatten().cloned().collect();
                let persistence = state.persistence.clone();
                let slack = state.slack.clone();
                let retention = state.retention.clone();
                // Gather in a task so the supervisor's mailbox never waits on a child.
                let snapshot = HealthSnapshot::from(&*state);
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    for conn in connections {
                        if let Ok(status) = ractor::call_t!(conn, ConnectionMsg::Status, 1000) {
                            statuses.push(status);
                        }
                    }
                    let db = match persistence {
                        Some(p) => ractor::call_t!(p, PersistMsg::Health, 3000).ok(),
                        None => None,
                    };
                    let destinations = match slack {
                        Some(s) => ractor::call_t!(s, SlackMsg::Status, 2000).unwrap_or_default(),
                        None => Vec::new(),
                    };

                    let last_retention_run = match retention {
                        Some(r) => ractor::call_t!(r, RetentionMsg::LastRun, 1000)
                            .ok()
                            .flatten(),
                        None => None,
                    };
                    let _ =
                        reply.send(snapshot.report(statuses, db, destinations, last_retention_run));
                });
            }
            SupervisorMsg::Agent(user, reply) => {
                let _ = reply.send(state.agents.get(&user).cloned());
            }
            SupervisorMsg::ReloadRules(reply) => {
                let outcome = match &state.args.rules_path {
                    None => ReloadOutcome {
                        at: chrono::Utc::now(),
                        applied: false,
                        problems: vec![
                            "no RULES_FILE is configured: the built-in idle rule is in force"
                                .into(),
                        ],
                    },
                    // Checked against the same limits as the rules in force.
                    Some(path) => match RuleSet::load_with(path, state.rules.limits()) {
                        Ok(rules) => {
                            let rules = Arc::new(rules);
                            for rule in rules.rules() {
                                metrics::rule_known(&rule.name);
                            }
                            state.rules = rules.clone();
                            for agent in state.agents.values() {
                                let _ = agent.cast(AgentMsg::Rules(rules.clone()));
                            }
                            // The new rules may name other queues: list their members and
                            // follow their joins and leaves.
                            let _ = myself.cast(SupervisorMsg::RefreshQueues);
                            tracing::info!(rules = rules.rules().len(), path = %path.display(), "rules reloaded");
                            ReloadOutcome {
                                at: chrono::Utc::now(),
                                applied: true,
                                problems: Vec::new(),
                            }
                        }
                        Err(e) => {
                            let problems: Vec<String> =
                                e.to_string().lines().map(str::to_string).collect();
                            tracing::error!(path = %path.display(), problems = %problems.join("; "), "rules file refused; the running rules stay in force");
                            ReloadOutcome {
                                at: chrono::Utc::now(),
                                applied: false,
                                problems,
                            }
                        }
                    },
                };
                state.last_reload = Some(outcome.clone());
                if outcome.applied {
                    state.refresh_queue_topics();
                }
                let _ = reply.send(outcome);
            }
            SupervisorMsg::Silenced(silence) => {
                if let Some(slack) = &state.slack {
                    let _ = slack.cast(SlackMsg::Silenced(silence));
                }
            }
            SupervisorMsg::Rules(reply) => {
                let _ = reply.send(RulesInForce {
                    rules: state.rules.clone(),
                    source: state.args.rules_path.clone(),
                    last_reload: state.last_reload.clone(),
                });
            }
            SupervisorMsg::Retention(reply) => {
                let _ = reply.send(state.retention.clone());
            }
            SupervisorMsg::Shutdown { deadline, reply } => {
                // The stream is complete up to now (each channel's last message): record it
                // with the final flush, so the next start backfills only what it missed.
                if let Some(at) = state.complete_until_now().await {
                    if let Some(persistence) = &state.persistence {
                        let _ = persistence.cast(PersistMsg::StreamComplete(at));
                    }
                }
                state.shutting_down = true;
                let until = tokio::time::Instant::now() + deadline;
                // No write may outlive the deadline (a locked database would hold one for the
                // busy timeout, 5 s, per attempt), and none is attempted after it: what is
                // not committed by then never is, so the count replied below is final.
                if let Some(persistence) = &state.persistence {
                    let _ = persistence.cast(PersistMsg::StopBy(until));
                }
                for conn in state.connections.iter().flatten() {
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    let wait = left.min(Duration::from_secs(3)).as_millis() as u64;
                    if let Err(e) = ractor::call_t!(conn, ConnectionMsg::Close, wait.max(1)) {
                        tracing::warn!(error = %e, "a connection did not close in time");
                    }
                }
                // Every accepted transition holds a credit until it is committed.
                let total = state.args.persistence.max_in_flight.max(1);
                if let Some(persistence) = state.persistence.clone() {
                    // A failing flush is retried with a short backoff (not a 50-per-second
                    // log flood) until the deadline.
                    let mut pause = Duration::from_millis(20);
                    loop {
                        let left = until.saturating_duration_since(tokio::time::Instant::now());
                        let flushed = ractor::call_t!(
                            persistence,
                            PersistMsg::Flush,
                            (left.as_millis() as u64).max(1)
                        );
                        if state.credits.available_permits() >= total
                            || tokio::time::Instant::now() >= until
                        {
                            break;
                        }
                        let left = until.saturating_duration_since(tokio::time::Instant::now());
                        tokio::time::sleep(pause.min(left)).await;
                        pause = match flushed {
                            Ok(Ok(())) => Duration::from_millis(20),
                            _ => (pause * 2).min(Duration::from_millis(500)),
                        };
                    }
                }
                let outstanding = total.saturating_sub(state.credits.available_permits());
                if outstanding > 0 {
                    tracing::error!(
                        outstanding,
                        "shutdown deadline passed with transitions not yet committed"
                    );
                } else {
                    tracing::info!("every accepted transition is committed");
                }
                let _ = reply.send(outstanding);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SupervisorMsg>,
        _state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // ractor does not stop children with their supervisor: stop them here (the persistence
        // actor commits what it still holds in its own post_stop).
        myself
            .stop_children_and_wait(Some("shutdown".into()), Some(Duration::from_secs(3)))
            .await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, error) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason),
            _ => return Ok(()),
        };
        if let Some(user) = state.retiring.remove(&cell.get_id()) {
            // Unless the user was listed again meanwhile (a new agent owns the row now).
            if !state.agents.contains_key(&user) {
                state.cleanup(PersistMsg::Forget(vec![user]));
            }
            return Ok(());
        }
        let Some(child) = state.by_id.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.shutting_down {
            return Ok(());
        }
        match &child {
            Child::Persistence => state.persistence = None,
            Child::Slack => state.slack = None,
            Child::Retention => state.retention = None,
            Child::Connection(i) => {
                state.connections[*i] = None;
                state.connection_up[*i] = false;
                state
                    .pending_gaps
                    .entry(*i)
                    .or_insert_with(chrono::Utc::now);
                state.hold(*i);
            }
            Child::Agent(user) => {
                state.agents.remove(user);
            }
        }
        let info = state.info.entry(child.clone()).or_default();
        info.running = false;
        info.restarts += 1;
        info.last_error = error.clone();
        let delay = restart_delay(info.restarts);
        tracing::error!(child = %child.name(), error = ?error, restart_in_ms = delay.as_millis() as u64, "child stopped; restarting");
        myself.send_after(delay, move || SupervisorMsg::Restart(child));
        Ok(())
    }
}

/// What the readiness report needs from the supervisor's state, copied so the report can be
/// finished in a task.
struct HealthSnapshot {
    state: SupervisorStateView,
}

struct SupervisorStateView {
    silence_timeout: Duration,
    bootstrapped: bool,
    bootstrap_error: Option<String>,
    connections: usize,
    agents: usize,
    info: Vec<(Child, ChildInfo)>,
    last_backfill: Option<BackfillRun>,
    clock_offset_ms: Option<i64>,
}

impl From<&SupervisorState> for HealthSnapshot {
    fn from(s: &SupervisorState) -> Self {
        HealthSnapshot {
            state: SupervisorStateView {
                silence_timeout: s.args.silence_timeout,
                bootstrapped: s.bootstrapped,
                bootstrap_error: s.bootstrap_error.clone(),
                connections: s.connections.iter().flatten().count(),
                agents: s.agents.len(),
                info: s.info.iter().map(|(c, i)| (c.clone(), i.clone())).collect(),
                last_backfill: s.last_backfill.clone(),
                clock_offset_ms: s
                    .clock_measured
                    .then(|| s.args.clock.offset().num_milliseconds()),
            },
        }
    }
}

impl HealthSnapshot {
    fn report(
        self,
        connections: Vec<ConnectionStatus>,
        db: Option<crate::actors::persistence::DbHealth>,
        destinations: Vec<crate::health::DestinationStatus>,
        last_retention_run: Option<crate::health::RetentionRun>,
    ) -> HealthReport {
        let s = self.state;
        let mut problems = Vec::new();
        if !s.bootstrapped {
            problems.push(match &s.bootstrap_error {
                Some(e) => format!("listing monitored users failed: {e}"),
                None => "listing monitored users".to_string(),
            });
        }
        for c in &connections {
            if !c.connected || !c.subscribed {
                problems.push(format!("{} is not connected and subscribed", c.name));
            } else if c
                .last_message_age_seconds
                .is_some_and(|age| age > s.silence_timeout.as_secs_f64() * 1.5)
            {
                problems.push(format!(
                    "{} has received nothing for {:.0}s (silence timeout {}s)",
                    c.name,
                    c.last_message_age_seconds.unwrap_or_default(),
                    s.silence_timeout.as_secs()
                ));
            }
        }
        if connections.len() < s.connections {
            problems.push(format!(
                "{} of {} connection actors did not answer",
                s.connections - connections.len(),
                s.connections
            ));
        }
        let (writable, db_error) = match &db {
            Some(h) => (h.writable, h.last_error.clone()),
            None => (
                false,
                Some("the persistence actor did not answer".to_string()),
            ),
        };
        if !writable {
            problems.push(format!(
                "database is not writable: {}",
                db_error.clone().unwrap_or_default()
            ));
        }
        for d in destinations.iter().filter(|d| !d.enabled) {
            problems.push(format!(
                "alert destination {} is disabled: {}",
                d.name,
                d.disabled_reason.clone().unwrap_or_default()
            ));
        }
        let mut actors: Vec<ActorStatus> = s
            .info
            .iter()
            .filter(|(child, _)| !matches!(child, Child::Agent(_)))
            .map(|(child, info)| ActorStatus {
                name: child.name(),
                status: if info.running {
                    "running"
                } else {
                    "restarting"
                }
                .to_string(),
                restarts: info.restarts,
                last_error: info.last_error.clone(),
            })
            .collect();
        let agent_restarts: u32 = s
            .info
            .iter()
            .filter(|(c, _)| matches!(c, Child::Agent(_)))
            .map(|(_, i)| i.restarts)
            .sum();
        actors.push(ActorStatus {
            name: "agents".to_string(),
            status: format!("{} running", s.agents),
            restarts: agent_restarts,
            last_error: None,
        });
        actors.sort_by(|a, b| a.name.cmp(&b.name));
        HealthReport {
            ready: problems.is_empty(),
            actors,
            connections,
            database_writable: writable,
            database_error: db_error,
            agents: s.agents,
            destinations,
            problems,
            last_retention_run,
            last_backfill: s.last_backfill,
            clock_offset_ms: s.clock_offset_ms,
        }
    }
}

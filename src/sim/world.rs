//! The simulated organization: users, their presence and routing status, the presence
//! definitions, and the autopilot that moves synthetic agents through a plausible shift.
//!
//! Everything here is plain data driven by the core task ([`super::core`]); nothing in this file
//! awaits or locks. A change returns the [`Change`]s to broadcast so the caller decides who hears
//! about it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use rand::rngs::StdRng;

use crate::domain::{normalize_system_presence, truncate_to_millis};

/// System presence definition ids. Available, On Queue and Offline are the fixed ids quoted in
/// the protocol reference (§5); the others are invented but stable.
pub const AVAILABLE_ID: &str = "6a3af858-942f-489d-9700-5f9bcdcdae9b";
/// See [`AVAILABLE_ID`].
pub const ON_QUEUE_ID: &str = "e08eaf1b-ee47-4fa9-a231-1200e284798f";
/// See [`AVAILABLE_ID`].
pub const OFFLINE_ID: &str = "ccf3c10a-aa2c-4845-8e8d-f59fa48c58e5";
/// Org-defined presence "Lunch" (type `User`, system presence `MEAL`).
pub const LUNCH_ID: &str = "5c4e1b2a-8f3d-4a6e-9b7c-2d1f0e3a4b5c";
/// Org-defined presence "Coaching" (type `User`, system presence `TRAINING`).
pub const COACHING_ID: &str = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b";

/// The division every simulated user belongs to unless [`super::SimConfig::division_ids`] or
/// [`super::Simulator::add_user_in_division`] says otherwise.
pub const HOME_DIVISION_ID: &str = "7e5a3c1b-9d8f-4e6a-8b2c-4d6f8a0c2e4a";

/// Name given to the second synthetic agent so that downstream escaping (Slack, HTML) is
/// exercised.
pub const ESCAPE_TEST_NAME: &str = "Pat & Sam <QA>";

/// One presence definition, system or org-defined.
#[derive(Debug, Clone)]
pub struct PresenceDef {
    pub id: &'static str,
    /// Notification spelling (`ON_QUEUE`).
    pub system: &'static str,
    /// `en_US` label.
    pub label: &'static str,
    /// `true` for `type: System` (the primary definition of its system presence).
    pub primary: bool,
}

/// The ten system definitions plus the org-defined ones.
pub const PRESENCE_DEFS: [PresenceDef; 12] = [
    def(AVAILABLE_ID, "AVAILABLE", "Available", true),
    def("2b6e3c1d-7a4f-4b8e-9c0d-1e2f3a4b5c6d", "AWAY", "Away", true),
    def("31fe3bac-dea6-44b7-b1d3-5c4f8d9e0a1b", "BUSY", "Busy", true),
    def(OFFLINE_ID, "OFFLINE", "Offline", true),
    def("3fd96123-badb-4f69-bc03-1b1ccc6d8014", "IDLE", "Idle", true),
    def(ON_QUEUE_ID, "ON_QUEUE", "On Queue", true),
    def("a8b2c4d6-e8f0-4a1b-8c3d-5e7f9a1b3c5d", "MEAL", "Meal", true),
    def(
        "b9c3d5e7-f9a1-4b2c-9d4e-6f8a0b2c4d6e",
        "TRAINING",
        "Training",
        true,
    ),
    def(
        "c0d4e6f8-a0b2-4c3d-8e5f-7a9b1c3d5e7f",
        "MEETING",
        "Meeting",
        true,
    ),
    def(
        "d1e5f7a9-b1c3-4d4e-9f6a-8b0c2d4e6f8a",
        "BREAK",
        "Break",
        true,
    ),
    def(LUNCH_ID, "MEAL", "Lunch", false),
    def(COACHING_ID, "TRAINING", "Coaching", false),
];

const fn def(
    id: &'static str,
    system: &'static str,
    label: &'static str,
    primary: bool,
) -> PresenceDef {
    PresenceDef {
        id,
        system,
        label,
        primary,
    }
}

/// The definition with this id, if any (case-insensitive).
pub fn presence_def_by_id(id: &str) -> Option<&'static PresenceDef> {
    PRESENCE_DEFS.iter().find(|d| d.id.eq_ignore_ascii_case(id))
}

/// Resolves a definition id or a system presence in any spelling (`On Queue`, `OnQueue`,
/// `ON_QUEUE`) to a definition; a system presence maps to its primary (System) definition.
pub fn resolve_presence(key: &str) -> Option<&'static PresenceDef> {
    presence_def_by_id(key).or_else(|| {
        let system = normalize_system_presence(key);
        PRESENCE_DEFS
            .iter()
            .find(|d| d.primary && d.system == system)
    })
}

/// The `GET /api/v2/presence/definitions` spelling (`OnQueue`).
pub fn new_spelling(system: &str) -> &'static str {
    match system {
        "AVAILABLE" => "Available",
        "AWAY" => "Away",
        "BUSY" => "Busy",
        "OFFLINE" => "Offline",
        "IDLE" => "Idle",
        "ON_QUEUE" => "OnQueue",
        "MEAL" => "Meal",
        "TRAINING" => "Training",
        "MEETING" => "Meeting",
        "BREAK" => "Break",
        _ => "Unknown",
    }
}

/// The legacy `GET /api/v2/presencedefinitions` spelling (`On Queue`), also used in the
/// `presence` expand of users.
pub fn legacy_spelling(system: &str) -> &'static str {
    match system {
        "ON_QUEUE" => "On Queue",
        other => new_spelling(other),
    }
}

/// What a change of the world means for subscribers.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `v2.users.{user}.presence`.
    Presence {
        user: String,
        definition_id: String,
        /// Notification spelling.
        system: String,
        modified: DateTime<Utc>,
    },
    /// `v2.users.{user}.routingStatus`.
    Routing {
        user: String,
        status: String,
        start: DateTime<Utc>,
    },
    /// `v2.users.{user}.conversationsummary` (calls, contact center).
    Conversations { user: String, active: u32 },
    /// `v2.routing.queues.{queue}.users`: `user` joined (`true`) or left a queue.
    QueueMembership {
        queue: String,
        user: String,
        joined: bool,
    },
}

/// Where a synthetic agent is in its shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Offline,
    LoggingIn,
    Idle,
    Interacting,
    NotResponding,
    Break,
    Meal,
}

/// One user of the simulated org.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub presence_id: String,
    /// Notification spelling.
    pub presence_system: String,
    pub presence_modified: DateTime<Utc>,
    pub routing: String,
    pub routing_start: DateTime<Utc>,
    pub active_conversations: u32,
    /// `false` once deactivated: gone from `GET /api/v2/users?state=active`, listed with
    /// `state=inactive`, and left alone by the autopilot.
    pub active: bool,
    /// The user's division id.
    pub division_id: String,
    phase: Phase,
    /// Idlers sometimes hold IDLE for minutes of wall-clock time whatever the speed, so the
    /// demo's idle alerts fire early.
    idler: bool,
    interactions_since_break: u32,
    breaks_taken: u32,
    had_meal: bool,
}

/// All users plus the RNG that drives ids and the autopilot.
pub struct World {
    pub agents: Vec<Agent>,
    rng: StdRng,
    speed: f64,
}

impl World {
    /// Builds `n` agents named `Agent 0001`… (the second is [`ESCAPE_TEST_NAME`]). With
    /// `autopilot` their starting states are varied; without it every agent starts ON_QUEUE and
    /// IDLE at `now`.
    pub fn new(n: usize, rng: StdRng, speed: f64, autopilot: bool, now: DateTime<Utc>) -> World {
        let mut world = World {
            agents: Vec::with_capacity(n),
            rng,
            speed: if speed > 0.0 { speed } else { 1.0 },
        };
        for i in 0..n {
            let name = if i == 1 {
                ESCAPE_TEST_NAME.to_string()
            } else {
                format!("Agent {:04}", i + 1)
            };
            world.push_agent(name, now);
            if autopilot {
                world.randomize_start(i, now);
            }
        }
        world
    }

    fn push_agent(&mut self, name: String, now: DateTime<Utc>) -> usize {
        let now = truncate_to_millis(now);
        let id = guid(&mut self.rng);
        let idler = self.agents.len() % 5 == 1;
        self.agents.push(Agent {
            id,
            name,
            presence_id: ON_QUEUE_ID.into(),
            presence_system: "ON_QUEUE".into(),
            presence_modified: now,
            routing: "IDLE".into(),
            routing_start: now,
            active_conversations: 0,
            active: true,
            division_id: HOME_DIVISION_ID.into(),
            phase: Phase::Idle,
            idler,
            interactions_since_break: 0,
            breaks_taken: 0,
            had_meal: false,
        });
        self.agents.len() - 1
    }

    /// Adds a user (ON_QUEUE, IDLE at `now`) and returns its index.
    pub fn add_user(&mut self, name: String, now: DateTime<Utc>) -> usize {
        self.push_agent(name, now)
    }

    /// Index of a user by id (case-insensitive).
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.agents
            .iter()
            .position(|a| a.id.eq_ignore_ascii_case(id))
    }

    fn randomize_start(&mut self, i: usize, now: DateTime<Utc>) {
        let since = truncate_to_millis(now)
            - chrono::Duration::milliseconds(self.rng.random_range(0..10_000));
        let roll: f64 = self.rng.random();
        let agent = &mut self.agents[i];
        agent.presence_modified = since;
        agent.routing_start = since;
        if agent.idler || roll < 0.65 {
            return; // ON_QUEUE / IDLE
        }
        if roll < 0.85 {
            agent.phase = Phase::Interacting;
            agent.routing = "INTERACTING".into();
            agent.active_conversations = 1;
        } else {
            agent.phase = Phase::Offline;
            agent.presence_id = OFFLINE_ID.into();
            agent.presence_system = "OFFLINE".into();
            agent.routing = "OFF_QUEUE".into();
        }
    }

    /// How long agent `i` holds its starting state before the autopilot moves it (wall clock).
    /// An idler's first IDLE stretch is always a long one, so a demo shows an idle alert early.
    pub fn first_hold(&mut self, i: usize) -> Duration {
        match self.agents[i].phase {
            Phase::Idle if self.agents[i].idler => self.long_idle(),
            Phase::Idle => self.idle_hold(i),
            Phase::Interacting => self.scaled(30..300),
            _ => self.scaled(10..300),
        }
    }

    /// Wall-clock time for a holding time drawn in simulated seconds, compressed by `speed`.
    fn scaled(&mut self, simulated_secs: std::ops::Range<u64>) -> Duration {
        let secs = self.rng.random_range(simulated_secs) as f64;
        Duration::from_secs_f64((secs / self.speed).max(0.05))
    }

    fn idle_hold(&mut self, i: usize) -> Duration {
        if self.agents[i].idler && self.rng.random_bool(0.6) {
            self.long_idle()
        } else {
            self.scaled(5..90)
        }
    }

    /// 150–330 s of wall clock, deliberately not compressed by `speed`: long enough for a
    /// 2-minute idle alert at any speed.
    fn long_idle(&mut self) -> Duration {
        Duration::from_secs(self.rng.random_range(150..330))
    }

    /// Moves agent `i` one step along its shift; returns the changes and how long to hold the
    /// new state (wall clock).
    pub fn autopilot_step(&mut self, i: usize, now: DateTime<Utc>) -> (Vec<Change>, Duration) {
        let mut changes = Vec::new();
        let phase = self.agents[i].phase;
        let hold = match phase {
            Phase::Offline => {
                changes.extend(self.set_presence_now(i, AVAILABLE_ID, now));
                self.agents[i].phase = Phase::LoggingIn;
                self.scaled(5..30)
            }
            Phase::LoggingIn | Phase::Break | Phase::Meal => {
                changes.extend(self.set_presence_now(i, ON_QUEUE_ID, now));
                changes.extend(self.set_routing_now(i, "IDLE", now));
                self.agents[i].phase = Phase::Idle;
                self.idle_hold(i)
            }
            Phase::Interacting => {
                changes.extend(self.set_conversations(i, 0));
                changes.extend(self.set_routing_now(i, "IDLE", now));
                self.agents[i].phase = Phase::Idle;
                self.agents[i].interactions_since_break += 1;
                self.idle_hold(i)
            }
            Phase::NotResponding => {
                changes.extend(self.set_routing_now(i, "IDLE", now));
                self.agents[i].phase = Phase::Idle;
                self.idle_hold(i)
            }
            Phase::Idle => self.leave_idle(i, now, &mut changes),
        };
        (changes, hold)
    }

    fn leave_idle(&mut self, i: usize, now: DateTime<Utc>, changes: &mut Vec<Change>) -> Duration {
        let agent = &self.agents[i];
        let break_due = agent.interactions_since_break >= 8 + (i as u32 % 5);
        if break_due {
            let meal = !agent.had_meal && agent.breaks_taken >= 1;
            let shift_over = agent.had_meal && agent.breaks_taken >= 3;
            self.agents[i].interactions_since_break = 0;
            // The agent picks a presence; Genesys then takes them off queue.
            if shift_over {
                changes.extend(self.set_presence_now(i, OFFLINE_ID, now));
                changes.extend(self.set_routing_now(i, "OFF_QUEUE", now));
                let agent = &mut self.agents[i];
                agent.phase = Phase::Offline;
                agent.breaks_taken = 0;
                agent.had_meal = false;
                return self.scaled(600..1800);
            }
            if meal {
                changes.extend(self.set_presence_now(i, LUNCH_ID, now));
                changes.extend(self.set_routing_now(i, "OFF_QUEUE", now));
                self.agents[i].phase = Phase::Meal;
                self.agents[i].had_meal = true;
                return self.scaled(1800..2700);
            }
            let break_id = resolve_presence("BREAK").map_or(ON_QUEUE_ID, |d| d.id);
            changes.extend(self.set_presence_now(i, break_id, now));
            changes.extend(self.set_routing_now(i, "OFF_QUEUE", now));
            self.agents[i].phase = Phase::Break;
            self.agents[i].breaks_taken += 1;
            return self.scaled(600..900);
        }
        if self.rng.random_bool(0.06) {
            changes.extend(self.set_routing_now(i, "NOT_RESPONDING", now));
            self.agents[i].phase = Phase::NotResponding;
            return self.scaled(10..60);
        }
        changes.extend(self.set_routing_now(i, "INTERACTING", now));
        changes.extend(self.set_conversations(i, 1));
        self.agents[i].phase = Phase::Interacting;
        self.scaled(60..480)
    }

    /// Sets the presence as of `now`, or 1 ms after the current presence's `modifiedDate` if
    /// that is not earlier: two changes in the same millisecond must not share a timestamp,
    /// since clients deduplicate on (user, dimension, timestamp).
    pub fn set_presence_now(
        &mut self,
        i: usize,
        definition_id: &str,
        now: DateTime<Utc>,
    ) -> Option<Change> {
        let at = after(self.agents[i].presence_modified, now);
        self.set_presence(i, definition_id, at)
    }

    /// Sets the routing status as of `now`, or 1 ms after the current `startTime` (see
    /// [`World::set_presence_now`]).
    pub fn set_routing_now(
        &mut self,
        i: usize,
        status: &str,
        now: DateTime<Utc>,
    ) -> Option<Change> {
        let at = after(self.agents[i].routing_start, now);
        self.set_routing(i, status, at)
    }

    /// Sets the presence of agent `i` to definition `definition_id`, as of `at` (truncated to
    /// milliseconds, the precision served).
    pub fn set_presence(
        &mut self,
        i: usize,
        definition_id: &str,
        at: DateTime<Utc>,
    ) -> Option<Change> {
        let def = presence_def_by_id(definition_id)?;
        let at = truncate_to_millis(at);
        let agent = &mut self.agents[i];
        agent.presence_id = def.id.into();
        agent.presence_system = def.system.into();
        agent.presence_modified = at;
        Some(Change::Presence {
            user: agent.id.clone(),
            definition_id: def.id.into(),
            system: def.system.into(),
            modified: at,
        })
    }

    /// Sets the routing status of agent `i`, as of `at` (truncated to milliseconds).
    pub fn set_routing(&mut self, i: usize, status: &str, at: DateTime<Utc>) -> Option<Change> {
        let at = truncate_to_millis(at);
        let agent = &mut self.agents[i];
        agent.routing = status.into();
        agent.routing_start = at;
        Some(Change::Routing {
            user: agent.id.clone(),
            status: status.into(),
            start: at,
        })
    }

    /// Sets the active (contact-center call) conversation count of agent `i`.
    pub fn set_conversations(&mut self, i: usize, active: u32) -> Option<Change> {
        let agent = &mut self.agents[i];
        agent.active_conversations = active;
        Some(Change::Conversations {
            user: agent.id.clone(),
            active,
        })
    }
}

/// A routing queue of the simulated org and the users who are its members.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Lowercase GUID-like id, deterministic for a seed.
    pub id: String,
    /// `Queue 1`, `Queue 2`, …
    pub name: String,
    /// Member user ids (lowercase), in the order `GET …/members` lists them.
    pub members: Vec<String>,
}

/// `n` queues with deterministic ids for `seed` (drawn from their own RNG, so agent ids and the
/// autopilot do not change with the number of queues); agent `i` is a member of queue `i % n`.
pub fn build_queues(n: usize, seed: u64, agents: &[Agent]) -> Vec<Queue> {
    use rand::SeedableRng;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5155_4555_4553_0000);
    let mut queues: Vec<Queue> = (0..n)
        .map(|q| Queue {
            id: guid(&mut rng),
            name: format!("Queue {}", q + 1),
            members: Vec::new(),
        })
        .collect();
    for (i, agent) in agents.iter().enumerate() {
        if let Some(queue) = queues.get_mut(i % n.max(1)) {
            queue.members.push(agent.id.clone());
        }
    }
    queues
}

/// `now` (to the millisecond), or 1 ms after `previous` if `now` is not later.
fn after(previous: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let now = truncate_to_millis(now);
    if now > previous {
        now
    } else {
        previous + chrono::Duration::milliseconds(1)
    }
}

/// A random version-4-shaped GUID in lowercase (`8-4-4-4-12` hex digits).
pub fn guid<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ids_are_deterministic_and_guid_shaped() {
        let now = Utc::now();
        let a = World::new(5, StdRng::seed_from_u64(7), 1.0, true, now);
        let b = World::new(5, StdRng::seed_from_u64(7), 1.0, true, now);
        let ids_a: Vec<_> = a.agents.iter().map(|x| x.id.clone()).collect();
        let ids_b: Vec<_> = b.agents.iter().map(|x| x.id.clone()).collect();
        assert_eq!(ids_a, ids_b);
        for id in ids_a {
            assert_eq!(id.len(), 36);
            assert_eq!(id, id.to_ascii_lowercase());
            assert_eq!(id.matches('-').count(), 4);
        }
        assert_eq!(a.agents[0].name, "Agent 0001");
        assert_eq!(a.agents[1].name, ESCAPE_TEST_NAME);
    }

    #[test]
    fn idlers_start_with_a_long_idle_stretch_whatever_the_speed() {
        let now = Utc::now();
        let mut world = World::new(10, StdRng::seed_from_u64(3), 10.0, true, now);
        for i in 0..10 {
            let hold = world.first_hold(i);
            if i % 5 == 1 {
                assert_eq!(world.agents[i].routing, "IDLE");
                assert!(hold >= Duration::from_secs(150), "agent {i}: {hold:?}");
            } else {
                assert!(hold <= Duration::from_secs(30), "agent {i}: {hold:?}");
            }
        }
        assert_eq!(world.agents[1].name, ESCAPE_TEST_NAME);
    }

    #[test]
    fn presence_keys_resolve_in_every_spelling() {
        for key in ["On Queue", "OnQueue", "ON_QUEUE", ON_QUEUE_ID] {
            assert_eq!(resolve_presence(key).unwrap().id, ON_QUEUE_ID, "{key}");
        }
        assert_eq!(resolve_presence(LUNCH_ID).unwrap().system, "MEAL");
        assert_eq!(resolve_presence("MEAL").unwrap().label, "Meal");
        assert!(resolve_presence("nonsense").is_none());
    }

    #[test]
    fn autopilot_walks_a_plausible_shift() {
        let now = Utc::now();
        let mut world = World::new(3, StdRng::seed_from_u64(1), 1000.0, true, now);
        let mut seen_routing = std::collections::BTreeSet::new();
        let mut seen_presence = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            for i in 0..3 {
                let (changes, hold) = world.autopilot_step(i, now);
                assert!(hold > Duration::ZERO);
                for c in changes {
                    match c {
                        Change::Routing { status, .. } => {
                            seen_routing.insert(status);
                        }
                        Change::Presence { definition_id, .. } => {
                            seen_presence.insert(definition_id);
                        }
                        Change::Conversations { .. } | Change::QueueMembership { .. } => {}
                    }
                }
            }
        }
        for s in ["IDLE", "INTERACTING", "OFF_QUEUE", "NOT_RESPONDING"] {
            assert!(seen_routing.contains(s), "{s} never happened");
        }
        for p in [ON_QUEUE_ID, LUNCH_ID, OFFLINE_ID, AVAILABLE_ID] {
            assert!(seen_presence.contains(p), "{p} never happened");
        }
    }
}

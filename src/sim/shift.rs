//! A compressed shift for end-to-end (chaos) tests: every agent cycles through ON_QUEUE
//! presence with routing IDLE / INTERACTING / NOT_RESPONDING, off-queue presences with
//! OFF_QUEUE, and finally OFFLINE, at a configurable rate, with every routing IDLE episode
//! kept clearly below or clearly above an idle threshold, never near it.
//!
//! Transitions sit on a virtual schedule: each has the exact timestamp `shift start + planned
//! offset` (simulated clock) and fires when real time reaches that offset (timers are
//! absolute, so lateness never accumulates). An IDLE episode therefore lasts exactly its
//! planned hold in the ground truth, whatever the timer jitter; only its delivery can be a
//! few ms late. The guarantee covers episodes that start at or after
//! [`ShiftSummary::started`]: an IDLE status held from before the shift ends at its first
//! step after an arbitrary time.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;

use super::core::Core;
use super::world::{AVAILABLE_ID, LUNCH_ID, OFFLINE_ID, ON_QUEUE_ID, resolve_presence};

/// How [`super::Simulator::run_shift`] drives the agents.
#[derive(Debug, Clone, PartialEq)]
pub struct ShiftConfig {
    /// Seed of the shift's RNG (same seed, same agents: same sequence of states and holds).
    pub seed: u64,
    /// Wall-clock length of the shift. Each agent then finishes its current state (an IDLE
    /// episode keeps its planned length) and goes OFFLINE / OFF_QUEUE.
    pub duration: Duration,
    /// The idle threshold under test (routing IDLE).
    pub idle_threshold: Duration,
    /// Guard band: every IDLE episode lasts either less than `idle_threshold - margin` or more
    /// than `idle_threshold + margin`. Must be smaller than `idle_threshold`.
    pub margin: Duration,
    /// Mean hold of non-IDLE states (uniform 0.5–1.5× it), and the spread of long IDLE
    /// episodes above `idle_threshold + margin`.
    pub mean_hold: Duration,
    /// Probability that an IDLE episode is a long one (above the band); default 0.3.
    pub long_idle_probability: f64,
    /// Probability that leaving IDLE goes off queue (a presence change to Break, Lunch or
    /// Meeting with OFF_QUEUE) rather than to INTERACTING / NOT_RESPONDING; default 0.2.
    pub off_queue_probability: f64,
    /// Users to drive (ids, any case); `None`: every active user at start.
    pub users: Option<Vec<String>>,
}

impl Default for ShiftConfig {
    fn default() -> Self {
        ShiftConfig {
            seed: 1,
            duration: Duration::from_secs(10),
            idle_threshold: Duration::from_secs(2),
            margin: Duration::from_millis(500),
            mean_hold: Duration::from_millis(400),
            long_idle_probability: 0.3,
            off_queue_probability: 0.2,
            users: None,
        }
    }
}

impl ShiftConfig {
    /// Checks what a shift cannot honour.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.duration.is_zero(), "shift duration must not be zero");
        anyhow::ensure!(
            !self.mean_hold.is_zero(),
            "shift mean hold must not be zero"
        );
        anyhow::ensure!(
            self.margin < self.idle_threshold,
            "shift margin must be smaller than the idle threshold"
        );
        for p in [self.long_idle_probability, self.off_queue_probability] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&p),
                "shift probabilities must be in 0..=1"
            );
        }
        Ok(())
    }
}

/// What a finished shift did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftSummary {
    /// Agents driven.
    pub agents: usize,
    /// Presence and routing transitions generated (also in the ground truth).
    pub transitions: u64,
    /// Routing IDLE episodes shorter than `idle_threshold - margin`.
    pub short_idle_episodes: u64,
    /// Routing IDLE episodes longer than `idle_threshold + margin`.
    pub long_idle_episodes: u64,
    /// Simulated-clock instant the shift started (UTC).
    pub started: DateTime<Utc>,
    /// Simulated-clock timestamp of the last transition (UTC).
    pub ended: DateTime<Utc>,
}

/// A running shift; [`ShiftHandle::finished`] waits for its end.
pub struct ShiftHandle {
    pub(super) done: oneshot::Receiver<ShiftSummary>,
}

impl ShiftHandle {
    /// Waits until every agent went OFFLINE. Fails if the shift was replaced by another or
    /// the simulator shut down.
    pub async fn finished(self) -> anyhow::Result<ShiftSummary> {
        self.done
            .await
            .map_err(|_| anyhow::anyhow!("the shift was cancelled or the simulator stopped"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first step: always goes ON_QUEUE + IDLE.
    Start,
    Idle,
    Busy,
    OffQueue,
    Done,
}

struct Slot {
    agent: usize,
    phase: Phase,
    /// Offset of the agent's next transition from the shift start.
    next: Duration,
}

/// A shift in progress (owned by the core).
pub(super) struct ShiftState {
    cfg: ShiftConfig,
    rng: StdRng,
    pub(super) generation: u64,
    start_instant: tokio::time::Instant,
    start_clock: DateTime<Utc>,
    slots: Vec<Slot>,
    summary: ShiftSummary,
    done: Option<oneshot::Sender<ShiftSummary>>,
}

impl Core {
    /// Starts a shift (turning the autopilot off and voiding any earlier shift).
    pub(super) fn start_shift(&mut self, cfg: ShiftConfig) -> ShiftHandle {
        let (tx, rx) = oneshot::channel();
        self.set_autopilot(false);
        self.shift_generation += 1;
        let agents: Vec<usize> = match &cfg.users {
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.world.index_of(id))
                .collect(),
            None => (0..self.world.agents.len())
                .filter(|i| self.world.agents[*i].active)
                .collect(),
        };
        let start_clock = crate::domain::truncate_to_millis(self.now());
        let mut state = ShiftState {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            generation: self.shift_generation,
            start_instant: tokio::time::Instant::now(),
            start_clock,
            slots: agents
                .iter()
                .map(|&agent| Slot {
                    agent,
                    phase: Phase::Start,
                    next: Duration::ZERO,
                })
                .collect(),
            summary: ShiftSummary {
                agents: agents.len(),
                transitions: 0,
                short_idle_episodes: 0,
                long_idle_episodes: 0,
                started: start_clock,
                ended: start_clock,
            },
            done: Some(tx),
        };
        // Everyone starts on queue and IDLE, one ms apart so each user's timestamps are
        // strictly later than its current ones.
        for slot in 0..state.slots.len() {
            let at = Duration::from_millis(1);
            state.slots[slot].next = at;
            self.schedule_shift(state.start_instant + at, state.generation, slot);
        }
        if state.slots.is_empty() {
            if let Some(done) = state.done.take() {
                let _ = done.send(state.summary.clone());
            }
        }
        self.shift = Some(state);
        ShiftHandle { done: rx }
    }

    /// Moves one agent of the shift along (timer callback).
    pub(super) fn shift_step(&mut self, generation: u64, slot: usize) {
        let Some(mut state) = self.shift.take() else {
            return;
        };
        if state.generation != generation || slot >= state.slots.len() {
            self.shift = Some(state);
            return;
        }
        let offset = state.slots[slot].next;
        let at = state.start_clock + TimeDelta::from_std(offset).unwrap_or(TimeDelta::zero());
        let i = state.slots[slot].agent;
        let over = offset >= state.cfg.duration;
        let cfg = state.cfg.clone();
        let mut changes = Vec::new();
        let (phase, hold) = match state.slots[slot].phase {
            _ if over => {
                changes.extend(self.world.set_routing(i, "OFF_QUEUE", at));
                changes.extend(self.world.set_presence(i, OFFLINE_ID, at));
                (Phase::Done, Duration::ZERO)
            }
            Phase::Idle => {
                let roll: f64 = state.rng.random();
                if roll < cfg.off_queue_probability {
                    let pick = ["BREAK", "MEETING", LUNCH_ID][state.rng.random_range(0..3)];
                    let def = resolve_presence(pick).map_or(AVAILABLE_ID, |d| d.id);
                    changes.extend(self.world.set_presence(i, def, at));
                    changes.extend(self.world.set_routing(i, "OFF_QUEUE", at));
                    (Phase::OffQueue, hold(&mut state.rng, cfg.mean_hold))
                } else {
                    let status = if state.rng.random_bool(0.15) {
                        "NOT_RESPONDING"
                    } else {
                        "INTERACTING"
                    };
                    changes.extend(self.world.set_routing(i, status, at));
                    (Phase::Busy, hold(&mut state.rng, cfg.mean_hold))
                }
            }
            Phase::OffQueue
                if self.world.agents[i].presence_id != AVAILABLE_ID
                    && state.rng.random_bool(0.3) =>
            {
                // A presence change on its own (back at the desk, not yet on queue).
                changes.extend(self.world.set_presence(i, AVAILABLE_ID, at));
                (Phase::OffQueue, hold(&mut state.rng, cfg.mean_hold))
            }
            Phase::Start | Phase::Busy | Phase::OffQueue => {
                if self.world.agents[i].presence_id != ON_QUEUE_ID {
                    changes.extend(self.world.set_presence(i, ON_QUEUE_ID, at));
                }
                changes.extend(self.world.set_routing(i, "IDLE", at));
                let long = state.rng.random_bool(cfg.long_idle_probability);
                let band_low = cfg.idle_threshold - cfg.margin;
                let idle = if long {
                    state.summary.long_idle_episodes += 1;
                    let extra = cfg.mean_hold.mul_f64(state.rng.random_range(0.01..2.0));
                    cfg.idle_threshold + cfg.margin + extra.max(Duration::from_millis(1))
                } else {
                    state.summary.short_idle_episodes += 1;
                    band_low
                        .mul_f64(state.rng.random_range(0.05..0.95))
                        .max(Duration::from_millis(1))
                        .min(band_low.saturating_sub(Duration::from_millis(1)))
                };
                (Phase::Idle, idle)
            }
            Phase::Done => (Phase::Done, Duration::ZERO),
        };
        state.summary.transitions += changes
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    super::world::Change::Presence { .. } | super::world::Change::Routing { .. }
                )
            })
            .count() as u64;
        if !changes.is_empty() {
            state.summary.ended = state.summary.ended.max(at);
        }
        state.slots[slot].phase = phase;
        if phase == Phase::Done {
            if state.slots.iter().all(|s| s.phase == Phase::Done) {
                if let Some(done) = state.done.take() {
                    let _ = done.send(state.summary.clone());
                }
            }
        } else {
            let next = offset + hold.max(Duration::from_millis(1));
            state.slots[slot].next = next;
            self.schedule_shift(state.start_instant + next, generation, slot);
        }
        self.shift = Some(state);
        self.emit_all(changes);
    }
}

fn hold(rng: &mut StdRng, mean: Duration) -> Duration {
    mean.mul_f64(rng.random_range(0.5..1.5))
        .max(Duration::from_millis(1))
}

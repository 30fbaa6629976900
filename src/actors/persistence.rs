//! The persistence actor: the only writer to the database.
//!
//! It buffers what the other actors send and writes it in one transaction (see
//! [`crate::db::write_batch`]) when `batch_rows` rows are buffered or on the next `Tick`
//! (every `flush_interval`). The [`Credit`]s that travel with transitions are dropped only after
//! their batch commits: a slow or failing database therefore stops the WebSocket readers instead
//! of growing a queue without bound.
//!
//! A database error never fails the actor (a restart would lose the buffer): it is logged, kept
//! in [`DbHealth::last_error`], and the flush is retried on later ticks with a capped
//! exponential backoff (100 ms doubling to 5 s). Nothing accepted is dropped, except what is
//! still unwritten when the actor stops and the final flush (three attempts) fails; that loss is
//! logged with counts. The final flush gets at most 5 s.
//!
//! Shut it down with `drain_and_wait` (or `Flush` then `stop`): a plain `stop` discards messages
//! still in the mailbox; `post_stop` flushes only what was already buffered.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use crate::actors::Credit;
use crate::config::PersistenceConfig;
use crate::db::{self, Batch, PendingAlert};
use crate::domain::{AgentCurrent, Alert, AlertOutcome, DeadLetter, Transition, UserId};

/// Messages of the persistence actor.
#[derive(Debug)]
pub enum PersistMsg {
    /// Store one transition; the credit is released when its batch commits.
    Transition(Transition, Option<Credit>),
    /// Upsert the current state of one agent (`agents` table); the latest per user wins.
    Agent(AgentCurrent),
    /// Insert an alert record (status `pending`).
    AlertFired(Alert),
    /// Record how delivery ended.
    AlertOutcome(AlertOutcome),
    /// The stream is complete up to this Genesys instant (UTC): written with the next flush,
    /// after the rows buffered before it (the latest wins). A restart backfills from there.
    StreamComplete(chrono::DateTime<chrono::Utc>),
    /// Upsert one agent's episode log (JSON of `rules::AgentEpisodes`); the latest wins.
    Episodes(UserId, String),
    /// Insert a dead-letter record.
    DeadLetter(DeadLetter),
    /// Commit everything buffered, then reply (used at shutdown and by tests).
    Flush(RpcReplyPort<Result<(), String>>),
    /// Is the database writable? Replies with the last write error, if any.
    Health(RpcReplyPort<DbHealth>),
    /// Internal: the flush timer.
    Tick,
}

/// The persistence actor's view of the database, for `/readyz`.
#[derive(Debug, Clone, PartialEq)]
pub struct DbHealth {
    /// The last write check (at most 2 s old) or batch commit succeeded and no flush is failing.
    pub writable: bool,
    /// Last write error (never contains the database URL's password).
    pub last_error: Option<String>,
    /// Rows buffered and not yet committed.
    pub buffered: usize,
}

/// First retry delay after a failed flush; doubles per failure up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between flush retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a successful write check answers `Health` without writing again.
const HEALTH_CACHE: Duration = Duration::from_secs(2);
/// Flush attempts in `post_stop` before giving up on what is buffered.
const FINAL_FLUSH_ATTEMPTS: u32 = 3;
/// Longest `post_stop` spends on the final flush (stays inside the 10 s shutdown grace even
/// when every attempt waits out SQLite's 5 s busy timeout).
const FINAL_FLUSH_BUDGET: Duration = Duration::from_secs(5);

/// The persistence actor (stateless handler; see [`PersistenceState`]).
pub struct PersistenceActor;

/// Arguments of [`PersistenceActor`]: a connected, migrated database ([`db::connect`]) and the
/// batching configuration.
pub struct PersistenceArgs {
    /// Connected and migrated; the actor becomes its only writer.
    pub db: DatabaseConnection,
    /// Batch size, flush interval.
    pub config: PersistenceConfig,
}

/// State of [`PersistenceActor`]: the buffer not yet committed and the database's health.
pub struct PersistenceState {
    db: DatabaseConnection,
    config: PersistenceConfig,
    buffer: Buffer,
    /// Set while flushes fail; cleared by the next commit.
    failure: Option<Failure>,
    /// Last write check: when, and its error if it failed.
    probe: Option<(Instant, Option<String>)>,
    timer: Option<JoinHandle<()>>,
}

/// Rows accepted and not yet committed, in the shape [`db::write_batch`] takes.
#[derive(Default)]
struct Buffer {
    batch: Batch,
    /// Credits of the buffered transitions, dropped after the commit.
    credits: Vec<Credit>,
    /// `user_id` → index in `batch.agents`, so the latest state per user replaces the older.
    agent_index: HashMap<String, usize>,
    episode_index: HashMap<UserId, usize>,
    /// `alert_key` → index in `batch.alerts`, so an outcome can be folded into its alert.
    alert_index: HashMap<String, usize>,
}

impl Buffer {
    fn clear(&mut self) {
        *self = Buffer::default();
    }
}

struct Failure {
    error: String,
    consecutive: u32,
    retry_at: Instant,
}

impl Actor for PersistenceActor {
    type Msg = PersistMsg;
    type State = PersistenceState;
    type Arguments = PersistenceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: PersistenceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(PersistenceState {
            db: args.db,
            config: args.config,
            buffer: Buffer::default(),
            failure: None,
            probe: None,
            timer: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let period = state.config.flush_interval.max(Duration::from_millis(1));
        state.timer = Some(myself.send_interval(period, || PersistMsg::Tick));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PersistMsg::Transition(transition, credit) => {
                state.buffer.batch.transitions.push(transition);
                state.buffer.credits.extend(credit);
                state.flush_if_full().await;
            }
            PersistMsg::Agent(agent) => {
                let key = agent.user_id.as_str().to_owned();
                match state.buffer.agent_index.get(&key) {
                    Some(&i) => state.buffer.batch.agents[i] = agent,
                    None => {
                        state
                            .buffer
                            .agent_index
                            .insert(key, state.buffer.batch.agents.len());
                        state.buffer.batch.agents.push(agent);
                    }
                }
                state.flush_if_full().await;
            }
            PersistMsg::Episodes(user, json) => {
                match state.buffer.episode_index.get(&user) {
                    Some(&i) => state.buffer.batch.episodes[i].1 = json,
                    None => {
                        state
                            .buffer
                            .episode_index
                            .insert(user.clone(), state.buffer.batch.episodes.len());
                        state.buffer.batch.episodes.push((user, json));
                    }
                }
                state.flush_if_full().await;
            }
            PersistMsg::StreamComplete(until) => {
                let held = &mut state.buffer.batch.complete_until;
                *held = Some(held.map_or(until, |h| h.max(until)));
            }
            PersistMsg::DeadLetter(letter) => {
                state.buffer.batch.dead_letters.push(letter);
                state.flush_if_full().await;
            }
            PersistMsg::AlertFired(alert) => {
                if state.buffer.alert_index.contains_key(&alert.alert_key) {
                    tracing::debug!(alert_key = %alert.alert_key, "duplicate alert ignored");
                } else {
                    state
                        .buffer
                        .alert_index
                        .insert(alert.alert_key.clone(), state.buffer.batch.alerts.len());
                    state.buffer.batch.alerts.push(PendingAlert {
                        alert,
                        outcome: None,
                    });
                }
                state.flush_if_full().await;
            }
            PersistMsg::AlertOutcome(outcome) => {
                match state.buffer.alert_index.get(&outcome.alert_key) {
                    Some(&i) => state.buffer.batch.alerts[i].outcome = Some(outcome),
                    None => state.buffer.batch.outcomes.push(outcome),
                }
                state.flush_if_full().await;
            }
            PersistMsg::Flush(reply) => {
                let result = state.flush().await;
                let _ = reply.send(result);
            }
            PersistMsg::Health(reply) => {
                let health = state.health().await;
                let _ = reply.send(health);
            }
            PersistMsg::Tick => {
                if !state.buffer.batch.is_empty() && state.may_retry() {
                    let _ = state.flush().await;
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        let final_flush = async {
            let mut delay = INITIAL_BACKOFF;
            for attempt in 1..=FINAL_FLUSH_ATTEMPTS {
                if state.flush().await.is_ok() {
                    return true;
                }
                if attempt < FINAL_FLUSH_ATTEMPTS {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
            false
        };
        // An interrupted transaction rolls back, so the counts below stay right.
        if let Ok(true) = tokio::time::timeout(FINAL_FLUSH_BUDGET, final_flush).await {
            return Ok(());
        }
        let batch = &state.buffer.batch;
        tracing::error!(
            transitions = batch.transitions.len(),
            agents = batch.agents.len(),
            alerts = batch.alerts.len(),
            outcomes = batch.outcomes.len(),
            error = state
                .failure
                .as_ref()
                .map(|f| f.error.as_str())
                .unwrap_or(""),
            "persistence stopped with unwritten rows; they are lost"
        );
        Ok(())
    }
}

impl PersistenceState {
    /// Flushes when the buffer reached `batch_rows`, unless a failed flush is backing off.
    async fn flush_if_full(&mut self) {
        if self.buffer.batch.len() >= self.config.batch_rows.max(1) && self.may_retry() {
            let _ = self.flush().await;
        }
    }

    fn may_retry(&self) -> bool {
        self.failure
            .as_ref()
            .is_none_or(|f| Instant::now() >= f.retry_at)
    }

    /// Writes the whole buffer in one transaction. On success the buffer and its credits are
    /// released; on failure everything stays buffered and the next retry is scheduled.
    async fn flush(&mut self) -> Result<(), String> {
        if self.buffer.batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        match db::write_batch(&self.db, &self.buffer.batch).await {
            Ok(summary) => {
                if let Some(failure) = self.failure.take() {
                    tracing::info!(
                        failed_attempts = failure.consecutive,
                        "database writes recovered"
                    );
                }
                if summary.outcomes_unmatched > 0 {
                    tracing::warn!(
                        count = summary.outcomes_unmatched,
                        "alert outcomes for unknown alert keys dropped"
                    );
                }
                tracing::debug!(
                    inserted = summary.transitions_inserted,
                    duplicates = summary.transitions_duplicate,
                    agents = summary.agents_upserted,
                    alerts = summary.alerts_inserted,
                    outcomes = summary.outcomes_applied,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "batch committed"
                );
                crate::metrics::write_batch(
                    self.buffer.batch.len(),
                    summary.transitions_inserted,
                    started.elapsed(),
                );
                // Dropping the credits here, after the commit, lets the readers go on.
                self.buffer.clear();
                // A commit is as good a write check as the probe.
                self.probe = Some((Instant::now(), None));
                Ok(())
            }
            Err(err) => {
                let error = db::describe(&err);
                crate::metrics::write_error();
                let consecutive = self.failure.as_ref().map_or(0, |f| f.consecutive) + 1;
                let backoff = backoff(consecutive);
                tracing::warn!(
                    error = %error,
                    attempt = consecutive,
                    retry_in_ms = backoff.as_millis() as u64,
                    buffered = self.buffer.batch.len(),
                    "database write failed; keeping the batch and retrying"
                );
                self.failure = Some(Failure {
                    error: error.clone(),
                    consecutive,
                    retry_at: Instant::now() + backoff,
                });
                Err(error)
            }
        }
    }

    /// Health from the flush state and a write check at most every [`HEALTH_CACHE`].
    async fn health(&mut self) -> DbHealth {
        let buffered = self.buffer.batch.len();
        if let Some(failure) = &self.failure {
            return DbHealth {
                writable: false,
                last_error: Some(failure.error.clone()),
                buffered,
            };
        }
        let fresh = self
            .probe
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < HEALTH_CACHE);
        if !fresh {
            let error = db::probe_write(&self.db)
                .await
                .err()
                .map(|e| db::describe(&e));
            if let Some(error) = &error {
                tracing::warn!(error = %error, "database write check failed");
            }
            self.probe = Some((Instant::now(), error));
        }
        let last_error = self.probe.as_ref().and_then(|(_, e)| e.clone());
        DbHealth {
            writable: last_error.is_none(),
            last_error,
            buffered,
        }
    }
}

/// Delay before retry number `consecutive` (1-based): 100 ms, 200 ms, … capped at 5 s.
fn backoff(consecutive: u32) -> Duration {
    let factor = 1u32 << consecutive.saturating_sub(1).min(16);
    INITIAL_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests;

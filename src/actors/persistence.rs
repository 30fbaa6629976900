//! The persistence actor: the only writer to the database.
//!
//! It buffers what the other actors send and writes it in one transaction (see
//! [`crate::db::write_batch`]) when `batch_rows` rows are buffered or on the next `Tick`
//! (every `flush_interval`). The [`Credit`]s that travel with transitions are dropped only after
//! their batch commits: a slow or failing database therefore stops the WebSocket readers instead
//! of growing a queue without bound.
//!
//! **One write in flight, overlapped.** A batch is written on a thread of tokio's blocking pool
//! while the actor goes on accepting messages into the next one; the write reports back with
//! [`PersistMsg::Written`]. So the one writer never waits for the actor to build its next
//! batch: that batch has filled up while the previous one was written, and it is written as
//! soon as the previous one committed (`BENCHMARKS.md`, figure 1). Under load a batch is
//! therefore whatever arrived during the previous write, `batch_rows` or more. There is never
//! more than one write in flight, so batches commit in the order they were taken. A failed
//! batch goes back in front of what arrived meanwhile (see [`PersistenceState::put_back`]).
//! `Flush`, `Health` (when it must check) and the stop wait for the write in flight first, as
//! they waited for any write before.
//!
//! **Current state is coalesced.** The agents' current state ([`PersistMsg::Agent`]) and
//! episode logs ([`PersistMsg::Episodes`]) change with nearly every transition, but only the
//! latest of each matters. Both live in the agent's one `agents` row: they are kept in a map
//! keyed by user (the latest of each wins, [`db::AgentRow`]) and written at most once per
//! [`STATE_INTERVAL`] (1 s; [`STATE_INTERVAL_BUSY`], 5 s, while the
//! history arrives at a batch a second or more), riding in the same transaction as the
//! history rows buffered at that moment, and also on every `Flush`, with every
//! `StreamComplete` checkpoint and at stop. A firehose of N transitions per agent per second
//! therefore writes N history rows but one `agents` row per agent per second. What a crash
//! (not a graceful stop) can lose is described in `actors.md`.
//!
//! A database error never fails the actor (a restart would lose the buffer): it is logged, kept
//! in [`DbHealth::last_error`], and the flush is retried on later ticks with a capped
//! exponential backoff (100 ms doubling to 5 s). Nothing accepted is dropped, except what is
//! still unwritten when the actor stops and the final flush (three attempts) fails; that loss is
//! logged with counts. The final flush gets at most 5 s, and never runs past the shutdown
//! deadline ([`PersistMsg::StopBy`]): from that deadline on no write is attempted and a write
//! still running is abandoned (its transaction rolls back), so the supervisor's count of
//! uncommitted transitions is final and the process stops within its grace even when the
//! database is locked.
//!
//! A batch counts as stored (credits released, metrics, logs) only after its `COMMIT`
//! succeeded and, on SQLite, the database path still names the file identified at start
//! ([`db::SqliteFile`]): a file deleted or replaced while in use fails every flush and health
//! check from then on, since rows written into a deleted file are lost at restart.
//!
//! Shut it down with `drain_and_wait` (or `Flush` then `stop`): a plain `stop` discards messages
//! still in the mailbox; `post_stop` flushes only what was already buffered.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sea_orm::DatabaseConnection;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actors::Credit;
use crate::config::PersistenceConfig;
use crate::db::{self, AgentRow, Batch, BatchSummary, PendingAlert};
use crate::domain::{AgentCurrent, Alert, AlertOutcome, DeadLetter, Transition, UserId};

/// Messages of the persistence actor.
#[derive(Debug)]
pub enum PersistMsg {
    /// Store one transition; the credit is released when its batch commits.
    Transition(Transition, Option<Credit>),
    /// Upsert the current state of one agent (its `agents` row). Coalesced: the latest per user
    /// wins and is written at most every [`STATE_INTERVAL`] (and on `Flush`, with a checkpoint,
    /// at stop); it does not count towards the batch size.
    Agent(AgentCurrent),
    /// Insert an alert record (status `pending`).
    AlertFired(Alert),
    /// Record how delivery ended.
    AlertOutcome(AlertOutcome),
    /// The stream is complete up to this Genesys instant (UTC): written with the next flush,
    /// after the rows buffered before it, coalesced state included (the latest wins). A
    /// restart backfills from there.
    StreamComplete(chrono::DateTime<chrono::Utc>),
    /// Upsert one agent's episode log (JSON of `rules::AgentEpisodes`, the `episodes` column of
    /// its `agents` row). Coalesced like [`PersistMsg::Agent`], into the same row: the latest
    /// per user wins, written on the state cadence.
    Episodes(UserId, String),
    /// Insert a dead-letter record.
    DeadLetter(DeadLetter),
    /// These users are no longer monitored (their agent actors have stopped): drop their
    /// buffered upserts and delete their `agents` rows (state and episode log) with the next
    /// flush. History rows and alerts are kept. A later `Agent`/`Episodes` for the
    /// same user (monitored again) is written after the delete, so it wins.
    Forget(Vec<UserId>),
    /// The complete set of monitored users (after the first user listing): drop buffered
    /// upserts of every other user and delete their `agents` rows with the next flush (rows
    /// left by earlier runs with other users). History and alerts are kept.
    KeepOnly(Vec<UserId>),
    /// Commit everything buffered, coalesced state included, then reply (used at shutdown and
    /// by tests).
    Flush(RpcReplyPort<Result<(), String>>),
    /// Is the database writable? Replies with the last write error, if any.
    Health(RpcReplyPort<DbHealth>),
    /// The service is stopping: no write may run past this instant. A write still running then
    /// is abandoned (its transaction rolls back) and later flushes, the final one in
    /// `post_stop` included, fail at once. Sent by the supervisor's `Shutdown`.
    StopBy(tokio::time::Instant),
    /// Internal: the flush timer (every `flush_interval`): flushes buffered history rows, and
    /// the coalesced state when it is due.
    Tick,
    /// Internal: the write task numbered so has finished (committed or failed); its outcome is
    /// collected from the task. A number that is not the write in flight (one already collected
    /// by `Flush`) is ignored.
    Written(u64),
}

/// The persistence actor's view of the database, for `/readyz`.
#[derive(Debug, Clone, PartialEq)]
pub struct DbHealth {
    /// The last write check (at most 2 s old) or batch commit succeeded and no flush is failing.
    pub writable: bool,
    /// Last write error (never contains the database URL's password).
    pub last_error: Option<String>,
    /// Rows buffered and not yet committed: history rows (and a held checkpoint) plus the
    /// coalesced `agents` rows (one per user at most).
    pub buffered: usize,
}

/// First retry delay after a failed flush; doubles per failure up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between flush retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a successful write check answers `Health` without writing again.
const HEALTH_CACHE: Duration = Duration::from_secs(2);
/// How often, at most, the coalesced current state (`agents` rows) is written
/// while history rows keep flowing at less than one batch ([`PersistenceConfig::batch_rows`]) a
/// second; `Flush`, a `StreamComplete` checkpoint and stopping write it at once. Bounds how
/// stale `GET /api/v1/agents` can be (plus the flush tick) and how much current state a crash
/// can lose.
pub const STATE_INTERVAL: Duration = Duration::from_secs(1);
/// The same bound while the history arrives at a batch a second or more (a shift start, a
/// backlog after an outage): the one writer is then the pipeline's limit, and with thousands of
/// agents each changing about once a second, a state written every second would cost one more
/// row per transition (`BENCHMARKS.md`, figure 1). Equal to the supervisor's checkpoint
/// interval, which forces the state anyway, so a crash cannot lose more than the backfill from
/// the last checkpoint replays.
pub const STATE_INTERVAL_BUSY: Duration = Duration::from_secs(5);
/// Flush attempts in `post_stop` before giving up on what is buffered.
const FINAL_FLUSH_ATTEMPTS: u32 = 3;
/// Longest `post_stop` spends on the final flush; while stopping it is further cut to what is
/// left before the shutdown deadline ([`PersistMsg::StopBy`]), so a write waiting out SQLite's
/// 5 s busy timeout cannot push the stop past its grace.
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
    /// The SQLite file as identified at start (`None`: PostgreSQL, in memory): checked before
    /// and after every write and in every health check (see [`db::SqliteFile`]).
    file: Option<db::SqliteFile>,
    /// The file's loss has been logged as an error and the pool closed (once; later attempts
    /// log as warnings).
    file_alarm: bool,
    /// The shutdown deadline ([`PersistMsg::StopBy`]), once the service is stopping.
    stop_by: Option<tokio::time::Instant>,
    /// The same deadline for the write task in flight, which enforces it itself.
    stop_by_tx: watch::Sender<Option<tokio::time::Instant>>,
    /// The batch being written, if any (at most one).
    in_flight: Option<InFlight>,
    /// Number of the next write task.
    next_write: u64,
    /// Credits of rows lost by a write task that ended without an outcome: kept until the
    /// actor stops, so the stop's count of uncommitted transitions holds them.
    unreleased: Vec<Credit>,
}

/// A batch handed to its write task, and what stays with the actor until the outcome is known.
struct InFlight {
    /// The task's number ([`PersistMsg::Written`]).
    id: u64,
    /// Returns the batch (to put back should the write fail) and the outcome.
    task: JoinHandle<(Batch, Result<BatchSummary, String>)>,
    /// Credits of the batch's transitions: dropped after the commit, kept if it fails.
    credits: Vec<Credit>,
    /// The batch carries the coalesced state.
    with_state: bool,
    /// Rows of every table in the batch (for `Health`'s `buffered` and the metrics).
    rows: usize,
    /// Transitions in the batch (for the log, should it be lost).
    transitions: usize,
    started: Instant,
}

/// Rows accepted and not yet committed.
struct Buffer {
    /// History rows (transitions, alerts, outcomes, dead letters) and the checkpoint, in the
    /// shape [`db::write_batch`] takes. `batch.agents` stays empty: the coalesced state is
    /// moved into a batch only when it is handed to its write task
    /// ([`PersistenceState::start_write`]).
    batch: Batch,
    /// Credits of the buffered transitions, dropped after the commit.
    credits: Vec<Credit>,
    /// `alert_key` → index in `batch.alerts`, so an outcome can be folded into its alert.
    alert_index: HashMap<String, usize>,
    /// Coalesced `agents` row per user (current state, episode log), not yet committed (the
    /// latest of each wins).
    agents: HashMap<UserId, AgentRow>,
    /// When the coalesced state was last committed (or the actor started).
    state_written: Instant,
    /// History rows committed since then: the load that picks [`STATE_INTERVAL`] or
    /// [`STATE_INTERVAL_BUSY`].
    history_since_state: usize,
}

impl Buffer {
    fn new() -> Buffer {
        Buffer {
            batch: Batch::default(),
            credits: Vec::new(),
            alert_index: HashMap::new(),
            agents: HashMap::new(),
            state_written: Instant::now(),
            history_since_state: 0,
        }
    }

    /// The pending `agents` row of `user`, made empty if there is none.
    fn row(&mut self, user: UserId) -> &mut AgentRow {
        self.agents
            .entry(user)
            .or_insert_with_key(|user| AgentRow::new(user.clone()))
    }

    /// Rows of every kind accepted and not yet committed.
    fn len(&self) -> usize {
        self.batch.len() + self.agents.len()
    }

    /// Coalesced state is waiting and its interval has passed since it was last written:
    /// [`STATE_INTERVAL`] while fewer than `batch_rows` history rows a second were committed
    /// since, [`STATE_INTERVAL_BUSY`] otherwise.
    fn state_due(&self, batch_rows: usize) -> bool {
        if self.agents.is_empty() {
            return false;
        }
        let elapsed = self.state_written.elapsed();
        let busy = self.history_since_state as f64 >= batch_rows as f64 * elapsed.as_secs_f64();
        elapsed
            >= if busy {
                STATE_INTERVAL_BUSY
            } else {
                STATE_INTERVAL
            }
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
        let file = match db::SqliteFile::identify(&args.db).await {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(
                    error = %db::describe(&e),
                    "cannot identify the SQLite database file; its deletion will go unnoticed"
                );
                None
            }
        };
        Ok(PersistenceState {
            file,
            file_alarm: false,
            db: args.db,
            config: args.config,
            buffer: Buffer::new(),
            failure: None,
            probe: None,
            timer: None,
            stop_by: None,
            stop_by_tx: watch::Sender::new(None),
            in_flight: None,
            next_write: 0,
            unreleased: Vec::new(),
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
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PersistMsg::Transition(transition, credit) => {
                state.buffer.batch.transitions.push(transition);
                state.buffer.credits.extend(credit);
                state.flush_if_full(&myself);
            }
            // Coalesced: written on the state cadence, not counted towards `batch_rows`.
            PersistMsg::Agent(agent) => {
                let user = agent.user_id.clone();
                state.buffer.row(user).current = Some(agent);
            }
            PersistMsg::Episodes(user, json) => {
                state.buffer.row(user).episodes = Some(json);
            }
            PersistMsg::StreamComplete(until) => {
                // The write that commits this checkpoint also commits the coalesced state (see
                // `start_write`), so it is never committed ahead of the episode logs it covers.
                let held = &mut state.buffer.batch.complete_until;
                *held = Some(held.map_or(until, |h| h.max(until)));
            }
            PersistMsg::DeadLetter(letter) => {
                state.buffer.batch.dead_letters.push(letter);
                state.flush_if_full(&myself);
            }
            // In order: the buffered upserts are older than the delete, so they go with it;
            // the delete runs before the upserts of its batch (`db::write_batch`).
            PersistMsg::Forget(users) => {
                for user in &users {
                    state.buffer.agents.remove(user);
                }
                state.buffer.batch.forget.extend(users);
            }
            PersistMsg::KeepOnly(users) => {
                let keep: std::collections::HashSet<&UserId> = users.iter().collect();
                state.buffer.agents.retain(|user, _| keep.contains(user));
                state.buffer.batch.keep_only = Some(users);
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
                state.flush_if_full(&myself);
            }
            PersistMsg::AlertOutcome(outcome) => {
                match state.buffer.alert_index.get(&outcome.alert_key) {
                    Some(&i) => state.buffer.batch.alerts[i].outcome = Some(outcome),
                    None => state.buffer.batch.outcomes.push(outcome),
                }
                state.flush_if_full(&myself);
            }
            PersistMsg::Flush(reply) => {
                let result = state.flush(&myself, true).await;
                let _ = reply.send(result);
            }
            PersistMsg::Health(reply) => {
                let health = state.health().await;
                let _ = reply.send(health);
            }
            PersistMsg::StopBy(deadline) => {
                state.stop_by = Some(deadline);
                // The write in flight, if any, abandons itself at the deadline too.
                state.stop_by_tx.send_replace(Some(deadline));
            }
            PersistMsg::Tick => {
                // One `stat(2)` a tick: a deleted or replaced file is noticed within a flush
                // interval even while nothing is written.
                if let Some(problem) = state.file_problem() {
                    state.file_lost(&problem);
                }
                if state.in_flight.is_none()
                    && (!state.buffer.batch.is_empty()
                        || state.buffer.state_due(state.config.batch_rows.max(1)))
                    && state.may_retry()
                {
                    state.start_write(&myself, false);
                }
            }
            PersistMsg::Written(id) => {
                if state.in_flight.as_ref().is_some_and(|w| w.id == id) {
                    // A failure is logged and scheduled for retry by `finish`.
                    let _ = state.settle().await;
                    // What arrived during the write goes next, if it is a batch already.
                    state.flush_if_full(&myself);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        let budget = state.stop_by.map_or(FINAL_FLUSH_BUDGET, |by| {
            by.saturating_duration_since(tokio::time::Instant::now())
                .min(FINAL_FLUSH_BUDGET)
        });
        let final_flush = async {
            let mut delay = INITIAL_BACKOFF;
            for attempt in 1..=FINAL_FLUSH_ATTEMPTS {
                if state.flush(&myself, true).await.is_ok() {
                    return true;
                }
                if attempt < FINAL_FLUSH_ATTEMPTS {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
            false
        };
        // An interrupted transaction rolls back, so the counts below stay right. Past the
        // shutdown deadline every attempt fails at once (see `write`).
        if let Ok(true) = tokio::time::timeout(budget, final_flush).await {
            return Ok(());
        }
        // A write still in flight when the budget ran out is abandoned: its deadline is now,
        // so it drops its transaction (rolled back) at its next step. (A thread of the
        // blocking pool cannot be aborted from outside.)
        state
            .stop_by_tx
            .send_replace(Some(tokio::time::Instant::now()));
        let (in_flight_transitions, in_flight_rows) = state
            .in_flight
            .take()
            .map_or((0, 0), |w| (w.transitions, w.rows));
        let batch = &state.buffer.batch;
        tracing::error!(
            transitions = batch.transitions.len() + in_flight_transitions,
            in_flight_rows,
            agents = state.buffer.agents.len(),
            alerts = batch.alerts.len(),
            outcomes = batch.outcomes.len(),
            dead_letters = batch.dead_letters.len(),
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
    /// Starts writing the history buffer when it reached `batch_rows`, unless a write is in
    /// flight (its `Written` starts the next one) or a failed flush is backing off. The coalesced
    /// state rides along only if it is due.
    fn flush_if_full(&mut self, myself: &ActorRef<PersistMsg>) {
        if self.in_flight.is_none()
            && self.buffer.batch.len() >= self.config.batch_rows.max(1)
            && self.may_retry()
        {
            self.start_write(myself, false);
        }
    }

    fn may_retry(&self) -> bool {
        self.failure
            .as_ref()
            .is_none_or(|f| Instant::now() >= f.retry_at)
    }

    /// Writes everything buffered now, after the write in flight, and waits for the outcome:
    /// `Ok` once all of it is committed. If the write in flight fails, its error is returned
    /// at once (its rows are back in the buffer for the next attempt), so one call makes one
    /// attempt.
    async fn flush(
        &mut self,
        myself: &ActorRef<PersistMsg>,
        with_state: bool,
    ) -> Result<(), String> {
        self.settle().await?;
        self.start_write(myself, with_state);
        self.settle().await
    }

    /// Hands the history buffer to a write task, with the coalesced state when `with_state` is
    /// set, when it is due ([`STATE_INTERVAL`]) or when a checkpoint is held. Nothing may be in
    /// flight. The buffer starts empty; the task reports with [`PersistMsg::Written`] and
    /// [`PersistenceState::settle`] collects the outcome.
    ///
    /// Why a checkpoint forces the state: `stream_state.complete_until` tells the next start
    /// where to backfill from, and the agents resume from the persisted episode logs. If the
    /// checkpoint were committed while older episode logs were still only in memory, a crash
    /// would leave a database whose logs predate the checkpoint: the restart would backfill
    /// only from the checkpoint on, so the changes between the committed logs and the
    /// checkpoint would never reach the rules (an episode missed or judged on a stale state).
    /// Committing every log buffered before the checkpoint in the same transaction, before the
    /// `stream_state` upsert, keeps the logs at least as new as the checkpoint.
    fn start_write(&mut self, myself: &ActorRef<PersistMsg>, with_state: bool) {
        debug_assert!(self.in_flight.is_none(), "one write in flight at most");
        let with_state = with_state
            || self.buffer.batch.complete_until.is_some()
            || self.buffer.state_due(self.config.batch_rows.max(1));
        if with_state {
            self.buffer.batch.agents = self.buffer.agents.drain().map(|(_, row)| row).collect();
        }
        if self.buffer.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.buffer.batch);
        let credits = std::mem::take(&mut self.buffer.credits);
        self.buffer.alert_index.clear();
        let id = self.next_write;
        self.next_write += 1;
        let rows = batch.len();
        let transitions = batch.transitions.len();
        let db = self.db.clone();
        let file = self.file.clone();
        let stop_by = self.stop_by_tx.subscribe();
        let myself = myself.clone();
        // Driven on a thread of the blocking pool, not as a task among the actors': a write is
        // hundreds of round trips to the database driver (a statement each), and each reply
        // then wakes this thread at once instead of queueing the write behind thousands of
        // agents' messages on the runtime's workers (`BENCHMARKS.md`, figure 1).
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            runtime.block_on(async move {
                let write = write(&db, file.as_ref(), &batch, stop_by);
                let result = AssertUnwindSafe(write)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err("the database write panicked".to_owned()));
                let _ = myself.cast(PersistMsg::Written(id));
                (batch, result)
            })
        });
        self.in_flight = Some(InFlight {
            id,
            task,
            credits,
            with_state,
            rows,
            transitions,
            started: Instant::now(),
        });
    }

    /// Waits for the write in flight, if any, and takes in its outcome
    /// ([`PersistenceState::finish`]). `Ok` when nothing was in flight.
    async fn settle(&mut self) -> Result<(), String> {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return Ok(());
        };
        // Not taken before the wait: a stop that gives up waiting still finds it (`post_stop`).
        let joined = (&mut in_flight.task).await;
        let in_flight = self.in_flight.take().expect("the write in flight");
        match joined {
            Ok((batch, result)) => self.finish(in_flight, batch, result),
            Err(e) => {
                // Not expected (a panic is caught inside the write, and nothing aborts it): its
                // rows are gone, and their credits are kept until the actor ends, so the stop
                // counts them.
                let error = format!("the database write ended without an outcome: {e}");
                tracing::error!(
                    transitions = in_flight.transitions,
                    rows = in_flight.rows,
                    error = %error,
                    "a batch was lost"
                );
                self.unreleased.extend(in_flight.credits);
                Err(error)
            }
        }
    }

    /// Takes in the outcome of a write: on success the credits are released and the metrics
    /// and state cadence updated; on failure the batch goes back in front of what arrived
    /// meanwhile and the next retry is scheduled.
    fn finish(
        &mut self,
        in_flight: InFlight,
        batch: Batch,
        result: Result<BatchSummary, String>,
    ) -> Result<(), String> {
        match result {
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
                let elapsed = in_flight.started.elapsed();
                tracing::debug!(
                    inserted = summary.transitions_inserted,
                    duplicates = summary.transitions_duplicate,
                    agents = summary.agents_upserted,
                    agents_deleted = summary.agents_deleted,
                    alerts = summary.alerts_inserted,
                    outcomes = summary.outcomes_applied,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "batch committed"
                );
                crate::metrics::write_batch(in_flight.rows, summary.transitions_inserted, elapsed);
                // Dropping the credits here, after the commit, lets the readers go on.
                drop(in_flight.credits);
                drop(batch);
                if in_flight.with_state {
                    self.buffer.state_written = Instant::now();
                    self.buffer.history_since_state = 0;
                } else {
                    self.buffer.history_since_state += summary.transitions_inserted as usize
                        + summary.transitions_duplicate as usize;
                }
                // A commit is as good a write check as the probe.
                self.probe = Some((Instant::now(), None));
                Ok(())
            }
            Err(error) => {
                crate::metrics::write_error();
                self.put_back(batch, in_flight.credits);
                let consecutive = self.failure.as_ref().map_or(0, |f| f.consecutive) + 1;
                let backoff = backoff(consecutive);
                if let Some(problem) = self.file_problem() {
                    self.file_lost(&problem);
                }
                tracing::warn!(
                    error = %error,
                    attempt = consecutive,
                    retry_in_ms = backoff.as_millis() as u64,
                    buffered = self.buffer.len(),
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

    /// Puts a batch whose write failed back into the buffer, in front of everything received
    /// since it was taken (it is older): its rows first, its credits with it; its `agents` rows
    /// under the newer ones of the same users (the newer parts win), except those of users
    /// forgotten since (a `Forget` or `KeepOnly` received meanwhile is newer than them).
    fn put_back(&mut self, mut batch: Batch, credits: Vec<Credit>) {
        let newer = std::mem::take(&mut self.buffer.batch);
        // Sets, not the vectors: `keep_only` is every monitored user (tens of thousands), and
        // so can the state rows be.
        let forgotten: std::collections::HashSet<&UserId> = newer.forget.iter().collect();
        let kept: Option<std::collections::HashSet<&UserId>> =
            newer.keep_only.as_ref().map(|keep| keep.iter().collect());
        for row in std::mem::take(&mut batch.agents) {
            if forgotten.contains(&row.user_id)
                || kept
                    .as_ref()
                    .is_some_and(|kept| !kept.contains(&row.user_id))
            {
                continue;
            }
            let pending = self.buffer.row(row.user_id.clone());
            let newer_row = std::mem::replace(pending, row);
            pending.update(newer_row);
        }
        drop((forgotten, kept));
        batch.forget.extend(newer.forget);
        if newer.keep_only.is_some() {
            batch.keep_only = newer.keep_only;
        }
        batch.transitions.extend(newer.transitions);
        // An alert fired again while its first copy was being written is a duplicate (the
        // insert would skip it, and the outcome folded into it with it): keep the first copy
        // and apply that outcome as an update, after the outcomes received before it.
        let index = &mut self.buffer.alert_index;
        *index = batch
            .alerts
            .iter()
            .enumerate()
            .map(|(i, pending)| (pending.alert.alert_key.clone(), i))
            .collect();
        let mut folded = Vec::new();
        for pending in newer.alerts {
            if index.contains_key(&pending.alert.alert_key) {
                tracing::debug!(alert_key = %pending.alert.alert_key, "duplicate alert ignored");
                folded.extend(pending.outcome);
            } else {
                index.insert(pending.alert.alert_key.clone(), batch.alerts.len());
                batch.alerts.push(pending);
            }
        }
        batch.outcomes.extend(newer.outcomes);
        batch.outcomes.extend(folded);
        batch.dead_letters.extend(newer.dead_letters);
        batch.complete_until = batch.complete_until.max(newer.complete_until);
        self.buffer.batch = batch;
        let newer_credits = std::mem::replace(&mut self.buffer.credits, credits);
        self.buffer.credits.extend(newer_credits);
    }

    /// Why the SQLite file can no longer be written safely (deleted or replaced), if it can't.
    fn file_problem(&self) -> Option<String> {
        self.file.as_ref().and_then(|file| file.check().err())
    }

    /// The SQLite file was deleted or replaced (`problem` says which): the first time, log it,
    /// carry the old database's `-wal` into the old file, and close the connection pool (shared
    /// with the API) so that nothing opens the path again.
    ///
    /// Why: the old database's `-wal` file stays at `<path>-wal`. A connection opened on the
    /// path now would take it for the new file's and "recover" the old pages into it,
    /// corrupting a replacement (or, on a deleted path, create an empty database); so would the
    /// next start, or any other program opening the path. A checkpoint in `TRUNCATE` mode
    /// through a connection that still has the old file open writes those pages into the old
    /// file (the deleted inode, or the file where it was moved) and empties the `-wal`. From
    /// then on every write fails (the batch stays in memory, the stop reports it uncommitted)
    /// and the API answers 503; a restart opens the file anew.
    fn file_lost(&mut self, problem: &str) {
        if self.file_alarm {
            return;
        }
        self.file_alarm = true;
        tracing::error!(
            error = %problem,
            buffered = self.buffer.len(),
            "database file lost; keeping what is buffered in memory, closing the database \
             connections and refusing to write"
        );
        let pool = self.db.get_sqlite_connection_pool().clone();
        // An idle connection (never a new one: that would open the path), taken before the
        // pool is closed; `close` marks it closed at once, so no acquire succeeds from here on.
        let held = pool.try_acquire();
        drop(pool.close());
        tokio::spawn(async move {
            match held {
                Some(mut conn) => checkpoint_old_wal(&mut conn).await,
                None => tracing::warn!(
                    "no idle database connection to checkpoint the lost file's -wal: remove the \
                     -wal and -shm files beside the database path before anything opens it"
                ),
            }
            // Waits for the connections in use (an API export, say) to come back.
            pool.close().await;
        });
    }

    /// Health from the SQLite file's check, the flush state and a write check at most every
    /// [`HEALTH_CACHE`].
    async fn health(&mut self) -> DbHealth {
        let fresh = |state: &Self| {
            state
                .probe
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() < HEALTH_CACHE)
        };
        if !fresh(self) {
            // The write in flight answers first, as a write check would wait for it anyway (its
            // commit is a write check too).
            let _ = self.settle().await;
        }
        let fresh = fresh(self);
        let buffered = self.buffer.len() + self.in_flight.as_ref().map_or(0, |w| w.rows);
        if let Some(problem) = self.file_problem() {
            self.file_lost(&problem);
            return DbHealth {
                writable: false,
                last_error: Some(problem),
                buffered,
            };
        }
        if let Some(failure) = &self.failure {
            return DbHealth {
                writable: false,
                last_error: Some(failure.error.clone()),
                buffered,
            };
        }
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

/// The write task's work: [`db::write_batch`] of `batch`, refused before it starts and not
/// counted after it committed while the SQLite file is not the one identified at start (rows
/// written into a deleted or replaced file are lost at restart; the batch is kept and retried
/// like any failed one, and duplicates insert nothing). Once the shutdown deadline (`stop_by`,
/// which may arrive while the write runs) has passed, nothing is written and a write still
/// running is abandoned: dropping it rolls its transaction back, so nothing is committed after
/// the supervisor's count. Errors are described without the database URL's password.
async fn write(
    db: &DatabaseConnection,
    file: Option<&db::SqliteFile>,
    batch: &Batch,
    mut stop_by: watch::Receiver<Option<tokio::time::Instant>>,
) -> Result<BatchSummary, String> {
    let file_problem = || file.and_then(|file| file.check().err());
    if let Some(problem) = file_problem() {
        return Err(problem);
    }
    let write = db::write_batch(db, batch);
    tokio::pin!(write);
    let result = loop {
        let deadline = *stop_by.borrow_and_update();
        match deadline {
            Some(by) if tokio::time::Instant::now() >= by => {
                return Err("the shutdown deadline has passed; nothing more is written".to_owned());
            }
            Some(by) => match tokio::time::timeout_at(by, &mut write).await {
                Ok(result) => break result,
                Err(_) => {
                    return Err(
                        "the shutdown deadline passed before the write committed".to_owned()
                    );
                }
            },
            None => tokio::select! {
                result = &mut write => break result,
                changed = stop_by.changed() => {
                    if changed.is_err() {
                        // The actor is gone: nobody can set a deadline any more.
                        break (&mut write).await;
                    }
                }
            },
        }
    };
    let summary = result.map_err(|e| db::describe(&e))?;
    match file_problem() {
        Some(problem) => Err(problem),
        None => Ok(summary),
    }
}

/// `PRAGMA wal_checkpoint(TRUNCATE)` on `conn` (a connection that still has the lost SQLite
/// file open): the old `-wal`'s pages go into the old file and the `-wal` is emptied, so
/// nothing that opens the path later can take them for its own. Retried for up to a second
/// while readers hold the old `-wal` (`busy`); the outcome is logged.
async fn checkpoint_old_wal(conn: &mut sea_orm::sqlx::sqlite::SqliteConnection) {
    for _ in 0..20 {
        let result: Result<(i64, i64, i64), _> =
            sea_orm::sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *conn)
                .await;
        match result {
            Ok((0, _, _)) => {
                tracing::info!(
                    "the lost database file's -wal was checkpointed into it and emptied"
                );
                return;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => {
                tracing::warn!(error = %e, "checkpointing the lost database file's -wal failed: \
                    remove the -wal and -shm files beside the database path before anything \
                    opens it");
                return;
            }
        }
    }
    tracing::warn!(
        "the lost database file's -wal stays busy (readers): remove the -wal and -shm files \
         beside the database path before anything opens it"
    );
}

/// Delay before retry number `consecutive` (1-based): 100 ms, 200 ms, … capped at 5 s.
fn backoff(consecutive: u32) -> Duration {
    let factor = 1u32 << consecutive.saturating_sub(1).min(16);
    INITIAL_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests;

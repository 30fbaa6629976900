//! The persistence actor: the only writer to the database.
//!
//! It buffers what the other actors send and writes it in one transaction (see
//! [`crate::db::write_batch`]) when `batch_rows` rows are buffered or on the next `Tick`
//! (every `flush_interval`). The [`Credit`]s that travel with transitions are dropped only after
//! their batch commits: a slow or failing database therefore stops the WebSocket readers instead
//! of growing a queue without bound.
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
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use crate::actors::Credit;
use crate::config::PersistenceConfig;
use crate::db::{self, AgentRow, Batch, PendingAlert};
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
}

/// Rows accepted and not yet committed.
struct Buffer {
    /// History rows (transitions, alerts, outcomes, dead letters) and the checkpoint, in the
    /// shape [`db::write_batch`] takes. `batch.agents` is empty except while a flush that writes
    /// the coalesced state runs (see [`PersistenceState::flush`]).
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
            // Coalesced: written on the state cadence, not counted towards `batch_rows`.
            PersistMsg::Agent(agent) => {
                let user = agent.user_id.clone();
                state.buffer.row(user).current = Some(agent);
            }
            PersistMsg::Episodes(user, json) => {
                state.buffer.row(user).episodes = Some(json);
            }
            PersistMsg::StreamComplete(until) => {
                // The flush that commits this checkpoint also commits the coalesced state (see
                // `flush`), so it is never committed ahead of the episode logs it covers.
                let held = &mut state.buffer.batch.complete_until;
                *held = Some(held.map_or(until, |h| h.max(until)));
            }
            PersistMsg::DeadLetter(letter) => {
                state.buffer.batch.dead_letters.push(letter);
                state.flush_if_full().await;
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
                let result = state.flush(true).await;
                let _ = reply.send(result);
            }
            PersistMsg::Health(reply) => {
                let health = state.health().await;
                let _ = reply.send(health);
            }
            PersistMsg::StopBy(deadline) => {
                state.stop_by = Some(deadline);
            }
            PersistMsg::Tick => {
                // One `stat(2)` a tick: a deleted or replaced file is noticed within a flush
                // interval even while nothing is written.
                if let Some(problem) = state.file_problem() {
                    state.file_lost(&problem);
                }
                if (!state.buffer.batch.is_empty()
                    || state.buffer.state_due(state.config.batch_rows.max(1)))
                    && state.may_retry()
                {
                    let _ = state.flush(false).await;
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
        let budget = state.stop_by.map_or(FINAL_FLUSH_BUDGET, |by| {
            by.saturating_duration_since(tokio::time::Instant::now())
                .min(FINAL_FLUSH_BUDGET)
        });
        let final_flush = async {
            let mut delay = INITIAL_BACKOFF;
            for attempt in 1..=FINAL_FLUSH_ATTEMPTS {
                if state.flush(true).await.is_ok() {
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
        // shutdown deadline every attempt fails at once (see `flush`).
        if let Ok(true) = tokio::time::timeout(budget, final_flush).await {
            return Ok(());
        }
        let batch = &state.buffer.batch;
        tracing::error!(
            transitions = batch.transitions.len(),
            // An interrupted flush leaves the coalesced state in the batch, not in the map.
            agents = state.buffer.agents.len() + batch.agents.len(),
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
    /// Flushes when the history buffer reached `batch_rows`, unless a failed flush is backing
    /// off. The coalesced state rides along only if it is due.
    async fn flush_if_full(&mut self) {
        if self.buffer.batch.len() >= self.config.batch_rows.max(1) && self.may_retry() {
            let _ = self.flush(false).await;
        }
    }

    fn may_retry(&self) -> bool {
        self.failure
            .as_ref()
            .is_none_or(|f| Instant::now() >= f.retry_at)
    }

    /// Writes the history buffer in one transaction, with the coalesced state when `with_state`
    /// is set, when it is due ([`STATE_INTERVAL`]) or when a checkpoint is held. On success the
    /// buffer and its credits are released; on failure everything stays buffered and the next
    /// retry is scheduled.
    ///
    /// Why a checkpoint forces the state: `stream_state.complete_until` tells the next start
    /// where to backfill from, and the agents resume from the persisted episode logs. If the
    /// checkpoint were committed while older episode logs were still only in memory, a crash
    /// would leave a database whose logs predate the checkpoint: the restart would backfill
    /// only from the checkpoint on, so the changes between the committed logs and the
    /// checkpoint would never reach the rules (an episode missed or judged on a stale state).
    /// Committing every log buffered before the checkpoint in the same transaction, before the
    /// `stream_state` upsert, keeps the logs at least as new as the checkpoint.
    async fn flush(&mut self, with_state: bool) -> Result<(), String> {
        let with_state = with_state
            || self.buffer.batch.complete_until.is_some()
            || self.buffer.state_due(self.config.batch_rows.max(1));
        if with_state {
            // No message is handled while the write runs, so the map stays empty until the
            // outcome is known; on failure it is put back.
            self.buffer.batch.agents = self.buffer.agents.drain().map(|(_, row)| row).collect();
        }
        if self.buffer.batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        // Writing into a SQLite file deleted (or replaced) meanwhile would succeed and be lost
        // at restart: refuse before writing, and do not count a batch committed while it
        // happened (kept and retried like any failed batch; duplicates insert nothing). While
        // stopping, a write may not outlive the shutdown deadline: abandoning it rolls its
        // transaction back, so nothing is committed after the supervisor's count.
        let result = match (self.file_problem(), self.stop_by) {
            (Some(problem), _) => Err(problem),
            (None, None) => db::write_batch(&self.db, &self.buffer.batch)
                .await
                .map_err(|e| db::describe(&e)),
            (None, Some(by)) if tokio::time::Instant::now() >= by => {
                Err("the shutdown deadline has passed; nothing more is written".to_owned())
            }
            (None, Some(by)) => {
                let write = db::write_batch(&self.db, &self.buffer.batch);
                match tokio::time::timeout_at(by, write).await {
                    Ok(result) => result.map_err(|e| db::describe(&e)),
                    Err(_) => {
                        Err("the shutdown deadline passed before the write committed".to_owned())
                    }
                }
            }
        };
        let result = match result {
            Ok(summary) => match self.file_problem() {
                Some(problem) => Err(problem),
                None => Ok(summary),
            },
            Err(error) => Err(error),
        };
        if with_state && result.is_err() {
            // Each row goes back under anything received since (nothing today: no message is
            // handled while the write runs); the newer parts win.
            for row in std::mem::take(&mut self.buffer.batch.agents) {
                let pending = self.buffer.row(row.user_id.clone());
                let newer = std::mem::replace(pending, row);
                pending.update(newer);
            }
        }
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
                tracing::debug!(
                    inserted = summary.transitions_inserted,
                    duplicates = summary.transitions_duplicate,
                    agents = summary.agents_upserted,
                    agents_deleted = summary.agents_deleted,
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
                self.buffer.batch = Batch::default();
                self.buffer.credits.clear();
                self.buffer.alert_index.clear();
                if with_state {
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
        let buffered = self.buffer.len();
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

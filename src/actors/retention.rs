//! The retention actor (`RETENTION_DAYS`): deletes transitions (`agent_status`, by
//! `event_timestamp`) and alerts (by `fired_at`) older than the retention period.
//!
//! Off the hot path: it runs `first_run` after start (30 s) and then every `interval` (1 h),
//! deleting `batch_rows` rows (1,000) per statement with a `pause` (50 ms) between batches,
//! one batch per message, so the persistence actor gets the SQLite write lock between batches
//! and a stop never waits for a whole run. It is the one writer besides the persistence actor
//! and touches only rows nobody writes any more. Each run ends with one `info` line with the
//! counts. A database error ends the run (logged at `warn`); the next run retries. The
//! supervisor restarts the actor if it fails.

#![warn(missing_docs)]

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sea_orm::DatabaseConnection;

use crate::config::RetentionConfig;
use crate::db;

/// Messages of the retention actor.
#[derive(Debug)]
pub enum RetentionMsg {
    /// Start a run now (ignored while one is running).
    Run,
    /// Internal: delete the next batch of the run in progress.
    Batch,
    /// The last finished run, if any (tests, readiness).
    LastRun(RpcReplyPort<Option<RetentionReport>>),
}

/// What one run removed (also served by `/readyz`).
pub use crate::health::RetentionRun as RetentionReport;

/// Arguments of [`RetentionActor`].
pub struct RetentionArgs {
    /// Connected and migrated.
    pub db: DatabaseConnection,
    /// Period, batching and schedule.
    pub config: RetentionConfig,
}

/// The retention actor.
pub struct RetentionActor;

/// Which table a run is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    History,
    Alerts,
}

struct Run {
    cutoff: DateTime<Utc>,
    phase: Phase,
    history_deleted: u64,
    alerts_deleted: u64,
    started: Instant,
}

/// State of [`RetentionActor`].
pub struct RetentionState {
    db: DatabaseConnection,
    config: RetentionConfig,
    run: Option<Run>,
    last: Option<RetentionReport>,
}

impl Actor for RetentionActor {
    type Msg = RetentionMsg;
    type State = RetentionState;
    type Arguments = RetentionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RetentionMsg>,
        args: RetentionArgs,
    ) -> Result<RetentionState, ActorProcessingErr> {
        myself.send_after(args.config.first_run, || RetentionMsg::Run);
        // The hourly schedule; a tick during a run is ignored.
        myself.send_interval(args.config.interval, || RetentionMsg::Run);
        Ok(RetentionState {
            db: args.db,
            config: args.config,
            run: None,
            last: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RetentionMsg>,
        message: RetentionMsg,
        state: &mut RetentionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RetentionMsg::Run => {
                if state.run.is_none() {
                    let keep = chrono::Duration::from_std(state.config.keep)
                        .unwrap_or(chrono::Duration::MAX);
                    state.run = Some(Run {
                        cutoff: Utc::now()
                            .checked_sub_signed(keep)
                            .unwrap_or(DateTime::<Utc>::MIN_UTC),
                        phase: Phase::History,
                        history_deleted: 0,
                        alerts_deleted: 0,
                        started: Instant::now(),
                    });
                    myself.send_message(RetentionMsg::Batch)?;
                }
            }
            RetentionMsg::Batch => {
                if let Some(delay) = step(state).await {
                    myself.send_after(delay, || RetentionMsg::Batch);
                }
            }
            RetentionMsg::LastRun(reply) => {
                let _ = reply.send(state.last.clone());
            }
        }
        Ok(())
    }
}

/// Deletes one batch of the run in `state`; returns `Some(delay)` for the next batch, or
/// `None` when the run is over (finished or failed).
async fn step(state: &mut RetentionState) -> Option<Duration> {
    let batch = state.config.batch_rows.max(1);
    let run = state.run.as_mut()?;
    let result = match run.phase {
        Phase::History => db::purge_history_batch(&state.db, run.cutoff, batch).await,
        Phase::Alerts => db::purge_alerts_batch(&state.db, run.cutoff, batch).await,
    };
    let error = match result {
        Ok(deleted) => {
            match run.phase {
                Phase::History => run.history_deleted += deleted,
                Phase::Alerts => run.alerts_deleted += deleted,
            }
            if deleted >= batch {
                return Some(state.config.pause);
            }
            if run.phase == Phase::History {
                run.phase = Phase::Alerts;
                return Some(state.config.pause);
            }
            None
        }
        Err(e) => Some(db::describe(&e)),
    };
    let run = state.run.take()?;
    let report = RetentionReport {
        cutoff: run.cutoff,
        history_deleted: run.history_deleted,
        alerts_deleted: run.alerts_deleted,
        finished_at: Utc::now(),
        error: error.clone(),
    };
    match &error {
        None => tracing::info!(
            history_deleted = report.history_deleted,
            alerts_deleted = report.alerts_deleted,
            cutoff = %crate::domain::format_timestamp(report.cutoff),
            elapsed_ms = run.started.elapsed().as_millis() as u64,
            "retention run finished"
        ),
        Some(error) => tracing::warn!(
            %error,
            history_deleted = report.history_deleted,
            alerts_deleted = report.alerts_deleted,
            "retention run stopped by a database error; the next run retries"
        ),
    }
    state.last = Some(report);
    None
}

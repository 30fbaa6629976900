//! Tests against real SQLite files in the temp directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ractor::{Actor, ActorRef, call_t, cast};
use sea_orm::{EntityTrait, PaginatorTrait, TransactionTrait};
use tokio::sync::Semaphore;

use super::*;
use crate::db::entity::{agent, agent_status, alert};
use crate::db::{DbOptions, HistoryFilter};
use crate::domain::{DeliveryStatus, Kind, Source, UserId};

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// A fresh SQLite file URL under the temp directory.
fn temp_db_url(test: &str) -> (String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "agent-monitor-persist-{}-{}-{}",
        std::process::id(),
        test,
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}", dir.join("monitor.db").display());
    (url, dir)
}

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, second).unwrap()
}

fn transition(user: &str, second: u32, state: &str) -> Transition {
    Transition {
        user_id: UserId::parse(user).unwrap(),
        user_name: Some(format!("Name {user}")),
        kind: Kind::Routing,
        state: state.into(),
        previous_state: None,
        org_presence: None,
        presence_definition_id: None,
        event_timestamp: at(second),
        ingested_at: at(second),
        source: Source::Stream,
    }
}

fn alert(key: &str) -> Alert {
    Alert {
        alert_key: key.into(),
        episode_key: String::new(),
        severity: "warning".into(),
        destination: None,
        kind: crate::domain::AlertKind::Firing { repeat: 0 },
        muted: None,
        rule: "idle".into(),
        user_id: UserId::parse("u1").unwrap(),
        user_name: None,
        state: "routing IDLE".into(),
        since: at(0),
        threshold: Duration::from_secs(900),
        fired_at: at(30),
    }
}

fn outcome(key: &str, status: DeliveryStatus) -> AlertOutcome {
    AlertOutcome {
        alert_key: key.into(),
        status,
        error: None,
        attempts: 1,
        finished_at: at(31),
    }
}

async fn start(
    db: DatabaseConnection,
    batch_rows: usize,
    flush_interval: Duration,
) -> ActorRef<PersistMsg> {
    let config = PersistenceConfig {
        batch_rows,
        flush_interval,
        max_in_flight: 1000,
    };
    let (actor, _) = Actor::spawn(None, PersistenceActor, PersistenceArgs { db, config })
        .await
        .unwrap();
    actor
}

async fn rows(db: &DatabaseConnection) -> u64 {
    agent_status::Entity::find().count(db).await.unwrap()
}

async fn health(actor: &ActorRef<PersistMsg>) -> DbHealth {
    call_t!(actor, PersistMsg::Health, 10_000).unwrap()
}

async fn flush(actor: &ActorRef<PersistMsg>) -> Result<(), String> {
    call_t!(actor, PersistMsg::Flush, 10_000).unwrap()
}

/// Polls `cond` every 20 ms until it holds or `deadline` passes.
async fn wait_until<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const NEVER: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn flushes_at_batch_rows_in_one_go() {
    let (url, dir) = temp_db_url("batch");
    let db = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 3, NEVER).await;

    cast!(
        actor,
        PersistMsg::Transition(transition("u1", 1, "IDLE"), None)
    )
    .unwrap();
    cast!(
        actor,
        PersistMsg::Transition(transition("u1", 2, "INTERACTING"), None)
    )
    .unwrap();
    // Health is handled after the casts: two rows wait in the buffer, none is stored.
    assert_eq!(health(&actor).await.buffered, 2);
    assert_eq!(rows(&db).await, 0);

    cast!(
        actor,
        PersistMsg::Transition(transition("u1", 3, "IDLE"), None)
    )
    .unwrap();
    // The third row starts the write (in a task of its own): all three commit together.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            health(&actor).await.buffered == 0
        })
        .await
    );
    assert!(health(&actor).await.writable);
    assert_eq!(rows(&db).await, 3);

    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_timer_flushes_a_partial_batch() {
    let (url, dir) = temp_db_url("timer");
    let db = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 500, Duration::from_millis(20)).await;
    cast!(
        actor,
        PersistMsg::Transition(transition("u1", 1, "IDLE"), None)
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || async { rows(&db).await == 1 }).await);
    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn duplicates_insert_nothing_within_and_across_batches() {
    let (url, dir) = temp_db_url("dedupe");
    let db = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 500, NEVER).await;

    for _ in 0..2 {
        cast!(
            actor,
            PersistMsg::Transition(transition("u1", 1, "IDLE"), None)
        )
        .unwrap();
    }
    cast!(
        actor,
        PersistMsg::Transition(transition("u2", 1, "IDLE"), None)
    )
    .unwrap();
    flush(&actor).await.unwrap();
    cast!(
        actor,
        PersistMsg::Transition(transition("u1", 1, "IDLE"), None)
    )
    .unwrap();
    // Same instant, other kind: a different row.
    let mut presence = transition("u1", 1, "AVAILABLE");
    presence.kind = Kind::Presence;
    cast!(actor, PersistMsg::Transition(presence, None)).unwrap();
    flush(&actor).await.unwrap();

    assert_eq!(rows(&db).await, 3);
    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn credits_are_released_only_after_the_commit() {
    let (url, dir) = temp_db_url("credits");
    let db = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 500, NEVER).await;
    let semaphore = Arc::new(Semaphore::new(2));

    for second in [1, 2] {
        let credit = Credit::new(semaphore.clone().try_acquire_owned().unwrap());
        cast!(
            actor,
            PersistMsg::Transition(transition("u1", second, "IDLE"), Some(credit))
        )
        .unwrap();
    }
    assert_eq!(health(&actor).await.buffered, 2);
    assert_eq!(semaphore.available_permits(), 0);

    flush(&actor).await.unwrap();
    assert_eq!(semaphore.available_permits(), 2);
    assert_eq!(rows(&db).await, 2);
    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn latest_agent_state_wins_and_outcomes_reach_alerts() {
    let (url, dir) = temp_db_url("agents-alerts");
    let db = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 500, NEVER).await;

    let mut current = AgentCurrent {
        user_id: UserId::parse("u1").unwrap(),
        user_name: Some("Ann".into()),
        presence: Some("AVAILABLE".into()),
        org_presence: Some("Available".into()),
        presence_since: Some(at(1)),
        routing_status: Some("IDLE".into()),
        routing_since: Some(at(1)),
        active_conversations: 0,
        idle_since: Some(at(1)),
        updated_at: at(1),
    };
    cast!(actor, PersistMsg::Agent(current.clone())).unwrap();
    current.routing_status = Some("INTERACTING".into());
    current.idle_since = None;
    current.active_conversations = 1;
    current.updated_at = at(2);
    cast!(actor, PersistMsg::Agent(current.clone())).unwrap();

    // Outcome folded into the buffered alert.
    cast!(actor, PersistMsg::AlertFired(alert("idle:u1:1"))).unwrap();
    cast!(
        actor,
        PersistMsg::AlertOutcome(outcome("idle:u1:1", DeliveryStatus::Delivered))
    )
    .unwrap();
    // Outcome for an alert committed earlier: applied as an update.
    cast!(actor, PersistMsg::AlertFired(alert("idle:u1:2"))).unwrap();
    flush(&actor).await.unwrap();
    let mut failed = outcome("idle:u1:2", DeliveryStatus::Failed);
    failed.error = Some("invalid_payload".into());
    failed.attempts = 4;
    cast!(actor, PersistMsg::AlertOutcome(failed)).unwrap();
    // The second update of the same user in a later batch.
    current.user_name = Some("Ann B".into());
    cast!(actor, PersistMsg::Agent(current.clone())).unwrap();
    flush(&actor).await.unwrap();

    let agents = db::agents(&db).await.unwrap();
    assert_eq!(agents.len(), 1);
    let a: &agent::Model = &agents[0];
    assert_eq!(a.routing_status.as_deref(), Some("INTERACTING"));
    assert_eq!(a.user_name.as_deref(), Some("Ann B"));
    assert_eq!((a.active_conversations, a.idle_since), (1, None));

    let page = db::alerts(&db, 10, 0).await.unwrap();
    assert_eq!(page.total, 2);
    let by_key =
        |k: &str| -> alert::Model { page.rows.iter().find(|r| r.alert_key == k).unwrap().clone() };
    let delivered = by_key("idle:u1:1");
    assert_eq!(delivered.delivery_status, "delivered");
    assert_eq!(delivered.delivered_at, Some(at(31)));
    assert_eq!(delivered.threshold_seconds, 900);
    let failed = by_key("idle:u1:2");
    assert_eq!(failed.delivery_status, "failed");
    assert_eq!(failed.delivery_error.as_deref(), Some("invalid_payload"));
    assert_eq!((failed.attempts, failed.delivered_at), (4, None));

    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

fn current(user: &str, routing: &str, second: u32) -> AgentCurrent {
    AgentCurrent {
        user_id: UserId::parse(user).unwrap(),
        user_name: Some(format!("Name {user}")),
        presence: Some("ON_QUEUE".into()),
        org_presence: Some("On Queue".into()),
        presence_since: Some(at(0)),
        routing_status: Some(routing.into()),
        routing_since: Some(at(second)),
        active_conversations: 0,
        idle_since: None,
        updated_at: at(second),
    }
}

async fn episode_logs(db: &DatabaseConnection) -> HashMap<UserId, String> {
    db::alerting::load_episodes(db).await.unwrap()
}

/// A burst of current-state and episode-log updates is held as one row per user (the latest),
/// does not count towards `batch_rows` (three rows would have filled this batch) and is
/// written by `Flush`.
#[tokio::test]
async fn current_state_and_episode_logs_are_coalesced_per_user() {
    let (url, dir) = temp_db_url("coalesce");
    let db = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 3, NEVER).await;

    let u1 = UserId::parse("u1").unwrap();
    for (second, routing) in [(1, "IDLE"), (2, "INTERACTING"), (3, "NOT_RESPONDING")] {
        cast!(actor, PersistMsg::Agent(current("u1", routing, second))).unwrap();
        cast!(
            actor,
            PersistMsg::Episodes(u1.clone(), format!("{{\"log\":{second}}}"))
        )
        .unwrap();
    }
    cast!(actor, PersistMsg::Agent(current("u2", "IDLE", 4))).unwrap();
    // One `agents` row per user, u1's with its episode log: nothing written yet.
    assert_eq!(health(&actor).await.buffered, 2);
    assert!(db::agents(&db).await.unwrap().is_empty());

    flush(&actor).await.unwrap();
    assert_eq!(health(&actor).await.buffered, 0);
    let agents = db::agents(&db).await.unwrap();
    assert_eq!(agents.len(), 2);
    let a1 = agents.iter().find(|a| a.user_id == "u1").unwrap();
    assert_eq!(a1.routing_status.as_deref(), Some("NOT_RESPONDING"));
    assert_eq!(a1.routing_since, Some(at(3)));
    let logs = episode_logs(&db).await;
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[&u1], r#"{"log":3}"#);

    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A checkpoint never commits ahead of the episode logs buffered before it: the batch that
/// carries it (here filled by its second row, long before the state cadence) also carries the
/// coalesced state.
#[tokio::test]
async fn a_checkpoint_commits_the_state_buffered_before_it() {
    let (url, dir) = temp_db_url("checkpoint");
    let db = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 2, NEVER).await;

    let u1 = UserId::parse("u1").unwrap();
    cast!(actor, PersistMsg::Episodes(u1.clone(), "{}".into())).unwrap();
    cast!(actor, PersistMsg::Agent(current("u1", "IDLE", 1))).unwrap();
    cast!(actor, PersistMsg::StreamComplete(at(5))).unwrap();
    // u1's row (state and log) and the checkpoint.
    assert_eq!(health(&actor).await.buffered, 2);
    // The checkpoint and this row fill the batch of two.
    cast!(
        actor,
        PersistMsg::Transition(transition("u1", 1, "IDLE"), None)
    )
    .unwrap();
    // Written by a task of its own: committed once nothing is buffered or in flight.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            health(&actor).await.buffered == 0
        })
        .await
    );
    assert_eq!(db::stream_complete_until(&db).await.unwrap(), Some(at(5)));
    assert_eq!(episode_logs(&db).await[&u1], "{}");
    assert_eq!(db::agents(&db).await.unwrap().len(), 1);
    assert_eq!(rows(&db).await, 1);

    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Without `Flush`, the timer writes the coalesced state once [`STATE_INTERVAL`] has passed.
#[tokio::test]
async fn the_timer_writes_the_coalesced_state() {
    let (url, dir) = temp_db_url("state-timer");
    let db = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 500, Duration::from_millis(20)).await;
    cast!(actor, PersistMsg::Agent(current("u1", "IDLE", 1))).unwrap();
    cast!(actor, PersistMsg::Agent(current("u1", "INTERACTING", 2))).unwrap();
    assert!(
        wait_until(STATE_INTERVAL * 5, || async {
            db::agents(&db).await.unwrap().len() == 1
        })
        .await
    );
    let agents = db::agents(&db).await.unwrap();
    assert_eq!(agents[0].routing_status.as_deref(), Some("INTERACTING"));
    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Stopping writes the coalesced state too (a graceful restart resumes the episode logs).
#[tokio::test]
async fn stopping_writes_the_coalesced_state() {
    let (url, dir) = temp_db_url("stop-state");
    let db = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 500, NEVER).await;
    let u1 = UserId::parse("u1").unwrap();
    cast!(actor, PersistMsg::Episodes(u1.clone(), "[1]".into())).unwrap();
    cast!(actor, PersistMsg::Agent(current("u1", "IDLE", 1))).unwrap();
    // One row: the state and the log.
    assert_eq!(health(&actor).await.buffered, 1);
    actor.stop_and_wait(None, None).await.unwrap();
    assert_eq!(episode_logs(&db).await[&u1], "[1]");
    assert_eq!(db::agents(&db).await.unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// Another connection holds SQLite's write lock, so the actor's writes fail with "database is
/// locked" after its (short) busy timeout; when the lock goes away the timer-driven retry
/// commits everything, and only then are the credits released.
#[tokio::test]
async fn a_locked_database_is_retried_without_losing_rows_or_credits() {
    let (url, dir) = temp_db_url("retry");
    let short = DbOptions {
        busy_timeout: Duration::from_millis(50),
        ..DbOptions::default()
    };
    let db = db::connect_with(&url, short).await.unwrap();
    let blocker = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 500, Duration::from_millis(20)).await;
    let semaphore = Arc::new(Semaphore::new(3));

    let lock = blocker.begin().await.unwrap();
    db::probe_write(&lock).await.unwrap(); // takes the write lock until commit/rollback

    for second in [1, 2, 3] {
        let credit = Credit::new(semaphore.clone().try_acquire_owned().unwrap());
        cast!(
            actor,
            PersistMsg::Transition(transition("u1", second, "IDLE"), Some(credit))
        )
        .unwrap();
    }
    cast!(actor, PersistMsg::Agent(current("u1", "IDLE", 3))).unwrap();
    let err = flush(&actor).await.unwrap_err();
    assert!(err.contains("locked") || err.contains("busy"), "{err}");
    // A newer state arriving after the failed write replaces the one put back.
    cast!(actor, PersistMsg::Agent(current("u1", "INTERACTING", 4))).unwrap();
    let h = health(&actor).await;
    assert!(!h.writable);
    assert_eq!(h.buffered, 4);
    assert!(h.last_error.is_some());
    assert_eq!(semaphore.available_permits(), 0);

    lock.rollback().await.unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async { rows(&db).await == 3 }).await,
        "the retry never committed"
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            semaphore.available_permits() == 3
        })
        .await
    );
    let h = health(&actor).await;
    assert!(h.writable && h.last_error.is_none(), "{h:?}");
    assert!(
        wait_until(STATE_INTERVAL * 5, || async {
            db::agents(&db)
                .await
                .unwrap()
                .first()
                .is_some_and(|a| a.routing_status.as_deref() == Some("INTERACTING"))
        })
        .await,
        "the state put back after the failure was never written"
    );

    actor.stop_and_wait(None, None).await.unwrap();
    let page = db::history(
        &db,
        &HistoryFilter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.total, 3);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn stopping_flushes_what_is_buffered() {
    let (url, dir) = temp_db_url("stop");
    let db = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 500, NEVER).await;
    cast!(
        actor,
        PersistMsg::Transition(transition("u1", 1, "IDLE"), None)
    )
    .unwrap();
    assert_eq!(health(&actor).await.buffered, 1);
    actor.stop_and_wait(None, None).await.unwrap();
    assert_eq!(rows(&db).await, 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn backoff_doubles_and_caps() {
    assert_eq!(backoff(1), Duration::from_millis(100));
    assert_eq!(backoff(2), Duration::from_millis(200));
    assert_eq!(backoff(7), Duration::from_secs(5));
    assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
}

/// The state waits [`STATE_INTERVAL`] while the history is light and [`STATE_INTERVAL_BUSY`]
/// while at least a batch a second of history rows was committed since it was last written.
#[test]
fn the_state_interval_stretches_under_load() {
    let mut buffer = Buffer::new();
    let ago = |d: Duration| Instant::now().checked_sub(d).unwrap();
    buffer.state_written = ago(STATE_INTERVAL * 2);
    assert!(!buffer.state_due(500), "nothing coalesced, nothing due");
    buffer.agents.insert(
        UserId::parse("u1").unwrap(),
        AgentRow {
            user_id: UserId::parse("u1").unwrap(),
            current: Some(current("u1", "IDLE", 1)),
            episodes: None,
        },
    );
    buffer.history_since_state = 900;
    assert!(buffer.state_due(500), "under a batch a second: 1 s");
    buffer.history_since_state = 1_200;
    assert!(
        !buffer.state_due(500),
        "a batch a second: waits for the busy interval"
    );
    buffer.state_written = ago(STATE_INTERVAL_BUSY);
    assert!(buffer.state_due(500), "never longer than the busy interval");
    buffer.state_written = ago(STATE_INTERVAL / 2);
    buffer.history_since_state = 0;
    assert!(!buffer.state_due(500), "never sooner than 1 s");
}

/// `Forget` deletes a user's `agents` row (state and episode log) and drops the upserts buffered
/// before it, in order: an upsert sent after it (the user monitored again) is written.
/// `KeepOnly` deletes every other user's rows, committed or buffered. History stays.
#[tokio::test]
async fn forget_and_keep_only_delete_current_state_in_order() {
    let (url, dir) = temp_db_url("forget");
    let db = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), 1000, NEVER).await;
    let (u1, u2, u3) = (
        UserId::parse("u1").unwrap(),
        UserId::parse("u2").unwrap(),
        UserId::parse("u3").unwrap(),
    );
    for user in ["u1", "u2", "u3"] {
        cast!(actor, PersistMsg::Agent(current(user, "IDLE", 1))).unwrap();
        cast!(
            actor,
            PersistMsg::Transition(transition(user, 1, "IDLE"), None)
        )
        .unwrap();
        let id = UserId::parse(user).unwrap();
        cast!(actor, PersistMsg::Episodes(id, "{}".into())).unwrap();
    }
    flush(&actor).await.unwrap();
    assert_eq!(db::agents(&db).await.unwrap().len(), 3);

    // Committed rows and a buffered upsert of u1 go; u2 forgotten then back: its newer row.
    cast!(actor, PersistMsg::Agent(current("u1", "INTERACTING", 2))).unwrap();
    cast!(actor, PersistMsg::Forget(vec![u1.clone(), u2.clone()])).unwrap();
    cast!(actor, PersistMsg::Agent(current("u2", "INTERACTING", 3))).unwrap();
    flush(&actor).await.unwrap();
    let agents = db::agents(&db).await.unwrap();
    let users: Vec<&str> = agents.iter().map(|a| a.user_id.as_str()).collect();
    assert_eq!(users, ["u2", "u3"]);
    let a2 = agents.iter().find(|a| a.user_id == "u2").unwrap();
    assert_eq!(a2.routing_status.as_deref(), Some("INTERACTING"));
    let logs = episode_logs(&db).await;
    assert!(!logs.contains_key(&u1) && !logs.contains_key(&u2) && logs.contains_key(&u3));

    // KeepOnly: u3's committed row and a buffered upsert of u4 go, u2 stays.
    cast!(actor, PersistMsg::Agent(current("u4", "IDLE", 4))).unwrap();
    cast!(actor, PersistMsg::KeepOnly(vec![u2.clone()])).unwrap();
    flush(&actor).await.unwrap();
    let agents = db::agents(&db).await.unwrap();
    let users: Vec<&str> = agents.iter().map(|a| a.user_id.as_str()).collect();
    assert_eq!(users, ["u2"]);
    assert!(episode_logs(&db).await.is_empty());
    assert_eq!(rows(&db).await, 3, "history is kept");

    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A persistence actor on a fresh database whose write lock another connection holds until
/// `lock` is rolled back: its writes wait up to `busy_timeout` for it. A write check is made
/// before the lock is taken, so a `Health` within 2 s answers from it instead of waiting.
struct Locked {
    db: DatabaseConnection,
    actor: ActorRef<PersistMsg>,
    lock: sea_orm::DatabaseTransaction,
    dir: std::path::PathBuf,
}

async fn locked(test: &str, busy_timeout: Duration, batch_rows: usize) -> Locked {
    let (url, dir) = temp_db_url(test);
    let options = DbOptions {
        busy_timeout,
        ..DbOptions::default()
    };
    let db = db::connect_with(&url, options).await.unwrap();
    let blocker = db::connect(&url).await.unwrap();
    let actor = start(db.clone(), batch_rows, NEVER).await;
    assert!(health(&actor).await.writable);
    let lock = blocker.begin().await.unwrap();
    db::probe_write(&lock).await.unwrap();
    Locked {
        db,
        actor,
        lock,
        dir,
    }
}

/// While a batch is being written the actor goes on accepting messages (the write runs in a
/// task of its own): `Health` answers while the write waits on a lock, counting the rows in
/// flight and those received since; and once the lock is gone everything commits, in order.
#[tokio::test]
async fn messages_are_accepted_while_a_batch_is_written() {
    let Locked {
        db,
        actor,
        lock,
        dir,
    } = locked("overlap", Duration::from_secs(60), 2).await;
    for second in [1, 2] {
        cast!(
            actor,
            PersistMsg::Transition(transition("u1", second, "IDLE"), None)
        )
        .unwrap();
    }
    // The batch of two is in its write, waiting for the lock (up to a minute).
    for second in [3, 4, 5] {
        cast!(
            actor,
            PersistMsg::Transition(transition("u1", second, "IDLE"), None)
        )
        .unwrap();
    }
    let h = health(&actor).await;
    assert_eq!(h.buffered, 5, "in flight and received since: {h:?}");
    assert_eq!(rows(&db).await, 0);

    lock.rollback().await.unwrap();
    flush(&actor).await.unwrap();
    let page = db::history(
        &db,
        &HistoryFilter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.total, 5);
    assert_eq!(health(&actor).await.buffered, 0);

    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A batch whose write fails goes back in front of what arrived during the write: its rows
/// first, its state under the newer state of the same user, and not at all for a user forgotten
/// meanwhile (the `Forget` is newer); its credits stay held until the retry commits.
#[tokio::test]
async fn a_failed_write_goes_back_in_front_of_what_arrived_meanwhile() {
    let Locked {
        db,
        actor,
        lock,
        dir,
    } = locked("put-back", Duration::from_secs(3), 2).await;
    let semaphore = Arc::new(Semaphore::new(3));
    let credit = || Some(Credit::new(semaphore.clone().try_acquire_owned().unwrap()));
    cast!(actor, PersistMsg::Agent(current("u1", "IDLE", 1))).unwrap();
    cast!(actor, PersistMsg::Agent(current("u2", "IDLE", 1))).unwrap();
    cast!(actor, PersistMsg::StreamComplete(at(2))).unwrap();
    cast!(
        actor,
        PersistMsg::Transition(transition("u1", 1, "IDLE"), credit())
    )
    .unwrap();
    // The checkpoint filled the batch with the first transition: it is in its write, with
    // both agents' state, and will fail on the lock after 3 s.
    cast!(
        actor,
        PersistMsg::Transition(transition("u1", 2, "INTERACTING"), credit())
    )
    .unwrap();
    cast!(
        actor,
        PersistMsg::Forget(vec![UserId::parse("u2").unwrap()])
    )
    .unwrap();
    cast!(actor, PersistMsg::Agent(current("u1", "INTERACTING", 2))).unwrap();
    // In flight: 1 transition, 2 state rows, the checkpoint; since: 1 transition, the forget,
    // u1's newer state.
    assert_eq!(health(&actor).await.buffered, 7);

    assert!(
        wait_until(Duration::from_secs(20), || async {
            !health(&actor).await.writable
        })
        .await,
        "the write never failed"
    );
    // Put back: 2 transitions, the forget, the checkpoint, u1's row (u2's is dropped).
    assert_eq!(health(&actor).await.buffered, 5);
    assert_eq!(semaphore.available_permits(), 1);

    lock.rollback().await.unwrap();
    flush(&actor).await.unwrap();
    assert_eq!(semaphore.available_permits(), 3);
    assert_eq!(rows(&db).await, 2);
    let agents = db::agents(&db).await.unwrap();
    let users: Vec<(&str, Option<&str>)> = agents
        .iter()
        .map(|a| (a.user_id.as_str(), a.routing_status.as_deref()))
        .collect();
    assert_eq!(users, [("u1", Some("INTERACTING"))]);
    assert_eq!(db::stream_complete_until(&db).await.unwrap(), Some(at(2)));

    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// The shutdown deadline reaches a write already in flight: a write waiting on a lock (for up
/// to a minute) is abandoned at the deadline, nothing is committed, and its credits stay held
/// so the stop counts its transitions as not committed.
#[tokio::test]
async fn the_shutdown_deadline_abandons_the_write_in_flight() {
    let Locked {
        db,
        actor,
        lock,
        dir,
    } = locked("deadline-in-flight", Duration::from_secs(60), 1).await;
    let semaphore = Arc::new(Semaphore::new(1));
    let credit = Credit::new(semaphore.clone().try_acquire_owned().unwrap());
    cast!(
        actor,
        PersistMsg::Transition(transition("u1", 1, "IDLE"), Some(credit))
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    cast!(actor, PersistMsg::StopBy(deadline)).unwrap();
    // Well before the lock's minute: the write gave up at the deadline.
    let err = call_t!(actor, PersistMsg::Flush, 10_000)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("shutdown deadline"), "{err}");
    assert_eq!(semaphore.available_permits(), 0);
    assert_eq!(health(&actor).await.buffered, 1);

    lock.rollback().await.unwrap();
    assert_eq!(rows(&db).await, 0);
    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// An alert fired again while its first copy was being written, with the delivery outcome
/// folded into the second copy: when that write fails and is put back, the duplicate is
/// dropped and its outcome still reaches the alert.
#[tokio::test]
async fn an_outcome_of_a_duplicate_alert_survives_a_failed_write() {
    let Locked {
        db,
        actor,
        lock,
        dir,
    } = locked("duplicate-alert", Duration::from_secs(2), 1).await;
    cast!(actor, PersistMsg::AlertFired(alert("idle:u1:1"))).unwrap();
    // In its write, waiting on the lock; fired again, and delivered.
    cast!(actor, PersistMsg::AlertFired(alert("idle:u1:1"))).unwrap();
    cast!(
        actor,
        PersistMsg::AlertOutcome(outcome("idle:u1:1", DeliveryStatus::Delivered))
    )
    .unwrap();
    assert_eq!(health(&actor).await.buffered, 2, "one in flight, one since");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            !health(&actor).await.writable
        })
        .await,
        "the write never failed"
    );

    lock.rollback().await.unwrap();
    flush(&actor).await.unwrap();
    let page = db::alerts(&db, 10, 0).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.rows[0].delivery_status, "delivered");

    actor.stop_and_wait(None, None).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

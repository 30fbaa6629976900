//! `RETENTION_DAYS`: the retention actor deletes old transitions and alerts, in batches, from a
//! real SQLite file, and keeps the recent ones.

use std::time::Duration;

use agent_monitor::actors::retention::{RetentionActor, RetentionArgs, RetentionMsg};
use agent_monitor::config::RetentionConfig;
use agent_monitor::db::{self, Batch, PendingAlert};
use agent_monitor::domain::{Alert, Kind, Source, Transition, UserId};
use chrono::{DateTime, Utc};
use ractor::{Actor, call_t};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::helpers::wait_for;
use crate::service::temp_db_path;

fn transition(user: &str, at: DateTime<Utc>) -> Transition {
    Transition {
        user_id: UserId::parse(user).unwrap(),
        user_name: None,
        kind: Kind::Routing,
        state: "IDLE".into(),
        previous_state: None,
        org_presence: None,
        presence_definition_id: None,
        event_timestamp: at,
        ingested_at: at,
        source: Source::Stream,
    }
}

fn alert(user: &str, fired_at: DateTime<Utc>) -> PendingAlert {
    PendingAlert {
        alert: Alert {
            alert_key: format!("idle:{user}:{}", fired_at.timestamp_millis()),
            episode_key: String::new(),
            severity: "warning".into(),
            destination: None,
            kind: agent_monitor::domain::AlertKind::Firing { repeat: 0 },
            muted: None,
            rule: "idle".into(),
            user_id: UserId::parse(user).unwrap(),
            user_name: None,
            state: "routing IDLE".into(),
            since: fired_at - chrono::Duration::minutes(20),
            threshold: Duration::from_secs(900),
            fired_at,
        },
        outcome: None,
    }
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_string(),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index::<i64>(0)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_rows_older_than_the_period_in_batches() {
    let path = temp_db_path();
    let db = db::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let now = Utc::now();
    let old = now - chrono::Duration::days(40);
    let recent = now - chrono::Duration::days(5);
    let mut batch = Batch::default();
    // 25 old and 7 recent transitions, 4 old and 3 recent alerts.
    for i in 0..25 {
        batch.transitions.push(transition(
            &format!("u{}", i % 3),
            old + chrono::Duration::seconds(i),
        ));
    }
    for i in 0..7 {
        batch.transitions.push(transition(
            &format!("u{}", i % 3),
            recent + chrono::Duration::seconds(i),
        ));
    }
    for i in 0..4 {
        batch
            .alerts
            .push(alert("u1", old + chrono::Duration::seconds(i)));
    }
    for i in 0..3 {
        batch
            .alerts
            .push(alert("u2", recent + chrono::Duration::seconds(i)));
    }
    db::write_batch(&db, &batch).await.unwrap();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM agent_status").await, 32);

    let config = RetentionConfig {
        batch_rows: 4, // several batches per table
        pause: Duration::from_millis(1),
        first_run: Duration::from_millis(10),
        ..RetentionConfig::days(30)
    };
    let (actor, handle) = Actor::spawn(
        None,
        RetentionActor,
        RetentionArgs {
            db: db.clone(),
            config,
        },
    )
    .await
    .unwrap();
    let report = wait_for("the first retention run", Duration::from_secs(20), || {
        let actor = actor.clone();
        async move { call_t!(actor, RetentionMsg::LastRun, 1000).ok().flatten() }
    })
    .await;
    assert_eq!(report.error, None);
    assert_eq!((report.history_deleted, report.alerts_deleted), (25, 4));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM agent_status").await, 7);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM alerts").await, 3);
    let oldest_kept = db::history(
        &db,
        &db::HistoryFilter {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .rows
    .into_iter()
    .map(|r| r.event_timestamp)
    .min()
    .unwrap();
    assert!(oldest_kept >= recent - chrono::Duration::seconds(1));

    // A second run finds nothing more to delete.
    actor.cast(RetentionMsg::Run).unwrap();
    wait_for("the second retention run", Duration::from_secs(20), || {
        let actor = actor.clone();
        let first = report.finished_at;
        async move {
            call_t!(actor, RetentionMsg::LastRun, 1000)
                .ok()
                .flatten()
                .filter(|r| r.finished_at > first)
                .map(|r| assert_eq!((r.history_deleted, r.alerts_deleted), (0, 0)))
        }
    })
    .await;
    actor.stop(None);
    let _ = handle.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_last_retention_run() {
    use crate::helpers::SlackReceiver;
    use crate::service::{Opts, config_for, start_sim};
    let sim = start_sim(2).await;
    let slack = SlackReceiver::start().await;
    let mut config = config_for(&sim, &slack, &temp_db_path(), &Opts::default());
    config.retention = Some(RetentionConfig {
        first_run: Duration::from_millis(10),
        ..RetentionConfig::days(30)
    });
    let app = agent_monitor::app::App::start(config).await.unwrap();
    let url = format!("http://{}/readyz", app.api_addr());
    let run = wait_for(
        "a retention run in /readyz",
        Duration::from_secs(20),
        || async {
            let body: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let run = body["last_retention_run"].clone();
            run.is_object().then_some(run)
        },
    )
    .await;
    assert_eq!(run["history_deleted"], 0);
    assert_eq!(run["alerts_deleted"], 0);
    assert!(run["error"].is_null());
    assert!(run["cutoff"].as_str().unwrap().ends_with('Z'));
    app.shutdown().await;
}

//! Reliable alert delivery: the real `SlackActor` with a real persistence actor on a temp
//! SQLite file, against local receivers with scripted replies (`shared/alerting.md` §4.8–4.11).

use std::time::Duration;

use agent_monitor::actors::persistence::{PersistMsg, PersistenceActor, PersistenceArgs};
use agent_monitor::actors::slack::{SlackActor, SlackArgs, SlackMsg};
use agent_monitor::config::{DeliveryConfig, DestinationConfig, PersistenceConfig};
use agent_monitor::db::entity::{alert as alert_row, dead_letter};
use agent_monitor::domain::{Alert, AlertKind, UserId, parse_timestamp};
use agent_monitor::health::DestinationStatus;
use agent_monitor::secret::Secret;
use ractor::{Actor, ActorRef};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::Value;

use crate::helpers::{SlackReceiver, SlackReply, init, wait_for};
use crate::service::temp_db_path;

const DEADLINE: Duration = Duration::from_secs(30);

struct Rig {
    slack: ActorRef<SlackMsg>,
    persistence: ActorRef<PersistMsg>,
    db: DatabaseConnection,
}

/// Fast retries and a short group wait; everything else as in production.
fn fast(destinations: Vec<DestinationConfig>) -> DeliveryConfig {
    DeliveryConfig {
        destinations,
        timeout: Duration::from_secs(2),
        base_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        default_retry_after: Duration::from_secs(1),
        group_wait: Duration::ZERO,
        ..DeliveryConfig::default()
    }
}

fn slack(name: &str, receiver: &SlackReceiver) -> DestinationConfig {
    DestinationConfig::slack(name, Secret::new(receiver.url.clone()))
}

async fn rig(config: DeliveryConfig) -> Rig {
    init();
    let path = temp_db_path();
    let db = agent_monitor::db::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    let (persistence, _) = Actor::spawn(
        None,
        PersistenceActor,
        PersistenceArgs {
            db: db.clone(),
            config: PersistenceConfig::default(),
        },
    )
    .await
    .unwrap();
    let (slack, _) = Actor::spawn(
        None,
        SlackActor,
        SlackArgs {
            config,
            persistence: persistence.clone(),
            db: Some(db.clone()),
        },
    )
    .await
    .unwrap();
    Rig {
        slack,
        persistence,
        db,
    }
}

/// A firing alert of `rule` for agent number `i`.
fn alert(rule: &str, i: usize) -> Alert {
    let user_id = UserId::parse(&format!("u{i}")).unwrap();
    let since = parse_timestamp("2026-05-04T08:00:00Z").unwrap();
    let episode_key = Alert::episode_key(rule, &user_id, since);
    Alert {
        alert_key: Alert::message_key(&episode_key, AlertKind::Firing { repeat: 0 }),
        episode_key,
        rule: rule.into(),
        severity: "warning".into(),
        destination: None,
        kind: AlertKind::Firing { repeat: 0 },
        user_id,
        user_name: Some(format!("Agent {i}")),
        state: "routing IDLE".into(),
        since,
        threshold: Duration::from_secs(600),
        fired_at: parse_timestamp("2026-05-04T08:10:00Z").unwrap(),
        muted: None,
    }
}

fn resolved(firing: &Alert) -> Alert {
    let kind = AlertKind::Resolved {
        duration: Duration::from_secs(900),
    };
    Alert {
        alert_key: Alert::message_key(&firing.episode_key, kind),
        kind,
        fired_at: parse_timestamp("2026-05-04T08:15:00Z").unwrap(),
        ..firing.clone()
    }
}

impl Rig {
    /// What an agent actor does: record the alert, then hand it to the Slack actor.
    fn fire(&self, alert: Alert) {
        self.persistence
            .cast(PersistMsg::AlertFired(alert.clone()))
            .unwrap();
        self.slack.cast(SlackMsg::Alert(alert)).unwrap();
    }

    async fn row(&self, key: &str) -> Option<alert_row::Model> {
        ractor::call_t!(self.persistence, PersistMsg::Flush, 5000)
            .unwrap()
            .unwrap();
        alert_row::Entity::find()
            .filter(alert_row::Column::AlertKey.eq(key))
            .one(&self.db)
            .await
            .unwrap()
    }

    /// Waits until the alert's stored delivery status is `status`; returns the row.
    async fn wait_status(&self, key: &str, status: &str) -> alert_row::Model {
        wait_for(&format!("{key} {status}"), DEADLINE, || async {
            self.row(key).await.filter(|r| r.delivery_status == status)
        })
        .await
    }

    async fn dead_letters(&self) -> Vec<dead_letter::Model> {
        ractor::call_t!(self.persistence, PersistMsg::Flush, 5000)
            .unwrap()
            .unwrap();
        agent_monitor::db::alerting::dead_letters(&self.db, 1000)
            .await
            .unwrap()
    }

    async fn status(&self) -> Vec<DestinationStatus> {
        ractor::call_t!(self.slack, SlackMsg::Status, 2000).unwrap()
    }
}

async fn wait_received(receiver: &SlackReceiver, n: usize) -> Vec<crate::helpers::SlackRequest> {
    wait_for(&format!("{n} requests"), DEADLINE, || async {
        let got = receiver.received();
        (got.len() >= n).then_some(got)
    })
    .await
}

fn reply(status: u16, body: &str) -> SlackReply {
    SlackReply {
        status,
        retry_after: None,
        body: body.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_alerts_become_grouped_messages_paced_at_one_per_second() {
    let receiver = SlackReceiver::start().await;
    let rig = rig(DeliveryConfig {
        group_wait: Duration::from_millis(500),
        ..fast(vec![slack("default", &receiver)])
    })
    .await;
    // A shift start: 200 agents of 8 rules go idle at once.
    let alerts: Vec<Alert> = (0..200)
        .map(|i| alert(&format!("rule-{}", i % 8), i))
        .collect();
    for a in &alerts {
        rig.fire(a.clone());
    }
    let got = wait_received(&receiver, 8).await;
    for a in &alerts {
        rig.wait_status(&a.alert_key, "delivered").await;
    }
    let got_after = receiver.received();
    assert_eq!(got_after.len(), 8, "one message per rule");
    for request in &got {
        let text = request.body.to_string();
        assert!(text.contains("25 agents match rule-"), "{text}");
        assert!(text.contains("+5 more"), "20 listed, then +5 more: {text}");
        assert!(request.body["blocks"].as_array().unwrap().len() <= 50);
    }
    // A burst of 3, then at most one per second.
    for pair in got[2..].windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(900), "gap {gap:?}");
    }
    let span = got[7].at.duration_since(got[0].at);
    assert!(span >= Duration::from_millis(4500), "{span:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_only_its_destination_for_retry_after() {
    let a = SlackReceiver::start().await;
    let b = SlackReceiver::start().await;
    a.script([SlackReply {
        status: 429,
        retry_after: Some(2),
        body: r#"{"retry_after":2,"ok":false,"error":"rate_limited"}"#.into(),
    }]);
    let rig = rig(fast(vec![slack("default", &a), slack("other", &b)])).await;
    let first = alert("idle", 1);
    rig.fire(first.clone());
    wait_received(&a, 1).await;
    for i in 2..5 {
        rig.fire(Alert {
            destination: Some("other".into()),
            ..alert("idle", i)
        });
    }
    let on_b = wait_received(&b, 3).await;
    let on_a = wait_received(&a, 2).await;
    let waited = on_a[1].at.duration_since(on_a[0].at);
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    assert!(
        on_b[2].at < on_a[1].at,
        "the other destination kept delivering during the pause"
    );
    let row = rig.wait_status(&first.alert_key, "delivered").await;
    assert_eq!(row.attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_channel_disables_the_destination_and_dead_letters_its_backlog() {
    let receiver = SlackReceiver::start().await;
    let other = SlackReceiver::start().await;
    receiver.script([reply(410, "channel_is_archived")]);
    let rig = rig(fast(vec![
        slack("default", &receiver),
        slack("other", &other),
    ]))
    .await;
    let alerts: Vec<Alert> = (0..4).map(|i| alert("idle", i)).collect();
    for a in &alerts {
        rig.fire(a.clone());
    }
    for (i, a) in alerts.iter().enumerate() {
        let row = rig.wait_status(&a.alert_key, "failed").await;
        let error = row.delivery_error.unwrap();
        // The refused one and its backlog carry Slack's error; an alert that arrived after the
        // destination was disabled says so.
        assert!(
            error == "channel_is_archived"
                || (i > 0 && error == "destination disabled: channel_is_archived"),
            "{error}"
        );
    }
    assert_eq!(receiver.received().len(), 1, "the backlog is not sent");
    let letters = rig.dead_letters().await;
    assert_eq!(letters.len(), 4);
    assert!(
        letters
            .iter()
            .all(|l| l.error.ends_with("channel_is_archived")
                && l.destination == "default"
                && !l.payload_hash.is_empty())
    );

    let status = rig.status().await;
    let default = status.iter().find(|d| d.name == "default").unwrap();
    assert!(!default.enabled);
    assert_eq!(
        default.disabled_reason.as_deref(),
        Some("channel_is_archived")
    );
    assert_eq!(default.queue_depth, 0);
    let other_status = status.iter().find(|d| d.name == "other").unwrap();
    assert!(other_status.enabled);

    // Later alerts fail at once, without a request.
    let late = alert("idle", 9);
    rig.fire(late.clone());
    let row = rig.wait_status(&late.alert_key, "failed").await;
    assert_eq!(
        row.delivery_error.as_deref(),
        Some("destination disabled: channel_is_archived")
    );
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(rig.dead_letters().await.len(), 5);
    // The other destination still works.
    let fine = Alert {
        destination: Some("other".into()),
        ..alert("idle", 10)
    };
    rig.fire(fine.clone());
    rig.wait_status(&fine.alert_key, "delivered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_blocks_get_one_text_only_retry_then_a_dead_letter() {
    let receiver = SlackReceiver::start().await;
    receiver.script([reply(400, "invalid_blocks"), reply(400, "invalid_blocks")]);
    let rig = rig(fast(vec![slack("default", &receiver)])).await;
    let a = alert("idle", 1);
    rig.fire(a.clone());
    let row = rig.wait_status(&a.alert_key, "failed").await;
    assert_eq!(row.delivery_error.as_deref(), Some("invalid_blocks"));
    assert_eq!(row.attempts, 2);
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    assert!(got[0].body.get("blocks").is_some());
    assert_eq!(got[1].body.as_object().unwrap().len(), 1, "text only");
    assert!(got[1].body["text"].as_str().unwrap().contains("Agent 1"));
    let letters = rig.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].alert_key, a.alert_key);
    assert_eq!(letters[0].attempts, 2);

    // A text-only retry that gets through is a delivery.
    receiver.script([reply(400, "invalid_blocks")]);
    let b = alert("idle", 2);
    rig.fire(b.clone());
    let row = rig.wait_status(&b.alert_key, "delivered").await;
    assert_eq!(row.attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_message_waiting_for_a_retry_is_dropped_when_its_episode_ends() {
    let receiver = SlackReceiver::start().await;
    receiver.script([reply(500, "rollup_error"), reply(500, "rollup_error")]);
    let rig = rig(DeliveryConfig {
        base_backoff: Duration::from_millis(1500),
        max_backoff: Duration::from_secs(2),
        ..fast(vec![slack("default", &receiver)])
    })
    .await;
    // Ended by the agent actor's EpisodeEnded.
    let a = alert("idle", 1);
    rig.fire(a.clone());
    wait_received(&receiver, 1).await;
    rig.slack
        .cast(SlackMsg::EpisodeEnded {
            episode_key: a.episode_key.clone(),
        })
        .unwrap();
    let row = rig.wait_status(&a.alert_key, "dropped").await;
    assert_eq!(row.attempts, 1);
    assert_eq!(receiver.received().len(), 1, "never sent again as firing");

    // Ended by its resolved message: the firing one is dropped, the resolved one goes out.
    let b = alert("idle", 2);
    rig.fire(b.clone());
    wait_received(&receiver, 2).await;
    let b_resolved = resolved(&b);
    rig.fire(b_resolved.clone());
    rig.wait_status(&b.alert_key, "dropped").await;
    rig.wait_status(&b_resolved.alert_key, "delivered").await;
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let text = got[2].body["text"].as_str().unwrap();
    assert!(text.starts_with(":white_check_mark: Agent 2"), "{text}");
    assert!(text.contains("15m 00s in total"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silenced_and_muted_alerts_are_recorded_suppressed_and_not_sent() {
    let receiver = SlackReceiver::start().await;
    let rig = rig(fast(vec![slack("default", &receiver)])).await;
    agent_monitor::db::alerting::insert_silence(
        &rig.db,
        Some("maintenance-rule".into()),
        None,
        chrono::Utc::now() + chrono::Duration::hours(1),
        "planned maintenance".into(),
    )
    .await
    .unwrap();
    let silenced = alert("maintenance-rule", 1);
    let muted = Alert {
        muted: Some("quiet hours".into()),
        ..alert("idle", 2)
    };
    let normal = alert("idle", 3);
    rig.fire(silenced.clone());
    rig.fire(muted.clone());
    rig.fire(normal.clone());
    let row = rig.wait_status(&silenced.alert_key, "suppressed").await;
    assert_eq!(
        row.delivery_error.as_deref(),
        Some("silenced: planned maintenance")
    );
    let row = rig.wait_status(&muted.alert_key, "suppressed").await;
    assert_eq!(row.delivery_error.as_deref(), Some("quiet hours"));
    rig.wait_status(&normal.alert_key, "delivered").await;
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].body["text"].as_str().unwrap().contains("Agent 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_webhook_receives_the_documented_json() {
    let receiver = SlackReceiver::start().await;
    let rig = rig(fast(vec![DestinationConfig::webhook(
        "ops",
        Secret::new(receiver.url.clone()),
    )]))
    .await;
    let a = Alert {
        destination: Some("ops".into()),
        user_name: Some("Jane <Doe>".into()),
        ..alert("idle", 1)
    };
    rig.fire(a.clone());
    rig.wait_status(&a.alert_key, "delivered").await;
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let body: &Value = &got[0].body;
    assert_eq!(body["version"], 1);
    assert_eq!(body["status"], "firing");
    assert_eq!(body["rule"], "idle");
    assert_eq!(body["severity"], "warning");
    assert_eq!(body["destination"], "ops");
    assert_eq!(body["count"], 1);
    let item = &body["alerts"][0];
    assert_eq!(item["alert_key"], a.alert_key.as_str());
    assert_eq!(item["episode_key"], a.episode_key.as_str());
    assert_eq!(item["user_id"], "u1");
    assert_eq!(item["user_name"], "Jane <Doe>", "raw, JSON-escaped only");
    assert_eq!(item["state"], "routing IDLE");
    assert_eq!(item["since"], "2026-05-04T08:00:00Z");
    assert_eq!(item["fired_at"], "2026-05-04T08:10:00Z");
    assert_eq!(item["threshold_seconds"], 600);
    assert_eq!(item["duration_seconds"], 600);
    assert_eq!(item["repeat"], 0);

    // No destination of that name: recorded not_configured, nothing sent.
    let lost = Alert {
        destination: Some("nowhere".into()),
        ..alert("idle", 2)
    };
    rig.fire(lost.clone());
    rig.wait_status(&lost.alert_key, "not_configured").await;
    assert_eq!(receiver.received().len(), 1);
}

/// The whole service: a destination Slack disables shows in `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_destination_shows_in_readyz() {
    use crate::service::{Harness, Opts, start_sim};
    let sim = start_sim(1).await;
    let id = sim.agent_ids().await.unwrap()[0].clone();
    sim.set_routing_status(&id, "INTERACTING").await.unwrap();
    let h = Harness::start_on(
        sim,
        Opts {
            agents: 1,
            idle_threshold: Duration::from_secs(1),
            ..Opts::default()
        },
    )
    .await;
    h.wait_state(&id, "routing", "INTERACTING").await;
    h.slack.script([reply(410, "channel_is_archived")]);
    h.sim.set_routing_status(&id, "IDLE").await.unwrap();
    let destination = wait_for("default disabled in /readyz", DEADLINE, || async {
        let (_, body) = h.get("/readyz").await;
        body["destinations"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["name"] == "default").cloned())
            .filter(|d| d["enabled"] == false)
    })
    .await;
    assert_eq!(destination["kind"], "slack");
    assert_eq!(destination["disabled_reason"], "channel_is_archived");
    assert_eq!(destination["failed"], 1);
    assert!(
        !destination.to_string().contains("XXXX"),
        "no URL: {destination}"
    );
    assert_eq!(h.slack.received().len(), 1);
    h.app.shutdown().await;
}

/// The firing message pending a retry becomes the resolved message: the resolved alert waiting
/// in its group is sent in the firing one's place, before the group's wait is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_message_pending_retry_becomes_the_resolved_message() {
    let receiver = SlackReceiver::start().await;
    receiver.script([reply(503, "")]);
    let rig = rig(DeliveryConfig {
        base_backoff: Duration::from_millis(1000),
        max_backoff: Duration::from_secs(1),
        group_wait: Duration::from_secs(4),
        ..fast(vec![slack("default", &receiver)])
    })
    .await;
    let a = alert("idle", 1);
    rig.fire(a.clone());
    wait_received(&receiver, 1).await;
    let a_resolved = resolved(&a);
    let resolved_at = std::time::Instant::now();
    rig.fire(a_resolved.clone());
    let got = wait_received(&receiver, 2).await;
    let took = got[1].at.duration_since(resolved_at);
    assert!(
        took < Duration::from_millis(3500),
        "sent in the retry's slot: {took:?}"
    );
    assert!(
        got[1].body["text"]
            .as_str()
            .unwrap()
            .starts_with(":white_check_mark: Agent 1"),
        "{}",
        got[1].body
    );
    rig.wait_status(&a.alert_key, "dropped").await;
    rig.wait_status(&a_resolved.alert_key, "delivered").await;
    assert_eq!(rig.status().await[0].queue_depth, 0);
    assert_eq!(receiver.received().len(), 2);
}

/// Repeats of one episode while its firing message waits (the destination paused by a 429)
/// do not queue up: each takes the waiting message's place, the older ones are recorded
/// `dropped`, and one message (the newest repeat) is sent after the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_replaces_the_waiting_message_of_its_episode_instead_of_queuing() {
    let receiver = SlackReceiver::start().await;
    receiver.script([SlackReply {
        status: 429,
        retry_after: Some(2),
        body: "rate_limited".into(),
    }]);
    let rig = rig(fast(vec![slack("default", &receiver)])).await;
    let first = alert("not-responding", 1);
    let repeat = |n: u32| Alert {
        alert_key: Alert::message_key(&first.episode_key, AlertKind::Firing { repeat: n }),
        kind: AlertKind::Firing { repeat: n },
        ..first.clone()
    };
    rig.fire(first.clone());
    wait_for("the refused first POST", DEADLINE, || async {
        (receiver.received().len() == 1).then_some(())
    })
    .await;
    for n in 1..=5 {
        rig.fire(repeat(n));
    }
    rig.wait_status(&repeat(5).alert_key, "delivered").await;
    for older in [first.clone(), repeat(1), repeat(2), repeat(3), repeat(4)] {
        let row = rig.wait_status(&older.alert_key, "dropped").await;
        assert_eq!(
            row.delivery_error.as_deref(),
            Some("superseded by a newer message of this episode")
        );
    }
    crate::helpers::wait_a_while(Duration::from_secs(1)).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "the refused POST and one message");
    let status: Vec<DestinationStatus> =
        ractor::call_t!(rig.slack, SlackMsg::Status, 5000).unwrap();
    assert_eq!(status[0].queue_depth, 0);
}

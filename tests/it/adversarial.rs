//! Adversarial tests of the first release: malformed Genesys frames, Genesys REST and Slack
//! faults, database faults, REST API abuse, shutdown under load and secrets in trace logs.
//! Every wait has a deadline; a test that fails today documents a bug (see its doc comment).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_monitor::app::App;
use chrono::{SecondsFormat, Utc};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

use crate::helpers::{SlackReceiver, SlackReply, wait_for};
use crate::service::{Harness, Opts, config_for, start_sim, temp_db_path};

const DEADLINE: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_agent-monitor");

fn routing_frame(topic_user: &str, body_user: &str, status: &str, start: &str) -> String {
    json!({
        "topicName": format!("v2.users.{topic_user}.routingStatus"),
        "version": "2",
        "eventBody": {"id": body_user, "routingStatus": {"status": status, "startTime": start}},
        "metadata": {"CorrelationId": "adversarial"}
    })
    .to_string()
}

async fn agent_row(h: &Harness, user: &str) -> Value {
    let (status, agents) = h.get("/api/v1/agents").await;
    assert_eq!(status, 200, "{agents}");
    agents["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["user_id"] == user)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Regression (fixed: timestamps over 5 minutes ahead are malformed): one notification with a far-future `startTime` (a clock bug or a forged frame) becomes
/// the agent's "current" routing state for ever: every later, real event is older and is
/// filed as stale, so `/api/v1/agents` and idle alerting freeze. Expected: such a timestamp is
/// refused (counted as malformed) or at least does not outrank real events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_timestamp_does_not_freeze_the_agent() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "IDLE").await;
    h.sim
        .send_raw_frame(&routing_frame(
            &user,
            &user,
            "NOT_RESPONDING",
            "9999-12-31T23:59:59.000Z",
        ))
        .await
        .unwrap();
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&user, "routing", "INTERACTING").await;
    let agent = wait_for("the real state in /api/v1/agents", DEADLINE, || async {
        let a = agent_row(&h, &user).await;
        (a["routing_status"] == "INTERACTING").then_some(a)
    })
    .await;
    assert_eq!(agent["routing_status"], "INTERACTING");
    h.app.shutdown().await;
}

/// Regression guard: year 0001 and odd offsets (+05:45, -09:30) are parsed as instants, stored
/// in UTC and served back; the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_but_valid_timestamps_are_stored_in_utc() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "IDLE").await;
    h.sim
        .send_raw_frame(&routing_frame(
            &user,
            &user,
            "NOT_RESPONDING",
            "0001-01-01T00:00:00Z",
        ))
        .await
        .unwrap();
    let stale = h.wait_state(&user, "routing", "NOT_RESPONDING").await;
    assert_eq!(stale["event_timestamp"], "0001-01-01T00:00:00.000Z");

    let later = Utc::now() + chrono::Duration::seconds(1);
    let nepal = later
        .with_timezone(&chrono::FixedOffset::east_opt(5 * 3600 + 45 * 60).unwrap())
        .to_rfc3339_opts(SecondsFormat::Micros, false);
    h.sim
        .send_raw_frame(&routing_frame(&user, &user, "INTERACTING", &nepal))
        .await
        .unwrap();
    let row = h.wait_state(&user, "routing", "INTERACTING").await;
    assert_eq!(
        row["event_timestamp"],
        later.to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    let marquesas = (later + chrono::Duration::seconds(1))
        .with_timezone(&chrono::FixedOffset::west_opt(9 * 3600 + 30 * 60).unwrap())
        .to_rfc3339_opts(SecondsFormat::Secs, false);
    h.sim
        .send_raw_frame(&routing_frame(&user, &user, "OFF_QUEUE", &marquesas))
        .await
        .unwrap();
    h.wait_state(&user, "routing", "OFF_QUEUE").await;
    let conn = h.connection(0).await;
    assert_eq!(conn["malformed_messages"], 0, "{conn}");
    assert_eq!(conn["reconnects"], 0, "{conn}");
    h.app.shutdown().await;
}

/// Regression guard: an upper-case (or padded) user id in the topic reaches the agent; an id
/// with odd characters that nobody monitors is counted as unknown, not a crash; wrong JSON
/// types, missing fields and unknown topics are counted or ignored and the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_user_ids_wrong_types_and_unknown_topics_do_not_break_the_stream() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "IDLE").await;
    let now = || Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let junk = [
        // wrong types
        r#"{"topicName":42,"eventBody":{}}"#.to_string(),
        r#"{"topicName":"v2.users.x.routingStatus","eventBody":"IDLE"}"#.to_string(),
        r#"{"topicName":"v2.users.x.routingStatus","eventBody":{"routingStatus":{"status":7,"startTime":"2024-05-01T10:00:00Z"}}}"#.to_string(),
        r#"{"topicName":"v2.users.x.presence","eventBody":{"presenceDefinition":null,"modifiedDate":"2024-05-01T10:00:00Z"}}"#.to_string(),
        r#"{"topicName":"v2.users.x.conversationsummary","eventBody":{"call":"many"}}"#.to_string(),
        // empty and blank user ids
        routing_frame("", "", "IDLE", &now()),
        routing_frame("   ", "", "IDLE", &now()),
        // not JSON objects
        "null".to_string(),
        "[1,2,3]".to_string(),
        "\"just a string\"".to_string(),
        "\u{0}\u{1}\u{2}".to_string(),
    ];
    for frame in &junk {
        h.sim.send_raw_frame(frame).await.unwrap();
    }
    // Unknown topics and results are ignored.
    for frame in [
        r#"{"topicName":"v2.users.x.geolocation","eventBody":{}}"#,
        r#"{"topicName":"v2.something.new","eventBody":{"a":1}}"#,
        r#"{"result":"200"}"#,
    ] {
        h.sim.send_raw_frame(frame).await.unwrap();
    }
    // Odd characters in a user nobody monitors.
    for odd in [
        "../../etc/passwd",
        "'; DROP TABLE agent_status; --",
        "ユーザー",
        "a b",
    ] {
        h.sim
            .send_raw_frame(&routing_frame(odd, odd, "IDLE", &now()))
            .await
            .unwrap();
    }
    // The monitored user's id in upper case with blanks.
    let shouting = format!(" {} ", user.to_ascii_uppercase());
    h.sim
        .send_raw_frame(&routing_frame(
            &shouting,
            &shouting,
            "INTERACTING",
            &(Utc::now() + chrono::Duration::seconds(1))
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        ))
        .await
        .unwrap();
    let row = h.wait_state(&user, "routing", "INTERACTING").await;
    assert_eq!(row["user_id"], user.as_str());
    // The upper-case event was read after every junk frame: the counters are final.
    let conn = h.connection(0).await;
    // Which frame lands in which counter is the parser's business (a topic that does not
    // parse as a user topic is just "unhandled"); what matters is that nothing broke.
    assert!(
        conn["malformed_messages"].as_u64().unwrap() >= 9
            && conn["unknown_user_events"].as_u64().unwrap() >= 2,
        "{conn}"
    );
    assert_eq!(conn["connected"], true);
    assert_eq!(conn["reconnects"], 0, "{conn}");
    let tables = h
        .sql_count("SELECT COUNT(*) FROM sqlite_master WHERE name = 'agent_status'")
        .await;
    assert_eq!(tables, 1);
    h.app.shutdown().await;
}

/// Regression (fixed: counts saturate, a panicked reader is replaced): a `conversationsummary` whose counts add up past `u32::MAX` (`contactCenter.active`
/// 4294967295 plus `enterprise.active` 1) overflows `MediaSummary::active` /
/// `ConversationSummaryBody::active_total`. In a debug build (and any build with overflow
/// checks) that panics inside the socket's read task: the task dies without reporting
/// `SocketEnded`, so no event is read again, the silence timer (same task) never fires and
/// `/readyz` keeps saying "connected". In release it wraps to a small number (a wrong active
/// count feeds the idle rule). Expected: saturate (or refuse the frame as malformed) and read
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_conversation_count_does_not_kill_the_reader() {
    let h = Harness::start(Opts {
        agents: 1,
        ping_interval: Duration::from_millis(500),
        silence_timeout: Duration::from_secs(3),
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "IDLE").await;
    let frame = json!({
        "topicName": format!("v2.users.{user}.conversationsummary"),
        "eventBody": {
            "userId": user,
            "call": {"contactCenter": {"active": 4294967295u32, "acw": 0},
                     "enterprise": {"active": 1, "acw": 0}}
        }
    })
    .to_string();
    h.sim.send_raw_frame(&frame).await.unwrap();
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    let until = Instant::now() + DEADLINE;
    loop {
        let rows = h.history(&user, "routing").await;
        if rows.iter().any(|r| r["state"] == "INTERACTING") {
            break;
        }
        if Instant::now() > until {
            let (status, ready) = h.get("/readyz").await;
            panic!(
                "the reader stopped after the overflowing frame; /readyz answers {status}: {ready}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.app.shutdown().await;
}

/// Regression guard: a 1 MiB junk frame is counted as malformed; a 20 MiB frame (past the
/// WebSocket frame limit) ends the socket, the service reconnects and no later event is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_frames_do_not_crash_or_stall_the_stream() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "IDLE").await;
    let big = format!(
        r#"{{"topicName":"v2.users.{user}.routingStatus","eventBody":{{"pad":"{}"}}}}"#,
        "x".repeat(1 << 20)
    );
    h.sim.send_raw_frame(&big).await.unwrap();
    wait_for("the 1 MiB frame counted", DEADLINE, || async {
        (h.connection(0).await["malformed_messages"].as_u64() == Some(1)).then_some(())
    })
    .await;
    let huge = format!(r#"{{"topicName":"x","pad":"{}"}}"#, "y".repeat(20 << 20));
    h.sim.send_raw_frame(&huge).await.unwrap();
    drop(huge);
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&user, "routing", "INTERACTING").await;
    h.wait_ready().await;
    h.app.shutdown().await;
}

/// Regression guard: `{"result":"404"}`, `no_longer_subscribed` and `token_revoked` each lead
/// to a working socket again, with no event lost afterwards and one open socket at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_lifecycle_frames_lead_to_a_working_socket() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "IDLE").await;
    let statuses = ["INTERACTING", "OFF_QUEUE", "NOT_RESPONDING", "IDLE"];
    let channel = h.sim.channels().await.unwrap()[0].id.clone();
    let frames = [
        r#"{"result":"404"}"#.to_string(),
        json!({"topicName": format!("v2.system.no_longer_subscribed.{channel}"),
               "eventBody": {"message": "no longer subscribed", "reason": "test"}})
        .to_string(),
        json!({"topicName": format!("v2.system.token_revoked.{channel}"), "eventBody": {}})
            .to_string(),
        r#"{"topicName":"v2.system.socket_closing","eventBody":"not an object"}"#.to_string(),
    ];
    for (frame, status) in frames.iter().zip(statuses) {
        let before = h.connection(0).await["reconnects"].as_u64().unwrap();
        h.sim.send_raw_frame(frame).await.unwrap();
        if !frame.contains("socket_closing") {
            wait_for("a reconnect", DEADLINE, || async {
                (h.connection(0).await["reconnects"].as_u64().unwrap() > before).then_some(())
            })
            .await;
        }
        h.wait_ready().await;
        h.sim.set_routing_status(&user, status).await.unwrap();
        wait_for(&format!("{status} after {frame}"), DEADLINE, || async {
            let rows = h.history(&user, "routing").await;
            (rows.first().map(|r| r["state"] == status) == Some(true)).then_some(())
        })
        .await;
    }
    wait_for("exactly one open socket", DEADLINE, || async {
        let channels = h.sim.channels().await.unwrap();
        (channels.iter().map(|c| c.connected_sockets).sum::<usize>() == 1).then_some(())
    })
    .await;
    h.app.shutdown().await;
}

/// Regression guard: a deleted channel (socket closed, HEAD 404) leads to a new channel and
/// subscription, and events flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_channel_is_replaced() {
    let h = Harness::start(Opts {
        agents: 2,
        ..Opts::default()
    })
    .await;
    let user = h.ids[1].clone();
    let old = h.sim.channels().await.unwrap()[0].id.clone();
    assert!(h.sim.delete_channel(&old).await.unwrap());
    wait_for("a new subscribed channel", DEADLINE, || async {
        let c = h.connection(0).await;
        (c["channel_id"].as_str().is_some_and(|id| id != old) && c["connected"] == true)
            .then_some(())
    })
    .await;
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&user, "routing", "INTERACTING").await;
    h.app.shutdown().await;
}

/// Regression guard: a storm of 5xx and 429s without `Retry-After` on every start-up call
/// delays readiness but does not kill the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_and_429_storm_at_start_up_is_survived() {
    let sim = start_sim(2).await;
    for (method, path, status) in [
        ("POST", "/oauth/token", 503),
        ("GET", "/api/v2/users", 500),
        ("GET", "/api/v2/users", 429),
        ("POST", "/api/v2/notifications/channels", 502),
        ("PUT", "/api/v2/notifications/channels", 429),
        ("GET", "/api/v2/presence", 504),
    ] {
        sim.fail_next(method, path, status, None, 2).await.unwrap();
    }
    let h = Harness::start_on(
        sim,
        Opts {
            agents: 2,
            ..Opts::default()
        },
    )
    .await;
    let user = h.ids[0].clone();
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&user, "routing", "INTERACTING").await;
    h.app.shutdown().await;
}

/// Regression guard: an alert goes out once per episode even when the channel is lost and a
/// new channel's snapshot reports the same idle state again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_channel_and_snapshot_do_not_double_alert() {
    let h = Harness::start(Opts {
        agents: 1,
        idle_threshold: Duration::from_millis(500),
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    wait_for("the first alert", DEADLINE, || async {
        (!h.alerts_for(&user).is_empty()).then_some(())
    })
    .await;
    let users_before = h.sim.request_count("GET", "/api/v2/users").await.unwrap();
    h.sim.send_raw_frame(r#"{"result":"404"}"#).await.unwrap();
    wait_for("a new channel", DEADLINE, || async {
        (h.sim.channels().await.unwrap().len() >= 2).then_some(())
    })
    .await;
    h.wait_ready().await;
    // Give a re-snapshot (if any) time to land: the snapshot call count settles.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while h.sim.request_count("GET", "/api/v2/users").await.unwrap() == users_before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    h.sim.set_presence(&user, "BREAK").await.unwrap();
    h.wait_state(&user, "presence", "BREAK").await;
    assert_eq!(h.alerts_for(&user).len(), 1, "{:?}", h.alerts_for(&user));
    let (_, alerts) = h.get("/api/v1/alerts").await;
    assert_eq!(alerts["total"], 1, "{alerts}");
    h.app.shutdown().await;
}

/// Regression guard: Slack `404 channel_not_found` is a permanent failure: one request, a
/// `failed` record, no retry storm and no second alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_channel_not_found_is_recorded_once() {
    let sim = start_sim(1).await;
    let slack = SlackReceiver::start().await;
    slack.script(vec![
        SlackReply {
            status: 404,
            retry_after: None,
            body: "channel_not_found".into(),
        };
        5
    ]);
    let opts = Opts {
        agents: 1,
        idle_threshold: Duration::from_millis(300),
        ..Opts::default()
    };
    let app = App::start(config_for(&sim, &slack, &temp_db_path(), &opts))
        .await
        .unwrap();
    let base = format!("http://{}", app.api_addr());
    let http = reqwest::Client::new();
    let failed = wait_for("a failed alert record", DEADLINE, || async {
        let v: Value = http
            .get(format!("{base}/api/v1/alerts"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["data"]
            .as_array()?
            .iter()
            .find(|a| a["delivery_status"] == "failed")
            .cloned()
    })
    .await;
    assert!(failed.to_string().contains("channel_not_found"), "{failed}");
    assert_eq!(slack.received().len(), 1, "no retry of a permanent failure");
    assert!(
        !failed.to_string().contains("XXXX"),
        "the webhook path leaked into the alert record: {failed}"
    );
    app.shutdown().await;
}

/// Regression guard: Slack 429 without `Retry-After`, then 500, then OK: delivered once, the
/// alert record says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_429_without_retry_after_then_500_is_delivered() {
    let sim = start_sim(1).await;
    let slack = SlackReceiver::start().await;
    slack.script([
        SlackReply {
            status: 429,
            retry_after: None,
            body: "rate_limited".into(),
        },
        SlackReply {
            status: 500,
            retry_after: None,
            body: "oops".into(),
        },
    ]);
    let opts = Opts {
        agents: 1,
        idle_threshold: Duration::from_millis(300),
        ..Opts::default()
    };
    let app = App::start(config_for(&sim, &slack, &temp_db_path(), &opts))
        .await
        .unwrap();
    let base = format!("http://{}", app.api_addr());
    let http = reqwest::Client::new();
    let delivered = wait_for("a delivered alert record", DEADLINE, || async {
        let v: Value = http
            .get(format!("{base}/api/v1/alerts"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["data"]
            .as_array()?
            .iter()
            .find(|a| a["delivery_status"] == "delivered")
            .cloned()
    })
    .await;
    assert_eq!(slack.received().len(), 3, "{delivered}");
    app.shutdown().await;
}

/// Regression guard: a 5,000-character name full of `&<>` stays inside Slack's Block Kit limits
/// (header ≤ 150, field ≤ 2000, section text ≤ 3000) and is escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_very_long_name_with_markup_stays_within_slack_limits() {
    let sim = start_sim(1).await;
    let name = "<!channel> & <@U123> ".repeat(250);
    let id = sim.add_user(&name).await.unwrap();
    let h = Harness::start_on(
        sim,
        Opts {
            agents: 2,
            idle_threshold: Duration::from_millis(300),
            ..Opts::default()
        },
    )
    .await;
    let alert = wait_for("the long name's alert", DEADLINE, || async {
        h.alerts_for(&id).pop()
    })
    .await;
    let text = alert["text"].as_str().unwrap();
    assert!(!text.contains("<!channel>"), "unescaped mention in text");
    for block in alert["blocks"].as_array().unwrap() {
        let mut texts = vec![];
        if let Some(t) = block["text"]["text"].as_str() {
            let max = if block["type"] == "header" { 150 } else { 3000 };
            texts.push((t.to_string(), max));
        }
        for f in block["fields"].as_array().into_iter().flatten() {
            texts.push((f["text"].as_str().unwrap().to_string(), 2000));
        }
        for e in block["elements"].as_array().into_iter().flatten() {
            if let Some(t) = e["text"].as_str() {
                texts.push((t.to_string(), 3000));
            }
        }
        for (t, max) in texts {
            assert!(t.chars().count() <= max, "{} > {max}", t.chars().count());
            assert!(!t.contains("<!channel>"), "unescaped mention: {t}");
        }
    }
    h.app.shutdown().await;
}

fn api_cases() -> Vec<(String, u16)> {
    let h = "/api/v1/agent-status/history";
    let mut cases: Vec<(String, u16)> = vec![
        (format!("{h}?limit=-1"), 400),
        (format!("{h}?limit=0"), 400),
        (format!("{h}?limit=101"), 400),
        (format!("{h}?limit=99999999999999999999999"), 400),
        (format!("{h}?limit=1e3"), 400),
        (format!("{h}?limit=%20"), 400),
        (format!("{h}?limit=%EF%BC%95"), 400), // fullwidth 5
        (format!("{h}?limit=5&limit=7"), 400), // given twice: refused, not the first taken
        (format!("{h}?offset=-1"), 400),
        (format!("{h}?offset=18446744073709551615"), 400),
        (format!("{h}?offset=9223372036854775807"), 200),
        (format!("{h}?offset=9223372036854775808"), 400),
        (format!("{h}?offset=99999999999999999999999"), 400),
        (format!("{h}?offset=abc"), 400),
        (format!("{h}?kind=PRESENCE"), 200),
        (format!("{h}?kind=presence%00"), 400),
        (format!("{h}?kind=both"), 400),
        // Not a state: refused (400 listing the states), never run as SQL.
        (
            format!("{h}?state=%27%3B%20DROP%20TABLE%20agent_status%3B--"),
            400,
        ),
        (format!("{h}?state=idle"), 200),
        (format!("{h}?user_id=%27%20OR%201%3D1%20--"), 200),
        (format!("{h}?user_id=%E2%9C%93%F0%9F%98%80"), 200),
        (format!("{h}?user_id=%25"), 200),
        (format!("{h}?user_id=_"), 200),
        (format!("{h}?user_id={}", "a".repeat(10_000)), 200),
        (format!("{h}?state={}", "b".repeat(6_000)), 400),
        ("/api/v1/alerts?limit=0".into(), 400),
        ("/api/v1/alerts?offset=-5".into(), 400),
        ("/api/v1/alerts?offset=18446744073709551615".into(), 400),
        ("/api/v1/nope".into(), 404),
        ("/api/v1/agents/../../etc/passwd".into(), 404),
    ];
    // A 20 KB query string is over the 16 KiB limit: 414, never a 5xx.
    cases.push((format!("{h}?{}", "x=1&".repeat(5_000)), 414));
    cases
}

/// Regression guard for most rows; a row that fails names the bug (e.g. a 500 for an offset
/// past `i64::MAX`, or an unknown `state` matching nothing instead of a 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_abuse_answers_4xx_not_5xx() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "IDLE").await;
    let mut failures = vec![];
    for (path, expected) in api_cases() {
        let resp = h
            .http
            .get(format!("{}{path}", h.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if status != expected {
            let shown: String = path.chars().take(120).collect();
            failures.push(format!(
                "{shown}: {status} (want {expected}) {}",
                body.chars().take(200).collect::<String>()
            ));
        }
        if status == 200 && path.contains("history") {
            let v: Value = serde_json::from_str(&body).unwrap();
            if path.contains("OR%201") {
                assert_eq!(v["total"], 0, "SQL injection matched rows: {v}");
            }
        }
    }
    // Wrong methods.
    for path in ["/api/v1/agents", "/api/v1/agent-status/history", "/readyz"] {
        let status = h
            .http
            .delete(format!("{}{path}", h.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != 405 {
            failures.push(format!("DELETE {path}: {status} (want 405)"));
        }
    }
    // Still serving afterwards.
    let (status, _) = h.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    h.app.shutdown().await;
}

/// Regression guard: another connection holding SQLite's write lock for 3 s stalls writes but
/// loses nothing; readiness comes back after the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_loses_no_record() {
    let sim = start_sim(3).await;
    let slack = SlackReceiver::start().await;
    let db_path = temp_db_path();
    let opts = Opts {
        agents: 3,
        ..Opts::default()
    };
    let app = App::start(config_for(&sim, &slack, &db_path, &opts))
        .await
        .unwrap();
    let base = format!("http://{}", app.api_addr());
    let http = reqwest::Client::new();
    let ids = sim.agent_ids().await.unwrap();
    let count = || async {
        let db = app.db();
        db.query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) FROM agent_status".to_string(),
        ))
        .await
        .ok()??
        .try_get_by_index::<i64>(0)
        .ok()
    };
    wait_for("bootstrap rows", DEADLINE, || async {
        (count().await == Some(6)).then_some(())
    })
    .await;
    let mut opt = ConnectOptions::new(format!("sqlite://{}", db_path.display()));
    opt.max_connections(1).min_connections(1);
    let locker = Database::connect(opt).await.unwrap();
    locker.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
    let statuses = ["INTERACTING", "OFF_QUEUE", "NOT_RESPONDING", "IDLE"];
    for (i, status) in statuses.iter().enumerate() {
        for id in &ids {
            sim.set_routing_status(id, status).await.unwrap();
        }
        let _ = i;
    }
    let locked_until = Instant::now() + Duration::from_secs(3);
    // Readiness should notice the lock at some point (not asserted: timing-dependent).
    while Instant::now() < locked_until {
        let _ = http.get(format!("{base}/readyz")).send().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    locker.execute_unprepared("ROLLBACK").await.unwrap();
    wait_for(
        "every row after the lock",
        Duration::from_secs(40),
        || async { (count().await == Some(6 + 12)).then_some(()) },
    )
    .await;
    wait_for("ready again", DEADLINE, || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    app.shutdown().await;
}

/// Regression (fixed: the write check fails when the file is gone): deleting the SQLite file (and its -wal/-shm) while the service runs goes
/// unnoticed: rows are committed to an unlinked inode and lost, and `/readyz` stays 200.
/// Expected: readiness reports the database as not writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_database_file_is_reported_not_ready() {
    let sim = start_sim(1).await;
    let slack = SlackReceiver::start().await;
    let db_path = temp_db_path();
    let opts = Opts {
        agents: 1,
        ..Opts::default()
    };
    let app = App::start(config_for(&sim, &slack, &db_path, &opts))
        .await
        .unwrap();
    let base = format!("http://{}", app.api_addr());
    let http = reqwest::Client::new();
    wait_for("ready", DEADLINE, || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db_path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let ids = sim.agent_ids().await.unwrap();
    sim.set_routing_status(&ids[0], "INTERACTING")
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                if r.status() == 503 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let exists = db_path.exists();
    app.shutdown().await;
    assert!(
        outcome.is_ok() || exists,
        "database file deleted, file not recreated, and /readyz still 200 after 10 s: \
         transitions are being written to an unlinked file"
    );
}

/// Regression guard: an unwritable database directory is a clean start-up error, not a panic
/// or a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_database_directory_fails_start_up_cleanly() {
    let sim = start_sim(1).await;
    let slack = SlackReceiver::start().await;
    let db = std::path::Path::new("/proc/agent-monitor-no-such-dir/x.db");
    let started = tokio::time::timeout(
        Duration::from_secs(20),
        App::start(config_for(&sim, &slack, db, &Opts::default())),
    )
    .await
    .expect("App::start hung on an unwritable database");
    assert!(started.is_err(), "started on an unwritable database");
}

/// The binary as an operator runs it, its output drained by threads (a full pipe would block
/// it). `slack_url` must be an https://hooks.slack.com/ URL; it is sent through a dead proxy so
/// nothing leaves the machine.
fn spawn_binary(
    sim: &agent_monitor::sim::Simulator,
    slack_url: Option<&str>,
    port: u16,
    db: &std::path::Path,
    log: &str,
) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .env_clear()
        .env("GENESYS_API_URL", sim.base_url())
        .env("GENESYS_LOGIN_URL", sim.base_url())
        .env("GENESYS_CLIENT_ID", sim.client_id())
        .env("GENESYS_CLIENT_SECRET", sim.client_secret())
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("IDLE_THRESHOLD", "1s")
        .env("ALERT_MAX_ATTEMPTS", "2")
        .env("ALERT_GROUP_WAIT", "0s")
        .env("RUST_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = slack_url {
        cmd.env("SLACK_WEBHOOK_URL", url);
    }
    let mut child = cmd.spawn().unwrap();
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    Running { child, out, err }
}

struct Running {
    child: std::process::Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(running: &Running, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Reads stdout and stderr to the end and waits, at most `limit`.
async fn collect(running: Running, limit: Duration) -> (Option<i32>, String) {
    let Running {
        mut child,
        out,
        err,
    } = running;
    let pid = child.id();
    let waited = tokio::time::timeout(
        limit,
        tokio::task::spawn_blocking(move || {
            let status = child.wait().unwrap();
            let mut all = out.join().unwrap();
            all.push_str(&err.join().unwrap());
            (status.code(), all)
        }),
    )
    .await;
    match waited {
        Ok(done) => done.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the process did not exit within {limit:?}")
        }
    }
}

/// 64-character alphanumeric runs: the simulator's access tokens.
fn token_like(log: &str) -> Vec<String> {
    log.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() == 64 && !w.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect()
}

/// Regression guard: with `RUST_LOG=trace` (every dependency's logs too) the client secret, an
/// access token and the Slack webhook path appear nowhere in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_leak_no_secret() {
    let sim = start_sim(2).await;
    let port = free_port();
    let hook = "https://hooks.slack.com/services/T000/B000/XXXX";
    let child = spawn_binary(&sim, Some(hook), port, &temp_db_path(), "trace");
    let http = reqwest::Client::new();
    let alerts = format!("http://127.0.0.1:{port}/api/v1/alerts");
    // The alert's delivery fails at the dead proxy: the error path is the likely leak.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let failed = async {
            let v: Value = http.get(&alerts).send().await.ok()?.json().await.ok()?;
            v["data"]
                .as_array()?
                .iter()
                .any(|a| a["delivery_status"] == "failed")
                .then_some(())
        }
        .await;
        if failed.is_some() {
            break;
        }
        if Instant::now() > deadline {
            signal(&child, "-KILL");
            let (_, log) = collect(child, Duration::from_secs(10)).await;
            let path = std::env::temp_dir().join("agent-monitor-trace-test.log");
            std::fs::write(&path, &log).unwrap();
            let saved = path.display();
            panic!("no failed alert delivery within 40 s; log saved at {saved}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served = http
        .get(&alerts)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !served.contains("XXXX"),
        "the webhook path is served by /api/v1/alerts: {served}"
    );
    // Force a token renewal and a reconnect too.
    sim.revoke_tokens().await.unwrap();
    sim.drop_sockets().await.unwrap();
    let tokens = sim.token_requests().await.unwrap();
    wait_for("a renewed token", Duration::from_secs(30), || async {
        (sim.token_requests().await.unwrap() > tokens).then_some(())
    })
    .await;
    wait_for("ready again", Duration::from_secs(30), || async {
        let r = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    signal(&child, "-TERM");
    let (code, log) = collect(child, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "exit status");
    assert!(log.len() > 1000, "trace output expected");
    let mut leaks = vec![];
    if log.contains(sim.client_secret()) {
        leaks.push("client secret".to_string());
    }
    if log.contains("T000/B000/XXXX") {
        leaks.push("Slack webhook path".to_string());
    }
    let tokens = token_like(&log);
    if !tokens.is_empty() {
        leaks.push(format!("{} token-like strings", tokens.len()));
    }
    if log.contains("Authorization: Basic") || log.contains("authorization: basic") {
        leaks.push("basic auth header".to_string());
    }
    for leak in &leaks {
        let needle = if leak.starts_with("client") {
            sim.client_secret().to_string()
        } else if leak.starts_with("Slack") {
            "T000/B000/XXXX".to_string()
        } else {
            tokens.first().cloned().unwrap_or_default()
        };
        if let Some(at) = log.find(&needle) {
            let start = log[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            eprintln!("--- {leak} near: {}", &log[start..(at + 80).min(log.len())]);
        }
    }
    assert!(leaks.is_empty(), "leaked: {leaks:?}");
}

/// Regression guard: SIGINT twice while events pour in still stops within 10 s, and a second
/// signal does not lose what the first one's clean stop committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_twice_under_load_stops_within_10s() {
    const AGENTS: usize = 20;
    let sim = start_sim(AGENTS).await;
    let ids = sim.agent_ids().await.unwrap();
    let port = free_port();
    let db = temp_db_path();
    let child = spawn_binary(&sim, None, port, &db, "warn");
    let http = reqwest::Client::new();
    wait_for("ready", Duration::from_secs(30), || async {
        let r = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let pour = {
        let sim_ids = ids.clone();
        let statuses = ["INTERACTING", "IDLE", "NOT_RESPONDING", "OFF_QUEUE"];
        let sim = &sim;
        async move {
            for i in 0..2_000usize {
                if sim
                    .set_routing_status(&sim_ids[i % AGENTS], statuses[i % 4])
                    .await
                    .is_err()
                {
                    break;
                }
                if i % AGENTS == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    };
    let stop = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        signal(&child, "-INT");
        tokio::time::sleep(Duration::from_millis(50)).await;
        signal(&child, "-INT");
    };
    let stopped = Instant::now();
    tokio::join!(pour, stop);
    let (code, log) = collect(child, Duration::from_secs(15)).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(12),
        "took {:?}",
        stopped.elapsed()
    );
    assert!(
        code.is_some(),
        "killed by a signal rather than exiting: {log}"
    );
    assert!(!log.contains("panicked"), "a panic: {log}");
}

/// Zero monitored users: the service starts, says so, and serves empty lists rather than
/// hanging in "not ready" or crashing on an empty channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_users_start_and_serve_empty_lists() {
    let sim = start_sim(0).await;
    let slack = SlackReceiver::start().await;
    let app = tokio::time::timeout(
        DEADLINE,
        App::start(config_for(&sim, &slack, &temp_db_path(), &Opts::default())),
    )
    .await
    .expect("App::start hung with zero users")
    .expect("App::start failed with zero users");
    let base = format!("http://{}", app.api_addr());
    let http = reqwest::Client::new();
    let agents: Value = http
        .get(format!("{base}/api/v1/agents"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agents["data"].as_array().map(Vec::len), Some(0), "{agents}");
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.shutdown().await;
}

/// Regression guard: every listed user comes back without the `presence`/`routingStatus`
/// expands; the service fetches them one by one and stores the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_listed_without_expands_are_still_bootstrapped() {
    let sim = start_sim(3).await;
    sim.set_omit_expand_every(1).await.unwrap();
    let h = Harness::start_on(
        sim,
        Opts {
            agents: 3,
            ..Opts::default()
        },
    )
    .await;
    for id in h.ids.clone() {
        h.wait_state(&id, "routing", "IDLE").await;
        h.wait_state(&id, "presence", "ON_QUEUE").await;
    }
    h.app.shutdown().await;
}

/// Regression guard: tokens revoked, then the token endpoint answers 401 (not
/// `invalid_client`) and 500 a few times while the socket is lost: the service keeps retrying
/// and recovers, it neither exits nor gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_loop_on_the_token_endpoint_is_survived() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.sim.revoke_tokens().await.unwrap();
    h.sim
        .fail_next("POST", "/oauth/token", 401, None, 3)
        .await
        .unwrap();
    h.sim
        .fail_next("POST", "/oauth/token", 500, None, 2)
        .await
        .unwrap();
    h.sim
        .fail_next("HEAD", "/api/v2/notifications", 401, None, 3)
        .await
        .unwrap();
    h.sim.drop_sockets().await.unwrap();
    h.wait_ready().await;
    wait_for("a new socket", DEADLINE, || async {
        let channels = h.sim.channels().await.unwrap();
        (channels.iter().map(|c| c.socket_connects).sum::<u64>() >= 2
            && channels.iter().map(|c| c.connected_sockets).sum::<usize>() == 1)
            .then_some(())
    })
    .await;
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&user, "routing", "INTERACTING").await;
    h.app.shutdown().await;
}

/// Two different routing statuses for one user at the same Genesys instant (same millisecond,
/// or sub-millisecond digits the parser truncates) cannot both be stored under the history's
/// key (user, kind, event_timestamp). Fixed behaviour: the first is kept, the second is counted
/// as malformed, and `/api/v1/agents` agrees with the history (before the fix the agents row
/// said OFF_QUEUE while the history had no OFF_QUEUE row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_values_in_one_millisecond_keep_state_and_history_consistent() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "IDLE").await;
    let at = (Utc::now() + chrono::Duration::seconds(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let first = at.replace('Z', ".1231Z");
    let second = at.replace('Z', ".1239Z");
    h.sim
        .send_raw_frame(&routing_frame(&user, &user, "INTERACTING", &first))
        .await
        .unwrap();
    h.sim
        .send_raw_frame(&routing_frame(&user, &user, "OFF_QUEUE", &second))
        .await
        .unwrap();
    // The history can hold one row per (user, kind, instant): the first value is kept and the
    // conflicting one never becomes current. A later event proves the conflict was processed:
    // its previous state is the kept value.
    let later =
        (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339_opts(SecondsFormat::Millis, true);
    h.sim
        .send_raw_frame(&routing_frame(&user, &user, "NOT_RESPONDING", &later))
        .await
        .unwrap();
    let row = h.wait_state(&user, "routing", "NOT_RESPONDING").await;
    assert_eq!(
        row["previous_state"], "INTERACTING",
        "the conflicting OFF_QUEUE never became current"
    );
    let rows = h.history(&user, "routing").await;
    let states: Vec<&str> = rows.iter().filter_map(|r| r["state"].as_str()).collect();
    assert!(
        states.contains(&"INTERACTING") && !states.contains(&"OFF_QUEUE"),
        "{states:?}"
    );
    let agent = wait_for("the agents row", DEADLINE, || async {
        let a = agent_row(&h, &user).await;
        (a["routing_status"] == "NOT_RESPONDING").then_some(a)
    })
    .await;
    assert_eq!(agent["routing_status"], states[0]);
    h.app.shutdown().await;
}

/// Regression (fixed: over 7 days exits 2): `IDLE_THRESHOLD` has no upper bound; 300000y is accepted, and the idle
/// deadline `since + threshold` then overflows chrono's range (`DateTime + TimeDelta`
/// panics) as soon as an agent is idle. Expected: refused at start-up with exit status 2, or
/// no panic and the agent still tracked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_idle_threshold_is_refused_or_harmless() {
    let sim = start_sim(2).await;
    let ids = sim.agent_ids().await.unwrap();
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .env_clear()
        .env("GENESYS_API_URL", sim.base_url())
        .env("GENESYS_LOGIN_URL", sim.base_url())
        .env("GENESYS_CLIENT_ID", sim.client_id())
        .env("GENESYS_CLIENT_SECRET", sim.client_secret())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", temp_db_path().display()),
        )
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("IDLE_THRESHOLD", "300000y")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let running = Running { child, out, err };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = false;
    while Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        if let Ok(Some(_)) = std::process::Command::new("kill")
            .args(["-0", &running.child.id().to_string()])
            .status()
            .map(|s| (!s.success()).then_some(()))
        {
            break; // exited
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if ready {
        // Agents start IDLE: an idle episode with the absurd threshold has begun. Move one.
        sim.set_routing_status(&ids[0], "INTERACTING")
            .await
            .unwrap();
        sim.set_routing_status(&ids[0], "IDLE").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{port}/api/v1/agent-status/history?user_id={}&kind=routing",
            ids[0]
        );
        let until = Instant::now() + DEADLINE;
        loop {
            let rows = async {
                let v: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
                v["total"].as_u64()
            }
            .await;
            if rows.is_some_and(|n| n >= 3) {
                break;
            }
            if Instant::now() > until {
                signal(&running, "-KILL");
                let (_, log) = collect(running, Duration::from_secs(10)).await;
                panic!("the transitions never reached the history (rows: {rows:?}); log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal(&running, "-TERM");
    }
    let (code, log) = collect(running, Duration::from_secs(15)).await;
    assert!(!log.contains("panicked"), "a panic: {log}");
    if !ready {
        assert_eq!(code, Some(2), "refused at start-up with status 2: {log}");
    }
}

//! The chaos test (issue 3): a compressed shift of 1,000 agents through the simulator in chaos
//! mode (dropped sockets, `socket_closing`, revoked tokens, 429s and 5xx, delayed, duplicated
//! and reordered deliveries, expired channels, `no_longer_subscribed`), then the database and
//! the Slack receiver are compared with the simulator's ground truth:
//!
//! - every transition the simulator generated is stored exactly once, with its value;
//! - nothing else is stored;
//! - every idle episode that reached the threshold is alerted exactly once, delivered;
//! - no episode that ended before its threshold is alerted.
//!
//! The short form runs in CI (about a minute). The long soak runs with
//! `AGENT_MONITOR_SOAK_SECS=<shift seconds>` (and `-- --nocapture` to see the figures it
//! prints for the README's reliability section).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use agent_monitor::app::App;
use agent_monitor::config::MembershipConfig;
use agent_monitor::db::entity::{agent_status, alert};
use agent_monitor::rules::RuleSet;
use agent_monitor::sim::{
    ChaosConfig, ShiftConfig, SimConfig, Simulator, TransitionKind, idle_episodes,
};
use chrono::{DateTime, Utc};
use sea_orm::EntityTrait;

use crate::helpers::{SlackReceiver, init, rules_file, wait_a_while, wait_for};
use crate::service::{Opts, config_for, temp_db_path};

const AGENTS: usize = 1000;
/// The idle threshold and the guard band kept free of idle episodes around it: an episode
/// lasts under 5 s or over 11 s. The band covers the worst recovery of a gap (detect, reconnect
/// under 429/5xx, backfill) and delayed deliveries (up to 1.5 s).
const THRESHOLD: Duration = Duration::from_secs(8);
const MARGIN: Duration = Duration::from_secs(3);

/// The rule under test: routing IDLE for `THRESHOLD`, no resolved messages, no flap merging.
fn idle_rule() -> String {
    format!(
        r#"
[[rules]]
name = "idle-routing"
threshold = "{}s"
send_resolved = false
flap_tolerance = "1ms"
[rules.match]
routing_status = "IDLE"
"#,
        THRESHOLD.as_secs()
    )
}

/// Every lowercase GUID (8-4-4-4-12 hex digits) in `text`.
fn guids(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 36 <= bytes.len() {
        let candidate = &bytes[i..i + 36];
        let is_guid = candidate.iter().enumerate().all(|(j, c)| match j {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        });
        if is_guid {
            out.push(String::from_utf8_lossy(candidate).into_owned());
            i += 36;
        } else {
            i += 1;
        }
    }
    out
}

/// One `COUNT(*)` (0 on a database error, retried by the caller's polling).
async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let statement = sea_orm::Statement::from_string(db.get_database_backend(), sql.to_string());
    match db.query_one_raw(statement).await {
        Ok(Some(row)) => row.try_get_by_index::<i64>(0).unwrap_or(0),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaotic_shift_of_a_thousand_agents_loses_nothing_and_doubles_nothing() {
    init();
    let soak: Option<u64> = std::env::var("AGENT_MONITOR_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok());
    let shift_length = Duration::from_secs(soak.unwrap_or(25));

    let sim = Simulator::start(
        ([127, 0, 0, 1], 0).into(),
        SimConfig {
            agents: AGENTS,
            autopilot: false,
            heartbeat_interval: Duration::from_secs(1),
            socket_closing_grace: Duration::from_secs(2),
            queues: 0,
            seed: 7,
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    // Nobody idle before the shift: every idle episode is one of the shift's, outside the band.
    for id in sim.agent_ids().await.unwrap() {
        sim.set_routing_status(&id, "INTERACTING").await.unwrap();
    }

    // What happened before the service first looked is known only through the snapshot: a
    // transition already superseded by then is not expected in the history.
    let service_start = sim.now().await.unwrap();
    let slack = SlackReceiver::start().await;
    let db_path = temp_db_path();
    let rules = rules_file(&idle_rule());
    let mut config = config_for(
        &sim,
        &slack,
        &db_path,
        &Opts {
            agents: AGENTS,
            idle_threshold: THRESHOLD,
            ping_interval: Duration::from_millis(500),
            silence_timeout: Duration::from_secs(3),
            topics_per_channel: 400,
            membership: MembershipConfig {
                backfill_margin: Duration::from_secs(2),
                ..MembershipConfig::default()
            },
            ..Opts::default()
        },
    );
    config.rules = Arc::new(RuleSet::load(&rules).unwrap());
    config.rules_path = Some(rules.clone());
    // One message per alert, as fast as the receiver takes them: every send is countable.
    config.delivery.group_wait = Duration::ZERO;
    config.delivery.burst = 100_000;
    config.delivery.send_interval = Duration::from_millis(1);
    let app = App::start(config).await.unwrap();
    let base = format!("http://{}", app.api_addr());
    let http = reqwest::Client::new();
    let readyz = || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        let ok = r.status() == 200;
        let body: serde_json::Value = r.json().await.ok()?;
        Some((ok, body))
    };
    wait_for("the service ready", Duration::from_secs(60), || async {
        readyz().await.filter(|(ok, _)| *ok).map(|_| ())
    })
    .await;

    // The snapshot holds the state before the shift (a presence and a routing row per agent).
    wait_for("the snapshot stored", Duration::from_secs(60), || async {
        (count(app.db(), "SELECT COUNT(*) FROM agent_status").await >= 2 * AGENTS as i64)
            .then_some(())
    })
    .await;

    sim.start_chaos(ChaosConfig {
        seed: 11,
        mean_interval: Duration::from_secs(2),
        ..ChaosConfig::default()
    })
    .await
    .unwrap();
    let summary = sim
        .run_shift(ShiftConfig {
            seed: 5,
            duration: shift_length,
            idle_threshold: THRESHOLD,
            margin: MARGIN,
            mean_hold: Duration::from_secs(2),
            long_idle_probability: 0.3,
            off_queue_probability: 0.2,
            users: None,
        })
        .await
        .unwrap();
    sim.stop_chaos().await.unwrap();
    let faults = sim.chaos_stats().await.unwrap();

    let all_truth = sim.ground_truth().await.unwrap();
    let now = sim.now().await.unwrap();
    // Per user and dimension, the last transition at or before the service started: anything
    // older was superseded before the service looked.
    let mut known_at_start: HashMap<(String, TransitionKind), DateTime<Utc>> = HashMap::new();
    for t in all_truth.iter().filter(|t| t.at <= service_start) {
        let at = known_at_start
            .entry((t.user_id.clone(), t.kind))
            .or_insert(t.at);
        *at = (*at).max(t.at);
    }
    let superseded_before_start = |t: &agent_monitor::sim::GroundTruthTransition| {
        known_at_start
            .get(&(t.user_id.clone(), t.kind))
            .is_some_and(|last| t.at < *last)
    };
    let truth: Vec<_> = all_truth
        .iter()
        .filter(|t| !superseded_before_start(t))
        .cloned()
        .collect();
    let expected_alerts: Vec<(String, DateTime<Utc>)> = idle_episodes(&all_truth, THRESHOLD, now)
        .into_iter()
        .filter(|e| e.reached_threshold)
        .map(|e| (e.user_id, e.start))
        .collect();
    assert!(
        !expected_alerts.is_empty() && summary.short_idle_episodes > 0,
        "the shift must hold both kinds of idle episode: {summary:?}"
    );

    // Let the service catch up: every transition stored, every alert delivered.
    let db = app.db();
    let settle = Duration::from_secs(60);
    // (On a timeout the comparison below says what is missing.)
    let until = tokio::time::Instant::now() + settle;
    let _ = tokio::time::timeout_at(
        until,
        wait_for("every transition stored", settle * 2, || async {
            (count(db, "SELECT COUNT(*) FROM agent_status").await >= truth.len() as i64)
                .then_some(())
        }),
    )
    .await;
    let _ = tokio::time::timeout_at(
        until,
        wait_for("every expected alert delivered", settle * 2, || async {
            let delivered = count(
                db,
                "SELECT COUNT(*) FROM alerts WHERE delivery_status = 'delivered'",
            )
            .await;
            (delivered >= expected_alerts.len() as i64).then_some(())
        }),
    )
    .await;
    // Let anything doubled or late arrive before judging.
    wait_a_while(THRESHOLD).await;

    // 1. Every transition stored exactly once, and nothing else.
    let rows = agent_status::Entity::find().all(db).await.unwrap();
    let mut stored: HashMap<(String, String, DateTime<Utc>), Vec<String>> = HashMap::new();
    for row in &rows {
        stored
            .entry((row.user_id.clone(), row.kind.clone(), row.event_timestamp))
            .or_default()
            .push(row.state.clone());
    }
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for t in &truth {
        let kind = match t.kind {
            TransitionKind::Presence => "presence",
            TransitionKind::Routing => "routing",
        };
        match stored.remove(&(t.user_id.clone(), kind.to_string(), t.at)) {
            None => missing.push(format!(
                "{} {kind} {} at {} delivered {}",
                t.user_id, t.value, t.at, t.delivered
            )),
            Some(states) if states != [t.value.clone()] => wrong.push(format!(
                "{} {kind} at {}: {states:?} != {}",
                t.user_id, t.at, t.value
            )),
            Some(_) => {}
        }
    }
    let extra: Vec<_> = stored.keys().take(10).collect();
    let backfilled = rows.iter().filter(|r| r.source == "backfill").count();

    // 2. Every expected alert exactly once, delivered; nothing else.
    let alerts = alert::Entity::find().all(db).await.unwrap();
    let mut fired: BTreeMap<(String, DateTime<Utc>), usize> = BTreeMap::new();
    for a in alerts
        .iter()
        .filter(|a| a.kind == "firing" && a.repeat == 0)
    {
        *fired.entry((a.user_id.clone(), a.since)).or_default() += 1;
    }
    let undelivered: Vec<_> = alerts
        .iter()
        .filter(|a| a.delivery_status != "delivered")
        .map(|a| format!("{} {} {}", a.user_id, a.since, a.delivery_status))
        .collect();
    let mut not_alerted = Vec::new();
    for key in &expected_alerts {
        if fired.remove(key).is_none() {
            not_alerted.push(format!("{} idle since {}", key.0, key.1));
        }
    }
    let wrongly_alerted: Vec<_> = fired.keys().take(10).collect();
    for missed in not_alerted.iter().take(3) {
        let user = missed.split(' ').next().unwrap_or_default();
        eprintln!("not alerted: {missed}");
        for t in all_truth
            .iter()
            .filter(|t| t.user_id == user && t.kind == TransitionKind::Routing)
        {
            eprintln!("  truth {} {} delivered {}", t.value, t.at, t.delivered);
        }
        for a in alerts.iter().filter(|a| a.user_id == user) {
            eprintln!(
                "  alert {} since {} fired {} {}",
                a.kind, a.since, a.fired_at, a.delivery_status
            );
        }
        for r in rows
            .iter()
            .filter(|r| r.user_id == user && r.kind == "routing")
        {
            eprintln!(
                "  row {} {} {} ingested {}",
                r.state, r.event_timestamp, r.source, r.ingested_at
            );
        }
    }
    for (user, since) in fired.keys().take(3) {
        eprintln!("wrong alert {user} since {since}");
        for t in all_truth
            .iter()
            .filter(|t| &t.user_id == user && t.kind == TransitionKind::Routing)
        {
            eprintln!("  truth {} {} delivered {}", t.value, t.at, t.delivered);
        }
        for a in alerts.iter().filter(|a| &a.user_id == user) {
            eprintln!(
                "  alert {} since {} fired {} {}",
                a.kind, a.since, a.fired_at, a.state
            );
        }
        for r in rows
            .iter()
            .filter(|r| &r.user_id == user && r.kind == "routing")
        {
            eprintln!("  row {} {} {}", r.state, r.event_timestamp, r.source);
        }
    }
    // What reached Slack: one message per expected alert, each naming its agent.
    let received = slack.received();
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for (user, _) in &expected_alerts {
        *per_user.entry(user.clone()).or_default() += 1;
    }
    let mut slack_mismatch = Vec::new();
    // Each message names its agent: count the messages per agent id found in them (one scan
    // of each message, so the soak's tens of thousands stay cheap).
    let mut got_per_user: HashMap<String, usize> = HashMap::new();
    for r in &received {
        let text = r.body.to_string();
        let mut named: Vec<String> = guids(&text)
            .into_iter()
            .filter(|g| per_user.contains_key(g))
            .collect();
        named.sort();
        named.dedup();
        for user in named {
            *got_per_user.entry(user).or_default() += 1;
        }
    }
    for (user, want) in &per_user {
        let got = got_per_user.get(user).copied().unwrap_or(0);
        if got != *want {
            slack_mismatch.push(format!("{user}: {got} messages, expected {want}"));
        }
    }
    let unexpected = got_per_user
        .keys()
        .filter(|u| !per_user.contains_key(*u))
        .count();
    if unexpected > 0 {
        slack_mismatch.push(format!("{unexpected} agents alerted but never expected"));
    }

    let (_, ready) = readyz().await.unwrap();
    let reconnects: u64 = ready["connections"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["reconnects"].as_u64()).sum())
        .unwrap_or(0);
    let replacements: u64 = ready["connections"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["channel_replacements"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    let fault_total: u64 = faults.values().sum();
    eprintln!(
        "chaos figures: agents {AGENTS}, shift {}s, transitions {}, idle episodes alerted {}, \
         short idle episodes {}, faults {fault_total} {faults:?}, reconnects {reconnects}, \
         channel replacements {replacements}, backfilled rows {backfilled}, missing {}, \
         wrong {}, extra {}, alerts missing {}, alerts wrong {}, undelivered {}, slack mismatches {}, \
         clock offset {} ms",
        shift_length.as_secs(),
        truth.len(),
        expected_alerts.len(),
        summary.short_idle_episodes,
        missing.len(),
        wrong.len(),
        stored.len(),
        not_alerted.len(),
        fired.len(),
        undelivered.len(),
        slack_mismatch.len(),
        ready["clock_offset_ms"],
    );
    if !missing.is_empty() {
        let mut by_at: BTreeMap<String, usize> = BTreeMap::new();
        for m in &missing {
            let at = m.split(" at ").nth(1).unwrap_or_default().to_string();
            *by_at.entry(at).or_default() += 1;
        }
        eprintln!("missing by instant: {by_at:?}");
        let user = missing[missing.len() - 1]
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        let mut theirs: Vec<_> = rows.iter().filter(|r| r.user_id == user).collect();
        theirs.sort_by_key(|r| r.event_timestamp);
        for r in theirs.iter().take(6) {
            eprintln!(
                "  db {} {} {} {}",
                r.kind, r.state, r.event_timestamp, r.source
            );
        }
        for t in truth.iter().filter(|t| t.user_id == user).take(6) {
            eprintln!(
                "  truth {:?} {} {} initial {}",
                t.kind, t.value, t.at, t.initial
            );
        }
        eprintln!("last backfill: {}", ready["last_backfill"]);
    }
    assert!(fault_total >= 5, "chaos must have fired: {faults:?}");
    assert!(
        missing.is_empty(),
        "{} transitions missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        wrong.is_empty(),
        "wrong values: {:?}",
        &wrong[..wrong.len().min(10)]
    );
    assert!(stored.is_empty(), "rows not in the ground truth: {extra:?}");
    assert!(
        not_alerted.is_empty(),
        "{} episodes not alerted, e.g. {:?}",
        not_alerted.len(),
        &not_alerted[..not_alerted.len().min(10)]
    );
    assert!(
        fired.is_empty(),
        "alerts for episodes that never reached the threshold: {wrongly_alerted:?}"
    );
    assert!(undelivered.is_empty(), "{undelivered:?}");
    assert!(slack_mismatch.is_empty(), "{slack_mismatch:?}");
    app.shutdown().await;
}

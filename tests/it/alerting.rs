//! End-to-end tests of the alert rules: the real service with a rules file, against the
//! simulator (autopilot off) and a local Slack receiver.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_monitor::actors::supervisor::SupervisorMsg;
use agent_monitor::app::App;
use agent_monitor::config::Config;
use agent_monitor::domain::UserId;
use agent_monitor::rules::{RuleLimits, RuleSet};
use agent_monitor::sim::{LUNCH_ID, Simulator};
use serde_json::Value;

use crate::helpers::{SlackReceiver, SlackRequest, rules_file, wait_for};
use crate::service::{Harness, Opts, config_for, start_sim, temp_db_path};

/// Generous: debug builds on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(20);

/// `config_for` with the rules of `rules_path` and the given `group_wait`.
fn config_with_rules(
    sim: &Simulator,
    slack: &SlackReceiver,
    db: &Path,
    agents: usize,
    rules_path: &Path,
    group_wait: Duration,
) -> Config {
    let mut config = config_for(
        sim,
        slack,
        db,
        &Opts {
            agents,
            ..Opts::default()
        },
    );
    // Repeats within seconds: these tests are about behaviour, not the production bound.
    let limits = RuleLimits {
        min_repeat_interval: Duration::from_secs(1),
    };
    config.rules = Arc::new(RuleSet::load_with(rules_path, limits).expect("valid rules file"));
    config.rules_path = Some(rules_path.to_path_buf());
    config.delivery.group_wait = group_wait;
    config
}

/// Starts the service on `sim` with the rules `text` and waits until it is ready.
async fn start_with_rules(sim: Simulator, text: &str, group_wait: Duration) -> (Harness, PathBuf) {
    let path = rules_file(text);
    let slack = SlackReceiver::start().await;
    let ids = sim.agent_ids().await.unwrap();
    let config = config_with_rules(&sim, &slack, &temp_db_path(), ids.len(), &path, group_wait);
    let app = App::start(config).await.unwrap();
    let h = Harness {
        base: format!("http://{}", app.api_addr()),
        sim,
        slack,
        app,
        http: reqwest::Client::new(),
        ids,
    };
    h.wait_ready().await;
    (h, path)
}

/// A simulator of `n` agents, all routing INTERACTING (so nobody is idle at start).
async fn busy_sim(n: usize) -> Simulator {
    let sim = start_sim(n).await;
    for id in sim.agent_ids().await.unwrap() {
        sim.set_routing_status(&id, "INTERACTING").await.unwrap();
    }
    sim
}

/// Alert records matching the query string (`rule=…&user_id=…`), newest first.
async fn alerts(h: &Harness, query: &str) -> Vec<Value> {
    let (status, body) = h.get(&format!("/api/v1/alerts?limit=100&{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

/// Waits for an alert record matching `query` and `pred`.
async fn wait_alert(h: &Harness, query: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(&format!("an alert record {query}"), DEADLINE, || async {
        alerts(h, query).await.into_iter().find(|a| pred(a))
    })
    .await
}

/// Slack requests that mention `user` (by id, which single-alert messages carry).
fn requests_for(slack: &SlackReceiver, user: &str) -> Vec<SlackRequest> {
    slack
        .received()
        .into_iter()
        .filter(|r| r.body.to_string().contains(user))
        .collect()
}

fn text_of(r: &SlackRequest) -> String {
    r.body["text"].as_str().unwrap_or_default().to_string()
}

/// 1. A state held for several repeat intervals: one message per interval, no extra, and a
/// resolved message with the total duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_state_repeats_once_per_interval_then_resolves_with_the_total() {
    let sim = busy_sim(1).await;
    let rules = r#"
[[rules]]
name = "not-responding"
threshold = "1s"
repeat_interval = "2s"
send_resolved = true
flap_tolerance = "1s"
severity = "critical"
[rules.match]
routing_status = "NOT_RESPONDING"
"#;
    let (h, _) = start_with_rules(sim, rules, Duration::ZERO).await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "INTERACTING").await;

    h.sim
        .set_routing_status(&user, "NOT_RESPONDING")
        .await
        .unwrap();
    let entered = Instant::now();
    // The first fire and two repeats.
    let got = wait_for("3 firing messages", DEADLINE, || async {
        let got = requests_for(&h.slack, &user);
        (got.len() >= 3).then_some(got)
    })
    .await;
    let left = Instant::now();
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    let held = left.duration_since(entered);

    let first_gap = got[0].at.duration_since(entered);
    assert!(
        first_gap >= Duration::from_millis(850) && first_gap < Duration::from_secs(3),
        "first fire ≈ threshold after entering: {first_gap:?}"
    );
    for pair in got[..3].windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(1700) && gap <= Duration::from_millis(2800),
            "repeat spacing ≈ 2 s: {gap:?}"
        );
    }
    for r in &got[..3] {
        assert!(text_of(r).starts_with(":warning:"), "{}", r.body);
    }

    // The resolved message, after the flap tolerance.
    let resolved = wait_for("the resolved message", DEADLINE, || async {
        requests_for(&h.slack, &user)
            .into_iter()
            .find(|r| text_of(r).starts_with(":white_check_mark:"))
    })
    .await;
    let all = requests_for(&h.slack, &user);
    assert_eq!(
        all.len(),
        4,
        "3 firing messages and 1 resolved, nothing else: {:#?}",
        all.iter().map(text_of).collect::<Vec<_>>()
    );
    let text = text_of(&resolved);
    assert!(text.contains("in total"), "{text}");
    // Nothing more comes: no repeat after the episode ended (a repeat would have been due
    // within one interval).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        requests_for(&h.slack, &user).len(),
        4,
        "nothing after the resolved message"
    );

    let records = alerts(&h, &format!("user_id={user}&rule=not-responding")).await;
    let mut repeats: Vec<u64> = records
        .iter()
        .filter(|a| a["kind"] == "firing")
        .map(|a| a["repeat"].as_u64().unwrap())
        .collect();
    repeats.sort_unstable();
    assert_eq!(repeats, vec![0, 1, 2], "{records:#?}");
    let resolved_row = records
        .iter()
        .find(|a| a["kind"] == "resolved")
        .expect("a resolved record");
    assert_eq!(resolved_row["severity"], "critical");
    let total = resolved_row["resolved_duration_seconds"].as_u64().unwrap();
    // From the Genesys start of NOT_RESPONDING to the change back (not + flap tolerance).
    let expected = held.as_secs_f64();
    assert!(
        (total as f64 - expected).abs() <= 1.5,
        "total {total}s, held ≈ {expected:.1}s"
    );
    let total_text = agent_monitor::slack::blocks::human_duration(Duration::from_secs(total));
    assert!(
        text.contains(&format!("after {total_text} in total")),
        "the text states the total duration {total_text}: {text}"
    );
    // The blocks state the same total.
    assert!(
        resolved.body["blocks"]
            .to_string()
            .contains(&format!("*Total duration*\\n{total_text}")),
        "{}",
        resolved.body
    );
    h.app.shutdown().await;
}

/// 2. Every event delivered twice still gives one alert (and one resolved message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_gives_one_alert() {
    let sim = busy_sim(2).await;
    let rules = r#"
[[rules]]
name = "idle"
threshold = "1s"
send_resolved = true
flap_tolerance = "1s"
[rules.match]
routing_status = "IDLE"
"#;
    let (h, _) = start_with_rules(sim, rules, Duration::ZERO).await;
    let (user, later) = (h.ids[0].clone(), h.ids[1].clone());
    h.wait_state(&user, "routing", "INTERACTING").await;
    h.sim.duplicate_deliveries(true).await.unwrap();
    h.sim.set_routing_status(&user, "IDLE").await.unwrap();
    wait_alert(&h, &format!("user_id={user}"), |a| {
        a["delivery_status"] == "delivered"
    })
    .await;
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    wait_alert(&h, &format!("user_id={user}"), |a| {
        a["kind"] == "resolved" && a["delivery_status"] == "delivered"
    })
    .await;
    // A later agent's alert: any second alert of the first would have come by then.
    h.sim.set_routing_status(&later, "IDLE").await.unwrap();
    wait_alert(&h, &format!("user_id={later}"), |a| {
        a["delivery_status"] == "delivered"
    })
    .await;
    let rows = alerts(&h, &format!("user_id={user}")).await;
    assert_eq!(rows.len(), 2, "one firing, one resolved: {rows:#?}");
    assert_eq!(requests_for(&h.slack, &user).len(), 2);
    assert_eq!(h.slack.received().len(), 3);
    let transitions = h
        .sql_count(&format!(
            "SELECT COUNT(*) FROM agent_status WHERE user_id = '{user}' AND source = 'stream'"
        ))
        .await;
    // INTERACTING came with the snapshot (bootstrap); IDLE and INTERACTING once each.
    assert_eq!(transitions, 2, "IDLE, INTERACTING once each");
    h.app.shutdown().await;
}

/// 3. Presence IDLE (a locked screen) off queue is not the built-in idle rule's idle; routing
/// IDLE is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_idle_off_queue_does_not_fire_the_builtin_idle_rule() {
    let sim = start_sim(2).await;
    let ids = sim.agent_ids().await.unwrap();
    let (locked, control) = (ids[0].clone(), ids[1].clone());
    sim.set_routing_status(&locked, "OFF_QUEUE").await.unwrap();
    sim.set_routing_status(&control, "INTERACTING")
        .await
        .unwrap();
    let threshold = Duration::from_secs(1);
    let h = Harness::start_on(
        sim,
        Opts {
            agents: 2,
            idle_threshold: threshold,
            ..Opts::default()
        },
    )
    .await;
    h.wait_state(&control, "routing", "INTERACTING").await;
    h.wait_state(&locked, "routing", "OFF_QUEUE").await;

    h.sim.set_presence(&locked, "IDLE").await.unwrap();
    h.wait_state(&locked, "presence", "IDLE").await;
    // The control agent goes idle after the locked one: its alert comes after the locked
    // agent's deadline would have passed.
    h.sim.set_routing_status(&control, "IDLE").await.unwrap();
    let alert = wait_alert(&h, &format!("user_id={control}"), |a| {
        a["delivery_status"] == "delivered"
    })
    .await;
    assert_eq!(alert["rule"], "idle");
    assert!(
        alerts(&h, &format!("user_id={locked}")).await.is_empty(),
        "presence IDLE with routing OFF_QUEUE is not idle"
    );
    assert!(h.alerts_for(&locked).is_empty());
    assert_eq!(h.slack.received().len(), 1);
    h.app.shutdown().await;
}

/// 4. A rule on an org presence (Lunch) and a rule on its system presence (MEAL) both fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_presence_rule_and_its_system_presence_rule_both_fire() {
    let sim = busy_sim(1).await;
    let rules = format!(
        r#"
[[rules]]
name = "long-lunch"
threshold = "1s"
[rules.match]
presence_definition_id = "{LUNCH_ID}"

[[rules]]
name = "long-meal"
threshold = "1s"
[rules.match]
system_presence = "MEAL"
"#
    );
    let (h, _) = start_with_rules(sim, &rules, Duration::ZERO).await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "INTERACTING").await;
    h.sim.set_presence(&user, LUNCH_ID).await.unwrap();
    for rule in ["long-lunch", "long-meal"] {
        let a = wait_alert(&h, &format!("user_id={user}&rule={rule}"), |a| {
            a["delivery_status"] == "delivered"
        })
        .await;
        assert_eq!(a["kind"], "firing");
        assert!(
            a["state"].as_str().unwrap().contains("MEAL (Lunch)"),
            "state names the presence and its label: {a}"
        );
    }
    let got = requests_for(&h.slack, &user);
    assert_eq!(got.len(), 2, "one message per rule");
    for rule in ["long-lunch", "long-meal"] {
        assert!(
            got.iter()
                .any(|r| r.body.to_string().contains(&format!("`{rule}`"))),
            "a message of {rule}"
        );
    }
    h.app.shutdown().await;
}

/// A window of local wall-clock time in `tz` from 20 minutes ago to 20 minutes from now.
fn window_around_now(tz: chrono_tz::Tz) -> String {
    let now = chrono::Utc::now().with_timezone(&tz);
    let from = now - chrono::Duration::minutes(20);
    let to = now + chrono::Duration::minutes(20);
    format!("{}-{}", from.format("%H:%M"), to.format("%H:%M"))
}

/// 5. Quiet hours suppress sending, not recording; the window is read in the rule's time
/// zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_suppress_sending_but_not_recording() {
    let sim = busy_sim(1).await;
    // Quiet all day (UTC); quiet now in New York's wall-clock time; and a window around now
    // in UTC wall-clock time but written for Tokyo (UTC+9, no DST), which is not now there.
    let new_york = window_around_now(chrono_tz::America::New_York);
    let not_now = window_around_now(chrono_tz::UTC);
    let rules = format!(
        r#"
[[rules]]
name = "quiet-idle"
threshold = "1s"
[rules.match]
routing_status = "IDLE"
[rules.quiet_hours]
time_zone = "UTC"
windows = ["00:00-24:00"]

[[rules]]
name = "quiet-in-new-york"
threshold = "1s"
[rules.match]
routing_status = "IDLE"
[rules.quiet_hours]
time_zone = "America/New_York"
windows = ["{new_york}"]

[[rules]]
name = "not-quiet-in-tokyo"
threshold = "2s"
[rules.match]
routing_status = "IDLE"
[rules.quiet_hours]
time_zone = "Asia/Tokyo"
windows = ["{not_now}"]
"#
    );
    let (h, _) = start_with_rules(sim, &rules, Duration::ZERO).await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "INTERACTING").await;
    h.sim.set_routing_status(&user, "IDLE").await.unwrap();
    for rule in ["quiet-idle", "quiet-in-new-york"] {
        let quiet = wait_alert(&h, &format!("rule={rule}&user_id={user}"), |a| {
            a["delivery_status"] == "suppressed"
        })
        .await;
        assert_eq!(quiet["kind"], "firing");
        assert_eq!(quiet["muted"], "quiet hours", "{quiet}");
        assert_eq!(quiet["destination"], "default", "{quiet}");
        assert_eq!(quiet["delivery_error"], "quiet hours", "{quiet}");
    }
    // The Tokyo rule fires a second later and is delivered: a quiet-hours message would
    // have reached Slack by then.
    wait_alert(
        &h,
        &format!("rule=not-quiet-in-tokyo&user_id={user}"),
        |a| a["delivery_status"] == "delivered",
    )
    .await;
    let got = h.slack.received();
    assert_eq!(got.len(), 1, "only the Tokyo rule's message");
    assert!(got[0].body.to_string().contains("`not-quiet-in-tokyo`"));
    h.app.shutdown().await;
}

/// 6. A silence on one rule and one agent suppresses that agent only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_suppresses_one_agent_only() {
    let sim = busy_sim(2).await;
    let rules = r#"
[[rules]]
name = "idle"
threshold = "1s"
[rules.match]
routing_status = "IDLE"
"#;
    let (h, _) = start_with_rules(sim, rules, Duration::ZERO).await;
    let (silenced, other) = (h.ids[0].clone(), h.ids[1].clone());
    h.wait_state(&silenced, "routing", "INTERACTING").await;
    h.wait_state(&other, "routing", "INTERACTING").await;
    agent_monitor::db::alerting::insert_silence(
        h.app.db(),
        Some("idle".into()),
        Some(UserId::parse(&silenced).unwrap()),
        chrono::Utc::now() + chrono::Duration::hours(1),
        "coaching session".into(),
    )
    .await
    .unwrap();
    h.sim.set_routing_status(&silenced, "IDLE").await.unwrap();
    h.sim.set_routing_status(&other, "IDLE").await.unwrap();
    let row = wait_alert(&h, &format!("user_id={silenced}"), |a| {
        a["delivery_status"] == "suppressed"
    })
    .await;
    let error = row["delivery_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("silenced"), "{row}");
    assert!(error.contains("coaching session"), "{row}");
    wait_alert(&h, &format!("user_id={other}"), |a| {
        a["delivery_status"] == "delivered"
    })
    .await;
    assert!(requests_for(&h.slack, &silenced).is_empty());
    assert_eq!(requests_for(&h.slack, &other).len(), 1);
    assert_eq!(h.slack.received().len(), 1);
    h.app.shutdown().await;
}

/// 7. 200 agents going idle at once: grouped messages, a burst of 3 then at most one per
/// second, every agent accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_idle_agents_arrive_grouped_and_paced() {
    const AGENTS: usize = 200;
    const RULES: usize = 8;
    let sim = busy_sim(AGENTS).await;
    let ids = sim.agent_ids().await.unwrap();
    // 8 rules of 25 agents each (by scope): 8 groups, 20 listed + "+5 more" each.
    let mut rules = String::new();
    for r in 0..RULES {
        let scope: Vec<String> = ids
            .iter()
            .skip(r)
            .step_by(RULES)
            .map(|id| format!("\"{id}\""))
            .collect();
        rules.push_str(&format!(
            "[[rules]]\nname = \"idle-{r}\"\nthreshold = \"1s\"\n[rules.match]\nrouting_status = \"IDLE\"\n[rules.scope]\nuser_ids = [{}]\n\n",
            scope.join(", ")
        ));
    }
    let (h, _) = start_with_rules(sim, &rules, Duration::from_secs(1)).await;
    let last = h.ids.last().unwrap().clone();
    h.wait_state(&last, "routing", "INTERACTING").await;

    let started = Instant::now();
    for id in &h.ids {
        h.sim.set_routing_status(id, "IDLE").await.unwrap();
    }
    wait_for("200 alerts delivered", Duration::from_secs(30), || async {
        let (_, body) = h.get("/api/v1/alerts?status=delivered&limit=1").await;
        (body["total"].as_u64() == Some(AGENTS as u64)).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));
    let got = h.slack.received();
    assert!(
        got.len() >= RULES && got.len() < AGENTS / 4,
        "grouped: {} messages",
        got.len()
    );
    // A burst of 3, then at most one per second.
    for pair in got[2..].windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(900), "gap {gap:?}");
    }
    // Every agent is named in a message or counted in a "+k more".
    let mut named = 0usize;
    let mut more = 0usize;
    let bodies: Vec<String> = got.iter().map(|r| r.body["blocks"].to_string()).collect();
    for id in &h.ids {
        let name = h.sim.user(id).await.unwrap().unwrap().name;
        let marked = format!("*{}*", agent_monitor::slack::escape(&name));
        let marked = serde_json::to_string(&marked).unwrap();
        let marked = marked.trim_matches('"');
        if bodies.iter().any(|b| b.contains(marked)) {
            named += 1;
        }
    }
    for r in &got {
        for block in r.body["blocks"].as_array().unwrap() {
            if block["type"] == "context" {
                let t = block["elements"][0]["text"].as_str().unwrap_or_default();
                if let Some(k) = t
                    .strip_prefix('+')
                    .and_then(|t| t.strip_suffix(" more"))
                    .and_then(|k| k.parse::<usize>().ok())
                {
                    more += k;
                }
            }
        }
    }
    assert_eq!(named + more, AGENTS, "named {named}, +more {more}");
    h.app.shutdown().await;
}

/// 8. A restart in the middle of a firing episode: the next message is repeat 1, one interval
/// after the first fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_episode_neither_repeats_early_nor_forgets_the_repeat() {
    let sim = busy_sim(1).await;
    let user = sim.agent_ids().await.unwrap()[0].clone();
    let rules = r#"
[[rules]]
name = "not-responding"
threshold = "1s"
repeat_interval = "4s"
[rules.match]
routing_status = "NOT_RESPONDING"
"#;
    let path = rules_file(rules);
    let db = temp_db_path();
    let slack = SlackReceiver::start().await;
    let get = |base: String, query: String| async move {
        let body: Value = reqwest::get(format!("{base}/api/v1/alerts?limit=100&{query}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["data"].as_array().cloned().unwrap_or_default()
    };

    let app = App::start(config_with_rules(
        &sim,
        &slack,
        &db,
        1,
        &path,
        Duration::ZERO,
    ))
    .await
    .unwrap();
    let base = format!("http://{}", app.api_addr());
    wait_for("first app ready", DEADLINE, || async {
        let r = reqwest::get(format!("{base}/readyz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    sim.set_routing_status(&user, "NOT_RESPONDING")
        .await
        .unwrap();
    let first = wait_for("the first fire", DEADLINE, || async {
        requests_for(&slack, &user).pop()
    })
    .await;
    wait_for("the first fire recorded delivered", DEADLINE, || {
        let (base, user) = (base.clone(), user.clone());
        async move {
            get(base, format!("user_id={user}"))
                .await
                .into_iter()
                .find(|a| a["delivery_status"] == "delivered" && a["repeat"] == 0)
        }
    })
    .await;
    app.shutdown().await;

    // A new service on the same database and simulator; the agent is still NOT_RESPONDING.
    let app = App::start(config_with_rules(
        &sim,
        &slack,
        &db,
        1,
        &path,
        Duration::ZERO,
    ))
    .await
    .unwrap();
    let base = format!("http://{}", app.api_addr());
    let second = wait_for("the next message after the restart", DEADLINE, || async {
        let got = requests_for(&slack, &user);
        (got.len() >= 2).then(|| got[1].clone())
    })
    .await;
    let gap = second.at.duration_since(first.at);
    assert!(
        gap >= Duration::from_millis(3500) && gap <= Duration::from_millis(6000),
        "the repeat comes one interval (4 s) after the first fire: {gap:?} ({})",
        second.body
    );
    let rows = wait_for("two records", DEADLINE, || {
        let (base, user) = (base.clone(), user.clone());
        async move {
            let rows = get(base, format!("user_id={user}")).await;
            (rows.len() >= 2).then_some(rows)
        }
    })
    .await;
    let mut repeats: Vec<u64> = rows
        .iter()
        .map(|a| a["repeat"].as_u64().unwrap_or(u64::MAX))
        .collect();
    repeats.sort_unstable();
    assert_eq!(repeats, vec![0, 1], "{rows:#?}");
    assert_eq!(
        rows[0]["episode_key"], rows[1]["episode_key"],
        "the same episode"
    );
    app.shutdown().await;
}

/// 9. An invalid rules file is refused with its problems by line and the running rules keep
/// firing; a valid one is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_reload_refuses_an_invalid_file_and_applies_a_valid_one() {
    let sim = busy_sim(3).await;
    let rules = r#"
[[rules]]
name = "first"
threshold = "1s"
[rules.match]
routing_status = "IDLE"
"#;
    let (h, path) = start_with_rules(sim, rules, Duration::ZERO).await;
    for id in &h.ids {
        h.wait_state(id, "routing", "INTERACTING").await;
    }
    // Two valid rules with the same name (lines 1 and 7), then a rule with three mistakes.
    let invalid = "[[rules]]\n\
                   name = \"dup\"\n\
                   threshold = \"1s\"\n\
                   [rules.match]\n\
                   routing_status = \"IDLE\"\n\
                   \n\
                   [[rules]]\n\
                   name = \"dup\"\n\
                   threshold = \"1s\"\n\
                   [rules.match]\n\
                   routing_status = \"IDLE\"\n\
                   \n\
                   [[rules]]\n\
                   name = \"broken\"\n\
                   threshold = \"soon\"\n\
                   severity = \"loud\"\n\
                   [rules.match]\n\
                   routing_status = \"LUNCHING\"\n";
    std::fs::write(&path, invalid).unwrap();
    let outcome = ractor::call_t!(h.app.supervisor(), SupervisorMsg::ReloadRules, 5000).unwrap();
    assert!(!outcome.applied);
    assert!(outcome.problems.len() >= 4, "{:#?}", outcome.problems);
    assert!(
        outcome.problems.iter().all(|p| p.starts_with("line ")),
        "{:#?}",
        outcome.problems
    );
    let on_line = |line: usize, what: &str| {
        outcome
            .problems
            .iter()
            .any(|p| p.starts_with(&format!("line {line}: ")) && p.contains(what))
    };
    let joined = outcome.problems.join("\n");
    assert!(
        on_line(7, "duplicate rule name") || on_line(8, "duplicate rule name"),
        "{joined}"
    );
    assert!(on_line(15, "not a duration"), "{joined}");
    assert!(on_line(16, "unknown severity"), "{joined}");
    assert!(on_line(18, "unknown routing status"), "{joined}");

    // The running rules keep firing.
    h.sim.set_routing_status(&h.ids[0], "IDLE").await.unwrap();
    let a = wait_alert(&h, &format!("user_id={}", h.ids[0]), |a| {
        a["delivery_status"] == "delivered"
    })
    .await;
    assert_eq!(a["rule"], "first");

    // A valid file is applied.
    let valid = r#"
[[rules]]
name = "second"
threshold = "1s"
severity = "critical"
[rules.match]
routing_status = "IDLE"
"#;
    std::fs::write(&path, valid).unwrap();
    let outcome = ractor::call_t!(h.app.supervisor(), SupervisorMsg::ReloadRules, 5000).unwrap();
    assert!(outcome.applied, "{:#?}", outcome.problems);
    assert!(outcome.problems.is_empty());
    h.sim.set_routing_status(&h.ids[1], "IDLE").await.unwrap();
    let b = wait_alert(&h, &format!("user_id={}", h.ids[1]), |a| {
        a["delivery_status"] == "delivered"
    })
    .await;
    assert_eq!(b["rule"], "second");
    assert_eq!(b["severity"], "critical");
    assert!(
        alerts(&h, &format!("user_id={}&rule=first", h.ids[1]))
            .await
            .is_empty(),
        "the old rule is gone"
    );
    h.app.shutdown().await;
}

/// Starts an `App` with the rules of `path` on `db` and waits until it is ready.
async fn start_app(sim: &Simulator, slack: &SlackReceiver, db: &Path, path: &Path) -> App {
    let agents = sim.agent_ids().await.unwrap().len();
    let app = App::start(config_with_rules(
        sim,
        slack,
        db,
        agents,
        path,
        Duration::ZERO,
    ))
    .await
    .unwrap();
    let base = format!("http://{}", app.api_addr());
    wait_for("app ready", DEADLINE, || async {
        let r = reqwest::get(format!("{base}/readyz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    app
}

/// Alert records of `user`, newest first, from the service at `app`.
async fn app_alerts(app: &App, user: &str) -> Vec<Value> {
    let body: Value = reqwest::get(format!(
        "http://{}/api/v1/alerts?limit=100&user_id={user}",
        app.api_addr()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    body["data"].as_array().cloned().unwrap_or_default()
}

/// 8b. A repeat that fell due while the service was down is sent once at restart (as
/// repeat 1, not a new first fire), then the cadence goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_due_during_downtime_is_sent_once_at_restart() {
    let sim = busy_sim(1).await;
    let user = sim.agent_ids().await.unwrap()[0].clone();
    let path = rules_file(
        r#"
[[rules]]
name = "not-responding"
threshold = "1s"
repeat_interval = "2s"
[rules.match]
routing_status = "NOT_RESPONDING"
"#,
    );
    let db = temp_db_path();
    let slack = SlackReceiver::start().await;
    let app = start_app(&sim, &slack, &db, &path).await;
    sim.set_routing_status(&user, "NOT_RESPONDING")
        .await
        .unwrap();
    wait_for("the first fire delivered", DEADLINE, || async {
        app_alerts(&app, &user)
            .await
            .into_iter()
            .find(|a| a["delivery_status"] == "delivered")
    })
    .await;
    app.shutdown().await;
    // Down for longer than two intervals.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarted = Instant::now();
    let app = start_app(&sim, &slack, &db, &path).await;
    let got = wait_for("two more messages", DEADLINE, || async {
        let got = requests_for(&slack, &user);
        (got.len() >= 3).then_some(got)
    })
    .await;
    let late = got[1].at.duration_since(restarted);
    assert!(
        late < Duration::from_secs(4),
        "the overdue repeat comes at restart: {late:?}"
    );
    let gap = got[2].at.duration_since(got[1].at);
    assert!(
        gap >= Duration::from_millis(1700) && gap <= Duration::from_millis(2800),
        "then one interval later: {gap:?}"
    );
    let rows = wait_for("three records", DEADLINE, || async {
        let rows = app_alerts(&app, &user).await;
        (rows.len() >= 3).then_some(rows)
    })
    .await;
    let mut repeats: Vec<u64> = rows
        .iter()
        .map(|a| a["repeat"].as_u64().unwrap_or(u64::MAX))
        .collect();
    repeats.sort_unstable();
    assert_eq!(&repeats[..3], &[0, 1, 2], "{rows:#?}");
    app.shutdown().await;
}

/// 8c. An episode whose state ended while the service was down resolves at restart with the
/// duration the agent really spent in the state (Genesys timestamps), not including the
/// downtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_that_ended_during_downtime_resolves_with_its_real_duration() {
    let sim = busy_sim(1).await;
    let user = sim.agent_ids().await.unwrap()[0].clone();
    let path = rules_file(
        r#"
[[rules]]
name = "not-responding"
threshold = "1s"
send_resolved = true
flap_tolerance = "1s"
[rules.match]
routing_status = "NOT_RESPONDING"
"#,
    );
    let db = temp_db_path();
    let slack = SlackReceiver::start().await;
    let app = start_app(&sim, &slack, &db, &path).await;
    sim.set_routing_status(&user, "NOT_RESPONDING")
        .await
        .unwrap();
    wait_for("the fire delivered", DEADLINE, || async {
        app_alerts(&app, &user)
            .await
            .into_iter()
            .find(|a| a["delivery_status"] == "delivered")
    })
    .await;
    app.shutdown().await;
    // The agent goes back to work while the service is down.
    sim.set_routing_status(&user, "INTERACTING").await.unwrap();
    let truth = sim.user(&user).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let app = start_app(&sim, &slack, &db, &path).await;
    let resolved = wait_for("the resolved record", DEADLINE, || async {
        app_alerts(&app, &user)
            .await
            .into_iter()
            .find(|a| a["kind"] == "resolved")
    })
    .await;
    let since = chrono::DateTime::parse_from_rfc3339(resolved["since"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let real = (truth.routing_start - since).num_milliseconds() as f64 / 1000.0;
    let total = resolved["resolved_duration_seconds"].as_u64().unwrap() as f64;
    assert!(
        (total - real).abs() <= 1.0,
        "resolved after {total}s in total, but the agent was NOT_RESPONDING for {real:.1}s \
         (from {since} to {}); the downtime is counted",
        truth.routing_start
    );
    app.shutdown().await;
}

/// 9b. A reload that keeps a rule keeps its running episodes: no second first-fire; a rule
/// added by the reload fires for an agent already in its state (since the Genesys start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_running_episodes_of_unchanged_rules() {
    let sim = busy_sim(1).await;
    let first = r#"
[[rules]]
name = "first"
threshold = "1s"
[rules.match]
routing_status = "IDLE"
"#;
    let (h, path) = start_with_rules(sim, first, Duration::ZERO).await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "INTERACTING").await;
    h.sim.set_routing_status(&user, "IDLE").await.unwrap();
    wait_alert(&h, &format!("user_id={user}&rule=first"), |a| {
        a["delivery_status"] == "delivered"
    })
    .await;
    std::fs::write(
        &path,
        format!(
            "{first}\n[[rules]]\nname = \"added\"\nthreshold = \"1s\"\n[rules.match]\nrouting_status = \"IDLE\"\n"
        ),
    )
    .unwrap();
    let outcome = ractor::call_t!(h.app.supervisor(), SupervisorMsg::ReloadRules, 5000).unwrap();
    assert!(outcome.applied, "{:#?}", outcome.problems);
    let added = wait_alert(&h, &format!("user_id={user}&rule=added"), |a| {
        a["delivery_status"] == "delivered"
    })
    .await;
    let first_row = alerts(&h, &format!("user_id={user}&rule=first")).await;
    assert_eq!(
        first_row.len(),
        1,
        "no second fire of the kept rule: {first_row:#?}"
    );
    assert_eq!(
        added["since"], first_row[0]["since"],
        "the added rule's episode starts at the Genesys start of IDLE"
    );
    assert_eq!(h.slack.received().len(), 2);
    h.app.shutdown().await;
}

/// A resolved message goes out only if a firing one was delivered: when Slack refused the
/// firing for good (dead letter), the episode's end is recorded as `dropped`, not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_resolved_message_without_a_delivered_firing() {
    let sim = busy_sim(1).await;
    let (h, _path) = start_with_rules(
        sim,
        r#"
[[rules]]
name = "not-responding"
threshold = "1s"
send_resolved = true
flap_tolerance = "1s"
[rules.match]
routing_status = "NOT_RESPONDING"
"#,
        Duration::ZERO,
    )
    .await;
    let user = h.ids[0].clone();
    // `invalid_payload` twice: the blocks and then the text-only retry are refused.
    h.slack.script((0..2).map(|_| crate::helpers::SlackReply {
        status: 400,
        retry_after: None,
        body: "invalid_payload".into(),
    }));
    h.sim
        .set_routing_status(&user, "NOT_RESPONDING")
        .await
        .unwrap();
    let failed = wait_alert(&h, &format!("user_id={user}"), |a| {
        a["kind"] == "firing" && a["delivery_status"] == "failed"
    })
    .await;
    assert_eq!(failed["delivery_error"], "invalid_payload");
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    let resolved = wait_alert(&h, &format!("user_id={user}"), |a| a["kind"] == "resolved").await;
    let resolved = wait_for("the resolved record's outcome", DEADLINE, || async {
        let a = alerts(&h, &format!("user_id={user}"))
            .await
            .into_iter()
            .find(|a| a["alert_key"] == resolved["alert_key"])?;
        (a["delivery_status"] != "pending").then_some(a)
    })
    .await;
    assert_eq!(resolved["delivery_status"], "dropped", "{resolved}");
    assert_eq!(
        h.slack.received().len(),
        2,
        "only the two refused attempts reached Slack"
    );
    h.app.shutdown().await;
}

/// 8d. A burst of transitions per agent (each opening or closing an `idle` episode) goes
/// through the persistence actor's coalescing of the `agents` and `episodes` rows: the
/// `agents` rows end on each agent's last state, a graceful shutdown right after a fire
/// commits the newest episode logs (not an older version from the burst), and after the
/// restart the firing episode resumes from its log: the next message is repeat 1, one repeat
/// interval after the first fire, not a second first fire at restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_burst_the_coalesced_rows_hold_the_last_state_and_the_episode_resumes() {
    let sim = busy_sim(3).await;
    let ids = sim.agent_ids().await.unwrap();
    let path = rules_file(
        r#"
[[rules]]
name = "not-responding"
threshold = "1s"
repeat_interval = "4s"
[rules.match]
routing_status = "NOT_RESPONDING"

[[rules]]
name = "idle"
threshold = "1h"
[rules.match]
routing_status = "IDLE"
"#,
    );
    let db = temp_db_path();
    let slack = SlackReceiver::start().await;
    let app = start_app(&sim, &slack, &db, &path).await;

    // The burst: 30 changes per agent as fast as the simulator sends them.
    for round in 0..30 {
        let status = if round % 2 == 0 {
            "IDLE"
        } else {
            "INTERACTING"
        };
        for id in &ids {
            sim.set_routing_status(id, status).await.unwrap();
        }
    }
    // Changes in quick succession get `startTime`s at least 1 ms apart, so the burst ran ahead
    // of the clock, and a start in the future is clamped to "now" by the rules: the firing
    // episode's start would then differ from the snapshot's after the restart (a new episode).
    // Begin the last states at an instant the clocks have passed.
    let mut burst_end = chrono::DateTime::<chrono::Utc>::MIN_UTC;
    for id in &ids {
        burst_end = burst_end.max(sim.user(id).await.unwrap().unwrap().routing_start);
    }
    let last_start = burst_end + chrono::Duration::milliseconds(100);
    wait_for("the clock past the burst", DEADLINE, || async {
        (sim.now().await.unwrap() > last_start + chrono::Duration::milliseconds(100)).then_some(())
    })
    .await;
    let last = [("NOT_RESPONDING", &ids[0]), ("IDLE", &ids[1])];
    for (status, id) in last {
        sim.set_routing_status_at(id, status, last_start)
            .await
            .unwrap();
    }
    let expected = |i: usize| ["NOT_RESPONDING", "IDLE", "INTERACTING"][i];
    let base = format!("http://{}", app.api_addr());
    wait_for("every agents row on its last state", DEADLINE, || async {
        let body: Value = reqwest::get(format!("{base}/api/v1/agents"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let rows = body["data"].as_array()?;
        ids.iter()
            .enumerate()
            .all(|(i, id)| {
                rows.iter()
                    .any(|r| r["user_id"] == id.as_str() && r["routing_status"] == expected(i))
            })
            .then_some(())
    })
    .await;
    let first = wait_for("the first fire", DEADLINE, || async {
        requests_for(&slack, &ids[0]).pop()
    })
    .await;
    // At once, before the state cadence is likely to have written the firing episode log.
    app.shutdown().await;

    let url = format!("sqlite://{}?mode=rwc", db.display());
    let conn = agent_monitor::db::connect(&url).await.unwrap();
    let agents = agent_monitor::db::agents(&conn).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let row = agents.iter().find(|a| &a.user_id == id).unwrap();
        assert_eq!(row.routing_status.as_deref(), Some(expected(i)), "{row:?}");
    }
    let logs = agent_monitor::db::alerting::load_episodes(&conn)
        .await
        .unwrap();
    let log = |i: usize| -> Value {
        let user = UserId::parse(&ids[i]).unwrap();
        serde_json::from_str(&logs[&user]).unwrap()
    };
    let firing = log(0);
    assert_eq!(
        firing["episodes"]["not-responding"]["phase"]["phase"], "firing",
        "{firing}"
    );
    assert_eq!(firing["episodes"]["not-responding"]["phase"]["repeats"], 0);
    // The `idle` episodes: the burst's versions alternate between matching (`ended` null) and
    // interrupted (`ended` set, within the flap tolerance, or gone once it passed); the
    // committed one must be the one after each agent's last change.
    let interrupted_or_gone = |log: &Value| {
        log["episodes"]
            .get("idle")
            .is_none_or(|e| !e["phase"]["ended"].is_null())
    };
    assert!(interrupted_or_gone(&firing), "{firing}");
    let idle = log(1);
    assert_eq!(
        idle["episodes"]["idle"]["phase"]["phase"], "pending",
        "{idle}"
    );
    assert!(
        idle["episodes"]["idle"]["phase"]["ended"].is_null(),
        "{idle}"
    );
    let busy = log(2);
    assert!(interrupted_or_gone(&busy), "{busy}");
    conn.close().await.unwrap();

    let app = start_app(&sim, &slack, &db, &path).await;
    let second = wait_for("the next message after the restart", DEADLINE, || async {
        let got = requests_for(&slack, &ids[0]);
        (got.len() >= 2).then(|| got[1].clone())
    })
    .await;
    let gap = second.at.duration_since(first.at);
    assert!(
        gap >= Duration::from_millis(3500) && gap <= Duration::from_millis(6000),
        "the repeat comes one interval (4 s) after the first fire: {gap:?} ({})",
        second.body
    );
    let rows = wait_for("two records", DEADLINE, || async {
        let rows = app_alerts(&app, &ids[0]).await;
        (rows.len() >= 2).then_some(rows)
    })
    .await;
    let mut repeats: Vec<u64> = rows
        .iter()
        .map(|a| a["repeat"].as_u64().unwrap_or(u64::MAX))
        .collect();
    repeats.sort_unstable();
    assert_eq!(repeats, vec![0, 1], "{rows:#?}");
    app.shutdown().await;
}

/// An alert suppressed by a silence shows why in `muted` (the silence's comment), and every
/// alert names the destination it was for (`default` without a `destination` key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silenced_alert_shows_the_silence_and_its_destination() {
    let sim = busy_sim(1).await;
    let rules = r#"
[[rules]]
name = "silenced-idle"
threshold = "1s"
[rules.match]
routing_status = "IDLE"
"#;
    let (h, _) = start_with_rules(sim, rules, Duration::ZERO).await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "INTERACTING").await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let created = h
        .http
        .post(format!("{}/api/v1/silences", h.base))
        .json(&serde_json::json!({
            "rule": "silenced-idle", "until": until, "comment": "planned maintenance"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    h.sim.set_routing_status(&user, "IDLE").await.unwrap();
    let alert = wait_alert(&h, &format!("rule=silenced-idle&user_id={user}"), |a| {
        a["delivery_status"] == "suppressed"
    })
    .await;
    assert_eq!(alert["muted"], "silenced: planned maintenance", "{alert}");
    assert_eq!(alert["destination"], "default", "{alert}");
    assert!(requests_for(&h.slack, &user).is_empty());
    h.app.shutdown().await;
}

/// One agent, a one-second `not-responding` rule, and a Slack receiver that answers the first
/// POST 429 with `Retry-After: retry_after` seconds; the agent is then made NOT_RESPONDING, so
/// its firing message is refused once and waits.
async fn not_responding_behind_a_429(retry_after: u64) -> Harness {
    not_responding_behind_a_429_with(retry_after, false).await
}

/// [`not_responding_behind_a_429`], the rule sending resolved messages when `send_resolved`
/// (an episode ends 1 s after the agent leaves NOT_RESPONDING: `flap_tolerance`).
async fn not_responding_behind_a_429_with(retry_after: u64, send_resolved: bool) -> Harness {
    let sim = busy_sim(1).await;
    let rules = format!(
        r#"
[[rules]]
name = "not-responding"
threshold = "1s"
severity = "critical"
send_resolved = {send_resolved}
flap_tolerance = "1s"
[rules.match]
routing_status = "NOT_RESPONDING"
"#
    );
    let (h, _) = start_with_rules(sim, &rules, Duration::ZERO).await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "INTERACTING").await;
    h.slack.script([crate::helpers::SlackReply {
        status: 429,
        retry_after: Some(retry_after),
        body: "rate_limited".into(),
    }]);
    h.sim
        .set_routing_status(&user, "NOT_RESPONDING")
        .await
        .unwrap();
    h
}

/// A silence created while a firing message waits for delivery (its destination paused by a
/// 429) drops that message: recorded `suppressed` with the silence's comment, never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_silence_drops_the_matching_messages_already_waiting_for_delivery() {
    // The first POST is answered 429 with a 3 s pause: the message waits in the queue.
    let h = not_responding_behind_a_429(3).await;
    wait_for("the first (refused) POST", DEADLINE, || async {
        (h.slack.received().len() == 1).then_some(())
    })
    .await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let response = h
        .http
        .post(format!("{}/api/v1/silences", h.base))
        .json(&serde_json::json!({"rule": "not-responding", "until": until, "comment": "coaching"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let alert = wait_alert(&h, "rule=not-responding", |a| {
        a["delivery_status"] == "suppressed"
    })
    .await;
    assert_eq!(alert["muted"], "silenced: coaching", "{alert}");
    // Past the pause: still only the refused POST.
    crate::helpers::wait_a_while(Duration::from_secs(4)).await;
    assert_eq!(h.slack.received().len(), 1);
    let records = alerts(&h, "rule=not-responding").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["delivery_status"], "suppressed");
    h.app.shutdown().await;
}

/// A silence created while both messages of an episode wait behind a 429 (the firing one, and
/// the resolved one queued after it because the firing one was not delivered yet) drops both:
/// Slack is never told of the end of an episode it was never told of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_silence_drops_the_waiting_resolved_message_too() {
    let h = not_responding_behind_a_429_with(6, true).await;
    let user = h.ids[0].clone();
    wait_for("the first (refused) POST", DEADLINE, || async {
        (h.slack.received().len() == 1).then_some(())
    })
    .await;
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    wait_alert(&h, "rule=not-responding", |a| {
        a["kind"] == "resolved" && a["delivery_status"] == "pending"
    })
    .await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let response = h
        .http
        .post(format!("{}/api/v1/silences", h.base))
        .json(&serde_json::json!({"rule": "not-responding", "until": until, "comment": "coaching"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // The resolved message is silenced; the firing one had already given way to it when the
    // episode ended (dropped: "episode ended before delivery").
    wait_alert(&h, "rule=not-responding", |a| {
        a["kind"] == "resolved" && a["delivery_status"] == "suppressed"
    })
    .await;
    let firing = wait_alert(&h, "rule=not-responding", |a| a["kind"] == "firing").await;
    assert!(
        firing["delivery_status"] == "dropped" || firing["delivery_status"] == "suppressed",
        "{firing}"
    );
    // Past the pause: still only the refused POST.
    crate::helpers::wait_a_while(Duration::from_secs(7)).await;
    assert_eq!(h.slack.received().len(), 1, "{:?}", h.slack.received());
    h.app.shutdown().await;
}

/// A message being retried shows its real attempt count (and the last failure) in
/// `/api/v1/alerts` while it is still pending, not `attempts: 0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_being_retried_shows_its_attempts_in_the_alerts_api() {
    // The first POST is answered 429 with a 4 s pause: the message waits for its retry.
    let h = not_responding_behind_a_429(4).await;
    let waiting = wait_alert(&h, "rule=not-responding", |a| {
        a["delivery_status"] == "pending" && a["attempts"] == 1
    })
    .await;
    assert_eq!(waiting["delivery_error"], "rate_limited", "{waiting}");
    assert_eq!(h.slack.received().len(), 1, "still waiting for its retry");
    let delivered = wait_alert(&h, "rule=not-responding", |a| {
        a["delivery_status"] == "delivered"
    })
    .await;
    assert_eq!(delivered["attempts"], 2, "{delivered}");
    assert_eq!(delivered["delivery_error"], Value::Null, "{delivered}");
    h.app.shutdown().await;
}

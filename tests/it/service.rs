//! End-to-end tests of the first release: the real service (actors, REST API, SQLite file)
//! against the simulator over loopback HTTP and WebSocket, with a local Slack receiver.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_monitor::app::App;
use agent_monitor::config::{
    AccessConfig, Config, Credentials, DeliveryConfig, DestinationConfig, GenesysConfig,
    GenesysEndpoints, LogFormat, PersistenceConfig,
};
use agent_monitor::secret::Secret;
use agent_monitor::sim::{SimConfig, Simulator};
use chrono::Utc;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;

use crate::helpers::{SlackReceiver, init, wait_for};

/// Generous: debug builds on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(20);

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// `agent-monitor run` in its own process against `sim`: a cleared environment with the
/// simulator's API and login URLs and client credentials, the SQLite file `db` and
/// `LISTEN_ADDR=127.0.0.1:port`. Add variables, stdio and `spawn`/`output` to it.
pub fn run_on_sim(sim: &Simulator, db: &std::path::Path, port: u16) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agent-monitor"));
    command
        .arg("run")
        .env_clear()
        .env("GENESYS_API_URL", sim.base_url())
        .env("GENESYS_LOGIN_URL", sim.base_url())
        .env("GENESYS_CLIENT_ID", sim.client_id())
        .env("GENESYS_CLIENT_SECRET", sim.client_secret())
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"));
    command
}

/// A fresh SQLite file path under the system temp dir.
pub fn temp_db_path() -> PathBuf {
    let dir = std::env::temp_dir().join("agent-monitor-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!(
        "t-{}-{}-{}.db",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed),
        Utc::now().timestamp_micros()
    ))
}

/// Knobs of one test service.
pub struct Opts {
    pub agents: usize,
    pub idle_threshold: Duration,
    pub ping_interval: Duration,
    pub silence_timeout: Duration,
    pub persistence: PersistenceConfig,
    pub topics_per_channel: usize,
    /// Scope, re-listing interval and backfill margin.
    pub membership: agent_monitor::config::MembershipConfig,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            agents: 3,
            idle_threshold: Duration::from_secs(3600),
            ping_interval: Duration::from_secs(20),
            silence_timeout: Duration::from_secs(60),
            persistence: PersistenceConfig {
                flush_interval: Duration::from_millis(20),
                ..PersistenceConfig::default()
            },
            topics_per_channel: 1000,
            membership: agent_monitor::config::MembershipConfig::default(),
        }
    }
}

/// The simulator with autopilot off (every agent ON_QUEUE and IDLE as of its start).
pub async fn start_sim(agents: usize) -> Simulator {
    init();
    let cfg = SimConfig {
        agents,
        autopilot: false,
        heartbeat_interval: Duration::from_secs(1),
        socket_closing_grace: Duration::from_secs(5),
        ..SimConfig::default()
    };
    Simulator::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .unwrap()
}

/// Starts the whole service on `sim`, `slack` and the SQLite file `db`, and waits until
/// `/readyz` answers 200. Returns the app and its API base URL (`http://127.0.0.1:<port>`).
pub async fn start_ready(
    sim: &Simulator,
    slack: &SlackReceiver,
    db: &std::path::Path,
    opts: &Opts,
) -> (agent_monitor::app::App, String) {
    let app = agent_monitor::app::App::start(config_for(sim, slack, db, opts))
        .await
        .unwrap();
    let base = format!("http://{}", app.api_addr());
    crate::helpers::wait_for("the service ready", DEADLINE, || async {
        let r = reqwest::get(format!("{base}/readyz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    (app, base)
}

/// One agent's routing history (newest first, up to 100 rows) from the API at `base`, or
/// `None` while the API does not answer.
pub async fn routing_history(base: &str, user: &str) -> Option<Vec<Value>> {
    let body: Value = reqwest::get(format!(
        "{base}/api/v1/agent-status/history?user_id={user}&kind=routing&limit=100"
    ))
    .await
    .ok()?
    .json()
    .await
    .ok()?;
    body["data"].as_array().cloned()
}

/// Waits until `/readyz` at `base` reports a finished start backfill, and returns that run.
pub async fn wait_start_backfill(base: &str) -> Value {
    crate::helpers::wait_for("the start backfill", DEADLINE, || async {
        let body: Value = reqwest::get(format!("{base}/readyz"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let run = body["last_backfill"].clone();
        (run["trigger"] == "start").then_some(run)
    })
    .await
}

/// The configuration pointing the service at `sim` and `slack`.
pub fn config_for(
    sim: &Simulator,
    slack: &SlackReceiver,
    db: &std::path::Path,
    opts: &Opts,
) -> Config {
    let base = url::Url::parse(&sim.base_url()).unwrap();
    Config {
        genesys: GenesysConfig {
            endpoints: GenesysEndpoints {
                api_base: base.clone(),
                login_base: base,
                region: None,
            },
            credentials: Credentials {
                client_id: sim.client_id().to_string(),
                client_secret: Secret::new(sim.client_secret()),
            },
            ping_interval: opts.ping_interval,
            silence_timeout: opts.silence_timeout,
            topics_per_channel: opts.topics_per_channel,
            request_timeout: Duration::from_secs(5),
            rate_limit_per_minute: agent_monitor::config::DEFAULT_GENESYS_RATE_LIMIT,
        },
        membership: opts.membership.clone(),
        delivery: DeliveryConfig {
            destinations: vec![DestinationConfig::slack(
                "default",
                Secret::new(slack.url.clone()),
            )],
            timeout: Duration::from_secs(2),
            max_attempts: 3,
            group_wait: Duration::ZERO,
            ..DeliveryConfig::default()
        },
        database_url: Secret::new(format!("sqlite://{}?mode=rwc", db.display())),
        idle_threshold: opts.idle_threshold,
        rules: std::sync::Arc::new(agent_monitor::rules::RuleSet::builtin_idle(
            opts.idle_threshold,
        )),
        rules_path: None,
        listen_addr: ([127, 0, 0, 1], 0).into(),
        persistence: opts.persistence,
        shutdown_grace: Duration::from_secs(10),
        max_report_window: agent_monitor::api::DEFAULT_MAX_WINDOW,
        access: AccessConfig::default(),
        retention: None,
        log_format: LogFormat::Text,
    }
}

/// The service, its simulator and Slack receiver.
pub struct Harness {
    pub sim: Simulator,
    pub slack: SlackReceiver,
    pub app: App,
    pub base: String,
    pub http: reqwest::Client,
    pub ids: Vec<String>,
}

impl Harness {
    /// Starts the service on an already prepared simulator and waits until it is ready.
    pub async fn start_on(sim: Simulator, opts: Opts) -> Harness {
        let slack = SlackReceiver::start().await;
        let app = App::start(config_for(&sim, &slack, &temp_db_path(), &opts))
            .await
            .unwrap();
        let base = format!("http://{}", app.api_addr());
        let ids = sim.agent_ids().await.unwrap();
        let h = Harness {
            sim,
            slack,
            app,
            base,
            http: reqwest::Client::new(),
            ids,
        };
        h.wait_ready().await;
        h
    }

    pub async fn start(opts: Opts) -> Harness {
        let sim = start_sim(opts.agents).await;
        Harness::start_on(sim, opts).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn wait_ready(&self) -> Value {
        wait_for("readyz 200", DEADLINE, || async {
            let (status, body) = self.get("/readyz").await;
            (status == 200).then_some(body)
        })
        .await
    }

    /// History rows of one user and kind, newest first.
    pub async fn history(&self, user: &str, kind: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!(
                "/api/v1/agent-status/history?user_id={user}&kind={kind}&limit=100"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the newest `kind` row of `user` has `state`.
    pub async fn wait_state(&self, user: &str, kind: &str, state: &str) -> Value {
        wait_for(
            &format!("{user} {kind} {state} in history"),
            DEADLINE,
            || async {
                let rows = self.history(user, kind).await;
                rows.into_iter().find(|r| r["state"] == state)
            },
        )
        .await
    }

    /// Slack requests that mention `user`.
    pub fn alerts_for(&self, user: &str) -> Vec<Value> {
        self.slack
            .received()
            .into_iter()
            .map(|r| r.body)
            .filter(|b| b.to_string().contains(user))
            .collect()
    }

    pub async fn sql_count(&self, sql: &str) -> i64 {
        let db = self.app.db();
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                sql.to_string(),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    pub async fn connection(&self, index: usize) -> Value {
        let (_, body) = self.get("/readyz").await;
        body["connections"][index].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_reach_rows_and_the_history_api() {
    let h = Harness::start(Opts {
        agents: 2,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    // The snapshot taken after subscribing is stored with source = bootstrap.
    h.wait_state(&user, "routing", "IDLE").await;
    h.wait_state(&user, "presence", "ON_QUEUE").await;
    let bootstrap = h
        .sql_count(&format!(
            "SELECT COUNT(*) FROM agent_status WHERE user_id = '{user}' AND source = 'bootstrap'"
        ))
        .await;
    assert_eq!(bootstrap, 2);
    // Routing IDLE is idle: `idle_since` is Genesys's routing startTime.
    let idle_start = h.sim.user(&user).await.unwrap().unwrap().routing_start;
    wait_for("idle_since in /api/v1/agents", DEADLINE, || async {
        let (_, agents) = h.get("/api/v1/agents").await;
        let me = agents["data"]
            .as_array()?
            .iter()
            .find(|a| a["user_id"] == user.as_str())?
            .clone();
        (me["idle_since"] == idle_start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .then_some(())
    })
    .await;

    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    let row = h.wait_state(&user, "routing", "INTERACTING").await;
    let truth = h.sim.user(&user).await.unwrap().unwrap();
    assert_eq!(row["previous_state"], "IDLE");
    assert_eq!(row["user_id"], user.as_str());
    assert_eq!(row["kind"], "routing");
    assert_eq!(
        row["event_timestamp"],
        truth
            .routing_start
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "Genesys's own timestamp is stored"
    );
    let stream = h
        .sql_count(&format!(
            "SELECT COUNT(*) FROM agent_status WHERE user_id = '{user}' AND source = 'stream'"
        ))
        .await;
    assert_eq!(stream, 1);

    // An org presence is stored with its label.
    h.sim
        .set_presence(&user, agent_monitor::sim::LUNCH_ID)
        .await
        .unwrap();
    let lunch = h.wait_state(&user, "presence", "MEAL").await;
    assert_eq!(lunch["org_presence"], "Lunch");
    assert_eq!(lunch["previous_state"], "ON_QUEUE");

    // The `agents` row is written on the persistence actor's state cadence (up to 1 s after
    // the history row): wait for the presence change to reach it.
    let me = wait_for("MEAL in /api/v1/agents", DEADLINE, || async {
        let (status, agents) = h.get("/api/v1/agents").await;
        assert_eq!(status, 200);
        agents["data"]
            .as_array()?
            .iter()
            .find(|a| a["user_id"] == user.as_str() && a["presence"] == "MEAL")
            .cloned()
    })
    .await;
    assert_eq!(me["routing_status"], "INTERACTING");
    assert!(
        me["idle_since"].is_null(),
        "not idle while interacting: {me}"
    );
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_alert_reaches_slack_with_blocks_and_not_before_the_threshold() {
    let sim = start_sim(2).await;
    let ids = sim.agent_ids().await.unwrap();
    for id in &ids {
        sim.set_routing_status(id, "INTERACTING").await.unwrap();
    }
    let threshold = Duration::from_secs(2);
    let h = Harness::start_on(
        sim,
        Opts {
            agents: 2,
            idle_threshold: threshold,
            ..Opts::default()
        },
    )
    .await;
    let (stays_idle, resumes) = (h.ids[0].clone(), h.ids[1].clone());
    h.wait_state(&stays_idle, "routing", "INTERACTING").await;

    let went_idle = Instant::now();
    h.sim.set_routing_status(&stays_idle, "IDLE").await.unwrap();
    h.sim.set_routing_status(&resumes, "IDLE").await.unwrap();
    h.wait_state(&resumes, "routing", "IDLE").await;
    h.sim
        .set_routing_status(&resumes, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&resumes, "routing", "INTERACTING").await;

    let alert = wait_for("idle alert in Slack", DEADLINE, || async {
        h.alerts_for(&stays_idle).pop()
    })
    .await;
    assert!(
        went_idle.elapsed() >= threshold - Duration::from_millis(150),
        "alerted before the threshold"
    );
    assert!(
        alert["text"].as_str().unwrap().len() > 10,
        "a useful fallback text: {alert}"
    );
    let blocks = alert["blocks"].as_array().expect("Block Kit blocks");
    assert_eq!(blocks[0]["type"], "header");
    let section = blocks
        .iter()
        .find(|b| b["type"] == "section")
        .expect("a section");
    let fields = section["fields"].to_string();
    assert!(
        fields.contains(&stays_idle),
        "user id in the fields: {fields}"
    );
    assert!(fields.contains("IDLE"), "state in the fields: {fields}");

    // The agent who went back to work before the threshold is never alerted; its deadline
    // passed before the other agent's alert was sent.
    assert!(
        h.alerts_for(&resumes).is_empty(),
        "no alert for an episode that ended early"
    );
    // One alert per episode.
    let recorded = wait_for("alert delivered in /api/v1/alerts", DEADLINE, || async {
        let (_, alerts) = h.get("/api/v1/alerts").await;
        let rows = alerts["data"].as_array().cloned().unwrap_or_default();
        rows.into_iter()
            .find(|a| a["user_id"] == stays_idle.as_str() && a["delivery_status"] == "delivered")
    })
    .await;
    assert_eq!(recorded["rule"], "idle");
    let (_, alerts) = h.get("/api/v1/alerts").await;
    assert_eq!(alerts["total"], 1, "{alerts}");
    assert_eq!(h.alerts_for(&stays_idle).len(), 1);
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_already_idle_at_start_is_alerted_at_once() {
    let sim = start_sim(2).await;
    let ids = sim.agent_ids().await.unwrap();
    sim.set_routing_status_at(&ids[0], "IDLE", Utc::now() - chrono::Duration::minutes(20))
        .await
        .unwrap();
    sim.set_routing_status(&ids[1], "INTERACTING")
        .await
        .unwrap();
    let started = Instant::now();
    let h = Harness::start_on(
        sim,
        Opts {
            agents: 2,
            idle_threshold: Duration::from_secs(15 * 60),
            ..Opts::default()
        },
    )
    .await;
    let alert = wait_for("alert for the agent idle 20 minutes", DEADLINE, || async {
        h.alerts_for(&h.ids[0]).pop()
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "alerted at once, not after 15 minutes"
    );
    assert!(
        alert.to_string().contains("20m"),
        "idle for 20 minutes: {alert}"
    );
    assert!(h.alerts_for(&h.ids[1]).is_empty());
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_are_stored_once() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "IDLE").await;
    h.sim.duplicate_deliveries(true).await.unwrap();
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    h.sim.set_presence(&user, "BREAK").await.unwrap();
    // The second change is delivered after both copies of the first.
    h.sim.set_routing_status(&user, "OFF_QUEUE").await.unwrap();
    h.wait_state(&user, "routing", "OFF_QUEUE").await;
    h.wait_state(&user, "presence", "BREAK").await;
    let rows = h
        .sql_count(&format!(
            "SELECT COUNT(*) FROM agent_status WHERE user_id = '{user}'"
        ))
        .await;
    // bootstrap presence + routing, then INTERACTING, BREAK, OFF_QUEUE once each.
    assert_eq!(rows, 5);
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_order_event_is_stored_but_does_not_change_the_current_state() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&user, "routing", "INTERACTING").await;
    let older = Utc::now() - chrono::Duration::seconds(30);
    h.sim
        .inject_routing_event(&user, "NOT_RESPONDING", older)
        .await
        .unwrap();
    let stale = h.wait_state(&user, "routing", "NOT_RESPONDING").await;
    assert!(
        stale["previous_state"].is_null(),
        "no previous state for an out-of-order event: {stale}"
    );
    // Newest first is by Genesys's timestamp: the stale row sorts below INTERACTING.
    let rows = h.history(&user, "routing").await;
    assert_eq!(rows[0]["state"], "INTERACTING");
    h.sim.set_presence(&user, "BREAK").await.unwrap();
    h.wait_state(&user, "presence", "BREAK").await;
    let agent = wait_for("agents row updated", DEADLINE, || async {
        let (_, agents) = h.get("/api/v1/agents").await;
        agents["data"].as_array().and_then(|a| {
            a.iter()
                .find(|a| a["user_id"] == user.as_str() && a["presence"] == "BREAK")
                .cloned()
        })
    })
    .await;
    assert_eq!(agent["routing_status"], "INTERACTING");
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_counted_and_the_stream_goes_on() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    for junk in [
        "{not json",
        r#"{"topicName":"v2.users.x.routingStatus","eventBody":{"id":"x"}}"#,
        r#"{"topicName":"v2.users.x.routingStatus","eventBody":{"id":"x","routingStatus":{"status":"IDLE","startTime":"2024-05-01T10:00:00"}}}"#,
    ] {
        h.sim.send_raw_frame(junk).await.unwrap();
    }
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&user, "routing", "INTERACTING").await;
    let conn = wait_for("malformed count", DEADLINE, || async {
        let c = h.connection(0).await;
        (c["malformed_messages"].as_u64() == Some(3)).then_some(c)
    })
    .await;
    assert_eq!(conn["connected"], true);
    assert_eq!(conn["reconnects"], 0);
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_past_the_timeout_leads_to_a_reconnect() {
    let h = Harness::start(Opts {
        agents: 1,
        ping_interval: Duration::from_millis(300),
        silence_timeout: Duration::from_millis(1200),
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.sim.set_silent(true).await.unwrap();
    wait_for("a second socket after the silence", DEADLINE, || async {
        let channels = h.sim.channels().await.unwrap();
        (channels.iter().map(|c| c.socket_connects).sum::<u64>() >= 2).then_some(())
    })
    .await;
    h.sim.set_silent(false).await.unwrap();
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&user, "routing", "INTERACTING").await;
    let conn = h.connection(0).await;
    assert!(conn["reconnects"].as_u64().unwrap() >= 1, "{conn}");
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_closing_leads_to_a_new_socket_and_no_lost_event() {
    let h = Harness::start(Opts {
        agents: 2,
        ..Opts::default()
    })
    .await;
    let (a, b) = (h.ids[0].clone(), h.ids[1].clone());
    let channel_before = h.sim.channels().await.unwrap()[0].clone();
    h.sim.send_socket_closing().await.unwrap();
    // An event right in the hand-over, and one after it.
    h.sim.set_routing_status(&a, "INTERACTING").await.unwrap();
    wait_for("the new socket on the same channel", DEADLINE, || async {
        let channels = h.sim.channels().await.unwrap();
        let c = channels.iter().find(|c| c.id == channel_before.id)?;
        (c.socket_connects >= 2 && c.connected_sockets == 1).then_some(())
    })
    .await;
    h.sim.set_routing_status(&b, "INTERACTING").await.unwrap();
    h.wait_state(&a, "routing", "INTERACTING").await;
    h.wait_state(&b, "routing", "INTERACTING").await;
    let channels = h.sim.channels().await.unwrap();
    assert_eq!(channels.len(), 1, "same channel, no new one");
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_leads_to_a_renewed_token() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    let tokens_before = h.sim.token_requests().await.unwrap();
    h.sim.revoke_tokens().await.unwrap();
    // The reconnect checks the channel with HEAD, which now answers 401.
    h.sim.drop_sockets().await.unwrap();
    wait_for("a renewed token", DEADLINE, || async {
        (h.sim.token_requests().await.unwrap() > tokens_before).then_some(())
    })
    .await;
    h.wait_ready().await;
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&user, "routing", "INTERACTING").await;
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_the_retry_after() {
    let sim = start_sim(1).await;
    sim.fail_next("GET", "/api/v2/users", 429, Some(2), 1)
        .await
        .unwrap();
    let started = Instant::now();
    let h = Harness::start_on(
        sim,
        Opts {
            agents: 1,
            ..Opts::default()
        },
    )
    .await;
    assert!(
        h.sim.request_count("GET", "/api/v2/users").await.unwrap() >= 2,
        "retried after the 429"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited the Retry-After of 2 s"
    );
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thousand_and_one_users_use_two_channels() {
    let h = Harness::start(Opts {
        agents: 1001,
        ..Opts::default()
    })
    .await;
    let channels = h.sim.channels().await.unwrap();
    let mut topics: Vec<usize> = channels.iter().map(|c| c.topics).collect();
    topics.sort();
    assert_eq!(topics, vec![1, 1000]);
    assert!(channels.iter().all(|c| c.connected_sockets == 1));
    let (_, ready) = h.get("/readyz").await;
    assert_eq!(ready["connections"].as_array().unwrap().len(), 2);
    let last = h.ids.last().unwrap().clone();
    h.sim
        .set_routing_status(&last, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&last, "routing", "INTERACTING").await;
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_report_window_limit_is_enforced() {
    let sim = start_sim(1).await;
    let slack = SlackReceiver::start().await;
    let mut config = config_for(
        &sim,
        &slack,
        &temp_db_path(),
        &Opts {
            agents: 1,
            ..Opts::default()
        },
    );
    config.max_report_window = Duration::from_secs(86_400);
    let app = App::start(config).await.unwrap();
    let base = format!("http://{}", app.api_addr());
    let user = sim.agent_ids().await.unwrap()[0].clone();
    let http = reqwest::Client::new();
    let get = |from: &str, to: &str| {
        let url = format!("{base}/api/v1/agents/{user}/timeline?from={from}&to={to}");
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = get("2024-05-01T00:00:00Z", "2024-05-03T00:00:00Z").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("window"), "{body}");
    let (status, body) = get("2024-05-01T00:00:00Z", "2024-05-01T12:00:00Z").await;
    assert_eq!(status, 200, "{body}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_answer_404_with_an_error_body() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    for path in ["/", "/api/v1/nope", "/api/v2/users"] {
        let resp = h
            .http
            .get(format!("{}{path}", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("/docs"),
            "{path}: {body}"
        );
    }
    h.app.shutdown().await;
}

/// 414 (a query string over the limit) and 405 (a known
/// path with a method it does not have) answer in the API's error format, as 404 does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_long_uris_and_wrong_methods_answer_with_an_error_body() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let check = |what: String, resp: reqwest::Response, status: u16| async move {
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{what}: content-type {content_type:?}"
        );
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
    };
    let url = format!("{}/api/v1/agents?user_id={}", h.base, "a".repeat(20_000));
    let resp = h.http.get(url).send().await.unwrap();
    check("a query of 20,000 bytes".into(), resp, 414).await;
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/v1/agents"),
        (reqwest::Method::POST, "/api/v1/alerts"),
        (reqwest::Method::PUT, "/api/v1/silences"),
        (reqwest::Method::POST, "/healthz"),
        (reqwest::Method::POST, "/docs"),
        (reqwest::Method::DELETE, "/openapi.json"),
        (reqwest::Method::PUT, "/openapi.yaml"),
    ] {
        let resp = h
            .http
            .request(method.clone(), format!("{}{path}", h.base))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        check(format!("{method} {path}"), resp, 405).await;
    }
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/v1/silences/%C3"),
        (reqwest::Method::GET, "/api/v1/agents/%C3/timeline"),
    ] {
        let resp = h
            .http
            .request(method.clone(), format!("{}{path}", h.base))
            .send()
            .await
            .unwrap();
        check(format!("{method} {path} (not UTF-8)"), resp, 400).await;
    }
    h.app.shutdown().await;
}

/// A query parameter given twice is refused with 400 naming it, instead of the first value
/// being used silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_parameter_given_twice_answers_400_naming_it() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    for (path, name) in [
        ("/api/v1/alerts?limit=10&limit=100", "limit"),
        (
            "/api/v1/agent-status/history?kind=routing&limit=5&kind=presence",
            "kind",
        ),
        ("/api/v1/agents?format=csv&f%6Frmat=json", "format"),
    ] {
        let (status, body) = h.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(&format!("`{name}`")), "{path}: {body}");
    }
    // Each given once: fine.
    let (status, body) = h.get("/api/v1/alerts?limit=10&offset=0").await;
    assert_eq!(status, 200, "{body}");
    h.app.shutdown().await;
}

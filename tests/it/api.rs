//! The REST API served over loopback HTTP, on a real SQLite file, with rows written through
//! the real persistence actor.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_monitor::actors::persistence::{PersistMsg, PersistenceActor, PersistenceArgs};
use agent_monitor::api::{ApiState, ReadinessFn, routes, spec_yaml};
use agent_monitor::config::PersistenceConfig;
use agent_monitor::db;
use agent_monitor::domain::{
    AgentCurrent, Alert, AlertOutcome, DeliveryStatus, Kind, Source, Transition, UserId,
    parse_timestamp,
};
use agent_monitor::health::{ActorStatus, ConnectionStatus, HealthReport, RejectedTopic};
use poem::Server;
use poem::listener::{Acceptor, Listener, TcpListener};
use ractor::{Actor, ActorRef, call_t, cast};
use serde_json::{Value, json};

static NEXT_APP: AtomicU64 = AtomicU64::new(0);

/// What `/readyz` will be told by the fake supervisor.
type ReadinessSlot = Arc<Mutex<Option<HealthReport>>>;

struct TestApp {
    base: String,
    client: reqwest::Client,
    persistence: ActorRef<PersistMsg>,
    readiness: ReadinessSlot,
    dir: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl TestApp {
    async fn spawn() -> TestApp {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!(
            "agent-monitor-it-api-{}-{}",
            std::process::id(),
            NEXT_APP.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("sqlite://{}", dir.join("monitor.db").display());
        let db = db::connect(&url).await.expect("connect");

        let config = PersistenceConfig {
            batch_rows: 500,
            flush_interval: Duration::from_millis(20),
            max_in_flight: 1000,
        };
        let (persistence, _) = Actor::spawn(
            None,
            PersistenceActor,
            PersistenceArgs {
                db: db.clone(),
                config,
            },
        )
        .await
        .expect("spawn persistence");

        let slot: ReadinessSlot = Arc::new(Mutex::new(None));
        let answer = slot.clone();
        let readiness: ReadinessFn = Arc::new(move || {
            let report = answer.lock().unwrap().clone();
            Box::pin(async move { report })
        });

        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind");
        let addr: SocketAddr = *acceptor.local_addr()[0]
            .as_socket_addr()
            .expect("tcp address");
        let endpoint = routes(ApiState {
            db,
            readiness,
            limits: Default::default(),
            alerting: Default::default(),
        });
        let server = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(endpoint).await;
        });

        TestApp {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            persistence,
            readiness: slot,
            dir,
            server,
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path} answered non-JSON ({e}): {body}"));
        (status, json)
    }

    async fn get_text(&self, path: &str) -> (u16, String, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, response.text().await.unwrap())
    }

    /// Sends the messages to the persistence actor and waits for their commit.
    async fn persist(&self, messages: Vec<PersistMsg>) {
        for message in messages {
            cast!(self.persistence, message).unwrap();
        }
        let flushed: Result<(), String> =
            call_t!(self.persistence, PersistMsg::Flush, 10_000).unwrap();
        flushed.expect("flush");
    }

    async fn stop(self) {
        self.server.abort();
        self.persistence.stop_and_wait(None, None).await.unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ts(s: &str) -> chrono::DateTime<chrono::Utc> {
    parse_timestamp(s).unwrap()
}

fn transition(user: &str, kind: Kind, state: &str, at: &str) -> PersistMsg {
    PersistMsg::Transition(
        Transition {
            user_id: UserId::parse(user).unwrap(),
            user_name: Some(format!("Agent {user}")),
            kind,
            state: state.into(),
            previous_state: None,
            org_presence: (kind == Kind::Presence).then(|| "Available".to_owned()),
            presence_definition_id: (kind == Kind::Presence)
                .then(|| "6a3af858-942f-489d-9700-5f9bcdcdae9b".to_owned()),
            event_timestamp: ts(at),
            ingested_at: ts("2024-05-01T12:00:00.000Z"),
            source: Source::Stream,
        },
        None,
    )
}

fn event_timestamps(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_timestamp"].as_str().unwrap().to_owned())
        .collect()
}

async fn seed_history(app: &TestApp) {
    app.persist(vec![
        transition("u1", Kind::Routing, "IDLE", "2024-05-01T10:00:00.100Z"),
        transition("u1", Kind::Routing, "INTERACTING", "2024-05-01T10:00:05Z"),
        transition("u1", Kind::Presence, "ON_QUEUE", "2024-05-01T09:59:59.999Z"),
        transition("u2", Kind::Routing, "IDLE", "2024-05-01T10:00:01.5Z"),
        transition(
            "u2",
            Kind::Presence,
            "AVAILABLE",
            "2024-05-01T10:00:00.100Z",
        ),
        // Sub-millisecond digits are dropped.
        transition(
            "u3",
            Kind::Routing,
            "OFF_QUEUE",
            "2024-05-01T10:00:10.123456Z",
        ),
        // A duplicate delivery stores nothing.
        transition("u1", Kind::Routing, "IDLE", "2024-05-01T10:00:00.100Z"),
    ])
    .await;
}

#[tokio::test]
async fn history_is_newest_first_filtered_and_paged() {
    let app = TestApp::spawn().await;
    seed_history(&app).await;

    let (status, body) = app.get("/api/v1/agent-status/history", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 6);
    assert_eq!(
        event_timestamps(&body),
        [
            "2024-05-01T10:00:10.123Z",
            "2024-05-01T10:00:05.000Z",
            "2024-05-01T10:00:01.500Z",
            "2024-05-01T10:00:00.100Z",
            "2024-05-01T10:00:00.100Z",
            "2024-05-01T09:59:59.999Z",
        ]
    );
    // Equal timestamps: the later insert (higher id) first.
    let rows = body["data"].as_array().unwrap();
    assert!(rows[3]["id"].as_i64() > rows[4]["id"].as_i64());
    let first = &rows[0];
    for field in [
        "id",
        "user_id",
        "user_name",
        "kind",
        "state",
        "previous_state",
        "org_presence",
        "presence_definition_id",
        "event_timestamp",
        "ingested_at",
    ] {
        assert!(first.get(field).is_some(), "missing {field}: {first}");
    }
    assert_eq!(first["user_id"], "u3");
    assert_eq!(first["kind"], "routing");
    assert_eq!(first["ingested_at"], "2024-05-01T12:00:00.000Z");

    let (_, by_user) = app
        .get("/api/v1/agent-status/history", &[("user_id", "U1")])
        .await;
    assert_eq!(by_user["total"], 3);
    assert!(
        by_user["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["user_id"] == "u1")
    );

    let (_, by_state) = app
        .get("/api/v1/agent-status/history", &[("state", "idle")])
        .await;
    assert_eq!(by_state["total"], 2);
    assert_eq!(
        event_timestamps(&by_state),
        ["2024-05-01T10:00:01.500Z", "2024-05-01T10:00:00.100Z"]
    );

    let (_, presence) = app
        .get("/api/v1/agent-status/history", &[("kind", "Presence")])
        .await;
    assert_eq!(presence["total"], 2);
    assert_eq!(presence["data"][0]["org_presence"], "Available");
    assert_eq!(
        presence["data"][0]["presence_definition_id"],
        "6a3af858-942f-489d-9700-5f9bcdcdae9b"
    );

    let (_, combined) = app
        .get(
            "/api/v1/agent-status/history",
            &[("user_id", "u1"), ("kind", "routing"), ("state", "IDLE")],
        )
        .await;
    assert_eq!(combined["total"], 1);

    let (_, page) = app
        .get(
            "/api/v1/agent-status/history",
            &[("limit", "2"), ("offset", "1")],
        )
        .await;
    assert_eq!(page["total"], 6);
    assert_eq!(
        event_timestamps(&page),
        ["2024-05-01T10:00:05.000Z", "2024-05-01T10:00:01.500Z"]
    );
    let (_, past_end) = app
        .get("/api/v1/agent-status/history", &[("offset", "100")])
        .await;
    assert_eq!(past_end["total"], 6);
    assert_eq!(past_end["data"], json!([]));

    app.stop().await;
}

#[tokio::test]
async fn invalid_parameters_answer_400_naming_the_parameter() {
    let app = TestApp::spawn().await;
    let history = "/api/v1/agent-status/history";
    // (path, query, text the error must contain)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            history,
            &[("limit", "500")],
            "limit must be between 1 and 100, got 500",
        ),
        (
            history,
            &[("limit", "0")],
            "limit must be between 1 and 100, got 0",
        ),
        (history, &[("limit", "abc")], "limit"),
        (history, &[("limit", "")], "limit"),
        (history, &[("offset", "-1")], "offset"),
        (history, &[("offset", "1.5")], "offset"),
        (history, &[("kind", "both")], "kind"),
        (history, &[("state", " ")], "state"),
        (history, &[("user_id", "")], "user_id"),
        ("/api/v1/alerts", &[("limit", "abc")], "limit"),
        ("/api/v1/alerts", &[("offset", "-5")], "offset"),
    ];
    for (path, query, expected) in cases {
        let (status, body) = app.get(path, query).await;
        assert_eq!(status, 400, "{path} {query:?}: {body}");
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(
            error.contains(expected),
            "{path} {query:?}: {error:?} should contain {expected:?}"
        );
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    }
    let (_, body) = app.get(history, &[("limit", "500")]).await;
    assert_eq!(
        body,
        json!({"error": "limit must be between 1 and 100, got 500"})
    );
    app.stop().await;
}

#[tokio::test]
async fn agents_lists_the_current_state_of_every_agent() {
    let app = TestApp::spawn().await;
    let agent = |user: &str, routing: &str, idle_since: Option<&str>| {
        PersistMsg::Agent(AgentCurrent {
            user_id: UserId::parse(user).unwrap(),
            user_name: Some(format!("Agent {user}")),
            presence: Some("ON_QUEUE".into()),
            org_presence: Some("On Queue".into()),
            presence_since: Some(ts("2024-05-01T09:00:00Z")),
            routing_status: Some(routing.into()),
            routing_since: Some(ts("2024-05-01T10:00:00.250Z")),
            active_conversations: if routing == "INTERACTING" { 1 } else { 0 },
            idle_since: idle_since.map(ts),
            updated_at: ts("2024-05-01T10:00:01Z"),
        })
    };
    app.persist(vec![
        agent("u2", "IDLE", Some("2024-05-01T10:00:00.250Z")),
        agent("u1", "IDLE", Some("2024-05-01T10:00:00.250Z")),
        // The latest state of u1 wins.
        agent("u1", "INTERACTING", None),
    ])
    .await;

    let (status, body) = app.get("/api/v1/agents", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 2);
    let u1 = &body["data"][0];
    assert_eq!(u1["user_id"], "u1");
    assert_eq!(u1["routing_status"], "INTERACTING");
    assert_eq!(u1["active_conversations"], 1);
    assert!(u1["idle_since"].is_null(), "{u1}");
    assert_eq!(u1["presence"], "ON_QUEUE");
    assert_eq!(u1["org_presence"], "On Queue");
    assert_eq!(u1["presence_since"], "2024-05-01T09:00:00.000Z");
    assert_eq!(u1["routing_since"], "2024-05-01T10:00:00.250Z");
    assert_eq!(u1["updated_at"], "2024-05-01T10:00:01.000Z");
    assert_eq!(body["data"][1]["idle_since"], "2024-05-01T10:00:00.250Z");
    app.stop().await;
}

#[tokio::test]
async fn alerts_are_newest_first_with_their_delivery_outcome() {
    let app = TestApp::spawn().await;
    let fired = |key: &str, fired_at: &str| {
        PersistMsg::AlertFired(Alert {
            alert_key: key.into(),
            episode_key: String::new(),
            severity: "warning".into(),
            destination: None,
            kind: agent_monitor::domain::AlertKind::Firing { repeat: 0 },
            muted: None,
            rule: "idle".into(),
            user_id: UserId::parse("u1").unwrap(),
            user_name: Some("Ann".into()),
            state: "routing IDLE".into(),
            since: ts("2024-05-01T10:00:00Z"),
            threshold: Duration::from_secs(900),
            fired_at: ts(fired_at),
        })
    };
    let outcome = |key: &str, status: DeliveryStatus, error: Option<&str>| {
        PersistMsg::AlertOutcome(AlertOutcome {
            alert_key: key.into(),
            status,
            error: error.map(str::to_owned),
            attempts: 2,
            finished_at: ts("2024-05-01T10:15:02Z"),
        })
    };
    app.persist(vec![
        fired("idle:u1:1", "2024-05-01T10:15:00Z"),
        fired("idle:u1:2", "2024-05-01T11:15:00Z"),
        fired("idle:u1:3", "2024-05-01T12:15:00Z"),
        outcome("idle:u1:1", DeliveryStatus::Delivered, None),
    ])
    .await;
    app.persist(vec![outcome(
        "idle:u1:2",
        DeliveryStatus::Failed,
        Some("invalid_token"),
    )])
    .await;

    let (status, body) = app.get("/api/v1/alerts", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 3);
    let keys: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["idle:u1:3", "idle:u1:2", "idle:u1:1"]);
    let [pending, failed, delivered] = [&body["data"][0], &body["data"][1], &body["data"][2]];
    assert_eq!(pending["delivery_status"], "pending");
    assert_eq!(pending["attempts"], 0);
    assert_eq!(failed["delivery_status"], "failed");
    assert_eq!(failed["delivery_error"], "invalid_token");
    assert!(failed["delivered_at"].is_null());
    assert_eq!(delivered["delivery_status"], "delivered");
    assert_eq!(delivered["delivered_at"], "2024-05-01T10:15:02.000Z");
    assert_eq!(delivered["threshold_seconds"], 900);
    assert_eq!(delivered["since"], "2024-05-01T10:00:00.000Z");
    assert_eq!(delivered["fired_at"], "2024-05-01T10:15:00.000Z");
    assert_eq!(delivered["rule"], "idle");
    assert_eq!(delivered["state"], "routing IDLE");

    let (_, page) = app
        .get("/api/v1/alerts", &[("limit", "1"), ("offset", "2")])
        .await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["data"][0]["alert_key"], "idle:u1:1");
    app.stop().await;
}

fn report(ready: bool) -> HealthReport {
    HealthReport {
        last_retention_run: None,
        ready,
        actors: vec![ActorStatus {
            name: "connection-0".into(),
            status: if ready { "running" } else { "restarting" }.into(),
            restarts: if ready { 0 } else { 2 },
            last_error: (!ready).then(|| "websocket closed".to_owned()),
        }],
        connections: vec![ConnectionStatus {
            name: "connection-0".into(),
            channel_id: Some("streaming-0-abc".into()),
            connected: ready,
            subscribed: ready,
            topics: 3,
            last_message_age_seconds: Some(1.5),
            reconnects: 1,
            events: 10,
            malformed_messages: 0,
            unknown_user_events: 0,
            expires: Some(ts("2024-05-02T10:00:00Z")),
            rollover_at: Some(ts("2024-05-02T09:00:00Z")),
            rejected_topics: vec![RejectedTopic {
                topic: "v2.users.u9?presence&routingStatus&conversationsummary".into(),
                reason: "permission denied".into(),
            }],
            channel_replacements: 1,
        }],
        last_backfill: None,
        clock_offset_ms: Some(-1200),
        database_writable: true,
        database_error: None,
        agents: 42,
        destinations: vec![],
        problems: if ready {
            vec![]
        } else {
            vec!["connection-0 is not connected".into()]
        },
    }
}

#[tokio::test]
async fn probes_report_liveness_and_readiness() {
    let app = TestApp::spawn().await;

    let (status, body) = app.get("/healthz", &[]).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));

    // The supervisor does not answer.
    let (status, body) = app.get("/readyz", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert!(!body["problems"].as_array().unwrap().is_empty());

    *app.readiness.lock().unwrap() = Some(report(true));
    let (status, body) = app.get("/readyz", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["agents"], 42);
    assert_eq!(body["database"]["writable"], true);
    assert_eq!(body["problems"], json!([]));
    let actor = &body["actors"][0];
    assert_eq!(
        (&actor["name"], &actor["status"], &actor["restarts"]),
        (&json!("connection-0"), &json!("running"), &json!(0))
    );
    let connection = &body["connections"][0];
    assert_eq!(connection["channel_id"], "streaming-0-abc");
    assert_eq!(connection["connected"], true);
    assert_eq!(connection["subscribed"], true);
    assert_eq!(connection["topics"], 3);
    assert_eq!(connection["last_message_age_seconds"], 1.5);
    assert_eq!(connection["reconnects"], 1);
    assert_eq!(connection["expires"], "2024-05-02T10:00:00.000Z");
    assert_eq!(connection["rollover_at"], "2024-05-02T09:00:00.000Z");
    assert_eq!(connection["channel_replacements"], 1);
    assert_eq!(
        connection["rejected_topics"],
        json!([{"topic": "v2.users.u9?presence&routingStatus&conversationsummary", "reason": "permission denied"}])
    );
    assert_eq!(body["clock_offset_ms"], -1200);

    *app.readiness.lock().unwrap() = Some(report(false));
    let (status, body) = app.get("/readyz", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["problems"], json!(["connection-0 is not connected"]));
    assert_eq!(body["actors"][0]["last_error"], "websocket closed");
    app.stop().await;
}

#[tokio::test]
async fn docs_and_spec_are_served() {
    let app = TestApp::spawn().await;

    let (status, content_type, html) = app.get_text("/docs").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(html.to_lowercase().contains("swagger"), "{html}");

    let (status, body) = app.get("/openapi.json", &[]).await;
    assert_eq!(status, 200);
    assert!(body["openapi"].as_str().unwrap().starts_with("3."));
    assert!(body["paths"]["/api/v1/agent-status/history"].is_object());

    let (status, _, yaml) = app.get_text("/openapi.yaml").await;
    assert_eq!(status, 200);
    assert_eq!(yaml, spec_yaml());
    app.stop().await;
}

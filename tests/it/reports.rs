//! History (keyset pagination, windows, CSV), agent timelines and time-in-state reports over
//! loopback HTTP, on a real SQLite file written through the real persistence actor; and the
//! query plans that keep every page an index seek.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agent_monitor::actors::persistence::{PersistMsg, PersistenceActor, PersistenceArgs};
use agent_monitor::api::{ApiState, ReadinessFn, ReportLimits, routes};
use agent_monitor::config::PersistenceConfig;
use agent_monitor::db::{self, HistoryFilter, Keyset};
use agent_monitor::domain::{Kind, Source, Transition, UserId, parse_timestamp};
use poem::Server;
use poem::listener::{Acceptor, Listener, TcpListener};
use ractor::{Actor, ActorRef, call_t, cast};
use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement};
use serde_json::Value;

static NEXT_APP: AtomicU64 = AtomicU64::new(0);

const HISTORY: &str = "/api/v1/agent-status/history";
const REPORT: &str = "/api/v1/reports/time-in-state";

struct TestApp {
    base: String,
    client: reqwest::Client,
    persistence: ActorRef<PersistMsg>,
    dir: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl TestApp {
    async fn spawn(limits: ReportLimits) -> TestApp {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!(
            "agent-monitor-it-reports-{}-{}",
            std::process::id(),
            NEXT_APP.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("sqlite://{}", dir.join("monitor.db").display());
        let db = db::connect(&url).await.expect("connect");
        let (persistence, _) = Actor::spawn(
            None,
            PersistenceActor,
            PersistenceArgs {
                db: db.clone(),
                config: PersistenceConfig {
                    batch_rows: 500,
                    flush_interval: Duration::from_millis(20),
                    max_in_flight: 5000,
                },
            },
        )
        .await
        .expect("spawn persistence");
        let readiness: ReadinessFn = Arc::new(|| Box::pin(async { None }));
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
            limits,
            alerting: Default::default(),
        });
        let server = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(endpoint).await;
        });
        TestApp {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            persistence,
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
            .unwrap_or_else(|e| panic!("{path} {query:?} answered non-JSON ({e}): {body}"));
        (status, json)
    }

    /// GET with `Accept: text/csv` (or `format=csv` in `query`): status, content type, body.
    async fn get_csv(&self, path: &str, query: &[(&str, &str)]) -> (u16, String, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("accept", "text/csv")
            .query(query)
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

    async fn persist(&self, transitions: Vec<Transition>) {
        for t in transitions {
            cast!(self.persistence, PersistMsg::Transition(t, None)).unwrap();
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

fn transition(user: &str, kind: Kind, state: &str, org: Option<&str>, at: &str) -> Transition {
    Transition {
        user_id: UserId::parse(user).unwrap(),
        user_name: Some(format!("Agent, \"{user}\"")),
        kind,
        state: state.into(),
        previous_state: None,
        org_presence: org.map(str::to_owned),
        presence_definition_id: None,
        event_timestamp: ts(at),
        ingested_at: ts("2024-06-01T00:00:00Z"),
        source: Source::Stream,
    }
}

/// 3 users × 2 kinds × 15 transitions, a minute apart, with ties across users and both
/// sources.
fn bulk() -> Vec<Transition> {
    let base = ts("2024-05-01T00:00:00Z");
    let states = ["IDLE", "INTERACTING", "OFF_QUEUE"];
    let mut out = Vec::new();
    for step in 0..15i64 {
        for (u, user) in ["u1", "u2", "u3"].iter().enumerate() {
            for kind in [Kind::Routing, Kind::Presence] {
                let at = base + chrono::Duration::minutes(step * 2 + (u as i64 % 2));
                out.push(Transition {
                    user_id: UserId::parse(user).unwrap(),
                    user_name: None,
                    kind,
                    state: states[(step as usize + u) % 3].into(),
                    previous_state: None,
                    org_presence: None,
                    presence_definition_id: None,
                    event_timestamp: at,
                    ingested_at: at,
                    source: if step % 3 == 0 {
                        Source::Bootstrap
                    } else {
                        Source::Stream
                    },
                });
            }
        }
    }
    out
}

fn ids(body: &Value) -> Vec<i64> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn keyset_pages_concatenate_to_the_offset_result() {
    let app = TestApp::spawn(ReportLimits::default()).await;
    app.persist(bulk()).await;

    let filters: &[&[(&str, &str)]] = &[
        &[],
        &[("user_id", "U2")],
        &[("kind", "routing")],
        &[("state", "idle")],
        &[("source", "bootstrap")],
        &[("user_id", "u1"), ("kind", "presence")],
        &[("state", "OFF_QUEUE"), ("source", "stream")],
        &[
            ("from", "2024-05-01T00:10:00Z"),
            ("to", "2024-05-01T00:31:00Z"),
        ],
        &[
            ("user_id", "u3"),
            ("from", "2024-05-01T00:05:00+02:00"),
            ("state", "IDLE"),
        ],
    ];
    for filter in filters {
        let (status, all) = app
            .get(HISTORY, &[filter.to_vec(), vec![("limit", "100")]].concat())
            .await;
        assert_eq!(status, 200, "{all}");
        let total = all["total"].as_u64().unwrap();
        assert!(total > 0 && total <= 100, "{filter:?}: {total}");
        let expected = ids(&all);
        assert_eq!(expected.len() as u64, total);

        // Offset pages.
        let mut by_offset = Vec::new();
        for offset in (0..total).step_by(7) {
            let offset = offset.to_string();
            let (_, page) = app
                .get(
                    HISTORY,
                    &[filter.to_vec(), vec![("limit", "7"), ("offset", &offset)]].concat(),
                )
                .await;
            by_offset.extend(ids(&page));
        }
        assert_eq!(by_offset, expected, "{filter:?}");

        // Keyset pages.
        let mut by_cursor = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut query = [filter.to_vec(), vec![("limit", "7")]].concat();
            if let Some(c) = &cursor {
                query.push(("cursor", c));
            }
            let (status, page) = app.get(HISTORY, &query).await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["total"].as_u64(), Some(total));
            by_cursor.extend(ids(&page));
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(by_cursor, expected, "{filter:?}");
        assert_eq!(pages, total.div_ceil(7), "{filter:?}: no empty last page");

        // The CSV export of the same filters is the same rows, field by field.
        let (status, content_type, csv_text) = app.get_csv(HISTORY, filter).await;
        assert_eq!(status, 200, "{csv_text}");
        assert!(content_type.starts_with("text/csv"), "{content_type}");
        let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len() as u64, total, "{filter:?}");
        for (record, json) in rows.iter().zip(all["data"].as_array().unwrap()) {
            for (name, cell) in header.iter().zip(record.iter()) {
                let expected = match &json[name] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(cell, expected, "{name} in {filter:?}");
            }
        }
    }

    // An offset page also carries next_cursor, so a client can switch to keyset.
    let (_, page) = app.get(HISTORY, &[("limit", "5"), ("offset", "10")]).await;
    let (_, next) = app
        .get(
            HISTORY,
            &[
                ("limit", "5"),
                ("cursor", page["next_cursor"].as_str().unwrap()),
            ],
        )
        .await;
    let (_, reference) = app.get(HISTORY, &[("limit", "5"), ("offset", "15")]).await;
    assert_eq!(ids(&next), ids(&reference));
    app.stop().await;
}

#[tokio::test]
async fn cursors_that_were_altered_or_reused_with_other_filters_are_refused() {
    let app = TestApp::spawn(ReportLimits::default()).await;
    app.persist(bulk()).await;
    let (_, page) = app.get(HISTORY, &[("limit", "3"), ("state", "IDLE")]).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();

    let mut tampered = cursor.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    for query in [
        vec![("state", "IDLE"), ("cursor", tampered.as_str())],
        vec![("state", "BUSY"), ("cursor", cursor.as_str())],
        vec![("state", "IDLE"), ("cursor", "not-a-cursor")],
    ] {
        let (status, body) = app.get(HISTORY, &query).await;
        assert_eq!(status, 400, "{query:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("cursor "),
            "{body}"
        );
    }
    app.stop().await;
}

/// Hand-computed fixture. Window [2024-05-01T10:00Z, 2024-05-02T10:00Z), 24 h; the request
/// runs in the future, so open states end at `to`.
async fn seed_fixture(app: &TestApp) {
    app.persist(vec![
        transition("a", Kind::Routing, "IDLE", None, "2024-05-01T08:00:00Z"),
        transition(
            "a",
            Kind::Routing,
            "INTERACTING",
            None,
            "2024-05-01T10:30:00Z",
        ),
        transition("a", Kind::Routing, "IDLE", None, "2024-05-01T11:00:00Z"),
        transition(
            "a",
            Kind::Routing,
            "OFF_QUEUE",
            None,
            "2024-05-02T02:00:00Z",
        ),
        transition("a", Kind::Routing, "IDLE", None, "2024-05-02T12:00:00Z"),
        transition(
            "a",
            Kind::Presence,
            "ON_QUEUE",
            Some("On Queue"),
            "2024-05-01T07:00:00Z",
        ),
        transition(
            "a",
            Kind::Presence,
            "BREAK",
            Some("Coffee, \"short\""),
            "2024-05-01T12:00:00Z",
        ),
        transition(
            "a",
            Kind::Presence,
            "ON_QUEUE",
            Some("On Queue"),
            "2024-05-01T12:15:00Z",
        ),
        transition("b", Kind::Routing, "IDLE", None, "2024-05-01T09:00:00Z"),
    ])
    .await;
}

const FROM: &str = "2024-05-01T10:00:00Z";
const TO: &str = "2024-05-02T10:00:00Z";

#[tokio::test]
async fn timeline_matches_the_hand_computed_intervals_and_its_csv() {
    let app = TestApp::spawn(ReportLimits::default()).await;
    seed_fixture(&app).await;

    let (status, body) = app
        .get("/api/v1/agents/A/timeline", &[("from", FROM), ("to", TO)])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "a");
    let got: Vec<(String, String, String, String, f64)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_owned(),
                i["state"].as_str().unwrap().to_owned(),
                i["start"].as_str().unwrap().to_owned(),
                i["end"].as_str().unwrap().to_owned(),
                i["duration_seconds"].as_f64().unwrap(),
            )
        })
        .collect();
    let row = |k: &str, s: &str, a: &str, b: &str, d: f64| {
        (k.to_owned(), s.to_owned(), a.to_owned(), b.to_owned(), d)
    };
    assert_eq!(
        got,
        [
            row(
                "presence",
                "ON_QUEUE",
                "2024-05-01T10:00:00.000Z",
                "2024-05-01T12:00:00.000Z",
                7200.0
            ),
            row(
                "presence",
                "BREAK",
                "2024-05-01T12:00:00.000Z",
                "2024-05-01T12:15:00.000Z",
                900.0
            ),
            row(
                "presence",
                "ON_QUEUE",
                "2024-05-01T12:15:00.000Z",
                "2024-05-02T10:00:00.000Z",
                78300.0
            ),
            row(
                "routing",
                "IDLE",
                "2024-05-01T10:00:00.000Z",
                "2024-05-01T10:30:00.000Z",
                1800.0
            ),
            row(
                "routing",
                "INTERACTING",
                "2024-05-01T10:30:00.000Z",
                "2024-05-01T11:00:00.000Z",
                1800.0
            ),
            row(
                "routing",
                "IDLE",
                "2024-05-01T11:00:00.000Z",
                "2024-05-02T02:00:00.000Z",
                54000.0
            ),
            row(
                "routing",
                "OFF_QUEUE",
                "2024-05-02T02:00:00.000Z",
                "2024-05-02T10:00:00.000Z",
                28800.0
            ),
        ]
    );
    assert_eq!(body["data"][1]["org_presence"], "Coffee, \"short\"");

    // CSV, selected by `format=csv`, parses back to the same intervals.
    let (status, content_type, text) = app
        .get_csv(
            "/api/v1/agents/a/timeline",
            &[("from", FROM), ("to", TO), ("format", "csv")],
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/csv"));
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec![
            "user_id",
            "kind",
            "state",
            "org_presence",
            "start",
            "end",
            "duration_seconds"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), body["data"].as_array().unwrap().len());
    for (record, json) in records.iter().zip(body["data"].as_array().unwrap()) {
        assert_eq!(&record[0], "a");
        assert_eq!(&record[1], json["kind"].as_str().unwrap());
        assert_eq!(&record[2], json["state"].as_str().unwrap());
        assert_eq!(&record[3], json["org_presence"].as_str().unwrap_or(""));
        assert_eq!(&record[4], json["start"].as_str().unwrap());
        assert_eq!(&record[5], json["end"].as_str().unwrap());
        assert_eq!(
            record[6].parse::<f64>().unwrap(),
            json["duration_seconds"].as_f64().unwrap()
        );
    }

    // Only one dimension, and a window inside one interval.
    let (_, routing) = app
        .get(
            "/api/v1/agents/a/timeline",
            &[
                ("from", "2024-05-01T12:00:00Z"),
                ("to", "2024-05-01T13:00:00Z"),
                ("kind", "routing"),
            ],
        )
        .await;
    assert_eq!(routing["data"].as_array().unwrap().len(), 1);
    assert_eq!(routing["data"][0]["duration_seconds"], 3600.0);

    // An unknown agent has no intervals.
    let (status, nobody) = app
        .get("/api/v1/agents/zz/timeline", &[("from", FROM), ("to", TO)])
        .await;
    assert_eq!(status, 200);
    assert_eq!(nobody["data"], Value::Array(vec![]));
    app.stop().await;
}

fn totals(body: &Value) -> Vec<(String, String, String, String, f64)> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["user_id"].as_str().unwrap_or("").to_owned(),
                r["day"].as_str().unwrap_or("").to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
                r["seconds"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn t(
    user: &str,
    day: &str,
    kind: &str,
    state: &str,
    s: f64,
) -> (String, String, String, String, f64) {
    (user.into(), day.into(), kind.into(), state.into(), s)
}

#[tokio::test]
async fn time_in_state_matches_the_hand_computed_totals_and_its_csv() {
    let app = TestApp::spawn(ReportLimits::default()).await;
    seed_fixture(&app).await;

    let (status, by_state) = app.get(REPORT, &[("from", FROM), ("to", TO)]).await;
    assert_eq!(status, 200, "{by_state}");
    assert_eq!(by_state["group_by"], serde_json::json!(["state"]));
    assert_eq!(
        totals(&by_state),
        [
            t("", "", "presence", "BREAK", 900.0),
            t("", "", "presence", "ON_QUEUE", 85500.0),
            t("", "", "routing", "IDLE", 55800.0 + 86400.0),
            t("", "", "routing", "INTERACTING", 1800.0),
            t("", "", "routing", "OFF_QUEUE", 28800.0),
        ]
    );

    let (_, by_user) = app
        .get(
            REPORT,
            &[
                ("from", FROM),
                ("to", TO),
                ("group_by", "user"),
                ("kind", "routing"),
            ],
        )
        .await;
    assert_eq!(
        totals(&by_user),
        [
            t("a", "", "routing", "IDLE", 55800.0),
            t("a", "", "routing", "INTERACTING", 1800.0),
            t("a", "", "routing", "OFF_QUEUE", 28800.0),
            t("b", "", "routing", "IDLE", 86400.0),
        ]
    );

    // Days in New York (UTC-4 in May): local midnight is 04:00Z.
    let query = [
        ("from", FROM),
        ("to", TO),
        ("group_by", "day"),
        ("tz", "America/New_York"),
        ("user_id", "a"),
        ("kind", "routing"),
    ];
    let (_, by_day) = app.get(REPORT, &query).await;
    assert_eq!(by_day["tz"], "America/New_York");
    assert_eq!(
        totals(&by_day),
        [
            t("", "2024-05-01", "routing", "IDLE", 55800.0),
            t("", "2024-05-01", "routing", "INTERACTING", 1800.0),
            t("", "2024-05-01", "routing", "OFF_QUEUE", 7200.0),
            t("", "2024-05-02", "routing", "OFF_QUEUE", 21600.0),
        ]
    );

    let (status, content_type, text) = app.get_csv(REPORT, &query).await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/csv"));
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec!["user_id", "day", "kind", "state", "seconds"]
    );
    let from_csv: Vec<_> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            t(&r[0], &r[1], &r[2], &r[3], r[4].parse().unwrap())
        })
        .collect();
    assert_eq!(from_csv, totals(&by_day));
    app.stop().await;
}

#[tokio::test]
async fn every_bad_parameter_is_a_400_naming_it() {
    let app = TestApp::spawn(ReportLimits {
        max_window: Duration::from_secs(7 * 86_400),
    })
    .await;
    let timeline = "/api/v1/agents/a/timeline";
    let ok_window: [(&str, &str); 2] = [("from", FROM), ("to", TO)];
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let with_window =
        |extra: &[(&'static str, &'static str)]| [ok_window.to_vec(), extra.to_vec()].concat();
    let cases: Vec<Case> = vec![
        (HISTORY, vec![("source", "websocket")], "source "),
        (HISTORY, vec![("from", "yesterday")], "from "),
        (HISTORY, vec![("to", "2024-05-01T10:00:00")], "to "),
        (HISTORY, vec![("from", TO), ("to", FROM)], "from "),
        (
            HISTORY,
            vec![
                ("from", "2024-01-01T00:00:00Z"),
                ("to", "2024-02-01T00:00:00Z"),
            ],
            "the maximum is 7 days (MAX_REPORT_WINDOW",
        ),
        (HISTORY, vec![("cursor", "zzz")], "cursor "),
        (
            HISTORY,
            vec![("cursor", "zzz"), ("offset", "0")],
            "cursor and offset",
        ),
        (HISTORY, vec![("format", "xml")], "format "),
        (HISTORY, vec![("limit", "0")], "limit "),
        (timeline, vec![("to", TO)], "from is required"),
        (timeline, vec![("from", FROM)], "to is required"),
        (
            timeline,
            vec![("from", "2024-13-01T00:00:00Z"), ("to", TO)],
            "from ",
        ),
        (timeline, vec![("from", TO), ("to", FROM)], "from "),
        (
            timeline,
            vec![
                ("from", "2024-01-01T00:00:00Z"),
                ("to", "2024-02-01T00:00:00Z"),
            ],
            "the maximum is 7 days (MAX_REPORT_WINDOW",
        ),
        (timeline, with_window(&[("kind", "both")]), "kind "),
        (timeline, with_window(&[("format", "pdf")]), "format "),
        (REPORT, vec![("from", FROM)], "to is required"),
        (
            REPORT,
            vec![("to", TO)],
            "from is required (an RFC 3339 instant)",
        ),
        (REPORT, vec![], "from is required"),
        (timeline, vec![], "from is required"),
        (
            HISTORY,
            vec![("state", "bogus")],
            "state \"bogus\" is neither",
        ),
        (HISTORY, vec![("state", "Lunch")], "org_presence"),
        (REPORT, vec![("from", TO), ("to", FROM)], "from "),
        (
            REPORT,
            vec![
                ("from", "2023-01-01T00:00:00Z"),
                ("to", "2024-02-01T00:00:00Z"),
            ],
            "the maximum is 7 days (MAX_REPORT_WINDOW",
        ),
        (REPORT, with_window(&[("group_by", "week")]), "group_by "),
        (REPORT, with_window(&[("tz", "Mars/Olympus_Mons")]), "tz "),
        (REPORT, with_window(&[("user_id", " ")]), "user_id "),
        (REPORT, with_window(&[("kind", "x")]), "kind "),
        (REPORT, with_window(&[("format", "x")]), "format "),
    ];
    for (path, query, expected) in &cases {
        let (status, body) = app.get(path, query).await;
        assert_eq!(status, 400, "{path} {query:?}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{path} {query:?}: {error:?} should contain {expected:?}"
        );
    }
    // An empty window is fine.
    let (status, _) = app.get(REPORT, &[("from", FROM), ("to", FROM)]).await;
    assert_eq!(status, 200);
    app.stop().await;
}

/// `EXPLAIN QUERY PLAN` rows' `detail` column.
async fn plan(db: &sea_orm::DatabaseConnection, statement: Statement) -> Vec<String> {
    let explain = Statement::from_sql_and_values(
        DbBackend::Sqlite,
        format!("EXPLAIN QUERY PLAN {}", statement.sql),
        statement.values.map(|v| v.0).unwrap_or_default(),
    );
    db.query_all_raw(explain)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "detail").unwrap())
        .collect()
}

/// An index seek in order: a SEARCH through an index of `agent_status`, no full scan and no
/// sort. A keyset page then costs the same at any depth (the cursor is a range bound of the
/// index), which is what the plan shows without timing anything.
fn assert_index_seek(what: &str, detail: &[String]) {
    let text = detail.join(" | ");
    assert!(
        detail
            .iter()
            .any(|d| d.starts_with("SEARCH agent_status USING ") && d.contains("INDEX")),
        "{what}: no index search: {text}"
    );
    assert!(
        !detail.iter().any(|d| d.starts_with("SCAN agent_status")),
        "{what}: full scan: {text}"
    );
    assert!(!text.contains("TEMP B-TREE"), "{what}: sorts: {text}");
}

#[tokio::test]
async fn every_filter_combination_is_an_index_seek() {
    let db = db::connect("sqlite::memory:").await.unwrap();
    let position = Keyset {
        event_timestamp: ts("2024-05-01T10:00:00Z"),
        id: 1000,
    };
    for mask in 0..16u8 {
        for window in [false, true] {
            for cursor in [false, true] {
                let filter = HistoryFilter {
                    user_id: (mask & 1 != 0).then(|| UserId::parse("u1").unwrap()),
                    state: (mask & 2 != 0).then(|| "IDLE".to_owned()),
                    kind: (mask & 4 != 0).then_some(Kind::Routing),
                    source: (mask & 8 != 0).then(|| "stream".to_owned()),
                    from: window.then(|| ts("2024-01-01T00:00:00Z")),
                    to: window.then(|| ts("2025-01-01T00:00:00Z")),
                    after: cursor.then_some(position),
                    limit: 20,
                    offset: 0,
                };
                let statement = db::history_select(&filter).build(DbBackend::Sqlite);
                let detail = plan(&db, statement).await;
                let what = format!("history {filter:?}");
                if mask == 0 && !window && !cursor {
                    // The unfiltered first page reads the newest `limit` entries of the
                    // (event_timestamp, id) index in order and stops: no sort, no table scan.
                    assert_eq!(
                        detail,
                        ["SCAN agent_status USING INDEX ix_agent_status_ts"],
                        "{what}"
                    );
                } else {
                    assert_index_seek(&what, &detail);
                }
                if mask == 1 {
                    // One agent's page, the API's most common query: read from the covering
                    // index alone (its rows sit on a few adjacent index pages; in the table
                    // they are one per page), `BENCHMARKS.md` figure 5.
                    assert!(
                        detail.iter().any(|d| d.starts_with(
                            "SEARCH agent_status USING COVERING INDEX ix_agent_status_user_cover"
                        )),
                        "{what}: not the covering index: {detail:?}"
                    );
                }
            }
        }
    }

    let from = ts("2024-05-01T00:00:00Z");
    let to = ts("2024-05-02T00:00:00Z");
    let statements = [
        (
            "state before",
            db::state_before_select("u1", Kind::Presence, from),
        ),
        (
            "first window page",
            db::transitions_select("u1", Kind::Routing, from, to, None, 1000),
        ),
        (
            "next window page",
            db::transitions_select("u1", Kind::Routing, from, to, Some(position), 1000),
        ),
    ];
    for (what, select) in statements {
        let detail = plan(&db, select.build(DbBackend::Sqlite)).await;
        assert_index_seek(what, &detail);
    }
    // Walking the users: one covering-index seek per user.
    let detail = plan(
        &db,
        db::next_user_select(Some("u1")).build(DbBackend::Sqlite),
    )
    .await;
    assert!(
        detail
            .iter()
            .any(|d| d.starts_with("SEARCH agent_status USING COVERING INDEX")),
        "{detail:?}"
    );
}

/// More rows than one export page (1,000) and one interval page (1,000): the CSV export and
/// the timeline continue by keyset from page to page without losing or repeating a row.
#[tokio::test]
async fn exports_and_timelines_cross_page_boundaries() {
    let app = TestApp::spawn(ReportLimits::default()).await;
    let start = ts("2024-05-01T00:00:00Z");
    let rows = 2_500i64;
    let transitions: Vec<Transition> = (0..rows)
        .map(|i| Transition {
            user_id: UserId::parse("big").unwrap(),
            user_name: None,
            kind: Kind::Routing,
            state: if i % 2 == 0 { "IDLE" } else { "INTERACTING" }.into(),
            previous_state: None,
            org_presence: None,
            presence_definition_id: None,
            event_timestamp: start + chrono::Duration::seconds(10 * i),
            ingested_at: start,
            source: Source::Stream,
        })
        .collect();
    app.persist(transitions).await;

    let (status, _, text) = app.get_csv(HISTORY, &[]).await;
    assert_eq!(status, 200);
    let csv_ids: Vec<i64> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap()[0].parse().unwrap())
        .collect();
    let mut json_ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "100")];
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let (_, page) = app.get(HISTORY, &query).await;
        json_ids.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(csv_ids.len() as i64, rows);
    assert_eq!(csv_ids, json_ids);

    // From the first transition to 10 s after the last: every interval is 10 s.
    let to = "2024-05-01T06:56:40Z"; // start + 2,500 × 10 s
    let (status, timeline) = app
        .get(
            "/api/v1/agents/big/timeline",
            &[("from", "2024-05-01T00:00:00Z"), ("to", to)],
        )
        .await;
    assert_eq!(status, 200);
    let data = timeline["data"].as_array().unwrap();
    assert_eq!(data.len() as i64, rows);
    assert!(data.iter().all(|i| i["duration_seconds"] == 10.0));
    for pair in data.windows(2) {
        assert_eq!(pair[0]["end"], pair[1]["start"]);
    }
    let (_, _, text) = app
        .get_csv(
            "/api/v1/agents/big/timeline",
            &[("from", "2024-05-01T00:00:00Z"), ("to", to)],
        )
        .await;
    assert_eq!(
        csv::Reader::from_reader(text.as_bytes()).records().count() as i64,
        rows
    );
    let (_, report) = app
        .get(
            REPORT,
            &[
                ("from", "2024-05-01T00:00:00Z"),
                ("to", to),
                ("group_by", "user"),
            ],
        )
        .await;
    assert_eq!(
        totals(&report),
        [
            t("big", "", "routing", "IDLE", 12_500.0),
            t("big", "", "routing", "INTERACTING", 12_500.0),
        ]
    );
    app.stop().await;
}

/// The spec says what the server enforces: `from` and `to` of the timeline and the
/// time-in-state report are required (a missing one answers 400, a declared response).
#[tokio::test]
async fn the_spec_marks_the_window_of_reports_required() {
    let app = TestApp::spawn(ReportLimits::default()).await;
    let (status, spec) = app.get("/openapi.json", &[]).await;
    assert_eq!(status, 200);
    for path in ["/api/v1/agents/{user_id}/timeline", REPORT] {
        let operation = &spec["paths"][path]["get"];
        for name in ["from", "to"] {
            let param = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{path}: no {name}"));
            assert_eq!(param["required"], true, "{path} {name}: {param}");
        }
        assert!(operation["responses"]["400"].is_object(), "{path}");
    }
    app.stop().await;
}

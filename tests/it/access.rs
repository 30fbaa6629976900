//! Access control and request limits of the REST API, on the real service against the
//! simulator: bearer tokens on `/api/`, open probes and docs (closed with `PROTECT_PROBES`),
//! `{"error"}` refusals, and the binary's refusal to serve without tokens off loopback.

use std::process::{Command, Stdio};

use agent_monitor::app::App;
use agent_monitor::config::{AccessConfig, ApiToken};
use agent_monitor::secret::Secret;
use serde_json::Value;

use crate::helpers::SlackReceiver;
use crate::service::{Opts, config_for, start_sim, temp_db_path};

pub const BIN: &str = env!("CARGO_BIN_EXE_agent-monitor");
const OPS_TOKEN: &str = "ops-token-0123456789abcdef";
const CI_TOKEN: &str = "ci-token-fedcba9876543210";

struct Service {
    base: String,
    http: reqwest::Client,
    app: App,
    _sim: agent_monitor::sim::Simulator,
}

impl Service {
    async fn start(protect_probes: bool) -> Service {
        Service::start_with(AccessConfig {
            tokens: vec![
                ApiToken {
                    name: "ops".into(),
                    token: Secret::new(OPS_TOKEN),
                },
                ApiToken {
                    name: "token-2".into(),
                    token: Secret::new(CI_TOKEN),
                },
            ],
            protect_probes,
            ..AccessConfig::default()
        })
        .await
    }

    async fn start_with(access: AccessConfig) -> Service {
        let sim = start_sim(2).await;
        let slack = SlackReceiver::start().await;
        let mut config = config_for(&sim, &slack, &temp_db_path(), &Opts::default());
        config.access = access;
        let app = App::start(config).await.unwrap();
        Service {
            _sim: sim,
            base: format!("http://{}", app.api_addr()),
            http: reqwest::Client::new(),
            app,
        }
    }

    /// (status, WWW-Authenticate, body as JSON or Null)
    async fn get(&self, path: &str, authorization: Option<&str>) -> (u16, Option<String>, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.json().await.unwrap_or(Value::Null);
        (status, challenge, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_the_api_but_not_the_probes_or_the_docs() {
    let s = Service::start(false).await;
    for path in [
        "/api/v1/agents",
        "/api/v1/alerts",
        "/api/v1/agent-status/history?limit=5",
        "/api/v1/not-there",
    ] {
        let (status, challenge, body) = s.get(path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer realm=\"agent-monitor\""),
            "{path}"
        );
        assert_eq!(body["error"], "missing bearer token", "{path}");

        let (status, challenge, body) = s.get(path, Some("Bearer not-a-valid-token")).await;
        assert_eq!(status, 401, "{path}");
        assert!(
            challenge
                .unwrap()
                .starts_with("Bearer realm=\"agent-monitor\""),
            "{path}"
        );
        assert_eq!(body["error"], "invalid bearer token", "{path}");
        // A token of another scheme is no bearer token.
        let (status, _, _) = s.get(path, Some(&format!("Basic {OPS_TOKEN}"))).await;
        assert_eq!(status, 401, "{path}");
    }
    for token in [OPS_TOKEN, CI_TOKEN] {
        let (status, _, body) = s
            .get("/api/v1/agents", Some(&format!("Bearer {token}")))
            .await;
        assert_eq!(status, 200, "{body}");
        // The agents may not be listed yet (no wait for readiness here): only the shape.
        assert!(body["data"].is_array(), "{body}");
    }
    let (status, _, _) = s
        .get("/api/v1/alerts", Some(&format!("bearer {OPS_TOKEN}")))
        .await;
    assert_eq!(status, 200, "the scheme is case-insensitive");
    let (status, _, _) = s
        .get("/api/v1/not-there", Some(&format!("Bearer {OPS_TOKEN}")))
        .await;
    assert_eq!(status, 404);

    for open in ["/healthz", "/readyz", "/openapi.json", "/openapi.yaml"] {
        let (status, _, _) = s.get(open, None).await;
        assert!(
            status == 200 || (open == "/readyz" && status == 503),
            "{open}: {status}"
        );
    }
    let docs = s.http.get(format!("{}/docs", s.base)).send().await.unwrap();
    assert_eq!(docs.status().as_u16(), 200);
    let spec: Value = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        spec["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    assert_eq!(
        spec["paths"]["/api/v1/agents"]["get"]["security"][0]["bearerAuth"],
        serde_json::json!([])
    );
    s.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_probes_closes_the_probes_but_not_the_docs() {
    let s = Service::start(true).await;
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let (status, challenge, body) = s.get(probe, None).await;
        assert_eq!(status, 401, "{probe}");
        assert!(challenge.is_some(), "{probe}");
        assert!(body["error"].is_string(), "{probe}");
    }
    let (status, _, _) = s.get("/healthz", Some(&format!("Bearer {CI_TOKEN}"))).await;
    assert_eq!(status, 200);
    let (status, _, _) = s.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    s.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_query_strings_and_unsized_bodies_are_refused_with_an_error_body() {
    let s = Service::start(false).await;
    let auth = format!("Bearer {OPS_TOKEN}");
    let long = "x".repeat(16 * 1024 + 1);
    let (status, _, body) = s
        .get(&format!("/api/v1/alerts?state={long}"), Some(&auth))
        .await;
    assert_eq!(status, 414, "{body}");
    assert!(body["error"].as_str().unwrap().contains("query string"));
    // Refused before authentication too: no work for a stranger's huge request.
    let (status, _, _) = s.get(&format!("/healthz?{long}"), None).await;
    assert_eq!(status, 414);

    let response = s
        .http
        .post(format!("{}/api/v1/alerts", s.base))
        .header("Authorization", &auth)
        .body(vec![b'x'; 65 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string());
    s.app.shutdown().await;
}

#[test]
fn no_tokens_off_loopback_exits_2_naming_listen_addr_and_api_tokens() {
    let out = Command::new(BIN)
        .arg("run")
        .env_clear()
        .env("GENESYS_REGION", "mypurecloud.ie")
        .env("GENESYS_CLIENT_ID", "id")
        .env("GENESYS_CLIENT_SECRET", "topsecret-value")
        .env("LISTEN_ADDR", "0.0.0.0:0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("LISTEN_ADDR") && lines[0].contains("API_TOKENS"),
        "{stderr}"
    );
    assert!(!stderr.contains("topsecret-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_disconnected_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Service::start_with(AccessConfig {
        idle_timeout: std::time::Duration::from_secs(1),
        ..AccessConfig::default()
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    // Half a request line, then nothing: the server must not wait forever.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the server closed the idle connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    s.app.shutdown().await;
}

/// hyper keeps reading while a handler runs, so the idle deadline also runs then: it must
/// exceed the longest handler. The API bounds its handlers below it (10 s queries, 5 s
/// readiness); here a handler within the deadline answers normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_within_the_idle_timeout_answers() {
    use agent_monitor::api::timeout_io::IdleTimeoutAcceptor;
    use agent_monitor::api::{ApiState, ReadinessFn, routes};
    use poem::listener::{Acceptor, Listener, TcpListener};
    use std::time::Duration;

    let db = agent_monitor::db::connect("sqlite::memory:").await.unwrap();
    let readiness: ReadinessFn = std::sync::Arc::new(|| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            None
        })
    });
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = *acceptor.local_addr()[0].as_socket_addr().unwrap();
    let acceptor = IdleTimeoutAcceptor::new(acceptor, Duration::from_secs(1));
    let server = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor)
            .run(routes(ApiState {
                db,
                readiness,
                limits: Default::default(),
                alerting: Default::default(),
            }))
            .await;
    });
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let response = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 503);
    }
    server.abort();
}

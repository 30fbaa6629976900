//! No secret in any output: the real binary, run against the simulator with `RUST_LOG=trace`,
//! a Slack webhook on a local receiver (`SLACK_ALLOW_INSECURE_URL=true`) and API tokens from a
//! `name:token` file, is exercised (events, an idle alert, API calls with and without tokens,
//! the spec); then neither its stdout/stderr nor any API response nor the spec contains the
//! client secret, an OAuth token, the webhook URL or an API token. Also `LOG_FORMAT`.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::access::BIN;
use crate::helpers::{SlackReceiver, SlackReply, wait_for};
use crate::service::{run_on_sim, start_sim, temp_db_path};

const API_TOKEN: &str = "api-token-7c1e0b5d9a3f42e8";
const OTHER_TOKEN: &str = "api-token-second-51b2c8d4e6f7";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops the child with SIGTERM and returns (exit status, stdout, stderr).
async fn stop(mut child: Child) -> (Option<i32>, String, String) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout.read_to_string(&mut out).unwrap();
        }
        if let Some(mut stderr) = child.stderr.take() {
            stderr.read_to_string(&mut err).unwrap();
        }
        (status.code(), out, err)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_responses_or_the_spec() {
    let sim = start_sim(3).await;
    let ids = sim.agent_ids().await.unwrap();
    let slack = SlackReceiver::start().await;
    // The first delivery fails, so the error and retry paths log too.
    slack.script([SlackReply {
        status: 500,
        retry_after: None,
        body: "rollup_error".into(),
    }]);
    let db = temp_db_path();
    let tokens_file = db.with_extension("tokens");
    std::fs::write(
        &tokens_file,
        format!("# who may call the API\noperator:{API_TOKEN}\n\n{OTHER_TOKEN}\n"),
    )
    .unwrap();
    let port = free_port();
    // Both streams go to pipes: a child that fills one is not read until it exits, so the
    // trace output goes to files instead.
    let out_path = db.with_extension("stdout");
    let err_path = db.with_extension("stderr");
    let child = run_on_sim(&sim, &db, port)
        .env("SLACK_WEBHOOK_URL", &slack.url)
        .env("SLACK_ALLOW_INSECURE_URL", "true")
        .env("API_TOKENS_FILE", &tokens_file)
        .env("IDLE_THRESHOLD", "2s")
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut responses = Vec::new();
    wait_for(
        "the binary to be ready",
        Duration::from_secs(60),
        || async {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    // The OAuth token the service is using, before anything could revoke it.
    let oauth_tokens = sim.issued_tokens().await.unwrap();
    assert!(!oauth_tokens.is_empty());

    // Events, then an idle alert delivered to the receiver.
    for (i, status) in ["INTERACTING", "IDLE", "OFF_QUEUE"].iter().enumerate() {
        sim.set_routing_status(&ids[i % ids.len()], status)
            .await
            .unwrap();
    }
    wait_for(
        "an idle alert delivered after a 500",
        Duration::from_secs(30),
        || async { (slack.received().len() >= 2).then_some(()) },
    )
    .await;

    // API calls: none, wrong, each right token (the `name:token` form and a bare one).
    let paths = [
        "/api/v1/agents",
        "/api/v1/alerts",
        "/api/v1/agent-status/history?limit=100",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/openapi.yaml",
        "/docs",
    ];
    for path in paths {
        for auth in [
            None,
            Some("Bearer wrong-token-0000000000".to_string()),
            Some(format!("Bearer {API_TOKEN}")),
            Some(format!("Bearer {OTHER_TOKEN}")),
        ] {
            let mut request = http.get(format!("{base}{path}"));
            if let Some(auth) = &auth {
                request = request.header("Authorization", auth);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = format!("{:?}", response.headers());
            let body = response.text().await.unwrap();
            if path.starts_with("/api/") {
                let authorized = auth.as_deref().is_some_and(|a| !a.contains("wrong"));
                assert_eq!(
                    status,
                    if authorized { 200 } else { 401 },
                    "{path} {auth:?}"
                );
            }
            responses.push(format!("{path} {status} {headers} {body}"));
        }
    }
    let alerts: Value = http
        .get(format!("{base}/api/v1/alerts"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(alerts["total"].as_u64().unwrap() >= 1, "{alerts}");

    let (code, _, _) = stop(child).await;
    assert_eq!(code, Some(0));
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        stderr.contains("request authenticated") && stderr.contains("operator"),
        "the token name is logged at debug level"
    );
    assert!(
        stderr.contains("alert") && stderr.contains("rule=idle"),
        "the run produced an alert"
    );
    assert!(stderr.contains("TRACE"), "trace lines were captured");
    assert!(
        stderr.contains("rollup_error"),
        "the failed delivery was logged"
    );
    let spec = agent_monitor::api::spec_yaml();

    let webhook_path = slack.url.split_once("/services/").unwrap().1.to_string();
    let mut secrets: Vec<(&str, String)> = vec![
        ("client secret", sim.client_secret().to_string()),
        ("webhook URL", slack.url.clone()),
        ("webhook path", webhook_path),
        ("API token", API_TOKEN.to_string()),
        ("API token", OTHER_TOKEN.to_string()),
    ];
    for token in oauth_tokens {
        secrets.push(("OAuth token", token));
    }
    let outputs = [
        ("stdout", stdout.as_str()),
        ("stderr", stderr.as_str()),
        ("API responses", &responses.join("\n")),
        ("spec", spec.as_str()),
    ];
    for (what, secret) in &secrets {
        for (name, text) in outputs {
            if let Some(at) = text.find(secret.as_str()) {
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                panic!(
                    "{what} found in {name}: {}",
                    &text[line_start..line_end].replace(secret.as_str(), "<SECRET>")
                );
            }
        }
    }
    for path in [&db, &tokens_file, &out_path, &err_path] {
        let _ = std::fs::remove_file(path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_json_object_per_line() {
    let sim = start_sim(2).await;
    let db = temp_db_path();
    let err_path = db.with_extension("stderr");
    let port = free_port();
    let child = run_on_sim(&sim, &db, port)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info,agent_monitor=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // A file, not a pipe: nobody reads a pipe until the child exits.
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    wait_for(
        "the binary to be ready",
        Duration::from_secs(60),
        || async {
            let r = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    // The exit status is `process.rs`'s business; every line must be JSON whatever it is.
    let (code, _, _) = stop(child).await;
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        !stderr.trim().is_empty(),
        "exit status {code:?}, no log lines"
    );
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in &lines {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
        assert!(line["fields"]["message"].is_string(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "REST API listening"),
        "{stderr}"
    );
    // Spans carry the channel id on the connection actor's lines.
    assert!(
        lines.iter().any(|l| l["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "connection"))),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&db);
    let _ = std::fs::remove_file(&err_path);
}

#[test]
fn a_bad_log_format_exits_2_with_one_line() {
    for command in ["run", "demo"] {
        let out = Command::new(BIN)
            .arg(command)
            .env_clear()
            .env("GENESYS_REGION", "mypurecloud.ie")
            .env("GENESYS_CLIENT_ID", "id")
            .env("GENESYS_CLIENT_SECRET", "topsecret-value")
            .env("LOG_FORMAT", "xml")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains("LOG_FORMAT"), "{stderr}");
    }
}

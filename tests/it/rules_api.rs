//! The alerting API against the real service: rules in force, reload (API and SIGHUP) and
//! silences, with their validation.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agent_monitor::app::App;
use agent_monitor::rules::RuleSet;
use serde_json::{Value, json};

use crate::helpers::{SlackReceiver, rules_file, wait_for};
use crate::service::{Harness, Opts, config_for, run_on_sim, start_sim, temp_db_path};

const NOT_RESPONDING_RULE: &str = r#"
[[rules]]
name = "not-responding"
threshold = "1m"
severity = "critical"
[rules.match]
routing_status = "NOT_RESPONDING"
"#;

const BREAK_RULE: &str = r#"
[[rules]]
name = "long-break"
threshold = "20m"
[rules.match]
system_presence = "BREAK"
"#;

async fn start_with_rules(path: &PathBuf) -> Harness {
    let sim = start_sim(2).await;
    let slack = SlackReceiver::start().await;
    let opts = Opts {
        agents: 2,
        ..Opts::default()
    };
    let mut config = config_for(&sim, &slack, &temp_db_path(), &opts);
    config.rules = Arc::new(RuleSet::load(path).unwrap());
    config.rules_path = Some(path.clone());
    let app = App::start(config).await.unwrap();
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

async fn rule_names(h: &Harness) -> Vec<String> {
    let (status, body) = h.get("/api/v1/rules").await;
    assert_eq!(status, 200, "{body}");
    body["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

async fn post(h: &Harness, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = h.http.post(format!("{}{path}", h.base));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_in_force_and_reload_keep_the_running_rules_when_the_file_is_invalid() {
    let path = rules_file(NOT_RESPONDING_RULE);
    let h = start_with_rules(&path).await;
    let (_, body) = h.get("/api/v1/rules").await;
    assert_eq!(body["source"], path.display().to_string());
    assert_eq!(body["rules"][0]["name"], "not-responding");
    assert_eq!(body["rules"][0]["threshold_seconds"], 60.0);
    assert_eq!(body["rules"][0]["severity"], "critical");
    assert_eq!(
        body["rules"][0]["any_of"][0]["routing_status"][0],
        "NOT_RESPONDING"
    );

    // An invalid file: refused with every problem by line, the running rules stay.
    std::fs::write(
        &path,
        "[[rules]]\nname = \"x\"\nthreshold = \"soon\"\nstate = \"idle\"\n",
    )
    .unwrap();
    let (status, refused) = post(&h, "/api/v1/rules/reload", None).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["applied"], false);
    let problems: Vec<&str> = refused["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems.len() >= 2 && problems.iter().all(|p| p.contains("line ")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("threshold")),
        "{problems:?}"
    );
    assert_eq!(rule_names(&h).await, ["not-responding"]);
    let (_, body) = h.get("/api/v1/rules").await;
    assert_eq!(body["last_reload"]["applied"], false);

    // An empty (truncated) file is refused too: it would turn alerting off.
    std::fs::write(&path, "").unwrap();
    let (status, refused) = post(&h, "/api/v1/rules/reload", None).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["problems"].to_string().contains("defines no rules"),
        "{refused}"
    );
    assert_eq!(rule_names(&h).await, ["not-responding"]);

    // A valid one replaces them.
    std::fs::write(&path, BREAK_RULE).unwrap();
    let (status, applied) = post(&h, "/api/v1/rules/reload", None).await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(rule_names(&h).await, ["long-break"]);
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_are_validated_listed_and_deleted() {
    let path = rules_file(NOT_RESPONDING_RULE);
    let h = start_with_rules(&path).await;
    let user = h.ids[0].clone();
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    for (body, names) in [
        (json!({"until": future, "comment": "x"}), "rule, user_id"),
        (
            json!({"rule": "nope", "until": future, "comment": "x"}),
            "not-responding",
        ),
        (
            json!({"rule": "not-responding", "until": past, "comment": "x"}),
            "future",
        ),
        (
            json!({"rule": "not-responding", "until": "tomorrow", "comment": "x"}),
            "until",
        ),
        (
            json!({"rule": "not-responding", "until": "2030-01-01T00:00:00", "comment": "x"}),
            "until",
        ),
        (
            json!({"user_id": user, "until": future, "comment": "  "}),
            "comment",
        ),
        (json!({"user_id": user, "comment": "x"}), "until"),
    ] {
        let (status, answer) = post(&h, "/api/v1/silences", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(names),
            "{body}: {answer}"
        );
    }
    let (status, created) = post(
        &h,
        "/api/v1/silences",
        Some(json!({"rule": "not-responding", "user_id": user.to_uppercase(), "until": future, "comment": "coaching"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["user_id"], user.as_str(), "stored lowercase");
    assert_eq!(created["active"], true);
    let id = created["id"].as_i64().unwrap();
    let (_, listed) = h.get("/api/v1/silences").await;
    assert_eq!(listed["data"][0]["id"], id);

    let delete = |path: String| {
        let http = h.http.clone();
        async move { http.delete(path).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        delete(format!("{}/api/v1/silences/{id}", h.base)).await,
        204
    );
    assert_eq!(
        delete(format!("{}/api/v1/silences/{id}", h.base)).await,
        404
    );
    assert_eq!(delete(format!("{}/api/v1/silences/abc", h.base)).await, 400);
    let body: serde_json::Value = h
        .http
        .delete(format!("{}/api/v1/silences/abc", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`id` must be an integer") && !error.contains("param0"),
        "{body}"
    );
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules_file() {
    let path = rules_file(NOT_RESPONDING_RULE);
    let sim = start_sim(1).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = run_on_sim(&sim, &temp_db_path(), port)
        .env("RULES_FILE", &path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let rules_url = format!("http://127.0.0.1:{port}/api/v1/rules");
    let names = || {
        let http = http.clone();
        let url = rules_url.clone();
        async move {
            let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            Some(
                body["rules"]
                    .as_array()?
                    .iter()
                    .filter_map(|r| r["name"].as_str().map(String::from))
                    .collect::<Vec<_>>(),
            )
        }
    };
    wait_for(
        "the service with the first rules",
        Duration::from_secs(30),
        || async { (names().await? == ["not-responding"]).then_some(()) },
    )
    .await;
    std::fs::write(&path, BREAK_RULE).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    wait_for("the reloaded rules", Duration::from_secs(30), || async {
        (names().await? == ["long-break"]).then_some(())
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

//! The `agent-monitor` binary as an operator runs it: exit statuses, one-line configuration
//! errors without secrets, and a SIGTERM that commits everything accepted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_monitor::sim::Simulator;
use sea_orm::{ConnectionTrait, Database, Statement};

use crate::helpers::wait_for;
use crate::service::{run_on_sim, start_sim, temp_db_path};

const BIN: &str = env!("CARGO_BIN_EXE_agent-monitor");

/// Runs `agent-monitor run` with exactly these environment variables; returns (status, stderr).
fn run_with_env(env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("run")
        .env_clear()
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_2_with_one_clear_line() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "GENESYS_REGION"),
        (
            &[
                ("GENESYS_REGION", "mars-1"),
                ("GENESYS_CLIENT_ID", "id"),
                ("GENESYS_CLIENT_SECRET", "topsecret"),
            ],
            "GENESYS_REGION",
        ),
        (
            &[
                ("GENESYS_REGION", "mypurecloud.ie"),
                ("GENESYS_CLIENT_SECRET", "topsecret"),
            ],
            "GENESYS_CLIENT_ID",
        ),
        (
            &[
                ("GENESYS_REGION", "mypurecloud.ie"),
                ("GENESYS_CLIENT_ID", "id"),
            ],
            "GENESYS_CLIENT_SECRET",
        ),
        (
            &[
                ("GENESYS_REGION", "mypurecloud.ie"),
                ("GENESYS_CLIENT_ID", "id"),
                ("GENESYS_CLIENT_SECRET", "topsecret"),
                ("IDLE_THRESHOLD", "soon"),
            ],
            "IDLE_THRESHOLD",
        ),
        (
            &[
                ("GENESYS_REGION", "mypurecloud.ie"),
                ("GENESYS_CLIENT_ID", "id"),
                ("GENESYS_CLIENT_SECRET", "topsecret"),
                ("SLACK_WEBHOOK_URL", "http://example.com/topsecret"),
            ],
            "SLACK_WEBHOOK_URL",
        ),
        (
            &[
                ("GENESYS_REGION", "mypurecloud.ie"),
                ("GENESYS_CLIENT_ID", "id"),
                ("GENESYS_CLIENT_SECRET", "topsecret"),
                ("DATABASE_URL", "mysql://u:topsecret@h/db"),
            ],
            "DATABASE_URL",
        ),
        (
            &[
                ("GENESYS_REGION", "mypurecloud.ie"),
                ("GENESYS_CLIENT_ID", "id"),
                ("GENESYS_CLIENT_SECRET", "topsecret"),
                ("LISTEN_ADDR", "everywhere"),
            ],
            "LISTEN_ADDR",
        ),
        (
            &[
                ("GENESYS_REGION", "mypurecloud.ie"),
                ("GENESYS_CLIENT_ID", "id"),
                ("GENESYS_CLIENT_SECRET_FILE", "/nonexistent/secret"),
            ],
            "GENESYS_CLIENT_SECRET_FILE",
        ),
    ];
    for (env, variable) in cases {
        let (code, stderr) = run_with_env(env);
        assert_eq!(code, 2, "{env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line for {env:?}: {stderr}");
        assert!(
            lines[0].contains(variable),
            "{variable} named in {stderr:?}"
        );
        assert!(
            !stderr.contains("topsecret"),
            "a secret was echoed: {stderr}"
        );
    }
}

#[test]
fn unusable_sqlite_paths_exit_2_naming_the_variable_and_the_path() {
    let cases = [
        // /proc exists and is a directory, but no file can be created in it.
        (
            "sqlite:///proc/agent-monitor-test.db",
            "/proc/agent-monitor-test.db",
        ),
        (
            "sqlite:///dev/null/x.db",
            "/dev/null exists but is not a directory",
        ),
    ];
    for (url, expected) in cases {
        let (code, stderr) = run_with_env(&[
            ("GENESYS_REGION", "mypurecloud.ie"),
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "topsecret"),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("DATABASE_URL", url),
        ]);
        assert_eq!(code, 2, "{url}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line for {url}: {stderr}");
        assert!(
            lines[0].starts_with("error: DATABASE_URL: ") && lines[0].contains(expected),
            "{url}: {stderr}"
        );
        for internal in ["at line", "Connection Error", "code:", "[redacted]"] {
            assert!(
                !lines[0].contains(internal),
                "{url}: driver internals in {stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_exit_2_pointing_at_region_and_credentials() {
    let sim = start_sim(1).await;
    let db = temp_db_path();
    let base = sim.base_url();
    let db_url = format!("sqlite://{}", db.display());
    let env: Vec<(String, String)> = vec![
        ("GENESYS_API_URL".into(), base.clone()),
        ("GENESYS_LOGIN_URL".into(), base.clone()),
        ("GENESYS_CLIENT_ID".into(), sim.client_id().to_string()),
        ("GENESYS_CLIENT_SECRET".into(), "wrong-secret-value".into()),
        ("DATABASE_URL".into(), db_url),
        ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
    ];
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_with_env(&env)
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("invalid_client") || stderr.contains("credentials"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-secret-value"),
        "secret echoed: {stderr}"
    );
    // The fatal error is the message: nothing announces a retry that will not happen.
    assert!(
        !stderr.contains("retrying"),
        "a retry announced before a fatal error: {stderr}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The binary on a simulator of `agents` agents with nothing flushed before the stop (an hour's
/// flush interval, a huge batch), after `changes` routing changes have reached their agents:
/// the snapshot's rows (2 per agent) and the stream's stay buffered. The simulator (keep it
/// alive), the child (stderr piped) and its SQLite file.
async fn buffered_service(agents: usize, changes: usize) -> (Simulator, Child, PathBuf) {
    let sim = start_sim(agents).await;
    let ids = sim.agent_ids().await.unwrap();
    let db = temp_db_path();
    let port = free_port();
    let child = run_on_sim(&sim, &db, port)
        .env("FLUSH_INTERVAL", "1h")
        .env("BATCH_ROWS", "100000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    wait_for(
        "the binary to be ready",
        Duration::from_secs(30),
        || async {
            let r = http.get(&readyz).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let statuses = ["INTERACTING", "IDLE", "NOT_RESPONDING", "OFF_QUEUE"];
    for i in 0..changes {
        sim.set_routing_status(&ids[i % agents], statuses[i % statuses.len()])
            .await
            .unwrap();
        // Distinct Genesys timestamps for the same user.
        if i % agents == agents - 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    wait_for(
        "every event routed to its agent",
        Duration::from_secs(30),
        || async {
            let body: serde_json::Value = http.get(&readyz).send().await.ok()?.json().await.ok()?;
            (body["connections"][0]["events"].as_u64() == Some(changes as u64)).then_some(())
        },
    )
    .await;
    (sim, child, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_everything_accepted_and_exits_0_within_10s() {
    const AGENTS: usize = 5;
    const CHANGES: usize = 40;
    let (_sim, child, db) = buffered_service(AGENTS, CHANGES).await;

    let stopped = Instant::now();
    sigterm(&child);
    let (code, stderr) = wait_exit(child, Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "exit status; stderr: {stderr}");
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "stopped within 10 s"
    );

    let conn = Database::connect(format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let conn = conn.clone();
        async move {
            let row = conn
                .query_one_raw(Statement::from_string(
                    conn.get_database_backend(),
                    sql.to_string(),
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap()
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM agent_status WHERE source = 'stream'").await,
        CHANGES as i64
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM agent_status WHERE source = 'bootstrap'").await,
        2 * AGENTS as i64
    );
}

/// Waits for `child` to exit, at most `limit`; kills it (and fails) past that. Returns the exit
/// status and everything it wrote on stderr (read as it comes: a full pipe would block the
/// child's logging, and with it the child).
async fn wait_exit(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut stderr = String::new();
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
        stderr
    });
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = reader.join().unwrap();
        match status {
            Some(status) => (status.code(), stderr),
            None => panic!("still running {limit:?} after SIGTERM; stderr: {stderr}"),
        }
    })
    .await
    .unwrap()
}

/// The final flush cannot commit (another process holds SQLite's write lock through the whole
/// stop): the process still stops within the shutdown grace, exits 1 (not 0) and says in one
/// line how many transitions were not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_unconfirmed_final_flush_exits_1_within_the_grace_naming_the_count() {
    const AGENTS: usize = 3;
    const CHANGES: usize = 12;
    let (_sim, child, db) = buffered_service(AGENTS, CHANGES).await;

    // Another process takes the write lock and keeps it until the service has exited.
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let stopped = Instant::now();
    sigterm(&child);
    let (code, stderr) = wait_exit(child, Duration::from_secs(30)).await;
    let took = stopped.elapsed();
    locker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(code, Some(1), "exit status; stderr: {stderr}");
    assert!(
        took < Duration::from_secs(12),
        "stopped within the grace, took {took:?}; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line; stderr: {stderr}");
    assert!(
        lines[0].contains(&format!(
            "{} transitions were not committed",
            CHANGES + 2 * AGENTS
        )),
        "the line gives the count: {}",
        lines[0]
    );
}

/// Parses the Prometheus text format strictly enough to catch malformed output: every line is
/// `# HELP`, `# TYPE`, or `name{label="value",…} number`. Returns `(series, value)` pairs with
/// the series as printed (`name{labels}`).
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment line {line:?}"
            );
            if let Some(t) = rest.strip_prefix("TYPE ") {
                let kind = t.split_whitespace().nth(1).unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line:?}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
        }
        samples.push((series.to_string(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_a_known_scenario_exactly() {
    let sim = start_sim(3).await;
    let ids = sim.agent_ids().await.unwrap();
    let db = temp_db_path();
    let port = free_port();
    // Its own process: the metrics recorder is process-wide, so counts are this scenario's only.
    let mut child = run_on_sim(&sim, &db, port)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let scrape = || {
        let http = http.clone();
        let url = format!("{base}/metrics");
        async move {
            let response = http.get(url).send().await.ok()?;
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain")
            );
            Some(parse_prometheus(&response.text().await.ok()?))
        }
    };
    wait_for(
        "6 bootstrap transitions stored",
        Duration::from_secs(30),
        || async {
            let samples = scrape().await?;
            (sample(&samples, "agent_monitor_transitions_stored_total") == 6.0).then_some(())
        },
    )
    .await;

    for (i, status) in ["INTERACTING", "OFF_QUEUE", "NOT_RESPONDING", "IDLE"]
        .iter()
        .enumerate()
    {
        sim.set_routing_status(&ids[i % 3], status).await.unwrap();
    }
    sim.send_raw_frame("{not json").await.unwrap();
    sim.send_raw_frame(
        r#"{"topicName":"v2.users.u1.presence","eventBody":{"presenceDefinition":{"id":"x"}}}"#,
    )
    .await
    .unwrap();
    sim.send_raw_frame(
        r#"{"topicName":"v2.users.00000000-0000-0000-0000-00000000dead.routingStatus","eventBody":{"id":"x","routingStatus":{"status":"IDLE","startTime":"2024-05-01T10:00:00Z"}}}"#,
    )
    .await
    .unwrap();

    let samples = wait_for(
        "10 transitions and 1 unknown-user event",
        Duration::from_secs(30),
        || async {
            let samples = scrape().await?;
            (sample(&samples, "agent_monitor_transitions_stored_total") == 10.0
                && sample(&samples, "agent_monitor_unknown_user_events_total") == 1.0)
                .then_some(samples)
        },
    )
    .await;
    assert_eq!(
        sample(&samples, "agent_monitor_malformed_messages_total"),
        2.0
    );
    assert_eq!(
        sample(
            &samples,
            "agent_monitor_notifications_received_total{kind=\"routing\"}"
        ),
        5.0
    );
    assert_eq!(sample(&samples, "agent_monitor_channels"), 1.0);
    assert_eq!(sample(&samples, "agent_monitor_subscribed_topics"), 3.0);
    assert_eq!(sample(&samples, "agent_monitor_token_renewals_total"), 1.0);
    assert_eq!(sample(&samples, "agent_monitor_reconnects_total"), 0.0);
    let routing_agents: f64 = samples
        .iter()
        .filter(|(s, _)| s.starts_with("agent_monitor_agents{") && s.contains("kind=\"routing\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        routing_agents, 3.0,
        "every agent counted once by routing status"
    );
    assert_eq!(
        sample(
            &samples,
            "agent_monitor_agents{kind=\"routing\",state=\"OFF_QUEUE\"}"
        ),
        1.0
    );
    assert!(
        samples
            .iter()
            .any(|(s, _)| s.starts_with("agent_monitor_write_batch_duration_seconds_bucket"))
    );

    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Starts `agent-monitor run` on `sim` in its own process (the metrics recorder is
/// process-wide, so its figures are this scenario's only), with `extra` variables.
fn spawn_service(
    sim: &agent_monitor::sim::Simulator,
    port: u16,
    extra: &[(&str, String)],
) -> Child {
    let db = temp_db_path();
    run_on_sim(sim, &db, port)
        .env("RUST_LOG", "error")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// One scrape of `/metrics` on `port`, parsed; `None` while the service does not answer.
async fn scrape(port: u16) -> Option<Vec<(String, f64)>> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    Some(parse_prometheus(&response.text().await.ok()?))
}

async fn stop_with_sigterm(child: Child) {
    sigterm(&child);
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The metric names the README's Metrics section lists.
fn readme_metrics() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("\n## Metrics")
        .expect("README has a Metrics section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut names: Vec<String> = section
        .split('`')
        .filter_map(|chunk| {
            let name: String = chunk
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            name.starts_with("agent_monitor_").then_some(name)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_service_shows_every_metric_the_readme_lists() {
    let names = readme_metrics();
    assert!(names.len() >= 20, "README metrics: {names:?}");
    let sim = start_sim(2).await;
    let port = free_port();
    let child = spawn_service(&sim, port, &[]);
    wait_for("the service ready", Duration::from_secs(30), || async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    // The clock offset and the first write batch come shortly after readiness.
    let samples = wait_for(
        "the first measurements",
        Duration::from_secs(30),
        || async {
            let samples = scrape(port).await?;
            let has = |name: &str| samples.iter().any(|(s, _)| s.starts_with(name));
            (has("agent_monitor_clock_offset_seconds")
                && has("agent_monitor_write_batch_rows_count"))
            .then_some(samples)
        },
    )
    .await;
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| {
            !samples.iter().any(|(series, _)| {
                let rest = &series[..];
                rest == name.as_str()
                    || rest.strip_prefix(name.as_str()).is_some_and(|tail| {
                        tail.starts_with('{')
                            || ["_bucket", "_sum", "_count"]
                                .iter()
                                .any(|suffix| tail.starts_with(suffix))
                    })
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "absent from a fresh /metrics: {missing:?}"
    );
    assert_eq!(
        sample(&samples, "agent_monitor_malformed_messages_total"),
        0.0
    );
    assert_eq!(sample(&samples, "agent_monitor_delivery_queue_depth"), 0.0);
    stop_with_sigterm(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_queue_gauge_returns_to_zero_whatever_became_of_the_alerts() {
    let slack = crate::helpers::SlackReceiver::start().await;
    // Three rules on the same idle agents: one delivered, one to the `default` destination
    // that is not configured, one muted by quiet hours covering the whole day.
    let rules = crate::helpers::rules_file(
        r#"
[[destinations]]
name = "hook"
type = "slack"
url_env = "AGENT_MONITOR_TEST_HOOK_URL"

[[rules]]
name = "delivered"
threshold = "1s"
destination = "hook"
[rules.match]
routing_status = "IDLE"

[[rules]]
name = "nowhere"
threshold = "1s"
[rules.match]
routing_status = "IDLE"

[[rules]]
name = "muted"
threshold = "1s"
destination = "hook"
[rules.match]
routing_status = "IDLE"
[[rules.quiet_hours]]
time_zone = "UTC"
windows = ["00:00-24:00"]
"#,
    );
    let sim = start_sim(2).await;
    let port = free_port();
    let child = spawn_service(
        &sim,
        port,
        &[
            ("RULES_FILE", rules.display().to_string()),
            ("AGENT_MONITOR_TEST_HOOK_URL", slack.url.clone()),
            ("ALLOW_INSECURE_WEBHOOKS", "true".into()),
            ("ALERT_GROUP_WAIT", "0s".into()),
        ],
    );
    let statuses = wait_for(
        "6 alerts with a final outcome",
        Duration::from_secs(60),
        || async {
            let body: serde_json::Value =
                reqwest::get(format!("http://127.0.0.1:{port}/api/v1/alerts?limit=100"))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
            let mut statuses: Vec<String> = body["data"]
                .as_array()?
                .iter()
                .map(|a| {
                    format!(
                        "{}:{}",
                        a["rule"].as_str().unwrap_or_default(),
                        a["delivery_status"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            statuses.sort();
            (statuses.len() == 6 && !statuses.iter().any(|s| s.ends_with(":pending")))
                .then_some(statuses)
        },
    )
    .await;
    assert_eq!(
        statuses,
        [
            "delivered:delivered",
            "delivered:delivered",
            "muted:suppressed",
            "muted:suppressed",
            "nowhere:not_configured",
            "nowhere:not_configured",
        ]
    );
    let samples = scrape(port).await.expect("metrics");
    assert_eq!(
        sample(&samples, "agent_monitor_alerts_delivered_total"),
        2.0
    );
    assert_eq!(
        sample(&samples, "agent_monitor_delivery_queue_depth"),
        0.0,
        "every alert left the queue"
    );
    stop_with_sigterm(child).await;
}

/// Runs the binary with `args` and an empty environment; returns (status, stderr).
fn run_args(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_on_2xx_and_1_otherwise() {
    let sim = start_sim(1).await;
    let port = free_port();
    let child = spawn_service(&sim, port, &[]);
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let probe = |url: String| {
        tokio::task::spawn_blocking(move || run_args(&["healthcheck", "--url", &url]))
    };
    wait_for("the API listening", Duration::from_secs(30), || async {
        reqwest::get(&healthz).await.ok().map(|_| ())
    })
    .await;
    let (code, stderr) = probe(healthz.clone()).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    // A 404 and a refused connection are unhealthy, with one line saying why.
    let (code, stderr) = probe(format!("http://127.0.0.1:{port}/no-such-probe"))
        .await
        .unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
    let closed = free_port();
    let (code, stderr) = probe(format!("http://127.0.0.1:{closed}/healthz"))
        .await
        .unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("unhealthy:"), "{stderr}");
    // Not a URL: a usage error.
    let (code, _) = probe("127.0.0.1:8080".into()).await.unwrap();
    assert_eq!(code, 2);
    stop_with_sigterm(child).await;
}

#[test]
fn demo_refuses_a_speed_of_zero_as_a_usage_error() {
    for speed in ["0", "-1", "NaN", "fast"] {
        let (code, stderr) = run_args(&["demo", &format!("--speed={speed}")]);
        assert_eq!(code, 2, "--speed {speed}: {stderr}");
        assert!(stderr.contains("--speed"), "{stderr}");
    }
}

/// An empty (or truncated) rules file would turn alerting off: the start is refused with
/// status 2, naming the file and why.
#[test]
fn an_empty_rules_file_exits_2_naming_it() {
    let path = crate::helpers::rules_file("");
    let file = path.display().to_string();
    let (code, stderr) = run_with_env(&[
        ("GENESYS_REGION", "mypurecloud.ie"),
        ("GENESYS_CLIENT_ID", "id"),
        ("GENESYS_CLIENT_SECRET", "topsecret"),
        ("RULES_FILE", &file),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("RULES_FILE"), "{stderr}");
    assert!(stderr.contains(&file), "{stderr}");
    assert!(stderr.contains("defines no rules"), "{stderr}");
}

/// The `Database:` path a running demo prints, read from its stdout within `deadline`.
fn demo_database(child: &mut Child, deadline: Duration) -> std::path::PathBuf {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.trim().strip_prefix("Database:") {
                let path = rest
                    .split(" (")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                let _ = tx.send(path);
            }
        }
    });
    let path = rx
        .recv_timeout(deadline)
        .expect("the demo prints its database path");
    std::path::PathBuf::from(path)
}

/// Two demos (another port, or a re-run) never share a database: each gets a fresh file in
/// its own temp directory, printed at start and deleted when it stops.
#[test]
fn each_demo_run_gets_a_fresh_database_deleted_at_exit() {
    let start = || {
        Command::new(BIN)
            .args(["demo", "--agents", "2", "--listen", "127.0.0.1:0"])
            .env_clear()
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut first, mut second) = (start(), start());
    let a = demo_database(&mut first, Duration::from_secs(30));
    let b = demo_database(&mut second, Duration::from_secs(30));
    assert_ne!(a, b);
    for db in [&a, &b] {
        assert!(db.starts_with(std::env::temp_dir()), "{}", db.display());
        assert!(db.exists(), "{}", db.display());
        assert!(!db.starts_with(std::env::current_dir().unwrap()));
    }
    for (child, db) in [(&mut first, &a), (&mut second, &b)] {
        sigterm(child);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0));
        assert!(!db.parent().unwrap().exists(), "{} kept", db.display());
    }
}

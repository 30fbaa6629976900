//! The whole service on the simulator, as the end-to-end tests start it (`tests/it/service.rs`):
//! `App::start` with a SQLite file under `target/bench-data/`, the real actors, the REST API on
//! loopback, the simulator over loopback HTTP and WebSocket. Figures 1, 6 and 7 use it.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_monitor::app::App;
use agent_monitor::config::{
    AccessConfig, Config, Credentials, DeliveryConfig, DestinationConfig, GenesysConfig,
    GenesysEndpoints, LogFormat, MembershipConfig, PersistenceConfig,
};
use agent_monitor::secret::Secret;
use agent_monitor::sim::{SimConfig, Simulator};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;

use crate::common::bench_data_dir;

/// The simulator with autopilot off (every agent ON_QUEUE and IDLE), as the tests start it.
pub async fn start_sim(agents: usize, tune: impl FnOnce(&mut SimConfig)) -> Simulator {
    let mut cfg = SimConfig {
        agents,
        autopilot: false,
        heartbeat_interval: Duration::from_secs(5),
        socket_closing_grace: Duration::from_secs(5),
        ..SimConfig::default()
    };
    tune(&mut cfg);
    Simulator::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .expect("start simulator")
}

/// A fresh database path `target/bench-data/<name>.db` (any old file and its WAL removed).
pub fn fresh_db(name: &str) -> PathBuf {
    let path = bench_data_dir().join(format!("{name}.db"));
    remove_db(&path);
    path
}

/// Removes a SQLite file and its `-wal`/`-shm` companions.
pub fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// Service knobs the figures change; everything else is the service's default.
pub struct Knobs {
    /// `GENESYS_RATE_LIMIT` (default 300 a minute).
    pub rate_limit_per_minute: NonZeroU32,
    /// `BACKFILL_MARGIN` (default 60 s).
    pub backfill_margin: Duration,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            rate_limit_per_minute: agent_monitor::config::DEFAULT_GENESYS_RATE_LIMIT,
            backfill_margin: MembershipConfig::default().backfill_margin,
        }
    }
}

/// The service's configuration against `sim`: persistence batch defaults (500 rows, 100 ms),
/// 1,000 topics per channel, a 1-hour idle threshold (no alert fires during a figure) and a
/// Slack destination nobody listens on (never called).
pub fn config_for(sim: &Simulator, db: &Path, knobs: &Knobs) -> Config {
    let base = url::Url::parse(&sim.base_url()).unwrap();
    let idle_threshold = Duration::from_secs(3600);
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
            ping_interval: Duration::from_secs(20),
            silence_timeout: Duration::from_secs(60),
            topics_per_channel: 1000,
            request_timeout: Duration::from_secs(10),
            rate_limit_per_minute: knobs.rate_limit_per_minute,
        },
        membership: MembershipConfig {
            backfill_margin: knobs.backfill_margin,
            ..MembershipConfig::default()
        },
        delivery: DeliveryConfig {
            destinations: vec![DestinationConfig::slack(
                "default",
                Secret::new("http://127.0.0.1:9/never-called".to_string()),
            )],
            ..DeliveryConfig::default()
        },
        database_url: Secret::new(format!("sqlite://{}?mode=rwc", db.display())),
        idle_threshold,
        rules: std::sync::Arc::new(agent_monitor::rules::RuleSet::builtin_idle(idle_threshold)),
        rules_path: None,
        listen_addr: ([127, 0, 0, 1], 0).into(),
        persistence: PersistenceConfig::default(),
        shutdown_grace: Duration::from_secs(10),
        max_report_window: agent_monitor::api::DEFAULT_MAX_WINDOW,
        access: AccessConfig::default(),
        retention: None,
        log_format: LogFormat::Text,
    }
}

/// A running service and its simulator.
pub struct Service {
    pub sim: Simulator,
    pub app: App,
    base: String,
    http: reqwest::Client,
}

impl Service {
    /// `App::start` on `sim` (returns at once; the bootstrap runs in the background).
    pub async fn start(sim: Simulator, db: &Path, knobs: &Knobs) -> Service {
        let app = App::start(config_for(&sim, db, knobs))
            .await
            .expect("App::start");
        let base = format!("http://{}", app.api_addr());
        Service {
            sim,
            app,
            base,
            http: reqwest::Client::new(),
        }
    }

    /// `GET /readyz`: (ready, body).
    pub async fn readyz(&self) -> (bool, Value) {
        match self.http.get(format!("{}/readyz", self.base)).send().await {
            Ok(resp) => {
                let ok = resp.status().as_u16() == 200;
                (ok, resp.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (false, Value::Null),
        }
    }

    /// The sum of one Prometheus series (all its label sets) from `GET /metrics`, 0 if absent.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let Ok(resp) = self.http.get(format!("{}/metrics", self.base)).send().await else {
            return 0.0;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// One integer from SQL.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let db = self.app.db();
        db.query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_string(),
        ))
        .await
        .expect("query")
        .and_then(|row| row.try_get_by_index::<Option<i64>>(0).ok().flatten())
        .unwrap_or(0)
    }

    /// Rows in `agent_status` (its largest id: rows are only ever inserted here, and it is
    /// a rowid lookup where `COUNT(*)` would scan an index).
    pub async fn rows(&self) -> i64 {
        self.scalar("SELECT MAX(id) FROM agent_status").await
    }

    /// Waits until readyz says ready and `agent_status` holds `rows` rows (every agent's two
    /// bootstrap rows). Returns the time it took from `since`, or `None` after `limit`.
    pub async fn wait_ready_with_rows(
        &self,
        rows: i64,
        since: Instant,
        limit: Duration,
    ) -> Option<Duration> {
        loop {
            if self.rows().await >= rows && self.readyz().await.0 {
                return Some(since.elapsed());
            }
            if since.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the service, then the simulator.
    pub async fn stop(self) {
        self.app.shutdown().await;
        self.sim.shutdown().await;
    }
}

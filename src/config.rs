//! Validated configuration of the `run` command. [`crate::cli`] turns flags and environment
//! variables into a [`Config`]; everything here is already checked, so the service never starts
//! on a silent default that hides a mistake.

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use crate::secret::Secret;

/// Where the Genesys Cloud REST API and login host are.
#[derive(Debug, Clone, PartialEq)]
pub struct GenesysEndpoints {
    /// `https://api.<domain>` or an override (`GENESYS_API_URL`); API paths are appended to it.
    pub api_base: Url,
    /// `https://login.<domain>` or an override (`GENESYS_LOGIN_URL`); `/oauth/token` is appended.
    pub login_base: Url,
    /// The region as configured (`mypurecloud.ie`), for error messages; `None` with overrides.
    pub region: Option<String>,
}

/// OAuth client for the client-credentials grant.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: Secret,
}

/// Everything the Genesys side of the service needs.
#[derive(Debug, Clone)]
pub struct GenesysConfig {
    pub endpoints: GenesysEndpoints,
    pub credentials: Credentials,
    /// Interval between `{"message":"ping"}` frames (default 20 s).
    pub ping_interval: Duration,
    /// Close and reconnect when nothing at all arrives for this long (default 60 s).
    pub silence_timeout: Duration,
    /// Topics per notification channel; Genesys allows at most 1,000.
    pub topics_per_channel: usize,
    /// Timeout of one REST request (default 30 s).
    pub request_timeout: Duration,
}

/// Batching of the persistence actor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PersistenceConfig {
    /// Flush when this many rows are buffered (default 500).
    pub batch_rows: usize,
    /// Flush at least this often while rows are buffered (default 100 ms).
    pub flush_interval: Duration,
    /// Transitions accepted but not yet committed before senders are made to wait (default 20,000).
    pub max_in_flight: usize,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            batch_rows: 500,
            flush_interval: Duration::from_millis(100),
            max_in_flight: 20_000,
        }
    }
}

/// Slack incoming webhook delivery.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// `None`: alerts are logged and stored but not sent.
    pub webhook_url: Option<Secret>,
    /// Timeout of one POST (default 10 s).
    pub timeout: Duration,
    /// Attempts for 5xx, timeouts and connection errors (default 4).
    pub max_attempts: u32,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            webhook_url: None,
            timeout: Duration::from_secs(10),
            max_attempts: 4,
        }
    }
}

/// The whole service configuration (`agent-monitor run`).
#[derive(Debug, Clone)]
pub struct Config {
    pub genesys: GenesysConfig,
    pub slack: SlackConfig,
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: Secret,
    /// Alert when an agent stays idle this long (default 15 minutes): the built-in `idle`
    /// rule's threshold when no rules file is given.
    pub idle_threshold: Duration,
    /// The alert rules in force at start: the rules file, or the built-in `idle` rule.
    pub rules: std::sync::Arc<crate::rules::RuleSet>,
    /// `RULES_FILE`, re-read on SIGHUP and `POST /api/v1/rules/reload`.
    pub rules_path: Option<std::path::PathBuf>,
    /// REST API address (default `127.0.0.1:8080`).
    pub listen_addr: SocketAddr,
    pub persistence: PersistenceConfig,
    /// Time allowed for a graceful stop after SIGINT/SIGTERM (10 s).
    pub shutdown_grace: Duration,
}

//! Validated configuration of the `run` command. [`crate::cli`] turns flags and environment
//! variables into a [`Config`]; everything here is already checked, so the service never starts
//! on a silent default that hides a mistake.

use std::net::SocketAddr;
use std::num::NonZeroU32;
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
    /// Client-side budget of REST requests per minute (`GENESYS_RATE_LIMIT`, default 300, the
    /// platform's per-token limit, protocol reference §8): at most this many API requests in any
    /// 60 s window, token requests not counted. See [`crate::genesys::RateBudget`].
    pub rate_limit_per_minute: NonZeroU32,
}

/// Default of `GENESYS_RATE_LIMIT`: 300 requests per minute per token (protocol reference §8).
pub const DEFAULT_GENESYS_RATE_LIMIT: NonZeroU32 = crate::genesys::GENESYS_REQUESTS_PER_MINUTE;
/// Which users are monitored and how gaps in the stream are recovered.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipConfig {
    /// `GENESYS_QUEUE_IDS` / `GENESYS_DIVISION_IDS`: which users are monitored (lowercase ids;
    /// empty = every active user).
    pub scope: crate::actors::membership::Scope,
    /// How often the monitored users are re-listed (`MEMBERSHIP_REFRESH`, default 10 min).
    pub refresh: Duration,
    /// Subtracted from the start of every gap before it is backfilled (`BACKFILL_MARGIN`,
    /// default 60 s): covers events in flight when a socket died and clock jitter.
    pub backfill_margin: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            scope: Default::default(),
            refresh: Duration::from_secs(600),
            backfill_margin: Duration::from_secs(60),
        }
    }
}

/// Batching of the persistence actor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PersistenceConfig {
    /// Flush when this many rows are buffered (default 500). While a batch is being written
    /// the next one keeps filling, so under load a batch holds whatever arrived during the
    /// previous write: this many rows or more (at most `max_in_flight` transitions).
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

/// What kind of endpoint a destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DestinationKind {
    /// A Slack incoming webhook: Block Kit payload, `200 ok` is success, Slack's error strings.
    Slack,
    /// A generic JSON webhook: the documented JSON body (`slack::blocks::webhook_body`), any 2xx
    /// is success.
    Webhook,
}

impl DestinationKind {
    /// `slack` or `webhook`, as written in the rules file and shown in `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Slack => "slack",
            DestinationKind::Webhook => "webhook",
        }
    }

    /// Parses `slack` / `webhook`.
    pub fn parse(raw: &str) -> Option<DestinationKind> {
        match raw {
            "slack" => Some(DestinationKind::Slack),
            "webhook" => Some(DestinationKind::Webhook),
            _ => None,
        }
    }
}

/// The implicit destination fed by `SLACK_WEBHOOK_URL`; alerts without a destination go there.
pub const DEFAULT_DESTINATION: &str = "default";

/// One named alert destination with its (validated, secret) URL.
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// Unique name (`default` for `SLACK_WEBHOOK_URL`).
    pub name: String,
    pub kind: DestinationKind,
    /// The URL is the credential: never logged.
    pub url: Secret,
}

impl DestinationConfig {
    /// A Slack destination.
    pub fn slack(name: impl Into<String>, url: Secret) -> Self {
        DestinationConfig {
            name: name.into(),
            kind: DestinationKind::Slack,
            url,
        }
    }

    /// A generic JSON webhook destination.
    pub fn webhook(name: impl Into<String>, url: Secret) -> Self {
        DestinationConfig {
            name: name.into(),
            kind: DestinationKind::Webhook,
            url,
        }
    }
}

/// Alert delivery: destinations, pacing, retries and grouping (`shared/alerting.md` §4.8–4.11).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Every destination; none: alerts are logged and stored but not sent (`not_configured`).
    pub destinations: Vec<DestinationConfig>,
    /// Timeout of one POST (default 10 s).
    pub timeout: Duration,
    /// Requests per message for 5xx, timeouts and connection errors (default 10).
    pub max_attempts: u32,
    /// A message is given up once retrying would pass this long after its first attempt
    /// (default 15 min).
    pub max_retry_time: Duration,
    /// First retry delay; doubles per failure up to `max_backoff`, jittered (default 1 s).
    pub base_backoff: Duration,
    /// Longest retry delay (default 60 s).
    pub max_backoff: Duration,
    /// Wait after a 429 without `Retry-After` (default 3 s).
    pub default_retry_after: Duration,
    /// Messages per destination at once (default 3) …
    pub burst: u32,
    /// … then one per this interval (default 1 s).
    pub send_interval: Duration,
    /// Alerts of one rule and destination that fire within this window share one message
    /// (default 10 s; zero: no grouping).
    pub group_wait: Duration,
    /// Agents listed in a grouped message before "+k more" (default 20).
    pub group_max_listed: usize,
    /// How long the active silences read from the database are reused (default 1 s).
    pub silence_cache: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            destinations: Vec::new(),
            timeout: Duration::from_secs(10),
            max_attempts: 10,
            max_retry_time: Duration::from_secs(15 * 60),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            default_retry_after: Duration::from_secs(3),
            burst: 3,
            send_interval: Duration::from_secs(1),
            group_wait: Duration::from_secs(10),
            group_max_listed: 20,
            silence_cache: Duration::from_secs(1),
        }
    }
}

/// The whole service configuration (`agent-monitor run`).
#[derive(Debug, Clone)]
pub struct Config {
    pub genesys: GenesysConfig,
    /// Monitored users (scope, re-listing) and gap backfill.
    pub membership: MembershipConfig,
    /// Alert destinations and delivery tuning.
    pub delivery: DeliveryConfig,
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
    /// Largest `[from, to)` window of the history, timeline and report API (default 366 days).
    pub max_report_window: Duration,
    /// Who may call the REST API, and the request limits.
    pub access: AccessConfig,
    /// Deletion of old history and alerts (`None`: keep everything).
    pub retention: Option<RetentionConfig>,
    /// Log line format (already applied by `main` when the service starts).
    pub log_format: LogFormat,
}

/// One API token: a name for the logs (never the token) and the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// From `name:token`, else `token-N` (1-based position in the list).
    pub name: String,
    pub token: Secret,
}

/// Access control and request limits of the REST API.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessConfig {
    /// Bearer tokens accepted on `/api/`; empty: the API is open (loopback only unless
    /// `ALLOW_UNAUTHENTICATED=true`).
    pub tokens: Vec<ApiToken>,
    /// Also require a token on `/healthz`, `/readyz` and `/metrics` (`PROTECT_PROBES`).
    pub protect_probes: bool,
    /// Longest query string accepted (bytes); longer answers 414.
    pub max_query_bytes: usize,
    /// Longest request body accepted (bytes); longer answers 413.
    pub max_body_bytes: usize,
    /// Longest one API database query may take before the request answers 503.
    pub query_timeout: Duration,
    /// A connection with no bytes read or written for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            tokens: Vec::new(),
            protect_probes: false,
            max_query_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            query_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Deletion of history (`agent_status` by `event_timestamp`) and alerts (by `fired_at`) older
/// than `keep`, in small batches, by the retention actor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetentionConfig {
    /// Rows older than this are deleted (`RETENTION_DAYS`).
    pub keep: Duration,
    /// Rows deleted per transaction (default 1,000).
    pub batch_rows: u64,
    /// Pause between two batches, so the persistence actor gets the write lock (default 50 ms).
    pub pause: Duration,
    /// Time between runs (default 1 hour).
    pub interval: Duration,
    /// Delay of the first run after start (default 30 s).
    pub first_run: Duration,
}

impl RetentionConfig {
    /// Keep `days` days, with the default batching and schedule.
    pub fn days(days: u32) -> Self {
        RetentionConfig {
            keep: Duration::from_secs(u64::from(days) * 86_400),
            batch_rows: 1000,
            pause: Duration::from_millis(50),
            interval: Duration::from_secs(3600),
            first_run: Duration::from_secs(30),
        }
    }
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why `raw` is not a duration, in words that suggest what to write: a bare number (`"10"`)
/// needs a unit (`"10s"` or `"10m"`), an unknown unit gets `90s` / `2m` / `1h` examples.
/// Used by the environment, the command line and the rules file.
pub fn explain_bad_duration(raw: &str, error: &humantime::DurationError) -> String {
    match error {
        humantime::DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => format!(
            "a time unit is needed: for example \"{value}s\" (seconds) or \"{value}m\" (minutes)"
        ),
        humantime::DurationError::UnknownUnit { unit, .. } => format!(
            "unknown time unit {unit:?}: use s, m, h or d, for example \"90s\", \"2m\" or \"1h\""
        ),
        humantime::DurationError::Empty => {
            "it is empty: write a duration such as \"90s\" or \"2m\"".to_owned()
        }
        other => format!("{other}; write a duration such as \"90s\", \"2m\" or \"1h\" ({raw:?})"),
    }
}

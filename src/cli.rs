//! The command line: `run`, `demo`, `simulate`, `openapi`, and the resolution of `run`'s flags
//! and environment variables into a validated [`Config`].
//!
//! Every setting has an environment variable and a `--flag`; a flag wins. Aliases
//! (`GENESYS_ENV`, `GENESYS_CLIENT_SECRET_FILE`, `DB_PATH`, `IDLE_THRESHOLD_MINUTES`) are
//! accepted, and giving an alias together with its main variable with different values is an
//! error rather than a silent choice. An invalid setting is a [`ConfigError`] naming the
//! variable; `main` prints it on one line and exits with status 2. Secrets are never echoed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use url::Url;

use crate::config::{
    AccessConfig, ApiToken, Config, Credentials, DEFAULT_DESTINATION, DeliveryConfig,
    DestinationConfig, DestinationKind, GenesysConfig, GenesysEndpoints, LogFormat,
    MembershipConfig, PersistenceConfig, RetentionConfig,
};
use crate::rules::{DestinationSpec, UrlSource};
use crate::secret::Secret;

/// agent-monitor: real-time Genesys Cloud agent monitor with transition history, Slack idle
/// alerts and a REST API.
#[derive(Debug, Parser)]
#[command(name = "agent-monitor", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service against Genesys Cloud.
    Run(Box<RunArgs>),
    /// Run the embedded simulator and the service together on loopback (no Genesys account).
    #[command(
        after_help = "Environment read as `run` reads it: API_TOKENS / API_TOKENS_FILE \
(bearer tokens for the REST API; with them every /api/ route needs `Authorization: Bearer \
<token>`), PROTECT_PROBES, ALLOW_UNAUTHENTICATED (a non-loopback --listen needs tokens or \
ALLOW_UNAUTHENTICATED=true), RETENTION_DAYS, SLACK_WEBHOOK_URL and LOG_FORMAT. Other settings \
of `run` (DATABASE_URL among them) are not read."
    )]
    Demo(DemoArgs),
    /// Run the embedded simulator alone and print the environment to point `run` at it.
    Simulate(SimulateArgs),
    /// Print the OpenAPI spec of the REST API as YAML.
    Openapi,
    /// Probe a running service (container HEALTHCHECK): exit 0 if the URL answers 2xx within
    /// the timeout, 1 otherwise.
    Healthcheck(HealthcheckArgs),
}

/// Settings of `healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The probe to request (GET). With PROTECT_PROBES=true the probes need a token, which
    /// this command does not send: probe a service whose probes are open.
    #[arg(long, default_value = "http://127.0.0.1:8080/healthz", value_parser = parse_probe_url)]
    pub url: Url,
    /// How long to wait for the answer: 5s, 500ms.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

fn parse_probe_url(raw: &str) -> Result<Url, String> {
    match Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
        _ => Err(format!("{raw:?} is not an http:// or https:// URL")),
    }
}

fn parse_timeout(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{raw:?} is not a duration greater than zero, like 5s"))
}

/// Settings of `run`. Each has an environment variable; flags win.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Genesys Cloud region: a domain (mypurecloud.com, mypurecloud.ie, usw2.pure.cloud, …) or
    /// an AWS region name (us-east-1, eu-west-1, …). Not needed when both base URLs are set.
    #[arg(long, env = "GENESYS_REGION")]
    pub region: Option<String>,
    /// Alias of GENESYS_REGION.
    #[arg(long = "genesys-env", env = "GENESYS_ENV")]
    pub region_alias: Option<String>,
    /// OAuth client id (client-credentials grant).
    #[arg(long, env = "GENESYS_CLIENT_ID")]
    pub client_id: Option<String>,
    /// OAuth client secret. Prefer GENESYS_CLIENT_SECRET_FILE.
    #[arg(long, env = "GENESYS_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// File holding the OAuth client secret (trailing newline ignored).
    #[arg(long, env = "GENESYS_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// Base URL replacing https://api.<domain> (simulator, proxy, tests).
    #[arg(long, env = "GENESYS_API_URL")]
    pub api_url: Option<String>,
    /// Base URL replacing https://login.<domain>; may equal the API URL.
    #[arg(long, env = "GENESYS_LOGIN_URL")]
    pub login_url: Option<String>,
    /// Slack incoming webhook URL (https://hooks.slack.com/…). Without it alerts are logged and
    /// stored but not sent.
    #[arg(long, env = "SLACK_WEBHOOK_URL", hide_env_values = true)]
    pub slack_webhook_url: Option<String>,
    /// File holding the Slack incoming webhook URL (the URL is a secret; prefer this).
    #[arg(long, env = "SLACK_WEBHOOK_URL_FILE")]
    pub slack_webhook_url_file: Option<PathBuf>,
    /// Database URL: sqlite://PATH (default sqlite://agent_status.db) or postgres://…
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Alias: a plain SQLite file path.
    #[arg(long, env = "DB_PATH")]
    pub db_path: Option<PathBuf>,
    /// Alert when an agent stays idle this long: 90s, 15m, 1h (default 15m).
    #[arg(long, env = "IDLE_THRESHOLD")]
    pub idle_threshold: Option<String>,
    /// Alias: the idle threshold in whole minutes.
    #[arg(long, env = "IDLE_THRESHOLD_MINUTES")]
    pub idle_threshold_minutes: Option<String>,
    /// Alert rules file (TOML; see deploy/rules.example.toml). Without it the built-in `idle`
    /// rule applies with IDLE_THRESHOLD. Re-read on SIGHUP and POST /api/v1/rules/reload.
    #[arg(long = "rules", env = "RULES_FILE")]
    pub rules_file: Option<PathBuf>,
    /// REST API listen address (default 127.0.0.1:8080).
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: Option<String>,
    /// Interval of the WebSocket application ping (default 20s).
    #[arg(long, env = "PING_INTERVAL")]
    pub ping_interval: Option<String>,
    /// Reconnect when nothing arrives on a socket for this long (default 60s).
    #[arg(long, env = "SILENCE_TIMEOUT")]
    pub silence_timeout: Option<String>,
    /// Genesys Cloud REST requests per minute this client may send (default 300, the platform's
    /// per-token limit): at most this many in any 60 s window, with bursts of a sixth of it.
    #[arg(long, env = "GENESYS_RATE_LIMIT")]
    pub genesys_rate_limit: Option<String>,
    /// Monitor only the members of these queues (comma-separated queue ids); joins and leaves
    /// are followed live through v2.routing.queues.<id>.users.
    #[arg(long, env = "GENESYS_QUEUE_IDS")]
    pub queue_ids: Option<String>,
    /// Monitor only the users of these divisions (comma-separated division ids).
    #[arg(long, env = "GENESYS_DIVISION_IDS")]
    pub division_ids: Option<String>,
    /// How often the monitored users are re-listed (default 10m).
    #[arg(long, env = "MEMBERSHIP_REFRESH")]
    pub membership_refresh: Option<String>,
    /// Safety margin subtracted from the start of every gap before it is backfilled from the
    /// analytics user details query (default 60s).
    #[arg(long, env = "BACKFILL_MARGIN")]
    pub backfill_margin: Option<String>,
    /// Persistence batch size in rows (default 500).
    #[arg(long, env = "BATCH_ROWS")]
    pub batch_rows: Option<String>,
    /// Persistence flush interval (default 100ms).
    #[arg(long, env = "FLUSH_INTERVAL")]
    pub flush_interval: Option<String>,
    /// API bearer tokens, comma-separated, each `token` or `name:token`. Prefer API_TOKENS_FILE.
    #[arg(long, env = "API_TOKENS", hide_env_values = true)]
    pub api_tokens: Option<String>,
    /// File of API bearer tokens: one per line, `token` or `name:token`; blank lines and `#`
    /// comments ignored.
    #[arg(long, env = "API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,
    /// Require a token on /healthz, /readyz and /metrics too: true or false (default false).
    #[arg(long, env = "PROTECT_PROBES")]
    pub protect_probes: Option<String>,
    /// Serve the API without tokens on a non-loopback address: true or false (default false).
    #[arg(long, env = "ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: Option<String>,
    /// Delete history and alerts older than this many days (default: keep everything).
    #[arg(long, env = "RETENTION_DAYS")]
    pub retention_days: Option<String>,
    /// Log format: text (default) or json (one JSON object per line).
    #[arg(long, env = "LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Test-only: accept a SLACK_WEBHOOK_URL that is not https://hooks.slack.com (a local
    /// receiver). Never set it in production: the alerts would go wherever the URL points.
    #[arg(long, env = "SLACK_ALLOW_INSECURE_URL", hide = true)]
    pub slack_allow_insecure_url: Option<String>,
    /// Alerts of one rule and destination firing within this window share one message
    /// (default 10s; 0s: no grouping).
    #[arg(long, env = "ALERT_GROUP_WAIT")]
    pub alert_group_wait: Option<String>,
    /// Delivery attempts per alert message for 5xx, timeouts and connection errors (1–100,
    /// default 10); after the last, the message is dead-lettered.
    #[arg(long, env = "ALERT_MAX_ATTEMPTS")]
    pub alert_max_attempts: Option<String>,
    /// Largest from..to window the history, timeline and report API accept (default 366d).
    #[arg(long, env = "MAX_REPORT_WINDOW")]
    pub max_report_window: Option<String>,
    /// TEST ONLY: accept webhook URLs that are not https://hooks.slack.com/ (Slack) or not
    /// https:// (generic webhooks), e.g. a local receiver. Never set it in production.
    #[arg(long, env = "ALLOW_INSECURE_WEBHOOKS")]
    pub allow_insecure_webhooks: bool,
}

/// Settings of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Number of simulated agents (1–50000).
    #[arg(long, default_value_t = 50, value_parser = parse_agents)]
    pub agents: usize,
    /// REST API listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Time compression of the simulated shift (holding times are divided by it; greater
    /// than 0).
    #[arg(long, default_value_t = 10.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Idle threshold of the demo.
    #[arg(long, default_value = "2m")]
    pub idle_threshold: String,
    /// Database of the demo (deliberately not read from DATABASE_URL, so a demo never writes
    /// simulated agents into a production database). Without it, every run uses a fresh
    /// SQLite file in a new directory under the system temp dir (its path is printed at
    /// start), deleted when the demo stops: the simulator makes the same user ids every run,
    /// so a shared file would mix runs. Give a URL to keep the data.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Slack incoming webhook to send the demo's alerts to (optional).
    #[arg(long, env = "SLACK_WEBHOOK_URL", hide_env_values = true)]
    pub slack_webhook_url: Option<String>,
}

/// Settings of `simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Number of simulated agents (1–50000).
    #[arg(long, default_value_t = 50, value_parser = parse_agents)]
    pub agents: usize,
    /// Address of the simulator (login and API hosts and WebSockets).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Time compression of the simulated shift (greater than 0).
    #[arg(long, default_value_t = 10.0, value_parser = parse_speed)]
    pub speed: f64,
}

/// A time compression factor: a finite number greater than zero (the simulator refuses
/// anything else; refusing it here makes it a usage error, exit 2).
fn parse_speed(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!(
            "{raw:?} is not a speed: give a number greater than 0 (1 = real time)"
        )),
    }
}

fn parse_agents(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=50_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{raw:?} is not a number of agents between 1 and 50000"
        )),
    }
}

/// A setting that is missing or invalid: names the variable, says what is wrong, never
/// contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable (the flag is named in `problem` where it helps).
    pub variable: &'static str,
    pub problem: String,
}

fn err(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

/// The longest idle threshold accepted: beyond a week it is a typo, not a threshold.
pub const MAX_IDLE_THRESHOLD: Duration = Duration::from_secs(7 * 86_400);

/// Genesys Cloud domains with their AWS region names (Python SDK `PureCloudRegionHosts`,
/// protocol reference §1).
pub const REGIONS: [(&str, &str); 17] = [
    ("mypurecloud.com", "us-east-1"),
    ("usw2.pure.cloud", "us-west-2"),
    ("use2.us-gov-pure.cloud", "us-east-2"),
    ("cac1.pure.cloud", "ca-central-1"),
    ("mxc1.pure.cloud", "mx-central-1"),
    ("sae1.pure.cloud", "sa-east-1"),
    ("mypurecloud.ie", "eu-west-1"),
    ("euw2.pure.cloud", "eu-west-2"),
    ("mypurecloud.de", "eu-central-1"),
    ("euc2.pure.cloud", "eu-central-2"),
    ("mec1.pure.cloud", "me-central-1"),
    ("aps1.pure.cloud", "ap-south-1"),
    ("apse1.pure.cloud", "ap-southeast-1"),
    ("mypurecloud.com.au", "ap-southeast-2"),
    ("mypurecloud.jp", "ap-northeast-1"),
    ("apne2.pure.cloud", "ap-northeast-2"),
    ("apne3.pure.cloud", "ap-northeast-3"),
];

/// Parses `GENESYS_RATE_LIMIT`: a whole number of requests per minute, at least 1.
pub fn parse_rate_limit(raw: &str) -> Result<std::num::NonZeroU32, ConfigError> {
    raw.trim()
        .parse::<std::num::NonZeroU32>()
        .map_err(|_| {
            err(
                "GENESYS_RATE_LIMIT",
                format!(
                    "{raw:?} is not a whole number of requests per minute greater than zero (Genesys allows 300 per token)"
                ),
            )
        })
}

/// Resolves a region (domain or AWS region name) to its domain.
pub fn region_domain(raw: &str) -> Result<&'static str, ConfigError> {
    let wanted = raw
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("api.")
        .to_ascii_lowercase();
    REGIONS.iter().find(|(domain, aws)| *domain == wanted || *aws == wanted).map(|(d, _)| *d).ok_or_else(|| {
        err(
            "GENESYS_REGION",
            format!(
                "unknown region {raw:?}; use a domain such as mypurecloud.com or mypurecloud.ie, an AWS region name such as us-east-1, or set GENESYS_API_URL and GENESYS_LOGIN_URL"
            ),
        )
    })
}

fn pick(
    main: Option<String>,
    main_name: &'static str,
    alias: Option<String>,
    alias_name: &str,
) -> Result<Option<String>, ConfigError> {
    let main = main.filter(|v| !v.trim().is_empty());
    let alias = alias.filter(|v| !v.trim().is_empty());
    match (main, alias) {
        (Some(m), Some(a)) if m.trim() != a.trim() => Err(err(
            main_name,
            format!("conflicts with its alias {alias_name}; set only one"),
        )),
        (Some(m), _) => Ok(Some(m)),
        (None, a) => Ok(a),
    }
}

fn parse_base_url(variable: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| err(variable, format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(err(
            variable,
            "must be an http:// or https:// URL with a host",
        ));
    }
    if !matches!(url.path(), "" | "/") {
        return Err(err(
            variable,
            format!(
                "must be a base URL without a path (like https://api.mypurecloud.com), got path {:?}",
                url.path()
            ),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err(variable, "must not have a query or fragment"));
    }
    let trimmed = url.as_str().trim_end_matches('/').to_string();
    Url::parse(&trimmed).map_err(|e| err(variable, format!("not a URL ({e})")))
}

/// Parses a duration such as `90s`, `15m`, `1h`, `100ms` (humantime); zero is refused.
/// Parses a comma-separated list of Genesys ids (GUIDs such as
/// `3b1f7c2a-9d4e-4a6b-8c5d-2e1f0a9b8c7d`), trimmed and lowercased; `None` or blank = empty.
/// Errors: an entry that is not a GUID (a queue or division *name* given by mistake).
pub fn parse_id_list(
    variable: &'static str,
    raw: Option<&str>,
) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let mut ids = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let guid = part.len() == 36
            && part.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        if !guid {
            return Err(err(
                variable,
                format!("{part:?} is not an id like 3b1f7c2a-9d4e-4a6b-8c5d-2e1f0a9b8c7d"),
            ));
        }
        let id = part.to_ascii_lowercase();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

pub fn parse_duration(variable: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        err(
            variable,
            format!(
                "{raw:?} is not a duration like 90s, 15m or 1h: {}",
                crate::config::explain_bad_duration(raw, &e)
            ),
        )
    })?;
    if d.is_zero() {
        return Err(err(variable, "must be greater than zero"));
    }
    Ok(d)
}

/// Normalizes a database URL: `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:`, `postgres://…`,
/// `postgresql://…`. The error never repeats the URL (it may hold a password).
pub fn normalize_database_url(variable: &'static str, raw: &str) -> Result<String, ConfigError> {
    let raw = raw.trim();
    if raw == "sqlite::memory:" {
        return Ok(raw.to_string());
    }
    if let Some(path) = raw
        .strip_prefix("sqlite://")
        .or_else(|| raw.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(err(
                variable,
                "sqlite URL has no file path; use sqlite://PATH",
            ));
        }
        sqlite_directory_exists(variable, path)?;
        return Ok(format!("sqlite://{path}?mode=rwc"));
    }
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        Url::parse(raw).map_err(|_| err(variable, "is not a valid postgres:// URL"))?;
        return Ok(raw.to_string());
    }
    Err(err(variable, "must start with sqlite:// or postgres://"))
}

/// The directory of a SQLite file must exist: creating it silently would hide a typo.
fn sqlite_directory_exists(variable: &'static str, path: &str) -> Result<(), ConfigError> {
    let file = std::path::Path::new(path);
    if file.is_dir() {
        return Err(err(
            variable,
            format!("{path} is a directory; give the path of the database file"),
        ));
    }
    match file.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if dir.exists() && !dir.is_dir() => Err(err(
            variable,
            format!("{} exists but is not a directory", dir.display()),
        )),
        Some(dir) if !dir.is_dir() => Err(err(
            variable,
            format!("the directory {} does not exist", dir.display()),
        )),
        _ => Ok(()),
    }
}

/// Validates a Slack incoming webhook URL: `https://hooks.slack.com/…` only.
pub fn parse_slack_webhook(raw: &str) -> Result<Secret, ConfigError> {
    destination_url(DestinationKind::Slack, raw, false)
        .map_err(|problem| err("SLACK_WEBHOOK_URL", problem))
}

/// Validates a destination URL. Slack: `https://hooks.slack.com/…` only; generic webhook:
/// `https://…` only. With `allow_insecure` (`ALLOW_INSECURE_WEBHOOKS`, test only) any http(s)
/// URL is accepted. The error never contains the URL.
pub fn destination_url(
    kind: DestinationKind,
    raw: &str,
    allow_insecure: bool,
) -> Result<Secret, String> {
    let url = Url::parse(raw.trim()).map_err(|_| "is not a URL".to_string())?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("must be an http(s) URL".into());
    }
    if !allow_insecure {
        match kind {
            DestinationKind::Slack => {
                if url.scheme() != "https" || url.host_str() != Some("hooks.slack.com") {
                    return Err("must be an https://hooks.slack.com/ incoming webhook URL \
                                (ALLOW_INSECURE_WEBHOOKS=true accepts others, for tests only)"
                        .into());
                }
            }
            DestinationKind::Webhook => {
                if url.scheme() != "https" {
                    return Err("must be an https:// URL \
                                (ALLOW_INSECURE_WEBHOOKS=true accepts http, for tests only)"
                        .into());
                }
            }
        }
    }
    Ok(Secret::new(raw.trim()))
}

/// Parses a boolean setting: `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub fn parse_bool(variable: &'static str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(err(variable, format!("{raw:?} is not true or false"))),
    }
}

/// Parses `LOG_FORMAT`: `text` or `json` (case-insensitive).
pub fn parse_log_format(raw: &str) -> Result<LogFormat, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "text" | "" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(err(
            "LOG_FORMAT",
            format!("{raw:?} is not a log format; use text or json"),
        )),
    }
}

/// `LOG_FORMAT` from the environment (for `demo` and `simulate`, which have no flag).
pub fn log_format_from_env() -> Result<LogFormat, ConfigError> {
    match std::env::var("LOG_FORMAT") {
        Ok(raw) => parse_log_format(&raw),
        Err(_) => Ok(LogFormat::Text),
    }
}

/// Shortest API token accepted: guessing must stay impractical.
pub const MIN_TOKEN_LEN: usize = 16;

/// Parses API tokens: `entries` are lines of `API_TOKENS_FILE` or the comma-separated items of
/// `API_TOKENS`. Each is `token` or `name:token` (split at the first `:`); blank entries and
/// `#` comments are skipped. Unnamed tokens are called `token-N` (N = position among the
/// tokens, from 1). Errors name the entry by position, never by value.
pub fn parse_tokens<'a>(
    variable: &'static str,
    entries: impl Iterator<Item = &'a str>,
) -> Result<Vec<ApiToken>, ConfigError> {
    let mut tokens: Vec<ApiToken> = Vec::new();
    for (index, entry) in entries.enumerate() {
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let position = index + 1;
        let (name, token) = match entry.split_once(':') {
            Some((name, token)) => (name.trim().to_string(), token.trim()),
            None => (format!("token-{}", tokens.len() + 1), entry),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        {
            return Err(err(
                variable,
                format!(
                    "entry {position}: the name before ':' must be letters, digits, '.', '_', '-' or '@'"
                ),
            ));
        }
        if token.len() < MIN_TOKEN_LEN || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(err(
                variable,
                format!(
                    "entry {position} ({name}): a token must be at least {MIN_TOKEN_LEN} visible ASCII characters without spaces"
                ),
            ));
        }
        if tokens.iter().any(|t| t.name == name) {
            return Err(err(
                variable,
                format!("entry {position}: the name {name} is used twice"),
            ));
        }
        if tokens.iter().any(|t| t.token.expose() == token) {
            return Err(err(
                variable,
                format!("entry {position} ({name}): the same token is listed twice"),
            ));
        }
        tokens.push(ApiToken {
            name,
            token: Secret::new(token),
        });
    }
    Ok(tokens)
}

/// The destinations of the service: `default` from `SLACK_WEBHOOK_URL` (when set) and every
/// `[[destinations]]` of the rules file (`specs`, from `RuleSet::destination_specs`), their URLs
/// read from the named environment variable (`url_env`) or file (`url_file`, trailing newline
/// ignored) and validated with [`destination_url`]. A file destination named `default` conflicts
/// with `SLACK_WEBHOOK_URL`.
pub fn resolve_destinations(
    slack_webhook_url: Option<&str>,
    specs: &[DestinationSpec],
    allow_insecure: bool,
) -> Result<Vec<DestinationConfig>, ConfigError> {
    resolve_destinations_with(slack_webhook_url, specs, allow_insecure, |var| {
        std::env::var(var).ok()
    })
}

/// [`resolve_destinations`] with an explicit environment lookup (tests).
pub fn resolve_destinations_with(
    slack_webhook_url: Option<&str>,
    specs: &[DestinationSpec],
    allow_insecure: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<DestinationConfig>, ConfigError> {
    let mut out = Vec::new();
    if let Some(raw) = slack_webhook_url.filter(|v| !v.trim().is_empty()) {
        let url = destination_url(DestinationKind::Slack, raw, allow_insecure)
            .map_err(|problem| err("SLACK_WEBHOOK_URL", problem))?;
        out.push(DestinationConfig::slack(DEFAULT_DESTINATION, url));
    }
    for spec in specs {
        let place = format!(
            "destination {:?} (rules file line {})",
            spec.name, spec.line
        );
        if spec.name == DEFAULT_DESTINATION && !out.is_empty() {
            return Err(err(
                "RULES_FILE",
                format!("{place}: `default` is already SLACK_WEBHOOK_URL; unset one of them"),
            ));
        }
        let raw = match &spec.url {
            UrlSource::Env(var) => env(var)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| err("RULES_FILE", format!("{place}: url_env {var} is not set")))?,
            UrlSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| {
                    err(
                        "RULES_FILE",
                        format!("{place}: cannot read url_file {}: {e}", path.display()),
                    )
                })?
                .trim()
                .to_string(),
        };
        let url = destination_url(spec.kind, &raw, allow_insecure)
            .map_err(|problem| err("RULES_FILE", format!("{place}: its URL {problem}")))?;
        out.push(DestinationConfig {
            name: spec.name.clone(),
            kind: spec.kind,
            url,
        });
    }
    Ok(out)
}

impl RunArgs {
    /// Validates everything and builds the [`Config`]. Reads the secret file if given.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let region = pick(
            self.region,
            "GENESYS_REGION",
            self.region_alias,
            "GENESYS_ENV",
        )?;
        let api_url = self.api_url.filter(|v| !v.trim().is_empty());
        let login_url = self.login_url.filter(|v| !v.trim().is_empty());
        let domain = match (&region, &api_url, &login_url) {
            (Some(r), _, _) => Some(region_domain(r)?),
            (None, Some(_), Some(_)) => None,
            (None, _, _) => {
                return Err(err(
                    "GENESYS_REGION",
                    "missing: set the region (e.g. mypurecloud.com or us-east-1), or both GENESYS_API_URL and GENESYS_LOGIN_URL",
                ));
            }
        };
        let api_base = match &api_url {
            Some(u) => parse_base_url("GENESYS_API_URL", u)?,
            None => Url::parse(&format!("https://api.{}", domain.unwrap_or_default()))
                .map_err(|e| err("GENESYS_REGION", e.to_string()))?,
        };
        let login_base = match &login_url {
            Some(u) => parse_base_url("GENESYS_LOGIN_URL", u)?,
            None => Url::parse(&format!("https://login.{}", domain.unwrap_or_default()))
                .map_err(|e| err("GENESYS_REGION", e.to_string()))?,
        };

        let client_id = self
            .client_id
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| err("GENESYS_CLIENT_ID", "missing: set it or pass --client-id"))?;
        let client_secret = match (
            self.client_secret.filter(|v| !v.is_empty()),
            self.client_secret_file,
        ) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "GENESYS_CLIENT_SECRET",
                    "set either GENESYS_CLIENT_SECRET or GENESYS_CLIENT_SECRET_FILE, not both",
                ));
            }
            (Some(s), None) => Secret::new(s.trim()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    err(
                        "GENESYS_CLIENT_SECRET_FILE",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let secret = text.trim_end_matches(['\r', '\n']).trim();
                if secret.is_empty() {
                    return Err(err(
                        "GENESYS_CLIENT_SECRET_FILE",
                        format!("{} is empty", path.display()),
                    ));
                }
                Secret::new(secret)
            }
            (None, None) => {
                return Err(err(
                    "GENESYS_CLIENT_SECRET",
                    "missing: set it, or GENESYS_CLIENT_SECRET_FILE, or pass --client-secret-file",
                ));
            }
        };

        let allow_insecure = self.allow_insecure_webhooks
            || match &self.slack_allow_insecure_url {
                Some(raw) => parse_bool("SLACK_ALLOW_INSECURE_URL", raw)?,
                None => false,
            };
        let slack_url: Option<String> = match (
            self.slack_webhook_url.filter(|v| !v.trim().is_empty()),
            self.slack_webhook_url_file,
        ) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "SLACK_WEBHOOK_URL",
                    "set either SLACK_WEBHOOK_URL or SLACK_WEBHOOK_URL_FILE, not both",
                ));
            }
            (Some(raw), None) => Some(raw),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    err(
                        "SLACK_WEBHOOK_URL_FILE",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Some(text.trim().to_string())
            }
            (None, None) => None,
        };
        // Destinations are resolved once the rules file (which may declare more) is loaded.
        let mut delivery = DeliveryConfig::default();
        if let Some(raw) = self.alert_max_attempts.filter(|v| !v.trim().is_empty()) {
            delivery.max_attempts = raw
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    err(
                        "ALERT_MAX_ATTEMPTS",
                        format!("{raw:?} is not a number between 1 and 100"),
                    )
                })?;
        }
        if let Some(raw) = self.alert_group_wait.filter(|v| !v.trim().is_empty()) {
            delivery.group_wait = match raw.trim() {
                "0" => Duration::ZERO,
                raw => humantime::parse_duration(raw).map_err(|e| {
                    err(
                        "ALERT_GROUP_WAIT",
                        format!(
                            "{raw:?} is not a duration like 10s: {}",
                            crate::config::explain_bad_duration(raw, &e)
                        ),
                    )
                })?,
            };
        }

        let database_url = match (
            self.database_url.filter(|v| !v.trim().is_empty()),
            self.db_path,
        ) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "DATABASE_URL",
                    "conflicts with its alias DB_PATH; set only one",
                ));
            }
            (Some(url), None) => normalize_database_url("DATABASE_URL", &url)?,
            (None, Some(path)) => {
                let path = path.to_string_lossy();
                if path.trim().is_empty() {
                    return Err(err("DB_PATH", "is empty"));
                }
                sqlite_directory_exists("DB_PATH", &path)?;
                format!("sqlite://{path}?mode=rwc")
            }
            (None, None) => "sqlite://agent_status.db?mode=rwc".to_string(),
        };

        let idle_threshold = match (
            self.idle_threshold.filter(|v| !v.trim().is_empty()),
            self.idle_threshold_minutes,
        ) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "IDLE_THRESHOLD",
                    "conflicts with its alias IDLE_THRESHOLD_MINUTES; set only one",
                ));
            }
            (Some(raw), None) => {
                let d = parse_duration("IDLE_THRESHOLD", &raw)?;
                if d > MAX_IDLE_THRESHOLD {
                    return Err(err(
                        "IDLE_THRESHOLD",
                        format!("{raw:?} is longer than 7 days"),
                    ));
                }
                d
            }
            (None, Some(raw)) => {
                let minutes: u64 = raw.trim().parse().map_err(|_| {
                    err(
                        "IDLE_THRESHOLD_MINUTES",
                        format!("{raw:?} is not a whole number of minutes"),
                    )
                })?;
                if minutes == 0 {
                    return Err(err("IDLE_THRESHOLD_MINUTES", "must be greater than zero"));
                }
                if minutes > MAX_IDLE_THRESHOLD.as_secs() / 60 {
                    return Err(err(
                        "IDLE_THRESHOLD_MINUTES",
                        format!("{minutes} minutes is longer than 7 days"),
                    ));
                }
                Duration::from_secs(minutes * 60)
            }
            (None, None) => Duration::from_secs(15 * 60),
        };

        let max_report_window = match self.max_report_window.filter(|v| !v.trim().is_empty()) {
            Some(raw) => parse_duration("MAX_REPORT_WINDOW", &raw)?,
            None => crate::api::DEFAULT_MAX_WINDOW,
        };
        let (rules, rules_path) = match self.rules_file {
            Some(path) => {
                let rules = crate::rules::RuleSet::load(&path).map_err(|e| {
                    err("RULES_FILE", format!("{} is invalid:\n{e}", path.display()))
                })?;
                (rules, Some(path))
            }
            None => (crate::rules::RuleSet::builtin_idle(idle_threshold), None),
        };
        delivery.destinations = resolve_destinations(
            slack_url.as_deref(),
            rules.destination_specs(),
            allow_insecure,
        )?;

        let listen_addr: SocketAddr = match self.listen_addr.filter(|v| !v.trim().is_empty()) {
            Some(raw) => raw.trim().parse().map_err(|_| {
                err(
                    "LISTEN_ADDR",
                    format!("{raw:?} is not an address like 127.0.0.1:8080"),
                )
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let ping_interval = match self.ping_interval {
            Some(raw) => parse_duration("PING_INTERVAL", &raw)?,
            None => Duration::from_secs(20),
        };
        let silence_timeout = match self.silence_timeout {
            Some(raw) => parse_duration("SILENCE_TIMEOUT", &raw)?,
            None => Duration::from_secs(60),
        };
        if silence_timeout <= ping_interval {
            return Err(err("SILENCE_TIMEOUT", "must be longer than PING_INTERVAL"));
        }
        let rate_limit_per_minute = match self.genesys_rate_limit.filter(|v| !v.trim().is_empty()) {
            Some(raw) => parse_rate_limit(&raw)?,
            None => crate::config::DEFAULT_GENESYS_RATE_LIMIT,
        };
        let scope = crate::actors::membership::Scope {
            queue_ids: parse_id_list("GENESYS_QUEUE_IDS", self.queue_ids.as_deref())?,
            division_ids: parse_id_list("GENESYS_DIVISION_IDS", self.division_ids.as_deref())?,
        };
        let membership_refresh = match self.membership_refresh {
            Some(raw) => parse_duration("MEMBERSHIP_REFRESH", &raw)?,
            None => Duration::from_secs(600),
        };
        if membership_refresh < Duration::from_secs(1) {
            return Err(err("MEMBERSHIP_REFRESH", "must be at least 1s"));
        }
        let backfill_margin = match self.backfill_margin {
            Some(raw) => parse_duration("BACKFILL_MARGIN", &raw)?,
            None => Duration::from_secs(60),
        };
        if backfill_margin > Duration::from_secs(24 * 3600) {
            return Err(err("BACKFILL_MARGIN", "must be at most 24h"));
        }
        let mut persistence = PersistenceConfig::default();
        if let Some(raw) = self.batch_rows {
            persistence.batch_rows = raw
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=100_000).contains(n))
                .ok_or_else(|| {
                    err(
                        "BATCH_ROWS",
                        format!("{raw:?} is not a number of rows between 1 and 100000"),
                    )
                })?;
        }
        if let Some(raw) = self.flush_interval {
            persistence.flush_interval = parse_duration("FLUSH_INTERVAL", &raw)?;
        }

        let tokens = match (
            self.api_tokens.filter(|v| !v.trim().is_empty()),
            self.api_tokens_file,
        ) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "API_TOKENS",
                    "set either API_TOKENS or API_TOKENS_FILE, not both",
                ));
            }
            (Some(list), None) => parse_tokens("API_TOKENS", list.split(','))?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    err(
                        "API_TOKENS_FILE",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let tokens = parse_tokens("API_TOKENS_FILE", text.lines())?;
                if tokens.is_empty() {
                    return Err(err(
                        "API_TOKENS_FILE",
                        format!("{} holds no token", path.display()),
                    ));
                }
                tokens
            }
            (None, None) => Vec::new(),
        };
        let protect_probes = match &self.protect_probes {
            Some(raw) => parse_bool("PROTECT_PROBES", raw)?,
            None => false,
        };
        let allow_unauthenticated = match &self.allow_unauthenticated {
            Some(raw) => parse_bool("ALLOW_UNAUTHENTICATED", raw)?,
            None => false,
        };
        if tokens.is_empty() && !listen_addr.ip().is_loopback() && !allow_unauthenticated {
            return Err(err(
                "LISTEN_ADDR",
                format!(
                    "{listen_addr} is not a loopback address and no API token is configured; set API_TOKENS or API_TOKENS_FILE, or ALLOW_UNAUTHENTICATED=true to serve the API without authentication"
                ),
            ));
        }
        if protect_probes && tokens.is_empty() {
            return Err(err("PROTECT_PROBES", "needs API_TOKENS or API_TOKENS_FILE"));
        }
        let retention = match self.retention_days.filter(|v| !v.trim().is_empty()) {
            Some(raw) => {
                let days = raw
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|d| (1..=36_500).contains(d))
                    .ok_or_else(|| {
                        err(
                            "RETENTION_DAYS",
                            format!("{raw:?} is not a whole number of days between 1 and 36500"),
                        )
                    })?;
                Some(RetentionConfig::days(days))
            }
            None => None,
        };
        let log_format = match &self.log_format {
            Some(raw) => parse_log_format(raw)?,
            None => LogFormat::Text,
        };

        Ok(Config {
            genesys: GenesysConfig {
                endpoints: GenesysEndpoints {
                    api_base,
                    login_base,
                    region: domain.map(str::to_string),
                },
                credentials: Credentials {
                    client_id: client_id.trim().to_string(),
                    client_secret,
                },
                ping_interval,
                silence_timeout,
                topics_per_channel: 1000,
                request_timeout: Duration::from_secs(30),
                rate_limit_per_minute,
            },
            membership: MembershipConfig {
                scope,
                refresh: membership_refresh,
                backfill_margin,
            },
            delivery,
            database_url: Secret::new(database_url),
            idle_threshold,
            rules: std::sync::Arc::new(rules),
            rules_path,
            listen_addr,
            persistence,
            shutdown_grace: Duration::from_secs(10),
            max_report_window,
            access: AccessConfig {
                tokens,
                protect_probes,
                ..AccessConfig::default()
            },
            retention,
            log_format,
        })
    }
}

#[cfg(test)]
mod id_list_tests {
    use super::*;

    #[test]
    fn id_lists_are_guids_lowercased_without_repeats() {
        assert_eq!(
            parse_id_list("GENESYS_QUEUE_IDS", None).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            parse_id_list("GENESYS_QUEUE_IDS", Some(" , ")).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            parse_id_list(
                "GENESYS_QUEUE_IDS",
                Some("3B1F7C2A-9D4E-4A6B-8C5D-2E1F0A9B8C7D, 3b1f7c2a-9d4e-4a6b-8c5d-2e1f0a9b8c7d")
            )
            .unwrap(),
            vec!["3b1f7c2a-9d4e-4a6b-8c5d-2e1f0a9b8c7d".to_string()]
        );
        // A queue name given by mistake is refused, naming the variable.
        let e = parse_id_list("GENESYS_QUEUE_IDS", Some("Support Tier 1")).unwrap_err();
        assert!(e.to_string().contains("GENESYS_QUEUE_IDS"), "{e}");
        assert!(e.to_string().contains("Support Tier 1"), "{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RunArgs {
        RunArgs {
            region: Some("mypurecloud.ie".into()),
            client_id: Some("id".into()),
            client_secret: Some("s3cret".into()),
            ..RunArgs::default()
        }
    }

    #[test]
    fn a_duration_without_a_unit_suggests_seconds_or_minutes() {
        let shown = parse_duration("IDLE_THRESHOLD", "15")
            .unwrap_err()
            .to_string();
        assert!(shown.contains("IDLE_THRESHOLD"), "{shown}");
        assert!(
            shown.contains("\"15s\"") && shown.contains("\"15m\""),
            "{shown}"
        );
        assert!(
            !shown.contains("15sec") && !shown.contains("15ms"),
            "{shown}"
        );
        let shown = parse_duration("IDLE_THRESHOLD", "15 parsecs")
            .unwrap_err()
            .to_string();
        assert!(shown.contains("\"90s\""), "{shown}");
    }

    #[test]
    fn genesys_rate_limit_defaults_to_300_and_refuses_zero() {
        assert_eq!(
            base()
                .resolve()
                .unwrap()
                .genesys
                .rate_limit_per_minute
                .get(),
            300
        );
        let set = |raw: &str| {
            RunArgs {
                genesys_rate_limit: Some(raw.into()),
                ..base()
            }
            .resolve()
        };
        assert_eq!(
            set(" 120 ").unwrap().genesys.rate_limit_per_minute.get(),
            120
        );
        for bad in ["0", "-5", "fast", "1.5"] {
            let e = set(bad).unwrap_err();
            assert_eq!(e.variable, "GENESYS_RATE_LIMIT", "{bad}");
            assert!(e.problem.contains("greater than zero"), "{e}");
        }
    }

    #[test]
    fn defaults_and_region() {
        let c = base().resolve().unwrap();
        assert_eq!(
            c.genesys.endpoints.api_base.as_str(),
            "https://api.mypurecloud.ie/"
        );
        assert_eq!(
            c.genesys.endpoints.login_base.as_str(),
            "https://login.mypurecloud.ie/"
        );
        assert_eq!(c.idle_threshold, Duration::from_secs(900));
        assert_eq!(c.database_url.expose(), "sqlite://agent_status.db?mode=rwc");
        let aws = RunArgs {
            region: Some("eu-west-1".into()),
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            aws.genesys.endpoints.region.as_deref(),
            Some("mypurecloud.ie")
        );
    }

    #[test]
    fn errors_name_the_variable_and_hide_secrets() {
        let e = RunArgs {
            client_id: None,
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e.variable, "GENESYS_CLIENT_ID");
        let e = RunArgs {
            region: Some("mars-1".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e.variable, "GENESYS_REGION");
        let e = RunArgs {
            idle_threshold: Some("soon".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e.variable, "IDLE_THRESHOLD");
        let e = RunArgs {
            slack_webhook_url: Some("http://evil.example/s3cret".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = RunArgs {
            database_url: Some("mysql://u:pw@h/db".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(!e.to_string().contains("pw"), "{e}");
        let e = RunArgs {
            region_alias: Some("mypurecloud.de".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e.variable, "GENESYS_REGION");
    }

    #[test]
    fn aliases() {
        let c = RunArgs {
            idle_threshold_minutes: Some("3".into()),
            db_path: Some("x.db".into()),
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.idle_threshold, Duration::from_secs(180));
        assert_eq!(c.database_url.expose(), "sqlite://x.db?mode=rwc");
        let c = RunArgs {
            region: None,
            api_url: Some("http://127.0.0.1:9/".into()),
            login_url: Some("http://127.0.0.1:9".into()),
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.genesys.endpoints.api_base.as_str(), "http://127.0.0.1:9/");
    }

    #[test]
    fn api_tokens_from_the_list_and_the_file() {
        let c = RunArgs {
            api_tokens: Some("ops:0123456789abcdef, fedcba9876543210 ,".into()),
            ..base()
        }
        .resolve()
        .unwrap();
        let names: Vec<&str> = c.access.tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["ops", "token-2"]);
        assert_eq!(c.access.tokens[1].token.expose(), "fedcba9876543210");

        let path = std::env::temp_dir().join(format!("am-tokens-{}", std::process::id()));
        std::fs::write(
            &path,
            "# operators\n\ngrafana:aaaaaaaaaaaaaaaaaaaa\n  bbbbbbbbbbbbbbbbbbbb  \n",
        )
        .unwrap();
        let c = RunArgs {
            api_tokens_file: Some(path.clone()),
            listen_addr: Some("0.0.0.0:8080".into()),
            ..base()
        }
        .resolve()
        .unwrap();
        let names: Vec<&str> = c.access.tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["grafana", "token-2"]);
        std::fs::write(&path, "# nothing\n").unwrap();
        let e = RunArgs {
            api_tokens_file: Some(path.clone()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e.variable, "API_TOKENS_FILE");
        let _ = std::fs::remove_file(&path);

        for bad in [
            "short",
            "a:0123456789abcdef,a:fedcba9876543210",
            "0123456789abcdef,x:0123456789abcdef",
            ":0123456789abcdef",
            "bad name:0123456789abcdef",
        ] {
            let e = RunArgs {
                api_tokens: Some(bad.into()),
                ..base()
            }
            .resolve()
            .unwrap_err();
            assert_eq!(e.variable, "API_TOKENS", "{bad}");
            assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
            assert!(!e.to_string().contains("short"), "{e}");
        }
    }

    #[test]
    fn non_loopback_needs_tokens_or_an_explicit_opt_out() {
        let e = RunArgs {
            listen_addr: Some("0.0.0.0:8080".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e.variable, "LISTEN_ADDR");
        assert!(e.to_string().contains("API_TOKENS"), "{e}");
        assert!(
            RunArgs {
                listen_addr: Some("0.0.0.0:8080".into()),
                allow_unauthenticated: Some("true".into()),
                ..base()
            }
            .resolve()
            .is_ok()
        );
        assert!(
            RunArgs {
                listen_addr: Some("[::1]:8080".into()),
                ..base()
            }
            .resolve()
            .is_ok()
        );
        let e = RunArgs {
            allow_unauthenticated: Some("maybe".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e.variable, "ALLOW_UNAUTHENTICATED");
        let e = RunArgs {
            protect_probes: Some("true".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e.variable, "PROTECT_PROBES");
    }

    #[test]
    fn retention_log_format_and_insecure_slack() {
        let c = base().resolve().unwrap();
        assert_eq!(c.retention, None);
        assert_eq!(c.log_format, LogFormat::Text);
        let c = RunArgs {
            retention_days: Some("30".into()),
            log_format: Some("JSON".into()),
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.retention.unwrap().keep, Duration::from_secs(30 * 86_400));
        assert_eq!(c.log_format, LogFormat::Json);
        for (args, variable) in [
            (
                RunArgs {
                    retention_days: Some("0".into()),
                    ..base()
                },
                "RETENTION_DAYS",
            ),
            (
                RunArgs {
                    retention_days: Some("a week".into()),
                    ..base()
                },
                "RETENTION_DAYS",
            ),
            (
                RunArgs {
                    log_format: Some("xml".into()),
                    ..base()
                },
                "LOG_FORMAT",
            ),
            (
                RunArgs {
                    slack_webhook_url: Some("http://127.0.0.1:9/hook".into()),
                    ..base()
                },
                "SLACK_WEBHOOK_URL",
            ),
        ] {
            assert_eq!(args.resolve().unwrap_err().variable, variable);
        }
        let c = RunArgs {
            slack_webhook_url: Some("http://127.0.0.1:9/hook".into()),
            slack_allow_insecure_url: Some("true".into()),
            ..base()
        }
        .resolve()
        .unwrap();
        assert!(!c.delivery.destinations.is_empty());
    }

    #[test]
    fn destination_urls_are_checked_unless_insecure_is_allowed() {
        use DestinationKind::{Slack, Webhook};
        assert!(destination_url(Slack, "https://hooks.slack.com/services/T/B/X", false).is_ok());
        let e =
            destination_url(Slack, "https://example.com/services/T/B/s3cret", false).unwrap_err();
        assert!(
            e.contains("hooks.slack.com") && !e.contains("s3cret"),
            "{e}"
        );
        assert!(destination_url(Slack, "http://127.0.0.1:9/hook", true).is_ok());
        assert!(destination_url(Webhook, "https://tool.example/hook", false).is_ok());
        assert!(destination_url(Webhook, "http://tool.example/hook", false).is_err());
        assert!(destination_url(Webhook, "http://tool.example/hook", true).is_ok());
        assert!(destination_url(Webhook, "ftp://tool.example/hook", true).is_err());
    }

    #[test]
    fn the_example_rules_file_starts_as_it_is() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rules.example.toml");
        let rules = crate::rules::RuleSet::load(path).unwrap();
        // The one variable its comments ask for; nothing else (no secret file) is needed.
        let destinations =
            resolve_destinations_with(None, rules.destination_specs(), false, |var| {
                (var == "SLACK_SUPERVISORS_WEBHOOK_URL")
                    .then(|| "https://hooks.slack.com/services/T0/B0/x".to_string())
            })
            .unwrap();
        let names: Vec<&str> = destinations.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["supervisors"]);
        for rule in rules.rules() {
            let destination = rule.destination.as_deref().unwrap_or(DEFAULT_DESTINATION);
            assert!(names.contains(&destination), "{} sends nowhere", rule.name);
        }
    }

    #[test]
    fn destinations_resolve_from_env_and_files() {
        let dir = std::env::temp_dir().join(format!("am-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ops_url");
        std::fs::write(&file, "https://tool.example/hook\n").unwrap();
        let specs = vec![
            DestinationSpec {
                name: "team".into(),
                kind: DestinationKind::Slack,
                url: UrlSource::Env("TEAM_URL".into()),
                line: 3,
            },
            DestinationSpec {
                name: "ops".into(),
                kind: DestinationKind::Webhook,
                url: UrlSource::File(file.clone()),
                line: 8,
            },
        ];
        let env = |v: &str| {
            (v == "TEAM_URL").then(|| "https://hooks.slack.com/services/T/B/Y".to_string())
        };
        let out = resolve_destinations_with(
            Some("https://hooks.slack.com/services/T/B/X"),
            &specs,
            false,
            env,
        )
        .unwrap();
        let names: Vec<&str> = out.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["default", "team", "ops"]);
        assert_eq!(out[2].url.expose(), "https://tool.example/hook");
        assert_eq!(out[2].kind, DestinationKind::Webhook);

        // A missing variable names the destination and its line.
        let e = resolve_destinations_with(None, &specs, false, |_| None).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"team\" (rules file line 3): url_env TEAM_URL is not set"),
            "{e}"
        );
        // A bad URL never shows the URL.
        let e = resolve_destinations_with(None, &specs, false, |_| {
            Some("https://evil.example/s3cret".into())
        })
        .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        // `default` twice.
        let twice = [DestinationSpec {
            name: "default".into(),
            ..specs[0].clone()
        }];
        assert!(
            resolve_destinations_with(Some("https://hooks.slack.com/x"), &twice, false, env)
                .is_err()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

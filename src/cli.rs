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
    Config, Credentials, DEFAULT_DESTINATION, DeliveryConfig, DestinationConfig, DestinationKind,
    GenesysConfig, GenesysEndpoints, PersistenceConfig,
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
    Demo(DemoArgs),
    /// Run the embedded simulator alone and print the environment to point `run` at it.
    Simulate(SimulateArgs),
    /// Print the OpenAPI spec of the REST API as YAML.
    Openapi,
}

/// Settings of `run`. Each has an environment variable; flags win.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Genesys Cloud region: a domain (mypurecloud.com, mypurecloud.ie, usw2.pure.cloud, …) or
    /// an AWS region name (us-east-1, eu-west-1, …). Not needed when both base URLs are set.
    #[arg(long, env = "GENESYS_REGION")]
    pub region: Option<String>,
    /// Alias of GENESYS_REGION.
    #[arg(long = "genesys-env", env = "GENESYS_ENV", hide = true)]
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
    /// REST API listen address (default 127.0.0.1:8080).
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: Option<String>,
    /// Interval of the WebSocket application ping (default 20s).
    #[arg(long, env = "PING_INTERVAL")]
    pub ping_interval: Option<String>,
    /// Reconnect when nothing arrives on a socket for this long (default 60s).
    #[arg(long, env = "SILENCE_TIMEOUT")]
    pub silence_timeout: Option<String>,
    /// Persistence batch size in rows (default 500).
    #[arg(long, env = "BATCH_ROWS")]
    pub batch_rows: Option<String>,
    /// Persistence flush interval (default 100ms).
    #[arg(long, env = "FLUSH_INTERVAL")]
    pub flush_interval: Option<String>,
    /// Alerts of one rule and destination firing within this window share one message
    /// (default 10s; 0s: no grouping).
    #[arg(long, env = "ALERT_GROUP_WAIT")]
    pub alert_group_wait: Option<String>,
    /// TEST ONLY: accept webhook URLs that are not https://hooks.slack.com/ (Slack) or not
    /// https:// (generic webhooks), e.g. a local receiver. Never set it in production.
    #[arg(long, env = "ALLOW_INSECURE_WEBHOOKS")]
    pub allow_insecure_webhooks: bool,
}

/// Settings of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 50)]
    pub agents: usize,
    /// REST API listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Time compression of the simulated shift (holding times are divided by it).
    #[arg(long, default_value_t = 10.0)]
    pub speed: f64,
    /// Idle threshold of the demo.
    #[arg(long, default_value = "2m")]
    pub idle_threshold: String,
    /// Database of the demo.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://agent-monitor-demo.db",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Slack incoming webhook to send the demo's alerts to (optional).
    #[arg(long, env = "SLACK_WEBHOOK_URL", hide_env_values = true)]
    pub slack_webhook_url: Option<String>,
}

/// Settings of `simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 50)]
    pub agents: usize,
    /// Address of the simulator (login and API hosts and WebSockets).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Time compression of the simulated shift.
    #[arg(long, default_value_t = 10.0)]
    pub speed: f64,
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
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err(variable, "must not have a query or fragment"));
    }
    let trimmed = url.as_str().trim_end_matches('/').to_string();
    Url::parse(&trimmed).map_err(|e| err(variable, format!("not a URL ({e})")))
}

/// Parses a duration such as `90s`, `15m`, `1h`, `100ms` (humantime); zero is refused.
pub fn parse_duration(variable: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        err(
            variable,
            format!("{raw:?} is not a duration like 90s, 15m or 1h ({e})"),
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
        return Ok(format!("sqlite://{path}?mode=rwc"));
    }
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        Url::parse(raw).map_err(|_| err(variable, "is not a valid postgres:// URL"))?;
        return Ok(raw.to_string());
    }
    Err(err(variable, "must start with sqlite:// or postgres://"))
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

        let mut delivery = DeliveryConfig {
            destinations: resolve_destinations(
                self.slack_webhook_url.as_deref(),
                &[],
                self.allow_insecure_webhooks,
            )?,
            ..DeliveryConfig::default()
        };
        if let Some(raw) = self.alert_group_wait.filter(|v| !v.trim().is_empty()) {
            delivery.group_wait = match raw.trim() {
                "0" => Duration::ZERO,
                raw => humantime::parse_duration(raw)
                    .map_err(|_| err("ALERT_GROUP_WAIT", "is not a duration like 10s"))?,
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
            (Some(raw), None) => parse_duration("IDLE_THRESHOLD", &raw)?,
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
                Duration::from_secs(minutes * 60)
            }
            (None, None) => Duration::from_secs(15 * 60),
        };

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
            },
            delivery,
            database_url: Secret::new(database_url),
            idle_threshold,
            listen_addr,
            persistence,
            shutdown_grace: Duration::from_secs(10),
        })
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

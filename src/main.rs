//! The `agent-monitor` binary: parses the command line and hands over to the library.

use std::io::Write;
use std::process::ExitCode;

use agent_monitor::app::{self, App};
use agent_monitor::cli::{Cli, Command, DemoArgs, HealthcheckArgs, RunArgs, SimulateArgs};
use agent_monitor::sim::{SimConfig, Simulator};
use clap::Parser;

/// Prints a line on stdout; a closed pipe is not an error worth crashing for.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Prints a line on stderr, ignoring a closed pipe.
macro_rules! complain {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        let _ = write!(std::io::stdout(), "{}", agent_monitor::api::spec_yaml());
        return ExitCode::SUCCESS;
    }
    // `run` starts logging once its configuration (LOG_FORMAT among it) is valid; a health
    // check logs nothing (its one line of outcome goes to stderr).
    if !matches!(cli.command, Command::Run(_) | Command::Healthcheck(_)) {
        match agent_monitor::cli::log_format_from_env() {
            Ok(format) => agent_monitor::telemetry::init_with(format),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            complain!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Demo(args) => demo(args).await,
            Command::Simulate(args) => simulate(args).await,
            Command::Openapi => 0,
            Command::Healthcheck(args) => healthcheck(args).await,
        }
    });
    ExitCode::from(code as u8)
}

async fn run(args: RunArgs) -> i32 {
    let config = match args.resolve() {
        Ok(config) => config,
        Err(e) => {
            complain!("error: {e}");
            return 2;
        }
    };
    agent_monitor::telemetry::init_with(config.log_format);
    match app::run(config, app::shutdown_signal()).await {
        Ok(()) => 0,
        Err(e) => {
            complain!("error: {e}");
            e.exit_code()
        }
    }
}

async fn demo(args: DemoArgs) -> i32 {
    app::install_crypto_provider();
    let sim_config = SimConfig {
        agents: args.agents,
        speed: args.speed,
        ..SimConfig::default()
    };
    let sim = match Simulator::start(([127, 0, 0, 1], 0).into(), sim_config).await {
        Ok(sim) => sim,
        Err(e) => {
            complain!("error: cannot start the simulator: {e:#}");
            return 1;
        }
    };
    // A fresh database per run unless one is given (the simulator's user ids repeat).
    let (database_url, fresh_db) = match &args.database_url {
        Some(url) => (url.clone(), None),
        None => match FreshDemoDb::create() {
            Ok(db) => (format!("sqlite://{}", db.file.display()), Some(db)),
            Err(e) => {
                complain!(
                    "error: cannot create the demo database under {}: {e}",
                    std::env::temp_dir().display()
                );
                return 1;
            }
        },
    };
    let run_args = RunArgs {
        api_url: Some(sim.base_url()),
        login_url: Some(sim.base_url()),
        client_id: Some(sim.client_id().to_string()),
        client_secret: Some(sim.client_secret().to_string()),
        idle_threshold: Some(args.idle_threshold.clone()),
        database_url: Some(database_url),
        listen_addr: Some(args.listen.to_string()),
        slack_webhook_url: args.slack_webhook_url.clone(),
        // Access control and retention as `run` reads them.
        api_tokens: std::env::var("API_TOKENS").ok(),
        api_tokens_file: std::env::var_os("API_TOKENS_FILE").map(Into::into),
        protect_probes: std::env::var("PROTECT_PROBES").ok(),
        allow_unauthenticated: std::env::var("ALLOW_UNAUTHENTICATED").ok(),
        retention_days: std::env::var("RETENTION_DAYS").ok(),
        ..RunArgs::default()
    };
    let config = match run_args.resolve() {
        Ok(config) => config,
        Err(e) => {
            complain!("error: {}", demo_wording(&e.to_string()));
            return 2;
        }
    };
    let mut app = match App::start(config).await {
        Ok(app) => app,
        Err(e) => {
            complain!("error: {}", demo_wording(&e.to_string()));
            return e.exit_code();
        }
    };
    let base = format!("http://{}", app.api_addr());
    say!(
        "agent-monitor demo: {} simulated agents (speed x{}), idle threshold {}",
        args.agents,
        args.speed,
        args.idle_threshold
    );
    say!("  Genesys simulator: {}", sim.base_url());
    say!("  Swagger UI:        {base}/docs");
    say!("  History:           {base}/api/v1/agent-status/history");
    say!("  Agents:            {base}/api/v1/agents");
    say!("  Alerts:            {base}/api/v1/alerts");
    say!("  Health:            {base}/healthz   Readiness: {base}/readyz");
    match &fresh_db {
        Some(db) => say!(
            "  Database:          {} (fresh for this run, deleted when the demo stops; \
             --database-url URL keeps one)",
            db.file.display()
        ),
        // Not echoed: the URL may hold a password.
        None => say!("  Database:          the one given by --database-url"),
    }
    say!("Press Ctrl-C to stop.");
    let fatal = tokio::select! {
        _ = app::shutdown_signal() => None,
        fatal = app.fatal_error() => fatal,
    };
    // As `run` does: a final flush the database did not confirm is exit 1 with its count (the
    // demo's own database is thrown away, but one given by --database-url is not).
    let stopped = app.shutdown_checked().await;
    sim.shutdown().await;
    match (fatal, stopped) {
        (Some(e), _) => {
            complain!("error: {e}");
            1
        }
        (None, Err(e)) => {
            complain!("error: {e}");
            e.exit_code()
        }
        (None, Ok(())) => 0,
    }
}

/// `GET args.url`: 0 on a 2xx answer within the timeout, 1 on anything else (with one line
/// on stderr saying what). For a container HEALTHCHECK, where the image has no curl.
async fn healthcheck(args: HealthcheckArgs) -> i32 {
    app::install_crypto_provider();
    let client = match reqwest::Client::builder().timeout(args.timeout).build() {
        Ok(client) => client,
        Err(e) => {
            complain!("unhealthy: cannot build an HTTP client: {e}");
            return 1;
        }
    };
    match client.get(args.url.clone()).send().await {
        Ok(answer) if answer.status().is_success() => 0,
        Ok(answer) => {
            complain!("unhealthy: GET {} answered {}", args.url, answer.status());
            1
        }
        Err(e) => {
            complain!(
                "unhealthy: GET {} failed: {}",
                args.url,
                agent_monitor::genesys::error_chain(&e.without_url())
            );
            1
        }
    }
}

/// The demo's own SQLite file, in a new directory under the system temp dir; the directory
/// (with the WAL and shared-memory files) is removed when this is dropped, at the end of
/// `demo`.
struct FreshDemoDb {
    dir: std::path::PathBuf,
    file: std::path::PathBuf,
}

impl FreshDemoDb {
    fn create() -> std::io::Result<FreshDemoDb> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("agent-monitor-demo-{}-{nanos}", std::process::id()));
        // `create_dir`, not `create_dir_all`: an existing directory is not fresh.
        std::fs::create_dir(&dir)?;
        let file = dir.join("demo.db");
        Ok(FreshDemoDb { dir, file })
    }
}

impl Drop for FreshDemoDb {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            complain!(
                "warning: could not delete the demo database {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// `demo` takes flags, not `run`'s environment variables: name the flag in its errors.
fn demo_wording(message: &str) -> String {
    [
        ("LISTEN_ADDR", "--listen"),
        ("IDLE_THRESHOLD", "--idle-threshold"),
        ("DATABASE_URL", "--database-url"),
        ("SLACK_WEBHOOK_URL", "--slack-webhook-url"),
    ]
    .iter()
    .fold(message.to_string(), |m, (var, flag)| {
        if m.starts_with(var) {
            m.replacen(var, flag, 1)
        } else {
            m
        }
    })
}

async fn simulate(args: SimulateArgs) -> i32 {
    app::install_crypto_provider();
    let sim_config = SimConfig {
        agents: args.agents,
        speed: args.speed,
        ..SimConfig::default()
    };
    let sim = match Simulator::start(args.listen, sim_config).await {
        Ok(sim) => sim,
        Err(e) => {
            complain!(
                "error: cannot start the simulator on {}: {e:#}",
                args.listen
            );
            return 1;
        }
    };
    say!(
        "Genesys Cloud simulator with {} agents on {}",
        args.agents,
        sim.base_url()
    );
    say!("Point `agent-monitor run` at it with:");
    say!("  export GENESYS_API_URL={}", sim.base_url());
    say!("  export GENESYS_LOGIN_URL={}", sim.base_url());
    say!("  export GENESYS_CLIENT_ID={}", sim.client_id());
    say!("  export GENESYS_CLIENT_SECRET={}", sim.client_secret());
    say!("Press Ctrl-C to stop.");
    app::shutdown_signal().await;
    sim.shutdown().await;
    0
}

//! Start-up and shutdown: connect the database (migrations run), start the actor tree and the
//! REST API, and stop them in order.
//!
//! [`App::start`] returns a handle the tests drive; [`run`] is `start`, then wait for SIGINT,
//! SIGTERM or a fatal error, then [`App::shutdown`]: close the sockets with a normal closure,
//! commit every accepted transition, stop the actors and the API, all within
//! `Config::shutdown_grace` (10 s).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};
use ractor::{Actor, ActorRef};
use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use crate::actors::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use crate::api::alerting::AlertingControl;
use crate::api::auth::AccessPolicy;
use crate::api::serve::serve;
use crate::api::timeout_io::IdleTimeoutAcceptor;
use crate::api::{ApiState, ReadinessFn};
use crate::config::Config;
use crate::genesys::GenesysClient;
use crate::secret::redact;

/// Why the service could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The database could not be opened or migrated (the message names `DATABASE_URL`).
    #[error("{0}")]
    Database(String),
    /// The database URL cannot be used: a SQLite file that cannot be opened or created.
    #[error("{0}")]
    DatabaseConfig(String),
    /// The Genesys client could not be built.
    #[error("Genesys client: {0}")]
    Genesys(String),
    /// The REST API could not listen.
    #[error("LISTEN_ADDR: cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: String },
    /// The actor tree could not start.
    #[error("actors: {0}")]
    Actors(String),
    /// A fatal error while running (e.g. `invalid_client`).
    #[error("{0}")]
    Fatal(String),
    /// The stop could not confirm that every accepted transition was committed within the
    /// shutdown grace (a locked or failing database): how many were not (`None`: the
    /// supervisor did not answer, so the count is unknown). Exit status 1.
    #[error("{}", unflushed_message(*.0))]
    Unflushed(Option<usize>),
}

/// The one-line wording of [`AppError::Unflushed`].
fn unflushed_message(count: Option<usize>) -> String {
    match count {
        Some(n) => format!(
            "shutdown: {n} transitions were not committed: the database did not confirm the \
             final flush within the shutdown grace (the log has the database error)"
        ),
        None => "shutdown: the final flush was not confirmed within the shutdown grace (the \
                 supervisor did not answer); transitions may not have been committed"
            .to_string(),
    }
}

impl AppError {
    /// Process exit status: 2 for configuration-class errors (wrong credentials or region, bad
    /// listen address), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Fatal(_) | AppError::Listen { .. } | AppError::DatabaseConfig(_) => 2,
            _ => 1,
        }
    }
}

/// Words a database error for the one-line exit message: it names `DATABASE_URL`; a SQLite
/// path is shown (not a secret), a PostgreSQL password never is (`DbError` masks it, and the
/// whole URL is redacted again in case a driver echoed it).
fn database_error(config: &Config) -> impl FnOnce(crate::db::DbError) -> AppError + '_ {
    move |e| {
        let configuration = e.is_configuration();
        let message = format!("DATABASE_URL: {e}");
        let message = if config.database_url.expose().starts_with("sqlite:") {
            message
        } else {
            redact(&message, &[&config.database_url])
        };
        if configuration {
            AppError::DatabaseConfig(message)
        } else {
            AppError::Database(message)
        }
    }
}

/// Installs the aws-lc-rs rustls provider as the process default. Two providers are compiled
/// in (reqwest brings aws-lc-rs, sqlx brings ring), and tokio-tungstenite's `wss://` connect
/// panics unless one is chosen (rust-stack.md pitfall 1). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A running service.
pub struct App {
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_done: tokio::task::JoinHandle<()>,
    api_addr: SocketAddr,
    api_stop: Option<oneshot::Sender<()>>,
    api_done: tokio::task::JoinHandle<()>,
    db: DatabaseConnection,
    fatal: mpsc::UnboundedReceiver<String>,
    grace: Duration,
}

impl App {
    /// Connects the database, starts the actor tree and serves the REST API on
    /// `config.listen_addr` (port 0 picks a free port; see [`App::api_addr`]).
    pub async fn start(config: Config) -> Result<App, AppError> {
        install_crypto_provider();
        crate::metrics::install();
        for rule in config.rules.rules() {
            crate::metrics::rule_known(&rule.name);
        }
        let db = crate::db::connect(config.database_url.expose())
            .await
            .map_err(database_error(&config))?;
        let client =
            GenesysClient::new(&config.genesys).map_err(|e| AppError::Genesys(e.to_string()))?;

        let acceptor = TcpListener::bind(config.listen_addr)
            .into_acceptor()
            .await
            .map_err(|e| AppError::Listen {
                addr: config.listen_addr,
                error: e.to_string(),
            })?;
        let api_addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .unwrap_or(config.listen_addr);

        let (fatal_tx, fatal) = mpsc::unbounded_channel();
        let args = SupervisorArgs {
            client,
            db: db.clone(),
            persistence: config.persistence,
            delivery: config.delivery.clone(),
            rules: config.rules.clone(),
            rules_path: config.rules_path.clone(),
            ping_interval: config.genesys.ping_interval,
            silence_timeout: config.genesys.silence_timeout,
            topics_per_channel: config.genesys.topics_per_channel,
            retention: config.retention,
            scope: config.membership.scope.clone(),
            membership_refresh: config.membership.refresh,
            backfill_margin: config.membership.backfill_margin,
            clock: crate::clock::Clock::default(),
            fatal: fatal_tx,
        };
        let (supervisor, supervisor_done) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| AppError::Actors(e.to_string()))?;

        let probe = supervisor.clone();
        let readiness: ReadinessFn = Arc::new(move || {
            let probe = probe.clone();
            Box::pin(async move { ractor::call_t!(probe, SupervisorMsg::Health, 5000).ok() })
        });
        let routes = crate::api::routes_with_access(
            ApiState {
                db: db.clone(),
                readiness,
                limits: crate::api::ReportLimits {
                    max_window: config.max_report_window,
                },
                alerting: AlertingControl {
                    rules: {
                        let sup = supervisor.clone();
                        Arc::new(move || {
                            let sup = sup.clone();
                            Box::pin(async move {
                                ractor::call_t!(sup, SupervisorMsg::Rules, 5000).ok()
                            })
                        })
                    },
                    reload: {
                        let sup = supervisor.clone();
                        Arc::new(move || {
                            let sup = sup.clone();
                            Box::pin(async move {
                                ractor::call_t!(sup, SupervisorMsg::ReloadRules, 10000).ok()
                            })
                        })
                    },
                    silenced: {
                        let sup = supervisor.clone();
                        Arc::new(move |silence| {
                            let _ = sup.cast(SupervisorMsg::Silenced(silence));
                        })
                    },
                },
            },
            AccessPolicy::new(&config.access),
        );
        let idle_timeout = config.access.idle_timeout;
        let (api_stop, stop_rx) = oneshot::channel::<()>();
        let api_done = tokio::spawn(async move {
            // poem 3 has no header-read timeout and its idle timeout waits for a half-sent
            // request; `IdleTimeoutAcceptor` aborts silent connections (see its docs).
            // `api::serve` rather than `poem::Server`: a CSV export failing part-way must end
            // its connection without the closing chunk (see its docs).
            let acceptor = IdleTimeoutAcceptor::new(acceptor, idle_timeout);
            let signal = async {
                let _ = stop_rx.await;
            };
            serve(acceptor, routes, signal, Duration::from_secs(2)).await;
        });
        if config.access.tokens.is_empty() && !api_addr.ip().is_loopback() {
            tracing::warn!(%api_addr, "ALLOW_UNAUTHENTICATED=true: the REST API is open to anyone who can reach this address");
        }
        tracing::info!(
            %api_addr,
            api_tokens = config.access.tokens.len(),
            protect_probes = config.access.protect_probes,
            retention_days = config.retention.map(|r| r.keep.as_secs() / 86_400),
            "REST API listening"
        );
        Ok(App {
            supervisor,
            supervisor_done,
            api_addr,
            api_stop: Some(api_stop),
            api_done,
            db,
            fatal,
            grace: config.shutdown_grace,
        })
    }

    /// The address the REST API listens on.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The root supervisor (tests ask it for agent actors and health).
    pub fn supervisor(&self) -> &ActorRef<SupervisorMsg> {
        &self.supervisor
    }

    /// The database connection the API reads through.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Re-reads `RULES_FILE`; the outcome is logged by the supervisor (`None`: no answer).
    pub async fn reload_rules(&self) -> Option<crate::health::ReloadOutcome> {
        ractor::call_t!(self.supervisor, SupervisorMsg::ReloadRules, 10_000).ok()
    }

    /// Waits for a fatal error (e.g. `invalid_client`) reported by the actors.
    pub async fn fatal_error(&mut self) -> Option<String> {
        self.fatal.recv().await
    }

    /// Graceful stop: stop taking events, close the sockets with a normal closure, commit every
    /// accepted transition, stop the actors and the API; bounded by the shutdown grace (10 s).
    /// Whether everything was committed is logged; [`App::shutdown_checked`] also returns it.
    pub async fn shutdown(self) {
        let _ = self.shutdown_checked().await;
    }

    /// [`App::shutdown`], then [`AppError::Unflushed`] when the final flush did not confirm
    /// every accepted transition within the grace (the exit status is then 1, not 0). Nothing
    /// is committed after the flush deadline (2 s before the end of the grace), so the count
    /// is final.
    pub async fn shutdown_checked(mut self) -> Result<(), AppError> {
        let grace = self.grace;
        let flush_deadline = grace.saturating_sub(Duration::from_secs(2));
        // Not confirmed until the supervisor answers that every transition was committed (the
        // flush deadline is 2 s before the grace ends, so it answers unless it is stuck).
        let mut verdict: Result<(), AppError> = Err(AppError::Unflushed(None));
        let stopping = async {
            let result = ractor::call_t!(
                self.supervisor,
                |reply| SupervisorMsg::Shutdown {
                    deadline: flush_deadline,
                    reply
                },
                flush_deadline.as_millis() as u64 + 1000
            );
            verdict = match result {
                Ok(0) => Ok(()),
                Ok(n) => Err(AppError::Unflushed(Some(n))),
                Err(e) => {
                    tracing::error!(error = %e, "the supervisor did not confirm the flush");
                    Err(AppError::Unflushed(None))
                }
            };
            self.supervisor.stop(Some("shutdown".into()));
            let _ = (&mut self.supervisor_done).await;
            if let Some(stop) = self.api_stop.take() {
                let _ = stop.send(());
            }
            let _ = (&mut self.api_done).await;
        };
        if tokio::time::timeout(grace, stopping).await.is_err() {
            tracing::error!(
                grace_secs = grace.as_secs(),
                "shutdown did not finish in time"
            );
        }
        verdict
    }
}

/// Runs the service until `shutdown` completes (SIGINT/SIGTERM in `main`) or a fatal error.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
    // SIGHUP re-reads RULES_FILE (as POST /api/v1/rules/reload does). Installed before the
    // service starts answering: a SIGHUP that came between the API being up and the handler
    // being installed would take SIGHUP's default action and kill the process.
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut app = App::start(config).await?;
    let mut shutdown = std::pin::pin!(shutdown);
    let fatal = loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = &mut shutdown => break None,
            fatal = app.fatal_error() => break fatal,
            _ = hup => {
                tracing::info!("SIGHUP: reloading the rules file");
                app.reload_rules().await;
            }
        }
    };
    tracing::info!("stopping");
    let stopped = app.shutdown_checked().await;
    match fatal {
        Some(error) => Err(AppError::Fatal(error)),
        None => stopped,
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled, so a signal that arrives while the service is still
/// starting is not lost to the default action (which would kill the process). Call it inside
/// the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {}
                _ = wait(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

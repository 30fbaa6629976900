//! The REST API (poem-openapi): transition history, current agents, alerts, liveness and
//! readiness probes, Swagger UI at `/docs` and the spec at `/openapi.json` / `/openapi.yaml`.
//!
//! **API boundary:** the API reads the database and asks a [`ReadinessFn`] for the health
//! report; it knows nothing about actors and never writes. Wire shapes live in [`dto`], separate
//! from the storage entities. Every instant on the wire is RFC 3339 UTC with milliseconds.
//!
//! Every invalid query parameter is answered with 400 and `{"error": "…"}` naming the
//! parameter; database failures with 500 and `{"error": "…"}` (details only in the log); a
//! database query slower than [`limits::DB_QUERY_TIMEOUT`], or no database connection to be had
//! (a SQLite file deleted while the service runs), with 503 and `{"error": "…"}`.
//!
//! Access control and request limits: [`auth`] (every `/api/` operation takes an
//! [`auth::ApiAuth`] parameter) and [`limits`].

#![warn(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, OpenApiService, Tags};
use sea_orm::DatabaseConnection;

use crate::db;
use crate::domain::{Kind, UserId};
use crate::health::HealthReport;

pub mod alerting;
pub mod auth;
pub mod dto;
mod export;
pub mod history;
pub mod limits;
pub mod reports;
pub mod serve;
pub mod timeout_io;

use auth::{AccessPolicy, ApiAuth, Guard};

use dto::{
    AgentDto, AgentList, AlertDto, AlertPage, DEFAULT_LIMIT, ErrorBody, KindParam, LimitParam,
    Liveness, MAX_LIMIT, OffsetParam, Readiness,
};

/// Asks the supervisor for its health report. `None` means it did not answer (in time); the
/// implementation bounds its own wait (the API also gives up after [`READINESS_TIMEOUT`]).
pub type ReadinessFn = Arc<dyn Fn() -> BoxFuture<'static, Option<HealthReport>> + Send + Sync>;

/// Longest `/readyz` waits for the [`ReadinessFn`] before answering 503.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers need: a database to read and a way to ask for readiness.
#[derive(Clone)]
pub struct ApiState {
    /// Read-only use: the persistence actor is the only writer.
    pub db: DatabaseConnection,
    /// Called once per `GET /readyz`.
    pub readiness: ReadinessFn,
    /// Bounds on history and report requests.
    pub limits: ReportLimits,
    /// The rules in force and their reload (wired to the supervisor by `app`).
    pub alerting: alerting::AlertingControl,
}

/// Bounds on what one history or report request may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportLimits {
    /// Largest `[from, to)` window accepted by the timeline, the reports and (when both ends
    /// are given) the history; larger windows are answered with 400. Default
    /// [`DEFAULT_MAX_WINDOW`].
    pub max_window: Duration,
}

/// Default [`ReportLimits::max_window`]: 366 days, a leap year.
pub const DEFAULT_MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

impl Default for ReportLimits {
    fn default() -> Self {
        ReportLimits {
            max_window: DEFAULT_MAX_WINDOW,
        }
    }
}

/// The whole HTTP surface: `/api/v1/…`, `/healthz`, `/readyz`, `/docs`, `/openapi.json`,
/// `/openapi.yaml`, without tokens ([`AccessPolicy::open`]). Serve it with [`serve::serve`].
pub fn routes(state: ApiState) -> impl Endpoint {
    routes_with_access(state, AccessPolicy::open())
}

/// [`routes`] behind the access policy: tokens and request limits ([`auth::Guard`]).
pub fn routes_with_access(state: ApiState, access: AccessPolicy) -> impl Endpoint {
    let service = service(state);
    let docs = service.swagger_ui();
    let spec_json = service.spec_endpoint();
    let spec_yaml = service.spec_endpoint_yaml();
    // The docs and the spec are read-only: other methods get 405 like the API's paths.
    Route::new()
        .nest("/docs", poem::get(docs))
        .at("/openapi.json", poem::get(spec_json))
        .at("/openapi.yaml", poem::get(spec_yaml))
        .at("/metrics", poem::get(metrics_endpoint))
        .nest("/", service)
        .catch_error(not_found)
        .catch_error(method_not_allowed)
        .catch_error(bad_path)
        .with(Guard(access))
        .with(poem::middleware::Tracing)
}

/// Unknown paths answer like every other error of the API: `404` with `{"error": "..."}`.
async fn not_found(_: poem::error::NotFoundError) -> poem::Response {
    let body = serde_json::json!({ "error": "no such endpoint; see /docs for the API" });
    poem::Response::builder()
        .status(poem::http::StatusCode::NOT_FOUND)
        .content_type("application/json; charset=utf-8")
        .body(body.to_string())
}

/// A path segment that is not valid UTF-8 once percent-decoded (`/api/v1/silences/%C3`)
/// answers like every other error of the API: `400` with `{"error": "..."}` (poem's own answer
/// is plain text).
async fn bad_path(_: poem::error::ParsePathError) -> poem::Response {
    let body = serde_json::json!({
        "error": "a path parameter is not valid UTF-8 once percent-decoded"
    });
    poem::Response::builder()
        .status(poem::http::StatusCode::BAD_REQUEST)
        .content_type("application/json; charset=utf-8")
        .body(body.to_string())
}

/// A known path with a method it does not serve answers like every other error of the API:
/// `405` with `{"error": "..."}` (poem's own answer is plain text).
async fn method_not_allowed(_: poem::error::MethodNotAllowedError) -> poem::Response {
    let body = serde_json::json!({
        "error": "method not allowed on this path; see /docs for the methods of each endpoint"
    });
    poem::Response::builder()
        .status(poem::http::StatusCode::METHOD_NOT_ALLOWED)
        .content_type("application/json; charset=utf-8")
        .body(body.to_string())
}

/// `GET /metrics`: every metric in the Prometheus text exposition format (version 0.0.4).
/// Names and meanings are in [`crate::metrics`].
#[poem::handler]
fn metrics_endpoint() -> poem::Response {
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render())
}

/// The OpenAPI 3 spec as YAML: deterministic (no server URL, nothing from the environment but
/// the crate version). Printed by `agent-monitor openapi`, checked in as `openapi.yaml`.
pub fn spec_yaml() -> String {
    let placeholder = ApiState {
        db: DatabaseConnection::default(),
        readiness: Arc::new(|| Box::pin(async { None })),
        limits: ReportLimits::default(),
        alerting: alerting::AlertingControl::default(),
    };
    service(placeholder).spec_yaml()
}

type Apis = (
    MonitorApi,
    history::HistoryApi,
    reports::ReportsApi,
    alerting::AlertingApi,
);

fn service(state: ApiState) -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            MonitorApi {
                state: state.clone(),
            },
            history::HistoryApi {
                state: state.clone(),
            },
            reports::ReportsApi {
                state: state.clone(),
            },
            alerting::AlertingApi { state },
        ),
        "agent-monitor",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Real-time monitor for Genesys Cloud agents: every presence and routing-status \
         transition, the current state of each agent, per-agent timelines and time-in-state \
         reports, idle alerts and their Slack delivery, and health probes.\n\n\
         All instants are RFC 3339 in UTC with millisecond precision \
         (`2024-05-01T10:15:30.123Z`); durations are in seconds. Lists are newest first. \
         Invalid query parameters are answered with 400 and `{\"error\": \"...\"}` naming the \
         parameter.\n\n\
         History, timeline and reports are also available as `text/csv` (header row first): \
         add `format=csv` or send `Accept: text/csv`. Large exports are streamed.",
    )
}

#[derive(Tags)]
enum ApiTags {
    /// Stored presence and routing-status transitions.
    History,
    /// Current state of every monitored agent.
    Agents,
    /// Alerts fired and how their delivery ended.
    Alerts,
    /// Per-agent timelines and time-in-state reports.
    Reports,
    /// Liveness and readiness probes.
    Probes,
}

/// Errors a handler can end in (mapped to 400 or 500 by the response types).
#[derive(Debug, thiserror::Error)]
enum ApiError {
    /// A query parameter is invalid; the message names it.
    #[error("{0}")]
    BadRequest(String),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error(transparent)]
    CorruptRow(#[from] dto::CorruptRow),
    #[error(transparent)]
    Timeout(#[from] limits::QueryTimeout),
}

/// The answer (503) when no database connection can be had.
const NO_CONNECTION: &str = "the database cannot be opened; see /readyz and the service log";

/// Whether `e` means no database connection could be had (a SQLite file deleted or replaced
/// while the service runs: the pool is closed, `/readyz` names the problem), answered 503
/// rather than 500.
fn no_connection(e: &sea_orm::DbErr) -> bool {
    matches!(
        e,
        sea_orm::DbErr::Conn(_) | sea_orm::DbErr::ConnectionAcquire(_)
    )
}

impl ApiError {
    /// Answered 503 rather than 500: the database did not answer in time, or no connection to
    /// it could be had (a SQLite file deleted while the service runs cannot be opened again:
    /// `/readyz` names the problem).
    fn unavailable(&self) -> bool {
        matches!(self, ApiError::Timeout(_))
            || matches!(self, ApiError::Database(e) if no_connection(e))
    }

    fn body(&self) -> Json<ErrorBody> {
        let error = match self {
            ApiError::BadRequest(message) => message.clone(),
            ApiError::Timeout(timeout) => {
                tracing::warn!(error = %timeout, "API query timed out");
                "the database did not answer in time; retry later".to_owned()
            }
            ApiError::Database(_) if self.unavailable() => {
                tracing::error!(error = %self, "API request failed: no database connection");
                NO_CONNECTION.to_owned()
            }
            ApiError::Database(_) | ApiError::CorruptRow(_) => {
                tracing::error!(error = %self, "API request failed");
                "internal error reading the database; see the service log".to_owned()
            }
        };
        Json(ErrorBody { error })
    }
}

/// A parse error poem-openapi raised before the handler ran, in the API's error shape.
fn parse_error_body(err: &poem::Error) -> Json<ErrorBody> {
    let error = match err.downcast_ref::<poem_openapi::error::ParseParamError>() {
        // poem-openapi's reason for a missing required parameter is `Type "string" expects an
        // input value.`: say which parameter is required and what it takes.
        Some(p) if p.reason.ends_with("expects an input value.") => {
            format!("{} is required{}", p.name, required_hint(p.name))
        }
        Some(p) => format!("invalid value for {}: {}", p.name, p.reason),
        None => err.to_string(),
    };
    Json(ErrorBody { error })
}

/// What a required query parameter takes, for the "is required" message.
fn required_hint(name: &str) -> &'static str {
    match name {
        "from" | "to" => " (an RFC 3339 instant)",
        _ => "",
    }
}

#[derive(ApiResponse)]
enum AgentsResponse {
    /// Every agent's current state.
    #[oai(status = 200)]
    Ok(Json<AgentList>),
    /// No valid bearer token (only when the service has API tokens configured); the
    /// `WWW-Authenticate` header is `Bearer realm="agent-monitor"`.
    #[oai(status = 401)]
    #[allow(dead_code)] // answered by `auth::Guard` before the handler runs
    Unauthorized(Json<ErrorBody>),
    /// The database could not be read.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database did not answer in time, or cannot be opened (see `/readyz`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "alerts_bad_request")]
enum AlertsResponse {
    /// One page of alerts, newest first.
    #[oai(status = 200)]
    Ok(Json<AlertPage>),
    /// No valid bearer token (only when the service has API tokens configured); the
    /// `WWW-Authenticate` header is `Bearer realm="agent-monitor"`.
    #[oai(status = 401)]
    #[allow(dead_code)] // answered by `auth::Guard` before the handler runs
    Unauthorized(Json<ErrorBody>),
    /// A query parameter is invalid; `error` names it.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The database could not be read.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database did not answer in time, or cannot be opened (see `/readyz`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn alerts_bad_request(err: poem::Error) -> AlertsResponse {
    AlertsResponse::BadRequest(parse_error_body(&err))
}

impl From<ApiError> for AlertsResponse {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::BadRequest(_) => AlertsResponse::BadRequest(err.body()),
            _ if err.unavailable() => AlertsResponse::Unavailable(err.body()),
            _ => AlertsResponse::Internal(err.body()),
        }
    }
}

#[derive(ApiResponse)]
enum LiveResponse {
    /// The process is running.
    #[oai(status = 200)]
    Ok(Json<Liveness>),
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// Ready: every channel connected and subscribed, database writable.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// Not ready (see `problems`), or the supervisor did not answer.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

struct MonitorApi {
    state: ApiState,
}

#[OpenApi]
impl MonitorApi {
    /// Current agents
    ///
    /// The current presence, routing status, active conversations and idle episode of every
    /// monitored agent, ordered by `user_id`.
    #[oai(
        path = "/api/v1/agents",
        method = "get",
        tag = "ApiTags::Agents",
        operation_id = "getAgents"
    )]
    async fn agents(&self, _auth: ApiAuth) -> AgentsResponse {
        match limits::query_timeout(db::agents(&self.state.db)).await {
            Ok(Ok(rows)) => AgentsResponse::Ok(Json(AgentList {
                total: rows.len() as u64,
                data: rows.into_iter().map(AgentDto::from).collect(),
            })),
            Ok(Err(err)) => match ApiError::from(err) {
                err if err.unavailable() => AgentsResponse::Unavailable(err.body()),
                err => AgentsResponse::Internal(err.body()),
            },
            Err(timeout) => AgentsResponse::Unavailable(ApiError::from(timeout).body()),
        }
    }

    /// Alerts
    ///
    /// Alerts fired, newest `fired_at` first, with the outcome of their Slack delivery.
    #[oai(
        path = "/api/v1/alerts",
        method = "get",
        tag = "ApiTags::Alerts",
        operation_id = "getAlerts"
    )]
    async fn alerts(
        &self,
        _auth: ApiAuth,
        /// Page size: 1–100 rows, default 20.
        limit: Query<Option<LimitParam>>,
        /// Rows to skip, ≥ 0, default 0.
        offset: Query<Option<OffsetParam>>,
        /// Only alerts of this rule.
        rule: Query<Option<String>>,
        /// Only alerts of this agent (Genesys user id, any case).
        user_id: Query<Option<String>>,
        /// Only alerts with this delivery status: `pending`, `delivered`, `failed`,
        /// `not_configured`, `suppressed` or `dropped`.
        status: Query<Option<String>>,
        /// Only alerts fired at or after this instant (RFC 3339 with a zone).
        from: Query<Option<String>>,
        /// Only alerts fired before this instant (RFC 3339 with a zone).
        to: Query<Option<String>>,
    ) -> AlertsResponse {
        let result = async {
            let filter = db::alerting::AlertFilter {
                limit: parse_limit(limit.0.as_ref())?,
                offset: parse_offset(offset.0.as_ref())?,
                rule: non_empty("rule", rule.0)?,
                user_id: non_empty("user_id", user_id.0)?
                    .map(|u| UserId::parse(&u).map_err(|e| ApiError::BadRequest(format!("user_id: {e}"))))
                    .transpose()?,
                status: match non_empty("status", status.0)? {
                    None => None,
                    Some(raw) => match crate::domain::DeliveryStatus::parse(&raw.to_ascii_lowercase()) {
                        Some(s) => Some(s.as_str().to_string()),
                        None => {
                            return Err(ApiError::BadRequest(format!(
                                "status must be one of pending, delivered, failed, not_configured, suppressed, dropped; got {raw:?}"
                            )));
                        }
                    },
                },
                from: parse_instant("from", from.0)?,
                to: parse_instant("to", to.0)?,
            };
            if let (Some(from), Some(to)) = (filter.from, filter.to) {
                if from > to {
                    return Err(ApiError::BadRequest("from must not be after to".into()));
                }
            }
            let (total, rows) =
                limits::query_timeout(db::alerting::filtered_alerts(&self.state.db, &filter)).await??;
            let data = rows.into_iter().map(AlertDto::try_from).collect::<Result<Vec<_>, _>>()?;
            Ok::<_, ApiError>(AlertPage { total, data })
        }
        .await;
        match result {
            Ok(page) => AlertsResponse::Ok(Json(page)),
            Err(err) => err.into(),
        }
    }

    /// Liveness probe
    ///
    /// 200 `{"status":"ok"}` while the process runs; checks nothing else.
    #[oai(
        path = "/healthz",
        method = "get",
        tag = "ApiTags::Probes",
        operation_id = "getLiveness"
    )]
    async fn healthz(&self) -> LiveResponse {
        LiveResponse::Ok(Json(Liveness {
            status: "ok".into(),
        }))
    }

    /// Readiness probe
    ///
    /// 200 when every notification channel is connected and subscribed and the database is
    /// writable; 503 otherwise, or when the supervisor does not answer within 5 seconds. The
    /// body is the same in both cases: actors, connections, database, agent count and the
    /// problems that make the service not ready.
    #[oai(
        path = "/readyz",
        method = "get",
        tag = "ApiTags::Probes",
        operation_id = "getReadiness"
    )]
    async fn readyz(&self) -> ReadyResponse {
        let report = tokio::time::timeout(READINESS_TIMEOUT, (self.state.readiness)())
            .await
            .ok()
            .flatten();
        match report {
            Some(report) if report.ready => ReadyResponse::Ready(Json(Readiness::from(&report))),
            Some(report) => ReadyResponse::NotReady(Json(Readiness::from(&report))),
            None => ReadyResponse::NotReady(Json(Readiness::unanswered())),
        }
    }
}

fn parse_user_id(raw: Option<&str>) -> Result<Option<UserId>, ApiError> {
    raw.map(|s| {
        UserId::parse(s).map_err(|_| ApiError::BadRequest("user_id must not be empty".into()))
    })
    .transpose()
}

/// `state` of the history: a system presence (`ON_QUEUE`, also spelled `On Queue`) or a routing
/// status (`IDLE`), case-insensitive, normalized as stored. Anything else (a typo, an org
/// presence label such as `Lunch`, which is stored in `org_presence`) is refused with the
/// accepted values rather than answered with an empty page.
fn parse_state(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    use crate::domain::{
        ROUTING_STATUSES, SYSTEM_PRESENCES, normalize_routing_status, normalize_system_presence,
    };
    match raw.map(str::trim) {
        None => Ok(None),
        Some("") => Err(ApiError::BadRequest("state must not be empty".into())),
        Some(s) => {
            let presence = normalize_system_presence(s);
            if SYSTEM_PRESENCES.contains(&presence.as_str()) {
                return Ok(Some(presence));
            }
            let routing = normalize_routing_status(s);
            if ROUTING_STATUSES.contains(&routing.as_str()) {
                return Ok(Some(routing));
            }
            Err(ApiError::BadRequest(format!(
                "state {s:?} is neither a system presence ({}) nor a routing status ({}) \
                 (case-insensitive); org presence labels are not filterable here (they are \
                 the org_presence field)",
                SYSTEM_PRESENCES.join(", "),
                ROUTING_STATUSES.join(", ")
            )))
        }
    }
}

fn parse_kind(raw: Option<&KindParam>) -> Result<Option<Kind>, ApiError> {
    raw.map(|k| {
        Kind::parse(&k.0).ok_or_else(|| {
            ApiError::BadRequest(format!("kind must be presence or routing, got {:?}", k.0))
        })
    })
    .transpose()
}

/// A present query parameter must not be blank.
fn non_empty(name: &str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => {
            Err(ApiError::BadRequest(format!("{name} must not be empty")))
        }
        Some(v) => Ok(Some(v.trim().to_string())),
    }
}

/// An RFC 3339 instant with a zone, or a 400 naming the parameter.
fn parse_instant(
    name: &str,
    raw: Option<String>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    match non_empty(name, raw)? {
        None => Ok(None),
        Some(v) => crate::domain::parse_timestamp(&v).map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} must be an RFC 3339 instant with a zone, got {v:?}"
            ))
        }),
    }
}

fn parse_limit(raw: Option<&LimitParam>) -> Result<u64, ApiError> {
    let Some(LimitParam(raw)) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.trim().parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as u64),
        Ok(n) => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {n}"
        ))),
        Err(_) => Err(ApiError::BadRequest(format!(
            "limit must be an integer between 1 and {MAX_LIMIT}, got {raw:?}"
        ))),
    }
}

fn parse_offset(raw: Option<&OffsetParam>) -> Result<u64, ApiError> {
    let Some(OffsetParam(raw)) = raw else {
        return Ok(0);
    };
    match raw.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n as u64),
        Ok(n) => Err(ApiError::BadRequest(format!(
            "offset must be 0 or greater, got {n}"
        ))),
        Err(_) => Err(ApiError::BadRequest(format!(
            "offset must be an integer 0 or greater, got {raw:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(s: &str) -> Result<u64, String> {
        parse_limit(Some(&LimitParam(s.into()))).map_err(|e| e.to_string())
    }

    #[test]
    fn parameters_are_validated_with_messages_naming_them() {
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert_eq!(limit("100"), Ok(100));
        assert_eq!(
            limit("500"),
            Err("limit must be between 1 and 100, got 500".into())
        );
        assert_eq!(
            limit("abc"),
            Err("limit must be an integer between 1 and 100, got \"abc\"".into())
        );
        assert!(
            parse_offset(Some(&OffsetParam("-1".into())))
                .unwrap_err()
                .to_string()
                .starts_with("offset ")
        );
        assert_eq!(
            parse_kind(Some(&KindParam("Presence".into()))).unwrap(),
            Some(Kind::Presence)
        );
        assert!(
            parse_kind(Some(&KindParam("both".into())))
                .unwrap_err()
                .to_string()
                .starts_with("kind ")
        );
        assert_eq!(
            parse_state(Some("on_queue")).unwrap().as_deref(),
            Some("ON_QUEUE")
        );
        assert_eq!(
            parse_state(Some("On Queue")).unwrap().as_deref(),
            Some("ON_QUEUE")
        );
        assert_eq!(
            parse_state(Some("not_responding")).unwrap().as_deref(),
            Some("NOT_RESPONDING")
        );
        let err = parse_state(Some("bogus")).unwrap_err().to_string();
        assert!(err.starts_with("state \"bogus\" is neither"), "{err}");
        assert!(
            err.contains("ON_QUEUE") && err.contains("INTERACTING"),
            "{err}"
        );
        assert!(parse_user_id(Some(" ")).is_err());
    }

    /// Every `/api/` operation must take an `ApiAuth` parameter (see `auth`), so the spec says
    /// it needs the bearer token; the probes must not.
    #[test]
    fn every_api_operation_declares_bearer_auth() {
        let placeholder = ApiState {
            db: DatabaseConnection::default(),
            readiness: Arc::new(|| Box::pin(async { None })),
            limits: Default::default(),
            alerting: Default::default(),
        };
        let spec: serde_json::Value = serde_json::from_str(&service(placeholder).spec()).unwrap();
        assert_eq!(
            spec["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
        let paths = spec["paths"].as_object().unwrap();
        let mut api_operations = 0;
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                let security = &operation["security"];
                if path.starts_with("/api/") {
                    api_operations += 1;
                    assert_eq!(
                        security,
                        &serde_json::json!([{ "bearerAuth": [] }]),
                        "{method} {path} must take an `auth: ApiAuth` parameter"
                    );
                    assert!(
                        operation["responses"]["401"].is_object(),
                        "{method} {path} must document the 401 (see `auth`)"
                    );
                } else {
                    assert!(security.is_null(), "{method} {path} must stay open");
                }
            }
        }
        assert!(api_operations >= 3);
    }

    #[test]
    fn the_spec_is_deterministic_and_has_no_server() {
        let a = spec_yaml();
        assert_eq!(a, spec_yaml());
        assert!(a.contains("servers: []"), "{a}");
        assert!(a.contains("/api/v1/agent-status/history"));
    }
}

//! Alert rules and silences: `GET /api/v1/rules`, `POST /api/v1/rules/reload`,
//! `GET|POST /api/v1/silences`, `DELETE /api/v1/silences/{id}`.
//!
//! The API still knows nothing about actors: the rules in force and the reload come through
//! [`AlertingControl`] closures that `app` wires to the supervisor. Silences are operator
//! configuration written straight to the `silences` table (see `db::alerting`); the Slack
//! actor reads them before every send, and a new silence is also announced to it (through
//! [`AlertingControl::silenced`]) so that the firing messages it matches, already waiting for
//! delivery, are dropped instead of sent.

use std::sync::Arc;

use chrono::Utc;
use futures_util::future::BoxFuture;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::auth::ApiAuth;
use super::dto::{ErrorBody, Timestamp};
use super::{ApiState, ApiTags, limits, parse_error_body};
use crate::db;
use crate::domain::{Silence, UserId, parse_timestamp};
use crate::health::{ReloadOutcome, RulesInForce};
use crate::rules::Rule;

/// Asks the supervisor for the rules in force (`None`: it did not answer).
pub type RulesFn = Arc<dyn Fn() -> BoxFuture<'static, Option<RulesInForce>> + Send + Sync>;
/// Asks the supervisor to re-read `RULES_FILE` (`None`: it did not answer).
pub type ReloadFn = Arc<dyn Fn() -> BoxFuture<'static, Option<ReloadOutcome>> + Send + Sync>;
/// Tells the alerting side that a silence was just created (fire and forget).
pub type SilencedFn = Arc<dyn Fn(Silence) + Send + Sync>;

/// How the API reaches the alerting side of the service.
#[derive(Clone)]
pub struct AlertingControl {
    /// `GET /api/v1/rules`.
    pub rules: RulesFn,
    /// `POST /api/v1/rules/reload` (and SIGHUP, wired in `app`).
    pub reload: ReloadFn,
    /// `POST /api/v1/silences`, after the silence is stored: drop the waiting messages it
    /// matches.
    pub silenced: SilencedFn,
}

impl Default for AlertingControl {
    /// Nothing behind it: both answer 503 (tests of other endpoints, the spec printer).
    fn default() -> Self {
        AlertingControl {
            rules: Arc::new(|| Box::pin(async { None })),
            reload: Arc::new(|| Box::pin(async { None })),
            silenced: Arc::new(|_| {}),
        }
    }
}

/// One condition group of a rule's match: every given condition must hold.
#[derive(Debug, Clone, Object)]
#[oai(rename = "RuleConditions")]
pub struct RuleConditionsDto {
    /// Routing statuses (one must match), e.g. `IDLE`.
    pub routing_status: Vec<String>,
    /// System presences (one must match), e.g. `MEAL`.
    pub system_presence: Vec<String>,
    /// Org presence definition ids (GUIDs; one must match).
    pub presence_definition_id: Vec<String>,
    /// `true`: at least one active conversation; `false`: none; absent: no condition.
    #[oai(nullable)]
    pub active_conversation: Option<bool>,
}

/// Which agents a rule applies to (every given list must contain the agent).
#[derive(Debug, Clone, Object)]
#[oai(rename = "RuleScope")]
pub struct RuleScopeDto {
    /// Queue ids.
    pub queue_ids: Vec<String>,
    /// Division ids.
    pub division_ids: Vec<String>,
    /// Only these users.
    pub user_ids: Vec<String>,
    /// Never these users.
    pub exclude_user_ids: Vec<String>,
}

/// One quiet-hours period of a rule (nothing is sent; episodes are still tracked).
#[derive(Debug, Clone, Object)]
#[oai(rename = "QuietHours")]
pub struct QuietHoursDto {
    /// IANA time zone.
    pub time_zone: String,
    /// Days on which the windows start (`Mon` … `Sun`).
    pub days: Vec<String>,
    /// Windows as `HH:MM-HH:MM` local time; a window ending before it starts crosses midnight.
    pub windows: Vec<String>,
}

/// One alert rule in force.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Rule")]
pub struct RuleDto {
    /// Unique name.
    pub name: String,
    /// Alternative condition groups: the rule matches when any group matches.
    pub any_of: Vec<RuleConditionsDto>,
    /// How long the match must hold before firing, seconds (from Genesys's timestamp).
    pub threshold_seconds: f64,
    /// While firing, repeat after this many seconds; absent: fire once.
    #[oai(nullable)]
    pub repeat_interval_seconds: Option<f64>,
    /// Whether a resolved message is sent when a fired episode ends.
    pub send_resolved: bool,
    /// How long a match may be interrupted without ending the episode, seconds.
    pub flap_tolerance_seconds: f64,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// Destination name; absent: the default destination.
    #[oai(nullable)]
    pub destination: Option<String>,
    /// Which agents it applies to.
    pub scope: RuleScopeDto,
    /// When nothing is sent.
    pub quiet_hours: Vec<QuietHoursDto>,
    /// Line of the rule in the rules file; 0 for the built-in rule.
    pub line: u64,
}

/// The outcome of a rules reload.
#[derive(Debug, Clone, Object)]
#[oai(rename = "RulesReload")]
pub struct ReloadDto {
    /// When it ran, UTC.
    pub at: Timestamp,
    /// True when the new rules are in force.
    pub applied: bool,
    /// Every problem found, one per entry (`line N: rule "x": …`); empty when applied.
    pub problems: Vec<String>,
}

/// The rules in force and where they came from.
#[derive(Debug, Clone, Object)]
#[oai(rename = "RulesInForce")]
pub struct RulesDto {
    /// `RULES_FILE`, or absent for the built-in `idle` rule.
    #[oai(nullable)]
    pub source: Option<String>,
    /// The rules, in file order.
    pub rules: Vec<RuleDto>,
    /// The last reload, if any.
    #[oai(nullable)]
    pub last_reload: Option<ReloadDto>,
}

/// A silence.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Silence")]
pub struct SilenceDto {
    /// Id (for `DELETE /api/v1/silences/{id}`).
    pub id: i64,
    /// Only this rule; absent: every rule.
    #[oai(nullable)]
    pub rule: Option<String>,
    /// Only this agent; absent: every agent.
    #[oai(nullable)]
    pub user_id: Option<String>,
    /// End of the silence, UTC.
    pub until: Timestamp,
    /// Why.
    pub comment: String,
    /// When it was created, UTC.
    pub created_at: Timestamp,
    /// Whether it is in force now.
    pub active: bool,
}

/// A new silence: by rule and/or user (at least one), until a time, with a comment.
#[derive(Debug, Clone, Object)]
#[oai(rename = "NewSilence")]
pub struct NewSilenceDto {
    /// Only this rule (must be a rule in force).
    #[oai(nullable)]
    pub rule: Option<String>,
    /// Only this agent (Genesys user id, any case).
    #[oai(nullable)]
    pub user_id: Option<String>,
    /// End of the silence: RFC 3339 with a zone, in the future. Required.
    #[oai(nullable)]
    pub until: Option<String>,
    /// Why. Required, at most 1,000 characters.
    #[oai(nullable)]
    pub comment: Option<String>,
}

/// Silences, newest first.
#[derive(Debug, Clone, Object)]
#[oai(rename = "SilenceList")]
pub struct SilenceList {
    /// At most 500.
    pub data: Vec<SilenceDto>,
}

fn rule_dto(rule: &Rule) -> RuleDto {
    RuleDto {
        name: rule.name.clone(),
        any_of: rule
            .matcher
            .any_of
            .iter()
            .map(|g| RuleConditionsDto {
                routing_status: g.routing_status.clone(),
                system_presence: g.system_presence.clone(),
                presence_definition_id: g.presence_definition_id.clone(),
                active_conversation: g.active_conversation,
            })
            .collect(),
        threshold_seconds: rule.threshold.as_secs_f64(),
        repeat_interval_seconds: rule.repeat_interval.map(|d| d.as_secs_f64()),
        send_resolved: rule.send_resolved,
        flap_tolerance_seconds: rule.flap_tolerance.as_secs_f64(),
        severity: rule.severity.as_str().to_string(),
        destination: rule.destination.clone(),
        scope: RuleScopeDto {
            queue_ids: rule.scope.queue_ids.clone(),
            division_ids: rule.scope.division_ids.clone(),
            user_ids: rule.scope.user_ids.clone(),
            exclude_user_ids: rule.scope.exclude_user_ids.clone(),
        },
        quiet_hours: rule
            .quiet_hours
            .iter()
            .map(|q| QuietHoursDto {
                time_zone: q.time_zone.name().to_string(),
                days: q.days.iter().map(|d| d.to_string()).collect(),
                windows: q
                    .windows
                    .iter()
                    .map(|(a, b)| {
                        format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60)
                    })
                    .collect(),
            })
            .collect(),
        line: rule.line as u64,
    }
}

fn reload_dto(r: &ReloadOutcome) -> ReloadDto {
    ReloadDto {
        at: Timestamp(r.at),
        applied: r.applied,
        problems: r.problems.clone(),
    }
}

fn silence_dto(s: Silence) -> SilenceDto {
    SilenceDto {
        id: s.id,
        active: s.until > Utc::now(),
        rule: s.rule,
        user_id: s.user_id.map(|u| u.as_str().to_string()),
        until: Timestamp(s.until),
        comment: s.comment,
        created_at: Timestamp(s.created_at),
    }
}

fn error(message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: message.into(),
    })
}

#[derive(ApiResponse)]
enum RulesResponse {
    /// The rules in force.
    #[oai(status = 200)]
    Ok(Json<RulesDto>),
    /// No valid bearer token (only when the service has API tokens configured); the
    /// `WWW-Authenticate` header is `Bearer realm="agent-monitor"`.
    #[oai(status = 401)]
    #[allow(dead_code)] // answered by `auth::Guard` before the handler runs
    Unauthorized(Json<ErrorBody>),
    /// The supervisor did not answer in time.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum ReloadResponse {
    /// The new rules are in force.
    #[oai(status = 200)]
    Ok(Json<ReloadDto>),
    /// No valid bearer token (only when the service has API tokens configured); the
    /// `WWW-Authenticate` header is `Bearer realm="agent-monitor"`.
    #[oai(status = 401)]
    #[allow(dead_code)] // answered by `auth::Guard` before the handler runs
    Unauthorized(Json<ErrorBody>),
    /// The file was refused (every problem listed) or no `RULES_FILE` is configured; the
    /// running rules stay in force.
    #[oai(status = 422)]
    Refused(Json<ReloadDto>),
    /// The supervisor did not answer in time.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum SilencesResponse {
    /// Silences, newest first.
    #[oai(status = 200)]
    Ok(Json<SilenceList>),
    /// No valid bearer token (only when the service has API tokens configured); the
    /// `WWW-Authenticate` header is `Bearer realm="agent-monitor"`.
    #[oai(status = 401)]
    #[allow(dead_code)] // answered by `auth::Guard` before the handler runs
    Unauthorized(Json<ErrorBody>),
    /// The database could not be read.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database did not answer in time.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "create_bad_request")]
enum CreateSilenceResponse {
    /// The silence, in force from now.
    #[oai(status = 201)]
    Created(Json<SilenceDto>),
    /// A field is invalid; `error` names it.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid bearer token (only when the service has API tokens configured); the
    /// `WWW-Authenticate` header is `Bearer realm="agent-monitor"`.
    #[oai(status = 401)]
    #[allow(dead_code)] // answered by `auth::Guard` before the handler runs
    Unauthorized(Json<ErrorBody>),
    /// The database could not be written.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database did not answer in time.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn create_bad_request(err: poem::Error) -> CreateSilenceResponse {
    CreateSilenceResponse::BadRequest(parse_error_body(&err))
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "delete_bad_request")]
enum DeleteSilenceResponse {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
    /// The id is not a number.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid bearer token (only when the service has API tokens configured); the
    /// `WWW-Authenticate` header is `Bearer realm="agent-monitor"`.
    #[oai(status = 401)]
    #[allow(dead_code)] // answered by `auth::Guard` before the handler runs
    Unauthorized(Json<ErrorBody>),
    /// No silence has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The database could not be written.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database did not answer in time.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// The only thing that can fail to parse is the `{id}` path segment; poem-openapi names it
/// `param0` in its own message, so say which parameter and what it takes.
fn delete_bad_request(err: poem::Error) -> DeleteSilenceResponse {
    if err.is::<poem_openapi::error::ParsePathError>() {
        return DeleteSilenceResponse::BadRequest(Json(ErrorBody {
            error: "invalid silence id in the path: `id` must be an integer, the `id` of a \
                    silence as listed by GET /api/v1/silences"
                .into(),
        }));
    }
    DeleteSilenceResponse::BadRequest(parse_error_body(&err))
}

/// The rules and silences endpoints.
pub struct AlertingApi {
    /// Shared handler state.
    pub state: ApiState,
}

#[OpenApi]
impl AlertingApi {
    /// Alert rules in force
    ///
    /// The rules the agents evaluate now (the rules file, or the built-in `idle` rule), where
    /// they came from, and the outcome of the last reload.
    #[oai(
        path = "/api/v1/rules",
        method = "get",
        tag = "ApiTags::Alerts",
        operation_id = "getRules"
    )]
    async fn rules(&self, _auth: ApiAuth) -> RulesResponse {
        match (self.state.alerting.rules)().await {
            Some(r) => RulesResponse::Ok(Json(RulesDto {
                source: r.source.map(|p| p.display().to_string()),
                rules: r.rules.rules().iter().map(rule_dto).collect(),
                last_reload: r.last_reload.as_ref().map(reload_dto),
            })),
            None => RulesResponse::Unavailable(error("the supervisor did not answer")),
        }
    }

    /// Reload the rules file
    ///
    /// Re-reads `RULES_FILE` (as SIGHUP does). A valid file replaces the rules in every agent
    /// (200); an invalid one is refused with every problem listed by line and the running rules
    /// stay in force (422).
    #[oai(
        path = "/api/v1/rules/reload",
        method = "post",
        tag = "ApiTags::Alerts",
        operation_id = "reloadRules"
    )]
    async fn reload(&self, _auth: ApiAuth) -> ReloadResponse {
        match (self.state.alerting.reload)().await {
            Some(r) if r.applied => ReloadResponse::Ok(Json(reload_dto(&r))),
            Some(r) => ReloadResponse::Refused(Json(reload_dto(&r))),
            None => ReloadResponse::Unavailable(error("the supervisor did not answer")),
        }
    }

    /// Silences
    ///
    /// Silences, newest first (expired ones too, flagged `active: false`). Alerts matching an
    /// active silence are tracked and recorded (`delivery_status = suppressed`) but not sent.
    #[oai(
        path = "/api/v1/silences",
        method = "get",
        tag = "ApiTags::Alerts",
        operation_id = "getSilences"
    )]
    async fn silences(&self, _auth: ApiAuth) -> SilencesResponse {
        match limits::query_timeout(db::alerting::list_silences(&self.state.db, 500)).await {
            Ok(Ok(rows)) => SilencesResponse::Ok(Json(SilenceList {
                data: rows.into_iter().map(silence_dto).collect(),
            })),
            Ok(Err(e)) if super::no_connection(&e) => {
                tracing::error!(error = %e, "listing silences failed: no database connection");
                SilencesResponse::Unavailable(error(super::NO_CONNECTION))
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "listing silences failed");
                SilencesResponse::Internal(error(
                    "internal error reading the database; see the service log",
                ))
            }
            Err(e) => SilencesResponse::Unavailable(error(e.to_string())),
        }
    }

    /// Create a silence
    ///
    /// Silences a rule, an agent, or one rule for one agent, until `until`. Give at least one
    /// of `rule` and `user_id`; `rule` must name a rule in force; `until` must be in the future;
    /// `comment` is required.
    #[oai(
        path = "/api/v1/silences",
        method = "post",
        tag = "ApiTags::Alerts",
        operation_id = "createSilence"
    )]
    async fn create_silence(
        &self,
        _auth: ApiAuth,
        body: Json<NewSilenceDto>,
    ) -> CreateSilenceResponse {
        let body = body.0;
        let bad = |m: String| CreateSilenceResponse::BadRequest(error(m));
        let rule = body
            .rule
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        let user_id = match body
            .user_id
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            None => None,
            Some(raw) => match UserId::parse(raw) {
                Ok(u) => Some(u),
                Err(e) => return bad(format!("user_id: {e}")),
            },
        };
        if rule.is_none() && user_id.is_none() {
            return bad(
                "give rule, user_id or both: a silence of everything is not allowed".into(),
            );
        }
        let Some(raw_until) = body.until else {
            return bad("until is required: an RFC 3339 instant with a zone, in the future".into());
        };
        let until = match parse_timestamp(&raw_until) {
            Ok(t) if t > Utc::now() => t,
            Ok(_) => return bad("until must be in the future".into()),
            Err(_) => {
                return bad(format!(
                    "until must be an RFC 3339 instant with a zone, got {raw_until:?}"
                ));
            }
        };
        let comment = body.comment.unwrap_or_default().trim().to_string();
        if comment.is_empty() || comment.chars().count() > 1000 {
            return bad("comment is required (1 to 1000 characters)".into());
        }
        if let Some(name) = &rule {
            match (self.state.alerting.rules)().await {
                Some(r) if r.rules.get(name).is_none() => {
                    let known: Vec<&str> =
                        r.rules.rules().iter().map(|r| r.name.as_str()).collect();
                    return bad(format!(
                        "rule {name:?} is not in force (rules: {})",
                        known.join(", ")
                    ));
                }
                _ => {}
            }
        }
        match limits::query_timeout(db::alerting::insert_silence(
            &self.state.db,
            rule,
            user_id,
            until,
            comment,
        ))
        .await
        {
            Ok(Ok(s)) => {
                tracing::info!(id = s.id, rule = ?s.rule, user_id = ?s.user_id, until = %s.until, "silence created");
                (self.state.alerting.silenced)(s.clone());
                CreateSilenceResponse::Created(Json(silence_dto(s)))
            }
            Ok(Err(e)) if super::no_connection(&e) => {
                tracing::error!(error = %e, "creating a silence failed: no database connection");
                CreateSilenceResponse::Unavailable(error(super::NO_CONNECTION))
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "creating a silence failed");
                CreateSilenceResponse::Internal(error(
                    "internal error writing the database; see the service log",
                ))
            }
            Err(e) => CreateSilenceResponse::Unavailable(error(e.to_string())),
        }
    }

    /// Delete a silence
    ///
    /// Ends a silence now.
    #[oai(
        path = "/api/v1/silences/:id",
        method = "delete",
        tag = "ApiTags::Alerts",
        operation_id = "deleteSilence"
    )]
    async fn delete_silence(&self, _auth: ApiAuth, id: Path<i64>) -> DeleteSilenceResponse {
        match limits::query_timeout(db::alerting::delete_silence(&self.state.db, id.0)).await {
            Ok(Ok(true)) => DeleteSilenceResponse::Deleted,
            Ok(Ok(false)) => {
                DeleteSilenceResponse::NotFound(error(format!("no silence has id {}", id.0)))
            }
            Ok(Err(e)) if super::no_connection(&e) => {
                tracing::error!(error = %e, "deleting a silence failed: no database connection");
                DeleteSilenceResponse::Unavailable(error(super::NO_CONNECTION))
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "deleting a silence failed");
                DeleteSilenceResponse::Internal(error(
                    "internal error writing the database; see the service log",
                ))
            }
            Err(e) => DeleteSilenceResponse::Unavailable(error(e.to_string())),
        }
    }
}

//! `GET /api/v1/agents/{user_id}/timeline` and `GET /api/v1/reports/time-in-state`: intervals
//! and their totals, both cut by [`crate::report`] from transitions streamed out of the
//! database one user and one dimension at a time.

use super::auth::ApiAuth;
use chrono::Utc;
use chrono_tz::Tz;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, ResponseContent};

use super::dto::{ErrorBody, KindDto, KindParam, Timestamp};
use super::export::{self, Format, StreamEnd, csv_chunk, opt};
use super::limits::query_timeout;
use super::{ApiError, ApiState, ApiTags, parse_error_body, parse_kind, parse_user_id};
use crate::db::{self, UserIntervals};
use crate::domain::{Kind, format_timestamp, truncate_to_millis};
use crate::report::{Grouping, Interval, TimeInState, Window, millis_to_seconds};

/// The timeline and report endpoints.
pub(crate) struct ReportsApi {
    pub(crate) state: ApiState,
}

/// CSV columns of a timeline export, in order.
pub const TIMELINE_CSV_HEADER: [&str; 7] = [
    "user_id",
    "kind",
    "state",
    "org_presence",
    "start",
    "end",
    "duration_seconds",
];

/// CSV columns of a time-in-state report, in order (`user_id` and `day` empty unless grouped
/// by them).
pub const TIME_IN_STATE_CSV_HEADER: [&str; 5] = ["user_id", "day", "kind", "state", "seconds"];

/// One state held over `[start, end)`, clipped to the requested window.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Interval")]
pub struct IntervalDto {
    /// `presence` or `routing`.
    pub kind: KindDto,
    /// Normalized state (`AVAILABLE`, `IDLE`, …).
    pub state: String,
    /// Org presence label (`Lunch`) of presence intervals.
    #[oai(nullable)]
    pub org_presence: Option<String>,
    /// Start, UTC: the transition's `event_timestamp`, or `from` when the state began earlier.
    pub start: Timestamp,
    /// End, UTC: the next transition, or `to` / the time of the request for a state still in
    /// force.
    pub end: Timestamp,
    /// `end - start` in seconds (millisecond precision).
    pub duration_seconds: f64,
}

/// One agent's intervals over a window, presence first, then routing, each by `start`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Timeline")]
pub struct TimelineDto {
    /// Genesys user id (lowercase).
    pub user_id: String,
    /// Window start, UTC (inclusive).
    pub from: Timestamp,
    /// Window end, UTC (exclusive).
    pub to: Timestamp,
    /// The intervals. A time with no known state (before the first transition) has none.
    pub data: Vec<IntervalDto>,
}

/// Seconds spent in one state, for one group.
#[derive(Debug, Clone, Object)]
#[oai(rename = "TimeInStateRow")]
pub struct TimeInStateRow {
    /// The user, when grouped by `user`.
    #[oai(nullable)]
    pub user_id: Option<String>,
    /// The local date (`YYYY-MM-DD` in `tz`), when grouped by `day`.
    #[oai(nullable)]
    pub day: Option<String>,
    /// `presence` or `routing`.
    pub kind: KindDto,
    /// Normalized state.
    pub state: String,
    /// Seconds in the state within the window (millisecond precision).
    pub seconds: f64,
}

/// Time spent in each state over a window.
#[derive(Debug, Clone, Object)]
#[oai(rename = "TimeInStateReport")]
pub struct TimeInStateReport {
    /// Window start, UTC (inclusive).
    pub from: Timestamp,
    /// Window end, UTC (exclusive). Time after the request's instant is never counted.
    pub to: Timestamp,
    /// The grouping applied, besides kind and state: any of `user`, `day`.
    pub group_by: Vec<String>,
    /// IANA time zone that decides where days start.
    pub tz: String,
    /// One row per group, kind and state, ordered by user, day, kind, state.
    pub data: Vec<TimeInStateRow>,
}

/// A timeline as JSON or CSV.
#[derive(ResponseContent)]
enum TimelineContent {
    /// The intervals.
    Json(Json<TimelineDto>),
    /// Header `user_id,kind,state,org_presence,start,end,duration_seconds`, one line per
    /// interval, streamed.
    #[oai(content_type = "text/csv; charset=utf-8")]
    Csv(Binary<poem::Body>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "timeline_bad_request")]
enum TimelineResponse {
    /// The agent's intervals (empty when nothing is known in the window).
    #[oai(status = 200)]
    Ok(TimelineContent),
    /// A parameter is invalid, `from` is after `to`, or the window is too large; `error` says
    /// which.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
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

fn timeline_bad_request(err: poem::Error) -> TimelineResponse {
    TimelineResponse::BadRequest(parse_error_body(&err))
}

impl From<ApiError> for TimelineResponse {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::BadRequest(_) => TimelineResponse::BadRequest(err.body()),
            _ if err.unavailable() => TimelineResponse::Unavailable(err.body()),
            _ => TimelineResponse::Internal(err.body()),
        }
    }
}

/// A report as JSON or CSV.
#[derive(ResponseContent)]
enum TimeInStateContent {
    /// The totals.
    Json(Json<TimeInStateReport>),
    /// Header `user_id,day,kind,state,seconds`, one line per row.
    #[oai(content_type = "text/csv; charset=utf-8")]
    Csv(Binary<poem::Body>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "time_in_state_bad_request")]
enum TimeInStateResponse {
    /// The totals.
    #[oai(status = 200)]
    Ok(TimeInStateContent),
    /// A parameter is invalid, `from` is after `to`, or the window is too large; `error` says
    /// which.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
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

fn time_in_state_bad_request(err: poem::Error) -> TimeInStateResponse {
    TimeInStateResponse::BadRequest(parse_error_body(&err))
}

impl From<ApiError> for TimeInStateResponse {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::BadRequest(_) => TimeInStateResponse::BadRequest(err.body()),
            _ if err.unavailable() => TimeInStateResponse::Unavailable(err.body()),
            _ => TimeInStateResponse::Internal(err.body()),
        }
    }
}

#[OpenApi]
impl ReportsApi {
    /// Agent timeline
    ///
    /// The agent's presence and routing-status intervals over the half-open window
    /// `[from, to)`: each state lasts from its transition to the next one of the same kind,
    /// clipped to the window. The state in force at `from` is the last transition before
    /// `from`; a state still in force ends at the time of the request, or at `to` if earlier.
    /// `format=csv` (or `Accept: text/csv`) streams CSV instead.
    #[oai(
        path = "/api/v1/agents/:user_id/timeline",
        method = "get",
        tag = "ApiTags::Reports",
        operation_id = "getTimeline"
    )]
    async fn timeline(
        &self,
        _auth: ApiAuth,
        request: &Request,
        /// Genesys user id (case-insensitive).
        user_id: Path<String>,
        /// Window start (inclusive), RFC 3339 with a zone. Required.
        from: Query<String>,
        /// Window end (exclusive), RFC 3339 with a zone. Required; not before `from`; the
        /// window may not exceed the server's maximum (default 366 days).
        to: Query<String>,
        /// Only `presence` or only `routing` intervals.
        kind: Query<Option<KindParam>>,
        /// `json` (default) or `csv`; without it, `Accept: text/csv` selects CSV.
        format: Query<Option<String>>,
    ) -> TimelineResponse {
        let result = async {
            let format = negotiate(request, format.0.as_deref())?;
            let user = parse_user_id(Some(&user_id.0))?.expect("present");
            let window = self.window(&from.0, &to.0)?;
            let kinds = kinds(parse_kind(kind.0.as_ref())?);
            let now = truncate_to_millis(Utc::now());
            let mut intervals = UserIntervals::new(user.as_str(), &kinds, window, now);
            let content: Result<TimelineContent, ApiError> = match format {
                Format::Json => {
                    let mut data = Vec::new();
                    while let Some(batch) =
                        query_timeout(intervals.next_batch(&self.state.db)).await??
                    {
                        data.extend(batch.iter().map(interval_dto));
                    }
                    Ok(TimelineContent::Json(Json(TimelineDto {
                        user_id: user.as_str().to_owned(),
                        from: Timestamp(window.from),
                        to: Timestamp(window.to),
                        data,
                    })))
                }
                Format::Csv => {
                    let db = self.state.db.clone();
                    let user = user.as_str().to_owned();
                    Ok(TimelineContent::Csv(Binary(export::streamed_body(
                        move |out| async move {
                            out.send(csv_chunk(
                                Some(&TIMELINE_CSV_HEADER),
                                std::iter::empty::<[&str; 0]>(),
                            ))
                            .await?;
                            while let Some(batch) = intervals.next_batch(&db).await? {
                                let records: Vec<[String; 7]> =
                                    batch.iter().map(|i| timeline_record(&user, i)).collect();
                                out.send(csv_chunk(
                                    None,
                                    records.iter().map(|r| r.iter().map(String::as_str)),
                                ))
                                .await?;
                            }
                            Ok::<(), StreamEnd>(())
                        },
                    ))))
                }
            };
            content
        }
        .await;
        match result {
            Ok(content) => TimelineResponse::Ok(content),
            Err(err) => err.into(),
        }
    }

    /// Time in state
    ///
    /// Seconds spent in each state over the half-open window `[from, to)`, from the same
    /// intervals as the timeline (time after the request's instant is never counted). Rows
    /// are per kind and state, and further per user and/or per local day when `group_by`
    /// says so; `group_by=day` splits intervals at local midnight in `tz` (DST-aware: such
    /// days have 23 or 25 hours). `format=csv` (or `Accept: text/csv`) returns CSV.
    #[oai(
        path = "/api/v1/reports/time-in-state",
        method = "get",
        tag = "ApiTags::Reports",
        operation_id = "getTimeInState"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn time_in_state(
        &self,
        _auth: ApiAuth,
        request: &Request,
        /// Window start (inclusive), RFC 3339 with a zone. Required.
        from: Query<String>,
        /// Window end (exclusive), RFC 3339 with a zone. Required; not before `from`; the
        /// window may not exceed the server's maximum (default 366 days).
        to: Query<String>,
        /// Only this user (case-insensitive); default every user with stored transitions.
        user_id: Query<Option<String>>,
        /// Only `presence` or only `routing`.
        kind: Query<Option<KindParam>>,
        /// Comma-separated groupings besides kind and state: `user`, `state`, `day`
        /// (default `state`: totals per kind and state only).
        group_by: Query<Option<String>>,
        /// IANA time zone for `group_by=day` (`Europe/Berlin`); default `UTC`.
        tz: Query<Option<String>>,
        /// `json` (default) or `csv`; without it, `Accept: text/csv` selects CSV.
        format: Query<Option<String>>,
    ) -> TimeInStateResponse {
        let result = async {
            let format = negotiate(request, format.0.as_deref())?;
            let window = self.window(&from.0, &to.0)?;
            let user = parse_user_id(user_id.0.as_deref())?;
            let kinds = kinds(parse_kind(kind.0.as_ref())?);
            let (grouping, group_names) = parse_group_by(group_by.0.as_deref())?;
            let tz = parse_tz(tz.0.as_deref())?;
            let now = truncate_to_millis(Utc::now());

            let mut totals = TimeInState::new(grouping, tz);
            let db = &self.state.db;
            let mut next = match &user {
                Some(user) => Some(user.as_str().to_owned()),
                None => query_timeout(db::next_user(db, None)).await??,
            };
            while let Some(user_id) = next {
                let mut intervals = UserIntervals::new(&user_id, &kinds, window, now);
                while let Some(batch) = query_timeout(intervals.next_batch(db)).await?? {
                    for interval in &batch {
                        totals.add(&user_id, interval);
                    }
                }
                next = match user {
                    Some(_) => None,
                    None => query_timeout(db::next_user(db, Some(&user_id))).await??,
                };
            }
            let data: Vec<TimeInStateRow> = totals
                .into_totals()
                .into_iter()
                .map(|(key, millis)| TimeInStateRow {
                    user_id: key.user_id,
                    day: key.day.map(|d| d.to_string()),
                    kind: kind_dto(key.kind),
                    state: key.state,
                    seconds: millis_to_seconds(millis),
                })
                .collect();
            let content: Result<TimeInStateContent, ApiError> = match format {
                Format::Json => Ok(TimeInStateContent::Json(Json(TimeInStateReport {
                    from: Timestamp(window.from),
                    to: Timestamp(window.to),
                    group_by: group_names,
                    tz: tz.name().to_owned(),
                    data,
                }))),
                Format::Csv => {
                    let records: Vec<[String; 5]> = data
                        .iter()
                        .map(|row| {
                            [
                                opt(&row.user_id).to_owned(),
                                opt(&row.day).to_owned(),
                                kind_name(row.kind).to_owned(),
                                row.state.clone(),
                                row.seconds.to_string(),
                            ]
                        })
                        .collect();
                    let body = csv_chunk(
                        Some(&TIME_IN_STATE_CSV_HEADER),
                        records.iter().map(|r| r.iter().map(String::as_str)),
                    );
                    Ok(TimeInStateContent::Csv(Binary(poem::Body::from_vec(body))))
                }
            };
            content
        }
        .await;
        match result {
            Ok(content) => TimeInStateResponse::Ok(content),
            Err(err) => err.into(),
        }
    }
}

impl ReportsApi {
    /// The required `from`/`to` pair, checked against `max_window`.
    /// `from` and `to` are required query parameters: a missing one is answered by poem-openapi
    /// before the handler runs (see [`super::parse_error_body`]).
    fn window(&self, from: &str, to: &str) -> Result<Window, ApiError> {
        let from = export::parse_instant("from", from)?;
        let to = export::parse_instant("to", to)?;
        export::check_window(from, to, self.state.limits.max_window)?;
        Ok(Window { from, to })
    }
}

fn negotiate(request: &Request, format: Option<&str>) -> Result<Format, ApiError> {
    export::negotiate(
        format,
        request
            .headers()
            .get(poem::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    )
}

fn kinds(filter: Option<Kind>) -> Vec<Kind> {
    match filter {
        Some(kind) => vec![kind],
        None => vec![Kind::Presence, Kind::Routing],
    }
}

/// `user`, `state`, `day`, comma-separated, case-insensitive; `state` is always implied.
fn parse_group_by(raw: Option<&str>) -> Result<(Grouping, Vec<String>), ApiError> {
    let mut grouping = Grouping::default();
    for part in raw.unwrap_or("state").split(',') {
        match part.trim().to_ascii_lowercase().as_str() {
            "user" => grouping.by_user = true,
            "day" => grouping.by_day = true,
            "state" => {}
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "group_by must be user, state or day (comma-separated), got {:?}",
                    raw.unwrap_or_default()
                )));
            }
        }
    }
    let mut names = Vec::new();
    if grouping.by_user {
        names.push("user".to_owned());
    }
    names.push("state".to_owned());
    if grouping.by_day {
        names.push("day".to_owned());
    }
    Ok((grouping, names))
}

fn parse_tz(raw: Option<&str>) -> Result<Tz, ApiError> {
    match raw {
        None => Ok(chrono_tz::UTC),
        Some(name) => name.trim().parse::<Tz>().map_err(|_| {
            ApiError::BadRequest(format!(
                "tz must be an IANA time zone name (Europe/Berlin, UTC), got {name:?}"
            ))
        }),
    }
}

fn kind_dto(kind: &str) -> KindDto {
    if kind == Kind::Presence.as_str() {
        KindDto::Presence
    } else {
        KindDto::Routing
    }
}

fn kind_name(kind: KindDto) -> &'static str {
    match kind {
        KindDto::Presence => "presence",
        KindDto::Routing => "routing",
    }
}

fn interval_dto(interval: &Interval) -> IntervalDto {
    IntervalDto {
        kind: kind_dto(interval.kind.as_str()),
        state: interval.state.clone(),
        org_presence: interval.org_presence.clone(),
        start: Timestamp(interval.start),
        end: Timestamp(interval.end),
        duration_seconds: interval.seconds(),
    }
}

fn timeline_record(user_id: &str, interval: &Interval) -> [String; 7] {
    [
        user_id.to_owned(),
        interval.kind.as_str().to_owned(),
        interval.state.clone(),
        opt(&interval.org_presence).to_owned(),
        format_timestamp(interval.start),
        format_timestamp(interval.end),
        interval.seconds().to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_by_and_tz_are_validated() {
        let (g, names) = parse_group_by(Some("user, DAY")).unwrap();
        assert!(g.by_user && g.by_day);
        assert_eq!(names, ["user", "state", "day"]);
        assert_eq!(parse_group_by(None).unwrap().1, ["state"]);
        assert!(
            parse_group_by(Some("week"))
                .unwrap_err()
                .to_string()
                .starts_with("group_by ")
        );
        assert_eq!(
            parse_tz(Some("Europe/Berlin")).unwrap().name(),
            "Europe/Berlin"
        );
        assert!(
            parse_tz(Some("Mars/Base"))
                .unwrap_err()
                .to_string()
                .starts_with("tz ")
        );
    }
}

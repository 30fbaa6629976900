//! `GET /api/v1/agent-status/history`: filters, offset and keyset pagination, CSV export.

use super::auth::ApiAuth;
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, OpenApi, ResponseContent};

use super::dto::{ErrorBody, HistoryPage, KindParam, LimitParam, OffsetParam, StatusRecord};
use super::export::{self, EXPORT_PAGE_ROWS, Format, StreamEnd, csv_chunk, opt};
use super::{
    ApiError, ApiState, ApiTags, parse_error_body, parse_kind, parse_limit, parse_offset,
    parse_state, parse_user_id,
};
use crate::db::{self, HistoryFilter, Keyset};
use crate::domain::format_timestamp;

/// The history endpoint.
pub(crate) struct HistoryApi {
    pub(crate) state: ApiState,
}

/// The values a `source` filter accepts.
const SOURCES: [&str; 3] = ["stream", "bootstrap", "backfill"];

/// CSV columns of a history export, in order (the JSON field names).
pub const HISTORY_CSV_HEADER: [&str; 11] = [
    "id",
    "user_id",
    "user_name",
    "kind",
    "state",
    "previous_state",
    "org_presence",
    "event_timestamp",
    "ingested_at",
    "source",
    "presence_definition_id",
];

/// A history page as JSON, or every matching row as CSV.
#[derive(ResponseContent)]
enum HistoryContent {
    /// One page of transitions.
    Json(Json<HistoryPage>),
    /// Every matching row from the requested position on, one line per transition under a
    /// header row (`id,user_id,user_name,kind,state,previous_state,org_presence,event_timestamp,ingested_at,source,presence_definition_id`),
    /// streamed.
    #[oai(content_type = "text/csv; charset=utf-8")]
    Csv(Binary<poem::Body>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "history_bad_request")]
enum HistoryResponse {
    /// One page of transitions, newest first (JSON), or the whole export (CSV).
    #[oai(status = 200)]
    Ok(HistoryContent),
    /// A query parameter is invalid; `error` names it.
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

fn history_bad_request(err: poem::Error) -> HistoryResponse {
    HistoryResponse::BadRequest(parse_error_body(&err))
}

impl From<ApiError> for HistoryResponse {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::BadRequest(_) => HistoryResponse::BadRequest(err.body()),
            _ if err.unavailable() => HistoryResponse::Unavailable(err.body()),
            _ => HistoryResponse::Internal(err.body()),
        }
    }
}

#[OpenApi]
impl HistoryApi {
    /// Transition history
    ///
    /// Stored presence and routing-status transitions, newest `event_timestamp` first (ties:
    /// highest `id` first), optionally filtered by user, state, kind, source and a half-open
    /// time window `[from, to)` on `event_timestamp`. `total` counts every matching row.
    ///
    /// Two ways to page: `limit` + `offset` (kept for compatibility; deep offsets are slow), or
    /// keyset: pass the `next_cursor` of a page as `cursor` to get the next one at the same
    /// cost at any depth. `next_cursor` is null on the last page. `cursor` and `offset` cannot
    /// be combined, and a cursor is only valid with the filters it was issued for.
    ///
    /// `format=csv` (or `Accept: text/csv`) returns `text/csv` instead: a header row, then
    /// every matching row from the cursor/offset position on (`limit` is ignored), streamed.
    #[oai(
        path = "/api/v1/agent-status/history",
        method = "get",
        tag = "ApiTags::History",
        operation_id = "getHistory"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn history(
        &self,
        _auth: ApiAuth,
        request: &Request,
        /// Only this user (Genesys user id; case-insensitive).
        user_id: Query<Option<String>>,
        /// Only this state: a system presence (`ON_QUEUE`, `On Queue`, `available`, …) or a
        /// routing status (`IDLE`, `interacting`, …), case-insensitive. Anything else, an org
        /// presence label (`Lunch`) included, answers 400 listing the accepted values.
        state: Query<Option<String>>,
        /// Only `presence` or only `routing` transitions (case-insensitive).
        kind: Query<Option<KindParam>>,
        /// Only rows from this source: `stream`, `bootstrap` or `backfill` (case-insensitive).
        source: Query<Option<String>>,
        /// Only `event_timestamp >= from`: RFC 3339 instant with a zone (UTC recommended).
        from: Query<Option<String>>,
        /// Only `event_timestamp < to`: RFC 3339 instant with a zone. With `from`, `to` must
        /// not be earlier and the window must not exceed the server's maximum (default 366
        /// days).
        to: Query<Option<String>>,
        /// Page size: 1–100 rows, default 20 (JSON only).
        limit: Query<Option<LimitParam>>,
        /// Rows to skip, ≥ 0, default 0. Not with `cursor`.
        offset: Query<Option<OffsetParam>>,
        /// Opaque `next_cursor` of the previous page (same filters). Not with `offset`.
        cursor: Query<Option<String>>,
        /// `json` (default) or `csv`; without it, `Accept: text/csv` selects CSV.
        format: Query<Option<String>>,
    ) -> HistoryResponse {
        let result = async {
            let format = export::negotiate(
                format.0.as_deref(),
                request
                    .headers()
                    .get(poem::http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            )?;
            let from = export::parse_optional_instant("from", from.0.as_deref())?;
            let to = export::parse_optional_instant("to", to.0.as_deref())?;
            if let (Some(from), Some(to)) = (from, to) {
                export::check_window(from, to, self.state.limits.max_window)?;
            }
            let mut filter = HistoryFilter {
                user_id: parse_user_id(user_id.0.as_deref())?,
                state: parse_state(state.0.as_deref())?,
                kind: parse_kind(kind.0.as_ref())?,
                source: parse_source(source.0.as_deref())?,
                from,
                to,
                after: None,
                limit: parse_limit(limit.0.as_ref())?,
                offset: parse_offset(offset.0.as_ref())?,
            };
            if let Some(token) = cursor.0.as_deref() {
                if offset.0.is_some() {
                    return Err(ApiError::BadRequest(
                        "cursor and offset cannot be combined: use one way of paging".into(),
                    ));
                }
                filter.after = Some(decode_cursor(token, &filter)?);
            }
            let content: Result<HistoryContent, ApiError> = match format {
                Format::Json => Ok(HistoryContent::Json(Json(
                    json_page(&self.state.db, &filter).await?,
                ))),
                Format::Csv => Ok(HistoryContent::Csv(Binary(csv_export(
                    self.state.db.clone(),
                    filter,
                )))),
            };
            content
        }
        .await;
        match result {
            Ok(content) => HistoryResponse::Ok(content),
            Err(err) => err.into(),
        }
    }
}

async fn json_page(
    db: &sea_orm::DatabaseConnection,
    filter: &HistoryFilter,
) -> Result<HistoryPage, ApiError> {
    let page = super::limits::query_timeout(db::history(db, filter)).await??;
    let next_cursor = match (page.has_more, page.rows.last()) {
        (true, Some(last)) => Some(encode_cursor(Keyset::of(last), filter)),
        _ => None,
    };
    let data = page
        .rows
        .into_iter()
        .map(StatusRecord::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HistoryPage {
        total: page.total,
        data,
        next_cursor,
    })
}

/// Streams every row matching `filter` from its position on: the first page honours `offset`
/// or `after`, every later page continues by keyset from the last row sent.
fn csv_export(db: sea_orm::DatabaseConnection, filter: HistoryFilter) -> poem::Body {
    export::streamed_body(move |out| async move {
        let mut filter = HistoryFilter {
            limit: EXPORT_PAGE_ROWS,
            ..filter
        };
        out.send(csv_chunk(
            Some(&HISTORY_CSV_HEADER),
            std::iter::empty::<[&str; 0]>(),
        ))
        .await?;
        loop {
            let (rows, has_more) = db::history_rows(&db, &filter).await?;
            let records: Vec<[String; 11]> = rows.iter().map(csv_record).collect();
            out.send(csv_chunk(
                None,
                records.iter().map(|r| r.iter().map(String::as_str)),
            ))
            .await?;
            match rows.last() {
                Some(last) if has_more => {
                    filter.after = Some(Keyset::of(last));
                    filter.offset = 0;
                }
                _ => return Ok::<(), StreamEnd>(()),
            }
        }
    })
}

fn csv_record(row: &crate::db::entity::agent_status::Model) -> [String; 11] {
    [
        row.id.to_string(),
        row.user_id.clone(),
        opt(&row.user_name).to_owned(),
        row.kind.clone(),
        row.state.clone(),
        opt(&row.previous_state).to_owned(),
        opt(&row.org_presence).to_owned(),
        format_timestamp(row.event_timestamp),
        format_timestamp(row.ingested_at),
        row.source.clone(),
        opt(&row.presence_definition_id).to_owned(),
    ]
}

fn parse_source(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let lower = raw.trim().to_ascii_lowercase();
    if SOURCES.contains(&lower.as_str()) {
        Ok(Some(lower))
    } else {
        Err(ApiError::BadRequest(format!(
            "source must be stream, bootstrap or backfill, got {raw:?}"
        )))
    }
}

/// Cursor format version; bump it when the layout changes so old tokens are refused cleanly.
const CURSOR_VERSION: &str = "c1";

/// Encodes the keyset position as an opaque token: `c1` + hex of (ms since the epoch, id,
/// check), where the check hashes the position together with the filters it belongs to. Not a
/// secret (a position grants nothing the filters do not), but any edit or reuse with other
/// filters is detected.
fn encode_cursor(position: Keyset, filter: &HistoryFilter) -> String {
    let millis = position.event_timestamp.timestamp_millis();
    let check = cursor_check(millis, position.id, filter);
    let mut token = String::from(CURSOR_VERSION);
    for part in [millis as u64, position.id as u64, check] {
        token.push_str(&format!("{part:016x}"));
    }
    token
}

/// Decodes a token from [`encode_cursor`]; 400 naming `cursor` when it is malformed, altered
/// or issued for other filters.
fn decode_cursor(token: &str, filter: &HistoryFilter) -> Result<Keyset, ApiError> {
    let invalid = || {
        ApiError::BadRequest(
            "cursor is not valid for this query: pass the next_cursor of the previous page \
             unchanged, with the same filters"
                .into(),
        )
    };
    let hex = token
        .trim()
        .strip_prefix(CURSOR_VERSION)
        .ok_or_else(invalid)?;
    if hex.len() != 48 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let part =
        |i: usize| u64::from_str_radix(&hex[i * 16..(i + 1) * 16], 16).map_err(|_| invalid());
    let (millis, id, check) = (part(0)? as i64, part(1)? as i64, part(2)?);
    if check != cursor_check(millis, id, filter) {
        return Err(invalid());
    }
    let event_timestamp: DateTime<Utc> =
        DateTime::from_timestamp_millis(millis).ok_or_else(invalid)?;
    Ok(Keyset {
        event_timestamp,
        id,
    })
}

/// FNV-1a over the position and the normalized filters (not the page size, which may change
/// from page to page).
fn cursor_check(millis: i64, id: i64, filter: &HistoryFilter) -> u64 {
    let fingerprint = format!(
        "agent-monitor/history/{millis}/{id}/{:?}/{:?}/{:?}/{:?}/{:?}/{:?}",
        filter.user_id.as_ref().map(|u| u.as_str()),
        filter.state,
        filter.kind.map(|k| k.as_str()),
        filter.source,
        filter.from.map(|t| t.timestamp_millis()),
        filter.to.map(|t| t.timestamp_millis()),
    );
    fingerprint
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_timestamp;

    #[test]
    fn cursors_round_trip_and_refuse_edits_and_other_filters() {
        let filter = HistoryFilter {
            state: Some("IDLE".into()),
            limit: 20,
            ..Default::default()
        };
        let position = Keyset {
            event_timestamp: parse_timestamp("2024-05-01T10:00:00.123Z").unwrap(),
            id: 42,
        };
        let token = encode_cursor(position, &filter);
        assert_eq!(decode_cursor(&token, &filter).unwrap(), position);
        // A different page size keeps the cursor valid.
        let bigger = HistoryFilter {
            limit: 100,
            ..filter.clone()
        };
        assert!(decode_cursor(&token, &bigger).is_ok());
        // Any single-digit edit is caught.
        for i in 2..token.len() {
            let mut edited = token.clone().into_bytes();
            edited[i] = if edited[i] == b'0' { b'1' } else { b'0' };
            let edited = String::from_utf8(edited).unwrap();
            assert!(decode_cursor(&edited, &filter).is_err(), "{edited}");
        }
        let other = HistoryFilter {
            state: Some("OFF_QUEUE".into()),
            ..filter.clone()
        };
        assert!(decode_cursor(&token, &other).is_err());
        for junk in ["", "c1", "x", "c2abc", &token[..20]] {
            let err = decode_cursor(junk, &filter).unwrap_err().to_string();
            assert!(err.starts_with("cursor "), "{err}");
        }
    }

    #[test]
    fn sources_are_validated() {
        assert_eq!(
            parse_source(Some("Backfill")).unwrap().as_deref(),
            Some("backfill")
        );
        assert!(
            parse_source(Some("ws"))
                .unwrap_err()
                .to_string()
                .starts_with("source ")
        );
    }
}

//! `POST /api/v2/analytics/users/details/query` (reference §7), answered from the ground truth.
//!
//! Each user's history becomes interval records: `primaryPresence[]` (`startTime`, `endTime`,
//! `systemPresence`, `organizationPresenceId`) and `routingStatus[]` (`startTime`, `endTime`,
//! `routingStatus`); the record still open has no `endTime`. Timestamps are RFC 3339 UTC with
//! milliseconds, on the simulated clock. The real API's limits and quirks are reproduced:
//! 400s for bad intervals, page sizes and dimensions; **short pages**; **approximate
//! `totalHits`**; an empty page past the end that omits `userDetails` or has it empty.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::faults::Reply;
use super::truth::{GroundTruthTransition, TransitionKind};
use crate::domain::{format_timestamp, normalize_system_presence, parse_timestamp};
use crate::protocol::{
    AnalyticsFilter, AnalyticsPresenceRecord, AnalyticsRoutingStatusRecord, AnalyticsUserDetail,
    UserDetailsQuery,
};

/// Default `paging.pageSize` of the user details query (reference §7).
pub const DEFAULT_USER_DETAILS_PAGE_SIZE: u32 = 25;
/// Largest `paging.pageSize` accepted; above it the query answers 400. The reference says the
/// maximum is UNVERIFIED, "probably 100".
pub const MAX_USER_DETAILS_PAGE_SIZE: u32 = 100;
/// Longest interval without any filter (reference §7): 7 days.
pub const MAX_INTERVAL_UNFILTERED: TimeDelta = TimeDelta::days(7);
/// Longest interval with at least one user, presence or routing filter (reference §7): 31 days.
pub const MAX_INTERVAL_FILTERED: TimeDelta = TimeDelta::days(31);

/// One interval record of one user, before rendering.
#[derive(Debug, Clone)]
struct Record {
    kind: TransitionKind,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    value: String,
    definition_id: Option<String>,
}

/// Answers one query. `body` is the raw request body; `now` is the simulated clock; records
/// that began after `now - latency` are not visible yet (as if analytics lagged behind).
pub fn user_details_query(
    truth: &[GroundTruthTransition],
    body: &str,
    now: DateTime<Utc>,
    latency: Duration,
) -> Reply {
    match answer(truth, body, now, latency) {
        Ok(value) => Reply::json(200, value),
        Err(message) => Reply::bad_request(&message),
    }
}

fn answer(
    truth: &[GroundTruthTransition],
    body: &str,
    now: DateTime<Utc>,
    latency: Duration,
) -> Result<Value, String> {
    let query: UserDetailsQuery =
        serde_json::from_str(body).map_err(|e| format!("Malformed query body: {e}"))?;
    let (start, end) = parse_interval(&query.interval)?;
    let filtered = !(query.user_filters.is_empty()
        && query.presence_filters.is_empty()
        && query.routing_status_filters.is_empty());
    let limit = if filtered {
        MAX_INTERVAL_FILTERED
    } else {
        MAX_INTERVAL_UNFILTERED
    };
    if end - start > limit {
        return Err(format!(
            "The interval may span at most {} days {} filters",
            limit.num_days(),
            if filtered { "with" } else { "without" }
        ));
    }
    check_dimensions(&query.user_filters, &["userId"])?;
    check_dimensions(
        &query.presence_filters,
        &["systemPresence", "organizationPresenceId"],
    )?;
    check_dimensions(&query.routing_status_filters, &["routingStatus"])?;
    let descending = match query
        .order
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => return Err(format!("Unknown order {other:?}")),
    };
    let (page_size, page_number) = match query.paging {
        None => (DEFAULT_USER_DETAILS_PAGE_SIZE, 1),
        Some(p) => (p.page_size, p.page_number),
    };
    if !(1..=MAX_USER_DETAILS_PAGE_SIZE).contains(&page_size) {
        return Err(format!(
            "paging.pageSize must be between 1 and {MAX_USER_DETAILS_PAGE_SIZE}"
        ));
    }
    if page_number < 1 {
        return Err("paging.pageNumber must be at least 1".into());
    }

    let visible_until = now - TimeDelta::from_std(latency).unwrap_or(TimeDelta::MAX);
    let mut users: BTreeMap<&str, Vec<Record>> = BTreeMap::new();
    for (user, records) in history(truth, visible_until) {
        if !query
            .user_filters
            .iter()
            .all(|f| clause_matches(f, |_| Some(user.to_string())))
        {
            continue;
        }
        let mut kept: Vec<Record> = records
            .into_iter()
            .filter(|r| r.start < end && r.end.is_none_or(|e| e > start))
            .filter(|r| match r.kind {
                TransitionKind::Presence => query
                    .presence_filters
                    .iter()
                    .all(|f| clause_matches(f, |dim| presence_dimension(r, dim))),
                TransitionKind::Routing => query
                    .routing_status_filters
                    .iter()
                    .all(|f| clause_matches(f, |_| Some(r.value.clone()))),
            })
            .collect();
        if kept.is_empty() {
            continue;
        }
        kept.sort_by_key(|r| r.start);
        if descending {
            kept.reverse();
        }
        users.insert(user, kept);
    }

    // Short pages: a user with a record spanning midnight UTC occupies two slots (the real
    // store keeps such a record twice and filters the duplicate out after paging). With
    // pageSize 1 that could make a page empty before the end, so no duplicates there.
    let mut slots: Vec<Option<&str>> = Vec::new();
    for (user, records) in &users {
        slots.push(Some(user));
        if page_size > 1 && records.iter().any(|r| spans_midnight(r, now)) {
            slots.push(None);
        }
    }
    let first = (page_number as usize - 1).saturating_mul(page_size as usize);
    let page: Vec<Value> = slots
        .iter()
        .skip(first)
        .take(page_size as usize)
        .flatten()
        .map(|user| render_user(user, &users[user]))
        .collect();
    let mut response = json!({ "totalHits": approximate(users.len() as u64, &query.interval) });
    if !page.is_empty() {
        response["userDetails"] = Value::Array(page);
    } else if page_number % 2 == 1 {
        response["userDetails"] = json!([]);
    }
    Ok(response)
}

/// `start/end` as two RFC 3339 instants with `end > start`.
fn parse_interval(raw: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let (start, end) = raw
        .split_once('/')
        .ok_or_else(|| format!("Malformed interval {raw:?}: expected start/end"))?;
    let start = parse_timestamp(start).map_err(|e| format!("Malformed interval {raw:?}: {e}"))?;
    let end = parse_timestamp(end).map_err(|e| format!("Malformed interval {raw:?}: {e}"))?;
    if end <= start {
        return Err(format!("The interval {raw:?} ends before it starts"));
    }
    Ok((start, end))
}

fn check_dimensions(filters: &[AnalyticsFilter], allowed: &[&str]) -> Result<(), String> {
    for filter in filters {
        if !matches!(filter.kind.as_str(), "and" | "or") {
            return Err(format!("Unknown filter type {:?}", filter.kind));
        }
        for predicate in &filter.predicates {
            if !allowed.contains(&predicate.dimension.as_str()) {
                return Err(format!(
                    "Unknown dimension {:?}; allowed here: {allowed:?}",
                    predicate.dimension
                ));
            }
            let operator = predicate.operator.as_deref().unwrap_or("matches");
            if !matches!(operator, "matches" | "exists" | "notExists") {
                return Err(format!("Unknown operator {operator:?}"));
            }
        }
    }
    Ok(())
}

/// Whether one filter clause holds; `value_of(dimension)` gives the record's value.
fn clause_matches(filter: &AnalyticsFilter, value_of: impl Fn(&str) -> Option<String>) -> bool {
    let mut results = filter.predicates.iter().map(|p| {
        let actual = value_of(&p.dimension);
        match p.operator.as_deref().unwrap_or("matches") {
            "exists" => actual.is_some(),
            "notExists" => actual.is_none(),
            _ => match (actual, p.value.as_deref()) {
                (Some(actual), Some(wanted)) => values_equal(&p.dimension, &actual, wanted),
                _ => false,
            },
        }
    });
    if filter.kind == "and" {
        results.all(|ok| ok)
    } else {
        filter.predicates.is_empty() || results.any(|ok| ok)
    }
}

fn values_equal(dimension: &str, actual: &str, wanted: &str) -> bool {
    match dimension {
        "systemPresence" => normalize_system_presence(actual) == normalize_system_presence(wanted),
        _ => actual.eq_ignore_ascii_case(wanted.trim()),
    }
}

fn presence_dimension(record: &Record, dimension: &str) -> Option<String> {
    match dimension {
        "systemPresence" => Some(record.value.clone()),
        "organizationPresenceId" => record.definition_id.clone(),
        _ => None,
    }
}

/// Per user (sorted by id), the interval records built from the visible transitions.
fn history(
    truth: &[GroundTruthTransition],
    visible_until: DateTime<Utc>,
) -> BTreeMap<&str, Vec<Record>> {
    let mut by_user: BTreeMap<(&str, TransitionKind), Vec<&GroundTruthTransition>> =
        BTreeMap::new();
    for t in truth.iter().filter(|t| t.at <= visible_until) {
        by_user.entry((&t.user_id, t.kind)).or_default().push(t);
    }
    let mut out: BTreeMap<&str, Vec<Record>> = BTreeMap::new();
    for ((user, kind), mut transitions) in by_user {
        transitions.sort_by_key(|t| (t.at, t.seq));
        let records = out.entry(user).or_default();
        for (i, t) in transitions.iter().enumerate() {
            records.push(Record {
                kind,
                start: t.at,
                end: transitions.get(i + 1).map(|n| n.at),
                value: t.value.clone(),
                definition_id: t.presence_definition_id.clone(),
            });
        }
    }
    out
}

fn spans_midnight(record: &Record, now: DateTime<Utc>) -> bool {
    record.start.date_naive() != record.end.unwrap_or(now).date_naive()
}

fn render_user(user: &str, records: &[Record]) -> Value {
    let mut detail = AnalyticsUserDetail {
        user_id: user.to_string(),
        ..Default::default()
    };
    for r in records {
        let start_time = format_timestamp(r.start);
        let end_time = r.end.map(format_timestamp);
        match r.kind {
            TransitionKind::Presence => detail.primary_presence.push(AnalyticsPresenceRecord {
                start_time,
                end_time,
                system_presence: Some(r.value.clone()),
                organization_presence_id: r.definition_id.clone(),
            }),
            TransitionKind::Routing => detail.routing_status.push(AnalyticsRoutingStatusRecord {
                start_time,
                end_time,
                routing_status: r.value.clone(),
            }),
        }
    }
    let mut value = serde_json::to_value(detail).unwrap_or(Value::Null);
    // Genesys leaves out empty lists.
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.as_array().is_some_and(Vec::is_empty));
    }
    value
}

/// `exact` off by a deterministic 2–6 % (at least 1) in a direction chosen by `salt`; 0 stays
/// 0. Never what a correct client pages by.
pub fn approximate(exact: u64, salt: &str) -> u64 {
    if exact == 0 {
        return 0;
    }
    let hash = salt.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) ^ exact;
    let percent = 2 + hash % 5;
    let delta = (exact * percent).div_ceil(100).max(1);
    if hash & 0x100 == 0 || exact <= delta {
        exact + delta
    } else {
        exact - delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(
        seq: u64,
        user: &str,
        kind: TransitionKind,
        value: &str,
        at: &str,
    ) -> GroundTruthTransition {
        GroundTruthTransition {
            seq,
            user_id: user.into(),
            kind,
            value: value.into(),
            presence_definition_id: (kind == TransitionKind::Presence)
                .then(|| format!("def-{value}")),
            at: parse_timestamp(at).unwrap(),
            initial: false,
            delivered: true,
        }
    }

    fn query(truth: &[GroundTruthTransition], body: Value, now: &str) -> Value {
        let reply = user_details_query(
            truth,
            &body.to_string(),
            parse_timestamp(now).unwrap(),
            Duration::ZERO,
        );
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body.unwrap()
    }

    #[test]
    fn records_are_intervals_and_the_open_one_has_no_end() {
        use TransitionKind::*;
        let truth = vec![
            t(0, "u1", Routing, "IDLE", "2024-05-01T09:00:00Z"),
            t(1, "u1", Routing, "INTERACTING", "2024-05-01T09:30:00Z"),
            t(2, "u1", Presence, "ON_QUEUE", "2024-05-01T08:00:00Z"),
        ];
        let v = query(
            &truth,
            json!({"interval": "2024-05-01T09:10:00Z/2024-05-01T10:00:00Z"}),
            "2024-05-01T10:00:00Z",
        );
        let routing = &v["userDetails"][0]["routingStatus"];
        assert_eq!(routing[0]["endTime"], "2024-05-01T09:30:00.000Z");
        assert!(routing[1].get("endTime").is_none());
        assert_eq!(
            v["userDetails"][0]["primaryPresence"][0]["systemPresence"],
            "ON_QUEUE"
        );
    }

    #[test]
    fn approximate_is_deterministic_and_never_exact() {
        for n in 1..500 {
            let a = approximate(n, "x");
            assert_eq!(a, approximate(n, "x"));
            assert_ne!(a, n);
            assert!(a.abs_diff(n) <= n.div_ceil(100) * 6 + 1);
        }
        assert_eq!(approximate(0, "x"), 0);
    }
}

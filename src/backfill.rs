//! Gap backfill: the presence and routing-status transitions a disconnected stream missed,
//! read back from the analytics user details query (protocol reference §7, §9.2, §10 "No
//! replay").
//!
//! [`fetch_gap`] asks `POST /api/v2/analytics/users/details/query` for every user and every
//! instant of `[from, to]` and returns the transitions that **began** in that window, oldest
//! first, ready to be fed to the agent actors like stream events. It only reads; applying and
//! storing them (and de-duplicating against what the stream already delivered, on (user id,
//! dimension, timestamp)) is the caller's job.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use tracing::{debug, warn};

use crate::domain::{
    Kind, MalformedError, UserId, format_timestamp, normalize_routing_status,
    normalize_system_presence, parse_timestamp,
};
use crate::genesys::{GenesysClient, GenesysError};
use crate::notification::{PresenceUpdate, RoutingUpdate};
use crate::presence::PresenceCatalog;
use crate::protocol::{
    AnalyticsFilter, AnalyticsPaging, AnalyticsPredicate, AnalyticsPresenceRecord,
    AnalyticsRoutingStatusRecord, UserDetailsQuery,
};

/// At most this many `userId` predicates in one query (the documented cap of the aggregates
/// query, §7; assumed for the details query too).
pub const USERS_PER_QUERY: usize = 100;
/// Page size of the details query (default 25; the maximum is UNVERIFIED, probably 100).
pub const DETAILS_PAGE_SIZE: u32 = 100;
/// Longest interval of one query: 7 days, the cap **without** presence/routing filters. With
/// filters Genesys allows 31 days, but only the user filter is sent here and whether it counts
/// as a "filter" for that rule is UNVERIFIED, so the conservative cap applies.
pub const MAX_QUERY_INTERVAL: TimeDelta = TimeDelta::days(7);
/// Guard against a server whose paging never ends (pages per batch and interval).
const MAX_PAGES: u32 = 10_000;

/// One transition read back from analytics.
#[derive(Debug, Clone, PartialEq)]
pub enum GapUpdate {
    /// A presence that began in the gap: `system` normalized from the analytics spelling
    /// (`ON_QUEUE`), `definition_id` = `organizationPresenceId`, `label` from the catalog
    /// (always `Some`), `timestamp` = the record's `startTime` (UTC, milliseconds).
    Presence(PresenceUpdate),
    /// A routing status that began in the gap; `timestamp` = the record's `startTime`.
    Routing(RoutingUpdate),
}

impl GapUpdate {
    /// The Genesys instant the state began (UTC, milliseconds).
    pub fn timestamp(&self) -> DateTime<Utc> {
        match self {
            GapUpdate::Presence(p) => p.timestamp,
            GapUpdate::Routing(r) => r.timestamp,
        }
    }

    /// [`Kind::Presence`] or [`Kind::Routing`].
    pub fn kind(&self) -> Kind {
        match self {
            GapUpdate::Presence(_) => Kind::Presence,
            GapUpdate::Routing(_) => Kind::Routing,
        }
    }
}

/// What [`fetch_gap`] found.
///
/// `updates` is one list in time order (by `startTime`); at equal instants presence comes
/// before routing, then users in id order, so the order is deterministic. There is at most
/// one update per (user id, dimension, timestamp).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gap {
    /// The transitions that began in `[from, to]`, oldest first.
    pub updates: Vec<(UserId, GapUpdate)>,
    /// Query requests made (one per page, the final empty page included; retries of one page
    /// inside the client are not counted here).
    pub requests: u32,
    /// Pages that held at least one `userDetails` entry.
    pub pages: u32,
    /// Records skipped because they could not be used (bad or zone-less `startTime`, missing
    /// status, empty user id, a record of the wrong shape); each is logged at warn.
    pub malformed: u32,
    /// Records dropped as repeats of one already kept (same user, dimension and `startTime`:
    /// a status spanning midnight, a record on an interval boundary, or a repeated page).
    pub duplicates: u32,
    /// Records skipped because they began before `from` (already known) or after `to`, or
    /// belong to a user the query did not ask about.
    pub outside: u32,
}

impl Gap {
    /// The presence updates, in time order.
    pub fn presence(&self) -> impl Iterator<Item = (&UserId, &PresenceUpdate)> {
        self.updates.iter().filter_map(|(u, g)| match g {
            GapUpdate::Presence(p) => Some((u, p)),
            GapUpdate::Routing(_) => None,
        })
    }

    /// The routing updates, in time order.
    pub fn routing(&self) -> impl Iterator<Item = (&UserId, &RoutingUpdate)> {
        self.updates.iter().filter_map(|(u, g)| match g {
            GapUpdate::Routing(r) => Some((u, r)),
            GapUpdate::Presence(_) => None,
        })
    }
}

/// The transitions of `users` that began in `[from, to]` (both ends included), from
/// `POST /api/v2/analytics/users/details/query` (protocol reference §7).
///
/// - Users go in batches of at most [`USERS_PER_QUERY`] `userId` predicates (one `or` filter).
/// - `[from, to]` is cut into consecutive intervals of at most [`MAX_QUERY_INTERVAL`] (7 days).
/// - Each (batch, interval) is paged with `pageSize` [`DETAILS_PAGE_SIZE`] from `pageNumber`
///   1 until a page has no `userDetails`; `totalHits` (approximate) is never used and short
///   pages do not end the paging.
/// - Records are de-duplicated on (user id lowercase, dimension, `startTime`); a record that
///   began before `from` is skipped (the state at `from` is already known from the stream or
///   the snapshot), as is one after `to`.
/// - A malformed record is logged at warn, counted in [`Gap::malformed`] and skipped.
///
/// Nothing is returned for an empty `users` or `from >= to` (no request is made). Any failed
/// request fails the whole call (the client has already retried it); the caller may retry.
/// Each request takes one unit of the client's rate budget.
pub async fn fetch_gap(
    client: &GenesysClient,
    users: &[UserId],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    catalog: &PresenceCatalog,
) -> Result<Gap, GenesysError> {
    fetch_gap_with(client, users, from, to, catalog, Limits::default()).await
}

/// Batch, page and interval sizes of [`fetch_gap`]; tests make them small.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub users_per_query: usize,
    pub page_size: u32,
    pub max_interval: TimeDelta,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            users_per_query: USERS_PER_QUERY,
            page_size: DETAILS_PAGE_SIZE,
            max_interval: MAX_QUERY_INTERVAL,
        }
    }
}

/// [`fetch_gap`] with explicit [`Limits`].
pub(crate) async fn fetch_gap_with(
    client: &GenesysClient,
    users: &[UserId],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    catalog: &PresenceCatalog,
    limits: Limits,
) -> Result<Gap, GenesysError> {
    let mut gap = Gap::default();
    if users.is_empty() || from >= to {
        return Ok(gap);
    }
    let mut seen: HashSet<(UserId, Kind, DateTime<Utc>)> = HashSet::new();
    let intervals = split_interval(from, to, limits.max_interval);
    for batch in users.chunks(limits.users_per_query.max(1)) {
        let user_filter = AnalyticsFilter {
            kind: "or".into(),
            predicates: batch
                .iter()
                .map(|user| AnalyticsPredicate {
                    kind: Some("dimension".into()),
                    dimension: "userId".into(),
                    operator: Some("matches".into()),
                    value: Some(user.as_str().to_string()),
                })
                .collect(),
        };
        let asked: HashSet<&UserId> = batch.iter().collect();
        for &(start, end) in &intervals {
            let mut previous: Option<Vec<Detail>> = None;
            for page_number in 1..=MAX_PAGES {
                let query = UserDetailsQuery {
                    interval: format!("{}/{}", format_timestamp(start), format_timestamp(end)),
                    order: Some("asc".into()),
                    user_filters: vec![user_filter.clone()],
                    presence_filters: Vec::new(),
                    routing_status_filters: Vec::new(),
                    paging: Some(AnalyticsPaging {
                        page_size: limits.page_size,
                        page_number,
                    }),
                };
                let page: Page = client.user_details_query_as(&query).await?;
                gap.requests += 1;
                if page.user_details.is_empty() {
                    break;
                }
                if previous.as_ref() == Some(&page.user_details) {
                    // Pages are of distinct users: the same page twice is a server repeating
                    // itself, and would be paged MAX_PAGES times, each taking rate budget.
                    warn!(interval = %query.interval, page_number,
                        "analytics user details answered the previous page again: paging ended");
                    break;
                }
                gap.pages += 1;
                previous = Some(page.user_details.clone());
                for detail in page.user_details {
                    absorb(&mut gap, &mut seen, &asked, detail, from, to, catalog);
                }
                if page_number == MAX_PAGES {
                    warn!(
                        interval = %query.interval,
                        "analytics user details paging did not end after {MAX_PAGES} pages"
                    );
                }
            }
        }
    }
    gap.updates.sort_by(|(ua, a), (ub, b)| {
        (a.timestamp(), kind_rank(a.kind()), ua).cmp(&(b.timestamp(), kind_rank(b.kind()), ub))
    });
    debug!(
        updates = gap.updates.len(),
        requests = gap.requests,
        pages = gap.pages,
        malformed = gap.malformed,
        duplicates = gap.duplicates,
        "gap backfilled from analytics"
    );
    Ok(gap)
}

fn kind_rank(kind: Kind) -> u8 {
    match kind {
        Kind::Presence => 0,
        Kind::Routing => 1,
    }
}

/// `[from, to]` as consecutive `(start, end)` pairs of at most `max` each; each end is the
/// next start (records on a boundary come twice and are de-duplicated).
fn split_interval(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max: TimeDelta,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let max = max.max(TimeDelta::milliseconds(1));
    let mut intervals = Vec::new();
    let mut start = from;
    while start < to {
        let end = (start + max).min(to);
        intervals.push((start, end));
        start = end;
    }
    intervals
}

/// One page, decoded leniently: each record is decoded on its own so that one of the wrong
/// shape is counted as malformed instead of failing the page.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[serde(default)]
    user_details: Vec<Detail>,
}

#[derive(Deserialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Detail {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    primary_presence: Vec<serde_json::Value>,
    #[serde(default)]
    routing_status: Vec<serde_json::Value>,
}

/// Adds the usable, new, in-window records of one user to `gap`.
fn absorb(
    gap: &mut Gap,
    seen: &mut HashSet<(UserId, Kind, DateTime<Utc>)>,
    asked: &HashSet<&UserId>,
    detail: Detail,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    catalog: &PresenceCatalog,
) {
    let user = match UserId::parse(detail.user_id.as_deref().unwrap_or_default()) {
        Ok(user) => user,
        Err(e) => {
            let records = detail.primary_presence.len() + detail.routing_status.len();
            warn!(error = %e, records, "analytics user detail without a user id: skipped");
            gap.malformed += records.max(1) as u32;
            return;
        }
    };
    if !asked.contains(&user) {
        let records = detail.primary_presence.len() + detail.routing_status.len();
        warn!(user_id = %user, records, "analytics records of a user not asked about: skipped");
        gap.outside += records as u32;
        return;
    }
    let presences = detail
        .primary_presence
        .into_iter()
        .map(|raw| presence_update(raw, catalog).map(GapUpdate::Presence));
    let routings = detail
        .routing_status
        .into_iter()
        .map(|raw| routing_update(raw).map(GapUpdate::Routing));
    for (kind, update) in presences
        .map(|u| (Kind::Presence, u))
        .chain(routings.map(|u| (Kind::Routing, u)))
    {
        let update = match update {
            Ok(update) => update,
            Err(e) => {
                warn!(user_id = %user, kind = %kind, error = %e, "malformed analytics record: skipped");
                gap.malformed += 1;
                continue;
            }
        };
        let at = update.timestamp();
        if at < from || at > to {
            gap.outside += 1;
            continue;
        }
        if !seen.insert((user.clone(), kind, at)) {
            gap.duplicates += 1;
            continue;
        }
        gap.updates.push((user.clone(), update));
    }
}

fn presence_update(
    raw: serde_json::Value,
    catalog: &PresenceCatalog,
) -> Result<PresenceUpdate, MalformedError> {
    let record: AnalyticsPresenceRecord = serde_json::from_value(raw)
        .map_err(|e| MalformedError::new(format!("presence record: {e}")))?;
    let system = record
        .system_presence
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(normalize_system_presence)
        .ok_or_else(|| MalformedError::new("presence record without systemPresence"))?;
    let definition_id = record
        .organization_presence_id
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty());
    let label = catalog.label(definition_id.as_deref(), &system);
    Ok(PresenceUpdate {
        timestamp: parse_timestamp(&record.start_time)?,
        system,
        definition_id,
        label: Some(label),
    })
}

fn routing_update(raw: serde_json::Value) -> Result<RoutingUpdate, MalformedError> {
    let record: AnalyticsRoutingStatusRecord = serde_json::from_value(raw)
        .map_err(|e| MalformedError::new(format!("routing-status record: {e}")))?;
    if record.routing_status.trim().is_empty() {
        return Err(MalformedError::new(
            "routing-status record without routingStatus",
        ));
    }
    Ok(RoutingUpdate {
        status: normalize_routing_status(&record.routing_status),
        timestamp: parse_timestamp(&record.start_time)?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::genesys::test_server::{Recorded, Reply, TestServer, test_client, token_reply};
    use crate::protocol::PresenceDefinition;

    fn ts(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    /// (userId predicate values, interval, pageNumber, pageSize) of one query body.
    fn query_of(r: &Recorded) -> (Vec<String>, String, u64, u64) {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let users = body["userFilters"][0]["predicates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["type"], "dimension");
                assert_eq!(p["dimension"], "userId");
                assert_eq!(p["operator"], "matches");
                p["value"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(body["userFilters"][0]["type"], "or");
        assert_eq!(body["order"], "asc");
        assert!(body.get("presenceFilters").is_none());
        (
            users,
            body["interval"].as_str().unwrap().to_string(),
            body["paging"]["pageNumber"].as_u64().unwrap(),
            body["paging"]["pageSize"].as_u64().unwrap(),
        )
    }

    const FIRST_WEEK: &str = "2024-05-01T00:00:00.000Z/2024-05-08T00:00:00.000Z";
    const EIGHTH_DAY: &str = "2024-05-08T00:00:00.000Z/2024-05-09T00:00:00.000Z";

    /// The scripted analytics pages, keyed by (user, interval, page).
    fn pages() -> HashMap<(&'static str, &'static str, u64), Value> {
        let available = json!({"startTime": "2024-05-01T01:00:00.000Z", "endTime": "2024-05-01T02:00:00Z",
                               "systemPresence": "AVAILABLE", "organizationPresenceId": "DEF-READY"});
        HashMap::from([
            // U1, first week: a short first page (1 detail for a page size of 2) whose
            // approximate totalHits says "done"; paging must go on anyway.
            (
                ("aaaa-1", FIRST_WEEK, 1),
                json!({"totalHits": 1, "userDetails": [{"userId": "AAAA-1",
                "primaryPresence": [
                    {"startTime": "2024-04-30T23:00:00Z", "systemPresence": "OFFLINE"},
                    available,
                ],
                "routingStatus": [{"startTime": "2024-05-01T01:00:00+00:00", "routingStatus": "IDLE"}]}]}),
            ),
            // Page 2 repeats the AVAILABLE record and brings two malformed ones.
            (
                ("aaaa-1", FIRST_WEEK, 2),
                json!({"totalHits": 1, "userDetails": [{"userId": "aaaa-1",
                "primaryPresence": [available, {"startTime": "2024-05-01T05:00:00", "systemPresence": "AWAY"}],
                "routingStatus": [{"startTime": "2024-05-01T06:00:00Z"}]}]}),
            ),
            (
                ("aaaa-1", FIRST_WEEK, 3),
                json!({"userDetails": [], "totalHits": 1}),
            ),
            (
                ("aaaa-1", EIGHTH_DAY, 1),
                json!({"userDetails": [{"userId": "aaaa-1",
                "routingStatus": [{"startTime": "2024-05-08T01:00:00.123456Z", "routingStatus": "INTERACTING"}]}]}),
            ),
            (("aaaa-1", EIGHTH_DAY, 2), json!({})),
            (
                ("bbbb-2", FIRST_WEEK, 1),
                json!({"userDetails": [{"userId": "bbbb-2",
                "primaryPresence": [{"startTime": "2024-05-01T01:00:00Z", "systemPresence": "ON_QUEUE",
                                     "organizationPresenceId": "unknown-def"}],
                "routingStatus": [{"startTime": "2024-05-01T00:30:00Z", "routingStatus": "IDLE"}]}]}),
            ),
            (("bbbb-2", FIRST_WEEK, 2), json!({"userDetails": []})),
            (("bbbb-2", EIGHTH_DAY, 1), json!({"userDetails": []})),
        ])
    }

    #[tokio::test]
    async fn an_eight_day_gap_in_batches_and_short_pages() {
        let script = pages();
        let server = TestServer::start(move |r| {
            if let Some(reply) = token_reply(r) {
                return reply;
            }
            assert_eq!(
                (r.method.as_str(), r.path.as_str()),
                ("POST", "/api/v2/analytics/users/details/query")
            );
            let (users, interval, page, _) = query_of(r);
            assert_eq!(users.len(), 1, "batches of one user");
            let key = script
                .keys()
                .find(|(u, i, p)| *u == users[0] && *i == interval && *p == page)
                .unwrap_or_else(|| panic!("unexpected query {users:?} {interval} page {page}"));
            Reply::json(200, script[key].clone())
        })
        .await;
        let client = test_client(&server);
        let defs: Vec<PresenceDefinition> = serde_json::from_value(json!([
            {"id": "def-ready", "languageLabels": {"en_US": "Ready"}, "systemPresence": "Available"}
        ]))
        .unwrap();
        let catalog = PresenceCatalog::from_definitions(&defs);
        let users = [
            UserId::parse("AAAA-1").unwrap(),
            UserId::parse("bbbb-2").unwrap(),
        ];
        let limits = Limits {
            users_per_query: 1,
            page_size: 2,
            ..Limits::default()
        };
        let from = ts("2024-05-01T00:00:00Z");
        let to = ts("2024-05-09T00:00:00Z");
        let gap = fetch_gap_with(&client, &users, from, to, &catalog, limits)
            .await
            .unwrap();

        let (u1, u2) = (users[0].clone(), users[1].clone());
        let presence = |system: &str, def: Option<&str>, label: &str, at: &str| {
            GapUpdate::Presence(PresenceUpdate {
                system: system.into(),
                definition_id: def.map(str::to_string),
                label: Some(label.into()),
                timestamp: ts(at),
            })
        };
        let routing = |status: &str, at: &str| {
            GapUpdate::Routing(RoutingUpdate {
                status: status.into(),
                timestamp: ts(at),
            })
        };
        assert_eq!(
            gap.updates,
            vec![
                (u2.clone(), routing("IDLE", "2024-05-01T00:30:00Z")),
                // Equal instants: presence before routing, then by user id.
                (
                    u1.clone(),
                    presence(
                        "AVAILABLE",
                        Some("DEF-READY"),
                        "Ready",
                        "2024-05-01T01:00:00Z"
                    )
                ),
                (
                    u2.clone(),
                    presence(
                        "ON_QUEUE",
                        Some("unknown-def"),
                        "On Queue",
                        "2024-05-01T01:00:00Z"
                    )
                ),
                (u1.clone(), routing("IDLE", "2024-05-01T01:00:00Z")),
                (
                    u1.clone(),
                    routing("INTERACTING", "2024-05-08T01:00:00.123Z")
                ),
            ]
        );
        assert_eq!(gap.presence().count(), 2);
        assert_eq!(gap.routing().count(), 3);
        assert_eq!(
            gap.malformed, 2,
            "a zone-less startTime and a missing routingStatus"
        );
        assert_eq!(gap.duplicates, 1);
        assert_eq!(gap.outside, 1, "the OFFLINE record began before `from`");
        assert_eq!(gap.requests, 8);
        assert_eq!(gap.pages, 4);

        // What the server saw: per user, the first week then the eighth day, pages in order.
        let seen: Vec<_> = server
            .requests()
            .iter()
            .filter(|r| r.path != "/oauth/token")
            .map(|r| {
                let (users, interval, page, size) = query_of(r);
                assert_eq!(size, 2);
                (users[0].clone(), interval, page)
            })
            .collect();
        let expect = |u: &str, i: &str, p: u64| (u.to_string(), i.to_string(), p);
        assert_eq!(
            seen,
            vec![
                expect("aaaa-1", FIRST_WEEK, 1),
                expect("aaaa-1", FIRST_WEEK, 2),
                expect("aaaa-1", FIRST_WEEK, 3),
                expect("aaaa-1", EIGHTH_DAY, 1),
                expect("aaaa-1", EIGHTH_DAY, 2),
                expect("bbbb-2", FIRST_WEEK, 1),
                expect("bbbb-2", FIRST_WEEK, 2),
                expect("bbbb-2", EIGHTH_DAY, 1),
            ]
        );
    }

    #[tokio::test]
    async fn default_limits_batch_100_users_per_query() {
        let server = TestServer::start(|r| {
            token_reply(r)
                .unwrap_or_else(|| Reply::json(200, json!({"userDetails": [], "totalHits": 0})))
        })
        .await;
        let client = test_client(&server);
        let users: Vec<UserId> = (0..150)
            .map(|i| UserId::parse(&format!("u{i}")).unwrap())
            .collect();
        let from = ts("2024-05-01T09:00:00Z");
        let gap = fetch_gap(
            &client,
            &users,
            from,
            from + TimeDelta::hours(2),
            &PresenceCatalog::default(),
        )
        .await
        .unwrap();
        assert_eq!((gap.requests, gap.pages, gap.updates.len()), (2, 0, 0));
        let queries: Vec<_> = server
            .requests()
            .iter()
            .filter(|r| r.path != "/oauth/token")
            .map(query_of)
            .collect();
        assert_eq!(queries[0].0.len(), 100);
        assert_eq!(queries[1].0.len(), 50);
        assert_eq!(
            queries[0].1,
            "2024-05-01T09:00:00.000Z/2024-05-01T11:00:00.000Z"
        );
        assert_eq!((queries[0].2, queries[0].3), (1, 100));
    }

    #[tokio::test]
    async fn nothing_to_ask_makes_no_request() {
        let server = TestServer::start(|_| Reply::text(500, "no request expected")).await;
        let client = test_client(&server);
        let at = ts("2024-05-01T09:00:00Z");
        let user = [UserId::parse("u").unwrap()];
        let catalog = PresenceCatalog::default();
        assert_eq!(
            fetch_gap(&client, &[], at, at + TimeDelta::hours(1), &catalog)
                .await
                .unwrap(),
            Gap::default()
        );
        assert_eq!(
            fetch_gap(&client, &user, at, at, &catalog).await.unwrap(),
            Gap::default()
        );
        assert!(server.requests().is_empty());
    }

    /// A hostile or broken server that answers the same non-empty page forever must not be
    /// paged 10,000 times (each request takes one unit of the shared rate budget).
    #[tokio::test]
    async fn a_page_repeated_forever_ends_the_paging() {
        let server = TestServer::start(|r| {
            token_reply(r).unwrap_or_else(|| {
                Reply::json(
                    200,
                    json!({"userDetails": [{"userId": "u1", "routingStatus": [
                        {"startTime": "2024-05-01T09:30:00Z", "routingStatus": "IDLE"}]}]}),
                )
            })
        })
        .await;
        let client = test_client(&server);
        let from = ts("2024-05-01T09:00:00Z");
        let users = [UserId::parse("u1").unwrap()];
        let gap = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            fetch_gap(
                &client,
                &users,
                from,
                from + TimeDelta::hours(1),
                &PresenceCatalog::default(),
            ),
        )
        .await
        .expect("paging a repeated page never ended")
        .unwrap();
        assert_eq!(gap.updates.len(), 1);
        assert!(gap.requests <= 3, "{} requests", gap.requests);
    }

    /// Records of users that were not asked about (a hostile or confused server) are not
    /// handed to the caller: they would be fed to other agents as their "gap".
    #[tokio::test]
    async fn records_of_users_not_asked_are_dropped() {
        let server = TestServer::start(|r| {
            if let Some(reply) = token_reply(r) {
                return reply;
            }
            let page = query_of(r).2;
            let details = if page == 1 {
                json!([
                    {"userId": "U1", "routingStatus": [
                        {"startTime": "2024-05-01T09:30:00Z", "routingStatus": "IDLE"}]},
                    {"userId": "intruder", "routingStatus": [
                        {"startTime": "2024-05-01T09:31:00Z", "routingStatus": "INTERACTING"}]}
                ])
            } else {
                json!([])
            };
            Reply::json(200, json!({"userDetails": details}))
        })
        .await;
        let client = test_client(&server);
        let from = ts("2024-05-01T09:00:00Z");
        let users = [UserId::parse("u1").unwrap()];
        let gap = fetch_gap(
            &client,
            &users,
            from,
            from + TimeDelta::hours(1),
            &PresenceCatalog::default(),
        )
        .await
        .unwrap();
        let who: Vec<_> = gap.updates.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(who, vec!["u1"]);
        assert_eq!(
            gap.outside, 1,
            "the intruder's record is counted as outside"
        );
    }

    #[test]
    fn intervals_are_cut_at_seven_days() {
        let from = ts("2024-05-01T00:00:00Z");
        let cuts = split_interval(from, from + TimeDelta::days(15), MAX_QUERY_INTERVAL);
        assert_eq!(cuts.len(), 3);
        assert_eq!(
            cuts[1],
            (from + TimeDelta::days(7), from + TimeDelta::days(14))
        );
        assert_eq!(cuts[2].1, from + TimeDelta::days(15));
        assert_eq!(
            split_interval(from, from + TimeDelta::days(7), MAX_QUERY_INTERVAL).len(),
            1
        );
    }
}

//! The simulator's `POST /api/v2/analytics/users/details/query` (reference §7) over loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use agent_monitor::domain::format_timestamp;
use agent_monitor::sim::{AVAILABLE_ID, SimConfig};
use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::fixtures::{assert_same_shape, fixture};
use crate::sim_protocol::{Harness, quiet, start};

async fn post_query(h: &Harness, body: &Value) -> (u16, Value) {
    let response = h
        .http
        .post(h.url("/api/v2/analytics/users/details/query"))
        .bearer_auth(&h.token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn interval(from: chrono::DateTime<Utc>, to: chrono::DateTime<Utc>) -> String {
    format!("{}/{}", format_timestamp(from), format_timestamp(to))
}

#[tokio::test]
async fn the_response_has_the_fixture_shape() {
    let h = start(quiet()).await;
    let user = h.sim.agent_ids().await.unwrap()[0].clone();
    let base = Utc::now() - TimeDelta::hours(2);
    h.sim
        .set_presence_at(&user, "AVAILABLE", base)
        .await
        .unwrap();
    h.sim
        .set_presence_at(&user, "ON_QUEUE", base + TimeDelta::minutes(20))
        .await
        .unwrap();
    h.sim
        .set_routing_status_at(&user, "IDLE", base + TimeDelta::minutes(20))
        .await
        .unwrap();
    h.sim
        .set_routing_status_at(&user, "INTERACTING", base + TimeDelta::minutes(25))
        .await
        .unwrap();
    let mut query = fixture("user_details_query.json");
    query["interval"] = json!(interval(base, base + TimeDelta::hours(1)));
    query["userFilters"][0]["predicates"][0]["value"] = json!(user.to_uppercase());
    let (status, body) = post_query(&h, &query).await;
    assert_eq!(status, 200, "{body}");
    assert_same_shape("user_details_response.json", &body);
    let detail = &body["userDetails"][0];
    assert_eq!(detail["userId"], user);
    // Only ON_QUEUE presence and IDLE routing records pass the fixture's filters.
    assert_eq!(detail["primaryPresence"].as_array().unwrap().len(), 1);
    assert_eq!(detail["primaryPresence"][0]["systemPresence"], "ON_QUEUE");
    assert_eq!(
        detail["routingStatus"][0],
        json!({
            "startTime": format_timestamp(base + TimeDelta::minutes(20)),
            "endTime": format_timestamp(base + TimeDelta::minutes(25)),
            "routingStatus": "IDLE",
        })
    );

    // Unfiltered: every record overlapping the interval, the open one without endTime.
    let (_, all) = post_query(
        &h,
        &json!({"interval": interval(base, Utc::now() + TimeDelta::hours(1)), "order": "desc",
                "userFilters": [{"type": "or", "predicates": [
                    {"type": "dimension", "dimension": "userId", "operator": "matches", "value": user}]}]}),
    )
    .await;
    let presence = all["userDetails"][0]["primaryPresence"].as_array().unwrap();
    assert!(
        presence[0].get("endTime").is_none(),
        "desc: newest first, still open"
    );
    assert_eq!(
        presence.last().unwrap()["organizationPresenceId"],
        AVAILABLE_ID
    );
}

#[tokio::test]
async fn pages_are_sometimes_short_but_hold_every_user_exactly_once() {
    let h = start(SimConfig {
        agents: 23,
        ..quiet()
    })
    .await;
    let ids = h.sim.agent_ids().await.unwrap();
    let midnight = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap() - TimeDelta::days(1);
    // Every third user has an IDLE record spanning midnight UTC.
    for id in ids.iter().step_by(3) {
        h.sim
            .set_routing_status_at(id, "IDLE", midnight - TimeDelta::hours(1))
            .await
            .unwrap();
        h.sim
            .set_routing_status_at(id, "INTERACTING", midnight + TimeDelta::hours(1))
            .await
            .unwrap();
    }
    let span = interval(
        midnight - TimeDelta::days(1),
        Utc::now() + TimeDelta::minutes(1),
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut short_pages_before_the_end = 0;
    let mut total_hits = Vec::new();
    for page_number in 1.. {
        let (status, body) = post_query(
            &h,
            &json!({"interval": span, "paging": {"pageSize": 5, "pageNumber": page_number}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        total_hits.push(body["totalHits"].as_u64().unwrap());
        let details = body
            .get("userDetails")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if details.is_empty() {
            // Past the end: `[]` on odd pages, omitted on even ones.
            assert_eq!(body.get("userDetails").is_some(), page_number % 2 == 1);
            break;
        }
        if details.len() < 5 && seen.len() + details.len() < ids.len() {
            short_pages_before_the_end += 1;
        }
        for d in details {
            *seen
                .entry(d["userId"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert!(page_number < 20, "paging never ends");
    }
    let mut expected: Vec<String> = ids.clone();
    expected.sort();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    assert!(short_pages_before_the_end > 0);
    // Approximate, stable, and not the real count.
    assert!(total_hits.iter().all(|t| *t == total_hits[0]));
    assert_ne!(total_hits[0], ids.len() as u64);
    assert!(total_hits[0].abs_diff(ids.len() as u64) <= 3);
}

#[tokio::test]
async fn bad_queries_get_400_with_an_error_body() {
    let h = start(quiet()).await;
    let now = Utc::now();
    let user_filter = json!([{"type": "or", "predicates": [
        {"type": "dimension", "dimension": "userId", "operator": "matches", "value": "x"}]}]);
    let cases = [
        json!({"interval": "yesterday/today"}),
        json!({"interval": format_timestamp(now)}),
        json!({"interval": interval(now, now)}),
        json!({"interval": interval(now, now - TimeDelta::hours(1))}),
        json!({"interval": interval(now - TimeDelta::days(8), now)}),
        json!({"interval": interval(now - TimeDelta::days(32), now), "userFilters": user_filter}),
        json!({"interval": interval(now - TimeDelta::hours(1), now), "userFilters": [
            {"type": "or", "predicates": [{"dimension": "queueId", "value": "q"}]}]}),
        json!({"interval": interval(now - TimeDelta::hours(1), now), "presenceFilters": [
            {"type": "or", "predicates": [{"dimension": "routingStatus", "value": "IDLE"}]}]}),
        json!({"interval": interval(now - TimeDelta::hours(1), now), "paging": {"pageSize": 101, "pageNumber": 1}}),
        json!({"interval": interval(now - TimeDelta::hours(1), now), "paging": {"pageSize": 10, "pageNumber": 0}}),
        json!({"nothing": true}),
    ];
    for case in cases {
        let (status, body) = post_query(&h, &case).await;
        assert_eq!(status, 400, "{case} → {body}");
        assert_same_shape("error_429.json", &body);
        assert_eq!(body["code"], "bad.request");
    }
    // 8 days are fine with a filter; 100 is the largest page.
    let (status, _) = post_query(
        &h,
        &json!({"interval": interval(now - TimeDelta::days(8), now), "userFilters": user_filter,
                "paging": {"pageSize": 100, "pageNumber": 1}}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn recent_records_are_invisible_while_analytics_lags() {
    let h = start(SimConfig {
        analytics_latency: Duration::from_secs(600),
        ..quiet()
    })
    .await;
    let user = h.sim.agent_ids().await.unwrap()[0].clone();
    let now = Utc::now();
    h.sim
        .set_routing_status_at(&user, "IDLE", now - TimeDelta::hours(1))
        .await
        .unwrap();
    h.sim
        .set_routing_status_at(&user, "INTERACTING", now - TimeDelta::minutes(50))
        .await
        .unwrap();
    h.sim
        .set_routing_status(&user, "NOT_RESPONDING")
        .await
        .unwrap();
    let query = json!({"interval": interval(now - TimeDelta::hours(2), now + TimeDelta::hours(1)),
        "userFilters": [{"type": "or", "predicates": [
            {"type": "dimension", "dimension": "userId", "operator": "matches", "value": user}]}]});
    let (_, body) = post_query(&h, &query).await;
    let routing = body["userDetails"][0]["routingStatus"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(routing.len(), 2, "{routing:?}");
    assert_eq!(routing[1]["routingStatus"], "INTERACTING");
    assert!(
        routing[1].get("endTime").is_none(),
        "looks open while the next one lags"
    );

    h.sim.set_analytics_latency(Duration::ZERO).await.unwrap();
    let (_, body) = post_query(&h, &query).await;
    let routing = body["userDetails"][0]["routingStatus"]
        .as_array()
        .unwrap()
        .clone();
    let last = routing.last().unwrap();
    assert_eq!(last["routingStatus"], "NOT_RESPONDING");
}

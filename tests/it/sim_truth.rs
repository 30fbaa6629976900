//! Simulator ground truth and simulated clock, over real loopback HTTP and WebSocket.

use std::time::Duration;

use agent_monitor::domain::parse_timestamp;
use agent_monitor::protocol::user_topic;
use agent_monitor::sim::{LUNCH_ID, SimConfig, TransitionKind, idle_episodes};
use chrono::{TimeDelta, Utc};

use crate::sim_protocol::{quiet, start};

#[tokio::test]
async fn every_generated_timestamp_follows_the_skewed_clock() {
    let skew = TimeDelta::hours(3);
    let h = start(SimConfig {
        clock_skew: skew,
        ..quiet()
    })
    .await;
    let ids = h.sim.agent_ids().await.unwrap();
    let near = |raw: &str, expected: TimeDelta| {
        let t = parse_timestamp(raw).unwrap();
        let off = t - Utc::now() - expected;
        assert!(
            off.num_seconds().abs() < 30,
            "{raw} is not now + {expected}"
        );
    };

    let date = h.get_json("/api/v2/date").await;
    near(date["currentDate"].as_str().unwrap(), skew);

    let (channel, mut ws) = h.channel_with(&[user_topic(&ids[0])]).await;
    near(
        channel.expires.as_deref().unwrap(),
        skew + TimeDelta::hours(24),
    );

    let status = h
        .get_json(&format!("/api/v2/users/{}/routingstatus", ids[0]))
        .await;
    near(status["startTime"].as_str().unwrap(), skew);

    h.sim
        .set_routing_status(&ids[0], "INTERACTING")
        .await
        .unwrap();
    let event = ws.next_event().await;
    near(
        event["eventBody"]["routingStatus"]["startTime"]
            .as_str()
            .unwrap(),
        skew,
    );

    // Changing the skew at run time moves the clock; a user's timestamps still never go
    // backwards (1 ms after the previous one, as for quick changes).
    h.sim.set_clock_skew(TimeDelta::zero()).await.unwrap();
    let before = h
        .sim
        .user(&ids[0])
        .await
        .unwrap()
        .unwrap()
        .presence_modified;
    h.sim.set_presence(&ids[0], LUNCH_ID).await.unwrap();
    let event = ws.next_event().await;
    let modified = parse_timestamp(event["eventBody"]["modifiedDate"].as_str().unwrap()).unwrap();
    assert_eq!(modified, before + TimeDelta::milliseconds(1));
    let date = h.get_json("/api/v2/date").await;
    near(date["currentDate"].as_str().unwrap(), TimeDelta::zero());
}

#[tokio::test]
async fn ground_truth_lists_initial_states_and_every_transition_in_order() {
    let h = start(quiet()).await;
    let ids = h.sim.agent_ids().await.unwrap();
    let initial = h.sim.ground_truth().await.unwrap();
    assert_eq!(initial.len(), 2 * ids.len());
    assert!(initial.iter().all(|t| t.initial && !t.delivered));
    for id in &ids {
        let mine: Vec<_> = initial.iter().filter(|t| &t.user_id == id).collect();
        assert_eq!(mine.len(), 2);
        assert!(
            mine.iter()
                .any(|t| t.kind == TransitionKind::Routing && t.value == "IDLE")
        );
        assert!(mine.iter().any(|t| t.kind == TransitionKind::Presence
            && t.value == "ON_QUEUE"
            && t.presence_definition_id.as_deref() == Some(agent_monitor::sim::ON_QUEUE_ID)));
    }

    // Not subscribed yet: recorded but not delivered.
    h.sim
        .set_routing_status(&ids[1], "INTERACTING")
        .await
        .unwrap();
    let (_channel, mut ws) = h.channel_with(&[user_topic(&ids[1])]).await;
    h.sim.set_presence(&ids[1], LUNCH_ID).await.unwrap();
    ws.next_event().await;
    h.sim.set_routing_status(&ids[1], "IDLE").await.unwrap();
    ws.next_event().await;
    // An injected event is not a transition.
    h.sim
        .inject_routing_event(&ids[1], "OFF_QUEUE", Utc::now())
        .await
        .unwrap();
    ws.next_event().await;

    let truth = h.sim.ground_truth().await.unwrap();
    let later: Vec<_> = truth.iter().filter(|t| !t.initial).collect();
    assert_eq!(later.len(), 3, "{later:?}");
    assert_eq!(
        (later[0].kind, later[0].value.as_str(), later[0].delivered),
        (TransitionKind::Routing, "INTERACTING", false)
    );
    assert_eq!(
        (later[1].kind, later[1].value.as_str(), later[1].delivered),
        (TransitionKind::Presence, "MEAL", true)
    );
    assert_eq!(later[1].presence_definition_id.as_deref(), Some(LUNCH_ID));
    assert_eq!(
        (later[2].kind, later[2].value.as_str(), later[2].delivered),
        (TransitionKind::Routing, "IDLE", true)
    );
    let seqs: Vec<u64> = truth.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, (0..truth.len() as u64).collect::<Vec<_>>());
    // Serializable, camelCase.
    let json = serde_json::to_value(&truth[0]).unwrap();
    assert!(json.get("userId").is_some() && json.get("presenceDefinitionId").is_some());

    // Added users get an initial state too.
    let added = h.sim.add_user("Late Joiner").await.unwrap();
    let truth = h.sim.ground_truth().await.unwrap();
    assert_eq!(
        truth
            .iter()
            .filter(|t| t.user_id == added && t.initial)
            .count(),
        2
    );

    // Idle episodes: the first agent has been IDLE since start; ids[1] had a closed one.
    let episodes = idle_episodes(&truth, Duration::from_secs(3600), Utc::now());
    let of1: Vec<_> = episodes.iter().filter(|e| e.user_id == ids[1]).collect();
    assert_eq!(of1.len(), 2);
    assert!(of1[0].end.is_some() && !of1[0].reached_threshold);
    assert!(of1[1].end.is_none());
}

//! Simulator topics: rejected topics (reference §3) and the queue-membership topic (§4).

use std::time::Duration;

use agent_monitor::protocol::{ChannelTopicEntityListing, queue_users_topic, user_topic};
use serde_json::{Value, json};

use crate::sim_protocol::{Harness, quiet, start};

async fn subscribe(
    h: &Harness,
    method: reqwest::Method,
    channel: &str,
    topics: &[String],
    ignore_errors: bool,
) -> reqwest::Response {
    let body: Vec<Value> = topics.iter().map(|t| json!({ "id": t })).collect();
    let query = if ignore_errors {
        "?ignoreErrors=true"
    } else {
        ""
    };
    h.http
        .request(
            method,
            h.url(&format!(
                "/api/v2/notifications/channels/{channel}/subscriptions{query}"
            )),
        )
        .bearer_auth(&h.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn rejected_topics_are_listed_and_never_delivered() {
    let h = start(quiet()).await;
    let ids = h.sim.agent_ids().await.unwrap();
    h.sim
        .reject_topics(vec![ids[1].to_uppercase()], "Missing permission")
        .await
        .unwrap();
    let (channel, mut ws) = h.channel_with(&[]).await;
    let topics = [user_topic(&ids[0]), user_topic(&ids[1])];

    // Without ignoreErrors: 403 for the whole request, nothing subscribed.
    let refused = subscribe(&h, reqwest::Method::PUT, &channel.id, &topics, false).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    crate::fixtures::assert_same_shape("error_429.json", &body);
    assert_eq!(h.sim.channels().await.unwrap()[0].topics, 0);

    // With it: 200, the rejected one marked, the others permitted.
    for method in [reqwest::Method::PUT, reqwest::Method::POST] {
        let ok = subscribe(&h, method, &channel.id, &topics, true).await;
        assert_eq!(ok.status(), 200);
        let listing: ChannelTopicEntityListing = ok.json().await.unwrap();
        let states: Vec<(String, Option<String>, Option<String>)> = listing
            .entities
            .into_iter()
            .map(|t| (t.id, t.state, t.rejection_reason))
            .collect();
        assert_eq!(
            states,
            vec![
                (topics[0].clone(), Some("Permitted".into()), None),
                (
                    topics[1].clone(),
                    Some("Rejected".into()),
                    Some("Missing permission".into())
                ),
            ]
        );
    }
    let listing: ChannelTopicEntityListing = h
        .get(&format!(
            "/api/v2/notifications/channels/{}/subscriptions",
            channel.id
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listing.entities[1].state.as_deref(), Some("Rejected"));

    h.sim
        .set_routing_status(&ids[1], "INTERACTING")
        .await
        .unwrap();
    h.sim
        .set_routing_status(&ids[0], "INTERACTING")
        .await
        .unwrap();
    let event = ws.next_event().await;
    assert_eq!(
        event["topicName"],
        format!("v2.users.{}.routingStatus", ids[0])
    );
    assert_eq!(ws.next_text_within(Duration::from_millis(200)).await, None);
}
#[tokio::test]
async fn queue_membership_changes_reach_subscribers() {
    let h = start(quiet()).await;
    let ids = h.sim.agent_ids().await.unwrap();
    let queues = h.sim.queue_ids().await.unwrap();
    let (_channel, mut ws) = h.channel_with(&[queue_users_topic(&queues[0])]).await;
    let members = h.sim.queue_members(&queues[0]).await.unwrap().unwrap();
    assert_eq!(members, vec![ids[0].clone()]);

    // Replace: ids[0] leaves, ids[1] and ids[2] join.
    h.sim
        .set_queue_members(&queues[0], vec![ids[1].clone(), ids[2].clone()])
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = ws.next_event().await;
        crate::fixtures::assert_same_shape("queue_user_event.json", &event);
        assert_eq!(event["topicName"], queue_users_topic(&queues[0]));
        assert_eq!(event["eventBody"]["queueId"], queues[0].as_str());
        assert_eq!(event["eventBody"]["id"], event["eventBody"]["user"]["id"]);
        seen.push((
            event["eventBody"]["user"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
            event["eventBody"]["joined"].as_bool().unwrap(),
        ));
    }
    seen.sort();
    let mut expected = vec![
        (ids[0].clone(), false),
        (ids[1].clone(), true),
        (ids[2].clone(), true),
    ];
    expected.sort();
    assert_eq!(seen, expected);

    h.sim
        .remove_queue_member(&queues[0], &ids[1])
        .await
        .unwrap();
    let event = ws.next_event().await;
    assert_eq!(event["eventBody"]["user"]["id"], ids[1].as_str());
    assert_eq!(event["eventBody"]["joined"], false);
    h.sim
        .add_queue_member(&queues[0], &ids[0].to_uppercase())
        .await
        .unwrap();
    let event = ws.next_event().await;
    assert_eq!(event["eventBody"]["user"]["id"], ids[0].as_str());
    assert_eq!(event["eventBody"]["joined"], true);
    // No change, no event; other queues' changes are not delivered here.
    h.sim.add_queue_member(&queues[0], &ids[0]).await.unwrap();
    h.sim.add_queue_member(&queues[1], &ids[0]).await.unwrap();
    assert_eq!(ws.next_text_within(Duration::from_millis(200)).await, None);
    assert_eq!(
        h.sim.queue_members(&queues[0]).await.unwrap().unwrap(),
        vec![ids[2].clone(), ids[0].clone()]
    );
    assert!(
        h.sim
            .remove_queue_member("no-such-queue", &ids[0])
            .await
            .is_err()
    );
}

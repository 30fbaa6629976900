//! Simulator channel lifecycle (reference §3, §9): expiry, eviction, no_longer_subscribed and
//! leaving a channel, over real loopback HTTP and WebSocket.

use std::time::Duration;

use agent_monitor::domain::parse_timestamp;
use agent_monitor::protocol::{ChannelTopicEntityListing, user_topic};
use agent_monitor::sim::{ChannelEnd, SimConfig};
use chrono::{TimeDelta, Utc};

use crate::fixtures::assert_same_shape;
use crate::sim_protocol::{Ended, WAIT, eventually, quiet, start};

#[tokio::test]
async fn channels_expire_after_their_ttl() {
    let h = start(SimConfig {
        channel_ttl: Duration::from_millis(400),
        ..quiet()
    })
    .await;
    let (channel, mut ws) = h.channel_with(&[]).await;
    let expires = parse_timestamp(channel.expires.as_deref().unwrap()).unwrap();
    let off = expires - Utc::now();
    assert!(
        off <= TimeDelta::milliseconds(400) && off > TimeDelta::seconds(-5),
        "{off}"
    );
    let info = &h.sim.channels().await.unwrap()[0];
    assert_eq!(info.expires, expires);
    assert_eq!(info.ended, None);

    assert_eq!(ws.ended().await, Ended::CloseFrame);
    assert_eq!(h.head_channel(&channel.id).await, 404);
    assert!(h.sim.channels().await.unwrap().is_empty());
    let history = h.sim.channel_history().await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].ended, Some(ChannelEnd::Expired));
}

#[tokio::test]
async fn a_channel_over_the_limit_evicts_the_oldest_with_a_notice() {
    let h = start(SimConfig {
        max_channels: 2,
        ..quiet()
    })
    .await;
    let (first, mut first_ws) = h.channel_with(&[]).await;
    let (second, _second_ws) = h.channel_with(&[]).await;
    // Both connected: the oldest goes, after a no_longer_subscribed notice.
    let third = h.create_channel().await;
    let notice = first_ws
        .next_matching(WAIT, |v| v["topicName"] != "channel.metadata")
        .await;
    assert_same_shape("no_longer_subscribed.json", &notice);
    assert_eq!(
        notice["topicName"],
        format!("v2.system.no_longer_subscribed.{}", first.id)
    );
    assert_eq!(notice["eventBody"]["reason"], "another_channel_subscribed");
    assert_eq!(notice["eventBody"]["channelId"], first.id.as_str());
    assert_eq!(first_ws.ended().await, Ended::CloseFrame);
    assert_eq!(h.head_channel(&first.id).await, 404);
    assert_eq!(h.head_channel(&second.id).await, 200);
    assert_eq!(h.head_channel(&third.id).await, 200);
    // An unconnected channel (third) is preferred over an older connected one (second).
    let fourth = h.create_channel().await;
    assert_eq!(h.head_channel(&second.id).await, 200);
    assert_eq!(h.head_channel(&third.id).await, 404);
    assert_eq!(h.head_channel(&fourth.id).await, 200);
    let ended: Vec<_> = h
        .sim
        .channel_history()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.ended.map(|e| (c.id, e)))
        .collect();
    assert_eq!(
        ended,
        vec![
            (first.id.clone(), ChannelEnd::Evicted),
            (third.id.clone(), ChannelEnd::Evicted)
        ]
    );
}

#[tokio::test]
async fn no_longer_subscribed_drops_every_connected_channel() {
    let h = start(quiet()).await;
    let (connected, mut ws) = h.channel_with(&[]).await;
    let idle = h.create_channel().await;
    h.sim.send_no_longer_subscribed().await.unwrap();
    let notice = ws
        .next_matching(WAIT, |v| v["topicName"] != "channel.metadata")
        .await;
    assert_same_shape("no_longer_subscribed.json", &notice);
    assert_eq!(ws.ended().await, Ended::CloseFrame);
    assert_eq!(h.head_channel(&connected.id).await, 404);
    assert_eq!(h.head_channel(&idle.id).await, 200);
    let history = h.sim.channel_history().await.unwrap();
    assert_eq!(history[0].ended, Some(ChannelEnd::NoLongerSubscribed));
}

#[tokio::test]
async fn leaving_a_channel_deletes_its_subscriptions() {
    let h = start(quiet()).await;
    let ids = h.sim.agent_ids().await.unwrap();
    let (channel, mut ws) = h.channel_with(&[user_topic(&ids[0])]).await;
    let path = format!(
        "/api/v2/notifications/channels/{}/subscriptions",
        channel.id
    );
    let deleted = h
        .http
        .delete(h.url(&path))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let listing: ChannelTopicEntityListing = h.get(&path).await.json().await.unwrap();
    assert!(listing.entities.is_empty());
    eventually("the channel has no topics", || async {
        h.sim.channels().await.unwrap()[0].topics == 0
    })
    .await;
    h.sim
        .set_routing_status(&ids[0], "INTERACTING")
        .await
        .unwrap();
    assert_eq!(ws.next_text_within(Duration::from_millis(300)).await, None);
    // The channel itself stays until it expires or is evicted.
    assert_eq!(h.head_channel(&channel.id).await, 200);
    let truth = h.sim.ground_truth().await.unwrap();
    assert!(!truth.last().unwrap().delivered);
}

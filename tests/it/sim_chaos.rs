//! Simulator chaos mode over loopback: each scheduled fault has its effect, and random chaos
//! fires only the enabled kinds until stopped.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agent_monitor::protocol::user_topic;
use agent_monitor::sim::{ChaosConfig, ChaosFault};

use crate::sim_protocol::{Ended, Harness, WAIT, eventually, quiet, start};

async fn fire(h: &Harness, fault: ChaosFault) {
    let before = h
        .sim
        .chaos_stats()
        .await
        .unwrap()
        .get(&fault)
        .copied()
        .unwrap_or(0);
    h.sim
        .start_chaos_schedule(7, vec![(Duration::ZERO, fault)])
        .await
        .unwrap();
    eventually("the fault fired", || async {
        h.sim
            .chaos_stats()
            .await
            .unwrap()
            .get(&fault)
            .copied()
            .unwrap_or(0)
            > before
    })
    .await;
}

#[tokio::test]
async fn scheduled_delivery_faults_duplicate_reorder_and_delay_frames() {
    let h = start(quiet()).await;
    let ids = h.sim.agent_ids().await.unwrap();
    let (_channel, mut ws) = h.channel_with(&[user_topic(&ids[0])]).await;

    fire(&h, ChaosFault::DuplicateDeliveries).await;
    h.sim
        .set_routing_status(&ids[0], "INTERACTING")
        .await
        .unwrap();
    let first = ws.next_event().await;
    let second = ws.next_event().await;
    assert_eq!(first, second, "the first frame after the fault comes twice");
    // Drain any further duplicates of later frames by using fresh values below.

    fire(&h, ChaosFault::ReorderDeliveries).await;
    // Let pending duplicates be used up first: the duplicate budget is at most 5 frames.
    for status in ["IDLE", "NOT_RESPONDING", "IDLE", "INTERACTING", "IDLE"] {
        h.sim.set_routing_status(&ids[0], status).await.unwrap();
    }
    let mut statuses = Vec::new();
    while let Some(text) = ws.next_text_within(Duration::from_millis(800)).await {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        statuses.push((
            v["eventBody"]["routingStatus"]["startTime"]
                .as_str()
                .unwrap()
                .to_string(),
            v["eventBody"]["routingStatus"]["status"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    let mut unique = statuses.clone();
    unique.dedup();
    assert!(
        unique.windows(2).any(|w| w[0].0 > w[1].0),
        "some adjacent frames arrive swapped: {statuses:?}"
    );
    let mut sorted = unique.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5, "every frame still arrives: {statuses:?}");
    let truth = h.sim.ground_truth().await.unwrap();
    assert!(truth.iter().filter(|t| !t.initial).all(|t| t.delivered));

    fire(&h, ChaosFault::DelayDeliveries).await;
    let sent = Instant::now();
    h.sim.set_presence(&ids[0], "BREAK").await.unwrap();
    ws.next_event().await;
    assert!(
        sent.elapsed() >= Duration::from_millis(90),
        "{:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn scheduled_http_faults_answer_429_5xx_and_401() {
    let h = start(quiet()).await;
    fire(&h, ChaosFault::RateLimit).await;
    let limited = h.get("/api/v2/date").await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["Retry-After"], "1");
    h.sim.clear_faults().await.unwrap();

    fire(&h, ChaosFault::ServerError).await;
    let failed = h.get("/api/v2/date").await;
    assert!(failed.status().is_server_error(), "{}", failed.status());
    h.sim.clear_faults().await.unwrap();

    fire(&h, ChaosFault::RevokeTokens).await;
    assert_eq!(h.get("/api/v2/date").await.status(), 401);
}

#[tokio::test]
async fn scheduled_socket_faults_end_sockets_and_channels() {
    let h = start(quiet()).await;
    let (_a, mut ws) = h.channel_with(&[]).await;
    fire(&h, ChaosFault::DropSockets).await;
    assert_eq!(ws.ended().await, Ended::Abruptly);

    let (_b, mut ws) = h.channel_with(&[]).await;
    fire(&h, ChaosFault::SocketClosing).await;
    let notice = ws
        .next_matching(WAIT, |v| v["topicName"] != "channel.metadata")
        .await;
    assert_eq!(notice["topicName"], "v2.system.socket_closing");
    drop(ws);

    let h = start(quiet()).await;
    let (c, mut ws) = h.channel_with(&[]).await;
    fire(&h, ChaosFault::NoLongerSubscribed).await;
    let notice = ws
        .next_matching(WAIT, |v| v["topicName"] != "channel.metadata")
        .await;
    assert_eq!(
        notice["topicName"],
        format!("v2.system.no_longer_subscribed.{}", c.id)
    );
    assert_eq!(ws.ended().await, Ended::CloseFrame);
    assert_eq!(h.head_channel(&c.id).await, 404);

    let (d, mut ws) = h.channel_with(&[]).await;
    fire(&h, ChaosFault::ExpireChannel).await;
    assert_eq!(ws.ended().await, Ended::CloseFrame);
    assert_eq!(h.head_channel(&d.id).await, 404);
}

#[tokio::test]
async fn random_chaos_fires_only_enabled_kinds_until_stopped() {
    let h = start(quiet()).await;
    let kinds: BTreeSet<ChaosFault> = [ChaosFault::RateLimit, ChaosFault::DuplicateDeliveries]
        .into_iter()
        .collect();
    assert!(
        h.sim
            .start_chaos(ChaosConfig {
                kinds: BTreeSet::new(),
                ..ChaosConfig::default()
            })
            .await
            .is_err()
    );
    h.sim
        .start_chaos(ChaosConfig {
            seed: 3,
            mean_interval: Duration::from_millis(10),
            kinds: kinds.clone(),
        })
        .await
        .unwrap();
    eventually("several faults fired", || async {
        h.sim.chaos_stats().await.unwrap().values().sum::<u64>() >= 6
    })
    .await;
    h.sim.stop_chaos().await.unwrap();
    let stats = h.sim.chaos_stats().await.unwrap();
    assert!(stats.keys().all(|k| kinds.contains(k)), "{stats:?}");
    // Stopped: the count no longer moves (checked across many mean intervals).
    let settled = h.sim.chaos_stats().await.unwrap();
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        assert_eq!(h.sim.chaos_stats().await.unwrap(), settled);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! The simulator's compressed shift: idle episodes never fall inside the guard band, every
//! state is visited, and the ground truth says which episodes reached the threshold.

use std::time::Duration;

use agent_monitor::protocol::user_topic;
use agent_monitor::sim::{ShiftConfig, SimConfig, TransitionKind, idle_episodes};
use chrono::TimeDelta;

use crate::sim_protocol::{quiet, start};

#[tokio::test]
async fn a_shift_keeps_idle_episodes_out_of_the_band() {
    let h = start(SimConfig {
        agents: 6,
        ..quiet()
    })
    .await;
    let ids = h.sim.agent_ids().await.unwrap();
    let topics: Vec<String> = ids.iter().map(|id| user_topic(id)).collect();
    let (_channel, mut ws) = h.channel_with(&topics).await;
    let cfg = ShiftConfig {
        seed: 5,
        duration: Duration::from_millis(1500),
        idle_threshold: Duration::from_millis(300),
        margin: Duration::from_millis(100),
        mean_hold: Duration::from_millis(60),
        ..ShiftConfig::default()
    };
    assert!(
        h.sim
            .start_shift(ShiftConfig {
                margin: Duration::from_secs(1),
                ..cfg.clone()
            })
            .await
            .is_err()
    );
    let summary = tokio::time::timeout(Duration::from_secs(20), h.sim.run_shift(cfg.clone()))
        .await
        .expect("the shift ends")
        .unwrap();
    assert_eq!(summary.agents, 6);
    assert!(
        summary.short_idle_episodes > 0 && summary.long_idle_episodes > 0,
        "{summary:?}"
    );

    let truth = h.sim.ground_truth().await.unwrap();
    let shift: Vec<_> = truth.iter().filter(|t| t.at >= summary.started).collect();
    assert_eq!(shift.len() as u64, summary.transitions);
    assert!(shift.iter().all(|t| t.delivered));
    for value in ["IDLE", "INTERACTING", "NOT_RESPONDING", "OFF_QUEUE"] {
        assert!(
            shift
                .iter()
                .any(|t| t.kind == TransitionKind::Routing && t.value == value),
            "{value}"
        );
    }
    for value in ["ON_QUEUE", "OFFLINE", "AVAILABLE"] {
        assert!(
            shift
                .iter()
                .any(|t| t.kind == TransitionKind::Presence && t.value == value),
            "{value}"
        );
    }
    // Everyone ends OFFLINE and OFF_QUEUE.
    for id in &ids {
        let user = h.sim.user(id).await.unwrap().unwrap();
        assert_eq!(
            (user.system_presence.as_str(), user.routing_status.as_str()),
            ("OFFLINE", "OFF_QUEUE")
        );
    }
    let episodes: Vec<_> = idle_episodes(&truth, cfg.idle_threshold, summary.ended)
        .into_iter()
        .filter(|e| e.start >= summary.started)
        .collect();
    assert_eq!(
        episodes.len() as u64,
        summary.short_idle_episodes + summary.long_idle_episodes
    );
    let low = TimeDelta::from_std(cfg.idle_threshold - cfg.margin).unwrap();
    let high = TimeDelta::from_std(cfg.idle_threshold + cfg.margin).unwrap();
    for e in &episodes {
        let lasted = e.end.expect("closed by the end of the shift") - e.start;
        assert!(lasted < low || lasted > high, "{e:?} lasted {lasted}");
        assert_eq!(e.reached_threshold, lasted > high);
    }
    assert_eq!(
        episodes.iter().filter(|e| e.reached_threshold).count() as u64,
        summary.long_idle_episodes
    );
    // The socket saw them all: count routing frames.
    let mut routing_frames = 0;
    while let Some(text) = ws.next_text_within(Duration::from_millis(300)).await {
        if text.contains(".routingStatus\"") {
            routing_frames += 1;
        }
    }
    let routing_truth = shift
        .iter()
        .filter(|t| t.kind == TransitionKind::Routing)
        .count();
    assert_eq!(routing_frames, routing_truth);
}

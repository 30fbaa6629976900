//! The simulator's firehose: every scripted transition reaches the socket, none is dropped,
//! and a consumer that does not read holds the firehose back.

use std::time::Duration;

use agent_monitor::protocol::user_topic;
use agent_monitor::sim::SimConfig;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::sim_protocol::{quiet, start};

#[tokio::test]
async fn the_firehose_waits_for_slow_sockets_and_drops_nothing() {
    let agents = 40;
    let per_agent = 2_500; // 100,000 frames: more than a socket queue holds (65,536)
    let h = start(SimConfig { agents, ..quiet() }).await;
    let ids = h.sim.agent_ids().await.unwrap();
    let topics: Vec<String> = ids.iter().map(|id| user_topic(id)).collect();
    let (_channel, mut ws) = h.channel_with(&topics).await;

    let run = h.sim.start_firehose(per_agent);
    let mut run = Box::pin(run.finished());
    // Nobody reads yet: the firehose must be held back, not drop frames.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut run)
            .await
            .is_err(),
        "the firehose finished although nobody read"
    );
    let expected = agents * per_agent;
    let reader = async {
        let mut events = 0usize;
        while events < expected {
            match tokio::time::timeout(Duration::from_secs(30), ws.stream.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    if text.as_str().contains("\"v2.users.") {
                        events += 1;
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("socket ended or stalled after {events} events: {other:?}"),
            }
        }
        events
    };
    let (report, events) = tokio::join!(run, reader);
    let report = report.unwrap();
    assert_eq!(events, expected);
    assert_eq!(report.transitions as usize, expected);
    assert_eq!(report.frames as usize, expected);
    assert_eq!(h.sim.dropped_frames().await.unwrap(), 0);
    assert_eq!(ws.next_text_within(Duration::from_millis(100)).await, None);
    let truth = h.sim.ground_truth().await.unwrap();
    let generated: Vec<_> = truth.iter().filter(|t| !t.initial).collect();
    assert_eq!(generated.len(), expected);
    assert!(generated.iter().all(|t| t.delivered));
    // Per user, timestamps strictly increase in generation order.
    for id in &ids {
        let mut last = None;
        for t in generated.iter().filter(|t| &t.user_id == id) {
            if let Some((kind, at)) = last {
                if kind == t.kind {
                    assert!(t.at > at);
                }
            }
            last = Some((t.kind, t.at));
        }
    }
}

#[tokio::test]
async fn a_firehose_without_listeners_records_undelivered_transitions() {
    let h = start(quiet()).await;
    let report = h.sim.firehose(10).await.unwrap();
    assert_eq!(report.transitions, 30);
    assert_eq!(report.frames, 0);
    let truth = h.sim.ground_truth().await.unwrap();
    assert_eq!(
        truth.iter().filter(|t| !t.initial && !t.delivered).count(),
        30
    );
}

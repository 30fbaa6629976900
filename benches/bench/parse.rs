//! Figure 2, parse: notifications per second through our `parse_frame_at` as the connection actor
//! calls it (envelope, topic dispatch, body parse, user-id, status and timestamp normalization,
//! the future-timestamp check against the frame's receipt instant, which the connection reads
//! once per frame for its own bookkeeping and passes in; here one instant per pass) against the
//! limit, plain `serde_json::from_str` of each frame into the owned protocol structs
//! (`Notification<RoutingStatusEventBody>` …) with the type known in advance.
//!
//! The mix is what a contact center's stream looks like: 40 % routing status, 35 % presence,
//! 20 % conversation summaries, 5 % heartbeats; compact JSON built from the golden fixtures, one
//! user id and timestamp per frame. One thread; the two sides alternate in short slices, and
//! each side's rate is the median over its slices of frames per second of on-CPU time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use agent_monitor::notification::parse_frame_at;
use agent_monitor::protocol::{
    ChannelMetadataBody, ConversationSummaryBody, Notification, PresenceEventBody,
    RoutingStatusEventBody,
};

use crate::common::{Ctx, emit, median, thread_cpu_ns};

#[derive(Clone, Copy)]
enum Kind {
    Routing,
    Presence,
    Conversations,
    Heartbeat,
}

const ROUTING: &str = include_str!("../../tests/fixtures/routing_status_event.json");
const PRESENCE: &str = include_str!("../../tests/fixtures/presence_event.json");
const CONVERSATIONS: &str = include_str!("../../tests/fixtures/conversationsummary_event.json");
const HEARTBEAT: &str = include_str!("../../tests/fixtures/heartbeat.json");

/// `n` frames of the mix, compact JSON in Genesys's key order (`topicName`, `version`,
/// `eventBody`, `metadata`: the order of the protocol structs, which the simulator sends;
/// a `serde_json::Value` would sort the keys).
fn corpus(n: usize) -> Vec<(Kind, String)> {
    fn template<T: serde::de::DeserializeOwned>(s: &str) -> Notification<T> {
        serde_json::from_str(s).expect("fixture")
    }
    let routing = template::<RoutingStatusEventBody>(ROUTING);
    let presence = template::<PresenceEventBody>(PRESENCE);
    let conversations = template::<ConversationSummaryBody>(CONVERSATIONS);
    let heartbeat = template::<ChannelMetadataBody>(HEARTBEAT);
    let base = chrono::DateTime::parse_from_rfc3339("2024-05-01T08:00:00Z").unwrap();
    let routing_states = [
        "IDLE",
        "INTERACTING",
        "NOT_RESPONDING",
        "OFF_QUEUE",
        "COMMUNICATING",
    ];
    let presences = ["AVAILABLE", "ON_QUEUE", "BREAK", "MEAL", "AWAY", "On Queue"];
    (0..n)
        .map(|i| {
            let user = format!("3f1c9a52-7b4e-4d8a-9c21-{:012x}", i * 7919 % 100_000);
            let at = (base + chrono::TimeDelta::milliseconds(i as i64 * 137))
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            match i % 20 {
                0..8 => {
                    let mut v = routing.clone();
                    v.topic_name = format!("v2.users.{user}.routingStatus");
                    v.event_body.id = Some(user);
                    v.event_body.routing_status.status =
                        routing_states[i % routing_states.len()].into();
                    v.event_body.routing_status.start_time = at;
                    (Kind::Routing, serde_json::to_string(&v).unwrap())
                }
                8..15 => {
                    let mut v = presence.clone();
                    v.topic_name = format!("v2.users.{user}.presence");
                    v.event_body.presence_definition.system_presence =
                        Some(presences[i % presences.len()].into());
                    v.event_body.modified_date = at;
                    (Kind::Presence, serde_json::to_string(&v).unwrap())
                }
                15..19 => {
                    let mut v = conversations.clone();
                    v.topic_name = format!("v2.users.{user}.conversationsummary");
                    v.event_body.user_id = Some(user);
                    if let Some(call) = v.event_body.call.as_mut() {
                        if let Some(cc) = call.contact_center.as_mut() {
                            cc.active = ((i / 20) % 2) as u32;
                        }
                    }
                    (Kind::Conversations, serde_json::to_string(&v).unwrap())
                }
                _ => (Kind::Heartbeat, serde_json::to_string(&heartbeat).unwrap()),
            }
        })
        .collect()
}

fn ours(corpus: &[(Kind, String)]) -> usize {
    let mut ok = 0;
    let received = chrono::Utc::now();
    for (_, text) in corpus {
        if let Ok(frame) = parse_frame_at(text, received) {
            black_box(&frame);
            ok += 1;
        }
    }
    ok
}

fn plain(corpus: &[(Kind, String)]) -> usize {
    fn one<T: serde::de::DeserializeOwned>(text: &str) -> bool {
        serde_json::from_str::<Notification<T>>(text)
            .map(black_box)
            .is_ok()
    }
    let mut ok = 0;
    for (kind, text) in corpus {
        let parsed = match kind {
            Kind::Routing => one::<RoutingStatusEventBody>(text),
            Kind::Presence => one::<PresenceEventBody>(text),
            Kind::Conversations => one::<ConversationSummaryBody>(text),
            Kind::Heartbeat => one::<ChannelMetadataBody>(text),
        };
        ok += usize::from(parsed);
    }
    ok
}

/// Frames per second of on-CPU time of `pass` over `corpus`, repeated for at least `budget`
/// of wall time.
fn rate(corpus: &[(Kind, String)], budget: Duration, pass: fn(&[(Kind, String)]) -> usize) -> f64 {
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    let mut frames = 0usize;
    while start.elapsed() < budget {
        let ok = pass(corpus);
        assert_eq!(ok, corpus.len(), "every frame of the corpus parses");
        frames += ok;
    }
    frames as f64 / ((thread_cpu_ns() - cpu_start) as f64 / 1e9)
}

pub fn run(ctx: &Ctx) {
    let corpus = corpus(20_000);
    let bytes: usize = corpus.iter().map(|(_, t)| t.len()).sum();
    eprintln!(
        "# parse: {} frames, {} bytes on average",
        corpus.len(),
        bytes / corpus.len()
    );
    // Warm up both (caches, allocator).
    rate(&corpus, Duration::from_millis(200), ours);
    rate(&corpus, Duration::from_millis(200), plain);
    let (reps, budget) = ctx.pick(
        (9, Duration::from_millis(250)),
        (25, Duration::from_millis(400)),
    );
    let (mut ours_rates, mut plain_rates) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        ours_rates.push(rate(&corpus, budget, ours));
        plain_rates.push(rate(&corpus, budget, plain));
    }
    let (ours_rate, plain_rate) = (median(&ours_rates), median(&plain_rates));
    emit("parse.ours", ours_rate, "frames/s");
    emit("parse.serde_json_limit", plain_rate, "frames/s");
    emit(
        "parse.ratio",
        100.0 * ours_rate / plain_rate,
        "%_of_limit(target>=80)",
    );
}

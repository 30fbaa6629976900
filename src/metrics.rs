//! Prometheus metrics: names, descriptions and the recorder, served at `GET /metrics` in the
//! Prometheus text format (via the `metrics` crate and `metrics-exporter-prometheus`).
//!
//! Names follow Prometheus conventions: a `agent_monitor_` prefix, `_total` for counters,
//! `_seconds` for durations, base units only. The recorder is process-wide (one per process,
//! installed on first use); every instrumented place calls the small functions below so that a
//! name is spelled once.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Notifications received, by kind (`presence`, `routing`, `conversationsummary`, `heartbeat`,
/// `pong`, `socket_closing`, `system`, `other`).
pub const NOTIFICATIONS: &str = "agent_monitor_notifications_received_total";
/// Frames that could not be used (logged and skipped).
pub const MALFORMED: &str = "agent_monitor_malformed_messages_total";
/// Events for users outside the monitored set (dropped).
pub const UNKNOWN_USER_EVENTS: &str = "agent_monitor_unknown_user_events_total";
/// Transition rows inserted (duplicates excluded).
pub const TRANSITIONS_STORED: &str = "agent_monitor_transitions_stored_total";
/// Rows per committed write batch.
pub const WRITE_BATCH_ROWS: &str = "agent_monitor_write_batch_rows";
/// Time to commit one write batch.
pub const WRITE_BATCH_SECONDS: &str = "agent_monitor_write_batch_duration_seconds";
/// Failed write attempts (retried).
pub const WRITE_ERRORS: &str = "agent_monitor_write_errors_total";
/// Socket reconnects, by reason.
pub const RECONNECTS: &str = "agent_monitor_reconnects_total";
/// Notification channels connected now.
pub const CHANNELS: &str = "agent_monitor_channels";
/// Topics subscribed on connected channels now.
pub const SUBSCRIBED_TOPICS: &str = "agent_monitor_subscribed_topics";
/// Agents by dimension (`kind`) and current state.
pub const AGENTS: &str = "agent_monitor_agents";
/// Alerts fired, by rule.
pub const ALERTS_FIRED: &str = "agent_monitor_alerts_fired_total";
/// Alerts delivered to Slack.
pub const ALERTS_DELIVERED: &str = "agent_monitor_alerts_delivered_total";
/// Alerts whose delivery failed, by reason (Slack's error string or `transport`, `server`, …).
pub const ALERTS_FAILED: &str = "agent_monitor_alerts_failed_total";
/// Alerts waiting for delivery.
pub const DELIVERY_QUEUE_DEPTH: &str = "agent_monitor_delivery_queue_depth";
/// OAuth tokens obtained from Genesys Cloud.
pub const TOKEN_RENEWALS: &str = "agent_monitor_token_renewals_total";
/// HTTP 429 answers, by origin (`genesys`, `slack`).
pub const RATE_LIMITED: &str = "agent_monitor_rate_limited_total";

/// Transitions recovered by gap backfills (before de-duplication against the stream).
pub const BACKFILLED: &str = "agent_monitor_backfilled_transitions_total";
/// Gap backfills run.
pub const BACKFILLS: &str = "agent_monitor_backfills_total";
/// Measured clock offset to Genesys (Genesys minus local), seconds.
pub const CLOCK_OFFSET: &str = "agent_monitor_clock_offset_seconds";
/// Gauge: agents whose rules wait for a stream gap's backfill (`AgentMsg::Hold`).
pub const AGENTS_HELD: &str = "agent_monitor_agents_held";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle)
/// and describes every metric. If another recorder is already installed (a library user's),
/// a detached recorder is returned so `/metrics` still answers.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    100.0, 500.0, 1000.0, 5000.0,
                ])
                .expect("static bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only this one's view"
                );
            }
            describe();
            initialise();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let upkeep = handle.clone();
                runtime.spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        upkeep.run_upkeep();
                    }
                });
            }
            handle
        })
        .clone()
}

/// The current metrics in the Prometheus text exposition format.
pub fn render() -> String {
    install().render()
}

fn describe() {
    describe_counter!(
        NOTIFICATIONS,
        Unit::Count,
        "Notifications received on the WebSocket, by kind."
    );
    describe_counter!(
        MALFORMED,
        Unit::Count,
        "Frames that could not be used; logged and skipped."
    );
    describe_counter!(
        UNKNOWN_USER_EVENTS,
        Unit::Count,
        "Events for users outside the monitored set; dropped."
    );
    describe_counter!(
        TRANSITIONS_STORED,
        Unit::Count,
        "Transition rows inserted (duplicates excluded)."
    );
    describe_histogram!(
        WRITE_BATCH_ROWS,
        Unit::Count,
        "Rows per committed write batch."
    );
    describe_histogram!(
        WRITE_BATCH_SECONDS,
        Unit::Seconds,
        "Time to commit one write batch."
    );
    describe_counter!(
        WRITE_ERRORS,
        Unit::Count,
        "Failed write attempts (retried, nothing dropped)."
    );
    describe_counter!(RECONNECTS, Unit::Count, "WebSocket reconnects, by reason.");
    describe_counter!(
        BACKFILLED,
        Unit::Count,
        "Transitions recovered by gap backfills from the analytics user details query."
    );
    describe_counter!(BACKFILLS, Unit::Count, "Gap backfills run.");
    describe_gauge!(
        AGENTS_HELD,
        Unit::Count,
        "Agents whose alert rules wait for a stream gap to be backfilled."
    );
    describe_gauge!(
        CLOCK_OFFSET,
        Unit::Seconds,
        "Clock offset to Genesys (GET /api/v2/date), Genesys minus local."
    );
    describe_gauge!(
        CHANNELS,
        Unit::Count,
        "Notification channels with a connected socket."
    );
    describe_gauge!(
        SUBSCRIBED_TOPICS,
        Unit::Count,
        "Topics subscribed on connected channels."
    );
    describe_gauge!(
        AGENTS,
        Unit::Count,
        "Monitored agents by dimension (kind) and current state."
    );
    describe_counter!(ALERTS_FIRED, Unit::Count, "Alerts fired, by rule.");
    describe_counter!(ALERTS_DELIVERED, Unit::Count, "Alerts delivered to Slack.");
    describe_counter!(
        ALERTS_FAILED,
        Unit::Count,
        "Alerts whose delivery failed, by reason."
    );
    describe_gauge!(
        DELIVERY_QUEUE_DEPTH,
        Unit::Count,
        "Alerts waiting for delivery."
    );
    describe_counter!(
        TOKEN_RENEWALS,
        Unit::Count,
        "OAuth access tokens obtained from Genesys Cloud."
    );
    describe_counter!(
        RATE_LIMITED,
        Unit::Count,
        "HTTP 429 answers received, by origin (genesys, slack)."
    );
}

/// Reasons a socket ends ([`crate::actors::connection::SocketEnd`]'s `label`): the bounded
/// label values of [`RECONNECTS`], each shown at 0 from the start.
pub const RECONNECT_REASONS: [&str; 7] = [
    "silence",
    "closed",
    "error",
    "no_longer_subscribed",
    "token_revoked",
    "channel_gone",
    "stopped",
];

/// Kinds of notification frames ([`crate::notification::Frame::kind`]): the label values of
/// [`NOTIFICATIONS`].
pub const NOTIFICATION_KINDS: [&str; 9] = [
    "presence",
    "routing",
    "conversationsummary",
    "queue_membership",
    "heartbeat",
    "pong",
    "socket_closing",
    "system",
    "other",
];

/// Origins of HTTP 429 answers: the label values of [`RATE_LIMITED`].
pub const RATE_LIMIT_ORIGINS: [&str; 2] = ["genesys", "slack"];

/// The failure reason agent-monitor itself gives an alert (the other reasons are the
/// destination's own error strings, unbounded, so they appear on first use).
pub const FAILED_RATE_LIMITED: &str = "rate_limited";

/// Registers every series without labels, and every bounded label value, at 0: a scrape right
/// after start shows each metric (and `rate()`/`increase()` see the first event), instead of a
/// series that appears on its first event.
fn initialise() {
    for name in [
        MALFORMED,
        UNKNOWN_USER_EVENTS,
        TRANSITIONS_STORED,
        WRITE_ERRORS,
        ALERTS_DELIVERED,
        TOKEN_RENEWALS,
        BACKFILLS,
        BACKFILLED,
    ] {
        counter!(name).increment(0);
    }
    for kind in NOTIFICATION_KINDS {
        counter!(NOTIFICATIONS, "kind" => kind).increment(0);
    }
    for reason in RECONNECT_REASONS {
        counter!(RECONNECTS, "reason" => reason).increment(0);
    }
    for origin in RATE_LIMIT_ORIGINS {
        counter!(RATE_LIMITED, "origin" => origin).increment(0);
    }
    counter!(ALERTS_FAILED, "reason" => FAILED_RATE_LIMITED).increment(0);
    for name in [
        DELIVERY_QUEUE_DEPTH,
        AGENTS_HELD,
        CHANNELS,
        SUBSCRIBED_TOPICS,
    ] {
        gauge!(name).increment(0.0);
    }
}

/// Shows the `rule` series of [`ALERTS_FIRED`] at 0 (the rules in force, at start and after a
/// reload), so a rule that never fired still has a series.
pub fn rule_known(rule: &str) {
    counter!(ALERTS_FIRED, "rule" => rule.to_string()).increment(0);
}

/// Counts one notification of `kind`.
pub fn notification(kind: &'static str) {
    counter!(NOTIFICATIONS, "kind" => kind).increment(1);
}

/// Counts one malformed frame.
pub fn malformed() {
    counter!(MALFORMED).increment(1);
}

/// Counts one event for an unmonitored user.
pub fn unknown_user_event() {
    counter!(UNKNOWN_USER_EVENTS).increment(1);
}

/// Records one committed batch: `rows` written in total, `transitions` newly inserted.
pub fn write_batch(rows: usize, transitions: u64, took: Duration) {
    histogram!(WRITE_BATCH_ROWS).record(rows as f64);
    histogram!(WRITE_BATCH_SECONDS).record(took.as_secs_f64());
    counter!(TRANSITIONS_STORED).increment(transitions);
}

/// Counts one failed write attempt.
pub fn write_error() {
    counter!(WRITE_ERRORS).increment(1);
}

/// Counts one reconnect with its reason (a short, bounded label such as `silence`).
pub fn reconnect(reason: &'static str) {
    counter!(RECONNECTS, "reason" => reason).increment(1);
}

/// A channel connected (+1) or lost (-1), with its topics.
pub fn channel_connected(connected: bool, topics: usize) {
    let sign = if connected { 1.0 } else { -1.0 };
    gauge!(CHANNELS).increment(sign);
    gauge!(SUBSCRIBED_TOPICS).increment(sign * topics as f64);
}

/// A gap backfill recovered `records` transitions.
pub fn backfill(records: usize) {
    counter!(BACKFILLS).increment(1);
    counter!(BACKFILLED).increment(records as u64);
}

/// `delta` agents started (+1) or stopped (−1) waiting for a gap's backfill.
pub fn agents_held(delta: i64) {
    gauge!(AGENTS_HELD).increment(delta as f64);
}

/// The clock offset to Genesys was measured.
pub fn clock_offset(offset: chrono::TimeDelta) {
    gauge!(CLOCK_OFFSET).set(offset.num_milliseconds() as f64 / 1000.0);
}

/// A channel's topic list changed from `old` to `new` topics: adjusts the subscribed-topics
/// gauge if the channel is counted as connected.
pub fn channel_topics_changed(connected: bool, old: usize, new: usize) {
    if connected {
        gauge!(SUBSCRIBED_TOPICS).increment(new as f64 - old as f64);
    }
}

/// An agent's state in one dimension changed from `old` to `new`.
pub fn agent_state(kind: &'static str, old: Option<&str>, new: &str) {
    if let Some(old) = old {
        gauge!(AGENTS, "kind" => kind, "state" => old.to_string()).decrement(1.0);
    }
    gauge!(AGENTS, "kind" => kind, "state" => new.to_string()).increment(1.0);
}

/// An agent actor stopped: remove its states from the gauge.
pub fn agent_gone(kind: &'static str, state: &str) {
    gauge!(AGENTS, "kind" => kind, "state" => state.to_string()).decrement(1.0);
}

/// Counts one alert fired for `rule`.
pub fn alert_fired(rule: &str) {
    counter!(ALERTS_FIRED, "rule" => rule.to_string()).increment(1);
}

/// Counts one delivered alert.
pub fn alert_delivered() {
    counter!(ALERTS_DELIVERED).increment(1);
}

/// Counts one failed delivery with a bounded reason label.
pub fn alert_failed(reason: &str) {
    counter!(ALERTS_FAILED, "reason" => reason.to_string()).increment(1);
}

/// An alert entered a destination's delivery queue (or group). Only the Slack actor calls it,
/// together with [`delivery_dequeued`], so the gauge is exactly the alerts it holds.
pub fn delivery_queued() {
    gauge!(DELIVERY_QUEUE_DEPTH).increment(1.0);
}

/// `alerts` left the delivery queue: delivered, failed, dead-lettered, dropped, or lost with a
/// stopping Slack actor.
pub fn delivery_dequeued(alerts: usize) {
    gauge!(DELIVERY_QUEUE_DEPTH).decrement(alerts as f64);
}

/// Counts one OAuth token obtained.
pub fn token_renewal() {
    counter!(TOKEN_RENEWALS).increment(1);
}

/// Counts one HTTP 429 from `origin` (`genesys` or `slack`).
pub fn rate_limited(origin: &'static str) {
    counter!(RATE_LIMITED, "origin" => origin).increment(1);
}

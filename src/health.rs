//! The supervisor's view of the service, served by `GET /readyz`.

use chrono::{DateTime, Utc};

/// Status of one supervised actor.
#[derive(Debug, Clone, PartialEq)]
pub struct ActorStatus {
    /// Actor name (`persistence`, `slack`, `connection-0`, …).
    pub name: String,
    /// `running`, `restarting` or `stopped`.
    pub status: String,
    /// Restarts since the service started.
    pub restarts: u32,
    /// Last failure, if any (no secrets).
    pub last_error: Option<String>,
}

/// Status of one notification channel and its WebSocket.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionStatus {
    /// Connection actor name (`connection-0`).
    pub name: String,
    /// Notification channel id, once created.
    pub channel_id: Option<String>,
    pub connected: bool,
    pub subscribed: bool,
    /// Topics requested on this channel.
    pub topics: usize,
    /// Seconds since the last message of any kind (heartbeat, pong, event); `None` before the first.
    pub last_message_age_seconds: Option<f64>,
    /// Reconnects since start.
    pub reconnects: u32,
    /// User events routed to agent actors since start.
    pub events: u64,
    /// Frames that could not be used (logged, counted, skipped) since start.
    pub malformed_messages: u64,
    /// Events for users outside the monitored set (counted and dropped) since start.
    pub unknown_user_events: u64,
    /// Channel expiry (`expires` from Genesys), UTC.
    pub expires: Option<DateTime<Utc>>,
    /// When the channel will be replaced (make before break) ahead of its expiry, UTC.
    pub rollover_at: Option<DateTime<Utc>>,
    /// Topics Genesys answered `Rejected` (with `ignoreErrors=true`), with the rejection reason.
    pub rejected_topics: Vec<RejectedTopic>,
    /// Channels replaced since start (rollover before expiry, or a channel that disappeared).
    pub channel_replacements: u32,
}

/// A topic Genesys refused to subscribe (`state: "Rejected"` in
/// `PUT /api/v2/notifications/channels/{id}/subscriptions?ignoreErrors=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedTopic {
    pub topic: String,
    /// `rejectionReason`, or empty when Genesys gave none.
    pub reason: String,
}

/// What one gap backfill (`POST /api/v2/analytics/users/details/query`) recovered.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillRun {
    /// Why it ran: `start`, `reconnect`, `socket_closing`, `channel_replaced` or
    /// `connection_restarted`.
    pub trigger: String,
    /// The interval asked for, Genesys time (UTC): from the last instant the stream was known to
    /// be complete minus the safety margin, to the moment the stream was whole again.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Users covered.
    pub users: usize,
    /// Transitions the query returned inside the interval (before de-duplication against what
    /// the stream delivered; the database stores each one once).
    pub records: usize,
    /// Analytics requests made (every page of every user batch and interval slice).
    pub requests: u32,
    /// Records that could not be used (logged, counted, skipped).
    pub malformed: u32,
    /// When it finished (local UTC).
    pub finished_at: DateTime<Utc>,
    /// The error that ended it early, if any (it is retried).
    pub error: Option<String>,
}

/// Status of one alert destination (a Slack incoming webhook or a generic JSON webhook).
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationStatus {
    /// Destination name (`default` for `SLACK_WEBHOOK_URL`).
    pub name: String,
    /// `slack` or `webhook`.
    pub kind: String,
    /// False after a permanent destination error (`channel_is_archived`, `no_service`, …).
    pub enabled: bool,
    /// Why it was disabled (Slack's error string), if it was.
    pub disabled_reason: Option<String>,
    /// Messages waiting to be sent.
    pub queue_depth: usize,
    /// Paused by a 429 until this instant, UTC.
    pub paused_until: Option<DateTime<Utc>>,
    /// Messages delivered since start.
    pub delivered: u64,
    /// Messages that failed for good since start (dead-lettered).
    pub failed: u64,
}

/// The whole readiness report.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// True when every channel is connected and subscribed and the database is writable.
    pub ready: bool,
    pub actors: Vec<ActorStatus>,
    pub connections: Vec<ConnectionStatus>,
    pub database_writable: bool,
    pub database_error: Option<String>,
    /// Monitored agents.
    pub agents: usize,
    /// Alert destinations.
    pub destinations: Vec<DestinationStatus>,
    /// Why the service is not ready, one line per reason.
    pub problems: Vec<String>,
    /// The last finished retention run (`None` without `RETENTION_DAYS` or before the first).
    pub last_retention_run: Option<RetentionRun>,
    /// The last gap backfill (`None` before the first).
    pub last_backfill: Option<BackfillRun>,
    /// Measured clock offset to Genesys (`GET /api/v2/date`): Genesys minus local, milliseconds;
    /// `None` before the first measurement.
    pub clock_offset_ms: Option<i64>,
}

/// What one retention run (`RETENTION_DAYS`) removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRun {
    /// Rows older than this were deleted.
    pub cutoff: DateTime<Utc>,
    /// `agent_status` rows deleted.
    pub history_deleted: u64,
    /// `alerts` rows deleted.
    pub alerts_deleted: u64,
    /// When the run finished.
    pub finished_at: DateTime<Utc>,
    /// The database error that ended the run early, if any.
    pub error: Option<String>,
}

/// The result of one rules reload.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadOutcome {
    /// When it ran, UTC.
    pub at: chrono::DateTime<chrono::Utc>,
    /// True when the new rules are in force.
    pub applied: bool,
    /// Every problem found, one per line (`line N: rule "x": …`); empty when applied.
    pub problems: Vec<String>,
}

/// The rules in force, for `GET /api/v1/rules`.
#[derive(Debug, Clone)]
pub struct RulesInForce {
    pub rules: std::sync::Arc<crate::rules::RuleSet>,
    /// `RULES_FILE`, or `None` for the built-in idle rule.
    pub source: Option<std::path::PathBuf>,
    pub last_reload: Option<ReloadOutcome>,
}

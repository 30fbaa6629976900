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
    /// Why the service is not ready, one line per reason.
    pub problems: Vec<String>,
    /// The last finished retention run (`None` without `RETENTION_DAYS` or before the first).
    pub last_retention_run: Option<RetentionRun>,
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

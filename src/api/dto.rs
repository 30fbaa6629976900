//! Wire shapes of the REST API: serializable twins of the storage rows and the health report.
//! Nothing here is stored; nothing in `db` or `domain` is serialized by the API directly.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type,
};
use poem_openapi::{Enum, Object};
use serde_json::{Value, json};

use crate::db::entity::{agent, agent_status, alert};
use crate::domain::{format_timestamp, parse_timestamp};
use crate::health::{ActorStatus, ConnectionStatus, HealthReport};

/// An instant on the wire: RFC 3339, UTC, millisecond precision (`2024-05-01T10:15:30.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<Utc>);

impl Type for Timestamp {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some("RFC 3339 instant in UTC with milliseconds"),
            example: Some(json!("2024-05-01T10:15:30.123Z")),
            ..MetaSchema::new_with_format("string", "date-time")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ToJSON for Timestamp {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(format_timestamp(self.0)))
    }
}

impl ParseFromJSON for Timestamp {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => parse_timestamp(&s)
                .map(Timestamp)
                .map_err(|e| ParseError::custom(e.to_string())),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

/// Declares a query parameter type that accepts any text (so the handler can answer a bad
/// value with its own `{"error": …}` naming the parameter) while the spec documents the
/// real schema.
macro_rules! raw_query_param {
    ($(#[$doc:meta])* $name:ident, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub String);

        impl Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }

        impl ParseFromParameter for $name {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                Ok($name(value.to_owned()))
            }
        }
    };
}

/// Largest page the API serves.
pub const MAX_LIMIT: u64 = 100;
/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: u64 = 20;

raw_query_param!(
    /// `limit`: page size, an integer 1–100 (default 20).
    LimitParam,
    MetaSchema {
        minimum: Some(1.0),
        maximum: Some(MAX_LIMIT as f64),
        default: Some(json!(DEFAULT_LIMIT)),
        ..MetaSchema::new_with_format("integer", "int64")
    }
);

raw_query_param!(
    /// `offset`: rows to skip, an integer ≥ 0 (default 0).
    OffsetParam,
    MetaSchema {
        minimum: Some(0.0),
        default: Some(json!(0)),
        ..MetaSchema::new_with_format("integer", "int64")
    }
);

raw_query_param!(
    /// `kind`: `presence` or `routing` (case-insensitive).
    KindParam,
    MetaSchema {
        enum_items: vec![json!("presence"), json!("routing")],
        ..MetaSchema::new("string")
    }
);

/// Error body of every 4xx/5xx answer.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Error")]
pub struct ErrorBody {
    /// What went wrong; for a 400 it names the offending parameter
    /// (`limit must be between 1 and 100, got 500`).
    pub error: String,
}

/// The dimension of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "Kind", rename_all = "lowercase")]
pub enum KindDto {
    /// System presence (with the org presence label).
    Presence,
    /// Routing status.
    Routing,
}

/// One stored presence or routing-status transition.
#[derive(Debug, Clone, Object)]
#[oai(rename = "StatusRecord")]
pub struct StatusRecord {
    /// Row id; increases with insertion order.
    pub id: i64,
    /// Genesys user id (lowercase GUID).
    pub user_id: String,
    /// Display name at the time, if known.
    #[oai(nullable)]
    pub user_name: Option<String>,
    /// `presence` or `routing`.
    pub kind: KindDto,
    /// Normalized state, uppercase: a system presence (`AVAILABLE`, `ON_QUEUE`, …) or a
    /// routing status (`IDLE`, `INTERACTING`, …).
    pub state: String,
    /// The state this one replaced, if known.
    #[oai(nullable)]
    pub previous_state: Option<String>,
    /// Org presence label (`Lunch`) for presence transitions, as of the transition (falls back
    /// to the system presence's label when the definition was unknown).
    #[oai(nullable)]
    pub org_presence: Option<String>,
    /// Org presence definition id (GUID) for presence transitions, when Genesys gave one.
    #[oai(nullable)]
    pub presence_definition_id: Option<String>,
    /// Genesys's timestamp of the transition (presence `modifiedDate`, routing `startTime`),
    /// UTC, milliseconds.
    pub event_timestamp: Timestamp,
    /// When agent-monitor received the event, UTC, milliseconds.
    pub ingested_at: Timestamp,
    /// Where the row came from: `stream` (WebSocket), `bootstrap` (snapshot after
    /// subscribing) or `backfill`.
    pub source: String,
}

/// A page of transitions, newest `event_timestamp` first (ties: highest `id` first).
#[derive(Debug, Clone, Object)]
#[oai(rename = "HistoryPage")]
pub struct HistoryPage {
    /// Rows matching the filters over all pages.
    pub total: u64,
    /// At most `limit` rows, starting at `offset` or after `cursor`.
    pub data: Vec<StatusRecord>,
    /// Pass as `cursor` (with the same filters) for the next page; null on the last page.
    /// Opaque.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// The current state of one agent.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Agent")]
pub struct AgentDto {
    /// Genesys user id (lowercase GUID).
    pub user_id: String,
    /// Display name, if known.
    #[oai(nullable)]
    pub user_name: Option<String>,
    /// Normalized system presence (`AVAILABLE`, `ON_QUEUE`, …).
    #[oai(nullable)]
    pub presence: Option<String>,
    /// Org presence label (`Lunch`).
    #[oai(nullable)]
    pub org_presence: Option<String>,
    /// Start of the current presence, UTC.
    #[oai(nullable)]
    pub presence_since: Option<Timestamp>,
    /// Normalized routing status (`IDLE`, `OFF_QUEUE`, …).
    #[oai(nullable)]
    pub routing_status: Option<String>,
    /// Start of the current routing status, UTC.
    #[oai(nullable)]
    pub routing_since: Option<Timestamp>,
    /// Active conversations over all media types.
    pub active_conversations: u32,
    /// Start of the current idle episode; absent when not idle. UTC.
    #[oai(nullable)]
    pub idle_since: Option<Timestamp>,
    /// When this state last changed, UTC.
    pub updated_at: Timestamp,
}

/// Every monitored agent, ordered by `user_id`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "AgentList")]
pub struct AgentList {
    /// Number of agents.
    pub total: u64,
    /// The agents.
    pub data: Vec<AgentDto>,
}

/// How delivery of an alert ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "DeliveryStatus", rename_all = "snake_case")]
pub enum DeliveryStatusDto {
    /// Not attempted yet (or still retrying).
    Pending,
    /// Slack accepted it.
    Delivered,
    /// Slack refused it or retries ran out; see `delivery_error`.
    Failed,
    /// No Slack webhook configured: stored only.
    NotConfigured,
    /// Recorded but deliberately not sent: quiet hours or a silence (see `delivery_error`).
    Suppressed,
    /// Not sent because its episode resolved before a retry.
    Dropped,
}

/// Whether an alert message announces a firing (or repeat) or a resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "AlertKind", rename_all = "snake_case")]
pub enum AlertKindDto {
    /// The episode passed its threshold (`repeat` 0) or repeats (`repeat` ≥ 1).
    Firing,
    /// The episode ended after firing; `resolved_duration_seconds` is its length.
    Resolved,
}

/// One alert and its delivery outcome.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Alert")]
pub struct AlertDto {
    /// Row id; increases with insertion order.
    pub id: i64,
    /// Unique per message: the episode key, `<episode key>:repeat-<n>` or
    /// `<episode key>:resolved`.
    pub alert_key: String,
    /// `<rule>:<user_id>:<episode start in ms since the epoch>`, shared by every message of
    /// one episode.
    pub episode_key: String,
    /// Rule name (`idle` for the built-in rule).
    pub rule: String,
    /// `firing` or `resolved`.
    pub kind: AlertKindDto,
    /// 0 for the first firing, 1, 2, … for repeats.
    pub repeat: u32,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// Destination the alert was for: a name from the rules file, or `default`
    /// (`SLACK_WEBHOOK_URL`).
    pub destination: String,
    /// Total episode length in seconds, for a resolved message.
    #[oai(nullable)]
    pub resolved_duration_seconds: Option<u64>,
    /// Why it was recorded but not sent, if so (`delivery_status` is then `suppressed`): the
    /// rule's quiet hours (`quiet hours`), or a silence (`silenced: <its comment>`).
    #[oai(nullable)]
    pub muted: Option<String>,
    /// Genesys user id (lowercase GUID).
    pub user_id: String,
    /// Display name, if known.
    #[oai(nullable)]
    pub user_name: Option<String>,
    /// The state held, for humans (`routing IDLE`).
    pub state: String,
    /// Episode start (Genesys timestamp), UTC.
    pub since: Timestamp,
    /// The threshold that was passed, in seconds.
    pub threshold_seconds: u64,
    /// When the alert fired, UTC.
    pub fired_at: Timestamp,
    /// How delivery ended so far.
    pub delivery_status: DeliveryStatusDto,
    /// Slack's error or the transport error, when delivery failed (or, while `pending`, the
    /// last failure of a message being retried).
    #[oai(nullable)]
    pub delivery_error: Option<String>,
    /// Delivery attempts (HTTP requests) made so far, also while the message is being retried.
    pub attempts: u32,
    /// When Slack accepted it, UTC.
    #[oai(nullable)]
    pub delivered_at: Option<Timestamp>,
}

/// A page of alerts, newest `fired_at` first.
#[derive(Debug, Clone, Object)]
#[oai(rename = "AlertPage")]
pub struct AlertPage {
    /// All alerts over all pages.
    pub total: u64,
    /// At most `limit` alerts, starting at `offset`.
    pub data: Vec<AlertDto>,
}

/// Liveness.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Liveness")]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
}

/// One supervised actor.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ActorReport")]
pub struct ActorReport {
    /// Actor name (`persistence`, `slack`, `connection-0`, …).
    pub name: String,
    /// `running`, `restarting` or `stopped`.
    pub status: String,
    /// Restarts since the service started.
    pub restarts: u32,
    /// Last failure, if any.
    #[oai(nullable)]
    pub last_error: Option<String>,
}

/// One notification channel and its WebSocket.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ConnectionReport")]
pub struct ConnectionReport {
    /// Connection actor name (`connection-0`).
    pub name: String,
    /// Genesys notification channel id, once created.
    #[oai(nullable)]
    pub channel_id: Option<String>,
    /// The WebSocket is open.
    pub connected: bool,
    /// The topic subscription succeeded.
    pub subscribed: bool,
    /// Topics requested on this channel.
    pub topics: u64,
    /// Seconds since the last message of any kind (heartbeat, pong, event); absent before the
    /// first.
    #[oai(nullable)]
    pub last_message_age_seconds: Option<f64>,
    /// Reconnects since start.
    pub reconnects: u32,
    /// User events routed to agent actors since start.
    pub events: u64,
    /// Frames that could not be used (logged, counted and skipped) since start.
    pub malformed_messages: u64,
    /// Events for users outside the monitored set (counted and dropped) since start.
    pub unknown_user_events: u64,
    /// Channel expiry reported by Genesys (channels live 24 h), UTC.
    #[oai(nullable)]
    pub expires: Option<Timestamp>,
    /// When the channel will be replaced ahead of its expiry (make before break), UTC.
    #[oai(nullable)]
    pub rollover_at: Option<Timestamp>,
    /// Topics Genesys answered `Rejected` (subscribed with `ignoreErrors=true`); the other
    /// topics keep working.
    pub rejected_topics: Vec<RejectedTopicReport>,
    /// Channels replaced since start (rollover, or a channel that disappeared).
    pub channel_replacements: u32,
}

/// A topic Genesys refused to subscribe.
#[derive(Debug, Clone, Object)]
#[oai(rename = "RejectedTopic")]
pub struct RejectedTopicReport {
    /// The topic, e.g. `v2.users.<id>?presence&routingStatus&conversationsummary`.
    pub topic: String,
    /// Genesys's `rejectionReason` (empty when none was given).
    pub reason: String,
}

/// What the last gap backfill (`POST /api/v2/analytics/users/details/query`) recovered.
#[derive(Debug, Clone, Object)]
#[oai(rename = "BackfillRun")]
pub struct BackfillRunReport {
    /// Why it ran: `start` (existing database), `reconnect`, `socket_closing` (frames still
    /// queued on the closed socket), `channel_replaced` (rollover or a lost channel),
    /// `connection_restarted`.
    pub trigger: String,
    /// Start of the interval queried (Genesys time, UTC): the last instant the stream was
    /// known complete, minus `BACKFILL_MARGIN`.
    pub from: Timestamp,
    /// End of the interval queried (Genesys time, UTC).
    pub to: Timestamp,
    /// Users covered.
    pub users: u64,
    /// Transitions found in the interval (each stored once; those the stream already
    /// delivered are not stored again).
    pub records: u64,
    /// Analytics requests made.
    pub requests: u32,
    /// Records that could not be used (logged, counted, skipped).
    pub malformed: u32,
    /// When it finished, UTC.
    pub finished_at: Timestamp,
    /// The error that ended it (it is retried), if any.
    #[oai(nullable)]
    pub error: Option<String>,
}

/// The database as seen by the persistence actor.
#[derive(Debug, Clone, Object)]
#[oai(rename = "DatabaseReport")]
pub struct DatabaseReport {
    /// The last write check or batch commit succeeded.
    pub writable: bool,
    /// Last write error, if failing.
    #[oai(nullable)]
    pub error: Option<String>,
}

/// Readiness: served with 200 when `ready`, else 503.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Readiness")]
pub struct Readiness {
    /// True when every channel is connected and subscribed and the database is writable.
    pub ready: bool,
    /// Every supervised actor.
    pub actors: Vec<ActorReport>,
    /// Every notification channel.
    pub connections: Vec<ConnectionReport>,
    /// Whether the database accepts writes.
    pub database: DatabaseReport,
    /// Monitored agents.
    pub agents: u64,
    /// Alert destinations (Slack incoming webhooks, generic JSON webhooks).
    pub destinations: Vec<DestinationReport>,
    /// Why the service is not ready, one line per reason; empty when ready.
    pub problems: Vec<String>,
    /// The last finished retention run; absent without `RETENTION_DAYS` or before the first
    /// run (30 s after start, then hourly).
    #[oai(skip_serializing_if_is_none)]
    #[oai(nullable)]
    pub last_retention_run: Option<RetentionRunReport>,
    /// The last gap backfill; absent before the first.
    #[oai(skip_serializing_if_is_none)]
    #[oai(nullable)]
    pub last_backfill: Option<BackfillRunReport>,
    /// Clock offset to Genesys measured with `GET /api/v2/date` (Genesys minus local),
    /// milliseconds; absent before the first measurement.
    #[oai(skip_serializing_if_is_none)]
    #[oai(nullable)]
    pub clock_offset_ms: Option<i64>,
}

/// What the last retention run (`RETENTION_DAYS`) deleted.
#[derive(Debug, Clone, Object)]
#[oai(rename = "RetentionRun")]
pub struct RetentionRunReport {
    /// Rows older than this instant were deleted, UTC.
    pub cutoff: Timestamp,
    /// Transitions deleted.
    pub history_deleted: u64,
    /// Alerts deleted.
    pub alerts_deleted: u64,
    /// When the run finished, UTC.
    pub finished_at: Timestamp,
    /// The database error that ended the run early, if any.
    #[oai(nullable)]
    pub error: Option<String>,
}

/// One alert destination as the delivery actor sees it.
#[derive(Debug, Clone, Object)]
#[oai(rename = "DestinationReport")]
pub struct DestinationReport {
    /// Destination name (`default` for `SLACK_WEBHOOK_URL`). Never the URL.
    pub name: String,
    /// `slack` or `webhook`.
    pub kind: String,
    /// False after a permanent destination error such as `channel_is_archived`.
    pub enabled: bool,
    /// Why it was disabled (the receiver's error string).
    #[oai(nullable)]
    pub disabled_reason: Option<String>,
    /// Messages waiting to be sent.
    pub queue_depth: u64,
    /// Paused by an HTTP 429 until this instant, UTC.
    #[oai(nullable)]
    pub paused_until: Option<Timestamp>,
    /// Messages delivered since start.
    pub delivered: u64,
    /// Messages that failed for good since start (dead-lettered).
    pub failed: u64,
}

/// A stored row that the API cannot represent (a value no writer produces).
#[derive(Debug, thiserror::Error)]
#[error("stored {table}.{column} has unexpected value {value:?}")]
pub struct CorruptRow {
    /// Table name.
    pub table: &'static str,
    /// Column name.
    pub column: &'static str,
    /// The value found.
    pub value: String,
}

impl TryFrom<agent_status::Model> for StatusRecord {
    type Error = CorruptRow;

    fn try_from(row: agent_status::Model) -> Result<Self, CorruptRow> {
        let kind = match row.kind.as_str() {
            "presence" => KindDto::Presence,
            "routing" => KindDto::Routing,
            _ => {
                return Err(CorruptRow {
                    table: "agent_status",
                    column: "kind",
                    value: row.kind,
                });
            }
        };
        Ok(StatusRecord {
            id: row.id,
            user_id: row.user_id,
            user_name: row.user_name,
            kind,
            state: row.state,
            previous_state: row.previous_state,
            org_presence: row.org_presence,
            presence_definition_id: row.presence_definition_id,
            event_timestamp: Timestamp(row.event_timestamp),
            ingested_at: Timestamp(row.ingested_at),
            source: row.source,
        })
    }
}

impl From<agent::Model> for AgentDto {
    fn from(row: agent::Model) -> Self {
        AgentDto {
            user_id: row.user_id,
            user_name: row.user_name,
            presence: row.presence,
            org_presence: row.org_presence,
            presence_since: row.presence_since.map(Timestamp),
            routing_status: row.routing_status,
            routing_since: row.routing_since.map(Timestamp),
            active_conversations: u32::try_from(row.active_conversations).unwrap_or(0),
            idle_since: row.idle_since.map(Timestamp),
            updated_at: Timestamp(row.updated_at),
        }
    }
}

impl TryFrom<alert::Model> for AlertDto {
    type Error = CorruptRow;

    fn try_from(row: alert::Model) -> Result<Self, CorruptRow> {
        let delivery_status = match row.delivery_status.as_str() {
            "pending" => DeliveryStatusDto::Pending,
            "delivered" => DeliveryStatusDto::Delivered,
            "failed" => DeliveryStatusDto::Failed,
            "not_configured" => DeliveryStatusDto::NotConfigured,
            "suppressed" => DeliveryStatusDto::Suppressed,
            "dropped" => DeliveryStatusDto::Dropped,
            _ => {
                return Err(CorruptRow {
                    table: "alerts",
                    column: "delivery_status",
                    value: row.delivery_status,
                });
            }
        };
        let kind = match row.kind.as_str() {
            "firing" => AlertKindDto::Firing,
            "resolved" => AlertKindDto::Resolved,
            _ => {
                return Err(CorruptRow {
                    table: "alerts",
                    column: "kind",
                    value: row.kind,
                });
            }
        };
        Ok(AlertDto {
            id: row.id,
            alert_key: row.alert_key,
            episode_key: row.episode_key,
            rule: row.rule,
            kind,
            repeat: u32::try_from(row.repeat).unwrap_or(0),
            severity: row.severity,
            destination: row
                .destination
                .unwrap_or_else(|| crate::config::DEFAULT_DESTINATION.to_owned()),
            resolved_duration_seconds: row
                .resolved_duration_seconds
                .and_then(|s| u64::try_from(s).ok()),
            // Quiet hours are known when the alert fires (`muted`); a silence only when the
            // delivery actor suppresses it, which it records as the outcome's reason.
            muted: row.muted.or_else(|| {
                matches!(delivery_status, DeliveryStatusDto::Suppressed)
                    .then(|| row.delivery_error.clone())
                    .flatten()
            }),
            user_id: row.user_id,
            user_name: row.user_name,
            state: row.state,
            since: Timestamp(row.since),
            threshold_seconds: u64::try_from(row.threshold_seconds).unwrap_or(0),
            fired_at: Timestamp(row.fired_at),
            delivery_status,
            delivery_error: row.delivery_error,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            delivered_at: row.delivered_at.map(Timestamp),
        })
    }
}

impl From<&ActorStatus> for ActorReport {
    fn from(a: &ActorStatus) -> Self {
        ActorReport {
            name: a.name.clone(),
            status: a.status.clone(),
            restarts: a.restarts,
            last_error: a.last_error.clone(),
        }
    }
}

impl From<&ConnectionStatus> for ConnectionReport {
    fn from(c: &ConnectionStatus) -> Self {
        ConnectionReport {
            name: c.name.clone(),
            channel_id: c.channel_id.clone(),
            connected: c.connected,
            subscribed: c.subscribed,
            topics: c.topics as u64,
            last_message_age_seconds: c.last_message_age_seconds,
            reconnects: c.reconnects,
            events: c.events,
            malformed_messages: c.malformed_messages,
            unknown_user_events: c.unknown_user_events,
            expires: c.expires.map(Timestamp),
            rollover_at: c.rollover_at.map(Timestamp),
            rejected_topics: c
                .rejected_topics
                .iter()
                .map(|r| RejectedTopicReport {
                    topic: r.topic.clone(),
                    reason: r.reason.clone(),
                })
                .collect(),
            channel_replacements: c.channel_replacements,
        }
    }
}

impl From<&HealthReport> for Readiness {
    fn from(r: &HealthReport) -> Self {
        Readiness {
            ready: r.ready,
            actors: r.actors.iter().map(ActorReport::from).collect(),
            connections: r.connections.iter().map(ConnectionReport::from).collect(),
            database: DatabaseReport {
                writable: r.database_writable,
                error: r.database_error.clone(),
            },
            agents: r.agents as u64,
            destinations: r
                .destinations
                .iter()
                .map(|d| DestinationReport {
                    name: d.name.clone(),
                    kind: d.kind.clone(),
                    enabled: d.enabled,
                    disabled_reason: d.disabled_reason.clone(),
                    queue_depth: d.queue_depth as u64,
                    paused_until: d.paused_until.map(Timestamp),
                    delivered: d.delivered,
                    failed: d.failed,
                })
                .collect(),
            problems: r.problems.clone(),
            last_retention_run: r.last_retention_run.as_ref().map(|run| RetentionRunReport {
                cutoff: Timestamp(run.cutoff),
                history_deleted: run.history_deleted,
                alerts_deleted: run.alerts_deleted,
                finished_at: Timestamp(run.finished_at),
                error: run.error.clone(),
            }),
            last_backfill: r.last_backfill.as_ref().map(|run| BackfillRunReport {
                trigger: run.trigger.clone(),
                from: Timestamp(run.from),
                to: Timestamp(run.to),
                users: run.users as u64,
                records: run.records as u64,
                requests: run.requests,
                malformed: run.malformed,
                finished_at: Timestamp(run.finished_at),
                error: run.error.clone(),
            }),
            clock_offset_ms: r.clock_offset_ms,
        }
    }
}

impl Readiness {
    /// The report served when the supervisor did not answer in time.
    pub fn unanswered() -> Self {
        Readiness {
            ready: false,
            actors: Vec::new(),
            connections: Vec::new(),
            database: DatabaseReport {
                writable: false,
                error: Some("unknown: the supervisor did not answer".into()),
            },
            agents: 0,
            destinations: Vec::new(),
            problems: vec!["the supervisor did not answer the health request".into()],
            last_retention_run: None,
            last_backfill: None,
            clock_offset_ms: None,
        }
    }
}

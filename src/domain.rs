//! Domain types shared by the actors, the storage layer and the API: what a transition is, how
//! Genesys's spellings are normalized, and when an agent counts as idle.
//!
//! Protocol facts come from `shared/genesys-cloud-protocol.md` §5 (enumerations) and §10 (what
//! they mean for us). Every instant here is UTC; durations are `std::time::Duration` or
//! `chrono::Duration` and say which.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// A Genesys user id: a GUID, compared case-insensitively and stored in lowercase.
///
/// Shared, not copied: a clone is a reference count, because every transition, current-state
/// row and episode log of the agent carries its id (`BENCHMARKS.md`, figures 1 and 4).
/// Serialized as a plain string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    /// Lowercases and trims; an empty id is refused.
    pub fn parse(raw: &str) -> Result<UserId, MalformedError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(MalformedError::new("user id is empty"));
        }
        // One allocation when the id is already lowercase, as Genesys sends it (once per
        // event: `BENCHMARKS.md`, figure 2).
        let id: Arc<str> = if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            trimmed.to_ascii_lowercase().into()
        } else {
            trimmed.into()
        };
        Ok(UserId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Takes the string as it is (as the derived implementation on the former `String` did): ids
/// read back from our own JSON were normalized when first parsed.
impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| UserId(s.into()))
    }
}

/// A value from Genesys that cannot be used: logged, counted and skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedError(String);

impl MalformedError {
    pub fn new(what: impl Into<String>) -> Self {
        MalformedError(what.into())
    }
}

/// Parses a Genesys timestamp: any RFC 3339 instant, with or without fractional seconds, `Z` or
/// a numeric offset. A timestamp without a zone is malformed, never local time. The result is
/// truncated to milliseconds, the precision we store.
pub fn parse_timestamp(raw: &str) -> Result<DateTime<Utc>, MalformedError> {
    let parsed = DateTime::parse_from_rfc3339(raw.trim()).map_err(|e| {
        MalformedError::new(format!(
            "timestamp {raw:?} is not an RFC 3339 instant with a zone: {e}"
        ))
    })?;
    Ok(truncate_to_millis(parsed.with_timezone(&Utc)))
}

/// Drops sub-millisecond precision.
pub fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    // Only the sub-millisecond nanoseconds go (a leap second's `nanosecond() >= 10^9` is kept);
    // no round trip through a count of milliseconds since the epoch, which recomputes the date
    // (once per event: `BENCHMARKS.md`, figure 2).
    use chrono::Timelike;
    let nanos = t.nanosecond();
    t.with_nanosecond(nanos - nanos % 1_000_000).unwrap_or(t)
}

/// Formats an instant as RFC 3339 UTC with milliseconds (`2024-05-01T10:15:30.123Z`), the form
/// stored in the database and served by the API.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The dimension a transition belongs to. Presence and routing status are independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// System presence (plus the org presence label), timestamped by `modifiedDate`.
    Presence,
    /// Routing status, timestamped by `startTime`.
    Routing,
}

impl Kind {
    /// `presence` or `routing`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Presence => "presence",
            Kind::Routing => "routing",
        }
    }

    pub fn parse(raw: &str) -> Option<Kind> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "presence" => Some(Kind::Presence),
            "routing" => Some(Kind::Routing),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a stored transition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A WebSocket notification.
    Stream,
    /// The snapshot of current states taken after subscribing (`GET /api/v2/users?expand=…`).
    Bootstrap,
    /// Recovered after a gap from `POST /api/v2/analytics/users/details/query` (reference §7).
    Backfill,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Stream => "stream",
            Source::Bootstrap => "bootstrap",
            Source::Backfill => "backfill",
        }
    }

    pub fn parse(raw: &str) -> Option<Source> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "stream" => Some(Source::Stream),
            "bootstrap" => Some(Source::Bootstrap),
            "backfill" => Some(Source::Backfill),
            _ => None,
        }
    }
}

/// The ten system presences in the notification spelling.
pub const SYSTEM_PRESENCES: [&str; 10] = [
    "AVAILABLE",
    "AWAY",
    "BUSY",
    "OFFLINE",
    "IDLE",
    "ON_QUEUE",
    "MEAL",
    "TRAINING",
    "MEETING",
    "BREAK",
];

/// The five routing statuses.
pub const ROUTING_STATUSES: [&str; 5] = [
    "OFF_QUEUE",
    "IDLE",
    "INTERACTING",
    "NOT_RESPONDING",
    "COMMUNICATING",
];

/// Normalizes a system presence from any of Genesys's three spellings (`On Queue`, `OnQueue`,
/// `ON_QUEUE`; protocol reference §5) to the notification spelling (`ON_QUEUE`). An unknown value
/// is kept, uppercased, rather than refused (forward compatibility).
///
/// Takes `&str` or `String`; an owned value already in canonical form is returned as is (no
/// copy: this runs once per presence event, `BENCHMARKS.md` figure 2).
pub fn normalize_system_presence(raw: impl AsRef<str> + Into<String>) -> String {
    normalize_enum(raw, &SYSTEM_PRESENCES)
}

/// Normalizes a routing status (`OFF_QUEUE`, or the ingest model's `OffQueue`) to `OFF_QUEUE`
/// form. Unknown values are kept, uppercased. Like [`normalize_system_presence`], an owned
/// canonical value is returned without a copy.
pub fn normalize_routing_status(raw: impl AsRef<str> + Into<String>) -> String {
    normalize_enum(raw, &ROUTING_STATUSES)
}

fn normalize_enum(value: impl AsRef<str> + Into<String>, canonical: &[&str]) -> String {
    // The common case, already canonical, costs one comparison per candidate.
    if canonical.contains(&value.as_ref()) {
        return value.into();
    }
    let raw = value.as_ref();
    let squashed: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    canonical
        .iter()
        // Compared without the underscores, without allocating (this runs once per event).
        .find(|c| c.bytes().filter(|&b| b != b'_').eq(squashed.bytes()))
        .map(|c| (*c).to_string())
        .unwrap_or_else(|| raw.trim().to_ascii_uppercase().replace(' ', "_"))
}

/// One state transition of one agent, as stored in `agent_status`.
///
/// Unique on (`user_id`, `kind`, `event_timestamp`): a duplicate delivery inserts nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub user_id: UserId,
    /// Display name at the time, if known.
    pub user_name: Option<String>,
    pub kind: Kind,
    /// Normalized system presence (`ON_QUEUE`, …) or routing status (`IDLE`, …).
    pub state: String,
    /// The state this one replaced, if known (unknown for the first observation and for events
    /// that arrive out of order).
    pub previous_state: Option<String>,
    /// Org presence label (e.g. `Lunch`) for presence transitions, as of the event.
    pub org_presence: Option<String>,
    /// Org presence definition id for presence transitions (`presenceDefinition.id`).
    pub presence_definition_id: Option<String>,
    /// Genesys's own timestamp (presence `modifiedDate`, routing `startTime`), UTC, milliseconds.
    pub event_timestamp: DateTime<Utc>,
    /// When agent-monitor received it, UTC.
    pub ingested_at: DateTime<Utc>,
    pub source: Source,
}

/// The current state of one agent, as stored in `agents` and served by `GET /api/v1/agents`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentCurrent {
    pub user_id: UserId,
    pub user_name: Option<String>,
    /// Normalized system presence.
    pub presence: Option<String>,
    /// Org presence label.
    pub org_presence: Option<String>,
    pub presence_since: Option<DateTime<Utc>>,
    pub routing_status: Option<String>,
    pub routing_since: Option<DateTime<Utc>>,
    /// Active conversations over all media types (from `conversationsummary`).
    pub active_conversations: u32,
    /// Start of the current idle episode, when idle.
    pub idle_since: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// What an alert message announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// The episode passed its threshold (`repeat` 0) or is still firing at a repeat interval
    /// (`repeat` 1, 2, …).
    Firing { repeat: u32 },
    /// The episode ended after firing; `duration` is its total length.
    Resolved { duration: std::time::Duration },
}

impl AlertKind {
    /// `firing` or `resolved`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Firing { .. } => "firing",
            AlertKind::Resolved { .. } => "resolved",
        }
    }
}

/// One alert message raised by an agent actor for one (rule, agent) episode: a firing, a
/// repeat, or a resolved notice.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Unique per message: `<episode_key>` for the first firing, `<episode_key>:repeat-<n>` for
    /// repeats, `<episode_key>:resolved` for the resolved notice.
    pub alert_key: String,
    /// Unique per episode: `<rule>:<user_id>:<episode start in ms>`.
    pub episode_key: String,
    /// Rule name; `idle` for the built-in rule.
    pub rule: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// Destination name from the rules file; `None` = the default destination.
    pub destination: Option<String>,
    pub kind: AlertKind,
    pub user_id: UserId,
    pub user_name: Option<String>,
    /// What the agent is in, for humans: `routing IDLE` or `presence AVAILABLE (off queue)`.
    pub state: String,
    /// Start of the episode (Genesys timestamp), UTC.
    pub since: DateTime<Utc>,
    /// The threshold that was passed.
    pub threshold: std::time::Duration,
    /// When the alert fired (or resolved), UTC.
    pub fired_at: DateTime<Utc>,
    /// Why it is recorded but not sent (`quiet hours`), if so.
    pub muted: Option<String>,
}

impl Alert {
    /// How long the agent had been in the state when the alert fired.
    pub fn held_for(&self) -> std::time::Duration {
        match self.kind {
            AlertKind::Resolved { duration } => duration,
            AlertKind::Firing { .. } => (self.fired_at - self.since).to_std().unwrap_or_default(),
        }
    }

    /// The key of an episode: `<rule>:<user_id>:<start in ms>`.
    pub fn episode_key(rule: &str, user: &UserId, start: DateTime<Utc>) -> String {
        format!("{rule}:{user}:{}", start.timestamp_millis())
    }

    /// The message key for `kind` within an episode.
    pub fn message_key(episode_key: &str, kind: AlertKind) -> String {
        match kind {
            AlertKind::Firing { repeat: 0 } => episode_key.to_string(),
            AlertKind::Firing { repeat } => format!("{episode_key}:repeat-{repeat}"),
            AlertKind::Resolved { .. } => format!("{episode_key}:resolved"),
        }
    }
}

/// How delivery of an alert ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not attempted yet.
    Pending,
    /// Slack answered 200 `ok`.
    Delivered,
    /// Slack refused it or retries ran out; see the error (and the dead-letter record).
    Failed,
    /// No webhook configured: logged and stored only.
    NotConfigured,
    /// Recorded but deliberately not sent: quiet hours or a silence (see the error column).
    Suppressed,
    /// Not sent because it no longer mattered (its episode resolved before a retry).
    Dropped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::NotConfigured => "not_configured",
            DeliveryStatus::Suppressed => "suppressed",
            DeliveryStatus::Dropped => "dropped",
        }
    }

    /// Parses the stored form.
    pub fn parse(raw: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            DeliveryStatus::NotConfigured,
            DeliveryStatus::Suppressed,
            DeliveryStatus::Dropped,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// A silence: alerts matching it are tracked and recorded but not sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub id: i64,
    /// Only this rule (all rules when `None`).
    pub rule: Option<String>,
    /// Only this agent (all agents when `None`).
    pub user_id: Option<UserId>,
    /// Ends at this instant, UTC.
    pub until: DateTime<Utc>,
    pub comment: String,
    pub created_at: DateTime<Utc>,
}

impl Silence {
    /// Does it silence `alert` at `now`?
    pub fn matches(&self, alert: &Alert, now: DateTime<Utc>) -> bool {
        now < self.until
            && self.rule.as_deref().is_none_or(|r| r == alert.rule)
            && self.user_id.as_ref().is_none_or(|u| *u == alert.user_id)
    }
}

/// A message that could not be delivered for good: kept for operators (never the URL).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub alert_key: String,
    /// Destination name.
    pub destination: String,
    /// Slack's error string or the last transport error.
    pub error: String,
    pub attempts: u32,
    pub first_attempt_at: DateTime<Utc>,
    pub last_attempt_at: DateTime<Utc>,
    /// Hex SHA-256-free fingerprint of the payload (std hasher), to spot identical payloads.
    pub payload_hash: String,
}

/// The outcome of one delivery, reported by the Slack actor to the persistence actor.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertOutcome {
    pub alert_key: String,
    pub status: DeliveryStatus,
    /// Slack's error string or a transport error (never the webhook URL).
    pub error: Option<String>,
    pub attempts: u32,
    pub finished_at: DateTime<Utc>,
}

/// The presence part of an agent's state.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceState {
    /// Normalized system presence.
    pub system: String,
    /// Org presence definition id.
    pub definition_id: Option<String>,
    /// Org presence label.
    pub label: Option<String>,
    pub since: DateTime<Utc>,
}

/// The routing part of an agent's state.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingState {
    /// Normalized routing status.
    pub status: String,
    pub since: DateTime<Utc>,
}

/// An agent's current presence, routing status and active conversations: what the alert rules
/// look at (`crate::rules::AgentView` is built from it). "Idle" itself is defined once, as the
/// built-in rule `crate::rules::RuleSet::builtin_idle` (protocol reference §10).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdleInputs {
    pub presence: Option<PresenceState>,
    pub routing: Option<RoutingState>,
    pub active_conversations: u32,
    /// When the active-conversation count last changed (we have no Genesys timestamp for it).
    pub conversations_changed_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    #[test]
    fn timestamps_accept_every_rfc3339_form_and_refuse_zoneless() {
        let a = ts("2024-05-01T10:15:30.123Z");
        assert_eq!(ts("2024-05-01T10:15:30.123+00:00"), a);
        assert_eq!(ts("2024-05-01T12:15:30.123+02:00"), a);
        assert_eq!(
            format_timestamp(ts("2024-05-01T10:15:30Z")),
            "2024-05-01T10:15:30.000Z"
        );
        assert_eq!(
            format_timestamp(ts("2024-05-01T10:15:30.123456Z")),
            "2024-05-01T10:15:30.123Z"
        );
        assert!(parse_timestamp("2024-05-01T10:15:30.123").is_err());
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn timestamps_in_every_form_genesys_sends_are_the_same_instant() {
        let expected = "2024-05-01T10:15:30.000Z";
        for raw in [
            "2024-05-01T10:15:30Z",
            "2024-05-01T10:15:30.000Z",
            "2024-05-01T10:15:30+00:00",
            "2024-05-01T10:15:30.000+00:00",
            "2024-05-01T12:15:30+02:00",
            "2024-05-01T05:45:30-04:30",
            // Across midnight: the previous day in a zone behind UTC.
            "2024-04-30T22:15:30-12:00",
            // RFC 3339 allows lowercase separators and `-00:00` (UTC, local offset unknown).
            "2024-05-01t10:15:30z",
            "2024-05-01T10:15:30-00:00",
            "  2024-05-01T10:15:30Z ",
        ] {
            assert_eq!(format_timestamp(ts(raw)), expected, "{raw}");
        }
    }

    #[test]
    fn timestamps_keep_milliseconds_and_truncate_the_rest() {
        for (raw, stored) in [
            ("2024-05-01T10:15:30.1Z", "2024-05-01T10:15:30.100Z"),
            ("2024-05-01T10:15:30.123Z", "2024-05-01T10:15:30.123Z"),
            ("2024-05-01T10:15:30.123456Z", "2024-05-01T10:15:30.123Z"),
            ("2024-05-01T10:15:30.123999999Z", "2024-05-01T10:15:30.123Z"),
            ("2024-05-01T23:59:59.9999+00:00", "2024-05-01T23:59:59.999Z"),
            (
                "2024-05-01T12:15:30.123456+02:00",
                "2024-05-01T10:15:30.123Z",
            ),
        ] {
            let t = ts(raw);
            assert_eq!(format_timestamp(t), stored, "{raw}");
            assert_eq!(t.timestamp_subsec_nanos() % 1_000_000, 0, "{raw}");
        }
        // Ordering is by instant, not by string.
        assert!(ts("2024-05-01T12:00:00+02:00") < ts("2024-05-01T10:30:00Z"));
    }

    #[test]
    fn timestamps_without_a_zone_or_a_time_are_malformed() {
        for raw in [
            "2024-05-01T10:15:30",
            "2024-05-01T10:15:30.123",
            "2024-05-01T10:15",
            "2024-05-01",
            "2024-05-01T10:15:30+02",
            "2024-05-01T10:15:30 UTC",
            "1714558530",
            "",
            "   ",
        ] {
            let e = parse_timestamp(raw).expect_err(raw);
            assert!(e.to_string().contains("RFC 3339"), "{raw}: {e}");
        }
    }

    #[test]
    fn system_presence_spellings_normalize() {
        for s in ["On Queue", "OnQueue", "ON_QUEUE", "on_queue"] {
            assert_eq!(normalize_system_presence(s), "ON_QUEUE", "{s}");
        }
        assert_eq!(normalize_system_presence("Available"), "AVAILABLE");
        assert_eq!(normalize_system_presence("Something New"), "SOMETHING_NEW");
        assert_eq!(normalize_routing_status("OffQueue"), "OFF_QUEUE");
        assert_eq!(normalize_routing_status("NOT_RESPONDING"), "NOT_RESPONDING");
    }

    #[test]
    fn user_ids_are_lowercased() {
        assert_eq!(UserId::parse(" ABC-def ").unwrap().as_str(), "abc-def");
        assert_eq!(UserId::parse("abc-def").unwrap().as_str(), "abc-def");
        assert_eq!(UserId::parse("abc-déf").unwrap().as_str(), "abc-déf");
        assert!(UserId::parse("  ").is_err());
    }
}

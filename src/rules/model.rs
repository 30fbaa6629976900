//! Rule definitions (validated) and matching an agent's state against them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{PresenceState, RoutingState, UserId, normalize_system_presence};

use super::quiet::QuietHours;

/// Default `flap_tolerance`: how long a match may be interrupted without ending the episode.
pub const DEFAULT_FLAP_TOLERANCE: Duration = Duration::from_secs(5);

/// Name of the built-in rule ([`super::RuleSet::builtin_idle`]).
pub const BUILTIN_IDLE_RULE: &str = "idle";

/// How loud an alert is. Parsed from `info`, `warning` (the default) or `critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information only.
    Info,
    /// Needs a look (default).
    #[default]
    Warning,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`, as written in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses `info`, `warning` or `critical` (case-insensitive).
    pub fn parse(raw: &str) -> Option<Severity> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// One alert rule, validated. Built by [`super::RuleSet::parse`] or
/// [`super::RuleSet::builtin_idle`]; the fields are public for reading (the caller should not
/// build rules by hand, the parser enforces the invariants documented on each field).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name within the rule set; also the first part of the alert key.
    pub name: String,
    /// What state the agent must be in (one or more alternative condition groups).
    pub matcher: Matcher,
    /// How long the match must hold, measured from the Genesys timestamp at which it became
    /// true, before the episode fires. > 0.
    pub threshold: Duration,
    /// While firing, send the alert again after this long. `None`: fire once. > 0 when set.
    pub repeat_interval: Option<Duration>,
    /// Whether a message is sent when a fired episode resolves (default false). The episode
    /// resolves either way.
    pub send_resolved: bool,
    /// How long a match may be interrupted (e.g. IDLE → INTERACTING → IDLE) without ending
    /// the episode. Default [`DEFAULT_FLAP_TOLERANCE`]; > 0.
    pub flap_tolerance: Duration,
    /// Which agents the rule applies to.
    pub scope: Scope,
    /// Periods during which nothing is sent (episodes are still tracked). Quiet if any of them
    /// is; empty means never quiet.
    pub quiet_hours: Vec<QuietHours>,
    /// How loud the alert is.
    pub severity: Severity,
    /// Name of the destination (configured elsewhere and validated against this name later);
    /// `None` means the default destination.
    pub destination: Option<String>,
    /// 1-based line of the rule's `[[rules]]` header in the rules file; 0 for built-in rules.
    pub line: usize,
}

impl Rule {
    /// Whether the agent matches the rule now: `Some(since)` with the Genesys instant (UTC) at
    /// which the matched condition became true, or `None` if the agent is out of scope or does
    /// not match.
    ///
    /// `since` is the latest of the timestamps the matched condition group depends on: presence
    /// `since` for presence conditions, routing `since` for routing conditions, and
    /// `conversations_changed_at` for the `active_conversation` condition (ignored when
    /// unknown). When several alternative groups match, the earliest of their instants is
    /// returned.
    pub fn evaluate(&self, agent: &AgentView) -> Option<DateTime<Utc>> {
        if !self.scope.contains(agent) {
            return None;
        }
        self.matcher.evaluate(agent)
    }

    /// Whether `at` lies in one of the rule's quiet hours (see [`QuietHours::contains`]).
    pub fn is_quiet(&self, at: DateTime<Utc>) -> bool {
        self.quiet_hours.iter().any(|q| q.contains(at))
    }

    /// The alert key of an episode of this rule: `<rule>:<user id>:<episode start in ms>`, the
    /// same form as [`crate::domain::Alert::alert_key`].
    pub fn alert_key(&self, user: &UserId, episode_start: DateTime<Utc>) -> String {
        format!(
            "{}:{}:{}",
            self.name,
            user,
            episode_start.timestamp_millis()
        )
    }
}

/// What state a rule looks for: the rule matches when ANY of the groups matches (OR); a group
/// matches when ALL of its given conditions hold (AND).
///
/// In the rules file, the conditions of a single group are written directly in `[rules.match]`;
/// alternative groups are written as `[[rules.match.any_of]]` tables. The built-in idle rule is
/// two groups: `routing_status = IDLE`, or `system_presence = AVAILABLE` +
/// `routing_status = OFF_QUEUE` + `active_conversation = false`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    /// At least one group; each has at least one condition.
    pub any_of: Vec<ConditionGroup>,
}

impl Matcher {
    /// See [`Rule::evaluate`] (without the scope check).
    pub fn evaluate(&self, agent: &AgentView) -> Option<DateTime<Utc>> {
        self.any_of.iter().filter_map(|g| g.evaluate(agent)).min()
    }
}

/// Conditions that must all hold. Each list condition holds when the agent's value is one of
/// the listed values. At least one condition is set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConditionGroup {
    /// Routing statuses, normalized (`IDLE`, `OFF_QUEUE`, … ; see
    /// [`crate::domain::ROUTING_STATUSES`]). Empty: no routing condition.
    pub routing_status: Vec<String>,
    /// System presences, normalized (`AVAILABLE`, `ON_QUEUE`, … ; see
    /// [`crate::domain::SYSTEM_PRESENCES`]). Empty: no system presence condition.
    pub system_presence: Vec<String>,
    /// Org presence definition ids (GUIDs, lowercase). Empty: no such condition.
    pub presence_definition_id: Vec<String>,
    /// `Some(true)`: at least one active conversation; `Some(false)`: none; `None`: no
    /// condition.
    pub active_conversation: Option<bool>,
}

impl ConditionGroup {
    /// Whether no condition is set (such a group is refused by the parser).
    pub fn is_empty(&self) -> bool {
        self.routing_status.is_empty()
            && self.system_presence.is_empty()
            && self.presence_definition_id.is_empty()
            && self.active_conversation.is_none()
    }

    /// `Some(since)` when every condition holds, since = the latest timestamp among the
    /// dimensions the conditions depend on.
    pub fn evaluate(&self, agent: &AgentView) -> Option<DateTime<Utc>> {
        if self.is_empty() {
            return None;
        }
        let mut since: Option<DateTime<Utc>> = None;
        let mut depend = |t: DateTime<Utc>| since = Some(since.map_or(t, |s| s.max(t)));

        if !self.routing_status.is_empty() {
            let routing = agent.routing.as_ref()?;
            let status = crate::domain::normalize_routing_status(&routing.status);
            if !self.routing_status.contains(&status) {
                return None;
            }
            depend(routing.since);
        }
        if !self.system_presence.is_empty() || !self.presence_definition_id.is_empty() {
            let presence = agent.presence.as_ref()?;
            if !self.system_presence.is_empty()
                && !self
                    .system_presence
                    .contains(&normalize_system_presence(&presence.system))
            {
                return None;
            }
            if !self.presence_definition_id.is_empty() {
                let id = presence
                    .definition_id
                    .as_deref()?
                    .trim()
                    .to_ascii_lowercase();
                if !self.presence_definition_id.contains(&id) {
                    return None;
                }
            }
            depend(presence.since);
        }
        if let Some(wanted) = self.active_conversation {
            if (agent.active_conversations > 0) != wanted {
                return None;
            }
            if let Some(changed) = agent.conversations_changed_at {
                depend(changed);
            }
        }
        // A group with only `active_conversation` and no known change instant has no
        // timestamp to measure from: it cannot be timed, so it does not match.
        since
    }
}

/// Which agents a rule applies to. Each non-empty list must contain the agent's value (AND
/// across lists); `exclude_user_ids` always wins. All ids are stored lowercase and compared
/// case-insensitively. An empty scope applies to everyone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    /// The agent must be a member of at least one of these queues.
    pub queue_ids: Vec<String>,
    /// The agent's division must be one of these.
    pub division_ids: Vec<String>,
    /// The agent must be one of these users.
    pub user_ids: Vec<String>,
    /// These users are never alerted on by this rule.
    pub exclude_user_ids: Vec<String>,
}

impl Scope {
    /// Whether the rule applies to this agent.
    pub fn contains(&self, agent: &AgentView) -> bool {
        let user = agent.user_id.as_str().to_ascii_lowercase();
        if self.exclude_user_ids.contains(&user) {
            return false;
        }
        if !self.user_ids.is_empty() && !self.user_ids.contains(&user) {
            return false;
        }
        if !self.division_ids.is_empty() {
            let Some(division) = agent.division_id.as_deref() else {
                return false;
            };
            if !self
                .division_ids
                .contains(&division.trim().to_ascii_lowercase())
            {
                return false;
            }
        }
        if !self.queue_ids.is_empty()
            && !agent
                .queue_ids
                .iter()
                .any(|q| self.queue_ids.contains(&q.trim().to_ascii_lowercase()))
        {
            return false;
        }
        true
    }
}

/// What a rule looks at: one agent's current state. Instants are Genesys timestamps, UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    /// The agent.
    pub user_id: UserId,
    /// Presence: normalized system presence, org presence definition id, and since when
    /// (`modifiedDate`). `None` while unknown.
    pub presence: Option<PresenceState>,
    /// Routing status (normalized) and since when (`startTime`). `None` while unknown.
    pub routing: Option<RoutingState>,
    /// Active conversations over all media types.
    pub active_conversations: u32,
    /// When the active-conversation count last changed, if known.
    pub conversations_changed_at: Option<DateTime<Utc>>,
    /// Queues the agent is a member of (GUIDs, any case).
    pub queue_ids: Vec<String>,
    /// The agent's division (GUID, any case), if known.
    pub division_id: Option<String>,
}

impl AgentView {
    /// An agent with nothing known yet but its id.
    pub fn new(user_id: UserId) -> AgentView {
        AgentView {
            user_id,
            presence: None,
            routing: None,
            active_conversations: 0,
            conversations_changed_at: None,
            queue_ids: Vec::new(),
            division_id: None,
        }
    }
}

/// Where a destination's URL comes from: never the rules file itself (the URL is the
/// credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// `url_env = "VAR"`: the environment variable `VAR`.
    Env(String),
    /// `url_file = "/path"`: the file's content, trailing newline ignored.
    File(std::path::PathBuf),
}

/// One `[[destinations]]` table of the rules file, validated but not resolved (the URL is read
/// at start-up by `cli::resolve_destinations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSpec {
    /// Unique name that rules refer to with `destination = "…"`.
    pub name: String,
    /// `slack` or `webhook`.
    pub kind: crate::config::DestinationKind,
    /// Where the URL is.
    pub url: UrlSource,
    /// 1-based line of the table.
    pub line: usize,
}

//! Alert rules engine: rule definitions read from a TOML file and validated, matching an
//! agent's state against a rule, quiet hours, and the per-(rule, agent) episode state machine.
//!
//! Pure code: no actors, no clock, no I/O except [`RuleSet::load`] reading the rules file.
//! The agent actors evaluate rules ([`Rule::evaluate`]) on every state change and feed the
//! result to that (rule, agent)'s [`Episode`]; a timer calls [`Episode::on_tick`] at
//! [`Episode::next_deadline`]. [`AgentEpisodes`] does both for all rules of one agent. The semantics follow `shared/alerting.md` §2–4 (Grafana's
//! Normal → Pending → Firing → Resolved with a pending period and keep-firing-for,
//! Alertmanager's `repeat_interval` / `send_resolved` / time intervals).
//!
//! # The rules file
//! ```toml
//! [[rules]]
//! name = "idle-too-long"            # unique, ignoring case
//! threshold = "10m"                 # humantime, > 0, at most 7 days (MAX_THRESHOLD)
//! repeat_interval = "30m"           # optional: none = fire once; at least 1m (MIN_REPEAT_INTERVAL)
//! send_resolved = true              # default false
//! flap_tolerance = "5s"             # default 5s
//! severity = "warning"              # info | warning (default) | critical
//! destination = "supervisors"       # a destination name, validated elsewhere; default: none
//! [rules.match]                     # every given condition must hold (at least one)
//! routing_status = "IDLE"           # or a list; OFF_QUEUE IDLE INTERACTING NOT_RESPONDING COMMUNICATING
//! # system_presence = ["BREAK"]     # AVAILABLE AWAY BUSY OFFLINE IDLE ON_QUEUE MEAL TRAINING MEETING BREAK
//! # presence_definition_id = "…"    # org presence definition id (GUID), never a label
//! # active_conversation = false     # true: at least one active conversation; false: none
//! [rules.scope]                     # optional; each given list must contain the agent
//! queue_ids = ["…"]                 # (also division_ids, user_ids, exclude_user_ids)
//! [rules.quiet_hours]               # optional; a table or an array of tables
//! time_zone = "Europe/Paris"        # IANA
//! days = ["mon", "tue", "wed", "thu", "fri"]   # optional, default every day
//! windows = ["18:00-08:00"]         # a window belongs to the day it starts on
//! ```
//! Alternatives (OR) are written as `[[rules.match.any_of]]` tables instead of conditions
//! directly in `[rules.match]`; that is how the built-in idle rule is expressed
//! ([`RuleSet::builtin_idle`]). See `deploy/rules.example.toml`.
//!
//! A bare "idle" without its dimension is refused: presence IDLE is a locked screen, routing
//! IDLE is waiting on queue (`shared/genesys-cloud-protocol.md` §10).

#![warn(missing_docs)]

mod episode;
mod model;
mod parse;
mod quiet;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use episode::{AgentEpisodes, Episode, EpisodeAction, EpisodePhase, MatchEnd, RuleAction};
pub use model::{
    AgentView, BUILTIN_IDLE_RULE, ConditionGroup, DEFAULT_FLAP_TOLERANCE, DestinationSpec, Matcher,
    Rule, Scope, Severity, UrlSource,
};
pub use quiet::{Minutes, QuietHours, parse_weekday, parse_window};

/// The shortest `repeat_interval` a rules file may give: 1 minute. A repeat is one more Slack
/// message per firing agent, and a destination takes at most one message a second
/// (`shared/alerting.md` §1, §4.9): with a few hundred agents firing, a repeat every few
/// seconds would outrun delivery for as long as they fire. The recommended repeat for agents
/// is 30-60 minutes (§4.5); a minute is far below any sensible value and still bounds the
/// load. (The Slack actor also coalesces a repeat with a message of its episode still waiting,
/// so the queue cannot grow whatever the interval.)
pub const MIN_REPEAT_INTERVAL: Duration = Duration::from_secs(60);

/// The longest `threshold` a rule may give: 7 days, as for `IDLE_THRESHOLD`
/// (`cli::MAX_IDLE_THRESHOLD`). No agent state worth an alert lasts a week (a shift is hours,
/// and an agent logged on for a week is a state nobody watches by threshold), so a longer one
/// is a typo (`10d` for `10m`) or a unit mistake that would silently never fire.
pub const MAX_THRESHOLD: Duration = Duration::from_secs(7 * 86_400);

/// Bounds a rules file is validated against. Production always uses the default
/// ([`RuleLimits::default`]); tests that need a repeat within seconds lower the bound with
/// [`RuleSet::load_with`]. A rule set keeps its limits, so a reload is checked against the same.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleLimits {
    /// The shortest `repeat_interval` accepted (default [`MIN_REPEAT_INTERVAL`]).
    pub min_repeat_interval: Duration,
}

impl Default for RuleLimits {
    fn default() -> Self {
        RuleLimits {
            min_repeat_interval: MIN_REPEAT_INTERVAL,
        }
    }
}

/// A validated set of alert rules with unique names, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    destinations: Vec<DestinationSpec>,
    limits: RuleLimits,
}

impl RuleSet {
    /// Parses and validates a rules file's text. On error, every problem found is returned
    /// (see [`RulesError::Invalid`]); a TOML syntax error stops validation after the syntax
    /// check (the syntax errors are all listed).
    pub fn parse(text: &str) -> Result<RuleSet, RulesError> {
        RuleSet::parse_with(text, RuleLimits::default())
    }

    /// [`RuleSet::parse`] against other [`RuleLimits`] (tests).
    pub fn parse_with(text: &str, limits: RuleLimits) -> Result<RuleSet, RulesError> {
        parse::parse(text, &limits)
            .map(|(rules, destinations)| RuleSet {
                rules,
                destinations,
                limits,
            })
            .map_err(|problems| RulesError::Invalid { problems })
    }

    /// Reads the file at `path` and parses it with [`RuleSet::parse`].
    pub fn load(path: impl AsRef<Path>) -> Result<RuleSet, RulesError> {
        RuleSet::load_with(path, RuleLimits::default())
    }

    /// [`RuleSet::load`] against other [`RuleLimits`] (tests; a reload reuses the limits of
    /// the rule set in force).
    pub fn load_with(path: impl AsRef<Path>, limits: RuleLimits) -> Result<RuleSet, RulesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        RuleSet::parse_with(&text, limits)
    }

    /// The limits this rule set was validated against.
    pub fn limits(&self) -> RuleLimits {
        self.limits
    }

    /// The rule set used when no rules file is configured: the single rule
    /// [`BUILTIN_IDLE_RULE`] (`idle`), which matches routing status `IDLE` (on queue, waiting),
    /// OR system presence `AVAILABLE` + routing status `OFF_QUEUE` + no active conversation.
    /// Presence `IDLE` (a locked screen) never matches. `threshold` comes from the
    /// configuration (a zero threshold fires as soon as the agent matches); no repeat, no
    /// resolved message, default flap tolerance, severity warning, default destination,
    /// everyone in scope, never quiet.
    pub fn builtin_idle(threshold: Duration) -> RuleSet {
        let on_queue_idle = ConditionGroup {
            routing_status: vec!["IDLE".into()],
            ..Default::default()
        };
        let available_off_queue = ConditionGroup {
            routing_status: vec!["OFF_QUEUE".into()],
            system_presence: vec!["AVAILABLE".into()],
            active_conversation: Some(false),
            ..Default::default()
        };
        RuleSet {
            rules: vec![Rule {
                name: BUILTIN_IDLE_RULE.into(),
                matcher: Matcher {
                    any_of: vec![on_queue_idle, available_off_queue],
                },
                threshold,
                repeat_interval: None,
                send_resolved: false,
                flap_tolerance: DEFAULT_FLAP_TOLERANCE,
                scope: Scope::default(),
                quiet_hours: Vec::new(),
                severity: Severity::Warning,
                destination: None,
                line: 0,
            }],
            destinations: Vec::new(),
            limits: RuleLimits::default(),
        }
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every queue id named in a rule's scope (`[rules.scope] queue_ids`), lowercase, sorted,
    /// without repeats. Empty when no rule is scoped by queue: queue membership is then never
    /// needed.
    pub fn queue_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .rules
            .iter()
            .flat_map(|r| r.scope.queue_ids.iter())
            .map(|q| q.trim().to_ascii_lowercase())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The rule with this name.
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The `[[destinations]]` tables of the file, in file order (URLs not read yet: see
    /// `cli::resolve_destinations`).
    pub fn destination_specs(&self) -> &[DestinationSpec] {
        &self.destinations
    }

    /// The destination names the rules reference (each once, sorted), for validation against
    /// the configured destinations.
    pub fn destinations(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .rules
            .iter()
            .filter_map(|r| r.destination.as_deref())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// Why a rules file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read rules file {}: {source}", path.display())]
    Read {
        /// The path given to [`RuleSet::load`].
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid rules file. Displays as one problem per line,
    /// `line N: rule "x": …`, sorted by line.
    #[error("{}", display_problems(problems))]
    Invalid {
        /// Every problem found, sorted by line (never empty).
        problems: Vec<Problem>,
    },
}

impl RulesError {
    /// The problems of an invalid file; empty for a read error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            RulesError::Invalid { problems } => problems,
            RulesError::Read { .. } => &[],
        }
    }
}

fn display_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem in a rules file: where, in which rule, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file.
    pub line: usize,
    /// The rule it belongs to, if any (a top-level key or a syntax error belongs to none).
    pub rule: Option<RuleLabel>,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

/// How a problem names its rule: by `name`, or by position when the name is missing or not a
/// string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleLabel {
    /// The rule's `name`; displays quoted (`"idle-too-long"`).
    Named(String),
    /// 1-based position among the `[[rules]]`; displays as `#3`.
    Index(usize),
}

impl fmt::Display for RuleLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleLabel::Named(name) => write!(f, "{name:?}"),
            RuleLabel::Index(i) => write!(f, "#{i}"),
        }
    }
}

/// The kinds of problem validation reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    /// The text is not valid TOML.
    #[error("TOML syntax error: {message}")]
    Syntax {
        /// The TOML parser's message.
        message: String,
    },
    /// A key that this place does not define.
    #[error("unknown key `{key}` (expected one of: {expected})")]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The keys allowed here, comma-separated.
        expected: &'static str,
    },
    /// "idle" given without saying whether it is the presence or the routing status.
    #[error(
        "`{key}` = \"idle\" is ambiguous: presence IDLE means the agent's screen is locked \
         (away from the desk), routing IDLE means the agent is on queue waiting for an \
         interaction; write `routing_status = \"IDLE\"` or `system_presence = \"IDLE\"` in \
         [rules.match]"
    )]
    BareIdle {
        /// The key that held "idle".
        key: String,
    },
    /// A value of the wrong TOML type.
    #[error("`{key}` must be {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// What is expected (`a string`, `a boolean`, …).
        expected: &'static str,
        /// The TOML type found.
        found: &'static str,
    },
    /// A required key is missing.
    #[error("missing required key `{key}`")]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// An empty string or list where a value is needed.
    #[error("`{key}` must not be empty")]
    Empty {
        /// The key.
        key: String,
    },
    /// A match (or an `any_of` group) without any condition.
    #[error(
        "no condition: give at least one of routing_status, system_presence, \
         presence_definition_id, active_conversation"
    )]
    NoCondition,
    /// `[rules.match]` has both conditions and `any_of`.
    #[error(
        "`match` mixes conditions with `any_of`: put each alternative in its own \
         [[rules.match.any_of]] table"
    )]
    MatchMixesAnyOf,
    /// Not one of the five routing statuses.
    #[error(
        "unknown routing status {value:?} (expected one of OFF_QUEUE, IDLE, INTERACTING, \
         NOT_RESPONDING, COMMUNICATING){hint}"
    )]
    UnknownRoutingStatus {
        /// The value as written.
        value: String,
        /// Extra advice (may be empty).
        hint: &'static str,
    },
    /// Not one of the ten system presences.
    #[error(
        "unknown system presence {value:?} (expected one of AVAILABLE, AWAY, BUSY, OFFLINE, \
         IDLE, ON_QUEUE, MEAL, TRAINING, MEETING, BREAK; org presences go in \
         presence_definition_id){hint}"
    )]
    UnknownSystemPresence {
        /// The value as written.
        value: String,
        /// Extra advice (may be empty).
        hint: &'static str,
    },
    /// An org presence named by something other than its definition id.
    #[error(
        "presence definition id {value:?} is not a GUID: rules refer to org presences by \
         definition id (e.g. \"6a3af858-942f-489d-9700-5f9bcdcdae9b\"), never by label"
    )]
    NotAPresenceId {
        /// The value as written.
        value: String,
    },
    /// A duration that humantime cannot parse.
    #[error("`{key}` = {value:?} is not a duration like \"90s\" or \"15m\": {reason}")]
    BadDuration {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// humantime's message.
        reason: String,
    },
    /// A zero duration.
    #[error("`{key}` must be longer than zero")]
    ZeroDuration {
        /// The key.
        key: String,
    },
    /// A `threshold` above [`MAX_THRESHOLD`].
    #[error(
        "`threshold` = {value:?} is too long: at most 7 days (no agent state worth an alert \
         lasts a week; this is most likely a typo such as \"10d\" for \"10m\")"
    )]
    ThresholdTooLong {
        /// The value as written.
        value: String,
    },
    /// A `repeat_interval` below [`RuleLimits::min_repeat_interval`].
    #[error(
        "`repeat_interval` = {value:?} is too short: at least {min} (each repeat is one more \
         message per firing agent and a destination takes one a second; 30m-60m suits agents)"
    )]
    RepeatTooShort {
        /// The value as written.
        value: String,
        /// The least accepted, humantime (`1m`).
        min: String,
    },
    /// Not an IANA time zone name.
    #[error("unknown time zone {value:?} (expected an IANA name like \"Europe/Paris\")")]
    BadTimeZone {
        /// The value as written.
        value: String,
    },
    /// Not a day of the week.
    #[error("unknown day {value:?} (expected mon, tue, wed, thu, fri, sat or sun)")]
    BadDay {
        /// The value as written.
        value: String,
    },
    /// A malformed time window.
    #[error("{reason}")]
    BadWindow {
        /// What is wrong, with the value.
        reason: String,
    },
    /// Not a severity.
    #[error("unknown severity {value:?} (expected info, warning or critical)")]
    BadSeverity {
        /// The value as written.
        value: String,
    },
    /// A rule names a destination that is neither `default` nor a `[[destinations]]` table.
    #[error(
        "unknown destination {name:?} (define it in a [[destinations]] table, or use \"default\" for SLACK_WEBHOOK_URL)"
    )]
    UnknownDestination {
        /// The name as written.
        name: String,
    },
    /// Not `slack` or `webhook`.
    #[error("unknown destination type {value:?} (expected slack or webhook)")]
    BadDestinationType {
        /// The value as written.
        value: String,
    },
    /// A `[[destinations]]` table with the URL itself.
    #[error(
        "the URL must not be written in the rules file: it is a credential; use url_env = \"VAR\" or url_file = \"/path\""
    )]
    UrlInFile,
    /// Neither or both of `url_env` and `url_file`.
    #[error("give exactly one of url_env and url_file")]
    UrlSourceCount,
    /// Two destinations with the same name.
    #[error("duplicate destination name {name:?} (first defined on line {first_line})")]
    DuplicateDestination {
        /// The name.
        name: String,
        /// Line of the first destination with that name.
        first_line: usize,
    },
    /// Two rules with the same name, ignoring case.
    #[error(
        "duplicate rule name {name:?} (first defined on line {first_line}; names are compared \
         ignoring case)"
    )]
    DuplicateName {
        /// The name.
        name: String,
        /// Line of the first rule with that name.
        first_line: usize,
    },
    /// The file defines no `[[rules]]` (empty, truncated, or only destinations): accepting it
    /// would turn alerting off without a word.
    #[error(
        "the file defines no rules ([[rules]]): alerting would be off; write at least one rule \
         (see deploy/rules.example.toml), or unset RULES_FILE for the built-in idle rule"
    )]
    NoRules,
}

#[cfg(test)]
mod tests;

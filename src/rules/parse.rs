//! Reading a rules file: walks the spanned TOML tree by hand (not serde) so that every
//! problem is collected, each with its line, instead of stopping at the first.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use chrono_tz::Tz;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::domain::{
    ROUTING_STATUSES, SYSTEM_PRESENCES, normalize_routing_status, normalize_system_presence,
};

use super::model::{
    ConditionGroup, DEFAULT_FLAP_TOLERANCE, DestinationSpec, Matcher, Rule, Scope, Severity,
    UrlSource,
};
use super::quiet::{QuietHours, parse_weekday, parse_window};
use super::{Problem, ProblemKind, RuleLabel, RuleLimits};
use crate::config::{DEFAULT_DESTINATION, DestinationKind};

type Value<'a> = Spanned<DeValue<'a>>;

const TOP_KEYS: &str = "rules, destinations";
const DESTINATION_KEYS: &str = "name, type, url_env, url_file";
const RULE_KEYS: &str = "name, match, threshold, repeat_interval, send_resolved, \
                         flap_tolerance, scope, quiet_hours, severity, destination";
const MATCH_KEYS: &str =
    "routing_status, system_presence, presence_definition_id, active_conversation, any_of";
const GROUP_KEYS: &str =
    "routing_status, system_presence, presence_definition_id, active_conversation";
const SCOPE_KEYS: &str = "queue_ids, division_ids, user_ids, exclude_user_ids";
const QUIET_KEYS: &str = "time_zone, days, windows";

/// Parses and validates; `Err` holds every problem, sorted by line.
pub(super) fn parse(
    text: &str,
    limits: &RuleLimits,
) -> Result<(Vec<Rule>, Vec<DestinationSpec>), Vec<Problem>> {
    let mut cx = Cx {
        lines: LineIndex::new(text),
        problems: Vec::new(),
        rule: None,
        limits: *limits,
    };
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            let line = e.span().map_or(1, |s| cx.lines.line(s.start));
            cx.problems.push(Problem {
                line,
                rule: None,
                kind: ProblemKind::Syntax {
                    message: e.message().trim().to_string(),
                },
            });
        }
        return Err(cx.finish());
    }

    let mut rules = Vec::new();
    // Every rule's name and line, valid or not: a duplicate name is reported even when one of
    // the rules has other problems too.
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut rules_declared = 0usize;
    let mut destinations: Vec<DestinationSpec> = Vec::new();
    // Destination references of rules (name, line of the value), checked once all are read.
    let mut references: Vec<(String, usize)> = Vec::new();
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "rules" => {
                let Some(items) = cx.array(value, "rules", "an array of [[rules]] tables") else {
                    continue;
                };
                rules_declared += items.len();
                for (i, item) in items.iter().enumerate() {
                    if let Some(name) = item
                        .get_ref()
                        .as_table()
                        .and_then(|t| t.get("name"))
                        .and_then(|n| n.get_ref().as_str())
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                    {
                        names.push((name.to_string(), cx.lines.line(item.span().start)));
                    }
                    if let Some((name, line)) = item
                        .get_ref()
                        .as_table()
                        .and_then(|t| t.get("destination"))
                        .and_then(|d| Some((d.get_ref().as_str()?, d.span())))
                    {
                        references.push((name.trim().to_string(), cx.lines.line(line.start)));
                    }
                    if let Some(rule) = cx.rule(i + 1, item) {
                        rules.push(rule);
                    }
                }
            }
            "destinations" => {
                let Some(items) =
                    cx.array(value, "destinations", "an array of [[destinations]] tables")
                else {
                    continue;
                };
                for item in items {
                    if let Some(d) = cx.destination(item) {
                        match destinations.iter().find(|o| o.name == d.name) {
                            Some(first) => {
                                let first_line = first.line;
                                cx.report(
                                    item.span(),
                                    ProblemKind::DuplicateDestination {
                                        name: d.name.clone(),
                                        first_line,
                                    },
                                );
                            }
                            None => destinations.push(d),
                        }
                    }
                }
            }
            other => cx.unknown_key(key, other, value, TOP_KEYS),
        }
    }

    // Names are compared ignoring case: `Idle` and `idle` would be two rules that operators,
    // silences (`rule=`) and Slack messages could not tell apart.
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut duplicates = Vec::new();
    for (name, line) in &names {
        match first_line.get(&name.to_lowercase()) {
            Some(&first) => duplicates.push(Problem {
                line: *line,
                rule: Some(RuleLabel::Named(name.clone())),
                kind: ProblemKind::DuplicateName {
                    name: name.clone(),
                    first_line: first,
                },
            }),
            None => {
                first_line.insert(name.to_lowercase(), *line);
            }
        }
    }
    cx.problems.extend(duplicates);

    // An empty (or truncated) file would silently turn alerting off.
    if rules_declared == 0 {
        cx.problems.push(Problem {
            line: 1,
            rule: None,
            kind: ProblemKind::NoRules,
        });
    }

    // A destination that failed validation was reported already; don't add "unknown" to it.
    let declared: Vec<String> = doc
        .get_ref()
        .get("destinations")
        .and_then(|d| d.get_ref().as_array())
        .into_iter()
        .flatten()
        .filter_map(|d| d.get_ref().as_table()?.get("name")?.get_ref().as_str())
        .map(|n| n.trim().to_string())
        .collect();
    for (name, line) in references {
        if !name.is_empty() && name != DEFAULT_DESTINATION && !declared.contains(&name) {
            cx.problems.push(Problem {
                line,
                rule: None,
                kind: ProblemKind::UnknownDestination { name },
            });
        }
    }

    if cx.problems.is_empty() {
        Ok((rules, destinations))
    } else {
        Err(cx.finish())
    }
}

/// Byte offset → 1-based line.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

/// Validation context: collects problems, labelled with the rule being read.
struct Cx {
    lines: LineIndex,
    problems: Vec<Problem>,
    rule: Option<RuleLabel>,
    limits: RuleLimits,
}

impl Cx {
    fn finish(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|p| p.line);
        self.problems
    }

    fn report(&mut self, span: Range<usize>, kind: ProblemKind) {
        self.problems.push(Problem {
            line: self.lines.line(span.start),
            rule: self.rule.clone(),
            kind,
        });
    }

    fn unknown_key(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        name: &str,
        value: &Value<'_>,
        expected: &'static str,
    ) {
        let kind = if mentions_bare_idle(value.get_ref()) {
            ProblemKind::BareIdle { key: name.into() }
        } else {
            ProblemKind::UnknownKey {
                key: name.into(),
                expected,
            }
        };
        self.report(key.span(), kind);
    }

    fn wrong_type(&mut self, value: &Value<'_>, key: &str, expected: &'static str) {
        self.report(
            value.span(),
            ProblemKind::WrongType {
                key: key.into(),
                expected,
                found: value.get_ref().type_str(),
            },
        );
    }

    fn table<'v, 'a>(
        &mut self,
        value: &'v Value<'a>,
        key: &str,
        expected: &'static str,
    ) -> Option<&'v DeTable<'a>> {
        let table = value.get_ref().as_table();
        if table.is_none() {
            self.wrong_type(value, key, expected);
        }
        table
    }

    fn array<'v, 'a>(
        &mut self,
        value: &'v Value<'a>,
        key: &str,
        expected: &'static str,
    ) -> Option<&'v [Value<'a>]> {
        let array = value.get_ref().as_array().map(|a| &a[..]);
        if array.is_none() {
            self.wrong_type(value, key, expected);
        }
        array
    }

    /// A non-empty string, trimmed.
    fn string(&mut self, value: &Value<'_>, key: &str) -> Option<String> {
        let Some(s) = value.get_ref().as_str() else {
            self.wrong_type(value, key, "a string");
            return None;
        };
        let s = s.trim();
        if s.is_empty() {
            self.report(value.span(), ProblemKind::Empty { key: key.into() });
            return None;
        }
        Some(s.to_string())
    }

    fn bool(&mut self, value: &Value<'_>, key: &str) -> Option<bool> {
        let b = value.get_ref().as_bool();
        if b.is_none() {
            self.wrong_type(value, key, "a boolean (true or false)");
        }
        b
    }

    /// A string or an array of strings, each non-empty; with their spans. An empty array is
    /// a problem unless `allow_empty`.
    fn strings(
        &mut self,
        value: &Value<'_>,
        key: &str,
        allow_empty: bool,
    ) -> Vec<(String, Range<usize>)> {
        const EXPECTED: &str = "a string or an array of strings";
        let items: Vec<&Value<'_>> = match value.get_ref() {
            DeValue::String(_) => vec![value],
            DeValue::Array(a) => a.iter().collect(),
            _ => {
                self.wrong_type(value, key, EXPECTED);
                return Vec::new();
            }
        };
        if items.is_empty() && !allow_empty {
            self.report(value.span(), ProblemKind::Empty { key: key.into() });
        }
        let mut out = Vec::new();
        for item in items {
            if !item.get_ref().is_str() {
                self.wrong_type(item, key, EXPECTED);
            } else if let Some(s) = self.string(item, key) {
                out.push((s, item.span()));
            }
        }
        out
    }

    /// A humantime duration, > 0.
    fn duration(&mut self, value: &Value<'_>, key: &str) -> Option<Duration> {
        let raw = self.string(value, key)?;
        match humantime::parse_duration(&raw) {
            Ok(d) if d.is_zero() => {
                self.report(value.span(), ProblemKind::ZeroDuration { key: key.into() });
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                let reason = crate::config::explain_bad_duration(&raw, &e);
                self.report(
                    value.span(),
                    ProblemKind::BadDuration {
                        key: key.into(),
                        value: raw,
                        reason,
                    },
                );
                None
            }
        }
    }

    /// One `[[destinations]]` entry; `None` if it has problems (already reported).
    fn destination(&mut self, value: &Value<'_>) -> Option<DestinationSpec> {
        let before = self.problems.len();
        let table = self.table(value, "destinations", "a table ([[destinations]])")?;
        let mut name = None;
        let mut kind = None;
        let mut sources = Vec::new();
        for (key, v) in table.iter() {
            let k = key.get_ref().as_ref();
            match k {
                "name" => name = self.string(v, k),
                "type" => {
                    if let Some(raw) = self.string(v, k) {
                        match DestinationKind::parse(&raw) {
                            Some(t) => kind = Some(t),
                            None => self
                                .report(v.span(), ProblemKind::BadDestinationType { value: raw }),
                        }
                    }
                }
                "url_env" => {
                    if let Some(var) = self.string(v, k) {
                        sources.push(UrlSource::Env(var));
                    }
                }
                "url_file" => {
                    if let Some(path) = self.string(v, k) {
                        sources.push(UrlSource::File(path.into()));
                    }
                }
                "url" | "webhook_url" | "api_url" => {
                    self.report(key.span(), ProblemKind::UrlInFile)
                }
                _ => self.unknown_key(key, k, v, DESTINATION_KEYS),
            }
        }
        if !table.contains_key("name") {
            self.report(value.span(), ProblemKind::Missing { key: "name" });
        }
        if !table.contains_key("type") {
            self.report(value.span(), ProblemKind::Missing { key: "type" });
        }
        let given = ["url_env", "url_file"]
            .iter()
            .filter(|k| table.contains_key(**k))
            .count();
        if given != 1 {
            self.report(value.span(), ProblemKind::UrlSourceCount);
        }
        if self.problems.len() != before {
            return None;
        }
        Some(DestinationSpec {
            name: name?,
            kind: kind?,
            url: sources.pop()?,
            line: self.lines.line(value.span().start),
        })
    }

    /// One `[[rules]]` entry; `None` if it has problems (already reported).
    fn rule(&mut self, index: usize, value: &Value<'_>) -> Option<Rule> {
        let before = self.problems.len();
        let table = value.get_ref().as_table();
        self.rule = Some(
            table
                .and_then(|t| t.get("name"))
                .and_then(|n| n.get_ref().as_str())
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map_or(RuleLabel::Index(index), |n| RuleLabel::Named(n.to_string())),
        );
        let Some(table) = self.table(value, "rules", "a table ([[rules]])") else {
            self.rule = None;
            return None;
        };
        let line = self.lines.line(value.span().start);

        let mut name = None;
        let mut matcher = None;
        let mut threshold = None;
        let mut repeat_interval = None;
        let mut send_resolved = false;
        let mut flap_tolerance = DEFAULT_FLAP_TOLERANCE;
        let mut scope = Scope::default();
        let mut quiet_hours = Vec::new();
        let mut severity = Severity::default();
        let mut destination = None;
        let mut match_seen = false;
        let mut threshold_seen = false;

        for (key, v) in table.iter() {
            let k = key.get_ref().as_ref();
            match k {
                "name" => name = self.string(v, k),
                "match" => {
                    match_seen = true;
                    matcher = self.matcher(v);
                }
                "threshold" => {
                    threshold_seen = true;
                    threshold = self.duration(v, k);
                    if threshold.is_some_and(|d| d > super::MAX_THRESHOLD) {
                        let value = self.string(v, k).unwrap_or_default();
                        self.report(v.span(), ProblemKind::ThresholdTooLong { value });
                        threshold = None;
                    }
                }
                "repeat_interval" => {
                    repeat_interval = self.duration(v, k);
                    let min = self.limits.min_repeat_interval;
                    if repeat_interval.is_some_and(|d| d < min) {
                        let value = self.string(v, k).unwrap_or_default();
                        self.report(
                            v.span(),
                            ProblemKind::RepeatTooShort {
                                value,
                                min: humantime::format_duration(min).to_string(),
                            },
                        );
                        repeat_interval = None;
                    }
                }
                "send_resolved" => send_resolved = self.bool(v, k).unwrap_or_default(),
                "flap_tolerance" => {
                    flap_tolerance = self.duration(v, k).unwrap_or(DEFAULT_FLAP_TOLERANCE)
                }
                "scope" => scope = self.scope(v).unwrap_or_default(),
                "quiet_hours" => quiet_hours = self.quiet_hours(v),
                "severity" => {
                    if let Some(s) = self.string(v, k) {
                        match Severity::parse(&s) {
                            Some(s) => severity = s,
                            None => self.report(v.span(), ProblemKind::BadSeverity { value: s }),
                        }
                    }
                }
                "destination" => destination = self.string(v, k),
                _ => self.unknown_key(key, k, v, RULE_KEYS),
            }
        }
        let rule_span = value.span();
        if !table.contains_key("name") {
            self.report(rule_span.clone(), ProblemKind::Missing { key: "name" });
        }
        if !match_seen {
            self.report(rule_span.clone(), ProblemKind::Missing { key: "match" });
        }
        if !threshold_seen {
            self.report(rule_span, ProblemKind::Missing { key: "threshold" });
        }
        self.rule = None;

        if self.problems.len() != before {
            return None;
        }
        Some(Rule {
            name: name?,
            matcher: matcher?,
            threshold: threshold?,
            repeat_interval,
            send_resolved,
            flap_tolerance,
            scope,
            quiet_hours,
            severity,
            destination,
            line,
        })
    }

    fn matcher(&mut self, value: &Value<'_>) -> Option<Matcher> {
        if mentions_bare_idle(value.get_ref()) {
            self.report(
                value.span(),
                ProblemKind::BareIdle {
                    key: "match".into(),
                },
            );
            return None;
        }
        let table = self.table(value, "match", "a table ([rules.match])")?;
        let Some((any_of_key, any_of)) = table.get_key_value("any_of") else {
            return self
                .group(value, table, "match")
                .map(|g| Matcher { any_of: vec![g] });
        };
        if table.len() > 1 {
            self.report(any_of_key.span(), ProblemKind::MatchMixesAnyOf);
        }
        let items = self.array(
            any_of,
            "any_of",
            "an array of [[rules.match.any_of]] tables",
        )?;
        if items.is_empty() {
            self.report(
                any_of.span(),
                ProblemKind::Empty {
                    key: "any_of".into(),
                },
            );
            return None;
        }
        let mut groups = Vec::new();
        for item in items {
            if let Some(t) = self.table(item, "any_of", "a table ([[rules.match.any_of]])") {
                groups.push(self.group(item, t, "any_of"));
            }
        }
        groups
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|any_of| Matcher { any_of })
    }

    /// One condition group: `[rules.match]` itself or one `[[rules.match.any_of]]`.
    fn group(
        &mut self,
        value: &Value<'_>,
        table: &DeTable<'_>,
        place: &str,
    ) -> Option<ConditionGroup> {
        let before = self.problems.len();
        let mut g = ConditionGroup::default();
        for (key, v) in table.iter() {
            let k = key.get_ref().as_ref();
            match k {
                "routing_status" => {
                    for (raw, span) in self.strings(v, k, false) {
                        let status = normalize_routing_status(&raw);
                        if ROUTING_STATUSES.contains(&status.as_str()) {
                            g.routing_status.push(status);
                        } else {
                            let hint = if SYSTEM_PRESENCES
                                .contains(&normalize_system_presence(&raw).as_str())
                            {
                                "; it is a system presence: use system_presence"
                            } else {
                                ""
                            };
                            self.report(
                                span,
                                ProblemKind::UnknownRoutingStatus { value: raw, hint },
                            );
                        }
                    }
                }
                "system_presence" => {
                    for (raw, span) in self.strings(v, k, false) {
                        let presence = normalize_system_presence(&raw);
                        if SYSTEM_PRESENCES.contains(&presence.as_str()) {
                            g.system_presence.push(presence);
                        } else {
                            let hint = if ROUTING_STATUSES
                                .contains(&normalize_routing_status(&raw).as_str())
                            {
                                "; it is a routing status: use routing_status"
                            } else if is_guid(&raw) {
                                "; it looks like an org presence id: use presence_definition_id"
                            } else {
                                ""
                            };
                            self.report(
                                span,
                                ProblemKind::UnknownSystemPresence { value: raw, hint },
                            );
                        }
                    }
                }
                "presence_definition_id" => {
                    for (raw, span) in self.strings(v, k, false) {
                        if is_guid(&raw) {
                            g.presence_definition_id.push(raw.to_ascii_lowercase());
                        } else {
                            self.report(span, ProblemKind::NotAPresenceId { value: raw });
                        }
                    }
                }
                "active_conversation" => g.active_conversation = self.bool(v, k),
                "any_of" if place == "match" => {}
                _ => {
                    let expected = if place == "match" {
                        MATCH_KEYS
                    } else {
                        GROUP_KEYS
                    };
                    self.unknown_key(key, k, v, expected);
                }
            }
        }
        if self.problems.len() != before {
            return None;
        }
        if g.is_empty() {
            self.report(value.span(), ProblemKind::NoCondition);
            return None;
        }
        Some(g)
    }

    fn scope(&mut self, value: &Value<'_>) -> Option<Scope> {
        let table = self.table(value, "scope", "a table ([rules.scope])")?;
        let mut scope = Scope::default();
        for (key, v) in table.iter() {
            let k = key.get_ref().as_ref();
            let target = match k {
                "queue_ids" => &mut scope.queue_ids,
                "division_ids" => &mut scope.division_ids,
                "user_ids" => &mut scope.user_ids,
                "exclude_user_ids" => &mut scope.exclude_user_ids,
                _ => {
                    self.unknown_key(key, k, v, SCOPE_KEYS);
                    continue;
                }
            };
            let ids = self.strings(v, k, true);
            target.extend(ids.into_iter().map(|(id, _)| id.to_ascii_lowercase()));
        }
        Some(scope)
    }

    /// A `[rules.quiet_hours]` table or an array of them.
    fn quiet_hours(&mut self, value: &Value<'_>) -> Vec<QuietHours> {
        match value.get_ref() {
            DeValue::Table(t) => self.quiet_block(value, t).into_iter().collect(),
            DeValue::Array(items) => items
                .iter()
                .filter_map(|item| {
                    let t = self.table(item, "quiet_hours", "a table")?;
                    self.quiet_block(item, t)
                })
                .collect(),
            _ => {
                self.wrong_type(value, "quiet_hours", "a table or an array of tables");
                Vec::new()
            }
        }
    }

    fn quiet_block(&mut self, value: &Value<'_>, table: &DeTable<'_>) -> Option<QuietHours> {
        let before = self.problems.len();
        let mut time_zone = None;
        let mut days = None;
        let mut windows = None;
        for (key, v) in table.iter() {
            let k = key.get_ref().as_ref();
            match k {
                "time_zone" => {
                    if let Some(raw) = self.string(v, k) {
                        match raw.parse::<Tz>() {
                            Ok(tz) => time_zone = Some(tz),
                            Err(_) => {
                                self.report(v.span(), ProblemKind::BadTimeZone { value: raw })
                            }
                        }
                    }
                }
                "days" => {
                    let mut parsed = Vec::new();
                    for (raw, span) in self.strings(v, k, false) {
                        match parse_weekday(&raw) {
                            Some(d) if !parsed.contains(&d) => parsed.push(d),
                            Some(_) => {}
                            None => self.report(span, ProblemKind::BadDay { value: raw }),
                        }
                    }
                    days = Some(parsed);
                }
                "windows" => {
                    let mut parsed = Vec::new();
                    for (raw, span) in self.strings(v, k, false) {
                        match parse_window(&raw) {
                            Ok(w) => parsed.push(w),
                            Err(reason) => self.report(span, ProblemKind::BadWindow { reason }),
                        }
                    }
                    windows = Some(parsed);
                }
                _ => self.unknown_key(key, k, v, QUIET_KEYS),
            }
        }
        if !table.contains_key("time_zone") {
            self.report(value.span(), ProblemKind::Missing { key: "time_zone" });
        }
        if !table.contains_key("windows") {
            self.report(value.span(), ProblemKind::Missing { key: "windows" });
        }
        if self.problems.len() != before {
            return None;
        }
        Some(QuietHours {
            time_zone: time_zone?,
            days: days.unwrap_or_else(|| {
                use chrono::Weekday::*;
                vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun]
            }),
            windows: windows?,
        })
    }
}

/// Whether a value is the bare word "idle" (or a list containing it).
fn mentions_bare_idle(value: &DeValue<'_>) -> bool {
    match value {
        DeValue::String(s) => s.trim().eq_ignore_ascii_case("idle"),
        DeValue::Array(a) => a.iter().any(|v| mentions_bare_idle(v.get_ref())),
        _ => false,
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits, any case.
fn is_guid(raw: &str) -> bool {
    let parts: Vec<&str> = raw.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

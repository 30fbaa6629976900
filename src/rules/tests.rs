//! Unit tests of the rules engine: validation, matching, quiet hours and episodes.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::domain::{PresenceState, RoutingState, UserId, parse_timestamp};

fn ts(s: &str) -> DateTime<Utc> {
    parse_timestamp(s).unwrap()
}

fn problems(text: &str) -> Vec<Problem> {
    match RuleSet::parse(text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// Parses one rule (the text after `[[rules]]`, name "r").
fn rule(body: &str) -> Rule {
    let text = format!(
        "[[rules]]\nname = \"r\"\n{body}\n[[destinations]]\nname = \"team-a\"\ntype = \"slack\"\nurl_env = \"TEAM_A\"\n"
    );
    match RuleSet::parse(&text) {
        Ok(set) => set.rules()[0].clone(),
        Err(e) => panic!("{e}\nin:\n{text}"),
    }
}

// ---------------------------------------------------------------- validation

#[test]
fn example_file_is_valid() {
    let set = RuleSet::parse(include_str!("../../deploy/rules.example.toml")).unwrap();
    let names: Vec<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "idle-too-long",
            "not-responding",
            "long-break",
            "long-lunch"
        ]
    );
    let idle = set.get("idle-too-long").unwrap();
    assert_eq!(idle.threshold, Duration::from_secs(600));
    assert_eq!(idle.repeat_interval, Some(Duration::from_secs(1800)));
    assert!(idle.send_resolved);
    assert_eq!(idle.flap_tolerance, DEFAULT_FLAP_TOLERANCE);
    assert_eq!(idle.matcher.any_of[0].routing_status, ["IDLE"]);
    assert_eq!(idle.quiet_hours.len(), 2);
    assert_eq!(
        set.get("not-responding").unwrap().severity,
        Severity::Critical
    );
    assert_eq!(
        set.get("long-lunch").unwrap().matcher.any_of[0].presence_definition_id,
        ["3fd2a1b0-5c7e-4d8a-9b61-2e4f0a7c9d13"]
    );
    assert_eq!(set.destinations(), ["supervisors"]);
    // Sunday 2026-05-03 is quiet for the idle rule (whole weekend), Monday noon is not.
    assert!(idle.is_quiet(ts("2026-05-03T12:00:00Z")));
    assert!(!idle.is_quiet(ts("2026-05-04T10:00:00Z")));
}

#[test]
fn full_rule_parses_with_every_field() {
    let r = rule(
        r#"threshold = "90s"
repeat_interval = "1h"
send_resolved = true
flap_tolerance = "10s"
severity = "Critical"
destination = "team-a"
[rules.match]
routing_status = ["OffQueue", "not_responding"]
system_presence = ["On Queue", "Available"]
presence_definition_id = "6A3AF858-942F-489D-9700-5F9BCDCDAE9B"
active_conversation = true
[rules.scope]
queue_ids = ["Q1"]
division_ids = "D1"
user_ids = []
exclude_user_ids = ["U2"]
[rules.quiet_hours]
time_zone = "America/New_York"
windows = ["22:00-06:00", "12:00-13:00"]
"#,
    );
    assert_eq!(r.line, 1);
    assert_eq!(r.threshold, Duration::from_secs(90));
    assert_eq!(r.flap_tolerance, Duration::from_secs(10));
    assert_eq!(r.severity, Severity::Critical);
    assert_eq!(r.destination.as_deref(), Some("team-a"));
    let g = &r.matcher.any_of[0];
    assert_eq!(g.routing_status, ["OFF_QUEUE", "NOT_RESPONDING"]);
    assert_eq!(g.system_presence, ["ON_QUEUE", "AVAILABLE"]);
    assert_eq!(
        g.presence_definition_id,
        ["6a3af858-942f-489d-9700-5f9bcdcdae9b"]
    );
    assert_eq!(g.active_conversation, Some(true));
    assert_eq!(r.scope.queue_ids, ["q1"]);
    assert_eq!(r.scope.division_ids, ["d1"]);
    assert!(r.scope.user_ids.is_empty());
    assert_eq!(r.scope.exclude_user_ids, ["u2"]);
    assert_eq!(r.quiet_hours[0].days.len(), 7);
    assert_eq!(r.quiet_hours[0].windows, [(1320, 360), (720, 780)]);
}

#[test]
fn defaults_apply() {
    let r = rule("threshold = \"1m\"\nmatch = { routing_status = \"IDLE\" }\n");
    assert_eq!(r.repeat_interval, None);
    assert!(!r.send_resolved);
    assert_eq!(r.flap_tolerance, Duration::from_secs(5));
    assert_eq!(r.severity, Severity::Warning);
    assert_eq!(r.destination, None);
    assert_eq!(r.scope, Scope::default());
    assert!(r.quiet_hours.is_empty());
}

#[test]
fn any_of_groups_parse() {
    let r = rule(
        r#"threshold = "1m"
[[rules.match.any_of]]
routing_status = "IDLE"
[[rules.match.any_of]]
system_presence = "AVAILABLE"
routing_status = "OFF_QUEUE"
active_conversation = false
"#,
    );
    let builtin = RuleSet::builtin_idle(Duration::from_secs(60));
    assert_eq!(r.matcher, builtin.rules()[0].matcher);
}

/// Every kind of problem, each on a known line. The rule header is line 1 and
/// `name = "r"` line 2, so the body starts on line 3.
#[test]
fn every_problem_kind_is_reported_with_its_line() {
    type Check = fn(&ProblemKind) -> bool;
    let base = "threshold = \"1m\"\n";
    let m = "[rules.match]\nrouting_status = \"IDLE\"\n";
    let cases: Vec<(&str, String, usize, Check)> = vec![
        (
            "unknown rule key",
            format!("{base}colour = \"red\"\n{m}"),
            4,
            |k| matches!(k, ProblemKind::UnknownKey { key, .. } if key == "colour"),
        ),
        (
            "unknown match key",
            format!("{base}[rules.match]\nrouting_status = \"IDLE\"\nqueue = \"x\"\n"),
            6,
            |k| matches!(k, ProblemKind::UnknownKey { key, .. } if key == "queue"),
        ),
        (
            "unknown scope key",
            format!("{base}{m}[rules.scope]\nteams = [\"t\"]\n"),
            7,
            |k| matches!(k, ProblemKind::UnknownKey { key, .. } if key == "teams"),
        ),
        (
            "unknown quiet hours key",
            format!(
                "{base}{m}[rules.quiet_hours]\ntime_zone = \"UTC\"\nwindows = [\"01:00-02:00\"]\nmonths = [1]\n"
            ),
            9,
            |k| matches!(k, ProblemKind::UnknownKey { key, .. } if key == "months"),
        ),
        (
            "wrong type",
            format!("{base}send_resolved = \"yes\"\n{m}"),
            4,
            |k| {
                matches!(k, ProblemKind::WrongType { key, found, .. }
                    if key == "send_resolved" && *found == "string")
            },
        ),
        ("missing threshold", m.to_string(), 1, |k| {
            matches!(k, ProblemKind::Missing { key: "threshold" })
        }),
        ("missing match", base.to_string(), 1, |k| {
            matches!(k, ProblemKind::Missing { key: "match" })
        }),
        (
            "empty list",
            format!("{base}[rules.match]\nrouting_status = []\n"),
            5,
            |k| matches!(k, ProblemKind::Empty { key } if key == "routing_status"),
        ),
        (
            "empty destination",
            format!("{base}destination = \" \"\n{m}"),
            4,
            |k| matches!(k, ProblemKind::Empty { key } if key == "destination"),
        ),
        ("no condition", format!("{base}[rules.match]\n"), 4, |k| {
            matches!(k, ProblemKind::NoCondition)
        }),
        (
            "empty any_of group",
            format!(
                "{base}[[rules.match.any_of]]\nrouting_status = \"IDLE\"\n[[rules.match.any_of]]\n"
            ),
            6,
            |k| matches!(k, ProblemKind::NoCondition),
        ),
        (
            "match mixes any_of",
            format!(
                "{base}[rules.match]\nrouting_status = \"IDLE\"\nany_of = [{{ system_presence = \"BREAK\" }}]\n"
            ),
            6,
            |k| matches!(k, ProblemKind::MatchMixesAnyOf),
        ),
        (
            "unknown routing status",
            format!("{base}[rules.match]\nrouting_status = [\"IDLE\", \"WRAPUP\"]\n"),
            5,
            |k| matches!(k, ProblemKind::UnknownRoutingStatus { value, hint: "" } if value == "WRAPUP"),
        ),
        (
            "system presence given as routing status",
            format!("{base}[rules.match]\nrouting_status = \"Available\"\n"),
            5,
            |k| matches!(k, ProblemKind::UnknownRoutingStatus { hint, .. } if hint.contains("system_presence")),
        ),
        (
            "unknown system presence",
            format!("{base}[rules.match]\nsystem_presence = \"Lunch\"\n"),
            5,
            |k| matches!(k, ProblemKind::UnknownSystemPresence { value, .. } if value == "Lunch"),
        ),
        (
            "routing status given as system presence",
            format!("{base}[rules.match]\nsystem_presence = \"NOT_RESPONDING\"\n"),
            5,
            |k| matches!(k, ProblemKind::UnknownSystemPresence { hint, .. } if hint.contains("routing_status")),
        ),
        (
            "org presence by label",
            format!("{base}[rules.match]\npresence_definition_id = \"Lunch\"\n"),
            5,
            |k| matches!(k, ProblemKind::NotAPresenceId { value } if value == "Lunch"),
        ),
        (
            "bad duration",
            format!("threshold = \"ten minutes\"\n{m}"),
            3,
            |k| matches!(k, ProblemKind::BadDuration { key, .. } if key == "threshold"),
        ),
        (
            "duration not a string",
            format!("threshold = 600\n{m}"),
            3,
            |k| matches!(k, ProblemKind::WrongType { key, .. } if key == "threshold"),
        ),
        (
            "zero duration",
            format!("{base}repeat_interval = \"0s\"\n{m}"),
            4,
            |k| matches!(k, ProblemKind::ZeroDuration { key } if key == "repeat_interval"),
        ),
        (
            "zero flap tolerance",
            format!("{base}flap_tolerance = \"0ms\"\n{m}"),
            4,
            |k| matches!(k, ProblemKind::ZeroDuration { key } if key == "flap_tolerance"),
        ),
        (
            "bad time zone",
            format!(
                "{base}{m}[rules.quiet_hours]\ntime_zone = \"Europe/Pariss\"\nwindows = [\"01:00-02:00\"]\n"
            ),
            7,
            |k| matches!(k, ProblemKind::BadTimeZone { value } if value == "Europe/Pariss"),
        ),
        (
            "missing time zone",
            format!("{base}{m}[rules.quiet_hours]\nwindows = [\"01:00-02:00\"]\n"),
            6,
            |k| matches!(k, ProblemKind::Missing { key: "time_zone" }),
        ),
        (
            "missing windows",
            format!("{base}{m}[rules.quiet_hours]\ntime_zone = \"UTC\"\n"),
            6,
            |k| matches!(k, ProblemKind::Missing { key: "windows" }),
        ),
        (
            "bad day",
            format!(
                "{base}{m}[rules.quiet_hours]\ntime_zone = \"UTC\"\ndays = [\"mon\", \"funday\"]\nwindows = [\"01:00-02:00\"]\n"
            ),
            8,
            |k| matches!(k, ProblemKind::BadDay { value } if value == "funday"),
        ),
        (
            "bad window",
            format!(
                "{base}{m}[rules.quiet_hours]\ntime_zone = \"UTC\"\nwindows = [\"18:00-25:00\"]\n"
            ),
            8,
            |k| matches!(k, ProblemKind::BadWindow { reason } if reason.contains("25:00")),
        ),
        (
            "empty window",
            format!(
                "{base}{m}[rules.quiet_hours]\ntime_zone = \"UTC\"\nwindows = [\"08:00-08:00\"]\n"
            ),
            8,
            |k| matches!(k, ProblemKind::BadWindow { reason } if reason.contains("empty")),
        ),
        (
            "bad severity",
            format!("{base}severity = \"urgent\"\n{m}"),
            4,
            |k| matches!(k, ProblemKind::BadSeverity { value } if value == "urgent"),
        ),
        (
            "bare idle in an undimensioned field",
            format!("{base}[rules.match]\nstate = \"idle\"\n"),
            5,
            |k| matches!(k, ProblemKind::BareIdle { key } if key == "state"),
        ),
    ];
    for (what, body, line, check) in cases {
        let text = format!("[[rules]]\nname = \"r\"\n{body}");
        let found = problems(&text);
        assert!(
            found.iter().any(|p| p.line == line && check(&p.kind)),
            "{what}: expected a problem on line {line}, got:\n{}\nin:\n{text}",
            found
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            found
                .iter()
                .all(|p| p.rule == Some(RuleLabel::Named("r".into()))),
            "{what}: {found:?}"
        );
    }
}

#[test]
fn top_level_problems_have_no_rule() {
    let found = problems(
        "rule = []\n[[rules]]\nname = \"a\"\nthreshold = \"1m\"\nmatch.routing_status = \"IDLE\"\n",
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 1);
    assert_eq!(found[0].rule, None);
    assert!(
        found[0]
            .to_string()
            .starts_with("line 1: unknown key `rule`")
    );

    let found = problems("rules = \"idle\"\n");
    assert!(matches!(found[0].kind, ProblemKind::WrongType { .. }));

    // A rule that is not a table is labelled by position; the next problem is not.
    let found = problems("rules = [\"a\"]\ntail = 1\n");
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].rule, Some(RuleLabel::Index(1)));
    assert_eq!(found[1].rule, None);
}

#[test]
fn syntax_errors_have_lines() {
    let found = problems("[[rules]]\nname = \"a\"\nthreshold = 10m\n");
    assert!(!found.is_empty());
    assert_eq!(found[0].line, 3);
    assert!(matches!(found[0].kind, ProblemKind::Syntax { .. }));
}

#[test]
fn duplicate_names_point_at_both_rules() {
    let text = "[[rules]]\nname = \"a\"\nthreshold = \"1m\"\nmatch.routing_status = \"IDLE\"\n\n\
                [[rules]]\nname = \"a\"\nthreshold = \"2m\"\nmatch.routing_status = \"IDLE\"\n";
    let found = problems(text);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 6);
    assert_eq!(
        found[0].kind,
        ProblemKind::DuplicateName {
            name: "a".into(),
            first_line: 1
        }
    );
}

#[test]
fn every_problem_is_listed_one_per_line() {
    let text = r#"[[rules]]
name = "idle"
threshold = "soon"
[rules.match]
state = "IDLE"

[[rules]]
threshold = "0s"
severity = "loud"
[rules.match]
routing_status = "WAITING"
system_presence = "Lunch"
[rules.quiet_hours]
time_zone = "Mars/Olympus"
windows = ["9-5"]
"#;
    let err = RuleSet::parse(text).unwrap_err();
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), err.problems().len(), "{shown}");
    let expected_prefixes = [
        "line 3: rule \"idle\": `threshold` = \"soon\" is not a duration",
        "line 5: rule \"idle\": `state` = \"idle\" is ambiguous",
        "line 7: rule #2: missing required key `name`",
        "line 8: rule #2: `threshold` must be longer than zero",
        "line 9: rule #2: unknown severity \"loud\"",
        "line 11: rule #2: unknown routing status \"WAITING\"",
        "line 12: rule #2: unknown system presence \"Lunch\"",
        "line 14: rule #2: unknown time zone \"Mars/Olympus\"",
        "line 15: rule #2: time window \"9-5\"",
    ];
    assert_eq!(lines.len(), expected_prefixes.len(), "{shown}");
    for (line, prefix) in lines.iter().zip(expected_prefixes) {
        assert!(line.starts_with(prefix), "{line:?} !~ {prefix:?}");
    }
}

#[test]
fn bare_idle_is_rejected_with_both_meanings_explained() {
    for text in [
        "[[rules]]\nname = \"x\"\nthreshold = \"1m\"\nstate = \"idle\"\nmatch.routing_status = \"IDLE\"\n",
        "[[rules]]\nname = \"x\"\nthreshold = \"1m\"\n[rules.match]\nstatus = [\"IDLE\"]\n",
        "[[rules]]\nname = \"x\"\nthreshold = \"1m\"\n[[rules.match.any_of]]\npresence = \"Idle\"\n",
        "[[rules]]\nname = \"x\"\nthreshold = \"1m\"\nmatch = \"IDLE\"\n",
    ] {
        let found = problems(text);
        let idle = found
            .iter()
            .find(|p| matches!(p.kind, ProblemKind::BareIdle { .. }))
            .unwrap_or_else(|| panic!("{found:?}"));
        let msg = idle.to_string();
        assert!(
            msg.contains("presence IDLE means the agent's screen is locked"),
            "{msg}"
        );
        assert!(
            msg.contains("routing IDLE means the agent is on queue waiting"),
            "{msg}"
        );
        assert!(msg.contains("routing_status = \"IDLE\""), "{msg}");
    }
    // With the dimension spelled out, IDLE is fine on either side.
    rule("threshold = \"1m\"\nmatch.system_presence = \"IDLE\"\n");
    rule("threshold = \"1m\"\nmatch.routing_status = \"idle\"\n");
}

#[test]
fn load_reads_a_file_and_reports_a_missing_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rules.example.toml");
    assert_eq!(RuleSet::load(path).unwrap().rules().len(), 4);
    let err = RuleSet::load("/nonexistent/rules.toml").unwrap_err();
    assert!(matches!(err, RulesError::Read { .. }));
    assert!(err.problems().is_empty());
}

/// An empty or truncated file would turn alerting off without a word: refused.
#[test]
fn a_file_without_rules_is_refused() {
    for text in [
        "",
        "# nothing\n",
        "rules = []\n",
        "[[destinations]]\nname = \"ops\"\ntype = \"webhook\"\nurl_env = \"OPS_URL\"\n",
    ] {
        let err = RuleSet::parse(text).unwrap_err();
        assert!(
            err.problems()
                .iter()
                .any(|p| p.kind == ProblemKind::NoRules),
            "{text:?}: {err}"
        );
        assert!(err.to_string().contains("defines no rules"), "{err}");
    }
}

/// A duplicate name is reported even when the duplicate rule has other problems too, with
/// those problems.
#[test]
fn a_duplicate_name_is_reported_alongside_other_problems() {
    let text = r#"
[[rules]]
name = "idle"
threshold = "10m"
[rules.match]
routing_status = "IDLE"

[[rules]]
name = "idle"
threshold = "soon"
[rules.match]
routing_status = "IDLE"
"#;
    let err = RuleSet::parse(text).unwrap_err();
    let shown = err.to_string();
    assert!(
        err.problems().iter().any(|p| matches!(
            &p.kind,
            ProblemKind::DuplicateName { name, first_line: 2 } if name == "idle"
        ) && p.line == 8),
        "{shown}"
    );
    assert!(shown.contains("is not a duration"), "{shown}");
}

// ---------------------------------------------------------------- matching

const T0: &str = "2026-05-04T09:00:00Z";
const LUNCH: &str = "3fd2a1b0-5c7e-4d8a-9b61-2e4f0a7c9d13";

fn agent(
    presence: Option<(&str, Option<&str>, &str)>,
    routing: Option<(&str, &str)>,
    conversations: u32,
) -> AgentView {
    AgentView {
        presence: presence.map(|(system, id, since)| PresenceState {
            system: system.into(),
            definition_id: id.map(Into::into),
            label: None,
            since: ts(since),
        }),
        routing: routing.map(|(status, since)| RoutingState {
            status: status.into(),
            since: ts(since),
        }),
        active_conversations: conversations,
        ..AgentView::new(UserId::parse("AAAA-1").unwrap())
    }
}

#[test]
fn builtin_idle_rule() {
    let set = RuleSet::builtin_idle(Duration::from_secs(900));
    let idle = &set.rules()[0];
    assert_eq!(idle.name, "idle");
    assert_eq!(idle.threshold, Duration::from_secs(900));

    let cases: Vec<(&str, AgentView, Option<&str>)> = vec![
        (
            "routing IDLE matches from routing since",
            agent(
                Some(("ON_QUEUE", None, "2026-05-04T08:00:00Z")),
                Some(("IDLE", "2026-05-04T08:30:00Z")),
                0,
            ),
            Some("2026-05-04T08:30:00Z"),
        ),
        (
            "available off queue, no conversation: latest of the two",
            agent(
                Some(("AVAILABLE", None, "2026-05-04T08:40:00Z")),
                Some(("OFF_QUEUE", "2026-05-04T08:00:00Z")),
                0,
            ),
            Some("2026-05-04T08:40:00Z"),
        ),
        (
            "available spelled the legacy way",
            agent(
                Some(("Available", None, "2026-05-04T08:40:00Z")),
                Some(("OffQueue", "2026-05-04T08:00:00Z")),
                0,
            ),
            Some("2026-05-04T08:40:00Z"),
        ),
        (
            "presence IDLE (locked screen) off queue does not match",
            agent(
                Some(("IDLE", None, "2026-05-04T08:40:00Z")),
                Some(("OFF_QUEUE", "2026-05-04T08:00:00Z")),
                0,
            ),
            None,
        ),
        (
            "available off queue on a call does not match",
            agent(
                Some(("AVAILABLE", None, "2026-05-04T08:40:00Z")),
                Some(("OFF_QUEUE", "2026-05-04T08:00:00Z")),
                1,
            ),
            None,
        ),
        (
            "interacting does not match",
            agent(
                Some(("ON_QUEUE", None, "2026-05-04T08:00:00Z")),
                Some(("INTERACTING", "2026-05-04T08:30:00Z")),
                1,
            ),
            None,
        ),
        ("nothing known does not match", agent(None, None, 0), None),
    ];
    for (what, view, expected) in cases {
        assert_eq!(idle.evaluate(&view), expected.map(ts), "{what}");
    }

    // The conversation count's change instant counts when it is later.
    let mut view = agent(
        Some(("AVAILABLE", None, "2026-05-04T08:40:00Z")),
        Some(("OFF_QUEUE", "2026-05-04T08:00:00Z")),
        0,
    );
    view.conversations_changed_at = Some(ts("2026-05-04T08:50:00Z"));
    assert_eq!(idle.evaluate(&view), Some(ts("2026-05-04T08:50:00Z")));
}

#[test]
fn org_presence_rule_and_its_system_presence_rule_match_the_same_agent() {
    let set = RuleSet::parse(&format!(
        r#"[[rules]]
name = "lunch"
threshold = "45m"
match.presence_definition_id = "{}"

[[rules]]
name = "meal"
threshold = "1h"
match.system_presence = "Meal"

[[rules]]
name = "meal-off-queue"
threshold = "1h"
match = {{ system_presence = "MEAL", routing_status = "OFF_QUEUE" }}
"#,
        LUNCH.to_uppercase()
    ))
    .unwrap();
    let view = agent(
        Some(("MEAL", Some(LUNCH), "2026-05-04T12:00:00Z")),
        Some(("OFF_QUEUE", "2026-05-04T12:00:05Z")),
        0,
    );
    assert_eq!(
        set.get("lunch").unwrap().evaluate(&view),
        Some(ts("2026-05-04T12:00:00Z"))
    );
    assert_eq!(
        set.get("meal").unwrap().evaluate(&view),
        Some(ts("2026-05-04T12:00:00Z"))
    );
    assert_eq!(
        set.get("meal-off-queue").unwrap().evaluate(&view),
        Some(ts("2026-05-04T12:00:05Z"))
    );

    // Another org presence under MEAL matches the system rule only.
    let other = agent(
        Some((
            "MEAL",
            Some("00000000-0000-0000-0000-000000000001"),
            "2026-05-04T12:00:00Z",
        )),
        None,
        0,
    );
    assert_eq!(set.get("lunch").unwrap().evaluate(&other), None);
    assert!(set.get("meal").unwrap().evaluate(&other).is_some());
}

#[test]
fn active_conversation_condition() {
    let r = rule("threshold = \"30m\"\nmatch.active_conversation = true\n");
    let mut view = agent(None, None, 2);
    // No change instant known: nothing to measure from.
    assert_eq!(r.evaluate(&view), None);
    view.conversations_changed_at = Some(ts(T0));
    assert_eq!(r.evaluate(&view), Some(ts(T0)));
    view.active_conversations = 0;
    assert_eq!(r.evaluate(&view), None);
}

#[test]
fn scope_include_and_exclude() {
    let r = rule(
        r#"threshold = "1m"
match.routing_status = "IDLE"
[rules.scope]
queue_ids = ["QUEUE-A", "queue-b"]
division_ids = ["div-1"]
exclude_user_ids = ["USER-X"]
"#,
    );
    let base = AgentView {
        user_id: UserId::parse("user-1").unwrap(),
        queue_ids: vec!["queue-c".into(), "Queue-B".into()],
        division_id: Some("DIV-1".into()),
        ..agent(None, Some(("IDLE", T0)), 0)
    };
    let cases: Vec<(&str, AgentView, bool)> = vec![
        ("in queue and division", base.clone(), true),
        (
            "no listed queue",
            AgentView {
                queue_ids: vec!["queue-c".into()],
                ..base.clone()
            },
            false,
        ),
        (
            "no queue at all",
            AgentView {
                queue_ids: vec![],
                ..base.clone()
            },
            false,
        ),
        (
            "other division",
            AgentView {
                division_id: Some("div-2".into()),
                ..base.clone()
            },
            false,
        ),
        (
            "division unknown",
            AgentView {
                division_id: None,
                ..base.clone()
            },
            false,
        ),
        (
            "excluded user",
            AgentView {
                user_id: UserId::parse("user-x").unwrap(),
                ..base.clone()
            },
            false,
        ),
    ];
    for (what, view, expected) in cases {
        assert_eq!(r.evaluate(&view).is_some(), expected, "{what}");
    }

    let only = rule(
        "threshold = \"1m\"\nmatch.routing_status = \"IDLE\"\nscope.user_ids = [\"User-1\"]\nscope.exclude_user_ids = [\"user-1\"]\n",
    );
    // Exclusion wins over inclusion.
    assert_eq!(only.evaluate(&base), None);
    let only = rule(
        "threshold = \"1m\"\nmatch.routing_status = \"IDLE\"\nscope.user_ids = [\"User-1\"]\n",
    );
    assert!(only.evaluate(&base).is_some());
    let other = AgentView {
        user_id: UserId::parse("user-2").unwrap(),
        ..base
    };
    assert_eq!(only.evaluate(&other), None);
}

// ---------------------------------------------------------------- quiet hours

fn quiet(tz: &str, days: &str, windows: &str) -> Rule {
    rule(&format!(
        "threshold = \"1m\"\nmatch.routing_status = \"IDLE\"\n[rules.quiet_hours]\ntime_zone = \"{tz}\"\n{days}windows = {windows}\n"
    ))
}

#[test]
fn quiet_hours_windows() {
    // 2026-05-01 is a Friday.
    let r = quiet(
        "UTC",
        "days = [\"fri\"]\n",
        "[\"22:00-06:00\", \"12:00-13:00\"]",
    );
    let cases = [
        (
            "2026-05-01T12:00:00Z",
            true,
            "Friday lunch window start (inclusive)",
        ),
        ("2026-05-01T12:59:59Z", true, "Friday lunch window"),
        (
            "2026-05-01T13:00:00Z",
            false,
            "Friday lunch window end (exclusive)",
        ),
        (
            "2026-05-01T21:59:00Z",
            false,
            "Friday before the night window",
        ),
        ("2026-05-01T22:00:00Z", true, "Friday night window start"),
        (
            "2026-05-02T03:00:00Z",
            true,
            "Saturday 03:00 belongs to Friday's window",
        ),
        (
            "2026-05-02T06:00:00Z",
            false,
            "Saturday 06:00: the window has ended",
        ),
        (
            "2026-05-02T12:30:00Z",
            false,
            "Saturday lunch: not a listed day",
        ),
        (
            "2026-05-02T23:00:00Z",
            false,
            "Saturday night: not a listed day",
        ),
        (
            "2026-05-01T03:00:00Z",
            false,
            "Friday 03:00 belongs to Thursday's window",
        ),
    ];
    for (at, expected, what) in cases {
        assert_eq!(r.is_quiet(ts(at)), expected, "{what}");
    }

    let whole = quiet(
        "UTC",
        "days = [\"Saturday\", \"sun\"]\n",
        "[\"00:00-24:00\"]",
    );
    assert!(whole.is_quiet(ts("2026-05-02T00:00:00Z")));
    assert!(whole.is_quiet(ts("2026-05-03T23:59:59Z")));
    assert!(!whole.is_quiet(ts("2026-05-04T00:00:00Z")));

    let never = rule("threshold = \"1m\"\nmatch.routing_status = \"IDLE\"\n");
    assert!(!never.is_quiet(ts("2026-05-02T03:00:00Z")));
}

#[test]
fn quiet_hours_use_the_zone_and_follow_dst() {
    // Paris switches from CET (+01) to CEST (+02) on Sunday 2026-03-29 at 02:00 local.
    let r = quiet("Europe/Paris", "", "[\"18:00-08:00\"]");
    // Saturday 07:30 local = 06:30Z (CET): quiet.
    assert!(r.is_quiet(ts("2026-03-28T06:30:00Z")));
    // Sunday 06:30Z is 08:30 CEST: no longer quiet (a fixed +01 offset would say 07:30).
    assert!(!r.is_quiet(ts("2026-03-29T06:30:00Z")));
    // Sunday 05:59Z is 07:59 CEST: quiet.
    assert!(r.is_quiet(ts("2026-03-29T05:59:00Z")));
    // Sunday 16:30Z is 18:30 CEST: quiet again (a fixed +01 offset would say 17:30).
    assert!(r.is_quiet(ts("2026-03-29T16:30:00Z")));
    assert!(!r.is_quiet(ts("2026-03-29T15:59:00Z")));

    // Monday 02:00 in New York (EDT, -04) is 06:00Z; Europe's evening is not New York's.
    let ny = quiet(
        "America/New_York",
        "days = [\"sun\"]\n",
        "[\"22:00-06:00\"]",
    );
    assert!(ny.is_quiet(ts("2026-05-04T06:00:00Z")));
    assert!(!ny.is_quiet(ts("2026-05-04T10:00:00Z")));
}

// ---------------------------------------------------------------- episodes

fn min(m: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::minutes(m)
}
fn secs(s: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(s)
}

fn fire(start: DateTime<Utc>, repeat: u32) -> EpisodeAction {
    EpisodeAction::Fire {
        episode_start: start,
        repeat,
        send: true,
    }
}

/// threshold 10m, repeat 30m, send_resolved, flap 5s.
fn idle_rule() -> Rule {
    rule(
        "threshold = \"10m\"\nrepeat_interval = \"30m\"\nsend_resolved = true\nmatch.routing_status = \"IDLE\"\n",
    )
}

#[test]
fn pending_fires_at_the_threshold_then_repeats_with_no_events() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    assert_eq!(e.next_deadline(), None);

    // The match began 2 minutes before we heard of it: the threshold counts from Genesys's time.
    assert!(e.on_match_change(&r, t0 + min(2), Some(t0)).is_empty());
    assert!(matches!(e.phase(), EpisodePhase::Pending { .. }));
    assert_eq!(e.next_deadline(), Some(t0 + min(10)));
    assert!(e.on_tick(&r, t0 + min(9)).is_empty());

    assert_eq!(e.on_tick(&r, t0 + min(10)), [fire(t0, 0)]);
    assert!(e.is_firing());
    assert_eq!(e.next_deadline(), Some(t0 + min(40)));
    // Same match reported again, or an early tick: nothing.
    assert!(e.on_match_change(&r, t0 + min(11), Some(t0)).is_empty());
    assert!(e.on_tick(&r, t0 + min(39)).is_empty());

    assert_eq!(e.on_tick(&r, t0 + min(40)), [fire(t0, 1)]);
    assert_eq!(e.next_deadline(), Some(t0 + min(70)));
    // A slightly late tick keeps the cadence.
    assert_eq!(e.on_tick(&r, t0 + min(71)), [fire(t0, 2)]);
    assert_eq!(e.next_deadline(), Some(t0 + min(100)));
    // A very late tick (downtime) repeats once, then restarts the cadence from now.
    assert_eq!(e.on_tick(&r, t0 + min(200)), [fire(t0, 3)]);
    assert_eq!(e.next_deadline(), Some(t0 + min(230)));
}

#[test]
fn an_old_match_fires_immediately() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    assert_eq!(e.on_match_change(&r, t0 + min(25), Some(t0)), [fire(t0, 0)]);
    assert_eq!(e.next_deadline(), Some(t0 + min(55)));
}

#[test]
fn without_repeat_interval_it_fires_once() {
    let r = rule("threshold = \"1m\"\nmatch.routing_status = \"IDLE\"\n");
    let t0 = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, t0, Some(t0));
    assert_eq!(e.on_tick(&r, t0 + min(1)), [fire(t0, 0)]);
    assert_eq!(e.next_deadline(), None);
    assert!(e.on_tick(&r, t0 + min(500)).is_empty());
}

#[test]
fn a_flap_within_tolerance_keeps_the_episode() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, t0, Some(t0));
    assert_eq!(e.on_tick(&r, t0 + min(10)), [fire(t0, 0)]);

    // IDLE → INTERACTING for 3 s → IDLE (with a new Genesys routing since).
    let out = t0 + min(12);
    assert!(e.on_match_change(&r, out, None).is_empty());
    assert_eq!(e.next_deadline(), Some(out + secs(5)));
    assert!(
        e.on_match_change(&r, out + secs(3), Some(out + secs(3)))
            .is_empty()
    );
    assert_eq!(e.episode_start(), Some(t0));
    assert!(e.is_firing());
    // The repeat schedule is unchanged.
    assert_eq!(e.next_deadline(), Some(t0 + min(40)));
    assert!(e.on_tick(&r, out + secs(5)).is_empty());
    assert_eq!(e.on_tick(&r, t0 + min(40)), [fire(t0, 1)]);
}

#[test]
fn a_flap_while_pending_keeps_the_start() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, t0, Some(t0));
    e.on_match_change(&r, t0 + min(8), None);
    // While interrupted, the threshold does not fire.
    assert_eq!(e.next_deadline(), Some(t0 + min(8) + secs(5)));
    assert!(
        e.on_match_change(&r, t0 + min(8) + secs(2), Some(t0 + min(8) + secs(2)))
            .is_empty()
    );
    assert_eq!(e.episode_start(), Some(t0));
    assert_eq!(e.next_deadline(), Some(t0 + min(10)));
    assert_eq!(e.on_tick(&r, t0 + min(10)), [fire(t0, 0)]);
}

/// Regression guard (found by the chaos test): the end of an episode was lost in a gap and the
/// same state, begun later, arrived first (snapshot or stream before the backfill). A later
/// `since` with no end seen is a new episode, not the old one going on.
#[test]
fn the_same_state_begun_later_without_a_seen_end_is_a_new_pending_episode() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, t0, Some(t0));
    let again = t0 + min(7);
    assert!(e.on_match_change(&r, again, Some(again)).is_empty());
    assert_eq!(e.episode_start(), Some(again));
    assert_eq!(e.next_deadline(), Some(again + min(10)));
    // Nothing fires at the old threshold.
    assert!(e.on_tick(&r, t0 + min(10)).is_empty());
    assert_eq!(e.on_tick(&r, again + min(10)), [fire(again, 0)]);
}

#[test]
fn the_same_state_begun_later_without_a_seen_end_resolves_a_fired_episode() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, t0, Some(t0));
    assert_eq!(e.on_tick(&r, t0 + min(10)), [fire(t0, 0)]);
    let again = t0 + min(15);
    let out = e.on_match_change(&r, again + secs(1), Some(again));
    assert_eq!(
        out,
        [EpisodeAction::Resolve {
            episode_start: t0,
            ended_at: again,
            duration: Duration::from_secs(15 * 60),
            send: true,
        }]
    );
    assert_eq!(e.episode_start(), Some(again));
    assert!(!e.is_firing());
    assert_eq!(e.on_tick(&r, again + min(10)), [fire(again, 0)]);
}

/// Regression guard (found by the chaos soak): after a stream gap the end of an episode can be
/// learnt after its threshold passed; an end (Genesys time) before the threshold never fires.
#[test]
fn an_end_learnt_late_but_before_the_threshold_does_not_fire() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, t0 + min(1), Some(t0));
    // We hear of the end (at t0 + 6m) only at t0 + 12m, after the threshold.
    let out = e.on_match_change_at(&r, t0 + min(12), None, t0 + min(6));
    assert!(out.is_empty(), "{out:?}");
    assert!(!e.is_firing());
    assert!(e.on_tick(&r, t0 + min(13)).is_empty());
}

#[test]
fn resolves_after_the_tolerance_with_the_total_duration() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, t0, Some(t0));
    e.on_tick(&r, t0 + min(10));
    let end = t0 + min(17);
    assert!(e.on_match_change(&r, end, None).is_empty());
    // Reporting the end again does not move it.
    assert!(e.on_match_change(&r, end + secs(2), None).is_empty());
    assert!(e.on_tick(&r, end + secs(4)).is_empty());
    let resolved = e.on_tick(&r, end + secs(5));
    assert_eq!(
        resolved,
        [EpisodeAction::Resolve {
            episode_start: t0,
            ended_at: end,
            duration: Duration::from_secs(17 * 60),
            send: true,
        }]
    );
    assert!(matches!(e.phase(), EpisodePhase::Resolved { .. }));
    assert_eq!(e.next_deadline(), None);
    assert!(e.on_tick(&r, end + min(60)).is_empty());

    // The next match is a new episode.
    let t1 = end + min(20);
    assert!(e.on_match_change(&r, t1, Some(t1)).is_empty());
    assert_eq!(e.episode_start(), Some(t1));
    assert_eq!(e.on_tick(&r, t1 + min(10)), [fire(t1, 0)]);
}

#[test]
fn a_rematch_after_the_tolerance_is_a_new_episode() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, t0, Some(t0));
    e.on_tick(&r, t0 + min(10));
    let end = t0 + min(15);
    e.on_match_change(&r, end, None);
    // No tick came; the rematch 6 s later first resolves the old episode.
    let back = end + secs(6);
    let actions = e.on_match_change(&r, back, Some(back));
    assert!(
        matches!(actions[..], [EpisodeAction::Resolve { episode_start, .. }] if episode_start == t0)
    );
    assert_eq!(e.episode_start(), Some(back));
    assert!(matches!(e.phase(), EpisodePhase::Pending { .. }));
}

#[test]
fn resolve_is_reported_only_after_a_fire() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, t0, Some(t0));
    assert!(e.on_match_change(&r, t0 + min(5), None).is_empty());
    assert!(e.on_tick(&r, t0 + min(6)).is_empty());
    assert_eq!(e.phase(), &EpisodePhase::Normal);

    // Without send_resolved the transition still happens, without a message.
    let quiet_resolve = rule("threshold = \"1m\"\nmatch.routing_status = \"IDLE\"\n");
    let mut e = Episode::new();
    e.on_match_change(&quiet_resolve, t0, Some(t0));
    e.on_tick(&quiet_resolve, t0 + min(1));
    e.on_match_change(&quiet_resolve, t0 + min(2), None);
    assert!(matches!(
        e.on_tick(&quiet_resolve, t0 + min(3))[..],
        [EpisodeAction::Resolve { send: false, .. }]
    ));
}

#[test]
fn quiet_hours_mute_messages_but_not_transitions() {
    // Quiet every day 18:00-08:00 UTC.
    let r = rule(
        "threshold = \"10m\"\nrepeat_interval = \"1h\"\nsend_resolved = true\nmatch.routing_status = \"IDLE\"\nquiet_hours = { time_zone = \"UTC\", windows = [\"18:00-08:00\"] }\n",
    );
    let t0 = ts("2026-05-04T07:30:00Z");
    let mut e = Episode::new();
    e.on_match_change(&r, t0, Some(t0));
    assert_eq!(
        e.on_tick(&r, t0 + min(10)),
        [EpisodeAction::Fire {
            episode_start: t0,
            repeat: 0,
            send: false
        }]
    );
    // The first repeat, after quiet hours, is sent.
    assert_eq!(e.on_tick(&r, t0 + min(70)), [fire(t0, 1)]);
    e.on_match_change(&r, t0 + min(80), None);
    assert!(matches!(
        e.on_tick(&r, t0 + min(81))[..],
        [EpisodeAction::Resolve { send: true, .. }]
    ));

    // A fired episode that was never sent resolves without a message.
    let t1 = ts("2026-05-04T20:00:00Z");
    let mut e = Episode::new();
    e.on_match_change(&r, t1, Some(t1));
    e.on_tick(&r, t1 + min(10));
    e.on_match_change(&r, t1 + min(20), None);
    assert!(matches!(
        e.on_tick(&r, t1 + min(21))[..],
        [EpisodeAction::Resolve { send: false, .. }]
    ));
}

/// Found by the chaos soak: an end learnt a second late (ingest latency on a loaded machine)
/// started its flap tolerance from the time it was learnt, so a replay after a gap, judging
/// the next change at its own Genesys time, merged a new episode begun after the end (beyond
/// the tolerance) into the old one and alerted it with the old start.
#[test]
fn the_flap_tolerance_runs_from_the_genesys_end_not_from_when_it_was_learnt() {
    let r = rule(
        "threshold = \"8s\"\nflap_tolerance = \"1ms\"\nsend_resolved = false\nmatch.routing_status = \"IDLE\"\n",
    );
    let t0 = ts(T0);
    let s = |n: i64| chrono::TimeDelta::milliseconds(n);
    let mut e = Episode::new();
    e.on_match_change(&r, t0, Some(t0));
    // The end at t0 + 1.5 s is learnt at t0 + 2.5 s.
    e.on_match_change_at(&r, t0 + s(2500), None, t0 + s(1500));
    // The replay judges the next IDLE (t0 + 2 s, after the end) at its own time: a new episode.
    assert_eq!(e.on_match_change(&r, t0 + s(2000), Some(t0 + s(2000))), []);
    assert_eq!(e.episode_start(), Some(t0 + s(2000)));
    assert_eq!(e.on_tick(&r, t0 + s(10_000)), [fire(t0 + s(2000), 0)]);
}

#[test]
fn a_future_timestamp_stays_the_start_and_the_threshold_counts_from_now() {
    let r = idle_rule();
    let now = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, now, Some(now + min(3)));
    assert_eq!(e.episode_start(), Some(now + min(3)));
    assert_eq!(e.next_deadline(), Some(now + min(10)));
}

/// A clock offset measured a few milliseconds short made an event's Genesys timestamp lie just
/// after "now". The start was taken as now, so the next evaluation (a rules reload, the
/// snapshot after a restart) saw the real timestamp as a later start with no end seen: it
/// resolved the episode and fired a second one at once.
#[test]
fn an_event_just_ahead_of_now_is_one_episode_on_the_next_evaluation() {
    let r = idle_rule();
    let now = ts(T0);
    let since = now + chrono::TimeDelta::milliseconds(3);
    let mut e = Episode::new();
    assert_eq!(e.on_match_change(&r, now, Some(since)), []);
    assert_eq!(
        e.on_match_change(&r, now + chrono::TimeDelta::milliseconds(10), Some(since)),
        []
    );
    assert_eq!(e.on_tick(&r, now + min(10)), [fire(since, 0)]);
    assert_eq!(e.on_match_change(&r, now + min(11), Some(since)), []);
}

#[test]
fn an_earlier_genesys_timestamp_moves_a_pending_start_back() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, t0 + min(5), Some(t0 + min(5)));
    // e.g. the snapshot after a reconnect carries the true start.
    assert_eq!(e.on_match_change(&r, t0 + min(11), Some(t0)), [fire(t0, 0)]);
}

#[test]
fn restored_after_serialization_it_neither_fires_twice_nor_forgets_the_repeat() {
    let r = idle_rule();
    let t0 = ts(T0);
    let mut e = Episode::new();
    e.on_match_change(&r, t0, Some(t0));
    assert_eq!(e.on_tick(&r, t0 + min(10)), [fire(t0, 0)]);
    assert_eq!(e.on_tick(&r, t0 + min(40)), [fire(t0, 1)]);

    let saved = serde_json::to_string(&e).unwrap();
    let mut restored: Episode = serde_json::from_str(&saved).unwrap();
    assert_eq!(restored, e);

    // After the restart: the agent actor re-evaluates the rule and ticks.
    let back = t0 + min(45);
    assert!(restored.on_match_change(&r, back, Some(t0)).is_empty());
    assert!(restored.on_tick(&r, back).is_empty());
    assert_eq!(restored.next_deadline(), Some(t0 + min(70)));
    assert_eq!(restored.on_tick(&r, t0 + min(70)), [fire(t0, 2)]);

    // A pending episode restores its threshold too.
    let mut p = Episode::new();
    p.on_match_change(&r, t0, Some(t0));
    let mut p: Episode = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(p.next_deadline(), Some(t0 + min(10)));
    assert_eq!(p.on_tick(&r, t0 + min(10)), [fire(t0, 0)]);
}

#[test]
fn alert_key_matches_the_domain_form() {
    let r = idle_rule();
    let user = UserId::parse("ABC").unwrap();
    assert_eq!(
        r.alert_key(&user, ts(T0)),
        format!("r:abc:{}", ts(T0).timestamp_millis())
    );
}

#[test]
fn agent_episodes_track_every_rule_of_one_agent() {
    let rules = RuleSet::parse(
        r#"[[rules]]
name = "idle"
threshold = "10m"
repeat_interval = "30m"
match.routing_status = "IDLE"

[[rules]]
name = "on-queue"
threshold = "1h"
match.system_presence = "ON_QUEUE"
"#,
    )
    .unwrap();
    let t0 = ts(T0);
    let mut view = agent(
        Some(("ON_QUEUE", None, T0)),
        Some(("IDLE", "2026-05-04T09:02:00Z")),
        0,
    );
    let mut all = AgentEpisodes::new();
    assert!(all.on_agent_change(&rules, t0 + min(3), &view).is_empty());
    assert_eq!(all.next_deadline(), Some(t0 + min(12)));
    assert_eq!(
        all.on_tick(&rules, t0 + min(12)),
        [RuleAction {
            rule: "idle".into(),
            action: fire(t0 + min(2), 0)
        }]
    );
    assert_eq!(all.next_deadline(), Some(t0 + min(42)));

    // The agent takes a call: idle ends, on-queue goes on.
    view.routing = Some(RoutingState {
        status: "INTERACTING".into(),
        since: t0 + min(20),
    });
    assert!(all.on_agent_change(&rules, t0 + min(20), &view).is_empty());
    assert_eq!(all.next_deadline(), Some(t0 + min(20) + secs(5)));
    let resolved = all.on_tick(&rules, t0 + min(21));
    assert!(
        matches!(&resolved[..], [RuleAction { rule, action: EpisodeAction::Resolve { .. } }] if rule == "idle")
    );
    assert_eq!(all.next_deadline(), Some(t0 + min(60)));

    // Persisted and restored, then the rules file loses "on-queue": its episode is dropped.
    let mut all: AgentEpisodes =
        serde_json::from_str(&serde_json::to_string(&all).unwrap()).unwrap();
    assert!(all.get("on-queue").is_some());
    let fewer = RuleSet::parse(
        "[[rules]]\nname = \"idle\"\nthreshold = \"10m\"\nmatch.routing_status = \"IDLE\"\n",
    )
    .unwrap();
    assert!(all.on_tick(&fewer, t0 + min(22)).is_empty());
    assert!(all.get("on-queue").is_none());
    assert_eq!(all.next_deadline(), None);
}

// ---------------------------------------------------------------- destinations

#[test]
fn destinations_parse_with_their_url_source() {
    let set = RuleSet::parse(
        r#"[[destinations]]
name = "ops"
type = "webhook"
url_file = "/run/secrets/ops"

[[destinations]]
name = "team-a"
type = "slack"
url_env = "TEAM_A_URL"

[[rules]]
name = "r"
threshold = "1m"
destination = "team-a"
match.routing_status = "IDLE"

[[rules]]
name = "s"
threshold = "1m"
destination = "default"
match.routing_status = "IDLE"
"#,
    )
    .unwrap();
    let specs = set.destination_specs();
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].name, "ops");
    assert_eq!(specs[0].kind, crate::config::DestinationKind::Webhook);
    assert_eq!(specs[0].url, UrlSource::File("/run/secrets/ops".into()));
    assert_eq!(specs[0].line, 1);
    assert_eq!(specs[1].url, UrlSource::Env("TEAM_A_URL".into()));
    assert_eq!(specs[1].line, 6);
}

#[test]
fn destination_problems_each_have_their_line() {
    let found = problems(
        r#"[[destinations]]
name = "a"
type = "teams"
url = "https://hooks.slack.com/services/T/B/SECRET"

[[destinations]]
name = "b"
type = "slack"

[[destinations]]
name = "a"
type = "slack"
url_env = "X"
url_file = "/y"
colour = "red"

[[destinations]]
name = "c"
type = "webhook"
url_env = "C"

[[destinations]]
name = "c"
type = "webhook"
url_env = "C2"

[[rules]]
name = "r"
threshold = "1m"
destination = "nowhere"
match.routing_status = "IDLE"
"#,
    );
    let lines: Vec<(usize, String)> = found.iter().map(|p| (p.line, p.kind.to_string())).collect();
    let has = |line: usize, needle: &str| {
        assert!(
            lines.iter().any(|(l, t)| *l == line && t.contains(needle)),
            "no problem on line {line} containing {needle:?} in {lines:#?}"
        );
    };
    has(3, "unknown destination type \"teams\"");
    has(4, "must not be written in the rules file");
    has(6, "exactly one of url_env and url_file");
    has(10, "exactly one of url_env and url_file");
    has(15, "unknown key `colour`");
    has(
        22,
        "duplicate destination name \"c\" (first defined on line 17)",
    );
    has(30, "unknown destination \"nowhere\"");
    // The URL never appears in a problem.
    assert!(!format!("{lines:?}").contains("SECRET"));
}

#[test]
fn queue_ids_gathers_every_scope_lowercase_sorted_once() {
    let set = RuleSet::parse(
        r#"
[[rules]]
name = "a"
threshold = "1m"
[rules.match]
routing_status = "IDLE"
[rules.scope]
queue_ids = ["QB", "qa"]

[[rules]]
name = "b"
threshold = "1m"
[rules.match]
routing_status = "IDLE"
[rules.scope]
queue_ids = ["qb"]

[[rules]]
name = "c"
threshold = "1m"
[rules.match]
routing_status = "IDLE"
"#,
    )
    .unwrap();
    assert_eq!(set.queue_ids(), ["qa", "qb"]);
    assert!(
        RuleSet::builtin_idle(Duration::from_secs(60))
            .queue_ids()
            .is_empty()
    );
}

/// A bare number needs a unit: the message suggests seconds or minutes ("10s", "10m"), not
/// humantime's "10sec or 10ms".
#[test]
fn a_threshold_without_a_unit_suggests_seconds_or_minutes() {
    let text = "[[rules]]\nname = \"idle\"\nthreshold = \"10\"\n[rules.match]\nrouting_status = \"IDLE\"\n";
    let shown = RuleSet::parse(text).unwrap_err().to_string();
    assert!(
        shown.contains("\"10s\"") && shown.contains("\"10m\""),
        "{shown}"
    );
    assert!(
        !shown.contains("10sec") && !shown.contains("10ms"),
        "{shown}"
    );
}

#[test]
fn a_repeat_interval_under_a_minute_is_refused_with_the_rules_other_problems() {
    let text = "[[rules]]\nname = \"fast\"\nthreshold = \"1m\"\nrepeat_interval = \"1s\"\nseverity = \"loud\"\n[rules.match]\nrouting_status = \"IDLE\"\n";
    let found = problems(text);
    assert_eq!(found.len(), 2, "{found:?}");
    let repeat = found
        .iter()
        .find(|p| matches!(&p.kind, ProblemKind::RepeatTooShort { value, min } if value == "1s" && min == "1m"))
        .unwrap_or_else(|| panic!("no repeat problem in {found:?}"));
    assert_eq!(repeat.line, 4);
    assert!(matches!(&repeat.rule, Some(RuleLabel::Named(n)) if n == "fast"));
    assert!(repeat.to_string().contains("at least 1m"), "{repeat}");
    assert!(
        found
            .iter()
            .any(|p| matches!(&p.kind, ProblemKind::BadSeverity { .. }))
    );
    // The bound itself is accepted, and tests may lower it.
    assert_eq!(
        rule("threshold = \"1m\"\nrepeat_interval = \"1m\"\n[rules.match]\nrouting_status = \"IDLE\"\n")
            .repeat_interval,
        Some(MIN_REPEAT_INTERVAL)
    );
    let lowered = RuleLimits {
        min_repeat_interval: Duration::from_secs(1),
    };
    let set = RuleSet::parse_with(text.replace("loud", "info").as_str(), lowered).unwrap();
    assert_eq!(set.rules()[0].repeat_interval, Some(Duration::from_secs(1)));
    assert_eq!(set.limits(), lowered);
}

#[test]
fn a_threshold_over_seven_days_is_refused_with_the_rules_other_problems() {
    let text = "[[rules]]\nname = \"typo\"\nthreshold = \"10d\"\nseverity = \"loud\"\n[rules.match]\nrouting_status = \"IDLE\"\n";
    let found = problems(text);
    assert_eq!(found.len(), 2, "{found:?}");
    let long = found
        .iter()
        .find(|p| matches!(&p.kind, ProblemKind::ThresholdTooLong { value } if value == "10d"))
        .unwrap_or_else(|| panic!("no threshold problem in {found:?}"));
    assert_eq!(long.line, 3);
    assert!(long.to_string().contains("at most 7 days"), "{long}");
    // Exactly 7 days is accepted.
    assert_eq!(
        rule("threshold = \"7d\"\n[rules.match]\nrouting_status = \"IDLE\"\n").threshold,
        MAX_THRESHOLD
    );
}

#[test]
fn rule_names_differing_only_in_case_are_duplicates() {
    let text = "[[rules]]\nname = \"Idle\"\nthreshold = \"1m\"\nmatch.routing_status = \"IDLE\"\n\n\
                [[rules]]\nname = \"idle\"\nthreshold = \"2m\"\nmatch.routing_status = \"IDLE\"\n";
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].line, 6);
    assert_eq!(
        found[0].kind,
        ProblemKind::DuplicateName {
            name: "idle".into(),
            first_line: 1
        }
    );
    assert!(
        found[0].to_string().contains("ignoring case"),
        "{}",
        found[0]
    );
}

//! Block Kit message building for Slack incoming webhooks.
//!
//! Facts from `shared/alerting.md` §1: `&`, `<`, `>` are control characters in mrkdwn and in
//! the top-level `text`, so user data is escaped (`&amp;` first, then `&lt;`, `&gt;`; nothing
//! else); limits (docs.slack.dev/reference/block-kit/blocks): header `plain_text` ≤ 150
//! characters, section `text` ≤ 3000, section `fields` ≤ 10 of ≤ 2000 each; `text` is the
//! notification and screen-reader fallback and should always be a meaningful line.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::domain::{Alert, AlertKind};

/// Maximum characters of a `header` block's `plain_text`.
pub const HEADER_MAX_CHARS: usize = 150;
/// Maximum characters of a `section` block's `text`.
pub const SECTION_TEXT_MAX_CHARS: usize = 3000;
/// Maximum characters of one `section` field.
pub const FIELD_MAX_CHARS: usize = 2000;
/// Maximum number of `section` fields.
pub const MAX_FIELDS: usize = 10;
/// Maximum blocks in one message (Slack: 50).
pub const MAX_BLOCKS: usize = 50;
/// Our cap on one agent's line in a grouped message.
pub const LINE_MAX_CHARS: usize = 500;
/// Our cap on the top-level fallback `text` (Slack truncates at 40,000; a notification line
/// never needs more).
pub const FALLBACK_MAX_CHARS: usize = 3000;

/// Escapes Slack's three control characters: `&` → `&amp;` (first), `<` → `&lt;`,
/// `>` → `&gt;` (api.slack.com/reference/surfaces/formatting#escaping). Nothing else is
/// encoded: Slack decodes only these three.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Clips `s` to at most `max_chars` characters (Unicode scalar values), ending a clipped string
/// with `…`. A cut never splits an escape entity (`&amp;`, `&lt;`, `&gt;`): the partial entity
/// is dropped. `max_chars` of 0 gives an empty string.
pub fn clip(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    if max_chars == 0 {
        return String::new();
    }
    let cut = s
        .char_indices()
        .nth(max_chars - 1)
        .map_or(s.len(), |(i, _)| i);
    let mut kept = &s[..cut];
    if let Some(amp) = kept.rfind('&') {
        if !kept[amp..].contains(';') {
            kept = &kept[..amp];
        }
    }
    format!("{kept}…")
}

/// A duration for humans, rounded down to the second: `45s`, `12m 05s`, `2h 07m`, `3d 04h`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d {hours:02}h")
    } else if hours > 0 {
        format!("{hours}h {minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// An instant as `2024-05-01 10:15:30 UTC`.
pub fn format_utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Control characters (newlines, tabs) become spaces, so user data cannot break a one-line
/// text or a header.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The agent's display name, or the user id when the name is unknown or blank.
fn display_name(alert: &Alert) -> String {
    match alert.user_name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => one_line(name),
        _ => alert.user_id.to_string(),
    }
}

/// The one-line fallback `text` of an alert, escaped and clipped to [`FALLBACK_MAX_CHARS`]:
/// `:warning: Jane Doe idle for 12m 30s (routing IDLE) since 2024-05-01 10:15:30 UTC`.
pub fn alert_text(alert: &Alert) -> String {
    if let AlertKind::Resolved { duration } = alert.kind {
        return clip(
            &format!(
                ":white_check_mark: {} no longer {} after {} in total (since {})",
                escape(&display_name(alert)),
                escape(&one_line(&alert.state)),
                human_duration(duration),
                format_utc(alert.since),
            ),
            FALLBACK_MAX_CHARS,
        );
    }
    clip(
        &format!(
            ":warning: {} idle for {} ({}) since {}",
            escape(&display_name(alert)),
            human_duration(alert.held_for()),
            escape(&one_line(&alert.state)),
            format_utc(alert.since),
        ),
        FALLBACK_MAX_CHARS,
    )
}

/// The webhook payload for an alert:
///
/// ```json
/// {"text": "<one-line fallback>",
///  "blocks": [
///   {"type": "header", "text": {"type": "plain_text", "text": ":warning: Jane Doe idle for 12m 30s", "emoji": true}},
///   {"type": "section",
///    "text": {"type": "mrkdwn", "text": "*Jane Doe* has been in *routing IDLE* for 12m 30s, past the 10m 00s threshold of rule `idle`."},
///    "fields": [
///     {"type": "mrkdwn", "text": "*Agent*\nJane Doe"},
///     {"type": "mrkdwn", "text": "*User ID*\n<user id>"},
///     {"type": "mrkdwn", "text": "*State*\nrouting IDLE"},
///     {"type": "mrkdwn", "text": "*Idle for*\n12m 30s"},
///     {"type": "mrkdwn", "text": "*Since*\n2024-05-01 10:15:30 UTC"}]}]}
/// ```
///
/// Every user-supplied string (name, user id, state, rule) is escaped with [`escape`], the
/// header included (Slack decodes the three entities in every text object). Each text is clipped
/// to its Block Kit limit ([`HEADER_MAX_CHARS`], [`SECTION_TEXT_MAX_CHARS`],
/// [`FIELD_MAX_CHARS`]); "idle for" is `fired_at - since`, "since" is the episode start in UTC.
pub fn alert_message(alert: &Alert) -> Value {
    if matches!(alert.kind, AlertKind::Resolved { .. }) {
        return resolved_message(alert);
    }
    let name = escape(&display_name(alert));
    let user_id = escape(alert.user_id.as_str());
    let state = escape(&one_line(&alert.state));
    let held = human_duration(alert.held_for());
    let since = format_utc(alert.since);

    let header = clip(
        &format!(":warning: {name} idle for {held}"),
        HEADER_MAX_CHARS,
    );
    let summary = clip(
        &format!(
            "*{name}* has been in *{state}* for {held}, past the {} threshold of rule `{}`.",
            human_duration(alert.threshold),
            escape(&one_line(&alert.rule)),
        ),
        SECTION_TEXT_MAX_CHARS,
    );
    let fields: Vec<Value> = [
        ("Agent", name.as_str()),
        ("User ID", user_id.as_str()),
        ("State", state.as_str()),
        ("Idle for", held.as_str()),
        ("Since", since.as_str()),
    ]
    .into_iter()
    .take(MAX_FIELDS)
    .map(|(label, value)| {
        json!({"type": "mrkdwn", "text": clip(&format!("*{label}*\n{value}"), FIELD_MAX_CHARS)})
    })
    .collect();

    json!({
        "text": alert_text(alert),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": summary}, "fields": fields},
        ],
    })
}

/// The resolved notice of one episode: `:white_check_mark:` header, the total duration, the
/// same escaping and limits as [`alert_message`].
pub fn resolved_message(alert: &Alert) -> Value {
    let name = escape(&display_name(alert));
    let state = escape(&one_line(&alert.state));
    let total = human_duration(alert.held_for());
    let header = clip(
        &format!(":white_check_mark: {name} no longer {state}"),
        HEADER_MAX_CHARS,
    );
    let summary = clip(
        &format!(
            "*{name}* left *{state}* after {total} in total (rule `{}`).",
            escape(&one_line(&alert.rule)),
        ),
        SECTION_TEXT_MAX_CHARS,
    );
    let fields: Vec<Value> = [
        ("Agent", name.as_str()),
        ("User ID", &escape(alert.user_id.as_str())),
        ("State", state.as_str()),
        ("Total duration", total.as_str()),
        ("Since", &format_utc(alert.since)),
        ("Ended", &format_utc(alert.fired_at)),
    ]
    .into_iter()
    .take(MAX_FIELDS)
    .map(|(label, value)| {
        json!({"type": "mrkdwn", "text": clip(&format!("*{label}*\n{value}"), FIELD_MAX_CHARS)})
    })
    .collect();
    json!({
        "text": alert_text(alert),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": summary}, "fields": fields},
        ],
    })
}

/// One agent's line in a grouped message (escaped, clipped to [`LINE_MAX_CHARS`]).
fn group_line(alert: &Alert) -> String {
    let name = escape(&display_name(alert));
    let state = escape(&one_line(&alert.state));
    let line = match alert.kind {
        AlertKind::Resolved { duration } => format!(
            "• *{name}*: no longer {state}, {} in total",
            human_duration(duration)
        ),
        AlertKind::Firing { .. } => format!(
            "• *{name}*: {state} for {} (since {})",
            human_duration(alert.held_for()),
            format_utc(alert.since)
        ),
    };
    clip(&line, LINE_MAX_CHARS)
}

/// The one-line fallback `text` of a group: count, rule and the first few names.
pub fn group_text(alerts: &[Alert]) -> String {
    if alerts.len() == 1 {
        return alert_text(&alerts[0]);
    }
    let first = &alerts[0];
    let rule = escape(&one_line(&first.rule));
    let shown: Vec<String> = alerts
        .iter()
        .take(5)
        .map(|a| escape(&display_name(a)))
        .collect();
    let more = alerts.len().saturating_sub(shown.len());
    let more = if more > 0 {
        format!(" +{more} more")
    } else {
        String::new()
    };
    let line = match first.kind {
        AlertKind::Resolved { .. } => format!(
            ":white_check_mark: {} agents no longer match rule {rule}: {}{more}",
            alerts.len(),
            shown.join(", ")
        ),
        AlertKind::Firing { .. } => format!(
            ":warning: {} agents match rule {rule} past {}: {}{more}",
            alerts.len(),
            human_duration(first.threshold),
            shown.join(", ")
        ),
    };
    clip(&line, FALLBACK_MAX_CHARS)
}

/// Keeps at most [`MAX_BLOCKS`] blocks; when it has to cut, the last kept block says how many
/// were left out.
pub fn limit_blocks(mut blocks: Vec<Value>) -> Vec<Value> {
    if blocks.len() > MAX_BLOCKS {
        let cut = blocks.len() - (MAX_BLOCKS - 1);
        blocks.truncate(MAX_BLOCKS - 1);
        blocks.push(json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("{cut} more blocks left out")}]}));
    }
    blocks
}

/// The webhook payload for alerts of one rule that share a message (alerting reference §4.8).
/// One alert gives [`alert_message`]. More give a header with the count, a summary, the first
/// `max_listed` agents one per line (packed into sections of at most
/// [`SECTION_TEXT_MAX_CHARS`]) and a context block "+k more"; never more than [`MAX_BLOCKS`].
/// `alerts` must not be empty.
pub fn group_message(alerts: &[Alert], max_listed: usize) -> Value {
    if alerts.len() == 1 {
        return alert_message(&alerts[0]);
    }
    let first = &alerts[0];
    let rule = escape(&one_line(&first.rule));
    let n = alerts.len();
    let (header, summary) = match first.kind {
        AlertKind::Resolved { .. } => (
            format!(":white_check_mark: {n} agents no longer match {rule}"),
            format!("*{n} agents* no longer match rule `{rule}`."),
        ),
        AlertKind::Firing { .. } => (
            format!(":warning: {n} agents match {rule}"),
            format!(
                "*{n} agents* are past the {} threshold of rule `{rule}`.",
                human_duration(first.threshold)
            ),
        ),
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&header, HEADER_MAX_CHARS), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&summary, SECTION_TEXT_MAX_CHARS)}}),
    ];
    // Sections of agent lines; room is kept for the closing context block.
    let mut listed = 0;
    let mut current = String::new();
    for alert in alerts.iter().take(max_listed) {
        let line = group_line(alert);
        if !current.is_empty()
            && current.chars().count() + 1 + line.chars().count() > SECTION_TEXT_MAX_CHARS
        {
            // Room for this section, the one being filled and the closing context block.
            if blocks.len() + 3 > MAX_BLOCKS {
                break;
            }
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": std::mem::take(&mut current)}}));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
        listed += 1;
    }
    if !current.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": current}}));
    }
    let more = n - listed;
    if more > 0 {
        blocks.push(json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("+{more} more")}]}));
    }
    json!({"text": group_text(alerts), "blocks": limit_blocks(blocks)})
}

/// The text-only fallback of a group (`{"text": …}`), sent once when Slack refuses the blocks.
pub fn group_text_only(alerts: &[Alert]) -> Value {
    json!({"text": group_text(alerts)})
}

/// The documented JSON body of the generic webhook destination (one POST per message; grouped
/// alerts share it):
///
/// ```json
/// {"version": 1,
///  "status": "firing",                 // or "resolved"
///  "rule": "idle", "severity": "warning", "destination": "ops",
///  "text": "<the same one-line summary as Slack's fallback, Slack-escaped>",
///  "count": 1,
///  "alerts": [{
///    "alert_key": "idle:u1:1714558530000", "episode_key": "idle:u1:1714558530000",
///    "status": "firing", "repeat": 0,
///    "rule": "idle", "severity": "warning",
///    "user_id": "u1", "user_name": "Jane Doe", "state": "routing IDLE",
///    "since": "2024-05-01T10:15:30Z", "fired_at": "2024-05-01T10:28:00Z",
///    "threshold_seconds": 600, "duration_seconds": 750}]}
/// ```
///
/// Strings are raw (JSON-escaped only), except `text`. `repeat` is `null` for resolved alerts;
/// `duration_seconds` is the time in the state (the total for resolved ones).
pub fn webhook_body(destination: &str, alerts: &[Alert]) -> Value {
    let first = &alerts[0];
    let items: Vec<Value> = alerts
        .iter()
        .map(|a| {
            json!({
                "alert_key": a.alert_key,
                "episode_key": a.episode_key,
                "status": a.kind.as_str(),
                "repeat": match a.kind { AlertKind::Firing { repeat } => Some(repeat), AlertKind::Resolved { .. } => None },
                "rule": a.rule,
                "severity": a.severity,
                "user_id": a.user_id.as_str(),
                "user_name": a.user_name,
                "state": a.state,
                "since": a.since.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                "fired_at": a.fired_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                "threshold_seconds": a.threshold.as_secs(),
                "duration_seconds": a.held_for().as_secs(),
            })
        })
        .collect();
    json!({
        "version": 1,
        "status": first.kind.as_str(),
        "rule": first.rule,
        "severity": first.severity,
        "destination": destination,
        "text": group_text(alerts),
        "count": alerts.len(),
        "alerts": items,
    })
}

/// A text-only payload (`{"text": …}`): the fallback sent once when Slack refuses the blocks
/// (`invalid_blocks`, `invalid_payload`, …; alerting reference §4.11).
pub fn text_only_message(alert: &Alert) -> Value {
    json!({"text": alert_text(alert)})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{UserId, parse_timestamp};

    fn alert(name: Option<&str>) -> Alert {
        Alert {
            alert_key: "idle:u1:1714558530000".into(),
            episode_key: String::new(),
            severity: "warning".into(),
            destination: None,
            kind: crate::domain::AlertKind::Firing { repeat: 0 },
            muted: None,
            rule: "idle".into(),
            user_id: UserId::parse("U1").unwrap(),
            user_name: name.map(str::to_string),
            state: "routing IDLE".into(),
            since: parse_timestamp("2024-05-01T10:15:30.500Z").unwrap(),
            threshold: Duration::from_secs(600),
            fired_at: parse_timestamp("2024-05-01T10:28:00.900Z").unwrap(),
        }
    }

    #[test]
    fn escape_replaces_ampersand_first() {
        assert_eq!(escape("a & b <c> &amp;"), "a &amp; b &lt;c&gt; &amp;amp;");
        assert_eq!(escape("<!channel>"), "&lt;!channel&gt;");
        assert_eq!(escape("plain *bold* _it_ é"), "plain *bold* _it_ é");
    }

    #[test]
    fn clip_counts_characters_and_keeps_entities_whole() {
        assert_eq!(clip("short", 5), "short");
        assert_eq!(clip("abcdef", 5), "abcd…");
        assert_eq!(clip("ééééé€", 5), "éééé…");
        assert_eq!(clip("ab&amp;cd", 5), "ab…");
        assert_eq!(clip("ab&amp;cd", 8), "ab&amp;…");
        assert_eq!(clip("abc", 0), "");
    }

    #[test]
    fn durations_and_instants_for_humans() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(750)), "12m 30s");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 3600 + 7 * 60 + 59)),
            "2h 07m"
        );
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d 04h"
        );
        assert_eq!(
            format_utc(parse_timestamp("2024-05-01T12:15:30.999+02:00").unwrap()),
            "2024-05-01 10:15:30 UTC"
        );
    }

    #[test]
    fn message_has_the_exact_shape() {
        let message = alert_message(&alert(Some("Jane Doe")));
        assert_eq!(
            message,
            json!({
                "text": ":warning: Jane Doe idle for 12m 30s (routing IDLE) since 2024-05-01 10:15:30 UTC",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": ":warning: Jane Doe idle for 12m 30s", "emoji": true}},
                    {"type": "section",
                     "text": {"type": "mrkdwn", "text": "*Jane Doe* has been in *routing IDLE* for 12m 30s, past the 10m 00s threshold of rule `idle`."},
                     "fields": [
                        {"type": "mrkdwn", "text": "*Agent*\nJane Doe"},
                        {"type": "mrkdwn", "text": "*User ID*\nu1"},
                        {"type": "mrkdwn", "text": "*State*\nrouting IDLE"},
                        {"type": "mrkdwn", "text": "*Idle for*\n12m 30s"},
                        {"type": "mrkdwn", "text": "*Since*\n2024-05-01 10:15:30 UTC"}
                     ]}
                ]
            })
        );
    }

    #[test]
    fn missing_name_falls_back_to_the_user_id() {
        let message = alert_message(&alert(None));
        assert_eq!(message["blocks"][1]["fields"][0]["text"], "*Agent*\nu1");
        let blank = alert_message(&alert(Some("  ")));
        assert_eq!(
            blank["blocks"][0]["text"]["text"],
            ":warning: u1 idle for 12m 30s"
        );
    }

    #[test]
    fn user_data_is_escaped_everywhere() {
        let mut a = alert(Some("<!channel> Tom & Jerry\n>quote"));
        a.state = "presence <AVAILABLE> & off queue".into();
        a.rule = "idle<x>".into();
        let message = alert_message(&a);
        let text = message.to_string();
        assert!(!text.contains("<!channel>"), "{text}");
        assert_eq!(
            message["blocks"][1]["fields"][0]["text"],
            "*Agent*\n&lt;!channel&gt; Tom &amp; Jerry &gt;quote"
        );
        assert_eq!(
            message["blocks"][1]["fields"][2]["text"],
            "*State*\npresence &lt;AVAILABLE&gt; &amp; off queue"
        );
        assert_eq!(
            message["blocks"][0]["text"]["text"],
            ":warning: &lt;!channel&gt; Tom &amp; Jerry &gt;quote idle for 12m 30s"
        );
        assert!(
            message["text"]
                .as_str()
                .unwrap()
                .starts_with(":warning: &lt;!channel&gt; Tom &amp; Jerry")
        );
        assert!(
            message["blocks"][1]["text"]["text"]
                .as_str()
                .unwrap()
                .ends_with("rule `idle&lt;x&gt;`.")
        );
        // Every remaining '<' or '>' in the JSON would be a Slack control character.
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
    }

    fn chars(v: &Value) -> usize {
        v.as_str().unwrap().chars().count()
    }

    #[test]
    fn every_limit_is_enforced() {
        let mut a = alert(Some(&"&".repeat(5000)));
        a.state = "S".repeat(5000);
        let message = alert_message(&a);
        let header = &message["blocks"][0]["text"]["text"];
        // Clipped at the last whole entity: up to 4 characters short of the limit.
        assert!((HEADER_MAX_CHARS - 5..=HEADER_MAX_CHARS).contains(&chars(header)));
        assert!(header.as_str().unwrap().ends_with("&amp;…"));
        let section = &message["blocks"][1];
        assert!(chars(&section["text"]["text"]) <= SECTION_TEXT_MAX_CHARS);
        assert!(chars(&section["text"]["text"]) >= SECTION_TEXT_MAX_CHARS - 5);
        let fields = section["fields"].as_array().unwrap();
        assert!(fields.len() <= MAX_FIELDS);
        for field in fields {
            assert!(chars(&field["text"]) <= FIELD_MAX_CHARS);
        }
        assert_eq!(chars(&fields[2]["text"]), FIELD_MAX_CHARS);
        assert!(chars(&message["text"]) <= FALLBACK_MAX_CHARS);
        // A long name clipped mid-entity never leaves a dangling '&'.
        let agent = fields[0]["text"].as_str().unwrap();
        assert!(agent.ends_with("&amp;…"), "{}", &agent[agent.len() - 20..]);
    }

    #[test]
    fn text_only_fallback() {
        assert_eq!(
            text_only_message(&alert(Some("Jane"))),
            json!({"text": ":warning: Jane idle for 12m 30s (routing IDLE) since 2024-05-01 10:15:30 UTC"})
        );
    }

    fn many(n: usize, name: &str) -> Vec<Alert> {
        (0..n)
            .map(|i| {
                let mut a = alert(Some(&format!("{name} {i}")));
                a.alert_key = format!("idle:u{i}:1");
                a
            })
            .collect()
    }

    #[test]
    fn a_group_lists_agents_then_says_how_many_more() {
        let alerts = many(25, "Agent");
        let message = group_message(&alerts, 20);
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["text"]["text"], ":warning: 25 agents match idle");
        let listed = message.to_string().matches("• *Agent ").count();
        assert_eq!(listed, 20);
        assert_eq!(blocks.last().unwrap()["elements"][0]["text"], "+5 more");
        let text = message["text"].as_str().unwrap();
        assert!(
            text.starts_with(":warning: 25 agents match rule idle past 10m 00s: Agent 0, Agent 1"),
            "{text}"
        );
        assert!(text.ends_with("+20 more"), "{text}");
        // One alert is the single-alert message.
        assert_eq!(group_message(&alerts[..1], 20), alert_message(&alerts[0]));
    }

    #[test]
    fn a_huge_group_keeps_every_block_limit() {
        // Long names: every line near LINE_MAX_CHARS, so sections fill up and many are needed.
        let alerts = many(400, &"<&>".repeat(400));
        let message = group_message(&alerts, 400);
        let blocks = message["blocks"].as_array().unwrap();
        assert!(blocks.len() <= MAX_BLOCKS, "{}", blocks.len());
        assert!(chars(&blocks[0]["text"]["text"]) <= HEADER_MAX_CHARS);
        for b in blocks.iter().filter(|b| b["type"] == "section") {
            assert!(chars(&b["text"]["text"]) <= SECTION_TEXT_MAX_CHARS);
        }
        let last = blocks.last().unwrap()["elements"][0]["text"]
            .as_str()
            .unwrap();
        assert!(last.starts_with('+') && last.ends_with(" more"), "{last}");
        assert!(chars(&message["text"]) <= FALLBACK_MAX_CHARS);
        let text = message.to_string();
        assert!(
            !text.contains('<') && !text.contains('>'),
            "unescaped user data"
        );
    }

    #[test]
    fn limit_blocks_cuts_at_fifty() {
        let blocks: Vec<Value> = (0..80)
            .map(|i| json!({"type": "divider", "i": i}))
            .collect();
        let kept = limit_blocks(blocks);
        assert_eq!(kept.len(), MAX_BLOCKS);
        assert_eq!(kept[49]["elements"][0]["text"], "31 more blocks left out");
    }

    #[test]
    fn resolved_messages_state_the_total_duration() {
        let mut a = alert(Some("Jane & <Co>"));
        a.kind = AlertKind::Resolved {
            duration: Duration::from_secs(3725),
        };
        let message = alert_message(&a);
        assert_eq!(
            message["blocks"][0]["text"]["text"],
            ":white_check_mark: Jane &amp; &lt;Co&gt; no longer routing IDLE"
        );
        assert_eq!(
            message["text"],
            ":white_check_mark: Jane &amp; &lt;Co&gt; no longer routing IDLE after 1h 02m in total (since 2024-05-01 10:15:30 UTC)"
        );
        assert_eq!(
            message["blocks"][1]["fields"][3]["text"],
            "*Total duration*\n1h 02m"
        );
        let group = group_message(&[a.clone(), a.clone()], 20);
        assert_eq!(
            group["blocks"][0]["text"]["text"],
            ":white_check_mark: 2 agents no longer match idle"
        );
        assert!(group.to_string().contains("1h 02m in total"));
    }

    #[test]
    fn webhook_body_is_the_documented_json() {
        let a = alert(Some("Jane <Doe>"));
        let body = webhook_body("ops", &[a]);
        assert_eq!(
            body,
            json!({
                "version": 1, "status": "firing", "rule": "idle", "severity": "warning",
                "destination": "ops",
                "text": ":warning: Jane &lt;Doe&gt; idle for 12m 30s (routing IDLE) since 2024-05-01 10:15:30 UTC",
                "count": 1,
                "alerts": [{
                    "alert_key": "idle:u1:1714558530000", "episode_key": "",
                    "status": "firing", "repeat": 0, "rule": "idle", "severity": "warning",
                    "user_id": "u1", "user_name": "Jane <Doe>", "state": "routing IDLE",
                    "since": "2024-05-01T10:15:30.500Z", "fired_at": "2024-05-01T10:28:00.900Z",
                    "threshold_seconds": 600, "duration_seconds": 750}]
            })
        );
    }
}

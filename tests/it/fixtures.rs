//! Golden fixtures (`tests/fixtures/*.json`, copied by hand from the protocol reference) and the
//! shape comparison used to hold the simulator to them.
//!
//! The fixtures pin the client's `protocol` types: each one must deserialize, and the key fields
//! must read as the reference says.

use std::collections::BTreeMap;
use std::path::PathBuf;

use agent_monitor::domain::{normalize_system_presence, parse_timestamp};
use agent_monitor::protocol::{
    Channel, ChannelMetadataBody, ChannelTopicEntityListing, ConversationSummaryBody, ErrorBody,
    Notification, NotificationEnvelope, OAuthErrorBody, PresenceDefinitionListing,
    PresenceEventBody, QueueMemberEntityListing, QueueUserEventBody, RoutingStatusEventBody,
    ServerDate, SystemMessageBody, TokenResponse, Topic, UserDetailsQuery,
    UserDetailsQueryResponse, UserEntityListing, UserPresence, UserRoutingStatus,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Every fixture file; the list is checked against the directory.
pub const FIXTURES: [&str; 22] = [
    "token_response.json",
    "oauth_invalid_client.json",
    "channel.json",
    "subscriptions.json",
    "users_page.json",
    "presence_definitions.json",
    "legacy_presencedefinitions.json",
    "routing_status.json",
    "user_presence.json",
    "presence_event.json",
    "routing_status_event.json",
    "conversationsummary_event.json",
    "heartbeat.json",
    "pong.json",
    "socket_closing.json",
    "error_429.json",
    "date.json",
    "queue_members.json",
    "user_details_query.json",
    "user_details_response.json",
    "queue_user_event.json",
    "no_longer_subscribed.json",
];

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The raw text of a fixture.
pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name))
        .unwrap_or_else(|e| panic!("cannot read fixture {name}: {e}"))
}

/// A fixture as JSON.
pub fn fixture(name: &str) -> Value {
    serde_json::from_str(&fixture_text(name))
        .unwrap_or_else(|e| panic!("fixture {name} is not JSON: {e}"))
}

fn typed<T: DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(&fixture_text(name))
        .unwrap_or_else(|e| panic!("fixture {name} does not fit its protocol type: {e}"))
}

/// The shape of a JSON value: every key path (`a.b[].c`) with its JSON type (`string`,
/// `number`, `bool`, `null`, `object`, `array`). Array elements share the path `[]`.
pub fn shape(value: &Value) -> BTreeMap<String, &'static str> {
    fn walk(value: &Value, path: String, out: &mut BTreeMap<String, &'static str>) {
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        out.insert(path.clone(), kind);
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(child, child_path, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    walk(value, String::new(), &mut out);
    out
}

/// Asserts that `actual` has the shape of fixture `name`: the same key paths with the same JSON
/// types, values ignored. A `null` in the fixture marks an optional field (absent or any type).
pub fn assert_same_shape(name: &str, actual: &Value) {
    let expected = shape(&fixture(name));
    let got = shape(actual);
    let missing: Vec<String> = expected
        .iter()
        .filter(|(path, kind)| **kind != "null" && got.get(*path) != Some(kind))
        .map(|(path, kind)| format!("{path}: {kind} (got {:?})", got.get(path)))
        .collect();
    let optional_prefixes: Vec<&String> = expected
        .iter()
        .filter(|(_, kind)| **kind == "null")
        .map(|(path, _)| path)
        .collect();
    let extra: Vec<String> = got
        .iter()
        .filter(|(path, _)| !expected.contains_key(*path))
        .filter(|(path, _)| {
            !optional_prefixes
                .iter()
                .any(|p| path.starts_with(p.as_str()))
        })
        .map(|(path, kind)| format!("{path}: {kind}"))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "shape of {name} differs\n  missing or wrong type: {missing:?}\n  unexpected: {extra:?}\n  actual: {actual}"
    );
}

#[test]
fn every_fixture_is_listed_and_is_json() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture_path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    for name in FIXTURES {
        assert!(fixture(name).is_object(), "{name}");
    }
}

#[test]
fn shape_ignores_values_but_not_types_or_keys() {
    let a: Value = serde_json::json!({"a": 1, "b": [{"c": "x"}], "d": null});
    assert_eq!(
        shape(&a).into_iter().collect::<Vec<_>>(),
        vec![
            ("".to_string(), "object"),
            ("a".to_string(), "number"),
            ("b".to_string(), "array"),
            ("b[]".to_string(), "object"),
            ("b[].c".to_string(), "string"),
            ("d".to_string(), "null"),
        ]
    );
}

#[test]
fn oauth_fixtures_fit_the_protocol() {
    let token: TokenResponse = typed("token_response.json");
    assert_eq!(token.token_type, "bearer");
    assert_eq!(token.expires_in, 86_399);
    assert!(!token.access_token.is_empty());

    let error: OAuthErrorBody = typed("oauth_invalid_client.json");
    assert_eq!(error.error, "invalid_client");
    assert_eq!(error.description.as_deref(), Some("authentication failed"));
    assert_eq!(
        error.error_description.as_deref(),
        Some("authentication failed")
    );
}

#[test]
fn channel_fixtures_fit_the_protocol() {
    let channel: Channel = typed("channel.json");
    assert_eq!(channel.id, "streaming-0-fmtdmf8cdis7jh14udg5p89t6z");
    assert!(
        channel
            .connect_uri
            .ends_with(&format!("/channels/{}", channel.id))
    );
    parse_timestamp(channel.expires.as_deref().unwrap()).unwrap();

    let subs: ChannelTopicEntityListing = typed("subscriptions.json");
    assert_eq!(subs.entities.len(), 1);
    assert_eq!(subs.entities[0].state.as_deref(), Some("Permitted"));
    assert!(matches!(
        Topic::parse(&subs.entities[0].id),
        Topic::UserPresence("3f1c9a52-7b4e-4d8a-9c21-5e6f7a8b9c0d")
    ));
}

#[test]
fn users_fixtures_fit_the_protocol() {
    let page: UserEntityListing = typed("users_page.json");
    assert_eq!(page.entities.len(), 1);
    assert_eq!(
        (
            page.page_size,
            page.page_number,
            page.total,
            page.page_count
        ),
        (Some(1), Some(1), Some(2), Some(2))
    );
    assert!(page.next_uri.as_deref().unwrap().contains("pageNumber=2"));
    assert_eq!(page.previous_uri, None);
    let user = &page.entities[0];
    assert_eq!(user.name.as_deref(), Some("Agent 0001"));
    assert_eq!(user.state.as_deref(), Some("active"));
    let presence = user.presence.as_ref().unwrap();
    let definition = presence.presence_definition.as_ref().unwrap();
    assert_eq!(definition.id, "e08eaf1b-ee47-4fa9-a231-1200e284798f");
    assert_eq!(
        normalize_system_presence(definition.system_presence.as_deref().unwrap()),
        "ON_QUEUE"
    );
    parse_timestamp(presence.modified_date.as_deref().unwrap()).unwrap();
    let routing = user.routing_status.as_ref().unwrap();
    assert_eq!(routing.status, "IDLE");
    assert_eq!(routing.user_id.as_deref(), Some(user.id.as_str()));

    let routing: UserRoutingStatus = typed("routing_status.json");
    assert_eq!(routing.status, "INTERACTING");
    assert_eq!(
        parse_timestamp(routing.start_time.as_deref().unwrap()).unwrap(),
        parse_timestamp("2024-05-01T10:16:02.456Z").unwrap()
    );

    let presence: UserPresence = typed("user_presence.json");
    assert_eq!(presence.source.as_deref(), Some("PURECLOUD"));
    assert_eq!(
        presence.presence_definition.unwrap().id,
        "6a3af858-942f-489d-9700-5f9bcdcdae9b"
    );
}

#[test]
fn presence_definition_fixtures_fit_the_protocol() {
    let new: PresenceDefinitionListing = typed("presence_definitions.json");
    assert_eq!(new.total, Some(2));
    let on_queue = &new.entities[0];
    assert_eq!(on_queue.system_presence.as_deref(), Some("OnQueue"));
    assert_eq!(on_queue.kind.as_deref(), Some("System"));
    let lunch = &new.entities[1];
    assert_eq!(lunch.kind.as_deref(), Some("User"));
    assert_eq!(
        lunch
            .language_labels
            .as_ref()
            .unwrap()
            .get("en_US")
            .unwrap(),
        "Lunch"
    );
    assert_eq!(
        normalize_system_presence(lunch.system_presence.as_deref().unwrap()),
        "MEAL"
    );
    assert_eq!(lunch.deactivated, Some(false));

    let legacy: PresenceDefinitionListing = typed("legacy_presencedefinitions.json");
    assert_eq!(
        legacy.entities[1].system_presence.as_deref(),
        Some("On Queue")
    );
    assert_eq!(
        normalize_system_presence(legacy.entities[1].system_presence.as_deref().unwrap()),
        "ON_QUEUE"
    );
}

#[test]
fn notification_fixtures_fit_the_protocol() {
    let text = fixture_text("presence_event.json");
    let envelope: NotificationEnvelope = serde_json::from_str(&text).unwrap();
    assert_eq!(
        Topic::parse(&envelope.topic_name),
        Topic::UserPresence("3f1c9a52-7b4e-4d8a-9c21-5e6f7a8b9c0d")
    );
    let presence: Notification<PresenceEventBody> = typed("presence_event.json");
    assert_eq!(presence.version.as_deref(), Some("2"));
    assert_eq!(
        presence
            .event_body
            .presence_definition
            .system_presence
            .as_deref(),
        Some("AVAILABLE")
    );
    assert_eq!(
        presence.metadata.unwrap().correlation_id,
        "c0ffee00-0000-0000-0000-000000000001"
    );
    parse_timestamp(&presence.event_body.modified_date).unwrap();

    let routing: Notification<RoutingStatusEventBody> = typed("routing_status_event.json");
    assert_eq!(
        Topic::parse(&routing.topic_name),
        Topic::UserRoutingStatus("3f1c9a52-7b4e-4d8a-9c21-5e6f7a8b9c0d")
    );
    assert_eq!(routing.event_body.routing_status.status, "INTERACTING");
    assert_eq!(
        routing.event_body.id.as_deref(),
        Some("3f1c9a52-7b4e-4d8a-9c21-5e6f7a8b9c0d")
    );

    let summary: Notification<ConversationSummaryBody> = typed("conversationsummary_event.json");
    assert_eq!(
        Topic::parse(&summary.topic_name),
        Topic::UserConversationSummary("3f1c9a52-7b4e-4d8a-9c21-5e6f7a8b9c0d")
    );
    assert_eq!(summary.event_body.active_total(), 1);

    for (name, message) in [
        ("heartbeat.json", "WebSocket Heartbeat"),
        ("pong.json", "pong"),
    ] {
        let frame: Notification<ChannelMetadataBody> = typed(name);
        assert_eq!(Topic::parse(&frame.topic_name), Topic::ChannelMetadata);
        assert_eq!(frame.event_body.message, message);
    }

    let closing: Notification<SystemMessageBody> = typed("socket_closing.json");
    assert_eq!(Topic::parse(&closing.topic_name), Topic::SocketClosing);
    assert_eq!(
        closing.event_body.channel_id.as_deref(),
        Some("streaming-0-fmtdmf8cdis7jh14udg5p89t6z")
    );
}

#[test]
fn error_and_date_fixtures_fit_the_protocol() {
    let error: ErrorBody = typed("error_429.json");
    assert_eq!(error.status, Some(429));
    assert_eq!(error.code.as_deref(), Some("too.many.requests.retry.after"));
    assert!(
        error
            .message
            .unwrap()
            .contains("Retry the request in [3] seconds")
    );

    let date: ServerDate = typed("date.json");
    assert_eq!(
        parse_timestamp(&date.current_date).unwrap(),
        parse_timestamp("2024-05-01T10:00:00Z").unwrap()
    );
}

#[test]
fn analytics_user_details_fixtures_fit_the_protocol() {
    let query: UserDetailsQuery = typed("user_details_query.json");
    assert_eq!(
        query.interval,
        "2024-05-01T09:00:00.000Z/2024-05-01T11:00:00.000Z"
    );
    assert_eq!(query.order.as_deref(), Some("asc"));
    let predicate = &query.user_filters[0].predicates[0];
    assert_eq!(query.user_filters[0].kind, "or");
    assert_eq!(predicate.dimension, "userId");
    assert_eq!(predicate.operator.as_deref(), Some("matches"));
    assert_eq!(
        query.presence_filters[0].predicates[0].dimension,
        "systemPresence"
    );
    assert_eq!(
        query.routing_status_filters[0].predicates[0]
            .value
            .as_deref(),
        Some("IDLE")
    );
    let paging = query.paging.unwrap();
    assert_eq!((paging.page_size, paging.page_number), (100, 1));
    // Serializing our type gives back the reference's keys.
    assert_eq!(
        shape(&serde_json::to_value(&query).unwrap()),
        shape(&fixture("user_details_query.json"))
    );

    let response: UserDetailsQueryResponse = typed("user_details_response.json");
    assert_eq!(response.total_hits, Some(1));
    let detail = &response.user_details[0];
    assert_eq!(detail.user_id, "8f2a4c1e-5b3d-4e6f-9a7b-1c2d3e4f5a6b");
    let presence = &detail.primary_presence[0];
    assert_eq!(presence.system_presence.as_deref(), Some("AVAILABLE"));
    assert_eq!(
        presence.organization_presence_id.as_deref(),
        Some("6a3af858-942f-489d-9700-5f9bcdcdae9b")
    );
    assert_eq!(
        presence.end_time.as_deref(),
        Some("2024-05-01T10:19:58.000Z")
    );
    let routing = &detail.routing_status[0];
    assert_eq!(routing.routing_status, "IDLE");
    assert_eq!(routing.start_time, "2024-05-01T10:19:58.000Z");
    // An empty answer may omit `userDetails`.
    let empty: UserDetailsQueryResponse = serde_json::from_str(r#"{"totalHits":0}"#).unwrap();
    assert!(empty.user_details.is_empty());
}

#[test]
fn queue_user_event_and_no_longer_subscribed_fixtures_fit_the_protocol() {
    let event: Notification<QueueUserEventBody> = typed("queue_user_event.json");
    assert_eq!(
        Topic::parse(&event.topic_name),
        Topic::QueueUsers("3b1f7c2a-9d4e-4a6b-8c5d-2e1f0a9b8c7d")
    );
    assert_eq!(
        event.event_body.user_id(),
        Some("8f2a4c1e-5b3d-4e6f-9a7b-1c2d3e4f5a6b")
    );
    assert_eq!(event.event_body.joined, Some(true));

    let gone: Notification<SystemMessageBody> = typed("no_longer_subscribed.json");
    assert_eq!(Topic::parse(&gone.topic_name), Topic::NoLongerSubscribed);
    assert_eq!(
        gone.event_body.reason.as_deref(),
        Some("another_channel_subscribed")
    );
}

#[test]
fn queue_members_fixture_fits_the_protocol() {
    let page: QueueMemberEntityListing = typed("queue_members.json");
    assert_eq!((page.page_size, page.page_number), (Some(1), Some(1)));
    assert!(page.next_uri.as_deref().unwrap().contains("pageNumber=2"));
    assert_eq!(page.previous_uri, None);
    let raw = fixture("queue_members.json");
    assert!(
        raw.get("total").is_none() && raw.get("pageCount").is_none(),
        "protocol §6: no total or pageCount"
    );
    let member = &page.entities[0];
    assert_eq!(member.user_id(), "3f1c9a52-7b4e-4d8a-9c21-5e6f7a8b9c0d");
    assert_eq!(member.user.as_ref().unwrap().id, member.id);
    assert_eq!(member.name.as_deref(), Some("Agent 0001"));
    assert_eq!(member.ring_number, Some(1));
    assert_eq!(member.joined, Some(true));
    assert_eq!(member.member_by.as_deref(), Some("user"));
    let routing = member.routing_status.as_ref().unwrap();
    assert_eq!(routing.status, "IDLE");
    parse_timestamp(routing.start_time.as_deref().unwrap()).unwrap();
}

/// The simulator's real `GET …/members` output has the fixture's shape (first page of two,
/// expanded), and its last page has no `nextUri`.
#[tokio::test]
async fn simulator_queue_members_have_the_fixture_shape() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cfg = agent_monitor::sim::SimConfig {
        agents: 2,
        queues: 1,
        autopilot: false,
        ..agent_monitor::sim::SimConfig::default()
    };
    let sim = agent_monitor::sim::Simulator::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let token: TokenResponse = http
        .post(format!("{}/oauth/token", sim.base_url()))
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let queue = sim.queue_ids().await.unwrap().remove(0);
    let mut pages = Vec::new();
    for n in 1..=2 {
        let page: Value = http
            .get(format!(
                "{}/api/v2/routing/queues/{queue}/members?pageSize=1&pageNumber={n}&expand=routingStatus",
                sim.base_url()
            ))
            .bearer_auth(&token.access_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages.push(page);
    }
    assert_same_shape("queue_members.json", &pages[0]);
    assert!(pages[1].get("nextUri").is_none(), "{}", pages[1]);
    assert!(pages[1].get("previousUri").is_some());
    sim.shutdown().await;
}

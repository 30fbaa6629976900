//! Parsing of Notifications API WebSocket frames into [`Frame`]s.
//!
//! One parse per frame: the envelope is read with the body kept raw, the topic name decides the
//! body type, and the body is parsed once into it (protocol reference §3–4). Anything that cannot
//! be used is a [`MalformedError`]: the caller logs it, counts it and reads on.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::domain::{
    MalformedError, UserId, normalize_routing_status, normalize_system_presence, parse_timestamp,
};
use crate::protocol::{
    ChannelMetadataBody, ConversationSummaryBody, NotificationEnvelope, PresenceEventBody,
    QueueUserEventBody, RoutingStatusEventBody, SystemMessageBody, Topic,
};

/// A presence change as the agent actor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceUpdate {
    /// Normalized system presence (`AVAILABLE`, `ON_QUEUE`, …).
    pub system: String,
    /// Org presence definition id.
    pub definition_id: Option<String>,
    /// Org presence label, resolved from the presence definitions (filled in by the receiver).
    pub label: Option<String>,
    /// `modifiedDate`, UTC, milliseconds.
    pub timestamp: DateTime<Utc>,
}

/// A routing-status change as the agent actor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingUpdate {
    /// Normalized routing status (`IDLE`, `INTERACTING`, …).
    pub status: String,
    /// `startTime`, UTC, milliseconds.
    pub timestamp: DateTime<Utc>,
}

/// One parsed WebSocket frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `channel.metadata` heartbeat (liveness only).
    Heartbeat,
    /// `channel.metadata` pong, the reply to our ping (liveness only).
    Pong,
    /// `v2.system.socket_closing`: connect a new socket within a minute.
    SocketClosing(SystemMessageBody),
    /// `v2.system.no_longer_subscribed.{id}`: the channel lost its subscriptions.
    NoLongerSubscribed(SystemMessageBody),
    /// `v2.system.token_revoked.{id}`.
    TokenRevoked(SystemMessageBody),
    /// `{"result":"404"}`-style replies: the channel is gone or the token expired.
    ChannelGone,
    /// `v2.users.{id}.presence`.
    Presence(UserId, PresenceUpdate),
    /// `v2.users.{id}.routingStatus`.
    Routing(UserId, RoutingUpdate),
    /// `v2.users.{id}.conversationsummary`: active conversations over all media types.
    Conversations(UserId, u32),
    /// `v2.routing.queues.{id}.users`: a user joined (`joined = true`) or left a queue. The
    /// queue id is lowercase like user ids.
    QueueMembership {
        queue_id: String,
        user: UserId,
        joined: bool,
    },
    /// A topic we do not handle (logged at debug level).
    Other(String),
}

fn body<T: DeserializeOwned>(raw: Option<&RawValue>, topic: &str) -> Result<T, MalformedError> {
    let raw = raw.ok_or_else(|| MalformedError::new(format!("{topic}: no eventBody")))?;
    serde_json::from_str(raw.get())
        .map_err(|e| MalformedError::new(format!("{topic}: bad eventBody: {e}")))
}

impl Frame {
    /// The `kind` label of the notifications metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Heartbeat => "heartbeat",
            Frame::Pong => "pong",
            Frame::SocketClosing(_) => "socket_closing",
            Frame::NoLongerSubscribed(_) | Frame::TokenRevoked(_) | Frame::ChannelGone => "system",
            Frame::Presence(..) => "presence",
            Frame::Routing(..) => "routing",
            Frame::Conversations(..) => "conversationsummary",
            Frame::QueueMembership { .. } => "queue_membership",
            Frame::Other(_) => "other",
        }
    }
}

/// How far in the future a Genesys timestamp may lie (clock skew) before it is malformed. A
/// timestamp a little in the future is accepted (the idle rule treats it as now); one far in
/// the future would outrank every real event after it and freeze the agent's state.
pub const MAX_FUTURE_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Parses an event timestamp and refuses one more than [`MAX_FUTURE_SKEW`] ahead of `now`
/// (Genesys time).
fn event_time(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, MalformedError> {
    let at = parse_timestamp(raw)?;
    if at > now + MAX_FUTURE_SKEW {
        return Err(MalformedError::new(format!(
            "timestamp {raw:?} is more than 5 minutes in the future"
        )));
    }
    Ok(at)
}

fn presence_frame(
    name: &str,
    user: UserId,
    event: PresenceEventBody,
    now: DateTime<Utc>,
) -> Result<Frame, MalformedError> {
    let system = event.presence_definition.system_presence.ok_or_else(|| {
        MalformedError::new(format!("{name}: presenceDefinition has no systemPresence"))
    })?;
    Ok(Frame::Presence(
        user,
        PresenceUpdate {
            system: normalize_system_presence(system),
            definition_id: Some(event.presence_definition.id).filter(|id| !id.is_empty()),
            label: None,
            timestamp: event_time(&event.modified_date, now)?,
        },
    ))
}

fn routing_frame(
    user: UserId,
    event: RoutingStatusEventBody,
    now: DateTime<Utc>,
) -> Result<Frame, MalformedError> {
    Ok(Frame::Routing(
        user,
        RoutingUpdate {
            timestamp: event_time(&event.routing_status.start_time, now)?,
            status: normalize_routing_status(event.routing_status.status),
        },
    ))
}

fn metadata_frame(meta: ChannelMetadataBody) -> Frame {
    if meta.message.eq_ignore_ascii_case("pong") {
        Frame::Pong
    } else {
        Frame::Heartbeat
    }
}

/// Parses one text frame. Unknown topics are [`Frame::Other`], not errors; unusable JSON, a
/// missing or zoneless timestamp, or an empty user id is a [`MalformedError`].
///
/// Two paths, one result: the hot topics (presence, routing status, conversation summary,
/// channel metadata) are read in one pass when `topicName` comes before `eventBody`, as Genesys
/// sends it ([`one_pass`]); anything else, and any frame the one pass cannot take whole
/// (another key order, escapes in keys, any error), goes through the general path, which keeps
/// the body raw and parses it a second time. The one pass only succeeds where the general path
/// gives the same frame, so errors and their messages always come from the general path.
pub fn parse_frame(text: &str) -> Result<Frame, MalformedError> {
    parse_frame_at(text, Utc::now())
}

/// [`parse_frame`] with Genesys's "now" (`crate::clock::Clock::now`, the local clock plus the
/// measured offset) for the future-timestamp check, so a skewed local clock does not turn
/// every event into a malformed one.
pub fn parse_frame_at(text: &str, now: DateTime<Utc>) -> Result<Frame, MalformedError> {
    if let Some(frame) = one_pass(text, now) {
        return Ok(frame);
    }
    parse_frame_general(text, now)
}

/// The hot topics' bodies, parsed in the envelope's pass.
enum HotBody {
    Presence(PresenceEventBody),
    Routing(RoutingStatusEventBody),
    Conversations(ConversationSummaryBody),
    Metadata(ChannelMetadataBody),
}

/// The envelope of a hot topic with its body already typed (see [`one_pass`]).
struct OnePass<'a> {
    topic: &'a str,
    body: HotBody,
}

impl<'de> serde::Deserialize<'de> for OnePass<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Envelope;
        impl<'de> serde::de::Visitor<'de> for Envelope {
            type Value = OnePass<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a notification with topicName before eventBody")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OnePass<'de>, A::Error> {
                use serde::de::Error;
                let (mut topic, mut body) = (None::<&'de str>, None);
                // Borrowed keys and topic: an escaped one fails here and takes the general path.
                while let Some(key) = map.next_key::<&'de str>()? {
                    match key {
                        "topicName" if topic.is_none() => topic = Some(map.next_value()?),
                        "eventBody" if body.is_none() => {
                            let name = topic.ok_or_else(|| A::Error::custom("body first"))?;
                            body = Some(match Topic::parse(name) {
                                Topic::UserPresence(_) => HotBody::Presence(map.next_value()?),
                                Topic::UserRoutingStatus(_) => HotBody::Routing(map.next_value()?),
                                Topic::UserConversationSummary(_) => {
                                    HotBody::Conversations(map.next_value()?)
                                }
                                Topic::ChannelMetadata => HotBody::Metadata(map.next_value()?),
                                _ => return Err(A::Error::custom("not a hot topic")),
                            });
                        }
                        "topicName" | "eventBody" => return Err(A::Error::custom("repeated")),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                match (topic, body) {
                    (Some(topic), Some(body)) => Ok(OnePass { topic, body }),
                    _ => Err(A::Error::custom("incomplete")),
                }
            }
        }
        deserializer.deserialize_map(Envelope)
    }
}

/// One pass over a hot topic's frame: the body is parsed into its type as the envelope is read,
/// instead of being skipped as raw JSON and parsed again. `None` whenever the frame is not
/// exactly the common case, so the general path decides (and words every error).
fn one_pass(text: &str, now: DateTime<Utc>) -> Option<Frame> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let OnePass { topic, body } = serde::Deserialize::deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    let frame = match (Topic::parse(topic), body) {
        (Topic::UserPresence(id), HotBody::Presence(event)) => {
            presence_frame(topic, UserId::parse(id).ok()?, event, now)
        }
        (Topic::UserRoutingStatus(id), HotBody::Routing(event)) => {
            routing_frame(UserId::parse(id).ok()?, event, now)
        }
        (Topic::UserConversationSummary(id), HotBody::Conversations(event)) => Ok(
            Frame::Conversations(UserId::parse(id).ok()?, event.active_total()),
        ),
        (Topic::ChannelMetadata, HotBody::Metadata(meta)) => Ok(metadata_frame(meta)),
        _ => return None,
    };
    frame.ok()
}

/// The general path of [`parse_frame`]: envelope with the body raw, then the body.
fn parse_frame_general(text: &str, now: DateTime<Utc>) -> Result<Frame, MalformedError> {
    let envelope: NotificationEnvelope<'_> = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(e) => {
            // `{"result":"404"}` has no topicName: the channel is gone or the token expired.
            #[derive(serde::Deserialize)]
            struct ResultReply {
                result: String,
            }
            if let Ok(reply) = serde_json::from_str::<ResultReply>(text) {
                if reply.result == "404" {
                    return Ok(Frame::ChannelGone);
                }
                return Ok(Frame::Other(format!("result {}", reply.result)));
            }
            return Err(MalformedError::new(format!("not a notification: {e}")));
        }
    };
    let name: &str = &envelope.topic_name;
    let raw = envelope.event_body;
    match Topic::parse(name) {
        Topic::ChannelMetadata => Ok(metadata_frame(body(raw, name)?)),
        Topic::SocketClosing => Ok(Frame::SocketClosing(body(raw, name).unwrap_or_default())),
        Topic::NoLongerSubscribed => Ok(Frame::NoLongerSubscribed(
            body(raw, name).unwrap_or_default(),
        )),
        Topic::TokenRevoked => Ok(Frame::TokenRevoked(body(raw, name).unwrap_or_default())),
        Topic::UserPresence(id) => {
            let user = UserId::parse(id)?;
            presence_frame(name, user, body(raw, name)?, now)
        }
        Topic::UserRoutingStatus(id) => {
            let user = UserId::parse(id)?;
            routing_frame(user, body(raw, name)?, now)
        }
        Topic::UserConversationSummary(id) => {
            let user = UserId::parse(id)?;
            let event: ConversationSummaryBody = body(raw, name)?;
            Ok(Frame::Conversations(user, event.active_total()))
        }
        Topic::QueueUsers(queue) => {
            let event: QueueUserEventBody = body(raw, name)?;
            let user = UserId::parse(event.user_id().ok_or_else(|| {
                MalformedError::new(format!("{name}: no user id in the queue member"))
            })?)?;
            let joined = event
                .joined
                .ok_or_else(|| MalformedError::new(format!("{name}: no joined flag")))?;
            Ok(Frame::QueueMembership {
                queue_id: queue.to_ascii_lowercase(),
                user,
                joined,
            })
        }
        Topic::Other(other) => Ok(Frame::Other(other.to_string())),
    }
}

/// The current presence and routing status of a listed user (`GET /api/v2/users?expand=…`), as
/// updates for the snapshot. A part that is missing or malformed is `Err` (logged by the caller);
/// the other part is still used.
pub fn updates_from_user(
    user: &crate::protocol::User,
    now: DateTime<Utc>,
) -> (
    Result<PresenceUpdate, MalformedError>,
    Result<RoutingUpdate, MalformedError>,
) {
    let presence = (|| {
        let presence = user
            .presence
            .as_ref()
            .ok_or_else(|| MalformedError::new("no presence"))?;
        let definition = presence
            .presence_definition
            .as_ref()
            .ok_or_else(|| MalformedError::new("presence has no presenceDefinition"))?;
        let system = definition
            .system_presence
            .as_deref()
            .ok_or_else(|| MalformedError::new("presenceDefinition has no systemPresence"))?;
        let modified = presence
            .modified_date
            .as_deref()
            .ok_or_else(|| MalformedError::new("presence has no modifiedDate"))?;
        Ok(PresenceUpdate {
            system: normalize_system_presence(system),
            definition_id: Some(definition.id.clone()).filter(|id| !id.is_empty()),
            label: None,
            timestamp: event_time(modified, now)?,
        })
    })();
    let routing = (|| {
        let routing = user
            .routing_status
            .as_ref()
            .ok_or_else(|| MalformedError::new("no routingStatus"))?;
        let start = routing
            .start_time
            .as_deref()
            .ok_or_else(|| MalformedError::new("routingStatus has no startTime"))?;
        Ok(RoutingUpdate {
            status: normalize_routing_status(&routing.status),
            timestamp: event_time(start, now)?,
        })
    })();
    (presence, routing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_takes_user_from_topic_and_normalizes() {
        let frame = parse_frame(
            r#"{"topicName":"v2.users.ABC.presence","version":"2","eventBody":{"source":"PURECLOUD",
            "presenceDefinition":{"id":"6a3af858-942f-489d-9700-5f9bcdcdae9b","systemPresence":"On Queue"},
            "primary":true,"message":"","modifiedDate":"2024-05-01T10:15:30.123Z"},"metadata":{"CorrelationId":"x"}}"#,
        )
        .unwrap();
        let Frame::Presence(user, update) = frame else {
            panic!("{frame:?}")
        };
        assert_eq!(user.as_str(), "abc");
        assert_eq!(update.system, "ON_QUEUE");
        assert_eq!(
            update.definition_id.as_deref(),
            Some("6a3af858-942f-489d-9700-5f9bcdcdae9b")
        );
    }

    #[test]
    fn routing_and_metadata() {
        let frame = parse_frame(
            r#"{"topicName":"v2.users.U1.routingStatus","eventBody":{"id":"U1","routingStatus":{"status":"IDLE","startTime":"2024-05-01T10:16:02+00:00"}}}"#,
        )
        .unwrap();
        assert!(
            matches!(frame, Frame::Routing(_, RoutingUpdate { ref status, .. }) if status == "IDLE")
        );
        assert_eq!(
            parse_frame(
                r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#
            )
            .unwrap(),
            Frame::Heartbeat
        );
        assert_eq!(
            parse_frame(r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#)
                .unwrap(),
            Frame::Pong
        );
        assert_eq!(
            parse_frame(r#"{"result":"404"}"#).unwrap(),
            Frame::ChannelGone
        );
    }

    #[test]
    fn one_pass_and_general_path_agree() {
        for text in [
            include_str!("../tests/fixtures/routing_status_event.json"),
            include_str!("../tests/fixtures/presence_event.json"),
            include_str!("../tests/fixtures/conversationsummary_event.json"),
            include_str!("../tests/fixtures/heartbeat.json"),
            include_str!("../tests/fixtures/pong.json"),
            // Body before topic: only the general path takes it.
            r#"{"eventBody":{"routingStatus":{"status":"Idle","startTime":"2024-05-01T10:16:02Z"}},"topicName":"v2.users.U1.routingStatus"}"#,
        ] {
            let general = parse_frame_general(text, Utc::now()).unwrap();
            assert_eq!(parse_frame(text).unwrap(), general, "{text}");
            if let Some(fast) = one_pass(text, Utc::now()) {
                assert_eq!(fast, general, "{text}");
            }
        }
        assert!(
            one_pass(
                include_str!("../tests/fixtures/routing_status_event.json"),
                Utc::now()
            )
            .is_some()
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"topicName":"v2.users.U1.routingStatus","eventBody":{"id":"U1"}}"#,
            r#"{"topicName":"v2.users.U1.routingStatus","eventBody":{"routingStatus":{"status":"IDLE","startTime":"2024-05-01T10:16:02"}}}"#,
            r#"{"topicName":"v2.users.U1.presence","eventBody":{"presenceDefinition":{"id":"x"},"modifiedDate":"2024-05-01T10:16:02Z"}}"#,
            r#"{"topicName":"v2.users.U1.presence"}"#,
        ] {
            assert!(parse_frame(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_frame(r#"{"topicName":"v2.users.U1.geolocation","eventBody":{}}"#).unwrap(),
            Frame::Other("v2.users.U1.geolocation".into())
        );
    }
}

//! The streaming side: `GET /channels/{id}` WebSocket sockets and the frames they carry
//! (protocol reference §3 and §4).
//!
//! Each socket task registers an outgoing queue with the core, forwards the client's text frames
//! to it, and writes whatever the core queues. The task never decides anything by itself.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocketStream};
use serde_json::json;
use tokio::sync::mpsc;

use super::core::CoreHandle;
use super::world::Change;
use crate::domain::format_timestamp;
use crate::protocol::{
    ChannelMetadataBody, ConversationCounts, ConversationSummaryBody, MediaSummary, Notification,
    NotificationMetadata, PresenceDefinitionRef, PresenceEventBody, QueueUserEventBody,
    RoutingStatusEventBody, RoutingStatusValue, TOPIC_CHANNEL_METADATA, TOPIC_NO_LONGER_SUBSCRIBED,
    TOPIC_SOCKET_CLOSING, UserRef, queue_users_topic,
};

/// What the core asks a socket task to do.
#[derive(Debug)]
pub enum Outgoing {
    /// Write a text frame.
    Text(String),
    /// Send a close frame, then end.
    Close(CloseCode, String),
    /// End without a close frame: the TCP connection is simply dropped (the client sees 1006).
    Drop,
    /// Stop (`true`) or resume (`false`) reading the client's frames. While paused nothing is
    /// read, so not even the automatic answer to an RFC 6455 ping goes out: the connection
    /// looks black-holed.
    Pause(bool),
    /// Write nothing (and read nothing) for this long, then go on with the queued frames in
    /// order (chaos: delayed deliveries).
    Hold(Duration),
}

impl Outgoing {
    /// A normal-closure close frame with a reason.
    pub fn close(reason: &str) -> Outgoing {
        Outgoing::Close(CloseCode::Normal, reason.to_string())
    }
}

/// Serves one accepted socket until either side ends it.
pub async fn serve(socket: WebSocketStream, channel_id: String, core: CoreHandle) {
    let (tx, mut rx) = mpsc::channel(super::core::SOCKET_QUEUE_CAPACITY);
    let (mut sink, mut stream) = socket.split();
    let opened = core
        .call(move |c| c.socket_opened(&channel_id, tx))
        .await
        .ok()
        .flatten();
    let Some(socket_id) = opened else {
        let _ = sink
            .send(Message::close_with(CloseCode::Normal, "channel not found"))
            .await;
        return;
    };
    let mut paused = false;
    // A non-text item found while draining a burst of text frames, handled next.
    let mut pending: Option<Outgoing> = None;
    loop {
        let out = match pending.take() {
            Some(out) => Some(out),
            None => tokio::select! {
                out = rx.recv() => out,
                incoming = stream.next(), if !paused => {
                    match incoming {
                        Some(Ok(Message::Text(text))) => {
                            core.cast(move |c| c.socket_text(socket_id, &text)).await;
                        }
                        Some(Ok(Message::Close(_))) => {
                            // Flushes the close reply tungstenite queued for the client.
                            let _ = sink.close().await;
                            break;
                        }
                        Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    }
                    continue;
                }
            },
        };
        match out {
            Some(Outgoing::Pause(on)) => paused = on,
            Some(Outgoing::Hold(pause)) => tokio::time::sleep(pause).await,
            Some(Outgoing::Text(text)) => {
                // Coalesce a burst: feed every text frame already queued (up to a bound),
                // then flush once, instead of one flush per frame.
                if sink.feed(Message::Text(text)).await.is_err() {
                    break;
                }
                let mut broken = false;
                for _ in 0..1024 {
                    match rx.try_recv() {
                        Ok(Outgoing::Text(text)) => {
                            if sink.feed(Message::Text(text)).await.is_err() {
                                broken = true;
                                break;
                            }
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if broken || sink.flush().await.is_err() {
                    break;
                }
            }
            Some(Outgoing::Close(code, reason)) => {
                let _ = sink.send(Message::close_with(code, reason)).await;
                // Give the client a moment to answer the close handshake.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .await;
                break;
            }
            Some(Outgoing::Drop) | None => break,
        }
    }
    // Dropping both halves closes the TCP connection; for `Drop` no close frame was written.
    drop(sink);
    drop(stream);
    core.cast(move |c| c.socket_closed(socket_id)).await;
}

/// `{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}`.
pub fn heartbeat_frame() -> String {
    metadata_frame("WebSocket Heartbeat")
}

/// `{"topicName":"channel.metadata","eventBody":{"message":"pong"}}`.
pub fn pong_frame() -> String {
    metadata_frame("pong")
}

fn metadata_frame(message: &str) -> String {
    let notification = Notification {
        topic_name: TOPIC_CHANNEL_METADATA.to_string(),
        version: None,
        event_body: ChannelMetadataBody {
            message: message.to_string(),
        },
        metadata: None,
    };
    serde_json::to_string(&notification).unwrap_or_default()
}

/// The `v2.system.socket_closing` notice (body model `SystemMessageSystemMessage`).
pub fn socket_closing_frame(channel_id: &str, client_id: &str, correlation_id: &str) -> String {
    json!({
        "topicName": TOPIC_SOCKET_CLOSING,
        "version": "2",
        "eventBody": {
            "channelId": channel_id,
            "systemTopicType": "socket_closing",
            "correlationId": correlation_id,
            "organizationId": SIM_ORGANIZATION_ID,
            "oauthClientId": client_id,
            "oauthClientOrgId": SIM_ORGANIZATION_ID,
            "reason": "maintenance",
            "message": "The socket is closing for maintenance; connect a new socket to the same channel within one minute.",
        },
        "metadata": {"CorrelationId": correlation_id},
    })
    .to_string()
}

/// `v2.system.no_longer_subscribed.<channelId>` (shape of the fixture
/// `no_longer_subscribed.json`; body model `SystemMessageSystemMessage`). Reference §3 names
/// the reasons `another_channel_subscribed` and `user_tokens_revoked`; what the server does
/// after sending it is UNVERIFIED (the simulator then closes the socket and drops the channel).
pub fn no_longer_subscribed_frame(channel_id: &str, reason: &str, correlation_id: &str) -> String {
    json!({
        "topicName": format!("{TOPIC_NO_LONGER_SUBSCRIBED}.{channel_id}"),
        "version": "2",
        "eventBody": {
            "channelId": channel_id,
            "systemTopicType": "no_longer_subscribed",
            "correlationId": correlation_id,
            "organizationId": SIM_ORGANIZATION_ID,
            "reason": reason,
        },
        "metadata": {"CorrelationId": correlation_id},
    })
    .to_string()
}

/// The simulated organization's id.
pub const SIM_ORGANIZATION_ID: &str = "0f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b";

/// A user event in the real envelope: `topicName` `v2.users.<id>.presence|routingStatus|
/// conversationsummary` (or `v2.routing.queues.<id>.users` with body
/// `{"id":user,"user":{"id":user},"queueId","joined"}`, reference §4; `id` == user id is
/// UNVERIFIED), `version` `"2"`, and `metadata.CorrelationId`.
pub fn event_frame(change: &Change, correlation_id: &str) -> String {
    let metadata = Some(NotificationMetadata {
        correlation_id: correlation_id.to_string(),
    });
    let version = Some("2".to_string());
    let rendered = match change {
        Change::Presence {
            user,
            definition_id,
            system,
            modified,
        } => serde_json::to_value(Notification {
            topic_name: format!("v2.users.{user}.presence"),
            version,
            event_body: PresenceEventBody {
                source: Some("PURECLOUD".into()),
                presence_definition: PresenceDefinitionRef {
                    id: definition_id.clone(),
                    system_presence: Some(system.clone()),
                },
                primary: Some(true),
                message: Some(String::new()),
                modified_date: format_timestamp(*modified),
            },
            metadata,
        })
        .map(|mut v| {
            // The model carries `futurePresenceDefinition`, null unless a change is scheduled.
            v["eventBody"]["futurePresenceDefinition"] = serde_json::Value::Null;
            v
        }),
        Change::Routing {
            user,
            status,
            start,
        } => serde_json::to_value(Notification {
            topic_name: format!("v2.users.{user}.routingStatus"),
            version,
            event_body: RoutingStatusEventBody {
                id: Some(user.clone()),
                routing_status: RoutingStatusValue {
                    status: status.clone(),
                    start_time: format_timestamp(*start),
                },
            },
            metadata,
        }),
        Change::Conversations { user, active } => {
            let idle = MediaSummary {
                contact_center: Some(ConversationCounts::default()),
                enterprise: Some(ConversationCounts::default()),
            };
            serde_json::to_value(Notification {
                topic_name: format!("v2.users.{user}.conversationsummary"),
                version,
                event_body: ConversationSummaryBody {
                    user_id: Some(user.clone()),
                    call: Some(MediaSummary {
                        contact_center: Some(ConversationCounts {
                            active: *active,
                            acw: 0,
                        }),
                        enterprise: Some(ConversationCounts::default()),
                    }),
                    chat: Some(idle),
                    ..Default::default()
                },
                metadata,
            })
        }
        Change::QueueMembership {
            queue,
            user,
            joined,
        } => serde_json::to_value(Notification {
            topic_name: queue_users_topic(queue),
            version,
            event_body: QueueUserEventBody {
                id: Some(user.clone()),
                user: Some(UserRef {
                    id: user.clone(),
                    name: None,
                    self_uri: None,
                }),
                queue_id: Some(queue.clone()),
                joined: Some(*joined),
            },
            metadata,
        }),
    };
    rendered.map(|v| v.to_string()).unwrap_or_default()
}

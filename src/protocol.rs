//! Genesys Cloud wire types: the JSON shapes of the REST API, the OAuth token endpoint and the
//! Notifications API WebSocket.
//!
//! Both the client (`crate::genesys`, `crate::actors::connection`) and the embedded simulator
//! (`crate::sim`) use these types, so each shape is pinned by a golden fixture copied by hand from
//! the protocol reference (`tests/fixtures/*.json`, checked in `tests/it/fixtures.rs`): a field
//! misread here cannot hide in both.
//!
//! Sources (see `shared/genesys-cloud-protocol.md`): the SDK models `Channel`, `ChannelTopic`,
//! `PresenceEventUserPresence`, `UserRoutingStatusUserRoutingStatus`,
//! `UserConversationsEventUserConversationSummary`, `SystemMessageSystemMessage`, `User`,
//! `UserPresence`, `OrganizationPresenceDefinition`, `ErrorBody`, and the .NET SDK
//! `NotificationData` envelope.
//!
//! Every struct ignores unknown fields (forward compatibility) and every enumerated value is kept
//! as a string here; normalization happens in [`crate::domain`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

// ---------------------------------------------------------------------------------------------
// OAuth (POST https://login.<domain>/oauth/token)
// ---------------------------------------------------------------------------------------------

/// 200 response of `POST /oauth/token` with `grant_type=client_credentials`.
///
/// There is no `refresh_token` for this grant: to renew, post the grant again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenResponse {
    /// The bearer token. A secret: never log it.
    pub access_token: String,
    /// Always `"bearer"`.
    pub token_type: String,
    /// Lifetime in seconds (the OAuth client's `accessTokenValiditySeconds`, 24 h by default).
    pub expires_in: u64,
}

/// Error body of the login host, e.g.
/// `{"error":"invalid_client","description":"authentication failed","error_description":"authentication failed"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OAuthErrorBody {
    /// OAuth error code; `invalid_client` means wrong region or wrong credentials (fatal).
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Platform errors (ErrorBody on every 4xx/5xx of https://api.<domain>)
// ---------------------------------------------------------------------------------------------

/// `ErrorBody` of the platform API. A 429 carries the message
/// `"Rate limit exceeded the maximum. Retry the request in [N] seconds"`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Notifications API REST (POST /api/v2/notifications/channels, …/subscriptions)
// ---------------------------------------------------------------------------------------------

/// A notification channel (`POST /api/v2/notifications/channels`, no request body).
///
/// `expires` is an RFC 3339 UTC instant, 24 h after creation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// `wss://streaming.<domain>/channels/<id>`; always use it as given.
    pub connect_uri: String,
    pub id: String,
    #[serde(default)]
    pub expires: Option<String>,
}

/// One element of the subscription request body (`PUT|POST …/channels/{id}/subscriptions`,
/// a JSON array of these).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelTopicRequest {
    /// A topic name such as `v2.users.<id>?presence&routingStatus&conversationsummary`.
    pub id: String,
}

/// One element of a subscription listing (`GET|PUT …/subscriptions` answer `{"entities":[…]}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTopic {
    pub id: String,
    /// `Permitted` or `Rejected` (with `ignoreErrors=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
}

/// `{"entities":[ChannelTopic…]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChannelTopicEntityListing {
    #[serde(default)]
    pub entities: Vec<ChannelTopic>,
}

// ---------------------------------------------------------------------------------------------
// Users (GET /api/v2/users?state=active&expand=presence,routingStatus&pageSize=500)
// ---------------------------------------------------------------------------------------------

/// `presenceDefinition` inside a presence: the org presence id plus its parent system presence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PresenceDefinitionRef {
    /// Organization presence definition id (a GUID).
    pub id: String,
    /// System presence in whatever spelling the API used (`AVAILABLE`, `On Queue`, `OnQueue`, …).
    #[serde(default)]
    pub system_presence: Option<String>,
}

/// `UserPresence` (the `presence` expand, and `GET /api/v2/users/{id}/presences/purecloud`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    #[serde(default)]
    pub presence_definition: Option<PresenceDefinitionRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 instant at which the presence was set.
    #[serde(default)]
    pub modified_date: Option<String>,
}

/// `RoutingStatus` (the `routingStatus` expand, and `GET /api/v2/users/{id}/routingstatus`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserRoutingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `OFF_QUEUE`, `IDLE`, `INTERACTING`, `NOT_RESPONDING`, `COMMUNICATING`.
    pub status: String,
    /// RFC 3339 instant at which the status began.
    #[serde(default)]
    pub start_time: Option<String>,
}

/// A user as listed by `GET /api/v2/users`; only the fields agent-monitor reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `active`, `inactive` or `deleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<DivisionRef>,
    /// Present only when expanded; the expand is best effort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<UserPresence>,
    /// Present only when expanded; the expand is best effort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_status: Option<UserRoutingStatus>,
}

/// `{"id": ..., "name": ...}` reference to a division.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DivisionRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One page of `GET /api/v2/users` (`UserEntityListing`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserEntityListing {
    #[serde(default)]
    pub entities: Vec<User>,
    #[serde(default)]
    pub page_size: Option<u32>,
    #[serde(default)]
    pub page_number: Option<u32>,
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub page_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_uri: Option<String>,
    /// Relative URI of the next page (`/api/v2/users?pageSize=500&pageNumber=2…`), absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_uri: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Queue members (GET /api/v2/routing/queues/{queueId}/members?pageSize=100&pageNumber=N)
// ---------------------------------------------------------------------------------------------

/// `{"id", "name", "selfUri"}` reference to a user inside a queue member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    /// The user id (a GUID).
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `/api/v2/users/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
}

/// `QueueMember`: one member of a routing queue. `id` is the member's user id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueMember {
    /// The member's id (the user id).
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The member as a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRef>,
    /// Ring number (routing priority group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_number: Option<i64>,
    /// Whether the member has joined the queue (is active on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<bool>,
    /// `user` (added directly) or `group` (through a group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_by: Option<String>,
    /// Present only with `expand=routingStatus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_status: Option<UserRoutingStatus>,
    /// `/api/v2/routing/queues/{queueId}/members/{memberId}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
}

impl QueueMember {
    /// The member's user id, lowercase: `user.id` when given, else `id`.
    pub fn user_id(&self) -> String {
        self.user
            .as_ref()
            .map_or(self.id.as_str(), |u| u.id.as_str())
            .trim()
            .to_ascii_lowercase()
    }
}

/// One page of `GET /api/v2/routing/queues/{queueId}/members` (`QueueMemberEntityListing`).
/// The reference (§6) says the answer has no `total` or `pageCount`: follow `nextUri`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueMemberEntityListing {
    /// The members of this page.
    #[serde(default)]
    pub entities: Vec<QueueMember>,
    /// Page size used.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// 1-based page number.
    #[serde(default)]
    pub page_number: Option<u32>,
    /// This page's relative URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
    /// The first page's relative URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_uri: Option<String>,
    /// Relative URI of the next page, absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_uri: Option<String>,
    /// Relative URI of the previous page, absent on the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_uri: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Presence definitions
// ---------------------------------------------------------------------------------------------

/// `OrganizationPresenceDefinition` from `GET /api/v2/presence/definitions`
/// (`{"total": N, "entities": [...]}`, no paging).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PresenceDefinition {
    pub id: String,
    /// Labels by locale, e.g. `{"en_US": "Lunch"}`.
    #[serde(default)]
    pub language_labels: Option<std::collections::BTreeMap<String, String>>,
    /// System presence (new API spelling `OnQueue`; legacy `On Queue`).
    #[serde(default)]
    pub system_presence: Option<String>,
    #[serde(default)]
    pub deactivated: Option<bool>,
    /// `System` or `User`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division_id: Option<String>,
}

/// `{"total": N, "entities": [PresenceDefinition…]}` (new API), also used for the legacy
/// `GET /api/v2/presencedefinitions` page (which adds paging fields we ignore).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PresenceDefinitionListing {
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub entities: Vec<PresenceDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_uri: Option<String>,
}

/// Legacy `OrganizationPresence` from `GET /api/v2/presencedefinitions`: like
/// [`PresenceDefinition`] but the labels are in `languageLabels` and the system presence uses the
/// spaced spelling (`On Queue`).
pub type LegacyPresenceDefinition = PresenceDefinition;

/// `GET /api/v2/date` → `{"currentDate": "2024-05-01T10:00:00.000Z"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerDate {
    pub current_date: String,
}

// ---------------------------------------------------------------------------------------------
// Analytics user details (gap backfill)
// ---------------------------------------------------------------------------------------------

/// Body of `POST /api/v2/analytics/users/details/query` (SDK model `UserDetailsQuery`), used to
/// backfill the transitions a disconnected stream missed (reference §7).
///
/// `interval` is an ISO-8601 `start/end` pair of UTC instants
/// (`2024-05-01T09:00:00.000Z/2024-05-01T11:00:00.000Z`); Genesys allows at most **7 days**
/// without filters and **31 days** with filters. Paging is by page number; `pageSize` defaults
/// to 25 (the maximum is UNVERIFIED, probably 100).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserDetailsQuery {
    pub interval: String,
    /// `asc` or `desc` (by start time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// Which users: `[{"type":"or","predicates":[{"type":"dimension","dimension":"userId","operator":"matches","value":"U1"}]}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_filters: Vec<AnalyticsFilter>,
    /// Optional presence filter (dimensions `systemPresence`, `organizationPresenceId`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presence_filters: Vec<AnalyticsFilter>,
    /// Optional routing-status filter (dimension `routingStatus`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routing_status_filters: Vec<AnalyticsFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<AnalyticsPaging>,
}

/// One filter clause: `type` (`and` | `or`) over its predicates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsFilter {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub predicates: Vec<AnalyticsPredicate>,
}

/// One predicate: `{"type":"dimension","dimension":"userId","operator":"matches","value":"U1"}`.
/// Operators: `matches` | `exists` | `notExists`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsPredicate {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub dimension: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `{"pageSize":100,"pageNumber":1}` (page numbers start at 1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsPaging {
    pub page_size: u32,
    pub page_number: u32,
}

/// 200 response of the user details query (SDK model `AnalyticsUserDetailsQueryResponse`).
///
/// Caveats from the official page: `totalHits` is **approximate**, and a page can hold fewer
/// rows than `pageSize` (a status spanning midnight is stored twice and the duplicate is
/// filtered out), so page until a page comes back empty, never by `totalHits`. An empty result
/// may omit `userDetails` altogether.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserDetailsQueryResponse {
    #[serde(default)]
    pub user_details: Vec<AnalyticsUserDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_hits: Option<u64>,
}

/// The records of one user (`AnalyticsUserDetail`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsUserDetail {
    pub user_id: String,
    #[serde(default)]
    pub primary_presence: Vec<AnalyticsPresenceRecord>,
    #[serde(default)]
    pub routing_status: Vec<AnalyticsRoutingStatusRecord>,
}

/// One presence interval (`AnalyticsUserPresenceRecord`). `systemPresence` uses the analytics
/// spelling (`ON_QUEUE`). The record still open presumably has no `endTime` (UNVERIFIED).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsPresenceRecord {
    /// RFC 3339 UTC instant the presence began.
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_presence: Option<String>,
    /// The organization presence (definition) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_presence_id: Option<String>,
}

/// One routing-status interval (`AnalyticsRoutingStatusRecord`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsRoutingStatusRecord {
    /// RFC 3339 UTC instant the status began.
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub routing_status: String,
}

// ---------------------------------------------------------------------------------------------
// WebSocket notifications
// ---------------------------------------------------------------------------------------------

/// The envelope of every WebSocket message:
/// `{"topicName":"…","version":"2","eventBody":{…},"metadata":{"CorrelationId":"…"}}`.
///
/// The body is kept raw so it is parsed once, into the type its topic names.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationEnvelope<'a> {
    #[serde(borrow)]
    pub topic_name: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pub event_body: Option<&'a RawValue>,
}

/// Owned twin of the envelope, used to build messages (simulator, tests).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notification<T> {
    pub topic_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub event_body: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<NotificationMetadata>,
}

/// `{"CorrelationId": "<uuid>"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotificationMetadata {
    #[serde(rename = "CorrelationId")]
    pub correlation_id: String,
}

/// Body of `v2.users.{id}.presence` (`PresenceEventUserPresence`). It has **no user id**: take
/// it from the topic name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEventBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub presence_definition: PresenceDefinitionRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 instant at which the presence was set.
    pub modified_date: String,
}

/// Body of `v2.users.{id}.routingStatus` (`UserRoutingStatusUserRoutingStatus`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingStatusEventBody {
    /// The user id.
    #[serde(default)]
    pub id: Option<String>,
    pub routing_status: RoutingStatusValue,
}

/// `{"status":"INTERACTING","startTime":"2024-05-01T10:16:02.456Z"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingStatusValue {
    pub status: String,
    /// RFC 3339 instant at which the status began.
    pub start_time: String,
}

/// Active and after-call-work counts of one media type for one side.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct ConversationCounts {
    #[serde(default)]
    pub active: u32,
    #[serde(default)]
    pub acw: u32,
}

/// Counts of one media type split into contact-center and enterprise conversations.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MediaSummary {
    #[serde(default)]
    pub contact_center: Option<ConversationCounts>,
    #[serde(default)]
    pub enterprise: Option<ConversationCounts>,
}

impl MediaSummary {
    /// Active conversations of this media type, both sides.
    pub fn active(&self) -> u32 {
        // Saturating: a hostile or corrupt count must not overflow (and panic in debug builds).
        self.contact_center
            .map_or(0, |c| c.active)
            .saturating_add(self.enterprise.map_or(0, |c| c.active))
    }
}

/// Body of `v2.users.{id}.conversationsummary` (`UserConversationsEventUserConversationSummary`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConversationSummaryBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<MediaSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<MediaSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<MediaSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MediaSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<MediaSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub social_expression: Option<MediaSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<MediaSummary>,
}

impl ConversationSummaryBody {
    /// Total active conversations over every media type (ACW is not counted as active).
    pub fn active_total(&self) -> u32 {
        [
            &self.call,
            &self.callback,
            &self.email,
            &self.message,
            &self.chat,
            &self.social_expression,
            &self.video,
        ]
        .into_iter()
        .flatten()
        .map(MediaSummary::active)
        .fold(0u32, u32::saturating_add)
    }
}

/// Body of `channel.metadata`: `{"message":"WebSocket Heartbeat"}` or `{"message":"pong"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelMetadataBody {
    pub message: String,
}

/// Body of `v2.system.socket_closing`, `v2.system.no_longer_subscribed.{id}` and
/// `v2.system.token_revoked.{id}` (`SystemMessageSystemMessage`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SystemMessageBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_topic_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Body of `v2.routing.queues.{id}.users` (`QueueUserEventTopicQueueMember`): a user joined
/// (`joined: true`) or left a queue. That `id` equals the user id is UNVERIFIED; prefer
/// `user.id` ([`QueueUserEventBody::user_id`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueUserEventBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<bool>,
}

impl QueueUserEventBody {
    /// The member's user id: `user.id`, else `id`.
    pub fn user_id(&self) -> Option<&str> {
        self.user
            .as_ref()
            .map(|u| u.id.as_str())
            .or(self.id.as_deref())
    }
}

/// The queue-membership topic of one queue: `v2.routing.queues.<id>.users`.
pub fn queue_users_topic(queue_id: &str) -> String {
    format!("v2.routing.queues.{queue_id}.users")
}

/// The client health check sent as a text frame: `{"message":"ping"}` (Java SDK `sendPing()`).
pub const PING_FRAME: &str = r#"{"message":"ping"}"#;

/// `topicName` of heartbeats and pongs.
pub const TOPIC_CHANNEL_METADATA: &str = "channel.metadata";
/// `topicName` of the maintenance notice: connect a new socket within one minute.
pub const TOPIC_SOCKET_CLOSING: &str = "v2.system.socket_closing";
/// Prefix of `v2.system.no_longer_subscribed.{id}`.
pub const TOPIC_NO_LONGER_SUBSCRIBED: &str = "v2.system.no_longer_subscribed";
/// Prefix of `v2.system.token_revoked.{id}`.
pub const TOPIC_TOKEN_REVOKED: &str = "v2.system.token_revoked";

/// The combined per-user topic agent-monitor subscribes to: one topic, three notifications
/// (`v2.users.<id>.presence`, `.routingStatus`, `.conversationsummary`).
pub fn user_topic(user_id: &str) -> String {
    format!("v2.users.{user_id}?presence&routingStatus&conversationsummary")
}

/// What a `topicName` refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `v2.users.{id}.presence`
    UserPresence(&'a str),
    /// `v2.users.{id}.routingStatus`
    UserRoutingStatus(&'a str),
    /// `v2.users.{id}.conversationsummary`
    UserConversationSummary(&'a str),
    /// `channel.metadata` (heartbeat or pong)
    ChannelMetadata,
    /// `v2.system.socket_closing`
    SocketClosing,
    /// `v2.system.no_longer_subscribed.{id}`
    NoLongerSubscribed,
    /// `v2.system.token_revoked.{id}`
    TokenRevoked,
    /// `v2.routing.queues.{id}.users`
    QueueUsers(&'a str),
    /// Anything else (logged at debug level).
    Other(&'a str),
}

impl<'a> Topic<'a> {
    /// Classifies a `topicName`. User topics arrive expanded (`v2.users.<id>.presence`) even for
    /// combined subscriptions.
    pub fn parse(name: &'a str) -> Topic<'a> {
        if name == TOPIC_CHANNEL_METADATA {
            return Topic::ChannelMetadata;
        }
        if name == TOPIC_SOCKET_CLOSING {
            return Topic::SocketClosing;
        }
        if name.starts_with(TOPIC_NO_LONGER_SUBSCRIBED) {
            return Topic::NoLongerSubscribed;
        }
        if name.starts_with(TOPIC_TOKEN_REVOKED) {
            return Topic::TokenRevoked;
        }
        if let Some(queue) = name
            .strip_prefix("v2.routing.queues.")
            .and_then(|rest| rest.strip_suffix(".users"))
        {
            if !queue.is_empty() && !queue.contains('.') {
                return Topic::QueueUsers(queue);
            }
        }
        if let Some(rest) = name.strip_prefix("v2.users.") {
            if let Some((id, suffix)) = rest.rsplit_once('.') {
                if !id.is_empty() && !id.contains('.') {
                    return match suffix {
                        "presence" => Topic::UserPresence(id),
                        "routingStatus" => Topic::UserRoutingStatus(id),
                        "conversationsummary" => Topic::UserConversationSummary(id),
                        _ => Topic::Other(name),
                    };
                }
            }
        }
        Topic::Other(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_classify() {
        assert_eq!(
            Topic::parse("v2.users.U1.presence"),
            Topic::UserPresence("U1")
        );
        assert_eq!(
            Topic::parse("v2.users.U1.routingStatus"),
            Topic::UserRoutingStatus("U1")
        );
        assert_eq!(
            Topic::parse("v2.users.U1.conversationsummary"),
            Topic::UserConversationSummary("U1")
        );
        assert_eq!(
            Topic::parse("v2.users.U1.routingstatus"),
            Topic::Other("v2.users.U1.routingstatus")
        );
        assert_eq!(Topic::parse("channel.metadata"), Topic::ChannelMetadata);
        assert_eq!(
            Topic::parse("v2.system.socket_closing"),
            Topic::SocketClosing
        );
        assert_eq!(
            Topic::parse("v2.system.no_longer_subscribed.abc"),
            Topic::NoLongerSubscribed
        );
        assert_eq!(
            Topic::parse("v2.routing.queues.Q1.users"),
            Topic::QueueUsers("Q1")
        );
        assert_eq!(
            Topic::parse("v2.users..presence"),
            Topic::Other("v2.users..presence")
        );
    }

    #[test]
    fn conversation_summary_counts_active_only() {
        let body: ConversationSummaryBody = serde_json::from_str(
            r#"{"userId":"U1","call":{"contactCenter":{"active":1,"acw":0},"enterprise":{"active":0,"acw":0}},
                "chat":{"contactCenter":{"active":0,"acw":1},"enterprise":{"active":1,"acw":0}}}"#,
        )
        .unwrap();
        assert_eq!(body.active_total(), 2);
    }
}

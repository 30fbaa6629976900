//! The simulator over real loopback HTTP and WebSocket: its outputs have the fixtures' shapes,
//! and it behaves as the protocol reference says (auth, paging, limits, sockets, faults).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use agent_monitor::protocol::{
    Channel, ChannelTopicEntityListing, ErrorBody, OAuthErrorBody, PING_FRAME, TokenResponse,
    UserEntityListing, user_topic,
};
use agent_monitor::sim::{LUNCH_ID, ON_QUEUE_ID, SimConfig, Simulator};
use chrono::{SubsecRound, Utc};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::fixtures::{assert_same_shape, fixture};

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A quiet simulator: 3 agents, no autopilot, heartbeats far apart.
pub(crate) fn quiet() -> SimConfig {
    SimConfig {
        agents: 3,
        autopilot: false,
        heartbeat_interval: Duration::from_secs(3600),
        ..SimConfig::default()
    }
}

pub(crate) struct Harness {
    pub(crate) sim: Simulator,
    pub(crate) http: reqwest::Client,
    pub(crate) token: String,
}

pub(crate) async fn start(cfg: SimConfig) -> Harness {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let sim = Simulator::start(loopback(), cfg).await.unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = request_token(&sim, &http).await;
    Harness { sim, http, token }
}

pub(crate) async fn request_token(sim: &Simulator, http: &reqwest::Client) -> String {
    let response = http
        .post(format!("{}/oauth/token", sim.base_url()))
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<TokenResponse>().await.unwrap().access_token
}

impl Harness {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    pub(crate) async fn create_channel(&self) -> Channel {
        let response = self
            .http
            .post(self.url("/api/v2/notifications/channels"))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub(crate) async fn subscribe(
        &self,
        method: reqwest::Method,
        channel: &str,
        topics: &[String],
    ) -> reqwest::Response {
        let body: Vec<Value> = topics.iter().map(|t| json!({ "id": t })).collect();
        self.http
            .request(
                method,
                self.url(&format!(
                    "/api/v2/notifications/channels/{channel}/subscriptions"
                )),
            )
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A channel subscribed to `topics` with a connected socket.
    pub(crate) async fn channel_with(&self, topics: &[String]) -> (Channel, Ws) {
        let channel = self.create_channel().await;
        let response = self
            .subscribe(reqwest::Method::PUT, &channel.id, topics)
            .await;
        assert_eq!(response.status(), 200);
        let ws = Ws::connect(&channel.connect_uri).await;
        let id = channel.id.clone();
        eventually("the socket is registered", || async {
            self.sim
                .channels()
                .await
                .unwrap()
                .iter()
                .any(|c| c.id == id && c.connected_sockets == 1)
        })
        .await;
        (channel, ws)
    }

    pub(crate) async fn head_channel(&self, id: &str) -> u16 {
        self.http
            .head(self.url(&format!("/api/v2/notifications/channels/{id}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Polls `condition` until it holds, panicking after [`WAIT`].
pub(crate) async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How a socket ended.
#[derive(Debug, PartialEq)]
pub(crate) enum Ended {
    /// The server sent a close frame.
    CloseFrame,
    /// The connection went away without one (1006).
    Abruptly,
}

pub(crate) struct Ws {
    pub(crate) stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub(crate) async fn connect(uri: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(uri).await.unwrap();
        Ws { stream }
    }

    pub(crate) async fn send(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.to_string().into()))
            .await
            .unwrap();
    }

    /// The next JSON text frame that satisfies `wanted`, skipping others; panics after `within`.
    pub(crate) async fn next_matching(
        &mut self,
        within: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let found = tokio::time::timeout(within, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let value: Value = serde_json::from_str(text.as_str())
                            .unwrap_or_else(|e| panic!("not JSON: {text}: {e}"));
                        if wanted(&value) {
                            return value;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("socket ended while waiting: {other:?}"),
                }
            }
        })
        .await;
        found.expect("timed out waiting for a frame")
    }

    /// The next event frame (anything but `channel.metadata`).
    pub(crate) async fn next_event(&mut self) -> Value {
        self.next_matching(WAIT, |v| v["topicName"] != "channel.metadata")
            .await
    }

    /// The next text frame of any kind, or `None` if nothing arrives within `within`.
    pub(crate) async fn next_text_within(&mut self, within: Duration) -> Option<String> {
        match tokio::time::timeout(within, self.stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => Some(text.to_string()),
            Ok(other) => panic!("unexpected socket item: {other:?}"),
            Err(_) => None,
        }
    }

    /// Reads until the socket ends and says how.
    pub(crate) async fn ended(&mut self) -> Ended {
        let ended = tokio::time::timeout(WAIT, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Close(_))) => return Ended::CloseFrame,
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Ended::Abruptly,
                }
            }
        })
        .await;
        ended.expect("the socket did not end")
    }
}

pub(crate) fn is_metadata(message: &'static str) -> impl Fn(&Value) -> bool {
    move |v: &Value| v["topicName"] == "channel.metadata" && v["eventBody"]["message"] == message
}

// ---------------------------------------------------------------------------------------------
// (b) Shapes: the simulator's outputs against the fixtures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http_outputs_have_the_fixture_shapes() {
    let h = start(quiet()).await;
    let ids = h.sim.agent_ids().await.unwrap();

    let token: Value = h
        .http
        .post(h.url("/oauth/token"))
        .basic_auth(h.sim.client_id(), Some(h.sim.client_secret()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_same_shape("token_response.json", &token);
    assert_eq!(token["expires_in"], 86_399);

    let refused = h
        .http
        .post(h.url("/oauth/token"))
        .basic_auth(h.sim.client_id(), Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused: Value = refused.json().await.unwrap();
    assert_same_shape("oauth_invalid_client.json", &refused);
    assert_eq!(refused, fixture("oauth_invalid_client.json"));

    let channel: Value = h
        .http
        .post(h.url("/api/v2/notifications/channels"))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_same_shape("channel.json", &channel);
    let channel: Channel = serde_json::from_value(channel).unwrap();
    assert_eq!(
        channel.connect_uri,
        format!("ws://{}/channels/{}", h.sim.local_addr(), channel.id)
    );
    let expires =
        agent_monitor::domain::parse_timestamp(channel.expires.as_deref().unwrap()).unwrap();
    let in_a_day = Utc::now() + chrono::Duration::hours(24);
    assert!((in_a_day - expires).num_seconds().abs() < 60);
    assert!(channel.expires.as_deref().unwrap().ends_with('Z'));

    let subs: Value = h
        .subscribe(
            reqwest::Method::PUT,
            &channel.id,
            &[format!("v2.users.{}.presence", ids[0])],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_same_shape("subscriptions.json", &subs);

    let page = h
        .get_json(
            "/api/v2/users?state=active&expand=presence,routingStatus&pageSize=1&pageNumber=1",
        )
        .await;
    assert_same_shape("users_page.json", &page);
    assert_eq!(
        page["nextUri"],
        "/api/v2/users?pageSize=1&pageNumber=2&state=active&expand=presence,routingStatus"
    );

    let definitions = h.get_json("/api/v2/presence/definitions").await;
    assert_same_shape("presence_definitions.json", &definitions);
    let legacy = h.get_json("/api/v2/presencedefinitions").await;
    assert_same_shape("legacy_presencedefinitions.json", &legacy);

    let routing = h
        .get_json(&format!("/api/v2/users/{}/routingstatus", ids[0]))
        .await;
    assert_same_shape("routing_status.json", &routing);
    let presence = h
        .get_json(&format!("/api/v2/users/{}/presences/purecloud", ids[0]))
        .await;
    assert_same_shape("user_presence.json", &presence);

    let date = h.get("/api/v2/date").await;
    assert_eq!(
        date.headers()
            .get("inin-correlation-id")
            .unwrap()
            .to_str()
            .unwrap()
            .len(),
        36
    );
    let date: Value = date.json().await.unwrap();
    assert_same_shape("date.json", &date);

    h.sim
        .fail_next("GET", "/api/v2/date", 429, Some(3), 1)
        .await
        .unwrap();
    let limited: Value = h.get("/api/v2/date").await.json().await.unwrap();
    assert_same_shape("error_429.json", &limited);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn socket_outputs_have_the_fixture_shapes() {
    let h = start(SimConfig {
        heartbeat_interval: Duration::from_millis(150),
        ..quiet()
    })
    .await;
    let user = h.sim.agent_ids().await.unwrap()[0].clone();
    let (_channel, mut ws) = h.channel_with(&[user_topic(&user)]).await;

    let heartbeat = ws
        .next_matching(WAIT, is_metadata("WebSocket Heartbeat"))
        .await;
    assert_same_shape("heartbeat.json", &heartbeat);

    ws.send(PING_FRAME).await;
    let pong = ws.next_matching(WAIT, is_metadata("pong")).await;
    assert_same_shape("pong.json", &pong);

    h.sim.set_presence(&user, "AVAILABLE").await.unwrap();
    let presence = ws.next_event().await;
    assert_same_shape("presence_event.json", &presence);
    assert_eq!(presence["topicName"], format!("v2.users.{user}.presence"));
    assert_eq!(
        presence["eventBody"]["presenceDefinition"]["systemPresence"],
        "AVAILABLE"
    );

    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    let routing = ws.next_event().await;
    assert_same_shape("routing_status_event.json", &routing);
    assert_eq!(routing["eventBody"]["id"], user.as_str());

    h.sim.set_active_conversations(&user, 1).await.unwrap();
    let summary = ws.next_event().await;
    assert_same_shape("conversationsummary_event.json", &summary);
    assert_eq!(summary["eventBody"]["call"]["contactCenter"]["active"], 1);

    h.sim.send_socket_closing().await.unwrap();
    let closing = ws.next_event().await;
    assert_same_shape("socket_closing.json", &closing);
    h.sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// (c) Behaviour
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn api_requires_a_token_it_issued() {
    let h = start(quiet()).await;
    for token in [None, Some("not-a-token")] {
        let mut request = h.http.get(h.url("/api/v2/users"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: ErrorBody = response.json().await.unwrap();
        assert_eq!(body.code.as_deref(), Some("authentication.required"));
        assert_eq!(body.status, Some(401));
        assert_eq!(
            body.message.as_deref(),
            Some("No authentication bearer token specified in authorization header.")
        );
    }
    assert_eq!(h.get("/api/v2/users").await.status(), 200);

    let wrong_grant = h
        .http
        .post(h.url("/oauth/token"))
        .basic_auth(h.sim.client_id(), Some(h.sim.client_secret()))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_grant.status(), 400);
    let no_basic = h
        .http
        .post(h.url("/oauth/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_basic.status(), 401);
    let body: OAuthErrorBody = no_basic.json().await.unwrap();
    assert_eq!(body.error, "invalid_client");
    assert_eq!(h.sim.token_requests().await.unwrap(), 3);
    assert_eq!(
        h.sim.request_count("POST", "/oauth/token").await.unwrap(),
        3
    );
    assert_eq!(
        h.sim.request_count("get", "/api/v2/users").await.unwrap(),
        3
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn expired_and_revoked_tokens_get_401() {
    let h = start(quiet()).await;
    assert_eq!(h.get("/api/v2/date").await.status(), 200);
    h.sim.revoke_tokens().await.unwrap();
    assert_eq!(h.get("/api/v2/date").await.status(), 401);
    let fresh = request_token(&h.sim, &h.http).await;
    let response = h
        .http
        .get(h.url("/api/v2/date"))
        .bearer_auth(fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    h.sim.shutdown().await;

    let short = start(SimConfig {
        token_lifetime: Duration::from_millis(300),
        ..quiet()
    })
    .await;
    eventually("the short-lived token expires", || async {
        short.get("/api/v2/date").await.status() == 401
    })
    .await;
    short.sim.shutdown().await;
}

#[tokio::test]
async fn paging_walks_every_user() {
    let h = start(SimConfig {
        agents: 1203,
        ..quiet()
    })
    .await;
    let mut seen = Vec::new();
    let mut next = Some(
        "/api/v2/users?pageSize=500&pageNumber=1&state=active&expand=presence,routingStatus"
            .to_string(),
    );
    let mut pages = 0;
    while let Some(uri) = next {
        let page: UserEntityListing = h.get(&uri).await.json().await.unwrap();
        pages += 1;
        assert_eq!(page.page_size, Some(500));
        assert_eq!(page.page_number, Some(pages));
        assert_eq!(page.total, Some(1203));
        assert_eq!(page.page_count, Some(3));
        for user in &page.entities {
            assert!(user.presence.is_some() && user.routing_status.is_some());
        }
        seen.extend(page.entities.into_iter().map(|u| u.id));
        next = page.next_uri;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, h.sim.agent_ids().await.unwrap());

    let default: UserEntityListing = h.get("/api/v2/users").await.json().await.unwrap();
    assert_eq!(default.entities.len(), 25);
    assert!(default.entities[0].presence.is_none());
    let too_big = h.get("/api/v2/users?pageSize=501").await;
    assert_eq!(too_big.status(), 400);
    let body: ErrorBody = too_big.json().await.unwrap();
    assert_eq!(body.status, Some(400));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn best_effort_expand_omits_some_users() {
    let h = start(SimConfig {
        agents: 7,
        omit_expand_every: 3,
        ..quiet()
    })
    .await;
    let page: UserEntityListing = h
        .get("/api/v2/users?expand=presence,routingStatus&pageSize=100")
        .await
        .json()
        .await
        .unwrap();
    let missing: Vec<usize> = page
        .entities
        .iter()
        .enumerate()
        .filter(|(_, u)| u.presence.is_none() && u.routing_status.is_none())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(missing, vec![2, 5]);
    h.sim.set_omit_expand_every(0).await.unwrap();
    let full: UserEntityListing = h
        .get("/api/v2/users?expand=presence,routingStatus&pageSize=100")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        full.entities
            .iter()
            .all(|u| u.presence.is_some() && u.routing_status.is_some())
    );
    for i in missing {
        let id = &page.entities[i].id;
        let routing = h
            .get_json(&format!("/api/v2/users/{id}/routingstatus"))
            .await;
        assert_eq!(routing["status"], "IDLE");
        let presence = h
            .get_json(&format!("/api/v2/users/{id}/presences/purecloud"))
            .await;
        assert_eq!(presence["presenceDefinition"]["id"], ON_QUEUE_ID);
    }
    h.sim.shutdown().await;
}

#[tokio::test]
async fn presence_definitions_list_system_and_org_presences_and_can_404() {
    let h = start(quiet()).await;
    let definitions = h.get_json("/api/v2/presence/definitions").await;
    let entities = definitions["entities"].as_array().unwrap();
    assert_eq!(definitions["total"], entities.len());
    let systems: Vec<&str> = entities
        .iter()
        .filter(|d| d["type"] == "System")
        .map(|d| d["systemPresence"].as_str().unwrap())
        .collect();
    assert_eq!(
        systems,
        [
            "Available",
            "Away",
            "Busy",
            "Offline",
            "Idle",
            "OnQueue",
            "Meal",
            "Training",
            "Meeting",
            "Break"
        ]
    );
    let lunch = entities.iter().find(|d| d["id"] == LUNCH_ID).unwrap();
    assert_eq!(lunch["type"], "User");
    assert_eq!(lunch["systemPresence"], "Meal");
    assert_eq!(lunch["languageLabels"]["en_US"], "Lunch");
    assert!(
        entities.iter().any(
            |d| d["languageLabels"]["en_US"] == "Coaching" && d["systemPresence"] == "Training"
        )
    );
    let legacy = h.get_json("/api/v2/presencedefinitions").await;
    assert!(
        legacy["entities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == ON_QUEUE_ID && d["systemPresence"] == "On Queue")
    );
    h.sim.shutdown().await;

    let h = start(SimConfig {
        presence_definitions_404: true,
        ..quiet()
    })
    .await;
    assert_eq!(h.get("/api/v2/presence/definitions").await.status(), 404);
    assert_eq!(h.get("/api/v2/presencedefinitions").await.status(), 200);
    h.sim.set_presence_definitions_404(false).await.unwrap();
    assert_eq!(h.get("/api/v2/presence/definitions").await.status(), 200);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_channel_holds_at_most_1000_topics() {
    let h = start(quiet()).await;
    let channel = h.create_channel().await;
    let topics: Vec<String> = (0..1000)
        .map(|i| user_topic(&format!("00000000-0000-4000-8000-{i:012}")))
        .collect();
    let response = h
        .subscribe(reqwest::Method::PUT, &channel.id, &topics)
        .await;
    assert_eq!(response.status(), 200);
    let listing: ChannelTopicEntityListing = response.json().await.unwrap();
    assert_eq!(listing.entities.len(), 1000);
    assert!(
        listing
            .entities
            .iter()
            .all(|t| t.state.as_deref() == Some("Permitted"))
    );

    let one_more = h
        .subscribe(
            reqwest::Method::POST,
            &channel.id,
            &["v2.users.extra.presence".to_string()],
        )
        .await;
    assert_eq!(one_more.status(), 400);
    let body: ErrorBody = one_more.json().await.unwrap();
    assert_eq!(body.status, Some(400));
    assert_eq!(h.sim.channels().await.unwrap()[0].topics, 1000);

    let listed: ChannelTopicEntityListing = serde_json::from_value(
        h.get_json(&format!(
            "/api/v2/notifications/channels/{}/subscriptions",
            channel.id
        ))
        .await,
    )
    .unwrap();
    assert_eq!(listed.entities.len(), 1000);

    let response = h
        .http
        .delete(h.url(&format!(
            "/api/v2/notifications/channels/{}/subscriptions",
            channel.id
        )))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(h.sim.channels().await.unwrap()[0].topics, 0);

    let ignored = h
        .http
        .post(h.url(&format!(
            "/api/v2/notifications/channels/{}/subscriptions?ignoreErrors=true",
            channel.id
        )))
        .bearer_auth(&h.token)
        .json(&json!([{"id": "v2.users.u1.presence"}, {"id": "nonsense"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(ignored.status(), 200);
    let listing: ChannelTopicEntityListing = ignored.json().await.unwrap();
    let states: Vec<_> = listing
        .entities
        .iter()
        .map(|t| (t.id.as_str(), t.state.as_deref().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("v2.users.u1.presence", "Permitted"),
            ("nonsense", "Rejected")
        ]
    );

    let unknown = h
        .subscribe(reqwest::Method::PUT, "streaming-0-nope", &topics[..1])
        .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(h.head_channel("streaming-0-nope").await, 404);
    assert_eq!(h.head_channel(&channel.id).await, 200);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_second_socket_closes_the_first() {
    let h = start(quiet()).await;
    let user = h.sim.agent_ids().await.unwrap()[0].clone();
    let (channel, mut first) = h.channel_with(&[user_topic(&user)]).await;
    let mut second = Ws::connect(&channel.connect_uri).await;
    assert_eq!(first.ended().await, Ended::CloseFrame);
    second.send(PING_FRAME).await;
    second.next_matching(WAIT, is_metadata("pong")).await;
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    let event = second.next_event().await;
    assert_eq!(event["eventBody"]["routingStatus"]["status"], "INTERACTING");
    let info = h.sim.channels().await.unwrap();
    assert_eq!(info[0].connected_sockets, 1);
    assert_eq!(info[0].socket_connects, 2);
    assert_eq!(
        h.sim
            .request_count("GET", &format!("/channels/{}", channel.id))
            .await
            .unwrap(),
        2
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn heartbeats_arrive_and_pings_get_pongs() {
    let h = start(SimConfig {
        heartbeat_interval: Duration::from_millis(100),
        ..quiet()
    })
    .await;
    let (_channel, mut ws) = h.channel_with(&[]).await;
    for _ in 0..3 {
        ws.next_matching(WAIT, is_metadata("WebSocket Heartbeat"))
            .await;
    }
    ws.send(PING_FRAME).await;
    let pong = ws.next_matching(WAIT, is_metadata("pong")).await;
    assert_eq!(pong, fixture("pong.json"));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn events_reach_only_subscribed_users_and_topics() {
    let h = start(quiet()).await;
    let ids = h.sim.agent_ids().await.unwrap();
    let (_channel, mut ws) = h
        .channel_with(&[
            user_topic(&ids[0].to_ascii_uppercase()),
            format!("v2.users.{}.presence", ids[2]),
        ])
        .await;

    h.sim
        .set_routing_status(&ids[1], "INTERACTING")
        .await
        .unwrap();
    h.sim
        .set_routing_status(&ids[2], "INTERACTING")
        .await
        .unwrap();
    h.sim
        .set_routing_status(&ids[0], "NOT_RESPONDING")
        .await
        .unwrap();
    let event = ws.next_event().await;
    assert_eq!(
        event["topicName"],
        format!("v2.users.{}.routingStatus", ids[0])
    );
    assert_eq!(
        event["eventBody"]["routingStatus"]["status"],
        "NOT_RESPONDING"
    );
    let start = event["eventBody"]["routingStatus"]["startTime"]
        .as_str()
        .unwrap();
    assert_eq!(
        agent_monitor::domain::parse_timestamp(start).unwrap(),
        h.sim.user(&ids[0]).await.unwrap().unwrap().routing_start
    );

    h.sim.set_presence(&ids[1], "BREAK").await.unwrap();
    h.sim.set_presence(&ids[2], LUNCH_ID).await.unwrap();
    let event = ws.next_event().await;
    assert_eq!(event["topicName"], format!("v2.users.{}.presence", ids[2]));
    assert_eq!(event["eventBody"]["presenceDefinition"]["id"], LUNCH_ID);
    assert_eq!(
        event["eventBody"]["presenceDefinition"]["systemPresence"],
        "MEAL"
    );
    assert!(event["eventBody"].get("userId").is_none());
    assert!(event["metadata"]["CorrelationId"].as_str().unwrap().len() >= 32);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn duplicate_deliveries_send_each_event_twice() {
    let h = start(quiet()).await;
    let user = h.sim.agent_ids().await.unwrap()[0].clone();
    let (_channel, mut ws) = h.channel_with(&[user_topic(&user)]).await;
    h.sim.duplicate_deliveries(true).await.unwrap();
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    let first = ws.next_event().await;
    let second = ws.next_event().await;
    assert_eq!(first, second);
    h.sim.duplicate_deliveries(false).await.unwrap();
    h.sim.set_routing_status(&user, "IDLE").await.unwrap();
    h.sim.set_routing_status(&user, "OFF_QUEUE").await.unwrap();
    let idle = ws.next_event().await;
    let off = ws.next_event().await;
    assert_eq!(idle["eventBody"]["routingStatus"]["status"], "IDLE");
    assert_eq!(off["eventBody"]["routingStatus"]["status"], "OFF_QUEUE");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_injected() {
    let h = start(quiet()).await;
    h.sim
        .fail_next("GET", "/api/v2/users", 429, Some(7), 2)
        .await
        .unwrap();
    for _ in 0..2 {
        let response = h.get("/api/v2/users?pageSize=10").await;
        assert_eq!(response.status(), 429);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .unwrap()
                .to_str()
                .unwrap(),
            "7"
        );
        let body: ErrorBody = response.json().await.unwrap();
        assert_eq!(body.code.as_deref(), Some("too.many.requests.retry.after"));
        assert_eq!(
            body.message.as_deref(),
            Some("Rate limit exceeded the maximum. Retry the request in [7] seconds")
        );
    }
    assert_eq!(h.get("/api/v2/users?pageSize=10").await.status(), 200);

    h.sim
        .fail_next("*", "/api/v2/notifications", 503, None, 1)
        .await
        .unwrap();
    let response = h
        .http
        .post(h.url("/api/v2/notifications/channels"))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_none());
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.status, Some(503));

    h.sim
        .fail_next("POST", "/oauth/token", 429, None, 1)
        .await
        .unwrap();
    let response = h
        .http
        .post(h.url("/oauth/token"))
        .basic_auth(h.sim.client_id(), Some(h.sim.client_secret()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.code.as_deref(), Some("too.many.requests"));
    assert_eq!(h.sim.request_count("*", "/api/v2/users").await.unwrap(), 3);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn dropped_sockets_end_without_a_close_frame_and_can_reconnect() {
    let h = start(quiet()).await;
    let user = h.sim.agent_ids().await.unwrap()[0].clone();
    let (channel, mut ws) = h.channel_with(&[user_topic(&user)]).await;
    h.sim.drop_sockets().await.unwrap();
    assert_eq!(ws.ended().await, Ended::Abruptly);
    assert_eq!(h.head_channel(&channel.id).await, 200);

    let mut again = Ws::connect(&channel.connect_uri).await;
    eventually("the new socket is registered", || async {
        h.sim.channels().await.unwrap()[0].connected_sockets == 1
    })
    .await;
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    let event = again.next_event().await;
    assert_eq!(event["eventBody"]["routingStatus"]["status"], "INTERACTING");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn socket_closing_is_followed_by_a_server_close() {
    let h = start(SimConfig {
        socket_closing_grace: Duration::from_millis(300),
        ..quiet()
    })
    .await;
    let (channel, mut ws) = h.channel_with(&[]).await;
    h.sim.send_socket_closing().await.unwrap();
    let notice = ws.next_event().await;
    assert_eq!(notice["topicName"], "v2.system.socket_closing");
    assert_eq!(notice["eventBody"]["channelId"], channel.id.as_str());
    assert_eq!(ws.ended().await, Ended::CloseFrame);
    assert_eq!(h.head_channel(&channel.id).await, 200);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn deleted_channels_close_their_socket_and_answer_404() {
    let h = start(quiet()).await;
    let (channel, mut ws) = h.channel_with(&[]).await;
    assert!(h.sim.delete_channel(&channel.id).await.unwrap());
    assert_eq!(ws.ended().await, Ended::CloseFrame);
    assert_eq!(h.head_channel(&channel.id).await, 404);
    assert!(
        tokio_tungstenite::connect_async(channel.connect_uri.as_str())
            .await
            .is_err()
    );
    assert!(h.sim.channels().await.unwrap().is_empty());
    h.sim.shutdown().await;
}

#[tokio::test]
async fn silent_sockets_send_nothing_until_unsilenced() {
    let h = start(SimConfig {
        heartbeat_interval: Duration::from_millis(50),
        ..quiet()
    })
    .await;
    let user = h.sim.agent_ids().await.unwrap()[0].clone();
    let (_channel, mut ws) = h.channel_with(&[user_topic(&user)]).await;
    ws.next_matching(WAIT, is_metadata("WebSocket Heartbeat"))
        .await;
    h.sim.set_silent(true).await.unwrap();
    // Frames already queued before the switch may still arrive; drain them.
    while ws
        .next_text_within(Duration::from_millis(200))
        .await
        .is_some()
    {}
    ws.send(PING_FRAME).await;
    ws.stream
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_millis(400), ws.stream.next()).await;
    assert!(heard.is_err(), "a silent socket sent {heard:?}");
    h.sim.set_silent(false).await.unwrap();
    let mut got_protocol_pong = false;
    let mut got_pong = false;
    tokio::time::timeout(WAIT, async {
        while !(got_protocol_pong && got_pong) {
            match ws.stream.next().await {
                Some(Ok(Message::Pong(_))) => got_protocol_pong = true,
                Some(Ok(Message::Text(text))) => {
                    got_pong |= is_metadata("pong")(&serde_json::from_str(text.as_str()).unwrap())
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("no pongs after the silence ended");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn raw_frames_reach_every_socket() {
    let h = start(quiet()).await;
    let (_a, mut a) = h.channel_with(&[]).await;
    let (_b, mut b) = h.channel_with(&[]).await;
    h.sim.send_raw_frame("{not json").await.unwrap();
    for ws in [&mut a, &mut b] {
        assert_eq!(
            ws.next_text_within(WAIT).await.as_deref(),
            Some("{not json")
        );
    }
    h.sim.shutdown().await;
}

#[tokio::test]
async fn scripted_timestamps_and_injected_events() {
    let h = start(quiet()).await;
    let user = h.sim.agent_ids().await.unwrap()[0].clone();
    let (_channel, mut ws) = h.channel_with(&[user_topic(&user)]).await;
    let past = (Utc::now() - chrono::Duration::minutes(10)).trunc_subsecs(3);

    h.sim
        .set_routing_status_at(&user, "IDLE", past)
        .await
        .unwrap();
    let event = ws.next_event().await;
    assert_eq!(
        event["eventBody"]["routingStatus"]["startTime"],
        agent_monitor::domain::format_timestamp(past)
    );
    assert_eq!(
        h.sim.user(&user).await.unwrap().unwrap().routing_start,
        past
    );

    h.sim.set_presence_at(&user, "Break", past).await.unwrap();
    let event = ws.next_event().await;
    assert_eq!(
        event["eventBody"]["presenceDefinition"]["systemPresence"],
        "BREAK"
    );
    let snapshot = h.sim.user(&user).await.unwrap().unwrap();
    assert_eq!(snapshot.system_presence, "BREAK");
    assert_eq!(snapshot.presence_modified, past);

    let older = past - chrono::Duration::minutes(5);
    h.sim
        .inject_routing_event(&user, "INTERACTING", older)
        .await
        .unwrap();
    h.sim
        .inject_presence_event(&user, "On Queue", older)
        .await
        .unwrap();
    let routing = ws.next_event().await;
    assert_eq!(
        routing["eventBody"]["routingStatus"]["status"],
        "INTERACTING"
    );
    let presence = ws.next_event().await;
    assert_eq!(
        presence["eventBody"]["presenceDefinition"]["id"],
        ON_QUEUE_ID
    );
    let unchanged = h.sim.user(&user).await.unwrap().unwrap();
    assert_eq!(unchanged, snapshot);

    let added = h.sim.add_user("Late Joiner").await.unwrap();
    let snapshot = h
        .sim
        .user(&added.to_ascii_uppercase())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.name, "Late Joiner");
    assert_eq!(snapshot.routing_status, "IDLE");
    assert!(h.sim.set_routing_status("nobody", "IDLE").await.is_err());
    assert!(h.sim.set_presence(&user, "Nonsense").await.is_err());
    let unknown = h.get_json("/api/v2/users/nobody/routingstatus").await;
    assert_eq!(unknown["status"], "OFF_QUEUE");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn autopilot_moves_agents_through_their_shift() {
    let h = start(SimConfig {
        agents: 10,
        speed: 2000.0,
        autopilot: true,
        ..quiet()
    })
    .await;
    let ids = h.sim.agent_ids().await.unwrap();
    let topics: Vec<String> = ids.iter().map(|id| user_topic(id)).collect();
    let (_channel, mut ws) = h.channel_with(&topics).await;
    let mut kinds = std::collections::BTreeSet::new();
    let mut statuses = std::collections::BTreeSet::new();
    while !(statuses.contains("INTERACTING") && statuses.contains("IDLE") && kinds.len() == 3) {
        let event = ws.next_event().await;
        let topic = event["topicName"].as_str().unwrap();
        let suffix = topic.rsplit('.').next().unwrap().to_string();
        if let Some(status) = event["eventBody"]["routingStatus"]["status"].as_str() {
            statuses.insert(status.to_string());
        }
        kinds.insert(suffix);
    }
    let names: Vec<String> = {
        let mut names = Vec::new();
        for id in &ids {
            names.push(h.sim.user(id).await.unwrap().unwrap().name);
        }
        names
    };
    assert_eq!(names[0], "Agent 0001");
    assert_eq!(names[1], "Pat & Sam <QA>");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn bulk_presences_answer_known_users() {
    let h = start(quiet()).await;
    let ids = h.sim.agent_ids().await.unwrap();
    let bulk = h
        .get_json(&format!(
            "/api/v2/users/presences/purecloud/bulk?id={},{},unknown",
            ids[0], ids[2]
        ))
        .await;
    let users: Vec<&str> = bulk
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["userId"].as_str().unwrap())
        .collect();
    assert_eq!(users, [ids[0].as_str(), ids[2].as_str()]);
    let too_many: Vec<String> = (0..51).map(|i| format!("u{i}")).collect();
    let response = h
        .get(&format!(
            "/api/v2/users/presences/purecloud/bulk?id={}",
            too_many.join(",")
        ))
        .await;
    assert_eq!(response.status(), 400);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_21st_channel_evicts_an_unconnected_one() {
    let h = start(quiet()).await;
    let (connected, _ws) = h.channel_with(&[]).await;
    let mut created = Vec::new();
    for _ in 0..20 {
        created.push(h.create_channel().await.id);
    }
    let channels = h.sim.channels().await.unwrap();
    assert_eq!(channels.len(), agent_monitor::sim::MAX_CHANNELS);
    assert_eq!(h.head_channel(&connected.id).await, 200);
    assert_eq!(h.head_channel(&created[0]).await, 404);
    assert_eq!(h.head_channel(&created[19]).await, 200);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn invalid_configurations_are_refused() {
    for cfg in [
        SimConfig {
            speed: 0.0,
            ..quiet()
        },
        SimConfig {
            speed: f64::NAN,
            ..quiet()
        },
        SimConfig {
            heartbeat_interval: Duration::ZERO,
            ..quiet()
        },
    ] {
        assert!(Simulator::start(loopback(), cfg).await.is_err());
    }
}

#[tokio::test]
async fn quick_changes_get_strictly_increasing_timestamps() {
    let h = start(quiet()).await;
    let user = h.sim.agent_ids().await.unwrap()[0].clone();
    let (_channel, mut ws) = h.channel_with(&[user_topic(&user)]).await;
    for status in ["INTERACTING", "IDLE", "INTERACTING", "OFF_QUEUE"] {
        h.sim.set_routing_status(&user, status).await.unwrap();
    }
    for presence in ["BREAK", "ON_QUEUE", "MEAL"] {
        h.sim.set_presence(&user, presence).await.unwrap();
    }
    let mut routing = Vec::new();
    let mut presence = Vec::new();
    while routing.len() < 4 || presence.len() < 3 {
        let event = ws.next_event().await;
        let body = &event["eventBody"];
        if let Some(start) = body["routingStatus"]["startTime"].as_str() {
            routing.push(agent_monitor::domain::parse_timestamp(start).unwrap());
        } else if let Some(modified) = body["modifiedDate"].as_str() {
            presence.push(agent_monitor::domain::parse_timestamp(modified).unwrap());
        }
    }
    assert!(routing.windows(2).all(|w| w[0] < w[1]), "{routing:?}");
    assert!(presence.windows(2).all(|w| w[0] < w[1]), "{presence:?}");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn an_unspecified_bind_address_is_advertised_as_loopback() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let sim = Simulator::start("0.0.0.0:0".parse().unwrap(), quiet())
        .await
        .unwrap();
    assert!(
        sim.base_url().starts_with("http://127.0.0.1:"),
        "{}",
        sim.base_url()
    );
    let http = reqwest::Client::new();
    let token = request_token(&sim, &http).await;
    let channel: Channel = http
        .post(format!("{}/api/v2/notifications/channels", sim.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(channel.connect_uri.starts_with("ws://127.0.0.1:"));
    sim.shutdown().await;
}

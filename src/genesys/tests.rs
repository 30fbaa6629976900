//! Unit tests of the Genesys client against a scripted local server answering with the shapes
//! of the protocol reference.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use url::Url;

use super::test_server::{Recorded, Reply, TestServer, capture_logs};
use super::*;
use crate::config::{Credentials, GenesysConfig, GenesysEndpoints};
use crate::secret::Secret;

const SECRET: &str = "s3cr3t-value";
/// `Basic base64("test-client:s3cr3t-value")`.
const BASIC: &str = "Basic dGVzdC1jbGllbnQ6czNjcjN0LXZhbHVl";

fn config(base: &str) -> GenesysConfig {
    GenesysConfig {
        endpoints: GenesysEndpoints {
            api_base: Url::parse(base).unwrap(),
            login_base: Url::parse(base).unwrap(),
            region: Some("mypurecloud.ie".into()),
        },
        credentials: Credentials {
            client_id: "test-client".into(),
            client_secret: Secret::new(SECRET),
        },
        ping_interval: Duration::from_secs(20),
        silence_timeout: Duration::from_secs(60),
        topics_per_channel: 1000,
        request_timeout: Duration::from_secs(5),
        rate_limit_per_minute: crate::config::DEFAULT_GENESYS_RATE_LIMIT,
    }
}

fn client(server: &TestServer) -> GenesysClient {
    GenesysClient::with_retry_policy(&config(&server.base), RetryPolicy::fast()).unwrap()
}

/// Answers `POST /oauth/token` with `tok-1`, `tok-2`, … valid for `expires_in` seconds, after
/// checking the grant's shape; `None` for any other path.
fn token_endpoint(r: &Recorded, issued: &AtomicUsize, expires_in: u64) -> Option<Reply> {
    if r.path != "/oauth/token" {
        return None;
    }
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("authorization"), Some(BASIC));
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.body, "grant_type=client_credentials");
    let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
    Some(Reply::json(
        200,
        json!({"access_token": format!("tok-{n}"), "token_type": "bearer", "expires_in": expires_in}),
    ))
}

fn date_reply() -> Reply {
    Reply::json(200, json!({"currentDate": "2024-05-01T10:00:00.123Z"}))
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

#[test]
fn renew_margin_is_60s_or_a_tenth() {
    assert_eq!(
        renew_margin(Duration::from_secs(86_399)),
        Duration::from_secs(60)
    );
    assert_eq!(
        renew_margin(Duration::from_secs(300)),
        Duration::from_secs(30)
    );
    assert_eq!(renew_margin(Duration::from_secs(1)), ms(100));
}

#[tokio::test]
async fn token_is_cached_and_renewed_before_expiry() {
    let issued = Arc::new(AtomicUsize::new(0));
    let seen = issued.clone();
    // A 1 s token is renewed 100 ms before it expires.
    let server = TestServer::start(move |r| {
        token_endpoint(r, &seen, 1).unwrap_or_else(|| {
            assert!(
                r.header("authorization")
                    .unwrap()
                    .starts_with("Bearer tok-")
            );
            date_reply()
        })
    })
    .await;
    let client = client(&server);
    assert_eq!(client.renewals(), 0, "no request before first use");

    let date = client.server_date().await.unwrap();
    assert_eq!(date.to_rfc3339(), "2024-05-01T10:00:00.123+00:00");
    client.server_date().await.unwrap();
    assert_eq!(client.renewals(), 1);
    assert_eq!(server.count("/oauth/token"), 1);
    let api: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/date")
        .collect();
    assert!(
        api.iter()
            .all(|r| r.header("authorization") == Some("Bearer tok-1"))
    );

    tokio::time::sleep(ms(950)).await; // past the renewal point (900 ms), before expiry
    client.server_date().await.unwrap();
    assert_eq!(client.renewals(), 2);
    let last = server.requests().pop().unwrap();
    assert_eq!(last.header("authorization"), Some("Bearer tok-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_renewal() {
    let issued = Arc::new(AtomicUsize::new(0));
    let seen = issued.clone();
    let server = TestServer::start(move |r| match token_endpoint(r, &seen, 86_399) {
        Some(reply) => reply.delay(ms(300)),
        None => date_reply(),
    })
    .await;
    let client = client(&server);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.server_date().await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(server.count("/oauth/token"), 1);
    assert_eq!(client.renewals(), 1);
    assert_eq!(server.count("/api/v2/date"), 10);
}

#[tokio::test]
async fn http_401_renews_the_token_and_retries_once() {
    let issued = Arc::new(AtomicUsize::new(0));
    let seen = issued.clone();
    let server = TestServer::start(move |r| {
        token_endpoint(r, &seen, 86_399).unwrap_or_else(|| {
            if r.header("authorization") == Some("Bearer tok-1") {
                Reply::json(
                    401,
                    json!({"message": "Token expired", "code": "bad.credentials", "status": 401}),
                )
            } else {
                date_reply()
            }
        })
    })
    .await;
    let client = client(&server);
    client.server_date().await.unwrap();
    assert_eq!(client.renewals(), 2);
    assert_eq!(server.count("/api/v2/date"), 2);
}

#[tokio::test]
async fn a_second_401_is_an_error() {
    let issued = Arc::new(AtomicUsize::new(0));
    let seen = issued.clone();
    let server = TestServer::start(move |r| {
        token_endpoint(r, &seen, 86_399).unwrap_or_else(|| {
            Reply::json(401, json!({"message": "No authentication bearer token specified", "code": "authentication.required", "status": 401}))
        })
    })
    .await;
    let client = client(&server);
    let err = client.server_date().await.unwrap_err();
    assert!(
        matches!(&err, GenesysError::Api { status: 401, code: Some(c), .. } if c == "authentication.required"),
        "{err:?}"
    );
    assert_eq!(server.count("/api/v2/date"), 2, "retried exactly once");
    assert_eq!(client.renewals(), 2);
}

/// Answers the first `/api/v2/date` with `first`, later ones with the date.
async fn first_then_date(first: Reply) -> TestServer {
    let issued = Arc::new(AtomicUsize::new(0));
    let dates = Arc::new(AtomicUsize::new(0));
    TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399).unwrap_or_else(|| {
            if dates.fetch_add(1, Ordering::SeqCst) == 0 {
                first.clone()
            } else {
                date_reply()
            }
        })
    })
    .await
}

#[tokio::test]
async fn http_429_waits_retry_after() {
    let server = first_then_date(
        Reply::json(429, json!({"message": "Rate limit exceeded the maximum. Retry the request in [5] seconds", "status": 429}))
            .header("Retry-After", "1")
            .header("inin-ratelimit-reset", "9"),
    )
    .await;
    let client = client(&server);
    client.access_token().await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(4), client.server_date())
        .await
        .expect("Retry-After (1 s) wins over [5] and the reset header (9 s)")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.count("/api/v2/date"), 2);
}

#[tokio::test]
async fn http_429_falls_back_to_the_bracketed_seconds() {
    let server = first_then_date(Reply::json(
        429,
        json!({"message": "Rate limit exceeded the maximum. Retry the request in [1] seconds",
               "code": "too.many.requests.retry.after", "status": 429}),
    ))
    .await;
    let client = client(&server);
    client.access_token().await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(4), client.server_date())
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn http_429_falls_back_to_the_reset_header() {
    let server = first_then_date(
        Reply::json(
            429,
            json!({"message": "Rate limit exceeded", "status": 429}),
        )
        .header("inin-ratelimit-reset", "1"),
    )
    .await;
    let client = client(&server);
    client.access_token().await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(4), client.server_date())
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn http_429_on_the_login_host_is_waited_out() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let issued = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        if r.path == "/oauth/token" && tokens.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::json(429, json!({"message": "Rate limit exceeded"}))
                .header("Retry-After", "1");
        }
        token_endpoint(r, &issued, 86_399).unwrap_or_else(date_reply)
    })
    .await;
    let client = client(&server);
    let started = Instant::now();
    client.server_date().await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.count("/oauth/token"), 2);
    assert_eq!(client.renewals(), 1);
}

#[tokio::test]
async fn server_errors_back_off_then_succeed() {
    let issued = Arc::new(AtomicUsize::new(0));
    let dates = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399).unwrap_or_else(|| {
            match dates.fetch_add(1, Ordering::SeqCst) {
                0 => Reply::json(
                    503,
                    json!({"message": "Service Unavailable", "status": 503}),
                ),
                1 => Reply::text(502, "bad gateway"),
                _ => date_reply(),
            }
        })
    })
    .await;
    let client = client(&server);
    client.server_date().await.unwrap();
    assert_eq!(server.count("/api/v2/date"), 3);
}

#[tokio::test]
async fn server_errors_give_up_after_max_attempts() {
    let issued = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399)
            .unwrap_or_else(|| Reply::json(500, json!({"message": "boom", "status": 500})))
    })
    .await;
    let client = client(&server);
    let err = client.server_date().await.unwrap_err();
    assert!(
        matches!(&err, GenesysError::Server { status: 500, attempts: 3, message, .. } if message == "boom"),
        "{err:?}"
    );
    assert_eq!(server.count("/api/v2/date"), 3);
}

#[tokio::test]
async fn connection_errors_give_up_after_max_attempts() {
    // Bind then drop a listener: the port refuses connections.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = GenesysClient::with_retry_policy(
        &config(&format!("http://127.0.0.1:{port}")),
        RetryPolicy::fast(),
    )
    .unwrap();
    let err = client.server_date().await.unwrap_err();
    assert!(
        matches!(err, GenesysError::Transport { attempts: 3, .. }),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    // hyper names the socket address it could not reach, but the URL is stripped: only the
    // origin (scheme, host, port) is named.
    assert!(
        !text.contains(&format!("http://127.0.0.1:{port}/")),
        "URL stripped: {text}"
    );
}

#[tokio::test]
async fn unreachable_hosts_are_named_in_retry_logs_and_errors() {
    let (logs, _guard) = capture_logs();
    // Bound then dropped: these ports refuse connections.
    fn refusing() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }
    let (login_port, api_port) = (refusing(), refusing());
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut cfg = config(&format!("http://127.0.0.1:{api_port}"));
    cfg.endpoints.login_base = Url::parse(&format!("http://127.0.0.1:{login_port}/")).unwrap();
    let client = GenesysClient::with_retry_policy(&cfg, RetryPolicy::fast()).unwrap();
    let err = client.server_date().await.unwrap_err().to_string();
    let login = format!("http://127.0.0.1:{login_port}");
    assert!(
        err.contains(&format!("POST /oauth/token at {login}")),
        "the login host is named: {err}"
    );
    let text = logs.text();
    assert!(
        text.contains("Genesys Cloud unreachable: retrying") && text.contains(&login),
        "the retry log names the host: {text}"
    );
    assert!(!text.contains(SECRET) && !err.contains(SECRET));
}

#[tokio::test]
async fn invalid_client_is_fatal_and_names_the_region_not_the_secret() {
    for status in [400, 401] {
        let server = TestServer::start(move |_| {
            Reply::json(
                status,
                json!({"error": "invalid_client", "description": "authentication failed",
                       "error_description": "authentication failed"}),
            )
        })
        .await;
        let client = client(&server);
        let err = client.list_active_users().await.unwrap_err();
        assert!(matches!(err, GenesysError::InvalidClient { .. }), "{err:?}");
        assert!(err.is_fatal());
        let text = format!("{err}");
        assert!(text.contains("mypurecloud.ie"), "{text}");
        assert!(text.contains("client id and secret"), "{text}");
        assert!(text.contains("/oauth/token"), "{text}");
        let everything = format!("{err} {err:?} {client:?}");
        assert!(!everything.contains(SECRET), "{everything}");
        assert_eq!(server.count("/oauth/token"), 1, "not retried");
        assert_eq!(server.requests().len(), 1);
    }
}

#[tokio::test]
async fn other_oauth_refusals_are_auth_errors() {
    let server = TestServer::start(|_| {
        Reply::json(
            400,
            json!({"error": "unauthorized_client", "error_description": "grant not allowed"}),
        )
    })
    .await;
    let err = client(&server).access_token().await.unwrap_err();
    match err {
        GenesysError::Auth { status, error } => {
            assert_eq!(status, 400);
            assert_eq!(error, "unauthorized_client (grant not allowed)");
        }
        other => panic!("{other:?}"),
    }
}

fn user(id: &str, presence: bool, routing: bool) -> serde_json::Value {
    let mut u = json!({"id": id, "name": format!("Agent {id}"), "state": "active"});
    if presence {
        u["presence"] = json!({"source": "PURECLOUD", "primary": true,
            "presenceDefinition": {"id": "e08eaf1b-ee47-4fa9-a231-1200e284798f", "systemPresence": "On Queue"},
            "modifiedDate": "2024-05-01T10:19:58.000Z"});
    }
    if routing {
        u["routingStatus"] =
            json!({"userId": id, "status": "IDLE", "startTime": "2024-05-01T10:20:00.000Z"});
    }
    u
}

#[tokio::test]
async fn users_are_listed_across_pages_with_page_count() {
    let issued = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399).unwrap_or_else(|| {
            assert_eq!(r.path, "/api/v2/users");
            assert_eq!(r.param("state"), Some("active"));
            assert_eq!(r.param("expand"), Some("presence,routingStatus"));
            assert_eq!(r.param("pageSize"), Some("500"));
            let page: u32 = r.param("pageNumber").unwrap().parse().unwrap();
            let entities: Vec<_> = (0..2)
                .map(|i| user(&format!("u{page}{i}"), true, true))
                .collect();
            let mut listing = json!({"entities": entities, "pageSize": 500, "pageNumber": page,
                                     "total": 6, "pageCount": 3});
            if page < 3 {
                listing["nextUri"] = json!(format!(
                    "/api/v2/users?pageSize=500&pageNumber={}",
                    page + 1
                ));
            }
            Reply::json(200, listing)
        })
    })
    .await;
    let users = client(&server).list_active_users().await.unwrap();
    let ids: Vec<_> = users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["u10", "u11", "u20", "u21", "u30", "u31"]);
    assert_eq!(server.count("/api/v2/users"), 3);
    let first = &users[0];
    assert_eq!(first.routing_status.as_ref().unwrap().status, "IDLE");
    assert_eq!(
        first
            .presence
            .as_ref()
            .unwrap()
            .presence_definition
            .as_ref()
            .unwrap()
            .system_presence
            .as_deref(),
        Some("On Queue")
    );
}

#[tokio::test]
async fn users_paging_follows_next_uri_and_stops_on_an_empty_page() {
    let issued = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399).unwrap_or_else(|| {
            let page: u32 = r.param("pageNumber").unwrap().parse().unwrap();
            match page {
                // No pageCount: nextUri decides.
                1 => Reply::json(200, json!({"entities": [user("a", true, true)], "nextUri": "/api/v2/users?pageNumber=2"})),
                2 => Reply::json(200, json!({"entities": [user("b", true, true)], "nextUri": "/api/v2/users?pageNumber=3"})),
                // An empty page ends the listing even though it names a next page.
                _ => Reply::json(200, json!({"entities": [], "nextUri": "/api/v2/users?pageNumber=4"})),
            }
        })
    })
    .await;
    let users = client(&server).list_active_users().await.unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(server.count("/api/v2/users"), 3);
}

#[tokio::test]
async fn missing_expands_are_fetched_per_user() {
    let issued = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399).unwrap_or_else(|| match r.path.as_str() {
            "/api/v2/users" => Reply::json(
                200,
                json!({"entities": [user("u1", true, true), user("u2", false, true),
                                    user("u3", true, false), user("u4", false, true)],
                       "pageCount": 1}),
            ),
            "/api/v2/users/u2/presences/purecloud" => Reply::json(
                200,
                json!({"source": "PURECLOUD", "presenceDefinition":
                        {"id": "6a3af858-942f-489d-9700-5f9bcdcdae9b", "systemPresence": "Available"},
                       "modifiedDate": "2024-05-01T09:00:00Z"}),
            ),
            "/api/v2/users/u3/routingstatus" => Reply::json(
                200,
                json!({"userId": "u3", "status": "OFF_QUEUE", "startTime": "2024-05-01T08:00:00Z"}),
            ),
            "/api/v2/users/u4/presences/purecloud" => Reply::json(
                404,
                json!({"message": "user not found", "code": "not.found", "status": 404}),
            ),
            other => panic!("unexpected {other}"),
        })
    })
    .await;
    let users = client(&server).list_active_users().await.unwrap();
    assert_eq!(users.len(), 4);
    let u2 = users.iter().find(|u| u.id == "u2").unwrap();
    assert_eq!(
        u2.presence
            .as_ref()
            .unwrap()
            .presence_definition
            .as_ref()
            .unwrap()
            .system_presence
            .as_deref(),
        Some("Available")
    );
    let u3 = users.iter().find(|u| u.id == "u3").unwrap();
    assert_eq!(u3.routing_status.as_ref().unwrap().status, "OFF_QUEUE");
    let u4 = users.iter().find(|u| u.id == "u4").unwrap();
    assert!(u4.presence.is_none(), "a 404 leaves the expand missing");
    assert_eq!(server.count("/api/v2/users/u1/presences/purecloud"), 0);
    assert_eq!(server.count("/api/v2/users/u1/routingstatus"), 0);
}

fn definition(id: &str, system: &str) -> serde_json::Value {
    json!({"id": id, "languageLabels": {"en_US": system}, "systemPresence": system,
           "deactivated": false, "type": "System"})
}

#[tokio::test]
async fn presence_definitions_use_the_new_endpoint() {
    let issued = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399).unwrap_or_else(|| {
            assert_eq!(r.path, "/api/v2/presence/definitions");
            assert_eq!(r.param("deactivated"), Some("false"));
            assert_eq!(r.param("localeCode"), Some("ALL"));
            Reply::json(200, json!({"total": 2, "entities": [definition("p1", "Available"), definition("p2", "OnQueue")]}))
        })
    })
    .await;
    let defs = client(&server).presence_definitions().await.unwrap();
    assert_eq!(defs.len(), 2);
    assert_eq!(defs[1].system_presence.as_deref(), Some("OnQueue"));
}

#[tokio::test]
async fn presence_definitions_fall_back_to_the_legacy_endpoint() {
    for refusal in [403, 404] {
        let issued = Arc::new(AtomicUsize::new(0));
        let server = TestServer::start(move |r| {
            token_endpoint(r, &issued, 86_399).unwrap_or_else(|| match r.path.as_str() {
                "/api/v2/presence/definitions" => Reply::json(
                    refusal,
                    json!({"message": "Missing permission", "code": "missing.any.permissions", "status": refusal}),
                ),
                "/api/v2/presencedefinitions" => {
                    assert_eq!(r.param("pageSize"), Some("100"));
                    assert_eq!(r.param("deleted"), Some("false"));
                    let page: u32 = r.param("pageNumber").unwrap().parse().unwrap();
                    let entity = definition(&format!("legacy{page}"), "On Queue");
                    Reply::json(200, json!({"entities": [entity], "pageSize": 100, "pageNumber": page, "pageCount": 2}))
                }
                other => panic!("unexpected {other}"),
            })
        })
        .await;
        let defs = client(&server).presence_definitions().await.unwrap();
        let ids: Vec<_> = defs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["legacy1", "legacy2"], "after HTTP {refusal}");
    }
}

#[tokio::test]
async fn other_api_errors_are_not_retried() {
    let issued = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399).unwrap_or_else(|| {
            Reply::json(
                400,
                json!({"message": "bad request", "code": "bad.request", "status": 400}),
            )
        })
    })
    .await;
    let err = client(&server).presence_definitions().await.unwrap_err();
    assert!(
        matches!(&err, GenesysError::Api { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(server.count("/api/v2/presence/definitions"), 1);
    assert_eq!(server.count("/api/v2/presencedefinitions"), 0);
}

#[tokio::test]
async fn channels_and_subscriptions() {
    let issued = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399).unwrap_or_else(|| {
            match (r.method.as_str(), r.path.as_str()) {
                ("POST", "/api/v2/notifications/channels") => Reply::json(
                    200,
                    json!({"connectUri": "wss://streaming.mypurecloud.com/channels/streaming-0-abc",
                           "id": "streaming-0-abc", "expires": "2024-05-02T10:00:00.000Z"}),
                ),
                ("HEAD", "/api/v2/notifications/channels/streaming-0-abc") => Reply::text(200, ""),
                ("HEAD", _) => Reply::text(404, ""),
                ("DELETE", "/api/v2/notifications/channels/streaming-0-abc/subscriptions") => {
                    Reply::text(204, "")
                }
                ("DELETE", "/api/v2/notifications/channels/streaming-0-gone/subscriptions") => {
                    Reply::json(
                        404,
                        json!({"message": "channel not found", "code": "not.found", "status": 404}),
                    )
                }
                ("DELETE", _) => Reply::json(403, json!({"message": "forbidden", "status": 403})),
                ("PUT", "/api/v2/notifications/channels/streaming-0-abc/subscriptions") => {
                    assert_eq!(r.param("ignoreErrors"), Some("true"));
                    let topics: Vec<serde_json::Value> = serde_json::from_str(&r.body).unwrap();
                    // The first topic is permitted, the second rejected (ignoreErrors=true).
                    let entities: Vec<_> = topics
                        .iter()
                        .enumerate()
                        .map(|(i, t)| match i {
                            0 => json!({"id": t["id"], "state": "Permitted"}),
                            _ => json!({"id": t["id"], "state": "Rejected",
                                        "rejectionReason": "missing permission",
                                        "missingPermissions": ["directory:user:view"]}),
                        })
                        .collect();
                    Reply::json(200, json!({"entities": entities}))
                }
                other => panic!("unexpected {other:?}"),
            }
        })
    })
    .await;
    let client = client(&server);
    let channel = client.create_channel().await.unwrap();
    assert_eq!(channel.id, "streaming-0-abc");
    assert_eq!(
        channel.connect_uri,
        "wss://streaming.mypurecloud.com/channels/streaming-0-abc"
    );
    assert!(client.channel_exists("streaming-0-abc").await.unwrap());
    assert!(!client.channel_exists("streaming-0-gone").await.unwrap());

    let topics = vec![
        crate::protocol::user_topic("u1"),
        crate::protocol::user_topic("u2"),
    ];
    let subscribed = client
        .put_subscriptions(&channel.id, &topics)
        .await
        .unwrap();
    assert_eq!(
        subscribed.permitted,
        vec!["v2.users.u1?presence&routingStatus&conversationsummary".to_string()]
    );
    assert_eq!(
        subscribed.rejected,
        vec![(topics[1].clone(), "missing permission".to_string())]
    );
    let put = server
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&put.body).unwrap(),
        json!([{"id": topics[0]}, {"id": topics[1]}])
    );
    assert_eq!(put.header("content-type"), Some("application/json"));

    client
        .delete_subscriptions("streaming-0-abc")
        .await
        .unwrap();
    client
        .delete_subscriptions("streaming-0-gone")
        .await
        .expect("a channel already gone has no subscriptions left");
    let refused = client.delete_subscriptions("other").await.unwrap_err();
    assert_eq!(refused.status(), Some(403));
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE")
            .count(),
        3,
        "a refusal is not retried"
    );
}

#[test]
fn subscribe_outcome_splits_by_state() {
    let entities: Vec<crate::protocol::ChannelTopic> = serde_json::from_value(json!([
        {"id": "a", "state": "Permitted"},
        {"id": "b", "state": "REJECTED"},
        {"id": "c"},
        {"id": "d", "state": "Rejected", "rejectionReason": "  "},
    ]))
    .unwrap();
    let outcome = SubscribeOutcome::from_entities(entities);
    assert_eq!(outcome.permitted, vec!["a".to_string(), "c".to_string()]);
    assert_eq!(
        outcome.rejected,
        vec![
            ("b".to_string(), "no rejectionReason given".to_string()),
            ("d".to_string(), "no rejectionReason given".to_string()),
        ]
    );
}

#[tokio::test]
async fn logs_never_show_the_secret_or_the_token() {
    let (logs, _guard) = capture_logs();
    let issued = Arc::new(AtomicUsize::new(0));
    let dates = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399).unwrap_or_else(|| {
            match dates.fetch_add(1, Ordering::SeqCst) {
                0 => Reply::json(401, json!({"message": "expired"})),
                1 => Reply::json(429, json!({"message": "Retry the request in [0] seconds"})),
                2 => Reply::json(503, json!({"message": "down"})),
                _ => date_reply(),
            }
        })
    })
    .await;
    client(&server).server_date().await.unwrap();
    let text = logs.text();
    assert!(text.contains("HTTP 429: waiting"), "{text}");
    for secret in [SECRET, "tok-1", "tok-2", BASIC, "dGVzdC1jbGllbnQ6"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

/// A client whose budget is `limit` requests per `window` (RetryPolicy::fast).
fn budgeted_client(server: &TestServer, limit: u32, window: Duration) -> GenesysClient {
    let budget = RateBudget::new(std::num::NonZeroU32::new(limit).unwrap(), window);
    GenesysClient::with_rate_budget(&config(&server.base), RetryPolicy::fast(), budget).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_budget_keeps_every_window_under_the_limit() {
    // Budget: 12 per second, so a burst of 2 then one request every 100 ms. The server refuses
    // (and counts) any API request that would make more than 12 arrivals in a sliding second.
    const LIMIT: usize = 12;
    const WINDOW: Duration = Duration::from_secs(1);
    let issued = Arc::new(AtomicUsize::new(0));
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let (seen, arrived, over) = (issued.clone(), arrivals.clone(), refused.clone());
    let server = TestServer::start(move |r| {
        if let Some(reply) = token_endpoint(r, &seen, 86_399) {
            return reply;
        }
        let now = Instant::now();
        let mut arrived = arrived.lock().unwrap();
        let in_window = arrived
            .iter()
            .filter(|t| now.duration_since(**t) < WINDOW)
            .count();
        arrived.push(now);
        if in_window + 1 > LIMIT {
            over.fetch_add(1, Ordering::SeqCst);
            return Reply::json(429, json!({"message": "Rate limit exceeded the maximum. Retry the request in [1] seconds", "status": 429}));
        }
        date_reply()
    })
    .await;
    let client = budgeted_client(&server, LIMIT as u32, WINDOW);
    let started = Instant::now();
    // Three clones share one budget.
    let clones = [client.clone(), client.clone(), client.clone()];
    let calls: Vec<_> = (0..30)
        .map(|i| {
            let c = clones[i % 3].clone();
            tokio::spawn(async move { c.server_date().await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "the server saw a window over the limit"
    );
    assert_eq!(arrivals.lock().unwrap().len(), 30, "no request was retried");
    // The GCRA's own floor: after the burst of 2, 28 requests at 100 ms intervals (a lower
    // bound only; a loaded machine may take longer).
    assert!(
        elapsed >= ms(2_800) - ms(5),
        "30 requests went out in {elapsed:?}"
    );
    assert!(client.rate_budget().waits() >= 28 - 2);
    assert!(client.rate_budget().waited() > Duration::ZERO);
}

#[tokio::test]
async fn a_server_counting_windows_catches_a_client_without_budget() {
    // The same server-side check must fail a client that sends more than the limit at once:
    // otherwise the test above could not fail.
    let issued = Arc::new(AtomicUsize::new(0));
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let (seen, arrived) = (issued.clone(), arrivals.clone());
    let server = TestServer::start(move |r| {
        token_endpoint(r, &seen, 86_399).unwrap_or_else(|| {
            arrived.lock().unwrap().push(Instant::now());
            date_reply()
        })
    })
    .await;
    let client = budgeted_client(&server, 10_000, Duration::from_secs(1));
    for _ in 0..13 {
        client.server_date().await.unwrap();
    }
    let arrived = arrivals.lock().unwrap();
    let first = arrived[0];
    let within = arrived
        .iter()
        .filter(|t| t.duration_since(first) < Duration::from_secs(1))
        .count();
    assert!(within > 12, "13 unbudgeted requests took over a second");
}

#[tokio::test]
async fn the_token_request_is_not_counted_and_api_requests_are() {
    let issued = Arc::new(AtomicUsize::new(0));
    let seen = issued.clone();
    let server =
        TestServer::start(move |r| token_endpoint(r, &seen, 86_399).unwrap_or_else(date_reply))
            .await;
    // One request per minute: the token request before it must not use it up.
    let client = budgeted_client(&server, 1, Duration::from_secs(60));
    tokio::time::timeout(Duration::from_secs(5), client.server_date())
        .await
        .expect("the first API request waited: the token request was counted")
        .unwrap();
    assert_eq!(client.rate_budget().waits(), 0);
    assert_eq!(server.count("/oauth/token"), 1);
    let second = tokio::time::timeout(ms(200), client.clone().server_date()).await;
    assert!(
        second.is_err(),
        "a second request in the same minute was sent"
    );
    assert_eq!(server.count("/api/v2/date"), 1);
}

#[tokio::test]
async fn users_are_filtered_by_division_before_expands_are_completed() {
    let issued = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399).unwrap_or_else(|| match r.path.as_str() {
            "/api/v2/users" => {
                assert_eq!(r.param("divisionId"), None, "getUsers has no division parameter");
                let in_division = |id: &str, division: &str, presence: bool| {
                    let mut u = user(id, presence, true);
                    u["division"] = json!({"id": division, "name": "Division"});
                    u
                };
                Reply::json(
                    200,
                    json!({"entities": [in_division("u1", "DIV-A", true),
                                        in_division("u2", "div-b", false),
                                        in_division("u3", "div-c", false),
                                        user("u4", true, true)],
                           "pageCount": 1}),
                )
            }
            "/api/v2/users/u2/presences/purecloud" => Reply::json(
                200,
                json!({"source": "PURECLOUD", "presenceDefinition":
                        {"id": "6a3af858-942f-489d-9700-5f9bcdcdae9b", "systemPresence": "Available"},
                       "modifiedDate": "2024-05-01T09:00:00Z"}),
            ),
            // Only the unfiltered listing at the end asks for u3.
            "/api/v2/users/u3/presences/purecloud" => Reply::json(
                404,
                json!({"message": "user not found", "code": "not.found", "status": 404}),
            ),
            other => panic!("unexpected {other}"),
        })
    })
    .await;
    let client = client(&server);
    let divisions = ["div-a".to_string(), "DIV-B".to_string()];
    let users = client
        .list_active_users_in_divisions(&divisions)
        .await
        .unwrap();
    let ids: Vec<_> = users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["u1", "u2"], "u3 is in another division, u4 has none");
    assert!(users[1].presence.is_some());
    assert_eq!(
        server.count("/api/v2/users/u3/presences/purecloud"),
        0,
        "no expand is completed for a user filtered out"
    );
    assert_eq!(
        client
            .list_active_users_in_divisions(&[])
            .await
            .unwrap()
            .len(),
        4
    );
}

/// An empty page that itself says more pages follow (a directory hiccup mid-listing) is not the
/// end of the listing: taking it so would drop every user of the later pages, and a re-listing
/// would stop their agents. The listing fails instead (and is retried).
#[tokio::test]
async fn an_empty_page_within_the_page_count_fails_the_listing() {
    let issued = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(move |r| {
        token_endpoint(r, &issued, 86_399).unwrap_or_else(|| {
            let page: u32 = r.param("pageNumber").unwrap().parse().unwrap();
            let entities: Vec<_> = if page == 2 {
                Vec::new()
            } else {
                vec![user(&format!("u{page}"), true, true)]
            };
            Reply::json(
                200,
                json!({"entities": entities, "pageSize": 500, "pageNumber": page,
                       "total": 3, "pageCount": 3}),
            )
        })
    })
    .await;
    let result = client(&server).list_active_users().await;
    match result {
        Err(GenesysError::Decode { .. }) => {}
        other => panic!(
            "expected a Decode error, got {:?}",
            other.map(|u| u.into_iter().map(|u| u.id).collect::<Vec<_>>())
        ),
    }
}

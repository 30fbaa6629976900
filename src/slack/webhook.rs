//! One POST to an alert destination and the classification of its answer
//! (`shared/alerting.md` §1, api.slack.com/messaging/webhooks).
//!
//! Slack: `POST <webhook URL>` with a JSON body; success is HTTP 200 with the plain-text body
//! `ok`; errors are classified by Slack's error string first and the status second
//! ([`classify`]). Generic webhook: any 2xx is success. Retries, pauses and pacing belong to the
//! caller (the Slack actor's per-destination queues), so a POST never sleeps.
//!
//! The webhook URL is the credential: it is held in a [`Secret`], stripped from reqwest errors
//! (`without_url`) and redacted from every message this module produces.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::config::DestinationKind;
use crate::genesys::backoff::retry_after;
use crate::secret::{Secret, redact};

/// Slack error strings that mean the payload itself was refused (alerting reference §4.11);
/// a text-only message may still get through.
pub const PAYLOAD_ERRORS: &[&str] = &[
    "invalid_payload",
    "invalid_blocks",
    "invalid_blocks_format",
    "invalid_attachments",
    "too_many_attachments",
    "no_text",
    "msg_too_long",
    "msg_blocks_too_long",
];

/// Slack error strings that mean the destination itself is gone or forbidden (alerting
/// reference §4.11): the destination is disabled. `no_service*` is matched by prefix.
pub const DESTINATION_ERRORS: &[&str] = &[
    "no_service",
    "no_service_id",
    "no_active_hooks",
    "invalid_token",
    "no_team",
    "team_disabled",
    "channel_not_found",
    "channel_is_archived",
    "action_prohibited",
    "posting_to_general_channel_denied",
    "user_not_found",
];

/// Is `error` one of Slack's payload refusals ([`PAYLOAD_ERRORS`], `invalid_blocks*`,
/// `msg_*too_long`)?
pub fn is_payload_error(error: &str) -> bool {
    PAYLOAD_ERRORS.contains(&error)
        || error.starts_with("invalid_blocks")
        || (error.starts_with("msg_") && error.ends_with("too_long"))
}

/// Is `error` one of Slack's destination errors ([`DESTINATION_ERRORS`], `no_service*`)?
pub fn is_destination_error(error: &str) -> bool {
    DESTINATION_ERRORS.contains(&error) || error.starts_with("no_service")
}

/// How one POST to a destination ended, classified for the delivery queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Slack: 200 `ok`; generic webhook: any 2xx.
    Delivered,
    /// 429 (or Slack's `rate_limited`): pause the destination for the wait (`None`: no usable
    /// `Retry-After`).
    RateLimited(Option<Duration>),
    /// 5xx, timeout or connection error: retry with backoff. The text never has the URL.
    Retryable(String),
    /// Slack refused the payload (`invalid_blocks`, …): one text-only retry, then dead letter.
    Payload(String),
    /// Slack says the destination is gone (`channel_is_archived`, `no_service`, …): disable it.
    Destination(String),
    /// Any other refusal (unknown 4xx, a 2xx body other than `ok`): dead letter.
    Permanent(String),
}

/// Classifies an HTTP answer: for Slack by the body's error string first (alerting reference
/// §1: "classify by body string first, status second"), then by status.
pub fn classify(kind: DestinationKind, status: StatusCode, body: &str) -> Answer {
    match kind {
        DestinationKind::Slack => {
            if status == StatusCode::OK && body.trim() == "ok" {
                return Answer::Delivered;
            }
            let error = error_string(status, body);
            if is_payload_error(&error) {
                Answer::Payload(error)
            } else if is_destination_error(&error) {
                Answer::Destination(error)
            } else if status == StatusCode::TOO_MANY_REQUESTS || error == "rate_limited" {
                Answer::RateLimited(None)
            } else if status.is_server_error() {
                Answer::Retryable(error)
            } else {
                Answer::Permanent(error)
            }
        }
        DestinationKind::Webhook => {
            if status.is_success() {
                Answer::Delivered
            } else if status == StatusCode::TOO_MANY_REQUESTS {
                Answer::RateLimited(None)
            } else if status.is_server_error() {
                Answer::Retryable(error_string(status, body))
            } else {
                Answer::Permanent(format!(
                    "http_{}: {}",
                    status.as_u16(),
                    error_string(status, body)
                ))
            }
        }
    }
}

/// The HTTP client of a destination could not be built (a TLS setup problem). Never contains
/// the URL.
#[derive(Debug, thiserror::Error)]
#[error("webhook client setup failed: {0}")]
pub struct SetupError(pub String);

/// One destination's HTTP endpoint: a single POST per [`Endpoint::post_once`], retries are the
/// caller's (the delivery queue schedules them with timers). `Debug` never prints the URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    http: reqwest::Client,
    url: Secret,
    kind: DestinationKind,
}

impl Endpoint {
    /// A client for `url` with `timeout` per POST.
    pub fn new(url: Secret, kind: DestinationKind, timeout: Duration) -> Result<Self, SetupError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("agent-monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError(redact(&e.without_url().to_string(), &[&url])))?;
        Ok(Endpoint { http, url, kind })
    }

    /// POSTs `payload` once and classifies the answer. Errors never contain the URL.
    pub async fn post_once(&self, payload: &Value) -> Answer {
        let answer = async {
            let response = self
                .http
                .post(self.url.expose())
                .json(payload)
                .send()
                .await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.text().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        match answer {
            Err(e) => Answer::Retryable(describe(e, &self.url)),
            Ok((status, headers, body)) => {
                match classify(self.kind, status, &redact(&body, &[&self.url])) {
                    Answer::RateLimited(_) => Answer::RateLimited(retry_after(&headers)),
                    other => other,
                }
            }
        }
    }
}

/// A transport error as text without the URL.
fn describe(error: reqwest::Error, url: &Secret) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection error"
    } else {
        "request error"
    };
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    redact(&format!("{kind}: {text}"), &[url])
}

/// Slack's error string from an answer body: the plain-text body (`channel_not_found`), or the
/// `error` of a JSON body (`{"ok":false,"error":"rate_limited"}`), clipped to 200 characters;
/// `http_<status>` when the body is empty.
fn error_string(status: StatusCode, body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return format!("http_{}", status.as_u16());
    }
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) {
        if let Some(Value::String(error)) = map.get("error") {
            return error.clone();
        }
    }
    body.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::genesys::test_server::{Reply, TestServer, capture_logs};

    const PATH: &str = "/services/T000/B000/XXXXSECRETXXXX";

    fn endpoint(base: &str, kind: DestinationKind) -> Endpoint {
        Endpoint::new(
            Secret::new(format!("{base}{PATH}")),
            kind,
            Duration::from_secs(5),
        )
        .unwrap()
    }

    /// Answers the first `n` requests with `first`, then `ok`.
    async fn first_n_then_ok(n: usize, first: Reply) -> TestServer {
        let seen = Arc::new(AtomicUsize::new(0));
        TestServer::start(move |r| {
            assert_eq!(r.path, PATH);
            assert_eq!(r.method, "POST");
            assert_eq!(r.header("content-type"), Some("application/json"));
            if seen.fetch_add(1, Ordering::SeqCst) < n {
                first.clone()
            } else {
                Reply::text(200, "ok")
            }
        })
        .await
    }

    #[tokio::test]
    async fn one_post_per_call_with_the_json_payload() {
        let server = first_n_then_ok(0, Reply::text(200, "ok")).await;
        let payload = json!({"text": "hello"});
        let hook = endpoint(&server.base, DestinationKind::Slack);
        assert_eq!(hook.post_once(&payload).await, Answer::Delivered);
        let body: Value = serde_json::from_str(&server.requests()[0].body).unwrap();
        assert_eq!(body, payload);
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn http_429_carries_retry_after() {
        let server = first_n_then_ok(
            2,
            Reply::json(
                429,
                json!({"retry_after": 7, "ok": false, "error": "rate_limited"}),
            )
            .header("Retry-After", "7"),
        )
        .await;
        let hook = endpoint(&server.base, DestinationKind::Slack);
        assert_eq!(
            hook.post_once(&json!({"text": "x"})).await,
            Answer::RateLimited(Some(Duration::from_secs(7)))
        );
        let bare = first_n_then_ok(1, Reply::text(429, "rate_limited")).await;
        let hook = endpoint(&bare.base, DestinationKind::Slack);
        assert_eq!(
            hook.post_once(&json!({"text": "x"})).await,
            Answer::RateLimited(None)
        );
    }

    #[tokio::test]
    async fn refusals_carry_slacks_error_string_and_never_the_url() {
        for (status, body, expected) in [
            (
                404,
                "channel_not_found",
                Answer::Destination("channel_not_found".into()),
            ),
            (
                410,
                "channel_is_archived",
                Answer::Destination("channel_is_archived".into()),
            ),
            (
                400,
                "invalid_payload",
                Answer::Payload("invalid_payload".into()),
            ),
            (
                500,
                "rollup_error",
                Answer::Retryable("rollup_error".into()),
            ),
        ] {
            let server = first_n_then_ok(usize::MAX, Reply::text(status, body)).await;
            let hook = endpoint(&server.base, DestinationKind::Slack);
            let answer = hook.post_once(&json!({"text": "x"})).await;
            assert_eq!(answer, expected);
            assert!(!format!("{answer:?} {hook:?}").contains("XXXXSECRET"));
        }
    }

    #[tokio::test]
    async fn transport_errors_are_retryable_and_never_show_the_url() {
        let (logs, _guard) = capture_logs();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let hook = endpoint(
            &format!("http://127.0.0.1:{port}"),
            DestinationKind::Webhook,
        );
        let answer = hook.post_once(&json!({"text": "x"})).await;
        let Answer::Retryable(detail) = &answer else {
            panic!("{answer:?}");
        };
        assert!(detail.contains("connection error"), "{detail}");
        let text = format!("{answer:?} {hook:?} {}", logs.text());
        assert!(!text.contains("XXXXSECRET"), "{text}");
    }

    #[test]
    fn slack_answers_are_classified_by_body_first() {
        use DestinationKind::Slack;
        let c =
            |status: u16, body: &str| classify(Slack, StatusCode::from_u16(status).unwrap(), body);
        assert_eq!(c(200, "ok"), Answer::Delivered);
        assert_eq!(
            c(400, "invalid_blocks"),
            Answer::Payload("invalid_blocks".into())
        );
        assert_eq!(
            c(400, "invalid_blocks_format"),
            Answer::Payload("invalid_blocks_format".into())
        );
        assert_eq!(
            c(500, "msg_blocks_too_long"),
            Answer::Payload("msg_blocks_too_long".into())
        );
        assert_eq!(c(200, "no_text"), Answer::Payload("no_text".into()));
        assert_eq!(
            c(410, "channel_is_archived"),
            Answer::Destination("channel_is_archived".into())
        );
        assert_eq!(
            c(404, "no_service_id"),
            Answer::Destination("no_service_id".into())
        );
        assert_eq!(
            c(403, "invalid_token"),
            Answer::Destination("invalid_token".into())
        );
        assert_eq!(
            c(500, "team_disabled"),
            Answer::Destination("team_disabled".into())
        );
        assert_eq!(
            c(
                429,
                r#"{"retry_after":1,"ok":false,"error":"rate_limited"}"#
            ),
            Answer::RateLimited(None)
        );
        assert_eq!(
            c(500, "rollup_error"),
            Answer::Retryable("rollup_error".into())
        );
        assert_eq!(c(503, ""), Answer::Retryable("http_503".into()));
        assert_eq!(c(418, "teapot"), Answer::Permanent("teapot".into()));
        assert_eq!(c(200, "weird"), Answer::Permanent("weird".into()));
    }

    #[test]
    fn generic_webhook_answers() {
        use DestinationKind::Webhook;
        let c = |status: u16, body: &str| {
            classify(Webhook, StatusCode::from_u16(status).unwrap(), body)
        };
        assert_eq!(c(200, "{}"), Answer::Delivered);
        assert_eq!(c(204, ""), Answer::Delivered);
        assert_eq!(c(429, ""), Answer::RateLimited(None));
        assert_eq!(
            c(502, "bad gateway"),
            Answer::Retryable("bad gateway".into())
        );
        assert_eq!(
            c(404, "channel_not_found"),
            Answer::Permanent("http_404: channel_not_found".into())
        );
    }
}

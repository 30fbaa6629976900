//! Delivery to a Slack incoming webhook (`shared/alerting.md` §1, api.slack.com/messaging/webhooks).
//!
//! `POST <webhook URL>` with a JSON body. Success is HTTP 200 with the plain-text body `ok`.
//! 429 (`rate_limited`) → wait `Retry-After` seconds (a default when absent), then retry. 5xx,
//! timeouts and connection errors → capped exponential backoff with full jitter, at most
//! `SlackConfig::max_attempts` requests. Any other answer is permanent and carries Slack's error
//! string (`invalid_payload`, `channel_not_found`, `channel_is_archived`, …).
//!
//! The webhook URL is the credential: it is held in a [`Secret`], stripped from reqwest errors
//! (`without_url`) and redacted from every message this module produces.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tracing::{debug, warn};

use crate::config::{DestinationKind, SlackConfig};
use crate::genesys::backoff::{RetryPolicy, retry_after};
use crate::secret::{Secret, redact};

/// Wait after a 429 that has no `Retry-After` header.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(3);

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
    pub fn new(url: Secret, kind: DestinationKind, timeout: Duration) -> Result<Self, SlackError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("agent-monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SlackError::Setup(redact(&e.without_url().to_string(), &[&url])))?;
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

/// A successful delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// HTTP requests made, the successful one included.
    pub attempts: u32,
}

/// A failed delivery. Never contains the webhook URL.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// A permanent refusal: a 4xx other than 429, or a 2xx whose body is not `ok`. `error` is
    /// Slack's error string from the body (`channel_not_found`, `invalid_payload`, …).
    #[error("Slack refused the message with HTTP {status}: {error}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Slack's error string (plain-text body, or `error` of a JSON body), or `http_<status>`
        /// when the body is empty.
        error: String,
        /// HTTP requests made.
        attempts: u32,
    },
    /// 429 kept coming (more than `RetryPolicy::max_rate_limit_retries` waits) or Slack asked
    /// for a wait longer than `RetryPolicy::max_rate_limit_wait`.
    #[error(
        "Slack kept rate-limiting the webhook (asked to wait {last_wait:?}) after {attempts} attempts"
    )]
    RateLimited {
        /// HTTP requests made.
        attempts: u32,
        /// The last wait Slack asked for.
        last_wait: Duration,
    },
    /// 5xx answers until the attempts ran out.
    #[error("Slack answered HTTP {status} ({error}) after {attempts} attempts")]
    Server {
        /// The last HTTP status.
        status: u16,
        /// Slack's error string (e.g. `rollup_error`) or `http_<status>`.
        error: String,
        /// HTTP requests made.
        attempts: u32,
    },
    /// Timeouts or connection errors until the attempts ran out.
    #[error("could not reach Slack after {attempts} attempts: {detail}")]
    Transport {
        /// HTTP requests made.
        attempts: u32,
        /// The last error, with the URL stripped and redacted.
        detail: String,
    },
    /// The HTTP client could not be built.
    #[error("Slack client setup failed: {0}")]
    Setup(String),
}

impl SlackError {
    /// HTTP requests made before giving up.
    pub fn attempts(&self) -> u32 {
        match self {
            SlackError::Rejected { attempts, .. }
            | SlackError::RateLimited { attempts, .. }
            | SlackError::Server { attempts, .. }
            | SlackError::Transport { attempts, .. } => *attempts,
            SlackError::Setup(_) => 0,
        }
    }

    /// The short error recorded with the alert: Slack's error string for a refusal
    /// (`channel_not_found`), `rate_limited`, or the transport error.
    pub fn slack_error(&self) -> String {
        match self {
            SlackError::Rejected { error, .. } | SlackError::Server { error, .. } => error.clone(),
            SlackError::RateLimited { .. } => "rate_limited".into(),
            SlackError::Transport { detail, .. } => detail.clone(),
            SlackError::Setup(detail) => detail.clone(),
        }
    }

    /// True when Slack refused the payload itself ([`PAYLOAD_ERRORS`]), as opposed to the
    /// destination (channel gone, webhook revoked) or the transport.
    pub fn is_payload_error(&self) -> bool {
        matches!(self, SlackError::Rejected { error, .. } if PAYLOAD_ERRORS.contains(&error.as_str()))
    }
}

/// A Slack incoming webhook client. `Debug` never prints the URL.
#[derive(Debug, Clone)]
pub struct SlackWebhook {
    http: reqwest::Client,
    url: Secret,
    policy: RetryPolicy,
    default_retry_after: Duration,
}

impl SlackWebhook {
    /// A client for `url` with `cfg.timeout` per POST (10 s by default) and `cfg.max_attempts`
    /// attempts for 5xx/timeouts/connection errors, backing off 1 s, 2 s, 4 s … (≤ 60 s, full
    /// jitter). 429 waits are capped at 60 s and 5 in a row.
    pub fn new(url: Secret, cfg: &SlackConfig) -> Result<Self, SlackError> {
        let policy = RetryPolicy {
            max_attempts: cfg.max_attempts.max(1),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_rate_limit_retries: 5,
            max_rate_limit_wait: Duration::from_secs(60),
        };
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(concat!("agent-monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SlackError::Setup(redact(&e.without_url().to_string(), &[&url])))?;
        Ok(SlackWebhook {
            http,
            url,
            policy,
            default_retry_after: DEFAULT_RETRY_AFTER,
        })
    }

    /// Replaces the retry timing (tests use millisecond backoffs).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces the wait after a 429 without `Retry-After` ([`DEFAULT_RETRY_AFTER`]).
    pub fn with_default_retry_after(mut self, wait: Duration) -> Self {
        self.default_retry_after = wait;
        self
    }

    /// POSTs `payload` as JSON until Slack answers 200 `ok` or the failure is final.
    pub async fn post(&self, payload: &Value) -> Result<Delivered, SlackError> {
        let mut attempts = 0u32;
        let mut failures = 0u32;
        let mut rate_limit_retries = 0u32;
        loop {
            attempts += 1;
            debug!(attempt = attempts, "posting to the Slack webhook");
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
            let (status, headers, body) = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    let detail = self.describe(e);
                    failures += 1;
                    if failures >= self.policy.max_attempts {
                        return Err(SlackError::Transport { attempts, detail });
                    }
                    let delay = self.policy.backoff(failures - 1);
                    warn!(error = %detail, delay_ms = delay.as_millis() as u64, "Slack unreachable: retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            if status == StatusCode::OK && body.trim() == "ok" {
                return Ok(Delivered { attempts });
            }
            let error = redact(&error_string(status, &body), &[&self.url]);
            if status == StatusCode::TOO_MANY_REQUESTS {
                crate::metrics::rate_limited("slack");
                let wait = retry_after(&headers).unwrap_or(self.default_retry_after);
                if rate_limit_retries >= self.policy.max_rate_limit_retries
                    || wait > self.policy.max_rate_limit_wait
                {
                    return Err(SlackError::RateLimited {
                        attempts,
                        last_wait: wait,
                    });
                }
                rate_limit_retries += 1;
                warn!(
                    wait_ms = wait.as_millis() as u64,
                    "Slack rate limit (429): waiting"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_server_error() {
                failures += 1;
                if failures >= self.policy.max_attempts {
                    return Err(SlackError::Server {
                        status: status.as_u16(),
                        error,
                        attempts,
                    });
                }
                let delay = self.policy.backoff(failures - 1);
                warn!(status = status.as_u16(), error = %error, delay_ms = delay.as_millis() as u64,
                      "Slack server error: retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
            return Err(SlackError::Rejected {
                status: status.as_u16(),
                error,
                attempts,
            });
        }
    }

    /// A transport error as text without the URL.
    fn describe(&self, error: reqwest::Error) -> String {
        describe(error, &self.url)
    }
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
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::genesys::test_server::{Reply, TestServer, capture_logs};

    const PATH: &str = "/services/T000/B000/XXXXSECRETXXXX";

    fn webhook(base: &str) -> SlackWebhook {
        SlackWebhook::new(
            Secret::new(format!("{base}{PATH}")),
            &SlackConfig::default(),
        )
        .unwrap()
        .with_retry_policy(RetryPolicy::fast())
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
    async fn ok_on_the_first_attempt() {
        let server = first_n_then_ok(0, Reply::text(200, "ok")).await;
        let payload = json!({"text": "hello"});
        let delivered = webhook(&server.base).post(&payload).await.unwrap();
        assert_eq!(delivered.attempts, 1);
        let body: Value = serde_json::from_str(&server.requests()[0].body).unwrap();
        assert_eq!(body, payload);
    }

    #[tokio::test]
    async fn http_429_waits_retry_after() {
        let server = first_n_then_ok(
            1,
            Reply::json(
                429,
                json!({"retry_after": 1, "ok": false, "error": "rate_limited"}),
            )
            .header("Retry-After", "1"),
        )
        .await;
        let started = Instant::now();
        let delivered = tokio::time::timeout(
            Duration::from_secs(5),
            webhook(&server.base).post(&json!({"text": "x"})),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(delivered.attempts, 2);
    }

    #[tokio::test]
    async fn http_429_without_retry_after_uses_the_default_wait() {
        let server = first_n_then_ok(1, Reply::text(429, "rate_limited")).await;
        let started = Instant::now();
        let delivered = webhook(&server.base)
            .with_default_retry_after(Duration::from_millis(300))
            .post(&json!({"text": "x"}))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(delivered.attempts, 2);
    }

    #[tokio::test]
    async fn server_errors_are_retried() {
        let server = first_n_then_ok(1, Reply::text(500, "rollup_error")).await;
        let delivered = webhook(&server.base)
            .post(&json!({"text": "x"}))
            .await
            .unwrap();
        assert_eq!(delivered.attempts, 2);
        assert_eq!(server.requests().len(), 2);
    }

    #[tokio::test]
    async fn server_errors_give_up_after_max_attempts() {
        let server = first_n_then_ok(usize::MAX, Reply::text(503, "")).await;
        let err = webhook(&server.base)
            .post(&json!({"text": "x"}))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SlackError::Server { status: 503, attempts: 3, error } if error == "http_503"),
            "{err:?}"
        );
        assert_eq!(server.requests().len(), 3);
    }

    #[tokio::test]
    async fn client_errors_are_permanent_with_slacks_error_string() {
        for (status, body) in [
            (404, "channel_not_found"),
            (410, "channel_is_archived"),
            (400, "invalid_payload"),
        ] {
            let server = first_n_then_ok(usize::MAX, Reply::text(status, body)).await;
            let err = webhook(&server.base)
                .post(&json!({"text": "x"}))
                .await
                .unwrap_err();
            assert_eq!(err.slack_error(), body);
            assert_eq!(err.attempts(), 1);
            assert_eq!(err.is_payload_error(), body == "invalid_payload");
            assert_eq!(server.requests().len(), 1, "not retried");
            assert!(!format!("{err} {err:?}").contains("XXXXSECRET"));
        }
    }

    #[tokio::test]
    async fn a_200_without_ok_is_a_failure() {
        let server = first_n_then_ok(usize::MAX, Reply::text(200, "no_text")).await;
        let err = webhook(&server.base).post(&json!({})).await.unwrap_err();
        assert!(
            matches!(&err, SlackError::Rejected { status: 200, error, .. } if error == "no_text")
        );
    }

    #[tokio::test]
    async fn logs_never_show_the_url() {
        let (logs, _guard) = capture_logs();
        let server = first_n_then_ok(2, Reply::text(500, "rollup_error")).await;
        webhook(&server.base)
            .post(&json!({"text": "x"}))
            .await
            .unwrap();
        let refused = first_n_then_ok(1, Reply::text(404, "channel_not_found")).await;
        webhook(&refused.base)
            .post(&json!({"text": "x"}))
            .await
            .unwrap_err();
        let text = logs.text();
        assert!(text.contains("Slack server error: retrying"), "{text}");
        assert!(!text.contains("XXXXSECRET"), "{text}");
    }

    #[tokio::test]
    async fn transport_errors_never_show_the_url() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let hook = webhook(&format!("http://127.0.0.1:{port}"));
        let err = hook.post(&json!({"text": "x"})).await.unwrap_err();
        assert!(
            matches!(err, SlackError::Transport { attempts: 3, .. }),
            "{err:?}"
        );
        let text = format!("{err} {err:?} {} {hook:?}", err.slack_error());
        assert!(!text.contains("XXXXSECRET"), "{text}");
        assert!(text.contains("connection error"), "{text}");
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

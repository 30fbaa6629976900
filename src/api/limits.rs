//! Request limits of the REST API and the time limit of its database queries.
//!
//! - Query strings longer than `max_query_bytes` (default 16 KiB) answer `414` with
//!   `{"error"}`.
//! - A query parameter given more than once on an `/api/` route answers `400` naming it: no
//!   parameter of the API takes several values, and poem-openapi would silently use the
//!   first (`limit=10&limit=100`). poem-openapi has no option to refuse it, so it is checked
//!   here, before any handler.
//! - Bodies: a `Content-Length` above `max_body_bytes` (default 64 KiB) answers `413`; a body
//!   without `Content-Length` (chunked) answers `411`, so no request body is ever read without
//!   a known, bounded size. (poem's own `SizeLimit` middleware demands `Content-Length` on
//!   every request, GETs included, so it cannot be used as is.) No operation reads a body
//!   today; the limit is there for the ones that will.
//! - Database: every API query runs under [`query_timeout`] ([`DB_QUERY_TIMEOUT`]); a timeout
//!   answers `503` with `{"error"}`. The pool's acquire timeout (5 s, [`crate::db::DbOptions`])
//!   bounds the wait for a connection.
//! - Slow clients: poem 3 has no header-read timeout (hyper's `header_read_timeout` is not
//!   exposed) and its idle timeout waits for a half-sent request; `App::start` wraps the
//!   listener in [`super::timeout_io::IdleTimeoutAcceptor`], which aborts a connection on which
//!   no byte moved for `AccessConfig::idle_timeout` (30 s) while the server waits to read. A
//!   client that trickles a byte just inside every 30 s is not cut by it.

use std::future::Future;
use std::time::Duration;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Request, Response};

/// Longest one API database query may take.
pub const DB_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Size limits of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest query string (bytes, without the `?`).
    pub max_query_bytes: usize,
    /// Largest body (bytes).
    pub max_body_bytes: usize,
}

/// The refusal for a request over the limits, or `None` when it is within them.
pub fn check(limits: &RequestLimits, req: &Request) -> Option<Response> {
    let query_len = req.uri().query().map_or(0, str::len);
    if query_len > limits.max_query_bytes {
        return Some(error_response(
            StatusCode::URI_TOO_LONG,
            &format!(
                "query string too long: {query_len} bytes, at most {} allowed",
                limits.max_query_bytes
            ),
        ));
    }
    if req.uri().path().starts_with("/api/") {
        if let Some(name) = req.uri().query().and_then(repeated_parameter) {
            return Some(error_response(
                StatusCode::BAD_REQUEST,
                &format!(
                    "query parameter `{name}` is given more than once: give it once (no \
                     parameter takes several values; lists are comma-separated)"
                ),
            ));
        }
    }
    let headers = req.headers();
    match headers.get(header::CONTENT_LENGTH) {
        Some(value) => {
            let length = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match length {
                Some(n) if n <= limits.max_body_bytes as u64 => None,
                Some(n) => Some(error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "request body too large: {n} bytes, at most {} allowed",
                        limits.max_body_bytes
                    ),
                )),
                None => Some(error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid Content-Length",
                )),
            }
        }
        None if headers.contains_key(header::TRANSFER_ENCODING) => Some(error_response(
            StatusCode::LENGTH_REQUIRED,
            "a request body needs a Content-Length",
        )),
        None => None,
    }
}

/// The first query parameter name that occurs more than once in `query` (names decoded, so
/// `limit` and `lim%69t` are the same), if any.
fn repeated_parameter(query: &str) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name)
        .find(|name| !seen.insert(name.clone()))
        .map(|name| name.into_owned())
}

/// A JSON `{"error": message}` response with `status`.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    Response::builder()
        .status(status)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )
        .body(body)
}

/// A database query that took longer than [`DB_QUERY_TIMEOUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the database did not answer within {0:?}")]
pub struct QueryTimeout(pub Duration);

/// Runs one API database query with the [`DB_QUERY_TIMEOUT`] limit.
pub async fn query_timeout<T, E>(
    query: impl Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, QueryTimeout> {
    with_timeout(DB_QUERY_TIMEOUT, query).await
}

/// Runs `query` with the limit `limit`.
pub async fn with_timeout<T, E>(
    limit: Duration,
    query: impl Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, QueryTimeout> {
    tokio::time::timeout(limit, query)
        .await
        .map_err(|_| QueryTimeout(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_query_bytes: 10,
        max_body_bytes: 5,
    };

    fn status(req: Request) -> Option<u16> {
        check(&LIMITS, &req).map(|r| r.status().as_u16())
    }

    #[test]
    fn limits_answer_414_413_411() {
        assert_eq!(status(Request::builder().uri_str("/a?x=1").finish()), None);
        assert_eq!(
            status(Request::builder().uri_str("/a?x=12345678901").finish()),
            Some(414)
        );
        let post = |len: &str| {
            Request::builder()
                .uri_str("/a")
                .header("content-length", len)
                .finish()
        };
        assert_eq!(status(post("5")), None);
        assert_eq!(status(post("6")), Some(413));
        assert_eq!(status(post("x")), Some(400));
        let chunked = Request::builder()
            .uri_str("/a")
            .header("transfer-encoding", "chunked")
            .finish();
        assert_eq!(status(chunked), Some(411));
    }

    #[test]
    fn handlers_finish_before_the_connection_idle_timeout() {
        let idle = crate::config::AccessConfig::default().idle_timeout;
        assert!(DB_QUERY_TIMEOUT < idle && super::super::READINESS_TIMEOUT < idle);
    }

    #[tokio::test]
    async fn slow_queries_time_out() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, ()>(1)
        };
        assert_eq!(
            with_timeout(Duration::from_millis(10), slow).await,
            Err(QueryTimeout(Duration::from_millis(10)))
        );
        assert_eq!(
            with_timeout(Duration::from_secs(1), async { Ok::<_, ()>(2) }).await,
            Ok(Ok(2))
        );
    }
}

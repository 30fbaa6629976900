//! Injected HTTP failures and the platform error bodies (`ErrorBody`, protocol reference §8).

use serde_json::{Value, json};

use crate::protocol::ErrorBody;

/// A canned HTTP answer produced by the core instead of the real handler (injected fault,
/// missing token) or by a handler (validation error).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// Extra response headers (`Retry-After`).
    pub headers: Vec<(String, String)>,
    /// JSON body; `None` for an empty body.
    pub body: Option<Value>,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    /// A platform `ErrorBody` answer.
    pub fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::json(status, error_body(status, code, message))
    }

    /// `401 authentication.required`, the answer to a missing, unknown, expired or revoked token.
    pub fn unauthorized() -> Reply {
        Reply::error(
            401,
            "authentication.required",
            "No authentication bearer token specified in authorization header.",
        )
    }

    /// `404 not.found`.
    pub fn not_found(what: &str) -> Reply {
        Reply::error(404, "not.found", &format!("{what} not found"))
    }

    /// `400 bad.request`.
    pub fn bad_request(message: &str) -> Reply {
        Reply::error(400, "bad.request", message)
    }
}

/// The platform `ErrorBody`: `message`, `code`, `status`, `contextId`, plus the empty `details`
/// and `errors` arrays Genesys sends.
pub fn error_body(status: u16, code: &str, message: &str) -> Value {
    let body = ErrorBody {
        message: Some(message.to_string()),
        code: Some(code.to_string()),
        status: Some(status),
        context_id: Some(super::world::guid(&mut rand::rng())),
    };
    let mut value = serde_json::to_value(body).unwrap_or_else(|_| json!({}));
    if let Some(map) = value.as_object_mut() {
        map.insert("details".into(), json!([]));
        map.insert("errors".into(), json!([]));
    }
    value
}

/// What to fail, how, and how many times; see [`super::Simulator::fail_next_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// HTTP method (`GET`, `POST`, …, case-insensitive) or `*` for any.
    pub method: String,
    /// Requests whose path starts with this prefix (`/api/v2/users`, `/oauth/token`) fail.
    pub path_prefix: String,
    /// Status to answer (429, 500, 503, …).
    pub status: u16,
    /// Value of the `Retry-After` header, in seconds; `None`: no header.
    pub retry_after_header: Option<u64>,
    /// `N` in a 429 message `Retry the request in [N] seconds`; `None`: a 429 says only
    /// `Rate limit exceeded the maximum` with code `too.many.requests`.
    pub retry_after_in_message: Option<u64>,
    /// How many matching requests fail before the rule is used up.
    pub count: u32,
}

impl FaultSpec {
    fn matches(&self, method: &str, path: &str) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method))
            && path.starts_with(&self.path_prefix)
    }

    fn reply(&self) -> Reply {
        let mut reply = match self.status {
            429 => match self.retry_after_in_message {
                Some(n) => Reply::error(
                    429,
                    "too.many.requests.retry.after",
                    &format!("Rate limit exceeded the maximum. Retry the request in [{n}] seconds"),
                ),
                None => Reply::error(429, "too.many.requests", "Rate limit exceeded the maximum"),
            },
            500 => Reply::error(
                500,
                "internal.server.error",
                "The server encountered an unexpected condition which prevented it from fulfilling the request.",
            ),
            502 => Reply::error(502, "bad.gateway", "Bad gateway"),
            503 => Reply::error(
                503,
                "service.unavailable",
                "Service Unavailable - The server is currently unavailable (because it is overloaded or down for maintenance).",
            ),
            504 => Reply::error(504, "gateway.timeout", "The request timed-out."),
            other => Reply::error(other, "injected.fault", "Injected fault"),
        };
        if let Some(secs) = self.retry_after_header {
            reply.headers.push(("Retry-After".into(), secs.to_string()));
        }
        reply
    }
}

/// The pending fault rules, consumed in the order they were added.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<FaultSpec>,
}

impl Faults {
    pub fn push(&mut self, spec: FaultSpec) {
        if spec.count > 0 {
            self.rules.push(spec);
        }
    }

    /// The canned answer for this request if a rule matches (and uses up one of its count).
    pub fn take(&mut self, method: &str, path: &str) -> Option<Reply> {
        let pos = self.rules.iter().position(|r| r.matches(method, path))?;
        let reply = self.rules[pos].reply();
        self.rules[pos].count -= 1;
        if self.rules[pos].count == 0 {
            self.rules.remove(pos);
        }
        Some(reply)
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_used_up() {
        let mut faults = Faults::default();
        faults.push(FaultSpec {
            method: "get".into(),
            path_prefix: "/api/v2/users".into(),
            status: 429,
            retry_after_header: Some(3),
            retry_after_in_message: Some(3),
            count: 2,
        });
        assert!(faults.take("POST", "/api/v2/users").is_none());
        let reply = faults.take("GET", "/api/v2/users/abc").unwrap();
        assert_eq!(reply.status, 429);
        assert_eq!(reply.headers, vec![("Retry-After".into(), "3".into())]);
        let body = reply.body.unwrap();
        assert_eq!(body["code"], "too.many.requests.retry.after");
        assert_eq!(
            body["message"],
            "Rate limit exceeded the maximum. Retry the request in [3] seconds"
        );
        assert!(faults.take("GET", "/api/v2/users").is_some());
        assert!(faults.take("GET", "/api/v2/users").is_none());
    }
}

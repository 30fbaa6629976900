//! Access control of the REST API: bearer tokens (`API_TOKENS` / `API_TOKENS_FILE`), enforced
//! by one middleware ([`Guard`]) around the whole HTTP surface, and declared in the OpenAPI spec
//! by the [`ApiAuth`] extractor.
//!
//! # How it is enforced
//!
//! [`Guard`] wraps every route (see [`super::routes_with_access`]). It works on an allow-list:
//! with tokens configured, every path needs `Authorization: Bearer <token>` **except**
//! `/docs…`, `/openapi.json`, `/openapi.yaml` and (unless `PROTECT_PROBES=true`) `/healthz`,
//! `/readyz` and `/metrics`. So an `/api/` operation added later is protected without any code
//! of its own, and so is a path that does not exist (a 401 before the 404, which tells a
//! stranger nothing). A refusal is `401` with `WWW-Authenticate: Bearer realm="agent-monitor"`
//! and `{"error": "…"}`. Tokens are compared in constant time ([`subtle`]); the log says at
//! debug level which token *name* authenticated a request, never the token.
//!
//! # How it is declared (apply this to every new `/api/` operation)
//!
//! The spec learns about the scheme from a parameter: give every `/api/` operation an
//! `auth: ApiAuth` parameter (conventionally the first one after `&self`):
//!
//! ```text
//! #[oai(path = "/api/v1/things", method = "get", tag = "ApiTags::Things", operation_id = "getThings")]
//! async fn things(&self, auth: ApiAuth, limit: Query<Option<LimitParam>>) -> ThingsResponse {
//!     let _ = auth; // enforcement already happened in `Guard`; `auth.0.name` is the token name
//!     …
//! }
//! ```
//!
//! and give its response enum the 401 variant the guard answers with, so clients see it:
//!
//! ```text
//! /// No valid bearer token (only when the service has API tokens configured); the
//! /// `WWW-Authenticate` header is `Bearer realm="agent-monitor"`.
//! #[oai(status = 401)]
//! #[allow(dead_code)] // answered by `auth::Guard` before the handler runs
//! Unauthorized(Json<ErrorBody>),
//! ```
//!
//! The parameter adds `security: [{bearerAuth: []}]` to the operation and the `bearerAuth` scheme
//! (`type: http, scheme: bearer`) to `components.securitySchemes`, so Swagger UI shows the
//! "Authorize" button and sends the header. Forgetting the parameter does **not** open the
//! operation (the guard still protects it); it only leaves the spec silent about it, which the
//! test `every_api_operation_declares_bearer_auth` catches. Probes and docs take no `ApiAuth`.
//!
//! Without tokens the API is open; `cli` then refuses a non-loopback `LISTEN_ADDR` unless
//! `ALLOW_UNAUTHENTICATED=true`.

use std::sync::Arc;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::registry::Registry;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, SecurityScheme};
use subtle::ConstantTimeEq;

use super::limits::{self, RequestLimits};
use crate::config::{AccessConfig, ApiToken};

/// The `WWW-Authenticate` challenge of every 401.
pub const CHALLENGE: &str = "Bearer realm=\"agent-monitor\"";

/// Who made a request, as decided by [`Guard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The name of the token that authenticated the request (`name` of `name:token`, else
    /// `token-N`); `None` when no token was needed (no tokens configured, or an open path).
    pub token_name: Option<String>,
}

/// The access policy: the tokens, which paths they guard, and the request limits.
#[derive(Clone)]
pub struct AccessPolicy {
    tokens: Arc<Vec<ApiToken>>,
    protect_probes: bool,
    limits: RequestLimits,
}

impl AccessPolicy {
    /// The policy of `config`.
    pub fn new(config: &AccessConfig) -> Self {
        AccessPolicy {
            tokens: Arc::new(config.tokens.clone()),
            protect_probes: config.protect_probes,
            limits: RequestLimits {
                max_query_bytes: config.max_query_bytes,
                max_body_bytes: config.max_body_bytes,
            },
        }
    }

    /// No tokens, default limits (tests, and `routes` without a configuration).
    pub fn open() -> Self {
        AccessPolicy::new(&AccessConfig::default())
    }

    /// Does `path` need a token under this policy?
    pub fn guards(&self, path: &str) -> bool {
        if self.tokens.is_empty() {
            return false;
        }
        let docs = path == "/docs"
            || path.starts_with("/docs/")
            || path == "/openapi.json"
            || path == "/openapi.yaml";
        let probe = matches!(path, "/healthz" | "/readyz" | "/metrics");
        !(docs || (probe && !self.protect_probes))
    }

    /// The name of the configured token equal to `presented`, comparing in constant time
    /// against every token (no early exit, so timing does not tell which one matched).
    fn token_name(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for token in self.tokens.iter() {
            if bool::from(token.token.expose().as_bytes().ct_eq(presented)) {
                found = Some(token.name.as_str());
            }
        }
        found
    }
}

/// The middleware that applies an [`AccessPolicy`]: request limits first, then tokens.
pub struct Guard(pub AccessPolicy);

impl<E: Endpoint> Middleware<E> for Guard {
    type Output = GuardEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        GuardEndpoint {
            inner,
            policy: self.0.clone(),
        }
    }
}

/// [`Guard`] applied to an endpoint.
pub struct GuardEndpoint<E> {
    inner: E,
    policy: AccessPolicy,
}

impl<E: Endpoint> Endpoint for GuardEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        if let Some(refusal) = limits::check(&self.policy.limits, &req) {
            return Ok(refusal);
        }
        let caller = if self.policy.guards(req.uri().path()) {
            match bearer_token(&req) {
                None => return Ok(unauthorized("missing bearer token", false)),
                Some(presented) => match self.policy.token_name(presented) {
                    Some(name) => {
                        tracing::debug!(token = %name, path = %req.uri().path(), "request authenticated");
                        Caller {
                            token_name: Some(name.to_owned()),
                        }
                    }
                    None => return Ok(unauthorized("invalid bearer token", true)),
                },
            }
        } else {
            Caller { token_name: None }
        };
        req.extensions_mut().insert(caller);
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(req: &Request) -> Option<&[u8]> {
    let value = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn unauthorized(message: &str, invalid: bool) -> Response {
    let challenge = if invalid {
        format!("{CHALLENGE}, error=\"invalid_token\"")
    } else {
        CHALLENGE.to_owned()
    };
    let mut response = limits::error_response(StatusCode::UNAUTHORIZED, message);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

// Declares the `bearerAuth` scheme in the spec (registration only; `Guard` checks tokens).
// The doc comment below is the scheme's description in the spec.
/// An API token from API_TOKENS or API_TOKENS_FILE, sent as `Authorization: Bearer <token>`.
/// Needed on every /api/ operation when the service has tokens configured; the probes and the
/// docs stay open unless PROTECT_PROBES=true.
#[derive(SecurityScheme)]
#[oai(rename = "bearerAuth", ty = "bearer")]
#[allow(dead_code)] // never extracted: `ApiAuth` only borrows its registration
struct BearerScheme(poem_openapi::auth::Bearer);

/// The parameter every `/api/` operation takes to declare bearer authentication in the spec
/// (see the module docs). It carries the [`Caller`] that [`Guard`] established.
#[derive(Debug, Clone)]
pub struct ApiAuth(pub Caller);

impl<'a> ApiExtractor<'a> for ApiAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <BearerScheme as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        <BearerScheme as ApiExtractor>::security_schemes()
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut poem::RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        // Fail closed: a route served without the guard has no caller and is refused.
        match req.extensions().get::<Caller>() {
            Some(caller) => Ok(ApiAuth(caller.clone())),
            None => Err(poem::Error::from_response(unauthorized(
                "missing bearer token",
                false,
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn policy(protect_probes: bool) -> AccessPolicy {
        AccessPolicy::new(&AccessConfig {
            tokens: vec![
                ApiToken {
                    name: "ops".into(),
                    token: Secret::new("0123456789abcdef"),
                },
                ApiToken {
                    name: "token-2".into(),
                    token: Secret::new("fedcba9876543210"),
                },
            ],
            protect_probes,
            ..AccessConfig::default()
        })
    }

    #[test]
    fn allow_list_of_open_paths() {
        let p = policy(false);
        for open in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/docs",
            "/docs/",
            "/docs/index.html",
            "/openapi.json",
            "/openapi.yaml",
        ] {
            assert!(!p.guards(open), "{open}");
        }
        for guarded in [
            "/api/v1/agents",
            "//api/v1/agents",
            "/API/v1/agents",
            "/",
            "/unknown",
            "/healthz/",
        ] {
            assert!(p.guards(guarded), "{guarded}");
        }
        let p = policy(true);
        assert!(p.guards("/healthz") && p.guards("/readyz") && p.guards("/metrics"));
        assert!(!p.guards("/docs"));
        assert!(!AccessPolicy::open().guards("/api/v1/agents"));
    }

    #[test]
    fn tokens_match_by_value_and_report_their_name() {
        let p = policy(false);
        assert_eq!(p.token_name(b"0123456789abcdef"), Some("ops"));
        assert_eq!(p.token_name(b"fedcba9876543210"), Some("token-2"));
        assert_eq!(p.token_name(b"0123456789abcdeg"), None);
        assert_eq!(p.token_name(b"0123456789abcde"), None);
        assert_eq!(p.token_name(b""), None);
    }
}

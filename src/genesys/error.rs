//! [`GenesysError`]: every way a call to Genesys Cloud can fail.
//!
//! No variant carries a secret: request URLs are stripped from transport errors
//! (`reqwest::Error::without_url`), tokens and the client secret are never formatted, and the
//! OAuth client id (not a secret) is the only credential named.

use std::time::Duration;

/// A failed Genesys Cloud call.
#[derive(Debug, thiserror::Error)]
pub enum GenesysError {
    /// The login host answered `{"error":"invalid_client", …}` (any HTTP status). The region
    /// or the OAuth client id/secret is wrong: fatal, never retried (protocol reference §2).
    #[error(
        "Genesys Cloud rejected OAuth client {client_id:?} with invalid_client at {login_url}: \
         check that the region ({region}) is the one the OAuth client was created in, and that the \
         client id and secret are right"
    )]
    InvalidClient {
        /// The configured OAuth client id (not a secret).
        client_id: String,
        /// `<login_base>/oauth/token`.
        login_url: String,
        /// The configured region, or `"not set: login URL override"`.
        region: String,
    },

    /// Any other refusal of the token request (`POST /oauth/token`): a 4xx with an OAuth error
    /// code such as `unauthorized_client`, or a body that is not a token. Not retried.
    #[error("Genesys Cloud token request failed with HTTP {status}: {error}")]
    Auth {
        /// HTTP status of the login host's answer.
        status: u16,
        /// OAuth `error` (plus `error_description`), or a short description of the body.
        error: String,
    },

    /// The API refused the request (a 4xx other than 401-once and 429, e.g. 400, 403, 404).
    /// Fields come from the platform `ErrorBody` (protocol reference §8). Not retried.
    #[error("Genesys Cloud API {method} {path} failed with HTTP {status}{}: {message}",
        code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Api {
        /// `GET`, `POST`, …
        method: String,
        /// Path and query, e.g. `/api/v2/users?pageNumber=1`.
        path: String,
        /// HTTP status.
        status: u16,
        /// `ErrorBody.code`, e.g. `not.found`.
        code: Option<String>,
        /// `ErrorBody.message`, or the start of the body when it is not an ErrorBody.
        message: String,
    },

    /// HTTP 429 kept coming after `RetryPolicy::max_rate_limit_retries` waits, or the server
    /// asked for a wait longer than `RetryPolicy::max_rate_limit_wait`.
    #[error(
        "Genesys Cloud kept rate-limiting {what} (last wait asked: {last_wait:?}, {retries} retries)"
    )]
    RateLimited {
        /// `POST /oauth/token` or `GET /api/v2/…`.
        what: String,
        /// Waits already done.
        retries: u32,
        /// The last wait the server asked for.
        last_wait: Duration,
    },

    /// 5xx answers until `RetryPolicy::max_attempts` ran out.
    #[error("Genesys Cloud answered {what} with HTTP {status} {attempts} times: {message}")]
    Server {
        /// `POST /oauth/token` or `GET /api/v2/…`.
        what: String,
        /// The last HTTP status.
        status: u16,
        /// Requests made.
        attempts: u32,
        /// The last `ErrorBody.message` or body excerpt.
        message: String,
    },

    /// Connection failures or timeouts until `RetryPolicy::max_attempts` ran out. The source
    /// has its URL removed.
    #[error(
        "could not reach Genesys Cloud for {what} after {attempts} attempts: {}",
        error_chain(source)
    )]
    Transport {
        /// `POST /oauth/token` or `GET /api/v2/…`.
        what: String,
        /// Requests made.
        attempts: u32,
        /// The last reqwest error (URL stripped).
        #[source]
        source: reqwest::Error,
    },

    /// A 2xx answer whose body does not have the documented shape.
    #[error("unexpected answer to {what}: {detail}")]
    Decode {
        /// `GET /api/v2/…`.
        what: String,
        /// The serde error or the unparsable value.
        detail: String,
    },

    /// The client could not be built (bad base URL, TLS setup).
    #[error("Genesys client setup failed: {0}")]
    Setup(String),
}

impl GenesysError {
    /// True for errors that no retry can fix without a configuration change
    /// ([`GenesysError::InvalidClient`] and [`GenesysError::Setup`]); a supervisor should stop
    /// rather than restart on these.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            GenesysError::InvalidClient { .. } | GenesysError::Setup(_)
        )
    }

    /// The HTTP status of an API refusal, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            GenesysError::Api { status, .. }
            | GenesysError::Auth { status, .. }
            | GenesysError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An error and its sources, joined with `: ` (reqwest's own message is only "error sending
/// request"; the cause, such as a refused connection or a DNS failure, is in its sources).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

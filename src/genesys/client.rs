//! [`GenesysClient`]: OAuth client-credentials token cache plus the REST calls agent-monitor
//! makes. Protocol facts come from `shared/genesys-cloud-protocol.md` (§2 OAuth, §3 channels,
//! §5–6 users and presence definitions, §8 errors and rate limits).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::config::GenesysConfig;
use crate::domain::parse_timestamp;
use crate::genesys::backoff::{RetryPolicy, bracketed_seconds, ratelimit_reset, retry_after};
use crate::genesys::budget::RateBudget;
use crate::genesys::error::GenesysError;
use crate::protocol::{
    Channel, ChannelTopic, ChannelTopicEntityListing, ChannelTopicRequest, ErrorBody,
    OAuthErrorBody, PresenceDefinition, PresenceDefinitionListing, QueueMemberEntityListing,
    ServerDate, TokenResponse, User, UserDetailsQuery, UserDetailsQueryResponse, UserEntityListing,
    UserPresence, UserRoutingStatus,
};
use crate::secret::Secret;

/// Page size of `GET /api/v2/users` (the maximum, per a Genesys blueprint; protocol §6).
pub const USERS_PAGE_SIZE: u32 = 500;
/// Page size of `GET /api/v2/routing/queues/{queueId}/members` (the maximum, protocol §6).
pub const QUEUE_MEMBERS_PAGE_SIZE: u32 = 100;
/// Page size of the legacy `GET /api/v2/presencedefinitions`.
pub const LEGACY_PRESENCE_PAGE_SIZE: u32 = 100;
/// Per-user expand fetches run at most this many at a time.
const EXPAND_CONCURRENCY: usize = 8;
/// Guard against a server whose paging never ends.
const MAX_PAGES: u32 = 10_000;
/// Renew at most this long before expiry (or 10% of the lifetime if shorter).
const RENEW_MARGIN: Duration = Duration::from_secs(60);

/// A Genesys Cloud REST client for one OAuth client (client-credentials grant).
///
/// Cheap to clone: clones share one HTTP connection pool, one token cache and one
/// [`RateBudget`] (at most `GENESYS_RATE_LIMIT` requests in any 60 s, protocol §8; every
/// attempt of every `/api/v2/…` call takes from it, the token request does not). Every API call
/// carries `Authorization: Bearer <token>`; the token is fetched on first use and renewed shortly
/// before it expires (see [`renew_margin`]), with at most one renewal in flight.
///
/// Retries (per [`RetryPolicy`]): 401 renews the token and retries once; 429 waits
/// `Retry-After`, else the `[N]` seconds of the ErrorBody message, else `inin-ratelimit-reset`,
/// else a jittered backoff; 5xx, timeouts and connection errors get capped exponential backoff
/// with full jitter. Other 4xx answers fail at once with [`GenesysError::Api`].
#[derive(Clone)]
pub struct GenesysClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `api_base` without the trailing slash; paths (`/api/v2/…`) are appended to it, so a
    /// base with a path prefix (a simulator mounted under `/genesys`) works.
    api_base: String,
    /// `scheme://host[:port]` of the API base (no credentials, no path): named in retry logs
    /// and errors, so a wrong region or proxy shows which host is tried.
    api_origin: String,
    /// `scheme://host[:port]` of the login base, like `api_origin`.
    login_origin: String,
    /// `<login_base>/oauth/token`.
    token_url: String,
    region: Option<String>,
    client_id: String,
    client_secret: Secret,
    policy: RetryPolicy,
    /// The token cache. A `tokio::sync::Mutex` held across the renewal request: it is shared by
    /// every REST caller, and holding it while the token is fetched is what makes concurrent
    /// callers wait for the one renewal in flight instead of each posting the grant.
    token: Mutex<Option<CachedToken>>,
    renewals: AtomicU64,
    /// Shared by every API request of this client and its clones; lock-free.
    budget: RateBudget,
}

struct CachedToken {
    access_token: Secret,
    /// When to stop using the token and fetch a new one (monotonic clock).
    renew_at: Instant,
}

impl fmt::Debug for GenesysClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenesysClient")
            .field("api_base", &self.inner.api_base)
            .field("token_url", &self.inner.token_url)
            .field("client_id", &self.inner.client_id)
            .field("renewals", &self.renewals())
            .field("rate_limit", &self.inner.budget.limit())
            .finish_non_exhaustive()
    }
}

/// How long before expiry a token of lifetime `lifetime` is renewed: 60 s, or 10% of the
/// lifetime if that is shorter (a 5-minute token is renewed 30 s early, a 24 h one 60 s early).
pub fn renew_margin(lifetime: Duration) -> Duration {
    RENEW_MARGIN.min(lifetime / 10)
}

impl GenesysClient {
    /// A client with the default [`RetryPolicy`]. Makes no request (the token is fetched on
    /// first use). Fails with [`GenesysError::Setup`] if the HTTP client cannot be built.
    pub fn new(cfg: &GenesysConfig) -> Result<Self, GenesysError> {
        Self::with_retry_policy(cfg, RetryPolicy::default())
    }

    /// A client with an explicit [`RetryPolicy`] (tests use [`RetryPolicy::fast`]) and the
    /// rate budget of the configuration (`cfg.rate_limit_per_minute` requests per minute).
    ///
    /// Each request times out after `cfg.request_timeout`.
    pub fn with_retry_policy(
        cfg: &GenesysConfig,
        policy: RetryPolicy,
    ) -> Result<Self, GenesysError> {
        Self::with_rate_budget(
            cfg,
            policy,
            RateBudget::per_minute(cfg.rate_limit_per_minute),
        )
    }

    /// A client with an explicit [`RetryPolicy`] and [`RateBudget`] (tests and benchmarks use
    /// budgets with windows shorter than a minute); `cfg.rate_limit_per_minute` is ignored.
    pub fn with_rate_budget(
        cfg: &GenesysConfig,
        policy: RetryPolicy,
        budget: RateBudget,
    ) -> Result<Self, GenesysError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("agent-monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GenesysError::Setup(e.without_url().to_string()))?;
        let base = |u: &url::Url| u.as_str().trim_end_matches('/').to_string();
        Ok(GenesysClient {
            inner: Arc::new(Inner {
                http,
                api_base: base(&cfg.endpoints.api_base),
                api_origin: cfg.endpoints.api_base.origin().ascii_serialization(),
                login_origin: cfg.endpoints.login_base.origin().ascii_serialization(),
                token_url: format!("{}/oauth/token", base(&cfg.endpoints.login_base)),
                region: cfg.endpoints.region.clone(),
                client_id: cfg.credentials.client_id.clone(),
                client_secret: cfg.credentials.client_secret.clone(),
                policy,
                token: Mutex::new(None),
                renewals: AtomicU64::new(0),
                budget,
            }),
        })
    }

    /// How many tokens were obtained from `POST /oauth/token` so far (the first one included).
    pub fn renewals(&self) -> u64 {
        self.inner.renewals.load(Ordering::Relaxed)
    }

    /// The request budget shared by this client and its clones: [`RateBudget::waited`] and
    /// [`RateBudget::waits`] tell how long API calls waited for it so far.
    pub fn rate_budget(&self) -> &RateBudget {
        &self.inner.budget
    }

    /// The current access token, fetching or renewing it if needed. A secret: hand it only to
    /// an `Authorization` header.
    pub async fn access_token(&self) -> Result<Secret, GenesysError> {
        self.token_excluding(None).await
    }

    /// Forgets the cached token if it is still `rejected` (the API answered 401 to it) and
    /// returns a fresh one. When several callers are refused the same token, only the first
    /// renews; the others get the new token.
    async fn renew_rejected(&self, rejected: &Secret) -> Result<Secret, GenesysError> {
        self.token_excluding(Some(rejected)).await
    }

    async fn token_excluding(&self, rejected: Option<&Secret>) -> Result<Secret, GenesysError> {
        let mut cached = self.inner.token.lock().await;
        if let Some(token) = cached.as_ref() {
            let refused = rejected == Some(&token.access_token);
            if !refused && Instant::now() < token.renew_at {
                return Ok(token.access_token.clone());
            }
        }
        let fresh = self.request_token().await?;
        let value = fresh.access_token.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    fn invalid_client(&self) -> GenesysError {
        GenesysError::InvalidClient {
            client_id: self.inner.client_id.clone(),
            login_url: self.inner.token_url.clone(),
            region: self
                .inner
                .region
                .clone()
                .unwrap_or_else(|| "not set: login URL override".into()),
        }
    }

    /// `POST <login_base>/oauth/token` with Basic auth and `grant_type=client_credentials`
    /// (protocol §2), retried on 429, 5xx and transport errors.
    async fn request_token(&self) -> Result<CachedToken, GenesysError> {
        let inner = &*self.inner;
        let what = "POST /oauth/token";
        let mut retry = Retry::new(what, &inner.login_origin, inner.policy);
        loop {
            // The lifetime counts from before the request, so network time only makes us early.
            let requested_at = Instant::now();
            let sent = inner
                .http
                .post(&inner.token_url)
                .basic_auth(&inner.client_id, Some(inner.client_secret.expose()))
                .header(ACCEPT, "application/json")
                .form(&[("grant_type", "client_credentials")])
                .send();
            let (status, headers, body) = match read(sent.await).await {
                Ok(answer) => answer,
                Err(e) => {
                    retry.transport(e).await?;
                    continue;
                }
            };
            // invalid_client is fatal whatever the status (400 vs 401 is UNVERIFIED, §2).
            let oauth_error = serde_json::from_slice::<OAuthErrorBody>(&body).ok();
            if oauth_error
                .as_ref()
                .is_some_and(|e| e.error == "invalid_client")
            {
                return Err(self.invalid_client());
            }
            if status.is_success() {
                let token: TokenResponse =
                    serde_json::from_slice(&body).map_err(|_| GenesysError::Auth {
                        status: status.as_u16(),
                        error: "the answer is not a token response".into(),
                    })?;
                let lifetime = Duration::from_secs(token.expires_in);
                let renewals = inner.renewals.fetch_add(1, Ordering::Relaxed) + 1;
                crate::metrics::token_renewal();
                info!(
                    expires_in_s = token.expires_in,
                    renewals, "obtained a Genesys Cloud access token"
                );
                return Ok(CachedToken {
                    access_token: Secret::new(token.access_token),
                    // An absurd `expires_in` must not overflow the clock: cap at a year.
                    renew_at: requested_at
                        + (lifetime - renew_margin(lifetime))
                            .min(Duration::from_secs(365 * 86_400)),
                });
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                crate::metrics::rate_limited("genesys");
                retry.rate_limited(&headers, &body).await?;
                continue;
            }
            if status.is_server_error() {
                retry.server_error(status, excerpt(&body)).await?;
                continue;
            }
            let error = match oauth_error {
                Some(e) => match e.error_description.or(e.description) {
                    Some(d) => format!("{} ({d})", e.error),
                    None => e.error,
                },
                None => excerpt(&body),
            };
            return Err(GenesysError::Auth {
                status: status.as_u16(),
                error,
            });
        }
    }

    /// Sends one API request with retries and returns the body of the 2xx answer.
    ///
    /// `path` starts with `/api/v2/` and includes the query.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, GenesysError> {
        Ok(self.send_timed(method, path, body).await?.0)
    }

    /// [`GenesysClient::send`], also returning when the successful attempt was sent and when
    /// its answer was read (monotonic clock): the round trip of that attempt alone, without
    /// the token request, budget waits or earlier attempts.
    async fn send_timed(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(Vec<u8>, Instant, Instant), GenesysError> {
        let inner = &*self.inner;
        let url = format!("{}{}", inner.api_base, path);
        let what = format!("{method} {path}");
        let mut retry = Retry::new(&what, &inner.api_origin, inner.policy);
        let mut renewed_after_401 = false;
        loop {
            let token = self.access_token().await?;
            let mut request = inner
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.expose())
                .header(ACCEPT, "application/json");
            if let Some(json) = body {
                request = request.json(json);
            }
            let waited = inner.budget.acquire().await;
            if !waited.is_zero() {
                debug!(request = %what, waited_ms = waited.as_millis() as u64, "waited for the rate budget");
            }
            debug!(request = %what, "Genesys Cloud request");
            let sent_at = Instant::now();
            let (status, headers, bytes) = match read(request.send().await).await {
                Ok(answer) => answer,
                Err(e) => {
                    retry.transport(e).await?;
                    continue;
                }
            };
            if status.is_success() {
                return Ok((bytes, sent_at, Instant::now()));
            }
            if status == StatusCode::UNAUTHORIZED && !renewed_after_401 {
                renewed_after_401 = true;
                warn!(request = %what, "HTTP 401: renewing the access token and retrying once");
                self.renew_rejected(&token).await?;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                crate::metrics::rate_limited("genesys");
                retry.rate_limited(&headers, &bytes).await?;
                continue;
            }
            let error_body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_default();
            let message = error_body.message.unwrap_or_else(|| excerpt(&bytes));
            if status.is_server_error() {
                retry.server_error(status, message).await?;
                continue;
            }
            return Err(GenesysError::Api {
                method: method.to_string(),
                path: path.to_string(),
                status: status.as_u16(),
                code: error_body.code,
                message,
            });
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, GenesysError> {
        let bytes = self.send(Method::GET, path, None).await?;
        decode(&format!("GET {path}"), &bytes)
    }

    /// Every active user with presence and routing status: `GET /api/v2/users?state=active&
    /// expand=presence,routingStatus&pageSize=500&pageNumber=N` for N = 1, 2, … (protocol §6).
    ///
    /// Paging stops at `pageCount` when the page gives it (else when `nextUri` is absent) and on
    /// an empty page. The expands are best effort, so each user still missing `presence` is
    /// completed with [`GenesysClient::user_presence`] and each one missing `routingStatus` with
    /// [`GenesysClient::user_routing_status`] (at most 8 at a time). A per-user
    /// [`GenesysError::Api`] there (403, 404) is logged and the field left `None`; any other
    /// error fails the call.
    pub async fn list_active_users(&self) -> Result<Vec<User>, GenesysError> {
        self.list_active_users_in_divisions(&[]).await
    }

    /// [`GenesysClient::list_active_users`] restricted to users whose `division.id` is one of
    /// `divisions` (compared case-insensitively); an empty slice means every division.
    ///
    /// `GET /api/v2/users` has **no** division query parameter (Users API `getUsers` takes
    /// `pageSize, pageNumber, id, jabberId, sortOrder, expand, integrationPresenceSource,
    /// state`; checked in the platform SDK docs), and an unknown parameter would be silently
    /// ignored, so the filter is applied here to the `division` every listed user carries.
    /// The listing costs the same pages either way; the per-user expand completion runs only
    /// for the users kept. A user listed without a division is left out when filtering.
    pub async fn list_active_users_in_divisions(
        &self,
        divisions: &[String],
    ) -> Result<Vec<User>, GenesysError> {
        let mut users: Vec<User> = Vec::new();
        for page in 1..=MAX_PAGES {
            let listing: UserEntityListing = self
                .get_json(&format!(
                    "/api/v2/users?state=active&expand=presence,routingStatus\
                     &pageSize={USERS_PAGE_SIZE}&pageNumber={page}"
                ))
                .await?;
            if listing.entities.is_empty() {
                if listing.page_count.is_some_and(|count| page < count) {
                    // The page says more follow: a hiccup, not the end (taking it for the end
                    // would drop every later user, and a re-listing would stop their agents).
                    return Err(GenesysError::Decode {
                        what: "GET /api/v2/users".into(),
                        detail: format!(
                            "page {page} of {} has no users",
                            listing.page_count.unwrap_or_default()
                        ),
                    });
                }
                break;
            }
            let more = more_pages(page, listing.page_count, listing.next_uri.as_deref());
            users.extend(listing.entities);
            if !more {
                break;
            }
        }
        if !divisions.is_empty() {
            let listed = users.len();
            users.retain(|user| {
                user.division
                    .as_ref()
                    .is_some_and(|d| divisions.iter().any(|w| w.eq_ignore_ascii_case(&d.id)))
            });
            debug!(
                listed,
                kept = users.len(),
                divisions = divisions.len(),
                "active users filtered by division"
            );
        }
        self.fill_missing_expands(&mut users).await?;
        Ok(users)
    }

    async fn fill_missing_expands(&self, users: &mut [User]) -> Result<(), GenesysError> {
        enum Fetched {
            Presence(UserPresence),
            Routing(UserRoutingStatus),
        }
        let mut jobs = Vec::new();
        for (index, user) in users.iter().enumerate() {
            if user.presence.is_none() {
                jobs.push((index, user.id.clone(), true));
            }
            if user.routing_status.is_none() {
                jobs.push((index, user.id.clone(), false));
            }
        }
        if jobs.is_empty() {
            return Ok(());
        }
        info!(
            fetches = jobs.len(),
            "expands missing from GET /api/v2/users: fetching them per user"
        );
        let results: Vec<_> = futures_util::stream::iter(jobs)
            .map(|(index, id, presence)| async move {
                let fetched = if presence {
                    self.user_presence(&id).await.map(Fetched::Presence)
                } else {
                    self.user_routing_status(&id).await.map(Fetched::Routing)
                };
                (index, id, fetched)
            })
            .buffer_unordered(EXPAND_CONCURRENCY)
            .collect()
            .await;
        for (index, id, fetched) in results {
            match fetched {
                Ok(Fetched::Presence(p)) => users[index].presence = Some(p),
                Ok(Fetched::Routing(r)) => users[index].routing_status = Some(r),
                Err(e @ GenesysError::Api { .. }) => {
                    warn!(user_id = %id, error = %e, "could not complete a missing expand")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One user's Genesys Cloud presence: `GET /api/v2/users/{userId}/presences/purecloud`
    /// (protocol §6) → `UserPresence`.
    pub async fn user_presence(&self, user_id: &str) -> Result<UserPresence, GenesysError> {
        self.get_json(&format!(
            "/api/v2/users/{}/presences/purecloud",
            encode_segment(user_id)
        ))
        .await
    }

    /// One user's routing status: `GET /api/v2/users/{userId}/routingstatus` (protocol §6) →
    /// `{"userId","status","startTime"}`. Genesys answers `OFF_QUEUE` even for unknown users.
    pub async fn user_routing_status(
        &self,
        user_id: &str,
    ) -> Result<UserRoutingStatus, GenesysError> {
        self.get_json(&format!(
            "/api/v2/users/{}/routingstatus",
            encode_segment(user_id)
        ))
        .await
    }

    /// The organization's active presence definitions (protocol §5):
    /// `GET /api/v2/presence/definitions?deactivated=false&localeCode=ALL` (`{total, entities}`,
    /// no paging; needs `presence:presenceDefinition:view`). When that answers 403 or 404, falls
    /// back to the legacy `GET /api/v2/presencedefinitions?pageSize=100&pageNumber=N&deleted=false`
    /// (no permission needed), all pages. `systemPresence` keeps the API's spelling (`OnQueue`,
    /// `On Queue`); normalize with [`crate::domain::normalize_system_presence`].
    pub async fn presence_definitions(&self) -> Result<Vec<PresenceDefinition>, GenesysError> {
        let current = self
            .get_json::<PresenceDefinitionListing>(
                "/api/v2/presence/definitions?deactivated=false&localeCode=ALL",
            )
            .await;
        match current {
            Ok(listing) => Ok(listing.entities),
            Err(GenesysError::Api { status, .. }) if status == 403 || status == 404 => {
                info!(
                    status,
                    "GET /api/v2/presence/definitions refused: using the legacy /api/v2/presencedefinitions"
                );
                self.legacy_presence_definitions().await
            }
            Err(e) => Err(e),
        }
    }

    async fn legacy_presence_definitions(&self) -> Result<Vec<PresenceDefinition>, GenesysError> {
        let mut definitions = Vec::new();
        for page in 1..=MAX_PAGES {
            let listing: PresenceDefinitionListing = self
                .get_json(&format!(
                    "/api/v2/presencedefinitions?pageSize={LEGACY_PRESENCE_PAGE_SIZE}\
                     &pageNumber={page}&deleted=false"
                ))
                .await?;
            if listing.entities.is_empty() {
                break;
            }
            let more = more_pages(page, listing.page_count, listing.next_uri.as_deref());
            definitions.extend(listing.entities);
            if !more {
                break;
            }
        }
        Ok(definitions)
    }

    /// The user ids (lowercase, in listing order, without repeats) of every member of a routing
    /// queue: `GET /api/v2/routing/queues/{queueId}/members?pageSize=100&pageNumber=1`, then
    /// each page's `nextUri` until one has none (protocol §6: the answer has no `total` or
    /// `pageCount`). Needs `routing:queue:view` or similar; a refusal (403) or an unknown queue
    /// (404) is a [`GenesysError::Api`] for the caller to judge. A `nextUri` that is not a path
    /// on the API host (`/api/v2/…`), or one already followed, is a [`GenesysError::Decode`]:
    /// the bearer token never leaves the API host and a looping server cannot hang the call.
    pub async fn queue_members(&self, queue_id: &str) -> Result<Vec<String>, GenesysError> {
        let mut path = format!(
            "/api/v2/routing/queues/{}/members?pageSize={QUEUE_MEMBERS_PAGE_SIZE}&pageNumber=1",
            encode_segment(queue_id)
        );
        let mut seen = std::collections::HashSet::new();
        let mut members: Vec<String> = Vec::new();
        for _ in 0..MAX_PAGES {
            seen.insert(path.clone());
            let listing: QueueMemberEntityListing = self.get_json(&path).await?;
            for member in &listing.entities {
                let id = member.user_id();
                if !id.is_empty() && !members.contains(&id) {
                    members.push(id);
                }
            }
            let Some(next) = listing.next_uri.filter(|u| !u.trim().is_empty()) else {
                break;
            };
            if listing.entities.is_empty() {
                break;
            }
            let bad = |detail: String| GenesysError::Decode {
                what: format!("GET {path}"),
                detail,
            };
            let next = next_path(&next).ok_or_else(|| bad(format!("unusable nextUri {next:?}")))?;
            if seen.contains(&next) {
                return Err(bad(format!("nextUri {next:?} repeats a page already read")));
            }
            path = next;
        }
        Ok(members)
    }

    /// Creates a notification channel: `POST /api/v2/notifications/channels` (no body) →
    /// `{"connectUri","id","expires"}` (protocol §3). The channel lives 24 h.
    pub async fn create_channel(&self) -> Result<Channel, GenesysError> {
        let path = "/api/v2/notifications/channels";
        let bytes = self.send(Method::POST, path, None).await?;
        decode(&format!("POST {path}"), &bytes)
    }

    /// Whether a channel still exists: `HEAD /api/v2/notifications/channels/{channelId}`
    /// answers 200 (true) or 404 (false) (protocol §3). Other answers are errors.
    pub async fn channel_exists(&self, channel_id: &str) -> Result<bool, GenesysError> {
        let path = format!(
            "/api/v2/notifications/channels/{}",
            encode_segment(channel_id)
        );
        match self.send(Method::HEAD, &path, None).await {
            Ok(_) => Ok(true),
            Err(GenesysError::Api { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Replaces a channel's subscriptions:
    /// `PUT /api/v2/notifications/channels/{channelId}/subscriptions?ignoreErrors=true` with the
    /// JSON array `[{"id": topic}, …]` (protocol §3), answered with
    /// `{"entities":[{"id","state":"Permitted"|"Rejected","rejectionReason"}]}`.
    ///
    /// With `ignoreErrors=true` an unpermitted topic does not fail the whole request (a 403
    /// without it): it comes back `Rejected`, and is returned in
    /// [`SubscribeOutcome::rejected`] with its reason. At most 1,000 topics per channel (a 400
    /// beyond).
    pub async fn put_subscriptions(
        &self,
        channel_id: &str,
        topics: &[String],
    ) -> Result<SubscribeOutcome, GenesysError> {
        let path = format!(
            "/api/v2/notifications/channels/{}/subscriptions?ignoreErrors=true",
            encode_segment(channel_id)
        );
        let body: Vec<ChannelTopicRequest> = topics
            .iter()
            .map(|t| ChannelTopicRequest { id: t.clone() })
            .collect();
        let body = serde_json::to_value(body).map_err(|e| GenesysError::Decode {
            what: format!("PUT {path}"),
            detail: e.to_string(),
        })?;
        let bytes = self.send(Method::PUT, &path, Some(&body)).await?;
        let listing: ChannelTopicEntityListing = decode(&format!("PUT {path}"), &bytes)?;
        Ok(SubscribeOutcome::from_entities(listing.entities))
    }

    /// Removes every subscription of a channel:
    /// `DELETE /api/v2/notifications/channels/{channelId}/subscriptions` (protocol §3). Used when
    /// leaving a channel: the Notifications API documents no DELETE of the channel itself, which
    /// simply expires (24 h). A 404 (the channel is already gone) counts as done.
    pub async fn delete_subscriptions(&self, channel_id: &str) -> Result<(), GenesysError> {
        let path = format!(
            "/api/v2/notifications/channels/{}/subscriptions",
            encode_segment(channel_id)
        );
        match self.send(Method::DELETE, &path, None).await {
            Ok(_) | Err(GenesysError::Api { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One page of the analytics user details query (protocol §7):
    /// `POST /api/v2/analytics/users/details/query` with a [`UserDetailsQuery`] body →
    /// [`UserDetailsQueryResponse`] (`{"userDetails":[{userId, primaryPresence[…],
    /// routingStatus[…]}], "totalHits"}`). Needs `analytics:userDetail:view`. Same retries as
    /// every call (401 once, 429, 5xx, transport) and one unit of the [`RateBudget`].
    ///
    /// The interval may span at most 7 days without presence/routing filters (31 with); the
    /// page size defaults to 25 (maximum UNVERIFIED, probably 100). `totalHits` is
    /// approximate and pages can be short: page until a page has no `userDetails` (as
    /// [`crate::backfill::fetch_gap`] does).
    pub async fn user_details_query(
        &self,
        query: &UserDetailsQuery,
    ) -> Result<UserDetailsQueryResponse, GenesysError> {
        self.user_details_query_as(query).await
    }

    /// [`GenesysClient::user_details_query`] decoded into any shape (the backfill decodes each
    /// record on its own, so that one malformed record does not fail the page).
    pub(crate) async fn user_details_query_as<T: DeserializeOwned>(
        &self,
        query: &UserDetailsQuery,
    ) -> Result<T, GenesysError> {
        let path = "/api/v2/analytics/users/details/query";
        let body = serde_json::to_value(query).map_err(|e| GenesysError::Decode {
            what: format!("POST {path}"),
            detail: e.to_string(),
        })?;
        let bytes = self.send(Method::POST, path, Some(&body)).await?;
        decode(&format!("POST {path}"), &bytes)
    }

    /// The server's clock: `GET /api/v2/date` → `{"currentDate": "<RFC 3339>"}` (protocol §10),
    /// as a UTC instant truncated to milliseconds. Used once to measure the clock offset.
    pub async fn server_date(&self) -> Result<DateTime<Utc>, GenesysError> {
        Ok(self.server_date_timed().await?.0)
    }

    /// [`GenesysClient::server_date`] plus the local UTC instant the successful request was
    /// sent and its round-trip time (that attempt only), for [`crate::clock::measure_offset`].
    pub(crate) async fn server_date_timed(
        &self,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>, Duration), GenesysError> {
        let path = "/api/v2/date";
        let (bytes, sent_at, received_at) = self.send_timed(Method::GET, path, None).await?;
        let round_trip = received_at.duration_since(sent_at);
        // Map the monotonic send instant onto the UTC clock (read once, now).
        let sent_utc = Utc::now()
            - chrono::TimeDelta::from_std(sent_at.elapsed()).unwrap_or(chrono::TimeDelta::zero());
        let date: ServerDate = decode(&format!("GET {path}"), &bytes)?;
        let server = parse_timestamp(&date.current_date).map_err(|e| GenesysError::Decode {
            what: format!("GET {path}"),
            detail: e.to_string(),
        })?;
        Ok((server, sent_utc, round_trip))
    }
}

/// What `PUT …/subscriptions?ignoreErrors=true` accepted and refused
/// ([`GenesysClient::put_subscriptions`], protocol §3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOutcome {
    /// Topic names as listed by the server, in its order, that are not `Rejected` (state
    /// `Permitted`, or a state we do not know: the server accepted the request).
    pub permitted: Vec<String>,
    /// `(topic, rejectionReason)` of every topic whose `state` is `Rejected` (compared
    /// case-insensitively); the reason is `"no rejectionReason given"` when absent.
    pub rejected: Vec<(String, String)>,
}

impl SubscribeOutcome {
    /// Splits a subscription listing (`{"entities":[ChannelTopic…]}`) by state.
    pub fn from_entities(entities: Vec<ChannelTopic>) -> Self {
        let mut outcome = SubscribeOutcome::default();
        for topic in entities {
            if topic
                .state
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("rejected"))
            {
                let reason = topic
                    .rejection_reason
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| "no rejectionReason given".into());
                outcome.rejected.push((topic.id, reason));
            } else {
                outcome.permitted.push(topic.id);
            }
        }
        outcome
    }
}

/// Whether to fetch page `page + 1`: `pageCount` decides when the page gives it, otherwise the
/// presence of `nextUri` does.
fn more_pages(page: u32, page_count: Option<u32>, next_uri: Option<&str>) -> bool {
    match page_count {
        Some(count) => page < count,
        None => next_uri.is_some_and(|u| !u.is_empty()),
    }
}

/// The path and query of a `nextUri` (relative `/api/v2/…`, or absolute with such a path);
/// `None` for anything else.
fn next_path(next: &str) -> Option<String> {
    let next = next.trim();
    let path = if next.starts_with('/') {
        next.to_string()
    } else {
        let url = url::Url::parse(next).ok()?;
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    };
    path.starts_with("/api/v2/").then_some(path)
}

/// Status, headers and body of an answer; a transport error has its URL removed.
async fn read(
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<(StatusCode, HeaderMap, Vec<u8>), reqwest::Error> {
    let response = sent.map_err(reqwest::Error::without_url)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| e.without_url())?
        .to_vec();
    Ok((status, headers, body))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, GenesysError> {
    serde_json::from_slice(bytes).map_err(|e| GenesysError::Decode {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

/// The first 300 characters of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Retry bookkeeping of one logical call: decides whether to wait and try again or give up.
struct Retry<'a> {
    what: &'a str,
    /// `scheme://host[:port]` the request goes to (never credentials).
    host: &'a str,
    policy: RetryPolicy,
    /// Requests that ended in a transport error or a 5xx.
    failures: u32,
    /// Waits done after a 429.
    rate_limit_retries: u32,
}

impl<'a> Retry<'a> {
    fn new(what: &'a str, host: &'a str, policy: RetryPolicy) -> Self {
        Retry {
            what,
            host,
            policy,
            failures: 0,
            rate_limit_retries: 0,
        }
    }

    /// `what` with its host, for the errors: `POST /oauth/token at https://login.…`.
    fn described(&self) -> String {
        format!("{} at {}", self.what, self.host)
    }

    /// After a transport error: waits a backoff, or gives up with [`GenesysError::Transport`].
    async fn transport(&mut self, error: reqwest::Error) -> Result<(), GenesysError> {
        self.failures += 1;
        if self.failures >= self.policy.max_attempts {
            return Err(GenesysError::Transport {
                what: self.described(),
                attempts: self.failures,
                source: error,
            });
        }
        let delay = self.policy.backoff(self.failures - 1);
        warn!(request = self.what,
            host = self.host, error = %crate::genesys::error::error_chain(&error), delay_ms = delay.as_millis() as u64,
              "Genesys Cloud unreachable: retrying");
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// After a 5xx: waits a backoff, or gives up with [`GenesysError::Server`].
    async fn server_error(
        &mut self,
        status: StatusCode,
        message: String,
    ) -> Result<(), GenesysError> {
        self.failures += 1;
        if self.failures >= self.policy.max_attempts {
            return Err(GenesysError::Server {
                what: self.described(),
                status: status.as_u16(),
                attempts: self.failures,
                message,
            });
        }
        let delay = self.policy.backoff(self.failures - 1);
        warn!(
            request = self.what,
            host = self.host,
            status = status.as_u16(),
            delay_ms = delay.as_millis() as u64,
            "Genesys Cloud server error: retrying"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// After a 429: waits what the answer asks (protocol §8 order), or gives up with
    /// [`GenesysError::RateLimited`].
    async fn rate_limited(&mut self, headers: &HeaderMap, body: &[u8]) -> Result<(), GenesysError> {
        let wait = retry_after(headers)
            .or_else(|| {
                serde_json::from_slice::<ErrorBody>(body)
                    .ok()
                    .and_then(|b| b.message)
                    .and_then(|m| bracketed_seconds(&m))
            })
            .or_else(|| ratelimit_reset(headers))
            .unwrap_or_else(|| {
                // No hint: exponential backoff with "equal jitter", so the wait is never ~0.
                let ceiling = self.policy.ceiling(self.rate_limit_retries);
                ceiling / 2 + self.policy.backoff(self.rate_limit_retries) / 2
            });
        if self.rate_limit_retries >= self.policy.max_rate_limit_retries
            || wait > self.policy.max_rate_limit_wait
        {
            return Err(GenesysError::RateLimited {
                what: self.described(),
                retries: self.rate_limit_retries,
                last_wait: wait,
            });
        }
        self.rate_limit_retries += 1;
        warn!(
            request = self.what,
            host = self.host,
            wait_ms = wait.as_millis() as u64,
            "HTTP 429: waiting"
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

#[cfg(test)]
mod next_uri_tests {
    use super::next_path;

    #[test]
    fn next_uri_stays_on_the_api_host() {
        assert_eq!(
            next_path("/api/v2/routing/queues/q/members?pageNumber=2").as_deref(),
            Some("/api/v2/routing/queues/q/members?pageNumber=2")
        );
        assert_eq!(
            next_path("https://elsewhere.example/api/v2/x?pageNumber=2").as_deref(),
            Some("/api/v2/x?pageNumber=2"),
            "an absolute nextUri is followed on the API host, never on its own"
        );
        assert_eq!(next_path("/oauth/token"), None);
        assert_eq!(next_path("pageNumber=2"), None);
    }
}

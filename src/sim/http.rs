//! The REST side: the login host (`POST /oauth/token`), the API host (`/api/v2/...`) and the
//! WebSocket upgrade (`GET /channels/{id}`), all served from one poem `Route`.
//!
//! Every request first passes [`admission`] (counting, injected faults, bearer tokens); each
//! handler then asks the core for what it needs and renders the reference's JSON shapes here.

use std::collections::HashMap;
use std::sync::Arc;

use poem::http::{Method, StatusCode, header};
use poem::web::headers::Authorization;
use poem::web::headers::authorization::Basic;
use poem::web::websocket::WebSocket;
use poem::web::{Data, Form, Json, Path, Query, TypedHeader};
use poem::{
    Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler, head, post,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::core::{Core, CoreHandle};
use super::faults::Reply;
use super::world::{Agent, HOME_DIVISION_ID, PRESENCE_DEFS, legacy_spelling, new_spelling};
use crate::domain::format_timestamp;
use crate::protocol::{
    Channel, ChannelTopic, ChannelTopicEntityListing, ChannelTopicRequest, OAuthErrorBody,
    ServerDate, TokenResponse,
};

/// Maximum `pageSize` of `GET /api/v2/users`.
pub const MAX_USERS_PAGE_SIZE: usize = 500;
/// Default `pageSize` of `GET /api/v2/users`.
pub const DEFAULT_USERS_PAGE_SIZE: usize = 25;
/// Maximum `pageSize` of `GET /api/v2/routing/queues/{id}/members` (protocol §6).
pub const MAX_QUEUE_MEMBERS_PAGE_SIZE: usize = 100;
/// Default `pageSize` of `GET /api/v2/routing/queues/{id}/members`.
pub const DEFAULT_QUEUE_MEMBERS_PAGE_SIZE: usize = 25;

/// All routes, wrapped in [`admission`].
pub fn routes(core: CoreHandle) -> impl Endpoint {
    let admit_core = core.clone();
    Route::new()
        .at("/oauth/token", post(token))
        .at("/api/v2/date", get(date))
        .at(
            "/api/v2/notifications/channels",
            post(create_channel).get(list_channels),
        )
        .at("/api/v2/notifications/channels/:id", head(channel_exists))
        .at(
            "/api/v2/notifications/channels/:id/subscriptions",
            get(subscriptions)
                .put(subscriptions)
                .post(subscriptions)
                .delete(subscriptions),
        )
        .at("/api/v2/users", get(users))
        .at("/api/v2/users/:id/routingstatus", get(routing_status))
        .at("/api/v2/users/:id/presences/purecloud", get(user_presence))
        .at(
            "/api/v2/users/presences/purecloud/bulk",
            get(bulk_presences),
        )
        .at("/api/v2/routing/queues/:id/members", get(queue_members))
        .at("/api/v2/presence/definitions", get(presence_definitions))
        .at(
            "/api/v2/presencedefinitions",
            get(legacy_presence_definitions),
        )
        .at(
            "/api/v2/analytics/users/details/query",
            post(user_details_query),
        )
        .at("/channels/:id", get(socket))
        .around(move |ep, req| admission(admit_core.clone(), ep, req))
        .data(core)
}

/// Counts the request, then lets the core answer it with an injected fault or a 401 before the
/// handler runs.
async fn admission<E: Endpoint>(
    core: CoreHandle,
    ep: Arc<E>,
    req: Request,
) -> poem::Result<Response> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, value) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| value.trim().to_string())
        });
    let mut response = match core
        .call(move |c| c.admit(&method, &path, bearer.as_deref()))
        .await
    {
        Ok(Err(reply)) => respond(reply),
        Ok(Ok(headers)) => {
            let mut response = ep.call(req).await.map(IntoResponse::into_response)?;
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (
                    poem::http::HeaderName::from_bytes(name.as_bytes()),
                    poem::http::HeaderValue::from_str(&value),
                ) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        Err(_) => shut_down(),
    };
    // Genesys tags every response with a correlation id (quoted in support requests).
    if let Ok(value) = super::world::guid(&mut rand::rng()).parse() {
        response.headers_mut().insert("ININ-Correlation-Id", value);
    }
    Ok(response)
}

/// Renders a [`Reply`].
fn respond(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder().status(status);
    for (name, value) in reply.headers {
        builder = builder.header(name, value);
    }
    match reply.body {
        Some(body) => builder
            .content_type("application/json")
            .body(body.to_string()),
        None => builder.finish(),
    }
}

fn shut_down() -> Response {
    respond(Reply::error(
        503,
        "service.unavailable",
        "Simulator stopped",
    ))
}

/// Runs a core job that produces a [`Reply`] and renders it.
async fn reply_with<F>(core: &CoreHandle, f: F) -> Response
where
    F: FnOnce(&mut Core) -> Reply + Send + 'static,
{
    match core.call(f).await {
        Ok(reply) => respond(reply),
        Err(_) => shut_down(),
    }
}

fn to_json<T: serde::Serialize>(status: u16, body: &T) -> Reply {
    Reply::json(status, serde_json::to_value(body).unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------------------------
// Login host
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
}

/// `POST /oauth/token` (client-credentials grant, Basic authentication only).
#[handler]
async fn token(
    core: Data<&CoreHandle>,
    auth: Option<TypedHeader<Authorization<Basic>>>,
    form: poem::Result<Form<TokenForm>>,
) -> Response {
    let credentials = auth.map(|TypedHeader(Authorization(basic))| {
        (basic.username().to_string(), basic.password().to_string())
    });
    let grant_type = form.ok().and_then(|Form(f)| f.grant_type);
    reply_with(&core, move |c| {
        let authenticated = credentials
            .is_some_and(|(id, secret)| id == c.cfg.client_id && secret == c.cfg.client_secret);
        if !authenticated {
            return to_json(401, &oauth_error("invalid_client", "authentication failed"));
        }
        if grant_type.as_deref() != Some("client_credentials") {
            return to_json(
                400,
                &oauth_error("unsupported_grant_type", "grant type not supported"),
            );
        }
        let expires_in = c.cfg.token_lifetime.as_secs();
        to_json(
            200,
            &TokenResponse {
                access_token: c.issue_token(),
                token_type: "bearer".into(),
                expires_in,
            },
        )
    })
    .await
}

fn oauth_error(error: &str, description: &str) -> OAuthErrorBody {
    OAuthErrorBody {
        error: error.into(),
        description: Some(description.into()),
        error_description: Some(description.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Date, channels, subscriptions
// ---------------------------------------------------------------------------------------------

/// `GET /api/v2/date` → `{"currentDate":"…"}` on the simulated clock (real UTC + skew).
#[handler]
async fn date(core: Data<&CoreHandle>) -> Response {
    reply_with(&core, |c| {
        to_json(
            200,
            &ServerDate {
                current_date: format_timestamp(c.now()),
            },
        )
    })
    .await
}

fn channel_json(c: &Core, i: usize) -> Channel {
    let id = c.channels[i].id.clone();
    Channel {
        connect_uri: format!("{}/channels/{id}", c.ws_base),
        id,
        expires: Some(c.channel_expires(i)),
    }
}

/// `POST /api/v2/notifications/channels` → a new [`Channel`].
#[handler]
async fn create_channel(core: Data<&CoreHandle>) -> Response {
    reply_with(&core, |c| {
        let i = c.create_channel();
        to_json(200, &channel_json(c, i))
    })
    .await
}

/// `GET /api/v2/notifications/channels` → `{"entities":[Channel…]}`.
#[handler]
async fn list_channels(core: Data<&CoreHandle>) -> Response {
    reply_with(&core, |c| {
        let entities: Vec<Channel> = (0..c.channels.len()).map(|i| channel_json(c, i)).collect();
        Reply::json(200, json!({ "entities": entities }))
    })
    .await
}

/// `HEAD /api/v2/notifications/channels/{id}` → 200 or 404, no body.
#[handler]
async fn channel_exists(core: Data<&CoreHandle>, Path(id): Path<String>) -> StatusCode {
    match core.call(move |c| c.channel_index(&id).is_some()).await {
        Ok(true) => StatusCode::OK,
        Ok(false) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `GET|PUT|POST|DELETE /api/v2/notifications/channels/{id}/subscriptions`.
#[handler]
async fn subscriptions(
    core: Data<&CoreHandle>,
    method: Method,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: poem::Result<Json<Vec<ChannelTopicRequest>>>,
) -> Response {
    let ignore_errors = query
        .get("ignoreErrors")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let topics = match (&method, body) {
        (&Method::PUT | &Method::POST, Ok(Json(topics))) => {
            Some(topics.into_iter().map(|t| t.id).collect::<Vec<_>>())
        }
        (&Method::PUT | &Method::POST, Err(_)) => {
            return respond(Reply::bad_request(
                "The request body must be a JSON array of {\"id\": topic}",
            ));
        }
        _ => None,
    };
    reply_with(&core, move |c| {
        let Some(i) = c.channel_index(&id) else {
            return Reply::not_found("Channel");
        };
        let listing = match (method, topics) {
            (Method::DELETE, _) => {
                c.unsubscribe_all(i);
                Vec::new()
            }
            (method, Some(topics)) => {
                match c.subscribe(i, topics, method == Method::PUT, ignore_errors) {
                    Ok(listing) => listing,
                    Err(reply) => return reply,
                }
            }
            _ => c.channels[i].listing(),
        };
        let entities = listing
            .into_iter()
            .map(|(topic, rejection)| ChannelTopic {
                id: topic,
                state: Some(
                    if rejection.is_none() {
                        "Permitted"
                    } else {
                        "Rejected"
                    }
                    .into(),
                ),
                rejection_reason: rejection,
                self_uri: None,
            })
            .collect();
        to_json(200, &ChannelTopicEntityListing { entities })
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

/// `UserPresence` as served by the `presence` expand and `GET …/presences/purecloud`. The
/// system presence uses the legacy spaced spelling (`On Queue`), as the REST API does.
fn user_presence_json(agent: &Agent) -> Value {
    json!({
        "source": "PURECLOUD",
        "primary": true,
        "presenceDefinition": {
            "id": agent.presence_id,
            "systemPresence": legacy_spelling(&agent.presence_system),
        },
        "message": "",
        "modifiedDate": format_timestamp(agent.presence_modified),
    })
}

/// `{"userId","status","startTime"}`.
fn routing_status_json(agent: &Agent) -> Value {
    json!({
        "userId": agent.id,
        "status": agent.routing,
        "startTime": format_timestamp(agent.routing_start),
    })
}

fn user_json(agent: &Agent, presence: bool, routing: bool) -> Value {
    let login = agent_login(agent);
    let mut user = json!({
        "id": agent.id,
        "name": agent.name,
        "division": {
            "id": agent.division_id,
            "name": if agent.division_id == HOME_DIVISION_ID { "Home" } else { "Division" },
        },
        "email": login,
        "state": if agent.active { "active" } else { "inactive" },
        "username": login,
        "version": 1,
        "selfUri": format!("/api/v2/users/{}", agent.id),
    });
    if presence {
        user["presence"] = user_presence_json(agent);
    }
    if routing {
        user["routingStatus"] = routing_status_json(agent);
    }
    user
}

fn agent_login(agent: &Agent) -> String {
    let local: String = agent
        .name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{local}.{}@sim.example.com", &agent.id[..8])
}

/// `GET /api/v2/users?state=&expand=&pageSize=&pageNumber=&id=&divisionId=` →
/// `UserEntityListing`. `state`: `active` (default), `inactive`, `deleted` (always empty
/// here) or `any`. `divisionId` may repeat (`divisionId=a&divisionId=b`) and keeps users of
/// any listed division; the SDKs' `getUsers` (pageSize, pageNumber, id, jabberId, sortOrder,
/// expand, integrationPresenceSource, state) has no such parameter, so this filter is a
/// simulator extension (real division filtering goes through `POST /api/v2/users/search`).
#[handler]
async fn users(core: Data<&CoreHandle>, req: &Request) -> Response {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let divisions: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "divisionId")
        .flat_map(|(_, v)| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect();
    let query: HashMap<String, String> = pairs.into_iter().collect();
    reply_with(&core, move |c| users_page(c, &query, &divisions)).await
}

fn users_page(c: &Core, query: &HashMap<String, String>, divisions: &[String]) -> Reply {
    let page_size = match query.get("pageSize").map(|v| v.parse::<usize>()) {
        None => DEFAULT_USERS_PAGE_SIZE,
        Some(Ok(n)) if (1..=MAX_USERS_PAGE_SIZE).contains(&n) => n,
        Some(_) => {
            return Reply::bad_request(&format!(
                "pageSize must be between 1 and {MAX_USERS_PAGE_SIZE}"
            ));
        }
    };
    let page_number = match query.get("pageNumber").map(|v| v.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return Reply::bad_request("pageNumber must be at least 1"),
    };
    let state = query.get("state").map_or("active", String::as_str);
    let expand: Vec<&str> = query
        .get("expand")
        .map(|e| e.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let ids: Option<Vec<String>> = query.get("id").map(|ids| {
        ids.split(',')
            .map(|id| id.trim().to_ascii_lowercase())
            .collect()
    });
    let omit_every = c.cfg.omit_expand_every;
    let matching: Vec<(usize, &Agent)> = c
        .world
        .agents
        .iter()
        .enumerate()
        .filter(|(_, a)| match state {
            "any" => true,
            "inactive" => !a.active,
            "deleted" => false,
            _ => a.active,
        })
        .filter(|(_, a)| ids.as_ref().is_none_or(|ids| ids.contains(&a.id)))
        .filter(|(_, a)| divisions.is_empty() || divisions.contains(&a.division_id))
        .collect();
    let total = matching.len();
    let page_count = total.div_ceil(page_size);
    let entities: Vec<Value> = matching
        .iter()
        .skip((page_number - 1) * page_size)
        .take(page_size)
        .map(|(index, agent)| {
            let omitted = omit_every > 0 && (index + 1) % omit_every == 0;
            user_json(
                agent,
                expand.contains(&"presence") && !omitted,
                expand.contains(&"routingStatus") && !omitted,
            )
        })
        .collect();
    let mut extra = format!("&state={state}");
    if let Some(expand) = query.get("expand") {
        extra.push_str(&format!("&expand={expand}"));
    }
    if let Some(ids) = query.get("id") {
        extra.push_str(&format!("&id={ids}"));
    }
    for division in divisions {
        extra.push_str(&format!("&divisionId={division}"));
    }
    let uri = |n: usize| format!("/api/v2/users?pageSize={page_size}&pageNumber={n}{extra}");
    let mut page = json!({
        "entities": entities,
        "pageSize": page_size,
        "pageNumber": page_number,
        "total": total,
        "pageCount": page_count,
        "selfUri": uri(page_number),
        "firstUri": uri(1),
        "lastUri": uri(page_count.max(1)),
    });
    if page_number < page_count {
        page["nextUri"] = json!(uri(page_number + 1));
    }
    if page_number > 1 {
        page["previousUri"] = json!(uri(page_number - 1));
    }
    Reply::json(200, page)
}

/// `GET /api/v2/users/{id}/routingstatus`; an unknown user is OFF_QUEUE, as in Genesys.
#[handler]
async fn routing_status(core: Data<&CoreHandle>, Path(id): Path<String>) -> Response {
    reply_with(&core, move |c| match c.world.index_of(&id) {
        Some(i) => Reply::json(200, routing_status_json(&c.world.agents[i])),
        None => Reply::json(200, json!({"userId": id, "status": "OFF_QUEUE"})),
    })
    .await
}

/// `GET /api/v2/users/{id}/presences/purecloud` → `UserPresence`.
#[handler]
async fn user_presence(core: Data<&CoreHandle>, Path(id): Path<String>) -> Response {
    reply_with(&core, move |c| match c.world.index_of(&id) {
        Some(i) => Reply::json(200, user_presence_json(&c.world.agents[i])),
        None => Reply::not_found("User"),
    })
    .await
}

/// Most ids `GET /api/v2/users/presences/purecloud/bulk` accepts.
pub const MAX_BULK_PRESENCE_IDS: usize = 50;

/// `GET /api/v2/users/presences/purecloud/bulk?id=a,b,…` → an array of `UcUserPresence`
/// (`UserPresence` plus `userId`); unknown ids are left out.
#[handler]
async fn bulk_presences(
    core: Data<&CoreHandle>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let ids: Vec<String> = query
        .get("id")
        .map(|ids| {
            ids.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() || ids.len() > MAX_BULK_PRESENCE_IDS {
        return respond(Reply::bad_request(&format!(
            "id must list between 1 and {MAX_BULK_PRESENCE_IDS} user ids"
        )));
    }
    reply_with(&core, move |c| {
        let presences: Vec<Value> = ids
            .iter()
            .filter_map(|id| c.world.index_of(id))
            .map(|i| {
                let agent = &c.world.agents[i];
                let mut presence = user_presence_json(agent);
                presence["userId"] = json!(agent.id);
                presence
            })
            .collect();
        Reply::json(200, Value::Array(presences))
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------------

/// `GET /api/v2/routing/queues/{id}/members?pageSize=&pageNumber=&expand=routingStatus` → a
/// `QueueMemberEntityListing` without `total`/`pageCount` (protocol §6): follow `nextUri`,
/// absent on the last page. 404 `ErrorBody` for an unknown queue; 400 for a `pageSize` outside
/// 1..=100 or a `pageNumber` below 1.
#[handler]
async fn queue_members(
    core: Data<&CoreHandle>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    reply_with(&core, move |c| queue_members_page(c, &id, &query)).await
}

fn queue_members_page(c: &Core, queue_id: &str, query: &HashMap<String, String>) -> Reply {
    let page_size = match query.get("pageSize").map(|v| v.parse::<usize>()) {
        None => DEFAULT_QUEUE_MEMBERS_PAGE_SIZE,
        Some(Ok(n)) if (1..=MAX_QUEUE_MEMBERS_PAGE_SIZE).contains(&n) => n,
        Some(_) => {
            return Reply::bad_request(&format!(
                "pageSize must be between 1 and {MAX_QUEUE_MEMBERS_PAGE_SIZE}"
            ));
        }
    };
    let page_number = match query.get("pageNumber").map(|v| v.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return Reply::bad_request("pageNumber must be at least 1"),
    };
    let Some(q) = c.queue_index(queue_id) else {
        return Reply::not_found("Queue");
    };
    let queue = &c.queues[q];
    let routing = query
        .get("expand")
        .is_some_and(|e| e.split(',').any(|x| x.trim() == "routingStatus"));
    // Only users of the org are listed (a scripted id of no user is skipped).
    let members: Vec<&Agent> = queue
        .members
        .iter()
        .filter_map(|id| c.world.index_of(id).map(|i| &c.world.agents[i]))
        .collect();
    let entities: Vec<Value> = members
        .iter()
        .skip((page_number - 1).saturating_mul(page_size))
        .take(page_size)
        .map(|agent| {
            let mut member = json!({
                "id": agent.id,
                "name": agent.name,
                "user": {
                    "id": agent.id,
                    "name": agent.name,
                    "selfUri": format!("/api/v2/users/{}", agent.id),
                },
                "ringNumber": 1,
                "joined": true,
                "memberBy": "user",
                "selfUri": format!("/api/v2/routing/queues/{}/members/{}", queue.id, agent.id),
            });
            if routing {
                member["routingStatus"] = routing_status_json(agent);
            }
            member
        })
        .collect();
    let extra = query
        .get("expand")
        .map(|e| format!("&expand={e}"))
        .unwrap_or_default();
    let uri = |n: usize| {
        format!(
            "/api/v2/routing/queues/{}/members?pageSize={page_size}&pageNumber={n}{extra}",
            queue.id
        )
    };
    let mut page = json!({
        "entities": entities,
        "pageSize": page_size,
        "pageNumber": page_number,
        "selfUri": uri(page_number),
        "firstUri": uri(1),
    });
    if page_number.saturating_mul(page_size) < members.len() {
        page["nextUri"] = json!(uri(page_number + 1));
    }
    if page_number > 1 {
        page["previousUri"] = json!(uri(page_number - 1));
    }
    Reply::json(200, page)
}

// ---------------------------------------------------------------------------------------------
// Presence definitions
// ---------------------------------------------------------------------------------------------

/// `GET /api/v2/presence/definitions` → `{"total","entities"}` (new spelling `OnQueue`), or 404
/// when `presence_definitions_404` is set.
#[handler]
async fn presence_definitions(core: Data<&CoreHandle>) -> Response {
    reply_with(&core, |c| {
        if c.cfg.presence_definitions_404 {
            return Reply::not_found("Resource");
        }
        let entities: Vec<Value> = PRESENCE_DEFS
            .iter()
            .map(|d| {
                json!({
                    "id": d.id,
                    "type": if d.primary { "System" } else { "User" },
                    "languageLabels": {"en_US": d.label},
                    "systemPresence": new_spelling(d.system),
                    "divisionId": "*",
                    "deactivated": false,
                    "selfUri": format!("/api/v2/presence/definitions/{}", d.id),
                })
            })
            .collect();
        Reply::json(200, json!({"total": entities.len(), "entities": entities}))
    })
    .await
}

/// Legacy `GET /api/v2/presencedefinitions` (spaced spelling `On Queue`, one page).
#[handler]
async fn legacy_presence_definitions() -> Json<Value> {
    let entities: Vec<Value> = PRESENCE_DEFS
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "name": d.label,
                "languageLabels": {"en_US": d.label},
                "systemPresence": legacy_spelling(d.system),
                "deactivated": false,
                "primary": d.primary,
                "selfUri": format!("/api/v2/presencedefinitions/{}", d.id),
            })
        })
        .collect();
    let uri = "/api/v2/presencedefinitions?pageSize=25&pageNumber=1";
    Json(json!({
        "entities": entities,
        "pageSize": 25,
        "pageNumber": 1,
        "total": entities.len(),
        "pageCount": 1,
        "firstUri": uri,
        "selfUri": uri,
        "lastUri": uri,
    }))
}

// ---------------------------------------------------------------------------------------------
// Analytics
// ---------------------------------------------------------------------------------------------

/// `POST /api/v2/analytics/users/details/query` (reference §7), built from the ground truth;
/// see [`super::analytics`].
#[handler]
async fn user_details_query(core: Data<&CoreHandle>, body: String) -> Response {
    reply_with(&core, move |c| {
        super::analytics::user_details_query(&c.truth, &body, c.now(), c.cfg.analytics_latency)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

/// `GET /channels/{id}`: the WebSocket of a channel (404 if the channel does not exist).
#[handler]
async fn socket(core: Data<&CoreHandle>, Path(id): Path<String>, ws: WebSocket) -> Response {
    let check = id.clone();
    match core.call(move |c| c.channel_index(&check).is_some()).await {
        Ok(true) => {}
        Ok(false) => return respond(Reply::not_found("Channel")),
        Err(_) => return shut_down(),
    }
    let core = core.clone();
    ws.on_upgrade(move |socket| super::ws::serve(socket, id, core))
        .into_response()
}

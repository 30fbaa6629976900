//! Queue-scoped rules end to end: the simulator's queue members endpoint, the client's paging
//! over it, and the real service alerting only the members of the queue a rule is scoped to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_monitor::app::App;
use agent_monitor::config::{GenesysConfig, GenesysEndpoints};
use agent_monitor::genesys::{GenesysClient, GenesysError, RetryPolicy};
use agent_monitor::protocol::{ErrorBody, QueueMemberEntityListing, TokenResponse};
use agent_monitor::rules::RuleSet;
use agent_monitor::secret::Secret;
use agent_monitor::sim::{SimConfig, Simulator};
use serde_json::Value;

use crate::helpers::{SlackReceiver, init, wait_for};
use crate::service::{Harness, Opts, config_for, start_sim, temp_db_path};

const DEADLINE: Duration = Duration::from_secs(20);

async fn sim_with(agents: usize, queues: usize) -> Simulator {
    init();
    let cfg = SimConfig {
        agents,
        queues,
        autopilot: false,
        heartbeat_interval: Duration::from_secs(3600),
        ..SimConfig::default()
    };
    Simulator::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .unwrap()
}

fn client_for(sim: &Simulator) -> GenesysClient {
    let base = url::Url::parse(&sim.base_url()).unwrap();
    let cfg = GenesysConfig {
        endpoints: GenesysEndpoints {
            api_base: base.clone(),
            login_base: base,
            region: None,
        },
        credentials: agent_monitor::config::Credentials {
            client_id: sim.client_id().to_string(),
            client_secret: Secret::new(sim.client_secret()),
        },
        ping_interval: Duration::from_secs(20),
        silence_timeout: Duration::from_secs(60),
        topics_per_channel: 1000,
        request_timeout: Duration::from_secs(5),
        rate_limit_per_minute: agent_monitor::config::DEFAULT_GENESYS_RATE_LIMIT,
    };
    GenesysClient::with_retry_policy(&cfg, RetryPolicy::fast()).unwrap()
}

async fn token(sim: &Simulator, http: &reqwest::Client) -> String {
    let response = http
        .post(format!("{}/oauth/token", sim.base_url()))
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    response.json::<TokenResponse>().await.unwrap().access_token
}

#[tokio::test]
async fn sim_membership_is_deterministic_and_scriptable() {
    let sim = sim_with(7, 3).await;
    let agents = sim.agent_ids().await.unwrap();
    let queues = sim.queue_ids().await.unwrap();
    assert_eq!(queues.len(), 3);
    let again = sim_with(7, 3).await;
    assert_eq!(
        again.queue_ids().await.unwrap(),
        queues,
        "same seed, same ids"
    );
    for (k, queue) in queues.iter().enumerate() {
        assert_eq!(queue, &queue.to_ascii_lowercase());
        let expected: Vec<String> = agents.iter().skip(k).step_by(3).cloned().collect();
        assert_eq!(sim.queue_members(queue).await.unwrap().unwrap(), expected);
    }
    sim.set_queue_members(
        &queues[0].to_ascii_uppercase(),
        vec![agents[1].to_ascii_uppercase()],
    )
    .await
    .unwrap();
    assert_eq!(
        sim.queue_members(&queues[0]).await.unwrap().unwrap(),
        vec![agents[1].clone()]
    );
    assert!(sim.set_queue_members("nope", Vec::new()).await.is_err());
    assert_eq!(sim.queue_members("nope").await.unwrap(), None);
    again.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_members_endpoint_pages_with_next_uri_and_refuses_bad_requests() {
    let sim = sim_with(7, 1).await;
    let agents = sim.agent_ids().await.unwrap();
    let queue = sim.queue_ids().await.unwrap().remove(0);
    let http = reqwest::Client::new();
    let bearer = token(&sim, &http).await;
    let get = |path: String| {
        let http = http.clone();
        let bearer = bearer.clone();
        let url = format!("{}{path}", sim.base_url());
        async move {
            let r = http.get(url).bearer_auth(bearer).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    // Walk the pages by nextUri only.
    let mut path =
        format!("/api/v2/routing/queues/{queue}/members?pageSize=3&expand=routingStatus");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (status, page) = get(path.clone()).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        assert!(page.get("total").is_none() && page.get("pageCount").is_none());
        let listing: QueueMemberEntityListing = serde_json::from_value(page.clone()).unwrap();
        for m in &listing.entities {
            assert_eq!(m.user.as_ref().unwrap().id, m.id);
            assert_eq!(m.routing_status.as_ref().unwrap().status, "IDLE");
            seen.push(m.user_id());
        }
        match listing.next_uri {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, agents);

    // Without the expand, no routingStatus.
    let (_, page) = get(format!("/api/v2/routing/queues/{queue}/members")).await;
    assert!(page["entities"][0].get("routingStatus").is_none());
    assert_eq!(page["pageSize"], 25);
    assert!(page.get("nextUri").is_none());

    for bad in ["pageSize=101", "pageSize=0", "pageNumber=0"] {
        let (status, body) = get(format!("/api/v2/routing/queues/{queue}/members?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = get("/api/v2/routing/queues/unknown-queue/members".into()).await;
    assert_eq!(status, 404);
    let error: ErrorBody = serde_json::from_value(body).unwrap();
    assert_eq!(error.code.as_deref(), Some("not.found"));

    let anonymous = http
        .get(format!(
            "{}/api/v2/routing/queues/{queue}/members",
            sim.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    sim.shutdown().await;
}

#[tokio::test]
async fn client_lists_every_member_across_pages() {
    let sim = sim_with(250, 1).await;
    let agents = sim.agent_ids().await.unwrap();
    let queue = sim.queue_ids().await.unwrap().remove(0);
    let client = client_for(&sim);

    let members = client
        .queue_members(&queue.to_ascii_uppercase())
        .await
        .unwrap();
    assert_eq!(members, agents, "every member, in order, lowercase");
    // The first page by the id as given, the next ones by the nextUri the server wrote.
    assert_eq!(
        sim.request_count("GET", "/api/v2/routing/queues/")
            .await
            .unwrap(),
        3,
        "pages of 100 followed by nextUri"
    );

    // A 503 is retried; a 404 is an API error for the caller.
    sim.fail_next("GET", "/api/v2/routing/queues/", 503, None, 1)
        .await
        .unwrap();
    assert_eq!(client.queue_members(&queue).await.unwrap().len(), 250);
    match client.queue_members("unknown-queue").await {
        Err(GenesysError::Api { status: 404, .. }) => {}
        other => panic!("expected a 404 API error, got {other:?}"),
    }

    sim.set_queue_members(&queue, Vec::new()).await.unwrap();
    assert!(client.queue_members(&queue).await.unwrap().is_empty());
    sim.shutdown().await;
}

/// Writes a rules file with one rule on routing IDLE for 2 s, scoped to `queue`.
fn queue_rules_file(queue: &str) -> std::path::PathBuf {
    let path = temp_db_path().with_extension("rules.toml");
    std::fs::write(
        &path,
        format!(
            "[[rules]]\nname = \"queue-idle\"\nthreshold = \"2s\"\n\
             [rules.match]\nrouting_status = \"IDLE\"\n\
             [rules.scope]\nqueue_ids = [\"{}\"]\n",
            queue.to_ascii_uppercase()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_scoped_rule_alerts_only_the_queue_members() {
    // Two agents, three queues: agent 0 is in queue 0, agent 1 in queue 1.
    let sim = start_sim(2).await;
    let ids = sim.agent_ids().await.unwrap();
    let queues = sim.queue_ids().await.unwrap();
    let (member, outsider) = (ids[0].clone(), ids[1].clone());
    assert!(
        sim.queue_members(&queues[0])
            .await
            .unwrap()
            .unwrap()
            .contains(&member)
    );
    for id in &ids {
        sim.set_routing_status(id, "INTERACTING").await.unwrap();
    }
    let rules_path = queue_rules_file(&queues[0]);
    let slack = SlackReceiver::start().await;
    let opts = Opts {
        agents: 2,
        ..Opts::default()
    };
    let mut cfg = config_for(&sim, &slack, &temp_db_path(), &opts);
    cfg.rules = Arc::new(RuleSet::load(&rules_path).unwrap());
    cfg.rules_path = Some(rules_path.clone());
    let app = App::start(cfg).await.unwrap();
    let h = Harness {
        base: format!("http://{}", app.api_addr()),
        sim,
        slack,
        app,
        http: reqwest::Client::new(),
        ids,
    };
    h.wait_ready().await;
    h.wait_state(&member, "routing", "INTERACTING").await;
    h.wait_state(&outsider, "routing", "INTERACTING").await;
    assert!(
        h.sim
            .request_count(
                "GET",
                &format!(
                    "/api/v2/routing/queues/{}/members",
                    queues[0].to_ascii_uppercase()
                )
            )
            .await
            .unwrap()
            + h.sim
                .request_count(
                    "GET",
                    &format!("/api/v2/routing/queues/{}/members", queues[0])
                )
                .await
                .unwrap()
            >= 1,
        "the queue named by the rule is listed"
    );
    assert_eq!(
        h.sim
            .request_count("GET", &format!("/api/v2/routing/queues/{}", queues[1]))
            .await
            .unwrap(),
        0,
        "a queue no rule names is never listed"
    );

    // The outsider goes IDLE first, so its deadline passes before the member's.
    let outsider_idle = Instant::now();
    h.sim.set_routing_status(&outsider, "IDLE").await.unwrap();
    h.wait_state(&outsider, "routing", "IDLE").await;
    h.sim.set_routing_status(&member, "IDLE").await.unwrap();
    let alert = wait_for("the member's queue-idle alert", DEADLINE, || async {
        h.alerts_for(&member).pop()
    })
    .await;
    assert!(outsider_idle.elapsed() >= Duration::from_secs(2));
    assert!(alert.to_string().contains("queue-idle"), "{alert}");
    assert!(
        h.alerts_for(&outsider).is_empty(),
        "the outsider is not in the rule's queue: {:?}",
        h.alerts_for(&outsider)
    );

    // Membership moves to the outsider; a rules reload lists it again and the outsider,
    // idle for long now, fires at once.
    h.sim
        .set_queue_members(&queues[0], vec![outsider.clone()])
        .await
        .unwrap();
    let outcome = ractor::call!(
        h.app.supervisor(),
        agent_monitor::actors::supervisor::SupervisorMsg::ReloadRules
    )
    .unwrap();
    assert!(outcome.applied, "{:?}", outcome.problems);
    wait_for(
        "the outsider's alert after it joined the queue",
        DEADLINE,
        || async { h.alerts_for(&outsider).pop() },
    )
    .await;
    let _ = std::fs::remove_file(rules_path);
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_queue_scoped_rule_means_no_queue_call() {
    let h = Harness::start(Opts {
        agents: 2,
        ..Opts::default()
    })
    .await;
    h.wait_state(&h.ids[0], "routing", "IDLE").await;
    assert_eq!(
        h.sim
            .request_count("*", "/api/v2/routing/queues")
            .await
            .unwrap(),
        0
    );
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_queue_counts_as_empty() {
    let sim = start_sim(1).await;
    let ids = sim.agent_ids().await.unwrap();
    sim.set_routing_status(&ids[0], "INTERACTING")
        .await
        .unwrap();
    // A queue the org does not have: 404, logged, treated as empty; the service still starts.
    let rules_path = queue_rules_file("0badc0de-0000-4000-8000-000000000000");
    let slack = SlackReceiver::start().await;
    let opts = Opts {
        agents: 1,
        ..Opts::default()
    };
    let mut cfg = config_for(&sim, &slack, &temp_db_path(), &opts);
    cfg.rules = Arc::new(RuleSet::load(&rules_path).unwrap());
    cfg.rules_path = Some(rules_path.clone());
    let app = App::start(cfg).await.unwrap();
    let h = Harness {
        base: format!("http://{}", app.api_addr()),
        sim,
        slack,
        app,
        http: reqwest::Client::new(),
        ids,
    };
    h.wait_ready().await;
    assert!(
        h.sim
            .request_count("GET", "/api/v2/routing/queues/")
            .await
            .unwrap()
            >= 1
    );
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "INTERACTING").await;
    let idle = Instant::now();
    h.sim.set_routing_status(&user, "IDLE").await.unwrap();
    h.wait_state(&user, "routing", "IDLE").await;
    // Past the rule's threshold with room to spare: still nothing.
    wait_for("3 s past going idle", DEADLINE, || async {
        (idle.elapsed() >= Duration::from_secs(3)).then_some(())
    })
    .await;
    assert!(h.alerts_for(&user).is_empty());
    let _ = std::fs::remove_file(rules_path);
    h.app.shutdown().await;
}

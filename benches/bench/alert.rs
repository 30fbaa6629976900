//! Figure 3, alert latency: the delay from each agent's idle deadline to its Slack POST arriving
//! at a local receiver, for 10 k agents (quick: 2 k) whose deadlines are spread evenly over a
//! 3-second window.
//!
//! Driven through the real actors, not the whole service: one `AgentActor` per agent (built-in
//! `idle` rule, 60 s threshold), the real `PersistenceActor` on a SQLite file (WAL) and the real
//! `SlackActor` posting Slack-format messages over loopback HTTP to a poem receiver in this
//! process. Pacing is off (`send_interval = 0`) and so is grouping (`group_wait = 0`), so each
//! alert is its own POST. Each agent gets presence ON_QUEUE and routing IDLE whose Genesys
//! timestamp is its deadline minus the threshold, exactly what the connection actor would
//! deliver; the WebSocket and parse stages are measured by figures 1 and 2 and do not move a
//! timer deadline.
//!
//! The limit, measured in the same run: as many plain tokio tasks sleeping until the same
//! deadlines (the runtime's timer and scheduling alone), reported as their own p50/p99/max.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_monitor::actors::agent::{AgentActor, AgentArgs, AgentMsg, Peers};
use agent_monitor::actors::deadline::Deadlines;
use agent_monitor::actors::persistence::{PersistMsg, PersistenceActor, PersistenceArgs};
use agent_monitor::actors::slack::{SlackActor, SlackArgs};
use agent_monitor::config::{DeliveryConfig, DestinationConfig, PersistenceConfig};
use agent_monitor::domain::{Source, UserId};
use agent_monitor::notification::{PresenceUpdate, RoutingUpdate};
use agent_monitor::rules::RuleSet;
use agent_monitor::secret::Secret;
use chrono::{DateTime, TimeDelta, Utc};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Route, handler};
use ractor::Actor;

use crate::common::{Ctx, bench_data_dir, emit, runtime, summarize};

type Received = Arc<Mutex<Vec<(DateTime<Utc>, String)>>>;

#[handler]
fn hook(received: Data<&Received>, body: String) -> &'static str {
    received.0.lock().unwrap().push((Utc::now(), body));
    "ok"
}

/// A local Slack incoming webhook that records when each POST arrived.
async fn start_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .expect("bind receiver");
    let addr = *acceptor.local_addr()[0].as_socket_addr().unwrap();
    let app = Route::new()
        .at("/services/T000/B000/XXXX", poem::post(hook))
        .data(received.clone());
    tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });
    (format!("http://{addr}/services/T000/B000/XXXX"), received)
}

/// The agent index in a message body (`agent-000123`).
fn agent_index(body: &str) -> Option<usize> {
    let at = body.find("agent-")? + "agent-".len();
    body.get(at..at + 6)?.parse().ok()
}

fn ms(delta: TimeDelta) -> f64 {
    delta.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

pub fn run(ctx: &Ctx) {
    let agents = ctx.pick(2_000, 10_000);
    let window = Duration::from_secs(3);
    let rt = runtime();
    rt.block_on(async {
        // The limit first: plain tokio sleeps until deadlines spread the same way.
        let lead = Duration::from_millis(500);
        let start = Utc::now() + TimeDelta::from_std(lead).unwrap();
        let deadlines: Vec<DateTime<Utc>> = (0..agents)
            .map(|i| start + TimeDelta::from_std(window.mul_f64(i as f64 / agents as f64)).unwrap())
            .collect();
        let mut tasks = Vec::with_capacity(agents);
        for &deadline in &deadlines {
            tasks.push(tokio::spawn(async move {
                let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                ms(Utc::now() - deadline)
            }));
        }
        let mut lateness = Vec::with_capacity(agents);
        for task in tasks {
            lateness.push(task.await.unwrap());
        }
        let limit = summarize(lateness);

        // The actors.
        let (url, received) = start_receiver().await;
        let path = bench_data_dir().join(format!("alert-{}.db", std::process::id()));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let db = agent_monitor::db::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .expect("bench database");
        let (persistence, _) = Actor::spawn(
            None,
            PersistenceActor,
            PersistenceArgs {
                db,
                config: PersistenceConfig::default(),
            },
        )
        .await
        .expect("persistence actor");
        let delivery = DeliveryConfig {
            destinations: vec![DestinationConfig::slack("default", Secret::new(url))],
            send_interval: Duration::ZERO,
            group_wait: Duration::ZERO,
            ..DeliveryConfig::default()
        };
        let (slack, _) = Actor::spawn(
            None,
            SlackActor,
            SlackArgs {
                config: delivery,
                persistence: persistence.clone(),
                db: None,
            },
        )
        .await
        .expect("slack actor");
        let threshold = Duration::from_secs(60);
        let rules = Arc::new(RuleSet::builtin_idle(threshold));
        let peers = Peers {
            persistence: persistence.clone(),
            slack: slack.clone(),
            deadlines: Deadlines::spawn(),
        };

        let lead = Duration::from_secs(ctx.pick(2, 4));
        let setup = std::time::Instant::now();
        let start = Utc::now() + TimeDelta::from_std(lead).unwrap();
        let deadlines: Vec<DateTime<Utc>> = (0..agents)
            .map(|i| start + TimeDelta::from_std(window.mul_f64(i as f64 / agents as f64)).unwrap())
            .collect();
        let threshold_delta = TimeDelta::from_std(threshold).unwrap();
        let mut refs = Vec::with_capacity(agents);
        for (i, deadline) in deadlines.iter().enumerate() {
            let (agent, _) = Actor::spawn(
                None,
                AgentActor,
                AgentArgs {
                    user_id: UserId::parse(&format!("agent-{i:06}")).unwrap(),
                    user_name: None,
                    division_id: None,
                    queue_ids: Vec::new(),
                    rules: rules.clone(),
                    episodes: None,
                    peers: peers.clone(),
                    clock: Default::default(),
                    held: false,
                },
            )
            .await
            .expect("agent actor");
            let since = *deadline - threshold_delta;
            let presence = PresenceUpdate {
                system: "ON_QUEUE".into(),
                definition_id: None,
                label: None,
                timestamp: since - TimeDelta::seconds(1),
            };
            let routing = RoutingUpdate {
                status: "IDLE".into(),
                timestamp: since,
            };
            agent
                .cast(AgentMsg::Presence(Box::new(presence), Source::Stream, None))
                .unwrap();
            agent
                .cast(AgentMsg::Routing(routing, Source::Stream, None))
                .unwrap();
            refs.push(agent);
        }
        let setup_secs = setup.elapsed().as_secs_f64();
        eprintln!("# alert: {agents} agents set up in {setup_secs:.2} s (lead {lead:?})");
        if Utc::now() > deadlines[0] {
            eprintln!("# alert: WARNING set-up overran the first deadline; latencies are inflated");
        }

        let give_up = *deadlines.last().unwrap() + TimeDelta::seconds(60);
        loop {
            let count = received.lock().unwrap().len();
            if count >= agents || Utc::now() > give_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let received = std::mem::take(&mut *received.lock().unwrap());
        let mut latencies = Vec::with_capacity(received.len());
        let mut seen = vec![false; agents];
        for (at, body) in &received {
            let i = agent_index(body).expect("an agent id in every message");
            if !std::mem::replace(&mut seen[i], true) {
                latencies.push(ms(*at - deadlines[i]));
            }
        }
        emit(
            "alert.delivered",
            latencies.len() as f64,
            &format!("of_{agents}"),
        );
        let s = summarize(latencies);
        emit("alert.latency.p50", s.p50, "ms");
        emit("alert.latency.p99", s.p99, "ms(target<=50)");
        emit("alert.latency.max", s.max, "ms");
        emit("alert.timer_limit.p50", limit.p50, "ms");
        emit("alert.timer_limit.p99", limit.p99, "ms");
        emit("alert.timer_limit.max", limit.max, "ms");
        for agent in refs {
            agent.stop(None);
        }
        slack.stop(None);
        let _ = persistence
            .call(PersistMsg::Flush, Some(Duration::from_secs(10)))
            .await;
        persistence.stop(None);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    });
}

//! Channel lifecycle, membership scope and time (issue 3), end to end against the simulator:
//! rollover before expiry (make before break), replacement after `no_longer_subscribed`,
//! rejected topics, deactivated users, queue scope followed live, the clock offset, and the
//! presence-definition refresh on an unknown id.

use std::time::Duration;

use agent_monitor::actors::membership::Scope;
use agent_monitor::config::MembershipConfig;
use agent_monitor::sim::{SimConfig, Simulator};
use serde_json::Value;

use crate::helpers::{init, wait_a_while, wait_for};
use crate::service::{Harness, Opts};

const DEADLINE: Duration = Duration::from_secs(30);

async fn sim_with(agents: usize, tune: impl FnOnce(&mut SimConfig)) -> Simulator {
    init();
    let mut cfg = SimConfig {
        agents,
        autopilot: false,
        heartbeat_interval: Duration::from_millis(500),
        socket_closing_grace: Duration::from_secs(5),
        ..SimConfig::default()
    };
    tune(&mut cfg);
    Simulator::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .unwrap()
}

fn opts(agents: usize) -> Opts {
    Opts {
        agents,
        ping_interval: Duration::from_millis(300),
        silence_timeout: Duration::from_millis(1500),
        membership: MembershipConfig {
            backfill_margin: Duration::from_secs(1),
            ..MembershipConfig::default()
        },
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_rolls_over_before_it_expires_and_loses_nothing() {
    let sim = sim_with(2, |c| c.channel_ttl = Duration::from_secs(8)).await;
    let h = Harness::start_on(sim, opts(2)).await;
    let user = h.ids[0].clone();
    let first = h.connection(0).await["channel_id"].clone();
    // Keep events flowing across the switch.
    let statuses = ["INTERACTING", "IDLE", "NOT_RESPONDING", "OFF_QUEUE"];
    let mut n = 0;
    let replaced = wait_for("the rollover", DEADLINE, || {
        n += 1;
        // One change every 10 polls (about 5 per second).
        let status = (n % 10 == 0).then(|| statuses[(n / 10) % statuses.len()]);
        let (h, user, first) = (&h, user.clone(), first.clone());
        async move {
            if let Some(status) = status {
                h.sim.set_routing_status(&user, status).await.unwrap();
            }
            let c = h.connection(0).await;
            (c["channel_replacements"].as_u64() >= Some(1) && c["channel_id"] != first).then_some(c)
        }
    })
    .await;
    assert_eq!(replaced["connected"], true, "{replaced}");
    assert_eq!(
        replaced["reconnects"], 0,
        "make before break: no socket was lost"
    );
    assert!(replaced["rollover_at"].is_string(), "{replaced}");
    // The old channel was left: no socket and no topics; the new one carries everything.
    let channels = h.sim.channel_history().await.unwrap();
    let old = channels
        .iter()
        .find(|c| Value::String(c.id.clone()) == first)
        .unwrap();
    assert_eq!(old.connected_sockets, 0, "{old:?}");
    assert_eq!(old.topics, 0, "{old:?}");
    assert_ne!(
        old.ended,
        Some(agent_monitor::sim::ChannelEnd::Expired),
        "replaced before it expired: {old:?}"
    );
    // One more event on the new channel, then every routing transition is stored once.
    h.sim.set_routing_status(&user, "IDLE").await.unwrap();
    let truth = h.sim.ground_truth().await.unwrap();
    let expected: Vec<_> = truth
        .iter()
        .filter(|t| t.user_id == user && t.kind == agent_monitor::sim::TransitionKind::Routing)
        .collect();
    let count =
        format!("SELECT COUNT(*) FROM agent_status WHERE user_id = '{user}' AND kind = 'routing'");
    wait_for("every routing transition stored", DEADLINE, || async {
        (h.sql_count(&count).await == expected.len() as i64).then_some(())
    })
    .await;
    assert!(
        expected.len() < 100,
        "the history page below holds them all"
    );
    let rows = h.history(&user, "routing").await;
    for t in expected {
        let at = agent_monitor::domain::format_timestamp(t.at);
        assert_eq!(
            rows.iter()
                .filter(|r| r["event_timestamp"] == at.as_str())
                .count(),
            1,
            "{} at {at}",
            t.value
        );
    }
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_longer_subscribed_replaces_the_channel_at_once() {
    let sim = sim_with(2, |_| {}).await;
    let h = Harness::start_on(sim, opts(2)).await;
    let user = h.ids[0].clone();
    let first = h.connection(0).await["channel_id"].clone();
    h.sim.send_no_longer_subscribed().await.unwrap();
    let c = wait_for("a new channel", DEADLINE, || async {
        let c = h.connection(0).await;
        (c["channel_id"] != first && c["connected"] == true).then_some(c)
    })
    .await;
    assert_eq!(c["channel_replacements"], 1, "{c}");
    // Still streaming, and the gap was backfilled.
    h.sim
        .set_routing_status(&user, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&user, "routing", "INTERACTING").await;
    let (_, ready) = h.get("/readyz").await;
    assert_eq!(
        ready["last_backfill"]["trigger"], "channel_replaced",
        "{ready}"
    );
    // Never more channels than needed: one live channel.
    let live = h
        .sim
        .channels()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.connected_sockets > 0)
        .count();
    assert_eq!(live, 1);
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_topic_shows_in_readyz_and_the_others_keep_working() {
    let sim = sim_with(3, |_| {}).await;
    let ids = sim.agent_ids().await.unwrap();
    sim.reject_topics(vec![ids[1].clone()], "missing permission routing:user:view")
        .await
        .unwrap();
    let h = Harness::start_on(sim, opts(3)).await;
    let c = h.connection(0).await;
    let rejected = c["rejected_topics"].as_array().cloned().unwrap_or_default();
    assert_eq!(rejected.len(), 1, "{c}");
    assert!(
        rejected[0]["topic"]
            .as_str()
            .unwrap()
            .contains(ids[1].as_str())
    );
    assert_eq!(
        rejected[0]["reason"],
        "missing permission routing:user:view"
    );
    h.sim
        .set_routing_status(&ids[0], "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&ids[0], "routing", "INTERACTING").await;
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_user_is_unsubscribed_and_its_agent_stopped() {
    let sim = sim_with(3, |_| {}).await;
    let mut o = opts(3);
    o.membership.refresh = Duration::from_secs(1);
    let h = Harness::start_on(sim, o).await;
    let gone = h.ids[2].clone();
    h.sim.deactivate_user(&gone).await.unwrap();
    wait_for("two agents left", DEADLINE, || async {
        let (_, ready) = h.get("/readyz").await;
        (ready["agents"] == 2 && ready["connections"][0]["topics"] == 2).then_some(())
    })
    .await;
    let channels = h.sim.channels().await.unwrap();
    assert_eq!(channels.iter().map(|c| c.topics).sum::<usize>(), 2);
    // Its agent actor is stopped for good, not restarted.
    wait_a_while(Duration::from_secs(2)).await;
    let (status, ready) = h.get("/readyz").await;
    assert_eq!((status, ready["agents"].clone()), (200, Value::from(2)));
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_scope_follows_joins_and_leaves_live() {
    let sim = sim_with(6, |c| c.queues = 3).await;
    let queue = sim.queue_ids().await.unwrap()[0].clone();
    let members = sim.queue_members(&queue).await.unwrap().unwrap();
    let ids = sim.agent_ids().await.unwrap();
    let outsider = ids.iter().find(|i| !members.contains(i)).unwrap().clone();
    let mut o = opts(6);
    // The timer alone would take 10 minutes: only the queue topic can make this test pass.
    o.membership.scope = Scope {
        queue_ids: vec![queue.clone()],
        division_ids: vec![],
    };
    let h = Harness::start_on(sim, o).await;
    let (_, ready) = h.get("/readyz").await;
    assert_eq!(ready["agents"], members.len() as u64, "{ready}");

    h.sim.add_queue_member(&queue, &outsider).await.unwrap();
    wait_for("the joiner is monitored", DEADLINE, || async {
        let (_, ready) = h.get("/readyz").await;
        (ready["agents"] == members.len() as u64 + 1).then_some(())
    })
    .await;
    h.sim
        .set_routing_status(&outsider, "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&outsider, "routing", "INTERACTING").await;

    h.sim
        .remove_queue_member(&queue, &members[0])
        .await
        .unwrap();
    wait_for("the leaver is no longer monitored", DEADLINE, || async {
        let (_, ready) = h.get("/readyz").await;
        (ready["agents"] == members.len() as u64).then_some(())
    })
    .await;
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_genesys_clock_is_measured_and_applied_once() {
    // Genesys ten minutes ahead: without the offset every event would lie "in the future"
    // and be refused, and idle deadlines would pass at once.
    let skew = chrono::TimeDelta::minutes(10);
    let sim = sim_with(2, |c| c.clock_skew = skew).await;
    let user = sim.agent_ids().await.unwrap()[0].clone();
    sim.set_routing_status(&user, "INTERACTING").await.unwrap();
    let mut o = opts(2);
    o.idle_threshold = Duration::from_secs(3);
    let h = Harness::start_on(sim, o).await;
    let offset = wait_for("the measured offset", DEADLINE, || async {
        let (_, ready) = h.get("/readyz").await;
        ready["clock_offset_ms"].as_i64()
    })
    .await;
    assert!(
        (offset - skew.num_milliseconds()).abs() < 2_000,
        "offset {offset} ms"
    );
    h.sim.set_routing_status(&user, "IDLE").await.unwrap();
    let row = h.wait_state(&user, "routing", "IDLE").await;
    assert_eq!(row["source"], "stream");
    let set_at = tokio::time::Instant::now();
    wait_for("the idle alert", DEADLINE, || async {
        (!h.alerts_for(&user).is_empty()).then_some(())
    })
    .await;
    assert!(
        set_at.elapsed() >= Duration::from_secs(2),
        "the alert waited for the threshold on Genesys's clock: {:?}",
        set_at.elapsed()
    );
    let (_, health) = h.get("/readyz").await;
    assert_eq!(
        health["connections"][0]["malformed_messages"], 0,
        "{health}"
    );
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_presence_definition_refreshes_the_definitions_once() {
    let sim = sim_with(2, |_| {}).await;
    let h = Harness::start_on(sim, opts(2)).await;
    let user = h.ids[0].clone();
    let before = h
        .sim
        .request_count("GET", "/api/v2/presence/definitions")
        .await
        .unwrap();
    let frame = |id: &str, at: &str| {
        format!(
            r#"{{"topicName":"v2.users.{user}.presence","version":"2","eventBody":{{"source":"PURECLOUD","presenceDefinition":{{"id":"{id}","systemPresence":"BUSY"}},"primary":true,"message":"","modifiedDate":"{at}"}},"metadata":{{"CorrelationId":"c0ffee00-0000-0000-0000-00000000aaaa"}}}}"#
        )
    };
    let now = chrono::Utc::now();
    let t1 = agent_monitor::domain::format_timestamp(now);
    let t2 = agent_monitor::domain::format_timestamp(now + chrono::TimeDelta::milliseconds(5));
    h.sim
        .send_raw_frame(&frame("9e9e9e9e-0000-4000-8000-000000000001", &t1))
        .await
        .unwrap();
    h.sim
        .send_raw_frame(&frame("9e9e9e9e-0000-4000-8000-000000000002", &t2))
        .await
        .unwrap();
    // Both rows are written, in one batch or two: wait for the second, not the first seen.
    let row = wait_for("the second BUSY stored", DEADLINE, || async {
        h.history(&user, "presence")
            .await
            .into_iter()
            .find(|r| r["state"] == "BUSY" && r["event_timestamp"] == t2.as_str())
    })
    .await;
    // Stored with the system presence's label as a fallback, and the id as Genesys sent it.
    assert_eq!(row["org_presence"], "Busy", "{row}");
    assert_eq!(
        row["presence_definition_id"], "9e9e9e9e-0000-4000-8000-000000000002",
        "{row}"
    );
    wait_for("one refresh", DEADLINE, || async {
        let after = h
            .sim
            .request_count("GET", "/api/v2/presence/definitions")
            .await
            .unwrap();
        (after == before + 1).then_some(())
    })
    .await;
    wait_a_while(Duration::from_millis(500)).await;
    let after = h
        .sim
        .request_count("GET", "/api/v2/presence/definitions")
        .await
        .unwrap();
    assert_eq!(after, before + 1, "at most one refresh a minute");
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_division_scope_monitors_only_that_division() {
    let (east, west) = (
        "d1d1d1d1-0000-4000-8000-000000000001".to_string(),
        "d2d2d2d2-0000-4000-8000-000000000002".to_string(),
    );
    let sim = sim_with(4, |c| c.division_ids = vec![east.clone(), west.clone()]).await;
    let ids = sim.agent_ids().await.unwrap();
    let mut o = opts(4);
    o.membership.scope = Scope {
        queue_ids: vec![],
        division_ids: vec![west.clone()],
    };
    let h = Harness::start_on(sim, o).await;
    let (_, ready) = h.get("/readyz").await;
    assert_eq!(ready["agents"], 2, "{ready}");
    assert_eq!(ready["connections"][0]["topics"], 2, "{ready}");
    // Agents 1 and 3 are in the west division (round robin), 0 and 2 are not monitored.
    h.sim
        .set_routing_status(&ids[1], "INTERACTING")
        .await
        .unwrap();
    h.wait_state(&ids[1], "routing", "INTERACTING").await;
    assert!(h.history(&ids[0], "routing").await.is_empty());
    h.app.shutdown().await;
}

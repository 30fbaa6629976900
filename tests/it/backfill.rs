//! Gap backfill (issue 3): what happens while no socket listens is recovered from the analytics
//! user details query (`source = backfill`), fed to the agents in time order, and alerted on
//! time exactly once; a restart backfills the time the service was away. Everything runs
//! against the simulator over loopback, with a local Slack receiver and real SQLite files.

use std::time::Duration;

use agent_monitor::app::App;
use agent_monitor::config::MembershipConfig;
use serde_json::Value;

use crate::helpers::{SlackReceiver, wait_a_while, wait_for};
use crate::service::{
    Harness, Opts, config_for, routing_history, start_ready, start_sim, temp_db_path,
    wait_start_backfill,
};

/// How long a condition may take. A gap test's backfill can wait out the service's retry
/// backoff after several failed analytics queries (up to 12.8 s after the seventh), longer on a
/// loaded machine; the agents' hold gives up after 60 s (`GAP_HOLD_LIMIT`), so this stays under it.
const DEADLINE: Duration = Duration::from_secs(50);

/// Quick silence detection (so a silent socket makes a short gap) and a small margin.
fn quick(agents: usize, idle_threshold: Duration) -> Opts {
    Opts {
        agents,
        idle_threshold,
        ping_interval: Duration::from_millis(300),
        silence_timeout: Duration::from_millis(1200),
        membership: MembershipConfig {
            backfill_margin: Duration::from_secs(1),
            ..MembershipConfig::default()
        },
        ..Opts::default()
    }
}

/// Makes the simulator silent (events are lost: no socket gets them), runs `during`, waits
/// until the service noticed (a reconnect), then lets the stream flow again.
async fn in_a_gap<F, Fut>(h: &Harness, during: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = h.connection(0).await["reconnects"].as_u64().unwrap_or(0);
    h.sim.set_silent(true).await.unwrap();
    during().await;
    wait_for("the service noticed the silence", DEADLINE, || async {
        let reconnects = h.connection(0).await["reconnects"].as_u64().unwrap_or(0);
        (reconnects > before).then_some(())
    })
    .await;
    h.sim.set_silent(false).await.unwrap();
}

/// The service on two agents, both INTERACTING and seen so: the harness and the two user ids.
async fn two_working_agents(threshold: Duration) -> (Harness, String, String) {
    let sim = start_sim(2).await;
    let ids = sim.agent_ids().await.unwrap();
    for id in &ids {
        sim.set_routing_status(id, "INTERACTING").await.unwrap();
    }
    let h = Harness::start_on(sim, quick(2, threshold)).await;
    for id in &ids {
        h.wait_state(id, "routing", "INTERACTING").await;
    }
    (h, ids[0].clone(), ids[1].clone())
}

async fn last_backfill(h: &Harness, trigger: &str) -> Value {
    backfill_finished_after(h, trigger, chrono::DateTime::<chrono::Utc>::MIN_UTC).await
}

/// Waits for a successful backfill run of `trigger` that finished after `after` (so a run of
/// an earlier gap, say a reconnect the load caused, is not taken for the one awaited).
async fn backfill_finished_after(
    h: &Harness,
    trigger: &str,
    after: chrono::DateTime<chrono::Utc>,
) -> Value {
    wait_for(&format!("a {trigger} backfill"), DEADLINE, || async {
        let (_, ready) = h.get("/readyz").await;
        let run = ready["last_backfill"].clone();
        let finished = run["finished_at"]
            .as_str()
            .and_then(|t| agent_monitor::domain::parse_timestamp(t).ok())?;
        (run["trigger"] == trigger && run["error"].is_null() && finished > after).then_some(run)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_missed_while_no_socket_listened_are_backfilled() {
    let h = Harness::start(quick(2, Duration::from_secs(3600))).await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "IDLE").await;

    in_a_gap(&h, || async {
        h.sim
            .set_routing_status(&user, "INTERACTING")
            .await
            .unwrap();
        h.sim.set_presence(&user, "BREAK").await.unwrap();
        h.sim.set_routing_status(&user, "OFF_QUEUE").await.unwrap();
    })
    .await;

    // Only the backfill can know INTERACTING: the snapshot sees OFF_QUEUE.
    let row = h.wait_state(&user, "routing", "INTERACTING").await;
    assert_eq!(row["source"], "backfill", "{row}");
    h.wait_state(&user, "routing", "OFF_QUEUE").await;
    h.wait_state(&user, "presence", "BREAK").await;
    let run = last_backfill(&h, "reconnect").await;
    assert!(run["records"].as_u64().unwrap() >= 3, "{run}");

    // Every transition the simulator generated is stored exactly once, with its timestamp.
    let truth = h.sim.ground_truth().await.unwrap();
    for t in truth.iter().filter(|t| t.user_id == user && !t.initial) {
        let kind = match t.kind {
            agent_monitor::sim::TransitionKind::Presence => "presence",
            agent_monitor::sim::TransitionKind::Routing => "routing",
        };
        let rows = h.history(&user, kind).await;
        let at = agent_monitor::domain::format_timestamp(t.at);
        let same: Vec<&Value> = rows
            .iter()
            .filter(|r| r["event_timestamp"] == at.as_str())
            .collect();
        assert_eq!(same.len(), 1, "{kind} {} at {at}: {rows:?}", t.value);
        assert_eq!(same[0]["state"], t.value.as_str());
    }
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_episode_begun_in_a_gap_alerts_once_and_one_that_ended_in_it_never() {
    let threshold = Duration::from_secs(3);
    // Nobody idle before the gap.
    let (h, still_idle, resumed) = two_working_agents(threshold).await;

    in_a_gap(&h, || async {
        h.sim.set_routing_status(&still_idle, "IDLE").await.unwrap();
        h.sim.set_routing_status(&resumed, "IDLE").await.unwrap();
        h.sim
            .set_routing_status(&resumed, "INTERACTING")
            .await
            .unwrap();
    })
    .await;
    let idle_start = h
        .sim
        .user(&still_idle)
        .await
        .unwrap()
        .unwrap()
        .routing_start;

    // The agent still idle is alerted, from its Genesys start time.
    wait_for("the idle alert", DEADLINE, || async {
        (!h.alerts_for(&still_idle).is_empty()).then_some(())
    })
    .await;
    // The alert record is committed with the next flush, maybe just after the POST.
    let alerts = wait_for("the alert record", DEADLINE, || async {
        let (_, alerts) = h
            .get(&format!("/api/v1/alerts?user_id={still_idle}&limit=10"))
            .await;
        let alerts = alerts["data"].as_array().cloned().unwrap_or_default();
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts[0]["since"],
        agent_monitor::domain::format_timestamp(idle_start).as_str()
    );
    // Wait past another threshold and a checkpoint: still one message, and none for the
    // agent whose idle episode ended inside the gap.
    wait_a_while(threshold + Duration::from_secs(1)).await;
    assert_eq!(h.alerts_for(&still_idle).len(), 1);
    assert!(
        h.alerts_for(&resumed).is_empty(),
        "{:?}",
        h.alerts_for(&resumed)
    );
    let resumed_rows = h.history(&resumed, "routing").await;
    assert!(
        resumed_rows
            .iter()
            .any(|r| r["state"] == "IDLE" && r["source"] == "backfill"),
        "the short episode is in the history: {resumed_rows:?}"
    );
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_backfills_the_downtime_and_alerts_an_idle_agent_once() {
    let threshold = Duration::from_secs(2);
    let sim = start_sim(2).await;
    let ids = sim.agent_ids().await.unwrap();
    let (agent, other) = (ids[0].clone(), ids[1].clone());
    for id in &ids {
        sim.set_routing_status(id, "INTERACTING").await.unwrap();
    }
    let slack = SlackReceiver::start().await;
    let db = temp_db_path();
    let opts = quick(2, threshold);

    let (app, _) = start_ready(&sim, &slack, &db, &opts).await;
    app.shutdown().await;

    // While the service is down: one agent goes idle and stays, the other passes through
    // NOT_RESPONDING.
    sim.set_routing_status(&other, "NOT_RESPONDING")
        .await
        .unwrap();
    sim.set_routing_status(&other, "INTERACTING").await.unwrap();
    sim.set_routing_status(&agent, "IDLE").await.unwrap();

    let app = App::start(config_for(&sim, &slack, &db, &opts))
        .await
        .unwrap();
    let base = format!("http://{}", app.api_addr());
    let run = wait_start_backfill(&base).await;
    assert!(run["error"].is_null(), "{run}");
    let rows = wait_for("the downtime NOT_RESPONDING", DEADLINE, || async {
        let rows = routing_history(&base, &other).await?;
        rows.iter()
            .any(|r| r["state"] == "NOT_RESPONDING")
            .then_some(rows)
    })
    .await;
    let nr = rows
        .iter()
        .find(|r| r["state"] == "NOT_RESPONDING")
        .unwrap();
    assert_eq!(nr["source"], "backfill", "{nr}");

    // The agent idle since the downtime is alerted once.
    wait_for("the idle alert", DEADLINE, || async {
        slack
            .received()
            .iter()
            .any(|r| r.body.to_string().contains(&agent))
            .then_some(())
    })
    .await;
    app.shutdown().await;

    // A second restart mid-episode: no second alert.
    let (app, _) = start_ready(&sim, &slack, &db, &opts).await;
    wait_a_while(threshold * 2).await;
    let messages = slack
        .received()
        .iter()
        .filter(|r| r.body.to_string().contains(&agent))
        .count();
    assert_eq!(messages, 1, "one alert across two restarts");
    assert!(
        !slack
            .received()
            .iter()
            .any(|r| r.body.to_string().contains(&other)),
        "the agent not idle is never alerted"
    );
    app.shutdown().await;
}

/// The end of an idle episode falls in a gap and reaches the service only after the threshold
/// (the user listing fails and the analytics query is slow): the agent's rules wait for the
/// backfill instead of firing on a deadline the gap may have cancelled. The agent who stayed
/// idle through the gap is alerted, once, when the backfill lands; the one who went back to
/// work before the threshold never is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_whose_end_fell_in_a_gap_is_judged_when_the_backfill_lands() {
    let threshold = Duration::from_secs(4);
    let (h, stays, resumes) = two_working_agents(threshold).await;
    h.sim.set_routing_status(&stays, "IDLE").await.unwrap();
    h.sim.set_routing_status(&resumes, "IDLE").await.unwrap();
    h.wait_state(&stays, "routing", "IDLE").await;
    h.wait_state(&resumes, "routing", "IDLE").await;
    let idle_start = h.sim.user(&resumes).await.unwrap().unwrap().routing_start;

    // From here the service learns nothing of the gap before the deadline: every user listing
    // (the snapshot) and every analytics query (the backfill) fails until the deadline has
    // passed, however quickly the service notices the gap and retries.
    let gap_began = chrono::Utc::now();
    h.sim
        .fail_next("GET", "/api/v2/users", 503, None, 10_000)
        .await
        .unwrap();
    h.sim
        .fail_next("POST", "/api/v2/analytics", 503, None, 10_000)
        .await
        .unwrap();
    in_a_gap(&h, || async {
        h.sim
            .set_routing_status(&resumes, "INTERACTING")
            .await
            .unwrap();
    })
    .await;
    let deadline_passed = idle_start
        + chrono::TimeDelta::from_std(threshold).unwrap()
        + chrono::TimeDelta::milliseconds(500);
    wait_for("the idle deadline to pass", DEADLINE, || async {
        (chrono::Utc::now() > deadline_passed).then_some(())
    })
    .await;
    h.sim.clear_faults().await.unwrap();
    let run = backfill_finished_after(&h, "reconnect", gap_began).await;
    let finished =
        agent_monitor::domain::parse_timestamp(run["finished_at"].as_str().unwrap()).unwrap();
    assert!(
        finished > idle_start + chrono::TimeDelta::from_std(threshold).unwrap(),
        "the backfill must land after the deadline for this test to mean anything: {run}"
    );

    wait_for(
        "the alert of the agent idle through the gap",
        DEADLINE,
        || async { (!h.alerts_for(&stays).is_empty()).then_some(()) },
    )
    .await;
    // The snapshot taken once the listing works again and the backfill both know the end of
    // the episode, with the same Genesys timestamp: whichever lands first is stored, the other
    // is a duplicate. Either way it was never streamed (the socket was silent).
    wait_for("the end of the episode, recovered", DEADLINE, || async {
        let rows = h.history(&resumes, "routing").await;
        rows.iter()
            .any(|r| {
                r["state"] == "INTERACTING"
                    && (r["source"] == "backfill" || r["source"] == "bootstrap")
                    && agent_monitor::domain::parse_timestamp(
                        r["event_timestamp"].as_str().unwrap_or_default(),
                    )
                    .is_ok_and(|t| t > idle_start)
            })
            .then_some(())
    })
    .await;
    wait_a_while(Duration::from_secs(1)).await;
    assert!(
        h.alerts_for(&resumes).is_empty(),
        "an episode that ended before its threshold is never alerted: {:?}",
        h.alerts_for(&resumes)
    );
    assert_eq!(h.alerts_for(&stays).len(), 1, "{:?}", h.alerts_for(&stays));
    h.app.shutdown().await;
}

/// A restart in the middle of an idle episode that ended during the downtime before its
/// threshold, with the threshold passed by the time the service is back: the resumed episode
/// log waits for the start backfill and is not alerted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_alert_an_episode_that_ended_during_the_downtime() {
    let threshold = Duration::from_secs(2);
    let sim = start_sim(2).await;
    let ids = sim.agent_ids().await.unwrap();
    let agent = ids[0].clone();
    for id in &ids {
        sim.set_routing_status(id, "INTERACTING").await.unwrap();
    }
    let slack = SlackReceiver::start().await;
    let db = temp_db_path();
    let opts = quick(2, threshold);

    let (app, base) = start_ready(&sim, &slack, &db, &opts).await;
    sim.set_routing_status(&agent, "IDLE").await.unwrap();
    let idle_start = sim.user(&agent).await.unwrap().unwrap().routing_start;
    wait_for("the idle episode seen", DEADLINE, || async {
        let rows = routing_history(&base, &agent).await?;
        rows.iter().any(|r| r["state"] == "IDLE").then_some(())
    })
    .await;
    app.shutdown().await;

    // While the service is down the agent goes back to work before the threshold, and the
    // threshold passes.
    sim.set_routing_status(&agent, "INTERACTING").await.unwrap();
    let threshold_at = idle_start + chrono::TimeDelta::from_std(threshold).unwrap();
    wait_for("the threshold passed", DEADLINE, || async {
        (sim.now().await.ok()? > threshold_at).then_some(())
    })
    .await;

    let app = App::start(config_for(&sim, &slack, &db, &opts))
        .await
        .unwrap();
    let base = format!("http://{}", app.api_addr());
    let run = wait_start_backfill(&base).await;
    assert!(run["error"].is_null(), "{run}");
    wait_a_while(threshold).await;
    let messages: Vec<_> = slack
        .received()
        .iter()
        .filter(|r| r.body.to_string().contains(&agent))
        .map(|r| r.body.to_string())
        .collect();
    assert!(messages.is_empty(), "{messages:?}");
    app.shutdown().await;
}

//! `GET /api/v1/agents` lists exactly the monitored agents: a user who leaves the monitored
//! set (re-listing) or is gone at a restart loses its `agents` and `episodes` rows, while its
//! history stays. Against the simulator over loopback.

use std::collections::BTreeSet;
use std::time::Duration;

use agent_monitor::config::MembershipConfig;
use serde_json::Value;

use crate::helpers::{SlackReceiver, wait_for};
use crate::service::{Harness, Opts, start_ready, start_sim, temp_db_path};

const DEADLINE: Duration = Duration::from_secs(20);

/// The user ids `GET /api/v1/agents` at `base` lists, or `None` while it does not answer 200.
async fn listed(base: &str) -> Option<BTreeSet<String>> {
    let response = reqwest::get(format!("{base}/api/v1/agents")).await.ok()?;
    if response.status() != 200 {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    Some(
        body["data"]
            .as_array()?
            .iter()
            .filter_map(|a| a["user_id"].as_str().map(str::to_owned))
            .collect(),
    )
}

async fn wait_listed(base: &str, expected: &BTreeSet<String>) {
    wait_for(
        &format!("/api/v1/agents listing exactly {expected:?}"),
        DEADLINE,
        || async { (listed(base).await.as_ref() == Some(expected)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_leaves_the_monitored_set_leaves_the_current_state() {
    let h = Harness::start(Opts {
        agents: 3,
        membership: MembershipConfig {
            refresh: Duration::from_secs(1),
            ..MembershipConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let all: BTreeSet<String> = h.ids.iter().cloned().collect();
    wait_listed(&h.base, &all).await;
    let gone = h.ids[2].clone();
    h.wait_state(&gone, "routing", "IDLE").await;

    h.sim.deactivate_user(&gone).await.unwrap();
    let rest: BTreeSet<String> = h.ids[..2].iter().cloned().collect();
    wait_listed(&h.base, &rest).await;
    let (_, ready) = h.get("/readyz").await;
    assert_eq!(ready["agents"], 2, "{ready}");
    // Its history is kept.
    assert!(!h.history(&gone, "routing").await.is_empty());
    assert_eq!(
        h.sql_count(&format!(
            "SELECT COUNT(*) FROM agents WHERE user_id = '{gone}'"
        ))
        .await,
        0
    );
    // The agents still monitored keep updating their rows.
    h.sim
        .set_routing_status(&h.ids[0], "INTERACTING")
        .await
        .unwrap();
    wait_for("the remaining agent's row updated", DEADLINE, || async {
        let (_, body) = h.get("/api/v1/agents").await;
        body["data"]
            .as_array()?
            .iter()
            .any(|a| a["user_id"] == h.ids[0].as_str() && a["routing_status"] == "INTERACTING")
            .then_some(())
    })
    .await;
    assert_eq!(listed(&h.base).await.unwrap(), rest);
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_fewer_users_lists_only_those() {
    let sim = start_sim(5).await;
    let slack = SlackReceiver::start().await;
    let db = temp_db_path();
    let opts = Opts {
        agents: 5,
        ..Opts::default()
    };
    let ids = sim.agent_ids().await.unwrap();
    let (app, base) = start_ready(&sim, &slack, &db, &opts).await;
    wait_listed(&base, &ids.iter().cloned().collect()).await;
    app.shutdown().await;

    for gone in &ids[2..] {
        sim.deactivate_user(gone).await.unwrap();
    }
    let (app, base) = start_ready(&sim, &slack, &db, &opts).await;
    let kept: BTreeSet<String> = ids[..2].iter().cloned().collect();
    wait_listed(&base, &kept).await;
    let (_, ready): (u16, Value) = {
        let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    };
    assert_eq!(ready["agents"], 2, "{ready}");
    // History of the users no longer monitored is kept.
    let rows = crate::service::routing_history(&base, &ids[4])
        .await
        .unwrap();
    assert!(
        !rows.is_empty(),
        "history of a user no longer monitored kept"
    );
    app.shutdown().await;
}

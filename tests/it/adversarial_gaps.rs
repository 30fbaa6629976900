//! Adversarial review of issue 3 (gap backfill, re-listing, rollover, clock, rate budget):
//! a hostile Genesys, a broken network or a careless operator, against the real service and
//! the simulator over loopback.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agent_monitor::app::App;
use agent_monitor::config::MembershipConfig;

use crate::helpers::{SlackReceiver, wait_for};
use crate::service::{
    Harness, Opts, config_for, routing_history, start_ready, start_sim, temp_db_path,
};

const DEADLINE: Duration = Duration::from_secs(30);

fn relisting_every_second(agents: usize) -> Opts {
    Opts {
        agents,
        membership: MembershipConfig {
            refresh: Duration::from_secs(1),
            ..MembershipConfig::default()
        },
        ..Opts::default()
    }
}

/// A 200 page of `GET /api/v2/users` without entities (a transient hiccup of the directory)
/// must not be taken for "every user was deactivated": no agent actor is stopped, no channel
/// is left. Only a confirmed empty listing drops everyone (as a real mass deactivation does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_empty_user_listing_does_not_drop_every_agent() {
    let h = Harness::start(relisting_every_second(3)).await;
    let (_, ready) = h.get("/readyz").await;
    assert_eq!(ready["agents"], 3, "{ready}");
    let channels_before = h.sim.channel_history().await.unwrap().len();
    let listings_before = h.sim.request_count("GET", "/api/v2/users").await.unwrap();

    // The next listing answers 200 with an error-shaped body: no `entities`, so an empty page.
    h.sim
        .fail_next("GET", "/api/v2/users", 200, None, 1)
        .await
        .unwrap();

    // Watch through three more listings (the empty one and two good ones).
    let fewest = AtomicU64::new(3);
    wait_for("three more user listings", DEADLINE, || async {
        let (_, ready) = h.get("/readyz").await;
        fewest.fetch_min(ready["agents"].as_u64().unwrap_or(0), Ordering::SeqCst);
        let listings = h.sim.request_count("GET", "/api/v2/users").await.unwrap();
        (listings >= listings_before + 3).then_some(())
    })
    .await;
    assert_eq!(
        fewest.load(Ordering::SeqCst),
        3,
        "an empty page stopped agent actors"
    );
    assert_eq!(
        h.sim.channel_history().await.unwrap().len(),
        channels_before,
        "an empty page retired the channel and made a new one"
    );

    // A real mass deactivation is still applied.
    for id in &h.ids {
        h.sim.deactivate_user(id).await.unwrap();
    }
    wait_for("every agent dropped", DEADLINE, || async {
        let (_, ready) = h.get("/readyz").await;
        (ready["agents"] == 0).then_some(())
    })
    .await;
    h.app.shutdown().await;
}

/// A `stream_state` mark in the future (a database restored from another deployment, a clock
/// offset once measured wrong) cannot say up to when the stream was complete. A start must
/// not take it for "nothing missed" and silently skip the start backfill: the downtime's
/// transitions would be lost. It backfills as for a mark too old to trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_state_in_the_future_still_backfills_the_downtime() {
    let sim = start_sim(1).await;
    let agent = sim.agent_ids().await.unwrap()[0].clone();
    sim.set_routing_status(&agent, "INTERACTING").await.unwrap();
    let slack = SlackReceiver::start().await;
    let db = temp_db_path();
    let opts = Opts {
        agents: 1,
        ..Opts::default()
    };
    let (app, _) = start_ready(&sim, &slack, &db, &opts).await;
    app.shutdown().await;

    // The mark says "complete until tomorrow".
    let conn = agent_monitor::db::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    let batch = agent_monitor::db::Batch {
        complete_until: Some(chrono::Utc::now() + chrono::TimeDelta::days(1)),
        ..Default::default()
    };
    agent_monitor::db::write_batch(&conn, &batch).await.unwrap();
    conn.close().await.unwrap();

    // While down: a NOT_RESPONDING only analytics can tell.
    sim.set_routing_status(&agent, "NOT_RESPONDING")
        .await
        .unwrap();
    sim.set_routing_status(&agent, "INTERACTING").await.unwrap();

    let app = App::start(config_for(&sim, &slack, &db, &opts))
        .await
        .unwrap();
    let base = format!("http://{}", app.api_addr());
    let rows = wait_for("the downtime NOT_RESPONDING", DEADLINE, || async {
        let rows = routing_history(&base, &agent).await?;
        rows.iter()
            .any(|r| r["state"] == "NOT_RESPONDING")
            .then_some(rows)
    })
    .await;
    assert!(
        rows.iter()
            .any(|r| r["state"] == "NOT_RESPONDING" && r["source"] == "backfill"),
        "{rows:?}"
    );
    app.shutdown().await;
}

/// The analytics query refused (403: `analytics:userDetail:view` missing, then granted): the
/// gap is kept and retried with backoff, never dropped, and recovered once the query answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_analytics_query_keeps_the_gap_until_it_answers() {
    let h = Harness::start(Opts {
        agents: 1,
        ping_interval: Duration::from_millis(300),
        silence_timeout: Duration::from_millis(1200),
        membership: MembershipConfig {
            backfill_margin: Duration::from_secs(1),
            ..MembershipConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let user = h.ids[0].clone();
    h.wait_state(&user, "routing", "IDLE").await;
    h.sim
        .fail_next(
            "POST",
            "/api/v2/analytics/users/details/query",
            403,
            None,
            3,
        )
        .await
        .unwrap();

    let before = h.connection(0).await["reconnects"].as_u64().unwrap_or(0);
    h.sim.set_silent(true).await.unwrap();
    h.sim
        .set_routing_status(&user, "NOT_RESPONDING")
        .await
        .unwrap();
    h.sim.set_routing_status(&user, "IDLE").await.unwrap();
    wait_for("the service noticed the silence", DEADLINE, || async {
        let reconnects = h.connection(0).await["reconnects"].as_u64().unwrap_or(0);
        (reconnects > before).then_some(())
    })
    .await;
    h.sim.set_silent(false).await.unwrap();

    let row = h.wait_state(&user, "routing", "NOT_RESPONDING").await;
    assert_eq!(row["source"], "backfill", "{row}");
    let queries = h
        .sim
        .request_count("POST", "/api/v2/analytics/users/details/query")
        .await
        .unwrap();
    assert!(queries >= 4, "three refusals, then an answer: {queries}");
    h.app.shutdown().await;
}

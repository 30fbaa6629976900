//! Membership changes (issue 3): periodic re-listing of the monitored users, subscriptions
//! changed by difference, agent actors started and stopped, all against the simulator over
//! loopback.

use std::time::Duration;

use agent_monitor::config::MembershipConfig;

use crate::helpers::wait_for;
use crate::service::{Harness, Opts};

const DEADLINE: Duration = Duration::from_secs(20);

fn relisting_every_second() -> Opts {
    Opts {
        agents: 3,
        membership: MembershipConfig {
            refresh: Duration::from_secs(1),
            ..MembershipConfig::default()
        },
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_is_subscribed_snapshotted_and_streamed() {
    let h = Harness::start(relisting_every_second()).await;
    let channel = h.sim.channels().await.unwrap()[0].clone();
    assert_eq!(channel.topics, 3);

    let new = h.sim.add_user("Newly Hired").await.unwrap();
    // The re-listing finds the user: one more topic on the same channel (no new channel) ...
    wait_for("the new user's topic", DEADLINE, || async {
        let channels = h.sim.channels().await.unwrap();
        (channels.len() == 1 && channels[0].topics == 4).then_some(())
    })
    .await;
    // ... a snapshot row for the user ...
    h.wait_state(&new, "routing", "IDLE").await;
    // ... and its events from now on.
    h.sim.set_routing_status(&new, "INTERACTING").await.unwrap();
    let row = h.wait_state(&new, "routing", "INTERACTING").await;
    assert_eq!(row["source"], "stream");
    let (_, ready) = h.get("/readyz").await;
    assert_eq!(ready["agents"], 4, "{ready}");
    assert_eq!(ready["connections"][0]["topics"], 4, "{ready}");
    h.app.shutdown().await;
}

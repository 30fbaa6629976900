//! Simulator users: deactivation and divisions (`GET /api/v2/users`, reference §6).

use agent_monitor::protocol::UserEntityListing;
use agent_monitor::sim::{HOME_DIVISION_ID, SimConfig};

use crate::sim_protocol::{Harness, quiet, start};

async fn listed(h: &Harness, query: &str) -> Vec<(String, String, String)> {
    let page = h
        .get_json(&format!("/api/v2/users?pageSize=500&{query}"))
        .await;
    let typed: UserEntityListing = serde_json::from_value(page.clone()).unwrap();
    assert_eq!(
        typed.entities.len(),
        page["total"].as_u64().unwrap() as usize
    );
    page["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_string(),
                u["state"].as_str().unwrap().to_string(),
                u["division"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn deactivated_users_leave_the_active_listing_but_still_answer() {
    let h = start(quiet()).await;
    let ids = h.sim.agent_ids().await.unwrap();
    h.sim.deactivate_user(&ids[1].to_uppercase()).await.unwrap();
    let active: Vec<String> = listed(&h, "state=active")
        .await
        .into_iter()
        .map(|u| u.0)
        .collect();
    assert_eq!(active, vec![ids[0].clone(), ids[2].clone()]);
    let default: Vec<String> = listed(&h, "").await.into_iter().map(|u| u.0).collect();
    assert_eq!(default, active);
    assert_eq!(
        listed(&h, "state=inactive").await,
        vec![(ids[1].clone(), "inactive".into(), HOME_DIVISION_ID.into())]
    );
    assert_eq!(listed(&h, "state=any").await.len(), 3);
    assert!(listed(&h, "state=deleted").await.is_empty());
    let status = h
        .get_json(&format!("/api/v2/users/{}/routingstatus", ids[1]))
        .await;
    assert_eq!(status["status"], "IDLE");
    let presence = h
        .get(&format!("/api/v2/users/{}/presences/purecloud", ids[1]))
        .await;
    assert_eq!(presence.status(), 200);
    assert!(h.sim.deactivate_user("nobody").await.is_err());
}

#[tokio::test]
async fn users_are_filtered_by_repeated_division_ids() {
    let (a, b, c) = ("div-a", "div-b", "DIV-C");
    let h = start(SimConfig {
        agents: 4,
        division_ids: vec![a.into(), b.into()],
        ..quiet()
    })
    .await;
    let ids = h.sim.agent_ids().await.unwrap();
    let late = h.sim.add_user_in_division("Late", c).await.unwrap();
    let all = listed(&h, "").await;
    let divisions: Vec<&str> = all.iter().map(|u| u.2.as_str()).collect();
    assert_eq!(divisions, vec![a, b, a, b, "div-c"]);

    let only_a: Vec<String> = listed(&h, "divisionId=div-a")
        .await
        .into_iter()
        .map(|u| u.0)
        .collect();
    assert_eq!(only_a, vec![ids[0].clone(), ids[2].clone()]);
    let b_and_c: Vec<String> = listed(&h, "divisionId=div-b&divisionId=div-c")
        .await
        .into_iter()
        .map(|u| u.0)
        .collect();
    assert_eq!(b_and_c, vec![ids[1].clone(), ids[3].clone(), late]);
    assert!(listed(&h, "divisionId=nope").await.is_empty());
    // The filter survives paging links.
    let page = h
        .get_json("/api/v2/users?pageSize=1&divisionId=div-a&divisionId=div-b")
        .await;
    assert_eq!(page["total"], 4);
    let next = page["nextUri"].as_str().unwrap();
    assert!(next.contains("divisionId=div-a&divisionId=div-b"), "{next}");
}

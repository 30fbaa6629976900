//! Figure 6, start-up: 10,000 agents, the simulator with realistic paging (`GET
//! /api/v2/users` pages of at most 500) and Genesys's rate limit (300 requests a minute per
//! token, 429 beyond), the service with its default rate budget (`GENESYS_RATE_LIMIT` 300).
//! Time from `App::start` to every agent snapshotted (two bootstrap rows each) and every
//! channel subscribed (`/readyz` ready), with the requests it took and the 429s seen.

use std::time::{Duration, Instant};

use crate::common::{Ctx, emit, runtime, skipped};
use crate::service::{Knobs, Service, fresh_db, remove_db, start_sim};

pub fn run(ctx: &Ctx) {
    let agents = ctx.pick(10_000, 10_000);
    let db_path = fresh_db("startup");
    let rt = runtime();
    let done = rt.block_on(async {
        let sim = start_sim(agents, |c| c.rate_limit_per_minute = Some(300)).await;
        let started = Instant::now();
        let svc = Service::start(sim, &db_path, &Knobs::default()).await;
        let up = svc
            .wait_ready_with_rows(2 * agents as i64, started, Duration::from_secs(300))
            .await;
        let requests = svc.sim.request_count("*", "/api/").await.unwrap_or(0);
        let users_pages = svc
            .sim
            .request_count("GET", "/api/v2/users")
            .await
            .unwrap_or(0);
        let subscriptions = svc
            .sim
            .request_count("*", "/api/v2/notifications/channels")
            .await
            .unwrap_or(0);
        let limited = svc.sim.rate_limited_requests().await.unwrap_or(u64::MAX);
        let (_, ready) = svc.readyz().await;
        let channels = ready["connections"].as_array().map_or(0, |c| c.len());
        let subscribed = ready["connections"]
            .as_array()
            .map_or(0, |c| c.iter().filter(|c| c["subscribed"] == true).count());
        eprintln!(
            "# startup: {agents} agents, {channels} channels ({subscribed} subscribed), \
             {users_pages} GET /api/v2/users*, {subscriptions} channel/subscription requests"
        );
        svc.stop().await;
        up.map(|up| (up, requests, limited))
    });
    drop(rt);
    remove_db(&db_path);
    let Some((up, requests, limited)) = done else {
        skipped(
            "startup",
            "not ready with every agent snapshotted within 300 s",
        );
        return;
    };
    emit(
        &format!("startup.{}k.ready", agents / 1000),
        up.as_secs_f64() * 1000.0,
        "ms(App::start_to_ready_and_2_bootstrap_rows_per_agent)",
    );
    emit("startup.requests", requests as f64, "api_requests");
    emit("startup.rate_limited", limited as f64, "429s(must_be_0)");
}

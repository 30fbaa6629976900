//! Simulator rate limit per token (reference §8) over loopback HTTP.

use agent_monitor::sim::SimConfig;
use serde_json::Value;

use crate::fixtures::assert_same_shape;
use crate::sim_protocol::{quiet, request_token, start};

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test]
async fn requests_over_the_limit_get_429_with_retry_hints() {
    let h = start(SimConfig {
        rate_limit_per_minute: Some(3),
        ..quiet()
    })
    .await;
    for n in 1..=3u64 {
        let ok = h.get("/api/v2/date").await;
        assert_eq!(ok.status(), 200);
        assert_eq!(header(&ok, "inin-ratelimit-count"), Some(n));
        assert_eq!(header(&ok, "inin-ratelimit-allowed"), Some(3));
        let reset = header(&ok, "inin-ratelimit-reset").unwrap();
        assert!((1..=60).contains(&reset));
    }
    let limited = h.get("/api/v2/users").await;
    assert_eq!(limited.status(), 429);
    let retry_after = header(&limited, "Retry-After").unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(header(&limited, "inin-ratelimit-reset"), Some(retry_after));
    let body: Value = limited.json().await.unwrap();
    assert_same_shape("error_429.json", &body);
    assert_eq!(body["code"], "too.many.requests.retry.after");
    assert_eq!(
        body["message"],
        format!("Rate limit exceeded the maximum. Retry the request in [{retry_after}] seconds")
    );
    assert_eq!(h.sim.rate_limited_requests().await.unwrap(), 1);

    // Per token: a new token has its own window; the login host is not limited.
    let fresh = request_token(&h.sim, &h.http).await;
    let ok = h
        .http
        .get(h.url("/api/v2/date"))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "inin-ratelimit-count"), Some(1));

    // Lifting the limit at run time.
    h.sim.set_rate_limit(None).await.unwrap();
    let ok = h.get("/api/v2/date").await;
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().get("inin-ratelimit-count").is_none());
    assert_eq!(h.sim.rate_limited_requests().await.unwrap(), 1);
}

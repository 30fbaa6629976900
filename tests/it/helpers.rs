//! Test harness: a local Slack receiver, the service started against the simulator, and
//! condition waits with deadlines (never bare sleeps).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Response, Route, handler, http::StatusCode};

/// Installs the rustls provider and a test log subscriber (`TEST_LOG=1` to see logs).
pub fn init() {
    agent_monitor::app::install_crypto_provider();
    if std::env::var_os("TEST_LOG").is_some() {
        agent_monitor::telemetry::init();
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets `time` pass while polling a deadline (for "nothing more happens" checks: a quiet
/// period after which a count must not have grown).
pub async fn wait_a_while(time: Duration) {
    let until = Instant::now() + time;
    wait_for("time to pass", time + Duration::from_secs(30), || async {
        (Instant::now() >= until).then_some(())
    })
    .await;
}

/// Writes a rules file (TOML) to a fresh temporary path.
pub fn rules_file(text: &str) -> std::path::PathBuf {
    let path = crate::service::temp_db_path().with_extension("rules.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One request the Slack receiver got.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct SlackRequest {
    pub body: serde_json::Value,
    pub at: Instant,
}

/// A scripted reply: status, optional `Retry-After` seconds, body.
#[derive(Debug, Clone)]
pub struct SlackReply {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: String,
}

#[derive(Default)]
struct SlackInner {
    received: Vec<SlackRequest>,
    script: VecDeque<SlackReply>,
}

/// A local stand-in for a Slack incoming webhook: records every POST and answers from a script
/// (then `200 ok`).
#[derive(Clone)]
pub struct SlackReceiver {
    pub url: String,
    inner: Arc<Mutex<SlackInner>>,
}

#[handler]
async fn slack_hook(inner: Data<&Arc<Mutex<SlackInner>>>, body: String) -> Response {
    let reply = {
        let mut inner = inner.lock().unwrap();
        let body = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        inner.received.push(SlackRequest {
            body,
            at: Instant::now(),
        });
        inner.script.pop_front()
    };
    let reply = reply.unwrap_or(SlackReply {
        status: 200,
        retry_after: None,
        body: "ok".into(),
    });
    let mut response = Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
    if let Some(secs) = reply.retry_after {
        response = response.header("Retry-After", secs.to_string());
    }
    response.body(reply.body)
}

impl SlackReceiver {
    pub async fn start() -> SlackReceiver {
        let inner = Arc::new(Mutex::new(SlackInner::default()));
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr: SocketAddr = *acceptor.local_addr()[0].as_socket_addr().unwrap();
        let app = Route::new()
            .at("/services/T000/B000/XXXX", poem::post(slack_hook))
            .data(inner.clone());
        tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        SlackReceiver {
            url: format!("http://{addr}/services/T000/B000/XXXX"),
            inner,
        }
    }

    /// Queue replies for the next requests.
    #[allow(dead_code)]
    pub fn script(&self, replies: impl IntoIterator<Item = SlackReply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    pub fn received(&self) -> Vec<SlackRequest> {
        self.inner.lock().unwrap().received.clone()
    }
}

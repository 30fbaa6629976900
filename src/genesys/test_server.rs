//! A scriptable HTTP server for unit tests (poem on `127.0.0.1:0`): a closure decides each
//! answer from the request, and every request is recorded for assertions. Shared by the Genesys
//! client tests and the Slack delivery tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::endpoint::make;
use poem::http::StatusCode;
use poem::listener::TcpAcceptor;
use poem::{Request, Response, Server};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string, `""` when absent.
    pub query: String,
    /// Header names are lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of one query parameter (no percent-decoding; tests use plain values).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// The answer to give.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (to make concurrent callers overlap).
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// A running server; stops when dropped.
pub(crate) struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let handler: Arc<Handler> = Arc::new(handler);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
        let recorded = requests.clone();
        let endpoint = make(move |mut req: Request| {
            let handler = handler.clone();
            let recorded = recorded.clone();
            async move {
                let body = req.take_body().into_string().await.unwrap_or_default();
                let seen = Recorded {
                    method: req.method().to_string(),
                    path: req.uri().path().to_string(),
                    query: req.uri().query().unwrap_or("").to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|(n, v)| {
                            (
                                n.as_str().to_ascii_lowercase(),
                                v.to_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect(),
                    body,
                };
                recorded.lock().unwrap().push(seen.clone());
                let reply = handler(&seen);
                if !reply.delay.is_zero() {
                    tokio::time::sleep(reply.delay).await;
                }
                let mut builder =
                    Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
                for (name, value) in &reply.headers {
                    builder = builder.header(name.as_str(), value.as_str());
                }
                builder.body(reply.body)
            }
        });
        let task = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(endpoint).await;
        });
        TestServer {
            base: format!("http://{addr}"),
            requests,
            task,
        }
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// How many requests had this path.
    pub fn count(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `condition` every 10 ms until it holds; panics after `timeout`.
#[allow(dead_code)] // kept for unit tests; the Slack actor tests moved to tests/it/delivery.rs
pub(crate) async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every log line written while the guard of [`capture_logs`] lives (all levels, all crates,
/// reqwest and hyper included).
#[derive(Clone, Default)]
pub(crate) struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures TRACE-level logs of this thread (use with a current-thread `#[tokio::test]`).
pub(crate) fn capture_logs() -> (LogBuffer, tracing::subscriber::DefaultGuard) {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// A Genesys configuration pointing both base URLs at `server` (default rate budget).
pub(crate) fn test_config(server: &TestServer) -> crate::config::GenesysConfig {
    let base = url::Url::parse(&server.base).unwrap();
    crate::config::GenesysConfig {
        endpoints: crate::config::GenesysEndpoints {
            api_base: base.clone(),
            login_base: base,
            region: None,
        },
        credentials: crate::config::Credentials {
            client_id: "test-client".into(),
            client_secret: crate::secret::Secret::new("s3cr3t-value"),
        },
        ping_interval: Duration::from_secs(20),
        silence_timeout: Duration::from_secs(60),
        topics_per_channel: 1000,
        request_timeout: Duration::from_secs(5),
        rate_limit_per_minute: crate::config::DEFAULT_GENESYS_RATE_LIMIT,
    }
}

/// A client of `server` with [`crate::genesys::RetryPolicy::fast`].
pub(crate) fn test_client(server: &TestServer) -> crate::genesys::GenesysClient {
    crate::genesys::GenesysClient::with_retry_policy(
        &test_config(server),
        crate::genesys::RetryPolicy::fast(),
    )
    .unwrap()
}

/// A day-long token for `POST /oauth/token`; `None` for any other path.
pub(crate) fn token_reply(r: &Recorded) -> Option<Reply> {
    (r.path == "/oauth/token").then(|| {
        Reply::json(
            200,
            serde_json::json!({"access_token": "tok", "token_type": "bearer", "expires_in": 86_399}),
        )
    })
}

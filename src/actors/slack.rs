#![warn(missing_docs)]
//! The Slack actor: posts alerts to the incoming webhook, one at a time, and reports each
//! outcome to the persistence actor as `PersistMsg::AlertOutcome`.
//!
//! Deliveries are serial: while one alert waits out a 429 or a backoff, the next ones queue in
//! the mailbox, which is the "pause the whole webhook queue" the alerting reference asks for
//! (`shared/alerting.md` §4.9–4.10). On top of that a token bucket (burst 3, 1 message per
//! second) keeps us under Slack's "1 message per second" webhook limit. A delivery failure is
//! never an `Err` from `handle` (that would restart the actor): it becomes a `Failed` outcome.
//!
//! Because a handler is not interrupted by `stop`, stopping waits for the delivery in progress
//! (at most `max_attempts` × the 10 s timeout plus backoffs).

use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::actors::persistence::PersistMsg;
use crate::config::SlackConfig;
use crate::domain::{Alert, AlertOutcome, DeliveryStatus};
use crate::slack::{SlackWebhook, alert_message, text_only_message};

/// Messages of the Slack actor.
#[derive(Debug)]
pub enum SlackMsg {
    /// Deliver one alert; the outcome goes to the persistence actor as `PersistMsg::AlertOutcome`.
    Alert(Alert),
    /// An episode ended: a firing message of it still waiting for a retry no longer matters.
    EpisodeEnded {
        /// `<rule>:<user_id>:<episode start in ms>`.
        episode_key: String,
    },
    /// The status of every destination, for `/readyz`.
    Status(ractor::RpcReplyPort<Vec<crate::health::DestinationStatus>>),
}

/// The Slack actor (ractor). Spawn it with [`SlackArgs`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SlackActor;

/// Arguments of [`SlackActor`].
#[derive(Debug, Clone)]
pub struct SlackArgs {
    /// Webhook URL (`None`: alerts are only logged, outcome `not_configured`), POST timeout and
    /// attempts.
    pub config: SlackConfig,
    /// Where outcomes go (`PersistMsg::AlertOutcome`).
    pub persistence: ActorRef<PersistMsg>,
}

/// State of [`SlackActor`].
pub struct SlackState {
    webhook: Option<SlackWebhook>,
    persistence: ActorRef<PersistMsg>,
    pacer: Pacer,
}

impl Actor for SlackActor {
    type Msg = SlackMsg;
    type State = SlackState;
    type Arguments = SlackArgs;

    /// Builds the HTTP client; fails only if it cannot be built (a TLS setup problem).
    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SlackArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let webhook = match args.config.webhook_url.clone() {
            Some(url) => Some(SlackWebhook::new(url, &args.config)?),
            None => {
                info!("no Slack webhook configured: alerts are logged and stored only");
                None
            }
        };
        Ok(SlackState {
            webhook,
            persistence: args.persistence,
            pacer: Pacer::new(3, Duration::from_secs(1)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SlackMsg::EpisodeEnded { .. } => {}
            SlackMsg::Status(reply) => {
                let _ = reply.send(Vec::new());
            }
            SlackMsg::Alert(alert) => {
                let outcome = deliver(state, &alert).await;
                crate::metrics::delivery_dequeued();
                if let Err(e) = state
                    .persistence
                    .cast(PersistMsg::AlertOutcome(outcome.clone()))
                {
                    warn!(alert_key = %outcome.alert_key, error = %e,
                          "could not report an alert outcome to the persistence actor");
                }
            }
        }
        Ok(())
    }
}

/// Delivers one alert and describes how it ended. Payload refusals (`invalid_blocks`, …) get
/// one text-only retry (alerting reference §4.11).
async fn deliver(state: &mut SlackState, alert: &Alert) -> AlertOutcome {
    let outcome = |status, error, attempts| AlertOutcome {
        alert_key: alert.alert_key.clone(),
        status,
        error,
        attempts,
        finished_at: Utc::now(),
    };
    let Some(webhook) = state.webhook.as_ref() else {
        info!(alert_key = %alert.alert_key, user_id = %alert.user_id,
              user_name = alert.user_name.as_deref().unwrap_or(""), state = %alert.state,
              since = %alert.since, held_s = alert.held_for().as_secs(),
              "idle alert (no Slack webhook configured)");
        return outcome(DeliveryStatus::NotConfigured, None, 0);
    };
    state.pacer.take().await;
    let first = webhook.post(&alert_message(alert)).await;
    let result = match first {
        Err(e) if e.is_payload_error() => {
            warn!(alert_key = %alert.alert_key, error = %e.slack_error(),
                  "Slack refused the blocks: retrying once as text only");
            state.pacer.take().await;
            let spent = e.attempts();
            match webhook.post(&text_only_message(alert)).await {
                Ok(d) => Ok(d.attempts + spent),
                Err(e2) => Err((e2.slack_error(), e2.attempts() + spent, e2.to_string())),
            }
        }
        Ok(d) => Ok(d.attempts),
        Err(e) => Err((e.slack_error(), e.attempts(), e.to_string())),
    };
    match result {
        Ok(attempts) => {
            info!(alert_key = %alert.alert_key, attempts, "alert delivered to Slack");
            crate::metrics::alert_delivered();
            outcome(DeliveryStatus::Delivered, None, attempts)
        }
        Err((error, attempts, description)) => {
            warn!(alert_key = %alert.alert_key, attempts, error = %description,
                  "alert delivery to Slack failed");
            crate::metrics::alert_failed(&error);
            outcome(DeliveryStatus::Failed, Some(error), attempts)
        }
    }
}

/// A token bucket: `capacity` sends at once, then one per `every`.
struct Pacer {
    capacity: f64,
    tokens: f64,
    every: Duration,
    updated: Instant,
}

impl Pacer {
    fn new(capacity: u32, every: Duration) -> Self {
        Pacer {
            capacity: f64::from(capacity),
            tokens: f64::from(capacity),
            every,
            updated: Instant::now(),
        }
    }

    /// Waits until a send is allowed and uses it.
    async fn take(&mut self) {
        let now = Instant::now();
        let refill = now.duration_since(self.updated).as_secs_f64() / self.every.as_secs_f64();
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.updated = now;
        if self.tokens < 1.0 {
            let wait = self.every.mul_f64(1.0 - self.tokens);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.updated = Instant::now();
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::{Value, json};
    use tokio::sync::mpsc;

    use super::*;
    use crate::domain::{UserId, parse_timestamp};
    use crate::genesys::test_server::{Reply, TestServer, wait_until};
    use crate::secret::Secret;

    /// Stands in for the persistence actor: forwards every outcome to a channel.
    struct FakePersistence;

    impl Actor for FakePersistence {
        type Msg = PersistMsg;
        type State = mpsc::UnboundedSender<AlertOutcome>;
        type Arguments = mpsc::UnboundedSender<AlertOutcome>;

        async fn pre_start(
            &self,
            _myself: ActorRef<PersistMsg>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle(
            &self,
            _myself: ActorRef<PersistMsg>,
            message: PersistMsg,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let PersistMsg::AlertOutcome(outcome) = message {
                let _ = tx.send(outcome);
            }
            Ok(())
        }
    }

    fn alert(key: &str) -> Alert {
        Alert {
            alert_key: key.into(),
            episode_key: String::new(),
            severity: "warning".into(),
            destination: None,
            kind: crate::domain::AlertKind::Firing { repeat: 0 },
            muted: None,
            rule: "idle".into(),
            user_id: UserId::parse("U1").unwrap(),
            user_name: Some("Jane <Doe>".into()),
            state: "routing IDLE".into(),
            since: parse_timestamp("2024-05-01T10:15:30Z").unwrap(),
            threshold: Duration::from_secs(600),
            fired_at: parse_timestamp("2024-05-01T10:30:30Z").unwrap(),
        }
    }

    async fn spawn(
        webhook_url: Option<String>,
    ) -> (ActorRef<SlackMsg>, mpsc::UnboundedReceiver<AlertOutcome>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (persistence, _) = Actor::spawn(None, FakePersistence, tx).await.unwrap();
        let config = SlackConfig {
            webhook_url: webhook_url.map(Secret::new),
            timeout: Duration::from_secs(5),
            max_attempts: 3,
        };
        let (slack, _) = Actor::spawn(
            None,
            SlackActor,
            SlackArgs {
                config,
                persistence,
            },
        )
        .await
        .unwrap();
        (slack, rx)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<AlertOutcome>) -> AlertOutcome {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an outcome within 10 s")
            .unwrap()
    }

    /// A receiver answering each POST from `script` in turn, then `ok`.
    async fn receiver(script: Vec<Reply>) -> TestServer {
        let n = Arc::new(AtomicUsize::new(0));
        TestServer::start(move |_| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            script
                .get(i)
                .cloned()
                .unwrap_or_else(|| Reply::text(200, "ok"))
        })
        .await
    }

    #[tokio::test]
    async fn without_a_webhook_the_alert_is_logged_as_not_configured() {
        let (slack, mut rx) = spawn(None).await;
        slack.cast(SlackMsg::Alert(alert("k0"))).unwrap();
        let outcome = next(&mut rx).await;
        assert_eq!(outcome.alert_key, "k0");
        assert_eq!(outcome.status, DeliveryStatus::NotConfigured);
        assert_eq!(outcome.attempts, 0);
        assert_eq!(outcome.error, None);
    }

    #[tokio::test]
    async fn delivered_alerts_carry_the_blocks() {
        let server = receiver(vec![]).await;
        let (slack, mut rx) = spawn(Some(format!("{}/services/T/B/SECRET", server.base))).await;
        slack.cast(SlackMsg::Alert(alert("k1"))).unwrap();
        let outcome = next(&mut rx).await;
        assert_eq!(outcome.status, DeliveryStatus::Delivered);
        assert_eq!(outcome.attempts, 1);
        assert_eq!(outcome.error, None);
        let sent: Value = serde_json::from_str(&server.requests()[0].body).unwrap();
        assert_eq!(sent, alert_message(&alert("k1")));
        assert_eq!(sent["blocks"][0]["type"], "header");
        assert_eq!(
            sent["blocks"][1]["fields"][0]["text"],
            "*Agent*\nJane &lt;Doe&gt;"
        );
        assert_eq!(
            sent["blocks"][1]["fields"][3]["text"],
            "*Idle for*\n15m 00s"
        );
    }

    #[tokio::test]
    async fn rate_limit_then_ok() {
        let server = receiver(vec![
            Reply::json(429, json!({"ok": false, "error": "rate_limited"}))
                .header("Retry-After", "1"),
        ])
        .await;
        let (slack, mut rx) = spawn(Some(format!("{}/services/T/B/SECRET", server.base))).await;
        let started = std::time::Instant::now();
        slack.cast(SlackMsg::Alert(alert("k2"))).unwrap();
        let outcome = next(&mut rx).await;
        assert_eq!(outcome.status, DeliveryStatus::Delivered);
        assert_eq!(outcome.attempts, 2);
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn server_error_then_ok() {
        let server = receiver(vec![Reply::text(500, "rollup_error")]).await;
        let (slack, mut rx) = spawn(Some(format!("{}/services/T/B/SECRET", server.base))).await;
        slack.cast(SlackMsg::Alert(alert("k3"))).unwrap();
        let outcome = next(&mut rx).await;
        assert_eq!(outcome.status, DeliveryStatus::Delivered);
        assert_eq!(outcome.attempts, 2);
        let bodies: Vec<Value> = server
            .requests()
            .iter()
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect();
        assert_eq!(bodies[0], bodies[1], "the retry sends the same blocks");
    }

    #[tokio::test]
    async fn channel_not_found_is_a_permanent_failure() {
        let server = receiver(vec![Reply::text(404, "channel_not_found"); 5]).await;
        let (slack, mut rx) = spawn(Some(format!("{}/services/T/B/SECRET", server.base))).await;
        slack.cast(SlackMsg::Alert(alert("k4"))).unwrap();
        let outcome = next(&mut rx).await;
        assert_eq!(outcome.status, DeliveryStatus::Failed);
        assert_eq!(outcome.error.as_deref(), Some("channel_not_found"));
        assert_eq!(outcome.attempts, 1);
        assert_eq!(server.requests().len(), 1);

        // The actor survives a failure and delivers the next alert.
        slack.cast(SlackMsg::Alert(alert("k5"))).unwrap();
        let outcome = next(&mut rx).await;
        assert_eq!(outcome.alert_key, "k5");
        assert_eq!(outcome.status, DeliveryStatus::Failed);
        wait_until(Duration::from_secs(5), || server.requests().len() == 2).await;
    }

    #[tokio::test]
    async fn refused_blocks_are_retried_once_as_text() {
        let server = receiver(vec![Reply::text(400, "invalid_blocks")]).await;
        let (slack, mut rx) = spawn(Some(format!("{}/services/T/B/SECRET", server.base))).await;
        slack.cast(SlackMsg::Alert(alert("k6"))).unwrap();
        let outcome = next(&mut rx).await;
        assert_eq!(outcome.status, DeliveryStatus::Delivered);
        assert_eq!(outcome.attempts, 2);
        let second: Value = serde_json::from_str(&server.requests()[1].body).unwrap();
        assert_eq!(second, text_only_message(&alert("k6")));
    }
}

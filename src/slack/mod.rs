#![warn(missing_docs)]
//! Slack delivery: Block Kit message building ([`blocks`]) and the incoming-webhook client
//! ([`webhook`]). The actor that uses them is [`crate::actors::slack`].
//!
//! Facts: `shared/alerting.md` §1 (incoming webhooks: `ok` body on success, error strings,
//! 429 + `Retry-After`, Block Kit limits, escaping).

pub mod blocks;
pub mod webhook;

pub use blocks::{
    alert_message, alert_text, escape, group_message, group_text, group_text_only,
    text_only_message, webhook_body,
};
pub use webhook::{Answer, Endpoint, SetupError, classify};

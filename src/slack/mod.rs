#![warn(missing_docs)]
//! Slack delivery: Block Kit message building ([`blocks`]) and the incoming-webhook client
//! ([`webhook`]). The actor that uses them is [`crate::actors::slack`].
//!
//! Facts: `shared/alerting.md` §1 (incoming webhooks: `ok` body on success, error strings,
//! 429 + `Retry-After`, Block Kit limits, escaping).

pub mod blocks;
pub mod webhook;

pub use blocks::{alert_message, alert_text, escape, text_only_message};
pub use webhook::{Delivered, SlackError, SlackWebhook};

//! The Slack actor: posts alerts to the incoming webhook. (Implemented by the Slack work.)

use crate::domain::Alert;

/// Messages of the Slack actor.
#[derive(Debug)]
pub enum SlackMsg {
    /// Deliver one alert; the outcome goes to the persistence actor as `PersistMsg::AlertOutcome`.
    Alert(Alert),
}

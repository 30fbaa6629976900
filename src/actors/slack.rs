//! The Slack actor: posts alerts to the incoming webhook. (Implemented by the Slack work.)

use crate::domain::Alert;

/// Messages of the Slack actor.
#[derive(Debug)]
pub enum SlackMsg {
    /// Deliver one alert; the outcome goes to the persistence actor as `PersistMsg::AlertOutcome`.
    Alert(Alert),
}

// ---- STUB (lead's compile only; replaced by the wt-client branch) ----
/// Start-up arguments.
pub struct SlackArgs {
    pub config: crate::config::SlackConfig,
    pub persistence: ractor::ActorRef<crate::actors::persistence::PersistMsg>,
}
/// The Slack actor.
pub struct SlackActor;
impl ractor::Actor for SlackActor {
    type Msg = SlackMsg;
    type State = ();
    type Arguments = SlackArgs;
    async fn pre_start(
        &self,
        _m: ractor::ActorRef<SlackMsg>,
        _a: SlackArgs,
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}

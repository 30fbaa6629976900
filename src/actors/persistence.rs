//! The persistence actor: the only writer to the database. (Implemented by the storage work.)

use ractor::RpcReplyPort;

use crate::actors::Credit;
use crate::domain::{AgentCurrent, Alert, AlertOutcome, Transition};

/// Messages of the persistence actor.
#[derive(Debug)]
pub enum PersistMsg {
    /// Store one transition; the credit is released when its batch commits.
    Transition(Transition, Option<Credit>),
    /// Upsert the current state of one agent (`agents` table); the latest per user wins.
    Agent(AgentCurrent),
    /// Insert an alert record (status `pending`).
    AlertFired(Alert),
    /// Record how delivery ended.
    AlertOutcome(AlertOutcome),
    /// Commit everything buffered, then reply (used at shutdown and by tests).
    Flush(RpcReplyPort<Result<(), String>>),
    /// Is the database writable? Replies with the last write error, if any.
    Health(RpcReplyPort<DbHealth>),
    /// Internal: the flush timer.
    Tick,
}

/// The persistence actor's view of the database, for `/readyz`.
#[derive(Debug, Clone, PartialEq)]
pub struct DbHealth {
    pub writable: bool,
    /// Last write error (never contains the database URL's password).
    pub last_error: Option<String>,
    /// Rows buffered and not yet committed.
    pub buffered: usize,
}

// ---- STUB (lead's compile only; replaced by the wt-api branch) ----
/// Start-up arguments.
pub struct PersistenceArgs {
    pub db: sea_orm::DatabaseConnection,
    pub config: crate::config::PersistenceConfig,
}
/// The persistence actor.
pub struct PersistenceActor;
impl ractor::Actor for PersistenceActor {
    type Msg = PersistMsg;
    type State = ();
    type Arguments = PersistenceArgs;
    async fn pre_start(
        &self,
        _m: ractor::ActorRef<PersistMsg>,
        _a: PersistenceArgs,
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}

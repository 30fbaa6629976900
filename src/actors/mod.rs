//! The actor tree (see `actors.md`): a root [`supervisor`] restarts [`connection`] actors (one
//! per notification channel), which fan events out to one [`agent`] actor per user; agent actors
//! message the [`slack`] actor and the [`persistence`] actor, and arm their one episode deadline
//! at the shared [`deadline`] scheduler (a task, not an actor).
//!
//! Actors own their state and talk only by messages. The one piece of shared state is
//! [`Credit`]: a semaphore permit that travels with each transition from the WebSocket reader to
//! the persistence actor and is released when the row is committed, so a slow database pushes
//! back on the socket instead of growing a queue without bound.

pub mod agent;
pub mod connection;
pub mod deadline;
pub mod membership;
pub mod persistence;
pub mod retention;
pub mod slack;
pub mod supervisor;

/// Back-pressure token: one per transition accepted from Genesys and not yet committed.
/// Dropping it (after the commit) lets the reader take another event.
#[derive(Debug)]
pub struct Credit(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Credit {
    pub fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        Credit(permit)
    }
}

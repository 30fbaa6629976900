#![warn(missing_docs)]
//! Genesys Cloud REST client: OAuth client-credentials token cache, users with presence and
//! routing status, queue members, presence definitions, notification channels and subscriptions, server date.
//!
//! - [`GenesysClient`] (in `client.rs`): the calls, each documented with its API path.
//! - [`GenesysError`]: how a call failed; [`GenesysError::InvalidClient`] is fatal.
//! - [`RateBudget`]: the client-side rate budget (at most N requests in any 60 s, §8).
//! - [`backoff`]: [`RetryPolicy`] and the rate-limit hints, shared with [`crate::slack`].
//!
//! Protocol facts: `shared/genesys-cloud-protocol.md` §2 (OAuth), §3 (channels), §5–6 (users,
//! presence definitions), §8 (errors and rate limits).

pub mod backoff;
mod budget;
mod client;
mod error;
#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
mod tests;

pub use backoff::RetryPolicy;
pub use budget::{GENESYS_REQUESTS_PER_MINUTE, RateBudget};
pub use client::{
    GenesysClient, LEGACY_PRESENCE_PAGE_SIZE, QUEUE_MEMBERS_PAGE_SIZE, SubscribeOutcome,
    USERS_PAGE_SIZE, renew_margin,
};
pub use error::{GenesysError, error_chain};

//! sea-orm entities, one file per table. They are storage shapes only: the API has its own
//! serializable twins in `crate::api`, and the actors speak `crate::domain` types.
//!
//! Every instant is a `DateTimeUtc` column (`timestamptz` on PostgreSQL, RFC 3339 text on
//! SQLite), truncated to milliseconds before it is written so that text order is time order.

pub mod agent;
pub mod agent_status;
pub mod alert;
pub mod dead_letter;
pub mod health_probe;
pub mod silence;
pub mod stream_state;

//! `agent_status`: one row per presence or routing-status transition.
//!
//! Unique on (`user_id`, `kind`, `event_timestamp`): a duplicate delivery inserts nothing.

use sea_orm::entity::prelude::*;

/// One stored transition.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agent_status")]
pub struct Model {
    /// Autoincrement id; ties on `event_timestamp` are ordered by it.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Genesys user id (lowercase GUID).
    pub user_id: String,
    /// Display name at the time, if known.
    pub user_name: Option<String>,
    /// `presence` or `routing`.
    pub kind: String,
    /// Normalized, uppercase state (`ON_QUEUE`, `IDLE`, …).
    pub state: String,
    /// The state this one replaced, if known.
    pub previous_state: Option<String>,
    /// Org presence label (presence transitions only).
    pub org_presence: Option<String>,
    /// Org presence definition id (GUID, lowercase as Genesys sent it) of a presence row.
    pub presence_definition_id: Option<String>,
    /// Genesys's timestamp of the transition, UTC, milliseconds.
    pub event_timestamp: DateTimeUtc,
    /// When agent-monitor received it, UTC, milliseconds.
    pub ingested_at: DateTimeUtc,
    /// `stream`, `bootstrap` (later `backfill`).
    pub source: String,
}

/// No relations: rows refer to users by `user_id` only, without foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `stream_state`: up to which instant the notification stream is known to be complete (every
//! channel subscribed and connected, no socket lost), in Genesys time (UTC). A start with an
//! existing database backfills from there.

use sea_orm::entity::prelude::*;

/// One stream scope (today the single row `all`, `crate::db::STREAM_ALL`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stream_state")]
pub struct Model {
    /// The stream scope (`all`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Genesys time (UTC, milliseconds) up to which every transition was received.
    pub complete_until: DateTimeUtc,
    /// When the row was written (local UTC).
    pub updated_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `episodes`: the persisted episode log of each agent (the serialized
//! [`crate::rules::AgentEpisodes`]), so that after a restart nothing fires twice and repeats
//! continue on schedule.

use sea_orm::entity::prelude::*;

/// One agent's episodes.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "episodes")]
pub struct Model {
    /// Genesys user id (lowercase GUID).
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// JSON of `AgentEpisodes`.
    pub state: String,
    /// Last change, UTC.
    pub updated_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

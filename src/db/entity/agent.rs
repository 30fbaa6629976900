//! `agents`: the current state and the episode log of each monitored agent, one row per user.

use sea_orm::entity::prelude::*;

/// Current state of one agent.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    /// Genesys user id (lowercase GUID).
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// Display name, if known.
    pub user_name: Option<String>,
    /// Normalized system presence.
    pub presence: Option<String>,
    /// Org presence label.
    pub org_presence: Option<String>,
    /// Start of the current presence, UTC.
    pub presence_since: Option<DateTimeUtc>,
    /// Normalized routing status.
    pub routing_status: Option<String>,
    /// Start of the current routing status, UTC.
    pub routing_since: Option<DateTimeUtc>,
    /// Active conversations over all media types.
    pub active_conversations: i32,
    /// Start of the current idle episode, when idle, UTC.
    pub idle_since: Option<DateTimeUtc>,
    /// When the current state last changed, UTC.
    pub updated_at: DateTimeUtc,
    /// The agent's episode log, JSON of `rules::AgentEpisodes` (the rules' memory, resumed at
    /// start); `None` until the agent first wrote one.
    pub episodes: Option<String>,
}

/// No relations: rows refer to users by `user_id` only, without foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `silences`: alerts matching a silence are tracked and recorded but not sent.

use sea_orm::entity::prelude::*;

/// One silence.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "silences")]
pub struct Model {
    /// Autoincrement id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Only this rule (`None`: every rule).
    pub rule: Option<String>,
    /// Only this agent (`None`: every agent).
    pub user_id: Option<String>,
    /// End of the silence, UTC.
    pub until: DateTimeUtc,
    /// Why, for the record.
    pub comment: String,
    /// When it was created, UTC.
    pub created_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

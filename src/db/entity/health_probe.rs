//! `health_probe`: a one-row table the persistence actor writes to prove the database accepts
//! writes (`/readyz`).

use sea_orm::entity::prelude::*;

/// The single probe row (`id` = 1).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "health_probe")]
pub struct Model {
    /// Always 1.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    /// Last successful write check, UTC.
    pub checked_at: DateTimeUtc,
}

/// No relations: rows refer to users by `user_id` only, without foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

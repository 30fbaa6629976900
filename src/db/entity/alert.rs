//! `alerts`: every alert fired, with how its delivery ended.

use sea_orm::entity::prelude::*;

/// One alert record.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "alerts")]
pub struct Model {
    /// Autoincrement id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Unique per message: the episode key, `…:repeat-<n>` or `…:resolved`.
    #[sea_orm(unique)]
    pub alert_key: String,
    /// Rule name (`idle`).
    pub rule: String,
    /// Genesys user id (lowercase GUID).
    pub user_id: String,
    /// Display name, if known.
    pub user_name: Option<String>,
    /// Human-readable state (`routing IDLE`).
    pub state: String,
    /// Episode start, UTC.
    pub since: DateTimeUtc,
    /// Threshold passed, whole seconds.
    pub threshold_seconds: i64,
    /// When the alert fired, UTC.
    pub fired_at: DateTimeUtc,
    /// `pending`, `delivered`, `failed` or `not_configured`.
    pub delivery_status: String,
    /// Slack or transport error, if delivery failed.
    pub delivery_error: Option<String>,
    /// Delivery attempts made.
    pub attempts: i32,
    /// When Slack accepted it, UTC.
    pub delivered_at: Option<DateTimeUtc>,
    /// `<rule>:<user_id>:<episode start in ms>`: every message of one episode shares it.
    pub episode_key: String,
    /// `firing` or `resolved`.
    pub kind: String,
    /// 0 for the first firing, 1, 2, … for repeats.
    pub repeat: i32,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// Destination name (`None`: the default destination).
    pub destination: Option<String>,
    /// Total episode length for a resolved notice, whole seconds.
    pub resolved_duration_seconds: Option<i64>,
    /// Why it was recorded but not sent (`quiet hours`, `silenced: …`).
    pub muted: Option<String>,
}

/// No relations: rows refer to users by `user_id` only, without foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `dead_letters`: messages that could not be delivered for good, kept for operators. The
//! destination is named, never its URL.

use sea_orm::entity::prelude::*;

/// One undeliverable message.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dead_letters")]
pub struct Model {
    /// Autoincrement id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The alert message key.
    pub alert_key: String,
    /// Destination name.
    pub destination: String,
    /// Slack's error string or the last transport error.
    pub error: String,
    /// Delivery attempts made.
    pub attempts: i32,
    /// First attempt, UTC.
    pub first_attempt_at: DateTimeUtc,
    /// Last attempt, UTC.
    pub last_attempt_at: DateTimeUtc,
    /// Fingerprint of the payload.
    pub payload_hash: String,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

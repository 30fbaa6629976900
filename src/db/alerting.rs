//! Alerting data outside the hot path: the persisted episode logs (loaded once at start),
//! silences (written by the API: they are operator configuration, not event history, so the
//! persistence actor's single-writer rule for history does not apply), dead letters and the
//! filtered alert listing.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, Condition, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::entity::{agent, alert, dead_letter, silence};
use crate::domain::{Silence, UserId, truncate_to_millis};

/// Every agent's persisted episode log (JSON of `rules::AgentEpisodes`, the `episodes` column
/// of its `agents` row), by user; agents with none are left out. Errors: the database's.
pub async fn load_episodes(
    db: &impl sea_orm::ConnectionTrait,
) -> Result<HashMap<UserId, String>, DbErr> {
    let rows: Vec<(String, Option<String>)> = agent::Entity::find()
        .select_only()
        .column(agent::Column::UserId)
        .column(agent::Column::Episodes)
        .filter(agent::Column::Episodes.is_not_null())
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(user, log)| Some((UserId::parse(&user).ok()?, log?)))
        .collect())
}

fn silence_from(row: silence::Model) -> Silence {
    Silence {
        id: row.id,
        rule: row.rule,
        user_id: row.user_id.and_then(|u| UserId::parse(&u).ok()),
        until: row.until,
        comment: row.comment,
        created_at: row.created_at,
    }
}

/// Silences whose `until` is after `now`, oldest first.
pub async fn active_silences(
    db: &impl sea_orm::ConnectionTrait,
    now: DateTime<Utc>,
) -> Result<Vec<Silence>, DbErr> {
    let rows = silence::Entity::find()
        .filter(silence::Column::Until.gt(truncate_to_millis(now)))
        .order_by_asc(silence::Column::Id)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(silence_from).collect())
}

/// Every silence, expired ones included, newest first (at most `limit`).
pub async fn list_silences(
    db: &impl sea_orm::ConnectionTrait,
    limit: u64,
) -> Result<Vec<Silence>, DbErr> {
    let rows = silence::Entity::find()
        .order_by_desc(silence::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(silence_from).collect())
}

/// Creates a silence; returns it with its id.
pub async fn insert_silence(
    db: &impl sea_orm::ConnectionTrait,
    rule: Option<String>,
    user_id: Option<UserId>,
    until: DateTime<Utc>,
    comment: String,
) -> Result<Silence, DbErr> {
    let row = silence::ActiveModel {
        id: NotSet,
        rule: Set(rule),
        user_id: Set(user_id.map(|u| u.as_str().to_owned())),
        until: Set(truncate_to_millis(until)),
        comment: Set(comment),
        created_at: Set(truncate_to_millis(Utc::now())),
    }
    .insert(db)
    .await?;
    Ok(silence_from(row))
}

/// Deletes a silence; `false` when no silence has that id.
pub async fn delete_silence(db: &impl sea_orm::ConnectionTrait, id: i64) -> Result<bool, DbErr> {
    Ok(silence::Entity::delete_by_id(id)
        .exec(db)
        .await?
        .rows_affected
        > 0)
}

/// Dead-letter records, newest first (at most `limit`).
pub async fn dead_letters(
    db: &impl sea_orm::ConnectionTrait,
    limit: u64,
) -> Result<Vec<dead_letter::Model>, DbErr> {
    dead_letter::Entity::find()
        .order_by_desc(dead_letter::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// Filters of [`filtered_alerts`]; every field optional. `from`/`to` bound `fired_at`
/// (half-open `[from, to)`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    /// Only this rule.
    pub rule: Option<String>,
    /// Only this agent.
    pub user_id: Option<UserId>,
    /// A delivery status (`delivered`, `failed`, `suppressed`, …).
    pub status: Option<String>,
    /// Fired at or after this instant, UTC.
    pub from: Option<DateTime<Utc>>,
    /// Fired before this instant, UTC.
    pub to: Option<DateTime<Utc>>,
    /// Page size.
    pub limit: u64,
    /// Rows to skip.
    pub offset: u64,
}

/// Alerts matching `filter`, newest first, with the total over all pages.
pub async fn filtered_alerts(
    db: &impl sea_orm::ConnectionTrait,
    filter: &AlertFilter,
) -> Result<(u64, Vec<alert::Model>), DbErr> {
    let mut condition = Condition::all();
    if let Some(rule) = &filter.rule {
        condition = condition.add(alert::Column::Rule.eq(rule.clone()));
    }
    if let Some(user) = &filter.user_id {
        condition = condition.add(alert::Column::UserId.eq(user.as_str()));
    }
    if let Some(status) = &filter.status {
        condition = condition.add(alert::Column::DeliveryStatus.eq(status.clone()));
    }
    if let Some(from) = filter.from {
        condition = condition.add(alert::Column::FiredAt.gte(truncate_to_millis(from)));
    }
    if let Some(to) = filter.to {
        condition = condition.add(alert::Column::FiredAt.lt(truncate_to_millis(to)));
    }
    let query = alert::Entity::find().filter(condition);
    let total = query.clone().count(db).await?;
    let rows = query
        .order_by_desc(alert::Column::FiredAt)
        .order_by_desc(alert::Column::Id)
        .limit(filter.limit)
        .offset(filter.offset)
        .all(db)
        .await?;
    Ok((total, rows))
}

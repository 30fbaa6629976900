//! Deletion of old rows for `RETENTION_DAYS`: `agent_status` by `event_timestamp` and `alerts`
//! by `fired_at`, in batches of a bounded size so no statement holds the write lock for long.
//!
//! Each batch is one statement, `DELETE … WHERE id IN (SELECT id … WHERE <old> ORDER BY id
//! LIMIT n)`, atomic on its own (no read-then-write transaction that SQLite could refuse to
//! upgrade). Works on SQLite and PostgreSQL.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
};

use super::entity::{agent_status, alert};
use crate::domain::truncate_to_millis;

/// Deletes at most `batch` transitions with `event_timestamp` before `cutoff`; returns how many.
pub async fn purge_history_batch<C: ConnectionTrait>(
    db: &C,
    cutoff: DateTime<Utc>,
    batch: u64,
) -> Result<u64, DbErr> {
    let old = agent_status::Entity::find()
        .select_only()
        .column(agent_status::Column::Id)
        .filter(agent_status::Column::EventTimestamp.lt(truncate_to_millis(cutoff)))
        .order_by_asc(agent_status::Column::Id)
        .limit(batch)
        .into_query();
    let result = agent_status::Entity::delete_many()
        .filter(agent_status::Column::Id.in_subquery(old))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Deletes at most `batch` alerts with `fired_at` before `cutoff`; returns how many.
pub async fn purge_alerts_batch<C: ConnectionTrait>(
    db: &C,
    cutoff: DateTime<Utc>,
    batch: u64,
) -> Result<u64, DbErr> {
    let old = alert::Entity::find()
        .select_only()
        .column(alert::Column::Id)
        .filter(alert::Column::FiredAt.lt(truncate_to_millis(cutoff)))
        .order_by_asc(alert::Column::Id)
        .limit(batch)
        .into_query();
    let result = alert::Entity::delete_many()
        .filter(alert::Column::Id.in_subquery(old))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

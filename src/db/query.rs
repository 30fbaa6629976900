//! Read queries served by the REST API. Pages are newest first; `total` counts every row that
//! matches the filter, ignoring `limit` and `offset`.

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::entity::{agent, agent_status, alert};
use crate::domain::{Kind, UserId};

/// Filters and paging of [`history`]. Validation (ranges, allowed values) is the caller's job;
/// this only builds the query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryFilter {
    /// Only this user.
    pub user_id: Option<UserId>,
    /// Only this state, compared case-insensitively (states are stored uppercase).
    pub state: Option<String>,
    /// Only presence or only routing transitions.
    pub kind: Option<Kind>,
    /// Page size (rows).
    pub limit: u64,
    /// Rows to skip.
    pub offset: u64,
}

/// One page of `agent_status` rows, newest `event_timestamp` first, then highest `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Rows matching the filter, over all pages.
    pub total: u64,
    /// At most `limit` rows.
    pub rows: Vec<agent_status::Model>,
}

/// One page of alerts, newest `fired_at` first, then highest `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPage {
    /// All alerts, over all pages.
    pub total: u64,
    /// At most `limit` rows.
    pub rows: Vec<alert::Model>,
}

/// The transition history matching `filter`. Errors: the database's.
pub async fn history<C: ConnectionTrait>(
    db: &C,
    filter: &HistoryFilter,
) -> Result<HistoryPage, DbErr> {
    let mut condition = Condition::all();
    if let Some(user_id) = &filter.user_id {
        condition = condition.add(agent_status::Column::UserId.eq(user_id.as_str()));
    }
    if let Some(state) = &filter.state {
        condition = condition.add(agent_status::Column::State.eq(state.trim().to_uppercase()));
    }
    if let Some(kind) = filter.kind {
        condition = condition.add(agent_status::Column::Kind.eq(kind.as_str()));
    }
    let select = agent_status::Entity::find().filter(condition);
    let total = select.clone().count(db).await?;
    let rows = select
        .order_by_desc(agent_status::Column::EventTimestamp)
        .order_by_desc(agent_status::Column::Id)
        .limit(filter.limit)
        .offset(filter.offset)
        .all(db)
        .await?;
    Ok(HistoryPage { total, rows })
}

/// Every agent's current state, ordered by `user_id`. Errors: the database's.
pub async fn agents<C: ConnectionTrait>(db: &C) -> Result<Vec<agent::Model>, DbErr> {
    agent::Entity::find()
        .order_by_asc(agent::Column::UserId)
        .all(db)
        .await
}

/// Number of rows in `agents`. Errors: the database's.
pub async fn count_agents<C: ConnectionTrait>(db: &C) -> Result<u64, DbErr> {
    agent::Entity::find().count(db).await
}

/// A page of alerts, newest first. Errors: the database's.
pub async fn alerts<C: ConnectionTrait>(
    db: &C,
    limit: u64,
    offset: u64,
) -> Result<AlertPage, DbErr> {
    let total = alert::Entity::find().count(db).await?;
    let rows = alert::Entity::find()
        .order_by_desc(alert::Column::FiredAt)
        .order_by_desc(alert::Column::Id)
        .limit(limit)
        .offset(offset)
        .all(db)
        .await?;
    Ok(AlertPage { total, rows })
}

//! Read queries served by the REST API. Pages are newest first; `total` counts every row that
//! matches the filter, ignoring `limit`, `offset` and the keyset position.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select, Statement, Value,
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
    /// Only rows from this source (`stream`, `bootstrap`, `backfill`), compared as stored.
    pub source: Option<String>,
    /// Only `event_timestamp >= from` (UTC).
    pub from: Option<DateTime<Utc>>,
    /// Only `event_timestamp < to` (UTC): the window is half-open.
    pub to: Option<DateTime<Utc>>,
    /// Keyset position: only rows strictly after this one in (`event_timestamp` desc, `id` desc)
    /// order. When set, `offset` should be 0 (the API refuses both together).
    pub after: Option<Keyset>,
    /// Page size (rows).
    pub limit: u64,
    /// Rows to skip.
    pub offset: u64,
}

/// A position in the history order: the (`event_timestamp`, `id`) of the last row seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    /// The row's `event_timestamp`, UTC, milliseconds.
    pub event_timestamp: DateTime<Utc>,
    /// The row's `id`.
    pub id: i64,
}

impl Keyset {
    /// The position of a stored row.
    pub fn of(row: &agent_status::Model) -> Keyset {
        Keyset {
            event_timestamp: row.event_timestamp,
            id: row.id,
        }
    }
}

/// One page of `agent_status` rows, newest `event_timestamp` first, then highest `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Rows matching the filter, over all pages.
    pub total: u64,
    /// At most `limit` rows.
    pub rows: Vec<agent_status::Model>,
    /// More rows follow the last one of this page.
    pub has_more: bool,
}

/// One page of alerts, newest `fired_at` first, then highest `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPage {
    /// All alerts, over all pages.
    pub total: u64,
    /// At most `limit` rows.
    pub rows: Vec<alert::Model>,
}

/// The transition history matching `filter`: `total` (ignores paging) and one page. Errors:
/// the database's.
pub async fn history<C: ConnectionTrait>(
    db: &C,
    filter: &HistoryFilter,
) -> Result<HistoryPage, DbErr> {
    // `total` counts every page: the keyset position is not a filter.
    let unpositioned = HistoryFilter {
        after: None,
        ..filter.clone()
    };
    let total = agent_status::Entity::find()
        .filter(history_condition(&unpositioned))
        .count(db)
        .await?;
    let (rows, has_more) = history_rows(db, filter).await?;
    Ok(HistoryPage {
        total,
        rows,
        has_more,
    })
}

/// One page of the history without `total` (what a streaming export fetches page after page),
/// and whether more rows follow. Errors: the database's.
pub async fn history_rows<C: ConnectionTrait>(
    db: &C,
    filter: &HistoryFilter,
) -> Result<(Vec<agent_status::Model>, bool), DbErr> {
    // One row more than asked tells whether another page exists.
    let limit = filter.limit.saturating_add(1);
    let select = history_select(&HistoryFilter {
        limit,
        ..filter.clone()
    });
    let statement = literal_limit(select.build(db.get_database_backend()), limit);
    let mut rows = agent_status::Entity::find()
        .from_raw_sql(statement)
        .all(db)
        .await?;
    let has_more = rows.len() as u64 > filter.limit;
    rows.truncate(filter.limit as usize);
    Ok((rows, has_more))
}

/// The page query of [`history`] (public so tests can check its query plan): filters, keyset
/// position, `ORDER BY event_timestamp DESC, id DESC`, `LIMIT`, `OFFSET`. On SQLite it runs
/// with the `LIMIT` written as a literal instead of a bound parameter (same plan; see
/// `literal_limit`).
///
/// The keyset condition is written `event_timestamp <= t AND (event_timestamp < t OR id < i)`:
/// the first term is a plain range every planner turns into an index seek, so a page costs the
/// same at any depth.
pub fn history_select(filter: &HistoryFilter) -> Select<agent_status::Entity> {
    let mut select = agent_status::Entity::find()
        .filter(history_condition(filter))
        .order_by_desc(agent_status::Column::EventTimestamp)
        .order_by_desc(agent_status::Column::Id)
        .limit(filter.limit);
    if filter.offset > 0 {
        select = select.offset(filter.offset);
    }
    select
}

/// `statement` (a select built by sea-query) with its bound `LIMIT limit` written as a literal,
/// on SQLite only; unchanged when it does not end as sea-query ends a select with a limit.
///
/// Why: SQLite (3.51, the one sqlx links) reads a bound `LIMIT` value while planning, which marks
/// the prepared statement as depending on that parameter; binding it again on the next run
/// expires the statement, so every page was parsed and planned again (`sqlite3Reprepare`,
/// 10–15 % of a page's CPU in the profile of BENCHMARKS.md, figure 5) although sqlx caches it.
/// With a literal the cached statement is reused; there is one statement per page size, and
/// the offset stays bound. PostgreSQL plans bound limits without re-preparing.
pub(super) fn literal_limit(mut statement: Statement, limit: u64) -> Statement {
    const LIMIT: &str = " LIMIT ?";
    const LIMIT_OFFSET: &str = " LIMIT ? OFFSET ?";
    if statement.db_backend != DbBackend::Sqlite {
        return statement;
    }
    let (suffix, from_end) = if statement.sql.ends_with(LIMIT_OFFSET) {
        (LIMIT_OFFSET, 2)
    } else if statement.sql.ends_with(LIMIT) {
        (LIMIT, 1)
    } else {
        return statement;
    };
    let Some(values) = statement.values.as_mut() else {
        return statement;
    };
    let Some(index) = values.0.len().checked_sub(from_end) else {
        return statement;
    };
    if values.0[index] != Value::BigUnsigned(Some(limit)) {
        return statement;
    }
    values.0.remove(index);
    let keep = statement.sql.len() - suffix.len();
    statement.sql.truncate(keep);
    statement.sql.push_str(&format!(" LIMIT {limit}"));
    if from_end == 2 {
        statement.sql.push_str(" OFFSET ?");
    }
    statement
}

fn history_condition(filter: &HistoryFilter) -> Condition {
    use agent_status::Column;
    let mut condition = Condition::all();
    if let Some(user_id) = &filter.user_id {
        condition = condition.add(Column::UserId.eq(user_id.as_str()));
    }
    if let Some(state) = &filter.state {
        condition = condition.add(Column::State.eq(state.trim().to_uppercase()));
    }
    if let Some(kind) = filter.kind {
        condition = condition.add(Column::Kind.eq(kind.as_str()));
    }
    if let Some(source) = &filter.source {
        condition = condition.add(Column::Source.eq(source.as_str()));
    }
    if let Some(from) = filter.from {
        condition = condition.add(Column::EventTimestamp.gte(from));
    }
    if let Some(to) = filter.to {
        condition = condition.add(Column::EventTimestamp.lt(to));
    }
    if let Some(after) = filter.after {
        condition = condition
            .add(Column::EventTimestamp.lte(after.event_timestamp))
            .add(
                Condition::any()
                    .add(Column::EventTimestamp.lt(after.event_timestamp))
                    .add(Column::Id.lt(after.id)),
            );
    }
    condition
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

#[cfg(test)]
mod tests {
    use super::*;

    fn page_statement(backend: DbBackend, offset: u64) -> Statement {
        let filter = HistoryFilter {
            user_id: Some(UserId::parse("u1").unwrap()),
            limit: 51,
            offset,
            ..Default::default()
        };
        literal_limit(history_select(&filter).build(backend), 51)
    }

    #[test]
    fn sqlite_pages_carry_a_literal_limit() {
        let page = page_statement(DbBackend::Sqlite, 0);
        assert!(page.sql.ends_with(" LIMIT 51"), "{}", page.sql);
        assert_eq!(page.values.unwrap().0, [Value::from("u1")]);

        let page = page_statement(DbBackend::Sqlite, 100);
        assert!(page.sql.ends_with(" LIMIT 51 OFFSET ?"), "{}", page.sql);
        assert_eq!(
            page.values.unwrap().0,
            [Value::from("u1"), Value::BigUnsigned(Some(100))]
        );

        let page = page_statement(DbBackend::Postgres, 0);
        assert!(page.sql.ends_with(" LIMIT $2"), "{}", page.sql);
    }
}

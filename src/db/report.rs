//! Queries behind the timeline and time-in-state reports. Each reads one user and one dimension
//! at a time through the unique index (`user_id`, `kind`, `event_timestamp`), so a report never
//! holds more than one page of transitions in memory, and every page is an index seek.
//!
//! The `*_select` functions return the query exactly as run, so tests can check its plan; on
//! SQLite it runs with its `LIMIT` written as a literal (`literal_limit`, as for history
//! pages): a bound `LIMIT` expires SQLite's prepared statement on every run, and a report runs
//! these queries about five times per user.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Select,
};

use super::entity::agent_status::{self, Column};
use super::query::{Keyset, literal_limit};
use crate::domain::Kind;

/// The next user id (in byte order) that has any stored transition, strictly after `after`
/// (from the first when `None`). One index seek per call: walking all users this way costs one
/// seek per user instead of a scan of every row. Errors: the database's.
pub async fn next_user<C: ConnectionTrait>(
    db: &C,
    after: Option<&str>,
) -> Result<Option<String>, DbErr> {
    let statement = literal_limit(next_user_select(after).build(db.get_database_backend()), 1);
    db.query_one_raw(statement)
        .await?
        .map(|row| row.try_get_by_index::<String>(0))
        .transpose()
}

/// The query of [`next_user`].
pub fn next_user_select(after: Option<&str>) -> Select<agent_status::Entity> {
    let mut select = agent_status::Entity::find()
        .select_only()
        .column(Column::UserId);
    if let Some(after) = after {
        select = select.filter(Column::UserId.gt(after));
    }
    select.order_by_asc(Column::UserId).limit(1)
}

/// The last transition of `user_id` in `kind` strictly before `at`: the state in force at
/// `at`. Errors: the database's.
pub async fn state_before<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
    kind: Kind,
    at: DateTime<Utc>,
) -> Result<Option<agent_status::Model>, DbErr> {
    let select = state_before_select(user_id, kind, at);
    let statement = literal_limit(select.build(db.get_database_backend()), 1);
    agent_status::Entity::find()
        .from_raw_sql(statement)
        .one(db)
        .await
}

/// The query of [`state_before`].
pub fn state_before_select(
    user_id: &str,
    kind: Kind,
    at: DateTime<Utc>,
) -> Select<agent_status::Entity> {
    agent_status::Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Kind.eq(kind.as_str()))
        .filter(Column::EventTimestamp.lt(at))
        .order_by_desc(Column::EventTimestamp)
        .order_by_desc(Column::Id)
        .limit(1)
}

/// Up to `limit` transitions of `user_id` in `kind` with `from <= event_timestamp < to`, oldest
/// first (`event_timestamp` asc, `id` asc), strictly after `after` when given (keyset: pass the
/// last row of the previous page). Errors: the database's.
pub async fn transitions_page<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
    kind: Kind,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after: Option<Keyset>,
    limit: u64,
) -> Result<Vec<agent_status::Model>, DbErr> {
    let select = transitions_select(user_id, kind, from, to, after, limit);
    let statement = literal_limit(select.build(db.get_database_backend()), limit);
    agent_status::Entity::find()
        .from_raw_sql(statement)
        .all(db)
        .await
}

/// The query of [`transitions_page`].
pub fn transitions_select(
    user_id: &str,
    kind: Kind,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after: Option<Keyset>,
    limit: u64,
) -> Select<agent_status::Entity> {
    let mut select = agent_status::Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Kind.eq(kind.as_str()))
        .filter(Column::EventTimestamp.lt(to));
    select = match after {
        // Same shape as the history keyset, mirrored for ascending order.
        Some(after) => select
            .filter(Column::EventTimestamp.gte(after.event_timestamp.max(from)))
            .filter(
                Condition::any()
                    .add(Column::EventTimestamp.gt(after.event_timestamp))
                    .add(Column::Id.gt(after.id)),
            ),
        None => select.filter(Column::EventTimestamp.gte(from)),
    };
    select
        .order_by_asc(Column::EventTimestamp)
        .order_by_asc(Column::Id)
        .limit(limit)
}

/// Rows read per round trip by [`UserIntervals`].
pub const INTERVAL_PAGE_ROWS: u64 = 1000;

/// The clipped intervals of one user over a window, one dimension after the other, read page
/// by page (keyset, ascending) and cut by [`crate::report::IntervalBuilder`]: the same logic
/// for the timeline and for time-in-state. Memory: one page.
#[derive(Debug)]
pub struct UserIntervals {
    user_id: String,
    /// Dimensions still to read, last first (popped).
    pending: Vec<Kind>,
    window: crate::report::Window,
    open_end: DateTime<Utc>,
    current: Option<Current>,
}

#[derive(Debug)]
struct Current {
    kind: Kind,
    builder: crate::report::IntervalBuilder,
    after: Option<Keyset>,
}

impl UserIntervals {
    /// Intervals of `user_id` in each of `kinds` (in that order) over `window`; a state still
    /// open ends at `now`, or at `window.to` if earlier.
    pub fn new(
        user_id: &str,
        kinds: &[Kind],
        window: crate::report::Window,
        now: DateTime<Utc>,
    ) -> Self {
        UserIntervals {
            user_id: user_id.to_owned(),
            pending: kinds.iter().rev().copied().collect(),
            window,
            open_end: window.open_end(now),
            current: None,
        }
    }

    /// The next batch of intervals (possibly empty), or `None` when every dimension is done.
    /// Errors: the database's.
    pub async fn next_batch<C: ConnectionTrait>(
        &mut self,
        db: &C,
    ) -> Result<Option<Vec<crate::report::Interval>>, DbErr> {
        let mut current = match self.current.take() {
            Some(current) => current,
            None => {
                let Some(kind) = self.pending.pop() else {
                    return Ok(None);
                };
                let mut builder = crate::report::IntervalBuilder::new(kind, self.window);
                // The state in force at `from` starts the first interval.
                if let Some(row) = state_before(db, &self.user_id, kind, self.window.from).await? {
                    builder.push(point(row));
                }
                Current {
                    kind,
                    builder,
                    after: None,
                }
            }
        };
        let rows = transitions_page(
            db,
            &self.user_id,
            current.kind,
            self.window.from,
            self.window.to,
            current.after,
            INTERVAL_PAGE_ROWS,
        )
        .await?;
        let full_page = rows.len() as u64 == INTERVAL_PAGE_ROWS;
        current.after = rows.last().map(Keyset::of).or(current.after);
        let mut batch: Vec<_> = rows
            .into_iter()
            .filter_map(|row| current.builder.push(point(row)))
            .collect();
        if full_page {
            self.current = Some(current);
        } else {
            batch.extend(current.builder.finish(self.open_end));
        }
        Ok(Some(batch))
    }
}

fn point(row: agent_status::Model) -> crate::report::Point {
    crate::report::Point {
        state: row.state,
        org_presence: row.org_presence,
        at: row.event_timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Batch, HistoryFilter, history, write_batch};
    use crate::domain::{Source, Transition, UserId, parse_timestamp};
    use sea_orm::DbBackend;

    /// Keyset history pages and the report queries on any backend (SQLite always, PostgreSQL
    /// when `AGENT_MONITOR_TEST_POSTGRES_URL` names a throwaway database; its tables are
    /// emptied).
    async fn keyset_and_reports(db: &sea_orm::DatabaseConnection) {
        agent_status::Entity::delete_many().exec(db).await.unwrap();
        let start = parse_timestamp("2024-05-01T00:00:00Z").unwrap();
        let transitions = (0..30i64)
            .flat_map(|i| {
                ["u1", "u2"].map(|user| Transition {
                    user_id: UserId::parse(user).unwrap(),
                    user_name: None,
                    kind: if i % 2 == 0 {
                        Kind::Routing
                    } else {
                        Kind::Presence
                    },
                    state: if i % 3 == 0 { "IDLE" } else { "BUSY" }.into(),
                    previous_state: None,
                    org_presence: None,
                    presence_definition_id: None,
                    // Pairs of equal timestamps across users exercise the id tie-break.
                    event_timestamp: start + chrono::Duration::seconds(i / 2 * 60 + i % 2),
                    ingested_at: start,
                    source: Source::Stream,
                })
            })
            .collect();
        write_batch(
            db,
            &Batch {
                transitions,
                ..Default::default()
            },
        )
        .await
        .unwrap();

        for state in [None, Some("IDLE".to_owned())] {
            let all = history(
                db,
                &HistoryFilter {
                    state: state.clone(),
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            let mut keyset = Vec::new();
            let mut after = None;
            loop {
                let page = history(
                    db,
                    &HistoryFilter {
                        state: state.clone(),
                        after,
                        limit: 7,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
                assert_eq!(page.total, all.total);
                keyset.extend(page.rows.iter().map(|r| r.id));
                match page.rows.last() {
                    Some(last) if page.has_more => after = Some(Keyset::of(last)),
                    _ => break,
                }
            }
            let expected: Vec<i64> = all.rows.iter().map(|r| r.id).collect();
            assert_eq!(keyset, expected, "state {state:?}");
        }

        assert_eq!(next_user(db, None).await.unwrap().as_deref(), Some("u1"));
        assert_eq!(
            next_user(db, Some("u1")).await.unwrap().as_deref(),
            Some("u2")
        );
        assert_eq!(next_user(db, Some("u2")).await.unwrap(), None);

        let at = start + chrono::Duration::seconds(300);
        let before = state_before(db, "u1", Kind::Routing, at).await.unwrap();
        assert_eq!(
            before.map(|r| r.event_timestamp),
            Some(start + chrono::Duration::seconds(240))
        );
        let window = crate::report::Window {
            from: start,
            to: start + chrono::Duration::seconds(15 * 60),
        };
        let mut intervals = UserIntervals::new("u1", &[Kind::Routing], window, window.to);
        let mut total = 0;
        while let Some(batch) = intervals.next_batch(db).await.unwrap() {
            total += batch.iter().map(|i| i.millis()).sum::<i64>();
        }
        assert_eq!(total, 15 * 60 * 1000, "the window is covered exactly");
    }

    /// Every report query runs with a literal `LIMIT` on SQLite (`literal_limit` leaves a
    /// statement of another shape unchanged, silently), and bound on PostgreSQL.
    #[test]
    fn report_queries_carry_a_literal_limit_on_sqlite() {
        let at = crate::domain::parse_timestamp("2024-05-01T00:00:00Z").unwrap();
        let after = Some(Keyset {
            event_timestamp: at,
            id: 7,
        });
        let statements = |backend| {
            [
                (next_user_select(None).build(backend), 1),
                (next_user_select(Some("u1")).build(backend), 1),
                (
                    state_before_select("u1", Kind::Routing, at).build(backend),
                    1,
                ),
                (
                    transitions_select("u1", Kind::Routing, at, at, None, 1000).build(backend),
                    1000,
                ),
                (
                    transitions_select("u1", Kind::Routing, at, at, after, 1000).build(backend),
                    1000,
                ),
            ]
        };
        for (statement, limit) in statements(DbBackend::Sqlite) {
            let bound = statement.values.as_ref().map_or(0, |v| v.0.len());
            let statement = literal_limit(statement, limit);
            assert!(
                statement.sql.ends_with(&format!(" LIMIT {limit}")),
                "{}",
                statement.sql
            );
            assert_eq!(statement.values.map_or(0, |v| v.0.len()), bound - 1);
        }
        for (statement, limit) in statements(DbBackend::Postgres) {
            let sql = statement.sql.clone();
            assert_eq!(literal_limit(statement, limit).sql, sql);
        }
    }

    #[tokio::test]
    async fn sqlite_keyset_and_reports() {
        let db = crate::db::connect("sqlite::memory:").await.unwrap();
        keyset_and_reports(&db).await;
    }

    #[tokio::test]
    async fn postgres_keyset_and_reports_when_configured() {
        let Ok(url) = std::env::var("AGENT_MONITOR_TEST_POSTGRES_URL") else {
            return;
        };
        let _one_at_a_time = crate::db::POSTGRES_TESTS.lock().await;
        let db = crate::db::connect(&url).await.unwrap();
        keyset_and_reports(&db).await;
    }
}

//! Issue 6, figure 5: on SQLite, the `user_id` history index covers every column of
//! `agent_status`, so a page of one agent's history is read from a few adjacent index pages
//! instead of one table page per row (an agent's rows are interleaved with every other agent's
//! in the table, which is in arrival order). `BENCHMARKS.md`, figure 5, has the measurements.
//!
//! `ix_agent_status_user_ts` (`user_id`, `event_timestamp`, `id`) is replaced by
//! `ix_agent_status_user_cover`: the same leading columns (so it serves the same filters and
//! order), then every other column. PostgreSQL keeps the narrow index: a B-tree entry there is
//! limited to about 2.7 KB, which a long user name could exceed and so fail an insert.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The narrow index this replaces on SQLite.
const NARROW: &str = "ix_agent_status_user_ts";
/// The covering index (SQLite only).
const COVERING: &str = "ix_agent_status_user_cover";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Sqlite {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "CREATE INDEX IF NOT EXISTS {COVERING} ON agent_status \
             (user_id, event_timestamp, id, kind, state, previous_state, org_presence, \
             presence_definition_id, source, ingested_at, user_name)"
        ))
        .await?;
        db.execute_unprepared(&format!("DROP INDEX IF EXISTS {NARROW}"))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Sqlite {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "CREATE INDEX IF NOT EXISTS {NARROW} ON agent_status (user_id, event_timestamp, id)"
        ))
        .await?;
        db.execute_unprepared(&format!("DROP INDEX IF EXISTS {COVERING}"))
            .await?;
        Ok(())
    }
}

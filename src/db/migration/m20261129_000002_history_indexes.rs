//! Indexes for the history filters added with keyset pagination and reports: `source`.
//!
//! Every history filter combination is then served by an index whose leading columns are
//! equality filters and whose tail is the sort key (`event_timestamp`, `id`), so a page is an
//! index range read in order (no sort, no full scan), at any depth:
//!
//! - no equality filter: `ix_agent_status_ts` (`event_timestamp`, `id`);
//! - `user_id` (alone or with `state`/`source`): `ix_agent_status_user_ts` (on SQLite replaced by
//!   the covering `ix_agent_status_user_cover` since `m20261130_000030`);
//! - `user_id` + `kind`: the unique `ux_agent_status_user_kind_ts` (also used by the timeline and
//!   time-in-state queries, one user and one dimension at a time);
//! - `state`, `kind`, `source`: `ix_agent_status_state_ts`, `ix_agent_status_kind_ts` and the new
//!   `ix_agent_status_source_ts`; further equality filters are checked on the rows read.
//!
//! `tests/it/reports.rs` checks every combination with SQLite's `EXPLAIN QUERY PLAN`. Plain
//! B-tree indexes, so the same migration is valid on PostgreSQL.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AgentStatus {
    Table,
    Id,
    EventTimestamp,
    Source,
}

const SOURCE_INDEX: &str = "ix_agent_status_source_ts";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(SOURCE_INDEX)
                    .table(AgentStatus::Table)
                    .col(AgentStatus::Source)
                    .col(AgentStatus::EventTimestamp)
                    .col(AgentStatus::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(SOURCE_INDEX)
                    .table(AgentStatus::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

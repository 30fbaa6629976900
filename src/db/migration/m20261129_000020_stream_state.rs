//! Gap backfill (issue 3): `stream_state`, one row per notification stream scope (today the
//! single row `all`) with the last instant up to which the stream is known to be complete, so a
//! restart backfills from there (`POST /api/v2/analytics/users/details/query`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StreamState {
    Table,
    Name,
    CompleteUntil,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(StreamState::Table)
                    .if_not_exists()
                    .col(string(StreamState::Name).primary_key())
                    .col(timestamp_with_time_zone(StreamState::CompleteUntil))
                    .col(timestamp_with_time_zone(StreamState::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StreamState::Table).to_owned())
            .await
    }
}

//! Alert rules and delivery (issue 4): episode columns on `alerts`, the persisted episode log
//! (`episodes`), `silences` and `dead_letters`.
//!
//! SQLite adds one column per `ALTER TABLE`, so each column is its own statement. New `alerts`
//! columns have defaults so rows written by the first release stay valid.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Alerts {
    Table,
    EpisodeKey,
    Kind,
    Repeat,
    Severity,
    Destination,
    ResolvedDurationSeconds,
    Muted,
    Rule,
    UserId,
    FiredAt,
    Id,
    DeliveryStatus,
}

#[derive(DeriveIden)]
enum Episodes {
    Table,
    UserId,
    State,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Silences {
    Table,
    Id,
    Rule,
    UserId,
    Until,
    Comment,
    CreatedAt,
}

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Id,
    AlertKey,
    Destination,
    Error,
    Attempts,
    FirstAttemptAt,
    LastAttemptAt,
    PayloadHash,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            string(Alerts::EpisodeKey).default("").to_owned(),
            string(Alerts::Kind).default("firing").to_owned(),
            integer(Alerts::Repeat).default(0).to_owned(),
            string(Alerts::Severity).default("warning").to_owned(),
            string_null(Alerts::Destination),
            big_integer_null(Alerts::ResolvedDurationSeconds),
            string_null(Alerts::Muted),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alerts::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        for (name, cols) in [
            ("ix_alerts_episode", vec![Alerts::EpisodeKey]),
            (
                "ix_alerts_rule_fired",
                vec![Alerts::Rule, Alerts::FiredAt, Alerts::Id],
            ),
            (
                "ix_alerts_user_fired",
                vec![Alerts::UserId, Alerts::FiredAt, Alerts::Id],
            ),
            (
                "ix_alerts_status_fired",
                vec![Alerts::DeliveryStatus, Alerts::FiredAt, Alerts::Id],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Alerts::Table).if_not_exists();
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Episodes::Table)
                    .if_not_exists()
                    .col(string(Episodes::UserId).primary_key())
                    .col(text(Episodes::State))
                    .col(timestamp_with_time_zone(Episodes::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Silences::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Silences::Id))
                    .col(string_null(Silences::Rule))
                    .col(string_null(Silences::UserId))
                    .col(timestamp_with_time_zone(Silences::Until))
                    .col(text(Silences::Comment))
                    .col(timestamp_with_time_zone(Silences::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DeadLetters::Table)
                    .if_not_exists()
                    .col(big_pk_auto(DeadLetters::Id))
                    .col(string(DeadLetters::AlertKey))
                    .col(string(DeadLetters::Destination))
                    .col(text(DeadLetters::Error))
                    .col(integer(DeadLetters::Attempts))
                    .col(timestamp_with_time_zone(DeadLetters::FirstAttemptAt))
                    .col(timestamp_with_time_zone(DeadLetters::LastAttemptAt))
                    .col(string(DeadLetters::PayloadHash))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            DeadLetters::Table.into_iden(),
            Silences::Table.into_iden(),
            Episodes::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

//! The initial schema: `agent_status`, `agents`, `alerts` and `health_probe`.
//!
//! Backend-neutral: instants are `timestamptz` on PostgreSQL and text on SQLite (written as
//! RFC 3339 with milliseconds, so text order is time order).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AgentStatus {
    Table,
    Id,
    UserId,
    UserName,
    Kind,
    State,
    PreviousState,
    OrgPresence,
    EventTimestamp,
    IngestedAt,
    Source,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    UserId,
    UserName,
    Presence,
    OrgPresence,
    PresenceSince,
    RoutingStatus,
    RoutingSince,
    ActiveConversations,
    IdleSince,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Alerts {
    Table,
    Id,
    AlertKey,
    Rule,
    UserId,
    UserName,
    State,
    Since,
    ThresholdSeconds,
    FiredAt,
    DeliveryStatus,
    DeliveryError,
    Attempts,
    DeliveredAt,
}

#[derive(DeriveIden)]
enum HealthProbe {
    Table,
    Id,
    CheckedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AgentStatus::Table)
                    .if_not_exists()
                    .col(big_pk_auto(AgentStatus::Id))
                    .col(string(AgentStatus::UserId))
                    .col(string_null(AgentStatus::UserName))
                    .col(string(AgentStatus::Kind))
                    .col(string(AgentStatus::State))
                    .col(string_null(AgentStatus::PreviousState))
                    .col(string_null(AgentStatus::OrgPresence))
                    .col(timestamp_with_time_zone(AgentStatus::EventTimestamp))
                    .col(timestamp_with_time_zone(AgentStatus::IngestedAt))
                    .col(string(AgentStatus::Source))
                    .to_owned(),
            )
            .await?;
        // The dedupe key; also serves the `user_id` filter (leftmost column).
        manager
            .create_index(
                Index::create()
                    .name("ux_agent_status_user_kind_ts")
                    .table(AgentStatus::Table)
                    .col(AgentStatus::UserId)
                    .col(AgentStatus::Kind)
                    .col(AgentStatus::EventTimestamp)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // History filters, each ending in the sort key so a filtered page is an index range.
        let filter_indexes: [(&str, Option<AgentStatus>); 4] = [
            ("ix_agent_status_ts", None),
            ("ix_agent_status_user_ts", Some(AgentStatus::UserId)),
            ("ix_agent_status_state_ts", Some(AgentStatus::State)),
            ("ix_agent_status_kind_ts", Some(AgentStatus::Kind)),
        ];
        for (name, leading) in filter_indexes {
            let mut index = Index::create();
            index.name(name).table(AgentStatus::Table).if_not_exists();
            if let Some(column) = leading {
                index.col(column);
            }
            index.col(AgentStatus::EventTimestamp).col(AgentStatus::Id);
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .if_not_exists()
                    .col(string(Agents::UserId).primary_key())
                    .col(string_null(Agents::UserName))
                    .col(string_null(Agents::Presence))
                    .col(string_null(Agents::OrgPresence))
                    .col(timestamp_with_time_zone_null(Agents::PresenceSince))
                    .col(string_null(Agents::RoutingStatus))
                    .col(timestamp_with_time_zone_null(Agents::RoutingSince))
                    .col(integer(Agents::ActiveConversations))
                    .col(timestamp_with_time_zone_null(Agents::IdleSince))
                    .col(timestamp_with_time_zone(Agents::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Alerts::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Alerts::Id))
                    .col(string_uniq(Alerts::AlertKey))
                    .col(string(Alerts::Rule))
                    .col(string(Alerts::UserId))
                    .col(string_null(Alerts::UserName))
                    .col(string(Alerts::State))
                    .col(timestamp_with_time_zone(Alerts::Since))
                    .col(big_integer(Alerts::ThresholdSeconds))
                    .col(timestamp_with_time_zone(Alerts::FiredAt))
                    .col(string(Alerts::DeliveryStatus))
                    .col(text_null(Alerts::DeliveryError))
                    .col(integer(Alerts::Attempts))
                    .col(timestamp_with_time_zone_null(Alerts::DeliveredAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_alerts_fired_at")
                    .table(Alerts::Table)
                    .col(Alerts::FiredAt)
                    .col(Alerts::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(HealthProbe::Table)
                    .if_not_exists()
                    .col(integer(HealthProbe::Id).primary_key())
                    .col(timestamp_with_time_zone(HealthProbe::CheckedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            HealthProbe::Table.into_iden(),
            Alerts::Table.into_iden(),
            Agents::Table.into_iden(),
            AgentStatus::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

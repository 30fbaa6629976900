//! Issue 3: `agent_status.presence_definition_id`, the org presence definition id of a presence
//! transition as Genesys sent it (`presenceDefinition.id`, or `organizationPresenceId` from the
//! analytics backfill), stored beside the label as of that time (`org_presence`). Nullable:
//! routing rows and rows from before this migration have none.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AgentStatus {
    Table,
    PresenceDefinitionId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AgentStatus::Table)
                    .add_column(
                        ColumnDef::new(AgentStatus::PresenceDefinitionId)
                            .string()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AgentStatus::Table)
                    .drop_column(AgentStatus::PresenceDefinitionId)
                    .to_owned(),
            )
            .await
    }
}

//! Schema migrations, applied at startup by [`crate::db::connect`]. One file per migration:
//! `DeriveMigrationName` records the file stem as the version in `seaql_migrations`.

use sea_orm_migration::prelude::*;

mod m20261129_000001_initial;
mod m20261129_000002_history_indexes;
mod m20261129_000010_alerting;
mod m20261129_000020_stream_state;
mod m20261129_000021_presence_definition_id;
mod m20261130_000030_user_history_covering_index;
mod m20261130_000040_episode_log_in_agents;

/// Every migration of the service, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_initial::Migration),
            Box::new(m20261129_000002_history_indexes::Migration),
            Box::new(m20261129_000010_alerting::Migration),
            Box::new(m20261129_000020_stream_state::Migration),
            Box::new(m20261129_000021_presence_definition_id::Migration),
            Box::new(m20261130_000030_user_history_covering_index::Migration),
            Box::new(m20261130_000040_episode_log_in_agents::Migration),
        ]
    }
}

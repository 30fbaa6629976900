//! Issue 6, figure 1: each agent's episode log (JSON of `rules::AgentEpisodes`) moves from its
//! own `episodes` row into a nullable `episodes` column of the agent's `agents` row, so the
//! persistence actor writes one row per agent where it wrote two (an `agents` upsert and an
//! `episodes` upsert for nearly every change). `BENCHMARKS.md`, figure 1, has the measurements.
//!
//! Nothing is lost: every log is copied into its agent's row, and a log whose agent has no
//! `agents` row (none is expected: both were always written and deleted together) gets a row
//! of its own, with no state, `active_conversations` 0 and the log's `updated_at`. `down`
//! moves the logs back.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Agents {
    Table,
    Episodes,
}

#[derive(DeriveIden)]
enum Episodes {
    Table,
    UserId,
    State,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Agents::Table)
                    .add_column(text_null(Agents::Episodes))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE agents SET episodes = \
             (SELECT e.state FROM episodes e WHERE e.user_id = agents.user_id)",
        )
        .await?;
        db.execute_unprepared(
            "INSERT INTO agents (user_id, active_conversations, updated_at, episodes) \
             SELECT e.user_id, 0, e.updated_at, e.state FROM episodes e \
             WHERE NOT EXISTS (SELECT 1 FROM agents a WHERE a.user_id = e.user_id)",
        )
        .await?;
        manager
            .drop_table(Table::drop().table(Episodes::Table).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Episodes::Table)
                    .col(string(Episodes::UserId).primary_key())
                    .col(text(Episodes::State))
                    .col(timestamp_with_time_zone(Episodes::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO episodes (user_id, state, updated_at) \
                 SELECT user_id, episodes, updated_at FROM agents WHERE episodes IS NOT NULL",
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Agents::Table)
                    .drop_column(Agents::Episodes)
                    .to_owned(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
    use sea_orm_migration::MigratorTrait;

    use super::super::Migrator;

    async fn strings(db: &DatabaseConnection, sql: &str) -> Vec<String> {
        db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index::<String>(0).unwrap())
            .collect()
    }

    /// Every episode log survives the move, into its agent's row or, for a log without one,
    /// into a new row with no state; `down` moves them back. `db` is empty.
    async fn logs_move_and_back(db: &DatabaseConnection) {
        let before = Migrator::migrations().len() as u32 - 1;
        Migrator::up(db, Some(before)).await.unwrap();
        for sql in [
            "INSERT INTO agents (user_id, routing_status, active_conversations, updated_at) \
             VALUES ('u1', 'IDLE', 1, '2024-05-01T10:00:00.000+00:00'), \
             ('u2', 'INTERACTING', 0, '2024-05-01T10:00:00.000+00:00')",
            "INSERT INTO episodes (user_id, state, updated_at) VALUES \
             ('u1', '{\"log\":1}', '2024-05-01T10:00:01.000+00:00'), \
             ('orphan', '{\"log\":3}', '2024-05-01T10:00:03.000+00:00')",
        ] {
            db.execute_unprepared(sql).await.unwrap();
        }

        Migrator::up(db, None).await.unwrap();
        assert_eq!(
            strings(
                db,
                "SELECT user_id || '|' || COALESCE(routing_status, '-') || '|' || \
                 CAST(active_conversations AS TEXT) || '|' || COALESCE(episodes, '-') \
                 FROM agents ORDER BY user_id"
            )
            .await,
            [
                "orphan|-|0|{\"log\":3}",
                "u1|IDLE|1|{\"log\":1}",
                "u2|INTERACTING|0|-"
            ]
        );
        assert!(
            db.execute_unprepared("SELECT COUNT(*) FROM episodes")
                .await
                .is_err(),
            "the episodes table is gone"
        );

        Migrator::down(db, Some(1)).await.unwrap();
        assert_eq!(
            strings(
                db,
                "SELECT user_id || '|' || state FROM episodes ORDER BY user_id"
            )
            .await,
            ["orphan|{\"log\":3}", "u1|{\"log\":1}"]
        );
    }

    #[tokio::test]
    async fn episode_logs_move_into_the_agents_rows_and_back_on_sqlite() {
        let path = std::env::temp_dir().join(format!(
            "agent-monitor-migration-40-{}-{}.db",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let db = Database::connect(format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
        logs_move_and_back(&db).await;
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// The same on PostgreSQL when `AGENT_MONITOR_TEST_POSTGRES_URL` is set, in a database of
    /// its own (created and dropped here), since migrating down would break the tests sharing
    /// that one.
    #[tokio::test]
    async fn episode_logs_move_into_the_agents_rows_and_back_on_postgres_when_configured() {
        let Ok(url) = std::env::var("AGENT_MONITOR_TEST_POSTGRES_URL") else {
            return;
        };
        let name = format!("agent_monitor_migration_40_{}", std::process::id());
        let admin = Database::connect(&url).await.unwrap();
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        // The same server and options, another database.
        let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let (server, _) = path.rsplit_once('/').unwrap();
        let sep = if query.is_empty() { "" } else { "?" };
        let db = Database::connect(format!("{server}/{name}{sep}{query}"))
            .await
            .unwrap();
        logs_move_and_back(&db).await;
        db.close().await.unwrap();
        admin
            .execute_unprepared(&format!("DROP DATABASE {name}"))
            .await
            .unwrap();
    }
}

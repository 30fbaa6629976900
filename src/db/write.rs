//! The persistence actor's writes. Each [`write_batch`] is one transaction: it either commits
//! every buffered row or none, so the caller can keep its buffer and retry after an error.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QuerySelect, Statement, TransactionTrait, Value,
};

use super::entity::{agent, dead_letter, health_probe, stream_state};
use crate::domain::{
    AgentCurrent, Alert, AlertKind, AlertOutcome, DeadLetter, DeliveryStatus, Transition, UserId,
    truncate_to_millis,
};

/// Bind parameters per statement we allow ourselves: well under SQLite's limit (32,766 since
/// 3.32; bundled SQLite is newer) and PostgreSQL's (65,535).
const MAX_BIND_PARAMS: usize = 10_000;
/// Rows per multi-row statement ([`RowsSql`]). A batch goes in chunks of this many rows and a
/// shorter tail in chunks of the powers of two it is made of, so every statement has one of
/// ten shapes and is prepared once per connection (sqlx caches prepared statements by their
/// SQL text), never once per batch. Each statement is one round trip to sqlx's SQLite thread,
/// and under load a batch holds thousands of rows: 512 rows a statement keep that thread busy
/// (`BENCHMARKS.md`, figure 1) while the widest table's statement stays within
/// [`MAX_BIND_PARAMS`].
const ROW_CHUNK: usize = 512;
const _: () = assert!(ROW_CHUNK * ALERTS_SQL.columns <= MAX_BIND_PARAMS);
/// Columns bound per `dead_letters` row (all but `id`).
const DEAD_LETTER_COLUMNS: usize = 7;

/// A multi-row `INSERT` of one table, written once for every row count: `head` (`INSERT INTO
/// … (columns) VALUES `), then one `(?, …)` group of `columns` placeholders per row, then
/// `tail` (the `ON CONFLICT` clause). Its rows are bound straight from our types, with no
/// `ActiveModel` and no statement text built by sea-query for every batch; values are bound as
/// sea-orm binds them, so the stored text is the same (a test pins it for every table).
struct RowsSql {
    head: &'static str,
    columns: usize,
    tail: &'static str,
}

/// `agent_status`: every column but `id`, in [`bind_transition`]'s order; a transition already
/// stored (same user, kind and Genesys timestamp) is skipped.
const TRANSITIONS_SQL: RowsSql = RowsSql {
    head: "INSERT INTO \"agent_status\" (\"user_id\", \"user_name\", \"kind\", \"state\", \
           \"previous_state\", \"org_presence\", \"presence_definition_id\", \"event_timestamp\", \
           \"ingested_at\", \"source\") VALUES ",
    columns: 10,
    tail: " ON CONFLICT (\"user_id\", \"kind\", \"event_timestamp\") DO NOTHING",
};

/// `agents`: every column, in [`bind_agent`]'s order; an existing row of the user is replaced,
/// except that an episode log bound as NULL (unchanged since last written) keeps the stored one.
const AGENTS_SQL: RowsSql = RowsSql {
    head: "INSERT INTO \"agents\" (\"user_id\", \"user_name\", \"presence\", \"org_presence\", \
           \"presence_since\", \"routing_status\", \"routing_since\", \"active_conversations\", \
           \"idle_since\", \"updated_at\", \"episodes\") VALUES ",
    columns: 11,
    tail: " ON CONFLICT (\"user_id\") DO UPDATE SET \"user_name\" = excluded.\"user_name\", \
           \"presence\" = excluded.\"presence\", \"org_presence\" = excluded.\"org_presence\", \
           \"presence_since\" = excluded.\"presence_since\", \
           \"routing_status\" = excluded.\"routing_status\", \
           \"routing_since\" = excluded.\"routing_since\", \
           \"active_conversations\" = excluded.\"active_conversations\", \
           \"idle_since\" = excluded.\"idle_since\", \"updated_at\" = excluded.\"updated_at\", \
           \"episodes\" = COALESCE(excluded.\"episodes\", \"agents\".\"episodes\")",
};

/// `agents`, episode log only (the current state unchanged since last written), in
/// [`bind_episodes_only`]'s order: an existing row gets the new log and keeps its state; a user
/// with no row yet gets one with no state, `active_conversations` 0 and `updated_at` now.
const EPISODES_ONLY_SQL: RowsSql = RowsSql {
    head: "INSERT INTO \"agents\" (\"user_id\", \"active_conversations\", \"updated_at\", \
           \"episodes\") VALUES ",
    columns: 4,
    tail: " ON CONFLICT (\"user_id\") DO UPDATE SET \"episodes\" = excluded.\"episodes\"",
};

/// `alerts`: every column but `id`, in [`bind_alert`]'s order; an alert already stored (same
/// `alert_key`) is skipped.
const ALERTS_SQL: RowsSql = RowsSql {
    head: "INSERT INTO \"alerts\" (\"alert_key\", \"rule\", \"user_id\", \"user_name\", \"state\", \
           \"since\", \"threshold_seconds\", \"fired_at\", \"delivery_status\", \
           \"delivery_error\", \"attempts\", \"delivered_at\", \"episode_key\", \"kind\", \
           \"repeat\", \"severity\", \"destination\", \"resolved_duration_seconds\", \
           \"muted\") VALUES ",
    columns: 19,
    tail: " ON CONFLICT (\"alert_key\") DO NOTHING",
};

/// How a delivery ended, applied to the alert of one `alert_key` (in [`bind_outcome`]'s order).
const OUTCOME_SQL: &str = "UPDATE \"alerts\" SET \"delivery_status\" = ?, \"delivery_error\" = ?, \
     \"attempts\" = ?, \"delivered_at\" = ? WHERE \"alert_key\" = ?";

/// One agent's `agents` row as the persistence actor coalesced it: the latest current state
/// and the latest episode log (JSON of `rules::AgentEpisodes`) received since the row was last
/// written. A part left `None` is unchanged and keeps what is stored; at least one is `Some`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    /// The agent.
    pub user_id: UserId,
    /// Its current state, if it changed.
    pub current: Option<AgentCurrent>,
    /// Its episode log, if it changed.
    pub episodes: Option<String>,
}

impl AgentRow {
    /// A row with nothing changed yet.
    pub fn new(user_id: UserId) -> AgentRow {
        AgentRow {
            user_id,
            current: None,
            episodes: None,
        }
    }

    /// Takes the parts `newer` holds, keeping ours where it holds none (`newer` was received
    /// later).
    pub fn update(&mut self, newer: AgentRow) {
        if newer.current.is_some() {
            self.current = newer.current;
        }
        if newer.episodes.is_some() {
            self.episodes = newer.episodes;
        }
    }
}

/// An alert waiting to be inserted, with its delivery outcome if that arrived before the
/// insert was committed.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAlert {
    /// The alert as fired.
    pub alert: Alert,
    /// Its delivery outcome, if already known (else it is stored as `pending`).
    pub outcome: Option<AlertOutcome>,
}

/// Everything one flush writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Users no longer monitored: their `agents` rows are deleted **before** the
    /// upserts of this batch (an upsert in the same batch is newer, so it wins). History
    /// (`agent_status`) and alerts are kept.
    pub forget: Vec<UserId>,
    /// The complete set of monitored users (taken after the first user listing): the `agents`
    /// rows of every other user are deleted, before the upserts and after
    /// `forget`. `None`: no such clean-up.
    pub keep_only: Option<Vec<UserId>>,
    /// Inserted with ON CONFLICT (`user_id`, `kind`, `event_timestamp`) DO NOTHING.
    pub transitions: Vec<Transition>,
    /// Upserted by `user_id` (current state and episode log, each only if it changed); must
    /// hold at most one row per user (PostgreSQL refuses to update a row twice in one
    /// statement).
    pub agents: Vec<AgentRow>,
    /// Inserted with ON CONFLICT (`alert_key`) DO NOTHING, status `pending` unless an outcome
    /// is attached.
    pub alerts: Vec<PendingAlert>,
    /// Applied as updates by `alert_key` after the inserts, in order.
    pub outcomes: Vec<AlertOutcome>,
    /// Dead-letter records, inserted.
    pub dead_letters: Vec<DeadLetter>,
    /// The stream is complete up to this Genesys instant (UTC): upserted into `stream_state`
    /// **after** the rows above, in the same transaction.
    pub complete_until: Option<DateTime<Utc>>,
}

impl Batch {
    /// Rows (of every table) in the batch.
    pub fn len(&self) -> usize {
        self.forget.len()
            + usize::from(self.keep_only.is_some())
            + self.transitions.len()
            + self.agents.len()
            + self.alerts.len()
            + self.outcomes.len()
            + self.dead_letters.len()
            + usize::from(self.complete_until.is_some())
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a committed [`write_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSummary {
    /// New `agent_status` rows.
    pub transitions_inserted: u64,
    /// Transitions that were already stored (duplicate deliveries).
    pub transitions_duplicate: u64,
    /// `agents` rows inserted or updated.
    pub agents_upserted: u64,
    /// New `alerts` rows.
    pub alerts_inserted: u64,
    /// Outcomes that matched an alert.
    pub outcomes_applied: u64,
    /// Outcomes whose `alert_key` is unknown (logged and dropped by the caller).
    pub outcomes_unmatched: u64,
    /// `agents` rows deleted (users no longer monitored: `forget`, `keep_only`).
    pub agents_deleted: u64,
}

/// Writes `batch` in one transaction. On `Err` nothing was committed and the batch can be
/// retried as is. Errors: the database's (busy/locked, connection lost, …).
pub async fn write_batch(db: &DatabaseConnection, batch: &Batch) -> Result<BatchSummary, DbErr> {
    let mut summary = BatchSummary::default();
    if batch.is_empty() {
        return Ok(summary);
    }
    let txn = db.begin().await?;

    summary.agents_deleted = delete_unmonitored(&txn, batch).await?;

    let backend = txn.get_database_backend();
    let inserted = insert_rows(
        &txn,
        backend,
        &TRANSITIONS_SQL,
        &batch.transitions,
        bind_transition,
    )
    .await?;
    summary.transitions_inserted = inserted;
    summary.transitions_duplicate = batch.transitions.len() as u64 - inserted;

    let now = ms(Utc::now());
    let (full, episodes_only): (Vec<&AgentRow>, Vec<&AgentRow>) =
        batch.agents.iter().partition(|row| row.current.is_some());
    summary.agents_upserted = insert_rows(&txn, backend, &AGENTS_SQL, &full, bind_agent).await?
        + insert_rows(
            &txn,
            backend,
            &EPISODES_ONLY_SQL,
            &episodes_only,
            |row, values| bind_episodes_only(row, now, values),
        )
        .await?;

    summary.alerts_inserted =
        insert_rows(&txn, backend, &ALERTS_SQL, &batch.alerts, bind_alert).await?;

    for chunk in batch
        .dead_letters
        .chunks(MAX_BIND_PARAMS / DEAD_LETTER_COLUMNS)
    {
        dead_letter::Entity::insert_many(chunk.iter().map(dead_letter_row))
            .exec_without_returning(&txn)
            .await?;
    }

    // One statement text for every outcome: prepared once per connection.
    let outcome_sql = match backend {
        DbBackend::Postgres => numbered_placeholders(OUTCOME_SQL),
        _ => OUTCOME_SQL.to_owned(),
    };
    for outcome in &batch.outcomes {
        let statement =
            Statement::from_sql_and_values(backend, outcome_sql.clone(), bind_outcome(outcome));
        if txn.execute_raw(statement).await?.rows_affected() > 0 {
            summary.outcomes_applied += 1;
        } else {
            summary.outcomes_unmatched += 1;
        }
    }

    if let Some(until) = batch.complete_until {
        stream_state::Entity::insert(stream_state::ActiveModel {
            name: Set(super::STREAM_ALL.to_owned()),
            complete_until: Set(truncate_to_millis(until)),
            updated_at: Set(truncate_to_millis(Utc::now())),
        })
        .on_conflict(
            OnConflict::column(stream_state::Column::Name)
                .update_columns([
                    stream_state::Column::CompleteUntil,
                    stream_state::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    }

    txn.commit().await?;
    Ok(summary)
}

/// Deletes the `agents` rows of `batch.forget` and, with `batch.keep_only`, of every user not
/// in it. Returns the rows deleted.
async fn delete_unmonitored<C: ConnectionTrait>(txn: &C, batch: &Batch) -> Result<u64, DbErr> {
    let mut gone: Vec<String> = batch.forget.iter().map(|u| u.to_string()).collect();
    if let Some(keep) = &batch.keep_only {
        let keep: std::collections::HashSet<&str> = keep.iter().map(UserId::as_str).collect();
        let stored: Vec<String> = agent::Entity::find()
            .select_only()
            .column(agent::Column::UserId)
            .into_tuple()
            .all(txn)
            .await?;
        gone.extend(stored.into_iter().filter(|u| !keep.contains(u.as_str())));
    }
    let mut deleted = 0;
    for chunk in gone.chunks(MAX_BIND_PARAMS) {
        deleted += agent::Entity::delete_many()
            .filter(agent::Column::UserId.is_in(chunk.iter().cloned()))
            .exec(txn)
            .await?
            .rows_affected;
    }
    Ok(deleted)
}

/// A real write: upserts the single `health_probe` row with the current time. Cheap (one row)
/// and fails exactly when a flush would (locked, read-only, disk full, connection lost). It
/// cannot see a SQLite file deleted while in use (the write succeeds into the deleted file):
/// that is [`super::SqliteFile::check`]'s job.
pub async fn probe_write<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    health_probe::Entity::insert(health_probe::ActiveModel {
        id: Set(1),
        checked_at: Set(truncate_to_millis(Utc::now())),
    })
    .on_conflict(
        OnConflict::column(health_probe::Column::Id)
            .update_column(health_probe::Column::CheckedAt)
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// `(start, len)` of each multi-row statement for `n` rows: [`ROW_CHUNK`]-row chunks, then
/// the tail by its binary digits, largest first (so `n = 1200` gives 512, 512, 128, 32, 16).
fn row_chunks(n: usize) -> Vec<(usize, usize)> {
    let mut chunks = Vec::with_capacity(n / ROW_CHUNK + 8);
    let mut start = 0;
    while n - start >= ROW_CHUNK {
        chunks.push((start, ROW_CHUNK));
        start += ROW_CHUNK;
    }
    let mut size = ROW_CHUNK / 2;
    while size > 0 {
        if (n - start) & size != 0 {
            chunks.push((start, size));
            start += size;
        }
        size /= 2;
    }
    chunks
}

impl RowsSql {
    /// The statement for `rows` rows, with the backend's placeholders (`?` for SQLite, `$n`
    /// for PostgreSQL).
    fn text(&self, backend: DbBackend, rows: usize) -> String {
        let mut sql =
            String::with_capacity(self.head.len() + self.tail.len() + rows * self.columns * 6);
        sql.push_str(self.head);
        let mut n = 0;
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for column in 0..self.columns {
                if column > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                match backend {
                    DbBackend::Postgres => {
                        sql.push('$');
                        sql.push_str(&n.to_string());
                    }
                    _ => sql.push('?'),
                }
            }
            sql.push(')');
        }
        sql.push_str(self.tail);
        sql
    }
}

/// Writes `rows` with `sql`, in statements of a fixed shape (see [`ROW_CHUNK`]), each row's
/// values pushed by `bind` (exactly `sql.columns` of them, in its column order). Returns the
/// rows the database reports affected: inserted ones for `DO NOTHING`, inserted or updated
/// ones for `DO UPDATE`.
async fn insert_rows<C: ConnectionTrait, T>(
    db: &C,
    backend: DbBackend,
    sql: &RowsSql,
    rows: &[T],
    bind: impl Fn(&T, &mut Vec<Value>),
) -> Result<u64, DbErr> {
    let mut affected = 0;
    for (start, len) in row_chunks(rows.len()) {
        let mut values: Vec<Value> = Vec::with_capacity(len * sql.columns);
        for row in &rows[start..start + len] {
            bind(row, &mut values);
        }
        debug_assert_eq!(values.len(), len * sql.columns);
        let statement = Statement::from_sql_and_values(backend, sql.text(backend, len), values);
        affected += db.execute_raw(statement).await?.rows_affected();
    }
    Ok(affected)
}

/// One `agent_status` row, in [`TRANSITIONS_SQL`]'s column order.
fn bind_transition(t: &Transition, values: &mut Vec<Value>) {
    values.extend([
        Value::String(Some(t.user_id.as_str().to_owned())),
        Value::String(t.user_name.clone()),
        Value::String(Some(t.kind.as_str().to_owned())),
        Value::String(Some(t.state.clone())),
        Value::String(t.previous_state.clone()),
        Value::String(t.org_presence.clone()),
        Value::String(t.presence_definition_id.clone()),
        Value::ChronoDateTimeUtc(Some(ms(t.event_timestamp))),
        Value::ChronoDateTimeUtc(Some(ms(t.ingested_at))),
        Value::String(Some(t.source.as_str().to_owned())),
    ]);
}

/// One `agents` row with its current state, in [`AGENTS_SQL`]'s column order (timestamps to
/// the millisecond, UTC); the episode log NULL when unchanged.
fn bind_agent(row: &&AgentRow, values: &mut Vec<Value>) {
    let Some(a) = &row.current else {
        unreachable!("partitioned: rows with a current state only")
    };
    values.extend([
        Value::String(Some(row.user_id.as_str().to_owned())),
        Value::String(a.user_name.clone()),
        Value::String(a.presence.clone()),
        Value::String(a.org_presence.clone()),
        Value::ChronoDateTimeUtc(a.presence_since.map(ms)),
        Value::String(a.routing_status.clone()),
        Value::ChronoDateTimeUtc(a.routing_since.map(ms)),
        Value::Int(Some(
            i32::try_from(a.active_conversations).unwrap_or(i32::MAX),
        )),
        Value::ChronoDateTimeUtc(a.idle_since.map(ms)),
        Value::ChronoDateTimeUtc(Some(ms(a.updated_at))),
        Value::String(row.episodes.clone()),
    ]);
}

/// One `agents` row with only its episode log, in [`EPISODES_ONLY_SQL`]'s column order,
/// stamped `now` (UTC, to the millisecond) should it be new.
fn bind_episodes_only(row: &&AgentRow, now: DateTime<Utc>, values: &mut Vec<Value>) {
    values.extend([
        Value::String(Some(row.user_id.as_str().to_owned())),
        Value::Int(Some(0)),
        Value::ChronoDateTimeUtc(Some(now)),
        Value::String(row.episodes.clone()),
    ]);
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`, … (PostgreSQL's form). `sql` holds no
/// `?` but placeholders.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    truncate_to_millis(t)
}

/// One `alerts` row, in [`ALERTS_SQL`]'s column order (timestamps to the millisecond, UTC;
/// durations in whole seconds); status `pending` unless the outcome is already attached.
fn bind_alert(pending: &PendingAlert, values: &mut Vec<Value>) {
    let a = &pending.alert;
    let (status, error, attempts, delivered_at) = match &pending.outcome {
        Some(outcome) => outcome_columns(outcome),
        None => (DeliveryStatus::Pending.as_str(), None, 0, None),
    };
    let seconds = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    values.extend([
        Value::String(Some(a.alert_key.clone())),
        Value::String(Some(a.rule.clone())),
        Value::String(Some(a.user_id.as_str().to_owned())),
        Value::String(a.user_name.clone()),
        Value::String(Some(a.state.clone())),
        Value::ChronoDateTimeUtc(Some(ms(a.since))),
        Value::BigInt(Some(seconds(a.threshold))),
        Value::ChronoDateTimeUtc(Some(ms(a.fired_at))),
        Value::String(Some(status.to_owned())),
        Value::String(error),
        Value::Int(Some(attempts)),
        Value::ChronoDateTimeUtc(delivered_at),
        Value::String(Some(a.episode_key.clone())),
        Value::String(Some(a.kind.as_str().to_owned())),
        Value::Int(Some(match a.kind {
            AlertKind::Firing { repeat } => i32::try_from(repeat).unwrap_or(i32::MAX),
            AlertKind::Resolved { .. } => 0,
        })),
        Value::String(Some(a.severity.clone())),
        Value::String(a.destination.clone()),
        Value::BigInt(match a.kind {
            AlertKind::Resolved { duration } => Some(seconds(duration)),
            AlertKind::Firing { .. } => None,
        }),
        Value::String(a.muted.clone()),
    ]);
}

/// [`OUTCOME_SQL`]'s values for `outcome`.
fn bind_outcome(outcome: &AlertOutcome) -> Vec<Value> {
    let (status, error, attempts, delivered_at) = outcome_columns(outcome);
    vec![
        Value::String(Some(status.to_owned())),
        Value::String(error),
        Value::Int(Some(attempts)),
        Value::ChronoDateTimeUtc(delivered_at),
        Value::String(Some(outcome.alert_key.clone())),
    ]
}

fn dead_letter_row(d: &DeadLetter) -> dead_letter::ActiveModel {
    dead_letter::ActiveModel {
        id: NotSet,
        alert_key: Set(d.alert_key.clone()),
        destination: Set(d.destination.clone()),
        error: Set(d.error.clone()),
        attempts: Set(i32::try_from(d.attempts).unwrap_or(i32::MAX)),
        first_attempt_at: Set(ms(d.first_attempt_at)),
        last_attempt_at: Set(ms(d.last_attempt_at)),
        payload_hash: Set(d.payload_hash.clone()),
    }
}

fn outcome_columns(
    outcome: &AlertOutcome,
) -> (&'static str, Option<String>, i32, Option<DateTime<Utc>>) {
    let delivered_at =
        (outcome.status == DeliveryStatus::Delivered).then(|| ms(outcome.finished_at));
    (
        outcome.status.as_str(),
        outcome.error.clone(),
        i32::try_from(outcome.attempts).unwrap_or(i32::MAX),
        delivered_at,
    )
}

#[cfg(test)]
mod tests {
    use super::super::entity::agent_status;
    use super::*;
    use sea_orm::{EntityName, IdenStatic, Iterable};

    #[test]
    fn a_batch_splits_into_chunks_of_ten_shapes() {
        for n in [0, 1, 7, 127, 128, 129, 300, 500, 511, 512, 513, 1000, 5000] {
            let chunks = row_chunks(n);
            let mut next = 0;
            for &(start, len) in &chunks {
                assert_eq!(start, next, "contiguous");
                assert!(len.is_power_of_two() && len <= ROW_CHUNK, "{len}");
                next += len;
            }
            assert_eq!(next, n, "every row of {n}");
        }
        let lens = |n| row_chunks(n).iter().map(|c| c.1).collect::<Vec<_>>();
        assert_eq!(lens(300), [256, 32, 8, 4]);
        assert_eq!(lens(500), [256, 128, 64, 32, 16, 4]);
        assert_eq!(lens(1200), [512, 512, 128, 32, 16]);
    }

    /// The quoted column names of `sql`'s `INSERT` list.
    fn inserted_columns(sql: &RowsSql) -> Vec<String> {
        let list = sql
            .head
            .split_once('(')
            .unwrap()
            .1
            .split_once(')')
            .unwrap()
            .0;
        list.split(", ").map(str::to_owned).collect()
    }

    fn quoted<C: IdenStatic>(columns: impl Iterator<Item = C>) -> Vec<String> {
        columns.map(|c| format!("\"{}\"", c.as_str())).collect()
    }

    #[test]
    fn each_insert_names_every_column_of_its_table() {
        let status =
            quoted(agent_status::Column::iter().filter(|c| !matches!(c, agent_status::Column::Id)));
        assert_eq!(inserted_columns(&TRANSITIONS_SQL), status);
        assert_eq!(TRANSITIONS_SQL.columns, status.len());
        assert!(
            TRANSITIONS_SQL
                .head
                .contains(&format!("\"{}\"", agent_status::Entity.table_name()))
        );

        let columns = quoted(agent::Column::iter());
        assert!(
            AGENTS_SQL
                .head
                .contains(&format!("\"{}\"", agent::Entity.table_name()))
        );
        assert_eq!(inserted_columns(&AGENTS_SQL), columns);
        assert_eq!(AGENTS_SQL.columns, columns.len());
        // The upsert replaces every column but the key; the episode log only when one is bound.
        assert_eq!(columns[0], "\"user_id\"");
        for column in &columns[1..] {
            let set = if column == "\"episodes\"" {
                format!("{column} = COALESCE(excluded.{column}, \"agents\".{column})")
            } else {
                format!("{column} = excluded.{column}")
            };
            assert!(AGENTS_SQL.tail.contains(&set), "{column} not updated");
        }
        // The episode-only upsert fills what `agents` requires and updates the log alone.
        assert_eq!(
            inserted_columns(&EPISODES_ONLY_SQL),
            [
                "\"user_id\"",
                "\"active_conversations\"",
                "\"updated_at\"",
                "\"episodes\""
            ]
        );
        assert_eq!(EPISODES_ONLY_SQL.columns, 4);
        assert!(
            EPISODES_ONLY_SQL
                .tail
                .ends_with("DO UPDATE SET \"episodes\" = excluded.\"episodes\"")
        );
    }

    #[test]
    fn the_alert_insert_names_every_column_but_id_and_the_outcome_update_its_four() {
        use super::super::entity::alert;
        let columns = quoted(alert::Column::iter().filter(|c| !matches!(c, alert::Column::Id)));
        assert_eq!(inserted_columns(&ALERTS_SQL), columns);
        assert_eq!(ALERTS_SQL.columns, columns.len());
        assert!(
            ALERTS_SQL
                .head
                .contains(&format!("\"{}\"", alert::Entity.table_name()))
        );
        assert_eq!(OUTCOME_SQL.matches('?').count(), 5);
        assert_eq!(
            numbered_placeholders(OUTCOME_SQL),
            "UPDATE \"alerts\" SET \"delivery_status\" = $1, \"delivery_error\" = $2, \
             \"attempts\" = $3, \"delivered_at\" = $4 WHERE \"alert_key\" = $5"
        );
    }

    #[test]
    fn placeholders_follow_the_backend() {
        let sqlite = TRANSITIONS_SQL.text(DbBackend::Sqlite, 2);
        assert_eq!(sqlite.matches('?').count(), 2 * TRANSITIONS_SQL.columns);
        assert!(sqlite.ends_with(
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (\"user_id\", \"kind\", \
             \"event_timestamp\") DO NOTHING"
        ));
        let postgres = TRANSITIONS_SQL.text(DbBackend::Postgres, 2);
        assert!(postgres.contains("($1, $2, $3, $4, $5, $6, $7, $8, $9, $10), ($11, "));
        assert!(postgres.contains("$20)"));
        assert!(!postgres.contains('?'));
        let episodes = EPISODES_ONLY_SQL.text(DbBackend::Postgres, 2);
        assert!(episodes.contains("VALUES ($1, $2, $3, $4), ($5, $6, $7, $8) ON CONFLICT"));
    }
}

//! Figure 1, ingest throughput end to end: the whole service on the simulator in firehose mode
//! (every agent's scripted transitions as fast as the sockets take them, back-pressured, never
//! dropped), transitions stored per second from the firehose's start until `agent_status`
//! holds the ground truth's count. Beside it, in the same run, the same rows into the same
//! schema two ways with `rusqlite` (the same `libsqlite3-sys` as sqlx): the limit (prepared
//! statement, one transaction per batch of the size the service committed on average, at least
//! its `batch_rows`; WAL, `synchronous=NORMAL`) and the naive design (one autocommit INSERT per
//! event, default rollback journal and `synchronous`). A third, informational line writes each
//! user's `agents` row (current state and episode log) too, once per user per batch (not the
//! target's limit).

use std::path::Path;
use std::time::{Duration, Instant};

use agent_monitor::config::PersistenceConfig;
use rusqlite::types::Value as SqlValue;

use crate::common::{Ctx, emit, runtime, skipped};
use crate::service::{Knobs, Service, fresh_db, remove_db, start_sim};

/// The columns the service writes (all but `id`).
const COLUMNS: &str = "user_id, user_name, kind, state, previous_state, org_presence, \
                       presence_definition_id, event_timestamp, ingested_at, source";
/// How many [`COLUMNS`].
const COLUMN_COUNT: usize = 10;

pub fn run(ctx: &Ctx) {
    // (agents, transitions per agent)
    let sizes: &[(usize, usize)] = ctx.pick(
        &[(1_000, 20), (10_000, 4)],
        &[(1_000, 100), (10_000, 20), (50_000, 6)],
    );
    for &(agents, per_agent) in sizes {
        one_size(ctx, agents, per_agent);
    }
}

fn one_size(ctx: &Ctx, agents: usize, per_agent: usize) {
    let name = format!("ingest.{}k", agents / 1000);
    let db_path = fresh_db(&format!("ingest-{agents}"));
    let rt = runtime();
    let measured = rt.block_on(async {
        // 1,000 topics per channel: 50 k agents need 50 channels, above Genesys's 20.
        let channels = agents.div_ceil(1000);
        let sim = start_sim(agents, |c| {
            c.max_channels = c.max_channels.max(channels);
        })
        .await;
        if channels > agent_monitor::sim::MAX_CHANNELS {
            eprintln!(
                "# {name}: simulator max_channels raised to {channels} (Genesys allows {})",
                agent_monitor::sim::MAX_CHANNELS
            );
        }
        // The start-up is figure 6's subject: a large rate budget only shortens it here.
        let knobs = Knobs {
            rate_limit_per_minute: std::num::NonZeroU32::new(100_000).unwrap(),
            ..Knobs::default()
        };
        let started = Instant::now();
        let svc = Service::start(sim, &db_path, &knobs).await;
        let bootstrap = 2 * agents as i64;
        let Some(up) = svc
            .wait_ready_with_rows(bootstrap, started, Duration::from_secs(600))
            .await
        else {
            let (_, body) = svc.readyz().await;
            eprintln!("# {name}: not ready: {}", body["problems"]);
            svc.stop().await;
            return None;
        };
        eprintln!(
            "# {name}: {agents} agents ready and snapshotted in {:.1} s",
            up.as_secs_f64()
        );
        let base = svc.rows().await;
        let transitions = (agents * per_agent) as i64;
        let load0 = writer_load(&svc).await;
        let stored0 = svc.metric_sum(STORED).await;
        let t0 = Instant::now();
        let firehose = svc.sim.start_firehose(per_agent);
        let limit = Duration::from_secs(600);
        let mut stored = base;
        while stored < base + transitions && t0.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
            stored = svc.rows().await;
        }
        let elapsed = t0.elapsed();
        let report = firehose.finished().await.expect("firehose");
        let truth = svc.sim.ground_truth().await.expect("ground truth");
        let generated = truth.iter().filter(|t| !t.initial).count() as i64;
        let delivered = truth.iter().filter(|t| !t.initial && t.delivered).count() as i64;
        let count = svc.scalar("SELECT COUNT(*) FROM agent_status").await;
        // A batch is counted in the metrics once the persistence actor has taken in its
        // outcome, a moment after its rows became visible.
        let counted = Instant::now();
        while svc.metric_sum(STORED).await - stored0 < transitions as f64
            && counted.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (busy, batches, batch_rows) = writer_load(&svc).await;
        eprintln!(
            "# {name}: the writer committed {} batches ({} rows of every table) in {:.2} s of \
             write time, {:.0} % of the {:.2} s",
            batches - load0.1,
            batch_rows - load0.2,
            busy - load0.0,
            100.0 * (busy - load0.0) / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
        eprintln!(
            "# {name}: {} transitions ({delivered} delivered) in {:.2} s; firehose handed over \
             its last frame after {:.2} s; rows {count} (expected {})",
            report.transitions,
            elapsed.as_secs_f64(),
            report.elapsed.as_secs_f64(),
            base + generated
        );
        svc.stop().await;
        if generated != transitions || count != base + generated {
            eprintln!("# {name}: row count does not match the ground truth");
            return None;
        }
        Some((base, transitions, elapsed, batches - load0.1))
    });
    drop(rt);
    let Some((base, transitions, elapsed, commits)) = measured else {
        skipped(
            &name,
            "the service did not store the ground truth in time (see stderr)",
        );
        return;
    };
    let ours = transitions as f64 / elapsed.as_secs_f64();
    emit(&format!("{name}.service"), ours, "transitions/s");

    let rows = read_rows(&db_path, base);
    // The limit commits batches as large as the service's were on average: `batch_rows`, or
    // more where batches grew while the previous one was written (never a smaller limit).
    let mean = transitions as f64 / commits.max(1.0);
    let batch = PersistenceConfig::default()
        .batch_rows
        .max(mean.round() as usize);
    eprintln!(
        "# {name}: the service committed {transitions} transitions in {commits} transactions, \
         {mean:.0} a transaction on average; the limits use batches of {batch}"
    );
    let raw = raw_batched(&rows, batch, &format!("ingest-{agents}-raw"));
    emit(
        &format!("{name}.raw_batched_limit"),
        raw,
        &format!("rows/s(batch_{batch},WAL,synchronous=NORMAL)"),
    );
    let writer = writer_only(&db_path, base, batch, &format!("ingest-{agents}-writer"));
    emit(
        &format!("{name}.writer_only"),
        writer,
        &format!("rows/s(db::write_batch,batch_{batch},info)"),
    );
    let with_state = raw_with_state(&rows, batch, &format!("ingest-{agents}-state"));
    emit(
        &format!("{name}.raw_with_state"),
        with_state,
        &format!("rows/s(batch_{batch},+agents_row_per_user_per_batch,info)"),
    );
    let naive_cap = ctx.pick(Duration::from_secs(2), Duration::from_secs(5));
    let (naive, naive_rows) = naive(&rows, naive_cap, &format!("ingest-{agents}-naive"));
    emit(
        &format!("{name}.naive"),
        naive,
        &format!("rows/s(autocommit,rollback_journal,first_{naive_rows}_rows)"),
    );
    emit(
        &format!("{name}.ratio_raw"),
        100.0 * ours / raw,
        "%_of_raw(target>=70)",
    );
    emit(
        &format!("{name}.ratio_writer_only"),
        100.0 * writer / raw,
        "%_of_raw(info:the_service's_writer_alone)",
    );
    emit(
        &format!("{name}.ratio_with_state"),
        100.0 * ours / with_state,
        "%_of_with_state(info,not_the_target)",
    );
    emit(
        &format!("{name}.ratio_naive"),
        ours / naive,
        "x_naive(target>=20)",
    );
    remove_db(&db_path);
}

/// The counter of transitions committed (`metrics::write_batch`).
const STORED: &str = "agent_monitor_transitions_stored_total";

/// How much the one writer has done so far (the persistence actor's committed batches, from the
/// process's metrics): (seconds of write time, batches, rows of every table).
async fn writer_load(svc: &Service) -> (f64, f64, f64) {
    (
        svc.metric_sum("agent_monitor_write_batch_duration_seconds_sum")
            .await,
        svc.metric_sum("agent_monitor_write_batch_duration_seconds_count")
            .await,
        svc.metric_sum("agent_monitor_write_batch_rows_sum").await,
    )
}

/// The transitions the service stored (`id > base`), in id order, as SQL values.
fn read_rows(db: &Path, base: i64) -> Vec<Vec<SqlValue>> {
    let conn = rusqlite::Connection::open(db).expect("open service db");
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM agent_status WHERE id > ?1 ORDER BY id"
        ))
        .unwrap();
    stmt.query_map([base], |row| {
        (0..COLUMN_COUNT)
            .map(|i| row.get::<_, SqlValue>(i))
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The service's own writer alone: the same rows (read back as [`Transition`]s) through
/// [`agent_monitor::db::write_batch`] in batches of the service's size, on a fresh database
/// opened by [`agent_monitor::db::connect`] (the service's pool and pragmas), one batch at a
/// time as the persistence actor writes them. Separates the writer path (sea-orm, sqlx, its
/// worker thread) from the rest of the pipeline (simulator, sockets, parse, actors).
fn writer_only(source: &Path, base: i64, batch: usize, name: &str) -> f64 {
    use agent_monitor::db::entity::agent_status;
    use agent_monitor::domain::{Kind, Source, Transition, UserId};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

    let path = fresh_db(name);
    let rt = runtime();
    let rate = rt.block_on(async {
        let src = agent_monitor::db::connect(&format!("sqlite://{}", source.display()))
            .await
            .expect("open service db");
        let rows: Vec<Transition> = agent_status::Entity::find()
            .filter(agent_status::Column::Id.gt(base))
            .order_by_asc(agent_status::Column::Id)
            .all(&src)
            .await
            .expect("read rows")
            .into_iter()
            .map(|m| Transition {
                user_id: UserId::parse(&m.user_id).expect("user id"),
                user_name: m.user_name,
                kind: Kind::parse(&m.kind).expect("kind"),
                state: m.state,
                previous_state: m.previous_state,
                org_presence: m.org_presence,
                presence_definition_id: m.presence_definition_id,
                event_timestamp: m.event_timestamp,
                ingested_at: m.ingested_at,
                source: Source::parse(&m.source).expect("source"),
            })
            .collect();
        src.close().await.ok();
        let db = agent_monitor::db::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .expect("schema");
        let started = Instant::now();
        for chunk in rows.chunks(batch) {
            let batch = agent_monitor::db::Batch {
                transitions: chunk.to_vec(),
                ..Default::default()
            };
            agent_monitor::db::write_batch(&db, &batch)
                .await
                .expect("write batch");
        }
        let rate = rows.len() as f64 / started.elapsed().as_secs_f64();
        db.close().await.ok();
        rate
    });
    drop(rt);
    remove_db(&path);
    rate
}

/// An empty database with the real schema (our migrations, through `db::connect`).
fn empty_schema(name: &str) -> std::path::PathBuf {
    let path = fresh_db(name);
    let url = format!("sqlite://{}?mode=rwc", path.display());
    runtime().block_on(async {
        let db = agent_monitor::db::connect(&url).await.expect("schema");
        db.close().await.ok();
    });
    path
}

fn insert_sql() -> String {
    let placeholders: Vec<String> = (1..=COLUMN_COUNT).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO agent_status ({COLUMNS}) VALUES ({})",
        placeholders.join(", ")
    )
}

/// The limit: prepared statement, one transaction per batch, WAL, `synchronous=NORMAL`.
fn raw_batched(rows: &[Vec<SqlValue>], batch: usize, name: &str) -> f64 {
    let path = empty_schema(name);
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let sql = insert_sql();
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx.prepare_cached(&sql).unwrap();
            for row in chunk {
                stmt.execute(rusqlite::params_from_iter(row.iter()))
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let rate = rows.len() as f64 / started.elapsed().as_secs_f64();
    drop(conn);
    remove_db(&path);
    rate
}

/// A second, informational limit (the target is judged against [`raw_batched`]): the same
/// history rows, and in each batch's transaction the current state the service keeps, one
/// `agents` upsert per distinct user of the batch (the latest row's values and an episode log
/// of about 130 bytes). That is the least a writer pays that commits the current state with
/// every batch, as the service did before it coalesced it per second. (Until the episode log
/// moved into the `agents` row this was `raw_three_tables`, with an `episodes` upsert too.)
fn raw_with_state(rows: &[Vec<SqlValue>], batch: usize, name: &str) -> f64 {
    let path = empty_schema(name);
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let sql = insert_sql();
    let agents_sql = "INSERT INTO agents (user_id, user_name, routing_status, routing_since, \
                      active_conversations, updated_at, episodes) \
                      VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6) \
                      ON CONFLICT (user_id) DO UPDATE SET user_name = excluded.user_name, \
                      routing_status = excluded.routing_status, \
                      routing_since = excluded.routing_since, updated_at = excluded.updated_at, \
                      episodes = excluded.episodes";
    let text = |v: &SqlValue| match v {
        SqlValue::Text(t) => t.clone(),
        other => format!("{other:?}"),
    };
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx.prepare_cached(&sql).unwrap();
            let mut latest: std::collections::HashMap<String, &Vec<SqlValue>> =
                std::collections::HashMap::new();
            for row in chunk {
                stmt.execute(rusqlite::params_from_iter(row.iter()))
                    .unwrap();
                latest.insert(text(&row[0]), row);
            }
            let mut agents = tx.prepare_cached(agents_sql).unwrap();
            for (user, row) in latest {
                let at = text(&row[7]);
                let log = format!(
                    r#"{{"episodes":{{"idle":{{"phase":{{"phase":"pending","start":"{at}","fire_at":"{at}","ended":null}}}}}}}}"#
                );
                agents
                    .execute(rusqlite::params![user, row[1], row[3], row[7], row[8], log])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let rate = rows.len() as f64 / started.elapsed().as_secs_f64();
    drop(conn);
    remove_db(&path);
    rate
}

/// The naive design: one autocommit INSERT per event, the default rollback journal and
/// `synchronous`. It is slow, so it runs for at most `cap` (at least 200 rows).
fn naive(rows: &[Vec<SqlValue>], cap: Duration, name: &str) -> (f64, usize) {
    let path = empty_schema(name);
    let conn = rusqlite::Connection::open(&path).unwrap();
    // `db::connect` left the file in WAL mode (persistent); back to SQLite's default.
    conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
    let sql = insert_sql();
    let started = Instant::now();
    let mut done = 0;
    for row in rows {
        conn.execute(&sql, rusqlite::params_from_iter(row.iter()))
            .unwrap();
        done += 1;
        if done >= 200 && started.elapsed() >= cap {
            break;
        }
    }
    let rate = done as f64 / started.elapsed().as_secs_f64();
    drop(conn);
    remove_db(&path);
    (rate, done)
}

//! Figure 5, history queries on a generated database of 10 M rows (quick: 200 k), timed through
//! our own query functions (`agent_monitor::db`) and, for the reports and one history page, the
//! HTTP API in process (`api::routes`, no socket): p50 and p99 of each.
//!
//! The database has the real schema (our migrations) and is generated inside SQLite (a
//! recursive CTE, the indexes dropped during the load and recreated from their own DDL), under
//! `target/bench-data/history-<rows>.db`, reused when present with the right row count. Rows:
//! 10 k agents (quick: 1 k), alternating routing and presence transitions evenly spread over
//! the 60 days before 2026-11-01, timestamps stored exactly as sqlx stores them.
//! Nothing runs ANALYZE: the planner sees what a real deployment's planner sees.

use std::sync::Arc;
use std::time::Instant;

use agent_monitor::api::{ApiState, ReadinessFn, routes};
use agent_monitor::db::entity::agent_status;
use agent_monitor::db::{DbOptions, HistoryFilter, Keyset, history, history_rows};
use agent_monitor::domain::UserId;
use chrono::{DateTime, TimeDelta, Utc};
use poem::{Endpoint, Request};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Statement};

use crate::common::{Ctx, Summary, bench_data_dir, emit, runtime, summarize};

/// The end of the generated history (fixed, so a generated database stays valid).
const END: &str = "2026-11-01T00:00:00Z";
const SPAN_DAYS: i64 = 60;
const PAGE: u64 = 50;
/// Bumped when the generated rows change, so an old database is not reused.
const LAYOUT: u32 = 2;

struct Shape {
    rows: u64,
    users: u64,
}

impl Shape {
    fn per_user(&self) -> u64 {
        self.rows / self.users
    }
    fn end(&self) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(END).unwrap().to_utc()
    }
    fn start(&self) -> DateTime<Utc> {
        self.end() - TimeDelta::days(SPAN_DAYS)
    }
    fn step_ms(&self) -> i64 {
        SPAN_DAYS * 86_400_000 / self.per_user() as i64
    }
}

fn sql(text: impl Into<String>) -> Statement {
    Statement::from_string(DbBackend::Sqlite, text.into())
}

async fn count(db: &DatabaseConnection) -> u64 {
    db.query_one_raw(sql("SELECT COUNT(*) FROM agent_status"))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap() as u64
}

/// The connection options of the measured pool: the service's defaults, or (to compare
/// settings in one build) `HISTORY_SQLITE_CACHE_KIB`, `HISTORY_SQLITE_MMAP_BYTES` and
/// `HISTORY_SQLITE_ROW_BUFFER`.
fn db_options() -> DbOptions {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut options = DbOptions::default();
    if let Some(kib) = env("HISTORY_SQLITE_CACHE_KIB") {
        options.sqlite_cache_kib = kib as u32;
    }
    if let Some(bytes) = env("HISTORY_SQLITE_MMAP_BYTES") {
        options.sqlite_mmap_bytes = bytes;
    }
    if let Some(rows) = env("HISTORY_SQLITE_ROW_BUFFER") {
        options.sqlite_row_buffer = rows as usize;
    }
    eprintln!(
        "# history: pool with cache_size {} KiB, mmap_size {} bytes, row buffer {}",
        options.sqlite_cache_kib, options.sqlite_mmap_bytes, options.sqlite_row_buffer
    );
    options
}

/// Opens (and generates if needed) the database of `shape`.
async fn database(shape: &Shape) -> DatabaseConnection {
    let path = bench_data_dir().join(format!("history-v{LAYOUT}-{}.db", shape.rows));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    if path.exists() {
        let db = agent_monitor::db::connect_with(&url, db_options())
            .await
            .expect("open bench db");
        if count(&db).await == shape.rows {
            eprintln!("# history: reusing {}", path.display());
            return db;
        }
        db.close().await.ok();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    let started = Instant::now();
    let db = agent_monitor::db::connect(&url)
        .await
        .expect("create bench db");
    // Recreate the indexes after the load, from their own DDL: same schema, far faster load.
    let indexes: Vec<(String, String)> = db
        .query_all_raw(sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' \
             AND tbl_name = 'agent_status' AND sql IS NOT NULL",
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.try_get_by_index(0).unwrap(),
                r.try_get_by_index(1).unwrap(),
            )
        })
        .collect();
    for (name, _) in &indexes {
        db.execute_unprepared(&format!("DROP INDEX {name}"))
            .await
            .unwrap();
    }
    let start_ms = shape.start().timestamp_millis();
    let (users, step) = (shape.users, shape.step_ms());
    let chunk = 500_000u64;
    let mut lo = 0;
    while lo < shape.rows {
        let hi = (lo + chunk).min(shape.rows);
        // x → user x % U, sequence s = x / U (users evenly staggered within each step); kinds alternate; states cycle; the timestamp is
        // written as sqlx writes a DateTime<Utc> (RFC 3339, `+00:00`, milliseconds only when
        // not zero) so bound parameters compare as they do in production.
        let statement = format!(
            "WITH RECURSIVE c(x) AS (SELECT {lo} UNION ALL SELECT x + 1 FROM c WHERE x + 1 < {hi}),
             r AS (SELECT x % {users} AS u, x / {users} AS s,
                          {start_ms} + (x / {users}) * {step} + (x % {users}) * ({step} / {users}) AS ms
                   FROM c),
             t AS (SELECT u, s, ms,
                          strftime('%Y-%m-%dT%H:%M:%S', ms / 1000, 'unixepoch')
                          || CASE WHEN ms % 1000 = 0 THEN '' ELSE printf('.%03d', ms % 1000) END
                          || '+00:00' AS ts
                   FROM r)
             INSERT INTO agent_status (user_id, user_name, kind, state, previous_state,
                                       org_presence, event_timestamp, ingested_at, source)
             SELECT printf('agent-%06d', u), printf('Agent %d', u),
                    CASE s % 2 WHEN 0 THEN 'routing' ELSE 'presence' END,
                    CASE s % 2 WHEN 0
                      THEN CASE (s / 2) % 4 WHEN 0 THEN 'IDLE' WHEN 1 THEN 'INTERACTING'
                                            WHEN 2 THEN 'NOT_RESPONDING' ELSE 'OFF_QUEUE' END
                      ELSE CASE (s / 2) % 4 WHEN 0 THEN 'ON_QUEUE' WHEN 1 THEN 'AVAILABLE'
                                            WHEN 2 THEN 'BREAK' ELSE 'AWAY' END END,
                    CASE s % 2 WHEN 0
                      THEN CASE (s / 2) % 4 WHEN 1 THEN 'IDLE' WHEN 2 THEN 'INTERACTING'
                                            WHEN 3 THEN 'NOT_RESPONDING' ELSE 'OFF_QUEUE' END
                      ELSE CASE (s / 2) % 4 WHEN 1 THEN 'ON_QUEUE' WHEN 2 THEN 'AVAILABLE'
                                            WHEN 3 THEN 'BREAK' ELSE 'AWAY' END END,
                    CASE s % 2 WHEN 0 THEN NULL ELSE 'On Queue' END,
                    ts, ts, 'stream'
             FROM t"
        );
        db.execute_unprepared(&statement)
            .await
            .expect("generate rows");
        lo = hi;
    }
    let loaded = started.elapsed();
    for (_, ddl) in &indexes {
        db.execute_unprepared(ddl).await.expect("recreate index");
    }
    db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
        .await
        .unwrap();
    eprintln!(
        "# history: generated {} rows in {:.1} s (load {:.1} s, {} indexes)",
        shape.rows,
        started.elapsed().as_secs_f64(),
        loaded.as_secs_f64(),
        indexes.len()
    );
    assert_eq!(count(&db).await, shape.rows);
    db
}

/// Times `n` runs of `f(i)` (after one warm-up run) in milliseconds.
async fn time<F, Fut>(n: usize, mut f: F) -> Summary
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f(0).await;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        f(i).await;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    summarize(samples)
}

fn report(name: &str, s: Summary) {
    emit(&format!("history.{name}.p50"), s.p50, "ms");
    emit(&format!("history.{name}.p99"), s.p99, "ms");
}

/// The keyset position of the row with this id.
async fn keyset_of(db: &DatabaseConnection, id: i64) -> Keyset {
    let row = agent_status::Entity::find_by_id(id)
        .one(db)
        .await
        .unwrap()
        .expect("row by id");
    Keyset::of(&row)
}

async fn get(endpoint: &impl Endpoint, uri: &str) -> usize {
    let response = endpoint
        .get_response(Request::builder().uri(uri.parse().unwrap()).finish())
        .await;
    assert!(
        response.status().is_success(),
        "{uri}: {}",
        response.status()
    );
    response.into_body().into_bytes().await.unwrap().len()
}

pub fn run(ctx: &Ctx) {
    let shape = ctx.pick(
        Shape {
            rows: 200_000,
            users: 1_000,
        },
        Shape {
            rows: 10_000_000,
            users: 10_000,
        },
    );
    let (cheap, costly, reports_all) = ctx.pick((200, 10, 3), (500, 10, 5));
    runtime().block_on(async {
        let db = database(&shape).await;
        let rows = shape.rows as i64;
        let user = |i: usize| {
            UserId::parse(&format!("agent-{:06}", (i * 7919) as u64 % shape.users)).unwrap()
        };
        // Sanity: the generated rows are what the query functions expect.
        let check = history(
            &db,
            &HistoryFilter {
                user_id: Some(user(1)),
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(check.total, shape.per_user(), "rows per user as generated");

        let base = HistoryFilter {
            limit: PAGE,
            ..Default::default()
        };
        let db = &db;
        let page = |filter: HistoryFilter| async move {
            let (found, _) = history_rows(db, &filter).await.unwrap();
            assert!(!found.is_empty());
        };
        let page_total = |filter: HistoryFilter| async move {
            let found = history(db, &filter).await.unwrap();
            assert!(!found.rows.is_empty());
        };

        // Middle positions (outside the timing): a different one per run.
        let mids: Vec<Keyset> = {
            let mut v = Vec::new();
            for i in 0..cheap.max(costly) as i64 {
                v.push(keyset_of(db, rows / 2 + i * 997 % (rows / 4)).await);
            }
            v
        };
        let mid = |i: usize| mids[i % mids.len()];

        report("first_page", time(cheap, |_| page(base.clone())).await);
        report(
            "offset_half",
            time(costly, |i| {
                page(HistoryFilter {
                    offset: shape.rows / 2 + (i % 7) as u64,
                    ..base.clone()
                })
            })
            .await,
        );
        report(
            "cursor_half",
            time(cheap, |i| {
                page(HistoryFilter {
                    after: Some(mid(i)),
                    ..base.clone()
                })
            })
            .await,
        );
        report(
            "user_first_page",
            time(cheap, |i| {
                page(HistoryFilter {
                    user_id: Some(user(i)),
                    ..base.clone()
                })
            })
            .await,
        );
        // The user's own middle row: its id is (per_user / 2) · users + user + 1.
        let user_mids: Vec<(UserId, Keyset)> = {
            let mut v = Vec::new();
            for i in 0..cheap {
                let u = (i * 7919) as u64 % shape.users;
                let id = (shape.per_user() / 2 * shape.users + u + 1) as i64;
                v.push((user(i), keyset_of(db, id).await));
            }
            v
        };
        // The HTTP API in process.
        let readiness: ReadinessFn = Arc::new(|| Box::pin(async { None }));
        let api = routes(ApiState {
            db: db.clone(),
            readiness,
            limits: Default::default(),
            alerting: Default::default(),
        });
        let api = &api;
        let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let to = shape.end() - TimeDelta::days(1);
        let month = (to - TimeDelta::days(30), to);
        let day = (to - TimeDelta::days(1), to);
        let report_one = |i: usize| async move {
            get(
                api,
                &format!(
                    "/api/v1/reports/time-in-state?from={}&to={}&user_id={}",
                    rfc(month.0),
                    rfc(month.1),
                    user(i)
                ),
            )
            .await;
        };
        let report_all = |_: usize| async move {
            get(
                api,
                &format!(
                    "/api/v1/reports/time-in-state?from={}&to={}&group_by=user",
                    rfc(day.0),
                    rfc(day.1)
                ),
            )
            .await;
        };
        // `HISTORY_PROFILE_SECS=N`: only loop one query for N seconds (for `perf record`), then
        // stop without timing anything else. `HISTORY_PROFILE_QUERY` picks it: `user_cursor`
        // (default, the user cursor page), `report_one` or `report_all`.
        if let Some(secs) = std::env::var("HISTORY_PROFILE_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            let what = std::env::var("HISTORY_PROFILE_QUERY").unwrap_or("user_cursor".into());
            let deadline = Instant::now() + std::time::Duration::from_secs(secs);
            let mut runs = 0usize;
            eprintln!("# history: profiling {what} for {secs} s");
            while Instant::now() < deadline {
                match what.as_str() {
                    "report_one" => report_one(runs).await,
                    "report_all" => report_all(runs).await,
                    _ => {
                        let (user_id, after) = user_mids[runs % user_mids.len()].clone();
                        page(HistoryFilter {
                            user_id: Some(user_id),
                            after: Some(after),
                            ..base.clone()
                        })
                        .await
                    }
                }
                runs += 1;
            }
            eprintln!("# history: {runs} runs of {what}");
            return;
        }
        report(
            "user_cursor_half",
            time(cheap, |i| {
                let (user_id, after) = user_mids[i % user_mids.len()].clone();
                page(HistoryFilter {
                    user_id: Some(user_id),
                    after: Some(after),
                    ..base.clone()
                })
            })
            .await,
        );
        report(
            "state_first_page",
            time(cheap, |_| {
                page(HistoryFilter {
                    state: Some("IDLE".into()),
                    ..base.clone()
                })
            })
            .await,
        );
        report(
            "state_cursor_half",
            time(cheap, |i| {
                page(HistoryFilter {
                    state: Some("IDLE".into()),
                    after: Some(mid(i)),
                    ..base.clone()
                })
            })
            .await,
        );
        let hour = |i: usize| {
            let from = shape.start() + TimeDelta::hours(24 * 20 + (i % 500) as i64);
            (from, from + TimeDelta::hours(1))
        };
        report(
            "window_1h_first_page",
            time(cheap, |i| {
                let (from, to) = hour(i);
                page(HistoryFilter {
                    from: Some(from),
                    to: Some(to),
                    ..base.clone()
                })
            })
            .await,
        );
        // What GET /api/v1/agent-status/history runs: the page and `total` (a COUNT).
        report(
            "first_page_with_total",
            time(costly, |_| page_total(base.clone())).await,
        );
        report(
            "cursor_half_with_total",
            time(costly, |i| {
                page_total(HistoryFilter {
                    after: Some(mid(i)),
                    ..base.clone()
                })
            })
            .await,
        );
        report(
            "user_cursor_half_with_total",
            time(cheap, |i| {
                let (user_id, after) = user_mids[i % user_mids.len()].clone();
                page_total(HistoryFilter {
                    user_id: Some(user_id),
                    after: Some(after),
                    ..base.clone()
                })
            })
            .await,
        );

        report(
            "api_user_first_page",
            time(cheap, |i| async move {
                get(
                    api,
                    &format!(
                        "/api/v1/agent-status/history?limit={PAGE}&user_id={}",
                        user(i)
                    ),
                )
                .await;
            })
            .await,
        );
        report(
            "report_one_agent_30d",
            time(cheap.min(100), report_one).await,
        );
        report("report_all_agents_1d", time(reports_all, report_all).await);
    });
}

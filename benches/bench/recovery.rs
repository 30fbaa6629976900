//! Figure 7, recovery: under a steady event load (a compressed shift: every agent changing
//! state about once a second), the simulator drops every socket (TCP closed without a close
//! frame, as a network cut). Reported: the time until the stream flows again (every
//! connection connected and subscribed again, and a stream row with a timestamp after the
//! drop stored) and until the gap is backfilled (`/readyz` `last_backfill` with trigger
//! `reconnect` finished after the drop). Afterwards every ground-truth transition must be
//! stored exactly once (checked, printed on stderr).

use std::time::{Duration, Instant};

use agent_monitor::sim::ShiftConfig;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::common::{Ctx, emit, runtime, skipped};
use crate::service::{Knobs, Service, fresh_db, remove_db, start_sim};

/// Sum of every connection's `reconnects`, and whether all are connected and subscribed.
fn connections(ready: &Value) -> (u64, bool) {
    let Some(conns) = ready["connections"].as_array() else {
        return (0, false);
    };
    let reconnects = conns
        .iter()
        .map(|c| c["reconnects"].as_u64().unwrap_or(0))
        .sum();
    let up = !conns.is_empty()
        && conns
            .iter()
            .all(|c| c["connected"] == true && c["subscribed"] == true);
    (reconnects, up)
}

/// A timestamp as sqlx stores a `DateTime<Utc>` (milliseconds always shown: compares
/// correctly as text with stored values, which omit `.000`).
fn db_text(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string()
}

pub fn run(ctx: &Ctx) {
    let agents = ctx.pick(1_000, 10_000);
    let mean_hold = ctx.pick(Duration::from_millis(800), Duration::from_secs(4));
    let shift_len = ctx.pick(Duration::from_secs(8), Duration::from_secs(20));
    let steady = ctx.pick(Duration::from_secs(3), Duration::from_secs(6));
    let name = format!("recovery.{}k", agents / 1000);
    let db_path = fresh_db("recovery");
    let rt = runtime();
    let measured = rt.block_on(async {
        let sim = start_sim(agents, |_| {}).await;
        // The default margin (60 s) re-reads a minute before the gap: at benchmark rates that
        // is the whole run. 1 s, as the backfill tests use.
        let knobs = Knobs {
            backfill_margin: Duration::from_secs(1),
            ..Knobs::default()
        };
        let started = Instant::now();
        let svc = Service::start(sim, &db_path, &knobs).await;
        svc.wait_ready_with_rows(2 * agents as i64, started, Duration::from_secs(300))
            .await?;
        let shift = svc
            .sim
            .start_shift(ShiftConfig {
                duration: shift_len,
                idle_threshold: Duration::from_secs(2),
                margin: Duration::from_millis(500),
                mean_hold,
                ..ShiftConfig::default()
            })
            .await
            .ok()?;
        tokio::time::sleep(steady).await;
        let (before, _) = connections(&svc.readyz().await.1);
        let rows_before = svc.rows().await;
        let drop_ts = db_text(svc.sim.now().await.ok()?);
        let drop_utc = Utc::now();
        let t0 = Instant::now();
        svc.sim.drop_sockets().await.ok()?;
        let limit = Duration::from_secs(120);
        // Connected and subscribed again.
        let connected = loop {
            let (reconnects, up) = connections(&svc.readyz().await.1);
            if reconnects > before && up {
                break t0.elapsed();
            }
            if t0.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // A stream row generated after the drop is stored.
        let flowing = loop {
            let n = svc
                .scalar(&format!(
                    "SELECT COUNT(*) FROM agent_status WHERE source = 'stream' \
                     AND event_timestamp > '{drop_ts}'"
                ))
                .await;
            if n > 0 {
                break t0.elapsed();
            }
            if t0.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // The gap backfilled.
        let (backfilled, run) = loop {
            let (_, ready) = svc.readyz().await;
            let run = ready["last_backfill"].clone();
            let finished = run["finished_at"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc));
            if run["trigger"] == "reconnect" && run["error"].is_null() {
                if let Some(finished) = finished.filter(|f| *f > drop_utc) {
                    let after = (finished - drop_utc).to_std().unwrap_or_default();
                    break (after, run);
                }
            }
            if t0.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let summary = shift.finished().await.ok();
        let truth = svc.sim.ground_truth().await.ok()?;
        let expected = 2 * agents as i64 + truth.iter().filter(|t| !t.initial).count() as i64;
        let undelivered = truth.iter().filter(|t| !t.initial && !t.delivered).count();
        // COUNT(*), not MAX(id): ids need not be dense once the backfill and the stream meet.
        let deadline = Instant::now() + Duration::from_secs(30);
        let count_sql = "SELECT COUNT(*) FROM agent_status";
        let mut count = svc.scalar(count_sql).await;
        while count < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            count = svc.scalar(count_sql).await;
        }
        eprintln!(
            "# {name}: {agents} agents, shift {:?} ({} transitions), drop after {:?} at row \
             {rows_before}; {undelivered} transitions generated while no socket listened; \
             backfill {run}; rows {count} of {expected} expected{}",
            shift_len,
            summary.map_or(0, |s| s.transitions),
            steady,
            if count == expected {
                " (complete)"
            } else {
                " (INCOMPLETE)"
            }
        );
        svc.stop().await;
        Some((connected, flowing, backfilled, run))
    });
    drop(rt);
    remove_db(&db_path);
    let Some((connected, flowing, backfilled, run)) = measured else {
        skipped(
            &name,
            "the service did not recover within 120 s (see stderr)",
        );
        return;
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    emit(
        &format!("{name}.reconnected"),
        ms(connected),
        "ms(drop_to_all_connected_and_subscribed)",
    );
    emit(
        &format!("{name}.flowing"),
        ms(flowing),
        "ms(drop_to_first_post_drop_stream_row)",
    );
    emit(
        &format!("{name}.backfilled"),
        ms(backfilled),
        "ms(drop_to_reconnect_backfill_finished)",
    );
    emit(
        &format!("{name}.backfill_records"),
        run["records"].as_f64().unwrap_or(0.0),
        &format!("records_in_{}_requests", run["requests"]),
    );
}

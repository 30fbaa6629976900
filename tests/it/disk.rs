//! The SQLite file under faults of its disk, with the real service on the simulator:
//!
//! - a disk that fills up (real `ENOSPC` on a small tmpfs, so `COMMIT` itself fails with
//!   `SQLITE_FULL`) and is freed again: every transition is stored exactly once, as seen by a
//!   connection of its own, and readiness recovers;
//! - a database file deleted while the service runs and writes keep succeeding: `/readyz`
//!   turns 503 naming the file.
//!
//! The disk-full test mounts a tmpfs, so it needs root; without it, it prints
//! `skipped: needs root to mount tmpfs` and passes (CI runs as root).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_monitor::app::App;
use agent_monitor::db::entity::agent_status;
use agent_monitor::sim::{GroundTruthTransition, ShiftConfig, Simulator, TransitionKind};
use chrono::{DateTime, Utc};
use sea_orm::EntityTrait;
use serde_json::Value;

use crate::helpers::{SlackReceiver, wait_a_while, wait_for};
use crate::service::{Opts, config_for, start_sim, temp_db_path};

const AGENTS: usize = 40;
const DEADLINE: Duration = Duration::from_secs(60);

/// A small tmpfs mounted for one test, unmounted (lazily, so an open file cannot keep it
/// busy) and removed when dropped, even when the test panics.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_kib` KiB on a fresh directory; `None` when that is not possible
    /// (not root, no `mount`).
    fn mount(size_kib: u64) -> Option<Tmpfs> {
        let dir = temp_db_path().with_extension("tmpfs");
        std::fs::create_dir_all(&dir).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Writes zeros to `path` until the disk is full; returns the bytes written.
fn fill_disk(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    let mut written = 0;
    while let Ok(n) = file.write(&chunk) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    let _ = file.sync_all();
    written
}

/// `/readyz`: (status 200?, body).
async fn readyz(http: &reqwest::Client, base: &str) -> Option<(bool, Value)> {
    let r = http.get(format!("{base}/readyz")).send().await.ok()?;
    let ok = r.status() == 200;
    Some((ok, r.json().await.ok()?))
}

/// Every `agent_status` row read through a connection of its own (not the service's pool, whose
/// connections could see their own uncommitted rows): (user, kind, Genesys time) → states.
async fn stored_rows(path: &Path) -> HashMap<(String, String, DateTime<Utc>), Vec<String>> {
    let db = sea_orm::Database::connect(format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    let mut stored: HashMap<_, Vec<String>> = HashMap::new();
    for row in agent_status::Entity::find().all(&db).await.unwrap() {
        stored
            .entry((row.user_id, row.kind, row.event_timestamp))
            .or_default()
            .push(row.state);
    }
    db.close().await.unwrap();
    stored
}

/// The transitions of the ground truth the service must store: all but those superseded (per
/// user and dimension) before `service_start`, which it can only learn through the snapshot.
fn expected(
    all: &[GroundTruthTransition],
    service_start: DateTime<Utc>,
) -> Vec<GroundTruthTransition> {
    let mut known_at_start: HashMap<(String, TransitionKind), DateTime<Utc>> = HashMap::new();
    for t in all.iter().filter(|t| t.at <= service_start) {
        let at = known_at_start
            .entry((t.user_id.clone(), t.kind))
            .or_insert(t.at);
        *at = (*at).max(t.at);
    }
    all.iter()
        .filter(|t| {
            known_at_start
                .get(&(t.user_id.clone(), t.kind))
                .is_none_or(|last| t.at >= *last)
        })
        .cloned()
        .collect()
}

fn kind_name(kind: TransitionKind) -> &'static str {
    match kind {
        TransitionKind::Presence => "presence",
        TransitionKind::Routing => "routing",
    }
}

/// The tester's reproduction, made a test: batches whose `COMMIT` failed with "database or
/// disk is full" left sqlx's connection inside a transaction that never committed, so the
/// later batches were counted as stored but never became visible to other connections (and
/// were lost at stop). Here the disk fills during a shift and is freed again; then every
/// transition must be stored exactly once, as read by a connection of its own, and `/readyz`
/// must be 200 again.
/// A shift of `duration` on `sim` with agents changing state every `mean_hold` on average
/// (idle threshold 2 s, so alerts come and go too): steady writes for the disk tests.
async fn busy_shift(
    sim: &Simulator,
    seed: u64,
    duration: Duration,
    mean_hold: Duration,
) -> agent_monitor::sim::ShiftHandle {
    sim.start_shift(ShiftConfig {
        seed,
        duration,
        idle_threshold: Duration::from_secs(2),
        margin: Duration::from_millis(500),
        mean_hold,
        ..ShiftConfig::default()
    })
    .await
    .unwrap()
}

/// The service on `sim` with its SQLite file at `db_path`, once `/readyz` says ready: the app,
/// the Slack receiver (keep it alive), an HTTP client and the API's base URL.
async fn ready_service(
    sim: &Simulator,
    db_path: &Path,
) -> (App, SlackReceiver, reqwest::Client, String) {
    let slack = SlackReceiver::start().await;
    let app = App::start(config_for(
        sim,
        &slack,
        db_path,
        &Opts {
            agents: AGENTS,
            ..Opts::default()
        },
    ))
    .await
    .unwrap();
    let base = format!("http://{}", app.api_addr());
    let http = reqwest::Client::new();
    wait_for("the service ready", DEADLINE, || async {
        readyz(&http, &base).await.filter(|(ok, _)| *ok).map(|_| ())
    })
    .await;
    (app, slack, http, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_once_space_is_freed() {
    let Some(tmpfs) = Tmpfs::mount(8 * 1024) else {
        println!("skipped: needs root to mount tmpfs");
        return;
    };
    let sim = start_sim(AGENTS).await;
    for id in sim.agent_ids().await.unwrap() {
        sim.set_routing_status(&id, "INTERACTING").await.unwrap();
    }
    let service_start = sim.now().await.unwrap();
    let db_path = tmpfs.dir.join("db.sqlite");
    let (app, _slack, http, base) = ready_service(&sim, &db_path).await;

    let shift = busy_shift(&sim, 3, Duration::from_secs(12), Duration::from_millis(300)).await;

    // Fill the disk while the shift runs: the commits now fail with SQLITE_FULL.
    wait_a_while(Duration::from_secs(2)).await;
    let filler = tmpfs.dir.join("filler");
    let filled = fill_disk(&filler);
    assert!(filled > 0, "the filler took no space");
    let body = wait_for("/readyz to report the full disk", DEADLINE, || async {
        let (ok, body) = readyz(&http, &base).await?;
        let full = body["database"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("full"));
        (!ok && full).then_some(body)
    })
    .await;
    assert_eq!(body["database"]["writable"], false, "{body}");
    // Let several flushes fail (each one a COMMIT refused on the full disk).
    wait_a_while(Duration::from_secs(3)).await;

    // Free the space: everything kept in memory must now be committed.
    std::fs::remove_file(&filler).unwrap();
    let summary = shift.finished().await.unwrap();
    let truth = expected(&sim.ground_truth().await.unwrap(), service_start);
    assert!(
        truth.len() > 2 * AGENTS,
        "the shift generated transitions: {summary:?}"
    );

    wait_for("/readyz 200 again", DEADLINE, || async {
        readyz(&http, &base).await.filter(|(ok, _)| *ok).map(|_| ())
    })
    .await;
    // Every transition visible to another connection (on the old code the rows after the
    // first failed COMMIT never were).
    let _ = tokio::time::timeout(
        DEADLINE,
        wait_for("every transition stored", DEADLINE * 2, || async {
            let stored = stored_rows(&db_path).await;
            let n: usize = stored.values().map(Vec::len).sum();
            (n >= truth.len()).then_some(())
        }),
    )
    .await;

    let mut stored = stored_rows(&db_path).await;
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for t in &truth {
        let kind = kind_name(t.kind);
        match stored.remove(&(t.user_id.clone(), kind.to_string(), t.at)) {
            None => missing.push(format!("{} {kind} {} at {}", t.user_id, t.value, t.at)),
            Some(states) if states != [t.value.clone()] => wrong.push(format!(
                "{} {kind} at {}: {states:?} != {}",
                t.user_id, t.at, t.value
            )),
            Some(_) => {}
        }
    }
    let extra: Vec<_> = stored.keys().take(10).collect();
    app.shutdown().await;
    assert!(
        missing.is_empty() && wrong.is_empty() && extra.is_empty(),
        "of {} transitions: {} missing (first: {:?}), {} wrong ({:?}), {} extra ({extra:?})",
        truth.len(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        wrong.len(),
        wrong.iter().take(5).collect::<Vec<_>>(),
        stored.len(),
    );
    drop(tmpfs);
}

/// A SQLite file deleted while a shift keeps every flush committing (so the write check that
/// runs only after a quiet spell never ran): the service wrote on into the deleted inode, whose
/// rows are lost at restart, and stayed ready. `/readyz` must turn 503 with a message naming
/// the file, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_deleted_under_steady_writes_is_reported_by_name() {
    let sim = start_sim(AGENTS).await;
    let db_path = temp_db_path();
    let (app, _slack, http, base) = ready_service(&sim, &db_path).await;
    let shift = busy_shift(&sim, 4, Duration::from_secs(8), Duration::from_millis(200)).await;
    wait_a_while(Duration::from_secs(1)).await;

    std::fs::remove_file(&db_path).unwrap();
    let deleted_at = std::time::Instant::now();
    let body = wait_for(
        "/readyz 503 naming the deleted file",
        Duration::from_secs(5),
        || async {
            let (ok, body) = readyz(&http, &base).await?;
            let error = body["database"]["error"].as_str().unwrap_or_default();
            (!ok && error.contains("deleted") && error.contains(&*db_path.to_string_lossy()))
                .then_some(body)
        },
    )
    .await;
    assert_eq!(body["database"]["writable"], false, "{body}");
    assert!(
        deleted_at.elapsed() < Duration::from_secs(5),
        "noticed after {:?}",
        deleted_at.elapsed()
    );
    // The API never creates an empty database in its place (which answered 500 "no such
    // table"): a connection opened now fails, and that is a 503.
    let answers = futures_util::future::join_all((0..12).map(|_| async {
        let r = http
            .get(format!("{base}/api/v1/agent-status/history?limit=100"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }))
    .await;
    for (status, body) in &answers {
        assert!(
            *status == 200 || (*status == 503 && body.contains("cannot be opened")),
            "{status} {body}"
        );
    }
    // It stays so: nothing is written into the deleted file while the shift goes on.
    shift.finished().await.unwrap();
    let (ok, body) = readyz(&http, &base).await.unwrap();
    assert!(!ok, "{body}");
    assert!(
        !db_path.exists(),
        "a new file was created at {}",
        db_path.display()
    );
    app.shutdown().await;
    for suffix in ["-wal", "-shm"] {
        let mut p = db_path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// The SQLite file replaced by another database while the service runs (a restore from a
/// backup over the live file, say). The old database's `-wal` file stays beside the new one:
/// a connection the pool opened on the path then "recovered" the old pages into the new file
/// and corrupted it (one report request was enough). Now the service reports the replacement,
/// closes its connections, answers 503, and leaves the new file exactly as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_replaced_under_the_service_is_left_intact() {
    let sim = start_sim(AGENTS).await;
    let db_path = temp_db_path();
    let (app, _slack, http, base) = ready_service(&sim, &db_path).await;
    let shift = busy_shift(&sim, 5, Duration::from_secs(6), Duration::from_millis(200)).await;
    wait_a_while(Duration::from_secs(1)).await;

    // Another database, made beside it and renamed over it.
    let replacement = db_path.with_extension("replacement");
    {
        let other = rusqlite::Connection::open(&replacement).unwrap();
        other
            .execute_batch("CREATE TABLE kept (v INTEGER); INSERT INTO kept VALUES (42);")
            .unwrap();
    }
    let original = std::fs::read(&replacement).unwrap();
    std::fs::rename(&replacement, &db_path).unwrap();

    let body = wait_for(
        "/readyz 503 naming the replaced file",
        Duration::from_secs(5),
        || async {
            let (ok, body) = readyz(&http, &base).await?;
            let error = body["database"]["error"].as_str().unwrap_or_default();
            (!ok && error.contains("replaced")).then_some(body)
        },
    )
    .await;
    assert_eq!(body["database"]["writable"], false, "{body}");
    // Every kind of read and write the API makes: each answers, none is a 500.
    let now = chrono::Utc::now();
    let window = format!(
        "from={}&to={}",
        (now - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    for path in [
        "/api/v1/agent-status/history?limit=100".to_owned(),
        format!("/api/v1/reports/time-in-state?{window}"),
        "/api/v1/agents".to_owned(),
        "/api/v1/alerts".to_owned(),
        "/api/v1/silences".to_owned(),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert!(
            status == 200 || (status == 503 && text.contains("cannot be opened")),
            "{path}: {status} {text}"
        );
    }
    let r = http
        .post(format!("{base}/api/v1/silences"))
        .json(&serde_json::json!({
            "rule": "idle",
            "until": (now + chrono::Duration::hours(1)).to_rfc3339(),
            "comment": "after the replacement"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503, "{}", r.text().await.unwrap());
    shift.finished().await.unwrap();
    app.shutdown().await;

    // The replacement is untouched: same bytes, its table and row intact.
    assert_eq!(
        std::fs::read(&db_path).unwrap(),
        original,
        "the replacement file was written to"
    );
    let other = rusqlite::Connection::open(&db_path).unwrap();
    let check: String = other
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let v: i64 = other
        .query_row("SELECT v FROM kept", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 42);
}

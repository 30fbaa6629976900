//! What every figure shares: the mode, the output format, percentiles, resident memory.

use std::path::PathBuf;

/// Run-wide settings.
pub struct Ctx {
    /// `--quick`: smaller sizes and shorter runs (about a minute in all).
    pub quick: bool,
}

impl Ctx {
    /// `quick` in quick mode, else `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// Prints one figure line: `name value unit`.
pub fn emit(name: &str, value: f64, unit: &str) {
    let shown = if value == 0.0 || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    };
    println!("{name} {shown} {unit}");
}

/// Prints `name skipped reason` for a figure (or part of one) that cannot run.
pub fn skipped(name: &str, reason: &str) {
    println!("{name} skipped {reason}");
}

/// Context lines (not figures) go to stderr, prefixed with `#`.
pub fn describe_machine(ctx: &Ctx) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| meminfo_field(&s, "MemTotal:"))
        .unwrap_or(0);
    eprintln!(
        "# agent-monitor bench, mode {}, {cores} cores, {:.1} GiB memory",
        if ctx.quick { "quick" } else { "full" },
        mem_kb as f64 / 1024.0 / 1024.0
    );
}

fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// This process's resident set (`VmRSS` of `/proc/self/status`), in KiB.
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| meminfo_field(&s, "VmRSS:"))
        .expect("VmRSS in /proc/self/status (Linux only)")
}

/// Time this thread has spent on a CPU (`/proc/thread-self/schedstat`, nanoseconds). Rates
/// over on-CPU time are robust on a shared machine: time spent waiting for a core is not
/// counted against the code measured.
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux with schedstats)")
}

/// p50, p99 and max of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentiles of `values` (any order, not empty).
pub fn summarize(mut values: Vec<f64>) -> Summary {
    assert!(!values.is_empty(), "no samples");
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let idx = ((p / 100.0) * values.len() as f64).ceil() as usize;
        values[idx.clamp(1, values.len()) - 1]
    };
    Summary {
        p50: rank(50.0),
        p99: rank(99.0),
        max: *values.last().unwrap(),
    }
}

/// Median of a small sample.
pub fn median(values: &[f64]) -> f64 {
    summarize(values.to_vec()).p50
}

/// `target/bench-data/` (never committed): generated databases and scratch files.
pub fn bench_data_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    dir
}

/// A multi-threaded tokio runtime like the service's (one worker per core).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

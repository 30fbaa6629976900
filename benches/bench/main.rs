//! The benchmark harness of issue 6: every figure measures one stage of the pipeline beside its
//! limit on the same machine in the same run, and prints one line per value,
//! `name value unit` (or `name skipped reason` for a figure that cannot run yet).
//!
//! ```sh
//! cargo bench --bench bench -- --quick            # about a minute
//! cargo bench --bench bench                       # the full figures (BENCHMARKS.md)
//! cargo bench --bench bench -- --only parse,alert # some figures only
//! ```
//!
//! Not part of the test suite: nothing here asserts a time. Figures that measure a whole
//! process (memory) run in a child process of this binary (`--child …`), so allocator state
//! never leaks from one configuration into the next.

mod alert;
mod common;
mod heap;
mod history;
mod ingest;
mod memory;
mod parse;
mod recovery;
mod service;
mod startup;

use common::Ctx;

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

/// Every figure in issue-6 order: (name, what it needs).
const FIGURES: [&str; 7] = [
    "ingest", "parse", "alert", "memory", "history", "startup", "recovery",
];

/// The harness's command line. Unknown arguments are refused (exit 2) rather than ignored:
/// a typo such as `--quik` must not start the full run.
#[derive(Debug, clap::Parser)]
#[command(
    name = "bench",
    bin_name = "cargo bench --bench bench --",
    about = "agent-monitor's benchmark figures (BENCHMARKS.md): one line per value.",
    after_help = "Run it with: cargo bench --bench bench -- [--quick] [--only LIST]"
)]
struct BenchArgs {
    /// Shorter runs of every figure (about a minute instead of about eight).
    #[arg(long)]
    quick: bool,
    /// Run only these figures (comma-separated), in the usual order.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(FIGURES))]
    only: Option<Vec<String>>,
    /// Passed by `cargo bench` to every bench target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A memory figure's child process (`--child …`, started by this binary): its arguments
    // are `memory::child`'s own.
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        memory::child(&args[pos + 1..]);
        return;
    }
    let BenchArgs { quick, only, .. } = <BenchArgs as clap::Parser>::parse();
    let ctx = Ctx { quick };
    agent_monitor::app::install_crypto_provider();
    common::describe_machine(&ctx);
    let started = std::time::Instant::now();
    for name in FIGURES {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        let figure_start = std::time::Instant::now();
        match name {
            "ingest" => ingest::run(&ctx),
            "parse" => parse::run(&ctx),
            "alert" => alert::run(&ctx),
            "memory" => memory::run(&ctx),
            "history" => history::run(&ctx),
            "startup" => startup::run(&ctx),
            "recovery" => recovery::run(&ctx),
            _ => unreachable!(),
        }
        eprintln!("# {name}: {:.1} s", figure_start.elapsed().as_secs_f64());
    }
    eprintln!("# total: {:.1} s", started.elapsed().as_secs_f64());
}

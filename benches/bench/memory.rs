//! Figure 4, memory: resident memory per agent actor, idle and under a steady event rate,
//! beside a bare ractor actor with no state, each configuration in its own child process (this
//! binary run with `--child memory …`) so allocator state never carries over.
//!
//! In the child: a tokio runtime and two sink actors stand in for the persistence and Slack
//! actors (they drop every message, so only the agents' own memory is counted); the RSS then
//! is the base. Then N actors are spawned: bare ones, or agent actors given presence ON_QUEUE
//! and routing IDLE (built-in idle rule, 1 h threshold: every agent holds an armed deadline
//! timer, the realistic steady state). `(RSS − base) / N` is the cost per actor. Agent
//! children then run a steady rate of routing changes (IDLE ↔ INTERACTING, so the timer is
//! disarmed and re-armed) and report RSS after a warm-up quarter and at the end: the growth.
//!
//! The bench's global allocator counts live heap bytes from the base on (`heap.rs`), so the
//! children also report the live heap per actor (`bare_heap`, `agent_heap`): what RSS is made
//! of, and how much of it is allocator slack rather than bytes held.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_monitor::actors::agent::{AgentActor, AgentArgs, AgentMsg, Peers};
use agent_monitor::actors::deadline::Deadlines;
use agent_monitor::actors::persistence::PersistMsg;
use agent_monitor::actors::slack::SlackMsg;
use agent_monitor::domain::{Source, UserId};
use agent_monitor::notification::{PresenceUpdate, RoutingUpdate};
use agent_monitor::rules::RuleSet;
use chrono::{TimeDelta, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::common::{Ctx, emit, rss_kb, runtime};

pub fn run(ctx: &Ctx) {
    let sizes = ctx.pick([2_000usize, 10_000], [10_000, 50_000]);
    let (steady_secs, rate) = ctx.pick((6u64, 2_000u64), (20, 5_000));
    for n in sizes {
        let bare = spawn_child(&["bare", &n.to_string(), "0", "0"]);
        let bare_kb = (bare["after_kb"] - bare["base_kb"]) / n as f64;
        let agents = spawn_child(&[
            "agents",
            &n.to_string(),
            &steady_secs.to_string(),
            &rate.to_string(),
        ]);
        let agent_kb = (agents["after_kb"] - agents["base_kb"]) / n as f64;
        let busy = spawn_child(&["agents_busy", &n.to_string(), "0", "0"]);
        let busy_kb = (busy["after_kb"] - busy["base_kb"]) / n as f64;
        let growth_kb = agents["steady_end_kb"] - agents["steady_start_kb"];
        let k = format!("{}k", n / 1000);
        emit(
            &format!("memory.{k}.base_process"),
            agents["base_kb"] / 1024.0,
            "MiB",
        );
        emit(&format!("memory.{k}.bare_actor"), bare_kb, "KB/actor");
        emit(
            &format!("memory.{k}.agent_idle"),
            agent_kb,
            "KB/agent(target<=10)",
        );
        emit(
            &format!("memory.{k}.agent_no_timer"),
            busy_kb,
            "KB/agent(INTERACTING:no_deadline_armed)",
        );
        emit(
            &format!("memory.{k}.bare_heap"),
            bare["heap_chunk_bytes"] / 1024.0,
            "KB/actor(live_heap)",
        );
        emit(
            &format!("memory.{k}.agent_heap"),
            agents["heap_chunk_bytes"] / 1024.0,
            "KB/agent(live_heap)",
        );
        emit(
            &format!("memory.{k}.agent_vs_bare"),
            agent_kb / bare_kb,
            "x_bare_actor",
        );
        emit(
            &format!("memory.{k}.agent_steady"),
            (agents["steady_end_kb"] - agents["base_kb"]) / n as f64,
            &format!("KB/agent(after_{steady_secs}s_at_{rate}/s)"),
        );
        emit(
            &format!("memory.{k}.steady_growth"),
            growth_kb / 1024.0,
            &format!("MiB_over_{}s(target~0)", steady_secs * 3 / 4),
        );
    }
}

/// Runs this binary with `--child memory <args>` and parses its `key value` lines.
fn spawn_child(args: &[&str]) -> std::collections::HashMap<String, f64> {
    let exe = std::env::current_exe().expect("current exe");
    let output = Command::new(exe)
        .arg("--child")
        .args(args)
        .output()
        .expect("run the memory child");
    assert!(
        output.status.success(),
        "memory child {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (k, v) = line.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// An actor with no state: the floor any per-agent actor pays.
struct Bare;

impl Actor for Bare {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// Drops every message (stands in for the persistence or Slack actor).
struct Sink<M>(std::marker::PhantomData<fn() -> M>);

impl<M: ractor::Message> Actor for Sink<M> {
    type Msg = M;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<M>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<M>, _: M, _: &mut ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// The child: `bare|agents N steady_secs rate`. Prints `key value` lines (KiB).
pub fn child(args: &[String]) {
    let what = args[0].as_str();
    let n: usize = args[1].parse().unwrap();
    let steady_secs: u64 = args[2].parse().unwrap();
    let rate: u64 = args[3].parse().unwrap();
    runtime().block_on(async move {
        let (persistence, _) = Actor::spawn(None, Sink::<PersistMsg>(Default::default()), ())
            .await
            .unwrap();
        let (slack, _) = Actor::spawn(None, Sink::<SlackMsg>(Default::default()), ())
            .await
            .unwrap();
        // Touch what the first spawn initializes lazily, then settle.
        let (warm, _) = Actor::spawn(None, Bare, ()).await.unwrap();
        warm.stop_and_wait(None, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let base = rss_kb();
        println!("base_kb {base}");
        crate::heap::start();
        match what {
            "bare" => {
                let mut refs = Vec::with_capacity(n);
                for _ in 0..n {
                    refs.push(Actor::spawn(None, Bare, ()).await.unwrap().0);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                println!("after_kb {}", rss_kb());
                report_heap(n);
                drop(refs);
            }
            "agents" | "agents_busy" => {
                let rules = Arc::new(RuleSet::builtin_idle(Duration::from_secs(3600)));
                let peers = Peers {
                    persistence,
                    slack,
                    deadlines: Deadlines::spawn(),
                };
                // One clock for every agent, as the supervisor hands out.
                let clock = agent_monitor::clock::Clock::default();
                let now = Utc::now();
                let mut refs = Vec::with_capacity(n);
                for i in 0..n {
                    let (agent, _) = Actor::spawn(
                        None,
                        AgentActor,
                        AgentArgs {
                            user_id: UserId::parse(&format!("3f1c9a52-7b4e-4d8a-9c21-{i:012x}"))
                                .unwrap(),
                            user_name: Some(format!("Agent Number {i}")),
                            division_id: None,
                            queue_ids: Vec::new(),
                            rules: rules.clone(),
                            episodes: None,
                            peers: peers.clone(),
                            clock: clock.clone(),
                            held: false,
                        },
                    )
                    .await
                    .unwrap();
                    let presence = PresenceUpdate {
                        system: "ON_QUEUE".into(),
                        definition_id: Some("6a3af858-942f-489d-9700-5f9bcdcdae9b".into()),
                        label: Some("On Queue".into()),
                        timestamp: now - TimeDelta::seconds(2),
                    };
                    // Busy agents hold no pending episode, so no deadline timer.
                    let routing = RoutingUpdate {
                        status: if what == "agents" {
                            "IDLE"
                        } else {
                            "INTERACTING"
                        }
                        .into(),
                        timestamp: now - TimeDelta::seconds(1),
                    };
                    agent
                        .cast(AgentMsg::Presence(
                            Box::new(presence),
                            Source::Bootstrap,
                            None,
                        ))
                        .unwrap();
                    agent
                        .cast(AgentMsg::Routing(routing, Source::Bootstrap, None))
                        .unwrap();
                    refs.push(agent);
                }
                settle(&refs).await;
                println!("after_kb {}", rss_kb());
                report_heap(n);
                if steady_secs > 0 {
                    steady(&refs, steady_secs, rate).await;
                }
            }
            other => panic!("unknown memory child {other:?}"),
        }
    });
}

/// Waits until every agent has handled what was sent to it (a call queues behind the casts).
async fn settle(refs: &[ActorRef<AgentMsg>]) {
    for agent in refs {
        ractor::call!(agent, AgentMsg::Get).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// `rate` routing changes per second over the agents, round robin, for `secs`: RSS after the
/// first quarter (`steady_start_kb`) and at the end (`steady_end_kb`).
async fn steady(refs: &[ActorRef<AgentMsg>], secs: u64, rate: u64) {
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1) as usize;
    let start = Instant::now();
    let total = Duration::from_secs(secs);
    let mut next = 0usize;
    let mut sent = 0u64;
    let mut visits = vec![0u32; refs.len()];
    let base = Utc::now();
    let mut start_kb = None;
    let mut interval = tokio::time::interval(tick);
    while start.elapsed() < total {
        interval.tick().await;
        for _ in 0..per_tick {
            let i = next % refs.len();
            next += 1;
            visits[i] += 1;
            let status = if visits[i] % 2 == 1 {
                "INTERACTING"
            } else {
                "IDLE"
            };
            sent += 1;
            let routing = RoutingUpdate {
                status: status.into(),
                // Newer than anything the agent holds, never in the future.
                // A round robin revisits an agent seconds later: always newer than what it
                // holds, never in the future.
                timestamp: base + TimeDelta::milliseconds(start.elapsed().as_millis() as i64),
            };
            let _ = refs[i].cast(AgentMsg::Routing(routing, Source::Stream, None));
        }
        if start_kb.is_none() && start.elapsed() >= total / 4 {
            start_kb = Some(rss_kb());
        }
    }
    settle(refs).await;
    println!("steady_start_kb {}", start_kb.unwrap_or_else(rss_kb));
    println!("steady_end_kb {}", rss_kb());
    println!("steady_events {sent}");
}

/// Live heap per actor (`heap::Counting`): requested bytes, glibc chunks (an estimate from
/// the sizes; blocks of 4 KiB and more are counted as 4 KiB), blocks, the high water and the
/// allocation calls since the base, and (on stderr, for a child run by hand) the block sizes
/// that make it up, largest share first.
fn report_heap(n: usize) {
    let snap = crate::heap::snapshot();
    let chunks: i64 = snap
        .by_size
        .iter()
        .enumerate()
        .map(|(size, count)| count * crate::heap::chunk(size) as i64)
        .sum();
    println!("heap_bytes {}", snap.bytes as f64 / n as f64);
    println!("heap_chunk_bytes {}", chunks as f64 / n as f64);
    println!("heap_blocks {}", snap.blocks as f64 / n as f64);
    println!("heap_peak_bytes {}", snap.peak as f64 / n as f64);
    println!("heap_allocs {}", snap.calls as f64 / n as f64);
    let mut sizes: Vec<(usize, i64)> = snap
        .by_size
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 0)
        .map(|(s, c)| (s, *c))
        .collect();
    sizes.sort_by_key(|(s, c)| -(c.abs() * crate::heap::chunk(*s) as i64));
    for (size, count) in sizes.iter().take(40) {
        eprintln!(
            "# size {size}: {:.3} blocks/actor, {:.1} chunk bytes/actor",
            *count as f64 / n as f64,
            (*count * crate::heap::chunk(*size) as i64) as f64 / n as f64
        );
    }
}

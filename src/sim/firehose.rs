//! Firehose mode for benchmarks: scripted transitions for every agent, pushed as fast as the
//! sockets take them. Unlike every other path (which drops frames a far too slow consumer
//! cannot take, counting them), the firehose awaits each socket queue's back-pressure, so no
//! frame is ever dropped and the ground truth stays exact.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::core::{Core, CoreHandle};
use super::world::{AVAILABLE_ID, ON_QUEUE_ID};
use super::ws::Outgoing;

/// Transitions generated per core job; the core serves other requests between batches.
const BATCH: usize = 512;

/// What a firehose run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirehoseReport {
    /// Presence and routing transitions generated (all recorded in the ground truth).
    pub transitions: u64,
    /// Frames handed to socket queues (a transition reaching two sockets counts twice).
    pub frames: u64,
    /// Wall-clock time from the first transition to the last frame handed over.
    pub elapsed: Duration,
}

/// A firehose run in progress; [`FirehoseHandle::finished`] waits for it.
pub struct FirehoseHandle {
    pub(super) task: tokio::task::JoinHandle<anyhow::Result<FirehoseReport>>,
}

impl FirehoseHandle {
    /// Waits until every frame was handed to its sockets.
    pub async fn finished(self) -> anyhow::Result<FirehoseReport> {
        self.task.await?
    }
}

/// One generated transition: its frame, the queues to hand it to, and its ground-truth index.
type Outbound = (String, Vec<mpsc::Sender<Outgoing>>, usize);

/// Spawns the firehose: `per_agent` transitions for every active agent, round-robin over the
/// agents (agent 0's first, agent 1's first, …). Transition `k` of an agent is a presence
/// change when `k % 5 == 4` (alternating AVAILABLE / ON_QUEUE), else a routing change
/// (alternating INTERACTING / IDLE); timestamps are now on the simulated clock, strictly
/// increasing per user.
pub fn spawn(core: CoreHandle, per_agent: usize) -> FirehoseHandle {
    let task = tokio::spawn(async move {
        let agents: Vec<usize> = core
            .call(|c| {
                (0..c.world.agents.len())
                    .filter(|i| c.world.agents[*i].active)
                    .collect()
            })
            .await?;
        let total = agents.len() * per_agent;
        let started = Instant::now();
        let mut report = FirehoseReport {
            transitions: 0,
            frames: 0,
            elapsed: Duration::ZERO,
        };
        let mut next = 0usize;
        while next < total {
            let end = (next + BATCH).min(total);
            let agents = agents.clone();
            let batch: Vec<Outbound> = core
                .call(move |c| (next..end).map(|n| generate(c, &agents, n)).collect())
                .await?;
            next = end;
            let mut undelivered = Vec::new();
            for (frame, targets, index) in batch {
                report.transitions += 1;
                let mut delivered = false;
                for tx in targets {
                    if tx.send(Outgoing::Text(frame.clone())).await.is_ok() {
                        report.frames += 1;
                        delivered = true;
                    }
                }
                if !delivered {
                    undelivered.push(index);
                }
            }
            if !undelivered.is_empty() {
                core.call(move |c| {
                    for index in undelivered {
                        c.truth[index].delivered = false;
                    }
                })
                .await?;
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    });
    FirehoseHandle { task }
}

/// Transition number `n` of the run: applies it, records it (optimistically delivered if any
/// socket listens) and renders its frame.
fn generate(c: &mut Core, agents: &[usize], n: usize) -> Outbound {
    let i = agents[n % agents.len()];
    let k = n / agents.len();
    let now = c.now();
    let change = if k % 5 == 4 {
        let def = if (k / 5) % 2 == 0 {
            AVAILABLE_ID
        } else {
            ON_QUEUE_ID
        };
        c.world.set_presence_now(i, def, now)
    } else {
        let status = if k % 2 == 0 { "INTERACTING" } else { "IDLE" };
        c.world.set_routing_now(i, status, now)
    };
    let change = change.expect("the firehose only uses known presence definitions");
    c.record_firehose(&change)
}

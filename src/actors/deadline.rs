//! The shared deadline scheduler: one task keeps every agent's episode deadline and sends the
//! agent [`AgentMsg::Deadline`] when it is due.
//!
//! An agent keeps at most one deadline (the earliest of its episodes). Arming it with
//! `ActorRef::send_after` spawned one tokio task per agent, about 3.5 KB each (the task cell,
//! its future with a `Sleep`, the captured actor cell): most of an idle agent's memory
//! (`BENCHMARKS.md`, figure 4). Here one task owns every deadline in a `BTreeMap` ordered by
//! instant, with one `Sleep` re-armed to the earliest entry, about a hundred bytes per armed
//! agent.
//!
//! Agents talk to it only through a [`Deadlines`] handle (an unbounded channel; no lock is
//! shared with agents): [`Deadlines::arm`] replaces the agent's entry, [`Deadlines::cancel`]
//! removes it. Commands of one agent are applied in the order it sent them, and an entry that
//! is replaced or cancelled is removed from the queue before anything else is applied, so it
//! can never fire (least of all with the generation of its replacement). The agent still checks
//! the generation of every `Deadline`: one already in its mailbox when it re-arms is stale.
//!
//! The scheduler is a plain task, not an actor: it holds no I/O and returns no error (a
//! message to an agent that has stopped is dropped with its entry), so there is nothing to
//! supervise or restart. It ends when every handle is dropped (the supervisor's and the
//! agents'). The supervisor spawns it before any agent and hands it to them in
//! [`Peers`](crate::actors::agent::Peers).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use ractor::{ActorId, ActorRef};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::actors::agent::AgentMsg;

/// A command to the scheduler.
#[derive(Debug)]
pub enum DeadlineCmd {
    /// Send `agent` [`AgentMsg::Deadline { generation }`](AgentMsg::Deadline) at `at` (tokio
    /// monotonic time; at once if it has passed), replacing the agent's previous entry.
    Arm {
        /// The agent to tell (its id is the entry's key).
        agent: ActorRef<AgentMsg>,
        /// When the deadline is due.
        at: Instant,
        /// The agent's timer generation, sent back unchanged.
        generation: u64,
    },
    /// Forget the agent's entry, if any.
    Cancel {
        /// The agent's actor id.
        agent: ActorId,
    },
}

/// A handle on the shared deadline scheduler: cheap to clone (one channel sender), held by the
/// supervisor and by every agent.
#[derive(Debug, Clone)]
pub struct Deadlines {
    tx: mpsc::UnboundedSender<DeadlineCmd>,
}

impl Deadlines {
    /// Spawns the scheduler task on the current tokio runtime and returns its handle. The task
    /// ends when the last handle is dropped.
    pub fn spawn() -> Deadlines {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Deadlines { tx }
    }

    /// Arms `agent`'s one deadline at `at` (tokio monotonic time) with `generation`, replacing
    /// any entry it had.
    pub fn arm(&self, agent: &ActorRef<AgentMsg>, at: Instant, generation: u64) {
        self.send(DeadlineCmd::Arm {
            agent: agent.clone(),
            at,
            generation,
        });
    }

    /// Removes `agent`'s deadline, if it has one.
    pub fn cancel(&self, agent: &ActorRef<AgentMsg>) {
        self.send(DeadlineCmd::Cancel {
            agent: agent.get_id(),
        });
    }

    fn send(&self, cmd: DeadlineCmd) {
        static REPORTED: AtomicBool = AtomicBool::new(false);
        // The task only ends when every handle is gone, so this is a bug (a panic in it):
        // say so once rather than once per agent.
        if self.tx.send(cmd).is_err() && !REPORTED.swap(true, Ordering::Relaxed) {
            tracing::error!("the deadline scheduler has stopped: agent deadlines are lost");
        }
    }
}

/// One agent's armed deadline.
#[derive(Debug)]
struct Entry {
    /// Its key in [`Schedule::queue`].
    key: (Instant, u64),
    agent: ActorRef<AgentMsg>,
    generation: u64,
}

/// The scheduler's state: every armed deadline, earliest first, one per agent.
#[derive(Debug, Default)]
struct Schedule {
    /// Deadlines by (instant, arming sequence number): the sequence number keeps two agents
    /// armed at the same instant apart and fires them in arming order.
    queue: BTreeMap<(Instant, u64), ActorId>,
    /// Each agent's one entry (invariant: exactly the ids in `queue`, with their keys).
    agents: HashMap<ActorId, Entry>,
    /// The next arming sequence number.
    seq: u64,
}

impl Schedule {
    fn apply(&mut self, cmd: DeadlineCmd) {
        match cmd {
            DeadlineCmd::Arm {
                agent,
                at,
                generation,
            } => {
                let id = agent.get_id();
                self.remove(id);
                let key = (at, self.seq);
                self.seq += 1;
                self.queue.insert(key, id);
                self.agents.insert(
                    id,
                    Entry {
                        key,
                        agent,
                        generation,
                    },
                );
            }
            DeadlineCmd::Cancel { agent } => self.remove(agent),
        }
    }

    fn remove(&mut self, id: ActorId) {
        if let Some(old) = self.agents.remove(&id) {
            self.queue.remove(&old.key);
        }
    }

    /// The earliest armed instant.
    fn earliest(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    /// Sends every deadline due at `now` (removing it), earliest first.
    fn fire_due(&mut self, now: Instant) {
        while let Some(first) = self.queue.first_entry() {
            if first.key().0 > now {
                break;
            }
            let id = first.remove();
            if let Some(entry) = self.agents.remove(&id) {
                // An agent that has stopped is simply forgotten.
                let _ = entry.agent.cast(AgentMsg::Deadline {
                    generation: entry.generation,
                });
            }
        }
    }
}

/// The scheduler task: applies commands, and wakes at the earliest deadline with one `Sleep`.
async fn run(mut rx: mpsc::UnboundedReceiver<DeadlineCmd>) {
    let mut schedule = Schedule::default();
    let sleep = tokio::time::sleep_until(Instant::now());
    tokio::pin!(sleep);
    // The instant `sleep` is armed for; `None` when it is not (nothing armed, or it has fired).
    let mut armed: Option<Instant> = None;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => schedule.apply(cmd),
                None => return,
            },
            () = &mut sleep, if armed.is_some() => armed = None,
        }
        if schedule.earliest().is_some() {
            schedule.fire_due(Instant::now());
        }
        let next = schedule.earliest();
        if next != armed {
            if let Some(at) = next {
                sleep.as_mut().reset(at);
            }
            armed = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ractor::{Actor, ActorProcessingErr};

    use super::*;

    /// Stands in for an agent: reports every `Deadline` it gets, with when it got it.
    struct Probe;

    impl Actor for Probe {
        type Msg = AgentMsg;
        type State = mpsc::UnboundedSender<(u64, Instant)>;
        type Arguments = mpsc::UnboundedSender<(u64, Instant)>;

        async fn pre_start(
            &self,
            _myself: ActorRef<AgentMsg>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle(
            &self,
            _myself: ActorRef<AgentMsg>,
            message: AgentMsg,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let AgentMsg::Deadline { generation } = message {
                let _ = tx.send((generation, Instant::now()));
            }
            Ok(())
        }
    }

    async fn probe() -> (ActorRef<AgentMsg>, mpsc::UnboundedReceiver<(u64, Instant)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (actor, _) = Actor::spawn(None, Probe, tx).await.unwrap();
        (actor, rx)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test]
    async fn fires_once_at_its_instant_never_before() {
        let deadlines = Deadlines::spawn();
        let (agent, mut got) = probe().await;
        let at = Instant::now() + ms(50);
        deadlines.arm(&agent, at, 7);
        let (generation, when) = got.recv().await.unwrap();
        assert_eq!(generation, 7);
        assert!(when >= at, "{:?} early", at - when);
        tokio::time::sleep(ms(100)).await;
        assert!(got.try_recv().is_err(), "fired twice");
    }

    #[tokio::test]
    async fn a_replaced_entry_never_fires() {
        let deadlines = Deadlines::spawn();
        let (agent, mut got) = probe().await;
        let start = Instant::now();
        deadlines.arm(&agent, start + ms(20), 1);
        deadlines.arm(&agent, start + ms(120), 2);
        let (generation, when) = got.recv().await.unwrap();
        assert_eq!(generation, 2);
        assert!(when >= start + ms(120), "the new generation came early");
        // And an earlier replacement moves it forward.
        deadlines.arm(&agent, Instant::now() + ms(500), 3);
        let at = Instant::now() + ms(30);
        deadlines.arm(&agent, at, 4);
        let (generation, when) = got.recv().await.unwrap();
        assert_eq!(generation, 4);
        assert!(when >= at && when < at + ms(300));
        tokio::time::sleep(ms(600)).await;
        assert!(got.try_recv().is_err(), "the replaced entry fired");
    }

    #[tokio::test]
    async fn a_cancelled_entry_never_fires() {
        let deadlines = Deadlines::spawn();
        let (agent, mut got) = probe().await;
        deadlines.arm(&agent, Instant::now() + ms(30), 1);
        deadlines.cancel(&agent);
        tokio::time::sleep(ms(100)).await;
        assert!(got.try_recv().is_err());
        // A past instant fires at once.
        deadlines.arm(&agent, Instant::now() - ms(10), 2);
        assert_eq!(got.recv().await.unwrap().0, 2);
    }

    #[tokio::test]
    async fn many_agents_fire_in_order_of_their_instants() {
        let deadlines = Deadlines::spawn();
        let (tx, mut got) = mpsc::unbounded_channel();
        let start = Instant::now() + ms(50);
        let mut agents = Vec::new();
        // Armed in reverse order, two per instant.
        for i in (0..20u64).rev() {
            let (agent, _) = Actor::spawn(None, Probe, tx.clone()).await.unwrap();
            deadlines.arm(&agent, start + ms(5 * (i / 2)), i);
            agents.push(agent);
        }
        let mut order = Vec::new();
        for _ in 0..20 {
            let (generation, when) = got.recv().await.unwrap();
            assert!(when >= start + ms(5 * (generation / 2)));
            order.push(generation / 2);
        }
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
    }

    #[tokio::test]
    async fn a_stopped_agent_is_forgotten() {
        let deadlines = Deadlines::spawn();
        let (gone, _got) = probe().await;
        deadlines.arm(&gone, Instant::now() + ms(10), 1);
        gone.stop_and_wait(None, None).await.unwrap();
        let (agent, mut got) = probe().await;
        deadlines.arm(&agent, Instant::now() + ms(40), 2);
        assert_eq!(got.recv().await.unwrap().0, 2);
    }
}

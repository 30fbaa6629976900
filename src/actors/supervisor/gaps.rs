//! The supervisor's gap work (issue 3): the queue of stream gaps to backfill from the analytics
//! user details query, one at a time with retries; holding and releasing the agents of a
//! channel whose gap waits (`AgentMsg::Hold`, `AgentMsg::Backfill`); and the completeness
//! checkpoint (`stream_state.complete_until`) a restart backfills from. See `actors.md`,
//! "Gaps and backfill".

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ractor::ActorRef;

use super::{SupervisorMsg, SupervisorState, restart_delay};
use crate::actors::agent::AgentMsg;
use crate::actors::connection::ConnectionMsg;
use crate::actors::persistence::PersistMsg;
use crate::backfill::GapUpdate;
use crate::clock::Clock;
use crate::domain::UserId;
use crate::health::BackfillRun;
use crate::metrics;

/// A gap in the stream to backfill from the analytics user details query.
#[derive(Debug, Clone)]
pub struct GapRequest {
    /// `start`, `reconnect`, `channel_replaced`.
    pub trigger: &'static str,
    pub users: Vec<UserId>,
    /// Genesys time (UTC), safety margin included.
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// Queues `request` at the back, or merges it into a queued gap of the same users (the union
/// of both intervals, the queued one's trigger and attempts), so that the queue stays bounded
/// by the distinct user sets while the backfill keeps failing.
pub(super) fn enqueue_gap(queue: &mut std::collections::VecDeque<GapRequest>, request: GapRequest) {
    let users: HashSet<&UserId> = request.users.iter().collect();
    let same = queue.iter_mut().find(|queued| {
        queued.users.len() == request.users.len() && queued.users.iter().all(|u| users.contains(u))
    });
    match same {
        Some(queued) => {
            queued.from = queued.from.min(request.from);
            queued.to = queued.to.max(request.to);
        }
        None => queue.push_back(request),
    }
}

/// The longest gap backfilled at start: a database older than this starts from the snapshot
/// for the rest (logged). The analytics query itself is split into 7-day intervals.
pub const MAX_START_GAP: chrono::TimeDelta = chrono::TimeDelta::days(31);

/// How often the stream's completeness is recorded in `stream_state`.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// Up to when the stream is complete (Genesys time): the oldest "last message" among the
/// connections, if every one is connected and subscribed (a socket that died silently stops the
/// mark at its last message); `None` if any is not.
async fn complete_until(
    connections: Vec<Option<ActorRef<ConnectionMsg>>>,
    clock: &Clock,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut oldest: Option<chrono::DateTime<chrono::Utc>> = None;
    for conn in connections {
        let status = ractor::call_t!(conn?, ConnectionMsg::Status, 1000).ok()?;
        if !(status.connected && status.subscribed) {
            return None;
        }
        let age = status.last_message_age_seconds.unwrap_or(0.0);
        let last = chrono::Utc::now() - chrono::TimeDelta::milliseconds((age * 1000.0) as i64);
        oldest = Some(oldest.map_or(last, |o| o.min(last)));
    }
    oldest.map(|local| local + clock.offset())
}

/// Sends every one of `users` its recovered transitions of a gap ending at `until` (Genesys
/// time), an empty list for a user with none: each [`AgentMsg::Backfill`] also releases an agent
/// held for that gap.
fn hand_out(
    agents: &HashMap<UserId, ActorRef<AgentMsg>>,
    users: &[UserId],
    until: chrono::DateTime<chrono::Utc>,
    mut updates: HashMap<UserId, Vec<GapUpdate>>,
) {
    for user in users {
        if let Some(agent) = agents.get(user) {
            let _ = agent.cast(AgentMsg::Backfill {
                updates: updates.remove(user).unwrap_or_default(),
                until,
            });
        }
    }
}

impl SupervisorState {
    /// `BACKFILL_MARGIN` as a time delta (zero if it does not fit, which config prevents).
    pub(super) fn backfill_margin(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.args.backfill_margin).unwrap_or_default()
    }

    /// Queues a gap backfill and starts it if none is running. An empty gap is not queued:
    /// its users are released at once ([`SupervisorState::release`]).
    pub(super) fn queue_backfill(&mut self, myself: &ActorRef<SupervisorMsg>, request: GapRequest) {
        if request.users.is_empty() || request.from >= request.to {
            self.release(&request.users);
            return;
        }
        tracing::info!(trigger = request.trigger, users = request.users.len(),
            from = %request.from, to = %request.to, "gap queued for backfill");
        enqueue_gap(&mut self.backfills, request);
        let _ = myself.cast(SupervisorMsg::Backfill);
    }

    /// Holds the rules of the agents of connection `index` until its gap is backfilled
    /// ([`AgentMsg::Hold`]): its socket is lost, so an episode's end may be in the gap.
    pub(super) fn hold(&self, index: usize) {
        let at = self.args.clock.now();
        for user in self.connection_users.get(index).into_iter().flatten() {
            if let Some(agent) = self.agents.get(user) {
                let _ = agent.cast(AgentMsg::Hold { at });
            }
        }
    }

    /// Releases held agents without a backfill (their gap is empty or will not be
    /// backfilled): an empty [`AgentMsg::Backfill`] up to now.
    pub(super) fn release(&self, users: &[UserId]) {
        hand_out(&self.agents, users, self.args.clock.now(), HashMap::new());
    }

    /// Runs the next queued backfill in a task: query the analytics user details for the
    /// gap, then hand each agent its recovered transitions in time order
    /// ([`AgentMsg::Backfill`]).
    pub(super) fn start_backfill(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if self.backfill_running || self.shutting_down {
            return;
        }
        if let Some(at) = self.backfill_retry_at {
            if tokio::time::Instant::now() < at {
                return; // its timer sends `Backfill` again
            }
            self.backfill_retry_at = None;
        }
        let Some(request) = self.backfills.pop_front() else {
            return;
        };
        self.backfill_running = true;
        let client = self.args.client.clone();
        let catalog = self.catalog.clone();
        let agents = self.agents.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = crate::backfill::fetch_gap(
                &client,
                &request.users,
                request.from,
                request.to,
                &catalog,
            )
            .await;
            let mut run = BackfillRun {
                trigger: request.trigger.to_string(),
                from: request.from,
                to: request.to,
                users: request.users.len(),
                records: 0,
                requests: 0,
                malformed: 0,
                finished_at: chrono::Utc::now(),
                error: None,
            };
            let retry = match result {
                Ok(gap) => {
                    run.requests = gap.requests;
                    run.malformed = gap.malformed;
                    // `gap.updates` is in time order: each user's list stays in time order.
                    run.records = gap.updates.len();
                    let mut by_user: HashMap<UserId, Vec<GapUpdate>> = HashMap::new();
                    for (user, update) in gap.updates {
                        by_user.entry(user).or_default().push(update);
                    }
                    // Every user of the gap hears of it, with nothing if it held nothing for
                    // them: that is what releases a held agent.
                    hand_out(&agents, &request.users, request.to, by_user);
                    metrics::backfill(run.records);
                    None
                }
                Err(e) => {
                    run.error = Some(e.to_string());
                    if e.is_fatal() {
                        // Never to be backfilled: release the held agents now.
                        hand_out(&agents, &request.users, request.to, HashMap::new());
                    }
                    (!e.is_fatal()).then_some(GapRequest {
                        attempts: request.attempts + 1,
                        ..request
                    })
                }
            };
            run.finished_at = chrono::Utc::now();
            let _ = myself.cast(SupervisorMsg::BackfillDone(run, retry));
        });
    }

    /// Whether a completeness mark may be taken now: the stream started, every connection is
    /// up and no gap waits to be backfilled.
    pub(super) fn may_checkpoint(&self) -> bool {
        self.stream_started && !self.backfill_running && self.backfills.is_empty() && self.all_up()
    }

    /// Records up to when the stream is complete, in a task ([`SupervisorMsg::CheckpointAt`]).
    pub(super) fn start_checkpoint(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if self.checkpoint_running || self.shutting_down || !self.may_checkpoint() {
            return;
        }
        self.checkpoint_running = true;
        let connections = self.live_connection_refs();
        let clock = self.args.clock.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let at = complete_until(connections, &clock).await;
            let _ = myself.cast(SupervisorMsg::CheckpointAt(at));
        });
    }

    /// [`complete_until`] now, awaited (shutdown only: the handler may wait then).
    pub(super) async fn complete_until_now(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        if !self.may_checkpoint() {
            return None;
        }
        complete_until(self.live_connection_refs(), &self.args.clock).await
    }

    /// Connection `index` is up again after a gap that began at `gap_from` (local UTC, its last
    /// message), or its actor was restarted (a gap remembered in `pending_gaps`): queues the
    /// gap's backfill for its users, or releases them if there is nothing to backfill yet.
    /// Returns the gap (start, trigger), if there was one.
    pub(super) fn on_connection_gap(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        index: usize,
        gap_from: Option<chrono::DateTime<chrono::Utc>>,
        cause: &'static str,
    ) -> Option<(chrono::DateTime<chrono::Utc>, &'static str)> {
        // A restarted connection actor does not know its predecessor's gap.
        let gap = match (gap_from, self.pending_gaps.remove(&index)) {
            (Some(a), Some(b)) => Some((a.min(b), cause)),
            (Some(a), None) => Some((a, cause)),
            (None, Some(b)) => Some((b, "connection_restarted")),
            (None, None) => None,
        };
        if let (Some((from, trigger)), true) = (gap, self.stream_started) {
            let margin = self.backfill_margin();
            let request = GapRequest {
                trigger,
                users: self
                    .connection_users
                    .get(index)
                    .cloned()
                    .unwrap_or_default(),
                from: from + self.args.clock.offset() - margin,
                to: self.args.clock.now(),
                attempts: 0,
            };
            self.queue_backfill(myself, request);
        } else if gap.is_some() {
            // Before the stream started there is nothing to backfill yet.
            if let Some(users) = self.connection_users.get(index) {
                self.release(users);
            }
        }
        gap
    }

    /// The stream has just started (every connection up once): with an existing database,
    /// queue the backfill of the time the service was away, from `stream_state.complete_until`
    /// minus the margin (at most [`MAX_START_GAP`]; a mark in the future backfills that much).
    pub(super) fn queue_start_backfill(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if let Some(saved) = self.saved_complete_until {
            let now = self.args.clock.now();
            let margin = self.backfill_margin();
            let mut from = saved - margin;
            if now - from > MAX_START_GAP {
                tracing::warn!(complete_until = %saved, "the database was last complete more than 31 days ago: backfilling the last 31 days only");
                from = now - MAX_START_GAP;
            } else if saved - now > chrono::TimeDelta::minutes(1) {
                // Not "nothing missed": a mark in the future (a restored database,
                // a clock offset once measured wrong) says nothing of the downtime.
                // Less than a minute ahead is offset jitter: the margin covers it.
                tracing::warn!(complete_until = %saved, %now, "the stream completeness mark is in the future: backfilling the last 31 days");
                from = now - MAX_START_GAP;
            }
            let users: Vec<UserId> = self.agents.keys().cloned().collect();
            self.queue_backfill(
                myself,
                GapRequest {
                    trigger: "start",
                    users,
                    from,
                    to: now,
                    attempts: 0,
                },
            );
        }
    }

    /// A backfill run finished: record it (`/readyz`), requeue a failed gap first with
    /// backoff (a gap queued meanwhile does not cut it short), or start the next one.
    pub(super) fn on_backfill_done(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        run: BackfillRun,
        retry: Option<GapRequest>,
    ) {
        self.backfill_running = false;
        match &run.error {
            None => tracing::info!(trigger = %run.trigger, from = %run.from, to = %run.to,
                users = run.users, records = run.records, requests = run.requests,
                malformed = run.malformed, "gap backfilled"),
            Some(error) => {
                tracing::warn!(trigger = %run.trigger, %error, "gap backfill failed")
            }
        }
        self.last_backfill = Some(run);
        if let Some(mut request) = retry {
            // Keep the gap: retry it with backoff (it stays the oldest in the queue, and its
            // end moves to now so nothing since is skipped).
            request.to = self.args.clock.now();
            let delay = restart_delay(request.attempts).max(Duration::from_secs(1));
            self.backfill_retry_at = Some(tokio::time::Instant::now() + delay);
            self.backfills.push_front(request);
            myself.send_after(delay, || SupervisorMsg::Backfill);
        } else {
            self.start_backfill(myself);
        }
    }

    /// The checkpoint task measured up to when the stream is complete: record it, unless a
    /// gap was queued meanwhile.
    pub(super) fn on_checkpoint_at(&mut self, at: Option<chrono::DateTime<chrono::Utc>>) {
        self.checkpoint_running = false;
        let idle = !self.backfill_running && self.backfills.is_empty();
        if let (Some(at), true, Some(persistence)) = (at, idle, &self.persistence) {
            let _ = persistence.cast(PersistMsg::StreamComplete(at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_714_550_400 + minute * 60, 0).unwrap()
    }

    fn gap(users: &[&str], from: i64, to: i64) -> GapRequest {
        GapRequest {
            trigger: "reconnect",
            users: users.iter().map(|u| UserId::parse(u).unwrap()).collect(),
            from: at(from),
            to: at(to),
            attempts: 0,
        }
    }

    /// While the analytics query keeps failing (a missing `analytics:userDetail:view`, an
    /// outage), every reconnect of a flapping network queued one more gap with a copy of its
    /// channel's user list: the queue grew without bound. Gaps of the same users are merged.
    #[test]
    fn gaps_of_the_same_users_are_merged_while_queued() {
        let mut queue = std::collections::VecDeque::new();
        let mut failed = gap(&["a", "b"], 0, 10);
        failed.attempts = 7;
        enqueue_gap(&mut queue, failed);
        for i in 1..1000 {
            enqueue_gap(&mut queue, gap(&["b", "a"], 10 * i, 10 * i + 5));
        }
        enqueue_gap(&mut queue, gap(&["c"], 3, 4));
        assert_eq!(queue.len(), 2);
        assert_eq!((queue[0].from, queue[0].to), (at(0), at(9995)));
        assert_eq!(
            queue[0].attempts, 7,
            "the backoff of the failing gap is kept"
        );
        assert_eq!(queue[1].users, vec![UserId::parse("c").unwrap()]);
    }
}

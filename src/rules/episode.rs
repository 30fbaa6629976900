//! The per-(rule, agent) episode state machine: Normal → Pending → Firing → Resolved.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::RuleSet;
use super::model::{AgentView, Rule};

/// One (rule, agent) pair's alert episode. Pure: the caller feeds it the rule's match result on
/// every state change ([`Episode::on_match_change`]) and calls [`Episode::on_tick`] when
/// [`Episode::next_deadline`] is reached; both return what happened.
///
/// Semantics (`shared/alerting.md` §4):
/// - **Normal → Pending** when the rule starts matching. The episode start is the Genesys
///   instant at which the match became true (`matched_since`), so a restart does not reset
///   the timer; an instant in the future (clock skew) stays the start, but the threshold counts
///   from `now`.
/// - **Pending → Firing** once `start + threshold` is reached: one [`EpisodeAction::Fire`]
///   with `repeat: 0`.
/// - **Firing**: while still matching, another `Fire` (`repeat: 1, 2, …`) every
///   `repeat_interval`, driven by ticks alone. A tick that comes late fires once, not once per
///   missed interval.
/// - **Flaps**: when the match ends (Pending or Firing), the episode waits `flap_tolerance`
///   (Grafana's "keep firing for"); if the rule matches again meanwhile, the same episode goes
///   on with the same start, and nothing is sent. Only after the tolerance does it end.
/// - **→ Resolved**: a Firing episode whose match ended more than `flap_tolerance` ago
///   resolves with one [`EpisodeAction::Resolve`] carrying the total duration (start → end of
///   the match). A Pending episode that ends goes back to Normal silently: Resolve is only
///   reported after a Fire.
/// - **Resolved → Pending** on the next match: a new episode with a new start.
/// - **Quiet hours** change nothing in the transitions: actions carry `send: false` while the
///   rule is quiet ([`Rule::is_quiet`]) and a fire muted by quiet hours is not sent later
///   (only its repeats, if any, are).
///
/// The episode takes the rule on every call for its timings (threshold, repeat interval, flap
/// tolerance, quiet hours, `send_resolved`) and stores the resulting deadlines as absolute UTC
/// instants, so that serialized (serde) and restored it neither fires twice nor forgets the
/// next repeat. If the rule's timings change, deadlines already scheduled are kept.
///
/// Continuity is as reported by the caller: a change of `matched_since` while the rule keeps
/// matching (e.g. the built-in idle rule going from routing IDLE to available-off-queue) keeps
/// the episode; a match end must be reported with `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Episode {
    phase: EpisodePhase,
}

/// Where an episode is. Instants are UTC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum EpisodePhase {
    /// Not matching, no episode.
    #[default]
    Normal,
    /// Matching (or within the flap tolerance after a match end), threshold not reached.
    Pending {
        /// Episode start: when the match became true (Genesys timestamp).
        start: DateTime<Utc>,
        /// `start + threshold`: when it fires if still matching.
        fire_at: DateTime<Utc>,
        /// Set while the match is interrupted.
        ended: Option<MatchEnd>,
    },
    /// The threshold was passed and a Fire was reported.
    Firing {
        /// Episode start.
        start: DateTime<Utc>,
        /// When the first Fire was reported.
        fired_at: DateTime<Utc>,
        /// How many repeats were reported after the first Fire.
        repeats: u32,
        /// When the next repeat is due (`None`: the rule does not repeat).
        next_repeat_at: Option<DateTime<Utc>>,
        /// Whether any Fire of this episode had `send: true` (decides whether the resolve
        /// may be sent).
        sent: bool,
        /// Set while the match is interrupted.
        ended: Option<MatchEnd>,
    },
    /// The last episode fired and has ended; the next match starts a new one.
    Resolved {
        /// Episode start.
        start: DateTime<Utc>,
        /// When the match ended.
        ended_at: DateTime<Utc>,
        /// When the episode resolved (`ended_at + flap_tolerance`, or later if ticked late).
        resolved_at: DateTime<Utc>,
    },
}

/// A match interruption being tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchEnd {
    /// When the match ended (the `now` of the call that reported it).
    pub at: DateTime<Utc>,
    /// `at + flap_tolerance`: when the episode ends unless the rule matches again.
    pub resolve_at: DateTime<Utc>,
}

/// What an episode transition asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EpisodeAction {
    /// The episode fires (`repeat: 0`) or repeats (`repeat: n`, the n-th repeat).
    Fire {
        /// Episode start (Genesys timestamp, UTC): with rule and user, the dedupe key.
        episode_start: DateTime<Utc>,
        /// 0 for the first fire, then 1, 2, …
        repeat: u32,
        /// Whether to send a message: false during quiet hours.
        send: bool,
    },
    /// A fired episode has ended.
    Resolve {
        /// Episode start (UTC).
        episode_start: DateTime<Utc>,
        /// When the match ended (UTC).
        ended_at: DateTime<Utc>,
        /// Total duration of the episode, `ended_at - episode_start` (flaps included).
        duration: Duration,
        /// Whether to send a message: the rule has `send_resolved`, a Fire of this episode
        /// was sent, and it is not quiet hours.
        send: bool,
    },
}

impl Episode {
    /// A new episode in [`EpisodePhase::Normal`].
    pub fn new() -> Episode {
        Episode::default()
    }

    /// The current phase.
    pub fn phase(&self) -> &EpisodePhase {
        &self.phase
    }

    /// The start of the current or last episode (`None` in Normal).
    pub fn episode_start(&self) -> Option<DateTime<Utc>> {
        match &self.phase {
            EpisodePhase::Normal => None,
            EpisodePhase::Pending { start, .. }
            | EpisodePhase::Firing { start, .. }
            | EpisodePhase::Resolved { start, .. } => Some(*start),
        }
    }

    /// Whether the episode is firing (including during a tolerated interruption).
    pub fn is_firing(&self) -> bool {
        matches!(self.phase, EpisodePhase::Firing { .. })
    }

    /// When the caller must call [`Episode::on_tick`] next (UTC): the threshold, the next
    /// repeat, or the end of the flap tolerance. `None`: nothing scheduled.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        match &self.phase {
            EpisodePhase::Normal | EpisodePhase::Resolved { .. } => None,
            EpisodePhase::Pending { fire_at, ended, .. } => {
                Some(ended.map_or(*fire_at, |e| e.resolve_at))
            }
            EpisodePhase::Firing {
                next_repeat_at,
                ended,
                ..
            } => match ended {
                Some(e) => Some(e.resolve_at),
                None => *next_repeat_at,
            },
        }
    }

    /// Reports the rule's current match result: `Some(since)` from [`Rule::evaluate`] while
    /// the agent matches, `None` when it does not. Idempotent: calling it again with the same
    /// result does nothing. Due deadlines (up to `now`) are processed first, so the actions
    /// may include a Fire or a Resolve.
    pub fn on_match_change(
        &mut self,
        rule: &Rule,
        now: DateTime<Utc>,
        matched_since: Option<DateTime<Utc>>,
    ) -> Vec<EpisodeAction> {
        self.on_match_change_at(rule, now, matched_since, now)
    }

    /// [`Episode::on_match_change`] for a change Genesys timestamped `changed_at` (UTC): when
    /// the match ends, the episode's recorded end (and so its total duration) is that instant,
    /// kept between the episode start and `now`, and the flap tolerance runs from it too
    /// (Genesys time, like every other instant of an episode), so an end learnt late, or
    /// replayed after a gap, is judged as if it had been seen when it happened. After a restart
    /// this keeps the downtime out of the duration.
    pub fn on_match_change_at(
        &mut self,
        rule: &Rule,
        now: DateTime<Utc>,
        matched_since: Option<DateTime<Utc>>,
        changed_at: DateTime<Utc>,
    ) -> Vec<EpisodeAction> {
        // Changes reported late (after a stream gap, by backfill or snapshot) are applied at
        // their Genesys time before the deadlines that passed meanwhile are ticked, so an
        // episode that ended before its threshold does not fire on the late news.
        match (matched_since, &mut self.phase) {
            // The same state again, begun later than the episode, with no end of it seen: the
            // agent left and came back while we were not looking (an exit lost in a gap and
            // backfilled late, or superseded by the snapshot). That is a new episode: a fired
            // one is resolved (ending where the new one began); a pending one whose threshold
            // had not come when the new state began starts over. A seen end within the flap
            // tolerance still merges.
            (
                Some(since),
                EpisodePhase::Firing {
                    start,
                    ended: ended @ None,
                    ..
                },
            ) if since > *start => {
                *ended = Some(MatchEnd {
                    at: since,
                    resolve_at: now,
                });
            }
            (
                Some(since),
                EpisodePhase::Pending {
                    start,
                    fire_at,
                    ended: None,
                },
            ) if since > *start && since.min(now) <= *fire_at => {
                *start = since;
                *fire_at = add(since.min(now), rule.threshold);
            }
            // The match ended at `changed_at`, before the threshold: no fire, however late we
            // learn of it.
            (
                None,
                EpisodePhase::Pending {
                    start,
                    fire_at,
                    ended: ended @ None,
                },
            ) => {
                let at = changed_at.min(now).max(*start);
                if at < *fire_at {
                    *ended = Some(MatchEnd {
                        at,
                        resolve_at: add(at, rule.flap_tolerance),
                    });
                }
            }
            _ => {}
        }
        let mut actions = self.on_tick(rule, now);
        match matched_since {
            Some(since) => {
                // The episode keeps the Genesys instant as its start (the dedupe key, and
                // what later changes are compared with); one a little in the future (clock
                // skew) counts from now for the threshold.
                match &mut self.phase {
                    EpisodePhase::Normal | EpisodePhase::Resolved { .. } => {
                        self.phase = EpisodePhase::Pending {
                            start: since,
                            fire_at: add(since.min(now), rule.threshold),
                            ended: None,
                        };
                    }
                    EpisodePhase::Pending {
                        start,
                        fire_at,
                        ended,
                    } => {
                        *ended = None;
                        if since < *start {
                            // A more accurate (earlier) Genesys timestamp for the same match.
                            *start = since;
                            *fire_at = add(since.min(now), rule.threshold);
                        }
                    }
                    EpisodePhase::Firing { ended, .. } => *ended = None,
                }
                actions.extend(self.on_tick(rule, now));
            }
            None => {
                let start = self.episode_start();
                match &mut self.phase {
                    EpisodePhase::Pending { ended, .. } | EpisodePhase::Firing { ended, .. }
                        if ended.is_none() =>
                    {
                        let at = match start {
                            Some(start) => changed_at.min(now).max(start),
                            None => now,
                        };
                        *ended = Some(MatchEnd {
                            at,
                            resolve_at: add(at, rule.flap_tolerance),
                        });
                    }
                    _ => {}
                }
            }
        }
        actions
    }

    /// Processes the deadlines due at `now` (UTC): fire at the threshold, repeat, or end the
    /// episode after the flap tolerance. Calling it early or twice does nothing.
    pub fn on_tick(&mut self, rule: &Rule, now: DateTime<Utc>) -> Vec<EpisodeAction> {
        let mut actions = Vec::new();
        let quiet = rule.is_quiet(now);
        match &mut self.phase {
            EpisodePhase::Normal | EpisodePhase::Resolved { .. } => {}
            EpisodePhase::Pending {
                start,
                fire_at,
                ended,
            } => match ended {
                Some(end) => {
                    if now >= end.resolve_at {
                        self.phase = EpisodePhase::Normal;
                    }
                }
                None => {
                    if now >= *fire_at {
                        let start = *start;
                        actions.push(EpisodeAction::Fire {
                            episode_start: start,
                            repeat: 0,
                            send: !quiet,
                        });
                        self.phase = EpisodePhase::Firing {
                            start,
                            fired_at: now,
                            repeats: 0,
                            next_repeat_at: rule.repeat_interval.map(|i| add(now, i)),
                            sent: !quiet,
                            ended: None,
                        };
                    }
                }
            },
            EpisodePhase::Firing {
                start,
                repeats,
                next_repeat_at,
                sent,
                ended,
                ..
            } => match ended {
                Some(end) => {
                    if now >= end.resolve_at {
                        let (start, ended_at) = (*start, end.at);
                        actions.push(EpisodeAction::Resolve {
                            episode_start: start,
                            ended_at,
                            duration: (ended_at - start).to_std().unwrap_or_default(),
                            send: rule.send_resolved && *sent && !quiet,
                        });
                        self.phase = EpisodePhase::Resolved {
                            start,
                            ended_at,
                            resolved_at: now,
                        };
                    }
                }
                None => {
                    if let Some(due) = *next_repeat_at
                        && now >= due
                    {
                        *repeats += 1;
                        *sent |= !quiet;
                        actions.push(EpisodeAction::Fire {
                            episode_start: *start,
                            repeat: *repeats,
                            send: !quiet,
                        });
                        // Keep the cadence when a tick is a little late; after a long gap
                        // (e.g. downtime), repeat once and start over from now.
                        *next_repeat_at = rule.repeat_interval.map(|i| {
                            let next = add(due, i);
                            if next > now { next } else { add(now, i) }
                        });
                    }
                }
            },
        }
        actions
    }
}

/// `t + d`, saturating far in the future instead of overflowing.
fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// An episode action together with the rule it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleAction {
    /// The rule's name.
    pub rule: String,
    /// What happened.
    pub action: EpisodeAction,
}

/// All episodes of one agent, one per rule (keyed by rule name): what an agent actor holds.
/// Serializable like [`Episode`], for the episode log: a JSON object `{"episodes": {"<rule>":
/// <Episode>, …}}`.
///
/// Held as a vector sorted by rule name rather than a `BTreeMap`: an agent has one episode or
/// two, and a map's first node reserves room for eleven (about 1 KB per agent:
/// `BENCHMARKS.md`, figure 4). The JSON is the same either way.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentEpisodes {
    #[serde(with = "sorted_map")]
    episodes: Vec<(String, Episode)>,
}

/// (De)serializes a vector of `(rule, episode)` sorted by rule name as a JSON object.
mod sorted_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Episode;

    pub fn serialize<S: Serializer>(
        episodes: &[(String, Episode)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&str, &Episode> = episodes.iter().map(|(k, v)| (k.as_str(), v)).collect();
        map.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, Episode)>, D::Error> {
        let map = BTreeMap::<String, Episode>::deserialize(deserializer)?;
        let mut episodes: Vec<(String, Episode)> = map.into_iter().collect();
        episodes.shrink_to_fit();
        Ok(episodes)
    }
}

impl AgentEpisodes {
    /// No episodes.
    pub fn new() -> AgentEpisodes {
        AgentEpisodes::default()
    }

    /// After any change of the agent's state: evaluates every rule of `rules` against `agent`
    /// and feeds each episode ([`Episode::on_match_change`]). Episodes of rules that are no
    /// longer in `rules` are dropped without actions, and so are episodes back in Normal.
    pub fn on_agent_change(
        &mut self,
        rules: &RuleSet,
        now: DateTime<Utc>,
        agent: &AgentView,
    ) -> Vec<RuleAction> {
        self.on_agent_change_at(rules, now, agent, now)
    }

    /// [`AgentEpisodes::on_agent_change`] for a change Genesys timestamped `changed_at` (see
    /// [`Episode::on_match_change_at`]).
    pub fn on_agent_change_at(
        &mut self,
        rules: &RuleSet,
        now: DateTime<Utc>,
        agent: &AgentView,
        changed_at: DateTime<Utc>,
    ) -> Vec<RuleAction> {
        let mut out = Vec::new();
        for rule in rules.rules() {
            let matched = rule.evaluate(agent);
            let i = match self.position(&rule.name) {
                Ok(i) => i,
                Err(_) if matched.is_none() => continue,
                Err(i) => {
                    self.episodes.insert(i, (rule.name.clone(), Episode::new()));
                    self.episodes.shrink_to_fit();
                    i
                }
            };
            let episode = &mut self.episodes[i].1;
            out.extend(
                episode
                    .on_match_change_at(rule, now, matched, changed_at)
                    .into_iter()
                    .map(|action| RuleAction {
                        rule: rule.name.clone(),
                        action,
                    }),
            );
        }
        self.prune(rules);
        out
    }

    /// At (or after) [`AgentEpisodes::next_deadline`]: ticks every episode
    /// ([`Episode::on_tick`]).
    pub fn on_tick(&mut self, rules: &RuleSet, now: DateTime<Utc>) -> Vec<RuleAction> {
        let mut out = Vec::new();
        for rule in rules.rules() {
            if let Ok(i) = self.position(&rule.name) {
                let episode = &mut self.episodes[i].1;
                out.extend(
                    episode
                        .on_tick(rule, now)
                        .into_iter()
                        .map(|action| RuleAction {
                            rule: rule.name.clone(),
                            action,
                        }),
                );
            }
        }
        self.prune(rules);
        out
    }

    /// The earliest deadline of all episodes (UTC), if any.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.episodes
            .iter()
            .filter_map(|(_, e)| e.next_deadline())
            .min()
    }

    /// The episode of one rule, if there is one.
    pub fn get(&self, rule: &str) -> Option<&Episode> {
        self.position(rule).ok().map(|i| &self.episodes[i].1)
    }

    /// Every episode, by rule name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Episode)> {
        self.episodes.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Where the episode of `rule` is (`Ok`), or would be inserted (`Err`).
    fn position(&self, rule: &str) -> Result<usize, usize> {
        self.episodes
            .binary_search_by(|(name, _)| name.as_str().cmp(rule))
    }

    fn prune(&mut self, rules: &RuleSet) {
        self.episodes.retain(|(name, e)| {
            rules.get(name).is_some() && !matches!(e.phase(), EpisodePhase::Normal)
        });
    }
}

//! Which users are monitored, and how they are spread over notification channels.
//!
//! The monitored set is every active user (`GET /api/v2/users?state=active`, reference §6),
//! narrowed by the optional scope: `GENESYS_DIVISION_IDS` (the user's `division.id`) and
//! `GENESYS_QUEUE_IDS` (members of these queues, `GET /api/v2/routing/queues/{id}/members`,
//! following `nextUri`). With both, a user must match both. The supervisor re-lists it
//! periodically (`MEMBERSHIP_REFRESH`) and on every queue join or leave seen on
//! `v2.routing.queues.<id>.users`, and changes subscriptions by difference.
//!
//! Pure functions here; the supervisor owns the state and does the I/O in tasks.

use std::collections::HashSet;

use crate::actors::supervisor::{QueueMembership, fetch_queue_membership};
use crate::domain::UserId;
use crate::genesys::{GenesysClient, GenesysError};
use crate::protocol::User;

/// The optional narrowing of the monitored set. Ids are lowercase; empty lists mean "no
/// narrowing".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// `GENESYS_QUEUE_IDS`: only members of these queues.
    pub queue_ids: Vec<String>,
    /// `GENESYS_DIVISION_IDS`: only users of these divisions.
    pub division_ids: Vec<String>,
}

impl Scope {
    /// True when a user listed by `GET /api/v2/users` passes the division scope.
    pub fn division_allows(&self, user: &User) -> bool {
        self.division_ids.is_empty()
            || user.division.as_ref().is_some_and(|d| {
                self.division_ids
                    .iter()
                    .any(|id| id.eq_ignore_ascii_case(&d.id))
            })
    }
}

/// One listing of the monitored set: the users that pass the scope (with their current state,
/// names and divisions), and the scope queues' membership (empty without a queue scope).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub users: Vec<User>,
    pub scope_queues: QueueMembership,
}

/// Lists the monitored users: every active user, narrowed by `scope`. A scope queue that
/// cannot be read (403, 404) counts as empty and is reported in
/// [`QueueMembership::unreadable`]; any other error fails the listing (to be retried).
pub async fn list_monitored(
    client: &GenesysClient,
    scope: &Scope,
) -> Result<Listing, GenesysError> {
    let users = client
        .list_active_users_in_divisions(&scope.division_ids)
        .await?;
    let scope_queues = fetch_queue_membership(client, scope.queue_ids.clone()).await?;
    let users = users
        .into_iter()
        .filter(|u| scope.division_allows(u))
        .filter(|u| {
            scope.queue_ids.is_empty()
                || UserId::parse(&u.id).is_ok_and(|id| scope_queues.by_user.contains_key(&id))
        })
        .collect();
    Ok(Listing {
        users,
        scope_queues,
    })
}

/// Users to add and to remove, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<UserId>,
    pub removed: Vec<UserId>,
}

/// The difference between the monitored set and a new listing.
pub fn diff(current: &HashSet<UserId>, listed: &[UserId]) -> Diff {
    let listed_set: HashSet<&UserId> = listed.iter().collect();
    let mut added: Vec<UserId> = listed
        .iter()
        .filter(|u| !current.contains(*u))
        .cloned()
        .collect();
    added.sort();
    added.dedup();
    let mut removed: Vec<UserId> = current
        .iter()
        .filter(|u| !listed_set.contains(u))
        .cloned()
        .collect();
    removed.sort();
    Diff { added, removed }
}

/// Applies a diff to the users of each channel: removed users leave their channel, added users
/// fill channels with room (at most `capacity[i]` users on channel `i`, lowest index first),
/// then new channels of `per_channel` users. Returns the indexes of the channels whose users
/// changed (new channels included), ascending. A channel left empty stays in the list, empty
/// (its connection is stopped by the caller).
pub fn assign(
    channels: &mut Vec<Vec<UserId>>,
    capacity: impl Fn(usize) -> usize,
    per_channel: usize,
    diff: &Diff,
) -> Vec<usize> {
    let removed: HashSet<&UserId> = diff.removed.iter().collect();
    let mut changed = HashSet::new();
    for (i, users) in channels.iter_mut().enumerate() {
        let before = users.len();
        users.retain(|u| !removed.contains(u));
        if users.len() != before {
            changed.insert(i);
        }
    }
    let mut pending = diff.added.iter().cloned().peekable();
    for (i, users) in channels.iter_mut().enumerate() {
        // An emptied channel is retired: its connection stops, so do not refill it.
        if users.is_empty() {
            continue;
        }
        while users.len() < capacity(i) {
            let Some(user) = pending.next() else { break };
            users.push(user);
            changed.insert(i);
        }
    }
    let per_channel = per_channel.max(1);
    while pending.peek().is_some() {
        let chunk: Vec<UserId> = pending.by_ref().take(per_channel).collect();
        channels.push(chunk);
        changed.insert(channels.len() - 1);
    }
    let mut changed: Vec<usize> = changed.into_iter().collect();
    changed.sort_unstable();
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(n: u32) -> UserId {
        UserId::parse(&format!("00000000-0000-0000-0000-{n:012}")).unwrap()
    }

    #[test]
    fn diff_finds_added_and_removed() {
        let current: HashSet<UserId> = [u(1), u(2), u(3)].into_iter().collect();
        let d = diff(&current, &[u(3), u(4), u(2), u(4)]);
        assert_eq!(d.added, vec![u(4)]);
        assert_eq!(d.removed, vec![u(1)]);
        assert_eq!(diff(&current, &[u(1), u(2), u(3)]), Diff::default());
    }

    #[test]
    fn assign_fills_room_then_opens_channels() {
        let mut channels = vec![vec![u(1), u(2)], vec![u(3)]];
        let d = Diff {
            added: vec![u(4), u(5), u(6), u(7), u(8)],
            removed: vec![u(2)],
        };
        let changed = assign(&mut channels, |_| 3, 3, &d);
        assert_eq!(
            channels,
            vec![vec![u(1), u(4), u(5)], vec![u(3), u(6), u(7)], vec![u(8)]]
        );
        assert_eq!(changed, vec![0, 1, 2]);
    }

    #[test]
    fn an_emptied_channel_is_retired_not_refilled() {
        let mut channels = vec![vec![u(1)], vec![u(2)]];
        let d = Diff {
            added: vec![u(3)],
            removed: vec![u(1)],
        };
        let changed = assign(&mut channels, |_| 2, 2, &d);
        assert_eq!(channels, vec![vec![], vec![u(2), u(3)]]);
        assert_eq!(changed, vec![0, 1]);
    }

    #[test]
    fn capacity_leaves_room_for_queue_topics() {
        let mut channels = vec![vec![u(1)]];
        let d = Diff {
            added: vec![u(2), u(3)],
            removed: vec![],
        };
        // Channel 0 carries one queue topic: room for 1 user of 2 topics.
        assign(&mut channels, |i| if i == 0 { 1 } else { 2 }, 2, &d);
        assert_eq!(channels, vec![vec![u(1)], vec![u(2), u(3)]]);
    }

    #[test]
    fn division_scope_compares_ids_case_insensitively() {
        let user: User = serde_json::from_value(serde_json::json!({
            "id": "u1", "division": {"id": "ABC"}
        }))
        .unwrap();
        let none = Scope::default();
        assert!(none.division_allows(&user));
        let scope = Scope {
            division_ids: vec!["abc".into()],
            ..Scope::default()
        };
        assert!(scope.division_allows(&user));
        let other = Scope {
            division_ids: vec!["xyz".into()],
            ..Scope::default()
        };
        assert!(!other.division_allows(&user));
    }
}

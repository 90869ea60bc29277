//! `user-quota` and `total-quota` over every worker of the process and every node of a
//! cluster: a [`QuotaBoard`] with one entry per worker (its `Server::usage`) and one for
//! the other nodes (written by the cluster heartbeat, `crate::cluster`). Every
//! [`EXCHANGE`] each worker, in its own loop, writes its entry when its allocations
//! changed and, when anything else changed, gives its server the sum of the rest
//! (`Server::set_elsewhere`). No thread of its own; the lock is held for a copy or a
//! sum of counts, bounded by the live allocations.
//!
//! The bound (tsunagi_turn's crate docs): an allocation granted on one worker is known
//! to the others within two exchanges, so with `W` workers a quota can be exceeded by
//! at most what the other `W - 1` grant within about 200 ms; across nodes, by what the
//! other nodes grant within about two heartbeats.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tsunagi_turn::{Across, Elsewhere, Usage};

/// How often a worker exchanges counts with the board.
pub const EXCHANGE: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct State {
    /// Each worker's allocations, as it last wrote them.
    workers: Vec<Usage>,
    /// The other live nodes' allocations (summed), and until when they hold: past it
    /// (the heartbeat could not reach Redis) they count no longer.
    nodes: Usage,
    nodes_until: Option<Instant>,
    /// A cluster node: phrases say "cluster", and the board is needed with one worker.
    cluster: bool,
    /// Bumped on every change.
    generation: u64,
}

/// The counts every worker and the cluster heartbeat share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct QuotaBoard {
    state: Arc<Mutex<State>>,
}

/// What a worker saw of the board at its last exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Seen {
    generation: u64,
    with_nodes: bool,
}

impl QuotaBoard {
    pub fn new(workers: usize) -> QuotaBoard {
        QuotaBoard {
            state: Arc::new(Mutex::new(State {
                workers: vec![Usage::default(); workers.max(1)],
                ..State::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether workers need to exchange: several of them, or a cluster to publish to.
    pub(super) fn needed(&self) -> bool {
        let s = self.lock();
        s.workers.len() > 1 || s.cluster
    }

    /// This process is a node of a cluster: its usage goes to the other nodes, and
    /// theirs comes in through [`QuotaBoard::set_other_nodes`].
    pub fn join_cluster(&self) {
        let mut s = self.lock();
        s.cluster = true;
        s.generation += 1;
    }

    /// Worker `worker`'s allocations now.
    pub(super) fn publish(&self, worker: usize, usage: Usage) {
        let mut s = self.lock();
        if let Some(slot) = s.workers.get_mut(worker) {
            *slot = usage;
            s.generation += 1;
        }
    }

    /// What exists outside worker `worker` (the other workers and, while they hold,
    /// the other nodes), if anything changed since `seen`.
    pub(super) fn elsewhere(
        &self,
        worker: usize,
        seen: &mut Seen,
        now: Instant,
    ) -> Option<Elsewhere> {
        let s = self.lock();
        let with_nodes = s.nodes_until.is_some_and(|t| now < t);
        let current = Seen {
            generation: s.generation,
            with_nodes,
        };
        if current == *seen {
            return None;
        }
        *seen = current;
        let mut usage = Usage::default();
        for (i, u) in s.workers.iter().enumerate() {
            if i != worker {
                usage.add(u);
            }
        }
        if with_nodes {
            usage.add(&s.nodes);
        }
        Some(Elsewhere {
            usage,
            across: if s.cluster {
                Across::Cluster
            } else {
                Across::Workers
            },
        })
    }

    /// This node's allocations: the sum over its workers.
    pub fn node_usage(&self) -> Usage {
        let s = self.lock();
        let mut usage = Usage::default();
        for u in &s.workers {
            usage.add(u);
        }
        usage
    }

    /// The other live nodes' allocations (summed), valid for `valid_for`: the heartbeat
    /// that cannot renew them lets them lapse rather than count stale ones forever.
    pub fn set_other_nodes(&self, usage: Usage, valid_for: Duration) {
        let mut s = self.lock();
        s.nodes = usage;
        s.nodes_until = Some(Instant::now() + valid_for);
        s.generation += 1;
    }
}

/// A worker's side of the board.
#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) board: QuotaBoard,
    /// When the next exchange is due.
    pub(super) next: Instant,
    /// `(allocations created, deleted)` when this worker last wrote its entry: a
    /// change in either means the usage changed.
    pub(super) written: (u64, u64),
    pub(super) seen: Seen,
    /// Whether the board was needed at the last check ([`QuotaBoard::needed`]).
    pub(super) active: bool,
}

impl Exchange {
    pub(super) fn new(board: QuotaBoard, now: Instant) -> Exchange {
        Exchange {
            board,
            next: now,
            written: (0, 0),
            seen: Seen::default(),
            active: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(total: u64, users: &[(&str, u64)]) -> Usage {
        Usage {
            total,
            per_user: users.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
        }
    }

    #[test]
    fn each_worker_sees_the_others_and_the_nodes_while_they_hold() {
        let board = QuotaBoard::new(3);
        assert!(board.needed());
        assert!(!QuotaBoard::new(1).needed());
        let now = Instant::now();
        let mut seen = [Seen::default(); 3];
        board.publish(0, usage(2, &[("alice", 2)]));
        board.publish(1, usage(1, &[("alice", 1)]));
        board.publish(2, usage(1, &[("bob", 1)]));
        let e = board.elsewhere(0, &mut seen[0], now).unwrap();
        assert_eq!(e.usage, usage(2, &[("alice", 1), ("bob", 1)]));
        assert_eq!(e.across, Across::Workers);
        // Nothing changed since: nothing to give.
        assert!(board.elsewhere(0, &mut seen[0], now).is_none());
        let e = board.elsewhere(2, &mut seen[2], now).unwrap();
        assert_eq!(e.usage, usage(3, &[("alice", 3)]));
        assert_eq!(board.node_usage(), usage(4, &[("alice", 3), ("bob", 1)]));

        // Other nodes count while they hold, then lapse.
        board.join_cluster();
        board.set_other_nodes(usage(5, &[("bob", 5)]), Duration::from_secs(3));
        let e = board.elsewhere(2, &mut seen[2], Instant::now()).unwrap();
        assert_eq!(e.usage, usage(8, &[("alice", 3), ("bob", 5)]));
        assert_eq!(e.across, Across::Cluster);
        let later = Instant::now() + Duration::from_secs(4);
        let e = board.elsewhere(2, &mut seen[2], later).unwrap();
        assert_eq!(e.usage, usage(3, &[("alice", 3)]));
        // Node usage is this node's only.
        assert_eq!(board.node_usage(), usage(4, &[("alice", 3), ("bob", 1)]));
        // A worker index out of range changes nothing.
        board.publish(9, usage(1, &[]));
        assert!(board.elsewhere(2, &mut seen[2], later).is_none());
    }
}

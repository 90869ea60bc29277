//! `user-quota` and `total-quota` over several servers: this server's [`Usage`], the
//! allocations that exist [`Elsewhere`] (other workers of the process, other nodes of a
//! cluster) as the runtime last told, and the check of an Allocate against both.
//!
//! The counts elsewhere are a snapshot: between two exchanges the other servers may
//! grant allocations this one does not know of yet, so the quotas hold up to what the
//! others grant within one exchange (see the crate documentation for the bound).

use super::*;

use std::collections::BTreeMap;

/// The allocations of one server (or a sum of servers): in total and per username.
/// A username with no allocation has no entry. Ordered (no hasher, so no randomness
/// drawn here; lookups happen once per Allocate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    pub per_user: BTreeMap<String, u64>,
}

impl Usage {
    /// Allocations of `username` (0 when absent).
    pub fn user(&self, username: &str) -> u64 {
        self.per_user.get(username).copied().unwrap_or(0)
    }

    /// Adds `other`'s counts (saturating: counts from elsewhere are not trusted to be
    /// sane).
    pub fn add(&mut self, other: &Usage) {
        self.total = self.total.saturating_add(other.total);
        for (name, n) in &other.per_user {
            if *n > 0 {
                let e = self.per_user.entry(name.clone()).or_insert(0);
                *e = e.saturating_add(*n);
            }
        }
    }
}

/// Where the allocations [`Elsewhere`] are; it only changes the reason phrases of 486
/// and 508, which say what the quota counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Across {
    /// Other servers (worker threads) of the same process.
    #[default]
    Workers,
    /// Other nodes of a cluster (and maybe other workers of this node).
    Cluster,
}

/// The allocations that exist outside this server, as the runtime last counted them:
/// in total and per username (a username absent counts 0). Given with
/// [`Server::set_elsewhere`]; the quota checks count `here + elsewhere`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elsewhere {
    pub usage: Usage,
    pub across: Across,
}

impl Server {
    /// This server's allocations, in total and per username: what a runtime that
    /// counts quotas over several servers gives the others ([`Server::set_elsewhere`]).
    /// Its size is bounded by the live allocations (one entry per username that has
    /// one).
    pub fn usage(&self) -> Usage {
        Usage {
            total: self.allocations.len() as u64,
            per_user: self
                .per_user
                .iter()
                .map(|(name, n)| (name.clone(), u64::from(*n)))
                .collect(),
        }
    }

    /// The allocations that exist elsewhere (other workers, other nodes), replacing
    /// what was given before. `user-quota` and `total-quota` then count them with this
    /// server's own. Any numbers are accepted (sums saturate); with no `user-quota` the
    /// per-username counts are not kept.
    pub fn set_elsewhere(&mut self, mut elsewhere: Elsewhere) {
        if self.config.user_quota == 0 {
            elsewhere.usage.per_user = BTreeMap::new();
        } else {
            elsewhere.usage.per_user.retain(|_, n| *n > 0);
        }
        self.elsewhere = Some(elsewhere);
    }

    /// Refuses an Allocate of `username` on `ft` that would go over a quota: 486 for
    /// `user-quota`, 508 for `total-quota`, counting the allocations elsewhere.
    pub(super) fn check_quotas(&mut self, ft: FiveTuple, username: &str) -> Result<(), Reject> {
        let elsewhere = self.elsewhere.as_ref();
        let across = elsewhere.map(|e| e.across);
        let here = u64::from(self.per_user.get(username).copied().unwrap_or(0));
        let used = here.saturating_add(elsewhere.map_or(0, |e| e.usage.user(username)));
        if self.config.user_quota > 0 && used >= u64::from(self.config.user_quota) {
            self.event(Event::QuotaReached {
                five_tuple: ft,
                username: username.to_owned(),
                which: "user-quota",
            });
            let counted = match across {
                None => "",
                Some(Across::Workers) => " across this server's workers",
                Some(Across::Cluster) => " across the cluster's nodes",
            };
            return Err(Reject::new(
                486,
                format!(
                    "Allocation Quota Reached: this user has {used} allocations{counted} (user-quota); delete one first"
                ),
            ));
        }
        let total =
            (self.allocations.len() as u64).saturating_add(elsewhere.map_or(0, |e| e.usage.total));
        if self.config.total_quota > 0 && total >= u64::from(self.config.total_quota) {
            self.event(Event::QuotaReached {
                five_tuple: ft,
                username: username.to_owned(),
                which: "total-quota",
            });
            return Err(Reject::new(
                508,
                match across {
                    None => "Insufficient Capacity: the server is at total-quota allocations; try later or another server",
                    Some(Across::Workers) => "Insufficient Capacity: the server is at total-quota allocations, counted across its workers; try later or another server",
                    Some(Across::Cluster) => "Insufficient Capacity: the cluster is at total-quota allocations, counted across its nodes; try later",
                },
            ));
        }
        Ok(())
    }
}

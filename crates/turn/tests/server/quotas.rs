//! Quotas over several servers: `usage`, `set_elsewhere`, the checks that count both,
//! two servers exchanging counts on the virtual clock, and odd counts from elsewhere.

use super::*;

use std::collections::BTreeMap;

use proptest::prelude::*;
use tsunagi_turn::{Across, Elsewhere, Usage};

/// Challenge + Allocate that may fail: the response.
fn try_allocate(h: &mut Harness, port: u16, user: &str, pw: &str) -> Vec<u8> {
    let ft = client_ft(port);
    let creds = h.challenge(ft, user, pw);
    h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(17).unwrap();
    })
}

fn delete(h: &mut Harness, port: u16, user: &str, pw: &str) {
    let ft = client_ft(port);
    let creds = h.challenge(ft, user, pw);
    let resp = h.auth_request(ft, Method::REFRESH, &creds, |e| {
        e.u32(attr::LIFETIME, 0).unwrap();
    });
    assert!(is_success(&resp));
}

fn usage(total: u64, users: &[(&str, u64)]) -> Usage {
    Usage {
        total,
        per_user: users.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
    }
}

fn elsewhere(total: u64, users: &[(&str, u64)], across: Across) -> Elsewhere {
    Elsewhere {
        usage: usage(total, users),
        across,
    }
}

#[test]
fn usage_counts_live_allocations_per_user() {
    let mut h = Harness::new(config());
    assert_eq!(h.server.usage(), Usage::default());
    h.allocate(client_ft(1), "alice", "wonderland");
    h.allocate(client_ft(2), "alice", "wonderland");
    h.allocate(client_ft(3), "bob", "builder");
    assert_eq!(h.server.usage(), usage(3, &[("alice", 2), ("bob", 1)]));
    // What other servers hold is not this server's usage.
    h.server
        .set_elsewhere(elsewhere(50, &[("alice", 7)], Across::Cluster));
    assert_eq!(h.server.usage().total, 3);
    assert_eq!(h.server.usage().user("alice"), 2);
    // Deleted and expired allocations leave it; a user with none has no entry.
    delete(&mut h, 3, "bob", "builder");
    assert_eq!(h.server.usage(), usage(2, &[("alice", 2)]));
    h.run_timers_until(h.t0 + Duration::from_secs(601));
    assert_eq!(h.server.usage(), Usage::default());
}

#[test]
fn user_quota_is_reached_through_allocations_elsewhere() {
    let mut c = config();
    c.user_quota = 2;
    let mut h = Harness::new(c);
    h.server
        .set_elsewhere(elsewhere(1, &[("alice", 1)], Across::Workers));
    h.allocate(client_ft(1), "alice", "wonderland");
    let resp = try_allocate(&mut h, 2, "alice", "wonderland");
    assert_eq!(error_code(&resp), 486);
    let r = reason(&resp);
    assert!(r.contains("user-quota"), "{r}");
    assert!(
        r.contains("2 allocations across this server's workers"),
        "{r}"
    );
    assert!(matches!(
        h.events().last(),
        Some(Event::QuotaReached {
            which: "user-quota",
            ..
        })
    ));
    // Another user is not counted against alice.
    h.allocate(client_ft(3), "bob", "builder");
    h.allocate(client_ft(4), "bob", "builder");
    // The one elsewhere is deleted (the username absent counts 0): room again.
    h.server.set_elsewhere(elsewhere(0, &[], Across::Workers));
    h.allocate(client_ft(2), "alice", "wonderland");
    // All of alice's quota elsewhere, on other nodes: the phrase says the cluster.
    delete(&mut h, 1, "alice", "wonderland");
    delete(&mut h, 2, "alice", "wonderland");
    h.server
        .set_elsewhere(elsewhere(2, &[("alice", 2)], Across::Cluster));
    let resp = try_allocate(&mut h, 5, "alice", "wonderland");
    assert_eq!(error_code(&resp), 486);
    assert!(
        reason(&resp).contains("across the cluster's nodes"),
        "{}",
        reason(&resp)
    );
}

#[test]
fn total_quota_is_reached_through_allocations_elsewhere() {
    let mut c = config();
    c.total_quota = 3;
    let mut h = Harness::new(c);
    h.server
        .set_elsewhere(elsewhere(2, &[("bob", 2)], Across::Cluster));
    h.allocate(client_ft(1), "alice", "wonderland");
    let resp = try_allocate(&mut h, 2, "alice", "wonderland");
    assert_eq!(error_code(&resp), 508);
    let r = reason(&resp);
    assert!(r.contains("total-quota"), "{r}");
    assert!(r.contains("cluster"), "{r}");
    assert!(matches!(
        h.events().last(),
        Some(Event::QuotaReached {
            which: "total-quota",
            ..
        })
    ));
    // One elsewhere ends: one more here, and no more.
    h.server
        .set_elsewhere(elsewhere(1, &[("bob", 1)], Across::Cluster));
    h.allocate(client_ft(2), "alice", "wonderland");
    let resp = try_allocate(&mut h, 3, "alice", "wonderland");
    assert_eq!(error_code(&resp), 508);
    assert_eq!(h.server.allocation_count(), 2);
    // Nothing given yet: the phrase of one server (no "counted across").
    let mut c = config();
    c.total_quota = 1;
    let mut h = Harness::new(c);
    h.allocate(client_ft(1), "alice", "wonderland");
    let r = reason(&try_allocate(&mut h, 2, "alice", "wonderland"));
    assert!(r.contains("total-quota") && !r.contains("across"), "{r}");
}

/// Two servers of one runtime (two workers) exchanging counts as the crate docs say,
/// on one virtual clock.
struct Pair {
    a: Harness,
    b: Harness,
}

impl Pair {
    fn new(c: ServerConfig) -> Self {
        let a = Harness::new(c.clone());
        let mut b = Harness::new(c);
        // One clock for both.
        b.t0 = a.t0;
        b.now = a.now;
        b.server = tsunagi_turn::Server::new(b.server.config().clone(), a.t0, UNIX0);
        // Distinct relay ports, as two workers' binders would give.
        b.binder.next_port = 55000;
        Pair { a, b }
    }

    fn exchange(&mut self) {
        let (ua, ub) = (self.a.server.usage(), self.b.server.usage());
        self.a.server.set_elsewhere(Elsewhere {
            usage: ub,
            across: Across::Workers,
        });
        self.b.server.set_elsewhere(Elsewhere {
            usage: ua,
            across: Across::Workers,
        });
    }

    fn advance(&mut self, d: Duration) {
        self.a.advance(d);
        self.b.advance(d);
    }
}

#[test]
fn two_servers_exchanging_counts_hold_the_quota_and_free_it() {
    let mut c = config();
    c.user_quota = 2;
    c.total_quota = 3;
    let mut p = Pair::new(c);
    p.a.allocate(client_ft(1), "alice", "wonderland");
    p.exchange();
    p.b.allocate(client_ft(2), "alice", "wonderland");
    p.advance(Duration::from_millis(100));
    p.exchange();
    // alice has one on each: neither grants a third.
    for h in [&mut p.a, &mut p.b] {
        assert_eq!(error_code(&try_allocate(h, 3, "alice", "wonderland")), 486);
    }
    p.advance(Duration::from_secs(10));
    p.b.allocate(client_ft(4), "bob", "builder");
    p.exchange();
    for h in [&mut p.a, &mut p.b] {
        assert_eq!(error_code(&try_allocate(h, 5, "bob", "builder")), 508);
    }
    // b's alice expires (it was made at t0, a's too: refresh a's first).
    let creds = p.a.challenge(client_ft(1), "alice", "wonderland");
    let resp =
        p.a.auth_request(client_ft(1), Method::REFRESH, &creds, |e| {
            e.u32(attr::LIFETIME, 1200).unwrap();
        });
    assert!(is_success(&resp));
    p.b.run_timers_until(p.b.t0 + Duration::from_secs(601));
    p.a.run_timers_until(p.b.now);
    assert_eq!(p.b.server.usage(), usage(1, &[("bob", 1)]));
    // Until the next exchange a still counts it; after it, there is room.
    assert_eq!(
        error_code(&try_allocate(&mut p.a, 6, "alice", "wonderland")),
        486
    );
    p.exchange();
    p.a.allocate(client_ft(6), "alice", "wonderland");
}

#[test]
fn overshoot_is_bounded_by_what_the_others_grant_between_exchanges() {
    let mut c = config();
    c.user_quota = 1;
    let mut p = Pair::new(c);
    p.exchange();
    // Both grant alice's one allocation before they exchange again: two in all, one
    // per server, never more.
    p.a.allocate(client_ft(1), "alice", "wonderland");
    p.b.allocate(client_ft(2), "alice", "wonderland");
    assert_eq!(
        error_code(&try_allocate(&mut p.a, 3, "alice", "wonderland")),
        486
    );
    assert_eq!(
        error_code(&try_allocate(&mut p.b, 4, "alice", "wonderland")),
        486
    );
    p.exchange();
    let r = reason(&try_allocate(&mut p.a, 5, "alice", "wonderland"));
    assert!(r.contains("2 allocations across"), "{r}");
    // Deleting one here leaves alice over her quota in all: still refused.
    delete(&mut p.a, 1, "alice", "wonderland");
    p.exchange();
    assert_eq!(
        error_code(&try_allocate(&mut p.a, 6, "alice", "wonderland")),
        486
    );
    delete(&mut p.b, 2, "alice", "wonderland");
    p.exchange();
    p.a.allocate(client_ft(7), "alice", "wonderland");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any counts from elsewhere (huge, zero, for odd names) never panic the server,
    /// and an Allocate succeeds exactly when both quotas have room.
    #[test]
    fn odd_counts_from_elsewhere_never_panic(
        total in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 0u64..5],
        users in proptest::collection::vec(
            (prop_oneof![Just(String::new()), Just("alice".to_owned()), "[a-z\\x00-\\x7f]{0,300}"],
             prop_oneof![Just(0u64), Just(u64::MAX), 0u64..4]),
            0..8),
        user_quota in 0u32..4,
        total_quota in 0u32..6,
        local in 0usize..3,
        cluster in any::<bool>(),
    ) {
        let mut c = config();
        c.user_quota = user_quota;
        c.total_quota = total_quota;
        let mut h = Harness::new(c);
        let mut per_user: BTreeMap<String, u64> = BTreeMap::new();
        for (name, n) in users {
            per_user.insert(name, n);
        }
        let alice_elsewhere = per_user.get("alice").copied().unwrap_or(0);
        h.server.set_elsewhere(Elsewhere {
            usage: Usage { total, per_user },
            across: if cluster { Across::Cluster } else { Across::Workers },
        });
        for i in 0..local {
            try_allocate(&mut h, 100 + i as u16, "alice", "wonderland");
            prop_assert!(h.server.usage().total <= i as u64 + 1);
        }
        let before = h.server.usage();
        let user_room = user_quota == 0
            || before.user("alice").saturating_add(alice_elsewhere) < u64::from(user_quota);
        let total_room = total_quota == 0
            || before.total.saturating_add(total) < u64::from(total_quota);
        let resp = try_allocate(&mut h, 200, "alice", "wonderland");
        prop_assert_eq!(is_success(&resp), user_room && total_room);
        if !user_room {
            prop_assert_eq!(error_code(&resp), 486);
        } else if !total_room {
            prop_assert_eq!(error_code(&resp), 508);
        }
        prop_assert_eq!(h.server.usage().total, h.server.allocation_count() as u64);
    }
}

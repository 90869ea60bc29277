//! The timer structure holds entries for live state only: allocation churn by an
//! authenticated client does not make it grow.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use tsunagi_stun::{attr, Message, Method};
use tsunagi_turn::{FiveTuple, Transport};

const CYCLES: u32 = 100_000;

#[test]
fn allocate_delete_churn_keeps_timers_bounded_by_live_state() {
    let mut h = Harness::new(config());
    h.binder.reuse_ports = true;
    let udp = client_ft(40100);
    let tcp = FiveTuple {
        transport: Transport::Tcp,
        ..client_ft(40101)
    };
    let creds_udp = h.challenge(udp, "alice", "wonderland");
    let creds_tcp = h.challenge(tcp, "alice", "wonderland");
    let mut token: Option<Vec<u8>> = None;
    let mut most = 0;
    for i in 0..CYCLES {
        // 1 ms per cycle: the whole run (100 s) stays inside one allocation lifetime,
        // so nothing is cleaned up by expiry.
        h.advance(Duration::from_millis(1));
        let (ft, creds) = if i % 4 == 3 {
            (tcp, &creds_tcp)
        } else {
            (udp, &creds_udp)
        };
        let reserve = i % 4 == 1;
        let use_token = token.take();
        let resp = h.auth_request(ft, Method::ALLOCATE, creds, |e| {
            e.requested_transport(attr::PROTO_UDP).unwrap();
            if reserve {
                e.even_port(true).unwrap();
            }
            if let Some(t) = &use_token {
                e.attr(attr::RESERVATION_TOKEN, t).unwrap();
            }
        });
        assert!(
            is_success(&resp),
            "cycle {i}: allocate refused ({})",
            reason(&resp)
        );
        if reserve {
            let m = Message::parse(&resp).unwrap();
            token = Some(m.get(attr::RESERVATION_TOKEN).unwrap().to_vec());
        }
        match i % 4 {
            1 => {
                // A long lifetime, then a shorter one: the deadline moves earlier.
                for lifetime in [3600, 700] {
                    let r = h.auth_request(ft, Method::REFRESH, creds, |e| {
                        e.u32(attr::LIFETIME, lifetime).unwrap();
                    });
                    assert!(
                        is_success(&r),
                        "cycle {i}: refresh refused ({})",
                        reason(&r)
                    );
                }
                let r = h.create_permission(ft, creds, &[peer4(7, 9000)]);
                assert!(
                    is_success(&r),
                    "cycle {i}: permission refused ({})",
                    reason(&r)
                );
            }
            3 => {
                // A TCP allocation goes with its connection.
                h.server.handle_connection_closed(h.now, ft, &mut h.binder);
            }
            _ => {}
        }
        if i % 4 != 3 {
            let r = h.auth_request(ft, Method::REFRESH, creds, |e| {
                e.u32(attr::LIFETIME, 0).unwrap();
            });
            assert!(is_success(&r), "cycle {i}: delete refused ({})", reason(&r));
        }
        assert_eq!(h.server.allocation_count(), 0, "cycle {i}");
        // What may be left: the reservation waiting for the next cycle's Allocate.
        let live_reservations = usize::from(token.is_some());
        assert_eq!(
            h.server.timer_count(),
            live_reservations,
            "cycle {i}: timer entries outlive what they time"
        );
        most = most.max(h.server.timer_count());
        h.events();
    }
    assert!(most <= 1, "at most one reservation was ever live");
    assert_eq!(h.server.stats().allocations_created, CYCLES as u64);
    // Nothing is left to fire.
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn an_unclaimed_reservation_leaves_the_timers_when_it_expires() {
    let mut h = Harness::new(config());
    let ft = client_ft(40102);
    let creds = h.challenge(ft, "alice", "wonderland");
    let resp = h.auth_request(ft, Method::ALLOCATE, &creds, |e| {
        e.requested_transport(attr::PROTO_UDP).unwrap();
        e.even_port(true).unwrap();
    });
    assert!(is_success(&resp));
    // The allocation and its reservation.
    assert_eq!(h.server.timer_count(), 2);
    let r = h.auth_request(ft, Method::REFRESH, &creds, |e| {
        e.u32(attr::LIFETIME, 0).unwrap();
    });
    assert!(is_success(&r));
    assert_eq!(
        h.server.timer_count(),
        1,
        "the reservation outlives the allocation"
    );
    let released_before = h.binder.released.len();
    h.run_timers_until(h.now + Duration::from_secs(31));
    assert_eq!(h.server.timer_count(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    assert_eq!(
        h.binder.released.len(),
        released_before + 1,
        "the reserved port is released at expiry"
    );
}

//! Arbitrary bytes from clients and peers never panic the server, and never make it
//! keep state for an unauthenticated sender.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use tsunagi_stun::attr;
use tsunagi_stun::{Class, Method};

fn mutate(base: &[u8], flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    for (i, x) in flips {
        if !v.is_empty() {
            let n = v.len();
            v[i % n] ^= x;
        }
    }
    v.truncate(cut.max(1).min(v.len()));
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_datagrams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), port in 1u16..100) {
        let mut h = Harness::new(config());
        let ft = client_ft(port);
        h.send(ft, &data);
        h.peer("192.0.2.10:50000".parse().unwrap(), peer4(1, 1), &data);
        prop_assert_eq!(h.server.allocation_count(), 0);
        prop_assert!(h.binder.requests.is_empty());
    }

    #[test]
    fn mutated_requests_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6), cut in 0usize..400) {
        let mut h = Harness::new(config());
        let ft = client_ft(5000);
        let (creds, relay) = h.allocate(ft, "alice", "wonderland");
        let tid = h.tid();
        let requests = [
            signed(Method::CREATE_PERMISSION, tid, &creds, |e| {
                e.xor_address(attr::XOR_PEER_ADDRESS, &peer4(1, 1)).unwrap();
            }),
            signed(Method::CHANNEL_BIND, tid, &creds, |e| {
                e.channel_number(0x4000).unwrap();
                e.xor_address(attr::XOR_PEER_ADDRESS, &peer4(1, 1)).unwrap();
            }),
            signed(Method::REFRESH, tid, &creds, |e| {
                e.u32(attr::LIFETIME, 0).unwrap();
            }),
            signed(Method::ALLOCATE, tid, &creds, |e| {
                e.requested_transport(17).unwrap();
                e.even_port(true).unwrap();
                e.address_family(attr::ADDITIONAL_ADDRESS_FAMILY, 2).unwrap();
            }),
            build(Class::Indication, Method::SEND, tid, |e| {
                e.xor_address(attr::XOR_PEER_ADDRESS, &peer4(1, 1)).unwrap();
                e.attr(attr::DATA, b"payload").unwrap();
            }),
        ];
        for r in &requests {
            let m = mutate(r, &flips, cut);
            h.send(ft, &m);
            h.send(client_ft(5001), &m);
            h.peer(relay, peer4(1, 1), &m);
        }
        // Whatever happened, the bookkeeping is consistent.
        let stats = h.server.stats();
        prop_assert_eq!(stats.allocations as usize, h.server.allocation_count());
        prop_assert!(h.server.allocation_count() <= 2);
    }
}

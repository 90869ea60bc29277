//! ChannelBind and ChannelData: both ways, over TCP, expiry, cooldown, quotas.

use super::*;

#[test]
fn channel_bind_and_channel_data_both_ways() {
    let mut h = Harness::new(config());
    let ft = client_ft(40040);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let peer = peer4(9, 6000);
    for (ch, code) in [(0x3FFF, 400), (0x7FFF, 400), (0x8000, 400)] {
        assert_eq!(error_code(&h.channel_bind(ft, &creds, ch, peer)), code);
    }
    let resp = h.auth_request(ft, Method::CHANNEL_BIND, &creds, |e| {
        e.channel_number(0x4001).unwrap();
    });
    assert_eq!(error_code(&resp), 400);
    let resp = h.channel_bind(ft, &creds, 0x4001, peer);
    assert!(is_success(&resp));
    verify(&Message::parse(&resp).unwrap(), &creds);
    assert_eq!(h.server.stats().channels, 1);
    assert_eq!(
        h.server.stats().permissions,
        1,
        "ChannelBind installs a permission"
    );

    let mut buf = [0u8; 64];
    let n = ChannelData {
        channel: 0x4001,
        data: b"to peer",
    }
    .encode(&mut buf, false)
    .unwrap();
    let out = h.send(ft, &buf[..n]);
    assert_eq!(
        out[0].destination,
        Destination::Peer {
            relay,
            peer,
            dont_fragment: false
        }
    );
    assert_eq!(out[0].payload, b"to peer");

    let out = h.peer(relay, peer, b"to client");
    let cd = ChannelData::parse(&out[0].payload).unwrap();
    assert_eq!((cd.channel, cd.data), (0x4001, &b"to client"[..]));
    assert_eq!(out[0].payload.len(), 4 + 9, "no padding over UDP");

    // Unbound channel number: dropped.
    let n = ChannelData {
        channel: 0x4002,
        data: b"x",
    }
    .encode(&mut buf, false)
    .unwrap();
    assert!(h.send(ft, &buf[..n]).is_empty());

    // Rebinding rules.
    assert_eq!(
        error_code(&h.channel_bind(ft, &creds, 0x4001, peer4(9, 6001))),
        400
    );
    assert_eq!(error_code(&h.channel_bind(ft, &creds, 0x4002, peer)), 400);
    assert!(
        is_success(&h.channel_bind(ft, &creds, 0x4001, peer)),
        "refresh of the same binding"
    );

    let stats = h.server.stats();
    assert_eq!((stats.packets_to_peers, stats.bytes_to_peers), (1, 7));
    assert_eq!((stats.packets_from_peers, stats.bytes_from_peers), (1, 9));
}

#[test]
fn channel_data_over_tcp_is_padded() {
    let mut h = Harness::new(config());
    let mut ft = client_ft(40041);
    ft.transport = Transport::Tcp;
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let peer = peer4(10, 6000);
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4abc, peer)));
    let out = h.peer(relay, peer, b"12345");
    assert_eq!(out[0].payload.len(), 12);
    assert_eq!(&out[0].payload[..4], &[0x4a, 0xbc, 0x00, 0x05]);
    // Padded input from a TCP client is accepted.
    let mut buf = [0u8; 16];
    let n = ChannelData {
        channel: 0x4abc,
        data: b"abc",
    }
    .encode(&mut buf, true)
    .unwrap();
    assert_eq!(n, 8);
    let out = h.send(ft, &buf[..n]);
    assert_eq!(out[0].payload, b"abc");
    // Closing the connection deletes the allocation.
    h.server.handle_connection_closed(h.now, ft, &mut h.binder);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.binder.released, vec![relay]);
}

#[test]
fn channel_expiry_and_cooldown() {
    let mut h = Harness::new(config());
    let ft = client_ft(40042);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    let peer = peer4(11, 6000);
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4000, peer)));
    // Keep the allocation and permission alive, let the channel lapse.
    h.run_timers_until(h.t0 + Duration::from_secs(290));
    h.create_permission(ft, &creds, &[peer]);
    h.auth_request(ft, Method::REFRESH, &creds, |e| {
        e.u32(attr::LIFETIME, 3600).unwrap();
    });
    h.run_timers_until(h.t0 + Duration::from_secs(580));
    h.create_permission(ft, &creds, &[peer]);
    h.run_timers_until(h.t0 + Duration::from_secs(601));
    // Expired channel: peer data arrives as a Data indication instead.
    let out = h.peer(relay, peer, b"x");
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().method(),
        Method::DATA
    );
    // In cooldown the channel cannot go to another peer...
    assert_eq!(
        error_code(&h.channel_bind(ft, &creds, 0x4000, peer4(12, 1))),
        400
    );
    // ...but the same binding can be renewed.
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4000, peer)));
    let out = h.peer(relay, peer, b"x");
    assert!(ChannelData::parse(&out[0].payload).is_ok());
}

#[test]
fn channel_number_reusable_after_cooldown() {
    let mut h = Harness::new(config());
    let ft = client_ft(40043);
    let (creds, _) = h.allocate(ft, "alice", "wonderland");
    h.auth_request(ft, Method::REFRESH, &creds, |e| {
        e.u32(attr::LIFETIME, 3600).unwrap();
    });
    assert!(is_success(&h.channel_bind(
        ft,
        &creds,
        0x4000,
        peer4(13, 1)
    )));
    h.run_timers_until(h.t0 + Duration::from_secs(600 + 300 + 1));
    assert_eq!(h.server.stats().channels, 0);
    assert!(is_success(&h.channel_bind(
        ft,
        &creds,
        0x4000,
        peer4(14, 1)
    )));
}

#[test]
fn channel_quota() {
    let mut c = config();
    c.max_channels = 2;
    let mut h = Harness::new(c);
    let ft = client_ft(40044);
    let (creds, _) = h.allocate(ft, "alice", "wonderland");
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4000, peer4(1, 1))));
    assert!(is_success(&h.channel_bind(ft, &creds, 0x4001, peer4(2, 1))));
    assert_eq!(
        error_code(&h.channel_bind(ft, &creds, 0x4002, peer4(3, 1))),
        508
    );
}

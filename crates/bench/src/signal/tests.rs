use super::client::{chat_text, parse_chat};
use super::*;
use crate::BenchArgs;

fn args(s: &str) -> SignalArgs {
    let argv = std::iter::once("signal").chain(s.split_whitespace());
    match BenchArgs::parse_from(argv).unwrap().command {
        crate::BenchCommand::Signal(a) => a,
        c => panic!("{c:?}"),
    }
}

fn refused(s: &str) -> String {
    args(s).validate().unwrap_err().to_string()
}

#[test]
fn urls() {
    let u = net::parse_url("ws://127.0.0.1:8080/ws").unwrap();
    assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 8080));
    let u = net::parse_url("wss://[::1]/ws").unwrap();
    assert_eq!((u.tls, u.host.as_str(), u.port), (true, "::1", 443));
    let u = net::parse_url("wss://node-2.example:9443/ws").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("node-2.example", 9443));
    for bad in [
        "http://127.0.0.1/ws",
        "127.0.0.1:8080",
        "ws:///ws",
        "nonsense",
    ] {
        assert!(net::parse_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn defaults_are_valid() {
    let a = args("--server ws://127.0.0.1:1/ws");
    a.validate().unwrap();
    assert_eq!((a.clients, a.rooms, a.room_size()), (1000, 100, 10));
    assert_eq!((a.join_rate, a.chat_rate), (500.0, 1000.0));
    assert!(a.mode.is_none() && a.token.is_none());
}

#[test]
fn bad_combinations_are_refused() {
    let s = "--server ws://127.0.0.1:1/ws";
    // 41 chats/s per client.
    let e = refused(&format!("{s} --clients 100 --rooms 10 --chat-rate 4100"));
    assert!(e.contains("per client") && e.contains("4000"), "{e}");
    args(&format!("{s} --clients 100 --rooms 10 --chat-rate 4000"))
        .validate()
        .unwrap();
    // Rooms larger than the server takes by default.
    let e = refused(&format!("{s} --clients 60 --rooms 1"));
    assert!(
        e.contains("60 members") && e.contains("max-room-peers"),
        "{e}"
    );
    let e = refused(&format!(
        "{s} --clients 10 --rooms 2 --mode mesh --chat-rate 100"
    ));
    assert!(
        e.contains("mesh-max-peers") && e.contains("at least 3"),
        "{e}"
    );
    args(&format!("{s} --clients 60 --rooms 1 --room-limit 60"))
        .validate()
        .unwrap();
    for bad in [
        "--clients 0",
        "--clients 20001",
        "--rooms 0",
        "--clients 10 --rooms 11",
        "--duration 0",
        "--duration 601",
        "--warmup 61",
        "--join-rate=-1",
        "--threads 0",
        "--room-prefix a.b",
        "--server-pid 1 --server-pid 2",
    ] {
        assert!(args(&format!("{s} {bad}")).validate().is_err(), "{bad}");
    }
    assert!(args("--server http://127.0.0.1:1/").validate().is_err());
}

#[test]
fn rooms_spread_over_servers() {
    // 2 servers, 100 rooms: `i % 2` would put each room on one server.
    let a = args(
        "--server ws://127.0.0.1:1/ws --server ws://127.0.0.1:2/ws --clients 1000 --rooms 100",
    );
    let mut per_server = [0; 2];
    for room in 0..100 {
        let mut seen = [0; 2];
        for k in 0..10 {
            let s = a.server_of(room + k * 100);
            seen[s] += 1;
            per_server[s] += 1;
        }
        assert_eq!(seen, [5, 5], "room {room}");
    }
    assert_eq!(per_server, [500, 500]);
}

#[test]
fn chat_texts_round_trip() {
    let json = chat_text(17, 3, 1_234_567);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["type"], "chat");
    let text = v["text"].as_str().unwrap();
    assert_eq!(parse_chat(text), Some((17, 1_234_567)));
    for bad in ["hello", "b|1|2", "b|x|2|3", "b|1|2|3|4", ""] {
        assert_eq!(parse_chat(bad), None, "{bad}");
    }
}

#[test]
fn expected_deliveries_follow_membership() {
    // Room 0 with 3 members on server 0 and 2 on server 1.
    let mut agg = Agg::new(2, 2);
    let t = Instant::now();
    for s in [0, 0, 0, 1, 1] {
        agg.joined(0, s, t, t);
    }
    agg.joined(1, 0, t, t);
    agg.sent(0, 0, true);
    assert_eq!(
        (agg.fanout.same.expected, agg.fanout.cross.expected),
        (2, 2)
    );
    agg.sent(0, 1, false);
    assert_eq!(agg.fanout.expected(), 4);
    assert_eq!((agg.fanout.sent_total, agg.fanout.sent_window), (2, 1));
    // One member of server 1 is gone: a chat from server 1 reaches 3 + 0.
    agg.disconnected(0, 1, "closed by server: 1008".into());
    agg.sent(0, 1, true);
    assert_eq!(
        (agg.fanout.same.expected, agg.fanout.cross.expected),
        (2, 5)
    );
    // Alone in a room: nobody to deliver to.
    agg.sent(1, 0, true);
    assert_eq!(agg.fanout.expected(), 7);
    agg.received(0, 0, 1_000);
    agg.received(1, 0, 2_000);
    let r = agg.fanout.result();
    assert_eq!((r.expected, r.received, r.lost), (7, 2, 5));
    assert_eq!(r.cross_server.received, 1);
    assert!(r.latency_us.max >= 1.9 && r.latency_us.max <= 2.1, "{r:?}");
    assert_eq!(agg.per_server[1].disconnected, 1);
}

//! Tests of bench sfu's parts: arguments, HTTP parsing, frame tags, the report.

use super::args::{parse_bitrate, parse_secs};
use super::*;
use std::net::Ipv4Addr;

#[test]
fn durations_and_bitrates() {
    assert_eq!(parse_secs("10s").unwrap(), 10.0);
    assert_eq!(parse_secs("10").unwrap(), 10.0);
    assert_eq!(parse_secs("1500ms").unwrap(), 1.5);
    assert_eq!(parse_secs("2m").unwrap(), 120.0);
    assert!(parse_secs("-1").is_err() && parse_secs("x").is_err());
    assert_eq!(parse_bitrate("500k").unwrap(), 500_000);
    assert_eq!(parse_bitrate("1.5M").unwrap(), 1_500_000);
    assert_eq!(parse_bitrate("800000").unwrap(), 800_000);
    assert!(parse_bitrate("0").is_err() && parse_bitrate("fast").is_err());
}

#[test]
fn vp8_frames_carry_the_keyframe_bit_and_the_tag() {
    let filler = vec![0x55; 100];
    for keyframe in [true, false] {
        let tag = Tag {
            video: true,
            keyframe,
            publisher: 3,
            seq: 77,
            sent_us: 123_456,
        };
        let f = vp8_frame(&tag, 2000, &filler);
        assert_eq!(f.len(), 2000);
        // RFC 6386 9.1: P (inverse keyframe) is bit 0, show_frame bit 4.
        assert_eq!(f[0] & 1 == 0, keyframe);
        assert_eq!(f[0] & 0x10, 0x10);
        if keyframe {
            assert_eq!(&f[3..6], &[0x9d, 0x01, 0x2a]);
        }
        assert_eq!(Tag::find(true, &f), Some(tag));
    }
    let a = Tag {
        video: false,
        keyframe: false,
        publisher: 0,
        seq: 1,
        sent_us: 2,
    };
    let f = opus_frame(&a);
    assert_eq!(f[0], 0xF8);
    assert_eq!(Tag::find(false, &f), Some(a));
    assert_eq!(Tag::find(false, &[0xF8, 1, 2, 3]), None);
}

#[test]
fn m_lines_follow_the_latest_msid() {
    let mut r = Receiver::default();
    let offer = |b: &str, c: &str| {
        format!(
            "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendonly\r\n{b}\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:5\r\n{c}"
        )
    };
    r.follow_sdp(&offer("a=msid:p_b t1\r\n", "a=msid:p_c t2\r\n"));
    assert_eq!(r.msid.get(&Mid::from("3")).map(String::as_str), Some("p_b"));
    assert_eq!(r.msid.get(&Mid::from("5")).map(String::as_str), Some("p_c"));
    assert!(!r.msid.contains_key(&Mid::from("0")));
    // p_b left and p_d took its m-line; p_c's m-line went inactive without an msid.
    r.follow_sdp(&offer("a=msid:p_d t9\r\n", "a=inactive\r\n"));
    assert_eq!(r.msid.get(&Mid::from("3")).map(String::as_str), Some("p_d"));
    assert!(!r.msid.contains_key(&Mid::from("5")));
    assert_eq!(r.msid_changes, 1);
}

#[test]
fn http_answers_and_locations() {
    let raw =
        b"HTTP/1.1 201 Created\r\nLocation: /whip/r/abc\r\nContent-Length: 5\r\n\r\nv=0\r\nextra";
    let r = parse_response(raw).unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some("/whip/r/abc"));
    assert_eq!(r.body, "v=0\r\n");
    let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    assert_eq!(parse_response(raw).unwrap().body, "abcde");
    assert_eq!(location_path("http://h:1/x/whip/r/1", "/x"), "/whip/r/1");
    assert_eq!(location_path("/whip/r/1", ""), "/whip/r/1");
    let b = parse_base("http://127.0.0.1:8080/").unwrap();
    assert_eq!(b.addr, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(b.prefix, "");
    assert!(parse_base("https://127.0.0.1").is_err());
}

#[test]
fn bad_options_are_refused() {
    let ok = SfuArgs {
        target: Target::Tsunagi,
        http: "http://127.0.0.1:1".into(),
        room: "r".into(),
        publishers: 1,
        subscribers: 1,
        duration: 1.0,
        warmup: 0.0,
        bitrate: 500_000,
        local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        participants: None,
        churn_every: None,
        seed: 1,
        starved_after: 10.0,
        token: None,
        server_pid: None,
        json: false,
    };
    assert!(ok.validate().is_ok());
    for bad in [
        SfuArgs {
            publishers: 0,
            ..ok.clone()
        },
        SfuArgs {
            subscribers: MAX_CLIENTS,
            ..ok.clone()
        },
        SfuArgs {
            target: Target::Janus,
            participants: Some(4),
            churn_every: Some(2.0),
            ..ok.clone()
        },
        SfuArgs {
            target: Target::Janus,
            token: Some("t".into()),
            ..ok.clone()
        },
        SfuArgs {
            duration: 601.0,
            ..ok.clone()
        },
        SfuArgs {
            room: "a/b".into(),
            ..ok.clone()
        },
        SfuArgs {
            bitrate: 100_000_000,
            ..ok.clone()
        },
        SfuArgs {
            participants: Some(1),
            ..ok.clone()
        },
        SfuArgs {
            participants: Some(51),
            ..ok.clone()
        },
        SfuArgs {
            churn_every: Some(2.0),
            ..ok.clone()
        },
        SfuArgs {
            participants: Some(4),
            churn_every: Some(0.1),
            ..ok.clone()
        },
        SfuArgs {
            starved_after: 0.0,
            ..ok.clone()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    // Nothing listens on port 1: a clear error, no panic.
    let e = run(&ok).unwrap_err().to_string();
    assert!(e.contains("cannot connect"), "{e}");
}

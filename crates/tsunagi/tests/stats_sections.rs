//! The signaling and SFU sections of `/api/stats` and `/metrics`, as a scraper sees them
//! from the running binary: one description per counter, in both formats.
#![allow(clippy::unwrap_used)]

mod process;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use process::{get_json, Process};

fn get_text(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn signaling_and_sfu_sections_in_both_formats() {
    let mut p = Process::start("stats-sections", &[], &[]);
    let (status, _) = p.first_health();
    assert_eq!(status, 200);
    let (status, stats) = get_json(&p.http, "/api/stats").unwrap();
    assert_eq!(status, 200);
    let sig = &stats["signaling"];
    assert_eq!(sig["connections"], 0, "{stats}");
    assert_eq!(sig["roomsByMode"]["mesh"], 0, "{stats}");
    assert_eq!(sig["modeSwitches"]["toSfu"], 0, "{stats}");
    assert_eq!(sig["leaves"]["kicked"], 0, "{stats}");
    assert!(sig["errors"].is_object(), "{stats}");
    let sfu = &stats["sfu"];
    for key in [
        "rooms",
        "peers",
        "packetsIn",
        "datagramsIn",
        "incomingDropped",
        "sendErrors",
    ] {
        assert_eq!(sfu[key], 0, "sfu.{key}: {stats}");
    }

    let text = get_text(&p.http, "/metrics");
    for line in [
        "# TYPE tsunagi_signaling_connections gauge",
        "tsunagi_signaling_connections 0",
        "# TYPE tsunagi_signaling_mode_switches_total counter",
        "tsunagi_signaling_mode_switches_total{to=\"sfu\"} 0",
        "tsunagi_signaling_leaves_total{reason=\"kicked\"} 0",
        "# TYPE tsunagi_signaling_errors_total counter",
        "# TYPE tsunagi_sfu_rooms gauge",
        "tsunagi_sfu_rooms 0",
        "# TYPE tsunagi_sfu_datagrams_in_total counter",
        "tsunagi_sfu_datagrams_in_total 0",
        "tsunagi_sfu_send_errors_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    // One HELP and one TYPE per family.
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut unique = types.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(types.len(), unique.len(), "a family twice:\n{text}");
}

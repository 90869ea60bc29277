//! `tsunagi bench sfu` against the real binary on 127.0.0.1: one WHIP publisher and
//! three WHEP subscribers for about 3 s. Every subscriber must receive more than 80 %
//! of the audio and video frames its publisher sent, with the keyframe flags intact,
//! the report must carry its fields, and every session must be gone afterwards.
//! A room run (`--participants 3`: three participants over the signaling WebSocket, each
//! publishing and receiving the other two) must deliver more than 80 % of the frames of
//! every (publisher, subscriber) pair, and every participant must leave.
//! With churn (`--participants 4 --churn-every 2s` for 15 s: one participant leaves and
//! a new one takes its place every 2 s) no direction starves, more directions are served
//! than the first room's 12, and every frame came on an m-line whose current `a=msid`
//! names its publisher (the SFU reuses the m-lines of those who left).
//! The WHIP endpoint refuses an offer that sends nothing (422, saying what is missing).
//! Performance itself is measured in docs/benchmarks.md, never asserted here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod ports;

const BIN: &str = env!("CARGO_BIN_EXE_tsunagi");

use ports::free_port;

/// A tsunagi process, killed (by its handle) when dropped.
struct Server {
    child: Child,
    http: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(name: &str, extra: &[&str]) -> Server {
        let http_port = free_port();
        let turn_port = free_port();
        let min = 40_000 + u16::from(rand_byte()) * 50;
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench_sfu-{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut args: Vec<String> = [
            "--http-ip",
            "127.0.0.1",
            "--http-port",
            &http_port.to_string(),
            "--listening-ip",
            "127.0.0.1",
            "--listening-port",
            &turn_port.to_string(),
            "--relay-ip",
            "127.0.0.1",
            "--min-port",
            &min.to_string(),
            "--max-port",
            &(min + 49).to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(BIN)
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let mut s = Server {
            child,
            http: format!("http://127.0.0.1:{http_port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("tsunagi exited at start ({status}): {}", s.log_text());
            }
            if get(&s.http, "/healthz").is_some_and(|(st, _)| st == 200) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "tsunagi did not answer /healthz within 15 s: {}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stats(&self) -> Value {
        let (status, body) = get(&self.http, "/api/stats").expect("/api/stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// 0..200, different between runs: where the relay port range starts.
fn rand_byte() -> u8 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    ((nanos ^ std::process::id()) % 200) as u8
}

/// A plain HTTP/1.1 GET: status and body.
fn get(base: &str, path: &str) -> Option<(u16, String)> {
    let addr = base.strip_prefix("http://")?;
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// A plain HTTP/1.1 POST of an SDP offer: status and body.
fn post_sdp(base: &str, path: &str, sdp: &str) -> Option<(u16, String)> {
    let addr = base.strip_prefix("http://")?;
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{sdp}",
        sdp.len()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// A real offer made by str0m: one Opus and one VP8 m-line, both `direction`.
fn str0m_offer(direction: str0m::media::Direction) -> String {
    use str0m::media::MediaKind;
    let now = Instant::now();
    let mut rtc = str0m::Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(now);
    let local = "127.0.0.1:9".parse().unwrap();
    rtc.add_local_candidate(str0m::Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, direction, Some("s".into()), None, None);
    api.add_media(MediaKind::Video, direction, Some("s".into()), None, None);
    let (offer, _) = api.apply().unwrap();
    offer.to_sdp_string()
}

/// Runs `tsunagi bench sfu ARGS`, killed after 60 s.
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("bench")
        .arg("sfu")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tsunagi bench sfu {args:?} ran longer than 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Runs `tsunagi bench sfu ARGS --json` against `server`: the report, once it ran.
fn bench_json(server: &Server, args: &[&str]) -> Value {
    let pid = server.child.id().to_string();
    let mut all = vec!["--http", &server.http];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server-pid", &pid, "--json"]);
    let out = bench(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {stderr}\n--- server log:\n{}",
        server.log_text()
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

/// One subscriber (or pair) of the report got more than 80 % of the audio and video
/// frames its publisher sent in the window.
fn assert_delivered(s: &Value) {
    let f = |k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{k} in {s}"));
    assert!(
        f("audio_expected") > 0.0 && f("video_expected") > 0.0,
        "{s}"
    );
    assert!(
        f("audio_received") > 0.8 * f("audio_expected"),
        "audio frames lost: {s}"
    );
    assert!(
        f("video_received") > 0.8 * f("video_expected"),
        "video frames lost: {s}"
    );
}

/// Frames arrive as sent: keyframe flags (read by str0m's VP8 depacketizer) match what
/// the publisher wrote, and every payload still carries its tag.
fn assert_frames_intact(r: &Value) {
    assert_eq!(num(r, "keyframe_flag_mismatches"), 0.0, "{r}");
    assert_eq!(num(r, "untagged_frames"), 0.0, "{r}");
    assert!(num(r, "forwarded_packets_per_sec") > 0.0, "{r}");
}

/// Polls the server's /api/stats (refreshed every 500 ms) until `done` holds, for at
/// most 5 s; then the server must have forwarded media.
fn wait_for_stats(server: &Server, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = server.stats();
        if done(&st) {
            assert!(
                st["sfu"]["mediaForwarded"].as_u64().unwrap_or(0) > 0,
                "{st}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn num(r: &Value, key: &str) -> f64 {
    r.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("report field {key} missing or not a number: {r}"))
}

#[test]
fn one_publisher_three_subscribers() {
    let server = Server::start("smoke", &["--sfu-port", "0"]);
    let r = bench_json(
        &server,
        &[
            "--room",
            "bench-smoke",
            "--publishers",
            "1",
            "--subscribers",
            "3",
            "--duration",
            "3s",
            "--warmup",
            "1s",
        ],
    );

    assert_eq!(r["bench"], "sfu");
    assert_eq!(r["publishers"], 1);
    assert_eq!(r["subscribers"], 3);
    // The publisher really sent for the whole window: 50 audio and 30 video frames/s.
    let secs = num(&r, "duration_s");
    assert!(secs >= 2.9, "{r}");
    assert!(num(&r, "sent_audio_frames") >= 0.9 * 50.0 * secs, "{r}");
    assert!(num(&r, "sent_video_frames") >= 0.9 * 30.0 * secs, "{r}");
    assert!(num(&r, "sent_keyframes") >= 1.0, "{r}");

    let subs = r["per_subscriber"].as_array().expect("per_subscriber");
    assert_eq!(subs.len(), 3, "{r}");
    for s in subs {
        assert_delivered(s);
        assert!(num(s, "keyframes_received") >= 1.0, "{s}");
        assert!(s["error"].is_null(), "{s}");
    }
    assert_frames_intact(&r);
    assert!(num(&r, "subscriber_mbit_per_sec") > 0.0, "{r}");
    for k in ["publisher_connect_ms", "subscriber_connect_ms"] {
        assert!(r[k]["max"].as_f64().is_some_and(|v| v > 0.0), "{k}: {r}");
    }
    let lat = &r["frame_latency_ms"];
    assert!(
        lat["p50"].as_f64().is_some_and(|v| v > 0.0 && v < 1000.0),
        "{r}"
    );
    // Server figures from /proc.
    for k in [
        "server_cpu_s",
        "server_cpu_util",
        "server_cpu_us_per_forwarded_packet",
        "server_cpu_percent_per_subscriber",
        "server_rss_start_kib",
        "server_rss_connected_kib",
        "server_peak_rss_kib",
        "server_rss_per_subscriber_kib",
    ] {
        assert!(r[k].is_number(), "{k} missing: {r}");
    }
    // Every DELETE answered 200.
    assert_eq!(r["errors"], Value::Array(vec![]), "{r}");

    // The server agrees: no WHIP or WHEP session is left.
    wait_for_stats(
        &server,
        "sessions left after the run (or /api/stats not refreshed after the last DELETE)",
        |st| st["sfu"]["whipSessions"] == 0 && st["sfu"]["whepSessions"] == 0,
    );
}

#[test]
fn room_of_three_participants() {
    let server = Server::start("room", &["--sfu-port", "0"]);
    let r = bench_json(
        &server,
        &[
            "--room",
            "bench-room",
            "--participants",
            "3",
            "--duration",
            "3s",
            "--warmup",
            "1s",
        ],
    );
    assert_eq!(r["bench"], "sfu-room");
    assert_eq!(r["participants"], 3);
    assert_eq!(r["pairs"], 6);
    let secs = num(&r, "duration_s");
    assert!(secs >= 2.9, "{r}");
    // Three participants, each 50 audio and 30 video frames/s.
    assert!(
        num(&r, "sent_audio_frames") >= 0.9 * 3.0 * 50.0 * secs,
        "{r}"
    );
    assert!(
        num(&r, "sent_video_frames") >= 0.9 * 3.0 * 30.0 * secs,
        "{r}"
    );
    // The SFU renegotiated as the others joined (offers from "sfu" answered).
    assert!(num(&r, "sfu_offers") >= 2.0, "{r}");

    let pairs = r["per_pair"].as_array().expect("per_pair");
    assert_eq!(pairs.len(), 6, "{r}");
    let mut seen = std::collections::HashSet::new();
    for p in pairs {
        assert_ne!(p["publisher"], p["subscriber"], "{p}");
        seen.insert((p["publisher"].to_string(), p["subscriber"].to_string()));
        assert_delivered(p);
    }
    assert_eq!(seen.len(), 6, "every ordered pair once: {r}");
    assert_frames_intact(&r);
    for k in ["join_ms", "connect_ms"] {
        assert!(r[k]["max"].as_f64().is_some_and(|v| v > 0.0), "{k}: {r}");
    }
    for k in [
        "server_cpu_us_per_forwarded_packet",
        "server_cpu_percent_per_participant",
        "server_rss_per_participant_kib",
    ] {
        assert!(r[k].is_number(), "{k} missing: {r}");
    }
    assert_eq!(r["errors"], Value::Array(vec![]), "{r}");

    // Every participant sent `leave`: nobody is left in the room, not even in the
    // resume grace period.
    wait_for_stats(&server, "participants left behind after the run", |st| {
        let sig = &st["signaling"];
        sig["peers"] == 0 && sig["peersInGrace"] == 0 && sig["leaves"]["left"] == 3
    });
}

/// A room of 4 with a participant replaced every 2 s for 15 s: every direction (publisher
/// → subscriber pair in the room together) gets video, none starves (the tool exits with
/// 3 if one does), and everyone who joined left.
#[test]
fn room_with_churn_starves_no_direction() {
    let server = Server::start("churn", &["--sfu-port", "0"]);
    let pid = server.child.id().to_string();
    let out = bench(&[
        "--http",
        &server.http,
        "--room",
        "bench-churn",
        "--participants",
        "4",
        "--churn-every",
        "2s",
        "--duration",
        "15s",
        "--warmup",
        "1s",
        "--seed",
        "7",
        "--server-pid",
        &pid,
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench exited with {:?}: {stderr}\n{stdout}\n--- server log:\n{}",
        out.status.code(),
        server.log_text()
    );
    let r: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    assert_eq!(r["bench"], "sfu-room-churn");
    assert_eq!(r["participants"], 4);
    assert!(num(&r, "duration_s") >= 14.9, "{r}");
    // A leave and a join at 2, 4, ... 14 s of the window.
    let leaves = num(&r, "leaves");
    assert!((6.0..=7.0).contains(&leaves), "{r}");
    assert_eq!(num(&r, "joins"), 4.0 + leaves, "{r}");
    let peers = r["peer_ids"].as_array().expect("peer_ids");
    assert_eq!(peers.len() as f64, num(&r, "joins"), "{r}");
    assert!(
        peers
            .iter()
            .all(|p| p.as_str().is_some_and(|p| p.starts_with("p_"))),
        "{r}"
    );

    assert_eq!(num(&r, "directions_starved"), 0.0, "{r}");
    assert_eq!(r["starved"], Value::Array(vec![]), "{r}");
    // The first room's 4 x 3 directions, and those of every newcomer.
    let served = num(&r, "directions_served");
    assert!(served > 12.0, "{r}");
    assert!(
        served + num(&r, "directions_unserved_short") == num(&r, "directions"),
        "{r}"
    );
    let first = &r["first_video_ms"];
    assert!(
        first["max"]
            .as_f64()
            .is_some_and(|v| v > 0.0 && v < 10_000.0),
        "{r}"
    );
    assert!(
        r["first_video_ms_joined_in_window"]["p50"].as_f64() > Some(0.0),
        "{r}"
    );
    let dirs = r["per_direction"].as_array().expect("per_direction");
    assert_eq!(dirs.len() as f64, num(&r, "directions"), "{r}");
    for d in dirs {
        assert_ne!(d["publisher"], d["subscriber"], "{d}");
    }
    // The SFU gave newcomers the m-lines of those who left, and every frame came on the
    // m-line whose current a=msid names its publisher, starting at a keyframe.
    assert!(num(&r, "reused_mlines") > 0.0, "{r}");
    assert_eq!(num(&r, "msid_mismatches"), 0.0, "{r}");
    assert_eq!(num(&r, "first_frame_not_keyframe"), 0.0, "{r}");
    assert_frames_intact(&r);
    assert_eq!(r["errors"], Value::Array(vec![]), "{r}");

    // Everyone who joined left with `leave`, the churn's leavers too.
    let joins = num(&r, "joins");
    wait_for_stats(&server, "participants left behind after the run", |st| {
        let sig = &st["signaling"];
        sig["peers"] == 0
            && sig["peersInGrace"] == 0
            && sig["leaves"]["left"].as_f64() == Some(joins)
    });
}

/// A WHIP offer that sends nothing (`a=recvonly`, what a viewer would offer) is refused
/// with 422 and a body that says what is missing, and joins nobody: the same offer
/// sending (`a=sendonly`) is then the room's only WHIP session.
#[test]
fn whip_offer_that_sends_nothing_is_refused() {
    use str0m::media::Direction;
    let server = Server::start("whip-recvonly", &[]);
    let recvonly = str0m_offer(Direction::RecvOnly);
    assert!(recvonly.contains("a=recvonly"), "{recvonly}");
    let (status, body) = post_sdp(&server.http, "/whip/quiet", &recvonly).expect("POST /whip");
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains(
            "the WHIP offer sends no media (its m-lines: m=audio is recvonly, m=video is recvonly)"
        ) && body
            .contains("needs at least one audio or video m-line with a=sendonly or a=sendrecv"),
        "{body}"
    );
    let (status, body) = post_sdp(
        &server.http,
        "/whip/quiet",
        &str0m_offer(Direction::SendOnly),
    )
    .expect("POST /whip");
    assert_eq!(status, 201, "{body}");
    // /api/stats is refreshed every 500 ms: wait for the session, then for one more
    // refresh, and there is exactly one.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats()["sfu"]["whipSessions"] != 1 {
        assert!(Instant::now() < deadline, "{}", server.stats());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(600));
    let st = server.stats();
    assert_eq!(st["sfu"]["whipSessions"], 1, "{st}");
    assert_eq!(st["sfu"]["peers"], 1, "{st}");
}

/// Without an SFU the server has no /whip: the tool says so and exits with 1.
#[test]
fn no_sfu_is_a_clear_error() {
    let server = Server::start("nosfu", &["--no-sfu"]);
    let out = bench(&[
        "--http",
        &server.http,
        "--publishers",
        "1",
        "--subscribers",
        "1",
        "--duration",
        "1s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("WHIP returned"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_options_are_refused() {
    for args in [
        &["--publishers", "0"][..],
        &["--publishers", "1", "--subscribers", "200"],
        &["--duration", "601s"],
        &["--bitrate", "100M"],
        &["--http", "https://127.0.0.1:1"],
        &["--participants", "1"],
        &["--participants", "3", "--churn-every", "0.1s"],
        &[
            "--participants",
            "3",
            "--churn-every",
            "2s",
            "--starved-after",
            "0",
        ],
    ] {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A room run has no separate publishers or subscribers: clap refuses the mix
    // (exit status 2, a usage error).
    for other in ["--publishers", "--subscribers"] {
        let out = bench(&["--participants", "3", other, "2"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{other}: {stderr}");
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
    // Churn is for rooms.
    let out = bench(&["--churn-every", "2s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--participants"), "{stderr}");
}

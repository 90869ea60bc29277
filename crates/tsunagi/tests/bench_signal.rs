//! `tsunagi bench signal` against the real binary on 127.0.0.1.
//!
//! * 40 clients in 8 rooms, half over ws:// and half over wss:// (the server's
//!   self-signed certificate, `--insecure`): all join, every chat of the window reaches
//!   the other four members of its room (no loss on an idle loopback server), the
//!   latencies are there, every client closes cleanly, and the server agrees that all
//!   of them left.
//! * 60 clients in one room against a server that takes 10 per room: 10 join, the 50
//!   others are counted as `room-full`, and the 10 still chat without loss. Without
//!   `--room-limit` the tool refuses such a run itself.
//! * Option combinations the server would refuse (41 chats/s per client) are refused
//!   with a message.
//!
//! Performance itself is never asserted here (see the report of a run by hand).

#![allow(clippy::unwrap_used)]

mod process;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use process::{get_json, Process, BIN};
use serde_json::Value;

/// Runs `tsunagi bench signal ARGS`, killed after 60 s.
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(["bench", "signal"])
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
            panic!("tsunagi bench signal {args:?} ran longer than 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The JSON report of a run that must succeed.
fn bench_json(server: &Process, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = bench(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n--- server log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number: {v}"))
}

/// Percentiles present, positive and in order.
fn assert_latency(l: &Value) {
    let (p50, p99, p999, max) = (num(l, "p50"), num(l, "p99"), num(l, "p999"), num(l, "max"));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999 && p999 <= max, "{l}");
}

/// Polls `/api/stats` (refreshed every 500 ms) until `done` holds, for at most 5 s.
fn wait_for_stats(server: &Process, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, st) = get_json(&server.http, "/api/stats").unwrap();
        assert_eq!(status, 200, "{st}");
        if done(&st) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_chat_reaches_the_room() {
    let mut server = Process::start("bench_signal-fanout", &[], &[]);
    server.first_health();
    let (ws, wss) = (
        format!("ws://{}/ws", server.http),
        format!("wss://{}/ws", server.http),
    );
    let pid = server.child.id().to_string();
    let r = bench_json(
        &server,
        &[
            "--server",
            &ws,
            "--server",
            &wss,
            "--insecure",
            "--server-pid",
            &pid,
            "--server-pid",
            &pid,
            "--clients",
            "40",
            "--rooms",
            "8",
            "--chat-rate",
            "200",
            "--duration",
            "2",
            "--warmup",
            "0.5",
        ],
    );
    assert_eq!(r["bench"], "signal");
    assert_eq!(num(&r, "joined"), 40.0, "{r}");
    assert_eq!(num(&r, "join_failed"), 0.0, "{r}");
    assert_eq!(r["join_failures"], serde_json::json!({}), "{r}");
    assert!(num(&r, "join_per_sec") > 0.0, "{r}");
    assert_latency(&r["join_latency_us"]);
    for s in r["servers"].as_array().unwrap() {
        assert_eq!((num(s, "clients"), num(s, "joined")), (20.0, 20.0), "{r}");
    }

    // 200 chats/s for 2 s; each of the 8 rooms has 5 members: 4 deliveries per chat.
    let sent = num(&r, "chats_sent_in_window");
    assert!((0.8 * 400.0..=1.1 * 400.0).contains(&sent), "{r}");
    let f = &r["fanout"];
    assert_eq!(num(f, "expected"), 4.0 * sent, "{r}");
    assert_eq!(num(f, "received"), num(f, "expected"), "{r}");
    assert_eq!(num(f, "lost"), 0.0, "{r}");
    for k in ["late", "misrouted", "foreign"] {
        assert_eq!(num(f, k), 0.0, "{k}: {r}");
    }
    assert_latency(&f["latency_us"]);
    // Each room has members on both URLs: deliveries of both kinds.
    for k in ["same_server", "cross_server"] {
        assert!(num(&f[k], "expected") > 0.0, "{k}: {r}");
        assert_eq!(num(&f[k], "received"), num(&f[k], "expected"), "{k}: {r}");
    }

    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert_eq!(
        (num(&r, "rate_limited"), num(&r, "server_busy")),
        (0.0, 0.0)
    );
    assert_eq!(r["disconnects"], serde_json::json!({}), "{r}");
    assert_eq!(num(&r, "closed_clean"), 40.0, "{r}");
    assert_eq!(r["close_failures"], serde_json::json!({}), "{r}");
    // /proc figures of the server and of the tool itself.
    let p = &r["server_procs"][0];
    for k in ["window_cpu_util", "rss_joined_kib", "peak_rss_kib"] {
        assert!(p[k].is_number(), "{k}: {r}");
    }
    assert!(r["generator"]["window_cpu_util"].is_number(), "{r}");

    // Close 1000 is a leave: nobody is left.
    wait_for_stats(&server, "peers left after the run", |st| {
        let s = &st["signaling"];
        s["peers"] == 0 && s["leaves"]["left"] == 40 && s["joins"] == 40
    });
}

#[test]
fn refused_joins_are_counted() {
    let mut server = Process::start("bench_signal-full", &["--max-room-peers", "10"], &[]);
    server.first_health();
    let ws = format!("ws://{}/ws", server.http);
    let args = [
        "--server",
        &ws,
        "--clients",
        "60",
        "--rooms",
        "1",
        "--chat-rate",
        "60",
        "--duration",
        "1",
        "--warmup",
        "0.2",
    ];

    // The tool itself refuses rooms larger than the server's default limit...
    let out = bench(&args);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("60 members") && stderr.contains("--room-limit"),
        "{stderr}"
    );

    // ... unless told the servers take them; this one takes 10.
    let mut all = args.to_vec();
    all.extend_from_slice(&["--room-limit", "60"]);
    let r = bench_json(&server, &all);
    assert_eq!(num(&r, "joined"), 10.0, "{r}");
    assert_eq!(num(&r, "join_failed"), 50.0, "{r}");
    assert_eq!(
        r["join_failures"],
        serde_json::json!({"room-full": 50}),
        "{r}"
    );
    assert_eq!(num(&r, "server_max_peers"), 10.0, "{r}");
    assert_eq!(num(&r, "closed_clean"), 60.0, "{r}");
    // The ten members chat as usual: 9 deliveries per chat.
    let f = &r["fanout"];
    let sent = num(&r, "chats_sent_in_window");
    assert!(sent > 0.0, "{r}");
    assert_eq!(num(f, "expected"), 9.0 * sent, "{r}");
    assert_eq!(num(f, "received"), num(f, "expected"), "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");

    wait_for_stats(&server, "room-full counted by the server", |st| {
        let s = &st["signaling"];
        s["errors"]["room-full"] == 50 && s["peers"] == 0
    });
}

#[test]
fn impossible_rates_are_refused() {
    // 10 clients cannot send 1000 chats/s (the server allows 50 messages/s each).
    let out = bench(&[
        "--server",
        "ws://127.0.0.1:9/ws",
        "--clients",
        "10",
        "--rooms",
        "2",
        "--chat-rate",
        "1000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("100.0 chats/s per client") && stderr.contains("at most 400"),
        "{stderr}"
    );
    // Nobody listening: the run fails, saying why.
    let out = bench(&[
        "--server",
        "ws://127.0.0.1:9/ws",
        "--clients",
        "2",
        "--rooms",
        "1",
        "--chat-rate",
        "10",
        "--duration",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no client could join: connect: ConnectionRefused 2"),
        "{stderr}"
    );
}

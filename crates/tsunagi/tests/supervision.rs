//! A core that dies takes the process down: the real binary (a debug build, with the
//! `TSUNAGI_DEBUG_FAULT` hook of `supervise.rs`) is told to make one core panic; then
//! `/healthz` must answer 503 naming it, the log must name it at error, and the process
//! must exit with status 1.
#![allow(clippy::unwrap_used)]

mod process;

use std::time::{Duration, Instant};

use process::{get_json, Process};
use serde_json::Value;

/// Every component that `main` starts, all up.
fn assert_all_up(body: &Value) {
    assert_eq!(body["status"], "ok", "{body}");
    for c in ["turn", "sfu", "signaling", "http"] {
        assert_eq!(body["components"][c]["status"], "up", "{c}: {body}");
        assert!(
            body["components"][c]["cores"].as_u64().unwrap() >= 1,
            "{c}: {body}"
        );
    }
    // Two workers, one UDP and one TCP listener: 2 worker threads + 1 acceptor.
    assert_eq!(body["components"]["turn"]["cores"], 3, "{body}");
}

#[test]
fn healthz_lists_every_component_up() {
    let mut p = Process::start("up", &["--turn-workers", "2"], &[]);
    let (status, body) = p.first_health();
    assert_eq!(status, 200, "{body}");
    assert_all_up(&body);
}

/// Fails `core` (of `component`) one second after it starts and checks what a
/// service manager and a load balancer see.
fn fault_is_seen(test: &str, component: &str, core: &str) {
    let mut p = Process::start(
        test,
        &["--turn-workers", "2"],
        &[("TSUNAGI_DEBUG_FAULT", &format!("{core}@1000"))],
    );
    let (status, first) = p.first_health();
    if status == 200 {
        assert_all_up(&first);
    }
    // 503 naming the core, for the two seconds before the process goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        match get_json(&p.http, "/healthz") {
            Some((503, body)) => break body,
            Some((200, _)) => {}
            other => panic!("expected 200 then 503, got {other:?}: {}", p.log_text()),
        }
        assert!(
            Instant::now() < deadline,
            "no 503 within 20 s: {}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(body["status"], "down", "{body}");
    let c = &body["components"][component];
    assert_eq!(c["status"], "down", "{body}");
    assert_eq!(c["down"][0]["core"], core, "{body}");
    let reason = c["down"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("panicked: fault injected"), "{body}");
    // The other components are still up while it holds.
    for other in ["turn", "sfu", "signaling", "http"] {
        if other != component {
            assert_eq!(body["components"][other]["status"], "up", "{other}: {body}");
        }
    }
    let status = p.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "exit status: {}", p.log_text());
    let log = p.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("a core of tsunagi failed"))
        .unwrap_or_else(|| panic!("no error line naming the core: {log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(core), "{line}");
    assert!(line.contains(component), "{line}");
}

#[test]
fn a_turn_worker_that_panics_ends_the_process() {
    fault_is_seen("turn", "turn", "turn worker 1");
}

#[test]
fn the_sfu_core_that_panics_ends_the_process() {
    fault_is_seen("sfu", "sfu", "sfu core");
}

#[test]
fn the_signaling_core_that_panics_ends_the_process() {
    fault_is_seen("signaling", "signaling", "signaling core");
}

/// Without its acceptor HTTP cannot answer: the exit status and the log say it.
#[test]
fn the_http_acceptor_that_panics_ends_the_process() {
    let mut p = Process::start("http", &[], &[("TSUNAGI_DEBUG_FAULT", "http {http}@1000")]);
    let status = p.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "exit status: {}", p.log_text());
    let log = p.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("a core of tsunagi failed"))
        .unwrap_or_else(|| panic!("no error line naming the core: {log}"));
    assert!(line.contains("http 127.0.0.1:"), "{line}");
}

//! A core that dies takes the process down: the real binary (a debug build, with the
//! `TSUNAGI_DEBUG_FAULT` hook of `supervise.rs`) is told to make one core panic; then
//! `/healthz` must answer 503 naming it, the log must name it at error, and the process
//! must exit with status 1.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tsunagi");

/// A port free for TCP and UDP on 127.0.0.1 (released for the server to bind).
fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP");
}

/// `GET path` over HTTP/1.1: status and parsed JSON body.
fn get_json(addr: &str, path: &str) -> Option<(u16, Value)> {
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
    let body = raw.split_once("\r\n\r\n")?.1;
    Some((status, serde_json::from_str(body).ok()?))
}

struct Process {
    child: Child,
    http: String,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// tsunagi on 127.0.0.1 with every part on, `fault` naming the core to fail
    /// (`TSUNAGI_DEBUG_FAULT`).
    fn start(test: &str, fault: Option<&str>) -> Process {
        let http_port = free_port();
        let turn_port = free_port();
        let sfu_port = free_port();
        let log =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("supervision-{test}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["--http-ip", "127.0.0.1", "--listening-ip", "127.0.0.1"])
            .args([
                "--relay-ip",
                "127.0.0.1",
                "--min-port",
                "41000",
                "--max-port",
                "41099",
            ])
            .args(["--http-port", &http_port.to_string()])
            .args(["--listening-port", &turn_port.to_string()])
            .args(["--sfu-port", &sfu_port.to_string()])
            .args(["--turn-workers", "2"])
            .env_remove("RUST_LOG")
            .env_remove("TSUNAGI_DEBUG_FAULT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(f) = fault {
            // `{http}`: the HTTP address, part of the name of its acceptor.
            let f = f.replace("{http}", &format!("127.0.0.1:{http_port}"));
            cmd.env("TSUNAGI_DEBUG_FAULT", f);
        }
        Process {
            child: cmd.spawn().unwrap(),
            http: format!("127.0.0.1:{http_port}"),
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first `/healthz` answer, within 20 s of start.
    fn first_health(&mut self) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = get_json(&self.http, "/healthz") {
                return r;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "tsunagi exited ({status}) before answering: {}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no /healthz within 20 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "tsunagi still running {within:?} after the fault: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

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
    let mut p = Process::start("up", None);
    let (status, body) = p.first_health();
    assert_eq!(status, 200, "{body}");
    assert_all_up(&body);
}

/// Fails `core` (of `component`) one second after it starts and checks what a
/// service manager and a load balancer see.
fn fault_is_seen(test: &str, component: &str, core: &str) {
    let mut p = Process::start(test, Some(&format!("{core}@1000")));
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
    let mut p = Process::start("http", Some("http {http}@1000"));
    let status = p.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "exit status: {}", p.log_text());
    let log = p.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("a core of tsunagi failed"))
        .unwrap_or_else(|| panic!("no error line naming the core: {log}"));
    assert!(line.contains("http 127.0.0.1:"), "{line}");
}

//! A tsunagi process for tests that drive the binary the way a user or a service
//! manager does: its own ports on 127.0.0.1, environment variables, `/healthz`, the
//! log and the exit status. The process is killed (through its `Child`) when dropped.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../ports/mod.rs"]
mod ports;

pub const BIN: &str = env!("CARGO_BIN_EXE_tsunagi");

/// A port free for TCP and UDP on 127.0.0.1 (released for the server to bind; tests/ports).
pub fn free_port() -> u16 {
    ports::free_port()
}

/// `GET path` over HTTP/1.1: status and parsed JSON body.
pub fn get_json(addr: &str, path: &str) -> Option<(u16, Value)> {
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

/// One keep-alive `GET /healthz` on an open connection (plain or TLS): the status.
pub fn keep_alive_get(s: &mut (impl Read + Write), host: &str) -> u16 {
    write!(s, "GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    s.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub struct Process {
    pub child: Child,
    /// `127.0.0.1:PORT` of HTTP.
    pub http: String,
    /// `127.0.0.1:PORT` of the STUN/TURN listeners (UDP and TCP).
    pub turn: String,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// tsunagi on 127.0.0.1 (HTTP, TURN and SFU on free ports) with every part on, `args` and `env` added; in `env`
    /// values, `{http}` stands for the HTTP address. Every other `TSUNAGI_*` variable
    /// of the test's own environment is removed.
    pub fn start(test: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        Self::start_on(test, free_port(), args, env)
    }

    /// [`Process::start`] with HTTP on `http_port` (a restart on the same port).
    pub fn start_on(test: &str, http_port: u16, args: &[&str], env: &[(&str, &str)]) -> Process {
        let turn_port = free_port();
        let sfu_port = free_port();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("process-{test}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let data = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("process-data-{test}"));
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
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, _) in std::env::vars() {
            if k.starts_with("TSUNAGI_") {
                cmd.env_remove(k);
            }
        }
        // Its own data-dir (`--data-dir` in `args` or the variable in `env` wins).
        cmd.env("TSUNAGI_DATA_DIR", &data);
        for (k, v) in env {
            cmd.env(k, v.replace("{http}", &format!("127.0.0.1:{http_port}")));
        }
        Process {
            child: cmd.spawn().unwrap(),
            http: format!("127.0.0.1:{http_port}"),
            turn: format!("127.0.0.1:{turn_port}"),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first `/healthz` answer, within 20 s of start.
    pub fn first_health(&mut self) -> (u16, Value) {
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

    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "tsunagi still running after {within:?}: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

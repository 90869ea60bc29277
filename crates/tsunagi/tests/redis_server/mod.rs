//! `redis-server` for the cluster tests: on a loopback port, without persistence,
//! killed (by its `Child`) when dropped or stopped. Needs `mod process;` beside it.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// On a free port.
    pub fn start_free() -> Redis {
        Redis::start(crate::process::free_port())
    }

    pub fn start(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    /// With `extra` arguments (e.g. `--requirepass`).
    pub fn start_with(port: u16, extra: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (the Debian package redis-server; scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Owned from here on, so that a failed wait below still stops it.
        let redis = Redis { child, port };
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                // "+PONG", or "-NOAUTH" with a password: either way it answers.
                let mut buf = [0u8; 1];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && (buf[0] == b'+' || buf[0] == b'-')
                {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `HGETALL key` over RESP, as flat field/value pairs.
    pub fn hgetall(&self, key: &str) -> Vec<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(s, "*2\r\n$7\r\nHGETALL\r\n${}\r\n{key}\r\n", key.len()).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        // The reply ends after its last item: read until it parses whole.
        loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "redis closed");
            raw.extend_from_slice(&buf[..n]);
            if let Some(items) = parse_array(&raw) {
                return items;
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A RESP array of bulk strings (or a RESP3 map), if `raw` holds all of it.
fn parse_array(raw: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split("\r\n");
    let head = lines.next()?;
    let count: usize = head.get(1..)?.parse().ok()?;
    let count = if head.starts_with('%') {
        count * 2
    } else {
        count
    };
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        let _len = lines.next()?;
        items.push(lines.next()?.to_owned());
    }
    text.ends_with("\r\n").then_some(items)
}

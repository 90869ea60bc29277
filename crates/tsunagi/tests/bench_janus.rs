//! `tsunagi bench sfu --target janus` against a real Janus (Debian package `janus`,
//! started by scripts/janus-run with only its HTTP transport and the VideoRoom plugin):
//! one publisher and one subscriber for about 2 s, then a room of three participants
//! (each publishing and receiving the other two). The frames the publishers sent must
//! arrive (audio, video and a keyframe, to every subscriber, from every feed it asked
//! for), the report must name Janus and carry its fields, and the run must end every
//! handle, the room and the session (Janus lists no room afterwards). Timing and loss
//! are measured in docs/benchmarks.md (scripts/bench-vs-janus), never asserted here.
//!
//! Janus never gathers candidates on loopback, so the test runs in a network namespace
//! of its own with a veth pair whose end holds 198.18.0.1: Janus's ICE and the
//! generator's sockets are there, the HTTP API on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod ports;

const BIN: &str = env!("CARGO_BIN_EXE_tsunagi");
const IN_NETNS: &str = "JANUS_TEST_IN_NETNS";
const IFACE: &str = "jbench0";
const LOCAL_IP: &str = "198.18.0.1";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `true` inside the test's own network namespace (set up with the veth pair): go on.
/// Outside, runs this test again inside a new one, checks that it passed, and returns
/// `false`.
fn in_own_netns(test: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        return true;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut cmd = Command::new("unshare");
    if !root {
        cmd.args(["--user", "--map-root-user"]);
    }
    let setup = format!(
        "set -e; ip link set lo up; ip link add {IFACE} type veth peer name {IFACE}p; \
         ip link set {IFACE}p up; ip addr add {LOCAL_IP}/24 dev {IFACE}; ip link set {IFACE} up; \
         exec \"$@\""
    );
    let status = cmd
        .args(["--net", "--", "sh", "-c", &setup, "sh"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(IN_NETNS, "1")
        .status()
        .expect("cannot run unshare (package util-linux) to make the test's network namespace");
    assert!(
        status.success(),
        "{test} failed in its network namespace ({status})"
    );
    false
}

use ports::free_port;

/// Janus, stopped by PID when dropped.
struct Janus {
    child: Child,
    port: u16,
    http: String,
    log: PathBuf,
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Janus {
    fn start() -> Janus {
        assert!(
            Command::new("sh")
                .args(["-c", "command -v janus"])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success(),
            "janus is not installed: scripts/test installs it (apt-get install janus)"
        );
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp.join("bench_janus");
        let log = tmp.join("bench_janus.log");
        let port = free_port();
        let child = Command::new(repo_root().join("scripts/janus-run"))
            .arg(&dir)
            .arg(port.to_string())
            // Above the ephemeral range (..=60999) and the relay ranges other tests use.
            .arg("61000-61999")
            .arg(IFACE)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(tmp.join("bench_janus.err")).unwrap())
            .spawn()
            .unwrap();
        let j = Janus {
            child,
            port,
            http: format!("http://127.0.0.1:{port}/janus"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return j;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "Janus did not listen on {port} within 20 s; its log:\n{}",
            std::fs::read_to_string(&j.log).unwrap_or_default()
        );
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The rooms Janus lists now (a session and handle of the test's own).
    fn rooms(&self) -> Vec<Value> {
        let s = self.post("", &json!({"janus": "create", "transaction": "a"}))["data"]["id"]
            .as_u64()
            .unwrap();
        let h = self.post(
            &format!("/{s}"),
            &json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": "b"}),
        )["data"]["id"]
            .as_u64()
            .unwrap();
        let r = self.post(
            &format!("/{s}/{h}"),
            &json!({"janus": "message", "transaction": "c", "body": {"request": "list"}}),
        );
        self.post(
            &format!("/{s}"),
            &json!({"janus": "destroy", "transaction": "d"}),
        );
        r["plugindata"]["data"]["list"].as_array().unwrap().clone()
    }

    /// POSTs JSON to Janus's API and returns its answer (HTTP/1.0: the body ends with
    /// the connection).
    fn post(&self, path: &str, body: &Value) -> Value {
        let body = body.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST /janus{path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (_, json) = raw.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {raw}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs the generator against `janus` and returns its JSON report.
fn bench(janus: &Janus, shape: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["bench", "sfu", "--target", "janus", "--http", &janus.http])
        .args(["--local-ip", LOCAL_IP, "--duration", "2s", "--warmup", "1s"])
        .args(["--server-pid", &janus.pid().to_string(), "--json"])
        .args(shape)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench sfu --target janus {shape:?} failed: {}\nJanus's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        janus.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every subscriber got audio, video and a keyframe of every feed it asked for.
fn assert_frames_arrived(r: &Value, room: bool) {
    assert_eq!(r["target"], "janus");
    assert!(r["errors"].as_array().unwrap().is_empty(), "errors: {r}");
    assert!(r["sent_video_frames"].as_u64().unwrap() > 0, "{r}");
    for s in r["per_subscriber"].as_array().unwrap() {
        assert!(s["audio_received"].as_u64().unwrap() > 0, "{s}");
        assert!(s["video_received"].as_u64().unwrap() > 0, "{s}");
        assert!(s["keyframes_received"].as_u64().unwrap() > 0, "{s}");
        assert!(s["error"].is_null(), "{s}");
    }
    // Each counted against every feed it asked for (in a room: everyone but itself).
    let publishers = r["publishers"].as_u64().unwrap() as usize;
    for (j, s) in r["per_subscriber"].as_array().unwrap().iter().enumerate() {
        let played: Vec<usize> = s["played"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let want: Vec<usize> = if room {
            (0..publishers).filter(|p| *p != j).collect()
        } else {
            vec![0]
        };
        assert_eq!(played, want, "subscriber {j}: {s}");
    }
    assert!(r["received_frames"].as_u64().unwrap() > 0);
    assert!(r["server_cpu_s"].as_f64().is_some(), "{r}");
    assert!(r["server_rss_per_subscriber_kib"].as_f64().is_some(), "{r}");
}

#[test]
fn janus_videoroom_publisher_and_subscribers_get_frames() {
    if !in_own_netns("janus_videoroom_publisher_and_subscribers_get_frames") {
        return;
    }
    let janus = Janus::start();

    let r = bench(&janus, &["--publishers", "1", "--subscribers", "1"]);
    assert_frames_arrived(&r, false);
    assert!(r["participants"].is_null());

    let r = bench(&janus, &["--participants", "3"]);
    assert_eq!(r["participants"], 3);
    assert_eq!(r["publishers"], 3);
    assert_eq!(r["subscribers"], 3);
    assert_frames_arrived(&r, true);

    // The runs destroyed their rooms.
    assert_eq!(janus.rooms(), Vec::<Value>::new(), "rooms left behind");
}

//! Helpers for the interop tests: start a tsunagi process and coturn's client tools on
//! loopback, each on its own ports, and read what the tools print.
//!
//! Every process is started by a guard that kills it (by its PID, through its `Child`)
//! when the test ends, pass or fail.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

#[path = "../ports/mod.rs"]
mod ports;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How long a server or peer gets to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one run of a client tool may take before the test gives up on it.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// A random `u64` from the standard library's per-process hash keys (no extra crate).
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// The path of one of coturn's client tools. Fails the test (no silent skip) when the
/// tool is not installed.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` was not found on PATH. These tests need coturn's client tools: install \
         the coturn package (`apt-get install -y --no-install-recommends coturn`), or run \
         `scripts/test`, which installs it."
    );
}

/// A port that is free for both UDP and TCP on `ip` right now (tests/ports: outside the
/// ephemeral range and the relay ranges below).
pub fn free_port(ip: IpAddr) -> u16 {
    ports::free_port_on(ip)
}

/// A relay port range of `RELAY_RANGE_LEN` ports for the test with number `slot`.
///
/// Each test passes its own slot, so ranges of tests running in parallel never overlap;
/// the window inside the slot is random so that runs outside a network namespace are
/// unlikely to collide with each other. All ranges lie in 20000..32000, below the
/// kernel's ephemeral range (32768..), so no client socket of a tool takes a relay port.
pub fn relay_range(slot: u16) -> (u16, u16) {
    const BASE: u16 = 20_000;
    const SLOT_LEN: u16 = 1_000;
    const RELAY_RANGE_LEN: u16 = 400;
    assert!(slot < 13, "relay slot {slot} out of 0..13");
    let offset = (random_u64() % u64::from(SLOT_LEN - RELAY_RANGE_LEN)) as u16;
    let min = BASE + slot * SLOT_LEN + offset;
    (min, min + RELAY_RANGE_LEN - 1)
}

/// A process that is killed when this guard drops.
#[derive(Debug)]
pub struct Guard {
    name: String,
    child: Child,
}

impl Guard {
    fn new(name: &str, child: Child) -> Self {
        Self {
            name: name.to_owned(),
            child,
        }
    }

    /// `Some(status)` when the process has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap_or(None)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Child::kill sends SIGKILL to exactly this PID.
            if let Err(e) = self.child.kill() {
                eprintln!(
                    "could not kill {} (pid {}): {e}",
                    self.name,
                    self.child.id()
                );
            }
        }
        let _ = self.child.wait();
    }
}

/// Where a test server offers TURN over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Off,
    /// On `tls-listening-port`, a port of its own.
    OwnPort,
    /// On the HTTP port (`tls-listening-port` = `http-port`).
    HttpPort,
}

/// A running tsunagi on loopback, its log in a file.
#[derive(Debug)]
pub struct Tsunagi {
    pub ip: IpAddr,
    pub port: u16,
    pub http_port: u16,
    tls_port: Option<u16>,
    pub log_path: PathBuf,
    process: Guard,
}

impl Tsunagi {
    /// Starts `tsunagi` listening on `ip` on a free port, relaying from `ip` on a port range
    /// of its own (`slot`, see [`relay_range`]), its HTTP server on `ip` and another free
    /// port, with `extra` arguments appended, and waits until it answers a STUN Binding
    /// request over UDP and accepts TCP connections on each of its ports.
    pub fn start(name: &str, ip: IpAddr, slot: u16, extra: &[&str]) -> Self {
        Self::launch(name, ip, slot, extra, Tls::Off)
    }

    /// Like [`Tsunagi::start`], with TLS on (a self-signed certificate) and TURN over TLS
    /// on [`Tsunagi::tls_port`].
    pub fn start_tls(name: &str, ip: IpAddr, slot: u16, extra: &[&str]) -> Self {
        Self::launch(name, ip, slot, extra, Tls::OwnPort)
    }

    /// Like [`Tsunagi::start_tls`], with TURN over TLS on the HTTP port (one port for
    /// HTTPS and `turns:`): [`Tsunagi::tls_port`] is the HTTP port.
    pub fn start_tls_one_port(name: &str, ip: IpAddr, slot: u16, extra: &[&str]) -> Self {
        Self::launch(name, ip, slot, extra, Tls::HttpPort)
    }

    fn launch(name: &str, ip: IpAddr, slot: u16, extra: &[&str], tls: Tls) -> Self {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 3 {
            let p = free_port(ip);
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let (port, http_port) = (ports[0], ports[1]);
        let tls_port = match tls {
            Tls::HttpPort => http_port,
            Tls::Off | Tls::OwnPort => ports[2],
        };
        let (min_port, max_port) = relay_range(slot);
        let log_path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("interop-{name}-{}-{port}.log", std::process::id()));
        let log = File::create(&log_path).expect("create the server log file");
        let log2 = log.try_clone().expect("clone the log file handle");

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tsunagi"));
        cmd.args(["--listening-ip", &ip.to_string()])
            .args(["--listening-port", &port.to_string()])
            .args(["--relay-ip", &ip.to_string()])
            .args(["--min-port", &min_port.to_string()])
            .args(["--max-port", &max_port.to_string()])
            .args(["--http-ip", &ip.to_string()])
            .args(["--http-port", &http_port.to_string()])
            // Tests run side by side: the SFU takes any free port.
            .args(["--sfu-port", "0"]);
        if tls != Tls::Off {
            // Its own data-dir: the certificate it keeps stays with this test.
            let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("interop-data-{name}-{}-{port}", std::process::id()));
            cmd.args([
                "--tls-self-signed",
                "--tls-listening-port",
                &tls_port.to_string(),
            ])
            .arg("--data-dir")
            .arg(&data);
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        clean_env(&mut cmd);
        let args = format!("{:?}", cmd);
        let child = cmd.spawn().expect("spawn the tsunagi binary");
        let mut server = Self {
            ip,
            port,
            http_port,
            tls_port: (tls != Tls::Off).then_some(tls_port),
            log_path,
            process: Guard::new("tsunagi", child),
        };
        eprintln!(
            "started {args} (pid {}), log {}",
            server.process.child.id(),
            server.log_path.display()
        );
        server.wait_ready();
        server
    }

    /// The port of TURN over TLS; panics unless started with [`Tsunagi::start_tls`].
    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("tsunagi was started without TLS")
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// Everything the server has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Panics (with the server log) if the server is no longer running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.process.exited() {
            panic!("tsunagi exited with {status}; its log:\n{}", self.log());
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let socket = UdpSocket::bind(SocketAddr::new(self.ip, 0)).expect("bind a probe socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        let mut udp_ok = false;
        // TCP ports that have not accepted a connection yet.
        let mut tcp_waiting: Vec<u16> = [Some(self.port), Some(self.http_port), self.tls_port]
            .into_iter()
            .flatten()
            .collect();
        while !(udp_ok && tcp_waiting.is_empty()) {
            self.assert_running();
            if Instant::now() > deadline {
                panic!(
                    "tsunagi did not get ready on {} within {START_TIMEOUT:?} (STUN over UDP \
                     answered: {udp_ok}, TCP ports not accepting: {tcp_waiting:?}); its log:\n{}",
                    self.addr(),
                    self.log()
                );
            }
            if !udp_ok {
                udp_ok = stun_binding_answered(&socket, self.addr());
            }
            let ip = self.ip;
            tcp_waiting.retain(|&p| {
                TcpStream::connect_timeout(&SocketAddr::new(ip, p), Duration::from_millis(200))
                    .is_err()
            });
            if !(udp_ok && tcp_waiting.is_empty()) {
                sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Sends one STUN Binding request (RFC 8489, no attributes) and tells whether a Binding
/// success response with the same transaction id came back within the socket's timeout.
fn stun_binding_answered(socket: &UdpSocket, to: SocketAddr) -> bool {
    let txid = random_u64().to_be_bytes();
    let mut req = [0u8; 20];
    req[0..2].copy_from_slice(&0x0001u16.to_be_bytes()); // Binding request
    req[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes()); // magic cookie
    req[8..16].copy_from_slice(&txid);
    req[16..20].copy_from_slice(&std::process::id().to_be_bytes());
    if socket.send_to(&req, to).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == to && n >= 20 => {
                if buf[0..2] == 0x0101u16.to_be_bytes() && buf[8..20] == req[8..20] {
                    return true;
                }
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return false,
        }
    }
}

/// coturn's `turnutils_peer`: a UDP echo server on `ip` and a free port.
#[derive(Debug)]
pub struct EchoPeer {
    pub ip: IpAddr,
    pub port: u16,
    _process: Guard,
}

impl EchoPeer {
    pub fn start(ip: IpAddr) -> Self {
        let port = free_port(ip);
        let mut cmd = Command::new(tool("turnutils_peer"));
        cmd.args(["-L", &ip.to_string(), "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn turnutils_peer");
        let mut process = Guard::new("turnutils_peer", child);

        // Ready when it echoes a datagram.
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind a probe socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        let peer = SocketAddr::new(ip, port);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut buf = [0u8; 64];
        loop {
            if let Some(status) = process.exited() {
                panic!("turnutils_peer on {peer} exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "turnutils_peer on {peer} never echoed"
            );
            let _ = socket.send_to(b"interop-probe", peer);
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                if from == peer && &buf[..n] == b"interop-probe" {
                    break;
                }
            }
        }
        Self {
            ip,
            port,
            _process: process,
        }
    }
}

/// What a client tool did: its exit status and everything it printed (stdout, then stderr).
#[derive(Debug)]
pub struct ToolRun {
    pub command: String,
    pub status: ExitStatus,
    pub output: String,
}

impl ToolRun {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl std::fmt::Display for ToolRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "$ {}\n[{}]\n{}", self.command, self.status, self.output)
    }
}

/// Runs one of coturn's tools with `args` and collects its output; kills it after
/// [`TOOL_TIMEOUT`].
pub fn run_tool(name: &str, args: &[String]) -> ToolRun {
    let mut cmd = Command::new(tool(name));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let command = format!("{name} {}", args.join(" "));
    let mut child = Guard::new(name, cmd.spawn().expect("spawn a coturn client tool"));

    // Drain both pipes on threads so a chatty tool never blocks on a full pipe.
    let mut stdout = child.child.stdout.take().expect("stdout is piped");
    let mut stderr = child.child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });

    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.exited() {
            break status;
        }
        if Instant::now() > deadline {
            drop(child);
            let output = join_output(out, err);
            panic!("`{command}` did not finish within {TOOL_TIMEOUT:?}; it printed:\n{output}");
        }
        sleep(Duration::from_millis(20));
    };
    ToolRun {
        command,
        status,
        output: join_output(out, err),
    }
}

fn join_output(
    out: std::thread::JoinHandle<Vec<u8>>,
    err: std::thread::JoinHandle<Vec<u8>>,
) -> String {
    let mut bytes = out.join().unwrap_or_default();
    bytes.extend(err.join().unwrap_or_default());
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Removes settings the caller's environment could pass to tsunagi, so that each test
/// sees exactly the flags it gives.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        if key_str.starts_with("TSUNAGI_") || key_str == "RUST_LOG" {
            cmd.env_remove(&key);
        }
    }
}

/// The totals `turnutils_uclient` prints at the end of a run, e.g.
///
/// ```text
/// 6: : start_mclient: tot_send_msgs=2000, tot_recv_msgs=2000
/// 6: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UclientTotals {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub send_dropped: u64,
}

impl UclientTotals {
    /// The final totals in `output`, or `None` if the run never got to print them.
    /// Progress lines (`start_mclient: msz=..., tot_send_msgs=...`) are skipped: only the
    /// summary line without `msz=` counts, and the last one wins.
    pub fn parse(output: &str) -> Option<Self> {
        let mut sent_received = None;
        let mut lost_dropped = None;
        for line in output.lines() {
            if line.contains("start_mclient:") && !line.contains("msz=") {
                if let (Some(s), Some(r)) = (
                    number_after(line, "tot_send_msgs="),
                    number_after(line, "tot_recv_msgs="),
                ) {
                    sent_received = Some((s, r));
                }
            }
            if let (Some(l), Some(d)) = (
                number_after(line, "Total lost packets "),
                number_after(line, "total send dropped "),
            ) {
                lost_dropped = Some((l, d));
            }
        }
        let (sent, received) = sent_received?;
        let (lost, send_dropped) = lost_dropped?;
        Some(Self {
            sent,
            received,
            lost,
            send_dropped,
        })
    }
}

/// The decimal number right after the first occurrence of `key` in `line`.
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[test]
fn parses_uclient_summary() {
    let out = "\
0: : Total connect time is 1
2: : start_mclient: msz=10, tot_send_msgs=100, tot_recv_msgs=98, tot_send_bytes ~ 100000, tot_recv_bytes ~ 98000
6: : start_mclient: tot_send_msgs=2000, tot_recv_msgs=1999
6: : start_mclient: tot_send_bytes ~ 2000000, tot_recv_bytes ~ 1999000
6: : Total transmit time is 6
6: : Total lost packets 1 (0.050000%), total send dropped 0 (0.000000%)
6: : Average round trip delay 0.008000 ms; min = 0 ms, max = 4 ms
";
    assert_eq!(
        UclientTotals::parse(out),
        Some(UclientTotals {
            sent: 2000,
            received: 1999,
            lost: 1,
            send_dropped: 0
        })
    );
    assert_eq!(
        UclientTotals::parse("0: : ERROR: Cannot complete Allocation\n"),
        None
    );
}

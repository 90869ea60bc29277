//! RFC 5780 NAT behaviour discovery over real sockets on loopback (127.0.0.1 and
//! 127.0.0.2, both on `lo`): the runtime answers CHANGE-REQUEST from the right one of
//! four listeners and RESPONSE-PORT to the right port; `tsunagi nat` finds "no NAT"
//! against tsunagi and against coturn; coturn's `turnutils_natdiscovery` agrees
//! against tsunagi. The NAT kinds themselves are tested in network namespaces by
//! `tests/nat/run` (scripts/nat-lab).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[allow(dead_code)]
mod interop;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{runtime_options, server_config};
use tsunagi::nat::{self, Behavior, Support, Timing};
use tsunagi::turn_runtime::{Listeners, TurnService};
use tsunagi_stun::{attr, Class, Message, MessageEncoder, Method, TransactionId};
use tsunagi_turn::{DiscoveryAddresses, Server};

const IP1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const IP2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Fast retransmissions: loopback loses nothing, and unanswered tests cost the budget.
fn timing() -> Timing {
    Timing {
        rto: Duration::from_millis(100),
        max_sends: 2,
    }
}

/// Binds the listeners of a discovery group on free ports: UDP and TCP on the primary
/// address, UDP on the others. Retries when a port is taken on the second IP.
fn bind_group(two_ips: bool) -> (DiscoveryAddresses, Listeners) {
    for _ in 0..50 {
        let mut l = Listeners::bind(&[SocketAddr::new(IP1, 0)], true, true).unwrap();
        let p1 = l.udp[0].local_addr().unwrap().port();
        let alt = UdpSocket::bind(SocketAddr::new(IP1, 0)).unwrap();
        let p2 = alt.local_addr().unwrap().port();
        let g = DiscoveryAddresses {
            primary: SocketAddr::new(IP1, p1),
            alt_ip: two_ips.then_some(IP2),
            alt_port: p2,
        };
        let rest: Result<Vec<UdpSocket>, _> =
            g.addresses()[2..].iter().map(UdpSocket::bind).collect();
        let Ok(rest) = rest else { continue };
        l.udp.push(alt);
        l.udp.extend(rest);
        return (g, l);
    }
    panic!("no free ports for a discovery group on 127.0.0.1/127.0.0.2");
}

fn start(two_ips: bool) -> (DiscoveryAddresses, TurnService) {
    let (g, listeners) = bind_group(two_ips);
    let mut config = server_config();
    config.discovery = vec![g];
    let server = Server::new(config, Instant::now(), common::now_unix());
    let service = TurnService::start(server, listeners, runtime_options()).unwrap();
    (g, service)
}

fn request(tid: TransactionId, f: impl FnOnce(&mut MessageEncoder<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut e = MessageEncoder::new(&mut buf, Class::Request, Method::BINDING, tid).unwrap();
    f(&mut e);
    e.fingerprint().unwrap();
    let n = e.finish();
    buf.truncate(n);
    buf
}

/// Sends `req` from `sock` to `to` and waits for the response with the same
/// transaction id on `on` (which may be another socket), returning it and its source.
fn exchange(sock: &UdpSocket, on: &UdpSocket, to: SocketAddr, req: &[u8]) -> (Vec<u8>, SocketAddr) {
    let tid = Message::parse(req).unwrap().transaction_id();
    on.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        sock.send_to(req, to).unwrap();
        while let Ok((n, from)) = on.recv_from(&mut buf) {
            if Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == tid) {
                return (buf[..n].to_vec(), from);
            }
        }
    }
    panic!("no response to the request sent to {to}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_request_is_answered_from_the_other_listeners() {
    let (g, service) = start(true);
    let cases: Vec<(bool, bool)> = vec![(false, false), (false, true), (true, false), (true, true)];
    tokio::task::spawn_blocking(move || {
        for received_on in g.addresses() {
            for &(ci, cp) in &cases {
                let sock = UdpSocket::bind(SocketAddr::new(IP1, 0)).unwrap();
                let req = request(common::random_tid(), |e| {
                    e.change_request(ci, cp).unwrap();
                });
                let (resp, from) = exchange(&sock, &sock, received_on, &req);
                let expected = g.changed(received_on, ci, cp).unwrap();
                assert_eq!(
                    from, expected,
                    "sent to {received_on}, change ip={ci} port={cp}"
                );
                let m = Message::parse(&resp).unwrap();
                assert_eq!(m.class(), Class::Success);
                assert_eq!(
                    m.get_xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
                    Some(sock.local_addr().unwrap())
                );
                assert_eq!(m.get_address(attr::RESPONSE_ORIGIN).unwrap(), Some(from));
                assert_eq!(
                    m.get_address(attr::OTHER_ADDRESS).unwrap(),
                    g.other(received_on)
                );
            }
        }
    })
    .await
    .unwrap();
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_port_and_padding_over_udp() {
    let (g, service) = start(true);
    tokio::task::spawn_blocking(move || {
        let a = UdpSocket::bind(SocketAddr::new(IP1, 0)).unwrap();
        let b = UdpSocket::bind(SocketAddr::new(IP1, 0)).unwrap();
        let port = b.local_addr().unwrap().port().to_be_bytes();
        let req = request(common::random_tid(), |e| {
            e.change_request(true, false).unwrap();
            e.attr(attr::RESPONSE_PORT, &[port[0], port[1], 0, 0])
                .unwrap();
        });
        let (resp, from) = exchange(&a, &b, g.primary, &req);
        assert_eq!(from, SocketAddr::new(IP2, g.primary.port()));
        let m = Message::parse(&resp).unwrap();
        assert_eq!(
            m.get_xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
            Some(a.local_addr().unwrap()),
            "the mapped address is the requesting socket's, not the RESPONSE-PORT one"
        );

        // PADDING of 1200 bytes comes back, and the datagram is not fragmented away.
        let req = request(common::random_tid(), |e| {
            e.attr(attr::PADDING, &[0u8; 1200]).unwrap();
        });
        let (resp, _) = exchange(&a, &a, g.primary, &req);
        let m = Message::parse(&resp).unwrap();
        assert_eq!(m.get(attr::PADDING).map(<[u8]>::len), Some(1200));
    })
    .await
    .unwrap();
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsunagi_nat_finds_no_nat_on_loopback() {
    let (g, service) = start(true);
    let report = tokio::task::spawn_blocking(move || {
        nat::discover(g.primary, Some(IP1), timing()).expect("discovery runs")
    })
    .await
    .unwrap();
    eprintln!("{}", nat::render(&report));
    assert!(!report.nat, "{report:?}");
    assert_eq!(report.public.ip(), IP1);
    assert_eq!(report.server_support, Support::TwoIps);
    assert_eq!(report.other_address, g.other(g.primary));
    assert_eq!(report.mapping, Some(Behavior::EndpointIndependent));
    assert_eq!(report.filtering, Some(Behavior::EndpointIndependent));
    assert_eq!(report.hairpinning, Some(true));
    assert_eq!(report.nat_type, Some("open"));
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ip_two_ports_limits_what_tsunagi_nat_can_tell() {
    let (g, service) = start(false);
    let report = tokio::task::spawn_blocking(move || {
        let sock = UdpSocket::bind(SocketAddr::new(IP1, 0)).unwrap();
        // change-port works, change-IP is refused with 420.
        let req = request(common::random_tid(), |e| {
            e.change_request(false, true).unwrap();
        });
        let (_, from) = exchange(&sock, &sock, g.primary, &req);
        assert_eq!(from, SocketAddr::new(IP1, g.alt_port));
        let req = request(common::random_tid(), |e| {
            e.change_request(true, true).unwrap();
        });
        let (resp, _) = exchange(&sock, &sock, g.primary, &req);
        let m = Message::parse(&resp).unwrap();
        assert_eq!(m.error_code().unwrap().unwrap().code, 420);

        nat::discover(g.primary, Some(IP1), timing()).expect("discovery runs")
    })
    .await
    .unwrap();
    eprintln!("{}", nat::render(&report));
    assert_eq!(report.server_support, Support::OneIp);
    assert!(!report.nat);
    assert_eq!(report.filtering, None, "EIF and ADF cannot be told apart");
    assert!(
        report.notes.iter().any(|n| n.contains("one IP")),
        "{:?}",
        report.notes
    );
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_a_discovery_group_without_its_listeners() {
    let listeners = Listeners::bind(&[SocketAddr::new(IP1, 0)], true, false).unwrap();
    let p1 = listeners.udp[0].local_addr().unwrap().port();
    let mut config = server_config();
    config.discovery = vec![DiscoveryAddresses {
        primary: SocketAddr::new(IP1, p1),
        alt_ip: Some(IP2),
        alt_port: p1.wrapping_add(1),
    }];
    let server = Server::new(config, Instant::now(), common::now_unix());
    let err = TurnService::start(server, listeners, runtime_options()).unwrap_err();
    assert!(err.0.contains("needs a UDP listener"), "{err}");
}

// ------------------------------------------------------------- processes

/// Kills the process (by its PID, through `Child`) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tsunagi_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tsunagi")
}

/// `tsunagi nat --json` against `server`.
fn tsunagi_nat_json(server: SocketAddr) -> serde_json::Value {
    let out = Command::new(tsunagi_bin())
        .args(["nat", "--json", "--rto-ms", "100", "--max-sends", "3"])
        .arg(server.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run tsunagi nat");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tsunagi nat failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[test]
fn turnutils_natdiscovery_and_tsunagi_nat_agree_against_tsunagi() {
    let alt_port = interop::free_port(IP2).to_string();
    let mut server = interop::Tsunagi::start(
        "natdiscovery",
        IP1,
        11,
        &[
            "--alt-listening-ip",
            "127.0.0.2",
            "--alt-listening-port",
            &alt_port,
        ],
    );
    let run = interop::run_tool(
        "turnutils_natdiscovery",
        &[
            "-m".into(),
            "-f".into(),
            "-p".into(),
            server.port.to_string(),
            "127.0.0.1".into(),
        ],
    );
    eprintln!("{run}");
    assert!(run.success(), "{run}");
    assert!(run.output.contains("Endpoint Independent Mapping"), "{run}");
    assert!(
        run.output
            .contains("NAT with Endpoint Independent Filtering!"),
        "coturn's client saw the change-IP-and-port answer: {run}"
    );
    assert!(
        run.output
            .contains(&format!("Response origin: : 127.0.0.2:{alt_port}")),
        "an answer came from the alternate IP and port: {run}"
    );

    let report = tsunagi_nat_json(server.addr());
    eprintln!("{report}");
    assert_eq!(report["server_support"], "two-ips");
    assert_eq!(report["mapping"], "endpoint-independent");
    assert_eq!(report["filtering"], "endpoint-independent");
    assert_eq!(report["nat"], false);
    server.assert_running();
}

#[test]
fn tsunagi_nat_against_coturn() {
    let port = interop::free_port(IP1);
    let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("nat-coturn-{}-{port}.log", std::process::id()));
    let child = Command::new(interop::tool("turnserver"))
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--listening-ip=127.0.0.2",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--lt-cred-mech",
            "--user=test:test",
            "--realm=nat.test",
            "--min-port=12000",
            "--max-port=12999",
            &format!("--log-file={}", log.display()),
            "--simple-log",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start coturn's turnserver");
    let mut coturn = Proc(child);
    let server = SocketAddr::new(IP1, port);
    // Ready when it answers a Binding.
    let probe = UdpSocket::bind(SocketAddr::new(IP1, 0)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 1024];
    loop {
        assert!(
            coturn.0.try_wait().unwrap().is_none(),
            "coturn exited; log {}",
            log.display()
        );
        assert!(Instant::now() < deadline, "coturn did not answer in 15 s");
        let req = request(TransactionId::new([7; 12]), |_| {});
        probe.send_to(&req, server).unwrap();
        if probe.recv_from(&mut buf).is_ok() {
            break;
        }
    }
    let report = tsunagi_nat_json(server);
    eprintln!("{report}");
    assert_eq!(report["server_support"], "two-ips");
    assert_eq!(report["mapping"], "endpoint-independent");
    assert_eq!(report["filtering"], "endpoint-independent");
    assert_eq!(report["type"], "open");
    assert_eq!(report["hairpinning"], true);
    assert!(coturn.0.try_wait().unwrap().is_none(), "coturn still runs");
}

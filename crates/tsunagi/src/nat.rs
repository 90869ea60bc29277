//! `tsunagi nat [SERVER]`: what kind of NAT is this host behind? Runs the NAT
//! behaviour discovery tests of RFC 5780 against a STUN server that supports them
//! (tsunagi with `alt-listening-ip`, or coturn with two `listening-ip`) and says in
//! plain words what they mean for WebRTC.
//!
//! * **Public address**: XOR-MAPPED-ADDRESS of a plain Binding (test I).
//! * **Mapping** (§4.3): the same socket asks the primary address, then the alternate
//!   IP at the primary port (test II), then the alternate IP and port (test III). Same
//!   mapped address in I and II: endpoint-independent; II = III: address-dependent;
//!   otherwise address-and-port-dependent.
//! * **Filtering** (§4.4), from a fresh socket so that the mapping tests' traffic to
//!   the alternate address opens nothing: a Binding to the primary address (test I),
//!   then CHANGE-REQUEST change-IP-and-port (test II: an answer means endpoint-
//!   independent filtering), then change-port alone (test III: an answer means
//!   address-dependent, none address-and-port-dependent).
//! * **Hairpinning** (§4.5): a second local socket sends a Binding request to the
//!   first socket's public address; if the first socket receives it, the NAT hairpins.
//!
//! Every transaction retransmits over UDP as RFC 8489 §6.2.1 describes, with a smaller
//! budget: sends at 0, RTO, 3·RTO, ... (the interval doubles) for `--max-sends` sends,
//! then waits 4·RTO for the last answer (RFC 8489: 7 sends and 16·RTO). An unanswered
//! filtering test costs that whole budget, 3.5 s with the defaults.
//!
//! A server with one IP and two ports (`alt-listening-port` alone) answers only
//! change-port: the report then says which behaviours it could not tell apart.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use rand::RngCore;
use serde::Serialize;
use tsunagi_stun::{attr, Class, Message, MessageEncoder, Method, TransactionId};

/// Arguments of `tsunagi nat`.
#[derive(Debug, Clone, Args)]
pub struct NatArgs {
    /// STUN server to test against, HOST[:PORT]: a tsunagi with alt-listening-ip, or a
    /// coturn with two listening-ip.
    #[arg(value_name = "SERVER", default_value = "127.0.0.1:3478")]
    pub server: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Local IP address to send from [default: any address of the server's family].
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// Initial retransmission timeout in milliseconds (RFC 8489 RTO).
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub rto_ms: u64,
    /// Requests sent per transaction before giving up (RFC 8489's Rc, there 7).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub max_sends: u32,
}

/// Mapping or filtering behaviour (RFC 4787 terms, as RFC 5780 uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behavior {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

impl Behavior {
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::EndpointIndependent => "endpoint-independent",
            Behavior::AddressDependent => "address-dependent",
            Behavior::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// What the server offers for discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Support {
    /// OTHER-ADDRESS with another IP: every test runs.
    TwoIps,
    /// OTHER-ADDRESS with the same IP: change-port only.
    OneIp,
    /// No OTHER-ADDRESS: only the public address can be found.
    None,
}

/// The outcome of `tsunagi nat`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub server: SocketAddr,
    /// This host's address towards the server (the source address the route picks).
    pub local: SocketAddr,
    /// XOR-MAPPED-ADDRESS of test I.
    pub public: SocketAddr,
    /// Whether the public address differs from the local one.
    pub nat: bool,
    pub server_support: Support,
    pub other_address: Option<SocketAddr>,
    /// `None`: the server could not run the tests that tell.
    pub mapping: Option<Behavior>,
    pub filtering: Option<Behavior>,
    /// `None`: no test (no public address to send to).
    pub hairpinning: Option<bool>,
    /// The classic (RFC 3489) name: full-cone, restricted-cone, port-restricted-cone,
    /// symmetric, open (no NAT), or none when unknown.
    #[serde(rename = "type")]
    pub nat_type: Option<&'static str>,
    /// What it means for WebRTC calls, in one sentence.
    pub webrtc: String,
    /// Limits of the result (a one-IP server, a behaviour that changed between tests).
    pub notes: Vec<String>,
    /// How long the tests took, in milliseconds.
    pub elapsed_ms: u64,
}

/// Why discovery could not run at all.
#[derive(Debug)]
#[non_exhaustive]
pub enum NatError {
    Resolve(String),
    Io(io::Error),
    /// The server answered no Binding request.
    NoAnswer(SocketAddr),
    /// It answered test I with an error.
    Refused(u16, String),
}

impl std::fmt::Display for NatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatError::Resolve(s) => f.write_str(s),
            NatError::Io(e) => write!(f, "socket error: {e}"),
            NatError::NoAnswer(a) => write!(
                f,
                "no answer from {a} over UDP: is a STUN server listening there, and does a firewall let UDP through?"
            ),
            NatError::Refused(code, reason) => {
                write!(f, "the server refused a Binding request: {code} {reason}")
            }
        }
    }
}

impl std::error::Error for NatError {}

impl From<io::Error> for NatError {
    fn from(e: io::Error) -> Self {
        NatError::Io(e)
    }
}

/// Retransmission settings of one transaction.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub rto: Duration,
    pub max_sends: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(500),
            max_sends: 3,
        }
    }
}

/// Waited after the last send, in RTOs (RFC 8489's Rm is 16).
const LAST_WAIT_RTOS: u32 = 4;

impl Timing {
    /// The longest a transaction can take.
    pub fn budget(&self) -> Duration {
        retransmit_waits(*self).sum()
    }
}

/// A Binding response (or error response) and where it came from.
#[derive(Debug, Clone)]
struct Answer {
    from: SocketAddr,
    mapped: Option<SocketAddr>,
    other: Option<SocketAddr>,
    error: Option<(u16, String)>,
}

fn new_tid() -> TransactionId {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    TransactionId::new(b)
}

fn binding_request(tid: TransactionId, change: Option<(bool, bool)>) -> Vec<u8> {
    let mut buf = [0u8; 64];
    // 64 bytes hold a header, CHANGE-REQUEST and FINGERPRINT.
    let n = (|| {
        let mut e = MessageEncoder::new(&mut buf, Class::Request, Method::BINDING, tid)?;
        if let Some((ip, port)) = change {
            e.change_request(ip, port)?;
        }
        e.fingerprint()?;
        Ok::<_, tsunagi_stun::EncodeError>(e.finish())
    })()
    .unwrap_or(0);
    buf[..n].to_vec()
}

/// How long to wait after each send (RFC 8489 §6.2.1): the RTO doubling after every
/// send, and `LAST_WAIT_RTOS` RTOs after the last one.
fn retransmit_waits(timing: Timing) -> impl Iterator<Item = Duration> {
    (1..=timing.max_sends).map(move |send| {
        if send == timing.max_sends {
            timing.rto * LAST_WAIT_RTOS
        } else {
            timing.rto * 2u32.saturating_pow(send - 1)
        }
    })
}

/// One STUN transaction over UDP with RFC 8489 retransmissions: `Ok(None)` when
/// nothing answered within the budget.
fn transact(
    sock: &UdpSocket,
    to: SocketAddr,
    change: Option<(bool, bool)>,
    timing: Timing,
) -> io::Result<Option<Answer>> {
    let tid = new_tid();
    let req = binding_request(tid, change);
    let mut buf = [0u8; 2048];
    for wait in retransmit_waits(timing) {
        sock.send_to(&req, to)?;
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // An ICMP error from an earlier send (port unreachable): keep waiting.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            };
            let Ok(m) = Message::parse(&buf[..n]) else {
                continue;
            };
            if m.transaction_id() != tid || m.method() != Method::BINDING {
                continue;
            }
            match m.class() {
                Class::Success => {
                    return Ok(Some(Answer {
                        from,
                        mapped: m
                            .get_xor_address(attr::XOR_MAPPED_ADDRESS)
                            .ok()
                            .flatten()
                            .or_else(|| m.get_address(attr::MAPPED_ADDRESS).ok().flatten()),
                        other: m.get_address(attr::OTHER_ADDRESS).ok().flatten(),
                        error: None,
                    }))
                }
                Class::Error => {
                    let error = m
                        .error_code()
                        .ok()
                        .flatten()
                        .map(|e| (e.code, e.reason.to_string()))
                        .unwrap_or((0, String::new()));
                    return Ok(Some(Answer {
                        from,
                        mapped: None,
                        other: None,
                        error: Some(error),
                    }));
                }
                _ => continue,
            }
        }
    }
    Ok(None)
}

fn unspecified_like(server: SocketAddr) -> IpAddr {
    match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn bind(server: SocketAddr, ip: Option<IpAddr>) -> io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::new(
        ip.unwrap_or_else(|| unspecified_like(server)),
        0,
    ))
}

/// The source IP the routing table picks towards `server` (no packet is sent).
fn route_source(server: SocketAddr, bind_ip: Option<IpAddr>) -> io::Result<IpAddr> {
    if let Some(ip) = bind_ip.filter(|ip| !ip.is_unspecified()) {
        return Ok(ip);
    }
    let s = bind(server, None)?;
    s.connect(server)?;
    Ok(s.local_addr()?.ip())
}

/// Resolves `HOST[:PORT]` (default port 3478; IPv6 literals in brackets).
pub fn resolve_server(s: &str) -> Result<SocketAddr, NatError> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 3478));
    }
    let with_port = if s
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        s.to_owned()
    } else {
        format!("{s}:3478")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| NatError::Resolve(format!("cannot resolve '{s}': {e}")))?
        .next()
        .ok_or_else(|| NatError::Resolve(format!("'{s}' has no address")))
}

/// Mapping behaviour from the mapped addresses of tests I, II and III (§4.3).
pub fn mapping_from(
    m1: SocketAddr,
    m2: SocketAddr,
    m3: impl FnOnce() -> Option<SocketAddr>,
) -> Option<Behavior> {
    if m1 == m2 {
        return Some(Behavior::EndpointIndependent);
    }
    m3().map(|m3| {
        if m3 == m2 {
            Behavior::AddressDependent
        } else {
            Behavior::AddressAndPortDependent
        }
    })
}

/// The classic name of a mapping/filtering combination.
pub fn nat_type(
    nat: bool,
    mapping: Option<Behavior>,
    filtering: Option<Behavior>,
) -> Option<&'static str> {
    use Behavior::*;
    if !nat {
        return Some("open");
    }
    match (mapping?, filtering) {
        (EndpointIndependent, Some(EndpointIndependent)) => Some("full-cone"),
        (EndpointIndependent, Some(AddressDependent)) => Some("restricted-cone"),
        (EndpointIndependent, Some(AddressAndPortDependent)) => Some("port-restricted-cone"),
        (EndpointIndependent, None) => None,
        (AddressDependent | AddressAndPortDependent, _) => Some("symmetric"),
    }
}

/// One sentence on what the behaviours mean for a WebRTC call (ICE with STUN and TURN).
pub fn webrtc_advice(nat: bool, mapping: Option<Behavior>, filtering: Option<Behavior>) -> String {
    use Behavior::*;
    let s = match (nat, mapping, filtering) {
        (false, _, Some(EndpointIndependent)) | (false, _, None) => {
            "no NAT: peers can connect to this host directly at its own address"
        }
        (false, _, Some(_)) => {
            "no NAT, but a firewall filters inbound UDP: direct calls work when this side sends first, which ICE does; peers behind symmetric NATs may need a TURN relay"
        }
        (true, Some(EndpointIndependent), Some(EndpointIndependent)) => {
            "peers behind this NAT can connect directly to almost anyone, even to peers behind a symmetric NAT"
        }
        (true, Some(EndpointIndependent), Some(AddressDependent)) => {
            "peers behind this NAT can connect directly to most others, symmetric NATs included (ICE punches the hole towards the peer's address)"
        }
        (true, Some(EndpointIndependent), Some(AddressAndPortDependent)) => {
            "peers behind this NAT can connect directly to most others; calls to peers behind a symmetric NAT will need a TURN relay"
        }
        (true, Some(EndpointIndependent), None) => {
            "peers behind this NAT can connect directly to most others (its public port stays the same for every destination)"
        }
        (true, Some(_), _) => {
            "this is a symmetric NAT (a new public port per destination): calls to peers behind another symmetric or a port-restricted NAT will need a TURN relay; peers without NAT or behind full- or restricted-cone NATs can still connect directly"
        }
        (true, None, _) => {
            "the server could not run the tests that tell the mapping apart: keep a TURN server in the ICE configuration"
        }
    };
    s.to_owned()
}

/// Runs every test against `server` and builds the report.
pub fn discover(
    server: SocketAddr,
    bind_ip: Option<IpAddr>,
    timing: Timing,
) -> Result<Report, NatError> {
    let started = Instant::now();
    let mut notes = Vec::new();
    let local_ip = route_source(server, bind_ip)?;

    // Mapping, test I.
    let s1 = bind(server, bind_ip)?;
    let local = SocketAddr::new(local_ip, s1.local_addr()?.port());
    let a1 = transact(&s1, server, None, timing)?.ok_or(NatError::NoAnswer(server))?;
    if let Some((code, reason)) = a1.error {
        return Err(NatError::Refused(code, reason));
    }
    let public = a1.mapped.ok_or_else(|| {
        NatError::Refused(0, "a Binding response without a mapped address".into())
    })?;
    let nat = public != local;
    let other = a1.other;
    let support = match other {
        Some(o) if o.ip() != server.ip() => Support::TwoIps,
        Some(_) => Support::OneIp,
        None => Support::None,
    };

    // Mapping, tests II and III.
    let mut mapping = None;
    match (support, other) {
        (_, _) if !nat => mapping = Some(Behavior::EndpointIndependent),
        (Support::TwoIps, Some(o)) => {
            let to2 = SocketAddr::new(o.ip(), server.port());
            match transact(&s1, to2, None, timing)?.and_then(|a| a.mapped) {
                Some(m2) => {
                    mapping = mapping_from(public, m2, || {
                        transact(&s1, o, None, timing).ok().flatten().and_then(|a| a.mapped)
                    });
                    if mapping.is_none() {
                        notes.push(format!("mapping test III: no answer from {o}"));
                    }
                }
                None => notes.push(format!("mapping test II: no answer from {to2}")),
            }
        }
        (Support::OneIp, Some(o)) => {
            // Same IP, other port: a change tells port-dependence; no change cannot
            // tell endpoint-independent from address-dependent.
            match transact(&s1, o, None, timing)?.and_then(|a| a.mapped) {
                Some(m) if m != public => mapping = Some(Behavior::AddressAndPortDependent),
                Some(_) => notes.push(
                    "the server has one IP: the mapping does not depend on the port, but whether it depends on the address is unknown".into(),
                ),
                None => notes.push(format!("mapping test: no answer from {o}")),
            }
        }
        _ => notes.push(
            "the server sends no OTHER-ADDRESS (RFC 5780 off): only the public address is known; with tsunagi set alt-listening-ip, with coturn give it two listening-ip"
                .into(),
        ),
    }

    // Filtering, from a fresh socket.
    let mut filtering = None;
    if support != Support::None {
        let s2 = bind(server, bind_ip)?;
        let f1 = transact(&s2, server, None, timing)?;
        if f1.is_none() {
            notes.push("filtering test I: no answer".into());
        } else {
            let f2 = if support == Support::TwoIps {
                transact(&s2, server, Some((true, true)), timing)?
            } else {
                None
            };
            // A server that ignores CHANGE-REQUEST answers from where it was asked:
            // that says nothing about filtering.
            let ignored = |a: &Answer, ip: bool| {
                a.error.is_none()
                    && ((ip && a.from.ip() == server.ip()) || a.from.port() == server.port())
            };
            if let Some(a) = f2.as_ref().filter(|a| ignored(a, true)) {
                notes.push(format!(
                    "the server answered change-IP-and-port from {}, the address asked: it does not honour CHANGE-REQUEST",
                    a.from
                ));
            } else if f2.as_ref().is_some_and(|a| a.error.is_none()) {
                filtering = Some(Behavior::EndpointIndependent);
            } else {
                let f3 = transact(&s2, server, Some((false, true)), timing)?;
                match f3 {
                    Some(a) if ignored(&a, false) => notes.push(format!(
                        "the server answered change-port from {}, the address asked: it does not honour CHANGE-REQUEST",
                        a.from
                    )),
                    Some(a) if a.error.is_none() => {
                        if support == Support::TwoIps {
                            filtering = Some(Behavior::AddressDependent);
                        } else {
                            notes.push("the server has one IP: packets from another port of the server get through, so filtering is endpoint-independent or address-dependent (telling them apart needs a second server IP)".into());
                        }
                    }
                    Some(a) => notes.push(format!(
                        "filtering test III refused: {}",
                        a.error.map(|(c, r)| format!("{c} {r}")).unwrap_or_default()
                    )),
                    None => filtering = Some(Behavior::AddressAndPortDependent),
                }
            }
            if let Some(a) = &f2 {
                if let Some((c, r)) = &a.error {
                    notes.push(format!("filtering test II refused: {c} {r}"));
                }
            }
        }
    }

    // Hairpinning: a second socket sends to the first one's public address.
    let hairpinning = hairpin(server, bind_ip, timing).unwrap_or_else(|e| {
        notes.push(format!("hairpinning test failed: {e}"));
        None
    });

    Ok(Report {
        server,
        local,
        public,
        nat,
        server_support: support,
        other_address: other,
        mapping,
        filtering,
        hairpinning,
        nat_type: nat_type(nat, mapping, filtering),
        webrtc: webrtc_advice(nat, mapping, filtering),
        notes,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// RFC 5780 §4.5: does a packet from behind the NAT to the NAT's own public address
/// of another socket come back in?
fn hairpin(
    server: SocketAddr,
    bind_ip: Option<IpAddr>,
    timing: Timing,
) -> io::Result<Option<bool>> {
    let a = bind(server, bind_ip)?;
    let Some(mapped) = transact(&a, server, None, timing)?.and_then(|x| x.mapped) else {
        return Ok(None);
    };
    let b = bind(server, bind_ip)?;
    let tid = new_tid();
    let req = binding_request(tid, None);
    let mut buf = [0u8; 2048];
    for wait in retransmit_waits(timing) {
        b.send_to(&req, mapped)?;
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            a.set_read_timeout(Some(left))?;
            match a.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == tid) {
                        return Ok(Some(true));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Some(false))
}

fn describe(b: Option<Behavior>, what: &str) -> String {
    match (b, what) {
        (None, _) => "unknown".into(),
        (Some(Behavior::EndpointIndependent), "mapping") => {
            "endpoint-independent: the same public address and port for every destination".into()
        }
        (Some(Behavior::AddressDependent), "mapping") => {
            "address-dependent: a new public port for every destination IP".into()
        }
        (Some(Behavior::AddressAndPortDependent), "mapping") => {
            "address-and-port-dependent: a new public port for every destination IP and port".into()
        }
        (Some(Behavior::EndpointIndependent), _) => {
            "endpoint-independent: anyone can send to the public address once it exists".into()
        }
        (Some(Behavior::AddressDependent), _) => {
            "address-dependent: only IPs this host has sent to can answer, from any port".into()
        }
        (Some(Behavior::AddressAndPortDependent), _) => {
            "address-and-port-dependent: only the exact IP and port this host sent to can answer"
                .into()
        }
    }
}

/// The report as text for people.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("  {k:<13} {v}\n"));
    line("server", &r.server.to_string());
    line(
        "public",
        &if r.nat {
            format!("{} (this host is {}: behind a NAT)", r.public, r.local)
        } else {
            format!("{} (the host's own address: no NAT)", r.public)
        },
    );
    line("mapping", &describe(r.mapping, "mapping"));
    line("filtering", &describe(r.filtering, "filtering"));
    line(
        "hairpinning",
        match r.hairpinning {
            Some(true) => "yes: hosts behind this NAT reach each other at their public addresses",
            Some(false) => "no: hosts behind this NAT cannot reach each other at their public addresses (ICE uses their local addresses instead)",
            None => "unknown",
        },
    );
    line("NAT type", r.nat_type.unwrap_or("unknown"));
    line("WebRTC", &r.webrtc);
    for n in &r.notes {
        line("note", n);
    }
    format!("NAT behaviour (RFC 5780), in {} ms\n{out}", r.elapsed_ms)
}

/// `tsunagi nat`: exit status 0 with a report, 1 when the server cannot be reached.
pub fn run(args: &NatArgs) -> ExitCode {
    let timing = Timing {
        rto: Duration::from_millis(args.rto_ms),
        max_sends: args.max_sends,
    };
    let result = resolve_server(&args.server).and_then(|s| discover(s, args.bind, timing));
    match result {
        Ok(r) => {
            if args.json {
                match serde_json::to_string(&r) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("tsunagi nat: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", render(&r));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if args.json {
                println!("{}", serde_json::json!({ "error": e.to_string() }));
            }
            eprintln!("tsunagi nat: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use Behavior::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapping_classification() {
        let (a, b, c) = (sa("1.2.3.4:1"), sa("1.2.3.4:2"), sa("1.2.3.4:3"));
        assert_eq!(
            mapping_from(a, a, || panic!("test III is not needed")),
            Some(EndpointIndependent)
        );
        assert_eq!(mapping_from(a, b, || Some(b)), Some(AddressDependent));
        assert_eq!(
            mapping_from(a, b, || Some(c)),
            Some(AddressAndPortDependent)
        );
        assert_eq!(mapping_from(a, b, || None), None);
    }

    #[test]
    fn names_and_advice() {
        let e = Some(EndpointIndependent);
        let a = Some(AddressDependent);
        let p = Some(AddressAndPortDependent);
        assert_eq!(nat_type(true, e, e), Some("full-cone"));
        assert_eq!(nat_type(true, e, a), Some("restricted-cone"));
        assert_eq!(nat_type(true, e, p), Some("port-restricted-cone"));
        assert_eq!(nat_type(true, p, p), Some("symmetric"));
        assert_eq!(nat_type(true, a, a), Some("symmetric"));
        assert_eq!(nat_type(false, e, e), Some("open"));
        assert_eq!(nat_type(true, None, p), None);
        assert!(webrtc_advice(true, p, p).contains("TURN relay"));
        assert!(webrtc_advice(true, e, p).contains("symmetric NAT will need a TURN relay"));
        assert!(webrtc_advice(true, e, e).contains("directly"));
        assert!(webrtc_advice(false, e, e).contains("no NAT"));
    }

    #[test]
    fn server_names_resolve() {
        assert_eq!(resolve_server("192.0.2.1").unwrap(), sa("192.0.2.1:3478"));
        assert_eq!(resolve_server("192.0.2.1:9").unwrap(), sa("192.0.2.1:9"));
        assert_eq!(
            resolve_server("[2001:db8::1]:9").unwrap(),
            sa("[2001:db8::1]:9")
        );
        assert_eq!(
            resolve_server("2001:db8::1").unwrap(),
            sa("[2001:db8::1]:3478")
        );
        assert_eq!(resolve_server("localhost:7").unwrap().port(), 7);
    }

    #[test]
    fn budget_follows_the_rto_schedule() {
        let t = Timing {
            rto: Duration::from_millis(100),
            max_sends: 3,
        };
        // Sends at 0, 100, 300 ms; the last answer is awaited until 300 + 400 ms.
        assert_eq!(t.budget(), Duration::from_millis(700));
        let json = serde_json::to_value(Report {
            server: sa("192.0.2.1:3478"),
            local: sa("100.64.1.2:5000"),
            public: sa("203.0.113.10:5000"),
            nat: true,
            server_support: Support::TwoIps,
            other_address: Some(sa("192.0.2.2:3479")),
            mapping: Some(EndpointIndependent),
            filtering: Some(AddressAndPortDependent),
            hairpinning: Some(false),
            nat_type: Some("port-restricted-cone"),
            webrtc: String::new(),
            notes: vec![],
            elapsed_ms: 1,
        })
        .unwrap();
        assert_eq!(json["mapping"], "endpoint-independent");
        assert_eq!(json["filtering"], "address-and-port-dependent");
        assert_eq!(json["type"], "port-restricted-cone");
        assert_eq!(json["server_support"], "two-ips");
    }
}

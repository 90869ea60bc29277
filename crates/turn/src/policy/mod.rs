//! Which peer addresses the relay may send to.
//!
//! A TURN server relays to whatever address a client names in CreatePermission or
//! ChannelBind, so without a policy it is an open proxy into the server's own networks
//! (loopback services, cloud metadata at 169.254.169.254, the private LAN). RFC 8656
//! lets the server refuse such a peer with 403 (Forbidden); [`PeerPolicy::check`] decides.
//!
//! Rules, in coturn's order:
//! 1. an address in [`PeerPolicy::allowed`] is allowed;
//! 2. else an address in [`PeerPolicy::denied`] is refused;
//! 3. else a special-purpose address (IANA IPv4 and IPv6 Special-Purpose Address
//!    Registries, RFC 6890, plus multicast, reserved and deprecated blocks) is refused,
//!    loopback only unless [`PeerPolicy::allow_loopback`];
//! 4. else the address is allowed.
//!
//! [`PeerPolicy::allowed_endpoints`] is a narrower exception than rule 1: exact
//! addresses (IP and port) the relay may reach even when their IP is refused, such as
//! this server's own SFU on a private or loopback address. A permission for such an IP
//! is granted ([`PeerPolicy::check_permission`], RFC 8656 permissions are per IP), but
//! it reaches only those exact addresses: [`PeerPolicy::check_address`] refuses every
//! other port of the IP, for ChannelBind and for each relayed packet. The relay speaks
//! UDP only (no RFC 6062 TCP relaying), so an endpoint is a UDP endpoint.
//!
//! The server adds one exception of the same shape that no configuration can list:
//! its own live relayed addresses ([`crate::relays`]). Their refusals, for another
//! port of a relay IP, have the category [`Denied::NOT_A_RELAY`].
//!
//! IPv6 addresses that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
//! IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`) are
//! judged by the IPv4 address they carry, in every rule: `::ffff:127.0.0.1` and
//! `::127.0.0.1` are loopback, and an `allowed`/`denied` IPv4 range also covers those
//! forms. This closes the bypasses of coturn CVE-2020-26262 (`0.0.0.0`, `[::]`,
//! `::ffff:127.0.0.1` reaching loopback) and of the IPv4-mapped/compatible/NAT64
//! encodings. Operator-chosen NAT64 prefixes (RFC 6052 network-specific prefixes) cannot
//! be recognised; deny them with `denied-peer-ip`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An inclusive range `start..=end` of addresses of one family.
///
/// Invariant: `start` and `end` are of the same family and `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    start: IpAddr,
    end: IpAddr,
}

impl IpRange {
    /// The range holding exactly `ip`.
    pub fn single(ip: IpAddr) -> Self {
        Self { start: ip, end: ip }
    }

    /// `start..=end`; both of one family, `start <= end`.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<Self, String> {
        let ordered = match (start, end) {
            (IpAddr::V4(a), IpAddr::V4(b)) => a <= b,
            (IpAddr::V6(a), IpAddr::V6(b)) => a <= b,
            _ => {
                return Err(format!(
                    "range {start}-{end} mixes IPv4 and IPv6; write one range per family"
                ))
            }
        };
        if !ordered {
            return Err(format!(
                "range {start}-{end} is reversed: the first address must not be above the second"
            ));
        }
        Ok(Self { start, end })
    }

    /// The CIDR block `addr/prefix_len`; host bits of `addr` are ignored.
    pub fn cidr(addr: IpAddr, prefix_len: u8) -> Result<Self, String> {
        match addr {
            IpAddr::V4(a) => {
                if prefix_len > 32 {
                    return Err(format!(
                        "prefix length /{prefix_len} is longer than 32 bits in {addr}/{prefix_len}; IPv4 prefixes are /0 to /32"
                    ));
                }
                let host = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
                let start = u32::from(a) & !host;
                Ok(Self {
                    start: IpAddr::V4(Ipv4Addr::from(start)),
                    end: IpAddr::V4(Ipv4Addr::from(start | host)),
                })
            }
            IpAddr::V6(a) => {
                if prefix_len > 128 {
                    return Err(format!(
                        "prefix length /{prefix_len} is longer than 128 bits in {addr}/{prefix_len}; IPv6 prefixes are /0 to /128"
                    ));
                }
                let host = u128::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
                let start = u128::from(a) & !host;
                Ok(Self {
                    start: IpAddr::V6(Ipv6Addr::from(start)),
                    end: IpAddr::V6(Ipv6Addr::from(start | host)),
                })
            }
        }
    }

    /// The first address of the range.
    pub fn start(&self) -> IpAddr {
        self.start
    }

    /// The last address of the range (inclusive).
    pub fn end(&self) -> IpAddr {
        self.end
    }

    /// Whether `ip` lies in the range. An address of the other family never does; see
    /// [`PeerPolicy`] for how embedded IPv4 addresses are matched.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.start, self.end, ip) {
            (IpAddr::V4(s), IpAddr::V4(e), IpAddr::V4(x)) => s <= x && x <= e,
            (IpAddr::V6(s), IpAddr::V6(e), IpAddr::V6(x)) => s <= x && x <= e,
            _ => false,
        }
    }

    /// The prefix length if the range is exactly one CIDR block.
    fn prefix_len(&self) -> Option<u32> {
        let (start, span, bits) = match (self.start, self.end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => {
                let (s, e) = (u128::from(u32::from(s)), u128::from(u32::from(e)));
                (s, s ^ e, 32)
            }
            (IpAddr::V6(s), IpAddr::V6(e)) => {
                let (s, e) = (u128::from(s), u128::from(e));
                (s, s ^ e, 128)
            }
            _ => return None,
        };
        // A block is `start` with its low host bits clear, and `end` with them set.
        let is_low_mask = span & span.wrapping_add(1) == 0;
        (is_low_mask && start & span == 0).then(|| bits - span.count_ones())
    }
}

const RANGE_FORMS: &str =
    "expected an address (10.0.0.1), a CIDR block (10.0.0.0/8) or a range (10.0.0.1-10.0.0.9)";

fn parse_addr(part: &str, whole: &str) -> Result<IpAddr, String> {
    let part = part.trim();
    let bare = part
        .strip_prefix('[')
        .and_then(|p| p.strip_suffix(']'))
        .unwrap_or(part);
    bare.parse().map_err(|_| {
        if part.is_empty() {
            format!("'{whole}' is missing an address; {RANGE_FORMS}")
        } else {
            format!("'{part}' in '{whole}' is not an IP address; {RANGE_FORMS}")
        }
    })
}

impl FromStr for IpRange {
    type Err = String;

    /// Accepts `1.2.3.4`, `1.2.3.0/24`, `1.2.3.4-1.2.3.10` (coturn's range form) and the
    /// IPv6 equivalents; an IPv6 address may be written in brackets.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err(format!("empty address range; {RANGE_FORMS}"));
        }
        if let Some((a, b)) = t.split_once('-') {
            return IpRange::new(parse_addr(a, s)?, parse_addr(b, s)?);
        }
        if let Some((a, len)) = t.split_once('/') {
            let addr = parse_addr(a, s)?;
            let len = len.trim();
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "'/{len}' in '{s}' is not a prefix length; expected a number such as /24"
                ));
            }
            let len: u8 = len.parse().map_err(|_| {
                format!("prefix length /{len} in '{s}' is too long; IPv4 prefixes are /0 to /32, IPv6 /0 to /128")
            })?;
            return IpRange::cidr(addr, len);
        }
        Ok(IpRange::single(parse_addr(t, s)?))
    }
}

impl fmt::Display for IpRange {
    /// The shortest form [`FromStr`] reads back: an address, `net/len` or `start-end`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            return write!(f, "{}", self.start);
        }
        match self.prefix_len() {
            Some(len) => write!(f, "{}/{len}", self.start),
            None => write!(f, "{}-{}", self.start, self.end),
        }
    }
}

/// Which peers the relay may reach. The default refuses every special-purpose address
/// and allows the rest.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Always allowed, before every other rule (coturn `allowed-peer-ip`).
    pub allowed: Vec<IpRange>,
    /// Refused unless in `allowed` (coturn `denied-peer-ip`).
    pub denied: Vec<IpRange>,
    /// Allow loopback peers (coturn `allow-loopback-peers`).
    pub allow_loopback: bool,
    /// Exact addresses the relay may reach even when their IP is refused, e.g. this
    /// server's own SFU; any other port on those IPs stays refused.
    ///
    /// Matched exactly, IP and port: `127.0.0.1:7882` does not cover
    /// `[::ffff:127.0.0.1]:7882`. Entries with port 0 or an unspecified IP (`0.0.0.0`,
    /// `::`) match nothing: list the addresses clients are given, not a wildcard bind.
    pub allowed_endpoints: Vec<SocketAddr>,
}

/// How far a granted peer reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerScope {
    /// The IP is allowed: every port of it.
    AnyPort,
    /// The IP is refused, but some of its addresses are in
    /// [`PeerPolicy::allowed_endpoints`]: only those.
    EndpointsOnly,
}

/// Why [`PeerPolicy::check`] refused a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// What the address is, e.g. `"loopback"` or `"private (IPv4-mapped)"`.
    pub category: &'static str,
    /// The configuration option that would allow it (or, for `denied by config`, the
    /// option that refused it).
    pub config_key: &'static str,
}

const KEY_ALLOWED: &str = "allowed-peer-ip";
const KEY_DENIED: &str = "denied-peer-ip";
const KEY_LOOPBACK: &str = "allow-loopback-peers";

impl Denied {
    const BY_CONFIG: Denied = Denied {
        category: "denied by config",
        config_key: KEY_DENIED,
    };

    /// The category of a port refused on an IP that only
    /// [`PeerPolicy::allowed_endpoints`] makes reachable.
    pub const OUTSIDE_ENDPOINTS: &'static str = "a port outside the allowed endpoints";

    /// The refusal of another port of an IP that `self` refused but an allowed
    /// endpoint names: the key that allows the whole IP stays.
    fn outside_endpoints(self) -> Denied {
        Denied {
            category: Self::OUTSIDE_ENDPOINTS,
            config_key: if self.config_key == KEY_LOOPBACK {
                KEY_LOOPBACK
            } else {
                KEY_ALLOWED
            },
        }
    }

    /// Whether this is the refusal of a port outside the allowed endpoints.
    pub fn is_outside_endpoints(&self) -> bool {
        self.category == Self::OUTSIDE_ENDPOINTS
    }

    /// The category of a port refused on an IP of this server's relays, where no
    /// live allocation has that port: such an IP reaches this server's live relayed
    /// addresses only ([`crate::relays`]).
    pub const NOT_A_RELAY: &'static str = "a port that is no live relay of this server";

    /// The refusal of a port of a relay IP that `self` refused: the key that allows
    /// the whole IP stays, as for [`Denied::OUTSIDE_ENDPOINTS`].
    pub fn not_a_relay(self) -> Denied {
        Denied {
            category: Self::NOT_A_RELAY,
            ..self.outside_endpoints()
        }
    }

    /// Whether this is the refusal of a port of a relay IP with no live relay on it.
    pub fn is_not_a_relay(&self) -> bool {
        self.category == Self::NOT_A_RELAY
    }

    /// Reason phrase for the 403 ERROR-CODE; at most 127 characters (RFC 8489 §14.8).
    pub fn reason_phrase(&self) -> String {
        if self.is_outside_endpoints() || self.is_not_a_relay() {
            let keys = if self.config_key == KEY_LOOPBACK {
                format!("{KEY_LOOPBACK} or {KEY_ALLOWED}")
            } else {
                KEY_ALLOWED.to_owned()
            };
            let what = if self.is_not_a_relay() {
                "no live relay of this server has this port"
            } else {
                "this port is not an allowed endpoint of the peer IP"
            };
            return format!("Forbidden: {what}; allow every port with {keys}");
        }
        match self.config_key {
            KEY_DENIED => format!(
                "Forbidden: peer address is {} ({KEY_DENIED}); allow it with {KEY_ALLOWED}",
                self.category
            ),
            KEY_LOOPBACK => format!(
                "Forbidden: peer address is {}; allow it with {KEY_LOOPBACK} or {KEY_ALLOWED}",
                self.category
            ),
            key => format!(
                "Forbidden: peer address is {}; allow it with {key}",
                self.category
            ),
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer address is {} ({})", self.category, self.config_key)
    }
}

impl std::error::Error for Denied {}

impl PeerPolicy {
    /// Ok if the server may relay to every port of `ip`: rules 1 to 4, without
    /// [`PeerPolicy::allowed_endpoints`].
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        if matches_any(&self.allowed, ip) {
            return Ok(());
        }
        if matches_any(&self.denied, ip) {
            return Err(Denied::BY_CONFIG);
        }
        match special_purpose(ip) {
            None => Ok(()),
            Some(s) if s.loopback && self.allow_loopback => Ok(()),
            Some(s) => Err(Denied {
                category: s.category,
                config_key: if s.loopback {
                    KEY_LOOPBACK
                } else {
                    KEY_ALLOWED
                },
            }),
        }
    }

    /// Whether a permission for `ip` may be installed (CreatePermission), and how far
    /// it reaches: every port when [`PeerPolicy::check`] allows the IP, else only the
    /// allowed endpoints on it, if any; else `check`'s refusal.
    pub fn check_permission(&self, ip: IpAddr) -> Result<PeerScope, Denied> {
        match self.check(ip) {
            Ok(()) => Ok(PeerScope::AnyPort),
            Err(_) if self.is_endpoint_ip(ip) => Ok(PeerScope::EndpointsOnly),
            Err(d) => Err(d),
        }
    }

    /// Whether the relay may send to `peer` (ChannelBind): its IP is allowed, or
    /// `peer` is an allowed endpoint. Another port of an endpoint's refused IP is
    /// refused with [`Denied::OUTSIDE_ENDPOINTS`].
    pub fn check_address(&self, peer: SocketAddr) -> Result<PeerScope, Denied> {
        match self.check(peer.ip()) {
            Ok(()) => Ok(PeerScope::AnyPort),
            Err(_) if self.is_allowed_endpoint(peer) => Ok(PeerScope::EndpointsOnly),
            Err(d) if self.is_endpoint_ip(peer.ip()) => Err(d.outside_endpoints()),
            Err(d) => Err(d),
        }
    }

    /// Whether `peer` is one of [`PeerPolicy::allowed_endpoints`] (IP and port; port 0
    /// and unspecified IPs never are). A linear scan: the list is a few addresses.
    pub fn is_allowed_endpoint(&self, peer: SocketAddr) -> bool {
        self.endpoints()
            .any(|e| e.ip() == peer.ip() && e.port() == peer.port())
    }

    /// Whether some allowed endpoint has the IP `ip`.
    fn is_endpoint_ip(&self, ip: IpAddr) -> bool {
        self.endpoints().any(|e| e.ip() == ip)
    }

    /// The entries of `allowed_endpoints` that can match a peer.
    fn endpoints(&self) -> impl Iterator<Item = &SocketAddr> {
        self.allowed_endpoints
            .iter()
            .filter(|e| e.port() != 0 && !e.ip().is_unspecified())
    }
}

/// Whether a range covers `ip`, its embedded IPv4 address, or the IPv4-mapped form of
/// either, so that one range written in either family covers every encoding.
fn matches_any(ranges: &[IpRange], ip: IpAddr) -> bool {
    if ranges.is_empty() {
        return false;
    }
    let v4 = match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => embedded_ipv4(a).map(|(v4, _)| v4),
    };
    let mapped = v4.map(|a| IpAddr::V6(a.to_ipv6_mapped()));
    let candidates = [Some(ip), v4.map(IpAddr::V4), mapped];
    ranges
        .iter()
        .any(|r| candidates.iter().flatten().any(|&c| r.contains(c)))
}

/// How an IPv6 address carries an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedding {
    /// `::ffff:0:0/96`, RFC 4291 §2.5.5.2.
    Mapped,
    /// `::/96` except `::` and `::1`, deprecated by RFC 4291 §2.5.5.1.
    Compatible,
    /// `64:ff9b::/96`, the NAT64 well-known prefix, RFC 6052 §2.1.
    Nat64,
    /// `2002::/16`, the IPv4 address in bits 16..48, RFC 3056 §2 (deprecated, RFC 7526).
    SixToFour,
}

fn embedded_ipv4(ip: Ipv6Addr) -> Option<(Ipv4Addr, Embedding)> {
    let s = ip.segments();
    let low = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some((low, Embedding::Mapped)),
        [0, 0, 0, 0, 0, 0, _, _] if u32::from(low) > 1 => Some((low, Embedding::Compatible)),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some((low, Embedding::Nat64)),
        [0x2002, hi, lo, ..] => Some((
            Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)),
            Embedding::SixToFour,
        )),
        _ => None,
    }
}

/// A special-purpose address: what it is, and whether it reaches loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Special {
    category: &'static str,
    loopback: bool,
}

macro_rules! ipv4_classes {
    ($($variant:ident => $name:literal,)*) => {
        /// IPv4 special-purpose classes; see [`IPV4_SPECIAL`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum V4Class { $($variant),* }

        impl V4Class {
            /// The category, marked with the IPv6 form that carried the address.
            fn category(self, via: Option<Embedding>) -> &'static str {
                match (self, via) {
                    $(
                        (V4Class::$variant, None) => $name,
                        (V4Class::$variant, Some(Embedding::Mapped)) =>
                            concat!($name, " (IPv4-mapped)"),
                        (V4Class::$variant, Some(Embedding::Compatible)) =>
                            concat!($name, " (IPv4-compatible)"),
                        (V4Class::$variant, Some(Embedding::Nat64)) => concat!($name, " (NAT64)"),
                        (V4Class::$variant, Some(Embedding::SixToFour)) => concat!($name, " (6to4)"),
                    )*
                }
            }
        }
    };
}

ipv4_classes! {
    Unspecified => "unspecified",
    ThisNetwork => "this network",
    Private => "private",
    Cgnat => "CGNAT",
    Loopback => "loopback",
    LinkLocal => "link-local",
    IetfProtocol => "IETF protocol assignment",
    Documentation => "documentation",
    Benchmarking => "benchmarking",
    SixToFourRelay => "6to4 relay anycast",
    Multicast => "multicast",
    Broadcast => "broadcast",
    Reserved => "reserved",
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// IPv4 blocks refused by default; the first match wins, so more specific blocks come
/// first. Globally reachable entries of the registry (AS112, AMT) are not listed; the
/// PCP and TURN anycast addresses fall inside 192.0.0.0/24 and are refused with it.
const IPV4_SPECIAL: &[(u32, u8, V4Class)] = &[
    (v4(0, 0, 0, 0), 32, V4Class::Unspecified), // RFC 1122 §3.2.1.3
    (v4(0, 0, 0, 0), 8, V4Class::ThisNetwork),  // RFC 791
    (v4(10, 0, 0, 0), 8, V4Class::Private),     // RFC 1918
    (v4(100, 64, 0, 0), 10, V4Class::Cgnat),    // RFC 6598
    (v4(127, 0, 0, 0), 8, V4Class::Loopback),   // RFC 1122 §3.2.1.3
    (v4(169, 254, 0, 0), 16, V4Class::LinkLocal), // RFC 3927; cloud metadata lives here
    (v4(172, 16, 0, 0), 12, V4Class::Private),  // RFC 1918
    (v4(192, 0, 0, 0), 24, V4Class::IetfProtocol), // RFC 6890 §2.1
    (v4(192, 0, 2, 0), 24, V4Class::Documentation), // RFC 5737 TEST-NET-1
    (v4(192, 88, 99, 0), 24, V4Class::SixToFourRelay), // RFC 7526 (deprecated)
    (v4(192, 168, 0, 0), 16, V4Class::Private), // RFC 1918
    (v4(198, 18, 0, 0), 15, V4Class::Benchmarking), // RFC 2544
    (v4(198, 51, 100, 0), 24, V4Class::Documentation), // RFC 5737 TEST-NET-2
    (v4(203, 0, 113, 0), 24, V4Class::Documentation), // RFC 5737 TEST-NET-3
    (v4(224, 0, 0, 0), 4, V4Class::Multicast),  // RFC 5771
    (v4(255, 255, 255, 255), 32, V4Class::Broadcast), // RFC 919
    (v4(240, 0, 0, 0), 4, V4Class::Reserved),   // RFC 1112 §4
];

fn classify_v4(ip: Ipv4Addr) -> Option<V4Class> {
    let x = u32::from(ip);
    IPV4_SPECIAL.iter().find_map(|&(net, len, class)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        (x & mask == net).then_some(class)
    })
}

/// IPv6 blocks refused by default, after the embedded-IPv4 forms are handled; the first
/// match wins. Anything outside 2000::/3 (the only block IANA allocates global unicast
/// from, RFC 4291 §2.4) that is not listed is refused as "reserved".
const IPV6_SPECIAL: &[(u128, u8, &str)] = &[
    (v6(0x64, 0xff9b, 1), 48, "NAT64 local-use"), // RFC 8215
    (v6(0x100, 0, 0), 64, "discard-only"),        // RFC 6666
    (v6(0x2001, 0, 0), 32, "Teredo"),             // RFC 4380
    (v6(0x2001, 2, 0), 48, "benchmarking"),       // RFC 5180
    (v6(0x2001, 0x10, 0), 28, "ORCHID"),          // RFC 4843 (deprecated)
    (v6(0x2001, 0x20, 0), 28, "ORCHID"),          // RFC 7343 ORCHIDv2
    (v6(0x2001, 0, 0), 23, "IETF protocol assignment"), // RFC 2928
    (v6(0x2001, 0xdb8, 0), 32, "documentation"),  // RFC 3849
    (v6(0x3fff, 0, 0), 20, "documentation"),      // RFC 9637
    (v6(0xfc00, 0, 0), 7, "unique-local"),        // RFC 4193
    (v6(0xfe80, 0, 0), 10, "link-local"),         // RFC 4291 §2.5.6
    (v6(0xfec0, 0, 0), 10, "site-local"),         // RFC 3879 (deprecated)
    (v6(0xff00, 0, 0), 8, "multicast"),           // RFC 4291 §2.7
];

/// An IPv6 prefix from its first three 16-bit groups; the rest are zero.
const fn v6(a: u16, b: u16, c: u16) -> u128 {
    ((a as u128) << 112) | ((b as u128) << 96) | ((c as u128) << 80)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Special> {
    let x = u128::from(ip);
    if x == 0 {
        return Some(Special {
            category: "unspecified",
            loopback: false,
        });
    }
    if x == 1 {
        return Some(Special {
            category: "loopback",
            loopback: true,
        });
    }
    if let Some((inner, via)) = embedded_ipv4(ip) {
        return match classify_v4(inner) {
            Some(class) => Some(Special {
                category: class.category(Some(via)),
                loopback: class == V4Class::Loopback,
            }),
            // Deprecated and never routed; the IPv4 host is reached by its own address.
            None if via == Embedding::Compatible => Some(Special {
                category: "reserved (IPv4-compatible)",
                loopback: false,
            }),
            None => None,
        };
    }
    let listed = IPV6_SPECIAL.iter().find_map(|&(net, len, category)| {
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        (x & mask == net).then_some(category)
    });
    let global_unicast = x >> 125 == 0b001;
    match listed {
        Some(category) => Some(Special {
            category,
            loopback: false,
        }),
        None if !global_unicast => Some(Special {
            category: "reserved",
            loopback: false,
        }),
        None => None,
    }
}

/// What makes `ip` special-purpose, or `None` for an ordinary global address.
fn special_purpose(ip: IpAddr) -> Option<Special> {
    match ip {
        IpAddr::V4(a) => classify_v4(a).map(|class| Special {
            category: class.category(None),
            loopback: class == V4Class::Loopback,
        }),
        IpAddr::V6(a) => classify_v6(a),
    }
}

#[cfg(test)]
mod tests;

//! User IPs and usernames in logs go through [`Redactor`] (DESIGN practice 15). With
//! `redact-logs` they appear as short hashes, stable for the life of the process so
//! that one client's lines can still be followed, and keyed by a random per-process key
//! so that a hash cannot be reversed by trying every IPv4 address.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone)]
pub struct Redactor {
    /// SipHash with random keys; `None` when redaction is off.
    key: Option<std::collections::hash_map::RandomState>,
}

impl Redactor {
    pub fn new(enabled: bool) -> Self {
        Self {
            key: enabled.then(std::collections::hash_map::RandomState::new),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.key.is_some()
    }

    fn hash<T: Hash + ?Sized>(&self, prefix: &'static str, v: &T) -> Option<Redacted> {
        self.key.as_ref().map(|k| Redacted {
            prefix,
            hash: k.hash_one(v) as u32,
        })
    }

    /// A client or peer transport address. The port is kept: it is not personal, and
    /// tells two connections from one address apart.
    pub fn addr(&self, a: SocketAddr) -> Shown {
        match self.hash("ip-", &a.ip()) {
            Some(h) => Shown::Addr(h, a.port()),
            None => Shown::Plain(a.to_string()),
        }
    }

    pub fn ip(&self, ip: IpAddr) -> Shown {
        match self.hash("ip-", &ip) {
            Some(h) => Shown::Hash(h),
            None => Shown::Plain(ip.to_string()),
        }
    }

    pub fn user(&self, name: &str) -> Shown {
        match self.hash("user-", name) {
            Some(h) => Shown::Hash(h),
            None => Shown::Plain(name.to_owned()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Redacted {
    prefix: &'static str,
    hash: u32,
}

/// A value as it appears in a log line.
#[derive(Debug, Clone)]
pub enum Shown {
    Plain(String),
    Hash(Redacted),
    Addr(Redacted, u16),
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown::Plain(s) => f.write_str(s),
            Shown::Hash(r) => write!(f, "{}{:08x}", r.prefix, r.hash),
            Shown::Addr(r, port) => write!(f, "{}{:08x}:{port}", r.prefix, r.hash),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn redacts_stably() {
        let r = Redactor::new(true);
        let a: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let shown = r.addr(a).to_string();
        assert!(!shown.contains("192.0.2.7"), "{shown}");
        assert!(shown.ends_with(":5000"));
        assert_eq!(shown, r.addr(a).to_string());
        assert_eq!(r.ip(a.ip()).to_string(), shown.trim_end_matches(":5000"));
        assert!(!r.user("alice").to_string().contains("alice"));
        let plain = Redactor::new(false);
        assert_eq!(plain.addr(a).to_string(), "192.0.2.7:5000");
        assert_eq!(plain.user("alice").to_string(), "alice");
    }
}

//! The certificate being served, replaceable while tsunagi runs ([`CertStore`]).
//!
//! Every TLS listener's `rustls::ServerConfig` resolves its certificate here at each
//! handshake, so replacing it (a renewed ACME certificate, a changed PEM file, SIGHUP)
//! applies to every new connection at once, and connections already open keep the
//! certificate they were made with: no call drops.
//!
//! It also answers ACME's challenges while an order is pending: TLS-ALPN-01 (RFC 8737),
//! where a client hello that offers `acme-tls/1` gets the challenge certificate of the
//! name it asks for, never the real one; and HTTP-01 (RFC 8555 §8.3), whose answers it
//! holds for the HTTP routes (`/.well-known/acme-challenge/{token}`, over plain HTTP
//! on every front port).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use serde::Serialize;

use super::{provider, TlsError, TlsMaterial};

/// ALPN of HTTP/1.1: browsers and WebSockets.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN of TURN over TLS (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";
/// ALPN of ACME's TLS-ALPN-01 validation (RFC 8737).
pub const ALPN_ACME: &[u8] = b"acme-tls/1";

/// At most this many challenges of each kind at once (one per domain being validated).
pub const MAX_CHALLENGES: usize = 100;

/// What `/healthz` and the log say of the certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertStatus {
    /// Where it came from: "self-signed", "files", "acme".
    pub source: String,
    /// SHA-256 of the leaf, `AB:CD:...`.
    pub sha256: String,
    pub names: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<u64>,
    /// Seconds since the Unix epoch when it began to serve.
    pub since: u64,
    /// Certificates installed after the first (renewals, reloads).
    pub replaced: u64,
    /// Why the certificate could not be renewed or reloaded, and what to do; the one
    /// above keeps serving meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

struct Installed {
    key: Arc<CertifiedKey>,
    source: String,
    sha256: String,
    names: Vec<String>,
    not_after: Option<SystemTime>,
    since: SystemTime,
}

/// The certificate every TLS listener serves; see the module docs.
pub struct CertStore {
    current: RwLock<Arc<Installed>>,
    challenges: Mutex<BTreeMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01: token → key authorization.
    http_challenges: Mutex<BTreeMap<String, String>>,
    problem: Mutex<Option<String>>,
    replaced: AtomicU64,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CertStore {
    /// A store serving `material`; `source` names where it came from.
    pub fn new(material: &TlsMaterial, source: &str) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(Self::installed(material, source)?)),
            challenges: Mutex::default(),
            http_challenges: Mutex::default(),
            problem: Mutex::default(),
            replaced: AtomicU64::new(0),
        }))
    }

    fn installed(material: &TlsMaterial, source: &str) -> Result<Installed, TlsError> {
        Ok(Installed {
            key: material.certified_key()?,
            source: source.to_owned(),
            sha256: material.fingerprint().to_owned(),
            names: material.names().to_vec(),
            not_after: material.not_after(),
            since: SystemTime::now(),
        })
    }

    /// Serves `material` to every new connection from now on, and clears the
    /// problem. Refuses (and keeps the current one) when its key does not match.
    pub fn install(&self, material: &TlsMaterial, source: &str) -> Result<(), TlsError> {
        let new = Arc::new(Self::installed(material, source)?);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        self.replaced.fetch_add(1, Ordering::Relaxed);
        *lock(&self.problem) = None;
        Ok(())
    }

    /// Records why the certificate could not be renewed or reloaded (`None`: no
    /// problem any more).
    pub fn set_problem(&self, problem: Option<String>) {
        *lock(&self.problem) = problem;
    }

    fn current(&self) -> Arc<Installed> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn status(&self) -> CertStatus {
        let c = self.current();
        CertStatus {
            source: c.source.clone(),
            sha256: c.sha256.clone(),
            names: c.names.clone(),
            not_after: c.not_after.map(unix),
            since: unix(c.since),
            replaced: self.replaced.load(Ordering::Relaxed),
            problem: lock(&self.problem).clone(),
        }
    }

    /// Answers TLS-ALPN-01 for `name` with `key` until [`CertStore::remove_challenge`];
    /// `false` when [`MAX_CHALLENGES`] are pending already.
    pub fn add_challenge(&self, name: &str, key: Arc<CertifiedKey>) -> bool {
        let name = name.to_ascii_lowercase();
        let mut c = lock(&self.challenges);
        if c.len() >= MAX_CHALLENGES && !c.contains_key(&name) {
            return false;
        }
        c.insert(name, key);
        true
    }

    pub fn remove_challenge(&self, name: &str) {
        lock(&self.challenges).remove(&name.to_ascii_lowercase());
    }

    /// Answers HTTP-01 for `token` with `key_authorization` until
    /// [`CertStore::remove_http_challenge`]; `false` when [`MAX_CHALLENGES`] are pending
    /// already.
    pub fn add_http_challenge(&self, token: &str, key_authorization: &str) -> bool {
        let mut c = lock(&self.http_challenges);
        if c.len() >= MAX_CHALLENGES && !c.contains_key(token) {
            return false;
        }
        c.insert(token.to_owned(), key_authorization.to_owned());
        true
    }

    pub fn remove_http_challenge(&self, token: &str) {
        lock(&self.http_challenges).remove(token);
    }

    /// The key authorization to answer `GET /.well-known/acme-challenge/{token}` with.
    pub fn http_challenge(&self, token: &str) -> Option<String> {
        lock(&self.http_challenges).get(token).cloned()
    }

    /// The server config of every front port (the HTTP port, the TURN-over-TLS port),
    /// resolving its certificate here. ALPN offers `stun.turn`, HTTP/1.1 and
    /// `acme-tls/1`; a client that offers none of them is served too, and told apart
    /// by its first bytes.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        // rustls picks the first of these that the client offers: `stun.turn` before
        // HTTP/1.1, because TURN clients (coturn's) offer both, and browsers never offer
        // `stun.turn`.
        config.alpn_protocols = vec![
            ALPN_STUN_TURN.to_vec(),
            ALPN_HTTP1.to_vec(),
            ALPN_ACME.to_vec(),
        ];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ALPN_ACME));
        if acme {
            // RFC 8737 §3: only the challenge certificate, for the name asked; no
            // name or no challenge pending for it ends the handshake.
            let name = hello.server_name()?.to_ascii_lowercase();
            return lock(&self.challenges).get(&name).cloned();
        }
        // Any other name, or none (a client that dials the IP address), gets the
        // certificate being served.
        Some(self.current().key.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn install_replaces_the_served_certificate_and_clears_the_problem() {
        let a = TlsMaterial::self_signed(vec!["localhost".into()]).unwrap();
        let b = TlsMaterial::self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let store = CertStore::new(&a, "self-signed").unwrap();
        let s = store.status();
        assert_eq!(s.sha256, a.fingerprint());
        assert_eq!(s.names, vec!["localhost"]);
        assert!(s.not_after.is_some());
        assert_eq!(s.replaced, 0);
        store.set_problem(Some("renewal failed".into()));
        assert_eq!(store.status().problem.as_deref(), Some("renewal failed"));
        store.install(&b, "files").unwrap();
        let s = store.status();
        assert_eq!(s.sha256, b.fingerprint());
        assert_eq!(s.source, "files");
        assert_eq!(s.replaced, 1);
        assert_eq!(s.problem, None);
        assert_eq!(s.names, vec!["localhost", "127.0.0.1"]);
    }

    #[test]
    fn challenges_are_bounded() {
        let a = TlsMaterial::self_signed(vec!["localhost".into()]).unwrap();
        let store = CertStore::new(&a, "self-signed").unwrap();
        let key = a.certified_key().unwrap();
        for i in 0..MAX_CHALLENGES {
            assert!(store.add_challenge(&format!("n{i}.example"), key.clone()));
        }
        assert!(!store.add_challenge("one-more.example", key.clone()));
        assert!(
            store.add_challenge("N0.example", key.clone()),
            "a pending name is replaced"
        );
        store.remove_challenge("n0.example");
        assert!(store.add_challenge("one-more.example", key));

        for i in 0..MAX_CHALLENGES {
            assert!(store.add_http_challenge(&format!("t{i}"), "ka"));
        }
        assert!(!store.add_http_challenge("one-more", "ka"));
        assert!(
            store.add_http_challenge("t0", "again"),
            "a pending token is replaced"
        );
        assert_eq!(store.http_challenge("t0").as_deref(), Some("again"));
        store.remove_http_challenge("t0");
        assert_eq!(store.http_challenge("t0"), None);
        assert!(store.add_http_challenge("one-more", "ka"));
    }
}

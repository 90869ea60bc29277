//! TLS for HTTPS/WSS and TURN over TLS (`turns:`): where the certificate comes from and
//! how it is served.
//!
//! - [`TlsMaterial`]: a certificate chain and its key, from PEM files (`tls-cert`,
//!   `tls-key`) or made here (self-signed).
//! - [`kept`]: the self-signed certificate kept in `data-dir` (the default: HTTPS for
//!   devices on the LAN, accepted once).
//! - [`store`]: the certificate being served, replaceable while running ([`CertStore`],
//!   a rustls certificate resolver): new connections get the new one, open ones keep
//!   theirs.
//! - [`reload`]: replacing it when the PEM files change or on SIGHUP.
//! - [`acme`]: getting it from an ACME CA (Let's Encrypt) and renewing it.
//!
//! rustls with the *aws-lc-rs* provider (the crypto of the SFU's DTLS too), named
//! explicitly in every config so that no other crate's choice of a process-wide default
//! provider can change ours.

pub mod acme;
pub mod kept;
pub mod reload;
pub mod setup;
pub mod store;

use kept::{pem, NAMES_LINE};
pub use kept::{Kept, SELF_SIGNED_FILE};
pub use store::{CertStatus, CertStore};

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Largest PEM file read (a long chain is a few tens of KiB).
pub(crate) const MAX_PEM_BYTES: u64 = 1 << 20;

/// A problem with the certificate or key: what and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// A certificate chain (leaf first) and its private key.
pub struct TlsMaterial {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    fingerprint: String,
    self_signed: bool,
    names: Vec<String>,
    not_before: Option<SystemTime>,
    not_after: Option<SystemTime>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("chain_len", &self.chain.len())
            .field("fingerprint", &self.fingerprint)
            .field("self_signed", &self.self_signed)
            .field("names", &self.names)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `AB:CD:...`, the SHA-256 of a DER certificate as browsers and `openssl x509
/// -fingerprint -sha256` show it.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| hex::encode_upper([*b]))
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn read_pem(path: &Path, option: &str) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| {
        TlsError(format!(
            "{option} {}: {e}; check the path and that tsunagi may read it",
            path.display()
        ))
    })?;
    let mut buf = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| TlsError(format!("{option} {}: {e}", path.display())))?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError(format!(
            "{option} {} is larger than {MAX_PEM_BYTES} bytes; is it a PEM file?",
            path.display()
        )));
    }
    Ok(buf)
}

impl TlsMaterial {
    /// Reads a PEM certificate chain (leaf first, as `fullchain.pem` from Let's
    /// Encrypt) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = read_pem(cert, "tls-cert")?;
        let key_pem = read_pem(key, "tls-key")?;
        Self::from_pem(&cert_pem, &key_pem).map_err(|e| {
            TlsError(format!(
                "{e} (tls-cert {}, tls-key {})",
                cert.display(),
                key.display()
            ))
        })
    }

    /// Parses PEM text; checks that the key belongs to the leaf certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError(format!("tls-cert is not valid PEM: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(TlsError(
                "tls-cert holds no CERTIFICATE block; give the PEM certificate chain, leaf first"
                    .into(),
            ));
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            TlsError(format!(
                "tls-key holds no usable private key ({e}); give a PEM PKCS#8, RSA or EC private key"
            ))
        })?;
        let (names, not_before, not_after) = leaf_names_and_validity(leaf)?;
        let material = Self {
            fingerprint: sha256_fingerprint(leaf),
            chain,
            key,
            self_signed: false,
            names,
            not_before,
            not_after,
        };
        // Checks the pair: a key that does not match the certificate is refused here,
        // when it is loaded, not at the first handshake.
        material.certified_key()?;
        Ok(material)
    }

    /// A self-signed certificate for `names` (DNS names or IP addresses; IP strings
    /// become IP address SANs), with a new ECDSA P-256 key.
    pub fn self_signed(names: Vec<String>) -> Result<Self, TlsError> {
        Self::generate(names).map(|(m, _)| m)
    }

    /// A new self-signed certificate and its file text: a line naming what it covers,
    /// the certificate and the key, as PEM.
    pub(crate) fn generate(names: Vec<String>) -> Result<(Self, String), TlsError> {
        let mut params = rcgen::CertificateParams::new(names.clone())
            .map_err(|e| TlsError(format!("cannot make a self-signed certificate: {e}")))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tsunagi self-signed");
        let key = rcgen::KeyPair::generate()
            .map_err(|e| TlsError(format!("cannot generate a key: {e}")))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError(format!("cannot make a self-signed certificate: {e}")))?;
        let text = format!(
            "{NAMES_LINE}{}\n{}{}",
            names.join(" "),
            pem("CERTIFICATE", cert.der()),
            pem("PRIVATE KEY", &key.serialize_der())
        );
        let der = cert.der().clone();
        let (_, not_before, not_after) = leaf_names_and_validity(&der)?;
        let material = Self {
            fingerprint: sha256_fingerprint(&der),
            chain: vec![der],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            self_signed: true,
            names,
            not_before,
            not_after,
        };
        Ok((material, text))
    }

    /// The leaf certificate (tests trust it; the log shows its fingerprint).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        // Both constructors guarantee a non-empty chain.
        &self.chain[0]
    }

    /// The chain and the key as PEM text (what `tls-cert` and `tls-key` hold).
    pub fn to_pem(&self) -> (String, String) {
        let chain: String = self.chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        let key = match &self.key {
            PrivateKeyDer::Pkcs1(k) => pem("RSA PRIVATE KEY", k.secret_pkcs1_der()),
            PrivateKeyDer::Sec1(k) => pem("EC PRIVATE KEY", k.secret_sec1_der()),
            PrivateKeyDer::Pkcs8(k) => pem("PRIVATE KEY", k.secret_pkcs8_der()),
            // A kind rustls may add later: not one our parsers give.
            _ => String::new(),
        };
        (chain, key)
    }

    /// SHA-256 fingerprint of the leaf certificate, `AB:CD:...`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }

    /// The names the leaf certificate covers (its DNS and IP subject alternative
    /// names).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// When the leaf certificate begins to be valid.
    pub fn not_before(&self) -> Option<SystemTime> {
        self.not_before
    }

    /// When the leaf certificate expires.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.not_after
    }

    /// Time left before the leaf certificate expires (zero once it has).
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        self.not_after
            .map(|t| t.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// The chain and its signing key as rustls serves them; fails when the key is not
    /// the certificate's.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        CertifiedKey::from_der(self.chain.clone(), self.key.clone_key(), &provider())
            .map(Arc::new)
            .map_err(|e| {
                TlsError(format!(
                    "tls-cert and tls-key do not form a usable pair: {e}"
                ))
            })
    }

    /// An HTTPS/WSS server config serving this certificate alone (tests; the server
    /// serves a [`CertStore`]).
    pub fn http_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        CertStore::new(self, "test")?.server_config()
    }
}

/// When a certificate's validity begins or ends.
type Validity = Option<SystemTime>;

/// The DNS and IP subject alternative names and the validity of a DER certificate.
fn leaf_names_and_validity(der: &[u8]) -> Result<(Vec<String>, Validity, Validity), TlsError> {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| {
        TlsError(format!(
            "tls-cert's first certificate cannot be parsed ({e}); give the PEM chain, leaf first"
        ))
    })?;
    let tbs = cert.tbs_certificate();
    let mut names = Vec::new();
    if let Ok(Some((_, san))) = tbs.get_extension::<SubjectAltName>() {
        for n in &san.0 {
            match n {
                GeneralName::DnsName(d) => names.push(d.as_str().to_ascii_lowercase()),
                GeneralName::IpAddress(b) => {
                    let b = b.as_bytes();
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    let validity = tbs.validity();
    let time = |t: x509_cert::time::Time| Some(SystemTime::UNIX_EPOCH + t.to_unix_duration());
    Ok((names, time(validity.not_before), time(validity.not_after)))
}

/// The names a self-signed certificate covers: `localhost`, the loopback addresses,
/// the host name, every address of the host's interfaces (not link-local), the
/// specific listening and relay addresses and the public `external-ip` addresses.
pub fn self_signed_names(config: &Config) -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    if let Some(host) = host_name() {
        names.push(host);
    }
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ];
    ips.extend(config.external_ips.iter().map(|e| e.public));
    ips.extend(config.http_ips.iter().copied());
    ips.extend(config.listening_ips.iter().copied());
    ips.extend(config.relay_ips.iter().copied());
    if let Ok(ifaces) = if_addrs::get_if_addrs() {
        ips.extend(ifaces.into_iter().map(|i| i.ip()));
    }
    for ip in ips.into_iter().filter(|ip| crate::config::addressable(*ip)) {
        let s = ip.to_string();
        if !names.contains(&s) {
            names.push(s);
        }
    }
    names
}

/// The host name, if it is a usable DNS name (Linux: the kernel's, no syscall needed).
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name != "localhost"
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then_some(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_round_trip_through_pem() {
        let m = TlsMaterial::self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(m.is_self_signed());
        assert_eq!(m.fingerprint().len(), 32 * 3 - 1);
        m.http_config().unwrap();
        // The same pair as PEM files.
        let cert_pem = pem("CERTIFICATE", m.certificate());
        let PrivateKeyDer::Pkcs8(k) = &m.key else {
            panic!("rcgen makes PKCS#8 keys")
        };
        let key_pem = pem("PRIVATE KEY", k.secret_pkcs8_der());
        let again = TlsMaterial::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
        assert_eq!(again.fingerprint(), m.fingerprint());
        assert!(!again.is_self_signed());
    }

    #[test]
    fn mismatched_or_missing_pem_is_refused() {
        let a = TlsMaterial::self_signed(vec!["localhost".into()]).unwrap();
        let b = TlsMaterial::self_signed(vec!["localhost".into()]).unwrap();
        let PrivateKeyDer::Pkcs8(kb) = &b.key else {
            panic!()
        };
        let cert_a = pem("CERTIFICATE", a.certificate());
        let key_b = pem("PRIVATE KEY", kb.secret_pkcs8_der());
        let e = TlsMaterial::from_pem(cert_a.as_bytes(), key_b.as_bytes()).unwrap_err();
        assert!(e.0.contains("pair"), "{e}");
        let e = TlsMaterial::from_pem(b"", key_b.as_bytes()).unwrap_err();
        assert!(e.0.contains("no CERTIFICATE"), "{e}");
        let e = TlsMaterial::from_pem(cert_a.as_bytes(), b"junk").unwrap_err();
        assert!(e.0.contains("tls-key"), "{e}");
        let e = TlsMaterial::from_pem_files(Path::new("/nonexistent/c.pem"), Path::new("/x"))
            .unwrap_err();
        assert!(e.0.contains("tls-cert /nonexistent/c.pem"), "{e}");
    }
}

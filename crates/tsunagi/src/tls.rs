//! TLS for HTTPS/WSS on the HTTP port and for TURN over TLS (`turns:`): a certificate
//! chain and key from PEM files (`tls-cert`, `tls-key`), or a self-signed certificate
//! made at start (`tls-self-signed`) for testing on a LAN.
//!
//! rustls with the *aws-lc-rs* provider (the crypto of the SFU's DTLS too), named
//! explicitly in every config so that no other crate's choice of a process-wide default
//! provider can change ours.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Largest PEM file read (a long chain is a few tens of KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The kept self-signed certificate and its key, in `data-dir`.
pub const SELF_SIGNED_FILE: &str = "self-signed.pem";

/// The first line of [`SELF_SIGNED_FILE`], before the names it covers.
const NAMES_LINE: &str = "# tsunagi self-signed certificate for: ";

/// What became of a self-signed certificate ([`TlsMaterial::self_signed_kept`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// The one in this file covers every name: used again.
    Reused(std::path::PathBuf),
    /// None was kept: a new one, written to this file.
    Written(std::path::PathBuf),
    /// The one in this file could not serve (why): a new one replaced it.
    Replaced(std::path::PathBuf, String),
    /// A new one for this run only (why).
    NotKept(String),
}

/// `der` as a PEM block (RFC 7468: base64 in lines of 64).
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads `path` whole, refusing files over [`MAX_PEM_BYTES`].
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut text = String::new();
    f.take(MAX_PEM_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_PEM_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than a certificate file can be",
        ));
    }
    Ok(text)
}

/// Writes `bytes` to `path` in `dir` (made if missing, only its owner may enter)
/// through a file only its owner may read, renamed into place: a reader sees the old
/// file or the new one whole, never a mix of two writers'.
fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)?;
    let tmp = dir.join(format!(".{SELF_SIGNED_FILE}.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let written = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

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
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("chain_len", &self.chain.len())
            .field("fingerprint", &self.fingerprint)
            .field("self_signed", &self.self_signed)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
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

fn read_pem(path: &Path, option: &str) -> Result<Vec<u8>, TlsError> {
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
        let material = Self {
            fingerprint: sha256_fingerprint(leaf),
            chain,
            key,
            self_signed: false,
            names: Vec::new(),
        };
        // Builds a config once to check the pair: a key that does not match the
        // certificate is refused here, at start, not at the first handshake.
        material.server_config(Vec::new())?;
        Ok(material)
    }

    /// A self-signed certificate for `names` (DNS names or IP addresses; IP strings
    /// become IP address SANs), with a new ECDSA P-256 key.
    pub fn self_signed(names: Vec<String>) -> Result<Self, TlsError> {
        Self::generate(names).map(|(m, _)| m)
    }

    /// A new self-signed certificate and its file text: a line naming what it covers,
    /// the certificate and the key, as PEM.
    fn generate(names: Vec<String>) -> Result<(Self, String), TlsError> {
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
        let material = Self {
            fingerprint: sha256_fingerprint(&der),
            chain: vec![der],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            self_signed: true,
            names,
        };
        Ok((material, text))
    }

    /// The self-signed certificate kept in `dir` ([`SELF_SIGNED_FILE`]) when it covers
    /// every one of `names`, so that a browser that accepted it once keeps accepting it
    /// across restarts; else a new one for `names`, written there (the file only its
    /// owner may read: it holds the key). Keeping is best effort: when `dir` is `None`
    /// or cannot be written, the new certificate serves this run and [`Kept::NotKept`]
    /// says why.
    pub fn self_signed_kept(
        dir: Option<&Path>,
        names: Vec<String>,
    ) -> Result<(Self, Kept), TlsError> {
        let Some(dir) = dir else {
            let m = Self::self_signed(names)?;
            return Ok((
                m,
                Kept::NotKept("no data-dir (no home directory); set data-dir".into()),
            ));
        };
        let path = dir.join(SELF_SIGNED_FILE);
        let mut stale = None;
        match read_bounded(&path) {
            Ok(text) => match Self::from_kept(&text) {
                Ok(m) if names.iter().all(|n| m.names.contains(n)) => {
                    return Ok((m, Kept::Reused(path)));
                }
                Ok(m) => {
                    let missing: Vec<&str> = names
                        .iter()
                        .filter(|n| !m.names.contains(n))
                        .map(String::as_str)
                        .collect();
                    stale = Some(format!("it does not cover {}", missing.join(", ")));
                }
                Err(e) => stale = Some(e.0),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => stale = Some(format!("cannot read it: {e}")),
        }
        let (m, text) = Self::generate(names)?;
        let kept = match write_private(dir, &path, text.as_bytes()) {
            Ok(()) => match stale {
                Some(why) => Kept::Replaced(path, why),
                None => Kept::Written(path),
            },
            Err(e) => Kept::NotKept(format!("cannot write {}: {e}", path.display())),
        };
        Ok((m, kept))
    }

    /// Parses a file written by [`TlsMaterial::self_signed_kept`].
    fn from_kept(text: &str) -> Result<Self, TlsError> {
        let names = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix(NAMES_LINE))
            .ok_or_else(|| TlsError("it is not a certificate file of tsunagi's".into()))?;
        let names: Vec<String> = names.split_whitespace().map(str::to_owned).collect();
        let mut m = Self::from_pem(text.as_bytes(), text.as_bytes())?;
        m.self_signed = true;
        m.names = names;
        Ok(m)
    }

    /// The leaf certificate (tests trust it; the log shows its fingerprint).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        // Both constructors guarantee a non-empty chain.
        &self.chain[0]
    }

    /// SHA-256 fingerprint of the leaf certificate, `AB:CD:...`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }

    /// Subject alternative names of a self-signed certificate (empty otherwise).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn server_config(&self, alpn: Vec<Vec<u8>>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| {
                TlsError(format!(
                    "tls-cert and tls-key do not form a usable pair: {e}"
                ))
            })?;
        config.alpn_protocols = alpn;
        Ok(Arc::new(config))
    }

    /// The HTTPS/WSS server config. ALPN offers HTTP/1.1 only: WebSockets upgrade over
    /// HTTP/1.1, and a browser that offers h2 falls back to it.
    pub fn http_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.server_config(vec![b"http/1.1".to_vec()])
    }

    /// The TURN-over-TLS server config. No ALPN list: RFC 7443's `stun.turn` is
    /// optional, and with an empty list rustls accepts clients that offer any or none.
    pub fn turn_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.server_config(Vec::new())
    }
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
        m.turn_config().unwrap();
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

    /// A fresh directory under the system's temporary directory.
    fn scratch(test: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tsunagi-tls-{test}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Written at the first start (the file only its owner reads), used again at the
    /// next with the same names or fewer; replaced when a name is missing.
    #[test]
    fn a_kept_certificate_is_used_again_until_a_name_is_missing() {
        let dir = scratch("kept").join("state");
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (a, kept) = TlsMaterial::self_signed_kept(Some(&dir), names.clone()).unwrap();
        let file = dir.join(SELF_SIGNED_FILE);
        assert_eq!(kept, Kept::Written(file.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        let (b, kept) = TlsMaterial::self_signed_kept(Some(&dir), names.clone()).unwrap();
        assert_eq!(kept, Kept::Reused(file.clone()));
        assert_eq!(b.fingerprint(), a.fingerprint());
        assert!(b.is_self_signed());
        assert_eq!(b.names(), a.names());
        b.http_config().unwrap();
        let (c, kept) =
            TlsMaterial::self_signed_kept(Some(&dir), vec!["localhost".to_owned()]).unwrap();
        assert_eq!(kept, Kept::Reused(file.clone()));
        assert_eq!(c.fingerprint(), a.fingerprint());
        let mut more = names.clone();
        more.push("198.51.100.7".to_owned());
        let (d, kept) = TlsMaterial::self_signed_kept(Some(&dir), more.clone()).unwrap();
        assert!(
            matches!(&kept, Kept::Replaced(f, why) if *f == file && why.contains("198.51.100.7")),
            "{kept:?}"
        );
        assert_ne!(d.fingerprint(), a.fingerprint());
        let (e, _) = TlsMaterial::self_signed_kept(Some(&dir), more).unwrap();
        assert_eq!(e.fingerprint(), d.fingerprint());
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    /// A damaged or foreign file is replaced, an unwritable place or no directory
    /// leaves a certificate for this run: never an error, never a panic.
    #[test]
    fn a_bad_file_or_place_still_gives_a_certificate() {
        let root = scratch("bad");
        std::fs::create_dir_all(&root).unwrap();
        let file = root.join(SELF_SIGNED_FILE);
        let names = vec!["localhost".to_owned()];
        for junk in [
            &b""[..],
            b"# tsunagi self-signed certificate for: localhost\n-----BEGIN CERTIFICATE-----\nAAAA\n",
            b"-----BEGIN CERTIFICATE-----\n",
            &[0xff, 0xfe, 0x00][..],
        ] {
            std::fs::write(&file, junk).unwrap();
            let (m, kept) = TlsMaterial::self_signed_kept(Some(&root), names.clone()).unwrap();
            assert!(matches!(kept, Kept::Replaced(..)), "{kept:?}");
            m.http_config().unwrap();
            let (again, kept) = TlsMaterial::self_signed_kept(Some(&root), names.clone()).unwrap();
            assert_eq!(kept, Kept::Reused(file.clone()));
            assert_eq!(again.fingerprint(), m.fingerprint());
        }
        // A file where the directory should be.
        let blocked = root.join("blocked");
        std::fs::write(&blocked, b"x").unwrap();
        let (m, kept) =
            TlsMaterial::self_signed_kept(Some(&blocked.join("state")), names.clone()).unwrap();
        assert!(
            matches!(kept, Kept::NotKept(ref why) if why.contains("cannot write")),
            "{kept:?}"
        );
        m.http_config().unwrap();
        let (_, kept) = TlsMaterial::self_signed_kept(None, names).unwrap();
        assert!(
            matches!(kept, Kept::NotKept(ref why) if why.contains("data-dir")),
            "{kept:?}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}

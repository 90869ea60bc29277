//! Certificates from an ACME CA, end to end: the binary against Pebble (Let's Encrypt's
//! test CA, Debian package `pebble`), the way a user runs it with `acme-domain`.
//!
//! Each test runs in a network namespace of its own with only loopback (it starts
//! itself again under `unshare --net`), holding tsunagi, Pebble and a small DNS server
//! that answers every name under `tsunagi.test` with 127.0.0.1; Pebble resolves the
//! names through it (`-dnsserver`) and validates by connecting to tsunagi's port.
//! Pebble's HTTPS certificate is one the test makes (`acme-ca-root`); the root of
//! the certificates it issues comes from its management API and is trusted only by the
//! test's TLS client, which asks tsunagi for the name by SNI.
//!
//! Needs root (or unprivileged user namespaces) and `pebble` on PATH: scripts/test
//! installs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use process::{free_port, get_json, keep_alive_get as get, Process};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;

const DOMAIN: &str = "turn.tsunagi.test";
const SECOND_DOMAIN: &str = "media.tsunagi.test";
/// Names under this suffix resolve to 127.0.0.1 for Pebble.
const SUFFIX: &str = ".tsunagi.test";

// --- The test's own network namespace.

const IN_NETNS: &str = "ACME_TEST_IN_NETNS";

/// `true` inside the test's own network namespace: go on with the test. Outside, runs
/// this test again inside a new one (loopback only, up), checks that it passed, and
/// returns `false`.
fn in_own_netns(test: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        return true;
    }
    let root = uid_is_root();
    let mut cmd = Command::new("unshare");
    if !root {
        cmd.args(["--user", "--map-root-user"]);
    }
    let status = cmd
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
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

fn uid_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

// --- A DNS server for Pebble: A records of 127.0.0.1 for names under SUFFIX.

struct Dns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Dns {
    fn start() -> Dns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(answer) = dns_answer(&buf[..n]) {
                    let _ = sock.send_to(&answer, from);
                }
            }
        });
        Dns {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The answer to a DNS query (RFC 1035 §4.1): for a name under [`SUFFIX`], an A record
/// of 127.0.0.1 (other types: no records); any other name does not exist.
fn dns_answer(q: &[u8]) -> Option<Vec<u8>> {
    let flags = u16::from_be_bytes([*q.get(2)?, *q.get(3)?]);
    let questions = u16::from_be_bytes([*q.get(4)?, *q.get(5)?]);
    if flags & 0x8000 != 0 || questions != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = q.get(12..i + 4)?;
    let name = labels.join(".");
    let ours = name.ends_with(SUFFIX);
    let answers: u16 = (ours && qtype == 1).into();
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&q[0..2]);
    // QR, AA, the query's RD, RA; NXDOMAIN for names not ours.
    let rd = flags & 0x0100;
    let rcode = if ours { 0 } else { 3 };
    r.extend_from_slice(&(0x8480 | rd | rcode).to_be_bytes());
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&answers.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(question);
    if answers == 1 {
        // The name by pointer to the question, A, IN, TTL 5 s, 127.0.0.1.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1]);
    }
    Some(r)
}

// --- Pebble.

struct Pebble {
    child: Child,
    /// `https://127.0.0.1:PORT/dir`.
    directory: String,
    management: String,
    /// The certificate of Pebble's own HTTPS (given to tsunagi as `acme-ca-root`).
    https_cert: PathBuf,
    log: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pebble {
    /// Pebble validating TLS-ALPN-01 on `tls_port` and HTTP-01 on `http_port` of the
    /// names' address, issuing certificates valid for `validity` seconds.
    fn start(dir: &Path, dns: &Dns, tls_port: u16, http_port: u16, validity: u64) -> Pebble {
        assert!(
            Command::new("pebble")
                .arg("-h")
                .stderr(Stdio::null())
                .status()
                .is_ok(),
            "pebble is not installed: apt-get install pebble (scripts/test installs it)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let (cert, key) =
            tsunagi::tls::TlsMaterial::self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap()
                .to_pem();
        let https_cert = dir.join("pebble-cert.pem");
        let https_key = dir.join("pebble-key.pem");
        std::fs::write(&https_cert, cert).unwrap();
        std::fs::write(&https_key, key).unwrap();
        let listen = free_port();
        let management = free_port();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": https_cert,
            "privateKey": https_key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        let config_path = dir.join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = dir.join("pebble.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns.addr.to_string()])
            // No random sleeps before validations; every nonce good and no reuse of
            // authorizations, so that every order runs its challenges.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut pebble = Pebble {
            child,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: format!("127.0.0.1:{management}"),
            https_cert,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", listen)).is_err()
            || TcpStream::connect(("127.0.0.1", management)).is_err()
        {
            if let Some(status) = pebble.child.try_wait().unwrap() {
                panic!("pebble exited ({status}): {}", pebble.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "pebble not listening within 20 s: {}",
                pebble.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pebble
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The root of the certificates Pebble issues (made anew at each Pebble start),
    /// from its management API.
    fn issuing_root(&self) -> String {
        let cert = std::fs::read_to_string(&self.https_cert).unwrap();
        let mut s = tls(&cert, "localhost", &self.management).expect("pebble's management API");
        write!(
            s,
            "GET /roots/0 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.management
        )
        .unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let raw = String::from_utf8(raw).unwrap();
        let body = raw.split_once("\r\n\r\n").unwrap().1;
        assert!(body.contains("BEGIN CERTIFICATE"), "{raw}");
        body.to_owned()
    }
}

// --- A TLS client that trusts one root.

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` asking for `name`, trusting only `root_pem`; `None` when
/// the handshake fails (the certificate served is not one of that root's).
fn tls(root_pem: &str, name: &str, addr: &str) -> Option<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn = rustls::ClientConnection::new(Arc::new(config), name.to_owned().try_into().unwrap())
        .unwrap();
    let tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).ok()?;
    }
    Some(s)
}

/// The leaf certificate a connection got: SHA-256 fingerprint, issuer, names.
fn leaf(s: &Tls) -> (String, String, Vec<String>) {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let der = &s.conn.peer_certificates().unwrap()[0];
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    let tbs = cert.tbs_certificate();
    let names = match tbs.get_extension::<SubjectAltName>().unwrap() {
        Some((_, san)) => san
            .0
            .iter()
            .filter_map(|n| match n {
                GeneralName::DnsName(d) => Some(d.as_str().to_owned()),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    (
        tsunagi::tls::sha256_fingerprint(der),
        tbs.issuer().to_string(),
        names,
    )
}

/// Polls `f` every 100 ms until it gives a value, for at most `secs` seconds.
fn until<T>(
    secs: u64,
    what: &str,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "waited {secs} s for {what}:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn health(p: &Process) -> Value {
    get_json(&p.http, "/healthz").unwrap().1
}

fn scratch(test: &str) -> PathBuf {
    let d =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// TLS-ALPN-01 on the one TLS port: the certificate is ordered at the first start and
/// served for the name, kept (0600) and served again after a restart without a new
/// order, and renewed when a third of its lifetime remains, without a restart, while a
/// connection opened before goes on.
#[test]
fn tls_alpn_01_certificate_is_served_kept_and_renewed() {
    if !in_own_netns("tls_alpn_01_certificate_is_served_kept_and_renewed") {
        return;
    }
    let dir = scratch("acme-alpn");
    let data = dir.join("data");
    let dns = Dns::start();
    let port = free_port();
    // 30-second certificates: renewal 20 s after issue.
    let pebble = Pebble::start(&dir.join("pebble"), &dns, port, free_port(), 30);
    let port_s = port.to_string();
    let args = [
        "--acme-domain",
        DOMAIN,
        "--acme-email",
        "admin@tsunagi.test",
        "--acme-directory",
        &pebble.directory,
        "--acme-ca-root",
        pebble.https_cert.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--tls-listening-port",
        &port_s,
    ];
    let p = Process::start_on("acme-alpn-1", port, &args, &[]);
    let root = pebble.issuing_root();
    let context =
        |p: &Process| format!("tsunagi:\n{}\npebble:\n{}", p.log_text(), pebble.log_text());

    let s = until(
        30,
        "the ACME certificate",
        || context(&p),
        || tls(&root, DOMAIN, &p.http),
    );
    let (first, issuer, names) = leaf(&s);
    assert!(issuer.contains("Pebble Intermediate CA"), "{issuer}");
    assert_eq!(names, [DOMAIN]);
    let h = health(&p);
    assert_eq!(h["certificate"]["source"], "acme", "{h}");
    assert_eq!(h["certificate"]["sha256"], first.as_str(), "{h}");
    assert!(h["certificate"].get("problem").is_none(), "{h}");
    let log = p.log_text();
    assert!(log.contains("serves while one is ordered"), "{log}");
    assert!(
        log.contains("certificate from the ACME CA installed"),
        "{log}"
    );
    #[cfg(unix)]
    {
        let acme = data.join("acme");
        assert_eq!(mode(&acme) & 0o077, 0);
        assert_eq!(mode(&acme.join("certificate.pem")), 0o600);
        let accounts: Vec<PathBuf> = std::fs::read_dir(&acme)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("account-")
            })
            .collect();
        assert_eq!(accounts.len(), 1, "{accounts:?}");
        assert_eq!(mode(&accounts[0]), 0o600);
    }
    drop(s);
    drop(p);

    // A restart serves the kept certificate at once, and orders nothing.
    let mut p = Process::start_on("acme-alpn-2", port, &args, &[]);
    let (_, h) = p.first_health();
    assert_eq!(h["certificate"]["source"], "acme", "{h}");
    assert_eq!(h["certificate"]["sha256"], first.as_str(), "{h}");
    let mut open = tls(&root, DOMAIN, &p.http).expect("the kept certificate");
    assert_eq!(leaf(&open).0, first);
    assert_eq!(get(&mut open, DOMAIN), 200);
    let log = p.log_text();
    assert!(log.contains("kept from an earlier run"), "{log}");
    assert!(!log.contains("ordering a certificate"), "{log}");

    // Renewal, without a restart: new connections get the new certificate, the open
    // one goes on (kept busy: an idle HTTP connection ends after 15 s).
    let renewed = until(
        40,
        "the renewed certificate",
        || context(&p),
        || {
            assert_eq!(get(&mut open, DOMAIN), 200, "the open connection dropped");
            let s = tls(&root, DOMAIN, &p.http)?;
            let fp = leaf(&s).0;
            (fp != first).then_some(fp)
        },
    );
    assert_eq!(get(&mut open, DOMAIN), 200, "the open connection dropped");
    assert_eq!(leaf(&open).0, first);
    let h = health(&p);
    assert_eq!(h["certificate"]["source"], "acme", "{h}");
    assert_eq!(h["certificate"]["sha256"], renewed.as_str(), "{h}");
    assert!(h["certificate"]["replaced"].as_u64().unwrap() >= 1, "{h}");
    assert!(p.child.try_wait().unwrap().is_none());
    let log = p.log_text();
    assert!(log.contains("renewal due"), "{log}");
    // The renewed certificate is the one kept.
    let text = std::fs::read_to_string(data.join("acme/certificate.pem")).unwrap();
    let kept = tsunagi::tls::TlsMaterial::from_pem(text.as_bytes(), text.as_bytes()).unwrap();
    assert_eq!(kept.fingerprint(), renewed);
    drop(open);
    drop(p);
    drop(pebble);
    let _ = std::fs::remove_dir_all(&dir);
}

/// HTTP-01 for two names on tsunagi's plain-HTTP front: one certificate covers both,
/// served for each name.
#[test]
fn http_01_certificate_covers_every_name() {
    if !in_own_netns("http_01_certificate_covers_every_name") {
        return;
    }
    let dir = scratch("acme-http");
    let dns = Dns::start();
    let port = free_port();
    let pebble = Pebble::start(&dir.join("pebble"), &dns, free_port(), port, 3600);
    let tls_port = free_port().to_string();
    let domains = format!("{DOMAIN},{SECOND_DOMAIN}");
    let data = dir.join("data");
    let args = [
        "--acme-domain",
        &domains,
        "--acme-challenge",
        "http-01",
        "--acme-directory",
        &pebble.directory,
        "--acme-ca-root",
        pebble.https_cert.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--tls-listening-port",
        &tls_port,
    ];
    let p = Process::start_on("acme-http", port, &args, &[]);
    let root = pebble.issuing_root();
    let context = || format!("tsunagi:\n{}\npebble:\n{}", p.log_text(), pebble.log_text());
    let s = until(30, "the ACME certificate", context, || {
        tls(&root, SECOND_DOMAIN, &p.http)
    });
    let (fp, issuer, mut names) = leaf(&s);
    assert!(issuer.contains("Pebble Intermediate CA"), "{issuer}");
    names.sort();
    assert_eq!(names, [SECOND_DOMAIN, DOMAIN]);
    let s = tls(&root, DOMAIN, &p.http).unwrap();
    assert_eq!(leaf(&s).0, fp);
    // The TURN-over-TLS port serves it too.
    let s = tls(&root, DOMAIN, &format!("127.0.0.1:{tls_port}")).unwrap();
    assert_eq!(leaf(&s).0, fp);
    let h = health(&p);
    assert_eq!(h["certificate"]["source"], "acme", "{h}");
    // Nothing is left pending: the challenge path answers 404 again.
    let (status, _) = get_status(&p.http, "/.well-known/acme-challenge/anything");
    assert_eq!(status, 404);
    drop(p);
    drop(pebble);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET path` over plain HTTP: status and body.
fn get_status(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, raw.split_once("\r\n\r\n").unwrap().1.to_owned())
}

/// The CA does not answer: tsunagi serves its self-signed certificate, and the log and
/// `/healthz` say what failed, what to check and when it tries again.
#[test]
fn an_unreachable_ca_leaves_the_self_signed_certificate_and_says_why() {
    if !in_own_netns("an_unreachable_ca_leaves_the_self_signed_certificate_and_says_why") {
        return;
    }
    let dir = scratch("acme-unreachable");
    let (cert, _) = tsunagi::tls::TlsMaterial::self_signed(vec!["localhost".into()])
        .unwrap()
        .to_pem();
    let root = dir.join("root.pem");
    std::fs::write(&root, cert).unwrap();
    let directory = format!("https://127.0.0.1:{}/dir", free_port());
    let data = dir.join("data");
    let args = [
        "--acme-domain",
        DOMAIN,
        "--acme-directory",
        &directory,
        "--acme-ca-root",
        root.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut p = Process::start("acme-unreachable", &args, &[]);
    let (status, _) = p.first_health();
    assert_eq!(status, 200);
    let h = until(
        20,
        "the problem on /healthz",
        || p.log_text(),
        || {
            let h = health(&p);
            h["certificate"]["problem"].is_string().then_some(h)
        },
    );
    assert_eq!(h["certificate"]["source"], "self-signed", "{h}");
    let problem = h["certificate"]["problem"].as_str().unwrap();
    for part in [
        DOMAIN,
        "cannot reach the ACME CA",
        "connection refused",
        "acme-directory",
        "meanwhile the self-signed certificate serves",
        "next attempt in 60 s",
        "SIGHUP",
    ] {
        assert!(
            problem.to_lowercase().contains(&part.to_lowercase()),
            "{part}: {problem}"
        );
    }
    let log = p.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("ACME certificate not obtained")
            && l.contains(DOMAIN)),
        "{log}"
    );
    // One attempt, not a loop.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(p.log_text().matches("ordering a certificate").count(), 1);
    assert!(p.child.try_wait().unwrap().is_none());
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CA cannot connect to the name's TLS port: the validation fails, tsunagi serves
/// its self-signed certificate, and says the CA's reason and what to check.
#[test]
fn a_failed_validation_leaves_the_self_signed_certificate_and_says_why() {
    if !in_own_netns("a_failed_validation_leaves_the_self_signed_certificate_and_says_why") {
        return;
    }
    let dir = scratch("acme-invalid");
    let dns = Dns::start();
    // Pebble validates on a port where nothing listens.
    let pebble = Pebble::start(&dir.join("pebble"), &dns, free_port(), free_port(), 3600);
    let data = dir.join("data");
    let args = [
        "--acme-domain",
        DOMAIN,
        "--acme-directory",
        &pebble.directory,
        "--acme-ca-root",
        pebble.https_cert.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let p = Process::start("acme-invalid", &args, &[]);
    let context = || format!("tsunagi:\n{}\npebble:\n{}", p.log_text(), pebble.log_text());
    let h = until(30, "the problem on /healthz", context, || {
        let h = get_json(&p.http, "/healthz")?.1;
        h["certificate"]["problem"].is_string().then_some(h)
    });
    assert_eq!(h["certificate"]["source"], "self-signed", "{h}");
    let problem = h["certificate"]["problem"].as_str().unwrap();
    let validate = format!("the CA could not validate {DOMAIN} by TLS-ALPN-01");
    for part in [
        validate.as_str(),
        // The CA's own reason.
        "Failed to connect to 127.0.0.1:",
        "TCP port 443",
        "http-port 443",
        "acme-challenge http-01",
        "next attempt in 60 s",
    ] {
        assert!(problem.contains(part), "{part}: {problem}");
    }
    // The root of Pebble's certificates does not verify what tsunagi serves.
    let root = pebble.issuing_root();
    assert!(tls(&root, DOMAIN, &p.http).is_none());
    drop(p);
    drop(pebble);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A certificate that is due for renewal as soon as it arrives (here a CA that issues
/// one-second certificates; on a real server, a clock far from the CA's) is not ordered
/// again and again: tsunagi says to check the clock and waits an hour.
#[test]
fn a_certificate_due_at_once_is_not_ordered_in_a_loop() {
    if !in_own_netns("a_certificate_due_at_once_is_not_ordered_in_a_loop") {
        return;
    }
    let dir = scratch("acme-due");
    let dns = Dns::start();
    let port = free_port();
    let pebble = Pebble::start(&dir.join("pebble"), &dns, port, free_port(), 1);
    let data = dir.join("data");
    let port_s = port.to_string();
    let args = [
        "--acme-domain",
        DOMAIN,
        "--acme-directory",
        &pebble.directory,
        "--acme-ca-root",
        pebble.https_cert.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--tls-listening-port",
        &port_s,
    ];
    let p = Process::start_on("acme-due", port, &args, &[]);
    let context = || format!("tsunagi:\n{}\npebble:\n{}", p.log_text(), pebble.log_text());
    let h = until(30, "the problem on /healthz", context, || {
        let h = get_json(&p.http, "/healthz")?.1;
        h["certificate"]["problem"].is_string().then_some(h)
    });
    assert_eq!(h["certificate"]["source"], "acme", "{h}");
    let problem = h["certificate"]["problem"].as_str().unwrap();
    for part in [
        "already due for renewal by this host's clock",
        "check the system clock",
        "orders again in 60 min",
    ] {
        assert!(problem.contains(part), "{part}: {problem}");
    }
    std::thread::sleep(Duration::from_secs(3));
    let log = p.log_text();
    assert_eq!(log.matches("ordering a certificate").count(), 1, "{log}");
    drop(p);
    drop(pebble);
    let _ = std::fs::remove_dir_all(&dir);
}

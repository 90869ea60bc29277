//! A certificate from files is replaced without a restart: the binary serves a new
//! pair to new connections within seconds of the files changing, keeps the
//! connections it has open, keeps serving the old pair (and says why on `/healthz`)
//! while the files do not form a pair, reloads on SIGHUP, and is not ended by it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use process::{get_json, keep_alive_get as get, Process};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A new self-signed pair for `localhost`: (certificate PEM, key PEM).
fn pair() -> (String, String) {
    tsunagi::tls::TlsMaterial::self_signed(vec!["localhost".to_owned()])
        .unwrap()
        .to_pem()
}

/// Writes `text` to `path` the way renewal tools do: a new file renamed into place.
fn put(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A TLS client that trusts only `cert_pem`.
fn client(
    cert_pem: &str,
    addr: &str,
) -> Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).ok()?;
    }
    Some(s)
}

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "waited 15 s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_changed_pem_pair_serves_new_connections_and_keeps_open_ones() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    let a = pair();
    put(&cert, &a.0);
    put(&key, &a.1);
    let mut p = Process::start(
        "tls-reload",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    let (status, health) = p.first_health();
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["certificate"]["source"], "files", "{health}");
    assert_eq!(health["certificate"]["replaced"], 0, "{health}");
    let addr = p.http.clone();
    let mut open = client(&a.0, &addr).expect("served the first pair");
    assert_eq!(get(&mut open, &addr), 200);

    // Renewed: new connections get the new pair; the open one goes on.
    let b = pair();
    put(&key, &b.1);
    put(&cert, &b.0);
    until("the new certificate", || client(&b.0, &addr));
    assert!(client(&a.0, &addr).is_none(), "the old pair still served");
    assert_eq!(get(&mut open, &addr), 200, "the open connection dropped");
    let (_, health) = get_json(&addr, "/healthz").unwrap();
    assert_eq!(health["certificate"]["replaced"], 1, "{health}");
    assert!(health["certificate"].get("problem").is_none(), "{health}");

    // Half-written (a certificate whose key is not there yet): the old pair serves on,
    // and /healthz says why.
    let c = pair();
    put(&cert, &c.0);
    let health = until("the problem on /healthz", || {
        let (_, h) = get_json(&addr, "/healthz")?;
        h["certificate"]["problem"].is_string().then_some(h)
    });
    let problem = health["certificate"]["problem"].as_str().unwrap();
    assert!(problem.contains("do not form a usable pair"), "{problem}");
    assert!(problem.contains("keeps serving"), "{problem}");
    assert!(client(&b.0, &addr).is_some(), "the last good pair stopped");
    assert!(p.log_text().contains("TLS certificate not reloaded"));

    // The key arrives: served, problem gone.
    put(&key, &c.1);
    until("the completed pair", || client(&c.0, &addr));
    let (_, health) = get_json(&addr, "/healthz").unwrap();
    assert!(health["certificate"].get("problem").is_none(), "{health}");

    // SIGHUP reloads at once, and does not end the process.
    let replaced = health["certificate"]["replaced"].as_u64().unwrap();
    let pid = p.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    until("the reload on SIGHUP", || {
        let (_, h) = get_json(&addr, "/healthz")?;
        (h["certificate"]["replaced"].as_u64()? > replaced).then_some(())
    });
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "SIGHUP ended tsunagi"
    );
    assert!(p.log_text().contains("SIGHUP: reloading"));
    assert_eq!(get(&mut open, &addr), 200);
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

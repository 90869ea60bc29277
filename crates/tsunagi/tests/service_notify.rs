//! Under a `Type=notify` unit, systemd learns from tsunagi when it serves and when it
//! stops: the binary sends `READY=1` to `NOTIFY_SOCKET` once `/healthz` answers, and
//! `STOPPING=1` on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use process::{get_json, Process};

#[test]
fn ready_once_serving_and_stopping_on_sigterm() {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut p = Process::start(
        "service-notify",
        &[],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("READY=1 within 30 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    // Ready means serving: /healthz answers at once.
    let (status, health) = get_json(&p.http, "/healthz").expect("serving when ready");
    assert_eq!(status, 200, "{health}");
    let pid = p.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let n = socket.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg}");
    assert!(p.wait_exit(Duration::from_secs(20)).success());
    let _ = std::fs::remove_file(&path);
}

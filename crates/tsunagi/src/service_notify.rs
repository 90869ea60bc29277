//! Telling a service manager how tsunagi is doing: systemd's notification protocol
//! (`sd_notify(3)`, the `NOTIFY_SOCKET` datagram socket of a `Type=notify` unit).
//! `READY=1` once every listener is bound and serving, `STOPPING=1` when shutdown
//! begins, so that `systemctl start` returns when tsunagi really serves and dependent
//! units start after it. Without `NOTIFY_SOCKET` (not under systemd) nothing is sent.

use tracing::debug;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `NOTIFY_SOCKET`, if set.
/// Best effort: a failure is logged at debug and otherwise ignored (the service
/// manager then sees a timeout, which says more than anything we could do here).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        debug!(error = %e, socket = ?path, "cannot notify the service manager");
    }
}

#[cfg(unix)]
fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    match bytes.split_first() {
        // An abstract socket name ("@name"), Linux only.
        #[cfg(target_os = "linux")]
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some((b'/', _)) => {
            socket.send_to(state.as_bytes(), std::path::Path::new(path))?;
        }
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither a path nor an abstract name",
            ))
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn send(_: &std::ffi::OsStr, _: &str) -> std::io::Result<()> {
    Ok(())
}

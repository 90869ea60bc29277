//! Serving a new certificate without a restart, when it comes from PEM files
//! (`tls-cert`, `tls-key`): they are checked every [`FILE_POLL`] and at once on
//! SIGHUP (`systemctl reload`), and a pair that parses and matches replaces the one
//! in the [`CertStore`] for new connections. A pair that does not (a renewal tool
//! halfway through writing the two files, a wrong path) leaves the previous certificate
//! serving, says why in the log and on `/healthz`, and is tried again at the next
//! change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};
use tsunagi_net::stopped;

use super::{CertStore, TlsMaterial};

/// How often the PEM files are checked for a change.
pub const FILE_POLL: Duration = Duration::from_secs(2);

/// What identifies a version of a file: its size, change time and inode (a renewal
/// tool that replaces the file by rename, or a symlink switched to a new target,
/// changes the inode).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(u64, SystemTime, u64)>);

fn stamp(path: &Path) -> Stamp {
    Stamp(std::fs::metadata(path).ok().map(|m| {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let ino = 0;
        (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH), ino)
    }))
}

/// Reloads `cert` and `key` into `store` when they change or `hup` ticks, until
/// `shutdown`.
pub async fn watch_files(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    mut hup: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = (stamp(&cert), stamp(&key));
    loop {
        let forced = tokio::select! {
            () = tokio::time::sleep(FILE_POLL) => false,
            r = hup.changed() => {
                if r.is_err() {
                    // No more signals (the sender is gone): keep polling.
                    std::future::pending::<()>().await;
                }
                true
            }
            _ = stopped(&mut shutdown) => return,
        };
        let now = (stamp(&cert), stamp(&key));
        if !forced && now == last {
            continue;
        }
        last = now;
        match TlsMaterial::from_pem_files(&cert, &key) {
            Ok(m) if !forced && m.fingerprint() == store.status().sha256 => {
                // Touched, not changed.
                store.set_problem(None);
            }
            Ok(m) => match store.install(&m, "files") {
                Ok(()) => info!(
                    sha256 = %m.fingerprint(),
                    names = %m.names().join(", "),
                    reason = if forced { "SIGHUP" } else { "the files changed" },
                    "TLS certificate reloaded; new connections get it, open ones keep theirs"
                ),
                Err(e) => refused(&store, &e.to_string()),
            },
            Err(e) => refused(&store, &e.to_string()),
        }
    }
}

fn refused(store: &CertStore, why: &str) {
    let problem = format!(
        "{why}; the certificate loaded before keeps serving (tried again when the files change, or on SIGHUP)"
    );
    warn!(problem = %problem, "TLS certificate not reloaded");
    store.set_problem(Some(problem));
}

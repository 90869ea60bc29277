//! The accept loop every TCP listener shares (HTTP, TURN over TCP and TLS, the SFU's
//! ICE-TCP), and the shutdown signal the runtimes' tasks wait on.
//!
//! A connection takes a permit *before* it is accepted: at the limit, new connections
//! wait in the kernel's backlog instead of being accepted and dropped, and nothing is
//! allocated for them. An accept error (EMFILE and friends) backs off instead of
//! spinning. The loop ends at shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// How long the loop waits after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Waits until `shutdown` is set (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Accepts connections on `listener` while a permit of `limit` is free, handing each
/// one with its permit (held for the life of the connection) to `serve`, until
/// `shutdown`. `what` names the listener in the log.
pub async fn accept_limited(
    listener: TcpListener,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let local = listener.local_addr().ok();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = stopped(&mut shutdown) => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = stopped(&mut shutdown) => return,
        };
        match accepted {
            Ok((stream, remote)) => serve(stream, remote, permit),
            Err(e) => {
                warn!(local = ?local, error = %e, "{what} accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At the limit the next connection is not accepted (it waits in the backlog) until
    /// a permit comes back; shutdown ends the loop.
    #[tokio::test]
    async fn the_permit_comes_before_the_accept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limit = Arc::new(Semaphore::new(1));
        let (stop, rx) = watch::channel(false);
        let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(accept_limited(
            listener,
            limit,
            rx,
            "test",
            move |s, _, p| {
                let _ = tx.send((s, p));
            },
        ));
        let _a = TcpStream::connect(addr).await.unwrap();
        let (first, permit) = accepted.recv().await.unwrap();
        // The second connects (kernel backlog) but is not accepted while the permit is held.
        let _b = TcpStream::connect(addr).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), accepted.recv()).await;
        assert!(waited.is_err(), "accepted past the limit");
        drop((first, permit));
        let (second, _p) = tokio::time::timeout(Duration::from_secs(5), accepted.recv())
            .await
            .expect("accepted once the permit came back")
            .unwrap();
        drop(second);
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("shutdown ends the loop")
            .unwrap();
    }
}

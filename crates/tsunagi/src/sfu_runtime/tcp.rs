//! ICE-TCP for the SFU: passive candidates (RFC 6544), each packet framed by a 16-bit
//! big-endian length (RFC 4571). For clients whose network blocks UDP.
//!
//! A reader task per connection queues whole frames for the core (a full queue drops
//! the frame, as UDP would, and counts it); a writer task frames what the core sends. A connection that sends nothing for [`IDLE`] is closed, and a
//! frame must complete within [`FRAME_STALL`] once begun.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tsunagi_net::{accept_limited, CoreSender};
use tsunagi_sfu::Protocol;

use super::{Command, Incoming};

/// The connections' ways into the core.
#[derive(Debug, Clone)]
pub(crate) struct ToCore {
    pub(crate) frames: CoreSender<Incoming>,
    /// Frames dropped because `frames` was full.
    pub(crate) dropped: Arc<AtomicU64>,
    /// Opened and closed connections (with their writers).
    pub(crate) commands: CoreSender<Command>,
}

/// Frames queued for one connection's writer.
const WRITE_QUEUE: usize = 512;
/// A connection silent for this long is closed (ICE consent checks come every few s).
const IDLE: Duration = Duration::from_secs(30);
/// A frame begun must complete within this.
const FRAME_STALL: Duration = Duration::from_secs(10);

/// Accepts ICE-TCP connections while a permit of `max_connections` is free
/// ([`accept_limited`]), until `shutdown`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    advertised: SocketAddr,
    core: ToCore,
    max_connections: usize,
    shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    accept_limited(
        listener,
        permits,
        shutdown,
        "SFU ICE-TCP",
        move |stream, remote, permit| {
            let _ = stream.set_nodelay(true);
            let core = core.clone();
            tokio::spawn(async move {
                connection(stream, remote, advertised, core).await;
                drop(permit);
            });
        },
    )
    .await;
}

async fn connection(stream: TcpStream, remote: SocketAddr, advertised: SocketAddr, core: ToCore) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    if core
        .commands
        .send(Command::Tcp {
            remote,
            writer: Some(tx),
        })
        .await
        .is_err()
    {
        return;
    }
    let write = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let Ok(len) = u16::try_from(frame.len()) else {
                continue;
            };
            let mut buf = Vec::with_capacity(frame.len() + 2);
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&frame);
            if writer.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut len_buf = [0u8; 2];
    loop {
        match tokio::time::timeout(IDLE, reader.read_exact(&mut len_buf)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let len = usize::from(u16::from_be_bytes(len_buf));
        let mut frame = vec![0u8; len];
        match tokio::time::timeout(FRAME_STALL, reader.read_exact(&mut frame)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let item = Incoming {
            proto: Protocol::Tcp,
            source: remote,
            destination: advertised,
            data: frame,
        };
        // A full core queue drops this frame, as UDP would.
        match core.frames.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                core.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    write.abort();
    let _ = core
        .commands
        .send(Command::Tcp {
            remote,
            writer: None,
        })
        .await;
}

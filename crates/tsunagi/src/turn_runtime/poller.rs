//! One epoll instance over every UDP socket of the core: the listeners and the relay
//! sockets.
//!
//! The core reads a ready socket itself and handles each datagram in place, in the
//! receive buffer. Before this a task per socket read it and sent each datagram over a
//! channel to the core: per packet a task wake-up, a copy into a `Bytes`, a channel
//! message and a second wake-up, which with one datagram per relay socket at a time
//! (many allocations, each with a packet now and then) cost as much as the kernel's
//! own work.
//!
//! The epoll file descriptor is itself pollable: tokio watches it ([`AsyncFd`]) and
//! wakes the core when any socket in it is ready. Sockets are registered
//! edge-triggered; a socket whose receive filled every slot may hold more and is kept
//! on the core's list of sockets to read again, so nothing waits for an edge that
//! will not come.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use std::mem::MaybeUninit;

use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::Timespec;
use tokio::io::unix::AsyncFd;

/// Names a registered socket in readiness events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Token(pub usize);

/// Readiness events taken from epoll at a time.
pub(crate) const EVENTS: usize = 64;

/// The core's epoll instance, as tokio watches it.
#[derive(Debug)]
pub(crate) struct Poller {
    /// The epoll descriptor, owned by tokio's registration (closed after it).
    ready: Arc<AsyncFd<OwnedFd>>,
}

/// Adds and removes sockets: a duplicate of the epoll descriptor (the same instance).
#[derive(Debug)]
pub(crate) struct Registry(OwnedFd);

impl Registry {
    /// Registers `socket` for readable, edge-triggered.
    pub(crate) fn register(&self, socket: impl AsFd, token: Token) -> io::Result<()> {
        epoll::add(
            &self.0,
            socket,
            EventData::new_u64(token.0 as u64),
            EventFlags::IN | EventFlags::ET,
        )
        .map_err(io::Error::from)
    }

    /// Removes `socket` (before it is closed).
    pub(crate) fn deregister(&self, socket: impl AsFd) -> io::Result<()> {
        epoll::delete(&self.0, socket).map_err(io::Error::from)
    }
}

impl Poller {
    /// Must be called inside a tokio runtime.
    pub(crate) fn new() -> io::Result<Self> {
        let fd = epoll::create(CreateFlags::CLOEXEC)?;
        // Deprecated because an `AsyncFd` of a type that only borrows its descriptor
        // may outlive it; an `OwnedFd` is closed by the `AsyncFd` itself, after its
        // registration is gone, which is the sound use.
        #[allow(deprecated)]
        let ready = Arc::new(AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?);
        Ok(Self { ready })
    }

    /// A handle to register sockets with.
    pub(crate) fn registry(&self) -> io::Result<Registry> {
        Ok(Registry(self.ready.get_ref().try_clone()?))
    }

    /// What the core awaits: readable when some socket is ready.
    pub(crate) fn ready(&self) -> Arc<AsyncFd<OwnedFd>> {
        self.ready.clone()
    }

    /// The tokens of sockets that became ready, without waiting, appended to `out`.
    /// Returns whether epoll may have more to report (it filled every event slot).
    pub(crate) fn poll_now(&mut self, out: &mut Vec<Token>) -> io::Result<bool> {
        let mut events = [const { MaybeUninit::<epoll::Event>::uninit() }; EVENTS];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let (got, _) = match epoll::wait(self.ready.get_ref(), &mut events, Some(&zero)) {
            Ok(r) => r,
            Err(rustix::io::Errno::INTR) => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        out.extend(got.iter().map(|e| Token(e.data.u64() as usize)));
        Ok(got.len() >= EVENTS)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    /// A datagram on a registered socket makes the epoll descriptor readable in tokio,
    /// and `poll_now` names the socket; an empty poll reports nothing.
    #[tokio::test]
    async fn a_ready_socket_wakes_the_poller_and_is_named() {
        let mut p = Poller::new().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let reg = p.registry().unwrap();
        reg.register(&a, Token(7)).unwrap();
        let mut out = Vec::new();
        assert!(!p.poll_now(&mut out).unwrap());
        assert!(out.is_empty());
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        let ready = p.ready();
        let guard = tokio::time::timeout(Duration::from_secs(5), ready.readable())
            .await
            .unwrap()
            .unwrap();
        drop(guard);
        p.poll_now(&mut out).unwrap();
        assert_eq!(out, vec![Token(7)]);
        // Edge-triggered: reported once until something new arrives.
        out.clear();
        p.poll_now(&mut out).unwrap();
        assert!(out.is_empty());
        reg.deregister(&a).unwrap();
    }
}

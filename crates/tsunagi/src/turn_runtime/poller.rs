//! One epoll instance over every UDP socket of the core (the listeners and the relay
//! sockets), and the core's waker.
//!
//! The core runs on a thread of its own and blocks in `epoll_wait` on this instance
//! alone: when sockets are ready it reads each one itself and handles every datagram
//! in place, in the receive buffer. Before this a tokio task per socket read it and
//! sent each datagram over a channel to a core task: per packet a task wake-up, a copy
//! into a `Bytes`, a channel message and a second wake-up, which with one datagram per
//! relay socket at a time (many allocations, each with a packet now and then) cost as
//! much as the kernel's own work. (An epoll instance nested in tokio's reactor, tried
//! first, took two `epoll_wait` calls and a task poll per wake-up; a thread of its own
//! takes one call.)
//!
//! Sockets are registered edge-triggered; a socket whose receive filled every slot may
//! hold more and is kept on the core's list of sockets to read again, so nothing waits
//! for an edge that will not come. TCP and TLS connections stay tokio tasks: they queue
//! frames for the core and wake it through an eventfd in the same epoll instance
//! ([`CoreWaker`]), only when it sleeps.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags, Timespec};

/// Names a registered socket in readiness events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Token(pub usize);

/// The token of the core's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// Readiness events taken from epoll at a time.
pub(crate) const EVENTS: usize = 64;

/// The core's epoll instance.
#[derive(Debug)]
pub(crate) struct Poller {
    epoll: OwnedFd,
    waker: CoreWaker,
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

/// Wakes the core from `epoll_wait` when it sleeps: an eventfd in its epoll instance,
/// written only if the core said it is about to sleep ([`CoreWaker::sleeping`]), so a
/// busy core costs its senders nothing.
#[derive(Debug, Clone)]
pub(crate) struct CoreWaker(Arc<WakerInner>);

#[derive(Debug)]
struct WakerInner {
    fd: OwnedFd,
    asleep: AtomicBool,
}

impl CoreWaker {
    /// Wakes the core if it sleeps (or is about to). Call after queueing its input.
    pub(crate) fn wake(&self) {
        if self.0.asleep.swap(false, Ordering::SeqCst) {
            self.force();
        }
    }

    /// Wakes the core whatever it does (shutdown).
    pub(crate) fn force(&self) {
        // A full counter (2^64 - 2 wake-ups unread) would fail with EAGAIN: it is
        // readable then anyway.
        let _ = rustix::io::write(&self.0.fd, &1u64.to_ne_bytes());
    }

    /// The core is about to sleep: from now on senders wake it. The core must look at
    /// its queue again after this and before it sleeps.
    pub(crate) fn sleeping(&self) {
        self.0.asleep.store(true, Ordering::SeqCst);
    }

    /// The core is awake again.
    pub(crate) fn awake(&self) {
        self.0.asleep.store(false, Ordering::SeqCst);
    }

    /// Empties the eventfd (after it woke the core).
    fn reset(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.0.fd, &mut buf);
    }
}

impl Poller {
    pub(crate) fn new() -> io::Result<Self> {
        let epoll = epoll::create(CreateFlags::CLOEXEC)?;
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &fd,
            EventData::new_u64(WAKER.0 as u64),
            EventFlags::IN | EventFlags::ET,
        )?;
        Ok(Self {
            epoll,
            waker: CoreWaker(Arc::new(WakerInner {
                fd,
                asleep: AtomicBool::new(false),
            })),
        })
    }

    /// A handle to register sockets with.
    pub(crate) fn registry(&self) -> io::Result<Registry> {
        Ok(Registry(self.epoll.try_clone()?))
    }

    /// The core's waker, for whoever queues input for it.
    pub(crate) fn waker(&self) -> CoreWaker {
        self.waker.clone()
    }

    /// Waits up to `timeout` (`None`: until something happens; zero: not at all) and
    /// appends the tokens of sockets that became ready to `out`; the waker's own event
    /// is consumed here and reported as [`WAKER`]. Returns whether epoll may have more
    /// to report (it filled every event slot).
    pub(crate) fn wait(
        &mut self,
        out: &mut Vec<Token>,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let mut events = [const { MaybeUninit::<epoll::Event>::uninit() }; EVENTS];
        let ts = timeout.map(|t| Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let (got, _) = match epoll::wait(&self.epoll, &mut events, ts.as_ref()) {
            Ok(r) => r,
            Err(rustix::io::Errno::INTR) => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        for e in got.iter() {
            let t = Token(e.data.u64() as usize);
            if t == WAKER {
                self.waker.reset();
            }
            out.push(t);
        }
        Ok(got.len() >= EVENTS)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Instant;

    /// A datagram on a registered socket ends the wait and names the socket, once
    /// (edge-triggered); an empty wait with a timeout returns nothing after it.
    #[test]
    fn a_ready_socket_ends_the_wait_and_is_named_once() {
        let mut p = Poller::new().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let reg = p.registry().unwrap();
        reg.register(&a, Token(7)).unwrap();
        let mut out = Vec::new();
        let t0 = Instant::now();
        assert!(!p.wait(&mut out, Some(Duration::from_millis(30))).unwrap());
        assert!(out.is_empty());
        assert!(t0.elapsed() >= Duration::from_millis(25));
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        p.wait(&mut out, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(out, vec![Token(7)]);
        out.clear();
        p.wait(&mut out, Some(Duration::ZERO)).unwrap();
        assert!(out.is_empty());
        reg.deregister(&a).unwrap();
    }

    /// The waker ends a wait only when the core said it sleeps; `force` always.
    #[test]
    fn the_waker_wakes_a_sleeping_core_only() {
        let mut p = Poller::new().unwrap();
        let w = p.waker();
        let mut out = Vec::new();
        w.wake();
        p.wait(&mut out, Some(Duration::ZERO)).unwrap();
        assert!(out.is_empty(), "awake: no event");
        w.sleeping();
        let other = w.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            other.wake();
        });
        p.wait(&mut out, Some(Duration::from_secs(5))).unwrap();
        t.join().unwrap();
        assert_eq!(out, vec![WAKER]);
        // The second wake finds it awake (the first one cleared the flag).
        out.clear();
        w.wake();
        p.wait(&mut out, Some(Duration::ZERO)).unwrap();
        assert!(out.is_empty());
        w.force();
        p.wait(&mut out, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(out, vec![WAKER]);
    }
}

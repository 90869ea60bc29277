//! One readiness poller over every UDP socket of a core (the TURN listeners and relay
//! sockets; the SFU's sockets), and the core's waker. On `mio`: epoll on Linux, kqueue
//! on the BSDs and macOS.
//!
//! A core runs on a thread of its own and blocks in the poller alone: when sockets are
//! ready it reads each one itself and handles every datagram in place, in the receive
//! buffer. The alternative it replaced, a tokio task per socket handing each datagram
//! over a channel to a core task, cost per packet a task wake-up, a copy, a channel
//! message and a second wake-up: with one datagram per socket at a time (many relay
//! sockets, each with a packet now and then; media packets as they come) as much as
//! the kernel's own work. A poller nested in tokio's reactor took two waits and a task
//! poll per wake-up; a thread of its own takes one wait.
//!
//! Sockets are registered edge-triggered (mio's only mode); a socket whose receive
//! filled every slot may hold more and is kept on the core's list of sockets to read
//! again, so nothing waits for an edge that will not come. TCP connections and the
//! other tasks that feed a core stay on tokio: they queue their input and wake the core
//! through [`CoreWaker`], only when it sleeps.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Waker};

/// Names a registered socket in readiness events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub usize);

/// The token of the core's waker.
pub const WAKER: Token = Token(usize::MAX);

/// Readiness events taken at a time.
pub const EVENTS: usize = 64;

/// A core's poller.
#[derive(Debug)]
pub struct Poller {
    poll: Poll,
    events: Events,
    waker: CoreWaker,
}

/// Adds and removes sockets (a handle to the poller's instance; usable from other
/// threads while the core waits).
#[derive(Debug)]
pub struct Registry(mio::Registry);

impl Registry {
    /// Registers `socket` for readable, edge-triggered.
    pub fn register(&self, socket: &impl AsRawFd, token: Token) -> io::Result<()> {
        let fd = socket.as_raw_fd();
        self.0
            .register(&mut SourceFd(&fd), mio::Token(token.0), Interest::READABLE)
    }

    /// Removes `socket` (before it is closed).
    pub fn deregister(&self, socket: &impl AsRawFd) -> io::Result<()> {
        let fd = socket.as_raw_fd();
        self.0.deregister(&mut SourceFd(&fd))
    }
}

/// Wakes a core from its wait when it sleeps: mio's waker (an eventfd on Linux),
/// signalled only if the core said it is about to sleep ([`CoreWaker::sleeping`]), so
/// a busy core costs its senders nothing.
#[derive(Debug, Clone)]
pub struct CoreWaker(Arc<WakerInner>);

#[derive(Debug)]
struct WakerInner {
    waker: Waker,
    asleep: AtomicBool,
}

impl CoreWaker {
    /// Wakes the core if it sleeps (or is about to). Call after queueing its input.
    pub fn wake(&self) {
        if self.0.asleep.swap(false, Ordering::SeqCst) {
            self.force();
        }
    }

    /// Wakes the core whatever it does (shutdown).
    pub fn force(&self) {
        // Fails only when the waker's descriptor is gone with the poller: nobody to
        // wake then.
        let _ = self.0.waker.wake();
    }

    /// The core is about to sleep: from now on senders wake it. The core must look at
    /// its queues again after this and before it sleeps.
    pub fn sleeping(&self) {
        self.0.asleep.store(true, Ordering::SeqCst);
    }

    /// The core is awake again.
    pub fn awake(&self) {
        self.0.asleep.store(false, Ordering::SeqCst);
    }
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), mio::Token(WAKER.0))?;
        Ok(Self {
            poll,
            events: Events::with_capacity(EVENTS),
            waker: CoreWaker(Arc::new(WakerInner {
                waker,
                asleep: AtomicBool::new(false),
            })),
        })
    }

    /// A handle to register sockets with.
    pub fn registry(&self) -> io::Result<Registry> {
        Ok(Registry(self.poll.registry().try_clone()?))
    }

    /// The core's waker, for whoever queues input for it.
    pub fn waker(&self) -> CoreWaker {
        self.waker.clone()
    }

    /// Waits up to `timeout` (`None`: until something happens; zero: not at all) and
    /// appends the tokens of sockets that became ready to `out` ([`WAKER`] for the
    /// waker). Returns whether the poller may have more to report (it filled every
    /// event slot).
    pub fn wait(&mut self, out: &mut Vec<Token>, timeout: Option<Duration>) -> io::Result<bool> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e),
        }
        let mut n = 0;
        for e in self.events.iter() {
            out.push(Token(e.token().0));
            n += 1;
        }
        Ok(n >= EVENTS)
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

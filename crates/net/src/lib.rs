//! tsunagi's IO layer, shared by the TURN and SFU runtimes and the load generator.
//!
//! * [`poller`]: one readiness poller (mio: epoll on Linux, kqueue elsewhere) over the
//!   UDP sockets of a core that runs on a thread of its own, and the waker through
//!   which other threads hand it work;
//! * [`queue`]: bounded queues into such a core that wake it;
//! * [`udp`]: non-blocking UDP with batched receive (`recvmmsg`, GRO) into buffers
//!   that are reused, and runs of equal-sized datagrams to one destination in one GSO
//!   send;
//! * [`multisend`]: lone datagrams to many destinations gathered into one `sendmmsg`;
//! * [`accept`]: the TCP accept loop that takes a permit of its limit before it
//!   accepts, and the shutdown signal the tokio side waits on;
//! * [`proxy`]: the PROXY protocol header a load balancer puts before a stream it
//!   proxies, read without taking a byte of the stream after it.
//!
//! Unix only: the poller registers sockets by file descriptor.

#![cfg(unix)]

pub mod accept;
pub mod multisend;
pub mod poller;
pub mod proxy;
pub mod queue;
pub mod udp;

pub use accept::{accept_limited, stopped};
pub use multisend::{MultiSend, MULTI_SEND_MAX};
pub use poller::{CoreWaker, Poller, Registry, Token, EVENTS, WAKER};
pub use proxy::{read_proxy_header, ProxyHeaderError};
pub use queue::{core_channel, CoreSender};
pub use udp::{
    set_dont_fragment, FastSocket, RecvBufs, GSO_MAX_BYTES, GSO_MAX_SEGMENTS, RECV_SLOTS,
};

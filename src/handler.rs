//! The handler API: what a service implements, and what it may do.
//!
//! Modelled on Twisted's `DatagramProtocol`: one handler instance per worker
//! receives datagrams with their source address and answers through a
//! [`Transport`]. Unlike Twisted, received data is not copied: a [`Datagram`]
//! lends the bytes of a receive buffer for the duration of the call, and
//! [`Transport::reply`] sends them back from that same buffer.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::bufring::Lent;
use crate::sys::mcast::{self, Interface, McastError};
use crate::sys::{self, EventFd, QueuedError, RawAddr};
use crate::worker::Core;
use std::net::IpAddr;

/// A service running on the engine. One instance per worker thread.
///
/// Every method runs on the worker's thread; none may block for long (a slow
/// handler backs up the socket, and the kernel drops what does not fit,
/// counted in [`crate::Stats::kernel_drops`]).
pub trait Handler: 'static {
    /// The worker is bound and about to receive.
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        let _ = tx;
    }
    /// A datagram arrived. Its bytes are lent until this call returns.
    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>);
    /// The kernel reported an error for this socket (ICMP and local errors
    /// from the error queue, refused sends).
    fn on_error(&mut self, event: ErrorEvent, tx: &mut Transport<'_>) {
        let _ = (event, tx);
    }
    /// A timer set with [`Transport::call_later`] fired.
    fn on_timer(&mut self, token: u64, tx: &mut Transport<'_>) {
        let _ = (token, tx);
    }
    /// The worker is stopping; no more sends will go out.
    fn on_stop(&mut self) {}
}

/// A received datagram, lent from the receive buffer ring.
pub struct Datagram<'a> {
    pub(crate) sock: u16,
    pub(crate) lent: &'a mut Lent,
    pub(crate) src: RawAddr,
    pub(crate) src_addr: SocketAddr,
    pub(crate) truncated: bool,
    pub(crate) segment_size: Option<u16>,
}

impl Datagram<'_> {
    /// The payload (for a GRO train, all segments back to back).
    pub fn payload(&self) -> &[u8] {
        self.lent.bytes()
    }
    /// The payload, writable in place (e.g. to rewrite a header before
    /// replying from the same buffer).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.lent.bytes_mut()
    }
    /// Who sent it. IPv4 senders on an IPv6 socket appear as IPv4.
    pub fn source(&self) -> SocketAddr {
        self.src_addr
    }
    /// Which of the worker's sockets it arrived on (0 unless the engine
    /// runs several sockets per worker).
    pub fn socket(&self) -> usize {
        self.sock as usize
    }
    /// Whether the datagram was larger than the buffer and was cut
    /// (counted in [`crate::Stats::truncated`]).
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
    /// With GRO on: the size of each segment of a coalesced train; the last
    /// segment may be shorter. `None` for a single datagram.
    pub fn segment_size(&self) -> Option<u16> {
        self.segment_size
    }
    /// Number of datagrams the sender sent (1, or the segments of a train).
    pub fn segments(&self) -> usize {
        match self.segment_size {
            Some(s) if s > 0 && !self.payload().is_empty() => {
                self.payload().len().div_ceil(s as usize)
            }
            _ => 1,
        }
    }
}

impl fmt::Debug for Datagram<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datagram")
            .field("source", &self.src_addr)
            .field("len", &self.payload().len())
            .field("truncated", &self.truncated)
            .field("segment_size", &self.segment_size)
            .finish()
    }
}

/// An error the kernel reported for a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorEvent {
    /// ICMP port unreachable: nothing listens at `peer`.
    ConnectionRefused {
        /// Where the refused datagram went, when the kernel says.
        peer: Option<SocketAddr>,
    },
    /// A datagram was too big for the path (`EMSGSIZE`); `mtu` is what the
    /// kernel reported, when it did.
    MessageTooLong {
        /// Destination of the datagram.
        peer: Option<SocketAddr>,
        /// Path MTU from the ICMP message or the local route.
        mtu: Option<u32>,
    },
    /// Host or network unreachable, or another ICMP error.
    Unreachable {
        /// Destination of the datagram.
        peer: Option<SocketAddr>,
        /// The errno the kernel mapped it to (`EHOSTUNREACH`, `ENETUNREACH`, …).
        errno: i32,
    },
    /// Any other error, with its errno.
    Other {
        /// Destination, when known.
        peer: Option<SocketAddr>,
        /// The errno.
        errno: i32,
    },
}

impl ErrorEvent {
    pub(crate) fn from_queued(e: QueuedError) -> Self {
        let peer = e.peer;
        match e.errno {
            libc::ECONNREFUSED => ErrorEvent::ConnectionRefused { peer },
            libc::EMSGSIZE => ErrorEvent::MessageTooLong {
                peer,
                mtu: (e.info != 0).then_some(e.info),
            },
            libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::EACCES => ErrorEvent::Unreachable {
                peer,
                errno: e.errno,
            },
            errno => ErrorEvent::Other { peer, errno },
        }
    }

    pub(crate) fn from_errno(errno: i32, peer: Option<SocketAddr>) -> Self {
        ErrorEvent::from_queued(QueuedError {
            errno,
            origin: 0,
            icmp_type: 0,
            icmp_code: 0,
            info: 0,
            peer,
        })
    }
}

/// Why a send was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The data does not fit in a slot (or in a UDP datagram).
    TooLarge,
    /// Every send slot is in flight; counted in [`crate::Stats::send_exhausted`].
    Exhausted,
    /// The worker has no socket with that index.
    NoSuchSocket,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::TooLarge => f.write_str("datagram larger than a send slot"),
            SendError::Exhausted => f.write_str("all send slots are in flight"),
            SendError::NoSuchSocket => f.write_str("no socket with that index in this worker"),
        }
    }
}

impl std::error::Error for SendError {}

/// What a handler can do: send, reply without copying, set timers.
pub struct Transport<'a> {
    pub(crate) core: &'a mut Core,
}

impl Transport<'_> {
    /// Copies `data` into a send slot and queues it for `to`. The batch is
    /// submitted when the handler returns control to the worker loop.
    pub fn send_to(&mut self, data: &[u8], to: SocketAddr) -> Result<(), SendError> {
        self.core.send_copy(0, data, to, 0)
    }

    /// Like [`Transport::send_to`], from the worker's socket `sock`
    /// (see [`crate::Config::sockets_per_worker`]).
    pub fn send_to_via(
        &mut self,
        sock: usize,
        data: &[u8],
        to: SocketAddr,
    ) -> Result<(), SendError> {
        self.check_sock(sock)?;
        self.core.send_copy(sock as u16, data, to, 0)
    }

    fn check_sock(&self, sock: usize) -> Result<(), SendError> {
        if sock < self.core.local_addrs.len() {
            Ok(())
        } else {
            Err(SendError::NoSuchSocket)
        }
    }

    /// Like [`Transport::send_to`], as a GSO train: `data` is cut by the
    /// kernel into datagrams of `segment` bytes (the last may be shorter).
    /// Without GSO the engine sends the segments one by one.
    pub fn send_segments(
        &mut self,
        data: &[u8],
        segment: u16,
        to: SocketAddr,
    ) -> Result<(), SendError> {
        self.core.send_copy(0, data, to, segment)
    }

    /// Like [`Transport::send_segments`], from the worker's socket `sock`.
    pub fn send_segments_via(
        &mut self,
        sock: usize,
        data: &[u8],
        segment: u16,
        to: SocketAddr,
    ) -> Result<(), SendError> {
        self.check_sock(sock)?;
        self.core.send_copy(sock as u16, data, to, segment)
    }

    /// Sends the datagram back to its source from its own buffer (no copy).
    /// A GRO train goes back as one GSO send with the same segment size, so
    /// the peer receives the same datagrams with their boundaries.
    pub fn reply(&mut self, dgram: Datagram<'_>) {
        let src = dgram.src;
        self.core
            .send_lent(dgram.sock, dgram.lent, src, dgram.segment_size.unwrap_or(0));
    }

    /// Sends the datagram's bytes to `to` from its own buffer (no copy); may
    /// be called many times for one datagram (fan-out).
    pub fn forward(&mut self, dgram: &Datagram<'_>, to: SocketAddr) {
        let raw = RawAddr::from_socket_addr(to, self.core.v6);
        self.core
            .send_lent(dgram.sock, dgram.lent, raw, dgram.segment_size.unwrap_or(0));
    }

    /// Connects the worker's socket `sock` to `peer` (Twisted's connected
    /// transport): only `peer`'s datagrams arrive, sends to it skip the
    /// route lookup, and ICMP errors about it come back as events. Calling
    /// it again moves the socket to another peer.
    pub fn connect(&mut self, sock: usize, peer: SocketAddr) -> std::io::Result<()> {
        self.core.set_peer(sock, Some(peer))
    }

    /// Dissolves socket `sock`'s connection (`AF_UNSPEC`): datagrams from
    /// anyone arrive again.
    pub fn disconnect(&mut self, sock: usize) -> std::io::Result<()> {
        self.core.set_peer(sock, None)
    }

    /// The peer socket `sock` is connected to.
    pub fn peer(&self, sock: usize) -> Option<SocketAddr> {
        self.core
            .connected
            .get(sock)
            .copied()
            .flatten()
            .and_then(|r| r.to_socket_addr())
            .map(sys::canonical)
    }

    /// The path MTU the kernel knows towards socket `sock`'s connected peer
    /// (`IP_MTU`/`IPV6_MTU`); an error on an unconnected socket.
    pub fn path_mtu(&self, sock: usize) -> std::io::Result<u32> {
        let fd = *self.core.fds.get(sock).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no socket with that index",
            )
        })?;
        sys::path_mtu(fd, self.core.v6)
    }

    fn fd(&self, sock: usize) -> std::io::Result<std::os::fd::RawFd> {
        self.core.fds.get(sock).copied().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no socket with that index",
            )
        })
    }

    /// Joins multicast `group` on socket `sock` (any source).
    pub fn join_group(
        &mut self,
        sock: usize,
        group: IpAddr,
        iface: Interface,
    ) -> Result<(), McastError> {
        let fd = self.fd(sock).map_err(McastError::Os)?;
        mcast::membership(fd, self.core.v6, group, &iface, true)
    }

    /// Leaves `group` on socket `sock`.
    pub fn leave_group(
        &mut self,
        sock: usize,
        group: IpAddr,
        iface: Interface,
    ) -> Result<(), McastError> {
        let fd = self.fd(sock).map_err(McastError::Os)?;
        mcast::membership(fd, self.core.v6, group, &iface, false)
    }

    /// Joins (`group`, `source`): only `source`'s datagrams to `group` arrive
    /// (IPv4 `IP_ADD_SOURCE_MEMBERSHIP`, IPv6 `MCAST_JOIN_SOURCE_GROUP`).
    pub fn join_source_group(
        &mut self,
        sock: usize,
        group: IpAddr,
        source: IpAddr,
        iface: Interface,
    ) -> Result<(), McastError> {
        let fd = self.fd(sock).map_err(McastError::Os)?;
        mcast::source_membership(fd, self.core.v6, group, source, &iface, true)
    }

    /// Leaves (`group`, `source`).
    pub fn leave_source_group(
        &mut self,
        sock: usize,
        group: IpAddr,
        source: IpAddr,
        iface: Interface,
    ) -> Result<(), McastError> {
        let fd = self.fd(sock).map_err(McastError::Os)?;
        mcast::source_membership(fd, self.core.v6, group, source, &iface, false)
    }

    /// Sets the TTL (IPv4) or hop limit (IPv6) of multicast sent from `sock`.
    pub fn set_multicast_ttl(&mut self, sock: usize, ttl: u32) -> std::io::Result<()> {
        mcast::set_ttl(self.fd(sock)?, self.core.v6, ttl)
    }

    /// The multicast TTL / hop limit the kernel holds for `sock`.
    pub fn multicast_ttl(&self, sock: usize) -> std::io::Result<u32> {
        mcast::ttl(self.fd(sock)?, self.core.v6)
    }

    /// Whether this host hears the multicast `sock` sends.
    pub fn set_multicast_loop(&mut self, sock: usize, on: bool) -> std::io::Result<()> {
        mcast::set_loop(self.fd(sock)?, self.core.v6, on)
    }

    /// The loopback setting the kernel holds for `sock`.
    pub fn multicast_loop(&self, sock: usize) -> std::io::Result<bool> {
        mcast::loop_enabled(self.fd(sock)?, self.core.v6)
    }

    /// The interface multicast from `sock` leaves by.
    pub fn set_multicast_interface(
        &mut self,
        sock: usize,
        iface: Interface,
    ) -> Result<(), McastError> {
        let fd = self.fd(sock).map_err(McastError::Os)?;
        mcast::set_interface(fd, self.core.v6, &iface)
    }

    /// The outgoing multicast interface the kernel holds for `sock`.
    pub fn multicast_interface(&self, sock: usize) -> std::io::Result<Interface> {
        mcast::interface(self.fd(sock)?, self.core.v6)
    }

    /// `SO_BROADCAST` on `sock`.
    pub fn set_broadcast(&mut self, sock: usize, on: bool) -> std::io::Result<()> {
        mcast::set_broadcast(self.fd(sock)?, on)
    }

    /// Whether `sock` may send to broadcast addresses.
    pub fn broadcast(&self, sock: usize) -> std::io::Result<bool> {
        mcast::broadcast(self.fd(sock)?)
    }

    /// Calls [`Handler::on_timer`] with `token` after `delay`.
    pub fn call_later(&mut self, delay: Duration, token: u64) {
        self.core.call_later(delay, token);
    }

    /// A handle for sending from other threads through this worker.
    pub fn sender(&self) -> Sender {
        Sender {
            inbox: self.core.inbox.clone(),
        }
    }

    /// The address the worker's (first) socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.local_addrs[0]
    }

    /// The addresses of all the worker's sockets, by index.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.core.local_addrs
    }

    /// Index of this worker (0-based).
    pub fn worker(&self) -> usize {
        self.core.index
    }
}

/// Datagrams posted from other threads, waiting for the worker.
pub(crate) struct Inbox {
    pub(crate) queue: Mutex<VecDeque<(Vec<u8>, SocketAddr)>>,
    pub(crate) wake: EventFd,
    pub(crate) capacity: usize,
    pub(crate) closed: std::sync::atomic::AtomicBool,
}

impl Inbox {
    pub(crate) fn new(capacity: usize) -> io::Result<Arc<Self>> {
        Ok(Arc::new(Inbox {
            queue: Mutex::new(VecDeque::with_capacity(capacity)),
            wake: EventFd::new()?,
            capacity,
            closed: std::sync::atomic::AtomicBool::new(false),
        }))
    }
}

/// A thread-safe handle that sends through a worker's socket.
///
/// Data is copied into a queue and the worker is woken (an eventfd the
/// worker's ring or poll set watches). Meant for control traffic from code
/// outside the worker, not for the fast path.
#[derive(Clone)]
pub struct Sender {
    inbox: Arc<Inbox>,
}

impl Sender {
    pub(crate) fn new(inbox: Arc<Inbox>) -> Self {
        Sender { inbox }
    }

    /// Queues `data` for `to`. Fails with `WouldBlock` when the queue is full
    /// and with `NotConnected` once the worker has stopped.
    pub fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        if self.inbox.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "worker stopped",
            ));
        }
        if data.len() > crate::MAX_UDP_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "datagram larger than 65507 bytes",
            ));
        }
        {
            let mut q = self.inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= self.inbox.capacity {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "worker send queue full",
                ));
            }
            q.push_back((data.to_vec(), sys::canonical(to)));
        }
        self.inbox.wake.notify();
        Ok(())
    }
}

//! The datagram a handler is lent: the bytes of a receive buffer for the
//! duration of the call, with what the kernel said of them (source,
//! destination, GRO segments, TOS, timestamps).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bufring::Lent;
use crate::sys::RecvMeta;
use crate::worker::ids::{Ecn, SocketId};

/// A received datagram, lent from the receive buffer ring.
pub struct Datagram<'a> {
    pub(crate) meta: RecvMeta,
    pub(crate) lent: &'a mut Lent,
    pub(crate) src_addr: SocketAddr,
}

impl Datagram<'_> {
    /// The payload (for a GRO train, all segments back to back).
    pub fn payload(&self) -> &[u8] {
        self.lent.bytes()
    }
    /// The payload, writable in place (e.g. to rewrite a header before
    /// replying from the same buffer). [`crate::Transport::reply`] and
    /// [`crate::Transport::forward`] queue this buffer and the kernel
    /// reads it when the batch goes, after the handler returns: a write
    /// here after them is what each of them sends.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.lent.bytes_mut()
    }
    /// Who sent it. IPv4 senders on an IPv6 socket appear as IPv4.
    pub fn source(&self) -> SocketAddr {
        self.src_addr
    }
    /// The address it was sent to (`IP_PKTINFO`/`IPV6_PKTINFO`): one of
    /// this host's, a group, or a broadcast address; on a socket bound to
    /// one unicast address, that address (nothing else arrives there).
    /// `None` only if the kernel did not say. IPv4 on IPv6 shows as IPv4.
    pub fn destination(&self) -> Option<IpAddr> {
        self.meta.cmsg.dst
    }
    /// The address an answer should leave from: the destination when it
    /// is one of this host's unicast addresses; for an IPv4 group or
    /// broadcast, the receiving interface's address; `None` (the kernel's
    /// choice) for an IPv6 group or when the kernel did not say. What
    /// [`crate::Transport::reply`] and [`crate::Transport::reply_with`]
    /// use; pass it to [`crate::Sender::send_now_from`] to answer from
    /// another thread.
    pub fn answer_from(&self) -> Option<IpAddr> {
        self.meta.cmsg.answer_from()
    }
    /// The TOS byte (IPv4) or traffic class (IPv6) it arrived with: DSCP
    /// in the upper six bits, ECN in the lower two. `None` unless
    /// [`Config::recv_tos`](crate::Config) is on.
    pub fn tos(&self) -> Option<u8> {
        self.meta.cmsg.tos
    }
    /// The socket it arrived on, as a typed handle (see [`SocketId`]).
    pub fn socket_id(&self) -> SocketId {
        SocketId::from_index(self.meta.sock)
    }
    /// The ECN field it arrived with (RFC 3168), when
    /// [`Config::recv_tos`](crate::Config) is on.
    pub fn ecn(&self) -> Option<Ecn> {
        self.meta.cmsg.tos.map(Ecn::from_tos)
    }
    /// The DSCP it arrived with (the TOS byte's upper six bits), when
    /// [`Config::recv_tos`](crate::Config) is on.
    pub fn dscp(&self) -> Option<u8> {
        self.meta.cmsg.tos.map(|t| t >> 2)
    }

    /// The IP TTL (IPv6 hop limit) it arrived with. `None` unless the
    /// engine reads it: a server's guard does, to refuse what other
    /// udpring servers send ([`crate::Guard::refuse_marked`]).
    pub fn hops(&self) -> Option<u8> {
        self.meta.cmsg.hops
    }

    /// When the kernel received it (software timestamp, `CLOCK_REALTIME`,
    /// compare with [`SystemTime::now`]): the time before the handler saw
    /// it is `SystemTime::now() - rx_timestamp()`. `None` unless
    /// [`Config::rx_timestamps`](crate::Config) is on.
    pub fn rx_timestamp(&self) -> Option<SystemTime> {
        self.meta
            .cmsg
            .rx_ns
            .map(|ns| UNIX_EPOCH + Duration::from_nanos(ns))
    }

    /// Index of the interface it arrived on, when the kernel said (a
    /// socket bound to one unicast address does not ask: then the scope
    /// of the IPv6 link-local address it is bound to, or `None`).
    pub fn interface(&self) -> Option<u32> {
        (self.meta.cmsg.ifindex != 0).then_some(self.meta.cmsg.ifindex)
    }
    /// Which of the worker's sockets it arrived on (0 unless the engine
    /// runs several sockets per worker).
    pub fn socket(&self) -> usize {
        usize::from(self.meta.sock)
    }
    /// Whether the datagram was larger than the buffer and was cut
    /// (counted in [`crate::Stats::truncated`]).
    pub fn is_truncated(&self) -> bool {
        self.meta.truncated
    }
    /// With GRO on: the size of each segment of a coalesced train; the last
    /// segment may be shorter. `None` for a single datagram.
    pub fn segment_size(&self) -> Option<u16> {
        self.meta.cmsg.gro_segment.map(|s| s.get())
    }
    /// Number of datagrams the sender sent (1, or the segments of a train).
    pub fn segments(&self) -> usize {
        match self.meta.cmsg.gro_segment {
            Some(s) if !self.payload().is_empty() => {
                self.payload().len().div_ceil(usize::from(s.get()))
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
            .field("destination", &self.destination())
            .field("truncated", &self.meta.truncated)
            .field("segment_size", &self.segment_size())
            .finish()
    }
}

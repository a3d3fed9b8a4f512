//! The two records the engine and the kernel layer exchange: what arrived
//! ([`RecvMeta`]) and what to send ([`Transmit`]). Both backends produce
//! the first and consume the second; the worker reads the first and
//! queues the second.

use std::fmt;

use std::num::NonZeroU16;

use super::addr::{RawAddr, SrcIp};
use super::cmsg::RecvCmsg;

/// One received datagram (or GRO train), as a backend read it. Its payload
/// is in a pool slot lent alongside, at [`crate::bufring::HEADROOM`].
#[derive(Clone, Copy)]
pub struct RecvMeta {
    /// Index of the worker's socket it arrived on.
    pub sock: u16,
    /// Who sent it.
    pub src: RawAddr,
    /// Payload bytes in the slot (at most the slot's payload room).
    pub len: u32,
    /// The datagram was longer than the slot and was cut (`MSG_TRUNC`).
    pub truncated: bool,
    /// What the control messages said (GRO segment size, drop counter).
    pub cmsg: RecvCmsg,
}

impl fmt::Debug for RecvMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvMeta")
            .field("sock", &self.sock)
            .field("src", &self.src.to_socket_addr())
            .field("len", &self.len)
            .field("truncated", &self.truncated)
            .field("cmsg", &self.cmsg)
            .finish()
    }
}

/// A send the handler asked for, waiting for the backend to submit it.
/// The slot it reads holds a reference in the pool until the send's outcome
/// is known.
#[derive(Clone, Copy)]
pub struct Transmit {
    /// Index of the worker's socket to send from.
    pub sock: u16,
    /// The pool slot holding the bytes.
    pub slot: u32,
    /// Offset of the bytes in the slot.
    pub off: u32,
    /// Number of bytes.
    pub len: u32,
    /// Destination; the empty address means the socket's connected peer.
    pub dst: RawAddr,
    /// GSO segment size: the kernel cuts the bytes into datagrams of this
    /// size (the last may be shorter). `None`: one datagram.
    pub segment: Option<NonZeroU16>,
    /// Sent again after a failure that reported an earlier datagram's error.
    pub retried: bool,
    /// The source address to send from (a `PKTINFO` control message), or
    /// the kernel's choice.
    pub src: SrcIp,
    /// This send's TOS byte / traffic class (an `IP_TOS` or `IPV6_TCLASS`
    /// control message), or the socket's.
    pub tos: Option<u8>,
    /// Ask the kernel for this send's software TX timestamp, reported on
    /// the error queue with this ID (`SO_TIMESTAMPING`, `SCM_TS_OPT_ID`).
    pub ts_id: Option<u32>,
    /// The socket's own `UDP_SEGMENT` (set to `segment`) cuts this train:
    /// no control message, so a plain send.
    pub socket_segments: bool,
    /// A train the send queue made of small datagrams to one destination
    /// (copied into one send slot), not one the handler asked for: if the
    /// kernel refuses it as a train, it is cut again and GSO stays on.
    pub coalesced: bool,
    /// Asked to go as a datagram by itself (`Transport::send_each_with`):
    /// never coalesced into a train.
    pub alone: bool,
}

impl Transmit {
    /// A first send of the `len` bytes at `off` in `slot`, from socket
    /// `sock` to `dst`: one datagram, from the kernel's choice of source,
    /// with the socket's mark (the rest by struct update).
    pub fn new(sock: u16, slot: u32, off: u32, len: u32, dst: RawAddr) -> Self {
        Transmit {
            sock,
            slot,
            off,
            len,
            dst,
            segment: None,
            retried: false,
            src: SrcIp::Any,
            tos: None,
            ts_id: None,
            socket_segments: false,
            coalesced: false,
            alone: false,
        }
    }

    /// The mark for [`write_send`](crate::sys::cmsg::write_send): this
    /// send's TOS and whether it leaves as IPv4 (by its destination, or,
    /// to a connected peer, by its source; unknown: the socket's own mark).
    pub fn tos_cmsg(&self) -> Option<(u8, bool)> {
        let t = self.tos?;
        let v4 = match self.dst.to_socket_addr() {
            Some(std::net::SocketAddr::V4(_)) => true,
            Some(std::net::SocketAddr::V6(a)) => a.ip().to_ipv4_mapped().is_some(),
            None => match self.src {
                SrcIp::V4(_) => true,
                SrcIp::V6(a, _) => a.to_ipv4_mapped().is_some(),
                SrcIp::Any => return None,
            },
        };
        Some((t, v4))
    }

    /// The `UDP_SEGMENT` control message this send needs: its segment
    /// size, unless the socket's own option already cuts it.
    pub fn segment_cmsg(&self) -> Option<NonZeroU16> {
        self.segment.filter(|_| !self.socket_segments)
    }

    /// How many datagrams this send puts on the wire.
    pub fn datagrams(&self) -> u64 {
        match self.segment {
            Some(s) => u64::from(self.len.div_ceil(u32::from(s.get())).max(1)),
            None => 1,
        }
    }
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("sock", &self.sock)
            .field("slot", &self.slot)
            .field("off", &self.off)
            .field("len", &self.len)
            .field("dst", &self.dst.to_socket_addr())
            .field("segment", &self.segment)
            .field("retried", &self.retried)
            .field("src", &self.src)
            .finish()
    }
}

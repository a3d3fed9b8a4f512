//! The transport: what a handler may do from any of its calls (send,
//! reply, forward, timers, socket calls). The send slot it may build a
//! datagram in is [`SendBuf`] (`sendbuf.rs`); its multicast calls are in
//! `transport_mcast.rs`.

use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use crate::error::SendError;
use crate::sys::{self, SrcIp};
use crate::worker::core::{Core, Cut};
use crate::worker::ids::{SocketId, SocketRef};
use crate::worker::sender::Sender;
use crate::worker::timers::TimerId;

use crate::worker::datagram::Datagram;
use crate::worker::sendbuf::SendBuf;

/// What a handler can do: send, reply without copying, set timers.
///
/// Every send only *queues*: `Ok` means the datagram is in the worker's
/// bounded send queue and will go to the kernel when the handler returns
/// control to the worker loop (with the rest of the batch, one
/// `io_uring_enter` or `sendmmsg`); what the kernel then says is counted in
/// [`crate::Stats`] (`sent`, `send_errors`, `send_blocked`), refusals it
/// does not explain are reported as [`crate::ErrorEvent::SendFailed`], and
/// sends given up on a full socket buffer as
/// [`crate::ErrorEvent::SendGivenUp`]. `Err` means nothing was queued (see
/// [`SendError`]).
///
/// Costs: `reply`, `forward` and `forward_via` copy nothing (the receive
/// buffer is sent; it goes back to the ring once the kernel has it);
/// `send_with`, `send_segments_with`, `send_each_with` and
/// `send_trains_with` copy nothing either (the handler builds the
/// datagram in the send slot the kernel reads); `send_to` and
/// `send_segments` copy the data once into a send slot. No send allocates
/// or makes a system call. (Small datagrams queued back to back to one
/// destination are copied into one train when the batch goes: see the
/// crate docs, "One send for many".)
///
/// Which send: received bytes go back or on with `reply`/`forward`; bytes
/// the handler serializes (a reply it builds, a load generator's request)
/// go with `send_with` (written in place; many small datagrams or trains
/// built at once, each its own send, with `send_each_with` or
/// `send_trains_with`: one call and one slot for them all); bytes that
/// already sit in a buffer of the handler's go with `send_to` (one copy,
/// simplest). The socket methods (`connect`,
/// `join_group`, `set_multicast_*`, `path_mtu`, ...) are one system call
/// each (`connect`/`setsockopt`/`getsockopt`), made at once on the worker's
/// thread, and allocate nothing. Timers cost a heap push and a table
/// entry; storage grows to the most timers the handler keeps at once (a
/// cancelled timer's entry is reclaimed when it would have come due).
/// `sender()` clones one `Arc`.
pub struct Transport<'a> {
    pub(crate) core: &'a mut Core,
}

impl Transport<'_> {
    /// Asks for the kernel's TX timestamp of the next datagram this
    /// handler queues (any send: `send_to`, `reply`, `forward`, ...); it
    /// arrives as [`Handler::on_tx_timestamp`](crate::Handler::on_tx_timestamp) with `id`. False (nothing
    /// asked) unless [`Config::tx_timestamps`](crate::Config) is on. The
    /// request costs the send a control message (it goes by `sendmsg`).
    pub fn timestamp_next(&mut self, id: u32) -> bool {
        if self.core.tx_timestamps {
            self.core.stamp_next = Some(id);
        }
        self.core.tx_timestamps
    }

    /// Copies `data` into a send slot and queues it for `to`, from the
    /// worker's first socket. Use it for data the handler builds; use
    /// [`Transport::reply`] or [`Transport::forward`] to send received
    /// bytes without a copy.
    pub fn send_to(&mut self, data: &[u8], to: SocketAddr) -> Result<(), SendError> {
        self.core.send_copy(0, data, to, None)
    }

    /// Like [`Transport::send_to`], with this datagram's own TOS byte /
    /// traffic class (DSCP in the upper six bits, ECN in the lower two) in
    /// place of the socket's: an `IP_TOS` or `IPV6_TCLASS` control message,
    /// so the send goes by `sendmsg`.
    pub fn send_to_marked(
        &mut self,
        data: &[u8],
        to: SocketAddr,
        tos: u8,
    ) -> Result<(), SendError> {
        if data.len() > crate::limits::MAX_UDP_PAYLOAD {
            return Err(SendError::TooLarge);
        }
        let dst = self.core.dest(0, to)?;
        self.core
            .send_copy_raw(0, data, dst, None, SrcIp::Any, Some(tos))
    }

    /// Like [`Transport::send_to`], from the worker's socket `sock`
    /// (see [`crate::Config::sockets_per_worker`] and
    /// [`crate::Config::also_bind`]).
    pub fn send_to_via(
        &mut self,
        sock: impl SocketRef,
        data: &[u8],
        to: SocketAddr,
    ) -> Result<(), SendError> {
        let sock = self.send_sock(sock)?;
        self.core.send_copy(sock, data, to, None)
    }

    /// `sock` as the index a send carries, once checked to be one of the
    /// worker's sockets.
    fn send_sock(&self, sock: impl SocketRef) -> Result<u16, SendError> {
        let i = sock.index();
        if i < self.core.socks.local.len() {
            Ok(i as u16)
        } else {
            Err(SendError::NoSuchSocket)
        }
    }

    /// Builds a datagram of up to `cap` bytes in place and queues it for
    /// `to`, from the worker's first socket: `fill` gets the send slot's
    /// first `cap` bytes (zero, unless the handler kept its own bytes
    /// there: see [`SendBuf`]) and returns how many of them it wrote; those
    /// go out, and their count comes back in `Ok`. No copy: prefer it to
    /// [`Transport::send_to`] for bytes the handler writes anyway, and for
    /// a reply whose length is known only once it is written.
    ///
    /// `Err` (and `fill` not called) when `cap` is over
    /// [`crate::limits::MAX_UDP_PAYLOAD`] or the slot size, or when every send slot
    /// is out ([`SendError::Exhausted`], counted in `send_exhausted`;
    /// nothing was queued and nothing is held). `Err(TooLarge)` after
    /// `fill` when it says it wrote more than `cap`: nothing is sent.
    pub fn send_with(
        &mut self,
        cap: usize,
        to: SocketAddr,
        fill: impl FnOnce(&mut SendBuf<'_>) -> usize,
    ) -> Result<usize, SendError> {
        self.core.send_in_place(0, cap, to, Cut::Whole, fill)
    }

    /// Like [`Transport::send_with`], from the worker's socket `sock`.
    pub fn send_with_via(
        &mut self,
        sock: impl SocketRef,
        cap: usize,
        to: SocketAddr,
        fill: impl FnOnce(&mut SendBuf<'_>) -> usize,
    ) -> Result<usize, SendError> {
        let sock = self.send_sock(sock)?;
        self.core.send_in_place(sock, cap, to, Cut::Whole, fill)
    }

    /// Like [`Transport::send_with_via`], as a GSO train: the bytes
    /// `fill` says it wrote (of `cap`) are cut by the kernel into
    /// datagrams of `segment` bytes (the last may be shorter), as
    /// [`Transport::send_segments`] does, without its copy.
    pub fn send_segments_with(
        &mut self,
        sock: impl SocketRef,
        segment: u16,
        cap: usize,
        to: SocketAddr,
        fill: impl FnOnce(&mut SendBuf<'_>) -> usize,
    ) -> Result<usize, SendError> {
        let sock = self.send_sock(sock)?;
        let seg = NonZeroU16::new(segment).ok_or(SendError::TooLarge)?;
        self.core
            .send_in_place(sock, cap, to, Cut::Train(seg), fill)
    }

    /// Like [`Transport::send_segments_with`], but each `size`-byte piece
    /// goes as a datagram of its own (one `sendmmsg` message or SQE each),
    /// never as a GSO train: many datagrams built with one call in one
    /// slot, for a receiver that is to see each one sent by itself. All
    /// of them are queued, or none ([`SendError::Exhausted`]); 0 bytes
    /// written is no piece and queues nothing.
    pub fn send_each_with(
        &mut self,
        sock: impl SocketRef,
        size: u16,
        cap: usize,
        to: SocketAddr,
        fill: impl FnOnce(&mut SendBuf<'_>) -> usize,
    ) -> Result<usize, SendError> {
        let sock = self.send_sock(sock)?;
        let piece = NonZeroU32::from(NonZeroU16::new(size).ok_or(SendError::TooLarge)?);
        let cut = Cut::Pieces {
            piece,
            segment: None,
        };
        self.core.send_in_place(sock, cap, to, cut, fill)
    }

    /// Like [`Transport::send_segments_with`], for many trains built in one
    /// slot with one call: the bytes written are cut into trains of `train`
    /// bytes (the last may be shorter), each its own GSO send of datagrams
    /// of `segment` bytes. For small trains (64 datagrams of 64 B are
    /// 4 KiB; a slot holds 64 KiB with GRO) this is one call, one slot and
    /// one address check for several sends. All are queued, or none
    /// ([`SendError::Exhausted`]); 0 bytes written queues nothing. Without
    /// GSO (the kernel refused it once) every segment goes as a datagram.
    pub fn send_trains_with(
        &mut self,
        sock: impl SocketRef,
        segment: u16,
        train: usize,
        cap: usize,
        to: SocketAddr,
        fill: impl FnOnce(&mut SendBuf<'_>) -> usize,
    ) -> Result<usize, SendError> {
        let sock = self.send_sock(sock)?;
        let segment = Some(NonZeroU16::new(segment).ok_or(SendError::TooLarge)?);
        let piece = u32::try_from(train)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or(SendError::TooLarge)?;
        let cut = Cut::Pieces { piece, segment };
        self.core.send_in_place(sock, cap, to, cut, fill)
    }

    /// Like [`Transport::send_to`], as a GSO train: `data` is cut by the
    /// kernel into datagrams of `segment` bytes (the last may be shorter):
    /// one send, one copy, up to 64 datagrams. The whole train must fit in
    /// one send slot ([`crate::Config::slot_size`]; 64 KiB with GRO) or the
    /// call fails with [`SendError::TooLarge`]. Without GSO (the kernel
    /// refused it once) the engine sends the segments one by one.
    pub fn send_segments(
        &mut self,
        data: &[u8],
        segment: u16,
        to: SocketAddr,
    ) -> Result<(), SendError> {
        self.core.send_copy(0, data, to, NonZeroU16::new(segment))
    }

    /// Like [`Transport::send_segments`], from the worker's socket `sock`.
    pub fn send_segments_via(
        &mut self,
        sock: impl SocketRef,
        data: &[u8],
        segment: u16,
        to: SocketAddr,
    ) -> Result<(), SendError> {
        let sock = self.send_sock(sock)?;
        self.core
            .send_copy(sock, data, to, NonZeroU16::new(segment))
    }

    /// Sends the datagram back to its source from its own buffer (no copy),
    /// from the socket it arrived on and from the address it was sent to
    /// (see [`Transport::reply_with`]). A GRO train goes back as one GSO
    /// send with the same segment size, so the peer receives the same
    /// datagrams with their boundaries. `Err` only when the send queue is
    /// full ([`SendError::Exhausted`], counted).
    pub fn reply(&mut self, dgram: Datagram<'_>) -> Result<(), SendError> {
        let m = dgram.meta;
        let src = self.core.reply_source(m.sock, &m.cmsg);
        let tos = self.core.reply_tos(&m.cmsg);
        self.core
            .send_lent(m.sock, dgram.lent, m.src, m.cmsg.gro_segment, src, tos)
    }

    /// Answers `dgram` with `data` (copied once into a send slot): to its
    /// source, from the socket it arrived on, and from the address it was
    /// sent to. On a socket bound to the wildcard address (`0.0.0.0`,
    /// `[::]`) of a host with several addresses, the kernel would otherwise
    /// pick the source by route, and a client that asked another of the
    /// host's addresses would drop the answer (a connected socket, a
    /// resolver checking the source). The source goes in an
    /// `IP_PKTINFO`/`IPV6_PKTINFO` control message, so such sends use
    /// `sendmsg` (`IORING_OP_SENDMSG`); on a socket bound to one address
    /// the kernel already sends from it and nothing is added. A group or
    /// broadcast destination is answered from the receiving interface's
    /// address (IPv4) or the kernel's choice (IPv6).
    pub fn reply_with(&mut self, dgram: &Datagram<'_>, data: &[u8]) -> Result<(), SendError> {
        let m = dgram.meta;
        if data.len() > crate::limits::MAX_UDP_PAYLOAD {
            return Err(SendError::TooLarge);
        }
        let src = self.core.reply_source(m.sock, &m.cmsg);
        let tos = self.core.reply_tos(&m.cmsg);
        self.core.send_copy_raw(m.sock, data, m.src, None, src, tos)
    }

    /// Answers `dgram` with a reply of up to `cap` bytes built in place, as
    /// [`Transport::send_with`] builds a datagram (`fill` returns how many
    /// bytes it wrote; those go, and their count comes back), and sent as
    /// [`Transport::reply_with`] sends: to the datagram's source, from the
    /// socket it arrived on and from the address it was sent to
    /// ([`Datagram::answer_from`]). For a reply whose length is known only
    /// once it is written, without a copy. `Err` as for `send_with`.
    pub fn reply_in_place(
        &mut self,
        dgram: &Datagram<'_>,
        cap: usize,
        fill: impl FnOnce(&mut SendBuf<'_>) -> usize,
    ) -> Result<usize, SendError> {
        let m = dgram.meta;
        let src = self.core.reply_source(m.sock, &m.cmsg);
        let tos = self.core.reply_tos(&m.cmsg);
        self.core
            .send_in_place_raw(m.sock, cap, m.src, src, tos, Cut::Whole, fill)
    }

    /// Sends the datagram's bytes to `to` from its own buffer (no copy),
    /// from the socket it arrived on; may be called many times for one
    /// datagram (fan-out). The source address is the kernel's choice for
    /// `to` (a relay's next hop may sit on another network than the
    /// datagram's source).
    pub fn forward(&mut self, dgram: &Datagram<'_>, to: SocketAddr) -> Result<(), SendError> {
        self.forward_via(usize::from(dgram.meta.sock), dgram, to)
    }

    /// Like [`Transport::forward`], from the worker's socket `sock` (e.g. a
    /// socket of its own to send from, bound with
    /// [`crate::Config::also_bind`], so that answers to it are not taken
    /// for new datagrams).
    pub fn forward_via(
        &mut self,
        sock: impl SocketRef,
        dgram: &Datagram<'_>,
        to: SocketAddr,
    ) -> Result<(), SendError> {
        let sock = self.send_sock(sock)?;
        let raw = self.core.dest(sock, to)?;
        self.core.send_lent(
            sock,
            dgram.lent,
            raw,
            dgram.meta.cmsg.gro_segment,
            SrcIp::Any,
            None,
        )
    }

    /// Connects the worker's socket `sock` to `peer` (Twisted's connected
    /// transport): only `peer`'s datagrams arrive, sends to it skip the
    /// route lookup, and ICMP errors about it come back as events. Calling
    /// it again moves the socket to another peer.
    pub fn connect(&mut self, sock: impl SocketRef, peer: SocketAddr) -> std::io::Result<()> {
        let sock = sock.index();
        self.core.set_peer(sock, Some(peer))
    }

    /// Dissolves socket `sock`'s connection (`AF_UNSPEC`): datagrams from
    /// anyone arrive again.
    pub fn disconnect(&mut self, sock: impl SocketRef) -> std::io::Result<()> {
        let sock = sock.index();
        self.core.set_peer(sock, None)
    }

    /// The peer socket `sock` is connected to.
    pub fn peer(&self, sock: impl SocketRef) -> Option<SocketAddr> {
        let sock = sock.index();
        self.core
            .socks
            .connected
            .get(sock)
            .copied()
            .flatten()
            .and_then(|r| r.to_socket_addr())
            .map(sys::canonical)
    }

    /// The path MTU the kernel knows towards socket `sock`'s connected peer
    /// (`IP_MTU`/`IPV6_MTU`); an error on an unconnected socket.
    pub fn path_mtu(&self, sock: impl SocketRef) -> std::io::Result<u32> {
        let sock = sock.index();
        sys::socket::path_mtu(self.fd(sock)?, self.core.v6(sock))
    }

    pub(crate) fn fd(&self, sock: usize) -> std::io::Result<std::os::fd::RawFd> {
        self.core.fd(sock)
    }

    /// Calls [`Handler::on_timer`](crate::Handler::on_timer) with `token` once, after `delay`. The
    /// id cancels it ([`Transport::cancel_timer`]).
    pub fn call_later(&mut self, delay: Duration, token: u64) -> TimerId {
        self.core.timers.add(delay, token)
    }

    /// Calls [`Handler::on_timer`](crate::Handler::on_timer) with `token` every `period` (at
    /// least 1 µs: a zero period would spin), the first time one period
    /// from now. Periods the worker missed (a long handler call) are
    /// skipped, not fired in a burst.
    pub fn call_every(&mut self, period: Duration, token: u64) -> TimerId {
        self.core.timers.every(period, token)
    }

    /// Cancels a timer; false if it had fired (one-shot) or was cancelled.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.core.timers.cancel(id)
    }

    /// Lets this worker fire its timers up to `slack` after they are due
    /// (never before); zero, the default, fires them as soon as the host's
    /// timers allow. A handler whose timers need not be punctual (a
    /// sweeper of expired state) gives some milliseconds, and a worker
    /// that waits for datagrams in `recvmsg` ([`Config::park`]) then keeps
    /// waiting past a timer's time and fires it with the next datagram, or
    /// at its socket's timeout within the slack, instead of going back to
    /// the ring a kernel tick early to fire it on time. That timeout counts
    /// in kernel ticks (4 ms at 250 Hz) and may end a tick either side of
    /// what was asked: a slack of two ticks and a millisecond or more lets
    /// it fire every such timer; a smaller one, the timers no datagram
    /// reaches first go to the ring, which fires them on time.
    ///
    /// [`Config::park`]: crate::Config::park
    pub fn set_timer_slack(&mut self, slack: Duration) {
        self.core.timers.set_slack(slack);
    }
    /// A handle for sending from other threads through this worker.
    pub fn sender(&self) -> Sender {
        Sender::new(self.core.shared.inbox.clone())
    }

    /// The address the worker's (first) socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.socks.local[0]
    }
    /// The addresses of all the worker's sockets, by index.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.core.socks.local
    }

    /// The worker's (first) socket bound to `addr`, as a typed handle:
    /// found once (in `on_start`) and kept.
    pub fn socket_at(&self, addr: SocketAddr) -> Option<SocketId> {
        self.core
            .socks
            .local
            .iter()
            .position(|a| *a == addr)
            .and_then(|i| u16::try_from(i).ok())
            .map(SocketId::from_index)
    }

    /// The address socket `sock` is bound to.
    pub fn address_of(&self, sock: impl SocketRef) -> Option<SocketAddr> {
        self.core.socks.local.get(sock.index()).copied()
    }

    /// Bytes one send slot holds: the most a datagram (or a batch built in
    /// place) sent by copy may take. Smaller on the xdp backend, which
    /// keeps room for headers before each.
    pub fn send_capacity(&self) -> usize {
        self.core.pool.send_cap()
    }

    /// In [`Handler::on_error`](crate::Handler::on_error): the socket the
    /// kernel reported the error on (the one that sent the datagram an
    /// ICMP error is about, or whose send was refused), so that a handler
    /// with several sockets (`Config::also_bind`, flows of their own) can
    /// tell which request failed. `None` in every other call.
    pub fn error_socket(&self) -> Option<SocketId> {
        self.core.error_sock.map(SocketId::from_index)
    }

    /// The worker's index (0-based).
    pub fn worker(&self) -> usize {
        self.core.index
    }
}

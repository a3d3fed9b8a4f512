//! A worker's state, as a handler's [`Transport`](crate::Transport) sees
//! it: the pool, the queue of sends asked for, timers, counters and the
//! sockets. Nothing here calls the handler (that is [`super::Worker`]).

use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU16, NonZeroU32};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::queue::SendQueue;
use super::timers::Timers;
use crate::bufring::{Lent, Pool};
use crate::error::SendError;
use crate::guard::GuardState;
use crate::stats::{LocalStats, SharedStats};
use crate::sys::cmsg::RecvCmsg;
use crate::sys::{self, RawAddr, SrcIp, Transmit};
use crate::worker::sender::Inbox;

/// How often the sockets' drop counters are read while running.
const DROPS_EVERY: Duration = Duration::from_millis(100);

/// What the engine shares with one worker thread.
pub(crate) struct WorkerShared {
    pub stop: AtomicBool,
    pub stats: SharedStats,
    pub inbox: Arc<Inbox>,
    /// Why the worker failed (its handler panicked, its loop ended on an
    /// error), if it did.
    pub failure: std::sync::Mutex<Option<String>>,
    /// The worker's index and [`crate::Config::on_failure`], told of its
    /// failure.
    pub on_failure: Option<(usize, crate::config::FailureHook)>,
}

impl WorkerShared {
    /// The worker failed: say why, stop it, close its inbox, and tell
    /// [`crate::Config::on_failure`] (once, the first reason).
    pub fn fail(&self, why: String) {
        let first = {
            let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            let first = f.is_none();
            if first {
                *f = Some(why.clone());
            }
            first
        };
        self.stop.store(true, Ordering::Release);
        self.inbox.close();
        if let (true, Some((i, hook))) = (first, &self.on_failure) {
            // The hook is the caller's code: a panic there must not take
            // the worker's orderly stop with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (hook.0)(*i, &why)));
        }
    }

    /// The worker's counters, its Senders' direct sends included.
    pub fn snapshot(&self) -> crate::stats::Stats {
        let mut s = self.stats.load();
        let direct = self.inbox.direct_sent.load(Ordering::Relaxed);
        s.sent += direct;
        s.sent_bufs += direct;
        s.bytes_sent += self.inbox.direct_bytes.load(Ordering::Relaxed);
        s
    }

    /// Why it failed, if it did.
    pub fn failed(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How the bytes a handler built in one send slot leave.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cut {
    /// As one datagram.
    Whole,
    /// As a GSO train of datagrams of this size (cut by the kernel).
    Train(NonZeroU16),
    /// As pieces of `piece` bytes (the last may be shorter), each its own
    /// send: without `segment` a datagram (one `sendmmsg` message or SQE
    /// each), with it a GSO train of datagrams of that size.
    Pieces {
        piece: NonZeroU32,
        segment: Option<NonZeroU16>,
    },
}

/// The worker's sockets: descriptor, bound address and connected peer of
/// each, by index.
pub(crate) struct Sockets {
    pub fds: Vec<RawFd>,
    pub local: Vec<SocketAddr>,
    /// The destination (and interface) of every datagram each socket
    /// receives when its bound address fixes it (see
    /// [`sys::fixed_destination`]): such a socket does not ask the kernel
    /// for `IP_PKTINFO`, and its datagrams get this instead.
    pub fixed_dst: Vec<Option<(std::net::IpAddr, u32)>>,
    /// The peer each socket is connected to, if any: sends to it go
    /// without an address, so the kernel uses the socket's cached route.
    pub connected: Vec<Option<RawAddr>>,
    /// Whether each socket is IPv6 (the engine may bind both families).
    pub v6: Vec<bool>,
}

/// Backend-independent worker state.
pub(crate) struct Core {
    pub pool: Pool,
    pub queue: SendQueue,
    pub timers: Timers,
    pub stats: LocalStats,
    pub socks: Sockets,
    pub guard: GuardState,
    /// The kernel's drop counter of each socket as last read (u32, as the
    /// kernel keeps it; it may wrap).
    drops_seen: Vec<u32>,
    /// When `SO_MEMINFO` was last read (on the coarse clock).
    drops_read: Duration,
    pub index: usize,
    /// Spin instead of sleeping when idle (Config::busy_poll).
    pub busy_poll: bool,
    /// Answers carry the mark their datagram arrived with
    /// (`Config::reflect_tos`).
    pub reflect_tos: bool,
    /// TX timestamps may be asked for (`Config::tx_timestamps`).
    pub tx_timestamps: bool,
    /// The `UDP_SEGMENT` every socket has (`Config::udp_segment`).
    pub socket_segment: Option<NonZeroU16>,
    /// The ID the next queued send asks its TX timestamp under
    /// ([`crate::Transport::timestamp_next`]).
    pub stamp_next: Option<u32>,
    /// The last destination [`Core::dest`] gave, for its socket and
    /// address: a flood to one peer converts it once, and sends to the
    /// connected peer go without an address (see [`Core::push`]).
    /// Forgotten when a socket's peer changes.
    last_dest: Option<(u16, SocketAddr, RawAddr)>,
    /// While the handler's `on_error` runs: the socket the error is about
    /// ([`crate::Transport::error_socket`]).
    pub error_sock: Option<u16>,
    /// Sends at once, while parked (`send_now.rs`).
    pub now: super::send_now::SendNow,
    pub shared: Arc<WorkerShared>,
}

impl Core {
    pub fn new(
        pool: Pool,
        socks: Sockets,
        index: usize,
        gso: bool,
        max_queued: usize,
        shared: Arc<WorkerShared>,
        guard: GuardState,
    ) -> Self {
        Core {
            pool,
            queue: SendQueue::new(max_queued, gso),
            timers: Timers::new(),
            stats: LocalStats::new(&shared.stats),
            drops_seen: vec![0; socks.fds.len()],
            drops_read: sys::clock::coarse(),
            socks,
            guard,
            index,
            busy_poll: false,
            reflect_tos: false,
            tx_timestamps: false,
            socket_segment: None,
            stamp_next: None,
            last_dest: None,
            error_sock: None,
            now: Default::default(),
            shared,
        }
    }

    pub fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Whether socket `sock` is IPv6 (false for an unknown index).
    pub fn v6(&self, sock: usize) -> bool {
        self.socks.v6.get(sock).copied().unwrap_or(false)
    }

    /// Descriptor of socket `sock`.
    pub fn fd(&self, sock: usize) -> std::io::Result<RawFd> {
        self.socks.fds.get(sock).copied().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no socket with that index",
            )
        })
    }

    /// The kernel form of `to` for socket `sock`: an IPv4 destination on an
    /// IPv6 socket goes v4-mapped; an IPv6 one on an IPv4 socket cannot go.
    /// The socket's connected peer comes back as the empty address (the
    /// kernel's cached route); the last answer is remembered.
    pub fn dest(&mut self, sock: u16, to: SocketAddr) -> Result<RawAddr, SendError> {
        if let Some((s, a, raw)) = self.last_dest
            && s == sock
            && a == to
        {
            return Ok(raw);
        }
        let i = usize::from(sock);
        let v6 = self.v6(i);
        if !v6 && to.is_ipv6() {
            self.stats.send_error(libc::EAFNOSUPPORT);
            return Err(SendError::AddressFamily);
        }
        let mut raw = RawAddr::from_socket_addr(to, v6);
        if let Some(Some(peer)) = self.socks.connected.get(i)
            && peer.same(&raw)
        {
            raw = RawAddr::zeroed();
        }
        self.last_dest = Some((sock, to, raw));
        Ok(raw)
    }

    /// Copies `data` into a send slot and queues it.
    pub fn send_copy(
        &mut self,
        sock: u16,
        data: &[u8],
        to: SocketAddr,
        segment: Option<NonZeroU16>,
    ) -> Result<(), SendError> {
        self.send_copy_from(sock, data, to, segment, SrcIp::Any)
    }

    /// [`Core::send_copy`] from the source address `src`.
    pub fn send_copy_from(
        &mut self,
        sock: u16,
        data: &[u8],
        to: SocketAddr,
        segment: Option<NonZeroU16>,
        src: SrcIp,
    ) -> Result<(), SendError> {
        if usize::from(sock) >= self.socks.fds.len() {
            return Err(SendError::NoSuchSocket);
        }
        if data.len() > self.pool.send_cap()
            || (segment.is_none() && data.len() > crate::limits::MAX_UDP_PAYLOAD)
        {
            return Err(SendError::TooLarge);
        }
        let dst = self.dest(sock, to)?;
        self.send_copy_raw(sock, data, dst, segment, src, None)
    }

    /// [`Core::send_copy`] to a destination already in kernel form, from
    /// `src`.
    pub fn send_copy_raw(
        &mut self,
        sock: u16,
        data: &[u8],
        dst: RawAddr,
        segment: Option<NonZeroU16>,
        src: SrcIp,
        tos: Option<u8>,
    ) -> Result<(), SendError> {
        if data.len() > self.pool.send_cap() {
            return Err(SendError::TooLarge);
        }
        let t = Transmit {
            segment,
            src,
            tos,
            ..Transmit::new(sock, 0, 0, data.len() as u32, dst)
        };
        let Some(retried) = self.send_at_once(&t, data) else {
            return Ok(());
        };
        let Some(mut lent) = self.pool.alloc_send() else {
            self.stats.c.send_exhausted.add(1);
            return Err(SendError::Exhausted);
        };
        lent.set_window(0, data.len() as u32);
        lent.bytes_mut().copy_from_slice(data);
        self.pool.set_tag(lent.slot(), 0);
        self.pool.note_written(lent.slot(), data.len() as u32);
        let r = self.push(Transmit {
            slot: lent.slot(),
            retried,
            ..t
        });
        self.pool.release(lent);
        r
    }

    /// Lends a send slot's first `cap` bytes to `fill` and queues the
    /// first `n` of them, `n` being what `fill` returns (the bytes it
    /// wrote), cut as `cut` says: the bytes are built where the kernel
    /// reads them. The lent bytes are zero, or what this handler kept
    /// there under the slot's tag ([`crate::worker::sendbuf::SendBuf::tag`]): nothing an
    /// earlier datagram left. `fill` is not called when no slot is free or
    /// `cap` is too large; an `n` over `cap` (or over the largest datagram)
    /// sends nothing.
    pub fn send_in_place(
        &mut self,
        sock: u16,
        cap: usize,
        to: SocketAddr,
        cut: Cut,
        fill: impl FnOnce(&mut crate::worker::sendbuf::SendBuf<'_>) -> usize,
    ) -> Result<usize, SendError> {
        self.check_in_place(sock, cap, cut)?;
        let dst = self.dest(sock, to)?;
        self.send_in_place_raw(sock, cap, dst, SrcIp::Any, None, cut, fill)
    }

    /// Whether a datagram of up to `cap` bytes, cut as `cut`, may be built
    /// in a slot of socket `sock` (checked before anything is counted).
    fn check_in_place(&self, sock: u16, cap: usize, cut: Cut) -> Result<(), SendError> {
        if usize::from(sock) >= self.socks.fds.len() {
            return Err(SendError::NoSuchSocket);
        }
        let whole = matches!(cut, Cut::Whole);
        if cap > self.pool.send_cap() || (whole && cap > crate::limits::MAX_UDP_PAYLOAD) {
            return Err(SendError::TooLarge);
        }
        Ok(())
    }

    /// [`Core::send_in_place`] to a destination already in kernel form,
    /// from `src` with the mark `tos` (an answer: see
    /// [`Core::reply_source`]).
    #[allow(clippy::too_many_arguments)]
    pub fn send_in_place_raw(
        &mut self,
        sock: u16,
        cap: usize,
        dst: RawAddr,
        src: SrcIp,
        tos: Option<u8>,
        cut: Cut,
        fill: impl FnOnce(&mut crate::worker::sendbuf::SendBuf<'_>) -> usize,
    ) -> Result<usize, SendError> {
        self.check_in_place(sock, cap, cut)?;
        let Some(mut lent) = self.pool.alloc_send() else {
            self.stats.c.send_exhausted.add(1);
            return Err(SendError::Exhausted);
        };
        let slot = lent.slot();
        let tag = self.pool.scrub_send(&mut lent, cap as u32);
        let mut buf = crate::worker::sendbuf::SendBuf {
            bytes: lent.bytes_mut(),
            tag,
        };
        let n = fill(&mut buf);
        let tag = buf.tag;
        self.pool.set_tag(slot, tag);
        let datagram = match cut {
            Cut::Whole => n,
            Cut::Train(_)
            | Cut::Pieces {
                segment: Some(_), ..
            } => 0,
            Cut::Pieces { piece, .. } => (piece.get() as usize).min(n),
        };
        if n > cap || datagram > crate::limits::MAX_UDP_PAYLOAD {
            self.pool.release(lent);
            return Err(SendError::TooLarge);
        }
        lent.set_window(0, n as u32);
        let t = Transmit {
            src,
            tos,
            ..Transmit::new(sock, slot, 0, n as u32, dst)
        };
        let pushed = match cut {
            Cut::Whole => match self.send_at_once(&t, lent.bytes()) {
                None => Ok(()),
                Some(retried) => self.push(Transmit { retried, ..t }),
            },
            Cut::Train(s) => self.push(Transmit {
                segment: Some(s),
                ..t
            }),
            // Pieces that are datagrams were asked to go each by itself
            // (`send_each_with`): never coalesced into a train.
            Cut::Pieces { piece, segment } => self.enqueue(
                Transmit {
                    segment,
                    alone: segment.is_none(),
                    ..t
                },
                Some(piece),
            ),
        };
        self.pool.release(lent);
        pushed.map(|()| n)
    }

    /// The mark an answer to a datagram carries: the one it arrived with
    /// when `Config::reflect_tos` is on, else the socket's. Never CE: a
    /// router marked the request congested on its way in; an answer sent
    /// with CE would claim congestion on a path it has not crossed, so CE
    /// goes back as ECT(0), the codepoint a sender sets.
    pub fn reply_tos(&self, cmsg: &RecvCmsg) -> Option<u8> {
        if !self.reflect_tos {
            return None;
        }
        cmsg.tos.map(|t| if t & 3 == 3 { (t & !3) | 2 } else { t })
    }

    /// The source a reply to a datagram that arrived on socket `sock`
    /// should leave from: the address the datagram was sent to, so that a
    /// client that sent to one of several addresses of this host (and
    /// checks, as connected sockets and resolvers do) gets its answer from
    /// that address. Only for a socket bound to the wildcard address and
    /// not connected (otherwise the kernel already sends from the bound
    /// address). Not from a group or a broadcast address: IPv4 uses the
    /// kernel's `ipi_spec_dst` (the receiving interface's address for
    /// those), IPv6 lets the kernel choose. A link-local IPv6 source goes
    /// out of the interface the datagram came in on.
    pub fn reply_source(&self, sock: u16, cmsg: &RecvCmsg) -> SrcIp {
        let i = usize::from(sock);
        let wildcard = self
            .socks
            .local
            .get(i)
            .is_some_and(|a| a.ip().is_unspecified());
        if !wildcard || self.socks.connected.get(i).is_some_and(|c| c.is_some()) {
            return SrcIp::Any;
        }
        match cmsg.answer_from() {
            Some(IpAddr::V4(a)) if self.v6(i) => SrcIp::V6(a.to_ipv6_mapped(), 0),
            Some(IpAddr::V4(a)) => SrcIp::V4(a),
            Some(IpAddr::V6(a)) if self.v6(i) => {
                let link_local = a.is_unicast_link_local();
                SrcIp::V6(a, if link_local { cmsg.ifindex } else { 0 })
            }
            _ => SrcIp::Any,
        }
    }

    /// Queues the bytes of a lent slot (no copy).
    pub fn send_lent(
        &mut self,
        sock: u16,
        lent: &Lent,
        dst: RawAddr,
        segment: Option<NonZeroU16>,
        src: SrcIp,
        tos: Option<u8>,
    ) -> Result<(), SendError> {
        let t = Transmit {
            segment,
            src,
            tos,
            ..Transmit::new(sock, lent.slot(), lent.off, lent.len, dst)
        };
        let Some(retried) = self.send_at_once(&t, lent.bytes()) else {
            return Ok(());
        };
        self.push(Transmit { retried, ..t })
    }

    /// Queues one send of a slot's bytes, if the queue has room. A send to
    /// the socket's connected peer goes without an address (the kernel's
    /// cached route).
    pub fn push(&mut self, t: Transmit) -> Result<(), SendError> {
        self.enqueue(t, None)
    }

    /// [`Core::push`], or with `pieces` its bytes cut into pieces of that
    /// size, each its own send: a datagram, or with a segment size a
    /// train (all of them, or none). Every queued send gets
    /// the asked-for timestamp ID, whether the socket's own `UDP_SEGMENT`
    /// cuts it, and the empty address for the connected peer.
    fn enqueue(&mut self, mut t: Transmit, pieces: Option<NonZeroU32>) -> Result<(), SendError> {
        if t.ts_id.is_none() {
            t.ts_id = self.stamp_next.take();
        }
        t.socket_segments = t.segment.is_some() && t.segment == self.socket_segment;
        self.to_peer(&mut t);
        let queued = match pieces {
            None => self.queue.try_push(&mut self.pool, t),
            Some(size) => self.queue.try_push_pieces(&mut self.pool, t, size),
        };
        if queued {
            Ok(())
        } else {
            self.stats.c.send_exhausted.add(1);
            Err(SendError::Exhausted)
        }
    }

    /// Connects socket `sock` to `peer` (`None`: disconnects). Sends already
    /// queued for the old peer keep its address.
    pub fn set_peer(&mut self, sock: usize, peer: Option<SocketAddr>) -> std::io::Result<()> {
        let fd = self.fd(sock)?;
        self.last_dest = None;
        if let Some(old) = self.socks.connected[sock] {
            for t in self
                .queue
                .iter_mut()
                .filter(|t| usize::from(t.sock) == sock)
            {
                if t.dst.len() == 0 {
                    t.dst = old;
                }
            }
        }
        match peer {
            Some(p) => {
                let raw = RawAddr::from_socket_addr(p, self.v6(sock));
                sys::socket::connect(fd, &raw)?;
                self.socks.connected[sock] = Some(raw);
            }
            None => {
                sys::socket::disconnect(fd)?;
                self.socks.connected[sock] = None;
                // Linux unhashes a socket whose port the kernel picked (bound
                // to port 0) when it disconnects, and the port is lost: bind
                // it again to the port it had.
                if sys::socket::local_port(fd)? == 0 {
                    let local = RawAddr::from_socket_addr(self.socks.local[sock], self.v6(sock));
                    sys::socket::bind(fd, &local)?;
                }
            }
        }
        Ok(())
    }

    /// The destination a failed send was for, as the handler knows it.
    pub fn peer_of(&self, t: &Transmit) -> Option<SocketAddr> {
        match (t.dst.len(), self.socks.connected[usize::from(t.sock)]) {
            (0, Some(c)) => c.to_socket_addr(),
            _ => t.dst.to_socket_addr(),
        }
        .map(sys::canonical)
    }

    /// Socket `sock`'s kernel drop counter reads `now` (from `SO_RXQ_OVFL`
    /// or `SO_MEMINFO`): the difference since the last reading is added.
    pub fn note_drops(&mut self, sock: usize, now: u32) {
        if let Some(seen) = self.drops_seen.get_mut(sock) {
            // The counter only grows; a smaller value is a wrap of the u32.
            let new = now.wrapping_sub(*seen);
            if new > 0 && new < u32::MAX / 2 {
                self.stats.c.kernel_drops.add(u64::from(new));
                *seen = now;
            }
        }
    }

    /// At a stop: reads and drops what is still queued at the sockets,
    /// counted in `unread_at_stop` (bounded: what a flood adds meanwhile
    /// is not waited for).
    pub fn discard_unread(&mut self) {
        const LIMIT: u64 = 1 << 20;
        for &fd in &self.socks.fds {
            self.stats
                .c
                .unread_at_stop
                .add(sys::socket::discard_queued(fd, LIMIT));
        }
    }

    /// Reads every socket's drop counter (`SO_MEMINFO`): drops after the
    /// last datagram a socket delivered are counted too.
    pub fn read_drops(&mut self) {
        for sock in 0..self.socks.fds.len() {
            if let Ok(d) = sys::socket::drops(self.socks.fds[sock]) {
                self.note_drops(sock, d);
            }
        }
        self.drops_read = sys::clock::coarse();
    }

    /// Makes GSO trains of small datagrams queued back to back
    /// (`Config::coalesce`), counted in `coalesced`: before each send.
    #[inline]
    pub fn coalesce_queue(&mut self) {
        let n = self.queue.coalesce(&mut self.pool);
        self.stats.c.coalesced.add(n as u64);
    }

    /// Publishes what is not shared as it is counted (once per loop
    /// iteration): the pool's gauges, failed sends by errno, and the
    /// sockets' drop counters, read when 100 ms have passed.
    pub fn publish(&mut self) {
        if sys::clock::coarse().saturating_sub(self.drops_read) >= DROPS_EVERY {
            self.read_drops();
        }
        let c = self.pool.counts();
        self.shared.stats.publish(&mut self.stats, c.total, c.out);
    }
}

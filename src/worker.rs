//! State every backend shares: the pool, the queue of sends the handler
//! asked for, timers, counters, and the handler dispatch.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::bufring::{Lent, Pool};
use crate::handler::{Datagram, ErrorEvent, Handler, Inbox, SendError, Transport};
use crate::sys::{self, RawAddr, RecvCmsg};
use std::os::fd::RawFd;

/// Errors the kernel explains in the socket error queue.
pub(crate) fn is_icmp_errno(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNREFUSED
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EMSGSIZE
            | libc::EHOSTDOWN
    )
}

/// Bytes reserved at the start of every slot, before the payload. The uring
/// backend's kernel writes `io_uring_recvmsg_out` (16 bytes), the name and
/// the control data there; the other backends leave it unused so that every
/// backend truncates at the same payload size.
pub const HEADROOM: usize = 16 + sys::NAME_LEN + sys::RECV_CMSG_LEN;

/// A send the handler asked for, waiting for the backend to submit it.
#[derive(Clone, Copy)]
pub(crate) struct Transmit {
    /// Index of the worker's socket to send from.
    pub sock: u16,
    pub slot: u32,
    pub off: u32,
    pub len: u32,
    pub dst: RawAddr,
    /// GSO segment size; 0 for a plain datagram.
    pub segment: u16,
    /// Sent again after a failure that reported an earlier datagram's error.
    pub retried: bool,
}

/// Largest errno tracked one by one; larger ones share the last bucket.
pub const MAX_ERRNO: usize = 134;

/// Counters a worker publishes for other threads.
pub(crate) struct SharedStats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub truncated: AtomicU64,
    pub enobufs: AtomicU64,
    pub kernel_drops: AtomicU64,
    pub send_exhausted: AtomicU64,
    pub error_events: AtomicU64,
    pub recv_arms: AtomicU64,
    pub invalid_completions: AtomicU64,
    pub slots_total: AtomicU64,
    pub slots_out: AtomicU64,
    pub gso_disabled: AtomicBool,
    pub send_errors: [AtomicU64; MAX_ERRNO + 1],
}

impl SharedStats {
    pub fn new() -> Self {
        SharedStats {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            enobufs: AtomicU64::new(0),
            kernel_drops: AtomicU64::new(0),
            send_exhausted: AtomicU64::new(0),
            error_events: AtomicU64::new(0),
            recv_arms: AtomicU64::new(0),
            invalid_completions: AtomicU64::new(0),
            slots_total: AtomicU64::new(0),
            slots_out: AtomicU64::new(0),
            gso_disabled: AtomicBool::new(false),
            send_errors: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The worker's own counters, published to [`SharedStats`] once per loop.
pub(crate) struct LocalStats {
    pub received: u64,
    pub sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub truncated: u64,
    pub enobufs: u64,
    pub kernel_drops: u64,
    pub send_exhausted: u64,
    pub error_events: u64,
    pub recv_arms: u64,
    pub invalid_completions: u64,
    pub send_errors: [u64; MAX_ERRNO + 1],
    /// A send error was counted since the last publish.
    pub send_errors_dirty: bool,
}

impl Default for LocalStats {
    fn default() -> Self {
        LocalStats {
            received: 0,
            sent: 0,
            bytes_received: 0,
            bytes_sent: 0,
            truncated: 0,
            enobufs: 0,
            kernel_drops: 0,
            send_exhausted: 0,
            error_events: 0,
            recv_arms: 0,
            invalid_completions: 0,
            send_errors: [0; MAX_ERRNO + 1],
            send_errors_dirty: false,
        }
    }
}

/// What the engine shares with one worker thread.
pub(crate) struct WorkerShared {
    pub stop: AtomicBool,
    pub stats: SharedStats,
    pub inbox: Arc<Inbox>,
}

/// Backend-independent worker state.
pub(crate) struct Core {
    pub pool: Pool,
    pub queue: Vec<Transmit>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    pub stats: LocalStats,
    pub v6: bool,
    /// Whether the kernel accepts UDP_SEGMENT on this socket (turned off for
    /// good after an EIO/EINVAL, and the train is resent segment by segment).
    pub gso: bool,
    /// Bound address of each of the worker's sockets.
    pub local_addrs: Vec<SocketAddr>,
    /// Descriptor of each of the worker's sockets.
    pub fds: Vec<RawFd>,
    /// The peer each socket is connected to, if any: sends to it go
    /// without an address, so the kernel uses the socket's cached route.
    pub connected: Vec<Option<RawAddr>>,
    pub index: usize,
    /// Spin instead of sleeping when idle (Config::busy_poll).
    pub busy_poll: bool,
    pub inbox: Arc<Inbox>,
    pub shared: Arc<WorkerShared>,
}

impl Core {
    pub fn new(
        pool: Pool,
        local_addrs: Vec<SocketAddr>,
        fds: Vec<RawFd>,
        index: usize,
        gso: bool,
        shared: Arc<WorkerShared>,
    ) -> Self {
        let total = pool.counts().total as usize;
        Core {
            pool,
            queue: Vec::with_capacity(total * 2),
            timers: BinaryHeap::with_capacity(64),
            stats: LocalStats::default(),
            v6: local_addrs[0].is_ipv6(),
            gso,
            connected: vec![None; local_addrs.len()],
            local_addrs,
            fds,
            index,
            busy_poll: false,
            inbox: shared.inbox.clone(),
            shared,
        }
    }

    pub fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Hands a received datagram to the handler, then ends the lending.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch<H: Handler>(
        &mut self,
        h: &mut H,
        sock: u16,
        mut lent: Lent,
        src: RawAddr,
        truncated: bool,
        cmsg: RecvCmsg,
    ) {
        let src_addr = match src.to_socket_addr() {
            Some(a) => sys::canonical(a),
            None => {
                // No usable source address (should not happen for UDP): a
                // counted drop, not a handler call with a made-up address.
                self.stats.invalid_completions += 1;
                self.pool.release(lent);
                return;
            }
        };
        if let Some(d) = cmsg.rxq_ovfl {
            self.stats.kernel_drops = self.stats.kernel_drops.max(d as u64);
        }
        if truncated {
            self.stats.truncated += 1;
        }
        let dgram = Datagram {
            sock,
            lent: &mut lent,
            src,
            src_addr,
            truncated,
            segment_size: cmsg.gro_segment.filter(|&s| s > 0),
        };
        self.stats.received += dgram.segments() as u64;
        self.stats.bytes_received += dgram.payload().len() as u64;
        h.on_datagram(dgram, &mut Transport { core: self });
        self.pool.release(lent);
    }

    pub fn error_event<H: Handler>(&mut self, h: &mut H, ev: ErrorEvent) {
        self.stats.error_events += 1;
        h.on_error(ev, &mut Transport { core: self });
    }

    /// Drains the socket error queue into handler events.
    pub fn drain_errors<H: Handler>(&mut self, h: &mut H, fd: std::os::fd::RawFd) -> usize {
        let mut n = 0;
        // Read synchronously; events are few and each is a handler call.
        while let Some(entry) = sys::read_errqueue(fd) {
            n += 1;
            match entry {
                Some(e) => self.error_event(h, ErrorEvent::from_queued(e)),
                None => self.stats.invalid_completions += 1,
            }
        }
        // A pending SO_ERROR without a queue entry (e.g. no IP_RECVERR on a
        // v4-mapped path) still becomes an event.
        if n == 0
            && let Some(errno) = sys::take_socket_error(fd)
        {
            self.error_event(h, ErrorEvent::from_errno(errno, None));
            n += 1;
        }
        n
    }

    /// A send failed with `errno`: count it, and for errors the kernel
    /// explains (ICMP, EMSGSIZE) hand the handler the error queue's account,
    /// or, if the queue is empty, an event built from the errno (with the
    /// path MTU of a connected socket for EMSGSIZE).
    pub fn send_failed<H: Handler>(&mut self, h: &mut H, t: &Transmit, errno: i32) {
        if !is_icmp_errno(errno) {
            self.count_send_error(errno);
            return;
        }
        let fd = self.fds[t.sock as usize];
        let reported = self.drain_errors(h, fd);
        // An unconnected socket reports an ICMP error about one datagram on
        // the next send, whatever its destination: that send did not go out.
        // With the error now read, send it once more. (Not EMSGSIZE: that is
        // about this datagram, and would fail the same way.)
        if !t.retried && errno != libc::EMSGSIZE {
            self.pool.hold(t.slot);
            self.queue.push(Transmit {
                retried: true,
                ..*t
            });
            return;
        }
        self.count_send_error(errno);
        if reported > 0 {
            return;
        }
        let peer = match (t.dst.len(), self.connected[t.sock as usize]) {
            (0, Some(c)) => c.to_socket_addr(),
            _ => t.dst.to_socket_addr(),
        }
        .map(sys::canonical);
        let ev = match ErrorEvent::from_errno(errno, peer) {
            ErrorEvent::MessageTooLong { peer, mtu: None } => ErrorEvent::MessageTooLong {
                peer,
                mtu: sys::path_mtu(fd, self.v6).ok(),
            },
            ev => ev,
        };
        self.error_event(h, ev);
    }

    /// Connects socket `sock` to `peer` (`None`: disconnects). Sends already
    /// queued for the old peer keep its address.
    pub fn set_peer(&mut self, sock: usize, peer: Option<SocketAddr>) -> std::io::Result<()> {
        let fd = *self.fds.get(sock).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no socket with that index",
            )
        })?;
        if let Some(old) = self.connected[sock] {
            for t in self.queue.iter_mut().filter(|t| t.sock as usize == sock) {
                if t.dst.len() == 0 {
                    t.dst = old;
                }
            }
        }
        match peer {
            Some(p) => {
                let raw = RawAddr::from_socket_addr(p, self.v6);
                sys::connect(fd, &raw)?;
                self.connected[sock] = Some(raw);
            }
            None => {
                sys::disconnect(fd)?;
                self.connected[sock] = None;
                // Linux unhashes a socket whose port the kernel picked (bound
                // to port 0) when it disconnects, and the port is lost: bind
                // it again to the port it had.
                if sys::local_port(fd)? == 0 {
                    let local = RawAddr::from_socket_addr(self.local_addrs[sock], self.v6);
                    sys::bind(fd, &local)?;
                }
            }
        }
        Ok(())
    }

    pub fn start<H: Handler>(&mut self, h: &mut H) {
        h.on_start(&mut Transport { core: self });
    }

    pub fn send_copy(
        &mut self,
        sock: u16,
        data: &[u8],
        to: SocketAddr,
        segment: u16,
    ) -> Result<(), SendError> {
        if data.len() > self.pool.slot_size()
            || (segment == 0 && data.len() > crate::MAX_UDP_PAYLOAD)
        {
            return Err(SendError::TooLarge);
        }
        let Some(mut lent) = self.pool.alloc_send() else {
            self.stats.send_exhausted += 1;
            return Err(SendError::Exhausted);
        };
        lent.set_window(0, data.len() as u32);
        lent.bytes_mut().copy_from_slice(data);
        let dst = RawAddr::from_socket_addr(to, self.v6);
        self.push(sock, lent.slot(), 0, data.len() as u32, dst, segment);
        self.pool.release(lent);
        Ok(())
    }

    pub fn send_lent(&mut self, sock: u16, lent: &Lent, dst: RawAddr, segment: u16) {
        self.push(sock, lent.slot(), lent.off, lent.len, dst, segment);
    }

    /// Queues one transmit, holding its slot; a train is cut into plain
    /// datagrams when GSO is off.
    pub fn push(&mut self, sock: u16, slot: u32, off: u32, len: u32, dst: RawAddr, segment: u16) {
        let dst = match self.connected.get(sock as usize) {
            Some(Some(peer)) if peer.same(&dst) => RawAddr::zeroed(),
            _ => dst,
        };
        if segment == 0 || len <= segment as u32 {
            self.pool.hold(slot);
            self.queue.push(Transmit {
                sock,
                slot,
                off,
                len,
                dst,
                segment: 0,
                retried: false,
            });
            return;
        }
        if self.gso {
            self.pool.hold(slot);
            self.queue.push(Transmit {
                sock,
                slot,
                off,
                len,
                dst,
                segment,
                retried: false,
            });
            return;
        }
        let mut o = 0;
        while o < len {
            let l = (segment as u32).min(len - o);
            self.pool.hold(slot);
            self.queue.push(Transmit {
                sock,
                slot,
                off: off + o,
                len: l,
                dst,
                segment: 0,
                retried: false,
            });
            o += l;
        }
    }

    /// A GSO send failed with EIO/EINVAL: turn GSO off and queue the train
    /// again as plain datagrams (the caller drops its own reference).
    pub fn gso_failed(&mut self, t: &Transmit) {
        self.gso = false;
        self.shared
            .stats
            .gso_disabled
            .store(true, Ordering::Relaxed);
        self.push(t.sock, t.slot, t.off, t.len, t.dst, t.segment);
    }

    pub fn count_sent(&mut self, t: &Transmit) {
        self.stats.sent += if t.segment > 0 {
            t.len.div_ceil(t.segment as u32) as u64
        } else {
            1
        };
        self.stats.bytes_sent += t.len as u64;
    }

    pub fn count_send_error(&mut self, errno: i32) {
        let i = (errno.max(0) as usize).min(MAX_ERRNO);
        self.stats.send_errors[i] += 1;
        self.stats.send_errors_dirty = true;
    }

    pub fn call_later(&mut self, delay: Duration, token: u64) {
        self.timers.push(Reverse((Instant::now() + delay, token)));
    }

    /// Time until the next timer, if any.
    pub fn next_timer(&self) -> Option<Duration> {
        self.timers
            .peek()
            .map(|Reverse((t, _))| t.saturating_duration_since(Instant::now()))
    }

    /// Fires every timer that is due.
    pub fn fire_timers<H: Handler>(&mut self, h: &mut H) {
        if self.timers.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(Reverse((t, token))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            h.on_timer(token, &mut Transport { core: self });
        }
    }

    /// Moves datagrams posted by [`crate::Sender`]s into send slots.
    pub fn drain_inbox(&mut self) {
        loop {
            let item = {
                let mut q = self.inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
                q.pop_front()
            };
            let Some((data, to)) = item else { break };
            // A failure here is already counted (send_exhausted) or cannot
            // happen (size checked by Sender).
            let _ = self.send_copy(0, &data, to, 0);
        }
    }

    /// Copies local counters to the shared ones (once per loop iteration).
    pub fn publish(&mut self) {
        let s = &self.shared.stats;
        let l = &self.stats;
        s.received.store(l.received, Ordering::Relaxed);
        s.sent.store(l.sent, Ordering::Relaxed);
        s.bytes_received.store(l.bytes_received, Ordering::Relaxed);
        s.bytes_sent.store(l.bytes_sent, Ordering::Relaxed);
        s.truncated.store(l.truncated, Ordering::Relaxed);
        s.enobufs.store(l.enobufs, Ordering::Relaxed);
        s.kernel_drops.store(l.kernel_drops, Ordering::Relaxed);
        s.send_exhausted.store(l.send_exhausted, Ordering::Relaxed);
        s.error_events.store(l.error_events, Ordering::Relaxed);
        s.recv_arms.store(l.recv_arms, Ordering::Relaxed);
        s.invalid_completions
            .store(l.invalid_completions, Ordering::Relaxed);
        let c = self.pool.counts();
        s.slots_total.store(c.total as u64, Ordering::Relaxed);
        s.slots_out.store(c.out as u64, Ordering::Relaxed);
        // The per-errno table only when it changed: it is 135 entries.
        if l.send_errors_dirty {
            for (a, v) in s.send_errors.iter().zip(l.send_errors.iter()) {
                if *v != 0 {
                    a.store(*v, Ordering::Relaxed);
                }
            }
            self.stats.send_errors_dirty = false;
        }
    }
}

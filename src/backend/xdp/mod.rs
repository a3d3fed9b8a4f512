//! The `xdp` backend: AF_XDP beside the ordinary sockets.
//!
//! The engine attaches one XDP program to the interface ([`XdpAttach`]);
//! each worker binds an AF_XDP socket to its receive queue over its own
//! pool ([`XdpPort`]) and keeps its ordinary socket too. Frames for the
//! engine's port skip the kernel's IP and UDP stack: the worker parses and
//! checks them itself ([`crate::frame`]), the guard and handler see the
//! same [`Datagram`](crate::Datagram) as on any backend, and a reply goes
//! back in the frame it came in, headers rewritten. What the program
//! passes (fragments, IP options, another queue's frames when there are
//! fewer workers than queues) reaches the ordinary socket, which this loop
//! also reads.
//!
//! Sends become frames when the kernel knows the way: the route (netlink)
//! leaves by this interface and the next hop's MAC is in the neighbour
//! table. Otherwise (the first datagram to a new neighbour, another
//! interface, longer than the MTU) the datagram goes out through the
//! ordinary socket, which also makes the kernel resolve the neighbour;
//! counted in `xdp_tx_via_socket`. Lookups are cached per destination for
//! [`ROUTE_TTL`](routes::ROUTE_TTL) ([`UNRESOLVED_TTL`](routes::UNRESOLVED_TTL) while the neighbour is unknown), at
//! most [`ROUTE_CACHE`](routes::ROUTE_CACHE) of them, and at most [`LOOKUPS_PER_FLUSH`] are made
//! per batch: answers to many new sources at once (a flood, forged or not)
//! cost the worker no more than the kernel's own path.
//!
//! A frame that arrived with an 802.1Q tag is answered (or forwarded) with
//! the same tag; datagrams sent by copy leave untagged (bind the VLAN's own
//! interface for those). A driver that strips tags on receive
//! (`rx-vlan-offload`) hides them from XDP: then attach to the VLAN's
//! interface, or turn the offload off.
//!
//! What it cannot do: GSO or GRO (one frame per datagram; trains are cut
//! into datagrams before they are sent), frames longer than a chunk
//! (3,840 bytes; counted by the kernel in `xdp_rx_dropped`), error events
//! for frames (ICMP about them reaches the ordinary socket only when the
//! kernel sent the datagram), TX timestamps, TOS reflection by socket
//! option (the TOS byte is written per frame instead).

mod attach;
mod routes;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use attach::context;
pub(crate) use attach::{XdpAttach, queues};
use routes::{LOOKUPS_PER_FLUSH, Routes};

use crate::backend::worker::Worker;
use crate::bufring::Lent;
use crate::config::Config;
use crate::frame::{Checksum, FrameError, Headers, UdpFrame};
use crate::sys::mmsg::MmsgBufs;
use crate::sys::xdp::RingSizes;
use crate::sys::xdp::bpf;
use crate::sys::xdp::netlink::Netlink;
use crate::sys::xdp::port::{Refused, XdpPort};
use crate::sys::{self, RawAddr, RecvMeta, SrcIp, Transmit};
use crate::worker::handler::Handler;

/// Frames taken per pass before the rest of the loop gets a turn.
const RX_BUDGET: u32 = 64;
/// How long sends may still go out after a stop.
const SEND_GRACE: Duration = Duration::from_millis(250);
/// How often the kernel's XDP counters are read.
const STATS_EVERY: Duration = Duration::from_millis(100);
/// How often an idle worker wakes to see whether its socket still has
/// its interface: one removed (or its driver unbound) unbinds the socket
/// with `ENETDOWN` as its error, and no wake-up (`poll` reports nothing on
/// an unbound AF_XDP socket).
const LINK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The loop's state beside the worker.
struct Loop {
    port: XdpPort,
    routes: Routes,
    mac: [u8; 6],
    mtu: usize,
    hops: u8,
    /// The TOS byte a send without its own carries (`Config::tos`).
    tos: u8,
    read_hops: bool,
    fds: Vec<RawFd>,
    sock_rx: MmsgBufs,
    sock_tx: MmsgBufs,
    slow: Vec<Transmit>,
    frames: Vec<(Result<UdpFrame, FrameError>, Lent)>,
}

impl Loop {
    /// The headers for `t`, or `None` when it must go through the socket.
    fn headers<H: Handler>(
        &mut self,
        w: &Worker<H>,
        t: &Transmit,
        now: Instant,
    ) -> Option<Headers> {
        if t.segment.is_some() {
            return None;
        }
        let sock = usize::from(t.sock);
        let dst = match t.dst.to_socket_addr() {
            Some(d) => sys::canonical(d),
            None => w.core.peer_of(t)?,
        };
        let local = *w.core.socks.local.get(sock)?;
        let way = self.routes.way(dst.ip(), now);
        let mac = way.mac?;
        let src_ip = match t.src {
            SrcIp::V4(a) => IpAddr::V4(a),
            SrcIp::V6(a, _) => sys::canonical_ip(IpAddr::V6(a)),
            SrcIp::Any => {
                let l = sys::canonical_ip(local.ip());
                if l.is_unspecified() { way.src? } else { l }
            }
        };
        if src_ip.is_ipv4() != dst.ip().is_ipv4() {
            return None;
        }
        let h = Headers {
            dst_mac: mac,
            src_mac: self.mac,
            vlan: self.port.vlan_of(t.slot),
            src: SocketAddr::new(src_ip, local.port()),
            dst,
            hops: self.hops,
            tos: t.tos.unwrap_or(self.tos),
        };
        // The IP packet against the MTU (a tag is not part of it).
        let l2 = crate::frame::ETH_LEN + h.vlan.map_or(0, |_| crate::frame::VLAN_LEN);
        (h.len() - l2 + t.len as usize <= self.mtu).then_some(h)
    }

    /// Sends what the handler queued: frames where the kernel knows the
    /// way, the rest through the socket. Returns whether frames went on
    /// the TX ring.
    fn flush<H: Handler>(&mut self, w: &mut Worker<H>) -> bool {
        let now = Instant::now();
        self.routes.budget = LOOKUPS_PER_FLUSH;
        let mut k = 0;
        let mut framed = false;
        while let Some(t) = w.core.queue.as_slice().get(k).copied() {
            match self.headers(w, &t, now) {
                Some(h) => match self.port.send(&mut w.core.pool, t, &h) {
                    Ok(()) => framed = true,
                    Err((Refused::Full, _)) => break,
                    Err((Refused::Unfit, t)) => self.slow.push(t),
                },
                None => self.slow.push(t),
            }
            k += 1;
        }
        w.core.queue.consume(k);
        w.core
            .stats
            .c
            .xdp_tx_copies
            .add(std::mem::take(&mut self.port.copies));
        if framed && let Err(e) = self.port.kick() {
            w.core
                .stats
                .send_error(e.raw_os_error().unwrap_or(libc::EIO));
        }
        self.send_slow(w);
        framed
    }

    /// Sends through the ordinary sockets.
    fn send_slow<H: Handler>(&mut self, w: &mut Worker<H>) {
        let mut at = 0;
        while at < self.slow.len() {
            let fd = self.fds[usize::from(self.slow[at].sock)];
            match self.sock_tx.send(fd, &w.core.pool, &self.slow[at..], false) {
                Ok(n) => {
                    for t in &self.slow[at..at + n] {
                        w.core.stats.c.xdp_tx_via_socket.add(t.datagrams());
                        w.complete(*t, Ok(()));
                    }
                    at += n.max(1);
                }
                Err(e) => {
                    let t = self.slow[at];
                    match e.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::EAGAIN) => w.give_up(t),
                        Some(errno) => w.complete(t, Err(errno)),
                        None => w.complete(t, Err(libc::EIO)),
                    }
                    at += 1;
                }
            }
        }
        self.slow.clear();
    }

    /// Takes received frames and hands them to the handler.
    fn receive<H: Handler>(&mut self, w: &mut Worker<H>) -> u32 {
        self.port.refill(&mut w.core.pool);
        let mut invalid = 0;
        let n = self
            .port
            .recv(&mut w.core.pool, RX_BUDGET, &mut invalid, &mut self.frames);
        w.core.stats.c.invalid_completions.add(invalid);
        for (parsed, lent) in self.frames.drain(..) {
            // A unicast frame for another host's MAC (a promiscuous
            // interface hands those over too) is not ours to answer.
            let parsed = parsed.and_then(|f| {
                let unicast = f.dst_mac[0] & 1 == 0;
                if unicast && f.dst_mac != self.mac {
                    Err(FrameError::NotPlainUdp)
                } else {
                    Ok(f)
                }
            });
            match parsed {
                Ok(f) => {
                    let c = &w.core.stats.c;
                    c.xdp_rx.add(1);
                    c.xdp_csum_partial
                        .add(u64::from(f.checksum == Checksum::Partial));
                    let meta = RecvMeta {
                        sock: 0,
                        src: RawAddr::from_socket_addr(f.src, w.core.v6(0)),
                        len: f.payload_len as u32,
                        truncated: false,
                        cmsg: sys::cmsg::RecvCmsg {
                            dst: Some(sys::canonical_ip(f.dst.ip())),
                            ifindex: self.routes.ifindex,
                            tos: Some(f.tos),
                            hops: self.read_hops.then_some(f.hops),
                            ..Default::default()
                        },
                    };
                    w.dispatch(meta, lent);
                }
                Err(e) => {
                    let c = &w.core.stats.c;
                    if e == FrameError::BadChecksum {
                        c.xdp_bad_checksums.add(1);
                    } else {
                        c.xdp_bad_frames.add(1);
                    }
                    w.core.pool.release(lent);
                }
            }
        }
        n
    }

    /// Reads what the ordinary sockets received (what the program passed).
    fn receive_sockets<H: Handler>(&mut self, w: &mut Worker<H>) -> io::Result<bool> {
        let mut got = false;
        for i in 0..self.fds.len() {
            loop {
                match self.sock_rx.recv(self.fds[i], &mut w.core.pool, false) {
                    Ok(0) => break,
                    Ok(n) => {
                        got = true;
                        for k in 0..n {
                            match self.sock_rx.take(k, i as u16, &mut w.core.pool) {
                                Some((lent, meta)) => w.dispatch(meta, lent),
                                None => w.invalid(),
                            }
                        }
                        if n < self.sock_rx.batch() {
                            break;
                        }
                    }
                    Err(e) => match e.raw_os_error() {
                        Some(libc::EAGAIN) => break,
                        Some(libc::EINTR) => continue,
                        Some(errno) if crate::error::is_icmp_errno(errno) => {
                            got = true;
                            w.socket_error(i, errno);
                        }
                        _ => return Err(e),
                    },
                }
            }
        }
        Ok(got)
    }

    /// Takes finished sends.
    fn complete<H: Handler>(&mut self, w: &mut Worker<H>) -> u32 {
        let n = self.port.complete(|t, scratch| {
            w.core.stats.c.xdp_tx.add(t.datagrams());
            if scratch {
                w.core.pool.unreserve(t.slot);
                w.account(&t, Ok(()));
            } else {
                w.complete(t, Ok(()))
            }
        });
        w.core
            .stats
            .c
            .invalid_completions
            .add(std::mem::take(&mut self.port.mismatched));
        n
    }

    fn read_kernel_stats<H: Handler>(&self, w: &mut Worker<H>) {
        if let Ok(s) = self.port.kernel_stats() {
            let c = &w.core.stats.c;
            c.xdp_rx_dropped.set(s.rx_dropped + s.rx_invalid);
            c.xdp_rx_ring_full.set(s.rx_ring_full);
            c.xdp_fill_ring_empty.set(s.fill_ring_empty);
            c.xdp_tx_invalid.set(s.tx_invalid);
        }
    }
}

/// Opens the worker's AF_XDP socket on its queue and puts it in the map.
fn open<H: Handler>(
    sockets: &[socket2::Socket],
    w: &mut Worker<H>,
    cfg: &Config,
    attach: &XdpAttach,
) -> io::Result<Loop> {
    sockets.iter().try_for_each(|s| s.set_nonblocking(true))?;
    let queue = w.core.index as u32;
    if queue >= attach.link.rx_queues {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "xdp backend: {} has {} receive queue(s): one worker per queue at most",
                attach.iface, attach.link.rx_queues
            ),
        ));
    }
    let recv = w.core.pool.recv_home() as u32;
    let sizes = RingSizes {
        fill: (recv * 2).next_power_of_two().clamp(64, 1 << 16),
        rxtx: recv.next_power_of_two().clamp(64, 1 << 15),
    };
    let (port, why) = XdpPort::open(&mut w.core.pool, attach.ifindex, queue, sizes, cfg.xdp_copy)
        .map_err(context(&format!(
        "binding an AF_XDP socket to {} queue {queue}",
        attach.iface
    )))?;
    if let Some(why) = why {
        attach.note(format!("{}: copy mode: {why}", attach.iface));
    }
    bpf::xskmap_set(&attach.map, queue, port.fd()).map_err(context("filling the XSKMAP"))?;
    let batch = cfg.batch.min(64);
    Ok(Loop {
        port,
        routes: Routes {
            nl: Netlink::new().map_err(context("opening netlink"))?,
            ifindex: attach.ifindex,
            cache: HashMap::new(),
            budget: LOOKUPS_PER_FLUSH,
        },
        mac: attach.link.mac,
        mtu: attach.link.mtu as usize,
        hops: if cfg.guard.marks() {
            crate::guard::MARK_HOPS
        } else {
            64
        },
        tos: cfg.tos.unwrap_or(0),
        read_hops: cfg.guard.reads_marks(),
        fds: sockets.iter().map(|s| s.as_raw_fd()).collect(),
        sock_rx: MmsgBufs::new(batch),
        sock_tx: MmsgBufs::new(batch),
        slow: Vec::new(),
        frames: Vec::with_capacity(RX_BUDGET as usize),
    })
}

/// Runs a worker on its queue of `attach`'s interface until its stop flag
/// is set.
pub(crate) fn run<H: Handler>(
    sockets: &[socket2::Socket],
    w: &mut Worker<H>,
    cfg: &Config,
    attach: &XdpAttach,
    ready: &mut dyn FnMut(io::Result<()>),
) -> io::Result<()> {
    let mut l = match open(sockets, w, cfg, attach) {
        Ok(l) => l,
        Err(e) => {
            let msg = e.to_string();
            ready(Err(e));
            return Err(io::Error::other(msg));
        }
    };
    let wake = w.core.shared.inbox.wake.fd();
    let mut pollfds: Vec<libc::pollfd> = std::iter::once(l.port.fd())
        .chain(l.fds.iter().copied())
        .chain(std::iter::once(wake))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let n = pollfds.len();
    w.core.stats.c.recv_arms.add(1);
    l.port.refill(&mut w.core.pool);
    ready(Ok(()));
    w.start();
    l.flush(w);
    let mut stats_at = Instant::now();
    let mut link_at = Instant::now();
    // Whether the sockets (and the eventfd) are worth a system call this turn.
    let mut check_sockets = true;
    let mut turns: u32 = 0;
    let result = loop {
        if w.core.stopping() {
            break Ok(());
        }
        turns = turns.wrapping_add(1);
        let mut busy = l.complete(w) > 0;
        busy |= l.receive(w) > 0;
        if check_sockets || turns % 64 == 0 {
            match l.receive_sockets(w) {
                Ok(got) => busy |= got,
                Err(e) => break Err(e),
            }
            if w.core.shared.inbox.wake.drain() || w.core.shared.inbox.pending() {
                w.drain_inbox();
            }
        }
        check_sockets = false;
        w.fire_timers();
        l.flush(w);
        while w.writable() {
            l.flush(w);
        }
        if stats_at.elapsed() >= STATS_EVERY {
            l.read_kernel_stats(w);
            stats_at = Instant::now();
        }
        if !w.end_turn(!busy) {
            continue;
        }
        // Sends on the TX ring complete without a wake-up: look again soon.
        let timeout = if w.core.busy_poll {
            Some(Duration::ZERO)
        } else if l.port.in_flight() > 0 || !w.core.queue.is_empty() {
            Some(Duration::from_micros(50))
        } else {
            Some(
                w.core
                    .timers
                    .next()
                    .map_or(LINK_CHECK_EVERY, |t| t.min(LINK_CHECK_EVERY)),
            )
        };
        for p in pollfds.iter_mut() {
            p.revents = 0;
        }
        sys::poll(&mut pollfds, timeout)?;
        if link_at.elapsed() >= LINK_CHECK_EVERY {
            link_at = Instant::now();
            if let Some(errno) = sys::take_socket_error(l.port.fd()) {
                let e = io::Error::from_raw_os_error(errno);
                break Err(io::Error::new(
                    e.kind(),
                    format!(
                        "xdp backend: {} is gone ({e}): the interface was removed or its \
                         driver unbound, and the AF_XDP socket with it",
                        attach.iface
                    ),
                ));
            }
        }
        check_sockets = pollfds[1..n].iter().any(|p| p.revents != 0);
        for (i, p) in pollfds[1..n - 1].iter().enumerate() {
            if p.revents & libc::POLLERR != 0 {
                w.drain_errors(i);
            }
        }
    };
    w.stop();
    // Sends get a grace period to go out and complete, then the rest is
    // cancelled; the socket closes and hands every chunk back.
    let start = Instant::now();
    loop {
        l.flush(w);
        l.complete(w);
        if (w.core.queue.is_empty() && l.port.in_flight() == 0) || start.elapsed() >= SEND_GRACE {
            break;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    w.cancel_queued();
    l.read_kernel_stats(w);
    let Loop { port, .. } = l;
    for (t, scratch) in port.close(&mut w.core.pool) {
        w.cancelled(&t);
        if scratch {
            w.core.pool.unreserve(t.slot);
        } else {
            w.core.pool.unref(t.slot);
        }
    }
    w.core.publish();
    result
}

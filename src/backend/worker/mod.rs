//! One worker: its state ([`Core`]) and its handler, and everything the
//! backends ask of them. A backend's loop moves bytes; what a received
//! datagram or a finished send *means* is decided here, once, for every
//! backend:
//!
//! - [`Worker::dispatch`]: a received datagram becomes a [`Datagram`] for
//!   the handler, then its slot is released (unless a send holds it).
//! - [`Worker::complete`]: a send's outcome. Success counts the datagrams;
//!   `EIO`/`EINVAL` on a GSO train turns GSO off and queues the train again
//!   as plain datagrams; an ICMP-class error reads the socket error queue
//!   into events and sends once more (the error was about an earlier
//!   datagram); anything else is counted under its errno.
//! - [`Worker::socket_error`]: an error the receive side reported.
//! - timers, the wake-up (inbox) and start/stop.
//!
//! The state itself ([`Core`]) and the API the handler sees live one floor
//! down, in `worker/`.

use std::time::Instant;

use crate::bufring::Lent;
use crate::error::{ErrorEvent, is_icmp_errno};
use crate::guard::Refusal;
use crate::sys::{self, RecvMeta, Transmit};
use crate::worker::Core;
use crate::worker::datagram::Datagram;
use crate::worker::handler::Handler;
use crate::worker::sender::Item;
use crate::worker::transport::Transport;

/// A worker's state and its handler.
pub(crate) struct Worker<H> {
    pub core: Core,
    pub handler: H,
    /// The handler panicked: what it said. It is called no more.
    failed: Option<String>,
    /// A send of the handler's was refused (`Exhausted`) since its last
    /// `on_writable`: call it when there is room again.
    writable_wanted: bool,
}

/// What a drain of a socket's error queue found.
#[derive(Default)]
struct Drained {
    /// Entries read (errors, TX timestamps, unknown ones), or 1 for a
    /// pending socket error without an entry.
    entries: usize,
    /// Among them, the kernel's local report that a send was too big for
    /// the path (`EMSGSIZE`, `SO_EE_ORIGIN_LOCAL`): about a send that
    /// failed, not an earlier datagram that left.
    too_big_here: bool,
    /// The MTU that report gave.
    mtu: Option<u32>,
}

/// What a panic said, as text.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

impl<H: Handler> Worker<H> {
    pub fn new(core: Core, handler: H) -> Self {
        Worker {
            core,
            handler,
            failed: None,
            writable_wanted: false,
        }
    }

    /// Calls the handler with its transport. A panic is caught here: the
    /// worker records it, stops (its loop winds down in order: the
    /// kernel's hold on the buffers is released before they are freed) and
    /// calls the handler no more. Catching costs nothing until a panic.
    fn call(&mut self, f: impl FnOnce(&mut H, &mut Transport<'_>)) {
        if self.failed.is_some() {
            return;
        }
        let core = &mut self.core;
        let h = &mut self.handler;
        let refused = core.stats.c.send_exhausted.get();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(h, &mut Transport { core })
        }));
        // A send the handler made was refused for want of room: it hears
        // when there is room again (`on_writable`).
        self.writable_wanted |= self.core.stats.c.send_exhausted.get() != refused;
        if let Err(p) = r {
            let why = format!("handler panicked: {}", panic_text(p.as_ref()));
            self.core.shared.fail(why.clone());
            self.failed = Some(why);
        }
    }

    /// The worker is receiving: `on_start`.
    pub fn start(&mut self) {
        self.call(|h, tx| h.on_start(tx));
    }

    /// The worker has stopped receiving: `on_stop`.
    pub fn stop(&mut self) {
        if self.failed.is_none()
            && let Err(p) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handler.on_stop()))
        {
            let why = format!("handler panicked in on_stop: {}", panic_text(p.as_ref()));
            self.core.shared.fail(why.clone());
            self.failed = Some(why);
        }
    }

    /// Hands a received datagram to the handler, then ends the lending.
    pub fn dispatch(&mut self, mut meta: RecvMeta, mut lent: Lent) {
        self.core.stats.c.received_bufs.add(1);
        let Some(src_addr) = meta.src.to_socket_addr().map(sys::canonical) else {
            // No usable source address (should not happen for UDP): a
            // counted drop, not a handler call with a made-up address.
            self.core.stats.c.invalid_completions.add(1);
            self.core.pool.release(lent);
            return;
        };
        let core = &mut self.core;
        if meta.cmsg.dst.is_none()
            && let Some(&Some((ip, ifindex))) = core.socks.fixed_dst.get(usize::from(meta.sock))
        {
            // A socket bound to one address: that is where it was sent.
            meta.cmsg.dst = Some(ip);
            meta.cmsg.ifindex = ifindex;
        }
        if let Some(d) = meta.cmsg.rxq_ovfl {
            core.note_drops(usize::from(meta.sock), d);
        }
        let mut evicted = false;
        let verdict = core
            .guard
            .check(src_addr, meta.cmsg.dst, meta.cmsg.hops, &mut evicted);
        core.stats.c.guard_evictions.add(u64::from(evicted));
        if let Err(why) = verdict {
            let c = &core.stats.c;
            match why {
                Refusal::BadSource => &c.guard_bad_source,
                Refusal::Marked => &c.guard_marked,
                Refusal::Loop => &c.guard_loop,
                Refusal::Broadcast => &c.guard_broadcast,
                Refusal::Port => &c.guard_port,
                Refusal::NotAllowed => &c.guard_not_allowed,
                Refusal::Rate => &c.guard_rate,
            }
            .add(1);
            core.pool.release(lent);
            return;
        }
        let c = &core.stats.c;
        c.truncated.add(u64::from(meta.truncated));
        let dgram = Datagram {
            meta,
            lent: &mut lent,
            src_addr,
        };
        c.received.add(dgram.segments() as u64);
        c.bytes_received.add(dgram.payload().len() as u64);
        if self.failed.is_none() {
            // The datagram borrows the slot for the call only.
            let lent_ref: &mut Lent = dgram.lent;
            let meta = dgram.meta;
            let src_addr = dgram.src_addr;
            self.call(|h, tx| {
                h.on_datagram(
                    Datagram {
                        meta,
                        lent: lent_ref,
                        src_addr,
                    },
                    tx,
                )
            });
        }
        self.core.pool.release(lent);
    }

    /// A datagram that arrived after `on_stop`: counted, not handed over.
    pub fn discard(&mut self, meta: RecvMeta, lent: Lent) {
        let c = &self.core.stats.c;
        c.received_bufs.add(1);
        c.received.add(match meta.cmsg.gro_segment {
            Some(s) if meta.len > 0 => u64::from(meta.len.div_ceil(u32::from(s.get()))),
            _ => 1,
        });
        self.core.pool.release(lent);
    }

    /// Something the kernel handed over that cannot be used: counted.
    pub fn invalid(&mut self) {
        self.core.stats.c.invalid_completions.add(1);
    }

    /// Hands an error event about socket `sock` to the handler (which
    /// reads the socket with [`Transport::error_socket`]).
    pub fn error_event(&mut self, sock: usize, ev: ErrorEvent) {
        self.core.stats.c.error_events.add(1);
        self.core.error_sock = u16::try_from(sock).ok();
        self.call(|h, tx| h.on_error(ev, tx));
        self.core.error_sock = None;
    }

    /// Drains socket `sock`'s error queue into handler events; returns how
    /// many entries there were.
    pub fn drain_errors(&mut self, sock: usize) -> usize {
        self.drain_reports(sock).entries
    }

    /// [`Self::drain_errors`], saying what the entries were.
    fn drain_reports(&mut self, sock: usize) -> Drained {
        let mut d = Drained::default();
        let Ok(fd) = self.core.fd(sock) else {
            return d;
        };
        // Read synchronously; events are few and each is a handler call.
        while let Some(entry) = sys::read_errqueue(fd) {
            d.entries += 1;
            match entry {
                // A send refused as too big: the failed send is told by
                // `send_failed`, which knows where it was going (the
                // report's address has no port on an unconnected socket)
                // and tells it once however often it was tried.
                sys::Queued::Error(e)
                    if e.errno == libc::EMSGSIZE && e.origin == libc::SO_EE_ORIGIN_LOCAL =>
                {
                    d.too_big_here = true;
                    d.mtu = (e.info != 0).then_some(e.info).or(d.mtu);
                }
                sys::Queued::Error(e) => self.error_event(sock, ErrorEvent::from_queued(e)),
                sys::Queued::TxTimestamp { id, ns } => self.tx_timestamp(id, ns),
                sys::Queued::Unknown => self.invalid(),
            }
        }
        // A pending SO_ERROR without a queue entry (e.g. no IP_RECVERR on a
        // v4-mapped path) still becomes an event.
        if d.entries == 0
            && let Some(errno) = sys::take_socket_error(fd)
        {
            self.error_event(sock, ErrorEvent::from_errno(errno, None));
            d.entries += 1;
        }
        d
    }

    /// A TX timestamp for the send that asked under `id`: to the handler.
    pub fn tx_timestamp(&mut self, id: u32, ns: u64) {
        self.core.stats.c.tx_timestamps.add(1);
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
        self.call(|h, tx| h.on_tx_timestamp(id, at, tx));
    }

    /// The receive on socket `sock` failed with `errno` (with IP_RECVERR an
    /// ICMP error ends a receive; the details wait in the error queue).
    pub fn socket_error(&mut self, sock: usize, errno: i32) {
        if self.drain_errors(sock) == 0 {
            self.error_event(sock, ErrorEvent::from_errno(errno, None));
        }
    }

    /// A send is done: `Ok` when the kernel took it, `Err(errno)` when it
    /// refused. Decides what that means (see the module doc) and drops the
    /// send's reference on its slot.
    #[inline]
    pub fn complete(&mut self, t: Transmit, res: Result<(), i32>) {
        self.account(&t, res);
        self.core.pool.unref(t.slot);
    }

    /// What a send's result means, without giving its slot back (a
    /// zero-copy send keeps it until the kernel's notification).
    #[inline]
    pub fn account(&mut self, t: &Transmit, res: Result<(), i32>) {
        match res {
            Ok(()) => {
                let c = &self.core.stats.c;
                c.sent.add(t.datagrams());
                c.sent_bufs.add(1);
                c.bytes_sent.add(u64::from(t.len));
            }
            Err(errno) => self.refused(t, errno),
        }
    }

    /// A zero-copy send's notification: the kernel is done with the slot
    /// (`copied`: it copied the bytes after all, `SEND_ZC_REPORT_USAGE`).
    pub fn zero_copy_done(&mut self, t: Transmit, copied: bool) {
        let c = &self.core.stats.c;
        if copied {
            c.zc_copied.add(1);
        } else {
            c.zc_sent.add(1);
        }
        self.core.pool.unref(t.slot);
    }

    /// The kernel refused a send with `errno` (the caller drops the send's
    /// slot reference).
    #[cold]
    fn refused(&mut self, t: &Transmit, errno: i32) {
        // EINTR: a uring send the kernel had handed to an io-wq thread,
        // blocked there, is ended so by a cancel (the other backends retry
        // EINTR where they make the call).
        if errno == libc::ECANCELED || errno == libc::EINTR {
            // Cancelled: at a stop, or given up while the network would
            // not take it (see `give_up`).
            if self.core.stopping() {
                self.cancelled(t);
            } else {
                self.blocked(t);
            }
            return;
        }
        if t.coalesced && matches!(errno, libc::EIO | libc::EINVAL | libc::EMSGSIZE) {
            // A train the queue made, refused as a train (a device without
            // checksum offload, a path narrower than a segment): its
            // datagrams go one by one, as they were asked for, and the
            // worker makes no more trains (each would be refused again);
            // the handler's own trains keep GSO.
            self.core.stats.c.coalesce_refused.add(1);
            self.core.queue.set_coalesce(false);
            self.core.queue.push_cut(&mut self.core.pool, *t);
            return;
        }
        if t.coalesced && (t.retried || !is_icmp_errno(errno)) {
            // A train the queue made, refused for where it goes (EACCES,
            // EPERM, ENOBUFS; an ICMP error once the error queue was read
            // and the train tried again): the handler asked for each of its
            // datagrams, so each goes by itself, and is refused or not,
            // counted and reported as if no train had been made (one
            // failure for the train hid the others).
            self.core.queue.push_cut(&mut self.core.pool, *t);
            return;
        }
        if matches!(errno, libc::EIO | libc::EINVAL) && t.segment.is_some() && self.core.queue.gso()
        {
            // The kernel (or the device) refuses UDP_SEGMENT: turn GSO off
            // for good and send the train segment by segment.
            self.core.queue.disable_gso();
            self.core.shared.stats.set_gso_disabled();
            self.core.queue.push(
                &mut self.core.pool,
                Transmit {
                    retried: false,
                    ..*t
                },
            );
        } else {
            self.send_failed(t, errno);
        }
    }

    /// A send failed with `errno`. For errors the kernel explains (ICMP,
    /// EMSGSIZE) the handler gets the error queue's account, or, if the
    /// queue is empty, an event built from the errno (with the path MTU for
    /// EMSGSIZE). A send refused for an earlier datagram's ICMP report is
    /// sent once more; a datagram that does not go is counted in
    /// `send_errors` and told as `SendFailed` (too big for the path:
    /// `MessageTooLong`).
    fn send_failed(&mut self, t: &Transmit, errno: i32) {
        if !is_icmp_errno(errno) {
            self.core.stats.send_errors_n(errno, t.datagrams());
            let peer = self.core.peer_of(t);
            self.error_event(usize::from(t.sock), ErrorEvent::SendFailed { peer, errno });
            return;
        }
        let sock = usize::from(t.sock);
        let reported = self.drain_reports(sock);
        let peer = self.core.peer_of(t);
        // EMSGSIZE about this datagram: the kernel's own report says so
        // (a local one, with the MTU), or, without any report, nothing
        // else can have caused it. Never sent again: it would fail the
        // same way.
        if errno == libc::EMSGSIZE && (reported.too_big_here || reported.entries == 0) {
            self.core.stats.send_errors_n(errno, t.datagrams());
            let mtu = reported.mtu.or_else(|| {
                self.core
                    .fd(sock)
                    .and_then(|fd| sys::socket::path_mtu(fd, self.core.v6(sock)))
                    .ok()
            });
            self.error_event(sock, ErrorEvent::MessageTooLong { peer, mtu });
            return;
        }
        // Otherwise an unconnected socket reported an ICMP error about an
        // earlier datagram on this send, whatever its destination (port or
        // host unreachable; fragmentation needed, which a forged ICMP can
        // say too): this send did not go out. The report went to the
        // handler from the error queue; without an entry there (no
        // IP_RECVERR for the path), the errno is all there is of it: told
        // about no peer. With the error now read, send once more.
        if reported.entries == 0 {
            self.error_event(sock, ErrorEvent::from_errno(errno, None));
        }
        if !t.retried {
            self.core.queue.push(
                &mut self.core.pool,
                Transmit {
                    retried: true,
                    ..*t
                },
            );
            return;
        }
        // Refused again, for yet another datagram's report: this one did
        // not go.
        self.core.stats.send_errors_n(errno, t.datagrams());
        self.error_event(sock, ErrorEvent::SendFailed { peer, errno });
    }

    /// A queued send the network would not take, given up so that its slot
    /// can receive again: counted in `send_blocked`, the handler told,
    /// slot given back.
    pub fn give_up(&mut self, t: Transmit) {
        self.blocked(&t);
        self.core.pool.unref(t.slot);
    }

    /// A send given up while blocked: counted, and the handler told which
    /// destination lost how many datagrams.
    fn blocked(&mut self, t: &Transmit) {
        self.core.stats.c.send_blocked.add(t.datagrams());
        let peer = self.core.peer_of(t);
        self.error_event(
            usize::from(t.sock),
            ErrorEvent::SendGivenUp {
                peer,
                datagrams: t.datagrams(),
            },
        );
    }

    /// Shutdown: what is still queued never goes out; counted as
    /// cancelled, slots given back.
    pub fn cancel_queued(&mut self) {
        while let Some(t) = self.core.queue.pop_front() {
            self.cancelled(&t);
            self.core.pool.unref(t.slot);
        }
    }

    /// A send cancelled at the stop: counted, and the handler told where
    /// it was going (`on_cancelled`: no transport, so it cannot queue
    /// more). The caller gives the slot back.
    pub fn cancelled(&mut self, t: &Transmit) {
        self.core.stats.c.cancelled.add(t.datagrams());
        if self.failed.is_some() {
            return;
        }
        let (peer, n) = (self.core.peer_of(t), t.datagrams());
        let h = &mut self.handler;
        if let Err(p) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.on_cancelled(peer, n)))
        {
            let why = format!(
                "handler panicked in on_cancelled: {}",
                panic_text(p.as_ref())
            );
            self.core.shared.fail(why.clone());
            self.failed = Some(why);
        }
    }

    /// Calls `on_writable` if a send of the handler's was refused since the
    /// last call and there is room again (a free send slot and room in
    /// the send queue). The loops call it after taking completions; true
    /// when it was called (its sends wait in the queue).
    pub fn writable(&mut self) -> bool {
        if !self.writable_ready() {
            return false;
        }
        self.writable_wanted = false;
        self.call(|h, tx| h.on_writable(tx));
        true
    }

    /// Whether [`Worker::writable`] would call `on_writable` now: a loop
    /// must not sleep while it would.
    pub fn writable_ready(&self) -> bool {
        self.writable_wanted && self.core.pool.send_free() > 0 && self.core.queue.has_room()
    }

    /// Ends a turn of a polling loop (`mmsg`, `simple`, `xdp`): whether it
    /// may sleep now (`idle`, and no stop, `Sender` datagram or
    /// `on_writable` waiting: no wake-up would come for them), counting
    /// that wait, then the turn's one publish of the counters, after its
    /// last count (backend contract item 6).
    pub fn end_turn(&mut self, idle: bool) -> bool {
        let sleep = idle
            && !self.core.stopping()
            && !self.core.shared.inbox.pending()
            && !self.writable_ready();
        if sleep {
            self.core.stats.c.waits.add(1);
        }
        self.core.publish();
        sleep
    }

    /// Fires every timer that is due.
    pub fn fire_timers(&mut self) {
        if self.core.timers.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(token) = self.core.timers.pop_due(now) {
            self.call(|h, tx| h.on_timer(token, tx));
        }
    }

    /// The wake-up eventfd fired: take what `Sender`s posted.
    pub fn woken(&mut self) {
        self.core.shared.inbox.wake.drain();
        self.drain_inbox();
    }

    /// Takes what `Sender`s posted, in order: datagrams into send slots
    /// while slots are free (the rest waits in the inbox, and the loop comes
    /// back for it), posts run, messages handed to the handler. Wakes whoever
    /// waits for room.
    pub fn drain_inbox(&mut self) {
        let inbox = self.core.shared.inbox.clone();
        let mut took = false;
        loop {
            let slots = self.core.pool.send_free() > 0;
            let item = inbox.pop_if(|i| slots || !matches!(i, Item::Datagram { .. }));
            let Some(item) = item else { break };
            took = true;
            match Some(item) {
                Some(Item::Datagram {
                    data,
                    to,
                    sock,
                    segment,
                    src,
                }) => {
                    // Sizes and families were checked by the Sender; a full
                    // send queue is counted (send_exhausted) like any send.
                    let _ = self.core.send_copy_from(sock, &data, to, segment, src);
                    inbox.recycle(data);
                }
                Some(Item::Post(f)) => self.call(|_, tx| f(tx)),
                Some(Item::Message(m)) => self.call(|h, tx| h.on_message(m, tx)),
                None => break,
            }
        }
        if took {
            inbox.made_room();
        }
    }
}

/// A worker over sockets the test made (`fds`, each taken as bound to
/// `local`), with `pool`: for backends' and the worker's own tests.
#[cfg(test)]
pub(crate) fn test_worker<H: Handler>(
    fds: Vec<std::os::fd::RawFd>,
    local: std::net::SocketAddr,
    pool: crate::bufring::Pool,
    handler: H,
) -> Worker<H> {
    use crate::guard::{Guard, GuardState, HostAddrs};
    use crate::worker::{Sockets, WorkerShared};
    let n = fds.len();
    let socks = Sockets {
        fds,
        local: vec![local; n],
        fixed_dst: vec![sys::fixed_destination(local); n],
        connected: vec![None; n],
        v6: vec![local.is_ipv6(); n],
    };
    let shared = std::sync::Arc::new(WorkerShared {
        stop: std::sync::atomic::AtomicBool::new(false),
        stats: crate::stats::SharedStats::new(),
        inbox: crate::worker::sender::Inbox::new(4, 4000, vec![false; n], vec![]).unwrap(),
        failure: std::sync::Mutex::new(None),
        on_failure: None,
    });
    let guard = GuardState::new(&Guard::default(), vec![], HostAddrs::default());
    Worker::new(
        Core::new(pool, socks, 0, true, 1024, shared, guard),
        handler,
    )
}

#[cfg(test)]
mod tests;

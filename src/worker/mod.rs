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
//! - `core.rs`: [`Core`], the state a [`crate::Transport`] touches.
//! - `queue.rs`: the send queue (GSO trains kept or cut).
//! - `timers.rs`: the timer heap.

pub(crate) mod core;
pub(crate) mod queue;
pub(crate) mod timers;

use std::time::Instant;

pub(crate) use self::core::{Core, Sockets, WorkerShared};
use crate::bufring::Lent;
use crate::error::{ErrorEvent, is_icmp_errno};
use crate::guard::Refusal;
use crate::handler::{Datagram, Handler, Transport};
use crate::sender::Item;
use crate::sys::{self, RecvMeta, Transmit};

/// A worker's state and its handler.
pub(crate) struct Worker<H> {
    pub core: Core,
    pub handler: H,
    /// The handler panicked: what it said. It is called no more.
    failed: Option<String>,
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
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(h, &mut Transport { core })
        }));
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
    pub fn dispatch(&mut self, meta: RecvMeta, mut lent: Lent) {
        self.core.stats.c.received_bufs += 1;
        let Some(src_addr) = meta.src.to_socket_addr().map(sys::canonical) else {
            // No usable source address (should not happen for UDP): a
            // counted drop, not a handler call with a made-up address.
            self.core.stats.c.invalid_completions += 1;
            self.core.pool.release(lent);
            return;
        };
        let core = &mut self.core;
        if let Some(d) = meta.cmsg.rxq_ovfl {
            core.note_drops(usize::from(meta.sock), d);
        }
        let mut evicted = false;
        let verdict = core.guard.check(src_addr, meta.cmsg.dst, &mut evicted);
        core.stats.c.guard_evictions += u64::from(evicted);
        if let Err(why) = verdict {
            let c = &mut core.stats.c;
            *match why {
                Refusal::BadSource => &mut c.guard_bad_source,
                Refusal::Loop => &mut c.guard_loop,
                Refusal::Broadcast => &mut c.guard_broadcast,
                Refusal::Port => &mut c.guard_port,
                Refusal::NotAllowed => &mut c.guard_not_allowed,
                Refusal::Rate => &mut c.guard_rate,
            } += 1;
            core.pool.release(lent);
            return;
        }
        let c = &mut core.stats.c;
        c.truncated += u64::from(meta.truncated);
        let dgram = Datagram {
            meta,
            lent: &mut lent,
            src_addr,
        };
        c.received += dgram.segments() as u64;
        c.bytes_received += dgram.payload().len() as u64;
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
        let c = &mut self.core.stats.c;
        c.received_bufs += 1;
        c.received += match meta.cmsg.gro_segment {
            Some(s) if meta.len > 0 => u64::from(meta.len.div_ceil(u32::from(s.get()))),
            _ => 1,
        };
        self.core.pool.release(lent);
    }

    /// Something the kernel handed over that cannot be used: counted.
    pub fn invalid(&mut self) {
        self.core.stats.c.invalid_completions += 1;
    }

    /// Hands an error event to the handler.
    pub fn error_event(&mut self, ev: ErrorEvent) {
        self.core.stats.c.error_events += 1;
        self.call(|h, tx| h.on_error(ev, tx));
    }

    /// Drains socket `sock`'s error queue into handler events; returns how
    /// many entries there were.
    pub fn drain_errors(&mut self, sock: usize) -> usize {
        let Ok(fd) = self.core.fd(sock) else {
            return 0;
        };
        let mut n = 0;
        // Read synchronously; events are few and each is a handler call.
        while let Some(entry) = sys::read_errqueue(fd) {
            n += 1;
            match entry {
                sys::Queued::Error(e) => self.error_event(ErrorEvent::from_queued(e)),
                sys::Queued::TxTimestamp { id, ns } => self.tx_timestamp(id, ns),
                sys::Queued::Unknown => self.invalid(),
            }
        }
        // A pending SO_ERROR without a queue entry (e.g. no IP_RECVERR on a
        // v4-mapped path) still becomes an event.
        if n == 0
            && let Some(errno) = sys::take_socket_error(fd)
        {
            self.error_event(ErrorEvent::from_errno(errno, None));
            n += 1;
        }
        n
    }

    /// A TX timestamp for the send that asked under `id`: to the handler.
    pub fn tx_timestamp(&mut self, id: u32, ns: u64) {
        self.core.stats.c.tx_timestamps += 1;
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
        self.call(|h, tx| h.on_tx_timestamp(id, at, tx));
    }

    /// The receive on socket `sock` failed with `errno` (with IP_RECVERR an
    /// ICMP error ends a receive; the details wait in the error queue).
    pub fn socket_error(&mut self, sock: usize, errno: i32) {
        if self.drain_errors(sock) == 0 {
            self.error_event(ErrorEvent::from_errno(errno, None));
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
                let c = &mut self.core.stats.c;
                c.sent += t.datagrams();
                c.sent_bufs += 1;
                c.bytes_sent += u64::from(t.len);
            }
            Err(errno) => self.refused(t, errno),
        }
    }

    /// A zero-copy send's notification: the kernel is done with the slot
    /// (`copied`: it copied the bytes after all, `SEND_ZC_REPORT_USAGE`).
    pub fn zero_copy_done(&mut self, t: Transmit, copied: bool) {
        let c = &mut self.core.stats.c;
        if copied {
            c.zc_copied += 1;
        } else {
            c.zc_sent += 1;
        }
        self.core.pool.unref(t.slot);
    }

    /// The kernel refused a send with `errno` (the caller drops the send's
    /// slot reference).
    #[cold]
    fn refused(&mut self, t: &Transmit, errno: i32) {
        if errno == libc::ECANCELED {
            // Cancelled: at a stop, or given up while the network would
            // not take it (see `give_up`).
            if self.core.stopping() {
                self.core.stats.c.cancelled += t.datagrams();
            } else {
                self.core.stats.c.send_blocked += t.datagrams();
            }
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

    /// A send failed with `errno`: count it, and for errors the kernel
    /// explains (ICMP, EMSGSIZE) hand the handler the error queue's account,
    /// or, if the queue is empty, an event built from the errno (with the
    /// path MTU of a connected socket for EMSGSIZE).
    fn send_failed(&mut self, t: &Transmit, errno: i32) {
        if !is_icmp_errno(errno) {
            self.core.stats.send_error(errno);
            let peer = self.core.peer_of(t);
            self.error_event(ErrorEvent::SendFailed { peer, errno });
            return;
        }
        let reported = self.drain_errors(usize::from(t.sock));
        // An unconnected socket reports an ICMP error about one datagram on
        // the next send, whatever its destination: that send did not go out.
        // With the error now read, send it once more. (Not EMSGSIZE: that is
        // about this datagram, and would fail the same way.)
        if !t.retried && errno != libc::EMSGSIZE {
            self.core.queue.push(
                &mut self.core.pool,
                Transmit {
                    retried: true,
                    ..*t
                },
            );
            return;
        }
        self.core.stats.send_error(errno);
        if reported > 0 {
            return;
        }
        let peer = self.core.peer_of(t);
        let ev = match ErrorEvent::from_errno(errno, peer) {
            ErrorEvent::MessageTooLong { peer, mtu: None } => ErrorEvent::MessageTooLong {
                peer,
                mtu: self
                    .core
                    .fd(usize::from(t.sock))
                    .and_then(|fd| sys::socket::path_mtu(fd, self.core.v6(usize::from(t.sock))))
                    .ok(),
            },
            ev => ev,
        };
        self.error_event(ev);
    }

    /// A queued send the network would not take, given up so that its slot
    /// can receive again: counted in `send_blocked`, slot given back.
    pub fn give_up(&mut self, t: Transmit) {
        self.core.stats.c.send_blocked += t.datagrams();
        self.core.pool.unref(t.slot);
    }

    /// Shutdown: what is still queued never goes out; counted as
    /// cancelled, slots given back.
    pub fn cancel_queued(&mut self) {
        while let Some(t) = self.core.queue.pop_front() {
            self.core.stats.c.cancelled += t.datagrams();
            self.core.pool.unref(t.slot);
        }
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
                }) => {
                    // Sizes and families were checked by the Sender; a full
                    // send queue is counted (send_exhausted) like any send.
                    let _ = self.core.send_copy(sock, &data, to, segment);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bufring::Pool;
    use crate::guard::{Guard, GuardState, HostAddrs};
    use crate::sender::Inbox;
    use crate::stats::SharedStats;
    use std::num::NonZeroU16;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[derive(Default)]
    struct Events(Vec<ErrorEvent>);
    impl Handler for Events {
        fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
        fn on_error(&mut self, ev: ErrorEvent, _tx: &mut Transport<'_>) {
            self.0.push(ev);
        }
    }

    /// A worker over a real (unconnected, unbound) UDP socket, so the error
    /// queue reads find it empty.
    fn worker() -> (Worker<Events>, std::net::UdpSocket) {
        use std::os::fd::AsRawFd;
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let socks = Sockets {
            fds: vec![s.as_raw_fd()],
            local: vec![s.local_addr().unwrap()],
            connected: vec![None],
            v6: vec![false],
        };
        let shared = Arc::new(WorkerShared {
            stop: AtomicBool::new(false),
            stats: SharedStats::new(),
            inbox: Inbox::new(4, 4000, vec![false], vec![]).unwrap(),
            failure: std::sync::Mutex::new(None),
        });
        let pool = Pool::new(4096, 1, 4, false).unwrap();
        let guard = GuardState::new(&Guard::default(), vec![], HostAddrs::default());
        (
            Worker::new(
                Core::new(pool, socks, 0, true, 1024, shared, guard),
                Events::default(),
            ),
            s,
        )
    }

    fn queued_train(w: &mut Worker<Events>, len: usize, seg: u16) -> Transmit {
        let to = "127.0.0.1:9".parse().unwrap();
        w.core
            .send_copy(0, &vec![7u8; len], to, NonZeroU16::new(seg))
            .unwrap();
        w.core.queue.pop_front().unwrap()
    }

    #[test]
    fn replies_leave_from_the_address_asked_on_a_wildcard_socket_only() {
        use crate::sys::SrcIp;
        use crate::sys::cmsg::RecvCmsg;
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let (mut w, _s) = worker();
        let v4 = |d: [u8; 4], spec: [u8; 4]| RecvCmsg {
            dst: Some(IpAddr::from(d)),
            spec_dst: Some(Ipv4Addr::from(spec)),
            ifindex: 3,
            ..RecvCmsg::default()
        };
        let v6 = |d: &str| RecvCmsg {
            dst: Some(d.parse::<Ipv6Addr>().unwrap().into()),
            ifindex: 3,
            ..RecvCmsg::default()
        };
        let asked = v4([198, 18, 5, 2], [198, 18, 5, 2]);
        let c = &mut w.core;
        assert_eq!(
            c.reply_source(0, &asked),
            SrcIp::Any,
            "bound to one address"
        );
        c.socks.local[0] = "0.0.0.0:7".parse().unwrap();
        assert_eq!(c.reply_source(0, &asked), SrcIp::V4([198, 18, 5, 2].into()));
        assert_eq!(
            c.reply_source(0, &v4([224, 1, 2, 3], [198, 18, 5, 1])),
            SrcIp::V4([198, 18, 5, 1].into()),
            "a group is answered from the interface's address"
        );
        assert_eq!(
            c.reply_source(0, &v4([255, 255, 255, 255], [0, 0, 0, 0])),
            SrcIp::Any,
            "never from a broadcast address"
        );
        c.socks.connected[0] = Some(crate::sys::RawAddr::from_socket_addr(
            "198.18.5.9:1".parse().unwrap(),
            false,
        ));
        assert_eq!(
            c.reply_source(0, &asked),
            SrcIp::Any,
            "connected: the kernel knows"
        );
        c.socks.connected[0] = None;
        c.socks.local[0] = "[::]:7".parse().unwrap();
        c.socks.v6[0] = true;
        assert_eq!(
            c.reply_source(0, &asked),
            SrcIp::V6("::ffff:198.18.5.2".parse().unwrap(), 0),
            "IPv4 on a dual-stack socket: v4-mapped"
        );
        assert_eq!(
            c.reply_source(0, &v6("fd18:5::2")),
            SrcIp::V6("fd18:5::2".parse().unwrap(), 0)
        );
        assert_eq!(
            c.reply_source(0, &v6("fe80::2")),
            SrcIp::V6("fe80::2".parse().unwrap(), 3),
            "link-local: out of the interface it came in on"
        );
        assert_eq!(
            c.reply_source(0, &v6("ff02::1")),
            SrcIp::Any,
            "not from a group"
        );
        assert_eq!(
            c.reply_source(0, &RecvCmsg::default()),
            SrcIp::Any,
            "the kernel did not say"
        );
    }

    #[test]
    fn success_counts_every_segment_and_returns_the_slot() {
        let (mut w, _s) = worker();
        let t = queued_train(&mut w, 1000, 300);
        w.complete(t, Ok(()));
        assert_eq!((w.core.stats.c.sent, w.core.stats.c.bytes_sent), (4, 1000));
        assert_eq!(w.core.pool.counts().out, 0);
    }

    #[test]
    fn gso_refused_turns_gso_off_and_resends_as_datagrams() {
        let (mut w, _s) = worker();
        let t = queued_train(&mut w, 1000, 300);
        w.complete(t, Err(libc::EIO));
        assert!(!w.core.queue.gso());
        assert!(w.core.shared.stats.load().gso_disabled);
        let lens: Vec<u32> = w.core.queue.as_slice().iter().map(|t| t.len).collect();
        assert_eq!(lens, [300, 300, 300, 100]);
        assert_eq!(w.core.stats.send_errors_total(), 0, "not a failure: resent");
        while let Some(t) = w.core.queue.pop_front() {
            w.complete(t, Ok(()));
        }
        assert_eq!(w.core.stats.c.sent, 4);
        assert_eq!(w.core.pool.counts().out, 0);
        // With GSO already off an EIO is an ordinary failure.
        let t = queued_train(&mut w, 100, 0);
        w.complete(t, Err(libc::EIO));
        assert_eq!(w.core.stats.send_errors_total(), 1);
    }

    #[test]
    fn an_icmp_class_failure_is_resent_once_then_counted_with_an_event() {
        let (mut w, _s) = worker();
        let t = queued_train(&mut w, 64, 0);
        w.complete(t, Err(libc::ECONNREFUSED));
        assert_eq!(w.core.queue.len(), 1, "sent once more");
        let again = w.core.queue.pop_front().unwrap();
        assert!(again.retried);
        w.complete(again, Err(libc::ECONNREFUSED));
        assert_eq!(w.core.stats.send_errors_total(), 1);
        assert_eq!(
            w.handler.0,
            [ErrorEvent::ConnectionRefused {
                peer: Some("127.0.0.1:9".parse().unwrap())
            }]
        );
        // EMSGSIZE is about this datagram: never resent.
        let t = queued_train(&mut w, 64, 0);
        w.complete(t, Err(libc::EMSGSIZE));
        assert!(w.core.queue.is_empty());
        assert!(matches!(w.handler.0[1], ErrorEvent::MessageTooLong { .. }));
        // Anything else: counted under its errno, with an event that names
        // the destination.
        let t = queued_train(&mut w, 64, 0);
        w.complete(t, Err(libc::EAGAIN));
        assert_eq!(
            w.handler.0[2],
            ErrorEvent::SendFailed {
                peer: Some("127.0.0.1:9".parse().unwrap()),
                errno: libc::EAGAIN
            }
        );
        assert_eq!(w.core.stats.send_errors_total(), 3);
        // Cancelled while running: given up as blocked; at a stop:
        // cancelled. Their own counts, no event.
        let t = queued_train(&mut w, 64, 0);
        w.complete(t, Err(libc::ECANCELED));
        assert_eq!(w.core.stats.c.send_blocked, 1);
        w.core
            .shared
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        let t = queued_train(&mut w, 64, 0);
        w.complete(t, Err(libc::ECANCELED));
        let t = queued_train(&mut w, 1000, 300);
        w.core.queue.push(&mut w.core.pool, t);
        w.core.pool.unref(t.slot);
        w.cancel_queued();
        assert_eq!(w.core.stats.c.cancelled, 1 + 4);
        assert_eq!(w.handler.0.len(), 3);
        assert_eq!(w.core.pool.counts().out, 0);
    }
}

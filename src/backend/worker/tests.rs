//! The worker's own tests: sends, refusals and retries, without a kernel ring.
use super::*;
use crate::bufring::Pool;
use std::num::NonZeroU16;

/// What the worker told the handler: error events, and sends cancelled
/// at the stop (where they went, how many datagrams).
#[derive(Default)]
struct Events(Vec<ErrorEvent>, Vec<(Option<std::net::SocketAddr>, u64)>);
impl Handler for Events {
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
    fn on_error(&mut self, ev: ErrorEvent, _tx: &mut Transport<'_>) {
        self.0.push(ev);
    }
    fn on_cancelled(&mut self, peer: Option<std::net::SocketAddr>, datagrams: u64) {
        self.1.push((peer, datagrams));
    }
}

/// A worker over a real (unconnected, unbound) UDP socket, so the error
/// queue reads find it empty.
fn worker() -> (Worker<Events>, std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let pool = Pool::new(4096, 1, 4, false).unwrap();
    let w = super::test_worker(
        vec![s.as_raw_fd()],
        s.local_addr().unwrap(),
        pool,
        Events::default(),
    );
    (w, s)
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
    assert_eq!(
        (w.core.stats.c.sent.get(), w.core.stats.c.bytes_sent.get()),
        (4, 1000)
    );
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
    assert_eq!(w.core.stats.c.sent.get(), 4);
    assert_eq!(w.core.pool.counts().out, 0);
    // With GSO already off an EIO is an ordinary failure.
    let t = queued_train(&mut w, 100, 0);
    w.complete(t, Err(libc::EIO));
    assert_eq!(w.core.stats.send_errors_total(), 1);
}

#[test]
fn a_too_big_refusal_the_kernel_did_not_report_as_this_sends_own_is_resent() {
    use std::os::fd::AsRawFd;
    let (mut w, s) = worker();
    crate::sys::socket::set_recverr(s.as_raw_fd(), false).unwrap();
    // A report about an earlier datagram waits in the error queue (here a
    // port unreachable: nothing on loopback reports fragmentation needed,
    // which a router or a forged ICMP would).
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = closed.local_addr().unwrap();
    drop(closed);
    s.send_to(b"earlier", to).unwrap();
    // The report is in once the socket's error is set (taking it leaves
    // the queue's entry).
    let came = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(5));
        s.take_error().unwrap().is_some()
    });
    assert!(came, "the report came");
    // A send refused with EMSGSIZE now is not this datagram's own size
    // (that report, a local one, would be in the queue): sent once more.
    let t = queued_train(&mut w, 64, 0);
    w.complete(t, Err(libc::EMSGSIZE));
    assert_eq!(w.core.queue.len(), 1, "sent once more");
    assert_eq!(w.core.stats.send_errors_total(), 0);
    assert_eq!(
        w.handler.0,
        [ErrorEvent::ConnectionRefused { peer: Some(to) }],
        "the report, about the earlier datagram"
    );
    // Refused again with nothing in the queue: too big itself, told so.
    let again = w.core.queue.pop_front().unwrap();
    w.complete(again, Err(libc::EMSGSIZE));
    assert!(w.core.queue.is_empty());
    assert_eq!(w.core.stats.send_errors_total(), 1);
    assert!(matches!(
        w.handler.0[1],
        ErrorEvent::MessageTooLong { peer: Some(p), .. } if p.port() == 9
    ));
    assert_eq!(w.core.pool.counts().out, 0);
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
    // Each refusal is a report about some earlier datagram (the socket
    // has no IP_RECVERR here, so no queue entry: from the errno, about no
    // peer); the datagram refused twice did not go, and the event says
    // where it was going.
    let report = ErrorEvent::ConnectionRefused { peer: None };
    assert_eq!(
        w.handler.0,
        [
            report,
            report,
            ErrorEvent::SendFailed {
                peer: Some("127.0.0.1:9".parse().unwrap()),
                errno: libc::ECONNREFUSED
            }
        ]
    );
    w.handler.0.clear();
    // EMSGSIZE is about this datagram: never resent.
    let t = queued_train(&mut w, 64, 0);
    w.complete(t, Err(libc::EMSGSIZE));
    assert!(w.core.queue.is_empty());
    assert!(matches!(w.handler.0[0], ErrorEvent::MessageTooLong { .. }));
    // Anything else: counted under its errno, with an event that names
    // the destination.
    let t = queued_train(&mut w, 64, 0);
    w.complete(t, Err(libc::EAGAIN));
    assert_eq!(
        w.handler.0[1],
        ErrorEvent::SendFailed {
            peer: Some("127.0.0.1:9".parse().unwrap()),
            errno: libc::EAGAIN
        }
    );
    assert_eq!(w.core.stats.send_errors_total(), 3);
    // Cancelled while running: given up as blocked, the handler told; at
    // a stop: cancelled, no event but on_cancelled. Their own counts.
    let t = queued_train(&mut w, 64, 0);
    w.complete(t, Err(libc::ECANCELED));
    assert_eq!(w.core.stats.c.send_blocked.get(), 1);
    assert_eq!(
        w.handler.0.pop(),
        Some(ErrorEvent::SendGivenUp {
            peer: Some("127.0.0.1:9".parse().unwrap()),
            datagrams: 1
        })
    );
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
    assert_eq!(w.core.stats.c.cancelled.get(), 1 + 4);
    assert_eq!(w.handler.0.len(), 2, "the stop's cancels are no events");
    let to = Some("127.0.0.1:9".parse().unwrap());
    assert_eq!(w.handler.1, [(to, 1), (to, 4)], "told where each went");
    assert_eq!(w.core.pool.counts().out, 0);
}

#[test]
fn sends_to_the_connected_peer_go_without_an_address_whatever_came_before() {
    let (mut w, _s) = worker();
    let (a, b): (std::net::SocketAddr, std::net::SocketAddr) = (
        "127.0.0.1:9".parse().unwrap(),
        "127.0.0.2:9".parse().unwrap(),
    );
    let c = &mut w.core;
    let named = |c: &mut Core, to| c.dest(0, to).unwrap().to_socket_addr();
    assert_eq!(
        named(c, a),
        Some(a),
        "not connected: every send names its peer"
    );
    c.set_peer(0, Some(a)).unwrap();
    assert_eq!(named(c, a), None, "the connected peer: the kernel's route");
    assert_eq!(named(c, a), None, "and again, remembered");
    assert_eq!(named(c, b), Some(b), "another peer is named");
    c.set_peer(0, Some(b)).unwrap();
    assert_eq!(named(c, b), None, "the new peer");
    assert_eq!(named(c, a), Some(a), "the old one is named again");
    c.set_peer(0, None).unwrap();
    assert_eq!(named(c, b), Some(b), "disconnected");
    assert!(
        c.dest(0, "[::1]:9".parse().unwrap()).is_err(),
        "IPv6 on an IPv4 socket"
    );
}

/// Three small datagrams to one peer, coalesced into one train (the
/// fourth send slot holds it).
fn coalesced_train(w: &mut Worker<Events>) -> Transmit {
    let to = "127.0.0.1:9".parse().unwrap();
    for k in 0..3u8 {
        w.core.send_copy(0, &[k; 100], to, None).unwrap();
    }
    assert_eq!(w.core.queue.coalesce(&mut w.core.pool), 1);
    let t = w.core.queue.pop_front().unwrap();
    assert!(t.coalesced && t.datagrams() == 3 && w.core.queue.is_empty());
    t
}

#[test]
fn a_coalesced_train_counts_each_datagram_and_one_send() {
    let (mut w, _s) = worker();
    let t = coalesced_train(&mut w);
    w.complete(t, Ok(()));
    let c = &w.core.stats.c;
    assert_eq!(
        (c.sent.get(), c.sent_bufs.get(), c.bytes_sent.get()),
        (3, 1, 300)
    );
    assert_eq!(w.core.pool.counts().out, 0);
}

#[test]
fn a_coalesced_train_refused_goes_again_as_its_datagrams_with_gso_kept() {
    let (mut w, _s) = worker();
    let t = coalesced_train(&mut w);
    w.complete(t, Err(libc::EIO));
    assert!(w.core.queue.gso(), "the handler's trains keep GSO");
    assert!(!w.core.shared.stats.load().gso_disabled);
    assert_eq!(w.core.stats.c.coalesce_refused.get(), 1);
    assert_eq!(w.core.queue.coalesce(&mut w.core.pool), 0, "no train again");
    assert_eq!(w.core.stats.send_errors_total(), 0, "not a failure: resent");
    let lens: Vec<(u32, bool)> = w
        .core
        .queue
        .as_slice()
        .iter()
        .map(|t| (t.len, t.segment.is_none()))
        .collect();
    assert_eq!(lens, [(100, true); 3]);
    while let Some(t) = w.core.queue.pop_front() {
        w.complete(t, Ok(()));
    }
    assert_eq!(
        (w.core.stats.c.sent.get(), w.core.stats.c.sent_bufs.get()),
        (3, 3)
    );
    assert_eq!(w.core.pool.counts().out, 0);
}

#[test]
fn a_coalesced_train_refused_for_its_destination_fails_datagram_by_datagram() {
    let (mut w, _s) = worker();
    let to: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let failed = ErrorEvent::SendFailed {
        peer: Some(to),
        errno: libc::EACCES,
    };
    for (errno, retried) in [(libc::EACCES, false), (libc::ENETUNREACH, true)] {
        let before = w.core.stats.send_errors_total();
        let mut t = coalesced_train(&mut w);
        t.retried = retried;
        w.complete(t, Err(errno));
        assert_eq!(w.core.stats.send_errors_total(), before, "not one failure");
        assert_eq!(w.core.queue.len(), 3, "{errno}: each datagram again");
        assert_eq!(w.core.queue.coalesce(&mut w.core.pool), 0, "by itself");
        while let Some(t) = w.core.queue.pop_front() {
            w.complete(t, Err(libc::EACCES));
        }
    }
    assert_eq!(w.core.stats.send_errors_total(), 6);
    assert_eq!(w.handler.0, vec![failed; 6], "an event per datagram asked");
    assert_eq!(w.core.stats.c.coalesce_refused.get(), 0, "trains go on");
    // A train the handler asked for is one send: one event, and each of
    // its datagrams counted as not sent.
    let t = queued_train(&mut w, 300, 100);
    w.complete(t, Err(libc::EACCES));
    assert_eq!(w.core.stats.send_errors_total(), 6 + 3);
    assert_eq!(w.handler.0.len(), 7);
    assert_eq!(w.core.pool.counts().out, 0);
}

#[test]
fn a_send_given_up_is_counted_and_told_with_its_datagrams() {
    let (mut w, _s) = worker();
    let t = queued_train(&mut w, 300, 100);
    w.give_up(t);
    assert_eq!(w.core.stats.c.send_blocked.get(), 3);
    assert_eq!(
        w.handler.0,
        [ErrorEvent::SendGivenUp {
            peer: Some("127.0.0.1:9".parse().unwrap()),
            datagrams: 3
        }]
    );
    assert_eq!(w.core.stats.send_errors_total(), 0);
    assert_eq!(w.core.pool.counts().out, 0);
}

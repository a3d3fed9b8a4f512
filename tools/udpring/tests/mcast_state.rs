//! What strangers can make the multicast tools keep: a bounded table of
//! sources, sequence state only where it is asked for, sequence arithmetic
//! that forged numbers cannot wrap, and responders that must know the
//! run's 64-bit token. On loopback, by unicast to the tools' sockets (the
//! kernel delivers a unicast datagram to a listener's port like a group's).

mod util;

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use udpring::{Backend, Engine};
use udpring_cli::apps::header::{HEADER_LEN, Header};
use udpring_cli::apps::mcast::ping::{McastPing, PingPayload};
use udpring_cli::apps::mcast::{MAX_PEERS, McastListen, PeerReport, PeerTable};
use util::*;

fn listener(verify: bool) -> (Engine, PeerTable) {
    let table: PeerTable = Arc::default();
    let t2 = table.clone();
    let mut cfg = config(Backend::Mmsg, false);
    cfg.guard = udpring::Guard::client();
    let e = Engine::start(cfg, move |_| McastListen::new(verify, t2.clone())).unwrap();
    (e, table)
}

fn report(t: &PeerTable) -> PeerReport {
    t.lock().unwrap().clone()
}

fn datagram(token: u64, seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    Header::new_unchecked(&mut b[..]).fill(token, 0, seq, 0);
    b
}

/// Waits until the engine has taken or the kernel has dropped `n`
/// datagrams, then stops it; its totals.
fn drain(e: Engine, n: u64) -> udpring::Stats {
    wait_workers(&e, |s| {
        s.iter()
            .map(|w| w.received_bufs + w.kernel_drops)
            .sum::<u64>()
            >= n
    });
    stop_clean(e)
}

#[test]
fn a_flood_of_sources_fills_a_bounded_table_and_the_rest_is_counted() {
    let n = MAX_PEERS + 300;
    for verify in [false, true] {
        let (e, t) = listener(verify);
        let to = e.local_addr();
        for i in 0..n {
            // A source address of its own each time (ports get reused). Not
            // the listener's own port: the loop guard drops those.
            let ip = format!("127.1.{}.{}", i / 250, i % 250 + 1);
            let mut s = UdpSocket::bind(format!("{ip}:0")).unwrap();
            while s.local_addr().unwrap().port() == to.port() {
                let again = UdpSocket::bind(format!("{ip}:0")).unwrap();
                s = again;
            }
            s.send_to(&datagram(7, i as u64), to).unwrap();
        }
        let st = drain(e, n as u64);
        // A busy host may drop some at the socket (counted by the kernel);
        // every datagram that arrived is in the table or counted outside.
        assert_eq!(st.received + st.kernel_drops, n as u64, "{st:?}");
        assert_eq!(st.guard_loop, 0, "{st:?}");
        let r = report(&t);
        assert_eq!(r.peers.len(), MAX_PEERS, "verify={verify}");
        assert_eq!(
            r.untracked,
            st.received - MAX_PEERS as u64,
            "verify={verify}, {} dropped by the kernel",
            st.kernel_drops
        );
        assert_eq!(
            r.peers.iter().map(|(_, c)| c.received).sum::<u64>(),
            MAX_PEERS as u64
        );
    }
}

#[test]
fn forged_sequence_numbers_cannot_wrap_the_loss_count() {
    let (e, t) = listener(true);
    let to = e.local_addr();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in [u64::MAX - 1, u64::MAX, u64::MAX] {
        s.send_to(&datagram(9, seq), to).unwrap();
    }
    // Another run from the same address (a new token): a stream of its own.
    for seq in [0, 1, 3] {
        s.send_to(&datagram(10, seq), to).unwrap();
    }
    s.send_to(b"not a header", to).unwrap();
    drain(e, 7);
    let r = report(&t);
    let (_, c) = &r.peers[0];
    assert_eq!((c.received, c.lost, c.duplicated), (3, 1, 0), "{c:?}");
    assert_eq!((c.lowest, c.highest), (Some(0), Some(3)));
    assert_eq!(r.invalid, 1);
}

#[test]
fn replies_without_the_runs_token_make_no_responder() {
    // The pinger pings a forger, which answers every ping with a guessed
    // token (what a pid-based token would have been, or any other).
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    forger
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let forger_addr = forger.local_addr().unwrap();
    let table: PeerTable = Arc::default();
    let t2 = table.clone();
    let mut cfg = config(Backend::Mmsg, false);
    cfg.guard = udpring::Guard::client();
    let ping = Engine::start(cfg, move |_| {
        McastPing::new(
            forger_addr,
            200.0,
            PingPayload::Header { size: 64 },
            20,
            t2.clone(),
        )
    })
    .unwrap();
    let mut buf = [0u8; 128];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = 0;
    while seen < 20 && Instant::now() < deadline {
        let Ok((n, from)) = forger.recv_from(&mut buf) else {
            continue;
        };
        seen += 1;
        let h = Header::new_checked(&buf[..n]).unwrap();
        let (seq, sent) = (h.seq(), h.sent_ns());
        let mut forged = buf[..n].to_vec();
        let guess = (u64::from(std::process::id()) << 8) | 0x51;
        Header::new_unchecked(&mut forged[..]).fill(guess, 0, seq, sent);
        forger.send_to(&forged, from).unwrap();
    }
    assert_eq!(seen, 20);
    wait_workers(&ping, |s| {
        s.iter().map(|w| w.received_bufs).sum::<u64>() >= 20
    });
    std::thread::sleep(Duration::from_millis(100));
    ping.stop().unwrap();
    let r = report(&table);
    assert!(r.peers.is_empty(), "no forged responder: {:?}", r.peers);
    assert_eq!(r.invalid, 20, "every forged reply counted");
}

#[test]
fn a_ping_with_a_given_payload_gives_each_reply_to_its_round() {
    // Two responders on loopback: A gets the pings (one every 200 ms) and
    // answers round 0 twice, round 1 with the wrong bytes, round 2 after
    // the 60 ms timeout (but before the next ping), rounds 3-5 at once; B
    // answers rounds 3-5 only.
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = a.local_addr().unwrap();
    let table: PeerTable = Arc::default();
    let t2 = table.clone();
    let mut cfg = config(Backend::Mmsg, false);
    cfg.guard = udpring::Guard::client();
    let given = PingPayload::Given {
        payloads: vec![b"ping".to_vec()],
        expect: Some(b"pong".to_vec()),
        timeout: Duration::from_millis(60),
    };
    let ping = Engine::start(cfg, move |_| {
        McastPing::new(to, 5.0, given.clone(), 6, t2.clone())
    })
    .unwrap();
    let mut buf = [0u8; 64];
    for round in 0..6 {
        let (n, from) = a.recv_from(&mut buf).expect("a ping every 200 ms");
        assert_eq!(&buf[..n], b"ping");
        match round {
            0 => {
                a.send_to(b"pong", from).unwrap();
                a.send_to(b"pong", from).unwrap();
            }
            1 => {
                a.send_to(b"nope", from).unwrap();
            }
            2 => {
                std::thread::sleep(Duration::from_millis(130));
                a.send_to(b"pong, late", from).unwrap();
            }
            _ => {
                a.send_to(b"pong", from).unwrap();
                b.send_to(b"pong", from).unwrap();
            }
        }
    }
    // Every datagram sent back: A's 7 (2 + 1 + 1 + 3) and B's 3.
    wait_workers(&ping, |s| s.iter().map(|w| w.received).sum::<u64>() >= 10);
    ping.stop().unwrap();
    let r = report(&table);
    let by = |s: &UdpSocket| {
        let addr = s.local_addr().unwrap();
        let (_, c) = r
            .peers
            .iter()
            .find(|(p, _)| *p == addr)
            .expect("a responder");
        (c.received, c.duplicated, c.lost, c.rtt_us.is_some())
    };
    assert_eq!(by(&a), (4, 1, 2, true), "{r:?}");
    assert_eq!(by(&b), (3, 0, 3, true), "{r:?}");
    assert_eq!((r.invalid, r.late, r.peers.len()), (1, 1, 2), "{r:?}");
}

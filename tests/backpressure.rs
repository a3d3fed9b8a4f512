//! Backpressure a handler can act on: a send refused for want of room
//! (`SendError::Exhausted`) brings `Handler::on_writable` once room is
//! back, so that a burst larger than the send slots is sent whole; the
//! sequenced fan-out example delivers every copy, each with its
//! subscriber's own sequence, to a thousand subscribers; and a handler
//! that sends again every send the kernel refuses does not keep its
//! worker from stopping. Loopback only.

#[macro_use]
mod util;

#[path = "../examples/sequenced_fanout.rs"]
#[allow(dead_code)]
mod fanout;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udpring::{Config, Datagram, Engine, ErrorEvent, Guard, Handler, SendError, Transport};
use util::{client, config, stop_clean};

/// Sends `total` numbered datagrams to `to` from `on_start`, as many as
/// there is room for, and the rest from `on_writable`.
struct Burst {
    to: SocketAddr,
    next: u32,
    total: u32,
    resumed: Arc<Mutex<u32>>,
}

impl Burst {
    fn pump(&mut self, tx: &mut Transport<'_>) {
        while self.next < self.total {
            let n = self.next.to_be_bytes();
            match tx.send_with(64, self.to, |b| {
                b[..4].copy_from_slice(&n);
                64
            }) {
                Ok(_) => self.next += 1,
                Err(SendError::Exhausted) => return,
                Err(e) => panic!("{e}"),
            }
        }
    }
}

impl Handler for Burst {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        self.pump(tx);
    }
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
    fn on_writable(&mut self, tx: &mut Transport<'_>) {
        *self.resumed.lock().unwrap() += 1;
        self.pump(tx);
    }
}

per_backend!(
    fn a_burst_past_the_send_slots_resumes_on_writable_and_arrives_whole(backend) {
        // Past the 256 send slots many times over, and within what the
        // sink's buffer holds (4 MiB here) should its reader be slow: a drop
        // at the sink would not be the engine's.
        const TOTAL: u32 = 4_000;
        let sink = client(false);
        let to = sink.local_addr().unwrap();
        let resumed = Arc::new(Mutex::new(0));
        let r2 = resumed.clone();
        let engine = Engine::start(config(backend, false), move |_| Burst {
            to,
            next: 0,
            total: TOTAL,
            resumed: r2.clone(),
        })
        .unwrap();
        let mut seen = vec![false; TOTAL as usize];
        let mut buf = [0u8; 128];
        for k in 0..TOTAL {
            let n = sink
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{backend}: datagram {k} of {TOTAL}: {e}"));
            assert_eq!(n, 64);
            seen[u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "{backend}: every datagram once");
        let s = stop_clean(engine);
        let resumed = *resumed.lock().unwrap();
        assert!(resumed > 0, "{backend}: the burst outran the slots and resumed");
        assert!(s.send_exhausted >= u64::from(resumed), "{backend}: {s:?}");
        assert_eq!(s.sent, u64::from(TOTAL), "{backend}");
    }
);

/// What one subscriber address received: sequence numbers in order.
type Got = Arc<Mutex<HashMap<IpAddr, Vec<u32>>>>;

struct Subscribers {
    got: Got,
}

impl Handler for Subscribers {
    fn on_datagram(&mut self, d: Datagram<'_>, _tx: &mut Transport<'_>) {
        let p = d.payload();
        assert_eq!(&p[4..], b"tick", "payload behind the header");
        let seq = u32::from_be_bytes(p[..4].try_into().unwrap());
        let to = d.destination().expect("the address it was sent to");
        self.got.lock().unwrap().entry(to).or_default().push(seq);
    }
}

/// A thousand subscribers, each its own loopback address on one port (one
/// engine bound to the wildcard receives for all and reads which address
/// each copy was for): 100 datagrams, 100,000 copies, every subscriber
/// gets 0..99 in order, nothing dropped.
#[test]
fn the_sequenced_fanout_delivers_every_copy_to_a_thousand_subscribers() {
    const SUBS: usize = 1000;
    const N: u32 = 100;
    let got: Got = Arc::default();
    let g2 = got.clone();
    let mut cfg = Config::new("0.0.0.0:0".parse().unwrap());
    cfg.workers = 1;
    cfg.recv_buffer = Some(32 << 20);
    // The relay is a udpring server: its copies carry the server mark.
    cfg.guard = Guard::client();
    let subscribers = Engine::start(cfg, move |_| Subscribers { got: g2.clone() }).unwrap();
    let port = subscribers.local_addr().port();
    let subs: Vec<SocketAddr> = (0..SUBS)
        .map(|i| SocketAddr::from(([127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8], port)))
        .collect();
    // 256 send slots against 1,000 copies a datagram: the relay runs on
    // on_writable.
    let (relay, counts) =
        fanout::start_with_slots("127.0.0.1:0".parse().unwrap(), subs.clone(), 256).unwrap();
    let source = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..N {
        source.send_to(b"tick", relay.local_addr()).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let total = || got.lock().unwrap().values().map(Vec::len).sum::<usize>();
    while total() < SUBS * N as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = stop_clean(relay);
    let s = stop_clean(subscribers);
    assert_eq!(counts.backlog_full.load(Ordering::Relaxed), 0);
    assert_eq!(counts.failed.load(Ordering::Relaxed), 0);
    assert_eq!(
        counts.copies.load(Ordering::Relaxed),
        (SUBS * N as usize) as u64
    );
    assert_eq!(s.kernel_drops, 0, "the subscribers' socket kept up: {s:?}");
    let got = got.lock().unwrap();
    assert_eq!(got.len(), SUBS, "every subscriber heard");
    let want: Vec<u32> = (0..N).collect();
    for a in &subs {
        assert_eq!(got[&a.ip()], want, "{a}: every copy, in order");
    }
    assert!(
        counts.resumed.load(Ordering::Relaxed) > 0 && r.send_exhausted > 0,
        "a thousand copies per datagram outran the slots: {r:?}"
    );
}

/// Sends to the limited broadcast address without `SO_BROADCAST` (the
/// kernel refuses it at once, every time), and again each time it is told
/// so.
struct Insist {
    refused: Arc<Mutex<u64>>,
}

impl Insist {
    const TO: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::BROADCAST), 9);
}

impl Handler for Insist {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        let _ = tx.send_to(b"again", Self::TO);
    }
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        let _ = tx.reply(d);
    }
    fn on_error(&mut self, ev: ErrorEvent, tx: &mut Transport<'_>) {
        if let ErrorEvent::SendFailed { .. } = ev {
            *self.refused.lock().unwrap() += 1;
            let _ = tx.send_to(b"again", Self::TO);
        }
    }
}

per_backend!(
    fn a_handler_that_resends_every_refusal_still_lets_its_worker_stop(backend) {
        let refused = Arc::new(Mutex::new(0));
        let r2 = refused.clone();
        let engine = Engine::start(config(backend, false), move |_| Insist {
            refused: r2.clone(),
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while *refused.lock().unwrap() < 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(*refused.lock().unwrap() >= 20, "{backend}: the sends were refused");
        // The stop, on another thread: a worker stuck in its send loop
        // would hold it for ever.
        let (tx, rx) = std::sync::mpsc::channel();
        let stopper = engine.stop_handle();
        std::thread::spawn(move || {
            stopper.stop();
            let _ = tx.send(engine.stop());
        });
        let stopped = rx.recv_timeout(Duration::from_secs(5));
        assert!(stopped.is_ok(), "{backend}: the worker did not stop in 5 s");
    }
);

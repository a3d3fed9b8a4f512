//! Kernel timestamps. With `Config::rx_timestamps`
//! every datagram carries the time the kernel received it (at or before
//! the handler's own clock), without it none; either way the worker
//! allocates nothing per datagram. With `Config::tx_timestamps` a send
//! queued after `timestamp_next(id)` gets its kernel TX time under that
//! ID, and sends that did not ask get none.

#[macro_use]
mod util;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use udpring::{Config, Datagram, Engine, Handler, Transport};

#[global_allocator]
static A: util::counting::Counting = util::counting::Counting;

const N: usize = 300;

/// Per datagram: the kernel's receive time (if any), the handler's clock
/// when it ran, and the worker thread's allocation count.
type Seen = (Option<SystemTime>, SystemTime, u64);

/// Echoes every datagram and notes what it saw, into room made before
/// the run (so that noting allocates nothing).
struct Note(Arc<Mutex<Vec<Seen>>>);

impl Handler for Note {
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        let now = SystemTime::now();
        let stamp = d.rx_timestamp();
        let allocs = util::counting::this_thread();
        let mut v = self.0.lock().unwrap();
        if v.len() < v.capacity() {
            v.push((stamp, now, allocs));
        }
        drop(v);
        let _ = tx.reply(d);
    }
}

fn run_rx(backend: udpring::Backend, v6: bool, on: bool) -> Vec<Seen> {
    let mut cfg = util::config(backend, v6);
    cfg.rx_timestamps = on;
    let seen = Arc::new(Mutex::new(Vec::with_capacity(N)));
    let s2 = seen.clone();
    let engine = Engine::start(cfg, move |_| Note(s2.clone())).unwrap();
    let to = engine.local_addr();
    let c = util::client(v6);
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 64];
    for i in 0..N {
        c.send_to(&(i as u32).to_be_bytes(), to).unwrap();
        // One at a time: each datagram is the only one in the socket.
        let _ = c.recv_from(&mut buf);
    }
    util::stop_clean(engine);
    seen.lock().unwrap().clone()
}

per_backend!(
    fn receive_timestamps_when_asked_and_no_allocation(backend) {
        for v6 in [false, true] {
            let on = run_rx(backend, v6, true);
            assert_eq!(on.len(), N, "v6 {v6}");
            for (i, (k, h, _)) in on.iter().enumerate() {
                let k = k.unwrap_or_else(|| panic!("datagram {i} has no timestamp (v6 {v6})"));
                assert!(k <= *h, "kernel RX after the handler ran: {k:?} > {h:?}");
                assert!(
                    h.duration_since(k).unwrap() < Duration::from_secs(2),
                    "a stamp from another time: {k:?} vs {h:?}"
                );
            }
            let off = run_rx(backend, v6, false);
            assert_eq!(off.len(), N);
            assert!(off.iter().all(|s| s.0.is_none()), "off: no timestamps");
            // From the 10th datagram on (the first ones may warm lazily
            // built state), the worker thread allocates nothing.
            for (what, v) in [("on", &on), ("off", &off)] {
                assert_eq!(
                    v[10].2,
                    v[N - 1].2,
                    "{what}, v6 {v6}: the worker allocated while handling datagrams"
                );
            }
        }
    }
);

/// At start, sends 5 datagrams that ask for their TX timestamp (IDs
/// 100..105) between 3 that do not, noting the time just before each.
struct Stamper {
    to: SocketAddr,
    sent: Arc<Mutex<Vec<(u32, SystemTime)>>>,
    stamps: Arc<Mutex<Vec<(u32, SystemTime)>>>,
    asked: Arc<Mutex<Vec<bool>>>,
}

impl Handler for Stamper {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        for i in 0..8u32 {
            let stamped = i % 3 != 1;
            if stamped {
                let id = 100 + self.sent.lock().unwrap().len() as u32;
                self.asked.lock().unwrap().push(tx.timestamp_next(id));
                self.sent.lock().unwrap().push((id, SystemTime::now()));
            }
            tx.send_to(&i.to_be_bytes(), self.to).unwrap();
        }
    }
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
    fn on_tx_timestamp(&mut self, id: u32, at: SystemTime, _tx: &mut Transport<'_>) {
        self.stamps.lock().unwrap().push((id, at));
    }
}

per_backend!(
    fn transmit_timestamps_match_their_sends(backend) {
        for v6 in [false, true] {
            for on in [true, false] {
                let sink = util::client(v6);
                let mut cfg: Config = util::config(backend, v6);
                cfg.tx_timestamps = on;
                let (sent, stamps, asked) = Default::default();
                let h = Stamper {
                    to: sink.local_addr().unwrap(),
                    sent: Arc::clone(&sent),
                    stamps: Arc::clone(&stamps),
                    asked: Arc::clone(&asked),
                };
                let h = Mutex::new(Some(h));
                let engine = Engine::start(cfg, move |_| h.lock().unwrap().take().unwrap()).unwrap();
                // All eight arrive.
                sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 16];
                for _ in 0..8 {
                    sink.recv_from(&mut buf).unwrap();
                }
                let t = Instant::now();
                while on && stamps.lock().unwrap().len() < 5 && t.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                // Time for a stray stamp to show up.
                std::thread::sleep(Duration::from_millis(50));
                let st = util::stop_clean(engine);
                let asked = asked.lock().unwrap().clone();
                let mut got = stamps.lock().unwrap().clone();
                got.sort();
                if !on {
                    assert_eq!(asked, vec![false; 5], "off: nothing is asked");
                    assert!(got.is_empty(), "off: no stamps, got {got:?}");
                    continue;
                }
                assert_eq!(asked, vec![true; 5]);
                let sent = sent.lock().unwrap().clone();
                assert_eq!(
                    got.iter().map(|g| g.0).collect::<Vec<_>>(),
                    (100..105).collect::<Vec<_>>(),
                    "one stamp per send that asked, none for the others (v6 {v6})"
                );
                for ((id, at), (sid, before)) in got.iter().zip(&sent) {
                    assert_eq!(id, sid);
                    assert!(before <= at, "stamp {id} before its send was queued");
                    assert!(at.duration_since(*before).unwrap() < Duration::from_secs(2));
                }
                assert_eq!(st.tx_timestamps, 5);
            }
        }
    }
);

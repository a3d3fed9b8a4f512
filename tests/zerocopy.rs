//! Zero-copy sends (`Config::send_zero_copy_min`, uring).
//! Sends at or above the threshold go as `IORING_OP_SEND_ZC` and arrive
//! exactly as sent, below it as plain sends; every slot comes back only
//! after the kernel's notification (none is out at stop), and the
//! notifications are counted: on loopback the kernel always copies, and
//! says so (`zc_copied`).

mod util;

use std::net::SocketAddr;
use std::sync::Mutex;

use udpring::{Backend, Datagram, Engine, Handler, Transport};

struct Sender(SocketAddr);

impl Handler for Sender {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        for k in 0..20u8 {
            // Alternately above and below the threshold of 600 bytes (and
            // not over the socket's segment size, which would cut them).
            let n = if k % 2 == 0 { 800 } else { 500 };
            tx.send_with(n, self.0, |b| {
                b.copy_from_slice(&util::pattern(n, k));
                n
            })
            .unwrap();
        }
        // Trains of the socket's segment size go as plain sends too: zero
        // copy, cut by the socket.
        for k in 20..24u8 {
            tx.send_segments_with(0, 1000, 3500, self.0, |b| {
                b.copy_from_slice(&util::pattern(3500, k));
                3500
            })
            .unwrap();
        }
    }
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
}

#[test]
fn zero_copy_sends_arrive_whole_and_are_counted() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let sink = util::client(false);
    let mut cfg = util::config(Backend::Uring, false);
    cfg.send_zero_copy_min = Some(600);
    cfg.udp_segment = Some(1000);
    let h = Mutex::new(Some(Sender(sink.local_addr().unwrap())));
    let engine = Engine::start(cfg, move |_| h.lock().unwrap().take().unwrap()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..36 {
        let (n, _) = sink.recv_from(&mut buf).unwrap();
        got.push(buf[..n].to_vec());
    }
    let s = util::stop_clean(engine);
    let mut want: Vec<Vec<u8>> = (0..20u8)
        .map(|k| util::pattern(if k % 2 == 0 { 800 } else { 500 }, k))
        .collect();
    for k in 20..24u8 {
        want.extend(util::pattern(3500, k).chunks(1000).map(<[u8]>::to_vec));
    }
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == w,
            "datagram {i}: {} bytes, {} expected",
            g.len(),
            w.len()
        );
    }
    // 10 single datagrams and 4 trains at or above the threshold.
    assert_eq!(s.zc_sent + s.zc_copied, 14, "{s:?}");
    assert_eq!(s.zc_copied, 14, "loopback copies, and the kernel says so");
    assert_eq!((s.sent, s.sent_bufs), (36, 24));
}

#[test]
fn without_a_threshold_nothing_is_zero_copy() {
    let sink = util::client(false);
    let cfg = util::config(Backend::Mmsg, false);
    let h = Mutex::new(Some(Sender(sink.local_addr().unwrap())));
    let engine = Engine::start(cfg, move |_| h.lock().unwrap().take().unwrap()).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..24 {
        sink.recv_from(&mut buf).unwrap();
    }
    let s = util::stop_clean(engine);
    assert_eq!((s.zc_sent, s.zc_copied), (0, 0));
}

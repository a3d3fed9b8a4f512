//! With `Config::recv_tos`, every
//! datagram tells the TOS byte / traffic class it arrived with (DSCP and
//! ECN), IPv4 and IPv6, on every backend; without it, nothing is read.

#[macro_use]
mod util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udpring::{Config, Datagram, Engine, Handler, Transport};

/// Keeps the `tos()` of every datagram, checking that `ecn()` and
/// `dscp()` say the same in their types.
struct Keep(Arc<Mutex<Vec<Option<u8>>>>);

impl Handler for Keep {
    fn on_datagram(&mut self, d: Datagram<'_>, _tx: &mut Transport<'_>) {
        let tos = d.tos();
        assert_eq!(d.ecn().map(|e| e.bits()), tos.map(|t| t & 3));
        assert_eq!(d.dscp(), tos.map(|t| t >> 2));
        self.0.lock().unwrap().push(tos);
    }
}

#[test]
fn ecn_reads_the_two_low_bits() {
    use udpring::Ecn;
    let each = [
        (0xb8, Ecn::NotEct),
        (0xb9, Ecn::Ect1),
        (0xba, Ecn::Ect0),
        (0xbb, Ecn::Ce),
    ];
    for (tos, ecn) in each {
        assert_eq!(Ecn::from_tos(tos), ecn);
        assert_eq!(ecn.bits(), tos & 3);
    }
}

/// Sends 5 datagrams marked `tos` from a plain socket to an engine on
/// `bind` with `recv_tos` as given; what the handler saw.
fn seen(backend: udpring::Backend, bind: &str, recv_tos: bool, tos: u8) -> Vec<Option<u8>> {
    let mut cfg = Config::new(bind.parse().unwrap());
    cfg.backend = Some(backend);
    cfg.workers = 1;
    cfg.recv_tos = recv_tos;
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    let engine = Engine::start(cfg, move |_| Keep(g2.clone())).unwrap();
    let to: SocketAddr = engine.local_addr();
    let s = socket2::Socket::new(
        if to.is_ipv6() {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        },
        socket2::Type::DGRAM,
        None,
    )
    .unwrap();
    if to.is_ipv6() {
        s.set_tclass_v6(u32::from(tos)).unwrap();
    } else {
        s.set_tos_v4(u32::from(tos)).unwrap();
    }
    let s: UdpSocket = s.into();
    for _ in 0..5 {
        s.send_to(b"marked", to).unwrap();
    }
    let t = Instant::now();
    while got.lock().unwrap().len() < 5 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    engine.stop().unwrap();
    got.lock().unwrap().clone()
}

per_backend!(
    fn marks_are_read_when_asked_v4_and_v6(backend) {
        // EF (46 << 2) with ECT(0): 0xba.
        assert_eq!(seen(backend, "127.0.0.1:0", true, 0xba), vec![Some(0xba); 5]);
        assert_eq!(seen(backend, "[::1]:0", true, 0xba), vec![Some(0xba); 5]);
        // Off: not read.
        assert_eq!(seen(backend, "127.0.0.1:0", false, 0xba), vec![None; 5]);
    }
);

/// Sends three datagrams to `to` at start, each with its own mark.
struct Marker(SocketAddr);

impl Handler for Marker {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        for tos in [0xb8u8, 0x28, 0x01] {
            tx.send_to_marked(b"marked", self.0, tos).unwrap();
        }
    }
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
}

per_backend!(
    fn each_send_carries_its_own_mark(backend) {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let mut cfg = Config::new(bind.parse().unwrap());
            cfg.backend = Some(backend);
            cfg.workers = 1;
            cfg.recv_tos = true;
            let got = Arc::new(Mutex::new(Vec::new()));
            let g2 = got.clone();
            let rx = Engine::start(cfg.clone(), move |_| Keep(g2.clone())).unwrap();
            let to = rx.local_addr();
            // The sender is a client: a server's sends carry the server
            // mark, which the receiving server refuses.
            cfg.guard = udpring::Guard::client();
            let tx = Engine::start(cfg, move |_| Marker(to)).unwrap();
            let t = Instant::now();
            while got.lock().unwrap().len() < 3 && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(5));
            }
            tx.stop().unwrap();
            rx.stop().unwrap();
            assert_eq!(
                *got.lock().unwrap(),
                vec![Some(0xb8), Some(0x28), Some(0x01)],
                "{bind}"
            );
        }
    }
);

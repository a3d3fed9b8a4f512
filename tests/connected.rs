//! Connected UDP on loopback (Twisted's connected transport, plus what
//! Twisted could not do: reconnect and disconnect), and ICMP errors as
//! events on connected sockets.

#[macro_use]
mod util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udpring::{Datagram, Engine, ErrorEvent, Handler, Transport};
use util::*;

/// Echo that obeys commands: "connect ADDR", "disconnect", anything else is
/// echoed. Replies "ok <peer>" to commands.
struct Commanded;

impl Handler for Commanded {
    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        let text = String::from_utf8_lossy(dgram.payload()).into_owned();
        let src = dgram.source();
        let result = if let Some(addr) = text.strip_prefix("connect ") {
            tx.connect(0, addr.parse().unwrap())
        } else if text == "disconnect" {
            tx.disconnect(0)
        } else {
            tx.reply(dgram).unwrap();
            return;
        };
        let answer = match result {
            Ok(()) => format!("ok {:?}", tx.peer(0)),
            Err(e) => format!("error {e}"),
        };
        tx.send_to(answer.as_bytes(), src).unwrap();
    }
}

fn short_client() -> UdpSocket {
    let c = client(false);
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    c
}

fn ask(c: &UdpSocket, to: SocketAddr, msg: &str) -> Option<String> {
    c.send_to(msg.as_bytes(), to).unwrap();
    let mut buf = [0u8; 256];
    c.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
}

per_backend!(
    fn connect_reconnect_and_disconnect(backend) {
        let engine = Engine::start(config(backend, false), |_| Commanded).unwrap();
        let to = engine.local_addr();
        let (a, b) = (short_client(), short_client());
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());

        assert_eq!(
            ask(&a, to, &format!("connect {aa}")).unwrap(),
            format!("ok Some({aa})")
        );
        assert_eq!(
            ask(&a, to, "from a").as_deref(),
            Some("from a"),
            "{backend}"
        );
        assert_eq!(
            ask(&b, to, "from b"),
            None,
            "{backend}: connected to A, B is not heard"
        );

        // Reconnect to B: the answer still reaches A (an explicit address).
        assert_eq!(
            ask(&a, to, &format!("connect {ba}")).unwrap(),
            format!("ok Some({ba})")
        );
        assert_eq!(
            ask(&b, to, "b again").as_deref(),
            Some("b again"),
            "{backend}"
        );
        assert_eq!(
            ask(&a, to, "a again"),
            None,
            "{backend}: now A is not heard"
        );

        assert_eq!(ask(&b, to, "disconnect").unwrap(), "ok None");
        assert_eq!(
            ask(&a, to, "a back").as_deref(),
            Some("a back"),
            "{backend}"
        );
        assert_eq!(ask(&b, to, "b too").as_deref(), Some("b too"), "{backend}");
        let s = stop_clean(engine);
        // B's "from b" and A's "a again" were dropped by the kernel, never
        // reaching the worker.
        assert_eq!(s.received, 7, "{backend}: {s:?}");
    }
);

/// Connects its second socket to a closed port and sends; records error
/// events with the socket each was reported on.
struct ConnectRefused {
    target: SocketAddr,
    events: Seen,
}

/// Each error event with the index of the socket it was reported on.
type Seen = Arc<Mutex<Vec<(ErrorEvent, Option<usize>)>>>;

impl Handler for ConnectRefused {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        assert_eq!(tx.error_socket(), None, "only in on_error");
        tx.connect(1, self.target).unwrap();
        assert!(
            tx.path_mtu(1).unwrap() >= 1280,
            "a connected socket knows its path MTU"
        );
        tx.send_to_via(1, b"anyone?", self.target).unwrap();
    }
    fn on_datagram(&mut self, _dgram: Datagram<'_>, _tx: &mut Transport<'_>) {}
    fn on_error(&mut self, event: ErrorEvent, tx: &mut Transport<'_>) {
        let sock = tx.error_socket().map(|s| s.index());
        self.events.lock().unwrap().push((event, sock));
        if self.events.lock().unwrap().len() == 1 {
            // Once more: the next refusal comes back too.
            tx.send_to_via(1, b"still?", self.target).unwrap();
        }
    }
}

per_backend!(
    fn connection_refused_arrives_on_a_connected_socket_and_names_it(backend) {
        let closed = unused_addr("127.0.0.1");
        let events = Arc::new(Mutex::new(Vec::new()));
        let e2 = events.clone();
        let mut cfg = config(backend, false);
        cfg.also_bind = vec![loopback(false)];
        let engine = Engine::start(cfg, move |_| ConnectRefused {
            target: closed,
            events: e2.clone(),
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while events.lock().unwrap().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let got = events.lock().unwrap().clone();
        stop_clean(engine);
        assert!(got.len() >= 2, "{backend}: {got:?}");
        for (e, sock) in &got[..2] {
            assert!(
                matches!(e, ErrorEvent::ConnectionRefused { peer } if peer.is_none_or(|p| p == closed)),
                "{backend}: {got:?}"
            );
            assert_eq!(*sock, Some(1), "{backend}: the second socket's: {got:?}");
        }
    }
);

//! Replies leave from the address asked, on loopback:
//! every 127.0.0.0/8 address is this host's, so an engine bound to
//! 0.0.0.0 asked on 127.0.0.7 by a client on 127.0.0.1 would answer from
//! 127.0.0.1 (the route's choice) unless it says otherwise. The clients
//! are connected to 127.0.0.7 and drop anything from another source. The
//! traffic stays on loopback; the namespace test (tests/netns/source.rs)
//! does the same with two addresses per family on a real link.

#[macro_use]
mod util;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use udpring::{Config, Datagram, Engine, Handler, Transport};
use util::{pattern, stop_clean};

/// Answers with `reply` (a zero-copy echo), `reply_with` (a copy of the
/// payload with its first byte changed), or `reply_in_place` (the same
/// built in the send slot, then as many `+` as the payload's second byte,
/// so the length is known only once written).
#[derive(Clone, Copy)]
enum How {
    Echo,
    Copy,
    InPlace,
}

struct Answer {
    how: How,
}

impl Handler for Answer {
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        match self.how {
            How::Copy => {
                let mut out = d.payload().to_vec();
                out[0] = b'!';
                tx.reply_with(&d, &out).unwrap();
            }
            How::InPlace => {
                let p = d.payload().to_vec();
                let n = tx
                    .reply_in_place(&d, 512, |b| {
                        b[..p.len()].copy_from_slice(&p);
                        b[0] = b'!';
                        let extra = usize::from(p[1]);
                        b[p.len()..p.len() + extra].fill(b'+');
                        p.len() + extra
                    })
                    .unwrap();
                assert_eq!(n, p.len() + usize::from(p[1]));
            }
            How::Echo => tx.reply(d).unwrap(),
        }
    }
}

fn wildcard_engine(backend: udpring::Backend, copy: bool) -> (Engine, SocketAddr) {
    wildcard_engine_how(backend, if copy { How::Copy } else { How::Echo })
}

fn wildcard_engine_how(backend: udpring::Backend, how: How) -> (Engine, SocketAddr) {
    let mut cfg = Config::new("0.0.0.0:0".parse().unwrap());
    cfg.backend = Some(backend);
    cfg.workers = 1;
    cfg.gro = true;
    let engine = Engine::start(cfg, move |_| Answer { how }).unwrap();
    let port = engine.local_addr().port();
    (engine, SocketAddr::from(([127, 0, 0, 7], port)))
}

fn connected_client(to: SocketAddr) -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(to).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c
}

per_backend!(
    fn a_gro_train_goes_back_from_the_address_asked(backend) {
        let (engine, to) = wildcard_engine(backend, false);
        let c = connected_client(to);
        let mut train = Vec::new();
        for i in 0..6u8 {
            train.extend(pattern(200, i));
        }
        // UDP_SEGMENT on the client: one send, six datagrams; the engine
        // (GRO on) may take them as one train and answer with one GSO send
        // carrying both UDP_SEGMENT and IP_PKTINFO.
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let iov = [std::io::IoSlice::new(&train)];
        sendmsg::<()>(
            c.as_raw_fd(),
            &iov,
            &[ControlMessage::UdpGsoSegments(&200)],
            MsgFlags::empty(),
            None,
        )
        .expect("GSO send");
        let mut buf = [0u8; 2048];
        for i in 0..6u8 {
            let n = c
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{backend}: segment {i} from {to}: {e}"));
            assert_eq!(&buf[..n], &pattern(200, i)[..], "{backend}: segment {i}");
        }
        let s = stop_clean(engine);
        assert_eq!((s.received, s.sent), (6, 6), "{backend}");
        assert!(s.send_errors.is_empty(), "{backend}: {:?}", s.send_errors);
    }
);

per_backend!(
    fn reply_with_answers_from_the_address_asked(backend) {
        let (engine, to) = wildcard_engine(backend, true);
        let c = connected_client(to);
        let mut buf = [0u8; 128];
        for i in 0..20u8 {
            c.send(&[b'a' + i % 26, i]).unwrap();
            let n = c
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{backend}: answer {i} from {to}: {e}"));
            assert_eq!(&buf[..n], &[b'!', i], "{backend}");
        }
        let s = stop_clean(engine);
        assert_eq!((s.received, s.sent), (20, 20), "{backend}");
    }
);

per_backend!(
    fn reply_in_place_answers_from_the_address_asked_at_any_length(backend) {
        let (engine, to) = wildcard_engine_how(backend, How::InPlace);
        let c = connected_client(to);
        let mut buf = [0u8; 600];
        for i in 0..20u8 {
            c.send(&[b'a' + i % 26, i * 12]).unwrap();
            let n = c
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{backend}: answer {i} from {to}: {e}"));
            let mut want = vec![b'!', i * 12];
            want.extend(std::iter::repeat_n(b'+', usize::from(i) * 12));
            assert_eq!(&buf[..n], &want[..], "{backend}: answer {i}");
        }
        let s = stop_clean(engine);
        assert_eq!((s.received, s.sent), (20, 20), "{backend}");
    }
);

/// Hands each request to another thread, which answers through a Sender.
struct Hand {
    tx: std::sync::mpsc::SyncSender<(Vec<u8>, SocketAddr, Option<std::net::IpAddr>)>,
}

impl Handler for Hand {
    fn on_datagram(&mut self, d: Datagram<'_>, _tx: &mut Transport<'_>) {
        let _ = self
            .tx
            .try_send((d.payload().to_vec(), d.source(), d.answer_from()));
    }
}

#[test]
fn a_sender_answers_from_the_address_asked_from_another_thread() {
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let mut cfg = Config::new("0.0.0.0:0".parse().unwrap());
    cfg.workers = 1;
    let engine = Engine::start(cfg, move |_| Hand { tx: tx.clone() }).unwrap();
    let to = SocketAddr::from(([127, 0, 0, 7], engine.local_addr().port()));
    let sender = engine.sender(0).unwrap();
    let answerer = std::thread::spawn(move || {
        let v6: std::net::IpAddr = "::1".parse().unwrap();
        let e = sender
            .send_now_from(0, b"x", "127.0.0.1:9".parse().unwrap(), Some(v6))
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        let mut n = 0;
        while let Ok((data, from, asked)) = rx.recv_timeout(Duration::from_secs(2)) {
            assert_eq!(asked, Some(to.ip()), "answer_from names the address asked");
            // Three ways, each from the address asked: at once, through
            // the worker's inbox, and the async one.
            match n % 3 {
                0 => sender.send_now_from(0, &data, from, asked).unwrap(),
                1 => sender.send_to_from(0, &data, from, asked).unwrap(),
                _ => block_on(sender.send_from_async(0, &data, from, asked)).unwrap(),
            }
            n += 1;
        }
        n
    });
    let c = connected_client(to);
    let mut buf = [0u8; 64];
    for i in 0..10u8 {
        c.send(&[i]).unwrap();
        let n = c
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("answer {i} from {to}: {e}"));
        assert_eq!(&buf[..n], &[i]);
    }
    let s = stop_clean(engine);
    assert_eq!(answerer.join().unwrap(), 10);
    assert_eq!((s.received, s.sent), (10, 10), "direct sends are counted");
}

/// Runs a future to its end on this thread (a tokio current-thread
/// runtime: the engine's futures need none of its own).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Tells each datagram's destination and interface.
struct Tell {
    tx: std::sync::mpsc::SyncSender<(Option<std::net::IpAddr>, Option<u32>)>,
}

impl Handler for Tell {
    fn on_datagram(&mut self, d: Datagram<'_>, _tx: &mut Transport<'_>) {
        let _ = self.tx.try_send((d.destination(), d.interface()));
    }
}

per_backend!(
    /// Where each datagram was sent: on a wildcard socket the kernel says
    /// (`IP_PKTINFO`: the address asked and the interface); a socket bound
    /// to one address is not asked (no control message per datagram) and
    /// its datagrams name that address, with no interface.
    fn each_datagram_names_where_it_was_sent(backend) {
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert!(lo > 0);
        let cases = [
            ("0.0.0.0:0", "127.0.0.7", Some(lo)),
            ("127.0.0.9:0", "127.0.0.9", None),
            ("[::]:0", "::1", Some(lo)),
            ("[::1]:0", "::1", None),
        ];
        for (bind, ask, interface) in cases {
            let (tx, rx) = std::sync::mpsc::sync_channel(8);
            let mut cfg = Config::new(bind.parse().unwrap());
            cfg.backend = Some(backend);
            cfg.workers = 1;
            let engine = Engine::start(cfg, move |_| Tell { tx: tx.clone() }).unwrap();
            let ask: std::net::IpAddr = ask.parse().unwrap();
            let to = SocketAddr::new(ask, engine.local_addr().port());
            let from = if ask.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
            let c = UdpSocket::bind(from).unwrap();
            c.send_to(b"where", to).unwrap();
            let told = rx.recv_timeout(Duration::from_secs(2));
            let s = stop_clean(engine);
            assert_eq!(told, Ok((Some(ask), interface)), "{backend} bound to {bind}");
            assert_eq!(s.received, 1);
        }
    }
);

//! The library as a service author uses it: a start that
//! cannot hang, no silent drops under a burst, a Sender that refuses what
//! it cannot send and pushes back when full, panics contained to their
//! worker, the wrong address family refused, no pinning unless asked,
//! per-worker construction, timers, posts and messages, several bind
//! addresses, the socket hook.

#[macro_use]
mod util;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use udpring::{
    Backend, Config, Datagram, Engine, ErrorEvent, Handler, SendError, SocketSetup, TimerId,
    Transport,
};
use util::Echo;
use util::*;

/// Runs `f` on a thread and fails the test if it takes longer than `t`:
/// for calls that used to hang.
fn within<T: Send + 'static>(t: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(t).expect("it returned in time")
}

struct Panicky {
    boom: bool,
}

impl Handler for Panicky {
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        assert!(!self.boom, "boom: a handler bug");
        tx.reply(d).unwrap();
    }
}

#[test]
fn a_constructor_that_panics_fails_the_start_instead_of_hanging_it() {
    for backend in [Backend::Mmsg, Backend::Simple] {
        let r = within(Duration::from_secs(10), move || {
            let mut cfg = config(backend, false);
            cfg.workers = 2;
            Engine::start(cfg, |i| {
                assert!(i != 1, "no handler for worker 1");
                Echo::new()
            })
            .map(|_| ())
        });
        let e = r.unwrap_err();
        assert!(e.to_string().contains("no handler for worker 1"), "{e}");
    }
}

per_backend!(
    fn a_panicking_handler_stops_its_worker_only_and_keeps_every_total(backend) {
        let mut cfg = config(backend, false);
        cfg.workers = 2;
        cfg.sockets_per_worker = 1;
        cfg.distinct_ports = true; // worker i listens on its own port
        let told = Arc::new(Mutex::new(Vec::new()));
        let t2 = told.clone();
        cfg.on_failure = Some(udpring::FailureHook(Arc::new(move |i, why: &str| {
            t2.lock().unwrap().push((i, why.to_string()));
        })));
        let engine = Engine::start(cfg, |i| Panicky { boom: i == 0 }).unwrap();
        let (p0, p1) = (engine.local_addrs()[0], engine.local_addrs()[1]);
        let c = client(false);
        c.send_to(b"x", p0).unwrap(); // worker 0 panics
        let deadline = Instant::now() + Duration::from_secs(5);
        while engine.failures().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let f = engine.failures();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, 0);
        assert!(f[0].1.contains("boom"), "{f:?}");
        // The hook is told the same, once (on the worker's thread, just
        // after failures() can say it).
        while told.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*told.lock().unwrap(), f, "the failure hook");
        let dead = engine.sender(0).unwrap();
        let err = dead.send_to(b"y", c.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
        // Worker 1 goes on.
        for _ in 0..3 {
            c.send_to(b"z", p1).unwrap();
            let mut buf = [0u8; 8];
            c.recv_from(&mut buf).unwrap();
        }
        let e = engine.stop().unwrap_err();
        assert!(e.to_string().contains("worker 0"), "{e}");
        assert_eq!(e.stats.received, 4, "both workers' totals: {:?}", e.stats);
        assert_eq!(e.stats.sent, 3);
        assert_eq!(e.stats.slots_out, 0, "the failed worker gave its slots back");
    }
);

/// Replies to every request with a copy (`send_to`), counting refusals.
struct CopyEcho {
    refused: Arc<AtomicU64>,
}

impl Handler for CopyEcho {
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        if tx.send_to(d.payload(), d.source()).is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

per_backend!(
    fn a_burst_of_copied_replies_fits_the_default_config(backend) {
        const N: usize = 1500;
        let refused = Arc::new(AtomicU64::new(0));
        let r2 = refused.clone();
        let mut cfg = config(backend, false);
        cfg.recv_buffer = Some(8 << 20);
        let engine = Engine::start(cfg, move |_| CopyEcho { refused: r2.clone() }).unwrap();
        let to = engine.local_addr();
        let c = client(false);
        for i in 0..N {
            c.send_to(&(i as u32).to_be_bytes(), to).unwrap();
        }
        let mut buf = [0u8; 16];
        for _ in 0..N {
            c.recv_from(&mut buf).expect("every reply comes");
        }
        let s = stop_clean(engine);
        assert_eq!((s.sent, s.send_exhausted), (N as u64, 0), "{s:?}");
        assert_eq!(refused.load(Ordering::Relaxed), 0);
    }
);

#[test]
fn a_sender_refuses_what_it_cannot_send_and_pushes_back_when_full() {
    let mut cfg = config(Backend::Mmsg, false);
    cfg.sender_queue = 64;
    let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
    let sink = client(false);
    let to = sink.local_addr().unwrap();
    let s = engine.sender(0).unwrap();
    let big = vec![0u8; 5000];
    assert_eq!(
        s.send_to(&big, to).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    assert_eq!(
        s.send_to(b"x", v6).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert!(engine.sender(1).is_none(), "no worker 1");
    // 2000 from another thread: each Ok is sent; a full inbox is
    // WouldBlock, and waiting for room gets the rest through.
    let s2 = s.clone();
    let t = std::thread::spawn(move || {
        let mut would_block = 0;
        for i in 0..2000u32 {
            loop {
                match s2.send_to(&i.to_be_bytes(), to) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        would_block += 1;
                        s2.wait_writable(Some(Duration::from_secs(5))).unwrap();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        would_block
    });
    let mut buf = [0u8; 8];
    let mut seen = vec![false; 2000];
    for _ in 0..2000 {
        let (n, _) = sink.recv_from(&mut buf).expect("every Ok arrives");
        seen[u32::from_be_bytes(buf[..n].try_into().unwrap()) as usize] = true;
    }
    assert!(seen.iter().all(|&x| x));
    let wb = t.join().unwrap();
    eprintln!("the inbox pushed back {wb} times");
    let st = stop_clean(engine);
    assert_eq!((st.sent, st.send_exhausted), (2000, 0), "{st:?}");
}

#[test]
fn the_wrong_family_is_an_error_the_caller_sees() {
    struct Wrong(Arc<Mutex<Vec<Result<(), SendError>>>>);
    impl Handler for Wrong {
        fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
            let r = tx.send_to(b"x", "[2001:db8::1]:9".parse().unwrap());
            self.0.lock().unwrap().push(r);
            tx.reply(d).unwrap();
        }
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    let engine = Engine::start(config(Backend::Mmsg, false), move |_| Wrong(g2.clone())).unwrap();
    let c = client(false);
    c.send_to(b"q", engine.local_addr()).unwrap();
    c.recv_from(&mut [0u8; 4]).unwrap();
    let s = stop_clean(engine);
    assert_eq!(*got.lock().unwrap(), [Err(SendError::AddressFamily)]);
    assert_eq!(s.send_errors, [(libc::EAFNOSUPPORT, 1)]);
}

#[test]
fn nothing_is_pinned_unless_asked() {
    let c = Config::new("127.0.0.1:0".parse().unwrap());
    assert!(!c.pin);
    let a = Engine::start(c.clone(), |_| Echo::new()).unwrap();
    let b = Engine::start(c, |_| Echo::new()).unwrap();
    assert_eq!(a.worker_cpus(), [None]);
    assert_eq!(b.worker_cpus(), [None]);
    stop_clean(a);
    stop_clean(b);
}

/// Hands each datagram's first byte to its own channel.
struct Own {
    rx: mpsc::Receiver<u8>,
    tag: u8,
}

impl Handler for Own {
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        let extra = self.rx.try_recv().unwrap_or(0);
        let _ = tx.send_to(&[self.tag, extra], d.source());
    }
}

#[test]
fn each_worker_gets_its_own_resources_without_a_lock() {
    let mut cfg = config(Backend::Mmsg, false);
    cfg.workers = 2;
    cfg.distinct_ports = true;
    let mut senders = Vec::new();
    let engine = Engine::start_each(cfg, |i| {
        let (tx, rx) = mpsc::channel();
        senders.push(tx);
        // mpsc::Receiver is Send but not Sync: moved, not shared.
        move || Own { rx, tag: i as u8 }
    })
    .unwrap();
    senders[0].send(40).unwrap();
    senders[1].send(41).unwrap();
    let c = client(false);
    let mut buf = [0u8; 4];
    for (i, a) in engine.local_addrs().to_vec().into_iter().enumerate() {
        c.send_to(b"?", a).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[i as u8, 40 + i as u8]);
    }
    stop_clean(engine);
}

/// Counts periodic ticks, cancels the ticker after three, and never sees a
/// cancelled one-shot.
struct Ticks {
    every: Option<TimerId>,
    ticks: Arc<AtomicU64>,
    never: Arc<AtomicU64>,
}

impl Handler for Ticks {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        self.every = Some(tx.call_every(Duration::from_millis(5), 1));
        let doomed = tx.call_later(Duration::from_millis(1), 2);
        assert!(tx.cancel_timer(doomed));
    }
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
    fn on_timer(&mut self, token: u64, tx: &mut Transport<'_>) {
        if token == 2 {
            self.never.fetch_add(1, Ordering::Relaxed);
        }
        if self.ticks.fetch_add(1, Ordering::Relaxed) + 1 == 3 {
            assert!(tx.cancel_timer(self.every.take().unwrap()));
        }
    }
}

per_backend!(
    fn periodic_timers_repeat_until_cancelled(backend) {
        let ticks = Arc::new(AtomicU64::new(0));
        let never = Arc::new(AtomicU64::new(0));
        let (t2, n2) = (ticks.clone(), never.clone());
        let engine = Engine::start(config(backend, false), move |_| Ticks {
            every: None,
            ticks: t2.clone(),
            never: n2.clone(),
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        stop_clean(engine);
        assert_eq!(ticks.load(Ordering::Relaxed), 3, "three, then cancelled");
        assert_eq!(never.load(Ordering::Relaxed), 0);
    }
);

/// Sets a timer far off at the start; each datagram then sets one due
/// at once, which answers the datagram's sender when it fires.
struct Prompt {
    asker: Option<SocketAddr>,
}

impl Handler for Prompt {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        tx.call_later(Duration::from_secs(60), 1);
    }
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        self.asker = Some(d.source());
        tx.call_later(Duration::from_millis(5), 2);
    }
    fn on_timer(&mut self, token: u64, tx: &mut Transport<'_>) {
        if let (2, Some(to)) = (token, self.asker) {
            tx.send_to(b"due", to).unwrap();
        }
    }
}

per_backend!(
    fn a_timer_due_before_the_one_waited_for_fires_in_its_time(backend) {
        // The io_uring loop waits for its next timer with one timeout
        // request: a sooner timer set while it is armed for the 60 s one
        // must move it, or the answer would come a minute late.
        let engine = Engine::start(config(backend, false), |_| Prompt { asker: None }).unwrap();
        let c = client(false);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8];
        for round in 0..3 {
            c.send_to(b"now?", engine.local_addr()).unwrap();
            let (n, _) = c
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{backend}: round {round}: no timer within 5 s: {e}"));
            assert_eq!(&buf[..n], b"due");
        }
        stop_clean(engine);
    }
);

/// Remembers messages; posts run with the transport.
struct Inbox(Arc<Mutex<Vec<String>>>);

impl Handler for Inbox {
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
    fn on_message(&mut self, msg: Box<dyn std::any::Any + Send>, _tx: &mut Transport<'_>) {
        if let Ok(s) = msg.downcast::<String>() {
            self.0.lock().unwrap().push(*s);
        }
    }
}

#[test]
fn senders_post_work_and_messages_to_the_worker() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    let engine = Engine::start(config(Backend::Mmsg, false), move |_| Inbox(g2.clone())).unwrap();
    let sink = client(false);
    let to = sink.local_addr().unwrap();
    let s = engine.sender(0).unwrap();
    s.message("hello".to_string()).unwrap();
    s.post(move |tx| {
        tx.send_to(b"from a post", to).unwrap();
    })
    .unwrap();
    let mut buf = [0u8; 32];
    let (n, _) = sink.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"from a post");
    stop_clean(engine);
    assert_eq!(*got.lock().unwrap(), ["hello"]);
    assert!(s.is_closed());
}

/// Finds its control socket by address at start, then tells the two
/// binds apart by typed handle: data is echoed, control answered "ctl"
/// through the control socket named by its id.
struct TwoBinds {
    control_addr: SocketAddr,
    control: Option<udpring::SocketId>,
}

impl Handler for TwoBinds {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        self.control = tx.socket_at(self.control_addr);
        assert_eq!(
            tx.address_of(udpring::SocketId::MAIN),
            Some(tx.local_addr())
        );
    }
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        match self.control {
            Some(c) if d.socket_id() == c => {
                let _ = tx.send_to_via(c, b"ctl", d.source());
            }
            _ => {
                assert_eq!(d.socket_id(), udpring::SocketId::MAIN);
                let _ = tx.reply(d);
            }
        }
    }
}

#[test]
fn several_binds_are_told_apart_by_typed_handles() {
    let control = std::net::UdpSocket::bind(loopback(false)).unwrap();
    let control_addr = control.local_addr().unwrap();
    drop(control); // its port, free again for the engine
    let mut cfg = config(Backend::Mmsg, false);
    cfg.also_bind = vec![control_addr];
    let engine = Engine::start(cfg, move |_| TwoBinds {
        control_addr,
        control: None,
    })
    .unwrap();
    let data = engine.local_addr();
    let c = client(false);
    let mut buf = [0u8; 8];
    for (to, want) in [(data, &b"echo"[..]), (control_addr, &b"ctl"[..])] {
        c.send_to(b"echo", to).unwrap();
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (want, to),
            "answered by the socket asked"
        );
    }
    stop_clean(engine);
}

#[test]
fn one_engine_answers_on_ipv4_and_ipv6() {
    let mut cfg = config(Backend::Mmsg, false);
    cfg.also_bind = vec![loopback(true)];
    let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
    let addrs = engine.local_addrs().to_vec();
    assert_eq!((addrs[0].is_ipv4(), addrs[1].is_ipv6()), (true, true));
    for (a, v6) in [(addrs[0], false), (addrs[1], true)] {
        let c = client(v6);
        c.send_to(b"ping", a).unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], a));
    }
    stop_clean(engine);
}

per_backend!(
    /// Sockets the caller bound (a v4 and a v6 one, as a parent or systemd
    /// would hand over) are served, one worker each, with the engine's
    /// own options applied (GRO here); the engine owns and closes them.
    fn an_engine_serves_sockets_the_caller_bound(backend) {
        let v4 = std::net::UdpSocket::bind(loopback(false)).unwrap();
        let v6 = std::net::UdpSocket::bind(loopback(true)).unwrap();
        let addrs = [v4.local_addr().unwrap(), v6.local_addr().unwrap()];
        let mut cfg = config(backend, false);
        cfg.workers = 0;
        cfg.gro = true;
        let engine = Engine::start_on(cfg, [v4.into(), v6.into()], |_| Echo::new()).unwrap();
        assert_eq!(engine.local_addrs(), &addrs[..], "{backend}");
        assert_eq!(engine.workers(), 2, "{backend}");
        assert!(engine.socket_info().gro, "{backend}");
        for (a, v6) in [(addrs[0], false), (addrs[1], true)] {
            let c = client(v6);
            c.send_to(b"adopted", a).unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"adopted"[..], a), "{backend}");
        }
        let s = stop_clean(engine);
        assert_eq!((s.received, s.sent), (2, 2), "{backend}");
        // Closed with the engine: the port is free again.
        std::net::UdpSocket::bind(addrs[0]).expect("the engine closed the socket");
    }
);

/// What cannot be served is refused before any worker starts: not a UDP
/// socket, not bound, a worker count that does not match, and options that
/// act before a bind.
#[test]
fn sockets_handed_in_are_checked() {
    let err = |cfg: Config, fds: Vec<std::os::fd::OwnedFd>| {
        Engine::start_on(cfg, fds, |_| Echo::new())
            .err()
            .expect("refused")
            .to_string()
    };
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(err(config(Backend::Mmsg, false), vec![tcp.into()]).contains("not a UDP socket"));
    let unbound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    assert!(err(config(Backend::Mmsg, false), vec![unbound.into()]).contains("not bound"));
    let two = || {
        vec![
            std::net::UdpSocket::bind(loopback(false)).unwrap().into(),
            std::net::UdpSocket::bind(loopback(false)).unwrap().into(),
        ]
    };
    let mut cfg = config(Backend::Mmsg, false);
    cfg.workers = 3;
    assert!(err(cfg, two()).contains("2 sockets handed in for 3 workers"));
    let mut cfg = config(Backend::Mmsg, false);
    cfg.workers = 0;
    cfg.reuse_addr = true;
    assert!(err(cfg, two()).contains("before the bind"));
    assert!(err(config(Backend::Mmsg, false), Vec::new()).contains("no socket"));
}

#[test]
fn the_socket_hook_sees_every_socket_and_can_fail_the_start() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let mut cfg = config(Backend::Mmsg, false);
    cfg.workers = 2;
    cfg.socket_setup = Some(SocketSetup(Arc::new(move |fd, addr| {
        use std::os::fd::AsRawFd;
        assert!(fd.as_raw_fd() >= 0);
        s2.lock().unwrap().push(addr);
        Ok(())
    })));
    let engine = Engine::start(cfg.clone(), |_| Echo::new()).unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2, "one socket per worker");
    stop_clean(engine);
    cfg.socket_setup = Some(SocketSetup(Arc::new(|_, _| {
        Err(io::Error::other("no such option here"))
    })));
    let e = Engine::start(cfg, |_| Echo::new()).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("no such option here"), "{e}");
}

#[test]
fn errors_read_as_sentences() {
    let ev = ErrorEvent::ConnectionRefused {
        peer: Some("127.0.0.1:9".parse().unwrap()),
    };
    assert_eq!(
        ev.to_string(),
        "127.0.0.1:9: port unreachable (connection refused)"
    );
    let ev = ErrorEvent::MessageTooLong {
        peer: None,
        mtu: Some(1280),
    };
    assert!(ev.to_string().contains("MTU 1280"));
    let ev = ErrorEvent::PacketTooBig {
        peer: None,
        mtu: Some(1280),
    };
    assert!(ev.to_string().contains("packet too big (MTU 1280)"));
    assert_eq!(
        SendError::AddressFamily.to_string(),
        "an IPv6 destination for an IPv4 socket"
    );
}

#[test]
fn a_sender_can_be_awaited_without_a_runtime_of_ours() {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    fn block_on<F: Future>(f: F) -> F::Output {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
    let mut cfg = config(Backend::Mmsg, false);
    cfg.sender_queue = 4;
    let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
    let sink = client(false);
    let to = sink.local_addr().unwrap();
    let s = engine.sender(0).unwrap();
    for i in 0..200u8 {
        while let Err(e) = s.send_to(&[i], to) {
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            block_on(s.writable()).unwrap();
        }
    }
    let mut buf = [0u8; 4];
    for _ in 0..200 {
        sink.recv_from(&mut buf).unwrap();
    }
    stop_clean(engine);
    assert_eq!(
        block_on(s.writable()).unwrap_err().kind(),
        io::ErrorKind::NotConnected
    );
}

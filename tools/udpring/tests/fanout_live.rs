//! `fanout` with live subscribers. Subscribers that join and leave
//! mid-stream receive exactly the datagrams the relay handled from their
//! join to their leave (contiguous, each once, as many as the relay counts
//! for them); one that stops refreshing expires; a static destination gets
//! everything; the control socket refuses forged tokens, short first
//! requests, garbage, revoked tokens and more subscribers than allowed (in
//! all, per address, per prefix), and the guard's allowlist applies to it.

#[macro_use]
mod util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use udpring::{Backend, Engine};
use udpring_cli::apps::fanout::{Fanout, Kind, Relay, RelayOpts, State};

/// A relay on loopback with a control socket; its engine, listening and
/// control addresses.
fn relay(
    backend: Backend,
    opts: RelayOpts,
    guard: Option<udpring::Guard>,
) -> (Engine, Arc<Relay>, SocketAddr, SocketAddr) {
    let mut cfg = udpring_cli::apps::fanout::config(
        "127.0.0.1:0".parse().unwrap(),
        Some("127.0.0.1:0".parse().unwrap()),
    );
    cfg.backend = Some(backend);
    cfg.workers = 1;
    if let Some(g) = guard {
        cfg.guard = g;
    }
    let r = Relay::new(opts);
    let r2 = r.clone();
    let e = Engine::start(cfg, move |_| Fanout::new(r2.clone())).unwrap();
    let (listen, control) = (e.local_addr(), e.local_addrs()[2]);
    (e, r, listen, control)
}

/// A subscriber's socket and what it has received.
struct Sub {
    sock: UdpSocket,
    token: u64,
    seqs: Vec<u32>,
}

impl Sub {
    fn new() -> Sub {
        Sub::on("127.0.0.1")
    }

    /// A subscriber at `ip` (one of loopback's 127.0.0.0/8).
    fn on(ip: &str) -> Sub {
        let sock = util::client_on(SocketAddr::new(ip.parse().unwrap(), 0));
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Sub {
            sock,
            token: 0,
            seqs: Vec::new(),
        }
    }

    /// Sends `req` to `control` and waits for a text answer, keeping the
    /// data that arrives meanwhile. `None`: no answer.
    fn ask(&mut self, control: SocketAddr, req: &[u8]) -> Option<String> {
        self.sock.send_to(req, control).unwrap();
        let mut buf = [0u8; 600];
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                return None;
            };
            if from == control {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            self.note(&buf[..n]);
        }
        None
    }

    fn note(&mut self, d: &[u8]) {
        assert_eq!(d.len(), 4, "a data datagram: {d:?}");
        self.seqs.push(u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
    }

    fn join(&mut self, control: SocketAddr) -> String {
        let hello = format!("SUB{}", " ".repeat(40));
        let t = self.ask(control, hello.as_bytes()).expect("a token");
        let hex = t.strip_prefix("TOKEN ").unwrap_or_else(|| panic!("{t}"));
        self.token = u64::from_str_radix(hex, 16).unwrap();
        self.ask(control, format!("SUB {:016x}", self.token).as_bytes())
            .expect("an answer to SUB")
    }

    fn leave(&mut self, control: SocketAddr) -> Option<String> {
        self.ask(control, format!("UNSUB {:016x}", self.token).as_bytes())
    }

    /// Reads what is left without waiting long.
    fn drain(&mut self) {
        self.sock
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 64];
        while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
            self.note(&buf[..n]);
        }
    }

    /// Its sequence numbers, checked to be one contiguous run.
    fn run(&self, name: &str) -> (u32, u32) {
        let (first, last) = (self.seqs[0], *self.seqs.last().unwrap());
        let want: Vec<u32> = (first..=last).collect();
        assert_eq!(
            self.seqs, want,
            "{name}: one contiguous run, each once, in order"
        );
        (first, last)
    }
}

per_backend!(
    fn subscribers_get_exactly_from_join_to_leave(backend) {
        let mut opts = RelayOpts::new(Vec::new());
        let mut stat = Sub::new();
        opts.to = vec![stat.sock.local_addr().unwrap()];
        opts.expiry = Duration::from_millis(600);
        let (engine, relay, listen, control) = relay(backend, opts, None);
        // The stream: one datagram a millisecond, its number inside.
        let sent = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (sent.clone(), stop.clone());
        let sender = std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut i = 0u32;
            while !st2.load(Ordering::Relaxed) && i < 5000 {
                s.send_to(&i.to_be_bytes(), listen).unwrap();
                i += 1;
                s2.store(i, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let at = |ms| std::thread::sleep(Duration::from_millis(ms));
        at(150);
        let (mut a, mut b, mut c) = (Sub::new(), Sub::new(), Sub::new());
        let a_before = sent.load(Ordering::SeqCst);
        assert!(a.join(control).starts_with("OK "));
        let a_joined = sent.load(Ordering::SeqCst);
        at(100);
        assert!(c.join(control).starts_with("OK ")); // never refreshes
        at(100);
        assert!(b.join(control).starts_with("OK "));
        for _ in 0..4 {
            at(200);
            assert!(a.join(control).starts_with("OK "), "a refresh");
            assert!(b.join(control).starts_with("OK "), "a refresh");
        }
        let a_leaving = sent.load(Ordering::SeqCst);
        assert_eq!(a.leave(control).as_deref(), Some("BYE"));
        let a_left = sent.load(Ordering::SeqCst);
        at(150);
        assert!(b.join(control).starts_with("OK "), "a last refresh");
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        let total = sent.load(Ordering::SeqCst);
        at(100);
        for s in [&mut stat, &mut a, &mut b, &mut c] {
            s.drain();
        }
        let s = util::stop_clean(engine);
        let t = relay.table();
        assert_eq!(t.received, u64::from(total));
        assert_eq!(stat.seqs, (0..total).collect::<Vec<_>>(), "static: every datagram once");
        // A: from its join to its leave. Nothing sent after the relay's
        // answer can be missed (after OK) or delivered (after BYE); what
        // was sent just before a request may still wait in the relay's
        // socket when the request is handled (a few datagrams of slack on
        // a loaded host). The sender counts a datagram after its send
        // returns: a count of n read after the answer rules out every
        // number above n, not n itself (its send may have returned, before
        // the answer, without the count yet showing it).
        let (a0, a1) = a.run("A");
        assert!(a0 + 8 >= a_before && a0 <= a_joined, "A began at {a0}: joined between {a_before} and {a_joined}");
        assert!(a1 + 8 >= a_leaving && a1 <= a_left, "A ended at {a1}: left between {a_leaving} and {a_left}");
        // B: from its join to the end.
        let (_, b1) = b.run("B");
        assert_eq!(b1, total - 1, "B stays to the end");
        // C: from its join until it expired, well before the end.
        let (_, c1) = c.run("C");
        assert!(c1 + 200 < total, "C expired: its last {c1}, the stream's {total}");
        let by = |sub: &Sub| {
            let addr = sub.sock.local_addr().unwrap();
            t.dests
                .iter()
                .chain(&t.departed)
                .find(|d| d.addr == addr)
                .unwrap_or_else(|| panic!("{addr} in the table"))
                .clone()
        };
        for (name, sub, state) in [
            ("A", &a, State::Unsubscribed),
            ("B", &b, State::Live),
            ("C", &c, State::Expired),
            ("static", &stat, State::Live),
        ] {
            let d = by(sub);
            assert_eq!(d.state, state, "{name}");
            assert_eq!(d.forwarded(), sub.seqs.len() as u64, "{name}: the relay's count is what arrived");
            assert_eq!((d.failed, d.refused), (0, 0), "{name}");
        }
        assert_eq!(by(&stat).kind, Kind::Static);
        let k = t.control;
        assert_eq!((k.tokens, k.subscribed, k.unsubscribed, k.expired), (12, 3, 1, 1), "{k:?}");
        assert_eq!(k.refreshed, 9);
        // Every send is a relayed datagram or an answer (12 tokens, 12
        // OKs, one BYE).
        let relayed: u64 = t.dests.iter().chain(&t.departed).map(|d| d.forwarded()).sum();
        assert_eq!(s.sent, relayed + 12 + 12 + 1);
    }
);

#[test]
fn the_control_socket_refuses_what_it_should_and_counts_it() {
    let mut opts = RelayOpts::new(Vec::new());
    opts.max_subscribers = 2;
    let (engine, relay, _, control) = relay(Backend::Mmsg, opts, None);
    let mut subs: Vec<Sub> = (0..3).map(|_| Sub::new()).collect();
    assert!(subs[0].join(control).starts_with("OK "));
    assert!(subs[1].join(control).starts_with("OK "));
    assert_eq!(subs[2].join(control), "FULL", "at most max_subscribers");
    // A token is its owner's: another socket cannot use it, nor leave
    // for it, nor can a made-up one.
    let mut thief = Sub::new();
    thief.token = subs[0].token;
    assert_eq!(
        thief.ask(control, format!("SUB {:016x}", thief.token).as_bytes()),
        None
    );
    assert_eq!(thief.leave(control), None);
    thief.token ^= 1;
    assert_eq!(thief.leave(control), None);
    // Too short to be answered, and garbage.
    assert_eq!(thief.ask(control, b"SUB"), None);
    assert_eq!(thief.ask(control, b"\x00\x01 not a request"), None);
    let s = util::stop_clean(engine);
    let k = relay.table().control;
    assert_eq!(
        (k.subscribed, k.full, k.bad_token, k.too_short, k.malformed),
        (2, 1, 3, 1, 1),
        "{k:?}"
    );
    assert_eq!(
        k.not_subscribed, 0,
        "a bad token is counted as that, before anything else"
    );
    assert_eq!(s.guard_not_allowed, 0);
}

#[test]
fn the_allowlist_applies_to_the_control_socket() {
    let mut g = udpring::Guard::default();
    g.allow = vec![udpring::Cidr::new("127.0.0.2".parse().unwrap(), 32).unwrap()];
    let (engine, relay, _, control) = relay(Backend::Mmsg, RelayOpts::new(Vec::new()), Some(g));
    let mut stranger = Sub::new();
    assert_eq!(
        stranger.ask(control, format!("SUB{}", " ".repeat(40)).as_bytes()),
        None
    );
    let s = util::stop_clean(engine);
    assert_eq!(relay.table().control.tokens, 0);
    assert!(s.guard_not_allowed >= 1, "{s:?}");
}

#[test]
fn the_command_takes_subscribers_and_reports_each_in_json() {
    // Port 0 for both: each picks its own, and the banner names both.
    let fan = util::Server::start(&util::words(
        "fanout --listen 127.0.0.1:0 --control 127.0.0.1:0 --expiry 5 -w 1 -q --duration 1.5 --json",
    ));
    let control: std::net::SocketAddr = fan
        .banner
        .split("relaying to subscribers on ")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", fan.banner));
    assert_ne!(control, fan.addr);
    let mut a = Sub::new();
    assert!(a.join(control).starts_with("OK 5"));
    let src = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..20u32 {
        src.send_to(&i.to_be_bytes(), fan.addr).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(a.leave(control).as_deref(), Some("BYE"));
    a.drain();
    assert_eq!(a.seqs, (0..20).collect::<Vec<_>>());
    let v = fan.json();
    util::vocab::check("fanout", &v);
    let d = &v["destinations"][0];
    assert_eq!(d["addr"], a.sock.local_addr().unwrap().to_string(), "{v}");
    assert_eq!(
        (d["kind"].as_str(), d["state"].as_str()),
        (Some("subscriber"), Some("unsubscribed"))
    );
    assert_eq!(d["forwarded"], 20);
    assert_eq!(v["control"]["subscribed"], 1);
    assert_eq!(v["subscribers"], 0);
}

#[test]
fn unsubscribing_revokes_the_token() {
    let (engine, relay, listen, control) = relay(Backend::Mmsg, RelayOpts::new(Vec::new()), None);
    let mut a = Sub::new();
    assert!(a.join(control).starts_with("OK "));
    let old = a.token;
    assert_eq!(a.leave(control).as_deref(), Some("BYE"));
    // The old token subscribes no more, even within its lifetime.
    assert_eq!(a.ask(control, format!("SUB {old:016x}").as_bytes()), None);
    let src = UdpSocket::bind("127.0.0.1:0").unwrap();
    src.send_to(&7u32.to_be_bytes(), listen).unwrap();
    a.drain();
    assert!(
        a.seqs.is_empty(),
        "nothing relayed to a revoked token's owner"
    );
    // A fresh hello gives a new token, which works.
    assert!(a.join(control).starts_with("OK "));
    assert_ne!(a.token, old);
    util::stop_clean(engine);
    let k = relay.table().control;
    assert_eq!(
        (k.subscribed, k.unsubscribed, k.bad_token, k.tokens),
        (2, 1, 1, 2),
        "{k:?}"
    );
}

#[test]
fn one_host_or_prefix_cannot_take_the_whole_relay() {
    let mut opts = RelayOpts::new(Vec::new());
    opts.max_per_host = 3;
    opts.max_per_prefix = 4;
    let (engine, relay, listen, control) = relay(Backend::Mmsg, opts, None);
    let mut subs: Vec<Sub> = (0..4).map(|_| Sub::new()).collect();
    let answers: Vec<String> = subs.iter_mut().map(|s| s.join(control)).collect();
    assert!(
        answers[..3].iter().all(|a| a.starts_with("OK ")),
        "{answers:?}"
    );
    assert_eq!(answers[3], "FULL", "a fourth from one address");
    // Another address of the same /24: one more fits, then the prefix is full.
    let mut b = Sub::on("127.0.0.2");
    let mut c = Sub::on("127.0.0.3");
    assert!(b.join(control).starts_with("OK "));
    assert_eq!(c.join(control), "FULL", "a fifth from one /24");
    // One datagram makes four copies, not one per request a host made.
    let src = UdpSocket::bind("127.0.0.9:0").unwrap();
    src.send_to(&1u32.to_be_bytes(), listen).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Leaving makes room again.
    assert_eq!(subs[0].leave(control).as_deref(), Some("BYE"));
    assert!(c.join(control).starts_with("OK "));
    let s = util::stop_clean(engine);
    let t = relay.table();
    let k = t.control;
    assert_eq!(
        (k.host_full, k.prefix_full, k.subscribed),
        (1, 1, 5),
        "{k:?}"
    );
    assert_eq!(t.received, 1);
    // 4 copies; answers: 7 tokens, 5 OKs, 2 FULLs, 1 BYE.
    assert_eq!(s.sent, 4 + 7 + 5 + 2 + 1, "{s:?}");
}

#[test]
fn the_sweep_of_expired_subscribers_runs_only_while_there_are_any() {
    let mut opts = RelayOpts::new(Vec::new());
    opts.expiry = Duration::from_millis(200);
    let (engine, relay, _, control) = relay(Backend::Mmsg, opts, None);
    // Wake-ups over 400 ms, once a moment has passed.
    let woken = || {
        std::thread::sleep(Duration::from_millis(100));
        let before = engine.worker_stats()[0].waits;
        std::thread::sleep(Duration::from_millis(400));
        engine.worker_stats()[0].waits - before
    };
    // No subscriber: nothing to sweep, the worker sleeps.
    let n = woken();
    assert!(n <= 1, "{n} wake-ups with no subscriber");
    // One that never refreshes: swept (every 50 ms) until it expires.
    let mut c = Sub::new();
    assert!(c.join(control).starts_with("OK "));
    let deadline = Instant::now() + Duration::from_secs(5);
    while relay.table().control.expired == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(relay.table().control.expired, 1, "it expired");
    // Then the sweep is cancelled: no more wake-ups.
    let n = woken();
    assert!(n <= 1, "{n} wake-ups after the last expiry");
    util::stop_clean(engine);
}

#[test]
fn a_destination_that_refuses_every_relay_counts_each_as_failed() {
    // A broadcast address without SO_BROADCAST: the kernel refuses each
    // send (EACCES), trains the send queue made of a burst included.
    let fan = util::Server::start(&util::words(
        "fanout --listen 127.0.0.1:0 --to 127.255.255.255:9 -w 1 -q --duration 1 --json",
    ));
    let src = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..40u32 {
        src.send_to(&i.to_be_bytes(), fan.addr).unwrap();
    }
    let v = fan.json();
    util::vocab::check("fanout", &v);
    let d = &v["destinations"][0];
    assert_eq!(
        util::counts(d, ["forwarded", "failed"]),
        [Some(0), Some(40)],
        "{v}"
    );
    assert_eq!(d["send_errors"]["EACCES"], 40, "{v}");
    assert_eq!(
        util::counts(&v, ["received", "sent"]),
        [Some(40), Some(0)],
        "{v}"
    );
    assert_eq!(v["send_errors"]["EACCES"], 40, "{v}");
}

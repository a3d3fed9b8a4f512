//! Parking (`Config::park`): at light load a `uring` worker waits for its
//! next datagram in `recvmsg` on its socket. It answers a closed loop so,
//! not when something it could not wake for may come (a `Sender`, more
//! than one socket, the spin); a stop, a `Sender` made while it is parked
//! and the handler's timers still reach it in bounded time, timers on
//! time; a socket handed in gets its receive timeout back. Loopback only.

#[macro_use]
mod util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udpring::{Backend, Config, Engine, ErrorEvent, HEADROOM, Handler, Stats};
use util::{Echo, client, closed_loop, config, stop_clean, wait_workers};

/// `n` round trips with `gap` between them (the worker asleep in each).
fn paced_loop(c: &UdpSocket, to: SocketAddr, n: usize, gap: Duration) {
    for _ in 0..n {
        closed_loop(c, to, 1);
        std::thread::sleep(gap);
    }
}

/// `n` round trips 1 ms apart from `c` to `engine`, just started: its
/// worker's counters once they are answered, the worker parked now.
fn park_it(engine: &Engine, c: &UdpSocket, n: u64) -> Stats {
    paced_loop(c, engine.local_addr(), n as usize, Duration::from_millis(1));
    let s = wait_workers(engine, |s| s[0].sent == n)[0].clone();
    assert!(s.parked_waits > 0, "{s:?}");
    s
}

/// An echo started with `cfg`, asked 200 times in closed loop: its
/// worker's counters after.
fn closed_loop_counts(cfg: Config) -> Stats {
    let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
    closed_loop(&client(false), engine.local_addr(), 200);
    let s = wait_workers(&engine, |s| s[0].sent == 200)[0].clone();
    stop_clean(engine);
    s
}

/// A one-worker uring echo asked `n` times, `gap` apart, in turn; the
/// engine, still running, and its worker's counters once all are answered.
fn paced_echo(v6: bool, n: usize, gap: Duration) -> (Engine, Stats) {
    let engine = Engine::start(config(Backend::Uring, v6), |_| Echo::new()).unwrap();
    paced_loop(&client(v6), engine.local_addr(), n, gap);
    let s = wait_workers(&engine, |s| s[0].sent == n as u64)[0].clone();
    (engine, s)
}

#[test]
fn a_closed_loop_is_answered_parked_and_a_stop_reaches_the_parked_worker() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    for v6 in [false, true] {
        let (engine, s) = paced_echo(v6, 50, Duration::from_millis(1));
        // The first request comes through the ring; the rest find the
        // worker parked (one wait each, as in the ring).
        assert!(s.parked_waits >= 40, "v6={v6}: {s:?}");
        assert!(s.waits <= s.received + 5, "v6={v6}: {s:?}");
        // Parked now (its timeout is 50 ms, the next request ~1 ms away):
        // the stop reaches it within that timeout, not at the next
        // datagram, which never comes.
        let start = Instant::now();
        let end = stop_clean(engine);
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "v6={v6}: the stop took {took:?}"
        );
        assert_eq!((end.received, end.sent), (50, 50));
    }
}

/// Requests 80 ms apart, further apart than a park lasts (50 ms): the
/// park that ends with nothing makes the next waits `ppoll` on the socket
/// and the worker's eventfd, with no timeout, so every request after the
/// first is answered parked (they came through the ring, one wake-up of
/// its dearer kind each), and a stop still reaches the worker asleep
/// there.
#[test]
fn requests_further_apart_than_a_park_lasts_are_answered_parked_and_a_stop_reaches_it() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    for v6 in [false, true] {
        let n = 8;
        let (engine, s) = paced_echo(v6, n, Duration::from_millis(80));
        let ring = s.waits - s.parked_waits;
        assert!(ring <= 2, "v6={v6}: waits in the ring: {ring} ({s:?})");
        // One wait a request, and the one that ended with nothing.
        assert!(s.parked_waits <= n as u64 + 2, "v6={v6}: {s:?}");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(stop_clean(engine).sent);
        });
        let sent = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the stop reaches a worker waiting in ppoll");
        assert_eq!(sent, n as u64, "v6={v6}");
    }
}

/// A post made while the worker waits in `ppoll` (requests further apart
/// than a park lasts, then quiet) wakes it through the worker's eventfd.
#[test]
fn a_post_reaches_a_worker_parked_between_sparse_requests() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let engine = Engine::start(config(Backend::Uring, false), |_| Echo::new()).unwrap();
    let c = client(false);
    paced_loop(&c, engine.local_addr(), 3, Duration::from_millis(80));
    let s = wait_workers(&engine, |s| s[0].sent == 3)[0].clone();
    assert!(s.parked_waits >= 2, "{s:?}");
    engine
        .sender(0)
        .unwrap()
        .send_to(b"from elsewhere", c.local_addr().unwrap())
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let Ok((n, _)) = c.recv_from(&mut buf) else {
        // Not woken: its stop would not be heard either.
        std::mem::forget(engine);
        panic!("the post was not sent in 5 s");
    };
    assert_eq!(&buf[..n], b"from elsewhere");
    stop_clean(engine);
}

#[test]
fn a_worker_does_not_park_where_it_could_miss_a_wake_up() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let parked = |cfg: Config| closed_loop_counts(cfg).parked_waits;
    let base = || config(Backend::Uring, false);
    assert!(parked(base()) > 0, "the control parks");
    let mut off = base();
    off.park = false;
    let mut spin = base();
    spin.spin_us = 50;
    let mut two = base();
    two.sockets_per_worker = 2;
    for (what, cfg) in [
        ("park off", off),
        ("spin_us 50", spin),
        ("two sockets", two),
    ] {
        assert_eq!(parked(cfg), 0, "{what}");
    }
    // A Sender made before any traffic: posts wake the ring's eventfd,
    // which a parked worker would not see.
    let engine = Engine::start(base(), |_| Echo::new()).unwrap();
    let _sender = engine.sender(0).unwrap();
    closed_loop(&client(false), engine.local_addr(), 200);
    assert_eq!(stop_clean(engine).parked_waits, 0, "with a Sender");
}

#[test]
fn a_sender_made_while_the_worker_is_parked_is_heard_and_ends_parking() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let engine = Engine::start(config(Backend::Uring, false), |_| Echo::new()).unwrap();
    let c = client(false);
    let to = engine.local_addr();
    let parked = park_it(&engine, &c, 20).parked_waits;
    // Parked now: the post wakes only the ring's eventfd; the park's
    // timeout (50 ms) hands the worker back to the ring, which sends it.
    let start = Instant::now();
    engine
        .sender(0)
        .unwrap()
        .send_to(b"from elsewhere", c.local_addr().unwrap())
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = c.recv_from(&mut buf).expect("the post is sent");
    assert_eq!(&buf[..n], b"from elsewhere");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "the post took {took:?}");
    // And the worker parks no more: a Sender exists.
    paced_loop(&c, to, 20, Duration::from_millis(1));
    let s = wait_workers(&engine, |s| s[0].sent == 41)[0].clone();
    assert_eq!(s.parked_waits, parked, "{s:?}");
    stop_clean(engine);
}

/// Records how late each tick of a periodic timer came.
struct Ticker {
    period: Duration,
    slack: Duration,
    started: Option<Instant>,
    fired: u32,
    late: Arc<Mutex<Vec<Duration>>>,
}

impl Handler for Ticker {
    fn on_start(&mut self, tx: &mut udpring::Transport<'_>) {
        self.started = Some(Instant::now());
        tx.call_every(self.period, 0);
        tx.set_timer_slack(self.slack);
    }
    fn on_datagram(&mut self, d: udpring::Datagram<'_>, tx: &mut udpring::Transport<'_>) {
        let _ = tx.reply(d);
    }
    fn on_timer(&mut self, _: u64, _: &mut udpring::Transport<'_>) {
        self.fired += 1;
        let due = self.started.unwrap() + self.period * self.fired;
        self.late
            .lock()
            .unwrap()
            .push(Instant::now().saturating_duration_since(due));
    }
}

/// Asserts that the median of how late the ticks came is under `bound`.
fn median_late_below(mut late: Vec<Duration>, bound: Duration) {
    late.sort();
    let median = late[late.len() / 2];
    assert!(median < bound, "ticks late by {late:?} (median {median:?})");
}

/// An engine whose handler ticks every 40 ms with `slack`, and answers:
/// how late each tick came.
fn ticking(slack: Duration) -> (Engine, Arc<Mutex<Vec<Duration>>>) {
    let late = Arc::new(Mutex::new(Vec::new()));
    let l2 = late.clone();
    let engine = Engine::start(config(Backend::Uring, false), move |_| Ticker {
        period: Duration::from_millis(40),
        slack,
        started: None,
        fired: 0,
        late: l2.clone(),
    })
    .unwrap();
    (engine, late)
}

/// A ticking engine (`ticking(slack)`) asked `n` times, `gap` apart: the
/// engine, its ticks' lateness, its worker's counters after the requests,
/// and when the ticking began.
fn paced_ticks(
    slack: Duration,
    n: usize,
    gap: Duration,
) -> (Engine, Arc<Mutex<Vec<Duration>>>, Stats, Instant) {
    let (engine, late) = ticking(slack);
    let start = Instant::now();
    paced_loop(&client(false), engine.local_addr(), n, gap);
    let s = engine.worker_stats()[0].clone();
    (engine, late, s, start)
}

/// Requests 25 ms apart keep the worker parked (its timeout is 50 ms);
/// a 40 ms timer falls between them. A park that ran past the timer
/// would fire it at the next request, up to 25 ms late (median ~12 ms);
/// the park ends a margin before it and the ring fires it on time.
#[test]
fn timers_fire_on_time_while_requests_keep_the_worker_parked() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let (engine, late) = ticking(Duration::ZERO);
    paced_loop(
        &client(false),
        engine.local_addr(),
        24,
        Duration::from_millis(25),
    );
    let s = stop_clean(engine);
    assert!(s.parked_waits >= 5, "requests answered parked: {s:?}");
    let late = late.lock().unwrap().clone();
    assert!(late.len() >= 10, "{} ticks in ~600 ms", late.len());
    median_late_below(late, Duration::from_millis(4));
}

/// Requests 1 ms apart, a 40 ms timer: without a slack the park ends a
/// margin (a kernel tick and a millisecond) before each tick and the
/// requests in it come through the ring; with a slack longer than two
/// ticks and the drift, the worker stays parked and fires each tick after
/// the next datagram, within the slack, never early.
#[test]
fn a_timer_with_slack_fires_in_the_park_with_the_next_datagram() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let run = |slack: Duration| {
        let (engine, late, s, start) = paced_ticks(slack, 300, Duration::from_millis(1));
        // Quiet: the ticks go on, from the park's timeout or the ring.
        std::thread::sleep(Duration::from_millis(200));
        let ticks = late.lock().unwrap().len() as u128;
        let due = start.elapsed().as_millis() / 40;
        assert!(ticks + 2 >= due, "{ticks} ticks of {due} due");
        stop_clean(engine);
        let late = late.lock().unwrap().clone();
        (s.waits - s.parked_waits, late)
    };
    let (ring_waits, _) = run(Duration::ZERO);
    let slack = Duration::from_millis(30);
    let (slack_ring_waits, mut late) = run(slack);
    assert!(
        slack_ring_waits * 4 < ring_waits && slack_ring_waits <= 10,
        "waits in the ring: {slack_ring_waits} with the slack, {ring_waits} without"
    );
    late.truncate(6); // the ticks among the requests
    // Each after the next datagram, ~1 ms away (a busy host allowed for);
    // and within the slack.
    median_late_below(late, Duration::from_millis(10));
}

/// Requests 30 ms apart, a 40 ms timer with a 30 ms slack: one socket
/// timeout serves every wait (the slack less the margin, 19-28 ms as the
/// kernel's tick is 10-1 ms), so a wait that ends before the timer is due
/// waits again in the park rather than going to the ring, and the ticks
/// still come within their slack.
#[test]
fn a_slack_timer_keeps_sparse_requests_parked_and_comes_within_its_slack() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let slack = Duration::from_millis(30);
    let (engine, late, s, start) = paced_ticks(slack, 20, Duration::from_millis(30));
    let due = start.elapsed().as_millis() / 40;
    stop_clean(engine);
    let late = late.lock().unwrap().clone();
    assert!(
        late.len() as u128 + 2 >= due,
        "{} ticks of {due} due",
        late.len()
    );
    let ring = s.waits - s.parked_waits;
    assert!(ring <= 3, "waits in the ring: {ring} ({s:?})");
    median_late_below(late, slack);
}

#[test]
fn a_socket_handed_in_gets_its_receive_timeout_back() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
    // The same socket, as the parent that handed it over keeps it.
    let kept = sock.try_clone().unwrap();
    let cfg = config(Backend::Uring, false);
    let engine = Engine::start_on(cfg, [sock.into()], |_| Echo::new()).unwrap();
    park_it(&engine, &client(false), 10);
    stop_clean(engine);
    assert_eq!(kept.read_timeout().unwrap(), Some(Duration::from_secs(7)));
}

/// Echoes, but answers `probe` with a datagram to `closed` (a port
/// nobody holds), and keeps the error events.
struct Probe {
    closed: SocketAddr,
    events: Events,
}

impl Handler for Probe {
    fn on_datagram(&mut self, d: udpring::Datagram<'_>, tx: &mut udpring::Transport<'_>) {
        if d.payload() == b"probe" {
            let _ = tx.send_to(b"anyone?", self.closed);
        } else {
            let _ = tx.reply(d);
        }
    }
    fn on_error(&mut self, ev: ErrorEvent, _: &mut udpring::Transport<'_>) {
        self.events.lock().unwrap().push(ev);
    }
}

/// The error events a handler keeps.
type Events = Arc<Mutex<Vec<ErrorEvent>>>;

/// An engine started with `cfg` whose handler `make` builds from a port
/// nobody holds and the events it is to keep: the engine, that address
/// and the events.
fn hearing<H: Handler>(
    cfg: Config,
    make: impl Fn(SocketAddr, Events) -> H + Send + Sync + 'static,
) -> (Engine, SocketAddr, Events) {
    let closed = util::unused_addr("127.0.0.1");
    let events = Events::default();
    let e2 = events.clone();
    let engine = Engine::start(cfg, move |_| make(closed, e2.clone())).unwrap();
    (engine, closed, events)
}

/// What a parked worker receives is what the ring would have handed it:
/// a datagram longer than a slot, cut and counted; the ICMP error for a
/// datagram it sent, as an event; and it goes on answering.
#[test]
fn a_parked_worker_cuts_long_datagrams_and_hears_icmp_errors() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let mut cfg = config(Backend::Uring, false);
    cfg.slot_size = 2048;
    let (engine, closed, events) = hearing(cfg, |closed, events| Probe { closed, events });
    let c = client(false);
    let to = engine.local_addr();
    let before = park_it(&engine, &c, 10).parked_waits;
    let big = util::pattern(4000, 7);
    c.send_to(&big, to).unwrap();
    let mut buf = vec![0u8; 8192];
    let (n, _) = c.recv_from(&mut buf).expect("the echo of the cut datagram");
    assert_eq!(n, 2048 - HEADROOM);
    assert_eq!(buf[..n], big[..n]);
    c.send_to(b"probe", to).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while events.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    paced_loop(&c, to, 5, Duration::from_millis(1));
    let s = stop_clean(engine);
    let got = events.lock().unwrap().clone();
    assert!(
        got.iter()
            .any(|e| matches!(e, ErrorEvent::ConnectionRefused { peer: Some(p) } if *p == closed)),
        "events {got:?}"
    );
    assert_eq!((s.truncated, s.received), (1, 17), "{s:?}");
    assert!(
        s.parked_waits > before + 5,
        "answered parked throughout: {s:?}"
    );
}

/// Echoes, each answer after 20 µs of work: a burst sent faster than
/// that piles up in the socket. (With a plain echo a parked worker may
/// keep up with a sender on the other CPU, each receive a wait of its
/// own, as it would be in the ring: whether a burst piles up was the
/// host's doing.)
struct Busy;

impl Handler for Busy {
    fn on_datagram(&mut self, d: udpring::Datagram<'_>, tx: &mut udpring::Transport<'_>) {
        let until = Instant::now() + Duration::from_micros(20);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        let _ = tx.reply(d);
    }
}

/// A burst finds the worker parked: its receives find their datagrams
/// waiting, and it goes back to the ring, whose waits take many at once
/// (parked, every datagram would be a wait of its own).
#[test]
fn a_burst_sends_a_parked_worker_back_to_the_ring() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let engine = Engine::start(config(Backend::Uring, false), |_| Busy).unwrap();
    let c = client(false);
    let to = engine.local_addr();
    let before = park_it(&engine, &c, 10);
    const N: u64 = 5000;
    for i in 0..N {
        c.send_to(&i.to_be_bytes(), to).unwrap();
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while c.recv_from(&mut buf).is_ok() {
        got += 1;
        if got == N {
            break;
        }
    }
    let s = stop_clean(engine);
    let (received, waits) = (s.received - before.received, s.waits - before.waits);
    assert!(received > N / 2, "{received} of {N} received: {s:?}");
    assert!(
        waits * 2 < received,
        "{waits} waits for {received} datagrams: {s:?}"
    );
}

/// Answers by copy (`reply_with`): `order` with two datagrams built in a
/// slot (`send_each_with`: queued, they cannot go at once) before its
/// answer; `probe` with a datagram to `closed` before its answer;
/// `probe after` the same after its answer; `refused` with one the kernel
/// refuses before its answer; `queued probe` with both (all queued);
/// anything else with itself. Keeps the error events.
struct Copies {
    closed: SocketAddr,
    events: Events,
}

impl Handler for Copies {
    fn on_datagram(&mut self, d: udpring::Datagram<'_>, tx: &mut udpring::Transport<'_>) {
        let fill = |b: &mut udpring::SendBuf<'_>| {
            b[..2].copy_from_slice(b"AB");
            2
        };
        match d.payload() {
            b"order" => {
                let _ = tx.send_each_with(0usize, 1, 2, d.source(), fill);
                let _ = tx.reply_with(&d, b"C");
            }
            b"probe" => {
                let _ = tx.send_to(b"anyone?", self.closed);
                let _ = tx.reply_with(&d, b"ok");
            }
            b"refused" => {
                // Refused by the kernel at once (no SO_BROADCAST): EACCES.
                let _ = tx.send_to(b"all?", "255.255.255.255:9".parse().unwrap());
                let _ = tx.reply_with(&d, b"ok");
            }
            b"probe after" => {
                let _ = tx.reply_with(&d, b"ok");
                let _ = tx.send_to(b"anyone?", self.closed);
            }
            b"queued probe" => {
                let _ = tx.send_each_with(0usize, 1, 2, d.source(), fill);
                let _ = tx.send_to(b"anyone?", self.closed);
                let _ = tx.reply_with(&d, b"ok");
            }
            p => {
                let p = p.to_vec();
                let _ = tx.reply_with(&d, &p);
            }
        }
    }
    fn on_error(&mut self, ev: ErrorEvent, _: &mut udpring::Transport<'_>) {
        self.events.lock().unwrap().push(ev);
    }
}

/// A parked worker sends the handler's first send in its call when
/// nothing is queued before it: counted as any send, and after what is
/// queued when something is; one the kernel refuses at once is counted
/// and reported once. The kernel reports an ICMP error on the next send from
/// the socket (here the answer that follows a datagram to a closed port):
/// that answer is queued and goes, and the error still reaches the
/// handler, though the parked receive never sees it; so too when all of
/// them were queued and the answer failed inside `sendmmsg`, which drops
/// why.
#[test]
fn parked_answers_go_at_once_in_order_and_their_errors_are_heard() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let (engine, closed, events) = hearing(config(Backend::Uring, false), |closed, events| {
        Copies { closed, events }
    });
    let c = client(false);
    let to = engine.local_addr();
    let parked = park_it(&engine, &c, 10);
    let mut buf = [0u8; 64];
    let mut next = || {
        let (n, _) = c.recv_from(&mut buf).expect("an answer");
        buf[..n].to_vec()
    };
    for _ in 0..10 {
        c.send_to(b"order", to).unwrap();
        let got = [next(), next(), next()];
        assert_eq!(got, [b"A".to_vec(), b"B".to_vec(), b"C".to_vec()]);
    }
    for _ in 0..10 {
        c.send_to(b"probe", to).unwrap();
        assert_eq!(next(), b"ok");
    }
    let heard = |events: &Events| {
        let e = events.lock().unwrap();
        let refused = |e: &&ErrorEvent| matches!(e, ErrorEvent::ConnectionRefused { peer: Some(p) } if *p == closed);
        (e.iter().filter(refused).count(), format!("{e:?}"))
    };
    let (refused, all) = heard(&events);
    assert!(refused >= 9, "events {all}");
    // Queued, the answer fails inside `sendmmsg`, which drops why.
    for _ in 0..10 {
        c.send_to(b"queued probe", to).unwrap();
        let got = [next(), next(), next()];
        assert_eq!(got, [b"A".to_vec(), b"B".to_vec(), b"ok".to_vec()]);
    }
    let s = wait_workers(&engine, |s| s[0].sent == 100)[0].clone();
    let (refused, all) = heard(&events);
    assert!(refused >= 19, "events {all}");
    // The error pending when the next request comes: the receive reports
    // it, or (a race) the answer at once meets it and goes once more.
    for _ in 0..20 {
        c.send_to(b"probe after", to).unwrap();
        c.send_to(b"x", to).unwrap();
        assert_eq!(next(), b"ok");
        assert_eq!(next(), b"x");
    }
    // Refused at once: counted and reported once, the answer after it
    // sent.
    c.send_to(b"refused", to).unwrap();
    assert_eq!(next(), b"ok");
    let s2 = wait_workers(&engine, |s| s[0].sent == 161)[0].clone();
    let eacces = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, ErrorEvent::SendFailed { errno, .. } if *errno == libc::EACCES))
        .count();
    assert_eq!(eacces, 1, "events {:?}", events.lock().unwrap());
    assert_eq!(s2.send_errors_total(), 1, "{s2:?}");
    let end = stop_clean(engine);
    assert!(end.parked_waits >= parked.parked_waits + 25, "{end:?}");
    // park_it's 10 echoes of 4 bytes, 10 x (A, B, C), 10 x (anyone?, ok),
    // 10 x (A, B, anyone?, ok); then 20 x (ok, anyone?, x) and one ok.
    assert_eq!(s.sent, 10 + 30 + 20 + 40, "{s:?}");
    assert_eq!(s.bytes_sent, 40 + 30 + 10 * (7 + 2) * 2 + 20, "{s:?}");
    assert_eq!(s.send_errors_total(), 0, "{s:?}");
}

//! The guard across hosts: forged datagrams that would start packet loops
//! (raw sockets, inside the LAN the test builds) between a server and
//! itself, twins, any two udpring servers on any ports (echoes, relays, a
//! library handler), a relay subscribed to a relay by forged requests;
//! broadcast; and a relay that listens on loopback and sends to the LAN.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use udpring::{Datagram, Engine, Handler, Transport};

use crate::topo::{KillOnDrop, Topology, forge_from_port, forge_udp4, json_of};

fn server(topo: &Topology, ns: &str, args: &[&str]) -> KillOnDrop {
    topo.server(ns, args)
}

fn v4(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

#[test]
fn forged_datagrams_start_no_loop_and_broadcasts_get_no_answer() {
    let topo = crate::topology!(lan, "gd");
    let echo = |ns| {
        server(
            &topo,
            ns,
            &crate::util::words("echo --bind 0.0.0.0:9000 -w 1 -q --duration 3 --json"),
        )
    };
    let (e2, e3) = (echo("h2"), echo("h3"));
    // A pong on h1 that also hears unicast on its port.
    let pong = topo.mcast(
        "h1",
        &[
            "mcast",
            "pong",
            "239.1.2.3:5000",
            "--duration",
            "3",
            "--json",
        ],
    );
    topo.run_in("h2", || {
        // From the echo to itself, on loopback.
        forge_udp4(v4("127.0.0.1:9000"), v4("127.0.0.1:9000"), b"self");
    });
    topo.run_in("h1", || {
        // h3's echo to h2's: two twins set against each other.
        forge_udp4(v4("10.201.0.3:9000"), v4("10.201.0.2:9000"), b"twins");
        // h2's echo to the pong, by unicast: an echo and a pong.
        forge_udp4(v4("10.201.0.2:9000"), v4("10.201.0.1:5000"), b"pong me");
        // The subnet's broadcast address, to both echoes.
        let b = UdpSocket::bind("10.201.0.1:0").unwrap();
        b.set_broadcast(true).unwrap();
        b.send_to(b"everyone", "10.201.0.255:9000").unwrap();
    });
    let t2 = json_of(&e2.finish());
    let t3 = json_of(&e3.finish());
    let p = pong.finish();
    let pong_err = String::from_utf8_lossy(&p.stderr);
    // Not one answer anywhere: each forged datagram was the only one.
    assert_eq!(
        (t2["sent"].as_u64(), t3["sent"].as_u64()),
        (Some(0), Some(0)),
        "{t2} {t3}"
    );
    assert_eq!(t2["received_bufs"], 3, "self, twin, broadcast: {t2}");
    assert_eq!(t2["guard_loop"], 2, "{t2}");
    assert_eq!(t2["guard_broadcast"], 1, "{t2}");
    assert_eq!(t3["received_bufs"], 1, "only the broadcast: {t3}");
    assert_eq!(t3["guard_broadcast"], 1, "{t3}");
    assert!(
        pong_err.contains("1 datagrams not answered"),
        "the unicast 'ping' was not answered: {pong_err}"
    );
}

/// A library handler that answers every datagram with its bytes in
/// capitals: a server like any other.
struct Shout(Arc<AtomicU64>);

impl Handler for Shout {
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
        let up = d.payload().to_ascii_uppercase();
        let _ = tx.reply_with(&d, &up);
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Each of these starts with one forged datagram between two servers that
/// answer whatever they are sent, on ports of no known service: the first
/// answers (its answer carries the server mark), the second refuses that
/// answer. The bound, per forged datagram: two datagrams handled by the
/// pair, one answer sent.
#[test]
fn any_two_udpring_servers_answer_a_forged_datagram_once() {
    let topo = crate::topology!(lan, "gp");
    let echo = |ns, bind| {
        server(
            &topo,
            ns,
            &[
                "echo",
                "--bind",
                bind,
                "-w",
                "1",
                "-q",
                "--duration",
                "3",
                "--json",
            ],
        )
    };
    // Dual-stack echoes on arbitrary ports, and a library handler.
    let (e2, e3) = (echo("h2", "[::]:9000"), echo("h3", "[::]:9100"));
    let handled = Arc::new(AtomicU64::new(0));
    let h2 = handled.clone();
    let lib = topo.run_in("h3", move || {
        let mut cfg = udpring::Config::new(sa("[::]:7100"));
        cfg.workers = 1;
        Engine::start(cfg, move |_| Shout(h2.clone())).unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    topo.run_in("h3", || {
        // h3's echo to h2's, over IPv4 and over IPv6.
        forge_from_port(9100, sa("10.201.0.2:9000"), b"echo v4");
        forge_from_port(9100, sa("[fd00:201::2]:9000"), b"echo v6");
        // The library handler to h2's echo: the echo answers first.
        forge_from_port(7100, sa("10.201.0.2:9000"), b"echo first");
    });
    topo.run_in("h2", || {
        // h2's echo to the library handler: the handler answers first.
        forge_from_port(9000, sa("[fd00:201::3]:7100"), b"handler first");
    });
    let t2 = json_of(&e2.finish());
    let t3 = json_of(&e3.finish());
    let l = lib.stop().unwrap();
    eprintln!("h2 echo {t2}\nh3 echo {t3}\nhandler {l:?}");
    // h2's echo: three forged datagrams answered, the handler's answer
    // refused.
    assert_eq!(
        crate::util::counts(&t2, ["received_bufs", "sent", "guard_marked"]),
        [Some(4), Some(3), Some(1)],
        "{t2}"
    );
    // h3's echo: the two answers to its forged port, refused.
    assert_eq!(
        crate::util::counts(&t3, ["received_bufs", "sent", "guard_marked"]),
        [Some(2), Some(0), Some(2)],
        "{t3}"
    );
    // The handler: one forged datagram handled and answered, the echo's
    // answer refused before it saw it.
    assert_eq!(handled.load(Ordering::Relaxed), 1);
    assert_eq!(
        (l.received_bufs, l.sent, l.guard_marked),
        (2, 1, 1),
        "{l:?}"
    );
}

/// `udpring reference echo` (the C-level echo: no engine) is a udpring
/// server too: it marks its answers and refuses what the guard would, so
/// neither it and an echo nor two of it keep a forged datagram going.
#[test]
fn the_reference_echo_and_an_echo_answer_a_forged_datagram_once() {
    let topo = crate::topology!(lan, "gx");
    let e2 = server(
        &topo,
        "h2",
        &crate::util::words("echo --bind [::]:9000 -w 1 -q --duration 3 --json"),
    );
    let r3 = server(
        &topo,
        "h3",
        &crate::util::words("reference echo --bind [::]:9100 --duration 3 --json"),
    );
    std::thread::sleep(Duration::from_millis(200));
    topo.run_in("h3", || {
        // The reference echo to the echo, over IPv4 and IPv6: the echo
        // answers, the reference echo refuses its marked answers.
        forge_from_port(9100, sa("10.201.0.2:9000"), b"echo v4");
        forge_from_port(9100, sa("[fd00:201::2]:9000"), b"echo v6");
        // From its own port, and from the echo service's port 7.
        forge_udp4(v4("127.0.0.1:9100"), v4("127.0.0.1:9100"), b"self");
    });
    topo.run_in("h1", || {
        forge_udp4(v4("10.201.0.1:7"), v4("10.201.0.3:9100"), b"inetd echo");
    });
    topo.run_in("h2", || {
        // The echo to the reference echo: it answers first, marked.
        forge_from_port(9000, sa("10.201.0.3:9100"), b"reference first");
    });
    let t2 = json_of(&e2.finish());
    let r = json_of(&r3.finish());
    eprintln!("h2 echo {t2}\nh3 reference echo {r}");
    assert_eq!(
        crate::util::counts(&t2, ["received_bufs", "sent", "guard_marked"]),
        [Some(3), Some(2), Some(1)],
        "{t2}"
    );
    assert_eq!(r["sent"], 1, "{r}");
    assert_eq!(
        crate::util::counts(
            &r["guard"],
            [
                "guard_marked",
                "guard_loop",
                "guard_port",
                "guard_bad_source"
            ]
        ),
        [Some(2), Some(1), Some(1), Some(0)],
        "{r}"
    );
}

/// Two relays that each send to the group the other listens on (X on h2:
/// G1 -> G2, Y on h3: G2 -> G1), two workers each, and five datagrams sent
/// to G1 from h1. The mark cannot stop this loop (group datagrams leave
/// with their scoping TTL); X takes bytes it relayed coming back from Y for
/// laps, and after `MAX_LAPS` of them relays them no more. Before, one
/// datagram made 291,434 relays each way in 3 s.
#[test]
fn two_relays_crossing_groups_stop_each_datagram_within_its_laps() {
    use udpring_cli::apps::fanout::laps::MAX_LAPS;
    let topo = crate::topology!(lan, "gg");
    let relay = |ns, listen, to| {
        server(
            &topo,
            ns,
            &[
                "fanout",
                "--listen",
                listen,
                "--to",
                to,
                "--iface",
                "e0",
                "-w",
                "2",
                "-q",
                "--duration",
                "3",
                "--json",
            ],
        )
    };
    let x = relay("h2", "239.1.9.1:6001", "239.1.9.2:6002");
    let y = relay("h3", "239.1.9.2:6002", "239.1.9.1:6001");
    std::thread::sleep(Duration::from_millis(300));
    let out = topo.udpring(
        "h1",
        &[
            "mcast",
            "send",
            "239.1.9.1:6001",
            "--iface",
            "e0",
            "--count",
            "5",
            "--rate",
            "50",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let (x, y) = (json_of(&x.finish()), json_of(&y.finish()));
    eprintln!("X {x}\nY {y}");
    let laps = u64::from(MAX_LAPS);
    // X: each datagram from h1, then MAX_LAPS laps of it from Y, then one
    // lap too many, dropped. Y: everything from X, one source: no laps.
    assert_eq!(
        crate::util::counts(&x, ["received", "looped"]),
        [Some(5 * (1 + laps)), Some(5)],
        "{x}"
    );
    assert_eq!(
        crate::util::counts(&y, ["received", "looped"]),
        [Some(5 * (1 + laps)), Some(0)],
        "{y}"
    );
}

/// Two relays, each a destination of the other, and a sink on h1: a
/// datagram forged from Y's own listening port is refused by X (it comes
/// from one of X's destinations); one forged from another port of Y's host
/// reaches X, which relays it to the sink and to Y; Y relays nothing of
/// X's (it carries the server mark). Then the same through `--control`: a stranger subscribed to Y
/// forges X's `SUB` from Y's listening address; X's token goes there, and
/// Y does not relay it to the stranger, who never learns it.
#[test]
fn two_relays_sent_to_each_other_relay_once() {
    let topo = crate::topology!(lan, "gr");
    let sink = topo.run_in("h1", || {
        let s = UdpSocket::bind("10.201.0.1:7000").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    });
    let relay = |ns, listen, to, control| {
        let mut args = vec![
            "fanout",
            "--listen",
            listen,
            "--to",
            to,
            "-w",
            "1",
            "-q",
            "--duration",
            "3",
            "--json",
        ];
        if let Some(c) = control {
            args.extend(["--control", c]);
        }
        server(&topo, ns, &args)
    };
    let x = relay(
        "h2",
        "0.0.0.0:5000",
        "10.201.0.3:5100,10.201.0.1:7000",
        Some("0.0.0.0:5001"),
    );
    let y = relay(
        "h3",
        "0.0.0.0:5100",
        "10.201.0.2:5000",
        Some("0.0.0.0:5101"),
    );
    std::thread::sleep(Duration::from_millis(200));
    topo.run_in("h3", || {
        // From Y's own listening port: X refuses what its destinations send.
        forge_from_port(5100, sa("10.201.0.2:5000"), b"zero");
        // From another port of Y's host: X relays it to the sink and to Y.
        forge_from_port(5199, sa("10.201.0.2:5000"), b"one");
    });
    let mut buf = [0u8; 64];
    let (n, _) = sink.recv_from(&mut buf).expect("X relays to the sink");
    assert_eq!(&buf[..n], b"one");
    assert!(sink.recv_from(&mut buf).is_err(), "one copy, not a loop");
    // The stranger on h1: subscribes to Y, then forges X's SUB from Y's
    // listening address.
    let stranger = topo.run_in("h1", || {
        let s = UdpSocket::bind("10.201.0.1:7001").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let ask = |req: &[u8]| {
            s.send_to(req, "10.201.0.3:5101").unwrap();
            let mut b = [0u8; 64];
            let (n, _) = s.recv_from(&mut b).expect("Y answers");
            String::from_utf8_lossy(&b[..n]).into_owned()
        };
        let t = ask(format!("SUB{}", " ".repeat(40)).as_bytes());
        let token = t.strip_prefix("TOKEN ").expect("a token").to_string();
        assert!(ask(format!("SUB {token}").as_bytes()).starts_with("OK "));
        forge_udp4(
            "10.201.0.3:5100".parse().unwrap(),
            "10.201.0.2:5001".parse().unwrap(),
            format!("SUB{}", " ".repeat(40)).as_bytes(),
        );
        s
    });
    let got = stranger.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec());
    assert!(
        got.is_err(),
        "Y relayed X's answer to its subscriber: {got:?}"
    );
    let tx = json_of(&x.finish());
    let ty = json_of(&y.finish());
    eprintln!("X {tx}\nY {ty}");
    assert_eq!(tx["received"], 1, "{tx}");
    assert_eq!(tx["from_destination"], 1, "{tx}");
    assert_eq!(
        tx["control"]["tokens"], 1,
        "X answered the forged SUB: {tx}"
    );
    assert_eq!(
        (ty["received"].as_u64(), ty["guard_marked"].as_u64()),
        (Some(0), Some(2)),
        "Y relayed nothing of X's: the copy and the token refused: {ty}"
    );
    assert_eq!(ty["control"]["subscribed"], 1, "{ty}");
}

#[test]
fn a_relay_listening_on_loopback_reaches_the_lan() {
    let topo = crate::topology!(lan, "gf");
    let sink = topo.run_in("h1", || {
        let s = UdpSocket::bind("10.201.0.1:7000").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    });
    let relay = server(
        &topo,
        "h2",
        &[
            "fanout",
            "--listen",
            "127.0.0.1:6000",
            "--to",
            "10.201.0.1:7000",
            "-w",
            "1",
            "--duration",
            "2",
            "-q",
            "--json",
        ],
    );
    topo.run_in("h2", || {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..10u8 {
            c.send_to(&[i], "127.0.0.1:6000").unwrap();
        }
    });
    let mut buf = [0u8; 8];
    for _ in 0..10 {
        sink.recv_from(&mut buf)
            .expect("relayed from loopback to the LAN");
    }
    let t = json_of(&relay.finish());
    assert_eq!(t["destinations"][0]["forwarded"], 10, "{t}");
    assert_eq!(t["send_errors"], serde_json::json!({}), "{t}");
}

//! The multicast and broadcast API on the LAN: any-source and
//! source-specific joins, loopback, the outgoing interface, broadcast, and
//! typed errors.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use udpring::{Config, Datagram, Engine, Handler, Transport};

use crate::topo::Topology;

/// Records every datagram's payload and source; obeys "leave GROUP" and
/// "join GROUP" commands sent to it by unicast, answering "done".
struct Recorder {
    got: Got,
}

impl Handler for Recorder {
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        let text = String::from_utf8_lossy(d.payload()).into_owned();
        let src = d.source();
        let iface = udpring::Interface::Name("e0".into());
        let r = match text.split_once(' ') {
            Some(("leave", g)) => Some(tx.leave_group(0, g.parse().unwrap(), iface)),
            Some(("join", g)) => Some(tx.join_group(0, g.parse().unwrap(), iface)),
            _ => None,
        };
        match r {
            Some(r) => {
                let msg = match r {
                    Ok(()) => "done".to_string(),
                    Err(e) => format!("error {e}"),
                };
                tx.send_to(msg.as_bytes(), src).unwrap();
            }
            None => self.got.lock().unwrap().push((d.payload().to_vec(), src)),
        }
    }
}

pub(crate) type Got = Arc<Mutex<Vec<(Vec<u8>, SocketAddr)>>>;

/// Starts a recording engine in namespace `ns` with `cfg`.
pub(crate) fn recorder(topo: &Topology, ns: &str, cfg: Config) -> (Engine, Got) {
    let got: Got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    let engine = topo.run_in(ns, move || {
        Engine::start(cfg, move |_| Recorder { got: g2.clone() }).unwrap()
    });
    (engine, got)
}

pub(crate) fn group_cfg(bind: &str, joins: Vec<udpring::Join>) -> Config {
    let mut c = Config::new(bind.parse().unwrap());
    c.workers = 1;
    c.reuse_addr = true;
    c.multicast.joins = joins;
    c
}

pub(crate) fn join(group: &str, source: Option<&str>, iface: &str) -> udpring::Join {
    udpring::Join {
        group: group.parse().unwrap(),
        source: source.map(|s| s.parse().unwrap()),
        interface: udpring::Interface::Name(iface.into()),
    }
}

/// Sends `msgs` from namespace `ns` with a plain socket bound to `bind`
/// (multicast out of `iface`, TTL `ttl`), and returns the replies to
/// command messages (those starting with "leave"/"join").
pub(crate) fn send_from(
    topo: &Topology,
    ns: &str,
    bind: &str,
    to: &str,
    msgs: Vec<&'static str>,
) -> Vec<String> {
    let (bind, to): (SocketAddr, SocketAddr) = (bind.parse().unwrap(), to.parse().unwrap());
    topo.run_in(ns, move || {
        let s = std::net::UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.set_broadcast(true);
        let mut answers = Vec::new();
        for m in msgs {
            s.send_to(m.as_bytes(), to).unwrap();
            if m.starts_with("leave") || m.starts_with("join") {
                let mut buf = [0u8; 256];
                let (n, _) = s.recv_from(&mut buf).unwrap();
                answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        answers
    })
}

pub(crate) fn payloads(got: &Got) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
        .collect()
}

pub(crate) fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

/// Waits (up to 5 s) until `g` holds exactly `want`, then checks it.
pub(crate) fn expect_payloads(g: &Got, want: &[&str], what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while payloads(g) != want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(payloads(g), want, "{what}");
}

#[test]
fn asm_join_then_leave_v4_and_v6() {
    let topo = crate::topology!(lan, "j");
    for (bind, group, to, me) in [
        (
            "0.0.0.0:5000",
            "239.1.2.3",
            "239.1.2.3:5000",
            "10.201.0.2:5000",
        ),
        (
            "[::]:5000",
            "ff15::1:2:3",
            "[ff15::1:2:3%2]:5000",
            "[fd00:201::2]:5000",
        ),
    ] {
        let (engine, got) = recorder(&topo, "h2", group_cfg(bind, vec![join(group, None, "e0")]));
        // h1 sends to the group; then tells h2 (by unicast) to leave; sends again.
        let v6 = bind.starts_with('[');
        let from = if v6 { "[::]:0" } else { "10.201.0.1:0" };
        let to = if v6 {
            // The scope (interface index of e0 in h1) is looked up there.
            let idx = topo.run_in("h1", || nix::net::if_::if_nametoindex("e0").unwrap());
            to.replace("%2", &format!("%{idx}"))
        } else {
            to.to_string()
        };
        let to: &'static str = Box::leak(to.into_boxed_str());
        send_from(&topo, "h1", from, to, vec!["before"]);
        settle();
        let me: &'static str = me;
        let leave: &'static str = Box::leak(format!("leave {group}").into_boxed_str());
        assert_eq!(
            send_from(&topo, "h1", from, me, vec![leave]),
            ["done"],
            "{group}"
        );
        send_from(&topo, "h1", from, to, vec!["after"]);
        settle();
        assert_eq!(
            payloads(&got),
            ["before"],
            "{group}: nothing arrives after leave"
        );
        // Leaving again is a typed error.
        assert!(
            send_from(&topo, "h1", from, me, vec![leave])[0].contains("not a member"),
            "{group}"
        );
        let s = engine.stop().unwrap();
        assert_eq!(s.slots_out, 0);
    }
}

/// The kernel hands a group's datagram to every socket on its port: with
/// a socket per worker in one port group, each worker would get a copy
/// (a relay relayed each datagram once per worker). Each arrives once.
#[test]
fn a_group_datagram_reaches_one_of_several_workers_once() {
    let topo = crate::topology!(lan, "mw");
    let idx = topo.run_in("h1", || nix::net::if_::if_nametoindex("e0").unwrap());
    let v6_to: &'static str = Box::leak(format!("[ff15::1:2:4%{idx}]:5002").into_boxed_str());
    for (bind, group, from, to) in [
        (
            "0.0.0.0:5002",
            "239.1.2.4",
            "10.201.0.1:0",
            "239.1.2.4:5002",
        ),
        ("[::]:5002", "ff15::1:2:4", "[::]:0", v6_to),
    ] {
        let mut cfg = group_cfg(bind, vec![join(group, None, "e0")]);
        cfg.workers = 2;
        let (engine, got) = recorder(&topo, "h2", cfg);
        send_from(&topo, "h1", from, to, vec!["one", "two", "three"]);
        settle();
        let mut p = payloads(&got);
        p.sort();
        assert_eq!(p, ["one", "three", "two"], "{group}");
        // Unicast still reaches the engine (either worker).
        let me = if bind.starts_with('[') {
            "[fd00:201::2]:5002"
        } else {
            "10.201.0.2:5002"
        };
        send_from(&topo, "h1", from, me, vec!["unicast"]);
        expect_payloads(
            &got,
            &["one", "two", "three", "unicast"],
            &format!("{group}: and unicast"),
        );
        let s = engine.stop().unwrap();
        assert_eq!((s.received, s.slots_out), (4, 0), "{group}");
    }
}

#[test]
fn ssm_lets_only_the_chosen_source_through() {
    let topo = crate::topology!(lan, "s");
    let (engine, got) = recorder(
        &topo,
        "h3",
        group_cfg(
            "0.0.0.0:5002",
            vec![join("232.1.1.1", Some("10.201.0.1"), "e0")],
        ),
    );
    send_from(
        &topo,
        "h2",
        "10.201.0.2:0",
        "232.1.1.1:5002",
        vec!["from h2"],
    );
    send_from(
        &topo,
        "h1",
        "10.201.0.1:0",
        "232.1.1.1:5002",
        vec!["from h1"],
    );
    settle();
    let got_now = got.lock().unwrap().clone();
    assert_eq!(got_now.len(), 1, "{got_now:?}");
    assert_eq!(got_now[0].0, b"from h1");
    assert_eq!(got_now[0].1.ip().to_string(), "10.201.0.1");
    engine.stop().unwrap();
    // IPv6 (MCAST_JOIN_SOURCE_GROUP), in the SSM range ff3x::/32.
    let (engine, got) = recorder(
        &topo,
        "h3",
        group_cfg(
            "[::]:5012",
            vec![join("ff35::8:8:8", Some("fd00:201::1"), "e0")],
        ),
    );
    let idx = topo.run_in("h1", || nix::net::if_::if_nametoindex("e0").unwrap());
    let to: &'static str = Box::leak(format!("[ff35::8:8:8%{idx}]:5012").into_boxed_str());
    send_from(&topo, "h2", "[fd00:201::2]:0", to, vec!["from h2"]);
    send_from(&topo, "h1", "[fd00:201::1]:0", to, vec!["from h1"]);
    settle();
    assert_eq!(payloads(&got), ["from h1"], "IPv6 SSM");
    engine.stop().unwrap();
}

/// Sends to a group on start with the given options, and records what it
/// hears itself.
struct McastSender {
    to: SocketAddr,
    ttl: u32,
    loopback: bool,
    iface: Option<&'static str>,
    got: Got,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Handler for McastSender {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        tx.set_multicast_ttl(0, self.ttl).unwrap();
        tx.set_multicast_loop(0, self.loopback).unwrap();
        if let Some(i) = self.iface {
            tx.set_multicast_interface(0, udpring::Interface::Name(i.into()))
                .unwrap();
        }
        let seen = format!(
            "ttl {} loop {} if {:?}",
            tx.multicast_ttl(0).unwrap(),
            tx.multicast_loop(0).unwrap(),
            tx.multicast_interface(0).unwrap()
        );
        self.seen.lock().unwrap().push(seen);
        tx.send_to(b"hello group", self.to).unwrap();
    }
    fn on_datagram(&mut self, d: Datagram<'_>, _tx: &mut Transport<'_>) {
        self.got
            .lock()
            .unwrap()
            .push((d.payload().to_vec(), d.source()));
    }
}

fn mcast_sender(
    topo: &Topology,
    ns: &str,
    joins: Vec<udpring::Join>,
    ttl: u32,
    loopback: bool,
    iface: Option<&'static str>,
) -> (Engine, Got, Arc<Mutex<Vec<String>>>) {
    let got: Got = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (g2, s2) = (got.clone(), seen.clone());
    let engine = topo.run_in(ns, move || {
        Engine::start(group_cfg("0.0.0.0:5003", joins), move |_| McastSender {
            to: "239.3.3.3:5003".parse().unwrap(),
            ttl,
            loopback,
            iface,
            got: g2.clone(),
            seen: s2.clone(),
        })
        .unwrap()
    });
    (engine, got, seen)
}

#[test]
fn loopback_off_means_the_sender_does_not_hear_itself_and_getters_read_back() {
    let topo = crate::topology!(lan, "l");
    let (rx, rx_got) = recorder(
        &topo,
        "h2",
        group_cfg("0.0.0.0:5003", vec![join("239.3.3.3", None, "e0")]),
    );
    for loopback in [true, false] {
        let (tx, own, seen) = mcast_sender(
            &topo,
            "h1",
            vec![join("239.3.3.3", None, "e0")],
            3,
            loopback,
            None,
        );
        settle();
        assert_eq!(
            seen.lock().unwrap()[0],
            format!("ttl 3 loop {loopback} if Any")
        );
        assert_eq!(
            own.lock().unwrap().len(),
            loopback as usize,
            "loop {loopback}: the sender hears itself?"
        );
        tx.stop().unwrap();
    }
    expect_payloads(&rx_got, &["hello group", "hello group"], "h2 hears both");
    rx.stop().unwrap();
}

#[test]
fn the_outgoing_interface_chooses_the_link() {
    let topo = crate::topology!(lan, "o");
    // h2 is only on br0; h3 listens on br1 (its e1).
    let (r2, g2) = recorder(
        &topo,
        "h2",
        group_cfg("0.0.0.0:5003", vec![join("239.3.3.3", None, "e0")]),
    );
    let (r3, g3) = recorder(
        &topo,
        "h3",
        group_cfg("0.0.0.0:5003", vec![join("239.3.3.3", None, "e1")]),
    );
    let (tx, _, seen) = mcast_sender(&topo, "h1", vec![], 1, false, Some("e1"));
    settle();
    assert!(
        seen.lock().unwrap()[0].contains("if Addr") || seen.lock().unwrap()[0].contains("if Any")
    );
    expect_payloads(&g3, &["hello group"], "h3 on e1's link hears it");
    assert!(payloads(&g2).is_empty(), "h2, on the other link, does not");
    tx.stop().unwrap();
    r2.stop().unwrap();
    r3.stop().unwrap();
}

#[test]
fn broadcast_to_the_subnet_reaches_every_host() {
    let topo = crate::topology!(lan, "c");
    let mut cfg = Config::new("0.0.0.0:5004".parse().unwrap());
    cfg.workers = 1;
    // A listener of broadcasts says so: by default the engine refuses
    // datagrams sent to a broadcast address (guard_broadcast).
    cfg.guard.broadcast_destinations = true;
    let (r2, g2) = recorder(&topo, "h2", cfg.clone());
    let (r3, g3) = recorder(&topo, "h3", cfg);
    send_from(
        &topo,
        "h1",
        "10.201.0.1:0",
        "10.201.0.255:5004",
        vec!["to all"],
    );
    settle();
    expect_payloads(&g2, &["to all"], "h2");
    expect_payloads(&g3, &["to all"], "h3");
    r2.stop().unwrap();
    r3.stop().unwrap();
}

#[test]
fn bad_groups_and_interfaces_are_typed_errors() {
    let topo = crate::topology!(lan, "e");
    let errs = topo.run_in("h1", || {
        let mut out = Vec::new();
        for (group, iface) in [
            ("10.0.0.1", "e0"),
            ("ff15::1", "e0"),
            ("239.1.1.1", "nosuch0"),
        ] {
            let cfg = group_cfg("0.0.0.0:5005", vec![join(group, None, iface)]);
            out.push(
                Engine::start(cfg, |_| Recorder {
                    got: Arc::default(),
                })
                .err()
                .unwrap()
                .to_string(),
            );
        }
        out
    });
    assert!(errs[0].contains("not a multicast group"), "{errs:?}");
    assert!(errs[1].contains("address family"), "{errs:?}");
    assert!(errs[2].contains("no interface nosuch0"), "{errs:?}");
}

//! Tests across network namespaces the test builds itself (tools/netns.sh):
//! host A, router R, host B, with a 1280-byte IPv4 and 1400-byte IPv6 path
//! MTU; and a LAN of three hosts on a bridge for multicast and broadcast.
//! They need root; elsewhere they say why they skip, and with
//! `UDPRING_REQUIRE_NETNS=1` (set by .ci/run) they fail instead.

mod common;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udpring::{Config, Datagram, Engine, ErrorEvent, Handler, Transport};

/// A topology, torn down on drop.
struct Topology {
    name: String,
}

impl Topology {
    /// Builds the PMTU topology, or returns None (having said why) when this
    /// process cannot.
    fn pmtu(tag: &str) -> Option<Topology> {
        Topology::build("pmtu-up", tag)
    }

    /// Builds the LAN (h1, h2, h3 on a bridge; h1, h3 on a second one).
    fn lan(tag: &str) -> Option<Topology> {
        Topology::build("lan-up", tag)
    }

    fn build(kind: &str, tag: &str) -> Option<Topology> {
        let require = std::env::var("UDPRING_REQUIRE_NETNS").as_deref() == Ok("1");
        let why = if !nix::unistd::geteuid().is_root() {
            Some("not root".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            assert!(!require, "UDPRING_REQUIRE_NETNS=1 but {why}");
            eprintln!("skipping: network namespace tests need root ({why})");
            return None;
        }
        let name = format!("ur{}{tag}", std::process::id() % 100_000);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/netns.sh");
        let _ = Command::new("bash").args([script, "down", &name]).status();
        let out = Command::new("bash")
            .args([script, kind, &name])
            .output()
            .unwrap();
        let topo = Topology { name };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !require,
                "UDPRING_REQUIRE_NETNS=1 but the topology failed: {err}"
            );
            eprintln!("skipping: could not build the topology: {err}");
            return None;
        }
        Some(topo)
    }

    /// Runs `f` on a thread inside namespace `ns` (a, r or b); threads it
    /// starts (engine workers) are in that namespace too.
    fn run_in<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}-{ns}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/netns.sh");
        let _ = Command::new("bash")
            .args([script, "down", &self.name])
            .status();
    }
}

/// Sends `size`-byte datagrams to `to` every 50 ms and records errors.
struct BigSender {
    to: SocketAddr,
    size: usize,
    events: Arc<Mutex<Vec<ErrorEvent>>>,
}

impl Handler for BigSender {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        tx.call_later(Duration::ZERO, 0);
    }
    fn on_datagram(&mut self, _d: Datagram<'_>, _tx: &mut Transport<'_>) {}
    fn on_error(&mut self, event: ErrorEvent, _tx: &mut Transport<'_>) {
        self.events.lock().unwrap().push(event);
    }
    fn on_timer(&mut self, _token: u64, tx: &mut Transport<'_>) {
        let data = vec![0u8; self.size];
        let _ = tx.send_to(&data, self.to);
        tx.call_later(Duration::from_millis(50), 0);
    }
}

fn too_long_mtu(topo: &Topology, bind: &str, to: &str, size: usize) -> Vec<ErrorEvent> {
    let (bind, to): (SocketAddr, SocketAddr) = (bind.parse().unwrap(), to.parse().unwrap());
    topo.run_in("a", move || {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut cfg = Config::new(bind);
        cfg.workers = 1;
        cfg.pmtu_discover = true;
        let e2 = events.clone();
        let engine = Engine::start(cfg, move |_| BigSender {
            to,
            size,
            events: e2.clone(),
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let got = events.lock().unwrap().clone();
            if got
                .iter()
                .filter(|e| matches!(e, ErrorEvent::MessageTooLong { .. }))
                .count()
                >= 2
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = engine.stop().unwrap();
        assert_eq!(s.slots_out, 0);
        events.lock().unwrap().clone()
    })
}

#[test]
fn message_too_long_carries_the_path_mtu_v4_and_v6() {
    let Some(topo) = Topology::pmtu("m") else {
        return;
    };
    // IPv4: R's route towards B has MTU 1280; A's link is 1500.
    let got = too_long_mtu(&topo, "10.200.1.1:0", "10.200.2.1:9", 1472);
    assert!(
        got.iter().any(
            |e| matches!(e, ErrorEvent::MessageTooLong { mtu: Some(1280), peer: Some(p) }
            if p.to_string() == "10.200.2.1:9")
        ),
        "IPv4: {got:?}"
    );
    // IPv6: R's link to B has MTU 1400.
    let got = too_long_mtu(&topo, "[fd00:200:1::1]:0", "[fd00:200:2::1]:9", 1452);
    assert!(
        got.iter().any(|e| matches!(
            e,
            ErrorEvent::MessageTooLong {
                mtu: Some(1400),
                ..
            }
        )),
        "IPv6: {got:?}"
    );
}

impl Topology {
    /// Runs `udpring ARGS` inside namespace `ns` and waits for it.
    fn udpring(&self, ns: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("{}-{ns}", self.name),
                env!("CARGO_BIN_EXE_udpring"),
            ])
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts `udpring echo` on [::]:7007 in B (IPv4 and IPv6) until dropped.
    fn echo_in_b(&self) -> KillOnDrop {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("{}-b", self.name),
                env!("CARGO_BIN_EXE_udpring"),
            ])
            .args([
                "echo",
                "--bind",
                "[::]:7007",
                "--workers",
                "1",
                "-q",
                "--duration",
                "60",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening on"), "{line}");
        child
    }
}

struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    /// Waits for the process to end by itself and returns its output.
    fn finish(mut self) -> std::process::Output {
        let child = std::mem::replace(
            &mut self.0,
            Command::new("true").spawn().expect("spawn true"),
        );
        child.wait_with_output().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pmtu_json(topo: &Topology, target: &str, method: &str) -> (bool, serde_json::Value, String) {
    let out = topo.udpring(
        "a",
        &[
            "pmtu",
            target,
            "--method",
            method,
            "--json",
            "--timeout",
            "0.2",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text} {err}"));
    (out.status.success(), v, err)
}

#[test]
fn pmtu_finds_1280_over_ipv4_and_1400_over_ipv6_by_both_methods() {
    let Some(topo) = Topology::pmtu("p") else {
        return;
    };
    let _echo = topo.echo_in_b();
    for (target, want) in [("10.200.2.1:7007", 1280), ("[fd00:200:2::1]:7007", 1400)] {
        // Packetization first: it must not lean on what ICMP taught A.
        for method in ["plpmtud", "icmp"] {
            let (ok, v, err) = pmtu_json(&topo, target, method);
            assert!(ok, "{target} {method}: {v} {err}");
            assert_eq!(v["pmtu"], want, "{target} {method}: {v}");
            assert_eq!(v["method"], method);
            assert!(v["probes"].as_u64().unwrap() >= 1);
        }
    }
}

#[test]
fn an_icmp_black_hole_stumps_the_icmp_method_but_not_the_packetization_one() {
    let Some(topo) = Topology::pmtu("b") else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/netns.sh");
    let st = Command::new("bash")
        .args([script, "blackhole", &topo.name])
        .status()
        .unwrap();
    assert!(st.success(), "blackhole rules");
    let _echo = topo.echo_in_b();
    for (target, want) in [("10.200.2.1:7007", 1280), ("[fd00:200:2::1]:7007", 1400)] {
        let (ok, v, err) = pmtu_json(&topo, target, "icmp");
        assert!(
            !ok,
            "{target}: the ICMP method must not claim an answer: {v}"
        );
        assert!(v["pmtu"].is_null(), "{target}: {v}");
        assert!(err.contains("cannot tell"), "{target}: {err}");
        let (ok, v, err) = pmtu_json(&topo, target, "auto");
        assert!(ok, "{target}: {v} {err}");
        assert_eq!(v["pmtu"], want, "{target}: auto falls back to probes: {v}");
        assert_eq!(v["method"], "plpmtud");
    }
}

// ---- multicast and broadcast on the LAN ----

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

type Got = Arc<Mutex<Vec<(Vec<u8>, SocketAddr)>>>;

/// Starts a recording engine in namespace `ns` with `cfg`.
fn recorder(topo: &Topology, ns: &str, cfg: Config) -> (Engine, Got) {
    let got: Got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    let engine = topo.run_in(ns, move || {
        Engine::start(cfg, move |_| Recorder { got: g2.clone() }).unwrap()
    });
    (engine, got)
}

fn group_cfg(bind: &str, joins: Vec<udpring::Join>) -> Config {
    let mut c = Config::new(bind.parse().unwrap());
    c.workers = 1;
    c.reuse_addr = true;
    c.multicast.joins = joins;
    c
}

fn join(group: &str, source: Option<&str>, iface: &str) -> udpring::Join {
    udpring::Join {
        group: group.parse().unwrap(),
        source: source.map(|s| s.parse().unwrap()),
        interface: udpring::Interface::Name(iface.into()),
    }
}

/// Sends `msgs` from namespace `ns` with a plain socket bound to `bind`
/// (multicast out of `iface`, TTL `ttl`), and returns the replies to
/// command messages (those starting with "leave"/"join").
fn send_from(
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

fn payloads(got: &Got) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
        .collect()
}

fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

/// Waits (up to 5 s) until `g` holds exactly `want`, then checks it.
fn expect_payloads(g: &Got, want: &[&str], what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while payloads(g) != want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(payloads(g), want, "{what}");
}

#[test]
fn asm_join_then_leave_v4_and_v6() {
    let Some(topo) = Topology::lan("j") else {
        return;
    };
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

#[test]
fn ssm_lets_only_the_chosen_source_through() {
    let Some(topo) = Topology::lan("s") else {
        return;
    };
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
    let Some(topo) = Topology::lan("l") else {
        return;
    };
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
    let Some(topo) = Topology::lan("o") else {
        return;
    };
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
    let Some(topo) = Topology::lan("c") else {
        return;
    };
    let mut cfg = Config::new("0.0.0.0:5004".parse().unwrap());
    cfg.workers = 1;
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
    let Some(topo) = Topology::lan("e") else {
        return;
    };
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

#[test]
fn fanout_to_three_destinations_delivers_each_datagram_once_to_each() {
    use std::sync::atomic::Ordering;
    use udpring::apps::fanout::{Fanout, FanoutCounters};
    let Some(topo) = Topology::lan("f") else {
        return;
    };
    let mut cfg = Config::new("0.0.0.0:6001".parse().unwrap());
    cfg.workers = 1;
    let (r1, g1) = recorder(&topo, "h1", cfg.clone());
    let (r3, g3) = recorder(&topo, "h3", cfg);
    // A second socket on h3, on another port: three destinations, plus one
    // nobody listens on.
    let mut cfg = Config::new("0.0.0.0:6002".parse().unwrap());
    cfg.workers = 1;
    let (r3b, g3b) = recorder(&topo, "h3", cfg);
    let dests: Vec<SocketAddr> = [
        "10.201.0.1:6001",
        "10.201.0.3:6001",
        "10.201.0.3:6002",
        "10.201.0.3:6999",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let counters = FanoutCounters::new(dests.len());
    let (c2, d2) = (counters.clone(), dests.clone());
    let relay = topo.run_in("h2", move || {
        let mut cfg = Config::new("10.201.0.2:6000".parse().unwrap());
        cfg.workers = 1;
        Engine::start(cfg, move |_| Fanout::new(d2.clone(), c2.clone())).unwrap()
    });
    const N: u32 = 200;
    topo.run_in("h1", || {
        let s = std::net::UdpSocket::bind("10.201.0.1:0").unwrap();
        for i in 0..N {
            s.send_to(&i.to_be_bytes(), "10.201.0.2:6000").unwrap();
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while [&g1, &g3, &g3b]
        .iter()
        .any(|g| g.lock().unwrap().len() < N as usize)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    settle(); // and nothing more (no duplicates) arrives after
    let seqs = |g: &Got| -> Vec<u32> {
        let mut v: Vec<u32> = g
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
            .collect();
        v.sort_unstable();
        v
    };
    let all: Vec<u32> = (0..N).collect();
    for (name, g) in [("h1", &g1), ("h3", &g3), ("h3:6002", &g3b)] {
        assert_eq!(seqs(g), all, "{name}: every datagram exactly once");
    }
    assert_eq!(counters.received.load(Ordering::Relaxed), N as u64);
    for d in &counters.dests {
        assert_eq!(d.forwarded.load(Ordering::Relaxed), N as u64);
    }
    assert!(
        counters.dests[3].refused.load(Ordering::Relaxed) > 0,
        "the closed port is counted as refusing"
    );
    let s = relay.stop().unwrap();
    assert_eq!(s.slots_out, 0);
    assert_eq!(
        s.sent,
        4 * N as u64,
        "one send per destination per datagram"
    );
    for r in [r1, r3, r3b] {
        r.stop().unwrap();
    }
}

impl Topology {
    /// Starts `udpring ARGS` in namespace `ns` in the background.
    fn spawn(&self, ns: &str, args: &[&str]) -> KillOnDrop {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("{}-{ns}", self.name),
                env!("CARGO_BIN_EXE_udpring"),
            ])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        KillOnDrop(child)
    }
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn mcast_ping_pong_reports_all_three_responders_v4_and_v6() {
    let Some(topo) = Topology::lan("g") else {
        return;
    };
    for group in ["239.4.4.4:5005", "[ff15::4:4:4%e0]:5005"] {
        let pongs: Vec<KillOnDrop> = ["h1", "h2", "h3"]
            .iter()
            .map(|h| topo.spawn(h, &["mcast", "pong", group, "--duration", "15"]))
            .collect();
        std::thread::sleep(Duration::from_millis(500)); // joined and bound
        let out = topo.udpring(
            "h1",
            &[
                "mcast", "ping", group, "-c", "20", "--rate", "100", "--json",
            ],
        );
        let v = json_of(&out);
        let peers = v["peers"].as_array().unwrap();
        assert_eq!(
            peers.len(),
            3,
            "{group}: every responder, the pinger's own host included: {v}"
        );
        for p in peers {
            assert_eq!(p["counts"]["received"], 20, "{group}: {p}");
            assert_eq!(p["counts"]["lost"], 0, "{group}: {p}");
            assert!(
                p["counts"]["rtt_us"]["p50"].as_f64().unwrap() > 0.0,
                "{group}: {p}"
            );
        }
        drop(pongs);
    }
}

#[test]
fn mcast_send_and_listen_verify_count_every_datagram_once() {
    let Some(topo) = Topology::lan("v") else {
        return;
    };
    let listen = topo.spawn(
        "h3",
        &[
            "mcast",
            "listen",
            "239.5.5.5:5006",
            "--verify",
            "--duration",
            "3",
            "--json",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = topo.udpring(
        "h1",
        &[
            "mcast",
            "send",
            "239.5.5.5:5006",
            "-c",
            "300",
            "--rate",
            "1000",
            "--ttl",
            "3",
        ],
    );
    assert!(out.status.success());
    let out = listen.finish();
    let v = json_of(&out);
    let peers = v["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{v}");
    assert_eq!(
        peers[0]["addr"].as_str().unwrap().split(':').next(),
        Some("10.201.0.1")
    );
    let c = &peers[0]["counts"];
    assert_eq!(
        (
            c["received"].as_u64(),
            c["lost"].as_u64(),
            c["duplicated"].as_u64()
        ),
        (Some(300), Some(0), Some(0)),
        "{v}"
    );
}

const PY_RECV: &str = r#"
import socket, struct, sys
g, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton(g), socket.inet_aton("0.0.0.0")))
IP_RECVTTL, IP_TTL = getattr(socket, "IP_RECVTTL", 12), getattr(socket, "IP_TTL", 2)
s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
s.settimeout(3)
n, ttl = 0, None
try:
    while n < 50:
        data, anc, flags, addr = s.recvmsg(2048, 64)
        for level, kind, value in anc:
            if level == socket.IPPROTO_IP and kind == IP_TTL:
                ttl = struct.unpack("i", value[:4])[0]
        n += 1
except socket.timeout:
    pass
print(n, ttl)
"#;

const PY_RECV6: &str = r#"
import socket, struct, sys
g, port, ifname = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", port))
mreq = socket.inet_pton(socket.AF_INET6, g) + struct.pack("@I", socket.if_nametoindex(ifname))
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
s.settimeout(3)
n, hops = 0, None
try:
    while n < 20:
        data, anc, flags, addr = s.recvmsg(2048, 64)
        for level, kind, value in anc:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
                hops = struct.unpack("i", value[:4])[0]
        n += 1
except socket.timeout:
    pass
print(n, hops)
"#;

const PY_SEND: &str = r#"
import socket, struct, sys, time
g, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
for i in range(50):
    s.sendto(b"py %d" % i, (g, port))
    time.sleep(0.002)
"#;

#[test]
fn python_receivers_hear_udpring_and_udpring_hears_python_with_the_ttl_set() {
    let Some(topo) = Topology::lan("y") else {
        return;
    };
    let ns = |h: &str| format!("{}-{h}", topo.name);
    // udpring -> Python receivers: what they print is "<datagrams> <ttl>",
    // the TTL (IP_RECVTTL) or hop limit (IPV6_RECVHOPLIMIT) they saw.
    let python_hears = |script: &str, py_args: &[&str], group: &str, count: &str, ttl: &str| {
        let py = Command::new("ip")
            .args(["netns", "exec", &ns("h2"), "python3", "-c", script])
            .args(py_args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let out = topo.udpring(
            "h1",
            &[
                "mcast", "send", group, "-c", count, "--rate", "500", "--ttl", ttl,
            ],
        );
        assert!(out.status.success());
        let out = py.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        python_hears(PY_RECV, &["239.6.6.6", "5007"], "239.6.6.6:5007", "50", "7"),
        "50 7",
        "Python heard all 50 with TTL 7"
    );
    assert_eq!(
        python_hears(
            PY_RECV6,
            &["ff15::6:6:6", "5009", "e0"],
            "[ff15::6:6:6%e0]:5009",
            "20",
            "9"
        ),
        "20 9",
        "Python heard all 20 with hop limit 9"
    );
    // Python -> udpring listen.
    let listen = topo.spawn(
        "h3",
        &[
            "mcast",
            "listen",
            "239.6.6.7:5008",
            "--duration",
            "2",
            "--json",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns("h1"),
            "python3",
            "-c",
            PY_SEND,
            "239.6.6.7",
            "5008",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let v = json_of(&listen.finish());
    assert_eq!(v["received"], 50, "{v}");
}

#[test]
fn load_to_a_group_accounts_for_each_responder() {
    let Some(topo) = Topology::lan("r") else {
        return;
    };
    let pongs: Vec<KillOnDrop> = ["h2", "h3"]
        .iter()
        .map(|h| topo.spawn(h, &["mcast", "pong", "239.7.7.7:5010", "--duration", "15"]))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let out = topo.udpring(
        "h1",
        &[
            "load",
            "239.7.7.7:5010",
            "--rate",
            "2000",
            "--count",
            "500",
            "--warmup",
            "0",
            "--flows",
            "2",
            "--json",
            "-q",
        ],
    );
    let v = json_of(&out);
    assert_eq!(v["sent"], 500, "{v}");
    let rs = v["responders"].as_array().unwrap();
    let addrs: Vec<&str> = rs.iter().map(|r| r["addr"].as_str().unwrap()).collect();
    assert_eq!(addrs, ["10.201.0.2:5010", "10.201.0.3:5010"], "{v}");
    for r in rs {
        assert_eq!(
            (
                r["received"].as_u64(),
                r["lost"].as_u64(),
                r["duplicated"].as_u64()
            ),
            (Some(500), Some(0), Some(0)),
            "{r}"
        );
        assert!(r["rtt_us"]["p50"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        v["received"], 1000,
        "the totals are the sums over responders: {v}"
    );
    assert_eq!(
        (
            v["lost"].as_u64(),
            v["duplicated"].as_u64(),
            v["foreign"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    drop(pongs);
}

#[test]
fn two_listeners_share_a_port_and_a_double_join_is_a_typed_error() {
    let Some(topo) = Topology::lan("d") else {
        return;
    };
    let cfg = || group_cfg("0.0.0.0:5014", vec![join("239.9.9.9", None, "e0")]);
    // Two engines (as two processes would) on one port: both hear the group.
    let (e1, g1) = recorder(&topo, "h2", cfg());
    let (e2, g2) = recorder(&topo, "h2", cfg());
    send_from(
        &topo,
        "h1",
        "10.201.0.1:0",
        "239.9.9.9:5014",
        vec!["to both"],
    );
    settle();
    expect_payloads(&g1, &["to both"], "first listener");
    expect_payloads(&g2, &["to both"], "second listener");
    e2.stop().unwrap();
    // Joining a group the socket is already in: AlreadyJoined, said plainly.
    let answers = send_from(
        &topo,
        "h1",
        "10.201.0.1:0",
        "10.201.0.2:5014",
        vec!["join 239.9.9.9"],
    );
    assert!(
        answers[0].contains("already a member of 239.9.9.9"),
        "{answers:?}"
    );
    e1.stop().unwrap();
}

//! Path MTU: `MessageTooLong` with the MTU, and `udpring pmtu` by both
//! methods, with and without an ICMP black hole.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udpring::{Config, Datagram, Engine, ErrorEvent, Handler, Transport};

use crate::topo::Topology;

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
        let events = events.lock().unwrap().clone();
        // Each send refused as too big told once, where it was going.
        let refused = s
            .send_errors
            .iter()
            .find(|&&(e, _)| e == libc::EMSGSIZE)
            .map_or(0, |&(_, n)| n);
        let told = events
            .iter()
            .filter(|e| matches!(e, ErrorEvent::MessageTooLong { peer: Some(p), .. } if *p == to))
            .count() as u64;
        assert_eq!(told, refused, "{events:?} {s:?}");
        events
    })
}

#[test]
fn message_too_long_carries_the_path_mtu_v4_and_v6() {
    let topo = crate::topology!(pmtu, "m");
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

/// `udpring fanout` on A relaying datagrams too big for the path to B
/// (IPv4: R's route is 1280; IPv6: R's link is 1400) to the echo on B.
/// The first leaves with DF set and R says "too big" for it; the kernel
/// then cuts the next ones to the path (fanout does not set
/// `pmtu_discover`). The report is counted as what it is, about a
/// datagram that left (`refused`), not as a failed send: every relay
/// counted forwarded went (`sent`), none failed.
#[test]
fn a_relay_counts_a_routers_packet_too_big_as_a_report_not_a_failure() {
    let topo = crate::topology!(pmtu, "f");
    let _echo = topo.echo_in_b();
    for (listen, to, size) in [
        ("10.200.1.1:6200", "10.200.2.1:7007", 1400),
        ("[fd00:200:1::1]:6200", "[fd00:200:2::1]:7007", 1452),
    ] {
        let relay = topo.server(
            "a",
            &crate::util::words(&format!(
                "fanout --listen {listen} --to {to} -w 1 --duration 1.5 -q --json"
            )),
        );
        let at: std::net::SocketAddr = listen.parse().unwrap();
        topo.run_in("a", move || {
            let bind = if at.is_ipv6() {
                "[::1]:0"
            } else {
                "127.0.0.1:0"
            };
            let c = std::net::UdpSocket::bind(bind).unwrap();
            for i in 0..20u8 {
                c.send_to(&[i; 1452][..size], at).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let v = crate::topo::json_of(&relay.finish());
        crate::util::vocab::check("fanout", &v);
        let d = &v["destinations"][0];
        let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
        assert_eq!(n(&v, "received"), 20, "{to}: {v}");
        assert!(
            n(d, "refused") >= 1,
            "{to}: the router's report counted: {v}"
        );
        assert_eq!(n(d, "failed"), 0, "{to}: no send failed: {v}");
        assert_eq!(
            n(d, "forwarded"),
            n(&v, "sent"),
            "{to}: forwarded is what left: {v}"
        );
        assert_eq!(n(d, "forwarded"), 20, "{to}: {v}");
    }
}

fn pmtu_json(topo: &Topology, target: &str, method: &str) -> (bool, serde_json::Value, String) {
    let out = topo.udpring(
        "a",
        &crate::util::words(&format!(
            "pmtu {} --method {} --json --timeout 0.2",
            target, method
        )),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text} {err}"));
    crate::util::vocab::check_any(&v);
    (out.status.success(), v, err)
}

#[test]
fn pmtu_finds_1280_over_ipv4_and_1400_over_ipv6_by_both_methods() {
    let topo = crate::topology!(pmtu, "p");
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
    let topo = crate::topology!(pmtu, "b");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../netns.sh");
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

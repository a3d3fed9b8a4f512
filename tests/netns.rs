//! Tests across network namespaces the test builds itself (tools/netns.sh):
//! host A, router R, host B, with a 1280-byte IPv4 and 1400-byte IPv6 path
//! MTU. They need root; elsewhere they say why they skip, and with
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
            .args([script, "pmtu-up", &name])
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
